// TEMPORARY stand-in for common/src/crypto.cpp (owned by the crypto branch), built only while
// that file does not exist. Implements just the primitives the backend uses, on OpenSSL EVP.
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <memory>
#include <stdexcept>

#include "otac/common/crypto.hpp"

namespace otac::crypto {
namespace {

struct CtxFree { void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); } };

Result<Bytes> cipher(const EVP_CIPHER* c, ByteView key, ByteView iv, ByteView data, bool enc) {
  std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_CipherInit_ex(ctx.get(), c, nullptr, key.data(), iv.empty() ? nullptr : iv.data(), enc ? 1 : 0) != 1)
    return make_error(Errc::crypto, "cipher init failed");
  EVP_CIPHER_CTX_set_padding(ctx.get(), 0);
  Bytes out(data.size() + 32);
  int n1 = 0, n2 = 0;
  if (EVP_CipherUpdate(ctx.get(), out.data(), &n1, data.data(), static_cast<int>(data.size())) != 1 ||
      EVP_CipherFinal_ex(ctx.get(), out.data() + n1, &n2) != 1)
    return make_error(Errc::crypto, "cipher failed");
  out.resize(static_cast<std::size_t>(n1 + n2));
  return out;
}

Bytes des3_key24(ByteView k) {
  Bytes key(k.begin(), k.end());
  if (k.size() == 8) { append(key, k); append(key, k); }
  else if (k.size() == 16) append(key, k.subspan(0, 8));
  return key;
}

Result<Bytes> des3(const SecretBytes& key, ByteView iv, ByteView data, bool cbc, bool enc) {
  if (key.size() != 8 && key.size() != 16 && key.size() != 24)
    return make_error(Errc::bad_length, "3DES key must be 8, 16 or 24 bytes");
  if (data.size() % 8 != 0) return make_error(Errc::bad_length, "3DES data must be a multiple of 8");
  Bytes k = des3_key24(key.view());
  auto r = cipher(cbc ? EVP_des_ede3_cbc() : EVP_des_ede3_ecb(), k, iv, data, enc);
  secure_zero(k.data(), k.size());
  return r;
}

const EVP_CIPHER* aes(std::size_t n, bool cbc) {
  switch (n) {
    case 16: return cbc ? EVP_aes_128_cbc() : EVP_aes_128_ecb();
    case 24: return cbc ? EVP_aes_192_cbc() : EVP_aes_192_ecb();
    case 32: return cbc ? EVP_aes_256_cbc() : EVP_aes_256_ecb();
    default: return nullptr;
  }
}

}  // namespace

Bytes random_bytes(std::size_t n) {
  Bytes b(n);
  if (n && RAND_bytes(b.data(), static_cast<int>(n)) != 1) throw std::runtime_error("RAND_bytes failed");
  return b;
}

SecretBytes random_secret(std::size_t n) {
  SecretBytes s(n);
  if (n && RAND_bytes(s.data(), static_cast<int>(n)) != 1) throw std::runtime_error("RAND_bytes failed");
  return s;
}

void set_des_parity(std::uint8_t* key, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t b = static_cast<std::uint8_t>(key[i] & 0xFE);
    int ones = __builtin_popcount(b);
    key[i] = static_cast<std::uint8_t>(b | ((ones % 2 == 0) ? 1 : 0));
  }
}

bool has_des_parity(ByteView key) {
  for (auto b : key) if (__builtin_popcount(b) % 2 == 0) return false;
  return true;
}

Result<Bytes> des3_ecb_encrypt(const SecretBytes& key, ByteView data) { return des3(key, {}, data, false, true); }
Result<Bytes> des3_ecb_decrypt(const SecretBytes& key, ByteView data) { return des3(key, {}, data, false, false); }
Result<Bytes> des3_cbc_encrypt(const SecretBytes& key, ByteView iv, ByteView data) { return des3(key, iv, data, true, true); }
Result<Bytes> des3_cbc_decrypt(const SecretBytes& key, ByteView iv, ByteView data) { return des3(key, iv, data, true, false); }

