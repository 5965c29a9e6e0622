#!/usr/bin/env bash
# Starts a working local cluster: builds the project if needed, starts sheep on 127.0.0.1:7000 with
# an NBD export on 127.0.0.1:10809 (store in ./run/sheep0) and the embedded `local` driver, and formats
# it on first start. Stop it with:  collie cluster shutdown   (or ./scripts/quickstart.sh stop)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PORT=${PORT:-7000}
NBD_PORT=${NBD_PORT:-10809}
DIR=${DIR:-$PWD/run/sheep0}
COPIES=${COPIES:-1}
collie() { node dist/collie/main.js "$@"; }
if [ "${1:-}" = stop ]; then
  collie cluster shutdown -p "$PORT" && echo "cluster stopped"
  exit 0
fi
mkdir -p "$DIR"
if ! collie cluster info -p "$PORT" >/dev/null 2>&1; then
  node dist/sheep/main.js -p "$PORT" -c local -P "$DIR/sheep.pid" --socket "$DIR/sock" \
    --nbd "127.0.0.1:$NBD_PORT" --nbd-socket "$DIR/nbd.sock" "$DIR"
fi
if collie cluster info -p "$PORT" | grep -q 'Waiting for cluster to be formatted'; then
  collie cluster format --copies="$COPIES" -p "$PORT"
fi
collie cluster info -p "$PORT"
collie node list -p "$PORT"
cat <<MSG

The cluster is up on 127.0.0.1:$PORT (store $DIR). Try:
  node dist/collie/main.js vdi create disk 1G
  head -c 10M /dev/urandom | node dist/collie/main.js vdi write disk
  node dist/collie/main.js vdi list
  qemu-img info nbd://127.0.0.1:$NBD_PORT/disk       # NBD export (also nbd+unix:///disk?socket=$DIR/nbd.sock)
Stop it with: ./scripts/quickstart.sh stop
MSG
