// Several otac-backend nodes on one PostgreSQL with real Kannel (bearerbox + smsbox, fake SMSC
// on loopback) and real otac-terminal processes: terminals failing over from a node killed with
// kill -9 while lists go out by SMS.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "kannel.hpp"
#include "kannel_fixture.hpp"
#include "multinode_fixture.hpp"
#include "otac/common/crypto.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::test;
using Verb = boost::beast::http::verb;

namespace {

// Nodes with one Kannel: every node sends through it, each listens for MO on a port of its
// own, and Kannel's get-url points at node `mo_node` only (as a load balancer would pick one).
struct KannelCluster {
  TempDir kannel_dir;
  std::string secret = to_hex(crypto::random_bytes(16));
  std::vector<std::uint16_t> mo;
  std::unique_ptr<Kannel> kannel;
  std::unique_ptr<Cluster> c;

  KannelCluster(int count, int mo_node, const std::string& extra) {
    for (int i = 0; i < count; ++i) mo.push_back(free_port());
    kannel = std::make_unique<Kannel>(kannel_dir.path / "kannel",
                                      "http://127.0.0.1:" + std::to_string(mo[static_cast<std::size_t>(mo_node)]) +
                                          "/v1/sms/mo?secret=" + secret + "&from=%p&to=%P&udh=%u&data=%b");
    std::ostringstream cfg;
    cfg << "server_msisdn = \"+15550100\"\n"
        << "kannel_sendsms_url = \"http://127.0.0.1:" << kannel->env.at("KANNEL_SENDSMS_PORT") << "/cgi-bin/sendsms\"\n"
        << "kannel_user = \"" << kannel->env.at("KANNEL_SENDSMS_USER") << "\"\n"
        << "kannel_pass = \"" << kannel->env.at("KANNEL_SENDSMS_PASS") << "\"\n"
        << "sms_retry_base_seconds = 1\nsms_retry_max_seconds = 2\n"
        << extra;
    c = std::make_unique<Cluster>(
        count, cfg.str(), [&](int i) { return "mo_listen = \"127.0.0.1:" + std::to_string(mo[static_cast<std::size_t>(i)]) + "\"\n"; },
        [&](const std::filesystem::path& dir) {
          std::ofstream(dir / "mo.secret") << secret << "\n";
          std::filesystem::permissions(dir / "mo.secret", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
        });
  }
  Backend& operator[](std::size_t i) { return (*c)[i]; }
};

// Everything the phone side of the fake SMSC receives, read on a thread of its own.
class PhoneLog {
 public:
  explicit PhoneLog(std::uint16_t smsc_port) : phone_(smsc_port) {
    reader_ = std::thread([this] {
      // Bounded: the test ends it (stop_) within a few minutes at most.
      for (int i = 0; i < 3000000 && !stop_; ++i) {
        auto l = phone_.read_line(std::chrono::milliseconds(100));
        if (!l) continue;
        std::lock_guard lock(mu_);
        lines_.push_back(*l);
      }
    });
  }
  ~PhoneLog() {
    stop_ = true;
    reader_.join();
  }
  PhoneLog(const PhoneLog&) = delete;
  PhoneLog& operator=(const PhoneLog&) = delete;
  /// A line typed into the fake SMSC (an MO message: "FROM TO udh UDH DATA", percent-encoded).
  void send_line(const std::string& line) { phone_.send_line(line); }
  std::vector<MtLine> messages() {
    std::lock_guard lock(mu_);
    std::vector<MtLine> out;
    for (const auto& l : lines_) out.push_back(parse_mt(l));
    return out;
  }

