#!/usr/bin/env bash
# Launch-to-ready and wake-to-ready of the test HTTP image through the orchestrator, against a
# plain `docker create` + `docker start` of the same image in the same run, N rounds each:
#   bench/launch.sh [--rounds N] [--database URL] [--debug]
# Needs a running dockerd (scripts/test starts one) and builds what it needs (release by default:
# the first build takes several minutes). Loopback only; timings are printed, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
args=()
for arg in "$@"; do
  if [ "$arg" = "--debug" ]; then profile=debug; else args+=("$arg"); fi
done

if ! docker info >/dev/null 2>&1; then
  echo "dockerd is not answering; start it (scripts/test does) and retry" >&2
  exit 1
fi

# Leftovers of an interrupted run: containers and networks carry the bench's names and labels.
stale=$(docker ps -aq --filter label=flowcase-bench=1)
[ -z "$stale" ] || docker rm -f $stale >/dev/null
for net in $(docker network ls --format '{{.Name}}' | grep '^flowcase-bench-' || true); do
  docker network rm "$net" >/dev/null || true
done

if [ "$profile" = release ]; then
  cargo build --locked --release -p flowcase-bench --bin launch
else
  cargo build --locked -p flowcase-bench --bin launch
fi
exec "target/$profile/launch" "${args[@]}"
