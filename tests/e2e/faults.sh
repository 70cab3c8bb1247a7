#!/usr/bin/env bash
# End-to-end fault scenarios: the whole system up (lib.sh), one fault, and the outcome checked
# from the terminal's JSON line, the backend's answer and the card's own status.
#
#   faults.sh BUILD_DIR RUN_DIR CASE
#
# CASE is one of:
#   card-removed   the card leaves the field after SELECT: declined card_removed, nothing
#                  reaches the backend, and the next tap is approved
#   card-removed-after-answer
#                  the card leaves after answering AUTHENTICATE: the backend decides (the code
#                  was burned on the card), the terminal records card_confirmed false
#   reader-timeout the reader's answers come later than the terminal's APDU limit: declined
#                  card_timeout; the next tap after the fault is cleared is approved
#   backend-down   the backend is stopped: declined backend_unreachable after the configured
#                  attempts; restarted on the same port, the next tap is approved
#   wrong-cert     a client certificate from another CA (same CN): the TLS handshake is
#                  refused and the terminal declines; curl with it is refused too
#   tampered       a genuine card answer the backend has not seen yet, altered on its way
#                  (amount, cryptogram, index, currency, PIN state): each declined bad_cryptogram or
#                  refused; five of them block the card (its fail limit); the untouched answer
#                  is then declined card_blocked and its code consumed by it (no tampered answer
#                  had used it), so after the unblock it is code_used; the next code approves
set -euo pipefail
OTAC_BUILD=$(cd "${1:?usage: faults.sh BUILD_DIR RUN_DIR CASE}" && pwd)
OTAC_RUN=${2:?usage: faults.sh BUILD_DIR RUN_DIR CASE}
case_name=${3:?usage: faults.sh BUILD_DIR RUN_DIR CASE}
export OTAC_BUILD OTAC_RUN
rm -rf "$OTAC_RUN"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

