#include "otac/sys/config_file.hpp"

#include "otac/sys/file.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <tuple>

// toml++ header-only in this one file (the rest of the project never sees it), without
// exceptions: parse() returns a result that holds the table or the error and its position.
#define TOML_HEADER_ONLY 1
#define TOML_EXCEPTIONS 0
#define TOML_ENABLE_FORMATTERS 0
#include <toml++/toml.h>

namespace otac::sys::config {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool control(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; }

// A key as it may be shown in a message: at most 40 characters, no control characters.
std::string shown(std::string_view key) {
  std::string s(key.substr(0, 40));
  for (char& c : s)
    if (control(c)) c = '?';
  if (key.size() > 40) s += "...";
  return s;
}

// Line `n` (from 1) of text, without its newline.
std::string_view line_of(std::string_view text, std::size_t n) {
  for (std::size_t i = 1; i < n; ++i) {
    const auto nl = text.find('\n');
    if (nl == std::string_view::npos) return {};
    text.remove_prefix(nl + 1);
  }
  return text.substr(0, text.find('\n'));
}

// The key a syntax error is about: the bare key before '=' on its line, if there is one.
std::string key_on_line(std::string_view line) {
  const auto eq = line.find('=');
  if (eq == std::string_view::npos) return {};
  const auto k = trim(line.substr(0, eq));
  if (k.empty() || k.size() > 64) return {};
  for (const char c : k)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return {};
  return std::string(k);
}

const char* type_rule(Type t) {
  switch (t) {
    case Type::string: return "must be a string in double quotes";
    case Type::integer: return "must be a whole number (without quotes)";
    case Type::boolean: return "must be true or false (without quotes)";
    case Type::strings: return "must be a string in double quotes or an array of them";
  }
  return "has the wrong type";
}

// A string value for a setter: control characters (newlines, NUL, escapes of them) are
// refused in every key; none of them belongs in a path, an address or a name.
Result<std::string> string_of(const toml::node& n) {
  const auto* s = n.as_string();
  if (!s) return make_error(Errc::bad_value, "");
  const std::string& v = s->get();
  if (std::any_of(v.begin(), v.end(), control)) return make_error(Errc::bad_value, "control characters in the value");
  return v;
}

// The node's value as `t` says, or the error (an empty message: the type rule).
Result<Value> value_of(const toml::node& n, Type t) {
  const Error wrong = make_error(Errc::bad_value, type_rule(t));
  switch (t) {
    case Type::string: {
      if (!n.is_string()) return wrong;
      auto s = string_of(n);
      if (!s) return std::move(s).error();
      return Value(std::move(*s));
    }
    case Type::integer:
      if (const auto* i = n.as_integer()) return Value(i->get());
      return wrong;
    case Type::boolean:
      if (const auto* b = n.as_boolean()) return Value(b->get());
      return wrong;
    case Type::strings: {
      std::vector<std::string> all;
      if (n.is_string()) {
        auto s = string_of(n);
        if (!s) return std::move(s).error();
        all.push_back(std::move(*s));
        return Value(std::move(all));
      }
      const auto* a = n.as_array();
      if (!a || a->empty()) return wrong;
      for (const auto& e : *a) {
        if (!e.is_string()) return wrong;
        auto s = string_of(e);
        if (!s) return std::move(s).error();
        all.push_back(std::move(*s));
      }
      return Value(std::move(all));
    }
  }
  return wrong;
}

// A TOML basic string holding v exactly.
std::string quoted(std::string_view v) {
  std::string out = "\"";
  for (const char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\t') {
      out += "\\t";
    } else if (control(c)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04X", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// A value of the old format as TOML for a key of type t. A value the old reader would have
// refused is written as a string, so that loading the result names the key and the rule.
std::string typed(std::string_view v, Type t) {
  switch (t) {
    case Type::integer: {
      if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string_view::npos) return quoted(v);
      const auto first = v.find_first_not_of('0');
      return first == std::string_view::npos ? "0" : std::string(v.substr(first));  // TOML: no leading zeros
    }
    case Type::boolean:
      if (v == "true" || v == "yes" || v == "1") return "true";
      if (v == "false" || v == "no" || v == "0") return "false";
      return quoted(v);
    case Type::strings: {
      // A comma-separated list of URLs becomes an array.
      if (v.find(',') == std::string_view::npos) return quoted(v);
      std::string out = "[";
      for (std::size_t pos = 0; pos <= v.size();) {
        const auto comma = std::min(v.find(',', pos), v.size());
        if (out.size() > 1) out += ", ";
        out += quoted(trim(v.substr(pos, comma - pos)));
        pos = comma + 1;
      }
      return out + "]";
    }
    case Type::string: break;
  }
  return quoted(v);
}

// A comment of the old format as a TOML comment (TOML allows no control characters but tab).
std::string comment(std::string_view c) {
  std::string s(c);
  for (char& ch : s)
    if (control(ch) && ch != '\t') ch = ' ';
  return s;
}

}  // namespace

Error error(std::string_view source, std::size_t line, std::string_view key, std::string_view what, Errc code) {
  std::string m(source);
  if (line > 0) m += ":" + std::to_string(line);
  m += ": ";
  if (!key.empty()) m += shown(key) + ": ";
  m += what;
  for (char& c : m)  // one line, whatever the file held (toml++ may quote a character it saw)
    if (control(c)) c = '?';
  return make_error(code, std::move(m));
}

Result<Lines> apply(std::string_view text, std::string_view source, const Keys& keys, const Format& format) {
  if (text.size() > max_size)
    return make_error(Errc::bad_length, std::string(source) + ": larger than " + std::to_string(max_size) + " bytes");
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    const auto& e = parsed.error();
    const std::size_t line = e.source().begin.line;
    std::string what = "not valid TOML: " + std::string(e.description()) + " (column " +
                       std::to_string(e.source().begin.column) + ")";
    if (convert(text, source, keys, format))
      what += "; if this file is in the old key = value format, convert it with \"" + format.convert_command + " " +
              std::string(source) + " > NEW\" (docs/operations.md, \"Config files\")";
    return error(source, line, key_on_line(line_of(text, line)), what);
  }
  // In file order, so that the first error reported is the first in the file.
  std::vector<std::tuple<std::size_t, std::string, const toml::node*>> entries;
  for (auto&& [k, v] : parsed.table()) entries.emplace_back(k.source().begin.line, std::string(k.str()), &v);
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  Lines lines;
  for (const auto& [line, name, node] : entries) {
    const auto it = keys.find(name);
    if (it == keys.end())
      return error(source, line, name, "unknown key (" + format.keys_help + " lists the known keys)");
    auto v = value_of(*node, it->second.type);
    if (!v) return error(source, line, name, v.error().message);
    if (auto r = it->second.set(*v); !r) return error(source, line, name, r.error().message, r.error().code);
    lines.emplace(name, line);
  }
  return lines;
}

