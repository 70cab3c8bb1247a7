#include "server.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/resource.h>

#include <cstring>
#include <optional>
#include <list>
#include <mutex>
#include <unordered_map>
#include <functional>
#include <atomic>
#include <map>
#include <thread>
#include <type_traits>
#include <vector>

#include "log.hpp"
#include "tls_stream.hpp"
#include "otac/common/crypto.hpp"
#include "otac/sys/thread.hpp"

namespace otac::backend::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

/// A connection the admission table can close to make room.
class Evictable {
 public:
  virtual ~Evictable() = default;
  /// Closes the connection from any thread (posts to the connection's own executor).
  virtual void evict() = 0;
};

// Admission of connections. Every connection counts against max_connections and its source
// address's max_per_source. Until it shows a verified client certificate it is also
// "unproven" and counts against max_unproven; when that budget (or the whole table) is full,
// the oldest unproven connection is closed to make room. So idle or slow peers that never
// finish a handshake cannot starve the terminals that do, and one source cannot take the
// table. Loopback-only plain listeners (Kannel) are proven on accept.
class Admission {
 public:
  using Id = std::uint64_t;

  void configure(std::uint32_t max_total, std::uint32_t max_unproven, std::uint32_t max_per_source) {
    max_total_ = max_total;
    max_unproven_ = std::max<std::uint32_t>(1, std::min(max_unproven, max_total));
    max_per_source_ = std::max<std::uint32_t>(1, max_per_source);
  }

  /// Admits a connection from `source`, closing the oldest unproven one if a budget is full.
  /// Returns 0 (refused) when the source has too many, or every slot is held by proven ones.
  Id admit(const std::string& source, const std::shared_ptr<Evictable>& c, bool proven) {
    std::shared_ptr<Evictable> victim;
    Id id = 0;
    {
      std::lock_guard lock(mu_);
      auto& n = per_source_[source];
      if (n >= max_per_source_) {
        if (n == 0) per_source_.erase(source);
        return 0;
      }
      if (total_ >= max_total_ || (!proven && unproven_.size() >= max_unproven_)) {
        if (unproven_.empty()) {
          if (n == 0) per_source_.erase(source);
          return 0;
        }
        victim = unproven_.front().second.lock();
        index_.erase(unproven_.front().first);
        unproven_.pop_front();
      }
      id = ++next_;
      ++n;
      ++total_;
      if (!proven) index_[id] = unproven_.insert(unproven_.end(), {id, c});
    }
    if (victim) victim->evict();
    return id;
  }
  /// The connection showed a verified client certificate: no longer evictable.
  void prove(Id id) {
    std::lock_guard lock(mu_);
    prove_locked(id);
  }
  /// The connection is gone.
  void release(Id id, const std::string& source) {
    std::lock_guard lock(mu_);
    prove_locked(id);
    --total_;
    if (auto it = per_source_.find(source); it != per_source_.end() && --it->second == 0) per_source_.erase(it);
  }
  std::uint32_t open() const {
    std::lock_guard lock(mu_);
    return total_;
  }

 private:
  void prove_locked(Id id) {
    if (auto it = index_.find(id); it != index_.end()) {
      unproven_.erase(it->second);
      index_.erase(it);
    }
  }

  mutable std::mutex mu_;
  std::uint32_t max_total_ = 1024, max_unproven_ = 512, max_per_source_ = 256;
  std::uint32_t total_ = 0;
  Id next_ = 0;
  std::list<std::pair<Id, std::weak_ptr<Evictable>>> unproven_;  // oldest first
  std::unordered_map<Id, std::list<std::pair<Id, std::weak_ptr<Evictable>>>::iterator> index_;
  std::unordered_map<std::string, std::uint32_t> per_source_;
};

