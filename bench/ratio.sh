#!/usr/bin/env bash
# ratio.sh [BUILD_DIR] — the backend's durable authorizations against nginx's static 200 over
# the same TLS, in one run on this machine (not run in CI).
#
# Starts otac-backend on a throwaway data directory and nginx (Debian package) on loopback with
# a location that returns a static 200, on the backend's own certificate and key, with the
# same TLS versions (1.2 and 1.3), the same TLS 1.2 cipher list with server preference, and
# the same client-certificate request (verified against the backend's CA, optional, as the
# backend's listener does). Then one otac-loadgen drives nginx (its --reference phase) and the
# backend's POST /v1/authorizations with the same terminal certificate, the same keep-alive
# connections and the same duration. Only 2xx answers (for authorizations: "approved") count
# as throughput; every other answer is an error, and the script fails when there is one.
#
# Prints one table (req/s, p50, p99 and errors per target, the backend's peak RSS) and, as
# its last line, "ratio auth/nginx X.XX". Everything it starts is stopped by PID.
#
# Environment: RATIO_CONNECTIONS (32), RATIO_SECONDS (10), RATIO_CODES (prepared
# authorizations; default 25,000 per second of the run), RATIO_RATE (0: as fast as possible;
# N: paced at N/s, for latency at a fixed rate), RATIO_BACKEND_CONF (extra lines for the
# backend's otac-backend.conf), RATIO_PERF (a command run with the backend's PID as its last
# argument during the authorization phase, e.g. "perf record -g -o /tmp/auth.data -p"),
# RATIO_BACKEND (another otac-backend binary to measure, e.g. a copy built from an older
# commit, for back-to-back comparisons; the load generator stays the build directory's),
# RATIO_FILL_CARDS (0; N: otac-loadgen --fill-cards N first adds N enrolled cards with one
# used code each straight through the store, to measure the store as it fills; the fill's
# time and the database's size are printed; the prepared authorizations then use the fill
# cards' unused codes first, spread over the store: RATIO_FILL_TRAFFIC=0 keeps them on the
# cards the loadgen enrolls through the API).
# RATIO_LATENCY_LOG (a file: the load generator writes each authorization's start on the
# monotonic clock and its latency there, --latency-log; with RATIO_PERF="perf record -k mono
# ... -p" the slow ones can be lined up with what the backend did at that moment).
# RATIO_CLIENT_NICE (0; N: the load generator runs under nice -n N, so that both servers come
# before it in the CPU queue, as they would on machines of their own; it applies to the
# nginx and the backend phase alike, and the default measures them as they share the cores).
# Measurements share the machine: the script holds /tmp/otac-bench.lock while it runs and
# prints the load average beside the figures.
set -euo pipefail
build=$(cd "${1:-./build}" && pwd)
connections=${RATIO_CONNECTIONS:-32}
seconds=${RATIO_SECONDS:-10}
codes=${RATIO_CODES:-$((25000 * seconds))}
rate=${RATIO_RATE:-0}
fill=${RATIO_FILL_CARDS:-0}
latency_log=()
[ -z "${RATIO_LATENCY_LOG:-}" ] || latency_log=(--latency-log "$RATIO_LATENCY_LOG")
fill_traffic=()
if [ "${RATIO_FILL_TRAFFIC:-1}" != 0 ] && [ "$fill" != 0 ]; then fill_traffic=(--fill-traffic); fi
client_nice=${RATIO_CLIENT_NICE:-0}
case "$client_nice" in ''|*[!0-9]*) client_nice=bad ;; esac
if [ "$client_nice" = bad ] || [ "$client_nice" -gt 19 ]; then
  echo "ratio.sh: RATIO_CLIENT_NICE must be a niceness from 0 to 19, not '${RATIO_CLIENT_NICE:-}'" >&2; exit 2
