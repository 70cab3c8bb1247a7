#include "otac/hw/pn532_emulator.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "otac/sys/fd.hpp"
#include "otac/sys/file.hpp"
#include "otac/sys/log.hpp"

namespace otac::hw::pn532 {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

using sys::Fd;

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 60000));
}

/// Writes all of data to a non-blocking socket before the deadline.
bool send_all(int fd, ByteView data, Clock::time_point deadline) {
  std::size_t done = 0;
  for (int guard = 0; done < data.size() && guard < 100000; ++guard) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      const int ms = remaining_ms(deadline);
      if (ms == 0 || ::poll(&p, 1, ms) <= 0) return false;
      continue;
    }
    return false;
  }
  return done == data.size();
}

/// Reads exactly n bytes from a non-blocking socket before the deadline.
bool recv_exact(int fd, std::uint8_t* out, std::size_t n, Clock::time_point deadline) {
  std::size_t done = 0;
  for (int guard = 0; done < n && guard < 100000; ++guard) {
    // Linux clears QUICKACK after use; without it each exchange waits ~40 ms for a delayed ACK.
    const int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    const ssize_t r = ::recv(fd, out + done, n - done, 0);
    if (r > 0) {
      done += static_cast<std::size_t>(r);
      continue;
    }
    if (r == 0) return false;  // the card went away
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pollfd p{fd, POLLIN, 0};
      const int ms = remaining_ms(deadline);
      if (ms == 0 || ::poll(&p, 1, ms) <= 0) return false;
      continue;
    }
    return false;
  }
  return done == n;
}

/// The card in the field: a vicc client on the card port (length-prefixed messages).
class ViccCard final : public Card {
 public:
  ViccCard(std::chrono::milliseconds timeout, bool verbose) : timeout_(timeout), verbose_(verbose) {}

  bool connected() const override { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  void attach(Fd fd) { fd_ = std::move(fd); }
  void detach(const char* why) {
    if (fd_.valid() && verbose_) sys::log::info("card_left", {{"why", why}});
    fd_.reset();
  }

  Result<void> power_on() override {
    if (!send_msg(Bytes{0x01}) || !send_msg(Bytes{0x04})) return fail("power on");
    auto atr = recv_msg();
    if (!atr || atr->empty()) return fail("ATR");
    return {};
  }
  void power_off() override {
    if (fd_.valid()) (void)send_msg(Bytes{0x00});
  }
  Result<Bytes> transmit(ByteView capdu) override {
    if (!send_msg(capdu)) return fail("C-APDU");
    auto r = recv_msg();
    if (!r) return fail("R-APDU");
    if (r->size() < 2) {
      detach("R-APDU shorter than a status word");
      return make_error(Errc::bad_length, "card answered fewer than 2 bytes");
    }
    return std::move(*r);
  }

 private:
  Error fail(const char* what) {
    detach(what);
    return make_error(Errc::io, std::string("card did not complete the ") + what + " exchange; it was dropped from the field");
  }
  bool send_msg(ByteView payload) {
    if (!fd_.valid() || payload.size() > 0xFFFF) return false;
    Bytes msg{static_cast<std::uint8_t>(payload.size() >> 8), static_cast<std::uint8_t>(payload.size() & 0xFF)};
    append(msg, payload);
    return send_all(fd_.get(), msg, Clock::now() + timeout_);
  }
  std::optional<Bytes> recv_msg() {
    if (!fd_.valid()) return std::nullopt;
    const auto deadline = Clock::now() + timeout_;
    std::array<std::uint8_t, 2> len{};
    if (!recv_exact(fd_.get(), len.data(), 2, deadline)) return std::nullopt;
    Bytes body(static_cast<std::size_t>(len[0] << 8 | len[1]));
    if (!body.empty() && !recv_exact(fd_.get(), body.data(), body.size(), deadline)) return std::nullopt;
    return body;
  }

  Fd fd_;
  std::chrono::milliseconds timeout_;
  bool verbose_;
};

struct ControlClient {
  Fd fd;
  std::string line;
};

}  // namespace

