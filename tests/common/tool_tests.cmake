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

# Keys come from files that only their owner may read (never from arguments, which ps shows).
set(_keys ${CMAKE_CURRENT_BINARY_DIR}/tool_keys)
function(otac_tool_key_file name content mode)
  file(WRITE ${_keys}/${name} "${content}\n")
  file(CHMOD ${_keys}/${name} FILE_PERMISSIONS ${mode})
endfunction()
otac_tool_key_file(kic.hex ${_kic} "OWNER_READ;OWNER_WRITE")
otac_tool_key_file(kid.hex ${_kid} "OWNER_READ;OWNER_WRITE")
otac_tool_key_file(k.hex 404142434445464748494a4b4c4d4e4f "OWNER_READ;OWNER_WRITE")
otac_tool_key_file(kid-open.hex ${_kid} "OWNER_READ;OWNER_WRITE;GROUP_READ;WORLD_READ")
otac_tool_key_file(not-hex.hex 30zz0102abcdef "OWNER_READ;OWNER_WRITE")

# otac_tool_test(NAME RC OUT_REGEX FORBID ARGS...): OUT_REGEX/FORBID may be "" for none; the
# variable OTAC_TOOL_EXPECT_ERR, when set, is a regex for stderr.
function(otac_tool_test name rc out forbid)
  otac_program_test("tool: ${name}" otac-tool ${rc} "${out}" "${OTAC_TOOL_EXPECT_ERR}" "${forbid}" ${ARGN})
endfunction()

otac_tool_test("ota-build reproduces the pySim 3DES packet" 0 "^${_cmd}\n$" ""
  ota-build --kic-key-file ${_keys}/kic.hex --kid-key-file ${_keys}/kid.hex --kic 35 --kid 35 --spi 0619 --tar b00011
  --cntr 0000000000 --data 00a40004023f00)
otac_tool_test("ota-open verifies and deciphers the pySim 3DES packet" 0 "data  00a40004023f00 " "${_kid}"
  ota-open --kic-key-file ${_keys}/kic.hex --kid-key-file ${_keys}/kid.hex ${_cmd})
otac_tool_test("ota-open without keys shows the header only" 0 "TAR   b00011.*protected" ""
  ota-open ${_cmd})
otac_tool_test("ota-open verifies the sysmoISIM-SJA5 PoR" 0 "RSC   00 \\(PoR OK\\).*data  016132 " ""
  ota-open --response --spi 0619 --kic 35 --kid 35 --kic-key-file ${_keys}/kic.hex --kid-key-file ${_keys}/kid.hex ${_por})
otac_tool_test("ota-build rebuilds the sysmoISIM-SJA5 PoR" 0 "^${_por}\n$" ""
  ota-build --response --spi 0619 --kic 35 --kid 35 --kic-key-file ${_keys}/kic.hex --kid-key-file ${_keys}/kid.hex --tar b00011
  --cntr 0000000000 --rsc 00 --data 016132)
# A wrong KID key (one key byte changed beyond its parity bit) is bad input, exit 1.
otac_tool_test("ota-open with a wrong key exits 1" 1 "" "301102030405060708090a0b0c0d0e11"
  ota-open --kic-key-file ${_keys}/kic.hex --kid-key 301102030405060708090a0b0c0d0e11 ${_cmd})
otac_tool_test("ota-open of a truncated packet exits 1" 1 "" ""
  ota-open 00201506193535b00011ae73)
otac_tool_test("a key that is not hex is a usage error and not echoed" 2 "" "30zz0102abcdef"
  ota-open --kic-key 30zz0102abcdef --kid-key-file ${_keys}/kid.hex ${_cmd})
otac_tool_test("a key file that is not hex is a usage error and not echoed" 2 "" "30zz0102abcdef"
  ota-open --kic-key-file ${_keys}/not-hex.hex --kid-key-file ${_keys}/kid.hex ${_cmd})
set(OTAC_TOOL_EXPECT_ERR "not be accessible by group or others.*chmod 600")
otac_tool_test("a key file that others may read is refused" 2 "" "${_kid}"
  ota-open --kic-key-file ${_keys}/kic.hex --kid-key-file ${_keys}/kid-open.hex ${_cmd})
