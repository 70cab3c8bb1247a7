// Certificate lifetime of the real otac-backend process: validity of what it issues (read back
// with OpenSSL's X509 API, not with the backend's own code), renew-certificate, and the
// expiry warning and gauge.
#include <catch2/catch.hpp>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <ctime>
#include <memory>
#include <string>

#include "pki.hpp"
#include "server_fixture.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::test;
using Verb = boost::beast::http::verb;

namespace {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr load(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  REQUIRE(bio);
  X509Ptr x(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(x);
  return x;
}

// notAfter - notBefore, seconds (OpenSSL's ASN1_TIME_diff).
long validity_seconds(X509* x) {
  int days = 0, secs = 0;
  REQUIRE(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)) == 1);
  return static_cast<long>(days) * 86400 + secs;
}

// Seconds from now to notAfter.
long seconds_left(X509* x) {
  int days = 0, secs = 0;
  REQUIRE(ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(x)) == 1);
  return static_cast<long>(days) * 86400 + secs;
}

// The start is in the past, by the backdating only.
void check_starts_now(X509* x) {
  int days = 0, secs = 0;
  REQUIRE(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), nullptr) == 1);
  const long ago = static_cast<long>(days) * 86400 + secs;
  CHECK(ago >= 0);
  CHECK(ago <= 300 + 120);
}

bool signed_by(X509* x, X509* ca) { return X509_verify(x, X509_get0_pubkey(ca)) == 1; }

double metric(const std::string& text, const std::string& name) {
  const auto p = text.find("\n" + name + " ");
  REQUIRE(p != std::string::npos);
  return std::stod(text.substr(p + name.size() + 2));
}

int run_renew(const Backend& b, const std::filesystem::path& out) {
  std::filesystem::remove(out);
  return run_program({OTAC_BACKEND_BIN, "renew-certificate", "--data-dir", b.dir.string()}, out);
}

}  // namespace

TEST_CASE("server and terminal certificates last at most 397 days, backdating included", "[server][pki]") {
  Backend b;
  b.start();
  auto ca = load(slurp(b.dir / "ca.pem"));
  auto server = load(slurp(b.dir / "server.pem"));
  CHECK(validity_seconds(server.get()) <= 397L * 86400);
  CHECK(validity_seconds(server.get()) >= 396L * 86400);
  check_starts_now(server.get());
  CHECK(signed_by(server.get(), ca.get()));

  auto [cert, key] = b.register_terminal("TERM0001");
  auto client = load(slurp(cert));
  CHECK(validity_seconds(client.get()) <= 397L * 86400);
  CHECK(validity_seconds(client.get()) >= 396L * 86400);
  check_starts_now(client.get());
  CHECK(signed_by(client.get(), ca.get()));

  // The library refuses longer leaf certificates outright.
  const pki::KeyCert cakc{slurp(b.dir / "ca.key"), slurp(b.dir / "ca.pem")};
  CHECK_FALSE(pki::issue_client(cakc, "TERM0002", 398));
  CHECK_FALSE(pki::issue_server(cakc, "localhost", {"localhost"}, {}, 825));
  CHECK(pki::issue_client(cakc, "TERM0002", 397));
}

TEST_CASE("an old configuration asking for 825-day terminal certificates gets 397", "[server][pki]") {
  Backend b;
  b.start("client_cert_days = 825\n");
  auto [cert, key] = b.register_terminal("TERM0001");
  auto client = load(slurp(cert));
  CHECK(validity_seconds(client.get()) <= 397L * 86400);
  CHECK(b.log().find("client_cert_days_lowered") != std::string::npos);
}

