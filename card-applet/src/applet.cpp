#include "otac/applet/applet.hpp"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

#include "otac/applet/sms_lite.hpp"
#include "otac/common/apdu.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/ota.hpp"
#include "otac/common/protocol.hpp"
#include "otac/common/secret.hpp"
#include "otac/common/sw.hpp"
#include "otac/common/tlv.hpp"
#include "state.hpp"

namespace otac::applet {
namespace {

using Response = apdu::Response;

Response status(std::uint16_t s) { return Response{{}, s}; }

constexpr std::uint16_t kCapabilities = 0x003F;  // 3DES, AES, RSA-2048, P-256, display, indexed TAN
// Outcome of an SMS-PP download: RSC for the PoR, and the inner status word as its data.
struct PacketOutcome {
  ota::Rsc rsc = ota::Rsc::ok;
  std::uint16_t inner_sw = sw::ok;
  bool list_refused = false;  ///< an E1 or E5 in the packet was refused
};

bool valid_pin_block(ByteView b) {
  if (b.size() != 8) return false;
  std::size_t digits = 0;
  while (digits < 8 && b[digits] >= '0' && b[digits] <= '9') ++digits;
  if (digits < 4) return false;
  for (std::size_t i = digits; i < 8; ++i)
    if (b[i] != 0xFF) return false;
  return true;
}

Result<std::uint64_t> bcd_value(ByteView v) {
  std::uint64_t n = 0;
  for (auto b : v) {
    const unsigned hi = b >> 4, lo = b & 0x0F;
    if (hi > 9 || lo > 9) return make_error(Errc::bad_value, "not BCD");
    n = n * 100 + hi * 10 + lo;
  }
  return n;
}

ota::CardAlgorithm card_alg(const CardState& s) { return static_cast<ota::CardAlgorithm>(s.algorithm); }

// The card's 8-byte MAC with an OTAC: ISO 9797-1 alg 3 pad 2 (3DES) or AES-CMAC-8 (AES).
Result<Bytes> mac8(const CardState& s, ByteView otac, ByteView data) {
  SecretBytes key(otac);
  if (card_alg(s) == ota::CardAlgorithm::des3_2key) return crypto::mac_alg3(key, data, crypto::Padding::method2, 8);
  auto m = crypto::aes_cmac(key, data);
  if (!m) return m.error();
  m->resize(8);
  return m;
}

Result<ota::CardKeys> card_keys(const CardState& s) {
  SecretBytes k(s.k);
  return ota::derive_card_keys(k, s.n, card_alg(s));
}

// Queues a card-originated request (protocol.md 2.4) in the outbox of s.
Result<Bytes> queue_request(CardState& s, std::uint8_t type) {
  Bytes body;
  tlv::append(body, 0xDF41, s.n);
  tlv::append(body, 0xC0, Bytes{type});
  tlv::append(body, 0xDF42, be_bytes(s.latest_list(), 2));
  tlv::append(body, 0xDF48, be_bytes(s.unused(), 2));
  tlv::append(body, 0xDF49, Bytes{s.key_version});
  const Bytes f1 = tlv::encode(0xF1, body);
  auto keys = card_keys(s);
  if (!keys) return keys.error();
  auto spi = ota::Spi::decode(0x1200);
  if (!spi) return spi.error();
  if (s.mo_counter >= ota::counter_max) return make_error(Errc::state, "card request counter exhausted");
  const std::uint8_t kid = ota::key_id_for(card_alg(s), s.key_version);
  auto packet = ota::build_command(ota::CommandHeader{*spi, 0x00, kid, ota::otac_tar}, s.mo_counter + 1, f1, SecretBytes{}, keys->kid);
  if (!packet) return packet.error();
  auto tpdu = sms::encode_submit(s.server, Bytes{0x70, 0x00}, *packet);
  if (!tpdu) return tpdu.error();
  auto d0 = sms::encode_send_short_message(s.server, *tpdu);
  if (!d0) return d0.error();
  if (d0->size() > max_outbox_entry) return make_error(Errc::bad_length, "card request too long");
  ++s.mo_counter;
  s.empty_polls = 0;
  if (s.outbox.size() >= max_outbox) s.outbox.erase(s.outbox.begin());  // bounded: the oldest goes
  s.outbox.push_back(*d0);
  return d0;
}

// While a request is unanswered, the card asks again every kReaskEvery codes (protocol.md
// 2.4.1): a lost request SMS or a lost list then costs a few codes, never all of them.
constexpr std::uint16_t kReaskEvery = 4;
// ... and at every kRepollEvery-th FETCH that finds the outbox empty (a handset polls every
// 30 s or so: about eight minutes), so a lost request is repaired without a code being used.
constexpr std::uint8_t kRepollEvery = 16;

// After a code was used: ask for a list when the unused codes are at or below the threshold
// and a slot is free for it (a list that does not fit would be refused, RSC 07). Once asked,
// ask again at every kReaskEvery-th code (unused drops by one per code) until a list arrives.
void check_threshold(CardState& s) {
  const std::uint16_t left = s.unused();
  if (left > s.threshold || s.server.empty() || !s.has_room()) return;
  if (s.refresh_pending && left % kReaskEvery != 0) return;
  if (queue_request(s, 0x02)) s.refresh_pending = true;
}

// Places a list (E1 or E5 after deciphering). Returns the status word for the PoR data.
std::uint16_t place_list(CardState& s, std::uint16_t list_id, std::uint8_t activation, std::uint16_t count, ByteView keys) {
  if (list_id == 0 || activation > 1 || count == 0 || count > max_codes_per_list || keys.size() != count * 16u)
    return sw::wrong_data;
  // A resent or stale list (id at or below the highest loaded): 9000 only while a slot still
  // holds it, so that an OK PoR always means "the card holds this list"; a list it never
  // loaded (a later one overtook it) or has used up and erased answers 6A88 (protocol.md 6.1.1).
  if (list_id <= s.last_list_id) {
    const bool holds = std::any_of(s.lists.begin(), s.lists.end(), [&](const ListSlot& l) { return l.held() && l.id == list_id; });
    return holds ? sw::ok : sw::referenced_data_not_found;
  }
  ListSlot* slot = nullptr;
  if (activation == 1) {
    for (auto& l : s.lists) l.clear();  // at once: the old codes are abandoned
    slot = &s.lists[0];
  } else {
    slot = s.free_slot();
    if (!slot) return sw::not_enough_memory;
  }
  slot->clear();
  slot->id = list_id;
  slot->count = count;
  std::copy(keys.begin(), keys.end(), slot->keys.begin());
  s.last_list_id = list_id;
  s.refresh_pending = false;
  return sw::ok;
}

// E5: load list, asymmetric (protocol.md 6.1.2). Returns RSC and status word.
PacketOutcome load_list_asymmetric(CardState& s, const protocol::LoadListAsymmetric& cmd) {
  if (!s.has_server_key || s.key_pair == 0) return {ota::Rsc::ok, sw::conditions_not_satisfied};
  auto server = crypto::ec_public_from_point(s.server_point);
  if (!server || !crypto::ecdsa_verify(*server, cmd.signed_part(), cmd.signature))
    return {ota::Rsc::insufficient_security_level, sw::security_not_satisfied};
  auto priv = crypto::private_key_from_der(ByteView(s.private_der).first(s.private_len));
  if (!priv) return {ota::Rsc::ok, sw::no_precise_diagnosis};
  SecretBytes session;
  if (s.key_pair == 0x01) {
    auto k = crypto::rsa_oaep_decrypt(*priv, cmd.wrapped_key);
    if (!k || k->size() != 16) return {ota::Rsc::ok, sw::wrong_data};
    session = std::move(*k);
  } else {
    auto peer = crypto::ec_public_from_point(cmd.wrapped_key);
    if (!peer) return {ota::Rsc::ok, sw::wrong_data};
    auto shared = crypto::ecdh_p256(*priv, *peer);
    if (!shared) return {ota::Rsc::ok, sw::wrong_data};
    Bytes info = to_bytes("OTAC-E5");
    append(info, s.n);
    session = crypto::hkdf_sha256(*shared, {}, info, 16);
  }
  auto keys = crypto::aes_cbc_decrypt(session, Bytes(16, 0), cmd.encrypted_keys);
  if (!keys) return {ota::Rsc::ok, sw::wrong_data};
  const std::uint16_t r = place_list(s, cmd.list_id, cmd.activation, cmd.count, *keys);
  secure_zero(keys->data(), keys->size());
  return {r == sw::not_enough_memory ? ota::Rsc::insufficient_memory : ota::Rsc::ok, r};
}

}  // namespace

struct Applet::Impl {
  Storage& storage;
  bool selected = false;
  bool pin_verified = false;
  bool pin_failed = false;  // a wrong PIN was presented since SELECT (RAM only)
  // The last AUTHENTICATE, kept for CONFIRM (RAM only).
  bool has_last = false;
  SecretBytes last_otac;
  Bytes last_cryptogram;
  // Reassembly of a concatenated SMS (RAM only; one message in flight).
  struct Parts {
    bool active = false;
    std::string from;
    std::uint16_t ref = 0;
    std::uint8_t total = 0;
    bool cpi = false;
    std::array<std::optional<Bytes>, max_sms_parts> parts;
  } reasm;
  CardState st;

