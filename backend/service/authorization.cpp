// The Service's authorizations: taps (authorize), typed display codes, and held transactions
// until an operator or the deadline decides them (protocol.md 3, 4 and 5.2).
#include "service.hpp"

#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <ctime>

#include "challenge.hpp"
#include "decline_limit.hpp"
#include "ota_push.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/protocol.hpp"
#include "service_detail.hpp"

namespace otac::backend {
namespace detail {



// The card algorithm's 8-byte MAC (protocol.md §3): ISO 9797-1 alg 3 pad 2, or AES-CMAC/8.
Result<CardMac> CardMac::make(Algorithm alg, const SecretBytes& key) {
  if (alg == Algorithm::des3) {
    auto k = crypto::MacAlg3Key::make(key);
    if (!k) return std::move(k).error();
    return CardMac(std::move(*k));
  }
  auto k = crypto::AesCmacKey::make(key);
  if (!k) return std::move(k).error();
  return CardMac(std::move(*k));
}

Result<Bytes> CardMac::mac(ByteView data) {
  if (auto* des = std::get_if<crypto::MacAlg3Key>(&k_)) return des->mac(data, crypto::Padding::method2, 8);
  auto m = std::get<crypto::AesCmacKey>(k_).mac(data);
  if (!m) return m.error();
  m->resize(8);
  return m;
}

Result<Bytes> mac8(Algorithm alg, const SecretBytes& key, ByteView data) {
  auto k = CardMac::make(alg, key);
  if (!k) return std::move(k).error();
  return k->mac(data);
}

SecretBytes new_key(Algorithm alg) {
  SecretBytes k = crypto::random_secret(16);
  if (alg == Algorithm::des3) crypto::set_des_parity(k.data(), k.size());
  return k;
}

namespace {

// Random bytes for approval codes, drawn 256 at a time per thread: each RAND_bytes call takes
// a fork check (a getpid system call) and a DRBG round, and the committer makes a code for
// every approval. A byte is wiped as it is handed out, the rest when the thread ends. A fork
// (the backend does not fork, a test harness may) counts up a generation in the child, and a
// pool of an older generation is dropped, so parent and child never hand out the same bytes.
std::atomic<unsigned> g_fork_generation{0};

class CodeBytes {
 public:
  CodeBytes() {
    static const int registered = ::pthread_atfork(nullptr, nullptr, [] { g_fork_generation.fetch_add(1); });
    (void)registered;
  }
  CodeBytes(const CodeBytes&) = delete;
  CodeBytes& operator=(const CodeBytes&) = delete;
  ~CodeBytes() { secure_zero(buf_.data(), buf_.size()); }

  std::uint8_t next() {
    const unsigned generation = g_fork_generation.load(std::memory_order_relaxed);
    if (pos_ == buf_.size() || generation != generation_) {
      Bytes fresh = crypto::random_bytes(buf_.size());
      std::copy(fresh.begin(), fresh.end(), buf_.begin());
      secure_zero(fresh.data(), fresh.size());
      pos_ = 0;
      generation_ = generation;
    }
    const std::uint8_t b = buf_[pos_];
    buf_[pos_++] = 0;
    return b;
  }

 private:
  std::array<std::uint8_t, 256> buf_{};
  std::size_t pos_ = 256;
  unsigned generation_ = 0;
};

}  // namespace

std::string random_digits(std::size_t n) {
  thread_local CodeBytes bytes;
  std::string s;
  // Rejection sampling keeps the digits uniform; bounded because each byte < 250 has p = 0.977.
  for (int guard = 0; s.size() < n && guard < 16000; ++guard) {
    const std::uint8_t b = bytes.next();
    if (b < 250) s.push_back(static_cast<char>('0' + b % 10));
  }
  return s;
}

bool valid_txn_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7F; });
}

Bytes request_hash(std::string_view kind, std::initializer_list<ByteView> parts) {
  // kind || (length as 4 bytes big-endian || part)..., built in one allocation.
  std::size_t size = kind.size();
  for (auto p : parts) size += 4 + p.size();
  Bytes in;
  in.reserve(size);
  in.assign(kind.begin(), kind.end());
  for (auto p : parts) {
    append_be(in, p.size(), 4);
    append(in, p);
  }
  return crypto::sha256(in);
}

