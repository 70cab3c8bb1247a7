// Key custody in a PKCS#11 token on the PostgreSQL store: real otac-backend processes, each
// with its own session with one SoftHSM2 token (Debian softhsm2, a throw-away token directory
// and SOFTHSM2_CONF that the processes inherit), sharing a throw-away PostgreSQL cluster
// (tests/support/pg_cluster). The key ceremonies run in the test process, as the operator
// would run otac-backend hsm-init / hsm-migrate / hsm-rotate on one machine.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>

#include "ceremony_fixture.hpp"
#include "custody.hpp"
#include "kannel_fixture.hpp"
#include "otac/common/crypto.hpp"
#include "pg_cluster.hpp"
#include "pg_store.hpp"
#include "rewrap.hpp"
#include "server_fixture.hpp"
#include "softhsm_fixture.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::test;
using Verb = boost::beast::http::verb;

namespace {

namespace fs = std::filesystem;

Bytes raw(const SecretBytes& s) { return Bytes(s.view().begin(), s.view().end()); }

// One token, one database, and backend nodes whose data directories are copies of the first.
struct HsmNodes {
  SoftHsm hsm;  // first: sets SOFTHSM2_CONF, which the nodes inherit
  otac::pgtest::PgCluster* pg = nullptr;
  std::string conninfo;
  std::vector<std::unique_ptr<Backend>> nodes;
  std::string extra;  // more node configuration (SMS settings)

  HsmNodes() {
    std::string why;
    pg = otac::pgtest::PgCluster::shared(&why);
    if (!pg) FAIL("no PostgreSQL cluster: " << why);
    conninfo = pg->create_database();
    nodes.push_back(std::make_unique<Backend>());
    fs::create_directories(nodes[0]->dir);
  }
  ~HsmNodes() {
    for (auto& n : nodes) n->stop();
  }
  Backend& operator[](std::size_t i) { return *nodes[i]; }
  std::string dbname() const { return conninfo.substr(conninfo.rfind('=') + 1); }

  // The node configuration; with `token`, every key in the token.
  std::string config_text(bool token) const {
    std::string s = "store = \"postgresql\"\npostgres_conninfo = \"" + conninfo + "\"\nworker_threads = 8\n"
                    "decline_source_burst = 1000000\ndecline_card_burst = 1000000\n";
    if (token)
      s += "kek_uri = \"pkcs11:token=otac;object=kek\"\nserver_key_uri = \"pkcs11:token=otac;object=otac-server\"\n"
           "card_ca_key_uri = \"pkcs11:token=otac;object=otac-card-ca\"\npkcs11_module = \"" + std::string(kSoftHsmModule) +
           "\"\npkcs11_pin_file = \"" + hsm.pin.string() + "\"\n";
    return s + extra;
  }
  void write_config(bool token) const { std::ofstream(nodes[0]->dir / "otac-backend.conf", std::ios::trunc) << config_text(token); }

  // The same settings for the ceremonies run here.
  Config config(bool token) const {
    Config c;
    c.data_dir = nodes[0]->dir;
    c.store = "postgresql";
    c.postgres_conninfo = conninfo;
    if (token) {
      c.kek_uri = "pkcs11:token=otac;object=kek";
      c.server_key_uri = "pkcs11:token=otac;object=otac-server";
      c.card_ca_key_uri = "pkcs11:token=otac;object=otac-card-ca";
      c.pkcs11_module = kSoftHsmModule;
      c.pkcs11_pin_file = hsm.pin;
    }
    return c;
  }

  // Starts node 0 (which makes the data directory on its first start), then `count - 1`
  // more from copies of its directory.
  void start(std::size_t count) {
    nodes[0]->start();
    for (std::size_t i = nodes.size(); i < count; ++i) {
      nodes.push_back(std::make_unique<Backend>());
      fs::copy(nodes[0]->dir, nodes.back()->dir, fs::copy_options::recursive);
      nodes.back()->start();
    }
  }

