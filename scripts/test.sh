#!/usr/bin/env bash
# The whole test suite: unit tests, then integration tests that start real sheep processes,
# replay the QEMU conformance traces, drive collie and the init script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -d ../shared/conformance ] || { echo "test: ../shared/conformance is missing (the shared/ folder must sit beside the repo)" >&2; exit 1; }
exec node --test --test-concurrency=1 --test-reporter=spec dist/test/unit/ dist/test/integration/
