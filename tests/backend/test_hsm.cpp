// Key custody in a PKCS#11 token, with a real SoftHSM2: the key ceremony (hsm-init,
// hsm-migrate, hsm-rotate), failures of the token, and what a copied data directory reveals.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "ceremony_fixture.hpp"
#include "custody.hpp"
#include "rewrap.hpp"
#include "softhsm_fixture.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::Ch;

namespace {

namespace fs = std::filesystem;

// A backend configuration over a data directory, with or without the token.
Config config_for(const fs::path& data_dir, const backend::test::SoftHsm* hsm) {
  Config c;
  c.data_dir = data_dir;
  if (hsm) {
    c.kek_uri = "pkcs11:token=otac;object=kek";
    c.server_key_uri = "pkcs11:token=otac;object=otac-server";
    c.card_ca_key_uri = "pkcs11:token=otac;object=otac-card-ca";
    c.pkcs11_module = backend::test::kSoftHsmModule;
    c.pkcs11_pin_file = hsm->pin;
  }
  return c;
}

// A token after hsm-init, a data directory and the configuration naming both.
struct Initialized {
  backend::test::SoftHsm hsm;
  backend::test::TempDir data;
  Config c = config_for(data.path, &hsm);
  Initialized() { REQUIRE(hsm_init(c, {})); }
};

// A service over the config's database with the custody the config names.
struct Backend {
  std::shared_ptr<const Kek> kek;
  backend::test::Env env;
  Backend(const Config& c, std::uint16_t list_size = 20)
      : kek(open_custody(c, nullptr).value()), env(list_size, kek) {
    env.db = c.resolve(c.database);
    env.svc = std::make_unique<Service>(env.config, [this] { return open_sqlite_store(env.db, kek); },
                                        [this] { return env.clock; });
  }
};

Bytes raw(const SecretBytes& s) { return Bytes(s.view().begin(), s.view().end()); }

// An authorization with code `index` of the card's list.
AuthAnswer authorize(Backend& b, const backend::test::IssuedCard& card, std::uint16_t index, const std::string& txn) {
  Ch ch;
  ch.un = be_bytes(index, 8);
  auto a = b.env.svc->authorize(backend::test::card_request(txn, card.n, card.alg, card.list, index, card.codes[index], ch), "TERM0001");
  if (!a) throw std::runtime_error(a.error().message);
  return *a;
}

// The audit actions, oldest first, and the chain checked.
std::vector<std::string> audit_actions(Backend& b) {
  std::vector<std::string> out;
  auto s = b.env.store();
  REQUIRE(s->run([&](Tx& tx) -> Result<void> {
    auto n = tx.verify_audit_chain();
    if (!n) return n.error();
    auto e = tx.audit_entries(0, 100000);
    if (!e) return e.error();
    for (const auto& x : *e) out.push_back(x.action);
    return {};
  }));
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

}  // namespace

TEST_CASE("SoftHSM2: hsm-init, enrollment and authorization with every key wrapped by the token", "[softhsm]") {
  backend::test::SoftHsm hsm;
  backend::test::TempDir data;
  const Config c = config_for(data.path, &hsm);
  auto init = hsm_init(c, {});
  REQUIRE(init);
  CHECK(init->find("kek_version=1") != std::string::npos);
  CHECK(hsm_init(c, {}));  // idempotent: makes nothing twice
  Backend b(c);
  auto card = backend::test::enroll_issued(b.env);
  CHECK(authorize(b, card, 0, "T-1").decision == Decision::approved);
  CHECK(authorize(b, card, 1, "T-2").decision == Decision::approved);
  CHECK(count_not_under(b.env.db, kSealedToken, 1).value() == 0);  // every sealed value: 02 || version 1
  auto actions = audit_actions(b);
  CHECK(has(actions, "hsm_init"));
  CHECK(has(actions, "enroll"));
  // No file KEK was made: without the token nothing opens.
  CHECK_FALSE(fs::exists(c.resolve(c.kek_file)));
  // The data directory copied without the token reveals no card key and no code.
  backend::test::TempDir copy;
  fs::copy(data.path, copy.path / "data", fs::copy_options::recursive);
  std::vector<Bytes> secrets{raw(card.k)};
  for (const auto& k : card.codes) secrets.push_back(raw(k));
  CHECK(backend::test::find_secrets(copy.path, secrets).empty());
  // The scan itself finds a key that is there (the letter's K in a file).
  std::ofstream(copy.path / "letter.txt") << to_hex(card.k.view());
  CHECK_FALSE(backend::test::find_secrets(copy.path, secrets).empty());
}

TEST_CASE("SoftHSM2: a wrong PIN, a missing token and a PIN file others can read are refused clearly", "[softhsm]") {
  backend::test::SoftHsm hsm;
  backend::test::TempDir data;
  Config c = config_for(data.path, &hsm);
  REQUIRE(hsm_init(c, {}));
  hsm.write_pin("9999");
  auto wrong = open_custody(c, nullptr);
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().message.find("CKR_PIN_INCORRECT") != std::string::npos);
  hsm.write_pin("1234");
  Config missing = c;
  missing.kek_uri = "pkcs11:token=nosuch;object=kek";
  auto m = open_custody(missing, nullptr);
  REQUIRE_FALSE(m);
  CHECK(m.error().message.find("no PKCS#11 token matches pkcs11:token=nosuch") != std::string::npos);
  CHECK(m.error().message.find("'otac'") != std::string::npos);  // names the tokens present
  ::chmod(hsm.pin.c_str(), 0644);
  auto loose = open_custody(c, nullptr);
  REQUIRE_FALSE(loose);
  CHECK(loose.error().message.find("chmod 600") != std::string::npos);
  ::chmod(hsm.pin.c_str(), 0600);
  CHECK(open_custody(c, nullptr));
  // A PIN in the URI is refused by the config parser.
  CHECK_FALSE(p11::parse_uri("pkcs11:token=otac;object=kek?pin-value=1234"));
}