  explicit Impl(Storage& s) : storage(s) {}

  Result<void> commit(const CardState& next) {
    Bytes blob = encode_state(next);
    auto r = storage.commit(blob);
    secure_zero(blob.data(), blob.size());
    return r;
  }

  void forget_last() {
    has_last = false;
    last_otac = SecretBytes{};
    last_cryptogram.clear();
  }

  Response dispatch(const apdu::Command& c);
  Response select(const apdu::Command& c);
  Response verify(const apdu::Command& c);
  Response change(const apdu::Command& c);
  Response reset_retry(const apdu::Command& c);
  Response activate(const apdu::Command& c);
  Response authenticate(const apdu::Command& c);
  Response confirm(const apdu::Command& c);
  Response display(const apdu::Command& c);
  Response get_status(const apdu::Command& c);
  Response request_refresh(const apdu::Command& c);
  Response fetch(const apdu::Command& c);
  Response generate_key_pair(const apdu::Command& c);
  Response envelope(const apdu::Command& c);
  Response handle_packet(ByteView packet);
  PacketOutcome run_inner(CardState& next, ByteView data);
  // Checks a PIN block against the stored PIN, spending a try first. nullopt = correct.
  std::optional<Response> check_pin(ByteView block);
  Result<std::pair<ListSlot*, std::uint16_t>> pick_code(std::uint8_t p1, const protocol::Challenge* ch);
};

Applet::Applet(Storage& storage) : impl_(std::make_unique<Impl>(storage)) {}
Applet::~Applet() = default;

Bytes Applet::atr() { return Bytes{0x3B, 0x80, 0x80, 0x01, 0x01}; }

void Applet::reset() {
  impl_->selected = false;
  impl_->pin_verified = false;
  impl_->pin_failed = false;
  impl_->forget_last();
}

Bytes Applet::process(ByteView command) {
  try {
    auto c = apdu::parse_command(command);
    if (!c) return apdu::encode(status(sw::wrong_length));
    auto blob = impl_->storage.load();
    if (!blob) return apdu::encode(status(sw::no_precise_diagnosis));
    if (blob->empty()) {
      impl_->st = CardState{};
    } else {
      auto st = decode_state(*blob);
      secure_zero(blob->data(), blob->size());
      if (!st) return apdu::encode(status(sw::no_precise_diagnosis));
      impl_->st = std::move(*st);
    }
    Bytes out = apdu::encode(impl_->dispatch(*c));
    secure_zero(c->data.data(), c->data.size());  // may hold K, a PIN block or a PUK
    return out;
  } catch (const std::exception&) {
    return apdu::encode(status(sw::no_precise_diagnosis));
  }
}

Response Applet::Impl::dispatch(const apdu::Command& c) {
  using protocol::Ins;
  using protocol::ins;
  if (c.cla != protocol::cla_iso && c.cla != protocol::cla_proprietary) return status(sw::cla_not_supported);
  const bool iso = c.cla == protocol::cla_iso;
  if (iso && c.ins == ins(Ins::select)) return select(c);
  // The toolkit commands come from the phone, not through a selected application.
  if (!iso && c.ins == ins(Ins::fetch)) return fetch(c);
  if (!iso && c.ins == ins(Ins::envelope)) return envelope(c);
  if (!selected) return status(sw::ins_not_supported);
  if (iso) {
    switch (static_cast<Ins>(c.ins)) {
      case Ins::verify: return verify(c);
      case Ins::change_reference_data: return change(c);
      case Ins::reset_retry_counter: return reset_retry(c);
      default: return status(sw::ins_not_supported);
    }
  }
  switch (static_cast<Ins>(c.ins)) {
    case Ins::activate: return activate(c);
    case Ins::authenticate: return authenticate(c);
    case Ins::confirm: return confirm(c);
    case Ins::display_code: return display(c);
    case Ins::get_status: return get_status(c);
    case Ins::request_refresh: return request_refresh(c);
    case Ins::generate_key_pair: return generate_key_pair(c);
    default: return status(sw::ins_not_supported);
  }
}

Response Applet::Impl::select(const apdu::Command& c) {
  if (c.p1 != 0x04) return status(c.p1 <= 0x03 || c.p1 == 0x08 || c.p1 == 0x09 ? sw::file_not_found : sw::incorrect_p1p2);
  if (c.p2 != 0x00 && c.p2 != 0x0C) return status(sw::incorrect_p1p2);
  // Any SELECT ends the previous session's PIN verification and transaction.
  selected = false;
  pin_verified = false;
  pin_failed = false;
  forget_last();
  if (!std::equal(c.data.begin(), c.data.end(), protocol::aid.begin(), protocol::aid.end())) return status(sw::file_not_found);
  selected = true;
  if (c.p2 == 0x0C) return status(sw::ok);
  const protocol::Fci fci{protocol::version, kCapabilities, static_cast<std::uint8_t>(st.life)};
  return Response{fci.encode(), sw::ok};
}

std::optional<Response> Applet::Impl::check_pin(ByteView block) {
  if (st.pin_tries == 0) return status(sw::auth_method_blocked);
  // Spend the try and make it durable before comparing, then give it back on success: a
  // card torn at any point has either spent the try or told nothing about the PIN, and a
  // right and a wrong PIN write the same thing first (protocol.md 2.5).
  CardState spent = st;
  --spent.pin_tries;
  if (!commit(spent)) return status(sw::no_precise_diagnosis);
  st = spent;
  if (!ct_equal(block, st.pin)) {
    pin_verified = false;
    pin_failed = true;
    return status(sw::tries(st.pin_tries));
  }
  CardState restored = st;
  restored.pin_tries = pin_tries_max;
  if (!commit(restored)) return status(sw::no_precise_diagnosis);
  st = std::move(restored);
  return std::nullopt;
}

Response Applet::Impl::verify(const apdu::Command& c) {
  if (c.p1 != 0x00 || c.p2 != 0x80) return status(sw::incorrect_p1p2);
  if (st.life == Life::blank || st.life == Life::blocked) return status(sw::conditions_not_satisfied);
  if (c.data.empty()) {
    if (st.pin_tries == 0) return status(sw::auth_method_blocked);
    return status(pin_verified ? sw::ok : sw::tries(st.pin_tries));
  }
  if (c.data.size() != 8) return status(sw::wrong_length);
  if (!valid_pin_block(c.data)) return status(sw::wrong_data);
  if (auto fail = check_pin(c.data)) return *fail;
  pin_verified = true;
  return status(sw::ok);
}

Response Applet::Impl::change(const apdu::Command& c) {
  if ((c.p1 != 0x00 && c.p1 != 0x01) || c.p2 != 0x80) return status(sw::incorrect_p1p2);
  if (st.life == Life::blocked) return status(sw::conditions_not_satisfied);
  CardState next = st;
  if (c.p1 == 0x01) {  // set the first PIN
    if (c.data.size() != 8) return status(sw::wrong_length);
    if (st.life != Life::blank) return status(sw::conditions_not_satisfied);
    if (!valid_pin_block(c.data)) return status(sw::wrong_data);
    std::copy(c.data.begin(), c.data.end(), next.pin.begin());
    next.pin_tries = pin_tries_max;
    next.life = Life::pin_set;
  } else {
    if (c.data.size() != 16) return status(sw::wrong_length);
    if (st.life == Life::blank) return status(sw::conditions_not_satisfied);
    ByteView old_pin = ByteView(c.data).first(8), new_pin = ByteView(c.data).subspan(8);
    if (!valid_pin_block(old_pin) || !valid_pin_block(new_pin)) return status(sw::wrong_data);
    if (auto fail = check_pin(old_pin)) return *fail;
    next = st;
    std::copy(new_pin.begin(), new_pin.end(), next.pin.begin());
  }
  if (!commit(next)) return status(sw::no_precise_diagnosis);
  st = std::move(next);
  pin_verified = true;
  return status(sw::ok);
}

Response Applet::Impl::reset_retry(const apdu::Command& c) {
  if (c.p1 != 0x00 || c.p2 != 0x80) return status(sw::incorrect_p1p2);
  if (c.data.size() != 16) return status(sw::wrong_length);
  if (st.life != Life::activated) return status(sw::conditions_not_satisfied);
  if (st.puk_tries == 0) return status(sw::auth_method_blocked);
  ByteView puk = ByteView(c.data).first(8), new_pin = ByteView(c.data).subspan(8);
  if (!valid_pin_block(puk) || !valid_pin_block(new_pin)) return status(sw::wrong_data);
  CardState next = st;
  if (!ct_equal(puk, st.puk)) {
    --next.puk_tries;
    if (next.puk_tries == 0) next.life = Life::blocked;  // the card is dead: no way back
    if (!commit(next)) return status(sw::no_precise_diagnosis);
    st = std::move(next);
    return status(sw::tries(st.puk_tries));
  }
  std::copy(new_pin.begin(), new_pin.end(), next.pin.begin());
  next.pin_tries = pin_tries_max;
  next.puk_tries = puk_tries_max;
  if (!commit(next)) return status(sw::no_precise_diagnosis);
  st = std::move(next);
  pin_verified = true;
  return status(sw::ok);
}

Response Applet::Impl::activate(const apdu::Command& c) {
  if (c.p1 != 0x00 || c.p2 != 0x00) return status(sw::incorrect_p1p2);
  if (st.life != Life::pin_set) return status(sw::conditions_not_satisfied);
  if (!pin_verified) return status(sw::security_not_satisfied);
  auto nodes = tlv::parse(c.data);
  if (!nodes || c.data.empty()) return status(sw::wrong_data);
  CardState next = st;
  const Bytes *n = nullptr, *k = nullptr, *alg = nullptr, *number = nullptr, *puk = nullptr, *thr = nullptr,
              *limit = nullptr, *ca = nullptr;
  for (const auto& node : *nodes) {
    const Bytes** slot = nullptr;
    std::size_t min = 0, max = 0;
    switch (node.tag) {
      case 0xDF41: slot = &n; min = max = 8; break;
      case 0xDF44: slot = &k; min = max = 16; break;
      case 0xDF45: slot = &alg; min = max = 1; break;
      case 0xDF46: slot = &number; min = 1; max = 21; break;
      case 0xDF47: slot = &puk; min = max = 8; break;
      case 0xDF4B: slot = &thr; min = max = 2; break;
      case 0xDF4E: slot = &limit; min = max = 6; break;
      case 0xDF51: slot = &ca; min = max = 65; break;
      case 0xDF4F:  // a door that needs the PIN; may repeat
        if (node.value.empty() || node.value.size() > 16 || next.pin_doors.size() >= max_pin_doors) return status(sw::wrong_data);
        next.pin_doors.emplace_back(node.value.begin(), node.value.end());
        continue;
      default: return status(sw::wrong_data);
    }
    if (*slot || node.value.size() < min || node.value.size() > max) return status(sw::wrong_data);
    *slot = &node.value;
  }
  if (!n || !k || !alg || !number || !puk) return status(sw::wrong_data);
  if ((*alg)[0] != 0x01 && (*alg)[0] != 0x02) return status(sw::wrong_data);
  if (!valid_pin_block(*puk)) return status(sw::wrong_data);
  const std::string server(number->begin(), number->end());
  if (!sms::encode_address(server)) return status(sw::wrong_data);
  if (limit) {
    auto v = bcd_value(*limit);
    if (!v) return status(sw::wrong_data);
    next.pin_limit = *v;
  }
  if (ca) {
    if (!crypto::ec_public_from_point(*ca)) return status(sw::wrong_data);
    next.has_ca_key = true;
    std::copy(ca->begin(), ca->end(), next.ca_point.begin());
  }
  std::copy(n->begin(), n->end(), next.n.begin());
  std::copy(k->begin(), k->end(), next.k.begin());
  std::copy(puk->begin(), puk->end(), next.puk.begin());
  next.algorithm = (*alg)[0];
  next.key_version = 1;
  next.server = server;
  if (thr) next.threshold = static_cast<std::uint16_t>((*thr)[0] << 8 | (*thr)[1]);
  next.puk_tries = puk_tries_max;
  next.life = Life::activated;
  auto init = queue_request(next, 0x01);
  if (!init) return status(sw::no_precise_diagnosis);
  next.refresh_pending = true;  // the initialization message asks for the first list
  if (!commit(next)) return status(sw::no_precise_diagnosis);
  st = std::move(next);
  return Response{*init, sw::ok};
}

Result<std::pair<ListSlot*, std::uint16_t>> Applet::Impl::pick_code(std::uint8_t p1, const protocol::Challenge* ch) {
  if (p1 == 0x00 || !ch) {
    ListSlot* cur = st.current();
    if (!cur) return make_error(Errc::not_found, "no unused code");
    return std::pair<ListSlot*, std::uint16_t>{cur, cur->next()};
  }
  if (!ch->index) return make_error(Errc::bad_value, "indexed TAN without DF43");
  const std::uint16_t index = *ch->index;
  std::uint16_t list_id = 0;
  if (ch->list) list_id = *ch->list;
  else if (const ListSlot* cur = st.current()) list_id = cur->id;
  for (auto& l : st.lists)
    if (l.held() && l.id == list_id && index < l.count && !l.is_used(index)) return std::pair<ListSlot*, std::uint16_t>{&l, index};
  return make_error(Errc::conflict, "code not available");
}

Response Applet::Impl::authenticate(const apdu::Command& c) {
  if (c.p1 > 0x01 || c.p2 != 0x00) return status(sw::incorrect_p1p2);
  if (st.life != Life::activated) return status(sw::conditions_not_satisfied);
  auto ch = protocol::Challenge::parse(c.data);
  if (!ch || (c.p1 == 0x01 && !ch->index)) return status(sw::wrong_data);
  forget_last();
  // PIN policy: high amounts and chosen doors need the PIN, from DF34 or an earlier VERIFY.
  const auto amount = static_cast<std::uint64_t>(ch->amount_minor);
  bool need_pin = st.pin_limit != 0 && amount > st.pin_limit;
  if (ch->door) need_pin = need_pin || std::find(st.pin_doors.begin(), st.pin_doors.end(), *ch->door) != st.pin_doors.end();
  bool verified = pin_verified;
  if (ch->pin) {
    if (!valid_pin_block(ch->pin->view())) return status(sw::wrong_data);
    if (auto fail = check_pin(ch->pin->view())) return *fail;
    verified = true;
  } else if (need_pin && !pin_verified) {
    // No PIN entry can help a blocked PIN: say so at once rather than ask for one.
    return status(st.pin_tries == 0 ? sw::auth_method_blocked : sw::security_not_satisfied);
  }
  // Below the PIN limit a blocked PIN still gives a cryptogram, marked: the issuer decides
  // (as EMV's card verification results carry "PIN try limit exceeded" to the issuer).
  const auto pin_state = static_cast<std::uint8_t>((st.pin_tries & 0x0F) | (verified ? protocol::pin_state_verified : 0) |
                                                   (st.pin_tries == 0 ? protocol::pin_state_blocked : 0) |
                                                   (pin_failed ? protocol::pin_state_failed : 0));
  if (st.atc == 0xFFFF) return status(sw::conditions_not_satisfied);
  auto pick = pick_code(c.p1, &*ch);
  if (!pick) return status(pick.error().code == Errc::not_found ? sw::not_enough_memory : sw::record_not_found);
  // Burn on a copy, commit, and only then answer: a torn command never yields a cryptogram
  // for a code the card still considers unused.
  CardState next = st;
  ListSlot& slot = next.lists[static_cast<std::size_t>(pick->first - st.lists.data())];
  const std::uint16_t index = pick->second;
  const std::uint16_t list = slot.id;
  SecretBytes otac(slot.key(index));
  slot.burn(index);
  if (slot.unused() == 0) slot.clear();
  ++next.atc;
  check_threshold(next);
  protocol::CardAnswer answer{Bytes(next.n.begin(), next.n.end()), list, index, next.atc, {}, pin_state};
  auto cryptogram = mac8(next, otac.view(), protocol::mac_input(*ch, answer));
  if (!cryptogram) return status(sw::no_precise_diagnosis);
  if (!commit(next)) return status(sw::no_precise_diagnosis);
  st = std::move(next);
  has_last = true;
  last_otac = std::move(otac);
  last_cryptogram = *cryptogram;
  answer.cryptogram = std::move(*cryptogram);
  return Response{answer.encode(), sw::ok};
}

Response Applet::Impl::confirm(const apdu::Command& c) {
  if (c.p1 != 0x00 || c.p2 != 0x00) return status(sw::incorrect_p1p2);
  if (c.data.size() != 10) return status(sw::wrong_length);
  if (st.life != Life::activated || !has_last) return status(sw::conditions_not_satisfied);
  ByteView arpc = ByteView(c.data).first(8), arc = ByteView(c.data).subspan(8);
  auto expect = mac8(st, last_otac.view(), protocol::arpc_input(last_cryptogram, arc));
  if (!expect) return status(sw::no_precise_diagnosis);
  const bool good = ct_equal(*expect, arpc);
  CardState next = st;
  next.last_outcome = good ? 0x01 : 0x02;
  if (good) std::copy(arc.begin(), arc.end(), next.last_arc.begin());
  forget_last();  // one try per transaction
  if (!commit(next)) return status(sw::no_precise_diagnosis);
  st = std::move(next);
  return status(good ? sw::ok : sw::verify_failed);
}

Response Applet::Impl::display(const apdu::Command& c) {
  if (c.p1 != 0x00 || c.p2 != 0x00) return status(sw::incorrect_p1p2);
  if (!c.data.empty()) return status(sw::wrong_length);
  if (st.life != Life::activated) return status(sw::conditions_not_satisfied);
  if (!pin_verified) return status(sw::security_not_satisfied);
  ListSlot* cur = st.current();
  if (!cur) return status(sw::not_enough_memory);
  CardState next = st;
  ListSlot& slot = next.lists[static_cast<std::size_t>(cur - st.lists.data())];
  const std::uint16_t index = slot.next(), list = slot.id;
  SecretBytes otac(slot.key(index));
  slot.burn(index);
  if (slot.unused() == 0) slot.clear();
  check_threshold(next);
  auto m = mac8(next, otac.view(), protocol::display_input(next.n, list, index));
  if (!m) return status(sw::no_precise_diagnosis);
  if (!commit(next)) return status(sw::no_precise_diagnosis);
  st = std::move(next);
  const std::string code = protocol::display_digits(*m);
  Bytes out;
  tlv::append(out, 0xDF42, be_bytes(list, 2));
  tlv::append(out, 0xDF43, be_bytes(index, 2));
  tlv::append(out, 0xDF4D, as_bytes(code));
  return Response{out, sw::ok};
}

Response Applet::Impl::get_status(const apdu::Command& c) {
  if (c.p1 != 0x00 || c.p2 != 0x00) return status(sw::incorrect_p1p2);
  if (!c.data.empty()) return status(sw::wrong_length);
  const ListSlot* cur = st.current();
  Bytes body;
  tlv::append(body, 0xDF41, st.n);
  tlv::append(body, 0xDF42, be_bytes(cur ? cur->id : 0, 2));
  tlv::append(body, 0xDF48, be_bytes(st.unused(), 2));
  tlv::append(body, 0x9F36, be_bytes(st.atc, 2));
  tlv::append(body, 0xDF49, Bytes{st.key_version});
  tlv::append(body, 0xDF4A, Bytes{static_cast<std::uint8_t>(st.refresh_pending ? 1 : 0)});
  tlv::append(body, 0xDF4B, be_bytes(st.threshold, 2));
  tlv::append(body, 0xDF4C, Bytes{st.lists_held()});
  return Response{tlv::encode(0xE0, body), sw::ok};
}

Response Applet::Impl::request_refresh(const apdu::Command& c) {
  if (c.p1 != 0x00 || c.p2 != 0x00) return status(sw::incorrect_p1p2);
  if (!c.data.empty()) return status(sw::wrong_length);
  if (st.life != Life::activated) return status(sw::conditions_not_satisfied);
  if (!pin_verified) return status(sw::security_not_satisfied);
  if (!st.has_room()) return status(sw::not_enough_memory);  // both slots hold codes: a list would be refused
  CardState next = st;
  if (!queue_request(next, 0x02)) return status(sw::no_precise_diagnosis);
  next.refresh_pending = true;
  if (!commit(next)) return status(sw::no_precise_diagnosis);
  st = std::move(next);
  return status(sw::ok);
}

Response Applet::Impl::fetch(const apdu::Command& c) {
  if (c.p1 != 0x00 || c.p2 != 0x00) return status(sw::incorrect_p1p2);
  if (!c.data.empty()) return status(sw::wrong_length);
  if (st.outbox.empty()) {
    // The handset polls the card; while a request is pending and no list arrives, every
    // kRepollEvery-th empty poll sends the request again (protocol.md 2.4.1): a lost request
    // SMS is repaired even when no code is used.
    if (!st.refresh_pending || st.server.empty()) return status(sw::referenced_data_not_found);
    CardState next = st;
    if (++next.empty_polls >= kRepollEvery && !queue_request(next, 0x02)) return status(sw::referenced_data_not_found);
    if (!commit(next)) return status(sw::no_precise_diagnosis);
    st = std::move(next);
    if (st.outbox.empty()) return status(sw::referenced_data_not_found);
  }
  CardState next = st;
  Bytes msg = next.outbox.front();
  next.outbox.erase(next.outbox.begin());
  if (!commit(next)) return status(sw::no_precise_diagnosis);
  st = std::move(next);
  return Response{msg, sw::ok};
}

Response Applet::Impl::generate_key_pair(const apdu::Command& c) {
  if ((c.p1 != 0x01 && c.p1 != 0x02) || c.p2 != 0x00) return status(sw::incorrect_p1p2);
  if (!c.data.empty()) return status(sw::wrong_length);
  if (st.life != Life::pin_set && st.life != Life::activated) return status(sw::conditions_not_satisfied);
  if (!pin_verified) return status(sw::security_not_satisfied);
  auto key = c.p1 == 0x01 ? crypto::rsa_generate(2048) : crypto::ec_p256_generate();
  if (!key) return status(sw::no_precise_diagnosis);
  auto priv = crypto::private_key_der(*key);
  auto pub = crypto::public_key_der(*key);
  if (!priv || !pub || priv->size() > max_private_der) return status(sw::no_precise_diagnosis);
  CardState next = st;
  next.private_der.fill(0);
  std::copy(priv->view().begin(), priv->view().end(), next.private_der.begin());
  next.private_len = static_cast<std::uint16_t>(priv->size());
  next.key_pair = c.p1;
  if (!commit(next)) return status(sw::no_precise_diagnosis);
  st = std::move(next);
  Bytes out;
  tlv::append(out, 0xDF41, st.n);
  tlv::append(out, 0xDF50, *pub);
  return Response{out, sw::ok};
}

Response Applet::Impl::envelope(const apdu::Command& c) {
  if (c.p1 != 0x00 || c.p2 != 0x00) return status(sw::incorrect_p1p2);
  if (c.data.empty()) return status(sw::wrong_data);
  if (st.life != Life::activated) return status(sw::conditions_not_satisfied);
  auto tpdu = sms::parse_sms_pp_download(c.data);
  if (!tpdu) return status(sw::wrong_data);
  auto d = sms::parse_deliver(*tpdu);
  if (!d || d->pid != 0x7F) return status(sw::wrong_data);
  bool cpi = false;
  std::optional<std::uint16_t> ref;
  std::uint8_t total = 1, seq = 1;
  for (const auto& ie : d->udh) {
    if (ie.iei == 0x70) {
      if (!ie.data.empty()) return status(sw::wrong_data);
      cpi = true;
    } else if (ie.iei == 0x00 || ie.iei == 0x08) {
      if (ref || ie.data.size() != (ie.iei == 0x00 ? 3u : 4u)) return status(sw::wrong_data);
      const std::size_t o = ie.iei == 0x00 ? 1 : 2;
      ref = static_cast<std::uint16_t>(ie.iei == 0x00 ? ie.data[0] : (ie.data[0] << 8 | ie.data[1]));
      total = ie.data[o];
      seq = ie.data[o + 1];
    }
  }
  if (!ref) {
    if (!cpi) return status(sw::wrong_data);
    return handle_packet(d->payload);
  }
  if (total == 0 || total > max_sms_parts || seq == 0 || seq > total) return status(sw::wrong_data);
  // One message in flight: a part of another message starts over.
  if (!reasm.active || reasm.from != d->from || reasm.ref != *ref || reasm.total != total) {
    reasm = Parts{};
    reasm.active = true;
    reasm.from = d->from;
    reasm.ref = *ref;
    reasm.total = total;
  }
  reasm.cpi = reasm.cpi || cpi;
  reasm.parts[seq - 1] = d->payload;
  for (std::size_t i = 0; i < total; ++i)
    if (!reasm.parts[i]) return status(sw::ok);
  Bytes packet;
  for (std::size_t i = 0; i < total; ++i) append(packet, *reasm.parts[i]);
  const bool had_cpi = reasm.cpi;
  reasm = Parts{};
  if (!had_cpi) return status(sw::wrong_data);
  return handle_packet(packet);
}

Response Applet::Impl::handle_packet(ByteView packet) {
  auto peek = ota::peek_command(packet);
  if (!peek) return status(sw::wrong_data);
  const ota::CommandHeader& h = peek->header;
  const std::uint8_t expected = ota::key_id_for(card_alg(st), st.key_version);
  const bool keys_match = h.tar == ota::otac_tar && h.kic == expected && h.kid == expected;
  auto keys = card_keys(st);
  if (!keys) return status(sw::no_precise_diagnosis);

  // A PoR goes back under the command's security when we hold its keys, else unprotected.
  auto por = [&](ota::Rsc rsc, std::uint64_t counter, Bytes data) -> Response {
    if (h.spi.por == ota::PorMode::none || (h.spi.por == ota::PorMode::on_error && rsc == ota::Rsc::ok))
      return status(sw::ok);
    ota::PorSecurity sec{h.spi, h.kic, h.kid};
    SecretBytes none;
    if (!keys_match) {
      sec.spi.por_integrity = ota::Integrity::none;
      sec.spi.por_ciphered = false;
    }
    auto r = ota::build_response(sec, ota::Response{h.tar, counter, 0, rsc, std::move(data)},
                                 keys_match ? keys->kic : none, keys_match ? keys->kid : none);
    if (!r) return status(sw::no_precise_diagnosis);
    return Response{*r, sw::ok};
  };
  const std::uint64_t clear_counter = peek->counter.value_or(0);
  if (h.tar != ota::otac_tar) return por(ota::Rsc::tar_unknown, clear_counter, {});
  const bool secure = h.spi.integrity == ota::Integrity::cc && h.spi.ciphered &&
                      (h.spi.counter == ota::CounterMode::higher || h.spi.counter == ota::CounterMode::one_higher);
  if (!keys_match) return por(ota::Rsc::unidentified_security_error, clear_counter, {});
  if (!secure) return por(ota::Rsc::insufficient_security_level, clear_counter, {});
  auto opened = ota::open_command(packet, keys->kic, keys->kid);
  if (!opened) return por(ota::rsc_for(opened.error()), clear_counter, {});
  const auto cs = ota::counter_status(h.spi.counter, opened->counter, st.ota_counter);
  if (cs != ota::Rsc::ok) return por(cs, opened->counter, {});

  // Authentic and fresh: the counter advances whatever the inner commands do; their changes
  // apply all together or not at all, in the same commit.
  CardState next = st;
  next.ota_counter = opened->counter;
  CardState applied = next;
  const PacketOutcome out = run_inner(applied, opened->data);
  secure_zero(opened->data.data(), opened->data.size());
  // A refused list answers the pending request as well as a loaded one would: the server
  // has dropped it (protocol.md 2.4.1), so the card asks again when it next needs codes.
  if (out.list_refused) next.refresh_pending = false;
  const CardState& final_state = out.inner_sw == sw::ok ? applied : next;
  if (!commit(final_state)) return status(sw::no_precise_diagnosis);
  st = final_state;
  return por(out.rsc, opened->counter, be_bytes(out.inner_sw, 2));
}

PacketOutcome Applet::Impl::run_inner(CardState& next, ByteView data) {
  auto inner = protocol::parse_inner(data, st.has_sig_key);
  if (!inner) {
    // Every packet after E3 ends with CF = HMAC-SHA-256(S, the inner TLVs before it).
    if (inner.error().code == Errc::bad_mac) return {ota::Rsc::insufficient_security_level, sw::security_not_satisfied};
    return {ota::Rsc::ok, sw::wrong_data};
  }
  if (inner->mac && !ct_equal(crypto::hmac_sha256(st.sig_key, inner->signed_part), *inner->mac))
    return {ota::Rsc::rc_cc_ds_failed, sw::security_not_satisfied};
  if (inner->commands.empty()) return {ota::Rsc::ok, sw::wrong_data};
  bool key_replaced = false;
  for (const tlv::Node& node : inner->commands) {
    const bool is_list = node.tag == protocol::tag::load_list || node.tag == protocol::tag::load_list_asymmetric;
    auto cmd = protocol::decode_inner(node);
    if (!cmd) return {ota::Rsc::ok, sw::wrong_data, is_list};
    std::uint16_t r = sw::ok;
    if (const auto* e1 = std::get_if<protocol::LoadList>(&*cmd)) {
      r = place_list(next, e1->list_id, e1->activation, e1->count, e1->keys.view());
      if (r == sw::not_enough_memory) return {ota::Rsc::insufficient_memory, r, true};
      // A stale resend of a list the card no longer holds (6A88) answers nothing the card
      // asked for: it does not clear a pending request (protocol.md 2.4.1).
      if (r != sw::ok) return {ota::Rsc::ok, r, r != sw::referenced_data_not_found};
    } else if (const auto* e2 = std::get_if<protocol::ReplaceKey>(&*cmd)) {
      if (e2->key_version == next.key_version) return {ota::Rsc::ok, sw::wrong_data};
      std::copy(e2->key.view().begin(), e2->key.view().end(), next.k.begin());
      next.key_version = e2->key_version;
      key_replaced = true;
    } else if (const auto* e3 = std::get_if<protocol::SetSignatureKey>(&*cmd)) {
      std::copy(e3->key.view().begin(), e3->key.view().end(), next.sig_key.begin());
      next.has_sig_key = true;
    } else if (const auto* e4 = std::get_if<protocol::SetServerKey>(&*cmd)) {
      if (!next.has_ca_key) return {ota::Rsc::ok, sw::conditions_not_satisfied};
      auto ca = crypto::ec_public_from_point(next.ca_point);
      if (!ca || !crypto::ec_public_from_point(e4->point)) return {ota::Rsc::ok, sw::wrong_data};
      if (!crypto::ecdsa_verify(*ca, e4->point, e4->signature)) return {ota::Rsc::insufficient_security_level, sw::security_not_satisfied};
      std::copy(e4->point.begin(), e4->point.end(), next.server_point.begin());
      next.has_server_key = true;
    } else {
      PacketOutcome o = load_list_asymmetric(next, std::get<protocol::LoadListAsymmetric>(*cmd));
      o.list_refused = o.inner_sw != sw::ok && o.inner_sw != sw::referenced_data_not_found;  // see E1 above
      if (o.inner_sw != sw::ok) return o;
    }
  }
  // Tell the server the card now holds K' (its CC is under K'), in case the PoR is lost.
  if (key_replaced && !queue_request(next, 0x03)) return {ota::Rsc::ok, sw::no_precise_diagnosis};
  return {ota::Rsc::ok, sw::ok};
}

}  // namespace otac::applet
