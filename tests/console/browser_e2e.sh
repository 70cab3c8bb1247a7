#!/usr/bin/env bash
# The operator console's browser test against the whole system on loopback.
#
#   browser_e2e.sh BUILD_DIR OUT_DIR
#
# Brings the real system up with tests/e2e/lib.sh (Kannel, otac-backend, a card enrolled and
# activated whose first list arrives by SMS, the PN532 emulator with the card in its field, a
# registered terminal), creates an operator and a viewer with otac-admin, and runs
# browser_test.py (headless Chromium) against it; that test drives the real otac-terminal.
# Screenshots go to OUT_DIR/screenshots, logs of every process to OUT_DIR/run. Every process
# started is stopped by PID on exit (lib.sh's EXIT trap).
#
# Exit 0 pass, 1 fail, 77 skip (Chromium or chromedriver not installed: Debian packages
# chromium, chromium-driver).
set -euo pipefail
usage="usage: browser_e2e.sh BUILD_DIR OUT_DIR"
OTAC_BUILD=$(cd "${1:?$usage}" && pwd)
out=${2:?$usage}
here=$(cd "$(dirname "$0")" && pwd)

# Skip before starting anything when the browser is not there.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "SKIP: /usr/bin/chromium or /usr/bin/chromedriver missing (Debian packages chromium, chromium-driver)"
  exit 77
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
OTAC_RUN=$out/run
rm -rf "$OTAC_RUN" "$out/screenshots"
export OTAC_BUILD OTAC_RUN
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
source "$here/../e2e/lib.sh"

fail() { echo "FAIL (console browser e2e): $*" >&2; echo "logs: $OTAC_RUN" >&2; exit 1; }

# 20 codes per list: the test taps the card six times, so no new list is needed during the
# run (the backend would push one by SMS at 3 left).
stack_up 20 3 || fail "the system did not come up"
echo "system up: backend https://127.0.0.1:$BACKEND_PORT, card $CARD_N with $(card_codes) codes"

# new_operator NAME ROLE FILE: create an operator with otac-admin, its token into FILE (0600).
new_operator() {
  local answer
  answer=$(admin --json create-operator "$1" --role "$2") || fail "otac-admin create-operator $1 --role $2"
  (umask 077; json_field token <<<"$answer" >"$3")
  if [ ! -s "$3" ] || [ "$(wc -c <"$3")" -le 16 ]; then fail "no token in the answer to create-operator $1"; fi
}
new_operator olga operator "$OTAC_RUN/operator.token"
new_operator vera viewer "$OTAC_RUN/viewer.token"

# The test's terminal config: lib.sh's, with more time for an operator to decide in the
# browser on a loaded machine (relative paths stay valid: same directory).
conf=$TERM_DIR/terminal-console.conf
sed 's/^held_wait_limit_s = .*/held_wait_limit_s = 90/' "$TERM_CONF" >"$conf"
grep -q '^held_wait_limit_s = 90$' "$conf" || fail "could not set held_wait_limit_s in $conf"

rc=0
python3 "$here/browser_test.py" \
  --url "https://127.0.0.1:$BACKEND_PORT" --ca "$BACKEND_DIR/ca.pem" \
  --admin-token-file "$BACKEND_DIR/admin.token" \
  --operator-token-file "$OTAC_RUN/operator.token" --viewer-token-file "$OTAC_RUN/viewer.token" \
  --terminal "$BIN_TERM" --terminal-config "$conf" --card "$CARD_N" \
  --kannel-dir "$OTAC_RUN/kannel" --out "$out/screenshots" --logs "$OTAC_RUN" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
  echo "---- backend log (tail) ----" >&2
  tail -30 "$OTAC_RUN/backend.log" >&2 || true
  echo "---- card log (tail) ----" >&2
  tail -10 "$OTAC_RUN/card.log" >&2 || true
  echo "logs: $OTAC_RUN" >&2
fi
exit "$rc"
