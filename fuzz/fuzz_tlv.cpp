// libFuzzer target: BER-TLV parse; what parses must re-encode to the same bytes (the parser
// accepts only minimal definite lengths, so the encoding is unique), and dump never fails.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "otac/common/bytes.hpp"
#include "otac/common/tlv.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const otac::ByteView in(data, size);
  auto nodes = otac::tlv::parse(in);
  if (nodes) {
    const otac::Bytes again = otac::tlv::encode(*nodes);
    if (again.size() != in.size() || !std::equal(again.begin(), again.end(), in.begin())) std::abort();
  } else if (nodes.error().message.empty()) {
    std::abort();
  }
  (void)otac::tlv::dump(in);
  return 0;
}
