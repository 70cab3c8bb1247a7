// Lists over SMS: card requests in, TS 102 225 packets out. The packets are opened with the
// ota module's opener and the card's keys, and the E1 command is read by hand.
#include <catch2/catch.hpp>

#include <map>

#include "otac/common/ota.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::Env;

namespace {

ota::CardAlgorithm ota_alg(Algorithm a) {
  return a == Algorithm::des3 ? ota::CardAlgorithm::des3_2key : ota::CardAlgorithm::aes128;
}

// The card's request packet of protocol.md §2.4, as the applet would build it.
Bytes card_request_packet(const Bytes& n, Algorithm alg, const SecretBytes& k, std::uint8_t version,
                          std::uint64_t counter, std::uint8_t type, std::uint16_t active, std::uint16_t unused) {
  Bytes f1 = hex("DF4108");
  append(f1, n);
  append(f1, Bytes{0xC0, 0x01, type});
  append(f1, hex("DF4202"));
  append(f1, be_bytes(active, 2));
  append(f1, hex("DF4802"));
  append(f1, be_bytes(unused, 2));
  append(f1, Bytes{0xDF, 0x49, 0x01, version});
  Bytes data{0xF1, static_cast<std::uint8_t>(f1.size())};
  append(data, f1);
  auto keys = ota::derive_card_keys(k, n, ota_alg(alg)).value();
  const std::uint8_t kid = ota::key_id_for(ota_alg(alg), version);
  ota::CommandHeader h{ota::Spi::decode(0x1200).value(), 0x00, kid, ota::otac_tar};
  return ota::build_command(h, counter, data, SecretBytes{}, keys.kid).value();
}

MoSms mo(Bytes packet) { return MoSms{"+4915550001", "+15550100", hex("7000"), std::move(packet)}; }

// Joins the queued SMS parts into packets, reading the UDH by hand (protocol.md §7).
std::vector<Bytes> packets_in_outbox(Env& env) {
  auto due_r = env.svc->next_due(1000);
  REQUIRE(due_r);
  const std::vector<OutboxMessage> due = std::move(*due_r);
  std::vector<Bytes> out;
  std::map<std::uint8_t, std::map<std::uint8_t, Bytes>> concat;
  std::map<std::uint8_t, std::uint8_t> totals;
  for (const auto& m : due) {
    REQUIRE(m.payload.size() + m.udh.size() + 1 <= 140);
    if (m.udh == hex("7000")) { out.push_back(m.payload); continue; }
    REQUIRE(m.udh.size() >= 5);
    REQUIRE(m.udh[0] == 0x00);
    REQUIRE(m.udh[1] == 0x03);
    const auto ref = m.udh[2], total = m.udh[3], seq = m.udh[4];
    if (seq == 1) REQUIRE(Bytes(m.udh.begin() + 5, m.udh.end()) == hex("7000"));
    else REQUIRE(m.udh.size() == 5);
    concat[ref][seq] = m.payload;
    totals[ref] = total;
  }
  for (auto& [ref, parts] : concat) {
    REQUIRE(parts.size() == totals[ref]);
    Bytes p;
    for (auto& [seq, d] : parts) append(p, d);
    out.push_back(std::move(p));
  }
  return out;
}

struct LoadList {
  std::uint16_t id = 0;
  std::uint8_t activation = 0;
  std::vector<Bytes> keys;
};

// Reads E1 { C1 id, C2 act, C4 count, C5 keys } by hand.
LoadList read_e1(const Bytes& d) {
  std::size_t i = 0;
  auto len = [&]() -> std::size_t {
    std::size_t l = d.at(i++);
    if (l == 0x81) l = d.at(i++);
    else if (l == 0x82) { l = static_cast<std::size_t>(d.at(i) << 8 | d.at(i + 1)); i += 2; }
    return l;
  };
  REQUIRE(d.at(i++) == 0xE1);
  const std::size_t total = len();
  REQUIRE(total == d.size() - i);
  LoadList l;
  REQUIRE(d.at(i++) == 0xC1);
  REQUIRE(len() == 2); l.id = static_cast<std::uint16_t>(d[i] << 8 | d[i + 1]); i += 2;
  REQUIRE(d.at(i++) == 0xC2); REQUIRE(len() == 1); l.activation = d[i++];
  REQUIRE(d.at(i++) == 0xC4); REQUIRE(len() == 2); const std::size_t count = static_cast<std::size_t>(d[i] << 8 | d[i + 1]); i += 2;
  REQUIRE(d.at(i++) == 0xC5);
  const std::size_t keys_len = len();
  REQUIRE(keys_len == count * 16);
  for (std::size_t k = 0; k < count; ++k, i += 16) l.keys.emplace_back(d.begin() + static_cast<std::ptrdiff_t>(i), d.begin() + static_cast<std::ptrdiff_t>(i + 16));
  REQUIRE(i == d.size());
  return l;
}

ota::Command open_packet(const Bytes& p, const Bytes& n, Algorithm alg, const SecretBytes& k) {
  auto keys = ota::derive_card_keys(k, n, ota_alg(alg)).value();
  auto c = ota::open_command(p, keys.kic, keys.kid);
  INFO((c ? std::string() : c.error().message));
  REQUIRE(c);
  return std::move(*c);
}

void drain(Env& env) {
  auto due = env.svc->next_due(1000);
  REQUIRE(due);
  std::vector<std::int64_t> ids;
  for (const auto& m : *due) ids.push_back(m.id);
  for (auto id : ids) REQUIRE(env.svc->mark_sent(id, "ok"));
}

}  // namespace

