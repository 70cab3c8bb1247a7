// libFuzzer target: ENVELOPE (SMS-PP DOWNLOAD, D1) and SEND SHORT MESSAGE (D0): what parses
// re-encodes (unless it no longer fits an APDU), and the re-encoding parses to the same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "otac/common/bytes.hpp"
#include "otac/common/envelope.hpp"

namespace env = otac::envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const otac::ByteView in(data, size);
  if (auto d = env::parse_sms_pp_download(in)) {
    auto enc = env::encode(*d);
    if (enc) {
      auto again = env::parse_sms_pp_download(*enc);
      if (!again || !(*again == *d)) std::abort();
    } else if (enc.error().code != otac::Errc::bad_length) {
      std::abort();
    }
  }
  if (auto c = env::parse_send_short_message(in)) {
    auto enc = env::encode(*c);
    if (enc) {
      auto again = env::parse_send_short_message(*enc);
      if (!again || !(*again == *c)) std::abort();
    } else if (enc.error().code != otac::Errc::bad_length) {
      std::abort();
    }
  }
  (void)env::describe(in);
  return 0;
}
