// Integration: a real PC/SC client (libpcsclite SCardTransmit) talks to otac-card through a
// real pcscd with its vpcd virtual reader. The cryptogram is checked independently from
// protocol.md 3 with the list's codes. Prints the APDU round-trip time (a benchmark figure).
#include <winscard.h>

#include <cstdio>
#include <cstring>

#include "card_fixture.hpp"
#include "process.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;

namespace {

// SCARDCONTEXT, released once.
class PcscContext {
 public:
  PcscContext() {
    if (SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &ctx_) != SCARD_S_SUCCESS) ctx_ = 0;
  }
  ~PcscContext() { if (ctx_) SCardReleaseContext(ctx_); }
  PcscContext(const PcscContext&) = delete;
  PcscContext& operator=(const PcscContext&) = delete;
  SCARDCONTEXT get() const { return ctx_; }

 private:
  SCARDCONTEXT ctx_ = 0;
};

// SCARDHANDLE, disconnected once.
class PcscCard {
 public:
  PcscCard() = default;
  ~PcscCard() { if (h_) SCardDisconnect(h_, SCARD_LEAVE_CARD); }
  PcscCard(const PcscCard&) = delete;
  PcscCard& operator=(const PcscCard&) = delete;
  bool connect(SCARDCONTEXT ctx, const std::string& reader) {
    DWORD proto = 0;
    return SCardConnect(ctx, reader.c_str(), SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h_, &proto) ==
           SCARD_S_SUCCESS;
  }
  apdu::Response transmit(const Bytes& a) {
    std::uint8_t buf[512];
    DWORD len = sizeof buf;
    const LONG rc = SCardTransmit(h_, SCARD_PCI_T1, a.data(), static_cast<DWORD>(a.size()), nullptr, buf, &len);
    REQUIRE(rc == SCARD_S_SUCCESS);
    auto r = apdu::parse_response(ByteView(buf, len));
    REQUIRE(r.ok());
    return *r;
  }

 private:
  SCARDHANDLE h_ = 0;
};

std::string find_reader(SCARDCONTEXT ctx) {
  char buf[2048];
  DWORD len = sizeof buf;
  if (SCardListReaders(ctx, nullptr, buf, &len) != SCARD_S_SUCCESS) return {};
  for (const char* p = buf; *p; p += std::strlen(p) + 1)
    if (std::string(p).find("Virtual PCD") != std::string::npos) return p;
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
  REQUIRE(sh(std::string(OTAC_SOURCE_DIR "/tests/support/pcscd.sh start ") + dir.path.string() + "/pcscd") == 0);
  struct StopPcscd {
    std::string d;
    ~StopPcscd() { sh(std::string(OTAC_SOURCE_DIR "/tests/support/pcscd.sh stop ") + d); }
  } stop_pcscd{dir.path.string() + "/pcscd"};
  const auto port = read_env(dir.path / "pcscd" / "pcscd.env").at("VPCD_PORT");
  Child card({OTAC_CARD_BIN, "run", "--state", state.string(), "--vicc", "127.0.0.1:" + port}, dir.path / "card.log");

  PcscContext ctx;
  REQUIRE(ctx.get() != 0);
  std::string reader;
  PcscCard h;
  bool connected = false;
  for (int i = 0; i < 100 && !connected; ++i) {  // the card shows up about 0.4 s after the vicc connects
    if (reader.empty()) reader = find_reader(ctx.get());
    if (!reader.empty()) connected = h.connect(ctx.get(), reader);
    if (!connected) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO("reader '" << reader << "'");
  REQUIRE(connected);
  REQUIRE(card.running());

  auto fci = h.transmit(hex("00A4040006F04F5441430100"));
  CHECK(fci.sw == 0x9000);
  CHECK(fci.data == hex("6F17 8406F04F54414301 A50D 9F080101 DF0102003F DF020102"));
  CHECK(h.transmit(hex("00A4040006A00000000401")).sw == 0x6A82);
  CHECK(h.transmit(hex("00A4040006F04F5441430100")).sw == 0x9000);

  Ch ch;
  Bytes a = cmd(0x80, 0xA0, 0x00, 0x00, ch.encode(), true);
  auto r = h.transmit(a);
  REQUIRE(r.sw == 0x9000);
  CHECK(field(r.data, 0x77, 0xDF42) == hex("0003"));
  CHECK(field(r.data, 0x77, 0x9F26) == mac8(0x01, codes[0], ch.mac_input(3, 0, 1)));
  Bytes in = to_bytes("ARPC");
  append(in, field(r.data, 0x77, 0x9F26));
  append(in, to_bytes("00"));
  Bytes confirm = mac8(0x01, codes[0], in);
  append(confirm, to_bytes("00"));
  CHECK(h.transmit(cmd(0x80, 0xA2, 0x00, 0x00, confirm)).sw == 0x9000);

  // Benchmark figure: GET STATUS round trips through pcscd and vpcd.
  const auto t0 = std::chrono::steady_clock::now();
  const int rounds = 200;
  for (int i = 0; i < rounds; ++i) REQUIRE(h.transmit(hex("80A6000000")).sw == 0x9000);
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / rounds;
  std::printf("pcscd/vpcd APDU round trip through otac-card: %.0f us (mean of %d)\n", us, rounds);
  CHECK(us < 40000.0);  // without TCP_QUICKACK each APDU would cost ~44 ms

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
