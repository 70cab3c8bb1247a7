// otac-dispenser-emu: a cash dispenser on a Unix stream socket, speaking the dispenser line
// protocol (docs/protocol.md §8), with cassettes and faults on demand. See --help.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "otac/hw/dispenser_model.hpp"
#include "otac/sys/fd.hpp"
#include "otac/sys/file.hpp"

namespace {

namespace d = otac::dispenser;
using otac::hw::dispenser::Model;
using otac::sys::Fd;

std::atomic<bool> g_stop{false};

extern "C" void on_signal(int /*sig*/) { g_stop.store(true); }

constexpr std::size_t kMaxClients = 8;

void print_help() {
  std::printf(
      "Usage: otac-dispenser-emu --socket PATH --cassettes D1xN1[,D2xN2...] [OPTIONS]\n"
      "\n"
      "Emulates a cash dispenser on a Unix stream socket. Each request is one line, each reply\n"
      "one line (docs/protocol.md section 8):\n"
      "  STATUS                    -> OK STATUS ready|empty D1xN1,...\n"
      "  DISPENSE AMOUNT SECONDS   -> OK DISPENSED AMOUNT, or ERR JAM|PARTIAL|SHUTTER|RETRACTED|EMPTY HANDED\n"
      "  FAULT KIND                -> OK FAULT KIND: the next DISPENSE suffers KIND\n"
      "Amounts and denominations are minor units; SECONDS is the customer's time to take the\n"
      "notes. Faults: jam (before any note), partial (the largest note comes out, then a jam),\n"
      "shutter (the shutter does not open; notes retracted), not_taken (presented, not taken,\n"
      "retracted after SECONDS), empty (answers EMPTY), none.\n"
      "\n"
      "Options:\n"
      "  --socket PATH        the socket to listen on; an existing socket there is replaced,\n"
      "                       any other file is refused\n"
      "  --cassettes LIST     denominations and note counts, e.g. 2000x50,5000x20 (at most 8)\n"
      "  --fault KIND         the first DISPENSE suffers KIND\n"
      "  --delay-ms MS        each DISPENSE takes MS milliseconds to count the notes (default 0)\n"
      "  --ready-file FILE    written once the socket listens (the readiness signal); removed on exit\n"
      "  --verbose            one line per request on standard error\n"
      "  --help               this text\n"
      "Stops on SIGTERM or SIGINT. Exit status: 0 stopped, 1 failed, 2 usage error.\n");
}

int usage(const std::string& msg) {
  std::fprintf(stderr, "otac-dispenser-emu: %s (see --help)\n", msg.c_str());
  return 2;
}

struct Options {
  std::string socket_path;
  std::vector<d::Cassette> cassettes;
  d::Fault fault = d::Fault::none;
  std::string ready_file;
  std::uint32_t delay_ms = 0;
  bool verbose = false;
};

// A connected terminal: what it sent that is not yet a whole line.
struct Client {
  Fd fd;
  std::string pending;
};

Fd listen_on(const std::string& path, std::string& err) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    err = "socket path " + path + " is longer than " + std::to_string(sizeof addr.sun_path - 1) + " bytes";
    return Fd{};
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      err = path + " exists and is not a socket; refusing to replace it";
      return Fd{};
    }
    ::unlink(path.c_str());
  }
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    err = std::string("socket: ") + std::strerror(errno);
    return Fd{};
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd.get(), 4) != 0) {
    err = "cannot listen on " + path + ": " + std::strerror(errno);
    return Fd{};
  }
  return fd;
}

