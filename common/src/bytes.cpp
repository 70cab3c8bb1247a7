#include "otac/common/bytes.hpp"

#include <stdexcept>

namespace otac {
namespace {

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string to_hex(ByteView data) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (auto b : data) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0x0F]);
  }
  return out;
}

Result<Bytes> from_hex(std::string_view text) {
  Bytes out;
  out.reserve(text.size() / 2);
  int high = -1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ':') {
      if (high >= 0) return make_error(Errc::bad_value, "hex: separator inside a byte at offset " + std::to_string(i));
      continue;
    }
    const int n = nibble(c);
    if (n < 0) return make_error(Errc::bad_value, "hex: '" + std::string(1, c) + "' at offset " + std::to_string(i) + " is not a hex digit");
    if (high < 0) {
      high = n;
    } else {
      out.push_back(static_cast<std::uint8_t>((high << 4) | n));
      high = -1;
    }
  }
  if (high >= 0) return make_error(Errc::bad_length, "hex: odd number of digits");
  return out;
}

Bytes hex(std::string_view text) {
  auto r = from_hex(text);
  if (!r) throw std::invalid_argument(r.error().message);
  return std::move(r).value();
}

std::string percent_encode(std::string_view s) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || u == '-' || u == '_' ||
        u == '.' || u == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(digits[u >> 4]);
      out.push_back(digits[u & 0x0F]);
    }
  }
  return out;
}

Result<std::string> percent_decode(std::string_view s, bool form) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (s.size() - i < 3) return make_error(Errc::truncated, "URL escape cut short at offset " + std::to_string(i));
      const int hi = nibble(s[i + 1]), lo = nibble(s[i + 2]);
      if (hi < 0 || lo < 0) return make_error(Errc::bad_value, "URL escape at offset " + std::to_string(i) + " is not %XX hex");
      out.push_back(static_cast<char>(hi << 4 | lo));
      i += 2;
    } else if (c == '+' && form) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Bytes concat(std::initializer_list<ByteView> parts) {
  std::size_t n = 0;
  for (auto p : parts) n += p.size();
  Bytes out;
  out.reserve(n);
  for (auto p : parts) append(out, p);
  return out;
}

Bytes be_bytes(std::uint64_t v, std::size_t n) {
  Bytes out;
  append_be(out, v, n);
  return out;
}

void append_be(Bytes& dst, std::uint64_t v, std::size_t n) {
  if (n == 0 || n > 8) throw std::invalid_argument("be_bytes: width must be 1..8");
  // One resize, not a push_back per byte: into an empty vector (be_bytes) that was up to
  // four allocations as the capacity grew 1, 2, 4, 8.
  const std::size_t at = dst.size();
  dst.resize(at + n);
  for (std::size_t i = 0; i < n; ++i) dst[at + n - 1 - i] = static_cast<std::uint8_t>(v >> (8 * i));
}

}  // namespace otac
