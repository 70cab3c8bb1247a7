// Group commit of the SQLite store: concurrent Store::run and Store::run_async calls in one
// process share one connection, one committing thread and one durable commit (the comment
// below says how and why).
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "otac/sys/log.hpp"
#include "otac/sys/thread.hpp"
#include "sqlite_db.hpp"
#include "sqlite_paced_vfs.hpp"
#include "sqlite_store.hpp"
#include "sqlite_tx.hpp"

namespace otac::backend::sqlite {

// ---- group commit ---------------------------------------------------------------------------
//
// Durable commits cost one fsync each (WAL, synchronous=FULL). To amortize it, every Store
// opened on the same database file in one process shares one SQLite connection and one
// committing thread. Store::run and Store::run_async queue their function there; the
// committer takes every queued call (up to kMaxBatch), runs them one after another inside ONE
// SQLite transaction, each within its own SAVEPOINT (calls that queue meanwhile join it), and
// commits once. The commit only writes the WAL (synchronous=NORMAL on this connection); the
// committer hands the batch to a syncing thread and goes on with the next batch at once. The
// syncer runs fdatasync on the WAL file, once for every batch committed since its last round,
// and only then answers the calls of those batches: run returns, run_async's completion is
// called. So "durable when answered" holds exactly as with synchronous=FULL, while the
// committer never waits for the disk, and a caller of run_async (a network thread) never
// blocks. Readers in other processes (otac-admin) may see a commit up to one fdatasync before
// it is durable; no answer depends on such a read. The functions run strictly
// one after another (a batch is a serial schedule), so the conditional update in
// consume_otac, the idempotency lookup by txn_id and the audit chain see the same states as
// with one transaction each. A function that fails (or throws) is rolled back to its
// savepoint and only its caller sees the error. If SQLite aborted the whole transaction
// instead (I/O error, disk full), the others of the batch are retried one by one, each in a
// transaction of its own. Other processes on the same file still meet SQLite's own write lock
// (BEGIN IMMEDIATE), and one connection per process keeps its page cache valid from one batch
// to the next.

// One call of Store::run or Store::run_async, queued in a CommitGroup.
struct Pending {
  std::function<Result<void>(Tx&)> owned;  // run_async: the function, kept until answered
  const std::function<Result<void>(Tx&)>* fn = nullptr;
  const Kek* kek = nullptr;
  Result<void> result;
  std::exception_ptr exception;  // run: rethrown in the caller's thread
  Store::Done done;              // run_async's completion; empty for a caller of run
  // A caller of run sleeps on its own condition variable, so that a commit wakes exactly the
  // callers of its batch. (Not std::atomic::wait: libstdc++ spins on sched_yield first, which
  // cost a tenth of the CPU.)
  std::mutex mu;
  std::condition_variable cv;
  bool answered = false;  // guarded by mu

  /// Called once, by the syncer, when the batch holding this call is durable or failed.
  void answer() noexcept {
    if (done) {
      Result<void> r = std::move(result);
      if (exception) r = failure_of(exception);
      try {
        done(std::move(r));
      } catch (...) {  // a completion must not throw; there is no one left to tell
      }
      return;
    }
    {
      std::lock_guard lock(mu);
      answered = true;
    }
    cv.notify_one();  // the syncer holds a shared_ptr: the Pending outlives this call
  }
  void wait() {
    std::unique_lock lock(mu);
    cv.wait(lock, [this] { return answered; });
  }

