// Persistent storage of the applet: one blob, replaced atomically. A real card has EEPROM
// with a transaction mechanism; here the blob is a file with two copies, written in turn.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::applet {

/// Where the applet keeps its state. commit() is atomic: after a failure or a crash at any
/// point, load() returns either the previous blob or the new one, never a mix.
class Storage {
 public:
  virtual ~Storage() = default;
  /// The last committed blob, or an empty Bytes when nothing was ever committed.
  virtual Result<Bytes> load() = 0;
  /// Replaces the blob atomically.
  virtual Result<void> commit(ByteView blob) = 0;
};

/// Keeps the blob in memory; fail_commits makes the next commits fail (nothing changes).
class MemoryStorage final : public Storage {
 public:
  Result<Bytes> load() override { return blob_; }
  Result<void> commit(ByteView blob) override;
  /// Number of commits so far.
  std::size_t commits() const { return commits_; }
  /// The next n commits fail without changing the blob.
  void fail_next(std::size_t n) { fail_ = n; }

 private:
  Bytes blob_;
  std::size_t commits_ = 0;
  std::size_t fail_ = 0;
};

/// A blob in a file with two slots (layout in src/storage_format.hpp): commit writes the new
/// blob, with the next sequence number and a SHA-256, over the slot that does not hold the
/// current one, and fdatasyncs it; load takes the intact slot with the higher number. A cut
/// write fails its checksum, so load returns the blob before it. The file is created, and laid
/// out again when a blob outgrows its slots or the file is in the older one-blob format, by
/// writing a temporary file, fsync, rename and a directory fsync; its mode is 0600. A file
/// with no intact slot, or slots that do not follow one another, is refused, never half-read.
///
/// A slot damaged after its commit returned looks like a cut write: load then returns the
/// blob one commit older, as SQLite does with a damaged last frame of its write-ahead log.
/// For the card this means one code offered twice, which the backend refuses as a replay, or
/// one wrong-PIN try given back (card-applet/README.md, "Persistence model").
class FileStorage final : public Storage {
 public:
  /// The file operations commit performs, numbered from 0: a test can cut the commit at
  /// any of them ("power loss": that operation and every later one do not happen).
  using CutHook = std::function<bool(std::size_t op)>;  ///< true = cut here

  explicit FileStorage(std::filesystem::path path) : path_(std::move(path)) {}
  Result<Bytes> load() override;
  Result<void> commit(ByteView blob) override;
  /// Installs a cut hook (tests only).
  void set_cut_hook(CutHook hook) { cut_ = std::move(hook); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  CutHook cut_;
};

}  // namespace otac::applet
