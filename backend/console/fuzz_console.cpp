// libFuzzer target: the console's routes (target and query parsing, cookies, CSRF, JSON bodies,
// routing) on the server's router beside the operator API, with a signed-in admin session over
// a real Service on a temp store. Input: "METHOD\nTARGET\nHEADER-LINES...\n\nBODY"; the
// message is built directly (fuzz_console_api feeds raw bytes through Beast's parser).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>

#include "api.hpp"
#include "console.hpp"
#include "sqlite_store.hpp"

using namespace otac;
using namespace otac::backend;

namespace {

struct World {
  std::filesystem::path dir;
  std::unique_ptr<Service> svc;
  http::RequestMetrics metrics;
  http::ApiContext api;
  http::Router router;
  std::unique_ptr<console::Console> con;
  std::string cookie;
  std::string csrf;

  World() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "otac-fuzz-console-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) std::abort();
    dir = tmpl;
    auto kek = std::make_shared<const Kek>(Kek::from_bytes(SecretBytes(Bytes(32, 7))));
    const auto db = dir / "otac.db";
    ServiceConfig config;
    config.currencies = load_iso4217().value();
    svc = std::make_unique<Service>(std::move(config), [db, kek] { return open_sqlite_store(db, kek); });
    api.service = svc.get();
    api.metrics = &metrics;
    api.max_wait_seconds = 0;  // a long-poll must not stall the fuzzer
    auto ca = pki::make_ca("OTAC fuzz CA", 30);  // terminal registration issues certificates
    if (!ca) std::abort();
    api.ca = std::move(*ca);
    http::install_api(router, api);
    con = std::make_unique<console::Console>(*svc, router, console::ConsoleOptions{});
    con->install(router);
    auto token = svc->create_operator("fuzz", Role::admin, "fuzz");
    if (!token) std::abort();
    auto s = con->sessions().create("fuzz", Role::admin, *token);
    if (!s) std::abort();
    cookie = std::string(console::session_cookie) + "=" + s->id;
    csrf = s->session.csrf;
  }
};

std::string_view next_line(std::string_view& in) {
  const auto nl = in.find('\n');
  std::string_view line = in.substr(0, nl);
  in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World world;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  http::Request req;
  req.version(11);
  // Beast refuses some methods, names and values while the message is built; such inputs never
  // reach the server (its parser refuses them first) and end here.
  try {
    const std::string_view method = next_line(in);
    if (method.empty()) return 0;
    req.method_string(method);
    req.target(next_line(in));
    while (!in.empty()) {
      std::string_view line = next_line(in);
      if (line.empty()) break;
      const auto colon = line.find(':');
      if (colon == 0 || colon == std::string_view::npos) continue;
      req.insert(line.substr(0, colon), line.substr(colon + 1));
    }
    req.body() = std::string(in);
    // Half the inputs run signed in with a valid CSRF token, so the API handlers are reached.
    if (size % 2 == 0) {
      req.insert("Cookie", world.cookie);
      req.insert("X-CSRF-Token", world.csrf);
    }
    req.prepare_payload();
  } catch (const std::exception&) {
    return 0;
  }
  http::RequestContext ctx;
  ctx.remote = "127.0.0.1:40000";
  ctx.tls = true;
  const http::Response res = http::dispatch_target(world.router, req, ctx);
  const unsigned status = res.result_int();
  if (status < 200 || status > 599) std::abort();
  (void)console::cookie_value(req.target(), "a");
  return 0;
}
