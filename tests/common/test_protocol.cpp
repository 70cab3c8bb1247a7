// The OTAC protocol module against tests/data/otac_protocol.vec (made by hand and with the
// openssl command line, see its header), and its parsers' refusals.
#include <catch2/catch.hpp>

#include "otac/common/crypto.hpp"
#include "otac/common/protocol.hpp"
#include "otac/common/sw.hpp"
#include "test_support.hpp"

using namespace otac;

namespace {

Errc errc_of(const std::string& s) {
  for (auto e : {Errc::truncated, Errc::trailing_data, Errc::bad_length, Errc::bad_value, Errc::unsupported})
    if (s == errc_name(e)) return e;
  FAIL("unknown errc " << s);
  return Errc::internal;
}

std::uint16_t u16_field(const test::Vector& v, const char* k) { return static_cast<std::uint16_t>(std::stoul(v.at(k))); }

std::string mac8(std::uint8_t alg, const std::string& key, ByteView data) {
  const SecretBytes k(hex(key));
  auto m = alg == 0x01 ? crypto::mac_alg3(k, data, crypto::Padding::method2, 8) : crypto::aes_cmac(k, data);
  REQUIRE(m);
  m->resize(8);
  return to_hex(*m);
}

}  // namespace

TEST_CASE("protocol: challenges parse, re-encode canonically and give the MAC input and MAC by hand", "[protocol][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("otac_protocol.vec")) {
    if (v.section != "challenge") continue;
    ++n;
    INFO(v.at("name"));
    auto c = protocol::Challenge::parse(hex(v.at("data")));
    REQUIRE(c);
    protocol::CardAnswer a{hex(v.at("n")), u16_field(v, "list"), u16_field(v, "index"), u16_field(v, "atc"), {},
                           static_cast<std::uint8_t>(std::stoul(v.at("pin_state"), nullptr, 16))};
    const Bytes input = protocol::mac_input(*c, a);
    CHECK(to_hex(input) == to_hex(hex(v.at("mac_input"))));
    CHECK(mac8(0x01, v.at("key"), input) == v.at("mac01"));
    CHECK(mac8(0x02, v.at("key"), input) == v.at("mac02"));
    // encode() writes the table order of §3, which is the challenge part of the MAC input.
    const Bytes enc = c->encode();
    CHECK(to_hex(enc) == to_hex(ByteView(input).first(enc.size())));
    auto again = protocol::Challenge::parse(enc);
    REQUIRE(again);
    CHECK(to_hex(protocol::mac_input(*again, a)) == to_hex(input));
  }
  CHECK(n == 3);
}

TEST_CASE("protocol: ARPC input and MAC by hand", "[protocol][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("otac_protocol.vec")) {
    if (v.section != "arpc") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes in = protocol::arpc_input(hex(v.at("cryptogram")), hex(v.at("arc")));
    CHECK(to_hex(in) == to_hex(hex(v.at("input"))));
    CHECK(mac8(0x01, v.at("key"), in) == v.at("mac01"));
  }
  CHECK(n == 1);
}

TEST_CASE("protocol: malformed challenges are refused with the specific error", "[protocol][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("otac_protocol.vec")) {
    if (v.section != "reject") continue;
    ++n;
    INFO(v.at("name"));
    auto r = protocol::Challenge::parse(hex(v.at("data")));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc_of(v.at("errc")));
    CHECK(r.error().message.rfind("challenge: ", 0) == 0);
  }
  CHECK(n == 9);
}

TEST_CASE("protocol: the card answer parses to its fields and re-encodes", "[protocol][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("otac_protocol.vec")) {
    if (v.section != "answer") continue;
    ++n;
    const Bytes data = hex(v.at("data"));
    auto a = protocol::CardAnswer::parse(data);
    REQUIRE(a);
    CHECK(to_hex(a->n) == v.at("n"));
    CHECK(a->list_id == u16_field(v, "list"));
    CHECK(a->index == u16_field(v, "index"));
    CHECK(a->atc == u16_field(v, "atc"));
    CHECK(to_hex(a->cryptogram) == v.at("cryptogram"));
    CHECK(a->pin_state == std::stoul(v.at("pin_state"), nullptr, 16));
    CHECK(to_hex(a->encode()) == to_hex(data));
    // Trailing bytes, a missing DF35, a duplicate tag and a short cryptogram are refused.
    CHECK_FALSE(protocol::CardAnswer::parse(concat({data, hex("00")})));
    CHECK_FALSE(protocol::CardAnswer::parse(ByteView(data).first(data.size() - 4)));
    Bytes dup = data;
    dup[1] = static_cast<std::uint8_t>(dup[1] + 4);
    append(dup, hex("DF350113"));
    CHECK(protocol::CardAnswer::parse(dup).error().code == Errc::bad_value);
    CHECK_FALSE(protocol::CardAnswer::parse(hex("7725 DF41080102030405060708 DF42020003 DF43020011 9F3602002A 9F2607f33b379a4ae2b6 DF350113")));
  }
  CHECK(n == 1);
}

