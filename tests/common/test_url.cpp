// URLs and HOST:PORT addresses (common/url, on Boost.URL): names, IPv4, bracketed IPv6, and
// the refusals of everything a server address must not be.
#include <catch2/catch.hpp>

#include "otac/common/url.hpp"

using namespace otac;

TEST_CASE("url: HOST:PORT with names, IPv4 and IPv6 literals", "[url]") {
  struct Good { const char* text; const char* host; std::uint16_t port; };
  for (const Good g : {Good{"127.0.0.1:0", "127.0.0.1", 0}, Good{"localhost:8443", "localhost", 8443},
                       Good{"[::1]:8443", "::1", 8443}, Good{"0.0.0.0:65535", "0.0.0.0", 65535},
                       Good{"[fe80::1]:1", "fe80::1", 1}}) {
    INFO(g.text);
    auto r = parse_host_port(g.text);
    INFO((r ? "" : r.error().message));
    REQUIRE(r.ok());
    CHECK(r->host == g.host);
    CHECK(r->port == g.port);
    auto again = parse_host_port(join_host_port(r->host, r->port));
    REQUIRE(again.ok());
    CHECK(again->host == g.host);
  }
  for (const char* bad : {"", "127.0.0.1", ":8443", "h:", "h:65536", "h:99999999", "::1:8443", "[::1]", "u@h:1",
                          "h:1/x", "h:-1", "[::1:1", "h%00x:1"}) {
    INFO(bad);
    auto r = parse_host_port(bad);
    CHECK_FALSE(r.ok());
    if (!r) CHECK_FALSE(r.error().message.empty());
  }
  CHECK(join_host_port("::1", 8443) == "[::1]:8443");
  CHECK(join_host_port("127.0.0.1", 80) == "127.0.0.1:80");
}

TEST_CASE("url: http and https URLs split for a client", "[url]") {
  auto k = parse_url("http://127.0.0.1:13013/cgi-bin/sendsms");
  REQUIRE(k.ok());
  CHECK_FALSE(k->https);
  CHECK(k->host == "127.0.0.1");
  CHECK(k->port == 13013);
  CHECK(k->target == "/cgi-bin/sendsms");
  auto d = parse_url("https://backend.example");
  REQUIRE(d.ok());
  CHECK(d->https);
  CHECK(d->port == 443);
  CHECK(d->target == "/");
  auto v6 = parse_url("http://[::1]/a%20b?x=1&y=%41");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");
  CHECK(v6->port == 80);
  CHECK(v6->target == "/a%20b?x=1&y=%41");  // still encoded, as sent
  for (const char* bad : {"ftp://h/", "https://", "https://h:0", "https://u:p@h/", "https://h/#f", "/relative",
                          "https//h", "https://h:99999/"}) {
    INFO(bad);
    CHECK_FALSE(parse_url(bad).ok());
  }
  auto o = parse_https_origin("https://[::1]:8443/");
  REQUIRE(o.ok());
  CHECK(o->host == "::1");
  CHECK(o->port == 8443);
  CHECK_FALSE(parse_https_origin("http://h:1").ok());
  CHECK_FALSE(parse_https_origin("https://h:1/path").ok());
  CHECK_FALSE(parse_https_origin("https://h:1?q").ok());
}
