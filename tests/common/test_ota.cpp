#include <catch2/catch.hpp>

#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/ota.hpp"
#include "test_support.hpp"

using namespace otac;
using namespace otac::ota;

namespace {

std::uint8_t hex_u8(const std::string& s) { return hex(s).at(0); }

Spi spi_of(const std::string& s) {
  const Bytes b = hex(s);
  auto r = Spi::decode(static_cast<std::uint16_t>((b.at(0) << 8) | b.at(1)));
  REQUIRE(r);
  return *r;
}

Tar tar_of(const std::string& s) {
  const Bytes b = hex(s);
  REQUIRE(b.size() == 3);
  return {b[0], b[1], b[2]};
}

SecretBytes key(const std::string& s) { return SecretBytes(hex(s)); }

const SecretBytes k3des = key("404142434445464748494a4b4c4d4e4f");
const SecretBytes k3des_mac = key("505152535455565758595a5b5c5d5e5f");
const SecretBytes k3des3 = key("404142434445464748494a4b4c4d4e4f5051525354555657");
const SecretBytes kdes = key("0123456789abcdef");
const SecretBytes kaes = key("000102030405060708090a0b0c0d0e0f");
const SecretBytes kaes_mac = key("101112131415161718191a1b1c1d1e1f");
const SecretBytes kaes256 = key("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");

CommandHeader header(std::uint16_t spi_raw, std::uint8_t kic, std::uint8_t kid) {
  auto s = Spi::decode(spi_raw);
  REQUIRE(s);
  return CommandHeader{*s, kic, kid, otac_tar};
}

}  // namespace

TEST_CASE("ota: pySim command packets decode and re-encode byte for byte", "[ota][kat]") {
  auto vectors = test::load_vectors("ota_pysim.vec");
  int n = 0;
  for (const auto& v : vectors) {
    if (v.section != "command") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes packet = hex(v.at("packet"));
    const auto kic_key = key(v.at("kic_key"));
    const auto kid_key = key(v.at("kid_key"));
    CommandHeader h{spi_of(v.at("spi")), hex_u8(v.at("kic")), hex_u8(v.at("kid")), tar_of(v.at("tar"))};

    auto peek = peek_command(packet);
    REQUIRE(peek);
    CHECK(peek->header.spi == h.spi);
    CHECK(peek->header.kic == h.kic);
    CHECK(peek->header.kid == h.kid);
    CHECK(peek->header.tar == h.tar);

    auto opened = open_command(packet, kic_key, kid_key);
    REQUIRE(opened);
    CHECK(to_hex(opened->data) == v.at("data"));
    CHECK(opened->counter == std::stoull(v.at("cntr")));

    auto built = build_command(h, std::stoull(v.at("cntr")), hex(v.at("data")), kic_key, kid_key);
    REQUIRE(built);
    CHECK(to_hex(*built) == to_hex(packet));
  }
  CHECK(n == 7);
}

TEST_CASE("ota: pySim / sysmoISIM-SJA5 response packets open and re-encode", "[ota][kat]") {
  auto vectors = test::load_vectors("ota_pysim.vec");
  int n = 0;
  for (const auto& v : vectors) {
    if (v.section != "response") continue;
    ++n;
    INFO(v.at("name"));
    const Bytes packet = hex(v.at("packet"));
    const auto kic_key = key(v.at("kic_key"));
    const auto kid_key = key(v.at("kid_key"));
    const PorSecurity sec{spi_of(v.at("spi")), hex_u8(v.at("kic")), hex_u8(v.at("kid"))};

    auto tar = peek_response_tar(packet);
    REQUIRE(tar);
    CHECK(*tar == tar_of(v.at("tar")));

    auto opened = open_response(packet, sec, kic_key, kid_key);
    if (v.has("expect")) {
      REQUIRE_FALSE(opened);
      CHECK(errc_name(opened.error().code) == v.at("expect"));
      continue;
    }
    REQUIRE(opened);
    CHECK(opened->status == static_cast<Rsc>(hex_u8(v.at("rsc"))));
    CHECK(opened->counter == std::stoull(v.at("cntr")));
    CHECK(to_hex(opened->data) == v.at("data"));

    Response r{tar_of(v.at("tar")), std::stoull(v.at("cntr")), 0, static_cast<Rsc>(hex_u8(v.at("rsc"))),
               hex(v.at("data"))};
    auto built = build_response(sec, r, kic_key, kid_key);
    REQUIRE(built);
    CHECK(to_hex(*built) == to_hex(packet));
  }
  CHECK(n == 8);
}

