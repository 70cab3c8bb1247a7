// The emulator in process, driven by the real libnfc (pn532_uart driver over the pty), with the
// vicc test card in its field. Checks what libnfc reports for each fault.
#include <nfc/nfc.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>
#include <thread>

#include "otac/hw/pn532_emulator.hpp"
#include "vicc_test_card.hpp"

using namespace otac;
using namespace otac::hw::pn532;

namespace {

struct ContextDeleter {
  void operator()(nfc_context* c) const { nfc_exit(c); }
};
struct DeviceDeleter {
  void operator()(nfc_device* d) const { nfc_close(d); }
};
using ContextPtr = std::unique_ptr<nfc_context, ContextDeleter>;
using DevicePtr = std::unique_ptr<nfc_device, DeviceDeleter>;

std::string temp_dir() {
  auto d = std::filesystem::temp_directory_path() / ("otac-hw-" + std::to_string(::getpid()) + "-" +
                                                     std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(d);
  return d.string();
}

// The emulator on its own thread; stops and joins on destruction (stop before the thread ends).
class RunningEmulator {
 public:
  explicit RunningEmulator(EmulatorOptions opt = {}) : dir_(temp_dir()) {
    opt.link = dir_ + "/pn532";
    auto e = Emulator::create(std::move(opt));
    if (!e) FAIL("emulator: " << e.error().message);
    emu_ = std::move(*e);
    thread_ = std::thread([this] { result_ = emu_->run().ok(); });
  }
  ~RunningEmulator() {
    emu_->request_stop();
    thread_.join();
    emu_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  Emulator& operator*() { return *emu_; }
  Emulator* operator->() { return emu_.get(); }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::unique_ptr<Emulator> emu_;
  std::thread thread_;
  bool result_ = false;
};

// libnfc context and device opened on the emulator, initiator mode.
struct Reader {
  ContextPtr ctx;
  DevicePtr dev;
  explicit Reader(const std::string& connstring) {
    nfc_context* c = nullptr;
    nfc_init(&c);
    REQUIRE(c != nullptr);
    ctx.reset(c);
    dev.reset(nfc_open(ctx.get(), connstring.c_str()));
    REQUIRE(dev != nullptr);
    REQUIRE(nfc_initiator_init(dev.get()) == 0);
  }
  int select(nfc_target& nt) {
    const nfc_modulation nm{NMT_ISO14443A, NBR_106};
    return nfc_initiator_select_passive_target(dev.get(), nm, nullptr, 0, &nt);
  }
  int transceive(const Bytes& tx, Bytes& rx, int timeout_ms = 1000) {
    rx.assign(300, 0);
    const int n = nfc_initiator_transceive_bytes(dev.get(), tx.data(), tx.size(), rx.data(), rx.size(), timeout_ms);
    rx.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return n;
  }
};

Bytes echo_apdu(std::size_t n) {
  Bytes c{0x00, 0xEE, 0x00, 0x00, static_cast<std::uint8_t>(n)};
  for (std::size_t i = 0; i < n; ++i) c.push_back(static_cast<std::uint8_t>(i * 7));
  return c;
}

}  // namespace

TEST_CASE("libnfc opens the emulator, selects the card and exchanges APDUs", "[pn532][libnfc]") {
  RunningEmulator emu;
  test::ViccTestCard card(emu->card_port());
  Reader r(emu->connstring());
  CHECK(std::string(nfc_device_get_name(r.dev.get())).find("pn532_uart") != std::string::npos);

  nfc_target nt{};
  REQUIRE(r.select(nt) == 1);
  // nfc_target is a packed struct: copy fields out before Catch binds references to them.
  const nfc_modulation_type nmt = nt.nm.nmt;
  const std::uint8_t sak = nt.nti.nai.btSak, atqa0 = nt.nti.nai.abtAtqa[0], atqa1 = nt.nti.nai.abtAtqa[1];
  const std::size_t uid_len = nt.nti.nai.szUidLen, ats_len = nt.nti.nai.szAtsLen;
  CHECK(nmt == NMT_ISO14443A);
  CHECK(sak == 0x20);
  CHECK(atqa0 == 0x00);
  CHECK(atqa1 == 0x04);
  REQUIRE(uid_len == 4);
  CHECK(Bytes(nt.nti.nai.abtUid, nt.nti.nai.abtUid + 4) == hex("084f5441"));
  REQUIRE(ats_len == 4);
  CHECK(Bytes(nt.nti.nai.abtAts, nt.nti.nai.abtAts + 4) == hex("78807002"));
  CHECK(card.power_ons() >= 1);

  Bytes rx;
  REQUIRE(r.transceive(hex("00a4040007a0000000031010"), rx) == 2);
  CHECK(rx == hex("6d00"));
  const Bytes c = echo_apdu(20);
  REQUIRE(r.transceive(c, rx) == 22);
  CHECK(Bytes(rx.begin(), rx.begin() + 20) == Bytes(c.begin() + 5, c.end()));
  CHECK(Bytes(rx.end() - 2, rx.end()) == hex("9000"));
  CHECK(card.apdus() == 2);

  CHECK(nfc_initiator_target_is_present(r.dev.get(), &nt) == 0);
  CHECK(nfc_initiator_deselect_target(r.dev.get()) >= 0);  // libnfc returns the answer length
}

TEST_CASE("extended frames carry APDUs and answers above 255 bytes", "[pn532][libnfc]") {
  RunningEmulator emu;
  test::ViccTestCard card(emu->card_port());
  Reader r(emu->connstring());
  nfc_target nt{};
  REQUIRE(r.select(nt) == 1);
  Bytes rx;
  // 260-byte C-APDU (InDataExchange frame data 263 bytes) echoed: 257-byte R-APDU.
  const Bytes c = echo_apdu(255);
  REQUIRE(c.size() == 260);
  REQUIRE(r.transceive(c, rx) == 257);
  CHECK(Bytes(rx.begin(), rx.begin() + 255) == Bytes(c.begin() + 5, c.end()));
  // READ with Le = 00: 256 bytes + 9000.
  REQUIRE(r.transceive(hex("00b0000000"), rx) == 258);
  CHECK(rx[255] == 0xFF);
  // 262 bytes is the PN532's limit for one answer: a card answering more gives status 09
  // (NFC_ECHIP) rather than a truncated answer.
  REQUIRE(r.transceive(hex("00b10104"), rx) == 262);
  REQUIRE(r.transceive(hex("00b10105"), rx) == NFC_ECHIP);
  // The next normal exchange still works.
  REQUIRE(r.transceive(hex("00b10100"), rx) == 258);
}

TEST_CASE("fault: no card in the field", "[pn532][libnfc][fault]") {
  EmulatorOptions opt;
  opt.faults.card_out = true;
  RunningEmulator emu(opt);
  test::ViccTestCard card(emu->card_port());
  Reader r(emu->connstring());
  REQUIRE(nfc_device_set_property_bool(r.dev.get(), NP_INFINITE_SELECT, false) == 0);
  nfc_target nt{};
  CHECK(r.select(nt) == 0);
  CHECK(card.power_ons() == 0);

  SECTION("endless select waits until the card is inserted") {
    REQUIRE(nfc_device_set_property_bool(r.dev.get(), NP_INFINITE_SELECT, true) == 0);
    // The inserter only records what happened; the checks run on this thread after the join
    // (Catch2's assertions are not thread-safe).
    std::atomic<bool> insert_sent{false};
    std::string inserted;
    std::thread inserter([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(150));  // let select block first
      insert_sent = true;
      inserted = emu->control("insert");
    });
    const int n = r.select(nt);
    const bool card_was_inserted = insert_sent.load();  // select returned only after the insert
    inserter.join();
    CHECK(inserted == "ok");
    CHECK(n == 1);
    CHECK(card_was_inserted);
  }
  SECTION("a vicc that disconnects takes the card away") {
    CHECK(emu->control("insert") == "ok");
    REQUIRE(r.select(nt) == 1);
    card.disconnect();
    REQUIRE(test::wait_for([&] { return emu->control("stats").find("card=absent") != std::string::npos; }));
    Bytes rx;
    CHECK(r.transceive(echo_apdu(4), rx) == NFC_ERFTRANS);
    CHECK(r.select(nt) == 0);
  }
}

TEST_CASE("fault: card removed after N APDUs (mid-transaction)", "[pn532][libnfc][fault]") {
  EmulatorOptions opt;
  opt.faults.remove_after = 2;
  RunningEmulator emu(opt);
  test::ViccTestCard card(emu->card_port());
  Reader r(emu->connstring());
  REQUIRE(nfc_device_set_property_bool(r.dev.get(), NP_INFINITE_SELECT, false) == 0);
  nfc_target nt{};
  REQUIRE(r.select(nt) == 1);
  Bytes rx;
  CHECK(r.transceive(echo_apdu(4), rx) == 6);
  CHECK(r.transceive(echo_apdu(4), rx) == 6);
  CHECK(r.transceive(echo_apdu(4), rx) == NFC_ERFTRANS);
  CHECK(card.apdus() == 2);
  CHECK(nfc_initiator_target_is_present(r.dev.get(), &nt) == NFC_ETGRELEASED);
  CHECK(r.select(nt) == 0);
  CHECK(emu->control("insert") == "ok");
  CHECK(r.select(nt) == 1);
  CHECK(r.transceive(echo_apdu(4), rx) == 6);
}

TEST_CASE("fault: delayed answers time out in libnfc, then traffic recovers", "[pn532][libnfc][fault]") {
  RunningEmulator emu;
  test::ViccTestCard card(emu->card_port());
  Reader r(emu->connstring());
  nfc_target nt{};
  REQUIRE(r.select(nt) == 1);
  Bytes rx;
  CHECK(emu->control("delay 300") == "ok");
  CHECK(r.transceive(echo_apdu(4), rx, 100) == NFC_ETIMEOUT);
  // A delay within the timeout is only slower.
  CHECK(emu->control("delay 30") == "ok");
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(r.transceive(echo_apdu(4), rx, 1000) == 6);
  CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(30));
  CHECK(emu->control("delay 0") == "ok");
  CHECK(r.transceive(echo_apdu(4), rx) == 6);
}

