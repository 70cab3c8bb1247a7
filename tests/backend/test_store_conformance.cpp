// One store conformance suite, two back ends: every case runs against the SQLite store (a
// file in a temporary directory) and the PostgreSQL store (a fresh database in a throw-away
// cluster, tests/support/pg_cluster.hpp), so that neither can drift from the Store contract.
// It covers every Store operation, its error paths, and the rules that must hold when
// several connections (several nodes, for PostgreSQL) race on the same rows.
#include <catch2/catch.hpp>

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "pg_cluster.hpp"
#include "pg_store.hpp"
#include "sqlite_store.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;

namespace {

std::shared_ptr<const Kek> kek() { return otac::backend::test::test_kek(); }

struct SqliteBackend {
  static constexpr bool kLeases = false;  // one node: lease_due_sms is due_sms
  otac::backend::test::TempDir dir;
  Result<std::unique_ptr<Store>> open(std::shared_ptr<const Kek> k = kek()) { return open_sqlite_store(dir.path / "otac.db", std::move(k)); }
};

struct PgBackend {
  static constexpr bool kLeases = true;
  std::string conninfo;
  PgBackend() {
    std::string why;
    auto* cluster = otac::pgtest::PgCluster::shared(&why);
    if (!cluster) FAIL("no PostgreSQL cluster for the conformance suite: " << why);
    conninfo = cluster->create_database();
  }
  Result<std::unique_ptr<Store>> open(std::shared_ptr<const Kek> k = kek()) {
    PgOptions o;
    o.conninfo = conninfo;
    o.start_attempts = 2;
    return open_pg_store(o, std::move(k));
  }
};

template <class B>
std::unique_ptr<Store> must_open(B& b) {
  auto s = b.open();
  REQUIRE(s);
  return std::move(*s);
}

// n connections to the same store (n nodes, for PostgreSQL).
template <class B>
std::vector<std::unique_ptr<Store>> open_stores(B& b, int n) {
  std::vector<std::unique_ptr<Store>> stores;
  for (int i = 0; i < n; ++i) stores.push_back(must_open(b));
  return stores;
}

const Bytes kN = hex("1122334455667788");

CardRecord card(ByteView n = kN, std::string msisdn = "+4915550001") {
  CardRecord c;
  c.n.assign(n.begin(), n.end());
  c.msisdn = std::move(msisdn);
  c.k = SecretBytes(Bytes(16, 0x4B));
  c.created_at = 1000;
  return c;
}

// A card with K, K' and a retired K, a public key and a currency of its own.
CardRecord card_with_every_key() {
  CardRecord c = card();
  c.pending_k = SecretBytes(Bytes(16, 0x50));
  c.pending_version = 2;
  c.retired_k = SecretBytes(Bytes(16, 0x52));
  c.retired_version = 7;
  c.public_key = Bytes{0x30, 0x59};
  c.currency = 978;
  return c;
}

std::vector<SecretBytes> codes(int count, std::uint8_t seed) {
  std::vector<SecretBytes> v;
  for (int i = 0; i < count; ++i) v.emplace_back(Bytes(16, static_cast<std::uint8_t>(seed + i)));
  return v;
}

TransactionRecord txn(const std::string& id, Decision d = Decision::approved, UnixTime at = 2000) {
  TransactionRecord t;
  t.txn_id = id;
  t.request_hash = Bytes(32, 0x11);
  t.card = kN;
  t.list_id = 1;
  t.terminal_id = "TERM0001";
  t.amount_minor = 1234;
  t.currency = 978;
  t.decision = d;
  t.reason = d == Decision::approved ? "ok" : "held";
  t.auth_code = "123456";
  t.arc = to_bytes("00");
  t.arpc = Bytes(8, 0xA5);
  t.cryptogram = Bytes(8, 0x5A);
  t.created_at = at;
  t.decided_at = d == Decision::held ? 0 : at;
  t.expires_at = d == Decision::held ? at + 120 : 0;
  return t;
}

// Runs fn in one transaction and requires it to commit.
void run_ok(Store& s, const std::function<Result<void>(Tx&)>& fn) {
  auto r = s.run(fn);
  INFO((r ? "" : r.error().message));
  REQUIRE(r);
}

// Starts `threads` threads that each call body(i) as close to the same moment as possible.
template <class F>
void race(int threads, F body) {
  std::atomic<int> ready{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) {
    ts.emplace_back([&, i] {
      ++ready;
      for (int spin = 0; spin < 1'000'000 && ready.load() < threads; ++spin) std::this_thread::yield();
      body(i);
    });
  }
  for (auto& t : ts) t.join();
}

}  // namespace

TEMPLATE_TEST_CASE("store: cards are inserted once, read with their keys, updated and found by number", "[store]",
                   SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  CardRecord c = card_with_every_key();
  run_ok(*s, [&](Tx& tx) { return tx.insert_card(c); });
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    auto dup = tx.insert_card(c);
    REQUIRE_FALSE(dup);
    CHECK(dup.error().code == Errc::conflict);
    // The transaction stays usable after the conflict, as in SQLite.
    auto got = tx.card(kN);
    REQUIRE(got);
    CHECK(got->k.view().size() == 16);
    CHECK(ct_equal(got->k.view(), c.k.view()));
    REQUIRE(got->pending_k);
    CHECK(ct_equal(got->pending_k->view(), c.pending_k->view()));
    CHECK(got->pending_version == 2);
    REQUIRE(got->retired_k);
    CHECK(got->retired_version == 7);
    CHECK(got->public_key == c.public_key);
    CHECK(got->currency == 978);
    CHECK(got->msisdn == "+4915550001");
    CHECK(got->created_at == 1000);
    got->status = CardStatus::blocked;
    got->fail_count = 5;
    got->pending_k.reset();
    got->list_push_in_flight = true;
    return tx.update_card(*got);
  });
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    auto got = tx.card(kN);
    REQUIRE(got);
    CHECK(got->status == CardStatus::blocked);
    CHECK(got->fail_count == 5);
    CHECK_FALSE(got->pending_k);
    CHECK(got->list_push_in_flight);
    CHECK(tx.card_by_msisdn("+4915550001").value() == kN);
    auto none = tx.card(hex("0000000000000000"));
    REQUIRE_FALSE(none);
    CHECK(none.error().code == Errc::not_found);
    CHECK(tx.card_by_msisdn("+1").error().code == Errc::not_found);
    auto ghost = card(hex("0000000000000001"));
    CHECK(tx.update_card(ghost).error().code == Errc::not_found);
    return {};
  });
}

