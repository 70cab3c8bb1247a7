// The applet's persistent state and its fixed-size serialization. Internal.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "otac/applet/applet.hpp"
#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::applet {

enum class Life : std::uint8_t { blank = 0, pin_set = 1, activated = 2, blocked = 3 };

inline constexpr std::uint8_t pin_tries_max = 3;
inline constexpr std::uint8_t puk_tries_max = 10;
inline constexpr std::size_t max_pin_doors = 4;
inline constexpr std::size_t max_outbox_entry = 255;
inline constexpr std::size_t max_private_der = 1300;  // RSA-2048 PKCS#8 is about 1218 bytes

/// One list of OTACs. A slot is free when id == 0.
struct ListSlot {
  std::uint16_t id = 0;
  std::uint16_t count = 0;
  std::array<std::uint8_t, (max_codes_per_list + 7) / 8> used{};
  std::array<std::uint8_t, max_codes_per_list * 16> keys{};

  bool held() const { return id != 0; }
  bool is_used(std::size_t i) const { return (used[i / 8] >> (i % 8)) & 1; }
  void burn(std::size_t i) { used[i / 8] = static_cast<std::uint8_t>(used[i / 8] | (1u << (i % 8))); }
  std::uint16_t unused() const;
  /// Lowest unused index, or count when none.
  std::uint16_t next() const;
  ByteView key(std::size_t i) const { return ByteView(keys).subspan(i * 16, 16); }
  void clear();
};

/// Everything the card remembers across power cycles.
struct CardState {
  Life life = Life::blank;
  std::array<std::uint8_t, 8> pin{};
  std::uint8_t pin_tries = pin_tries_max;
  std::array<std::uint8_t, 8> puk{};
  std::uint8_t puk_tries = puk_tries_max;
  std::array<std::uint8_t, 8> n{};
  std::array<std::uint8_t, 16> k{};
  std::uint8_t algorithm = 0;  ///< 01 3DES2, 02 AES-128 (ota::CardAlgorithm)
  std::uint8_t key_version = 1;
  std::string server;          ///< server SMS number, at most 21 characters
  std::uint64_t ota_counter = 0;  ///< highest accepted counter of incoming packets
  std::uint64_t mo_counter = 0;   ///< counter of the last card request sent
  std::uint16_t atc = 0;
  std::uint16_t threshold = 20;
  bool refresh_pending = false;
  std::uint8_t empty_polls = 0;  ///< FETCHes of an empty outbox since the pending request went out (kept with refresh_pending)
  std::uint64_t pin_limit = 0;     ///< amount in minor units above which the PIN is needed; 0 none
  std::vector<std::string> pin_doors;  ///< door ids that need the PIN, at most max_pin_doors
  std::uint16_t last_list_id = 0;  ///< highest list id ever loaded
  std::array<ListSlot, max_lists> lists{};
  bool has_sig_key = false;
  std::array<std::uint8_t, 16> sig_key{};
  bool has_ca_key = false;
  std::array<std::uint8_t, 65> ca_point{};
  bool has_server_key = false;
  std::array<std::uint8_t, 65> server_point{};
  std::uint8_t key_pair = 0;  ///< 00 none, 01 RSA-2048, 02 P-256 (GENERATE KEY PAIR)
  std::uint16_t private_len = 0;
  std::array<std::uint8_t, max_private_der> private_der{};  ///< PKCS#8 DER, private_len bytes used
  std::array<std::uint8_t, 2> last_arc{};
  std::uint8_t last_outcome = 0;  ///< 00 none, 01 confirmed, 02 ARPC failed
  std::vector<Bytes> outbox;      ///< SEND SHORT MESSAGE commands, oldest first

  CardState() = default;
  CardState(const CardState&) = default;
  CardState& operator=(const CardState&) = default;
  ~CardState();

  /// Unused codes in all lists.
  std::uint16_t unused() const;
  /// The list codes are taken from: the held list with the lowest id that has unused codes.
  ListSlot* current();
  const ListSlot* current() const;
  /// Highest held list id (0 when none).
  std::uint16_t latest_list() const;
  std::uint8_t lists_held() const;
  /// The slot a new list goes into (free, or holding no unused code); nullptr when both hold codes.
  ListSlot* free_slot();
  bool has_room() const { return const_cast<CardState*>(this)->free_slot() != nullptr; }
};

/// Fixed-layout encoding; decode refuses anything beyond the fixed capacity.
Bytes encode_state(const CardState& s);
Result<CardState> decode_state(ByteView blob);

}  // namespace otac::applet
