// Whole-file reads and crash-safe whole-file replacement.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "otac/common/result.hpp"

namespace otac::sys {

/// How write_file_atomic writes.
struct WriteOptions {
  /// Permission bits of the new file, set exactly (not masked by the umask). Secrets: 0600.
  unsigned mode = 0600;
  /// False: fail with Errc::conflict when the file exists (an atomic create), leaving it as is.
  bool replace = true;
  /// Bytes per write(2).
  std::size_t chunk = 64 * 1024;
  /// Test hook for power-loss tests: asked before each step (create, each chunk, fsync, rename,
  /// the directory sync); true stops there as a power cut would, leaving the temporary file.
  /// A cut after the rename reports success: the new content is in place.
  std::function<bool()> cut = {};
};

/// Writes `data` to a temporary file in the same directory, fsyncs it, renames it over
/// `path` and fsyncs the directory: afterwards `path` holds the old or the new content, never
/// a mix, whatever happens. On failure the old file is untouched and the temporary removed.
Result<void> write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> data,
                               const WriteOptions& opt = {});
/// The same for text.
Result<void> write_file_atomic(const std::filesystem::path& path, std::string_view data, const WriteOptions& opt = {});

/// Reads a whole file of at most `max_size` bytes.
Result<std::string> read_file(const std::filesystem::path& path, std::size_t max_size = 64u << 20);

}  // namespace otac::sys
