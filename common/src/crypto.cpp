// OpenSSL 3 EVP implementations of the primitives in crypto.hpp.
#include "otac/common/crypto.hpp"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <memory>
#include <stdexcept>

namespace otac::crypto {
namespace {

// Each OpenSSL handle type is wrapped once here.
struct CipherCtxFree { void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); } };
struct MacCtxFree { void operator()(EVP_MAC_CTX* p) const { EVP_MAC_CTX_free(p); } };
struct PkeyCtxFree { void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); } };
struct MdCtxFree { void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); } };
struct KdfFree { void operator()(EVP_KDF* p) const { EVP_KDF_free(p); } };
struct KdfCtxFree { void operator()(EVP_KDF_CTX* p) const { EVP_KDF_CTX_free(p); } };
struct BnFree { void operator()(BIGNUM* p) const { BN_free(p); } };
struct EcdsaSigFree { void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); } };
struct ParamBldFree { void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); } };
struct ParamFree { void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); } };

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;

EVP_PKEY* raw(const PKey& k) { return static_cast<EVP_PKEY*>(k.get()); }

Error ossl_error(const std::string& what) {
  const unsigned long e = ERR_get_error();
  std::string msg = what;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    msg += ": ";
    msg += buf;
  }
  ERR_clear_error();
  return make_error(Errc::crypto, msg);
}

int to_int(std::size_t n) { return static_cast<int>(n); }

// Single DES, for the CBC chain of MAC algorithm 3, is only in OpenSSL 3's legacy provider. It
// is loaded into a library context of its own, so that nothing else in the process (TLS above
// all) sees legacy algorithms. Null when the module is missing (Debian ships it in libssl3):
// the chain then runs as TDEA with K1 = K2 = K3, the same function at three times the cost.
EVP_CIPHER* fetch_single_des_cbc() {
  OSSL_LIB_CTX* legacy = OSSL_LIB_CTX_new();  // kept for the life of the process, as the cipher
  EVP_CIPHER* c = nullptr;
  if (legacy != nullptr && OSSL_PROVIDER_load(legacy, "legacy") != nullptr) c = EVP_CIPHER_fetch(legacy, "DES-CBC", nullptr);
  ERR_clear_error();  // a missing module is not an error of whatever OpenSSL call comes next
  return c;
}

// The algorithms this file uses, fetched from OpenSSL's default library context once per
// process. A legacy object such as EVP_des_ede3_cbc() makes OpenSSL 3 look the algorithm up by
// name on every init (an implicit fetch: a global lock and string compares, OpenSSL's
// migration guide, "Performance"); an authorization inits half a dozen ciphers and MACs, and
// those lookups were a tenth of the committing thread's time. The objects are kept for the
// life of the process (reachable through this static, never freed). A failed fetch leaves a
// null pointer, which each caller reports as the OpenSSL error it is.
struct Fetched {
  EVP_CIPHER* des_cbc = fetch_single_des_cbc();
  EVP_CIPHER* des_ede3_cbc = EVP_CIPHER_fetch(nullptr, "DES-EDE3-CBC", nullptr);
  EVP_CIPHER* des_ede3_ecb = EVP_CIPHER_fetch(nullptr, "DES-EDE3-ECB", nullptr);
  EVP_CIPHER* aes128_cbc = EVP_CIPHER_fetch(nullptr, "AES-128-CBC", nullptr);
  EVP_CIPHER* aes192_cbc = EVP_CIPHER_fetch(nullptr, "AES-192-CBC", nullptr);
  EVP_CIPHER* aes256_cbc = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
  EVP_CIPHER* aes128_ecb = EVP_CIPHER_fetch(nullptr, "AES-128-ECB", nullptr);
  EVP_CIPHER* aes192_ecb = EVP_CIPHER_fetch(nullptr, "AES-192-ECB", nullptr);
  EVP_CIPHER* aes256_ecb = EVP_CIPHER_fetch(nullptr, "AES-256-ECB", nullptr);
  EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC* cmac = EVP_MAC_fetch(nullptr, "CMAC", nullptr);
  EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA2-256", nullptr);
};
const Fetched& fetched() {
  static const Fetched f;  // initialized once, thread-safe (C++11 static initialization)
  return f;
}

