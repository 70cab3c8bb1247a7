// The PN532 emulator with its I/O: a pseudo-terminal that libnfc's pn532_uart driver opens,
// a TCP port where a vicc client (the card) connects, and an optional Unix control socket for
// fault injection. Used by the otac-pn532-emu program and in-process by tests and benchmarks.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "otac/common/result.hpp"
#include "otac/hw/pn532_chip.hpp"

namespace otac::hw::pn532 {

/// Everything the emulator needs to start.
struct EmulatorOptions {
  std::string link;                 ///< symlink created to the pty slave (libnfc: pn532_uart:LINK)
  std::uint16_t card_port = 0;      ///< TCP port on 127.0.0.1 for the vicc card; 0 = any free
  std::string port_file;            ///< if set, the actual card port is written here when ready
  std::string control_path;         ///< if set, a Unix stream socket taking control commands
  Faults faults;                    ///< faults active from the start
  Identity identity;                ///< UID, ATQA, SAK, ATS reported for the card
  std::chrono::milliseconds card_timeout{5000};  ///< longest wait for the card's answer
  bool verbose = false;             ///< log frames and events to stderr
};

/// A running emulator. Create, then call run() on one thread; control() and request_stop()
/// may be called from any thread.
class Emulator {
 public:
  /// Opens the pty, creates the link, binds the card port and control socket.
  static Result<std::unique_ptr<Emulator>> create(EmulatorOptions options);
  ~Emulator();  ///< closes everything and removes the link, control socket and port file
  Emulator(const Emulator&) = delete;
  Emulator& operator=(const Emulator&) = delete;

  /// Serves until request_stop(); fails only on an unexpected OS error.
  Result<void> run();
  /// Asks run() to return soon. Async-signal-safe.
  void request_stop() noexcept;
  /// Applies a control command (same text as the control socket); thread-safe.
  std::string control(std::string_view line);
  /// The TCP port the card connects to.
  std::uint16_t card_port() const;
  /// The pty slave device (/dev/pts/N) behind the link.
  const std::string& slave_path() const;
  /// The connstring libnfc takes: "pn532_uart:" + link.
  std::string connstring() const;

  struct Impl;  ///< implementation detail, defined in the .cpp

 private:
  explicit Emulator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace otac::hw::pn532
