// Integration: a real PC/SC client (libpcsclite SCardTransmit) talks to otac-card through a
// real pcscd with its vpcd virtual reader. The cryptogram is checked independently from
// protocol.md 3 with the list's codes. The round-trip time is measured by `applet_bench pcsc`
// (bench/applet_pcsc.sh), not asserted here.
#include <cstdio>
#include <cstring>
#include <optional>

#include "card_fixture.hpp"
#include "otac/sys/pcsc.hpp"
#include "process.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;

namespace {

using PcscCard = sys::pcsc::Card;
using PcscContext = sys::pcsc::Context;

// One exchange; the R-APDU parsed. Runs on the test's thread.
apdu::Response transmit(const PcscCard& card, const Bytes& capdu) {
  auto rx = card.transmit(capdu, 512);
  INFO((rx ? std::string() : rx.error().message));
  REQUIRE(rx.ok());
  auto r = apdu::parse_response(*rx);
  REQUIRE(r.ok());
  return *r;
}

std::string find_reader(const PcscContext& ctx) {
  auto names = ctx.readers();
  if (!names) return {};
  for (const auto& n : *names)
    if (n.find("Virtual PCD") != std::string::npos) return n;
  return {};
}

}  // namespace

TEST_CASE("pcscd + vpcd: a PC/SC client selects the applet and runs a challenge-response through otac-card") {
  FileLock lock("/tmp/otac-pcscd.lock");
  TempDir dir;
  // The card: personalized with a list, prepared through the applet library.
  const auto state = dir.path / "card.state";
  auto codes = test_codes(5);
  {
    FileStorage fs(state);
    Card c;
    personalize(c);
    load_codes(c, 3, codes, 1);
    REQUIRE(fs.commit(c.store.load().value()));
  }
  Pcscd pcscd(dir.path / "pcscd");
  const auto port = pcscd.vpcd_port();
  Child card({OTAC_CARD_BIN, "run", "--state", state.string(), "--vicc", "127.0.0.1:" + port}, dir.path / "card.log");

  auto ctx = PcscContext::establish();
  INFO((ctx ? std::string() : ctx.error().message));
  REQUIRE(ctx.ok());
  std::string reader;
  std::optional<PcscCard> card_handle;
  for (int i = 0; i < 100 && !card_handle; ++i) {  // the card shows up about 0.4 s after the vicc connects
    if (reader.empty()) reader = find_reader(*ctx);
    if (!reader.empty()) {
      if (auto c = PcscCard::connect(*ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)) card_handle.emplace(std::move(*c));
    }
    if (!card_handle) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO("reader '" << reader << "'");
  REQUIRE(card_handle.has_value());
  const PcscCard& h = *card_handle;
  REQUIRE(card.running());

  auto fci = transmit(h, hex("00A4040006F04F5441430100"));
  CHECK(fci.sw == 0x9000);
  CHECK(fci.data == hex("6F17 8406F04F54414301 A50D 9F080102 DF0102003F DF020102"));
  CHECK(transmit(h, hex("00A4040006A00000000401")).sw == 0x6A82);
  CHECK(transmit(h, hex("00A4040006F04F5441430100")).sw == 0x9000);

  Ch ch;
  Bytes a = cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true);
  auto r = transmit(h, a);
  REQUIRE(r.sw == 0x9000);
  CHECK(field(r.data, 0x77, 0xDF42) == hex("0003"));
  CHECK(field(r.data, 0x77, 0x9F26) == mac8(0x01, codes[0], ch.mac_input(3, 0, 1)));
  Bytes in = to_bytes("ARPC");
  append(in, field(r.data, 0x77, 0x9F26));
  append(in, to_bytes("00"));
  Bytes confirm = mac8(0x01, codes[0], in);
  append(confirm, to_bytes("00"));
  CHECK(transmit(h, cmd(0x80, 0xA2, 0x00, 0x00, confirm)).sw == 0x9000);

  // opensc-tool, an independent PC/SC client that probes many foreign AIDs on connect.
  if (::access("/usr/bin/opensc-tool", X_OK) == 0) {
    auto tool = run_shell("/usr/bin/opensc-tool -r 0 -s 00A4040006F04F5441430100 -s 80A6000000 2>&1");
    INFO(tool.out);
    CHECK(tool.status == 0);
    CHECK(tool.out.find("SW1=0x90, SW2=0x00") != std::string::npos);
    CHECK(tool.out.find("E0 2B") != std::string::npos);
  } else {
    WARN("opensc-tool not installed: the opensc-tool part of this test was skipped");
  }

  CHECK(card.stop() == 0);
  // The code stayed burned in the state file.
  FileStorage fs(state);
  Applet after(fs);
  after.process(hex("00A4040006F04F5441430100"));
  auto s = apdu::parse_response(after.process(hex("80A6000000"))).value();
  CHECK(field(s.data, 0xE0, 0xDF48) == hex("0004"));
}
