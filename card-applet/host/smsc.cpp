// The Kannel fake-SMSC line protocol: one URL-encoded text line per message.
#include <string>

#include "host.hpp"

namespace otac::card_host {
namespace {

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Next space-separated token (no empty tokens).
std::optional<std::string_view> token(std::string_view& s) {
  const auto sp = s.find(' ');
  if (sp == 0 || s.empty()) return std::nullopt;
  std::string_view t = s.substr(0, sp);
  s = sp == std::string_view::npos ? std::string_view{} : s.substr(sp + 1);
  return t;
}

}  // namespace

std::string url_encode(ByteView data) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  for (auto b : data) {
    const char c = static_cast<char>(b);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(digits[b >> 4]);
      out.push_back(digits[b & 0x0F]);
    }
  }
  return out;
}

Result<Bytes> url_decode(std::string_view s) {
  Bytes out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return make_error(Errc::truncated, "URL escape cut short");
      const int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
      if (hi < 0 || lo < 0) return make_error(Errc::bad_value, "URL escape is not %XX hex");
      out.push_back(static_cast<std::uint8_t>(hi << 4 | lo));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(static_cast<std::uint8_t>(s[i]));
    }
  }
  return out;
}

Result<FakeSms> parse_mt_line(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  FakeSms m;
  auto from = token(line), to = token(line), kind = token(line);
  if (!from || !to || !kind) return make_error(Errc::bad_value, "fake-SMSC line must be 'from to kind ...'");
  m.from = std::string(*from);
  m.to = std::string(*to);
  std::string_view rest = line;
  if (*kind == "text") {
    m.data = to_bytes(rest);
    return m;
  }
  if (*kind == "udh") {
    auto u = token(rest);
    if (!u) return make_error(Errc::bad_value, "fake-SMSC line: udh value missing");
    auto udh = url_decode(*u);
    if (!udh) return udh.error();
    m.udh = std::move(*udh);
    // Newer Kannel writes "udh <udh> data <bytes>", older "udh <udh> <bytes>".
    if (rest.substr(0, 5) == "data ") rest.remove_prefix(5);
    else if (rest == "data") rest = {};
  } else if (*kind != "data") {
    return make_error(Errc::unsupported, "fake-SMSC line: unknown kind '" + std::string(*kind) + "'");
  }
  auto data = url_decode(rest);
  if (!data) return data.error();
  m.data = std::move(*data);
  return m;
}

std::string format_mo_line(const FakeSms& m) {
  std::string line = m.from + " " + m.to;
  if (!m.udh.empty()) line += " udh " + url_encode(m.udh) + " " + url_encode(m.data);
  else line += " data " + url_encode(m.data);
  line.push_back('\n');
  return line;
}

std::optional<Result<std::string>> LineSplitter::next() {
  for (std::size_t i = 0; i < buf_.size(); ++i) {
    if (buf_[i] == '\n') {
      std::string line(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(i));
      buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(i + 1));
      return Result<std::string>(std::move(line));
    }
  }
  if (buf_.size() > 65536) {
    buf_.clear();
    return Result<std::string>(make_error(Errc::bad_length, "fake-SMSC line longer than 64 KiB dropped"));
  }
  return std::nullopt;
}

}  // namespace otac::card_host
