// Several otac-backend nodes on one PostgreSQL database (docs/operations.md, "Several nodes on
// PostgreSQL"): three real processes sharing a throw-away cluster (tests/support/pg_cluster),
// reached by real HTTPS clients with client certificates.
// The fixtures' pairs are unpacked by name, not by structured bindings: the lambdas capture
// them, and clang 14 cannot capture a structured binding.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>

#include "multinode_fixture.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::test;
namespace json = boost::json;
using Verb = boost::beast::http::verb;

TEST_CASE("multi-node: one card answer raced through three nodes, each code approved exactly once", "[server][pg]") {
  Cluster c(3);
  const auto term_files = c[0].register_terminal("TERM0001");
  const auto& cert = term_files.first;
  const auto& key = term_files.second;
  const auto card = c[1].enroll(R"({"msisdn":"+4915550001"})");  // enrolled on another node
  const auto& n = card.first;
  const auto list = c.refresh(2, n);
  auto store = c.store();

  constexpr int kCodes = 12, kPerCode = 18;  // 216 concurrent requests
  std::vector<AuthRequest> bases;
  for (int code = 0; code < kCodes; ++code) {
    const SecretBytes otac = c.otac(n, list, static_cast<std::uint16_t>(code));
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
  const auto term_files = c[0].register_terminal("TERM0001");
  const auto& cert = term_files.first;
  const auto& key = term_files.second;
  const auto card = c[0].enroll(R"({"msisdn":"+4915550001","review_minor":100})");
  const auto& n = card.first;
  const auto list = c.refresh(0, n);
  auto a = card_request("HELD-1", n, Algorithm::des3, list, 0, c.otac(n, list, 0), Ch{});  // 12.34 > 1.00: held
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
  const auto term_files = c[0].register_terminal("TERM0001");
  const auto& cert = term_files.first;
  const auto& key = term_files.second;
  const auto card = c[0].enroll(R"({"msisdn":"+4915550001"})");
  const auto& n = card.first;
  const auto list = c.refresh(0, n);
  auto store = c.store();
  constexpr int kTerminals = 9, kEach = 8;
  std::vector<AuthRequest> requests;
  for (int code = 0; code < kTerminals * kEach; ++code) {
    const SecretBytes otac = c.otac(n, list, static_cast<std::uint16_t>(code));
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
  const auto term_files = c[0].register_terminal("TERM0001");
  const auto& cert = term_files.first;
  const auto& key = term_files.second;
  const auto card = c[0].enroll(R"({"msisdn":"+4915550001"})");
  const auto& n = card.first;
  const auto list = c.refresh(0, n);
  constexpr int kTerminals = 4, kEach = 10;
  std::vector<AuthRequest> requests;
  for (int code = 0; code < kTerminals * kEach; ++code) {
    const SecretBytes otac = c.otac(n, list, static_cast<std::uint16_t>(code));
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
  const auto term_files = c[0].register_terminal("TERM0001");
  const auto& cert = term_files.first;
  const auto& key = term_files.second;
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

TEST_CASE("multi-node: a threshold push raced on two nodes queues one list", "[server][pg]") {
  // Lists of 20 and a threshold of 10: the 10th code used crosses it. Each card is taken to
  // one code above the threshold, then codes 9..16 are spent at the same moment through both
  // nodes: several approvals see the threshold crossed, one push may follow.
  Cluster c(2, "list_size = 20\n");
  const auto term_files = c[0].register_terminal("TERM0001");
  const auto& cert = term_files.first;
  const auto& key = term_files.second;
  auto store = c.store();
  constexpr int kCards = 6, kRacers = 8, kBefore = 9;
  struct Card {
    Bytes n;
    std::uint16_t list = 0;
    std::vector<AuthRequest> requests;
  };
  std::vector<Card> cards(kCards);
  for (int i = 0; i < kCards; ++i) {
    Card& cd = cards[static_cast<std::size_t>(i)];
    cd.n = c[static_cast<std::size_t>(i % 2)].enroll(R"({"msisdn":"+491555001)" + std::to_string(i) + R"(","threshold":10})").first;
    cd.list = c.refresh(0, cd.n);
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      for (std::uint16_t j = 0; j < kBefore + kRacers; ++j) {
        auto o = tx.otac(cd.n, cd.list, j);
        if (!o) return o.error();
        cd.requests.push_back(card_request("TH-" + std::to_string(i) + "-" + std::to_string(j), cd.n, Algorithm::des3, cd.list, j,
                                           o->key, Ch{}));
      }
      // The first list's PoR, as the MO path records it: nothing in flight any more.
      auto card = tx.card(cd.n);
      if (!card) return card.error();
      card->list_push_in_flight = false;
      return tx.update_card(*card);
    }));
    for (int j = 0; j < kBefore; ++j) {  // 11 unused: still above the threshold
      auto r = Backend::call(c[static_cast<std::size_t>(j % 2)].terminal(cert, key), Verb::post, "/v1/authorizations",
                             auth_body(cd.requests[static_cast<std::size_t>(j)]));
      REQUIRE(r.status == 200);
      REQUIRE(field(r.body, "decision") == "approved");
    }
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      CHECK(tx.lists(cd.n)->size() == 1);  // no push yet
      return {};
    }));
  }
  // The race: every card's remaining codes at once, alternating between the nodes.
  std::vector<std::string> answers(kCards * kRacers);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kCards * kRacers; ++i) {
    threads.emplace_back([&, i] {
      const Card& cd = cards[static_cast<std::size_t>(i / kRacers)];
      const auto& req = cd.requests[static_cast<std::size_t>(kBefore + i % kRacers)];
      const auto tc = c[static_cast<std::size_t>(i % 2)].terminal(cert, key);
      ready.fetch_add(1);
      for (int spin = 0; spin < 4000 && ready.load() < kCards * kRacers; ++spin) std::this_thread::sleep_for(std::chrono::microseconds(500));
      auto r = net::request_once(tc, Verb::post, "/v1/authorizations", auth_body(req));
      answers[static_cast<std::size_t>(i)] = !r ? r.error().message : r->status != 200 ? std::to_string(r->status) + " " + r->body
                                                                                        : field(r->body, "decision");
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& a : answers) CHECK(a == "approved");
  // One new list per card, one list's packet in the outbox for it, one audit chain.
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    for (const auto& cd : cards) {
      auto lists = tx.lists(cd.n);
      REQUIRE(lists);
      CHECK(lists->size() == 2);
      auto card = tx.card(cd.n);
      REQUIRE(card);
      CHECK(card->list_push_in_flight);
      auto queued = tx.queued_sms(cd.n, 1000);
      REQUIRE(queued);
      std::set<Bytes> packets;  // the concatenation reference (00 03 REF ...) names the packet
      for (const auto& m : *queued) packets.insert(m.udh.size() >= 5 && m.udh[0] == 0x00 ? Bytes{m.udh[2]} : m.payload);
      CHECK(packets.size() == 2);  // the first list's packet and the push's, nothing sent without Kannel
    }
    auto chain = tx.verify_audit_chain();
    CHECK(chain);
    return {};
  }));
}