  // A new deployment on the token: hsm-init, then `count` nodes. Returns hsm-init's summary.
  std::string start_on_token(std::size_t count) {
    write_config(true);
    auto init = hsm_init(config(true), {});
    REQUIRE(init);
    start(count);
    return *init;
  }

  // A store connection with the custody the config names (the test holds the token too).
  std::unique_ptr<Store> store(bool token) const {
    auto kek = open_custody(config(token), nullptr);
    REQUIRE(kek);
    PgOptions o;
    o.conninfo = conninfo;
    o.start_attempts = 1;
    auto s = open_pg_store(o, *kek);
    REQUIRE(s);
    return std::move(*s);
  }
};

// An enrolled card with one list, as the terminal's tests know it.
struct Card {
  Bytes n;
  SecretBytes k;
  std::uint16_t list = 0;
  std::vector<SecretBytes> codes;
};

Card enroll(Backend& node, Store& store, const std::string& msisdn) {
  Card c;
  auto [n, k] = node.enroll(R"({"msisdn":")" + msisdn + R"("})");
  c.n = n;
  c.k = std::move(k);
  auto refresh = Backend::call(node.admin(), Verb::post, "/v1/admin/cards/" + to_hex(c.n) + "/refresh");
  REQUIRE(refresh.status == 200);
  c.list = static_cast<std::uint16_t>(std::stoi(field(refresh.body, "list")));
  REQUIRE(store.run([&](Tx& tx) -> Result<void> {
    for (std::uint16_t i = 0;; ++i) {
      auto o = tx.otac(c.n, c.list, i);
      if (!o && o.error().code == Errc::not_found) return {};
      if (!o) return o.error();
      c.codes.push_back(std::move(o->key));
    }
  }));
  REQUIRE(c.codes.size() >= 50);
  return c;
}

// The decision/reason of one authorization with code `index`, or the failure.
std::string authorize(Backend& node, const fs::path& cert, const fs::path& key, const Card& c, std::uint16_t index,
                      const std::string& txn) {
  auto a = card_request(txn, c.n, Algorithm::des3, c.list, index, c.codes[index], Ch{});
  auto r = net::request_once(node.terminal(cert, key), Verb::post, "/v1/authorizations", auth_body(a));
  if (!r) return "error: " + r.error().message;
  if (r->status != 200) return "status " + std::to_string(r->status) + ": " + r->body;
  return field(r->body, "decision") + "/" + field(r->body, "reason");
}

// Every key the test knows: K and the codes of each card, plus `more`.
std::vector<Bytes> known_keys(const std::vector<const Card*>& cards, std::vector<Bytes> more = {}) {
  for (const Card* c : cards) {
    more.push_back(raw(c->k));
    for (const auto& k : c->codes) more.push_back(raw(k));
  }
  return more;
}

// A copy of what a thief takes without the token: the nodes' data directories and a pg_dump
// of the database. Returns the scan's finding ("" when no key is found), after checking that
// the scan finds a key that is there.
std::string scan_copy(HsmNodes& h, const std::vector<Bytes>& keys) {
  TempDir copy;
  for (std::size_t i = 0; i < h.nodes.size(); ++i)
    fs::copy(h[i].dir, copy.path / ("node" + std::to_string(i)), fs::copy_options::recursive);
  const std::string dump = h.pg->dump(h.dbname());
  REQUIRE(dump.find("COPY public.otacs") != std::string::npos);
  std::ofstream(copy.path / "dump.sql") << dump;
  const std::string found = find_secrets(copy.path, keys);
  std::ofstream(copy.path / "letter.txt") << to_hex(keys.front());
  CHECK_FALSE(find_secrets(copy.path, keys).empty());
  return found;
}

// One audit chain in the database, every entry's MAC verified (in the token).
void check_audit_chain(Store& store) {
  REQUIRE(store.run([&](Tx& tx) -> Result<void> {
    auto chain = tx.verify_audit_chain();
    INFO((chain ? "" : chain.error().message));
    CHECK(chain);
    return {};
  }));
}

}  // namespace

