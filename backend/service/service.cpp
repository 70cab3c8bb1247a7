#include "service.hpp"

#include <algorithm>
#include <ctime>

#include "challenge.hpp"
#include "ota_push.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/protocol.hpp"

namespace otac::backend {
namespace {

const Bytes kArcApproved = {'0', '0'};
const Bytes kArcDeclined = {'0', '5'};
const Bytes kArcLimit = {'5', '1'};
const Bytes kArcHeld = {'1', '9'};

/// The card algorithm's 8-byte MAC (protocol.md §3): ISO 9797-1 alg 3 pad 2, or AES-CMAC/8.
Result<Bytes> mac8(Algorithm alg, const SecretBytes& key, ByteView data) {
  if (alg == Algorithm::des3) return crypto::mac_alg3(key, data, crypto::Padding::method2, 8);
  auto m = crypto::aes_cmac(key, data);
  if (!m) return m.error();
  m->resize(8);
  return m;
}

SecretBytes new_key(Algorithm alg) {
  SecretBytes k = crypto::random_secret(16);
  if (alg == Algorithm::des3) crypto::set_des_parity(k.data(), k.size());
  return k;
}

std::string random_digits(std::size_t n) {
  std::string s;
  // Rejection sampling keeps the digits uniform; bounded because each byte < 250 has p = 0.977.
  for (int guard = 0; s.size() < n && guard < 1000; ++guard) {
    for (auto b : crypto::random_bytes(16)) {
      if (b < 250 && s.size() < n) s.push_back(static_cast<char>('0' + b % 10));
    }
  }
  return s;
}

bool valid_txn_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7F; });
}

Bytes request_hash(std::string_view kind, std::initializer_list<ByteView> parts) {
  Bytes in = to_bytes(kind);
  for (auto p : parts) { append(in, be_bytes(p.size(), 4)); append(in, p); }
  return crypto::sha256(in);
}

AuthAnswer answer_of(const TransactionRecord& t, UnixTime now) {
  AuthAnswer a{t.txn_id, t.decision, t.reason, t.auth_code, t.arc, t.arpc, 0, 0};
  if (t.decision == Decision::held) {
    a.expires_at = t.expires_at;
    // The store's clock has whole seconds: at "now" up to one more second may already have
    // passed, so one is taken off. A terminal counting this from before its request never
    // waits past the deadline (protocol.md §5.2).
    a.expires_in = std::max<std::int64_t>(0, t.expires_at - now - 1);
  }
  return a;
}

// Records the final decision of a held transaction inside the caller's store transaction: a
// fresh ARPC over the final ARC (a terminal that relays the decision to a card still in the
// field gets a CONFIRM the card can verify), the conditional update, and an audit entry.
// False (and rec re-read) when the transaction was no longer held: someone decided it first.
Result<bool> settle_held(Tx& tx, TransactionRecord& rec, Decision d, std::string reason, std::string_view actor,
                         std::string_view action, UnixTime decided_at, UnixTime now) {
  auto card = tx.card(rec.card);
  if (!card) return card.error();
  auto code = tx.otac(rec.card, rec.list_id, rec.index);
  if (!code) return code.error();
  TransactionRecord next = rec;
  next.decision = d;
  next.reason = std::move(reason);
  next.arc = d == Decision::approved ? kArcApproved : kArcDeclined;
  next.auth_code = d == Decision::approved ? random_digits(6) : std::string{};
  next.decided_at = decided_at;
  next.decided_by = std::string(actor);
  auto arpc = mac8(card->algorithm, code->key, protocol::arpc_input(next.cryptogram, next.arc));
  if (!arpc) return arpc.error();
  next.arpc = std::move(*arpc);
  auto won = tx.decide_held_transaction(next);
  if (!won) return won.error();
  if (!*won) {
    auto again = tx.transaction(rec.txn_id);
    if (!again) return again.error();
    rec = std::move(*again);
    return false;
  }
  auto a = tx.audit(now, actor, action, "txn=" + next.txn_id + " decision=" + decision_name(d) + " reason=" + next.reason);
  if (!a) return a.error();
  rec = std::move(next);
  return true;
}

// A held transaction whose deadline has passed is declined (held_timeout) before anyone reads
// or decides it, so no operator can approve what the terminal already showed as declined.
// True when this call expired it.
Result<bool> expire_if_due(Tx& tx, TransactionRecord& rec, UnixTime now) {
  if (rec.decision != Decision::held || now < rec.expires_at) return false;
  return settle_held(tx, rec, Decision::declined, "held_timeout", "system", "expire_held", rec.expires_at, now);
}

