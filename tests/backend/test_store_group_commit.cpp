// Group commit in the SQLite store: concurrent Store::run calls that share one database commit
// keep the semantics of one transaction each (serial order, no lost update, a failing or
// throwing call undone alone, nothing answered before the commit).
#include <catch2/catch.hpp>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::Env;

namespace {

constexpr int kThreads = 24;

TerminalRecord term(const std::string& id, std::int64_t limit = 0) { return TerminalRecord{id, "fp", limit, true}; }

// Starts kThreads callers while a first call holds the commit lead for `hold`, so that the
// others queue up and run as one batch on the leader's thread.
template <class Fn>
void race_behind_a_slow_leader(Store& first, std::vector<std::unique_ptr<Store>>& stores, std::chrono::milliseconds hold,
                               Fn&& body) {
  std::atomic<bool> leading{false};
  bool leader_ok = false;  // read after join: Catch2 2.x assertions belong on the main thread
  std::thread leader([&] {
    auto r = first.run([&](Tx& tx) -> Result<void> {
      leading = true;
      std::this_thread::sleep_for(hold);
      return tx.put_terminal(term("LEADER00"));
    });
    leader_ok = r.ok();
  });
  for (int i = 0; i < 1000 && !leading; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(leading);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back([&, i] { body(i, *stores[static_cast<std::size_t>(i)]); });
  for (auto& t : threads) t.join();
  leader.join();
  CHECK(leader_ok);
}

std::vector<std::unique_ptr<Store>> open_stores(Env& env) {
  std::vector<std::unique_ptr<Store>> v;
  for (int i = 0; i < kThreads; ++i) v.push_back(env.store());
  return v;
}

}  // namespace

TEST_CASE("group commit: calls queued behind a commit run together on the leader's thread, in one transaction each") {
  Env env;
  auto first = env.store();
  auto stores = open_stores(env);
  std::atomic<int> ran_elsewhere{0}, failed{0};
  race_behind_a_slow_leader(*first, stores, std::chrono::milliseconds(200), [&](int i, Store& s) {
    const auto caller = std::this_thread::get_id();
    auto r = s.run([&](Tx& tx) -> Result<void> {
      if (std::this_thread::get_id() != caller) ++ran_elsewhere;
      return tx.put_terminal(term("T" + std::to_string(1000000 + i)));
    });
    if (!r) ++failed;
  });
  CHECK(failed.load() == 0);
  // Every caller got OK only after its write was committed: a fresh connection sees all.
  auto check = env.store();
  REQUIRE(check->run([&](Tx& tx) -> Result<void> {
    for (int i = 0; i < kThreads; ++i) CHECK(tx.terminal("T" + std::to_string(1000000 + i)));
    CHECK(tx.terminal("LEADER00"));
    return {};
  }));
  // The 24 callers queued while the first held the lead: at least some of them were run by
  // another thread (the next leader), which is what batching means here.
  CHECK(ran_elsewhere.load() > 0);
}

TEST_CASE("group commit: a failing or throwing call in a batch is undone alone, the others commit") {
  Env env;
  auto first = env.store();
  auto stores = open_stores(env);
  std::vector<int> outcome(kThreads, -1);  // 0 ok, 1 error, 2 exception
  std::vector<std::string> message(kThreads);  // checked after the threads joined
  race_behind_a_slow_leader(*first, stores, std::chrono::milliseconds(200), [&](int i, Store& s) {
    try {
      auto r = s.run([&](Tx& tx) -> Result<void> {
        // Every call writes first, then some fail: the failing ones' writes must vanish.
        if (auto x = tx.put_terminal(term("T" + std::to_string(1000000 + i))); !x) return x;
        if (i % 3 == 1) return make_error(Errc::state, "refused on purpose");
        if (i % 3 == 2) throw std::runtime_error("thrown on purpose");
        return {};
      });
      outcome[static_cast<std::size_t>(i)] = r ? 0 : 1;
      if (!r) message[static_cast<std::size_t>(i)] = r.error().message;
    } catch (const std::runtime_error& e) {
      message[static_cast<std::size_t>(i)] = e.what();
      outcome[static_cast<std::size_t>(i)] = 2;
    }
  });
  for (int i = 0; i < kThreads; ++i) {
    const auto k = static_cast<std::size_t>(i);
    if (outcome[k] == 1) CHECK(message[k] == "refused on purpose");
    if (outcome[k] == 2) CHECK(message[k] == "thrown on purpose");
  }
  auto check = env.store();
  REQUIRE(check->run([&](Tx& tx) -> Result<void> {
    for (int i = 0; i < kThreads; ++i) {
      INFO("caller " << i);
      CHECK(outcome[static_cast<std::size_t>(i)] == i % 3);
      CHECK(static_cast<bool>(tx.terminal("T" + std::to_string(1000000 + i))) == (i % 3 == 0));
    }
    return {};
  }));
}

TEST_CASE("group commit: read-modify-write from many threads loses no update (the batch is a serial schedule)") {
  Env env;
  auto first = env.store();
  REQUIRE(first->run([&](Tx& tx) -> Result<void> { return tx.put_terminal(term("COUNTER0", 0)); }));
  auto stores = open_stores(env);
  constexpr int kRounds = 20;
  std::vector<std::thread> threads;
  std::atomic<int> failed{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < kRounds; ++k) {
        auto r = stores[static_cast<std::size_t>(i)]->run([&](Tx& tx) -> Result<void> {
          auto t = tx.terminal("COUNTER0");
          if (!t) return t.error();
          t->limit_minor += 1;
          return tx.put_terminal(*t);
        });
        if (!r) ++failed;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failed.load() == 0);
  REQUIRE(first->run([&](Tx& tx) -> Result<void> {
    CHECK(tx.terminal("COUNTER0")->limit_minor == kThreads * kRounds);
    return {};
  }));
}

TEST_CASE("group commit: the audit chain stays intact when audited calls share commits and some fail") {
  Env env;
  auto stores = open_stores(env);
  std::vector<std::thread> threads;
  std::atomic<int> committed{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 5; ++k) {
        auto r = stores[static_cast<std::size_t>(i)]->run([&](Tx& tx) -> Result<void> {
          auto a = tx.audit(1, "test", "probe", "thread " + std::to_string(i) + " round " + std::to_string(k));
          if (!a) return a.error();
          if ((i + k) % 4 == 0) return make_error(Errc::state, "undo this entry");
          return {};
        });
        if (r) ++committed;
      }
    });
  }
  for (auto& t : threads) t.join();
  auto s = env.store();
  REQUIRE(s->run([&](Tx& tx) -> Result<void> {
    auto n = tx.verify_audit_chain();
    REQUIRE(n);
    CHECK(*n == committed.load());
    return {};
  }));
}

