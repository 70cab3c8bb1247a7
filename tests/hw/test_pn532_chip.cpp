// The chip model byte for byte, with an in-memory card (no sockets, no libnfc).
#include <catch2/catch.hpp>

#include "otac/hw/pn532_chip.hpp"

using namespace otac;
using namespace otac::hw::pn532;

namespace {

class FakeCard final : public Card {
 public:
  bool attached = true;
  int powered = 0;
  std::vector<Bytes> seen;
  bool connected() const override { return attached; }
  Result<void> power_on() override {
    ++powered;
    return {};
  }
  void power_off() override {}
  Result<Bytes> transmit(ByteView c) override {
    seen.emplace_back(c.begin(), c.end());
    return hex("9000");
  }
};

using Clock = Chip::Clock;

// Sends one command (TFI D4 + cmd + params), returns everything the chip wrote.
Bytes command(Chip& chip, const Bytes& data, Clock::time_point now = Clock::now()) {
  chip.receive(encode_frame(data), now);
  return chip.take_output();
}

Bytes answer_of(const Bytes& data) { return concat({ack_frame(), encode_frame(data)}); }

}  // namespace

TEST_CASE("chip answers libnfc's open sequence", "[pn532][chip]") {
  FakeCard card;
  Chip chip(card);
  CHECK(command(chip, hex("d41401")) == answer_of(hex("d515")));
  CHECK(command(chip, hex("d400006c69626e6663")) == answer_of(hex("d501006c69626e6663")));
  CHECK(command(chip, hex("d402")) == answer_of(hex("d50332010607")));
  CHECK(command(chip, hex("d41214")) == answer_of(hex("d513")));
}

TEST_CASE("registers keep what was written, ReadRegister has no status byte on a PN532", "[pn532][chip]") {
  FakeCard card;
  Chip chip(card);
  CHECK(command(chip, hex("d40863028363038b")) == answer_of(hex("d509")));
  CHECK(command(chip, hex("d40663026303630d")) == answer_of(hex("d507838b00")));
  CHECK(command(chip, hex("d40663")) == concat({ack_frame(), error_frame()}));  // odd length
}

TEST_CASE("InListPassiveTarget 106A reports ATQA, SAK 20, UID and ATS, other types none", "[pn532][chip]") {
  FakeCard card;
  Chip chip(card);
  CHECK(command(chip, hex("d44a0100")) == answer_of(hex("d54b01010004200408 4f5441 0578807002")));
  CHECK(card.powered == 1);
  CHECK(command(chip, hex("d44a0101 00ffff0100")) == answer_of(hex("d54b00")));  // FeliCa
  CHECK(command(chip, hex("d44a010300")) == answer_of(hex("d54b00")));           // type B
}

TEST_CASE("InDataExchange forwards the APDU and prefixes status 00", "[pn532][chip]") {
  FakeCard card;
  Chip chip(card);
  (void)command(chip, hex("d44a0100"));
  CHECK(command(chip, hex("d4400100a4040000")) == answer_of(hex("d541009000")));
  REQUIRE(card.seen.size() == 1);
  CHECK(card.seen[0] == hex("00a4040000"));
  CHECK(command(chip, hex("d440020000")) == answer_of(hex("d54127")));  // wrong Tg
}

TEST_CASE("no card: finite retries answer none, endless retries wait for the card", "[pn532][chip]") {
  FakeCard card;
  card.attached = false;
  Chip chip(card);
  CHECK(command(chip, hex("d43205000102")) == answer_of(hex("d533")));
  CHECK(command(chip, hex("d44a0100")) == answer_of(hex("d54b00")));
  CHECK(command(chip, hex("d4320500 01ff")) == answer_of(hex("d533")));
  CHECK(command(chip, hex("d44a0100")) == ack_frame());
  chip.tick(Clock::now());
  CHECK(chip.take_output().empty());
  card.attached = true;
  chip.tick(Clock::now());
  CHECK(chip.take_output() == encode_frame(hex("d54b01010004200408 4f5441 0578807002")));
}

TEST_CASE("a host ACK aborts a waiting poll", "[pn532][chip]") {
  FakeCard card;
  card.attached = false;
  Chip chip(card);
  CHECK(command(chip, hex("d44a0100")) == ack_frame());
  chip.receive(ack_frame(), Clock::now());
  card.attached = true;
  chip.tick(Clock::now());
  CHECK(chip.take_output().empty());
}