# The deprecated key arguments still work, and warn.
set(OTAC_TOOL_EXPECT_ERR "warning: --kic-key puts the key on the command line.*deprecated: use --kic-key-file")
otac_tool_test("the deprecated --kic-key argument works and warns" 0 "data  00a40004023f00 " "${_kid}"
  ota-open --kic-key ${_kic} --kid-key-file ${_keys}/kid.hex ${_cmd})
unset(OTAC_TOOL_EXPECT_ERR)
otac_tool_test("an unknown option is a usage error" 2 "" "" ota-open --frobnicate ${_cmd})
otac_tool_test("an unknown subcommand is a usage error" 2 "" "" no-such-command)
otac_tool_test("derive-keys matches the CPython computation" 0
  "KIc key    863285d367cbce20eab3434a73f8dccd.*KID key    493b311fa2cd6e3e8a1cabefd9ec577a" "404142434445464748494a4b4c4d4e4f"
  derive-keys --k-file ${_keys}/k.hex --n 0102030405060708)
set(OTAC_TOOL_EXPECT_ERR "warning: --k puts the key on the command line")
otac_tool_test("derive-keys with the deprecated --k works and warns" 0
  "KIc key    863285d367cbce20eab3434a73f8dccd" "404142434445464748494a4b4c4d4e4f"
  derive-keys --k 404142434445464748494a4b4c4d4e4f --n 0102030405060708)
unset(OTAC_TOOL_EXPECT_ERR)
otac_tool_test("every subcommand has --help" 0 "usage: otac-tool ota-build" "" ota-build --help)

# Codec subcommands, with the published packets of tests/data/{tlv_emv,apdu_iso7816,
# sms_tpdu,envelope}.vec (sources named there): openemv/emv-utils GPO response, EMV Annex A
# APDUs, TS 31.124 27.22.5 SMS-PP messages 3.1.1/3.1.5, TS 102 384 SEND SHORT MESSAGE 1.1
# and 1.2, pySim test_sms SUBMIT and the pySim-smpp2sim DELIVER.
set(_env311 d12d8202838106099111223344556677f88b1c04049121437f16891010000000000d546573744d6573736167652031)
set(_tpdu311 04049121437f16891010000000000d546573744d6573736167652031)
set(_tpdu315 44049121437ff6891010000000001e0270000019000d00000000bfff00000000000100dcdcdcdcdcdcdcdcdcdc)
set(_smpp_ud 00281516191212b0000127fa28a5bac69d3c5e9df2c7155dfdde449c826b236215566530787b30e8be5d)
otac_tool_test("tlv dumps the emv-utils GPO format 2 response" 0 "^77 \\[14\\]\n  82 \\[2\\] 3900\n  94 \\[8\\] 1801020120020400\n$" ""
  tlv 770e8202390094081801020120020400)
otac_tool_test("tlv of a truncated record exits 1" 1 "" "" tlv 7033571147617390)
# Data that is not hex is bad input (exit 1, as the help says), not a usage error.
otac_tool_test("tlv of data that is not hex exits 1" 1 "" "" tlv zz)
otac_tool_test("ota-open of a packet that is not hex exits 1" 1 "" "" ota-open 00zz)
otac_tool_test("tlv without data is a usage error" 2 "" "" tlv)
otac_tool_test("apdu describes SELECT 1PAY.SYS.DDF01 (EMV Annex A4)" 0 "case 4 short.*Ne   256" ""
  apdu 00a404000e315041592e5359532e444446303100)
otac_tool_test("apdu describes an extended case 2 (open eCard)" 0 "Le=65536 case 2 extended" "" apdu 00010203000000)
otac_tool_test("apdu --response explains 6C1C (EMV Annex A2)" 0 "exactly 28 bytes" "" apdu --response 6c1c)
otac_tool_test("apdu --response explains 63C2" 0 "2 tries left" "" apdu --response 63c2)
otac_tool_test("apdu with Lc beyond the data exits 1" 1 "" "" apdu 00010203050102)
otac_tool_test("sms-decode finds the command packet in TS 31.124 message 3.1.5" 0
  "SMS-DELIVER.*OA    1234 \\(TOA 91, international\\).*UDH   IEI 70.*TS 102 225 command packet \\(IEI 70\\)" ""
  sms-decode ${_tpdu315})
