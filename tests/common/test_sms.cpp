#include <catch2/catch.hpp>

#include <chrono>
#include <sstream>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/sms.hpp"
#include "test_support.hpp"

using namespace otac;
using namespace otac::sms;

namespace {

using Clock = Reassembler::Clock;

std::uint8_t byte_of(const std::string& s) { return hex(s).at(0); }
bool bit_of(const test::Vector& v, const std::string& k) { return v.at(k) == "1"; }

Address address_of(const std::string& s) {
  const auto colon = s.find(':');
  REQUIRE(colon != std::string::npos);
  return Address{s.substr(colon + 1), byte_of(s.substr(0, colon))};
}

// "70:,00:010201" -> elements.
std::vector<UdhElement> udh_of(const std::string& s) {
  std::vector<UdhElement> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto colon = item.find(':');
    REQUIRE(colon != std::string::npos);
    out.push_back({byte_of(item.substr(0, colon)), hex(item.substr(colon + 1))});
  }
  return out;
}

Timestamp scts_of(const std::string& s) {
  std::stringstream ss(s);
  int y, mo, d, h, mi, se, tz;
  ss >> y >> mo >> d >> h >> mi >> se >> tz;
  REQUIRE(ss);
  auto u = [](int x) { return static_cast<std::uint8_t>(x); };
  return Timestamp{u(y), u(mo), u(d), u(h), u(mi), u(se), tz};
}

Errc errc_of(const std::string& s) {
  for (auto e : {Errc::truncated, Errc::trailing_data, Errc::bad_length, Errc::bad_value, Errc::unsupported,
                 Errc::conflict})
    if (s == errc_name(e)) return e;
  FAIL("unknown errc " << s);
  return Errc::internal;
}

std::string text_of(const Bytes& ud, std::uint8_t dcs) {
  auto a = alphabet(dcs);
  REQUIRE(a);
  if (*a == Alphabet::gsm7) return gsm7_to_utf8(ud);
  return std::string(ud.begin(), ud.end());
}

Deliver sample_deliver() {
  Deliver d;
  d.originator = {"4912345678", 0x91};
  d.scts = {26, 11, 22, 19, 5, 30, 4};
  d.udh = {{iei_command_packet, {}}};
  d.user_data = hex("00201506193535b00011ae733256918d050b87c94fbfe12e4dc402f262c41cf67f2f");
  return d;
}

}  // namespace

TEST_CASE("sms: published SMS-DELIVER TPDUs decode field by field and re-encode byte for byte", "[sms][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("sms_tpdu.vec")) {
    if (v.section != "deliver") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes tpdu = hex(v.at("tpdu"));
    auto d = parse_deliver(tpdu);
    REQUIRE(d);
    CHECK(d->more_messages == !bit_of(v, "mms"));
    CHECK(d->loop_prevention == bit_of(v, "lp"));
    CHECK(d->reply_path == bit_of(v, "rp"));
    CHECK(d->status_report_indication == bit_of(v, "sri"));
    CHECK(!d->udh.empty() == bit_of(v, "udhi"));
    CHECK(d->originator == address_of(v.at("oa")));
    CHECK(d->pid == byte_of(v.at("pid")));
    CHECK(d->dcs == byte_of(v.at("dcs")));
    CHECK(d->scts == scts_of(v.at("scts")));
    if (v.has("udh")) CHECK(d->udh == udh_of(v.at("udh")));
    if (v.has("ud")) CHECK(to_hex(d->user_data) == v.at("ud"));
    if (v.has("text")) CHECK(text_of(d->user_data, d->dcs) == v.at("text"));
    auto again = encode(*d);
    REQUIRE(again);
    if (v.has("reencode")) {
      // The source's bytes differ from TS 23.040's strict form; ours must still mean the same.
      auto re = parse_deliver(*again);
      REQUIRE(re);
      CHECK(*re == *d);
      CHECK(to_hex(*again) == v.at("reencode"));
    } else {
      CHECK(to_hex(*again) == to_hex(tpdu));
    }
  }
  CHECK(n == 4);
}

