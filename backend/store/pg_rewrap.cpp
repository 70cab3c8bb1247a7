// The PostgreSQL side of a re-wrap (rewrap.hpp): a batch walks one sealed column in primary
// key order and locks its rows (FOR UPDATE, as every node's read of a card does), so a
// node's write of the same row is ordered before or after the batch, never lost in between.
#include <array>
#include <string>

#include "pg_tx.hpp"
#include "rewrap_rows.hpp"
#include "store_rows.hpp"

namespace otac::backend::rewrap {
namespace {

// The statements of one column, built once (the connection prepares each by its address).
struct ColumnSql {
  std::string select, update, count;
};

const ColumnSql& sql_for(std::size_t column) {
  static const auto all = [] {
    std::array<ColumnSql, std::size(kColumns)> out;
    for (std::size_t i = 0; i < out.size(); ++i) {
      const SealedColumn& c = kColumns[i];
      const std::string col = c.column, keys = c.pg_keys, table = c.table;
      const std::string cursor = c.ids == 3 ? "$1,$2,$3" : "$1";
      const int p = c.ids + 1;  // the first parameter after the cursor
      const auto not_under = [&](int first) {
        return col + " IS NOT NULL AND length(" + col + ")>0 AND substring(" + col + " from 1 for $" + std::to_string(first) +
               ")<>$" + std::to_string(first + 1);
      };
      out[i].select = "SELECT " + keys + "," + col + " FROM " + table + " WHERE (" + keys + ")>(" + cursor + ") AND " +
                      not_under(p) + " ORDER BY " + keys + " LIMIT $" + std::to_string(p + 2) + " FOR UPDATE";
      out[i].update = "UPDATE " + table + " SET " + col + "=$1 WHERE (" + keys + ")=(" + (c.ids == 3 ? "$2,$3,$4" : "$2") + ")";
      out[i].count = "SELECT count(*) FROM " + table + " WHERE " + not_under(1);
    }
    return out;
  }();
  return all[column];
}

std::size_t index_of(const SealedColumn& c) { return static_cast<std::size_t>(&c - kColumns); }
bool keyed_by_name(const SealedColumn& c) { return std::string_view(c.pg_keys) == "name"; }

class PgRows final : public SealedRows {
 public:
  explicit PgRows(pg::Connection c) : conn_(std::move(c)) {}

  Result<std::uint32_t> rewrap_batch(const SealedColumn& c, const Kek& kek, ByteView prefix, std::uint32_t batch,
                                     Cursor& after) override {
    if (auto b = conn_.command("BEGIN"); !b) return b.error();
    Result<std::uint32_t> r = [&]() -> Result<std::uint32_t> {
      try {
        return batch_body(c, kek, prefix, batch, after);
      } catch (const std::exception& e) {  // Kek::seal throws when the token cannot be reached
        return make_error(Errc::io, e.what());
      }
    }();
    if (!r) {
      (void)conn_.command("ROLLBACK");
      return r.error();
    }
    if (auto e = conn_.command("COMMIT"); !e) {
      (void)conn_.command("ROLLBACK");
      return e.error();
    }
    return r;
  }

  Result<std::uint64_t> count(const SealedColumn& c, ByteView prefix) override {
    pg::Query q(conn_, sql_for(index_of(c)).count.c_str());
    q.i(static_cast<std::int64_t>(prefix.size())).b(prefix);
    if (auto e = q.run(); !e) return make_error(e.error().code, std::string("cannot count ") + c.table + "." + c.column + ": " + e.error().message);
    return static_cast<std::uint64_t>(q.row(0).col_i(0));
  }

  Result<void> drop_private_key(std::string_view name) override {
    pg::Query q(conn_, "UPDATE server_keys SET private_sealed='\\x'::bytea WHERE name=$1");
    q.t(name);
    if (auto e = q.run(); !e)
      return make_error(e.error().code, "cannot drop the stored copy of server key " + std::string(name) + ": " + e.error().message);
    return {};
  }

 private:
  Result<std::uint32_t> batch_body(const SealedColumn& c, const Kek& kek, ByteView prefix, std::uint32_t batch, Cursor& after) {
    const ColumnSql& s = sql_for(index_of(c));
    pg::Query sel(conn_, s.select.c_str());
    if (keyed_by_name(c)) sel.t(std::string(after.key.begin(), after.key.end()));
    else sel.b(after.key);
    if (c.ids == 3) sel.i(after.list_id).i(after.idx);
    sel.i(static_cast<std::int64_t>(prefix.size())).b(prefix).i(batch);
    if (auto e = sel.run(); !e) return make_error(e.error().code, std::string("cannot read ") + c.table + "." + c.column + ": " + e.error().message);
    const int value_col = c.ids;
    std::uint32_t done = 0;
    for (int i = 0; i < sel.rows(); ++i) {
      const pg::Row row = sel.row(i);
      const std::string name = keyed_by_name(c) ? row.col_t(0) : std::string();
      const Bytes key = keyed_by_name(c) ? Bytes(name.begin(), name.end()) : row.col_b(0);
      const std::int64_t list_id = c.ids == 3 ? row.col_i(1) : -1, idx = c.ids == 3 ? row.col_i(2) : -1;
      const Bytes a = c.ids == 3 ? rows::ad(c.kind, key, list_id, idx) : rows::ad(c.kind, key);
      auto plain = kek.open(row.col_b(value_col), a);
      if (!plain)
        return make_error(plain.error().code, std::string(c.table) + "." + c.column + " row " + to_hex(key) +
                                                  (c.ids == 3 ? "/" + std::to_string(list_id) + "/" + std::to_string(idx) : "") +
                                                  ": " + plain.error().message);
      const Bytes sealed = kek.seal(plain->view(), a);
      pg::Query upd(conn_, s.update.c_str());
      upd.b(sealed);
      if (keyed_by_name(c)) upd.t(name);
      else upd.b(key);
      if (c.ids == 3) upd.i(list_id).i(idx);
      if (auto e = upd.run(); !e) return make_error(e.error().code, std::string("cannot update ") + c.table + "." + c.column + ": " + e.error().message);
      after.key = key;
      after.list_id = list_id;
      after.idx = idx;
      ++done;
    }
    return done;
  }

  pg::Connection conn_;
};

}  // namespace

Result<std::unique_ptr<SealedRows>> open_pg_rows(const std::string& conninfo) {
  if (auto ok = check_pg_conninfo(conninfo); !ok) return make_error(ok.error().code, "postgres_conninfo " + ok.error().message);
  PgOptions o;
  o.conninfo = conninfo;
  auto c = pg::connect(o);
  if (!c) return c.error();
  pg::Connection conn(std::move(*c));
  if (auto m = pg::migrate(conn); !m) return m.error();  // a ceremony may be the first to reach a new database
  return std::unique_ptr<SealedRows>(std::make_unique<PgRows>(std::move(conn)));
}

}  // namespace otac::backend::rewrap
