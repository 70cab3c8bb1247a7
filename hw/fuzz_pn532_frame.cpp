// libFuzzer: the PN532 frame decoder on arbitrary host byte streams fed in arbitrary pieces.
// Invariants: no crash, bounded buffer, and every decoded information frame re-encodes to a
// frame that decodes to the same data.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "otac/hw/pn532_frame.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace otac::hw::pn532;
  if (size == 0) return 0;
  const std::size_t step = 1 + data[0] % 64;  // first byte picks the chunk size
  FrameDecoder d;
  for (std::size_t pos = 1; pos < size; pos += step) {
    const std::size_t n = pos + step <= size ? step : size - pos;
    d.feed(otac::ByteView(data + pos, n));
    for (int i = 0; i < 1000; ++i) {
      auto f = d.next();
      if (!f) break;
      if (!*f || f->value().kind != FrameKind::information) continue;
      FrameDecoder again;
      again.feed(encode_frame(f->value().data));
      auto g = again.next();
      if (!g || !*g || g->value().data != f->value().data) std::abort();
    }
    if (d.buffered() > 4096) std::abort();
  }
  return 0;
}