TEST_CASE("sms: published SMS-SUBMIT TPDUs decode field by field and re-encode byte for byte", "[sms][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("sms_tpdu.vec")) {
    if (v.section != "submit") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes tpdu = hex(v.at("tpdu"));
    auto s = parse_submit(tpdu);
    REQUIRE(s);
    CHECK(s->reject_duplicates == bit_of(v, "rd"));
    CHECK(s->reply_path == bit_of(v, "rp"));
    CHECK(s->status_report_request == bit_of(v, "srr"));
    CHECK(!s->udh.empty() == bit_of(v, "udhi"));
    CHECK(s->mr == byte_of(v.at("mr")));
    CHECK(s->destination == address_of(v.at("da")));
    CHECK(s->pid == byte_of(v.at("pid")));
    CHECK(s->dcs == byte_of(v.at("dcs")));
    const std::string vpf = v.at("vpf");
    const VpFormat want = vpf == "relative" ? VpFormat::relative
                          : vpf == "absolute" ? VpFormat::absolute
                          : vpf == "enhanced" ? VpFormat::enhanced
                                              : VpFormat::none;
    CHECK(s->vp.format == want);
    CHECK(to_hex(s->vp.value) == v.at("vp"));
    if (v.has("udh")) CHECK(s->udh == udh_of(v.at("udh")));
    if (v.has("ud")) CHECK(to_hex(s->user_data) == v.at("ud"));
    if (v.has("text")) CHECK(text_of(s->user_data, s->dcs) == v.at("text"));
    auto again = encode(*s);
    REQUIRE(again);
    CHECK(to_hex(*again) == to_hex(tpdu));
  }
  CHECK(n == 5);
}

TEST_CASE("sms: published malformed TPDUs are refused with the specific error", "[sms][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("sms_tpdu.vec")) {
    if (v.section != "reject") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes tpdu = hex(v.at("tpdu"));
    const Errc want = errc_of(v.at("errc"));
    if (v.at("kind") == "deliver") {
      auto d = parse_deliver(tpdu);
      REQUIRE_FALSE(d);
      CHECK(d.error().code == want);
      CHECK_FALSE(d.error().message.empty());
    } else {
      auto s = parse_submit(tpdu);
      REQUIRE_FALSE(s);
      CHECK(s.error().code == want);
    }
  }
  CHECK(n == 4);
}

TEST_CASE("sms: TS 23.040 address fields from pySim", "[sms][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("sms_tpdu.vec")) {
    if (v.section != "address") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes field = hex(v.at("field"));
    std::size_t used = 0;
    auto a = parse_address(field, used);
    REQUIRE(a);
    CHECK(a->toa == byte_of(v.at("toa")));
    CHECK(a->digits == v.at("digits"));
    CHECK(used == std::stoul(v.at("consumed")));
    auto again = encode_address(*a);
    REQUIRE(again);
    CHECK(to_hex(*again) == to_hex(ByteView(field).first(used)));
  }
  CHECK(n == 3);
}

TEST_CASE("sms: TS 24.008 BCD address (ENVELOPE tag 06)", "[sms][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("sms_tpdu.vec")) {
    if (v.section != "bcd") continue;
    ++n;
    auto a = parse_address_bcd(hex(v.at("value")));
    REQUIRE(a);
    CHECK(a->toa == byte_of(v.at("toa")));
    CHECK(a->digits == v.at("digits"));
    auto again = encode_address_bcd(*a);
    REQUIRE(again);
    CHECK(to_hex(*again) == v.at("value"));
  }
  CHECK(n == 1);

  SECTION("even digit count has no filler, * # a b c map to A-E") {
    auto a = parse_address_bcd(hex("81 21 43 ba dc fe"));
    // digits: 1 2 3 4 * # a b c then F filler
    REQUIRE(a);
    CHECK(a->digits == "1234*#abc");
    auto e = encode_address_bcd(*a);
    REQUIRE(e);
    CHECK(to_hex(*e) == "812143badcfe");
  }
  SECTION("rejections") {
    CHECK(parse_address_bcd({}).error().code == Errc::truncated);
    CHECK(parse_address_bcd(hex("91 1f")).error().code == Errc::bad_value);  // filler before a digit
    CHECK(parse_address_bcd(hex("91 11 22 33 44 55 66 77 88 99 00 11")).error().code == Errc::bad_length);
    CHECK(parse_address_bcd(hex("d0 41")).error().code == Errc::unsupported);  // alphanumeric TON
    CHECK(encode_address_bcd({"12x", 0x91}).error().code == Errc::bad_value);
    CHECK(encode_address_bcd({std::string(21, '1'), 0x91}).error().code == Errc::bad_length);
  }
}

