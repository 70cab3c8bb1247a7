#include "pki.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>

#include "otac/common/bytes.hpp"
#include "otac/common/crypto.hpp"

namespace otac::backend::pki {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(ASN1_INTEGER* p) const { ASN1_INTEGER_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
using PKeyPtr = std::unique_ptr<EVP_PKEY, Free>;
using X509Ptr = std::unique_ptr<X509, Free>;
using ReqPtr = std::unique_ptr<X509_REQ, Free>;
using BioPtr = std::unique_ptr<BIO, Free>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Free>;
using BnPtr = std::unique_ptr<BIGNUM, Free>;
using NamesPtr = std::unique_ptr<GENERAL_NAMES, Free>;

Error ssl_error(std::string what) { return make_error(Errc::crypto, "OpenSSL failed to " + what); }

PKeyPtr gen_p256() { return PKeyPtr(EVP_EC_gen("P-256")); }

Result<std::string> key_pem(EVP_PKEY* k) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return ssl_error("encode a private key");
  char* p = nullptr;
  const long n = BIO_get_mem_data(b.get(), &p);
  std::string out(p, static_cast<std::size_t>(n));
  return out;
}

Result<std::string> cert_pem(X509* c) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509(b.get(), c) != 1) return ssl_error("encode a certificate");
  char* p = nullptr;
  const long n = BIO_get_mem_data(b.get(), &p);
  return std::string(p, static_cast<std::size_t>(n));
}

BioPtr mem_bio(std::string_view s) { return BioPtr(BIO_new_mem_buf(s.data(), static_cast<int>(s.size()))); }

Result<PKeyPtr> load_key(std::string_view pem) {
  auto b = mem_bio(pem);
  PKeyPtr k(b ? PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!k) return make_error(Errc::bad_value, "not a PEM private key");
  return k;
}

Result<X509Ptr> load_cert(std::string_view pem) {
  auto b = mem_bio(pem);
  X509Ptr c(b ? PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!c) return make_error(Errc::bad_value, "not a PEM certificate");
  return c;
}

bool add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

// A certificate for pub, signed by (issuer, issuer_key); issuer == nullptr means self-signed.
Result<X509Ptr> build(EVP_PKEY* pub, std::string_view cn, X509* issuer, int days) {
  X509Ptr c(X509_new());
  if (!c) return ssl_error("allocate a certificate");
  X509_set_version(c.get(), 2);
  // 159-bit random serial (RFC 5280 4.1.2.2: positive, at most 20 octets).
  Bytes serial = crypto::random_bytes(20);
  serial[0] &= 0x7f;
  BnPtr bn(BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(c.get()))) return ssl_error("set a serial number");
  // notBefore is backdated for clocks that lag; the validity period counts from there, so
  // notAfter - notBefore is exactly `days` (browsers and Apple count the whole period).
  std::time_t now = std::time(nullptr);
  if (!X509_time_adj_ex(X509_getm_notBefore(c.get()), 0, -backdate_seconds, &now) ||
      !X509_time_adj_ex(X509_getm_notAfter(c.get()), days, -backdate_seconds, &now))
    return ssl_error("set the validity period");
  X509_set_pubkey(c.get(), pub);
  X509_NAME* name = X509_get_subject_name(c.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("OTAC"), -1, -1, 0);
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(std::string(cn).c_str()),
                                 -1, -1, 0) != 1)
    return make_error(Errc::bad_value, "common name is not valid for a certificate");
  X509_set_issuer_name(c.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509* iss = issuer ? issuer : c.get();
  if (!add_ext(c.get(), iss, NID_subject_key_identifier, "hash")) return ssl_error("add subjectKeyIdentifier");
  if (!add_ext(c.get(), iss, NID_authority_key_identifier, "keyid:always")) return ssl_error("add authorityKeyIdentifier");
  return c;
}

Result<void> sign(X509* c, EVP_PKEY* key) {
  if (X509_sign(c, key, EVP_sha256()) <= 0) return ssl_error("sign a certificate");
  return {};
}

Result<std::string> issue_for(const KeyCert& ca, EVP_PKEY* pub, std::string_view cn, int days, bool server,
                              const std::vector<std::string>& dns, const std::vector<std::string>& ips) {
  if (days < 1 || days > max_leaf_days)
    return make_error(Errc::bad_value, "a certificate's validity must be 1 to " + std::to_string(max_leaf_days) +
                                           " days, not " + std::to_string(days));
  auto cakey = load_key(ca.key_pem);
  if (!cakey) return cakey.error();
  auto cacert = load_cert(ca.cert_pem);
  if (!cacert) return cacert.error();
  auto c = build(pub, cn, cacert->get(), days);
  if (!c) return c.error();
  bool ok = add_ext(c->get(), cacert->get(), NID_basic_constraints, "critical,CA:FALSE") &&
            add_ext(c->get(), cacert->get(), NID_key_usage, "critical,digitalSignature") &&
            add_ext(c->get(), cacert->get(), NID_ext_key_usage, server ? "serverAuth" : "clientAuth");
  std::string san;
  for (const auto& d : dns) san += (san.empty() ? "" : ",") + std::string("DNS:") + d;
  for (const auto& i : ips) san += (san.empty() ? "" : ",") + std::string("IP:") + i;
  if (ok && !san.empty()) ok = add_ext(c->get(), cacert->get(), NID_subject_alt_name, san.c_str());
  if (!ok) return ssl_error("add certificate extensions");
  if (auto s = sign(c->get(), cakey->get()); !s) return s.error();
  return cert_pem(c->get());
}

