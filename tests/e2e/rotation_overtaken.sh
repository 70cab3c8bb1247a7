#!/usr/bin/env bash
# End-to-end test of a key rotation across a gateway outage, the shortest sequence of the
# soak's finding e2_overtaken (operations.md, "Through the real daemons"):
#
#   rotation_overtaken.sh BUILD_DIR RUN_DIR
#
# Kannel is stopped; `otac-admin rotate-key` queues an E2, whose sends fail and wait for a
# retry; Kannel is started again and at once `otac-card refresh` asks for a list, which goes
# out with a higher counter before the E2's retry. The card loads the list and then refuses
# the E2 for its counter (RSC 02). The rotation must still complete: within 30 s the backend
# no longer has a rotation pending and card and backend are on key version 2.
set -euo pipefail
usage="usage: rotation_overtaken.sh BUILD_DIR RUN_DIR"
OTAC_BUILD=$(cd "${1:?$usage}" && pwd)
OTAC_RUN=${2:?$usage}
export OTAC_BUILD OTAC_RUN
rm -rf "$OTAC_RUN"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

fail() { echo "FAIL: $*" >&2; echo "logs: $OTAC_RUN" >&2; exit 1; }
backend_keys() {
  admin --json card "$CARD_N" | python3 -c '
import json, sys
c = json.load(sys.stdin)
print(c["key_version"], "pending" if c["key_rotation_pending"] else "settled")'
}
card_key_version() { card status | sed -n 's/^key version: *//p'; }

stack_up 10 3 2 || fail "the system did not come up"
bash "$E2E_SUPPORT/kannel.sh" stop-keep "$OTAC_RUN/kannel" || fail "Kannel did not stop"
quiet admin rotate-key "$CARD_N" || fail "otac-admin rotate-key failed"
sleep 3  # the E2's first sends fail; it waits for its retry (1 to 2 s)
bash "$E2E_SUPPORT/kannel.sh" restart "$OTAC_RUN/kannel" >/dev/null || fail "Kannel did not start again"
quiet card refresh <<<"$CARD_PIN" || fail "otac-card refresh failed"

for _ in $(seq 1 60); do
  [ "$(backend_keys)" = "2 settled" ] && [ "$(card_key_version)" = 2 ] && break
  sleep 0.5
done
admin audit --limit 1000 | grep -E ' (rotate_key|por) ' | cut -d' ' -f3- | sed 's/^/  /'
[ "$(backend_keys)" = "2 settled" ] || fail "after 30 s the backend's key version and rotation: $(backend_keys)"
[ "$(card_key_version)" = 2 ] || fail "after 30 s the card is on key version $(card_key_version)"
echo "OK: the rotation completed across the outage (key version 2 on both sides)"