TEMPLATE_TEST_CASE("store: a card read without its keys has every other field and cannot be written back", "[store]",
                   SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  CardRecord c = card_with_every_key();
  c.review_minor = 4200;
  c.cash_daily_minor = 30000;
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(c); !e) return e;
    auto full = tx.card(kN);
    REQUIRE(full);
    full->fail_count = 3;
    full->list_push_in_flight = true;
    return tx.update_card(*full);
  });
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    auto full = tx.card(kN);
    auto state = tx.card_state(kN);
    REQUIRE(full);
    REQUIRE(state);
    CHECK_FALSE(full->keys_withheld);
    CHECK(state->keys_withheld);
    CHECK(state->k.view().empty());
    CHECK_FALSE(state->pending_k);
    CHECK_FALSE(state->retired_k);
    CHECK(state->n == full->n);
    CHECK(state->algorithm == full->algorithm);
    CHECK(state->msisdn == full->msisdn);
    CHECK(state->status == full->status);
    CHECK(state->fail_count == 3);
    CHECK(state->fail_limit == full->fail_limit);
    CHECK(state->threshold == full->threshold);
    CHECK(state->limit_minor == full->limit_minor);
    CHECK(state->review_minor == 4200);
    CHECK(state->currency == 978);
    CHECK(state->cash_daily_minor == std::optional<std::int64_t>(30000));
    CHECK(state->key_version == full->key_version);
    CHECK(state->pending_version == 2);
    CHECK(state->retired_version == 7);
    CHECK(state->public_key == full->public_key);
    CHECK(state->list_push_in_flight);
    CHECK(state->created_at == full->created_at);
    // Written back, its empty keys would erase the stored ones: refused, and nothing changes.
    state->fail_count = 0;
    auto w = tx.update_card(*state);
    REQUIRE_FALSE(w);
    CHECK(w.error().code == Errc::internal);
    auto after = tx.card(kN);
    REQUIRE(after);
    CHECK(after->fail_count == 3);
    CHECK(ct_equal(after->k.view(), c.k.view()));
    REQUIRE(after->pending_k);
    CHECK(ct_equal(after->pending_k->view(), c.pending_k->view()));
    CHECK(tx.card_state(hex("0000000000000000")).error().code == Errc::not_found);
    return {};
  });
}

TEMPLATE_TEST_CASE("store: door permissions are replaced as a whole", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    if (auto e = tx.set_doors(kN, {{"B", 60, 120, "Europe/Berlin"}, {"A", 0, 1440, "UTC"}}); !e) return e;
    auto d = tx.doors(kN);
    REQUIRE(d);
    REQUIRE(d->size() == 2);
    CHECK((*d)[0].door == "A");
    CHECK((*d)[1].tz == "Europe/Berlin");
    CHECK((*d)[1].from_minute == 60);
    if (auto e = tx.set_doors(kN, {{"C", 1, 2, "UTC"}}); !e) return e;
    CHECK(tx.doors(kN)->size() == 1);
    CHECK(tx.doors(hex("0000000000000000"))->empty());
    return {};
  });
}

TEMPLATE_TEST_CASE("store: lists and codes: insert, read, count, consume once, states and display candidates", "[store]",
                   SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    CHECK(tx.last_list_id(kN).value() == 0);
    if (auto e = tx.insert_list(kN, 1, codes(5, 0x10), 3000); !e) return e;
    if (auto e = tx.insert_list(kN, 2, codes(5, 0x20), 3001); !e) return e;
    auto dup = tx.insert_list(kN, 2, codes(1, 0x30), 3002);
    REQUIRE_FALSE(dup);
    CHECK(dup.error().code == Errc::conflict);
    CHECK(tx.last_list_id(kN).value() == 2);
    auto o = tx.otac(kN, 2, 3);
    REQUIRE(o);
    CHECK(o->key.view()[0] == 0x23);
    CHECK_FALSE(o->used);
    CHECK(tx.otac(kN, 3, 0).error().code == Errc::not_found);
    CHECK(tx.unused_count(kN).value() == 10);
    CHECK(tx.unused_more_than(kN, 9).value());
    CHECK_FALSE(tx.unused_more_than(kN, 10).value());
    // Nothing consumed: the first codes of the first lists.
    auto first = tx.display_candidates(kN, 2, 1);
    REQUIRE(first);
    REQUIRE(first->size() == 4);
    CHECK((*first)[2].list_id == 2);
    CHECK(tx.consume_otac(kN, 1, 2, "t1", 3100).value());
    CHECK_FALSE(tx.consume_otac(kN, 1, 2, "t2", 3101).value());  // at most once
    CHECK_FALSE(tx.consume_otac(kN, 9, 9, "t3", 3101).value());  // no such code
    CHECK(tx.otac(kN, 1, 2)->used);
    auto low = tx.lowest_unused(kN, 3);
    REQUIRE(low);
    REQUIRE(low->size() == 3);
    CHECK((*low)[2].index == 3);  // 1/0, 1/1, 1/3: 1/2 is used
    auto after = tx.display_candidates(kN, 2, 1);
    REQUIRE(after);
    REQUIRE(after->size() == 4);
    CHECK((*after)[0].index == 3);  // after the highest consumed code of list 1
    CHECK((*after)[2].list_id == 2);
    // Refused withdraws the unused codes, loaded gives them back.
    if (auto e = tx.set_list_state(kN, 2, ListState::refused, "rsc=07", 3200); !e) return e;
    CHECK(tx.unused_count(kN).value() == 4);
    CHECK_FALSE(tx.consume_otac(kN, 2, 0, "t4", 3201).value());
    auto ls = tx.lists(kN);
    REQUIRE(ls);
    REQUIRE(ls->size() == 2);
    CHECK((*ls)[1].state == ListState::refused);
    CHECK((*ls)[1].refusal == "rsc=07");
    CHECK((*ls)[1].count == 5);
    CHECK((*ls)[1].unused == 0);
    CHECK((*ls)[0].unused == 4);
    if (auto e = tx.set_list_state(kN, 2, ListState::loaded, "", 3300); !e) return e;
    CHECK(tx.unused_count(kN).value() == 9);
    CHECK(tx.set_list_state(kN, 7, ListState::loaded, "", 3300).error().code == Errc::not_found);
    return {};
  });
}

