#include "otac/sys/log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace otac::sys::log {
namespace {

std::mutex g_mu;

void append_value(std::string& out, std::string_view v) {
  bool quote = v.empty();
  for (const char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '"' || c == '=' || u < 0x20 || u == 0x7f) { quote = true; break; }
  }
  if (!quote) { out.append(v); return; }
  out.push_back('"');
  for (const char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') { out.push_back('\\'); out.push_back(c); }
    else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out.append(buf);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

// Writes n decimal digits of v at p, zero-padded.
void put_digits(char* p, int v, int n) {
  for (int i = n - 1; i >= 0; --i, v /= 10) p[i] = static_cast<char>('0' + v % 10);
}

}  // namespace

std::string format(std::string_view level, std::string_view event, const Fields& fields) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  // 2026-12-07T01:23:45.678Z, formatted by hand: snprintf was a third of a line's cost, and
  // the backend writes a line per request.
  char ts[] = "0000-00-00T00:00:00.000Z";
  put_digits(ts, tm.tm_year + 1900, 4);
  put_digits(ts + 5, tm.tm_mon + 1, 2);
  put_digits(ts + 8, tm.tm_mday, 2);
  put_digits(ts + 11, tm.tm_hour, 2);
  put_digits(ts + 14, tm.tm_min, 2);
  put_digits(ts + 17, tm.tm_sec, 2);
  put_digits(ts + 20, static_cast<int>(ms), 3);
  std::size_t size = 64 + level.size() + event.size();
  for (const auto& [k, v] : fields) size += k.size() + v.size() + 4;
  std::string line;
  line.reserve(size);
  line += "ts=";
  line += ts;
  line += " level=";
  line += level;
  line += " event=";
  append_value(line, event);
  for (const auto& [k, v] : fields) {
    line.push_back(' ');
    line += k;
    line.push_back('=');
    append_value(line, v);
  }
  line.push_back('\n');
  return line;
}

void write_lines(std::string_view lines) {
  if (lines.empty()) return;
  std::lock_guard lock(g_mu);
  std::fwrite(lines.data(), 1, lines.size(), stderr);
  std::fflush(stderr);
}

void write(std::string_view level, std::string_view event, const Fields& fields) {
  write_lines(format(level, event, fields));
}

}  // namespace otac::sys::log
