// SQLite internals of the store (not part of its interface): the two handles wrapped once,
// a prepared statement with checked bindings, and the process's connection to one file.
// sqlite_db.cpp: statements and transactions; sqlite_migrations.cpp: the schema;
// sqlite_group_commit.cpp: how Store::run batches callers on the connection.
#pragma once

#include <sqlite3.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "store.hpp"

namespace otac::backend::sqlite {

struct DbClose { void operator()(sqlite3* db) const { sqlite3_close_v2(db); } };
struct StmtFinalize { void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); } };
using DbPtr = std::unique_ptr<sqlite3, DbClose>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalize>;

/// The connection's last error as an Error: conflict for a constraint, else io.
Error db_error(sqlite3* db, std::string_view what);

/// The column (or, failing that, the position) that parameter `index` (1-based) of `sql`
/// fills: "list_id" in "... AND list_id=?", "dest" for the second ? of
/// "INSERT INTO sms_outbox(card,dest,...) VALUES(?,?,...)", else "parameter 7".
std::string parameter_name(std::string_view sql, int index);

/// A prepared statement borrowed from the connection's cache; reset and unbound on scope
/// exit. Parameters are bound in order; the first binding that fails is kept and returned by
/// step(), naming its column, so a statement never runs with a parameter missing.
class Query {
 public:
  Query(sqlite3* db, sqlite3_stmt* s) : db_(db), s_(s) {}
  ~Query() { sqlite3_reset(s_); sqlite3_clear_bindings(s_); }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  Query& i(std::int64_t v) { return check(sqlite3_bind_int64(s_, ++n_, v)); }
  Query& b(ByteView v) {
    if (v.empty()) return check(sqlite3_bind_zeroblob(s_, ++n_, 0));
    return check(sqlite3_bind_blob(s_, ++n_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  Query& t(std::string_view v) { return check(sqlite3_bind_text(s_, ++n_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT)); }
  Query& null() { return check(sqlite3_bind_null(s_, ++n_)); }

  /// true: a row is available; false: done.
  Result<bool> step();
  Result<void> exec();
  std::int64_t col_i(int c) const { return sqlite3_column_int64(s_, c); }
  Bytes col_b(int c) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s_, c));
    const int n = sqlite3_column_bytes(s_, c);
    return p ? Bytes(p, p + n) : Bytes{};
  }
  std::string col_t(int c) const {
    const auto* p = sqlite3_column_text(s_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s_, c))) : std::string{};
  }
  bool col_null(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  /// Rows the last INSERT, UPDATE or DELETE changed.
  int changes() const { return sqlite3_changes(db_); }
  /// The rowid of the last INSERT on this connection.
  std::int64_t last_insert_id() const { return sqlite3_last_insert_rowid(db_); }

 private:
  Query& check(int rc);

  sqlite3* db_;
  sqlite3_stmt* s_;
  int n_ = 0;
  std::optional<Error> bind_error_;  // the first binding that failed
};

/// Steps q through up to `limit` rows, each mapped by row(q) to a T or a Result<T>.
template <class T, class F>
Result<std::vector<T>> collect(Query& q, std::uint64_t limit, F row) {
  std::vector<T> out;
  for (std::uint64_t i = 0; i < limit; ++i) {
    auto more = q.step();
    if (!more) return more.error();
    if (!*more) break;
    if constexpr (std::is_same_v<decltype(row(q)), T>) {
      out.push_back(row(q));
    } else {
      auto v = row(q);
      if (!v) return v.error();
      out.push_back(std::move(*v));
    }
  }
  return out;
}

struct Pending;  // one call of Store::run or Store::run_async (sqlite_group_commit.cpp)

/// The process's connection to one database file. Used by one thread (the group's leader)
/// at a time.
class Connection {
 public:
  explicit Connection(DbPtr db) : db_(std::move(db)) {}

  /// Sets the pragmas and runs the migrations this file lacks (sqlite_migrations.cpp).
  Result<void> configure_and_migrate();

  /// The statement for sql, prepared once per connection (sql must be a string literal).
  Query query(const char* sql);
  sqlite3* db() const { return db_.get(); }
  /// Gives up the handle (the statement cache is dropped first).
  DbPtr release() {
    cache_.clear();
    return std::move(db_);
  }

  /// Runs a batch of callers in one transaction (sqlite_group_commit.cpp). Never throws: an
  /// exception goes to every caller that has no answer yet, so that none of them waits
  /// forever. `more` appends callers that queued meanwhile; they join the open transaction.
  void execute(std::vector<Pending*>& batch, const std::function<void(std::vector<Pending*>&)>& more) noexcept;

  /// BEGIN IMMEDIATE, retried a bounded number of times while another process writes.
  Result<void> begin();
  Result<void> control(const char* sql) { return query(sql).exec(); }
  bool in_transaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }
  /// Rolls back the open transaction, if any.
  void abandon() {
    if (in_transaction()) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
  }

 private:
  void execute_batch(std::vector<Pending*>& batch, const std::function<void(std::vector<Pending*>&)>& more);
  // Runs p's function inside a savepoint of the open transaction. false: SQLite rolled the
  // whole transaction back under it, so the batch so far is lost.
  bool run_one(Pending& p);
  void execute_alone(Pending& p);

  // Statements must be finalized before the connection closes: cache_ is declared after db_,
  // so it is destroyed first.
  DbPtr db_;
  std::unordered_map<const char*, StmtPtr> cache_;
};

}  // namespace otac::backend::sqlite
