#!/usr/bin/env bash
# End-to-end ATM scenarios: the whole system up (lib.sh: Kannel, otac-backend, otac-card in
# the PN532 emulator's field, reached through libnfc), plus otac-dispenser-emu, and
# otac-terminal atm. Each case checks the terminal's JSON line, the backend's record of the
# transaction and its outcome, and the dispenser's cassettes.
#
#   atm.sh BUILD_DIR RUN_DIR CASE
#
# CASE is one of:
#   withdrawal     PIN, 70.00 approved, paid out, completed reported; the cassettes lose the notes
#   jam            the dispenser jams before any note: reversed with 0 handed over
#   partial        the largest note comes out, then a jam: reversed with 50.00 handed over
#   retract        the notes are not taken and retracted: reversed with 0 handed over
#   backend-down   the backend stops during the payout: the completion is queued on the
#                  terminal's disk and delivered by the next run after the restart
#   kill9          the terminal is killed with SIGKILL during the payout: its queued reversal
#                  is delivered by the next run
#   wrong-pin      three wrong PINs: 63C2, 63C1, then blocked; declined pin_blocked and nothing
#                  reached the backend; the next tap declines at once (PIN blocked), offline
#   replay         the card's answer of an approved withdrawal sent again under a new
#                  transaction id: declined code_used
#   race           two ATMs (TERM0001 and ATM00002) send genuine 300.00 withdrawals of the same
#                  card at the same moment against its 500.00 daily limit: exactly one is
#                  approved, the other declined cash_limit (the card's answers were taken with
#                  the backend out of reach and saved, then sent together with curl)
#   void-refund    a purchase voided at the terminal (its retry then reads declined voided; an
#                  older one cannot be voided); a refund asked at the terminal, pending in
#                  otac-admin until an operator approves it; /metrics and the audit log show both
#   late-answer    the terminal gives up waiting and reverses; the backend decides afterwards.
#                  A held purchase: the backend is frozen (SIGSTOP) while the terminal waits
#                  for an operator, so its cancel is lost; it shows declined, and an operator
#                  approves once the backend runs again. A withdrawal: the backend is frozen
#                  after the request reached it, past backend_timeout_ms; the terminal shows
#                  declined, and the backend approves once continued. Both reversals wait on the
#                  terminal's disk until the backend is back and are then applied; a retry of
#                  either transaction id reads declined reversed; the card's daily cash total
#                  gives the withdrawal back (a withdrawal of the whole limit then passes)
#   auto-reverse   the terminal is killed (SIGKILL) during the payout and never runs again: the
#                  backend reverses the withdrawal itself after cash_complete_seconds (10 s);
#                  otac-admin, the audit log and /metrics show it; the card's daily total is
#                  given back (a second ATM's withdrawal of the whole limit passes)
set -euo pipefail
OTAC_BUILD=$(cd "${1:?usage: atm.sh BUILD_DIR RUN_DIR CASE}" && pwd)
OTAC_RUN=${2:?usage: atm.sh BUILD_DIR RUN_DIR CASE}
case_name=${3:?usage: atm.sh BUILD_DIR RUN_DIR CASE}
export OTAC_BUILD OTAC_RUN
rm -rf "$OTAC_RUN"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

BIN_DISP=$OTAC_BUILD/hw/otac-dispenser-emu
fail() { echo "FAIL ($case_name): $*" >&2; echo "logs: $OTAC_RUN" >&2; exit 1; }

