#!/usr/bin/env bash
# kannel.sh — run a real Kannel (bearerbox + smsbox) on loopback for tests.
#
#   kannel.sh start DIR MO_URL   start with fresh free ports; MO_URL is the get-url for
#                                mobile-originated messages (Kannel escapes such as %p %P %u %b
#                                may be used; they are appended if MO_URL has no '%').
#   kannel.sh stop DIR           stop both daemons by PID (SIGTERM, then SIGKILL after 5 s)
#   kannel.sh stop-keep DIR      stop but keep DIR/store so a restart resumes the queue
#   kannel.sh restart DIR        start again with the same ports and store (outage tests)
#
# DIR/kannel.env, sourced by tests, sets: KANNEL_SENDSMS_PORT KANNEL_SENDSMS_USER
# KANNEL_SENDSMS_PASS KANNEL_SMSC_PORT (the fake-SMSC port; the virtual phone connects to it
# as the SMSC client) KANNEL_ADMIN_PORT KANNEL_ADMIN_PASS. Logs are DIR/bearerbox.log and
# DIR/smsbox.log. The Debian service is never used: these daemons belong to the test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?usage: kannel.sh start|stop|restart DIR [MO_URL]}
dir=${2:?usage: kannel.sh start|stop|restart DIR [MO_URL]}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

wait_port() {  # wait_port PORT PID: up to 5 s for a listener on 127.0.0.1:PORT
  local i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

listening() {  # listening PORT PID: up to 5 s for a listening socket on PORT, without connecting to it
  local i
  for i in $(seq 1 100); do
    [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

launch() {
  # shellcheck disable=SC1091
  . "$dir/kannel.env"
  setsid /usr/sbin/bearerbox "$dir/kannel.conf" >"$dir/bearerbox.out" 2>&1 </dev/null &
  echo $! >"$dir/bearerbox.pid"
  wait_port "$KANNEL_ADMIN_PORT" "$(cat "$dir/bearerbox.pid")" || {
    echo "kannel.sh: bearerbox did not open port $KANNEL_ADMIN_PORT; see $dir/bearerbox.log" >&2
    tail -5 "$dir/bearerbox.log" >&2 || true; exit 1; }
  # The admin port opens before the port for boxes, and an smsbox that finds no bearerbox
  # there gives up at once ("Couldn't connect to the bearerbox"). A probe connection would be
  # taken for a box, so this looks for the listening socket instead.
  listening "$KANNEL_SMSBOX_PORT" "$(cat "$dir/bearerbox.pid")" || {
    echo "kannel.sh: bearerbox did not listen for boxes on port $KANNEL_SMSBOX_PORT; see $dir/bearerbox.log" >&2
    tail -5 "$dir/bearerbox.log" >&2 || true; exit 1; }
  setsid /usr/sbin/smsbox "$dir/kannel.conf" >"$dir/smsbox.out" 2>&1 </dev/null &
  echo $! >"$dir/smsbox.pid"
  wait_port "$KANNEL_SENDSMS_PORT" "$(cat "$dir/smsbox.pid")" || {
    echo "kannel.sh: smsbox did not open port $KANNEL_SENDSMS_PORT; see $dir/smsbox.log" >&2
    tail -5 "$dir/smsbox.log" >&2 || true; exit 1; }
}

stop_pid() {
  local f=$1 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

case "$cmd" in
  start)
    mo_url=${3:?usage: kannel.sh start DIR MO_URL}
    case "$mo_url" in *%*) ;; *)
      sep='?'; case "$mo_url" in *\?*) sep='&' ;; esac
      mo_url="${mo_url}${sep}from=%p&to=%P&udh=%u&data=%b&coding=%c&pid=%i&dcs=%O&ts=%t" ;;
    esac
    mapfile -t ports < <("$here/freeport.sh" 4)
    admin=${ports[0]} smsbox=${ports[1]} smsc=${ports[2]} sendsms=${ports[3]}
    pass=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    rm -rf "$dir/store"; mkdir -p "$dir/store"
    cat >"$dir/kannel.env" <<ENV
KANNEL_ADMIN_PORT=$admin
KANNEL_ADMIN_PASS=$pass
KANNEL_SMSBOX_PORT=$smsbox
KANNEL_SMSC_PORT=$smsc
KANNEL_SENDSMS_PORT=$sendsms
KANNEL_SENDSMS_USER=otac
KANNEL_SENDSMS_PASS=$pass
ENV
    cat >"$dir/kannel.conf" <<CONF
group = core
admin-port = $admin
admin-interface = 127.0.0.1
admin-password = $pass
admin-allow-ip = 127.0.0.1
smsbox-port = $smsbox
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "$dir/bearerbox.log"
log-level = 0
store-type = file
store-location = "$dir/store/kannel.store"
sms-combine-concatenated-mo = true

group = smsc
smsc = fake
smsc-id = fake
host = 127.0.0.1
port = $smsc
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = $smsbox
sendsms-port = $sendsms
sendsms-interface = 127.0.0.1
log-file = "$dir/smsbox.log"
log-level = 0
mo-recode = false
# An MO or delivery report whose fetch fails (the backend restarting, or killed mid-request)
# is fetched again each second, up to 60 times, instead of dropped: a card's PoR lost that
# way left a key rotation pending (docs/operations.md, Kannel).
http-request-retry = 60
http-queue-delay = 1

group = sendsms-user
username = otac
password = $pass
user-allow-ip = 127.0.0.1
# The backend splits packets itself (TS 23.040 concatenation with the OTA IEI); Kannel must
# send each part as given. Note max-messages = 0 here would silently drop every message.
max-messages = 1
concatenation = false

group = sms-service
keyword = default
catch-all = true
max-messages = 0
accept-x-kannel-headers = false
get-url = "$mo_url"
CONF
    launch
    ;;
  restart) launch ;;
  stop)
    stop_pid "$dir/smsbox.pid"; stop_pid "$dir/bearerbox.pid" ;;
  stop-keep)
    stop_pid "$dir/smsbox.pid"; stop_pid "$dir/bearerbox.pid" ;;
  *) echo "kannel.sh: unknown command $cmd" >&2; exit 2 ;;
esac
