#include "kek.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include "otac/common/crypto.hpp"
#include "otac/sys/fd.hpp"
#include "otac/sys/file.hpp"
#include "pkcs11.hpp"
#include "store.hpp"

namespace otac::backend {
namespace {

constexpr std::size_t kIv = 16, kTag = 32;
// Token format: 02 || version(4) || IV(12) || C || tag(16).
constexpr std::size_t kGcmIv = 12, kGcmTag = 16, kTokenHeader = 1 + 4 + kGcmIv;
// How long a process keeps its view of the token's KEK versions before looking again.
constexpr auto kVersionRefresh = std::chrono::seconds(1);

Error io_error(const std::filesystem::path& f, const char* what) {
  return make_error(Errc::io, std::string(what) + " " + f.string() + ": " + std::strerror(errno));
}

Bytes tag_input(ByteView ad, ByteView iv_and_c) {
  Bytes in = to_bytes("OTAC-KEK-1");
  append(in, be_bytes(ad.size(), 4));
  append(in, ad);
  in.push_back(kSealedFile);
  append(in, iv_and_c);
  return in;
}

Bytes gcm_aad(std::uint32_t version, ByteView ad) {
  Bytes in = to_bytes("OTAC-KEK-2");
  in.push_back(kSealedToken);
  append(in, be_bytes(version, 4));
  append(in, be_bytes(ad.size(), 4));
  append(in, ad);
  return in;
}

Bytes version_id(std::uint32_t v) { return be_bytes(v, 4); }

std::uint32_t be32(ByteView b) {
  return static_cast<std::uint32_t>(b[0]) << 24 | static_cast<std::uint32_t>(b[1]) << 16 |
         static_cast<std::uint32_t>(b[2]) << 8 | static_cast<std::uint32_t>(b[3]);
}

}  // namespace

// ---- file KEK ----

FileKek FileKek::from_bytes(const SecretBytes& kek) {
  FileKek k;
  k.enc_ = crypto::kdf_sp800_108(kek, "OTAC-KEK-ENC", {}, 32);
  const SecretBytes mac = crypto::kdf_sp800_108(kek, "OTAC-KEK-MAC", {}, 32);
  k.audit_ = crypto::kdf_sp800_108(kek, "OTAC-AUDIT", {}, 32);
  k.tag_ = std::make_shared<const crypto::HmacSha256Key>(mac.view());
  k.chain_ = std::make_shared<const crypto::HmacSha256Key>(k.audit_.view());
  return k;
}

Result<FileKek> FileKek::load(const std::filesystem::path& file) {
  sys::Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0 && errno == ENOENT) return make_error(Errc::not_found, "key-encryption key " + file.string() + " does not exist");
  if (fd.get() < 0) return io_error(file, "cannot open the key-encryption key");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return io_error(file, "cannot stat the key-encryption key");
  if ((st.st_mode & 077) != 0)
    return make_error(Errc::state, "key-encryption key " + file.string() +
                                       " is readable by group or others; run chmod 600 on it");
  if (st.st_size != 32)
    return make_error(Errc::bad_length, "key-encryption key " + file.string() + " must be exactly 32 bytes");
  SecretBytes raw(32);
  if (::read(fd.get(), raw.data(), 32) != 32) return io_error(file, "cannot read the key-encryption key");
  return from_bytes(raw);
}

Result<FileKek> FileKek::load_or_create(const std::filesystem::path& file) {
  auto k = load(file);
  if (k || k.error().code != Errc::not_found) return k;
  // Created complete or not at all; if another process creates it at the same moment, this
  // one gets Errc::conflict and reads theirs below.
  SecretBytes fresh = crypto::random_secret(32);
  auto w = sys::write_file_atomic(file, fresh.view(), {.mode = 0600, .replace = false});
  if (!w && w.error().code != Errc::conflict)
    return make_error(w.error().code, "cannot create the key-encryption key: " + w.error().message);
  return load(file);
}

Result<Bytes> FileKek::seal(ByteView plain, ByteView ad) const {
  Bytes iv = crypto::random_bytes(kIv);
  Bytes padded = crypto::pad_iso9797_m2(plain, 16);
  auto c = crypto::aes_cbc_encrypt(enc_, iv, padded);
  secure_zero(padded.data(), padded.size());
  if (!c) return c.error();
  Bytes out{kSealedFile};
  append(out, iv);
  append(out, *c);
  Bytes tag = tag_->mac(tag_input(ad, ByteView(out).subspan(1)));
  append(out, tag);
  return out;
}

