// otac-backend.conf in TOML: the default text loads to the built-in defaults, every class of
// error names the file, the line and the key, and the old key = value format converts.
#include <catch2/catch.hpp>

#include <fstream>

#include "config.hpp"
#include "server_fixture.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::run_program;
using otac::backend::test::slurp;

namespace {

Config base() {
  Config c;
  c.data_dir = "/var/lib/otac-backend";
  return c;
}

void write(const std::filesystem::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

}  // namespace

TEST_CASE("backend config: the default text (the shipped /etc/otac/otac-backend.conf) loads to the defaults",
          "[server][config]") {
  auto c = parse_config(default_config_text(), base());
  REQUIRE(c);
  const Config d = base();
  CHECK(c->listen == d.listen);
  CHECK(c->mo_listen == d.mo_listen);
  CHECK(c->store == "sqlite");
  CHECK(c->kek_uri.empty());
  CHECK(c->pkcs11_module == d.pkcs11_module);
  CHECK(c->server_msisdn == "+15550100");
  CHECK(c->list_size == d.list_size);
  CHECK(c->kannel_dlr);
  CHECK(c->decline_retention_days == d.decline_retention_days);
  CHECK(c->slow_threads == d.slow_threads);
}

TEST_CASE("backend config: typed values, comments and quoting", "[server][config]") {
  auto c = parse_config("# operators' note\n"
                        "listen = \"0.0.0.0:8443\"  # all addresses\n"
                        "list_size = 120\n"
                        "kannel_dlr = false\n"
                        "kannel_pass = 'p#ss\\word'\n"
                        "kek_uri = \"pkcs11:token=otac;object=kek\"\n"
                        "store = \"postgresql\"\n"
                        "postgres_conninfo = \"host=db.example dbname=otac\"\n",
                        base());
  REQUIRE(c);
  CHECK(c->listen == "0.0.0.0:8443");
  CHECK(c->list_size == 120);
  CHECK_FALSE(c->kannel_dlr);
  CHECK(c->kannel_pass == "p#ss\\word");  // a TOML literal string: no escapes
  CHECK(c->kek_uri == "pkcs11:token=otac;object=kek");
  CHECK(c->store == "postgresql");
  CHECK(c->resolve(c->tls_cert) == "/var/lib/otac-backend/server.pem");
}

TEST_CASE("backend config: each error is one line naming the file, the line and the key", "[server][config]") {
  struct Case {
    const char* text;
    const char* expect;
  };
  const Case cases[] = {
      // TOML syntax: an old-format value without quotes (and how to convert the file).
      {"list_size = 50\nlisten = 127.0.0.1:8443\n",
       "f.conf:2: listen: not valid TOML: "},
      {"list_size = 50\n[server\n", "f.conf:2: not valid TOML: "},
      // A wrong type.
      {"\nlist_size = \"50\"\n", "f.conf:2: list_size: must be a whole number (without quotes)"},
      {"listen = 8443\n", "f.conf:1: listen: must be a string in double quotes"},
      {"kannel_dlr = \"yes\"\n", "f.conf:1: kannel_dlr: must be true or false (without quotes)"},
      // Out of range, or a value our rules refuse.
      {"list_size = 50\n\nlist_size_x = 1\n", "f.conf:3: list_size_x: unknown key"},
      {"# c\nlist_size = 121\n", "f.conf:2: list_size: must be a whole number from 1 to 120 (is 121)"},
      {"threshold = -1\n", "f.conf:1: threshold: must be a whole number from 0 to 1000 (is -1)"},
      {"store = \"mysql\"\n", "f.conf:1: store: must be sqlite or postgresql"},
      {"database = \"\"\n", "f.conf:1: database: empty path"},
      {"kek_uri = \"pkcs11:token=otac\"\n", "f.conf:1: kek_uri: must name the key with object=LABEL"},
      {"kannel_user = \"a\\nb\"\n", "f.conf:1: kannel_user: control characters in the value"},
      // A table is no key of ours.
      {"[kannel]\nuser = \"x\"\n", "f.conf:1: kannel: unknown key"},
      // A check across keys names the key that asked for the other.
      {"max_wait_seconds = 1\nstore = \"postgresql\"\n", "f.conf:2: store: postgresql needs postgres_conninfo"},
      // A key twice is a TOML error.
      {"list_size = 5\nlist_size = 6\n", "f.conf:2: list_size: not valid TOML: "},
  };
  for (const auto& t : cases) {
    INFO(t.text);
    auto c = parse_config(t.text, base(), "f.conf");
    REQUIRE_FALSE(c);
    CHECK_THAT(c.error().message, Catch::StartsWith(t.expect));
    CHECK(c.error().message.find('\n') == std::string::npos);
  }
  // A file the converter can read gets the command that converts it; one it cannot does not.
  auto old = parse_config("listen = 127.0.0.1:8443\n", base(), "f.conf");
  REQUIRE_FALSE(old);
  CHECK_THAT(old.error().message, Catch::Contains("otac-backend --convert-config f.conf > NEW"));
  auto broken = parse_config("[server\nlisten = \"127.0.0.1:8443\"\n", base(), "f.conf");
  REQUIRE_FALSE(broken);
  CHECK_THAT(broken.error().message, !Catch::Contains("--convert-config"));
}

TEST_CASE("backend config: load_config names the file", "[server][config]") {
  otac::test::TempDir d;
  auto missing = load_config(d.path / "none.conf", base());
  REQUIRE_FALSE(missing);
  CHECK_THAT(missing.error().message, Catch::Contains((d.path / "none.conf").string()));
  write(d.path / "a.conf", "# x\n\nio_threads = 0\n");
  auto bad = load_config(d.path / "a.conf", base());
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == (d.path / "a.conf").string() + ":3: io_threads: must be a whole number from 1 to 64 (is 0)");
  write(d.path / "big.conf", std::string(70 * 1024, '#'));
  CHECK_FALSE(load_config(d.path / "big.conf", base()));
}

