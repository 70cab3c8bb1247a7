#include "pg_cluster.hpp"

#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace otac::pgtest {
namespace {

// Runs argv (optionally through runuser as `user`), waits at most `seconds`; returns the exit
// status, or -1 when it had to be killed.
int run(const std::vector<std::string>& args, const std::string& user, int seconds, const std::string& output) {
  std::vector<std::string> full;
  if (!user.empty()) full = {"/usr/sbin/runuser", "-u", user, "--"};
  full.insert(full.end(), args.begin(), args.end());
  std::fflush(stdout);  // the child must not write the parent's buffered output again
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (!output.empty()) {
      FILE* f = std::freopen(output.c_str(), "a", stdout);
      if (f) ::dup2(::fileno(stdout), 2);
    }
    std::vector<char*> argv;
    for (auto& a : full) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string tail(const std::filesystem::path& file) {
  std::ifstream f(file);
  std::stringstream s;
  s << f.rdbuf();
  const std::string all = s.str();
  return all.size() > 1500 ? all.substr(all.size() - 1500) : all;
}

void give_to(const std::filesystem::path& p, const std::string& user) {
  if (user.empty()) return;
  const passwd* pw = ::getpwnam(user.c_str());
  if (!pw || ::chown(p.c_str(), pw->pw_uid, pw->pw_gid) != 0)
    throw std::runtime_error("cannot give " + p.string() + " to user " + user);
}

}  // namespace

PgCluster::PgCluster(PgClusterOptions options) : options_(std::move(options)) {
  if (options_.tcp_port != 0) port_ = options_.tcp_port;
  std::string tmpl = (std::filesystem::temp_directory_path() / "otac-pg-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  data_ = dir_ / "data";
  sockets_ = dir_ / "sock";
  std::filesystem::create_directories(sockets_);
  if (::geteuid() == 0) run_as_ = "nobody";
  std::filesystem::permissions(dir_, std::filesystem::perms::owner_all | std::filesystem::perms::group_exec |
                                         std::filesystem::perms::others_exec);
  give_to(dir_, run_as_);
  give_to(sockets_, run_as_);
  const auto log = (dir_ / "initdb.log").string();
  const int rc = run({std::string(kBinDir) + "/initdb", "-D", data_.string(), "-U", "otac", "-A", "trust", "--no-sync",
                      "-E", "UTF8", "--locale=C"},
                     run_as_, 120, log);
  if (rc != 0) throw std::runtime_error("initdb failed (exit " + std::to_string(rc) + "):\n" + tail(log));
  if (!options_.ssl_key.empty()) {
    // PostgreSQL wants its key owned by the server's user and closed to others.
    std::filesystem::copy_file(options_.ssl_cert, data_ / "server.crt", std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(options_.ssl_key, data_ / "server.key", std::filesystem::copy_options::overwrite_existing);
    std::filesystem::permissions(data_ / "server.key", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    give_to(data_ / "server.crt", run_as_);
    give_to(data_ / "server.key", run_as_);
  }
  start();
}

PgCluster::~PgCluster() {
  try {
    stop();
  } catch (...) {
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void PgCluster::start() {
  const auto log = dir_ / "server.log";
  // fsync stays on: the tests that kill nodes rely on what PostgreSQL acknowledged.
  std::string opts = "-c listen_addresses='" + std::string(options_.tcp_port ? "127.0.0.1" : "") + "' -k " +
                     sockets_.string() + " -p " + std::to_string(port_) + " -c max_connections=400 -c shared_buffers=32MB";
  if (!options_.ssl_key.empty())
    opts += " -c ssl=on -c ssl_cert_file=" + (data_ / "server.crt").string() + " -c ssl_key_file=" + (data_ / "server.key").string();
  const int rc = run({std::string(kBinDir) + "/pg_ctl", "-D", data_.string(), "-l", log.string(), "-o", opts, "-w", "-t",
                      "60", "start"},
                     run_as_, 90, (dir_ / "pg_ctl.log").string());
  if (rc != 0) throw std::runtime_error("pg_ctl start failed (exit " + std::to_string(rc) + "):\n" + tail(log));
}

pid_t PgCluster::postmaster_pid() const {
  std::ifstream f(data_ / "postmaster.pid");
  long pid = 0;
  f >> pid;
  return static_cast<pid_t>(pid);
}

void PgCluster::stop() {
  const pid_t pid = postmaster_pid();
  if (pid <= 0) return;
  ::kill(pid, SIGINT);  // fast shutdown: roll back open transactions, checkpoint, exit
  for (int i = 0; i < 500 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
  for (int i = 0; i < 250 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

void PgCluster::restart() {
  stop();
  start();
}

std::string PgCluster::conninfo(const std::string& db) const {
  return "host=" + sockets_.string() + " port=" + std::to_string(port_) + " user=otac dbname=" + db;
}

void PgCluster::psql(const std::string& db, const std::string& sql) const {
  const auto log = (dir_ / "psql.log").string();
  const int rc = run({std::string(kBinDir) + "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo(db), "-c", sql},
                     "", 60, log);
  if (rc != 0) throw std::runtime_error("psql failed on `" + sql + "`:\n" + tail(log));
}

void PgCluster::require_password_for(const std::string& user, bool over_tls) {
  const auto hba = data_ / "pg_hba.conf";
  std::ifstream in(hba);
  std::stringstream rest;
  rest << in.rdbuf();
  in.close();
  {
    std::ofstream out(hba, std::ios::trunc);  // rewritten in place: the owner stays
    if (over_tls)  // the first matching line decides: TLS with a password, or nothing
      out << "hostssl all " << user << " 127.0.0.1/32 scram-sha-256\nhostnossl all " << user << " 127.0.0.1/32 reject\n";
    else
      out << "local all " << user << " scram-sha-256\n";
    out << rest.str();
  }
  const int rc = run({std::string(kBinDir) + "/pg_ctl", "-D", data_.string(), "reload"}, run_as_, 30,
                     (dir_ / "pg_ctl.log").string());
  if (rc != 0) throw std::runtime_error("pg_ctl reload failed");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the postmaster re-reads pg_hba.conf
}

std::string PgCluster::dump(const std::string& db) const {
  const auto out = dir_ / ("dump-" + db + ".sql");
  std::filesystem::remove(out);
  const int rc = run({std::string(kBinDir) + "/pg_dump", "--data-only", "-f", out.string(), "-d", conninfo(db)}, "", 60,
                     (dir_ / "pg_dump.log").string());
  if (rc != 0) throw std::runtime_error("pg_dump failed:\n" + tail(dir_ / "pg_dump.log"));
  std::ifstream f(out);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string PgCluster::create_database() {
  const std::string name = "t" + std::to_string(::getpid()) + "_" + std::to_string(++next_db_);
  psql("postgres", "CREATE DATABASE " + name);
  return conninfo(name);
}

PgCluster* PgCluster::shared(std::string* why) {
  static std::unique_ptr<PgCluster> cluster;
  static std::string failure;
  if (!cluster && failure.empty()) {
    if (!std::filesystem::exists(std::string(kBinDir) + "/initdb")) {
      failure = std::string("PostgreSQL 15 is not installed (no ") + kBinDir + "/initdb; run bash setup.sh deps)";
    } else {
      try {
        cluster = std::make_unique<PgCluster>();
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }
  }
  if (why) *why = failure;
  return cluster.get();
}

}  // namespace otac::pgtest
