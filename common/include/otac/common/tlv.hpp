// BER-TLV as EMV uses it (EMV Book 3 Annex B; ISO/IEC 8825-1 subset): tags of one to three
// bytes (low five bits 11111 start a multi-byte tag, bit 8 of later bytes says "more"),
// lengths in definite form of one to three bytes (00..7F, 81 xx, 82 xx xx), constructed
// tags (bit 6 of the first byte) parsed recursively. Padding bytes 00/FF between objects
// are NOT accepted: none of our formats uses them, and accepting them would let two byte
// strings mean the same thing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::tlv {

/// A tag in its wire form, e.g. 0x9F37, 0xDF41, 0x77, 0x5F2A.
using Tag = std::uint32_t;

/// Deepest nesting parse() follows; deeper input is refused (bad_value).
inline constexpr int max_depth = 8;

/// One data object. For a constructed tag, value holds the raw encoding of the children
/// and children holds them parsed.
struct Node {
  Tag tag = 0;
  Bytes value;
  std::vector<Node> children;
  /// True when bit 6 of the tag's first byte is set.
  bool constructed() const noexcept;
};

/// True when the tag's first byte has bit 6 set.
bool is_constructed(Tag tag) noexcept;

/// Number of bytes of the tag's wire form (1..3); 0 for 0 or a malformed tag.
std::size_t tag_size(Tag tag) noexcept;

/// Parses a sequence of data objects that must cover the whole input; recurses into
/// constructed objects. Errors: truncated, bad_length (length field > 3 bytes, indefinite
/// form 80, non-minimal length such as 81 05), bad_value (tag longer than 3 bytes, tag 00,
/// nesting deeper than max_depth).
Result<std::vector<Node>> parse(ByteView data);

/// Encodes one object: tag, minimal definite length, value. Values longer than 65535
/// bytes are a programming error (std::length_error).
Bytes encode(Tag tag, ByteView value);

/// Appends encode(tag, value) to out.
void append(Bytes& out, Tag tag, ByteView value);

/// Encodes a tree of nodes (children are encoded when present, otherwise value is used).
Bytes encode(const std::vector<Node>& nodes);

/// First node with the tag at this level, or nullptr.
const Node* find(const std::vector<Node>& nodes, Tag tag) noexcept;

/// Indented human-readable dump, one object per line: "9F37 [8] 0102030405060708".
/// Input that does not parse is dumped up to the error, followed by the error message.
std::string dump(ByteView data);

}  // namespace otac::tlv
