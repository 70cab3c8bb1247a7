// Cryptographic primitives on OpenSSL 3 EVP. No I/O besides the OS entropy behind RAND_bytes.
//
// Conventions: keys are SecretBytes; functions that can fail on bad input (wrong key or data
// length) return Result. Padding is explicit: block-cipher functions never pad; callers use
// pad_iso9797_m1/m2 or the MAC functions that take a padding method.
#pragma once

#include <cstdint>
#include <string_view>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"

namespace otac::crypto {

// ---- random -----------------------------------------------------------------------------

/// n bytes from the CSPRNG (RAND_bytes). Throws std::runtime_error if the RNG fails, which
/// is a broken precondition of the whole program.
Bytes random_bytes(std::size_t n);
/// A fresh random secret of n bytes.
SecretBytes random_secret(std::size_t n);

// ---- DES / 3DES ---------------------------------------------------------------------------

/// Sets odd parity on every byte of a DES key (low bit of each byte).
void set_des_parity(std::uint8_t* key, std::size_t n);
/// True when every byte has odd parity.
bool has_des_parity(ByteView key);

/// Triple-DES (EDE). key is 8 (single DES as K1=K2=K3), 16 (two-key) or 24 bytes (three-key).
/// data must be a multiple of 8. iv is 8 bytes for CBC.
Result<Bytes> des3_ecb_encrypt(const SecretBytes& key, ByteView data);
Result<Bytes> des3_ecb_decrypt(const SecretBytes& key, ByteView data);
Result<Bytes> des3_cbc_encrypt(const SecretBytes& key, ByteView iv, ByteView data);
Result<Bytes> des3_cbc_decrypt(const SecretBytes& key, ByteView iv, ByteView data);

// ---- AES ---------------------------------------------------------------------------------

/// AES-128/192/256 by key length; data a multiple of 16; iv 16 bytes.
Result<Bytes> aes_ecb_encrypt(const SecretBytes& key, ByteView data);
Result<Bytes> aes_cbc_encrypt(const SecretBytes& key, ByteView iv, ByteView data);
Result<Bytes> aes_cbc_decrypt(const SecretBytes& key, ByteView iv, ByteView data);
/// AES-CMAC (NIST SP 800-38B, RFC 4493), full 16 bytes; truncate at the caller.
Result<Bytes> aes_cmac(const SecretBytes& key, ByteView data);

// ---- ISO/IEC 9797-1 -----------------------------------------------------------------------

/// Padding method 1: zero bytes up to a multiple of block (no padding if already aligned,
/// except that empty input becomes one zero block).
Bytes pad_iso9797_m1(ByteView data, std::size_t block = 8);
/// Padding method 2: 0x80 then zero bytes up to a multiple of block (always adds a byte).
Bytes pad_iso9797_m2(ByteView data, std::size_t block = 8);
/// Removes method-2 padding; error if it is malformed.
Result<Bytes> unpad_iso9797_m2(ByteView data);

enum class Padding { method1 = 1, method2 = 2 };

/// MAC algorithm 1: CBC-MAC with the block cipher under the whole key (DES if key is 8 bytes,
/// 3DES if 16 or 24), output the last block truncated to mac_len (1..8).
Result<Bytes> mac_alg1(const SecretBytes& key, ByteView data, Padding pad, std::size_t mac_len = 8);
/// MAC algorithm 3 ("retail MAC"): DES CBC-MAC under K1, then the last block is decrypted
/// under K2 and encrypted under K1. key is 16 bytes K1||K2. Output truncated to mac_len.
Result<Bytes> mac_alg3(const SecretBytes& key, ByteView data, Padding pad, std::size_t mac_len = 8);

/// MAC algorithm 3 under one key, set up once: the DES key schedules are computed when the
/// object is made, and each mac() only runs the chain. The backend makes two MACs under each
/// one-time code (it checks the card's cryptogram, then makes the ARPC), and setting the
/// ciphers up cost half of each MAC. Move-only; one thread at a time. OpenSSL wipes the
/// schedules when the object is destroyed.
class MacAlg3Key {
 public:
  /// key is 16 bytes K1||K2; anything else is Errc::bad_length.
  static Result<MacAlg3Key> make(const SecretBytes& key);
  ~MacAlg3Key();
  MacAlg3Key(MacAlg3Key&& o) noexcept;
  MacAlg3Key& operator=(MacAlg3Key&& o) noexcept;
  MacAlg3Key(const MacAlg3Key&) = delete;
  MacAlg3Key& operator=(const MacAlg3Key&) = delete;
  Result<Bytes> mac(ByteView data, Padding pad, std::size_t mac_len = 8);