  // What run_async's completion sees of an exception: a Failure keeps its code (a key token
  // that is out for now stays `unavailable`), anything else is internal.
  static Error failure_of(const std::exception_ptr& e) {
    const std::string prefix = "a store transaction failed: ";
    try {
      std::rethrow_exception(e);
    } catch (const Failure& f) {
      return make_error(f.error().code, prefix + f.error().message);
    } catch (const std::exception& x) {
      return make_error(Errc::internal, prefix + x.what());
    } catch (...) {
      return make_error(Errc::internal, prefix + "unknown exception");
    }
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
    sys::name_this_thread("otac-checkpoint");
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

// Makes committed batches durable and then answers their calls, on a thread of its own (see
// the comment at the top). The committing connection runs with synchronous=NORMAL, so its
// COMMIT writes the WAL without syncing it; here one fdatasync of the WAL file covers every
// batch handed over since the last one (fdatasync flushes the file, whichever descriptor it is
// called on). The WAL is never deleted while this process holds its connections open; the
// file is reopened if its inode ever changes all the same.
class Syncer {
 public:
  using Batch = std::vector<std::shared_ptr<Pending>>;

  explicit Syncer(std::string wal_path) : wal_path_(std::move(wal_path)), thread_([this](std::stop_token st) { loop(st); }) {}
  ~Syncer() {
    // The thread answers what is handed over, then stops; only then may the descriptor it
    // syncs be closed (a destructor's body runs before its members are destroyed).
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  Syncer(const Syncer&) = delete;
  Syncer& operator=(const Syncer&) = delete;

  /// Hands over a committed (or failed) batch; its calls are answered once the WAL is synced.
  void hand_over(Batch batch) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(batch));
    }
    cv_.notify_one();
  }
  /// The error every later call gets after an fdatasync failed (empty while none has).
  std::optional<Error> failure() const {
    std::lock_guard lock(mu_);
    return failure_;
  }

 private:
  // Ends when stop is requested and nothing is left handed over.
  void loop(const std::stop_token& stop) {
    sys::name_this_thread("otac-sync");
    for (;;) {
      std::deque<Batch> round;
      {
        std::unique_lock lock(mu_);
        if (!cv_.wait(lock, stop, [this] { return !queue_.empty(); })) return;
        round.swap(queue_);
      }
      auto synced = sync();
      if (!synced) {
        std::lock_guard lock(mu_);
        if (!failure_) {
          failure_ = synced.error();
          sys::log::error("database_sync_failed", {{"wal", wal_path_}, {"error", synced.error().message},
                                                   {"effect", "every store transaction is refused until the backend is restarted"}});
        }
      }
      for (Batch& b : round) {
        for (const auto& p : b) {
          // After a failed sync nothing of the round may be reported as done: Linux may have
          // dropped the unwritten pages, and a later fdatasync would not report it again.
          if (!synced && p->result && !p->exception) p->result = synced.error();
          p->answer();
        }
      }
    }
  }

  Result<void> sync() {
    struct stat now{};
    if (::stat(wal_path_.c_str(), &now) != 0) {
      return make_error(Errc::io, "cannot find the database's write-ahead log " + wal_path_ + ": " + std::strerror(errno));
    }
    if (fd_ < 0 || now.st_ino != ino_ || now.st_dev != dev_) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = ::open(wal_path_.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_ < 0) return make_error(Errc::io, "cannot open the database's write-ahead log " + wal_path_ + ": " + std::strerror(errno));
      ino_ = now.st_ino;
      dev_ = now.st_dev;
    }
    if (::fdatasync(fd_) != 0) {
      return make_error(Errc::io, "the database's write-ahead log " + wal_path_ + " could not be synced to disk (" +
                                      std::strerror(errno) + "); the last changes may be lost. Check the disk, then restart");
    }
    return {};
  }

  const std::string wal_path_;
  int fd_ = -1;
  ino_t ino_ = 0;
  dev_t dev_ = 0;
  mutable std::mutex mu_;
  std::condition_variable_any cv_;  // a batch was handed over; its wait also ends on thread_'s stop
  std::deque<Batch> queue_;
  std::optional<Error> failure_;  // guarded by mu_
  std::jthread thread_;  // declared last: started after, and joined before, the members it uses
};

// The calls queued for one database file in this process, its connections, its committer and
// its syncer.
class CommitGroup {
 public:
  CommitGroup(DbPtr db, DbPtr checkpoint_db, std::string wal_path)
      : checkpointer_(std::move(checkpoint_db)), conn_(std::move(db)), syncer_(std::move(wal_path)),
        committer_([this](std::stop_token st) { commit_loop(st); }) {}
  // committer_ (destroyed first) commits what is queued and stops; then syncer_ answers it.
  ~CommitGroup() = default;
  CommitGroup(const CommitGroup&) = delete;
  CommitGroup& operator=(const CommitGroup&) = delete;

