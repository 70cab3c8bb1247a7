#include "otac/common/tlv.hpp"

#include <cstdio>
#include <stdexcept>

#include "otac/common/cursor.hpp"

namespace otac::tlv {
namespace {

std::uint8_t first_byte(Tag tag) noexcept {
  if (tag > 0xFFFF) return static_cast<std::uint8_t>(tag >> 16);
  if (tag > 0xFF) return static_cast<std::uint8_t>(tag >> 8);
  return static_cast<std::uint8_t>(tag);
}

// Reads one tag. EMV Book 3 Annex B1: low five bits all set in the first byte means more
// tag bytes follow; in each later byte, bit 8 set means yet another follows.
Tag read_tag(Cursor& c) {
  std::uint8_t b = c.u8("tag");
  if (!c.ok()) return 0;
  if (b == 0x00) {
    c.fail(Errc::bad_value, "BER-TLV: tag 00 at offset " + std::to_string(c.position() - 1));
    return 0;
  }
  Tag tag = b;
  if ((b & 0x1F) != 0x1F) return tag;
  for (int i = 1; i < 3; ++i) {
    std::uint8_t n = c.u8("tag");
    if (!c.ok()) return 0;
    tag = (tag << 8) | n;
    if ((n & 0x80) == 0) return tag;
  }
  c.fail(Errc::bad_value,
         "BER-TLV: tag longer than 3 bytes at offset " + std::to_string(c.position() - 3));
  return 0;
}

// Definite lengths only, minimal encoding only (DER-like): one value, one encoding.
std::size_t read_length(Cursor& c) {
  std::size_t at = c.position();
  std::uint8_t b = c.u8("length");
  if (!c.ok()) return 0;
  if (b < 0x80) return b;
  if (b == 0x80) {
    c.fail(Errc::bad_length, "BER-TLV: indefinite length (80) at offset " + std::to_string(at));
    return 0;
  }
  std::size_t n = b & 0x7F;
  if (n > 2) {
    c.fail(Errc::bad_length, "BER-TLV: length field of " + std::to_string(n + 1) +
                                 " bytes at offset " + std::to_string(at) + " (at most 3)");
    return 0;
  }
  std::size_t len = static_cast<std::size_t>(c.be(n, "length"));
  if (!c.ok()) return 0;
  if ((n == 1 && len < 0x80) || (n == 2 && len < 0x100)) {
    c.fail(Errc::bad_length,
           "BER-TLV: non-minimal length encoding at offset " + std::to_string(at));
    return 0;
  }
  return len;
}

Result<std::vector<Node>> parse_level(ByteView data, int depth, std::size_t base) {
  if (depth > max_depth)
    return make_error(Errc::bad_value, "BER-TLV: nesting deeper than " + std::to_string(max_depth));
  std::vector<Node> out;
  Cursor c(data, "BER-TLV");
  while (c.ok() && !c.empty()) {
    Node node;
    node.tag = read_tag(c);
    std::size_t len = read_length(c);
    ByteView v = c.take(len, "value");
    if (!c.ok()) break;
    node.value.assign(v.begin(), v.end());
    if (node.constructed()) {
      auto kids = parse_level(v, depth + 1, base + c.position() - len);
      if (!kids) {
        char t[16];
        std::snprintf(t, sizeof t, "%X", node.tag);
        return make_error(kids.error().code, kids.error().message + " (inside " + t + ")");
      }
      node.children = std::move(*kids);
    }
    out.push_back(std::move(node));
  }
  if (auto f = c.finish(); !f) {
    Error e = f.error();
    if (base != 0) e.message += " (object at offset " + std::to_string(base) + ")";
    return e;
  }
  return out;
}

void append_tag(Bytes& out, Tag tag) {
  if (tag > 0xFFFF) out.push_back(static_cast<std::uint8_t>(tag >> 16));
  if (tag > 0xFF) out.push_back(static_cast<std::uint8_t>(tag >> 8));
  out.push_back(static_cast<std::uint8_t>(tag));
}

void append_length(Bytes& out, std::size_t len) {
  if (len < 0x80) {
    out.push_back(static_cast<std::uint8_t>(len));
  } else if (len <= 0xFF) {
    out.push_back(0x81);
    out.push_back(static_cast<std::uint8_t>(len));
  } else if (len <= 0xFFFF) {
    out.push_back(0x82);
    out.push_back(static_cast<std::uint8_t>(len >> 8));
    out.push_back(static_cast<std::uint8_t>(len));
  } else {
    throw std::length_error("BER-TLV value longer than 65535 bytes");
  }
}

std::string tag_hex(Tag tag) {
  char t[16];
  std::snprintf(t, sizeof t, tag > 0xFFFF ? "%06X" : tag > 0xFF ? "%04X" : "%02X", tag);
  return t;
}

void dump_nodes(std::string& out, const std::vector<Node>& nodes, int indent) {
  for (const auto& n : nodes) {
    out.append(static_cast<std::size_t>(indent) * 2, ' ');
    out += tag_hex(n.tag) + " [" + std::to_string(n.value.size()) + "]";
    if (n.constructed()) {
      out += "\n";
      dump_nodes(out, n.children, indent + 1);
    } else {
      out += " " + to_hex(n.value) + "\n";
    }
  }
}

}  // namespace

bool is_constructed(Tag tag) noexcept { return (first_byte(tag) & 0x20) != 0; }

bool Node::constructed() const noexcept { return is_constructed(tag); }

std::size_t tag_size(Tag tag) noexcept {
  if (tag == 0) return 0;
  if (tag > 0xFFFFFF) return 0;
  return tag > 0xFFFF ? 3 : tag > 0xFF ? 2 : 1;
}

Result<std::vector<Node>> parse(ByteView data) { return parse_level(data, 0, 0); }

void append(Bytes& out, Tag tag, ByteView value) {
  append_tag(out, tag);
  append_length(out, value.size());
  out.insert(out.end(), value.begin(), value.end());
}

Bytes encode(Tag tag, ByteView value) {
  Bytes out;
  out.reserve(value.size() + 6);
  append(out, tag, value);
  return out;
}

Bytes encode(const std::vector<Node>& nodes) {
  Bytes out;
  for (const auto& n : nodes) {
    if (n.constructed() && !n.children.empty())
      append(out, n.tag, encode(n.children));
    else
      append(out, n.tag, n.value);
  }
  return out;
}

const Node* find(const std::vector<Node>& nodes, Tag tag) noexcept {
  for (const auto& n : nodes)
    if (n.tag == tag) return &n;
  return nullptr;
}

std::string dump(ByteView data) {
  std::string out;
  auto nodes = parse(data);
  if (nodes) {
    dump_nodes(out, *nodes, 0);
    return out;
  }
  // Show what did parse: walk top-level objects one at a time until the error.
  Cursor c(data, "BER-TLV");
  while (c.ok() && !c.empty()) {
    std::size_t start = c.position();
    read_tag(c);
    std::size_t len = read_length(c);
    c.take(len, "value");
    if (!c.ok()) break;
    auto one = parse(data.subspan(start, c.position() - start));
    if (!one) break;
    dump_nodes(out, *one, 0);
  }
  out += "error: " + nodes.error().message + "\n";
  return out;
}

}  // namespace otac::tlv
