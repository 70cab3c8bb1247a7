#include "api.hpp"

#include <charconv>
#include <chrono>
#include <cstddef>
#include <mutex>

#include "json_input.hpp"
#include "log.hpp"
#include "settlement_input.hpp"
#include "views.hpp"

namespace otac::backend::http {
namespace json = boost::json;
namespace {

// ---- helpers ------------------------------------------------------------------------------

std::optional<std::int64_t> parse_int(std::string_view s, std::int64_t lo, std::int64_t hi) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) return std::nullopt;
  return v;
}

Response bad_request(const Request& req, const std::string& msg) {
  return error_response(req, Status::bad_request, "bad_request", msg);
}

// Endpoints that take no body accept an empty one or "{}".
std::optional<Response> expect_empty_body(const Request& req) {
  if (req.body().empty()) return std::nullopt;
  auto o = parse_object(req.body(), {});
  if (!o) return bad_request(req, o.error().message);
  return std::nullopt;
}

bool valid_txn_id(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' ||
          c == '.' || c == ':'))
      return false;
  }
  return true;
}

bool valid_terminal_id(std::string_view s) {
  if (s.size() != 8) return false;
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_')) return false;
  }
  return true;
}

json::object answer_json(const AuthAnswer& a) {
  json::object o;
  o["txn_id"] = a.txn_id;
  o["decision"] = decision_name(a.decision);
  o["reason"] = a.reason;
  if (!a.auth_code.empty()) o["auth_code"] = a.auth_code;
  if (!a.arc.empty()) o["arc"] = to_hex(a.arc);
  if (!a.arpc.empty()) o["arpc"] = to_hex(a.arpc);
  if (a.decision == Decision::held) {
    o["expires_at"] = a.expires_at;
    o["expires_in"] = a.expires_in;
  }
  return o;
}

json::object outcome_json(const OutcomeAnswer& a) {
  json::object o;
  o["txn_id"] = a.record.txn_id;
  o["outcome"] = outcome_name(a.record.outcome);
  o["handed_minor"] = a.record.handed_minor;
  o["reported_by"] = a.record.reported_by;
  o["at"] = a.record.at;
  o["applied"] = a.applied;
  return o;
}

json::object refund_json(const RefundRecord& r) {
  json::object o;
  o["txn_id"] = r.txn_id;
  o["terminal"] = r.terminal_id;
  o["amount_minor"] = r.amount_minor;
  o["state"] = refund_state_name(r.state);
  o["requested_at"] = r.requested_at;
  if (!r.decided_by.empty()) o["decided_by"] = r.decided_by;
  if (r.decided_at != 0) o["decided_at"] = r.decided_at;
  return o;
}

std::optional<Role> parse_role(std::string_view s) {
  if (s == "viewer") return Role::viewer;
  if (s == "operator") return Role::operator_;
  if (s == "admin") return Role::admin;
  return std::nullopt;
}

std::optional<Decision> parse_decision(std::string_view s) {
  if (s == "approved") return Decision::approved;
  if (s == "declined") return Decision::declined;
  if (s == "held") return Decision::held;
  return std::nullopt;
}

// ---- the API object -----------------------------------------------------------------------

class Api {
 public:
  explicit Api(ApiContext& c) : c_(c) {}

  // Terminal check: a client certificate our CA verified, whose CN is a registered, enabled
  // terminal and whose fingerprint is the one we issued (re-issuing or revoking replaces it).
  std::optional<Response> require_terminal(const Request& req, RequestContext& ctx) {
    if (!ctx.client_cn) {
      return error_response(req, Status::unauthorized, "client_certificate_required",
                            "this endpoint needs a terminal client certificate issued by the backend's CA");
    }
    ctx.log["terminal"] = *ctx.client_cn;
    if (terminal_cached(*ctx.client_cn, ctx.client_fingerprint)) return std::nullopt;
    const auto now = std::chrono::steady_clock::now();
    auto t = c_.service->terminal(*ctx.client_cn);
    if (!t) {
      if (t.error().code == Errc::not_found)
        return error_response(req, Status::forbidden, "unknown_terminal", "terminal " + *ctx.client_cn + " is not registered");
      return service_error(req, ctx, t.error());
    }
    if (!t->enabled) return error_response(req, Status::forbidden, "terminal_revoked", "terminal " + t->id + " is revoked");
    if (t->cert_fingerprint != ctx.client_fingerprint) {
      return error_response(req, Status::forbidden, "certificate_replaced",
                            "this client certificate is not the one registered for terminal " + t->id);
    }
    std::lock_guard lock(mu_);
    terminals_[t->id] = CachedTerminal{t->cert_fingerprint, now};
    return std::nullopt;
  }

  // This terminal was found registered and enabled with this certificate less than
  // kTerminalCacheTtl ago (revoking and re-issuing on this node forget it at once).
  bool terminal_cached(const std::string& cn, const std::string& fingerprint) {
    std::lock_guard lock(mu_);
    auto it = terminals_.find(cn);
    return it != terminals_.end() && it->second.fingerprint == fingerprint &&
           std::chrono::steady_clock::now() - it->second.checked < kTerminalCacheTtl;
  }

  void forget_terminal(const std::string& id) {
    std::lock_guard lock(mu_);
    terminals_.erase(id);
  }