# atm NAME PIN_LINES ARGS...: one withdrawal with the PIN lines on standard input; sets
# DECISION REASON DISPENSE HANDED OUTCOME TXN and LINE (the JSON line).
atm() {
  local name=$1 pins=$2; shift 2
  printf '%b' "$pins" | term atm "$@" >"$OTAC_RUN/$name.out" 2>"$OTAC_RUN/$name.err" || true
  LINE=$(sed -n 2p "$OTAC_RUN/$name.out")
  [ -n "$LINE" ] || { cat "$OTAC_RUN/$name.err" >&2; fail "$name: no JSON line from the terminal"; }
  read_line
  echo "$name: $DECISION ($REASON) dispense=$DISPENSE handed=$HANDED outcome=$OUTCOME"
}
read_line() {
  DECISION=$(json_field decision <<<"$LINE")
  REASON=$(json_field reason <<<"$LINE")
  DISPENSE=$(json_field dispense <<<"$LINE")
  HANDED=$(json_field handed_minor <<<"$LINE")
  OUTCOME=$(json_field outcome <<<"$LINE")
  TXN=$(json_field txn_id <<<"$LINE")
}
expect() {
  [ "$DECISION" = "$1" ] || fail "expected $1, got $DECISION ($REASON)"
  [ -z "${2:-}" ] || [ "$REASON" = "$2" ] || fail "expected reason $2, got $REASON"
}
# backend_outcome TXN: "OUTCOME HANDED" as the backend recorded it ("none" if none).
backend_outcome() {
  admin --json transaction "$1" | python3 -c '
import json, sys
t = json.loads(sys.stdin.readline())
o = t.get("outcome")
print("%s %s" % (o["outcome"], o["handed_minor"]) if o else "none")'
}
expect_backend() {
  local got
  got=$(backend_outcome "$1")
  [ "$got" = "$2" ] || fail "backend outcome of $1: expected '$2', got '$got'"
}
# dispenser LINE: one request to the dispenser emulator, its reply on stdout.
dispenser() {
  python3 - "$DISP_SOCK" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
print(s.makefile().readline().strip())
PY
}
backend_txns() { admin --json transactions --card "$CARD_N" --limit 1000 | python3 -c '
import json, sys
print(len(json.loads(sys.stdin.readline())["transactions"]))'; }
# wait_approved: until the backend records an approved withdrawal it did not have before.
wait_new_approval() {
  local before=$1 i
  for ((i = 0; i < 100; i++)); do
    [ "$(admin --json transactions --card "$CARD_N" --decision approved --limit 1000 |
         python3 -c 'import json,sys; print(len(json.loads(sys.stdin.readline())["transactions"]))')" -gt "$before" ] && return 0
    sleep 0.1
  done
  fail "the backend recorded no approval within 10 s"
}
approvals() { admin --json transactions --card "$CARD_N" --decision approved --limit 1000 |
              python3 -c 'import json,sys; print(len(json.loads(sys.stdin.readline())["transactions"]))'; }
# backend_field TXN NAME: a top-level field of the backend's record of TXN.
backend_field() { admin --json transaction "$1" | json_field "$2"; }
# atm_conf ID DIR URL: DIR/terminal.conf for the registered terminal ID (ca.pem, its
# certificate and key in DIR), TERM_CONF's settings otherwise, its backend at URL.
atm_conf() {
  sed "s|^backend_url = .*|backend_url = \"$3\"|; s|^terminal_id = .*|terminal_id = \"$1\"|;
       s|^cert_file = .*|cert_file = \"$1.pem\"|; s|^key_file = .*|key_file = \"$1.key\"|" "$TERM_CONF" >"$2/terminal.conf"
}
# wait_grep PATTERN FILE SECS: until FILE has a line matching PATTERN.
wait_grep() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q "$1" "$2" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "no '$1' in $2 within $3 s"
}
backend_pid() { cat "$OTAC_RUN/pids/backend"; }
# kill_mid_payout AMOUNT: a withdrawal of AMOUNT whose terminal is killed (SIGKILL) once the
# backend approved it, during the payout (DELAY); sets txn to its transaction id.
kill_mid_payout() {
  local before term_pid
  before=$(approvals)
  printf '%s\n' "$CARD_PIN" >"$OTAC_RUN/pin.txt"
  "$BIN_TERM" --config "$TERM_CONF" atm --amount "$1" <"$OTAC_RUN/pin.txt" >"$OTAC_RUN/w1.out" 2>"$OTAC_RUN/w1.err" &
  term_pid=$!
  wait_new_approval "$before"
  sleep 0.5   # the payout has started (it takes 4 s)
  kill -0 "$term_pid" 2>/dev/null || fail "the terminal is not running"
  kill -9 "$term_pid"
  wait "$term_pid" || true
  txn=$(admin --json transactions --card "$CARD_N" --decision approved --limit 1 | python3 -c '
import json,sys; print(json.loads(sys.stdin.readline())["transactions"][0]["txn_id"])')
}

export E2E_BACKEND_CONF="cash_card_daily_minor = 50000
cash_terminal_daily_minor = 100000"
[ "$case_name" != auto-reverse ] || E2E_BACKEND_CONF+=$'\ncash_complete_seconds = 10'
stack_up 20 3

# The dispenser: 20.00 x 20 and 50.00 x 10; payouts take DELAY ms (a window for the faults).
DELAY=0
case "$case_name" in backend-down|kill9|auto-reverse) DELAY=4000 ;; esac
DISP_SOCK=$OTAC_RUN/dispenser.sock
proc_start dispenser "$BIN_DISP" --socket "$DISP_SOCK" --cassettes 2000x20,5000x10 --delay-ms "$DELAY" \
  --ready-file "$OTAC_RUN/dispenser.ready" --verbose
