// Store-level properties: keys at rest, the KEK file, audit chain, migrations, outbox, and
// crash safety (a child killed with SIGKILL in the middle of transactions).
#include <catch2/catch.hpp>

#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "sqlite_tx.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::Env;
using otac::backend::test::TempDir;

namespace {

Bytes read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

bool contains(const Bytes& hay, ByteView needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

// Runs one SQL statement on the file directly, as an attacker with the file would.
void raw_sql(const std::filesystem::path& db, const char* sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(h, sql, nullptr, nullptr, &err);
  INFO((err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(h);
  REQUIRE(rc == SQLITE_OK);
}

std::string raw_query_text(const std::filesystem::path& db, const char* sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, sql, -1, &s, nullptr) == SQLITE_OK);
  std::string out;
  if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
    out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  sqlite3_close(h);
  return out;
}

}  // namespace

TEST_CASE("the database files hold no card key and no OTAC in clear") {
  Env env(50);
  EnrollRequest er;
  er.msisdn = "+4915550001";
  auto e = env.svc->enroll_card(er, "admin");
  REQUIRE(e);
  auto l = env.svc->issue_list(e->n, "admin");
  REQUIRE(l);
  Bytes files = read_file(env.db);
  append(files, read_file(env.db.string() + "-wal"));
  REQUIRE(files.size() > 4096);
  CHECK(contains(files, e->n));  // sanity: the search does find what is stored in clear
  CHECK_FALSE(contains(files, e->k.view()));
  CHECK_FALSE(contains(files, e->k.view().subspan(0, 8)));
  for (const auto& k : l->second) CHECK_FALSE(contains(files, k.view().subspan(0, 8)));

  // A copy opened with another KEK yields no key: reading the card fails with bad_mac.
  SecretBytes other(Bytes(32, 0x42));
  auto s = open_sqlite_store(env.db, std::make_shared<const Kek>(Kek::from_bytes(other)));
  REQUIRE(s);
  auto r = (*s)->run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(e->n);
    REQUIRE_FALSE(c);
    CHECK(c.error().code == Errc::bad_mac);
    CHECK_FALSE(tx.otac(e->n, l->first, 0));
    return {};
  });
  CHECK(r);
}

TEST_CASE("a sealed key moved to another row does not open") {
  Env env;
  EnrollRequest er;
  er.msisdn = "1";
  auto e = env.svc->enroll_card(er, "admin");
  REQUIRE(e);
  REQUIRE(env.svc->issue_list(e->n, "admin"));
  raw_sql(env.db, "UPDATE otacs SET key_sealed=(SELECT key_sealed FROM otacs WHERE idx=1) WHERE idx=0");
  auto s = env.store();
  CHECK(s->run([&](Tx& tx) -> Result<void> {
    CHECK(tx.otac(e->n, 1, 1));
    auto moved = tx.otac(e->n, 1, 0);
    REQUIRE_FALSE(moved);
    CHECK(moved.error().code == Errc::bad_mac);
    return {};
  }));
}

