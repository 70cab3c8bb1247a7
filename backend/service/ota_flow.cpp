// The Service's OTA flow: card requests and PoRs in, list and key packets out, the SMS outbox,
// and the repair of what the network lost (protocol.md 6.2 and 6.4).
#include "service.hpp"

#include <algorithm>
#include <ctime>

#include "challenge.hpp"
#include "ota_push.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/protocol.hpp"
#include "service_detail.hpp"

namespace otac::backend {
namespace detail {

// Key rotation state machine (per card; protocol.md §6 E2):
//   steady:   k = K, no pending.                      rotate_key -> rotating
//   rotating: k = K, pending_k = K', E2{K'} sent under K.
//             card request whose CC verifies under K',
//             or the OK PoR of the E2                 -> steady with k = K', K retired
//             card request under K                    -> stays rotating (E2 not yet applied)
//             rotate_key again                        -> rotating, the same E2{K'} sent again
//             latest E2 unanswered for list_repair_after (repair_rotations)
//                                                     -> rotating, the same E2{K'} sent again
//   retired:  (after the E2's PoR) k = K', retired_k = K: a request or PoR the card sealed
//             under K before it switched still opens (a request's counter must still be
//             fresh). The first request under K' drops K; a promotion by a request under K'
//             drops it at once (the counter check refuses every older request anyway).
// Lists and other packets keep going out under K while rotating, because K is the key the
// card is known to hold. A lost E2 leaves the card on K, which the server still accepts; a
// duplicated E2 after the switch is under the retired K and fails the card's CC check, so
// it changes nothing. A list sent under K that reaches the card after its switch is refused
// with an unprotected PoR the backend cannot trust; so the promotion sends the latest list
// again under K' while it is unconfirmed (promote_and_repair). Rotating again while K' is
// pending re-sends the same K': the card may already hold it, and a fresh K'' would leave
// the backend without the key the card uses. Neither side ever discards the key the other
// might still be using.
Result<void> promote_pending_key(Tx& tx, CardRecord& card, bool keep_retired, UnixTime now) {
  if (!card.pending_k) return {};
  if (keep_retired) {
    card.retired_k = std::move(card.k);
    card.retired_version = card.key_version;
  } else {
    card.retired_k.reset();
    card.retired_version = 0;
  }
  card.k = std::move(*card.pending_k);
  card.pending_k.reset();
  card.key_version = card.pending_version;
  card.pending_version = 0;
  if (auto x = tx.update_card(card); !x) return x;
  auto a = tx.audit(now, "system", "key_rotated", "card=" + to_hex(card.n) + " version=" + std::to_string(card.key_version));
  if (!a) return a.error();
  return {};
}

// ---- server keys and the E3/E4/E5 commands ----
//
// Two P-256 key pairs live in the store, sealed under the KEK: "card-ca", the trust anchor
// cards are personalized with (ACTIVATE DF51), which signs only the server's public point
// (E4); and "server", which signs E5 lists. They are separate from the TLS CA of
// backend/server/pki (one key, one purpose; the TLS CA key is a PEM file, not KEK-sealed).

Result<ServerKeyRecord> ensure_server_key(Tx& tx, std::string_view name, UnixTime now) {
  auto k = tx.server_key(name);
  if (k || k.error().code != Errc::not_found) return k;
  auto pair = crypto::ec_p256_generate();
  if (!pair) return pair.error();
  auto priv = crypto::private_key_der(*pair);
  if (!priv) return priv.error();
  auto point = crypto::ec_public_point(*pair);
  if (!point) return point.error();
  ServerKeyRecord r{std::string(name), std::move(*priv), std::move(*point), now};
  if (auto x = tx.insert_server_key(r); !x) return x.error();
  auto a = tx.audit(now, "system", "create_server_key", "name=" + std::string(name) + " point=" + to_hex(r.public_point));
  if (!a) return a.error();
  return r;
}

// E4: the server point signed by the card CA, in a packet of its own.
Result<std::uint64_t> queue_server_key(Tx& tx, const CardRecord& card, UnixTime now) {
  auto ca = ensure_server_key(tx, kCaKeyName, now);
  if (!ca) return ca.error();
  auto server = ensure_server_key(tx, kServerKeyName, now);
  if (!server) return server.error();
  auto sig = sign_with_server_key(*ca, server->public_point);
  if (!sig) return sig.error();
  return enqueue_packet(tx, card, encode_server_key(server->public_point, *sig), now, "server_key", 0);
}

// The list command for the card: E1, or E5 for a card enrolled with a public key. An E5 needs
// the server key on the card: until a PoR confirmed it, an E4 goes first (in its own packet,
// with the lower counter; a repeated E4 is harmless, it installs the same point).
Result<Bytes> list_command(Tx& tx, const CardRecord& card, std::uint16_t id, bool activate_now,
                           const std::vector<SecretBytes>& keys, UnixTime now) {
  if (card.public_key.empty()) return encode_load_list(id, activate_now, keys);
  auto server = ensure_server_key(tx, kServerKeyName, now);
  if (!server) return server.error();
  auto sec = tx.card_security(card.n);
  if (!sec) return sec.error();
  if (!ct_equal(sec->server_point, server->public_point)) {
    if (auto x = queue_server_key(tx, card, now); !x) return x.error();
  }
  return encode_load_list_asymmetric(id, activate_now, keys, card.public_key, card.n, *server);
}

Result<std::uint64_t> queue_replace_key(Tx& tx, const CardRecord& card, UnixTime now) {
  if (!card.pending_k) return make_error(Errc::state, "card " + to_hex(card.n) + " has no pending key to send");
  Bytes inner = protocol::encode_inner(protocol::ReplaceKey{card.pending_k->clone(), card.pending_version});
  auto q = enqueue_packet(tx, card, inner, now, "rotate", card.pending_version);
  secure_zero(inner.data(), inner.size());
  return q;
}

// A new list for the card: stored (sealed), queued as OTA packets, flagged in flight.
Result<std::uint16_t> allocate_list(Tx& tx, CardRecord& card, std::uint16_t size, std::string_view actor, UnixTime now,
                                    std::vector<SecretBytes>* keys_out) {
  if (auto k = with_keys(tx, card); !k) return k.error();
  auto last = tx.last_list_id(card.n);
  if (!last) return last.error();
  if (*last == 0xFFFF) return make_error(Errc::state, "card " + to_hex(card.n) + " has used all list ids; re-enroll it");
  const auto id = static_cast<std::uint16_t>(*last + 1);
  if (!card.public_key.empty()) size = std::min(size, max_e5_codes(card.public_key));  // E5 must fit 16 SMS
  std::vector<SecretBytes> keys;
  for (std::uint16_t i = 0; i < size; ++i) keys.push_back(new_key(card.algorithm));
  if (auto x = tx.insert_list(card.n, id, keys, now); !x) return x.error();
  if (!card.k.empty()) {  // a card enrolled before K was issued to asymmetric cards has no OTA keys
    auto inner = list_command(tx, card, id, *last == 0, keys, now);
    if (!inner) return inner.error();
    auto q = enqueue_packet(tx, card, *inner, now, "list", id);
    secure_zero(inner->data(), inner->size());
    if (!q) return q.error();
    card.list_push_in_flight = true;
    if (auto x = tx.update_card(card); !x) return x.error();
  }
  auto a = tx.audit(now, actor, "issue_list", "card=" + to_hex(card.n) + " list=" + std::to_string(id) + " count=" + std::to_string(size));
  if (!a) return a.error();
  if (keys_out) *keys_out = std::move(keys);
  return id;
}

// Re-sends the card's latest list (same id and keys, new counter) when the card reports it
// never loaded it: a lost SMS is repaired without allocating more codes.
Result<void> resend_list(Tx& tx, const CardRecord& card, std::uint16_t id, UnixTime now) {
  std::vector<SecretBytes> keys;
  for (std::uint32_t i = 0; i <= 0xFFFF; ++i) {
    auto o = tx.otac(card.n, id, static_cast<std::uint16_t>(i));
    if (!o) {
      if (o.error().code == Errc::not_found) break;
      return o.error();
    }
    keys.push_back(std::move(o->key));
  }
  auto inner = list_command(tx, card, id, false, keys, now);
  if (!inner) return inner.error();
  auto q = enqueue_packet(tx, card, *inner, now, "list", id);
  secure_zero(inner->data(), inner->size());
  if (!q) return q.error();
  return {};
}

// The card is on K' (promote_pending_key), and lists may have gone out under K after the
// card switched: the card refused them unreadably. Every list still unconfirmed goes out
// again under K', in id order; a card that did load one answers 9000 and ignores it, one
// that can no longer load it (a later list came first) answers 6A88 (protocol.md 6.1.1).
// `by_request`: a request under K' proved the switch, and its counter is above that of any
// request sealed under K, so K is dropped; after the E2's PoR it is kept as retired_k.
Result<void> promote_and_repair(Tx& tx, CardRecord& card, bool by_request, UnixTime now) {
  if (!card.pending_k) return {};
  if (auto x = promote_pending_key(tx, card, !by_request, now); !x) return x;
  // An E4 queued under K behind the E2 reached a card already on K' and could not be opened:
  // while the latest one has no PoR, it goes again under K'.
  auto e4 = tx.latest_ota_sent(card.n, "server_key", 0);
  if (!e4) return e4.error();
  if (*e4 != 0) {
    auto sent = tx.ota_sent(card.n, *e4);
    if (!sent) return sent.error();
    if (std::get<2>(*sent) == -1) {
      if (auto q = queue_server_key(tx, card, now); !q) return q.error();
    }
  }
  auto all = tx.lists(card.n);
  if (!all) return all.error();
  std::sort(all->begin(), all->end(), [](const ListInfo& a, const ListInfo& b) { return a.id < b.id; });
  for (const auto& l : *all)
    if (l.state == ListState::sent) {
      if (auto x = resend_list(tx, card, l.id, now); !x) return x;
    }
  return {};
}

// A card has two list slots (protocol.md 2.2); a third list is refused with RSC 07.

// The lists the backend believes the card holds codes of: not refused, some code unused. The
// backend counts a code used only once a terminal presents it, so this can only overcount
// what the card holds: fewer than kCardListSlots here means a free slot on the card.
Result<std::vector<ListInfo>> lists_with_codes(Tx& tx, ByteView n) {
  auto all = tx.lists(n);
  if (!all) return all.error();
  std::vector<ListInfo> out;
  for (auto& l : *all)
    if (l.state != ListState::refused && l.unused > 0) out.push_back(std::move(l));
  return out;
}

// The server's own push (protocol.md 6.4), after a code was consumed by a tap or a typed
// display code: a new list when the unused codes are at or below the card's threshold, no
// list is in flight, and the card has a free slot (else it would refuse the list; the push
// waits for the code that empties a slot).
Result<void> with_keys(Tx& tx, CardRecord& card) {
  if (!card.keys_withheld) return {};
  auto full = tx.card(card.n);
  if (!full) return full.error();
  card = std::move(*full);
  return {};
}

Result<void> push_if_low(Tx& tx, CardRecord& card, std::uint16_t size, UnixTime now) {
  if (card.list_push_in_flight) return {};
  auto plenty = tx.unused_more_than(card.n, card.threshold);
  if (!plenty) return plenty.error();
  if (*plenty) return {};
  auto held = lists_with_codes(tx, card.n);
  if (!held) return held.error();
  if (held->size() >= kCardListSlots) return {};
  auto id = allocate_list(tx, card, size, "system", now, nullptr);
  if (!id) return id.error();
  return {};
}

// The outcome of a list packet's first PoR (protocol.md 6.4). Accepted: the list is loaded,
// and the in-flight flag clears when it is the latest list. Refused (any RSC other than 00,
// or an inner status other than 9000): unless the same list went out again in a later packet
// (a repair or a resend, whose PoR decides), the list is refused, its unused codes withdrawn
// and the in-flight flag cleared, so the next threshold push or card request gets a new list.
// A list refused for its counter (RSC 02: a later packet overtook it) is replaced at once by
// the threshold push: a card left with no code has no code use to ask again with. The
// replacement has the highest counter sent so far, so only another overtaking packet can get
// it refused the same way; other refusals (keys, security) could repeat and get no replacement.
Result<void> record_list_outcome(Tx& tx, CardRecord& card, const PorResult& p, std::uint16_t id, bool accepted,
                                 std::uint16_t list_size, UnixTime now) {
  auto all = tx.lists(card.n);
  if (!all) return all.error();
  auto it = std::find_if(all->begin(), all->end(), [&](const ListInfo& l) { return l.id == id; });
  if (it == all->end()) return {};
  auto last = tx.last_list_id(card.n);
  if (!last) return last.error();
  auto clear_in_flight = [&]() -> Result<void> {
    if (id != *last || !card.list_push_in_flight) return {};
    card.list_push_in_flight = false;
    return tx.update_card(card);
  };
  if (accepted) {
    if (it->state == ListState::refused) {
      // Another packet of the list was refused and its PoR came first, but this one loaded it
      // (an OK PoR is proof: counters only rise, so no later list can have come between).
      // The card holds the codes: give them back.
      auto a = tx.audit(now, "card", "list_restored", "card=" + to_hex(card.n) + " list=" + std::to_string(id) +
                                                          " refusal_was=" + it->refusal);
      if (!a) return a.error();
    }
    if (it->state != ListState::loaded) {
      if (auto x = tx.set_list_state(card.n, id, ListState::loaded, "", now); !x) return x;
    }
    return clear_in_flight();
  }
  if (it->state != ListState::sent) return {};  // loaded (this refusal is stale) or already refused
  auto latest = tx.latest_ota_sent(card.n, "list", id);
  if (!latest) return latest.error();
  if (*latest > p.counter) return {};
  auto upper_hex = [](ByteView b) {
    std::string h = to_hex(b);
    std::transform(h.begin(), h.end(), h.begin(), [](char ch) { return ch >= 'a' && ch <= 'f' ? static_cast<char>(ch - 'a' + 'A') : ch; });
    return h;
  };
  std::string why = "rsc=" + upper_hex(Bytes{p.rsc});
  if (!p.data.empty()) why += " sw=" + upper_hex(p.data);
  if (auto x = tx.set_list_state(card.n, id, ListState::refused, why, now); !x) return x;
  if (auto x = clear_in_flight(); !x) return x;
  auto a = tx.audit(now, "card", "list_refused", "card=" + to_hex(card.n) + " list=" + std::to_string(id) + " " + why +
                                                     " withdrawn=" + std::to_string(it->unused));
  if (!a) return a.error();
  // Replaced at once (by the threshold rule) when the card can never load it: overtaken by a
  // later packet (RSC 02), or a resend of a list it no longer holds (6A88: used up or never
  // loaded; a card that asked for codes is still waiting).
  const bool never = p.rsc == 0x02 || (p.rsc == 0x00 && ct_equal(p.data, Bytes{0x6A, 0x88}));
  if (never && card.status != CardStatus::blocked) return push_if_low(tx, card, list_size, now);
  return {};
}

// The signature key S (E3) across lost SMS, per card (protocol.md 6.2). Packets are built
// for the state the card is known to be in (CF under the confirmed S, or none), while
// pending S' waits for proof:
//   - an OK PoR of an E3{S'} packet                          -> S' confirmed
//   - a later packet refused for its signature (6982, RSC 0A
//     "CF missing" or 01 "CF wrong") where no ECDSA check
//     can be the cause                                       -> S' confirmed; the refused
//                                                               packet is sent again with CF
//   - an OK PoR of a packet sent after every E3{S'} packet   -> those E3 can never apply
//                                                               (counter "higher than"):
//                                                               E3{S'} is sent again
// Whether the card holds the current server key: an E4 (or E5) with it was confirmed.
Result<bool> server_key_confirmed(Tx& tx, const CardSecurity& sec, UnixTime now) {
  auto server = ensure_server_key(tx, kServerKeyName, now);
  if (!server) return server.error();
  return ct_equal(sec.server_point, server->public_point);
}

// The pending S' again in a new E3 (set_signature_key's rule: the same S', never a third key),
// recorded as the latest E3 sent; audited signature_key_resent with `why` appended.
Result<void> resend_signature_key(Tx& tx, const CardRecord& card, CardSecurity& sec, std::string_view why, UnixTime now) {
  if (!sec.pending_sig_key) return make_error(Errc::state, "card " + to_hex(card.n) + " has no signature key to send");
  Bytes inner = encode_set_signature_key(*sec.pending_sig_key);
  auto q = enqueue_packet(tx, card, inner, now, "sig_key", 0);
  secure_zero(inner.data(), inner.size());
  if (!q) return q.error();
  auto after = tx.card_security(card.n);  // enqueue_packet may have set sig_since
  if (!after) return after.error();
  sec.sig_since = after->sig_since;
  sec.pending_sig_sent = *q;
  if (auto x = tx.set_card_security(card.n, sec); !x) return x;
  auto a = tx.audit(now, "system", "signature_key_resent", "card=" + to_hex(card.n) + " counter=" + std::to_string(*q) +
                                                               std::string(why));
  if (!a) return a.error();
  return {};
}

Result<void> track_keys(Tx& tx, const CardRecord& card, const PorResult& p, const std::string& kind, std::int64_t ref,
                        UnixTime now) {
  auto sec = tx.card_security(card.n);
  if (!sec) return sec.error();
  const bool ok = p.rsc == 0 && ct_equal(p.data, kSwOk);
  auto server = ensure_server_key(tx, kServerKeyName, now);
  if (!server) return server.error();
  const bool server_confirmed = ct_equal(sec->server_point, server->public_point);
  if (ok && (kind == "server_key" || (kind == "list" && !card.public_key.empty())) && !server_confirmed) {
    sec->server_point = server->public_point;
    if (auto x = tx.set_card_security(card.n, *sec); !x) return x;
    auto a = tx.audit(now, "card", "server_key_confirmed", "card=" + to_hex(card.n));
    if (!a) return a.error();
  }
  // E4 (a card personalized with another CA) and E5 before the server key is confirmed can
  // also answer 6982; only other refusals prove a signature-key mismatch.
  const bool ecdsa_possible = kind == "server_key" || (kind == "list" && !card.public_key.empty() && !server_confirmed);
  const bool sig_refused = (p.rsc == 0x0A || p.rsc == 0x01) && ct_equal(p.data, kSwSecurity) && !ecdsa_possible;
  // Sends the refused packet's content again under the current state (lists and E2 only:
  // an E3 or E4 is sent again by its own rules or by the operator).
  auto repair = [&]() -> Result<void> {
    if (kind == "list") {
      auto last = tx.last_list_id(card.n);
      if (!last) return last.error();
      if (ref == *last && card.list_push_in_flight) return resend_list(tx, card, *last, now);
    } else if (kind == "rotate" && card.pending_k && card.pending_version == ref) {
      if (auto q = queue_replace_key(tx, card, now); !q) return q.error();
    }
    return {};
  };
  if (!sec->pending_sig_key) {
    // A packet built before S was confirmed (without CF, or CF under the previous S) and
    // refused by a card that now holds S: send it again with CF. Bounded: the repaired
    // packet's counter is at or above sig_since, so its refusal does not repair again.
    // Nothing is promoted here, so an E4 or E5 refusal counts too (e.g. list 1 of an
    // asymmetric card queued behind E3, without CF): were it an ECDSA failure, the cost is
    // one resend.
    const bool refused_6982 = (p.rsc == 0x0A || p.rsc == 0x01) && ct_equal(p.data, kSwSecurity);
    if (refused_6982 && sec->sig_key && (sec->sig_since == 0 || p.counter < sec->sig_since)) return repair();
    return {};
  }
  auto promote = [&](std::string_view how) -> Result<void> {
    sec->sig_key = std::move(sec->pending_sig_key);
    sec->pending_sig_key.reset();
    sec->pending_sig_counter = sec->pending_sig_sent = sec->sig_since = 0;
    if (auto x = tx.set_card_security(card.n, *sec); !x) return x;
    auto a = tx.audit(now, "card", "signature_key_confirmed", "card=" + to_hex(card.n) + " by=" + std::string(how));
    if (!a) return a.error();
    return {};
  };
  if (kind == "sig_key" && ok && p.counter >= sec->pending_sig_counter) return promote("por");
  if (sig_refused && p.counter > sec->pending_sig_counter) {
    if (auto x = promote("refusal"); !x) return x;
    return repair();  // the refused packet again, now with CF
  }
  if (ok && p.counter > sec->pending_sig_sent) return resend_signature_key(tx, card, *sec, "", now);
  return {};
}

}  // namespace detail

using namespace detail;

namespace {

// What an outbox message's last_reply starts with once a delivery report came: "dlr-failed"
// marks a failure reported while the message was still queued.
constexpr std::string_view kDlr = "dlr: ";
constexpr std::string_view kDlrFailed = "dlr-failed: ";

}  // namespace

// ---- SMS --------------------------------------------------------------------------------

Result<void> Service::handle_mo_sms(const MoSms& sms) {
  // UDH elements: we need exactly one 70 (command packet); concatenated MO is not expected
  // (a request fits one SMS), PoRs (71) are acknowledged by the card's next request instead.
  Cursor u(sms.udh, "MO UDH");
  bool command = false, por = false;
  for (int guard = 0; !u.empty() && guard < 16; ++guard) {
    const auto iei = u.u8("IEI");
    const auto len = u.u8("IE length");
    u.take(len, "IE data");
    if (iei == 0x70) command = true;
    else if (iei == 0x71) por = true;
    else if (iei == 0x00 || iei == 0x08) return make_error(Errc::unsupported, "concatenated MO messages are not supported");
  }
  if (auto f = u.finish(); !f) return f.error();
  const UnixTime t = now();
  if (por) {
    return run([&](Tx& tx) -> Result<void> {
      auto p = open_por(tx, sms.from, sms.data);
      if (!p) return p.error();
      auto sent = tx.ota_sent(p->n, p->counter);
      if (!sent) return sent.error();
      if (auto x = tx.set_ota_rsc(p->n, p->counter, p->rsc); !x) return x;
      auto card = tx.card(p->n);
      if (!card) return card.error();
      const auto& [kind, ref, old_rsc] = *sent;
      auto a = tx.audit(t, "card", "por", "card=" + to_hex(p->n) + " counter=" + std::to_string(p->counter) + " kind=" + kind +
                                              " rsc=" + std::to_string(p->rsc));
      if (!a) return a.error();
      if (old_rsc == -1) {  // the first PoR for this packet: E3/E4 bookkeeping
        if (auto x = track_keys(tx, *card, *p, kind, ref, t); !x) return x;
        card = tx.card(p->n);
        if (!card) return card.error();
      }
      // Failed: an RSC, or RSC 00 with an inner status other than 9000 (e.g. 6985 for an E5
      // the card cannot open).
      const bool accepted = p->rsc == 0 && ct_equal(p->data, kSwOk);
      if (kind == "list" && old_rsc != 0) {
        if (ref < 1 || ref > 0xFFFF) return make_error(Errc::bad_value, "list packet with list id " + std::to_string(ref));
        return record_list_outcome(tx, *card, *p, static_cast<std::uint16_t>(ref), accepted, config_.list_size, t);
      }
      if (kind == "rotate" && old_rsc == -1 && p->rsc == 0x02 && card->pending_k && card->pending_version == ref) {
        // The E2 was overtaken by a later packet (it waited for a retry while the gateway was
        // down) and refused for its counter: the same K' goes again, or the rotation would
        // stay pending for good (protocol.md 6.2).
        if (auto q = queue_replace_key(tx, *card, t); !q) return q.error();
        auto resent = tx.audit(t, "system", "rotate_key_resent", "card=" + to_hex(card->n) + " new_version=" +
                                                                     std::to_string(card->pending_version) + " after=rsc02");
        if (!resent) return resent.error();
        return {};
      }
      if (kind == "server_key" && old_rsc == -1 && p->rsc == 0x02) {
        // The same for an E4 (found by the soak: queued while the gateway was down, overtaken
        // by a list the card's request got at once): while the server key is unconfirmed and
        // this was the latest E4, it goes again, or it would stay unconfirmed for good.
        auto latest = tx.latest_ota_sent(card->n, "server_key", 0);
        if (!latest) return latest.error();
        auto sec = tx.card_security(card->n);
        if (!sec) return sec.error();
        auto confirmed = server_key_confirmed(tx, *sec, t);
        if (!confirmed) return confirmed.error();
        if (*latest != p->counter || *confirmed) return {};
        auto q = queue_server_key(tx, *card, t);
        if (!q) return q.error();
        auto resent = tx.audit(t, "system", "server_key_resent", "card=" + to_hex(card->n) + " counter=" +
                                                                     std::to_string(*q) + " after=rsc02");
        if (!resent) return resent.error();
        return {};
      }
      if (!accepted || old_rsc == 0) return {};  // a failure, or a duplicate PoR
      if (kind == "rotate" && card->pending_k && card->pending_version == ref) return promote_and_repair(tx, *card, false, t);
      return {};
    });
  }
  if (!command) return make_error(Errc::bad_value, "MO SMS without a command packet (UDH IEI 70)");
  return run([&](Tx& tx) -> Result<void> {
    auto req = open_card_request(tx, sms.data);
    if (!req) return req.error();
    auto card = tx.card(req->n);
    if (!card) return card.error();
    if (req->key == KeyUsed::pending) {
      if (auto x = promote_and_repair(tx, *card, true, t); !x) return x;
    } else if (req->key == KeyUsed::current && card->retired_k) {
      card->retired_k.reset();  // heard under the new K: nothing sealed under the old one is still trusted
      card->retired_version = 0;
      if (auto x = tx.update_card(*card); !x) return x;
    }
    auto a = tx.audit(t, "card", "card_request", "card=" + to_hex(req->n) + " type=" + std::to_string(req->type) +
                                                     " active_list=" + std::to_string(req->active_list) + " unused=" + std::to_string(req->unused));
    if (!a) return a.error();
    if (req->active_list != 0) {
      // The card holds its active list: loaded, even if that list's PoR was lost.
      auto held = tx.lists(req->n);
      if (!held) return held.error();
      for (const auto& l : *held)
        if (l.id == req->active_list && l.state != ListState::loaded) {
          // Refused too: a PoR refusing another packet of it came first (6.4); the card holds it.
          if (l.state == ListState::refused) {
            auto r = tx.audit(t, "card", "list_restored", "card=" + to_hex(req->n) + " list=" + std::to_string(l.id) +
                                                              " refusal_was=" + l.refusal);
            if (!r) return r.error();
          }
          if (auto x = tx.set_list_state(req->n, l.id, ListState::loaded, "", t); !x) return x;
        }
    }
    if (req->type == 0x03) return {};
    auto last = tx.last_list_id(card->n);
    if (!last) return last.error();
    if (*last != 0 && req->active_list < *last && card->list_push_in_flight) {
      // The card has not loaded our latest list: send that list again instead of a new one
      // (a blocked card too: the codes were allocated before the block, and it needs them
      // once unblocked).
      return resend_list(tx, *card, *last, t);
    }
    if (card->status == CardStatus::blocked) return {};  // a blocked card gets no new codes
    card->list_push_in_flight = false;
    auto id = allocate_list(tx, *card, config_.list_size, "card", t, nullptr);
    if (!id) return id.error();
    return {};
  });
}

Result<std::vector<OutboxMessage>> Service::next_due(std::uint32_t limit) {
  std::vector<OutboxMessage> out;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto d = tx.lease_due_sms(t, t + kSmsLeaseSeconds, limit);
    if (!d) return d.error();
    out = std::move(*d);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<void> Service::mark_sent(std::int64_t id, std::string_view reply) {
  return run([&](Tx& tx) -> Result<void> {
    auto m = tx.sms(id);
    if (!m) return m.error();
    if (m->status != OutboxStatus::queued) return make_error(Errc::conflict, "outbox message " + std::to_string(id) + " is not queued");
    m->status = OutboxStatus::sent;
    ++m->attempts;
    // A delivery report can overtake the gateway's answer to the send itself; keep it, and
    // the failure it reported (record_delivery_report could not mark a queued message).
    const bool failed_early = m->last_reply.rfind(kDlrFailed, 0) == 0;
    if (failed_early) m->status = OutboxStatus::failed;
    if (failed_early || m->last_reply.rfind(kDlr, 0) == 0) m->last_reply += " | " + std::string(reply);
    else m->last_reply = std::string(reply);
    return tx.update_sms(*m);
  });
}

Result<void> Service::mark_failed(std::int64_t id, std::string_view reply, UnixTime retry_at) {
  return run([&](Tx& tx) -> Result<void> {
    auto m = tx.sms(id);
    if (!m) return m.error();
    if (m->status != OutboxStatus::queued) return make_error(Errc::conflict, "outbox message " + std::to_string(id) + " is not queued");
    ++m->attempts;
    m->next_attempt_at = retry_at;
    m->last_reply = std::string(reply);
    return tx.update_sms(*m);
  });
}

Result<void> Service::record_delivery_report(std::int64_t id, std::string_view report, bool failed) {
  return run([&](Tx& tx) -> Result<void> {
    auto m = tx.sms(id);
    if (!m) return m.error();
    // Still queued: the report overtook the gateway's answer to the send, and mark_sent
    // applies the failure when that answer comes.
    const bool early = m->status == OutboxStatus::queued;
    m->last_reply = std::string(failed && early ? kDlrFailed : kDlr) + std::string(report.substr(0, 200));
    if (failed && m->status == OutboxStatus::sent) m->status = OutboxStatus::failed;
    return tx.update_sms(*m);
  });
}

Result<std::uint32_t> Service::repair_lists(std::uint32_t limit) {
  std::uint32_t sent = 0;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    sent = 0;
    auto due = tx.lists_to_repair(t, config_.list_repair_after.count(), config_.list_repair_packets, limit);
    if (!due) return due.error();
    for (const auto& d : *due) {
      auto card = tx.card(d.n);
      if (!card) return card.error();
      // A blocked card too: these codes were allocated before, are unusable while it is
      // blocked, and the card needs them once unblocked.
      if (auto x = resend_list(tx, *card, d.list_id, t); !x) return x;
      auto a = tx.audit(t, "system", "list_resent", "card=" + to_hex(d.n) + " list=" + std::to_string(d.list_id) +
                                                        " packets=" + std::to_string(d.packets + 1));
      if (!a) return a.error();
      ++sent;
    }
    return {};
  });
  if (!r) return r.error();
  return sent;
}

