// What only the PostgreSQL store has to show (the shared contract is in
// test_store_conformance.cpp): keys sealed at rest in the database, migrations run once when
// nodes start together, start-up retries against an unreachable server, reconnection after
// a server restart, connection strings that must not carry a password, and sslmode over TCP.
#include <catch2/catch.hpp>

#include <libpq-fe.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "freeport.hpp"
#include "pg_cluster.hpp"
#include "pg_store.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::pgtest::PgCluster;

namespace {

PgCluster& shared_cluster() {
  std::string why;
  auto* c = PgCluster::shared(&why);
  if (!c) FAIL("no PostgreSQL cluster: " << why);
  return *c;
}

std::unique_ptr<Store> open(const std::string& conninfo) {
  PgOptions o;
  o.conninfo = conninfo;
  o.start_attempts = 1;
  auto s = open_pg_store(o, otac::backend::test::test_kek());
  INFO((s ? "" : s.error().message));
  REQUIRE(s);
  return std::move(*s);
}

// One integer from a query, through libpq directly.
long long scalar(const std::string& conninfo, const char* sql) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  REQUIRE(PQstatus(c) == CONNECTION_OK);
  PGresult* r = PQexec(c, sql);
  const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  const long long v = ok ? std::atoll(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  PQfinish(c);
  return v;
}

}  // namespace

TEST_CASE("pg store: the database holds no card key, OTAC or server key in clear", "[store][pg]") {
  auto& cluster = shared_cluster();
  const std::string conninfo = cluster.create_database();
  auto s = open(conninfo);
  const Bytes n = hex("0102030405060708");
  const SecretBytes k(hex("00112233445566778899aabbccddeeff"));
  const SecretBytes code(hex("f0e1d2c3b4a5968778695a4b3c2d1e0f"));
  const SecretBytes server(hex("a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4"));
  REQUIRE(s->run([&](Tx& tx) -> Result<void> {
    CardRecord c;
    c.n = n;
    c.msisdn = "+1";
    c.k = SecretBytes(Bytes(k.view().begin(), k.view().end()));
    if (auto e = tx.insert_card(c); !e) return e;
    std::vector<SecretBytes> codes;
    codes.emplace_back(Bytes(code.view().begin(), code.view().end()));
    if (auto e = tx.insert_list(n, 1, codes, 1); !e) return e;
    ServerKeyRecord key;
    key.name = "server";
    key.private_der = SecretBytes(Bytes(server.view().begin(), server.view().end()));
    key.public_point = Bytes(65, 4);
    return tx.insert_server_key(key);
  }));
  const std::string dump = cluster.dump(conninfo.substr(conninfo.rfind('=') + 1));
  REQUIRE(dump.size() > 1000);
  CHECK(dump.find(to_hex(n)) != std::string::npos);  // sanity: what is stored in clear is found
  CHECK(dump.find(to_hex(k.view().subspan(0, 8))) == std::string::npos);
  CHECK(dump.find(to_hex(code.view().subspan(0, 8))) == std::string::npos);
  CHECK(dump.find(to_hex(server.view().subspan(0, 8))) == std::string::npos);
  // The KEK is not in the database either.
  CHECK(dump.find("0001020304050607") == std::string::npos);
}

