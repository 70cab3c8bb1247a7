// The operator console's request handler: static assets, sessions, CSRF, roles, JSON API.
#include "console.hpp"
#include "json_input.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <deque>
#include <limits>
#include <set>

#include <boost/json.hpp>

#include "assets.hpp"
#include "auth_throttle.hpp"
#include "otac/common/bytes.hpp"

namespace otac::backend::console {

namespace json = boost::json;

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

// Headers on every console response: the page may only load itself, never be framed, and its
// types are never sniffed.
void add_security_headers(HttpResponse& r) {
  r.headers.emplace_back("Content-Security-Policy", std::string(csp));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("Cross-Origin-Opener-Policy", "same-origin");
  r.headers.emplace_back("Cross-Origin-Resource-Policy", "same-origin");
  r.headers.emplace_back("Strict-Transport-Security", "max-age=31536000");
}

HttpResponse json_response(unsigned status, const json::value& v) {
  HttpResponse r;
  r.status = status;
  r.body = json::serialize(v);
  r.headers.emplace_back("Content-Type", "application/json");
  r.headers.emplace_back("Cache-Control", "no-store");
  add_security_headers(r);
  return r;
}

HttpResponse error_response(unsigned status, std::string_view code, std::string_view message) {
  return json_response(status, json::object{{"error", code}, {"message", message}});
}

// Service errors to HTTP, as service.hpp documents them; internal details stay in the server.
HttpResponse service_error(const Error& e) {
  switch (e.code) {
    case Errc::bad_value:
    case Errc::truncated:
    case Errc::bad_length:
    case Errc::trailing_data: return error_response(400, errc_name(e.code), e.message);
    case Errc::not_found: return error_response(404, "not_found", e.message);
    case Errc::state: return error_response(403, "state", e.message);
    case Errc::conflict: return error_response(409, "conflict", e.message);
    default: return error_response(500, "internal", "the backend could not complete the request; see its log");
  }
}

std::string mask_card(ByteView n) {
  const std::string h = to_hex(n);
  if (h.size() <= 4) return h;
  return std::string(h.size() - 4, '*') + h.substr(h.size() - 4);
}

const char* algorithm_name(Algorithm a) { return a == Algorithm::aes128 ? "aes" : "des3"; }

json::object txn_json(const TransactionRecord& t, UnixTime now, bool full_card) {
  json::object o;
  o["txn_id"] = t.txn_id;
  o["card"] = full_card ? to_hex(t.card) : mask_card(t.card);
  o["card_masked"] = mask_card(t.card);
  o["list_id"] = t.list_id;
  o["index"] = t.index;
  o["terminal"] = t.terminal_id;
  o["amount_minor"] = t.amount_minor;
  o["currency"] = t.currency;
  o["door"] = t.door;
  o["decision"] = decision_name(t.decision);
  o["reason"] = t.reason;
  o["auth_code"] = t.auth_code;
  o["created_at"] = t.created_at;
  o["decided_at"] = t.decided_at;
  o["decided_by"] = t.decided_by;
  o["age_s"] = now - t.created_at;
  return o;
}

json::object audit_json(const AuditEntry& e) {
  return json::object{{"seq", e.seq}, {"at", e.at}, {"actor", e.actor}, {"action", e.action}, {"detail", e.detail}};
}

// Parses a JSON object body as the API does (strict: unknown and duplicate fields refused);
// the console's actions without parameters may send no body at all.
Result<json::object> parse_object(std::string_view body, std::initializer_list<std::string_view> allowed) {
  if (body.size() > max_body) return make_error(Errc::bad_length, "request body over 64 KiB");
  return otac::backend::http::parse_object(body.empty() ? std::string_view("{}") : body, allowed);
}

Result<std::string> get_string(const json::object& o, std::string_view key, bool required) {
  auto it = o.find(key);
  if (it == o.end()) {
    if (required) return make_error(Errc::bad_value, "field \"" + std::string(key) + "\" is required");
    return std::string{};
  }
  if (!it->value().is_string()) return make_error(Errc::bad_value, "field \"" + std::string(key) + "\" must be a string");
  return std::string(it->value().as_string());
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

// The 9F1C terminal id: 8 characters, as the operator API accepts them.
bool valid_terminal_id(std::string_view id) {
  if (id.size() != 8) return false;
  return std::all_of(id.begin(), id.end(), [](char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
  });
}

std::vector<std::string_view> split_path(std::string_view p) {
  std::vector<std::string_view> out;
  while (!p.empty()) {
    const auto slash = p.find('/');
    out.push_back(p.substr(0, slash));
    if (slash == std::string_view::npos) break;
    p = p.substr(slash + 1);
  }
  return out;
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

}  // namespace

// One API call in flight: the request, the path after /console/api/, and the session.
struct Console::Call {
  const HttpRequest& req;
  std::vector<std::string_view> parts;
  std::string_view query;
  Session session;
};

Console::Console(Service& service, ConsoleOptions options)
    : service_(service), options_(std::move(options)), sessions_(options_.sessions, options_.clock) {}

Console::~Console() = default;

UnixTime Console::now() const { return options_.clock ? options_.clock() : system_now(); }

bool Console::owns(std::string_view target) noexcept {
  const auto path = split_target(target).first;
  return path == "/console" || path.starts_with("/console/");
}

HttpResponse Console::handle(const HttpRequest& req) {
  const auto [path, query] = split_target(req.target);
  if (path == "/console") {
    HttpResponse r;
    r.status = 308;
    r.headers.emplace_back("Location", "/console/");
    r.headers.emplace_back("Cache-Control", "no-store");
    add_security_headers(r);
    return r;
  }
  if (!path.starts_with("/console/")) return error_response(404, "not_found", "no such console page");
  const std::string_view rest = path.substr(9);
  if (rest.starts_with("api/")) return api(req, rest.substr(4), query);
  if (rest == "api") return error_response(404, "not_found", "no such console API call");
  return serve_asset(req, rest.empty() ? std::string_view("index.html") : rest);
}

HttpResponse Console::serve_asset(const HttpRequest& req, std::string_view name) {
  if (req.method != "GET" && req.method != "HEAD") {
    HttpResponse r = error_response(405, "method_not_allowed", "console pages are read with GET");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return r;
  }
  const Asset* a = find_asset(name);
  if (!a) {
    HttpResponse r;
    r.status = 404;
    r.body = "Not found. The console starts at /console/.\n";
    r.headers.emplace_back("Content-Type", "text/plain; charset=utf-8");
    r.headers.emplace_back("Cache-Control", "no-store");
    add_security_headers(r);
    return r;
  }
  HttpResponse r;
  // Revalidate every time: the ETag makes that a 304 until the backend is upgraded.
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.headers.emplace_back("ETag", std::string(a->etag));
  add_security_headers(r);
  if (auto inm = req.header("If-None-Match"); inm && *inm == a->etag) {
    r.status = 304;
    return r;
  }
  r.status = 200;
  r.headers.emplace_back("Content-Type", std::string(a->content_type));
  if (req.method == "GET") r.body.assign(reinterpret_cast<const char*>(a->bytes.data()), a->bytes.size());
  return r;
}

HttpResponse Console::sign_in(const HttpRequest& req) {
  // No session yet, so no CSRF token: a JSON content type (which a cross-site form cannot send
  // without a CORS preflight we never grant) and the Origin check stand in for it.
  auto ct = req.header("Content-Type");
  if (!ct || !ct->starts_with("application/json"))
    return error_response(415, "unsupported_media_type", "sign-in takes a JSON body (Content-Type: application/json)");
  auto body = parse_object(req.body, {"token"});
  if (!body) return error_response(400, "bad_request", body.error().message);
  auto token = get_string(*body, "token", true);
  if (!token) return error_response(400, "bad_request", token.error().message);
  if (token->empty() || token->size() > 512) return error_response(401, "unauthorized", "the operator token is not valid");
  Result<OperatorRecord> op = make_error(Errc::internal, "no operator check");
  if (options_.gate) {
    http::GateAnswer g = options_.gate->check(req.remote, *token, "console");
    if (g.retry_after > 0) {
      HttpResponse r = error_response(429, "throttled",
                                      "too many wrong operator tokens from this address; retry after " +
                                          std::to_string(g.retry_after) + " s");
      r.headers.emplace_back("Retry-After", std::to_string(g.retry_after));
      return r;
    }
    if (g.error) op = *g.error;
    else if (g.op) op = std::move(*g.op);
    else op = make_error(Errc::not_found, "unknown operator token");
  } else {
    op = service_.authenticate_operator(*token);
  }
  if (!op) {
    if (op.error().code == Errc::not_found) return error_response(401, "unauthorized", "the operator token is not valid");
    return service_error(op.error());
  }
  auto s = sessions_.create(op->name, op->role, *token);
  if (!s) return error_response(503, "busy", s.error().message);
  HttpResponse r = json_response(200, json::object{{"name", s->session.operator_name},
                                                   {"role", role_name(s->session.role)},
                                                   {"csrf", s->session.csrf},
                                                   {"expires_at", s->session.expires_at}});
  r.headers.emplace_back("Set-Cookie", std::string(session_cookie) + "=" + s->id +
                                           "; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=" +
                                           std::to_string(sessions_.limits().absolute.count()));
  return r;
}

HttpResponse Console::api(const HttpRequest& req, std::string_view path, std::string_view query) {
  const bool changing = is_state_changing(req.method);
  if (changing) {
    // Defence in depth beside SameSite=Strict and the CSRF token: a browser's Origin, when
    // sent, must be this host.
    auto origin = req.header("Origin");
    auto host = req.header("Host");
    if (origin && (!host || *origin != "https://" + std::string(*host)))
      return error_response(403, "forbidden", "cross-origin request refused");
  }
  if (path == "session" && req.method == "POST") return sign_in(req);

  std::optional<std::string_view> sid;
  if (auto cookies = req.header("Cookie")) sid = cookie_value(*cookies, session_cookie);
  // The page marks its timed refreshes; they keep the session alive no longer than its idle limit.
  const bool background = req.header("X-Console-Background").has_value();
  std::optional<Session> session = sid ? sessions_.touch(*sid, !background) : std::nullopt;
  if (!session) return error_response(401, "unauthorized", "sign in first (the session is missing or has expired)");
  if (changing && !csrf_ok(*session, req.header("X-CSRF-Token")))
    return error_response(403, "csrf", "the request lacks a valid X-CSRF-Token header; reload the console");

  if (path == "session") {
    if (req.method == "GET")
      return json_response(200, json::object{{"name", session->operator_name},
                                             {"role", role_name(session->role)},
                                             {"csrf", session->csrf},
                                             {"expires_at", session->expires_at}});
    if (req.method == "DELETE") {
      sessions_.destroy(*sid);
      HttpResponse r = json_response(200, json::object{{"signed_out", true}});
      r.headers.emplace_back("Set-Cookie", std::string(session_cookie) +
                                               "=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
      return r;
    }
    return error_response(405, "method_not_allowed", "use GET, POST or DELETE on /console/api/session");
  }
  Call c{req, split_path(path), query, std::move(*session)};
  return route(c);
}

HttpResponse Console::route(Call& c) {
  const auto& p = c.parts;
  const std::string_view m = c.req.method;
  const UnixTime t = now();
  // Views need only a session (viewer is the least role); actions are forwarded to the
  // operator API, which checks the role.
  const bool full_card = c.session.role != Role::viewer;

  // ---- held transactions ----
  if (p.size() == 1 && p[0] == "held" && m == "GET") {
    TransactionFilter f;
    f.decision = Decision::held;
    f.limit = 500;
    auto list = service_.list_transactions(f);
    if (!list) return service_error(list.error());
    json::array a;
    for (const auto& tr : *list) a.push_back(txn_json(tr, t, full_card));
    if (auto met = service_.metrics()) sample_outbox(t, met->outbox_depth);
    return json_response(200, json::object{{"held", std::move(a)}, {"now", t}});
  }
  if (p.size() == 3 && p[0] == "held" && (p[2] == "approve" || p[2] == "decline") && m == "POST") {
    return forward(c, "POST", "/v1/admin/transactions/" + std::string(p[1]) + "/" + std::string(p[2]), {});
  }

  // ---- transactions ----
  if (p.size() == 1 && p[0] == "transactions" && m == "GET") {
    TransactionFilter f;
    if (auto v = query_param(c.query, "card"); v && !v->empty()) {
      auto n = parse_card(*v);
      if (!n) return error_response(400, "bad_request", n.error().message);
      f.card = std::move(*n);
    }
    if (auto v = query_param(c.query, "terminal"); v && !v->empty()) f.terminal_id = *v;
    if (auto v = query_param(c.query, "decision"); v && !v->empty()) {
      if (*v == "approved") f.decision = Decision::approved;
      else if (*v == "declined") f.decision = Decision::declined;
      else if (*v == "held") f.decision = Decision::held;
      else return error_response(400, "bad_request", "decision must be approved, declined or held");
    }
    for (auto [name, field] : {std::pair{"since", &f.since}, std::pair{"until", &f.until}}) {
      if (auto v = query_param(c.query, name); v && !v->empty()) {
        auto n = parse_int(*v, name);
        if (!n) return error_response(400, "bad_request", n.error().message);
        *field = *n;
      }
    }
    if (auto v = query_param(c.query, "limit"); v && !v->empty()) {
      auto n = parse_int(*v, "limit");
      if (!n || *n < 1 || *n > 1000) return error_response(400, "bad_request", "limit must be 1..1000");
      f.limit = static_cast<std::uint32_t>(*n);
    }
    auto list = service_.list_transactions(f);
    if (!list) return service_error(list.error());
    json::array a;
    for (const auto& tr : *list) a.push_back(txn_json(tr, t, full_card));
    return json_response(200, json::object{{"transactions", std::move(a)}});
  }
  if (p.size() == 2 && p[0] == "transactions" && m == "GET") {
    if (!options_.open_store) return error_response(501, "unavailable", "transaction detail needs the store");
    auto store = options_.open_store();
    if (!store) return service_error(store.error());
    TransactionRecord rec;
    std::optional<OutcomeRecord> outcome;
    std::optional<RefundRecord> refund;
    const std::string id(p[1]);
    auto r = (*store)->run([&](Tx& tx) -> Result<void> {
      auto x = tx.transaction(id);
      if (!x) return std::move(x).error();
      rec = std::move(*x);
      auto o = tx.outcome(id);  // what happened after the decision (protocol.md 5.4)
      if (!o) return o.error();
      outcome = std::move(*o);
      auto f = tx.refund(id);
      if (!f) return f.error();
      refund = std::move(*f);
      return {};
    });
    if (!r) return service_error(r.error());
    json::object o = txn_json(rec, t, full_card);
    o["arc"] = std::string(rec.arc.begin(), rec.arc.end());
    if (outcome)
      o["outcome"] = std::string(outcome_name(outcome->outcome)) + ", handed over " + std::to_string(outcome->handed_minor) +
                     " (minor units), reported by " + outcome->reported_by;
    if (refund)
      o["refund"] = std::to_string(refund->amount_minor) + " (minor units), " + refund_state_name(refund->state) +
                    (refund->decided_by.empty() ? std::string() : " by " + refund->decided_by);
    return json_response(200, o);
  }

  // ---- cards ----
  if (p.size() == 1 && p[0] == "cards" && m == "POST") {
    // The answer carries the letter (with K): it goes to this response only, never stored.
    return forward(c, "POST", "/v1/admin/cards", c.req.body);
  }
  if (p.size() == 1 && p[0] == "cards" && m == "GET") {
    // The Service has no card listing; recent enrollments come from the audit log.
    auto entries = service_.audit_log(0, 5000);
    if (!entries) return service_error(entries.error());
    std::vector<std::string> ids;
    for (auto it = entries->rbegin(); it != entries->rend() && ids.size() < 100; ++it)
      if (it->action == "enroll") ids.push_back(detail_field(it->detail, "card"));
    json::array a;
    for (const auto& id : ids) {
      auto n = from_hex(id);
      if (!n) continue;
      auto card = service_.card(*n);
      if (!card) continue;
      a.push_back(json::object{{"card", full_card ? id : mask_card(*n)},
                               {"status", card->status == CardStatus::blocked ? "blocked" : "active"},
                               {"msisdn", card->msisdn},
                               {"key_version", card->key_version},
                               {"created_at", card->created_at}});
    }
    return json_response(200, json::object{{"cards", std::move(a)}});
  }
  if (p.size() >= 2 && p[0] == "cards") {
    auto n = parse_card(p[1]);
    if (!n) return error_response(400, "bad_request", n.error().message);
    if (p.size() == 2 && m == "GET") {
      auto card = service_.card(*n);
      if (!card) return service_error(card.error());
      json::object o{{"card", full_card ? to_hex(card->n) : mask_card(card->n)},
                     {"algorithm", algorithm_name(card->algorithm)},
                     {"msisdn", card->msisdn},
                     {"status", card->status == CardStatus::blocked ? "blocked" : "active"},
                     {"fail_count", card->fail_count},
                     {"fail_limit", card->fail_limit},
                     {"threshold", card->threshold},
                     {"limit_minor", card->limit_minor},
                     {"review_minor", card->review_minor},
                     {"currency", card->currency},
                     {"key_version", card->key_version},
                     {"rotation_pending", card->pending_k.has_value()},
                     {"list_push_in_flight", card->list_push_in_flight},
                     {"asymmetric", !card->public_key.empty()},
                     {"created_at", card->created_at}};
      if (options_.open_store) {
        if (auto store = options_.open_store()) {
          std::uint32_t unused = 0;
          std::uint16_t last_list = 0;
          std::vector<OutboxMessage> queued;
          auto r = (*store)->run([&](Tx& tx) -> Result<void> {
            auto u = tx.unused_count(*n);
            if (!u) return std::move(u).error();
            auto l = tx.last_list_id(*n);
            if (!l) return std::move(l).error();
            unused = *u;
            last_list = *l;
            // SMS still waiting for the gateway (every queued message, whatever its retry time).
            auto due = tx.due_sms(std::numeric_limits<UnixTime>::max(), 1000);
            if (!due) return std::move(due).error();
            for (auto& msg : *due)
              if (msg.card == *n) queued.push_back(std::move(msg));
            return {};
          });
          if (r) {
            o["codes_left"] = unused;
            o["current_list"] = last_list;
            o["sms_queued"] = queued.size();
            if (!queued.empty()) {
              const OutboxMessage& last = queued.back();
              o["sms_last"] = json::object{{"id", last.id},
                                           {"attempts", last.attempts},
                                           {"next_attempt_at", last.next_attempt_at},
                                           {"gateway_reply", last.last_reply},
                                           {"created_at", last.created_at}};
            }
          }
        }
      }
      if (auto doors = service_.card_doors(*n)) {
        json::array da;
        for (const auto& d : *doors)
          da.push_back(json::object{{"door", d.door}, {"from_minute", d.from_minute}, {"to_minute", d.to_minute}, {"tz", d.tz}});
        o["doors"] = std::move(da);
      }
      // SMS and PoR history of this card, newest first, from the latest 5,000 audit entries.
      auto entries = service_.audit_recent(5000);
      json::array events;
      if (entries) {
        const std::string id = to_hex(*n);
        for (auto it = entries->rbegin(); it != entries->rend() && events.size() < 20; ++it)
          if (detail_field(it->detail, "card") == id) events.push_back(audit_json(*it));
      }
      o["events"] = std::move(events);
      return json_response(200, o);
    }
    if (p.size() == 3 && p[2] == "settings" && m == "POST") {
      // The operator API checks the role, the fields and the windows, and audits the change.
      return forward(c, "POST", "/v1/admin/cards/" + to_hex(*n) + "/settings", c.req.body);
    }
    if (p.size() == 3 && m == "POST") {
      const std::string_view verb = p[2];
      if (verb != "block" && verb != "unblock" && verb != "refresh" && verb != "rotate-key")
        return error_response(404, "not_found", "no such card action");
      return forward(c, "POST", "/v1/admin/cards/" + to_hex(*n) + "/" + std::string(verb), {});
    }
  }

  // ---- terminals ----
  auto read_terminal = [&](const std::string& id) -> std::optional<TerminalRecord> {
    auto rec = service_.terminal(id);
    if (!rec) return std::nullopt;
    return std::move(*rec);
  };
  auto last_seen = [&](const std::string& id) -> UnixTime {
    TransactionFilter f;
    f.terminal_id = id;
    f.limit = 1;
    auto l = service_.list_transactions(f);
    return (l && !l->empty()) ? l->front().created_at : 0;
  };
  if (p.size() == 1 && p[0] == "terminals" && m == "GET") {
    auto entries = service_.audit_log(0, 5000);
    if (!entries) return service_error(entries.error());
    std::set<std::string> seen;
    json::array a;
    for (auto it = entries->rbegin(); it != entries->rend() && a.size() < 200; ++it) {
      if (it->action != "register_terminal") continue;
      std::string id = detail_field(it->detail, "terminal");
      if (id.empty() || !seen.insert(id).second) continue;
      json::object o{{"id", id}, {"last_seen", last_seen(id)}, {"registered_at", it->at}};
      if (auto rec = read_terminal(id)) {
        o["enabled"] = rec->enabled;
        o["has_cert"] = !rec->cert_fingerprint.empty();
        o["cert_fingerprint"] = rec->cert_fingerprint;
        o["limit_minor"] = rec->limit_minor;
      }
      a.push_back(std::move(o));
    }
    return json_response(200, json::object{{"terminals", std::move(a)}});
  }
  if (p.size() == 1 && p[0] == "terminals" && m == "POST") {
    // Registration issues the client certificate at once; its key is in this answer only.
    return forward(c, "POST", "/v1/admin/terminals", c.req.body);
  }
  if (p.size() == 3 && p[0] == "terminals" && m == "POST") {
    const std::string id(p[1]);
    if (!valid_terminal_id(id)) return error_response(400, "bad_request", "terminal id must be 8 characters of A-Z a-z 0-9 - _");
    if (p[2] == "revoke") return forward(c, "POST", "/v1/admin/terminals/" + id + "/revoke", {});
    if (p[2] == "cert") {
      // A new certificate is a re-registration with the same settings (the old one stops working).
      auto old = read_terminal(id);
      if (!old) return error_response(404, "not_found", "no terminal " + id + "; register it first");
      return forward(c, "POST", "/v1/admin/terminals",
                     json::serialize(json::object{{"id", id}, {"limit_minor", old->limit_minor}}));
    }
    return error_response(404, "not_found", "no such terminal action");
  }

  // ---- audit and chart data ----
  if (p.size() == 1 && p[0] == "audit" && m == "GET") {
    std::int64_t limit = 200;
    if (auto v = query_param(c.query, "limit"); v && !v->empty()) {
      auto n = parse_int(*v, "limit");
      if (!n || *n < 1 || *n > 1000) return error_response(400, "bad_request", "limit must be 1..1000");
      limit = *n;
    }
    // Walk the log forward in bounded pages and keep the newest entries.
    std::deque<AuditEntry> tail;
    std::int64_t after = 0;
    for (int page = 0; page < 100; ++page) {
      auto entries = service_.audit_log(after, 1000);
      if (!entries) return service_error(entries.error());
      for (auto& e : *entries) {
        after = e.seq;
        tail.push_back(std::move(e));
        if (tail.size() > static_cast<std::size_t>(limit)) tail.pop_front();
      }
      if (entries->size() < 1000) break;
    }
    json::array a;
    for (auto it = tail.rbegin(); it != tail.rend(); ++it) {
      if (!full_card) it->detail = mask_card_fields(it->detail);
      a.push_back(audit_json(*it));
    }
    return json_response(200, json::object{{"entries", std::move(a)}});
  }
  if (p.size() == 1 && p[0] == "stats" && m == "GET") {
    auto metrics = service_.metrics();
    if (!metrics) return service_error(metrics.error());
    TransactionFilter f;
    f.since = t - 3600;
    f.limit = 1000;
    auto list = service_.list_transactions(f);
    if (!list) return service_error(list.error());
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
    return json_response(200, json::object{{"now", t},
                                           {"outbox_depth", metrics->outbox_depth},
                                           {"outbox_history", std::move(history)},
                                           {"decisions", std::move(decisions)},
                                           {"per_minute", std::move(buckets)}});
  }
  return error_response(404, "not_found", "no such console API call");
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

HttpResponse Console::forward(const Call& c, std::string_view method, std::string target, std::string body) {
  if (!options_.operator_api) return error_response(501, "unavailable", "this console is read-only here; use otac-admin");
  HttpRequest r;
  r.method = std::string(method);
  r.target = std::move(target);
  r.body = std::move(body);
  const auto& tok = *c.session.token;
  r.headers.emplace_back("Authorization", "Bearer " + std::string(reinterpret_cast<const char*>(tok.data()), tok.size()));
  if (!r.body.empty()) r.headers.emplace_back("Content-Type", "application/json");
  if (auto host = c.req.header("Host")) r.headers.emplace_back("Host", std::string(*host));
  HttpResponse api = options_.operator_api(r);
  secure_zero(r.headers[0].second.data(), r.headers[0].second.size());  // the bearer copy
  // The API's answer, under the console's headers.
  HttpResponse out;
  out.status = api.status;
  out.body = std::move(api.body);
  out.headers.emplace_back("Content-Type", "application/json");
  out.headers.emplace_back("Cache-Control", "no-store");
  add_security_headers(out);
  return out;
}

}  // namespace otac::backend::console