Result<std::string> convert(std::string_view text, std::string_view source, const Keys& keys, const Format& format) {
  struct Entry {
    std::string_view key, value, note;
  };
  // Split every line as the old readers did; a line is blank, a comment or key = value.
  std::vector<std::pair<std::string_view, Entry>> rows;  // (comment-only text, entry)
  std::map<std::string_view, std::size_t> last;         // key -> its last line (from 1)
  std::size_t n = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    ++n;
    const auto nl = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    std::string_view note;
    if (format.old_comment_anywhere) {
      if (const auto hash = line.find('#'); hash != std::string_view::npos) {
        note = trim(line.substr(hash));
        line = line.substr(0, hash);
      }
    }
    line = trim(line);
    if (line.empty() || line.front() == '#') {
      rows.push_back({line.empty() ? note : line, {}});
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) return error(source, n, {}, "expected key = value");
    const auto key = trim(line.substr(0, eq));
    auto value = trim(line.substr(eq + 1));
    if (format.old_strip_quotes && value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    if (!keys.count(key)) return error(source, n, key, "unknown key (" + format.keys_help + " lists the known keys)");
    if (const auto seen = last.find(key); seen != last.end() && !format.old_last_wins)
      return error(source, n, key, "set twice (also on line " + std::to_string(seen->second) + ")");
    last[key] = n;
    rows.push_back({{}, {key, value, note}});
  }
  std::string out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& [only, e] = rows[i];
    const std::size_t line_no = i + 1;
    if (e.key.empty()) {
      out += comment(only);
    } else if (last[e.key] != line_no) {
      out += "# (set again on line " + std::to_string(last[e.key]) + ") " + std::string(e.key) + " = " + comment(e.value);
    } else {
      out += std::string(e.key) + " = " + typed(e.value, keys.find(e.key)->second.type);
      if (!e.note.empty()) out += "  " + comment(e.note);
    }
    out += '\n';
  }
  return out;
}

Result<std::string> read(const std::filesystem::path& file) {
  auto text = sys::read_file(file, max_size);
  if (!text) return make_error(text.error().code, text.error().message + " (the config file)");
  return text;
}

Key text(std::string& dst, bool allow_empty) {
  return {Type::string, [&dst, allow_empty](const Value& v) -> Result<void> {
            const auto& s = std::get<std::string>(v);
            if (s.empty() && !allow_empty) return make_error(Errc::bad_value, "must not be empty");
            dst = s;
            return {};
          }};
}

Key text_to(std::function<Result<void>(const std::string&)> set) {
  return {Type::string, [set = std::move(set)](const Value& v) { return set(std::get<std::string>(v)); }};
}

Key whole(std::uint32_t& dst, std::uint32_t lo, std::uint32_t hi) {
  return {Type::integer, [&dst, lo, hi](const Value& v) -> Result<void> {
            const auto x = std::get<std::int64_t>(v);
            if (x < lo || x > hi)
              return make_error(Errc::bad_value, "must be a whole number from " + std::to_string(lo) + " to " +
                                                     std::to_string(hi) + " (is " + std::to_string(x) + ")");
            dst = static_cast<std::uint32_t>(x);
            return {};
          }};
}

Key flag(bool& dst) {
  return {Type::boolean, [&dst](const Value& v) -> Result<void> {
            dst = std::get<bool>(v);
            return {};
          }};
}

}  // namespace otac::sys::config
