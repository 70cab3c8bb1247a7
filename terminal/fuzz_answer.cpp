// libFuzzer target: the parser of the backend's JSON answers. An approval must never come
// out without an auth code, ARC 3030 and an 8-byte ARPC.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "terminal/backend_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto a = otac::terminal::parse_answer(text);
  if (a && a->decision == otac::terminal::Decision::approved &&
      (a->auth_code.empty() || a->arpc.size() != 8 || a->arc.size() != 2))
    __builtin_trap();
  (void)otac::terminal::error_summary(text);
  return 0;
}
