// SMS-PP download into the applet: ENVELOPE parsing, reassembly, TS 102 225 checks, PoRs and
// the inner commands E1..E4 (protocol.md 6, 7).
#include "card_fixture.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;

namespace {

// A PoR read without keys: unprotected (RSC 06/09/0A answers when the card has no key).
ota::Response open_unprotected(const Bytes& por) {
  auto spi = ota::Spi::decode(0x1639).value();
  spi.por_integrity = ota::Integrity::none;
  spi.por_ciphered = false;
  auto r = ota::open_response(por, ota::PorSecurity{spi, 0, 0}, SecretBytes{}, SecretBytes{});
  REQUIRE(r.ok());
  return *r;
}

std::uint16_t unused(Card& c) {
  auto s = c.tx("80A6000000");
  auto v = field(s.data, 0xE0, 0xDF48);
  return static_cast<std::uint16_t>(v[0] << 8 | v[1]);
}

}  // namespace

TEST_CASE("a hand-encoded minimal ENVELOPE is accepted byte for byte") {
  Card c;
  personalize(c);
  c.select();
  Bytes packet = ota_packet(e1(1, 1, test_codes(2)), 1);
  Bytes tpdu = hex("44 08 91 51551000 7F F6 62112200000000");
  tpdu.push_back(static_cast<std::uint8_t>(3 + packet.size()));
  append(tpdu, hex("027000"));
  append(tpdu, packet);
  REQUIRE(tpdu.size() < 0x80);
  Bytes body = hex("8202838106069194710000008B");
  body.push_back(static_cast<std::uint8_t>(tpdu.size()));
  append(body, tpdu);
  Bytes env = hex("D1");
  if (body.size() >= 0x80) env.push_back(0x81);
  env.push_back(static_cast<std::uint8_t>(body.size()));
  append(env, body);
  Bytes a = hex("80C20000");
  a.push_back(static_cast<std::uint8_t>(env.size()));
  append(a, env);
  a.push_back(0x00);
  auto r = c.tx(a);
  REQUIRE(r.sw == 0x9000);
  auto por = open_por(r.data);
  CHECK(por.status == ota::Rsc::ok);
  CHECK(por.counter == 1);
  CHECK(por.data == hex("9000"));
  CHECK(unused(c) == 2);
}