// Key rotation state machine (per card; protocol.md §6 E2):
//   steady:   k = K, no pending.                      rotate_key -> rotating
//   rotating: k = K, pending_k = K', E2{K'} sent under K.
//             card request whose CC verifies under K' -> steady with k = K' (K retired)
//             card request under K                    -> stays rotating (E2 not yet applied)
//             rotate_key again                        -> rotating with a fresh K'' (K' dropped)
// Lists and other packets keep going out under K while rotating, because K is the key the
// card is known to hold. A lost E2 leaves the card on K, which the server still accepts; a
// duplicated E2 after the switch is under the retired K and fails the card's CC check, so
// it changes nothing. Neither side ever discards the key the other might still be using.
Result<void> promote_pending_key(Tx& tx, CardRecord& card, UnixTime now) {
  if (!card.pending_k) return {};
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
constexpr std::string_view kCaKeyName = "card-ca";
constexpr std::string_view kServerKeyName = "server";
const Bytes kSwOk = {0x90, 0x00};
const Bytes kSwSecurity = {0x69, 0x82};

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

Bytes encode_replace_key(const SecretBytes& k, std::uint8_t version) {
  return protocol::encode_inner(protocol::ReplaceKey{k.clone(), version});
}

// A new list for the card: stored (sealed), queued as OTA packets, flagged in flight.
Result<std::uint16_t> allocate_list(Tx& tx, CardRecord& card, std::uint16_t size, std::string_view actor, UnixTime now,
                                    std::vector<SecretBytes>* keys_out) {
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

// A card has two list slots (protocol.md 2.2); a third list is refused with RSC 07.
constexpr std::size_t kCardListSlots = 2;

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
    if (it->state == ListState::sent) {
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
  if (p.rsc == 0x02 && card.status != CardStatus::blocked)
    return push_if_low(tx, card, list_size, now);
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
      Bytes inner = encode_replace_key(*card.pending_k, card.pending_version);
      auto q = enqueue_packet(tx, card, inner, now, "rotate", card.pending_version);
      secure_zero(inner.data(), inner.size());
      if (!q) return q.error();
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
  if (ok && p.counter > sec->pending_sig_sent) {
    Bytes inner = encode_set_signature_key(*sec->pending_sig_key);
    auto q = enqueue_packet(tx, card, inner, now, "sig_key", 0);
    secure_zero(inner.data(), inner.size());
    if (!q) return q.error();
    auto after = tx.card_security(card.n);  // enqueue_packet may have set sig_since
    if (!after) return after.error();
    sec->sig_since = after->sig_since;
    sec->pending_sig_sent = *q;
    if (auto x = tx.set_card_security(card.n, *sec); !x) return x;
    auto a = tx.audit(now, "system", "signature_key_resent", "card=" + to_hex(card.n) + " counter=" + std::to_string(*q));
    if (!a) return a.error();
  }
  return {};
}

}  // namespace

const char* decision_name(Decision d) noexcept {
  switch (d) {
    case Decision::approved: return "approved";
    case Decision::declined: return "declined";
    case Decision::held: return "held";
  }
  return "declined";
}

const char* role_name(Role r) noexcept {
  switch (r) {
    case Role::viewer: return "viewer";
    case Role::operator_: return "operator";
    case Role::admin: return "admin";
  }
  return "viewer";
}

// Store connections, one per concurrent caller (a SQLite connection is not shared by threads).
class Service::Pool {
 public:
  explicit Pool(std::function<Result<std::unique_ptr<Store>>()> f) : factory_(std::move(f)) {}
  Result<std::unique_ptr<Store>> take() {
    {
      std::lock_guard lock(mu_);
      if (!free_.empty()) {
        auto s = std::move(free_.back());
        free_.pop_back();
        return s;
      }
    }
    return factory_();
  }
  void give(std::unique_ptr<Store> s) {
    std::lock_guard lock(mu_);
    if (free_.size() < 64) free_.push_back(std::move(s));
  }

 private:
  std::function<Result<std::unique_ptr<Store>>()> factory_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Store>> free_;
};

Service::Service(ServiceConfig config, std::function<Result<std::unique_ptr<Store>>()> factory,
                 std::function<UnixTime()> clock)
    : config_(std::move(config)), pool_(std::make_unique<Pool>(std::move(factory))), clock_(std::move(clock)) {}

Service::~Service() = default;

UnixTime Service::now() const { return clock_ ? clock_() : static_cast<UnixTime>(std::time(nullptr)); }

Result<void> Service::run(const std::function<Result<void>(Tx&)>& fn) {
  auto s = pool_->take();
  if (!s) return s.error();
  auto r = (*s)->run(fn);
  pool_->give(std::move(*s));
  return r;
}

void Service::count(const AuthAnswer& a) {
  std::lock_guard lock(metrics_mu_);
  ++decisions_[std::string(decision_name(a.decision)) + "/" + a.reason];
}

// ---- cards ------------------------------------------------------------------------------

Result<Enrollment> Service::enroll_card(const EnrollRequest& req, std::string_view actor) {
  if (req.msisdn.empty() || req.msisdn.size() > 20)
    return make_error(Errc::bad_value, "msisdn must be 1 to 20 digits with an optional leading '+'");
  for (std::size_t i = 0; i < req.msisdn.size(); ++i) {
    const char c = req.msisdn[i];
    if (!((c >= '0' && c <= '9') || (c == '+' && i == 0))) return make_error(Errc::bad_value, "msisdn must be digits with an optional leading '+'");
  }
  Enrollment e;
  e.algorithm = req.algorithm;
  const bool asymmetric = !req.public_key.empty();
  if (asymmetric) {
    if (auto ok = check_card_public_key(req.public_key); !ok) return ok.error();
  }
  std::vector<DoorPermission> doors = req.doors;
  if (auto v = validate_doors(doors); !v) return v.error();
  if (req.currency != 0 && !config_.currencies.contains(req.currency))
    return make_error(Errc::bad_value, "currency " + std::to_string(req.currency) + " is not an ISO 4217 currency");
  if (req.limit_minor < 0 || req.review_minor < 0) return make_error(Errc::bad_value, "limit and review amounts must not be negative");
  // K is issued to asymmetric cards too: E5 travels in OTA packets under K (protocol.md 6.1.2).
  e.k = new_key(req.algorithm);
  const UnixTime t = now();
  Result<void> r;
  for (int attempt = 0; attempt < 3; ++attempt) {  // N collisions are astronomically rare; bounded anyway
    e.n = crypto::random_bytes(8);
    r = run([&](Tx& tx) -> Result<void> {
      CardRecord c;
      c.n = e.n;
      c.algorithm = req.algorithm;
      c.msisdn = req.msisdn;
      c.fail_limit = config_.default_fail_limit;
      c.threshold = req.threshold.value_or(config_.default_threshold);
      c.limit_minor = req.limit_minor;
      c.review_minor = req.review_minor;
      c.currency = req.currency != 0 ? req.currency : config_.default_currency;
      c.k = e.k.clone();
      c.public_key = req.public_key;
      auto ca = ensure_server_key(tx, kCaKeyName, t);
      if (!ca) return ca.error();
      e.ca_point = ca->public_point;
      c.created_at = t;
      if (auto x = tx.insert_card(c); !x) return x;
      if (auto x = tx.set_doors(e.n, doors); !x) return x;
      auto a = tx.audit(t, actor, "enroll", "card=" + to_hex(e.n) + (asymmetric ? " asymmetric" : ""));
      if (!a) return a.error();
      return {};
    });
    if (r || r.error().code != Errc::conflict) break;
  }
  if (!r) return r.error();
  // The letter carries K in clear by design (the patent's initialization letter); it is
  // printed once and never logged.
  std::string letter = "OTAC card initialization\n";
  letter += "Card identity N: " + to_hex(e.n) + "\n";
  letter += std::string("Algorithm: ") + (e.algorithm == Algorithm::des3 ? "3DES (two-key)" : "AES-128") + "\n";
  letter += "Card key K: " + to_hex(e.k.view()) + "\n";
  letter += "Server SMS number: " + config_.server_msisdn + "\n";
  letter += "Card CA key: " + to_hex(e.ca_point) + "\n";
  e.letter = std::move(letter);
  return e;
}

Result<std::pair<std::uint16_t, std::vector<SecretBytes>>> Service::issue_list(ByteView n, std::string_view actor) {
  std::uint16_t id = 0;
  std::vector<SecretBytes> keys;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    auto x = allocate_list(tx, *c, config_.list_size, actor, t, &keys);
    if (!x) return x.error();
    id = *x;
    return {};
  });
  if (!r) return r.error();
  return std::make_pair(id, std::move(keys));
}