TEMPLATE_TEST_CASE("store: OTA counters, sent packets and the lists to repair", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    CHECK(tx.next_ota_counter(kN).value() == 1);
    CHECK(tx.next_ota_counter(kN).value() == 2);
    CHECK(tx.next_ota_counter(hex("0000000000000000")).error().code == Errc::not_found);
    CHECK(tx.card_counter(kN).value() == 0);
    if (auto e = tx.set_card_counter(kN, 41); !e) return e;
    CHECK(tx.card_counter(kN).value() == 41);
    CHECK(tx.card_counter(hex("0000000000000000")).error().code == Errc::not_found);
    if (auto e = tx.insert_list(kN, 1, codes(3, 0x10), 100); !e) return e;
    if (auto e = tx.record_ota_sent(kN, 1, "list", 1, 100); !e) return e;
    CHECK(tx.record_ota_sent(kN, 1, "list", 1, 100).error().code == Errc::conflict);
    auto sent = tx.ota_sent(kN, 1);
    REQUIRE(sent);
    CHECK(std::get<0>(*sent) == "list");
    CHECK(std::get<1>(*sent) == 1);
    CHECK(std::get<2>(*sent) == -1);
    CHECK(tx.ota_sent(kN, 9).error().code == Errc::not_found);
    CHECK(tx.latest_ota_sent(kN, "list", 1).value() == 1);
    CHECK(tx.latest_ota_sent(kN, "rotate", 1).value() == 0);
    // Unanswered: due for repair once `after` seconds passed, not before.
    CHECK(tx.lists_to_repair(129, 30, 5, 10)->empty());
    auto due = tx.lists_to_repair(130, 30, 5, 10);
    REQUIRE(due);
    REQUIRE(due->size() == 1);
    CHECK(due->front().list_id == 1);
    CHECK(due->front().packets == 1);
    CHECK(tx.lists_to_repair(130, 30, 1, 10)->empty());  // max_packets reached
    if (auto e = tx.set_ota_rsc(kN, 1, 0); !e) return e;
    CHECK(std::get<2>(tx.ota_sent(kN, 1).value()) == 0);
    CHECK(tx.lists_to_repair(1000, 30, 5, 10)->empty());  // answered
    return {};
  });
}

TEMPLATE_TEST_CASE("store: the rotations to repair: a pending key whose latest E2 has no PoR", "[store]", SqliteBackend,
                   PgBackend) {
  TestType b;
  auto s = must_open(b);
  const Bytes other = hex("8877665544332211");
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card_with_every_key()); !e) return e;  // K' version 2 pending
    if (auto e = tx.insert_card(card(other, "+4915550002")); !e) return e;  // not rotating
    // An E2 for an older key, a list and the other card's E2 do not count.
    if (auto e = tx.record_ota_sent(kN, 1, "rotate", 1, 100); !e) return e;
    if (auto e = tx.record_ota_sent(kN, 2, "list", 2, 100); !e) return e;
    if (auto e = tx.record_ota_sent(other, 1, "rotate", 2, 100); !e) return e;
    CHECK(tx.rotations_to_repair(100000, 30, 5, 10)->empty());
    if (auto e = tx.record_ota_sent(kN, 3, "rotate", 2, 200); !e) return e;
    CHECK(tx.rotations_to_repair(229, 30, 5, 10)->empty());
    auto due = tx.rotations_to_repair(230, 30, 5, 10);
    REQUIRE(due);
    REQUIRE(due->size() == 1);
    CHECK(due->front().n == kN);
    CHECK(due->front().version == 2);
    CHECK(due->front().packets == 1);
    // A second E2: twice the wait after it, and max_packets counts both.
    if (auto e = tx.record_ota_sent(kN, 4, "rotate", 2, 230); !e) return e;
    CHECK(tx.rotations_to_repair(289, 30, 5, 10)->empty());
    REQUIRE(tx.rotations_to_repair(290, 30, 5, 10)->size() == 1);
    CHECK(tx.rotations_to_repair(290, 30, 5, 10)->front().packets == 2);
    CHECK(tx.rotations_to_repair(100000, 30, 2, 10)->empty());
    // A PoR for the latest E2, even a refusal, ends it: the PoR handling decides from there.
    if (auto e = tx.set_ota_rsc(kN, 4, 2); !e) return e;
    CHECK(tx.rotations_to_repair(100000, 30, 5, 10)->empty());
    if (auto e = tx.set_ota_rsc(kN, 4, -1); !e) return e;
    REQUIRE(tx.rotations_to_repair(100000, 30, 5, 10)->size() == 1);
    // Once the key is confirmed, nothing is pending.
    auto c = tx.card(kN);
    if (!c) return c.error();
    c->k = std::move(*c->pending_k);
    c->pending_k.reset();
    c->key_version = 2;
    c->pending_version = 0;
    if (auto e = tx.update_card(*c); !e) return e;
    CHECK(tx.rotations_to_repair(100000, 30, 5, 10)->empty());
    return {};
  });
}

