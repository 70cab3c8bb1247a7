// ISO/IEC 7816-4 status words (clause 5.6) in one table, plus the ones our applet uses.
#pragma once

#include <cstdint>
#include <string>

#include "otac/common/result.hpp"

namespace otac::sw {

inline constexpr std::uint16_t ok = 0x9000;
inline constexpr std::uint16_t verify_failed = 0x6300;           ///< no information given
inline constexpr std::uint16_t wrong_length = 0x6700;
inline constexpr std::uint16_t security_not_satisfied = 0x6982;
inline constexpr std::uint16_t auth_method_blocked = 0x6983;
inline constexpr std::uint16_t conditions_not_satisfied = 0x6985;
inline constexpr std::uint16_t wrong_data = 0x6A80;
inline constexpr std::uint16_t function_not_supported = 0x6A81;
inline constexpr std::uint16_t file_not_found = 0x6A82;
inline constexpr std::uint16_t record_not_found = 0x6A83;
inline constexpr std::uint16_t not_enough_memory = 0x6A84;
inline constexpr std::uint16_t incorrect_p1p2 = 0x6A86;
inline constexpr std::uint16_t referenced_data_not_found = 0x6A88;
inline constexpr std::uint16_t wrong_p1p2 = 0x6B00;
inline constexpr std::uint16_t ins_not_supported = 0x6D00;
inline constexpr std::uint16_t cla_not_supported = 0x6E00;
inline constexpr std::uint16_t no_precise_diagnosis = 0x6F00;

/// One row of the status-word table: what the word means to people, to programs, and to a
/// terminal that must decline a transaction because the card answered it.
struct Meaning {
  std::uint16_t sw;
  const char* meaning;  ///< ISO 7816-4 wording, with our applet's sense in brackets
  Errc errc;            ///< the error a program gets for it (check())
  const char* reason;   ///< decline reason (protocol.md §5.1), or nullptr for "card_error"
  const char* hint;     ///< a sentence for people when reason is set, else nullptr
};

/// The table row of an exact status word, or nullptr (63Cx, 61xx, 6Cxx have no row).
const Meaning* lookup(std::uint16_t s) noexcept;
/// The error code of a status word: the row's, or by its class (63Cx bad_mac, 6Cxx bad_length).
Errc to_errc(std::uint16_t s) noexcept;
/// OK for 9000/61xx; otherwise an Error with to_errc(s) and describe(s).
Result<void> check(std::uint16_t s);
/// The decline reason for a card that answered s: the row's, "pin_blocked" for 63C0, else
/// "card_error".
const char* decline_reason(std::uint16_t s) noexcept;

/// 61xx: SW2 more bytes available (GET RESPONSE with Le = SW2, 00 = 256).
bool is_bytes_available(std::uint16_t s) noexcept;
/// 6Cxx: wrong Le; SW2 is the exact length to ask for (00 = 256).
bool is_wrong_le(std::uint16_t s) noexcept;
/// 63Cx: verification failed, x tries left.
bool is_tries_left(std::uint16_t s) noexcept;
/// Tries left encoded in 63Cx (0..15).
int tries_left(std::uint16_t s) noexcept;
/// 63Cx for n tries left (n clamped to 0..15).
std::uint16_t tries(int n) noexcept;
/// "1 try left", "2 tries left": the words people see for the tries of a 63Cx.
std::string tries_left_text(int n);
/// 9000 or 61xx (normal processing).
bool is_success(std::uint16_t s) noexcept;

/// "6A82 file or application not found", "63C2 verification failed, 2 tries left",
/// "61 10: 16 more bytes available"; unknown words get "unknown status".
std::string describe(std::uint16_t s);

}  // namespace otac::sw
