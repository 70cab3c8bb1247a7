// libFuzzer target: the console's request handler (target and query parsing, cookies, CSRF,
// JSON bodies, routing) with a signed-in admin session over a real Service on a temp store.
// Input: "METHOD\nTARGET\nHEADER-LINES...\n\nBODY".
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "console.hpp"
#include "sqlite_store.hpp"

using namespace otac;
using namespace otac::backend;

namespace {

struct World {
  std::filesystem::path dir;
  std::unique_ptr<Service> svc;
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
    console::ConsoleOptions o;
    o.open_store = [db, kek] { return open_sqlite_store(db, kek); };
    con = std::make_unique<console::Console>(*svc, std::move(o));
    auto token = svc->create_operator("fuzz", Role::admin, "fuzz");
    if (!token) std::abort();
    auto s = con->sessions().create("fuzz", Role::admin);
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
  console::HttpRequest req;
  req.method = std::string(next_line(in));
  req.target = std::string(next_line(in));
  while (!in.empty()) {
    std::string_view line = next_line(in);
    if (line.empty()) break;
    const auto colon = line.find(':');
    req.headers.emplace_back(std::string(line.substr(0, colon)),
                             colon == std::string_view::npos ? std::string{} : std::string(line.substr(colon + 1)));
  }
  req.body = std::string(in);
  // Half the inputs run signed in with a valid CSRF token, so the API handlers are reached.
  if (size % 2 == 0) {
    req.headers.emplace_back("Cookie", world.cookie);
    req.headers.emplace_back("X-CSRF-Token", world.csrf);
  }
  if (console::Console::owns(req.target)) (void)world.con->handle(req);
  (void)console::query_param(req.target, "card");
  (void)console::cookie_value(req.target, "a");
  return 0;
}
