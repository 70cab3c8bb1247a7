#include "otac/applet/storage.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "otac/common/crypto.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/secret.hpp"
#include "otac/sys/fd.hpp"
#include "otac/sys/file.hpp"

namespace otac::applet {
namespace {

constexpr std::uint8_t kMagic[4] = {'O', 'T', 'C', 'S'};
constexpr std::uint8_t kFormat = 1;
constexpr std::size_t kMaxBlob = 1 << 20;  // far above the applet's fixed capacity
constexpr std::size_t kChunk = 512;        // several writes per commit, for tearing tests

Error sys_error(const std::string& what, const std::filesystem::path& p) {
  return make_error(Errc::io, what + " " + p.string() + ": " + std::strerror(errno) +
                                  " (check the directory exists and is writable)");
}

}  // namespace

Result<void> MemoryStorage::commit(ByteView blob) {
  if (fail_ > 0) {
    --fail_;
    return make_error(Errc::io, "memory storage: commit failed (injected)");
  }
  if (!blob_.empty()) secure_zero(blob_.data(), blob_.size());
  blob_.assign(blob.begin(), blob.end());
  ++commits_;
  return {};
}

Result<Bytes> FileStorage::load() {
  sys::Fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return Bytes{};
    return sys_error("cannot open state file", path_);
  }
  Bytes all;
  std::uint8_t buf[4096];
  for (int guard = 0; guard < 1024; ++guard) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("cannot read state file", path_);
    }
    if (n == 0) break;
    all.insert(all.end(), buf, buf + n);
    if (all.size() > kMaxBlob + 64) return make_error(Errc::bad_length, "state file " + path_.string() + " is too large");
  }
  Cursor c(all, "state file");
  ByteView magic = c.take(4, "magic");
  const auto format = c.u8("format");
  const std::size_t len = c.u32("length");
  ByteView digest = c.take(32, "digest");
  ByteView blob = c.take(len, "state");
  if (auto f = c.finish(); !f)
    return make_error(Errc::bad_value, "state file " + path_.string() + " is damaged (" + f.error().message + "); restore it or run `otac-card init`");
  if (!std::equal(magic.begin(), magic.end(), kMagic) || format != kFormat)
    return make_error(Errc::bad_value, "state file " + path_.string() + " is not an OTAC card state (format 1)");
  if (!ct_equal(crypto::sha256(blob), digest))
    return make_error(Errc::bad_value, "state file " + path_.string() + " fails its checksum; restore it or run `otac-card init`");
  Bytes out(blob.begin(), blob.end());
  secure_zero(all.data(), all.size());
  return out;
}

Result<void> FileStorage::commit(ByteView blob) {
  if (blob.size() > kMaxBlob) return make_error(Errc::bad_length, "state too large to store");
  Bytes file(kMagic, kMagic + 4);
  file.push_back(kFormat);
  append(file, be_bytes(blob.size(), 4));
  append(file, crypto::sha256(blob));
  append(file, blob);
  struct Wipe { Bytes& b; ~Wipe() { secure_zero(b.data(), b.size()); } } wipe{file};

  std::size_t op = 0;
  sys::WriteOptions opt{.mode = 0600, .replace = true, .chunk = kChunk, .cut = {}};
  if (cut_) opt.cut = [&] { return cut_(op++); };
  return sys::write_file_atomic(path_, file, opt);
}

}  // namespace otac::applet
