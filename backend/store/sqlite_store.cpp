#include "sqlite_store.hpp"

#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <stop_token>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include <unistd.h>

#include "otac/common/crypto.hpp"
#include "sqlite_settlement.hpp"

namespace otac::backend {
namespace {

// ---- RAII for the two SQLite handles, written once -----------------------------------------

struct DbClose { void operator()(sqlite3* db) const { sqlite3_close_v2(db); } };
struct StmtFinalize { void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); } };
using DbPtr = std::unique_ptr<sqlite3, DbClose>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalize>;

Error db_error(sqlite3* db, std::string_view what) {
  const int code = sqlite3_extended_errcode(db);
  Errc e = (code & 0xFF) == SQLITE_CONSTRAINT ? Errc::conflict : Errc::io;
  return make_error(e, std::string(what) + ": " + sqlite3_errmsg(db));
}

// A prepared statement borrowed from the connection's cache; reset and unbound on scope exit.
class Query {
 public:
  Query(sqlite3* db, sqlite3_stmt* s) : db_(db), s_(s) {}
  ~Query() { sqlite3_reset(s_); sqlite3_clear_bindings(s_); }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  Query& i(std::int64_t v) { sqlite3_bind_int64(s_, ++n_, v); return *this; }
  Query& b(ByteView v) {
    if (v.empty()) sqlite3_bind_zeroblob(s_, ++n_, 0);
    else sqlite3_bind_blob(s_, ++n_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Query& t(std::string_view v) { sqlite3_bind_text(s_, ++n_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); return *this; }
  Query& null() { sqlite3_bind_null(s_, ++n_); return *this; }

  /// true: a row is available; false: done.
  Result<bool> step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return db_error(db_, "database statement failed");
  }
  Result<void> exec() {
    auto r = step();
    if (!r) return r.error();
    return {};
  }
  std::int64_t col_i(int c) const { return sqlite3_column_int64(s_, c); }
  Bytes col_b(int c) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s_, c));
    const int n = sqlite3_column_bytes(s_, c);
    return p ? Bytes(p, p + n) : Bytes{};
  }
  std::string col_t(int c) const {
    const auto* p = sqlite3_column_text(s_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s_, c))) : std::string{};
  }
  bool col_null(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_;
  int n_ = 0;
};

// Schema versions, applied in order; PRAGMA user_version records how many ran.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE cards(
  n BLOB PRIMARY KEY, algorithm INTEGER NOT NULL, msisdn TEXT NOT NULL, status INTEGER NOT NULL,
  fail_count INTEGER NOT NULL, fail_limit INTEGER NOT NULL, threshold INTEGER NOT NULL,
  limit_minor INTEGER NOT NULL, review_minor INTEGER NOT NULL, key_version INTEGER NOT NULL,
  k_sealed BLOB, pending_k_sealed BLOB, pending_version INTEGER NOT NULL, public_key BLOB,
  list_push_in_flight INTEGER NOT NULL, ota_counter INTEGER NOT NULL DEFAULT 0,
  card_counter INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
CREATE TABLE doors(
  n BLOB NOT NULL REFERENCES cards(n), door TEXT NOT NULL, from_minute INTEGER NOT NULL,
  to_minute INTEGER NOT NULL, PRIMARY KEY(n, door));
CREATE TABLE lists(
  n BLOB NOT NULL REFERENCES cards(n), list_id INTEGER NOT NULL, created_at INTEGER NOT NULL,
  PRIMARY KEY(n, list_id));
CREATE TABLE otacs(
  n BLOB NOT NULL, list_id INTEGER NOT NULL, idx INTEGER NOT NULL, key_sealed BLOB NOT NULL,
  used INTEGER NOT NULL DEFAULT 0, used_at INTEGER, txn_id TEXT,
  PRIMARY KEY(n, list_id, idx), FOREIGN KEY(n, list_id) REFERENCES lists(n, list_id));
CREATE INDEX otacs_unused ON otacs(n, used, list_id, idx);
CREATE TABLE transactions(
  txn_id TEXT PRIMARY KEY, request_hash BLOB NOT NULL, card BLOB, list_id INTEGER, idx INTEGER,
  terminal_id TEXT, amount_minor INTEGER, currency INTEGER, door TEXT, decision INTEGER NOT NULL,
  reason TEXT NOT NULL, auth_code TEXT, arc BLOB, arpc BLOB, created_at INTEGER NOT NULL,
  decided_at INTEGER NOT NULL, decided_by TEXT);
CREATE INDEX transactions_created ON transactions(created_at);
CREATE TABLE terminals(
  id TEXT PRIMARY KEY, cert_fingerprint TEXT NOT NULL, limit_minor INTEGER NOT NULL,
  enabled INTEGER NOT NULL);
CREATE TABLE operators(name TEXT PRIMARY KEY, role INTEGER NOT NULL, token_hash BLOB NOT NULL UNIQUE);
CREATE TABLE sms_outbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT, card BLOB, dest TEXT NOT NULL, udh BLOB, payload BLOB NOT NULL,
  status INTEGER NOT NULL, attempts INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL,
  last_reply TEXT, created_at INTEGER NOT NULL);
CREATE INDEX sms_due ON sms_outbox(status, next_attempt_at);
CREATE TABLE audit_log(
  seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  detail TEXT NOT NULL, mac BLOB NOT NULL);
)sql",
    R"sql(
CREATE TABLE ota_sent(
  n BLOB NOT NULL REFERENCES cards(n), counter INTEGER NOT NULL, kind TEXT NOT NULL,
  ref INTEGER NOT NULL, rsc INTEGER NOT NULL DEFAULT -1, sent_at INTEGER NOT NULL,
  PRIMARY KEY(n, counter));
CREATE INDEX cards_msisdn ON cards(msisdn);
)sql",
    R"sql(
ALTER TABLE transactions ADD COLUMN cryptogram BLOB;
)sql",
    // 4: server signing keys (E4/E5) and per-card signature keys (E3), in tables of their own.
    R"sql(
CREATE TABLE server_keys(
  name TEXT PRIMARY KEY, private_sealed BLOB NOT NULL, public_point BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE card_security(
  n BLOB PRIMARY KEY REFERENCES cards(n), sig_sealed BLOB, pending_sig_sealed BLOB,
  pending_sig_counter INTEGER NOT NULL DEFAULT 0, pending_sig_sent INTEGER NOT NULL DEFAULT 0, sig_since INTEGER NOT NULL DEFAULT 0,
  server_point BLOB);
)sql",
    // 5: held transactions expire (protocol.md §5.2). Rows held before this version get the
    // default hold limit (120 s) after their creation; expires_at is 0 for every other row.
    R"sql(
