// Sockets and the vicc framing.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "host.hpp"
#include "otac/common/number.hpp"

namespace otac::card_host {

Result<std::pair<std::string, std::uint16_t>> parse_endpoint(std::string_view s) {
  const auto colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0)
    return make_error(Errc::bad_value, "endpoint '" + std::string(s) + "' must be HOST:PORT, e.g. 127.0.0.1:35963");
  auto port = parse_uint(s.substr(colon + 1), 1, 65535);
  if (!port) return make_error(Errc::bad_value, "endpoint '" + std::string(s) + "': port must be 1..65535");
  return std::pair<std::string, std::uint16_t>{std::string(s.substr(0, colon)), static_cast<std::uint16_t>(*port)};
}

Result<Fd> connect_tcp(const std::string& host, std::uint16_t port, int timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0)
    return make_error(Errc::io, "cannot resolve " + host + ": " + ::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  std::string last = "no address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) continue;
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) { last = std::strerror(errno); continue; }
      pollfd p{fd.get(), POLLOUT, 0};
      if (::poll(&p, 1, timeout_ms) != 1) { last = "connect timed out"; continue; }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) { last = std::strerror(err); continue; }
    }
    return fd;
  }
  return make_error(Errc::io, "cannot connect to " + host + ":" + service + ": " + last);
}

Result<void> write_all(int fd, ByteView data, int timeout_ms) {
  std::size_t pos = 0;
  int waited = 0;
  while (pos < data.size()) {
    const ssize_t n = ::send(fd, data.data() + pos, data.size() - pos, MSG_NOSIGNAL);
    if (n > 0) { pos += static_cast<std::size_t>(n); continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (waited >= timeout_ms) return make_error(Errc::timeout, "send timed out");
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 50);
      waited += 50;
      continue;
    }
    return make_error(Errc::io, std::string("send failed: ") + std::strerror(errno));
  }
  return {};
}

void quickack(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

std::optional<Bytes> ViccFramer::next() {
  if (buf_.size() < 2) return std::nullopt;
  const std::size_t len = static_cast<std::size_t>(buf_[0]) << 8 | buf_[1];
  if (buf_.size() < 2 + len) return std::nullopt;
  Bytes msg(buf_.begin() + 2, buf_.begin() + 2 + static_cast<std::ptrdiff_t>(len));
  buf_.erase(buf_.begin(), buf_.begin() + 2 + static_cast<std::ptrdiff_t>(len));
  return msg;
}

Bytes ViccFramer::frame(ByteView payload) {
  Bytes out = be_bytes(payload.size(), 2);
  append(out, payload);
  return out;
}

}  // namespace otac::card_host
