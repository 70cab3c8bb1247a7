// The outcome report's JSON (POST /v1/outcomes body, and the queue's file format).
#include <boost/json.hpp>

#include "terminal/outcome_queue.hpp"

namespace otac::terminal {
namespace json = boost::json;

namespace {

Error bad(std::string msg) { return make_error(Errc::bad_value, "outcome report: " + std::move(msg)); }

bool txn_chars(std::string_view s) {
  if (s.empty() || s.size() > 64 || s == "." || s == "..") return false;
  for (const char c : s) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' ||
                    c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string outcome_body(const OutcomeReport& r) {
  json::object o;
  o["txn_id"] = r.txn_id;
  o["outcome"] = r.outcome;
  o["handed_minor"] = r.handed_minor;
  return json::serialize(o);
}

Result<OutcomeReport> parse_outcome_report(std::string_view text) {
  if (text.size() > 1024) return bad("longer than 1024 bytes");
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = 4;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec, {}, opt);
  if (ec) return bad("not JSON (" + ec.message() + ")");
  if (!v.is_object()) return bad("not a JSON object");
  const auto& o = v.get_object();
  for (const auto& kv : o)
    if (kv.key() != "txn_id" && kv.key() != "outcome" && kv.key() != "handed_minor")
      return bad("unknown field \"" + std::string(kv.key().substr(0, 32)) + "\"");
  const auto* txn = o.if_contains("txn_id");
  const auto* kind = o.if_contains("outcome");
  const auto* handed = o.if_contains("handed_minor");
  if (!txn || !txn->is_string() || !txn_chars(std::string_view(txn->get_string())))
    return bad("\"txn_id\" must be 1 to 64 characters of A-Z a-z 0-9 - _ . :");
  if (!kind || !kind->is_string()) return bad("\"outcome\" missing");
  const std::string_view k(kind->get_string());
  if (k != "completed" && k != "reversed" && k != "not_opened" && k != "voided")
    return bad("\"outcome\" must be completed, reversed, not_opened or voided");
  if (!handed || !handed->is_int64() || handed->get_int64() < 0 || handed->get_int64() > 999'999'999'999)
    return bad("\"handed_minor\" must be a whole number from 0 to 999999999999");
  return OutcomeReport{std::string(txn->get_string()), std::string(k), handed->get_int64()};
}

}  // namespace otac::terminal