bool send_all(int fd, std::string_view s) {
  for (int guard = 0; !s.empty() && guard < 1000; ++guard) {
    const ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
  return s.empty();
}

// Waits (the notes being counted, the customer's time to take them) unless a stop signal comes first.
void wait_for(std::chrono::milliseconds time) {
  const auto until = std::chrono::steady_clock::now() + time;
  while (!g_stop.load() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

// Answers every whole line the client has sent; false when the client must be dropped.
bool serve_lines(Model& model, Client& c, const Options& opt) {
  for (int guard = 0; guard < 64; ++guard) {
    const std::size_t nl = c.pending.find('\n');
    if (nl == std::string::npos) {
      if (c.pending.size() >= d::kMaxLine) {  // a line too long: say so and hang up
        (void)send_all(c.fd.get(), "ERR BAD_REQUEST 0\n");
        return false;
      }
      return true;
    }
    const std::string line = c.pending.substr(0, nl);
    c.pending.erase(0, nl + 1);
    if (opt.delay_ms > 0 && line.rfind("DISPENSE ", 0) == 0) wait_for(std::chrono::milliseconds(opt.delay_ms));
    auto a = model.handle(line);
    if (a.delay_seconds > 0) wait_for(std::chrono::seconds(a.delay_seconds));
    if (opt.verbose) std::fprintf(stderr, "otac-dispenser-emu: %s -> %.*s\n", line.substr(0, 64).c_str(),
                              static_cast<int>(a.line.size() - 1), a.line.c_str());
    if (!send_all(c.fd.get(), a.line)) return false;
  }
  return true;
}

int run(const Options& opt) {
  std::string err;
  Fd listener = listen_on(opt.socket_path, err);
  if (!listener) {
    std::fprintf(stderr, "otac-dispenser-emu: %s\n", err.c_str());
    return 1;
  }
  Model model(opt.cassettes);
  model.set_fault(opt.fault);
  if (!opt.ready_file.empty()) {
    if (auto w = otac::sys::write_file_atomic(opt.ready_file, opt.socket_path + "\n", {.mode = 0644}); !w) {
      std::fprintf(stderr, "otac-dispenser-emu: %s\n", w.error().message.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "otac-dispenser-emu: ready on %s with %s\n", opt.socket_path.c_str(),
               d::encode_cassettes(model.cassettes()).c_str());
  std::vector<Client> clients;
  while (!g_stop.load()) {
    std::vector<pollfd> fds{{listener.get(), POLLIN, 0}};
    for (const auto& c : clients) fds.push_back({c.fd.get(), POLLIN, 0});
    const int n = ::poll(fds.data(), fds.size(), 200);
    if (n < 0 && errno != EINTR) {
      std::fprintf(stderr, "otac-dispenser-emu: poll: %s\n", std::strerror(errno));
      return 1;
    }
    if (n <= 0) continue;
    for (std::size_t i = fds.size(); i-- > 1;) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      Client& c = clients[i - 1];
      char buf[512];
      const ssize_t got = ::recv(c.fd.get(), buf, sizeof buf, 0);
      bool keep = got > 0;
      if (keep) {
        c.pending.append(buf, static_cast<std::size_t>(got));
        keep = serve_lines(model, c, opt);
      }
      if (!keep) clients.erase(clients.begin() + static_cast<std::ptrdiff_t>(i - 1));
    }
    if (fds[0].revents & POLLIN) {
      Fd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (conn && clients.size() < kMaxClients) clients.push_back(Client{std::move(conn), {}});
    }
  }
  ::unlink(opt.socket_path.c_str());
  if (!opt.ready_file.empty()) ::unlink(opt.ready_file.c_str());
  std::fprintf(stderr, "otac-dispenser-emu: stopped; cassettes %s, retracted %lld\n", d::encode_cassettes(model.cassettes()).c_str(),
               static_cast<long long>(model.retracted()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](std::string_view& v) {
      if (i + 1 >= argc) return false;
      v = argv[++i];
      return true;
    };
    std::string_view v;
    if (a == "--help" || a == "-h") {
      print_help();
      return 0;
    } else if (a == "--socket") {
      if (!value(v) || v.empty()) return usage("--socket needs a path");
      opt.socket_path = std::string(v);
    } else if (a == "--cassettes") {
      if (!value(v)) return usage("--cassettes needs a list such as 2000x50,5000x20");
      auto c = d::parse_cassettes(v);
      if (!c) return usage("--cassettes: " + c.error().message);
      opt.cassettes = std::move(*c);
    } else if (a == "--fault") {
      if (!value(v)) return usage("--fault needs a kind");
      auto r = d::parse_request("FAULT " + std::string(v));
      if (!r) return usage("--fault: " + r.error().message);
      opt.fault = r->fault;
    } else if (a == "--ready-file") {
      if (!value(v) || v.empty()) return usage("--ready-file needs a path");
      opt.ready_file = std::string(v);
    } else if (a == "--delay-ms") {
      if (!value(v)) return usage("--delay-ms needs milliseconds");
      std::uint32_t ms = 0;
      const bool digits = !v.empty() && v.size() <= 6 && v.find_first_not_of("0123456789") == std::string_view::npos;
      if (digits) ms = static_cast<std::uint32_t>(std::stoul(std::string(v)));
      if (!digits || ms > 600000) return usage("--delay-ms needs milliseconds 0..600000");
      opt.delay_ms = ms;
    } else if (a == "--verbose" || a == "-v") {
      opt.verbose = true;
    } else {
      return usage("unknown argument '" + std::string(a) + "'");
    }
  }
  if (opt.socket_path.empty()) return usage("--socket PATH is required");
  if (opt.cassettes.empty()) return usage("--cassettes is required");
  std::signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  (void)sigaction(SIGTERM, &sa, nullptr);
  (void)sigaction(SIGINT, &sa, nullptr);
  return run(opt);
}