Result<std::uint16_t> Service::refresh_card(ByteView n, std::string_view actor) {
  std::uint16_t id = 0;
  std::string refused;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    auto held = lists_with_codes(tx, n);
    if (!held) return held.error();
    if (held->size() >= kCardListSlots) {
      // Refused up front: the card would refuse the list (RSC 07). Audited, nothing queued.
      refused = "card " + to_hex(n) + " still holds codes of lists";
      for (std::size_t i = 0; i < held->size(); ++i)
        refused += (i == 0 ? " " : ", ") + std::to_string((*held)[i].id) + " (" + std::to_string((*held)[i].unused) + " unused" +
                   ((*held)[i].state == ListState::sent ? ", not yet confirmed" : "") + ")";
      refused += "; a card has room for 2 lists and would refuse a third. It asks for a list itself when one is used up";
      auto a = tx.audit(t, actor, "refresh_refused", "card=" + to_hex(n) + " reason=no_room");
      if (!a) return a.error();
      return {};
    }
    auto x = allocate_list(tx, *c, config_.list_size, actor, t, nullptr);
    if (!x) return x.error();
    id = *x;
    return {};
  });
  if (!r) return r.error();
  if (!refused.empty()) return make_error(Errc::conflict, refused);
  return id;
}

Result<std::vector<ListInfo>> Service::card_lists(ByteView n) {
  std::vector<ListInfo> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    auto l = tx.lists(n);
    if (!l) return l.error();
    out = std::move(*l);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<void> Service::rotate_key(ByteView n, std::string_view actor) {
  const UnixTime t = now();
  return run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    if (c->k.empty()) return make_error(Errc::state, "card " + to_hex(n) + " has no symmetric key to rotate");
    c->pending_k = new_key(c->algorithm);
    // Key versions are 4 bits in KIc/KID (TS 102 225); cycle through 1..15.
    c->pending_version = static_cast<std::uint8_t>(c->key_version % 15 + 1);
    Bytes inner = encode_replace_key(*c->pending_k, c->pending_version);
    auto q = enqueue_packet(tx, *c, inner, t, "rotate", c->pending_version);
    secure_zero(inner.data(), inner.size());
    if (!q) return q.error();
    if (auto x = tx.update_card(*c); !x) return x;
    auto a = tx.audit(t, actor, "rotate_key", "card=" + to_hex(n) + " new_version=" + std::to_string(c->pending_version));
    if (!a) return a.error();
    return {};
  });
}

Result<Bytes> Service::card_ca_public() {
  Bytes point;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto ca = ensure_server_key(tx, kCaKeyName, t);
    if (!ca) return ca.error();
    point = ca->public_point;
    return {};
  });
  if (!r) return r.error();
  return point;
}

Result<void> Service::install_server_key(ByteView n, std::string_view actor) {
  const UnixTime t = now();
  return run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    if (c->k.empty()) return make_error(Errc::state, "card " + to_hex(n) + " has no OTA key K; re-enroll it");
    auto q = queue_server_key(tx, *c, t);
    if (!q) return q.error();
    auto a = tx.audit(t, actor, "install_server_key", "card=" + to_hex(n) + " counter=" + std::to_string(*q));
    if (!a) return a.error();
    return {};
  });
}

