# lib.sh — sourced by the demo and the end-to-end tests: brings the whole system up on
# loopback from the built programs, and down again by PID.
#
#   OTAC_BUILD=DIR OTAC_RUN=DIR; source lib.sh
#   stack_up [LIST_SIZE [THRESHOLD [CARD_THRESHOLD]]]   (E2E_BACKEND_CONF: extra backend config lines, TOML;
#                                      E2E_CARD_ACTIVATE_ARGS: extra otac-card activate options)
#                                      Kannel, otac-backend, a card enrolled and activated
#                                      whose first list arrives by SMS, the PN532 emulator
#                                      with the card in its field, a registered terminal
#                                      (E2E_POSTGRES=1: two backend nodes on one throw-away
#                                      PostgreSQL cluster instead of one on SQLite)
#   stack_down                         stop everything started (also the EXIT trap)
#
# After stack_up: BACKEND_PORT, BACKEND_DIR, CARD_N, CARD_STATE, TERM_DIR, TERM_CONF, EMU_SOCK,
# and the helpers admin, card, term, emu_ctl, card_codes, wait_card_codes, post_json. With
# E2E_POSTGRES=1 also BACKEND2_PORT and BACKEND2_DIR (the second node; the terminal's
# backend_url names both, and ADMIN_PORT, default BACKEND_PORT, picks the node admin talks to).
# Every wait is bounded; every process is stopped by PID (tests/support/proc.sh).
: "${OTAC_BUILD:?lib.sh: set OTAC_BUILD to the build directory}"
: "${OTAC_RUN:?lib.sh: set OTAC_RUN to a scratch directory}"
E2E_SUPPORT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../support" && pwd)
mkdir -p "$OTAC_RUN"
OTAC_RUN=$(cd "$OTAC_RUN" && pwd)
# shellcheck source=../support/proc.sh
source "$E2E_SUPPORT/proc.sh"

BIN_BACKEND=$OTAC_BUILD/backend/server/otac-backend
BIN_ADMIN=$OTAC_BUILD/backend/admin/otac-admin
BIN_CARD=$OTAC_BUILD/card-applet/otac-card
BIN_EMU=$OTAC_BUILD/hw/otac-pn532-emu
BIN_TERM=$OTAC_BUILD/terminal/otac-terminal

CARD_MSISDN=+4915550001
SERVER_MSISDN=+15550100
CARD_PIN=2468
CARD_PUK=13572468
TERMINAL_ID=TERM0001
DOOR_OK=FRONT01

stack_down() {
  proc_stop_all
  [ -f "$OTAC_RUN/kannel/kannel.env" ] && bash "$E2E_SUPPORT/kannel.sh" stop "$OTAC_RUN/kannel" >/dev/null 2>&1
  [ -n "${E2E_POSTGRES:-}" ] && pg_down
  return 0
}

admin() { "$BIN_ADMIN" --url "https://127.0.0.1:${ADMIN_PORT:-$BACKEND_PORT}" --ca "$BACKEND_DIR/ca.pem" \
            --token-file "$BACKEND_DIR/admin.token" "$@"; }
card() { local sub=$1; shift; "$BIN_CARD" "$sub" --state "$CARD_STATE" "$@"; }
term() { "$BIN_TERM" --config "$TERM_CONF" "$@"; }
emu_ctl() { "$BIN_EMU" --send "$EMU_SOCK" "$@"; }

# quiet CMD...: run CMD with its output in $OTAC_RUN/steps.log; on failure show its end.
quiet() {
  "$@" >>"$OTAC_RUN/steps.log" 2>&1 || {
    local rc=$?
    echo "failed (exit $rc): $*" >&2
    tail -5 "$OTAC_RUN/steps.log" >&2
    return $rc
  }
}

# The card's unused codes, from its own status.
card_codes() { card status | sed -n 's/^unused codes: *//p'; }

# wait_card_codes MIN SECS: until the card holds at least MIN unused codes.
wait_card_codes() {
  local min=$1 secs=$2 i c
  for ((i = 0; i < secs * 10; i++)); do
    c=$(card_codes 2>/dev/null || true)
    [ -n "$c" ] && [ "$c" -ge "$min" ] && return 0
    sleep 0.1
  done
  echo "the card holds ${c:-no} unused codes after ${secs}s, expected at least $min" >&2
  tail -5 "$OTAC_RUN/card.log" >&2
  return 1
}

