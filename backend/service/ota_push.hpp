// Lists over SIM OTA: the E1 load-list command wrapped in a TS 102 225 command packet and
// split into SMS parts (protocol.md §6, §7); and the card's request packets (§2.4).
// Internal to the service; no I/O besides the Store transaction it is given.
#pragma once

#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"
#include "store.hpp"

namespace otac::backend {

/// The most SMS parts one packet may take: the applet reassembles at most 16.
inline constexpr std::size_t kMaxParts = 16;

/// One SMS part: UDH (without UDHL) and the user data after it.
struct SmsPart {
  Bytes udh;
  Bytes payload;
};

/// The E1 inner command for a list.
Bytes encode_load_list(std::uint16_t list_id, bool activate_now, const std::vector<SecretBytes>& keys);

/// The E3 inner command: set signature key S (protocol.md 6.1).
Bytes encode_set_signature_key(const SecretBytes& s);

/// The E4 inner command: the server public point and the CA's ECDSA signature over it.
Bytes encode_server_key(ByteView server_point, ByteView ca_signature);

/// The E5 inner command (protocol.md 6.1.2): the codes AES-128-CBC encrypted under a fresh
/// session key, the session key wrapped for the card's public key (RSA-OAEP-SHA256, or an
/// ephemeral P-256 point with ECDH + HKDF info "OTAC-E5" || N), CD by the server key over
/// C1 C2 C4 CC C5. card_spki is the card's DER SubjectPublicKeyInfo.
Result<Bytes> encode_load_list_asymmetric(std::uint16_t list_id, bool activate_now, const std::vector<SecretBytes>& keys,
                                          ByteView card_spki, ByteView n, const ServerKeyRecord& server);

/// ECDSA P-256 with SHA-256 (DER) by a server key: inside the token when one holds it, else
/// with the key's PKCS#8 copy from the store.
Result<Bytes> sign_with_server_key(const ServerKeyRecord& key, ByteView message);

/// The most codes one E5 packet takes within kMaxParts SMS (with CF): about 107 for an RSA-2048
/// card (CC is 256 bytes) and 119 for P-256; we keep a margin: 100 and 110.
std::uint16_t max_e5_codes(ByteView card_spki);

/// Checks that a DER SubjectPublicKeyInfo is a key E5 can wrap for: RSA-2048 or P-256.
Result<void> check_card_public_key(ByteView spki);

/// Splits a command packet into SMS parts: one part with UDH 70 00, or concatenated parts
/// with 00 03 ref total seq (and 70 00 in the first). bad_length beyond kMaxParts.
Result<std::vector<SmsPart>> split_packet(ByteView packet, std::uint8_t ref);

/// Builds the packet for inner data to the card (SPI 16 39, KIc/KID from the card's
/// algorithm and key version, TAR 4F5443, next counter) and queues its parts. Uses the
/// card's current K. When the card is known to hold a signature key S (Tx::card_security),
/// CF = HMAC-SHA-256(S, inner) is appended as the last inner TLV.
/// kind/ref are remembered (Tx::record_ota_sent) so that the PoR can be matched.
/// Returns the packet's counter.
Result<std::uint64_t> enqueue_packet(Tx& tx, const CardRecord& card, ByteView inner, UnixTime now, std::string_view kind,
                            std::int64_t ref);

/// A PoR after it verified.
struct PorResult {
  Bytes n;
  std::uint64_t counter = 0;
  std::uint8_t rsc = 0;
  Bytes data;                  ///< additional response data: the inner status word
};

/// Opens a PoR (UDH IEI 71) from the card with that MSISDN under its K, pending K' or retired K.
Result<PorResult> open_por(Tx& tx, std::string_view from, ByteView packet);

/// Which of a card's keys a message from it verified under (protocol.md 6.3).
enum class KeyUsed : std::uint8_t {
  current,  ///< K
  pending,  ///< K': the card has applied the rotation
  retired,  ///< the K before the last rotation: sealed before the card switched
};

/// A card request (F1 template) after its CC verified.
struct CardRequest {
  Bytes n;
  std::uint8_t type = 0;       ///< 01 init, 02 refresh, 03 key-rotation proof
  std::uint16_t active_list = 0;
  std::uint16_t unused = 0;
  std::uint8_t key_version = 0;
  KeyUsed key = KeyUsed::current;  ///< which of the card's keys the CC verified under
};

/// Opens a card-originated command packet (UDH IEI 70): finds the card by N in the clear
/// data, verifies the CC under K (or the pending K', or the retired K), checks and advances
/// the counter.
Result<CardRequest> open_card_request(Tx& tx, ByteView packet);

}  // namespace otac::backend
