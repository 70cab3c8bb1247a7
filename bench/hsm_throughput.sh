#!/usr/bin/env bash
# hsm_throughput.sh [BUILD_DIR] — the cost of a PKCS#11 token per authorization: the same
# otac-loadgen runs against otac-backend with the file KEK and with every key in a SoftHSM2
# token (Debian softhsm2), one after the other in one run on this machine (not run in CI).
#
# For each custody: a fresh data directory (and for the token a throw-away token directory,
# SOFTHSM2_CONF and PIN file, initialized as the tests do, then otac-backend hsm-init), the
# backend on loopback, then otac-loadgen (which opens the backend's custody itself to read the
# codes: a second session with the token) for a throughput run (HSM_CONNECTIONS connections,
# as fast as they allow) and a run paced at HSM_RATE/s (latency). Besides req/s and latency it
# prints the backend's CPU time per authorization (utime + stime from /proc over the
# authorization phase: from the first logged authorization to the end of otac-loadgen), since
# SoftHSM2 runs inside the backend process and its cost is CPU.
#
# Environment: HSM_CONNECTIONS (16), HSM_SECONDS (10), HSM_CODES (20000 per run), HSM_RATE
# (500). Holds /tmp/otac-bench.lock while it runs and prints the load average beside the
# figures. Everything it starts is stopped by PID.
set -euo pipefail
build=$(cd "${1:-./build}" && pwd)
connections=${HSM_CONNECTIONS:-16}
seconds=${HSM_SECONDS:-10}
codes=${HSM_CODES:-20000}
rate=${HSM_RATE:-500}
backend=$build/backend/server/otac-backend
loadgen=$build/backend/bench/otac-loadgen
module=/usr/lib/softhsm/libsofthsm2.so
for b in "$backend" "$loadgen"; do
  [ -x "$b" ] || { echo "hsm_throughput.sh: $b not built (cmake --build $build)" >&2; exit 2; }
done
if [ ! -r "$module" ] || ! command -v softhsm2-util >/dev/null; then
  echo "hsm_throughput.sh: SoftHSM2 is not installed (apt-get install softhsm2)" >&2
  exit 2
fi

exec 9>/tmp/otac-bench.lock
flock 9

run=$(mktemp -d /tmp/otac-hsm-bench.XXXXXX)
backend_pid=''
stop_backend() {
  if [ -n "$backend_pid" ]; then kill "$backend_pid" 2>/dev/null; wait "$backend_pid" 2>/dev/null || true; fi
  backend_pid=''
}
stop_all() {
  set +e
  stop_backend
  rm -rf "$run"
}
trap stop_all EXIT

wait_for() {  # FILE SECONDS: bounded wait for a file to appear
  for _ in $(seq $(($2 * 20))); do [ -s "$1" ] && return 0; sleep 0.05; done
  echo "hsm_throughput.sh: $1 did not appear within $2 s" >&2
  return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
tck=$(getconf CLK_TCK)

# A throw-away SoftHSM2 token "otacbench" with user PIN 1234 (known, as in the tests: it
# protects nothing), its PIN file, and the backend configuration naming it.
token_setup() {  # DATA_DIR
  local hsm=$1.softhsm  # a token of its own per run: two tokens with one label would be ambiguous
  mkdir -p "$hsm/tokens"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$hsm/tokens" >"$hsm/softhsm2.conf"
  export SOFTHSM2_CONF=$hsm/softhsm2.conf
  softhsm2-util --init-token --free --label otacbench --pin 1234 --so-pin 5678 >"$hsm/init.log" 2>&1
  (umask 077; printf '1234\n' >"$hsm/hsm.pin")
  cat >"$1/otac-backend.conf" <<EOF
kek_uri = "pkcs11:token=otacbench;object=kek"
server_key_uri = "pkcs11:token=otacbench;object=otac-server"
card_ca_key_uri = "pkcs11:token=otacbench;object=otac-card-ca"
pkcs11_module = "$module"
pkcs11_pin_file = "$hsm/hsm.pin"
EOF
  "$backend" hsm-init --data-dir "$1" >"$run/hsm-init.out" 2>&1 || { cat "$run/hsm-init.out" >&2; return 1; }
}

# One loadgen run against a fresh backend: CUSTODY RATE LABEL; prints one table row.
measure() {
  local custody=$1 r=$2 label=$3
  local data=$run/data-$custody-$r
  mkdir -m 0700 "$data"
  [ "$custody" = token ] && token_setup "$data"
  "$backend" --data-dir "$data" --listen 127.0.0.1:0 >"$run/backend.log" 2>&1 &
  backend_pid=$!
  wait_for "$data/backend.port" 20 || { tail -20 "$run/backend.log" >&2; exit 1; }
  local port
  port=$(cat "$data/backend.port")
  "$loadgen" --data-dir "$data" --url "https://127.0.0.1:$port" --connections "$connections" --seconds "$seconds" \
    --codes "$codes" --rate "$r" --no-healthz >"$run/loadgen.out" 2>"$run/loadgen.err" &
  local loadgen_pid=$!
  # The authorization phase starts after the set-up (enrollment, lists, reading the codes).
  local first=''
  for _ in $(seq 12000); do
    if grep -q 'path=/v1/authorizations ' "$run/backend.log" 2>/dev/null; then first=$(cpu_ticks "$backend_pid"); break; fi
    kill -0 "$loadgen_pid" 2>/dev/null || break
    sleep 0.05
  done
  local status=0
  wait "$loadgen_pid" || status=$?
  local last
  last=$(cpu_ticks "$backend_pid")
  stop_backend
  if [ "$status" != 0 ] || [ -z "$first" ]; then
    echo "hsm_throughput.sh: otac-loadgen failed (exit $status) for $label:" >&2
    tail -20 "$run/loadgen.err" >&2
    cat "$run/loadgen.out" >&2
    exit 1
  fi
  field() { sed -n "s/^phase=authorize .*$1=\([^ ]*\).*/\1/p" "$run/loadgen.out"; }
  local ok
  ok=$(field ok)
  printf '%-30s %9s %8s %8s %7s %7s %12s\n' "$label" "$(field rps)" "$(field p50_ms)" "$(field p99_ms)" "$ok" \
    "$(field errors)" "$(awk -v c=$((last - first)) -v t="$tck" -v n="$ok" 'BEGIN { printf "%.0f", (n > 0 ? c / t / n * 1e6 : 0) }')"
}

echo "hsm_throughput.sh: $connections connections, $seconds s per run, $codes codes, paced runs at $rate/s;" \
     "$(nproc) cores, load $(load), $(softhsm2-util --version 2>/dev/null | head -1 | sed 's/^/SoftHSM2 /')"
printf '%-30s %9s %8s %8s %7s %7s %12s\n' run req/s p50_ms p99_ms ok errors cpu_us/auth
measure file 0 "file KEK, max"
measure token 0 "SoftHSM2 token, max"
measure file "$rate" "file KEK, $rate/s"
measure token "$rate" "SoftHSM2 token, $rate/s"
echo "load average after: $(load)"
