#include <catch2/catch.hpp>

#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/envelope.hpp"
#include "test_support.hpp"

using namespace otac;
using namespace otac::envelope;

namespace {

std::optional<sms::Address> address_of(const std::string& s) {
  if (s == "none") return std::nullopt;
  const auto colon = s.find(':');
  REQUIRE(colon != std::string::npos);
  return sms::Address{s.substr(colon + 1), hex(s.substr(0, colon)).at(0)};
}

Errc errc_of(const std::string& s) {
  for (auto e : {Errc::truncated, Errc::trailing_data, Errc::bad_length, Errc::bad_value, Errc::unsupported})
    if (s == errc_name(e)) return e;
  FAIL("unknown errc " << s);
  return Errc::internal;
}

const Bytes kEnvelope311 =
    hex("d12d8202838106099111223344556677f88b1c04049121437f16891010000000000d546573744d6573736167652031");

}  // namespace

TEST_CASE("envelope: published SMS-PP DOWNLOAD ENVELOPEs parse and re-encode byte for byte", "[envelope][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("envelope.vec")) {
    if (v.section != "sms_pp_download") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes env = hex(v.at("envelope"));
    auto e = parse_sms_pp_download(env);
    REQUIRE(e);
    CHECK(e->smsc == address_of(v.at("smsc")));
    CHECK(to_hex(e->tpdu) == v.at("tpdu"));
    auto again = encode(*e);
    REQUIRE(again);
    CHECK(to_hex(*again) == (v.has("reencode") ? v.at("reencode") : to_hex(env)));
  }
  CHECK(n == 3);
}

TEST_CASE("envelope: published SEND SHORT MESSAGE commands parse, and those we fully model re-encode", "[envelope][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("envelope.vec")) {
    if (v.section != "send_short_message") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes cmd = hex(v.at("command"));
    auto c = parse_send_short_message(cmd);
    REQUIRE(c);
    CHECK(c->command_number == 1);
    CHECK(c->qualifier == hex(v.at("qualifier")).at(0));
    if (v.at("alpha") == "none") {
      CHECK_FALSE(c->alpha_identifier);
    } else {
      REQUIRE(c->alpha_identifier);
      CHECK(to_hex(*c->alpha_identifier) == v.at("alpha"));
    }
    CHECK(c->address == address_of(v.at("address")));
    CHECK(to_hex(c->tpdu) == v.at("tpdu"));
    auto again = encode(*c);
    REQUIRE(again);
    // 4.2 carries an icon identifier without the CR bit, which we skip: it cannot come back.
    if (v.at("name").find("icon") == std::string::npos) CHECK(to_hex(*again) == to_hex(cmd));
  }
  CHECK(n == 7);
}

TEST_CASE("envelope: published templates we must refuse", "[envelope][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("envelope.vec")) {
    if (v.section != "reject") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes data = hex(v.at("data"));
    const Errc want = errc_of(v.at("errc"));
    if (v.at("kind") == "send_short_message") {
      auto r = parse_send_short_message(data);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == want);
    } else {
      auto r = parse_sms_pp_download(data);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == want);
    }
  }
  CHECK(n == 4);
}

TEST_CASE("envelope: tags with and without the comprehension-required bit are both accepted", "[envelope]") {
  // TS 31.124 3.1.1 with every inner tag's CR bit cleared (82->02, 86->06, 8B->0B).
  Bytes plain = kEnvelope311;
  plain[2] = 0x02;
  plain[6] = 0x06;
  plain[17] = 0x0B;
  auto a = parse_sms_pp_download(kEnvelope311);
  auto b = parse_sms_pp_download(plain);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a == *b);
}

TEST_CASE("envelope: objects in another order are accepted, repeated ones are not", "[envelope]") {
  // 8B first, then 82, then 86.
  const Bytes tpdu = hex("04049121437f16891010000000000d546573744d6573736167652031");
  Bytes body = hex("8b1c");
  append(body, tpdu);
  append(body, hex("82028381"));
  append(body, hex("86099111223344556677f8"));
  Bytes env{0xD1, static_cast<std::uint8_t>(body.size())};
  append(env, body);
  auto e = parse_sms_pp_download(env);
  REQUIRE(e);
  CHECK(e->tpdu == tpdu);
  CHECK(e->smsc->digits == "112233445566778");

  Bytes twice = env;
  append(twice, hex("82028381"));
  twice[1] = static_cast<std::uint8_t>(twice.size() - 2);
  CHECK(parse_sms_pp_download(twice).error().code == Errc::bad_value);
}

