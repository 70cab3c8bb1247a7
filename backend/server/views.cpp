#include "views.hpp"

namespace otac::backend::http {
namespace json = boost::json;

namespace {

const char* list_state_name(ListState s) noexcept {
  switch (s) {
    case ListState::sent: return "sent";
    case ListState::loaded: return "loaded";
    case ListState::refused: return "refused";
  }
  return "unknown";
}

json::array doors_json(const std::vector<DoorPermission>& doors) {
  json::array a;
  for (const auto& d : doors)
    a.push_back(json::object{{"door", d.door}, {"from_minute", d.from_minute}, {"to_minute", d.to_minute}, {"tz", d.tz}});
  return a;
}

}  // namespace

json::object transaction_json(const TransactionRecord& t) {
  json::object o;
  o["txn_id"] = t.txn_id;
  o["card"] = to_hex(t.card);
  o["list"] = t.list_id;
  o["index"] = t.index;
  o["terminal"] = t.terminal_id;
  o["amount_minor"] = t.amount_minor;
  o["currency"] = t.currency;
  if (!t.door.empty()) o["door"] = t.door;
  o["decision"] = decision_name(t.decision);
  o["reason"] = t.reason;
  if (!t.auth_code.empty()) o["auth_code"] = t.auth_code;
  if (!t.arc.empty()) o["arc"] = to_hex(t.arc);
  o["created_at"] = t.created_at;
  o["decided_at"] = t.decided_at;
  if (!t.decided_by.empty()) o["decided_by"] = t.decided_by;
  if (t.expires_at != 0) o["expires_at"] = t.expires_at;
  return o;
}

json::object card_json(const CardSummary& c) {
  json::object o;
  o["n"] = to_hex(c.n);
  o["algorithm"] = c.algorithm == Algorithm::des3 ? "des3" : "aes";
  o["msisdn"] = c.msisdn;
  o["status"] = c.status == CardStatus::active ? "active" : "blocked";
  o["fail_count"] = c.fail_count;
  o["fail_limit"] = c.fail_limit;
  o["threshold"] = c.threshold;
  o["limit_minor"] = c.limit_minor;
  o["review_minor"] = c.review_minor;
  if (c.cash_daily_minor) o["cash_daily_minor"] = *c.cash_daily_minor;
  else o["cash_daily_minor"] = nullptr;  // the backend's cash_card_daily_minor
  o["cash_daily_effective_minor"] = c.cash_daily_effective_minor;
  o["currency"] = c.currency;
  o["doors"] = doors_json(c.doors);
  o["key_version"] = c.key_version;
  o["key_rotation_pending"] = c.key_rotation_pending;
  o["asymmetric"] = c.asymmetric;
  o["list_push_in_flight"] = c.list_push_in_flight;
  json::array la;
  std::uint64_t unused = 0;
  for (const auto& l : c.lists) {
    json::object lo;
    lo["id"] = l.id;
    lo["state"] = list_state_name(l.state);
    lo["count"] = l.count;
    lo["unused"] = l.unused;
    if (!l.refusal.empty()) lo["refusal"] = l.refusal;
    lo["state_at"] = l.state_at;
    unused += l.unused;
    la.push_back(std::move(lo));
  }
  o["unused"] = unused;
  o["lists"] = std::move(la);
  o["signature_key"] = c.keys.signature_key ? "set" : c.keys.signature_key_pending ? "pending" : "none";
  o["server_key_confirmed"] = c.keys.server_key;
  o["sms_queued"] = c.sms_queued;
  if (c.sms_last) {
    const OutboxMessage& m = *c.sms_last;
    o["sms_last"] = json::object{{"id", m.id},
                                 {"attempts", m.attempts},
                                 {"next_attempt_at", m.next_attempt_at},
                                 {"gateway_reply", m.last_reply},
                                 {"created_at", m.created_at}};
  }
  o["created_at"] = c.created_at;
  return o;
}

json::object terminal_json(const TerminalRecord& t) {
  return json::object{{"id", t.id}, {"fingerprint", t.cert_fingerprint}, {"limit_minor", t.limit_minor}, {"enabled", t.enabled}};
}

json::object audit_json(const AuditEntry& e) {
  return json::object{{"seq", e.seq},       {"at", e.at},         {"actor", e.actor},
                      {"action", e.action}, {"detail", e.detail}, {"mac", to_hex(e.mac)}};
}

}  // namespace otac::backend::http