proc_wait_file "$OTAC_RUN/dispenser.ready" 10 dispenser || fail "the dispenser emulator did not start"
sed -i 's/^pin_source = .*/pin_source = "stdin"/' "$TERM_CONF"
cat >>"$TERM_CONF" <<EOF
dispenser_socket = "$DISP_SOCK"
dispenser_take_s = 1
outcome_retry_s = 2
EOF
echo "system up: backend :$BACKEND_PORT, card $CARD_N with $(card_codes) codes, dispenser $(dispenser STATUS)"

case "$case_name" in
  withdrawal)
    atm w1 "$CARD_PIN\n" --amount 70.00
    expect approved ok
    [ "$DISPENSE" = dispensed ] && [ "$HANDED" = 7000 ] || fail "expected 7000 dispensed: $LINE"
    [ "$OUTCOME" = completed ] && [ "$(json_field outcome_delivered <<<"$LINE")" = True ] || fail "completion not delivered: $LINE"
    expect_backend "$TXN" "completed 7000"
    [ "$(dispenser STATUS)" = "OK STATUS ready 2000x19,5000x9" ] || fail "cassettes after 70.00: $(dispenser STATUS)"
    # An amount the cassettes cannot make never goes online.
    before=$(backend_txns)
    atm w2 "$CARD_PIN\n" --amount 30.00
    expect declined amount_cancelled
    [ "$(backend_txns)" = "$before" ] || fail "an amount the dispenser cannot pay reached the backend"
    ;;
  jam|partial|retract)
    fault=$case_name
    [ "$fault" = retract ] && fault=not_taken
    [ "$(dispenser "FAULT $fault")" = "OK FAULT $fault" ] || fail "cannot set the fault"
    atm w1 "$CARD_PIN\n" --amount 70.00
    expect approved ok
    want_handed=0
    [ "$case_name" = partial ] && want_handed=5000
    case "$case_name" in jam) want=jam ;; partial) want=partial ;; retract) want=retracted ;; esac
    [ "$DISPENSE" = "$want" ] && [ "$HANDED" = "$want_handed" ] || fail "expected $want with $want_handed handed: $LINE"
    [ "$OUTCOME" = reversed ] || fail "expected a reversal: $LINE"
    expect_backend "$TXN" "reversed $want_handed"
    # The daily limit (500.00) follows the reversal: 430.00 more (500.00 - what was handed over) is approved.
    more=$(( (50000 - want_handed) / 100 ))
    atm w2 "$CARD_PIN\n" --amount "$more.00"
    expect approved ok
    ;;
  backend-down)
    before=$(approvals)
    printf '%s\n' "$CARD_PIN" >"$OTAC_RUN/pin.txt"
    "$BIN_TERM" --config "$TERM_CONF" atm --amount 70.00 <"$OTAC_RUN/pin.txt" >"$OTAC_RUN/w1.out" 2>"$OTAC_RUN/w1.err" &
    term_pid=$!
    wait_new_approval "$before"
    proc_stop backend   # during the 4 s payout
    wait "$term_pid" || true
    LINE=$(sed -n 2p "$OTAC_RUN/w1.out"); read_line
    echo "w1: $DECISION dispense=$DISPENSE outcome=$OUTCOME delivered=$(json_field outcome_delivered <<<"$LINE")"
    [ "$DISPENSE" = dispensed ] && [ "$OUTCOME" = completed ] || fail "expected a completed payout: $LINE"
    [ "$(json_field outcome_delivered <<<"$LINE")" = False ] || fail "the completion cannot have been delivered: $LINE"
    [ -f "$TERM_DIR/outcomes/$TXN.json" ] || fail "the completion is not queued on disk"
    proc_start backend "$BIN_BACKEND" --data-dir "$BACKEND_DIR" --listen "127.0.0.1:$BACKEND_PORT"
    for _ in $(seq 1 100); do curl -sk --max-time 1 "https://127.0.0.1:$BACKEND_PORT/healthz" >/dev/null && break; sleep 0.1; done
    expect_backend "$TXN" none
    term outcomes >"$OTAC_RUN/flush.out" 2>&1 || fail "the queued completion was not delivered: $(cat "$OTAC_RUN/flush.out")"
    expect_backend "$TXN" "completed 7000"
    [ ! -f "$TERM_DIR/outcomes/$TXN.json" ] || fail "the delivered completion is still queued"
    ;;
  kill9)
    kill_mid_payout 70.00
    [ -f "$TERM_DIR/outcomes/$txn.json" ] || fail "no reversal queued on disk before the payout"
    expect_backend "$txn" none
    term outcomes >"$OTAC_RUN/flush.out" 2>&1 || fail "the reversal was not delivered: $(cat "$OTAC_RUN/flush.out")"
    expect_backend "$txn" "reversed 0"
    ;;
  wrong-pin)
    before=$(backend_txns)
    atm w1 "1111\n2222\n3333\n" --amount 70.00
    expect declined pin_blocked
    grep -q "Wrong PIN, 2 tries left" "$OTAC_RUN/w1.err" || fail "the tries left (63C2) were not shown"
    grep -q "Wrong PIN, 1 try left" "$OTAC_RUN/w1.err" || fail "the tries left (63C1) were not shown"
    [ "$(json_field backend_attempts <<<"$LINE")" = 0 ] || fail "a blocked PIN went online: $LINE"
    [ "$(backend_txns)" = "$before" ] || fail "the backend recorded a transaction for a blocked PIN"
    atm w2 "$CARD_PIN\n" --amount 70.00
    expect declined pin_blocked
    grep -q "Enter PIN" "$OTAC_RUN/w2.err" && fail "a blocked PIN was asked for again"
    true
    ;;
  replay)
    atm w1 "$CARD_PIN\n" --amount 70.00 --save-request "$OTAC_RUN/genuine.json"
    expect approved ok
    python3 - "$OTAC_RUN/genuine.json" "$OTAC_RUN/replay.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
