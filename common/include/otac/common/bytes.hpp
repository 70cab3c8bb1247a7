// Byte strings, views and hex.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/result.hpp"

namespace otac {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

/// Lower-case hex of the bytes, no separators.
std::string to_hex(ByteView data);

/// Parses hex; whitespace and ':' between byte pairs are ignored; odd length or a non-hex
/// character is an error.
Result<Bytes> from_hex(std::string_view text);

/// Parses hex that is known good (test data, constants); throws std::invalid_argument if not.
Bytes hex(std::string_view text);

/// Percent-encoding (RFC 3986): every byte except the unreserved A-Z a-z 0-9 - . _ ~ as %XX
/// (upper-case hex), as URLs, HTTP query strings and Kannel's fake-SMSC lines carry bytes.
std::string percent_encode(std::string_view s);
/// Percent-decoding: %XX escapes, and '+' as a space when form is true
/// (application/x-www-form-urlencoded). A '%' without two hex digits after it is an error:
/// Errc::truncated at the end of the text, Errc::bad_value otherwise.
Result<std::string> percent_decode(std::string_view s, bool form = true);

/// Appends src to dst.
inline void append(Bytes& dst, ByteView src) { dst.insert(dst.end(), src.begin(), src.end()); }

/// Concatenation of any number of byte views.
Bytes concat(std::initializer_list<ByteView> parts);

/// Big-endian encoding of v in n bytes (n in 1..8).
Bytes be_bytes(std::uint64_t v, std::size_t n);
/// The same appended to dst, for a caller that already has the buffer.
void append_be(Bytes& dst, std::uint64_t v, std::size_t n);
/// The same in N bytes on the stack, for a hot path that would otherwise allocate per field.
template <std::size_t N>
std::array<std::uint8_t, N> be_array(std::uint64_t v) {
  static_assert(N >= 1 && N <= 8, "be_array: width must be 1..8");
  std::array<std::uint8_t, N> out{};
  for (std::size_t i = 0; i < N; ++i) out[N - 1 - i] = static_cast<std::uint8_t>(v >> (8 * i));
  return out;
}

/// A view of a string's bytes.
inline ByteView as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

/// Bytes of a string.
inline Bytes to_bytes(std::string_view s) {
  auto v = as_bytes(s);
  return {v.begin(), v.end()};
}

}  // namespace otac
