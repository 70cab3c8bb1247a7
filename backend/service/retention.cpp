// Retention of declined transactions (operations.md "Retention"). A declined transaction is
// kept for `keep` after its decision, long enough for disputes and for a terminal's retries
// (which are answered from the stored row), then deleted. Approved and held transactions are
// never pruned. The audit log is not pruned either: its entries form one MAC chain from the
// first entry on, and `otac-admin audit verify` must keep passing; its growth from declines
// is bounded by the decline limiter (decline_limit.hpp) instead.
#include "service.hpp"

namespace otac::backend {

Result<std::uint32_t> Service::prune_declined(std::chrono::seconds keep, std::uint32_t limit) {
  const UnixTime t = now();
  const UnixTime before = t - keep.count();
  std::uint32_t pruned = 0;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto n = tx.prune_declined(before, limit);
    if (!n) return n.error();
    pruned = *n;
    if (pruned == 0) return {};
    // One entry per batch, in the same transaction as the deletion.
    auto a = tx.audit(t, "system", "retention_pruned",
                      "declined_before=" + std::to_string(before) + " rows=" + std::to_string(pruned));
    if (!a) return a.error();
    return {};
  });
  if (!r) return r.error();
  return pruned;
}

}  // namespace otac::backend
