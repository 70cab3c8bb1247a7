#include "json_input.hpp"

#include <boost/json/basic_parser_impl.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace otac::backend::http {

namespace {

// Boost.JSON keeps the last of duplicate keys without a word. The API documents strict JSON,
// where {"amount":1,"amount":999} is an error, not a choice: a first pass with basic_parser
// finds duplicates at every depth. It runs only on bodies the value parser accepted.
//
// The keys of the objects still open are kept in one vector (short keys stay in the strings'
// own storage, so a request's keys cost no allocation each); an object's keys are sorted
// and compared when it closes, O(k log k) for k keys, so that a 64 KiB body of thousands of
// keys costs no more than its size says.
struct DuplicateKeyFinder {
  static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
  using ec_t = boost::system::error_code;
  using sv = boost::json::string_view;

  std::vector<std::string> keys;    // the keys of every open object, innermost last
  std::vector<std::size_t> starts;  // where each open object's keys begin in keys
  std::string key;
  std::string duplicate;

  bool on_document_begin(ec_t&) { return true; }
  bool on_document_end(ec_t&) { return true; }
  bool on_object_begin(ec_t&) {
    starts.push_back(keys.size());
    return true;
  }
  bool on_object_end(std::size_t, ec_t& ec) {
    const auto first = keys.begin() + static_cast<std::ptrdiff_t>(starts.back());
    std::sort(first, keys.end());
    if (const auto d = std::adjacent_find(first, keys.end()); d != keys.end()) {
      duplicate = *d;
      ec = boost::json::error::syntax;
      return false;
    }
    keys.erase(first, keys.end());
    starts.pop_back();
    return true;
  }
  bool on_array_begin(ec_t&) { return true; }
  bool on_array_end(std::size_t, ec_t&) { return true; }
  bool on_key_part(sv s, std::size_t, ec_t&) {
    key.append(s.data(), s.size());
    return true;
  }
  bool on_key(sv s, std::size_t, ec_t&) {
    key.append(s.data(), s.size());
    keys.push_back(std::move(key));
    key.clear();
    return true;
  }
  bool on_string_part(sv, std::size_t, ec_t&) { return true; }
  bool on_string(sv, std::size_t, ec_t&) { return true; }
  bool on_number_part(sv, ec_t&) { return true; }
  bool on_int64(std::int64_t, sv, ec_t&) { return true; }
  bool on_uint64(std::uint64_t, sv, ec_t&) { return true; }
  bool on_double(double, sv, ec_t&) { return true; }
  bool on_bool(bool, ec_t&) { return true; }
  bool on_null(ec_t&) { return true; }
  bool on_comment_part(sv, ec_t&) { return true; }
  bool on_comment(sv, ec_t&) { return true; }
};

/// The first key that appears twice in one object of `body` (valid JSON), or "".
std::string duplicate_key(std::string_view body, const boost::json::parse_options& opt) {
  boost::json::basic_parser<DuplicateKeyFinder> p(opt);
  p.handler().keys.reserve(16);
  boost::system::error_code ec;
  p.write_some(false, body.data(), body.size(), ec);
  return p.handler().duplicate;
}

}  // namespace

Result<boost::json::object> parse_object(std::string_view body, std::initializer_list<std::string_view> allowed,
                                         boost::json::storage_ptr sp) {
  if (body.empty()) return make_error(Errc::bad_value, "request body must be a JSON object");
  boost::json::parse_options opt;
  opt.max_depth = 8;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(body, ec, std::move(sp), opt);
  if (ec) return make_error(Errc::bad_value, "request body is not valid JSON: " + ec.message());
  if (!v.is_object()) return make_error(Errc::bad_value, "request body must be a JSON object");
  if (const std::string dup = duplicate_key(body, opt); !dup.empty())
    return make_error(Errc::bad_value, "duplicate field \"" + dup + "\" (each field may appear once)");
  boost::json::object o = std::move(v.as_object());
  for (const auto& kv : o) {
    bool known = false;
    for (const auto a : allowed) known = known || kv.key() == a;
    if (!known) {
      std::string list;
      for (const auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return make_error(Errc::bad_value, "unknown field \"" + std::string(kv.key()) + "\" (allowed: " + list + ")");
    }
  }
  return o;
}

bool Fields::has(std::string_view key) const {
  auto it = o_.find(key);
  return it != o_.end() && !it->value().is_null();
}

const boost::json::value* Fields::get(std::string_view key, bool required) {
  auto it = o_.find(key);
  if (it == o_.end() || it->value().is_null()) {
    if (required) fail("missing field \"" + std::string(key) + "\"");
    return nullptr;
  }
  return &it->value();
}

std::string Fields::str(std::string_view key, bool required, std::size_t max_len, bool any_text) {
  const auto* v = get(key, required);
  if (!v) return {};
  if (!v->is_string()) { fail("field \"" + std::string(key) + "\" must be a string"); return {}; }
  const auto& s = v->as_string();
  if (s.size() > max_len) { fail("field \"" + std::string(key) + "\" is longer than " + std::to_string(max_len) + " bytes"); return {}; }
  if (!any_text) {
    for (const char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u > 0x7e) { fail("field \"" + std::string(key) + "\" must be printable ASCII"); return {}; }
    }
  }
  return std::string(s.data(), s.size());
}

std::int64_t Fields::integer(std::string_view key, bool required, std::int64_t lo, std::int64_t hi, std::int64_t def) {
  const auto* v = get(key, required);
  if (!v) return def;
  std::int64_t x = 0;
  if (v->is_int64()) x = v->as_int64();
  else if (v->is_uint64() && v->as_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) x = static_cast<std::int64_t>(v->as_uint64());
  else {
    fail("field \"" + std::string(key) + "\" must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
    return def;
  }
  if (x < lo || x > hi) {
    fail("field \"" + std::string(key) + "\" must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
    return def;
  }
  return x;
}

Bytes Fields::hexbytes(std::string_view key, bool required, std::size_t min, std::size_t max) {
  const auto* v = get(key, required);
  if (!v) return {};
  if (!v->is_string()) { fail("field \"" + std::string(key) + "\" must be a hex string"); return {}; }
  const auto& s = v->as_string();
  if (s.size() > 2 * max + 2) { fail("field \"" + std::string(key) + "\" is longer than " + std::to_string(max) + " bytes"); return {}; }
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      fail("field \"" + std::string(key) + "\" must be hex digits only");
      return {};
    }
  }
  auto b = from_hex(std::string_view(s.data(), s.size()));
  if (!b) { fail("field \"" + std::string(key) + "\" is not valid hex (odd number of digits)"); return {}; }
  if (b->size() < min || b->size() > max) {
    fail("field \"" + std::string(key) + "\" must be " +
         (min == max ? std::to_string(min) : std::to_string(min) + " to " + std::to_string(max)) + " bytes");
    return {};
  }
  return std::move(*b);
}

bool Fields::boolean(std::string_view key, bool required, bool def) {
  const auto* v = get(key, required);
  if (!v) return def;
  if (!v->is_bool()) { fail("field \"" + std::string(key) + "\" must be true or false"); return def; }
  return v->as_bool();
}

const boost::json::array* Fields::array(std::string_view key, bool required) {
  const auto* v = get(key, required);
  if (!v) return nullptr;
  if (!v->is_array()) { fail("field \"" + std::string(key) + "\" must be an array"); return nullptr; }
  return &v->as_array();
}

}  // namespace otac::backend::http