Result<void> Service::set_signature_key(ByteView n, std::string_view actor) {
  const UnixTime t = now();
  return run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    if (c->k.empty()) return make_error(Errc::state, "card " + to_hex(n) + " has no OTA key K; re-enroll it");
    auto sec = tx.card_security(n);
    if (!sec) return sec.error();
    // While an E3 is unconfirmed the card may hold S' or not: send the same S' again rather
    // than a third key, so that the card is always in one of two states we can tell apart.
    const bool fresh = !sec->pending_sig_key;
    if (fresh) sec->pending_sig_key = crypto::random_secret(16);
    Bytes inner = encode_set_signature_key(*sec->pending_sig_key);
    auto q = enqueue_packet(tx, *c, inner, t, "sig_key", 0);
    secure_zero(inner.data(), inner.size());
    if (!q) return q.error();
    auto after = tx.card_security(n);  // enqueue_packet may have set sig_since
    if (!after) return after.error();
    sec->sig_since = after->sig_since;
    if (fresh) sec->pending_sig_counter = *q;
    sec->pending_sig_sent = *q;
    if (auto x = tx.set_card_security(n, *sec); !x) return x;
    auto a = tx.audit(t, actor, "set_signature_key", "card=" + to_hex(n) + (fresh ? " new" : " resent") + " counter=" + std::to_string(*q));
    if (!a) return a.error();
    return {};
  });
}

Result<CardKeyStatus> Service::key_status(ByteView n) {
  CardKeyStatus out;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    auto sec = tx.card_security(n);
    if (!sec) return sec.error();
    auto server = ensure_server_key(tx, kServerKeyName, t);
    if (!server) return server.error();
    out.signature_key = sec->sig_key.has_value();
    out.signature_key_pending = sec->pending_sig_key.has_value();
    out.server_key = ct_equal(sec->server_point, server->public_point);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<void> Service::block_card(ByteView n, std::string_view actor) {
  const UnixTime t = now();
  return run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    c->status = CardStatus::blocked;
    if (auto x = tx.update_card(*c); !x) return x;
    auto a = tx.audit(t, actor, "block", "card=" + to_hex(n));
    if (!a) return a.error();
    return {};
  });
}

Result<void> Service::unblock_card(ByteView n, std::string_view actor) {
  const UnixTime t = now();
  return run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    c->status = CardStatus::active;
    c->fail_count = 0;
    if (auto x = tx.update_card(*c); !x) return x;
    auto a = tx.audit(t, actor, "unblock", "card=" + to_hex(n));
    if (!a) return a.error();
    return {};
  });
}

Result<CardRecord> Service::card(ByteView n) {
  CardRecord out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    out = std::move(*c);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<DoorPermission>> Service::card_doors(ByteView n) {
  std::vector<DoorPermission> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    if (auto c = tx.card(n); !c) return c.error();
    auto d = tx.doors(n);
    if (!d) return d.error();
    out = std::move(*d);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<CardRecord> Service::update_card_settings(ByteView n, CardSettings s, std::string_view actor) {
  if (!s.limit_minor && !s.review_minor && !s.threshold && !s.currency && !s.doors)
    return make_error(Errc::bad_value, "no setting to change (limit, review, threshold, currency or doors)");
  if ((s.limit_minor && *s.limit_minor < 0) || (s.review_minor && *s.review_minor < 0))
    return make_error(Errc::bad_value, "limit and review amounts must not be negative");
  if (s.currency && !config_.currencies.contains(*s.currency))
    return make_error(Errc::bad_value, "currency " + std::to_string(*s.currency) + " is not an ISO 4217 currency");
  if (s.doors) {
    if (auto v = validate_doors(*s.doors); !v) return v.error();
  }
  const UnixTime t = now();
  CardRecord out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto c = tx.card(n);
    if (!c) return c.error();
    std::string changes;
    auto note = [&](const char* name, const std::string& before, const std::string& after) {
      if (before != after) changes += std::string(" ") + name + "=" + before + "->" + after;
    };
    if (s.limit_minor) { note("limit_minor", std::to_string(c->limit_minor), std::to_string(*s.limit_minor)); c->limit_minor = *s.limit_minor; }
    if (s.review_minor) { note("review_minor", std::to_string(c->review_minor), std::to_string(*s.review_minor)); c->review_minor = *s.review_minor; }
    if (s.threshold) { note("threshold", std::to_string(c->threshold), std::to_string(*s.threshold)); c->threshold = *s.threshold; }
    if (s.currency) {
      const std::uint16_t before = c->currency != 0 ? c->currency : config_.default_currency;
      note("currency", std::to_string(before), std::to_string(*s.currency));
      c->currency = *s.currency;
    }
    if (auto x = tx.update_card(*c); !x) return x;
    if (s.doors) {
      auto before = tx.doors(n);
      if (!before) return before.error();
      auto list = [](const std::vector<DoorPermission>& v) {
        std::string text = "[";
        for (const auto& d : v) text += (text.size() > 1 ? ", " : "") + describe_door(d);
        return text + "]";
      };
      auto sorted = *s.doors;
      std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.door < b.door; });
      note("doors", list(*before), list(sorted));
      if (auto x = tx.set_doors(n, *s.doors); !x) return x;
    }
    auto a = tx.audit(t, actor, "card_settings", "card=" + to_hex(n) + (changes.empty() ? std::string(" unchanged") : changes));
    if (!a) return a.error();
    out = std::move(*c);
    return {};
  });
  if (!r) return r.error();
  return out;
}

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
      if (!accepted || old_rsc == 0) return {};  // a failure, or a duplicate PoR
      if (kind == "rotate" && card->pending_k && card->pending_version == ref) return promote_pending_key(tx, *card, t);
      return {};
    });
  }
  if (!command) return make_error(Errc::bad_value, "MO SMS without a command packet (UDH IEI 70)");
  return run([&](Tx& tx) -> Result<void> {
    auto req = open_card_request(tx, sms.data);
    if (!req) return req.error();
    auto card = tx.card(req->n);
    if (!card) return card.error();
    if (req->under_pending_key) {
      if (auto x = promote_pending_key(tx, *card, t); !x) return x;
    }
    auto a = tx.audit(t, "card", "card_request", "card=" + to_hex(req->n) + " type=" + std::to_string(req->type) +
                                                     " active_list=" + std::to_string(req->active_list) + " unused=" + std::to_string(req->unused));
    if (!a) return a.error();
    if (req->active_list != 0) {
      // The card holds its active list: loaded, even if that list's PoR was lost.
      auto held = tx.lists(req->n);
      if (!held) return held.error();
      for (const auto& l : *held)
        if (l.id == req->active_list && l.state == ListState::sent) {
          if (auto x = tx.set_list_state(req->n, l.id, ListState::loaded, "", t); !x) return x;
        }
    }
    if (req->type == 0x03) return {};
    if (card->status == CardStatus::blocked) return {};  // a blocked card gets no new codes
    auto last = tx.last_list_id(card->n);
    if (!last) return last.error();
    if (*last != 0 && req->active_list < *last && card->list_push_in_flight) {
      // The card has not loaded our latest list: send that list again instead of a new one.
      return resend_list(tx, *card, *last, t);
    }
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
    auto d = tx.due_sms(t, limit);
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
    // A delivery report can overtake the gateway's answer to the send itself; keep it.
    if (m->last_reply.rfind("dlr:", 0) == 0) m->last_reply += " | " + std::string(reply);
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
    m->last_reply = "dlr: " + std::string(report.substr(0, 200));
    if (failed && m->status == OutboxStatus::sent) m->status = OutboxStatus::failed;
    return tx.update_sms(*m);
  });
}

