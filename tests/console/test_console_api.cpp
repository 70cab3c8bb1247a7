// The console's handler against a real Service on a temporary SQLite store: assets and their
// headers, sign-in, CSRF, roles, and the actions of each view.
#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "api.hpp"
#include "console.hpp"
#include "pki.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::console;
using otac::backend::test::Ch;
using otac::backend::test::Env;

namespace {

namespace json = boost::json;

// A console's answer, as the tests read it.
struct Reply {
  unsigned status = 0;
  std::string body;
  http::Response raw;
  std::optional<std::string_view> header(std::string_view name) const {
    auto it = raw.find(name);
    if (it == raw.end()) return std::nullopt;
    return std::string_view(it->value());
  }
};

// A Service, the real operator API on a router, and the console's routes on the same router
// (as otac-backend registers them); requests go through the router as the server sends them.
struct Fixture {
  Env env{20};
  http::RequestMetrics metrics;
  http::ApiContext api;
  http::Router router;
  std::unique_ptr<Console> console;
  std::string viewer_token, operator_token, admin_token;

  Fixture() {
    api.service = env.svc.get();
    api.metrics = &metrics;
    api.ca = pki::make_ca("console test CA", 1).value();
    http::install_api(router, api);
    ConsoleOptions o;
    o.clock = [this] { return env.clock; };
    console = std::make_unique<Console>(*env.svc, router, std::move(o));
    console->install(router);
    viewer_token = env.svc->create_operator("vera", Role::viewer, "setup").value();
    operator_token = env.svc->create_operator("otto", Role::operator_, "setup").value();
    admin_token = env.svc->create_operator("ada", Role::admin, "setup").value();
  }

  Reply call(std::string method, std::string target, std::string body = {},
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    http::Request r;
    r.version(11);
    r.method_string(method);
    r.target(target);
    for (const auto& [k, v] : headers) r.insert(k, v);
    r.set(boost::beast::http::field::host, "127.0.0.1:8443");
    r.body() = std::move(body);
    r.prepare_payload();
    http::RequestContext ctx;
    ctx.remote = "127.0.0.1:40000";
    ctx.tls = true;
    Reply out;
    out.raw = http::dispatch_target(router, r, ctx);
    out.status = out.raw.result_int();
    out.body = out.raw.body();
    return out;
  }

  struct Browser {
    std::string cookie;  // "name=value"
    std::string csrf;
  };

  Browser sign_in(const std::string& token) {
    auto r = call("POST", "/console/api/session", json::serialize(json::object{{"token", token}}),
                  {{"Content-Type", "application/json"}, {"Origin", "https://127.0.0.1:8443"}});
    REQUIRE(r.status == 200);
    auto set = r.header("Set-Cookie");
    REQUIRE(set);
    Browser b;
    b.cookie = std::string(set->substr(0, set->find(';')));
    b.csrf = std::string(json::parse(r.body).at("csrf").as_string());
    return b;
  }

  Reply as(const Browser& b, std::string method, std::string target, std::string body = {},
                  bool with_csrf = true) {
    std::vector<std::pair<std::string, std::string>> h{{"Cookie", b.cookie}, {"Content-Type", "application/json"}};
    if (with_csrf) h.emplace_back("X-CSRF-Token", b.csrf);
    return call(std::move(method), std::move(target), std::move(body), std::move(h));
  }

  // A card whose transactions above 10.00 are held, a terminal, and one held transaction.
  struct Held {
    Bytes n;
    std::string txn;
  };
  Held make_held() {
    REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0001", "ab", 0, true}, "setup"));
    EnrollRequest er;
    er.msisdn = "+4915550001";
    er.review_minor = 1000;
    auto e = env.svc->enroll_card(er, "setup");
    REQUIRE(e);
    auto l = env.svc->issue_list(e->n, "setup");
    REQUIRE(l);
    auto req = backend::test::card_request("TXN-HELD-1", e->n, Algorithm::des3, l->first, 0, l->second[0], Ch{});
    auto a = env.svc->authorize(req, "TERM0001");
    REQUIRE(a);
    REQUIRE(a->decision == Decision::held);
    return Held{e->n, "TXN-HELD-1"};
  }
};

json::value body_of(const Reply& r) { return json::parse(r.body); }

}  // namespace

