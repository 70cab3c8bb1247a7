#include <catch2/catch.hpp>

#include <string>

#include "otac/common/apdu.hpp"
#include "otac/common/bytes.hpp"
#include "test_support.hpp"

using namespace otac;

namespace {

Bytes apdu_of(const test::Vector& v) {
  if (v.has("apdu")) return hex(v.at("apdu"));
  Bytes out = hex(v.at("head"));
  out.resize(out.size() + std::stoul(v.at("zeros")), 0x00);
  append(out, hex(v.at("tail")));
  return out;
}

Errc errc_of(const std::string& s) {
  for (auto e : {Errc::truncated, Errc::trailing_data, Errc::bad_length, Errc::bad_value})
    if (s == errc_name(e)) return e;
  FAIL("unknown errc " << s);
  return Errc::internal;
}

}  // namespace

TEST_CASE("apdu: EMV Annex A and open eCard command APDUs parse to their case and re-encode", "[apdu][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("apdu_iso7816.vec")) {
    if (v.section != "command") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes raw = apdu_of(v);
    auto c = apdu::parse_command(raw);
    REQUIRE(c);
    CHECK(c->cla == raw[0]);
    CHECK(c->ins == raw[1]);
    CHECK(c->p1 == raw[2]);
    CHECK(c->p2 == raw[3]);
    CHECK(c->apdu_case() == std::stoi(v.at("case")));
    CHECK(c->data.size() == std::stoul(v.at("nc")));
    if (v.has("data")) CHECK(to_hex(c->data) == v.at("data"));
    if (v.at("ne") == "none") {
      CHECK_FALSE(c->ne);
    } else {
      REQUIRE(c->ne);
      CHECK(*c->ne == std::stoul(v.at("ne")));
    }
    CHECK(c->extended == (v.at("extended") == "1"));
    auto again = apdu::encode(*c);
    REQUIRE(again);
    CHECK(to_hex(*again) == to_hex(raw));
  }
  CHECK(n == 18);
}

TEST_CASE("apdu: malformed command APDUs are refused with the specific error", "[apdu][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("apdu_iso7816.vec")) {
    if (v.section != "reject") continue;
    ++n;
    INFO(v.at("name"));
    auto c = apdu::parse_command(hex(v.at("apdu")));
    REQUIRE_FALSE(c);
    CHECK(c.error().code == errc_of(v.at("errc")));
  }
  CHECK(n == 6);
}

TEST_CASE("apdu: response APDUs (EMV Annex A)", "[apdu][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("apdu_iso7816.vec")) {
    if (v.section != "response") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes raw = hex(v.at("apdu"));
    auto r = apdu::parse_response(raw);
    REQUIRE(r);
    CHECK(to_hex(r->data) == v.at("data"));
    const Bytes sw = hex(v.at("sw"));
    CHECK(r->sw1() == sw[0]);
    CHECK(r->sw2() == sw[1]);
    CHECK(to_hex(apdu::encode(*r)) == to_hex(raw));
  }
  CHECK(n == 7);
  CHECK(apdu::parse_response(hex("90")).error().code == Errc::truncated);
  CHECK(apdu::parse_response({}).error().code == Errc::truncated);
}

TEST_CASE("apdu: encoder chooses the form and refuses impossible lengths", "[apdu]") {
  apdu::Command c{0x00, 0xB0, 0x00, 0x00, {}, 257u, false};
  auto e = apdu::encode(c);
  REQUIRE(e);
  CHECK(to_hex(*e) == "00b00000000101");  // Ne > 256 needs the extended form
  c.ne = 0u;
  CHECK(apdu::encode(c).error().code == Errc::bad_length);
  c.ne = 65537u;
  CHECK(apdu::encode(c).error().code == Errc::bad_length);
  c.ne.reset();
  c.data.assign(65536, 0);
  CHECK(apdu::encode(c).error().code == Errc::bad_length);

  apdu::Command sel{0x00, 0xA4, 0x04, 0x00, hex("315041592e5359532e4444463031"), 256u, false};
  CHECK(apdu::describe(sel).find("case 4") != std::string::npos);
}

TEST_CASE("apdu: every truncation of a case 4 extended APDU is refused", "[apdu]") {
  Bytes raw = hex("0001020300000301020300ff");
  auto full = apdu::parse_command(raw);
  REQUIRE(full);
  CHECK(full->apdu_case() == 4);
  CHECK(*full->ne == 255);
  // Cutting the Le leaves a body that is no case at all, or a shorter valid case (4 bytes,
  // 5 bytes); what must never happen is a case-4 parse of a cut APDU.
  for (std::size_t len = 0; len < raw.size(); ++len) {
    INFO(len);
    auto r = apdu::parse_command(ByteView(raw).first(len));
    if (r) CHECK(r->apdu_case() != 4);
  }
}