// Runs one block cipher operation without padding.
Result<Bytes> block_op(const EVP_CIPHER* cipher, ByteView key, ByteView iv, ByteView data, bool enc,
                       std::size_t block, const char* name) {
  if (data.size() % block != 0)
    return make_error(Errc::bad_length, std::string(name) + ": data length " + std::to_string(data.size()) +
                                            " is not a multiple of " + std::to_string(block));
  if (cipher == nullptr) return ossl_error(name);
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return ossl_error(name);
  if (EVP_CipherInit_ex2(ctx.get(), cipher, key.data(), iv.empty() ? nullptr : iv.data(), enc ? 1 : 0, nullptr) != 1)
    return ossl_error(name);
  EVP_CIPHER_CTX_set_padding(ctx.get(), 0);
  Bytes out(data.size() + block);
  int n1 = 0, n2 = 0;
  if (EVP_CipherUpdate(ctx.get(), out.data(), &n1, data.data(), to_int(data.size())) != 1) return ossl_error(name);
  if (EVP_CipherFinal_ex(ctx.get(), out.data() + n1, &n2) != 1) return ossl_error(name);
  out.resize(static_cast<std::size_t>(n1 + n2));
  return out;
}

// 3DES always runs as EDE3: an 8-byte key is K1=K2=K3 (single DES), 16 bytes is K1,K2,K1.
Result<SecretBytes> expand_des_key(const SecretBytes& key, const char* name) {
  SecretBytes k(24);
  const auto v = key.view();
  if (v.size() == 8) {
    for (int i = 0; i < 3; ++i) std::copy(v.begin(), v.end(), k.data() + 8 * i);
  } else if (v.size() == 16) {
    std::copy(v.begin(), v.end(), k.data());
    std::copy(v.begin(), v.begin() + 8, k.data() + 16);
  } else if (v.size() == 24) {
    std::copy(v.begin(), v.end(), k.data());
  } else {
    return make_error(Errc::bad_length, std::string(name) + ": DES key must be 8, 16 or 24 bytes, got " +
                                            std::to_string(v.size()));
  }
  return k;
}

Result<Bytes> des3(const SecretBytes& key, ByteView iv, ByteView data, bool enc, bool cbc, const char* name) {
  auto k = expand_des_key(key, name);
  if (!k) return std::move(k).error();
  if (cbc && iv.size() != 8) return make_error(Errc::bad_length, std::string(name) + ": IV must be 8 bytes");
  const EVP_CIPHER* c = cbc ? fetched().des_ede3_cbc : fetched().des_ede3_ecb;
  return block_op(c, k->view(), cbc ? iv : ByteView{}, data, enc, 8, name);
}

const EVP_CIPHER* aes_cipher(std::size_t keylen, bool cbc) {
  switch (keylen) {
    case 16: return cbc ? fetched().aes128_cbc : fetched().aes128_ecb;
    case 24: return cbc ? fetched().aes192_cbc : fetched().aes192_ecb;
    case 32: return cbc ? fetched().aes256_cbc : fetched().aes256_ecb;
    default: return nullptr;
  }
}

Result<Bytes> aes(const SecretBytes& key, ByteView iv, ByteView data, bool enc, bool cbc, const char* name) {
  if (key.size() != 16 && key.size() != 24 && key.size() != 32)
    return make_error(Errc::bad_length, std::string(name) + ": AES key must be 16, 24 or 32 bytes, got " +
                                            std::to_string(key.size()));
  if (cbc && iv.size() != 16) return make_error(Errc::bad_length, std::string(name) + ": IV must be 16 bytes");
  return block_op(aes_cipher(key.size(), cbc), key.view(), cbc ? iv : ByteView{}, data, enc, 16, name);
}

Bytes pad(ByteView data, Padding p) { return p == Padding::method1 ? pad_iso9797_m1(data) : pad_iso9797_m2(data); }

Result<Bytes> truncate_mac(Bytes mac, std::size_t mac_len, const char* name) {
  if (mac_len == 0 || mac_len > mac.size())
    return make_error(Errc::bad_length, std::string(name) + ": MAC length must be 1.." + std::to_string(mac.size()));
  mac.resize(mac_len);
  return mac;
}

}  // namespace

// ---- random ---------------------------------------------------------------------------

Bytes random_bytes(std::size_t n) {
  Bytes out(n);
  if (n > 0 && RAND_bytes(out.data(), to_int(n)) != 1) throw std::runtime_error("RAND_bytes failed: no entropy");
  return out;
}