// The outcome of one authorization that may fail: approved, or the error.
std::string try_authorize(Backend& b, const backend::test::IssuedCard& card, std::uint16_t index, const std::string& txn) {
  Ch ch;
  ch.un = be_bytes(index, 8);
  try {
    auto r = b.env.svc->authorize(backend::test::card_request(txn, card.n, card.alg, card.list, index, card.codes[index], ch), "TERM0001");
    if (!r) return r.error().message;
    return r->decision == Decision::approved ? "approved" : "decision " + std::to_string(static_cast<int>(r->decision));
  } catch (const std::exception& e) {  // the store's transaction rolled back
    return e.what();
  }
}

TEST_CASE("SoftHSM2: the token's directory gone while serving: errors, no approval, then recovery without a restart", "[softhsm]") {
  Initialized init;
  auto& [hsm, data, c] = init;
  backend::test::IssuedCard card;
  {
    Backend b(c);
    card = backend::test::enroll_issued(b.env);
    CHECK(authorize(b, card, 0, "T-1").decision == Decision::approved);
    // Root ignores mode 000, so the directory is also moved away: the token's files vanish.
    const fs::path hidden = hsm.dir.path / "tokens.away";
    ::chmod(hsm.tokens.c_str(), 0);
    fs::rename(hsm.tokens, hidden);
    std::string last;
    for (std::uint16_t i = 1; i <= 3; ++i) {
      last = try_authorize(b, card, i, "T-gone-" + std::to_string(i));
      INFO(last);
      CHECK(last != "approved");
      CHECK(last.find("PKCS#11") != std::string::npos);
    }
    // After the first failure the token is lost: the next fail at once and say so.
    CHECK(last.find("is unavailable since") != std::string::npos);
    fs::rename(hidden, hsm.tokens);
    ::chmod(hsm.tokens.c_str(), 0700);
    // Back: the same backend re-opens the token by itself once its backoff allows (the
    // second re-open attempt is due 250 ms after the first failed one).
    std::string back;
    const auto t0 = std::chrono::steady_clock::now();
    for (int attempt = 0; attempt < 100 && back != "approved"; ++attempt) {  // bounded: 100 x 100 ms
      back = try_authorize(b, card, 4, "T-back-" + std::to_string(attempt));
      if (back != "approved") std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    INFO(back);
    CHECK(back == "approved");
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    // The codes tried while the token was away are unused, and now approved.
    for (std::uint16_t i = 1; i <= 3; ++i) CHECK(try_authorize(b, card, i, "T-after-" + std::to_string(i)) == "approved");
  }
  // A restarted backend finds everything as it was: the audit chain is whole.
  Backend b(c);
  CHECK(authorize(b, card, 5, "T-restarted").decision == Decision::approved);
  CHECK(has(audit_actions(b), "enroll"));
}

TEST_CASE("SoftHSM2: the token gone and back under concurrent authorizations: approvals or clean refusals, then approvals again",
          "[softhsm]") {
  Initialized init;
  auto& [hsm, data, c] = init;
  Backend b(c, 100);
  auto card = backend::test::enroll_issued(b.env);
  constexpr int kThreads = 4, kRounds = 25;
  std::vector<std::vector<std::string>> answers(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {  // thread t uses codes t, t+4, t+8, ...: each code once
        const auto code = static_cast<std::uint16_t>(t + kThreads * r);
        answers[static_cast<std::size_t>(t)].push_back(try_authorize(b, card, code, "C-" + std::to_string(code)));
        // 25 rounds of at least 100 ms: the token is away from 0.25 s to 0.65 s, and its
        // re-open attempts are due 0, 0.25 and 0.75 s after the loss.
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  const fs::path hidden = hsm.dir.path / "tokens.away";
  fs::rename(hsm.tokens, hidden);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  fs::rename(hidden, hsm.tokens);
  for (auto& th : threads) th.join();
  int approved = 0, refused = 0;
  std::vector<std::uint16_t> refused_codes;
  for (int t = 0; t < kThreads; ++t) {
    const auto& mine = answers[static_cast<std::size_t>(t)];
    for (std::size_t r = 0; r < mine.size(); ++r) {
      INFO("thread " << t << " round " << r << ": " << mine[r]);
      if (mine[r] == "approved") {
        ++approved;
      } else {
        ++refused;
        CHECK(mine[r].find("PKCS#11") != std::string::npos);  // a clean refusal naming the token
        refused_codes.push_back(static_cast<std::uint16_t>(t + kThreads * static_cast<int>(r)));
      }
    }
    CHECK(mine.back() == "approved");  // each thread is served again by the end
  }
  CHECK(refused > 0);
  CHECK(approved > kThreads * 4);
  // Nothing was half done: each approved code is used, each refused one is not (and is
  // approved now), and the audit chain is whole.
  std::uint32_t unused = 0;
  auto s = b.env.store();
  REQUIRE(s->run([&](Tx& tx) -> Result<void> {
    auto n = tx.unused_count(card.n);
    if (!n) return n.error();
    unused = *n;
    return {};
  }));
  CHECK(unused == 100 - static_cast<std::uint32_t>(approved));
  for (std::uint16_t code : refused_codes) CHECK(try_authorize(b, card, code, "C-again-" + std::to_string(code)) == "approved");
  CHECK(has(audit_actions(b), "enroll"));
}

TEST_CASE("SoftHSM2: a token back with a PIN it refuses: the PIN is tried once, then again only after the PIN file changes",
          "[softhsm]") {
  Initialized init;
  auto& [hsm, data, c] = init;
  Backend b(c);
  auto card = backend::test::enroll_issued(b.env);
  CHECK(try_authorize(b, card, 0, "P-0") == "approved");
  const fs::path hidden = hsm.dir.path / "tokens.away";
  fs::rename(hsm.tokens, hidden);
  CHECK(try_authorize(b, card, 1, "P-gone").find("PKCS#11") != std::string::npos);
  hsm.write_pin("9999");  // the PIN file edited wrongly while the token was away
  fs::rename(hidden, hsm.tokens);
  // Bounded polling (100 x 100 ms): the re-open is refused with the token's answer, and then
  // not tried again while the file is unchanged.
  std::string answer;
  for (int i = 0; i < 100 && answer.find("not tried again") == std::string::npos; ++i) {
    answer = try_authorize(b, card, 1, "P-wrong-" + std::to_string(i));
    REQUIRE(answer != "approved");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO(answer);
  CHECK(answer.find("refused the PIN in " + hsm.pin.string()) != std::string::npos);
  hsm.write_pin("1234");
  for (int i = 0; i < 100 && answer != "approved"; ++i) {
    answer = try_authorize(b, card, 1, "P-fixed-" + std::to_string(i));
    if (answer != "approved") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(answer == "approved");
}

TEST_CASE("SoftHSM2: two users of the token in one process: the one that re-opens it brings the other back", "[softhsm]") {
  Initialized init;
  auto& [hsm, data, c] = init;
  Backend b(c);
  auto other = open_custody(c, nullptr);  // a second Token on the same module (as a ceremony holds)
  REQUIRE(other);
  auto card = backend::test::enroll_issued(b.env);
  const Bytes probe = to_bytes("audit probe");
  const Bytes mac = b.kek->audit_mac(probe);
  CHECK((*other)->audit_mac(probe) == mac);
  const fs::path hidden = hsm.dir.path / "tokens.away";
  fs::rename(hsm.tokens, hidden);
  CHECK(try_authorize(b, card, 0, "U-gone") != "approved");  // the second is not used meanwhile
  fs::rename(hidden, hsm.tokens);
  std::string answer;
  for (int i = 0; i < 100 && answer != "approved"; ++i) {  // bounded: 100 x 100 ms
    answer = try_authorize(b, card, 0, "U-back-" + std::to_string(i));
    if (answer != "approved") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(answer == "approved");
  // The module was initialized again by the first, which ended the second's sessions too; the
  // second sees that at its next call and re-opens its own session before using any.
  Bytes again;
  CHECK_NOTHROW(again = (*other)->audit_mac(probe));
  CHECK(again == mac);
}

TEST_CASE("SoftHSM2: hsm-migrate moves a file-KEK store into the token, resumable after kill -9", "[softhsm]") {
  backend::test::SoftHsm hsm;
  backend::test::TempDir data;
  const Config file_config = config_for(data.path, nullptr);
  std::vector<Bytes> secrets;
  Bytes ca_point;
  std::vector<backend::test::IssuedCard> cards;
  {
    Backend b(file_config);
    cards.push_back(backend::test::enroll_issued(b.env));
    EnrollRequest er;
    er.msisdn = "+4915550002";
    auto e = b.env.svc->enroll_card(er, "admin");
    REQUIRE(e);
    auto l = b.env.svc->issue_list(e->n, "admin");
    REQUIRE(l);
    cards.push_back(backend::test::IssuedCard{e->n, er.algorithm, std::move(e->k), l->first, std::move(l->second)});
    ca_point = b.env.svc->card_ca_public().value();
    CHECK(authorize(b, cards[0], 0, "F-1").decision == Decision::approved);
    auto s = b.env.store();
    REQUIRE(s->run([&](Tx& tx) -> Result<void> {
      auto k = tx.server_key("card-ca");  // "server" is made only for a card with a public key
      REQUIRE(k);
      secrets.push_back(raw(k->private_der));
      // The second card is mid key-rotation: its previous K is kept (retired_k_sealed).
      auto card = tx.card(cards[1].n);
      REQUIRE(card);
      card->retired_k = crypto::random_secret(16);
      card->retired_version = 1;
      secrets.push_back(raw(*card->retired_k));
      return tx.update_card(*card);
    }));
  }
  for (const auto& card : cards) {
    secrets.push_back(raw(card.k));
    for (const auto& k : card.codes) secrets.push_back(raw(k));
  }
  const Config c = config_for(data.path, &hsm);
  const auto db = c.resolve(c.database);
  const std::uint64_t before = count_not_under(db, kSealedToken, 1).value();
  REQUIRE(before >= 40);
  // kill -9 in the middle: a child migrates in batches of 3 and is killed after its 4th.
  const int st = backend::test::migrate_killed_midway(c, 3, 4);
  REQUIRE(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGKILL);
  const std::uint64_t midway = count_not_under(db, kSealedToken, 1).value();
  // Four whole batches committed (batches end at column boundaries, so 9 to 12 values).
  CHECK(midway <= before - 9);
  CHECK(midway >= before - 12);
  // Run again: it resumes and finishes.
  auto m = hsm_migrate(c, {});
  REQUIRE(m);
  CHECK(m->find("rewrapped=" + std::to_string(midway)) != std::string::npos);
  CHECK(count_not_under(db, kSealedToken, 1).value() == 0);
  // The file KEK is gone now; the token alone opens everything, the cards' CA is unchanged.
  fs::remove(c.resolve(c.kek_file));
  Backend b(c);
  CHECK(b.env.svc->card_ca_public().value() == ca_point);
  CHECK(authorize(b, cards[0], 1, "M-1").decision == Decision::approved);
  CHECK(authorize(b, cards[1], 0, "M-2").decision == Decision::approved);
  auto actions = audit_actions(b);  // the chain made under the file KEK still verifies
  CHECK(has(actions, "hsm_migrate"));
  CHECK(has(actions, "enroll"));
  // A copy without the token reveals no key: card keys, codes, and the two private keys.
  backend::test::TempDir copy;
  fs::copy(data.path, copy.path / "data", fs::copy_options::recursive);
  CHECK(backend::test::find_secrets(copy.path, secrets).empty());
}

TEST_CASE("SoftHSM2: hsm-rotate re-wraps under a new KEK version while authorizations go on", "[softhsm]") {
  Initialized init;
  auto& [hsm, data, c] = init;
  Backend b(c, 100);
  auto card = backend::test::enroll_issued(b.env);
  std::vector<backend::test::IssuedCard> more;
  for (int i = 0; i < 5; ++i) {  // more rows, so that the rotation takes several batches
    EnrollRequest er;
    er.msisdn = "+49155500" + std::to_string(10 + i);
    auto e = b.env.svc->enroll_card(er, "admin");
    REQUIRE(e);
    REQUIRE(b.env.svc->issue_list(e->n, "admin"));
  }
  const auto db = c.resolve(c.database);
  REQUIRE(count_not_under(db, kSealedToken, 2).value() > 500);
  std::atomic<bool> stop{false};
  std::atomic<int> approved{0}, failed{0};
  std::thread load([&] {
    for (std::uint16_t i = 0; i < 100 && !stop; ++i) {
      try {
        if (authorize(b, card, i, "R-" + std::to_string(i)).decision == Decision::approved) ++approved;
        else ++failed;
      } catch (const std::exception&) {
        ++failed;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  CeremonyOptions o;
  o.rewrap.batch = 50;
  o.settle = std::chrono::milliseconds(1200);
  auto r = hsm_rotate(c, o);
  stop = true;
  load.join();
  REQUIRE(r);
  CHECK(r->find("version=2") != std::string::npos);
  CHECK(r->find("destroyed=1") != std::string::npos);
  CHECK(failed == 0);
  CHECK(approved > 10);
  CHECK(count_not_under(db, kSealedToken, 2).value() == 0);
  // Version 1 is destroyed: the running backend goes on with version 2 alone.
  auto t = hsm.token().value();
  auto keys = t->find_secret_keys("kek").value();
  REQUIRE(keys.size() == 1);
  CHECK(keys.front().first == be_bytes(2, 4));
  CHECK(authorize(b, card, 99, "R-last").decision == Decision::approved);
  auto actions = audit_actions(b);
  CHECK(has(actions, "kek_rotation_started"));
  CHECK(has(actions, "kek_rotation_finished"));
}
