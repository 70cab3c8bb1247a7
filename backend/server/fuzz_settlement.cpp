// libFuzzer target: the bodies of POST /v1/outcomes and POST /v1/refunds. Neither parser may
// crash, hang or read out of bounds; what one accepts has a known outcome and a bounded id.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "settlement_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  if (auto r = otac::backend::http::parse_outcome_report(body)) {
    if (r->txn_id.size() > 64 || (r->handed_minor && *r->handed_minor < 0)) std::abort();
  }
  if (auto r = otac::backend::http::parse_refund_request(body)) {
    if (r->txn_id.size() > 64 || r->amount_minor < 1) std::abort();
  }
  return 0;
}