AuthAnswer answer_of(const TransactionRecord& t, UnixTime now) {
  AuthAnswer a{t.txn_id, t.decision, t.reason, t.auth_code, t.arc, t.arpc, 0, 0};
  if (t.decision == Decision::held) {
    a.expires_at = t.expires_at;
    // The store's clock has whole seconds: at "now" up to one more second may already have
    // passed, so one is taken off. A terminal counting this from before its request never
    // waits past the deadline (protocol.md §5.2).
    a.expires_in = std::max<std::int64_t>(0, t.expires_at - now - 1);
  }
  return a;
}

// Records the final decision of a held transaction inside the caller's store transaction: a
// fresh ARPC over the final ARC (a terminal that relays the decision to a card still in the
// field gets a CONFIRM the card can verify), the conditional update, and an audit entry.
// False (and rec re-read) when the transaction was no longer held: someone decided it first.
Result<bool> settle_held(Tx& tx, TransactionRecord& rec, Decision d, std::string reason, std::string_view actor,
                         std::string_view action, UnixTime decided_at, UnixTime now) {
  auto card = tx.card(rec.card);
  if (!card) return card.error();
  auto code = tx.otac(rec.card, rec.list_id, rec.index);
  if (!code) return code.error();
  TransactionRecord next = rec;
  next.decision = d;
  next.reason = std::move(reason);
  next.arc = d == Decision::approved ? kArcApproved : kArcDeclined;
  next.auth_code = d == Decision::approved ? random_digits(6) : std::string{};
  next.decided_at = decided_at;
  next.decided_by = std::string(actor);
  auto arpc = mac8(card->algorithm, code->key, protocol::arpc_input(next.cryptogram, next.arc));
  if (!arpc) return arpc.error();
  next.arpc = std::move(*arpc);
  auto won = tx.decide_held_transaction(next);
  if (!won) return won.error();
  if (!*won) {
    auto again = tx.transaction(rec.txn_id);
    if (!again) return again.error();
    rec = std::move(*again);
    return false;
  }
  auto a = tx.audit(now, actor, action, "txn=" + next.txn_id + " decision=" + decision_name(d) + " reason=" + next.reason);
  if (!a) return a.error();
  rec = std::move(next);
  return true;
}

// ---- what authorize and verify_display_code share ----

// The answer already given to this txn_id (a retry: the same answer, idempotent), or nullopt
// for a new transaction. A txn_id reused with a different request is refused. `fresh` is set
// when the earlier transaction was held and this read expired it (protocol.md 5.2), so the
// caller counts the new decision.

// The registered, enabled terminal with this id.
Result<TerminalRecord> enabled_terminal(Tx& tx, std::string_view id) {
  auto term = tx.terminal(id);
  if (!term) {
    if (term.error().code == Errc::not_found) return make_error(Errc::state, "terminal " + std::string(id) + " is not registered");
    return term.error();
  }
  if (!term->enabled) return make_error(Errc::state, "terminal " + std::string(id) + " is disabled");
  return term;
}

// A new transaction, declined until a rule approves or holds it.
TransactionRecord new_transaction(const std::string& txn_id, ByteView hash, ByteView card, std::string_view terminal_id,
                                  UnixTime now) {
  TransactionRecord rec;
  rec.txn_id = txn_id;
  rec.request_hash.assign(hash.begin(), hash.end());
  rec.card.assign(card.begin(), card.end());
  rec.terminal_id = std::string(terminal_id);
  rec.created_at = now;
  rec.decided_at = now;
  rec.decision = Decision::declined;
  rec.arc = kArcDeclined;
  return rec;
}

