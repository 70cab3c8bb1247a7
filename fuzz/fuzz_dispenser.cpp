// libFuzzer target: the cash dispenser line protocol (common/dispenser), both directions, and
// the note planner. A line that parses encodes back to one that parses the same; a plan pays
// the amount exactly from the notes there are.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "otac/common/dispenser.hpp"

namespace d = otac::dispenser;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  if (auto r = d::parse_request(line)) {
    const std::string again = d::encode(*r);
    auto r2 = d::parse_request(std::string_view(again).substr(0, again.size() - 1));
    if (!r2 || r2->kind != r->kind || r2->amount != r->amount || r2->take_seconds != r->take_seconds || r2->fault != r->fault)
      std::abort();
  } else if (r.error().message.empty()) {
    std::abort();
  }
  if (auto r = d::parse_reply(line)) {
    const std::string again = d::encode(*r);
    auto r2 = d::parse_reply(std::string_view(again).substr(0, again.size() - 1));
    if (!r2 || r2->kind != r->kind || r2->cassettes != r->cassettes || r2->status != r->status || r2->handed != r->handed)
      std::abort();
  } else if (r.error().message.empty()) {
    std::abort();
  }
  // "CASSETTES AMOUNT": a plan, when there is one, must pay exactly within the counts.
  const std::size_t sp = line.find(' ');
  if (sp != std::string_view::npos) {
    auto c = d::parse_cassettes(line.substr(0, sp));
    std::int64_t amount = 0;
    for (char ch : line.substr(sp + 1, 12)) amount = amount * 10 + (ch >= '0' && ch <= '9' ? ch - '0' : 0);
    if (c) {
      const auto plan = d::plan_notes(*c, amount);
      if (!plan.empty()) {
        std::int64_t paid = 0;
        for (std::size_t i = 0; i < plan.size(); ++i) {
          if (plan[i] > (*c)[i].count) std::abort();
          paid += plan[i] * (*c)[i].denomination;
        }
        if (paid != amount) std::abort();
      }
    }
  }
  return 0;
}
