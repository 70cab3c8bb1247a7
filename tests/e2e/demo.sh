#!/usr/bin/env bash
# The end-to-end demo: the whole system on this machine, through the real programs.
#
#   demo.sh BUILD_DIR [RUN_DIR] [--postgres]
#
# Kannel (bearerbox + smsbox) with its fake SMSC on loopback, otac-backend on SQLite (with
# --postgres: two otac-backend nodes on one throw-away PostgreSQL cluster, the terminal
# configured with both, an operator on the other node, and the first node killed at the end), a card
# enrolled with otac-admin and activated with otac-card, its first list delivered by SMS, the
# PN532 emulator with the card in its field, and otac-terminal through the stock libnfc
# pn532_uart driver; then otac-dispenser-emu and otac-terminal atm for a withdrawal and a
# reversal after a jam. Each step says what it does and checks the outcome; the demo exits 1 at
# the first step that does not go as it should. Every process it starts is stopped by PID
# on exit. Logs stay in RUN_DIR (default: a fresh directory under /tmp).
set -euo pipefail
OTAC_BUILD=$(cd "${1:?usage: demo.sh BUILD_DIR [RUN_DIR] [--postgres]}" && pwd)
shift
OTAC_RUN=""
for arg in "$@"; do
  case $arg in
    --postgres) export E2E_POSTGRES=1 ;;
    -*) printf 'demo.sh: unknown option %s (usage: demo.sh BUILD_DIR [RUN_DIR] [--postgres])\n' "$arg" >&2; exit 2 ;;
    *) OTAC_RUN=$arg ;;
  esac
done
OTAC_RUN=${OTAC_RUN:-$(mktemp -d /tmp/otac-demo.XXXXXX)}
export OTAC_BUILD OTAC_RUN
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

n=0
step() { n=$((n + 1)); printf '\n\033[1m[%d] %s\033[0m\n' "$n" "$*"; }
say() { printf '    %s\n' "$*"; }
fail() {
  printf '\nDEMO FAILED at step %d: %s\nLogs: %s\n' "$n" "$*" "$OTAC_RUN" >&2
  exit 1
}
# tap NAME ARGS...: one terminal transaction; its two output lines go to NAME.out, its
# display and log to NAME.err. Prints the human line; sets DECISION, REASON, TXN.
tap() {
  local name=$1; shift
  local rc=0
  term "$@" >"$OTAC_RUN/$name.out" 2>"$OTAC_RUN/$name.err" || rc=$?
  sed -n 1p "$OTAC_RUN/$name.out" | sed 's/^/    terminal: /'
  grep -h '^relay:' "$OTAC_RUN/$name.err" | sed 's/^/    /' || true
  DECISION=$(sed -n 2p "$OTAC_RUN/$name.out" | json_field decision)
  REASON=$(sed -n 2p "$OTAC_RUN/$name.out" | json_field reason)
  TXN=$(sed -n 2p "$OTAC_RUN/$name.out" | json_field txn_id)
  [ -n "$DECISION" ] || { cat "$OTAC_RUN/$name.err" >&2; fail "the terminal printed no decision (exit $rc)"; }
}
expect() {  # expect DECISION [REASON]
  [ "$DECISION" = "$1" ] || fail "expected $1, the terminal says $DECISION ($REASON)"
  [ -z "${2:-}" ] || [ "$REASON" = "$2" ] || fail "expected reason $2, got $REASON"
}

printf 'OTAC end-to-end demo (logs in %s)\n' "$OTAC_RUN"

if [ -n "${E2E_POSTGRES:-}" ]; then
  step "Start Kannel, PostgreSQL and two backend nodes on it, enroll a card, activate it; its first list comes by SMS"
else
  step "Start Kannel and the backend, enroll a card, activate it; its first list comes by SMS"
fi
export E2E_BACKEND_CONF="cash_card_daily_minor = 50000"  # ATMs: at most 500.00 a card a day
stack_up 10 3 || fail "the system did not come up"
say "backend: https://127.0.0.1:$BACKEND_PORT (data in $BACKEND_DIR)"
# With two nodes, the operator works on the second one; the terminal starts with the first.
other=""
if [ -n "${E2E_POSTGRES:-}" ]; then
  say "backend node 2: https://127.0.0.1:$BACKEND2_PORT (data in $BACKEND2_DIR), both on PostgreSQL ($OTAC_RUN/pg-sock)"
  say "terminal: backend_url = $(sed -n 's/^backend_url = //p' "$TERM_CONF")"
  other=$BACKEND2_PORT
