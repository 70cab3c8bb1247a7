// The Kannel fake-SMSC line protocol: one URL-encoded text line per message.
#include <string>

#include "host.hpp"

namespace otac::card_host {
namespace {

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
  return percent_encode(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
}

Result<Bytes> url_decode(std::string_view s) {
  auto text = percent_decode(s, true);
  if (!text) return text.error();
  return to_bytes(*text);
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