struct Shared {
  Limits limits;
  Admission admission;
  std::atomic<std::int64_t> last_evict_log{0};  ///< steady_clock ticks of the last eviction log line
  std::size_t max_request = 0;  ///< limits.max_request, or derived from the header and body limits
  std::size_t max_buffer = 0;   ///< limits.max_buffer, or derived from the header limit
  RequestMetrics* metrics = nullptr;
  asio::thread_pool* workers = nullptr;
  asio::thread_pool* slow = nullptr;
  std::atomic<bool> stopping{false};
  /// Requests taken by a handler, blocking or asynchronous, whose answer is not yet written:
  /// stop() waits for them, so that an answer a handler gave still goes out.
  std::atomic<std::int64_t> answers_in_flight{0};
  /// The network threads' event loops, one each. A connection lives on one of them, chosen in
  /// turn at accept, so its handlers never need a strand, and the threads share no scheduler
  /// lock: with one io_context run by every network thread, the scheduler's mutex and its
  /// condition variable were a third of the backend's futex calls under load.
  std::vector<asio::io_context*> loops;
  std::atomic<std::size_t> next_loop{0};

  asio::io_context& pick_loop() { return *loops[next_loop.fetch_add(1, std::memory_order_relaxed) % loops.size()]; }
};

std::string x509_cn(X509* cert) {
  X509_NAME* name = X509_get_subject_name(cert);
  if (!name) return {};
  const int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return {};
  X509_NAME_ENTRY* e = X509_NAME_get_entry(name, idx);
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(e);
  if (!s) return {};
  const unsigned char* p = ASN1_STRING_get0_data(s);
  const int len = ASN1_STRING_length(s);
  if (!p || len <= 0) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(len));
}

std::string x509_fingerprint(X509* cert) {
  const int len = i2d_X509(cert, nullptr);
  if (len <= 0) return {};
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  if (i2d_X509(cert, &p) != len) return {};
  return to_hex(crypto::sha256(der));
}

using Parser = bhttp::request_parser<bhttp::string_body>;
using ChunkHeaderCheck = std::function<void(std::uint64_t, beast::string_view, beast::error_code&)>;

/// Chunk extensions carry nothing this API uses; a short allowance keeps well-behaved clients
/// working.
constexpr std::size_t kMaxChunkExtensions = 256;

void check_chunk_extensions(std::uint64_t, beast::string_view extensions, beast::error_code& ec) {
  if (extensions.size() > kMaxChunkExtensions) ec = bhttp::error::bad_chunk_extension;
}

std::size_t max_request_of(const Limits& l) {
  return l.max_request ? l.max_request : std::size_t{l.max_header} + l.max_body + (64u << 10);
}
std::size_t max_buffer_of(const Limits& l) { return l.max_buffer ? l.max_buffer : 2 * std::size_t{l.max_header}; }

/// A parser with the limits of a connection. `check` must outlive it (Beast keeps a reference).
void configure_parser(Parser& p, const Limits& l, ChunkHeaderCheck& check) {
  p.body_limit(l.max_body);
  p.header_limit(l.max_header);
  p.on_chunk_header(check);
}

struct Refusal {
  Status status;
  std::string code;
  std::string message;
};

/// Reading failures that concern the framing beyond the header and body limits: the bytes of
/// the whole request, chunk extensions, and a trailer or chunk header larger than the buffer.
std::optional<Refusal> framing_refusal(beast::error_code ec, std::size_t read_bytes, std::size_t max_request) {
  if (ec == bhttp::error::body_limit && read_bytes > max_request) {
    return Refusal{Status::payload_too_large, "request_too_large",
                   "request exceeds " + std::to_string(max_request) + " bytes including its framing"};
  }
  if (ec == bhttp::error::buffer_overflow || ec == bhttp::error::bad_chunk_extension) {
    // A chunk header line (extensions) or a trailer that does not fit the connection's buffer,
    // or extensions longer than kMaxChunkExtensions: the rest is not read.
    return Refusal{Status::request_header_fields_too_large, "framing_too_large",
                   "chunk extensions or trailer too large (" + ec.message() + ")"};
  }
  return std::nullopt;
}

