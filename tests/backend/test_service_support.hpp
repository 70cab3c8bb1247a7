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

namespace otac::backend::test {

/// A fresh temporary directory, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "otac-core-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() { std::error_code ec; std::filesystem::remove_all(path, ec); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

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

/// The fields of a challenge, as a test sets them.
struct Ch {
  Bytes un = hex("0102030405060708");
  Bytes amount = hex("000000001234");  // 12.34
  Bytes terminal = to_bytes("TERM0001");
  std::uint8_t mode = 0x01;
  std::string door;
  Bytes currency = hex("0978");                          // 5F2A
  std::optional<std::uint8_t> type;                      // 9C; default 00 (POS) or 90 (door)
  std::uint8_t type_byte() const { return type ? *type : mode == 2 ? 0x90 : 0x00; }

  /// The AUTHENTICATE data in a deliberately non-canonical order.
  Bytes encode() const {
    Bytes out;
    tlv(out, hex("9F1C"), terminal);
    tlv(out, hex("9F37"), un);
    tlv(out, hex("DF33"), hex("02"));
    tlv(out, hex("DF31"), Bytes{mode});
    tlv(out, hex("9F02"), amount);
    tlv(out, hex("5F2A"), currency);
    tlv(out, hex("9A"), hex("231114"));
    tlv(out, hex("9F21"), hex("221320"));
    tlv(out, hex("9C"), Bytes{type_byte()});
    if (!door.empty()) tlv(out, hex("DF32"), to_bytes(door));
    return out;
  }

  /// The MAC input of protocol.md §3, assembled by hand.
  Bytes mac_input(const Bytes& n, std::uint16_t list, std::uint16_t index, std::uint16_t atc, std::uint8_t pin_state) const {
    Bytes m;
    append(m, hex("DF3301 02"));
    append(m, hex("DF3101")); m.push_back(mode);
    append(m, hex("9F3708")); append(m, un);
    append(m, hex("9F0206")); append(m, amount);
    append(m, hex("5F2A02")); append(m, currency);
    append(m, hex("9A03 231114"));
    append(m, hex("9F2103 221320"));
    append(m, hex("9C01")); m.push_back(type_byte());
    append(m, hex("9F1C08")); append(m, terminal);
    if (mode == 2) { append(m, hex("DF32")); m.push_back(static_cast<std::uint8_t>(door.size())); append(m, to_bytes(door)); }
    append(m, hex("DF4108")); append(m, n);
    append(m, hex("DF4202")); append(m, be_bytes(list, 2));
    append(m, hex("DF4302")); append(m, be_bytes(index, 2));
    append(m, hex("9F3602")); append(m, be_bytes(atc, 2));
    append(m, hex("DF3501")); m.push_back(pin_state);
    return m;
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