// ---- authorization -----------------------------------------------------------------------

Result<AuthAnswer> Service::authorize(const AuthRequest& req, std::string_view terminal_id) {
  if (!valid_txn_id(req.txn_id)) return make_error(Errc::bad_value, "txn_id must be 1 to 64 printable ASCII characters");
  if (req.card.size() != 8) return make_error(Errc::bad_length, "card must be 8 bytes (16 hex digits)");
  if (req.cryptogram.size() != 8) return make_error(Errc::bad_length, "cryptogram must be 8 bytes (16 hex digits)");
  auto ch = parse_challenge(req.challenge);
  if (!ch) return ch.error();
  if (ch->terminal_id() != terminal_id)
    return make_error(Errc::state, "terminal id in the challenge (9F1C) does not match the client certificate");
  const Bytes hash = request_hash("authorize", {as_bytes(req.txn_id), req.card, be_bytes(req.list_id, 2),
                                                be_bytes(req.index, 2), be_bytes(req.atc, 2), Bytes{req.pin_state},
                                                req.challenge, req.cryptogram});
  const UnixTime t = now();
  AuthAnswer ans;
  bool replayed = false;
  auto r = run([&](Tx& tx) -> Result<void> {
    replayed = false;
    if (auto prev = tx.transaction(req.txn_id); prev) {
      if (!ct_equal(prev->request_hash, hash))
        return make_error(Errc::conflict, "txn_id " + req.txn_id + " was used with a different request");
      auto expired = expire_if_due(tx, *prev, t);
      if (!expired) return expired.error();
      ans = answer_of(*prev, t);
      replayed = !*expired;
      return {};
    } else if (prev.error().code != Errc::not_found) {
      return prev.error();
    }
    auto term = tx.terminal(terminal_id);
    if (!term) {
      if (term.error().code == Errc::not_found) return make_error(Errc::state, "terminal " + std::string(terminal_id) + " is not registered");
      return term.error();
    }
    if (!term->enabled) return make_error(Errc::state, "terminal " + std::string(terminal_id) + " is disabled");

    TransactionRecord rec;
    rec.txn_id = req.txn_id;
    rec.request_hash = hash;
    rec.card = req.card;
    rec.list_id = req.list_id;
    rec.index = req.index;
    rec.terminal_id = std::string(terminal_id);
    rec.amount_minor = ch->amount_minor;
    rec.currency = ch->currency_code;
    rec.door = ch->door_id();
    rec.cryptogram = req.cryptogram;
    rec.created_at = t;
    rec.decided_at = t;
    rec.decision = Decision::declined;
    rec.arc = kArcDeclined;

    auto finish = [&]() -> Result<void> {
      if (auto x = tx.insert_transaction(rec); !x) return x;
      auto a = tx.audit(t, terminal_id, "authorize",
                        "txn=" + rec.txn_id + " card=" + to_hex(rec.card) + " code=" + std::to_string(rec.list_id) + "/" +
                            std::to_string(rec.index) + " amount=" + std::to_string(rec.amount_minor) +
                            " decision=" + decision_name(rec.decision) + " reason=" + rec.reason);
      if (!a) return a.error();
      ans = answer_of(rec, t);
      return {};
    };

    auto card = tx.card(req.card);
    if (!card) {
      if (card.error().code != Errc::not_found) return card.error();
      rec.reason = "unknown_card";
      return finish();
    }
    if (card->status == CardStatus::blocked) { rec.reason = "card_blocked"; return finish(); }
    auto code = tx.otac(req.card, req.list_id, req.index);
    if (!code) {
      if (code.error().code != Errc::not_found) return code.error();
      rec.reason = "unknown_code";
      return finish();
    }
    auto mac = mac8(card->algorithm, code->key, mac_input(*ch, req.card, req.list_id, req.index, req.atc, req.pin_state));
    if (!mac) return mac.error();
    if (!ct_equal(*mac, req.cryptogram)) {
      // A bad cryptogram does not burn the code (anyone who knows N, list and index could
      // otherwise destroy codes), but it counts toward blocking the card.
      rec.reason = "bad_cryptogram";
      ++card->fail_count;
      if (card->fail_count >= card->fail_limit) card->status = CardStatus::blocked;
      if (auto x = tx.update_card(*card); !x) return x;
      if (card->status == CardStatus::blocked) {
        auto a = tx.audit(t, "system", "block", "card=" + to_hex(req.card) + " too many bad cryptograms");
        if (!a) return a.error();
      }
      return finish();
    }
    if (card->fail_count != 0) {
      card->fail_count = 0;
      if (auto x = tx.update_card(*card); !x) return x;
    }
    auto consumed = tx.consume_otac(req.card, req.list_id, req.index, req.txn_id, t);
    if (!consumed) return consumed.error();
    if (!*consumed) {
      rec.reason = "code_used";
    } else if (pin_blocked(req.pin_state)) {
      // The card's PIN is blocked (its state is under the MAC): nothing is approved, whatever
      // the amount or door, until the holder unblocks it with the PUK (protocol.md §3).
      rec.reason = "pin_blocked";
    } else if (ch->door_mode()) {
      auto doors = tx.doors(req.card);
      if (!doors) return doors.error();
      std::string why;
      if (ch->type != kTypeDoor) rec.reason = "type_not_allowed";
      else if (door_allowed(*doors, rec.door, t, why)) { rec.decision = Decision::approved; rec.reason = "ok"; }
      else rec.reason = why;
    } else if (auto no = pos_decline({ch->type, ch->currency_code, ch->amount_minor}, *card, *term,
                                     {&config_.currencies, config_.default_currency, config_.max_amount_minor})) {
      rec.reason = no->reason;
      if (no->limit) rec.arc = kArcLimit;
    } else if (card->review_minor > 0 && ch->amount_minor > card->review_minor) {
      rec.decision = Decision::held;
      rec.reason = "review";
      rec.decided_at = 0;
      rec.expires_at = t + config_.hold_limit.count();
    } else {
      rec.decision = Decision::approved;
      rec.reason = "ok";
    }
    if (rec.decision == Decision::approved) { rec.arc = kArcApproved; rec.auth_code = random_digits(6); }
    if (rec.decision == Decision::held) rec.arc = kArcHeld;
    auto arpc = mac8(card->algorithm, code->key, protocol::arpc_input(req.cryptogram, rec.arc));
    if (!arpc) return arpc.error();
    rec.arpc = std::move(*arpc);
    if (*consumed) {
      if (auto x = push_if_low(tx, *card, config_.list_size, t); !x) return x;
    }
    return finish();
  });
  if (!r) return r.error();
  if (!replayed) count(ans);
  return ans;
}

