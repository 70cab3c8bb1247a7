#include "otac/common/url.hpp"

#include <boost/url/authority_view.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

namespace otac {

namespace urls = boost::urls;

namespace {

std::string quoted(std::string_view text) { return "'" + std::string(text.substr(0, 80)) + "'"; }

// The host of a parsed authority, with IPv6 brackets removed; empty if there is none.
template <class View>
std::string host_of(const View& v) {
  switch (v.host_type()) {
    case urls::host_type::ipv4:
    case urls::host_type::ipv6:
      return v.host_address();  // the address text, IPv6 without brackets
    case urls::host_type::name:
      break;
    default:
      return {};  // IPvFuture or no host
  }
  std::string name = v.host_name();  // percent-decoded
  // A DNS name: letters, digits, '-', '.', '_'. Anything else (a decoded NUL, a space) would
  // reach the resolver or the certificate check as something other than what was written.
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
    if (!ok) return {};
  }
  return name;
}

// The port of an authority. Boost.URL accepts any digits; the range check is ours.
Result<std::uint16_t> port_of(std::string_view digits, unsigned low) {
  if (digits.empty() || digits.size() > 5) return make_error(Errc::bad_value, "port must be a number from " + std::to_string(low) + " to 65535");
  unsigned v = 0;
  for (const char c : digits) v = v * 10 + static_cast<unsigned>(c - '0');  // digits only: the grammar ensures it
  if (v < low || v > 65535) return make_error(Errc::bad_value, "port must be a number from " + std::to_string(low) + " to 65535");
  return static_cast<std::uint16_t>(v);
}

}  // namespace

Result<HostPort> parse_host_port(std::string_view text) {
  auto a = urls::parse_authority(urls::string_view(text.data(), text.size()));
  if (!a) return make_error(Errc::bad_value, quoted(text) + " is not HOST:PORT (" + a.error().message() + ")");
  if (a->has_userinfo()) return make_error(Errc::bad_value, quoted(text) + " is not HOST:PORT (it has a user part)");
  HostPort hp;
  hp.host = host_of(*a);
  if (hp.host.empty()) return make_error(Errc::bad_value, quoted(text) + " is not HOST:PORT (no host)");
  if (!a->has_port()) return make_error(Errc::bad_value, quoted(text) + " is not HOST:PORT (no port)");
  auto port = port_of(a->port(), 0);
  if (!port) return make_error(Errc::bad_value, quoted(text) + ": " + port.error().message);
  hp.port = *port;
  return hp;
}

Result<Url> parse_url(std::string_view text) {
  auto u = urls::parse_absolute_uri(urls::string_view(text.data(), text.size()));
  if (!u) return make_error(Errc::bad_value, quoted(text) + " is not a URL (" + u.error().message() + ")");
  Url out;
  if (u->scheme_id() == urls::scheme::https) {
    out.https = true;
  } else if (u->scheme_id() != urls::scheme::http) {
    return make_error(Errc::bad_value, quoted(text) + ": the scheme must be http or https");
  }
  if (u->has_userinfo()) return make_error(Errc::bad_value, quoted(text) + ": a user part is not allowed");
  out.host = host_of(*u);
  if (out.host.empty()) return make_error(Errc::bad_value, quoted(text) + " has no host");
  if (u->has_port()) {
    auto port = port_of(u->port(), 1);
    if (!port) return make_error(Errc::bad_value, quoted(text) + ": " + port.error().message);
    out.port = *port;
  } else {
    out.port = out.https ? 443 : 80;
  }
  out.target = std::string(u->encoded_path());
  if (out.target.empty()) out.target = "/";
  if (u->has_query()) out.target += "?" + std::string(u->encoded_query());
  return out;
}

Result<HostPort> parse_https_origin(std::string_view text) {
  auto u = parse_url(text);
  if (!u) return u.error();
  if (!u->https) return make_error(Errc::bad_value, quoted(text) + " must start with https://");
  if (u->target != "/") return make_error(Errc::bad_value, quoted(text) + " takes no path or query: https://HOST:PORT");
  return HostPort{u->host, u->port};
}

std::string join_host_port(std::string_view host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string_view::npos;
  return (v6 ? "[" + std::string(host) + "]" : std::string(host)) + ":" + std::to_string(port);
}

}  // namespace otac
