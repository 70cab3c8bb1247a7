#include "decline_limit.hpp"

#include <algorithm>

namespace otac::backend {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::string SuppressionReport::detail() const {
  std::string out = "count=" + std::to_string(count) + " by_source=" + std::to_string(by_source) +
                    " by_card=" + std::to_string(by_card) + " sources=";
  for (std::size_t i = 0; i < sources.size(); ++i) out += (i ? "," : "") + sources[i];
  if (more_sources) out += ",...";
  return out;
}

bool suppressible_decline(std::string_view action, std::string_view reason) noexcept {
  if (reason == "unknown_card" || reason == "code_used") return true;
  if (action == "authorize") return reason == "unknown_code" || reason == "bad_cryptogram";
  if (action == "verify_code") return reason == "bad_code";
  return false;
}

DeclineLimiter::DeclineLimiter(DeclineLimits limits, Clock clock)
    : limits_(limits), clock_(clock ? std::move(clock) : Clock([] { return steady_clock::now(); })) {
  // A bucket of 0 would suppress everything and a refill of 0 nothing: both are mistakes.
  limits_.source_burst = std::max<std::uint32_t>(limits_.source_burst, 1);
  limits_.card_burst = std::max<std::uint32_t>(limits_.card_burst, 1);
  limits_.source_refill = std::max(limits_.source_refill, milliseconds(1));
  limits_.card_refill = std::max(limits_.card_refill, milliseconds(1));
  limits_.max_entries = std::max<std::size_t>(limits_.max_entries, 2);
}

milliseconds DeclineLimiter::wait_of(const Bucket* b, Rate rate, TimePoint now) {
  if (!b) return milliseconds(0);  // never seen: full
  const auto allowance = rate.refill * static_cast<std::int64_t>(rate.burst - 1);
  const auto wait = std::chrono::duration_cast<milliseconds>(b->tat - now) - allowance;
  return std::max(wait, milliseconds(0));
}

DeclineLimiter::Bucket* DeclineLimiter::find(const std::string& key) {
  auto it = table_.find(key);
  return it == table_.end() ? nullptr : &it->second;
}

void DeclineLimiter::take(const std::string& key, Rate rate, TimePoint now) {
  Bucket* b = find(key);
  if (!b) {
    make_room(now);
    b = &table_.emplace(key, Bucket{now}).first->second;
  }
  b->tat = std::max(b->tat, now) + rate.refill;
}

void DeclineLimiter::make_room(TimePoint now) {
  if (table_.size() < limits_.max_entries) return;
  // A full bucket is the same as no entry: drop those first. If none is full, drop the one
  // nearest to full (it forgets the least).
  std::erase_if(table_, [&](const auto& kv) { return kv.second.tat <= now; });
  if (table_.size() < limits_.max_entries) return;
  auto victim = std::min_element(table_.begin(), table_.end(),
                                 [](const auto& a, const auto& b) { return a.second.tat < b.second.tat; });
  table_.erase(victim);
}

void DeclineLimiter::note_suppressed(std::string_view source, bool by_source) {
  ++total_;
  ++pending_.count;
  ++(by_source ? pending_.by_source : pending_.by_card);
  auto& named = pending_.sources;
  if (std::find(named.begin(), named.end(), source) != named.end()) return;
  if (named.size() < SuppressionReport::kMaxNamed) named.emplace_back(source);
  else pending_.more_sources = true;
}

bool DeclineLimiter::admit(std::string_view source, ByteView card) {
  const auto now = clock_();
  const Rate source_rate{limits_.source_burst, limits_.source_refill};
  const Rate card_rate{limits_.card_burst, limits_.card_refill};
  const std::string skey = "s:" + std::string(source);
  const std::string ckey = "c:" + to_hex(card);
  std::lock_guard lock(mu_);
  const bool source_empty = wait_of(find(skey), source_rate, now).count() > 0;
  const bool card_empty = !source_empty && wait_of(find(ckey), card_rate, now).count() > 0;
  if (source_empty || card_empty) {
    note_suppressed(source, source_empty);
    return false;
  }
  take(skey, source_rate, now);
  take(ckey, card_rate, now);
  return true;
}

std::uint32_t DeclineLimiter::retry_after(std::string_view source, ByteView card) {
  const auto now = clock_();
  std::lock_guard lock(mu_);
  const auto ws = wait_of(find("s:" + std::string(source)), {limits_.source_burst, limits_.source_refill}, now);
  const auto wc = wait_of(find("c:" + to_hex(card)), {limits_.card_burst, limits_.card_refill}, now);
  const auto ms = std::max(ws, wc).count();
  return static_cast<std::uint32_t>(std::max<std::int64_t>((ms + 999) / 1000, 1));
}

std::optional<SuppressionReport> DeclineLimiter::take_report(bool force) {
  const auto now = clock_();
  std::lock_guard lock(mu_);
  if (pending_.count == 0) return std::nullopt;
  if (!force && last_report_ && now - *last_report_ < limits_.report_every) return std::nullopt;
  last_report_ = now;
  return std::exchange(pending_, SuppressionReport{});
}

std::uint64_t DeclineLimiter::suppressed_total() {
  std::lock_guard lock(mu_);
  return total_;
}

std::size_t DeclineLimiter::size() {
  std::lock_guard lock(mu_);
  return table_.size();
}

}  // namespace otac::backend
