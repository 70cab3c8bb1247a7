#include "router.hpp"

#include <exception>

namespace otac::backend::http {
namespace {

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') { ++i; continue; }
    const std::size_t j = path.find('/', i);
    const std::size_t end = j == std::string_view::npos ? path.size() : j;
    out.emplace_back(path.substr(i, end - i));
    i = end;
  }
  return out;
}

}  // namespace

void Router::add(Verb method, std::string pattern, Handler h, RouteOptions opt) {
  routes_.push_back(Route{method, split_path(pattern), std::move(h), opt, {}});
}

void Router::add(Verb method, std::string pattern, Handler h, AsyncHandler fast, RouteOptions opt) {
  routes_.push_back(Route{method, split_path(pattern), std::move(h), opt, std::move(fast)});
}

void Router::add_prefix(std::string prefix, Handler h, RouteOptions opt) {
  prefixes_.push_back(Prefix{std::move(prefix), std::move(h), opt});
}

const Handler* Router::match(Verb method, std::string_view path, RequestContext& ctx, bool* method_allowed,
                             RouteOptions* opt, const AsyncHandler** fast) const {
  *method_allowed = true;
  if (fast) *fast = nullptr;
  const auto segs = split_path(path);
  bool path_seen = false;
  for (const auto& r : routes_) {
    if (r.segments.size() != segs.size()) continue;
    std::vector<std::string> params;
    bool ok = true;
    for (std::size_t i = 0; i < segs.size() && ok; ++i) {
      if (r.segments[i] == "*") params.push_back(segs[i]);
      else ok = r.segments[i] == segs[i];
    }
    if (!ok) continue;
    path_seen = true;
    if (r.method != method) continue;
    ctx.params = std::move(params);
    if (opt) *opt = r.opt;
    if (fast && r.fast) *fast = &r.fast;
    return &r.handler;
  }
  if (path_seen) {
    *method_allowed = false;
    return nullptr;
  }
  for (const auto& p : prefixes_) {
    if (path.substr(0, p.prefix.size()) == p.prefix) {
      if (opt) *opt = p.opt;
      return &p.handler;
    }
  }
  return nullptr;
}

Response Router::guarded(const Request& req, RequestContext& ctx, const std::function<Response()>& build) {
  try {
    return build();
  } catch (const Failure& f) {  // an Error thrown through the store: it keeps its status
    return service_error(req, ctx, f.error());
  } catch (const std::exception& e) {
    ctx.log["exception"] = e.what();
  } catch (...) {
  }
  return error_response(req, Status::internal_server_error, "internal", "the server failed to handle this request; see its log");
}

Response Router::dispatch(const Request& req, RequestContext& ctx) const {
  bool allowed = true;
  const Handler* h = match(req.method(), ctx.path, ctx, &allowed, nullptr);
  if (!h) {
    if (!allowed) return error_response(req, Status::method_not_allowed, "method_not_allowed", "this path does not accept " + std::string(req.method_string()));
    return error_response(req, Status::not_found, "not_found", "no such endpoint; see docs/protocol.md section 5");
  }
  return guarded(req, ctx, [&] { return (*h)(req, ctx); });
}

Response json_response(const Request& req, Status status, const boost::json::value& body) {
  return text_response(req, status, boost::json::serialize(body) + "\n", "application/json");
}

Response text_response(const Request& req, Status status, std::string body, std::string_view content_type) {
  Response res{status, req.version()};
  res.set(boost::beast::http::field::content_type, content_type);
  res.set(boost::beast::http::field::cache_control, "no-store");
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response error_response(const Request& req, Status status, std::string_view code, std::string_view message) {
  boost::json::object o;
  o["error"] = code;
  o["message"] = message;
  return json_response(req, status, o);
}

Response service_error(const Request& req, RequestContext& ctx, const Error& e) {
  Status s = Status::internal_server_error;
  switch (e.code) {
    case Errc::bad_value: case Errc::truncated: case Errc::bad_length: case Errc::trailing_data:
    case Errc::unsupported:
      s = Status::bad_request; break;
    case Errc::state: s = Status::forbidden; break;
    case Errc::not_found: s = Status::not_found; break;
    case Errc::conflict: s = Status::conflict; break;
    case Errc::timeout: case Errc::unavailable: s = Status::service_unavailable; break;
    default: break;
  }
  if (s != Status::internal_server_error && e.code != Errc::unavailable) return error_response(req, s, errc_name(e.code), e.message);
  // A failure of the server, not of the request: its detail (a token's label, a path, an
  // SQLite message) goes to the request's log line only.
  ctx.log["error"] = e.message;
  if (s == Status::internal_server_error) return error_response(req, s, errc_name(e.code), "internal error; see the server log");
  Response r = error_response(req, s, errc_name(e.code), "a service the backend needs (its key token) is out for now; retry later");
  r.set(boost::beast::http::field::retry_after, "1");
  return r;
}

bool split_target(std::string_view target, std::string& path, std::map<std::string, std::string>& query) {
  const std::size_t q = target.find('?');
  auto p = percent_decode(target.substr(0, q), false);
  if (!p || p->empty() || (*p)[0] != '/') return false;
  path = std::move(*p);
  if (q == std::string_view::npos) return true;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view kv = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    if (kv.empty()) continue;
    const std::size_t eq = kv.find('=');
    auto k = percent_decode(kv.substr(0, eq));
    auto v = percent_decode(eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1));
    if (!k || !v) return false;
    query[*k] = std::move(*v);
  }
  return true;
}

Response dispatch_target(const Router& router, const Request& req, RequestContext& ctx) {
  if (!split_target(req.target(), ctx.path, ctx.query))
    return error_response(req, Status::bad_request, "bad_request", "malformed request target");
  return router.dispatch(req, ctx);
}

}  // namespace otac::backend::http
