// Store-neutral pieces that every Store implementation shares, so that SQLite and PostgreSQL
// seal, chain and map records the same way: the associated data that binds a sealed key to
// its row, the audit chain's MAC, and record <-> row mappings written against a small row
// interface (a Row reads column c with col_i, col_b, col_t and col_null; a Binder takes the
// next parameter with i, b, t and null). The column lists fix the order both sides use.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kek.hpp"
#include "store.hpp"

namespace otac::backend::rows {

/// Associated data of a sealed value: its kind ("card-k", "otac", ...), the card, and for a
/// code its list and index. A sealed value moved to another row does not open.
Bytes ad(std::string_view kind, ByteView n, std::int64_t list = -1, std::int64_t index = -1);

/// The MAC of audit entry `seq`, chained to the previous entry's MAC (32 zero bytes first).
Bytes audit_mac(const Kek& kek, ByteView prev, std::int64_t seq, UnixTime at, std::string_view actor,
                std::string_view action, std::string_view detail);

/// Checks one entry of the chain: its MAC when it is entry `expect` after `prev`; bad_mac
/// naming the entry when it is missing or was modified.
Result<Bytes> check_audit_entry(const Kek& kek, ByteView prev, std::int64_t expect, const AuditEntry& e);

/// Opens a sealed key unless the column is NULL (then nothing).
Result<std::optional<SecretBytes>> open_optional(const Kek& kek, bool is_null, ByteView sealed, ByteView ad);

/// A code of a list, its key opened under the KEK.
Result<OtacRecord> open_otac(const Kek& kek, ByteView n, std::int64_t list_id, std::int64_t index, ByteView sealed, bool used);

// ---- cards -----------------------------------------------------------------------------------

/// Columns card_from_row reads, in order (the card's n is known to the caller).
#define OTAC_STORE_CARD_COLUMNS                                                                            \
  "algorithm,msisdn,status,fail_count,fail_limit,threshold,limit_minor,review_minor,key_version,k_sealed," \
  "pending_k_sealed,pending_version,public_key,list_push_in_flight,created_at,currency,retired_k_sealed,"  \
  "retired_version,cash_daily_minor"

/// A card from a row of OTAC_STORE_CARD_COLUMNS, its keys opened under the KEK (or, when
/// open_keys is false, left sealed and marked withheld: Tx::card_state).
template <class Row>
Result<CardRecord> card_from_row(const Row& r, ByteView n, const Kek& kek, bool open_keys = true) {
  CardRecord c;
  c.n.assign(n.begin(), n.end());
  c.algorithm = static_cast<Algorithm>(r.col_i(0));
  c.msisdn = r.col_t(1);
  c.status = static_cast<CardStatus>(r.col_i(2));
  c.fail_count = static_cast<std::uint32_t>(r.col_i(3));
  c.fail_limit = static_cast<std::uint32_t>(r.col_i(4));
  c.threshold = static_cast<std::uint32_t>(r.col_i(5));
  c.limit_minor = r.col_i(6);
  c.review_minor = r.col_i(7);
  c.key_version = static_cast<std::uint8_t>(r.col_i(8));
  c.pending_version = static_cast<std::uint8_t>(r.col_i(11));
  c.public_key = r.col_b(12);
  c.list_push_in_flight = r.col_i(13) != 0;
  c.created_at = r.col_i(14);
  c.currency = static_cast<std::uint16_t>(r.col_i(15));
  c.retired_version = static_cast<std::uint8_t>(r.col_i(17));
  if (!r.col_null(18)) c.cash_daily_minor = r.col_i(18);
  if (!open_keys) {
    c.keys_withheld = true;
    return c;
  }
  auto k = open_optional(kek, r.col_null(9), r.col_b(9), ad("card-k", n));
  if (!k) return k.error();
  if (*k) c.k = std::move(**k);
  auto pk = open_optional(kek, r.col_null(10), r.col_b(10), ad("card-pk", n));
  if (!pk) return pk.error();
  c.pending_k = std::move(*pk);
  auto rk = open_optional(kek, r.col_null(16), r.col_b(16), ad("card-rk", n));
  if (!rk) return rk.error();
  c.retired_k = std::move(*rk);
  return c;
}

/// Refuses to write back a card read by Tx::card_state: its empty keys would erase the stored ones.
inline Result<void> writable(const CardRecord& c) {
  if (c.keys_withheld)
    return make_error(Errc::internal, "card " + to_hex(c.n) + " was read without its keys and cannot be written back");
  return {};
}

/// Binds what update_card writes, keys sealed under the KEK: msisdn, status, fail_count,
/// fail_limit, threshold, limit_minor, review_minor, currency, key_version, k_sealed,
/// pending_k_sealed, pending_version, list_push_in_flight, retired_k_sealed, retired_version,
/// cash_daily_minor (NULL when unset).
template <class Binder>
void bind_card_update(Binder& q, const CardRecord& c, const Kek& kek) {
  q.t(c.msisdn).i(static_cast<int>(c.status)).i(c.fail_count).i(c.fail_limit).i(c.threshold).i(c.limit_minor)
      .i(c.review_minor).i(c.currency).i(c.key_version);
  if (c.k.empty()) q.null(); else q.b(kek.seal(c.k.view(), ad("card-k", c.n)));
  if (!c.pending_k) q.null(); else q.b(kek.seal(c.pending_k->view(), ad("card-pk", c.n)));
  q.i(c.pending_version).i(c.list_push_in_flight ? 1 : 0);
  if (!c.retired_k) q.null(); else q.b(kek.seal(c.retired_k->view(), ad("card-rk", c.n)));
  q.i(c.retired_version);
  if (c.cash_daily_minor) q.i(*c.cash_daily_minor); else q.null();
}

// ---- transactions ----------------------------------------------------------------------------

/// Columns of a transaction row, in the order txn_from_row reads and bind_txn binds them.
#define OTAC_STORE_TXN_COLUMNS                                                                                  \
  "txn_id,request_hash,card,list_id,idx,terminal_id,amount_minor,currency,door,decision,reason,auth_code,arc," \
  "arpc,created_at,decided_at,decided_by,cryptogram,expires_at"

template <class Row>
TransactionRecord txn_from_row(const Row& r) {
  TransactionRecord t;
  t.txn_id = r.col_t(0);
  t.request_hash = r.col_b(1);
  t.card = r.col_b(2);
  t.list_id = static_cast<std::uint16_t>(r.col_i(3));
  t.index = static_cast<std::uint16_t>(r.col_i(4));
  t.terminal_id = r.col_t(5);
  t.amount_minor = r.col_i(6);
  t.currency = static_cast<std::uint16_t>(r.col_i(7));
  t.door = r.col_t(8);
  t.decision = static_cast<Decision>(r.col_i(9));
  t.reason = r.col_t(10);
  t.auth_code = r.col_t(11);
  t.arc = r.col_b(12);
  t.arpc = r.col_b(13);
  t.created_at = r.col_i(14);
  t.decided_at = r.col_i(15);
  t.decided_by = r.col_t(16);
  t.cryptogram = r.col_b(17);
  t.expires_at = r.col_i(18);
  return t;
}

template <class Binder>
void bind_txn(Binder& q, const TransactionRecord& t) {
  q.t(t.txn_id).b(t.request_hash).b(t.card).i(t.list_id).i(t.index).t(t.terminal_id).i(t.amount_minor).i(t.currency)
      .t(t.door).i(static_cast<int>(t.decision)).t(t.reason).t(t.auth_code).b(t.arc).b(t.arpc).i(t.created_at)
      .i(t.decided_at).t(t.decided_by).b(t.cryptogram).i(t.expires_at);
}

/// What decide_held_transaction writes: decision, reason, auth_code, arc, arpc, decided_at,
/// decided_by (the caller then binds the id and the held decision).
template <class Binder>
void bind_decision(Binder& q, const TransactionRecord& t) {
  q.i(static_cast<int>(t.decision)).t(t.reason).t(t.auth_code).b(t.arc).b(t.arpc).i(t.decided_at).t(t.decided_by);
}

// ---- SMS outbox ------------------------------------------------------------------------------

/// Columns of an outbox row, in the order sms_from_row reads them.
#define OTAC_STORE_SMS_COLUMNS "id,card,dest,udh,payload,status,attempts,next_attempt_at,last_reply,created_at"

template <class Row>
OutboxMessage sms_from_row(const Row& r) {
  OutboxMessage m;
  m.id = r.col_i(0);
  m.card = r.col_b(1);
  m.to = r.col_t(2);
  m.udh = r.col_b(3);
  m.payload = r.col_b(4);
  m.status = static_cast<OutboxStatus>(r.col_i(5));
  m.attempts = static_cast<std::uint32_t>(r.col_i(6));
  m.next_attempt_at = r.col_i(7);
  m.last_reply = r.col_t(8);
  m.created_at = r.col_i(9);
  return m;
}

/// Binds a new message: card, dest, udh, payload, status, attempts, next_attempt_at,
/// last_reply, created_at.
template <class Binder>
void bind_new_sms(Binder& q, const OutboxMessage& m) {
  q.b(m.card).t(m.to).b(m.udh).b(m.payload).i(static_cast<int>(m.status)).i(m.attempts).i(m.next_attempt_at)
      .t(m.last_reply).i(m.created_at);
}

// ---- card security, audit --------------------------------------------------------------------

/// Columns card_security_from_row reads, in order.
#define OTAC_STORE_SECURITY_COLUMNS "sig_sealed,pending_sig_sealed,pending_sig_counter,pending_sig_sent,sig_since,server_point"

template <class Row>
Result<CardSecurity> card_security_from_row(const Row& r, ByteView n, const Kek& kek) {
  CardSecurity s;
  auto sig = open_optional(kek, r.col_null(0), r.col_b(0), ad("card-s", n));
  if (!sig) return sig.error();
  s.sig_key = std::move(*sig);
  auto pending = open_optional(kek, r.col_null(1), r.col_b(1), ad("card-ps", n));
  if (!pending) return pending.error();
  s.pending_sig_key = std::move(*pending);
  s.pending_sig_counter = static_cast<std::uint64_t>(r.col_i(2));
  s.pending_sig_sent = static_cast<std::uint64_t>(r.col_i(3));
  s.sig_since = static_cast<std::uint64_t>(r.col_i(4));
  s.server_point = r.col_b(5);
  return s;
}

/// Binds OTAC_STORE_SECURITY_COLUMNS (after the caller bound n), keys sealed under the KEK.
template <class Binder>
void bind_card_security(Binder& q, ByteView n, const CardSecurity& s, const Kek& kek) {
  if (!s.sig_key) q.null(); else q.b(kek.seal(s.sig_key->view(), ad("card-s", n)));
  if (!s.pending_sig_key) q.null(); else q.b(kek.seal(s.pending_sig_key->view(), ad("card-ps", n)));
  q.i(static_cast<std::int64_t>(s.pending_sig_counter)).i(static_cast<std::int64_t>(s.pending_sig_sent))
      .i(static_cast<std::int64_t>(s.sig_since));
  if (s.server_point.empty()) q.null(); else q.b(s.server_point);
}

/// Columns of an audit row, in the order audit_from_row reads them.
#define OTAC_STORE_AUDIT_COLUMNS "seq,at,actor,action,detail,mac"

template <class Row>
AuditEntry audit_from_row(const Row& r) {
  return AuditEntry{r.col_i(0), r.col_i(1), r.col_t(2), r.col_t(3), r.col_t(4), r.col_b(5)};
}

/// A list's state column, checked (an unknown value is an error naming the list).
Result<ListState> list_state(std::int64_t list_id, std::int64_t stored);

}  // namespace otac::backend::rows
