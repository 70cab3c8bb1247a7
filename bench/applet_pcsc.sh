#!/usr/bin/env bash
# applet_pcsc.sh — APDU round trips through a real pcscd + vpcd to otac-card (benchmark,
# never run in CI).
#
#   bench/applet_pcsc.sh [BUILD_DIR (build)] [ITERATIONS (1000)] [ALG (des3|aes)]
#
# OTAC_BENCH_DIR (default /tmp) holds the work directory and so the card's state file: on a
# tmpfs (/dev/shm) fsync costs nothing and the figures show the round trip without the disk.
# Takes /tmp/otac-pcscd.lock (one pcscd per machine; waits up to 120 s), starts pcscd with a
# vpcd reader on a free loopback port (tests/support/pcscd.sh), writes an activated card state
# with 2 x 200 codes (applet_bench prepare), runs `otac-card run --vicc 127.0.0.1:PORT` on it,
# and times SELECT, AUTHENTICATE and CONFIRM from a libpcsclite client (applet_bench pcsc).
# Every process it starts is stopped by PID on exit; the work directory is removed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
iterations=${2:-1000}
alg=${3:-des3}
bench="$build/bench/applet_bench"
card="$build/card-applet/otac-card"
for b in "$bench" "$card"; do
  [ -x "$b" ] || { echo "applet_pcsc.sh: $b missing; build it: cmake --build $build --target applet_bench otac-card" >&2; exit 2; }
done

work=$(mktemp -d "${OTAC_BENCH_DIR:-/tmp}/otac-applet-pcsc.XXXXXX")
card_pid=""
exec 9>/tmp/otac-pcscd.lock
cleanup() {
  if [ -n "$card_pid" ]; then
    kill -TERM "$card_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$card_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$card_pid" 2>/dev/null || true
  fi
  "$root/tests/support/pcscd.sh" stop "$work/pcscd" || true
  flock -u 9 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

flock -w 120 9 || { echo "applet_pcsc.sh: /tmp/otac-pcscd.lock busy for 120 s (tests using pcscd running?)" >&2; exit 1; }

"$bench" prepare --state "$work/card.state" --alg "$alg"
"$root/tests/support/pcscd.sh" start "$work/pcscd" 9>&-  # children must not hold the lock fd
# shellcheck disable=SC1091
. "$work/pcscd/pcscd.env"
"$card" run --state "$work/card.state" --vicc "127.0.0.1:$VPCD_PORT" 2>"$work/card.log" 9>&- &
card_pid=$!

echo "pcscd $(pcscd --version 2>/dev/null | head -1 | grep -o '[0-9][0-9.]*[0-9]' | head -1), $(uname -srm)"
"$bench" pcsc --reader "Virtual PCD" --state "$work/card.state" --iterations "$iterations" --alg "$alg" --wait-ms 15000 || {
  echo "applet_pcsc.sh: the client failed; otac-card log:" >&2; tail -20 "$work/card.log" >&2; exit 1; }
kill -0 "$card_pid" 2>/dev/null || { echo "applet_pcsc.sh: otac-card died; log:" >&2; tail -20 "$work/card.log" >&2; exit 1; }
