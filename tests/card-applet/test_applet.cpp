// APDU-level tests of the applet core: every command and its error paths (protocol.md 2-4).
#include <algorithm>

#include "card_fixture.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;

TEST_CASE("SELECT answers the FCI, foreign AIDs, CLAs and INSs get ISO status words") {
  Card c;
  auto r = c.tx("00A4040006F04F5441430100");
  CHECK(r.sw == 0x9000);
  // 6F { 84 AID, A5 { 9F08 01, DF01 0033, DF02 00 } }, written out from protocol.md 2.1.
  CHECK(r.data == hex("6F17 8406F04F54414301 A50D 9F080102 DF0102003F DF020100"));
  CHECK(c.tx("00A4040C06F04F54414301").data.empty());
  CHECK(c.tx("00A4040006A00000000401").sw == 0x6A82);
  CHECK(c.tx("00A4000C023F00").sw == 0x6A82);
  CHECK(c.tx("00A4050006F04F54414301").sw == 0x6A86);
  CHECK(c.tx("00A4040106F04F54414301").sw == 0x6A86);
  CHECK(c.tx("84A4040006F04F54414301").sw == 0x6E00);
  CHECK(c.tx("00CA9F7F00").sw == 0x6D00);
  CHECK(c.tx("00A4").sw == 0x6700);
  CHECK(c.tx("80A600000501").sw == 0x6700);  // Lc 5 with one byte
  // After a foreign SELECT the applet is deselected: its commands are unknown.
  CHECK(c.tx("80A6000000").sw == 0x6D00);
  c.select();
  CHECK(c.tx("80A6000000").sw == 0x9000);
  CHECK(c.tx("80FF000000").sw == 0x6D00);
  CHECK(c.tx("00A4040006A00000000401").sw == 0x6A82);
  CHECK(c.tx("80A6000000").sw == 0x6D00);
}

TEST_CASE("first PIN, VERIFY with tries counter, CHANGE and the PUK unblock path") {
  Card c;
  c.select();
  CHECK(c.sw(hex("0020008000")) == 0x6985);  // no PIN yet
  CHECK(c.sw(cmd(0x00, 0x24, 0x01, 0x80, hex("3132FFFFFFFFFFFF"))) == 0x6A80);  // 2 digits
  CHECK(c.sw(cmd(0x00, 0x24, 0x01, 0x80, hex("31323334FF35FFFF"))) == 0x6A80);  // digit after pad
  CHECK(c.sw(cmd(0x00, 0x24, 0x01, 0x80, pin_block("1234"))) == 0x9000);
  CHECK(c.sw(cmd(0x00, 0x24, 0x01, 0x80, pin_block("9999"))) == 0x6985);  // a PIN exists
  CHECK(c.sw(cmd(0x00, 0x24, 0x01, 0x81, pin_block("9999"))) == 0x6A86);
  c.select();  // drops verification
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80)) == 0x63C3);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, hex("31323334FFFF"))) == 0x6700);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000"))) == 0x63C2);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);  // resets the counter
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80)) == 0x9000);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000"))) == 0x63C2);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80)) == 0x63C2);  // a failure ends verification
  CHECK(c.sw(cmd(0x00, 0x24, 0x00, 0x80, pin_block("1234"))) == 0x6700);
  Bytes change = pin_block("1234");
  append(change, pin_block("24680"));
  CHECK(c.sw(cmd(0x00, 0x24, 0x00, 0x80, change)) == 0x9000);
  c.select();
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x63C2);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("24680"))) == 0x9000);
  // RESET RETRY COUNTER needs the PUK, which only activation sets.
  Bytes rrc = pin_block("87654321");
  append(rrc, pin_block("1111"));
  CHECK(c.sw(cmd(0x00, 0x2C, 0x00, 0x80, rrc)) == 0x6985);
}

