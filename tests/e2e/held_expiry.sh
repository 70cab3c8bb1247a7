#!/usr/bin/env bash
# End-to-end test of held transactions that expire, through the real programs: a purchase is
# held for review, no operator decides in time, the terminal shows DECLINED (held_timeout),
# and afterwards `otac-admin approve` is refused while the backend's record says what the
# terminal printed (declined, held_timeout, no authorization code).
#
#   held_expiry.sh BUILD_DIR RUN_DIR CASE
#
#   terminal-limit    the terminal's own limit (2 s) ends the wait; it cancels at the backend
#   backend-deadline  the backend's hold limit (4 s) ends the wait; the terminal learns it
#                     from the held answer's time left
#   cancel-lost       the backend is frozen (SIGSTOP) while the terminal gives up, so the
#                     cancel never arrives; the backend expires the transaction at its deadline
set -euo pipefail
OTAC_BUILD=$(cd "${1:?usage: held_expiry.sh BUILD_DIR RUN_DIR CASE}" && pwd)
OTAC_RUN=${2:?usage: held_expiry.sh BUILD_DIR RUN_DIR CASE}
CASE=${3:?usage: held_expiry.sh BUILD_DIR RUN_DIR CASE}
export OTAC_BUILD OTAC_RUN
rm -rf "$OTAC_RUN"
case "$CASE" in
  terminal-limit) E2E_BACKEND_CONF="hold_limit_seconds = 60"; term_limit=2 ;;
  backend-deadline) E2E_BACKEND_CONF="hold_limit_seconds = 4"; term_limit=20 ;;
  cancel-lost) E2E_BACKEND_CONF="hold_limit_seconds = 8"; term_limit=2 ;;
  *) echo "unknown case $CASE" >&2; exit 2 ;;
esac
export E2E_BACKEND_CONF
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

fail() { echo "FAIL ($CASE): $*" >&2; echo "logs: $OTAC_RUN" >&2; exit 1; }

stack_up 10 3 || fail "the system did not come up"
sed -i "s/^held_wait_limit_s = .*/held_wait_limit_s = $term_limit/" "$TERM_CONF"
printf 'backend_timeout_ms = 1000\n' >>"$TERM_CONF"

# The card's review amount is 50.00 (stack_up enrolls it with --review 5000): 80.00 is held.
txn=HELD-EXPIRY-$$
start=$(date +%s)
rc=0
if [ "$CASE" = cancel-lost ]; then
  term pos --amount 80.00 --txn-id "$txn" >"$OTAC_RUN/tap.out" 2>"$OTAC_RUN/tap.err" &
  tap_pid=$!
  # Freeze the backend once the terminal waits for an operator: its polls and its cancel
  # get no answer.
  for _ in $(seq 1 100); do
    grep -q 'Waiting for operator' "$OTAC_RUN/tap.err" 2>/dev/null && break
    sleep 0.1
  done
  grep -q 'Waiting for operator' "$OTAC_RUN/tap.err" || fail "the purchase was not held"
  kill -STOP "$(cat "$OTAC_RUN/pids/backend")"
  wait $tap_pid || rc=$?
  kill -CONT "$(cat "$OTAC_RUN/pids/backend")"
else
  term pos --amount 80.00 --txn-id "$txn" >"$OTAC_RUN/tap.out" 2>"$OTAC_RUN/tap.err" || rc=$?
fi
took=$(($(date +%s) - start))
grep -h '^\[display\]' "$OTAC_RUN/tap.err" | sed 's/^/  /' || true
[ "$rc" = 1 ] || fail "the terminal exited $rc, not 1 (declined)"
decision=$(sed -n 2p "$OTAC_RUN/tap.out" | json_field decision)
reason=$(sed -n 2p "$OTAC_RUN/tap.out" | json_field reason)
[ "$decision/$reason" = declined/held_timeout ] || fail "the terminal printed $decision/$reason"
grep -q 'DECLINED (held_timeout)' "$OTAC_RUN/tap.err" || fail "the display did not show DECLINED (held_timeout)"
[ "$CASE" != backend-deadline ] || [ "$took" -lt 12 ] || fail "the terminal waited ${took}s with a 4 s backend deadline"

if [ "$CASE" = cancel-lost ]; then
  # The cancel was lost: wait for the backend's deadline (8 s after it held the transaction).
  sleep 8
fi

# The operator comes too late: refused with a clear message and exit status 1.
orc=0
admin approve "$txn" >"$OTAC_RUN/approve.out" 2>&1 || orc=$?
echo "  operator: $(head -1 "$OTAC_RUN/approve.out")"
[ "$orc" = 1 ] || fail "otac-admin approve exited $orc: $(cat "$OTAC_RUN/approve.out")"
grep -q 'HTTP 409' "$OTAC_RUN/approve.out" || fail "approve was not refused with 409"
grep -q 'expired' "$OTAC_RUN/approve.out" || fail "the refusal does not say that the transaction expired"

# The backend's record says what the terminal printed.
admin --json transactions --terminal "$TERMINAL_ID" >"$OTAC_RUN/txns.json" || fail "otac-admin transactions failed"
/usr/bin/python3 - "$OTAC_RUN/txns.json" "$txn" "$CASE" "$TERMINAL_ID" <<'PY' || fail "the backend's record does not match the terminal"
import json, sys
doc = json.load(open(sys.argv[1]))
rows = doc if isinstance(doc, list) else doc.get("transactions", [])
t = [r for r in rows if r["txn_id"] == sys.argv[2]]
assert len(t) == 1, "transaction not listed: %r" % rows
t = t[0]
assert t["decision"] == "declined" and t["reason"] == "held_timeout", t
assert "auth_code" not in t, t
# Who ended it: the terminal's cancel (its own limit; or the backend's deadline, counted
# conservatively, so it may cancel a moment early), or the backend's expiry (cancel lost).
want = {"terminal-limit": [sys.argv[4]], "backend-deadline": [sys.argv[4], "system"], "cancel-lost": ["system"]}[sys.argv[3]]
assert t.get("decided_by") in want, (t, want)
assert t["decided_at"] <= t["expires_at"], t
print("  backend: %s %s/%s, decided by %s" % (t["txn_id"], t["decision"], t["reason"], t["decided_by"]))
PY
admin audit --verify >/dev/null || fail "the audit chain does not verify"
echo "OK ($CASE)"
