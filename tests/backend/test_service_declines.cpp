// Declines without bound: the decline limiter's buckets (per source and per card, injected
// clock), the service leaving suppressed declines unstored while approvals and declines that
// used up a code are always stored, and the retention of declined transactions.
#include <catch2/catch.hpp>

#include "decline_limit.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::Ch;
using otac::backend::test::Env;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

const Bytes kCardA = hex("1111111111111111");
const Bytes kCardB = hex("2222222222222222");

DeclineLimits small_limits() {
  DeclineLimits l;
  l.source_burst = 5;
  l.source_refill = seconds(2);
  l.card_burst = 3;
  l.card_refill = seconds(10);
  l.max_entries = 8;
  l.report_every = seconds(60);
  return l;
}

// Transactions in the store (all decisions).
std::size_t stored_transactions(Env& env) {
  TransactionFilter f;
  f.limit = 100000;
  auto v = env.svc->list_transactions(f);
  REQUIRE(v);
  return v->size();
}

std::size_t audit_actions(Env& env, std::string_view action) {
  auto v = env.svc->audit_log(0, 100000);
  REQUIRE(v);
  return static_cast<std::size_t>(std::count_if(v->begin(), v->end(), [&](const AuditEntry& e) { return e.action == action; }));
}

// A Service over env's database whose declines go through `limiter`.
void limit_declines(Env& env, DeclineLimiter& limiter) {
  env.config.record_decline = [&limiter](std::string_view t, ByteView c) { return limiter.admit(t, c); };
  env.svc = std::make_unique<Service>(env.config, [&env] { return open_sqlite_store(env.db, env.kek); },
                                      [&env] { return env.clock; });
}

// An authorization for a card nobody enrolled (declined unknown_card, uses up no code).
AuthRequest unknown_card(const std::string& txn, std::uint8_t card_byte, const Ch& ch = Ch{}) {
  AuthRequest a;
  a.txn_id = txn;
  a.card = Bytes(8, card_byte);
  a.challenge = ch.encode();
  a.cryptogram = Bytes(8, 0);
  return a;
}

}  // namespace

TEST_CASE("decline limiter: a source's and a card's bucket, refill, retry-after and the bound on memory") {
  std::chrono::steady_clock::time_point now{};
  DeclineLimiter lim(small_limits(), [&] { return now; });
  // The card's bucket (3) runs out before the source's (5); another card still passes.
  for (int i = 0; i < 3; ++i) CHECK(lim.admit("TERM0001", kCardA));
  CHECK_FALSE(lim.admit("TERM0001", kCardA));
  CHECK(lim.retry_after("TERM0001", kCardA) == 10);
  CHECK(lim.admit("TERM0001", kCardB));
  CHECK(lim.admit("TERM0001", kCardB));
  // The source's bucket is now empty too (5 taken): every card is suppressed from it, and
  // nothing is taken from the card's bucket meanwhile.
  CHECK_FALSE(lim.admit("TERM0001", hex("3333333333333333")));
  CHECK(lim.retry_after("TERM0001", hex("3333333333333333")) == 2);
  // Another source is not affected (for a fresh card).
  CHECK(lim.admit("TERM0002", hex("3333333333333333")));
  // One source refill later, one more decline from TERM0001 may be stored.
  now += seconds(2);
  CHECK(lim.admit("TERM0001", hex("4444444444444444")));
  CHECK_FALSE(lim.admit("TERM0001", hex("4444444444444444")));
  CHECK(lim.suppressed_total() == 3);

  // The first suppression reports at once; later ones wait for the interval, then sum up.
  auto rep = lim.take_report();
  REQUIRE(rep);
  CHECK(rep->count == 3);
  CHECK(rep->by_card == 1);
  CHECK(rep->by_source == 2);
  CHECK(rep->detail() == "count=3 by_source=2 by_card=1 sources=TERM0001");
  CHECK_FALSE(lim.take_report());  // nothing new
  CHECK_FALSE(lim.admit("TERM0001", kCardA));
  CHECK_FALSE(lim.take_report());  // not due yet
  now += seconds(60);
  rep = lim.take_report();
  REQUIRE(rep);
  CHECK(rep->count == 1);

  // Bounded: a thousand cards from many sources never hold more than max_entries entries.
  for (int i = 0; i < 1000; ++i) {
    Bytes card = be_bytes(static_cast<std::uint64_t>(i), 8);
    (void)lim.admit("S" + std::to_string(i % 50), card);
    CHECK(lim.size() <= 8);
  }
}

TEST_CASE("only declines that used up no code may be suppressed") {
  for (const char* r : {"unknown_card", "unknown_code", "bad_cryptogram", "code_used"})
    CHECK(suppressible_decline("authorize", r));
  for (const char* r : {"unknown_card", "bad_code", "code_used"}) CHECK(suppressible_decline("verify_code", r));
  // A blocked card's matching display code is consumed; a decline after the MAC verified
  // burned its code; anything unknown is stored.
  CHECK_FALSE(suppressible_decline("verify_code", "card_blocked"));
  CHECK_FALSE(suppressible_decline("authorize", "card_blocked"));  // a blocked card's genuine tap is consumed too
  for (const char* r : {"pin_blocked", "amount_too_large", "limit", "door_closed", "type_not_allowed", "held_timeout", ""})
    CHECK_FALSE(suppressible_decline("authorize", r));
}