/// The request log lines of one network thread, written together once the handlers its loop
/// has ready have run: one write per burst instead of one per request (each system call is
/// dear on a paravirtualized machine, and the lines no longer meet at the log's lock). A line
/// waits at most until its loop's next turn; a kill -9 in between loses the lines of that
/// turn, whose answers have already left.
class LineBatch {
 public:
  explicit LineBatch(asio::io_context& loop) : loop_(loop) {}
  LineBatch(const LineBatch&) = delete;
  LineBatch& operator=(const LineBatch&) = delete;
  ~LineBatch() { flush(); }

  void add(const std::string& line) {
    if (lines_.empty()) asio::post(loop_, [this] { flush(); });
    lines_ += line;
  }
  void flush() {
    log::write_lines(lines_);
    lines_.clear();
    if (lines_.capacity() > kKeep) lines_.shrink_to_fit();
  }

 private:
  static constexpr std::size_t kKeep = 64 * 1024;  ///< bytes kept between bursts (some 300 lines)
  asio::io_context& loop_;
  std::string lines_;
};

/// The running network thread's batch; null on any other thread.
thread_local LineBatch* t_request_lines = nullptr;

void log_request(const std::string& line) {
  if (t_request_lines) t_request_lines->add(line);
  else log::write_lines(line);
}

template <bool Tls>
class Session final : public Evictable, public std::enable_shared_from_this<Session<Tls>> {
 public:
  using Stream = std::conditional_t<Tls, TlsStream, beast::tcp_stream>;

