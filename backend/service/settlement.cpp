// The Service after the decision (protocol.md §5.4): outcome reports (completed, reversed with
// the amount handed over, a door not opened, a void), the automatic reversal of cash that no
// outcome followed, the daily cash limits that reversals give back, and refunds that an
// operator decides. Each report is one store transaction, applied exactly once per txn_id.
#include <algorithm>

#include "service.hpp"
#include "service_detail.hpp"

namespace otac::backend {

const char* outcome_name(Outcome o) noexcept {
  switch (o) {
    case Outcome::completed: return "completed";
    case Outcome::reversed: return "reversed";
    case Outcome::not_opened: return "not_opened";
    case Outcome::voided: return "voided";
  }
  return "?";
}

std::optional<Outcome> parse_outcome(std::string_view s) noexcept {
  for (Outcome o : {Outcome::completed, Outcome::reversed, Outcome::not_opened, Outcome::voided}) {
    if (s == outcome_name(o)) return o;
  }
  return std::nullopt;
}

const char* refund_state_name(RefundState s) noexcept {
  switch (s) {
    case RefundState::pending: return "pending";
    case RefundState::approved: return "approved";
    case RefundState::declined: return "declined";
  }
  return "?";
}

namespace detail {

UnixTime utc_day_start(UnixTime t) { return t - ((t % 86400) + 86400) % 86400; }

Result<void> apply_outcome(Tx& tx, AuthAnswer& a) {
  auto o = tx.outcome(a.txn_id);
  if (!o) return o.error();
  if (!*o || (*o)->outcome == Outcome::completed) return {};
  // Undone after the decision: whatever was decided, a retry must not read as an approval.
  a.decision = Decision::declined;
  a.reason = outcome_name((*o)->outcome);
  a.auth_code.clear();
  a.arc = kArcDeclined;
  a.arpc.clear();
  a.expires_at = 0;
  a.expires_in = 0;
  return {};
}

Result<void> decline_if_reversed_first(Tx& tx, TransactionRecord& rec) {
  auto o = tx.outcome(rec.txn_id);
  if (!o) return o.error();
  if (!*o || (*o)->reported_by != rec.terminal_id || rec.decision == Decision::declined) return {};
  rec.decision = Decision::declined;
  rec.reason = "reversed";
  rec.auth_code.clear();
  rec.arc = kArcDeclined;
  rec.arpc.clear();  // the terminal gave up on this transaction: nothing goes to the card
  rec.decided_at = rec.created_at;
  rec.expires_at = 0;
  return {};
}

std::int64_t card_cash_limit(const CardRecord& card, const ServiceConfig& config) {
  return card.cash_daily_minor.value_or(config.cash_card_daily_minor);
}

Result<std::optional<PosDecline>> cash_decline(Tx& tx, const CashRecord& c, std::int64_t card_limit, const ServiceConfig& config) {
  if (card_limit <= 0 && config.cash_terminal_daily_minor <= 0) return std::optional<PosDecline>{};
  auto totals = tx.cash_totals(c.card, c.terminal_id, utc_day_start(c.approved_at));
  if (!totals) return totals.error();
  if (card_limit > 0 && totals->card_minor + c.amount_minor > card_limit)
    return std::optional<PosDecline>{PosDecline{"cash_limit", true}};
  if (config.cash_terminal_daily_minor > 0 && totals->terminal_minor + c.amount_minor > config.cash_terminal_daily_minor)
    return std::optional<PosDecline>{PosDecline{"terminal_cash_limit", true}};
  return std::optional<PosDecline>{};
}

}  // namespace detail

using namespace detail;

namespace {

// Which outcome a report may record for a transaction in its current state; an error names why not.
Result<void> check_outcome(Tx& tx, const TransactionRecord& rec, const OutcomeRecord& o, bool is_cash, UnixTime now) {
  const std::string what = "transaction " + rec.txn_id;
  if (rec.decision != Decision::approved) {
    if (o.outcome == Outcome::reversed && o.handed_minor == 0) return {};  // nothing to undo; acknowledged
    return make_error(Errc::conflict, what + " was not approved (it is " + decision_name(rec.decision) +
                                          "): only a reversal with nothing handed over can be reported");
  }
  switch (o.outcome) {
    case Outcome::completed:
      if (o.handed_minor != rec.amount_minor)
        return make_error(Errc::bad_value, what + ": completed hands over the whole amount " + std::to_string(rec.amount_minor) +
                                               " (report a partial one as reversed with handed_minor)");
      return {};
    case Outcome::reversed:
      if (o.handed_minor < 0 || o.handed_minor >= std::max<std::int64_t>(rec.amount_minor, 1))
        return make_error(Errc::bad_value, what + ": a reversal hands over 0 up to less than the amount " +
                                               std::to_string(rec.amount_minor) + " (else it is completed)");
      return {};
    case Outcome::not_opened:
      if (rec.door.empty()) return make_error(Errc::bad_value, what + " is not a door entry: not_opened is for doors");
      return {};
    case Outcome::voided: {
      if (!rec.door.empty() || is_cash)
        return make_error(Errc::bad_value, what + " is not a purchase: only purchases are voided (reverse a withdrawal)");
      if (utc_day_start(rec.created_at) != utc_day_start(now))
        return make_error(Errc::conflict, what + " was approved on an earlier day, which is closed: ask for a refund");
      TransactionFilter last;
      last.terminal_id = rec.terminal_id;
      last.decision = Decision::approved;
      last.limit = 1;
      auto newest = tx.transactions(last);
      if (!newest) return newest.error();
      if (newest->empty() || newest->front().txn_id != rec.txn_id)
        return make_error(Errc::conflict, what + " is not the terminal's last approved transaction: only that one can be voided");
      return {};
    }
  }
  return make_error(Errc::bad_value, what + ": unknown outcome");
}

// Whether `next` may replace the recorded outcome `prev`: a void after a completion, and the
// terminal's own report after the backend reversed a withdrawal it never heard of (the
// terminal knows what the dispenser paid).
bool may_replace(const OutcomeRecord& prev, const OutcomeRecord& next) {
  if (next.outcome == Outcome::voided) return prev.outcome == Outcome::completed;
  return prev.reported_by == "system" && prev.outcome == Outcome::reversed &&
         (next.outcome == Outcome::completed || next.outcome == Outcome::reversed);
}

}  // namespace

Result<OutcomeAnswer> Service::report_outcome(const OutcomeReport& r, std::string_view terminal_id) {
  if (!valid_txn_id(r.txn_id)) return make_error(Errc::bad_value, "txn_id must be 1 to 64 printable ASCII characters");
  if (r.handed_minor && *r.handed_minor < 0) return make_error(Errc::bad_value, "handed_minor must not be negative");
  if (r.handed_minor && *r.handed_minor != 0 && (r.outcome == Outcome::not_opened || r.outcome == Outcome::voided))
    return make_error(Errc::bad_value, std::string(outcome_name(r.outcome)) + " hands nothing over: handed_minor must be 0");
  OutcomeAnswer ans;
  const UnixTime t = now();
  auto run_r = run([&](Tx& tx) -> Result<void> {
    ans = {};
    OutcomeRecord next{r.txn_id, r.outcome, r.handed_minor.value_or(0), std::string(terminal_id), t};
    auto prev = tx.outcome(r.txn_id);
    if (!prev) return prev.error();
    auto rec = tx.transaction(r.txn_id);
    std::string amount = "?";
    if (rec) {
      if (rec->terminal_id != terminal_id)
        return make_error(Errc::not_found, "no transaction " + r.txn_id + " for terminal " + std::string(terminal_id));
      amount = std::to_string(rec->amount_minor);
      if (r.outcome == Outcome::completed && !r.handed_minor) next.handed_minor = rec->amount_minor;
      if (*prev && (*prev)->outcome == next.outcome && (*prev)->handed_minor == next.handed_minor) {
        ans.record = **prev;  // the same report again: acknowledged, nothing changes
        return {};
      }
      if (*prev && !may_replace(**prev, next))
        return make_error(Errc::conflict, "transaction " + r.txn_id + " already has the outcome " + outcome_name((*prev)->outcome) +
                                              " (handed_minor " + std::to_string((*prev)->handed_minor) + ")");
      auto cash = tx.cash(r.txn_id);
      if (!cash) return cash.error();
      if (auto c = check_outcome(tx, *rec, next, cash->has_value(), t); !c) return c;
      if (rec->decision == Decision::held) {
        // A reversal while an operator still could approve it: declined now, as the terminal
        // showed it (protocol.md §5.2).
        auto won = settle_held(tx, *rec, Decision::declined, "reversed", terminal_id, "reverse_held", t, t);
        if (!won) return won.error();
      }
    } else if (rec.error().code != Errc::not_found) {
      return rec.error();
    } else if (r.outcome != Outcome::reversed || next.handed_minor != 0) {
      return make_error(Errc::not_found, "no transaction " + r.txn_id + ": only a reversal with nothing handed over may come before its authorization");
    } else if (*prev) {
      if ((*prev)->reported_by != terminal_id)
        return make_error(Errc::not_found, "no transaction " + r.txn_id + " for terminal " + std::string(terminal_id));
      ans.record = **prev;
      return {};
    }
    auto won = tx.set_outcome(next, *prev ? std::optional<Outcome>((*prev)->outcome) : std::nullopt);
    if (!won) return won.error();
    if (!*won) return make_error(Errc::conflict, "transaction " + r.txn_id + " got another outcome at the same time; report again");
    auto a = tx.audit(t, terminal_id, "outcome",
                      "txn=" + r.txn_id + " outcome=" + outcome_name(next.outcome) + " handed=" + std::to_string(next.handed_minor) +
                          " amount=" + amount + (rec ? "" : " before_authorization"));
    if (!a) return a.error();
    ans.record = next;
    ans.applied = true;
    return {};
  });
  if (!run_r) return run_r.error();
  if (ans.applied) count_settlement(std::string("outcome/") + outcome_name(ans.record.outcome));
  return ans;
}

Result<std::optional<OutcomeRecord>> Service::outcome(std::string_view txn_id) {
  std::optional<OutcomeRecord> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto o = tx.outcome(txn_id);
    if (!o) return o.error();
    out = std::move(*o);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::uint32_t> Service::reverse_stale_cash(std::uint32_t limit) {
  std::uint32_t reversed = 0;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    reversed = 0;
    auto due = tx.cash_unsettled(t - config_.cash_complete_within.count(), limit);
    if (!due) return due.error();
    for (const auto& c : *due) {
      auto won = tx.set_outcome(OutcomeRecord{c.txn_id, Outcome::reversed, 0, "system", t}, std::nullopt);
      if (!won) return won.error();
      if (!*won) continue;
      auto a = tx.audit(t, "system", "auto_reverse",
                        "txn=" + c.txn_id + " terminal=" + c.terminal_id + " amount=" + std::to_string(c.amount_minor) +
                            " no outcome within " + std::to_string(config_.cash_complete_within.count()) + " s");
      if (!a) return a.error();
      ++reversed;
    }
    return {};
  });
  if (!r) return r.error();
  for (std::uint32_t i = 0; i < reversed; ++i) count_settlement("outcome/auto_reversed");
  return reversed;
}