TEST_CASE("fault: corrupted answer and error frames give NFC_EIO, once", "[pn532][libnfc][fault]") {
  RunningEmulator emu;
  test::ViccTestCard card(emu->card_port());
  Reader r(emu->connstring());
  nfc_target nt{};
  REQUIRE(r.select(nt) == 1);
  Bytes rx;
  CHECK(emu->control("corrupt 1") == "ok");
  CHECK(r.transceive(echo_apdu(4), rx) == NFC_EIO);
  CHECK(r.transceive(echo_apdu(4), rx) == 6);
  CHECK(emu->control("error-frames 1") == "ok");
  CHECK(r.transceive(echo_apdu(4), rx) == NFC_EIO);
  CHECK(r.transceive(echo_apdu(4), rx) == 6);
}

TEST_CASE("fault: status bytes map to libnfc errors", "[pn532][libnfc][fault]") {
  RunningEmulator emu;
  test::ViccTestCard card(emu->card_port());
  Reader r(emu->connstring());
  nfc_target nt{};
  REQUIRE(r.select(nt) == 1);
  Bytes rx;
  CHECK(emu->control("status 01") == "ok");
  CHECK(r.transceive(echo_apdu(4), rx) == NFC_ERFTRANS);
  CHECK(emu->control("status 10") == "ok");
  CHECK(r.transceive(echo_apdu(4), rx) == NFC_EINVARG);
  CHECK(emu->control("status 29") == "ok");
  CHECK(r.transceive(echo_apdu(4), rx) == NFC_ETGRELEASED);
}