  template <class... Args>
  Session(Shared& sh, const Router& router, tcp::socket&& socket, Args&&... args)
      : sh_(sh), router_(router), stream_(std::move(socket), std::forward<Args>(args)...) {
    beast::error_code ec;
    const auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) {
      source_ = ep.address().to_string();
      remote_ = source_ + ":" + std::to_string(ep.port());
    }
    // An answer is one write; without TCP_NODELAY a write that follows an unacknowledged one
    // (a TLS record split, a session ticket) waits for the peer's delayed ACK.
    beast::get_lowest_layer(stream_).socket().set_option(tcp::no_delay(true), ec);
  }
  ~Session() override {
    if (admitted_) sh_.admission.release(admitted_, source_);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Takes a slot in the admission table; false if refused (the session is then dropped).
  bool admit() {
    admitted_ = sh_.admission.admit(source_, this->shared_from_this(), !Tls);
    return admitted_ != 0;
  }

  void evict() override {
    sh_.metrics->evicted_connection();
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
      // Under a flood this happens thousands of times a second: one line a second at most.
      const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
      auto last = self->sh_.last_evict_log.load(std::memory_order_relaxed);
      if (now - last >= std::chrono::steady_clock::duration(std::chrono::seconds(1)).count() &&
          self->sh_.last_evict_log.compare_exchange_strong(last, now)) {
        log::warn("connection_evicted", {{"remote", self->remote_},
                                         {"reason", "unauthenticated connection budget full (see otac_connections_evicted_total)"}});
      }
      beast::error_code ignored;
      beast::get_lowest_layer(self->stream_).socket().close(ignored);
    });
  }

  /// The executor of the connection's network thread.
  auto executor() { return stream_.get_executor(); }

  void start() {
    if constexpr (Tls) {
      beast::get_lowest_layer(stream_).expires_after(sh_.limits.handshake_timeout);
      stream_.async_handshake([self = this->shared_from_this()](beast::error_code ec) { self->on_handshake(ec); });
    } else {
      do_read(sh_.limits.read_timeout);
    }
  }

 private:
  void on_handshake(beast::error_code ec) {
    if (ec) {
      // Failed handshakes are routine (scanners, wrong CA, refused client certificate).
      log::info("tls_handshake_failed", {{"remote", remote_}, {"reason", ec.message()}});
      return;
    }
    if constexpr (Tls) {
      SSL* ssl = stream_.native_handle();
      X509* peer = SSL_get0_peer_certificate(ssl);
      if (peer && SSL_get_verify_result(ssl) == X509_V_OK) {
        cn_ = x509_cn(peer);
        fingerprint_ = x509_fingerprint(peer);
        sh_.admission.prove(admitted_);
      }
    }
    do_read(sh_.limits.read_timeout);
  }

  // One request is read with async_read_some in a loop rather than async_read, so that the
  // bytes consumed per request can be counted whatever the framing: chunk headers with their
  // extensions and the trailer are covered by neither header_limit nor body_limit.
  void do_read(std::chrono::seconds timeout) {
    parser_.emplace();
    configure_parser(*parser_, sh_.limits, on_chunk_header_);
    read_bytes_ = 0;
    beast::get_lowest_layer(stream_).expires_after(timeout);
    read_some();
  }

  void read_some() {
    bhttp::async_read_some(stream_, buffer_, *parser_, [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
      self->on_read_some(ec, n);
    });
  }

  void on_read_some(beast::error_code ec, std::size_t n) {
    read_bytes_ += n;
    if (!ec && read_bytes_ > sh_.max_request) ec = bhttp::error::body_limit;  // answered 413 below
    if (!ec && !parser_->is_done()) return read_some();
    on_read(ec);
  }

  void on_read(beast::error_code ec) {
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
        ec == beast::error::timeout || ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      return do_close();
    }
    started_ = std::chrono::steady_clock::now();
    ctx_ = RequestContext{};
    ctx_.remote = remote_;
    ctx_.tls = Tls;
    // For errors found while reading, answer (and log) with whatever header was read.
    Request dummy;
    dummy.version(11);
    dummy.keep_alive(false);
    // The request line is stored before the header is complete (and before body_limit fires).
    if (parser_->get().method() != bhttp::verb::unknown) {
      dummy.method(parser_->get().method());
      dummy.target(parser_->get().target());
      std::map<std::string, std::string> ignored;
      if (!split_target(dummy.target(), ctx_.path, ignored)) ctx_.path = "-";
    }
    if (auto refused = framing_refusal(ec, read_bytes_, sh_.max_request)) {
      sh_.metrics->refused_request();
      return reply_error(dummy, refused->status, refused->code, refused->message);
    }
    if (ec == bhttp::error::body_limit) {
      // Read and drop a declared body of moderate size first: closing with unread data
      // makes TCP send a reset, and the client would never see the 413.
      std::uint64_t remaining = 0;
      const auto cl = parser_->content_length();
      if (cl && *cl <= kMaxDrain) remaining = *cl > buffer_.size() ? *cl - buffer_.size() : 0;
      buffer_.consume(buffer_.size());
      too_large_ = std::move(dummy);
      return drain(remaining);
    }
    if (ec == bhttp::error::header_limit) {
      return reply_error(dummy, Status::request_header_fields_too_large, "header_too_large", "request header too large");
    }
    if (ec) return reply_error(dummy, Status::bad_request, "bad_http", "malformed HTTP request: " + ec.message());

    req_ = parser_->release();
    if (!cn_.empty()) ctx_.client_cn = cn_;
    ctx_.client_fingerprint = fingerprint_;
    if (!split_target(req_.target(), ctx_.path, ctx_.query)) {
      req_.keep_alive(false);
      return reply_error(req_, Status::bad_request, "bad_target", "malformed request target (path or query escapes)");
    }
    if (sh_.stopping.load()) {
      req_.keep_alive(false);
      return reply_error(req_, Status::service_unavailable, "stopping", "the server is shutting down; retry later");
    }
    bool allowed = true;
    RouteOptions opt;
    RequestContext probe;
    const AsyncHandler* fast = nullptr;
    router_.match(req_.method(), ctx_.path, probe, &allowed, &opt, &fast);
    count_answer();
    if (fast) {
      ctx_.params = probe.params;
      if (start_async(*fast)) return;
    }
    asio::thread_pool& pool = opt.slow ? *sh_.slow : *sh_.workers;
    asio::post(pool, [self = this->shared_from_this(), slow = opt.slow] {
      thread_local const bool named = (sys::name_this_thread(slow ? "otac-slow" : "otac-worker"), true);
      (void)named;  // a pool thread is named by its first handler (asio::thread_pool has no start hook)
      Response res = self->router_.dispatch(self->req_, self->ctx_);
      auto& st = self->stream_;
      asio::post(st.get_executor(), [self, r = std::move(res)]() mutable { self->write(std::move(r)); });
    });
  }

  // Runs a non-blocking handler here, on the network thread; the response it builds is
  // written from this connection's executor when it replies (for an authorization: once the
  // decision is durable, without any thread waiting for the commit). False when the handler
  // declined, or threw before handing the request on: the blocking handler runs instead.
  bool start_async(const AsyncHandler& fast) {
    Reply reply = [self = this->shared_from_this()](std::function<Response()> build) {
      asio::post(self->stream_.get_executor(), [self, build = std::move(build)] {
        self->write(Router::guarded(self->req_, self->ctx_, build));
      });
    };
    bool taken = false;
    try {
      taken = fast(req_, ctx_, std::move(reply));
    } catch (const std::exception& e) {
      ctx_.log["async_exception"] = e.what();
    }
    return taken;
  }

  // The request in hand has gone to a handler: its answer is owed until on_write. Both run on
  // this connection's executor, so counted_ needs no lock.
  void count_answer() {
    if (counted_) return;
    counted_ = true;
    sh_.answers_in_flight.fetch_add(1);
  }
  void answer_written() {
    if (!counted_) return;
    counted_ = false;
    sh_.answers_in_flight.fetch_sub(1);
  }

  static constexpr std::uint64_t kMaxDrain = 8u << 20;
  static constexpr std::size_t kDrainChunk = 16384;

  void drain(std::uint64_t remaining) {
    if (remaining == 0) {
      return reply_error(too_large_, Status::payload_too_large, "body_too_large",
                         "request body exceeds " + std::to_string(sh_.limits.max_body) + " bytes");
    }
    beast::get_lowest_layer(stream_).expires_after(sh_.limits.read_timeout);
    scratch_.resize(kDrainChunk);  // only for a connection that drains a refused body
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, scratch_.size()));
    stream_.async_read_some(asio::buffer(scratch_.data(), want),
                            [self = this->shared_from_this(), remaining](beast::error_code ec, std::size_t n) {
                              if (ec) return;  // peer gone or timed out: nothing to answer
                              self->drain(remaining - n);
                            });
  }

  void reply_error(const Request& req, Status status, std::string_view code, const std::string& message) {
    if (ctx_.path.empty()) ctx_.path = "-";
    req_ = req;
    Response r = error_response(req, status, code, message);
    r.keep_alive(false);
    write(std::move(r));
  }

  void write(Response res) {
    res_ = std::move(res);
    res_.set(bhttp::field::server, "otac-backend");
    if constexpr (Tls) res_.set(bhttp::field::strict_transport_security, "max-age=31536000");
    beast::get_lowest_layer(stream_).expires_after(sh_.limits.write_timeout);
    bhttp::async_write(stream_, res_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      self->on_write(ec);
    });
  }

  void on_write(beast::error_code ec) {
    answer_written();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    const unsigned status = res_.result_int();
    sh_.metrics->observe(req_.method_string(), status, secs);
    log::Fields f{{"method", std::string(req_.method_string())},
                  {"path", ctx_.path},
                  {"status", std::to_string(status)},
                  {"ms", std::to_string(static_cast<long long>(secs * 1000.0 + 0.5))},
                  {"remote", remote_}};
    if (!cn_.empty()) f.emplace_back("client_cn", cn_);
    for (const auto& [k, v] : ctx_.log) f.emplace_back(k, v);
    if (ec) f.emplace_back("write_error", ec.message());
    log_request(log::format("info", "request", f));
    if (ec) return;
    if (!res_.keep_alive() || sh_.stopping.load()) return do_close();
    do_read(sh_.limits.idle_timeout);
  }

  void do_close() {
    if constexpr (Tls) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  }

  Shared& sh_;
  const Router& router_;
  Stream stream_;
  beast::flat_buffer buffer_{sh_.max_buffer};
  std::size_t read_bytes_ = 0;
  ChunkHeaderCheck on_chunk_header_ = check_chunk_extensions;  // the parser keeps a reference
  std::optional<Parser> parser_;
  Request req_;
  RequestContext ctx_;
  Response res_;
  std::string source_ = "-";  ///< the peer's address, for the per-source limit
  std::string remote_ = "-";
  Admission::Id admitted_ = 0;
  std::string cn_;
  std::string fingerprint_;
  std::chrono::steady_clock::time_point started_{};
  Request too_large_;
  std::vector<char> scratch_;
  bool counted_ = false;  ///< this request is in Shared::answers_in_flight
};

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(asio::io_context& ioc, Shared& sh, const Router& router, asio::ssl::context* ssl)
      : sh_(sh), router_(router), ssl_(ssl), acceptor_(ioc) {}

  Result<std::uint16_t> open(const std::string& host, std::uint16_t port) {
    beast::error_code ec;
    const auto addr = asio::ip::make_address(host, ec);
    if (ec) return make_error(Errc::bad_value, "listen address '" + host + "' is not an IP address");
    const tcp::endpoint ep{addr, port};
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return make_error(Errc::io, "cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
    return acceptor_.local_endpoint().port();
  }

  void accept() {
    acceptor_.async_accept(sh_.pick_loop(), [self = shared_from_this()](beast::error_code ec, tcp::socket s) {
      self->on_accept(ec, std::move(s));
    });
  }

  void close() {
    asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->acceptor_.close(ec);
      self->timer_.cancel();
    });
  }

 private:
  void on_accept(beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec == asio::error::no_descriptors || ec.value() == ENFILE || ec == asio::error::no_buffer_space ||
        ec == asio::error::no_memory) {
      // Out of file descriptors (or kernel memory): accepting again at once would fail again
      // and spin. Wait, doubling up to a second, and log once per episode.
      if (backoff_ == std::chrono::milliseconds(0)) {
        log::warn("accept_paused", {{"reason", ec.message()},
                                    {"open_connections", std::to_string(sh_.admission.open())}});
        backoff_ = std::chrono::milliseconds(10);
      } else {
        backoff_ = std::min<std::chrono::milliseconds>(backoff_ * 2, std::chrono::seconds(1));
      }
      ++paused_;
      timer_.expires_after(backoff_);
      timer_.async_wait([self = shared_from_this()](beast::error_code e) {
        if (!e) self->accept();
      });
      return;
    }
    if (backoff_ != std::chrono::milliseconds(0)) {
      log::info("accept_resumed", {{"failed_accepts", std::to_string(paused_)}});
      backoff_ = std::chrono::milliseconds(0);
      paused_ = 0;
    }
    if (!ec) {
      if (ssl_) start_session(std::make_shared<Session<true>>(sh_, router_, std::move(socket), *ssl_));
      else start_session(std::make_shared<Session<false>>(sh_, router_, std::move(socket)));
    } else {
      log::warn("accept_failed", {{"reason", ec.message()}});
    }
    accept();
  }

  template <class S>
  void start_session(const std::shared_ptr<S>& session) {
    // The session's operations start on its own loop's thread, where all its handlers run.
    if (session->admit()) return asio::post(session->executor(), [session] { session->start(); });
    // Refused: the source has too many connections, or every slot is proven. The session's
    // destructor closes the socket at once.
    sh_.metrics->refused_connection();
  }

  Shared& sh_;
  const Router& router_;
  asio::ssl::context* ssl_;
  tcp::acceptor acceptor_;
  asio::steady_timer timer_{acceptor_.get_executor()};
  std::chrono::milliseconds backoff_{0};  ///< 0 while accepting normally
  std::uint64_t paused_ = 0;              ///< failed accepts in the current episode
};

}  // namespace

