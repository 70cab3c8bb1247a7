#include "terminal/backend_json.hpp"

#include <boost/json.hpp>

namespace otac::terminal {
namespace json = boost::json;

namespace {

Error bad(std::string msg) { return make_error(Errc::bad_value, "backend answer: " + std::move(msg)); }

// A string member; nullptr when absent, error when present with another type.
Result<const json::string*> opt_str(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (!v) return static_cast<const json::string*>(nullptr);
  if (!v->is_string()) return bad(std::string("\"") + key + "\" is not a string");
  return &v->get_string();
}

Result<Bytes> hex_member(const json::object& o, const char* key, std::size_t len) {
  auto s = opt_str(o, key);
  if (!s) return s.error();
  if (!*s) return Bytes{};
  auto b = from_hex(std::string_view((*s)->data(), (*s)->size()));
  if (!b || b->size() != len)
    return bad(std::string("\"") + key + "\" must be " + std::to_string(2 * len) + " hex digits");
  return std::move(*b);
}

}  // namespace

Result<BackendAnswer> parse_answer(std::string_view text, bool require_arpc) {
  boost::system::error_code ec;
  // Bounded depth and no comments: the answer is a flat object.
  json::parse_options opt;
  opt.max_depth = 8;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec, {}, opt);
  if (ec) return bad("not JSON (" + ec.message() + ")");
  if (!v.is_object()) return bad("not a JSON object");
  const auto& o = v.get_object();
  BackendAnswer a;
  auto txn = opt_str(o, "txn_id");
  if (!txn) return txn.error();
  if (!*txn || (*txn)->empty() || (*txn)->size() > 64) return bad("\"txn_id\" missing or not 1..64 characters");
  a.txn_id.assign((*txn)->data(), (*txn)->size());
  auto dec = opt_str(o, "decision");
  if (!dec) return dec.error();
  if (!*dec) return bad("\"decision\" missing");
  const std::string_view d((*dec)->data(), (*dec)->size());
  if (d == "approved") a.decision = Decision::approved;
  else if (d == "declined") a.decision = Decision::declined;
  else if (d == "held") a.decision = Decision::held;
  else return bad("unknown decision \"" + std::string(d.substr(0, 32)) + "\"");
  auto reason = opt_str(o, "reason");
  if (!reason) return reason.error();
  if (!*reason || (*reason)->size() > 64) return bad("\"reason\" missing or longer than 64 characters");
  a.reason.assign((*reason)->data(), (*reason)->size());
  auto code = opt_str(o, "auth_code");
  if (!code) return code.error();
  if (*code) {
    if ((*code)->empty() || (*code)->size() > 12) return bad("\"auth_code\" must be 1..12 characters");
    for (const char c : **code)
      if (c < 0x21 || c > 0x7E) return bad("\"auth_code\" holds a non-printable character");
    a.auth_code.assign((*code)->data(), (*code)->size());
  }
  auto arc = hex_member(o, "arc", 2);
  if (!arc) return arc.error();
  a.arc = std::move(*arc);
  auto arpc = hex_member(o, "arpc", 8);
  if (!arpc) return arpc.error();
  a.arpc = std::move(*arpc);
  if (const auto* e = o.if_contains("expires_in"); e && a.decision == Decision::held) {
    // The backend's deadline as time left (protocol.md §5.2): no clock needs to agree.
    if (!e->is_int64() || e->get_int64() < 0 || e->get_int64() > 86400) return bad("\"expires_in\" must be an integer 0..86400");
    a.expires_in = static_cast<std::uint32_t>(e->get_int64());
  }
  if (a.decision == Decision::approved) {
    // An approval the card cannot check is no approval.
    if (a.auth_code.empty()) return bad("approved without \"auth_code\"");
    if (a.arc != Bytes{0x30, 0x30}) return bad("approved with an ARC other than 3030");
    if (require_arpc && a.arpc.empty()) return bad("approved without \"arpc\"");
  }
  if (a.decision != Decision::approved && a.arc == Bytes{0x30, 0x30})
    return bad("ARC 3030 (approved) with decision \"" + std::string(d) + "\"");
  return a;
}

std::string auth_request_body(std::string_view txn_id, ByteView card, std::uint16_t list_id,
                              std::uint16_t index, std::uint16_t atc, std::uint8_t pin_state,
                              ByteView challenge, ByteView cryptogram) {
  json::object o;
  o["txn_id"] = json::string_view(txn_id.data(), txn_id.size());
  o["card"] = to_hex(card);
  o["list"] = list_id;
  o["index"] = index;
  o["atc"] = atc;
  o["pin_state"] = pin_state;
  o["challenge"] = to_hex(challenge);
  o["cryptogram"] = to_hex(cryptogram);
  return json::serialize(o);
}

std::string code_request_body(std::string_view txn_id, ByteView card, std::string_view code,
                              std::string_view door) {
  json::object o;
  o["txn_id"] = json::string_view(txn_id.data(), txn_id.size());
  o["card"] = to_hex(card);
  o["code"] = json::string_view(code.data(), code.size());
  if (!door.empty()) o["door"] = json::string_view(door.data(), door.size());
  return json::serialize(o);
}

std::string error_summary(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(body.data(), body.size()), ec);
  if (!ec && v.is_object()) {
    const auto& o = v.get_object();
    std::string out;
    if (const auto* e = o.if_contains("error"); e && e->is_string()) out = std::string(e->get_string());
    if (const auto* m = o.if_contains("message"); m && m->is_string())
      out += (out.empty() ? "" : ": ") + std::string(m->get_string());
    if (!out.empty()) return out.substr(0, 300);
  }
  std::string s(body.substr(0, 200));
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return s;
}

}  // namespace otac::terminal