Result<SecretBytes> FileKek::open(ByteView sealed, ByteView ad) const {
  if (sealed.size() < 1 + kIv + 16 + kTag || sealed[0] != kSealedFile || (sealed.size() - 1 - kIv - kTag) % 16)
    return make_error(Errc::bad_value, "sealed key has a wrong format; the database may be damaged");
  ByteView body = sealed.subspan(1, sealed.size() - 1 - kTag);
  Bytes tag = tag_->mac(tag_input(ad, body));
  if (!ct_equal(tag, sealed.subspan(sealed.size() - kTag)))
    return make_error(Errc::bad_mac, "sealed key does not verify: wrong key-encryption key or a modified database");
  auto p = crypto::aes_cbc_decrypt(enc_, body.subspan(0, kIv), body.subspan(kIv));
  if (!p) return p.error();
  auto u = crypto::unpad_iso9797_m2(*p);
  secure_zero(p->data(), p->size());
  if (!u) return u.error();
  SecretBytes out(*u);
  secure_zero(u->data(), u->size());
  return out;
}

Result<Bytes> FileKek::audit_mac(ByteView data) const { return chain_->mac(data); }

// ---- token KEK ----

// The KEK versions the token holds, refreshed at most once per kVersionRefresh.
struct TokenKek::Versions {
  std::mutex mu;
  std::map<std::uint32_t, p11::Handle> handles;
  p11::Handle audit = 0;
  std::chrono::steady_clock::time_point read_at{};
  std::uint64_t generation = 0;  // the token's generation the handles belong to

  // Handles from before the token was re-opened are stale: look again (caller holds mu).
  void follow(const p11::Token& t) {
    if (t.generation() == generation) return;
    handles.clear();
    audit = 0;
    read_at = {};
    generation = t.generation();
  }
};

TokenKek::TokenKek(std::shared_ptr<p11::Token> token, TokenLabels labels)
    : token_(std::move(token)), labels_(std::move(labels)), versions_(std::make_unique<Versions>()) {}
TokenKek::~TokenKek() = default;

namespace {

// Reads every KEK version of the label; a CKA_ID that is not 4 bytes is refused.
Result<std::map<std::uint32_t, p11::Handle>> read_versions(p11::Token& t, const std::string& label) {
  auto keys = t.find_secret_keys(label);
  if (!keys) return keys.error();
  std::map<std::uint32_t, p11::Handle> out;
  for (const auto& [id, h] : *keys) {
    if (id.size() != 4)
      return make_error(Errc::bad_value, "token key '" + label + "' has CKA_ID " + to_hex(id) +
                                             "; a KEK's id is its version, 4 bytes (made by otac-backend hsm-init)");
    out[be32(id)] = h;
  }
  return out;
}

}  // namespace

Result<std::shared_ptr<TokenKek>> TokenKek::open(std::shared_ptr<p11::Token> token, TokenLabels labels) {
  std::shared_ptr<TokenKek> k(new TokenKek(std::move(token), std::move(labels)));
  auto v = read_versions(*k->token_, k->labels_.kek);
  if (!v) return v.error();
  if (v->empty())
    return make_error(Errc::not_found, "token '" + k->token_->label() + "' has no key-encryption key labelled '" +
                                           k->labels_.kek + "'; run otac-backend hsm-init first");
  auto audit = k->token_->find_secret_keys(k->labels_.audit);
  if (!audit) return audit.error();
  if (audit->size() != 1)
    return make_error(Errc::not_found, "token '" + k->token_->label() + "' must hold exactly one audit key labelled '" +
                                           k->labels_.audit + "' (it holds " + std::to_string(audit->size()) + ")");
  k->versions_->handles = std::move(*v);
  k->versions_->audit = audit->front().second;
  k->versions_->read_at = std::chrono::steady_clock::now();
  k->versions_->generation = k->token_->generation();
  return k;
}

Result<std::uint32_t> TokenKek::current_version() const {
  auto c = current_key();
  if (!c) return c.error();
  return c->first;
}

Result<std::pair<std::uint32_t, p11::Handle>> TokenKek::current_key() const {
  std::lock_guard lk(versions_->mu);
  versions_->follow(*token_);
  const auto now = std::chrono::steady_clock::now();
  if (now - versions_->read_at >= kVersionRefresh || versions_->handles.empty()) {
    auto v = read_versions(*token_, labels_.kek);
    if (!v) return v.error();
    if (v->empty()) {
      // Every version gone at once: the token's objects are not there (a token removed, its
      // storage gone). Treated as a lost token, which is re-opened when it is back.
      const std::string why = "token '" + token_->label() + "' shows no key-encryption key '" + labels_.kek + "'";
      token_->mark_lost(why);
      return make_error(Errc::unavailable, "PKCS#11 " + why);
    }
    versions_->handles = std::move(*v);
    versions_->read_at = now;
  }
  const auto& [version, handle] = *versions_->handles.rbegin();
  return std::pair<std::uint32_t, p11::Handle>(version, handle);
}