SecretBytes random_secret(std::size_t n) {
  SecretBytes s(n);
  if (n > 0 && RAND_priv_bytes(s.data(), to_int(n)) != 1) throw std::runtime_error("RAND_priv_bytes failed: no entropy");
  return s;
}

// ---- DES / 3DES -------------------------------------------------------------------------

void set_des_parity(std::uint8_t* key, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t b = key[i] & 0xFE;
    int ones = __builtin_popcount(b);
    key[i] = static_cast<std::uint8_t>(b | ((ones % 2 == 0) ? 1 : 0));
  }
}

bool has_des_parity(ByteView key) {
  for (auto b : key)
    if (__builtin_popcount(b) % 2 == 0) return false;
  return true;
}

Result<Bytes> des3_ecb_encrypt(const SecretBytes& key, ByteView data) { return des3(key, {}, data, true, false, "3DES-ECB"); }
Result<Bytes> des3_ecb_decrypt(const SecretBytes& key, ByteView data) { return des3(key, {}, data, false, false, "3DES-ECB"); }
Result<Bytes> des3_cbc_encrypt(const SecretBytes& key, ByteView iv, ByteView data) { return des3(key, iv, data, true, true, "3DES-CBC"); }
Result<Bytes> des3_cbc_decrypt(const SecretBytes& key, ByteView iv, ByteView data) { return des3(key, iv, data, false, true, "3DES-CBC"); }

// ---- AES -------------------------------------------------------------------------------

Result<Bytes> aes_ecb_encrypt(const SecretBytes& key, ByteView data) { return aes(key, {}, data, true, false, "AES-ECB"); }
Result<Bytes> aes_cbc_encrypt(const SecretBytes& key, ByteView iv, ByteView data) { return aes(key, iv, data, true, true, "AES-CBC"); }
Result<Bytes> aes_cbc_decrypt(const SecretBytes& key, ByteView iv, ByteView data) { return aes(key, iv, data, false, true, "AES-CBC"); }

Result<Bytes> aes_cmac(const SecretBytes& key, ByteView data) {
  auto k = AesCmacKey::make(key);
  if (!k) return std::move(k).error();
  return k->mac(data);
}

Result<AesCmacKey> AesCmacKey::make(const SecretBytes& key) {
  const char* cipher = key.size() == 16 ? "AES-128-CBC" : key.size() == 24 ? "AES-192-CBC" : key.size() == 32 ? "AES-256-CBC" : nullptr;
  if (cipher == nullptr) return make_error(Errc::bad_length, "AES-CMAC: key must be 16, 24 or 32 bytes");
  if (fetched().cmac == nullptr) return ossl_error("AES-CMAC");
  std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(EVP_MAC_CTX_new(fetched().cmac));
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, const_cast<char*>(cipher), 0),
                         OSSL_PARAM_construct_end()};
  if (!ctx || EVP_MAC_init(ctx.get(), key.data(), key.size(), params) != 1) return ossl_error("AES-CMAC");
  AesCmacKey k;
  k.keyed_ = ctx.release();
  return k;
}

AesCmacKey::~AesCmacKey() { EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(keyed_)); }

AesCmacKey& AesCmacKey::operator=(AesCmacKey&& o) noexcept {
  if (this != &o) {
    EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(keyed_));
    keyed_ = o.keyed_;
    o.keyed_ = nullptr;
  }
  return *this;
}

Result<Bytes> AesCmacKey::mac(ByteView data) const {
  // EVP_MAC_CTX_dup only reads its source (as in HmacSha256Key::mac).
  std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(keyed_ ? EVP_MAC_CTX_dup(static_cast<const EVP_MAC_CTX*>(keyed_)) : nullptr);
  if (!ctx || EVP_MAC_update(ctx.get(), data.data(), data.size()) != 1) return ossl_error("AES-CMAC");
  Bytes out(16);
  std::size_t n = 0;
  if (EVP_MAC_final(ctx.get(), out.data(), &n, out.size()) != 1) return ossl_error("AES-CMAC");
  out.resize(n);
  return out;
}

// ---- ISO/IEC 9797-1 ----------------------------------------------------------------------

Bytes pad_iso9797_m1(ByteView data, std::size_t block) {
  Bytes out(data.begin(), data.end());
  if (out.empty()) out.resize(block, 0);
  while (out.size() % block != 0) out.push_back(0);
  return out;
}

