// SqliteTx: server keys, per-card security state and the audit log.
#include "sqlite_tx.hpp"
#include "store_rows.hpp"

namespace otac::backend::sqlite {

using rows::ad;

Result<ServerKeyRecord> SqliteTx::server_key(std::string_view name) {
  auto r = q("SELECT private_sealed,public_point,created_at FROM server_keys WHERE name=?");
  r.t(name);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return held_server_record(kek_, name, {}, 0);  // not_found unless a token holds it
  if (auto held = held_server_record(kek_, name, r.col_b(1), r.col_i(2)); held || held.error().code != Errc::not_found)
    return held;
  ServerKeyRecord k;
  k.name = std::string(name);
  auto priv = kek_.open(r.col_b(0), ad("server-key", as_bytes(name)));
  if (!priv) return make_error(priv.error().code, "server key " + std::string(name) + ": " + priv.error().message);
  k.private_der = std::move(*priv);
  k.public_point = r.col_b(1);
  k.created_at = r.col_i(2);
  return k;
}

Result<void> SqliteTx::insert_server_key(const ServerKeyRecord& k) {
  auto r = q("INSERT INTO server_keys(name,private_sealed,public_point,created_at) VALUES(?,?,?,?)");
  r.t(k.name).b(kek_.seal(k.private_der.view(), ad("server-key", as_bytes(k.name)))).b(k.public_point).i(k.created_at);
  auto e = r.exec();
  if (!e) return make_error(e.error().code, "cannot store server key " + k.name + ": " + e.error().message);
  return {};
}

Result<CardSecurity> SqliteTx::card_security(ByteView n) {
  auto r = q("SELECT " OTAC_STORE_SECURITY_COLUMNS " FROM card_security WHERE n=?");
  r.b(n);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return CardSecurity{};
  return rows::card_security_from_row(r, n, kek_);
}

Result<void> SqliteTx::set_card_security(ByteView n, const CardSecurity& s) {
  auto r = q("INSERT OR REPLACE INTO card_security(n,sig_sealed,pending_sig_sealed,pending_sig_counter,pending_sig_sent,"
             "sig_since,server_point) VALUES(?,?,?,?,?,?,?)");
  r.b(n);
  rows::bind_card_security(r, n, s, kek_);
  auto e = r.exec();
  if (!e) return make_error(e.error().code, "cannot store the security state of card " + to_hex(n) + ": " + e.error().message);
  return {};
}

Result<std::int64_t> SqliteTx::audit(UnixTime at, std::string_view actor, std::string_view action, std::string_view detail) {
  Bytes prev(32, 0);
  std::int64_t seq = 1;
  {
    auto r = q("SELECT seq,mac FROM audit_log ORDER BY seq DESC LIMIT 1");
    auto row = r.step();
    if (!row) return row.error();
    if (*row) { seq = r.col_i(0) + 1; prev = r.col_b(1); }
  }
  auto r = q("INSERT INTO audit_log(seq,at,actor,action,detail,mac) VALUES(?,?,?,?,?,?)");
  r.i(seq).i(at).t(actor).t(action).t(detail).b(rows::audit_mac(kek_, prev, seq, at, actor, action, detail));
  if (auto e = r.exec(); !e) return e.error();
  return seq;
}


Result<std::vector<AuditEntry>> SqliteTx::audit_entries(std::int64_t after_seq, std::uint32_t limit) {
  auto r = q("SELECT " OTAC_STORE_AUDIT_COLUMNS " FROM audit_log WHERE seq>? ORDER BY seq LIMIT ?");
  r.i(after_seq).i(limit);
  return collect<AuditEntry>(r, limit, rows::audit_from_row<Query>);
}

Result<std::vector<AuditEntry>> SqliteTx::audit_recent(std::uint32_t limit) {
  auto r = q("SELECT " OTAC_STORE_AUDIT_COLUMNS " FROM (SELECT * FROM audit_log ORDER BY seq DESC LIMIT ?) ORDER BY seq");
  r.i(limit);
  return collect<AuditEntry>(r, limit, rows::audit_from_row<Query>);
}

Result<std::int64_t> SqliteTx::verify_audit_chain() {
  auto r = q("SELECT " OTAC_STORE_AUDIT_COLUMNS " FROM audit_log ORDER BY seq");
  Bytes prev(32, 0);
  std::int64_t expect = 1;
  for (;; ++expect) {
    auto row = r.step();
    if (!row) return row.error();
    if (!*row) break;
    auto mac = rows::check_audit_entry(kek_, prev, expect, rows::audit_from_row(r));
    if (!mac) return mac.error();
    prev = std::move(*mac);
  }
  return expect - 1;
}

}  // namespace otac::backend::sqlite
