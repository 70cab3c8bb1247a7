// libFuzzer: the OTAC protocol parsers (challenge, card answer, FCI, inner commands) and the
// encoders on what they accept.
#include <cstddef>
#include <cstdint>

#include "otac/common/protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const otac::ByteView in(data, size);
  if (auto c = otac::protocol::Challenge::parse(in)) {
    (void)c->encode();
    (void)otac::protocol::mac_input(*c, otac::protocol::CardAnswer{});
  }
  if (auto a = otac::protocol::CardAnswer::parse(in)) (void)a->encode();
  if (auto f = otac::protocol::Fci::parse(in)) (void)f->encode();
  for (bool mac : {false, true})
    if (auto p = otac::protocol::parse_inner(in, mac))
      for (const auto& node : p->commands)
        if (auto cmd = otac::protocol::decode_inner(node)) (void)otac::protocol::encode_inner(*cmd);
  return 0;
}
