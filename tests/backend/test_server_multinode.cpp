// Several otac-backend nodes on one PostgreSQL database (docs/operations.md, "Several nodes on
// PostgreSQL"): three real processes sharing a throw-away cluster (tests/support/pg_cluster),
// reached by real HTTPS clients with client certificates.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>

#include "pg_cluster.hpp"
#include "pg_store.hpp"
#include "server_fixture.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::test;
namespace json = boost::json;
using Verb = boost::beast::http::verb;

namespace {

// Three nodes: the first creates the data directory (CA, certificates, KEK, tokens); the
// others start from a copy of it, as a deployment copies them to each machine.
struct Cluster {
  std::string conninfo;
  std::vector<std::unique_ptr<Backend>> nodes;

  explicit Cluster(int count) {
    std::string why;
    auto* pg = otac::pgtest::PgCluster::shared(&why);
    if (!pg) FAIL("no PostgreSQL cluster: " << why);
    conninfo = pg->create_database();
    const std::string config = "store = \"postgresql\"\npostgres_conninfo = \"" + conninfo + "\"\nworker_threads = 32\n"
                               "decline_source_burst = 1000000\ndecline_card_burst = 1000000\n";
    for (int i = 0; i < count; ++i) {
      nodes.push_back(std::make_unique<Backend>());
      if (i > 0) std::filesystem::copy(nodes[0]->dir, nodes.back()->dir, std::filesystem::copy_options::recursive);
      nodes.back()->start(config);
    }
  }
  Backend& operator[](std::size_t i) { return *nodes[i]; }

  // A store on the shared database, with the nodes' KEK (as an operator would hold it).
  std::unique_ptr<Store> store() {
    auto kek = Kek::load_or_create(nodes[0]->dir / "kek.bin");
    REQUIRE(kek);
    PgOptions o;
    o.conninfo = conninfo;
    o.start_attempts = 1;
    auto s = open_pg_store(o, std::make_shared<const Kek>(std::move(*kek)));
    REQUIRE(s);
    return std::move(*s);
  }
};

}  // namespace

TEST_CASE("multi-node: one card answer raced through three nodes, each code approved exactly once", "[server][pg]") {
  Cluster c(3);
  const auto [cert, key] = c[0].register_terminal("TERM0001");
  const auto [n, k] = c[1].enroll(R"({"msisdn":"+4915550001"})");  // enrolled on another node
  auto refresh = Backend::call(c[2].admin(), Verb::post, "/v1/admin/cards/" + to_hex(n) + "/refresh");
  REQUIRE(refresh.status == 200);
  const auto list = static_cast<std::uint16_t>(std::stoi(field(refresh.body, "list")));
  auto store = c.store();

  constexpr int kCodes = 12, kPerCode = 18;  // 216 concurrent requests
  std::vector<AuthRequest> bases;
  for (int code = 0; code < kCodes; ++code) {
    SecretBytes otac;
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      auto o = tx.otac(n, list, static_cast<std::uint16_t>(code));
      if (!o) return o.error();
      otac = std::move(o->key);
      return {};
    }));
    bases.push_back(card_request("unused", n, Algorithm::des3, list, static_cast<std::uint16_t>(code), otac, Ch{}));
  }
  constexpr int kThreads = kCodes * kPerCode;
  std::vector<std::string> decisions(kThreads), errors(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      AuthRequest a = bases[static_cast<std::size_t>(i % kCodes)];
      a.txn_id = "MN-" + std::to_string(i);
      const auto tc = c[static_cast<std::size_t>(i % 3)].terminal(cert, key);
      ready.fetch_add(1);
      for (int spin = 0; spin < 4000 && ready.load() < kThreads; ++spin) std::this_thread::sleep_for(std::chrono::microseconds(500));
      auto r = net::request_once(tc, Verb::post, "/v1/authorizations", auth_body(a));
      if (!r) errors[static_cast<std::size_t>(i)] = r.error().message;
      else if (r->status != 200) errors[static_cast<std::size_t>(i)] = std::to_string(r->status) + " " + r->body;
      else decisions[static_cast<std::size_t>(i)] = field(r->body, "decision") + "/" + field(r->body, "reason");
    });
  }
  for (auto& t : threads) t.join();
  std::map<int, int> approvals;
  int used = 0;
  for (int i = 0; i < kThreads; ++i) {
    INFO("request " << i << ": " << errors[static_cast<std::size_t>(i)]);
    CHECK(errors[static_cast<std::size_t>(i)].empty());
    if (decisions[static_cast<std::size_t>(i)] == "approved/ok") ++approvals[i % kCodes];
    else if (decisions[static_cast<std::size_t>(i)] == "declined/code_used") ++used;
  }
  for (int code = 0; code < kCodes; ++code) CHECK(approvals[code] == 1);
  CHECK(used == kThreads - kCodes);
  // The database agrees: kCodes approved transactions, each code consumed, one audit chain.
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    TransactionFilter f;
    f.card = n;
    f.decision = Decision::approved;
    f.limit = 1000;
    CHECK(tx.transactions(f)->size() == static_cast<std::size_t>(kCodes));
    for (int code = 0; code < kCodes; ++code) CHECK(tx.otac(n, list, static_cast<std::uint16_t>(code))->used);
    auto chain = tx.verify_audit_chain();
    INFO((chain ? "" : chain.error().message));
    CHECK(chain);
    return {};
  }));
}