struct Emulator::Impl {
  EmulatorOptions opt;
  Fd master, slave, listener, control_listener, wake;
  std::string slave_path;
  std::uint16_t port = 0;
  bool link_made = false, control_made = false, port_file_made = false;
  ViccCard card;
  std::mutex mu;  // guards chip and card
  Chip chip;
  std::vector<ControlClient> clients;
  Bytes to_host;
  std::atomic<bool> stop{false};

  explicit Impl(EmulatorOptions o)
      : opt(std::move(o)), card(opt.card_timeout, opt.verbose), chip(card, opt.identity, opt.faults) {}

  ~Impl() {
    std::error_code ec;
    if (link_made) {
      // Remove the link only if it still points at our pty (another emulator may own it now).
      auto target = std::filesystem::read_symlink(opt.link, ec);
      if (!ec && target == slave_path) std::filesystem::remove(opt.link, ec);
    }
    if (control_made) std::filesystem::remove(opt.control_path, ec);
    if (port_file_made) std::filesystem::remove(opt.port_file, ec);
  }

  void log(const char* what, ByteView bytes) const {
    if (!opt.verbose) return;
    sys::log::info("frame", {{"dir", what}, {"hex", to_hex(bytes)}});
  }

  Result<void> open_pty() {
    master = Fd(::posix_openpt(O_RDWR | O_NOCTTY));
    if (!master.valid()) return make_error(Errc::io, errno_text("posix_openpt"));
    if (::grantpt(master.get()) != 0 || ::unlockpt(master.get()) != 0) {
      return make_error(Errc::io, errno_text("grantpt/unlockpt"));
    }
    std::array<char, 128> name{};
    if (::ptsname_r(master.get(), name.data(), name.size()) != 0) return make_error(Errc::io, errno_text("ptsname_r"));
    slave_path = name.data();
    // Holding the slave open keeps the master readable between libnfc sessions (no EIO/HUP).
    slave = Fd(::open(slave_path.c_str(), O_RDWR | O_NOCTTY));
    if (!slave.valid()) return make_error(Errc::io, errno_text(("open " + slave_path).c_str()));
    termios tio{};
    if (::tcgetattr(slave.get(), &tio) != 0) return make_error(Errc::io, errno_text("tcgetattr"));
    ::cfmakeraw(&tio);  // no echo, no CR/LF translation: frames are binary
    if (::tcsetattr(slave.get(), TCSANOW, &tio) != 0) return make_error(Errc::io, errno_text("tcsetattr"));
    set_nonblocking(master.get());
    return {};
  }

  Result<void> make_link() {
    std::error_code ec;
    const auto st = std::filesystem::symlink_status(opt.link, ec);
    if (std::filesystem::exists(st)) {
      if (!std::filesystem::is_symlink(st)) {
        return make_error(Errc::conflict, "--link " + opt.link + " exists and is not a symlink; refusing to replace it");
      }
      std::filesystem::remove(opt.link, ec);  // a stale link from an earlier run
    }
    if (::symlink(slave_path.c_str(), opt.link.c_str()) != 0) {
      return make_error(Errc::io, errno_text(("symlink " + opt.link).c_str()));
    }
    link_made = true;
    return {};
  }

