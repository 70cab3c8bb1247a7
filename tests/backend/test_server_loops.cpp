// The server's network threads in process (backend/server/server.cpp): each runs an event loop
// of its own, and a connection lives on one of them. No strand serializes a connection's
// handlers, so the test checks what replaces it: every handler of one connection runs on the
// same thread, while connections are spread over all network threads. It also checks that
// the request log lines, which a network thread writes per burst, all arrive.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "otac/sys/fd.hpp"
#include "server.hpp"
#include "test_support.hpp"

namespace otac::backend::http {
namespace {

using otac::sys::Fd;
using otac::test::TempDir;

/// A plain keep-alive connection to 127.0.0.1:port that sends GET requests one at a time.
class Client {
 public:
  explicit Client(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_.valid());
    timeval tv{5, 0};  // a lost answer fails the test instead of hanging it
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }

  /// The body of the answer to GET path.
  std::string get(const std::string& path) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: t\r\n\r\n";
    REQUIRE(::send(fd_.get(), req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
    // Bounded: each round reads at least one byte or the test fails.
    for (int round = 0; round < 1000; ++round) {
      const auto head_end = buf_.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        const auto cl = buf_.find("Content-Length: ");
        REQUIRE(cl != std::string::npos);
        const std::size_t length = std::stoul(buf_.substr(cl + 16));
        if (buf_.size() >= head_end + 4 + length) {
          std::string body = buf_.substr(head_end + 4, length);
          buf_.erase(0, head_end + 4 + length);
          return body;
        }
      }
      char chunk[4096];
      const ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
      REQUIRE(n > 0);
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
    FAIL("no whole answer in 1000 reads");
    return {};
  }

 private:
  Fd fd_;
  std::string buf_;
};

}  // namespace

TEST_CASE("network threads: a connection's handlers all run on one thread and connections use every thread",
          "[server]") {
  // Thread ids seen by the non-blocking handler (on the network thread) and by the reply's
  // builder (posted back to the connection's thread), per connection.
  std::mutex mu;
  std::map<std::string, std::set<std::thread::id>> seen;
  Router router;
  router.add(
      Verb::get, "/who/*", [](const Request&, RequestContext&) { return Response{}; },
      [&](const Request& req, RequestContext& ctx, Reply reply) {
        const std::string conn = ctx.params.at(0);
        {
          std::lock_guard lock(mu);
          seen[conn].insert(std::this_thread::get_id());
        }
        // Answer from another thread, as the store's committer does.
        std::thread([&, reply, conn, version = req.version()] {
          reply([&, conn, version] {
            std::lock_guard lock(mu);
            seen[conn].insert(std::this_thread::get_id());
            Response r{boost::beast::http::status::ok, version};
            r.body() = conn;
            r.prepare_payload();
            return r;
          });
        }).detach();
        return true;
      });

  RequestMetrics metrics;
  Limits limits;
  limits.io_threads = 2;
  TempDir dir;
  // The request log goes to stderr: captured for the life of the server.
  const std::string log = otac::test::stderr_during(dir.path / "log", [&] {
    Server server(limits, metrics);
    const auto port = server.listen_plain("127.0.0.1", 0, router);
    REQUIRE(port);
    server.start();
    std::vector<Client> clients;
    for (int c = 0; c < 4; ++c) clients.emplace_back(*port);
    for (int round = 0; round < 25; ++round) {
      for (int c = 0; c < 4; ++c) CHECK(clients[static_cast<std::size_t>(c)].get("/who/c" + std::to_string(c)) == "c" + std::to_string(c));
    }
    server.stop();
  });

  std::set<std::thread::id> all;
  for (const auto& [conn, ids] : seen) {
    INFO(conn);
    CHECK(ids.size() == 1);  // every handler and every reply of this connection on one thread
    all.insert(ids.begin(), ids.end());
  }
  CHECK(seen.size() == 4);
  CHECK(all.size() == 2);  // four connections, taken in turn: both network threads serve
  // Every request has its log line, written by the server by the time it stopped.
  std::size_t lines = 0;
  for (std::size_t at = log.find("event=request "); at != std::string::npos; at = log.find("event=request ", at + 1)) ++lines;
  CHECK(lines == 100);
}

}  // namespace otac::backend::http
