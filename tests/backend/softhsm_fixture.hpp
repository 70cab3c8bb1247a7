// A throw-away SoftHSM2 token for tests: its own token directory and SOFTHSM2_CONF in a
// temporary directory, initialized with softhsm2-util (Debian softhsm2), a PIN file (0600),
// and helpers to make the custody a backend would use.
#pragma once

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kek.hpp"
#include "pkcs11.hpp"
#include "test_service_support.hpp"

namespace otac::backend::test {

inline constexpr const char* kSoftHsmModule = "/usr/lib/softhsm/libsofthsm2.so";

/// Runs a program with arguments (no shell); true when it exits 0. Output goes to the log.
inline bool run_program(const std::vector<std::string>& argv) {
  const pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) {
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    ::execvp(a[0], a.data());
    ::_exit(127);
  }
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid) return false;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/// One SoftHSM2 token "otac" (user PIN 1234) in a temporary directory.
struct SoftHsm {
  TempDir dir;
  std::filesystem::path tokens = dir.path / "tokens";
  std::filesystem::path conf = dir.path / "softhsm2.conf";
  std::filesystem::path pin = dir.path / "hsm.pin";

  SoftHsm() {
    std::filesystem::create_directories(tokens);
    std::ofstream(conf) << "directories.tokendir = " << tokens.string() << "\nobjectstore.backend = file\nlog.level = ERROR\n";
    ::setenv("SOFTHSM2_CONF", conf.c_str(), 1);
    if (!run_program({"softhsm2-util", "--init-token", "--free", "--label", "otac", "--pin", "1234", "--so-pin", "5678"}))
      throw std::runtime_error("softhsm2-util --init-token failed (is Debian's softhsm2 installed?)");
    write_pin("1234");
  }
  void write_pin(const std::string& p) const {
    std::ofstream(pin, std::ios::trunc) << p << "\n";
    ::chmod(pin.c_str(), 0600);
  }
  static p11::Uri uri(const std::string& object = "kek") { return p11::parse_uri("pkcs11:token=otac;object=" + object).value(); }
  Result<std::shared_ptr<p11::Token>> token() const { return p11::Token::open(kSoftHsmModule, uri(), pin); }

  /// A token with KEK version 1, the audit key and both server key pairs (hsm-init's work,
  /// done here through the store library alone), and the custody over it.
  std::shared_ptr<const Kek> init_custody(bool hold_server_keys = true) const {
    auto t = token();
    if (!t) throw std::runtime_error(t.error().message);
    TokenLabels l;
    if (!(*t)->generate_aes(l.kek, be_bytes(1, 4))) throw std::runtime_error("cannot make the KEK");
    if (!(*t)->generate_hmac(l.audit)) throw std::runtime_error("cannot make the audit key");
    if (!(*t)->generate_ec(l.server) || !(*t)->generate_ec(l.card_ca)) throw std::runtime_error("cannot make the server keys");
    auto tk = TokenKek::open(*t, l);
    if (!tk) throw std::runtime_error(tk.error().message);
    return std::make_shared<const Kek>(Kek::with_token(std::move(*tk), std::nullopt, hold_server_keys));
  }
};

/// Every occurrence of any needle (raw bytes, and their hex in either case) in the files
/// under dir; returns a description of the first found, empty when none.
inline std::string find_secrets(const std::filesystem::path& dir, const std::vector<Bytes>& needles) {
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary | std::ios::ate);
    std::string data(static_cast<std::size_t>(in.tellg()), '\0');
    in.seekg(0);
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    for (std::size_t i = 0; i < needles.size(); ++i) {
      const Bytes& n = needles[i];
      std::string lower = to_hex(n), upper = lower;
      for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      for (const std::string& pat : {std::string(n.begin(), n.end()), lower, upper}) {
        if (data.find(pat) != std::string::npos)
          return "secret " + std::to_string(i) + " found in " + e.path().string();
      }
    }
  }
  return {};
}

}  // namespace otac::backend::test