TEST_CASE("envelope: unknown objects without CR are skipped, with CR refused", "[envelope]") {
  Bytes env = kEnvelope311;
  append(env, hex("1e020101"));  // icon identifier, no CR
  env[1] = static_cast<std::uint8_t>(env.size() - 2);
  CHECK(parse_sms_pp_download(env));
  env[env.size() - 4] = 0x9E;
  CHECK(parse_sms_pp_download(env).error().code == Errc::unsupported);
}

TEST_CASE("envelope: SMS-PP DOWNLOAD rejections", "[envelope]") {
  SECTION("every truncation") {
    for (std::size_t len = 0; len < kEnvelope311.size(); ++len) {
      INFO(len);
      auto r = parse_sms_pp_download(ByteView(kEnvelope311).first(len));
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Errc::truncated);
    }
  }
  SECTION("trailing garbage after the template") {
    Bytes b = kEnvelope311;
    b.push_back(0x00);
    CHECK(parse_sms_pp_download(b).error().code == Errc::trailing_data);
  }
  SECTION("template length one short leaves a truncated object") {
    Bytes b = kEnvelope311;
    b[1] = static_cast<std::uint8_t>(b[1] - 1);
    CHECK(parse_sms_pp_download(b).error().code == Errc::trailing_data);
  }
  SECTION("inner length longer than the template") {
    Bytes b = kEnvelope311;
    b[18] = 0x1d;  // 8B length one too long
    CHECK(parse_sms_pp_download(b).error().code == Errc::truncated);
  }
  SECTION("non-minimal and unsupported length forms") {
    Bytes b = kEnvelope311;
    b.insert(b.begin() + 1, 0x81);  // 81 2D: not minimal
    CHECK(parse_sms_pp_download(b).error().code == Errc::bad_length);
    CHECK(parse_sms_pp_download(hex("d1820000")).error().code == Errc::bad_length);
  }
  SECTION("wrong device identities") {
    Bytes b = kEnvelope311;
    b[4] = 0x82;  // terminal -> UICC
    CHECK(parse_sms_pp_download(b).error().code == Errc::bad_value);
    CHECK(parse_sms_pp_download(hex("d1068201838b0100")).error().code == Errc::bad_length);
  }
  SECTION("missing objects") {
    CHECK(parse_sms_pp_download(hex("d1038b0100")).error().code == Errc::bad_value);      // no 82
    CHECK(parse_sms_pp_download(hex("d10482028381")).error().code == Errc::bad_value);    // no 8B
  }
  SECTION("reserved COMPREHENSION-TLV tags") {
    CHECK(parse_sms_pp_download(hex("d102ff00")).error().code == Errc::bad_value);
    CHECK(parse_sms_pp_download(hex("d1028000")).error().code == Errc::bad_value);
  }
  SECTION("a bad address") {
    CHECK(parse_sms_pp_download(hex("d10b82028381860291 1f8b0100")).error().code == Errc::bad_value);
  }
}

TEST_CASE("envelope: encode limits and round trips", "[envelope]") {
  SmsPpDownload e{sms::Address{"4912345", 0x91}, Bytes(230, 0x44)};
  auto enc = encode(e);
  REQUIRE(enc);
  CHECK(enc->size() <= 255);
  auto back = parse_sms_pp_download(*enc);
  REQUIRE(back);
  CHECK(*back == e);
  e.tpdu.resize(245);
  CHECK(encode(e).error().code == Errc::bad_length);  // the ENVELOPE would exceed 255
  e.smsc = sms::Address{"ABC", 0xD0};
  e.tpdu.resize(10);
  CHECK(encode(e).error().code == Errc::unsupported);

  SendShortMessage c;
  c.command_number = 3;
  c.qualifier = 0;
  c.tpdu = hex("0100099110325476f840f40c54657374204d657373616765");
  auto ce = encode(c);
  REQUIRE(ce);
  auto cb = parse_send_short_message(*ce);
  REQUIRE(cb);
  CHECK(*cb == c);
  CHECK(parse_send_short_message(hex("d00b810301120082028183" "8b00")).error().code == Errc::bad_value);  // type 12
  CHECK(parse_send_short_message(hex("d00a8102011382028183" "8b00")).error().code == Errc::bad_length);
  CHECK(parse_send_short_message(hex("d00b810301130082028381" "8b00")).error().code == Errc::bad_value);  // dirs
}

