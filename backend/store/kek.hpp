// Key custody: the key-encryption key (KEK) that protects card keys and OTACs at rest, the
// key that chains the audit log, and (with a token) the server's two ECDSA keys.
//
// Two custodies, told apart by the first byte of every sealed value, so that one store may
// hold both while a migration or a rotation runs (each row records what wraps it):
//
// 01: the file KEK (the default). A 32-byte file outside the database (mode 0600, created if
//     absent); from it we derive an AES-256 key and an HMAC-SHA-256 key (SP 800-108, one
//     label each) and seal with encrypt-then-MAC:
//       sealed = 01 || IV(16) || AES-256-CBC(enc, IV, pad_m2(plain)) || HMAC(mac, "OTAC-KEK-1" || [len ad]_4 || ad || 01 || IV || C)
// 02: a PKCS#11 token's AES-256 KEK (never extractable), one token object per KEK version
//     (same label, CKA_ID = version, 4 bytes big-endian). AES-GCM inside the token:
//       sealed = 02 || version(4) || IV(12) || C || tag(16),
//       AAD = "OTAC-KEK-2" || 02 || version || [len ad]_4 || ad
// The associated data is the row's identity (table, card, list, index), so a sealed value
// moved to another row does not open. docs/operations.md, "Keys in an HSM", has the reasons.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"

namespace otac::crypto {
class HmacSha256Key;
}

namespace otac::backend {

namespace p11 {
class Token;
}
struct ServerKeyRecord;  // store.hpp

/// Format bytes of sealed values (the first byte).
inline constexpr std::uint8_t kSealedFile = 0x01, kSealedToken = 0x02;

/// One place that holds a KEK. Implementations: FileKek and TokenKek.
class KeyCustody {
 public:
  virtual ~KeyCustody() = default;
  /// The format byte of what seal() makes.
  virtual std::uint8_t format() const = 0;
  /// Encrypts and authenticates plain, bound to ad.
  virtual Result<Bytes> seal(ByteView plain, ByteView ad) const = 0;
  /// Opens a sealed value of this custody's format; bad_mac if it was modified or belongs to another ad.
  virtual Result<SecretBytes> open(ByteView sealed, ByteView ad) const = 0;
  /// HMAC-SHA-256 with the audit-chain key.
  virtual Result<Bytes> audit_mac(ByteView data) const = 0;
};

/// The file KEK (format 01).
class FileKek final : public KeyCustody {
 public:
  /// Loads the KEK file, creating it (0600, 32 random bytes) if absent. Refuses a file whose
  /// permissions allow group or other access, or whose size is not 32 bytes.
  static Result<FileKek> load_or_create(const std::filesystem::path& file);
  /// Loads an existing KEK file; not_found when it does not exist (never creates one).
  static Result<FileKek> load(const std::filesystem::path& file);
  /// A KEK from raw bytes (tests).
  static FileKek from_bytes(const SecretBytes& kek);

  std::uint8_t format() const override { return kSealedFile; }
  Result<Bytes> seal(ByteView plain, ByteView ad) const override;
  Result<SecretBytes> open(ByteView sealed, ByteView ad) const override;
  Result<Bytes> audit_mac(ByteView data) const override;
  /// The audit-chain key, for importing it into a token at migration (the chain goes on).
  const SecretBytes& audit_key() const { return audit_; }

 private:
  SecretBytes enc_;
  SecretBytes audit_;
  // mac_ and audit_ keyed once (HMAC-SHA-256): every open and audit entry uses them.
  std::shared_ptr<const crypto::HmacSha256Key> tag_;
  std::shared_ptr<const crypto::HmacSha256Key> chain_;
};

/// Where the keys live in a token: the PKCS#11 object labels.
struct TokenLabels {
  std::string kek = "kek";             ///< AES KEK, one object per version (CKA_ID)
  std::string audit = "kek-audit";     ///< HMAC key chaining the audit log
  std::string server = "otac-server";  ///< ECDSA P-256 key signing E5 lists
  std::string card_ca = "otac-card-ca";  ///< ECDSA P-256 key signing the server point (E4)
};

/// A token KEK (format 02) and the signing keys beside it.
class TokenKek final : public KeyCustody {
 public:
  /// Finds the KEK versions and the audit key in the token; not_found names what is missing
  /// (run the key ceremony first). The highest version seals.
  static Result<std::shared_ptr<TokenKek>> open(std::shared_ptr<p11::Token> token, TokenLabels labels);
  ~TokenKek() override;

