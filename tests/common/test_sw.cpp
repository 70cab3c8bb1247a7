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

// A status word missing from the table falls back to the meaning of its SW1 (ISO/IEC 7816-4
// 5.6, table 5), and to the error class of that meaning.
TEST_CASE("sw: an unlisted status word is described and classed by its SW1 (ISO/IEC 7816-4 table 5)", "[sw]") {
  struct Case {
    std::uint16_t sw;
    const char* meaning;
    Errc errc;
  };
  const Case cases[] = {
      {0x6299, "warning: state of non-volatile memory unchanged", Errc::state},
      {0x6399, "warning: state of non-volatile memory changed", Errc::state},
      {0x6499, "execution error: state of non-volatile memory unchanged", Errc::io},
      {0x6599, "execution error: state of non-volatile memory changed", Errc::io},
      {0x6699, "security-related issue", Errc::internal},
      {0x6799, "wrong length", Errc::bad_length},
      {0x6899, "functions in CLA not supported", Errc::unsupported},
      {0x6999, "command not allowed", Errc::state},
      {0x6A99, "wrong parameters", Errc::bad_value},
      {0x6B99, "unknown status", Errc::bad_value},
      {0x6F99, "no precise diagnosis", Errc::internal},
      {0x9F99, "unknown status", Errc::internal},
  };
  for (const auto& c : cases) {
    INFO(sw::describe(c.sw));
    CHECK(sw::describe(c.sw).find(c.meaning) != std::string::npos);
    CHECK(sw::to_errc(c.sw) == c.errc);
  }
  // The counted forms come before the table.
  CHECK(sw::to_errc(0x63C1) == Errc::bad_mac);
  CHECK(sw::to_errc(0x6C10) == Errc::bad_length);
  CHECK(sw::to_errc(0x6110) == Errc::internal);
  CHECK(sw::to_errc(0x6A82) == Errc::not_found);
}

TEST_CASE("errc_name spells every error code as the logs and the API show it", "[result]") {
  const std::pair<Errc, std::string_view> names[] = {
      {Errc::truncated, "truncated"},     {Errc::trailing_data, "trailing_data"}, {Errc::bad_length, "bad_length"},
      {Errc::bad_value, "bad_value"},     {Errc::unsupported, "unsupported"},     {Errc::bad_mac, "bad_mac"},
      {Errc::replay, "replay"},           {Errc::unknown_key, "unknown_key"},     {Errc::crypto, "crypto"},
      {Errc::io, "io"},                   {Errc::timeout, "timeout"},             {Errc::state, "state"},
      {Errc::not_found, "not_found"},     {Errc::conflict, "conflict"},           {Errc::internal, "internal"},
      {Errc::unavailable, "unavailable"},
  };
  for (const auto& [e, name] : names) CHECK(errc_name(e) == name);
  CHECK(std::string_view(errc_name(static_cast<Errc>(200))) == "unknown");
}
