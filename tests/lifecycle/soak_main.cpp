// The Catch2 main of the lifecycle soak, with the soak's own options: --steps, --seed,
// --minutes and --card run the hidden "[soak]" test for as long as asked.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>

#include "soak_options.hpp"

namespace otac::lifecycle {
SoakOptions& soak_options() {
  static SoakOptions o;
  return o;
}
}  // namespace otac::lifecycle

int main(int argc, char* argv[]) {
  // The model tests logic, not the disk: keep its SQLite files on tmpfs when there is one
  // (every commit is an fsync, synchronous=FULL).
  std::error_code ec;
  if (!std::getenv("TMPDIR") && std::filesystem::is_directory("/dev/shm", ec)) ::setenv("TMPDIR", "/dev/shm", 0);
  Catch::Session session;
  auto& o = otac::lifecycle::soak_options();
  using Catch::clara::Opt;
  session.cli(session.cli() | Opt(o.steps, "steps")["--steps"]("[soak] steps per seed (default 10000000)") |
              Opt(o.seed, "seed")["--seed"]("[soak] first seed (default 1)") |
              Opt(o.seeds, "seeds")["--seeds"]("[soak] number of seeds, one after the other (default 1)") |
              Opt(o.minutes, "minutes")["--minutes"]("[soak] stop after this many minutes (default 60)") |
              Opt(o.card, "card")["--card"]("[soak] des3, aes, p256 or mixed (default: by seed)") |
              Opt(o.strict)["--strict"]("[soak] treat no known bug as open"));
  if (int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  return session.run();
}
