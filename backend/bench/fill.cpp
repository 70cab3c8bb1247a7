// otac-loadgen's bulk fill: see fill.hpp. Every step goes through the Service's own helpers
// (service_detail.hpp) where one exists, so the rows are those of the real flows: enrollment
// (cards.cpp, Service::enroll_card), a list (ota_flow.cpp, allocate_list), its SMS sent
// (Service::mark_sent), its PoR (Service::handle_mo_sms, record_list_outcome) and an approved
// purchase (authorization.cpp, record_transaction).
#include "fill.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include <sqlite3.h>

#include "otac/common/crypto.hpp"
#include "service_detail.hpp"

namespace otac::backend::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::uint16_t kListSize = 4;
constexpr std::uint8_t kPinState = 0x03;  // three tries left, no PIN entered

UnixTime unix_now() { return static_cast<UnixTime>(std::time(nullptr)); }

// Enrollment as Service::enroll_card writes it: the card (K sealed), its doors (none), the
// audit entry.
Result<CardRecord> enroll(Tx& tx, std::size_t serial, std::string_view actor, UnixTime t) {
  CardRecord c;
  c.n = crypto::random_bytes(8);
  c.algorithm = Algorithm::des3;
  c.msisdn = "+4917" + std::to_string(100000000 + serial);
  c.fail_limit = 5;   // ServiceConfig::default_fail_limit
  c.threshold = 0;    // as otac-loadgen enrolls its own cards: no push as codes run low
  c.currency = 978;   // ServiceConfig::default_currency
  c.k = detail::new_key(c.algorithm);
  c.created_at = t;
  if (auto x = tx.insert_card(c); !x) return x.error();
  if (auto x = tx.set_doors(c.n, {}); !x) return x.error();
  auto a = tx.audit(t, actor, "enroll", "card=" + to_hex(c.n));
  if (!a) return a.error();
  return c;
}

// The list's SMS accepted by the gateway (Service::mark_sent), and the card's OK PoR for the
// packet (Service::handle_mo_sms): the list loaded, the in-flight flag cleared.
Result<void> deliver(Tx& tx, CardRecord& card, std::uint16_t list, UnixTime t) {
  auto queued = tx.queued_sms(card.n, 16);
  if (!queued) return queued.error();
  for (auto& m : *queued) {
    m.status = OutboxStatus::sent;
    ++m.attempts;
    m.last_reply = "0: Accepted for delivery";
    if (auto x = tx.update_sms(m); !x) return x;
  }
  auto counter = tx.latest_ota_sent(card.n, "list", list);
  if (!counter) return counter.error();
  if (auto x = tx.set_ota_rsc(card.n, *counter, 0); !x) return x;
  auto a = tx.audit(t, "card", "por", "card=" + to_hex(card.n) + " counter=" + std::to_string(*counter) + " kind=list rsc=0");
  if (!a) return a.error();
  const PorResult por{card.n, *counter, 0, detail::kSwOk};
  return detail::record_list_outcome(tx, card, por, list, true, kListSize, t);
}

// An approved purchase with code (list, 0), as Service::authorize records it.
Result<void> approve(Tx& tx, const CardRecord& card, std::uint16_t list, const SecretBytes& code, const std::string& txn,
                     const std::string& terminal, UnixTime t) {
  const auto ch = purchase_challenge(terminal);
  const Bytes challenge = ch.encode();
  const Bytes cryptogram = purchase_cryptogram(ch, card.n, list, 0, code);
  const Bytes hash = detail::request_hash("authorize", {as_bytes(txn), card.n, be_bytes(list, 2), be_bytes(0, 2), be_bytes(1, 2),
                                                        Bytes{kPinState}, challenge, cryptogram});
  auto consumed = tx.consume_otac(card.n, list, 0, txn, t);
  if (!consumed) return consumed.error();
  if (!*consumed) return make_error(Errc::state, "fill: code " + std::to_string(list) + "/0 of a new card was used already");
  TransactionRecord rec = detail::new_transaction(txn, hash, card.n, terminal, t);
  rec.list_id = list;
  rec.index = 0;
  rec.amount_minor = ch.amount_minor;
  rec.currency = ch.currency_code;
  rec.door = ch.door_id();
  rec.cryptogram = cryptogram;
  rec.decision = Decision::approved;
  rec.reason = "ok";
  rec.arc = detail::kArcApproved;
  rec.auth_code = detail::random_digits(6);
  auto arpc = detail::mac8(card.algorithm, code, protocol::arpc_input(cryptogram, rec.arc));
  if (!arpc) return arpc.error();
  rec.arpc = std::move(*arpc);
  auto a = detail::record_transaction(tx, rec, terminal, "authorize",
                                      " code=" + std::to_string(list) + "/0 amount=" + std::to_string(rec.amount_minor), t);
  if (!a) return a.error();
  return {};
}

}  // namespace

