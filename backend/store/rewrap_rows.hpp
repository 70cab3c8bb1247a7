// Internals of rewrap.cpp: the sealed columns of the schema and what a store must do for a
// re-wrap (one batch per transaction, counts, dropping a stored private key). SQLite's side
// is in rewrap.cpp, PostgreSQL's in pg_rewrap.cpp; the loop over passes, columns and batches
// is shared.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "kek.hpp"

namespace otac::backend::rewrap {

// A sealed column, its table and how its associated data is built from the row (the same
// identities as store_rows.hpp's ad(): kind, 00, N or name, [list(2) index(2)]).
struct SealedColumn {
  const char* table;
  const char* column;
  const char* kind;
  const char* sqlite_ids;  // SQLite: the row's identity columns, selected before the sealed value
  const char* pg_keys;     // PostgreSQL: the primary key, which is the row's identity
  int ids;                 // 1: n or name; 3: n, list_id, idx
};
inline constexpr SealedColumn kColumns[] = {
    {"cards", "k_sealed", "card-k", "n", "n", 1},
    {"cards", "pending_k_sealed", "card-pk", "n", "n", 1},
    {"cards", "retired_k_sealed", "card-rk", "n", "n", 1},
    {"otacs", "key_sealed", "otac", "n,list_id,idx", "n,list_id,idx", 3},
    {"server_keys", "private_sealed", "server-key", "CAST(name AS BLOB)", "name", 1},
    {"card_security", "sig_sealed", "card-s", "n", "n", 1},
    {"card_security", "pending_sig_sealed", "card-ps", "n", "n", 1},
};

// Where a pass over one column has got to: SQLite walks by rowid, PostgreSQL by primary key.
struct Cursor {
  std::int64_t rowid = 0;
  Bytes key;  // n, or the name's bytes; empty sorts first
  std::int64_t list_id = -1, idx = -1;
};

class SealedRows {
 public:
  virtual ~SealedRows() = default;
  /// One transaction: up to `batch` rows after the cursor whose value is not under prefix,
  /// each opened and sealed again with kek. Returns how many; the cursor moves to the last.
  virtual Result<std::uint32_t> rewrap_batch(const SealedColumn& c, const Kek& kek, ByteView prefix, std::uint32_t batch,
                                             Cursor& after) = 0;
  /// Values of the column not under prefix.
  virtual Result<std::uint64_t> count(const SealedColumn& c, ByteView prefix) = 0;
  /// server_keys.private_sealed of `name` emptied.
  virtual Result<void> drop_private_key(std::string_view name) = 0;
};

Result<std::unique_ptr<SealedRows>> open_sqlite_rows(const std::filesystem::path& file);
Result<std::unique_ptr<SealedRows>> open_pg_rows(const std::string& conninfo);

}  // namespace otac::backend::rewrap
