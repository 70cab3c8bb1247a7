#include "rewrap.hpp"

#include <sqlite3.h>

#include <memory>
#include <string>
#include <vector>

#include "rewrap_rows.hpp"
#include "store_rows.hpp"

namespace otac::backend {
namespace rewrap {
namespace {

struct DbClose { void operator()(sqlite3* db) const { sqlite3_close_v2(db); } };
struct StmtFinalize { void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); } };
using Db = std::unique_ptr<sqlite3, DbClose>;
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFinalize>;

Error db_error(sqlite3* db, const std::string& what) {
  return make_error(Errc::io, what + ": " + sqlite3_errmsg(db));
}

Result<Stmt> prepare(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) return db_error(db, "cannot prepare '" + sql + "'");
  return Stmt(s);
}

Result<void> exec(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return db_error(db, std::string("'") + sql + "' failed");
  return {};
}

Bytes column_blob(sqlite3_stmt* s, int c) {
  const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s, c));
  return p ? Bytes(p, p + sqlite3_column_bytes(s, c)) : Bytes{};
}

std::string not_under_sql(const SealedColumn& c) {
  const std::string col = c.column;
  return col + " IS NOT NULL AND length(" + col + ")>0 AND substr(" + col + ",1,?)<>?";
}

Bytes row_ad(const SealedColumn& c, sqlite3_stmt* s) {
  if (c.ids == 3) return rows::ad(c.kind, column_blob(s, 1), sqlite3_column_int64(s, 2), sqlite3_column_int64(s, 3));
  return rows::ad(c.kind, column_blob(s, 1));
}

class SqliteRows final : public SealedRows {
 public:
  explicit SqliteRows(Db db) : db_(std::move(db)) {}

  Result<std::uint32_t> rewrap_batch(const SealedColumn& c, const Kek& kek, ByteView prefix, std::uint32_t batch,
                                     Cursor& after) override {
    sqlite3* db = db_.get();
    if (auto b = exec(db, "BEGIN IMMEDIATE"); !b) return b.error();
    auto body = [&]() -> Result<std::uint32_t> {
      auto sel = prepare(db, std::string("SELECT rowid,") + c.sqlite_ids + "," + c.column + " FROM " + c.table +
                                 " WHERE rowid>? AND " + not_under_sql(c) + " ORDER BY rowid LIMIT ?");
      if (!sel) return sel.error();
      auto upd = prepare(db, std::string("UPDATE ") + c.table + " SET " + c.column + "=? WHERE rowid=?");
      if (!upd) return upd.error();
      sqlite3_stmt* s = sel->get();
      sqlite3_bind_int64(s, 1, after.rowid);
      sqlite3_bind_int(s, 2, static_cast<int>(prefix.size()));
      sqlite3_bind_blob(s, 3, prefix.data(), static_cast<int>(prefix.size()), SQLITE_TRANSIENT);
      sqlite3_bind_int64(s, 4, batch);
      const int value_col = c.ids + 1;
      std::uint32_t done = 0;
      for (std::uint32_t i = 0; i < batch; ++i) {
        const int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) return db_error(db, std::string("cannot read ") + c.table + "." + c.column);
        const std::int64_t rowid = sqlite3_column_int64(s, 0);
        const Bytes a = row_ad(c, s);
        auto plain = kek.open(column_blob(s, value_col), a);
        if (!plain)
          return make_error(plain.error().code, std::string(c.table) + "." + c.column + " row " + std::to_string(rowid) + ": " +
                                                    plain.error().message);
        const Bytes sealed = kek.seal(plain->view(), a);
        sqlite3_stmt* u = upd->get();
        sqlite3_bind_blob(u, 1, sealed.data(), static_cast<int>(sealed.size()), SQLITE_TRANSIENT);
        sqlite3_bind_int64(u, 2, rowid);
        if (sqlite3_step(u) != SQLITE_DONE) return db_error(db, std::string("cannot update ") + c.table + "." + c.column);
        sqlite3_reset(u);
        after.rowid = rowid;
        ++done;
      }
      return done;
    };
    Result<std::uint32_t> r = [&]() -> Result<std::uint32_t> {
      try {
        return body();
      } catch (const std::exception& e) {  // Kek::seal throws when the token cannot be reached
        return make_error(Errc::io, e.what());
      }
    }();
    if (!r) {
      (void)exec(db, "ROLLBACK");
      return r.error();
    }
    if (auto e = exec(db, "COMMIT"); !e) {
      (void)exec(db, "ROLLBACK");
      return e.error();
    }
    return r;
  }

  Result<std::uint64_t> count(const SealedColumn& c, ByteView prefix) override {
    auto st = prepare(db_.get(), std::string("SELECT count(*) FROM ") + c.table + " WHERE " + not_under_sql(c));
    if (!st) return st.error();
    sqlite3_bind_int(st->get(), 1, static_cast<int>(prefix.size()));
    sqlite3_bind_blob(st->get(), 2, prefix.data(), static_cast<int>(prefix.size()), SQLITE_TRANSIENT);
    if (sqlite3_step(st->get()) != SQLITE_ROW) return db_error(db_.get(), std::string("cannot count ") + c.table + "." + c.column);
    return static_cast<std::uint64_t>(sqlite3_column_int64(st->get(), 0));
  }

  Result<void> drop_private_key(std::string_view name) override {
    auto st = prepare(db_.get(), "UPDATE server_keys SET private_sealed=X'' WHERE name=?");
    if (!st) return st.error();
    sqlite3_bind_text(st->get(), 1, name.data(), static_cast<int>(name.size()), SQLITE_TRANSIENT);
    if (sqlite3_step(st->get()) != SQLITE_DONE)
      return db_error(db_.get(), "cannot drop the stored copy of server key " + std::string(name));
    return {};
  }

 private:
  Db db_;
};

}  // namespace

