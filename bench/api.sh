#!/usr/bin/env bash
# The instance lists and the dashboard with 1,000 instances and 100 users in the database
# (issue 7, target p99 <= 10 ms): GET /api/instances, /api/v1/instances (mine, scope=all) and
# /dashboard as an administrator and as a user, at several concurrencies:
#   bench/api.sh [--requests N] [--warmup N] [--concurrency 1,8,32] [--max-seconds N] [--debug]
# Needs a running dockerd (the e2e kit's gateway checks its network; instances are database
# rows only). Builds what it needs (release by default: the first build takes several minutes).
# Loopback only; counts and time are bounded; numbers are printed, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
args=()
for arg in "$@"; do
  if [ "$arg" = "--debug" ]; then profile=debug; else args+=("$arg"); fi
done

if [ "$profile" = release ]; then
  cargo build --locked --release -p flowcase-gateway -p flowcase-bench --bin flowcase --bin api
else
  cargo build --locked -p flowcase-gateway -p flowcase-bench --bin flowcase --bin api
fi
FLOWCASE_BIN="$PWD/target/$profile/flowcase" exec "target/$profile/api" "${args[@]}"