Result<RefundRecord> Service::request_refund(std::string_view txn_id, std::int64_t amount_minor, std::string_view terminal_id) {
  if (!valid_txn_id(txn_id)) return make_error(Errc::bad_value, "txn_id must be 1 to 64 printable ASCII characters");
  if (amount_minor <= 0) return make_error(Errc::bad_value, "a refund's amount_minor must be positive");
  RefundRecord out;
  bool created = false;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    created = false;
    const std::string what = "transaction " + std::string(txn_id);
    auto rec = tx.transaction(txn_id);
    if (!rec) return rec.error();
    if (rec->terminal_id != terminal_id)
      return make_error(Errc::not_found, "no transaction " + std::string(txn_id) + " for terminal " + std::string(terminal_id));
    auto prev = tx.refund(txn_id);
    if (!prev) return prev.error();
    if (*prev) {
      if ((*prev)->amount_minor != amount_minor)
        return make_error(Errc::conflict, what + " already has a refund request of " + std::to_string((*prev)->amount_minor));
      out = **prev;
      return {};
    }
    auto cash = tx.cash(txn_id);
    if (!cash) return cash.error();
    auto o = tx.outcome(txn_id);
    if (!o) return o.error();
    if (rec->decision != Decision::approved || !rec->door.empty() || *cash)
      return make_error(Errc::conflict, what + " is not an approved purchase: only those are refunded");
    if (*o && (*o)->outcome != Outcome::completed)
      return make_error(Errc::conflict, what + " was " + outcome_name((*o)->outcome) + ": there is nothing to refund");
    if (amount_minor > rec->amount_minor)
      return make_error(Errc::bad_value, "a refund of " + std::to_string(amount_minor) + " exceeds the purchase's " +
                                             std::to_string(rec->amount_minor));
    out = RefundRecord{std::string(txn_id), std::string(terminal_id), amount_minor, RefundState::pending, t, {}, 0};
    auto won = tx.put_refund(out, std::nullopt);
    if (!won) return won.error();
    if (!*won) return make_error(Errc::conflict, what + " got a refund request at the same time; ask again");
    auto a = tx.audit(t, terminal_id, "refund_request", "txn=" + out.txn_id + " amount=" + std::to_string(amount_minor));
    if (!a) return a.error();
    created = true;
    return {};
  });
  if (!r) return r.error();
  if (created) count_settlement("refund/requested");
  return out;
}