TEST_CASE("console sign-in: 1000 viewer sign-ins neither lock out an admin nor pile up") {
  Fixture f;
  std::vector<Fixture::Browser> viewers;
  for (int i = 0; i < 1000; ++i) viewers.push_back(f.sign_in(f.viewer_token));
  CHECK(f.console->sessions().size() == f.console->sessions().limits().max_per_operator);
  CHECK(f.as(viewers.back(), "GET", "/console/api/session").status == 200);
  CHECK(f.as(viewers.front(), "GET", "/console/api/session").status == 401);  // evicted
  auto admin = f.sign_in(f.admin_token);
  auto me = f.as(admin, "GET", "/console/api/session");
  REQUIRE(me.status == 200);
  CHECK(body_of(me).at("role").as_string() == "admin");
}

TEST_CASE("console assets: embedded, with strict headers and revalidation") {
  Fixture f;
  auto r = f.call("GET", "/console/");
  REQUIRE(r.status == 200);
  CHECK(r.header("Content-Type") == std::string_view("text/html; charset=utf-8"));
  auto csp = r.header("Content-Security-Policy");
  REQUIRE(csp);
  CHECK(csp->find("default-src 'self'") != std::string_view::npos);
  CHECK(csp->find("frame-ancestors 'none'") != std::string_view::npos);
  CHECK(csp->find("unsafe-inline") == std::string_view::npos);
  CHECK(csp->find("unsafe-eval") == std::string_view::npos);
  CHECK(r.header("X-Content-Type-Options") == std::string_view("nosniff"));
  CHECK(r.header("Cache-Control") == std::string_view("no-cache"));
  auto etag = r.header("ETag");
  REQUIRE(etag);
  // No inline script or style and nothing from another origin in the page itself.
  CHECK(r.body.find("<script src=\"console.js\"") != std::string::npos);
  CHECK(r.body.find("<script>") == std::string::npos);
  CHECK(r.body.find("<style") == std::string::npos);
  CHECK(r.body.find(" style=") == std::string::npos);
  CHECK(r.body.find(" onclick=") == std::string::npos);
  CHECK(r.body.find("http://") == std::string::npos);
  CHECK(r.body.find("https://") == std::string::npos);

  auto again = f.call("GET", "/console/index.html", {}, {{"If-None-Match", std::string(*etag)}});
  CHECK(again.status == 304);
  CHECK(again.body.empty());

  auto js = f.call("GET", "/console/console.js");
  CHECK(js.status == 200);
  CHECK(js.header("Content-Type") == std::string_view("text/javascript; charset=utf-8"));
  CHECK(js.body.find("eval(") == std::string::npos);
  CHECK(js.body.find("innerHTML") == std::string::npos);  // text only: no markup from data
  auto css = f.call("GET", "/console/console.css");
  CHECK(css.status == 200);
  CHECK(css.header("Content-Type") == std::string_view("text/css; charset=utf-8"));

  CHECK(f.call("GET", "/console").status == 308);
  CHECK(f.call("GET", "/console/../service.hpp").status == 404);
  CHECK(f.call("GET", "/console/nope.js").status == 404);
  CHECK(f.call("POST", "/console/index.html").status == 405);
  CHECK(f.call("HEAD", "/console/").status == 200);
  CHECK(f.call("GET", "/console/api/held?x=1").status == 401);  // the console's, behind its sign-in
  // Paths beside the console are not its own: the router answers, without the console's headers.
  auto beside = f.call("GET", "/consoles");
  CHECK(beside.status == 404);
  CHECK_FALSE(beside.header("Content-Security-Policy"));
  CHECK(f.call("GET", "/console/api/nothing").header("Content-Security-Policy"));
}

