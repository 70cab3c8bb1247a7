// A TCP port on 127.0.0.1 for a daemon a test starts, from tests/support/freeport.sh (whose
// path the test target defines as OTAC_FREEPORT_SH): outside the kernel's ephemeral range and
// reserved against parallel tests, so it is still free when the daemon binds it.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace otac::test {

inline std::uint16_t free_port() {
  std::FILE* p = ::popen("/bin/bash " OTAC_FREEPORT_SH " 1", "r");
  REQUIRE(p != nullptr);
  char line[16] = {};
  const bool got = std::fgets(line, sizeof line, p) != nullptr;
  REQUIRE(::pclose(p) == 0);
  REQUIRE(got);
  const long port = std::strtol(line, nullptr, 10);
  REQUIRE(port > 0);
  REQUIRE(port < 65536);
  return static_cast<std::uint16_t>(port);
}

}  // namespace otac::test