TEST_CASE("envelope: the UICC's answer to SMS-PP DOWNLOAD (TS 31.111 7.1.1.2, TS 31.124 27.22.5)", "[envelope]") {
  // AOSP UsimDataDownloadTest: 9000 "" -> RP-ACK; 9000 with data -> RP-ACK with data;
  // 62FF with data -> RP-ERROR with data; 9300 -> SIM toolkit busy.
  CHECK(classify_download_response(0x9000, false) == DownloadOutcome::ack);
  CHECK(classify_download_response(0x9000, true) == DownloadOutcome::ack_with_data);
  CHECK(classify_download_response(0x62FF, true) == DownloadOutcome::error_with_data);
  CHECK(classify_download_response(0x9300, false) == DownloadOutcome::busy);
  CHECK(classify_download_response(0x6110, false) == DownloadOutcome::ack_with_data);
  CHECK(classify_download_response(0x6F00, false) == DownloadOutcome::error);
}

TEST_CASE("envelope: describe names every object", "[envelope]") {
  const std::string d = describe(kEnvelope311);
  CHECK(d.find("SMS-PP DOWNLOAD") != std::string::npos);
  CHECK(d.find("network -> UICC") != std::string::npos);
  CHECK(d.find("112233445566778") != std::string::npos);
  CHECK(describe(hex("d105")).find("error") != std::string::npos);
}

TEST_CASE("envelope: the OTA path end to end: split, DELIVER, ENVELOPE, parse, reassemble", "[envelope][sms]") {
  // pySim's 3DES-SJA5-CIPHERED-CC command packet (tests/data/ota_pysim.vec) fits one SMS;
  // a 300-octet packet needs three. Each part travels as its own ENVELOPE (protocol.md 7).
  for (const Bytes& packet :
       {hex("00201506193535b00011ae733256918d050b87c94fbfe12e4dc402f262c41cf67f2f"), Bytes(300, 0xC3)}) {
    auto parts = sms::split_concatenated(packet, sms::iei_command_packet, 0x42);
    REQUIRE(parts);
    sms::Reassembler r;
    std::optional<sms::Message> out;
    for (const auto& part : *parts) {
      sms::Deliver d;
      d.originator = {"4912345678", 0x91};
      d.udh = part.udh;
      d.user_data = part.data;
      auto tpdu = sms::encode(d);
      REQUIRE(tpdu);
      auto env = encode(SmsPpDownload{sms::Address{"4912345", 0x91}, *tpdu});
      REQUIRE(env);
      auto got = parse_sms_pp_download(*env);
      REQUIRE(got);
      auto back = sms::parse_deliver(got->tpdu);
      REQUIRE(back);
      auto res = r.add(back->originator.digits, back->udh, back->user_data, sms::Reassembler::Clock::time_point{});
      REQUIRE(res);
      if (res->has_value()) out = std::move(**res);
    }
    REQUIRE(out);
    CHECK(out->data == packet);
    CHECK(sms::find(out->udh, sms::iei_command_packet) != nullptr);
  }
}

TEST_CASE("envelope: a PoR as MO SMS-SUBMIT user data matches pySim's (UDH 02 71 00)", "[envelope][sms][kat]") {
  // pySim test_ota.py 3DES-SJA5-CIPHERED-CC: the PoR a sysmoISIM-SJA5 returned, as the user
  // data of the SMS: UDHL 02, IEI 71 length 0, then the response packet.
  const Bytes ud = hex("027100001c12b000118bb989492c632529326a2f4681feb37c825bc9021c9f6d0b");
  sms::Submit s;
  s.destination = {"4912345", 0x91};
  s.udh = {{sms::iei_response_packet, {}}};
  s.user_data.assign(ud.begin() + 3, ud.end());
  auto tpdu = sms::encode(s);
  REQUIRE(tpdu);
  // UDL and UD are the last 1 + ud.size() octets.
  const Bytes tail(tpdu->end() - static_cast<std::ptrdiff_t>(ud.size()), tpdu->end());
  CHECK(to_hex(tail) == to_hex(ud));
  CHECK((*tpdu)[tpdu->size() - ud.size() - 1] == ud.size());
  auto back = sms::parse_submit(*tpdu);
  REQUIRE(back);
  CHECK(*back == s);
}
