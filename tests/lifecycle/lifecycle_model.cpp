#include "lifecycle_model.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include "backend_link.hpp"
#include "state.hpp"

namespace otac::lifecycle {
namespace {

namespace be = otac::backend;
using applet::test::Card;
using applet::test::ServiceBackend;
using applet::test::cmd;
using applet::test::pin_block;
using applet::test::put;
using applet::test::kPhone;
using applet::test::kServer;

constexpr const char* kTerminal = "TERM0001";
constexpr std::uint32_t kBackendThreshold = 3;  // the demo's sizes (issue 12): list 10, backend 3, card 2
constexpr std::int64_t kListRepairSeconds = 15;  // an unanswered list goes again after this, doubling: at most 480 s, inside a quiet phase
constexpr int kPollsPerQuiet = 20;                // handset polls in a quiet phase (600 s at 30 s)
constexpr std::uint16_t kCardThreshold = 2;
constexpr std::uint16_t kListSize = 10;
constexpr std::int64_t kCardLimit = 50000, kReview = 20000;
constexpr std::uint64_t kPinLimit = 30000;

const char* act_name(Act a) {
  switch (a) {
    case Act::tap_pos: return "tap_pos";
    case Act::tap_door: return "tap_door";
    case Act::display_code: return "display_code";
    case Act::user_refresh: return "user_refresh";
    case Act::operator_refresh: return "operator_refresh";
    case Act::rotate_key: return "rotate_key";
    case Act::signature_key: return "signature_key";
    case Act::server_key: return "server_key";
    case Act::card_fetch: return "card_fetch";
    case Act::backend_send: return "backend_send";
    case Act::deliver_mt: return "deliver_mt";
    case Act::deliver_mo: return "deliver_mo";
    case Act::drop_mt: return "drop_mt";
    case Act::drop_mo: return "drop_mo";
    case Act::dup_mt: return "dup_mt";
    case Act::dup_mo: return "dup_mo";
    case Act::refuse_packet: return "refuse_packet";
    case Act::restart_backend: return "restart_backend";
    case Act::tap_lost: return "tap_lost";
    case Act::tap_retry: return "tap_retry";
    case Act::terminal_poll: return "terminal_poll";
    case Act::operator_decide: return "operator_decide";
    case Act::block: return "block";
    case Act::unblock: return "unblock";
    case Act::pin_failure: return "pin_failure";
    case Act::quiet: return "quiet";
  }
  return "?";
}

/// A broken invariant, thrown from deep inside a step and caught by the step loop.
struct Broken : std::runtime_error {
  std::string invariant;
  Broken(std::string inv, const std::string& what) : std::runtime_error(what), invariant(std::move(inv)) {}
};

/// What the model saw happen to the current card that an open known bug explains.
struct Evidence {
  bool refused_list = false;           // a list PoR with RSC 07 (card full)
  bool refused_operator_list = false;  // the same for a list an operator asked for
  bool display_no_push = false;        // a display code left the backend at its threshold with nothing pushed
  bool lost = false;                   // a list, card request or PoR was lost, refused, reordered or ignored
  bool unreadable_por = false;         // the backend refused to read a PoR the card sent
  bool retired_key = false;            // the backend refused a card request whose CC is under a retired K
  bool display_window = false;         // a display code lay behind ten or more codes the backend still counts unused
  bool refused_but_loaded = false;     // a list PoR with an RSC for a list the card already holds
};

struct MtPart {
  Bytes udh, payload;
};

/// A concatenation IE (IEI 00) in a UDH without UDHL: ref, total, seq.
std::optional<std::tuple<std::uint8_t, std::uint8_t, std::uint8_t>> concat_of(const Bytes& udh) {
  for (std::size_t i = 0; i + 1 < udh.size(); i += 2u + udh[i + 1]) {
    if (udh[i] == 0x00 && udh[i + 1] == 3 && i + 5 <= udh.size()) return std::make_tuple(udh[i + 2], udh[i + 3], udh[i + 4]);
  }
  return std::nullopt;
}

bool has_iei(const Bytes& udh, std::uint8_t iei) {
  for (std::size_t i = 0; i + 1 < udh.size(); i += 2u + udh[i + 1])
    if (udh[i] == iei) return true;
  return false;
}

Bytes bcd6(std::uint64_t v) {
  Bytes out(6);
  for (int i = 5; i >= 0; --i) {
    const auto lo = v % 10;
    v /= 10;
    const auto hi = v % 10;
    v /= 10;
    out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::string str(be::Decision d) { return be::decision_name(d); }

using Code = std::pair<std::uint16_t, std::uint16_t>;  // list, index

class World {
 public:
  explicit World(const Options& opt) : opt_(opt) {
    be::ServiceConfig cfg = ServiceBackend::config_with(kListSize);
    cfg.default_threshold = kBackendThreshold;
    cfg.list_repair_after = std::chrono::seconds(kListRepairSeconds);
    b_ = std::make_unique<ServiceBackend>(cfg);
    auto s = be::open_sqlite_store(b_->db(), b_->kek);
    if (!s) throw std::runtime_error("inspection store: " + s.error().message);
    inspect_ = std::move(*s);
    if (!b_->svc->register_terminal(be::TerminalRecord{kTerminal, "ab", 0, true}, "soak"))
      throw std::runtime_error("cannot register the terminal");
    enroll();
  }

  Stats stats;

  /// Runs one action and checks the invariants; a failure is returned, never thrown.
  std::optional<Failure> step(const Action& a, std::size_t index) {
    if (opt_.verbose) std::fprintf(stderr, "step %zu: %s %u\n", index, act_name(a.act), a.arg);
    b_->clock += a.act == Act::quiet ? 600 : 1 + a.arg % 20;
    ++stats.steps;
    try {
      // otac-backend's sweep (once a second) expires held transactions past their deadline.
      if (!b_->svc->expire_held(100)) throw std::runtime_error("expire_held");
      // ... and sends again lists, E2, E3 and E4 whose packets went unanswered (protocol.md 6.4).
      if (!b_->svc->repair_lists(100)) throw std::runtime_error("repair_lists");
      if (!b_->svc->repair_rotations(100)) throw std::runtime_error("repair_rotations");
      if (!b_->svc->repair_key_packets(100)) throw std::runtime_error("repair_key_packets");
      apply(a);
      check_step();
      if (a.act == Act::quiet) check_quiet();
    } catch (const Broken& e) {
      if (opt_.verbose) dump_audit();
      if (auto bug = explained_by(e.invariant)) {
        ++stats.retired;
        stats.struck.insert(*bug);
        enroll();
        return std::nullopt;
      }
      return Failure{e.invariant, e.what(), index};
    }
    return std::nullopt;
  }

  // The backend's latest audit entries, oldest first (verbose runs, at a failure).
  void dump_audit() {
    {
      const auto st = card_state();
      std::fprintf(stderr, "  card: last_list %u refresh_pending %d threshold %u outbox %zu\n", st.last_list_id, st.refresh_pending ? 1 : 0,
                   st.threshold, st.outbox.size());
      for (const auto& l : st.lists) std::fprintf(stderr, "  card slot: list %u count %u unused %u\n", l.id, l.count, l.unused());
    }
    auto recent = b_->svc->audit_recent(60);
    if (!recent) return;
    for (auto it = recent->rbegin(); it != recent->rend(); ++it)
      std::fprintf(stderr, "  audit %lld %s %s %s\n", static_cast<long long>(it->at), it->actor.c_str(), it->action.c_str(),
                   it->detail.c_str());
  }

  // For the generator: whether some actions can do anything now.
  bool blocked() const { return blocked_; }
  bool any_held() const { return !awaiting_.empty() || !shown_.empty(); }

 private:
  // ---- set-up ---------------------------------------------------------------------------
  void enroll() {
    ++card_no_;
    card_ = std::make_unique<Card>();
    mt_.clear();
    mo_.clear();
    awaiting_.clear();
    shown_.clear();
    abandoned_.clear();
    operator_lists_.clear();
    ev_ = Evidence{};
    blocked_ = false;
    msisdn_ = "+1555020" + std::to_string(card_no_);
    select();
    need(card_->app.process(cmd(0x00, 0x24, 0x01, 0x80, pin_block("1234"))), "set PIN");
    be::EnrollRequest er;
    er.algorithm = opt_.kind == CardKind::aes ? be::Algorithm::aes128 : be::Algorithm::des3;
    er.msisdn = msisdn_;
    er.limit_minor = kCardLimit;
    er.review_minor = kReview;
    er.doors = {be::DoorPermission{"D1", 0, 1440}, be::DoorPermission{"D2", 8 * 60, 18 * 60}};
    if (opt_.kind == CardKind::p256) {
      auto kp = need(card_->app.process(cmd(0x80, 0x46, 0x02, 0x00, {}, true)), "GENERATE KEY PAIR");
      auto nodes = tlv::parse(kp);
      const tlv::Node* pub = nodes ? tlv::find(*nodes, 0xDF50) : nullptr;
      if (!pub) throw std::runtime_error("GENERATE KEY PAIR without DF50");
      er.public_key = pub->value;
    }
    auto e = b_->svc->enroll_card(er, "soak");
    if (!e) throw std::runtime_error("enroll: " + e.error().message);
    n_ = e->n;
    Bytes extra;
    put(extra, hex("DF4B"), be_bytes(kCardThreshold, 2));
    put(extra, hex("DF4E"), bcd6(kPinLimit));
    put(extra, hex("DF51"), e->ca_point);
    need(card_->app.process(cmd(0x80, 0x10, 0x00, 0x00, applet::test::activation_data(*e, extra), true)), "ACTIVATE");
  }

  Bytes need(const Bytes& rapdu, const char* what) {
    auto r = apdu::parse_response(rapdu);
    if (!r || r->sw != 0x9000) throw std::runtime_error(std::string(what) + " failed");
    return r->data;
  }
  apdu::Response tx(const Bytes& c) {
    auto r = apdu::parse_response(card_->app.process(c));
    if (!r) throw std::runtime_error("unparsable response APDU");
    return *r;
  }
  void select() { need(card_->app.process(hex("00A4040006F04F5441430100")), "SELECT"); }
  bool verify_pin() { return tx(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))).sw == 0x9000; }

  // ---- observation ----------------------------------------------------------------------
  applet::CardState card_state() {
    auto blob = card_->store.load();
    if (!blob) throw std::runtime_error("card storage");
    auto s = applet::decode_state(*blob);
    if (!s) throw std::runtime_error("card state does not decode: " + s.error().message);
    return std::move(*s);
  }
  static std::set<Code> card_unused(const applet::CardState& s) {
    std::set<Code> out;
    for (const auto& l : s.lists)
      if (l.held())
        for (std::uint16_t i = 0; i < l.count; ++i)
          if (!l.is_used(i)) out.insert({l.id, i});
    return out;
  }
  be::CardRecord record() {
    auto c = b_->svc->card(n_);
    if (!c) throw std::runtime_error("card record: " + c.error().message);
    return std::move(*c);
  }
  template <typename F>
  void peek(F&& f) {
    auto r = inspect_->run([&](be::Tx& t) -> Result<void> { return f(t); });
    if (!r) throw std::runtime_error("inspection: " + r.error().message);
  }
  std::set<Code> backend_unused() {
    std::set<Code> out;
    peek([&](be::Tx& t) -> Result<void> {
      auto v = t.lowest_unused(n_, 100000);
      if (!v) return v.error();
      for (const auto& o : *v) out.insert({o.list_id, o.index});
      return {};
    });
    return out;
  }
  bool backend_used(Code c) {
    bool used = false;
    peek([&](be::Tx& t) -> Result<void> {
      auto o = t.otac(n_, c.first, c.second);
      if (!o) return o.error();
      used = o->used;
      return {};
    });
    return used;
  }
  std::uint32_t backend_unused_count() {
    std::uint32_t n = 0;
    peek([&](be::Tx& t) -> Result<void> {
      auto v = t.unused_count(n_);
      if (!v) return v.error();
      n = *v;
      return {};
    });
    return n;
  }
  // kind and ref of the packet with this counter
  std::pair<std::string, std::int64_t> sent_packet(std::uint64_t counter) {
    std::pair<std::string, std::int64_t> out;
    peek([&](be::Tx& t) -> Result<void> {
      auto s = t.ota_sent(n_, counter);
      if (!s) return s.error();
      out = {std::get<0>(*s), std::get<1>(*s)};
      return {};
    });
    return out;
  }

  // ---- invariants -----------------------------------------------------------------------
  void approved(Code c, const std::string& txn) {
    ++stats.approvals;
    auto [it, fresh] = approvals_.emplace(std::make_tuple(n_, c.first, c.second), txn);
    if (!fresh && it->second != txn)
      throw Broken("double_approval", "code " + std::to_string(c.first) + "/" + std::to_string(c.second) + " approved by " +
                                          it->second + " and again by " + txn);
  }

  // Lists with unused codes at the backend (at most two fit on the card).
  std::size_t backend_lists_with_codes() {
    std::size_t n = 0;
    peek([&](be::Tx& t) -> Result<void> {
      auto v = t.lists(n_);
      if (!v) return v.error();
      n = static_cast<std::size_t>(std::count_if(v->begin(), v->end(), [](const be::ListInfo& l) { return l.unused > 0; }));
      return {};
    });
    return n;
  }

  // After the backend consumed a code: it must have pushed a list if the card is at its
  // threshold, unless the card holds codes of two lists (a third would be refused; the push
  // waits for the code that empties a slot, protocol.md 6.4).
  void check_threshold_push(bool display) {
    const auto unused = backend_unused_count();
    if (unused > kBackendThreshold) return;
    const auto rec = record();
    if (rec.list_push_in_flight || rec.status == be::CardStatus::blocked) return;
    if (backend_lists_with_codes() >= 2) return;
    if (display) ev_.display_no_push = true;
    if (display && open(KnownBug::display_no_push)) return;  // explains a later liveness failure
    throw Broken("threshold_push", std::string(display ? "a display code" : "a tap") + " left " + std::to_string(unused) +
                                       " unused codes at the backend (threshold " + std::to_string(kBackendThreshold) +
                                       ") and no list in flight");
  }

  void check_step() {
    const auto s = card_state();
    const auto rec = record();
    const bool known = s.key_version == rec.key_version || (rec.pending_k && s.key_version == rec.pending_version);
    if (!known)
      throw Broken("keys", "card holds K version " + std::to_string(s.key_version) + ", backend has " +
                               std::to_string(rec.key_version) + (rec.pending_k ? " and pending " + std::to_string(rec.pending_version) : ""));
  }

  void check_quiet() {
    ++stats.quiet_phases;
    const auto s = card_state();
    const auto rec = record();
    if (s.key_version != rec.key_version || !std::equal(s.k.begin(), s.k.end(), rec.k.view().begin(), rec.k.view().end()))
      throw Broken("keys", "after quiet delivery the card holds K version " + std::to_string(s.key_version) +
                               " and the backend " + std::to_string(rec.key_version));
    const auto on_card = card_unused(s);
    const auto at_backend = backend_unused();
    for (const auto& c : on_card)
      if (!at_backend.count(c))
        throw Broken("agreement", "the card holds code " + std::to_string(c.first) + "/" + std::to_string(c.second) +
                                      " that the backend does not count as unused");
    for (const auto& c : at_backend)
      if (!on_card.count(c) && !abandoned_.count(c))
        throw Broken("agreement", "the backend counts code " + std::to_string(c.first) + "/" + std::to_string(c.second) +
                                      " as unused; the card never held it or used it (card last list " +
                                      std::to_string(s.last_list_id) + ")");
    if (!blocked_) {
      if (on_card.empty()) throw Broken("liveness", "after quiet delivery the card has no usable code");
      if (s.refresh_pending || rec.list_push_in_flight)
        throw Broken("settled", std::string("after quiet delivery: card refresh_pending=") + (s.refresh_pending ? "1" : "0") +
                                    " backend list_push_in_flight=" + (rec.list_push_in_flight ? "1" : "0"));
    }
    for (const auto& [txn, decision] : shown_) {
      auto t = b_->svc->transaction(txn);
      if (!t) throw std::runtime_error("transaction " + txn + ": " + t.error().message);
      if (t->decision == be::Decision::held && !open(KnownBug::held_never_expires))
        throw Broken("held_expires", "terminal gave up on " + txn + " but the backend still holds it");
      if (t->decision != decision && t->decision != be::Decision::held)
        throw Broken("terminal_agrees", "terminal showed " + str(decision) + " for " + txn + ", the backend has it " + str(t->decision));
    }
  }

  bool open(KnownBug b) const { return opt_.open_bugs.count(b) != 0; }

  // Which open known bug explains a failure of this invariant, given what happened to the card.
  std::optional<KnownBug> explained_by(const std::string& inv) const {
    if (inv == "genuine_declined" && ev_.display_window && open(KnownBug::display_window_stale))
      return KnownBug::display_window_stale;
    if ((inv == "genuine_declined" || inv == "agreement" || inv == "liveness") && ev_.refused_but_loaded &&
        open(KnownBug::refused_after_loaded))
      return KnownBug::refused_after_loaded;
    const bool starving = inv == "liveness" || inv == "settled" || inv == "agreement" || inv == "keys";
    if (!starving) return std::nullopt;
    if (ev_.refused_operator_list && open(KnownBug::operator_refresh_lost)) return KnownBug::operator_refresh_lost;
    if (ev_.refused_list && open(KnownBug::refused_list_stuck)) return KnownBug::refused_list_stuck;
    if (ev_.display_no_push && open(KnownBug::display_no_push) && inv != "keys") return KnownBug::display_no_push;
    if (ev_.lost && open(KnownBug::lost_sms_not_repaired)) return KnownBug::lost_sms_not_repaired;
    if (ev_.unreadable_por && open(KnownBug::unreadable_por_ignored)) return KnownBug::unreadable_por_ignored;
    if (ev_.retired_key && open(KnownBug::request_under_retired_key)) return KnownBug::request_under_retired_key;
    return std::nullopt;
  }

  // ---- actions --------------------------------------------------------------------------
  void apply(const Action& a) {
    switch (a.act) {
      case Act::tap_pos: tap(a.arg, Tap::normal, false); break;
      case Act::tap_door: tap(a.arg, Tap::normal, true); break;
      case Act::tap_lost: tap(a.arg, Tap::lost, false); break;
      case Act::tap_retry: tap(a.arg, Tap::retry, false); break;
      case Act::display_code: display(a.arg); break;
      case Act::user_refresh:
        select();
        if (verify_pin()) tx(hex("80A8000000"));
        break;
      case Act::operator_refresh: {
        // Refused up front (409) exactly while the backend counts codes of two lists
        // (protocol.md 6.4): the card would refuse a third.
        const auto lists = backend_lists_with_codes();
        auto id = b_->svc->refresh_card(n_, "operator");
        if (id) {
          operator_lists_.insert(*id);
          if (lists >= 2) throw Broken("operator_refresh", "an operator refresh was queued while the card holds codes of two lists");
        } else if (id.error().code != Errc::conflict || lists < 2) {
          throw Broken("operator_refresh", "an operator refresh was refused with " + std::to_string(lists) +
                                               " list(s) holding codes: " + id.error().message);
        }
        break;
      }
      case Act::rotate_key: (void)b_->svc->rotate_key(n_, "operator"); break;
      case Act::signature_key: (void)b_->svc->set_signature_key(n_, "operator"); break;
      case Act::server_key: (void)b_->svc->install_server_key(n_, "operator"); break;
      case Act::card_fetch: fetch(); break;
      case Act::backend_send: send(); break;
      case Act::deliver_mt:
        if (!mt_.empty()) deliver_mt(a.arg % mt_.size());
        break;
      case Act::deliver_mo:
        if (!mo_.empty()) deliver_mo(a.arg % mo_.size());
        break;
      case Act::drop_mt:
        if (!mt_.empty()) {
          const auto i = a.arg % mt_.size();
          if (concat_of(mt_[i].udh)) ev_.lost = true;  // only lists need more than one SMS
          mt_.erase(mt_.begin() + static_cast<std::ptrdiff_t>(i));
        }
        break;
      case Act::drop_mo:
        if (!mo_.empty()) {
          ev_.lost = true;
          mo_.erase(mo_.begin() + static_cast<std::ptrdiff_t>(a.arg % mo_.size()));
        }
        break;
      case Act::dup_mt:
        if (!mt_.empty()) mt_.push_back(mt_[a.arg % mt_.size()]);
        break;
      case Act::dup_mo:
        if (!mo_.empty()) mo_.push_back(mo_[a.arg % mo_.size()]);
        break;
      case Act::refuse_packet: refuse(a.arg); break;
      case Act::restart_backend:
        b_->restart();
        ++stats.restarts;
        break;
      case Act::terminal_poll: poll(a.arg); break;
      case Act::operator_decide: decide(a.arg); break;
      case Act::block:
        if (b_->svc->block_card(n_, "operator")) blocked_ = true;
        break;
      case Act::unblock:
        if (b_->svc->unblock_card(n_, "operator")) blocked_ = false;
        break;
      case Act::pin_failure: {
        select();
        if (card_state().pin_tries == 0) {
          Bytes d = pin_block("87654321");
          append(d, pin_block("1234"));
          if (tx(cmd(0x00, 0x2C, 0x00, 0x80, d)).sw != 0x9000) throw Broken("pin", "the PUK did not unblock the PIN");
        } else if (tx(cmd(0x00, 0x20, 0x00, 0x80, pin_block("9999"))).sw >> 4 != 0x63C) {
          throw Broken("pin", "a wrong PIN did not answer 63Cx");
        }
        break;
      }
      case Act::quiet: quiet(); break;
    }
  }

  enum class Tap { normal, lost, retry };

  void tap(std::uint32_t arg, Tap how, bool door) {
    applet::test::Ch ch;
    ch.un = be_bytes(++txn_no_, 8);
    std::uint64_t amount = door ? 0 : (arg >> 4) % 60000;
    ch.amount = bcd6(amount);
    if (door) {
      ch.mode = 0x02;
      ch.door = arg % 3 == 0 ? "D1" : arg % 3 == 1 ? "D2" : "D3";
    }
    const bool pin_ok = card_state().pin_tries > 0;
    if (amount > kPinLimit) {
      if (!pin_ok) return;  // the customer cannot pass the PIN: no code is used
      put(ch.extra, hex("DF34"), pin_block("1234"));
    }
    select();
    const Bytes challenge = ch.encode();
    auto r = tx(cmd(0x80, 0xA0, 0x00, 0x00, challenge, true));
    if (r.sw == 0x6A84) return;  // no code left: declined no_codes at the terminal
    if (r.sw != 0x9000) throw Broken("card_answers", "AUTHENTICATE answered " + to_hex(be_bytes(r.sw, 2)));
    const std::string txn = "L" + std::to_string(card_no_) + "-" + std::to_string(txn_no_);
    auto req = applet::test::request_from_answer(r.data, challenge, txn);
    if (!req) throw Broken("card_answers", "AUTHENTICATE answer without its fields");
    const Code code{req->list_id, req->index};
    if (how == Tap::lost) {  // the card was pulled away before the terminal read the answer
      abandoned_.insert(code);
      return;
    }
    auto ans = b_->svc->authorize(*req, kTerminal);
    if (!ans) throw std::runtime_error("authorize: " + ans.error().message);
    if (how == Tap::retry) {  // the first answer never reached the terminal
      auto again = b_->svc->authorize(*req, kTerminal);
      if (!again) throw std::runtime_error("authorize retry: " + again.error().message);
      if (again->decision != ans->decision || again->auth_code != ans->auth_code || again->arpc != ans->arpc)
        throw Broken("retry_idempotent", txn + " answered " + str(ans->decision) + " then " + str(again->decision));
    }
    finish_tap(txn, code, *ans);
  }

  void finish_tap(const std::string& txn, Code code, const be::AuthAnswer& ans) {
    const bool used = backend_used(code);
    if (!used) abandoned_.insert(code);
    if (ans.reason == "unknown_code" || ans.reason == "code_used" || ans.reason == "bad_cryptogram")
      throw Broken("genuine_declined", "a genuine card answer for code " + std::to_string(code.first) + "/" +
                                           std::to_string(code.second) + " was declined: " + ans.reason);
    if (ans.decision == be::Decision::approved) approved(code, txn);
    if (ans.decision == be::Decision::declined) ++stats.declines;
    if (ans.decision == be::Decision::held) {
      ++stats.held;
      // The terminal counts expires_in from when it sent the request (protocol.md 5.2); its
      // held_wait_limit_s is at least the backend's hold limit, as operations.md asks.
      awaiting_[txn] = b_->clock + ans.expires_in;
    } else if (!ans.arpc.empty()) {
      Bytes c = ans.arpc;
      append(c, ans.arc);
      if (tx(cmd(0x80, 0xA2, 0x00, 0x00, c)).sw != 0x9000) throw Broken("arpc", "the card refused the backend's ARPC for " + txn);
    }
    if (used) check_threshold_push(false);
  }

  void display(std::uint32_t arg) {
    select();
    if (!verify_pin()) return;
    auto r = tx(hex("80A4000000"));
    if (r.sw == 0x6A84) return;
    if (r.sw != 0x9000) throw Broken("card_answers", "DISPLAY answered " + to_hex(be_bytes(r.sw, 2)));
    auto nodes = tlv::parse(r.data);
    const tlv::Node *l = nodes ? tlv::find(*nodes, 0xDF42) : nullptr, *i = nodes ? tlv::find(*nodes, 0xDF43) : nullptr,
                    *d = nodes ? tlv::find(*nodes, 0xDF4D) : nullptr;
    if (!l || !i || !d || l->value.size() != 2 || i->value.size() != 2) throw Broken("card_answers", "DISPLAY answer without its fields");
    const Code code{static_cast<std::uint16_t>(l->value[0] << 8 | l->value[1]), static_cast<std::uint16_t>(i->value[0] << 8 | i->value[1])};
    const std::string txn = "L" + std::to_string(card_no_) + "-" + std::to_string(++txn_no_);
    be::CodeRequest req{txn, n_, std::string(d->value.begin(), d->value.end()), arg % 2 ? "D1" : ""};
    auto ans = b_->svc->verify_display_code(req, kTerminal);
    if (!ans) throw std::runtime_error("verify_display_code: " + ans.error().message);
    const bool used = backend_used(code);
    if (!used) abandoned_.insert(code);
    if (ans->reason == "bad_code") {
      const auto unused = backend_unused();
      ev_.display_window = std::distance(unused.begin(), unused.lower_bound(code)) >= 10;
    }
    if (ans->reason == "bad_code" || ans->reason == "code_used")
      throw Broken("genuine_declined", "a genuine display code for " + std::to_string(code.first) + "/" +
                                           std::to_string(code.second) + " was declined: " + ans->reason);
    if (ans->decision == be::Decision::approved) approved(code, txn);
    if (used) check_threshold_push(true);
  }

  // A terminal waiting on a held transaction. It long-polls (GET) until its deadline, so it
  // sees any decision made before then; at its deadline it stops and cancels (POST
  // .../cancel), showing the cancel's answer, or DECLINED (held_timeout) when the cancel is
  // lost (then the backend's own deadline, one second later, must end the hold). A step
  // here is the terminal's state at the step's time: still waiting, or past its deadline.
  void poll(std::uint32_t arg) {
    if (awaiting_.empty()) return;
    auto it = std::next(awaiting_.begin(), static_cast<std::ptrdiff_t>(arg % awaiting_.size()));
    const std::string txn = it->first;
    const be::UnixTime deadline = it->second;
    auto rec = b_->svc->transaction(txn);
    if (!rec) throw std::runtime_error("transaction " + txn + ": " + rec.error().message);
    if (rec->decision != be::Decision::held && rec->decided_at < deadline) {  // seen by the long poll
      auto t = b_->svc->get_authorization(txn, std::chrono::milliseconds(0));
      if (!t) throw std::runtime_error("get_authorization: " + t.error().message);
      shown_[txn] = t->decision;
      awaiting_.erase(it);
      return;
    }
    if (b_->clock < deadline) return;  // still waiting
    awaiting_.erase(it);
    if (open(KnownBug::held_never_expires) || (arg >> 8) % 4 == 0) {  // the cancel is lost
      if (opt_.verbose) std::fprintf(stderr, "  terminal gives up on %s, its cancel is lost\n", txn.c_str());
      if (rec->decision == be::Decision::approved && rec->decided_at < rec->expires_at) {
        // An operator approved in the second between the terminal's deadline and the
        // backend's, and the cancel that would have reported it was lost: the window
        // protocol.md 5.2 describes (transit time plus at most one second). Counted, not
        // failed; the terminal's shown decision is then not the backend's.
        ++stats.cancel_window;
        return;
      }
      shown_[txn] = be::Decision::declined;
      return;
    }
    auto c = b_->svc->cancel_held(txn, kTerminal);
    if (!c) throw std::runtime_error("cancel_held: " + c.error().message);
    if (opt_.verbose) std::fprintf(stderr, "  terminal gives up on %s, cancel answered %s\n", txn.c_str(), str(c->decision).c_str());
    if (c->decision == be::Decision::held) throw Broken("held_expires", "the backend still holds " + txn + " after the terminal's cancel");
    shown_[txn] = c->decision;
  }

  void decide(std::uint32_t arg) {
    std::vector<std::string> pick;
    if (!open(KnownBug::held_never_expires))  // else only transactions a terminal still waits for
      for (const auto& [txn, shown] : shown_) pick.push_back(txn);
    for (const auto& [txn, deadline] : awaiting_) pick.push_back(txn);
    if (pick.empty()) return;
    const std::string txn = pick[(arg / 2) % pick.size()];
    const bool approve = arg % 2 == 0;
    auto ans = b_->svc->decide_held(txn, approve, "operator");
    if (opt_.verbose)
      std::fprintf(stderr, "  operator %s %s: %s\n", approve ? "approves" : "declines", txn.c_str(),
                   ans ? str(ans->decision).c_str() : ans.error().message.c_str());
    if (!ans) return;  // already decided: refused with a message
    if (ans->decision != be::Decision::approved) return;
    auto rec = b_->svc->transaction(txn);
    if (!rec) throw std::runtime_error("transaction: " + rec.error().message);
    approved({rec->list_id, rec->index}, txn);
    if (auto sh = shown_.find(txn); sh != shown_.end())
      throw Broken("terminal_agrees", "the terminal showed " + str(sh->second) + " for " + txn + "; an operator approved it later");
  }

  // ---- SMS ------------------------------------------------------------------------------
  bool fetch() {
    select();
    bool moved = false;
    for (int i = 0; i < 8; ++i) {
      auto f = tx(hex("8012000000"));
      if (f.sw == 0x6A88) break;
      if (f.sw != 0x9000) throw Broken("card_answers", "FETCH answered " + to_hex(be_bytes(f.sw, 2)));
      auto mo = applet::test::mo_from_fetch(f.data, msisdn_);
      if (!mo) throw Broken("card_answers", "FETCH gave a message that does not parse");
      mo_.push_back(std::move(*mo));
      moved = true;
    }
    return moved;
  }

  bool send() {
    auto due = b_->svc->next_due(100);
    if (!due) throw std::runtime_error("next_due: " + due.error().message);
    for (const auto& m : *due) {
      if (!b_->svc->mark_sent(m.id, "202 Accepted")) throw std::runtime_error("mark_sent");
      if (m.to == msisdn_) mt_.push_back({m.udh, m.payload});  // a retired card's messages go nowhere
    }
    return !due->empty();
  }

  void deliver_mt(std::size_t i) {
    MtPart m = mt_[i];
    if (i != 0 && concat_of(m.udh)) ev_.lost = true;  // a part overtaking another may break a reassembly
    mt_.erase(mt_.begin() + static_cast<std::ptrdiff_t>(i));
    const auto before = card_state().last_list_id;
    auto r = tx(applet::test::envelope(m.udh, m.payload));
    if (card_state().last_list_id != before) ++stats.lists_loaded;
    if (r.sw == 0x9000 && !r.data.empty()) mo_.push_back(be::MoSms{msisdn_, kServer, hex("7100"), r.data});
  }

  void deliver_mo(std::size_t i) {
    be::MoSms m = mo_[i];
    mo_.erase(mo_.begin() + static_cast<std::ptrdiff_t>(i));
    const bool por = has_iei(m.udh, 0x71);
    if (!por && blocked_) ev_.lost = true;  // a blocked card's request is dropped by design
    auto handled = b_->svc->handle_mo_sms(m);
    if (opt_.verbose) std::fprintf(stderr, "  MO %s: %s\n", por ? "PoR" : "request", handled ? "ok" : handled.error().message.c_str());
    if (!handled) {  // refused (e.g. a replayed request): nothing changes
      if (por) ev_.unreadable_por = true;
      if (!por && handled.error().message.find("CC does not verify") != std::string::npos) ev_.retired_key = true;
      return;
    }
    if (!por) return;
    // The PoR's own entry may be followed by what it caused (list_refused, issue_list, ...).
    auto recent = b_->svc->audit_recent(8);
    if (!recent) return;
    for (auto it = recent->rbegin(); it != recent->rend(); ++it)
      if (it->action == "por") {
        on_por(it->detail);
        return;
      }
  }

  // Reads "card=.. counter=C kind=K rsc=R" of the backend's audit entry for a PoR.
  void on_por(const std::string& detail) {
    auto value = [&](const std::string& key) {
      const auto p = detail.find(key + "=");
      if (p == std::string::npos) return std::string();
      const auto e = detail.find(' ', p);
      return detail.substr(p + key.size() + 1, e == std::string::npos ? std::string::npos : e - p - key.size() - 1);
    };
    if (value("kind") != "list" || value("rsc") == "0") return;
    const auto [kind, ref] = sent_packet(std::stoull(value("counter")));
    if (card_state().last_list_id >= ref) ev_.refused_but_loaded = true;
    if (value("rsc") != "7") {
      ev_.lost = true;
      return;
    }
    if (operator_lists_.count(static_cast<std::uint16_t>(ref))) ev_.refused_operator_list = true;
    else ev_.refused_list = true;
  }

  // The card refuses a whole packet in flight (it never sees it): a PoR with RSC 01..0C.
  void refuse(std::uint32_t arg) {
    if (mt_.empty()) return;
    const auto first = a_index(arg);
    std::vector<std::size_t> idx{first};
    Bytes packet = mt_[first].payload;
    if (auto c = concat_of(mt_[first].udh)) {
      const auto [ref, total, seq] = *c;
      std::vector<std::optional<std::size_t>> parts(total);
      for (std::size_t i = 0; i < mt_.size(); ++i)
        if (auto o = concat_of(mt_[i].udh); o && std::get<0>(*o) == ref && std::get<1>(*o) == total && std::get<2>(*o) >= 1 &&
                                              std::get<2>(*o) <= total && !parts[std::get<2>(*o) - 1u])
          parts[std::get<2>(*o) - 1u] = i;
      packet.clear();
      idx.clear();
      for (const auto& p : parts) {
        if (!p) return;  // not all parts in flight
        append(packet, mt_[*p].payload);
        idx.push_back(*p);
      }
      (void)seq;
    }
    auto peek_h = ota::peek_command(packet);
    if (!peek_h) return;
    const auto rec = record();
    std::optional<ota::CardKeys> keys;
    std::optional<ota::Command> opened;
    for (const SecretBytes* k : {&rec.k, rec.pending_k ? &*rec.pending_k : nullptr}) {
      if (!k) continue;
      auto ck = ota::derive_card_keys(*k, n_, rec.algorithm == be::Algorithm::aes128 ? ota::CardAlgorithm::aes128 : ota::CardAlgorithm::des3_2key);
      if (!ck) continue;
      auto o = ota::open_command(packet, ck->kic, ck->kid);
      if (o) { keys = std::move(*ck); opened = std::move(*o); break; }
    }
    if (!opened) return;  // under a key the backend no longer holds: leave it in flight
    const auto rsc = static_cast<ota::Rsc>(1 + (arg >> 8) % 12);
    const auto& h = peek_h->header;
    auto por = ota::build_response(ota::PorSecurity{h.spi, h.kic, h.kid}, ota::Response{h.tar, opened->counter, 0, rsc, {}},
                                   keys->kic, keys->kid);
    if (!por) throw std::runtime_error("build_response");
    // Every copy of the packet goes too: a card that answered a packet answers its duplicates
    // RSC 02 (its counter is stored whatever the inner commands did), so none of them could
    // load what this PoR says was refused.
    const std::set<std::size_t> chosen(idx.begin(), idx.end());
    for (std::size_t i = 0; i < mt_.size(); ++i)
      if (!chosen.count(i) && std::any_of(chosen.begin(), chosen.end(), [&](std::size_t c) {
            return mt_[c].udh == mt_[i].udh && mt_[c].payload == mt_[i].payload;
          }))
        idx.push_back(i);
    std::sort(idx.rbegin(), idx.rend());
    for (auto i : idx) mt_.erase(mt_.begin() + static_cast<std::ptrdiff_t>(i));
    ev_.lost = true;  // a refused list is lost; so is the E5 list behind a refused E4
    mo_.push_back(be::MoSms{msisdn_, kServer, hex("7100"), *por});
  }
  std::size_t a_index(std::uint32_t arg) const { return arg % mt_.size(); }

  // Ten minutes without loss: the handset polls the card (20 empty FETCHes at 30 s while a
  // request is pending: the card asks again, protocol.md 2.4.1) and every SMS is delivered.
  void quiet() {
    int polls = 0;
    for (int round = 0; round < 200; ++round) {
      bool moved = fetch();
      while (!mo_.empty()) { deliver_mo(0); moved = true; }
      moved = send() || moved;
      while (!mt_.empty()) { deliver_mt(0); moved = true; }
      if (!moved && polls < kPollsPerQuiet && card_state().refresh_pending) {
        ++polls;
        moved = true;
      }
      if (!moved) return;
    }
    throw Broken("quiet", "SMS kept flowing for 200 rounds of quiet delivery");
  }

  Options opt_;
  std::unique_ptr<ServiceBackend> b_;
  std::unique_ptr<be::Store> inspect_;
  std::unique_ptr<Card> card_;
  Bytes n_;
  std::string msisdn_;
  int card_no_ = 0;
  std::uint64_t txn_no_ = 0;
  bool blocked_ = false;
  std::deque<MtPart> mt_;
  std::deque<be::MoSms> mo_;
  std::map<std::string, be::UnixTime> awaiting_;  // held, the terminal still waits: txn -> its deadline
  std::map<std::string, be::Decision> shown_;     // held, then decided at the terminal: what it showed
  std::set<Code> abandoned_;             // used on the card, never consumed at the backend
  std::set<std::uint16_t> operator_lists_;
  std::map<std::tuple<Bytes, std::uint16_t, std::uint16_t>, std::string> approvals_;
  Evidence ev_;
};

// Action weights of the generator (per mille of a step, roughly).
struct Weight {
  Act act;
  int w;
};
constexpr Weight kWeights[] = {
    {Act::tap_pos, 140},        {Act::tap_door, 40},      {Act::display_code, 50},   {Act::user_refresh, 15},
    {Act::operator_refresh, 8}, {Act::rotate_key, 8},     {Act::signature_key, 4},   {Act::server_key, 4},
    {Act::card_fetch, 80},      {Act::backend_send, 80},  {Act::deliver_mt, 150},    {Act::deliver_mo, 100},
    {Act::drop_mt, 12},         {Act::drop_mo, 12},       {Act::dup_mt, 10},         {Act::dup_mo, 10},
    {Act::refuse_packet, 8},    {Act::restart_backend, 5}, {Act::tap_lost, 15},      {Act::tap_retry, 20},
    {Act::terminal_poll, 40},   {Act::operator_decide, 20}, {Act::block, 3},         {Act::unblock, 30},
    {Act::pin_failure, 10},     {Act::quiet, 5},
};

Act draw(std::mt19937_64& rng, const World& w) {
  int total = 0;
  for (const auto& x : kWeights) total += x.w;
  for (int guard = 0; guard < 100; ++guard) {
    int r = static_cast<int>(rng() % static_cast<std::uint64_t>(total));
    for (const auto& x : kWeights) {
      if (r < x.w) {
        if (x.act == Act::unblock && !w.blocked()) break;
        if ((x.act == Act::operator_decide || x.act == Act::terminal_poll) && !w.any_held()) break;
        return x.act;
      }
      r -= x.w;
    }
  }
  return Act::tap_pos;
}

Outcome execute(const Options& opt, const std::vector<Action>* script, std::size_t steps, double seconds) {
  Outcome out;
  World w(opt);
  std::mt19937_64 rng(opt.seed);
  const auto start = std::chrono::steady_clock::now();
  const std::size_t n = script ? script->size() : steps;
  std::size_t since_quiet = 0;
  for (std::size_t i = 0; i < n; ++i) {
    Action a;
    if (script) {
      a = (*script)[i];
    } else {
      a.act = ++since_quiet >= opt.quiet_every ? Act::quiet : draw(rng, w);
      a.arg = static_cast<std::uint32_t>(rng());
      if (seconds > 0 && (i & 255) == 0 &&
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > seconds)
        break;
    }
    if (a.act == Act::quiet) since_quiet = 0;
    out.actions.push_back(a);
    if (auto f = w.step(a, i)) {
      out.failure = f;
      break;
    }
  }
  out.stats = w.stats;
  return out;
}

}  // namespace

std::set<KnownBug> all_known_bugs() {
  return {};
}

const char* bug_name(KnownBug b) {
  switch (b) {
    case KnownBug::refused_list_stuck: return "refused_list_stuck";
    case KnownBug::operator_refresh_lost: return "operator_refresh_lost";
    case KnownBug::display_no_push: return "display_no_push";
    case KnownBug::held_never_expires: return "held_never_expires";
    case KnownBug::lost_sms_not_repaired: return "lost_sms_not_repaired";
    case KnownBug::unreadable_por_ignored: return "unreadable_por_ignored";
    case KnownBug::display_window_stale: return "display_window_stale";
    case KnownBug::request_under_retired_key: return "request_under_retired_key";
    case KnownBug::refused_after_loaded: return "refused_after_loaded";
  }
  return "?";
}

Outcome run(const Options& opt, std::size_t steps, double seconds) { return execute(opt, nullptr, steps, seconds); }

Outcome replay(const Options& opt, const std::vector<Action>& actions) { return execute(opt, &actions, 0, 0); }

std::vector<Action> shrink(const Options& opt, const std::vector<Action>& actions, const std::string& invariant,
                           double seconds) {
  const auto start = std::chrono::steady_clock::now();
  auto fails = [&](const std::vector<Action>& v) {
    auto o = replay(opt, v);
    return o.failure && o.failure->invariant == invariant;
  };
  auto out_of_time = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > seconds;
  };
  std::vector<Action> cur = actions;
  // ddmin (Zeller): try dropping each of n chunks; on success keep the rest, else refine.
  std::size_t chunks = 2;
  while (cur.size() >= 2 && !out_of_time()) {
    const std::size_t size = (cur.size() + chunks - 1) / chunks;
    bool reduced = false;
    for (std::size_t c = 0; c < chunks && !out_of_time(); ++c) {
      const std::size_t lo = c * size, hi = std::min(cur.size(), lo + size);
      if (lo >= hi) continue;
      std::vector<Action> rest(cur.begin(), cur.begin() + static_cast<std::ptrdiff_t>(lo));
      rest.insert(rest.end(), cur.begin() + static_cast<std::ptrdiff_t>(hi), cur.end());
      if (fails(rest)) {
        cur = std::move(rest);
        chunks = std::max<std::size_t>(chunks - 1, 2);
        reduced = true;
        break;
      }
    }
    if (!reduced) {
      if (chunks >= cur.size()) break;
      chunks = std::min(cur.size(), chunks * 2);
    }
  }
  // The failure is found at the last action; anything after it was already cut by ddmin.
  return cur;
}

std::string to_source(const std::vector<Action>& actions) {
  std::ostringstream s;
  s << "{";
  for (std::size_t i = 0; i < actions.size(); ++i)
    s << (i ? ", " : "") << (i % 4 == 0 ? "\n    " : "") << "{Act::" << act_name(actions[i].act) << ", " << actions[i].arg << "u}";
  s << "}";
  return s.str();
}

std::string describe(const Options& opt, const Failure& f, const std::vector<Action>& shrunk) {
  std::ostringstream s;
  s << "lifecycle invariant '" << f.invariant << "' broken at step " << f.step << " (seed " << opt.seed << ", card "
    << (opt.kind == CardKind::des3 ? "des3" : opt.kind == CardKind::aes ? "aes" : "p256") << ", open bugs:";
  for (auto b : opt.open_bugs) s << " " << bug_name(b);
  s << "): " << f.detail << "\nshrunk to " << shrunk.size() << " actions; replay them with lifecycle::replay(options, "
    << to_source(shrunk) << ")\n";
  return s.str();
}

}  // namespace otac::lifecycle
