#!/usr/bin/env bash
# Starts a working local cluster: builds the project if needed, then 3 sheep on 127.0.0.1:7000-7002
# (stores in ./run/sheep0..2, one zone each) joined by the embedded `local` driver (no external
# service), formatted with --copies=3 on first start; sheep 0 also exports NBD on 127.0.0.1:10809.
# Stop it with:  ./scripts/quickstart.sh stop   (collie cluster shutdown)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
NODES=${NODES:-3}
BASE_PORT=${PORT:-7000}
NBD_PORT=${NBD_PORT:-10809}
RUN=${RUN:-$PWD/run}
COPIES=${COPIES:-3}
KEY=${KEY:-$RUN/cluster.key}
# every sheep and collie prove this key: admin and peer requests need it (see README, Security)
export SHEEPDOG_KEY_FILE=$KEY
collie() { node dist/collie/main.js "$@"; }
if [ "${1:-}" = stop ]; then
  collie cluster shutdown -p "$BASE_PORT" && echo "cluster stopped"
  exit 0
fi
mkdir -p "$RUN"
[ -f "$KEY" ] || collie cluster keygen "$KEY"
for i in $(seq 0 $((NODES - 1))); do
  port=$((BASE_PORT + i))
  dir="$RUN/sheep$i"
  if ! collie node list -p "$port" >/dev/null 2>&1; then
    extra=()
    [ "$i" = 0 ] && extra=(--nbd "127.0.0.1:$NBD_PORT" --nbd-socket "$RUN/nbd.sock" --socket "$RUN/sheep.sock")
    node dist/sheep/main.js -p "$port" -b 127.0.0.1 -z "$i" -c "local:$RUN/cluster" --cluster-key "$KEY" -P "$dir/sheep.pid" "${extra[@]}" "$dir"
  fi
done
# a restarted cluster waits until the nodes of its last epoch are back (all of them were just started)
for _ in $(seq 50); do
  collie cluster info -p "$BASE_PORT" | grep -q 'Waiting for other nodes' || break
  sleep 0.2
done
if collie cluster info -p "$BASE_PORT" | grep -q 'Waiting for cluster to be formatted'; then
  collie cluster format --copies="$COPIES" -p "$BASE_PORT"
fi
collie cluster info -p "$BASE_PORT"
collie node list -p "$BASE_PORT"
cat <<MSG

The cluster is up: $NODES sheep on 127.0.0.1:$BASE_PORT.., $COPIES copies of every object, cluster key
$KEY (collie needs it: export SHEEPDOG_KEY_FILE=$KEY, or -k $KEY). Try:
  node dist/collie/main.js vdi create disk 1G
  head -c 10M /dev/urandom | node dist/collie/main.js vdi write disk
  node dist/collie/main.js vdi list
  qemu-img info nbd://127.0.0.1:$NBD_PORT/disk      # NBD export (also nbd+unix:///disk?socket=$RUN/nbd.sock)
Live monitor: http://127.0.0.1:$((BASE_PORT + 1000))/  (Prometheus metrics at /metrics; each sheep serves its port + 1000)
Stop it with: ./scripts/quickstart.sh stop
MSG