  // Operator check: "Authorization: Bearer <token>" with at least the role min.
  std::optional<Response> require_operator(const Request& req, RequestContext& ctx, Role min, OperatorRecord& out) {
    const auto it = req.find(boost::beast::http::field::authorization);
    std::string_view h = it == req.end() ? std::string_view{} : std::string_view(it->value().data(), it->value().size());
    if (h.substr(0, 7) != "Bearer " || h.size() <= 7 || h.size() > 200) {
      Response r = error_response(req, Status::unauthorized, "token_required",
                                  "send 'Authorization: Bearer <operator token>' (see admin.token in the data directory)");
      r.set(boost::beast::http::field::www_authenticate, "Bearer realm=\"otac\"");
      return r;
    }
    Result<OperatorRecord> op = make_error(Errc::internal, "no operator check");
    // The console forwards its signed-in operators' own tokens (its sign-in is throttled there).
    if (c_.gate && ctx.remote != "console") {
      GateAnswer g = c_.gate->check(ctx.remote, h.substr(7), "bearer");
      if (g.retry_after > 0) {
        Response r = error_response(req, Status::too_many_requests, "throttled",
                                    "too many wrong operator tokens from this address; retry after " +
                                        std::to_string(g.retry_after) + " s");
        r.set(boost::beast::http::field::retry_after, std::to_string(g.retry_after));
        return r;
      }
      if (g.error) op = *g.error;
      else if (g.op) op = std::move(*g.op);
      else op = make_error(Errc::not_found, "unknown operator token");
    } else {
      op = c_.service->authenticate_operator(h.substr(7));
    }
    if (!op) {
      if (op.error().code != Errc::not_found) return service_error(req, ctx, op.error());
      Response r = error_response(req, Status::unauthorized, "bad_token", "unknown operator token");
      r.set(boost::beast::http::field::www_authenticate, "Bearer realm=\"otac\", error=\"invalid_token\"");
      return r;
    }
    ctx.log["operator"] = op->name;
    if (static_cast<int>(op->role) < static_cast<int>(min)) {
      return error_response(req, Status::forbidden, "forbidden",
                            std::string("operator ") + op->name + " has role " + role_name(op->role) + "; this needs " + role_name(min));
    }
    out = std::move(*op);
    return std::nullopt;
  }

  // A decline the limiter left unstored: 429 with the wait until the terminal's and the card's
  // buckets refill, one counter per request, and at most one audit entry per interval.
  Response decline_suppressed(const Request& req, RequestContext& ctx, const Bytes& card) {
    if (c_.metrics) c_.metrics->decline_suppressed();
    ctx.log["decision"] = "suppressed";
    const std::uint32_t wait = c_.declines ? c_.declines->retry_after(*ctx.client_cn, card) : 1;
    if (c_.declines) report_suppressed(*c_.service, *c_.declines, false);
    Response r = error_response(req, Status::too_many_requests, "too_many_declines",
                                "too many declined requests from this terminal or for this card; retry after " +
                                    std::to_string(wait) + " s");
    r.set(boost::beast::http::field::retry_after, std::to_string(wait));
    return r;
  }

  // ---- terminal endpoints ----
  Response authorize(const Request& req, RequestContext& ctx) {
    if (auto e = require_terminal(req, ctx)) return *e;
    AuthRequest a;
    if (auto bad = read_authorization(req, a)) return *bad;
    ctx.log["txn"] = a.txn_id;
    return authorization_answer(req, ctx, a.card, c_.service->authorize(a, *ctx.client_cn));
  }

  // POST /v1/authorizations without blocking the network thread: the store's committer
  // answers once the decision is durable. False, having done nothing, until this terminal's
  // certificate is in the cache (the blocking handler looks it up in the store).
  bool authorize_async(const Request& req, RequestContext& ctx, Reply reply) {
    if (!ctx.client_cn || !terminal_cached(*ctx.client_cn, ctx.client_fingerprint)) return false;
    ctx.log["terminal"] = *ctx.client_cn;
    AuthRequest a;
    if (auto bad = read_authorization(req, a)) {
      reply([r = std::move(*bad)]() mutable { return std::move(r); });
      return true;
    }
    ctx.log["txn"] = a.txn_id;
    Bytes card = a.card;
    c_.service->authorize_async(a, *ctx.client_cn, [this, &req, &ctx, card = std::move(card), reply = std::move(reply)](Result<AuthAnswer> r) mutable {
      reply([this, &req, &ctx, card = std::move(card), r = std::move(r)] { return authorization_answer(req, ctx, card, r); });
    });
    return true;
  }

  // The fields of an authorization request; a 400 answer when they are malformed.
  std::optional<Response> read_authorization(const Request& req, AuthRequest& a) {
    // The parsed object lives only in this function, so its memory comes from the stack: a
    // request of the usual size needs no allocation (a larger one falls back to the heap).
    alignas(std::max_align_t) unsigned char arena[2048];
    boost::json::monotonic_resource mr(arena, sizeof arena);
    auto o = parse_object(req.body(), {"txn_id", "card", "list", "index", "atc", "pin_state", "challenge", "cryptogram"}, &mr);
    if (!o) return bad_request(req, o.error().message);
    Fields f(*o);
    a.txn_id = f.str("txn_id", true, 64);
    a.card = f.hexbytes("card", true, 8, 8);
    a.list_id = static_cast<std::uint16_t>(f.integer("list", true, 0, 65535));
    a.index = static_cast<std::uint16_t>(f.integer("index", true, 0, 65535));
    a.atc = static_cast<std::uint16_t>(f.integer("atc", true, 0, 65535));
    a.pin_state = static_cast<std::uint8_t>(f.integer("pin_state", true, 0, 255));
    a.challenge = f.hexbytes("challenge", true, 1, 1024);
    a.cryptogram = f.hexbytes("cryptogram", true, 8, 8);
    if (!f.error && !valid_txn_id(a.txn_id)) f.fail("field \"txn_id\" must be 1 to 64 characters of A-Z a-z 0-9 - _ . :");
    if (f.error) return bad_request(req, *f.error);
    return std::nullopt;
  }

