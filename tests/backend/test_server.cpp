// otac-backend over real HTTPS: first start, health and metrics, client certificates, bearer
// roles, strict request parsing, the 32+-request race on one code, held + long-poll, and the
// otac-admin command line.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include <netinet/in.h>
#include <sys/socket.h>

#include "pki.hpp"
#include "router.hpp"
#include "server_fixture.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::test;
namespace json = boost::json;
using Verb = boost::beast::http::verb;

namespace {

// Runs otac-admin against b with the admin token: {exit status, standard output}.
std::pair<int, std::string> run_admin(const Backend& b, std::vector<std::string> args) {
  const auto out = b.tmp.path / "admin.out";
  std::vector<std::string> argv = {OTAC_ADMIN_BIN, "--url", "https://127.0.0.1:" + std::to_string(b.port), "--ca",
                                   (b.dir / "ca.pem").string(), "--token-file", (b.dir / "admin.token").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::filesystem::remove(out);
  const int rc = run_program(argv, out);
  return std::make_pair(rc, slurp(out));
}

struct Ready {
  Backend b;
  std::filesystem::path cert, key;
  Bytes n;
  SecretBytes k;
  std::uint16_t list = 0;

  explicit Ready(const std::string& enroll_body = R"({"msisdn":"+4915550001"})") {
    b.start();
    std::tie(cert, key) = b.register_terminal("TERM0001");
    std::tie(n, k) = b.enroll(enroll_body);
    auto r = Backend::call(b.admin(), Verb::post, "/v1/admin/cards/" + to_hex(n) + "/refresh");
    REQUIRE(r.status == 200);
    list = static_cast<std::uint16_t>(std::stoi(field(r.body, "list")));
  }
  AuthRequest request(const std::string& txn, std::uint16_t index, const Ch& ch = Ch{}) {
    return card_request(txn, n, Algorithm::des3, list, index, b.otac(n, list, index), ch);
  }
};

}  // namespace

TEST_CASE("service errors: a token out for now is 503 with Retry-After and its detail only in the log line", "[server]") {
  http::Request req{Verb::post, "/v1/authorizations", 11};
  const std::string detail = "PKCS#11 token 'otac' is unavailable since 12 ms (CKR_DEVICE_REMOVED)";
  {
    http::RequestContext ctx;
    const auto r = http::service_error(req, ctx, make_error(Errc::unavailable, detail));
    CHECK(r.result() == http::Status::service_unavailable);
    CHECK(r[boost::beast::http::field::retry_after] == "1");
    CHECK(field(r.body(), "error") == "unavailable");
    CHECK(r.body().find("PKCS#11") == std::string::npos);
    CHECK(ctx.log["error"] == detail);
  }
  {  // the same thrown through the store (a key sealed inside a row's binding) keeps its status
    http::RequestContext ctx;
    const auto r = http::Router::guarded(req, ctx, [&]() -> http::Response { throw Failure(make_error(Errc::unavailable, detail)); });
    CHECK(r.result() == http::Status::service_unavailable);
    CHECK(ctx.log["error"] == detail);
  }
  {  // anything else the server failed at: 500, detail in the log line
    http::RequestContext ctx;
    const auto r = http::service_error(req, ctx, make_error(Errc::io, "disk I/O error"));
    CHECK(r.result() == http::Status::internal_server_error);
    CHECK(r.body().find("disk") == std::string::npos);
    CHECK(ctx.log["error"] == "disk I/O error");
  }
  {  // the caller's own mistakes keep their message, and the log line stays short
    http::RequestContext ctx;
    const auto r = http::service_error(req, ctx, make_error(Errc::conflict, "txn_id T-1 was used with a different request"));
    CHECK(r.result() == http::Status::conflict);
    CHECK(r.body().find("different request") != std::string::npos);
    CHECK(ctx.log.count("error") == 0);
    CHECK(r.count(boost::beast::http::field::retry_after) == 0);
  }
}

TEST_CASE("first start creates CA, certificates, token, KEK and config, healthz and metrics over TLS", "[server]") {
  Backend b;
  b.start();
  for (const char* f : {"ca.pem", "ca.key", "server.pem", "server.key", "admin.token", "kek.bin", "otac.db",
                        "otac-backend.conf", "mo.secret"}) {
    INFO(f);
    CHECK(std::filesystem::exists(b.dir / f));
  }
  for (const char* f : {"ca.key", "server.key", "admin.token", "kek.bin", "mo.secret"}) {
    INFO(f);
    const auto perms = std::filesystem::status(b.dir / f).permissions();
    CHECK((perms & (std::filesystem::perms::group_all | std::filesystem::perms::others_all)) == std::filesystem::perms::none);
  }
  CHECK(b.log().find("event=first_start") != std::string::npos);
  CHECK(b.log().find("event=created file=") != std::string::npos);
  auto h = Backend::call(b.client(), Verb::get, "/healthz");
  CHECK(h.status == 200);
  CHECK(field(h.body, "status") == "ok");
  auto m = Backend::call(b.client(), Verb::get, "/metrics");
  CHECK(m.status == 200);
  CHECK(m.body.find("otac_http_requests_total{method=\"GET\",status=\"200\"}") != std::string::npos);
  CHECK(m.body.find("otac_http_request_duration_seconds_bucket{le=\"+Inf\"}") != std::string::npos);
  CHECK(m.body.find("otac_sms_queue_depth 0") != std::string::npos);
  // The admin token never appears in the log.
  CHECK(b.log().find(b.admin_token()) == std::string::npos);
  // A second start reuses everything (same CA) and SIGTERM ends it with status 0.
  const std::string ca = slurp(b.dir / "ca.pem");
  CHECK(b.stop() == 0);
  b.start();
  CHECK(slurp(b.dir / "ca.pem") == ca);
  CHECK(Backend::call(b.client(), Verb::get, "/healthz").status == 200);
}

TEST_CASE("the server certificate is checked against the pinned CA only", "[server]") {
  Backend b;
  b.start();
  Backend other;
  other.start();
  auto c = b.client();
  c.ca_file = other.dir / "ca.pem";  // a different CA: the client must refuse the server
  auto r = net::request_once(c, Verb::get, "/healthz");
  CHECK_FALSE(r.ok());
}

TEST_CASE("terminal endpoints need a client certificate of a registered, enabled terminal", "[server]") {
  Ready env;
  Backend& b = env.b;
  const std::string body = auth_body(env.request("T-cert-1", 0));

  // No client certificate: 401.
  auto r = Backend::call(b.client(), Verb::post, "/v1/authorizations", body);
  CHECK(r.status == 401);
  CHECK(field(r.body, "error") == "client_certificate_required");

  // A certificate from another CA: the TLS handshake fails (the server verifies the chain).
  auto foreign_ca = pki::make_ca("foreign", 1).value();
  auto foreign = pki::issue_client(foreign_ca, "TERM0001", 1).value();
  const auto fc = b.tmp.path / "foreign.pem";
  const auto fk = b.tmp.path / "foreign.key";
  std::ofstream(fc) << foreign.cert_pem;
  std::ofstream(fk) << foreign.key_pem;
  auto fr = net::request_once(b.terminal(fc, fk), Verb::post, "/v1/authorizations", body);
  CHECK_FALSE(fr.ok());

  // Our CA but an unregistered terminal id: 403.
  pki::KeyCert ca{slurp(b.dir / "ca.key"), slurp(b.dir / "ca.pem")};
  auto stranger = pki::issue_client(ca, "TERM0099", 1).value();
  const auto sc = b.tmp.path / "stranger.pem";
  const auto sk = b.tmp.path / "stranger.key";
  std::ofstream(sc) << stranger.cert_pem;
  std::ofstream(sk) << stranger.key_pem;
  r = Backend::call(b.terminal(sc, sk), Verb::post, "/v1/authorizations", body);
  CHECK(r.status == 403);
  CHECK(field(r.body, "error") == "unknown_terminal");

  // Our CA, the right CN, but not the certificate registered for it: 403.
  auto twin = pki::issue_client(ca, "TERM0001", 1).value();
  const auto tc = b.tmp.path / "twin.pem";
  const auto tk = b.tmp.path / "twin.key";
  std::ofstream(tc) << twin.cert_pem;
  std::ofstream(tk) << twin.key_pem;
  r = Backend::call(b.terminal(tc, tk), Verb::post, "/v1/authorizations", body);
  CHECK(r.status == 403);
  CHECK(field(r.body, "error") == "certificate_replaced");

  // The registered certificate: approved.
  r = Backend::call(b.terminal(env.cert, env.key), Verb::post, "/v1/authorizations", body);
  REQUIRE(r.status == 200);
  CHECK(field(r.body, "decision") == "approved");
  CHECK(field(r.body, "arc") == "3030");
  CHECK(field(r.body, "arpc").size() == 16);

  // Revoked: 403 from then on.
  r = Backend::call(b.admin(), Verb::post, "/v1/admin/terminals/TERM0001/revoke");
  CHECK(r.status == 200);
  r = Backend::call(b.terminal(env.cert, env.key), Verb::post, "/v1/authorizations", auth_body(env.request("T-cert-2", 1)));
  CHECK(r.status == 403);
  CHECK(field(r.body, "error") == "terminal_revoked");
}

TEST_CASE("a certificate whose CN is not the challenge's 9F1C is refused", "[server]") {
  Ready env;
  auto [c2, k2] = env.b.register_terminal("TERM0002");
  auto r = Backend::call(env.b.terminal(c2, k2), Verb::post, "/v1/authorizations", auth_body(env.request("T-cn-1", 0)));
  CHECK(r.status == 403);
}

TEST_CASE("malformed requests get 4xx with a message and the server keeps working", "[server]") {
  Ready env;
  Backend& b = env.b;
  auto t = b.terminal(env.cert, env.key);
  const AuthRequest good = env.request("T-bad-0", 0);
  json::object base = json::parse(auth_body(good)).as_object();
  auto with = [&](const char* key, json::value v) {
    json::object o = base;
    o[key] = std::move(v);
    return json::serialize(o);
  };
  auto without = [&](const char* key) {
    json::object o = base;
    o.erase(key);
    return json::serialize(o);
  };
  struct Case {
    const char* name;
    std::string body;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"not JSON", "{\"txn_id\": ", "not valid JSON"},
      {"array", "[1,2]", "JSON object"},
      {"empty", "", "JSON object"},
      {"unknown field", with("amount", 5), "unknown field \\\"amount\\\""},
      {"wrong type", with("list", "3"), "list\\\" must be an integer"},
      {"out of range", with("index", 70000), "index\\\" must be an integer"},
      {"negative", with("atc", -1), "atc\\\" must be an integer"},
      {"bad hex", with("card", "00112233445566zz"), "hex digits"},
      {"odd hex", with("cryptogram", "0011223344556"), "not valid hex"},
      {"short card", with("card", "0011"), "must be 8 bytes"},
      {"missing", without("cryptogram"), "missing field \\\"cryptogram\\\""},
      {"bad txn id", with("txn_id", "a b"), "txn_id"},
      {"deep", "{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}", ""},
      // Strict JSON: a repeated field is an error, not "the last one wins".
      {"duplicate", auth_body(good).insert(1, "\"list\":7,"), "duplicate field \\\"list\\\""},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = Backend::call(t, Verb::post, "/v1/authorizations", c.body);
    CHECK(r.status == 400);
    CHECK(r.body.find(c.needle) != std::string::npos);
  }
  // Oversized body: 413.
  auto big = Backend::call(t, Verb::post, "/v1/authorizations", std::string(200 * 1024, 'x'));
  CHECK(big.status == 413);
  // Unknown path and wrong method.
  CHECK(Backend::call(t, Verb::get, "/v1/nothing").status == 404);
  CHECK(Backend::call(t, Verb::get, "/v1/authorizations").status == 405);
  // Long-poll parameter checks.
  CHECK(Backend::call(t, Verb::get, "/v1/authorizations/T-bad-0?wait=abc").status == 400);
  CHECK(Backend::call(t, Verb::get, "/v1/authorizations/T-bad-0?wait=999").status == 400);
  CHECK(Backend::call(t, Verb::get, "/v1/authorizations/T-bad-0?x=1").status == 400);
  CHECK(Backend::call(t, Verb::get, "/v1/authorizations/T-never").status == 404);
  // Display codes: strict too.
  CHECK(Backend::call(t, Verb::post, "/v1/codes/verify", R"({"txn_id":"C1","card":"0011223344556677","code":"12ab5678"})").status == 400);
  CHECK(Backend::call(t, Verb::post, "/v1/codes/verify", R"({"txn_id":"C1","card":"0011223344556677","code":"12345678","x":1})").status == 400);
  // Admin: no token 401, bad token 401, viewer on an operator endpoint 403, bad bodies 400.
  auto anon = b.client();
  CHECK(Backend::call(anon, Verb::get, "/v1/admin/whoami").status == 401);
  auto bad = b.client();
  bad.bearer = "otac_nope";
  CHECK(Backend::call(bad, Verb::get, "/v1/admin/whoami").status == 401);
  auto op = Backend::call(b.admin(), Verb::post, "/v1/admin/operators", R"({"name":"vic","role":"viewer"})");
  REQUIRE(op.status == 201);
  auto viewer = b.client();
  viewer.bearer = field(op.body, "token");
  CHECK(Backend::call(viewer, Verb::get, "/v1/admin/whoami").status == 200);
  CHECK(Backend::call(viewer, Verb::post, "/v1/admin/cards/" + to_hex(env.n) + "/block").status == 403);
  CHECK(Backend::call(viewer, Verb::get, "/v1/admin/transactions").status == 200);
  CHECK(Backend::call(b.admin(), Verb::post, "/v1/admin/cards", R"({"algorithm":"rsa","msisdn":"+1"})").status == 400);
  CHECK(Backend::call(b.admin(), Verb::post, "/v1/admin/cards", R"({"msisdn":"+1","colour":"red"})").status == 400);
  const auto nested = Backend::call(b.admin(), Verb::post, "/v1/admin/cards", R"({"msisdn":"+1","doors":[{"door":"A","door":"B"}]})");
  CHECK(nested.status == 400);  // duplicates are refused at every depth
  CHECK(nested.body.find("duplicate field") != std::string::npos);
  CHECK(Backend::call(b.admin(), Verb::post, "/v1/admin/terminals", R"({"id":"short"})").status == 400);
  CHECK(Backend::call(b.admin(), Verb::post, "/v1/admin/operators", R"({"name":"x","role":"god"})").status == 400);
  CHECK(Backend::call(b.admin(), Verb::get, "/v1/admin/transactions?decision=maybe").status == 400);
  CHECK(Backend::call(b.admin(), Verb::get, "/v1/admin/cards/xyz").status == 400);
  CHECK(Backend::call(b.admin(), Verb::post, "/v1/admin/cards/" + to_hex(env.n) + "/block", "{\"why\":1}").status == 400);
  // Raw garbage on the TLS port, then the server still answers.
  CHECK(Backend::call(b.client(), Verb::get, "/healthz").status == 200);
  auto good_r = Backend::call(t, Verb::post, "/v1/authorizations", auth_body(good));
  CHECK(good_r.status == 200);
  CHECK(field(good_r.body, "decision") == "approved");
  // No secret (token, OTAC-derived values are fine) in the log; every request logged once.
  const std::string log = b.log();
  CHECK(log.find(b.admin_token()) == std::string::npos);
  CHECK(log.find(field(op.body, "token")) == std::string::npos);
  CHECK(log.find("path=/v1/authorizations status=413") != std::string::npos);
}

