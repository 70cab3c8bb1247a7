// PgTx: every SQL statement of the PostgreSQL store. Per operation, what keeps it correct
// when several nodes run it at once (transactions run at READ COMMITTED):
// - card, card_counter: SELECT ... FOR UPDATE, so every read-modify-write of a card (fail
//   counter and blocking, key rotation, list_push_in_flight, the replay counter) waits for
//   the other node's transaction on that card;
// - consume_otac, decide_held_transaction, update_card, set_list_state: conditional or keyed
//   updates, re-evaluated on the newest row version after a concurrent update;
// - next_ota_counter: one UPDATE ... RETURNING (increments never collide);
// - insert_*: ON CONFLICT DO NOTHING, so an existing id is a conflict that leaves the
//   transaction usable (as in SQLite); Store::run reruns a transaction that met one once;
// - audit: a transaction-level advisory lock serializes appends, so the one chain grows in
//   commit order;
// - lease_due_sms: FOR UPDATE SKIP LOCKED, and next_attempt_at moved to the lease's end.
#include "pg_tx.hpp"

#include <algorithm>

#include "store_rows.hpp"

namespace otac::backend::pg {

using rows::ad;

namespace {
// Key of the advisory lock that serializes audit appends (any constant; "OTACAUDT").
constexpr const char* kAuditLock = "SELECT pg_advisory_xact_lock(5716209867604841812)";
// Key of the advisory lock held while migrating ("OTACMIGR").
constexpr std::int64_t kMigrationLock = 5716209867604920658;

Result<bool> found(Query& r) {
  if (auto e = r.run(); !e) return e.error();
  return r.rows() > 0;
}
}  // namespace

Result<void> PgTx::insert(Query& r, const std::string& what) {
  if (auto e = r.run(); !e) return make_error(e.error().code, "cannot insert " + what + ": " + e.error().message);
  if (r.changes() == 1) return {};
  c_.met_conflict = true;
  return make_error(Errc::conflict, "cannot insert " + what + ": it exists already");
}

Result<std::int64_t> PgTx::scalar(Query& r) {
  if (auto e = r.run(); !e) return e.error();
  return r.rows() > 0 ? r.row(0).col_i(0) : 0;
}

// ---- cards, doors ------------------------------------------------------------------------------

Result<void> PgTx::insert_card(const CardRecord& c) {
  auto r = q("INSERT INTO cards(n,algorithm,msisdn,status,fail_count,fail_limit,threshold,limit_minor,review_minor,"
             "key_version,k_sealed,pending_k_sealed,pending_version,public_key,list_push_in_flight,created_at)"
             " VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,NULL,0,$12,0,$13) ON CONFLICT DO NOTHING");
  r.b(c.n).i(static_cast<int>(c.algorithm)).t(c.msisdn).i(static_cast<int>(c.status)).i(c.fail_count).i(c.fail_limit)
      .i(c.threshold).i(c.limit_minor).i(c.review_minor).i(c.key_version);
  if (c.k.empty()) r.null(); else r.b(kek_.seal(c.k.view(), ad("card-k", c.n)));
  r.b(c.public_key).i(c.created_at);
  if (auto e = insert(r, "card " + to_hex(c.n)); !e) return e;
  return update_card(c);
}

Result<CardRecord> PgTx::read_card(ByteView n, bool open_keys) {
  auto r = q("SELECT " OTAC_STORE_CARD_COLUMNS " FROM cards WHERE n=$1 FOR UPDATE");
  r.b(n);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no card " + to_hex(n));
  return rows::card_from_row(r.row(0), n, kek_, open_keys);
}

Result<CardRecord> PgTx::card(ByteView n) { return read_card(n, true); }
Result<CardRecord> PgTx::card_state(ByteView n) { return read_card(n, false); }

Result<void> PgTx::update_card(const CardRecord& c) {
  if (auto w = rows::writable(c); !w) return w;
  auto r = q("UPDATE cards SET msisdn=$1,status=$2,fail_count=$3,fail_limit=$4,threshold=$5,limit_minor=$6,review_minor=$7,"
             "currency=$8,key_version=$9,k_sealed=$10,pending_k_sealed=$11,pending_version=$12,list_push_in_flight=$13,"
             "retired_k_sealed=$14,retired_version=$15,cash_daily_minor=$16 WHERE n=$17");
  rows::bind_card_update(r, c, kek_);
  r.b(c.n);
  if (auto e = r.run(); !e) return e;
  if (r.changes() != 1) return make_error(Errc::not_found, "no card " + to_hex(c.n));
  return {};
}

Result<void> PgTx::set_doors(ByteView n, const std::vector<DoorPermission>& doors) {
  {
    auto d = q("DELETE FROM doors WHERE n=$1");
    d.b(n);
    if (auto e = d.run(); !e) return e;
  }
  for (const auto& p : doors) {
    auto r = q("INSERT INTO doors(n,door,from_minute,to_minute,tz) VALUES($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING");
    r.b(n).t(p.door).i(p.from_minute).i(p.to_minute).t(p.tz);
    if (auto e = insert(r, "door " + p.door); !e) return e;
  }
  return {};
}

Result<std::vector<DoorPermission>> PgTx::doors(ByteView n) {
  auto r = q("SELECT door,from_minute,to_minute,tz FROM doors WHERE n=$1 ORDER BY door");
  r.b(n);
  if (auto e = r.run(); !e) return e.error();
  return collect<DoorPermission>(r, [](const Row& row) {
    return DoorPermission{row.col_t(0), static_cast<std::uint32_t>(row.col_i(1)), static_cast<std::uint32_t>(row.col_i(2)), row.col_t(3)};
  });
}

// ---- lists and codes ---------------------------------------------------------------------------

Result<std::uint16_t> PgTx::last_list_id(ByteView n) {
  auto r = q("SELECT COALESCE(MAX(list_id),0) FROM lists WHERE n=$1");
  r.b(n);
  auto v = scalar(r);
  if (!v) return v.error();
  return static_cast<std::uint16_t>(*v);
}

Result<void> PgTx::insert_list(ByteView n, std::uint16_t list_id, const std::vector<SecretBytes>& keys, UnixTime now) {
  if (keys.size() > 0xFFFF) return make_error(Errc::bad_length, "a list holds at most 65535 codes");
  {
    auto r = q("INSERT INTO lists(n,list_id,created_at) VALUES($1,$2,$3) ON CONFLICT DO NOTHING");
    r.b(n).i(list_id).i(now);
    if (auto e = insert(r, "list " + std::to_string(list_id) + " of card " + to_hex(n)); !e) return e;
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const auto index = static_cast<std::int64_t>(i);
    auto r = q("INSERT INTO otacs(n,list_id,idx,key_sealed) VALUES($1,$2,$3,$4)");
    r.b(n).i(list_id).i(index).b(kek_.seal(keys[i].view(), ad("otac", n, list_id, index)));
    if (auto e = r.run(); !e) return e;
  }
  return {};
}

Result<OtacRecord> PgTx::otac(ByteView n, std::uint16_t list_id, std::uint16_t index) {
  auto r = q("SELECT key_sealed,used FROM otacs WHERE n=$1 AND list_id=$2 AND idx=$3");
  r.b(n).i(list_id).i(index);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no code " + std::to_string(list_id) + "/" + std::to_string(index));
  return rows::open_otac(kek_, n, list_id, index, r.row(0).col_b(0), r.row(0).col_i(1) != 0);
}

Result<std::vector<OtacRecord>> PgTx::lowest_unused(ByteView n, std::uint32_t limit) {
  auto r = q("SELECT list_id,idx,key_sealed FROM otacs WHERE n=$1 AND used=0 ORDER BY list_id,idx LIMIT $2");
  r.b(n).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<OtacRecord>(r, [&](const Row& row) {
    return rows::open_otac(kek_, n, row.col_i(0), row.col_i(1), row.col_b(2), false);
  });
}

Result<std::vector<OtacRecord>> PgTx::display_candidates(ByteView n, std::uint32_t per_list, std::uint32_t next_lists) {
  std::vector<OtacRecord> out;
  // Appends up to per_list unused codes of one list after index `after` (-1: from the start).
  auto take = [&](std::int64_t list, std::int64_t after) -> Result<void> {
    auto r = q("SELECT idx,key_sealed FROM otacs WHERE n=$1 AND list_id=$2 AND used=0 AND idx>$3 ORDER BY idx LIMIT $4");
    r.b(n).i(list).i(after).i(per_list);
    if (auto e = r.run(); !e) return e;
    auto codes = collect<OtacRecord>(r, [&](const Row& row) {
      return rows::open_otac(kek_, n, list, row.col_i(0), row.col_b(1), false);
    });
    if (!codes) return codes.error();
    for (auto& c : *codes) out.push_back(std::move(c));
    return {};
  };
  std::int64_t current = 0;  // the list holding the highest consumed code; 0: nothing consumed
  {
    // Backwards along the primary key from the card's newest code: it stops at the first
    // consumed one, after at most the unused codes of the lists issued since (no index holds
    // the consumed codes since migration 5).
    auto r = q("SELECT list_id,idx FROM otacs WHERE n=$1 AND used=1 ORDER BY list_id DESC, idx DESC LIMIT 1");
    r.b(n);
    auto row = found(r);
    if (!row) return row.error();
    if (*row) {
      current = r.row(0).col_i(0);
      if (auto x = take(current, r.row(0).col_i(1)); !x) return x.error();
    }
  }
  auto r = q("SELECT DISTINCT list_id FROM otacs WHERE n=$1 AND used=0 AND list_id>$2 ORDER BY list_id LIMIT $3");
  r.b(n).i(current).i(current == 0 ? next_lists + 1 : next_lists);
  if (auto e = r.run(); !e) return e.error();
  auto later = collect<std::int64_t>(r, [](const Row& row) { return row.col_i(0); });
  if (!later) return later.error();
  for (auto l : *later)
    if (auto x = take(l, -1); !x) return x.error();
  return out;
}

Result<std::uint32_t> PgTx::unused_count(ByteView n) {
  auto r = q("SELECT COUNT(*) FROM otacs WHERE n=$1 AND used=0");
  r.b(n);
  auto v = scalar(r);
  if (!v) return v.error();
  return static_cast<std::uint32_t>(*v);
}

Result<bool> PgTx::unused_more_than(ByteView n, std::uint32_t count) {
  auto r = q("SELECT 1 FROM otacs WHERE n=$1 AND used=0 LIMIT 1 OFFSET $2");
  r.b(n).i(count);
  return found(r);
}

Result<std::vector<ListInfo>> PgTx::lists(ByteView n) {
  auto r = q("SELECT l.list_id,l.state,COALESCE(l.refusal,''),l.created_at,l.state_at,"
             "(SELECT COUNT(*) FROM otacs o WHERE o.n=l.n AND o.list_id=l.list_id),"
             "(SELECT COUNT(*) FROM otacs o WHERE o.n=l.n AND o.list_id=l.list_id AND o.used=0) "
             "FROM lists l WHERE l.n=$1 ORDER BY l.list_id");
  r.b(n);
  if (auto e = r.run(); !e) return e.error();
  return collect<ListInfo>(r, [](const Row& row) -> Result<ListInfo> {
    ListInfo l;
    l.id = static_cast<std::uint16_t>(row.col_i(0));
    auto st = rows::list_state(l.id, row.col_i(1));
    if (!st) return st.error();
    l.state = *st;
    l.refusal = row.col_t(2);
    l.created_at = row.col_i(3);
    l.state_at = row.col_i(4);
    l.count = static_cast<std::uint32_t>(row.col_i(5));
    l.unused = static_cast<std::uint32_t>(row.col_i(6));
    return l;
  });
}

Result<void> PgTx::set_list_state(ByteView n, std::uint16_t list_id, ListState state, std::string_view refusal, UnixTime now) {
  auto r = q("UPDATE lists SET state=$1,refusal=$2,state_at=$3 WHERE n=$4 AND list_id=$5");
  r.i(static_cast<std::int64_t>(state)).t(refusal).i(now).b(n).i(list_id);
  if (auto e = r.run(); !e) return e;
  if (r.changes() != 1) return make_error(Errc::not_found, "no list " + std::to_string(list_id) + " for card " + to_hex(n));
  // refused withdraws the unused codes (used=2); loaded gives withdrawn ones back.
  auto w = state == ListState::refused ? q("UPDATE otacs SET used=2 WHERE n=$1 AND list_id=$2 AND used=0")
                                       : q("UPDATE otacs SET used=0 WHERE n=$1 AND list_id=$2 AND used=2");
  w.b(n).i(list_id);
  return w.run();
}

Result<std::vector<ListRepair>> PgTx::lists_to_repair(UnixTime now, std::int64_t after, std::uint32_t max_packets,
                                                      std::uint32_t limit) {
  // From the lists still sent (the partial index lists_sent), as in SQLite (sqlite_tx.hpp).
  auto r = q("SELECT l.n, l.list_id, COUNT(o.counter) FROM lists l"
             " JOIN ota_sent o ON o.n=l.n AND o.kind='list' AND o.ref=l.list_id"
             " WHERE l.state=0 AND (SELECT rsc FROM ota_sent WHERE n=l.n AND kind='list'"
             " AND ref=l.list_id ORDER BY counter DESC LIMIT 1)=-1"
             " GROUP BY l.n, l.list_id"
             " HAVING COUNT(o.counter)<$1 AND MAX(o.sent_at) + ($2::bigint << LEAST(COUNT(o.counter)-1, 5)::int) <= $3"
             " ORDER BY l.n, l.list_id LIMIT $4");
  r.i(max_packets).i(after).i(now).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<ListRepair>(r, [](const Row& row) {
    return ListRepair{row.col_b(0), static_cast<std::uint16_t>(row.col_i(1)), static_cast<std::uint32_t>(row.col_i(2))};
  });
}

Result<std::vector<RotationRepair>> PgTx::rotations_to_repair(UnixTime now, std::int64_t after,
                                                              std::uint32_t max_packets, std::uint32_t limit) {
  // From the cards with a pending key (the partial index cards_rotating), as in SQLite.
  auto r = q("SELECT c.n, c.pending_version, COUNT(o.counter) FROM cards c"
             " JOIN ota_sent o ON o.n=c.n AND o.kind='rotate' AND o.ref=c.pending_version"
             " WHERE c.pending_version<>0 AND (SELECT rsc FROM ota_sent WHERE n=c.n AND kind='rotate'"
             " AND ref=c.pending_version ORDER BY counter DESC LIMIT 1)=-1"
             " GROUP BY c.n, c.pending_version"
             " HAVING COUNT(o.counter)<$1 AND MAX(o.sent_at) + ($2::bigint << LEAST(COUNT(o.counter)-1, 5)::int) <= $3"
             " ORDER BY c.n LIMIT $4");
  r.i(max_packets).i(after).i(now).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<RotationRepair>(r, [](const Row& row) {
    return RotationRepair{row.col_b(0), static_cast<std::uint8_t>(row.col_i(1)), static_cast<std::uint32_t>(row.col_i(2))};
  });
}

Result<std::vector<KeyPacketRepair>> PgTx::key_packets_to_repair(UnixTime now, std::int64_t after,
                                                                 std::uint32_t max_packets, std::uint32_t limit) {
  // From the unanswered E3 and E4 packets (the partial index ota_keys_unanswered), as in SQLite.
  auto r = q("SELECT o.n, o.kind, COUNT(*) FROM ota_sent o"
             " WHERE o.rsc=-1 AND o.kind IN ('sig_key','server_key')"
             " GROUP BY o.n, o.kind"
             " HAVING COUNT(*)<$1 AND MAX(o.sent_at) + ($2::bigint << LEAST(COUNT(*)-1, 5)::int) <= $3"
             " AND MAX(o.counter)=(SELECT MAX(counter) FROM ota_sent WHERE n=o.n AND kind=o.kind)"
             " ORDER BY o.n, o.kind LIMIT $4");
  r.i(max_packets).i(after).i(now).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<KeyPacketRepair>(r, [](const Row& row) {
    return KeyPacketRepair{row.col_b(0), row.col_t(1), static_cast<std::uint32_t>(row.col_i(2))};
  });
}

Result<bool> PgTx::consume_otac(ByteView n, std::uint16_t list_id, std::uint16_t index, std::string_view txn_id, UnixTime now) {
  // A concurrent consumer on another node holds the row until it commits; this update then
  // re-evaluates used=0 on the new version and changes nothing.
  auto r = q("UPDATE otacs SET used=1,used_at=$1,txn_id=$2 WHERE n=$3 AND list_id=$4 AND idx=$5 AND used=0");
  r.i(now).t(txn_id).b(n).i(list_id).i(index);
  if (auto e = r.run(); !e) return e.error();
  return r.changes() == 1;
}

// ---- transactions, terminals, operators -----------------------------------------------------------

Result<TransactionRecord> PgTx::transaction(std::string_view txn_id) {
  auto r = q("SELECT " OTAC_STORE_TXN_COLUMNS " FROM transactions WHERE txn_id=$1");
  r.t(txn_id);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no transaction " + std::string(txn_id));
  return rows::txn_from_row(r.row(0));
}

Result<void> PgTx::insert_transaction(const TransactionRecord& t) {
  auto r = q("INSERT INTO transactions(" OTAC_STORE_TXN_COLUMNS ") VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,"
             "$16,$17,$18,$19) ON CONFLICT DO NOTHING");
  rows::bind_txn(r, t);
  return insert(r, "transaction " + t.txn_id);
}

Result<bool> PgTx::decide_held_transaction(const TransactionRecord& t) {
  auto r = q("UPDATE transactions SET decision=$1,reason=$2,auth_code=$3,arc=$4,arpc=$5,decided_at=$6,decided_by=$7"
             " WHERE txn_id=$8 AND decision=$9");
  rows::bind_decision(r, t);
  r.t(t.txn_id).i(static_cast<int>(Decision::held));
  if (auto e = r.run(); !e) return e.error();
  return r.changes() == 1;
}

Result<std::vector<TransactionRecord>> PgTx::held_due(UnixTime now, std::uint32_t limit) {
  // decision=2 written out, as in SQLite: a generic plan can use the partial index
  // transactions_held (migration 5) only when the condition is in the statement's text.
  static_assert(static_cast<int>(Decision::held) == 2);
  auto r = q("SELECT " OTAC_STORE_TXN_COLUMNS " FROM transactions WHERE decision=2 AND expires_at<=$1 ORDER BY expires_at LIMIT $2");
  r.i(now).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<TransactionRecord>(r, rows::txn_from_row<Row>);
}

Result<std::uint32_t> PgTx::prune_declined(UnixTime before, std::uint32_t limit) {
  auto r = q("DELETE FROM transactions WHERE ord IN (SELECT ord FROM transactions WHERE created_at<$1"
             " AND decision=$2 AND decided_at<$1 ORDER BY created_at LIMIT $3)");
  r.i(before).i(static_cast<int>(Decision::declined)).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return static_cast<std::uint32_t>(r.changes());
}

Result<std::vector<TransactionRecord>> PgTx::transactions(const TransactionFilter& f) {
  auto r = q("SELECT " OTAC_STORE_TXN_COLUMNS " FROM transactions WHERE ($1::bytea IS NULL OR card=$1)"
             " AND ($2::text IS NULL OR terminal_id=$2) AND ($3::bigint IS NULL OR decision=$3) AND created_at>=$4"
             " AND ($5::bigint=0 OR created_at<$5) ORDER BY created_at DESC, ord DESC LIMIT $6");
  if (f.card) r.b(*f.card); else r.null();
  if (f.terminal_id) r.t(*f.terminal_id); else r.null();
  if (f.decision) r.i(static_cast<int>(*f.decision)); else r.null();
  r.i(f.since).i(f.until).i(f.limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<TransactionRecord>(r, rows::txn_from_row<Row>);
}

Result<void> PgTx::put_terminal(const TerminalRecord& t) {
  auto r = q("INSERT INTO terminals(id,cert_fingerprint,limit_minor,enabled) VALUES($1,$2,$3,$4) ON CONFLICT(id) DO UPDATE"
             " SET cert_fingerprint=EXCLUDED.cert_fingerprint,limit_minor=EXCLUDED.limit_minor,enabled=EXCLUDED.enabled");
  r.t(t.id).t(t.cert_fingerprint).i(t.limit_minor).i(t.enabled ? 1 : 0);
  return r.run();
}

Result<TerminalRecord> PgTx::terminal(std::string_view id) {
  auto r = q("SELECT cert_fingerprint,limit_minor,enabled FROM terminals WHERE id=$1");
  r.t(id);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no terminal " + std::string(id));
  const Row x = r.row(0);
  return TerminalRecord{std::string(id), x.col_t(0), x.col_i(1), x.col_i(2) != 0};
}

Result<void> PgTx::put_operator(const OperatorRecord& op) {
  // As SQLite's INSERT OR REPLACE: a row holding the same token under another name goes.
  {
    auto d = q("DELETE FROM operators WHERE token_hash=$1 AND name<>$2");
    d.b(op.token_hash).t(op.name);
    if (auto e = d.run(); !e) return e;
  }
  auto r = q("INSERT INTO operators(name,role,token_hash) VALUES($1,$2,$3) ON CONFLICT(name) DO UPDATE"
             " SET role=EXCLUDED.role,token_hash=EXCLUDED.token_hash");
  r.t(op.name).i(static_cast<int>(op.role)).b(op.token_hash);
  return r.run();
}

Result<OperatorRecord> PgTx::operator_by_token_hash(ByteView token_hash) {
  auto r = q("SELECT name,role,token_hash FROM operators WHERE token_hash=$1");
  r.b(token_hash);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "unknown operator token");
  const Row x = r.row(0);
  return OperatorRecord{x.col_t(0), static_cast<Role>(x.col_i(1)), x.col_b(2)};
}

// ---- SMS outbox ----------------------------------------------------------------------------------

Result<std::int64_t> PgTx::enqueue_sms(const OutboxMessage& m) {
  auto r = q("INSERT INTO sms_outbox(card,dest,udh,payload,status,attempts,next_attempt_at,last_reply,created_at)"
             " VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING id");
  rows::bind_new_sms(r, m);
  return scalar(r);
}

Result<std::vector<OutboxMessage>> PgTx::due_sms(UnixTime now, std::uint32_t limit) {
  auto r = q("SELECT " OTAC_STORE_SMS_COLUMNS " FROM sms_outbox WHERE status=0 AND next_attempt_at<=$1 ORDER BY id LIMIT $2");
  r.i(now).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<OutboxMessage>(r, rows::sms_from_row<Row>);
}

// The operator views' listings (console, otac-admin): newest cards first, terminals by id,
// the messages still queued for one card.
Result<std::vector<Bytes>> PgTx::card_ids(std::uint32_t limit) {
  auto r = q("SELECT n FROM cards ORDER BY created_at DESC, n DESC LIMIT $1");
  r.i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<Bytes>(r, [](const Row& row) { return row.col_b(0); });
}

Result<std::vector<TerminalRecord>> PgTx::terminals(std::uint32_t limit) {
  auto r = q("SELECT id,cert_fingerprint,limit_minor,enabled FROM terminals ORDER BY id LIMIT $1");
  r.i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<TerminalRecord>(r, [](const Row& row) {
    return TerminalRecord{row.col_t(0), row.col_t(1), row.col_i(2), row.col_i(3) != 0};
  });
}

Result<std::vector<OutboxMessage>> PgTx::queued_sms(ByteView n, std::uint32_t limit) {
  auto r = q("SELECT " OTAC_STORE_SMS_COLUMNS " FROM sms_outbox WHERE status=0 AND card=$1 ORDER BY id LIMIT $2");
  r.b(n).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<OutboxMessage>(r, rows::sms_from_row<Row>);
}

Result<std::vector<OutboxMessage>> PgTx::lease_due_sms(UnixTime now, UnixTime lease_until, std::uint32_t limit) {
  // SKIP LOCKED: messages another node is leasing right now are left to it; the lease is the
  // new next_attempt_at, so once it passes without mark_sent, any node takes the message.
  // The rows come back as they were before the lease (next_attempt_at as the caller saw it).
  auto r = q("WITH due AS (SELECT id, next_attempt_at AS was FROM sms_outbox WHERE status=0 AND next_attempt_at<=$1"
             " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)"
             " UPDATE sms_outbox s SET next_attempt_at=$2 FROM due WHERE s.id=due.id"
             " RETURNING s.id,s.card,s.dest,s.udh,s.payload,s.status,s.attempts,due.was,s.last_reply,s.created_at");
  r.i(now).i(lease_until).i(limit);
  if (auto e = r.run(); !e) return e.error();
  auto out = collect<OutboxMessage>(r, rows::sms_from_row<Row>);
  if (out) std::sort(out->begin(), out->end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

Result<OutboxMessage> PgTx::sms(std::int64_t id) {
  // FOR UPDATE: mark_sent, mark_failed and a delivery report on two nodes update in turn.
  auto r = q("SELECT " OTAC_STORE_SMS_COLUMNS " FROM sms_outbox WHERE id=$1 FOR UPDATE");
  r.i(id);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no outbox message " + std::to_string(id));
  return rows::sms_from_row(r.row(0));
}

Result<void> PgTx::update_sms(const OutboxMessage& m) {
  auto r = q("UPDATE sms_outbox SET status=$1,attempts=$2,next_attempt_at=$3,last_reply=$4 WHERE id=$5");
  r.i(static_cast<int>(m.status)).i(m.attempts).i(m.next_attempt_at).t(m.last_reply).i(m.id);
  if (auto e = r.run(); !e) return e;
  if (r.changes() != 1) return make_error(Errc::not_found, "no outbox message " + std::to_string(m.id));
  return {};
}

Result<std::uint32_t> PgTx::outbox_depth() {
  auto r = q("SELECT COUNT(*) FROM sms_outbox WHERE status=0");
  auto v = scalar(r);
  if (!v) return v.error();
  return static_cast<std::uint32_t>(*v);
}

// ---- OTA counters and packets --------------------------------------------------------------------

Result<std::uint64_t> PgTx::next_ota_counter(ByteView n) {
  auto r = q("UPDATE cards SET ota_counter=ota_counter+1 WHERE n=$1 RETURNING ota_counter");
  r.b(n);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no card " + to_hex(n));
  return static_cast<std::uint64_t>(r.row(0).col_i(0));
}

Result<std::uint64_t> PgTx::card_counter(ByteView n) {
  // FOR UPDATE: the same packet delivered to two nodes is accepted by one (replay check).
  auto r = q("SELECT card_counter FROM cards WHERE n=$1 FOR UPDATE");
  r.b(n);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no card " + to_hex(n));
  return static_cast<std::uint64_t>(r.row(0).col_i(0));
}

Result<void> PgTx::set_card_counter(ByteView n, std::uint64_t counter) {
  auto r = q("UPDATE cards SET card_counter=$1 WHERE n=$2");
  r.i(static_cast<std::int64_t>(counter)).b(n);
  return r.run();
}

Result<void> PgTx::record_ota_sent(ByteView n, std::uint64_t counter, std::string_view kind, std::int64_t ref, UnixTime now) {
  auto r = q("INSERT INTO ota_sent(n,counter,kind,ref,sent_at) VALUES($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING");
  r.b(n).i(static_cast<std::int64_t>(counter)).t(kind).i(ref).i(now);
  return insert(r, "packet " + std::to_string(counter) + " to card " + to_hex(n));
}

Result<std::tuple<std::string, std::int64_t, int>> PgTx::ota_sent(ByteView n, std::uint64_t counter) {
  auto r = q("SELECT kind,ref,rsc FROM ota_sent WHERE n=$1 AND counter=$2");
  r.b(n).i(static_cast<std::int64_t>(counter));
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no packet with counter " + std::to_string(counter) + " was sent to " + to_hex(n));
  const Row x = r.row(0);
  return std::make_tuple(x.col_t(0), x.col_i(1), static_cast<int>(x.col_i(2)));
}

Result<std::uint64_t> PgTx::latest_ota_sent(ByteView n, std::string_view kind, std::int64_t ref) {
  auto r = q("SELECT COALESCE(MAX(counter),0) FROM ota_sent WHERE n=$1 AND kind=$2 AND ref=$3");
  r.b(n).t(kind).i(ref);
  auto v = scalar(r);
  if (!v) return v.error();
  return static_cast<std::uint64_t>(*v);
}

Result<void> PgTx::set_ota_rsc(ByteView n, std::uint64_t counter, int rsc) {
  auto r = q("UPDATE ota_sent SET rsc=$1 WHERE n=$2 AND counter=$3");
  r.i(rsc).b(n).i(static_cast<std::int64_t>(counter));
  return r.run();
}

Result<Bytes> PgTx::card_by_msisdn(std::string_view msisdn) {
  auto r = q("SELECT n FROM cards WHERE msisdn=$1 ORDER BY created_at DESC LIMIT 1");
  r.t(msisdn);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no card with number " + std::string(msisdn));
  return r.row(0).col_b(0);
}

// ---- server keys, card security ----------------------------------------------------------------

Result<ServerKeyRecord> PgTx::server_key(std::string_view name) {
  auto r = q("SELECT private_sealed,public_point,created_at FROM server_keys WHERE name=$1");
  r.t(name);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return held_server_record(kek_, name, {}, 0);  // not_found unless a token holds it
  const Row x = r.row(0);
  if (auto held = held_server_record(kek_, name, x.col_b(1), x.col_i(2)); held || held.error().code != Errc::not_found)
    return held;
  ServerKeyRecord k;
  k.name = std::string(name);
  auto priv = kek_.open(x.col_b(0), ad("server-key", as_bytes(name)));
  if (!priv) return make_error(priv.error().code, "server key " + std::string(name) + ": " + priv.error().message);
  k.private_der = std::move(*priv);
  k.public_point = x.col_b(1);
  k.created_at = x.col_i(2);
  return k;
}

Result<void> PgTx::insert_server_key(const ServerKeyRecord& k) {
  auto r = q("INSERT INTO server_keys(name,private_sealed,public_point,created_at) VALUES($1,$2,$3,$4) ON CONFLICT DO NOTHING");
  r.t(k.name).b(kek_.seal(k.private_der.view(), ad("server-key", as_bytes(k.name)))).b(k.public_point).i(k.created_at);
  return insert(r, "server key " + k.name);
}

Result<CardSecurity> PgTx::card_security(ByteView n) {
  auto r = q("SELECT " OTAC_STORE_SECURITY_COLUMNS " FROM card_security WHERE n=$1");
  r.b(n);
  auto row = found(r);
  if (!row) return row.error();
  if (!*row) return CardSecurity{};
  return rows::card_security_from_row(r.row(0), n, kek_);
}

Result<void> PgTx::set_card_security(ByteView n, const CardSecurity& s) {
  auto r = q("INSERT INTO card_security(n," OTAC_STORE_SECURITY_COLUMNS ") VALUES($1,$2,$3,$4,$5,$6,$7) ON CONFLICT(n) DO UPDATE"
             " SET sig_sealed=EXCLUDED.sig_sealed,pending_sig_sealed=EXCLUDED.pending_sig_sealed,"
             "pending_sig_counter=EXCLUDED.pending_sig_counter,pending_sig_sent=EXCLUDED.pending_sig_sent,"
             "sig_since=EXCLUDED.sig_since,server_point=EXCLUDED.server_point");
  r.b(n);
  rows::bind_card_security(r, n, s, kek_);
  auto e = r.run();
  if (!e) return make_error(e.error().code, "cannot store the security state of card " + to_hex(n) + ": " + e.error().message);
  return {};
}

// ---- audit log ---------------------------------------------------------------------------------

Result<std::int64_t> PgTx::audit(UnixTime at, std::string_view actor, std::string_view action, std::string_view detail) {
  // The lock is held until this transaction ends, and at READ COMMITTED the next statement
  // sees the tail the previous holder committed: one chain, in commit order.
  if (auto l = c_.command(kAuditLock); !l) return l.error();
  Bytes prev(32, 0);
  std::int64_t seq = 1;
  {
    auto r = q("SELECT seq,mac FROM audit_log ORDER BY seq DESC LIMIT 1");
    auto row = found(r);
    if (!row) return row.error();
    if (*row) { seq = r.row(0).col_i(0) + 1; prev = r.row(0).col_b(1); }
  }
  auto r = q("INSERT INTO audit_log(seq,at,actor,action,detail,mac) VALUES($1,$2,$3,$4,$5,$6)");
  r.i(seq).i(at).t(actor).t(action).t(detail).b(rows::audit_mac(kek_, prev, seq, at, actor, action, detail));
  if (auto e = r.run(); !e) return e.error();
  return seq;
}

Result<std::vector<AuditEntry>> PgTx::audit_entries(std::int64_t after_seq, std::uint32_t limit) {
  auto r = q("SELECT " OTAC_STORE_AUDIT_COLUMNS " FROM audit_log WHERE seq>$1 ORDER BY seq LIMIT $2");
  r.i(after_seq).i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<AuditEntry>(r, rows::audit_from_row<Row>);
}

Result<std::vector<AuditEntry>> PgTx::audit_recent(std::uint32_t limit) {
  auto r = q("SELECT " OTAC_STORE_AUDIT_COLUMNS " FROM (SELECT * FROM audit_log ORDER BY seq DESC LIMIT $1) t ORDER BY seq");
  r.i(limit);
  if (auto e = r.run(); !e) return e.error();
  return collect<AuditEntry>(r, rows::audit_from_row<Row>);
}

Result<std::int64_t> PgTx::verify_audit_chain() {
  // In pages, so that a long log is never held in memory at once.
  Bytes prev(32, 0);
  std::int64_t expect = 1;
  for (;;) {
    auto page = audit_entries(expect - 1, 1000);
    if (!page) return page.error();
    for (const auto& e : *page) {
      auto mac = rows::check_audit_entry(kek_, prev, expect, e);
      if (!mac) return mac.error();
      prev = std::move(*mac);
      ++expect;
    }
    if (page->size() < 1000) return expect - 1;
  }
}

// ---- schema ------------------------------------------------------------------------------------

namespace {

// Schema versions, applied in order; otac_schema records how many ran. New versions are
// appended, never edited once released. Version 1 is SQLite's schema at its version 8, with
// BIGINT for every integer and an `ord` column that orders transactions as SQLite's rowid.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE cards(
  n BYTEA PRIMARY KEY, algorithm BIGINT NOT NULL, msisdn TEXT NOT NULL, status BIGINT NOT NULL,
  fail_count BIGINT NOT NULL, fail_limit BIGINT NOT NULL, threshold BIGINT NOT NULL,
  limit_minor BIGINT NOT NULL, review_minor BIGINT NOT NULL, key_version BIGINT NOT NULL,
  k_sealed BYTEA, pending_k_sealed BYTEA, pending_version BIGINT NOT NULL, public_key BYTEA,
  list_push_in_flight BIGINT NOT NULL, ota_counter BIGINT NOT NULL DEFAULT 0,
  card_counter BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, currency BIGINT NOT NULL DEFAULT 0,
  retired_k_sealed BYTEA, retired_version BIGINT NOT NULL DEFAULT 0);
CREATE INDEX cards_msisdn ON cards(msisdn);
CREATE TABLE doors(
  n BYTEA NOT NULL REFERENCES cards(n), door TEXT NOT NULL, from_minute BIGINT NOT NULL,
  to_minute BIGINT NOT NULL, tz TEXT NOT NULL DEFAULT 'UTC', PRIMARY KEY(n, door));
CREATE TABLE lists(
  n BYTEA NOT NULL REFERENCES cards(n), list_id BIGINT NOT NULL, created_at BIGINT NOT NULL,
  state BIGINT NOT NULL DEFAULT 0, refusal TEXT, state_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY(n, list_id));
CREATE TABLE otacs(
  n BYTEA NOT NULL, list_id BIGINT NOT NULL, idx BIGINT NOT NULL, key_sealed BYTEA NOT NULL,
  used BIGINT NOT NULL DEFAULT 0, used_at BIGINT, txn_id TEXT,
  PRIMARY KEY(n, list_id, idx), FOREIGN KEY(n, list_id) REFERENCES lists(n, list_id));
CREATE INDEX otacs_unused ON otacs(n, used, list_id, idx);
CREATE TABLE transactions(
  txn_id TEXT PRIMARY KEY, request_hash BYTEA NOT NULL, card BYTEA, list_id BIGINT, idx BIGINT,
  terminal_id TEXT, amount_minor BIGINT, currency BIGINT, door TEXT, decision BIGINT NOT NULL,
  reason TEXT NOT NULL, auth_code TEXT, arc BYTEA, arpc BYTEA, created_at BIGINT NOT NULL,
  decided_at BIGINT NOT NULL, decided_by TEXT, cryptogram BYTEA, expires_at BIGINT NOT NULL DEFAULT 0,
  ord BIGSERIAL NOT NULL);
CREATE INDEX transactions_created ON transactions(created_at);
CREATE INDEX transactions_held ON transactions(decision, expires_at);
CREATE TABLE terminals(
  id TEXT PRIMARY KEY, cert_fingerprint TEXT NOT NULL, limit_minor BIGINT NOT NULL, enabled BIGINT NOT NULL);
CREATE TABLE operators(name TEXT PRIMARY KEY, role BIGINT NOT NULL, token_hash BYTEA NOT NULL UNIQUE);
CREATE TABLE sms_outbox(
  id BIGSERIAL PRIMARY KEY, card BYTEA, dest TEXT NOT NULL, udh BYTEA, payload BYTEA NOT NULL,
  status BIGINT NOT NULL, attempts BIGINT NOT NULL, next_attempt_at BIGINT NOT NULL,
  last_reply TEXT, created_at BIGINT NOT NULL);
CREATE INDEX sms_due ON sms_outbox(status, next_attempt_at);
CREATE TABLE audit_log(
  seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  detail TEXT NOT NULL, mac BYTEA NOT NULL);
CREATE TABLE ota_sent(
  n BYTEA NOT NULL REFERENCES cards(n), counter BIGINT NOT NULL, kind TEXT NOT NULL,
  ref BIGINT NOT NULL, rsc BIGINT NOT NULL DEFAULT -1, sent_at BIGINT NOT NULL, PRIMARY KEY(n, counter));
CREATE TABLE server_keys(
  name TEXT PRIMARY KEY, private_sealed BYTEA NOT NULL, public_point BYTEA NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE card_security(
  n BYTEA PRIMARY KEY REFERENCES cards(n), sig_sealed BYTEA, pending_sig_sealed BYTEA,
  pending_sig_counter BIGINT NOT NULL DEFAULT 0, pending_sig_sent BIGINT NOT NULL DEFAULT 0,
  sig_since BIGINT NOT NULL DEFAULT 0, server_point BYTEA);
)sql",
    // 2: outcomes, cash withdrawals and refunds (protocol.md 5.4; SQLite's version 9).
    R"sql(
CREATE TABLE outcomes(
  txn_id TEXT PRIMARY KEY, outcome BIGINT NOT NULL, handed_minor BIGINT NOT NULL,
  reported_by TEXT NOT NULL, at BIGINT NOT NULL);
CREATE TABLE cash(
  txn_id TEXT PRIMARY KEY, card BYTEA NOT NULL, terminal_id TEXT NOT NULL, amount_minor BIGINT NOT NULL,
  approved_at BIGINT NOT NULL, settled BIGINT NOT NULL DEFAULT 0);
CREATE INDEX cash_card ON cash(card, approved_at);
CREATE INDEX cash_terminal ON cash(terminal_id, approved_at);
CREATE INDEX cash_open ON cash(approved_at) WHERE settled = 0;
CREATE TABLE refunds(
  txn_id TEXT PRIMARY KEY, terminal_id TEXT NOT NULL, amount_minor BIGINT NOT NULL, state BIGINT NOT NULL,
  requested_at BIGINT NOT NULL, decided_by TEXT NOT NULL DEFAULT '', decided_at BIGINT NOT NULL DEFAULT 0);
CREATE INDEX refunds_state ON refunds(state, requested_at);
)sql",
    // 3: a card's own daily cash limit (NULL = the backend's cash_card_daily_minor).
    R"sql(
ALTER TABLE cards ADD COLUMN cash_daily_minor BIGINT;
)sql",
    // 4: the lists still waiting for their PoR, for lists_to_repair (SQLite's migration 11):
    // without it the repair round reads every OTA packet ever sent.
    R"sql(
CREATE INDEX lists_sent ON lists(n, list_id) WHERE state=0;
)sql",
    // 5: otacs_unused and transactions_held hold only the rows they are read for, as in
    // SQLite's migration 12: consuming a code deletes one index entry instead of moving it,
    // and an approval or decline adds none to transactions_held.
    R"sql(
