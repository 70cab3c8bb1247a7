// A throw-away PostgreSQL cluster for tests: initdb and pg_ctl from Debian's postgresql-15,
// run as an unprivileged user when the tests run as root (PostgreSQL refuses root), listening
// only on a Unix socket in a temporary directory (no TCP port, so parallel tests never
// collide), and stopped by the postmaster's PID at the end.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>

namespace otac::pgtest {

class PgCluster {
 public:
  /// Creates and starts the cluster; throws std::runtime_error naming the step that failed
  /// (with the server log's tail).
  PgCluster();
  /// Stops the postmaster by PID (fast shutdown, then SIGKILL after 10 s) and removes the files.
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  /// The process's shared cluster, started on first use and stopped at exit. Returns nullptr
  /// (with the reason in why) when PostgreSQL is not installed.
  static PgCluster* shared(std::string* why = nullptr);

  /// Creates a fresh, empty database and returns its libpq connection string.
  std::string create_database();
  /// A libpq connection string for database `db` as the cluster's superuser.
  std::string conninfo(const std::string& db) const;
  /// Runs one SQL command through psql as the superuser; throws on failure.
  void psql(const std::string& db, const std::string& sql) const;
  /// Makes `user` authenticate with a password (SCRAM) on the socket, then reloads.
  void require_password_for(const std::string& user);
  /// The database's content as pg_dump writes it (plain SQL, data only).
  std::string dump(const std::string& db) const;
  /// Stops the server (fast shutdown) and starts it again on the same socket.
  void restart();
  /// Stops the server (fast shutdown; SIGKILL after 10 s), by the postmaster's PID.
  void stop();
  /// Starts the stopped server again.
  void start();

  pid_t postmaster_pid() const;
  const std::filesystem::path& socket_dir() const { return sockets_; }
  static constexpr const char* kBinDir = "/usr/lib/postgresql/15/bin";

 private:
  std::filesystem::path dir_;      // everything lives here
  std::filesystem::path data_;
  std::filesystem::path sockets_;
  std::string run_as_;             // "nobody" when root, else empty (run as ourselves)
  int next_db_ = 0;
};

}  // namespace otac::pgtest
