// Secret bytes: zeroized when dropped, never printed, compared in constant time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "otac/common/bytes.hpp"

namespace otac {

/// Overwrites memory in a way the compiler cannot remove (OPENSSL_cleanse).
void secure_zero(void* p, std::size_t n) noexcept;

/// Constant-time equality of two byte strings (CRYPTO_memcmp); lengths may leak.
bool ct_equal(ByteView a, ByteView b) noexcept;

/// A key or other secret. Move-only; the storage is wiped on destruction and on move-from.
/// There is deliberately no stream operator and no to_hex overload.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(ByteView v) : b_(v.begin(), v.end()) {}
  explicit SecretBytes(std::size_t n) : b_(n, 0) {}
  ~SecretBytes() { wipe(); }
  SecretBytes(SecretBytes&& o) noexcept : b_(std::move(o.b_)) { o.b_.clear(); }
  SecretBytes& operator=(SecretBytes&& o) noexcept {
    if (this != &o) { wipe(); b_ = std::move(o.b_); o.b_.clear(); }
    return *this;
  }
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  /// An explicit deep copy, so that copies of secrets are visible in the code.
  SecretBytes clone() const { return SecretBytes(view()); }

  ByteView view() const { return b_; }
  std::uint8_t* data() { return b_.data(); }
  const std::uint8_t* data() const { return b_.data(); }
  std::size_t size() const { return b_.size(); }
  bool empty() const { return b_.empty(); }

 private:
  void wipe() noexcept { if (!b_.empty()) secure_zero(b_.data(), b_.size()); }
  std::vector<std::uint8_t> b_;
};

/// A MAC or cryptogram value; compared only through ct_equal.
struct Mac8 {
  std::uint8_t b[8]{};
  ByteView view() const { return b; }
};

}  // namespace otac
