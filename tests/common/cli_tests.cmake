# The command lines of the CLI11 programs (common/sys/include/otac/sys/cli.hpp): --help,
# --version, each subcommand's own help, and a usage error as exactly one line on stderr that
# names what was wrong, with exit status 2. Include from tests/common/CMakeLists.txt.
# otac_cli_test(NAME PROGRAM RC OUT_REGEX ERR_REGEX ARGS...): OUT/ERR may be "" for no check.
function(otac_cli_test name program rc out err)
  otac_program_test("cli: ${program} ${name}" ${program} ${rc} "${out}" "${err}" "" ${ARGN})
endfunction()

# PROGRAM and, after '/', a subcommand to give the unknown option to.
foreach(entry otac-tool/tlv otac-card/status otac-admin/whoami otac-pn532-emu/)
  string(REPLACE "/" ";" parts "${entry}/")
  list(GET parts 0 program)
  list(GET parts 1 sub)
  if(NOT TARGET ${program})
    continue()
  endif()
  otac_cli_test("--version prints the project's version" ${program} 0 "^${program} ${PROJECT_VERSION}\n$" "" --version)
  otac_cli_test("--help prints the usage" ${program} 0 "[Uu]sage" "" --help)
  otac_cli_test("an unknown option is one line that names it, exit 2" ${program} 2 ""
                "^${program}[a-z -]*: [^\n]*--frobnicate[^\n]*\n$" ${sub} --frobnicate)
endforeach()

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

# The completion files the packages ship come from the same CLI11 description.
find_program(OTAC_BASH bash)
if(OTAC_BASH AND TARGET otac-tool AND TARGET otac-card)
  add_test(NAME "cli: bash completion completes subcommands and each one's own options"
           COMMAND ${OTAC_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/completion_test.sh $<TARGET_FILE:otac-tool> $<TARGET_FILE:otac-card>)
endif()