TEST_CASE("backend config: an old key = value file converts line for line to the same values", "[server][config]") {
  otac::test::TempDir d;
  // Every form the old reader took: comments only at a line's start (so '#' in a value is
  // the value), quotes stripped, yes/no/1/0 booleans, leading zeros, empty values, a key set
  // twice (the last won), blanks and CRLF line ends.
  write(d.path / "old.conf",
        "# otac-backend configuration\r\n"
        "listen = 127.0.0.1:8443\r\n"
        "\n"
        "kannel_pass = se#cret \"x\" \\ y\n"
        "kannel_user = \"quoted\"\n"
        "kannel_dlr = no\n"
        "list_size = 050\n"
        "postgres_conninfo =\n"
        "  threshold = 7  \n"
        "threshold = 9\n"
        "kek_uri = pkcs11:token=otac;object=kek\n");
  auto toml = convert_config(d.path / "old.conf");
  REQUIRE(toml);
  CHECK(*toml ==
        "# otac-backend configuration\n"
        "listen = \"127.0.0.1:8443\"\n"
        "\n"
        "kannel_pass = \"se#cret \\\"x\\\" \\\\ y\"\n"
        "kannel_user = \"quoted\"\n"
        "kannel_dlr = false\n"
        "list_size = 50\n"
        "postgres_conninfo = \"\"\n"
        "# (set again on line 10) threshold = 7\n"
        "threshold = 9\n"
        "kek_uri = \"pkcs11:token=otac;object=kek\"\n");
  auto c = parse_config(*toml, base());
  REQUIRE(c);
  CHECK(c->kannel_pass == "se#cret \"x\" \\ y");
  CHECK(c->kannel_user == "quoted");
  CHECK_FALSE(c->kannel_dlr);
  CHECK(c->list_size == 50);
  CHECK(c->threshold == 9);
  // A value the old reader refused is refused with its old line.
  write(d.path / "bad.conf", "# x\nlist_size = 500\n");
  auto bad = convert_config(d.path / "bad.conf");
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::StartsWith((d.path / "bad.conf").string() + ":2: list_size: "));
  write(d.path / "junk.conf", "list_size = 5\nno equals sign\n");
  auto junk = convert_config(d.path / "junk.conf");
  REQUIRE_FALSE(junk);
  CHECK_THAT(junk.error().message, Catch::StartsWith((d.path / "junk.conf").string() + ":2: expected key = value"));
  // The old default configuration (every key) converts and loads.
  write(d.path / "every.conf",
        "listen = 127.0.0.1:8443\nmo_listen = 127.0.0.1:0\nca_cert = ca.pem\nca_key = ca.key\ntls_cert = server.pem\n"
        "tls_key = server.key\nkek_file = kek.bin\ndatabase = otac.db\nstore = sqlite\npostgres_conninfo =\n"
        "postgres_start_timeout_seconds = 300\nkek_uri =\nserver_key_uri =\ncard_ca_key_uri =\n"
        "pkcs11_module = /usr/lib/softhsm/libsofthsm2.so\npkcs11_pin_file = hsm.pin\nmo_secret_file = mo.secret\n"
        "admin_token_file = admin.token\nclient_cert_days = 397\nserver_msisdn = +15550100\nlist_size = 100\n"
        "threshold = 20\nfail_limit = 5\nmax_wait_seconds = 30\nhold_limit_seconds = 120\nlist_repair_seconds = 900\n"
        "default_currency = EUR\nmax_amount_minor = 10000000\niso4217_file = /usr/share/iso-codes/json/iso_4217.json\n"
        "cash_card_daily_minor = 0\ncash_terminal_daily_minor = 0\ncash_complete_seconds = 300\n"
        "decline_source_burst = 100\ndecline_source_interval_ms = 5000\ndecline_card_burst = 50\n"
        "decline_card_interval_ms = 60000\ndecline_retention_days = 90\nkannel_sendsms_url =\nkannel_user =\n"
        "kannel_pass =\nkannel_smsc_id =\nkannel_dlr = true\nsms_retry_base_seconds = 2\nsms_retry_max_seconds = 300\n"
        "max_body_bytes = 65536\nmax_connections = 1024\nmax_connections_per_source = 256\n"
        "max_unauthenticated_connections = 0\nhandshake_timeout_seconds = 5\nrequest_timeout_seconds = 10\n"
        "io_threads = 2\nworker_threads = 64\nslow_threads = 32\n");
  auto every = convert_config(d.path / "every.conf");
  REQUIRE(every);
  CHECK(parse_config(*every, base()));
}

