#!/usr/bin/env bash
# End-to-end test of SMS the gateway delivered and the phone never handed to the card, the
# window that the soak's card daemon kill opens (operations.md, "Through the real daemons"):
#
#   lost_sms.sh BUILD_DIR RUN_DIR rotate|list|server-key
#
# The card daemon (otac-card run, the card and the phone) is frozen with SIGSTOP; the backend
# sends it an E2 (rotate: otac-admin rotate-key) or a list (list: otac-admin refresh); once
# Kannel has written the SMS into the daemon's socket (its receive queue in /proc/net/tcp),
# the daemon is killed with kill -9 and started again on the same state file. Kannel's fake
# SMSC has no acknowledgement, so it counts them delivered: they are lost. The backend must
# send them again once list_repair_seconds (here 60, the least the backend takes) have passed without a PoR:
#   rotate: within 100 s no rotation is pending and card and backend are on key version 2;
#   list:   within 100 s list 2 is loaded on both sides;
#   server-key (otac-admin install-server-key, an E4): within 100 s the backend shows the
#          server key confirmed.
set -euo pipefail
usage="usage: lost_sms.sh BUILD_DIR RUN_DIR rotate|list|server-key"
OTAC_BUILD=$(cd "${1:?$usage}" && pwd)
OTAC_RUN=${2:?$usage}
what=${3:?$usage}
case "$what" in rotate|list|server-key) ;; *) echo "$usage" >&2; exit 2 ;; esac
export OTAC_BUILD OTAC_RUN
rm -rf "$OTAC_RUN"
E2E_BACKEND_CONF='list_repair_seconds = 60'
export E2E_BACKEND_CONF
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

fail() { echo "FAIL ($what): $*" >&2; echo "logs: $OTAC_RUN" >&2; exit 1; }
backend_state() {
  admin --json card "$CARD_N" | python3 -c '
import json, sys
c = json.load(sys.stdin)
lists = {l["id"]: l["state"] for l in c["lists"]}
print(c["key_version"], "pending" if c["key_rotation_pending"] else "settled", "list2=" + lists.get(2, "none"),
      "e4=" + ("confirmed" if c["server_key_confirmed"] else "unconfirmed"))'
}
card_field() { card status | sed -n "s/^$1: *//p"; }
# Bytes received and not yet read on the TCP sockets of process $1.
unread_bytes() {
  python3 - "$1" <<'PY'
import os, sys
pid = sys.argv[1]
inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
          if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
n = 0
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).readlines()[1:]:
        cols = line.split()
        if cols[9] in inodes:
            n += int(cols[4].split(":")[1], 16)
print(n)
PY
}

stack_up 10 3 2 || fail "the system did not come up"
pid=$(cat "$OTAC_RUN/pids/card")
mapfile -d '' -t argv <"/proc/$pid/cmdline"
kill -STOP "$pid"
if [ "$what" = rotate ]; then
  quiet admin rotate-key "$CARD_N" || { kill -CONT "$pid"; fail "otac-admin rotate-key failed"; }
elif [ "$what" = server-key ]; then
  quiet admin install-server-key "$CARD_N" || { kill -CONT "$pid"; fail "otac-admin install-server-key failed"; }
else
  quiet admin refresh "$CARD_N" || { kill -CONT "$pid"; fail "otac-admin refresh failed"; }
fi
for _ in $(seq 1 200); do  # 20 s
  [ "$(unread_bytes "$pid")" -gt 0 ] && break
  sleep 0.1
done
[ "$(unread_bytes "$pid")" -gt 0 ] || { kill -CONT "$pid"; fail "Kannel wrote nothing to the card daemon within 20 s"; }
sleep 0.3  # the rest of a list
echo "killing the card daemon with $(unread_bytes "$pid") bytes from the gateway unread"
kill -KILL "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
mt_before=$(grep -c 'sms: MT from' "$OTAC_RUN/card.log" || true)
setsid "${argv[@]}" >>"$OTAC_RUN/card.log" 2>&1 </dev/null &
echo $! >"$OTAC_RUN/pids/card"

want_backend="1 settled list2=loaded e4=unconfirmed" want_card_key=1
[ "$what" = rotate ] && want_backend="2 settled list2=none e4=unconfirmed" want_card_key=2
[ "$what" = server-key ] && want_backend="1 settled list2=none e4=confirmed"
for _ in $(seq 1 200); do
  [ "$(backend_state)" = "$want_backend" ] && [ "$(card_field 'key version')" = "$want_card_key" ] && break
  sleep 0.5
done
admin audit --limit 1000 | grep -E ' (rotate_key|rotate_key_resent|install_server_key|server_key_resent|issue_list|list_resent|por) ' | cut -d' ' -f3- | sed 's/^/  /'
[ "$(grep -c 'sms: MT from' "$OTAC_RUN/card.log")" -gt "$mt_before" ] || fail "nothing reached the card again"
[ "$(backend_state)" = "$want_backend" ] || fail "after 100 s the backend shows: $(backend_state) (want: $want_backend)"
[ "$(card_field 'key version')" = "$want_card_key" ] || fail "after 100 s the card is on key version $(card_field 'key version')"
if [ "$what" = list ]; then
  [ "$(card_field 'lists held')" = 2 ] || fail "the card holds $(card_field 'lists held') lists, expected 2"
fi
echo "OK ($what): what the killed daemon lost was sent again and loaded"