Bytes pad_iso9797_m2(ByteView data, std::size_t block) {
  Bytes out(data.begin(), data.end());
  out.push_back(0x80);
  while (out.size() % block != 0) out.push_back(0);
  return out;
}

Result<Bytes> unpad_iso9797_m2(ByteView data) {
  std::size_t i = data.size();
  while (i > 0 && data[i - 1] == 0) --i;
  if (i == 0 || data[i - 1] != 0x80) return make_error(Errc::bad_value, "ISO 9797-1 padding method 2: no 80 marker");
  return Bytes(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(i - 1));
}

Result<Bytes> mac_alg1(const SecretBytes& key, ByteView data, Padding p, std::size_t mac_len) {
  const Bytes padded = pad(data, p);
  const Bytes iv(8, 0);
  auto c = des3_cbc_encrypt(key, iv, padded);
  if (!c) return std::move(c).error();
  return truncate_mac(Bytes(c->end() - 8, c->end()), mac_len, "MAC algorithm 1");
}

Result<Bytes> mac_alg3(const SecretBytes& key, ByteView data, Padding p, std::size_t mac_len) {
  auto k = MacAlg3Key::make(key);
  if (!k) return std::move(k).error();
  return k->mac(data, p, mac_len);
}

// MAC algorithm 3's chain starts from a zero IV, at set-up and at every MAC.
constexpr const char* kMacAlg3 = "MAC algorithm 3";
constexpr std::uint8_t kZeroIv[8] = {};

Result<MacAlg3Key> MacAlg3Key::make(const SecretBytes& key) {
  if (key.size() != 16) return make_error(Errc::bad_length, "MAC algorithm 3: key must be 16 bytes (K1||K2)");
  const SecretBytes k1(key.view().first(8));
  // K1, K1, K1: single DES reads its 8-byte key from the front, the TDEA fallback all 24.
  auto chain_key = expand_des_key(k1, kMacAlg3);
  auto last_key = expand_des_key(key, kMacAlg3);  // a 16-byte key is TDEA keying option 2: K1, K2, K1
  if (!chain_key) return std::move(chain_key).error();
  if (!last_key) return std::move(last_key).error();
  const EVP_CIPHER* chain_cipher = fetched().des_cbc ? fetched().des_cbc : fetched().des_ede3_cbc;
  CipherCtx chain(EVP_CIPHER_CTX_new());
  CipherCtx last(EVP_CIPHER_CTX_new());
  if (!chain || !last || chain_cipher == nullptr || fetched().des_ede3_ecb == nullptr ||
      EVP_CipherInit_ex2(chain.get(), chain_cipher, chain_key->data(), kZeroIv, 1, nullptr) != 1 ||
      EVP_CipherInit_ex2(last.get(), fetched().des_ede3_ecb, last_key->data(), nullptr, 1, nullptr) != 1)
    return ossl_error(kMacAlg3);
  EVP_CIPHER_CTX_set_padding(chain.get(), 0);
  EVP_CIPHER_CTX_set_padding(last.get(), 0);
  MacAlg3Key k;
  k.chain_ = chain.release();
  k.last_ = last.release();
  return k;
}

MacAlg3Key::~MacAlg3Key() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(chain_));
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(last_));
}

MacAlg3Key::MacAlg3Key(MacAlg3Key&& o) noexcept : chain_(o.chain_), last_(o.last_) { o.chain_ = o.last_ = nullptr; }

MacAlg3Key& MacAlg3Key::operator=(MacAlg3Key&& o) noexcept {
  if (this != &o) {
    EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(chain_));
    EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(last_));
    chain_ = o.chain_;
    last_ = o.last_;
    o.chain_ = o.last_ = nullptr;
  }
  return *this;
}

