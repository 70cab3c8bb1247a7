// The layout of the virtual card's state file (format 2), apart from the file operations, so
// that the parser can be fuzzed and tested on bytes alone.
//
//   block 0 (4096 bytes, written only when the file is created or laid out again):
//     "OTCS"  format (1 byte, 2)  slot size (4 bytes)  SHA-256 of the 9 bytes before it
//   slot 0 at 4096, slot 1 at 4096 + slot size, each:
//     sequence (8 bytes)  length (4 bytes)  SHA-256 of (sequence, length, state)  state
//     (then whatever an earlier, longer state left; the length says where the state ends)
//
// A commit writes the whole state into the slot that does not hold the current state, with
// the next sequence number, and syncs the data: one write and one fdatasync, no rename and no
// directory sync. The current state is the intact slot with the higher sequence number. A
// write cut by a power loss leaves its slot failing its checksum, so the other slot, the state
// before the cut command, is read: the command that was cut never answered, as on a card
// whose EEPROM transaction was torn.
//
// Format 1 (one blob: "OTCS", format 1, length, SHA-256, state) is still read; the next commit
// lays the file out in format 2.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::applet::state_file {

inline constexpr std::size_t kBlock = 4096;            ///< the file header's block; slots are multiples
inline constexpr std::size_t kSlotHeader = 8 + 4 + 32;  ///< sequence, length, SHA-256
inline constexpr std::size_t kMaxBlob = 1 << 20;        ///< far above the applet's fixed capacity
inline constexpr std::size_t kMinSlot = 3 * kBlock;     ///< the applet's largest state (9,026 bytes) fits
/// The largest slot a file may declare: kMaxBlob and its header, rounded up to a block.
inline constexpr std::size_t kMaxSlot = (kMaxBlob + kSlotHeader + kBlock - 1) / kBlock * kBlock;
/// The largest state file: the header block and two of the largest slots.
inline constexpr std::size_t kMaxFile = kBlock + 2 * kMaxSlot;

/// What a state file holds. `blob` points into the bytes given to parse().
struct Parsed {
  int format = 0;                      ///< 1 or 2
  std::size_t slot_size = 0;           ///< format 2
  std::optional<std::size_t> current;  ///< format 2: the slot holding the state (0 or 1)
  std::uint64_t seq = 0;               ///< format 2: its sequence number
  ByteView blob;                       ///< the state
};

/// Reads a state file's bytes. `name` names the file in error messages. An error means that no
/// intact state could be found: the file is damaged or is not a card state.
Result<Parsed> parse(ByteView file, const std::string& name);

/// The slot size for a state of `blob_size` bytes: at least kMinSlot, a multiple of kBlock.
std::size_t slot_size_for(std::size_t blob_size);

/// A whole format-2 file: the header, `blob` with sequence `seq` in slot 0, slot 1 zeroed.
Bytes file_image(ByteView blob, std::uint64_t seq, std::size_t slot_size);

/// One slot's content (without padding): sequence, length, SHA-256, state.
Bytes slot_image(ByteView blob, std::uint64_t seq);

/// Where slot `i` (0 or 1) starts in a file with slots of `slot_size` bytes.
inline std::size_t slot_offset(std::size_t i, std::size_t slot_size) { return kBlock + i * slot_size; }

}  // namespace otac::applet::state_file