TEST_CASE("console sign-in: token to an HttpOnly Secure SameSite=Strict cookie, sign-out") {
  Fixture f;
  SECTION("a wrong token is refused without a cookie") {
    auto r = f.call("POST", "/console/api/session", R"({"token":"nope"})", {{"Content-Type", "application/json"}});
    CHECK(r.status == 401);
    CHECK_FALSE(r.header("Set-Cookie"));
    CHECK(f.console->sessions().size() == 0);
  }
  SECTION("sign-in wants JSON, known fields only") {
    std::string body = R"({"token":")" + f.admin_token + "\"}";
    CHECK(f.call("POST", "/console/api/session", body).status == 415);
    CHECK(f.call("POST", "/console/api/session", body, {{"Content-Type", "text/plain"}}).status == 415);
    CHECK(f.call("POST", "/console/api/session", R"({"token":"x","role":"admin"})",
                 {{"Content-Type", "application/json"}}).status == 400);
    CHECK(f.call("POST", "/console/api/session", R"({"token":)", {{"Content-Type", "application/json"}}).status == 400);
    CHECK(f.call("POST", "/console/api/session", R"({"token":5})", {{"Content-Type", "application/json"}}).status == 400);
    CHECK(f.call("POST", "/console/api/session", R"([1])", {{"Content-Type", "application/json"}}).status == 400);
    // Strict JSON: a repeated field is refused, not resolved in favour of the last one.
    const auto dup = f.call("POST", "/console/api/session", R"({"token":"x","token":")" + f.admin_token + "\"}",
                            {{"Content-Type", "application/json"}});
    CHECK(dup.status == 400);
    CHECK(dup.body.find("duplicate field") != std::string::npos);
    CHECK(f.call("POST", "/console/api/session", body,
                 {{"Content-Type", "application/json"}, {"Origin", "https://evil.example"}}).status == 403);
    CHECK(f.console->sessions().size() == 0);
  }
  SECTION("a good token signs in; the session answers with name, role and CSRF token") {
    auto r = f.call("POST", "/console/api/session", R"({"token":")" + f.operator_token + "\"}",
                    {{"Content-Type", "application/json"}});
    REQUIRE(r.status == 200);
    auto set = r.header("Set-Cookie");
    REQUIRE(set);
    CHECK(set->starts_with("__Host-otac-console="));
    CHECK(set->find("; HttpOnly") != std::string_view::npos);
    CHECK(set->find("; Secure") != std::string_view::npos);
    CHECK(set->find("; SameSite=Strict") != std::string_view::npos);
    CHECK(set->find("; Path=/") != std::string_view::npos);
    CHECK(r.header("Cache-Control") == std::string_view("no-store"));
    auto b = body_of(r).as_object();
    CHECK(b.at("name") == "otto");
    CHECK(b.at("role") == "operator");
    std::string cookie(set->substr(0, set->find(';')));
    std::string csrf(b.at("csrf").as_string());
    CHECK(cookie.find(csrf) == std::string::npos);  // the token is not derived from the cookie

    auto me = f.call("GET", "/console/api/session", {}, {{"Cookie", "theme=dark; " + cookie}});
    REQUIRE(me.status == 200);
    CHECK(body_of(me).at("csrf") == csrf.c_str());
    CHECK(f.call("GET", "/console/api/session").status == 401);
    CHECK(f.call("GET", "/console/api/held").status == 401);

    // Sign-out is state-changing: it too needs the CSRF token.
    CHECK(f.call("DELETE", "/console/api/session", {}, {{"Cookie", cookie}}).status == 403);
    auto out = f.call("DELETE", "/console/api/session", {}, {{"Cookie", cookie}, {"X-CSRF-Token", csrf}});
    REQUIRE(out.status == 200);
    auto clear = out.header("Set-Cookie");
    REQUIRE(clear);
    CHECK(clear->find("Max-Age=0") != std::string_view::npos);
    CHECK(f.call("GET", "/console/api/session", {}, {{"Cookie", cookie}}).status == 401);
  }
  SECTION("a session expires after the idle time, timed refreshes notwithstanding") {
    auto b = f.sign_in(f.viewer_token);
    auto poll = [&] {
      return f.call("GET", "/console/api/held", {}, {{"Cookie", b.cookie}, {"X-Console-Background", "1"}}).status;
    };
    f.env.clock += 10 * 60;
    CHECK(poll() == 200);
    f.env.clock += 5 * 60;
    CHECK(poll() == 401);
  }
  SECTION("a person's request restarts the idle timer") {
    auto b = f.sign_in(f.viewer_token);
    f.env.clock += 10 * 60;
    CHECK(f.as(b, "GET", "/console/api/held").status == 200);
    f.env.clock += 10 * 60;
    CHECK(f.as(b, "GET", "/console/api/held").status == 200);
    f.env.clock += 15 * 60;
    CHECK(f.as(b, "GET", "/console/api/held").status == 401);
  }
}