Result<std::uint32_t> TokenKek::version_of(ByteView sealed) {
  if (sealed.size() < kTokenHeader + kGcmTag || sealed[0] != kSealedToken)
    return make_error(Errc::bad_value, "sealed key has a wrong format; the database may be damaged");
  return be32(sealed.subspan(1, 4));
}

void TokenKek::forget_handles() const {
  std::lock_guard lk(versions_->mu);
  versions_->read_at = {};
  versions_->handles.clear();
  versions_->audit = 0;
}

// A call with a key handle; a handle the token no longer knows is looked up again once, and
// if the handle just found is refused too, the token is treated as lost.
template <class T, class Fn>
Result<T> with_handle_retry(const TokenKek& k, p11::Token& t, Fn&& once, void (TokenKek::*forget)() const) {
  auto r = once();
  if (r || r.error().code != Errc::unknown_key) return r;
  (k.*forget)();  // the token's objects were re-read (e.g. its files came back): look again
  r = once();
  if (!r && r.error().code == Errc::unknown_key && r.error().message.rfind("PKCS#11", 0) == 0) t.mark_lost(r.error().message);
  return r;
}

Result<Bytes> TokenKek::seal(ByteView plain, ByteView ad) const {
  return with_handle_retry<Bytes>(*this, *token_, [&] { return seal_once(plain, ad); }, &TokenKek::forget_handles);
}

Result<SecretBytes> TokenKek::open(ByteView sealed, ByteView ad) const {
  return with_handle_retry<SecretBytes>(*this, *token_, [&] { return open_once(sealed, ad); }, &TokenKek::forget_handles);
}

Result<Bytes> TokenKek::audit_mac(ByteView data) const {
  return with_handle_retry<Bytes>(*this, *token_, [&] { return audit_mac_once(data); }, &TokenKek::forget_handles);
}

Result<Bytes> TokenKek::seal_once(ByteView plain, ByteView ad) const {
  auto key = current_key();
  if (!key) return key.error();
  const auto [version, h] = *key;
  // A random 96-bit IV per seal (NIST SP 800-38D 8.2.2): far fewer than 2^32 seals per KEK
  // version, and a rotation starts a new key.
  Bytes out{kSealedToken};
  append(out, version_id(version));
  append(out, crypto::random_bytes(kGcmIv));
  auto c = token_->gcm_encrypt(h, ByteView(out).subspan(5), gcm_aad(version, ad), plain);
  if (!c) return c.error();
  append(out, *c);
  return out;
}

Result<SecretBytes> TokenKek::open_once(ByteView sealed, ByteView ad) const {
  auto v = version_of(sealed);
  if (!v) return v.error();
  p11::Handle h = 0;
  for (int attempt = 0; attempt < 2 && h == 0; ++attempt) {
    {
      std::lock_guard lk(versions_->mu);
      versions_->follow(*token_);
      auto it = versions_->handles.find(*v);
      if (it != versions_->handles.end()) h = it->second;
      else if (attempt == 0) versions_->read_at = {};  // made by a newer version: look again
    }
    if (h == 0 && attempt == 0) {
      if (auto c = current_version(); !c) return c.error();
    }
  }
  if (h == 0)
    return make_error(Errc::unknown_key, "sealed key is wrapped under KEK version " + std::to_string(*v) + ", which token '" +
                                             token_->label() + "' does not hold");
  return token_->gcm_decrypt(h, sealed.subspan(5, kGcmIv), gcm_aad(*v, ad), sealed.subspan(kTokenHeader));
}

Result<Bytes> TokenKek::audit_mac_once(ByteView data) const {
  p11::Handle h = 0;
  {
    std::lock_guard lk(versions_->mu);
    versions_->follow(*token_);
    h = versions_->audit;
  }
  if (h == 0) {
    auto audit = token_->find_secret_keys(labels_.audit);
    if (!audit) return audit.error();
    if (audit->empty()) {  // as for the KEK: the token's objects are not there
      const std::string why = "token '" + token_->label() + "' shows no audit key '" + labels_.audit + "'";
      token_->mark_lost(why);
      return make_error(Errc::unavailable, "PKCS#11 " + why);
    }
    if (audit->size() != 1) return make_error(Errc::state, "token '" + token_->label() + "' holds more than one audit key '" + labels_.audit + "'");
    h = audit->front().second;
    std::lock_guard lk(versions_->mu);
    versions_->audit = h;
  }
  return token_->hmac_sha256(h, data);
}

// ---- the store's view ----

Result<Kek> Kek::load_or_create(const std::filesystem::path& file) {
  auto f = FileKek::load_or_create(file);
  if (!f) return f.error();
  Kek k;
  k.file_ = std::move(*f);
  return k;
}

