#include "state.hpp"

#include "otac/common/cursor.hpp"
#include "otac/common/secret.hpp"

namespace otac::applet {
namespace {

constexpr std::uint8_t kLayout = 2;

template <std::size_t N>
void put(Bytes& out, const std::array<std::uint8_t, N>& a) { out.insert(out.end(), a.begin(), a.end()); }

template <std::size_t N>
void get(Cursor& c, std::array<std::uint8_t, N>& a, const char* field) {
  ByteView v = c.take(N, field);
  if (c.ok()) std::copy(v.begin(), v.end(), a.begin());
}

void put_string(Bytes& out, const std::string& s) {
  out.push_back(static_cast<std::uint8_t>(s.size()));
  append(out, as_bytes(s));
}

std::string get_string(Cursor& c, std::size_t max, const char* field) {
  const std::size_t len = c.u8(field);
  if (len > max) {
    c.fail(Errc::bad_length, std::string("card state: ") + field + " too long");
    return {};
  }
  ByteView v = c.take(len, field);
  return {v.begin(), v.end()};
}

}  // namespace

std::uint16_t ListSlot::unused() const {
  if (!held()) return 0;
  std::uint16_t n = 0;
  for (std::size_t i = 0; i < count; ++i) n = static_cast<std::uint16_t>(n + (is_used(i) ? 0 : 1));
  return n;
}

std::uint16_t ListSlot::next() const {
  for (std::uint16_t i = 0; i < count; ++i)
    if (!is_used(i)) return i;
  return count;
}

void ListSlot::clear() {
  secure_zero(keys.data(), keys.size());
  used.fill(0);
  id = 0;
  count = 0;
}

CardState::~CardState() {
  secure_zero(pin.data(), pin.size());
  secure_zero(puk.data(), puk.size());
  secure_zero(k.data(), k.size());
  secure_zero(sig_key.data(), sig_key.size());
  secure_zero(private_der.data(), private_der.size());
  for (auto& l : lists) secure_zero(l.keys.data(), l.keys.size());
}

std::uint16_t CardState::unused() const {
  std::uint32_t total = 0;
  for (const auto& l : lists) total += l.unused();
  return static_cast<std::uint16_t>(total);
}

ListSlot* CardState::current() {
  ListSlot* best = nullptr;
  for (auto& l : lists)
    if (l.held() && l.unused() > 0 && (!best || l.id < best->id)) best = &l;
  return best;
}

const ListSlot* CardState::current() const { return const_cast<CardState*>(this)->current(); }

std::uint16_t CardState::latest_list() const {
  std::uint16_t id = 0;
  for (const auto& l : lists) id = std::max(id, l.id);
  return id;
}

std::uint8_t CardState::lists_held() const {
  std::uint8_t held_count = 0;
  for (const auto& l : lists) held_count = static_cast<std::uint8_t>(held_count + (l.held() ? 1 : 0));
  return held_count;
}

ListSlot* CardState::free_slot() {
  for (auto& l : lists)
    if (!l.held() || l.unused() == 0) return &l;
  return nullptr;
}

Bytes encode_state(const CardState& s) {
  Bytes out{kLayout, static_cast<std::uint8_t>(s.life)};
  put(out, s.pin);
  out.push_back(s.pin_tries);
  put(out, s.puk);
  out.push_back(s.puk_tries);
  put(out, s.n);
  put(out, s.k);
  out.push_back(s.algorithm);
  out.push_back(s.key_version);
  put_string(out, s.server);
  append(out, be_bytes(s.ota_counter, 8));
  append(out, be_bytes(s.mo_counter, 8));
  append(out, be_bytes(s.atc, 2));
  append(out, be_bytes(s.threshold, 2));
  // One byte: 0 = no request pending, 1 + n = pending with n empty polls since (layout-compatible).
  out.push_back(s.refresh_pending ? static_cast<std::uint8_t>(1 + std::min<std::uint8_t>(s.empty_polls, 254)) : 0);
  append(out, be_bytes(s.pin_limit, 8));
  out.push_back(static_cast<std::uint8_t>(s.pin_doors.size()));
  for (const auto& d : s.pin_doors) put_string(out, d);
  append(out, be_bytes(s.last_list_id, 2));
  for (const auto& l : s.lists) {
    append(out, be_bytes(l.id, 2));
    append(out, be_bytes(l.count, 2));
    put(out, l.used);
    put(out, l.keys);
  }
  out.push_back(s.has_sig_key ? 1 : 0);
  put(out, s.sig_key);
  out.push_back(s.has_ca_key ? 1 : 0);
  put(out, s.ca_point);
  out.push_back(s.has_server_key ? 1 : 0);
  put(out, s.server_point);
  out.push_back(s.key_pair);
  append(out, be_bytes(s.private_len, 2));
  put(out, s.private_der);
  put(out, s.last_arc);
  out.push_back(s.last_outcome);
  out.push_back(static_cast<std::uint8_t>(s.outbox.size()));
  for (const auto& m : s.outbox) {
    out.push_back(static_cast<std::uint8_t>(m.size()));
    append(out, m);
  }
  return out;
}

Result<CardState> decode_state(ByteView blob) {
  Cursor c(blob, "card state");
  CardState s;
  if (c.u8("layout") != kLayout && c.ok()) return make_error(Errc::unsupported, "card state: unknown layout version");
  const auto life = c.u8("life cycle");
  if (life > 3) c.fail(Errc::bad_value, "card state: bad life cycle");
  s.life = static_cast<Life>(life);
  get(c, s.pin, "PIN");
  s.pin_tries = c.u8("PIN tries");
  get(c, s.puk, "PUK");
  s.puk_tries = c.u8("PUK tries");
  get(c, s.n, "N");
  get(c, s.k, "K");
  s.algorithm = c.u8("algorithm");
  s.key_version = c.u8("key version");
  s.server = get_string(c, 21, "server number");
  s.ota_counter = c.be(8, "OTA counter");
  s.mo_counter = c.be(8, "MO counter");
  s.atc = c.u16("ATC");
  s.threshold = c.u16("threshold");
  const auto pending = c.u8("refresh pending");
  s.refresh_pending = pending != 0;
  s.empty_polls = pending == 0 ? 0 : static_cast<std::uint8_t>(pending - 1);
  s.pin_limit = c.be(8, "PIN limit");
  const std::size_t doors = c.u8("PIN doors");
  if (doors > max_pin_doors) c.fail(Errc::bad_length, "card state: too many PIN doors");
  for (std::size_t i = 0; i < doors && c.ok(); ++i) s.pin_doors.push_back(get_string(c, 16, "PIN door"));
  s.last_list_id = c.u16("last list id");
  for (auto& l : s.lists) {
    l.id = c.u16("list id");
    l.count = c.u16("list count");
    if (l.count > max_codes_per_list) c.fail(Errc::bad_length, "card state: list too long");
    get(c, l.used, "list used bits");
    get(c, l.keys, "list keys");
  }
  s.has_sig_key = c.u8("signature key flag") != 0;
  get(c, s.sig_key, "signature key");
  s.has_ca_key = c.u8("CA key flag") != 0;
  get(c, s.ca_point, "CA key");
  s.has_server_key = c.u8("server key flag") != 0;
  get(c, s.server_point, "server key");
  s.key_pair = c.u8("key pair type");
  s.private_len = c.u16("private key length");
  if (s.key_pair > 2 || s.private_len > max_private_der) c.fail(Errc::bad_value, "card state: bad key pair");
  get(c, s.private_der, "private key");
  get(c, s.last_arc, "last ARC");
  s.last_outcome = c.u8("last outcome");
  const std::size_t msgs = c.u8("outbox count");
  if (msgs > max_outbox) c.fail(Errc::bad_length, "card state: outbox over capacity");
  for (std::size_t i = 0; i < msgs && c.ok(); ++i) {
    ByteView m = c.take(c.u8("outbox entry length"), "outbox entry");
    s.outbox.emplace_back(m.begin(), m.end());
  }
  if (auto f = c.finish(); !f) return f.error();
  return s;
}

}  // namespace otac::applet
