// A throw-away PostgreSQL cluster for tests: initdb and pg_ctl from Debian's postgresql-15,
// run as an unprivileged user when the tests run as root (PostgreSQL refuses root), listening
// on a Unix socket in a temporary directory (by default nothing on TCP, so parallel tests never
// collide; a test may add a loopback port from tests/support/freeport.sh, with TLS), and
// stopped by the postmaster's PID at the end.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace otac::pgtest {

/// What a cluster listens on besides its Unix socket.
struct PgClusterOptions {
  /// A TCP port on 127.0.0.1 (reserved with tests/support/freeport.sh), 0 = none.
  std::uint16_t tcp_port = 0;
  /// With tcp_port: ssl = on with this certificate chain and key (PEM; the key is copied
  /// into the cluster's directory, owned by the server's user, mode 0600).
  std::filesystem::path ssl_cert, ssl_key;
};

class PgCluster {
 public:
  /// Creates and starts the cluster; throws std::runtime_error naming the step that failed
  /// (with the server log's tail).
  explicit PgCluster(PgClusterOptions options = {});
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
  /// Makes `user` authenticate with a password (SCRAM) on the socket, then reloads. With
  /// over_tls, on the TCP port instead: a password over TLS, and no connection without TLS.
  void require_password_for(const std::string& user, bool over_tls = false);
  /// The database's content as pg_dump writes it (plain SQL, data only).
  std::string dump(const std::string& db) const;
  /// Stops the server (fast shutdown) and starts it again on the same socket.
  void restart();
  /// Stops the server (fast shutdown; SIGKILL after 10 s), by the postmaster's PID.
  void stop();
  /// Starts the stopped server again.
  void start();

  pid_t postmaster_pid() const;
  /// The port: the TCP port if there is one, else 5432 (which only names the socket file).
  std::uint16_t port() const { return port_; }
  const std::filesystem::path& socket_dir() const { return sockets_; }
  static constexpr const char* kBinDir = "/usr/lib/postgresql/15/bin";

 private:
  std::filesystem::path dir_;      // everything lives here
  std::filesystem::path data_;
  std::filesystem::path sockets_;
  std::string run_as_;             // "nobody" when root, else empty (run as ourselves)
  PgClusterOptions options_;
  std::uint16_t port_ = 5432;
  int next_db_ = 0;
};

}  // namespace otac::pgtest
