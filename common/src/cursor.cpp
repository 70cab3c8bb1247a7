#include "otac/common/cursor.hpp"

namespace otac {

bool Cursor::need(std::size_t n, const char* field) {
  if (failed_) return false;
  if (data_.size() - pos_ < n) {
    fail(Errc::truncated, what_ + ": truncated in " + field + " (needs " + std::to_string(n) +
                              " bytes at offset " + std::to_string(pos_) + ", " +
                              std::to_string(data_.size() - pos_) + " left)");
    return false;
  }
  return true;
}

void Cursor::fail(Errc code, std::string message) {
  if (failed_) return;
  failed_ = true;
  error_ = Error{code, std::move(message)};
}

std::uint8_t Cursor::u8(const char* field) {
  if (!need(1, field)) return 0;
  return data_[pos_++];
}

std::uint64_t Cursor::be(std::size_t n, const char* field) {
  if (n == 0 || n > 8) {
    fail(Errc::internal, what_ + ": bad integer width for " + field);
    return 0;
  }
  if (!need(n, field)) return 0;
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | data_[pos_++];
  return v;
}

std::uint16_t Cursor::u16(const char* field) { return static_cast<std::uint16_t>(be(2, field)); }
std::uint32_t Cursor::u24(const char* field) { return static_cast<std::uint32_t>(be(3, field)); }
std::uint32_t Cursor::u32(const char* field) { return static_cast<std::uint32_t>(be(4, field)); }

ByteView Cursor::take(std::size_t n, const char* field) {
  if (!need(n, field)) return {};
  auto v = data_.subspan(pos_, n);
  pos_ += n;
  return v;
}

ByteView Cursor::rest() {
  if (failed_) return {};
  auto v = data_.subspan(pos_);
  pos_ = data_.size();
  return v;
}

std::uint8_t Cursor::peek(const char* field) {
  if (!need(1, field)) return 0;
  return data_[pos_];
}

Result<void> Cursor::finish() const {
  if (failed_) return error_;
  if (pos_ != data_.size())
    return make_error(Errc::trailing_data, what_ + ": " + std::to_string(data_.size() - pos_) +
                                               " trailing bytes after offset " + std::to_string(pos_));
  return {};
}

}  // namespace otac