TEST_CASE("the KEK file is created 0600, and loose permissions or a wrong size are refused") {
  TempDir d;
  auto f = d.path / "kek";
  auto k1 = Kek::load_or_create(f);
  REQUIRE(k1);
  struct stat st {};
  REQUIRE(::stat(f.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_size == 32);
  // Loading again gives the same key: what one seals the other opens.
  auto k2 = Kek::load_or_create(f);
  REQUIRE(k2);
  Bytes ad = to_bytes("row");
  Bytes sealed = k1->seal(hex("00112233445566778899aabbccddeeff"), ad);
  auto opened = k2->open(sealed, ad);
  REQUIRE(opened);
  CHECK(to_hex(opened->view()) == "00112233445566778899aabbccddeeff");
  CHECK_FALSE(k2->open(sealed, to_bytes("other row")));
  sealed[20] ^= 1;
  CHECK_FALSE(k2->open(sealed, ad));

  ::chmod(f.c_str(), 0644);
  auto loose = Kek::load_or_create(f);
  REQUIRE_FALSE(loose);
  CHECK(loose.error().message.find("chmod 600") != std::string::npos);
  ::chmod(f.c_str(), 0600);
  { std::ofstream(f, std::ios::app) << "x"; }
  CHECK_FALSE(Kek::load_or_create(f));
}

TEST_CASE("audit log: chained, verifiable, and tampering is detected") {
  Env env;
  EnrollRequest er;
  er.msisdn = "1";
  auto e = env.svc->enroll_card(er, "admin");  // the first enrollment also creates the card CA key
  REQUIRE(e);
  REQUIRE(env.svc->block_card(e->n, "alice"));
  auto n = env.svc->verify_audit();
  REQUIRE(n);
  CHECK(*n == 3);
  auto log = env.svc->audit_log(0, 10);
  REQUIRE(log);
  REQUIRE(log->size() == 3);
  CHECK((*log)[0].action == "create_server_key");
  CHECK((*log)[1].action == "enroll");
  CHECK((*log)[2].actor == "alice");
  CHECK((*log)[2].action == "block");
  // The newest two, oldest first (the console's card view reads the log from its end).
  auto recent = env.svc->audit_recent(2);
  REQUIRE(recent);
  REQUIRE(recent->size() == 2);
  CHECK((*recent)[0].seq == 2);
  CHECK((*recent)[0].action == "enroll");
  CHECK((*recent)[1].seq == 3);
  CHECK(env.svc->audit_recent(10)->size() == 3);

  SECTION("edited entry") {
    raw_sql(env.db, "UPDATE audit_log SET actor='mallory' WHERE seq=2");
    auto v = env.svc->verify_audit();
    REQUIRE_FALSE(v);
    CHECK(v.error().message.find("entry 2") != std::string::npos);
  }
  SECTION("deleted entry") {
    raw_sql(env.db, "DELETE FROM audit_log WHERE seq=2");
    CHECK_FALSE(env.svc->verify_audit());
  }
  SECTION("entry with a recomputed-looking but foreign MAC") {
    raw_sql(env.db, "UPDATE audit_log SET mac=(SELECT mac FROM audit_log WHERE seq=1) WHERE seq=3");
    CHECK_FALSE(env.svc->verify_audit());
  }
}

TEST_CASE("reopening migrates nothing twice and refuses a newer schema") {
  Env env;
  { auto s = env.store(); }
  { auto s = env.store(); }
  CHECK(raw_query_text(env.db, "PRAGMA user_version") == "14");
  CHECK(raw_query_text(env.db, "PRAGMA journal_mode") == "wal");
  raw_sql(env.db, "PRAGMA user_version=99");
  auto s = open_sqlite_store(env.db, env.kek);
  REQUIRE_FALSE(s);
  CHECK(s.error().message.find("newer") != std::string::npos);
}

namespace {

// The plan SQLite chooses for one statement of the store, one line per step.
std::vector<std::string> query_plan(const std::filesystem::path& db, const char* sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  const std::string explain = std::string("EXPLAIN QUERY PLAN ") + sql;
  REQUIRE(sqlite3_prepare_v2(h, explain.c_str(), -1, &st, nullptr) == SQLITE_OK);
  std::vector<std::string> plan;
  for (int guard = 0; guard < 100 && sqlite3_step(st) == SQLITE_ROW; ++guard)
    plan.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 3)));
  sqlite3_finalize(st);
  sqlite3_close(h);
  return plan;
}

bool plan_uses(const std::vector<std::string>& plan, std::string_view index) {
  return std::any_of(plan.begin(), plan.end(), [&](const std::string& l) { return l.find(index) != std::string::npos; });
}

}  // namespace

// The backend never runs ANALYZE, so the plan of a fresh database is the plan it runs with.
TEST_CASE("the list repair round reads only the lists still sent, through their index") {
  Env env;
  { auto s = env.store(); }
  const auto plan = query_plan(env.db, sqlite::kListsToRepairSql);
  std::string text;
  for (const auto& line : plan) text += line + "\n";
  INFO(text);
  CHECK(plan_uses(plan, "USING INDEX lists_sent"));
  // No full scan of a table (ota_sent grows by a row per packet ever sent), no sort.
  for (const auto& line : plan) {
    if (line.rfind("SCAN", 0) == 0) CHECK(line.find("lists_sent") != std::string::npos);
    CHECK(line.find("TEMP B-TREE") == std::string::npos);
  }
}

