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

/// The JSON line otac-terminal prints last, after its human line.
inline boost::json::object last_json(const std::string& out) {
  const auto pos = out.rfind("\n{");
  REQUIRE(pos != std::string::npos);
  return boost::json::parse(out.substr(pos + 1)).as_object();
}

}  // namespace otac::terminal::test
