// SQLite implementation of the Store interface: WAL, synchronous=FULL (a commit that
// returned is on disk), busy timeout, foreign keys, migrations tracked by user_version.
#pragma once

#include <filesystem>
#include <memory>

#include "kek.hpp"
#include "store.hpp"

namespace otac::backend {

/// Opens (creating and migrating if needed) the database file. Stores opened on the same file
/// in one process share one connection and group-commit their concurrent transactions (see
/// sqlite_group_commit.cpp); open one Store per thread. Many processes may open the same file.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& db_file,
                                                 std::shared_ptr<const Kek> kek);

}  // namespace otac::backend