TEST_CASE("multi-node: a transaction held on one node is approved by an operator on another", "[server][pg]") {
  Cluster c(2);
  const auto [cert, key] = c[0].register_terminal("TERM0001");
  const auto [n, k] = c[0].enroll(R"({"msisdn":"+4915550001","review_minor":100})");
  auto refresh = Backend::call(c[0].admin(), Verb::post, "/v1/admin/cards/" + to_hex(n) + "/refresh");
  REQUIRE(refresh.status == 200);
  const auto list = static_cast<std::uint16_t>(std::stoi(field(refresh.body, "list")));
  auto store = c.store();
  SecretBytes otac;
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    auto o = tx.otac(n, list, 0);
    if (!o) return o.error();
    otac = std::move(o->key);
    return {};
  }));
  auto a = card_request("HELD-1", n, Algorithm::des3, list, 0, otac, Ch{});  // 12.34 > 1.00: held
  auto held = Backend::call(c[0].terminal(cert, key), Verb::post, "/v1/authorizations", auth_body(a));
  REQUIRE(held.status == 200);
  REQUIRE(field(held.body, "decision") == "held");
  // otac-admin on node 1 lists what node 0 holds.
  const auto out = c[1].tmp.path / "admin.out";
  const int rc = run_program({OTAC_ADMIN_BIN, "--url", "https://127.0.0.1:" + std::to_string(c[1].port), "--ca",
                              (c[1].dir / "ca.pem").string(), "--token-file", (c[1].dir / "admin.token").string(),
                              "transactions", "--decision", "held"},
                             out);
  CHECK(rc == 0);
  CHECK(slurp(out).find("HELD-1") != std::string::npos);
  // The terminal waits on node 0; the operator approves on node 1.
  std::string waited;
  std::thread poll([&] {
    auto r = net::request_once(c[0].terminal(cert, key), Verb::get, "/v1/authorizations/HELD-1?wait=20");
    waited = r ? r->body : r.error().message;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto ok = Backend::call(c[1].admin(), Verb::post, "/v1/admin/transactions/HELD-1/approve");
  CHECK(ok.status == 200);
  poll.join();
  INFO(waited);
  CHECK(field(waited, "decision") == "approved");
  // Node 0's view and otac-admin's audit check see the decision and one verifiable chain.
  auto listed = Backend::call(c[0].admin(), Verb::get, "/v1/admin/transactions?decision=approved");
  CHECK(listed.body.find("HELD-1") != std::string::npos);
  const int verify = run_program({OTAC_ADMIN_BIN, "--url", "https://127.0.0.1:" + std::to_string(c[0].port), "--ca",
                                  (c[0].dir / "ca.pem").string(), "--token-file", (c[0].dir / "admin.token").string(),
                                  "--json", "audit", "--verify"},
                                 out);
  CHECK(verify == 0);
  // A second decision on either node finds it decided.
  auto again = Backend::call(c[0].admin(), Verb::post, "/v1/admin/transactions/HELD-1/decline");
  CHECK(again.status == 409);
}

TEST_CASE("multi-node: a node killed with kill -9 under load loses no approval and approves no code twice", "[server][pg]") {
  Cluster c(3);
  const auto [cert, key] = c[0].register_terminal("TERM0001");
  const auto [n, k] = c[0].enroll(R"({"msisdn":"+4915550001"})");
  auto refresh = Backend::call(c[0].admin(), Verb::post, "/v1/admin/cards/" + to_hex(n) + "/refresh");
  REQUIRE(refresh.status == 200);
  const auto list = static_cast<std::uint16_t>(std::stoi(field(refresh.body, "list")));
  auto store = c.store();
  constexpr int kTerminals = 9, kEach = 8;
  std::vector<AuthRequest> requests;
  for (int code = 0; code < kTerminals * kEach; ++code) {
    SecretBytes otac;
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      auto o = tx.otac(n, list, static_cast<std::uint16_t>(code));
      if (!o) return o.error();
      otac = std::move(o->key);
      return {};
    }));
    requests.push_back(card_request("KILL-" + std::to_string(code), n, Algorithm::des3, list, static_cast<std::uint16_t>(code), otac, Ch{}));
  }
  // Each terminal knows the three nodes and fails over to the next when one does not answer,
  // retrying the same txn_id (the answer is idempotent).
  std::mutex mu;
  std::map<std::string, std::string> seen;  // txn_id -> decision the terminal saw
  std::atomic<int> answered{0}, failovers{0};
  std::vector<std::string> lost(kTerminals);
  std::vector<std::thread> threads;
  for (int t = 0; t < kTerminals; ++t) {
    threads.emplace_back([&, t] {
      for (int j = 0; j < kEach; ++j) {
        const auto& a = requests[static_cast<std::size_t>(t * kEach + j)];
        bool done = false;
        for (int attempt = 0; attempt < 6 && !done; ++attempt) {
          auto& node = c[static_cast<std::size_t>((t + attempt) % 3)];
          auto r = net::request_once(node.terminal(cert, key), Verb::post, "/v1/authorizations", auth_body(a));
          if (r && r->status == 200) {
            std::lock_guard lock(mu);
            seen[a.txn_id] = field(r->body, "decision");
            done = true;
          } else {
            ++failovers;
          }
        }
        if (!done) lost[static_cast<std::size_t>(t)] += a.txn_id + " ";
        ++answered;
      }
    });
  }
  for (int i = 0; i < 400 && answered < kTerminals * kEach / 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  c[0].kill9();
  for (auto& t : threads) t.join();
  for (const auto& l : lost) CHECK(l.empty());
  CHECK(failovers > 0);  // terminals 0, 3 and 6 start on the killed node: the kill was under load
  REQUIRE(seen.size() == static_cast<std::size_t>(kTerminals * kEach));
  // Every approval a terminal saw is recorded, and every code is used by one approval at most.
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    int approved = 0;
    for (const auto& [txn_id, decision] : seen) {
      CHECK(decision == "approved");
      auto rec = tx.transaction(txn_id);
      REQUIRE(rec);
      CHECK(rec->decision == Decision::approved);
      ++approved;
    }
    TransactionFilter f;
    f.card = n;
    f.decision = Decision::approved;
    f.limit = 1000;
    CHECK(tx.transactions(f)->size() == static_cast<std::size_t>(approved));
    CHECK(tx.verify_audit_chain());
    return {};
  }));
  // The surviving nodes still answer.
  CHECK(Backend::call(c[1].client(), Verb::get, "/healthz").status == 200);
}