TEST_CASE("console CSRF: a state-changing request without the session's token is refused") {
  Fixture f;
  auto held = f.make_held();
  auto admin = f.sign_in(f.admin_token);
  auto other = f.sign_in(f.admin_token);
  const std::string block = "/console/api/cards/" + to_hex(held.n) + "/block";

  CHECK(f.as(admin, "POST", block, {}, false).status == 403);
  Fixture::Browser forged = admin;
  forged.csrf = other.csrf;  // a valid token, but of another session
  CHECK(f.as(forged, "POST", block).status == 403);
  forged.csrf = std::string(64, '0');
  CHECK(f.as(forged, "POST", block).status == 403);
  CHECK(f.env.svc->card(held.n)->status == CardStatus::active);
  auto cross = f.call("POST", block, {},
                      {{"Cookie", admin.cookie}, {"X-CSRF-Token", admin.csrf}, {"Origin", "https://evil.example"}});
  CHECK(cross.status == 403);
  CHECK(f.env.svc->card(held.n)->status == CardStatus::active);

  auto approve = "/console/api/held/" + held.txn + "/approve";
  CHECK(f.as(admin, "POST", approve, {}, false).status == 403);
  CHECK(f.env.svc->get_authorization(held.txn, std::chrono::milliseconds(0))->decision == Decision::held);

  CHECK(f.as(admin, "POST", block).status == 200);
  CHECK(f.env.svc->card(held.n)->status == CardStatus::blocked);
}

TEST_CASE("console roles: a viewer sees the queue but cannot approve, an operator can") {
  Fixture f;
  auto held = f.make_held();
  auto viewer = f.sign_in(f.viewer_token);
  auto op = f.sign_in(f.operator_token);

  auto q = f.as(viewer, "GET", "/console/api/held");
  REQUIRE(q.status == 200);
  auto list = body_of(q).at("held").as_array();
  REQUIRE(list.size() == 1);
  auto t = list[0].as_object();
  CHECK(t.at("txn_id") == "TXN-HELD-1");
  CHECK(t.at("amount_minor").as_int64() == 1234);
  CHECK(t.at("terminal") == "TERM0001");
  CHECK(t.at("reason").as_string().size() > 0);
  const std::string hex_n = to_hex(held.n);
  CHECK(t.at("card") == ("************" + hex_n.substr(12)).c_str());  // masked for a viewer
  CHECK(t.at("age_s").as_int64() == 0);
  f.env.clock += 42;
  CHECK(body_of(f.as(viewer, "GET", "/console/api/held")).at("held").at(0).at("age_s").as_int64() == 42);

  auto approve = "/console/api/held/" + held.txn + "/approve";
  auto denied = f.as(viewer, "POST", approve);
  CHECK(denied.status == 403);
  CHECK(body_of(denied).at("error") == "forbidden");
  CHECK(f.as(viewer, "POST", "/console/api/cards/" + hex_n + "/block").status == 403);
  CHECK(f.as(viewer, "POST", "/console/api/cards", R"({"msisdn":"+1"})").status == 403);
  CHECK(f.env.svc->get_authorization(held.txn, std::chrono::milliseconds(0))->decision == Decision::held);

  // An operator may approve but not manage terminals (the operator API's roles, enforced there).
  CHECK(f.as(op, "POST", "/console/api/terminals", R"({"id":"TERM0002"})").status == 403);
  CHECK(f.as(op, "POST", "/console/api/terminals/TERM0001/revoke").status == 403);
  auto ok = f.as(op, "POST", approve);
  REQUIRE(ok.status == 200);
  CHECK(body_of(ok).at("decision") == "approved");
  auto final_answer = f.env.svc->get_authorization(held.txn, std::chrono::milliseconds(0));
  CHECK(final_answer->decision == Decision::approved);
  CHECK(f.as(op, "POST", approve).status == 409);  // decided already
  CHECK(body_of(f.as(viewer, "GET", "/console/api/held")).at("held").as_array().empty());

  auto detail = f.as(op, "GET", "/console/api/transactions/" + held.txn);
  REQUIRE(detail.status == 200);
  CHECK(body_of(detail).at("decided_by") == "otto");
  CHECK(body_of(detail).at("card") == hex_n.c_str());
  CHECK(f.as(op, "GET", "/console/api/transactions/NOPE").status == 404);

  auto audit = body_of(f.as(viewer, "GET", "/console/api/audit?limit=5")).at("entries").as_array();
  REQUIRE(audit.size() == 5);
  CHECK(audit[0].at("action") == "approve_held");
  CHECK(audit[0].at("actor") == "otto");
  // Viewers see card ids masked in the audit log too; operators see them whole.
  const auto viewer_audit = f.as(viewer, "GET", "/console/api/audit").body;
  CHECK(viewer_audit.find(hex_n) == std::string::npos);
  CHECK(viewer_audit.find("card=************" + hex_n.substr(12)) != std::string::npos);
  CHECK(f.as(op, "GET", "/console/api/audit").body.find("card=" + hex_n) != std::string::npos);
  CHECK_FALSE(body_of(detail).as_object().contains("outcome"));
  // The terminal paid out part of it and reversed the rest: the detail shows the outcome.
  REQUIRE(f.env.svc->report_outcome(OutcomeReport{held.txn, Outcome::reversed, 500}, "TERM0001"));
  CHECK(body_of(f.as(op, "GET", "/console/api/transactions/" + held.txn)).at("outcome") ==
        "reversed, handed over 500 (minor units), reported by TERM0001");
  // The list shows it too, on that row only.
  int with_outcome = 0;
  const auto listed = body_of(f.as(viewer, "GET", "/console/api/transactions"));
  for (const auto& row : listed.at("transactions").as_array()) {
    if (!row.as_object().contains("outcome")) continue;
    ++with_outcome;
    CHECK(row.at("txn_id") == held.txn.c_str());
    CHECK(row.at("outcome") == "reversed");
  }
  CHECK(with_outcome == 1);
}