Result<AuthAnswer> Service::get_authorization(std::string_view txn_id, std::chrono::milliseconds wait) {
  wait = std::min<std::chrono::milliseconds>(std::max<std::chrono::milliseconds>(wait, std::chrono::milliseconds(0)), config_.max_wait);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  // Bounded: each round sleeps up to 100 ms until the deadline. The condition variable wakes
  // waiters in this process early; polling the store sees decisions made by other processes.
  for (int round = 0; round < 100000; ++round) {
    AuthAnswer ans;
    bool expired = false;
    const UnixTime t = now();
    auto r = run([&](Tx& tx) -> Result<void> {
      auto rec = tx.transaction(txn_id);
      if (!rec) return rec.error();
      auto e = expire_if_due(tx, *rec, t);
      if (!e) return e.error();
      expired = *e;
      ans = answer_of(*rec, t);
      return {};
    });
    if (!r) return r.error();
    if (expired) count(ans);
    const auto left = deadline - std::chrono::steady_clock::now();
    if (ans.decision != Decision::held || left <= std::chrono::steady_clock::duration::zero()) return ans;
    std::unique_lock lock(held_mu_);
    held_cv_.wait_for(lock, std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(100)));
  }
  return make_error(Errc::timeout, "waiting for transaction " + std::string(txn_id) + " did not finish");
}