 private:
  FakePhone phone_;
  std::mutex mu_;
  std::vector<std::string> lines_;
  std::atomic<bool> stop_{false};
  std::thread reader_;
};

// Every message in the shared outbox (ids are a PostgreSQL sequence: gaps are possible).
std::vector<OutboxMessage> all_sms(Store& store) {
  std::vector<OutboxMessage> out;
  REQUIRE(store.run([&](Tx& tx) -> Result<void> {
    out.clear();
    int misses = 0;
    for (std::int64_t id = 1; id < 5000 && misses < 200; ++id) {
      auto m = tx.sms(id);
      if (!m) {
        if (m.error().code != Errc::not_found) return m.error();
        ++misses;
        continue;
      }
      misses = 0;
      out.push_back(std::move(*m));
    }
    return {};
  }));
  return out;
}

// Waits (up to `limit`) until every message of the outbox is sent; returns them.
bool all_sent(const std::vector<OutboxMessage>& sms) {
  return !sms.empty() && std::all_of(sms.begin(), sms.end(), [](const OutboxMessage& m) { return m.status == OutboxStatus::sent; });
}

std::vector<OutboxMessage> wait_all_sent(Store& store, std::chrono::seconds limit) {
  std::vector<OutboxMessage> sms;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (int i = 0; i < 100000 && std::chrono::steady_clock::now() < deadline; ++i) {
    sms = all_sms(store);
    if (all_sent(sms)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return sms;
}

// The last line of otac-terminal's output that is a JSON object ({} if none).
boost::json::object last_json_line(const std::string& out) {
  std::istringstream in(out);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty() && line.front() == '{') last = line;
  if (last.empty()) return {};
  return boost::json::parse(last).as_object();
}

// Six otac-terminal processes, each with its own card and the three nodes of `c` in its own
// order, type their cards' codes one run after the other; node 0 is killed with kill -9 once
// a third of the runs are done. Checks that every run ended approved, that the terminals that
// start on node 0 failed over, and that the database holds exactly the approvals the terminals
// saw, each code consumed once and each card's threshold push (list_size 20, threshold 17:
// at the third code) queued once. The cluster needs list_size = 20.
void terminals_through_a_kill(Cluster& c) {
  auto store = c.store();
  constexpr int kTerminals = 6, kEach = 8;
  struct Term {
    std::string id;
    std::filesystem::path conf;
    Bytes n;
    std::uint16_t list = 0;
    std::vector<std::string> codes;
  };
  std::vector<Term> terms(kTerminals);
  for (int t = 0; t < kTerminals; ++t) {
    Term& tm = terms[static_cast<std::size_t>(t)];
    tm.id = "TERM000" + std::to_string(t);
    const auto [cert, key] = c[0].register_terminal(tm.id);
    tm.n = c[0].enroll(R"({"msisdn":"+491555000)" + std::to_string(t) + R"(","threshold":17})").first;
    tm.list = c.refresh(0, tm.n);
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      for (std::uint16_t j = 0; j < kEach; ++j) {
        auto o = tx.otac(tm.n, tm.list, j);
        if (!o) return o.error();
        tm.codes.push_back(display_code_for(Algorithm::des3, tm.n, tm.list, j, o->key));
      }
      // The card's PoR for its first list, as the MO path would record it: the list is no
      // longer in flight, so the threshold push can queue the next one during the load.
      auto card = tx.card(tm.n);
      if (!card) return card.error();
      card->list_push_in_flight = false;
      return tx.update_card(*card);
    }));
    // Terminal t lists the nodes starting with node t % 3: a third of them start on node 0.
    std::string urls;
    for (int i = 0; i < 3; ++i)
      urls += (i ? ", " : "") + std::string("https://127.0.0.1:") + std::to_string(c[static_cast<std::size_t>((t + i) % 3)].port);
    tm.conf = c[0].tmp.path / (tm.id + ".conf");
    const auto data_dir = c[0].tmp.path / tm.id;
    std::filesystem::create_directories(data_dir);
    std::ofstream(tm.conf) << "reader = \"pcsc\"\nbackend_url = \"" << urls << "\"\nca_file = \"" << (c[0].dir / "ca.pem").string()
                           << "\"\ncert_file = \"" << cert.string() << "\"\nkey_file = \"" << key.string() << "\"\nterminal_id = \""
                           << tm.id << "\"\nconnect_timeout_ms = 2000\nbackend_timeout_ms = 10000\ndata_dir = \"" << data_dir.string()
                           << "\"\n";
  }