TEST_CASE("ota: CRC check values and card key derivation", "[ota][kat]") {
  auto vectors = test::load_vectors("ota_checks.vec");
  int crcs = 0, derives = 0;
  for (const auto& v : vectors) {
    if (v.section == "crc") {
      ++crcs;
      const Bytes in = hex(v.at("input"));
      CHECK(to_hex(be_bytes(crc16(in), 2)) == v.at("crc16"));
      CHECK(to_hex(be_bytes(crc32(in), 4)) == v.at("crc32"));
    } else if (v.section == "derive") {
      ++derives;
      const auto k = key(v.at("k"));
      auto aes = derive_card_keys(k, hex(v.at("n")), CardAlgorithm::aes128);
      REQUIRE(aes);
      CHECK(to_hex(aes->kic.view()) == v.at("kic"));
      CHECK(to_hex(aes->kid.view()) == v.at("kid"));
      CHECK(to_hex(aes->mo_mac.view()) == v.at("mo_mac"));
      auto des = derive_card_keys(k, hex(v.at("n")), CardAlgorithm::des3_2key);
      REQUIRE(des);
      CHECK(to_hex(des->kic.view()) == v.at("kic_parity"));
      CHECK(to_hex(des->kid.view()) == v.at("kid_parity"));
      CHECK(to_hex(des->mo_mac.view()) == v.at("mo_mac_parity"));
    }
  }
  CHECK(crcs == 2);
  CHECK(derives == 1);
  CHECK_FALSE(derive_card_keys(key("0011"), hex("0102030405060708"), CardAlgorithm::aes128));
  CHECK_FALSE(derive_card_keys(k3des, hex("01"), CardAlgorithm::aes128));
  CHECK(key_id_for(CardAlgorithm::des3_2key, 1) == 0x15);
  CHECK(key_id_for(CardAlgorithm::aes128, 1) == 0x12);
}

TEST_CASE("ota: SPI and KIc/KID decoding", "[ota]") {
  auto s = Spi::decode(0x1639);
  REQUIRE(s);
  CHECK(s->integrity == Integrity::cc);
  CHECK(s->ciphered);
  CHECK(s->counter == CounterMode::higher);
  CHECK(s->por == PorMode::required);
  CHECK(s->por_integrity == Integrity::cc);
  CHECK(s->por_ciphered);
  CHECK(s->por_via_submit);
  CHECK(s->encode() == 0x1639);
  auto mo = Spi::decode(0x1200);
  REQUIRE(mo);
  CHECK(mo->integrity == Integrity::cc);
  CHECK_FALSE(mo->ciphered);
  CHECK(mo->counter == CounterMode::higher);
  CHECK(mo->por == PorMode::none);
  CHECK_FALSE(Spi::decode(0x0003));  // PoR mode 11 reserved
  for (unsigned raw = 0; raw < 0x10000; ++raw) {
    auto d = Spi::decode(static_cast<std::uint16_t>(raw));
    if (d) CHECK(d->encode() == (raw & 0x1F3F));
  }

  CHECK(kic_algorithm(0x15) == Algorithm::des3_2key);
  CHECK(kic_algorithm(0x19) == Algorithm::des3_3key);
  CHECK(kic_algorithm(0x11) == Algorithm::des_cbc);
  CHECK(kic_algorithm(0x1D) == Algorithm::des_ecb);
  CHECK(kic_algorithm(0x12) == Algorithm::aes);
  CHECK(kic_algorithm(0x16) == Algorithm::reserved);
  CHECK(kic_algorithm(0x10) == Algorithm::implicit);
  CHECK(kic_algorithm(0x13) == Algorithm::proprietary);
  CHECK(kid_algorithm(0x1D, Integrity::cc) == Algorithm::reserved);
  CHECK(kid_algorithm(0x01, Integrity::rc) == Algorithm::crc16);
  CHECK(kid_algorithm(0x05, Integrity::rc) == Algorithm::crc32);
  CHECK(key_version(0x35) == 3);
  CHECK(*check_length(Integrity::cc, 0x15) == 8);
  CHECK(*check_length(Integrity::cc, 0x12) == 8);
  CHECK(*check_length(Integrity::rc, 0x01) == 2);
  CHECK(*check_length(Integrity::rc, 0x05) == 4);
  CHECK(check_length(Integrity::ds, 0x15).error().code == Errc::unsupported);
  CHECK(check_length(Integrity::cc, 0x10).error().code == Errc::unknown_key);
}

