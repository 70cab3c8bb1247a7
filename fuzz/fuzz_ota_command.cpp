// libFuzzer target: TS 102 225 command packets, peek and full open with fixed keys.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "otac/common/bytes.hpp"
#include "otac/common/ota.hpp"

namespace {
// Fixed test keys: the fuzzer must reach the MAC and decipher paths for every algorithm,
// so the keys are 3DES-2key sized (AES-128 accepts 16 bytes too) and 3DES-3key sized.
const otac::SecretBytes k16(otac::hex("404142434445464748494a4b4c4d4e4f"));
const otac::SecretBytes k24(otac::hex("404142434445464748494a4b4c4d4e4f5051525354555657"));
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const otac::ByteView in(data, size);
  auto peek = otac::ota::peek_command(in);
  for (const auto* key : {&k16, &k24}) {
    auto opened = otac::ota::open_command(in, *key, *key);
    // Whatever opens must have peeked, with the same header.
    if (opened && (!peek || opened->header.tar != peek->header.tar)) std::abort();
    if (opened) {
      // And must rebuild to a packet that opens to the same data.
      auto again = otac::ota::build_command(opened->header, opened->counter, opened->data, *key, *key);
      if (!again) std::abort();
      auto reopened = otac::ota::open_command(*again, *key, *key);
      if (!reopened || reopened->data != opened->data) std::abort();
    }
  }
  return 0;
}