TEST_CASE("race: 40 concurrent HTTPS requests with the same valid cryptogram, exactly one approval", "[server][race]") {
  Ready env;
  const AuthRequest base = env.request("unused", 5);
  const auto tc = env.b.terminal(env.cert, env.key);
  constexpr int kThreads = 40;
  std::vector<net::Response> replies(kThreads);
  std::vector<std::string> errors(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      AuthRequest a = base.cryptogram.empty() ? AuthRequest{} : base;
      a.txn_id = "RACE-" + std::to_string(i);
      ready.fetch_add(1);
      for (int spin = 0; spin < 2000 && ready.load() < kThreads; ++spin) std::this_thread::sleep_for(std::chrono::microseconds(500));
      auto r = net::request_once(tc, Verb::post, "/v1/authorizations", auth_body(a));
      if (r) replies[static_cast<std::size_t>(i)] = *r;
      else errors[static_cast<std::size_t>(i)] = r.error().message;
    });
  }
  for (auto& t : threads) t.join();
  int approved = 0, used = 0;
  for (int i = 0; i < kThreads; ++i) {
    INFO(errors[static_cast<std::size_t>(i)]);
    const auto& r = replies[static_cast<std::size_t>(i)];
    REQUIRE(r.status == 200);
    const std::string d = field(r.body, "decision");
    if (d == "approved") ++approved;
    else if (d == "declined" && field(r.body, "reason") == "code_used") ++used;
  }
  CHECK(approved == 1);
  CHECK(used == kThreads - 1);
  // The store agrees: one approved transaction for this card.
  auto list = Backend::call(env.b.admin(), Verb::get, "/v1/admin/transactions?decision=approved&card=" + to_hex(env.n));
  CHECK(json::parse(list.body).as_object().at("transactions").as_array().size() == 1);
  // Metrics count decisions by reason.
  auto m = Backend::call(env.b.client(), Verb::get, "/metrics");
  CHECK(m.body.find("otac_decisions_total{decision=\"approved\",reason=\"ok\"} 1") != std::string::npos);
  CHECK(m.body.find("otac_decisions_total{decision=\"declined\",reason=\"code_used\"} " + std::to_string(kThreads - 1)) !=
        std::string::npos);
}

