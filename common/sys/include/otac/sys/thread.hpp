// Thread names, as top -H, ps -L, perf and gdb show them.
#pragma once

#include <string_view>

namespace otac::sys {

/// Names the calling thread (Linux keeps the first 15 bytes); failures are ignored.
void name_this_thread(std::string_view name) noexcept;

}  // namespace otac::sys
