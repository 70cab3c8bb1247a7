// Conversions between otac-backend's Boost.Beast messages and the console's plain values, and
// a dispatcher that sends a console request through the server's router (the operator API).
#pragma once

#include "http.hpp"
#include "router.hpp"

namespace otac::backend::console {

/// The console's view of a Beast request.
HttpRequest from_beast(const http::Request& req, const std::string& remote);
/// A Beast response (HTTP version and keep-alive of req) from the console's answer.
http::Response to_beast(const http::Request& req, HttpResponse&& r);
/// Runs a request through the router as if it had arrived over TLS from the console itself.
HttpResponse dispatch(const http::Router& router, const HttpRequest& req);

}  // namespace otac::backend::console