namespace {

// The operator console of one node, through curl (a real HTTPS client with a cookie jar):
// the session cookie stays in the jar, the token and the CSRF token go through files, never
// on a command line.
class ConsoleClient {
 public:
  explicit ConsoleClient(Backend& node, const std::string& name) : node_(node), base_(node.tmp.path / ("console-" + name)) {
    const auto body = base_.string() + ".signin";
    std::ofstream(body) << R"({"token":")" << node.admin_token() << R"("})";
    std::filesystem::permissions(body, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    auto r = call("POST", "/console/api/session", {"-H", "Content-Type: application/json", "--data-binary", "@" + body});
    std::filesystem::remove(body);
    REQUIRE(r.first == 200);
    const auto csrf = base_.string() + ".csrf";
    std::ofstream(csrf) << "X-CSRF-Token: " << field(r.second, "csrf") << "\n";
    std::filesystem::permissions(csrf, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }
  /// GET path: {status, body}.
  std::pair<int, std::string> get(const std::string& path) { return call("GET", path, {}); }
  /// POST path with the session's CSRF token.
  std::pair<int, std::string> post(const std::string& path) { return call("POST", path, {"-H", "@" + base_.string() + ".csrf"}); }

 private:
  std::pair<int, std::string> call(const std::string& method, const std::string& path, const std::vector<std::string>& extra) {
    const auto out = base_.string() + ".out", body = base_.string() + ".body";
    std::filesystem::remove(out);
    std::filesystem::remove(body);
    std::vector<std::string> argv = {"/usr/bin/curl", "-sS", "--max-time", "20", "--cacert", (node_.dir / "ca.pem").string(),
                                     "-c", base_.string() + ".jar", "-b", base_.string() + ".jar", "-X", method,
                                     "-o", body, "-w", "%{http_code}"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("https://127.0.0.1:" + std::to_string(node_.port) + path);
    const int rc = run_program(argv, out);
    INFO("curl " << method << " " << path << ": " << slurp(out));
    REQUIRE(rc == 0);
    return {std::stoi(slurp(out)), slurp(body)};
  }
  Backend& node_;
  std::filesystem::path base_;
};

// otac-admin against one node; its output.
std::string admin(Backend& node, const std::vector<std::string>& args, int expect = 0) {
  const auto out = node.tmp.path / "admin.out";
  std::filesystem::remove(out);
  std::vector<std::string> argv = {OTAC_ADMIN_BIN, "--url", "https://127.0.0.1:" + std::to_string(node.port), "--ca",
                                   (node.dir / "ca.pem").string(), "--token-file", (node.dir / "admin.token").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  const int rc = run_program(argv, out);
  INFO(slurp(out));
  CHECK(rc == expect);
  return slurp(out);
}

}  // namespace

TEST_CASE("multi-node: otac-admin and the console on either node see the decisions made on the other", "[server][pg]") {
  Cluster c(2);
  const auto term_files = c[0].register_terminal("TERM0001");
  const auto& cert = term_files.first;
  const auto& key = term_files.second;
  const auto card = c[0].enroll(R"({"msisdn":"+4915550001","review_minor":100})");
  const auto& n = card.first;
  const auto list = c.refresh(0, n);
  for (std::uint16_t i = 0; i < 2; ++i) {  // 12.34 > 1.00: both held, on node 0
    const auto a = card_request(i == 0 ? "VIEW-A" : "VIEW-B", n, Algorithm::des3, list, i, c.otac(n, list, i), Ch{});
    auto held = Backend::call(c[0].terminal(cert, key), Verb::post, "/v1/authorizations", auth_body(a));
    REQUIRE(held.status == 200);
    REQUIRE(field(held.body, "decision") == "held");
  }
  ConsoleClient console0(c[0], "0"), console1(c[1], "1");
  // Node 1's console queue shows what node 0 holds.
  auto q = console1.get("/console/api/held");
  REQUIRE(q.first == 200);
  CHECK(q.second.find("VIEW-A") != std::string::npos);
  CHECK(q.second.find("VIEW-B") != std::string::npos);

  // otac-admin approves VIEW-A on node 0: node 1's console sees it approved and out of the queue.
  admin(c[0], {"approve", "VIEW-A"});
  auto t = console1.get("/console/api/transactions/VIEW-A");
  REQUIRE(t.first == 200);
  INFO(t.second);
  CHECK(t.second.find(R"("decision":"approved")") != std::string::npos);
  q = console1.get("/console/api/held");
  CHECK(q.second.find("VIEW-A") == std::string::npos);
  CHECK(q.second.find("VIEW-B") != std::string::npos);

  // Node 1's console declines VIEW-B: otac-admin and the console on node 0 see it.
  auto d = console1.post("/console/api/held/VIEW-B/decline");
  INFO(d.second);
  CHECK(d.first == 200);
  const auto declined = admin(c[0], {"transactions", "--decision", "declined"});
  CHECK(declined.find("VIEW-B") != std::string::npos);
  CHECK(admin(c[0], {"transactions", "--decision", "held"}).find("VIEW-") == std::string::npos);
  auto t0 = console0.get("/console/api/transactions/VIEW-B");
  REQUIRE(t0.first == 200);
  CHECK(t0.second.find(R"("decision":"declined")") != std::string::npos);
  CHECK(console0.get("/console/api/held").second.find("VIEW-") == std::string::npos);
  // A second decision, on the other node, is refused: decided once.
  admin(c[0], {"approve", "VIEW-B"}, 1);
  CHECK(console0.post("/console/api/held/VIEW-A/decline").first == 409);
  // One audit chain, checked through node 1.
  admin(c[1], {"audit", "--verify"});
}