TEST_CASE("suppressed declines are answered but not stored, approvals and burned codes always are") {
  Env env;
  std::chrono::steady_clock::time_point now{};
  DeclineLimiter lim(small_limits(), [&] { return now; });
  auto card = backend::test::enroll_issued(env);
  REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0002", "cd", 0, true}, "admin"));
  limit_declines(env, lim);
  const std::size_t before = stored_transactions(env);

  // A flood of 50 unknown-card declines from TERM0001: 5 stored, 45 answered unstored.
  int unstored = 0;
  for (int i = 0; i < 50; ++i) {
    auto r = env.svc->authorize(unknown_card("FLOOD-" + std::to_string(i), static_cast<std::uint8_t>(i)), "TERM0001");
    REQUIRE(r);
    CHECK(r->decision == Decision::declined);
    CHECK(r->reason == "unknown_card");
    if (!r->recorded) ++unstored;
  }
  CHECK(unstored == 45);
  CHECK(stored_transactions(env) == before + 5);
  CHECK(lim.suppressed_total() == 45);
  // An unstored decline leaves nothing behind: the same txn_id is not known.
  CHECK(env.svc->transaction("FLOOD-49").error().code == Errc::not_found);

  // A bad cryptogram from the flooded terminal is not stored either, but it still counts
  // toward blocking the card (a suppressed decline is not a free guess).
  AuthRequest bad = backend::test::card_request("BAD-1", card.n, card.alg, card.list, 0, card.codes[0], Ch{});
  bad.cryptogram[0] ^= 1;
  auto b = env.svc->authorize(bad, "TERM0001");
  REQUIRE(b);
  CHECK(b->reason == "bad_cryptogram");
  CHECK_FALSE(b->recorded);
  CHECK(env.svc->card(card.n)->fail_count == 1);

  // The genuine code approves from the flooded terminal, and from the other one.
  auto ok = env.svc->authorize(backend::test::card_request("GOOD-1", card.n, card.alg, card.list, 0, card.codes[0], Ch{}), "TERM0001");
  REQUIRE(ok);
  CHECK(ok->decision == Decision::approved);
  CHECK(ok->recorded);
  Ch other;
  other.terminal = to_bytes("TERM0002");
  auto ok2 = env.svc->authorize(backend::test::card_request("GOOD-2", card.n, card.alg, card.list, 1, card.codes[1], other), "TERM0002");
  REQUIRE(ok2);
  CHECK(ok2->decision == Decision::approved);
  CHECK(env.svc->transaction("GOOD-2"));

  // A decline that used up a code (over the global maximum) is stored although TERM0001 is
  // over its budget: the card consumed its code and its ARPC must be retrievable.
  Ch big;
  big.amount = hex("999999999999");
  auto over = env.svc->authorize(backend::test::card_request("BIG-1", card.n, card.alg, card.list, 2, card.codes[2], big), "TERM0001");
  REQUIRE(over);
  CHECK(over->decision == Decision::declined);
  CHECK(over->recorded);
  CHECK(env.svc->transaction("BIG-1"));
  CHECK(stored_transactions(env) == before + 5 + 3);

  // Typed display codes go through the same limiter.
  CodeRequest code{"CODE-1", Bytes(8, 0x77), "12345678", ""};
  auto c = env.svc->verify_display_code(code, "TERM0001");
  REQUIRE(c);
  CHECK(c->reason == "unknown_card");
  CHECK_FALSE(c->recorded);
  CHECK(env.svc->verify_audit());
}

TEST_CASE("retention: declined transactions older than the setting are pruned, the rest and the audit chain stay") {
  Env env;
  auto card = backend::test::enroll_issued(env);
  const UnixTime t0 = env.clock;
  REQUIRE(env.svc->authorize(unknown_card("OLD-DECLINE-1", 1), "TERM0001"));
  REQUIRE(env.svc->authorize(unknown_card("OLD-DECLINE-2", 2), "TERM0001"));
  auto approved = env.svc->authorize(backend::test::card_request("OLD-APPROVED", card.n, card.alg, card.list, 0, card.codes[0], Ch{}), "TERM0001");
  REQUIRE(approved);
  REQUIRE(approved->decision == Decision::approved);
  const std::size_t audit_before = static_cast<std::size_t>(env.svc->verify_audit().value());

  // 89 days later nothing is old enough.
  env.clock = t0 + 89 * 86400;
  REQUIRE(env.svc->authorize(unknown_card("NEW-DECLINE", 3), "TERM0001"));
  auto p = env.svc->prune_declined(std::chrono::hours(24 * 90), 100);
  REQUIRE(p);
  CHECK(*p == 0);
  CHECK(audit_actions(env, "retention_pruned") == 0);

  // 91 days after t0: the two old declines go (in batches of one here), the approval and the
  // recent decline stay.
  env.clock = t0 + 91 * 86400;
  p = env.svc->prune_declined(std::chrono::hours(24 * 90), 1);
  REQUIRE(p);
  CHECK(*p == 1);
  p = env.svc->prune_declined(std::chrono::hours(24 * 90), 1);
  REQUIRE(p);
  CHECK(*p == 1);
  p = env.svc->prune_declined(std::chrono::hours(24 * 90), 1);
  REQUIRE(p);
  CHECK(*p == 0);
  CHECK(env.svc->transaction("OLD-DECLINE-1").error().code == Errc::not_found);
  CHECK(env.svc->transaction("OLD-DECLINE-2").error().code == Errc::not_found);
  CHECK(env.svc->transaction("OLD-APPROVED"));
  CHECK(env.svc->transaction("NEW-DECLINE"));

  // Every audit entry stays and the chain verifies; each batch left one entry.
  auto n = env.svc->verify_audit();
  REQUIRE(n);
  CHECK(static_cast<std::size_t>(*n) == audit_before + 1 + 2);
  CHECK(audit_actions(env, "authorize") == 4);
  CHECK(audit_actions(env, "retention_pruned") == 2);
}