TEST_CASE("console cards and terminals: enroll once, status, block, refresh, rotate, register, certificate, revoke") {
  Fixture f;
  auto admin = f.sign_in(f.admin_token);
  auto e = f.as(admin, "POST", "/console/api/cards", R"({"algorithm":"aes","msisdn":"+4915550002","review_minor":500})");
  REQUIRE(e.status == 201);
  auto eb = body_of(e).as_object();
  const std::string n(eb.at("n").as_string());
  CHECK(n.size() == 16);
  CHECK(eb.at("algorithm") == "aes");
  CHECK(eb.at("letter").as_string().find(n) != std::string::npos);

  auto st = f.as(admin, "GET", "/console/api/cards/" + n);
  REQUIRE(st.status == 200);
  auto sb = body_of(st).as_object();
  CHECK(sb.at("status") == "active");
  CHECK(sb.at("msisdn") == "+4915550002");
  CHECK(sb.at("unused").as_int64() == 0);
  CHECK(st.body.find("letter") == std::string::npos);  // the letter is never shown again
  CHECK(sb.at("events").as_array().size() >= 1);

  CHECK(sb.at("sms_queued").as_int64() == 0);
  CHECK(f.as(admin, "POST", "/console/api/cards/" + n + "/refresh").status == 200);
  auto after = body_of(f.as(admin, "GET", "/console/api/cards/" + n)).as_object();
  CHECK(after.at("unused").as_int64() == 20);
  REQUIRE(!after.at("lists").as_array().empty());
  CHECK(after.at("lists").as_array().back().at("id").as_int64() >= 1);
  CHECK(after.at("sms_queued").as_int64() >= 1);  // the list waits in the outbox (no gateway here)
  CHECK(after.at("sms_last").at("attempts").as_int64() == 0);
  CHECK(f.as(admin, "POST", "/console/api/cards/" + n + "/block").status == 200);
  CHECK(body_of(f.as(admin, "GET", "/console/api/cards/" + n)).at("status") == "blocked");
  CHECK(f.as(admin, "POST", "/console/api/cards/" + n + "/unblock").status == 200);
  CHECK(body_of(f.as(admin, "GET", "/console/api/cards/" + n)).at("status") == "active");
  CHECK(f.as(admin, "POST", "/console/api/cards/" + n + "/rotate-key").status == 200);
  CHECK(body_of(f.as(admin, "GET", "/console/api/cards/" + n)).at("key_rotation_pending") == true);
  auto cards = body_of(f.as(admin, "GET", "/console/api/cards")).at("cards").as_array();
  REQUIRE(cards.size() == 1);
  CHECK(cards[0].at("n") == n.c_str());

  CHECK(f.as(admin, "GET", "/console/api/cards/0102").status == 400);
  CHECK(f.as(admin, "GET", "/console/api/cards/0102030405060708").status == 404);
  CHECK(f.as(admin, "POST", "/console/api/cards/" + n + "/explode").status == 404);
  CHECK(f.as(admin, "POST", "/console/api/cards", R"({"algorithm":"rsa"})").status == 400);
  CHECK(f.as(admin, "POST", "/console/api/cards", R"({"msisdn":"+1","pin":"1234"})").status == 400);
  CHECK(f.as(admin, "POST", "/console/api/cards", R"({"limit_minor":-5})").status == 400);
  CHECK(f.as(admin, "POST", "/console/api/cards", R"({"msisdn":"not a number"})").status == 400);
  CHECK(f.as(admin, "POST", "/console/api/cards", R"({"msisdn":"+1","limit_minor":1,"limit_minor":999999})").status == 400);
  CHECK(f.as(admin, "GET", "/console/api/transactions?decision=maybe").status == 400);
  CHECK(f.as(admin, "GET", "/console/api/transactions?limit=0").status == 400);
  CHECK(f.as(admin, "GET", "/console/api/nothing").status == 404);

  // Registration issues the client certificate at once (the operator API's behaviour).
  auto reg = f.as(admin, "POST", "/console/api/terminals", R"({"id":"TERM0002","limit_minor":5000})");
  REQUIRE(reg.status == 201);
  CHECK(body_of(reg).at("key").as_string().starts_with("-----BEGIN PRIVATE KEY"));
  const std::string fp1(body_of(reg).at("fingerprint").as_string());
  CHECK(pki::common_name(body_of(reg).at("cert").as_string()).value() == "TERM0002");
  auto terms = body_of(f.as(admin, "GET", "/console/api/terminals")).at("terminals").as_array();
  REQUIRE(terms.size() == 1);
  CHECK(terms[0].at("id") == "TERM0002");
  CHECK(terms[0].at("fingerprint") == fp1.c_str());
  CHECK(terms[0].at("limit_minor").as_int64() == 5000);
  auto cert = f.as(admin, "POST", "/console/api/terminals/TERM0002/cert");
  REQUIRE(cert.status == 201);
  const std::string fp2(body_of(cert).at("fingerprint").as_string());
  CHECK(fp2 != fp1);
  terms = body_of(f.as(admin, "GET", "/console/api/terminals")).at("terminals").as_array();
  CHECK(terms[0].at("fingerprint") == fp2.c_str());
  CHECK(terms[0].at("enabled") == true);
  CHECK(terms[0].at("limit_minor").as_int64() == 5000);
  CHECK(f.as(admin, "POST", "/console/api/terminals/TERM0002/revoke").status == 200);
  terms = body_of(f.as(admin, "GET", "/console/api/terminals")).at("terminals").as_array();
  CHECK(terms[0].at("enabled") == false);
  CHECK(f.as(admin, "POST", "/console/api/terminals/NOPE0000/cert").status == 404);
  CHECK(f.as(admin, "POST", "/console/api/terminals", R"({"id":"SHORT"})").status == 400);
  CHECK(f.as(admin, "POST", "/console/api/terminals", R"({"id":"TERM 003"})").status == 400);
}