TEST_CASE("sms: address field rejections", "[sms]") {
  std::size_t used = 0;
  CHECK(parse_address(hex("04"), used).error().code == Errc::truncated);
  CHECK(parse_address(hex("0491 21"), used).error().code == Errc::truncated);
  CHECK(parse_address(hex("0391 2143"), used).error().code == Errc::bad_value);  // odd: last must be F
  CHECK(parse_address(hex("0491 21f3"), used).error().code == Errc::bad_value);  // F inside
  CHECK(parse_address(hex("1591 1111111111111111111111"), used).error().code == Errc::bad_length);
  CHECK(encode_address({"+49", 0x91}).error().code == Errc::bad_value);
}

TEST_CASE("sms: alphanumeric addresses round-trip through GSM 7-bit", "[sms]") {
  for (const std::string text : {"OTAC", "Bank", "A", "ABCDEFGHIJK"}) {
    INFO(text);
    Address a{text, 0xD0};
    auto enc = encode_address(a);
    REQUIRE(enc);
    std::size_t used = 0;
    auto back = parse_address(*enc, used);
    REQUIRE(back);
    CHECK(back->digits == text);
    CHECK(used == enc->size());
  }
  CHECK(encode_address({"ABCDEFGHIJKL", 0xD0}).error().code == Errc::bad_length);
}

TEST_CASE("sms: GSM 7-bit default alphabet", "[sms]") {
  SECTION("TS 23.038 packing example: 'hellohello' packs to E8 32 9B FD 46 97 D9 EC 37") {
    // The classic example from TS 23.038 6.1.2.1.1 / GSM 03.38 annex.
    auto s = utf8_to_gsm7("hellohello");
    REQUIRE(s);
    CHECK(to_hex(pack_septets(*s)) == "e8329bfd4697d9ec37");
    auto u = unpack_septets(hex("e8329bfd4697d9ec37"), 10);
    REQUIRE(u);
    CHECK(gsm7_to_utf8(*u) == "hellohello");
  }
  SECTION("specials, extension table and escapes") {
    auto s = utf8_to_gsm7("@£$¥ΔΩ€[]{}|^~\\ÄÖÑÜ§¿äöñüà");
    REQUIRE(s);
    CHECK(gsm7_to_utf8(*s) == "@£$¥ΔΩ€[]{}|^~\\ÄÖÑÜ§¿äöñüà");
    CHECK(s->at(0) == 0x00);
    CHECK(s->at(6) == 0x1B);
    CHECK(s->at(7) == 0x65);  // € is 1B 65
    CHECK(gsm7_to_utf8(hex("1b41")) == "A");  // unknown escape: the basic character
    CHECK(gsm7_to_utf8(hex("411b")) == "A ");  // lone escape at the end: a space
    CHECK(utf8_to_gsm7("日本").error().code == Errc::bad_value);
  }
  SECTION("fill bits after a header") {
    const Bytes sept = {0x41, 0x42, 0x43};
    for (unsigned fill = 0; fill < 7; ++fill) {
      auto packed = pack_septets(sept, fill);
      auto back = unpack_septets(packed, 3, fill);
      REQUIRE(back);
      CHECK(*back == sept);
    }
    CHECK(unpack_septets(hex("e832"), 3).error().code == Errc::truncated);
  }
}

TEST_CASE("sms: DCS alphabets (TS 23.038 clause 4)", "[sms]") {
  CHECK(*alphabet(0x00) == Alphabet::gsm7);
  CHECK(*alphabet(0x04) == Alphabet::eight_bit);
  CHECK(*alphabet(0x08) == Alphabet::ucs2);
  CHECK(*alphabet(0x16) == Alphabet::eight_bit);
  CHECK(*alphabet(0xF0) == Alphabet::gsm7);
  CHECK(*alphabet(0xF5) == Alphabet::eight_bit);
  CHECK(*alphabet(0xF6) == Alphabet::eight_bit);
  CHECK(*alphabet(0xE0) == Alphabet::ucs2);
  CHECK(*alphabet(0x80) == Alphabet::gsm7);  // reserved group: assume 7-bit
  CHECK(alphabet(0x24).error().code == Errc::unsupported);  // compressed
}