TEST_CASE("the E2 repair round reads only the cards with a pending key, through their index") {
  Env env;
  { auto s = env.store(); }
  CHECK(raw_query_text(env.db, "SELECT sql FROM sqlite_master WHERE name='cards_rotating'").find("WHERE pending_version<>0") !=
        std::string::npos);
  const auto plan = query_plan(env.db, sqlite::kRotationsToRepairSql);
  std::string text;
  for (const auto& line : plan) text += line + "\n";
  INFO(text);
  CHECK(plan_uses(plan, "cards_rotating"));
  // No full scan of cards (one row per enrolled card) or of ota_sent.
  for (const auto& line : plan) {
    if (line.rfind("SCAN", 0) == 0) CHECK(line.find("cards_rotating") != std::string::npos);
  }
}

TEST_CASE("the E3 and E4 repair round reads only the unanswered ones, through their index") {
  Env env;
  { auto s = env.store(); }
  const auto plan = query_plan(env.db, sqlite::kKeyPacketsToRepairSql);
  std::string text;
  for (const auto& line : plan) text += line + "\n";
  INFO(text);
  CHECK(plan_uses(plan, "ota_keys_unanswered"));
  // No full scan of ota_sent (a row per packet ever sent).
  for (const auto& line : plan) {
    if (line.rfind("SCAN", 0) == 0) CHECK(line.find("ota_keys_unanswered") != std::string::npos);
  }
}

TEST_CASE("the threshold check and the held-transaction round read partial indexes") {
  Env env;
  { auto s = env.store(); }
  CHECK(raw_query_text(env.db, "SELECT sql FROM sqlite_master WHERE name='otacs_unused'").find("WHERE used=0") != std::string::npos);
  CHECK(raw_query_text(env.db, "SELECT sql FROM sqlite_master WHERE name='transactions_held'").find("WHERE decision=2") != std::string::npos);
  const auto unused = query_plan(env.db, sqlite::kUnusedMoreThanSql);
  const auto held = query_plan(env.db, sqlite::kHeldDueSql);
  std::string text;
  for (const auto& l : unused) text += l + "\n";
  for (const auto& l : held) text += l + "\n";
  INFO(text);
  CHECK(plan_uses(unused, "COVERING INDEX otacs_unused"));
  CHECK(plan_uses(held, "INDEX transactions_held"));
  for (const auto& l : held) CHECK(l.find("TEMP B-TREE") == std::string::npos);  // no sort: the index is in order
  // The highest consumed code: the card's codes by primary key, newest first, no sort.
  const auto highest = query_plan(env.db, sqlite::kHighestConsumedSql);
  for (const auto& l : highest) {
    INFO(l);
    CHECK(l.find("SEARCH otacs USING") != std::string::npos);
    CHECK(l.find("TEMP B-TREE") == std::string::npos);
  }
}

// A database of schema 11 (the two indexes with every row) is migrated in place: the codes
// consumed before stay consumed, a held transaction stays due, and the file stays sound.
TEST_CASE("migration 12 rebuilds otacs_unused and transactions_held without losing a row") {
  Env env;
  EnrollRequest er;
  er.msisdn = "+4915550001";
  auto e = env.svc->enroll_card(er, "admin");
  REQUIRE(e);
  auto l = env.svc->issue_list(e->n, "admin");
  REQUIRE(l);
  {
    auto s = env.store();
    REQUIRE(s->run([&](Tx& tx) -> Result<void> {
      for (std::uint16_t i = 0; i < 3; ++i) CHECK(*tx.consume_otac(e->n, l->first, i, "T" + std::to_string(i), env.clock));
      TransactionRecord t;
      t.txn_id = "HELD0001";
      t.request_hash = Bytes(32, 1);
      t.card = e->n;
      t.decision = Decision::held;
      t.reason = "review";
      t.created_at = env.clock;
      t.expires_at = env.clock + 120;
      return tx.insert_transaction(t);
    }));
  }
  env.svc.reset();
  // Back to schema 11's indexes, as a database written by the previous release has them.
  raw_sql(env.db, "DROP INDEX otacs_unused; CREATE INDEX otacs_unused ON otacs(n, used, list_id, idx);"
                  "DROP INDEX transactions_held; CREATE INDEX transactions_held ON transactions(decision, expires_at);"
                  "DROP INDEX cards_rotating; DROP INDEX ota_keys_unanswered; PRAGMA user_version=11;");
  auto s = env.store();
  CHECK(raw_query_text(env.db, "PRAGMA user_version") == "14");
  CHECK(raw_query_text(env.db, "SELECT sql FROM sqlite_master WHERE name='otacs_unused'").find("WHERE used=0") != std::string::npos);
  REQUIRE(s->run([&](Tx& tx) -> Result<void> {
    CHECK(*tx.unused_count(e->n) == 17);
    CHECK(*tx.unused_more_than(e->n, 16));
    CHECK_FALSE(*tx.unused_more_than(e->n, 17));
    CHECK_FALSE(*tx.consume_otac(e->n, l->first, 1, "again", env.clock));  // consumed before: still consumed
    CHECK(*tx.consume_otac(e->n, l->first, 3, "T3", env.clock));
    CHECK(*tx.unused_count(e->n) == 16);
    CHECK(tx.held_due(env.clock + 119, 10)->empty());
    auto due = tx.held_due(env.clock + 120, 10);
    REQUIRE(due->size() == 1);
    CHECK((*due)[0].txn_id == "HELD0001");
    return {};
  }));
  CHECK(raw_query_text(env.db, "PRAGMA integrity_check") == "ok");
}