TEST_CASE("idempotent retries: same txn and body get the same answer, a different body 409", "[server]") {
  Ready env;
  auto t = env.b.terminal(env.cert, env.key);
  const AuthRequest a = env.request("T-idem", 2);
  auto r1 = Backend::call(t, Verb::post, "/v1/authorizations", auth_body(a));
  auto r2 = Backend::call(t, Verb::post, "/v1/authorizations", auth_body(a));
  REQUIRE(r1.status == 200);
  CHECK(r1.body == r2.body);
  AuthRequest other = env.request("T-idem", 3);
  CHECK(Backend::call(t, Verb::post, "/v1/authorizations", auth_body(other)).status == 409);
  auto g = Backend::call(t, Verb::get, "/v1/authorizations/T-idem");
  CHECK(field(g.body, "decision") == "approved");
  CHECK(field(g.body, "auth_code") == field(r1.body, "auth_code"));
  // Another terminal cannot read it; an operator can.
  auto [c2, k2] = env.b.register_terminal("TERM0002");
  CHECK(Backend::call(env.b.terminal(c2, k2), Verb::get, "/v1/authorizations/T-idem").status == 404);
  auto adm = Backend::call(env.b.admin(), Verb::get, "/v1/admin/transactions/T-idem");
  CHECK(adm.status == 200);
  CHECK(field(adm.body, "terminal") == "TERM0001");
  CHECK(field(adm.body, "auth_code") == field(r1.body, "auth_code"));
}