TEMPLATE_TEST_CASE("store: the E3 and E4 packets to repair: the latest of its kind without a PoR", "[store]",
                   SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  const Bytes other = hex("8877665544332211");
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    if (auto e = tx.insert_card(card(other, "+4915550002")); !e) return e;
    // Lists and E2 are repaired by their own rounds; an answered E4 is not due.
    if (auto e = tx.record_ota_sent(kN, 1, "list", 1, 100); !e) return e;
    if (auto e = tx.record_ota_sent(kN, 2, "rotate", 2, 100); !e) return e;
    if (auto e = tx.record_ota_sent(other, 1, "server_key", 0, 100); !e) return e;
    if (auto e = tx.set_ota_rsc(other, 1, 0); !e) return e;
    CHECK(tx.key_packets_to_repair(100000, 30, 5, 10)->empty());
    if (auto e = tx.record_ota_sent(kN, 3, "server_key", 0, 200); !e) return e;
    if (auto e = tx.record_ota_sent(kN, 4, "sig_key", 0, 210); !e) return e;
    CHECK(tx.key_packets_to_repair(229, 30, 5, 10)->empty());
    auto due = tx.key_packets_to_repair(230, 30, 5, 10);
    REQUIRE(due);
    REQUIRE(due->size() == 1);
    CHECK(due->front().n == kN);
    CHECK(due->front().kind == "server_key");
    CHECK(due->front().packets == 1);
    REQUIRE(tx.key_packets_to_repair(240, 30, 5, 10)->size() == 2);
    // A second unanswered E4: twice the wait after it; max_packets counts both.
    if (auto e = tx.record_ota_sent(kN, 5, "server_key", 0, 240); !e) return e;
    auto later = tx.key_packets_to_repair(299, 30, 5, 10);
    REQUIRE(later->size() == 1);
    CHECK(later->front().kind == "sig_key");
    auto both = tx.key_packets_to_repair(300, 30, 5, 10);
    REQUIRE(both->size() == 2);
    CHECK(both->front().kind == "server_key");
    CHECK(both->front().packets == 2);
    CHECK(tx.key_packets_to_repair(100000, 30, 2, 10)->size() == 1);  // E4: max_packets reached
    // A PoR for the latest E4 ends it, even while older ones stay unanswered.
    if (auto e = tx.set_ota_rsc(kN, 5, 0); !e) return e;
    auto left = tx.key_packets_to_repair(100000, 30, 5, 10);
    REQUIRE(left->size() == 1);
    CHECK(left->front().kind == "sig_key");
    if (auto e = tx.set_ota_rsc(kN, 4, 2); !e) return e;
    CHECK(tx.key_packets_to_repair(100000, 30, 5, 10)->empty());
    return {};
  });
}

TEMPLATE_TEST_CASE("store: transactions: insert once, decide a held one once, filter, expire and prune", "[store]",
                   SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_transaction(txn("a", Decision::approved, 100)); !e) return e;
    if (auto e = tx.insert_transaction(txn("b", Decision::held, 200)); !e) return e;
    if (auto e = tx.insert_transaction(txn("c", Decision::declined, 300)); !e) return e;
    CHECK(tx.insert_transaction(txn("a")).error().code == Errc::conflict);
    auto a = tx.transaction("a");
    REQUIRE(a);
    CHECK(a->request_hash == Bytes(32, 0x11));
    CHECK(a->arpc == Bytes(8, 0xA5));
    CHECK(a->cryptogram == Bytes(8, 0x5A));
    CHECK(a->currency == 978);
    CHECK(tx.transaction("zz").error().code == Errc::not_found);
    CHECK(tx.held_due(319, 10)->empty());
    CHECK(tx.held_due(320, 10)->size() == 1);
    auto d = txn("b", Decision::approved, 200);
    d.decided_at = 250;
    d.decided_by = "alice";
    CHECK(tx.decide_held_transaction(d).value());
    d.decided_by = "bob";
    CHECK_FALSE(tx.decide_held_transaction(d).value());
    CHECK(tx.transaction("b")->decided_by == "alice");
    TransactionFilter f;
    auto all = tx.transactions(f);
    REQUIRE(all);
    REQUIRE(all->size() == 3);
    CHECK(all->front().txn_id == "c");  // newest first
    f.decision = Decision::approved;
    CHECK(tx.transactions(f)->size() == 2);
    f = {};
    f.since = 150;
    f.until = 300;
    CHECK(tx.transactions(f)->size() == 1);
    f = {};
    f.terminal_id = "OTHER000";
    CHECK(tx.transactions(f)->empty());
    f = {};
    f.card = hex("0000000000000000");
    CHECK(tx.transactions(f)->empty());
    CHECK(tx.prune_declined(300, 10).value() == 0);
    CHECK(tx.prune_declined(301, 10).value() == 1);
    CHECK(tx.transaction("c").error().code == Errc::not_found);
    return {};
  });
}

TEMPLATE_TEST_CASE("store: terminals and operators are replaced by id and found by token", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.put_terminal({"TERM0001", "aa", 100, true}); !e) return e;
    if (auto e = tx.put_terminal({"TERM0001", "bb", 0, false}); !e) return e;
    auto t = tx.terminal("TERM0001");
    REQUIRE(t);
    CHECK(t->cert_fingerprint == "bb");
    CHECK_FALSE(t->enabled);
    CHECK(tx.terminal("NONE0000").error().code == Errc::not_found);
    // An id with a NUL inside is never cut short to another id (libpq passes text parameters
    // as C strings), and the transaction goes on usable afterwards.
    const std::string with_nul("TERM0001\0XY", 11);
    CHECK_FALSE(tx.terminal(with_nul));
    CHECK(tx.terminal("TERM0001"));
    if (auto e = tx.put_operator({"alice", Role::admin, Bytes(32, 1)}); !e) return e;
    if (auto e = tx.put_operator({"alice", Role::viewer, Bytes(32, 2)}); !e) return e;
    CHECK(tx.operator_by_token_hash(Bytes(32, 1)).error().code == Errc::not_found);
    auto op = tx.operator_by_token_hash(Bytes(32, 2));
    REQUIRE(op);
    CHECK(op->name == "alice");
    CHECK(op->role == Role::viewer);
    return {};
  });
}