TEST_CASE("renew-certificate issues a new server certificate for the same key, names and CA", "[server][pki]") {
  Backend b;
  b.start();
  b.stop();
  const std::string old_pem = slurp(b.dir / "server.pem");
  const std::string key_before = slurp(b.dir / "server.key");
  // Make the current one nearly expired, as it would be after a year.
  const pki::KeyCert cakc{slurp(b.dir / "ca.key"), slurp(b.dir / "ca.pem")};
  auto short_pem = pki::reissue_server(cakc, pki::KeyCert{key_before, old_pem}, 3);
  REQUIRE(short_pem);
  std::ofstream(b.dir / "server.pem", std::ios::trunc) << *short_pem;

  const auto out = b.tmp.path / "renew.out";
  const int rc = run_renew(b, out);
  INFO(slurp(out));
  REQUIRE(rc == 0);
  CHECK(slurp(out).find("valid until") != std::string::npos);
  CHECK(slurp(b.dir / "server.key") == key_before);  // the key stays; only the certificate changes
  CHECK_FALSE(std::filesystem::exists(b.dir / "server.pem.tmp"));
  const auto perms = std::filesystem::status(b.dir / "server.pem").permissions();
  CHECK((perms & (std::filesystem::perms::group_write | std::filesystem::perms::others_write)) == std::filesystem::perms::none);

  auto ca = load(slurp(b.dir / "ca.pem"));
  auto old_cert = load(*short_pem);
  auto renewed = load(slurp(b.dir / "server.pem"));
  CHECK(signed_by(renewed.get(), ca.get()));
  CHECK(validity_seconds(renewed.get()) <= 397L * 86400);
  CHECK(seconds_left(renewed.get()) > 396L * 86400);
  check_starts_now(renewed.get());
  CHECK(EVP_PKEY_eq(X509_get0_pubkey(renewed.get()), X509_get0_pubkey(old_cert.get())) == 1);
  CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(renewed.get()), X509_get0_serialNumber(old_cert.get())) != 0);
  CHECK(X509_check_host(renewed.get(), "localhost", 0, 0, nullptr) == 1);
  CHECK(X509_check_ip_asc(renewed.get(), "127.0.0.1", 0) == 1);
  CHECK(X509_check_ip_asc(renewed.get(), "::1", 0) == 1);
  CHECK(X509_check_purpose(renewed.get(), X509_PURPOSE_SSL_SERVER, 0) == 1);

  // The backend serves it after a restart, and clients that trust the CA accept it.
  b.start();
  CHECK(Backend::call(b.client(), Verb::get, "/healthz").status == 200);
  auto m = Backend::call(b.client(), Verb::get, "/metrics");
  REQUIRE(m.status == 200);
  CHECK(metric(m.body, "otac_server_certificate_expiry_seconds") > 396.0 * 86400);
  CHECK(b.log().find("server_certificate_expiring") == std::string::npos);
}

TEST_CASE("renew-certificate refuses a data directory without a certificate, changing nothing", "[server][pki]") {
  TempDir t;
  const auto out = t.path / "renew.out";
  std::filesystem::create_directories(t.path / "empty");
  const int rc = run_program({OTAC_BACKEND_BIN, "renew-certificate", "--data-dir", (t.path / "empty").string()}, out);
  CHECK(rc == 1);
  CHECK(slurp(out).find("cannot read") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(t.path / "empty" / "server.pem"));
  CHECK(run_program({OTAC_BACKEND_BIN, "renew-certificate", "--data-dir", (t.path / "empty").string(), "--listen",
                     "127.0.0.1:0"},
                    out) == 2);
}

TEST_CASE("a server certificate near expiry is warned about in the log and in /metrics", "[server][pki]") {
  Backend b;
  b.start();
  b.stop();
  const pki::KeyCert cakc{slurp(b.dir / "ca.key"), slurp(b.dir / "ca.pem")};
  auto near = pki::reissue_server(cakc, pki::KeyCert{slurp(b.dir / "server.key"), slurp(b.dir / "server.pem")}, 10);
  REQUIRE(near);
  std::ofstream(b.dir / "server.pem", std::ios::trunc) << *near;
  b.start();
  const std::string log = b.log();
  const auto w = log.find("server_certificate_expiring");
  REQUIRE(w != std::string::npos);
  const std::string line = log.substr(w, log.find('\n', w) - w);
  CHECK(line.find("days_left=9") != std::string::npos);
  CHECK(line.find("renew-certificate") != std::string::npos);
  auto m = Backend::call(b.client(), Verb::get, "/metrics");
  REQUIRE(m.status == 200);
  const double left = metric(m.body, "otac_server_certificate_expiry_seconds");
  CHECK(left > 9.0 * 86400);
  CHECK(left <= 10.0 * 86400);
}
