// Real Kannel for the server tests (tests/support/kannel.sh): bearerbox and smsbox with a fake
// SMSC on loopback, the phone on the SMSC's other side, and the card's request packets.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "freeport.hpp"
#include "otac/common/ota.hpp"
#include "server_fixture.hpp"

namespace otac::backend::test {

using otac::test::free_port;

inline std::map<std::string, std::string> read_env(const std::filesystem::path& p) {
  std::map<std::string, std::string> out;
  std::istringstream in(slurp(p));
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

// Kannel under the test's control; stopped by PID (kannel.sh) at scope exit.
struct Kannel {
  std::filesystem::path dir;
  std::map<std::string, std::string> env;
  bool running = false;
  Kannel(std::filesystem::path d, const std::string& mo_url) : dir(std::move(d)) {
    REQUIRE(run_program({"/bin/bash", OTAC_KANNEL_SH, "start", dir.string(), mo_url}, dir.string() + ".out") == 0);
    running = true;
    env = read_env(dir / "kannel.env");
  }
  ~Kannel() {
    if (running) run_program({"/bin/bash", OTAC_KANNEL_SH, "stop", dir.string()}, dir.string() + ".out");
  }
  void stop_keep() {
    REQUIRE(run_program({"/bin/bash", OTAC_KANNEL_SH, "stop-keep", dir.string()}, dir.string() + ".out") == 0);
    running = false;
  }
  void restart() {
    REQUIRE(run_program({"/bin/bash", OTAC_KANNEL_SH, "restart", dir.string()}, dir.string() + ".out") == 0);
    running = true;
  }
  std::uint16_t port(const char* k) { return static_cast<std::uint16_t>(std::stoi(env.at(k))); }
};

// The phone side of Kannel's fake SMSC: one line per message.
class FakePhone {
 public:
  explicit FakePhone(std::uint16_t port) {
    for (int i = 0; i < 100 && fd_ < 0; ++i) {  // the SMSC may still be starting
      const int s = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(port);
      if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) fd_ = s;
      else { ::close(s); std::this_thread::sleep_for(std::chrono::milliseconds(100)); }
    }
    if (fd_ < 0) throw std::runtime_error("cannot connect to the fake SMSC");
  }
  ~FakePhone() { if (fd_ >= 0) ::close(fd_); }
  FakePhone(const FakePhone&) = delete;
  FakePhone& operator=(const FakePhone&) = delete;

  void send_line(const std::string& line) {
    const std::string l = line + "\n";
    REQUIRE(::write(fd_, l.data(), l.size()) == static_cast<ssize_t>(l.size()));
  }
  /// The next line, or nullopt after `timeout`.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int i = 0; i < 100000; ++i) {
      const auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char tmp[4096];
      const ssize_t n = ::read(fd_, tmp, sizeof tmp);
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
    return std::nullopt;
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

struct MtLine {
  std::string from, to;
  Bytes udh;   // with UDHL
  Bytes data;
};

inline MtLine parse_mt(const std::string& line) {
  std::istringstream in(line);
  MtLine m;
  std::string kind, udh, data;
  // "from to udh <udh> <data>"; Debian's Kannel 1.4.5 writes "from to udh <udh> data <data>".
  in >> m.from >> m.to >> kind >> udh >> data;
  REQUIRE(kind == "udh");
  if (data == "data") in >> data;
  auto u = otac::percent_decode(udh);
  auto d = otac::percent_decode(data);
  REQUIRE(u);
  REQUIRE(d);
  m.udh.assign(u->begin(), u->end());
  m.data.assign(d->begin(), d->end());
  return m;
}

// Reads MT lines to `to` until a complete concatenated set (or one single part) arrived.
inline std::vector<MtLine> read_packet(FakePhone& phone, const std::string& to, std::chrono::seconds timeout) {
  std::vector<MtLine> parts;
  std::size_t total = 1;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (parts.size() < total) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto l = phone.read_line(left);
    if (!l) break;
    MtLine m = parse_mt(*l);
    if (m.to != to) continue;
    // UDH: UDHL, then elements; 00 03 ref total seq is the concatenation element.
    if (m.udh.size() >= 6 && m.udh[1] == 0x00 && m.udh[2] == 0x03) total = m.udh[4];
    parts.push_back(std::move(m));
  }
  return parts;
}

inline ota::CardAlgorithm ota_alg(Algorithm a) {
  return a == Algorithm::des3 ? ota::CardAlgorithm::des3_2key : ota::CardAlgorithm::aes128;
}

// The card's request packet of protocol.md §2.4 (as tests/backend/test_service_lists.cpp).
inline Bytes card_request_packet(const Bytes& n, const SecretBytes& k, std::uint64_t counter, std::uint8_t type) {
  Bytes f1 = hex("DF4108");
  append(f1, n);
  append(f1, Bytes{0xC0, 0x01, type});
  append(f1, hex("DF4202 0000 DF4802 0000 DF4901 01"));
  Bytes data{0xF1, static_cast<std::uint8_t>(f1.size())};
  append(data, f1);
  auto keys = ota::derive_card_keys(k, n, ota_alg(Algorithm::des3)).value();
  const std::uint8_t kid = ota::key_id_for(ota_alg(Algorithm::des3), 1);
  ota::CommandHeader h{ota::Spi::decode(0x1200).value(), 0x00, kid, ota::otac_tar};
  return ota::build_command(h, counter, data, SecretBytes{}, keys.kid).value();
}


// The card's PoR (UDH IEI 71) for the command packet with `counter`: RSC 00 and the inner
// status word 9000, as the applet sends it (protocol.md 6.1.1), under K version 1.
inline Bytes por_packet(const Bytes& n, const SecretBytes& k, std::uint64_t counter) {
  auto keys = ota::derive_card_keys(k, n, ota_alg(Algorithm::des3)).value();
  const std::uint8_t kid = ota::key_id_for(ota_alg(Algorithm::des3), 1);
  ota::Response r;
  r.tar = ota::otac_tar;
  r.counter = counter;
  r.status = ota::Rsc::ok;
  r.data = hex("9000");
  return ota::build_response(ota::PorSecurity{ota::Spi::decode(0x1639).value(), kid, kid}, r, keys.kic, keys.kid).value();
}

inline std::string as_str(ByteView b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

}  // namespace otac::backend::test
