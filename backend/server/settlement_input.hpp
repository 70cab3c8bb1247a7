// Bodies of the terminal's after-decision requests (protocol.md §5.4): POST /v1/outcomes and
// POST /v1/refunds, parsed strictly (known keys, types, ranges). The transaction id's
// character set is the API's to check, as for authorizations.
#pragma once

#include <string_view>

#include "otac/common/result.hpp"
#include "service.hpp"

namespace otac::backend::http {

/// {"txn_id", "outcome": completed|reversed|not_opened|voided, "handed_minor"?}.
Result<OutcomeReport> parse_outcome_report(std::string_view body);

/// A refund request: the purchase's txn_id and the amount to give back.
struct RefundAsk {
  std::string txn_id;
  std::int64_t amount_minor = 0;
};

/// {"txn_id", "amount_minor" >= 1}.
Result<RefundAsk> parse_refund_request(std::string_view body);

}  // namespace otac::backend::http