namespace {

// Queues one MT message (payload 01 02), due now; returns its id.
std::int64_t queue_sms(Store& s, UnixTime now) {
  std::int64_t id = 0;
  REQUIRE(s.run([&](Tx& tx) -> Result<void> {
    OutboxMessage m;
    m.to = "+4915550001";
    m.udh = hex("7000");
    m.payload = hex("0102");
    m.next_attempt_at = now;
    auto r = tx.enqueue_sms(m);
    REQUIRE(r);
    id = *r;
    return {};
  }));
  return id;
}

}  // namespace

TEST_CASE("outbox: queued, due by time, retried, and marked sent") {
  Env env;
  auto s = env.store();
  const std::int64_t id = queue_sms(*s, env.clock);
  auto due = env.svc->next_due(10);
  REQUIRE(due);
  REQUIRE(due->size() == 1);
  CHECK((*due)[0].payload == hex("0102"));
  REQUIRE(env.svc->mark_failed(id, "gateway down", env.clock + 60));
  CHECK(env.svc->next_due(10)->empty());
  CHECK(env.svc->metrics()->outbox_depth == 1);
  env.clock += 60;
  REQUIRE(env.svc->next_due(10)->size() == 1);
  REQUIRE(env.svc->mark_sent(id, "0: Accepted for delivery"));
  CHECK(env.svc->next_due(10)->empty());
  CHECK(env.svc->metrics()->outbox_depth == 0);
  CHECK_FALSE(env.svc->mark_sent(id, "again"));
}

TEST_CASE("outbox: a delivery report that overtakes the gateway's answer to the send keeps its outcome") {
  Env env;
  auto s = env.store();
  const auto queue = [&] {
    const std::int64_t id = queue_sms(*s, env.clock);
    REQUIRE(env.svc->next_due(10)->size() == 1);  // leased by the pump, its send under way
    return id;
  };
  const auto stored = [&](std::int64_t id) {
    OutboxMessage out;
    REQUIRE(s->run([&](Tx& tx) -> Result<void> {
      auto m = tx.sms(id);
      if (!m) return m.error();
      out = std::move(*m);
      return {};
    }));
    return out;
  };
  SECTION("undelivered, reported before the gateway answered the send") {
    const auto id = queue();
    REQUIRE(env.svc->record_delivery_report(id, "type 16", true));
    CHECK(stored(id).status == OutboxStatus::queued);
    REQUIRE(env.svc->mark_sent(id, "0: Accepted for delivery"));
    const auto m = stored(id);
    CHECK(m.status == OutboxStatus::failed);
    CHECK(m.last_reply.find("type 16") != std::string::npos);
    CHECK(m.last_reply.find("Accepted") != std::string::npos);
  }
  SECTION("delivered, reported before the gateway answered the send") {
    const auto id = queue();
    REQUIRE(env.svc->record_delivery_report(id, "type 1", false));
    REQUIRE(env.svc->mark_sent(id, "0: Accepted for delivery"));
    const auto m = stored(id);
    CHECK(m.status == OutboxStatus::sent);
    CHECK(m.last_reply.rfind("dlr: type 1", 0) == 0);
  }
  SECTION("undelivered, reported after the send was answered") {
    const auto id = queue();
    REQUIRE(env.svc->mark_sent(id, "0: Accepted for delivery"));
    REQUIRE(env.svc->record_delivery_report(id, "type 2", true));
    CHECK(stored(id).status == OutboxStatus::failed);
  }
  CHECK(env.svc->next_due(10)->empty());  // nothing is sent again
}

