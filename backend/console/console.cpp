// The operator console's handlers on the server's router: static assets, sessions, CSRF,
// roles, and the JSON API (views through the Service, actions through the operator API).
#include "console.hpp"

#include <array>
#include <charconv>
#include <chrono>
#include <deque>

#include <boost/json.hpp>

#include "assets.hpp"
#include "auth_throttle.hpp"
#include "json_input.hpp"
#include "otac/common/bytes.hpp"
#include "views.hpp"

namespace otac::backend::console {

namespace json = boost::json;
namespace bhttp = boost::beast::http;
using http::Status;

const Asset* find_asset(std::string_view name) noexcept {
  for (const Asset& a : assets())
    if (a.name == name) return &a;
  return nullptr;
}

namespace {

constexpr std::size_t max_body = 64 * 1024;
constexpr std::string_view csp =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

UnixTime system_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A header of the request, if present (a present but empty header is not absent).
std::optional<std::string_view> header(const http::Request& req, std::string_view name) {
  auto it = req.find(name);
  if (it == req.end()) return std::nullopt;
  return std::string_view(it->value());
}

// Headers on every console response: the page may only load itself, never be framed, and its
// types are never sniffed.
http::Response decorate(http::Response r) {
  r.set("Content-Security-Policy", csp);
  r.set("X-Content-Type-Options", "nosniff");
  r.set("X-Frame-Options", "DENY");
  r.set("Referrer-Policy", "no-referrer");
  r.set("Cross-Origin-Opener-Policy", "same-origin");
  r.set("Cross-Origin-Resource-Policy", "same-origin");
  r.set(bhttp::field::strict_transport_security, "max-age=31536000");
  return r;
}

http::Response json_answer(const http::Request& req, Status status, const json::value& v) {
  return decorate(http::json_response(req, status, v));
}

http::Response error_answer(const http::Request& req, Status status, std::string_view code, std::string_view message) {
  return decorate(http::error_response(req, status, code, message));
}

http::Response service_answer(const http::Request& req, http::RequestContext& ctx, const Error& e) {
  return decorate(http::service_error(req, ctx, e));
}

http::Response empty_answer(const http::Request& req, Status status) {
  http::Response r{status, req.version()};
  r.keep_alive(req.keep_alive());
  return r;
}

std::string mask_card(ByteView n) {
  const std::string h = to_hex(n);
  if (h.size() <= 4) return h;
  return std::string(h.size() - 4, '*') + h.substr(h.size() - 4);
}

// The operator API's transaction view, with the card masked for viewers and the queue's age.
json::object transaction_view(const TransactionRecord& t, UnixTime now, bool full_card) {
  json::object o = http::transaction_json(t);
  if (!full_card) o["card"] = mask_card(t.card);
  o["card_masked"] = mask_card(t.card);
  o["age_s"] = now - t.created_at;
  return o;
}

// Parses a JSON object body as the API does (strict: unknown and duplicate fields refused).
Result<json::object> parse_object(std::string_view body, std::initializer_list<std::string_view> allowed) {
  if (body.size() > max_body) return make_error(Errc::bad_length, "request body over 64 KiB");
  return http::parse_object(body.empty() ? std::string_view("{}") : body, allowed);
}

Result<std::int64_t> parse_int(std::string_view s, std::string_view what) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || v < 0)
    return make_error(Errc::bad_value, std::string(what) + " must be a non-negative integer");
  return v;
}

Result<Bytes> parse_card(std::string_view s) {
  auto b = from_hex(s);
  if (!b || b->size() != 8) return make_error(Errc::bad_value, "card id must be 16 hex digits (the card's N)");
  return std::move(*b);
}