Result<std::uint32_t> Service::repair_key_packets(std::uint32_t limit) {
  std::uint32_t sent = 0;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    sent = 0;
    auto due = tx.key_packets_to_repair(t, config_.list_repair_after.count(), config_.list_repair_packets, limit);
    if (!due) return due.error();
    for (const auto& d : *due) {
      auto card = tx.card(d.n);
      if (!card) return card.error();
      auto sec = tx.card_security(d.n);
      if (!sec) return sec.error();
      const std::string why = " packets=" + std::to_string(d.packets + 1) + " after=no_por";
      if (d.kind == "sig_key") {
        if (!sec->pending_sig_key) continue;  // confirmed meanwhile
        if (auto x = resend_signature_key(tx, *card, *sec, why, t); !x) return x;
      } else {
        auto confirmed = server_key_confirmed(tx, *sec, t);
        if (!confirmed) return confirmed.error();
        if (*confirmed) continue;  // confirmed meanwhile
        auto q = queue_server_key(tx, *card, t);
        if (!q) return q.error();
        auto a = tx.audit(t, "system", "server_key_resent", "card=" + to_hex(d.n) + " counter=" + std::to_string(*q) + why);
        if (!a) return a.error();
      }
      ++sent;
    }
    return {};
  });
  if (!r) return r.error();
  return sent;
}

Result<std::uint32_t> Service::repair_rotations(std::uint32_t limit) {
  std::uint32_t sent = 0;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    sent = 0;
    auto due = tx.rotations_to_repair(t, config_.list_repair_after.count(), config_.list_repair_packets, limit);
    if (!due) return due.error();
    for (const auto& d : *due) {
      auto card = tx.card(d.n);
      if (!card) return card.error();
      if (!card->pending_k || card->pending_version != d.version) continue;  // confirmed meanwhile
      // The same K' again, as an operator's second rotate-key sends it: the card may hold it
      // already (only the PoR was lost), and then refuses this copy, sealed under K, for its
      // check; a card that never got it switches now.
      if (auto q = queue_replace_key(tx, *card, t); !q) return q.error();
      auto a = tx.audit(t, "system", "rotate_key_resent", "card=" + to_hex(d.n) + " new_version=" +
                                                              std::to_string(d.version) + " packets=" +
                                                              std::to_string(d.packets + 1));
      if (!a) return a.error();
      ++sent;
    }
    return {};
  });
  if (!r) return r.error();
  return sent;
}

}  // namespace otac::backend