Result<Bytes> aes_ecb_encrypt(const SecretBytes& key, ByteView data) {
  auto* c = aes(key.size(), false);
  if (!c || data.size() % 16) return make_error(Errc::bad_length, "AES key or data length");
  return cipher(c, key.view(), {}, data, true);
}
Result<Bytes> aes_cbc_encrypt(const SecretBytes& key, ByteView iv, ByteView data) {
  auto* c = aes(key.size(), true);
  if (!c || data.size() % 16 || iv.size() != 16) return make_error(Errc::bad_length, "AES key, iv or data length");
  return cipher(c, key.view(), iv, data, true);
}
Result<Bytes> aes_cbc_decrypt(const SecretBytes& key, ByteView iv, ByteView data) {
  auto* c = aes(key.size(), true);
  if (!c || data.size() % 16 || iv.size() != 16) return make_error(Errc::bad_length, "AES key, iv or data length");
  return cipher(c, key.view(), iv, data, false);
}

Result<Bytes> aes_cmac(const SecretBytes& key, ByteView data) {
  const char* name = key.size() == 16 ? "AES-128-CBC" : key.size() == 24 ? "AES-192-CBC" : key.size() == 32 ? "AES-256-CBC" : nullptr;
  if (!name) return make_error(Errc::bad_length, "AES-CMAC key length");
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "CMAC", nullptr);
  EVP_MAC_CTX* ctx = mac ? EVP_MAC_CTX_new(mac) : nullptr;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, const_cast<char*>(name), 0),
                         OSSL_PARAM_construct_end()};
  Bytes out(16);
  std::size_t n = 0;
  bool ok = ctx && EVP_MAC_init(ctx, key.data(), key.size(), params) == 1 &&
            EVP_MAC_update(ctx, data.data(), data.size()) == 1 && EVP_MAC_final(ctx, out.data(), &n, out.size()) == 1;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  if (!ok) return make_error(Errc::crypto, "AES-CMAC failed");
  return out;
}

Bytes pad_iso9797_m1(ByteView data, std::size_t block) {
  Bytes out(data.begin(), data.end());
  if (out.empty()) out.resize(block, 0);
  while (out.size() % block) out.push_back(0);
  return out;
}

Bytes pad_iso9797_m2(ByteView data, std::size_t block) {
  Bytes out(data.begin(), data.end());
  out.push_back(0x80);
  while (out.size() % block) out.push_back(0);
  return out;
}

Result<Bytes> unpad_iso9797_m2(ByteView data) {
  std::size_t i = data.size();
  while (i > 0 && data[i - 1] == 0) --i;
  if (i == 0 || data[i - 1] != 0x80) return make_error(Errc::bad_value, "bad ISO 9797-1 method 2 padding");
  return Bytes(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(i - 1));
}

Result<Bytes> mac_alg3(const SecretBytes& key, ByteView data, Padding pad, std::size_t mac_len) {
  if (key.size() != 16) return make_error(Errc::bad_length, "MAC algorithm 3 needs a 16-byte key");
  if (mac_len < 1 || mac_len > 8) return make_error(Errc::bad_length, "MAC length must be 1..8");
  Bytes padded = pad == Padding::method2 ? pad_iso9797_m2(data) : pad_iso9797_m1(data);
  SecretBytes k1(key.view().subspan(0, 8)), k2(key.view().subspan(8, 8));
  Bytes iv(8, 0);
  auto c = des3_cbc_encrypt(k1, iv, padded);
  if (!c) return c.error();
  Bytes last(c->end() - 8, c->end());
  auto d = des3_ecb_decrypt(k2, last);
  if (!d) return d.error();
  auto e = des3_ecb_encrypt(k1, *d);
  if (!e) return e.error();
  e->resize(mac_len);
  return e;
}

Bytes sha256(ByteView data) {
  Bytes out(32);
  SHA256(data.data(), data.size(), out.data());
  return out;
}

Bytes hmac_sha256(ByteView key, ByteView data) {
  Bytes out(32);
  unsigned n = 32;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &n);
  return out;
}

SecretBytes kdf_sp800_108(const SecretBytes& key, std::string_view label, ByteView context, std::size_t out_len) {
  SecretBytes out(out_len);
  std::size_t done = 0;
  for (std::uint32_t i = 1; done < out_len; ++i) {
    Bytes in = be_bytes(i, 4);
    append(in, as_bytes(label));
    in.push_back(0);
    append(in, context);
    append(in, be_bytes(out_len * 8, 4));
    Bytes block = hmac_sha256(key.view(), in);
    for (std::size_t j = 0; j < block.size() && done < out_len; ++j) out.data()[done++] = block[j];
    secure_zero(block.data(), block.size());
  }
  return out;
}

}  // namespace otac::crypto
