// libFuzzer: the AUTHENTICATE challenge parser and the MAC-input builder on its output.
#include <cstddef>
#include <cstdint>

#include "challenge.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto c = otac::backend::parse_challenge({data, size});
  if (c) {
    const std::uint8_t n[8] = {};
    (void)otac::backend::mac_input(*c, n, 1, 2, 3, data[0]);
  }
  return 0;
}