TEST_CASE("faults: remove-after, delay, corrupt, error frames, status", "[pn532][chip]") {
  FakeCard card;
  Chip chip(card);
  const auto t0 = Clock::now();
  (void)command(chip, hex("d44a0100"), t0);
  SECTION("remove after 1 APDU") {
    CHECK(chip.control("remove-after 1", t0) == "ok");
    CHECK(command(chip, hex("d440010001"), t0) == answer_of(hex("d541009000")));
    CHECK(command(chip, hex("d440010001"), t0) == answer_of(hex("d54101")));
    CHECK_FALSE(chip.card_in_field());
    CHECK(card.seen.size() == 1);
    CHECK(chip.control("insert", t0) == "ok");
    CHECK(chip.card_in_field());
  }
  SECTION("delay") {
    CHECK(chip.control("delay 50", t0) == "ok");
    CHECK(command(chip, hex("d440010001"), t0) == ack_frame());
    REQUIRE(chip.next_wakeup().has_value());
    chip.tick(t0 + std::chrono::milliseconds(49));
    CHECK(chip.take_output().empty());
    chip.tick(t0 + std::chrono::milliseconds(50));
    CHECK(chip.take_output() == encode_frame(hex("d541009000")));
  }
  SECTION("corrupt") {
    CHECK(chip.control("corrupt 1", t0) == "ok");
    const Bytes bad = command(chip, hex("d402"), t0);
    const Bytes good = answer_of(hex("d50332010607"));
    REQUIRE(bad.size() == good.size());
    CHECK(bad != good);
    CHECK(command(chip, hex("d402"), t0) == good);
  }
  SECTION("error frames") {
    CHECK(chip.control("error-frames 2", t0) == "ok");
    CHECK(command(chip, hex("d402"), t0) == concat({ack_frame(), error_frame()}));
    CHECK(command(chip, hex("d402"), t0) == concat({ack_frame(), error_frame()}));
    CHECK(command(chip, hex("d402"), t0) == answer_of(hex("d50332010607")));
  }
  SECTION("status") {
    CHECK(chip.control("status 29", t0) == "ok");
    CHECK(command(chip, hex("d440010001"), t0) == answer_of(hex("d54129")));
    CHECK(command(chip, hex("d440010001"), t0) == answer_of(hex("d541009000")));
  }
  SECTION("bad control commands say what is wrong") {
    CHECK(chip.control("delay x", t0).rfind("error:", 0) == 0);
    CHECK(chip.control("status zz", t0).rfind("error:", 0) == 0);
    CHECK(chip.control("fly", t0).rfind("error:", 0) == 0);
    CHECK(chip.control("stats", t0).find("selects=1") != std::string::npos);
  }
}

TEST_CASE("unknown commands get the error frame, PowerDown answers status and sleeps", "[pn532][chip]") {
  FakeCard card;
  Chip chip(card);
  CHECK(command(chip, hex("d48c")) == concat({ack_frame(), error_frame()}));
  CHECK(command(chip, hex("d416f0")) == answer_of(hex("d51700")));
  CHECK(chip.asleep());
  CHECK(command(chip, hex("d41401")) == answer_of(hex("d515")));
  CHECK_FALSE(chip.asleep());
}

TEST_CASE("presence check: R(NAK) through InCommunicateThru gets R(ACK) while the card is there", "[pn532][chip]") {
  FakeCard card;
  Chip chip(card);
  (void)command(chip, hex("d44a0100"));
  CHECK(command(chip, hex("d442b2")) == answer_of(hex("d54300a2")));
  card.attached = false;
  CHECK(command(chip, hex("d442b2")) == answer_of(hex("d54301")));
}

TEST_CASE("a host NACK gets the last answer again (intact after a corrupted send)", "[pn532][chip]") {
  FakeCard card;
  Chip chip(card);
  CHECK(chip.control("corrupt 1", Clock::now()) == "ok");
  const Bytes bad = command(chip, hex("d402"));
  CHECK(bad != answer_of(hex("d50332010607")));
  chip.receive(nack_frame(), Clock::now());
  CHECK(chip.take_output() == encode_frame(hex("d50332010607")));
}