Result<std::unique_ptr<SealedRows>> open_sqlite_rows(const std::filesystem::path& file) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(file.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  Db db(raw);
  if (rc != SQLITE_OK)
    return make_error(Errc::io, "cannot open database " + file.string() + ": " + (raw ? sqlite3_errmsg(raw) : "out of memory"));
  sqlite3_busy_timeout(db.get(), 10000);  // the backend's own transactions are short
  if (sqlite3_exec(db.get(), "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr) != SQLITE_OK)
    return db_error(db.get(), "cannot set synchronous=FULL on " + file.string());
  return std::unique_ptr<SealedRows>(std::make_unique<SqliteRows>(std::move(db)));
}

}  // namespace rewrap

namespace {

using rewrap::kColumns;
using rewrap::SealedRows;

Result<std::unique_ptr<SealedRows>> open_rows(const StoreAddress& a) {
  return a.is_postgresql() ? rewrap::open_pg_rows(a.postgres) : rewrap::open_sqlite_rows(a.sqlite);
}

// The prefix that marks a value as already under the target.
Bytes target_prefix(std::uint8_t format, std::uint32_t version) {
  Bytes p{format};
  if (format == kSealedToken) append(p, be_bytes(version, 4));
  return p;
}

Result<std::uint64_t> count_all(SealedRows& rows, ByteView prefix) {
  std::uint64_t n = 0;
  for (const auto& c : kColumns) {
    auto k = rows.count(c, prefix);
    if (!k) return k.error();
    n += *k;
  }
  return n;
}

}  // namespace

Result<std::uint64_t> count_not_under(const StoreAddress& store, std::uint8_t target_format, std::uint32_t target_version) {
  auto rows = open_rows(store);
  if (!rows) return rows.error();
  return count_all(**rows, target_prefix(target_format, target_version));
}

Result<std::uint64_t> count_not_token_sealed(const StoreAddress& store) {
  auto rows = open_rows(store);
  if (!rows) return rows.error();
  return count_all(**rows, Bytes{kSealedToken});
}

Result<RewrapReport> rewrap_store(const StoreAddress& store, const Kek& kek, std::uint8_t target_format,
                                  std::uint32_t target_version, const RewrapOptions& options) {
  auto rows = open_rows(store);
  if (!rows) return rows.error();
  const Bytes prefix = target_prefix(target_format, target_version);
  RewrapReport report;
  // Each pass walks every column once in key order; rows that a backend still sealing under
  // the old KEK wrote meanwhile are caught by the next pass.
  for (std::uint32_t pass = 0; pass < options.max_passes; ++pass) {
    std::uint64_t this_pass = 0;
    for (const auto& c : kColumns) {
      rewrap::Cursor after;
      for (;;) {  // bounded: the cursor moves forward with every non-empty batch
        auto n = (*rows)->rewrap_batch(c, kek, prefix, options.batch, after);
        if (!n) return n.error();
        this_pass += *n;
        report.rewrapped += *n;
        if (*n > 0 && options.progress) options.progress(report.rewrapped);
        if (*n < options.batch) break;
      }
    }
    if (this_pass == 0) break;
  }
  auto left = count_all(**rows, prefix);
  if (!left) return left.error();
  report.remaining = *left;
  return report;
}

Result<void> drop_stored_private_key(const StoreAddress& store, std::string_view name) {
  auto rows = open_rows(store);
  if (!rows) return rows.error();
  return (*rows)->drop_private_key(name);
}

}  // namespace otac::backend
