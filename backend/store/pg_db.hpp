// PostgreSQL internals of the store (not part of its interface): libpq's two handles wrapped
// once, a statement with bound parameters prepared once per connection, and result rows read
// in binary. The row and binder interfaces match sqlite_db.hpp's, so store_rows.hpp maps
// records the same way for both stores.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "store.hpp"

namespace otac::backend::pg {

struct ConnClose { void operator()(PGconn* c) const { PQfinish(c); } };
struct ResultClear { void operator()(PGresult* r) const { PQclear(r); } };
using ConnPtr = std::unique_ptr<PGconn, ConnClose>;
using ResultPtr = std::unique_ptr<PGresult, ResultClear>;

/// SQLSTATEs the store acts on.
inline constexpr std::string_view kSerializationFailure = "40001";
inline constexpr std::string_view kDeadlock = "40P01";
inline constexpr std::string_view kUniqueViolation = "23505";

/// A connection with its prepared statements and what its last failure was.
class Connection {
 public:
  explicit Connection(ConnPtr c) : conn_(std::move(c)) {}
  PGconn* get() const { return conn_.get(); }
  bool broken() const { return PQstatus(conn_.get()) != CONNECTION_OK; }

  /// The statement name for sql, preparing it on first use (sql must be a string literal).
  Result<std::string> prepared(const char* sql);
  /// Runs a command without parameters (BEGIN, COMMIT, ...).
  Result<void> command(const char* sql);

  /// SQLSTATE of the last failed statement in this transaction ("" if none): Store::run
  /// reruns a transaction that a serialization failure, a deadlock or a unique violation ended.
  std::string last_state;
  /// An insert met an existing row in this transaction (ON CONFLICT DO NOTHING): the
  /// transaction may have raced another node's insert, so a rerun may see that row.
  bool met_conflict = false;

  /// An Error from a failed result: conflict for a unique violation, else io.
  Error error(const PGresult* r, std::string_view what);

 private:
  ConnPtr conn_;
  std::unordered_map<const char*, std::string> names_;
};

/// One row of a result, read like a SQLite row (binary format: integers big-endian).
class Row {
 public:
  Row(const PGresult* r, int row) : r_(r), row_(row) {}
  std::int64_t col_i(int c) const;
  Bytes col_b(int c) const;
  std::string col_t(int c) const;
  bool col_null(int c) const { return PQgetisnull(r_, row_, c) != 0; }

 private:
  const PGresult* r_;
  int row_;
};

/// A statement: bind parameters in order (integers and text as text, bytes as binary), then
/// run it once. Results come back in binary.
class Query {
 public:
  Query(Connection& c, const char* sql) : c_(c), sql_(sql) {}

  Query& i(std::int64_t v) { return add(std::to_string(v), false); }
  Query& b(ByteView v) { return add(std::string(reinterpret_cast<const char*>(v.data()), v.size()), true); }
  Query& t(std::string_view v) { return add(std::string(v), false); }
  Query& null() {
    values_.emplace_back();
    return *this;
  }

  /// Runs the statement; the rows it returned (none for a command).
  Result<void> run();
  int rows() const { return res_ ? PQntuples(res_.get()) : 0; }
  Row row(int i) const { return Row(res_.get(), i); }
  /// Rows an INSERT, UPDATE or DELETE changed.
  int changes() const;

 private:
  Query& add(std::string v, bool binary) {
    values_.emplace_back(std::move(v));
    binary_.resize(values_.size(), 0);
    binary_.back() = binary ? 1 : 0;
    return *this;
  }

  Connection& c_;
  const char* sql_;
  std::vector<std::optional<std::string>> values_;
  std::vector<int> binary_;
  ResultPtr res_;
};

/// The rows of a query that ran, each mapped by row(Row) to a T or a Result<T>.
template <class T, class F>
Result<std::vector<T>> collect(const Query& q, F row) {
  std::vector<T> out;
  out.reserve(static_cast<std::size_t>(q.rows()));
  for (int i = 0; i < q.rows(); ++i) {
    if constexpr (std::is_same_v<decltype(row(q.row(i))), T>) {
      out.push_back(row(q.row(i)));
    } else {
      auto v = row(q.row(i));
      if (!v) return v.error();
      out.push_back(std::move(*v));
    }
  }
  return out;
}

}  // namespace otac::backend::pg
