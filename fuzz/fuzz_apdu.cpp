// libFuzzer target: command and response APDUs; what parses must re-encode to the same bytes
// (every ISO 7816-4 case has one encoding once short/extended is known), and the status
// word of any two trailing bytes has a description.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "otac/common/apdu.hpp"
#include "otac/common/bytes.hpp"
#include "otac/common/sw.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const otac::ByteView in(data, size);
  auto c = otac::apdu::parse_command(in);
  if (c) {
    auto again = otac::apdu::encode(*c);
    if (!again || *again != otac::Bytes(in.begin(), in.end())) std::abort();
    if (otac::apdu::describe(*c).empty()) std::abort();
  }
  auto r = otac::apdu::parse_response(in);
  if (r) {
    if (otac::apdu::encode(*r) != otac::Bytes(in.begin(), in.end())) std::abort();
    if (otac::sw::describe(r->sw).empty()) std::abort();
  } else if (size >= 2) {
    std::abort();
  }
  return 0;
}
