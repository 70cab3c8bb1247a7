// otac-loadgen's bulk fill (backend/bench/fill.hpp): the cards it adds are what the backend
// leaves after an enrollment, a confirmed list and an approved purchase, and the Service
// itself can use them (their sealed codes open, their used code stays used).
#include <catch2/catch.hpp>

#include <filesystem>
#include <vector>

#include "fill.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using namespace otac::backend::test;

TEST_CASE("the bench fill leaves each card enrolled, with a loaded list of 4 and its first code used in an approval",
          "[service][bench]") {
  Env env;
  REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0001", "ab", 0, true}, "admin"));
  auto store = env.store();
  std::vector<std::size_t> progress;
  bench::FillOptions fo;
  fo.cards = 30;
  fo.per_run = 7;
  fo.terminal = "TERM0001";
  fo.progress = [&](std::size_t done, double) { progress.push_back(done); };
  std::vector<std::pair<Bytes, std::uint16_t>> added;
  fo.added = &added;
  int checkpoints = 0;
  fo.checkpoint_every = 2;
  fo.checkpoint = [&] {
    ++checkpoints;
    return bench::checkpoint_sqlite(env.db);
  };
  auto filled = bench::fill_store(*store, fo);
  REQUIRE(filled);
  CHECK(progress == std::vector<std::size_t>{7, 14, 21, 28, 30});
  CHECK(checkpoints == 3);  // after the 2nd and 4th transaction, and at the end
  // The last checkpoint truncated the WAL: everything is in the database file.
  const auto wal = std::filesystem::path(env.db.string() + "-wal");
  CHECK((!std::filesystem::exists(wal) || std::filesystem::file_size(wal) == 0));

  std::vector<Bytes> ids;
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    auto got = tx.card_ids(1000);
    if (!got) return got.error();
    ids = *got;
    for (const auto& n : ids) {
      auto c = tx.card(n);
      REQUIRE(c);
      CHECK(c->status == CardStatus::active);
      CHECK(c->threshold == 0);
      CHECK(c->k.size() == 16);
      CHECK_FALSE(c->list_push_in_flight);
      auto lists = tx.lists(n);
      REQUIRE(lists);
      REQUIRE(lists->size() == 1);
      const ListInfo& l = lists->front();
      CHECK(l.state == ListState::loaded);
      CHECK(l.count == 4);
      CHECK(l.unused == 3);
      auto used = tx.otac(n, l.id, 0);
      REQUIRE(used);
      CHECK(used->used);
      TransactionFilter f;
      f.card = n;
      auto txns = tx.transactions(f);
      REQUIRE(txns);
      REQUIRE(txns->size() == 1);
      CHECK(txns->front().decision == Decision::approved);
      CHECK(txns->front().reason == "ok");
      CHECK(txns->front().list_id == l.id);
      CHECK(txns->front().index == 0);
      CHECK(txns->front().terminal_id == "TERM0001");
      CHECK(txns->front().arpc.size() == 8);
      CHECK(txns->front().auth_code.size() == 6);
    }
    auto depth = tx.outbox_depth();
    REQUIRE(depth);
    CHECK(*depth == 0);  // every list's SMS went out
    // register_terminal, then per card: enroll, issue_list, por, authorize; the chain verifies.
    auto chain = tx.verify_audit_chain();
    REQUIRE(chain);
    CHECK(*chain == 1 + 30 * 4);
    return {};
  }));
  REQUIRE(ids.size() == 30);
  // What the fill reports having added (otac-loadgen --fill-traffic sends requests to them).
  REQUIRE(added.size() == 30);
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    for (const auto& [n, list] : added) {
      auto lists = tx.lists(n);
      REQUIRE(lists);
      REQUIRE(lists->size() == 1);
      CHECK(lists->front().id == list);
    }
    return {};
  }));

  // The Service approves the card's next code (its sealed key opens) and refuses the used one.
  const Bytes& n = ids.front();
  std::uint16_t list = 0;
  SecretBytes next;
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    auto lists = tx.lists(n);
    REQUIRE(lists);
    list = lists->front().id;
    auto code = tx.otac(n, list, 1);
    REQUIRE(code);
    next = code->key.clone();
    return {};
  }));
  const Ch ch;
  auto ok = env.svc->authorize(card_request("T-next", n, Algorithm::des3, list, 1, next, ch), "TERM0001");
  REQUIRE(ok);
  CHECK(ok->decision == Decision::approved);
  SecretBytes first;
  REQUIRE(store->run([&](Tx& tx) -> Result<void> {
    auto code = tx.otac(n, list, 0);
    REQUIRE(code);
    first = code->key.clone();
    return {};
  }));
  auto again = env.svc->authorize(card_request("T-again", n, Algorithm::des3, list, 0, first, ch), "TERM0001");
  REQUIRE(again);
  CHECK(again->decision == Decision::declined);
  CHECK(again->reason == "code_used");
}

TEST_CASE("the bench fill refuses zero cards per transaction", "[service][bench]") {
  Env env;
  auto store = env.store();
  bench::FillOptions fo;
  fo.cards = 1;
  fo.per_run = 0;
  auto r = bench::fill_store(*store, fo);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::bad_value);
}