TEST_CASE("otac-backend --convert-config prints the TOML, and an old file at start says how to convert it",
          "[server][config]") {
  otac::test::TempDir d;
  const auto out = d.path / "out.txt";
  std::filesystem::create_directories(d.path / "data");
  write(d.path / "data" / "otac-backend.conf", "listen = 127.0.0.1:0\nlist_size = 50\n");
  CHECK(run_program({OTAC_BACKEND_BIN, "--data-dir", (d.path / "data").string()}, out) == 1);
  CHECK_THAT(slurp(out), Catch::Contains("otac-backend.conf:1: listen: not valid TOML") &&
                                   Catch::Contains("--convert-config"));
  const auto converted = d.path / "converted.txt";
  CHECK(run_program({OTAC_BACKEND_BIN, "--convert-config", (d.path / "data" / "otac-backend.conf").string()},
                    converted) == 0);
  CHECK(slurp(converted) == "listen = \"127.0.0.1:0\"\nlist_size = 50\n");
  // What the package installs as /etc/otac/otac-backend.conf is this output; it loads.
  const auto shipped = d.path / "shipped.conf";
  CHECK(run_program({OTAC_BACKEND_BIN, "--default-config"}, shipped) == 0);
  auto c = load_config(shipped, base());
  INFO((c ? std::string() : c.error().message));
  CHECK(c);
}
