// HTTP routing for otac-backend: exact and prefix routes to blocking handlers that turn a
// Beast request into a response. Handlers run on the worker pools, never on the network
// threads (RouteOptions::slow for those that wait), so they may call the Service directly.
// A route may also have a non-blocking handler (AsyncHandler), which the network thread tries
// first: POST /v1/authorizations hands its transaction to the store's committer and answers
// from the commit's completion, so no thread waits for the fsync.
// The server logs every request once; handlers add fields to ctx.log (never secrets).
#pragma once

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "otac/common/result.hpp"
#include "service.hpp"

namespace otac::backend::http {

using Verb = boost::beast::http::verb;
using Status = boost::beast::http::status;
/// A complete request (headers + body) as the server read it.
using Request = boost::beast::http::request<boost::beast::http::string_body>;
/// A complete response.
using Response = boost::beast::http::response<boost::beast::http::string_body>;

/// What the server knows about the connection and request besides the HTTP message.
struct RequestContext {
  std::string remote;                       ///< peer "ip:port"
  bool tls = false;                         ///< request arrived over TLS
  std::optional<std::string> client_cn;     ///< CN of a client certificate the CA verified
  std::string client_fingerprint;           ///< SHA-256 (hex) of that certificate's DER
  std::string path;                         ///< target without the query string
  std::map<std::string, std::string> query; ///< decoded query parameters (last one wins)
  std::vector<std::string> params;          ///< path segments matched by '*' in the route
  std::map<std::string, std::string> log;   ///< extra key=value fields for the request log line
};

/// A request handler; runs on a worker thread and may block.
using Handler = std::function<Response(const Request&, RequestContext&)>;

/// How an asynchronous handler answers, exactly once and from any thread: with a function
/// that builds the response. The server runs it on the connection's network thread (so it
/// must not block for long) and writes what it returns.
using Reply = std::function<void(std::function<Response()>)>;
/// A handler that never blocks: it runs on the network thread and answers later through
/// reply. It returns false, having done nothing, when it cannot go on without blocking; the
/// route's blocking handler then runs on a worker thread as usual. req and ctx stay valid
/// until the reply's response is written.
using AsyncHandler = std::function<bool(const Request&, RequestContext&, Reply)>;

/// Per-route options.
struct RouteOptions {
  bool slow = false;  ///< may wait for a long time (long-poll): runs on the slow pool
};

/// Routes requests by method and path. Registration happens before the server starts;
/// dispatch is then read-only and thread-safe.
class Router {
 public:
  /// Exact path; a segment "*" matches any one non-empty segment (collected in ctx.params).
  void add(Verb method, std::string pattern, Handler h, RouteOptions opt = {});
  /// The same, with a non-blocking handler tried first (see AsyncHandler).
  void add(Verb method, std::string pattern, Handler h, AsyncHandler fast, RouteOptions opt = {});
  /// Any method, any path starting with prefix (e.g. "/console/"). Exact routes win.
  void add_prefix(std::string prefix, Handler h, RouteOptions opt = {});
  /// Finds the route; fills ctx.params. nullptr when no route matches the path at all.
  /// *method_allowed is false when the path exists with other methods only (-> 405).
  /// *fast, when asked for, is the route's non-blocking handler or null.
  const Handler* match(Verb method, std::string_view path, RequestContext& ctx, bool* method_allowed,
                       RouteOptions* opt, const AsyncHandler** fast = nullptr) const;
  /// Runs the matching handler, or answers 404/405. Catches exceptions (-> 500).
  Response dispatch(const Request& req, RequestContext& ctx) const;
  /// build(), or a 500 answer when it throws (the exception noted in ctx.log).
  static Response guarded(const Request& req, RequestContext& ctx, const std::function<Response()>& build);

 private:
  struct Route {
    Verb method;
    std::vector<std::string> segments;
    Handler handler;
    RouteOptions opt;
    AsyncHandler fast;  ///< may be empty
  };
  struct Prefix {
    std::string prefix;
    Handler handler;
    RouteOptions opt;
  };
  std::vector<Route> routes_;
  std::vector<Prefix> prefixes_;
};

/// A JSON response with the request's HTTP version and keep-alive.
Response json_response(const Request& req, Status status, const boost::json::value& body);
/// A text response with the given content type.
Response text_response(const Request& req, Status status, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8");
/// {"error": code, "message": message} with the status.
Response error_response(const Request& req, Status status, std::string_view code, std::string_view message);
/// Maps a service error to its HTTP status (service.hpp's table) and an error response. A 5xx
/// keeps its detail out of the answer and puts it in the request's log line (ctx.log "error").
/// `unavailable` is 503 with Retry-After: 1, so that a terminal retries or tries another node.
Response service_error(const Request& req, RequestContext& ctx, const Error& e);

/// Splits "/a/b?x=1&y=%20" into path and decoded query parameters; false if malformed.
bool split_target(std::string_view target, std::string& path, std::map<std::string, std::string>& query);

/// Fills ctx's path and query from the request's target and runs it through router (400 for a
/// malformed target): a request made inside the process, e.g. the console's actions.
Response dispatch_target(const Router& router, const Request& req, RequestContext& ctx);

}  // namespace otac::backend::http