fi
nice_note=''
[ "$client_nice" = 0 ] || nice_note=" (load generator at nice $client_nice)"
case "$fill" in ''|*[!0-9]*) echo "ratio.sh: RATIO_FILL_CARDS must be a number of cards, not '$fill'" >&2; exit 2 ;; esac
backend=${RATIO_BACKEND:-$build/backend/server/otac-backend}
loadgen=$build/backend/bench/otac-loadgen
for b in "$backend" "$loadgen"; do
  [ -x "$b" ] || { echo "ratio.sh: $b not built (bash setup.sh build, or cmake --build $build)" >&2; exit 2; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || { echo "ratio.sh: nginx is not installed (apt-get install nginx, or bash setup.sh deps)" >&2; exit 2; }

exec 9>/tmp/otac-bench.lock
flock 9

run=$(mktemp -d /tmp/otac-ratio.XXXXXX)
backend_pid='' nginx_pid='' perf_pid=''
stop_all() {
  # By PID only: what this script started. Every step runs, whatever the one before returned.
  set +e
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true; fi
  if [ -n "$backend_pid" ]; then kill "$backend_pid" 2>/dev/null; wait "$backend_pid" 2>/dev/null || true; fi
  if [ -n "$nginx_pid" ]; then
    kill -QUIT "$nginx_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$nginx_pid" 2>/dev/null || true
  fi
  rm -rf "$run"
}
trap stop_all EXIT

free_port() {  # reserved outside the ephemeral range, shared with the tests
  "$(dirname "${BASH_SOURCE[0]}")/../tests/support/freeport.sh" 1
}
wait_for() {  # FILE SECONDS: bounded wait for a file to appear
  for _ in $(seq $(($2 * 20))); do [ -s "$1" ] && return 0; sleep 0.05; done
  echo "ratio.sh: $1 did not appear within $2 s" >&2
  return 1
}

# The backend, on a data directory of its own (it creates its CA, certificate and keys).
data=$run/data
mkdir -m 0700 "$data"
[ -n "${RATIO_BACKEND_CONF:-}" ] && printf '%s\n' "$RATIO_BACKEND_CONF" >"$data/otac-backend.conf"
"$backend" --data-dir "$data" --listen 127.0.0.1:0 >"$run/backend.log" 2>&1 &
backend_pid=$!
wait_for "$data/backend.port" 20 || { tail -20 "$run/backend.log" >&2; exit 1; }
backend_port=$(cat "$data/backend.port")

# nginx with the backend's TLS settings (backend/server/server.cpp, Server::listen_tls).
nginx_port=$(free_port)
mkdir -p "$run/nginx/logs"
cat >"$run/nginx/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $run/nginx/nginx.pid;
error_log $run/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:$nginx_port ssl;
    ssl_certificate $data/server.pem;
    ssl_certificate_key $data/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305;
    ssl_prefer_server_ciphers on;
    ssl_client_certificate $data/ca.pem;
    ssl_verify_client optional;
    location = /static { default_type application/json; return 200 '{"status":"ok"}'; }
  }
}
EOF
"$nginx_bin" -c "$run/nginx/nginx.conf" -p "$run/nginx" -g 'daemon on;'
wait_for "$run/nginx/nginx.pid" 10
nginx_pid=$(cat "$run/nginx/nginx.pid")

load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)
echo "ratio.sh: backend pid $backend_pid on :$backend_port, nginx pid $nginx_pid on :$nginx_port;" \
     "$connections connections, $seconds s per target, rate ${rate/#0/max}, fill $fill cards${fill_traffic:+ (requests to fill cards)};" \
     "$(nproc) cores, load $(load)$nice_note"

if [ -n "${RATIO_PERF:-}" ]; then
  # Started at the backend's first logged authorization (after the set-up and the nginx
  # phase), for the length of the phase.
  (
    # Bounded by the longest fill (10^7 cards take hours): 4 h in 50 ms steps. Without an
    # authorization by then the hook does not run at all, rather than profile the fill.
    for _ in $(seq 288000); do
      if grep -q 'path=/v1/authorizations ' "$run/backend.log" 2>/dev/null; then
        exec timeout -s INT "$seconds" $RATIO_PERF "$backend_pid"
      fi
      sleep 0.05
    done
  ) &
  perf_pid=$!
fi
set +e
nice -n "$client_nice" "$loadgen" --data-dir "$data" --url "https://127.0.0.1:$backend_port" --reference "https://127.0.0.1:$nginx_port/static" \
  --connections "$connections" --seconds "$seconds" --codes "$codes" --rate "$rate" --fill-cards "$fill" "${fill_traffic[@]}" "${latency_log[@]}" --no-healthz \
  >"$run/loadgen.out" 2>"$run/loadgen.err"
status=$?
set -e
load_after=$(load)
# The hook may have ended by itself already: its kill may fail.
if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; perf_pid=''; fi
if [ ! -r "/proc/$backend_pid/status" ]; then
  echo "ratio.sh: the backend (pid $backend_pid) exited during the run; the end of its log:" >&2
  tail -20 "$run/backend.log" >&2
  exit 1
fi
rss_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$backend_pid/status")
grep -E '^(disk|prepared|fill: [0-9]+ cards in)' "$run/loadgen.out" || true
if [ "$status" != 0 ]; then
  echo "ratio.sh: otac-loadgen failed (exit $status):" >&2
  tail -20 "$run/loadgen.err" >&2
  cat "$run/loadgen.out" >&2
  exit 1
fi
field() { sed -n "s/^phase=$1 .*$2=\([^ ]*\).*/\1/p" "$run/loadgen.out"; }
printf '%-28s %10s %9s %9s %8s\n' target req/s p50_ms p99_ms errors
printf '%-28s %10s %9s %9s %8s\n' "nginx static 200" "$(field reference rps)" "$(field reference p50_ms)" \
  "$(field reference p99_ms)" "$(field reference errors)"
printf '%-28s %10s %9s %9s %8s\n' "backend authorizations" "$(field authorize rps)" "$(field authorize p50_ms)" \
  "$(field authorize p99_ms)" "$(field authorize errors)"
echo "backend peak RSS: $((rss_kb / 1024)) MB (VmHWM)"
# The SQLite store's size (the default database file; a RATIO_BACKEND_CONF may name another).
sizes=''
for f in "$data"/otac.db "$data"/otac.db-wal; do
  if [ -f "$f" ]; then sizes+=" $(basename "$f") $(($(stat -c %s "$f") / 1048576)) MiB"; fi
done
echo "database after the run:${sizes:- none in the data directory}"
echo "load average before/after: $load_before / $load_after"
awk -v a="$(field authorize rps)" -v n="$(field reference rps)" 'BEGIN { printf "ratio auth/nginx %.2f\n", (n > 0 ? a / n : 0) }'