TEST_CASE("concatenated parts are reassembled in any order, duplicates and strays are handled") {
  Card c;
  personalize(c);
  c.select();
  auto codes = test_codes(30);
  Bytes packet = ota_packet(e1(1, 1, codes), 1);
  REQUIRE(packet.size() > 400);
  const std::size_t first = 132, later = 134;
  const std::size_t total = 1 + (packet.size() - first + later - 1) / later;
  std::vector<Bytes> udh, data;
  std::size_t pos = 0;
  for (std::size_t seq = 1; seq <= total; ++seq) {
    Bytes u{0x00, 0x03, 0x42, static_cast<std::uint8_t>(total), static_cast<std::uint8_t>(seq)};
    if (seq == 1) append(u, hex("7000"));
    const std::size_t n = std::min(seq == 1 ? first : later, packet.size() - pos);
    udh.push_back(u);
    data.emplace_back(packet.begin() + static_cast<std::ptrdiff_t>(pos), packet.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
  }
  // last part first, then a duplicate, then the rest
  CHECK(c.tx(envelope(udh.back(), data.back())).data.empty());
  CHECK(c.tx(envelope(udh.back(), data.back())).data.empty());
  for (std::size_t i = 0; i + 2 < total; ++i) CHECK(c.tx(envelope(udh[i], data[i])).data.empty());
  auto r = c.tx(envelope(udh[total - 2], data[total - 2]));
  REQUIRE(r.sw == 0x9000);
  CHECK(open_por(r.data).status == ota::Rsc::ok);
  CHECK(unused(c) == 30);
  // A part claiming seq 0, or total above 32, is refused.
  CHECK(c.sw(envelope(hex("0003010200"), hex("00"))) == 0x6A80);
  CHECK(c.sw(envelope(hex("0003012101"), hex("00"))) == 0x6A80);  // 33 parts
  // Parts without the command packet identifier anywhere are not a packet.
  Bytes small = ota_packet(e1(2, 0, test_codes(1)), 2);
  CHECK(c.tx(envelope(hex("0003070201"), Bytes(small.begin(), small.begin() + 10))).sw == 0x9000);
  CHECK(c.sw(envelope(hex("0003070202"), Bytes(small.begin() + 10, small.end()))) == 0x6A80);
  // A single SMS without IEI 70 is not a packet either.
  CHECK(c.sw(envelope({}, small)) == 0x6A80);
}

TEST_CASE("ENVELOPE refuses malformed TPDUs, wrong device identities and inactive cards") {
  Card c;
  c.select();
  Bytes packet = ota_packet(e1(1, 1, test_codes(1)), 1);
  CHECK(c.sw(envelope(hex("7000"), packet)) == 0x6985);  // not activated
  personalize(c);
  CHECK(c.sw(hex("80C2000000")) == 0x6A80);
  CHECK(c.sw(hex("80C2000001D100")) == 0x6A80);
  CHECK(c.sw(hex("80C2000102D100")) == 0x6A86);
  Bytes wrongdev = envelope(hex("7000"), packet);
  wrongdev[9] = 0x82;  // device identity source 82 (ME) instead of 83
  CHECK(c.sw(wrongdev) == 0x6A80);
  Bytes truncated = envelope(hex("7000"), packet);
  truncated.erase(truncated.end() - 3, truncated.end() - 1);
  CHECK(c.sw(truncated) == 0x6700);
  Bytes inner_trunc = hex("80C2000005 D10582028381");  // D1 claims 5 bytes, holds 4
  CHECK(c.sw(inner_trunc) == 0x6A80);
  // A PID other than 7F (SIM data download) is not for us.
  auto tpdu = applet::sms::encode_deliver(kServer, hex("7000"), packet).value();
  tpdu[7] = 0x00;
  auto env = applet::sms::encode_sms_pp_download("+4917000000", tpdu).value();
  Bytes a = hex("80C20000");
  a.push_back(static_cast<std::uint8_t>(env.size()));
  append(a, env);
  CHECK(c.sw(a) == 0x6A80);
  // Garbage inside a well-formed SMS: no header to answer to.
  CHECK(c.sw(envelope(hex("7000"), hex("0001"))) == 0x6A80);
}

TEST_CASE("counter higher-than: a replayed packet gets RSC 02 and changes nothing") {
  Card c;
  personalize(c);
  c.select();
  Bytes p = ota_packet(e1(1, 1, test_codes(2)), 10);
  CHECK(open_por(deliver(c, p).data).status == ota::Rsc::ok);
  auto again = open_por(deliver(c, p).data);
  CHECK(again.status == ota::Rsc::counter_low);
  CHECK(again.counter == 10);
  Bytes lower = ota_packet(e1(2, 0, test_codes(2, 3)), 9);
  CHECK(open_por(deliver(c, lower).data).status == ota::Rsc::counter_low);
  CHECK(unused(c) == 2);
  Bytes higher = ota_packet(e1(2, 0, test_codes(2, 3)), 11);
  CHECK(open_por(deliver(c, higher).data).status == ota::Rsc::ok);
  CHECK(unused(c) == 4);
}

TEST_CASE("a wrong CC gets RSC 01, a foreign TAR gets an unprotected RSC 09") {
  Card c;
  personalize(c);
  c.select();
  Bytes other_k = hex("00112233445566778899aabbccddeeff");
  Bytes bad = ota_packet(e1(1, 1, test_codes(2)), 1, 0x01, 1, other_k);
  // Under a foreign K the deciphered part is garbage: the card answers with its own keys.
  auto r = deliver(c, bad);
  REQUIRE(r.sw == 0x9000);
  auto por = open_por(r.data);
  CHECK((por.status == ota::Rsc::rc_cc_ds_failed || por.status == ota::Rsc::ciphering_error ||
         por.status == ota::Rsc::unidentified_security_error));
  CHECK(unused(c) == 0);
  // Flip one ciphered byte of a good packet.
  Bytes flipped = ota_packet(e1(1, 1, test_codes(2)), 2);
  flipped.back() ^= 0x01;
  CHECK(open_por(deliver(c, flipped).data).status == ota::Rsc::rc_cc_ds_failed);
  // Foreign TAR.
  auto keys = test_keys();
  ota::CommandHeader h{ota::Spi::decode(0x1639).value(), 0x15, 0x15, {0xB0, 0x00, 0x10}};
  Bytes foreign = ota::build_command(h, 3, hex("A0"), keys.kic, keys.kid).value();
  auto f = open_unprotected(deliver(c, foreign).data);
  CHECK(f.status == ota::Rsc::tar_unknown);
  CHECK(f.tar == ota::Tar{0xB0, 0x00, 0x10});
  // Wrong key version (KIc/KID 25): no key, unprotected RSC 06.
  Bytes v2 = ota_packet(e1(1, 1, test_codes(2)), 4, 0x01, 2);
  CHECK(open_unprotected(deliver(c, v2).data).status == ota::Rsc::unidentified_security_error);
  // Only CC, no ciphering: insufficient security level.
  ota::CommandHeader weak{ota::Spi::decode(0x1239).value(), 0x15, 0x15, ota::otac_tar};
  Bytes w = ota::build_command(weak, 5, e1(1, 1, test_codes(2)), keys.kic, keys.kid).value();
  CHECK(open_por(deliver(c, w).data).status == ota::Rsc::insufficient_security_level);
  CHECK(unused(c) == 0);
  // Still in step: the next good packet loads.
  CHECK(open_por(deliver(c, ota_packet(e1(1, 1, test_codes(2)), 6)).data).status == ota::Rsc::ok);
  CHECK(unused(c) == 2);
}

TEST_CASE("E1: activation modes, duplicates, capacity and malformed lists") {
  Card c;
  personalize(c);
  c.select();
  load_codes(c, 1, test_codes(2, 1), 1);
  load_codes(c, 2, test_codes(3, 2), 2, 0x00);  // waits for list 1 to run out
  CHECK(unused(c) == 5);
  auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true));
  CHECK(field(r.data, 0x77, 0xDF42) == hex("0001"));
  // Capacity: both slots hold unused codes; a third list does not fit.
  auto full = open_por(deliver(c, ota_packet(e1(3, 0, test_codes(2, 3)), 3)).data);
  CHECK(full.status == ota::Rsc::insufficient_memory);
  CHECK(full.data == hex("6A84"));
  // A resent list (same id) is acknowledged without change.
  auto dup = open_por(deliver(c, ota_packet(e1(2, 0, test_codes(3, 2)), 4)).data);
  CHECK(dup.status == ota::Rsc::ok);
  CHECK(unused(c) == 4);
  r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true));
  CHECK(field(r.data, 0x77, 0xDF42) == hex("0001"));
  r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, Ch{}.encode(), true));
  CHECK(field(r.data, 0x77, 0xDF42) == hex("0002"));  // list 1 ran out: list 2 takes over
  // Now a slot is free.
  CHECK(open_por(deliver(c, ota_packet(e1(3, 0, test_codes(2, 3)), 5)).data).status == ota::Rsc::ok);
  // "At once" drops the older lists.
  CHECK(open_por(deliver(c, ota_packet(e1(4, 1, test_codes(1, 4)), 6)).data).status == ota::Rsc::ok);
  CHECK(unused(c) == 1);
  // Malformed E1s answer 6A80 in the PoR data and change nothing but the counter.
  const Bytes bad_lists[] = {
      hex("E10A C1020005 C20100 C4020001"),                  // no keys
      hex("E112 C1020005 C20102 C4020001 C5080000000000000000"),  // activation 02
      tlv::encode(0xE1, hex("C1020000 C20100 C4020001 C510 00000000000000000000000000000000")),  // id 0
      tlv::encode(0xE1, hex("C1020005 C20100 C4020002 C510 00000000000000000000000000000000")),  // count != keys
      tlv::encode(0xE1, hex("C1020005 C1020006 C20100 C4020001 C510 00000000000000000000000000000000")),
      hex("E7020000"),
  };
  std::uint64_t counter = 7;
  for (const auto& inner : bad_lists) {
    auto p = open_por(deliver(c, ota_packet(inner, counter++)).data);
    CHECK(p.status == ota::Rsc::ok);
    CHECK(p.data == hex("6A80"));
  }
  Bytes zero = tlv::encode(0xE1, hex("C1020009 C20100 C4020000 C500"));
  CHECK(open_por(deliver(c, ota_packet(zero, counter++)).data).data == hex("6A80"));
  CHECK(unused(c) == 1);
}

