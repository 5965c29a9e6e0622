#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 + Node 20 machine, then builds it.
# Idempotent: steps whose result is already there are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v qemu-img >/dev/null 2>&1 || need_apt+=(qemu-utils)
command -v nbdinfo >/dev/null 2>&1 || need_apt+=(libnbd-bin)
command -v setfattr >/dev/null 2>&1 || need_apt+=(attr)
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)          # tests render `collie vdi graph`
command -v g++ >/dev/null 2>&1 || need_apt+=(g++ make python3)
command -v corosync >/dev/null 2>&1 || need_apt+=(corosync)              # the corosync cluster driver
[ -e /usr/include/corosync/cpg.h ] || need_apt+=(libcpg-dev)            # builds native/ (the CPG addon)
[ -e /usr/include/isa-l/erasure_code.h ] || need_apt+=(libisal-dev)     # builds native/erasure/ (the Reed-Solomon codec)
[ -e /usr/share/java/zookeeper.jar ] || need_apt+=(zookeeper)            # tests run a ZooKeeper ensemble (zookeeper driver)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)            # tests check /metrics with promtool
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)              # tests load the monitor page
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing ${need_apt[*]}; install them with: sudo apt-get install ${need_apt[*]}" >&2
  fi
fi

# npm ci only when the lockfile changed since the last install
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ ! -e node_modules/fs-xattr/build/Release/xattr.node ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
elif { [ -e /usr/include/corosync/cpg.h ] && [ ! -e native/build/Release/cpg.node ]; } ||
     { [ -e /usr/include/isa-l/erasure_code.h ] && [ ! -e native/erasure/build/Release/erasure.node ]; }; then
  node native/build.mjs                                             # libcpg-dev or libisal-dev arrived after npm ci
fi
echo "setup: building" >&2
npx tsc -p tsconfig.json
chmod +x dist/sheep/main.js dist/collie/main.js
