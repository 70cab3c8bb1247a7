// libFuzzer target: card answers fed into the terminal's Flow. The input is a transcript
// (terminal/transcript.hpp), so the transcript parser is fuzzed too; a parsed transcript is
// replayed without comparing commands, so that every made-up R-APDU reaches the Flow through
// the driver, as a hostile card's would. The backend stand-in declines the first run and
// approves the second (with a fixed ARPC). Invariants: nothing crashes or hangs, the terminal
// never approves what the backend declined, and an approval carries the backend's auth code.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "terminal/driver.hpp"
#include "terminal/transcript.hpp"

using namespace otac;
using namespace otac::terminal;

namespace {

TxnParams params() {
  TxnParams p;
  p.txn_id = "FUZZ-1";
  p.terminal_id = "TERM0001";
  p.amount = 1234;
  p.year = 2026;
  p.month = 1;
  p.day = 2;
  return p;
}

Outcome run(const Transcript& t, bool approve) {
  ReplayReader reader(t, false);
  DriverIo io;
  io.reader = &reader;
  io.post = [approve](const std::string&) -> Result<std::string> {
    if (!approve) return std::string(R"({"txn_id":"FUZZ-1","decision":"declined","reason":"limit"})");
    return std::string(
        R"({"txn_id":"FUZZ-1","decision":"approved","reason":"ok","auth_code":"123456","arc":"3030","arpc":"0102030405060708"})");
  };
  io.poll = [](const std::string&, unsigned) -> Result<std::string> { return Error{Errc::io, "no poll"}; };
  io.cancel = [](const std::string&) -> Result<std::string> { return Error{Errc::io, "no cancel"}; };
  io.pin = [](const std::string&) -> std::optional<SecretBytes> { return SecretBytes(to_bytes("1234")); };
  DriverLimits lim;
  lim.card_wait = Millis(0);
  lim.apdu_timeout = Millis(0);
  lim.removal_wait = Millis(0);
  lim.held_limit = std::chrono::seconds(0);
  Flow flow(params(), [](std::size_t n) { return Bytes(n, 0x5A); });
  return run_flow(flow, io, lim);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto t = parse_transcript(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!t) return 0;
  (void)format_transcript(*t);
  if (run(*t, false).decision == Decision::approved) __builtin_trap();
  const Outcome ok = run(*t, true);
  if (ok.decision == Decision::approved && ok.auth_code != "123456") __builtin_trap();
  return 0;
}