TEST_CASE("console stats: decisions per minute over the last hour and the SMS queue depth") {
  Fixture f;
  f.make_held();
  auto viewer = f.sign_in(f.viewer_token);
  auto s = f.as(viewer, "GET", "/console/api/stats");
  REQUIRE(s.status == 200);
  auto b = body_of(s).as_object();
  auto per = b.at("per_minute").as_array();
  REQUIRE(per.size() == 60);
  CHECK(per[59].at("held").as_int64() == 1);
  CHECK(per[58].at("held").as_int64() == 0);
  CHECK(b.at("outbox_depth").is_int64());
  auto hist = b.at("outbox_history").as_array();
  REQUIRE(hist.size() == 1);
  CHECK(hist[0].at(0).as_int64() == f.env.clock);
  f.env.clock += 5;  // within 10 s: the last sample is updated, not appended
  CHECK(body_of(f.as(viewer, "GET", "/console/api/stats")).at("outbox_history").as_array().size() == 1);
  f.env.clock += 20;
  f.as(viewer, "GET", "/console/api/held");  // the queue's polling samples too
  CHECK(body_of(f.as(viewer, "GET", "/console/api/stats")).at("outbox_history").as_array().size() == 2);
  f.env.clock += 3700;  // an hour later the old samples are gone (and the session too)
  CHECK(f.as(viewer, "GET", "/console/api/stats").status == 401);
  viewer = f.sign_in(f.viewer_token);
  CHECK(body_of(f.as(viewer, "GET", "/console/api/stats")).at("outbox_history").as_array().size() == 1);
  // An hour is past the hold limit: the held transaction has expired (protocol.md 5.2).
  CHECK(body_of(f.as(viewer, "GET", "/console/api/transactions?terminal=TERM0001&decision=held")).at("transactions").as_array().empty());
  auto txs = body_of(f.as(viewer, "GET", "/console/api/transactions?terminal=TERM0001&decision=declined"))
                 .at("transactions").as_array();
  REQUIRE(txs.size() == 1);
  CHECK(txs[0].at("reason").as_string() == "held_timeout");
  CHECK(body_of(f.as(viewer, "GET", "/console/api/transactions?terminal=OTHER")).at("transactions").as_array().empty());
}

