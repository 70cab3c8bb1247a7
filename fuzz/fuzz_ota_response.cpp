// libFuzzer target: TS 102 225 response packets (PoR), TAR peek and full open with fixed keys
// under every PoR security variant chosen by the first input byte.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "otac/common/bytes.hpp"
#include "otac/common/ota.hpp"

namespace {
const otac::SecretBytes k16(otac::hex("404142434445464748494a4b4c4d4e4f"));
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  // Byte 0: SPI second octet; byte 1: KIc/KID (the same byte for both). Rest: the packet.
  auto spi = otac::ota::Spi::decode(static_cast<std::uint16_t>(0x0600 | data[0]));
  if (!spi) return 0;
  const otac::ota::PorSecurity sec{*spi, data[1], data[1]};
  const otac::ByteView in(data + 2, size - 2);
  (void)otac::ota::peek_response_tar(in);
  auto opened = otac::ota::open_response(in, sec, k16, k16);
  if (opened) {
    auto again = otac::ota::build_response(sec, *opened, k16, k16);
    if (!again) std::abort();
    auto reopened = otac::ota::open_response(*again, sec, k16, k16);
    if (!reopened || reopened->data != opened->data || reopened->status != opened->status) std::abort();
  }
  return 0;
}
