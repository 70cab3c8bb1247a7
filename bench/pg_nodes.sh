#!/usr/bin/env bash
# pg_nodes.sh BUILD_DIR [RATE] [SECONDS] — authorizations/s and p99 latency at a fixed rate
# (default 300/s for 10 s) with 1, 2 and 3 otac-backend nodes on one PostgreSQL 15
# (synchronous_commit on, fsync on), and the same load on one node with SQLite, in one run.
# otac-loadgen sends over 16 mutual-TLS keep-alive connections, spread over the nodes.
# Not run in CI (docs/operations.md, "Several nodes on PostgreSQL", records the figures).
set -euo pipefail
OTAC_BUILD=$(cd "${1:?usage: pg_nodes.sh BUILD_DIR [RATE] [SECONDS]}" && pwd)
rate=${2:-300}
secs=${3:-10}
OTAC_RUN=$(mktemp -d /tmp/otac-pg-bench.XXXXXX)
export OTAC_RUN
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests/support/proc.sh
source "$here/../tests/support/proc.sh"
# shellcheck source=../tests/support/pg.sh
source "$here/../tests/support/pg.sh"
cleanup() { proc_stop_all; pg_down; rm -rf "$OTAC_RUN"; }
trap cleanup EXIT
pg_up -c synchronous_commit=on -c fsync=on

# Enough codes for the phase: 1.5 x the paced count, or 4,000 when unpaced (rate 0).
codes=$((rate > 0 ? rate * secs * 3 / 2 + 200 : 4000))
# One configuration: $1 = label, $2 = node count, $3 = store config lines.
measure() {
  local label=$1 count=$2 config=$3 i dir urls=()
  for ((i = 0; i < count; i++)); do
    dir=$OTAC_RUN/$label-node$i
    if ((i == 0)); then mkdir -p "$dir"; printf '%s\n' "$config" >"$dir/otac-backend.conf"
    else cp -a "$OTAC_RUN/$label-node0" "$dir"; rm -f "$dir/backend.port" "$dir/mo.port"; fi
    proc_start "$label-$i" "$OTAC_BUILD/backend/server/otac-backend" --data-dir "$dir" --listen 127.0.0.1:0
    proc_wait_file "$dir/backend.port" 60 "$label-$i"
    urls+=(--url "https://127.0.0.1:$(cat "$dir/backend.port")")
  done
  "$OTAC_BUILD/backend/bench/otac-loadgen" --data-dir "$OTAC_RUN/$label-node0" "${urls[@]}" --rate "$rate" \
    --seconds "$secs" --codes "$codes" >"$OTAC_RUN/$label.out" 2>&1 || { tail -5 "$OTAC_RUN/$label.out" >&2; return 1; }
  printf '%-16s %s\n' "$label" "$(grep '^authorize' "$OTAC_RUN/$label.out")"
  for ((i = 0; i < count; i++)); do proc_stop "$label-$i"; done
}

echo "fixed rate $rate/s for $secs s; $(nproc) CPUs; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
measure sqlite 1 'store = "sqlite"'
for n in 1 2 3; do
  measure "postgresql-$n" "$n" "store = \"postgresql\"
postgres_conninfo = \"$(pg_createdb "bench$n")\""
done