TEST_CASE("pg store: nodes that start together on a new database migrate it once", "[store][pg]") {
  const std::string conninfo = shared_cluster().create_database();
  constexpr int kNodes = 6;
  std::atomic<int> opened{0};
  std::vector<std::string> errors(kNodes);
  std::vector<std::thread> ts;
  for (int i = 0; i < kNodes; ++i) {
    ts.emplace_back([&, i] {
      PgOptions o;
      o.conninfo = conninfo;
      o.start_attempts = 1;
      auto s = open_pg_store(o, otac::backend::test::test_kek());
      if (s) ++opened;
      else errors[static_cast<std::size_t>(i)] = s.error().message;
    });
  }
  for (auto& t : ts) t.join();
  for (const auto& e : errors) CHECK(e.empty());
  CHECK(opened == kNodes);
  // One row per schema version (five), each written once although six nodes raced to migrate.
  CHECK(scalar(conninfo, "SELECT COUNT(*) FROM otac_schema") == 7);
  CHECK(scalar(conninfo, "SELECT COUNT(DISTINCT version) FROM otac_schema") == 7);
  // A schema newer than the program is refused, naming both versions.
  PGconn* c = PQconnectdb(conninfo.c_str());
  PQclear(PQexec(c, "INSERT INTO otac_schema(version) VALUES(99)"));
  PQfinish(c);
  PgOptions o;
  o.conninfo = conninfo;
  o.start_attempts = 1;
  auto newer = open_pg_store(o, otac::backend::test::test_kek());
  REQUIRE_FALSE(newer);
  CHECK(newer.error().message.find("schema version 99") != std::string::npos);
}

// A database of schema 4 (the two indexes with every row) is migrated in place by the next
// node to start: consumed codes stay consumed and a held transaction stays due.
TEST_CASE("pg store: migration 5 rebuilds otacs_unused and transactions_held without losing a row", "[store][pg]") {
  const std::string conninfo = shared_cluster().create_database();
  const Bytes n = hex("0102030405060708");
  {
    auto s = open(conninfo);
    REQUIRE(s->run([&](Tx& tx) -> Result<void> {
      CardRecord c;
      c.n = n;
      c.msisdn = "+1";
      c.k = SecretBytes(Bytes(16, 7));
      if (auto e = tx.insert_card(c); !e) return e;
      std::vector<SecretBytes> codes;
      for (int i = 0; i < 5; ++i) codes.emplace_back(Bytes(16, static_cast<std::uint8_t>(i)));
      if (auto e = tx.insert_list(n, 1, codes, 1); !e) return e;
      for (std::uint16_t i = 0; i < 2; ++i) CHECK(*tx.consume_otac(n, 1, i, "T" + std::to_string(i), 10));
      TransactionRecord t;
      t.txn_id = "HELD0001";
      t.request_hash = Bytes(32, 1);
      t.card = n;
      t.decision = Decision::held;
      t.reason = "review";
      t.created_at = 100;
      t.expires_at = 220;
      return tx.insert_transaction(t);
    }));
  }
  PGconn* c = PQconnectdb(conninfo.c_str());
  REQUIRE(PQstatus(c) == CONNECTION_OK);
  PGresult* r = PQexec(c, "DROP INDEX otacs_unused; CREATE INDEX otacs_unused ON otacs(n, used, list_id, idx);"
                          "DROP INDEX transactions_held; CREATE INDEX transactions_held ON transactions(decision, expires_at);"
                          "DROP INDEX cards_rotating; DROP INDEX ota_keys_unanswered; DELETE FROM otac_schema WHERE version>=5;");
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  PQfinish(c);
  REQUIRE(scalar(conninfo, "SELECT MAX(version) FROM otac_schema") == 4);
  auto s = open(conninfo);
  CHECK(scalar(conninfo, "SELECT MAX(version) FROM otac_schema") == 7);
  CHECK(scalar(conninfo, "SELECT COUNT(*) FROM pg_indexes WHERE indexname='cards_rotating' AND indexdef LIKE '%WHERE (pending_version <> 0)%'") == 1);
  CHECK(scalar(conninfo, "SELECT COUNT(*) FROM pg_indexes WHERE indexname='otacs_unused' AND indexdef LIKE '%WHERE (used = 0)%'") == 1);
  CHECK(scalar(conninfo, "SELECT COUNT(*) FROM pg_indexes WHERE indexname='transactions_held' AND indexdef LIKE '%WHERE (decision = 2)%'") == 1);
  REQUIRE(s->run([&](Tx& tx) -> Result<void> {
    CHECK(*tx.unused_count(n) == 3);
    CHECK_FALSE(*tx.consume_otac(n, 1, 1, "again", 20));
    CHECK(*tx.consume_otac(n, 1, 2, "T2", 20));
    CHECK(*tx.unused_count(n) == 2);
    CHECK(tx.held_due(219, 10)->empty());
    auto due = tx.held_due(220, 10);
    REQUIRE(due->size() == 1);
    CHECK((*due)[0].txn_id == "HELD0001");
    return {};
  }));
}

