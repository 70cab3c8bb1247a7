// The Service's cards: enrollment, lists on an operator's request, keys, settings and blocking.
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
using namespace detail;

// ---- cards ------------------------------------------------------------------------------

namespace {

// What an operator may know of a card's E3/E4 state.
CardKeyStatus key_state(const CardSecurity& sec, const ServerKeyRecord& server) {
  CardKeyStatus k;
  k.signature_key = sec.sig_key.has_value();
  k.signature_key_pending = sec.pending_sig_key.has_value();
  k.server_key = ct_equal(sec.server_point, server.public_point);
  return k;
}

}  // namespace

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
  if (req.cash_daily_minor && (*req.cash_daily_minor < 0 || *req.cash_daily_minor > kMaxCashDaily))
    return make_error(Errc::bad_value, "the daily cash limit must be 0 to " + std::to_string(kMaxCashDaily));
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
      c.cash_daily_minor = req.cash_daily_minor;
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
    const bool again = c->pending_k.has_value();  // the card may hold K' already: send the same one
    if (!again) {
      c->pending_k = new_key(c->algorithm);
      // Key versions are 4 bits in KIc/KID (TS 102 225); cycle through 1..15.
      c->pending_version = static_cast<std::uint8_t>(c->key_version % 15 + 1);
    }
    if (auto q = queue_replace_key(tx, *c, t); !q) return q.error();
    if (auto x = tx.update_card(*c); !x) return x;
    auto a = tx.audit(t, actor, again ? "rotate_key_resent" : "rotate_key",
                      "card=" + to_hex(n) + " new_version=" + std::to_string(c->pending_version));
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
    out = key_state(*sec, *server);
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

namespace {

// Fills a summary inside the caller's transaction; the card's keys never leave this function.
Result<CardSummary> read_summary(Tx& tx, ByteView n, const ServerKeyRecord& server) {
  auto c = tx.card(n);
  if (!c) return c.error();
  CardSummary s;
  s.n = c->n;
  s.algorithm = c->algorithm;
  s.msisdn = c->msisdn;
  s.status = c->status;
  s.fail_count = c->fail_count;
  s.fail_limit = c->fail_limit;
  s.threshold = c->threshold;
  s.limit_minor = c->limit_minor;
  s.review_minor = c->review_minor;
  s.cash_daily_minor = c->cash_daily_minor;
  s.currency = c->currency;
  s.key_version = c->key_version;
  s.key_rotation_pending = c->pending_k.has_value();
  s.asymmetric = !c->public_key.empty();
  s.list_push_in_flight = c->list_push_in_flight;
  s.created_at = c->created_at;
  auto doors = tx.doors(n);
  if (!doors) return doors.error();
  s.doors = std::move(*doors);
  auto lists = tx.lists(n);
  if (!lists) return lists.error();
  s.lists = std::move(*lists);
  auto sec = tx.card_security(n);
  if (!sec) return sec.error();
  s.keys = key_state(*sec, server);
  constexpr std::uint32_t kQueuedShown = 1000;  // an operator's view: more than this is "1000"
  auto queued = tx.queued_sms(n, kQueuedShown);
  if (!queued) return queued.error();
  s.sms_queued = static_cast<std::uint32_t>(queued->size());
  if (!queued->empty()) s.sms_last = std::move(queued->back());
  return s;
}

}  // namespace

Result<CardSummary> Service::card_summary(ByteView n) {
  CardSummary out;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto server = ensure_server_key(tx, kServerKeyName, t);
    if (!server) return server.error();
    auto s = read_summary(tx, n, *server);
    if (!s) return s.error();
    out = std::move(*s);
    out.cash_daily_effective_minor = out.cash_daily_minor.value_or(config_.cash_card_daily_minor);
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<std::vector<CardSummary>> Service::list_cards(std::uint32_t limit) {
  if (limit < 1 || limit > 1000) return make_error(Errc::bad_value, "card list limit must be 1 to 1000");
  std::vector<CardSummary> out;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    out.clear();  // run may call this again
    auto server = ensure_server_key(tx, kServerKeyName, t);
    if (!server) return server.error();
    auto ids = tx.card_ids(limit);
    if (!ids) return ids.error();
    for (const auto& n : *ids) {
      auto s = read_summary(tx, n, *server);
      if (!s) return s.error();
      s->cash_daily_effective_minor = s->cash_daily_minor.value_or(config_.cash_card_daily_minor);
      out.push_back(std::move(*s));
    }
    return {};
  });
  if (!r) return r.error();
  return out;
}

Result<CardRecord> Service::update_card_settings(ByteView n, CardSettings s, std::string_view actor) {
  if (!s.limit_minor && !s.review_minor && !s.threshold && !s.currency && !s.doors && !s.cash_daily_minor)
    return make_error(Errc::bad_value, "no setting to change (limit, review, threshold, currency, doors or daily cash limit)");
  if ((s.limit_minor && *s.limit_minor < 0) || (s.review_minor && *s.review_minor < 0))
    return make_error(Errc::bad_value, "limit and review amounts must not be negative");
  if (s.cash_daily_minor && (*s.cash_daily_minor < CardSettings::kCashDefault || *s.cash_daily_minor > kMaxCashDaily))
    return make_error(Errc::bad_value, "the daily cash limit must be 0 to " + std::to_string(kMaxCashDaily) + ", or the backend's default");
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
    if (s.cash_daily_minor) {
      auto text = [](const std::optional<std::int64_t>& v) { return v ? std::to_string(*v) : std::string("default"); };
      std::optional<std::int64_t> next;
      if (*s.cash_daily_minor != CardSettings::kCashDefault) next = *s.cash_daily_minor;
      note("cash_daily_minor", text(c->cash_daily_minor), text(next));
      c->cash_daily_minor = next;
    }
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

}  // namespace otac::backend
