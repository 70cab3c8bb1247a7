#include <catch2/catch.hpp>

#include <stdexcept>

#include "otac/common/bytes.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/secret.hpp"

using namespace otac;

TEST_CASE("hex round trip and rejection", "[bytes]") {
  CHECK(to_hex(hex("00 01 fe FF")) == "0001feff");
  CHECK(hex("0a:0B") == Bytes{0x0a, 0x0b});
  auto odd = from_hex("abc");
  REQUIRE_FALSE(odd);
  CHECK(odd.error().code == Errc::bad_length);
  auto bad = from_hex("zz");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::bad_value);
  CHECK_FALSE(from_hex("a b"));
}

TEST_CASE("big-endian encodings: allocated, appended and on the stack give the same bytes", "[bytes]") {
  CHECK(be_bytes(0x0102030405060708ULL, 8) == hex("0102030405060708"));
  CHECK(be_bytes(0x1234, 4) == hex("00001234"));
  Bytes b = hex("aa");
  append_be(b, 0x0102, 2);
  append_be(b, 0xff, 1);
  CHECK(b == hex("aa0102ff"));
  const auto a = be_array<3>(0x0a0b0c0d);  // only the low three bytes fit
  CHECK(Bytes(a.begin(), a.end()) == hex("0b0c0d"));
  CHECK_THROWS_AS(be_bytes(1, 9), std::invalid_argument);
  CHECK_THROWS_AS(append_be(b, 1, 0), std::invalid_argument);
  CHECK(b == hex("aa0102ff"));  // a refused width appends nothing
}

TEST_CASE("percent codec: RFC 3986 unreserved characters stay, everything else is %XX", "[bytes]") {
  // RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~" are unreserved; 2.1: upper-case hex.
  CHECK(percent_encode("AZaz09-._~") == "AZaz09-._~");
  CHECK(percent_encode("a b+c/d?e=f&g") == "a%20b%2Bc%2Fd%3Fe%3Df%26g");
  CHECK(percent_encode(std::string("\x00\xff", 2)) == "%00%FF");
  CHECK(percent_decode("a%20b%2Bc%2fd").value() == "a b+c/d");  // lower-case hex accepted
  // HTML form encoding (application/x-www-form-urlencoded): '+' is a space.
  CHECK(percent_decode("a+b", true).value() == "a b");
  CHECK(percent_decode("a+b", false).value() == "a+b");
  CHECK(percent_decode("%4").error().code == Errc::truncated);
  CHECK(percent_decode("abc%").error().code == Errc::truncated);
  CHECK(percent_decode("%G1").error().code == Errc::bad_value);
  const std::string all = [] { std::string a; for (int i = 0; i < 256; ++i) a.push_back(static_cast<char>(i)); return a; }();
  CHECK(percent_decode(percent_encode(all), false).value() == all);
}

TEST_CASE("cursor reads big-endian fields and refuses trailing bytes", "[bytes]") {
  const Bytes b = hex("01 0203 040506 0708090a ff");
  Cursor c(b, "test");
  CHECK(c.u8("a") == 0x01);
  CHECK(c.u16("b") == 0x0203);
  CHECK(c.u24("c") == 0x040506);
  CHECK(c.u32("d") == 0x0708090aU);
  auto r = c.finish();
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::trailing_data);
  CHECK(c.take(1, "e").size() == 1);
  CHECK(c.finish());
}

TEST_CASE("cursor fails sticky on truncation and never reads past the end", "[bytes]") {
  const Bytes b = hex("0102");
  Cursor c(b, "test");
  CHECK(c.u24("len") == 0);
  CHECK_FALSE(c.ok());
  CHECK(c.error().code == Errc::truncated);
  CHECK(c.error().message.find("len") != std::string::npos);
  CHECK(c.u8("next") == 0);
  CHECK(c.take(1, "x").empty());
  CHECK(c.remaining() == 0);
  CHECK_FALSE(c.finish());
}

TEST_CASE("constant-time compare and secret wiping", "[bytes]") {
  CHECK(ct_equal(hex("0102"), hex("0102")));
  CHECK_FALSE(ct_equal(hex("0102"), hex("0103")));
  CHECK_FALSE(ct_equal(hex("0102"), hex("010200")));
  SecretBytes s(hex("aabbcc"));
  SecretBytes t = std::move(s);
  CHECK(s.empty());  // NOLINT(bugprone-use-after-move): moved-from secrets are empty by contract
  CHECK(to_hex(t.view()) == "aabbcc");
  auto u = t.clone();
  CHECK(ct_equal(u.view(), t.view()));
}
