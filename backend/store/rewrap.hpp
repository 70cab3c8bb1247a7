// Re-wrapping every sealed value of a store under the KEK that seals now: the work of a
// migration from the file KEK to a token, and of a token KEK rotation, on either store.
//
// Each sealed value records what wraps it in its first bytes (kek.hpp: 01 = file KEK,
// 02 || version = token KEK), so the progress of a re-wrap is in the rows themselves: a run
// picks rows not yet under the target, re-wraps a batch of them in one transaction, commits,
// and goes on. Killed at any point, a run loses nothing (a batch commits whole or not at
// all) and the next run continues where it stopped. The backends may serve meanwhile: they
// open both. SQLite: a batch is one BEGIN IMMEDIATE transaction (the single writer).
// PostgreSQL: a batch locks its rows (SELECT ... FOR UPDATE, as the backends lock a card), so
// a node's concurrent write of the same row is either before the batch read it (and the
// batch re-wraps the new value) or after it committed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "kek.hpp"
#include "otac/common/result.hpp"

namespace otac::backend {

/// Which store to re-wrap: a SQLite file, or a PostgreSQL database (libpq conninfo).
struct StoreAddress {
  std::filesystem::path sqlite;  ///< used when postgres is empty
  std::string postgres;          ///< libpq connection string or URI (no password)
  StoreAddress(std::filesystem::path file) : sqlite(std::move(file)) {}  // NOLINT: a path is a SQLite store
  static StoreAddress postgresql(std::string conninfo) {
    StoreAddress a{std::filesystem::path()};
    a.postgres = std::move(conninfo);
    return a;
  }
  bool is_postgresql() const { return !postgres.empty(); }
};

struct RewrapOptions {
  std::uint32_t batch = 200;                   ///< rows per transaction
  std::uint32_t max_passes = 1000;             ///< a bound on the loop; each pass sees fewer rows
  std::function<void(std::uint64_t)> progress; ///< called after each batch with the total so far
};

struct RewrapReport {
  std::uint64_t rewrapped = 0;  ///< values re-wrapped by this run
  std::uint64_t remaining = 0;  ///< values still not under the target (0 when finished)
};

/// Re-wraps every sealed value in the store that the target custody did not make (format
/// byte, and for a token the KEK version) with kek.seal, whose custody must be `target`.
/// target_version: the token KEK version wanted (ignored for the file KEK).
Result<RewrapReport> rewrap_store(const StoreAddress& store, const Kek& kek, std::uint8_t target_format,
                                  std::uint32_t target_version, const RewrapOptions& options);

/// Sealed values in the store not yet under the target (for status and tests).
Result<std::uint64_t> count_not_under(const StoreAddress& store, std::uint8_t target_format, std::uint32_t target_version);

/// Sealed values in the store that no token sealed (the file KEK's, format 01).
Result<std::uint64_t> count_not_token_sealed(const StoreAddress& store);

/// Overwrites the sealed private key of a server key the token now holds with an empty value,
/// so that no copy remains in the store. Idempotent.
Result<void> drop_stored_private_key(const StoreAddress& store, std::string_view name);

}  // namespace otac::backend