TEST_CASE("an initialization request gets a list of 100 codes as secured, concatenated packets") {
  for (auto alg : {Algorithm::des3, Algorithm::aes128}) {
    Env env(100);
    EnrollRequest er;
    er.algorithm = alg;
    er.msisdn = "+4915550001";
    auto e = env.svc->enroll_card(er, "admin").value();
    REQUIRE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, alg, e.k, 1, 1, 0x01, 0, 0))));
    auto packets = packets_in_outbox(env);
    REQUIRE(packets.size() == 1);
    auto cmd = open_packet(packets[0], e.n, alg, e.k);
    CHECK(cmd.header.spi.encode() == 0x1639);
    const std::uint8_t kid = alg == Algorithm::des3 ? 0x15 : 0x12;
    CHECK(cmd.header.kic == kid);
    CHECK(cmd.header.kid == kid);
    CHECK(cmd.header.tar == ota::otac_tar);
    CHECK(cmd.counter == 1);
    auto list = read_e1(cmd.data);
    CHECK(list.id == 1);
    CHECK(list.activation == 1);  // first list: active at once
    REQUIRE(list.keys.size() == 100);
    auto s = env.store();
    REQUIRE(s->run([&](Tx& tx) -> Result<void> {
      for (std::uint16_t i = 0; i < 100; ++i) CHECK(to_hex(tx.otac(e.n, 1, i)->key.view()) == to_hex(list.keys[i]));
      return {};
    }));
    if (alg == Algorithm::des3) CHECK(crypto::has_des_parity(list.keys[0]));
    CHECK(env.svc->card(e.n)->list_push_in_flight);
  }
}

TEST_CASE("card requests: replayed counter, bad CC and unknown card change nothing") {
  Env env(10);
  EnrollRequest er;
  er.msisdn = "+4915550001";
  auto e = env.svc->enroll_card(er, "admin").value();
  REQUIRE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, e.k, 1, 5, 0x01, 0, 0))));
  drain(env);
  auto replay = env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, e.k, 1, 5, 0x02, 1, 10)));
  REQUIRE_FALSE(replay);
  CHECK(replay.error().code == Errc::replay);
  SecretBytes wrong(hex("0123456789abcdeffedcba9876543210"));
  auto bad = env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, wrong, 1, 6, 0x02, 1, 10)));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::bad_mac);
  auto unknown = env.svc->handle_mo_sms(mo(card_request_packet(hex("0102030405060708"), e.algorithm, e.k, 1, 7, 0x02, 1, 10)));
  CHECK_FALSE(unknown);
  CHECK(env.svc->next_due(100)->empty());
  // A proper refresh request afterwards is served, with a higher packet counter.
  REQUIRE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, e.k, 1, 6, 0x02, 1, 3))));
  auto p = packets_in_outbox(env);
  REQUIRE(p.size() == 1);
  auto cmd = open_packet(p[0], e.n, e.algorithm, e.k);
  CHECK(cmd.counter == 2);
  CHECK(read_e1(cmd.data).id == 2);
}

