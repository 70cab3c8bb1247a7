// libFuzzer target: the hex parser used for every key, packet and APDU given on a command line.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "otac/common/bytes.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = otac::from_hex(text);
  if (r) {
    // Whatever parsed must print back to the same bytes.
    auto again = otac::from_hex(otac::to_hex(*r));
    if (!again || *again != *r) std::abort();
  }
  return 0;
}