TEST_CASE("multi-node: PostgreSQL restarted under load: nodes reconnect, nothing acknowledged is lost", "[server][pg]") {
  Cluster c(2);
  const auto [cert, key] = c[0].register_terminal("TERM0001");
  const auto [n, k] = c[0].enroll(R"({"msisdn":"+4915550001"})");
  auto refresh = Backend::call(c[0].admin(), Verb::post, "/v1/admin/cards/" + to_hex(n) + "/refresh");
  REQUIRE(refresh.status == 200);
  const auto list = static_cast<std::uint16_t>(std::stoi(field(refresh.body, "list")));
  auto store = c.store();
  constexpr int kTerminals = 4, kEach = 10;
  std::vector<AuthRequest> requests;
  for (int code = 0; code < kTerminals * kEach; ++code) {
    SecretBytes otac;
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      auto o = tx.otac(n, list, static_cast<std::uint16_t>(code));
      if (!o) return o.error();
      otac = std::move(o->key);
      return {};
    }));
    requests.push_back(card_request("PGR-" + std::to_string(code), n, Algorithm::des3, list, static_cast<std::uint16_t>(code), otac, Ch{}));
  }
  std::mutex mu;
  std::map<std::string, std::string> seen;
  std::set<std::string> refusals;  // what a request got while the database was away
  std::atomic<int> answered{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kTerminals; ++t) {
    threads.emplace_back([&, t] {
      for (int j = 0; j < kEach; ++j) {
        const auto& a = requests[static_cast<std::size_t>(t * kEach + j)];
        for (int attempt = 0; attempt < 150; ++attempt) {  // up to ~15 s per request
          auto r = net::request_once(c[static_cast<std::size_t>((t + attempt) % 2)].terminal(cert, key), Verb::post,
                                     "/v1/authorizations", auth_body(a));
          std::lock_guard lock(mu);
          if (r && r->status == 200) {
            seen[a.txn_id] = field(r->body, "decision");
            break;
          }
          refusals.insert(r ? std::to_string(r->status) : "network");
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        ++answered;
      }
    });
  }
  for (int i = 0; i < 400 && answered < kTerminals * kEach / 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  otac::pgtest::PgCluster::shared()->restart();
  for (auto& t : threads) t.join();
  INFO("answers while PostgreSQL restarted: " << [&] { std::string s; for (const auto& r : refusals) s += r + " "; return s; }());
  CHECK_FALSE(refusals.empty());  // the restart did hit requests
  for (const auto& r : refusals) CHECK((r == "500" || r == "503" || r == "network"));  // an error, never a wrong answer
  REQUIRE(seen.size() == static_cast<std::size_t>(kTerminals * kEach));  // every request answered once the server was back
  auto after = c.store();  // a new connection: the old one died with the server
  REQUIRE(after->run([&](Tx& tx) -> Result<void> {
    for (const auto& [txn_id, decision] : seen) {
      CHECK(decision == "approved");
      auto rec = tx.transaction(txn_id);
      REQUIRE(rec);
      CHECK(rec->decision == Decision::approved);
    }
    TransactionFilter f;
    f.card = n;
    f.decision = Decision::approved;
    f.limit = 1000;
    CHECK(tx.transactions(f)->size() == seen.size());
    CHECK(tx.verify_audit_chain());
    return {};
  }));
}

TEST_CASE("multi-node: a terminal revoked on one node is refused by the others within seconds", "[server][pg]") {
  Cluster c(2);
  const auto [cert, key] = c[0].register_terminal("TERM0001");
  const auto poll = [&] {
    return Backend::call(c[1].terminal(cert, key), Verb::get, "/v1/authorizations/NONE-1").status;
  };
  CHECK(poll() == 404U);  // node 1 knows the terminal (and caches the check)
  auto r = Backend::call(c[0].admin(), Verb::post, "/v1/admin/terminals/TERM0001/revoke");
  REQUIRE(r.status == 200);
  unsigned status = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100 && status != 403U; ++i) {  // at most 10 s
    status = poll();
    if (status != 403U) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(status == 403U);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(4));
}