TEST_CASE("console card settings: shown, changed by an operator through the operator API, refused for a viewer") {
  Fixture f;
  auto op = f.sign_in(f.operator_token);
  auto viewer = f.sign_in(f.viewer_token);
  auto e = f.as(op, "POST", "/console/api/cards", R"({"msisdn":"+4915550002","doors":[{"door":"FRONT"}]})");
  REQUIRE(e.status == 201);
  const std::string n(body_of(e).at("n").as_string());
  const std::string path = "/console/api/cards/" + n;
  auto before = body_of(f.as(op, "GET", path)).as_object();
  CHECK(before.at("currency").as_int64() == 978);
  CHECK(json::serialize(before.at("doors")) == R"([{"door":"FRONT","from_minute":0,"to_minute":1440,"tz":"UTC"}])");

  CHECK(f.as(viewer, "POST", path + "/settings", R"({"limit_minor":100})").status == 403);
  CHECK(f.as(op, "POST", path + "/settings", R"({"limit_minor":100})", false).status == 403);  // no CSRF token
  auto bad = f.as(op, "POST", path + "/settings", R"({"doors":[{"door":"LAB","from_minute":60,"to_minute":60}]})");
  CHECK(bad.status == 400);
  CHECK(bad.body.find("empty") != std::string::npos);

  auto ok = f.as(op, "POST", path + "/settings",
                 R"({"limit_minor":100,"currency":"CHF","doors":[{"door":"LAB","from_minute":1320,"to_minute":360,"tz":"Europe/Zurich"}]})");
  REQUIRE(ok.status == 200);
  auto after = body_of(f.as(op, "GET", path)).as_object();
  CHECK(after.at("limit_minor").as_int64() == 100);
  CHECK(after.at("currency").as_int64() == 756);
  CHECK(json::serialize(after.at("doors")) == R"([{"door":"LAB","from_minute":1320,"to_minute":360,"tz":"Europe/Zurich"}])");
  CHECK(after.at("events").at(0).at("action") == "card_settings");
  CHECK(after.at("events").at(0).at("actor") == "otto");

  // The card's own daily cash limit: unset (the backend's), a value, 0, and null back to unset.
  CHECK(after.at("cash_daily_minor").is_null());
  CHECK(after.at("cash_daily_effective_minor").as_int64() == f.env.config.cash_card_daily_minor);
  CHECK(f.as(viewer, "POST", path + "/settings", R"({"cash_daily_minor":20000})").status == 403);
  CHECK(f.as(op, "POST", path + "/settings", R"({"cash_daily_minor":-1})").status == 400);
  REQUIRE(f.as(op, "POST", path + "/settings", R"({"cash_daily_minor":20000})").status == 200);
  auto cash = body_of(f.as(op, "GET", path)).as_object();
  CHECK(cash.at("cash_daily_minor").as_int64() == 20000);
  CHECK(cash.at("cash_daily_effective_minor").as_int64() == 20000);
  CHECK(cash.at("events").at(0).at("detail").as_string().find("cash_daily_minor=default->20000") != json::string::npos);
  REQUIRE(f.as(op, "POST", path + "/settings", R"({"cash_daily_minor":null})").status == 200);
  CHECK(body_of(f.as(op, "GET", path)).at("cash_daily_minor").is_null());
  // Set at enrollment, 0 included (this card takes no cash, whatever the backend allows).
  auto e0 = f.as(op, "POST", "/console/api/cards", R"({"msisdn":"+4915550003","cash_daily_minor":0})");
  REQUIRE(e0.status == 201);
  auto none = body_of(f.as(op, "GET", "/console/api/cards/" + std::string(body_of(e0).at("n").as_string()))).as_object();
  CHECK(none.at("cash_daily_minor").as_int64() == 0);
  CHECK(none.at("cash_daily_effective_minor").as_int64() == 0);
}

