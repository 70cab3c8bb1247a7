// Bounds what declined requests cost the store. Every stored decline is a transaction row and
// an audit entry, so a terminal that sends nothing but bad cryptograms, unknown cards or
// used codes would otherwise grow the database without bound. Declines are metered with two
// token buckets, one per source (the terminal's certificate id) and one per card; a decline
// is stored only while both hold a token, and takes one from each. Beyond that the decline
// is suppressed: the server answers 429 with Retry-After, counts it in /metrics, and writes
// one "declines_suppressed" audit entry per reporting interval with the count, instead of
// one row each. Approvals and declines that used up a code never pass through here: only a
// decline that changed no code can be suppressed (protocol.md 5.3). The table is bounded.
// No I/O; the clock is injected for tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "otac/common/bytes.hpp"

namespace otac::backend {

/// Whether a decline of `action` ("authorize" or "verify_code") with `reason` used up no code,
/// so that it may be suppressed: unknown card or code, bad cryptogram or display code, a code
/// already used, and a blocked card's tap (a blocked card's typed code is consumed when it
/// matches, so that one is always stored). Any other reason is stored.
bool suppressible_decline(std::string_view action, std::string_view reason) noexcept;

/// Sizes and refill rates of the decline buckets.
struct DeclineLimits {
  std::uint32_t source_burst = 100;                  ///< declines a source may store back to back
  std::chrono::milliseconds source_refill{5000};     ///< a source earns one more per interval
  std::uint32_t card_burst = 50;                     ///< declines one card may have stored back to back
  std::chrono::milliseconds card_refill{60'000};     ///< a card earns one more per interval
  std::size_t max_entries = 16384;                   ///< bound on memory (sources and cards)
  std::chrono::milliseconds report_every{60'000};    ///< at most one audit entry per interval
};

/// Declines suppressed since the previous report.
struct SuppressionReport {
  std::uint64_t count = 0;             ///< declines suppressed
  std::uint64_t by_source = 0;         ///< of them, because the source's bucket was empty
  std::uint64_t by_card = 0;           ///< of them, because only the card's bucket was empty
  std::vector<std::string> sources;    ///< the first few sources named (at most kMaxNamed)
  bool more_sources = false;           ///< other sources were suppressed too
  static constexpr std::size_t kMaxNamed = 8;
  /// "count=N by_source=S by_card=C sources=A,B[,...]" for the audit log.
  std::string detail() const;
};

/// Thread-safe decline buckets, keyed by source and by card.
class DeclineLimiter {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  explicit DeclineLimiter(DeclineLimits limits = {}, Clock clock = {});

  /// A new decline from source for card: true (one token taken from each bucket) if it may be
  /// stored; false (nothing taken, counted as suppressed) if either bucket is empty.
  bool admit(std::string_view source, ByteView card);
  /// Whole seconds until both buckets hold a token again (at least 1).
  std::uint32_t retry_after(std::string_view source, ByteView card);
  /// The suppressions since the last report, if there are any and a report is due (the first
  /// suppression reports at once, later ones at most once per report_every); force: now.
  std::optional<SuppressionReport> take_report(bool force = false);
  /// Declines suppressed since start.
  std::uint64_t suppressed_total();
  /// Entries in the table (tests).
  std::size_t size();

 private:
  using TimePoint = std::chrono::steady_clock::time_point;
  // A bucket as its "theoretical arrival time" (GCRA): it is full when tat <= now, and it holds
  // a token while tat - now <= (burst - 1) * refill. Taking a token adds one refill to tat.
  struct Bucket {
    TimePoint tat{};
  };
  struct Rate {
    std::uint32_t burst;
    std::chrono::milliseconds refill;
  };
  static std::chrono::milliseconds wait_of(const Bucket* b, Rate rate, TimePoint now);
  Bucket* find(const std::string& key);
  void take(const std::string& key, Rate rate, TimePoint now);
  void make_room(TimePoint now);
  void note_suppressed(std::string_view source, bool by_source);

  DeclineLimits limits_;
  Clock clock_;
  std::mutex mu_;
  std::unordered_map<std::string, Bucket> table_;
  SuppressionReport pending_;
  std::optional<TimePoint> last_report_;
  std::uint64_t total_ = 0;
};

}  // namespace otac::backend