  // Each terminal types its card's codes one after the other, one otac-terminal run each.
  struct Seen {
    std::string decision, reason, auth_code, output;
    bool failed_over = false;
  };
  std::mutex mu;
  std::map<std::string, Seen> seen;  // txn_id -> what the terminal showed
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kTerminals; ++t) {
    threads.emplace_back([&, t] {
      const Term& tm = terms[static_cast<std::size_t>(t)];
      for (int j = 0; j < kEach; ++j) {
        const std::string txn = "FO-" + std::to_string(t) + "-" + std::to_string(j);
        const auto out_file = c[0].tmp.path / (txn + ".out");
        run_program({OTAC_TERMINAL_BIN, "--config", tm.conf.string(), "code", tm.codes[static_cast<std::size_t>(j)], "--card",
                     to_hex(tm.n), "--txn-id", txn},
                    out_file);
        Seen s;
        s.output = slurp(out_file);
        const auto j_out = last_json_line(s.output);
        if (const auto* d = j_out.if_contains("decision")) s.decision = std::string(d->as_string());
        if (const auto* r = j_out.if_contains("reason")) s.reason = std::string(r->as_string());
        if (const auto* a = j_out.if_contains("auth_code")) s.auth_code = std::string(a->as_string());
        s.failed_over = s.output.find(" failed (") != std::string::npos;
        std::lock_guard lock(mu);
        seen[txn] = std::move(s);
        ++done;
      }
    });
  }
  for (int i = 0; i < 6000 && done < kTerminals * kEach / 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  c[0].kill9();
  const int done_at_kill = done;
  for (auto& t : threads) t.join();
  INFO("runs finished when node 0 was killed: " << done_at_kill);
  CHECK(done_at_kill < kTerminals * kEach);  // the kill came under load

  // Every run ended approved: the code was genuine, and a node was always there to say so.
  REQUIRE(seen.size() == static_cast<std::size_t>(kTerminals * kEach));
  int failed_over = 0;
  for (const auto& [txn, s] : seen) {
    INFO(txn << ":\n" << s.output);
    CHECK(s.decision == "approved");
    CHECK(s.auth_code.size() == 6);
    failed_over += s.failed_over ? 1 : 0;
  }
  CHECK(failed_over >= kTerminals / 3);  // at least the terminals that start on node 0, after the kill

  // The database agrees: each approval the terminals saw, with its authorization code; each
  // card's codes consumed once, and no approval the terminals did not see.
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    for (const auto& [txn, s] : seen) {
      auto rec = tx.transaction(txn);
      REQUIRE(rec);
      CHECK(rec->decision == Decision::approved);
      CHECK(rec->auth_code == s.auth_code);
    }
    for (const auto& tm : terms) {
      TransactionFilter f;
      f.card = tm.n;
      f.decision = Decision::approved;
      f.limit = 1000;
      CHECK(tx.transactions(f)->size() == static_cast<std::size_t>(kEach));
      for (std::uint16_t j = 0; j < kEach; ++j) CHECK(tx.otac(tm.n, tm.list, j)->used);
      auto lists = tx.lists(tm.n);
      REQUIRE(lists);
      CHECK(lists->size() == 2);  // the first list and one threshold push, queued once
    }
    auto chain = tx.verify_audit_chain();
    INFO((chain ? "" : chain.error().message));
    CHECK(chain);
    return {};
  }));
}

}  // namespace

TEST_CASE("multi-node: otac-terminal processes fail over from a node killed with kill -9, no approval lost, no code twice",
          "[server][pg]") {
  Cluster c(3, "list_size = 20\n");
  terminals_through_a_kill(c);
}

