#!/usr/bin/env bash
# The desktop tunnel (throughput, added latency, memory per idle tunnel) against guacamole-lite,
# both relaying the same guacd double in the same run:
#   bench/tunnel.sh [--instructions N] [--rounds N] [--tunnels N] [--debug]
# Needs node/npm (guacamole-lite is installed from bench/peers/guacamole-lite's lock file with
# `npm ci` when missing) and a running dockerd (the e2e kit's gateway checks its network).
# Builds what it needs (release by default: the first build takes several minutes). Loopback
# only; numbers are printed, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
args=()
for arg in "$@"; do
  if [ "$arg" = "--debug" ]; then profile=debug; else args+=("$arg"); fi
done

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install nodejs npm)" >&2; exit 1; }
done
if [ ! -d bench/peers/guacamole-lite/node_modules/guacamole-lite ]; then
  (cd bench/peers/guacamole-lite && npm ci --no-audit --no-fund)
fi

# 1,000 idle tunnels hold about 4,000 descriptors across the driver (client ends and the double)
# and the relay.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
  echo "warning: ulimit -n is $(ulimit -n); --tunnels 1000 needs about 4,100" >&2
fi

if [ "$profile" = release ]; then
  cargo build --locked --release -p flowcase-gateway -p flowcase-bench --bin flowcase --bin tunnel
else
  cargo build --locked -p flowcase-gateway -p flowcase-bench --bin flowcase --bin tunnel
fi
FLOWCASE_BIN="$PWD/target/$profile/flowcase" exec "target/$profile/tunnel" "${args[@]}"
