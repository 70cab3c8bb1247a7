// Helpers shared by the terminal's integration tests.
#pragma once

#include <string>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "terminal/flow.hpp"

namespace otac::terminal::test {

/// Transaction data matching the card fixture's challenge (tests/card-applet/card_fixture.hpp
/// Ch): 12.34 EUR on 2026-11-22 18:55:00 at TERM0001.
inline TxnParams fixture_txn(const std::string& txn_id) {
  TxnParams p;
  p.txn_id = txn_id;
  p.terminal_id = "TERM0001";
  p.amount = 1234;
  p.year = 2026; p.month = 11; p.day = 22; p.hour = 18; p.minute = 55; p.second = 0;
  return p;
}

/// A backend stand-in for the fixture card's taps: the answer to a POST /v1/authorizations body
/// for txn_id, approved (auth code 654321, ARC "00", ARPC under code) when the body's cryptogram
/// is code's MAC over mac_input, else declined bad_cryptogram. mac computes the card's MAC.
template <class Mac>
std::string fixture_answer(const std::string& body, const std::string& txn_id, const Bytes& code, const Bytes& mac_input,
                           Mac mac) {
  auto o = boost::json::parse(body).as_object();
  const Bytes cryptogram = from_hex(std::string(o.at("cryptogram").as_string())).value();
  if (cryptogram != mac(code, mac_input))
    return R"({"txn_id":")" + txn_id + R"(","decision":"declined","reason":"bad_cryptogram"})";
  Bytes in = to_bytes("ARPC");
  append(in, cryptogram);
  append(in, to_bytes("00"));
  return R"({"txn_id":")" + txn_id + R"(","decision":"approved","reason":"ok","auth_code":"654321","arc":"3030","arpc":")" +
         to_hex(mac(code, in)) + "\"}";
}

/// The JSON line otac-terminal prints last, after its human line.
inline boost::json::object last_json(const std::string& out) {
  const auto pos = out.rfind("\n{");
  REQUIRE(pos != std::string::npos);
  return boost::json::parse(out.substr(pos + 1)).as_object();
}

}  // namespace otac::terminal::test
