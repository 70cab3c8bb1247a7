// One bounds-checked cursor for every parser: reads never go past the end, and finish()
// refuses trailing bytes.
#pragma once

#include <cstdint>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac {

/// Reads fields from a byte view. After the first failed read the cursor is "failed":
/// later reads return zero or empty without touching memory, and error() says which field
/// ran short. Parsers check ok() before acting on values, and call finish() at the end.
class Cursor {
 public:
  /// what names the structure in error messages ("BER-TLV", "SMS-DELIVER", ...).
  explicit Cursor(ByteView data, std::string what = "input") : data_(data), what_(std::move(what)) {}

  std::uint8_t u8(const char* field);
  std::uint16_t u16(const char* field);  ///< big-endian
  std::uint32_t u24(const char* field);  ///< big-endian
  std::uint32_t u32(const char* field);  ///< big-endian
  std::uint64_t be(std::size_t n, const char* field);  ///< big-endian, n in 1..8
  ByteView take(std::size_t n, const char* field);
  ByteView rest();  ///< everything left; never fails
  std::uint8_t peek(const char* field);  ///< next byte without consuming it

  std::size_t remaining() const { return failed_ ? 0 : data_.size() - pos_; }
  std::size_t position() const { return pos_; }
  bool empty() const { return remaining() == 0; }
  bool ok() const { return !failed_; }

  /// Marks the cursor failed with a specific error (first error wins).
  void fail(Errc code, std::string message);

  /// The error of a failed cursor.
  const Error& error() const { return error_; }

  /// OK when no read failed and every byte was consumed; otherwise the error, including
  /// Errc::trailing_data with the count of bytes left.
  Result<void> finish() const;

 private:
  bool need(std::size_t n, const char* field);

  ByteView data_;
  std::string what_;
  std::size_t pos_ = 0;
  bool failed_ = false;
  Error error_{Errc::internal, {}};
};

}  // namespace otac
