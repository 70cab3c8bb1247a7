#!/usr/bin/env bash
# pcscd.sh — run pcscd in the foreground with one vpcd virtual reader, for tests.
#
#   pcscd.sh start DIR   start pcscd with a vpcd reader on a free loopback port; writes
#                        DIR/pcscd.env with VPCD_PORT. Fails if another pcscd is running
#                        (its client socket /run/pcscd/pcscd.comm is machine-wide).
#   pcscd.sh stop DIR    stop it by PID (SIGTERM, SIGKILL after 5 s)
#
# Only one pcscd can run per machine: callers hold `flock /tmp/otac-pcscd.lock` around
# start..stop, and CTest tests that use it set RESOURCE_LOCK pcscd.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?usage: pcscd.sh start|stop DIR}
dir=${2:?usage: pcscd.sh start|stop DIR}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

case "$cmd" in
  start)
    if pgrep -x pcscd >/dev/null; then
      echo "pcscd.sh: a pcscd is already running (pid $(pgrep -x pcscd | head -1)); stop it first" >&2
      exit 1
    fi
    port=$("$here/freeport.sh" 1)
    mkdir -p "$dir/reader.conf.d"
    # vpcd's DEVICENAME is "/dev/null:PORT"; the card side (vicc) connects to that port.
    cat >"$dir/reader.conf.d/vpcd" <<CONF
FRIENDLYNAME "Virtual PCD"
DEVICENAME   /dev/null:$port
LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so
CHANNELID    $port
CONF
    echo "VPCD_PORT=$port" >"$dir/pcscd.env"
    mkdir -p /run/pcscd
    setsid pcscd -f -c "$dir/reader.conf.d" >"$dir/pcscd.log" 2>&1 </dev/null &
    echo $! >"$dir/pcscd.pid"
    for _ in $(seq 1 100); do
      [ -S /run/pcscd/pcscd.comm ] && ss -ltn 2>/dev/null | grep -q ":$port " && exit 0
      kill -0 "$(cat "$dir/pcscd.pid")" 2>/dev/null || break
      sleep 0.05
    done
    [ -S /run/pcscd/pcscd.comm ] && exit 0
    echo "pcscd.sh: pcscd did not come up; see $dir/pcscd.log" >&2; tail -5 "$dir/pcscd.log" >&2; exit 1
    ;;
  stop)
    [ -f "$dir/pcscd.pid" ] || exit 0
    pid=$(cat "$dir/pcscd.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/pcscd.pid"
    ;;
  *) echo "pcscd.sh: unknown command $cmd" >&2; exit 2 ;;
esac