struct Server::Impl {
  std::vector<std::unique_ptr<asio::io_context>> loops;  ///< one per network thread; [0] also accepts
  Shared shared;
  asio::thread_pool workers;
  asio::thread_pool slow;
  std::vector<std::unique_ptr<asio::ssl::context>> contexts;
  std::vector<std::shared_ptr<Listener>> listeners;
  std::vector<std::thread> threads;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  bool stopped = false;

  Impl(Limits l, RequestMetrics& m) : workers(l.workers), slow(l.slow_workers) {
    for (unsigned i = 0; i < std::max(1u, l.io_threads); ++i) {
      loops.push_back(std::make_unique<asio::io_context>(1));  // run by one thread only
      shared.loops.push_back(loops.back().get());
    }
    shared.limits = l;
    shared.admission.configure(l.max_connections, l.max_unauthenticated ? l.max_unauthenticated : std::max(1u, l.max_connections / 2),
                               l.max_per_source);
    shared.max_request = max_request_of(l);
    shared.max_buffer = max_buffer_of(l);
    shared.metrics = &m;
    shared.workers = &workers;
    shared.slow = &slow;
  }
};

Server::Server(Limits limits, RequestMetrics& metrics) : impl_(std::make_unique<Impl>(limits, metrics)) {}

Server::~Server() { stop(); }

