#!/usr/bin/env bash
# The whole test suite: unit tests, then integration tests that start real sheep processes,
# replay the QEMU conformance traces, drive collie and the init script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node scripts/check-layers.mjs                     # no import circle, no upward import (fails the run)
[ -d ../shared/conformance ] || { echo "test: ../shared/conformance is missing (the shared/ folder must sit beside the repo)" >&2; exit 1; }
tap=$(mktemp)
trap 'rm -f "$tap"' EXIT
status=0
node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  dist/test/unit/ dist/test/integration/ || status=$?
pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" | tail -1)
fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$tap" | tail -1)
skip=$(sed -n 's/^# skipped \([0-9]*\)$/\1/p' "$tap" | tail -1)
echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
exit "$status"
