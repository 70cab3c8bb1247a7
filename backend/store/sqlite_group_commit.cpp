// Group commit of the SQLite store: concurrent Store::run calls in one process share one
// connection and one durable commit (the comment below says how and why).
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <stop_token>
#include <thread>
#include <utility>

#include <unistd.h>

#include "sqlite_db.hpp"
#include "sqlite_store.hpp"
#include "sqlite_tx.hpp"

namespace otac::backend::sqlite {

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

void Connection::execute(std::vector<Pending*>& batch, const std::function<void(std::vector<Pending*>&)>& more) noexcept {
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

void Connection::execute_batch(std::vector<Pending*>& batch, const std::function<void(std::vector<Pending*>&)>& more) {
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

// Runs p's function inside a savepoint of the open transaction. false: SQLite rolled the
// whole transaction back under it, so the batch so far is lost.
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

void Connection::execute_alone(Pending& p) {
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

namespace {

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
}  // namespace otac::backend::sqlite

namespace otac::backend {

Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& db_file, std::shared_ptr<const Kek> kek) {
  if (!kek) return make_error(Errc::internal, "open_sqlite_store needs a key-encryption key");
  auto g = sqlite::commit_group(db_file);
  if (!g) return g.error();
  return std::unique_ptr<Store>(std::make_unique<sqlite::SqliteStore>(std::move(*g), std::move(kek)));
}

}  // namespace otac::backend