  Response authorization_answer(const Request& req, RequestContext& ctx, const Bytes& card, const Result<AuthAnswer>& r) {
    if (!r) return service_error(req, ctx, r.error());
    if (!r->recorded) return decline_suppressed(req, ctx, card);
    ctx.log["decision"] = decision_name(r->decision);
    ctx.log["reason"] = r->reason;
    return json_response(req, Status::ok, answer_json(*r));
  }

  Response get_authorization(const Request& req, RequestContext& ctx) {
    if (auto e = require_terminal(req, ctx)) return *e;
    const std::string& txn = ctx.params.at(0);
    if (!valid_txn_id(txn)) return bad_request(req, "malformed transaction id");
    std::int64_t wait = 0;
    for (const auto& [k, v] : ctx.query) {
      if (k != "wait") return bad_request(req, "unknown query parameter \"" + k + "\" (allowed: wait)");
      auto w = parse_int(v, 0, c_.max_wait_seconds);
      if (!w) return bad_request(req, "wait must be an integer number of seconds from 0 to " + std::to_string(c_.max_wait_seconds));
      wait = *w;
    }
    ctx.log["txn"] = txn;
    // A terminal sees only its own transactions (another's id answers as unknown).
    auto rec = c_.service->transaction(txn);
    if (!rec) return service_error(req, ctx, rec.error());
    if (rec->terminal_id != *ctx.client_cn)
      return error_response(req, Status::not_found, "not_found", "no transaction " + txn + " for this terminal");
    // Wait in slices of at most one second so that a shutdown ends long-polls promptly.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait);
    auto r = c_.service->get_authorization(txn, std::chrono::milliseconds(0));
    for (int slice = 0; slice < 400 && r && r->decision == Decision::held; ++slice) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || (c_.stopping && c_.stopping())) break;
      r = c_.service->get_authorization(txn, std::min<std::chrono::milliseconds>(left, std::chrono::milliseconds(1000)));
    }
    if (!r) return service_error(req, ctx, r.error());
    return json_response(req, Status::ok, answer_json(*r));
  }

  // The terminal stopped waiting for an operator: the backend declines the held transaction
  // (held_timeout) unless it was decided first, and answers with the final decision.
  Response cancel_authorization(const Request& req, RequestContext& ctx) {
    if (auto e = require_terminal(req, ctx)) return *e;
    if (auto e = expect_empty_body(req)) return *e;
    const std::string& txn = ctx.params.at(0);
    if (!valid_txn_id(txn)) return bad_request(req, "malformed transaction id");
    ctx.log["txn"] = txn;
    auto r = c_.service->cancel_held(txn, *ctx.client_cn);
    if (!r) return service_error(req, ctx, r.error());
    ctx.log["decision"] = decision_name(r->decision);
    ctx.log["reason"] = r->reason;
    return json_response(req, Status::ok, answer_json(*r));
  }

  Response verify_code(const Request& req, RequestContext& ctx) {
    if (auto e = require_terminal(req, ctx)) return *e;
    auto o = parse_object(req.body(), {"txn_id", "card", "code", "door"});
    if (!o) return bad_request(req, o.error().message);
    Fields f(*o);
    CodeRequest c;
    c.txn_id = f.str("txn_id", true, 64);
    c.card = f.hexbytes("card", true, 8, 8);
    c.code = f.str("code", true, 8);
    c.door = f.str("door", false, 16);
    if (!f.error && !valid_txn_id(c.txn_id)) f.fail("field \"txn_id\" must be 1 to 64 characters of A-Z a-z 0-9 - _ . :");
    if (!f.error && (c.code.size() != 8 || c.code.find_first_not_of("0123456789") != std::string::npos))
      f.fail("field \"code\" must be 8 digits");
    if (f.error) return bad_request(req, *f.error);
    ctx.log["txn"] = c.txn_id;
    auto r = c_.service->verify_display_code(c, *ctx.client_cn);
    if (!r) return service_error(req, ctx, r.error());
    if (!r->recorded) return decline_suppressed(req, ctx, c.card);
    ctx.log["decision"] = decision_name(r->decision);
    ctx.log["reason"] = r->reason;
    return json_response(req, Status::ok, answer_json(*r));
  }

  // What happened after the decision (protocol.md §5.4): completed, reversed with the amount
  // handed over, not_opened, voided. Idempotent by txn_id.
  Response report_outcome(const Request& req, RequestContext& ctx) {
    if (auto e = require_terminal(req, ctx)) return *e;
    auto r = parse_outcome_report(req.body());
    if (!r) return bad_request(req, r.error().message);
    if (!valid_txn_id(r->txn_id)) return bad_request(req, "field \"txn_id\" must be 1 to 64 characters of A-Z a-z 0-9 - _ . :");
    ctx.log["txn"] = r->txn_id;
    ctx.log["outcome"] = outcome_name(r->outcome);
    auto a = c_.service->report_outcome(*r, *ctx.client_cn);
    if (!a) return service_error(req, ctx, a.error());
    return json_response(req, Status::ok, outcome_json(*a));
  }

  // A merchant asks for a refund of its own approved purchase; an operator decides it.
  Response request_refund(const Request& req, RequestContext& ctx) {
    if (auto e = require_terminal(req, ctx)) return *e;
    auto ask = parse_refund_request(req.body());
    if (!ask) return bad_request(req, ask.error().message);
    if (!valid_txn_id(ask->txn_id)) return bad_request(req, "field \"txn_id\" must be 1 to 64 characters of A-Z a-z 0-9 - _ . :");
    ctx.log["txn"] = ask->txn_id;
    auto r = c_.service->request_refund(ask->txn_id, ask->amount_minor, *ctx.client_cn);
    if (!r) return service_error(req, ctx, r.error());
    return json_response(req, Status::ok, refund_json(*r));
  }

  Response get_refund(const Request& req, RequestContext& ctx) {
    if (auto e = require_terminal(req, ctx)) return *e;
    const std::string& txn = ctx.params.at(0);
    if (!valid_txn_id(txn)) return bad_request(req, "malformed transaction id");
    auto r = c_.service->refund(txn);
    if (!r) return service_error(req, ctx, r.error());
    if (r->terminal_id != *ctx.client_cn)
      return error_response(req, Status::not_found, "not_found", "no refund of " + txn + " for this terminal");
    return json_response(req, Status::ok, refund_json(*r));
  }

  // ---- operator endpoints ----
  Response enroll(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::operator_, op)) return *e;
    auto o = parse_object(req.body(), {"algorithm", "msisdn", "limit_minor", "review_minor", "threshold", "currency", "doors",
                                       "public_key", "cash_daily_minor"});
    if (!o) return bad_request(req, o.error().message);
    Fields f(*o);
    EnrollRequest e;
    const std::string alg = f.str("algorithm", false, 8);
    if (alg.empty() || alg == "des3") e.algorithm = Algorithm::des3;
    else if (alg == "aes" || alg == "aes128") e.algorithm = Algorithm::aes128;
    else f.fail("field \"algorithm\" must be \"des3\" or \"aes\"");
    e.msisdn = f.str("msisdn", false, 20);
    if (!e.msisdn.empty()) {
      const std::size_t start = e.msisdn[0] == '+' ? 1 : 0;
      if (e.msisdn.size() == start || e.msisdn.find_first_not_of("0123456789", start) != std::string::npos)
        f.fail("field \"msisdn\" must be digits with an optional leading +");
    }
    e.limit_minor = f.integer("limit_minor", false, 0, 999'999'999'999);
    e.review_minor = f.integer("review_minor", false, 0, 999'999'999'999);
    if (f.has("threshold")) e.threshold = static_cast<std::uint32_t>(f.integer("threshold", true, 0, 1000));
    if (f.has("cash_daily_minor")) e.cash_daily_minor = f.integer("cash_daily_minor", true, 0, kMaxCashDaily);  // null: the default
    if (auto cur = currency_field(f)) e.currency = *cur;
    if (auto doors = doors_field(f)) e.doors = std::move(*doors);
    e.public_key = f.hexbytes("public_key", false, 1, 1024);
    if (f.error) return bad_request(req, *f.error);
    auto r = c_.service->enroll_card(e, op.name);
    if (!r) return service_error(req, ctx, r.error());
    ctx.log["card"] = to_hex(r->n);
    json::object out;
    out["n"] = to_hex(r->n);
    out["algorithm"] = r->algorithm == Algorithm::des3 ? "des3" : "aes";
    // K goes to the operator exactly once, for the initialization letter (by design).
    if (!r->k.empty()) out["k"] = to_hex(r->k.view());
    out["ca_point"] = to_hex(r->ca_point);  // the card CA for ACTIVATE DF51 (public)
    out["letter"] = r->letter;
    return json_response(req, Status::created, out);
  }

  std::optional<Bytes> card_param(const RequestContext& ctx) {
    auto b = from_hex(ctx.params.at(0));
    if (!b || b->size() != 8) return std::nullopt;
    return std::move(*b);
  }

  // "currency": "EUR" or "978" (ISO 4217); nullopt when absent or wrong (then f has the error).
  std::optional<std::uint16_t> currency_field(Fields& f) {
    if (!f.has("currency")) return std::nullopt;
    const std::string v = f.str("currency", true, 8);
    if (f.error) return std::nullopt;
    auto code = c_.service->currencies().resolve(v);
    if (!code) { f.fail("field \"currency\": " + code.error().message); return std::nullopt; }
    return *code;
  }

  // "doors": [{"door", "from_minute", "to_minute", "tz"}]; the service checks the windows.
  std::optional<std::vector<DoorPermission>> doors_field(Fields& f) {
    const auto* doors = f.array("doors", false);
    if (!doors) return std::nullopt;
    if (doors->size() > 64) { f.fail("field \"doors\" has more than 64 entries"); return std::nullopt; }
    std::vector<DoorPermission> out;
    for (const auto& d : *doors) {
      if (f.error) break;
      if (!d.is_object()) { f.fail("each entry of \"doors\" must be an object"); break; }
      const json::object& dobj = d.as_object();
      for (const auto& kv : dobj) {
        if (kv.key() != "door" && kv.key() != "from_minute" && kv.key() != "to_minute" && kv.key() != "tz")
          f.fail("unknown field \"" + std::string(kv.key()) + "\" in doors (allowed: door, from_minute, to_minute, tz)");
      }
      Fields df(dobj);
      DoorPermission p;
      p.door = df.str("door", true, 16);
      p.from_minute = static_cast<std::uint32_t>(df.integer("from_minute", false, 0, 1440, 0));
      p.to_minute = static_cast<std::uint32_t>(df.integer("to_minute", false, 0, 1440, 1440));
      p.tz = df.str("tz", false, 64);
      if (df.error) f.fail("doors: " + *df.error);
      else if (p.door.empty()) f.fail("doors: door id must not be empty");
      out.push_back(std::move(p));
    }
    return out;
  }

  // A card for operators (views.hpp): settings and state, never the keys.
  std::optional<Response> card_json(const Request& req, RequestContext& ctx, const Bytes& n, json::object& o) {
    auto c = c_.service->card_summary(n);
    if (!c) return service_error(req, ctx, c.error());
    o = http::card_json(*c);
    return std::nullopt;
  }

  Response card_get(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::viewer, op)) return *e;
    auto n = card_param(ctx);
    if (!n) return bad_request(req, "card id must be 16 hex digits");
    json::object o;
    if (auto e = card_json(req, ctx, *n, o)) return *e;
    return json_response(req, Status::ok, o);
  }

  // Changes an enrolled card's limits, review amount, threshold, currency or doors.
  Response card_settings(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::operator_, op)) return *e;
    auto n = card_param(ctx);
    if (!n) return bad_request(req, "card id must be 16 hex digits");
    auto o = parse_object(req.body(), {"limit_minor", "review_minor", "threshold", "currency", "doors", "cash_daily_minor"});
    if (!o) return bad_request(req, o.error().message);
    Fields f(*o);
    CardSettings s;
    if (f.has("limit_minor")) s.limit_minor = f.integer("limit_minor", true, 0, 999'999'999'999);
    if (f.has("review_minor")) s.review_minor = f.integer("review_minor", true, 0, 999'999'999'999);
    if (f.has("threshold")) s.threshold = static_cast<std::uint32_t>(f.integer("threshold", true, 0, 1000));
    // The card's own daily cash limit; null gives the card the backend's cash_card_daily_minor again.
    if (o->contains("cash_daily_minor"))
      s.cash_daily_minor = f.has("cash_daily_minor") ? f.integer("cash_daily_minor", true, 0, kMaxCashDaily) : CardSettings::kCashDefault;
    s.currency = currency_field(f);
    s.doors = doors_field(f);
    if (f.error) return bad_request(req, *f.error);
    ctx.log["card"] = to_hex(*n);
    auto r = c_.service->update_card_settings(*n, std::move(s), op.name);
    if (!r) return service_error(req, ctx, r.error());
    json::object out;
    if (auto e = card_json(req, ctx, *n, out)) return *e;
    return json_response(req, Status::ok, out);
  }

  Response card_action(const Request& req, RequestContext& ctx, std::string_view action) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::operator_, op)) return *e;
    auto n = card_param(ctx);
    if (!n) return bad_request(req, "card id must be 16 hex digits");
    if (auto e = expect_empty_body(req)) return *e;
    ctx.log["card"] = to_hex(*n);
    json::object o;
    o["n"] = to_hex(*n);
    o["action"] = action;
    if (action == "block") {
      auto r = c_.service->block_card(*n, op.name);
      if (!r) return service_error(req, ctx, r.error());
    } else if (action == "unblock") {
      auto r = c_.service->unblock_card(*n, op.name);
      if (!r) return service_error(req, ctx, r.error());
    } else if (action == "refresh") {
      auto r = c_.service->refresh_card(*n, op.name);
      if (!r) return service_error(req, ctx, r.error());
      o["list"] = *r;
      o["state"] = "sent";
    } else if (action == "install-server-key") {
      auto r = c_.service->install_server_key(*n, op.name);
      if (!r) return service_error(req, ctx, r.error());
    } else if (action == "set-signature-key") {
      auto r = c_.service->set_signature_key(*n, op.name);
      if (!r) return service_error(req, ctx, r.error());
    } else {
      auto r = c_.service->rotate_key(*n, op.name);
      if (!r) return service_error(req, ctx, r.error());
    }
    return json_response(req, Status::ok, o);
  }

  Response terminal_register(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::admin, op)) return *e;
    auto o = parse_object(req.body(), {"id", "limit_minor", "csr"});
    if (!o) return bad_request(req, o.error().message);
    Fields f(*o);
    const std::string id = f.str("id", true, 8);
    const std::int64_t limit = f.integer("limit_minor", false, 0, 999'999'999'999);
    const std::string csr = f.str("csr", false, 8192, true);
    if (!f.error && !valid_terminal_id(id)) f.fail("field \"id\" must be exactly 8 characters of A-Z a-z 0-9 - _ (the 9F1C terminal id)");
    if (f.error) return bad_request(req, *f.error);
    ctx.log["terminal_id"] = id;
    json::object out;
    out["id"] = id;
    std::string cert;
    if (!csr.empty()) {
      auto c = pki::sign_client_csr(c_.ca, csr, id, c_.client_cert_days);
      if (!c) return bad_request(req, c.error().message);
      cert = std::move(*c);
    } else {
      auto kc = pki::issue_client(c_.ca, id, c_.client_cert_days);
      if (!kc) return service_error(req, ctx, kc.error());
      cert = kc->cert_pem;
      out["key"] = kc->key_pem;  // the only copy; the backend keeps no terminal keys
    }
    auto fp = pki::fingerprint(cert);
    if (!fp) return service_error(req, ctx, fp.error());
    TerminalRecord t{id, *fp, limit, true};
    if (auto r = c_.service->register_terminal(t, op.name); !r) return service_error(req, ctx, r.error());
    forget_terminal(id);
    out["fingerprint"] = *fp;
    out["cert"] = cert;
    out["ca"] = c_.ca.cert_pem;
    return json_response(req, Status::created, out);
  }

  Response terminal_revoke(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::admin, op)) return *e;
    if (auto e = expect_empty_body(req)) return *e;
    const std::string& id = ctx.params.at(0);
    if (!valid_terminal_id(id)) return bad_request(req, "terminal id must be 8 characters of A-Z a-z 0-9 - _");
    auto t = c_.service->terminal(id);
    if (!t) return service_error(req, ctx, t.error());
    t->enabled = false;
    if (auto r = c_.service->register_terminal(*t, op.name); !r) return service_error(req, ctx, r.error());
    forget_terminal(id);
    json::object o;
    o["id"] = id;
    o["enabled"] = false;
    return json_response(req, Status::ok, o);
  }

  Response terminal_get(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::viewer, op)) return *e;
    const std::string& id = ctx.params.at(0);
    if (!valid_terminal_id(id)) return bad_request(req, "terminal id must be 8 characters of A-Z a-z 0-9 - _");
    auto t = c_.service->terminal(id);
    if (!t) return service_error(req, ctx, t.error());
    return json_response(req, Status::ok, terminal_json(*t));
  }

  Response transactions(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::viewer, op)) return *e;
    TransactionFilter f;
    for (const auto& [k, v] : ctx.query) {
      if (k == "card") {
        auto b = from_hex(v);
        if (!b || b->size() != 8) return bad_request(req, "card must be 16 hex digits");
        f.card = std::move(*b);
      } else if (k == "terminal") {
        f.terminal_id = v;
      } else if (k == "decision") {
        auto d = parse_decision(v);
        if (!d) return bad_request(req, "decision must be approved, declined or held");
        f.decision = *d;
      } else if (k == "since" || k == "until") {
        auto t = parse_int(v, 0, 32503680000);
        if (!t) return bad_request(req, k + " must be a Unix time in seconds");
        (k == "since" ? f.since : f.until) = *t;
      } else if (k == "limit") {
        auto l = parse_int(v, 1, 1000);
        if (!l) return bad_request(req, "limit must be from 1 to 1000");
        f.limit = static_cast<std::uint32_t>(*l);
      } else {
        return bad_request(req, "unknown query parameter \"" + k + "\" (allowed: card, terminal, decision, since, until, limit)");
      }
    }
    auto r = c_.service->list_transactions(f);
    if (!r) return service_error(req, ctx, r.error());
    json::array a;
    for (const auto& t : *r) a.push_back(transaction_json(t));
    json::object o;
    o["transactions"] = std::move(a);
    return json_response(req, Status::ok, o);
  }

  Response transaction_get(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::viewer, op)) return *e;
    const std::string& txn = ctx.params.at(0);
    if (!valid_txn_id(txn)) return bad_request(req, "malformed transaction id");
    auto t = c_.service->transaction(txn);
    if (!t) return service_error(req, ctx, t.error());
    json::object o = transaction_json(*t);
    auto outcome = c_.service->outcome(txn);
    if (!outcome) return service_error(req, ctx, outcome.error());
    if (*outcome) o["outcome"] = outcome_json(OutcomeAnswer{**outcome, false});
    if (auto refund = c_.service->refund(txn)) o["refund"] = refund_json(*refund);
    return json_response(req, Status::ok, o);
  }

  // An operator's decision on the transaction named in the path: decide(txn, operator) runs
  // the service call, to_json shapes its answer.
  template <class Decide, class ToJson>
  Response operator_decides(const Request& req, RequestContext& ctx, Decide decide, ToJson to_json) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::operator_, op)) return *e;
    if (auto e = expect_empty_body(req)) return *e;
    const std::string& txn = ctx.params.at(0);
    if (!valid_txn_id(txn)) return bad_request(req, "malformed transaction id");
    ctx.log["txn"] = txn;
    auto r = decide(txn, op.name);
    if (!r) return service_error(req, ctx, r.error());
    return json_response(req, Status::ok, to_json(*r));
  }

  Response decide(const Request& req, RequestContext& ctx, bool approve) {
    return operator_decides(
        req, ctx, [&](const std::string& txn, const std::string& op) { return c_.service->decide_held(txn, approve, op); },
        answer_json);
  }

  Response refunds(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::viewer, op)) return *e;
    RefundState state = RefundState::pending;
    std::uint32_t limit = 100;
    for (const auto& [k, v] : ctx.query) {
      if (k == "state") {
        if (v == "pending") state = RefundState::pending;
        else if (v == "approved") state = RefundState::approved;
        else if (v == "declined") state = RefundState::declined;
        else return bad_request(req, "state must be pending, approved or declined");
      } else if (k == "limit") {
        auto l = parse_int(v, 1, 1000);
        if (!l) return bad_request(req, "limit must be from 1 to 1000");
        limit = static_cast<std::uint32_t>(*l);
      } else {
        return bad_request(req, "unknown query parameter \"" + k + "\" (allowed: state, limit)");
      }
    }
    auto r = c_.service->list_refunds(state, limit);
    if (!r) return service_error(req, ctx, r.error());
    json::array a;
    for (const auto& x : *r) a.push_back(refund_json(x));
    json::object o;
    o["refunds"] = std::move(a);
    return json_response(req, Status::ok, o);
  }

  Response decide_refund(const Request& req, RequestContext& ctx, bool approve) {
    return operator_decides(
        req, ctx, [&](const std::string& txn, const std::string& op) { return c_.service->decide_refund(txn, approve, op); },
        refund_json);
  }

  Response audit(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::viewer, op)) return *e;
    std::int64_t after = 0;
    std::uint32_t limit = 100;
    for (const auto& [k, v] : ctx.query) {
      if (k == "after") {
        auto a = parse_int(v, 0, INT64_MAX);
        if (!a) return bad_request(req, "after must be a sequence number");
        after = *a;
      } else if (k == "limit") {
        auto l = parse_int(v, 1, 1000);
        if (!l) return bad_request(req, "limit must be from 1 to 1000");
        limit = static_cast<std::uint32_t>(*l);
      } else {
        return bad_request(req, "unknown query parameter \"" + k + "\" (allowed: after, limit)");
      }
    }
    auto r = c_.service->audit_log(after, limit);
    if (!r) return service_error(req, ctx, r.error());
    json::array a;
    for (const auto& e : *r) a.push_back(audit_json(e));
    json::object o;
    o["entries"] = std::move(a);
    return json_response(req, Status::ok, o);
  }

  Response audit_verify(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::viewer, op)) return *e;
    auto r = c_.service->verify_audit();
    json::object o;
    if (!r) {
      if (r.error().code != Errc::bad_mac) return service_error(req, ctx, r.error());
      o["ok"] = false;
      o["message"] = r.error().message;
      return json_response(req, Status::ok, o);
    }
    o["ok"] = true;
    o["entries"] = *r;
    return json_response(req, Status::ok, o);
  }

  Response create_operator(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::admin, op)) return *e;
    auto o = parse_object(req.body(), {"name", "role"});
    if (!o) return bad_request(req, o.error().message);
    Fields f(*o);
    const std::string name = f.str("name", true, 64);
    const auto role = parse_role(f.str("role", true, 16));
    if (!f.error && name.empty()) f.fail("field \"name\" must not be empty");
    if (!f.error && !role) f.fail("field \"role\" must be viewer, operator or admin");
    if (f.error) return bad_request(req, *f.error);
    auto t = c_.service->create_operator(name, *role, op.name);
    if (!t) return service_error(req, ctx, t.error());
    json::object out;
    out["name"] = name;
    out["role"] = role_name(*role);
    out["token"] = *t;  // shown once; only its hash is stored
    return json_response(req, Status::created, out);
  }

  // The card CA's public point (cards are personalized with it, ACTIVATE DF51).
  Response card_ca(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::viewer, op)) return *e;
    auto p = c_.service->card_ca_public();
    if (!p) return service_error(req, ctx, p.error());
    json::object o;
    o["ca_point"] = to_hex(*p);
    return json_response(req, Status::ok, o);
  }

  Response whoami(const Request& req, RequestContext& ctx) {
    OperatorRecord op;
    if (auto e = require_operator(req, ctx, Role::viewer, op)) return *e;
    json::object o;
    o["name"] = op.name;
    o["role"] = role_name(op.role);
    return json_response(req, Status::ok, o);
  }

  Response healthz(const Request& req, RequestContext&) {
    // The database check (a store transaction) runs at most once a second; probes in between
    // get its result, so a burst of health checks cannot queue up on the write path.
    const auto now = std::chrono::steady_clock::now();
    bool healthy = false, custody = false;
    {
      std::lock_guard lock(health_mu_);
      if (now - health_checked_ >= std::chrono::seconds(1)) {
        health_ok_ = static_cast<bool>(c_.service->metrics());  // touches the database
        custody_ok_ = !c_.custody_check || static_cast<bool>(c_.custody_check());
        health_checked_ = now;
      }
      healthy = health_ok_;
      custody = custody_ok_;
    }
    if (!healthy) return error_response(req, Status::service_unavailable, "unhealthy", "the database is not usable");
    // A token that is out for now: every authorization would get 503, so a load balancer
    // should send them to another node (the token's own log lines say why and since when).
    if (!custody) return error_response(req, Status::service_unavailable, "unhealthy", "the key token does not answer");
    const auto [running, expected] = c_.metrics ? c_.metrics->io_threads() : std::pair<unsigned, unsigned>{0, 0};
    if (running < expected) {
      return error_response(req, Status::service_unavailable, "unhealthy",
                            std::to_string(expected - running) + " of " + std::to_string(expected) +
                                " network threads are not running; restart the backend");
    }
    json::object o;
    o["status"] = "ok";
    o["io_threads"] = running;
    return json_response(req, Status::ok, o);
  }

  Response metrics(const Request& req, RequestContext& ctx) {
    auto m = c_.service->metrics();
    if (!m) return service_error(req, ctx, m.error());
    return text_response(req, Status::ok, c_.metrics->render(*m), "text/plain; version=0.0.4; charset=utf-8");
  }

 private:
  ApiContext& c_;
  std::mutex health_mu_;
  std::chrono::steady_clock::time_point health_checked_{};
  bool health_ok_ = false;
  bool custody_ok_ = false;
  // Terminals whose certificate was checked against the store. An entry is dropped when this
  // node re-issues or revokes the terminal, and trusted for kTerminalCacheTtl only, so that a
  // revocation made on another node sharing the store (PostgreSQL) takes effect here within it.
  static constexpr std::chrono::seconds kTerminalCacheTtl{2};
  struct CachedTerminal {
    std::string fingerprint;
    std::chrono::steady_clock::time_point checked;
  };
  std::mutex mu_;
  std::unordered_map<std::string, CachedTerminal> terminals_;  // id -> verified fingerprint
};

}  // namespace

