#!/usr/bin/env bash
# tap_latency.sh BUILD_DIR [TAPS] — tap-to-decision latency through the whole system: the
# stock libnfc pn532_uart driver, the PN532 emulator with the card applet (otac-card) in its
# field, mutual-TLS HTTPS to otac-backend on SQLite (durable commits), and real Kannel keeping
# the card supplied with lists by SMS while the taps run. Prints p50/p99/max and the APDU
# exchanges per tap (bench/tap_latency.cpp). OTAC_TAP_GAP_MS (default 50) pauses between taps,
# outside the measured interval, so that lists arrive by SMS as fast as codes are used. Not
# run in CI.
#
# OTAC_TAP_CARD_TMPFS=1 keeps the virtual card's state file on /dev/shm: the card host commits
# its state with an fdatasync per AUTHENTICATE and per CONFIRM (one slot of its state file
# written in place), which on a busy shared disk is a large part of the tap; a real card writes
# its EEPROM instead. The backend's database stays on disk either way (durable commits).
set -euo pipefail
OTAC_BUILD=$(cd "${1:?usage: tap_latency.sh BUILD_DIR [TAPS]}" && pwd)
taps=${2:-1000}
OTAC_RUN=$(mktemp -d /tmp/otac-tap-bench.XXXXXX)
export OTAC_BUILD OTAC_RUN
if [ "${OTAC_TAP_CARD_TMPFS:-0}" = 1 ]; then
  E2E_CARD_STATE_DIR=$(mktemp -d /dev/shm/otac-tap-card.XXXXXX)
  export E2E_CARD_STATE_DIR
fi
# shellcheck source=../tests/e2e/lib.sh
source "$(dirname "$0")/../tests/e2e/lib.sh"
# Lists of 120 codes (the most one concatenated OTA packet carries); the backend pushes the
# next list at 60 unused, so the card never runs dry during the run.
stack_up 120 60 30 >/dev/null
if [ -n "${E2E_CARD_STATE_DIR:-}" ]; then trap 'stack_down; rm -rf "$E2E_CARD_STATE_DIR"' EXIT; fi
echo "system up in $OTAC_RUN; $taps taps through pn532_uart:$OTAC_RUN/pn532 -> https://127.0.0.1:$BACKEND_PORT"
"$OTAC_BUILD/bench/tap_latency" --config "$TERM_CONF" --taps "$taps" --gap-ms "${OTAC_TAP_GAP_MS:-50}"
echo "lists delivered by SMS during the run: $(grep -c 'Proof of Receipt sent' "$OTAC_RUN/card.log")"
echo "card state on: $(df --output=fstype "${E2E_CARD_STATE_DIR:-$OTAC_RUN}" | tail -1); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
