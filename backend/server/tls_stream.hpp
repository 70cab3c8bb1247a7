#pragma once

// A server-side TLS stream in which OpenSSL reads and writes the TCP socket itself.
//
// Asio's ssl::stream passes every byte through two more buffers: its own input and output
// buffers (17 KiB each, allocated and zeroed per connection) and an OpenSSL BIO pair (17 KiB
// each way). With 512 busy connections that is about 35 MB of the backend's memory, and two
// copies of every record. Here the SSL object's BIO is the socket: a read waits for the
// socket to become readable and calls SSL_read, a write calls SSL_write, which sends. The
// only record buffers are OpenSSL's, released whenever they are empty
// (SSL_MODE_RELEASE_BUFFERS).
//
// The interface is what Session needs from a Beast stream: async_read_some and
// async_write_some (Beast's AsyncReadStream and AsyncWriteStream), async_handshake,
// async_shutdown, socket(), native_handle() and beast::tcp_stream's expires_after (a
// deadline for the operations pending when it passes: the socket is closed, and they
// complete with beast::error::timeout). All calls must come from the socket's executor (the
// connection's network thread); one read and one write may be pending at once.

#include <boost/asio.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/error.hpp>
#include <openssl/ssl.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <string>

namespace otac::backend::http {

class TlsStream {
 public:
  using executor_type = boost::asio::ip::tcp::socket::executor_type;

  /// Takes the accepted socket; the server side of a handshake with `ctx`'s settings.
  /// Throws std::bad_alloc if OpenSSL cannot allocate the connection.
  TlsStream(boost::asio::ip::tcp::socket&& socket, boost::asio::ssl::context& ctx);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  executor_type get_executor() noexcept { return socket_.get_executor(); }
  boost::asio::ip::tcp::socket& socket() noexcept { return socket_; }
  SSL* native_handle() noexcept { return ssl_; }

  /// Operations pending `d` from now fail with beast::error::timeout, and the socket is
  /// closed. A later call replaces the deadline.
  void expires_after(std::chrono::steady_clock::duration d);

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it) {
      const boost::asio::mutable_buffer b = *it;
      if (b.size() != 0) return start(Kind::read, b.data(), b.size(), std::forward<Token>(token));
    }
    return start(Kind::read, nullptr, 0, std::forward<Token>(token));
  }

  /// A buffer sequence of several pieces (Beast's header and body) goes out as one record,
  /// copied into one buffer of at most kMaxRecord bytes.
  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    const auto begin = boost::asio::buffer_sequence_begin(buffers);
    const auto end = boost::asio::buffer_sequence_end(buffers);
    if (begin != end && std::next(begin) == end) {
      const boost::asio::const_buffer b = *begin;
      return start(Kind::write, const_cast<void*>(b.data()), std::min(b.size(), kMaxRecord), std::forward<Token>(token));
    }
    const std::size_t n = std::min(boost::asio::buffer_size(buffers), kMaxRecord);
    out_.resize(n);
    boost::asio::buffer_copy(boost::asio::buffer(out_), buffers, n);
    return start(Kind::write, out_.data(), n, std::forward<Token>(token));
  }

  template <class Token>
  auto async_handshake(Token&& token) {
    return start_uncounted(Kind::handshake, std::forward<Token>(token));
  }

  /// Sends close_notify and waits for the peer's (or for the connection to end).
  template <class Token>
  auto async_shutdown(Token&& token) {
    return start_uncounted(Kind::shutdown, std::forward<Token>(token));
  }

 private:
  static constexpr std::size_t kMaxRecord = 16384;  ///< TLS's largest plaintext record

  enum class Kind { handshake, read, write, shutdown };
  enum class Step { done, want_read, want_write };

  /// The deadline's state, shared with the timer's handler, which can outlive the stream.
  struct Clock {
    explicit Clock(const executor_type& ex) : timer(ex) {}
    boost::asio::steady_timer timer;
    std::uint64_t generation = 0;
    unsigned pending = 0;       ///< operations started and not completed
    bool expired = false;       ///< the socket was closed for a deadline
    boost::asio::ip::tcp::socket* socket = nullptr;  ///< null once the stream is gone
  };

  /// One OpenSSL call for `kind`; sets `ec` and `n` when it is done.
  Step step(Kind kind, void* data, std::size_t size, boost::system::error_code& ec, std::size_t& n);
  boost::system::error_code wait_error(const boost::system::error_code& ec) const;

  /// One operation: the OpenSSL call, repeated each time the socket is ready as asked. An
  /// operation finished by its first call completes through a post, never inside the
  /// initiating function.
  template <bool Counted>
  struct Op {
    TlsStream& s;
    Kind kind;
    void* data;
    std::size_t size;
    enum class State { start, waiting, finishing } state = State::start;
    boost::system::error_code result{};
    std::size_t n = 0;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}) {
      if (state == State::finishing) return finish(self);
      if (state == State::start) {
        ++s.clock_->pending;
      } else if (ec) {
        result = s.wait_error(ec);
        return finish(self);
      }
      const bool first = state == State::start;
      switch (s.step(kind, data, size, result, n)) {
        case Step::want_read:
          state = State::waiting;
          return s.socket_.async_wait(boost::asio::ip::tcp::socket::wait_read, std::move(self));
        case Step::want_write:
          state = State::waiting;
          return s.socket_.async_wait(boost::asio::ip::tcp::socket::wait_write, std::move(self));
        case Step::done:
          break;
      }
      if (!first) return finish(self);
      state = State::finishing;
      boost::asio::post(std::move(self));
    }

    template <class Self>
    void finish(Self& self) {
      --s.clock_->pending;
      if constexpr (Counted) {
        self.complete(result, n);
      } else {
        self.complete(result);
      }
    }
  };

  template <class Token>
  auto start(Kind kind, void* data, std::size_t size, Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
        Op<true>{*this, kind, data, size}, token, socket_);
  }
  template <class Token>
  auto start_uncounted(Kind kind, Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code)>(Op<false>{*this, kind, nullptr, 0},
                                                                              token, socket_);
  }

  boost::asio::ip::tcp::socket socket_;
  std::shared_ptr<Clock> clock_;
  std::string out_;  ///< a coalesced write, kept until the write completes
  SSL* ssl_ = nullptr;
};

}  // namespace otac::backend::http
