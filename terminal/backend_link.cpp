#include "terminal/backend_link.hpp"

#include <iostream>

#include "otac/sys/file.hpp"
#include "terminal/backend_json.hpp"

namespace otac::terminal {

using Verb = boost::beast::http::verb;

net::ClientOptions backend_options(const Config& cfg, const BackendOrigin& origin) {
  net::ClientOptions o;
  o.host = origin.host;
  o.port = origin.port;
  o.ca_file = cfg.ca_file;
  o.cert_file = cfg.cert_file;
  o.key_file = cfg.key_file;
  o.user_agent = "otac-terminal";
  o.resolve_timeout = o.connect_timeout = o.handshake_timeout = std::chrono::milliseconds(cfg.connect_timeout_ms);
  o.io_timeout = std::chrono::milliseconds(cfg.backend_timeout_ms);
  o.body_limit = 64 * 1024;
  return o;
}

Result<std::string> backend_body(const Result<net::Response>& a) {
  if (!a) return a.error();
  if (a->status == 200) return a->body;
  const std::string msg = "backend answered HTTP " + std::to_string(a->status) + ": " + error_summary(a->body);
  if (a->status == 502 || a->status == 503 || a->status == 504) return make_error(Errc::io, msg);
  if (a->status == 409) return make_error(Errc::conflict, msg);
  // 429: the backend declined without storing anything (too many declines from this terminal
  // or for this card); it approved nothing, so there is nothing to reverse.
  if (a->status == 429) return make_error(Errc::state, msg);
  return make_error(Errc::bad_value, msg);
}

bool worth_another_node(const Result<net::Response>& a) {
  if (a) return a->status >= 500 && a->status <= 599;
  const Errc e = a.error().code;
  return e == Errc::io || e == Errc::timeout || e == Errc::crypto;
}

Result<std::unique_ptr<BackendLink>> BackendLink::create(const Config& cfg, Log log) {
  if (cfg.backends.empty()) return make_error(Errc::bad_value, "no backend_url in the configuration");
  std::vector<std::unique_ptr<net::HttpClient>> nodes;
  for (const auto& origin : cfg.backends) {
    auto http = net::HttpClient::create(backend_options(cfg, origin));
    if (!http) return http.error();
    nodes.push_back(std::move(*http));
  }
  if (!log) log = [](const std::string& line) { std::cerr << "otac-terminal: " << line << std::endl; };
  std::unique_ptr<BackendLink> link(  // private constructor
      new BackendLink(std::move(nodes), std::chrono::milliseconds(cfg.backend_timeout_ms), std::move(log)));
  if (cfg.backends.size() > 1 && !cfg.data_dir.empty()) {
    // The node that answered the last run, if it is still one of backend_url's.
    link->state_file_ = std::filesystem::path(cfg.data_dir) / "backend.node";
    if (auto last = sys::read_file(link->state_file_, 1024)) {
      while (!last->empty() && (last->back() == '\n' || last->back() == ' ')) last->pop_back();
      for (std::size_t k = 0; k < link->nodes_.size(); ++k)
        if (link->nodes_[k]->where() == *last) link->current_ = k;
    }
  }
  return link;
}

void BackendLink::answered_by(std::size_t k) {
  if (k == current_) return;
  current_ = k;
  if (state_file_.empty()) return;
  // Best effort: a file that cannot be written only costs the next run a failover.
  if (auto w = sys::write_file_atomic(state_file_, nodes_[k]->where() + "\n", {.mode = 0644}); !w)
    log_("cannot remember the backend node in " + state_file_.string() + ": " + w.error().message);
}

Result<std::string> BackendLink::exchange(Verb method, const std::string& target, const std::string& body,
                                          std::chrono::milliseconds timeout) {
  Result<net::Response> a = make_error(Errc::internal, "no backend node");
  const std::size_t first = current_;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    const std::size_t k = (first + i) % nodes_.size();
    a = nodes_[k]->request(method, target, body, timeout);
    if (!worth_another_node(a)) {
      answered_by(k);
      return backend_body(a);
    }
    if (i + 1 < nodes_.size()) {
      ++failovers_;
      const auto why = a ? "HTTP " + std::to_string(a->status) : a.error().message;
      log_("backend " + nodes_[k]->where() + " failed (" + why + "); trying " + nodes_[(k + 1) % nodes_.size()]->where());
    }
  }
  return backend_body(a);  // every node failed: the last one's error
}

Result<std::string> BackendLink::post(const std::string& target, const std::string& body) {
  return exchange(Verb::post, target, body, timeout_);
}

Result<std::string> BackendLink::poll(const std::string& txn, unsigned wait_s) {
  return exchange(Verb::get, "/v1/authorizations/" + txn + "?wait=" + std::to_string(wait_s), {},
                  timeout_ + std::chrono::seconds(wait_s));
}

Result<void> BackendLink::warm() {
  Result<void> w;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    const std::size_t k = (current_ + i) % nodes_.size();
    w = nodes_[k]->warm();
    if (w) {
      answered_by(k);
      return w;
    }
  }
  return w;
}

}  // namespace otac::terminal