ALTER TABLE transactions ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE transactions SET expires_at = created_at + 120 WHERE decision = 2;
CREATE INDEX transactions_held ON transactions(decision, expires_at);
)sql",
    // 6: the list lifecycle (sent, loaded, refused). A refused list's unused codes are marked
    // used=2 (withdrawn), so every "used=0" query leaves them out and none can be consumed.
    R"sql(
ALTER TABLE lists ADD COLUMN state INTEGER NOT NULL DEFAULT 0;
ALTER TABLE lists ADD COLUMN refusal TEXT;
ALTER TABLE lists ADD COLUMN state_at INTEGER NOT NULL DEFAULT 0;
)sql",
    // 7: a card's currency (0 = the backend's default) and a time zone per door window.
    R"sql(
ALTER TABLE cards ADD COLUMN currency INTEGER NOT NULL DEFAULT 0;
ALTER TABLE doors ADD COLUMN tz TEXT NOT NULL DEFAULT 'UTC';
)sql",
    // 8: the card key K kept after a rotation until the card is heard under K' (protocol.md
    // 6.3): requests and PoRs the card sealed under K before it switched still open.
    R"sql(
ALTER TABLE cards ADD COLUMN retired_k_sealed BLOB;
ALTER TABLE cards ADD COLUMN retired_version INTEGER NOT NULL DEFAULT 0;
)sql",
    // 9: outcomes, cash withdrawals and refunds (sqlite_settlement.cpp).
    sqlite_settlement::kMigration,
};