TEST_CASE("SoftHSM2 on PostgreSQL: two nodes with their own token sessions, enrolled on one, authorized on the other",
          "[server][pg][softhsm]") {
  HsmNodes h;
  CHECK(h.start_on_token(2).find("kek_version=1") != std::string::npos);
  CHECK_FALSE(fs::exists(h[0].dir / "kek.bin"));  // no file KEK is made in token mode
  const auto [cert, key] = h[0].register_terminal("TERM0001");
  auto store = h.store(true);
  const Card a = enroll(h[0], *store, "+4915550001");
  const Card b = enroll(h[1], *store, "+4915550002");
  // Each card authorized on the node that did not enroll it, and on the one that did.
  CHECK(authorize(h[1], cert, key, a, 0, "HP-1") == "approved/ok");
  CHECK(authorize(h[0], cert, key, b, 0, "HP-2") == "approved/ok");
  CHECK(authorize(h[0], cert, key, a, 1, "HP-3") == "approved/ok");
  CHECK(authorize(h[1], cert, key, b, 1, "HP-4") == "approved/ok");
  CHECK(authorize(h[0], cert, key, a, 0, "HP-5") == "declined/code_used");  // once, across nodes
  // Every sealed value in the database is 02 || version 1: wrapped by the token's KEK.
  const auto db = StoreAddress::postgresql(h.conninfo);
  CHECK(count_not_under(db, kSealedToken, 1).value() == 0);
  CHECK(count_not_under(db, kSealedToken, 2).value() > 200);
  // One audit chain, written by both nodes and the ceremony.
  check_audit_chain(*store);
  // The data directories and a pg_dump, without the token, reveal no key.
  CHECK(scan_copy(h, known_keys({&a, &b})).empty());
}

TEST_CASE("SoftHSM2 on PostgreSQL: hsm-migrate from the file KEK, resumable after kill -9, then two nodes on the token",
          "[server][pg][softhsm]") {
  HsmNodes h;
  h.write_config(false);
  h.start(1);
  const auto [cert, key] = h[0].register_terminal("TERM0001");
  Card a, b;
  Bytes ca_point, ca_private;
  {
    auto store = h.store(false);
    a = enroll(h[0], *store, "+4915550001");
    b = enroll(h[0], *store, "+4915550002");
    auto ca = Backend::call(h[0].admin(), Verb::get, "/v1/admin/card-ca");
    REQUIRE(ca.status == 200);
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      auto k = tx.server_key("card-ca");
      if (!k) return k.error();
      ca_point = k->public_point;
      ca_private = raw(k->private_der);
      return {};
    }));
  }
  CHECK(authorize(h[0], cert, key, a, 0, "FM-1") == "approved/ok");
  REQUIRE(h[0].stop() == 0);
  h.write_config(true);
  const Config c = h.config(true);
  const auto db = StoreAddress::postgresql(h.conninfo);
  const std::uint64_t before = count_not_under(db, kSealedToken, 1).value();
  REQUIRE(before >= 100);
  // kill -9 in the middle: a child (which has not touched the token before the fork)
  // migrates in batches of 5 and is killed after its 4th.
  const int st = backend::test::migrate_killed_midway(c, 5, 4);
  REQUIRE(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGKILL);
  const std::uint64_t midway = count_not_under(db, kSealedToken, 1).value();
  CHECK(midway <= before - 15);  // four whole batches committed (a batch ends at a column's end)
  CHECK(midway >= before - 20);
  // hsm-init is refused on a database the file KEK sealed values in (even half migrated).
  auto init = hsm_init(c, {});
  REQUIRE_FALSE(init);
  CHECK(init.error().message.find("use hsm-migrate") != std::string::npos);
  auto m = hsm_migrate(c, {});
  REQUIRE(m);
  CHECK(m->find("rewrapped=" + std::to_string(midway)) != std::string::npos);
  CHECK(count_not_under(db, kSealedToken, 1).value() == 0);
  // The file KEK goes; two nodes serve from the token alone.
  fs::remove(h[0].dir / "kek.bin");
  h.start(2);
  CHECK(authorize(h[1], cert, key, a, 1, "FM-2") == "approved/ok");
  CHECK(authorize(h[0], cert, key, b, 0, "FM-3") == "approved/ok");
  CHECK(authorize(h[1], cert, key, a, 0, "FM-4") == "declined/code_used");  // used before the migration
  auto ca = Backend::call(h[1].admin(), Verb::get, "/v1/admin/card-ca");
  REQUIRE(ca.status == 200);
  CHECK(ca.body.find(to_hex(ca_point)) != std::string::npos);  // cards trust the same CA key
  auto store = h.store(true);
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    auto chain = tx.verify_audit_chain();  // the chain begun under the file KEK goes on
    INFO((chain ? "" : chain.error().message));
    CHECK(chain);
    auto e = tx.audit_recent(50);
    REQUIRE(e);
    bool migrated = false;
    for (const auto& x : *e) migrated = migrated || x.action == "hsm_migrate";
    CHECK(migrated);
    return {};
  }));
  // Without the token, the copy reveals no card key, no code and not the card CA's private key.
  CHECK(scan_copy(h, known_keys({&a, &b}, {ca_private})).empty());
}