Result<Bytes> MacAlg3Key::mac(ByteView data, Padding p, std::size_t mac_len) {
  if (chain_ == nullptr || last_ == nullptr) return make_error(Errc::internal, "MAC algorithm 3: the key was moved away");
  // H_q = E_K1(D_q xor H_(q-1)), then output transformation 3: E_K1(D_K2(H_q)). The last
  // block's three steps together are one two-key TDEA encryption (K1, K2, K1) of
  // D_q xor H_(q-1), so the chain runs single DES under K1 over the blocks before the last only.
  const Bytes padded = pad(data, p);
  std::uint8_t last[8];
  std::copy(padded.end() - 8, padded.end(), last);
  int n = 0;
  if (padded.size() > 8) {
    // A new IV restarts the chain and keeps the key schedule (EVP_CipherInit_ex2 without a
    // cipher or key); only the chain's last block is needed.
    auto* chain = static_cast<EVP_CIPHER_CTX*>(chain_);
    Bytes c(padded.size() - 8);
    if (EVP_CipherInit_ex2(chain, nullptr, nullptr, kZeroIv, 1, nullptr) != 1 ||
        EVP_CipherUpdate(chain, c.data(), &n, padded.data(), to_int(c.size())) != 1 || n != to_int(c.size()))
      return ossl_error(kMacAlg3);
    for (std::size_t i = 0; i < 8; ++i) last[i] ^= c[c.size() - 8 + i];
  }
  Bytes out(8);
  if (EVP_CipherUpdate(static_cast<EVP_CIPHER_CTX*>(last_), out.data(), &n, last, 8) != 1 || n != 8) return ossl_error(kMacAlg3);
  return truncate_mac(std::move(out), mac_len, kMacAlg3);
}

// ---- hashes, HMAC, KDF ---------------------------------------------------------------------

Bytes sha256(ByteView data) {
  Bytes out(32);
  unsigned n = 0;
  if (fetched().sha256 == nullptr || EVP_Digest(data.data(), data.size(), out.data(), &n, fetched().sha256, nullptr) != 1)
    throw std::runtime_error("SHA-256 failed");
  return out;
}

Bytes hmac_sha256(ByteView key, ByteView data) { return HmacSha256Key(key).mac(data); }

HmacSha256Key::HmacSha256Key(ByteView key) {
  std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(fetched().hmac ? EVP_MAC_CTX_new(fetched().hmac) : nullptr);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  static const std::uint8_t empty_key = 0;
  if (!ctx || EVP_MAC_init(ctx.get(), key.empty() ? &empty_key : key.data(), key.size(), params) != 1)
    throw std::runtime_error("HMAC-SHA-256 key set-up failed");
  keyed_ = ctx.release();
}

HmacSha256Key::~HmacSha256Key() { EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(keyed_)); }

Bytes HmacSha256Key::mac(ByteView data) const {
  // EVP_MAC_CTX_dup only reads its source, so threads may share the keyed context.
  std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(EVP_MAC_CTX_dup(static_cast<const EVP_MAC_CTX*>(keyed_)));
  if (!ctx || EVP_MAC_update(ctx.get(), data.data(), data.size()) != 1) throw std::runtime_error("HMAC-SHA-256 failed");
  Bytes out(32);
  std::size_t n = 0;
  if (EVP_MAC_final(ctx.get(), out.data(), &n, out.size()) != 1 || n != out.size()) throw std::runtime_error("HMAC-SHA-256 failed");
  return out;
}

SecretBytes kdf_sp800_108_raw(const SecretBytes& key, ByteView fixed_input, std::size_t out_len) {
  SecretBytes out(out_len);
  std::size_t done = 0;
  for (std::uint32_t i = 1; done < out_len; ++i) {
    Bytes msg = be_bytes(i, 4);
    append(msg, fixed_input);
    Bytes block = hmac_sha256(key.view(), msg);
    const std::size_t n = std::min(block.size(), out_len - done);
    std::copy(block.begin(), block.begin() + static_cast<std::ptrdiff_t>(n), out.data() + done);
    done += n;
    secure_zero(block.data(), block.size());
  }
  return out;
}

SecretBytes kdf_sp800_108(const SecretBytes& key, std::string_view label, ByteView context, std::size_t out_len) {
  Bytes fixed = to_bytes(label);
  fixed.push_back(0x00);
  append(fixed, context);
  append(fixed, be_bytes(static_cast<std::uint64_t>(out_len) * 8, 4));
  return kdf_sp800_108_raw(key, fixed, out_len);
}