TEST_CASE("E2 replaces K after the whole packet verified, the old K no longer opens packets") {
  Card c;
  personalize(c);
  c.select();
  CHECK(c.tx("8012000000").sw == 0x9000);
  Bytes k2 = hex("a1a2a3a4a5a6a7a8b1b2b3b4b5b6b7b8");
  Bytes e2;
  put(e2, hex("C6"), k2);
  put(e2, hex("C7"), hex("02"));
  Bytes inner = tlv::encode(0xE2, e2);
  // A packet whose second command is malformed changes no key.
  Bytes mixed = inner;
  append(mixed, hex("E1020000"));
  CHECK(open_por(deliver(c, ota_packet(mixed, 1)).data).data == hex("6A80"));
  CHECK(field(c.tx("80A6000000").data, 0xE0, 0xDF49) == hex("01"));
  // Version must change.
  Bytes same;
  put(same, hex("C6"), k2);
  put(same, hex("C7"), hex("01"));
  CHECK(open_por(deliver(c, ota_packet(tlv::encode(0xE2, same), 2)).data).data == hex("6A80"));
  // The real one: the PoR is under the old K (the command's keys).
  auto por = open_por(deliver(c, ota_packet(inner, 3)).data);
  CHECK(por.status == ota::Rsc::ok);
  CHECK(por.data == hex("9000"));
  CHECK(field(c.tx("80A6000000").data, 0xE0, 0xDF49) == hex("02"));
  // The card tells the server it holds K' (type 03, CC under K', KID version 2).
  auto f = c.tx("8012000000");
  REQUIRE(f.sw == 0x9000);
  auto sub = applet::sms::parse_submit(applet::sms::parse_send_short_message(f.data)->tpdu).value();
  auto keys2 = test_keys(0x01, k2);
  auto opened = ota::open_command(sub.payload, SecretBytes{}, keys2.kid);
  REQUIRE(opened.ok());
  CHECK(opened->header.kid == 0x25);
  CHECK(opened->data == hex("F11C DF410811223344556677 88 C00103 DF42020000 DF48020000 DF490102"));
  // A duplicate E2 under the retired K (version 1) finds no key.
  CHECK(open_unprotected(deliver(c, ota_packet(inner, 4)).data).status == ota::Rsc::unidentified_security_error);
  // Packets under K' version 2 work.
  auto r = deliver(c, ota_packet(e1(1, 1, test_codes(2)), 5, 0x01, 2, k2));
  CHECK(open_por(r.data, 0x01, 2, k2).status == ota::Rsc::ok);
  CHECK(unused(c) == 2);
}