Bytes ad(std::string_view kind, ByteView n, std::int64_t list = -1, std::int64_t index = -1) {
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

class Connection;

class SqliteTx final : public Tx {
 public:
  SqliteTx(Connection& s, const Kek& kek) : s_(s), kek_(kek) {}

  Result<void> insert_card(const CardRecord& c) override;
  Result<CardRecord> card(ByteView n) override;
  Result<void> update_card(const CardRecord& c) override;
  Result<void> set_doors(ByteView n, const std::vector<DoorPermission>& doors) override;
  Result<std::vector<DoorPermission>> doors(ByteView n) override;
  Result<std::uint16_t> last_list_id(ByteView n) override;
  Result<void> insert_list(ByteView n, std::uint16_t list_id, const std::vector<SecretBytes>& keys, UnixTime now) override;
  Result<OtacRecord> otac(ByteView n, std::uint16_t list_id, std::uint16_t index) override;
  Result<std::vector<OtacRecord>> lowest_unused(ByteView n, std::uint32_t limit) override;
  Result<std::vector<OtacRecord>> display_candidates(ByteView n, std::uint32_t per_list, std::uint32_t next_lists) override;
  Result<std::uint32_t> unused_count(ByteView n) override;
  Result<bool> unused_more_than(ByteView n, std::uint32_t count) override;
  Result<std::vector<ListInfo>> lists(ByteView n) override;
  Result<void> set_list_state(ByteView n, std::uint16_t list_id, ListState state, std::string_view refusal, UnixTime now) override;
  Result<std::vector<ListRepair>> lists_to_repair(UnixTime now, std::int64_t after, std::uint32_t max_packets,
                                                  std::uint32_t limit) override;
  Result<bool> consume_otac(ByteView n, std::uint16_t list_id, std::uint16_t index, std::string_view txn_id, UnixTime now) override;
  Result<TransactionRecord> transaction(std::string_view txn_id) override;
  Result<void> insert_transaction(const TransactionRecord& t) override;
  Result<bool> decide_held_transaction(const TransactionRecord& t) override;
  Result<std::vector<TransactionRecord>> held_due(UnixTime now, std::uint32_t limit) override;
  Result<std::uint32_t> prune_declined(UnixTime before, std::uint32_t limit) override;
  Result<std::vector<TransactionRecord>> transactions(const TransactionFilter& f) override;
  // After the decision: rows in sqlite_settlement.cpp.
  Result<std::optional<OutcomeRecord>> outcome(std::string_view id) override { return sqlite_settlement::outcome(db(), id); }
  Result<bool> set_outcome(const OutcomeRecord& o, std::optional<Outcome> from) override {
    return sqlite_settlement::set_outcome(db(), o, from);
  }
  Result<void> insert_cash(const CashRecord& c) override { return sqlite_settlement::insert_cash(db(), c); }
  Result<std::optional<CashRecord>> cash(std::string_view id) override { return sqlite_settlement::cash(db(), id); }
  Result<CashTotals> cash_totals(ByteView card, std::string_view terminal_id, UnixTime since) override {
    return sqlite_settlement::cash_totals(db(), card, terminal_id, since);
  }
  Result<std::vector<CashRecord>> cash_unsettled(UnixTime before, std::uint32_t limit) override {
    return sqlite_settlement::cash_unsettled(db(), before, limit);
  }
  Result<std::optional<RefundRecord>> refund(std::string_view id) override { return sqlite_settlement::refund(db(), id); }
  Result<bool> put_refund(const RefundRecord& r, std::optional<RefundState> from) override {
    return sqlite_settlement::put_refund(db(), r, from);
  }
  Result<std::vector<RefundRecord>> refunds(RefundState state, std::uint32_t limit) override {
    return sqlite_settlement::refunds(db(), state, limit);
  }
  Result<void> put_terminal(const TerminalRecord& t) override;
  Result<TerminalRecord> terminal(std::string_view id) override;
  Result<void> put_operator(const OperatorRecord& op) override;
  Result<OperatorRecord> operator_by_token_hash(ByteView token_hash) override;
  Result<std::int64_t> enqueue_sms(const OutboxMessage& m) override;
  Result<std::vector<OutboxMessage>> due_sms(UnixTime now, std::uint32_t limit) override;
  Result<OutboxMessage> sms(std::int64_t id) override;
  Result<void> update_sms(const OutboxMessage& m) override;
  Result<std::uint32_t> outbox_depth() override;
  Result<std::uint64_t> next_ota_counter(ByteView n) override;
  Result<std::uint64_t> card_counter(ByteView n) override;
  Result<void> set_card_counter(ByteView n, std::uint64_t counter) override;
  Result<void> record_ota_sent(ByteView n, std::uint64_t counter, std::string_view kind, std::int64_t ref, UnixTime now) override;
  Result<std::tuple<std::string, std::int64_t, int>> ota_sent(ByteView n, std::uint64_t counter) override;
  Result<std::uint64_t> latest_ota_sent(ByteView n, std::string_view kind, std::int64_t ref) override;
  Result<void> set_ota_rsc(ByteView n, std::uint64_t counter, int rsc) override;
  Result<Bytes> card_by_msisdn(std::string_view msisdn) override;
  Result<ServerKeyRecord> server_key(std::string_view name) override;
  Result<void> insert_server_key(const ServerKeyRecord& key) override;
  Result<CardSecurity> card_security(ByteView n) override;
  Result<void> set_card_security(ByteView n, const CardSecurity& s) override;
  Result<std::int64_t> audit(UnixTime at, std::string_view actor, std::string_view action, std::string_view detail) override;
  Result<std::vector<AuditEntry>> audit_entries(std::int64_t after_seq, std::uint32_t limit) override;
  Result<std::vector<AuditEntry>> audit_recent(std::uint32_t limit) override;
  Result<std::int64_t> verify_audit_chain() override;

 private:
  Query q(const char* sql);
  sqlite3* db();
  Result<TransactionRecord> read_txn(Query& r);
  Result<std::vector<TransactionRecord>> read_txns(Query& r, std::uint32_t limit);

  Connection& s_;
  const Kek& kek_;
};

// ---- group commit ---------------------------------------------------------------------------
//
// Durable commits cost one fsync each (WAL, synchronous=FULL). To amortize it, every Store
// opened on the same database file in one process shares one SQLite connection, and
// concurrent Store::run calls are batched on it: the first caller that finds no batch running
// becomes the leader, takes every waiting call (up to kMaxBatch), runs them one after another
// inside ONE SQLite transaction, each within its own SAVEPOINT (callers that queue meanwhile
// join it), and commits once. Only then
// does any caller of the batch return, so "durable on return" holds exactly as before. The
// functions still run strictly one after another (a batch is a serial schedule), so the
// conditional update in consume_otac, the idempotency lookup by txn_id and the audit chain
// see the same states as with one transaction each. A function that fails (or throws) is
// rolled back to its savepoint and only its caller sees the error. If SQLite aborted the
// whole transaction instead (I/O error, disk full), the others of the batch are retried one
// by one, each in a transaction of its own. While a batch commits, new callers queue; the
// leader then hands over to the first of them, so the next batch starts at once.
// Other processes on the same file still meet SQLite's own write lock (BEGIN IMMEDIATE), and
// one connection per process keeps its page cache valid from one batch to the next.

// One caller of Store::run, waiting in a CommitGroup.
struct Pending {
  static constexpr int kWaiting = 0, kLead = 1, kDone = 2;
  const std::function<Result<void>(Tx&)>* fn = nullptr;
  const Kek* kek = nullptr;
  Result<void> result;
  std::exception_ptr exception;  // rethrown in the caller's thread
  // Each caller sleeps on its own condition variable, so that a commit wakes exactly the
  // callers of its batch and none of them queues on the group mutex to find out. (Not
  // std::atomic::wait: libstdc++ spins on sched_yield first, which cost a tenth of the CPU.)
  std::mutex mu;
  std::condition_variable cv;
  int state = kWaiting;  // guarded by mu

  void signal(int s) {
    {
      std::lock_guard lock(mu);
      state = s;
    }
    cv.notify_one();  // the signaller holds a shared_ptr: the Pending outlives this call
  }
  int wait_while_waiting() {
    std::unique_lock lock(mu);
    cv.wait(lock, [this] { return state != kWaiting; });
    const int s = state;
    if (s == kLead) state = kWaiting;  // the lead is taken; wait again after leading
    return s;
  }
};

// The process's connection to one database file. Used by one leader at a time.
class Connection {
 public:
  explicit Connection(DbPtr db) : db_(std::move(db)) {}

  Result<void> configure_and_migrate();

  Query query(const char* sql) {
    auto it = cache_.find(sql);
    if (it == cache_.end()) {
      sqlite3_stmt* s = nullptr;
      if (sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
        throw std::logic_error(std::string("bad SQL: ") + sqlite3_errmsg(db_.get()));  // a bug, not input
      it = cache_.emplace(sql, StmtPtr(s)).first;
    }
    return Query(db_.get(), it->second.get());
  }
  sqlite3* db() const { return db_.get(); }
  /// Gives up the handle (the statement cache is dropped first).
  DbPtr release() {
    cache_.clear();
    return std::move(db_);
  }

  // One transaction for the whole batch; see "group commit" above. Never throws: an
  // exception (out of memory, a statement that fails to prepare) goes to every caller that
  // has no answer yet, so that none of them waits forever.
  /// `more` appends callers that queued meanwhile; they join the open transaction.
  void execute(std::vector<Pending*>& batch, const std::function<void(std::vector<Pending*>&)>& more) noexcept {
    try {
      execute_batch(batch, more);
    } catch (...) {
      const auto e = std::current_exception();
      for (Pending* p : batch) {
        if (!p->exception) p->exception = e;
      }
      abandon();
    }
  }

 private:
  void execute_batch(std::vector<Pending*>& batch, const std::function<void(std::vector<Pending*>&)>& more) {
    if (auto b = begin(); !b) {
      for (Pending* p : batch) p->result = b.error();
      return;
    }
    // Callers that queue while the functions run join this transaction instead of waiting for
    // the next one (bounded: `more` stops at kMaxBatch).
    for (std::size_t i = 0;; ++i) {
      if (i == batch.size()) more(batch);
      if (i == batch.size()) break;
      if (run_one(*batch[i])) continue;
      // The transaction is gone: batch[i] keeps its own error; the others run alone.
      for (std::size_t j = 0; j < batch.size(); ++j) {
        if (j == i) continue;
        batch[j]->result = {};
        batch[j]->exception = nullptr;
        execute_alone(*batch[j]);
      }
      return;
    }
    if (auto c = control("COMMIT"); !c) {
      const auto e = make_error(c.error().code, "cannot commit the database transaction: " + c.error().message);
      abandon();
      for (Pending* p : batch) {
        if (p->result && !p->exception) p->result = e;
      }
    }
  }

  Result<void> control(const char* sql) { return query(sql).exec(); }
  bool in_transaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }
  void abandon() {
    if (in_transaction()) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
  }

  // BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a
  // lock upgrade; the busy timeout waits for other processes, and we retry a bounded number
  // of times beyond it.
  Result<void> begin() {
    for (int attempt = 0;; ++attempt) {
      const int rc = sqlite3_exec(db_.get(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
      if (rc == SQLITE_OK) return {};
      if ((rc & 0xFF) != SQLITE_BUSY || attempt >= 20) return db_error(db_.get(), "cannot start a database transaction");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // Runs p's function inside a savepoint of the open transaction. false: SQLite rolled the
  // whole transaction back under it, so the batch so far is lost.
  bool run_one(Pending& p);

  void execute_alone(Pending& p) {
    if (auto b = begin(); !b) {
      p.result = b.error();
      return;
    }
    if (!run_one(p)) {
      if (p.result && !p.exception) p.result = make_error(Errc::io, "the database rolled the transaction back; retry");
      return;
    }
    if (!p.result || p.exception) {
      abandon();
      return;
    }
    if (auto c = control("COMMIT"); !c) {
      p.result = make_error(c.error().code, "cannot commit the database transaction: " + c.error().message);
      abandon();
    }
  }

  // Statements must be finalized before the connection closes: cache_ is declared after db_,
  // so it is destroyed first.
  DbPtr db_;
  std::unordered_map<const char*, StmtPtr> cache_;
};

constexpr std::size_t kMaxBatch = 256;

// WAL checkpoints on a connection and thread of their own. SQLite's automatic checkpoint runs
// inside the COMMIT that crosses the threshold, and copying the WAL into the database file
// (with its fsync) there stalled every caller of that batch for tens of milliseconds. Here the
// committing connection's WAL hook only wakes this thread, whose PASSIVE checkpoint runs
// beside the writers. Durability is unchanged: the checkpoint connection syncs the WAL
// before copying and the database file after (synchronous=FULL).
class Checkpointer {
 public:
  static constexpr int kPages = 1000;  // SQLite's default automatic checkpoint threshold

  explicit Checkpointer(DbPtr db) : db_(std::move(db)), thread_([this](std::stop_token st) { loop(st); }) {}
  // thread_'s destructor (it is destroyed first) asks the loop to stop and joins it.
  ~Checkpointer() = default;
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  /// The WAL hook of the committing connection (called after each commit, in its thread).
  static int on_commit(void* self, sqlite3*, const char*, int pages) {
    if (pages >= kPages) static_cast<Checkpointer*>(self)->poke();
    return SQLITE_OK;
  }

 private:
  void poke() {
    {
      std::lock_guard lock(mu_);
      due_ = true;
    }
    cv_.notify_one();
  }
  // Ends at destruction; each round waits for a poke, then checkpoints once.
  void loop(const std::stop_token& stop) {
    std::unique_lock lock(mu_);
    while (cv_.wait(lock, stop, [this] { return due_; })) {  // false once stop is requested
      due_ = false;
      lock.unlock();
      // PASSIVE: copies what no reader still needs, never waits for or blocks the writers.
      // A busy or failed round is repeated at the next poke.
      (void)sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      lock.lock();
    }
  }

  DbPtr db_;
  std::mutex mu_;
  std::condition_variable_any cv_;  // its wait also ends on thread_'s stop request
  bool due_ = false;
  std::jthread thread_;  // declared last: started after, and joined before, the members it uses
};

// The callers waiting for one database file in this process, and its connections.
struct CommitGroup {
  CommitGroup(DbPtr db, DbPtr checkpoint_db) : checkpointer(std::move(checkpoint_db)), conn(std::move(db)) {}
  std::mutex mu;
  std::deque<std::shared_ptr<Pending>> queue;  // callers not yet taken into a batch
  bool leader_busy = false;    // a batch is being run; the next leader is chosen by handover
  // conn is declared after checkpointer, so it closes first: its WAL hook points there.
  Checkpointer checkpointer;
  Connection conn;             // only the leader touches it
};

class SqliteStore final : public Store {
 public:
  SqliteStore(std::shared_ptr<CommitGroup> group, std::shared_ptr<const Kek> kek)
      : group_(std::move(group)), kek_(std::move(kek)) {}

  Result<void> run(const std::function<Result<void>(Tx&)>& fn) override {
    CommitGroup& g = *group_;
    // Shared with the leader, which may still be signalling it when this call returns.
    auto me = std::make_shared<Pending>();
    me->fn = &fn;
    me->kek = kek_.get();
    {
      std::lock_guard lock(g.mu);
      g.queue.push_back(me);
      if (!g.leader_busy) {
        g.leader_busy = true;
        me->state = Pending::kLead;  // not yet visible to any other thread
      }
    }
    // Ends when the batch holding `me` is done: each round either leads a batch (which
    // always holds its leader, the queue's first) or sleeps until told to do one or the other.
    while (me->wait_while_waiting() != Pending::kDone) lead(g);
    if (me->exception) std::rethrow_exception(me->exception);
    return std::move(me->result);
  }

 private:
  // Runs the queued callers as one batch, wakes them, and hands the lead to the next caller.
  static void lead(CommitGroup& g) {
    std::vector<std::shared_ptr<Pending>> batch;  // keeps every Pending alive until signalled
    const auto take = [&](std::vector<Pending*>& raw) {
      std::lock_guard lock(g.mu);
      while (!g.queue.empty() && raw.size() < kMaxBatch) {
        batch.push_back(std::move(g.queue.front()));
        g.queue.pop_front();
        raw.push_back(batch.back().get());
      }
    };
    std::vector<Pending*> raw;
    take(raw);
    g.conn.execute(raw, take);
    std::shared_ptr<Pending> next;
    {
      std::lock_guard lock(g.mu);
      if (g.queue.empty()) g.leader_busy = false;
      else next = g.queue.front();  // stays queued: it takes itself into its own batch
    }
    for (const auto& p : batch) p->signal(Pending::kDone);
    if (next) next->signal(Pending::kLead);
  }

  std::shared_ptr<CommitGroup> group_;
  std::shared_ptr<const Kek> kek_;
};

bool Connection::run_one(Pending& p) {
  if (auto s = control("SAVEPOINT otac_request"); !s) {
    p.result = s.error();
    return in_transaction();
  }
  SqliteTx tx(*this, *p.kek);
  try {
    p.result = (*p.fn)(tx);
  } catch (...) {
    p.exception = std::current_exception();
  }
  if (p.result && !p.exception) {
    if (auto r = control("RELEASE otac_request"); !r) p.result = r.error();
    return in_transaction();
  }
  if (!in_transaction()) return false;
  (void)control("ROLLBACK TO otac_request");
  (void)control("RELEASE otac_request");
  return in_transaction();
}

// Runs once per process and file, before the connection is shared.
Result<void> Connection::configure_and_migrate() {
  sqlite3_busy_timeout(db_.get(), 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    if (sqlite3_exec(db_.get(), pragma, nullptr, nullptr, nullptr) != SQLITE_OK)
      return db_error(db_.get(), std::string("cannot set ") + pragma);
  }
  if (auto b = begin(); !b) return b;
  auto r = [&]() -> Result<void> {
    Query v = query("PRAGMA user_version");
    auto row = v.step();
    if (!row) return row.error();
    const auto have = static_cast<std::size_t>(v.col_i(0));
    constexpr std::size_t want = std::size(kMigrations);
    if (have > want)
      return make_error(Errc::state, "database schema version " + std::to_string(have) +
                                         " is newer than this program knows (" + std::to_string(want) + "); upgrade the program");
    if (have == want) return {};
    for (std::size_t i = have; i < want; ++i) {
      if (sqlite3_exec(db_.get(), kMigrations[i], nullptr, nullptr, nullptr) != SQLITE_OK)
        return db_error(db_.get(), "schema migration " + std::to_string(i + 1) + " failed");
    }
    const std::string set = "PRAGMA user_version=" + std::to_string(want);
    if (sqlite3_exec(db_.get(), set.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
      return db_error(db_.get(), "cannot record the schema version");
    return {};
  }();
  if (!r) {
    abandon();
    return r;
  }
  if (auto c = control("COMMIT"); !c) {
    abandon();
    return make_error(c.error().code, "cannot commit the schema migration: " + c.error().message);
  }
  return {};
}

Query SqliteTx::q(const char* sql) { return s_.query(sql); }
sqlite3* SqliteTx::db() { return s_.db(); }

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

Result<CardRecord> SqliteTx::card(ByteView n) {
  auto r = q("SELECT algorithm,msisdn,status,fail_count,fail_limit,threshold,limit_minor,review_minor,key_version,"
             "k_sealed,pending_k_sealed,pending_version,public_key,list_push_in_flight,created_at,currency,retired_k_sealed,"
             "retired_version FROM cards WHERE n=?");
  r.b(n);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no card " + to_hex(n));
  CardRecord c;
  c.n.assign(n.begin(), n.end());
  c.algorithm = static_cast<Algorithm>(r.col_i(0));
  c.msisdn = r.col_t(1);
  c.status = static_cast<CardStatus>(r.col_i(2));
  c.fail_count = static_cast<std::uint32_t>(r.col_i(3));
  c.fail_limit = static_cast<std::uint32_t>(r.col_i(4));
  c.threshold = static_cast<std::uint32_t>(r.col_i(5));
  c.limit_minor = r.col_i(6);
  c.review_minor = r.col_i(7);
  c.key_version = static_cast<std::uint8_t>(r.col_i(8));
  if (!r.col_null(9)) {
    auto k = kek_.open(r.col_b(9), ad("card-k", n));
    if (!k) return k.error();
    c.k = std::move(*k);
  }
  if (!r.col_null(10)) {
    auto k = kek_.open(r.col_b(10), ad("card-pk", n));
    if (!k) return k.error();
    c.pending_k = std::move(*k);
  }
  c.pending_version = static_cast<std::uint8_t>(r.col_i(11));
  c.public_key = r.col_b(12);
  c.list_push_in_flight = r.col_i(13) != 0;
  c.created_at = r.col_i(14);
  c.currency = static_cast<std::uint16_t>(r.col_i(15));
  if (!r.col_null(16)) {
    auto k = kek_.open(r.col_b(16), ad("card-rk", n));
    if (!k) return k.error();
    c.retired_k = std::move(*k);
  }
  c.retired_version = static_cast<std::uint8_t>(r.col_i(17));
  return c;
}

Result<void> SqliteTx::update_card(const CardRecord& c) {
  auto r = q("UPDATE cards SET msisdn=?,status=?,fail_count=?,fail_limit=?,threshold=?,limit_minor=?,review_minor=?,"
             "currency=?,key_version=?,k_sealed=?,pending_k_sealed=?,pending_version=?,list_push_in_flight=?,"
             "retired_k_sealed=?,retired_version=? WHERE n=?");
  r.t(c.msisdn).i(static_cast<int>(c.status)).i(c.fail_count).i(c.fail_limit).i(c.threshold).i(c.limit_minor)
      .i(c.review_minor).i(c.currency).i(c.key_version);
  if (c.k.empty()) r.null(); else r.b(kek_.seal(c.k.view(), ad("card-k", c.n)));
  if (!c.pending_k) r.null(); else r.b(kek_.seal(c.pending_k->view(), ad("card-pk", c.n)));
  r.i(c.pending_version).i(c.list_push_in_flight ? 1 : 0);
  if (!c.retired_k) r.null(); else r.b(kek_.seal(c.retired_k->view(), ad("card-rk", c.n)));
  r.i(c.retired_version).b(c.n);
  auto e = r.exec();
  if (!e) return e;
  if (sqlite3_changes(s_.db()) != 1) return make_error(Errc::not_found, "no card " + to_hex(c.n));
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
  std::vector<DoorPermission> out;
  for (int i = 0; i < 100000; ++i) {
    auto row = r.step();
    if (!row) return row.error();
    if (!*row) break;
    out.push_back({r.col_t(0), static_cast<std::uint32_t>(r.col_i(1)), static_cast<std::uint32_t>(r.col_i(2)), r.col_t(3)});
  }
  return out;
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
  auto k = kek_.open(r.col_b(0), ad("otac", n, list_id, index));
  if (!k) return k.error();
  return OtacRecord{list_id, index, std::move(*k), r.col_i(1) != 0};
}

Result<std::vector<OtacRecord>> SqliteTx::lowest_unused(ByteView n, std::uint32_t limit) {
  auto r = q("SELECT list_id,idx,key_sealed FROM otacs WHERE n=? AND used=0 ORDER BY list_id,idx LIMIT ?");
  r.b(n).i(limit);
  std::vector<OtacRecord> out;
  for (std::uint32_t i = 0; i < limit; ++i) {
    auto row = r.step();
    if (!row) return row.error();
    if (!*row) break;
    const auto l = static_cast<std::uint16_t>(r.col_i(0));
    const auto x = static_cast<std::uint16_t>(r.col_i(1));
    auto k = kek_.open(r.col_b(2), ad("otac", n, l, x));
    if (!k) return k.error();
    out.push_back(OtacRecord{l, x, std::move(*k), false});
  }
  return out;
}

Result<std::vector<OtacRecord>> SqliteTx::display_candidates(ByteView n, std::uint32_t per_list, std::uint32_t next_lists) {
  std::vector<OtacRecord> out;
  // Appends up to per_list unused codes of one list after index `after` (-1: from the start).
  auto take = [&](std::int64_t list, std::int64_t after) -> Result<void> {
    auto r = q("SELECT idx,key_sealed FROM otacs WHERE n=? AND list_id=? AND used=0 AND idx>? ORDER BY idx LIMIT ?");
    r.b(n).i(list).i(after).i(per_list);
    for (std::uint32_t i = 0; i < per_list; ++i) {
      auto row = r.step();
      if (!row) return row.error();
      if (!*row) break;
      const auto l = static_cast<std::uint16_t>(list);
      const auto x = static_cast<std::uint16_t>(r.col_i(0));
      auto k = kek_.open(r.col_b(1), ad("otac", n, l, x));
      if (!k) return k.error();
      out.push_back(OtacRecord{l, x, std::move(*k), false});
    }
    return {};
  };
  std::int64_t current = 0;  // the list holding the highest consumed code; 0: nothing consumed
  {
    auto r = q("SELECT list_id,MAX(idx) FROM otacs WHERE n=? AND used=1 AND "
               "list_id=(SELECT MAX(list_id) FROM otacs WHERE n=? AND used=1)");
    r.b(n).b(n);
    auto row = r.step();
    if (!row) return row.error();
    if (*row && !r.col_null(0)) {
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
  auto r = q("SELECT 1 FROM otacs WHERE n=? AND used=0 LIMIT 1 OFFSET ?");
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
    const auto st = r.col_i(1);
    if (st < 0 || st > 2) return make_error(Errc::bad_value, "list " + std::to_string(l.id) + " has an unknown state " + std::to_string(st));
    l.state = static_cast<ListState>(st);
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
  if (sqlite3_changes(s_.db()) != 1) return make_error(Errc::not_found, "no list " + std::to_string(list_id) + " for card " + to_hex(n));
  // refused withdraws the unused codes (used=2); loaded gives withdrawn ones back (a refusal
  // that proved wrong: the card answered another packet of the list OK).
  auto w = state == ListState::refused ? q("UPDATE otacs SET used=2 WHERE n=? AND list_id=? AND used=0")
                                       : q("UPDATE otacs SET used=0 WHERE n=? AND list_id=? AND used=2");
  w.b(n).i(list_id);
  return w.exec();
}

Result<std::vector<ListRepair>> SqliteTx::lists_to_repair(UnixTime now, std::int64_t after, std::uint32_t max_packets,
                                                          std::uint32_t limit) {
  auto r = q("SELECT c.n, l.list_id, COUNT(o.counter) FROM cards c"
             " JOIN lists l ON l.n=c.n"
             " JOIN ota_sent o ON o.n=c.n AND o.kind='list' AND o.ref=l.list_id"
             " WHERE l.state=0 AND (SELECT rsc FROM ota_sent WHERE n=c.n AND kind='list'"
             " AND ref=l.list_id ORDER BY counter DESC LIMIT 1)=-1"
             " GROUP BY c.n, l.list_id"
             " HAVING COUNT(o.counter)<? AND MAX(o.sent_at) + (? << MIN(COUNT(o.counter)-1, 5)) <= ?"
             " ORDER BY c.n, l.list_id LIMIT ?");
  r.i(max_packets).i(after).i(now).i(limit);
  std::vector<ListRepair> out;
  for (std::uint32_t i = 0; i < limit; ++i) {
    auto row = r.step();
    if (!row) return row.error();
    if (!*row) break;
    out.push_back(ListRepair{r.col_b(0), static_cast<std::uint16_t>(r.col_i(1)), static_cast<std::uint32_t>(r.col_i(2))});
  }
  return out;
}

Result<bool> SqliteTx::consume_otac(ByteView n, std::uint16_t list_id, std::uint16_t index, std::string_view txn_id, UnixTime now) {
  // The conditional update is the whole "at most once" mechanism: only one transaction can
  // change used from 0 to 1, whatever process it runs in.
  auto r = q("UPDATE otacs SET used=1,used_at=?,txn_id=? WHERE n=? AND list_id=? AND idx=? AND used=0");
  r.i(now).t(txn_id).b(n).i(list_id).i(index);
  if (auto e = r.exec(); !e) return e.error();
  return sqlite3_changes(s_.db()) == 1;
}

Result<TransactionRecord> SqliteTx::read_txn(Query& r) {
  TransactionRecord t;
  t.txn_id = r.col_t(0);
  t.request_hash = r.col_b(1);
  t.card = r.col_b(2);
  t.list_id = static_cast<std::uint16_t>(r.col_i(3));
  t.index = static_cast<std::uint16_t>(r.col_i(4));
  t.terminal_id = r.col_t(5);
  t.amount_minor = r.col_i(6);
  t.currency = static_cast<std::uint16_t>(r.col_i(7));
  t.door = r.col_t(8);
  t.decision = static_cast<Decision>(r.col_i(9));
  t.reason = r.col_t(10);
  t.auth_code = r.col_t(11);
  t.arc = r.col_b(12);
  t.arpc = r.col_b(13);
  t.created_at = r.col_i(14);
  t.decided_at = r.col_i(15);
  t.decided_by = r.col_t(16);
  t.cryptogram = r.col_b(17);
  t.expires_at = r.col_i(18);
  return t;
}

#define OTAC_TXN_COLUMNS \
  "txn_id,request_hash,card,list_id,idx,terminal_id,amount_minor,currency,door,decision,reason,auth_code,arc,arpc,created_at,decided_at,decided_by,cryptogram,expires_at"

Result<TransactionRecord> SqliteTx::transaction(std::string_view txn_id) {
  auto r = q("SELECT " OTAC_TXN_COLUMNS " FROM transactions WHERE txn_id=?");
  r.t(txn_id);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no transaction " + std::string(txn_id));
  return read_txn(r);
}

Result<void> SqliteTx::insert_transaction(const TransactionRecord& t) {
  auto r = q("INSERT INTO transactions(" OTAC_TXN_COLUMNS ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  r.t(t.txn_id).b(t.request_hash).b(t.card).i(t.list_id).i(t.index).t(t.terminal_id).i(t.amount_minor).i(t.currency)
      .t(t.door).i(static_cast<int>(t.decision)).t(t.reason).t(t.auth_code).b(t.arc).b(t.arpc).i(t.created_at)
      .i(t.decided_at).t(t.decided_by).b(t.cryptogram).i(t.expires_at);
  return r.exec();
}

Result<bool> SqliteTx::decide_held_transaction(const TransactionRecord& t) {
  auto r = q("UPDATE transactions SET decision=?,reason=?,auth_code=?,arc=?,arpc=?,decided_at=?,decided_by=? WHERE txn_id=? AND decision=?");
  r.i(static_cast<int>(t.decision)).t(t.reason).t(t.auth_code).b(t.arc).b(t.arpc).i(t.decided_at).t(t.decided_by).t(t.txn_id)
      .i(static_cast<int>(Decision::held));
  if (auto e = r.exec(); !e) return e.error();
  return sqlite3_changes(s_.db()) == 1;
}

Result<std::vector<TransactionRecord>> SqliteTx::held_due(UnixTime now, std::uint32_t limit) {
  auto r = q("SELECT " OTAC_TXN_COLUMNS " FROM transactions WHERE decision=? AND expires_at<=? ORDER BY expires_at LIMIT ?");
  r.i(static_cast<int>(Decision::held)).i(now).i(limit);
  return read_txns(r, limit);
}

Result<std::uint32_t> SqliteTx::prune_declined(UnixTime before, std::uint32_t limit) {
  // The created_at index finds the old rows; a held transaction that expired later is kept
  // until its decision is old too.
  auto r = q("DELETE FROM transactions WHERE rowid IN (SELECT rowid FROM transactions WHERE created_at<?1"
             " AND decision=?2 AND decided_at<?1 ORDER BY created_at LIMIT ?3)");
  r.i(before).i(static_cast<int>(Decision::declined)).i(limit);
  if (auto e = r.exec(); !e) return e.error();
  return static_cast<std::uint32_t>(sqlite3_changes(s_.db()));
}

Result<std::vector<TransactionRecord>> SqliteTx::transactions(const TransactionFilter& f) {
  auto r = q("SELECT " OTAC_TXN_COLUMNS " FROM transactions WHERE (?1 IS NULL OR card=?1) AND (?2 IS NULL OR terminal_id=?2)"
             " AND (?3 IS NULL OR decision=?3) AND created_at>=?4 AND (?5=0 OR created_at<?5)"
             " ORDER BY created_at DESC, rowid DESC LIMIT ?6");
  if (f.card) r.b(*f.card); else r.null();
  if (f.terminal_id) r.t(*f.terminal_id); else r.null();
  if (f.decision) r.i(static_cast<int>(*f.decision)); else r.null();
  r.i(f.since).i(f.until).i(f.limit);
  return read_txns(r, f.limit);
}

Result<std::vector<TransactionRecord>> SqliteTx::read_txns(Query& r, std::uint32_t limit) {
  std::vector<TransactionRecord> out;
  for (std::uint32_t i = 0; i < limit; ++i) {
    auto row = r.step();
    if (!row) return row.error();
    if (!*row) break;
    auto t = read_txn(r);
    if (!t) return t.error();
    out.push_back(std::move(*t));
  }
  return out;
}

#undef OTAC_TXN_COLUMNS

Result<void> SqliteTx::put_terminal(const TerminalRecord& t) {
  auto r = q("INSERT OR REPLACE INTO terminals(id,cert_fingerprint,limit_minor,enabled) VALUES(?,?,?,?)");
  r.t(t.id).t(t.cert_fingerprint).i(t.limit_minor).i(t.enabled ? 1 : 0);
  return r.exec();
}

Result<TerminalRecord> SqliteTx::terminal(std::string_view id) {
  auto r = q("SELECT cert_fingerprint,limit_minor,enabled FROM terminals WHERE id=?");
  r.t(id);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no terminal " + std::string(id));
  return TerminalRecord{std::string(id), r.col_t(0), r.col_i(1), r.col_i(2) != 0};
}

Result<void> SqliteTx::put_operator(const OperatorRecord& op) {
  auto r = q("INSERT OR REPLACE INTO operators(name,role,token_hash) VALUES(?,?,?)");
  r.t(op.name).i(static_cast<int>(op.role)).b(op.token_hash);
  return r.exec();
}

Result<OperatorRecord> SqliteTx::operator_by_token_hash(ByteView token_hash) {
  auto r = q("SELECT name,role,token_hash FROM operators WHERE token_hash=?");
  r.b(token_hash);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "unknown operator token");
  return OperatorRecord{r.col_t(0), static_cast<Role>(r.col_i(1)), r.col_b(2)};
}

Result<std::int64_t> SqliteTx::enqueue_sms(const OutboxMessage& m) {
  auto r = q("INSERT INTO sms_outbox(card,dest,udh,payload,status,attempts,next_attempt_at,last_reply,created_at)"
             " VALUES(?,?,?,?,?,?,?,?,?)");
  r.b(m.card).t(m.to).b(m.udh).b(m.payload).i(static_cast<int>(m.status)).i(m.attempts).i(m.next_attempt_at)
      .t(m.last_reply).i(m.created_at);
  if (auto e = r.exec(); !e) return e.error();
  return static_cast<std::int64_t>(sqlite3_last_insert_rowid(s_.db()));
}

namespace {
OutboxMessage read_sms(const Query& r) {
  OutboxMessage m;
  m.id = r.col_i(0);
  m.card = r.col_b(1);
  m.to = r.col_t(2);
  m.udh = r.col_b(3);
  m.payload = r.col_b(4);
  m.status = static_cast<OutboxStatus>(r.col_i(5));
  m.attempts = static_cast<std::uint32_t>(r.col_i(6));
  m.next_attempt_at = r.col_i(7);
  m.last_reply = r.col_t(8);
  m.created_at = r.col_i(9);
  return m;
}
}  // namespace

Result<std::vector<OutboxMessage>> SqliteTx::due_sms(UnixTime now, std::uint32_t limit) {
  auto r = q("SELECT id,card,dest,udh,payload,status,attempts,next_attempt_at,last_reply,created_at FROM sms_outbox"
             " WHERE status=0 AND next_attempt_at<=? ORDER BY id LIMIT ?");
  r.i(now).i(limit);
  std::vector<OutboxMessage> out;
  for (std::uint32_t i = 0; i < limit; ++i) {
    auto row = r.step();
    if (!row) return row.error();
    if (!*row) break;
    out.push_back(read_sms(r));
  }
  return out;
}

Result<OutboxMessage> SqliteTx::sms(std::int64_t id) {
  auto r = q("SELECT id,card,dest,udh,payload,status,attempts,next_attempt_at,last_reply,created_at FROM sms_outbox WHERE id=?");
  r.i(id);
  auto row = r.step();
  if (!row) return row.error();
  if (!*row) return make_error(Errc::not_found, "no outbox message " + std::to_string(id));
  return read_sms(r);
}

Result<void> SqliteTx::update_sms(const OutboxMessage& m) {
  auto r = q("UPDATE sms_outbox SET status=?,attempts=?,next_attempt_at=?,last_reply=? WHERE id=?");
  r.i(static_cast<int>(m.status)).i(m.attempts).i(m.next_attempt_at).t(m.last_reply).i(m.id);
  if (auto e = r.exec(); !e) return e;
  if (sqlite3_changes(s_.db()) != 1) return make_error(Errc::not_found, "no outbox message " + std::to_string(m.id));
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
    if (sqlite3_changes(s_.db()) != 1) return make_error(Errc::not_found, "no card " + to_hex(n));
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
  auto r = q("SELECT sig_sealed,pending_sig_sealed,pending_sig_counter,pending_sig_sent,sig_since,server_point FROM card_security"
             " WHERE n=?");
  r.b(n);
  auto row = r.step();
  if (!row) return row.error();
  CardSecurity s;
  if (!*row) return s;
  if (!r.col_null(0)) {
    auto k = kek_.open(r.col_b(0), ad("card-s", n));
    if (!k) return k.error();
    s.sig_key = std::move(*k);
  }
  if (!r.col_null(1)) {
    auto k = kek_.open(r.col_b(1), ad("card-ps", n));
    if (!k) return k.error();
    s.pending_sig_key = std::move(*k);
  }
  s.pending_sig_counter = static_cast<std::uint64_t>(r.col_i(2));
  s.pending_sig_sent = static_cast<std::uint64_t>(r.col_i(3));
  s.sig_since = static_cast<std::uint64_t>(r.col_i(4));
  s.server_point = r.col_b(5);
  return s;
}

Result<void> SqliteTx::set_card_security(ByteView n, const CardSecurity& s) {
  auto r = q("INSERT OR REPLACE INTO card_security(n,sig_sealed,pending_sig_sealed,pending_sig_counter,pending_sig_sent,"
             "sig_since,server_point) VALUES(?,?,?,?,?,?,?)");
  r.b(n);
  if (!s.sig_key) r.null(); else r.b(kek_.seal(s.sig_key->view(), ad("card-s", n)));
  if (!s.pending_sig_key) r.null(); else r.b(kek_.seal(s.pending_sig_key->view(), ad("card-ps", n)));
  r.i(static_cast<std::int64_t>(s.pending_sig_counter)).i(static_cast<std::int64_t>(s.pending_sig_sent))
      .i(static_cast<std::int64_t>(s.sig_since));
  if (s.server_point.empty()) r.null(); else r.b(s.server_point);
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
  r.i(seq).i(at).t(actor).t(action).t(detail).b(audit_mac(kek_, prev, seq, at, actor, action, detail));
  if (auto e = r.exec(); !e) return e.error();
  return seq;
}

// Up to `limit` rows of (seq, at, actor, action, detail, mac) as audit entries.
static Result<std::vector<AuditEntry>> read_audit_rows(Query& r, std::uint32_t limit) {
  std::vector<AuditEntry> out;
  for (std::uint32_t i = 0; i < limit; ++i) {
    auto row = r.step();
    if (!row) return row.error();
    if (!*row) break;
    out.push_back(AuditEntry{r.col_i(0), r.col_i(1), r.col_t(2), r.col_t(3), r.col_t(4), r.col_b(5)});
  }
  return out;
}

Result<std::vector<AuditEntry>> SqliteTx::audit_entries(std::int64_t after_seq, std::uint32_t limit) {
  auto r = q("SELECT seq,at,actor,action,detail,mac FROM audit_log WHERE seq>? ORDER BY seq LIMIT ?");
  r.i(after_seq).i(limit);
  return read_audit_rows(r, limit);
}

Result<std::vector<AuditEntry>> SqliteTx::audit_recent(std::uint32_t limit) {
  auto r = q("SELECT seq,at,actor,action,detail,mac FROM (SELECT * FROM audit_log ORDER BY seq DESC LIMIT ?) ORDER BY seq");
  r.i(limit);
  return read_audit_rows(r, limit);
}

Result<std::int64_t> SqliteTx::verify_audit_chain() {
  auto r = q("SELECT seq,at,actor,action,detail,mac FROM audit_log ORDER BY seq");
  Bytes prev(32, 0);
  std::int64_t expect = 1;
  for (;; ++expect) {
    auto row = r.step();
    if (!row) return row.error();
    if (!*row) break;
    if (r.col_i(0) != expect)
      return make_error(Errc::bad_mac, "audit log entry " + std::to_string(expect) + " is missing");
    Bytes mac = audit_mac(kek_, prev, expect, r.col_i(1), r.col_t(2), r.col_t(3), r.col_t(4));
    if (!ct_equal(mac, r.col_b(5)))
      return make_error(Errc::bad_mac, "audit log entry " + std::to_string(expect) + " was modified");
    prev = std::move(mac);
  }
  return expect - 1;
}

// The process's group for a file, opened and migrated on first use. Keyed by process id too:
// a forked child must not use the connection it inherited (SQLite forbids it); it opens its own.
Result<std::shared_ptr<CommitGroup>> commit_group(const std::filesystem::path& db_file) {
  static std::mutex map_mu;
  static std::map<std::pair<std::string, pid_t>, std::weak_ptr<CommitGroup>> groups;
  std::error_code ec;
  const auto canonical = std::filesystem::weakly_canonical(db_file, ec);
  const std::pair<std::string, pid_t> key{ec ? db_file.string() : canonical.string(), ::getpid()};
  std::lock_guard lock(map_mu);
  if (auto g = groups[key].lock()) return g;
  auto open = [&]() -> Result<DbPtr> {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(db_file.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    DbPtr db(raw);  // sqlite3_open_v2 allocates a handle even on failure; close it either way
    if (rc != SQLITE_OK)
      return make_error(Errc::io, "cannot open database " + db_file.string() + ": " + (raw ? sqlite3_errmsg(raw) : "out of memory"));
    return db;
  };
  auto db = open();
  if (!db) return db.error();
  Connection setup(std::move(*db));
  if (auto m = setup.configure_and_migrate(); !m) return m.error();  // WAL mode from here on
  auto cp = open();
  if (!cp) return cp.error();
  if (sqlite3_exec(cp->get(), "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr) != SQLITE_OK)
    return db_error(cp->get(), "cannot set PRAGMA synchronous=FULL");
  auto g = std::make_shared<CommitGroup>(setup.release(), std::move(*cp));
  sqlite3_wal_hook(g->conn.db(), &Checkpointer::on_commit, &g->checkpointer);  // replaces the automatic checkpoint
  for (auto it = groups.begin(); it != groups.end();) it = it->second.expired() ? groups.erase(it) : std::next(it);
  groups[key] = g;
  return g;
}

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& db_file, std::shared_ptr<const Kek> kek) {
  if (!kek) return make_error(Errc::internal, "open_sqlite_store needs a key-encryption key");
  auto g = commit_group(db_file);
  if (!g) return g.error();
  return std::unique_ptr<Store>(std::make_unique<SqliteStore>(std::move(*g), std::move(kek)));
}

}  // namespace otac::backend