TEST_CASE("pg store: an unreachable server at start is retried with backoff, and named when it stays away", "[store][pg]") {
  PgCluster cluster;  // its own: this test stops and starts it
  const std::string conninfo = cluster.create_database();
  cluster.stop();
  std::vector<std::chrono::milliseconds> waits;
  PgOptions o;
  o.conninfo = conninfo;
  o.start_attempts = 3;
  o.first_backoff = std::chrono::milliseconds(50);
  o.on_retry = [&](const std::string& why, std::chrono::milliseconds next) {
    CHECK(why.find("cannot reach PostgreSQL") != std::string::npos);
    waits.push_back(next);
  };
  auto gone = open_pg_store(o, otac::backend::test::test_kek());
  REQUIRE_FALSE(gone);
  CHECK(gone.error().code == Errc::io);
  CHECK(gone.error().message.find("gave up after 3 attempts") != std::string::npos);
  CHECK(waits == std::vector<std::chrono::milliseconds>{std::chrono::milliseconds(50), std::chrono::milliseconds(100)});

  // The server comes back while a node waits for it: the node starts.
  o.start_attempts = 40;
  o.first_backoff = std::chrono::milliseconds(100);
  o.on_retry = nullptr;
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    cluster.start();
  });
  auto back = open_pg_store(o, otac::backend::test::test_kek());
  later.join();
  INFO((back ? "" : back.error().message));
  CHECK(back);
}

TEST_CASE("pg store: after a server restart the next transaction reconnects and nothing committed is lost", "[store][pg]") {
  PgCluster cluster;
  const std::string conninfo = cluster.create_database();
  auto s = open(conninfo);
  REQUIRE(s->run([&](Tx& tx) { return tx.put_terminal({"TERM0001", "aa", 0, true}); }));
  const pid_t before = cluster.postmaster_pid();
  cluster.restart();
  CHECK(cluster.postmaster_pid() != before);
  auto r = s->run([&](Tx& tx) -> Result<void> {
    auto t = tx.terminal("TERM0001");
    if (!t) return t.error();
    CHECK(t->cert_fingerprint == "aa");
    return tx.put_terminal({"TERM0002", "bb", 0, true});
  });
  INFO((r ? "" : r.error().message));
  CHECK(r);
  // While the server is down, a transaction fails with an error that says so.
  cluster.stop();
  auto down = s->run([&](Tx& tx) { return tx.put_terminal({"TERM0003", "cc", 0, true}); });
  REQUIRE_FALSE(down);
  CHECK(down.error().message.find("PostgreSQL") != std::string::npos);
  cluster.start();
  CHECK(s->run([&](Tx& tx) -> Result<void> {
    CHECK(tx.terminal("TERM0002"));
    CHECK(tx.terminal("TERM0003").error().code == Errc::not_found);
    return {};
  }));
}

TEST_CASE("pg store: a connection string is checked, and one with a password is refused", "[store][pg]") {
  CHECK(check_pg_conninfo("host=db.example dbname=otac user=otac sslmode=verify-full"));
  CHECK(check_pg_conninfo("postgresql://otac@db.example/otac?sslmode=require"));
  auto pw = check_pg_conninfo("host=db dbname=otac password=hunter2");
  REQUIRE_FALSE(pw);
  CHECK(pw.error().message.find("passfile") != std::string::npos);
  CHECK(pw.error().message.find("hunter2") == std::string::npos);
  CHECK_FALSE(check_pg_conninfo("postgresql://otac:hunter2@db.example/otac"));
  auto bad = check_pg_conninfo("host=db nonsense");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::bad_value);
}

