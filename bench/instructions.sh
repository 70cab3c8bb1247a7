#!/usr/bin/env bash
# instructions.sh [BUILD_DIR] — instructions per authorization of otac-backend, counted by
# valgrind's callgrind (not run in CI).
#
# On a shared or virtual machine the run-to-run spread of bench/ratio.sh (req/s, CPU time) is
# often as large as a change worth making. Instruction counts do not depend on the machine's
# load, so this is the benchmark to compare two builds' cost per authorization with; ratio.sh
# stays the one for throughput and latency.
#
# Runs bench/ratio.sh with the backend under `valgrind --tool=callgrind`, counting only during
# the authorization phase (callgrind_control switches the counting on at the first
# authorization and dumps at the end of the phase), with RATIO_CODES=3000 and RATIO_SECONDS=10
# unless set. Under valgrind the backend answers about a hundred authorizations a second, so
# its batches are smaller than at full speed; compare builds with this script, not with
# ratio.sh's figures. Prints bench/callgrind_count.py's summary: instructions per
# authorization (without the TLS handshakes, a cost per connection), the committer's share,
# and calls per authorization of malloc, unsealing, HMAC, TDEA blocks and SQLite statements.
#
# Environment: INSTRUCTIONS_BACKEND (another otac-backend binary, e.g. built from an older
# commit), INSTRUCTIONS_OUT (directory for the callgrind dump; default a temporary one,
# removed afterwards), and ratio.sh's RATIO_* settings.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "${1:-./build}" && pwd)
backend=${INSTRUCTIONS_BACKEND:-$build/backend/server/otac-backend}
[ -x "$backend" ] || { echo "instructions.sh: $backend not built (bash setup.sh build)" >&2; exit 2; }
for tool in valgrind callgrind_control; do
  command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is not installed (apt-get install valgrind, or bash setup.sh deps)" >&2; exit 2; }
done
work=$(mktemp -d /tmp/otac-instructions.XXXXXX)
out=${INSTRUCTIONS_OUT:-$work}
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# The backend as ratio.sh starts it, under callgrind with counting off until the phase starts.
cat >"$work/backend" <<WRAP
#!/bin/sh
exec valgrind -q --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/callgrind.%p "$backend" "\$@"
WRAP
# ratio.sh's RATIO_PERF hook: started with the backend's PID at its first authorization and
# stopped with SIGINT when the phase ends.
cat >"$work/count" <<'HOOK'
#!/bin/sh
pid=$1
callgrind_control -i on "$pid" >/dev/null 2>&1
trap 'callgrind_control -d "$pid" >/dev/null 2>&1; callgrind_control -i off "$pid" >/dev/null 2>&1; exit 0' INT TERM
while sleep 0.2; do :; done
HOOK
chmod +x "$work/backend" "$work/count"

RATIO_CODES=${RATIO_CODES:-3000} RATIO_SECONDS=${RATIO_SECONDS:-10} RATIO_BACKEND="$work/backend" \
  RATIO_PERF="sh $work/count" bash "$here/ratio.sh" "$build" >"$work/ratio.log" 2>&1 || true
dumps=$(ls "$out"/callgrind.*.1 2>/dev/null || true)
if [ -z "$dumps" ]; then
  echo "instructions.sh: no callgrind dump was written; ratio.sh said:" >&2
  tail -20 "$work/ratio.log" >&2
  exit 1
fi
grep -m1 '^prepared' "$work/ratio.log" || true
# No authorization counted (for example a load generator built for another schema than the
# backend): what ratio.sh said is the reason.
python3 "$here/callgrind_count.py" $dumps || { echo "instructions.sh: ratio.sh said:" >&2; tail -20 "$work/ratio.log" >&2; exit 1; }
