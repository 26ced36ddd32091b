#!/usr/bin/env bash
# The front door against nginx, in the same run: requests/s, CPU time per request and p50/p99
# latency of an authenticated instance host through the release `flowcase` binary, of Debian's
# nginx proxying the same upstream over TLS, and of a bare pingora proxy (nothing of ours: what
# the framework alone costs), each proxy pinned to one CPU (the load generator and the upstream
# share the other); plus the latency of the upstream reached directly (what a proxy adds is
# measured against it) and the gateway's resident memory, idle and after the load.
#   bench/proxy.sh [--duration 10s] [--connections 64] [--rounds 3] [--no-build]
#                  [--gateway-env VAR=VALUE]… [--gateway-bin PATH]
# Installs wrk and nginx-light with apt-get when missing. Loopback only. Numbers are printed,
# never asserted; compare the columns of one run, not numbers across machines.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10s
connections=64
latency_connections=4
rounds=3
build=1
gateway_env=() # extra VAR=VALUE for the gateway (e.g. FLOWCASE_LOG__LEVEL=warn)
gateway_bin="" # another flowcase binary to measure (e.g. an older build), instead of ours
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --gateway-env) gateway_env+=("$2"); shift 2 ;;
    --gateway-bin) gateway_bin=$2; build=0; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)

cpus=$(nproc)
proxy_cpu=0
load_cpu=$(( cpus > 1 ? 1 : 0 ))
[ "$cpus" -gt 1 ] || echo "warning: one CPU only: proxies, load and upstream share it" >&2

if [ "$build" = 1 ]; then
  cargo build --locked --release -p flowcase-gateway --bin flowcase \
    -p flowcase-bench --bin upstream --bin proxy_setup --bin bare_pingora
fi
bin=target/release