b["txn_id"] = "replayed-" + b["txn_id"]
json.dump(b, open(sys.argv[2], "w"))
PY
    ans=$(post_json /v1/authorizations "$OTAC_RUN/replay.json")
    echo "replay: $ans"
    [ "$(json_field decision <<<"$ans")" = declined ] && [ "$(json_field reason <<<"$ans")" = code_used ] ||
      fail "a replayed withdrawal answer was not declined code_used: $ans"
    ;;
  race)
    quiet admin register-terminal ATM00002 --out "$OTAC_RUN/term2" || fail "cannot register ATM00002"
    dead=$("$E2E_SUPPORT/freeport.sh" 1)
    # A config for terminal ID (certificate in DIR) that points at a closed port: the card's
    # answer is only saved (--save-request), the backend does not see it yet.
    for t in "TERM0001 $TERM_DIR" "ATM00002 $OTAC_RUN/term2"; do
      set -- $t
      mkdir -p "$OTAC_RUN/off-$1"
      cp "$2/ca.pem" "$2/$1.pem" "$2/$1.key" "$OTAC_RUN/off-$1/"
      atm_conf "$1" "$OTAC_RUN/off-$1" "https://127.0.0.1:$dead"
      printf '%s\n' "$CARD_PIN" | "$BIN_TERM" --config "$OTAC_RUN/off-$1/terminal.conf" atm --amount 300.00 \
        --save-request "$OTAC_RUN/race-$1.json" >"$OTAC_RUN/save-$1.out" 2>"$OTAC_RUN/save-$1.err" || true
      [ -s "$OTAC_RUN/race-$1.json" ] || { cat "$OTAC_RUN/save-$1.err" >&2; fail "no saved answer for $1"; }
    done
    post_json /v1/authorizations "$OTAC_RUN/race-TERM0001.json" >"$OTAC_RUN/race-1.ans" &
    p1=$!
    post_json /v1/authorizations "$OTAC_RUN/race-ATM00002.json" "$OTAC_RUN/term2/ATM00002.pem" "$OTAC_RUN/term2/ATM00002.key" \
      >"$OTAC_RUN/race-2.ans" &
    p2=$!
    wait "$p1" "$p2" || true
    r1=$(json_field reason <"$OTAC_RUN/race-1.ans"); r2=$(json_field reason <"$OTAC_RUN/race-2.ans")
    echo "race: TERM0001 $r1, ATM00002 $r2"
    [ "$(printf '%s\n%s\n' "$r1" "$r2" | sort | tr '\n' ' ')" = "cash_limit ok " ] ||
      fail "expected one approval and one cash_limit, got '$r1' and '$r2'"
    ;;
  void-refund)
    term pos --amount 12.00 >"$OTAC_RUN/p1.out" 2>"$OTAC_RUN/p1.err" || fail "purchase 1 declined"
    p1=$(sed -n 2p "$OTAC_RUN/p1.out" | json_field txn_id)
    term pos --amount 8.00 --save-request "$OTAC_RUN/p2.json" >"$OTAC_RUN/p2.out" 2>"$OTAC_RUN/p2.err" || fail "purchase 2 declined"
    p2=$(sed -n 2p "$OTAC_RUN/p2.out" | json_field txn_id)
    expect_backend "$p2" "completed 800"
    term void --txn-id "$p1" >"$OTAC_RUN/v1.out" 2>&1 && fail "an older purchase was voided: $(cat "$OTAC_RUN/v1.out")"
    term void --txn-id "$p2" >"$OTAC_RUN/v2.out" 2>&1 || fail "the last purchase was not voided: $(cat "$OTAC_RUN/v2.out")"
    expect_backend "$p2" "voided 0"
    ans=$(post_json /v1/authorizations "$OTAC_RUN/p2.json")
    [ "$(json_field decision <<<"$ans")" = declined ] && [ "$(json_field reason <<<"$ans")" = voided ] ||
      fail "the voided purchase's retry did not read declined voided: $ans"
    term refund --txn-id "$p1" --amount 5.00 >"$OTAC_RUN/r1.out" 2>&1 || true
    [ "$(grep '^{' "$OTAC_RUN/r1.out" | json_field reason)" = refund_pending ] || fail "refund not pending: $(cat "$OTAC_RUN/r1.out")"
    admin refunds | grep -q "$p1" || fail "otac-admin refunds does not list the pending refund"
    admin refund-approve "$p1" >/dev/null || fail "the operator could not approve the refund"
    admin refund-approve "$p1" >/dev/null 2>&1 && fail "a refund was decided twice"
    term refund --txn-id "$p1" --amount 5.00 >"$OTAC_RUN/r2.out" 2>&1 || fail "the approved refund does not read approved"
    metrics=$(curl -sk --max-time 5 "https://127.0.0.1:$BACKEND_PORT/metrics")
    for m in 'kind="outcome",state="voided"} 1' 'kind="refund",state="approved"} 1' 'kind="outcome",state="completed"}'; do
      grep -qF "$m" <<<"$metrics" || fail "/metrics lacks $m"
    done
    admin audit --limit 1000 | grep -q "refund_approve txn=$p1 amount=500" || fail "the refund approval is not audited"
    admin audit --limit 1000 | grep -q "outcome txn=$p2 outcome=voided" || fail "the void is not audited"
    ;;
  late-answer)
    sed -i 's/^held_wait_limit_s = .*/held_wait_limit_s = 2/' "$TERM_CONF"
    printf 'backend_timeout_ms = 1000\nconnect_timeout_ms = 1000\n' >>"$TERM_CONF"
    # 1. A purchase of 80.00 is held for review (the card's review amount is 50.00). The
    #    backend freezes while the terminal waits: the terminal's own limit (2 s) ends the
    #    wait, its cancel gets no answer, it shows declined and queues a reversal.
    term pos --amount 80.00 --save-request "$OTAC_RUN/held.json" </dev/null >"$OTAC_RUN/p1.out" 2>"$OTAC_RUN/p1.err" &
    term_pid=$!
    wait_grep 'Waiting for operator' "$OTAC_RUN/p1.err" 20
    kill -STOP "$(backend_pid)"
    wait "$term_pid" || true
    kill -CONT "$(backend_pid)"
    LINE=$(sed -n 2p "$OTAC_RUN/p1.out"); read_line
    p1=$TXN
    echo "p1: $DECISION ($REASON) outcome=$OUTCOME delivered=$(json_field outcome_delivered <<<"$LINE")"
    expect declined held_timeout
    grep -q 'DECLINED (held_timeout)' "$OTAC_RUN/p1.err" || fail "the display did not show DECLINED (held_timeout)"
    [ "$OUTCOME" = reversed ] && [ "$(json_field outcome_delivered <<<"$LINE")" = False ] ||
      fail "expected a reversal not yet delivered: $LINE"
    [ -f "$TERM_DIR/outcomes/$p1.json" ] || fail "the reversal of $p1 is not queued on disk"
    # The operator decides after the terminal gave up: the backend still holds it, so it is approved.
    admin approve "$p1" >"$OTAC_RUN/approve.out" 2>&1 || fail "the late approval was refused: $(cat "$OTAC_RUN/approve.out")"
    [ "$(backend_field "$p1" decision)" = approved ] || fail "the backend did not record the late approval of $p1"

    # 2. A withdrawal of 300.00 (the card may take 500.00 a day). This run first delivers the
    #    queued reversal of the purchase, which opens its connection to the backend; the
    #    withdrawal's request then goes over that connection while the backend is frozen, so
    #    the backend has it and decides it once it runs again, after the terminal gave up.
    mkfifo "$OTAC_RUN/pin.fifo"
    exec 7<>"$OTAC_RUN/pin.fifo"
    term atm --amount 300.00 --save-request "$OTAC_RUN/w1.json" <"$OTAC_RUN/pin.fifo" >"$OTAC_RUN/w1.out" 2>"$OTAC_RUN/w1.err" &
    term_pid=$!
    wait_grep 'Enter PIN' "$OTAC_RUN/w1.err" 20
    expect_backend "$p1" "reversed 0"
    before=$(approvals)
    kill -STOP "$(backend_pid)"
    printf '%s\n' "$CARD_PIN" >&7
    wait "$term_pid" || true
    exec 7>&-
    LINE=$(sed -n 2p "$OTAC_RUN/w1.out"); read_line
    w1=$TXN
    echo "w1: $DECISION ($REASON) outcome=$OUTCOME delivered=$(json_field outcome_delivered <<<"$LINE")"
    expect declined backend_unreachable
    [ -z "$DISPENSE" ] || [ "$DISPENSE" = None ] || fail "a declined withdrawal reached the dispenser: $LINE"
    [ "$OUTCOME" = reversed ] && [ "$(json_field outcome_delivered <<<"$LINE")" = False ] ||
      fail "expected a reversal not yet delivered: $LINE"
    [ -f "$TERM_DIR/outcomes/$w1.json" ] || fail "the reversal of $w1 is not queued on disk"
    kill -CONT "$(backend_pid)"
    wait_new_approval "$before"   # the backend approves the request it had, too late
    [ "$(backend_field "$w1" decision)" = approved ] || fail "the backend did not approve $w1 after it was continued"
    expect_backend "$w1" none
    [ "$(dispenser STATUS)" = "OK STATUS ready 2000x20,5000x10" ] || fail "notes left the cassettes: $(dispenser STATUS)"

    # 3. The backend is back: the queued reversal is delivered and applied; a retry of either
    #    transaction id reads declined reversed, never approved.
    term outcomes >"$OTAC_RUN/flush.out" 2>&1 || fail "the queued reversal was not delivered: $(cat "$OTAC_RUN/flush.out")"
    expect_backend "$w1" "reversed 0"
    [ ! -f "$TERM_DIR/outcomes/$w1.json" ] || fail "the delivered reversal is still queued"
    for t in "$w1 w1.json" "$p1 held.json"; do
      set -- $t
      ans=$(post_json /v1/authorizations "$OTAC_RUN/$2")
      echo "retry of $1: $ans"
      [ "$(json_field txn_id <<<"$ans")" = "$1" ] && [ "$(json_field decision <<<"$ans")" = declined ] &&
        [ "$(json_field reason <<<"$ans")" = reversed ] && [ -z "$(json_field auth_code <<<"$ans")" ] ||
        fail "the retry of $1 did not read declined reversed: $ans"
    done
    # The daily cash total gave the 300.00 back: the whole 500.00 passes.
    atm w2 "$CARD_PIN\n" --amount 500.00
    expect approved ok
    [ "$OUTCOME" = completed ] || fail "the 500.00 withdrawal was not completed: $LINE"
    for t in "$p1" "$w1"; do
      admin audit --limit 1000 | grep -q "outcome txn=$t outcome=reversed" || fail "the reversal of $t is not audited"
      admin transaction "$t" | grep -q reversed || fail "otac-admin transaction $t does not show the reversal"
    done
    curl -sk --max-time 5 "https://127.0.0.1:$BACKEND_PORT/metrics" | grep -qF 'kind="outcome",state="reversed"} 2' ||
      fail "/metrics does not count the two reversals"
    ;;
  auto-reverse)
    kill_mid_payout 200.00
    expect_backend "$txn" none
    # The terminal never runs again; the backend reverses the withdrawal on its own.
    for _ in $(seq 1 300); do
      [ "$(backend_outcome "$txn")" = none ] || break
      sleep 0.1
    done
    expect_backend "$txn" "reversed 0"
    # By the backend's own clock: the approval, then the reversal (by "system") at least
    # cash_complete_seconds (10 s) later; its sweep runs once a second.
    took=$(admin --json transaction "$txn" | python3 -c '
import json, sys
t = json.loads(sys.stdin.readline())
o = t["outcome"]
print(o["at"] - t["created_at"] if o["reported_by"] == "system" else "not-system")')
    echo "auto-reversed $took s after the approval"
    [ "$took" != not-system ] || fail "the reversal of $txn is not the backend's own"
    [ "$took" -ge 10 ] && [ "$took" -le 30 ] || fail "reversed $took s after the approval, not after cash_complete_seconds (10 s)"
    admin transaction "$txn" | grep -q reversed || fail "otac-admin transaction does not show the reversal"
    admin audit --limit 1000 | grep -q "auto_reverse txn=$txn" || fail "the automatic reversal is not audited"
    curl -sk --max-time 5 "https://127.0.0.1:$BACKEND_PORT/metrics" | grep -qF 'kind="outcome",state="auto_reversed"} 1' ||
      fail "/metrics does not count the automatic reversal"
    [ -f "$TERM_DIR/outcomes/$txn.json" ] || fail "the killed terminal's queued reversal is gone"
    # Another ATM: the card's daily total gave the 200.00 back, so the whole 500.00 passes.
    quiet admin register-terminal ATM00002 --out "$OTAC_RUN/term2" || fail "cannot register ATM00002"
    atm_conf ATM00002 "$OTAC_RUN/term2" "https://127.0.0.1:$BACKEND_PORT"
    printf '%s\n' "$CARD_PIN" | "$BIN_TERM" --config "$OTAC_RUN/term2/terminal.conf" atm --amount 500.00 \
      >"$OTAC_RUN/w2.out" 2>"$OTAC_RUN/w2.err" || true
    LINE=$(sed -n 2p "$OTAC_RUN/w2.out")
    [ -n "$LINE" ] || { cat "$OTAC_RUN/w2.err" >&2; fail "w2: no JSON line from the terminal"; }
    read_line
    echo "w2 (ATM00002): $DECISION ($REASON) dispense=$DISPENSE outcome=$OUTCOME"
    expect approved ok
    ;;
  *)
    fail "unknown case"
    ;;
esac
echo "PASS ($case_name)"
