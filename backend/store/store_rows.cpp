#include "store_rows.hpp"

#include "otac/common/crypto.hpp"

namespace otac::backend::rows {

Bytes ad(std::string_view kind, ByteView n, std::int64_t list, std::int64_t index) {
  Bytes a = to_bytes(kind);
  a.push_back(0);
  append(a, n);
  if (list >= 0) { append(a, be_bytes(static_cast<std::uint64_t>(list), 2)); append(a, be_bytes(static_cast<std::uint64_t>(index), 2)); }
  return a;
}

Bytes audit_mac(const Kek& kek, ByteView prev, std::int64_t seq, UnixTime at, std::string_view actor,
                std::string_view action, std::string_view detail) {
  Bytes in(prev.begin(), prev.end());
  append(in, be_bytes(static_cast<std::uint64_t>(seq), 8));
  append(in, be_bytes(static_cast<std::uint64_t>(at), 8));
  for (auto s : {actor, action, detail}) { append(in, be_bytes(s.size(), 4)); append(in, as_bytes(s)); }
  return kek.audit_mac(in);
}

Result<Bytes> check_audit_entry(const Kek& kek, ByteView prev, std::int64_t expect, const AuditEntry& e) {
  if (e.seq != expect) return make_error(Errc::bad_mac, "audit log entry " + std::to_string(expect) + " is missing");
  Bytes mac = audit_mac(kek, prev, expect, e.at, e.actor, e.action, e.detail);
  if (!ct_equal(mac, e.mac)) return make_error(Errc::bad_mac, "audit log entry " + std::to_string(expect) + " was modified");
  return mac;
}

Result<std::optional<SecretBytes>> open_optional(const Kek& kek, bool is_null, ByteView sealed, ByteView ad) {
  if (is_null) return std::optional<SecretBytes>{};
  auto k = kek.open(sealed, ad);
  if (!k) return k.error();
  return std::optional<SecretBytes>(std::move(*k));
}

Result<OtacRecord> open_otac(const Kek& kek, ByteView n, std::int64_t list_id, std::int64_t index, ByteView sealed, bool used) {
  auto k = kek.open(sealed, ad("otac", n, list_id, index));
  if (!k) return k.error();
  return OtacRecord{static_cast<std::uint16_t>(list_id), static_cast<std::uint16_t>(index), std::move(*k), used};
}

Result<ListState> list_state(std::int64_t list_id, std::int64_t stored) {
  if (stored < 0 || stored > 2)
    return make_error(Errc::bad_value, "list " + std::to_string(list_id) + " has an unknown state " + std::to_string(stored));
  return static_cast<ListState>(stored);
}

}  // namespace otac::backend::rows
