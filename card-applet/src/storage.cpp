#include "otac/applet/storage.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "otac/common/crypto.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/secret.hpp"
#include "otac/sys/fd.hpp"
#include "otac/sys/file.hpp"
#include "storage_format.hpp"

namespace otac::applet {
namespace state_file {
namespace {

constexpr std::uint8_t kMagic[4] = {'O', 'T', 'C', 'S'};
constexpr std::size_t kHeader = 4 + 1 + 4 + 32;  // magic, format, slot size, SHA-256

// Wipes a buffer that held the state (it holds the card key) when it goes.
struct Wipe {
  Bytes& b;
  ~Wipe() { if (!b.empty()) secure_zero(b.data(), b.size()); }
};

// SHA-256 of a slot's sequence, length and state.
Bytes slot_digest(std::uint64_t seq, ByteView blob) {
  Bytes in = be_bytes(seq, 8);
  append(in, be_bytes(blob.size(), 4));
  append(in, blob);
  Wipe wipe{in};
  return crypto::sha256(in);
}

Error damaged(const std::string& name, const std::string& why) {
  return make_error(Errc::bad_value, "state file " + name + " is damaged (" + why + "); restore it or run `otac-card init`");
}

Result<Parsed> parse_format1(ByteView file, const std::string& name) {
  Cursor c(file, "state file");
  c.take(5, "magic and format");
  const std::size_t len = c.u32("length");
  ByteView digest = c.take(32, "digest");
  ByteView blob = c.take(len, "state");
  if (auto f = c.finish(); !f) return damaged(name, f.error().message);
  if (len > kMaxBlob) return damaged(name, "a state of " + std::to_string(len) + " bytes");
  if (!ct_equal(crypto::sha256(blob), digest))
    return make_error(Errc::bad_value, "state file " + name + " fails its checksum; restore it or run `otac-card init`");
  return Parsed{.format = 1, .slot_size = 0, .current = std::nullopt, .seq = 0, .blob = blob};
}

// One slot: its sequence number and state when intact, nullopt when its checksum fails (a
// write that was cut, or a slot never written).
std::optional<std::pair<std::uint64_t, ByteView>> read_slot(ByteView slot) {
  Cursor c(slot, "slot");
  const std::uint64_t seq = c.be(8, "sequence");
  const std::size_t len = c.u32("length");
  ByteView digest = c.take(32, "digest");
  ByteView blob = c.take(len, "state");
  if (!c.ok() || len > kMaxBlob) return std::nullopt;
  if (!ct_equal(slot_digest(seq, blob), digest)) return std::nullopt;
  return std::pair{seq, blob};
}

}  // namespace

std::size_t slot_size_for(std::size_t blob_size) {
  const std::size_t need = std::max(kSlotHeader + blob_size, kMinSlot);
  return (need + kBlock - 1) / kBlock * kBlock;
}

Bytes slot_image(ByteView blob, std::uint64_t seq) {
  Bytes out = be_bytes(seq, 8);
  append(out, be_bytes(blob.size(), 4));
  append(out, slot_digest(seq, blob));
  append(out, blob);
  return out;
}

Bytes file_image(ByteView blob, std::uint64_t seq, std::size_t slot_size) {
  Bytes out(kBlock + 2 * slot_size, 0);
  Bytes head(kMagic, kMagic + 4);
  head.push_back(2);
  append(head, be_bytes(slot_size, 4));
  append(head, crypto::sha256(head));
  std::copy(head.begin(), head.end(), out.begin());
  Bytes slot = slot_image(blob, seq);
  Wipe wipe{slot};
  std::copy(slot.begin(), slot.end(), out.begin() + static_cast<std::ptrdiff_t>(slot_offset(0, slot_size)));
  return out;
}

Result<Parsed> parse(ByteView file, const std::string& name) {
  if (file.size() < 5) return damaged(name, std::to_string(file.size()) + " bytes, too short for a header");
  if (!std::equal(kMagic, kMagic + 4, file.begin()) || (file[4] != 1 && file[4] != 2))
    return make_error(Errc::bad_value, "state file " + name + " is not an OTAC card state (format 1 or 2)");
  if (file[4] == 1) return parse_format1(file, name);

  Cursor c(file.first(std::min(file.size(), kHeader)), "state file header");
  c.take(5, "magic and format");
  const std::size_t slot_size = c.u32("slot size");
  ByteView digest = c.take(32, "digest");
  if (!c.ok()) return damaged(name, c.error().message);
  if (!ct_equal(crypto::sha256(file.first(9)), digest)) return damaged(name, "its header fails its checksum");
  if (slot_size < kMinSlot || slot_size > kMaxSlot || slot_size % kBlock != 0)
    return damaged(name, "slot size " + std::to_string(slot_size));
  if (file.size() != kBlock + 2 * slot_size)
    return damaged(name, std::to_string(file.size()) + " bytes where its header says " + std::to_string(kBlock + 2 * slot_size));

  const auto a = read_slot(file.subspan(slot_offset(0, slot_size), slot_size));
  const auto b = read_slot(file.subspan(slot_offset(1, slot_size), slot_size));
  if (!a && !b) return damaged(name, "neither of its two copies is intact");
  std::size_t cur = a ? 0 : 1;
  if (a && b) {
    // Every commit writes the slot that is not current with the next number, so two intact
    // slots are always one apart; anything else is not a file this code wrote.
    const std::uint64_t hi = std::max(a->first, b->first), lo = std::min(a->first, b->first);
    if (hi - lo != 1)
      return damaged(name, "its copies have sequence numbers " + std::to_string(a->first) + " and " + std::to_string(b->first));
    cur = b->first > a->first ? 1 : 0;
  }
  const auto& s = cur == 0 ? *a : *b;
  return Parsed{.format = 2, .slot_size = slot_size, .current = cur, .seq = s.first, .blob = s.second};
}

}  // namespace state_file

namespace {

Error sys_error(const std::string& what, const std::filesystem::path& p) {
  return make_error(Errc::io, what + " " + p.string() + ": " + std::strerror(errno) +
                                  " (check the directory exists and is writable)");
}

// Reads the whole file; an absent file gives nullopt. Bounded by the largest state file.
Result<std::optional<Bytes>> read_all(const std::filesystem::path& path, int fd_in = -1) {
  sys::Fd own;
  int fd = fd_in;
  if (fd < 0) {
    own = sys::Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!own) {
      if (errno == ENOENT) return std::optional<Bytes>{};
      return sys_error("cannot open state file", path);
    }
    fd = own.get();
  }
  Bytes all;
  all.reserve(8 * state_file::kBlock);
  std::uint8_t buf[16384];
  // Bounded: the file may hold at most kMaxFile bytes, and a few reads may be interrupted.
  for (std::size_t guard = 0; guard < state_file::kMaxFile / sizeof buf + 64; ++guard) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(all.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      secure_zero(all.data(), all.size());
      return sys_error("cannot read state file", path);
    }
    if (n == 0) break;
    all.insert(all.end(), buf, buf + n);
    secure_zero(buf, static_cast<std::size_t>(n));
    if (all.size() > state_file::kMaxFile) {
      secure_zero(all.data(), all.size());
      return make_error(Errc::bad_length, "state file " + path.string() + " is too large");
    }
  }
  return std::optional<Bytes>(std::move(all));
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
  auto all = read_all(path_);
  if (!all) return all.error();
  if (!*all) return Bytes{};
  Bytes& file = **all;
  state_file::Wipe wipe{file};
  auto p = state_file::parse(file, path_.string());
  if (!p) return p.error();
  return Bytes(p->blob.begin(), p->blob.end());
}

