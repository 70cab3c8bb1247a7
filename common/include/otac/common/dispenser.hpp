// The cash dispenser line protocol (docs/protocol.md §8): what the terminal's dispenser driver
// and the dispenser emulator (hw/) exchange over a Unix stream socket. One request line, one
// reply line, ASCII, LF-terminated, at most kMaxLine bytes with the LF. Codec only, no I/O.
//
//   STATUS                         -> OK STATUS <state> <cassettes>
//   DISPENSE <amount> <seconds>    -> OK DISPENSED <amount>
//                                   | ERR <JAM|PARTIAL|SHUTTER|RETRACTED|EMPTY> <handed>
//   FAULT <none|jam|partial|shutter|not_taken|empty>   -> OK FAULT <kind>   (emulator only)
//   any malformed line             -> ERR BAD_REQUEST 0
//
// <cassettes> is "DENOMxCOUNT" joined by ',' (2000x50,5000x20; "-" for none), amounts are
// minor units of the dispenser's one currency, <seconds> is how long the customer has to take
// the notes before they are retracted, <handed> is what the customer got.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/result.hpp"

namespace otac::dispenser {

/// Longest line, LF included.
inline constexpr std::size_t kMaxLine = 256;
/// At most this many cassettes.
inline constexpr std::size_t kMaxCassettes = 8;
/// Largest amount or denomination (12 digits, as EMV's 9F02).
inline constexpr std::int64_t kMaxAmount = 999'999'999'999;
/// Most notes one cassette may hold.
inline constexpr std::uint32_t kMaxNotes = 100'000;
/// Longest take-timeout a request may give.
inline constexpr std::uint32_t kMaxTakeSeconds = 600;

/// One cassette: notes of one denomination.
struct Cassette {
  std::int64_t denomination = 0;  ///< minor units per note, >= 1
  std::uint32_t count = 0;        ///< notes left
  bool operator==(const Cassette&) const = default;
};

/// Faults the emulator injects into its next DISPENSE.
enum class Fault : std::uint8_t { none, jam, partial, shutter, not_taken, empty };

/// How a DISPENSE ended. Every status but `dispensed` leads to a reversal (DESIGN.md §6).
enum class Status : std::uint8_t {
  dispensed,  ///< all notes presented and taken
  jam,        ///< jammed before any note was presented
  partial,    ///< some notes presented and taken, then a jam
  shutter,    ///< the shutter did not open in time; the notes were retracted
  retracted,  ///< presented but not taken in time, then retracted
  empty,      ///< the cassettes cannot make the amount; nothing moved
  bad_request,  ///< the dispenser did not understand the request
};

/// A request line, parsed.
struct Request {
  enum class Kind : std::uint8_t { status, dispense, fault } kind = Kind::status;
  std::int64_t amount = 0;          ///< dispense
  std::uint32_t take_seconds = 0;   ///< dispense
  Fault fault = Fault::none;        ///< fault
};

/// A reply line, parsed.
struct Reply {
  enum class Kind : std::uint8_t { status, dispense, fault } kind = Kind::status;
  std::string state;                ///< status: "ready" or a word naming the problem
  std::vector<Cassette> cassettes;  ///< status
  Status status = Status::dispensed;  ///< dispense
  std::int64_t handed = 0;          ///< dispense: minor units the customer got
  Fault fault = Fault::none;        ///< fault
};

const char* fault_name(Fault f) noexcept;
const char* status_name(Status s) noexcept;

/// Parses one request line (without its LF). Strict: single spaces, no trailing text.
Result<Request> parse_request(std::string_view line);
/// Parses one reply line (without its LF).
Result<Reply> parse_reply(std::string_view line);
/// Parses "2000x50,5000x20" (or "-"): distinct denominations, at most kMaxCassettes.
Result<std::vector<Cassette>> parse_cassettes(std::string_view text);

/// The request as a line, LF included.
std::string encode(const Request& r);
/// The reply as a line, LF included.
std::string encode(const Reply& r);
/// "2000x50,5000x20", or "-" for none.
std::string encode_cassettes(const std::vector<Cassette>& c);

/// The notes to pay `amount` exactly from the cassettes (count per cassette, same order), or
/// an empty vector if they cannot (or the bounded search gives up). Largest notes first.
std::vector<std::uint32_t> plan_notes(const std::vector<Cassette>& cassettes, std::int64_t amount);

}  // namespace otac::dispenser
