// otac-pn532-emu: a PN532 on a pseudo-terminal for libnfc's pn532_uart driver, with a vicc
// card port and fault injection. See --help.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <charconv>
#include <string>
#include <string_view>

#include "otac/common/number.hpp"
#include "otac/hw/pn532_emulator.hpp"

namespace {

using otac::hw::pn532::Emulator;
using otac::hw::pn532::EmulatorOptions;

std::atomic<Emulator*> g_emulator{nullptr};

extern "C" void on_signal(int /*sig*/) {
  if (Emulator* e = g_emulator.load()) e->request_stop();
}

void print_help() {
  // The control commands, indented under --control.
  std::string controls;
  for (std::string_view rest = otac::hw::pn532::Chip::control_help(); !rest.empty();) {
    const auto nl = rest.find('\n');
    controls += "    " + std::string(rest.substr(0, nl)) + "\n";
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
  }
  std::printf(
      "Usage: otac-pn532-emu --link PATH --card-port PORT|0 [OPTIONS]\n"
      "\n"
      "Emulates an NXP PN532 NFC reader on a pseudo-terminal, speaking the PN532 UART (HSU)\n"
      "frame protocol, so that the stock libnfc driver pn532_uart drives it like a real reader:\n"
      "  LIBNFC_AUTO_SCAN=false LIBNFC_DEFAULT_DEVICE=pn532_uart:PATH nfc-list\n"
      "The card in the reader's field is whatever vicc client connects to the card port (the\n"
      "emulator plays the server side of the vpcd/vicc protocol: 2-byte big-endian length, then\n"
      "the payload; 1-byte control messages 00 power off, 01 power on, 02 reset, 04 get ATR).\n"
      "While a vicc is connected and not taken out by a fault, a card is in the field and\n"
      "InListPassiveTarget (106 kbps type A) activates it as an ISO 14443-4 card (SAK 20, ATS);\n"
      "each InDataExchange forwards one APDU. Only one card at a time: a second vicc connection\n"
      "is closed at once.\n"
      "\n"
      "Required:\n"
      "  --link PATH            create PATH as a symlink to the pty slave (/dev/pts/N); an\n"
      "                         existing symlink is replaced, any other file is refused\n"
      "  --card-port PORT       TCP port on 127.0.0.1 for the card; 0 picks a free port\n"
      "Options:\n"
      "  --port-file FILE       write the card port to FILE once everything is ready (use it as\n"
      "                         the readiness signal); removed on exit\n"
      "  --control PATH         Unix stream socket (mode 0600) taking control commands, one per\n"
      "                         line, each answered by one line 'ok ...' or 'error: ...'\n"
      "                         (help: several lines); send one from a shell with --send\n"
      "%s"
      "  --no-card              start with the card held out of the field\n"
      "  --remove-after N       let N APDUs pass, then take the card out of the field: the next\n"
      "                         InDataExchange answers status 01 (libnfc: NFC_ERFTRANS)\n"
      "  --delay MS             delay every answer carrying card traffic (InDataExchange,\n"
      "                         InCommunicateThru) by MS ms; past libnfc's timeout the call\n"
      "                         fails with NFC_ETIMEOUT and the late answer is discarded\n"
      "  --corrupt N            give the next N answer frames a wrong checksum (NFC_EIO)\n"
      "  --error-frames N       answer the next N commands with the PN532 error frame (NFC_EIO)\n"
      "  --status HEX[:N]       answer the next N (default 1) InDataExchange with status byte HEX\n"
      "                         (01 timeout -> NFC_ERFTRANS, 29 released -> NFC_ETGRELEASED)\n"
      "  --uid HEX              UID reported for the card (4, 7 or 10 bytes; default 084f5441)\n"
      "  --card-timeout MS      longest wait for the card's answer (default 5000); a card that\n"
      "                         misses it is dropped from the field\n"
      "  --verbose              log every frame and event to stderr\n"
      "  --send PATH COMMAND... client mode: send one control command to the emulator whose\n"
      "                         --control socket is PATH, print the answer; exit 0 on 'ok',\n"
      "                         1 on 'error: ...' or no answer in 5 s. Example:\n"
      "                           otac-pn532-emu --send /tmp/emu.sock remove-after 2\n"
      "  --help                 this text\n"
      "\n"
      "Infinite-retry polling (libnfc's default NP_INFINITE_SELECT) waits until a card is in the\n"
      "field, like the chip; with finite retries an empty field answers 'no target' at once.\n"
      "Limits: 106 kbps type A only (FeliCa, B, Jewel and NFC-DEP probes find nothing);\n"
      "APDUs and answers up to 262 bytes (PN532 buffer), longer answers give status 09.\n"
      "\n"
      "SIGTERM or SIGINT stop the emulator cleanly; it removes the link, the control socket\n"
      "and the port file. Exit status: 0 after a clean stop, 1 on failure, 2 on usage errors.\n",
      controls.c_str());
}

bool parse_u32(std::string_view s, std::uint32_t max, std::uint32_t& out) {
  auto v = otac::parse_uint(s, 0, max);
  if (v) out = static_cast<std::uint32_t>(*v);
  return v.ok();
}

// Client mode: one command to a running emulator's control socket.
int send_control(const std::string& path, const std::string& command) {
  sockaddr_un a{};
  if (path.size() >= sizeof a.sun_path) {
    std::fprintf(stderr, "otac-pn532-emu: control socket path too long: %s\n", path.c_str());
    return 1;
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 1;
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::fprintf(stderr, "otac-pn532-emu: cannot connect to %s: %s (is the emulator running with --control?)\n",
                 path.c_str(), std::strerror(errno));
    ::close(fd);
    return 1;
  }
  const std::string msg = command + "\n";
  (void)!::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  std::string answer;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (int i = 0; i < 1000 && std::chrono::steady_clock::now() < deadline; ++i) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[512];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (answer.empty()) {
    std::fprintf(stderr, "otac-pn532-emu: no answer from %s within 5 s\n", path.c_str());
    return 1;
  }
  std::fputs(answer.c_str(), stdout);
  return answer.rfind("ok", 0) == 0 ? 0 : 1;
}

int usage(const std::string& msg) {
  std::fprintf(stderr, "otac-pn532-emu: %s\nTry 'otac-pn532-emu --help'.\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  EmulatorOptions opt;
  bool have_port = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](std::string_view& out) {
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    std::string_view v;
    std::uint32_t n = 0;
    if (a == "--help" || a == "-h") {
      print_help();
      return 0;
    } else if (a == "--send") {
      if (i + 2 >= argc) return usage("--send needs the control socket path and a command");
      const std::string path = argv[i + 1];
      std::string command;
      for (int j = i + 2; j < argc; ++j) command += (j > i + 2 ? " " : "") + std::string(argv[j]);
      return send_control(path, command);
    } else if (a == "--link") {
      if (!value(v) || v.empty()) return usage("--link needs a path");
      opt.link = std::string(v);
    } else if (a == "--card-port") {
      if (!value(v) || !parse_u32(v, 65535, n)) return usage("--card-port needs a port 0..65535");
      opt.card_port = static_cast<std::uint16_t>(n);
      have_port = true;
    } else if (a == "--port-file") {
      if (!value(v) || v.empty()) return usage("--port-file needs a path");
      opt.port_file = std::string(v);
    } else if (a == "--control") {
      if (!value(v) || v.empty()) return usage("--control needs a path");
      opt.control_path = std::string(v);
    } else if (a == "--no-card") {
      opt.faults.card_out = true;
    } else if (a == "--remove-after") {
      if (!value(v) || !parse_u32(v, 1000000, n)) return usage("--remove-after needs a count 0..1000000");
      opt.faults.remove_after = n;
    } else if (a == "--delay") {
      if (!value(v) || !parse_u32(v, 600000, n)) return usage("--delay needs milliseconds 0..600000");
      opt.faults.delay_ms = n;
    } else if (a == "--corrupt") {
      if (!value(v) || !parse_u32(v, 1000000, n)) return usage("--corrupt needs a count");
      opt.faults.corrupt = n;
    } else if (a == "--error-frames") {
      if (!value(v) || !parse_u32(v, 1000000, n)) return usage("--error-frames needs a count");
      opt.faults.error_frames = n;
    } else if (a == "--status") {
      if (!value(v)) return usage("--status needs HEX[:N]");
      const auto colon = v.find(':');
      const std::string_view hexpart = v.substr(0, colon);
      std::uint32_t byte = 0;
      auto [p, ec] = std::from_chars(hexpart.data(), hexpart.data() + hexpart.size(), byte, 16);
      if (ec != std::errc{} || p != hexpart.data() + hexpart.size() || hexpart.empty() || byte > 0xFF) {
        return usage("--status needs a hex status byte, e.g. 01 or 29:3");
      }
      std::uint32_t count = 1;
      if (colon != std::string_view::npos && !parse_u32(v.substr(colon + 1), 1000000, count)) {
        return usage("--status count after ':' must be 0..1000000");
      }
      opt.faults.status_byte = static_cast<std::uint8_t>(byte);
      opt.faults.status_errors = count;
    } else if (a == "--uid") {
      auto uid = value(v) ? otac::from_hex(v) : otac::Result<otac::Bytes>(otac::make_error(otac::Errc::bad_value, ""));
      if (!uid || (uid->size() != 4 && uid->size() != 7 && uid->size() != 10)) {
        return usage("--uid needs 4, 7 or 10 bytes in hex");
      }
      opt.identity.uid = *uid;
      if (uid->size() == 7) opt.identity.atqa_lo = 0x44;  // ATQA bits say "double size UID"
      if (uid->size() == 10) opt.identity.atqa_lo = 0x84;
    } else if (a == "--card-timeout") {
      if (!value(v) || !parse_u32(v, 600000, n) || n == 0) return usage("--card-timeout needs milliseconds 1..600000");
      opt.card_timeout = std::chrono::milliseconds(n);
    } else if (a == "--verbose" || a == "-v") {
      opt.verbose = true;
    } else {
      return usage("unknown argument '" + std::string(a) + "'");
    }
  }
  if (opt.link.empty()) return usage("--link PATH is required");
  if (!have_port) return usage("--card-port PORT|0 is required");

  std::signal(SIGPIPE, SIG_IGN);
  auto emu = Emulator::create(std::move(opt));
  if (!emu) {
    std::fprintf(stderr, "otac-pn532-emu: %s\n", emu.error().message.c_str());
    return 1;
  }
  g_emulator.store(emu->get());
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  (void)sigaction(SIGTERM, &sa, nullptr);
  (void)sigaction(SIGINT, &sa, nullptr);

  std::fprintf(stderr, "otac-pn532-emu: ready: libnfc connstring %s (pty %s), card port 127.0.0.1:%u\n",
               (*emu)->connstring().c_str(), (*emu)->slave_path().c_str(), static_cast<unsigned>((*emu)->card_port()));
  auto r = (*emu)->run();
  g_emulator.store(nullptr);
  if (!r) {
    std::fprintf(stderr, "otac-pn532-emu: %s\n", r.error().message.c_str());
    return 1;
  }
  return 0;
}
