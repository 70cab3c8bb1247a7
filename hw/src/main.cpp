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
#include <vector>

#include "otac/common/number.hpp"
#include "otac/hw/pn532_emulator.hpp"
#include "otac/sys/cli.hpp"
#include "otac/sys/log.hpp"

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
  std::fprintf(stderr, "otac-pn532-emu: %s (otac-pn532-emu --help)\n", msg.c_str());
  return 2;
}

// --status HEX[:N]: the status byte for the next N (default 1) InDataExchange answers.
bool parse_status(const std::string& v, EmulatorOptions& opt) {
  const auto colon = v.find(':');
  const std::string_view hexpart = std::string_view(v).substr(0, colon);
  std::uint32_t byte = 0;
  auto [p, ec] = std::from_chars(hexpart.data(), hexpart.data() + hexpart.size(), byte, 16);
  if (ec != std::errc{} || p != hexpart.data() + hexpart.size() || hexpart.empty() || byte > 0xFF) return false;
  std::uint32_t count = 1;
  if (colon != std::string::npos) {
    auto n = otac::parse_uint(std::string_view(v).substr(colon + 1), 0, 1000000);
    if (!n) return false;
    count = static_cast<std::uint32_t>(*n);
  }
  opt.faults.status_byte = static_cast<std::uint8_t>(byte);
  opt.faults.status_errors = count;
  return true;
}

// --uid HEX: 4, 7 or 10 bytes; the ATQA says the UID size.
bool parse_uid(const std::string& v, EmulatorOptions& opt) {
  auto uid = otac::from_hex(v);
  if (!uid || (uid->size() != 4 && uid->size() != 7 && uid->size() != 10)) return false;
  opt.identity.uid = *uid;
  if (uid->size() == 7) opt.identity.atqa_lo = 0x44;  // ATQA bits say "double size UID"
  if (uid->size() == 10) opt.identity.atqa_lo = 0x84;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  EmulatorOptions opt;
  // The command line through CLI11 (otac/sys/cli.hpp); the full text is print_help's.
  CLI::App app{"Emulates an NXP PN532 NFC reader on a pseudo-terminal for libnfc's pn532_uart driver.", "otac-pn532-emu"};
  otac::sys::cli_defaults(app);
  app.set_help_flag();  // print_help below: the control commands come from the chip
  bool help = false, no_card = false, verbose = false;
  std::string link, port_file, control, status, uid;
  std::uint16_t card_port = 0;
  std::uint32_t remove_after = 0, delay = 0, corrupt = 0, error_frames = 0, card_timeout = 5000;
  std::vector<std::string> send;
  app.add_flag("-h,--help", help, "this text");
  app.add_option("--link", link, "symlink to the pty slave")->check([](const std::string& v) {
    return v.empty() ? std::string("needs a path") : std::string();
  });
  CLI::Option* port_opt = app.add_option("--card-port", card_port, "TCP port on 127.0.0.1 for the card; 0 picks one");
  app.add_option("--port-file", port_file, "write the card port here once ready");
  app.add_option("--control", control, "Unix socket taking control commands");
  app.add_flag("--no-card", no_card, "start with the card out of the field");
  CLI::Option* remove_opt =
      app.add_option("--remove-after", remove_after, "take the card out after N APDUs")->check(CLI::Range(0u, 1000000u));
  app.add_option("--delay", delay, "delay card answers by MS ms")->check(CLI::Range(0u, 600000u));
  app.add_option("--corrupt", corrupt, "wrong checksum on the next N frames")->check(CLI::Range(0u, 1000000u));
  app.add_option("--error-frames", error_frames, "error frame for the next N commands")->check(CLI::Range(0u, 1000000u));
  app.add_option("--status", status, "status byte HEX[:N] for the next InDataExchange answers");
  app.add_option("--uid", uid, "UID in hex (4, 7 or 10 bytes)");
  app.add_option("--card-timeout", card_timeout, "longest wait for the card, ms")->check(CLI::Range(1u, 600000u));
  app.add_flag("-v,--verbose", verbose, "log every frame and event");
  app.add_option("--send", send, "PATH COMMAND...: send one control command to a running emulator")
      ->expected(2, 64)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return otac::sys::cli_exit(app, e);
  }
  if (help) {
    print_help();
    return 0;
  }
  if (!send.empty()) {
    std::string command;
    for (std::size_t j = 1; j < send.size(); ++j) command += (j > 1 ? " " : "") + send[j];
    return send_control(send[0], command);
  }
  if (link.empty()) return usage("--link PATH is required");
  if (port_opt->count() == 0) return usage("--card-port PORT|0 is required");
  if (!status.empty() && !parse_status(status, opt)) return usage("--status needs a hex status byte and an optional count 0..1000000, e.g. 01 or 29:3");
  if (!uid.empty() && !parse_uid(uid, opt)) return usage("--uid needs 4, 7 or 10 bytes in hex");
  opt.link = link;
  opt.card_port = card_port;
  opt.port_file = port_file;
  opt.control_path = control;
  opt.faults.card_out = no_card;
  if (remove_opt->count() != 0) opt.faults.remove_after = remove_after;
  opt.faults.delay_ms = delay;
  opt.faults.corrupt = corrupt;
  opt.faults.error_frames = error_frames;
  opt.card_timeout = std::chrono::milliseconds(card_timeout);
  opt.verbose = verbose;

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

  otac::sys::log::info("ready", {{"connstring", (*emu)->connstring()},
                                 {"pty", (*emu)->slave_path()},
                                 {"card_port", "127.0.0.1:" + std::to_string((*emu)->card_port())}});
  auto r = (*emu)->run();
  g_emulator.store(nullptr);
  if (!r) {
    otac::sys::log::error("failed", {{"error", r.error().message}});
    return 1;
  }
  return 0;
}
