#include "otac/common/result.hpp"

namespace otac {

const char* errc_name(Errc e) noexcept {
  switch (e) {
    case Errc::truncated: return "truncated";
    case Errc::trailing_data: return "trailing_data";
    case Errc::bad_length: return "bad_length";
    case Errc::bad_value: return "bad_value";
    case Errc::unsupported: return "unsupported";
    case Errc::bad_mac: return "bad_mac";
    case Errc::replay: return "replay";
    case Errc::unknown_key: return "unknown_key";
    case Errc::crypto: return "crypto";
    case Errc::io: return "io";
    case Errc::timeout: return "timeout";
    case Errc::state: return "state";
    case Errc::not_found: return "not_found";
    case Errc::conflict: return "conflict";
    case Errc::internal: return "internal";
    case Errc::unavailable: return "unavailable";
  }
  return "unknown";
}

}  // namespace otac