TEST_CASE("pg store: a row lock held by a stalled node delays another by lock_timeout at most", "[store][pg]") {
  const std::string conninfo = shared_cluster().create_database();
  auto holder = open(conninfo);
  PgOptions o;
  o.conninfo = conninfo;
  o.start_attempts = 1;
  o.lock_timeout = std::chrono::milliseconds(500);
  auto waiter = open_pg_store(o, otac::backend::test::test_kek());
  REQUIRE(waiter);
  CardRecord card;
  card.n = hex("0102030405060708");
  card.msisdn = "+1";
  card.k = SecretBytes(Bytes(16, 1));
  REQUIRE(holder->run([&](Tx& tx) { return tx.insert_card(card); }));
  std::atomic<bool> locked{false};
  std::thread stall([&] {
    (void)holder->run([&](Tx& tx) -> Result<void> {
      auto c = tx.card(card.n);  // FOR UPDATE: holds the card's row
      locked = true;
      std::this_thread::sleep_for(std::chrono::seconds(3));
      return c ? Result<void>{} : c.error();
    });
  });
  for (int i = 0; i < 500 && !locked; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(locked);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = (*waiter)->run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(card.n);
    if (!c) return c.error();
    return {};
  });
  const auto waited = std::chrono::steady_clock::now() - t0;
  stall.join();
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("lock") != std::string::npos);
  CHECK(waited < std::chrono::milliseconds(2500));
}