TEST_CASE("reopening the device works (PowerDown, wake-up, SAMConfiguration)", "[pn532][libnfc]") {
  RunningEmulator emu;
  test::ViccTestCard card(emu->card_port());
  for (int i = 0; i < 3; ++i) {
    Reader r(emu->connstring());
    nfc_target nt{};
    REQUIRE(r.select(nt) == 1);
    Bytes rx;
    CHECK(r.transceive(echo_apdu(1), rx) == 3);
    // nfc_idle powers the PN532 down; the next command wakes it with the preamble.
    CHECK(nfc_idle(r.dev.get()) == 0);
    REQUIRE(nfc_initiator_init(r.dev.get()) == 0);
    REQUIRE(r.select(nt) == 1);
    CHECK(r.transceive(echo_apdu(1), rx) == 3);
  }
}

TEST_CASE("nfc_initiator_poll_target (InAutoPoll) finds the card, or nothing in time", "[pn532][libnfc]") {
  RunningEmulator emu;
  test::ViccTestCard card(emu->card_port());
  Reader r(emu->connstring());
  const nfc_modulation nm[2] = {{NMT_ISO14443B, NBR_106}, {NMT_ISO14443A, NBR_106}};
  nfc_target nt{};
  REQUIRE(nfc_initiator_poll_target(r.dev.get(), nm, 2, 2, 1, &nt) == 1);
  const nfc_modulation_type nmt = nt.nm.nmt;  // packed struct: copy before CHECK
  const std::uint8_t sak = nt.nti.nai.btSak;
  CHECK(nmt == NMT_ISO14443A);
  CHECK(sak == 0x20);
  Bytes rx;
  CHECK(r.transceive(echo_apdu(3), rx) == 5);

  CHECK(emu->control("remove") == "ok");
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(nfc_initiator_poll_target(r.dev.get(), nm, 2, 2, 1, &nt) == 0);
  // 2 polls x 1 period (150 ms) x 2 types: the chip gives up after about 600 ms, not at once
  // (how long it takes at most is measured by bench/pn532_libnfc, not asserted here).
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took >= std::chrono::milliseconds(500));
}

TEST_CASE("1000 APDUs through libnfc in a row, each one answered in order", "[pn532][libnfc]") {
  RunningEmulator emu;
  test::ViccTestCard card(emu->card_port());
  Reader r(emu->connstring());
  nfc_target nt{};
  REQUIRE(r.select(nt) == 1);
  Bytes rx;
  int good = 0;
  for (int i = 0; i < 1000; ++i) {
    Bytes c = echo_apdu(8);
    c[5] = static_cast<std::uint8_t>(i);
    c[6] = static_cast<std::uint8_t>(i >> 8);
    if (r.transceive(c, rx) == 10 && rx[0] == c[5] && rx[1] == c[6]) ++good;
  }
  // The time they take is bench/pn532_libnfc's to report; here each must come back in order.
  CHECK(good == 1000);
  CHECK(card.apdus() == 1000);
}