protocol::Challenge purchase_challenge(const std::string& terminal) {
  protocol::Challenge ch;
  const Bytes un = crypto::random_bytes(8);
  std::copy(un.begin(), un.end(), ch.un.begin());
  ch.amount_minor = 1234;
  ch.currency_code = 978;
  ch.date = {0x26, 0x11, 0x22};
  ch.time = {0x12, 0x00, 0x00};
  ch.type = 0x00;
  ch.terminal = terminal;
  return ch;
}

Bytes purchase_cryptogram(const protocol::Challenge& ch, ByteView n, std::uint16_t list, std::uint16_t index,
                          const SecretBytes& otac) {
  const Bytes m = protocol::mac_input(ch, protocol::CardAnswer{Bytes(n.begin(), n.end()), list, index, 1, {}, kPinState});
  return crypto::mac_alg3(otac, m, crypto::Padding::method2, 8).value();
}

Result<double> fill_store(Store& store, const FillOptions& opts) {
  if (opts.per_run == 0) return make_error(Errc::bad_value, "fill: cards per transaction must be at least 1");
  const auto t0 = Clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  std::size_t done = 0;
  // Bounded: each round adds min(per_run, what is left) cards or fails.
  for (std::size_t round = 0; done < opts.cards && round <= opts.cards / opts.per_run; ++round) {
    if (seconds() > opts.max_seconds)
      return make_error(Errc::timeout, "fill: gave up after " + std::to_string(done) + " cards (" +
                                           std::to_string(static_cast<long>(opts.max_seconds)) + " s)");
    const std::size_t n = std::min(opts.per_run, opts.cards - done);
    const UnixTime t = unix_now();
    std::vector<std::pair<Bytes, std::uint16_t>> added;
    // run may call this again if the database aborts the commit: it only writes new rows.
    auto r = store.run([&](Tx& tx) -> Result<void> {
      added.clear();
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t serial = done + i;
        auto card = enroll(tx, serial, opts.actor, t);
        if (!card) return card.error();
        std::vector<SecretBytes> keys;
        auto list = detail::allocate_list(tx, *card, kListSize, opts.actor, t, &keys);
        if (!list) return list.error();
        if (auto x = deliver(tx, *card, *list, t); !x) return x;
        if (auto x = approve(tx, *card, *list, keys.front(), "F-" + opts.terminal + "-" + std::to_string(serial),
                             opts.terminal, t);
            !x)
          return x;
        added.emplace_back(card->n, *list);
      }
      return {};
    });
    if (!r) return make_error(r.error().code, "fill: after " + std::to_string(done) + " cards: " + r.error().message);
    done += n;
    if (opts.added) opts.added->insert(opts.added->end(), added.begin(), added.end());
    if (opts.checkpoint && (done == opts.cards || (opts.checkpoint_every > 0 && (round + 1) % opts.checkpoint_every == 0))) {
      if (auto c = opts.checkpoint(); !c) return make_error(c.error().code, "fill: after " + std::to_string(done) + " cards: " + c.error().message);
    }
    if (opts.progress) opts.progress(done, seconds());
  }
  return seconds();
}

Result<void> checkpoint_sqlite(const std::filesystem::path& db) {
  sqlite3* raw = nullptr;
  const int open = sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr);
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> conn(raw, sqlite3_close);
  if (open != SQLITE_OK) return make_error(Errc::io, "cannot open " + db.string() + " for a checkpoint: " + sqlite3_errstr(open));
  sqlite3_busy_timeout(conn.get(), 60000);
  // A connection opens the WAL at its first read; a checkpoint before that is a no-op that
  // returns SQLITE_OK (SQLite 3.40).
  if (sqlite3_exec(conn.get(), "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr) != SQLITE_OK)
    return make_error(Errc::io, "cannot read " + db.string() + " for a checkpoint: " + sqlite3_errmsg(conn.get()));
  int log = -1, copied = -1;
  // Another connection's checkpoint (the store's own, PASSIVE) holds the checkpoint lock, for
  // which SQLite does not wait: try again, up to 60 s.
  int rc = SQLITE_BUSY;
  for (int attempt = 0; attempt < 600; ++attempt) {
    rc = sqlite3_wal_checkpoint_v2(conn.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, &log, &copied);
    if (rc != SQLITE_BUSY) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (rc != SQLITE_OK)
    return make_error(Errc::io, "checkpoint of " + db.string() + " failed: " + sqlite3_errmsg(conn.get()));
  if (log != 0 || copied != 0)  // TRUNCATE leaves an empty WAL: 0 and 0
    return make_error(Errc::io, "checkpoint of " + db.string() + " left " + std::to_string(log) + " WAL frames");
  return {};
}

}  // namespace otac::backend::bench
