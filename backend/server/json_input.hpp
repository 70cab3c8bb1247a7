// Strict JSON request bodies: an object with known keys only, typed fields with ranges.
// The first problem found becomes a 400 answer with a message naming the field.
#pragma once

#include <boost/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::backend::http {

/// Parses body as a JSON object whose keys are all in allowed (depth and size bounded). The
/// object's memory comes from sp: the heap by default, or an arena of the caller's (a
/// boost::json::monotonic_resource over a stack buffer) that must outlive the object.
Result<boost::json::object> parse_object(std::string_view body, std::initializer_list<std::string_view> allowed,
                                         boost::json::storage_ptr sp = {});

/// Typed access to a parsed object; remembers the first error.
class Fields {
 public:
  explicit Fields(const boost::json::object& o) : o_(o) {}
  /// True if the key is present (and not null).
  bool has(std::string_view key) const;
  /// A string of at most max_len bytes of printable ASCII (or any UTF-8 if any_text).
  std::string str(std::string_view key, bool required, std::size_t max_len = 256, bool any_text = false);
  /// An integer in [lo, hi]; def when absent and optional.
  std::int64_t integer(std::string_view key, bool required, std::int64_t lo, std::int64_t hi, std::int64_t def = 0);
  /// Hex of min..max bytes.
  Bytes hexbytes(std::string_view key, bool required, std::size_t min, std::size_t max);
  /// A boolean.
  bool boolean(std::string_view key, bool required, bool def = false);
  /// An array (nullptr when absent and optional).
  const boost::json::array* array(std::string_view key, bool required);
  /// Records an error found by the caller (kept only if none before).
  void fail(std::string message) { if (!error) error = std::move(message); }
  /// The first error, if any.
  std::optional<std::string> error;

 private:
  const boost::json::value* get(std::string_view key, bool required);
  const boost::json::object& o_;
};

}  // namespace otac::backend::http
