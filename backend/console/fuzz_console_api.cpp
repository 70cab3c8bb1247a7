// libFuzzer target: the console's whole request path as otac-backend runs it. Raw request
// bytes go through Beast's parser (the server's header and body limits), then through the
// server's router with the operator API and the console installed exactly as otac-backend does
// (install_api, Console::install): target splitting, routing, the console's cookies, CSRF and
// JSON bodies, and its actions forwarded to /v1/admin/... with the operator's token, over a
// real Service on a temporary SQLite store. By the input's size modulo 4 the request also
// carries nothing, a fresh admin console session (cookie + CSRF token), the admin's bearer
// token, or both, so that the handlers behind authentication are reached. Nothing may throw,
// crash or hang, and every answer must be a valid HTTP status.
// Set TMPDIR to a tmpfs (/dev/shm) for speed: every action is a durable SQLite commit.
#include <unistd.h>

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "api.hpp"
#include "console.hpp"
#include "sqlite_store.hpp"

using namespace otac;
using namespace otac::backend;
namespace bhttp = boost::beast::http;

namespace {

struct World {
  std::filesystem::path dir;
  std::shared_ptr<const Kek> kek;
  std::unique_ptr<Service> svc;
  http::RequestMetrics metrics;
  http::ApiContext api;
  http::Router router;
  std::unique_ptr<console::Console> con;
  std::string admin_token;

  World() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "otac-fuzz-console-api-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) std::abort();
    dir = tmpl;
    kek = std::make_shared<const Kek>(Kek::from_bytes(SecretBytes(Bytes(32, 7))));
    const auto db = dir / "otac.db";
    if (!open_sqlite_store(db, kek)) std::abort();
    ServiceConfig config;
    config.currencies = load_iso4217().value();
    svc = std::make_unique<Service>(std::move(config), [db, k = kek] { return open_sqlite_store(db, k); });
    auto token = svc->create_operator("admin", Role::admin, "fuzz");
    if (!token) std::abort();
    admin_token = *token;
    api.service = svc.get();
    api.metrics = &metrics;
    api.max_wait_seconds = 0;  // a long-poll must not stall the fuzzer
    // A real CA, so that registering a terminal issues a certificate (ECDSA signing is cheap).
    auto ca = pki::make_ca("OTAC fuzz CA", 30);
    if (!ca) std::abort();
    api.ca = std::move(*ca);
    api.client_cert_days = 30;
    http::install_api(router, api);
    con = std::make_unique<console::Console>(*svc, router, console::ConsoleOptions{});
    con->install(router);
  }

  // A fresh console session for the admin through the sign-in route: {cookie, csrf}.
  std::pair<std::string, std::string> sign_in() {
    http::Request req{bhttp::verb::post, "/console/api/session", 11};
    req.set(bhttp::field::content_type, "application/json");
    req.body() = R"({"token":")" + admin_token + R"("})";
    req.prepare_payload();
    http::Response res = dispatch(req);
    if (res.result_int() != 200) std::abort();
    const std::string set_cookie(res[bhttp::field::set_cookie]);
    const auto csrf = boost::json::parse(res.body()).as_object().at("csrf").as_string();
    return {set_cookie.substr(0, set_cookie.find(';')), std::string(csrf)};
  }

  http::Response dispatch(const http::Request& req) {
    http::RequestContext ctx;
    ctx.remote = "127.0.0.1:40000";
    ctx.tls = true;
    return http::dispatch_target(router, req, ctx);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World world;
  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(8 * 1024);
  parser.body_limit(64 * 1024);
  parser.eager(true);
  // Feed the bytes as a connection would, until the message is done (each put consumes at
  // least one byte or stops the loop).
  boost::beast::error_code ec;
  std::size_t used = 0;
  while (used < size && !parser.is_done()) {
    const std::size_t n = parser.put(boost::asio::buffer(data + used, size - used), ec);
    if (ec || n == 0) break;
    used += n;
  }
  if (ec || !parser.is_done()) return 0;
  http::Request req = parser.release();
  const std::size_t mode = size % 4;
  if (mode == 1 || mode == 3) {
    const auto [cookie, csrf] = world.sign_in();
    req.insert(bhttp::field::cookie, cookie);
    req.insert("X-CSRF-Token", csrf);
  }
  if (mode >= 2) req.insert(bhttp::field::authorization, "Bearer " + world.admin_token);
  const http::Response res = world.dispatch(req);
  const unsigned status = res.result_int();
  if (status < 200 || status > 599) std::abort();
  return 0;
}