fi
say "Kannel: fake SMSC on 127.0.0.1:$KANNEL_SMSC_PORT, sendsms on 127.0.0.1:$KANNEL_SENDSMS_PORT"
say "card $CARD_N enrolled (letter: $OTAC_RUN/letter.txt), PIN set, activated"
grep -E 'sms: ' "$OTAC_RUN/card.log" | sed -E 's/.* msg="?(.*[^"])"?$/    card: \1/'
say "card: $(card_codes) unused codes; terminal $TERMINAL_ID registered, reader pn532_uart:$OTAC_RUN/pn532"

step "A purchase of 12.50 EUR is approved"
tap buy1 pos --amount 12.50 --save-request "$OTAC_RUN/buy1.request.json"
expect approved
summary=$(sed -n 2p "$OTAC_RUN/buy1.out" | python3 -c 'import json,sys; r=json.loads(sys.stdin.readline()); print("%d APDU exchanges, %.1f ms from card detected to decision, ARPC checked by the card: %s" % (r["apdu_exchanges"], r["latency_ms"], r["card_confirmed"]))') \
  || fail "the terminal's JSON line is unreadable"
say "$summary"

step "The same card answer replayed under a new transaction id is declined"
sed 's/"txn_id":"[^"]*"/"txn_id":"replay-of-buy1"/' "$OTAC_RUN/buy1.request.json" >"$OTAC_RUN/replay.json"
post_json /v1/authorizations "$OTAC_RUN/replay.json" >"$OTAC_RUN/replay.answer" || fail "the backend did not answer"
say "backend: $(cat "$OTAC_RUN/replay.answer")"
DECISION=$(json_field decision <"$OTAC_RUN/replay.answer")
REASON=$(json_field reason <"$OTAC_RUN/replay.answer")
expect declined code_used

step "A purchase of 80.00 EUR is held for review; an operator approves it while the terminal waits"
held_txn=DEMO-HELD-$$
tap held pos --amount 80.00 --txn-id "$held_txn" &
tap_pid=$!
decided=0
for _ in $(seq 1 100); do
  if ADMIN_PORT=${other:-$BACKEND_PORT} admin --json approve "$held_txn" >"$OTAC_RUN/approve.out" 2>&1; then decided=1; break; fi
  sleep 0.1
done
wait $tap_pid || fail "the held purchase did not end as expected"
[ $decided = 1 ] || fail "otac-admin approve failed: $(cat "$OTAC_RUN/approve.out")"
say "operator${other:+ on node 2}: otac-admin approve $held_txn -> $(json_field decision <"$OTAC_RUN/approve.out") ($(json_field reason <"$OTAC_RUN/approve.out"), auth code $(json_field auth_code <"$OTAC_RUN/approve.out"))"
grep -h '^\[display\]' "$OTAC_RUN/held.err" | sed 's/^\[display\] /    terminal display: /' || true
DECISION=$(sed -n 2p "$OTAC_RUN/held.out" | json_field decision)
expect approved

step "Door $DOOR_OK (on the card's door list) opens"
tap door1 door
expect approved

step "Door VAULT09 (not on the card's door list) stays shut"
tap door2 door --door VAULT09
expect declined
grep -q '^relay:' "$OTAC_RUN/door2.err" && fail "the relay was pulsed for a refused door"
say "relay not pulsed"

step "Display mode: the card shows a code, typed at the door's keypad"
code=$(card code <<<"$CARD_PIN" 2>>"$OTAC_RUN/steps.log" | grep -Eo '[0-9]{8}' | head -1)
[ -n "$code" ] || fail "the card showed no code"
say "card display: $code"
tap keypad code "$code" --card "$CARD_N" --door "$DOOR_OK"
expect approved

step "Purchases until the card's unused codes fall to the threshold (3): the backend pushes a new list by SMS"
say "card: $(card_codes) unused codes"
pors=$(grep -c 'Proof of Receipt sent' "$OTAC_RUN/card.log" || true)
i=0
while [ "$(grep -c 'Proof of Receipt sent' "$OTAC_RUN/card.log" || true)" -le "$pors" ] && [ $i -lt 10 ]; do
  i=$((i + 1))
  tap "fill$i" pos --amount 1.00
  expect approved
  say "card: $(card_codes) unused codes"
  sleep 0.3
done
[ "$(grep -c 'Proof of Receipt sent' "$OTAC_RUN/card.log" || true)" -gt "$pors" ] || fail "no new list arrived"
grep -E 'sms: ' "$OTAC_RUN/card.log" | tail -3 | sed -E 's/.* msg="?(.*[^"])"?$/    card: \1/'
card status | grep -E 'active list|unused codes|lists held' | sed 's/^/    card: /'

