// Key-encryption key: protects card keys and OTACs at rest.
//
// The KEK is a 32-byte file outside the database (mode 0600, created if absent). From it we
// derive an AES-256 key and an HMAC-SHA-256 key (SP 800-108, one label each) and seal with
// encrypt-then-MAC, because crypto.hpp offers AES-CBC and HMAC but no AEAD mode:
//   sealed = 01 || IV(16) || AES-256-CBC(enc, IV, pad_m2(plain)) || HMAC(mac, "OTAC-KEK-1" || [len ad]_4 || ad || 01 || IV || C)
// The associated data is the row's identity (table, card, list, index), so a sealed value
// moved to another row does not open.
#pragma once

#include <filesystem>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"

namespace otac::backend {

/// A loaded key-encryption key.
class Kek {
 public:
  /// Loads the KEK file, creating it (0600, 32 random bytes) if absent. Refuses a file whose
  /// permissions allow group or other access, or whose size is not 32 bytes.
  static Result<Kek> load_or_create(const std::filesystem::path& file);
  /// A KEK from raw bytes (tests).
  static Kek from_bytes(const SecretBytes& kek);

  /// Encrypts and authenticates plain, bound to ad.
  Bytes seal(ByteView plain, ByteView ad) const;
  /// Opens a sealed value; bad_mac if it was modified or belongs to another ad.
  Result<SecretBytes> open(ByteView sealed, ByteView ad) const;
  /// The key that chains the audit log (derived, distinct from the sealing keys).
  const SecretBytes& audit_key() const { return audit_; }

 private:
  SecretBytes enc_;
  SecretBytes mac_;
  SecretBytes audit_;
};

}  // namespace otac::backend
