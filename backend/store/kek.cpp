#include "kek.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "otac/common/crypto.hpp"
#include "otac/sys/fd.hpp"
#include "otac/sys/file.hpp"

namespace otac::backend {
namespace {

constexpr std::uint8_t kFormat = 0x01;
constexpr std::size_t kIv = 16, kTag = 32;

Error io_error(const std::filesystem::path& f, const char* what) {
  return make_error(Errc::io, std::string(what) + " " + f.string() + ": " + std::strerror(errno));
}

Bytes tag_input(ByteView ad, ByteView iv_and_c) {
  Bytes in = to_bytes("OTAC-KEK-1");
  append(in, be_bytes(ad.size(), 4));
  append(in, ad);
  in.push_back(kFormat);
  append(in, iv_and_c);
  return in;
}

}  // namespace

Kek Kek::from_bytes(const SecretBytes& kek) {
  Kek k;
  k.enc_ = crypto::kdf_sp800_108(kek, "OTAC-KEK-ENC", {}, 32);
  k.mac_ = crypto::kdf_sp800_108(kek, "OTAC-KEK-MAC", {}, 32);
  k.audit_ = crypto::kdf_sp800_108(kek, "OTAC-AUDIT", {}, 32);
  return k;
}

Result<Kek> Kek::load_or_create(const std::filesystem::path& file) {
  sys::Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0 && errno == ENOENT) {
    // Created complete or not at all; if another process creates it at the same moment, this
    // one gets Errc::conflict and reads theirs below.
    SecretBytes fresh = crypto::random_secret(32);
    auto w = sys::write_file_atomic(file, fresh.view(), {.mode = 0600, .replace = false});
    if (!w && w.error().code != Errc::conflict)
      return make_error(w.error().code, "cannot create the key-encryption key: " + w.error().message);
    return load_or_create(file);
  }
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

Bytes Kek::seal(ByteView plain, ByteView ad) const {
  Bytes iv = crypto::random_bytes(kIv);
  Bytes padded = crypto::pad_iso9797_m2(plain, 16);
  auto c = crypto::aes_cbc_encrypt(enc_, iv, padded);
  secure_zero(padded.data(), padded.size());
  if (!c) throw std::runtime_error("KEK seal: " + c.error().message);  // fixed sizes: cannot fail
  Bytes out{kFormat};
  append(out, iv);
  append(out, *c);
  Bytes tag = crypto::hmac_sha256(mac_.view(), tag_input(ad, ByteView(out).subspan(1)));
  append(out, tag);
  return out;
}

Result<SecretBytes> Kek::open(ByteView sealed, ByteView ad) const {
  if (sealed.size() < 1 + kIv + 16 + kTag || sealed[0] != kFormat || (sealed.size() - 1 - kIv - kTag) % 16)
    return make_error(Errc::bad_value, "sealed key has a wrong format; the database may be damaged");
  ByteView body = sealed.subspan(1, sealed.size() - 1 - kTag);
  Bytes tag = crypto::hmac_sha256(mac_.view(), tag_input(ad, body));
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

}  // namespace otac::backend