TEMPLATE_TEST_CASE("store: the SMS outbox queues, is due by time, updates and counts", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    OutboxMessage m;
    m.card = kN;
    m.to = "+4915550001";
    m.udh = Bytes{0x70, 0x00};
    m.payload = Bytes(40, 0x33);
    m.next_attempt_at = 10;
    m.created_at = 5;
    auto id1 = tx.enqueue_sms(m);
    REQUIRE(id1);
    m.next_attempt_at = 20;
    auto id2 = tx.enqueue_sms(m);
    REQUIRE(id2);
    CHECK(*id2 > *id1);
    CHECK(tx.outbox_depth().value() == 2);
    CHECK(tx.due_sms(9, 10)->empty());
    auto due = tx.due_sms(15, 10);
    REQUIRE(due);
    REQUIRE(due->size() == 1);
    CHECK(due->front().payload == Bytes(40, 0x33));
    CHECK(due->front().udh == (Bytes{0x70, 0x00}));
    auto got = tx.sms(*id1);
    REQUIRE(got);
    got->status = OutboxStatus::sent;
    got->attempts = 1;
    got->last_reply = "202";
    if (auto e = tx.update_sms(*got); !e) return e;
    CHECK(tx.outbox_depth().value() == 1);
    CHECK(tx.sms(*id1)->last_reply == "202");
    CHECK(tx.sms(999).error().code == Errc::not_found);
    got->id = 999;
    CHECK(tx.update_sms(*got).error().code == Errc::not_found);
    auto leased = tx.lease_due_sms(20, 20 + kSmsLeaseSeconds, 10);
    REQUIRE(leased);
    REQUIRE(leased->size() == 1);
    CHECK(leased->front().id == *id2);
    // A store shared by nodes leases: the message is not due again before the lease ends.
    CHECK(tx.due_sms(21, 10)->size() == (TestType::kLeases ? 0U : 1U));
    CHECK(tx.due_sms(20 + kSmsLeaseSeconds, 10)->size() == 1);
    return {};
  });
}

TEMPLATE_TEST_CASE("store: server keys and card security are sealed, bound to their row, and replaced", "[store]",
                   SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    CHECK(tx.server_key("server").error().code == Errc::not_found);
    ServerKeyRecord k;
    k.name = "server";
    k.private_der = SecretBytes(Bytes(70, 0x61));
    k.public_point = Bytes(65, 0x04);
    k.created_at = 9;
    if (auto e = tx.insert_server_key(k); !e) return e;
    CHECK(tx.insert_server_key(k).error().code == Errc::conflict);
    auto got = tx.server_key("server");
    REQUIRE(got);
    CHECK(ct_equal(got->private_der.view(), k.private_der.view()));
    CHECK(got->public_point == k.public_point);
    CHECK_FALSE(tx.card_security(kN)->sig_key);
    CardSecurity sec;
    sec.sig_key = SecretBytes(Bytes(16, 0x53));
    sec.pending_sig_counter = 4;
    sec.server_point = Bytes(65, 0x04);
    if (auto e = tx.set_card_security(kN, sec); !e) return e;
    sec.pending_sig_key = SecretBytes(Bytes(16, 0x54));
    sec.sig_since = 12;
    if (auto e = tx.set_card_security(kN, sec); !e) return e;
    auto cs = tx.card_security(kN);
    REQUIRE(cs);
    REQUIRE(cs->sig_key);
    REQUIRE(cs->pending_sig_key);
    CHECK(cs->pending_sig_key->view()[0] == 0x54);
    CHECK(cs->sig_since == 12);
    CHECK(cs->pending_sig_counter == 4);
    CHECK(cs->server_point == Bytes(65, 0x04));
    return {};
  });
  // Another KEK opens none of it: bad_mac, never a wrong key.
  auto other = b.open(std::make_shared<const Kek>(Kek::from_bytes(SecretBytes(Bytes(32, 0x42)))));
  REQUIRE(other);
  auto r = (*other)->run([&](Tx& tx) -> Result<void> {
    CHECK(tx.card(kN).error().code == Errc::bad_mac);
    CHECK(tx.server_key("server").error().code == Errc::bad_mac);
    CHECK(tx.card_security(kN).error().code == Errc::bad_mac);
    return {};
  });
  CHECK(r);
}

TEMPLATE_TEST_CASE("store: the audit log is one verifiable chain", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    CHECK(tx.verify_audit_chain().value() == 0);
    for (int i = 1; i <= 5; ++i) CHECK(tx.audit(i, "admin", "enroll", "card " + std::to_string(i)).value() == i);
    CHECK(tx.verify_audit_chain().value() == 5);
    auto after = tx.audit_entries(3, 10);
    REQUIRE(after);
    REQUIRE(after->size() == 2);
    CHECK(after->front().seq == 4);
    auto recent = tx.audit_recent(2);
    REQUIRE(recent);
    REQUIRE(recent->size() == 2);
    CHECK(recent->front().seq == 4);
    CHECK(recent->back().detail == "card 5");
    return {};
  });
  // With another KEK the chain does not verify: entry 1 names itself.
  auto other = b.open(std::make_shared<const Kek>(Kek::from_bytes(SecretBytes(Bytes(32, 0x42)))));
  REQUIRE(other);
  CHECK((*other)->run([&](Tx& tx) -> Result<void> {
    auto v = tx.verify_audit_chain();
    REQUIRE_FALSE(v);
    CHECK(v.error().code == Errc::bad_mac);
    CHECK(v.error().message.find("entry 1") != std::string::npos);
    return {};
  }));
}

TEMPLATE_TEST_CASE("store: a failing transaction leaves nothing behind", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  auto r = s->run([&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    (void)tx.audit(1, "admin", "enroll", "x");
    return make_error(Errc::state, "changed my mind");
  });
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "changed my mind");
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    CHECK(tx.card(kN).error().code == Errc::not_found);
    CHECK(tx.verify_audit_chain().value() == 0);
    return {};
  });
  CHECK_THROWS(s->run([&](Tx& tx) -> Result<void> {
    (void)tx.insert_card(card());
    throw std::runtime_error("boom");
  }));
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    CHECK(tx.card(kN).error().code == Errc::not_found);
    return {};
  });
}

// ---- concurrency: each thread has its own Store (its own connection for PostgreSQL) --------