TEST_CASE("PIN blocks after three failures, the PUK unblocks it, ten wrong PUKs kill the card") {
  Card c;
  personalize(c);
  c.select();
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000"))) == 0x63C2);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000"))) == 0x63C1);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000"))) == 0x63C0);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x6983);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80)) == 0x6983);
  CHECK(c.sw(cmd(0x80, 0xA4, 0x00, 0x00, {}, true)) == 0x6982);
  Bytes bad = pin_block("11111111");
  append(bad, pin_block("4321"));
  CHECK(c.sw(cmd(0x00, 0x2C, 0x00, 0x80, bad)) == 0x63C9);
  CHECK(c.sw(cmd(0x00, 0x2C, 0x00, 0x80, Bytes(8, 0x31))) == 0x6700);
  Bytes good = pin_block("87654321");
  append(good, pin_block("4321"));
  CHECK(c.sw(cmd(0x00, 0x2C, 0x00, 0x80, good)) == 0x9000);
  c.select();
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80)) == 0x63C3);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("4321"))) == 0x9000);
  for (int i = 9; i >= 0; --i) CHECK(c.sw(cmd(0x00, 0x2C, 0x00, 0x80, bad)) == 0x63C0 + i);
  CHECK(c.sw(cmd(0x00, 0x2C, 0x00, 0x80, good)) == 0x6985);  // blocked card
  auto fci = c.tx("00A4040006F04F5441430100");
  CHECK(field(fci.data, 0x6F, 0xA5).back() == 0x03);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("4321"))) == 0x6985);
}

TEST_CASE("ACTIVATE needs the verified PIN and well-formed data, answers the initialization message") {
  Card c;
  c.select();
  CHECK(c.sw(cmd(0x80, 0x10, 0x00, 0x00, activate_data(), true)) == 0x6985);  // no PIN set
  CHECK(c.sw(cmd(0x00, 0x24, 0x01, 0x80, pin_block("1234"))) == 0x9000);
  c.select();
  CHECK(c.sw(cmd(0x80, 0x10, 0x00, 0x00, activate_data(), true)) == 0x6982);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
  CHECK(c.sw(cmd(0x80, 0x10, 0x01, 0x00, activate_data(), true)) == 0x6A86);
  CHECK(c.sw(cmd(0x80, 0x10, 0x00, 0x00, activate_data(0x03), true)) == 0x6A80);
  CHECK(c.sw(cmd(0x80, 0x10, 0x00, 0x00, hex("DF410811223344"), true)) == 0x6A80);  // truncated TLV
  Bytes missing;
  put(missing, hex("DF41"), kN);
  CHECK(c.sw(cmd(0x80, 0x10, 0x00, 0x00, missing, true)) == 0x6A80);
  Bytes twice = activate_data();
  put(twice, hex("DF45"), hex("01"));
  CHECK(c.sw(cmd(0x80, 0x10, 0x00, 0x00, twice, true)) == 0x6A80);
  Bytes badnum;
  put(badnum, hex("DF41"), kN);
  put(badnum, hex("DF44"), kK);
  put(badnum, hex("DF45"), hex("01"));
  put(badnum, hex("DF46"), to_bytes("12a4"));
  put(badnum, hex("DF47"), pin_block("87654321"));
  CHECK(c.sw(cmd(0x80, 0x10, 0x00, 0x00, badnum, true)) == 0x6A80);
  auto r = c.tx(cmd(0x80, 0x10, 0x00, 0x00, activate_data(), true));
  REQUIRE(r.sw == 0x9000);
  CHECK(c.sw(cmd(0x80, 0x10, 0x00, 0x00, activate_data(), true)) == 0x6985);
  // The same message waits in the outbox; FETCH hands it out once.
  auto f = c.tx("8012000000");
  CHECK(f.sw == 0x9000);
  CHECK(f.data == r.data);
  CHECK(c.tx("8012000000").sw == 0x6A88);
  CHECK(c.tx("8012000001AA").sw == 0x6700);
}

TEST_CASE("the initialization message is a SEND SHORT MESSAGE with a CC-protected card request") {
  Card c;
  Bytes d0 = personalize(c);
  // D0 { 81 03 01 13 00, 82 02 81 83, 86 91 5155 1000, 8B SMS-SUBMIT } (protocol.md 2.4; address tag
  // with the comprehension-required bit, as common/envelope encodes it)
  REQUIRE(d0.size() > 20);
  CHECK(Bytes(d0.begin() + 2, d0.begin() + 18) == hex("810301130082028183 8605 9151551000"));
  auto parsed = applet::sms::parse_send_short_message(d0);
  REQUIRE(parsed.ok());
  // SMS-SUBMIT: 41 (UDHI, MTI 01), MR 00, DA 8 digits international 15550100, PID 7F, DCS F6.
  CHECK(Bytes(parsed->tpdu.begin(), parsed->tpdu.begin() + 10) == hex("4100 0891 51551000 7FF6"));
  auto submit = applet::sms::parse_submit(parsed->tpdu);
  REQUIRE(submit.ok());
  CHECK(submit->udh == hex("7000"));
  auto peek = ota::peek_command(submit->payload);
  REQUIRE(peek.ok());
  CHECK(peek->header.spi.encode() == 0x1200);
  CHECK(peek->header.kic == 0x00);
  CHECK(peek->header.kid == 0x15);
  CHECK(peek->counter == std::optional<std::uint64_t>(1));
  auto keys = test_keys();
  auto opened = ota::open_command(submit->payload, SecretBytes{}, keys.kid);
  REQUIRE(opened.ok());
  CHECK(opened->data == hex("F11C DF410811223344556677 88 C00101 DF42020000 DF48020000 DF490101"));
}