Result<std::uint16_t> Server::listen_tls(const std::string& host, std::uint16_t port, const TlsFiles& files,
                                         const Router& router) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  try {
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                     asio::ssl::context::single_dh_use | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX* native = ctx->native_handle();
    SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
    // TLS 1.2: forward-secret AEAD suites only (TLS 1.3 suites are all modern; OpenSSL's default).
    if (SSL_CTX_set_cipher_list(native,
                                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
                                "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305") != 1) {
      return make_error(Errc::crypto, "OpenSSL rejected the TLS 1.2 cipher list");
    }
    ctx->use_certificate_chain_file(files.cert.string());
    ctx->use_private_key_file(files.key.string(), asio::ssl::context::pem);
    ctx->load_verify_file(files.client_ca.string());
    // Client certificates are requested and verified against our CA but not required here:
    // operators use bearer tokens; terminal endpoints refuse requests without a verified one.
    ctx->set_verify_mode(asio::ssl::verify_peer);
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.client_ca.string().c_str());
    if (names) SSL_CTX_set_client_CA_list(native, names);
    static const unsigned char sid[] = "otac-backend";
    SSL_CTX_set_session_id_context(native, sid, sizeof sid - 1);
  } catch (const std::exception& e) {
    return make_error(Errc::crypto, std::string("cannot set up TLS (") + files.cert.string() + ", " +
                                        files.key.string() + ", " + files.client_ca.string() + "): " + e.what());
  }
  auto l = std::make_shared<Listener>(*impl_->loops.front(), impl_->shared, router, ctx.get());
  auto p = l->open(host, port);
  if (!p) return p;
  impl_->contexts.push_back(std::move(ctx));
  impl_->listeners.push_back(l);
  return p;
}