Result<RefundRecord> Service::decide_refund(std::string_view txn_id, bool approve, std::string_view actor) {
  RefundRecord out;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto prev = tx.refund(txn_id);
    if (!prev) return prev.error();
    if (!*prev) return make_error(Errc::not_found, "no refund request for transaction " + std::string(txn_id));
    if ((*prev)->state != RefundState::pending)
      return make_error(Errc::conflict, "the refund of transaction " + std::string(txn_id) + " is already " +
                                            refund_state_name((*prev)->state));
    out = **prev;
    out.state = approve ? RefundState::approved : RefundState::declined;
    out.decided_by = std::string(actor);
    out.decided_at = t;
    auto won = tx.put_refund(out, RefundState::pending);
    if (!won) return won.error();
    if (!*won) return make_error(Errc::conflict, "the refund of transaction " + std::string(txn_id) + " was decided at the same time");
    auto a = tx.audit(t, actor, approve ? "refund_approve" : "refund_decline",
                      "txn=" + out.txn_id + " amount=" + std::to_string(out.amount_minor));
    if (!a) return a.error();
    return {};
  });
  if (!r) return r.error();
  count_settlement(std::string("refund/") + refund_state_name(out.state));
  return out;
}

Result<RefundRecord> Service::refund(std::string_view txn_id) {
  RefundRecord out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto p = tx.refund(txn_id);
    if (!p) return p.error();
    if (!*p) return make_error(Errc::not_found, "no refund request for transaction " + std::string(txn_id));
    out = **p;
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<RefundRecord>> Service::list_refunds(RefundState state, std::uint32_t limit) {
  std::vector<RefundRecord> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto l = tx.refunds(state, std::min<std::uint32_t>(limit, 1000));
    if (!l) return l.error();
    out = std::move(*l);
    return {};
  });
  if (!r) return r.error();
  return out;
}

}  // namespace otac::backend
