// SqliteTx: the SMS outbox, OTA counters and the packets sent to cards.
#include "sqlite_tx.hpp"
#include "store_rows.hpp"

namespace otac::backend::sqlite {

using rows::ad;

Result<std::int64_t> SqliteTx::enqueue_sms(const OutboxMessage& m) {
  auto r = q("INSERT INTO sms_outbox(card,dest,udh,payload,status,attempts,next_attempt_at,last_reply,created_at)"
             " VALUES(?,?,?,?,?,?,?,?,?)");
  rows::bind_new_sms(r, m);
  if (auto e = r.exec(); !e) return e.error();
  return r.last_insert_id();
}


Result<std::vector<OutboxMessage>> SqliteTx::due_sms(UnixTime now, std::uint32_t limit) {
  auto r = q("SELECT " OTAC_STORE_SMS_COLUMNS " FROM sms_outbox"
             " WHERE status=0 AND next_attempt_at<=? ORDER BY id LIMIT ?");
  r.i(now).i(limit);
  return collect<OutboxMessage>(r, limit, rows::sms_from_row<Query>);
}

Result<std::vector<OutboxMessage>> SqliteTx::queued_sms(ByteView n, std::uint32_t limit) {
  auto r = q("SELECT " OTAC_STORE_SMS_COLUMNS " FROM sms_outbox WHERE status=0 AND card=? ORDER BY id LIMIT ?");
  r.b(n).i(limit);
  return collect<OutboxMessage>(r, limit, rows::sms_from_row<Query>);
}

Result<OutboxMessage> SqliteTx::sms(std::int64_t id) {
  auto r = q("SELECT " OTAC_STORE_SMS_COLUMNS " FROM sms_outbox WHERE id=?");
  r.i(id);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no outbox message " + std::to_string(id));
  return rows::sms_from_row(r);
}

Result<void> SqliteTx::update_sms(const OutboxMessage& m) {
  auto r = q("UPDATE sms_outbox SET status=?,attempts=?,next_attempt_at=?,last_reply=? WHERE id=?");
  r.i(static_cast<int>(m.status)).i(m.attempts).i(m.next_attempt_at).t(m.last_reply).i(m.id);
  if (auto e = r.exec(); !e) return e;
  if (r.changes() != 1) return make_error(Errc::not_found, "no outbox message " + std::to_string(m.id));
  return {};
}

Result<std::uint32_t> SqliteTx::outbox_depth() {
  auto r = q("SELECT COUNT(*) FROM sms_outbox WHERE status=0");
  auto row = r.step();
  if (!row) return row.error();
  return static_cast<std::uint32_t>(r.col_i(0));
}

Result<std::uint64_t> SqliteTx::next_ota_counter(ByteView n) {
  {
    auto r = q("UPDATE cards SET ota_counter=ota_counter+1 WHERE n=?");
    r.b(n);
    if (auto e = r.exec(); !e) return e.error();
    if (r.changes() != 1) return make_error(Errc::not_found, "no card " + to_hex(n));
  }
  auto r = q("SELECT ota_counter FROM cards WHERE n=?");
  r.b(n);
  auto row = r.step();
  if (!row) return row.error();
  return static_cast<std::uint64_t>(r.col_i(0));
}

Result<std::uint64_t> SqliteTx::card_counter(ByteView n) {
  auto r = q("SELECT card_counter FROM cards WHERE n=?");
  r.b(n);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no card " + to_hex(n));
  return static_cast<std::uint64_t>(r.col_i(0));
}

Result<void> SqliteTx::set_card_counter(ByteView n, std::uint64_t counter) {
  auto r = q("UPDATE cards SET card_counter=? WHERE n=?");
  r.i(static_cast<std::int64_t>(counter)).b(n);
  return r.exec();
}

Result<void> SqliteTx::record_ota_sent(ByteView n, std::uint64_t counter, std::string_view kind, std::int64_t ref, UnixTime now) {
  auto r = q("INSERT INTO ota_sent(n,counter,kind,ref,sent_at) VALUES(?,?,?,?,?)");
  r.b(n).i(static_cast<std::int64_t>(counter)).t(kind).i(ref).i(now);
  return r.exec();
}

Result<std::tuple<std::string, std::int64_t, int>> SqliteTx::ota_sent(ByteView n, std::uint64_t counter) {
  auto r = q("SELECT kind,ref,rsc FROM ota_sent WHERE n=? AND counter=?");
  r.b(n).i(static_cast<std::int64_t>(counter));
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no packet with counter " + std::to_string(counter) + " was sent to " + to_hex(n));
  return std::make_tuple(r.col_t(0), r.col_i(1), static_cast<int>(r.col_i(2)));
}

Result<std::uint64_t> SqliteTx::latest_ota_sent(ByteView n, std::string_view kind, std::int64_t ref) {
  auto r = q("SELECT COALESCE(MAX(counter),0) FROM ota_sent WHERE n=? AND kind=? AND ref=?");
  r.b(n).t(kind).i(ref);
  auto row = r.step();
  if (!row) return row.error();
  return static_cast<std::uint64_t>(r.col_i(0));
}

Result<void> SqliteTx::set_ota_rsc(ByteView n, std::uint64_t counter, int rsc) {
  auto r = q("UPDATE ota_sent SET rsc=? WHERE n=? AND counter=?");
  r.i(rsc).b(n).i(static_cast<std::int64_t>(counter));
  return r.exec();
}

Result<Bytes> SqliteTx::card_by_msisdn(std::string_view msisdn) {
  auto r = q("SELECT n FROM cards WHERE msisdn=? ORDER BY created_at DESC LIMIT 1");
  r.t(msisdn);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no card with number " + std::string(msisdn));
  return r.col_b(0);
}

}  // namespace otac::backend::sqlite