DROP INDEX otacs_unused;
CREATE INDEX otacs_unused ON otacs(n, list_id, idx, used) WHERE used=0;
DROP INDEX transactions_held;
CREATE INDEX transactions_held ON transactions(expires_at) WHERE decision=2;
)sql",
    // 6: the cards with a pending key, for rotations_to_repair (SQLite's migration 13).
    R"sql(
CREATE INDEX cards_rotating ON cards(n, pending_version) WHERE pending_version<>0;
)sql",
    // 7: the unanswered E3 and E4 packets, for key_packets_to_repair (SQLite's migration 14).
    R"sql(
CREATE INDEX ota_keys_unanswered ON ota_sent(n, kind, counter, sent_at) WHERE rsc=-1 AND kind IN ('sig_key','server_key');
)sql",
};

}  // namespace

Result<void> migrate(Connection& c) {
  // A session lock: a node that starts while another migrates waits here, then finds the
  // schema current. The DDL runs in one transaction, so a failed migration leaves nothing.
  const std::string lock = "SELECT pg_advisory_lock(" + std::to_string(kMigrationLock) + ")";
  const std::string unlock = "SELECT pg_advisory_unlock(" + std::to_string(kMigrationLock) + ")";
  if (auto l = c.command(lock.c_str()); !l) return l;
  auto r = [&]() -> Result<void> {
    if (auto e = c.command("CREATE TABLE IF NOT EXISTS otac_schema(version BIGINT NOT NULL)"); !e) return e;
    Query v(c, "SELECT COALESCE(MAX(version),0) FROM otac_schema");
    if (auto e = v.run(); !e) return e;
    const auto have = static_cast<std::size_t>(v.row(0).col_i(0));
    constexpr std::size_t want = std::size(kMigrations);
    if (have > want)
      return make_error(Errc::state, "database schema version " + std::to_string(have) + " is newer than this program knows (" +
                                         std::to_string(want) + "); upgrade the program");
    for (std::size_t i = have; i < want; ++i) {
      if (auto e = c.command("BEGIN"); !e) return e;
      auto step = c.command(kMigrations[i]);
      if (step) {
        Query set(c, "INSERT INTO otac_schema(version) VALUES($1)");
        set.i(static_cast<std::int64_t>(i + 1));
        step = set.run();
      }
      if (step) step = c.command("COMMIT");
      if (!step) {
        (void)c.command("ROLLBACK");
        return make_error(step.error().code, "schema migration " + std::to_string(i + 1) + " failed: " + step.error().message);
      }
    }
    return {};
  }();
  (void)c.command(unlock.c_str());
  return r;
}

}  // namespace otac::backend::pg