TEST_CASE("protocol: inner commands decode and re-encode byte for byte", "[protocol][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("otac_protocol.vec")) {
    if (v.section != "inner") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes data = hex(v.at("data"));
    auto parsed = protocol::parse_inner(data, false);
    REQUIRE(parsed);
    REQUIRE(parsed->commands.size() == 1);
    auto cmd = protocol::decode_inner(parsed->commands[0]);
    REQUIRE(cmd);
    const std::string kind = v.at("kind");
    CHECK((kind == "E1") == std::holds_alternative<protocol::LoadList>(*cmd));
    CHECK((kind == "E2") == std::holds_alternative<protocol::ReplaceKey>(*cmd));
    CHECK((kind == "E3") == std::holds_alternative<protocol::SetSignatureKey>(*cmd));
    CHECK(to_hex(protocol::encode_inner(*cmd)) == to_hex(data));
  }
  CHECK(n == 3);
}

TEST_CASE("protocol: inner command refusals and the CF rule", "[protocol]") {
  const SecretBytes s(hex("000102030405060708090A0B0C0D0E0F"));
  const Bytes inner = hex("E215 C6100123456789ABCDEFFEDCBA9876543210 C70102");
  // E2 with version 0, with a 15-byte key, with an unknown field; an unknown command.
  for (const char* bad : {"E215 C6100123456789ABCDEFFEDCBA9876543210 C70100", "E214 C60F0123456789ABCDEFFEDCBA98765432 C70102",
                          "E217 C6100123456789ABCDEFFEDCBA9876543210 C70102 C900", "E600"}) {
    INFO(bad);
    auto p = protocol::parse_inner(hex(bad), false);
    REQUIRE(p);
    CHECK_FALSE(protocol::decode_inner(p->commands[0]));
  }
  // With a signature key the packet must end with CF over the commands before it.
  Bytes signed_inner = inner;
  protocol::append_inner_mac(signed_inner, s);
  auto p = protocol::parse_inner(signed_inner, true);
  REQUIRE(p);
  CHECK(p->commands.size() == 1);
  CHECK(to_hex(p->signed_part) == to_hex(inner));
  CHECK(to_hex(*p->mac) == to_hex(crypto::hmac_sha256(s.view(), inner)));
  CHECK(protocol::parse_inner(inner, true).error().code == Errc::bad_mac);
  CHECK_FALSE(protocol::parse_inner({}, false));
}

TEST_CASE("protocol: FCI and the status-word table", "[protocol][sw]") {
  const Bytes fci = hex("6F17 8406F04F54414301 A50D 9F080102 DF0102003F DF020102");
  auto f = protocol::Fci::parse(fci);
  REQUIRE(f);
  CHECK(f->version == 0x02);
  CHECK(f->capabilities == 0x003F);
  CHECK(f->state == 0x02);
  CHECK(to_hex(f->encode()) == to_hex(fci));
  CHECK_FALSE(protocol::Fci::parse(hex("6F17 8406F04F54414302 A50D 9F080102 DF0102003F DF020102")));  // another AID
  CHECK_FALSE(protocol::Fci::parse(concat({fci, hex("00")})));

  CHECK(std::string(sw::decline_reason(0x6A82)) == "not_otac_card");
  CHECK(std::string(sw::decline_reason(0x6983)) == "pin_blocked");
  CHECK(std::string(sw::decline_reason(0x63C0)) == "pin_blocked");
  CHECK(std::string(sw::decline_reason(0x6A84)) == "no_codes");
  CHECK(std::string(sw::decline_reason(0x6985)) == "card_not_usable");
  CHECK(std::string(sw::decline_reason(0x6F00)) == "card_error");
  CHECK(sw::check(0x9000));
  CHECK(sw::check(0x6A80).error().code == Errc::bad_value);
  CHECK(sw::check(0x6C10).error().code == Errc::bad_length);
  CHECK(sw::check(0x63C2).error().code == Errc::bad_mac);
  CHECK(sw::check(0x6D00).error().message == "6D00 instruction code not supported or invalid");
}
