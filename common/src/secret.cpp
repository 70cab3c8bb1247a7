#include "otac/common/secret.hpp"

#include <openssl/crypto.h>

namespace otac {

void secure_zero(void* p, std::size_t n) noexcept { OPENSSL_cleanse(p, n); }

bool ct_equal(ByteView a, ByteView b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace otac