  Result<void> listen_card() {
    listener = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener.valid()) return make_error(Errc::io, errno_text("socket"));
    const int one = 1;
    (void)::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(opt.card_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      return make_error(Errc::io, errno_text(("bind 127.0.0.1:" + std::to_string(opt.card_port)).c_str()) +
                                      "; pick another --card-port or 0 for any free port");
    }
    if (::listen(listener.get(), 4) != 0) return make_error(Errc::io, errno_text("listen"));
    socklen_t len = sizeof a;
    if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return make_error(Errc::io, errno_text("getsockname"));
    }
    port = ntohs(a.sin_port);
    return {};
  }

  Result<void> listen_control() {
    if (opt.control_path.empty()) return {};
    sockaddr_un a{};
    if (opt.control_path.size() >= sizeof a.sun_path) {
      return make_error(Errc::bad_length, "--control path is longer than a Unix socket path may be");
    }
    std::error_code ec;
    const auto st = std::filesystem::symlink_status(opt.control_path, ec);
    if (std::filesystem::exists(st)) {
      if (!std::filesystem::is_socket(st)) {
        return make_error(Errc::conflict, "--control " + opt.control_path + " exists and is not a socket");
      }
      std::filesystem::remove(opt.control_path, ec);
    }
    control_listener = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!control_listener.valid()) return make_error(Errc::io, errno_text("socket(AF_UNIX)"));
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, opt.control_path.c_str(), opt.control_path.size());
    if (::bind(control_listener.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      return make_error(Errc::io, errno_text(("bind " + opt.control_path).c_str()));
    }
    control_made = true;
    (void)::chmod(opt.control_path.c_str(), 0600);  // faults are for the owner only
    if (::listen(control_listener.get(), 4) != 0) return make_error(Errc::io, errno_text("listen(control)"));
    return {};
  }

  Result<void> write_port_file() {
    if (opt.port_file.empty()) return {};
    if (auto w = sys::write_file_atomic(opt.port_file, std::to_string(port) + "\n", {.mode = 0644}); !w) return w.error();
    port_file_made = true;
    return {};
  }

  void flush_to_host() {
    {
      std::lock_guard lock(mu);
      Bytes out = chip.take_output();
      if (!out.empty()) log("->", out);
      append(to_host, out);
    }
    // Bounded: a host that never reads cannot make us grow without limit.
    if (to_host.size() > 65536) to_host.erase(to_host.begin(), to_host.end() - 65536);
    for (int guard = 0; !to_host.empty() && guard < 64; ++guard) {
      const ssize_t n = ::write(master.get(), to_host.data(), to_host.size());
      if (n > 0) {
        to_host.erase(to_host.begin(), to_host.begin() + n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        break;  // EAGAIN: POLLOUT will bring us back
      }
    }
  }

  void accept_card() {
    Fd c(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!c.valid()) return;
    std::lock_guard lock(mu);
    if (card.connected()) {
      if (opt.verbose) sys::log::info("card_refused", {{"why", "one is in the field"}});
      return;  // closes c
    }
    const int one = 1;
    (void)::setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    card.attach(std::move(c));
    if (opt.verbose) sys::log::info("card_connected");
    chip.tick(Clock::now());
  }

  void check_card_idle() {
    std::lock_guard lock(mu);
    if (!card.connected()) return;
    std::array<std::uint8_t, 512> junk{};
    const ssize_t n = ::recv(card.fd(), junk.data(), junk.size(), 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      card.detach("disconnected");
    }
    // Unsolicited bytes from a card are ignored: in vicc only the reader side starts exchanges.
  }

  void serve_control(std::size_t i) {
    auto& cl = clients[i];
    std::array<char, 512> buf{};
    const ssize_t n = ::recv(cl.fd.get(), buf.data(), buf.size(), 0);
    if (n <= 0) {
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) cl.fd.reset();
      return;
    }
    cl.line.append(buf.data(), static_cast<std::size_t>(n));
    for (int guard = 0; guard < 64; ++guard) {
      const auto nl = cl.line.find('\n');
      if (nl == std::string::npos) break;
      std::string cmd = cl.line.substr(0, nl);
      cl.line.erase(0, nl + 1);
      std::string answer;
      {
        std::lock_guard lock(mu);
        answer = chip.control(cmd, Clock::now());
      }
      if (opt.verbose) sys::log::info("control", {{"command", cmd}, {"answer", answer}});
      answer += "\n";
      (void)send_all(cl.fd.get(), as_bytes(answer), Clock::now() + std::chrono::seconds(1));
    }
    if (cl.line.size() > 1024) cl.fd.reset();  // not a control client
  }
};

Emulator::Emulator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Emulator::~Emulator() = default;