Result<AuthAnswer> Service::decide_held(std::string_view txn_id, bool approve, std::string_view actor) {
  AuthAnswer ans;
  bool expired = false;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto rec = tx.transaction(txn_id);
    if (!rec) return rec.error();
    auto e = expire_if_due(tx, *rec, t);
    if (!e) return e.error();
    expired = *e;
    if (expired || (rec->decision == Decision::declined && rec->reason == "held_timeout")) {
      // The expiry is committed even though the operator's request fails.
      ans = answer_of(*rec, t);
      return {};
    }
    if (rec->decision != Decision::held)
      return make_error(Errc::conflict, "transaction " + std::string(txn_id) + " is not held (it is " + decision_name(rec->decision) + ")");
    auto won = settle_held(tx, *rec, approve ? Decision::approved : Decision::declined,
                           approve ? "operator_approved" : "operator_declined", actor, approve ? "approve_held" : "decline_held", t, t);
    if (!won) return won.error();
    if (!*won)
      return make_error(Errc::conflict, "transaction " + std::string(txn_id) + " is not held (it is " + decision_name(rec->decision) + ")");
    ans = answer_of(*rec, t);
    return {};
  });
  if (!r) return r.error();
  if (ans.reason == "held_timeout") {
    if (expired) {
      count(ans);
      held_cv_.notify_all();
    }
    return make_error(Errc::conflict, "transaction " + std::string(txn_id) +
                                          " expired unanswered (declined, held_timeout): the terminal stopped waiting and "
                                          "showed it declined, so it can no longer be approved or declined");
  }
  count(ans);
  held_cv_.notify_all();
  return ans;
}

Result<AuthAnswer> Service::cancel_held(std::string_view txn_id, std::string_view terminal_id) {
  AuthAnswer ans;
  bool cancelled = false;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto rec = tx.transaction(txn_id);
    if (!rec) return rec.error();
    // Another terminal's transaction answers as unknown, as GET /v1/authorizations/{txn} does.
    if (rec->terminal_id != terminal_id)
      return make_error(Errc::not_found, "no transaction " + std::string(txn_id) + " for terminal " + std::string(terminal_id));
    cancelled = false;
    if (rec->decision == Decision::held) {
      auto won = settle_held(tx, *rec, Decision::declined, "held_timeout", terminal_id, "cancel_held",
                             std::min(t, rec->expires_at), t);
      if (!won) return won.error();
      cancelled = *won;
    }
    ans = answer_of(*rec, t);
    return {};
  });
  if (!r) return r.error();
  if (cancelled) {
    count(ans);
    held_cv_.notify_all();
  }
  return ans;
}

Result<std::uint32_t> Service::expire_held(std::uint32_t limit) {
  std::vector<AuthAnswer> expired;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    expired.clear();
    auto due = tx.held_due(t, limit);
    if (!due) return due.error();
    for (auto& rec : *due) {
      auto e = expire_if_due(tx, rec, t);
      if (!e) return e.error();
      if (*e) expired.push_back(answer_of(rec, t));
    }
    return {};
  });
  if (!r) return r.error();
  for (const auto& a : expired) count(a);
  if (!expired.empty()) held_cv_.notify_all();
  return static_cast<std::uint32_t>(expired.size());
}

