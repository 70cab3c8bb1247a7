// Test helpers for the integration tests: temp dirs, child processes stopped by PID, shell
// scripts from tests/support, and a machine-wide lock file.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace otac::applet::test {

/// A temporary directory removed at scope exit (tests/test_support.hpp).
using TempDir = otac::test::TempDir;

/// A child process with stdout+stderr to a log file; SIGTERM (then SIGKILL) by PID at scope exit.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::filesystem::path& log) {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) { ::dup2(fd, 1); ::dup2(fd, 2); }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Child() { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  /// Stops the child; returns its exit status (or -1).
  int stop() {
    if (pid_ <= 0) return status_;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) { pid_ = -1; status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1; return status_; }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return -1;
  }
  bool running() {
    if (pid_ <= 0) return false;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) { pid_ = -1; status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1; return false; }
    return true;
  }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

/// Runs a shell command; returns its exit status.
inline int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/// What a shell command printed on stdout, and its exit status (-1 if it did not exit).
struct ShellResult {
  int status;
  std::string out;
};

/// Runs a shell command and reads at most 1000 lines of its stdout; the caller adds any
/// redirection of stderr.
inline ShellResult run_shell(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("popen failed: " + cmd);
  std::string out;
  char buf[512];
  for (int i = 0; i < 1000 && std::fgets(buf, sizeof buf, p); ++i) out += buf;
  const int rc = ::pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

/// The first line of a file (empty when it cannot be read).
inline std::string first_line(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::string s;
  std::getline(in, s);
  return s;
}

/// KEY=VALUE lines of an env file.
inline std::map<std::string, std::string> read_env(const std::filesystem::path& p) {
  std::map<std::string, std::string> out;
  std::ifstream in(p);
  std::string line;
  for (int i = 0; i < 100 && std::getline(in, line); ++i) {
    auto eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

/// Holds an exclusive flock on a path (waits up to two minutes).
class FileLock {
 public:
  explicit FileLock(const char* path) : fd_(::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666)) {
    if (fd_ < 0) throw std::runtime_error(std::string("cannot open ") + path);
    for (int i = 0; i < 1200; ++i) {
      if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error(std::string("lock ") + path + " held for two minutes");
  }
  ~FileLock() { ::close(fd_); }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

#ifdef OTAC_SOURCE_DIR
/// pcscd with a vpcd virtual reader for one test (tests/support/pcscd.sh under DIR): started
/// here, stopped by its PID at scope exit. Only one pcscd runs per machine: hold a FileLock on
/// /tmp/otac-pcscd.lock first.
class Pcscd {
 public:
  explicit Pcscd(std::filesystem::path dir) : dir_(std::move(dir)) {
    if (sh(std::string(OTAC_SOURCE_DIR "/tests/support/pcscd.sh start ") + dir_.string()) != 0)
      throw std::runtime_error("pcscd did not start; its log is in " + dir_.string());
  }
  ~Pcscd() { sh(std::string(OTAC_SOURCE_DIR "/tests/support/pcscd.sh stop ") + dir_.string()); }
  Pcscd(const Pcscd&) = delete;
  Pcscd& operator=(const Pcscd&) = delete;
  /// The TCP port the virtual card connects to (vicc).
  std::string vpcd_port() const { return read_env(dir_ / "pcscd.env").at("VPCD_PORT"); }

 private:
  std::filesystem::path dir_;
};
#endif

}  // namespace otac::applet::test