TEST_CASE("AUTHENTICATE: the cryptogram is ISO 9797-1 MAC alg 3 over the canonical input, the code burns") {
  Card c;
  personalize(c);
  c.select();
  Ch ch;
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true)) == 0x6A84);  // no list yet
  auto codes = test_codes(5);
  load_codes(c, 7, codes, 1);
  for (std::uint16_t i = 0; i < 3; ++i) {
    auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true));
    REQUIRE(r.sw == 0x9000);
    CHECK(field(r.data, 0x77, 0xDF41) == kN);
    CHECK(field(r.data, 0x77, 0xDF42) == hex("0007"));
    CHECK(field(r.data, 0x77, 0xDF43) == be_bytes(i, 2));
    CHECK(field(r.data, 0x77, 0x9F36) == be_bytes(i + 1u, 2));
    CHECK(field(r.data, 0x77, 0x9F26) == mac8(0x01, codes[i], ch.mac_input(7, i, static_cast<std::uint16_t>(i + 1))));
  }
  // Door mode covers the door id.
  Ch door;
  door.mode = 2;
  door.amount = hex("000000000000");
  door.door = "D-17";
  auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, door.encode(), true));
  REQUIRE(r.sw == 0x9000);
  CHECK(field(r.data, 0x77, 0x9F26) == mac8(0x01, codes[3], door.mac_input(7, 3, 4)));
}

TEST_CASE("AUTHENTICATE with an AES card uses AES-CMAC truncated to 8 bytes") {
  Card c;
  personalize(c, 0x02);
  c.select();
  auto codes = test_codes(2, 9);
  load_codes(c, 1, codes, 5, 0x01, 0x02);
  Ch ch;
  auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true));
  REQUIRE(r.sw == 0x9000);
  CHECK(field(r.data, 0x77, 0x9F26) == mac8(0x02, codes[0], ch.mac_input(1, 0, 1)));
}

TEST_CASE("AUTHENTICATE rejects malformed challenges without burning a code") {
  Card c;
  personalize(c);
  c.select();
  load_codes(c, 1, test_codes(3), 1);
  Ch ch;
  Bytes good = ch.encode();
  CHECK(c.sw(cmd(0x80, 0xA0, 0x02, 0x00, good, true)) == 0x6A86);
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x01, good, true)) == 0x6A86);
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, {}, true)) == 0x6A80);
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, Bytes(good.begin(), good.end() - 1), true)) == 0x6A80);
  Bytes dup = good;
  put(dup, hex("9F37"), hex("0102030405060708"));
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, dup, true)) == 0x6A80);
  Bytes unknown = good;
  put(unknown, hex("DF60"), hex("00"));
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, unknown, true)) == 0x6A80);
  Ch shortun;
  shortun.un = hex("01020304");
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, shortun.encode(), true)) == 0x6A80);
  Ch badbcd;
  badbcd.amount = hex("00000000123A");
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, badbcd.encode(), true)) == 0x6A80);
  Ch nodoor;
  nodoor.mode = 2;
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, nodoor.encode(), true)) == 0x6A80);
  Ch doorpos;
  doorpos.door = "D1";
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, doorpos.encode(), true)) == 0x6A80);
  Bytes noversion;
  {
    auto nodes = tlv::parse(good).value();
    for (const auto& n : nodes)
      if (n.tag != 0xDF33) tlv::append(noversion, n.tag, n.value);
  }
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, noversion, true)) == 0x6A80);
  CHECK(c.sw(cmd(0x80, 0xA0, 0x01, 0x00, good, true)) == 0x6A80);  // indexed TAN without DF43
  // Nothing burned: the next good challenge uses index 0 and ATC 1.
  auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, good, true));
  REQUIRE(r.sw == 0x9000);
  CHECK(field(r.data, 0x77, 0xDF43) == hex("0000"));
  CHECK(field(r.data, 0x77, 0x9F36) == hex("0001"));
}

