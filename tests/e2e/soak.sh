#!/usr/bin/env bash
# The lifecycle soak through the real daemons: a seeded random sequence of what users,
# operators and networks do, run against Kannel, otac-backend (HTTPS, SQLite), otac-card as
# the card and phone, the PN532 emulator and otac-terminal through libnfc, with the demo's
# sizes (lists of 10, backend threshold 3, card threshold 2). The in-process model soak
# (tests/lifecycle) covers millions of steps; this one covers the real stack.
#
#   soak.sh BUILD_DIR RUN_DIR [--steps N] [--seed S] [--strict]   (defaults: 200 steps, seed 1)
#
# --strict: also drive the triggers of the bugs listed in soak.py's KNOWN_BUGS (found here,
# fixed elsewhere); without it the action mix avoids them.
#
# The card is activated with a PIN limit of 30.00 (above it the terminal asks for the PIN,
# which it reads from standard input) and enrolled with a review amount of 50.00 (above it
# purchases are held for an operator). The terminal waits 3 s for an operator; the backend
# expires a hold after 20 s and sends a list whose PoR was lost again after 60 s.
#
# Actions (weighted, drawn from the seed; soak.py, ACTIONS): purchases below the PIN limit,
# with the PIN (sometimes a wrong one first), and above the review amount (held: an operator
# approves or declines while the terminal waits, or nobody does and the terminal gives up,
# sometimes followed by a late operator decision that must be refused); door taps at an
# allowed and at a refused door; display codes typed at the keypad (otac-terminal code), and
# now and then one shown but never typed; user refresh (otac-card refresh); operator refresh
# (otac-admin refresh); key rotation (otac-admin rotate-key); a new signature key (E3,
# otac-admin set-signature-key) and the server key (E4, otac-admin install-server-key); a
# backend restart (kill -9 by PID, sometimes with a tap while it is down: the card's answer
# is lost, then started again on the same data directory and port); the card daemon (otac-card
# run, the card and the phone) killed with kill -9 and started again on the same state file:
# frozen while Kannel hands it a list's SMS parts (lost: the fake SMSC has no acknowledgement,
# so the backend must send the list again after list_repair_seconds), as the first part of a
# list arrives, or idle; Kannel stopped for a few steps (its store keeps the
# queue; SMS are delayed, not lost) and started again; an operator block for a few steps,
# then unblock; a wrong PIN at the phone (otac-card verify), and once the PIN is blocked the
# holder's PUK unblock (otac-card unblock). Not driven here, for lack of a way through the
# programs' interfaces: lost, duplicated or reordered single SMS, PoRs with chosen RSCs and
# a full card's refusal (the model soak injects those), and E5 lists (asymmetric.sh).
#
# Checks, through the programs' own outputs (soak.py, "Invariants"):
#   double_approval   no (list, index) approved twice (otac-admin transactions; and the
#                     terminal's own saved requests)
#   terminal_agrees   the decision the terminal printed is the backend's once it is final; an
#                     operator's decision after the terminal gave up is refused
#   genuine           a tap or typed code the card produced while active, with codes, its PIN
#                     not blocked and the backend up, is approved; above 50.00 it is held and
#                     ends as the operator decided in time, else declined (held_timeout)
#   settled           after a quiet phase (Kannel up; bounded waits): outbox empty, no refresh
#                     pending on the card, no list, K', S or server key in flight at the backend
#   liveness          after a quiet phase an unblocked card holds an unused code
#   agreement         after a quiet phase the backend's unused codes (loaded lists) equal the
#                     card's plus the codes the card spent that the backend never saw (tracked
#                     here: answers lost while the backend was down,
#                     display codes never typed), and those are exactly the spent codes the
#                     backend's records do not show consumed
#   keys              after a quiet phase card and backend are on the same key version
# A failure prints the seed, the step, the actions so far and the end of each daemon's log,
# and exits 1. Every process is stopped by PID on exit (lib.sh).
set -euo pipefail
usage="usage: soak.sh BUILD_DIR RUN_DIR [--steps N] [--seed S] [--strict]"
OTAC_BUILD=$(cd "${1:?$usage}" && pwd)
OTAC_RUN=${2:?$usage}
shift 2
steps=200 seed=1 strict=()
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=${2:?$usage}; shift 2 ;;
    --seed) seed=${2:?$usage}; shift 2 ;;
    --strict) strict=(--strict); shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[[ $steps =~ ^[0-9]+$ && $seed =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
export OTAC_BUILD OTAC_RUN
rm -rf "$OTAC_RUN"
# The backend sends a list again when its PoR is lost (a PoR sent by Kannel while the backend
# was killed) after list_repair_seconds; 60 is the least it takes.
E2E_BACKEND_CONF=$'hold_limit_seconds = 20\nlist_repair_seconds = 60'
E2E_CARD_ACTIVATE_ARGS="--pin-limit 3000"
export E2E_BACKEND_CONF E2E_CARD_ACTIVATE_ARGS
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

stack_up 10 3 2 || { echo "FAIL: the system did not come up (logs: $OTAC_RUN)" >&2; exit 1; }
# soak.py kills and restarts the backend itself (the PID file stays current for stack_down);
# without its job entries this shell does not report the killed process.
disown -a
sed -i 's/^pin_source = .*/pin_source = "stdin"/; s/^held_wait_limit_s = .*/held_wait_limit_s = 3/' "$TERM_CONF"
# The soak checks the lifecycle, not the card's speed (faults.sh tests the reader timeout): a card
# process starved of CPU on a loaded CI machine once took over the default 1 s for an APDU.
printf 'backend_timeout_ms = 3000\npin_timeout_s = 5\napdu_timeout_ms = 5000\n' >>"$TERM_CONF"

export BIN_BACKEND BIN_ADMIN BIN_CARD BIN_TERM BACKEND_DIR BACKEND_PORT CARD_N CARD_STATE TERM_CONF \
       CARD_PIN CARD_PUK DOOR_OK E2E_SUPPORT
rc=0
python3 "$here/soak.py" --steps "$steps" --seed "$seed" "${strict[@]}" || rc=$?
[ $rc = 0 ] || echo "logs: $OTAC_RUN" >&2
exit $rc
