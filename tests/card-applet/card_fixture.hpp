// Shared helpers of the card-applet tests: an applet on memory storage, hand-built APDUs
// and challenges (written from protocol.md, independently of the applet's own encoders).
#pragma once

#include <catch2/catch.hpp>

#include <string>

#include "otac/applet/applet.hpp"
#include "support/challenge.hpp"
#include "test_support.hpp"
#include "otac/applet/sms_lite.hpp"
#include "otac/common/apdu.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/ota.hpp"
#include "otac/common/tlv.hpp"

namespace otac::applet::test {

inline const Bytes kN = hex("1122334455667788");
inline const Bytes kK = hex("0123456789abcdeffedcba9876543210");
inline const std::string kServer = "+15550100";
inline const std::string kPhone = "+15550123";

/// An 8-byte PIN block: ASCII digits padded with FF.
inline Bytes pin_block(const std::string& pin) {
  Bytes b = to_bytes(pin);
  b.resize(8, 0xFF);
  return b;
}

/// Appends a TLV with a short length (all our test values are < 128 bytes).
inline void put(Bytes& out, const Bytes& tag, const Bytes& v) {
  append(out, tag);
  out.push_back(static_cast<std::uint8_t>(v.size()));
  append(out, v);
}

/// A short command APDU with optional data and Le 00.
inline Bytes cmd(std::uint8_t cla, std::uint8_t ins, std::uint8_t p1, std::uint8_t p2, const Bytes& data = {},
                 bool le = false) {
  Bytes a{cla, ins, p1, p2};
  if (!data.empty()) {
    a.push_back(static_cast<std::uint8_t>(data.size()));
    append(a, data);
  }
  if (le) a.push_back(0x00);
  return a;
}

/// An applet over memory storage, with a transmit helper.
struct Card {
  MemoryStorage store;
  Applet app{store};