// A wrong cryptogram or display code: counts toward blocking the card, which is audited
// when it happens. The code is not burnt: anyone who knows N, list and index could otherwise
// destroy codes.
Result<void> count_failure(Tx& tx, CardRecord& card, UnixTime now, std::string_view what) {
  if (auto k = with_keys(tx, card); !k) return k;
  ++card.fail_count;
  const bool blocks = card.status != CardStatus::blocked && card.fail_count >= card.fail_limit;
  if (blocks) card.status = CardStatus::blocked;
  if (auto x = tx.update_card(card); !x) return x;
  if (!blocks) return {};
  auto a = tx.audit(now, "system", "block", "card=" + to_hex(card.n) + " too many " + std::string(what));
  if (!a) return a.error();
  return {};
}

// A genuine code ends a run of failures.
Result<void> reset_failures(Tx& tx, CardRecord& card) {
  if (card.fail_count == 0) return {};
  if (auto k = with_keys(tx, card); !k) return k;
  card.fail_count = 0;
  return tx.update_card(card);
}

// Stores the decided (or held) transaction with its audit entry; the terminal's answer.
Result<AuthAnswer> record_transaction(Tx& tx, const TransactionRecord& rec, std::string_view terminal_id, std::string_view action,
                                      const std::string& extra, UnixTime now) {
  if (auto x = tx.insert_transaction(rec); !x) return x.error();
  auto a = tx.audit(now, terminal_id, action,
                    "txn=" + rec.txn_id + " card=" + to_hex(rec.card) + extra + " decision=" + decision_name(rec.decision) +
                        " reason=" + rec.reason);
  if (!a) return a.error();
  return answer_of(rec, now);
}

// A held transaction whose deadline has passed is declined (held_timeout) before anyone reads
// or decides it, so no operator can approve what the terminal already showed as declined.
// True when this call expired it.
Result<bool> expire_if_due(Tx& tx, TransactionRecord& rec, UnixTime now) {
  if (rec.decision != Decision::held || now < rec.expires_at) return false;
  return settle_held(tx, rec, Decision::declined, "held_timeout", "system", "expire_held", rec.expires_at, now);
}

Result<TransactionRecord> transaction_now(Tx& tx, std::string_view txn_id, UnixTime now, bool& expired) {
  expired = false;
  auto rec = tx.transaction(txn_id);
  if (!rec) return rec.error();
  auto e = expire_if_due(tx, *rec, now);
  if (!e) return e.error();
  expired = *e;
  return rec;
}

Result<std::optional<AuthAnswer>> earlier_answer(Tx& tx, const std::string& txn_id, ByteView hash, UnixTime now, bool& fresh) {
  fresh = false;
  auto prev = tx.transaction(txn_id);
  if (!prev) {
    if (prev.error().code == Errc::not_found) return std::optional<AuthAnswer>{};
    return prev.error();
  }
  if (!ct_equal(prev->request_hash, hash)) return make_error(Errc::conflict, "txn_id " + txn_id + " was used with a different request");
  auto expired = expire_if_due(tx, *prev, now);
  if (!expired) return expired.error();
  fresh = *expired;
  AuthAnswer a = answer_of(*prev, now);
  if (auto o = apply_outcome(tx, a); !o) return o.error();
  return std::optional<AuthAnswer>{std::move(a)};
}


}  // namespace detail

using namespace detail;

// ---- authorization -----------------------------------------------------------------------

std::function<Result<void>(Tx&)> Service::decide_tx(DecideJob& job) {
  return [this, &job](Tx& tx) -> Result<void> {
    const UnixTime t = job.t;
    const std::string& txn_id = job.txn_id;
    const std::string_view terminal_id = job.terminal_id;
    const ByteView card = job.card;
    AuthAnswer& ans = job.ans;
    job.fresh = false;
    auto earlier = earlier_answer(tx, txn_id, job.hash, t, job.fresh);
    if (!earlier) return earlier.error();
    if (*earlier) {
      ans = std::move(**earlier);
      return {};
    }
    job.fresh = true;
    auto term = enabled_terminal(tx, terminal_id);
    if (!term) return term.error();
    TransactionRecord rec = new_transaction(txn_id, job.hash, card, terminal_id, t);
    // Without its keys: the rules need its status, limits and counters, and open its keys
    // (with_keys) only on the rare paths that write it back or send it a list.
    auto c = tx.card_state(card);
    if (c) {
      if (auto x = job.rules(tx, rec, *term, &*c); !x) return x;
      if (auto x = decline_if_reversed_first(tx, rec); !x) return x;
    } else if (c.error().code == Errc::not_found) {
      rec.reason = "unknown_card";
    } else {
      return c.error();
    }
    // A decline that used up no code may be left unstored (decline_limit.hpp).
    if (rec.decision == Decision::declined && suppressible_decline(job.action, rec.reason) && config_.record_decline &&
        !config_.record_decline(terminal_id, card)) {
      ans = answer_of(rec, t);
      ans.recorded = false;
      return {};
    }
    auto a = record_transaction(tx, rec, terminal_id, job.action,
                                " code=" + std::to_string(rec.list_id) + "/" + std::to_string(rec.index) +
                                    " amount=" + std::to_string(rec.amount_minor), t);
    if (!a) return a.error();
    ans = std::move(*a);
    return {};
  };
}