TEST_CASE("SoftHSM2 on PostgreSQL: hsm-rotate re-wraps under a new KEK version while two nodes serve",
          "[server][pg][softhsm]") {
  HsmNodes h;
  h.start_on_token(2);
  const auto terminal = h[0].register_terminal("TERM0001");
  const fs::path cert = terminal.first, key = terminal.second;  // named: clang 14 cannot capture a binding
  auto store = h.store(true);
  const Card a = enroll(h[0], *store, "+4915550001");
  const Card b = enroll(h[1], *store, "+4915550002");
  const Card c3 = enroll(h[1], *store, "+4915550003");
  const auto db = StoreAddress::postgresql(h.conninfo);
  REQUIRE(count_not_under(db, kSealedToken, 2).value() > 250);
  using Clock = std::chrono::steady_clock;
  std::mutex mu;
  std::vector<std::pair<Clock::time_point, std::string>> answers;  // per request, in order
  std::atomic<bool> stop{false};
  std::thread load([&] {
    for (std::uint16_t i = 0; i < 45 && !stop; ++i) {
      // Codes of card a through node 0, of card b through node 1: each node seals (the
      // transaction, the consumed code) and opens under whichever version is current.
      const std::string ra = authorize(h[0], cert, key, a, i, "RA-" + std::to_string(i));
      const std::string rb = authorize(h[1], cert, key, b, i, "RB-" + std::to_string(i));
      std::lock_guard lk(mu);
      answers.emplace_back(Clock::now(), ra);
      answers.emplace_back(Clock::now(), rb);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CeremonyOptions o;
  o.rewrap.batch = 40;
  o.settle = std::chrono::milliseconds(1500);
  const auto started = Clock::now();
  auto r = hsm_rotate(h.config(true), o);
  const auto finished = Clock::now();
  stop = true;
  load.join();
  REQUIRE(r);
  CHECK(r->find("version=2") != std::string::npos);
  CHECK(r->find("destroyed=1") != std::string::npos);
  int during = 0;
  for (const auto& [at, answer] : answers) {
    INFO(answer);
    CHECK(answer == "approved/ok");
    if (at >= started && at <= finished) ++during;
  }
  CHECK(during >= 2);  // the nodes served while the rotation ran
  CHECK(count_not_under(db, kSealedToken, 2).value() == 0);
  auto t = h.hsm.token().value();
  auto keys = t->find_secret_keys("kek").value();
  REQUIRE(keys.size() == 1);
  CHECK(keys.front().first == be_bytes(2, 4));
  // Version 1 is gone from the token: both nodes go on with version 2 alone.
  CHECK(authorize(h[1], cert, key, c3, 0, "RC-1") == "approved/ok");
  CHECK(authorize(h[0], cert, key, c3, 1, "RC-2") == "approved/ok");
  check_audit_chain(*store);
  CHECK(scan_copy(h, known_keys({&a, &b, &c3})).empty());
}

TEST_CASE("SoftHSM2 on PostgreSQL: the token gone and back while two nodes serve: refusals, then each node recovers by itself",
          "[server][pg][softhsm]") {
  HsmNodes h;
  h.start_on_token(2);
  const auto [cert, key] = h[0].register_terminal("TERM0001");
  Card a;
  {
    auto store = h.store(true);  // closed before the token goes: this process holds no session then
    a = enroll(h[0], *store, "+4915550001");
  }
  CHECK(authorize(h[1], cert, key, a, 0, "TL-0") == "approved/ok");
  // Root ignores mode 000, so the directory is also moved away: the token's files vanish.
  const fs::path hidden = h.hsm.dir.path / "tokens.away";
  ::chmod(h.hsm.tokens.c_str(), 0);
  fs::rename(h.hsm.tokens, hidden);
  for (std::size_t node = 0; node < 2; ++node) {
    for (int i = 0; i < 2; ++i) {  // the first finds the token gone, the second is refused at once
      const std::string answer = authorize(h[node], cert, key, a, 1, "TL-gone-" + std::to_string(node) + std::to_string(i));
      INFO("node " << node << ": " << answer);
      // 503 "unavailable": no decision, nothing stored, and the terminal may send it again.
      CHECK(answer.rfind("status 503", 0) == 0);
      CHECK(answer.find(R"("error":"unavailable")") != std::string::npos);
      CHECK(answer.find("PKCS#11") == std::string::npos);  // the detail is in the log only
    }
    const std::string log = h[node].log();
    CHECK(log.find("event=hsm_token_lost") != std::string::npos);
    bool logged = false;  // the request's line: its status, and the error the answer left out
    for (std::size_t at = 0, end = 0; at < log.size() && !logged; at = end + 1) {
      end = std::min(log.find('\n', at), log.size());
      const std::string_view line(log.data() + at, end - at);
      logged = line.find("event=request") != line.npos && line.find("status=503") != line.npos &&
               line.find("error=") != line.npos && line.find("PKCS#11") != line.npos;
    }
    CHECK(logged);
    // A load balancer sees it too.
    const auto health = Backend::call(h[node].client(), Verb::get, "/healthz");
    CHECK(health.status == 503);
    CHECK(health.body.find("key token") != std::string::npos);
  }
  fs::rename(hidden, h.hsm.tokens);
  ::chmod(h.hsm.tokens.c_str(), 0700);
  // Each node re-opens its own session once its backoff allows; bounded polling.
  for (std::size_t node = 0; node < 2; ++node) {
    std::string answer;
    const auto code = static_cast<std::uint16_t>(2 + node);
    for (int i = 0; i < 100 && answer != "approved/ok"; ++i) {
      answer = authorize(h[node], cert, key, a, code, "TL-back-" + std::to_string(node) + "-" + std::to_string(i));
      if (answer != "approved/ok") std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    INFO("node " << node << ": " << answer);
    CHECK(answer == "approved/ok");
    CHECK(h[node].log().find("event=hsm_token_recovered") != std::string::npos);
    unsigned health = 0;  // its result is kept for a second: bounded polling
    for (int i = 0; i < 30 && health != 200; ++i) {
      health = Backend::call(h[node].client(), Verb::get, "/healthz").status;
      if (health != 200) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(health == 200);
  }
  // The code tried while the token was away is unused; the audit chain is whole.
  CHECK(authorize(h[0], cert, key, a, 1, "TL-after") == "approved/ok");
  auto store = h.store(true);
  check_audit_chain(*store);
}

TEST_CASE("SoftHSM2 on PostgreSQL with Kannel: a PoR that arrives while the token is away is answered 503, fetched again by smsbox, and counted once",
          "[server][pg][softhsm][kannel]") {
  HsmNodes h;
  const std::string secret = to_hex(crypto::random_bytes(16));
  const std::uint16_t mo = free_port();
  TempDir kannel_dir;
  Kannel kannel(kannel_dir.path / "kannel", "http://127.0.0.1:" + std::to_string(mo) + "/v1/sms/mo?secret=" + secret +
                                                "&from=%p&to=%P&udh=%u&data=%b");
  h.extra = "mo_listen = \"127.0.0.1:" + std::to_string(mo) + "\"\nserver_msisdn = \"+15550100\"\n" +
            "kannel_sendsms_url = \"http://127.0.0.1:" + kannel.env.at("KANNEL_SENDSMS_PORT") + "/cgi-bin/sendsms\"\n" +
            "kannel_user = \"" + kannel.env.at("KANNEL_SENDSMS_USER") + "\"\nkannel_pass = \"" +
            kannel.env.at("KANNEL_SENDSMS_PASS") + "\"\nsms_retry_base_seconds = 1\nsms_retry_max_seconds = 2\n";
  std::ofstream(h[0].dir / "mo.secret") << secret << "\n";
  fs::permissions(h[0].dir / "mo.secret", fs::perms::owner_read | fs::perms::owner_write);
  h.start_on_token(1);
  FakePhone phone(kannel.port("KANNEL_SMSC_PORT"));
  Card a;
  std::uint64_t counter = 0;
  {
    auto store = h.store(true);  // closed before the token goes: this process holds no session then
    a = enroll(h[0], *store, "+4915550001");
    REQUIRE_FALSE(read_packet(phone, "+4915550001", std::chrono::seconds(30)).empty());  // the list reached the phone
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      auto c = tx.latest_ota_sent(a.n, "list", a.list);
      if (!c) return c.error();
      counter = *c;
      CHECK(tx.card(a.n)->list_push_in_flight);
      return {};
    }));
  }
  const auto mo_answers = [&](const char* status) { return occurrences(h[0].log(), std::string("path=/v1/sms/mo status=") + status); };
  // Root ignores mode 000, so the directory is also moved away: the token's files vanish.
  const fs::path hidden = h.hsm.dir.path / "tokens.away";
  ::chmod(h.hsm.tokens.c_str(), 0);
  fs::rename(h.hsm.tokens, hidden);
  // The card's PoR for the list: the backend cannot open it without the token. It answers 503
  // and keeps nothing; smsbox fetches it again every second (http-queue-delay = 1).
  phone.send_line("+4915550001 +15550100 udh " + percent_encode(as_str(hex("027100"))) + " " +
                  percent_encode(as_str(por_packet(a.n, a.k, counter))));
  for (int i = 0; i < 200 && mo_answers("503") < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  INFO(h[0].log());
  REQUIRE(mo_answers("503") >= 2);
  CHECK(mo_answers("200") == 0);
  fs::rename(hidden, h.hsm.tokens);
  ::chmod(h.hsm.tokens.c_str(), 0700);
  // Back: the next fetch is answered 200 and the list is loaded, once.
  for (int i = 0; i < 300 && mo_answers("200") < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(mo_answers("200") == 1);
  auto store = h.store(true);
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    auto lists = tx.lists(a.n);
    if (!lists) return lists.error();
    REQUIRE(lists->size() == 1);
    CHECK(lists->front().state == ListState::loaded);
    CHECK_FALSE(tx.card(a.n)->list_push_in_flight);
    auto audit = tx.audit_entries(0, 100000);
    if (!audit) return audit.error();
    CHECK(std::count_if(audit->begin(), audit->end(), [](const auto& e) { return e.action == "por"; }) == 1);
    return {};
  }));
  check_audit_chain(*store);
  // No retry is still pending: nothing more reaches the backend.
  const std::size_t seen = occurrences(h[0].log(), "path=/v1/sms/mo");
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  CHECK(occurrences(h[0].log(), "path=/v1/sms/mo") == seen);
}
