#include "otac/common/number.hpp"

#include <charconv>
#include <string>

namespace otac {

Result<std::uint64_t> parse_uint(std::string_view text, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t v = 0;
  // from_chars of an unsigned type takes no sign, blank or prefix; the whole text must be used.
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 10);
  if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi) {
    std::string shown(text.substr(0, 32));
    if (text.size() > 32) shown += "...";
    return make_error(Errc::bad_value, "'" + shown + "' is not a whole number from " + std::to_string(lo) + " to " +
                                           std::to_string(hi));
  }
  return v;
}

}  // namespace otac