TEST_CASE("sms: 140-octet user-data limit exactly", "[sms]") {
  Deliver d = sample_deliver();
  d.udh = {{iei_command_packet, {}}};
  d.user_data.assign(137, 0xAB);  // 1 UDHL + 2 UDH + 137 = 140
  auto ok = encode(d);
  REQUIRE(ok);
  auto back = parse_deliver(*ok);
  REQUIRE(back);
  CHECK(back->user_data.size() == 137);

  d.user_data.push_back(0xAB);  // 141
  CHECK(encode(d).error().code == Errc::bad_length);

  d.udh.clear();
  d.user_data.assign(140, 0x01);
  CHECK(encode(d));
  d.user_data.push_back(0x01);
  CHECK(encode(d).error().code == Errc::bad_length);

  SECTION("7-bit: 160 septets, with a header the header's septets count") {
    Submit s;
    s.destination = {"123", 0x91};
    s.dcs = 0x00;
    s.user_data.assign(160, 0x41);
    auto e = encode(s);
    REQUIRE(e);
    auto p = parse_submit(*e);
    REQUIRE(p);
    CHECK(p->user_data == s.user_data);
    s.user_data.push_back(0x41);
    CHECK(encode(s).error().code == Errc::bad_length);
    // UDH 00 03 01 02 01 = 6 octets with UDHL = 48 bits -> 7 septets; 153 remain.
    s.udh = {{iei_concat_8bit, {1, 2, 1}}};
    s.user_data.assign(153, 0x42);
    auto h = encode(s);
    REQUIRE(h);
    auto ph = parse_submit(*h);
    REQUIRE(ph);
    CHECK(ph->udh == s.udh);
    CHECK(ph->user_data == s.user_data);
    s.user_data.push_back(0x42);
    CHECK(encode(s).error().code == Errc::bad_length);
    s.user_data.resize(10);
    s.user_data.back() = 0x80;
    CHECK(encode(s).error().code == Errc::bad_value);  // not a septet
  }
}

TEST_CASE("sms: 7-bit user data after a UDH uses fill bits (TS 23.040 9.2.3.24)", "[sms]") {
  // UDH 05 00 03 AB 02 01 (6 octets = 48 bits) leaves 1 fill bit before the first septet.
  Submit s;
  s.destination = {"12", 0x91};
  s.dcs = 0x00;
  s.udh = {{iei_concat_8bit, {0xAB, 2, 1}}};
  auto text = utf8_to_gsm7("Hi");
  REQUIRE(text);
  s.user_data = *text;
  auto e = encode(s);
  REQUIRE(e);
  // By hand: first octet 41 (SUBMIT, UDHI), MR 00, DA 02 91 21, PID 7F, DCS 00, UDL 9
  // (7 header septets + 2), UDH, then 'H' (48) after one fill bit = 90, then 'i' = 69.
  CHECK(to_hex(*e) == "41000291217f0009050003ab02019069");
  auto p = parse_submit(*e);
  REQUIRE(p);
  CHECK(gsm7_to_utf8(p->user_data) == "Hi");
}

TEST_CASE("sms: TPDU rejections: truncated, trailing, wrong lengths", "[sms]") {
  auto good = encode(sample_deliver());
  REQUIRE(good);
  SECTION("every truncation is refused as truncated") {
    for (std::size_t len = 0; len < good->size(); ++len) {
      INFO(len);
      auto r = parse_deliver(ByteView(*good).first(len));
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Errc::truncated);
    }
  }
  SECTION("trailing garbage") {
    Bytes more = *good;
    more.push_back(0x00);
    CHECK(parse_deliver(more).error().code == Errc::trailing_data);
  }
  SECTION("UDL over 140 octets") {
    Bytes b = hex("04049121437f16891010000000008d");
    b.resize(b.size() + 141, 0x00);
    CHECK(parse_deliver(b).error().code == Errc::bad_length);
  }
  SECTION("UDHL larger than the user data") {
    CHECK(parse_deliver(hex("44049121437ff689101000000000030570000000")).error().code == Errc::bad_length);
  }
  SECTION("UDH element overrunning the header") {
    CHECK(parse_deliver(hex("44049121437ff68910100000000004037005ff00")).error().code == Errc::truncated);
  }
  SECTION("UDHI with UDL 0") {
    CHECK(parse_deliver(hex("44049121437ff68910100000000000")).error().code == Errc::bad_length);
  }
  SECTION("SCTS with a non-decimal digit or month 13") {
    CHECK(parse_deliver(hex("04049121437ff6" "8a101000000000" "00")).error().code == Errc::bad_value);
    CHECK(parse_deliver(hex("04049121437ff6" "89311000000000" "00")).error().code == Errc::bad_value);
  }
  SECTION("compressed DCS") {
    CHECK(parse_deliver(hex("04049121437f24891010000000000100")).error().code == Errc::unsupported);
  }
  SECTION("SUBMIT VP formats have their sizes") {
    Submit s;
    s.destination = {"1", 0x91};
    s.vp = {VpFormat::relative, {}};
    CHECK(encode(s).error().code == Errc::bad_length);
    s.vp = {VpFormat::absolute, hex("22705200000000")};
    auto e = encode(s);
    REQUIRE(e);
    auto p = parse_submit(*e);
    REQUIRE(p);
    CHECK(p->vp == s.vp);
    s.vp = {VpFormat::enhanced, hex("01020304050607")};
    e = encode(s);
    REQUIRE(e);
    CHECK(parse_submit(*e)->vp == s.vp);
    // absolute VP cut short
    CHECK(parse_submit(ByteView(*e).first(e->size() - 3)).error().code == Errc::truncated);
  }
}