Result<AuthAnswer> Service::decide(UnixTime t, const std::string& txn_id, ByteView hash, ByteView card,
                                   std::string_view terminal_id, std::string_view action, const Rules& rules) {
  DecideJob job{t, txn_id, Bytes(hash.begin(), hash.end()), Bytes(card.begin(), card.end()), std::string(terminal_id),
                std::string(action), rules, {}, false};
  return decide(job);
}

Result<AuthAnswer> Service::decide(DecideJob& job) {
  if (auto r = run(decide_tx(job)); !r) return r.error();
  if (job.fresh) count(job.ans);  // a retry's answer is not a new decision
  return std::move(job.ans);
}

void Service::decide_async(std::shared_ptr<DecideJob> job, AuthDone done) {
  auto tx = decide_tx(*job);  // refers to *job, which the completion keeps alive
  run_async(std::move(tx), [this, job = std::move(job), done = std::move(done)](Result<void> r) {
    if (!r) return done(r.error());
    if (job->fresh) count(job->ans);
    done(std::move(job->ans));
  });
}

// Checks the request outside the store and prepares its decision: the rules of a tap
// (protocol.md 3) over a copy of the request, so that they can outlive the caller's frame.
Result<std::shared_ptr<Service::DecideJob>> Service::authorize_job(const AuthRequest& request, std::string_view terminal_id) {
  if (!valid_txn_id(request.txn_id)) return make_error(Errc::bad_value, "txn_id must be 1 to 64 printable ASCII characters");
  if (request.card.size() != 8) return make_error(Errc::bad_length, "card must be 8 bytes (16 hex digits)");
  if (request.cryptogram.size() != 8) return make_error(Errc::bad_length, "cryptogram must be 8 bytes (16 hex digits)");
  auto challenge = parse_challenge(request.challenge);
  if (!challenge) return challenge.error();
  if (challenge->terminal_id() != terminal_id)
    return make_error(Errc::state, "terminal id in the challenge (9F1C) does not match the client certificate");
  struct Input {
    AuthRequest req;
    Challenge ch;
  };
  auto in = std::make_shared<const Input>(Input{request, std::move(*challenge)});
  const UnixTime now_t = now();
  auto job = std::make_shared<DecideJob>();
  job->t = now_t;
  job->txn_id = request.txn_id;
  const auto list_id = be_array<2>(request.list_id), index = be_array<2>(request.index), atc = be_array<2>(request.atc);
  job->hash = request_hash("authorize", {as_bytes(request.txn_id), request.card, list_id, index, atc,
                                         ByteView(&request.pin_state, 1), request.challenge, request.cryptogram});
  job->card = request.card;
  job->terminal_id = std::string(terminal_id);
  job->action = "authorize";
  job->rules = [this, in, t = now_t](Tx& tx, TransactionRecord& rec, const TerminalRecord& term, CardRecord* card) -> Result<void> {
    const AuthRequest& req = in->req;
    const Challenge* ch = &in->ch;
    rec.list_id = req.list_id;
    rec.index = req.index;
    rec.amount_minor = ch->amount_minor;
    rec.currency = ch->currency_code;
    rec.door = ch->door_id();
    rec.cryptogram = req.cryptogram;

    auto code = tx.otac(req.card, req.list_id, req.index);
    if (!code) {
      if (code.error().code != Errc::not_found) return code.error();
      rec.reason = "unknown_code";
      return {};
    }
    auto card_mac = CardMac::make(card->algorithm, code->key);
    if (!card_mac) return card_mac.error();
    auto mac = card_mac->mac(mac_input(*ch, req.card, req.list_id, req.index, req.atc, req.pin_state));
    if (!mac) return mac.error();
    if (!ct_equal(*mac, req.cryptogram)) {
      rec.reason = "bad_cryptogram";
      if (auto x = count_failure(tx, *card, t, "bad cryptograms"); !x) return x;
      return {};
    }
    if (card->status == CardStatus::blocked) {
      // A genuine answer from a blocked card is declined, but the card has spent its code:
      // it is consumed here too, so that the backend's count of the card's unused codes (and
      // so its threshold push) keeps up with the card (protocol.md 3).
      rec.reason = "card_blocked";
      auto spent = tx.consume_otac(req.card, req.list_id, req.index, req.txn_id, t);
      if (!spent) return spent.error();
      return {};
    }
    if (auto x = reset_failures(tx, *card); !x) return x;
    auto consumed = tx.consume_otac(req.card, req.list_id, req.index, req.txn_id, t);
    if (!consumed) return consumed.error();
    if (!*consumed) {
      rec.reason = "code_used";
    } else if (pin_blocked(req.pin_state)) {
      // The card's PIN is blocked (its state is under the MAC): nothing is approved, whatever
      // the amount or door, until the holder unblocks it with the PUK (protocol.md §3).
      rec.reason = "pin_blocked";
    } else if (ch->door_mode()) {
      auto doors = tx.doors(req.card);
      if (!doors) return doors.error();
      std::string why;
      if (ch->type != kTypeDoor) rec.reason = "type_not_allowed";
      else if (door_allowed(*doors, rec.door, t, why)) { rec.decision = Decision::approved; rec.reason = "ok"; }
      else rec.reason = why;
    } else if (auto no = pos_decline({ch->type, ch->currency_code, ch->amount_minor}, *card, term,
                                     {&config_.currencies, config_.default_currency, config_.max_amount_minor,
                                      card_cash_limit(*card, config_) > 0})) {
      rec.reason = no->reason;
      if (no->limit) rec.arc = kArcLimit;
    } else if (ch->type == kTypeCash) {
      // A withdrawal: the PIN checked by the card, then the daily limits (the card's own, read
      // from its row here), read and recorded in this store transaction so that two ATMs
      // cannot both pass them (protocol.md §5.4).
      const CashRecord cash{req.txn_id, req.card, term.id, ch->amount_minor, t};
      auto no_cash = (req.pin_state & protocol::pin_state_verified) == 0 ? std::optional<PosDecline>{PosDecline{"pin_required", false}}
                                                                         : cash_decline(tx, cash, card_cash_limit(*card, config_), config_);
      if (!no_cash) return no_cash.error();
      if (*no_cash) {
        rec.reason = (*no_cash)->reason;
        if ((*no_cash)->limit) rec.arc = kArcLimit;
      } else {
        if (auto x = tx.insert_cash(cash); !x) return x;
        rec.decision = Decision::approved;
        rec.reason = "ok";
      }
    } else if (card->review_minor > 0 && ch->amount_minor > card->review_minor) {
      rec.decision = Decision::held;
      rec.reason = "review";
      rec.decided_at = 0;
      rec.expires_at = t + config_.hold_limit.count();
    } else {
      rec.decision = Decision::approved;
      rec.reason = "ok";
    }
    if (rec.decision == Decision::approved) { rec.arc = kArcApproved; rec.auth_code = random_digits(6); }
    if (rec.decision == Decision::held) rec.arc = kArcHeld;
    auto arpc = card_mac->mac(protocol::arpc_input(req.cryptogram, rec.arc));
    if (!arpc) return arpc.error();
    rec.arpc = std::move(*arpc);
    if (*consumed) {
      if (auto x = push_if_low(tx, *card, config_.list_size, t); !x) return x;
    }
    return {};
  };
  return job;
}