Result<AuthAnswer> Service::verify_display_code(const CodeRequest& req, std::string_view terminal_id) {
  if (!valid_txn_id(req.txn_id)) return make_error(Errc::bad_value, "txn_id must be 1 to 64 printable ASCII characters");
  if (req.card.size() != 8) return make_error(Errc::bad_length, "card must be 8 bytes (16 hex digits)");
  if (req.code.size() != 8 || !std::all_of(req.code.begin(), req.code.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return make_error(Errc::bad_value, "code must be 8 digits");
  if (req.door.size() > 16) return make_error(Errc::bad_length, "door id must be at most 16 characters");
  const Bytes hash = request_hash("code", {as_bytes(req.txn_id), req.card, as_bytes(req.code), as_bytes(req.door)});
  const UnixTime t = now();
  AuthAnswer ans;
  bool replayed = false;
  auto r = run([&](Tx& tx) -> Result<void> {
    replayed = false;
    if (auto prev = tx.transaction(req.txn_id); prev) {
      if (!ct_equal(prev->request_hash, hash))
        return make_error(Errc::conflict, "txn_id " + req.txn_id + " was used with a different request");
      ans = answer_of(*prev, t);
      replayed = true;
      return {};
    } else if (prev.error().code != Errc::not_found) {
      return prev.error();
    }
    auto term = tx.terminal(terminal_id);
    if (!term) {
      if (term.error().code == Errc::not_found) return make_error(Errc::state, "terminal " + std::string(terminal_id) + " is not registered");
      return term.error();
    }
    if (!term->enabled) return make_error(Errc::state, "terminal " + std::string(terminal_id) + " is disabled");
    TransactionRecord rec;
    rec.txn_id = req.txn_id;
    rec.request_hash = hash;
    rec.card = req.card;
    rec.terminal_id = std::string(terminal_id);
    rec.door = req.door;
    rec.created_at = t;
    rec.decided_at = t;
    rec.arc = kArcDeclined;
    auto finish = [&]() -> Result<void> {
      if (auto x = tx.insert_transaction(rec); !x) return x;
      auto a = tx.audit(t, terminal_id, "verify_code",
                        "txn=" + rec.txn_id + " card=" + to_hex(rec.card) + " decision=" + decision_name(rec.decision) + " reason=" + rec.reason);
      if (!a) return a.error();
      ans = answer_of(rec, t);
      return {};
    };
    auto card = tx.card(req.card);
    if (!card) {
      if (card.error().code != Errc::not_found) return card.error();
      rec.reason = "unknown_card";
      return finish();
    }
    if (card->status == CardStatus::blocked) { rec.reason = "card_blocked"; return finish(); }
    auto window = tx.lowest_unused(req.card, 10);
    if (!window) return window.error();
    const OtacRecord* match = nullptr;
    for (const auto& o : *window) {
      auto m = mac8(card->algorithm, o.key, protocol::display_input(req.card, o.list_id, o.index));
      if (!m) return m.error();
      // Compare every candidate (no early exit) so timing does not reveal the position.
      if (ct_equal(as_bytes(protocol::display_digits(*m)), as_bytes(req.code)) && !match) match = &o;
    }
    if (!match) {
      rec.reason = "bad_code";
      ++card->fail_count;
      if (card->fail_count >= card->fail_limit) card->status = CardStatus::blocked;
      if (auto x = tx.update_card(*card); !x) return x;
      return finish();
    }
    rec.list_id = match->list_id;
    rec.index = match->index;
    auto consumed = tx.consume_otac(req.card, match->list_id, match->index, req.txn_id, t);
    if (!consumed) return consumed.error();
    if (!*consumed) { rec.reason = "code_used"; return finish(); }
    if (card->fail_count != 0) {
      card->fail_count = 0;
      if (auto x = tx.update_card(*card); !x) return x;
    }
    if (auto x = push_if_low(tx, *card, config_.list_size, t); !x) return x;
    if (!req.door.empty()) {
      auto doors = tx.doors(req.card);
      if (!doors) return doors.error();
      std::string why;
      if (!door_allowed(*doors, req.door, t, why)) { rec.reason = why; return finish(); }
    }
    rec.decision = Decision::approved;
    rec.reason = "ok";
    rec.arc = kArcApproved;
    rec.auth_code = random_digits(6);
    return finish();
  });
  if (!r) return r.error();
  if (!replayed) count(ans);
  return ans;
}

// ---- terminals, operators --------------------------------------------------------------

Result<void> Service::register_terminal(const TerminalRecord& term, std::string_view actor) {
  if (term.id.size() != 8 || !std::all_of(term.id.begin(), term.id.end(), [](char c) { return c > 0x20 && c < 0x7F; }))
    return make_error(Errc::bad_value, "terminal id must be 8 printable ASCII characters (it is tag 9F1C)");
  const UnixTime t = now();
  return run([&](Tx& tx) -> Result<void> {
    if (auto x = tx.put_terminal(term); !x) return x;
    auto a = tx.audit(t, actor, "register_terminal", "terminal=" + term.id + " cert=" + term.cert_fingerprint);
    if (!a) return a.error();
    return {};
  });
}

Result<TerminalRecord> Service::terminal(std::string_view id) {
  TerminalRecord out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto t = tx.terminal(id);
    if (!t) return t.error();
    out = std::move(*t);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::string> Service::create_operator(std::string_view name, Role role, std::string_view actor) {
  if (name.empty() || name.size() > 64) return make_error(Errc::bad_value, "operator name must be 1 to 64 characters");
  std::string token = "otac_" + to_hex(crypto::random_bytes(32));
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    if (auto x = tx.put_operator(OperatorRecord{std::string(name), role, crypto::sha256(as_bytes(token))}); !x) return x;
    auto a = tx.audit(t, actor, "create_operator", "name=" + std::string(name) + " role=" + role_name(role));
    if (!a) return a.error();
    return {};
  });
  if (!r) return r.error();
  return token;
}

Result<OperatorRecord> Service::authenticate_operator(std::string_view token) {
  OperatorRecord out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto op = tx.operator_by_token_hash(crypto::sha256(as_bytes(token)));
    if (!op) return op.error();
    out = std::move(*op);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<void> Service::record_event(std::string_view actor, std::string_view action, std::string_view detail) {
  const UnixTime t = now();
  return run([&](Tx& tx) -> Result<void> {
    auto a = tx.audit(t, actor, action, detail);
    if (!a) return a.error();
    return {};
  });
}

// ---- reporting --------------------------------------------------------------------------

Result<TransactionRecord> Service::transaction(std::string_view txn_id) {
  TransactionRecord out;
  bool expired = false;
  const UnixTime now_ = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto t = tx.transaction(txn_id);
    if (!t) return t.error();
    auto e = expire_if_due(tx, *t, now_);
    if (!e) return e.error();
    expired = *e;
    out = std::move(*t);
    return {};
  });
  if (!r) return r.error();
  if (expired) {
    count(answer_of(out, now_));
    held_cv_.notify_all();
  }
  return out;
}

Result<std::vector<TransactionRecord>> Service::list_transactions(const TransactionFilter& f) {
  // Expire what is due first, so that no list shows a transaction as held after its deadline.
  if (auto e = expire_held(1000); !e) return e.error();
  std::vector<TransactionRecord> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto v = tx.transactions(f);
    if (!v) return v.error();
    out = std::move(*v);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<AuditEntry>> Service::audit_log(std::int64_t after_seq, std::uint32_t limit) {
  std::vector<AuditEntry> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto v = tx.audit_entries(after_seq, limit);
    if (!v) return v.error();
    out = std::move(*v);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<AuditEntry>> Service::audit_recent(std::uint32_t limit) {
  std::vector<AuditEntry> out;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto v = tx.audit_recent(limit);
    if (!v) return v.error();
    out = std::move(*v);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::int64_t> Service::verify_audit() {
  std::int64_t n = 0;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto v = tx.verify_audit_chain();
    if (!v) return v.error();
    n = *v;
    return {};
  });
  if (!r) return r.error();
  return n;
}

Result<Metrics> Service::metrics() {
  Metrics m;
  auto r = run([&](Tx& tx) -> Result<void> {
    auto d = tx.outbox_depth();
    if (!d) return d.error();
    m.outbox_depth = *d;
    return {};
  });
  if (!r) return r.error();
  std::lock_guard lock(metrics_mu_);
  m.decisions = decisions_;
  return m;
}

}  // namespace otac::backend
