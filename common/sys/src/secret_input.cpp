#include "otac/sys/secret_input.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "otac/sys/fd.hpp"

namespace otac::sys {
namespace {

// The terminal settings to put back if a signal ends the program while echo is off (Ctrl-C at
// the PIN prompt would otherwise leave the user's shell without echo). Only what a signal
// handler may touch: plain data, written before the handlers are installed.
struct EchoRestore {
  int fd = -1;
  termios settings{};
  volatile std::sig_atomic_t armed = 0;
};
EchoRestore g_echo_restore;
constexpr int kEchoSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
struct sigaction g_echo_prev[std::size(kEchoSignals)];

// While echo is off: a signal whose previous disposition was to end the program puts the
// terminal settings back first and then ends it as before; a program's own handler (a service
// that stops after the current transaction) is called and echo stays off until EchoOff goes.
extern "C" void echo_signal(int sig, siginfo_t* info, void* context) {
  std::size_t i = 0;
  while (i < std::size(kEchoSignals) && kEchoSignals[i] != sig) ++i;
  if (i == std::size(kEchoSignals)) return;
  const struct sigaction& prev = g_echo_prev[i];
  if ((prev.sa_flags & SA_SIGINFO) != 0) {
    if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, context);
    return;
  }
  if (prev.sa_handler == SIG_IGN) return;
  if (prev.sa_handler != SIG_DFL) {
    prev.sa_handler(sig);
    return;
  }
  if (g_echo_restore.armed) (void)::tcsetattr(g_echo_restore.fd, TCSANOW, &g_echo_restore.settings);
  g_echo_restore.armed = 0;
  (void)::sigaction(sig, &prev, nullptr);
  (void)::raise(sig);  // the default disposition (terminate) now runs
}

}  // namespace

EchoOff::EchoOff(int fd) : fd_(fd) {
  if (::tcgetattr(fd_, &old_) != 0) return;
  g_echo_restore.fd = fd_;
  g_echo_restore.settings = old_;
  g_echo_restore.armed = 1;
  struct sigaction sa {};
  sa.sa_sigaction = echo_signal;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  for (std::size_t i = 0; i < std::size(kEchoSignals); ++i) (void)::sigaction(kEchoSignals[i], &sa, &g_echo_prev[i]);
  termios t = old_;
  t.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  t.c_lflag |= ECHONL;
  active_ = ::tcsetattr(fd_, TCSAFLUSH, &t) == 0;
}

EchoOff::~EchoOff() {
  if (active_) (void)::tcsetattr(fd_, TCSAFLUSH, &old_);
  if (g_echo_restore.armed) {
    g_echo_restore.armed = 0;
    for (std::size_t i = 0; i < std::size(kEchoSignals); ++i) (void)::sigaction(kEchoSignals[i], &g_echo_prev[i], nullptr);
  }
}

namespace {

// One line from fd, one byte per read(2) so nothing after the newline is consumed. At most
// max_len bytes are kept; the rest of an overlong line is read and dropped (bounded too).
Result<SecretBytes> read_line(int fd, std::string_view what, std::size_t max_len) {
  std::vector<std::uint8_t> buf;
  buf.reserve(max_len + 1);  // no reallocation: no copy of the secret left behind
  struct Wipe {
    std::vector<std::uint8_t>& b;
    ~Wipe() { if (!b.empty()) secure_zero(b.data(), b.size()); }
  } wipe{buf};
  bool too_long = false, got_any = false;
  for (std::size_t i = 0; i < 4096; ++i) {  // bounded: a line longer than this is refused anyway
    std::uint8_t c = 0;
    ssize_t n = -1;
    for (int tries = 0; tries < 100; ++tries) {
      n = ::read(fd, &c, 1);
      if (n >= 0 || errno != EINTR) break;
    }
    if (n < 0) return make_error(Errc::io, "cannot read the " + std::string(what) + ": " + std::strerror(errno));
    if (n == 0) {
      if (!got_any) return make_error(Errc::truncated, "no " + std::string(what) + ": the input ended before it");
      break;
    }
    got_any = true;
    if (c == '\n') break;
    if (buf.size() < max_len) buf.push_back(c);
    else too_long = true;
  }
  if (!buf.empty() && buf.back() == '\r') buf.pop_back();
  if (too_long)
    return make_error(Errc::bad_length, "the " + std::string(what) + " is longer than " + std::to_string(max_len) + " bytes");
  return SecretBytes(ByteView(buf.data(), buf.size()));
}

}  // namespace

SecretReader::SecretReader(int fd) noexcept : fd_(fd), tty_(false) {
  if (fd_ < 0) {
    fd_ = STDIN_FILENO;
    tty_ = ::isatty(STDIN_FILENO) == 1;
  }
}

Result<SecretBytes> SecretReader::read(std::string_view what, std::size_t max_len) {
  if (!tty_) return read_line(fd_, what, max_len);
  // The controlling terminal, as getpass(3) does: the prompt goes there, not to stdout.
  Fd tty(::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY));
  const int fd = tty ? tty.get() : STDIN_FILENO;
  const std::string prompt = std::string(what) + ": ";
  (void)!::write(tty ? fd : STDERR_FILENO, prompt.data(), prompt.size());
  EchoOff quiet(fd);
  return read_line(fd, what, max_len);
}

Result<SecretBytes> read_secret_file(const std::filesystem::path& path, std::size_t max_size) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) return make_error(Errc::io, "cannot read " + path.string() + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return make_error(Errc::bad_value, path.string() + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return make_error(Errc::bad_value, path.string() + " has mode " + mode +
                                           ": a file holding a secret must not be accessible by group or others; run 'chmod 600 " +
                                           path.string() + "'");
  }
  if (static_cast<std::size_t>(st.st_size) > max_size)
    return make_error(Errc::bad_length, path.string() + " is larger than " + std::to_string(max_size) + " bytes");
  auto line = read_line(fd.get(), "secret in " + path.string(), max_size);
  if (!line) {
    if (line.error().code == Errc::truncated) return make_error(Errc::bad_value, path.string() + " is empty");
    return std::move(line).error();
  }
  std::size_t n = line->size();
  while (n > 0 && (line->data()[n - 1] == ' ' || line->data()[n - 1] == '\t')) --n;
  if (n == 0) return make_error(Errc::bad_value, path.string() + " is empty");
  return SecretBytes(ByteView(line->data(), n));
}

}  // namespace otac::sys
