// The lifecycle soak in ctest (bounded, several seeds) and as a long soak ([soak], hidden;
// bench/lifecycle_soak.sh), plus the regression replays of the sequences it found.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>

#include "lifecycle_model.hpp"
#include "soak_options.hpp"

using namespace otac::lifecycle;

namespace {

CardKind kind_for(std::uint64_t seed, const std::string& card) {
  if (card == "des3") return CardKind::des3;
  if (card == "aes") return CardKind::aes;
  if (card == "p256") return CardKind::p256;
  return static_cast<CardKind>(seed % 3);
}

// Runs one seed; on failure shrinks it and fails the test with the seed and the shrunk list.
Stats run_seed(Options opt, std::size_t steps, double seconds) {
  auto o = run(opt, steps, seconds);
  if (o.failure) {
    auto shrunk = shrink(opt, o.actions, o.failure->invariant, 60);
    FAIL(describe(opt, *o.failure, shrunk));
  }
  return o.stats;
}

std::string summary(const Stats& s) {
  std::string out = std::to_string(s.steps) + " steps, " + std::to_string(s.approvals) + " approvals, " +
                    std::to_string(s.declines) + " declines, " + std::to_string(s.held) + " held, " +
                    std::to_string(s.lists_loaded) + " lists loaded, " + std::to_string(s.quiet_phases) + " quiet phases, " +
                    std::to_string(s.restarts) + " restarts, " + std::to_string(s.retired) + " cards retired by open bugs:";
  for (auto b : s.struck) out += std::string(" ") + bug_name(b);
  return out;
}

}  // namespace

TEST_CASE("seeded random sequences keep every invariant (known open bugs excluded)", "[lifecycle]") {
  // About 10^5 steps in all; each seed is bounded in steps and in time.
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    Options opt;
    opt.seed = seed;
    opt.kind = kind_for(seed, "mixed");
    auto s = run_seed(opt, 17000, 12);
    INFO(summary(s));
    CHECK(s.steps >= 1000);
    CHECK(s.approvals > 0);
    CHECK(s.lists_loaded > 0);
    std::printf("lifecycle seed %llu: %s\n", static_cast<unsigned long long>(seed), summary(s).c_str());
  }
}

TEST_CASE("long soak (bench/lifecycle_soak.sh)", "[.][soak]") {
  const auto& so = soak_options();
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < so.seeds; ++i) {
    const double left = so.minutes * 60 - std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (left <= 0) break;
    Options opt;
    opt.seed = so.seed + i;
    opt.kind = kind_for(opt.seed, so.card);
    if (so.strict) opt.open_bugs.clear();
    auto s = run_seed(opt, so.steps, left);
    std::printf("lifecycle soak seed %llu: %s\n", static_cast<unsigned long long>(opt.seed), summary(s).c_str());
    CHECK(s.steps > 0);
  }
}