work=$(mktemp -d /tmp/flowcase-bench-proxy.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { # a free loopback port
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
up_port=$(port); gw_port=$(port); gw_http=$(port); gw_metrics=$(port); ng_port=$(port)
bp_port=$(port)

wait_port() { # wait_port PORT: up to 30 s for a listener
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}

taskset -c "$load_cpu" "$bin/upstream" "127.0.0.1:$up_port" & pids+=($!)
wait_port "$up_port"

# The gateway: defaults but for the ports, a data directory of its own, and no Docker (the
# instance's upstream is ours, not a container).
mkdir -p "$work/gw"
gw_env=(
  FLOWCASE_SERVER__HTTPS_LISTEN="127.0.0.1:$gw_port"
  FLOWCASE_SERVER__HTTP_LISTEN="127.0.0.1:$gw_http"
  FLOWCASE_SERVER__METRICS_LISTEN="127.0.0.1:$gw_metrics"
  FLOWCASE_SERVER__DATA_DIR="$work/gw/data"
  FLOWCASE_DOCKER__HOST="unix://$work/no-docker.sock"
  FLOWCASE_DOCKER__DEPLOYMENT="bench-proxy-$$"
  "${gateway_env[@]}"
)
gw_bin=$(realpath "${gateway_bin:-$bin/flowcase}")
(cd "$work/gw" && exec env "${gw_env[@]}" taskset -c "$proxy_cpu" "$gw_bin" serve \
  >"$work/gw/stdout.log" 2>"$work/gw/stderr.log") &
gw_pid=$!; pids+=("$gw_pid")
wait_port "$gw_port" || { cat "$work/gw/stderr.log" >&2; exit 1; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# "anon A file F": VmRSS split into private memory (heap, stacks) and file-backed pages (mostly
# the binary's code, shared with any other process mapping it).
rss_split() { awk '/^RssAnon/ {a = $2} /^RssFile/ {f = $2} END {printf "anon %.1f, file %.1f", a / 1024, f / 1024}' "/proc/$1/status"; }
sleep 3
idle_rss=$(rss_kb "$gw_pid") # started, nothing asked of it yet
idle_split=$(rss_split "$gw_pid")
password="bench-password-$RANDOM-$RANDOM"
(cd "$work/gw" && echo "$password" | env "${gw_env[@]}" "$gw_bin" user add bench --password-stdin >/dev/null)
cookie=$("$bin/proxy_setup" "$work/gw/data" "$gw_port" "127.0.0.1:$up_port" bench "$password" bench1)
host="bench1.apps.localhost"

# nginx: one worker on the proxy CPU, TLS with the same certificate, keep-alive to the upstream
# (as the gateway pools its upstream connections), an access log like the gateway's.
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log $work/nginx/access.log;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream app { server 127.0.0.1:$up_port; keepalive 128; }
  server {
    listen 127.0.0.1:$ng_port ssl http2;
    ssl_certificate $work/gw/data/tls/self-signed.crt;
    ssl_certificate_key $work/gw/data/tls/self-signed.key;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
CONF
taskset -c "$proxy_cpu" "$nginx" -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" & ng_pid=$!; pids+=("$ng_pid")
wait_port "$ng_port"

# Bare pingora: the same certificate and upstream, pinned like the others.
taskset -c "$proxy_cpu" "$bin/bare_pingora" "127.0.0.1:$bp_port" "$work/gw/data/tls/self-signed.crt" \
  "$work/gw/data/tls/self-signed.key" "127.0.0.1:$up_port" >"$work/bare.log" 2>&1 & bp_pid=$!; pids+=("$bp_pid")
wait_port "$bp_port" || { cat "$work/bare.log" >&2; exit 1; }

sleep 3
login_rss=$(rss_kb "$gw_pid") # after one login (Argon2 hashing takes its memory) and the set-up
login_split=$(rss_split "$gw_pid")

# CPU time (user + system, clock ticks) of a process and its children (nginx's worker).
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1"); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
ticks_per_s=$(getconf CLK_TCK)

# run PID URL CONNECTIONS [extra wrk args…]
#   → "requests/s p50_us p99_us errors bad_status cpu_us_per_request"
# CPU per request is the proxy's own time (PID; 0 for none): unlike requests/s it does not move
# when something else takes turns on the proxy's CPU, so it is the steadier "per core" figure.
run() {
  local pid=$1 url=$2 conns=$3; shift 3
  local out before=0 after=0
  [ "$pid" = 0 ] || before=$(cpu_ticks "$pid")
  out=$(BENCH_CONNECT=127.0.0.1 taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"$duration" \
    -s bench/proxy.lua "$@" "$url" 2>&1)
  [ "$pid" = 0 ] || after=$(cpu_ticks "$pid")
  local line
  line=$(grep '^RESULT' <<<"$out") || { echo "$out" >&2; return 1; }
  eval "${line#RESULT }"
  awk -v r="$requests" -v d="$duration_us" -v p50="$p50_us" -v p99="$p99_us" \
    -v e="$errors" -v s="$bad_status" -v c="$((after - before))" -v t="$ticks_per_s" \
    'BEGIN { printf "%d %d %d %d %d %.1f\n", r / (d / 1e6), p50, p99, e, s, r ? c / t * 1e6 / r : 0 }'
}

gw_url="https://$host:$gw_port/"
ng_url="https://$host:$ng_port/"
bp_url="https://$host:$bp_port/"
up_url="http://127.0.0.1:$up_port/"
# Warm-up: TLS sessions, pools, caches.
run 0 "$gw_url" "$connections" -H "Cookie: $cookie" >/dev/null
run 0 "$ng_url" "$connections" >/dev/null
run 0 "$bp_url" "$connections" >/dev/null

declare -A sum
results=()
for round in $(seq "$rounds"); do
  for target in gateway nginx pingora; do
    case $target in
      gateway) url=$gw_url; pid=$gw_pid; extra=(-H "Cookie: $cookie") ;;
      nginx) url=$ng_url; pid=$ng_pid; extra=() ;;
      pingora) url=$bp_url; pid=$bp_pid; extra=() ;;
    esac
    read -r rps p50 p99 errors bad cpu < <(run "$pid" "$url" "$connections" "${extra[@]}")
    read -r lrps lp50 lp99 lerrors lbad lcpu < <(run 0 "$url" "$latency_connections" "${extra[@]}")
    results+=("$round $target $rps $cpu $p50 $p99 $lp50 $lp99 $((errors + lerrors)) $((bad + lbad))")
  done
  read -r drps dp50 dp99 derrors dbad dcpu < <(run 0 "$up_url" "$latency_connections")
  results+=("$round upstream - - - - $dp50 $dp99 $derrors $dbad")
done
sleep 3
after_rss=$(rss_kb "$gw_pid")
after_split=$(rss_split "$gw_pid")

echo
echo "proxy benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
echo "duration $duration, wrk 1 thread; throughput with $connections connections, latency with $latency_connections;"
echo "proxies pinned to CPU $proxy_cpu, wrk and the upstream to CPU $load_cpu"
echo
printf "%-6s %-9s %10s %11s %9s %9s %12s %12s %7s %7s\n" round target "req/s" "CPU µs/req" "p50 µs" "p99 µs" "lat p50 µs" "lat p99 µs" errors non-2xx
for r in "${results[@]}"; do
  # shellcheck disable=SC2086
  printf "%-6s %-9s %10s %11s %9s %9s %12s %12s %7s %7s\n" $r
done
echo
awk -v rows="$(printf '%s\n' "${results[@]}")" 'BEGIN {
  n = split(rows, lines, "\n")
  for (i = 1; i <= n; i++) {
    split(lines[i], f, " ")
    if (f[2] == "upstream") { up99 += f[8]; upn++; continue }
    rps[f[2]] += f[3]; cpu[f[2]] += f[4]; p99[f[2]] += f[8]; cnt[f[2]]++
  }
  g = rps["gateway"] / cnt["gateway"]; x = rps["nginx"] / cnt["nginx"]; b = rps["pingora"] / cnt["pingora"]
  gc = cpu["gateway"] / cnt["gateway"]; xc = cpu["nginx"] / cnt["nginx"]; bc = cpu["pingora"] / cnt["pingora"]
  printf "mean req/s (one pinned CPU): gateway %d, nginx %d, bare pingora %d; gateway ÷ nginx %.2f\n", g, x, b, g / x
  printf "mean CPU µs per request: gateway %.1f, nginx %.1f, bare pingora %.1f\n", gc, xc, bc
  printf "requests per CPU-second (per core): gateway %d, nginx %d, bare pingora %d\n", 1e6 / gc, 1e6 / xc, 1e6 / bc
  printf "  ratios per core: gateway ÷ nginx %.2f, bare pingora ÷ nginx %.2f, gateway ÷ bare pingora %.2f\n", xc / gc, xc / bc, bc / gc
  printf "added p99 at %s connections (vs the upstream direct): gateway %.2f ms, nginx %.2f ms, bare pingora %.2f ms\n", \
    "'"$latency_connections"'", (p99["gateway"] / cnt["gateway"] - up99 / upn) / 1000, (p99["nginx"] / cnt["nginx"] - up99 / upn) / 1000, (p99["pingora"] / cnt["pingora"] - up99 / upn) / 1000
}'
echo "gateway RSS: idle $((idle_rss / 1024)) MiB, after a login $((login_rss / 1024)) MiB, after the load $((after_rss / 1024)) MiB"
echo "  of which MiB: idle $idle_split; after a login $login_split; after the load $after_split"
