// The shared whole-number parser of command lines and configuration files.
#include <catch2/catch.hpp>

#include "otac/common/number.hpp"

using otac::parse_uint;

TEST_CASE("parse_uint: digits only, the whole text, within the range", "[number]") {
  CHECK(parse_uint("0", 0, 10).value() == 0);
  CHECK(parse_uint("400", 0, 400).value() == 400);
  CHECK(parse_uint("007", 0, 10).value() == 7);
  CHECK(parse_uint("18446744073709551615", 0, UINT64_MAX).value() == UINT64_MAX);
  for (const char* bad : {"", "abc", "-1", "+1", " 1", "1 ", "12x", "0x10", "1.5", "1e3", "401", "18446744073709551616"}) {
    auto r = parse_uint(bad, 0, 400);
    INFO(bad);
    REQUIRE(!r.ok());
    CHECK(r.error().code == otac::Errc::bad_value);
    CHECK(r.error().message.find("from 0 to 400") != std::string::npos);
  }
  CHECK(!parse_uint("0", 1, 65535).ok());
  // The text is quoted, cut at 32 characters.
  auto long_text = parse_uint(std::string(100, 'z'), 0, 1);
  CHECK(long_text.error().message == "'" + std::string(32, 'z') + "...' is not a whole number from 0 to 1");
}
