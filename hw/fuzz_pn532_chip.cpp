// libFuzzer: the whole chip model (frame decoder, command parsers, faults) on arbitrary host
// bytes, with an in-memory card. Invariants: no crash, every output is well formed frames.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "otac/hw/pn532_chip.hpp"

namespace {

class EchoCard final : public otac::hw::pn532::Card {
 public:
  bool connected() const override { return true; }
  otac::Result<void> power_on() override { return {}; }
  void power_off() override {}
  otac::Result<otac::Bytes> transmit(otac::ByteView c) override {
    otac::Bytes r(c.begin(), c.end());
    r.push_back(0x90);
    r.push_back(0x00);
    return r;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace otac::hw::pn532;
  EchoCard card;
  Chip chip(card);
  auto now = Chip::Clock::now();
  // Wrap the input as host frames so the command parsers are reached, and also feed it raw.
  for (std::size_t pos = 0; pos < size;) {
    const std::size_t n = std::min<std::size_t>(1 + data[pos] % 40, size - pos);
    otac::Bytes cmd{tfi_host};
    cmd.insert(cmd.end(), data + pos, data + pos + n);
    chip.receive(encode_frame(cmd), now);
    pos += n;
    now += std::chrono::milliseconds(20);
    chip.tick(now);
    // The output must decode as frames (as a host would read them).
    FrameDecoder host;
    host.feed(chip.take_output());
    for (int i = 0; i < 100; ++i) {
      auto f = host.next();
      if (!f) break;
      if (!*f) std::abort();  // no fault is armed, so every frame must check out
    }
  }
  chip.receive(otac::ByteView(data, size), now);
  (void)chip.take_output();
  return 0;
}
