// The checkpoint connection's VFS (backend/store/sqlite_paced_vfs.hpp): a checkpoint through
// it copies every page, sends them to the disk in bounded runs before its fsync, and leaves a
// database that a connection of the default VFS reads whole.
#include <catch2/catch.hpp>
#include <sqlite3.h>

#include <cstdint>
#include <string>

#include "sqlite_paced_vfs.hpp"
#include "test_service_support.hpp"

using otac::backend::test::TempDir;
namespace sq = otac::backend::sqlite;

namespace {

struct Db {
  sqlite3* db = nullptr;
  Db(const std::string& file, const char* vfs) {
    REQUIRE(sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) == SQLITE_OK);
  }
  ~Db() { sqlite3_close_v2(db); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  void exec(const std::string& sql) const {
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    INFO(sql << ": " << (err ? err : ""));
    sqlite3_free(err);
    REQUIRE(rc == SQLITE_OK);
  }
  std::string text(const std::string& sql) const {
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    const auto* t = sqlite3_column_text(s, 0);
    std::string out = t ? reinterpret_cast<const char*>(t) : "";
    sqlite3_finalize(s);
    return out;
  }
};

// A digest of the table that any change of a row changes (SQLite has no hash function built
// in: the sum of each row's key times a value derived from its blob's bytes).
const char* const kDigest =
    "SELECT count(*) || ':' || sum(k * (unicode(substr(hex(b), 1 + (k % 1000), 1)) + length(b))) || ':' || "
    "group_concat(substr(hex(b), 1 + (k % 1500), 8), '') FROM (SELECT k, b FROM t ORDER BY k)";

}  // namespace

TEST_CASE("paced checkpoint VFS: a checkpoint through it copies every page in bounded runs and leaves the database whole") {
  REQUIRE(sq::paced_vfs() != nullptr);
  REQUIRE(std::string(sq::paced_vfs()) != sqlite3_vfs_find(nullptr)->zName);  // registered, not made the default
  TempDir dir;
  const std::string file = (dir.path / "paced.db").string();
  std::string before;
  {
    Db writer(file, nullptr);
    writer.exec("PRAGMA journal_mode=WAL");
    writer.exec("PRAGMA wal_autocheckpoint=0");  // every page stays in the WAL until the checkpoint below
    writer.exec("CREATE TABLE t(k INTEGER PRIMARY KEY, b BLOB NOT NULL)");
    // Keys spread over the key space, so that the pages the checkpoint writes are scattered:
    // 3,000 rows of 1,000 random bytes, in 30 transactions.
    for (int tx = 0; tx < 30; ++tx) {
      writer.exec("BEGIN; WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 99) "
                  "INSERT INTO t SELECT ((i * 30 + " + std::to_string(tx) + ") * 7919) % 1000003, randomblob(1000) FROM s; COMMIT");
    }
    writer.exec("UPDATE t SET b = randomblob(900) WHERE k % 7 = 0");
    before = writer.text(kDigest);
    REQUIRE(std::stoll(writer.text("SELECT count(*) FROM t")) == 3000);

    const auto stats0 = sq::paced_vfs_stats();
    Db checkpointer(file, sq::paced_vfs());
    // As the store's checkpoint connection: this pragma reads the schema, and so finds the
    // WAL (a connection that has read nothing yet checkpoints nothing).
    checkpointer.exec("PRAGMA synchronous=FULL");
    REQUIRE(sqlite3_wal_checkpoint_v2(checkpointer.db, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr) == SQLITE_OK);
    const auto stats1 = sq::paced_vfs_stats();
    const auto pages = std::stoll(checkpointer.text("PRAGMA page_count"));
    const auto page_size = std::stoll(checkpointer.text("PRAGMA page_size"));
    INFO("pages " << pages << ", synced " << stats1.synced - stats0.synced << ", paced bytes "
                  << stats1.paced_bytes - stats0.paced_bytes << " in " << stats1.runs - stats0.runs << " runs");
    CHECK(stats1.synced > stats0.synced);
    // Every page of the database came out of the WAL, and went to the disk ahead of the fsync.
    CHECK(stats1.paced_bytes - stats0.paced_bytes >= static_cast<std::uint64_t>(pages * page_size));
    // In runs of at most 128 KiB of pages each (plus the one range that crosses the bound).
    const auto per_run_bound = static_cast<std::uint64_t>(128 * 1024 + page_size);
    CHECK((stats1.runs - stats0.runs) * per_run_bound >= stats1.paced_bytes - stats0.paced_bytes);
    CHECK(stats1.runs - stats0.runs >= 2);
    // After the TRUNCATE checkpoint the WAL is empty: what a connection reads from here on is
    // the database file the paced connection wrote.
    CHECK(std::filesystem::file_size(file + "-wal") == 0);
  }
  Db reader(file, nullptr);
  CHECK(reader.text("PRAGMA integrity_check") == "ok");
  CHECK(reader.text(kDigest) == before);
}
