// Glue between otac-backend's router (Boost.Beast messages) and the console's plain handler.
#include <filesystem>
#include <memory>

#include "beast_glue.hpp"
#include "console.hpp"
#include "kek.hpp"
#include "sqlite_store.hpp"

namespace otac::backend::console {

namespace fs = std::filesystem;
namespace bhttp = boost::beast::http;

HttpRequest from_beast(const http::Request& req, const std::string& remote) {
  HttpRequest r;
  r.remote = remote;
  r.method = std::string(req.method_string());
  r.target = std::string(req.target());
  for (const auto& f : req) r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  r.body = req.body();
  return r;
}

http::Response to_beast(const http::Request& req, HttpResponse&& r) {
  http::Response out{static_cast<bhttp::status>(r.status), req.version()};
  for (auto& [k, v] : r.headers) out.insert(k, v);
  out.body() = std::move(r.body);
  out.keep_alive(req.keep_alive());
  out.prepare_payload();
  return out;
}

HttpResponse dispatch(const http::Router& router, const HttpRequest& req) {
  http::Request b;
  b.version(11);
  b.method_string(req.method);
  b.target(req.target);
  for (const auto& [k, v] : req.headers) b.insert(k, v);
  b.body() = req.body;
  b.prepare_payload();
  http::RequestContext ctx;
  ctx.remote = "console";
  ctx.tls = true;
  HttpResponse out;
  if (!http::split_target(req.target, ctx.path, ctx.query)) {
    out.status = 400;
    out.body = R"({"error":"bad_request","message":"malformed request target"})";
    return out;
  }
  http::Response res = router.dispatch(b, ctx);
  out.status = static_cast<unsigned>(res.result_int());
  for (const auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  out.body = std::move(res.body());
  return out;
}

void install(http::Router& router, const http::Extension& ext) {
  ConsoleOptions o;
  o.gate = ext.gate;
  // Actions go to the operator API through this same router (registered before us, and
  // read-only once the server runs).
  o.operator_api = [&router](const HttpRequest& r) { return dispatch(router, r); };
  // The console's few reads beyond the Service (codes left, a transaction by id) open the
  // store at its default place in the data directory; when the configuration moved it, those
  // fields are left out.
  const fs::path db = ext.data_dir / "otac.db";
  const fs::path kek_file = ext.data_dir / "kek.bin";
  std::error_code ec;
  if (fs::exists(db, ec) && fs::exists(kek_file, ec)) {
    if (auto kek = Kek::load_or_create(kek_file)) {
      auto shared = std::make_shared<const Kek>(std::move(*kek));
      o.open_store = [db, shared] { return open_sqlite_store(db, shared); };
    }
  }
  auto console = std::make_shared<Console>(*ext.service, std::move(o));
  http::Handler h = [console](const http::Request& req, http::RequestContext& ctx) {
    return to_beast(req, console->handle(from_beast(req, ctx.remote)));
  };
  router.add(http::Verb::get, "/console", h);
  router.add_prefix("/console/", h);
}

}  // namespace otac::backend::console