# post_json PATH FILE [CERT KEY]: POST FILE to the backend as the terminal (mutual TLS).
post_json() {
  curl -sS --max-time 10 --cacert "$TERM_DIR/ca.pem" --cert "${3:-$TERM_DIR/$TERMINAL_ID.pem}" \
       --key "${4:-$TERM_DIR/$TERMINAL_ID.key}" -H 'Content-Type: application/json' \
       --data-binary @"$2" "https://127.0.0.1:$BACKEND_PORT$1"
}

# json_field NAME < JSON: the value of a top-level string member (flat objects only).
json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readline()).get(sys.argv[1], ""))' "$1"; }

stack_up() {
  # THRESHOLD: the backend pushes a list when the card's unused codes fall to it (server-side
  # tracking); CARD_THRESHOLD: the card asks for one itself (default: one below, so that the
  # backend's push normally comes first and the card's request is the fallback).
  local list_size=${1:-10} threshold=${2:-3} mo secret
  local card_threshold=${3:-$((threshold > 1 ? threshold - 1 : 1))}
  trap stack_down EXIT
  BACKEND_DIR=$OTAC_RUN/backend
  rm -rf "$BACKEND_DIR" "$OTAC_RUN/backend2" "$OTAC_RUN/term" "$OTAC_RUN/kannel"
  mkdir -m 700 "$BACKEND_DIR"
  local store_conf=""
  if [ -n "${E2E_POSTGRES:-}" ]; then
    # shellcheck source=../support/pg.sh
    source "$E2E_SUPPORT/pg.sh"
    rm -rf "$OTAC_RUN/pg-data" "$OTAC_RUN/pg-sock"
    pg_up || { echo "PostgreSQL did not start" >&2; return 1; }
    store_conf="store = \"postgresql\"
postgres_conninfo = \"$(pg_createdb otac)\""
  fi

  # Kannel first: its get-url names the backend's MO port and shared secret, chosen here. The
  # backend's own port is reserved too (not port 0): the soak and the fault tests restart it
  # on the same port after kill -9, and a port the kernel handed out once may meanwhile be the
  # source port of some other connection.
  local ports listen
  mapfile -t ports < <("$E2E_SUPPORT/freeport.sh" 2)
  mo=${ports[0]} listen=${ports[1]}
  secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077; printf '%s\n' "$secret" >"$BACKEND_DIR/mo.secret")
  bash "$E2E_SUPPORT/kannel.sh" start "$OTAC_RUN/kannel" \
    "http://127.0.0.1:$mo/v1/sms/mo?secret=$secret&from=%p&to=%P&udh=%u&data=%b" >"$OTAC_RUN/kannel.out" 2>&1 || {
    cat "$OTAC_RUN/kannel.out" >&2; return 1; }
  # shellcheck disable=SC1091
  . "$OTAC_RUN/kannel/kannel.env"

  cat >"$BACKEND_DIR/otac-backend.conf" <<EOF