// A query parameter; an empty value counts as absent (the page's filters send empty fields).
std::optional<std::string> query(const http::RequestContext& ctx, const char* name) {
  auto it = ctx.query.find(name);
  if (it == ctx.query.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

// Value of "key=" in an audit detail ("card=0102... list=3").
std::string detail_field(std::string_view detail, std::string_view key) {
  const std::string needle = std::string(key) + "=";
  std::size_t pos = 0;
  while ((pos = detail.find(needle, pos)) != std::string_view::npos) {
    if (pos == 0 || detail[pos - 1] == ' ') {
      auto v = detail.substr(pos + needle.size());
      return std::string(v.substr(0, v.find(' ')));
    }
    pos += needle.size();
  }
  return {};
}

// An audit detail with every "card=<hex>" masked as in the queue (for viewers).
std::string mask_card_fields(std::string_view detail) {
  std::string out;
  std::size_t pos = 0;
  while (true) {
    const auto at = detail.find("card=", pos);
    if (at == std::string_view::npos) break;
    const std::size_t start = at + 5;
    std::size_t end = start;
    while (end < detail.size() && std::isxdigit(static_cast<unsigned char>(detail[end]))) ++end;
    out.append(detail.substr(pos, start - pos));
    if (auto b = from_hex(detail.substr(start, end - start)); b && !b->empty()) out += mask_card(*b);
    else out.append(detail.substr(start, end - start));
    pos = end;
  }
  out.append(detail.substr(pos));
  return out;
}

json::object audit_view(AuditEntry e, bool full_card) {
  if (!full_card) e.detail = mask_card_fields(e.detail);
  return http::audit_json(e);
}

json::object session_json(const Session& s) {
  return json::object{{"name", s.operator_name}, {"role", role_name(s.role)}, {"csrf", s.csrf}, {"expires_at", s.expires_at}};
}

}  // namespace

// One API call in flight: the request, its routing context and the caller's session.
struct Console::Call {
  const http::Request& req;
  http::RequestContext& ctx;
  Session session;
  std::string session_id;
  UnixTime now = 0;
  bool full_card = false;  ///< viewers (the least role) see card ids masked
};

Console::Console(Service& service, const http::Router& router, ConsoleOptions options)
    : service_(service), router_(router), options_(std::move(options)), sessions_(options_.sessions, options_.clock) {}

Console::~Console() = default;

UnixTime Console::now() const { return options_.clock ? options_.clock() : system_now(); }

void Console::install(http::Router& router) {
  using http::Verb;
  auto page = [this](const http::Request& req, http::RequestContext& ctx) { return this->page(req, ctx); };
  // "/console" and "/console/" are the same route to the router (empty segments are ignored).
  router.add(Verb::get, "/console", page);
  router.add(Verb::head, "/console", page);
  router.add(Verb::post, "/console/api/session",
             [this](const http::Request& req, http::RequestContext& ctx) { return sign_in(req, ctx); });
  api(router, Verb::get, "session", &Console::session_get);
  api(router, Verb::delete_, "session", &Console::session_delete);
  api(router, Verb::get, "held", &Console::held);
  api(router, Verb::post, "held/*/*", &Console::held_decide);
  api(router, Verb::get, "transactions", &Console::transactions);
  api(router, Verb::get, "transactions/*", &Console::transaction);
  api(router, Verb::get, "refunds", &Console::refunds);
  api(router, Verb::post, "refunds/*/*", &Console::refund_decide);
  api(router, Verb::get, "cards", &Console::cards);
  api(router, Verb::post, "cards", &Console::card_enroll);
  api(router, Verb::get, "cards/*", &Console::card);
  api(router, Verb::post, "cards/*/settings", &Console::card_settings);  // before cards/*/*
  api(router, Verb::post, "cards/*/*", &Console::card_action);
  api(router, Verb::get, "terminals", &Console::terminals);
  api(router, Verb::post, "terminals", &Console::terminal_register);
  api(router, Verb::post, "terminals/*/*", &Console::terminal_action);
  api(router, Verb::get, "audit", &Console::audit);
  api(router, Verb::get, "stats", &Console::stats);
  // Assets, and a JSON 404 for API paths no route above has.
  router.add_prefix("/console/", page);
}

void Console::api(http::Router& router, http::Verb verb, std::string pattern, ApiHandler h) {
  router.add(verb, "/console/api/" + pattern,
             [this, h](const http::Request& req, http::RequestContext& ctx) { return guarded(req, ctx, h); });
}

// The checks every API call but sign-in passes: Origin, session, and CSRF when it changes state.
http::Response Console::guarded(const http::Request& req, http::RequestContext& ctx, ApiHandler h) {
  const bool changing = is_state_changing(req.method_string());
  if (changing) {
    // Defence in depth beside SameSite=Strict and the CSRF token: a browser's Origin, when
    // sent, must be this host.
    auto origin = header(req, "Origin");
    auto host = header(req, "Host");
    if (origin && (!host || *origin != "https://" + std::string(*host)))
      return error_answer(req, Status::forbidden, "forbidden", "cross-origin request refused");
  }
  std::optional<std::string_view> sid;
  if (auto cookies = header(req, "Cookie")) sid = cookie_value(*cookies, session_cookie);
  // The page marks its timed refreshes; they keep the session alive no longer than its idle limit.
  const bool background = header(req, "X-Console-Background").has_value();
  std::optional<Session> session = sid ? sessions_.touch(*sid, !background) : std::nullopt;
  if (!session)
    return error_answer(req, Status::unauthorized, "unauthorized", "sign in first (the session is missing or has expired)");
  if (changing && !csrf_ok(*session, header(req, "X-CSRF-Token")))
    return error_answer(req, Status::forbidden, "csrf", "the request lacks a valid X-CSRF-Token header; reload the console");
  const bool full_card = session->role != Role::viewer;
  Call c{req, ctx, std::move(*session), std::string(*sid), now(), full_card};
  return (this->*h)(c);
}

http::Response Console::page(const http::Request& req, http::RequestContext& ctx) {
  const std::string_view path = ctx.path;
  if (path == "/console") {
    http::Response r = empty_answer(req, Status::permanent_redirect);
    r.set(bhttp::field::location, "/console/");
    r.set(bhttp::field::cache_control, "no-store");
    return decorate(std::move(r));
  }
  const std::string_view rest = path.substr(std::string_view("/console/").size());
  if (rest == "api" || rest.starts_with("api/"))
    return error_answer(req, Status::not_found, "not_found", "no such console API call");
  if (req.method() != http::Verb::get && req.method() != http::Verb::head) {
    http::Response r = error_answer(req, Status::method_not_allowed, "method_not_allowed", "console pages are read with GET");
    r.set(bhttp::field::allow, "GET, HEAD");
    return r;
  }
  const Asset* a = find_asset(rest.empty() ? std::string_view("index.html") : rest);
  if (!a) {
    return decorate(http::text_response(req, Status::not_found, "Not found. The console starts at /console/.\n"));
  }
  http::Response r = empty_answer(req, Status::ok);
  // Revalidate every time: the ETag makes that a 304 until the backend is upgraded.
  r.set(bhttp::field::cache_control, "no-cache");
  r.set(bhttp::field::etag, a->etag);
  if (auto inm = header(req, "If-None-Match"); inm && *inm == a->etag) {
    r.result(Status::not_modified);
    return decorate(std::move(r));
  }
  r.set(bhttp::field::content_type, a->content_type);
  if (req.method() == http::Verb::get) r.body().assign(reinterpret_cast<const char*>(a->bytes.data()), a->bytes.size());
  r.prepare_payload();
  return decorate(std::move(r));
}

http::Response Console::sign_in(const http::Request& req, http::RequestContext& ctx) {
  auto origin = header(req, "Origin");
  auto host = header(req, "Host");
  if (origin && (!host || *origin != "https://" + std::string(*host)))
    return error_answer(req, Status::forbidden, "forbidden", "cross-origin request refused");
  // No session yet, so no CSRF token: a JSON content type (which a cross-site form cannot send
  // without a CORS preflight we never grant) and the Origin check stand in for it.
  auto ct = header(req, "Content-Type");
  if (!ct || !ct->starts_with("application/json"))
    return error_answer(req, Status::unsupported_media_type, "unsupported_media_type",
                        "sign-in takes a JSON body (Content-Type: application/json)");
  auto body = parse_object(req.body(), {"token"});
  if (!body) return error_answer(req, Status::bad_request, "bad_request", body.error().message);
  auto it = body->find("token");
  if (it == body->end()) return error_answer(req, Status::bad_request, "bad_request", "field \"token\" is required");
  if (!it->value().is_string())
    return error_answer(req, Status::bad_request, "bad_request", "field \"token\" must be a string");
  const std::string_view token = it->value().as_string();
  if (token.empty() || token.size() > 512)
    return error_answer(req, Status::unauthorized, "unauthorized", "the operator token is not valid");
  Result<OperatorRecord> op = make_error(Errc::internal, "no operator check");
  if (options_.gate) {
    http::GateAnswer g = options_.gate->check(ctx.remote, token, "console");
    if (g.retry_after > 0) {
      http::Response r = error_answer(req, Status::too_many_requests, "throttled",
                                      "too many wrong operator tokens from this address; retry after " +
                                          std::to_string(g.retry_after) + " s");
      r.set(bhttp::field::retry_after, std::to_string(g.retry_after));
      return r;
    }
    if (g.error) op = *g.error;
    else if (g.op) op = std::move(*g.op);
    else op = make_error(Errc::not_found, "unknown operator token");
  } else {
    op = service_.authenticate_operator(token);
  }
  if (!op) {
    if (op.error().code == Errc::not_found)
      return error_answer(req, Status::unauthorized, "unauthorized", "the operator token is not valid");
    return service_answer(req, ctx, op.error());
  }
  auto s = sessions_.create(op->name, op->role, token);
  if (!s) return error_answer(req, Status::service_unavailable, "busy", s.error().message);
  http::Response r = json_answer(req, Status::ok, session_json(s->session));
  r.set(bhttp::field::set_cookie, std::string(session_cookie) + "=" + s->id +
                                      "; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=" +
                                      std::to_string(sessions_.limits().absolute.count()));
  return r;
}

http::Response Console::session_get(Call& c) { return json_answer(c.req, Status::ok, session_json(c.session)); }

http::Response Console::session_delete(Call& c) {
  sessions_.destroy(c.session_id);
  http::Response r = json_answer(c.req, Status::ok, json::object{{"signed_out", true}});
  r.set(bhttp::field::set_cookie, std::string(session_cookie) + "=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
  return r;
}

// ---- held transactions and transactions ----

http::Response Console::held(Call& c) {
  TransactionFilter f;
  f.decision = Decision::held;
  f.limit = 500;
  auto list = service_.list_transactions(f);
  if (!list) return service_answer(c.req, c.ctx, list.error());
  json::array a;
  for (const auto& tr : *list) a.push_back(transaction_view(tr, c.now, c.full_card));
  if (auto met = service_.metrics()) sample_outbox(c.now, met->outbox_depth);
  return json_answer(c.req, Status::ok, json::object{{"held", std::move(a)}, {"now", c.now}});
}

http::Response Console::held_decide(Call& c) {
  const std::string& verb = c.ctx.params.at(1);
  if (verb != "approve" && verb != "decline")
    return error_answer(c.req, Status::not_found, "not_found", "a held transaction is approved or declined");
  return forward(c, http::Verb::post, "/v1/admin/transactions/" + percent_encode(c.ctx.params.at(0)) + "/" + verb, {});
}

http::Response Console::transactions(Call& c) {
  TransactionFilter f;
  if (auto v = query(c.ctx, "card")) {
    auto n = parse_card(*v);
    if (!n) return error_answer(c.req, Status::bad_request, "bad_request", n.error().message);
    f.card = std::move(*n);
  }
  if (auto v = query(c.ctx, "terminal")) f.terminal_id = *v;
  if (auto v = query(c.ctx, "decision")) {
    if (*v == "approved") f.decision = Decision::approved;
    else if (*v == "declined") f.decision = Decision::declined;
    else if (*v == "held") f.decision = Decision::held;
    else return error_answer(c.req, Status::bad_request, "bad_request", "decision must be approved, declined or held");
  }
  for (auto [name, field] : {std::pair{"since", &f.since}, std::pair{"until", &f.until}}) {
    if (auto v = query(c.ctx, name)) {
      auto n = parse_int(*v, name);
      if (!n) return error_answer(c.req, Status::bad_request, "bad_request", n.error().message);
      *field = *n;
    }
  }
  if (auto v = query(c.ctx, "limit")) {
    auto n = parse_int(*v, "limit");
    if (!n || *n < 1 || *n > 1000) return error_answer(c.req, Status::bad_request, "bad_request", "limit must be 1..1000");
    f.limit = static_cast<std::uint32_t>(*n);
  }
  auto list = service_.list_transactions(f);
  if (!list) return service_answer(c.req, c.ctx, list.error());
  json::array a;
  for (const auto& tr : *list) {
    json::object o = transaction_view(tr, c.now, c.full_card);
    // What became of an approval (completed, reversed, voided, ...), one short read each: the
    // list is at most 1000 rows, and only approvals can have an outcome.
    if (tr.decision == Decision::approved) {
      auto outcome = service_.outcome(tr.txn_id);
      if (!outcome) return service_answer(c.req, c.ctx, outcome.error());
      if (*outcome) o["outcome"] = outcome_name((*outcome)->outcome);
    }
    a.push_back(std::move(o));
  }
  return json_answer(c.req, Status::ok, json::object{{"transactions", std::move(a)}});
}

http::Response Console::transaction(Call& c) {
  auto t = service_.transaction(c.ctx.params.at(0));
  if (!t) return service_answer(c.req, c.ctx, t.error());
  json::object o = transaction_view(*t, c.now, c.full_card);
  // What happened after the decision (protocol.md 5.4), as one line each.
  auto outcome = service_.outcome(t->txn_id);
  if (!outcome) return service_answer(c.req, c.ctx, outcome.error());
  if (*outcome)
    o["outcome"] = std::string(outcome_name((*outcome)->outcome)) + ", handed over " + std::to_string((*outcome)->handed_minor) +
                   " (minor units), reported by " + (*outcome)->reported_by;
  if (auto refund = service_.refund(t->txn_id))
    o["refund"] = std::to_string(refund->amount_minor) + " (minor units), " + refund_state_name(refund->state) +
                  (refund->decided_by.empty() ? std::string() : " by " + refund->decided_by);
  return json_answer(c.req, Status::ok, o);
}

// ---- refunds (protocol.md 5.4): asked by a terminal, decided by an operator ----

http::Response Console::refunds(Call& c) {
  // The pending requests, as otac-admin refunds lists them (no card numbers in them).
  return forward(c, http::Verb::get, "/v1/admin/refunds?state=pending&limit=500", {});
}

http::Response Console::refund_decide(Call& c) {
  const std::string& verb = c.ctx.params.at(1);
  if (verb != "approve" && verb != "decline")
    return error_answer(c.req, Status::not_found, "not_found", "a refund is approved or declined");
  // The operator API checks the role, decides once (409 after) and audits it.
  return forward(c, http::Verb::post, "/v1/admin/refunds/" + percent_encode(c.ctx.params.at(0)) + "/" + verb, {});
}

// ---- cards ----

http::Response Console::cards(Call& c) {
  auto list = service_.list_cards(100);
  if (!list) return service_answer(c.req, c.ctx, list.error());
  json::array a;
  for (const auto& card : *list) {
    json::object o = http::card_json(card);
    if (!c.full_card) o["n"] = mask_card(card.n);
    a.push_back(std::move(o));
  }
  return json_answer(c.req, Status::ok, json::object{{"cards", std::move(a)}});
}

http::Response Console::card_enroll(Call& c) {
  // The answer carries the letter (with K): it goes to this response only, never stored.
  return forward(c, http::Verb::post, "/v1/admin/cards", c.req.body());
}

http::Response Console::card(Call& c) {
  auto n = parse_card(c.ctx.params.at(0));
  if (!n) return error_answer(c.req, Status::bad_request, "bad_request", n.error().message);
  auto card = service_.card_summary(*n);
  if (!card) return service_answer(c.req, c.ctx, card.error());
  json::object o = http::card_json(*card);
  if (!c.full_card) o["n"] = mask_card(*n);
  // The card's history (SMS, PoRs, settings), newest first, from the latest 5,000 audit entries.
  json::array events;
  if (auto entries = service_.audit_recent(5000)) {
    const std::string id = to_hex(*n);
    for (auto it = entries->rbegin(); it != entries->rend() && events.size() < 20; ++it)
      if (detail_field(it->detail, "card") == id) events.push_back(audit_view(*it, c.full_card));
  }
  o["events"] = std::move(events);
  return json_answer(c.req, Status::ok, o);
}

http::Response Console::card_settings(Call& c) {
  auto n = parse_card(c.ctx.params.at(0));
  if (!n) return error_answer(c.req, Status::bad_request, "bad_request", n.error().message);
  // The operator API checks the role, the fields and the windows, and audits the change.
  return forward(c, http::Verb::post, "/v1/admin/cards/" + to_hex(*n) + "/settings", c.req.body());
}

http::Response Console::card_action(Call& c) {
  auto n = parse_card(c.ctx.params.at(0));
  if (!n) return error_answer(c.req, Status::bad_request, "bad_request", n.error().message);
  const std::string& verb = c.ctx.params.at(1);
  if (verb != "block" && verb != "unblock" && verb != "refresh" && verb != "rotate-key")
    return error_answer(c.req, Status::not_found, "not_found", "no such card action");
  return forward(c, http::Verb::post, "/v1/admin/cards/" + to_hex(*n) + "/" + verb, {});
}

// ---- terminals ----

http::Response Console::terminals(Call& c) {
  auto list = service_.list_terminals(200);
  if (!list) return service_answer(c.req, c.ctx, list.error());
  json::array a;
  for (const auto& t : *list) {
    json::object o = http::terminal_json(t);
    TransactionFilter f;
    f.terminal_id = t.id;
    f.limit = 1;
    auto last = service_.list_transactions(f);
    o["last_seen"] = (last && !last->empty()) ? last->front().created_at : 0;
    a.push_back(std::move(o));
  }
  return json_answer(c.req, Status::ok, json::object{{"terminals", std::move(a)}});
}

http::Response Console::terminal_register(Call& c) {
  // Registration issues the client certificate at once; its key is in this answer only.
  return forward(c, http::Verb::post, "/v1/admin/terminals", c.req.body());
}

http::Response Console::terminal_action(Call& c) {
  // The operator API validates the id and checks the role.
  const std::string& id = c.ctx.params.at(0);
  const std::string& verb = c.ctx.params.at(1);
  if (verb == "revoke") return forward(c, http::Verb::post, "/v1/admin/terminals/" + percent_encode(id) + "/revoke", {});
  if (verb == "cert") {
    // A new certificate is a re-registration with the same settings (the old one stops working).
    auto old = service_.terminal(id);
    if (!old) return error_answer(c.req, Status::not_found, "not_found", "no terminal " + id + "; register it first");
    return forward(c, http::Verb::post, "/v1/admin/terminals",
                   json::serialize(json::object{{"id", id}, {"limit_minor", old->limit_minor}}));
  }
  return error_answer(c.req, Status::not_found, "not_found", "no such terminal action");
}

// ---- audit and chart data ----

http::Response Console::audit(Call& c) {
  std::int64_t limit = 200;
  if (auto v = query(c.ctx, "limit")) {
    auto n = parse_int(*v, "limit");
    if (!n || *n < 1 || *n > 1000) return error_answer(c.req, Status::bad_request, "bad_request", "limit must be 1..1000");
    limit = *n;
  }
  auto entries = service_.audit_recent(static_cast<std::uint32_t>(limit));
  if (!entries) return service_answer(c.req, c.ctx, entries.error());
  json::array a;
  for (auto it = entries->rbegin(); it != entries->rend(); ++it) a.push_back(audit_view(std::move(*it), c.full_card));
  return json_answer(c.req, Status::ok, json::object{{"entries", std::move(a)}});
}

http::Response Console::stats(Call& c) {
  const UnixTime t = c.now;
  auto metrics = service_.metrics();
  if (!metrics) return service_answer(c.req, c.ctx, metrics.error());
  TransactionFilter f;
  f.since = t - 3600;
  f.limit = 1000;
  auto list = service_.list_transactions(f);
  if (!list) return service_answer(c.req, c.ctx, list.error());
  // Decisions per minute over the last hour, oldest first.
  json::array buckets;
  std::vector<std::array<std::int64_t, 3>> counts(60, {0, 0, 0});
  for (const auto& tr : *list) {
    const std::int64_t age = t - tr.created_at;
    if (age < 0 || age >= 3600) continue;
    counts[static_cast<std::size_t>(59 - age / 60)][static_cast<std::size_t>(tr.decision)]++;
  }
  for (std::size_t i = 0; i < counts.size(); ++i)
    buckets.push_back(json::object{{"start", t - 3600 + static_cast<std::int64_t>(i) * 60},
                                   {"approved", counts[i][0]},
                                   {"declined", counts[i][1]},
                                   {"held", counts[i][2]}});
  json::object decisions;
  for (const auto& [k, v] : metrics->decisions) decisions[k] = v;
  sample_outbox(t, metrics->outbox_depth);
  json::array history;
  {
    std::lock_guard lock(outbox_mu_);
    for (const auto& [at, depth] : outbox_history_) history.push_back(json::array{at, depth});
  }
  return json_answer(c.req, Status::ok,
                     json::object{{"now", t},
                                  {"outbox_depth", metrics->outbox_depth},
                                  {"outbox_history", std::move(history)},
                                  {"decisions", std::move(decisions)},
                                  {"per_minute", std::move(buckets)}});
}

void Console::sample_outbox(UnixTime t, std::uint32_t depth) {
  std::lock_guard lock(outbox_mu_);
  // One sample per 10 s is plenty for an hour's chart, however many consoles poll.
  if (!outbox_history_.empty() && t - outbox_history_.back().first < 10) {
    outbox_history_.back().second = depth;
    return;
  }
  outbox_history_.emplace_back(t, depth);
  while (!outbox_history_.empty() && (outbox_history_.front().first < t - 3600 || outbox_history_.size() > 400))
    outbox_history_.pop_front();
}

// Sends an action to the operator API through the router, as the signed-in operator.
http::Response Console::forward(const Call& c, http::Verb method, std::string target, std::string body) {
  http::Request r{method, target, 11};
  const auto& tok = *c.session.token;
  {
    std::string bearer = "Bearer " + std::string(reinterpret_cast<const char*>(tok.data()), tok.size());
    r.set(bhttp::field::authorization, bearer);
    secure_zero(bearer.data(), bearer.size());
  }
  if (!body.empty()) r.set(bhttp::field::content_type, "application/json");
  if (auto host = header(c.req, "Host")) r.set(bhttp::field::host, *host);
  r.body() = std::move(body);
  r.prepare_payload();
  http::RequestContext ctx;
  ctx.remote = "console";
  ctx.tls = true;
  http::Response api = http::dispatch_target(router_, r, ctx);
  // Wipe the token in the request's own header storage before the request frees it.
  if (auto it = r.find(bhttp::field::authorization); it != r.end()) {
    const auto v = it->value();
    secure_zero(const_cast<char*>(v.data()), v.size());
  }
  // The API's answer, under the console's headers.
  http::Response out{api.result(), c.req.version()};
  out.set(bhttp::field::content_type, "application/json");
  out.set(bhttp::field::cache_control, "no-store");
  out.keep_alive(c.req.keep_alive());
  out.body() = std::move(api.body());
  out.prepare_payload();
  return decorate(std::move(out));
}

}  // namespace otac::backend::console