TEST_CASE("kannel: multi-node, otac-terminal fails over from a node killed with kill -9, no approval lost, no code twice, no SMS lost",
          "[server][pg][kannel]") {
  // The lists queued before and during the load (each card's threshold push) go out through
  // Kannel while node 0 dies.
  KannelCluster kc(3, 1, "list_size = 20\n");
  PhoneLog phone(kc.kannel->port("KANNEL_SMSC_PORT"));
  terminals_through_a_kill(*kc.c);
  auto store = kc.c->store();

  // No SMS lost: every queued message is handed to Kannel by a surviving node (a lease the
  // killed node held runs out after kSmsLeaseSeconds) and reaches the phone. A message the
  // killed node had handed over but not yet marked sent goes out twice: the one duplicate the
  // lease allows (docs/operations.md), which the card rejects by its counter.
  const auto messages = wait_all_sent(*store, std::chrono::seconds(100));
  CHECK(all_sent(messages));
  std::map<std::tuple<std::string, Bytes, Bytes>, int> arrived;
  for (int i = 0; i < 100; ++i) {  // the last parts may still be on their way through Kannel
    arrived.clear();
    for (const auto& m : phone.messages())  // the phone sees UDHL first, the outbox stores the UDH without it
      if (!m.udh.empty()) ++arrived[{m.to, Bytes(m.udh.begin() + 1, m.udh.end()), m.data}];
    const bool all_there = std::all_of(messages.begin(), messages.end(),
                                       [&](const OutboxMessage& m) { return arrived.count({m.to, m.udh, m.payload}) > 0; });
    if (all_there) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::size_t duplicates = 0;
  for (const auto& m : messages) {
    const int times = arrived[{m.to, m.udh, m.payload}];
    INFO("message " << m.id << " to " << m.to << " arrived " << times << " times");
    CHECK(times >= 1);
    CHECK(times <= 2);
    duplicates += times > 1 ? 1 : 0;
  }
  INFO(messages.size() << " messages, " << duplicates << " sent twice");
  CHECK(messages.size() >= 12U);  // six cards' two lists, at least one part each
  CHECK(duplicates <= messages.size() / 2);
}

TEST_CASE("kannel: multi-node, a card's PoR and request reach another node than the one that queued its list, and count once",
          "[server][pg][kannel]") {
  // Kannel hands every MO message to node 1; node 0 queues the list; a duplicate of each MO
  // message reaches node 2 at the same moment (a gateway retrying, or a second route).
  KannelCluster kc(3, 1, "list_size = 20\n");
  PhoneLog phone(kc.kannel->port("KANNEL_SMSC_PORT"));
  auto store = kc.c->store();
  // Unpacked by name: the lambdas below capture n, and clang 14 cannot capture a structured binding.
  const auto card = kc[0].enroll(R"({"msisdn":"+4915550001"})");
  const auto& n = card.first;
  const auto& k = card.second;
  const auto list1 = kc.c->refresh(0, n);
  REQUIRE(all_sent(wait_all_sent(*store, std::chrono::seconds(30))));
  std::uint64_t counter = 0;
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    auto c = tx.latest_ota_sent(n, "list", list1);
    if (!c) return c.error();
    counter = *c;
    CHECK(tx.card(n)->list_push_in_flight);
    return {};
  }));
  // Both routes at once: the phone through Kannel (to node 1), the duplicate straight to node 2.
  const auto deliver_twice = [&](const Bytes& udh, const Bytes& data) {
    const std::string target = "/v1/sms/mo?secret=" + kc.secret + "&from=%2B4915550001&to=%2B15550100&udh=" +
                               percent_encode(as_str(udh)) + "&data=" + percent_encode(as_str(data));
    unsigned direct = 0;
    std::thread dup([&] {
      sms::KannelConfig cfg;
      cfg.port = kc.mo[2];
      auto r = sms::sendsms_get(cfg, target);
      direct = r ? r->status : 0;
    });
    phone.send_line("+4915550001 +15550100 udh " + percent_encode(as_str(udh)) + " " + percent_encode(as_str(data)));
    dup.join();
    CHECK(direct == 200);
  };
  const auto mo_seen = [&](Backend& b) { return occurrences(b.log(), "path=/v1/sms/mo"); };

  // The PoR of node 0's list: the list is loaded and no longer in flight.
  deliver_twice(hex("027100"), por_packet(n, k, counter));
  bool loaded = false;
  for (int i = 0; i < 200 && !(loaded && mo_seen(kc[1]) >= 1); ++i) {  // up to 20 s
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      auto lists = tx.lists(n);
      if (!lists) return lists.error();
      loaded = lists->size() == 1 && lists->front().state == ListState::loaded && !tx.card(n)->list_push_in_flight;
      return {};
    }));
    if (!(loaded && mo_seen(kc[1]) >= 1)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO("node 1:\n" << kc[1].log() << "\nnode 2:\n" << kc[2].log());
  CHECK(loaded);
  CHECK(mo_seen(kc[1]) == 1);  // Kannel's delivery went to node 1
  CHECK(mo_seen(kc[2]) == 1);  // the duplicate to node 2
  CHECK(mo_seen(kc[0]) == 0);

  // The card asks for codes (request packet, counter 1): one new list, whichever node wins;
  // the other delivery is refused for its counter and changes nothing.
  deliver_twice(hex("027000"), card_request_packet(n, k, 1, 0x01));
  std::size_t lists = 0;
  for (int i = 0; i < 200 && !(lists >= 2 && mo_seen(kc[1]) >= 2); ++i) {
    REQUIRE(store->run([&](Tx& tx) -> Result<void> {
      lists = tx.lists(n)->size();
      return {};
    }));
    if (!(lists >= 2 && mo_seen(kc[1]) >= 2)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(mo_seen(kc[1]) == 2);
  CHECK(mo_seen(kc[2]) == 2);
  CHECK(occurrences(kc[1].log() + kc[2].log(), "mo_error") == 1);  // one of the two was the replay
  const auto messages = wait_all_sent(*store, std::chrono::seconds(30));
  CHECK(all_sent(messages));
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    auto l = tx.lists(n);
    REQUIRE(l);
    CHECK(l->size() == 2);  // one list for the request, not two
    CHECK(tx.card(n)->list_push_in_flight);
    auto chain = tx.verify_audit_chain();
    CHECK(chain);
    return {};
  }));
  std::set<std::uint8_t> packets;  // the concatenation reference names each packet
  for (const auto& m : messages)
    if (m.udh.size() >= 3 && m.udh[0] == 0x00) packets.insert(m.udh[2]);
  CHECK(packets.size() == 2);  // list 1 and list 2, each queued once
}
