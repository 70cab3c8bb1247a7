// The key ceremony under test conditions (needs otac_backend_http, where custody.cpp lives):
// hsm-migrate killed with kill -9 at a point the test chooses.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>

#include "custody.hpp"

namespace otac::backend::test {

/// hsm-migrate in a child process, in batches of `batch`, killed with SIGKILL after its
/// `kill_after`th batch (kill -9 at a point the test chooses). Fork before this process
/// opens the token: a child must not use a PKCS#11 module its parent initialized. Returns
/// the child's wait status.
inline int migrate_killed_midway(const Config& c, std::uint32_t batch, int kill_after) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("cannot fork");
  if (pid == 0) {
    CeremonyOptions o;
    o.rewrap.batch = batch;
    int batches = 0;
    o.rewrap.progress = [&batches, kill_after](std::uint64_t) {
      if (++batches == kill_after) ::raise(SIGKILL);
    };
    (void)hsm_migrate(c, o);
    ::_exit(0);
  }
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid) throw std::runtime_error("cannot wait for the migrating child");
  return st;
}

}  // namespace otac::backend::test