TEST_CASE("indexed TAN (P1=01) uses the given code once, exhausted lists answer 6A84") {
  Card c;
  personalize(c);
  c.select();
  auto codes = test_codes(3);
  load_codes(c, 4, codes, 1);
  Ch ch;
  ch.extra = hex("DF43020002");
  auto r = c.tx(cmd(0x80, 0xA0, 0x01, 0x00, ch.encode(), true));
  REQUIRE(r.sw == 0x9000);
  CHECK(field(r.data, 0x77, 0xDF43) == hex("0002"));
  CHECK(field(r.data, 0x77, 0x9F26) == mac8(0x01, codes[2], ch.mac_input(4, 2, 1)));
  CHECK(c.sw(cmd(0x80, 0xA0, 0x01, 0x00, ch.encode(), true)) == 0x6A83);  // used
  Ch out;
  out.extra = hex("DF43020003");
  CHECK(c.sw(cmd(0x80, 0xA0, 0x01, 0x00, out.encode(), true)) == 0x6A83);  // out of range
  Ch other;
  other.extra = hex("DF42020005 DF43020000");
  CHECK(c.sw(cmd(0x80, 0xA0, 0x01, 0x00, other.encode(), true)) == 0x6A83);  // no such list
  Ch plain;
  CHECK(field(c.tx(cmd(0x80, 0xA0, 0x00, 0x00, plain.encode(), true)).data, 0x77, 0xDF43) == hex("0000"));
  CHECK(field(c.tx(cmd(0x80, 0xA0, 0x00, 0x00, plain.encode(), true)).data, 0x77, 0xDF43) == hex("0001"));
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, plain.encode(), true)) == 0x6A84);
}

TEST_CASE("PIN policy: high amounts and chosen doors need the PIN, nothing burns without it") {
  Card c;
  Bytes policy;
  put(policy, hex("DF4E"), hex("000000010000"));  // 100.00
  put(policy, hex("DF4F"), to_bytes("VAULT"));
  personalize(c, 0x01, policy);
  c.select();
  load_codes(c, 1, test_codes(4), 1);
  Ch high;
  high.amount = hex("000000010001");
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, high.encode(), true)) == 0x6982);
  Ch wrong = high;
  put(wrong.extra, hex("DF34"), pin_block("9999"));
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, wrong.encode(), true)) == 0x63C2);
  Ch right = high;
  put(right.extra, hex("DF34"), pin_block("1234"));
  auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, right.encode(), true));
  REQUIRE(r.sw == 0x9000);
  CHECK(field(r.data, 0x77, 0xDF43) == hex("0000"));  // the refused attempts burned nothing
  Ch low;
  low.amount = hex("000000010000");
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, low.encode(), true)) == 0x9000);
  Ch vault;
  vault.mode = 2;
  vault.door = "VAULT";
  vault.amount = hex("000000000000");
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, vault.encode(), true)) == 0x6982);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, vault.encode(), true)) == 0x9000);
}

TEST_CASE("PIN state DF35 (tries, verified, wrong PIN this session, blocked) is under the MAC") {
  Card c;
  Bytes policy;
  put(policy, hex("DF4E"), hex("000000010000"));  // PIN above 100.00
  personalize(c, 0x01, policy);
  c.select();
  const auto codes = test_codes(6);
  load_codes(c, 1, codes, 1);
  Ch low;  // 12.34: below the PIN limit
  std::uint16_t atc = 0;
  auto tap = [&](const Ch& ch, std::uint8_t expect_state) {
    auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true));
    REQUIRE(r.sw == 0x9000);
    ++atc;
    CHECK(field(r.data, 0x77, 0xDF35) == Bytes{expect_state});
    CHECK(field(r.data, 0x77, 0x9F26) == mac8(0x01, codes[atc - 1u], ch.mac_input(1, static_cast<std::uint16_t>(atc - 1), atc, expect_state)));
  };
  tap(low, 0x03);  // three tries, no PIN
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000"))) == 0x63C2);
  tap(low, 0x42);  // a wrong PIN this session, two tries left
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
  tap(low, 0x53);  // verified now (tries back to three), the wrong one still remembered
  c.select();
  for (int i = 0; i < 3; ++i) c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000")));
  tap(low, 0x60);  // blocked: still a cryptogram below the limit, marked for the issuer
  c.select();
  tap(low, 0x20);
  // Above the PIN limit a blocked PIN is refused at once; nothing burns.
  Ch high;
  high.amount = hex("000000010001");
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, high.encode(), true)) == 0x6983);
  // A version 01 challenge is refused.
  Bytes data = low.encode();
  const Bytes v2 = hex("DF330102");
  const auto at = std::search(data.begin(), data.end(), v2.begin(), v2.end());
  REQUIRE(at != data.end());
  at[3] = 0x01;
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, data, true)) == 0x6A80);
  CHECK(field(c.tx("80A6000000").data, 0xE0, 0xDF48) == hex("0001"));
}