Result<std::uint16_t> Server::listen_plain(const std::string& host, std::uint16_t port, const Router& router) {
  auto l = std::make_shared<Listener>(*impl_->loops.front(), impl_->shared, router, nullptr);
  auto p = l->open(host, port);
  if (!p) return p;
  impl_->listeners.push_back(l);
  return p;
}

namespace {

// Raises the soft file-descriptor limit to the hard one (the default soft limit of 1,024 is
// what a connection limit of 1,024 needs alone), and warns when the connection limit still
// exceeds what the descriptors allow: accepts would then fail with EMFILE under load.
void check_fd_limit(std::uint32_t max_connections) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  // Listeners, the database and its journal, logs, the Kannel sender and slack.
  constexpr rlim_t kReserved = 64;
  const rlim_t usable = rl.rlim_cur > kReserved ? rl.rlim_cur - kReserved : 0;
  if (rl.rlim_cur != RLIM_INFINITY && max_connections > usable) {
    log::warn("fd_limit_low", {{"max_connections", std::to_string(max_connections)},
                               {"fd_limit", std::to_string(rl.rlim_cur)},
                               {"advice", "raise LimitNOFILE (systemd) or ulimit -n to at least " +
                                              std::to_string(max_connections + kReserved) +
                                              ", or lower max_connections"}});
  }
}

}  // namespace

void Server::start() {
  check_fd_limit(impl_->shared.limits.max_connections);
  for (auto& loop : impl_->loops) impl_->guards.push_back(asio::make_work_guard(*loop));
  for (auto& l : impl_->listeners) l->accept();
  const auto n = static_cast<unsigned>(impl_->loops.size());
  for (unsigned i = 0; i < n; ++i) {
    impl_->threads.emplace_back([this, i, n] { serve(i, n); });
  }
}