TEST_CASE("group commit: run_async returns before its commit and completes once, after the commit, off the caller's thread") {
  Env env;
  auto first = env.store();
  auto s = env.store();
  std::atomic<bool> leading{false}, release{false};
  // A slow call holds the committer, so the asynchronous calls below must wait for it.
  std::thread slow([&] {
    (void)first->run([&](Tx& tx) -> Result<void> {
      leading = true;
      for (int i = 0; i < 2000 && !release; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return tx.put_terminal(term("SLOW0000"));
    });
  });
  for (int i = 0; i < 1000 && !leading; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(leading);

  struct Outcome {
    std::mutex mu;
    std::condition_variable cv;
    int calls = 0;
    bool ok = false;
    std::string error;
    bool visible = false;  // the write, seen by a fresh connection from inside the completion
    bool on_caller = false;
  };
  const auto caller = std::this_thread::get_id();
  auto run = [&](Outcome& o, std::string id, bool fail) {
    s->run_async(
        [id, fail](Tx& tx) -> Result<void> {
          if (auto x = tx.put_terminal(term(id)); !x) return x;
          if (fail) return make_error(Errc::state, "refused on purpose");
          return {};
        },
        [&o, &env, id, caller](Result<void> r) {
          // A reader of its own (not the store): sees only what is committed.
          sqlite3* db = nullptr;
          bool seen = false;
          if (sqlite3_open_v2(env.db.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
            sqlite3_stmt* st = nullptr;
            const std::string sql = "SELECT count(*) FROM terminals WHERE id='" + id + "'";
            if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
              seen = sqlite3_column_int(st, 0) == 1;
            sqlite3_finalize(st);
          }
          sqlite3_close(db);
          std::lock_guard lock(o.mu);
          ++o.calls;
          o.ok = r.ok();
          if (!r) o.error = r.error().message;
          o.visible = seen;
          o.on_caller = std::this_thread::get_id() == caller;
          o.cv.notify_all();
        });
  };
  Outcome good, bad;
  run(good, "ASYNC001", false);
  run(bad, "ASYNC002", true);
  {
    // Both calls returned at once although the committer is still busy: nothing completed yet.
    std::lock_guard a(good.mu);
    std::lock_guard b(bad.mu);
    CHECK(good.calls == 0);
    CHECK(bad.calls == 0);
  }
  release = true;
  slow.join();
  for (Outcome* o : {&good, &bad}) {
    std::unique_lock lock(o->mu);
    o->cv.wait_for(lock, std::chrono::seconds(10), [&] { return o->calls > 0; });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // a second completion would show now
  std::lock_guard a(good.mu);
  std::lock_guard b(bad.mu);
  CHECK(good.calls == 1);
  CHECK(good.ok);
  CHECK(good.visible);  // durable (committed) before the completion ran
  CHECK_FALSE(good.on_caller);
  CHECK(bad.calls == 1);
  CHECK_FALSE(bad.ok);
  CHECK(bad.error == "refused on purpose");
  CHECK_FALSE(bad.visible);  // undone alone
}

TEST_CASE("group commit: a run_async function that throws completes once with an error naming the exception") {
  Env env;
  auto s = env.store();
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0;
  std::string error;
  s->run_async([](Tx&) -> Result<void> { throw std::runtime_error("thrown on purpose"); },
               [&](Result<void> r) {
                 std::lock_guard lock(mu);
                 ++calls;
                 if (!r) error = r.error().message;
                 cv.notify_all();
               });
  std::unique_lock lock(mu);
  cv.wait_for(lock, std::chrono::seconds(10), [&] { return calls > 0; });
  CHECK(calls == 1);
  CHECK(error.find("thrown on purpose") != std::string::npos);
  // The store still works after it.
  lock.unlock();
  CHECK(s->run([](Tx& tx) -> Result<void> { return tx.put_terminal(term("AFTER000")); }));
}

// The committer only writes the WAL; the syncer's fdatasync makes a batch durable before it is
// answered. When that sync cannot be done (here: the WAL file is gone from the directory, so
// the syncer cannot reach it), no call may be reported as done, and later calls are refused
// without running: after a failed fsync the kernel may have dropped the unwritten pages.
TEST_CASE("group commit: when the write-ahead log cannot be synced, nothing is reported done and later calls are refused") {
  Env env;
  env.svc.reset();  // only this test's store uses the file
  auto s = env.store();
  REQUIRE(s->run([](Tx& tx) { return tx.put_terminal(term("BEFORE00")); }));
  const auto wal = std::filesystem::path(env.db.string() + "-wal");
  REQUIRE(std::filesystem::exists(wal));
  std::filesystem::remove(wal);  // SQLite keeps writing to the open file; the syncer cannot find it

  auto r = s->run([](Tx& tx) { return tx.put_terminal(term("AFTER000")); });
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::io);
  CHECK_THAT(r.error().message, Catch::Contains("write-ahead log"));

  bool ran = false;
  auto later = s->run([&](Tx& tx) {
    ran = true;
    return tx.put_terminal(term("LATER000"));
  });
  REQUIRE_FALSE(later);
  CHECK(later.error().code == Errc::io);
  CHECK_FALSE(ran);
}
