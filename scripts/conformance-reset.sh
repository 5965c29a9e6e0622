#!/usr/bin/env bash
# --setup-cmd for ../shared/conformance/replay.mjs: restart one sheep on a fresh store, format it
# as the trace's setup asks (SD_FORMATTED, SD_COPIES, SD_LOCK). Uses CONF_DIR for state.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${CONF_DIR:?CONF_DIR must be set}
# running: not gone and not a zombie (an exited daemon waits for PID 1 to reap it, a second or more
# on some inits, and kill -0 still succeeds then)
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [ "${stat##*) }" = "${stat##*) Z}" ]
}
if [ -f "$dir/sheep.pid" ]; then
  pid=$(cat "$dir/sheep.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do running "$pid" || break; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
fi
rm -rf "$dir/store"
mkdir -p "$dir"
node "$root/dist/sheep/main.js" -p "$SD_PORT" -b "$SD_HOST" -c "local:$dir/cluster" -P "$dir/sheep.pid" "$dir/store"
if [ "$SD_FORMATTED" = 1 ]; then
  args=(cluster format --copies="$SD_COPIES" -a "$SD_HOST" -p "$SD_PORT")
  [ "$SD_LOCK" = 1 ] && args+=(--lock)
  node "$root/dist/collie/main.js" "${args[@]}" >/dev/null
fi
