// Glue between otac-backend's router (Boost.Beast messages) and the console's plain handler.
#include <filesystem>
#include <memory>

#include "console.hpp"
#include "kek.hpp"
#include "pki.hpp"
#include "router.hpp"
#include "sqlite_store.hpp"

namespace otac::backend::console {

namespace {

namespace fs = std::filesystem;
namespace bhttp = boost::beast::http;

HttpRequest from_beast(const http::Request& req) {
  HttpRequest r;
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

}  // namespace

void install(http::Router& router, const http::Extension& ext) {
  ConsoleOptions o;
  // The Extension hands over the Service and the data directory. The console's few reads
  // beyond the Service (codes left, transaction detail) and certificate issuance use the
  // data directory's default files; when the configuration moved them elsewhere, those
  // fields are left out and issuance answers 501 (otac-admin still works).
  const fs::path db = ext.data_dir / "otac.db";
  const fs::path kek_file = ext.data_dir / "kek.bin";
  std::error_code ec;
  if (fs::exists(db, ec) && fs::exists(kek_file, ec)) {
    if (auto kek = Kek::load_or_create(kek_file)) {
      auto shared = std::make_shared<const Kek>(std::move(*kek));
      o.open_store = [db, shared] { return open_sqlite_store(db, shared); };
    }
  }
  auto ca_cert = pki::read_file(ext.data_dir / "ca.pem");
  auto ca_key = pki::read_file(ext.data_dir / "ca.key");
  if (ca_cert && ca_key) {
    auto ca = std::make_shared<const pki::KeyCert>(pki::KeyCert{std::move(*ca_key), std::move(*ca_cert)});
    o.issue_cert = [ca](std::string_view id) -> Result<IssuedCert> {
      auto kc = pki::issue_client(*ca, id, 825);
      if (!kc) return std::move(kc).error();
      auto fp = pki::fingerprint(kc->cert_pem);
      if (!fp) return std::move(fp).error();
      return IssuedCert{std::move(kc->cert_pem), std::move(kc->key_pem), std::move(*fp)};
    };
  }
  auto console = std::make_shared<Console>(*ext.service, std::move(o));
  http::Handler h = [console](const http::Request& req, http::RequestContext&) {
    return to_beast(req, console->handle(from_beast(req)));
  };
  router.add(http::Verb::get, "/console", h);
  router.add_prefix("/console/", h);
}

}  // namespace otac::backend::console