TEST_CASE("CONFIRM checks the ARPC over the last cryptogram and ARC") {
  Card c;
  personalize(c);
  c.select();
  auto codes = test_codes(3);
  load_codes(c, 2, codes, 1);
  CHECK(c.sw(cmd(0x80, 0xA2, 0x00, 0x00, Bytes(10, 0))) == 0x6985);  // no transaction
  Ch ch;
  auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true));
  REQUIRE(r.sw == 0x9000);
  Bytes arc = to_bytes("00");
  Bytes in = to_bytes("ARPC");
  append(in, field(r.data, 0x77, 0x9F26));
  append(in, arc);
  Bytes arpc = mac8(0x01, codes[0], in);
  CHECK(c.sw(cmd(0x80, 0xA2, 0x00, 0x00, Bytes(9, 0))) == 0x6700);
  CHECK(c.sw(cmd(0x80, 0xA2, 0x01, 0x00, arpc)) == 0x6A86);
  Bytes data = arpc;
  append(data, arc);
  CHECK(c.sw(cmd(0x80, 0xA2, 0x00, 0x00, data)) == 0x9000);
  CHECK(c.sw(cmd(0x80, 0xA2, 0x00, 0x00, data)) == 0x6985);  // one confirmation per transaction
  // A wrong ARPC (or an ARC swapped after the MAC) is refused.
  r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true));
  Bytes in2 = to_bytes("ARPC");
  append(in2, field(r.data, 0x77, 0x9F26));
  append(in2, to_bytes("05"));
  Bytes swapped = mac8(0x01, codes[1], in2);
  append(swapped, to_bytes("00"));
  CHECK(c.sw(cmd(0x80, 0xA2, 0x00, 0x00, swapped)) == 0x6300);
  // A new SELECT forgets the transaction.
  r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true));
  c.select();
  CHECK(c.sw(cmd(0x80, 0xA2, 0x00, 0x00, data)) == 0x6985);
}

TEST_CASE("DISPLAY CODE needs the PIN and derives 8 digits from the next code") {
  Card c;
  personalize(c);
  c.select();
  auto codes = test_codes(2);
  load_codes(c, 3, codes, 1);
  CHECK(c.sw(hex("80A4000000")) == 0x6982);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
  CHECK(c.sw(hex("80A40000 01 00 00")) == 0x6700);
  CHECK(c.sw(hex("80A4010000")) == 0x6A86);
  auto r = c.tx("80A4000000");
  REQUIRE(r.sw == 0x9000);
  Bytes in = to_bytes("DISPLAY");
  append(in, kN);
  append(in, hex("0003 0000"));
  Bytes m = mac8(0x01, codes[0], in);
  const std::uint32_t v = (std::uint32_t{m[0]} << 24 | std::uint32_t{m[1]} << 16 | std::uint32_t{m[2]} << 8 | m[3]) & 0x7FFFFFFF;
  char digits[16];
  std::snprintf(digits, sizeof digits, "%08u", v % 100000000u);
  Bytes expect;
  put(expect, hex("DF42"), hex("0003"));
  put(expect, hex("DF43"), hex("0000"));
  put(expect, hex("DF4D"), to_bytes(digits));
  CHECK(r.data == expect);
  CHECK(c.tx("80A4000000").sw == 0x9000);
  CHECK(c.tx("80A4000000").sw == 0x6A84);
}

TEST_CASE("GET STATUS reports codes, lists, counter, key version and refresh state") {
  Card c;
  c.select();
  auto blank = c.tx("80A6000000");
  REQUIRE(blank.sw == 0x9000);
  CHECK(field(blank.data, 0xE0, 0xDF48) == hex("0000"));
  CHECK(c.sw(hex("80A6010000")) == 0x6A86);
  personalize(c);
  c.select();
  load_codes(c, 9, test_codes(4), 1);
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true)) == 0x9000);
  auto s = c.tx("80A6000000");
  REQUIRE(s.sw == 0x9000);
  CHECK(s.data == hex("E0 2B DF410811223344556677 88 DF42020009 DF48020003 9F36020001 DF490101 DF4A0101 DF4B020014 DF4C0101"));
}