Result<void> valid_cn(std::string_view cn) {
  if (cn.empty() || cn.size() > 64) return make_error(Errc::bad_value, "common name must be 1 to 64 characters");
  for (const char ch : cn) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u > 0x7e) return make_error(Errc::bad_value, "common name must be printable ASCII");
  }
  return {};
}

}  // namespace

Result<KeyCert> make_ca(std::string_view cn, int days) {
  PKeyPtr k = gen_p256();
  if (!k) return ssl_error("generate a P-256 key");
  auto c = build(k.get(), cn, nullptr, days);
  if (!c) return c.error();
  if (!add_ext(c->get(), c->get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
      !add_ext(c->get(), c->get(), NID_key_usage, "critical,keyCertSign,cRLSign"))
    return ssl_error("add CA extensions");
  if (auto s = sign(c->get(), k.get()); !s) return s.error();
  auto kp = key_pem(k.get());
  if (!kp) return kp.error();
  auto cp = cert_pem(c->get());
  if (!cp) return cp.error();
  return KeyCert{std::move(*kp), std::move(*cp)};
}

Result<KeyCert> issue_server(const KeyCert& ca, std::string_view cn, const std::vector<std::string>& dns,
                             const std::vector<std::string>& ips, int days) {
  if (auto v = valid_cn(cn); !v) return v.error();
  PKeyPtr k = gen_p256();
  if (!k) return ssl_error("generate a P-256 key");
  auto c = issue_for(ca, k.get(), cn, days, true, dns, ips);
  if (!c) return c.error();
  auto kp = key_pem(k.get());
  if (!kp) return kp.error();
  return KeyCert{std::move(*kp), std::move(*c)};
}

Result<std::string> reissue_server(const KeyCert& ca, const KeyCert& current, int days) {
  auto key = load_key(current.key_pem);
  if (!key) return key.error();
  auto old = load_cert(current.cert_pem);
  if (!old) return old.error();
  if (X509_check_private_key(old->get(), key->get()) != 1)
    return make_error(Errc::bad_value, "the server certificate does not belong to the server key");
  auto cn = common_name(current.cert_pem);
  if (!cn) return cn.error();
  if (auto v = valid_cn(*cn); !v) return v.error();
  std::vector<std::string> dns, ips;
  NamesPtr names(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(old->get(), NID_subject_alt_name, nullptr, nullptr)));
  const int count = names ? sk_GENERAL_NAME_num(names.get()) : 0;
  for (int i = 0; i < count; ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names.get(), i);
    if (g->type == GEN_DNS) {
      const ASN1_STRING* d = g->d.dNSName;
      dns.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(d)), static_cast<std::size_t>(ASN1_STRING_length(d)));
    } else if (g->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* a = g->d.iPAddress;
      char text[64] = {};
      const int af = ASN1_STRING_length(a) == 4 ? AF_INET : ASN1_STRING_length(a) == 16 ? AF_INET6 : -1;
      if (af < 0 || !inet_ntop(af, ASN1_STRING_get0_data(a), text, sizeof text))
        return make_error(Errc::bad_value, "the server certificate has a malformed IP address name");
      ips.emplace_back(text);
    }
  }
  return issue_for(ca, key->get(), *cn, days, true, dns, ips);
}

Result<std::int64_t> not_after(std::string_view cert_pem) {
  auto c = load_cert(cert_pem);
  if (!c) return c.error();
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(c->get()), &tm) != 1) return ssl_error("read a certificate's notAfter");
  return static_cast<std::int64_t>(timegm(&tm));
}

Result<KeyCert> issue_client(const KeyCert& ca, std::string_view cn, int days) {
  if (auto v = valid_cn(cn); !v) return v.error();
  PKeyPtr k = gen_p256();
  if (!k) return ssl_error("generate a P-256 key");
  auto c = issue_for(ca, k.get(), cn, days, false, {}, {});
  if (!c) return c.error();
  auto kp = key_pem(k.get());
  if (!kp) return kp.error();
  return KeyCert{std::move(*kp), std::move(*c)};
}

Result<std::string> sign_client_csr(const KeyCert& ca, std::string_view csr_pem, std::string_view cn, int days) {
  if (auto v = valid_cn(cn); !v) return v.error();
  auto b = mem_bio(csr_pem);
  ReqPtr req(b ? PEM_read_bio_X509_REQ(b.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!req) return make_error(Errc::bad_value, "csr is not a PEM certificate request");
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (!pub || X509_REQ_verify(req.get(), pub) != 1)
    return make_error(Errc::bad_mac, "the CSR's signature does not verify; generate it again with its own key");
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  const int idx = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
  if (idx >= 0) {
    ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    const std::string got(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                          static_cast<std::size_t>(ASN1_STRING_length(s)));
    if (got != cn) return make_error(Errc::bad_value, "the CSR's CN '" + got + "' is not the terminal id '" + std::string(cn) + "'");
  }
  return issue_for(ca, pub, cn, days, false, {}, {});
}

Result<std::string> fingerprint(std::string_view pem) {
  auto c = load_cert(pem);
  if (!c) return c.error();
  const int len = i2d_X509(c->get(), nullptr);
  if (len <= 0) return ssl_error("encode a certificate");
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_X509(c->get(), &p);
  return to_hex(crypto::sha256(der));
}

Result<std::string> common_name(std::string_view pem) {
  auto c = load_cert(pem);
  if (!c) return c.error();
  X509_NAME* name = X509_get_subject_name(c->get());
  const int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return make_error(Errc::not_found, "certificate has no CN");
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<std::size_t>(ASN1_STRING_length(s)));
}

}  // namespace otac::backend::pki
