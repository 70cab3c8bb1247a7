// libFuzzer target: the MO listener's URL handling as Kannel's get-url delivers it: split and
// percent-decode the target, then the UDH length rule used by backend/sms. Must not crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "router.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view t(reinterpret_cast<const char*>(data), size);
  std::string path;
  std::map<std::string, std::string> q;
  if (!otac::backend::http::split_target(t, path, q)) return 0;
  auto it = q.find("udh");
  if (it != q.end() && !it->second.empty()) {
    const auto udhl = static_cast<unsigned char>(it->second[0]);
    (void)(udhl == it->second.size() - 1);
  }
  // Round trip: encoding then decoding gives the value back.
  for (const auto& [k, v] : q) {
    auto back = otac::percent_decode(otac::percent_encode(v), true);
    if (!back || *back != v) __builtin_trap();
  }
  return 0;
}