Result<AuthAnswer> Service::authorize(const AuthRequest& req, std::string_view terminal_id) {
  auto job = authorize_job(req, terminal_id);
  if (!job) return job.error();
  return decide(**job);
}

void Service::authorize_async(const AuthRequest& req, std::string_view terminal_id, AuthDone done) {
  auto job = authorize_job(req, terminal_id);
  if (!job) return done(job.error());
  decide_async(std::move(*job), std::move(done));
}

Result<AuthAnswer> Service::get_authorization(std::string_view txn_id, std::chrono::milliseconds wait) {
  wait = std::min<std::chrono::milliseconds>(std::max<std::chrono::milliseconds>(wait, std::chrono::milliseconds(0)), config_.max_wait);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  // Bounded: each round sleeps up to 100 ms until the deadline. The condition variable wakes
  // waiters in this process early; polling the store sees decisions made by other processes.
  for (int round = 0; round < 100000; ++round) {
    AuthAnswer ans;
    bool expired = false;
    const UnixTime t = now();
    auto r = run([&](Tx& tx) -> Result<void> {
      auto rec = transaction_now(tx, txn_id, t, expired);
      if (!rec) return rec.error();
      ans = answer_of(*rec, t);
      return apply_outcome(tx, ans);
    });
    if (!r) return r.error();
    if (expired) count(ans);
    const auto left = deadline - std::chrono::steady_clock::now();
    if (ans.decision != Decision::held || left <= std::chrono::steady_clock::duration::zero()) return ans;
    std::unique_lock lock(held_mu_);
    held_cv_.wait_for(lock, std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(100)));
  }
  return make_error(Errc::timeout, "waiting for transaction " + std::string(txn_id) + " did not finish");
}

