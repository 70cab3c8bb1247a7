// pn532_libnfc: timings of the PN532 emulator as the real libnfc (pn532_uart over the pty)
// sees it, with the small vicc test card in its field. Reports what the hw tests used to
// assert as upper bounds: N InDataExchange round trips, and how long a poll for an absent card
// takes before the chip gives up (2 polls x 150 ms x 2 types, about 600 ms). Not run in CI.
//   pn532_libnfc [ROUND_TRIPS]   (default 1000)
#include <nfc/nfc.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "otac/hw/pn532_emulator.hpp"
#include "vicc_test_card.hpp"

using namespace otac;
using namespace otac::hw::pn532;
using Clock = std::chrono::steady_clock;

namespace {

struct ContextDeleter {
  void operator()(nfc_context* c) const { nfc_exit(c); }
};
struct DeviceDeleter {
  void operator()(nfc_device* d) const { nfc_close(d); }
};

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

int fail(const char* what) {
  std::fprintf(stderr, "pn532_libnfc: %s\n", what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const long rounds = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 1000;
  if (rounds < 1 || rounds > 1'000'000) return fail("ROUND_TRIPS must be 1 to 1000000");
  const auto dir = std::filesystem::temp_directory_path() / ("otac-pn532-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  EmulatorOptions opt;
  opt.link = (dir / "pn532").string();
  auto emu = Emulator::create(std::move(opt));
  if (!emu) return fail(emu.error().message.c_str());
  std::thread runner([&] { (void)(*emu)->run(); });
  int rc = 0;
  {
    test::ViccTestCard card((*emu)->card_port());
    nfc_context* c = nullptr;
    nfc_init(&c);
    std::unique_ptr<nfc_context, ContextDeleter> ctx(c);
    std::unique_ptr<nfc_device, DeviceDeleter> dev(ctx ? nfc_open(ctx.get(), (*emu)->connstring().c_str()) : nullptr);
    const nfc_modulation nm{NMT_ISO14443A, NBR_106};
    nfc_target nt{};
    if (!dev || nfc_initiator_init(dev.get()) != 0 || nfc_initiator_select_passive_target(dev.get(), nm, nullptr, 0, &nt) != 1) {
      rc = fail("libnfc could not open the emulator or select the card");
    } else {
      std::uint8_t tx[13] = {0x00, 0xEE, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0};
      std::uint8_t rx[300];
      long good = 0;
      const auto t0 = Clock::now();
      for (long i = 0; i < rounds; ++i) {
        tx[5] = static_cast<std::uint8_t>(i);
        if (nfc_initiator_transceive_bytes(dev.get(), tx, sizeof tx, rx, sizeof rx, 1000) == 10 && rx[0] == tx[5]) ++good;
      }
      const double took = ms_since(t0);
      std::printf("%ld InDataExchange round trips: %.1f ms (%.3f ms each), %ld answered in order\n", rounds, took,
                  took / static_cast<double>(rounds), good);
      (void)(*emu)->control("remove");
      const auto p0 = Clock::now();
      const nfc_modulation both[2] = {{NMT_ISO14443B, NBR_106}, {NMT_ISO14443A, NBR_106}};
      const int found = nfc_initiator_poll_target(dev.get(), both, 2, 2, 1, &nt);
      std::printf("poll for an absent card (2 polls x 150 ms x 2 types): %.1f ms, found %d\n", ms_since(p0), found);
    }
  }
  (*emu)->request_stop();
  runner.join();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