TEST_CASE("a card that never loaded the latest list gets that list again, not a new one") {
  Env env(10);
  EnrollRequest er;
  er.msisdn = "+4915550001";
  auto e = env.svc->enroll_card(er, "admin").value();
  REQUIRE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, e.k, 1, 1, 0x01, 0, 0))));
  auto first = read_e1(open_packet(packets_in_outbox(env)[0], e.n, e.algorithm, e.k).data);
  drain(env);  // "sent", but the card never got it
  REQUIRE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, e.k, 1, 2, 0x01, 0, 0))));
  auto again = open_packet(packets_in_outbox(env)[0], e.n, e.algorithm, e.k);
  auto second = read_e1(again.data);
  CHECK(second.id == first.id);
  CHECK(second.keys == first.keys);
  CHECK(again.counter == 2);
}

TEST_CASE("the server pushes one new list when unused codes reach the threshold") {
  Env env(10);
  REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0001", "ab", 0, true}, "admin"));
  EnrollRequest er;
  er.msisdn = "+4915550001";
  er.threshold = 12;
  auto e = env.svc->enroll_card(er, "admin").value();
  REQUIRE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, e.k, 1, 1, 0x01, 0, 0))));
  auto list = read_e1(open_packet(packets_in_outbox(env)[0], e.n, e.algorithm, e.k).data);
  drain(env);
  // The card reports it loaded list 1 and asks for more: it gets list 2 (in flight again).
  REQUIRE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, e.k, 1, 2, 0x02, 1, 10))));
  drain(env);
  CHECK(env.svc->card(e.n)->list_push_in_flight);
  // Clear the flag as a PoR would, then spend codes of list 1.
  {
    auto s = env.store();
    REQUIRE(s->run([&](Tx& tx) -> Result<void> {
      auto c = tx.card(e.n).value();
      c.list_push_in_flight = false;
      return tx.update_card(c);
    }));
  }
  // 20 codes exist (lists 1 and 2); threshold 12: the push comes when 12 are left, i.e.
  // after the 8th approval, and only once.
  test::Ch ch;
  int pushes_seen = 0;
  for (std::uint16_t i = 0; i < 10; ++i) {
    auto a = env.svc->authorize(test::card_request("T" + std::to_string(i), e.n, e.algorithm, 1, i, SecretBytes(list.keys[i]), ch), "TERM0001");
    REQUIRE(a);
    REQUIRE(a->decision == Decision::approved);
    const auto queued = env.svc->next_due(1000)->size();
    if (queued > 0) { ++pushes_seen; CHECK(i >= 7); }
    else CHECK(i < 7);
  }
  auto packets = packets_in_outbox(env);
  REQUIRE(packets.size() == 1);  // exactly one push despite more codes spent
  CHECK(read_e1(open_packet(packets[0], e.n, e.algorithm, e.k).data).id == 3);
  CHECK(pushes_seen > 0);
}

TEST_CASE("key rotation: K' goes out under K, and the card's request under K' retires K") {
  Env env(10);
  EnrollRequest er;
  er.msisdn = "+4915550001";
  auto e = env.svc->enroll_card(er, "admin").value();
  REQUIRE(env.svc->rotate_key(e.n, "alice"));
  auto p = packets_in_outbox(env);
  REQUIRE(p.size() == 1);
  auto cmd = open_packet(p[0], e.n, e.algorithm, e.k);  // under the old K
  REQUIRE(cmd.data.size() == 2 + 18 + 3);
  CHECK(cmd.data[0] == 0xE2);
  CHECK(Bytes(cmd.data.begin() + 2, cmd.data.begin() + 4) == hex("C610"));
  SecretBytes k2(Bytes(cmd.data.begin() + 4, cmd.data.begin() + 20));
  CHECK(Bytes(cmd.data.begin() + 20, cmd.data.end()) == hex("C70102"));
  drain(env);

  // Still rotating: a request under K is accepted and K stays.
  REQUIRE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, e.k, 1, 1, 0x01, 0, 0))));
  CHECK(ct_equal(env.svc->card(e.n)->k.view(), e.k.view()));
  drain(env);
  // The proof under K' switches keys.
  REQUIRE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, k2, 2, 2, 0x03, 1, 10))));
  auto c = env.svc->card(e.n).value();
  CHECK(ct_equal(c.k.view(), k2.view()));
  CHECK(c.key_version == 2);
  CHECK_FALSE(c.pending_k);
  // The old K no longer verifies, and new packets go out under K' with key version 2.
  CHECK_FALSE(env.svc->handle_mo_sms(mo(card_request_packet(e.n, e.algorithm, e.k, 1, 3, 0x02, 1, 10))));
  REQUIRE(env.svc->refresh_card(e.n, "alice"));
  auto next = open_packet(packets_in_outbox(env)[0], e.n, e.algorithm, k2);
  CHECK(next.header.kid == 0x25);
}

