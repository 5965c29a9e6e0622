#!/usr/bin/env bash
# npm run bench: builds, installs fio and qemu-nbd when missing, runs the benchmark (a few minutes).
# npm run bench:recovery (bench.sh recovery): re-replication throughput after a node loss.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v fio >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq fio >/dev/null; else echo "bench: install fio (sudo apt-get install fio)" >&2; exit 1; fi
fi
mkdir -p run
if [ "${1:-}" = recovery ]; then exec node dist/test/bench/recovery-bench.js; fi
exec node dist/test/bench/bench.js
