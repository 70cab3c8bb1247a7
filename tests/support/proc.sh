# proc.sh — sourced by end-to-end scripts: start daemons in their own session, remember
# their PIDs, wait for them to be ready, and stop every one of them by PID on exit.
#
#   OTAC_RUN=DIR             where pid files and logs go (set before sourcing)
#   proc_start NAME CMD...   start CMD in the background; log in $OTAC_RUN/NAME.log. CMD gets
#                            SIGTERM when this script dies, even by SIGKILL (a ctest
#                            timeout), so that no daemon outlives its test holding ports,
#                            files or a lock descriptor inherited from flock(1).
#   proc_wait_file FILE SECS [NAME]   wait until FILE exists and is non-empty; fail early if
#                            the process NAME died
#   proc_wait_log NAME REGEX SECS     wait until NAME's log matches REGEX
#   proc_stop NAME           SIGTERM, then SIGKILL after 5 s
#   proc_stop_all            stop everything started, newest first (install as an EXIT trap)
: "${OTAC_RUN:?proc.sh: set OTAC_RUN to a directory first}"
mkdir -p "$OTAC_RUN/pids"
_proc_order=()

proc_start() {
  local name=$1; shift
  setsid setpriv --pdeathsig TERM "$@" >"$OTAC_RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$OTAC_RUN/pids/$name"
  _proc_order+=("$name")
}

proc_alive() { [ -f "$OTAC_RUN/pids/$1" ] && kill -0 "$(cat "$OTAC_RUN/pids/$1")" 2>/dev/null; }

proc_wait_file() {
  local file=$1 secs=$2 name=${3:-} i
  for ((i = 0; i < secs * 20; i++)); do
    [ -s "$file" ] && return 0
    if [ -n "$name" ] && ! proc_alive "$name"; then
      echo "$name exited before it was ready; last lines of its log:" >&2
      tail -15 "$OTAC_RUN/$name.log" >&2 || true
      return 1
    fi
    sleep 0.05
  done
  echo "timed out after ${secs}s waiting for $file" >&2
  [ -n "$name" ] && tail -15 "$OTAC_RUN/$name.log" >&2
  return 1
}

proc_wait_log() {
  local name=$1 re=$2 secs=$3 i
  for ((i = 0; i < secs * 20; i++)); do
    grep -Eq "$re" "$OTAC_RUN/$name.log" 2>/dev/null && return 0
    if ! proc_alive "$name"; then
      echo "$name exited while waiting for /$re/ in its log:" >&2
      tail -15 "$OTAC_RUN/$name.log" >&2 || true
      return 1
    fi
    sleep 0.05
  done
  echo "timed out after ${secs}s waiting for /$re/ in $OTAC_RUN/$name.log" >&2
  tail -15 "$OTAC_RUN/$name.log" >&2 || true
  return 1
}

proc_stop() {
  local f="$OTAC_RUN/pids/$1" pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

proc_stop_all() {
  local i
  for ((i = ${#_proc_order[@]} - 1; i >= 0; i--)); do proc_stop "${_proc_order[i]}"; done
}
