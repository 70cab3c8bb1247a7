#include "terminal/relay.hpp"

#include <gpiod.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

extern char** environ;

namespace otac::terminal {

namespace {

struct ChipCloser { void operator()(gpiod_chip* c) const { gpiod_chip_close(c); } };

Result<void> pulse_gpiod(const Config& c) {
  std::unique_ptr<gpiod_chip, ChipCloser> chip(gpiod_chip_open_lookup(c.relay_chip.c_str()));
  if (!chip) return make_error(Errc::io, "relay: cannot open GPIO chip " + c.relay_chip + " (check relay_chip and permissions on /dev/gpiochip*)");
  gpiod_line* line = gpiod_chip_get_line(chip.get(), c.relay_line);
  if (!line) return make_error(Errc::io, "relay: GPIO chip " + c.relay_chip + " has no line " + std::to_string(c.relay_line));
  gpiod_line_request_config cfg{};
  cfg.consumer = "otac-terminal";
  cfg.request_type = GPIOD_LINE_REQUEST_DIRECTION_OUTPUT;
  cfg.flags = c.relay_active_low ? GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW : 0;
  // Requested inactive (door shut); the line is released, and so returns to shut, on every path.
  if (gpiod_line_request(line, &cfg, 0) != 0)
    return make_error(Errc::io, "relay: line " + std::to_string(c.relay_line) + " is busy or not an output");
  const int on = gpiod_line_set_value(line, 1);
  if (on == 0) std::this_thread::sleep_for(std::chrono::milliseconds(c.relay_pulse_ms));
  const int off = gpiod_line_set_value(line, 0);
  gpiod_line_release(line);
  if (on != 0) return make_error(Errc::io, "relay: cannot drive line " + std::to_string(c.relay_line));
  if (off != 0) return make_error(Errc::io, "relay: cannot release line " + std::to_string(c.relay_line) + "; check the door");
  return {};
}

Result<void> run_command(const Config& c, const std::string& door) {
  const std::string ms = std::to_string(c.relay_pulse_ms);
  std::vector<std::string> args = {c.relay_command, "open", door, ms};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, c.relay_command.c_str(), nullptr, nullptr, argv.data(), environ) != 0)
    return make_error(Errc::io, "relay: cannot run " + c.relay_command + " (is it an executable file?)");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(c.relay_pulse_ms + 5000);
  int status = 0;
  for (int i = 0; i < 100000; ++i) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0) return make_error(Errc::io, "relay: lost the relay command's process");
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return make_error(Errc::timeout, "relay: " + c.relay_command + " did not finish within pulse time + 5 s; killed");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return make_error(Errc::io, "relay: " + c.relay_command + " failed (exit status " +
                                    std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + "); the door stays shut");
  return {};
}

}  // namespace

Result<void> pulse_relay(const Config& c, const std::string& door_id) {
  switch (c.relay) {
    case RelayKind::gpiod: return pulse_gpiod(c);
    case RelayKind::command: return run_command(c, door_id);
    case RelayKind::none: break;
  }
  return make_error(Errc::state, "relay: none configured (set relay = gpiod or command); the door stays shut");
}

}  // namespace otac::terminal
