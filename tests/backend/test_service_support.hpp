// Shared fixtures of the backend-core tests: a temporary directory with a database and a
// KEK, and a challenge/cryptogram built by hand from protocol.md §3 (independently of the
// service's own MAC-input builder).
#pragma once

#include <cstdio>

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "otac/common/crypto.hpp"
#include "service.hpp"
#include "sqlite_store.hpp"
#include "support/challenge.hpp"
#include "test_support.hpp"

namespace otac::backend::test {

/// A fresh temporary directory, removed at scope exit (tests/test_support.hpp).
using TempDir = otac::test::TempDir;

/// A fixed test KEK.
inline std::shared_ptr<const Kek> test_kek() {
  SecretBytes raw(hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"));
  return std::make_shared<const Kek>(Kek::from_bytes(raw));
}

/// A database in a temp dir and a Service over it.
struct Env {
  TempDir dir;
  std::filesystem::path db = dir.path / "otac.db";
  std::shared_ptr<const Kek> kek = test_kek();
  UnixTime clock = 1'700'000'000;  // 2023-11-14 22:13:20 UTC
  ServiceConfig config;
  std::unique_ptr<Service> svc;

  /// custody: another key custody than the fixed file KEK (a SoftHSM2 token).
  explicit Env(std::uint16_t list_size = 20, std::shared_ptr<const Kek> custody = nullptr) {
    if (custody) kek = std::move(custody);
    config.list_size = list_size;
    config.currencies = load_iso4217().value();  // Debian's iso-codes, as the server loads it
    restart();
  }
  /// A new Service over the same database, with `config` as it is now.
  void restart() {
    svc.reset();
    svc = std::make_unique<Service>(config, [this] { return open_sqlite_store(db, kek); }, [this] { return clock; });
  }
  std::unique_ptr<Store> store() {
    auto s = open_sqlite_store(db, kek);
    if (!s) throw std::runtime_error(s.error().message);
    return std::move(*s);
  }
};

/// Appends a TLV with a short length.
inline void tlv(Bytes& out, Bytes tag, const Bytes& v) {
  append(out, tag);
  out.push_back(static_cast<std::uint8_t>(v.size()));
  append(out, v);
}

/// A challenge of 2023-11-14 22:13:20 (tests/support/challenge.hpp).
struct Ch : otac::test::Challenge {
  Ch() {
    date = hex("231114");
    time = hex("221320");
  }
};

/// The card's 8-byte MAC: ISO 9797-1 alg 3 pad 2 (3DES) or AES-CMAC truncated (AES).
inline Bytes card_mac(Algorithm alg, const SecretBytes& key, const Bytes& data) {
  if (alg == Algorithm::des3) return crypto::mac_alg3(key, data, crypto::Padding::method2, 8).value();
  Bytes m = crypto::aes_cmac(key, data).value();
  m.resize(8);
  return m;
}

/// The 8 digits a card shows for code (list, index): protocol.md §4.
inline std::string display_code_for(Algorithm alg, const Bytes& n, std::uint16_t list, std::uint16_t index, const SecretBytes& key) {
  Bytes in = to_bytes("DISPLAY");
  append(in, n);
  append(in, be_bytes(list, 2));
  append(in, be_bytes(index, 2));
  Bytes m = card_mac(alg, key, in);
  std::uint32_t v = ((std::uint32_t{m[0]} << 24) | (std::uint32_t{m[1]} << 16) | (std::uint32_t{m[2]} << 8) | m[3]) & 0x7FFFFFFF;
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08u", v % 100000000u);
  return std::string(buf);
}

/// What the card would send for an authorization with the given code; pin_state 03 is a
/// card with three PIN tries left and no PIN entered.
inline AuthRequest card_request(const std::string& txn, const Bytes& n, Algorithm alg, std::uint16_t list,
                                std::uint16_t index, const SecretBytes& otac, const Ch& ch, std::uint16_t atc = 7,
                                std::uint8_t pin_state = 0x03) {
  AuthRequest r;
  r.txn_id = txn;
  r.card = n;
  r.list_id = list;
  r.index = index;
  r.atc = atc;
  r.pin_state = pin_state;
  r.challenge = ch.encode();
  r.cryptogram = card_mac(alg, otac, ch.mac_input(n, list, index, atc, pin_state));
  return r;
}

/// A card enrolled with `er` (msisdn set here) after terminal TERM0001 is registered with
/// `terminal_limit`, and its first list issued.
struct IssuedCard {
  Bytes n;
  Algorithm alg = Algorithm::des3;
  SecretBytes k;
  std::uint16_t list = 0;
  std::vector<SecretBytes> codes;
};

inline IssuedCard enroll_issued(Env& env, EnrollRequest er = {}, std::int64_t terminal_limit = 0) {
  REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0001", "ab", terminal_limit, true}, "admin"));
  er.msisdn = "+4915550001";
  auto e = env.svc->enroll_card(er, "admin");
  REQUIRE(e);
  auto l = env.svc->issue_list(e->n, "admin");
  REQUIRE(l);
  return IssuedCard{e->n, er.algorithm, std::move(e->k), l->first, std::move(l->second)};
}

}  // namespace otac::backend::test
