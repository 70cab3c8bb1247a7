# The command lines of the CLI11 programs (common/sys/include/otac/sys/cli.hpp): --help,
# --version, each subcommand's own help, and a usage error as exactly one line on stderr that
# names what was wrong, with exit status 2. Include from tests/common/CMakeLists.txt.
# otac_cli_test(NAME PROGRAM RC OUT_REGEX ERR_REGEX ARGS...): OUT/ERR may be "" for no check.
function(otac_cli_test name program rc out err)
  otac_program_test("cli: ${program} ${name}" ${program} ${rc} "${out}" "${err}" "" ${ARGN})
endfunction()

# otac_cli_basics(PROGRAM ARGS...): --version, --help, and an unknown option given after ARGS
# (a subcommand, or the options a program requires, so that the unknown one is the error).
function(otac_cli_basics program)
  if(NOT TARGET ${program})
    return()
  endif()
  otac_cli_test("--version prints the project's version" ${program} 0 "^${program} ${PROJECT_VERSION}\n$" "" --version)
  otac_cli_test("--help prints the usage" ${program} 0 "[Uu]sage" "" --help)
  otac_cli_test("an unknown option is one line that names it, exit 2" ${program} 2 ""
                "^${program}[a-z -]*: [^\n]*--frobnicate[^\n]*\n$" ${ARGN} --frobnicate)
endfunction()

