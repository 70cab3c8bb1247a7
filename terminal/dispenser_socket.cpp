// The socket driver of terminal/dispenser.hpp: one connection per exchange to the dispenser's
// Unix socket, one request line out, one reply line back, each within a time limit.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "otac/sys/fd.hpp"
#include "terminal/dispenser.hpp"

namespace otac::terminal {
namespace {

namespace d = otac::dispenser;
using Clock = std::chrono::steady_clock;

class SocketDispenser final : public Dispenser {
 public:
  SocketDispenser(std::string path, std::chrono::milliseconds timeout) : path_(std::move(path)), timeout_(timeout) {}

  Result<std::vector<d::Cassette>> cassettes() override {
    auto r = exchange(d::Request{}, timeout_);
    if (!r) return r.error();
    if (r->kind != d::Reply::Kind::status) return make_error(Errc::bad_value, "the dispenser answered STATUS with another reply");
    return r->cassettes;
  }

  Result<DispenseResult> dispense(std::int64_t amount, std::chrono::seconds take_time) override {
    d::Request q;
    q.kind = d::Request::Kind::dispense;
    q.amount = amount;
    q.take_seconds = static_cast<std::uint32_t>(take_time.count());
    auto r = exchange(q, timeout_ + take_time);
    if (!r) return r.error();
    if (r->kind != d::Reply::Kind::dispense || r->status == d::Status::bad_request)
      return make_error(Errc::bad_value, "the dispenser did not understand DISPENSE");
    if (r->handed > amount) return make_error(Errc::bad_value, "the dispenser reports more handed over than asked for");
    return DispenseResult{r->status, r->handed};
  }

 private:
  Result<d::Reply> exchange(const d::Request& q, std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    sys::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return make_error(Errc::io, std::string("socket: ") + std::strerror(errno));
    sockaddr_un addr{};
    if (path_.size() >= sizeof addr.sun_path) return make_error(Errc::bad_value, "dispenser socket path too long: " + path_);
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
      return make_error(Errc::io, "cannot reach the dispenser at " + path_ + ": " + std::strerror(errno));
    const std::string line = d::encode(q);
    if (::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size()))
      return make_error(Errc::io, "cannot send to the dispenser: " + std::string(std::strerror(errno)));
    std::string in;
    for (int guard = 0; guard < 1000; ++guard) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      pollfd p{fd.get(), POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return make_error(Errc::io, std::string("poll: ") + std::strerror(errno));
      if (n == 0) continue;
      char buf[256];
      const ssize_t got = ::recv(fd.get(), buf, sizeof buf, 0);
      if (got <= 0) return make_error(Errc::io, "the dispenser closed the connection without a reply");
      in.append(buf, static_cast<std::size_t>(got));
      const auto nl = in.find('\n');
      if (nl != std::string::npos) {
        auto r = d::parse_reply(std::string_view(in).substr(0, nl));
        if (!r) return make_error(r.error().code, "the dispenser's reply is malformed: " + r.error().message);
        return r;
      }
      if (in.size() >= d::kMaxLine) return make_error(Errc::bad_length, "the dispenser's reply is longer than a line");
    }
    return make_error(Errc::timeout, "the dispenser did not answer within " + std::to_string(limit.count()) + " ms");
  }

  std::string path_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

Result<std::unique_ptr<Dispenser>> open_socket_dispenser(const std::string& socket_path, std::chrono::milliseconds timeout) {
  if (socket_path.empty()) return make_error(Errc::bad_value, "no dispenser socket configured (dispenser_socket)");
  return std::unique_ptr<Dispenser>(std::make_unique<SocketDispenser>(socket_path, timeout));
}

bool payable(const std::vector<dispenser::Cassette>& cassettes, std::int64_t amount_minor) {
  return !dispenser::plan_notes(cassettes, amount_minor).empty();
}

}  // namespace otac::terminal