fail() { echo "FAIL ($case_name): $*" >&2; echo "logs: $OTAC_RUN" >&2; exit 1; }
# tap NAME ARGS...: one transaction; sets DECISION REASON and LINE (the JSON line).
tap() {
  local name=$1; shift
  term "$@" >"$OTAC_RUN/$name.out" 2>"$OTAC_RUN/$name.err" || true
  LINE=$(sed -n 2p "$OTAC_RUN/$name.out")
  [ -n "$LINE" ] || { cat "$OTAC_RUN/$name.err" >&2; fail "$name: no JSON line from the terminal"; }
  DECISION=$(json_field decision <<<"$LINE")
  REASON=$(json_field reason <<<"$LINE")
  echo "$name: $DECISION ($REASON)"
}
expect() {
  [ "$DECISION" = "$1" ] || fail "expected $1, got $DECISION ($REASON)"
  [ -z "${2:-}" ] || [ "$REASON" = "$2" ] || fail "expected reason $2, got $REASON"
}
# How many authorizations the backend has on record for the card.
backend_txns() { admin --json transactions --card "$CARD_N" --limit 1000 | python3 -c '
import json, sys
d = json.loads(sys.stdin.readline())
items = d.get("transactions", d if isinstance(d, list) else [])
print(len(items))'; }

stack_up 20 3
echo "system up: backend :$BACKEND_PORT, card $CARD_N with $(card_codes) codes"

case "$case_name" in
  card-removed)
    emu_ctl remove-after 1 >/dev/null
    before=$(backend_txns)
    tap removed pos --amount 3.00
    expect declined card_removed
    [ "$(backend_txns)" = "$before" ] || fail "a transaction reached the backend without a card answer"
    emu_ctl clear >/dev/null
    tap after pos --amount 3.00
    expect approved
    ;;
  card-removed-after-answer)
    emu_ctl remove-after 2 >/dev/null
    codes=$(card_codes)
    tap removed pos --amount 3.00
    expect approved
    grep -q '"card_confirmed":false' <<<"$LINE" || fail "the card could not confirm, yet card_confirmed is not false"
    [ "$(card_codes)" = $((codes - 1)) ] || fail "the card did not burn exactly one code"
    emu_ctl clear >/dev/null
    tap after pos --amount 3.00
    expect approved
    ;;
  reader-timeout)
    emu_ctl delay 2500 >/dev/null   # the config's apdu_timeout_ms is 1000
    tap slow pos --amount 3.00
    expect declined
    case "$REASON" in card_timeout|card_removed|reader_error) ;; *) fail "reason $REASON for a reader timeout" ;; esac
    emu_ctl clear >/dev/null
    sleep 3   # the late answer drains
    tap after pos --amount 3.00
    expect approved
    ;;
  backend-down)
    proc_stop backend
    codes=$(card_codes)
    tap down pos --amount 3.00
    expect declined backend_unreachable
    grep -q '"backend_attempts":3' <<<"$LINE" || fail "expected 3 attempts with the same transaction id: $LINE"
    [ "$(card_codes)" = $((codes - 1)) ] || fail "the card's answer should have burned one code"
    proc_start backend "$BIN_BACKEND" --data-dir "$BACKEND_DIR" --listen "127.0.0.1:$BACKEND_PORT"
    for _ in $(seq 1 100); do curl -sk --max-time 1 "https://127.0.0.1:$BACKEND_PORT/healthz" >/dev/null && break; sleep 0.1; done
    tap after pos --amount 3.00
    expect approved
    ;;
  wrong-cert)
    d=$OTAC_RUN/rogue
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=$TERMINAL_ID" \
      -keyout "$d/$TERMINAL_ID.key" -out "$d/$TERMINAL_ID.pem" 2>/dev/null
    cp "$TERM_DIR/ca.pem" "$d/ca.pem"
    sed "s|^cert_file = .*|cert_file = \"$d/$TERMINAL_ID.pem\"|; s|^key_file = .*|key_file = \"$d/$TERMINAL_ID.key\"|" \
      "$TERM_CONF" >"$d/terminal.conf"
    TERM_CONF=$d/terminal.conf
    tap rogue pos --amount 3.00
    expect declined backend_error
    grep -q '"backend_attempts":1' <<<"$LINE" || fail "a refused certificate must not be retried: $LINE"
    before=$(backend_txns)
    printf '{"txn_id":"rogue-1"}' >"$d/body.json"
    if post_json /v1/authorizations "$d/body.json" "$d/$TERMINAL_ID.pem" "$d/$TERMINAL_ID.key" >/dev/null 2>&1; then
      fail "the backend answered a client with a certificate it did not issue"
    fi
    [ "$(backend_txns)" = "$before" ] || fail "a transaction was recorded for a rogue client"
    grep -q 'tls_handshake_failed' "$OTAC_RUN/backend.log" || fail "the backend did not log the refused handshake"
    ;;
  tampered)
    # A genuine answer that never reached the backend: the terminal is pointed at a closed port
    # (so it declines), and --save-request keeps the body it tried to send.
    dead=$("$E2E_SUPPORT/freeport.sh" 1)
    sed "s|^backend_url = .*|backend_url = \"https://127.0.0.1:$dead\"|; s|^backend_attempts = .*||" "$TERM_CONF" \
      >"$OTAC_RUN/offline.conf"
    cp "$TERM_DIR"/*.pem "$TERM_DIR"/*.key "$OTAC_RUN/"
    TERM_CONF_SAVED=$TERM_CONF
    TERM_CONF=$OTAC_RUN/offline.conf
    tap offline pos --amount 5.00 --save-request "$OTAC_RUN/genuine.json"
    expect declined backend_unreachable
    TERM_CONF=$TERM_CONF_SAVED
    # alter FIELD PYTHON-EXPR: write a copy of the genuine body with one change and a new txn id.
    alter() {
      python3 - "$OTAC_RUN/genuine.json" "$OTAC_RUN/$1.json" "$1" "$2" <<'PY'
import json, sys
src, dst, name, expr = sys.argv[1:]
b = json.load(open(src))
b["txn_id"] = "tamper-" + name
ch = b["challenge"]
if expr == "amount":        # 9F02 06: the amount (n12, BCD) 5.00 -> 500.00
    i = ch.index("9f0206") + 6
    b["challenge"] = ch[:i] + "000000050000" + ch[i + 12:]
elif expr == "cryptogram":  # one bit of the MAC
    c = bytearray.fromhex(b["cryptogram"]); c[7] ^= 0x01; b["cryptogram"] = c.hex()
elif expr == "index":       # another code of the same list
    b["index"] = b["index"] + 1
elif expr == "pin_state":   # DF35: claim the PIN was verified
    b["pin_state"] = b["pin_state"] ^ 0x10
elif expr == "currency":    # 5F2A 02: EUR (0978) -> USD (0840)
    i = ch.index("5f2a02") + 6
    b["challenge"] = ch[:i] + "0840" + ch[i + 4:]
json.dump(b, open(dst, "w"), separators=(",", ":"))
PY
    }
    for t in amount cryptogram index currency pin_state; do
      alter "$t" "$t"
      ans=$(post_json /v1/authorizations "$OTAC_RUN/$t.json") || fail "no answer for the $t tampering"
      echo "tampered $t: $ans"
      [ "$(json_field decision <<<"$ans")" = declined ] || fail "tampered $t was not declined: $ans"
      [ "$(json_field reason <<<"$ans")" = bad_cryptogram ] || fail "tampered $t: reason is not bad_cryptogram: $ans"
    done
    for g in 0 1; do
      sed 's/"txn_id":"[^"]*"/"txn_id":"genuine-'$g'"/' "$OTAC_RUN/genuine.json" >"$OTAC_RUN/genuine-$g.json"
    done
    # Five bad cryptograms are the card's fail limit: it is blocked now, and its genuine answer
    # is declined until an operator unblocks it. That answer's code is consumed all the same
    # (the card spent it, protocol.md 3.2): the code's row names the genuine answer, so none of
    # the tampered answers had used it.
    ans=$(post_json /v1/authorizations "$OTAC_RUN/genuine-0.json")
    echo "genuine while blocked: $ans"
    [ "$(json_field reason <<<"$ans")" = card_blocked ] || fail "five tampered answers did not block the card: $ans"
    read -r list index < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["list"], d["index"])' \
                             "$OTAC_RUN/genuine.json")
    used_by=$(sqlite3 "$BACKEND_DIR/otac.db" "SELECT txn_id FROM otacs WHERE n=X'$CARD_N' AND list_id=$list AND idx=$index")
    [ "$used_by" = genuine-0 ] || fail "code $list/$index was consumed by '${used_by:-nothing}', not by the genuine answer"
    quiet admin unblock "$CARD_N"
    ans=$(post_json /v1/authorizations "$OTAC_RUN/genuine-1.json")
    echo "genuine again: $ans"
    [ "$(json_field reason <<<"$ans")" = code_used ] || fail "the answer spent while blocked was accepted again: $ans"
    # The tampered index named the card's next code: it must not have been consumed.
    tap next pos --amount 1.00
    expect approved
    ;;
  *) fail "unknown case (see the header of $0)" ;;
esac
echo "PASS ($case_name)"
