#include "otac/common/protocol.hpp"

#include <stdexcept>

#include "otac/common/crypto.hpp"

namespace otac::protocol {
namespace {

std::string tag_hex(tlv::Tag t) { return to_hex(be_bytes(t, t > 0xFFFF ? 3 : t > 0xFF ? 2 : 1)); }

// One allowed field of a template: its tag, its length range and whether it must be there.
struct FieldSpec {
  tlv::Tag tag;
  std::size_t min, max;
  bool required;
};

// The primitive children of a template, each allowed tag at most once with a length in
// range, every required tag present. found[i] points at the value of spec i, or is null.
template <std::size_t N>
Result<std::array<const Bytes*, N>> collect(const std::vector<tlv::Node>& nodes, const FieldSpec (&spec)[N],
                                            const char* what) {
  std::array<const Bytes*, N> found{};
  for (const auto& node : nodes) {
    std::size_t i = 0;
    while (i < N && spec[i].tag != node.tag) ++i;
    if (i == N || node.constructed())
      return make_error(Errc::bad_value, std::string(what) + ": unexpected tag " + tag_hex(node.tag));
    if (found[i]) return make_error(Errc::bad_value, std::string(what) + ": tag " + tag_hex(node.tag) + " appears twice");
    if (node.value.size() < spec[i].min || node.value.size() > spec[i].max)
      return make_error(Errc::bad_length, std::string(what) + ": tag " + tag_hex(node.tag) + " has a wrong length (" +
                                              std::to_string(node.value.size()) + " bytes)");
    found[i] = &node.value;
  }
  for (std::size_t i = 0; i < N; ++i)
    if (spec[i].required && !found[i])
      return make_error(Errc::bad_value, std::string(what) + ": required tag " + tag_hex(spec[i].tag) + " is missing");
  return found;
}

// Packed BCD (EMV "n") to a number; every nibble must be a digit.
Result<std::int64_t> bcd_value(ByteView v, const char* what) {
  std::int64_t n = 0;
  for (auto b : v) {
    const int hi = b >> 4, lo = b & 0x0F;
    if (hi > 9 || lo > 9) return make_error(Errc::bad_value, std::string("challenge: ") + what + " is not BCD");
    n = n * 100 + hi * 10 + lo;
  }
  return n;
}

// n digits of v as packed BCD in n/2 bytes.
Bytes bcd(std::uint64_t v, std::size_t digits) {
  Bytes out(digits / 2, 0);
  for (std::size_t i = out.size(); i-- > 0;) {
    const auto lo = static_cast<std::uint8_t>(v % 10);
    v /= 10;
    const auto hi = static_cast<std::uint8_t>(v % 10);
    v /= 10;
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  if (v != 0) throw std::invalid_argument("BCD value has more than " + std::to_string(digits) + " digits");
  return out;
}

std::uint16_t u16(const Bytes& v) { return static_cast<std::uint16_t>(v[0] << 8 | v[1]); }

template <std::size_t N>
void copy_to(std::array<std::uint8_t, N>& dst, const Bytes& src) {
  std::copy(src.begin(), src.end(), dst.begin());
}

// The one top-level template of tag t in data, and nothing else.
Result<tlv::Node> single_template(ByteView data, tlv::Tag t, const char* what) {
  auto nodes = tlv::parse(data);
  if (!nodes) return make_error(nodes.error().code, std::string(what) + ": " + nodes.error().message);
  if (nodes->size() != 1 || (*nodes)[0].tag != t)
    return make_error(Errc::bad_value, std::string(what) + ": expected exactly one template " + tag_hex(t));
  return std::move((*nodes)[0]);
}

}  // namespace

Result<Challenge> Challenge::parse(ByteView data) {
  auto nodes = tlv::parse(data);
  if (!nodes) return make_error(nodes.error().code, "challenge: " + nodes.error().message);
  static constexpr FieldSpec spec[] = {
      {tag::version, 1, 1, true},   {tag::mode, 1, 1, true},      {tag::unpredictable_number, 8, 8, true},
      {tag::amount, 6, 6, true},    {tag::currency, 2, 2, true},  {tag::date, 3, 3, true},
      {tag::time, 3, 3, true},      {tag::txn_type, 1, 1, true},  {tag::terminal_id, 8, 8, true},
      {tag::door_id, 1, 16, false}, {tag::pin_block, 8, 8, false}, {tag::list_id, 2, 2, false},
      {tag::index, 2, 2, false}};
  auto f = collect(*nodes, spec, "challenge");
  if (!f) return f.error();
  const auto& v = *f;
  Challenge c;
  // 02 carries the card's PIN state in the MAC; 01 did not and is refused (no downgrade).
  c.version = (*v[0])[0];
  if (c.version != protocol::version)
    return make_error(Errc::unsupported, "challenge: protocol version " + to_hex(*v[0]) + " is not supported (02 is)");
  const std::uint8_t mode = (*v[1])[0];
  if (mode != 0x01 && mode != 0x02) return make_error(Errc::bad_value, "challenge: mode must be 01 (POS) or 02 (door)");
  c.mode = static_cast<Mode>(mode);
  if (c.door_mode() != (v[9] != nullptr))
    return make_error(Errc::bad_value, "challenge: DF32 door id is required in door mode and only there");
  copy_to(c.un, *v[2]);
  auto amount = bcd_value(*v[3], "amount 9F02");
  if (!amount) return amount.error();
  c.amount_minor = *amount;
  auto currency = bcd_value(*v[4], "currency 5F2A");
  if (!currency) return currency.error();
  c.currency_code = static_cast<std::uint16_t>(*currency);
  if (auto d = bcd_value(*v[5], "date 9A"); !d) return d.error();
  if (auto t = bcd_value(*v[6], "time 9F21"); !t) return t.error();
  copy_to(c.date, *v[5]);
  copy_to(c.time, *v[6]);
  c.type = (*v[7])[0];
  c.terminal.assign(v[8]->begin(), v[8]->end());
  if (v[9]) c.door.emplace(v[9]->begin(), v[9]->end());
  if (v[10]) c.pin.emplace(*v[10]);
  if (v[11]) c.list = u16(*v[11]);
  if (v[12]) c.index = u16(*v[12]);
  for (auto& n : *nodes)  // the PIN block now lives only in c.pin
    if (n.tag == tag::pin_block) secure_zero(n.value.data(), n.value.size());
  return c;
}

Bytes Challenge::encode() const {
  if (amount_minor < 0) throw std::invalid_argument("challenge: negative amount");
  Bytes out;
  tlv::append(out, tag::version, Bytes{version});
  tlv::append(out, tag::mode, Bytes{static_cast<std::uint8_t>(mode)});
  tlv::append(out, tag::unpredictable_number, un);
  tlv::append(out, tag::amount, bcd(static_cast<std::uint64_t>(amount_minor), 12));
  tlv::append(out, tag::currency, bcd(currency_code, 4));
  tlv::append(out, tag::date, date);
  tlv::append(out, tag::time, time);
  tlv::append(out, tag::txn_type, Bytes{type});
  tlv::append(out, tag::terminal_id, as_bytes(terminal));
  if (door) tlv::append(out, tag::door_id, as_bytes(*door));
  if (list) tlv::append(out, tag::list_id, be_bytes(*list, 2));
  if (index) tlv::append(out, tag::index, be_bytes(*index, 2));
  if (pin) tlv::append(out, tag::pin_block, pin->view());
  return out;
}

Result<CardAnswer> CardAnswer::parse(ByteView data) {
  auto t = single_template(data, tag::answer, "card answer");
  if (!t) return t.error();
  static constexpr FieldSpec spec[] = {{tag::card_id, 8, 8, true}, {tag::list_id, 2, 2, true},
                                       {tag::index, 2, 2, true},   {tag::atc, 2, 2, true},
                                       {tag::cryptogram, 8, 8, true}, {tag::pin_state, 1, 1, true}};
  auto f = collect(t->children, spec, "card answer");
  if (!f) return f.error();
  const auto& v = *f;
  CardAnswer a;
  a.n = *v[0];
  a.list_id = u16(*v[1]);
  a.index = u16(*v[2]);
  a.atc = u16(*v[3]);
  a.cryptogram = *v[4];
  a.pin_state = (*v[5])[0];
  return a;
}

Bytes CardAnswer::encode() const {
  Bytes body;
  tlv::append(body, tag::card_id, n);
  tlv::append(body, tag::list_id, be_bytes(list_id, 2));
  tlv::append(body, tag::index, be_bytes(index, 2));
  tlv::append(body, tag::atc, be_bytes(atc, 2));
  tlv::append(body, tag::cryptogram, cryptogram);
  tlv::append(body, tag::pin_state, Bytes{pin_state});
  return tlv::encode(tag::answer, body);
}

Bytes mac_input(const Challenge& c, const CardAnswer& a) {
  Bytes m;
  tlv::append(m, tag::version, Bytes{c.version});
  tlv::append(m, tag::mode, Bytes{static_cast<std::uint8_t>(c.mode)});
  tlv::append(m, tag::unpredictable_number, c.un);
  tlv::append(m, tag::amount, bcd(static_cast<std::uint64_t>(c.amount_minor < 0 ? 0 : c.amount_minor), 12));
  tlv::append(m, tag::currency, bcd(c.currency_code, 4));
  tlv::append(m, tag::date, c.date);
  tlv::append(m, tag::time, c.time);
  tlv::append(m, tag::txn_type, Bytes{c.type});
  tlv::append(m, tag::terminal_id, as_bytes(c.terminal));
  if (c.door_mode() && c.door) tlv::append(m, tag::door_id, as_bytes(*c.door));
  tlv::append(m, tag::card_id, a.n);
  tlv::append(m, tag::list_id, be_bytes(a.list_id, 2));
  tlv::append(m, tag::index, be_bytes(a.index, 2));
  tlv::append(m, tag::atc, be_bytes(a.atc, 2));
  tlv::append(m, tag::pin_state, Bytes{a.pin_state});
  return m;
}

Bytes arpc_input(ByteView cryptogram, ByteView arc) {
  Bytes in = to_bytes("ARPC");
  append(in, cryptogram);
  append(in, arc);
  return in;
}

Bytes display_input(ByteView n, std::uint16_t list_id, std::uint16_t index) {
  Bytes in = to_bytes("DISPLAY");
  append(in, n);
  append(in, be_bytes(list_id, 2));
  append(in, be_bytes(index, 2));
  return in;
}

std::string display_digits(ByteView mac) {
  const std::uint32_t v =
      ((std::uint32_t{mac[0]} << 24) | (std::uint32_t{mac[1]} << 16) | (std::uint32_t{mac[2]} << 8) | mac[3]) & 0x7FFFFFFFu;
  std::string s = std::to_string(v % 100000000u);
  return std::string(8 - s.size(), '0') + s;
}

Result<Fci> Fci::parse(ByteView data) {
  auto t = single_template(data, tag::fci, "FCI");
  if (!t) return t.error();
  static constexpr FieldSpec outer[] = {{tag::df_name, 1, 16, true}};
  const tlv::Node* prop = nullptr;
  std::vector<tlv::Node> names;
  for (const auto& n : t->children) {
    if (n.tag == tag::fci_proprietary) {
      if (prop) return make_error(Errc::bad_value, "FCI: tag A5 appears twice");
      prop = &n;
    } else {
      names.push_back(n);
    }
  }
  auto o = collect(names, outer, "FCI");
  if (!o) return o.error();
  if (!ct_equal(*(*o)[0], aid)) return make_error(Errc::bad_value, "FCI: the AID is not the OTAC applet's");
  if (!prop) return make_error(Errc::bad_value, "FCI: required tag A5 is missing");
  static constexpr FieldSpec inner[] = {{tag::fci_version, 1, 1, true}, {tag::capabilities, 2, 2, true},
                                        {tag::card_state, 1, 1, true}};
  auto f = collect(prop->children, inner, "FCI");
  if (!f) return f.error();
  Fci fci;
  fci.version = (*(*f)[0])[0];
  fci.capabilities = u16(*(*f)[1]);
  fci.state = (*(*f)[2])[0];
  return fci;
}

Bytes Fci::encode() const {
  Bytes a5;
  tlv::append(a5, tag::fci_version, Bytes{version});
  tlv::append(a5, tag::capabilities, be_bytes(capabilities, 2));
  tlv::append(a5, tag::card_state, Bytes{state});
  Bytes body;
  tlv::append(body, tag::df_name, aid);
  tlv::append(body, tag::fci_proprietary, a5);
  return tlv::encode(tag::fci, body);
}

Bytes LoadListAsymmetric::signed_part() const {
  Bytes out;
  tlv::append(out, tag::c_list_id, be_bytes(list_id, 2));
  tlv::append(out, tag::c_activation, Bytes{activation});
  tlv::append(out, tag::c_count, be_bytes(count, 2));
  tlv::append(out, tag::c_wrapped_key, wrapped_key);
  tlv::append(out, tag::c_keys, encrypted_keys);
  return out;
}

namespace {

// Wraps body (wiped afterwards: it may hold keys) in the command's template.
Bytes wrap(tlv::Tag t, Bytes& body) {
  Bytes out = tlv::encode(t, body);
  secure_zero(body.data(), body.size());
  return out;
}

struct Encoder {
  Bytes operator()(const LoadList& c) const {
    Bytes body;
    tlv::append(body, tag::c_list_id, be_bytes(c.list_id, 2));
    tlv::append(body, tag::c_activation, Bytes{c.activation});
    tlv::append(body, tag::c_count, be_bytes(c.count, 2));
    tlv::append(body, tag::c_keys, c.keys.view());
    return wrap(tag::load_list, body);
  }
  Bytes operator()(const ReplaceKey& c) const {
    Bytes body;
    tlv::append(body, tag::c_new_key, c.key.view());
    tlv::append(body, tag::c_key_version, Bytes{c.key_version});
    return wrap(tag::replace_key, body);
  }
  Bytes operator()(const SetSignatureKey& c) const {
    Bytes body;
    tlv::append(body, tag::c_signature_key, c.key.view());
    return wrap(tag::set_signature_key, body);
  }
  Bytes operator()(const SetServerKey& c) const {
    Bytes body;
    tlv::append(body, tag::c_server_point, c.point);
    tlv::append(body, tag::c_ca_signature, c.signature);
    return wrap(tag::set_server_key, body);
  }
  Bytes operator()(const LoadListAsymmetric& c) const {
    Bytes body = c.signed_part();
    tlv::append(body, tag::c_list_signature, c.signature);
    return wrap(tag::load_list_asymmetric, body);
  }
};

Result<InnerCommand> bad(const char* what, const char* why) {
  return make_error(Errc::bad_value, std::string(what) + ": " + why);
}

}  // namespace

Bytes encode_inner(const InnerCommand& cmd) { return std::visit(Encoder{}, cmd); }

Result<InnerCommand> decode_inner(const tlv::Node& node) {
  // Field length limits: what one 16-SMS packet could carry at most.
  constexpr std::size_t big = 0xFFFF;
  switch (node.tag) {
    case tag::load_list: {
      static constexpr FieldSpec spec[] = {{tag::c_list_id, 2, 2, true}, {tag::c_activation, 1, 1, true},
                                           {tag::c_count, 2, 2, true}, {tag::c_keys, 0, big, true}};
      auto f = collect(node.children, spec, "E1 load list");
      if (!f) return f.error();
      LoadList c;
      c.list_id = u16(*(*f)[0]);
      c.activation = (*(*f)[1])[0];
      c.count = u16(*(*f)[2]);
      c.keys = SecretBytes(*(*f)[3]);
      if (c.list_id == 0) return bad("E1 load list", "list id 0 is not allowed");
      if (c.activation > 1) return bad("E1 load list", "activation must be 00 or 01");
      if (c.count == 0 || c.keys.size() != c.count * 16u) return bad("E1 load list", "C5 must hold count x 16 bytes, count >= 1");
      return InnerCommand{std::move(c)};
    }
    case tag::replace_key: {
      static constexpr FieldSpec spec[] = {{tag::c_new_key, 16, 16, true}, {tag::c_key_version, 1, 1, true}};
      auto f = collect(node.children, spec, "E2 replace key");
      if (!f) return f.error();
      ReplaceKey c;
      c.key = SecretBytes(*(*f)[0]);
      c.key_version = (*(*f)[1])[0];
      if (c.key_version == 0 || c.key_version > 0x0F) return bad("E2 replace key", "key version must be 1..15");
      return InnerCommand{std::move(c)};
    }
    case tag::set_signature_key: {
      static constexpr FieldSpec spec[] = {{tag::c_signature_key, 16, 16, true}};
      auto f = collect(node.children, spec, "E3 set signature key");
      if (!f) return f.error();
      return InnerCommand{SetSignatureKey{SecretBytes(*(*f)[0])}};
    }
    case tag::set_server_key: {
      static constexpr FieldSpec spec[] = {{tag::c_server_point, 65, 65, true}, {tag::c_ca_signature, 0, 80, true}};
      auto f = collect(node.children, spec, "E4 set server key");
      if (!f) return f.error();
      return InnerCommand{SetServerKey{*(*f)[0], *(*f)[1]}};
    }
    case tag::load_list_asymmetric: {
      static constexpr FieldSpec spec[] = {{tag::c_list_id, 2, 2, true},   {tag::c_activation, 1, 1, true},
                                           {tag::c_count, 2, 2, true},     {tag::c_wrapped_key, 0, big, true},
                                           {tag::c_keys, 0, big, true},    {tag::c_list_signature, 0, big, true}};
      auto f = collect(node.children, spec, "E5 load list");
      if (!f) return f.error();
      LoadListAsymmetric c;
      c.list_id = u16(*(*f)[0]);
      c.activation = (*(*f)[1])[0];
      c.count = u16(*(*f)[2]);
      c.wrapped_key = *(*f)[3];
      c.encrypted_keys = *(*f)[4];
      c.signature = *(*f)[5];
      if (c.encrypted_keys.empty() || c.encrypted_keys.size() % 16 != 0)
        return bad("E5 load list", "C5 must be a non-empty multiple of 16 bytes");
      return InnerCommand{std::move(c)};
    }
    default:
      return make_error(Errc::bad_value, "inner command: unknown tag " + tag_hex(node.tag));
  }
}

Result<InnerCommands> parse_inner(ByteView data, bool expect_mac) {
  auto nodes = tlv::parse(data);
  if (!nodes) return make_error(nodes.error().code, "inner commands: " + nodes.error().message);
  if (nodes->empty()) return make_error(Errc::bad_value, "inner commands: no command");
  InnerCommands out;
  if (expect_mac) {
    const tlv::Node& last = nodes->back();
    if (last.tag != tag::inner_mac || last.value.size() != 32)
      return make_error(Errc::bad_mac, "inner commands: the last object must be CF with 32 bytes");
    out.mac = last.value;
    nodes->pop_back();
  }
  for (const auto& n : *nodes) tlv::append(out.signed_part, n.tag, n.value);
  out.commands = std::move(*nodes);
  return out;
}

void append_inner_mac(Bytes& inner, const SecretBytes& s) {
  tlv::append(inner, tag::inner_mac, crypto::hmac_sha256(s.view(), inner));
}

}  // namespace otac::protocol