TEST_CASE("E3: after a signature key, packets must carry a valid CF HMAC") {
  Card c;
  personalize(c);
  c.select();
  Bytes s = hex("5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a");
  Bytes e3;
  put(e3, hex("C8"), s);
  CHECK(open_por(deliver(c, ota_packet(tlv::encode(0xE3, e3), 1)).data).data == hex("9000"));
  Bytes list = e1(1, 1, test_codes(2));
  auto unsigned_por = open_por(deliver(c, ota_packet(list, 2)).data);
  CHECK(unsigned_por.status == ota::Rsc::insufficient_security_level);
  CHECK(unused(c) == 0);
  Bytes wrong = list;
  tlv::append(wrong, 0xCF, crypto::hmac_sha256(hex("00"), list));
  CHECK(open_por(deliver(c, ota_packet(wrong, 3)).data).status == ota::Rsc::rc_cc_ds_failed);
  Bytes good = list;
  tlv::append(good, 0xCF, crypto::hmac_sha256(s, list));
  CHECK(open_por(deliver(c, ota_packet(good, 4)).data).data == hex("9000"));
  CHECK(unused(c) == 2);
}

TEST_CASE("E4: the server key is accepted only when signed by the personalized CA key") {
  auto ca = crypto::ec_p256_generate().value();
  auto server = crypto::ec_p256_generate().value();
  Bytes ca_point = crypto::ec_public_point(ca).value();
  Bytes point = crypto::ec_public_point(server).value();
  Bytes sig = crypto::ecdsa_sign(ca, point).value();
  Bytes e4;
  put(e4, hex("CA"), point);
  put(e4, hex("CB"), sig);
  Bytes inner = tlv::encode(0xE4, e4);
  {
    Card c;  // no CA key personalized
    personalize(c);
    c.select();
    CHECK(open_por(deliver(c, ota_packet(inner, 1)).data).data == hex("6985"));
  }
  Card c;
  Bytes extra;
  put(extra, hex("DF51"), ca_point);
  personalize(c, 0x01, extra);
  c.select();
  Bytes forged_sig = crypto::ecdsa_sign(server, point).value();
  Bytes forged;
  put(forged, hex("CA"), point);
  put(forged, hex("CB"), forged_sig);
  CHECK(open_por(deliver(c, ota_packet(tlv::encode(0xE4, forged), 1)).data).status == ota::Rsc::insufficient_security_level);
  CHECK(open_por(deliver(c, ota_packet(inner, 2)).data).data == hex("9000"));
}

