// Fixture of the server tests: the real otac-backend process in a temporary data directory
// on loopback port 0, and a real HTTPS client (with or without a client certificate).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "otac/net/http_client.hpp"
#include "test_service_support.hpp"

extern char** environ;

namespace otac::backend::test {

/// Reads a whole file ("" if absent).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// How many times `needle` occurs in `hay` (overlapping counted), e.g. a log line's key.
inline std::size_t occurrences(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

/// Trims trailing whitespace.
inline std::string chomp(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

/// Runs a program to completion; returns its exit status (bounded by the program itself).
inline int run_program(const std::vector<std::string>& argv, const std::filesystem::path& out_file) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/// A running otac-backend.
class Backend {
 public:
  TempDir tmp;
  std::filesystem::path dir = tmp.path / "data";
  pid_t pid = -1;
  std::uint16_t port = 0;
  std::uint16_t mo_port = 0;
  /// If set, the process's soft and hard file-descriptor limits (as `ulimit -n` would).
  rlim_t fd_limit = 0;

  Backend() = default;
  ~Backend() { stop(); }
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  /// Starts the process; config_lines (if any) become the config file before the first start.
  void start(const std::string& config_lines = {}, bool expect_ready = true) {
    std::filesystem::create_directories(dir);
    if (!config_lines.empty() && !std::filesystem::exists(dir / "otac-backend.conf")) {
      std::ofstream(dir / "otac-backend.conf") << config_lines;
    }
    std::filesystem::remove(dir / "backend.port");
    std::filesystem::remove(dir / "mo.port");
    std::vector<std::string> argv = {OTAC_BACKEND_BIN, "--data-dir", dir.string(), "--listen", "127.0.0.1:0"};
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const std::string log = (tmp.path / "backend.log").string();
    // fork + exec rather than posix_spawn so that the child dies with the test process
    // (PR_SET_PDEATHSIG) even if a test crashes before its destructor runs. Only
    // async-signal-safe calls between fork and exec.
    const pid_t parent = ::getpid();
    pid = ::fork();
    if (pid < 0) throw std::runtime_error("cannot fork for otac-backend");
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      if (fd_limit != 0) {
        const rlimit rl{fd_limit, fd_limit};
        ::setrlimit(RLIMIT_NOFILE, &rl);
      }
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) { ::dup2(fd, 1); ::dup2(fd, 2); ::close(fd); }
      ::execve(args[0], args.data(), environ);
      ::_exit(127);
    }
    if (!expect_ready) return;
    for (int i = 0; i < 200; ++i) {  // up to 20 s
      if (std::filesystem::exists(dir / "backend.port")) break;
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        throw std::runtime_error("otac-backend exited at start; log:\n" + slurp(tmp.path / "backend.log"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    port = static_cast<std::uint16_t>(std::stoi(slurp(dir / "backend.port")));
    mo_port = static_cast<std::uint16_t>(std::stoi(slurp(dir / "mo.port")));
  }

  /// SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit status (or -1).
  int stop() {
    if (pid <= 0) return -1;
    ::kill(pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    pid = -1;
    return -1;
  }

  /// SIGKILL, no warning (crash test).
  void kill9() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    pid = -1;
  }

  std::string log() const { return slurp(tmp.path / "backend.log"); }
  std::string admin_token() const { return chomp(slurp(dir / "admin.token")); }

  /// Client settings for this backend (no client certificate, no token).
  net::ClientOptions client() const {
    net::ClientOptions c;
    c.host = "127.0.0.1";
    c.port = port;
    c.ca_file = dir / "ca.pem";
    c.io_timeout = std::chrono::milliseconds(20000);
    return c;
  }
  /// As the admin operator.
  net::ClientOptions admin() const {
    auto c = client();
    c.bearer = admin_token();
    return c;
  }
  /// As a terminal with the given certificate files.
  net::ClientOptions terminal(const std::filesystem::path& cert, const std::filesystem::path& key) const {
    auto c = client();
    c.cert_file = cert;
    c.key_file = key;
    return c;
  }

  /// A request that must get an answer (throws on a network/TLS failure).
  static net::Response call(const net::ClientOptions& c, boost::beast::http::verb m, const std::string& target,
                            const std::string& body = {}) {
    auto r = net::request_once(c, m, target, body);
    if (!r) throw std::runtime_error(r.error().message);
    return *r;
  }

  /// Registers a terminal through the API; returns {cert path, key path}.
  std::pair<std::filesystem::path, std::filesystem::path> register_terminal(const std::string& id) {
    auto r = call(admin(), boost::beast::http::verb::post, "/v1/admin/terminals", R"({"id":")" + id + R"("})");
    if (r.status != 201) throw std::runtime_error("register terminal: " + r.body);
    auto o = boost::json::parse(r.body).as_object();
    const auto cert = tmp.path / (id + ".pem");
    const auto key = tmp.path / (id + ".key");
    std::ofstream(cert) << std::string(o.at("cert").as_string());
    std::ofstream(key) << std::string(o.at("key").as_string());
    return {cert, key};
  }

  /// Enrolls a card; returns {N, K}.
  std::pair<Bytes, SecretBytes> enroll(const std::string& body) {
    auto r = call(admin(), boost::beast::http::verb::post, "/v1/admin/cards", body);
    if (r.status != 201) throw std::runtime_error("enroll: " + r.body);
    auto o = boost::json::parse(r.body).as_object();
    return {hex(std::string(o.at("n").as_string())), SecretBytes(hex(std::string(o.at("k").as_string())))};
  }

  /// A store connection on the backend's database (the test holds the KEK, as an operator would).
  std::unique_ptr<Store> store() const {
    auto kek = Kek::load_or_create(dir / "kek.bin");
    if (!kek) throw std::runtime_error(kek.error().message);
    auto s = open_sqlite_store(dir / "otac.db", std::make_shared<const Kek>(std::move(*kek)));
    if (!s) throw std::runtime_error(s.error().message);
    return std::move(*s);
  }

  /// One OTAC, read from the store.
  SecretBytes otac(const Bytes& n, std::uint16_t list, std::uint16_t index) const {
    auto s = store();
    SecretBytes out;
    auto r = s->run([&](Tx& tx) -> Result<void> {
      auto o = tx.otac(n, list, index);
      if (!o) return o.error();
      out = std::move(o->key);
      return {};
    });
    if (!r) throw std::runtime_error(r.error().message);
    return out;
  }
};

/// The JSON body of a terminal's authorization request.
inline std::string auth_body(const AuthRequest& a) {
  boost::json::object o;
  o["txn_id"] = a.txn_id;
  o["card"] = to_hex(a.card);
  o["list"] = a.list_id;
  o["index"] = a.index;
  o["atc"] = a.atc;
  o["pin_state"] = a.pin_state;
  o["challenge"] = to_hex(a.challenge);
  o["cryptogram"] = to_hex(a.cryptogram);
  return boost::json::serialize(o);
}

/// The field `key` of a JSON answer: a string as is, anything else serialized; empty if absent.
inline std::string field(const std::string& body, const char* key) {
  auto v = boost::json::parse(body);
  const auto* f = v.as_object().if_contains(key);
  if (!f) return {};
  return f->is_string() ? std::string(f->as_string()) : boost::json::serialize(*f);
}

}  // namespace otac::backend::test
