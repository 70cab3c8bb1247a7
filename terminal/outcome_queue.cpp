#include "terminal/outcome_queue.hpp"

#include <algorithm>
#include <filesystem>
#include <thread>

#include "otac/sys/file.hpp"

namespace otac::terminal {
namespace fs = std::filesystem;

std::string OutcomeQueue::file_of(const std::string& txn_id) const { return dir_ + "/" + txn_id + ".json"; }

Result<void> OutcomeQueue::put(const OutcomeReport& r) {
  // The file name is the txn_id: the same check as the parser's, so nothing escapes the folder.
  if (auto ok = parse_outcome_report(outcome_body(r)); !ok) return ok.error();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return make_error(Errc::io, "cannot create the outcome queue " + dir_ + ": " + ec.message());
  return sys::write_file_atomic(file_of(r.txn_id), outcome_body(r) + "\n", {.mode = 0600});
}

Result<std::vector<OutcomeReport>> OutcomeQueue::pending(std::vector<std::string>* bad) const {
  std::vector<OutcomeReport> out;
  std::error_code ec;
  if (!fs::exists(dir_, ec)) return out;
  fs::directory_iterator it(dir_, ec);
  if (ec) return make_error(Errc::io, "cannot read the outcome queue " + dir_ + ": " + ec.message());
  std::size_t seen = 0;
  for (const auto& e : it) {
    if (++seen > 100000) break;  // bounded; a queue this long is reported by the ones left
    if (!e.is_regular_file(ec) || e.path().extension() != ".json") continue;
    auto text = sys::read_file(e.path(), 4096);
    auto r = text ? parse_outcome_report(*text) : Result<OutcomeReport>(text.error());
    if (!r || e.path().stem() != r->txn_id) {
      if (bad) bad->push_back(e.path().string() + ": " + (r ? std::string("file name is not its txn_id") : r.error().message));
      continue;
    }
    out.push_back(std::move(*r));
  }
  std::sort(out.begin(), out.end(), [](const OutcomeReport& a, const OutcomeReport& b) { return a.txn_id < b.txn_id; });
  return out;
}

Result<void> OutcomeQueue::remove(const std::string& txn_id) {
  std::error_code ec;
  fs::remove(file_of(txn_id), ec);
  if (ec) return make_error(Errc::io, "cannot remove " + file_of(txn_id) + ": " + ec.message());
  return {};
}

Result<void> OutcomeQueue::set_aside(const std::string& txn_id) {
  std::error_code ec;
  fs::create_directories(dir_ + "/refused", ec);
  if (!ec) fs::rename(file_of(txn_id), dir_ + "/refused/" + txn_id + ".json", ec);
  if (ec) return make_error(Errc::io, "cannot move " + file_of(txn_id) + " to refused/: " + ec.message());
  return {};
}

OutcomeQueue::Delivery OutcomeQueue::deliver(const std::function<Result<std::string>(const std::string& body)>& post,
                                             std::chrono::milliseconds budget, const std::function<void(const std::string&)>& log) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + budget;
  auto pause = std::chrono::milliseconds(500);
  Delivery d;
  for (int round = 0; round < 1000; ++round) {
    std::vector<std::string> bad;
    auto queued = pending(&bad);
    for (const auto& b : bad) log("outcome queue: unreadable entry left alone: " + b);
    if (!queued) {
      log(queued.error().message);
      return d;
    }
    d.left = 0;
    for (const auto& r : *queued) {
      auto answer = post(outcome_body(r));
      if (answer) {
        if (auto x = remove(r.txn_id); !x) log(x.error().message);
        ++d.delivered;
      } else if (answer.error().code == Errc::io || answer.error().code == Errc::timeout) {
        ++d.left;
      } else {
        // Refused for good (another outcome recorded, not this terminal's, malformed): kept
        // aside for an operator rather than sent forever.
        log("outcome " + r.outcome + " of " + r.txn_id + " refused by the backend: " + answer.error().message);
        if (auto x = set_aside(r.txn_id); !x) log(x.error().message);
        ++d.refused;
      }
    }
    if (d.left == 0 || Clock::now() + pause > deadline) return d;
    log("outcome queue: " + std::to_string(d.left) + " report(s) not acknowledged; retrying in " + std::to_string(pause.count()) + " ms");
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(8000));
  }
  return d;
}

}  // namespace otac::terminal
