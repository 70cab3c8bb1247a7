#include <catch2/catch.hpp>

#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/sw.hpp"
#include "test_support.hpp"

using namespace otac;

TEST_CASE("sw: descriptions of the EMV Annex A status words", "[sw][kat]") {
  int n = 0;
  for (const auto& v : test::load_vectors("apdu_iso7816.vec")) {
    if (v.section != "response") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes b = hex(v.at("sw"));
    const auto s = static_cast<std::uint16_t>(b[0] << 8 | b[1]);
    const std::string d = sw::describe(s);
    CHECK(d.find(v.at("describe")) != std::string::npos);
  }
  CHECK(n == 7);
}

TEST_CASE("sw: 61xx, 6Cxx and 63Cx (ISO/IEC 7816-4 5.6)", "[sw]") {
  CHECK(sw::is_bytes_available(0x6126));
  CHECK(sw::describe(0x6100).find("256") != std::string::npos);  // 00 = 256
  CHECK(sw::is_wrong_le(0x6C1C));
  CHECK(sw::describe(0x6C00).find("256") != std::string::npos);
  CHECK(sw::is_tries_left(0x63C2));
  CHECK(sw::tries_left(0x63C2) == 2);
  CHECK(sw::describe(0x63C2).find("2 tries left") != std::string::npos);
  CHECK(sw::describe(0x63C1).find("1 try left") != std::string::npos);
  CHECK(sw::tries(3) == 0x63C3);
  CHECK(sw::tries(99) == 0x63CF);
  CHECK(sw::tries(-1) == 0x63C0);
  CHECK_FALSE(sw::is_tries_left(0x6300));
  CHECK(sw::is_success(0x9000));
  CHECK(sw::is_success(0x6110));
  CHECK_FALSE(sw::is_success(0x6A82));
  CHECK(sw::describe(sw::file_not_found).find("not found") != std::string::npos);
  CHECK(sw::describe(0x1234).find("unknown") != std::string::npos);
  CHECK(sw::describe(0x9000).rfind("9000", 0) == 0);
}