TEMPLATE_TEST_CASE("store race: a code raced from many connections is consumed exactly once", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  constexpr int kThreads = 8, kCodes = 20;
  std::vector<std::unique_ptr<Store>> stores;
  for (int i = 0; i < kThreads; ++i) stores.push_back(must_open(b));
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    return tx.insert_list(kN, 1, codes(kCodes, 0), 1);
  });
  std::vector<std::atomic<int>> wins(kCodes);
  std::atomic<int> failures{0};
  race(kThreads, [&](int t) {
    for (int code = 0; code < kCodes; ++code) {
      auto r = stores[static_cast<std::size_t>(t)]->run([&](Tx& tx) -> Result<void> {
        auto won = tx.consume_otac(kN, 1, static_cast<std::uint16_t>(code), "t" + std::to_string(t), 5);
        if (!won) return won.error();
        if (*won) ++wins[static_cast<std::size_t>(code)];
        return {};
      });
      if (!r) ++failures;
    }
  });
  CHECK(failures == 0);
  for (int code = 0; code < kCodes; ++code) CHECK(wins[static_cast<std::size_t>(code)] == 1);
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    CHECK(tx.unused_count(kN).value() == 0);
    return {};
  });
}

TEMPLATE_TEST_CASE("store race: a request raced under one transaction id is recorded once and answered alike", "[store]",
                   SqliteBackend, PgBackend) {
  TestType b;
  constexpr int kThreads = 8;
  std::vector<std::unique_ptr<Store>> stores;
  for (int i = 0; i < kThreads; ++i) stores.push_back(must_open(b));
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    return tx.insert_list(kN, 1, codes(1, 0), 1);
  });
  // The service's pattern: look the id up, else consume the code and record the decision.
  std::vector<std::string> answers(kThreads);
  std::atomic<int> consumed{0}, failures{0};
  race(kThreads, [&](int t) {
    auto r = stores[static_cast<std::size_t>(t)]->run([&](Tx& tx) -> Result<void> {
      if (auto seen = tx.transaction("same"); seen) {
        answers[static_cast<std::size_t>(t)] = seen->reason;
        return {};
      }
      auto won = tx.consume_otac(kN, 1, 0, "same", 5);
      if (!won) return won.error();
      auto rec = txn("same", *won ? Decision::approved : Decision::declined);
      rec.reason = *won ? "ok" : "code_used";
      if (auto e = tx.insert_transaction(rec); !e) return e;
      if (*won) ++consumed;
      answers[static_cast<std::size_t>(t)] = rec.reason;
      return {};
    });
    if (!r) ++failures;
  });
  CHECK(failures == 0);
  CHECK(consumed == 1);
  for (const auto& a : answers) CHECK(a == "ok");  // every retry sees the first decision
}

TEMPLATE_TEST_CASE("store race: a held transaction raced by operators is decided once", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  constexpr int kThreads = 8;
  std::vector<std::unique_ptr<Store>> stores;
  for (int i = 0; i < kThreads; ++i) stores.push_back(must_open(b));
  run_ok(*stores[0], [&](Tx& tx) { return tx.insert_transaction(txn("held", Decision::held)); });
  std::vector<int> won(kThreads, 0);
  race(kThreads, [&](int t) {
    (void)stores[static_cast<std::size_t>(t)]->run([&](Tx& tx) -> Result<void> {
      auto d = txn("held", t % 2 ? Decision::approved : Decision::declined);
      d.decided_by = "op" + std::to_string(t);
      auto w = tx.decide_held_transaction(d);
      if (!w) return w.error();
      won[static_cast<std::size_t>(t)] = *w ? 1 : 0;
      return {};
    });
  });
  CHECK(std::count(won.begin(), won.end(), 1) == 1);
  const auto winner = std::find(won.begin(), won.end(), 1) - won.begin();
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    CHECK(tx.transaction("held")->decided_by == "op" + std::to_string(winner));
    return {};
  });
}

TEMPLATE_TEST_CASE("store race: a card's fail counter loses no increment and blocks once", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  constexpr int kThreads = 6, kEach = 10;
  std::vector<std::unique_ptr<Store>> stores;
  for (int i = 0; i < kThreads; ++i) stores.push_back(must_open(b));
  auto c = card();
  c.fail_limit = kThreads * kEach;
  run_ok(*stores[0], [&](Tx& tx) { return tx.insert_card(c); });
  std::atomic<int> blocked_by{0}, failures{0};
  race(kThreads, [&](int t) {
    for (int i = 0; i < kEach; ++i) {
      auto r = stores[static_cast<std::size_t>(t)]->run([&](Tx& tx) -> Result<void> {
        auto got = tx.card(kN);
        if (!got) return got.error();
        ++got->fail_count;
        const bool blocks = got->fail_count >= got->fail_limit && got->status == CardStatus::active;
        if (blocks) got->status = CardStatus::blocked;
        if (auto e = tx.update_card(*got); !e) return e;
        if (blocks) ++blocked_by;
        return {};
      });
      if (!r) ++failures;
    }
  });
  CHECK(failures == 0);
  CHECK(blocked_by == 1);
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    auto got = tx.card(kN);
    REQUIRE(got);
    CHECK(got->fail_count == kThreads * kEach);
    CHECK(got->status == CardStatus::blocked);
    return {};
  });
}

TEMPLATE_TEST_CASE("store race: audit appends from many connections form one chain", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  constexpr int kThreads = 6, kEach = 15;
  std::vector<std::unique_ptr<Store>> stores;
  for (int i = 0; i < kThreads; ++i) stores.push_back(must_open(b));
  std::atomic<int> failures{0};
  race(kThreads, [&](int t) {
    for (int i = 0; i < kEach; ++i) {
      auto r = stores[static_cast<std::size_t>(t)]->run([&](Tx& tx) -> Result<void> {
        auto seq = tx.audit(i, "node" + std::to_string(t), "authorize", "entry " + std::to_string(i));
        if (!seq) return seq.error();
        return {};
      });
      if (!r) ++failures;
    }
  });
  CHECK(failures == 0);
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    CHECK(tx.verify_audit_chain().value() == kThreads * kEach);
    return {};
  });
}

