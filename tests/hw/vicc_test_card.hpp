// A tiny vicc card for the emulator's tests: connects to the card port and answers APDUs.
//   INS EE: echo the command data, 9000          INS B0: Le bytes (00 = 256) of 0..255, 9000
//   INS B1: P1P2 bytes (big-endian count), 9000   anything else: 6D00
// It counts power-ons and APDUs, so tests can see what reached the card.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace otac::test {

class ViccTestCard {
 public:
  explicit ViccTestCard(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect to the card port failed");
    }
    const int one = 1;
    (void)::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    thread_ = std::thread([this] { serve(); });
  }
  ~ViccTestCard() { disconnect(); }
  ViccTestCard(const ViccTestCard&) = delete;
  ViccTestCard& operator=(const ViccTestCard&) = delete;

  /// Closes the connection: the card leaves the field.
  void disconnect() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  int power_ons() const { return power_ons_.load(); }
  int apdus() const { return apdus_.load(); }

 private:
  // Reads n bytes, waking every 50 ms to check stop_; at most 10 minutes in total.
  bool read_exact(std::uint8_t* out, std::size_t n) {
    std::size_t done = 0;
    for (int i = 0; i < 12000 && done < n && !stop_; ++i) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int one = 1;
      (void)::setsockopt(fd_, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
      const ssize_t r = ::recv(fd_, out + done, n - done, 0);
      if (r <= 0) return false;
      done += static_cast<std::size_t>(r);
    }
    return done == n;
  }
  void send_msg(const std::vector<std::uint8_t>& payload) {
    std::vector<std::uint8_t> m{static_cast<std::uint8_t>(payload.size() >> 8),
                                static_cast<std::uint8_t>(payload.size() & 0xFF)};
    m.insert(m.end(), payload.begin(), payload.end());
    (void)::send(fd_, m.data(), m.size(), MSG_NOSIGNAL);
  }
  void serve() {
    for (int i = 0; i < 1000000 && !stop_; ++i) {
      std::array<std::uint8_t, 2> len{};
      if (!read_exact(len.data(), 2)) return;
      std::vector<std::uint8_t> msg(static_cast<std::size_t>(len[0] << 8 | len[1]));
      if (!msg.empty() && !read_exact(msg.data(), msg.size())) return;
      if (msg.size() == 1) {
        if (msg[0] == 0x01) ++power_ons_;
        if (msg[0] == 0x04) send_msg({0x3B, 0x80, 0x80, 0x01, 0x01});
        continue;
      }
      ++apdus_;
      send_msg(answer(msg));
    }
  }
  static std::vector<std::uint8_t> answer(const std::vector<std::uint8_t>& c) {
    std::vector<std::uint8_t> r;
    if (c.size() >= 4 && c[1] == 0xEE) {
      if (c.size() > 5) {
        const auto n = static_cast<std::ptrdiff_t>(std::min<std::size_t>(c[4], c.size() - 5));
        r.assign(c.begin() + 5, c.begin() + 5 + n);
      }
    } else if (c.size() == 5 && c[1] == 0xB0) {
      const std::size_t n = c[4] == 0 ? 256 : c[4];
      for (std::size_t i = 0; i < n; ++i) r.push_back(static_cast<std::uint8_t>(i));
    } else if (c.size() >= 4 && c[1] == 0xB1) {
      const std::size_t n = static_cast<std::size_t>(c[2] << 8 | c[3]);
      r.assign(n, 0xA5);
    } else {
      return {0x6D, 0x00};
    }
    r.push_back(0x90);
    r.push_back(0x00);
    return r;
  }

  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> power_ons_{0};
  std::atomic<int> apdus_{0};
  std::thread thread_;
};

/// Waits up to `limit` for pred() to hold, polling every 5 ms.
template <class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds limit = std::chrono::milliseconds(3000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

}  // namespace otac::test
