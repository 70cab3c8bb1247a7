// What happens after a decision (protocol.md §5.4): cash withdrawals and their daily limits,
// outcome reports applied exactly once, reversals before, between and after retries of the
// same authorization, the automatic reversal, voids and refunds.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::Ch;
using otac::backend::test::Env;

namespace {

constexpr std::uint8_t kPinVerified = 0x13;  // PIN verified for this transaction, three tries left

struct Card : backend::test::IssuedCard {
  std::uint16_t next = 0;
};

// A card, with cash withdrawals allowed up to `card_daily` a day (TERM0001 registered).
Card setup(Env& env, std::int64_t card_daily = 10'000, std::int64_t terminal_daily = 0) {
  env.config.cash_card_daily_minor = card_daily;
  env.config.cash_terminal_daily_minor = terminal_daily;
  env.config.cash_complete_within = std::chrono::seconds(300);
  env.restart();
  return Card{backend::test::enroll_issued(env)};
}

Ch cash(std::int64_t minor, const std::string& terminal = "TERM0001") {
  Ch ch;
  char digits[13];
  std::snprintf(digits, sizeof digits, "%012lld", static_cast<long long>(minor));
  ch.amount = hex(digits);  // n12 BCD: the decimal digits are the hex digits
  ch.type = 0x01;
  ch.terminal = to_bytes(terminal);
  return ch;
}

AuthRequest request(Card& c, const std::string& txn, const Ch& ch, std::uint8_t pin_state = kPinVerified) {
  const std::uint16_t i = c.next++;
  return backend::test::card_request(txn, c.n, Algorithm::des3, c.list, i, c.codes[i], ch, 7, pin_state);
}

AuthAnswer authorize(Env& env, const AuthRequest& r, const std::string& terminal = "TERM0001") {
  auto a = env.svc->authorize(r, terminal);
  REQUIRE(a);
  return *a;
}

OutcomeAnswer report(Env& env, const std::string& txn, Outcome o, std::optional<std::int64_t> handed = std::nullopt,
                     const std::string& terminal = "TERM0001") {
  auto a = env.svc->report_outcome(OutcomeReport{txn, o, handed}, terminal);
  REQUIRE(a);
  return *a;
}

Errc report_error(Env& env, const std::string& txn, Outcome o, std::optional<std::int64_t> handed = std::nullopt,
                  const std::string& terminal = "TERM0001") {
  auto a = env.svc->report_outcome(OutcomeReport{txn, o, handed}, terminal);
  REQUIRE_FALSE(a);
  return a.error().code;
}

std::uint64_t settlements(Env& env, const std::string& key) {
  auto m = env.svc->metrics();
  REQUIRE(m);
  auto it = m->settlements.find(key);
  return it == m->settlements.end() ? 0 : it->second;
}

bool audited(Env& env, const std::string& action, const std::string& detail_part) {
  auto log = env.svc->audit_recent(50);
  REQUIRE(log);
  for (const auto& e : *log)
    if (e.action == action && e.detail.find(detail_part) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("cash: a withdrawal needs the backend's cash limit and the PIN verified by the card") {
  Env env;
  SECTION("no cash limit configured: declined type_not_allowed") {
    Card c = setup(env, 0);
    CHECK(authorize(env, request(c, "W1", cash(2000))).reason == "type_not_allowed");
  }
  SECTION("with a limit: the PIN state must say verified") {
    Card c = setup(env);
    auto no_pin = authorize(env, request(c, "W1", cash(2000), 0x03));
    CHECK(no_pin.decision == Decision::declined);
    CHECK(no_pin.reason == "pin_required");
    auto ok = authorize(env, request(c, "W2", cash(2000)));
    CHECK(ok.decision == Decision::approved);
    CHECK(ok.auth_code.size() == 6);
  }
}

TEST_CASE("cash: the daily card limit counts approvals, gives back reversals, and resets at 00:00 UTC") {
  Env env;
  Card c = setup(env, 10'000);
  CHECK(authorize(env, request(c, "W1", cash(6000))).decision == Decision::approved);
  auto over = authorize(env, request(c, "W2", cash(5000)));
  CHECK(over.reason == "cash_limit");
  CHECK(over.arc == to_bytes("51"));
  CHECK(authorize(env, request(c, "W3", cash(4000))).decision == Decision::approved);  // exactly 10,000
  // W1 paid out only 2,000 (a partial dispense): 4,000 are given back.
  CHECK(report(env, "W1", Outcome::reversed, 2000).applied);
  CHECK(authorize(env, request(c, "W4", cash(4000))).decision == Decision::approved);
  CHECK(authorize(env, request(c, "W5", cash(100))).reason == "cash_limit");
  env.clock += 86400;  // the next UTC day
  CHECK(authorize(env, request(c, "W6", cash(10'000))).decision == Decision::approved);
}

TEST_CASE("cash: a card's own daily limit, set at enrollment or later, replaces the backend's until reset") {
  Env env;
  env.config.cash_card_daily_minor = 10'000;
  env.restart();
  EnrollRequest er;
  er.cash_daily_minor = 3000;  // below the backend's 10,000
  Card c{backend::test::enroll_issued(env, er)};
  auto summary = env.svc->card_summary(c.n);
  REQUIRE(summary);
  CHECK(summary->cash_daily_minor == std::optional<std::int64_t>(3000));
  CHECK(summary->cash_daily_effective_minor == 3000);
  CHECK(authorize(env, request(c, "W1", cash(2000))).decision == Decision::approved);
  CHECK(authorize(env, request(c, "W2", cash(2000))).reason == "cash_limit");
  // Raised above the backend's limit: the card's own applies.
  CardSettings raise;
  raise.cash_daily_minor = 20'000;
  REQUIRE(env.svc->update_card_settings(c.n, raise, "admin"));
  CHECK(audited(env, "card_settings", "cash_daily_minor=3000->20000"));
  CHECK(authorize(env, request(c, "W3", cash(15'000))).decision == Decision::approved);  // 17,000 today
  // 0: no withdrawals at all for this card, whatever the backend allows.
  CardSettings none;
  none.cash_daily_minor = 0;
  REQUIRE(env.svc->update_card_settings(c.n, none, "admin"));
  CHECK(authorize(env, request(c, "W4", cash(100))).reason == "type_not_allowed");
  // Back to the backend's 10,000, of which 17,000 are taken today.
  CardSettings reset;
  reset.cash_daily_minor = CardSettings::kCashDefault;
  REQUIRE(env.svc->update_card_settings(c.n, reset, "admin"));
  CHECK(audited(env, "card_settings", "cash_daily_minor=0->default"));
  summary = env.svc->card_summary(c.n);
  REQUIRE(summary);
  CHECK_FALSE(summary->cash_daily_minor);
  CHECK(summary->cash_daily_effective_minor == 10'000);
  CHECK(authorize(env, request(c, "W5", cash(100))).reason == "cash_limit");
  env.clock += 86400;
  CHECK(authorize(env, request(c, "W6", cash(10'000))).decision == Decision::approved);
  CHECK(authorize(env, request(c, "W7", cash(100))).reason == "cash_limit");
  // Out of range, at enrollment and later: refused, nothing changes.
  CardSettings bad;
  bad.cash_daily_minor = -2;
  CHECK(env.svc->update_card_settings(c.n, bad, "admin").error().code == Errc::bad_value);
  EnrollRequest too_much;
  too_much.msisdn = "+4915550009";
  too_much.cash_daily_minor = kMaxCashDaily + 1;
  CHECK(env.svc->enroll_card(too_much, "admin").error().code == Errc::bad_value);
}

TEST_CASE("cash: the per-terminal daily limit spans cards") {
  Env env;
  Card a = setup(env, 10'000, 8000);
  EnrollRequest er;
  er.msisdn = "+4915550002";
  auto e = env.svc->enroll_card(er, "admin");
  REQUIRE(e);
  auto l = env.svc->issue_list(e->n, "admin");
  REQUIRE(l);
  Card b{backend::test::IssuedCard{e->n, Algorithm::des3, std::move(e->k), l->first, std::move(l->second)}};
  CHECK(authorize(env, request(a, "W1", cash(5000))).decision == Decision::approved);
  auto over = authorize(env, request(b, "W2", cash(5000)));
  CHECK(over.reason == "terminal_cash_limit");
  CHECK(over.arc == to_bytes("51"));
  CHECK(authorize(env, request(b, "W3", cash(3000))).decision == Decision::approved);
}

TEST_CASE("cash: two ATMs racing for the same card's daily limit cannot both pass it") {
  Env env;
  Card c = setup(env, 10'000);
  REQUIRE(env.svc->register_terminal(TerminalRecord{"ATM00002", "cd", 0, true}, "admin"));
  // A second Service on the same database file: another backend process.
  Service other(env.config, [&env] { return open_sqlite_store(env.db, env.kek); }, [&env] { return env.clock; });
  for (int round = 0; round < 10; ++round) {
    INFO("round " << round);
    auto r1 = request(c, "A" + std::to_string(round), cash(6000));
    auto r2 = request(c, "B" + std::to_string(round), cash(6000, "ATM00002"));
    std::atomic<int> approved{0};
    std::thread t1([&] {
      auto a = env.svc->authorize(r1, "TERM0001");
      if (a && a->decision == Decision::approved) ++approved;
    });
    std::thread t2([&] {
      auto a = other.authorize(r2, "ATM00002");
      if (a && a->decision == Decision::approved) ++approved;
    });
    t1.join();
    t2.join();
    CHECK(approved.load() == 1);
    env.clock += 86400;  // a fresh day for the next round
  }
}

TEST_CASE("outcome: applied exactly once per txn_id, a different one is a conflict, audited and counted") {
  Env env;
  Card c = setup(env);
  auto r = request(c, "W1", cash(2000));
  REQUIRE(authorize(env, r).decision == Decision::approved);
  auto first = report(env, "W1", Outcome::completed);
  CHECK(first.applied);
  CHECK(first.record.handed_minor == 2000);
  auto again = report(env, "W1", Outcome::completed, 2000);
  CHECK_FALSE(again.applied);
  CHECK(report_error(env, "W1", Outcome::reversed, 0) == Errc::conflict);
  CHECK(settlements(env, "outcome/completed") == 1);
  CHECK(audited(env, "outcome", "txn=W1 outcome=completed handed=2000"));
  // A retry of the completed authorization is still the approval.
  CHECK(authorize(env, r).decision == Decision::approved);
  // Bad reports name what is wrong and change nothing.
  auto r2 = request(c, "W2", cash(3000));
  REQUIRE(authorize(env, r2).decision == Decision::approved);
  CHECK(report_error(env, "W2", Outcome::completed, 2999) == Errc::bad_value);
  CHECK(report_error(env, "W2", Outcome::reversed, 3000) == Errc::bad_value);
  CHECK(report_error(env, "W2", Outcome::not_opened) == Errc::bad_value);
  CHECK(report_error(env, "W2", Outcome::voided) == Errc::bad_value);
  CHECK(report_error(env, "W2", Outcome::completed, std::nullopt, "ATM00009") == Errc::not_found);
  CHECK_FALSE(env.svc->outcome("W2").value());
}

TEST_CASE("reversal: before, between and after retries of one authorization, a retry never reads approved") {
  Env env;
  Card c = setup(env);
  SECTION("the reversal comes before the authorization") {
    auto r = request(c, "W1", cash(2000));
    auto pre = report(env, "W1", Outcome::reversed);
    CHECK(pre.applied);
    CHECK(pre.record.handed_minor == 0);
    auto a = authorize(env, r);
    CHECK(a.decision == Decision::declined);
    CHECK(a.reason == "reversed");
    CHECK(a.auth_code.empty());
    CHECK(a.arpc.empty());
    CHECK(authorize(env, r).reason == "reversed");
    // Its code was consumed all the same: the same answer under a new id is refused.
    auto replay = r;
    replay.txn_id = "W1-again";
    CHECK(authorize(env, replay).reason == "code_used");
    // Nothing was taken from the daily limit.
    CHECK(authorize(env, request(c, "W2", cash(10'000))).decision == Decision::approved);
    CHECK(audited(env, "outcome", "txn=W1 outcome=reversed handed=0 amount=? before_authorization"));
    // Only a full reversal may come first, and only from a terminal that could own the id.
    CHECK(report_error(env, "W9", Outcome::completed) == Errc::not_found);
    CHECK(report_error(env, "W9", Outcome::reversed, 100) == Errc::not_found);
  }
  SECTION("the reversal comes between two retries") {
    auto r = request(c, "W1", cash(2000));
    REQUIRE(authorize(env, r).decision == Decision::approved);
    REQUIRE(authorize(env, r).decision == Decision::approved);
    CHECK(report(env, "W1", Outcome::reversed).applied);
    auto a = authorize(env, r);
    CHECK(a.decision == Decision::declined);
    CHECK(a.reason == "reversed");
    CHECK(a.auth_code.empty());
    auto g = env.svc->get_authorization("W1", std::chrono::milliseconds(0));
    REQUIRE(g);
    CHECK(g->decision == Decision::declined);
    CHECK(g->reason == "reversed");
    // The reversal is repeated until acknowledged: the repeats change nothing.
    CHECK_FALSE(report(env, "W1", Outcome::reversed).applied);
    CHECK(settlements(env, "outcome/reversed") == 1);
  }
}

TEST_CASE("reversal: a withdrawal with no outcome is reversed automatically, and the terminal's late report wins") {
  Env env;
  Card c = setup(env, 10'000);
  REQUIRE(authorize(env, request(c, "W1", cash(8000))).decision == Decision::approved);
  env.clock += 299;
  CHECK(env.svc->reverse_stale_cash(10).value() == 0);
  env.clock += 1;
  CHECK(env.svc->reverse_stale_cash(10).value() == 1);
  CHECK(env.svc->reverse_stale_cash(10).value() == 0);
  auto o = env.svc->outcome("W1").value();
  REQUIRE(o);
  CHECK(o->outcome == Outcome::reversed);
  CHECK(o->reported_by == "system");
  CHECK(audited(env, "auto_reverse", "txn=W1"));
  CHECK(settlements(env, "outcome/auto_reversed") == 1);
  CHECK(authorize(env, request(c, "W2", cash(9000))).decision == Decision::approved);
  // The dispenser had paid W1 after all: the terminal's completion replaces the automatic
  // reversal, and the limit counts it again.
  CHECK(report(env, "W1", Outcome::completed).applied);
  CHECK(authorize(env, request(c, "W3", cash(1000))).reason == "cash_limit");
}

TEST_CASE("void: only the terminal's last approved purchase, only before the day closes") {
  Env env;
  Card c = setup(env);
  auto p1 = request(c, "P1", Ch{});
  auto p2 = request(c, "P2", Ch{});
  REQUIRE(authorize(env, p1).decision == Decision::approved);
  REQUIRE(authorize(env, p2).decision == Decision::approved);
  CHECK(report_error(env, "P1", Outcome::voided) == Errc::conflict);  // not the last one
  CHECK(report(env, "P2", Outcome::completed).applied);
  CHECK(report(env, "P2", Outcome::voided).applied);  // a void may follow the completion
  CHECK_FALSE(report(env, "P2", Outcome::voided).applied);
  CHECK(authorize(env, p2).reason == "voided");
  CHECK(settlements(env, "outcome/voided") == 1);
  auto p3 = request(c, "P3", Ch{});
  REQUIRE(authorize(env, p3).decision == Decision::approved);
  env.clock += 86400;
  CHECK(report_error(env, "P3", Outcome::voided) == Errc::conflict);  // the day is closed
  auto w = request(c, "W1", cash(100));
  REQUIRE(authorize(env, w).decision == Decision::approved);
  CHECK(report_error(env, "W1", Outcome::voided) == Errc::bad_value);  // cash is reversed, not voided
}

TEST_CASE("not_opened: a door entry whose relay failed") {
  Env env;
  Card c = setup(env);
  REQUIRE(env.svc->update_card_settings(c.n, CardSettings{.doors = std::vector<DoorPermission>{{"D1", 0, 1440, "UTC"}}}, "admin"));
  Ch door;
  door.mode = 2;
  door.amount = hex("000000000000");
  door.door = "D1";
  auto r = request(c, "D1-1", door);
  REQUIRE(authorize(env, r).decision == Decision::approved);
  CHECK(report(env, "D1-1", Outcome::not_opened).applied);
  CHECK(authorize(env, r).reason == "not_opened");
  auto p = request(c, "P1", Ch{});
  REQUIRE(authorize(env, p).decision == Decision::approved);
  CHECK(report_error(env, "P1", Outcome::not_opened) == Errc::bad_value);
}

TEST_CASE("refund: a merchant asks, an operator decides once") {
  Env env;
  Card c = setup(env);
  auto p = request(c, "P1", Ch{});  // 12.34
  REQUIRE(authorize(env, p).decision == Decision::approved);
  auto over = env.svc->request_refund("P1", 1235, "TERM0001");
  REQUIRE_FALSE(over);
  CHECK(over.error().code == Errc::bad_value);
  auto other = env.svc->request_refund("P1", 100, "ATM00009");
  REQUIRE_FALSE(other);
  CHECK(other.error().code == Errc::not_found);
  auto r = env.svc->request_refund("P1", 1000, "TERM0001");
  REQUIRE(r);
  CHECK(r->state == RefundState::pending);
  CHECK(env.svc->request_refund("P1", 1000, "TERM0001").value().requested_at == r->requested_at);  // repeat
  CHECK_FALSE(env.svc->request_refund("P1", 999, "TERM0001"));
  auto pending = env.svc->list_refunds(RefundState::pending, 10);
  REQUIRE(pending);
  REQUIRE(pending->size() == 1);
  auto d = env.svc->decide_refund("P1", true, "alice");
  REQUIRE(d);
  CHECK(d->state == RefundState::approved);
  CHECK(d->decided_by == "alice");
  auto twice = env.svc->decide_refund("P1", false, "bob");
  REQUIRE_FALSE(twice);
  CHECK(twice.error().code == Errc::conflict);
  CHECK(env.svc->list_refunds(RefundState::pending, 10).value().empty());
  CHECK(audited(env, "refund_approve", "txn=P1 amount=1000"));
  CHECK(settlements(env, "refund/approved") == 1);
  // Nothing to refund after a reversal, and cash is not refunded.
  auto p2 = request(c, "P2", Ch{});
  REQUIRE(authorize(env, p2).decision == Decision::approved);
  CHECK(report(env, "P2", Outcome::reversed).applied);
  CHECK(env.svc->request_refund("P2", 100, "TERM0001").error().code == Errc::conflict);
  auto w = request(c, "W1", cash(100));
  REQUIRE(authorize(env, w).decision == Decision::approved);
  CHECK(env.svc->request_refund("W1", 100, "TERM0001").error().code == Errc::conflict);
}