namespace {

MoSms por_sms(const Bytes& n, Algorithm alg, const SecretBytes& k, std::uint8_t version, std::uint64_t counter, ota::Rsc rsc) {
  auto keys = ota::derive_card_keys(k, n, ota_alg(alg)).value();
  const std::uint8_t kid = ota::key_id_for(ota_alg(alg), version);
  ota::Response r;
  r.tar = ota::otac_tar;
  r.counter = counter;
  r.status = rsc;
  if (rsc == ota::Rsc::ok) r.data = hex("9000");  // the inner status word, as the applet sends it (6.1.1)
  auto p = ota::build_response(ota::PorSecurity{ota::Spi::decode(0x1639).value(), kid, kid}, r, keys.kic, keys.kid).value();
  return MoSms{"+4915550001", "+15550100", hex("7100"), std::move(p)};
}

}  // namespace

TEST_CASE("a PoR confirms a delivered list, and a PoR for E2 completes a key rotation") {
  Env env(10);
  EnrollRequest er;
  er.msisdn = "+4915550001";
  auto e = env.svc->enroll_card(er, "admin").value();
  REQUIRE(env.svc->refresh_card(e.n, "alice"));
  auto cmd = open_packet(packets_in_outbox(env)[0], e.n, e.algorithm, e.k);
  drain(env);
  CHECK(env.svc->card(e.n)->list_push_in_flight);
  // A failed PoR is recorded but confirms nothing; a forged one is refused.
  REQUIRE(env.svc->handle_mo_sms(por_sms(e.n, e.algorithm, e.k, 1, cmd.counter, ota::Rsc::rc_cc_ds_failed)));
  CHECK(env.svc->card(e.n)->list_push_in_flight);
  SecretBytes wrong(hex("0123456789abcdeffedcba9876543210"));
  CHECK_FALSE(env.svc->handle_mo_sms(por_sms(e.n, e.algorithm, wrong, 1, cmd.counter, ota::Rsc::ok)));
  CHECK_FALSE(env.svc->handle_mo_sms(por_sms(e.n, e.algorithm, e.k, 1, cmd.counter + 7, ota::Rsc::ok)));  // never sent
  REQUIRE(env.svc->handle_mo_sms(por_sms(e.n, e.algorithm, e.k, 1, cmd.counter, ota::Rsc::ok)));
  CHECK_FALSE(env.svc->card(e.n)->list_push_in_flight);

  REQUIRE(env.svc->rotate_key(e.n, "alice"));
  auto e2 = open_packet(packets_in_outbox(env)[0], e.n, e.algorithm, e.k);
  SecretBytes k2(Bytes(e2.data.begin() + 4, e2.data.begin() + 20));
  drain(env);
  CHECK(ct_equal(env.svc->card(e.n)->k.view(), e.k.view()));
  REQUIRE(env.svc->handle_mo_sms(por_sms(e.n, e.algorithm, e.k, 1, e2.counter, ota::Rsc::ok)));
  auto c = env.svc->card(e.n).value();
  CHECK(ct_equal(c.k.view(), k2.view()));
  CHECK(c.key_version == 2);
  // A duplicated PoR changes nothing more.
  REQUIRE(env.svc->handle_mo_sms(por_sms(e.n, e.algorithm, k2, 2, e2.counter, ota::Rsc::ok)));
  CHECK(env.svc->card(e.n)->key_version == 2);
}