TEST_CASE("sms: timestamps with negative time zones (TS 23.040 9.2.3.11)", "[sms]") {
  // -5 hours = -20 quarters: tz octet digits "20" swapped = 02, sign bit 3 set = 0A.
  auto t = parse_timestamp(hex("2270520000000a"));
  REQUIRE(t);
  CHECK(t->tz_quarters == -20);
  CHECK(to_hex(encode_timestamp(*t)) == "2270520000000a");
  CHECK(parse_timestamp(hex("227052000000")).error().code == Errc::truncated);
}

TEST_CASE("sms: split for concatenation (docs/protocol.md section 7)", "[sms]") {
  SECTION("fits one SMS: only the packet IEI") {
    Bytes p(137, 0x11);
    auto parts = split_concatenated(p, iei_command_packet, 7);
    REQUIRE(parts);
    REQUIRE(parts->size() == 1);
    CHECK((*parts)[0].udh == std::vector<UdhElement>{{0x70, {}}});
    CHECK((*parts)[0].data == p);
  }
  SECTION("138 octets need two parts; concatenation element first, 70 in part 1 only") {
    Bytes p(138);
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::uint8_t>(i);
    auto parts = split_concatenated(p, iei_command_packet, 0x2A);
    REQUIRE(parts);
    REQUIRE(parts->size() == 2);
    const std::vector<UdhElement> first{{0x00, {0x2A, 2, 1}}, {0x70, {}}};
    const std::vector<UdhElement> second{{0x00, {0x2A, 2, 2}}};
    CHECK((*parts)[0].udh == first);
    CHECK((*parts)[1].udh == second);
    CHECK((*parts)[0].data.size() == 132);  // 140 - UDHL - 5 - 2
    CHECK((*parts)[1].data.size() == 6);
    // The first part's UDH matches the one pySim records from a sysmoISIM-SJA5 for a
    // two-part PoR (07 00 03 01 02 01 71 00), with 70 for 71 and our reference.
    auto udh = encode_udh((*parts)[0].udh);
    REQUIRE(udh);
    CHECK(to_hex(*udh) == "00032a02017000");
    // Every part fits an SMS exactly.
    for (const auto& part : *parts) {
      Deliver d = sample_deliver();
      d.udh = part.udh;
      d.user_data = part.data;
      CHECK(encode(d));
    }
  }
  SECTION("a full part uses the 140 octets exactly") {
    Bytes p(132 + 134 * 2, 0x5A);
    auto parts = split_concatenated(p, iei_response_packet, 1);
    REQUIRE(parts);
    REQUIRE(parts->size() == 3);
    for (const auto& part : *parts) {
      auto h = encode_udh(part.udh);
      REQUIRE(h);
      CHECK(1 + h->size() + part.data.size() == max_user_data);
    }
  }
  SECTION("no packet IEI: plain 8-bit data") {
    auto parts = split_concatenated(Bytes(140, 1), std::nullopt, 1);
    REQUIRE(parts);
    CHECK(parts->size() == 1);
    CHECK((*parts)[0].udh.empty());
    parts = split_concatenated(Bytes(141, 1), std::nullopt, 1);
    REQUIRE(parts);
    CHECK(parts->size() == 2);
    CHECK((*parts)[0].data.size() == 134);
  }
  SECTION("more than 255 parts is refused") {
    CHECK(split_concatenated(Bytes(132 + 134 * 254 + 1, 0), iei_command_packet, 1).error().code == Errc::bad_length);
    CHECK(split_concatenated(Bytes(132 + 134 * 254, 0), iei_command_packet, 1));
  }
}

