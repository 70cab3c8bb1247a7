// A SQLite VFS for the store's checkpoint connection: the database file's writes are sent to
// the disk in small paced runs before its fsync, so that a checkpoint never puts megabytes in
// the device queue ahead of the WAL's fdatasync, which every answer waits for.
// docs/operations.md, "The checkpoint's writes paced", has the measurements behind it.
#pragma once

#include <cstdint>

namespace otac::backend::sqlite {

/// Registers the VFS once per process (not as the default) and returns its name, for
/// sqlite3_open_v2. It wraps the default VFS; every file but a main database file is the
/// default VFS's own. Null if SQLite refused to register it.
const char* paced_vfs();

/// What the VFS did since the process started, for tests.
struct PacedVfsStats {
  std::uint64_t synced = 0;        ///< xSync calls on a main database file
  std::uint64_t paced_bytes = 0;   ///< bytes sent to the disk ahead of those syncs
  std::uint64_t runs = 0;          ///< paced runs (each waited for before the next is started)
};
PacedVfsStats paced_vfs_stats();

}  // namespace otac::backend::sqlite