TEST_CASE("REQUEST REFRESH and the threshold queue card requests, the outbox is bounded") {
  Card c;
  Bytes thr;
  put(thr, hex("DF4B"), hex("0002"));
  personalize(c, 0x01, thr);
  c.select();
  CHECK(c.tx("8012000000").sw == 0x9000);  // the initialization message
  CHECK(c.sw(hex("80A80000")) == 0x6982);
  load_codes(c, 1, test_codes(4), 1);
  CHECK(c.tx("8012000000").sw == 0x6A88);
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true)) == 0x9000);  // 3 left
  CHECK(c.tx("8012000000").sw == 0x6A88);
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true)) == 0x9000);  // 2 left: threshold
  auto f = c.tx("8012000000");
  REQUIRE(f.sw == 0x9000);
  auto submit = applet::sms::parse_submit(applet::sms::parse_send_short_message(f.data)->tpdu).value();
  auto opened = ota::open_command(submit.payload, SecretBytes{}, test_keys().kid).value();
  CHECK(opened.counter == 2);
  CHECK(opened.data == hex("F11C DF410811223344556677 88 C00102 DF42020001 DF48020002 DF490101"));
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true)) == 0x9000);  // asked once only
  CHECK(c.tx("8012000000").sw == 0x6A88);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
  for (int i = 0; i < 6; ++i) CHECK(c.sw(hex("80A80000")) == 0x9000);
  std::uint64_t last = 0;
  int fetched = 0;
  for (; fetched < 10; ++fetched) {
    auto m = c.tx("8012000000");
    if (m.sw != 0x9000) break;
    auto sub = applet::sms::parse_submit(applet::sms::parse_send_short_message(m.data)->tpdu).value();
    last = ota::peek_command(sub.payload)->counter.value();
  }
  CHECK(fetched == 4);  // max_outbox: the oldest were dropped
  CHECK(last == 8);
}

TEST_CASE("a failed commit answers 6F00 and changes nothing") {
  Card c;
  personalize(c);
  c.select();
  auto codes = test_codes(3);
  load_codes(c, 1, codes, 1);
  c.store.fail_next(1);
  CHECK(c.sw(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true)) == 0x6F00);
  auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true));
  CHECK(field(r.data, 0x77, 0xDF43) == hex("0000"));
  CHECK(field(r.data, 0x77, 0x9F36) == hex("0001"));
  c.store.fail_next(1);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("0000"))) == 0x6F00);
  CHECK(c.sw(cmd(0x00, 0x20, 0x00, 0x80)) == 0x63C3);
}

TEST_CASE("GENERATE KEY PAIR: P-256 and RSA-2048, PIN needed, public key exported as SPKI") {
  Card c;
  c.select();
  CHECK(c.sw(hex("8046020000")) == 0x6985);  // blank card
  REQUIRE(c.sw(cmd(0x00, 0x24, 0x01, 0x80, pin_block("1234"))) == 0x9000);
  c.select();
  CHECK(c.sw(hex("8046020000")) == 0x6982);
  REQUIRE(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
  CHECK(c.sw(hex("8046030000")) == 0x6A86);
  CHECK(c.sw(hex("8046020100")) == 0x6A86);
  CHECK(c.sw(hex("80460200 01 00 00")) == 0x6700);
  for (std::uint8_t p1 : {std::uint8_t{0x02}, std::uint8_t{0x01}}) {
    auto r = c.tx(cmd(0x80, 0x46, p1, 0x00, {}, true));
    REQUIRE(r.sw == 0x9000);
    auto nodes = tlv::parse(r.data).value();
    REQUIRE(tlv::find(nodes, 0xDF41) != nullptr);
    const tlv::Node* spki = tlv::find(nodes, 0xDF50);
    REQUIRE(spki != nullptr);
    auto pub = crypto::public_key_from_der(spki->value);
    REQUIRE(pub.ok());
    if (p1 == 0x02) CHECK(crypto::ec_public_point(*pub).ok());
    else CHECK(crypto::rsa_oaep_encrypt(*pub, Bytes(16, 1)).ok());
  }
}
