// A PKCS#11 token, reached through the module's own function list (dlopen) with p11-kit's
// pkcs11.h, and selected by an RFC 7512 URI parsed by p11-kit (docs/operations.md, "Keys in
// an HSM"). Only what the backend's key custody needs: AES-GCM with a token key, ECDSA and
// HMAC signatures made in the token, and the key ceremony's generation and import.
//
// Thread safety: a Token is shared by every worker; each operation borrows a session from a
// small pool (a PKCS#11 session holds one operation at a time), and the login is per token.
// A token that goes away and comes back is re-opened without a restart (Token::mark_lost).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"

namespace otac::backend::p11 {

/// What an RFC 7512 URI selects: the token (by label, manufacturer, model or serial) and,
/// for keys, the object label and optional id. Parsed by p11-kit.
struct Uri {
  std::string text;          ///< the URI as configured (contains no PIN)
  std::string object;        ///< "object=" label; empty when the URI names no object
  Bytes id;                  ///< "id=" bytes; empty when absent
  std::string module_path;   ///< "module-path=" query attribute; empty when absent
};
/// Parses a pkcs11: URI. Refuses a URI that carries a PIN (pin-value): the PIN comes from a
/// file, never from the configuration or a command line.
Result<Uri> parse_uri(std::string_view text);

/// An object handle in the token (CK_OBJECT_HANDLE).
using Handle = unsigned long;

/// A logged-in token. Move-only through shared_ptr; closing finalizes the module.
class Token {
 public:
  /// Loads the module, finds the one token that matches uri, logs in with the PIN read
  /// from pin_file (0600, trailing newline ignored). Every error names what was wrong.
  static Result<std::shared_ptr<Token>> open(const std::filesystem::path& module, const Uri& uri,
                                             const std::filesystem::path& pin_file);
  ~Token();
  Token(const Token&) = delete;
  Token& operator=(const Token&) = delete;

  /// Label of the token that was selected.
  const std::string& label() const;

  /// Token loss and return. When a call fails in a way that says the session or the login is
  /// gone (CKR_DEVICE_REMOVED, CKR_SESSION_HANDLE_INVALID, CKR_USER_NOT_LOGGED_IN, ...), or a
  /// caller finds the token's keys vanished (mark_lost), the token is lost: every operation
  /// fails at once with an io error saying so, and the first operation after a backoff (250 ms
  /// doubling to 30 s) makes one attempt to re-open it (module initialized again, token found
  /// by its URI, a session logged in with the PIN read from the file again). Each step is
  /// logged: hsm_token_lost, hsm_token_reopen_failed, hsm_token_recovered.
  void mark_lost(const std::string& why);
  /// Changes at each re-open attempt: object handles from before are stale.
  std::uint64_t generation() const;

  /// The AES secret keys with this label, as (CKA_ID, handle) pairs.
  Result<std::vector<std::pair<Bytes, Handle>>> find_secret_keys(std::string_view label);
  /// The private (or public) EC key with this label; not_found when absent.
  Result<Handle> find_ec_key(std::string_view label, bool private_key);

  /// AES-GCM (96-bit IV, 128-bit tag) with a token key; the output is C || tag.
  Result<Bytes> gcm_encrypt(Handle key, ByteView iv, ByteView aad, ByteView plain);
  /// Decrypts C || tag; bad_mac when the tag does not verify.
  Result<SecretBytes> gcm_decrypt(Handle key, ByteView iv, ByteView aad, ByteView sealed);
  /// CKM_ECDSA over a 32-byte digest: r || s (64 bytes).
  Result<Bytes> ecdsa_sign_digest(Handle key, ByteView digest);
  /// CKM_SHA256_HMAC with a generic secret in the token.
  Result<Bytes> hmac_sha256(Handle key, ByteView data);
  /// The uncompressed P-256 point of a public key object (65 bytes).
  Result<Bytes> ec_point(Handle public_key);

  /// Generates a never-extractable AES-256 key (encrypt, decrypt) with this label and id.
  Result<Handle> generate_aes(std::string_view label, ByteView id);
  /// Generates a never-extractable 32-byte HMAC key with this label.
  Result<Handle> generate_hmac(std::string_view label);
  /// Imports a 32-byte HMAC key as a sensitive, never-extractable token object.
  Result<Handle> import_hmac(std::string_view label, const SecretBytes& value);
  /// Generates a P-256 key pair (private key sensitive, never extractable); returns the point.
  Result<Bytes> generate_ec(std::string_view label);
  /// Imports a P-256 private key (PKCS#8 DER) and its public point as token objects.
  Result<void> import_ec(std::string_view label, const SecretBytes& pkcs8, ByteView point);
  /// Destroys a token object.
  Result<void> destroy(Handle object);

  struct Impl;

 private:
  explicit Token(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace otac::backend::p11