Kek Kek::from_bytes(const SecretBytes& kek) {
  Kek k;
  k.file_ = FileKek::from_bytes(kek);
  return k;
}

Kek Kek::with_token(std::shared_ptr<const TokenKek> token, std::optional<FileKek> file, bool hold_server_keys) {
  Kek k;
  k.token_ = std::move(token);
  k.file_ = std::move(file);
  k.hold_server_keys_ = hold_server_keys && k.token_;
  return k;
}

Bytes Kek::seal(ByteView plain, ByteView ad) const {
  const KeyCustody* c = token_ ? static_cast<const KeyCustody*>(token_.get()) : file();
  if (!c) throw std::logic_error("Kek without a custody");  // every constructor sets one
  auto s = c->seal(plain, ad);
  if (!s) throw Failure(make_error(s.error().code, "cannot seal a key: " + s.error().message));
  return std::move(*s);
}

Result<SecretBytes> Kek::open(ByteView sealed, ByteView ad) const {
  if (!sealed.empty() && sealed[0] == kSealedToken) {
    if (!token_) return make_error(Errc::unknown_key, "sealed key is wrapped by a PKCS#11 token, but no token is configured (kek_uri)");
    return token_->open(sealed, ad);
  }
  if (!sealed.empty() && sealed[0] == kSealedFile) {
    if (!file_) return make_error(Errc::unknown_key, "sealed key is wrapped by the file KEK, but kek_file is not loaded; finish the migration with otac-backend hsm-migrate");
    return file_->open(sealed, ad);
  }
  return make_error(Errc::bad_value, "sealed key has a wrong format; the database may be damaged");
}

Bytes Kek::audit_mac(ByteView data) const {
  auto m = token_ ? token_->audit_mac(data) : file_ ? file_->audit_mac(data) : Result<Bytes>(make_error(Errc::internal, "no custody"));
  if (!m) throw Failure(make_error(m.error().code, "cannot compute the audit-log MAC: " + m.error().message));
  return std::move(*m);
}

Result<HeldServerKey> Kek::held_server_key(std::string_view name) const {
  if (!hold_server_keys_) return make_error(Errc::not_found, "the store holds server key " + std::string(name));
  const TokenLabels& l = token_->labels();
  const std::string label = name == "server" ? l.server : name == "card-ca" ? l.card_ca : std::string();
  if (label.empty()) return make_error(Errc::not_found, "no token key for server key " + std::string(name));
  p11::Token& t = token_->token();  // kept alive by the TokenKek the signer holds
  auto pub = t.find_ec_key(label, false);
  if (!pub) return make_error(pub.error().code, "server key " + std::string(name) + ": " + pub.error().message + "; run otac-backend hsm-init or hsm-migrate");
  auto point = t.ec_point(*pub);
  if (!point) return point.error();
  auto priv = t.find_ec_key(label, true);
  if (!priv) return make_error(priv.error().code, "server key " + std::string(name) + ": " + priv.error().message);
  HeldServerKey k;
  k.public_point = std::move(*point);
  // The private key is looked up at each signature (E4 and E5 signatures are rare), so a
  // token re-opened since holds no stale handle here.
  k.sign = [tk = token_, label](ByteView message) -> Result<Bytes> {
    auto h = tk->token().find_ec_key(label, true);
    if (!h) {
      if (h.error().code == Errc::not_found) tk->token().mark_lost(h.error().message);
      return make_error(h.error().code, "PKCS#11 " + h.error().message);
    }
    auto rs = tk->token().ecdsa_sign_digest(*h, crypto::sha256(message));
    if (!rs) return rs.error();
    if (rs->size() != 64) return make_error(Errc::crypto, "token ECDSA signature is not 64 bytes (r || s)");
    return crypto::ecdsa_sig_from_rs(ByteView(*rs).first(32), ByteView(*rs).subspan(32));
  };
  return k;
}

Result<ServerKeyRecord> held_server_record(const Kek& kek, std::string_view name, ByteView stored_point,
                                           std::int64_t created_at) {
  auto held = kek.held_server_key(name);
  if (!held) {
    if (held.error().code == Errc::not_found && stored_point.empty())
      return make_error(Errc::not_found, "no server key " + std::string(name));
    return held.error();
  }
  if (!stored_point.empty() && !ct_equal(stored_point, held->public_point))
    return make_error(Errc::state, "server key " + std::string(name) + " in the token differs from the one in the store (" +
                                       to_hex(stored_point) + "); cards trust the store's: import it with otac-backend hsm-migrate");
  ServerKeyRecord k;
  k.name = std::string(name);
  k.public_point = std::move(held->public_point);
  k.sign_in_token = std::move(held->sign);
  k.created_at = created_at;
  return k;
}

}  // namespace otac::backend