TEST_CASE("sms: pySim's UDHs observed from a sysmoISIM-SJA5 (test_sms.py ground truth)", "[sms][kat]") {
  // pySim tests/unittests/test_sms.py, Test_ConcatenatedSmsReassembler: part 1 of a two-part
  // PoR from a sysmoISIM-SJA5 carries UDH 07 | 00 03 01 02 01 | 71 00; the 16-bit form
  // 08 | 08 04 12 34 02 01 | 71 00 (TS 23.040 9.2.3.24.8).
  auto split = split_concatenated(Bytes(138, 0x00), iei_response_packet, 1);
  REQUIRE(split);
  auto udh = encode_udh((*split)[0].udh);
  REQUIRE(udh);
  CHECK("07" + to_hex(*udh) == "0700030102017100");

  auto wide = parse_udh(hex("0804123402017100"));
  REQUIRE(wide);
  REQUIRE(wide->size() == 2);
  Reassembler r;
  const auto t = Clock::time_point{};
  REQUIRE(r.add("sja5", *wide, hex("0102"), t));
  auto done = r.add("sja5", {{0x08, hex("12340202")}}, hex("03"), t);
  REQUIRE(done);
  REQUIRE(done->has_value());
  CHECK((*done)->data == hex("010203"));
  CHECK((*done)->udh == std::vector<UdhElement>{{0x71, {}}});
}