TEST_CASE("a process killed with SIGKILL mid-transaction leaves a consistent store") {
  Env env(0);
  EnrollRequest er;
  er.msisdn = "1";
  auto e = env.svc->enroll_card(er, "admin");
  REQUIRE(e);
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Child: commit lists one by one and report each commit; then start a transaction that
    // writes half a list and hangs until it is killed.
    ::close(pipefd[0]);
    auto s = open_sqlite_store(env.db, env.kek);
    if (!s) ::_exit(2);
    for (std::uint16_t list = 1; list <= 5; ++list) {
      auto r = (*s)->run([&](Tx& tx) -> Result<void> {
        std::vector<SecretBytes> keys;
        for (int i = 0; i < 10; ++i) keys.push_back(crypto::random_secret(16));
        return tx.insert_list(e->n, list, keys, 0);
      });
      if (!r) ::_exit(3);
      const char c = static_cast<char>(list);
      if (::write(pipefd[1], &c, 1) != 1) ::_exit(4);
    }
    (void)(*s)->run([&](Tx& tx) -> Result<void> {
      std::vector<SecretBytes> keys;
      for (int i = 0; i < 10; ++i) keys.push_back(crypto::random_secret(16));
      (void)tx.insert_list(e->n, 6, keys, 0);
      const char c = 'x';
      (void)!::write(pipefd[1], &c, 1);
      ::sleep(30);  // killed long before this ends
      return {};
    });
    ::_exit(0);
  }
  ::close(pipefd[1]);
  char buf[6];
  std::size_t got = 0;
  for (int i = 0; i < 6 && got < 6; ++i) {
    const auto n = ::read(pipefd[0], buf + got, 6 - got);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(pipefd[0]);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(got == 6);
  CHECK(WIFSIGNALED(status));

  CHECK(raw_query_text(env.db, "PRAGMA integrity_check") == "ok");
  auto s = env.store();
  REQUIRE(s->run([&](Tx& tx) -> Result<void> {
    CHECK(tx.last_list_id(e->n).value() == 5);   // every acknowledged list, not the sixth
    CHECK(tx.unused_count(e->n).value() == 50);  // no half list
    // The write lock died with the child: new transactions proceed.
    return tx.insert_list(e->n, 6, {}, 0);
  }));
}

TEST_CASE("SIGKILL under authorization load: every approval the terminal saw is in the store") {
  Env env(100);
  REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0001", "ab", 0, true}, "admin"));
  EnrollRequest er;
  er.msisdn = "1";
  auto e = env.svc->enroll_card(er, "admin").value();
  auto l = env.svc->issue_list(e.n, "admin").value();
  std::vector<AuthRequest> reqs;
  for (std::uint16_t i = 0; i < 100; ++i)
    reqs.push_back(backend::test::card_request("K" + std::to_string(i), e.n, e.algorithm, l.first, i, l.second[i], backend::test::Ch{}));
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(pipefd[0]);
    Service svc(env.config, [&] { return open_sqlite_store(env.db, env.kek); }, [&] { return env.clock; });
    for (std::uint8_t i = 0; i < 100; ++i) {
      auto a = svc.authorize(reqs[i], "TERM0001");
      // Report only what a terminal would have been told: an approval after commit.
      if (a && a->decision == Decision::approved && ::write(pipefd[1], &i, 1) != 1) ::_exit(4);
      ::usleep(1000);  // paces the child so that the kill lands mid-run, not after it
    }
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::vector<std::uint8_t> seen;
  for (int i = 0; i < 100; ++i) {
    std::uint8_t b = 0;
    if (::read(pipefd[0], &b, 1) != 1) break;
    seen.push_back(b);
    if (seen.size() == 30) ::kill(child, SIGKILL);  // mid-run; later reports may still arrive
  }
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(seen.size() >= 30);
  CHECK(WIFSIGNALED(status));
  CHECK(seen.size() < 100);

  CHECK(raw_query_text(env.db, "PRAGMA integrity_check") == "ok");
  auto s = env.store();
  REQUIRE(s->run([&](Tx& tx) -> Result<void> {
    for (auto i : seen) {
      auto t = tx.transaction("K" + std::to_string(i));
      REQUIRE(t);
      CHECK(t->decision == Decision::approved);
      CHECK(tx.otac(e.n, l.first, i)->used);
    }
    return {};
  }));
  // Retrying every request after the crash: the approved ones get their stored answer, the
  // rest are decided now, and no code is approved twice.
  std::size_t approvals = 0;
  for (auto& r : reqs) {
    auto a = env.svc->authorize(r, "TERM0001");
    REQUIRE(a);
    if (a->decision == Decision::approved) ++approvals;
    auto again = env.svc->authorize(r, "TERM0001");
    CHECK(again->auth_code == a->auth_code);
  }
  CHECK(approvals == 100);
  TransactionFilter f;
  f.limit = 1000;
  CHECK(env.svc->list_transactions(f)->size() == 100);
  CHECK(env.svc->verify_audit());
}