TEMPLATE_TEST_CASE("store race: leased outbox messages go to one sender each", "[store]", SqliteBackend, PgBackend) {
  TestType b;
  if (!TestType::kLeases) {
    SUCCEED("one node per SQLite store: lease_due_sms is due_sms (checked in the outbox case)");
    return;
  }
  constexpr int kThreads = 4, kMessages = 60;
  std::vector<std::unique_ptr<Store>> stores;
  for (int i = 0; i < kThreads; ++i) stores.push_back(must_open(b));
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    for (int i = 0; i < kMessages; ++i) {
      OutboxMessage m;
      m.to = "+1";
      m.payload = Bytes(10, static_cast<std::uint8_t>(i));
      auto id = tx.enqueue_sms(m);
      if (!id) return id.error();
    }
    return {};
  });
  std::vector<std::vector<std::int64_t>> taken(kThreads);
  race(kThreads, [&](int t) {
    for (int round = 0; round < 20; ++round) {
      (void)stores[static_cast<std::size_t>(t)]->run([&](Tx& tx) -> Result<void> {
        auto due = tx.lease_due_sms(100, 100 + kSmsLeaseSeconds, 5);
        if (!due) return due.error();
        for (const auto& m : *due) taken[static_cast<std::size_t>(t)].push_back(m.id);
        return {};
      });
    }
  });
  std::multiset<std::int64_t> all;
  for (const auto& v : taken) all.insert(v.begin(), v.end());
  CHECK(all.size() == static_cast<std::size_t>(kMessages));
  CHECK(std::set<std::int64_t>(all.begin(), all.end()).size() == all.size());  // no message twice
  // A sender killed before mark_sent: once the lease ends, another node takes its messages.
  run_ok(*stores[1], [&](Tx& tx) -> Result<void> {
    CHECK(tx.lease_due_sms(100 + kSmsLeaseSeconds - 1, 1000, 100)->empty());
    CHECK(tx.lease_due_sms(100 + kSmsLeaseSeconds, 1000, 100)->size() == static_cast<std::size_t>(kMessages));
    return {};
  });
}

TEMPLATE_TEST_CASE("store: outcomes, cash withdrawals and refunds are written once, and totals follow reversals",
                   "[store]", SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    if (auto e = tx.put_terminal({"ATM00001", "aa", 0, true}); !e) return e;
    // A reversal that arrives before its authorization: the withdrawal is stored settled.
    CHECK(tx.set_outcome({"W0", Outcome::reversed, 0, "ATM00001", 90}, std::nullopt).value());
    if (auto e = tx.insert_cash({"W0", kN, "ATM00001", 5000, 100}); !e) return e;
    if (auto e = tx.insert_cash({"W1", kN, "ATM00001", 30000, 100}); !e) return e;
    if (auto e = tx.insert_cash({"W2", kN, "ATM00002", 20000, 100}); !e) return e;
    if (auto e = tx.insert_cash({"W3", kN, "ATM00001", 1000, 10}); !e) return e;  // before `since`
    CHECK(tx.insert_cash({"W1", kN, "ATM00001", 1, 100}).error().code == Errc::conflict);
    auto w1 = tx.cash("W1");
    REQUIRE(w1);
    REQUIRE(w1->has_value());
    CHECK((*w1)->amount_minor == 30000);
    CHECK((*w1)->terminal_id == "ATM00001");
    CHECK_FALSE(tx.cash("NONE").value().has_value());
    auto totals = tx.cash_totals(kN, "ATM00001", 50);
    REQUIRE(totals);
    CHECK(totals->card_minor == 0 + 30000 + 20000);  // W0 reversed with nothing handed over
    CHECK(totals->terminal_minor == 30000);
    // Open withdrawals: W1, W2 and W3 have no outcome; W0 has one.
    auto open = tx.cash_unsettled(200, 10);
    REQUIRE(open);
    std::set<std::string> ids;
    for (const auto& c : *open) ids.insert(c.txn_id);
    CHECK(ids == std::set<std::string>{"W1", "W2", "W3"});
    // W1 partly dispensed: reversed with 100.00 handed over; a second first outcome loses.
    CHECK(tx.set_outcome({"W1", Outcome::reversed, 10000, "ATM00001", 150}, std::nullopt).value());
    CHECK_FALSE(tx.set_outcome({"W1", Outcome::completed, 30000, "ATM00001", 151}, std::nullopt).value());
    CHECK_FALSE(tx.set_outcome({"W1", Outcome::completed, 30000, "ATM00001", 151}, Outcome::completed).value());
    auto o = tx.outcome("W1");
    REQUIRE(o);
    REQUIRE(o->has_value());
    CHECK((*o)->outcome == Outcome::reversed);
    CHECK((*o)->handed_minor == 10000);
    totals = tx.cash_totals(kN, "ATM00001", 50);
    REQUIRE(totals);
    CHECK(totals->card_minor == 10000 + 20000);
    CHECK(totals->terminal_minor == 10000);
    ids.clear();
    auto still_open = tx.cash_unsettled(200, 10);
    REQUIRE(still_open);
    for (const auto& c : *still_open) ids.insert(c.txn_id);
    CHECK(ids == std::set<std::string>{"W2", "W3"});
    // Refunds: one per purchase, decided once.
    CHECK(tx.put_refund({"P1", "TERM0001", 500, RefundState::pending, 300, "", 0}, std::nullopt).value());
    CHECK_FALSE(tx.put_refund({"P1", "TERM0001", 900, RefundState::pending, 301, "", 0}, std::nullopt).value());
    CHECK(tx.put_refund({"P1", "TERM0001", 500, RefundState::approved, 300, "alice", 310}, RefundState::pending).value());
    CHECK_FALSE(tx.put_refund({"P1", "TERM0001", 500, RefundState::declined, 300, "bob", 311}, RefundState::pending).value());
    auto r = tx.refund("P1");
    REQUIRE(r);
    REQUIRE(r->has_value());
    CHECK((*r)->state == RefundState::approved);
    CHECK((*r)->decided_by == "alice");
    CHECK((*r)->amount_minor == 500);
    CHECK(tx.refunds(RefundState::approved, 10).value().size() == 1);
    CHECK(tx.refunds(RefundState::pending, 10).value().empty());
    return {};
  });
}