TEST_CASE("sms: reassembly (pySim ConcatenatedSmsReassembler cases and our bounds)", "[sms]") {
  const auto t0 = Clock::time_point{} + std::chrono::hours(1);
  const std::vector<UdhElement> ota{{0x71, {}}};
  auto c8 = [](std::uint8_t ref, std::uint8_t tot, std::uint8_t seq) { return UdhElement{0x00, {ref, tot, seq}}; };
  auto c16 = [](std::uint16_t ref, std::uint8_t tot, std::uint8_t seq) {
    return UdhElement{0x08, {static_cast<std::uint8_t>(ref >> 8), static_cast<std::uint8_t>(ref), tot, seq}};
  };
  Bytes pkt(60);
  for (std::size_t i = 0; i < pkt.size(); ++i) pkt[i] = static_cast<std::uint8_t>(i);
  const ByteView head = ByteView(pkt).first(35), tail = ByteView(pkt).subspan(35);

  SECTION("single part passes through") {
    Reassembler r;
    auto m = r.add("+1", ota, head, t0);
    REQUIRE(m);
    REQUIRE(m->has_value());
    CHECK((*m)->udh == ota);
    CHECK((*m)->data == Bytes(head.begin(), head.end()));
  }
  SECTION("two parts, in order and out of order; the packet IEI survives") {
    for (bool reversed : {false, true}) {
      Reassembler r;
      auto p1 = std::vector<UdhElement>{c8(5, 2, 1), ota[0]};
      auto p2 = std::vector<UdhElement>{c8(5, 2, 2)};
      auto a = reversed ? r.add("+1", p2, tail, t0) : r.add("+1", p1, head, t0);
      REQUIRE(a);
      CHECK_FALSE(a->has_value());
      CHECK(r.pending() == 1);
      auto b = reversed ? r.add("+1", p1, head, t0) : r.add("+1", p2, tail, t0);
      REQUIRE(b);
      REQUIRE(b->has_value());
      CHECK((*b)->data == pkt);
      CHECK((*b)->udh == ota);
      CHECK(r.pending() == 0);
    }
  }
  SECTION("16-bit references and interleaved sets; 8- and 16-bit refs are separate") {
    Reassembler r;
    REQUIRE(r.add("+1", {c16(0x1234, 2, 1), ota[0]}, head, t0));
    REQUIRE(r.add("+1", {c8(0x34, 2, 1)}, hex("aa"), t0));
    REQUIRE(r.add("+2", {c8(0x34, 2, 1)}, hex("cc"), t0));  // other originator
    auto x = r.add("+1", {c8(0x34, 2, 2)}, hex("bb"), t0);
    REQUIRE(x);
    REQUIRE(x->has_value());
    CHECK((*x)->data == hex("aabb"));
    auto y = r.add("+1", {c16(0x1234, 2, 2)}, tail, t0);
    REQUIRE(y);
    REQUIRE(y->has_value());
    CHECK((*y)->data == pkt);
    CHECK(r.pending() == 1);
  }
  SECTION("malformed concatenation elements are bad_value") {
    Reassembler r;
    CHECK(r.add("+1", {c8(1, 2, 3)}, hex("00"), t0).error().code == Errc::bad_value);  // seq > total
    CHECK(r.add("+1", {c8(1, 2, 0)}, hex("00"), t0).error().code == Errc::bad_value);  // seq 0
    CHECK(r.add("+1", {c8(1, 0, 1)}, hex("00"), t0).error().code == Errc::bad_value);  // total 0
    CHECK(r.add("+1", {{0x00, {1, 2}}}, hex("00"), t0).error().code == Errc::bad_value);  // short IE
    CHECK(r.add("+1", {c8(1, 2, 1), c8(1, 2, 2)}, hex("00"), t0).error().code == Errc::bad_value);
    CHECK(r.pending() == 0);
  }
  SECTION("more than max_parts is bad_length") {
    Reassembler r;
    CHECK(r.add("+1", {c8(1, 17, 1)}, hex("00"), t0).error().code == Errc::bad_length);
    CHECK(r.add("+1", {c8(1, 16, 1)}, hex("00"), t0));
  }
  SECTION("duplicate part is a conflict and keeps the set") {
    Reassembler r;
    REQUIRE(r.add("+1", {c8(1, 2, 1)}, hex("11"), t0));
    CHECK(r.add("+1", {c8(1, 2, 1)}, hex("11"), t0).error().code == Errc::conflict);
    auto done = r.add("+1", {c8(1, 2, 2)}, hex("22"), t0);
    REQUIRE(done);
    REQUIRE(done->has_value());
    CHECK((*done)->data == hex("1122"));
  }
  SECTION("inconsistent totals are a conflict and drop the partial message") {
    Reassembler r;
    REQUIRE(r.add("+1", {c8(1, 3, 3)}, hex("33"), t0));
    CHECK(r.add("+1", {c8(1, 2, 1)}, hex("11"), t0).error().code == Errc::conflict);
    CHECK(r.pending() == 0);
  }
  SECTION("pending sets are capped; the oldest is evicted") {
    Reassembler r(ReassemblerLimits{16, 2, std::chrono::seconds(120)});
    for (int i = 1; i <= 3; ++i) { const auto ref = static_cast<std::uint8_t>(i); REQUIRE(r.add("+1", {c8(ref, 2, 1)}, Bytes{ref}, t0)); }
    CHECK(r.pending() == 2);
    auto late = r.add("+1", {c8(1, 2, 2)}, hex("11"), t0);  // set 1 was evicted: starts again
    REQUIRE(late);
    CHECK_FALSE(late->has_value());
    auto three = r.add("+1", {c8(3, 2, 2)}, hex("33"), t0);
    REQUIRE(three);
    REQUIRE(three->has_value());
    CHECK((*three)->data == hex("0333"));
  }
  SECTION("timeout drops incomplete sets") {
    Reassembler r(ReassemblerLimits{16, 8, std::chrono::seconds(30)});
    REQUIRE(r.add("+1", {c8(1, 2, 1)}, hex("11"), t0));
    CHECK(r.expire(t0 + std::chrono::seconds(30)) == 0);
    CHECK(r.expire(t0 + std::chrono::seconds(31)) == 1);
    auto after = r.add("+1", {c8(1, 2, 2)}, hex("22"), t0 + std::chrono::seconds(32));
    REQUIRE(after);
    CHECK_FALSE(after->has_value());  // part 1 is gone
  }
  SECTION("split then reassemble returns the payload, whatever the order") {
    Bytes big(700);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 7);
    auto parts = split_concatenated(big, iei_command_packet, 9);
    REQUIRE(parts);
    REQUIRE(parts->size() == 6);
    Reassembler r;
    std::optional<Message> out;
    for (std::size_t k = parts->size(); k-- > 0;) {
      auto res = r.add("+44", (*parts)[k].udh, (*parts)[k].data, t0);
      REQUIRE(res);
      if (res->has_value()) out = std::move(**res);
    }
    REQUIRE(out);
    CHECK(out->data == big);
    CHECK(out->udh == std::vector<UdhElement>{{0x70, {}}});
  }
}