  std::uint8_t format() const override { return kSealedToken; }
  Result<Bytes> seal(ByteView plain, ByteView ad) const override;
  Result<SecretBytes> open(ByteView sealed, ByteView ad) const override;
  Result<Bytes> audit_mac(ByteView data) const override;

  /// The version that seals now (the highest in the token; re-read at most once a second,
  /// so every process follows a rotation started by another).
  Result<std::uint32_t> current_version() const;
  /// The KEK version of a sealed value of this format.
  static Result<std::uint32_t> version_of(ByteView sealed);
  /// The token and its labels (for the key ceremony).
  p11::Token& token() const { return *token_; }
  const TokenLabels& labels() const { return labels_; }

  struct Versions;

 private:
  Result<Bytes> seal_once(ByteView plain, ByteView ad) const;
  Result<SecretBytes> open_once(ByteView sealed, ByteView ad) const;
  Result<Bytes> audit_mac_once(ByteView data) const;
  /// Drops the cached object handles (stale after the token re-read its objects).
  void forget_handles() const;
  /// The highest version and its handle.
  Result<std::pair<std::uint32_t, unsigned long>> current_key() const;
  TokenKek(std::shared_ptr<p11::Token> token, TokenLabels labels);
  std::shared_ptr<p11::Token> token_;
  TokenLabels labels_;
  std::unique_ptr<Versions> versions_;
};

/// A server key held in a token: its public point and a signer (ECDSA P-256 with SHA-256,
/// DER signature, made inside the token).
struct HeldServerKey {
  Bytes public_point;
  std::function<Result<Bytes>(ByteView message)> sign;
};

/// The store's view of key custody: seals with one custody, opens what either made, and
/// names the server keys a token holds. Thread-safe (const, shared by every connection).
class Kek {
 public:
  /// The file KEK alone (unchanged behaviour and format).
  static Result<Kek> load_or_create(const std::filesystem::path& file);
  /// A file KEK from raw bytes (tests).
  static Kek from_bytes(const SecretBytes& kek);
  /// A token KEK that seals; an optional file KEK that still opens format 01 (migration).
  /// hold_server_keys: the token, not the store, holds the server and card CA keys.
  static Kek with_token(std::shared_ptr<const TokenKek> token, std::optional<FileKek> file, bool hold_server_keys);

  /// Encrypts and authenticates plain, bound to ad. Throws std::runtime_error when the
  /// custody cannot be reached (a token gone): the store's transaction is then rolled back.
  Bytes seal(ByteView plain, ByteView ad) const;
  /// Opens a sealed value of either format; bad_mac if it was modified or belongs to another ad.
  Result<SecretBytes> open(ByteView sealed, ByteView ad) const;
  /// HMAC-SHA-256 over data with the audit-chain key (in the token when there is one).
  /// Throws std::runtime_error when the custody cannot be reached.
  Bytes audit_mac(ByteView data) const;
  /// The server key name ("server" or "card-ca") when a token holds it; not_found when the
  /// store holds it (sealed like the card keys).
  Result<HeldServerKey> held_server_key(std::string_view name) const;

  const TokenKek* token() const { return token_.get(); }
  const FileKek* file() const { return file_ ? &*file_ : nullptr; }

 private:
  std::shared_ptr<const TokenKek> token_;
  std::optional<FileKek> file_;
  bool hold_server_keys_ = false;
};

/// The record of a server key a token holds, checked against the point the store recorded
/// (empty: no row): a token whose key differs from the one cards trust is refused. not_found
/// when the store, not a token, holds this key.
Result<ServerKeyRecord> held_server_record(const Kek& kek, std::string_view name, ByteView stored_point,
                                           std::int64_t created_at);

}  // namespace otac::backend