TEST_CASE("held for review: the long-poll returns as soon as an operator approves", "[server]") {
  Ready env(R"({"msisdn":"+4915550002","review_minor":100})");
  auto t = env.b.terminal(env.cert, env.key);
  auto r = Backend::call(t, Verb::post, "/v1/authorizations", auth_body(env.request("T-held", 0)));
  REQUIRE(r.status == 200);
  REQUIRE(field(r.body, "decision") == "held");
  CHECK(field(r.body, "arc") == "3139");
  // A short wait while still held returns held.
  auto w0 = Backend::call(t, Verb::get, "/v1/authorizations/T-held?wait=1");
  CHECK(field(w0.body, "decision") == "held");

  net::Response polled;
  std::chrono::steady_clock::duration took{};
  std::thread poller([&] {
    const auto t0 = std::chrono::steady_clock::now();
    polled = Backend::call(t, Verb::get, "/v1/authorizations/T-held?wait=20");
    took = std::chrono::steady_clock::now() - t0;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  // Other requests are served while the long-poll waits.
  for (int i = 0; i < 5; ++i) CHECK(Backend::call(env.b.client(), Verb::get, "/healthz").status == 200);
  auto d = Backend::call(env.b.admin(), Verb::post, "/v1/admin/transactions/T-held/approve");
  CHECK(d.status == 200);
  poller.join();
  CHECK(field(polled.body, "decision") == "approved");
  CHECK(took < std::chrono::seconds(10));
  // Deciding twice is refused.
  CHECK(Backend::call(env.b.admin(), Verb::post, "/v1/admin/transactions/T-held/decline").status >= 400);
}

TEST_CASE("otac-admin refuses a token file that the group or others can read", "[server][admin]") {
  Backend b;
  b.start();
  namespace fs = std::filesystem;
  const fs::path tok = b.tmp.path / "copied.token";
  fs::copy_file(b.dir / "admin.token", tok);
  auto run = [&](fs::perms mode) {
    fs::permissions(tok, mode, fs::perm_options::replace);
    const auto out = b.tmp.path / "admin-mode.out";
    fs::remove(out);
    const int rc = run_program({OTAC_ADMIN_BIN, "--url", "https://127.0.0.1:" + std::to_string(b.port), "--ca",
                                (b.dir / "ca.pem").string(), "--token-file", tok.string(), "whoami"},
                               out);
    return std::make_pair(rc, slurp(out));
  };
  using P = fs::perms;
  for (P mode : {P::owner_read | P::owner_write | P::group_read | P::others_read, P::owner_read | P::group_read,
                 P::owner_read | P::others_read, P::owner_read | P::owner_write | P::group_write}) {
    auto [rc, text] = run(mode);
    INFO(text);
    CHECK(rc == 2);
    CHECK(text.find("must not be accessible by group or others") != std::string::npos);
    CHECK(text.find("chmod 600") != std::string::npos);
  }
  auto [rc, text] = run(P::owner_read | P::owner_write);
  INFO(text);
  CHECK(rc == 0);
}

TEST_CASE("otac-backend names its threads as top -H and perf show them", "[server]") {
  Backend b;
  b.start();
  // A blocking handler runs on a worker thread, which takes its name from its first handler.
  REQUIRE(Backend::call(b.admin(), Verb::get, "/v1/admin/transactions").status == 200);
  std::multiset<std::string> names;
  for (const auto& t : std::filesystem::directory_iterator("/proc/" + std::to_string(b.pid) + "/task")) {
    names.insert(chomp(slurp(t.path() / "comm")));
  }
  INFO([&] {
    std::string all;
    for (const auto& n : names) all += n + " ";
    return all;
  }());
  CHECK(names.count("otac-commit") == 1);
  CHECK(names.count("otac-sync") == 1);
  CHECK(names.count("otac-checkpoint") == 1);
  CHECK(names.count("otac-net") >= 1);
  CHECK(names.count("otac-worker") >= 1);
}

TEST_CASE("otac-loadgen writes its terminal key readable by the owner only", "[server][bench]") {
  Backend b;
  b.start();
  namespace fs = std::filesystem;
  const auto out = b.tmp.path / "loadgen.out";
  const int rc = run_program({OTAC_LOADGEN_BIN, "--data-dir", b.dir.string(), "--url",
                              "https://127.0.0.1:" + std::to_string(b.port), "--codes", "4", "--seconds", "1",
                              "--connections", "1"},
                             out);
  INFO(slurp(out));
  REQUIRE(rc == 0);
  int keys = 0;
  for (const auto& e : fs::directory_iterator(b.dir)) {
    if (e.path().extension() != ".key" || !e.path().filename().string().starts_with("loadgen-")) continue;
    ++keys;
    INFO(e.path());
    CHECK((e.status().permissions() & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
    CHECK(slurp(e.path()).find("PRIVATE KEY") != std::string::npos);
  }
  CHECK(keys == 1);
}

TEST_CASE("otac-loadgen counts only approved authorizations as throughput, every other answer as an error",
          "[server][bench]") {
  // The backend declines every purchase above 10.00 (max_amount_minor); the loadgen's requests
  // are for 12.34, so each answer is HTTP 200 with "decision":"declined".
  Backend b;
  b.start("max_amount_minor = 1000\n");
  const auto out = b.tmp.path / "loadgen.out";
  const int rc = run_program({OTAC_LOADGEN_BIN, "--data-dir", b.dir.string(), "--url",
                              "https://127.0.0.1:" + std::to_string(b.port), "--codes", "4", "--seconds", "1",
                              "--connections", "1", "--no-healthz"},
                             out);
  const std::string text = slurp(out);
  INFO(text);
  CHECK(rc == 1);
  CHECK(text.find("phase=authorize ") != std::string::npos);
  CHECK(text.find(" ok=0 errors=4") != std::string::npos);
  CHECK(text.find("approved 0") != std::string::npos);
}

TEST_CASE("otac-loadgen --latency-log writes each authorization's start on the monotonic clock and its latency in start order",
          "[server][bench]") {
  Backend b;
  b.start();
  const auto out = b.tmp.path / "loadgen.out";
  const auto log = b.tmp.path / "latency.log";
  const auto ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  const auto before = ns();
  const int rc = run_program({OTAC_LOADGEN_BIN, "--data-dir", b.dir.string(), "--url",
                              "https://127.0.0.1:" + std::to_string(b.port), "--codes", "6", "--seconds", "2",
                              "--connections", "2", "--no-healthz", "--latency-log", log.string()},
                             out);
  const auto after = ns();
  INFO(slurp(out));
  REQUIRE(rc == 0);
  std::istringstream lines(slurp(log));
  std::string line;
  long long last_start = 0;
  int n = 0;
  while (std::getline(lines, line)) {
    INFO(line);
    long long start = 0, latency = 0;
    char extra = 0;
    REQUIRE(std::sscanf(line.c_str(), "%lld %lld%c", &start, &latency, &extra) == 2);
    CHECK(start >= before);
    CHECK(start + latency <= after);
    CHECK(latency > 0);
    CHECK(start >= last_start);
    last_start = start;
    ++n;
  }
  CHECK(n == 6);  // every prepared authorization was sent, and each has its line
}

TEST_CASE("otac-admin drives every operator action, exit statuses 0/1/2", "[server][admin]") {
  Backend b;
  b.start();
  auto admin = [&](std::vector<std::string> args) { return run_admin(b, std::move(args)); };
  auto [rc, text] = admin({"--json", "enroll", "--msisdn", "+4915550003", "--alg", "aes"});
  REQUIRE(rc == 0);
  auto e = json::parse(text).as_object();
  const std::string n = std::string(e.at("n").as_string());
  CHECK(std::string(e.at("k").as_string()).size() == 32);
  CHECK(std::string(e.at("letter").as_string()).find("Server SMS number") != std::string::npos);

  std::tie(rc, text) = admin({"enroll", "--msisdn", "+4915550004"});
  CHECK(rc == 0);
  CHECK(text.find("Card key K:") != std::string::npos);
  // Numbers: a usage error (2) that names the option, whatever is wrong with the digits.
  for (const char* bad : {"abc", "-1", "12x", " 7", "99999999999999999999"}) {
    INFO(bad);
    std::tie(rc, text) = admin({"enroll", "--msisdn", "+4915550005", "--threshold", bad});
    CHECK(rc == 2);
    CHECK(text.find("--threshold") != std::string::npos);
    CHECK(text.find("not a whole number") != std::string::npos);
  }

  std::tie(rc, text) = admin({"register-terminal", "DOOR0001", "--out", (b.tmp.path / "certs").string()});
  CHECK(rc == 0);
  CHECK(std::filesystem::exists(b.tmp.path / "certs" / "DOOR0001.pem"));
  CHECK(std::filesystem::exists(b.tmp.path / "certs" / "DOOR0001.key"));
  // The issued certificate works as a client certificate.
  auto tr = Backend::call(b.terminal(b.tmp.path / "certs" / "DOOR0001.pem", b.tmp.path / "certs" / "DOOR0001.key"), Verb::get,
                          "/v1/authorizations/none");
  CHECK(tr.status == 404);

  for (const char* cmd : {"block", "unblock", "refresh", "rotate-key"}) {
    INFO(cmd);
    std::tie(rc, text) = admin({cmd, n});
    CHECK(rc == 0);
  }
  std::tie(rc, text) = admin({"--json", "card", n});
  CHECK(rc == 0);
  CHECK(json::parse(text).as_object().at("key_rotation_pending").as_bool());
  CHECK(text.find("\"k\"") == std::string::npos);

  // Card CA, server key (E4) and signature key (E3): the CA point is the same in the enroll
  // answer, the letter, `card-ca` and DATA_DIR/card-ca.pub.
  const std::string ca_point = std::string(e.at("ca_point").as_string());
  CHECK(ca_point.size() == 130);
  CHECK(std::string(e.at("letter").as_string()).find("Card CA key: " + ca_point) != std::string::npos);
  std::tie(rc, text) = admin({"card-ca"});
  CHECK(rc == 0);
  CHECK(text == ca_point + "\n");
  CHECK(slurp(b.dir / "card-ca.pub") == ca_point + "\n");
  for (const char* cmd : {"install-server-key", "set-signature-key"}) {
    INFO(cmd);
    std::tie(rc, text) = admin({cmd, n});
    CHECK(rc == 0);
  }
  std::tie(rc, text) = admin({"--json", "card", n});
  CHECK(rc == 0);
  CHECK(json::parse(text).as_object().at("signature_key").as_string() == "pending");
  CHECK_FALSE(json::parse(text).as_object().at("server_key_confirmed").as_bool());
  std::tie(rc, text) = admin({"set-signature-key", "0000000000000000"});
  CHECK(rc == 1);
  std::tie(rc, text) = admin({"--json", "enroll", "--msisdn", "+4915550005", "--public-key", "3000"});
  CHECK(rc == 1);  // not a key the card could have made

  std::tie(rc, text) = admin({"--json", "create-operator", "olga", "--role", "operator"});
  CHECK(rc == 0);
  std::tie(rc, text) = admin({"transactions", "--decision", "held"});
  CHECK(rc == 0);
  std::tie(rc, text) = admin({"audit"});
  CHECK(rc == 0);
  CHECK(text.find("register_terminal") != std::string::npos);
  std::tie(rc, text) = admin({"--json", "audit", "--verify"});
  CHECK(rc == 0);
  CHECK(json::parse(text).as_object().at("ok").as_bool());
  std::tie(rc, text) = admin({"revoke-terminal", "DOOR0001"});
  CHECK(rc == 0);
  std::tie(rc, text) = admin({"approve", "NO-SUCH-TXN"});
  CHECK(rc == 1);
  std::tie(rc, text) = admin({"block", "00"});
  CHECK(rc == 1);
  std::tie(rc, text) = admin({"frobnicate"});
  CHECK(rc == 2);
  std::tie(rc, text) = admin({"enroll", "--colour", "red"});
  CHECK(rc == 2);
}

TEST_CASE("crash: kill -9 under load, restart, every approval a terminal saw is stored, no code twice, no SMS lost",
          "[server][crash]") {
  Ready env;
  Backend& b = env.b;
  auto t = b.terminal(env.cert, env.key);
  // Precompute requests: 60 codes, each presented twice under different txn ids.
  std::vector<AuthRequest> reqs;
  for (std::uint16_t i = 0; i < 60; ++i) {
    for (int dup = 0; dup < 2; ++dup) reqs.push_back(env.request("CRASH-" + std::to_string(i) + "-" + std::to_string(dup), i));
  }
  const auto outbox_before = [&] {
    std::vector<std::pair<Bytes, Bytes>> v;
    auto s = b.store();
    REQUIRE(s->run([&](Tx& tx) -> Result<void> {
      for (std::int64_t id = 1; id < 1000; ++id) {
        auto m = tx.sms(id);
        if (!m) break;
        v.emplace_back(m->udh, m->payload);
      }
      return {};
    }));
    return v;
  }();
  REQUIRE(!outbox_before.empty());

  std::mutex mu;
  std::map<std::string, std::string> seen_approved;  // txn -> auth code
  std::atomic<std::size_t> next{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int w = 0; w < 8; ++w) {
    workers.emplace_back([&] {
      for (int guard = 0; guard < 1000 && !stop.load(); ++guard) {
        const std::size_t i = next.fetch_add(1);
        if (i >= reqs.size()) return;
        auto r = net::request_once(t, Verb::post, "/v1/authorizations", auth_body(reqs[i]));
        if (!r) continue;  // the server died under us: the terminal saw nothing
        if (r->status == 200 && field(r->body, "decision") == "approved") {
          std::lock_guard lock(mu);
          seen_approved[reqs[i].txn_id] = field(r->body, "auth_code");
        }
      }
    });
  }
  // Kill once some approvals went through, in the middle of the load.
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard lock(mu);
      if (seen_approved.size() >= 10) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  b.kill9();
  stop = true;
  for (auto& w : workers) w.join();
  REQUIRE(seen_approved.size() >= 1);

  b.start();
  t = b.terminal(env.cert, env.key);  // new port after the restart
  // Every approval a terminal saw is stored with the same auth code.
  for (const auto& [txn, code] : seen_approved) {
    INFO(txn);
    auto g = Backend::call(t, Verb::get, "/v1/authorizations/" + txn);
    REQUIRE(g.status == 200);
    CHECK(field(g.body, "decision") == "approved");
    CHECK(field(g.body, "auth_code") == code);
  }
  // No code approved twice.
  auto list = Backend::call(b.admin(), Verb::get, "/v1/admin/transactions?decision=approved&limit=1000&card=" + to_hex(env.n));
  std::set<std::pair<std::int64_t, std::int64_t>> codes;
  const json::value listed = json::parse(list.body);  // keep alive through the loop
  for (const auto& tx : listed.as_object().at("transactions").as_array()) {
    const auto& o = tx.as_object();
    CHECK(codes.insert({o.at("list").as_int64(), o.at("index").as_int64()}).second);
  }
  CHECK(codes.size() >= seen_approved.size());
  // The queued SMS are all still there, unchanged.
  auto s = b.store();
  std::size_t same = 0;
  REQUIRE(s->run([&](Tx& tx) -> Result<void> {
    for (std::size_t i = 0; i < outbox_before.size(); ++i) {
      auto m = tx.sms(static_cast<std::int64_t>(i + 1));
      if (m && m->udh == outbox_before[i].first && m->payload == outbox_before[i].second) ++same;
    }
    return {};
  }));
  CHECK(same == outbox_before.size());
}

TEST_CASE("SIGTERM during a long-poll: the poll answers held and the server exits 0 promptly", "[server]") {
  Ready env(R"({"msisdn":"+4915550005","review_minor":100})");
  auto t = env.b.terminal(env.cert, env.key);
  auto r = Backend::call(t, Verb::post, "/v1/authorizations", auth_body(env.request("T-term", 0)));
  REQUIRE(field(r.body, "decision") == "held");
  std::optional<net::Response> polled;
  std::thread poller([&] {
    auto p = net::request_once(t, Verb::get, "/v1/authorizations/T-term?wait=25");
    if (p) polled = *p;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(env.b.stop() == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  poller.join();
  REQUIRE(polled.has_value());
  CHECK(field(polled->body, "decision") == "held");
}

TEST_CASE("otac-backend command line: --help 0, usage errors 2, a bad config 1 with the line named", "[server]") {
  TempDir d;
  const auto out = d.path / "out.txt";
  CHECK(run_program({OTAC_BACKEND_BIN, "--help"}, out) == 0);
  CHECK(slurp(out).find("SYNOPSIS") != std::string::npos);
  CHECK(run_program({OTAC_BACKEND_BIN}, out) == 2);
  CHECK(run_program({OTAC_BACKEND_BIN, "--data-dir", (d.path / "x").string(), "--bogus"}, out) == 2);
  CHECK(run_program({OTAC_BACKEND_BIN, "--data-dir", (d.path / "x").string(), "--mo-listen", "0.0.0.0:0"}, out) == 2);
  std::filesystem::create_directories(d.path / "y");
  std::ofstream(d.path / "y" / "otac-backend.conf") << "listen = \"127.0.0.1:0\"\nlist_size = 500\n";
  std::filesystem::remove(out);
  CHECK(run_program({OTAC_BACKEND_BIN, "--data-dir", (d.path / "y").string()}, out) == 1);
  CHECK(slurp(out).find("otac-backend.conf:2: list_size: ") != std::string::npos);
  std::ofstream(d.path / "y" / "otac-backend.conf") << "colour = \"red\"\n";
  CHECK(run_program({OTAC_BACKEND_BIN, "--data-dir", (d.path / "y").string()}, out) == 1);
}


TEST_CASE("card settings: the API and otac-admin card-set change an enrolled card, the next tap follows them",
          "[server][admin]") {
  Ready env;
  auto t = env.b.terminal(env.cert, env.key);
  const std::string path = "/v1/admin/cards/" + to_hex(env.n);
  auto card = Backend::call(env.b.admin(), Verb::get, path);
  REQUIRE(card.status == 200);
  CHECK(field(card.body, "currency") == "978");  // the default_currency (EUR)
  CHECK(field(card.body, "doors") == "[]");
  CHECK(field(Backend::call(t, Verb::post, "/v1/authorizations", auth_body(env.request("S-1", 0))).body, "reason") == "ok");
  card = Backend::call(env.b.admin(), Verb::get, path);  // the tap used a code: the state to keep

  // Roles: a viewer may read but not change; an operator may change.
  auto op = Backend::call(env.b.admin(), Verb::post, "/v1/admin/operators", R"({"name":"vic","role":"viewer"})");
  REQUIRE(op.status == 201);
  auto viewer = env.b.client();
  viewer.bearer = field(op.body, "token");
  CHECK(Backend::call(viewer, Verb::post, path + "/settings", R"({"limit_minor":1})").status == 403);
  CHECK(Backend::call(env.b.client(), Verb::post, path + "/settings", R"({"limit_minor":1})").status == 401);

  // Bad changes: 400 with a message, nothing changed.
  struct Bad { const char* body; const char* needle; };
  for (const Bad& c : {Bad{"{}", "no setting"}, Bad{R"({"limit_minor":-1})", "limit_minor"},
                       Bad{R"({"currency":"XYZ"})", "ISO 4217"}, Bad{R"({"currency":"999"})", "ISO 4217"},
                       Bad{R"({"colour":"red"})", "colour"},
                       Bad{R"({"doors":[{"door":"D","from_minute":600,"to_minute":600}]})", "empty"},
                       Bad{R"({"doors":[{"door":"D","tz":"Mars/Olympus"}]})", "time zone"},
                       Bad{R"({"doors":[{"door":"D","floor":3}]})", "floor"}}) {
    INFO(c.body);
    auto r = Backend::call(env.b.admin(), Verb::post, path + "/settings", c.body);
    CHECK(r.status == 400);
    CHECK(r.body.find(c.needle) != std::string::npos);
  }
  CHECK(Backend::call(env.b.admin(), Verb::post, "/v1/admin/cards/0000000000000000/settings", R"({"limit_minor":1})").status ==
        404);
  CHECK(Backend::call(env.b.admin(), Verb::get, path).body == card.body);

  auto r = Backend::call(env.b.admin(), Verb::post, path + "/settings",
                         R"({"review_minor":5000,"doors":[{"door":"NIGHT","from_minute":1320,"to_minute":360,"tz":"Europe/Berlin"}]})");
  REQUIRE(r.status == 200);
  CHECK(field(r.body, "review_minor") == "5000");
  CHECK(field(r.body, "doors") == R"([{"door":"NIGHT","from_minute":1320,"to_minute":360,"tz":"Europe/Berlin"}])");

  // otac-admin card-set: a limit below the next purchase (Ch{} is 12.34).
  auto admin = [&](std::vector<std::string> args) { return run_admin(env.b, std::move(args)); };
  auto [rc, text] = admin({"--json", "card-set", to_hex(env.n), "--limit", "1000", "--currency", "EUR", "--door",
                           "LAB@08:00-17:30@America/New_York", "--door", "HALL"});
  REQUIRE(rc == 0);
  CHECK(field(text, "limit_minor") == "1000");
  CHECK(field(text, "review_minor") == "5000");  // not named, unchanged
  CHECK(field(text, "doors") == R"([{"door":"HALL","from_minute":0,"to_minute":1440,"tz":"UTC"},)"
                                 R"({"door":"LAB","from_minute":480,"to_minute":1050,"tz":"America/New_York"}])");
  auto a = Backend::call(t, Verb::post, "/v1/authorizations", auth_body(env.request("S-2", 1)));
  CHECK(field(a.body, "decision") == "declined");
  CHECK(field(a.body, "reason") == "card_limit");

  std::tie(rc, text) = admin({"card-set", to_hex(env.n), "--no-doors", "--limit", "0"});
  CHECK(rc == 0);
  CHECK(field(Backend::call(env.b.admin(), Verb::get, path).body, "doors") == "[]");
  CHECK(field(Backend::call(t, Verb::post, "/v1/authorizations", auth_body(env.request("S-3", 2))).body, "reason") == "ok");

  // Usage errors exit 2, refusals 1.
  for (std::vector<std::string> args : {std::vector<std::string>{"card-set", to_hex(env.n)},
                                        {"card-set", to_hex(env.n), "--door", "X@8:00-9:00"},
                                        {"card-set", to_hex(env.n), "--door", "X@08:00"},
                                        {"card-set", to_hex(env.n), "--door", "X", "--no-doors"},
                                        {"card-set", to_hex(env.n), "--limit", "lots"}}) {
    CHECK(admin(args).first == 2);
  }
  CHECK(admin({"card-set", to_hex(env.n), "--currency", "XXX"}).first == 1);

  // Every change is audited with old and new values.
  auto log = Backend::call(env.b.admin(), Verb::get, "/v1/admin/audit?limit=1000");
  REQUIRE(log.status == 200);
  const json::value entries = json::parse(log.body);
  std::vector<std::string> details;
  for (const auto& e : entries.as_object().at("entries").as_array())
    if (e.as_object().at("action").as_string() == "card_settings") details.emplace_back(e.as_object().at("detail").as_string());
  REQUIRE(details.size() == 3);
  CHECK(details[0] == "card=" + to_hex(env.n) + " review_minor=0->5000 doors=[]->[NIGHT 22:00-06:00 Europe/Berlin]");
  CHECK(details[1] == "card=" + to_hex(env.n) +
                          " limit_minor=0->1000 doors=[NIGHT 22:00-06:00 Europe/Berlin]->"
                          "[HALL 00:00-24:00 UTC, LAB 08:00-17:30 America/New_York]");
  CHECK(details[2] == "card=" + to_hex(env.n) + " limit_minor=1000->0 doors=[HALL 00:00-24:00 UTC, LAB 08:00-17:30 America/New_York]->[]");

  // --cash-daily: the card's own daily cash limit; "default" gives it the backend's again.
  std::tie(rc, text) = admin({"--json", "card-set", to_hex(env.n), "--cash-daily", "25000"});
  CHECK(rc == 0);
  CHECK(field(text, "cash_daily_minor") == "25000");
  CHECK(field(text, "cash_daily_effective_minor") == "25000");
  std::tie(rc, text) = admin({"--json", "card-set", to_hex(env.n), "--cash-daily", "default"});
  CHECK(rc == 0);
  CHECK(field(text, "cash_daily_minor") == "null");
  CHECK(admin({"card-set", to_hex(env.n), "--cash-daily", "much"}).first == 2);
}