TEST_CASE("ota: round trip for every supported SPI and algorithm", "[ota]") {
  struct Alg {
    std::uint8_t id;
    const SecretBytes* kic_key;
    const SecretBytes* kid_key;
  };
  const Alg algs[] = {{0x15, &k3des, &k3des_mac}, {0x29, &k3des3, &k3des3}, {0x31, &kdes, &kdes},
                      {0x12, &kaes, &kaes_mac},   {0x22, &kaes256, &kaes256}};
  const Bytes lens_data = hex("00112233445566778899aabbccddeeff0102030405060708090a0b0c0d0e0f10111213");
  int checked = 0;
  for (const auto& alg : algs) {
    for (unsigned integrity = 0; integrity < 3; ++integrity) {
      for (unsigned ciphered = 0; ciphered < 2; ++ciphered) {
        for (unsigned counter = 0; counter < 4; ++counter) {
          for (std::size_t len : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{7}, std::size_t{16},
                                  std::size_t{35}}) {
            std::uint8_t kid = alg.id;
            if (integrity == 1) kid = (len % 2) ? 0x05 : 0x01;  // CRC-32 / CRC-16
            const auto spi_raw = static_cast<std::uint16_t>(((integrity | (ciphered << 2) | (counter << 3)) << 8) | 0x39);
            const auto h = header(spi_raw, alg.id, kid);
            const ByteView data(lens_data.data(), len);
            const std::uint64_t cntr = 0x0102030405ULL + len;
            auto p = build_command(h, cntr, data, *alg.kic_key, *alg.kid_key);
            INFO("KIc " << int(alg.id) << " SPI " << spi_raw << " len " << len);
            REQUIRE(p);
            if (ciphered) CHECK((p->size() - 10) % (alg.id == 0x12 || alg.id == 0x22 ? 16 : 8) == 0);
            auto peek = peek_command(*p);
            REQUIRE(peek);
            CHECK(peek->header.tar == otac_tar);
            CHECK(peek->counter.has_value() == !ciphered);
            auto o = open_command(*p, *alg.kic_key, *alg.kid_key);
            REQUIRE(o);
            CHECK(o->counter == cntr);
            CHECK(Bytes(data.begin(), data.end()) == o->data);
            CHECK(o->header.spi.encode() == spi_raw);

            // The PoR for the same security, every PoR variant.
            for (unsigned por_bits = 0; por_bits < 8; ++por_bits) {
              Spi ps = h.spi;
              ps.por_integrity = (por_bits & 1) ? Integrity::cc : Integrity::none;
              ps.por_ciphered = (por_bits & 2) != 0;
              ps.por_via_submit = (por_bits & 4) != 0;
              const PorSecurity sec{ps, alg.id, alg.id};
              Response r{otac_tar, cntr, 0, Rsc::ok, Bytes(data.begin(), data.end())};
              auto rp = build_response(sec, r, *alg.kic_key, *alg.kid_key);
              INFO((rp ? std::string() : rp.error().message));
              REQUIRE(rp);
              auto ro = open_response(*rp, sec, *alg.kic_key, *alg.kid_key);
              REQUIRE(ro);
              CHECK(ro->data == r.data);
              CHECK(ro->counter == cntr);
              CHECK(ro->status == Rsc::ok);
            }
            ++checked;
          }
        }
      }
    }
  }
  CHECK(checked == 5 * 3 * 2 * 4 * 6);
}

TEST_CASE("ota: command packets with bad framing are refused", "[ota]") {
  const auto h = header(0x1639, 0x15, 0x15);
  auto p = build_command(h, 5, hex("e1020304"), k3des, k3des_mac);
  REQUIRE(p);
  REQUIRE(open_command(*p, k3des, k3des_mac));

  SECTION("truncated anywhere") {
    for (std::size_t n = 0; n < p->size(); ++n) {
      const ByteView cut(p->data(), n);
      auto r = open_command(cut, k3des, k3des_mac);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Errc::truncated);
      CHECK_FALSE(peek_command(cut));
    }
  }
  SECTION("CPL larger than the packet") {
    Bytes b = *p;
    b[1] = static_cast<std::uint8_t>(b[1] + 8);
    auto r = open_command(b, k3des, k3des_mac);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::truncated);
  }
  SECTION("trailing garbage") {
    Bytes b = *p;
    b.push_back(0);
    auto r = peek_command(b);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::trailing_data);
  }
  SECTION("wrong CHL") {
    Bytes b = *p;
    b[2] = 0x0d;  // says no CC although the SPI asks for one
    auto r = peek_command(b);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::bad_length);
    b[2] = 0x05;
    CHECK(peek_command(b).error().code == Errc::bad_length);
  }
  SECTION("ciphered part not whole blocks") {
    Bytes b = *p;
    b.pop_back();
    b[1] = static_cast<std::uint8_t>(b[1] - 1);
    auto r = open_command(b, k3des, k3des_mac);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::crypto);
    CHECK(rsc_for(r.error()) == Rsc::ciphering_error);
  }
}

