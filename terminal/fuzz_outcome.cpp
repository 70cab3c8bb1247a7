// libFuzzer target: the outcome queue's file format (terminal/outcome_json.cpp). What parses
// has a txn_id that is a safe file name, and encodes back to the same report.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "terminal/outcome_queue.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = otac::terminal::parse_outcome_report(text);
  if (!r) return 0;
  if (r->txn_id.find('/') != std::string::npos || r->txn_id == "." || r->txn_id == "..") __builtin_trap();
  auto again = otac::terminal::parse_outcome_report(otac::terminal::outcome_body(*r));
  if (!again || !(*again == *r)) __builtin_trap();
  return 0;
}