step "The new list is used once the old one runs out"
list_seen=""
for i in $(seq 1 8); do
  tap "next$i" pos --amount 2.00 --save-request "$OTAC_RUN/next$i.request.json"
  expect approved
  list_seen=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["list"])' "$OTAC_RUN/next$i.request.json")
  [ "$list_seen" != 1 ] && break
done
[ "$list_seen" != 1 ] || fail "every purchase still used list 1"
say "the card answered from list $list_seen"

step "An ATM: PIN checked by the card, 70.00 paid out by the dispenser, completion reported"
proc_start dispenser "$OTAC_BUILD/hw/otac-dispenser-emu" --socket "$OTAC_RUN/dispenser.sock" --cassettes 2000x20,5000x10 \
  --ready-file "$OTAC_RUN/dispenser.ready" --verbose
proc_wait_file "$OTAC_RUN/dispenser.ready" 10 dispenser || fail "the dispenser emulator did not start"
sed 's/^pin_source = .*/pin_source = "stdin"/' "$TERM_CONF" >"$TERM_DIR/atm.conf"
printf 'dispenser_socket = "%s"\ndispenser_take_s = 2\n' "$OTAC_RUN/dispenser.sock" >>"$TERM_DIR/atm.conf"
atm() {  # atm NAME AMOUNT: a withdrawal with the card's PIN keyed in
  local name=$1
  printf '%s\n' "$CARD_PIN" | "$BIN_TERM" --config "$TERM_DIR/atm.conf" atm --amount "$2" \
    >"$OTAC_RUN/$name.out" 2>"$OTAC_RUN/$name.err" || true
  sed -n 1p "$OTAC_RUN/$name.out" | sed 's/^/    terminal: /'
  LINE=$(sed -n 2p "$OTAC_RUN/$name.out")
  [ -n "$LINE" ] || { cat "$OTAC_RUN/$name.err" >&2; fail "the terminal printed no decision"; }
  DECISION=$(json_field decision <<<"$LINE"); REASON=$(json_field reason <<<"$LINE"); TXN=$(json_field txn_id <<<"$LINE")
}
atm atm1 70.00
expect approved ok
[ "$(json_field dispense <<<"$LINE")" = dispensed ] && [ "$(json_field outcome <<<"$LINE")" = completed ] ||
  fail "expected the notes paid out and the completion reported: $LINE"
admin transaction "$TXN" | grep -E '^(decision|outcome):' | sed 's/^/    backend: /'

step "The dispenser jams before any note: the withdrawal is reversed, the daily limit given back"
python3 - "$OTAC_RUN/dispenser.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1]); s.sendall(b"FAULT jam\n")
print("    dispenser: " + s.makefile().readline().strip())
PY
atm atm2 100.00
expect approved ok
[ "$(json_field dispense <<<"$LINE")" = jam ] && [ "$(json_field outcome <<<"$LINE")" = reversed ] ||
  fail "expected a jam and a reversal: $LINE"
admin --json transaction "$TXN" | python3 -c 'import json,sys; o=json.loads(sys.stdin.readline())["outcome"]; print("    backend: outcome %s, handed over %s" % (o["outcome"], o["handed_minor"])); sys.exit(0 if o["outcome"]=="reversed" else 1)' ||
  fail "the backend did not record the reversal"
atm atm3 430.00
expect approved ok
say "430.00 more approved: 70.00 + 430.00 is the day's 500.00, the jammed 100.00 did not count"

if [ -n "${E2E_POSTGRES:-}" ]; then
  step "Node 1 is killed with kill -9: the terminal's next purchase is decided by node 2"
  node1=$(cat "$OTAC_RUN/pids/backend")
  kill -KILL "$node1"
  wait "$node1" 2>/dev/null || true
  tap failover pos --amount 4.00
  expect approved
  grep -h ' failed (' "$OTAC_RUN/failover.err" | sed 's/^otac-terminal: /    terminal: /' ||
    fail "the terminal did not fail over to node 2"
  export ADMIN_PORT=$BACKEND2_PORT
  say "otac-admin talks to node 2 from now on"
fi

step "The audit log is intact"
admin audit --verify | sed 's/^/    /' || fail "the audit chain does not verify"

step "Stop everything"
stack_down
trap - EXIT
say "all processes stopped"
printf '\nDEMO OK: %d steps\n' "$n"
