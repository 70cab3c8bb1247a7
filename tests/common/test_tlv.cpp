#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/tlv.hpp"
#include "test_support.hpp"

using namespace otac;

namespace {

std::string tag_text(tlv::Tag t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%02X", static_cast<unsigned>(t));
  return buf;
}

// The notation of tests/data/tlv_emv.vec: TAG:value or TAG{children}.
std::string tree(const std::vector<tlv::Node>& nodes) {
  std::string out;
  for (const auto& n : nodes) {
    if (!out.empty()) out += ",";
    out += tag_text(n.tag);
    out += n.constructed() ? "{" + tree(n.children) + "}" : ":" + to_hex(n.value);
  }
  return out;
}

Errc errc_of(const std::string& s) {
  for (auto e : {Errc::truncated, Errc::trailing_data, Errc::bad_length, Errc::bad_value})
    if (s == errc_name(e)) return e;
  FAIL("unknown errc " << s);
  return Errc::internal;
}

}  // namespace

TEST_CASE("tlv: EMV responses from openemv/emv-utils parse to the stated objects and re-encode", "[tlv][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("tlv_emv.vec")) {
    if (v.section != "parse") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes data = hex(v.at("data"));
    auto nodes = tlv::parse(data);
    REQUIRE(nodes);
    CHECK(tree(*nodes) == v.at("tree"));
    CHECK(to_hex(tlv::encode(*nodes)) == to_hex(data));
  }
  CHECK(n == 10);
}

TEST_CASE("tlv: malformed EMV data is refused with the specific error", "[tlv][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("tlv_emv.vec")) {
    if (v.section != "reject") continue;
    ++n;
    INFO(v.at("name"));
    auto r = tlv::parse(hex(v.at("data")));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc_of(v.at("errc")));
    CHECK_FALSE(r.error().message.empty());
  }
  CHECK(n == 6);
}

TEST_CASE("tlv: definite length encodings (pySim BerTlvLengthTestCase)", "[tlv][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("tlv_emv.vec")) {
    if (v.section != "length") continue;
    ++n;
    const auto len = std::stoul(v.at("value"));
    INFO(len);
    const Bytes value(len, 0x5A);
    const Bytes enc = tlv::encode(0x04, value);
    CHECK(to_hex(ByteView(enc).subspan(1, enc.size() - 1 - len)) == v.at("encoded"));
    auto back = tlv::parse(enc);
    REQUIRE(back);
    REQUIRE(back->size() == 1);
    CHECK((*back)[0].value.size() == len);
  }
  CHECK(n == 7);
}

TEST_CASE("tlv: tags, find and structural rejections", "[tlv]") {
  CHECK(tlv::tag_size(0x77) == 1);
  CHECK(tlv::tag_size(0x9F37) == 2);
  CHECK(tlv::tag_size(0xDF8101) == 3);
  CHECK(tlv::is_constructed(0x77));
  CHECK_FALSE(tlv::is_constructed(0x9F37));
  CHECK(tlv::is_constructed(0xBF0C));

  auto gpo = tlv::parse(hex("770e82023900940818010201200204 00"));
  REQUIRE(gpo);
  const auto* t77 = tlv::find(*gpo, 0x77);
  REQUIRE(t77);
  const auto* afl = tlv::find(t77->children, 0x94);
  REQUIRE(afl);
  CHECK(to_hex(afl->value) == "1801020120020400");
  CHECK(tlv::find(*gpo, 0x94) == nullptr);  // only this level

  SECTION("three-byte tag round trip") {
    const Bytes enc = tlv::encode(0xDF8101, hex("01"));
    CHECK(to_hex(enc) == "df81010101");
    auto p = tlv::parse(enc);
    REQUIRE(p);
    CHECK((*p)[0].tag == 0xDF8101);
  }
  SECTION("rejections") {
    CHECK(tlv::parse(hex("00")).error().code == Errc::bad_value);                 // tag 00
    CHECK(tlv::parse(hex("df818181010100")).error().code == Errc::bad_value);     // 4-byte tag
    CHECK(tlv::parse(hex("9f")).error().code == Errc::truncated);                 // tag cut
    CHECK(tlv::parse(hex("9f37")).error().code == Errc::truncated);               // no length
    CHECK(tlv::parse(hex("9f3781")).error().code == Errc::truncated);             // length cut
    CHECK(tlv::parse(hex("5a820005 0102030405")).error().code == Errc::bad_length);  // 82 0005
    CHECK(tlv::parse(hex("5a0101 00")).error().code == Errc::bad_value);         // padding 00 after
    Bytes deep;
    for (int i = 0; i < tlv::max_depth + 1; ++i) deep.insert(deep.begin(), {0x70, static_cast<std::uint8_t>(deep.size())});
    deep.insert(deep.end(), {});
    CHECK(tlv::parse(deep).error().code == Errc::bad_value);
  }
  SECTION("constructed object whose children do not fill it") {
    CHECK(tlv::parse(hex("7003 5a0201")).error().code == Errc::truncated);
  }
}

TEST_CASE("tlv: dump shows nested objects and stops at an error", "[tlv]") {
  const std::string d = tlv::dump(hex("770e82023900940818010201200204 00"));
  CHECK(d.find("77") != std::string::npos);
  CHECK(d.find("82") != std::string::npos);
  CHECK(d.find("1801020120020400") != std::string::npos);
  const std::string bad = tlv::dump(hex("7003 5a0201"));
  CHECK_FALSE(bad.empty());
}