Result<AuthAnswer> Service::decide_held(std::string_view txn_id, bool approve, std::string_view actor) {
  AuthAnswer ans;
  bool expired = false;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto rec = transaction_now(tx, txn_id, t, expired);
    if (!rec) return rec.error();
    if (expired || (rec->decision == Decision::declined && rec->reason == "held_timeout")) {
      // The expiry is committed even though the operator's request fails.
      ans = answer_of(*rec, t);
      return {};
    }
    if (rec->decision != Decision::held)
      return make_error(Errc::conflict, "transaction " + std::string(txn_id) + " is not held (it is " + decision_name(rec->decision) + ")");
    auto won = settle_held(tx, *rec, approve ? Decision::approved : Decision::declined,
                           approve ? "operator_approved" : "operator_declined", actor, approve ? "approve_held" : "decline_held", t, t);
    if (!won) return won.error();
    if (!*won)
      return make_error(Errc::conflict, "transaction " + std::string(txn_id) + " is not held (it is " + decision_name(rec->decision) + ")");
    ans = answer_of(*rec, t);
    return {};
  });
  if (!r) return r.error();
  if (ans.reason == "held_timeout") {
    if (expired) {
      count(ans);
      held_cv_.notify_all();
    }
    return make_error(Errc::conflict, "transaction " + std::string(txn_id) +
                                          " expired unanswered (declined, held_timeout): the terminal stopped waiting and "
                                          "showed it declined, so it can no longer be approved or declined");
  }
  count(ans);
  held_cv_.notify_all();
  return ans;
}

Result<AuthAnswer> Service::cancel_held(std::string_view txn_id, std::string_view terminal_id) {
  AuthAnswer ans;
  bool cancelled = false;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    auto rec = tx.transaction(txn_id);
    if (!rec) return rec.error();
    // Another terminal's transaction answers as unknown, as GET /v1/authorizations/{txn} does.
    if (rec->terminal_id != terminal_id)
      return make_error(Errc::not_found, "no transaction " + std::string(txn_id) + " for terminal " + std::string(terminal_id));
    cancelled = false;
    if (rec->decision == Decision::held) {
      auto won = settle_held(tx, *rec, Decision::declined, "held_timeout", terminal_id, "cancel_held",
                             std::min(t, rec->expires_at), t);
      if (!won) return won.error();
      cancelled = *won;
    }
    ans = answer_of(*rec, t);
    return {};
  });
  if (!r) return r.error();
  if (cancelled) {
    count(ans);
    held_cv_.notify_all();
  }
  return ans;
}