TEMPLATE_TEST_CASE("store race: a daily cash limit raced from several connections and terminals is passed once", "[store]",
                   SqliteBackend, PgBackend) {
  TestType b;
  constexpr int kThreads = 6;
  std::vector<std::unique_ptr<Store>> stores;
  for (int i = 0; i < kThreads; ++i) stores.push_back(must_open(b));
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    for (int t = 0; t < kThreads; ++t)
      if (auto e = tx.put_terminal({"ATM0000" + std::to_string(t), "aa", 0, true}); !e) return e;
    return {};
  });
  // Each ATM withdraws 300.00 against a 500.00 daily card limit, as the Service does: the card
  // read first (the row every authorization of the card reads), then the totals, then the insert.
  std::atomic<int> approved{0}, failures{0};
  race(kThreads, [&](int t) {
    bool passed = false;
    auto r = stores[static_cast<std::size_t>(t)]->run([&](Tx& tx) -> Result<void> {
      passed = false;
      if (auto c = tx.card(kN); !c) return c.error();
      const std::string terminal = "ATM0000" + std::to_string(t);
      auto totals = tx.cash_totals(kN, terminal, 0);
      if (!totals) return totals.error();
      if (totals->card_minor + 30000 > 50000) return {};
      passed = true;
      return tx.insert_cash({"R" + std::to_string(t), kN, terminal, 30000, 100});
    });
    if (!r) ++failures;
    else if (passed) ++approved;
  });
  CHECK(failures == 0);
  CHECK(approved == 1);
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    CHECK(tx.cash_totals(kN, "ATM00000", 0).value().card_minor == 30000);
    return {};
  });
}

TEMPLATE_TEST_CASE("store race: a card's own daily cash limit is read with the card in the transaction that records the cash",
                   "[store]", SqliteBackend, PgBackend) {
  TestType b;
  constexpr int kThreads = 6;
  auto stores = open_stores(b, kThreads);
  // Unset (the backend's default), 0 (no cash) and a value are three different things.
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    CHECK_FALSE(tx.card(kN).value().cash_daily_minor);
    auto c = tx.card(kN).value();
    c.cash_daily_minor = 0;
    if (auto e = tx.update_card(c); !e) return e;
    CHECK(tx.card(kN).value().cash_daily_minor == std::optional<std::int64_t>(0));
    c.cash_daily_minor = 70000;
    if (auto e = tx.update_card(c); !e) return e;
    for (int t = 0; t < kThreads; ++t)
      if (auto e = tx.put_terminal({"ATM0000" + std::to_string(t), "aa", 0, true}); !e) return e;
    return {};
  });
  run_ok(*stores[1], [&](Tx& tx) -> Result<void> {
    CHECK(tx.card(kN).value().cash_daily_minor == std::optional<std::int64_t>(70000));
    return {};
  });
  // Each ATM withdraws 300.00 against the card's own 700.00, as the Service does: the limit
  // read from the card's row in the same transaction that reads the totals and records the
  // cash. Two pass, never three.
  auto withdraw = [&](Store& s, const std::string& id, const std::string& terminal, bool& passed) {
    return s.run([&](Tx& tx) -> Result<void> {
      passed = false;
      auto c = tx.card(kN);
      if (!c) return c.error();
      auto totals = tx.cash_totals(kN, terminal, 0);
      if (!totals) return totals.error();
      if (totals->card_minor + 30000 > c->cash_daily_minor.value_or(0)) return {};
      passed = true;
      return tx.insert_cash({id, kN, terminal, 30000, 100});
    });
  };
  std::atomic<int> approved{0}, failures{0};
  race(kThreads, [&](int t) {
    bool passed = false;
    auto r = withdraw(*stores[static_cast<std::size_t>(t)], "R" + std::to_string(t), "ATM0000" + std::to_string(t), passed);
    if (!r) ++failures;
    else if (passed) ++approved;
  });
  CHECK(failures == 0);
  CHECK(approved == 2);
  // Raised by an operator on one connection: the next withdrawal on another sees it.
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    auto c = tx.card(kN);
    if (!c) return c.error();
    c->cash_daily_minor = 90000;
    return tx.update_card(*c);
  });
  bool passed = false;
  REQUIRE(withdraw(*stores[2], "R-after", "ATM00002", passed));
  CHECK(passed);
  REQUIRE(withdraw(*stores[3], "R-over", "ATM00003", passed));
  CHECK_FALSE(passed);
  run_ok(*stores[0], [&](Tx& tx) -> Result<void> {
    CHECK(tx.cash_totals(kN, "ATM00000", 0).value().card_minor == 90000);
    return {};
  });
}

TEMPLATE_TEST_CASE("store: the operator listings: cards newest first, terminals by id, a card's queued messages",
                   "[store]", SqliteBackend, PgBackend) {
  TestType b;
  auto s = must_open(b);
  const Bytes n2 = hex("99AABBCCDDEEFF00");
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    if (auto e = tx.insert_card(card()); !e) return e;
    auto later = card(n2, "+4915550002");
    later.created_at = 2000;
    if (auto e = tx.insert_card(later); !e) return e;
    if (auto e = tx.put_terminal({"TERMB", "bb", 0, true}); !e) return e;
    if (auto e = tx.put_terminal({"TERMA", "aa", 0, false}); !e) return e;
    OutboxMessage m;
    m.card = kN;
    m.to = "+4915550001";
    m.payload = Bytes{1, 2, 3};
    m.next_attempt_at = 5;
    m.created_at = 5;
    if (auto e = tx.enqueue_sms(m); !e) return e.error();
    return {};
  });
  run_ok(*s, [&](Tx& tx) -> Result<void> {
    auto ids = tx.card_ids(10);
    REQUIRE(ids);
    REQUIRE(ids->size() == 2);
    CHECK((*ids)[0] == n2);
    CHECK((*ids)[1] == kN);
    CHECK(tx.card_ids(1).value().size() == 1);
    auto ts = tx.terminals(10);
    REQUIRE(ts);
    REQUIRE(ts->size() == 2);
    CHECK((*ts)[0].id == "TERMA");
    CHECK_FALSE((*ts)[0].enabled);
    CHECK((*ts)[1].id == "TERMB");
    CHECK(tx.queued_sms(kN, 10).value().size() == 1);
    CHECK(tx.queued_sms(n2, 10).value().empty());
    return {};
  });
}
