// SqliteTx: cards, door permissions, lists and codes.
#include "sqlite_tx.hpp"
#include "store_rows.hpp"

namespace otac::backend::sqlite {

using rows::ad;

Query SqliteTx::q(const char* sql) { return s_.query(sql); }

Result<void> SqliteTx::insert_card(const CardRecord& c) {
  auto r = q("INSERT INTO cards(n,algorithm,msisdn,status,fail_count,fail_limit,threshold,limit_minor,review_minor,"
             "key_version,k_sealed,pending_k_sealed,pending_version,public_key,list_push_in_flight,created_at)"
             " VALUES(?,?,?,?,?,?,?,?,?,?,?,NULL,0,?,0,?)");
  r.b(c.n).i(static_cast<int>(c.algorithm)).t(c.msisdn).i(static_cast<int>(c.status)).i(c.fail_count).i(c.fail_limit)
      .i(c.threshold).i(c.limit_minor).i(c.review_minor).i(c.key_version);
  if (c.k.empty()) r.null(); else r.b(kek_.seal(c.k.view(), ad("card-k", c.n)));
  r.b(c.public_key).i(c.created_at);
  auto e = r.exec();
  if (!e) return make_error(e.error().code, "cannot insert card " + to_hex(c.n) + ": " + e.error().message);
  return update_card(c);
}

Result<CardRecord> SqliteTx::read_card(ByteView n, bool open_keys) {
  auto r = q("SELECT " OTAC_STORE_CARD_COLUMNS " FROM cards WHERE n=?");
  r.b(n);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no card " + to_hex(n));
  return rows::card_from_row(r, n, kek_, open_keys);
}

Result<CardRecord> SqliteTx::card(ByteView n) { return read_card(n, true); }
Result<CardRecord> SqliteTx::card_state(ByteView n) { return read_card(n, false); }

Result<void> SqliteTx::update_card(const CardRecord& c) {
  if (auto w = rows::writable(c); !w) return w;
  auto r = q("UPDATE cards SET msisdn=?,status=?,fail_count=?,fail_limit=?,threshold=?,limit_minor=?,review_minor=?,"
             "currency=?,key_version=?,k_sealed=?,pending_k_sealed=?,pending_version=?,list_push_in_flight=?,"
             "retired_k_sealed=?,retired_version=?,cash_daily_minor=? WHERE n=?");
  rows::bind_card_update(r, c, kek_);
  r.b(c.n);
  auto e = r.exec();
  if (!e) return e;
  if (r.changes() != 1) return make_error(Errc::not_found, "no card " + to_hex(c.n));
  return {};
}

Result<void> SqliteTx::set_doors(ByteView n, const std::vector<DoorPermission>& doors) {
  { auto d = q("DELETE FROM doors WHERE n=?"); d.b(n); if (auto e = d.exec(); !e) return e; }
  for (const auto& p : doors) {
    auto r = q("INSERT INTO doors(n,door,from_minute,to_minute,tz) VALUES(?,?,?,?,?)");
    r.b(n).t(p.door).i(p.from_minute).i(p.to_minute).t(p.tz);
    if (auto e = r.exec(); !e) return e;
  }
  return {};
}

Result<std::vector<DoorPermission>> SqliteTx::doors(ByteView n) {
  auto r = q("SELECT door,from_minute,to_minute,tz FROM doors WHERE n=? ORDER BY door");
  r.b(n);
  return collect<DoorPermission>(r, 100000, [](const Query& row) {
    return DoorPermission{row.col_t(0), static_cast<std::uint32_t>(row.col_i(1)), static_cast<std::uint32_t>(row.col_i(2)), row.col_t(3)};
  });
}

Result<std::uint16_t> SqliteTx::last_list_id(ByteView n) {
  auto r = q("SELECT COALESCE(MAX(list_id),0) FROM lists WHERE n=?");
  r.b(n);
  auto row = r.step();
  if (!row) return row.error();
  return static_cast<std::uint16_t>(r.col_i(0));
}

Result<void> SqliteTx::insert_list(ByteView n, std::uint16_t list_id, const std::vector<SecretBytes>& keys, UnixTime now) {
  if (keys.size() > 0xFFFF) return make_error(Errc::bad_length, "a list holds at most 65535 codes");
  {
    auto r = q("INSERT INTO lists(n,list_id,created_at) VALUES(?,?,?)");
    r.b(n).i(list_id).i(now);
    if (auto e = r.exec(); !e) return make_error(e.error().code, "cannot insert list: " + e.error().message);
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto r = q("INSERT INTO otacs(n,list_id,idx,key_sealed) VALUES(?,?,?,?)");
    r.b(n).i(list_id).i(static_cast<std::int64_t>(i)).b(kek_.seal(keys[i].view(), ad("otac", n, list_id, static_cast<std::int64_t>(i))));
    if (auto e = r.exec(); !e) return e;
  }
  return {};
}

Result<OtacRecord> SqliteTx::otac(ByteView n, std::uint16_t list_id, std::uint16_t index) {
  auto r = q("SELECT key_sealed,used FROM otacs WHERE n=? AND list_id=? AND idx=?");
  r.b(n).i(list_id).i(index);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no code " + std::to_string(list_id) + "/" + std::to_string(index));
  return rows::open_otac(kek_, n, list_id, index, r.col_b(0), r.col_i(1) != 0);
}

Result<std::vector<OtacRecord>> SqliteTx::lowest_unused(ByteView n, std::uint32_t limit) {
  auto r = q("SELECT list_id,idx,key_sealed FROM otacs WHERE n=? AND used=0 ORDER BY list_id,idx LIMIT ?");
  r.b(n).i(limit);
  return collect<OtacRecord>(r, limit, [&](const Query& row) {
    return rows::open_otac(kek_, n, row.col_i(0), row.col_i(1), row.col_b(2), false);
  });
}

Result<std::vector<OtacRecord>> SqliteTx::display_candidates(ByteView n, std::uint32_t per_list, std::uint32_t next_lists) {
  std::vector<OtacRecord> out;
  // Appends up to per_list unused codes of one list after index `after` (-1: from the start).
  auto take = [&](std::int64_t list, std::int64_t after) -> Result<void> {
    auto r = q("SELECT idx,key_sealed FROM otacs WHERE n=? AND list_id=? AND used=0 AND idx>? ORDER BY idx LIMIT ?");
    r.b(n).i(list).i(after).i(per_list);
    auto codes = collect<OtacRecord>(r, per_list, [&](const Query& row) {
      return rows::open_otac(kek_, n, list, row.col_i(0), row.col_b(1), false);
    });
    if (!codes) return codes.error();
    for (auto& c : *codes) out.push_back(std::move(c));
    return {};
  };
  std::int64_t current = 0;  // the list holding the highest consumed code; 0: nothing consumed
  {
    auto r = q(kHighestConsumedSql);
    r.b(n);
    auto row = r.step();
    if (!row) return row.error();
    if (*row) {
      current = r.col_i(0);
      if (auto x = take(current, r.col_i(1)); !x) return x.error();
    }
  }
  std::vector<std::int64_t> later;
  {
    auto r = q("SELECT DISTINCT list_id FROM otacs WHERE n=? AND used=0 AND list_id>? ORDER BY list_id LIMIT ?");
    const std::uint32_t lists = current == 0 ? next_lists + 1 : next_lists;
    r.b(n).i(current).i(lists);
    for (std::uint32_t i = 0; i < lists; ++i) {
      auto row = r.step();
      if (!row) return row.error();
      if (!*row) break;
      later.push_back(r.col_i(0));
    }
  }
  for (auto l : later)
    if (auto x = take(l, -1); !x) return x.error();
  return out;
}

Result<std::uint32_t> SqliteTx::unused_count(ByteView n) {
  auto r = q("SELECT COUNT(*) FROM otacs WHERE n=? AND used=0");
  r.b(n);
  auto row = r.step();
  if (!row) return row.error();
  return static_cast<std::uint32_t>(r.col_i(0));
}

Result<bool> SqliteTx::unused_more_than(ByteView n, std::uint32_t count) {
  auto r = q(kUnusedMoreThanSql);
  r.b(n).i(count);
  auto row = r.step();
  if (!row) return row.error();
  return *row;
}

Result<std::vector<ListInfo>> SqliteTx::lists(ByteView n) {
  auto r = q("SELECT l.list_id,l.state,COALESCE(l.refusal,''),l.created_at,l.state_at,"
             "(SELECT COUNT(*) FROM otacs o WHERE o.n=l.n AND o.list_id=l.list_id),"
             "(SELECT COUNT(*) FROM otacs o WHERE o.n=l.n AND o.list_id=l.list_id AND o.used=0) "
             "FROM lists l WHERE l.n=? ORDER BY l.list_id");
  r.b(n);
  std::vector<ListInfo> out;
  for (int i = 0; i <= 0xFFFF; ++i) {  // list ids are 16 bits
    auto row = r.step();
    if (!row) return row.error();
    if (!*row) break;
    ListInfo l;
    l.id = static_cast<std::uint16_t>(r.col_i(0));
    auto st = rows::list_state(l.id, r.col_i(1));
    if (!st) return st.error();
    l.state = *st;
    l.refusal = r.col_t(2);
    l.created_at = r.col_i(3);
    l.state_at = r.col_i(4);
    l.count = static_cast<std::uint32_t>(r.col_i(5));
    l.unused = static_cast<std::uint32_t>(r.col_i(6));
    out.push_back(std::move(l));
  }
  return out;
}

Result<void> SqliteTx::set_list_state(ByteView n, std::uint16_t list_id, ListState state, std::string_view refusal, UnixTime now) {
  auto r = q("UPDATE lists SET state=?,refusal=?,state_at=? WHERE n=? AND list_id=?");
  r.i(static_cast<std::int64_t>(state)).t(refusal).i(now).b(n).i(list_id);
  if (auto e = r.exec(); !e) return e;
  if (r.changes() != 1) return make_error(Errc::not_found, "no list " + std::to_string(list_id) + " for card " + to_hex(n));
  // refused withdraws the unused codes (used=2); loaded gives withdrawn ones back (a refusal
  // that proved wrong: the card answered another packet of the list OK).
  auto w = state == ListState::refused ? q("UPDATE otacs SET used=2 WHERE n=? AND list_id=? AND used=0")
                                       : q("UPDATE otacs SET used=0 WHERE n=? AND list_id=? AND used=2");
  w.b(n).i(list_id);
  return w.exec();
}

Result<std::vector<ListRepair>> SqliteTx::lists_to_repair(UnixTime now, std::int64_t after, std::uint32_t max_packets,
                                                          std::uint32_t limit) {
  auto r = q(kListsToRepairSql);
  r.i(max_packets).i(after).i(now).i(limit);
  return collect<ListRepair>(r, limit, [](const Query& row) {
    return ListRepair{row.col_b(0), static_cast<std::uint16_t>(row.col_i(1)), static_cast<std::uint32_t>(row.col_i(2))};
  });
}

Result<std::vector<RotationRepair>> SqliteTx::rotations_to_repair(UnixTime now, std::int64_t after,
                                                                  std::uint32_t max_packets, std::uint32_t limit) {
  auto r = q(kRotationsToRepairSql);
  r.i(max_packets).i(after).i(now).i(limit);
  return collect<RotationRepair>(r, limit, [](const Query& row) {
    return RotationRepair{row.col_b(0), static_cast<std::uint8_t>(row.col_i(1)), static_cast<std::uint32_t>(row.col_i(2))};
  });
}

Result<std::vector<KeyPacketRepair>> SqliteTx::key_packets_to_repair(UnixTime now, std::int64_t after,
                                                                     std::uint32_t max_packets, std::uint32_t limit) {
  auto r = q(kKeyPacketsToRepairSql);
  r.i(max_packets).i(after).i(now).i(limit);
  return collect<KeyPacketRepair>(r, limit, [](const Query& row) {
    return KeyPacketRepair{row.col_b(0), row.col_t(1), static_cast<std::uint32_t>(row.col_i(2))};
  });
}

Result<bool> SqliteTx::consume_otac(ByteView n, std::uint16_t list_id, std::uint16_t index, std::string_view txn_id, UnixTime now) {
  // The conditional update is the whole "at most once" mechanism: only one transaction can
  // change used from 0 to 1, whatever process it runs in.
  auto r = q("UPDATE otacs SET used=1,used_at=?,txn_id=? WHERE n=? AND list_id=? AND idx=? AND used=0");
  r.i(now).t(txn_id).b(n).i(list_id).i(index);
  if (auto e = r.exec(); !e) return e.error();
  return r.changes() == 1;
}

Result<std::vector<Bytes>> SqliteTx::card_ids(std::uint32_t limit) {
  auto r = q("SELECT n FROM cards ORDER BY created_at DESC, rowid DESC LIMIT ?");
  r.i(limit);
  return collect<Bytes>(r, limit, [](const Query& row) { return row.col_b(0); });
}

}  // namespace otac::backend::sqlite