Result<std::uint32_t> Service::expire_held(std::uint32_t limit) {
  std::vector<AuthAnswer> expired;
  const UnixTime t = now();
  auto r = run([&](Tx& tx) -> Result<void> {
    expired.clear();
    auto due = tx.held_due(t, limit);
    if (!due) return due.error();
    for (auto& rec : *due) {
      auto e = expire_if_due(tx, rec, t);
      if (!e) return e.error();
      if (*e) expired.push_back(answer_of(rec, t));
    }
    return {};
  });
  if (!r) return r.error();
  for (const auto& a : expired) count(a);
  if (!expired.empty()) held_cv_.notify_all();
  return static_cast<std::uint32_t>(expired.size());
}

Result<AuthAnswer> Service::verify_display_code(const CodeRequest& req, std::string_view terminal_id) {
  if (!valid_txn_id(req.txn_id)) return make_error(Errc::bad_value, "txn_id must be 1 to 64 printable ASCII characters");
  if (req.card.size() != 8) return make_error(Errc::bad_length, "card must be 8 bytes (16 hex digits)");
  if (req.code.size() != 8 || !std::all_of(req.code.begin(), req.code.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return make_error(Errc::bad_value, "code must be 8 digits");
  if (req.door.size() > 16) return make_error(Errc::bad_length, "door id must be at most 16 characters");
  const Bytes hash = request_hash("code", {as_bytes(req.txn_id), req.card, as_bytes(req.code), as_bytes(req.door)});
  const UnixTime t = now();
  return decide(t, req.txn_id, hash, req.card, terminal_id, "verify_code", [&](Tx& tx, TransactionRecord& rec, const TerminalRecord&, CardRecord* card) -> Result<void> {
    rec.door = req.door;
    // The codes the card can be at (protocol.md 4): ten after the highest consumed, and the
    // first ten of the next two lists; a card that used codes the backend never saw (lost
    // answers, a blocked card's) still lands inside it.
    auto window = tx.display_candidates(req.card, 10, 2);
    if (!window) return window.error();
    const OtacRecord* match = nullptr;
    for (const auto& o : *window) {
      auto m = mac8(card->algorithm, o.key, protocol::display_input(req.card, o.list_id, o.index));
      if (!m) return m.error();
      // Compare every candidate (no early exit) so timing does not reveal the position.
      if (ct_equal(as_bytes(protocol::display_digits(*m)), as_bytes(req.code)) && !match) match = &o;
    }
    if (card->status == CardStatus::blocked) {
      // A genuine code is spent on the card all the same: consume it, so that the window
      // follows the card, but decline. A wrong one does not count: the card is blocked already.
      rec.reason = "card_blocked";
      if (match) {
        rec.list_id = match->list_id;
        rec.index = match->index;
        auto consumed = tx.consume_otac(req.card, match->list_id, match->index, req.txn_id, t);
        if (!consumed) return consumed.error();
      }
      return {};
    }
    if (!match) {
      rec.reason = "bad_code";
      if (auto x = count_failure(tx, *card, t, "bad display codes"); !x) return x;
      return {};
    }
    rec.list_id = match->list_id;
    rec.index = match->index;
    auto consumed = tx.consume_otac(req.card, match->list_id, match->index, req.txn_id, t);
    if (!consumed) return consumed.error();
    if (!*consumed) { rec.reason = "code_used"; return {}; }
    if (auto x = reset_failures(tx, *card); !x) return x;
    if (auto x = push_if_low(tx, *card, config_.list_size, t); !x) return x;
    if (!req.door.empty()) {
      auto doors = tx.doors(req.card);
      if (!doors) return doors.error();
      std::string why;
      if (!door_allowed(*doors, req.door, t, why)) { rec.reason = why; return {}; }
    }
    rec.decision = Decision::approved;
    rec.reason = "ok";
    rec.arc = kArcApproved;
    rec.auth_code = random_digits(6);
    return {};
  });
}

}  // namespace otac::backend
