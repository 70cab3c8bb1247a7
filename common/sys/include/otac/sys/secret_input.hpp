// Secrets that programs read without putting them on the command line, where `ps` and the
// shell history would show them: PINs from the terminal with echo off or from a descriptor
// when scripted, tokens and keys from files that only their owner may read.
#pragma once

#include <termios.h>

#include <cstddef>
#include <filesystem>
#include <string_view>

#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"

namespace otac::sys {

/// Echo off on a terminal for the lifetime of the object (ECHONL keeps the newline visible).
/// The old settings come back on every way out: scope exit, error paths, and SIGINT, SIGTERM,
/// SIGHUP or SIGQUIT while a prompt waits (a signal that would end the program restores them
/// first; a program's own handler for it is called and echo stays off until the object goes).
/// One at a time per process.
class EchoOff {
 public:
  explicit EchoOff(int fd);
  ~EchoOff();
  EchoOff(const EchoOff&) = delete;
  EchoOff& operator=(const EchoOff&) = delete;

 private:
  int fd_;
  termios old_{};
  bool active_ = false;
};

/// Reads the successive secrets of one command (PIN, then PUK, ...), one line each.
/// From a descriptor (a pipe, a here-document, a file opened by the shell) it reads exactly one
/// line per call, byte by byte, so that the next secret stays in the descriptor. From a
/// terminal it writes the prompt and reads with echo off.
class SecretReader {
 public:
  /// fd >= 0: read lines from that descriptor (--pin-fd N). fd < 0: the terminal
  /// (/dev/tty) when standard input is one, else lines from standard input.
  explicit SecretReader(int fd = -1) noexcept;

  /// The next secret, without its line end. `what` names it in the prompt and in errors
  /// ("PIN", "new PIN"). Fails when the input ends first, or when the line is longer than
  /// `max_len` bytes (the excess is not kept).
  Result<SecretBytes> read(std::string_view what, std::size_t max_len = 64);

  /// True when read() prompts on a terminal (callers then ask twice for a new PIN).
  bool interactive() const noexcept { return tty_; }

 private:
  int fd_;
  bool tty_;
};

/// Reads a file holding a secret (a token or a key): refused unless it is a regular file that
/// neither group nor others may access (like ssh's private keys; the message says which chmod
/// fixes it). Returns the first line, trailing blanks removed; fails when it is empty.
Result<SecretBytes> read_secret_file(const std::filesystem::path& path, std::size_t max_size = 4096);

}  // namespace otac::sys
