// JSON bodies of the backend API (protocol.md §5): the terminal's requests and the parser
// for the backend's answers. Parsing is strict: an answer the terminal cannot fully
// understand is an error, and the flow turns errors into "declined".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::terminal {

/// The backend's decision.
enum class Decision { approved, declined, held };

/// One answer of POST /v1/authorizations, GET /v1/authorizations/{txn} or /v1/codes/verify.
struct BackendAnswer {
  std::string txn_id;
  Decision decision = Decision::declined;
  std::string reason;
  std::string auth_code;  ///< empty when absent
  Bytes arc;              ///< 2 bytes or empty
  Bytes arpc;             ///< 8 bytes or empty
  std::optional<std::uint32_t> expires_in;  ///< held: whole seconds left before the backend's deadline
};

/// Parses an answer. Errors (bad_value) for: not a JSON object, a missing or mistyped
/// txn_id/decision/reason, an unknown decision, arc not 4 hex digits, arpc not 16 hex
/// digits, auth_code not 1..12 printable ASCII, expires_in not an integer 0..86400 (it is
/// read only with "held"), and "approved" without auth_code, arc 3030
/// and arpc (arpc only when require_arpc: a typed display code's approval has none, as no
/// card is there to check it). Unknown extra members are ignored (the API may grow).
Result<BackendAnswer> parse_answer(std::string_view json, bool require_arpc = true);

/// The body of POST /v1/authorizations; pin_state is the card's DF35.
std::string auth_request_body(std::string_view txn_id, ByteView card, std::uint16_t list_id,
                              std::uint16_t index, std::uint16_t atc, std::uint8_t pin_state,
                              ByteView challenge, ByteView cryptogram);

/// The body of POST /v1/codes/verify; door may be empty (then omitted).
std::string code_request_body(std::string_view txn_id, ByteView card, std::string_view code,
                              std::string_view door);

/// The "error" member of a backend error body, or the body itself cut to 200 characters.
std::string error_summary(std::string_view body);

}  // namespace otac::terminal