TEST_CASE("signature keys and server keys are sealed at rest and bound to their row") {
  Env env;
  EnrollRequest er;
  er.msisdn = "1";
  auto a = env.svc->enroll_card(er, "admin").value();
  er.msisdn = "2";
  auto b = env.svc->enroll_card(er, "admin").value();
  const SecretBytes s(hex("5a5b5c5d5e5f60616263646566676869"));
  const SecretBytes s2(hex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"));
  Bytes ca_der;
  {
    auto store = env.store();
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      CardSecurity none = tx.card_security(a.n).value();  // no row yet: all empty
      CHECK(!none.sig_key);
      CHECK(!none.pending_sig_key);
      CHECK(none.server_point.empty());
      CardSecurity sec;
      sec.sig_key = s.clone();
      sec.pending_sig_key = s2.clone();
      sec.pending_sig_counter = 7;
      sec.pending_sig_sent = 9;
      sec.sig_since = 11;
      sec.server_point = hex("04aa");
      if (auto x = tx.set_card_security(a.n, sec); !x) return x;
      auto back = tx.card_security(a.n).value();
      CHECK(ct_equal(back.sig_key->view(), s.view()));
      CHECK(ct_equal(back.pending_sig_key->view(), s2.view()));
      CHECK(back.pending_sig_counter == 7);
      CHECK(back.pending_sig_sent == 9);
      CHECK(back.sig_since == 11);
      CHECK(back.server_point == hex("04aa"));
      auto ca = tx.server_key("card-ca").value();
      ca_der.assign(ca.private_der.view().begin(), ca.private_der.view().end());
      CHECK(tx.server_key("nope").error().code == Errc::not_found);
      CHECK(tx.insert_server_key(ServerKeyRecord{"card-ca", s.clone(), hex("04"), 1}).error().code == Errc::conflict);
      return {};
    }));
  }
  raw_sql(env.db, "PRAGMA wal_checkpoint(TRUNCATE)");
  Bytes all = read_file(env.db);
  append(all, read_file(env.db.string() + "-wal"));
  CHECK_FALSE(contains(all, s.view()));
  CHECK_FALSE(contains(all, s2.view()));
  // The private scalar: the OCTET STRING 04 20 <d> inside the PKCS#8 ECPrivateKey.
  const Bytes tag = hex("0420");
  auto at = std::search(ca_der.begin(), ca_der.end(), tag.begin(), tag.end());
  REQUIRE(ca_der.end() - at >= 34);
  const Bytes scalar(at + 2, at + 34);
  CHECK_FALSE(contains(all, scalar));
  // Card a's sealed S moved to card b does not open there.
  raw_sql(env.db, ("INSERT INTO card_security(n,sig_sealed,pending_sig_counter,pending_sig_sent) SELECT x'" + to_hex(b.n) +
                   "',sig_sealed,0,0 FROM card_security WHERE n=x'" + to_hex(a.n) + "'").c_str());
  auto store = env.store();
  auto r = store->run([&](Tx& tx) -> Result<void> { return tx.card_security(b.n).error(); });
  CHECK(r.error().code == Errc::bad_mac);
}
