// libFuzzer target: the card's persistent state as read back from storage (a state file that a
// crash, a full disk or an editor may have damaged). Whatever decodes must re-encode to a blob
// that decodes again to the same encoding: the fixed layout leaves one representation.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "state.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto st = otac::applet::decode_state(otac::ByteView(data, size));
  if (!st) return 0;
  (void)st->unused();
  (void)st->current();
  (void)st->latest_list();
  const otac::Bytes once = otac::applet::encode_state(*st);
  auto again = otac::applet::decode_state(once);
  if (!again) std::abort();  // our own encoding must decode
  if (otac::applet::encode_state(*again) != once) std::abort();
  return 0;
}