  /// Queues a call; the committer answers it once its batch is durable (or failed).
  void submit(std::shared_ptr<Pending> p) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(p));
    }
    cv_.notify_one();
  }
  /// For set-up only, before any call is queued.
  sqlite3* db() const { return conn_.db(); }
  Checkpointer& checkpointer() { return checkpointer_; }

 private:
  // Ends when stop is requested and nothing is left queued; each round commits one batch.
  void commit_loop(const std::stop_token& stop) {
    sys::name_this_thread("otac-commit");
    for (;;) {
      {
        std::unique_lock lock(mu_);
        if (!cv_.wait(lock, stop, [this] { return !queue_.empty(); })) return;
      }
      std::vector<std::shared_ptr<Pending>> batch;  // keeps every Pending alive until answered
      const auto take = [&](std::vector<Pending*>& raw) {
        std::lock_guard lock(mu_);
        while (!queue_.empty() && raw.size() < kMaxBatch) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
          raw.push_back(batch.back().get());
        }
      };
      std::vector<Pending*> raw;
      take(raw);
      if (auto failed = syncer_.failure()) {
        for (Pending* p : raw) p->result = *failed;  // nothing more is run after a failed sync
      } else {
        conn_.execute(raw, take);
      }
      syncer_.hand_over(std::move(batch));
    }
  }

  std::mutex mu_;
  std::condition_variable_any cv_;  // a call was queued; its wait also ends on committer_'s stop
  std::deque<std::shared_ptr<Pending>> queue_;  // calls not yet taken into a batch
  // conn_ is declared after checkpointer_, so it closes first: its WAL hook points there.
  Checkpointer checkpointer_;
  Connection conn_;  // only the committer touches it (and set-up, before it starts)
  Syncer syncer_;    // joined after committer_, so it answers the last batches
  std::jthread committer_;  // declared last: started after, and joined before, what it uses
};

class SqliteStore final : public Store {
 public:
  SqliteStore(std::shared_ptr<CommitGroup> group, std::shared_ptr<const Kek> kek)
      : group_(std::move(group)), kek_(std::move(kek)) {}

  Result<void> run(const std::function<Result<void>(Tx&)>& fn) override {
    // Shared with the committer, which may still be signalling it when this call returns.
    auto me = std::make_shared<Pending>();
    me->fn = &fn;
    me->kek = kek_.get();
    group_->submit(me);
    me->wait();
    if (me->exception) std::rethrow_exception(me->exception);
    return std::move(me->result);
  }

  void run_async(std::function<Result<void>(Tx&)> fn, Done done) override {
    auto me = std::make_shared<Pending>();
    me->owned = std::move(fn);
    me->fn = &me->owned;
    me->kek = kek_.get();
    me->done = std::move(done);
    group_->submit(std::move(me));
  }

 private:
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
  auto open = [&](const char* vfs) -> Result<DbPtr> {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(db_file.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, vfs);
    DbPtr db(raw);  // sqlite3_open_v2 allocates a handle even on failure; close it either way
    if (rc != SQLITE_OK)
      return make_error(Errc::io, "cannot open database " + db_file.string() + ": " + (raw ? sqlite3_errmsg(raw) : "out of memory"));
    return db;
  };
  auto db = open(nullptr);
  if (!db) return db.error();
  Connection setup(std::move(*db));
  if (auto m = setup.configure_and_migrate(); !m) return m.error();  // WAL mode from here on
  // The checkpoints' writes reach the disk in paced runs (sqlite_paced_vfs.hpp); without that
  // VFS (SQLite refused to register it) they go out at the fsync, as SQLite does by itself.
  auto cp = open(paced_vfs());
  if (!cp) return cp.error();
  if (sqlite3_exec(cp->get(), "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr) != SQLITE_OK)
    return db_error(cp->get(), "cannot set PRAGMA synchronous=FULL");
  // The committing connection only writes the WAL at COMMIT; its Syncer makes each batch
  // durable before answering it (see the comment at the top).
  if (sqlite3_exec(setup.db(), "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr) != SQLITE_OK)
    return db_error(setup.db(), "cannot set PRAGMA synchronous=NORMAL");
  const char* wal = sqlite3_filename_wal(sqlite3_db_filename(setup.db(), "main"));
  if (wal == nullptr || *wal == '\0') return make_error(Errc::internal, "the database " + db_file.string() + " has no write-ahead log name");
  auto g = std::make_shared<CommitGroup>(setup.release(), std::move(*cp), std::string(wal));
  // Replaces the automatic checkpoint. Set before any call is queued (submit's mutex orders it
  // before the committer's first use of the connection).
  sqlite3_wal_hook(g->db(), &Checkpointer::on_commit, &g->checkpointer());
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