// A network thread serves until stop(): an exception that reaches the event loop (a handler
// that broke its no-throw contract, or std::bad_alloc) is counted, logged at most once a
// second, and the loop resumes. Only the connection whose handler threw is lost. Bounded by
// the io_context's life: run() returns normally once stop() stops it.
void Server::serve(unsigned index, unsigned expected) {
  sys::name_this_thread("otac-net");
  RequestMetrics& m = *impl_->shared.metrics;
  m.io_thread_started(expected);
  asio::io_context& loop = *impl_->loops[index];
  LineBatch lines(loop);
  t_request_lines = &lines;
  auto last_log = std::chrono::steady_clock::time_point{};
  std::uint64_t quiet = 0;
  while (!loop.stopped()) {
    try {
      loop.run();
    } catch (const std::exception& e) {
      m.io_exception();
      const auto now = std::chrono::steady_clock::now();
      if (now - last_log >= std::chrono::seconds(1)) {
        log::error("io_thread_exception", {{"what", e.what()}, {"suppressed", std::to_string(quiet)}});
        last_log = now;
        quiet = 0;
      } else {
        ++quiet;
      }
    } catch (...) {
      m.io_exception();
    }
  }
  t_request_lines = nullptr;
  lines.flush();
  m.io_thread_stopped();
}

void Server::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  impl_->shared.stopping = true;
  for (auto& l : impl_->listeners) l->close();
  // Let handlers in progress finish and their answers go out, then stop the network.
  impl_->workers.join();
  impl_->slow.join();
  // A blocking handler's answer is written by the network threads after its worker returns,
  // and an asynchronous handler's once the store's committer replies: wait until every answer
  // owed is written (bounded: a commit that takes longer than this loses only its answer,
  // never the commit).
  for (int i = 0; i < 5000 && impl_->shared.answers_in_flight.load() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  impl_->guards.clear();
  for (auto& loop : impl_->loops) loop->stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
}

unsigned check_request_bytes(std::string_view bytes, const Limits& limits) {
  // What a connection's read loop does (bhttp::async_read_some), without a socket: bytes enter
  // a buffer bounded like the connection's, the parser consumes what it can, and the bytes
  // consumed are counted against max_request.
  const std::size_t max_request = max_request_of(limits);
  ChunkHeaderCheck check = check_chunk_extensions;
  Parser parser;
  configure_parser(parser, limits, check);
  beast::flat_buffer buffer(max_buffer_of(limits));
  std::size_t offered = 0, consumed = 0;
  beast::error_code ec;
  // Bounded: every round either consumes bytes, offers new ones, or ends.
  for (std::size_t round = 0; round <= 2 * bytes.size() + 2 && !parser.is_done(); ++round) {
    if (offered < bytes.size() && buffer.size() < buffer.max_size()) {
      const std::size_t n = std::min(bytes.size() - offered, std::min<std::size_t>(buffer.max_size() - buffer.size(), 4096));
      auto mb = buffer.prepare(n);
      std::memcpy(mb.data(), bytes.data() + offered, n);
      buffer.commit(n);
      offered += n;
    }
    const std::size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    consumed += used;
    if (!ec && consumed > max_request) ec = bhttp::error::body_limit;
    if (ec == bhttp::error::need_more) {
      ec = {};
      if (offered == bytes.size()) return 0;  // incomplete: a connection would wait (and time out)
      if (buffer.size() == buffer.max_size()) {
        ec = bhttp::error::buffer_overflow;
        break;
      }
      continue;
    }
    if (ec) break;
  }
  if (!ec) return parser.is_done() ? 200 : 0;
  if (auto r = framing_refusal(ec, consumed, max_request)) return static_cast<unsigned>(r->status);
  if (ec == bhttp::error::body_limit) return 413;
  if (ec == bhttp::error::header_limit) return 431;
  return 400;
}

}  // namespace otac::backend::http