SecretBytes hkdf_sha256(const SecretBytes& ikm, ByteView salt, ByteView info, std::size_t out_len) {
  // RFC 5869: PRK = HMAC(salt, IKM); T(i) = HMAC(PRK, T(i-1) || info || i).
  const Bytes zero_salt(32, 0);
  Bytes prk = hmac_sha256(salt.empty() ? ByteView(zero_salt) : salt, ikm.view());
  SecretBytes out(out_len);
  Bytes t;
  std::size_t done = 0;
  for (std::uint8_t i = 1; done < out_len; ++i) {
    Bytes msg = t;
    append(msg, info);
    msg.push_back(i);
    t = hmac_sha256(prk, msg);
    const std::size_t n = std::min(t.size(), out_len - done);
    std::copy(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(n), out.data() + done);
    done += n;
  }
  secure_zero(prk.data(), prk.size());
  secure_zero(t.data(), t.size());
  return out;
}

// ---- public-key ------------------------------------------------------------------------------

PKey::~PKey() { EVP_PKEY_free(static_cast<EVP_PKEY*>(p_)); }

PKey& PKey::operator=(PKey&& o) noexcept {
  if (this != &o) {
    EVP_PKEY_free(static_cast<EVP_PKEY*>(p_));
    p_ = o.p_;
    o.p_ = nullptr;
  }
  return *this;
}

Result<PKey> rsa_generate(unsigned bits) {
  EVP_PKEY* k = EVP_RSA_gen(bits);
  if (k == nullptr) return ossl_error("RSA key generation");
  return PKey(k);
}

Result<PKey> ec_p256_generate() {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  if (k == nullptr) return ossl_error("P-256 key generation");
  return PKey(k);
}

Result<Bytes> public_key_der(const PKey& key) {
  const int n = i2d_PUBKEY(raw(key), nullptr);
  if (n <= 0) return ossl_error("public key DER encoding");
  Bytes out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_PUBKEY(raw(key), &p);
  return out;
}

Result<PKey> public_key_from_der(ByteView der) {
  const unsigned char* p = der.data();
  EVP_PKEY* k = d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size()));
  if (k == nullptr) return make_error(Errc::bad_value, "public key: not a DER SubjectPublicKeyInfo");
  if (p != der.data() + der.size()) {
    EVP_PKEY_free(k);
    return make_error(Errc::trailing_data, "public key: trailing bytes after DER");
  }
  return PKey(k);
}

Result<SecretBytes> private_key_der(const PKey& key) {
  const int n = i2d_PrivateKey(raw(key), nullptr);
  if (n <= 0) return ossl_error("private key DER encoding");
  SecretBytes out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_PrivateKey(raw(key), &p);
  return out;
}

Result<PKey> private_key_from_der(ByteView der) {
  const unsigned char* p = der.data();
  EVP_PKEY* k = d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(der.size()));
  if (k == nullptr) return make_error(Errc::bad_value, "private key: not a DER private key");
  return PKey(k);
}

Result<Bytes> ec_public_point(const PKey& key) {
  Bytes out(65);
  std::size_t n = 0;
  if (EVP_PKEY_get_octet_string_param(raw(key), OSSL_PKEY_PARAM_PUB_KEY, out.data(), out.size(), &n) != 1 || n != 65)
    return ossl_error("P-256 public point");
  return out;
}

namespace {
Result<PKey> ec_from_params(ByteView point, const BIGNUM* priv) {
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  char group[] = "prime256v1";
  if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1)
    return ossl_error("P-256 key");
  if (!point.empty() && OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1)
    return ossl_error("P-256 key");
  if (priv != nullptr && OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, priv) != 1) return ossl_error("P-256 key");
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld.get()));
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* k = nullptr;
  if (!ctx || !params || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &k, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
    return make_error(Errc::bad_value, "P-256 key: invalid point or scalar");
  PKey out(k);
  // fromdata does not check that the point is on the curve; do it here.
  PkeyCtx check(EVP_PKEY_CTX_new_from_pkey(nullptr, k, nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    return make_error(Errc::bad_value, "P-256 key: point is not on the curve");
  }
  return out;
}
}  // namespace

Result<PKey> ec_public_from_point(ByteView point) {
  if (point.size() != 65 || point[0] != 0x04)
    return make_error(Errc::bad_value, "P-256 public point must be 65 bytes, uncompressed (04||X||Y)");
  return ec_from_params(point, nullptr);
}