void report_suppressed(Service& service, DeclineLimiter& declines, bool force) {
  auto rep = declines.take_report(force);
  if (!rep) return;
  log::warn("declines_suppressed", {{"detail", rep->detail()}});
  if (auto a = service.record_event("system", "declines_suppressed", rep->detail()); !a)
    log::warn("audit_failed", {{"action", "declines_suppressed"}, {"error", a.error().message}});
}

void install_api(Router& router, ApiContext& ctx) {
  auto api = std::make_shared<Api>(ctx);
  auto bind = [api](Response (Api::*fn)(const Request&, RequestContext&)) -> Handler {
    return [api, fn](const Request& req, RequestContext& c) { return ((*api).*fn)(req, c); };
  };
  router.add(Verb::get, "/healthz", bind(&Api::healthz));
  router.add(Verb::get, "/metrics", bind(&Api::metrics));
  router.add(Verb::post, "/v1/authorizations", bind(&Api::authorize),
             [api](const Request& req, RequestContext& c, Reply reply) { return api->authorize_async(req, c, std::move(reply)); });
  router.add(Verb::get, "/v1/authorizations/*", bind(&Api::get_authorization), RouteOptions{true});
  router.add(Verb::post, "/v1/authorizations/*/cancel", bind(&Api::cancel_authorization));
  router.add(Verb::post, "/v1/codes/verify", bind(&Api::verify_code));
  router.add(Verb::post, "/v1/outcomes", bind(&Api::report_outcome));
  router.add(Verb::post, "/v1/refunds", bind(&Api::request_refund));
  router.add(Verb::get, "/v1/refunds/*", bind(&Api::get_refund));
  router.add(Verb::get, "/v1/admin/refunds", bind(&Api::refunds));
  router.add(Verb::post, "/v1/admin/refunds/*/approve",
             [api](const Request& req, RequestContext& c) { return api->decide_refund(req, c, true); });
  router.add(Verb::post, "/v1/admin/refunds/*/decline",
             [api](const Request& req, RequestContext& c) { return api->decide_refund(req, c, false); });
  router.add(Verb::post, "/v1/admin/cards", bind(&Api::enroll));
  router.add(Verb::get, "/v1/admin/cards/*", bind(&Api::card_get));
  router.add(Verb::get, "/v1/admin/card-ca", bind(&Api::card_ca));
  router.add(Verb::post, "/v1/admin/cards/*/settings", bind(&Api::card_settings));
  for (const char* action : {"block", "unblock", "refresh", "rotate-key", "install-server-key", "set-signature-key"}) {
    router.add(Verb::post, std::string("/v1/admin/cards/*/") + action,
               [api, action](const Request& req, RequestContext& c) { return api->card_action(req, c, action); });
  }
  router.add(Verb::post, "/v1/admin/terminals", bind(&Api::terminal_register));
  router.add(Verb::get, "/v1/admin/terminals/*", bind(&Api::terminal_get));
  router.add(Verb::post, "/v1/admin/terminals/*/revoke", bind(&Api::terminal_revoke));
  router.add(Verb::get, "/v1/admin/transactions", bind(&Api::transactions));
  router.add(Verb::get, "/v1/admin/transactions/*", bind(&Api::transaction_get));
  router.add(Verb::post, "/v1/admin/transactions/*/approve",
             [api](const Request& req, RequestContext& c) { return api->decide(req, c, true); });
  router.add(Verb::post, "/v1/admin/transactions/*/decline",
             [api](const Request& req, RequestContext& c) { return api->decide(req, c, false); });
  router.add(Verb::get, "/v1/admin/audit", bind(&Api::audit));
  router.add(Verb::get, "/v1/admin/audit/verify", bind(&Api::audit_verify));
  router.add(Verb::post, "/v1/admin/operators", bind(&Api::create_operator));
  router.add(Verb::get, "/v1/admin/whoami", bind(&Api::whoami));
}

}  // namespace otac::backend::http
