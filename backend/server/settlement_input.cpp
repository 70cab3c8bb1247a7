#include "settlement_input.hpp"

#include "json_input.hpp"

namespace otac::backend::http {

Result<OutcomeReport> parse_outcome_report(std::string_view body) {
  auto o = parse_object(body, {"txn_id", "outcome", "handed_minor"});
  if (!o) return o.error();
  Fields f(*o);
  OutcomeReport r;
  r.txn_id = f.str("txn_id", true, 64);
  const std::string kind = f.str("outcome", true, 16);
  if (f.has("handed_minor")) r.handed_minor = f.integer("handed_minor", true, 0, 999'999'999'999);
  const auto outcome = parse_outcome(kind);
  if (!f.error && !outcome) f.fail("field \"outcome\" must be completed, reversed, not_opened or voided");
  if (f.error) return make_error(Errc::bad_value, *f.error);
  r.outcome = *outcome;
  return r;
}

Result<RefundAsk> parse_refund_request(std::string_view body) {
  auto o = parse_object(body, {"txn_id", "amount_minor"});
  if (!o) return o.error();
  Fields f(*o);
  RefundAsk r;
  r.txn_id = f.str("txn_id", true, 64);
  r.amount_minor = f.integer("amount_minor", true, 1, 999'999'999'999);
  if (f.error) return make_error(Errc::bad_value, *f.error);
  return r;
}

}  // namespace otac::backend::http