TEST_CASE("console refunds: listed for everyone, approved or declined once by an operator, refused for a viewer") {
  Fixture f;
  auto held = f.make_held();
  auto viewer = f.sign_in(f.viewer_token);
  auto op = f.sign_in(f.operator_token);
  // Two approved purchases of TERM0001 (held, then approved by the operator).
  auto l = f.env.svc->issue_list(held.n, "setup");
  REQUIRE(l);
  auto second = backend::test::card_request("TXN-HELD-2", held.n, Algorithm::des3, l->first, 0, l->second[0], Ch{});
  REQUIRE(f.env.svc->authorize(second, "TERM0001"));
  for (const char* txn : {"TXN-HELD-1", "TXN-HELD-2"})
    REQUIRE(f.as(op, "POST", std::string("/console/api/held/") + txn + "/approve").status == 200);
  REQUIRE(f.env.svc->request_refund("TXN-HELD-1", 500, "TERM0001"));
  REQUIRE(f.env.svc->request_refund("TXN-HELD-2", 1234, "TERM0001"));

  auto listed = f.as(viewer, "GET", "/console/api/refunds");
  INFO(listed.body);
  REQUIRE(listed.status == 200);
  auto list = body_of(listed).at("refunds").as_array();
  REQUIRE(list.size() == 2);
  CHECK(list[0].at("state") == "pending");
  CHECK(list[0].at("terminal") == "TERM0001");

  // A viewer may look but not decide; nothing changes.
  auto denied = f.as(viewer, "POST", "/console/api/refunds/TXN-HELD-1/approve");
  CHECK(denied.status == 403);
  CHECK(body_of(denied).at("error") == "forbidden");
  CHECK(f.env.svc->refund("TXN-HELD-1")->state == RefundState::pending);
  // Without the session's CSRF token an operator is refused too.
  CHECK(f.as(op, "POST", "/console/api/refunds/TXN-HELD-1/approve", {}, false).status == 403);
  CHECK(f.as(op, "POST", "/console/api/refunds/TXN-HELD-1/refund").status == 404);

  auto approved = f.as(op, "POST", "/console/api/refunds/TXN-HELD-1/approve");
  REQUIRE(approved.status == 200);
  CHECK(body_of(approved).at("state") == "approved");
  CHECK(body_of(approved).at("decided_by") == "otto");
  auto declined = f.as(op, "POST", "/console/api/refunds/TXN-HELD-2/decline");
  REQUIRE(declined.status == 200);
  CHECK(body_of(declined).at("state") == "declined");
  CHECK(f.env.svc->refund("TXN-HELD-1")->state == RefundState::approved);
  CHECK(f.env.svc->refund("TXN-HELD-2")->state == RefundState::declined);
  // Decided once: a second decision either way is refused, and the first one stands.
  CHECK(f.as(op, "POST", "/console/api/refunds/TXN-HELD-1/decline").status == 409);
  CHECK(f.as(op, "POST", "/console/api/refunds/TXN-HELD-2/approve").status == 409);
  CHECK(f.as(op, "POST", "/console/api/refunds/NOPE/approve").status == 404);
  CHECK(f.env.svc->refund("TXN-HELD-1")->state == RefundState::approved);
  CHECK(body_of(f.as(viewer, "GET", "/console/api/refunds")).at("refunds").as_array().empty());

  // The transaction's detail and the audit log show both decisions.
  CHECK(body_of(f.as(op, "GET", "/console/api/transactions/TXN-HELD-1")).at("refund") == "500 (minor units), approved by otto");
  CHECK(body_of(f.as(op, "GET", "/console/api/transactions/TXN-HELD-2")).at("refund") == "1234 (minor units), declined by otto");
  auto audit = body_of(f.as(viewer, "GET", "/console/api/audit?limit=2")).at("entries").as_array();
  REQUIRE(audit.size() == 2);
  CHECK(audit[0].at("action") == "refund_decline");
  CHECK(audit[1].at("action") == "refund_approve");
  CHECK(audit[0].at("actor") == "otto");
  // /metrics counts them (otac_settlements_total{kind="refund",state=...}).
  auto m = f.env.svc->metrics();
  REQUIRE(m);
  CHECK(m->settlements["refund/requested"] == 2);
  CHECK(m->settlements["refund/approved"] == 1);
  CHECK(m->settlements["refund/declined"] == 1);
}
