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
#include "otac/sys/cli.hpp"
#include "otac/sys/fd.hpp"
#include "otac/sys/file.hpp"
#include "otac/sys/log.hpp"

namespace {

namespace d = otac::dispenser;
namespace log = otac::sys::log;
using otac::hw::dispenser::Model;
using otac::sys::Fd;

std::atomic<bool> g_stop{false};

extern "C" void on_signal(int /*sig*/) { g_stop.store(true); }

constexpr std::size_t kMaxClients = 8;

// The text of --help after CLI11's list of the options.
constexpr const char* kHelp = R"(
Emulates a cash dispenser on a Unix stream socket. Each request is one line, each reply one
line (docs/protocol.md section 8):
  STATUS                    -> OK STATUS ready|empty D1xN1,...
  DISPENSE AMOUNT SECONDS   -> OK DISPENSED AMOUNT, or ERR JAM|PARTIAL|SHUTTER|RETRACTED|EMPTY HANDED
  FAULT KIND                -> OK FAULT KIND: the next DISPENSE suffers KIND
Amounts and denominations are minor units; SECONDS is the customer's time to take the notes.

Required:
  --socket PATH        the socket to listen on; an existing socket there is replaced, any
                       other file is refused
  --cassettes LIST     denominations and note counts, e.g. 2000x50,5000x20 (at most 8)
Options:
  --fault KIND         the first DISPENSE suffers KIND: jam (before any note), partial (the
                       largest note comes out, then a jam), shutter (the shutter does not
                       open; notes retracted), not_taken (presented, not taken, retracted after
                       SECONDS), empty (answers EMPTY), none
  --delay-ms MS        each DISPENSE takes MS milliseconds (0..600000) to count the notes
                       (default 0)
  --ready-file FILE    written once the socket listens (the readiness signal); removed on exit
  --verbose            one log line per request and reply on standard error

Logs go to standard error, one key=value line per event (ready, request, stopped, failed).
Stops on SIGTERM or SIGINT. Exit status: 0 stopped, 1 failed, 2 usage error.
)";

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
    if (opt.verbose)
      log::info("request", {{"request", line.substr(0, 64)}, {"reply", a.line.substr(0, a.line.size() - 1)}});
    if (!send_all(c.fd.get(), a.line)) return false;
  }
  return true;
}

int run(const Options& opt) {
  std::string err;
  Fd listener = listen_on(opt.socket_path, err);
  if (!listener) {
    log::error("failed", {{"error", err}});
    return 1;
  }
  Model model(opt.cassettes);
  model.set_fault(opt.fault);
  if (!opt.ready_file.empty()) {
    if (auto w = otac::sys::write_file_atomic(opt.ready_file, opt.socket_path + "\n", {.mode = 0644}); !w) {
      log::error("failed", {{"error", w.error().message}});
      return 1;
    }
  }
  log::info("ready", {{"socket", opt.socket_path}, {"cassettes", d::encode_cassettes(model.cassettes())}});
  std::vector<Client> clients;
  while (!g_stop.load()) {
    std::vector<pollfd> fds{{listener.get(), POLLIN, 0}};
    for (const auto& c : clients) fds.push_back({c.fd.get(), POLLIN, 0});
    const int n = ::poll(fds.data(), fds.size(), 200);
    if (n < 0 && errno != EINTR) {
      log::error("failed", {{"error", std::string("poll: ") + std::strerror(errno)}});
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
  log::info("stopped", {{"cassettes", d::encode_cassettes(model.cassettes())}, {"retracted", std::to_string(model.retracted())}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  // The command line through CLI11 (otac/sys/cli.hpp): the values are checked as they are
  // parsed, so a bad one is a one-line usage error that names its option.
  CLI::App app{"Emulates a cash dispenser on a Unix stream socket (docs/protocol.md section 8).", "otac-dispenser-emu"};
  otac::sys::cli_defaults(app);
  app.footer(kHelp);
  const auto not_empty = [](const std::string& v) { return v.empty() ? std::string("needs a path") : std::string(); };
  app.add_option("--socket", opt.socket_path, "the Unix socket to listen on")->type_name("PATH")->required()->check(not_empty);
  app.add_option_function<std::string>(
         "--cassettes",
         [&opt](const std::string& v) {
           auto c = d::parse_cassettes(v);
           if (!c) throw CLI::ValidationError("--cassettes", c.error().message);
           opt.cassettes = std::move(*c);
         },
         "denominations and note counts, e.g. 2000x50,5000x20")
      ->type_name("LIST")
      ->required();
  app.add_option_function<std::string>(
         "--fault",
         [&opt](const std::string& v) {
           auto r = d::parse_request("FAULT " + v);
           if (!r) throw CLI::ValidationError("--fault", r.error().message);
           opt.fault = r->fault;
         },
         "the first DISPENSE suffers KIND")
      ->type_name("KIND");
  app.add_option("--delay-ms", opt.delay_ms, "milliseconds each DISPENSE takes (default 0)")
      ->type_name("MS")
      ->check(CLI::Range(0u, 600000u));
  app.add_option("--ready-file", opt.ready_file, "written once the socket listens")->type_name("FILE")->check(not_empty);
  app.add_flag("-v,--verbose", opt.verbose, "one log line per request");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return otac::sys::cli_exit(app, e);
  }
  std::signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  (void)sigaction(SIGTERM, &sa, nullptr);
  (void)sigaction(SIGINT, &sa, nullptr);
  return run(opt);
}