TEST_CASE("ota: bad CC, wrong keys and unknown algorithms are refused", "[ota]") {
  for (std::uint16_t spi : {std::uint16_t{0x1639}, std::uint16_t{0x1239}}) {
    const auto h = header(spi, 0x15, 0x15);
    auto p = build_command(h, 5, hex("e1020304aabbccdd"), k3des, k3des_mac);
    REQUIRE(p);
    for (std::size_t i = 0; i < p->size(); ++i) {
      Bytes b = *p;
      b[i] ^= 0x01;
      auto r = open_command(b, k3des, k3des_mac);
      INFO("SPI " << spi << " flipped byte " << i);
      CHECK_FALSE(r);
    }
    auto wrong = open_command(*p, k3des, k3des);
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error().code == Errc::bad_mac);
    CHECK(rsc_for(wrong.error()) == Rsc::rc_cc_ds_failed);
    CHECK(wrong.error().message.find("4041") == std::string::npos);  // no key material in messages
  }
  // KIc 1D (DES-ECB), 10 (implicit), 16 (AES reserved mode) are not usable.
  for (std::uint8_t kic : {std::uint8_t{0x1D}, std::uint8_t{0x10}, std::uint8_t{0x16}, std::uint8_t{0x13}}) {
    auto r = build_command(header(0x0600, kic, 0x15), 1, hex("00"), k3des, k3des_mac);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::unknown_key);
  }
  // An unknown KIc in a received packet: peek works, open says unknown_key.
  auto p = build_command(header(0x0600, 0x15, 0x15), 1, hex("00"), k3des, k3des_mac);
  REQUIRE(p);
  Bytes b = *p;
  b[5] = 0x1D;
  REQUIRE(peek_command(b));
  CHECK(open_command(b, k3des, k3des_mac).error().code == Errc::unknown_key);
  // Key of the wrong length for the KIc.
  CHECK(build_command(header(0x0600, 0x15, 0x15), 1, hex("00"), kaes256, k3des_mac).error().code ==
        Errc::unknown_key);
  CHECK(build_command(header(0x0600, 0x15, 0x15), counter_max + 1, hex("00"), k3des, k3des_mac).error().code ==
        Errc::bad_value);
  // DS is valid per the standard but not implemented.
  CHECK(build_command(header(0x0300, 0x15, 0x15), 1, hex("00"), k3des, k3des_mac).error().code ==
        Errc::unsupported);
}

TEST_CASE("ota: counter check in every mode", "[ota]") {
  CHECK(counter_status(CounterMode::none, 0, 100) == Rsc::ok);
  CHECK(counter_status(CounterMode::no_check, 0, 100) == Rsc::ok);
  CHECK(counter_status(CounterMode::higher, 101, 100) == Rsc::ok);
  CHECK(counter_status(CounterMode::higher, 500, 100) == Rsc::ok);
  CHECK(counter_status(CounterMode::higher, 100, 100) == Rsc::counter_low);
  CHECK(counter_status(CounterMode::higher, 99, 100) == Rsc::counter_low);
  CHECK(counter_status(CounterMode::one_higher, 101, 100) == Rsc::ok);
  CHECK(counter_status(CounterMode::one_higher, 100, 100) == Rsc::counter_low);
  CHECK(counter_status(CounterMode::one_higher, 102, 100) == Rsc::counter_high);
  CHECK(counter_status(CounterMode::higher, counter_max, counter_max) == Rsc::counter_blocked);
  CHECK(counter_status(CounterMode::one_higher, 0, counter_max) == Rsc::counter_blocked);
  CHECK(check_counter(CounterMode::higher, 101, 100));
  auto e = check_counter(CounterMode::higher, 100, 100);
  REQUIRE_FALSE(e);
  CHECK(e.error().code == Errc::replay);
  CHECK(rsc_for(e.error()) == Rsc::counter_low);
}

TEST_CASE("ota: response packets with bad framing or security are refused", "[ota]") {
  const PorSecurity sec{*Spi::decode(0x1639), 0x15, 0x15};
  Response r{otac_tar, 7, 0, Rsc::ok, hex("019000")};
  auto p = build_response(sec, r, k3des, k3des_mac);
  REQUIRE(p);
  for (std::size_t n = 0; n < p->size(); ++n) CHECK_FALSE(open_response(ByteView(p->data(), n), sec, k3des, k3des_mac));
  Bytes longer = *p;
  longer.push_back(0);
  CHECK(open_response(longer, sec, k3des, k3des_mac).error().code == Errc::trailing_data);
  for (std::size_t i = 0; i < p->size(); ++i) {
    Bytes b = *p;
    b[i] ^= 0x80;
    CHECK_FALSE(open_response(b, sec, k3des, k3des_mac));
  }
  // RHL must match the PoR security the command asked for.
  PorSecurity plain = sec;
  plain.spi.por_integrity = Integrity::none;
  plain.spi.por_ciphered = false;
  auto pp = build_response(plain, r, k3des, k3des_mac);
  REQUIRE(pp);
  CHECK(open_response(*pp, sec, k3des, k3des_mac).error().code == Errc::bad_length);
  CHECK(open_response(*p, sec, k3des, k3des).error().code == Errc::bad_mac);
}