namespace {

// The server side of E5, written from protocol.md 6.1.2 with the crypto primitives.
Bytes build_e5(const crypto::PKey& server, const Bytes& card_spki, std::uint8_t kind, std::uint16_t id,
               const std::vector<Bytes>& codes, bool tamper = false) {
  auto card_pub = crypto::public_key_from_der(card_spki).value();
  SecretBytes session;
  Bytes wrapped;
  if (kind == 0x01) {
    session = crypto::random_secret(16);
    wrapped = crypto::rsa_oaep_encrypt(card_pub, session.view()).value();
  } else {
    auto eph = crypto::ec_p256_generate().value();
    wrapped = crypto::ec_public_point(eph).value();
    auto shared = crypto::ecdh_p256(eph, card_pub).value();
    Bytes info = to_bytes("OTAC-E5");
    append(info, kN);
    session = crypto::hkdf_sha256(shared, {}, info, 16);
  }
  Bytes plain;
  for (const auto& k : codes) append(plain, k);
  Bytes enc = crypto::aes_cbc_encrypt(session, Bytes(16, 0), plain).value();
  Bytes body;
  tlv::append(body, 0xC1, be_bytes(id, 2));
  tlv::append(body, 0xC2, hex("01"));
  tlv::append(body, 0xC4, be_bytes(codes.size(), 2));
  tlv::append(body, 0xCC, wrapped);
  tlv::append(body, 0xC5, enc);
  Bytes sig = crypto::ecdsa_sign(server, body).value();
  if (tamper) body[6] ^= 0x01;  // activation byte (C2 value) changed after signing
  tlv::append(body, 0xCD, sig);
  return tlv::encode(0xE5, body);
}

}  // namespace