otac_tool_test("sms-decode shows the pySim SUBMIT concatenation element" 0
  "SMS-SUBMIT.*DA    61416271170.*VP    relative a7.*reference 1, part 1 of 2.*BEGIN:VCARD" ""
  sms-decode 550d0b911614261771f000f5a78c0b050423f423f40003010201424547494e3a56434152440d0a56455253494f4e3a322e310d0a4e3a4d650d0a54454c3b505245463b43454c4c3b564f4943453a2b36313431363237313137300d0a54454c3b484f4d453b564f4943453a2b36313339353337303437310d0a54454c3b574f524b3b564f4943453a2b36313339363734373031350d0a454e443a)
otac_tool_test("sms-decode shows 7-bit text (TS 102 384 SEND SHORT MESSAGE 1.2)" 0 "13 septets: \"Short Message\"" ""
  sms-decode 0100099110325476f840f00d53f45b4e0735cbf379f85c06)
otac_tool_test("sms-decode of a TPDU whose UDL disagrees exits 1 (pySim test_ota)" 1 "" ""
  sms-decode 400881214365877ff6227052000000000302700000201506193535b00011ae733256918d050b87c94fbfe12e4dc402f262c41cf67f2f)
otac_tool_test("sms-encode deliver reproduces the pySim-smpp2sim TPDU" 0
  "^400290217ff6227052000000002d027000${_smpp_ud}\n$" ""
  sms-encode deliver --from 90:12 --scts 22705200000000 --more-messages --udh 7000 --data ${_smpp_ud})
otac_tool_test("sms-encode deliver reproduces TS 31.124 message 3.1.5" 0 "^${_tpdu315}\n$" ""
  sms-encode deliver --from 91:1234 --scts 89101000000000 --udh 7000
  --data 0019000d00000000bfff00000000000100dcdcdcdcdcdcdcdcdcdc)
otac_tool_test("sms-encode submit reproduces TS 102 384 SEND SHORT MESSAGE 1.1" 0
  "^0100099110325476f840f40c54657374204d657373616765\n$" ""
  sms-encode submit --to +012345678 --pid 40 --dcs f4 --data 54657374204d657373616765)
otac_tool_test("sms-encode submit --text reproduces TS 102 384 SEND SHORT MESSAGE 1.2" 0
  "^0100099110325476f840f00d53f45b4e0735cbf379f85c06\n$" ""
  sms-encode submit --to +012345678 --pid 40 --dcs f0 --text "Short Message")
# 138 octets with IEI 70 need two parts; part 1's UDH has the shape pySim records from a
# sysmoISIM-SJA5 (07 00 03 ref 02 01 7x 00), part 2 only the concatenation element.
otac_tool_test("sms-encode --concat-ref splits with the concatenation element first" 0
  "^440791942143f57ff6001010000000008c0700032a02017000[0-9a-f]+\n440791942143f57ff6001010000000000c0500032a0202[0-9a-f]+\n$" ""
  sms-encode deliver --from +4912345 --udh 7000 --concat-ref 2a
  --data 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80818283848586878889)
otac_tool_test("sms-encode of 141 octets without --concat-ref exits 1" 1 "" ""
  sms-encode submit --to +1 --data 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c)
otac_tool_test("sms-encode without deliver|submit is a usage error" 2 "" "" sms-encode --to +1 --data 00)
otac_tool_test("envelope-decode shows TS 31.124 ENVELOPE 3.1.1 and its TPDU" 0
  "SMS-PP DOWNLOAD.*network -> UICC.*digits 112233445566778.*SMS-DELIVER.*text  \"TestMessage 1\"" ""
  envelope-decode ${_env311})
otac_tool_test("envelope-decode shows TS 102 384 SEND SHORT MESSAGE 1.2" 0
  "proactive command.*SEND SHORT MESSAGE.*SMS-SUBMIT.*\"Short Message\"" ""
  envelope-decode d03d810301130082028183850d53686f7274204d65737361676586099111223344556677f88b180100099110325476f840f00d53f45b4e0735cbf379f85c06)
otac_tool_test("envelope-encode reproduces TS 31.124 ENVELOPE 3.1.1" 0 "^${_env311}\n$" ""
  envelope-encode --smsc 91:112233445566778 --tpdu ${_tpdu311})
otac_tool_test("envelope-encode without --tpdu is a usage error" 2 "" "" envelope-encode --smsc +1)
otac_tool_test("envelope-decode of a truncated ENVELOPE exits 1" 1 "" "" envelope-decode d12d82028381)