Result<std::unique_ptr<Emulator>> Emulator::create(EmulatorOptions options) {
  if (options.link.empty()) return make_error(Errc::bad_value, "the emulator needs a link path (--link PATH)");
  auto impl = std::make_unique<Impl>(std::move(options));
  impl->wake = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!impl->wake.valid()) return make_error(Errc::io, errno_text("eventfd"));
  if (auto r = impl->open_pty(); !r) return r.error();
  if (auto r = impl->make_link(); !r) return r.error();
  if (auto r = impl->listen_card(); !r) return r.error();
  if (auto r = impl->listen_control(); !r) return r.error();
  if (auto r = impl->write_port_file(); !r) return r.error();  // last: it signals readiness
  return std::unique_ptr<Emulator>(new Emulator(std::move(impl)));
}

void Emulator::request_stop() noexcept {
  impl_->stop.store(true);
  const std::uint64_t one = 1;
  (void)!::write(impl_->wake.get(), &one, sizeof one);
}

std::string Emulator::control(std::string_view line) {
  std::string r;
  {
    std::lock_guard lock(impl_->mu);
    r = impl_->chip.control(line, Clock::now());
  }
  const std::uint64_t one = 1;
  (void)!::write(impl_->wake.get(), &one, sizeof one);  // the loop flushes any answer it released
  return r;
}

std::uint16_t Emulator::card_port() const { return impl_->port; }
const std::string& Emulator::slave_path() const { return impl_->slave_path; }
std::string Emulator::connstring() const { return "pn532_uart:" + impl_->opt.link; }

Result<void> Emulator::run() {
  Impl& s = *impl_;
  std::array<std::uint8_t, 4096> buf{};
  while (!s.stop.load()) {
    std::vector<pollfd> fds;
    fds.push_back({s.wake.get(), POLLIN, 0});
    fds.push_back({s.master.get(), static_cast<short>(POLLIN | (s.to_host.empty() ? 0 : POLLOUT)), 0});
    fds.push_back({s.listener.get(), POLLIN, 0});
    int card_fd = -1;
    {
      std::lock_guard lock(s.mu);
      card_fd = s.card.connected() ? s.card.fd() : -1;
    }
    fds.push_back({card_fd, POLLIN, 0});  // poll ignores negative fds
    fds.push_back({s.control_listener.valid() ? s.control_listener.get() : -1, POLLIN, 0});
    const std::size_t first_client = fds.size();
    for (auto& c : s.clients) fds.push_back({c.fd.get(), POLLIN, 0});

    int timeout = 1000;  // also bounds how long a missed wake-up could delay a stop
    {
      std::lock_guard lock(s.mu);
      if (auto due = s.chip.next_wakeup()) timeout = std::min(timeout, remaining_ms(*due) + 1);
    }
    const int n = ::poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno != EINTR) return make_error(Errc::io, errno_text("poll"));
    if (n > 0) {
      if (fds[0].revents & POLLIN) {
        std::uint64_t v = 0;
        (void)!::read(s.wake.get(), &v, sizeof v);
      }
      if (fds[1].revents & POLLIN) {
        const ssize_t r = ::read(s.master.get(), buf.data(), buf.size());
        if (r > 0) {
          const ByteView in(buf.data(), static_cast<std::size_t>(r));
          s.log("<-", in);
          std::lock_guard lock(s.mu);
          s.chip.receive(in, Clock::now());
        }
      }
      if (fds[2].revents & POLLIN) s.accept_card();
      if (fds[3].fd >= 0 && (fds[3].revents & (POLLIN | POLLHUP | POLLERR))) s.check_card_idle();
      if (fds[4].fd >= 0 && (fds[4].revents & POLLIN)) {
        Fd c(::accept4(s.control_listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (c.valid() && s.clients.size() < 8) s.clients.push_back(ControlClient{std::move(c), {}});
      }
      for (std::size_t i = 0; i < s.clients.size(); ++i) {
        if (fds[first_client + i].revents & (POLLIN | POLLHUP | POLLERR)) s.serve_control(i);
      }
      std::erase_if(s.clients, [](const ControlClient& c) { return !c.fd.valid(); });
    }
    {
      std::lock_guard lock(s.mu);
      s.chip.tick(Clock::now());
    }
    s.flush_to_host();
  }
  return {};
}

}  // namespace otac::hw::pn532