 private:
  MacAlg3Key() = default;
  void* chain_ = nullptr;  ///< EVP_CIPHER_CTX: CBC under K1 (single DES, or TDEA as K1,K1,K1)
  void* last_ = nullptr;   ///< EVP_CIPHER_CTX: two-key TDEA-ECB (K1, K2, K1)
};

/// AES-CMAC under one key, set up once (as MacAlg3Key, for cards on AES). Move-only; each
/// mac() continues a copy of the keyed state, so it may be called from several threads.
class AesCmacKey {
 public:
  /// key is 16, 24 or 32 bytes; anything else is Errc::bad_length.
  static Result<AesCmacKey> make(const SecretBytes& key);
  ~AesCmacKey();
  AesCmacKey(AesCmacKey&& o) noexcept : keyed_(o.keyed_) { o.keyed_ = nullptr; }
  AesCmacKey& operator=(AesCmacKey&& o) noexcept;
  AesCmacKey(const AesCmacKey&) = delete;
  AesCmacKey& operator=(const AesCmacKey&) = delete;
  /// The full 16-byte CMAC; truncate at the caller.
  Result<Bytes> mac(ByteView data) const;

 private:
  AesCmacKey() = default;
  void* keyed_ = nullptr;  ///< the EVP_MAC_CTX after EVP_MAC_init, never updated itself
};

// ---- hashes, HMAC, KDF --------------------------------------------------------------------

Bytes sha256(ByteView data);
Bytes hmac_sha256(ByteView key, ByteView data);

/// HMAC-SHA-256 under one long-lived key, keyed once: each mac() continues a copy of the
/// keyed state, so the key is not hashed into the pads again on every call (the store's
/// sealing and audit keys MAC every authorization). Thread-safe; the keyed state is wiped
/// by OpenSSL when this object is destroyed. Throws std::runtime_error when OpenSSL fails.
class HmacSha256Key {
 public:
  explicit HmacSha256Key(ByteView key);
  ~HmacSha256Key();
  HmacSha256Key(const HmacSha256Key&) = delete;
  HmacSha256Key& operator=(const HmacSha256Key&) = delete;
  Bytes mac(ByteView data) const;

 private:
  void* keyed_ = nullptr;  ///< the EVP_MAC_CTX after EVP_MAC_init, never updated itself
};
/// NIST SP 800-108 KDF in counter mode with HMAC-SHA-256 as PRF, r = 32-bit counter before
/// the fixed input: K(i) = HMAC(key, [i]_32 || label || 0x00 || context || [L]_32),
/// L = out_len * 8 bits.
SecretBytes kdf_sp800_108(const SecretBytes& key, std::string_view label, ByteView context,
                          std::size_t out_len);
/// The same KDF with the fixed input given whole (as NIST CAVP KBKDF vectors give it).
SecretBytes kdf_sp800_108_raw(const SecretBytes& key, ByteView fixed_input, std::size_t out_len);
/// HKDF (RFC 5869) with SHA-256.
SecretBytes hkdf_sha256(const SecretBytes& ikm, ByteView salt, ByteView info, std::size_t out_len);

// ---- public-key -------------------------------------------------------------------------

/// An owned EVP_PKEY (RSA or EC P-256). Move-only.
class PKey {
 public:
  PKey() = default;
  explicit PKey(void* evp_pkey) : p_(evp_pkey) {}  ///< takes ownership of an EVP_PKEY*
  ~PKey();
  PKey(PKey&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  PKey& operator=(PKey&& o) noexcept;
  PKey(const PKey&) = delete;
  PKey& operator=(const PKey&) = delete;
  void* get() const { return p_; }  ///< the EVP_PKEY*
  explicit operator bool() const { return p_ != nullptr; }

 private:
  void* p_ = nullptr;
};

/// New RSA-2048 key pair (e = 65537).
Result<PKey> rsa_generate(unsigned bits = 2048);
/// New EC P-256 key pair.
Result<PKey> ec_p256_generate();

/// Public key as DER SubjectPublicKeyInfo, and back.
Result<Bytes> public_key_der(const PKey& key);
Result<PKey> public_key_from_der(ByteView der);
/// Private key as DER PKCS#8 (for storage; encrypt it before writing), and back.
Result<SecretBytes> private_key_der(const PKey& key);
Result<PKey> private_key_from_der(ByteView der);
/// P-256 public point, uncompressed (65 bytes, 04||X||Y), and back.
Result<Bytes> ec_public_point(const PKey& key);
Result<PKey> ec_public_from_point(ByteView point);
/// P-256 key from a raw 32-byte private scalar (for known-answer tests).
Result<PKey> ec_private_from_scalar(ByteView d);

/// RSA-OAEP with SHA-256 (and MGF1-SHA-256), empty label.
Result<Bytes> rsa_oaep_encrypt(const PKey& pub, ByteView plain);
Result<SecretBytes> rsa_oaep_decrypt(const PKey& priv, ByteView cipher);

/// ECDSA P-256 with SHA-256; signature DER-encoded.
Result<Bytes> ecdsa_sign(const PKey& priv, ByteView msg);
/// True only for a valid signature; malformed signatures are simply invalid.
bool ecdsa_verify(const PKey& pub, ByteView msg, ByteView der_sig);
/// DER ECDSA-Sig-Value from big-endian r and s (published vectors give r and s).
Result<Bytes> ecdsa_sig_from_rs(ByteView r, ByteView s);
/// ECDH P-256: the raw 32-byte shared X coordinate.
Result<SecretBytes> ecdh_p256(const PKey& priv, const PKey& peer_pub);

}  // namespace otac::crypto