  apdu::Response tx(const Bytes& a) {
    auto r = apdu::parse_response(app.process(a));
    REQUIRE(r.ok());
    return *r;
  }
  apdu::Response tx(std::string_view h) { return tx(hex(h)); }
  std::uint16_t sw(const Bytes& a) { return tx(a).sw; }
  void select() { REQUIRE(tx("00A4040006F04F5441430100").sw == 0x9000); }
};

/// ACTIVATE data for the test card.
inline Bytes activate_data(std::uint8_t alg = 0x01, const Bytes& extra = {}) {
  Bytes d;
  put(d, hex("DF41"), kN);
  put(d, hex("DF44"), kK);
  put(d, hex("DF45"), Bytes{alg});
  put(d, hex("DF46"), to_bytes(kServer));
  put(d, hex("DF47"), pin_block("87654321"));
  append(d, extra);
  return d;
}

/// SELECT, first PIN 1234, ACTIVATE; returns the initialization message.
inline Bytes personalize(Card& c, std::uint8_t alg = 0x01, const Bytes& extra = {}) {
  c.select();
  REQUIRE(c.sw(cmd(0x00, 0x24, 0x01, 0x80, pin_block("1234"))) == 0x9000);
  auto r = c.tx(cmd(0x80, 0x10, 0x00, 0x00, activate_data(alg, extra), true));
  REQUIRE(r.sw == 0x9000);
  return r.data;
}

/// The derived OTA keys of the test card.
inline ota::CardKeys test_keys(std::uint8_t alg = 0x01, const Bytes& k = kK) {
  return ota::derive_card_keys(SecretBytes(k), kN, static_cast<ota::CardAlgorithm>(alg)).value();
}

/// A command packet as the backend sends it (SPI 16 39, KIc = KID = key id).
inline Bytes ota_packet(const Bytes& inner, std::uint64_t counter, std::uint8_t alg = 0x01, std::uint8_t version = 1,
                        const Bytes& k = kK) {
  auto keys = test_keys(alg, k);
  const std::uint8_t kid = ota::key_id_for(static_cast<ota::CardAlgorithm>(alg), version);
  ota::CommandHeader h{ota::Spi::decode(0x1639).value(), kid, kid, ota::otac_tar};
  return ota::build_command(h, counter, inner, keys.kic, keys.kid).value();
}

/// An ENVELOPE (SMS-PP download) APDU carrying one SMS part with the given UDH.
inline Bytes envelope(const Bytes& udh, const Bytes& payload, const std::string& from = kServer) {
  auto tpdu = sms::encode_deliver(from, udh, payload);
  REQUIRE(tpdu.ok());
  auto env = sms::encode_sms_pp_download("+4917000000", *tpdu);
  REQUIRE(env.ok());
  Bytes a{0x80, 0xC2, 0x00, 0x00, static_cast<std::uint8_t>(env->size())};
  append(a, *env);
  a.push_back(0x00);
  return a;
}

/// A list of count distinct test keys (3DES-sized).
inline std::vector<Bytes> test_codes(std::size_t count, std::uint8_t seed = 0) {
  std::vector<Bytes> out;
  for (std::size_t i = 0; i < count; ++i) {
    Bytes k(16);
    for (std::size_t j = 0; j < 16; ++j) k[j] = static_cast<std::uint8_t>(seed * 31 + i * 7 + j * 13 + 1);
    out.push_back(k);
  }
  return out;
}

/// The E1 inner command, built by hand from protocol.md 6.
inline Bytes e1(std::uint16_t id, std::uint8_t activation, const std::vector<Bytes>& codes) {
  Bytes keys;
  for (const auto& c : codes) append(keys, c);
  Bytes body;
  put(body, hex("C1"), be_bytes(id, 2));
  put(body, hex("C2"), Bytes{activation});
  put(body, hex("C4"), be_bytes(codes.size(), 2));
  append(body, hex("C5"));
  if (keys.size() < 0x80) body.push_back(static_cast<std::uint8_t>(keys.size()));
  else if (keys.size() < 0x100) { body.push_back(0x81); body.push_back(static_cast<std::uint8_t>(keys.size())); }
  else { body.push_back(0x82); append(body, be_bytes(keys.size(), 2)); }
  append(body, keys);
  return tlv::encode(0xE1, body);
}

/// Delivers a packet (one SMS when it fits, else concatenated parts); returns the last answer.
inline apdu::Response deliver(Card& c, const Bytes& packet, std::uint8_t ref = 1) {
  if (packet.size() <= 137) return c.tx(envelope(hex("7000"), packet));
  const std::size_t first = 132, later = 134;
  const std::size_t total = 1 + (packet.size() - first + later - 1) / later;
  apdu::Response last;
  std::size_t pos = 0;
  for (std::size_t seq = 1; seq <= total; ++seq) {
    Bytes udh{0x00, 0x03, ref, static_cast<std::uint8_t>(total), static_cast<std::uint8_t>(seq)};
    if (seq == 1) append(udh, hex("7000"));
    const std::size_t n = std::min(seq == 1 ? first : later, packet.size() - pos);
    last = c.tx(envelope(udh, Bytes(packet.begin() + static_cast<std::ptrdiff_t>(pos), packet.begin() + static_cast<std::ptrdiff_t>(pos + n))));
    pos += n;
    if (seq < total) REQUIRE(last.sw == 0x9000);
    if (seq < total) REQUIRE(last.data.empty());
  }
  return last;
}

/// Opens a PoR with the test card's keys (security of SPI 16 39).
inline ota::Response open_por(const Bytes& por, std::uint8_t alg = 0x01, std::uint8_t version = 1, const Bytes& k = kK) {
  auto keys = test_keys(alg, k);
  const std::uint8_t kid = ota::key_id_for(static_cast<ota::CardAlgorithm>(alg), version);
  auto r = ota::open_response(por, ota::PorSecurity{ota::Spi::decode(0x1639).value(), kid, kid}, keys.kic, keys.kid);
  REQUIRE(r.ok());
  return *r;
}

/// Loads a list of codes through an OTA packet; expects an OK PoR.
inline void load_codes(Card& c, std::uint16_t id, const std::vector<Bytes>& codes, std::uint64_t counter,
                       std::uint8_t activation = 0x01, std::uint8_t alg = 0x01) {
  auto r = deliver(c, ota_packet(e1(id, activation, codes), counter, alg), static_cast<std::uint8_t>(counter));
  REQUIRE(r.sw == 0x9000);
  auto por = open_por(r.data, alg);
  REQUIRE(por.status == ota::Rsc::ok);
  REQUIRE(por.data == hex("9000"));
}

/// A challenge of 2026-11-22 18:55:00 to the fixture's card kN (tests/support/challenge.hpp).
struct Ch : otac::test::Challenge {
  using Challenge::mac_input;
  /// pin_state 03: three tries left, PIN not verified.
  Bytes mac_input(std::uint16_t list, std::uint16_t index, std::uint16_t atc, std::uint8_t pin_state = 0x03) const {
    return Challenge::mac_input(kN, list, index, atc, pin_state);
  }
};

/// The expected 8-byte MAC with an OTAC.
inline Bytes mac8(std::uint8_t alg, const Bytes& otac, const Bytes& data) {
  if (alg == 0x01) return crypto::mac_alg3(SecretBytes(otac), data, crypto::Padding::method2, 8).value();
  Bytes m = crypto::aes_cmac(SecretBytes(otac), data).value();
  m.resize(8);
  return m;
}

/// The value of a tag inside a response template.
inline Bytes field(const Bytes& templ, tlv::Tag outer, tlv::Tag tag) {
  auto nodes = tlv::parse(templ);
  REQUIRE(nodes.ok());
  const std::vector<tlv::Node>* level = &*nodes;
  if (outer != 0) {
    const tlv::Node* o = tlv::find(*nodes, outer);
    REQUIRE(o != nullptr);
    level = &o->children;
  }
  const tlv::Node* n = tlv::find(*level, tag);
  REQUIRE(n != nullptr);
  return n->value;
}

}  // namespace otac::applet::test
