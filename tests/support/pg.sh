# shellcheck shell=bash
# pg.sh — sourced by scripts (after proc.sh's OTAC_RUN is set): a throw-away PostgreSQL 15
# cluster, the shell twin of tests/support/pg_cluster.{hpp,cpp}. initdb and pg_ctl from
# Debian's postgresql-15, run as nobody when we are root (PostgreSQL refuses root),
# listening only on a Unix socket in $OTAC_RUN/pg-sock, stopped by the postmaster's PID.
#
#   pg_up [EXTRA SERVER OPTIONS]   create and start the cluster
#   pg_createdb NAME               create a database; prints its libpq connection string
#   pg_down                        fast shutdown by PID (SIGKILL after 10 s)
: "${OTAC_RUN:?pg.sh: set OTAC_RUN first}"
PG_BIN=/usr/lib/postgresql/15/bin
PG_DATA=$OTAC_RUN/pg-data
PG_SOCK=$OTAC_RUN/pg-sock
_pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }

pg_up() {
  [ -x "$PG_BIN/initdb" ] || { echo "pg.sh: PostgreSQL 15 is not installed (bash setup.sh deps)" >&2; return 1; }
  mkdir -p "$PG_SOCK"
  if [ "$(id -u)" = 0 ]; then chown nobody "$OTAC_RUN" "$PG_SOCK"; chmod 711 "$OTAC_RUN"; fi
  _pg_as "$PG_BIN/initdb" -D "$PG_DATA" -U otac -A trust -E UTF8 --locale=C >"$OTAC_RUN/initdb.log" 2>&1 ||
    { tail -20 "$OTAC_RUN/initdb.log" >&2; return 1; }
  _pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$OTAC_RUN/postgres.log" -w -t 60 \
    -o "-c listen_addresses='' -k $PG_SOCK -c max_connections=400 $*" start >/dev/null ||
    { tail -20 "$OTAC_RUN/postgres.log" >&2; return 1; }
}

pg_conninfo() { echo "host=$PG_SOCK port=5432 user=otac dbname=$1"; }

pg_createdb() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$(pg_conninfo postgres)" -c "CREATE DATABASE $1" >/dev/null
  pg_conninfo "$1"
}

pg_down() {
  [ -f "$PG_DATA/postmaster.pid" ] || return 0
  local pid i
  pid=$(head -1 "$PG_DATA/postmaster.pid")
  kill -INT "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}