# written by tests/e2e/lib.sh (TOML); every other key keeps its default
listen = "127.0.0.1:$listen"
mo_listen = "127.0.0.1:$mo"
server_msisdn = "$SERVER_MSISDN"
list_size = $list_size
threshold = $threshold
kannel_sendsms_url = "http://127.0.0.1:$KANNEL_SENDSMS_PORT/cgi-bin/sendsms"
kannel_user = "$KANNEL_SENDSMS_USER"
kannel_pass = "$KANNEL_SENDSMS_PASS"
sms_retry_base_seconds = 1
sms_retry_max_seconds = 2
$store_conf
${E2E_BACKEND_CONF:-}
EOF
  proc_start backend "$BIN_BACKEND" --data-dir "$BACKEND_DIR"
  proc_wait_file "$BACKEND_DIR/backend.port" 15 backend || return 1
  BACKEND_PORT=$(cat "$BACKEND_DIR/backend.port")
  local urls="\"https://127.0.0.1:$BACKEND_PORT\""
  if [ -n "${E2E_POSTGRES:-}" ]; then
    # The second node: a copy of the first one's data directory (CA, server certificate, KEK,
    # tokens, MO secret), as a deployment copies it to each machine, with its own ports.
    BACKEND2_DIR=$OTAC_RUN/backend2
    cp -a "$BACKEND_DIR" "$BACKEND2_DIR"
    rm -f "$BACKEND2_DIR/backend.port" "$BACKEND2_DIR/mo.port"
    local ports2
    mapfile -t ports2 < <("$E2E_SUPPORT/freeport.sh" 2)
    sed -i "s/^mo_listen = .*/mo_listen = \"127.0.0.1:${ports2[0]}\"/; s/^listen = .*/listen = \"127.0.0.1:${ports2[1]}\"/" \
      "$BACKEND2_DIR/otac-backend.conf"
    proc_start backend2 "$BIN_BACKEND" --data-dir "$BACKEND2_DIR"
    proc_wait_file "$BACKEND2_DIR/backend.port" 15 backend2 || return 1
    BACKEND2_PORT=$(cat "$BACKEND2_DIR/backend.port")
    urls="$urls, \"https://127.0.0.1:$BACKEND2_PORT\""
  fi

  # The card: enrolled (letter), a blank card activated with it, its first list by SMS.
  # With E2E_CARD_KEYPAIR=rsa|p256 the card first generates its key pair and is enrolled
  # with its public key (asymmetric mode: lists arrive as E5).
  CARD_STATE=${E2E_CARD_STATE_DIR:-$OTAC_RUN}/card.state  # a benchmark may put it on tmpfs
  rm -f "$CARD_STATE" "$CARD_STATE.lock"
  quiet card init || return 1
  local pubkey=()
  if [ -n "${E2E_CARD_KEYPAIR:-}" ]; then
    card keygen --alg "$E2E_CARD_KEYPAIR" <<<"$CARD_PIN" >"$OTAC_RUN/card.pub" 2>>"$OTAC_RUN/steps.log" || {
      echo "otac-card keygen failed" >&2; tail -3 "$OTAC_RUN/steps.log" >&2; return 1; }
    pubkey=(--public-key "$(cat "$OTAC_RUN/card.pub")")
  fi
  admin enroll --msisdn "$CARD_MSISDN" --review 5000 --limit 100000 --threshold "$threshold" \
    --door "$DOOR_OK" "${pubkey[@]}" >"$OTAC_RUN/letter.txt" || return 1
  CARD_N=$(sed -n 's/^Card identity N: *//p' "$OTAC_RUN/letter.txt")
  # The PIN and the PUK on standard input, one line each: never as arguments (ps shows those).
  printf '%s\n%s\n' "$CARD_PIN" "$CARD_PUK" | quiet card activate --letter "$OTAC_RUN/letter.txt" \
    --threshold "$card_threshold" ${E2E_CARD_ACTIVATE_ARGS:-} || return 1

  EMU_SOCK=$OTAC_RUN/emu.sock
  proc_start emu "$BIN_EMU" --link "$OTAC_RUN/pn532" --card-port 0 --port-file "$OTAC_RUN/emu.port" \
    --control "$EMU_SOCK"
  proc_wait_file "$OTAC_RUN/emu.port" 10 emu || return 1
  proc_start card "$BIN_CARD" run --state "$CARD_STATE" --vicc "127.0.0.1:$(cat "$OTAC_RUN/emu.port")" \
    --smsc "127.0.0.1:$KANNEL_SMSC_PORT" --msisdn "$CARD_MSISDN"
  wait_card_codes "$list_size" 30 || return 1

  # The terminal: registered, its client certificate issued, its config written.
  TERM_DIR=$OTAC_RUN/term
  quiet admin register-terminal "$TERMINAL_ID" --out "$TERM_DIR" || return 1
  TERM_CONF=$TERM_DIR/terminal.conf
  cat >"$OTAC_RUN/relay.sh" <<'EOF'
#!/bin/sh
# The door relay of the demo: relay_command is run as PROG open DOOR_ID PULSE_MS.
echo "relay: door $2 unlocked for $3 ms" >&2
EOF
  chmod +x "$OTAC_RUN/relay.sh"
  cat >"$TERM_CONF" <<EOF
reader = "pn532_uart:$OTAC_RUN/pn532"
backend_url = [$urls]
ca_file = "ca.pem"
cert_file = "$TERMINAL_ID.pem"
key_file = "$TERMINAL_ID.key"
terminal_id = "$TERMINAL_ID"
currency = "EUR"
door_id = "$DOOR_OK"
relay = "command"
relay_command = "$OTAC_RUN/relay.sh"
relay_pulse_ms = 500
pin_source = "none"
held_wait_limit_s = 20
card_wait_ms = 5000
removal_wait_ms = 100
EOF
}