otac_cli_basics(otac-tool tlv)
otac_cli_basics(otac-card status)
otac_cli_basics(otac-admin whoami)
otac_cli_basics(otac-pn532-emu)
otac_cli_basics(otac-terminal --config /nonexistent/terminal.conf pos)
otac_cli_basics(otac-backend)
otac_cli_basics(otac-loadgen --data-dir /nonexistent --url https://127.0.0.1:1)
otac_cli_basics(otac-dispenser-emu --socket /nonexistent/d.sock --cassettes 2000x1)

if(TARGET otac-tool)
  otac_cli_test("ota-open --help shows the subcommand's own options" otac-tool 0 "--kic-key-file.*usage: otac-tool ota-open" ""
                ota-open --help)
  otac_cli_test("a missing value names the option" otac-tool 2 "" "^otac-tool ota-open: [^\n]*--kic-key-file[^\n]*\n$"
                ota-open --kic-key-file)
  otac_cli_test("an option given twice is refused" otac-tool 2 "" "^otac-tool ota-build: [^\n]*--spi[^\n]*\n$"
                ota-build --spi 0619 --spi 0619)
  otac_cli_test("without a subcommand: a usage error" otac-tool 2 "" "^otac-tool: [^\n]*subcommand[^\n]*\n$")
endif()
if(TARGET otac-card)
  otac_cli_test("verify --help shows --pin-fd" otac-card 0 "--pin-fd" "" verify --help)
  otac_cli_test("an option of another command is refused in one line" otac-card 2 ""
                "^otac-card verify: [^\n]*--force[^\n]*\n$" verify --state /nonexistent --force)
  otac_cli_test("an option given twice is refused in one line" otac-card 2 ""
                "^otac-card verify: [^\n]*--state[^\n]*\n$" verify --state /nonexistent/a --state /nonexistent/b)
endif()
if(TARGET otac-admin)
  otac_cli_test("enroll --help shows --msisdn" otac-admin 0 "--msisdn" "" enroll --help)
  otac_cli_test("a bad --timeout names the option" otac-admin 2 "" "^otac-admin[a-z ]*: [^\n]*--timeout[^\n]*\n$"
                --timeout abc whoami)
endif()
if(TARGET otac-pn532-emu)
  otac_cli_test("a port out of range names the option" otac-pn532-emu 2 "" "^otac-pn532-emu: [^\n]*--card-port[^\n]*\n$"
                --link /nonexistent/link --card-port 70000)
endif()

# A missing value, a bad value and the other usage errors of the programs converted from
# hand-written parsers; none of these runs far enough to open a file or a port.
if(TARGET otac-terminal)
  set(conf --config /nonexistent/terminal.conf)
  otac_cli_test("a missing value names the option" otac-terminal 2 "" "^otac-terminal: [^\n]*--config[^\n]*\n$" --config)
  otac_cli_test("a bad --card names the option" otac-terminal 2 "" "^otac-terminal code: [^\n]*--card[^\n]*\n$"
                ${conf} code 12345678 --card 01020304)
  otac_cli_test("a code that is not 8 digits names CODE" otac-terminal 2 "" "^otac-terminal code: CODE: [^\n]*8 digits[^\n]*\n$"
                ${conf} code 1234)
  otac_cli_test("a bad --txn-id names the option" otac-terminal 2 "" "^otac-terminal pos: [^\n]*--txn-id[^\n]*\n$"
                ${conf} pos --txn-id "a b")
  otac_cli_test("void without --txn-id names it" otac-terminal 2 "" "^otac-terminal void: [^\n]*--txn-id[^\n]*\n$" ${conf} void)
  otac_cli_test("an unknown command is named" otac-terminal 2 "" "^otac-terminal: [^\n]*fly[^\n]*\n$" ${conf} fly)
  otac_cli_test("an option of another command is refused in one line" otac-terminal 2 ""
                "^otac-terminal door: [^\n]*--amount[^\n]*\n$" ${conf} door --amount 3.00)
  otac_cli_test("pos --help shows the command's own options" otac-terminal 0 "Usage: otac-terminal pos.*--save-request" ""
                pos --help)
  otac_cli_test("a configuration that cannot be read is one log line, exit 2" otac-terminal 2 ""
                "^ts=[^\n]* level=error event=config_error [^\n]*/nonexistent/terminal.conf[^\n]*\n$" ${conf} outcomes)
endif()
if(TARGET otac-backend)
  otac_cli_test("a missing value names the option" otac-backend 2 "" "^otac-backend: [^\n]*--data-dir[^\n]*\n$" --data-dir)
  otac_cli_test("a bad --batch names the option" otac-backend 2 "" "^otac-backend hsm-migrate: [^\n]*--batch[^\n]*\n$"
                hsm-migrate --data-dir /nonexistent --batch 0)
  otac_cli_test("without --data-dir: one line naming it" otac-backend 2 "" "^otac-backend: [^\n]*--data-dir[^\n]*\n$")
  otac_cli_test("renew-certificate refuses --listen in one line" otac-backend 2 ""
                "^otac-backend renew-certificate: [^\n]*--listen[^\n]*\n$" renew-certificate --data-dir /nonexistent --listen 127.0.0.1:0)
  otac_cli_test("hsm-rotate --help shows --keep-old" otac-backend 0 "--keep-old" "" hsm-rotate --help)
  otac_cli_test("--default-config prints the configuration" otac-backend 0 "^# otac-backend configuration" "" --default-config)
endif()
if(TARGET otac-loadgen)
  otac_cli_test("a missing value names the option" otac-loadgen 2 "" "^otac-loadgen: [^\n]*--url[^\n]*\n$"
                --data-dir /nonexistent --url)
  otac_cli_test("a bad --connections names the option" otac-loadgen 2 "" "^otac-loadgen: [^\n]*--connections[^\n]*\n$"
                --data-dir /nonexistent --url https://127.0.0.1:1 --connections many)
  otac_cli_test("an http URL names --url" otac-loadgen 2 "" "^otac-loadgen: [^\n]*--url[^\n]*https[^\n]*\n$"
                --data-dir /nonexistent --url http://127.0.0.1:1)
  otac_cli_test("without --data-dir: one line naming it" otac-loadgen 2 "" "^otac-loadgen: [^\n]*--data-dir[^\n]*\n$"
                --url https://127.0.0.1:1)
endif()
if(TARGET otac-dispenser-emu)
  set(disp --socket /nonexistent/d.sock)
  otac_cli_test("a missing value names the option" otac-dispenser-emu 2 "" "^otac-dispenser-emu: [^\n]*--cassettes[^\n]*\n$"
                ${disp} --cassettes)
  otac_cli_test("bad cassettes name the option" otac-dispenser-emu 2 "" "^otac-dispenser-emu: [^\n]*--cassettes[^\n]*\n$"
                ${disp} --cassettes 2000y50)
  otac_cli_test("an unknown fault names the option" otac-dispenser-emu 2 "" "^otac-dispenser-emu: [^\n]*--fault[^\n]*\n$"
                ${disp} --cassettes 2000x1 --fault melt)
  otac_cli_test("a delay out of range names the option" otac-dispenser-emu 2 "" "^otac-dispenser-emu: [^\n]*--delay-ms[^\n]*\n$"
                ${disp} --cassettes 2000x1 --delay-ms 600001)
  otac_cli_test("without --cassettes: one line naming it" otac-dispenser-emu 2 "" "^otac-dispenser-emu: [^\n]*--cassettes[^\n]*\n$"
                ${disp})
endif()

# The completion files the packages ship come from the same CLI11 description.
find_program(OTAC_BASH bash)
if(OTAC_BASH AND TARGET otac-tool AND TARGET otac-card AND TARGET otac-terminal AND TARGET otac-backend)
  add_test(NAME "cli: bash completion completes subcommands and each one's own options"
           COMMAND ${OTAC_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/completion_test.sh $<TARGET_FILE:otac-tool> $<TARGET_FILE:otac-card>
                   $<TARGET_FILE:otac-terminal> $<TARGET_FILE:otac-backend>)
endif()