Result<PKey> ec_private_from_scalar(ByteView d) {
  if (d.size() != 32) return make_error(Errc::bad_length, "P-256 private scalar must be 32 bytes");
  std::unique_ptr<BIGNUM, BnFree> bn(BN_bin2bn(d.data(), 32, nullptr));
  // Derive the public point Q = d*G so the key is complete.
  std::unique_ptr<EC_GROUP, decltype(&EC_GROUP_free)> grp(EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1), EC_GROUP_free);
  std::unique_ptr<EC_POINT, decltype(&EC_POINT_free)> q(EC_POINT_new(grp.get()), EC_POINT_free);
  if (!bn || !grp || !q || EC_POINT_mul(grp.get(), q.get(), bn.get(), nullptr, nullptr, nullptr) != 1)
    return ossl_error("P-256 scalar");
  Bytes point(65);
  if (EC_POINT_point2oct(grp.get(), q.get(), POINT_CONVERSION_UNCOMPRESSED, point.data(), point.size(), nullptr) != 65)
    return ossl_error("P-256 scalar");
  return ec_from_params(point, bn.get());
}

Result<Bytes> rsa_oaep_encrypt(const PKey& pub, ByteView plain) {
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, raw(pub), nullptr));
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1 || EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1)
    return ossl_error("RSA-OAEP");
  std::size_t n = 0;
  if (EVP_PKEY_encrypt(ctx.get(), nullptr, &n, plain.data(), plain.size()) != 1) return ossl_error("RSA-OAEP");
  Bytes out(n);
  if (EVP_PKEY_encrypt(ctx.get(), out.data(), &n, plain.data(), plain.size()) != 1) return ossl_error("RSA-OAEP");
  out.resize(n);
  return out;
}

Result<SecretBytes> rsa_oaep_decrypt(const PKey& priv, ByteView cipher) {
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, raw(priv), nullptr));
  if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) != 1 || EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1)
    return ossl_error("RSA-OAEP");
  std::size_t n = 0;
  if (EVP_PKEY_decrypt(ctx.get(), nullptr, &n, cipher.data(), cipher.size()) != 1) return ossl_error("RSA-OAEP");
  SecretBytes out(n);
  if (EVP_PKEY_decrypt(ctx.get(), out.data(), &n, cipher.data(), cipher.size()) != 1) {
    ERR_clear_error();
    return make_error(Errc::bad_mac, "RSA-OAEP: decryption failed (wrong key or corrupted ciphertext)");
  }
  SecretBytes trimmed(out.view().first(n));
  return trimmed;
}

Result<Bytes> ecdsa_sign(const PKey& priv, ByteView msg) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  std::size_t n = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, raw(priv)) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &n, msg.data(), msg.size()) != 1)
    return ossl_error("ECDSA sign");
  Bytes sig(n);
  if (EVP_DigestSign(ctx.get(), sig.data(), &n, msg.data(), msg.size()) != 1) return ossl_error("ECDSA sign");
  sig.resize(n);
  return sig;
}

bool ecdsa_verify(const PKey& pub, ByteView msg, ByteView der_sig) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  const bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, raw(pub)) == 1 &&
                  EVP_DigestVerify(ctx.get(), der_sig.data(), der_sig.size(), msg.data(), msg.size()) == 1;
  ERR_clear_error();
  return ok;
}

Result<Bytes> ecdsa_sig_from_rs(ByteView r, ByteView s) {
  std::unique_ptr<ECDSA_SIG, EcdsaSigFree> sig(ECDSA_SIG_new());
  BIGNUM* br = BN_bin2bn(r.data(), to_int(r.size()), nullptr);
  BIGNUM* bs = BN_bin2bn(s.data(), to_int(s.size()), nullptr);
  if (!sig || br == nullptr || bs == nullptr || ECDSA_SIG_set0(sig.get(), br, bs) != 1) {
    BN_free(br);
    BN_free(bs);
    return ossl_error("ECDSA signature");
  }
  const int n = i2d_ECDSA_SIG(sig.get(), nullptr);
  Bytes out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_ECDSA_SIG(sig.get(), &p);
  return out;
}

Result<SecretBytes> ecdh_p256(const PKey& priv, const PKey& peer_pub) {
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, raw(priv), nullptr));
  std::size_t n = 0;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_derive_set_peer(ctx.get(), raw(peer_pub)) != 1 ||
      EVP_PKEY_derive(ctx.get(), nullptr, &n) != 1)
    return ossl_error("ECDH");
  SecretBytes out(n);
  if (EVP_PKEY_derive(ctx.get(), out.data(), &n) != 1) return ossl_error("ECDH");
  return out;
}

}  // namespace otac::crypto