Result<void> FileStorage::commit(ByteView blob) {
  using namespace state_file;
  if (blob.size() > kMaxBlob) return make_error(Errc::bad_length, "state too large to store");
  std::size_t op = 0;
  auto cut = [&] { return cut_ && cut_(op++); };
  const Error power_cut = make_error(Errc::io, "commit of " + path_.string() + " cut (injected power loss)");

  // The file as it is now, read through the descriptor that will write it.
  sys::Fd fd(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd && errno != ENOENT) return sys_error("cannot open state file", path_);
  std::optional<Parsed> now;
  Bytes file;  // empty when there is none
  Wipe wipe_file{file};
  if (fd) {
    auto all = read_all(path_, fd.get());
    if (!all) return all.error();
    file = std::move(**all);
    if (auto p = parse(file, path_.string()); p && p->format == 2) now = *p;
  }

  if (!now || kSlotHeader + blob.size() > now->slot_size) {
    // No file, a format-1 file, one that cannot be read, or a state that outgrew its slots:
    // a new file replaces it whole (write, fsync, rename, directory fsync).
    Bytes image = file_image(blob, now ? now->seq + 1 : 1, slot_size_for(blob.size()));
    Wipe wipe{image};
    sys::WriteOptions opt{.mode = 0600, .replace = true, .chunk = 64 * 1024, .cut = {}};
    if (cut_) {
      opt.cut = cut;
      opt.chunk = 512;  // several writes, for the tearing tests
    }
    return sys::write_file_atomic(path_, image, opt);
  }

  // The slot that does not hold the current state, the next sequence number, one fdatasync.
  Bytes slot = slot_image(blob, now->seq + 1);
  Wipe wipe{slot};
  const std::size_t at = slot_offset(1 - *now->current, now->slot_size);
  constexpr std::size_t kChunk = 512;  // several writes per commit, for the tearing tests
  // Bounded: every pass writes at least a byte, fails, or is one of a few interruptions.
  std::size_t pos = 0;
  for (std::size_t guard = 0; pos < slot.size() && guard < slot.size() + 64; ++guard) {
    if (cut()) return power_cut;
    // Without a cut hook the slot goes out in one write.
    const std::size_t len = cut_ ? std::min(kChunk, slot.size() - pos) : slot.size() - pos;
    const ssize_t w = ::pwrite(fd.get(), slot.data() + pos, len, static_cast<off_t>(at + pos));
    if (w < 0) {
      if (errno == EINTR) continue;
      return sys_error("cannot write state file", path_);
    }
    pos += static_cast<std::size_t>(w);
  }
  if (pos != slot.size()) return make_error(Errc::io, "cannot write state file " + path_.string() + ": the writes stopped short");
  if (cut()) return power_cut;
  if (::fdatasync(fd.get()) != 0) return sys_error("cannot sync state file", path_);
  return {};
}

}  // namespace otac::applet
