// Command-line options of the long soak (see soak_main.cpp).
#pragma once

#include <cstdint>
#include <string>

namespace otac::lifecycle {

struct SoakOptions {
  std::uint64_t steps = 10'000'000;
  std::uint64_t seed = 1;
  std::uint64_t seeds = 1;
  double minutes = 60;
  std::string card = "mixed";
  bool strict = false;  ///< no known bug is treated as open
};

/// The options given on the command line.
SoakOptions& soak_options();

}  // namespace otac::lifecycle
