// The terminal's durable queue of outcome reports (protocol.md §5.4): what happened after an
// approval (completed, reversed with the amount handed over, not_opened, voided), kept on
// disk until the backend acknowledges it. One file per transaction under DIR/outcomes/,
// written atomically and fsync'd before the terminal acts on the approval, so that a report
// survives a backend outage, a lost network and a kill -9 of the terminal: the next run
// delivers what is left. A report written before the payout ("reversed", nothing handed
// over) is the reversal of a payout that never finished.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "otac/common/result.hpp"

namespace otac::terminal {

/// One report as queued and as POSTed to /v1/outcomes.
struct OutcomeReport {
  std::string txn_id;
  std::string outcome;         ///< completed, reversed, not_opened, voided
  std::int64_t handed_minor = 0;
  bool operator==(const OutcomeReport&) const = default;
};

/// The JSON body of POST /v1/outcomes.
std::string outcome_body(const OutcomeReport& r);
/// Parses a queued report (the same JSON); strict, errors name the field.
Result<OutcomeReport> parse_outcome_report(std::string_view text);

/// The queue in `dir`/outcomes/.
class OutcomeQueue {
 public:
  explicit OutcomeQueue(std::string dir) : dir_(std::move(dir) + "/outcomes") {}
  /// Stores (or replaces) the report of r.txn_id durably.
  Result<void> put(const OutcomeReport& r);
  /// The queued reports, by txn_id; unreadable files are reported in `bad` and left alone.
  Result<std::vector<OutcomeReport>> pending(std::vector<std::string>* bad = nullptr) const;
  /// Removes the report of txn_id (acknowledged).
  Result<void> remove(const std::string& txn_id);
  /// Moves the report aside to outcomes/refused/ (the backend refused it for good).
  Result<void> set_aside(const std::string& txn_id);

  /// What deliver() did.
  struct Delivery {
    std::uint32_t delivered = 0;  ///< acknowledged and removed
    std::uint32_t refused = 0;    ///< refused for good (set aside, logged)
    std::uint32_t left = 0;       ///< still queued (backend unreachable until the time ran out)
  };
  /// POSTs every queued report through `post` (the answer body, or an error with the
  /// backend's code: io/timeout retry, others refuse), retrying with backoff 0.5 s doubling
  /// to 8 s for at most `budget`. `log` gets one line per refusal and per retry round.
  Delivery deliver(const std::function<Result<std::string>(const std::string& body)>& post, std::chrono::milliseconds budget,
                   const std::function<void(const std::string&)>& log);

 private:
  std::string file_of(const std::string& txn_id) const;
  std::string dir_;
};

}  // namespace otac::terminal