TEST_CASE("pg store: the password comes from a passfile (passfile= or PGPASSFILE), never the connection string", "[store][pg]") {
  PgCluster cluster;  // its own: this test changes pg_hba.conf
  const std::string plain = cluster.create_database();
  const std::string db = plain.substr(plain.rfind('=') + 1);
  cluster.psql("postgres", "CREATE ROLE otac_pw LOGIN PASSWORD 'from-the-passfile'");
  cluster.psql("postgres", "ALTER DATABASE " + db + " OWNER TO otac_pw");
  cluster.require_password_for("otac_pw");
  const std::string base = "host=" + cluster.socket_dir().string() + " port=5432 dbname=" + db + " user=otac_pw";
  PgOptions o;
  o.start_attempts = 1;
  o.conninfo = base;
  auto none = open_pg_store(o, otac::backend::test::test_kek());
  REQUIRE_FALSE(none);
  CHECK(none.error().message.find("password") != std::string::npos);
  otac::backend::test::TempDir d;
  const auto passfile = d.path / "pgpass";
  std::ofstream(passfile) << "*:*:*:otac_pw:from-the-passfile\n";
  std::filesystem::permissions(passfile, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  o.conninfo = base + " passfile=" + passfile.string();
  REQUIRE(check_pg_conninfo(o.conninfo));
  auto with_file = open_pg_store(o, otac::backend::test::test_kek());
  INFO((with_file ? "" : with_file.error().message));
  CHECK(with_file);
  ::setenv("PGPASSFILE", passfile.c_str(), 1);
  o.conninfo = base;
  auto with_env = open_pg_store(o, otac::backend::test::test_kek());
  ::unsetenv("PGPASSFILE");
  INFO((with_env ? "" : with_env.error().message));
  CHECK(with_env);
}

TEST_CASE("pg store: sslmode=verify-full over TCP, password from a passfile: the right CA passes, a wrong CA or name fails clearly",
          "[store][pg]") {
  // A CA and a server certificate for localhost and 127.0.0.1 made here, and another CA that
  // signed nothing of this server's.
  otac::backend::test::TempDir d;
  const auto p = [&](const char* name) { return (d.path / name).string(); };
  const std::string quiet = " >/dev/null 2>&1";
  REQUIRE(std::system(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=otac-test-ca"
                       " -keyout " + p("ca.key") + " -out " + p("ca.pem") + quiet).c_str()) == 0);
  REQUIRE(std::system(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=otac-other-ca"
                       " -keyout " + p("other.key") + " -out " + p("other.pem") + quiet).c_str()) == 0);
  REQUIRE(std::system(("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout " +
                       p("server.key") + " -out " + p("server.csr") + quiet).c_str()) == 0);
  std::ofstream(p("san.ext")) << "subjectAltName = DNS:localhost, IP:127.0.0.1\n";
  REQUIRE(std::system(("openssl x509 -req -in " + p("server.csr") + " -CA " + p("ca.pem") + " -CAkey " + p("ca.key") +
                       " -CAcreateserial -days 2 -extfile " + p("san.ext") + " -out " + p("server.pem") + quiet).c_str()) == 0);

  otac::pgtest::PgClusterOptions po;
  po.tcp_port = otac::test::free_port();
  po.ssl_cert = p("server.pem");
  po.ssl_key = p("server.key");
  PgCluster cluster(po);  // its own: TCP, TLS and its pg_hba.conf
  const std::string plain = cluster.create_database();
  const std::string db = plain.substr(plain.rfind('=') + 1);
  cluster.psql("postgres", "CREATE ROLE otac_pw LOGIN PASSWORD 'from-the-passfile'");
  cluster.psql("postgres", "ALTER DATABASE " + db + " OWNER TO otac_pw");
  cluster.require_password_for("otac_pw", true);
  const auto passfile = d.path / "pgpass";
  std::ofstream(passfile) << "*:" << cluster.port() << ":*:otac_pw:from-the-passfile\n";
  std::filesystem::permissions(passfile, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const std::string tcp = "hostaddr=127.0.0.1 port=" + std::to_string(cluster.port()) + " dbname=" + db + " user=otac_pw";
  const std::string good = "host=localhost " + tcp + " passfile=" + passfile.string() + " sslmode=verify-full sslrootcert=" + p("ca.pem");
  const auto open_error = [](const std::string& conninfo) -> std::string {
    REQUIRE(check_pg_conninfo(conninfo));
    PgOptions o;
    o.conninfo = conninfo;
    o.start_attempts = 1;
    auto s = open_pg_store(o, otac::backend::test::test_kek());
    return s ? std::string() : s.error().message;
  };

  // The right CA and name: connected, over TLS, with the password from the passfile.
  const auto ok = open_error(good);
  INFO(ok);
  CHECK(ok.empty());
  CHECK(scalar(good, "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == 1);
  // A CA that did not sign the server's certificate: refused, and the error says why, on one line.
  const auto wrong_ca = open_error("host=localhost " + tcp + " passfile=" + passfile.string() +
                                   " sslmode=verify-full sslrootcert=" + p("other.pem"));
  INFO(wrong_ca);
  CHECK(wrong_ca.find("certificate verify failed") != std::string::npos);
  CHECK(wrong_ca.find('\n') == std::string::npos);
  // The right CA, but a name the certificate does not carry: verify-full checks it.
  const auto wrong_name = open_error("host=otac-db.invalid " + tcp + " passfile=" + passfile.string() +
                                     " sslmode=verify-full sslrootcert=" + p("ca.pem"));
  INFO(wrong_name);
  CHECK(wrong_name.find("does not match host name") != std::string::npos);
  // Without TLS the server refuses this user; without the passfile there is no password.
  const auto no_tls = open_error("host=localhost " + tcp + " passfile=" + passfile.string() + " sslmode=disable");
  INFO(no_tls);
  CHECK(no_tls.find("no encryption") != std::string::npos);
  const auto no_password = open_error("host=localhost " + tcp + " passfile=" + (d.path / "absent").string() +
                                      " sslmode=verify-full sslrootcert=" + p("ca.pem"));
  INFO(no_password);
  CHECK(no_password.find("password") != std::string::npos);
}
