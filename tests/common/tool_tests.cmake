# otac-tool tests: known-answer packets from osmocom pySim (tests/data/ota_pysim.vec, data
# set 3DES-SJA5-CIPHERED-CC and its sysmoISIM-SJA5 PoR) through the command line, exit
# statuses, and that keys are never echoed. Include from tests/common/CMakeLists.txt:
#   include(${CMAKE_CURRENT_SOURCE_DIR}/tool_tests.cmake)
if(NOT TARGET otac-tool)
  return()
endif()

set(_kic 300102030405060708090a0b0c0d0e0f)
set(_kid 301102030405060708090a0b0c0d0e0f)
set(_cmd 00201506193535b00011ae733256918d050b87c94fbfe12e4dc402f262c41cf67f2f)
set(_por 001c12b000118bb989492c632529326a2f4681feb37c825bc9021c9f6d0b)
set(_run ${CMAKE_CURRENT_SOURCE_DIR}/run_tool.cmake)

# otac_tool_test(NAME RC OUT_REGEX FORBID ARGS...): OUT_REGEX/FORBID may be "" for none.
function(otac_tool_test name rc out forbid)
  # The argument list travels '|'-separated: a ';' list would be split by add_test.
  string(REPLACE ";" "|" args "${ARGN}")
  set(defs -DTOOL=$<TARGET_FILE:otac-tool> "-DARGS=${args}" -DEXPECT_RC=${rc})
  if(NOT out STREQUAL "")
    list(APPEND defs "-DEXPECT_OUT=${out}")
  endif()
  if(NOT forbid STREQUAL "")
    list(APPEND defs "-DFORBID=${forbid}")
  endif()
  add_test(NAME "tool: ${name}" COMMAND ${CMAKE_COMMAND} ${defs} -P ${_run})
endfunction()

otac_tool_test("ota-build reproduces the pySim 3DES packet" 0 "^${_cmd}\n$" ""
  ota-build --kic-key ${_kic} --kid-key ${_kid} --kic 35 --kid 35 --spi 0619 --tar b00011
  --cntr 0000000000 --data 00a40004023f00)
otac_tool_test("ota-open verifies and deciphers the pySim 3DES packet" 0 "data  00a40004023f00 " "${_kid}"
  ota-open --kic-key ${_kic} --kid-key ${_kid} ${_cmd})
otac_tool_test("ota-open without keys shows the header only" 0 "TAR   b00011.*protected" ""
  ota-open ${_cmd})
otac_tool_test("ota-open verifies the sysmoISIM-SJA5 PoR" 0 "RSC   00 \\(PoR OK\\).*data  016132 " ""
  ota-open --response --spi 0619 --kic 35 --kid 35 --kic-key ${_kic} --kid-key ${_kid} ${_por})
otac_tool_test("ota-build rebuilds the sysmoISIM-SJA5 PoR" 0 "^${_por}\n$" ""
  ota-build --response --spi 0619 --kic 35 --kid 35 --kic-key ${_kic} --kid-key ${_kid} --tar b00011
  --cntr 0000000000 --rsc 00 --data 016132)
# A wrong KID key (one key byte changed beyond its parity bit) is bad input, exit 1.
otac_tool_test("ota-open with a wrong key exits 1" 1 "" "301102030405060708090a0b0c0d0e11"
  ota-open --kic-key ${_kic} --kid-key 301102030405060708090a0b0c0d0e11 ${_cmd})
otac_tool_test("ota-open of a truncated packet exits 1" 1 "" ""
  ota-open 00201506193535b00011ae73)
otac_tool_test("a key that is not hex is a usage error and not echoed" 2 "" "30zz0102abcdef"
  ota-open --kic-key 30zz0102abcdef --kid-key ${_kid} ${_cmd})
otac_tool_test("an unknown option is a usage error" 2 "" "" ota-open --frobnicate ${_cmd})
otac_tool_test("an unknown subcommand is a usage error" 2 "" "" no-such-command)
otac_tool_test("derive-keys matches the CPython computation" 0
  "KIc key    863285d367cbce20eab3434a73f8dccd.*KID key    493b311fa2cd6e3e8a1cabefd9ec577a" "404142434445464748494a4b4c4d4e4f"
  derive-keys --k 404142434445464748494a4b4c4d4e4f --n 0102030405060708)
otac_tool_test("every subcommand has --help" 0 "usage: otac-tool ota-build" "" ota-build --help)
