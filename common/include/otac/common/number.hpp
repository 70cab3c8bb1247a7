// Whole decimal numbers from text people type: command-line options and configuration.
#pragma once

#include <cstdint>
#include <string_view>

#include "otac/common/result.hpp"

namespace otac {

/// Parses a whole decimal number from lo to hi: ASCII digits only (no sign, blank, or base
/// prefix) and nothing after them. The error quotes the text (at most 32 characters) and
/// gives the range, e.g. "'abc' is not a whole number from 0 to 400".
Result<std::uint64_t> parse_uint(std::string_view text, std::uint64_t lo, std::uint64_t hi);

}  // namespace otac
