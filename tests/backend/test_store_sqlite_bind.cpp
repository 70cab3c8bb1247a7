// The SQLite store checks every parameter binding: a value SQLite refuses fails the
// statement with an error naming its column, instead of running it with the column NULL.
#include <catch2/catch.hpp>

#include "sqlite_db.hpp"

using namespace otac;
using namespace otac::backend::sqlite;

TEST_CASE("sqlite: a parameter is named by the column it fills") {
  CHECK(parameter_name("SELECT kind FROM ota_sent WHERE n=? AND counter=?", 2) == "counter");
  CHECK(parameter_name("UPDATE lists SET state=?,refusal=?,state_at=? WHERE n=? AND list_id=?", 2) == "refusal");
  CHECK(parameter_name("INSERT INTO sms_outbox(card,dest,udh) VALUES(?,?,?)", 2) == "dest");
  CHECK(parameter_name("INSERT INTO otacs(n,list_id,idx,key_sealed) VALUES(?,?,?,?)", 4) == "key_sealed");
  CHECK(parameter_name("SELECT 1 FROM t WHERE (?1 IS NULL OR card=?1) AND created_at>=?2", 2) == "created_at");
  CHECK(parameter_name("SELECT 1 FROM otacs WHERE n=? LIMIT 1 OFFSET ?", 2) == "parameter 2");
  CHECK(parameter_name("SELECT ?", 3) == "parameter 3");
}

TEST_CASE("sqlite: a binding SQLite refuses fails the statement, names the column and writes nothing") {
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(":memory:", &raw) == SQLITE_OK);
  Connection c{DbPtr(raw)};
  REQUIRE(c.query("CREATE TABLE t(a INTEGER, payload BLOB)").exec());
  sqlite3_limit(c.db(), SQLITE_LIMIT_LENGTH, 64);  // a 100-byte blob is now too big
  {
    auto q = c.query("INSERT INTO t(a,payload) VALUES(?,?)");
    q.i(1).b(Bytes(100, 0x55));
    auto r = q.exec();
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::bad_length);
    CHECK(r.error().message.find("payload") != std::string::npos);
  }
  {
    auto q = c.query("INSERT INTO t(a,payload) VALUES(?,?)");
    q.i(2).b(Bytes(10, 0x55));
    REQUIRE(q.exec());  // the statement is reusable after the failed binding
  }
  auto count = c.query("SELECT COUNT(*), MIN(a) FROM t");
  REQUIRE(count.step());
  CHECK(count.col_i(0) == 1);
  CHECK(count.col_i(1) == 2);
}