TEST_CASE("E5: lists encrypted to the card's key pair and signed by the server key") {
  auto ca = crypto::ec_p256_generate().value();
  auto server = crypto::ec_p256_generate().value();
  Bytes point = crypto::ec_public_point(server).value();
  Bytes e4;
  put(e4, hex("CA"), point);
  put(e4, hex("CB"), crypto::ecdsa_sign(ca, point).value());
  for (std::uint8_t kind : {std::uint8_t{0x02}, std::uint8_t{0x01}}) {
    DYNAMIC_SECTION("key pair " << int(kind)) {
      Card c;
      Bytes extra;
      put(extra, hex("DF51"), crypto::ec_public_point(ca).value());
      personalize(c, 0x01, extra);
      c.select();
      auto codes = test_codes(6, 7);
      // Without a key pair and server key: refused.
      CHECK(open_por(deliver(c, ota_packet(build_e5(server, crypto::public_key_der(server).value(), 0x02, 1, codes), 1)).data).data == hex("6985"));
      REQUIRE(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
      auto g = c.tx(cmd(0x80, 0x46, kind, 0x00, {}, true));
      REQUIRE(g.sw == 0x9000);
      Bytes spki = tlv::find(tlv::parse(g.data).value(), 0xDF50)->value;
      CHECK(open_por(deliver(c, ota_packet(build_e5(server, spki, kind, 1, codes), 2)).data).data == hex("6985"));  // no server key yet
      CHECK(open_por(deliver(c, ota_packet(tlv::encode(0xE4, e4), 3)).data).data == hex("9000"));
      auto tampered = open_por(deliver(c, ota_packet(build_e5(server, spki, kind, 1, codes, true), 4)).data);
      CHECK(tampered.status == ota::Rsc::insufficient_security_level);
      auto other = crypto::ec_p256_generate().value();
      CHECK(open_por(deliver(c, ota_packet(build_e5(other, spki, kind, 1, codes), 5)).data).data == hex("6982"));
      CHECK(field(c.tx("80A6000000").data, 0xE0, 0xDF48) == hex("0000"));
      auto ok = open_por(deliver(c, ota_packet(build_e5(server, spki, kind, 1, codes), 6)).data);
      CHECK(ok.status == ota::Rsc::ok);
      CHECK(ok.data == hex("9000"));
      Ch ch;
      auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true));
      REQUIRE(r.sw == 0x9000);
      // The PIN was verified above in this session: PIN state 13 (verified, three tries left).
      CHECK(field(r.data, 0x77, 0xDF35) == hex("13"));
      CHECK(field(r.data, 0x77, 0x9F26) == mac8(0x01, codes[0], ch.mac_input(1, 0, 1, 0x13)));
    }
  }
}

TEST_CASE("packets from an independent encoder (pySim, tests/data/ota_pysim.vec) reach the card, foreign TARs get RSC 09") {
  Card c;
  personalize(c);
  c.select();
  int seen = 0;
  for (const auto& v : otac::test::load_vectors("ota_pysim.vec")) {
    if (v.section != "command") continue;
    INFO(v.at("name"));
    const Bytes packet = hex(v.at("packet"));
    auto r = c.tx(envelope(hex("7000"), packet));
    REQUIRE(r.sw == 0x9000);
    const auto spi = ota::Spi::decode(static_cast<std::uint16_t>(std::stoul(v.at("spi"), nullptr, 16))).value();
    if (spi.por == ota::PorMode::none) {
      CHECK(r.data.empty());
    } else {
      auto por = open_unprotected(r.data);
      CHECK(por.status == ota::Rsc::tar_unknown);
      CHECK(to_hex(por.tar) == v.at("tar"));
    }
    ++seen;
  }
  CHECK(seen >= 7);
  CHECK(unused(c) == 0);
}
