#!/usr/bin/env bash
# End-to-end test of asymmetric mode with the real programs: the card generates its key pair
# (otac-card keygen), is enrolled with its public key (otac-admin enroll --public-key), and
# its lists arrive by SMS as E5 (encrypted to the card's key, signed by the server key that
# an E4 installed first, under the card CA the letter names). A purchase is approved with a
# code of the first list, the threshold push brings a second E5 list, and a code of it is
# approved too.
#
#   asymmetric.sh BUILD_DIR RUN_DIR rsa|p256
set -euo pipefail
OTAC_BUILD=$(cd "${1:?usage: asymmetric.sh BUILD_DIR RUN_DIR rsa|p256}" && pwd)
OTAC_RUN=${2:?usage: asymmetric.sh BUILD_DIR RUN_DIR rsa|p256}
E2E_CARD_KEYPAIR=${3:?usage: asymmetric.sh BUILD_DIR RUN_DIR rsa|p256}
export OTAC_BUILD OTAC_RUN E2E_CARD_KEYPAIR
rm -rf "$OTAC_RUN"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

fail() { echo "FAIL: $*" >&2; echo "logs: $OTAC_RUN" >&2; exit 1; }

stack_up 6 3 || fail "the system did not come up with a $E2E_CARD_KEYPAIR card"
grep -q '^Card CA key: *04' "$OTAC_RUN/letter.txt" || fail "the letter names no card CA key"
pub=$(cat "$OTAC_RUN/card.pub")
case "$E2E_CARD_KEYPAIR" in
  rsa) [ ${#pub} -gt 500 ] || fail "the RSA public key is only ${#pub} hex digits" ;;
  p256) [ ${#pub} -eq 182 ] || fail "a P-256 SubjectPublicKeyInfo is 91 bytes, got $((${#pub} / 2))" ;;
esac
admin --json card "$CARD_N" >"$OTAC_RUN/card.json" || fail "otac-admin card failed"
python3 - "$OTAC_RUN/card.json" "$pub" <<'PY' || fail "the backend's card view does not show the asymmetric enrollment"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["asymmetric"] is True, c
assert c["server_key_confirmed"] is True, c  # the card's PoR of the E4 (or E5) packet
PY
echo "ok: $E2E_CARD_KEYPAIR card $CARD_N enrolled with its public key; first list arrived ($(card_codes) codes)"

tap() {
  term pos --amount "$1" >"$OTAC_RUN/tap.out" 2>"$OTAC_RUN/tap.err" || true
  sed -n 2p "$OTAC_RUN/tap.out" | json_field decision
}
d=$(tap 12.50)
[ "$d" = approved ] || { cat "$OTAC_RUN/tap.err" >&2; fail "purchase with a code of the E5 list: $d"; }
echo "ok: purchase approved with a code of the first E5 list"

# Two more purchases bring the backend's count of unused codes to its threshold (3 of 6): it
# pushes the next list as E5 on its own initiative.
for amount in 13.00 14.00; do
  d=$(tap "$amount")
  [ "$d" = approved ] || { cat "$OTAC_RUN/tap.err" >&2; fail "purchase of $amount: $d"; }
done
wait_card_codes 9 30 || fail "the second E5 list did not arrive"
lists=$(card status | sed -n 's/^lists held: *//p')
[ "$lists" = 2 ] || fail "the card holds $lists lists, expected 2"
echo "ok: the threshold push delivered a second E5 list ($(card_codes) codes)"
# The first list's last three codes go to the display mode; the next purchase can only use
# the second list.
for _ in 1 2 3; do card code <<<"$CARD_PIN" >/dev/null 2>&1 || fail "otac-card code failed"; done
d=$(tap 20.00)
[ "$d" = approved ] || { cat "$OTAC_RUN/tap.err" >&2; fail "purchase with a code of the second list: $d"; }
active=$(card status | sed -n 's/^active list: *//p')
[ "$active" = 2 ] || fail "the card's active list is $active after the first list ran out, expected 2"
echo "ok: purchase approved with a code of the second E5 list"
