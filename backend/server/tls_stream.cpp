#include "tls_stream.hpp"

#include <boost/asio/ssl/error.hpp>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <new>

namespace otac::backend::http {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// The BIO under the SSL object: send and recv on the stream's socket. MSG_NOSIGNAL, because
// a peer that has gone away must cost an EPIPE, not the process (write() would raise
// SIGPIPE). The socket is looked up at each call, so a closed socket is EBADF and never a
// descriptor number the kernel has given to another connection since.
tcp::socket* socket_of(BIO* b) { return static_cast<tcp::socket*>(BIO_get_data(b)); }

int descriptor(BIO* b) {
  tcp::socket* s = socket_of(b);
  return s && s->is_open() ? s->native_handle() : -1;
}

int bio_write(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  const int fd = descriptor(b);
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  const ssize_t n = ::send(fd, data, static_cast<std::size_t>(len), MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_write(b);
  return static_cast<int>(n);
}

int bio_read(BIO* b, char* data, int len) {
  BIO_clear_retry_flags(b);
  const int fd = descriptor(b);
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  const ssize_t n = ::recv(fd, data, static_cast<std::size_t>(len), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(b);
  return static_cast<int>(n);
}

long bio_ctrl(BIO*, int cmd, long, void*) {
  // The record layer flushes after each write; nothing is buffered here. Every other
  // control (kTLS, pending counts, duplication) is "not supported".
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

const BIO_METHOD* socket_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "otac socket");
    if (!m || BIO_meth_set_write(m, bio_write) != 1 || BIO_meth_set_read(m, bio_read) != 1 ||
        BIO_meth_set_ctrl(m, bio_ctrl) != 1 || BIO_meth_set_create(m, bio_create) != 1) {
      BIO_meth_free(m);
      return static_cast<BIO_METHOD*>(nullptr);
    }
    return m;
  }();
  return method;
}

}  // namespace

TlsStream::TlsStream(tcp::socket&& socket, asio::ssl::context& ctx)
    : socket_(std::move(socket)), clock_(std::make_shared<Clock>(socket_.get_executor())) {
  clock_->socket = &socket_;
  const BIO_METHOD* method = socket_method();
  ssl_ = method ? SSL_new(ctx.native_handle()) : nullptr;
  BIO* bio = ssl_ ? BIO_new(method) : nullptr;
  if (!bio) {
    SSL_free(ssl_);
    throw std::bad_alloc();
  }
  BIO_set_data(bio, &socket_);
  SSL_set_bio(ssl_, bio, bio);  // the SSL object owns the BIO from here
  SSL_set_accept_state(ssl_);
  // Partial writes and a moving buffer as Asio's streams set them; record buffers freed
  // when empty; and read-ahead, so that one recv takes a whole request rather than a
  // record's five-byte header first and its body in a second call.
  SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  SSL_set_read_ahead(ssl_, 1);
  boost::system::error_code ignored;
  socket_.non_blocking(true, ignored);  // an accepted socket: cannot fail but for EBADF
}

TlsStream::~TlsStream() {
  clock_->socket = nullptr;
  boost::system::error_code ignored;
  clock_->timer.cancel(ignored);
  SSL_free(ssl_);
}

void TlsStream::expires_after(std::chrono::steady_clock::duration d) {
  const std::uint64_t generation = ++clock_->generation;
  clock_->timer.expires_after(d);
  clock_->timer.async_wait([clock = clock_, generation](const boost::system::error_code& ec) {
    if (ec || clock->generation != generation || !clock->socket || clock->pending == 0) return;
    clock->expired = true;
    boost::system::error_code ignored;
    clock->socket->close(ignored);  // the pending operations complete with operation_aborted
  });
}

boost::system::error_code TlsStream::wait_error(const boost::system::error_code& ec) const {
  if (clock_->expired) return boost::beast::error::timeout;
  return ec;
}

TlsStream::Step TlsStream::step(Kind kind, void* data, std::size_t size, boost::system::error_code& ec, std::size_t& n) {
  ec = {};
  n = 0;
  if (clock_->expired) {
    ec = boost::beast::error::timeout;
    return Step::done;
  }
  if (!socket_.is_open()) {
    ec = asio::error::bad_descriptor;
    return Step::done;
  }
  if (kind == Kind::read && size == 0) return Step::done;  // as for a socket: nothing to read into
  ERR_clear_error();
  errno = 0;
  int r = 0;
  switch (kind) {
    case Kind::handshake:
      r = SSL_do_handshake(ssl_);
      break;
    case Kind::read:
      r = SSL_read_ex(ssl_, data, size, &n);
      break;
    case Kind::write:
      r = SSL_write_ex(ssl_, data, size, &n);
      break;
    case Kind::shutdown:
    {
      // 0: our close_notify is sent and the peer's not yet read: wait for it, like Asio's
      // stream, but only once, so that a peer that keeps sending cannot keep this busy.
      const bool sent_before = (SSL_get_shutdown(ssl_) & SSL_SENT_SHUTDOWN) != 0;
      r = SSL_shutdown(ssl_);
      if (r == 0) return sent_before ? Step::done : Step::want_read;
      break;
    }
  }
  const int saved_errno = errno;
  if (r == 1) return Step::done;
  switch (SSL_get_error(ssl_, r)) {
    case SSL_ERROR_WANT_READ:
      return Step::want_read;
    case SSL_ERROR_WANT_WRITE:
      return Step::want_write;
    case SSL_ERROR_ZERO_RETURN:  // the peer's close_notify
      ec = asio::error::eof;
      return Step::done;
    case SSL_ERROR_SYSCALL:
      if (const unsigned long e = ERR_get_error(); e != 0) {
        ec = boost::system::error_code(static_cast<int>(e), asio::error::get_ssl_category());
      } else if (saved_errno != 0) {
        ec = boost::system::error_code(saved_errno, boost::system::system_category());
      } else {
        ec = asio::ssl::error::stream_truncated;  // the connection ended without close_notify
      }
      ERR_clear_error();
      return Step::done;
    default: {
      const unsigned long e = ERR_get_error();
      ERR_clear_error();
      if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ec = asio::ssl::error::stream_truncated;
      } else {
        ec = boost::system::error_code(e ? static_cast<int>(e) : EPROTO, e ? asio::error::get_ssl_category()
                                                                            : boost::system::system_category());
      }
      return Step::done;
    }
  }
}

}  // namespace otac::backend::http
