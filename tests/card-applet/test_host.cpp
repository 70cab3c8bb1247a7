// The otac-card host: its framing and line codecs, its command line, and the daemon against
// in-process stand-ins for vpcd (the test is the reader) and Kannel's fake SMSC (the test is
// bearerbox), including reconnection after the peer drops.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "card_fixture.hpp"
#include "host.hpp"
#include "process.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;
namespace ch = otac::card_host;

namespace {

// A loopback TCP server socket on a free port.
struct Server {
  ch::Fd fd;
  std::uint16_t port = 0;
  Server() : fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd.get(), 4) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ch::Fd accept(int timeout_ms = 5000) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return ch::Fd{};
    return ch::Fd(::accept4(fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }
};

// Reads until pred(buffer) or timeout.
template <class Pred>
Bytes read_until(int fd, Pred pred, int timeout_ms = 5000) {
  Bytes buf;
  for (int waited = 0; waited < timeout_ms && !pred(buf); waited += 20) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) != 1) continue;
    std::uint8_t tmp[4096];
    const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) break;
    buf.insert(buf.end(), tmp, tmp + n);
  }
  return buf;
}

// One vicc exchange as vpcd does it: send a framed message, read the framed answer.
Bytes vicc_exchange(int fd, const Bytes& msg) {
  REQUIRE(ch::write_all(fd, ch::ViccFramer::frame(msg), 2000).ok());
  ch::ViccFramer f;
  std::optional<Bytes> out;
  read_until(fd, [&](const Bytes& b) {
    f = ch::ViccFramer{};
    f.feed(b);
    out = f.next();
    return out.has_value();
  });
  REQUIRE(out.has_value());
  return *out;
}

// otac-card with its stderr joined to stdout.
ShellResult run_cli(const std::string& args) { return run_shell(std::string(OTAC_CARD_BIN) + " " + args + " 2>&1"); }
// otac-card with `lines` (digits only, one secret each) on its standard input, as a script gives them.
ShellResult run_cli_in(const std::string& lines, const std::string& args) {
  std::string printf_arg;
  for (char c : lines) printf_arg += c == '\n' ? std::string("\\n") : std::string(1, c);
  return run_shell("printf '" + printf_arg + "' | " + std::string(OTAC_CARD_BIN) + " " + args + " 2>&1");
}

void write_card_state(const std::filesystem::path& p, Card& c) {
  FileStorage fs(p);
  REQUIRE(fs.commit(c.store.load().value()));
}

}  // namespace

TEST_CASE("vicc framing: 2-byte big-endian length, split and joined reads") {
  ch::ViccFramer f;
  CHECK(ch::ViccFramer::frame(hex("04")) == hex("000104"));
  f.feed(hex("0001"));
  CHECK(!f.next());
  f.feed(hex("04 0005 00A4"));
  CHECK(f.next() == std::optional<Bytes>(hex("04")));
  CHECK(!f.next());
  f.feed(hex("040000 0000"));
  CHECK(f.next() == std::optional<Bytes>(hex("00A4040000")));
  CHECK(f.next() == std::optional<Bytes>(Bytes{}));
}

TEST_CASE("fake-SMSC lines: both MT forms, text and data, MO format, URL codec") {
  auto a = ch::parse_mt_line("+15550100 +15550123 udh %02p%00 data %01%02%FF\n");
  REQUIRE(a.ok());
  CHECK(a->from == "+15550100");
  CHECK(a->to == "+15550123");
  CHECK(a->udh == hex("027000"));
  CHECK(a->data == hex("0102FF"));
  auto b = ch::parse_mt_line("1 2 udh %02p%00 %41B\r\n");  // older Kannel: no "data" keyword
  REQUIRE(b.ok());
  CHECK(b->data == to_bytes("AB"));
  auto t = ch::parse_mt_line("1 2 text hello world");
  REQUIRE(t.ok());
  CHECK(t->data == to_bytes("hello world"));
  CHECK(ch::parse_mt_line("1 2 data %4").error().code == Errc::truncated);
  CHECK(ch::parse_mt_line("1 2 data %zz").error().code == Errc::bad_value);
  CHECK(!ch::parse_mt_line("1 2").ok());
  CHECK(!ch::parse_mt_line("1 2 route x y").ok());
  CHECK(ch::format_mo_line({"+1", "+2", hex("027100"), hex("00FF41")}) == "+1 +2 udh %02q%00 %00%FFA\n");
  CHECK(ch::format_mo_line({"1", "2", {}, to_bytes("a b")}) == "1 2 data a%20b\n");
  CHECK(ch::url_decode("a+b%2B").value() == to_bytes("a b+"));
  ch::LineSplitter ls;
  ls.feed(as_bytes("one\ntw"));
  CHECK(ls.next()->value() == "one");
  CHECK(!ls.next());
  ls.feed(as_bytes("o\n"));
  CHECK(ls.next()->value() == "two");
  ls.feed(Bytes(70000, 'x'));
  auto big = ls.next();
  REQUIRE(big.has_value());
  CHECK(!big->ok());
}

TEST_CASE("endpoint parsing") {
  CHECK(ch::parse_endpoint("127.0.0.1:80").value() == std::pair<std::string, std::uint16_t>{"127.0.0.1", 80});
  CHECK(!ch::parse_endpoint("127.0.0.1").ok());
  CHECK(!ch::parse_endpoint("h:0").ok());
  CHECK(!ch::parse_endpoint("h:70000").ok());
  CHECK(!ch::parse_endpoint(":80").ok());
}

TEST_CASE("otac-card command line: exit statuses, mode 0600, activation from a letter, menu commands") {
  TempDir dir;
  const std::string st = (dir.path / "card").string();
  CHECK(run_cli("").status == 2);
  CHECK(run_cli("frobnicate").status == 2);
  CHECK(run_cli("--help").status == 0);
  CHECK(run_cli("status --state " + st).status == 1);  // no state yet
  CHECK(run_cli("init --state " + st + " --bogus 1").status == 2);
  CHECK(run_cli("init --state " + st).status == 0);
  struct stat s{};
  REQUIRE(::stat(st.c_str(), &s) == 0);
  CHECK((s.st_mode & 0777) == 0600);
  CHECK(run_cli("init --state " + st).status == 1);  // refuses to overwrite
  CHECK(run_cli("init --state " + st + " --force").status == 0);
  // The letter as the backend prints it (backend/service enroll_card).
  {
    std::ofstream l(dir.path / "letter.txt");
    l << "OTAC card initialization\nCard identity N: 1122334455667788\nAlgorithm: 3DES (two-key)\n"
         "Card key K: 0123456789abcdeffedcba9876543210\nServer SMS number: +15550100\n";
  }
  // PINs and the PUK come on standard input, one line each, never as arguments.
  const std::string letter = " --letter " + (dir.path / "letter.txt").string();
  CHECK(run_cli_in("12\n87654321\n", "activate --state " + st + letter).status == 2);
  CHECK(run_cli_in("1234\n", "activate --state " + st + letter).status == 2);  // the PUK missing
  auto act = run_cli_in("1234\n87654321\n", "activate --state " + st + letter);
  INFO(act.out);
  CHECK(act.status == 0);
  CHECK(act.out.find("0123456789abcdef") == std::string::npos);  // K never echoed
  CHECK(act.out.find("1234") == std::string::npos);
  CHECK(act.out.find("deprecated") == std::string::npos);
  auto status = run_cli("status --state " + st + " --json");
  CHECK(status.status == 0);
  CHECK(status.out.find("\"n\":\"1122334455667788\"") != std::string::npos);
  CHECK(status.out.find("\"life\":2") != std::string::npos);
  CHECK(run_cli_in("9999\n", "verify --state " + st).status == 1);
  CHECK(run_cli_in("1234\n", "verify --state " + st).status == 0);
  CHECK(run_cli("verify --state " + st + " </dev/null").status == 2);  // no PIN at all
  CHECK(run_cli_in("1234\n", "code --state " + st).status == 1);  // no list yet
  CHECK(run_cli_in("1234\n", "refresh --state " + st).status == 0);
  CHECK(run_cli_in("1234\n4321\n", "change-pin --state " + st).status == 0);
  for (int i = 0; i < 3; ++i) CHECK(run_cli_in("0000\n", "verify --state " + st).status == 1);
  auto blocked = run_cli_in("4321\n", "verify --state " + st);
  CHECK(blocked.status == 1);
  CHECK(blocked.out.find("unblock") != std::string::npos);
  CHECK(run_cli_in("87654321\n5555\n", "unblock --state " + st).status == 0);
  // --pin-fd N: the shell opens the secrets on another descriptor; stdin stays free.
  CHECK(run_cli("verify --state " + st + " --pin-fd 3 3<<EOF\n5555\nEOF").status == 0);
  CHECK(run_cli("verify --state " + st + " --pin-fd 3 3<<EOF\n4321\nEOF").status == 1);
  CHECK(run_cli("verify --state " + st + " --pin-fd x </dev/null").status == 2);
  // The state file is refused by the daemon when others may read it.
  ::chmod(st.c_str(), 0644);
  CHECK(run_cli("run --state " + st + " --vicc 127.0.0.1:1").status == 1);
  ::chmod(st.c_str(), 0600);
  CHECK(run_cli("run --state " + st + " --smsc 127.0.0.1:1").status == 2);  // --msisdn missing
}

TEST_CASE("otac-card activate: a malformed number is a usage error naming the option, PIN tries in words") {
  TempDir dir;
  const std::string st = (dir.path / "card").string();
  REQUIRE(run_cli("init --state " + st).status == 0);
  const std::string base = "activate --state " + st + " --pin 1234 --puk 87654321 --n 1122334455667788 "
                           "--k 0123456789abcdeffedcba9876543210 --alg des3 --server-number +15550100 ";
  for (const std::string bad : {"--threshold abc", "--threshold -1", "--threshold 401", "--threshold 12x",
                                "--threshold 99999999999999999999999", "--pin-limit abc", "--pin-limit 1000000000000"}) {
    auto r = run_cli(base + bad);
    INFO(bad << ": " << r.out);
    CHECK(r.status == 2);
    CHECK(r.out.find(bad.substr(0, bad.find(' '))) != std::string::npos);
    CHECK(r.out.find("not a whole number") != std::string::npos);
    CHECK(r.out.find("unexpected") == std::string::npos);
  }
  auto ok = run_cli(base + "--threshold 400 --pin-limit 999999999999");
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  // The deprecated arguments still work, and each one warns that ps and the history show it.
  for (const char* opt : {"--pin ", "--puk ", "--k "})
    CHECK(ok.out.find("level=warn event=card msg=\"" + std::string(opt) + "puts the") != std::string::npos);
  CHECK(run_cli("status --state " + st).out.find("refresh at:       400 unused codes") != std::string::npos);
  auto two = run_cli("verify --state " + st + " --pin 0000");
  CHECK(two.out.find("2 tries left") != std::string::npos);
  auto one = run_cli("verify --state " + st + " --pin 0000");
  INFO(one.out);
  CHECK(one.out.find("1 try left") != std::string::npos);
  CHECK(one.out.find("tries left") == std::string::npos);
}

TEST_CASE("otac-card on a terminal: asks for the PIN with echo off, a new PIN twice") {
  // script(1) gives otac-card a pseudo-terminal; the keystrokes come after the prompt, as a
  // person types them (echo is switched off only once the prompt is out).
  TempDir dir;
  const std::string st = (dir.path / "card").string();
  REQUIRE(run_cli("init --state " + st).status == 0);
  const std::string typing = "(sleep 0.5; printf '2468\\r'; sleep 0.3; printf '2468\\r'; sleep 0.5) | ";
  auto gen = run_shell(typing + "script -qec '" + std::string(OTAC_CARD_BIN) + " keygen --state " + st +
                       " --alg p256' /dev/null 2>&1");
  INFO(gen.out);
  CHECK(gen.status == 0);
  CHECK(gen.out.find("PIN: ") != std::string::npos);
  CHECK(gen.out.find("PIN again: ") != std::string::npos);
  CHECK(gen.out.find("2468") == std::string::npos);  // never echoed
  CHECK(run_cli_in("2468\n", "verify --state " + st).status == 0);
  // Two different entries of a new PIN: refused, nothing set.
  const std::string differ = "(sleep 0.5; printf '2468\\r'; sleep 0.3; printf '1357\\r'; sleep 0.3; printf '1358\\r'; sleep 0.5) | ";
  auto bad = run_shell(differ + "script -qec '" + std::string(OTAC_CARD_BIN) + " change-pin --state " + st +
                       "' /dev/null 2>&1");
  INFO(bad.out);
  CHECK(bad.out.find("differ") != std::string::npos);
  CHECK(run_cli_in("2468\n", "verify --state " + st).status == 0);
}

TEST_CASE("otac-card activate --k-file: K from a file only its owner may read, never from an argument") {
  TempDir dir;
  const std::string st = (dir.path / "card").string();
  REQUIRE(run_cli("init --state " + st).status == 0);
  const std::filesystem::path kf = dir.path / "k.hex";
  { std::ofstream(kf) << "0123456789abcdeffedcba9876543210\n"; }
  const std::string cmd = "activate --state " + st + " --n 1122334455667788 --alg des3 --server-number +15550100 --k-file " +
                          kf.string();
  ::chmod(kf.c_str(), 0644);
  auto open_file = run_cli_in("1234\n87654321\n", cmd);
  INFO(open_file.out);
  CHECK(open_file.status == 1);
  CHECK(open_file.out.find("chmod 600") != std::string::npos);
  ::chmod(kf.c_str(), 0600);
  auto ok = run_cli_in("1234\n87654321\n", cmd);
  INFO(ok.out);
  CHECK(ok.status == 0);
  CHECK(ok.out.find("level=warn") == std::string::npos);
  CHECK(run_cli_in("1234\n", "verify --state " + st).status == 0);
  // Neither K nor --k-file: a usage error that names the file option.
  auto none = run_cli_in("1234\n87654321\n", "activate --state " + st + " --n 1122334455667788 --alg des3 --server-number 1");
  CHECK(none.status == 2);
  CHECK(none.out.find("--k-file") != std::string::npos);
}

TEST_CASE("otac-card activate: the card CA key from --ca-key or the letter decides which E4 the card accepts") {
  // Two CAs; the card is personalized with `ca` and must refuse a server key signed by `other`.
  auto ca = crypto::ec_p256_generate().value();
  auto other = crypto::ec_p256_generate().value();
  auto server = crypto::ec_p256_generate().value();
  const Bytes ca_point = crypto::ec_public_point(ca).value();
  const Bytes server_point = crypto::ec_public_point(server).value();
  auto e4 = [&](const crypto::PKey& signer) {
    Bytes body;
    put(body, hex("CA"), server_point);
    put(body, hex("CB"), crypto::ecdsa_sign(signer, server_point).value());
    return tlv::encode(0xE4, body);
  };
  // The inner status word of a packet delivered to the card in the state file.
  auto deliver_to_file = [](const std::string& st, const Bytes& inner, std::uint64_t counter) {
    FileStorage fs(st);
    Applet app(fs);
    const Bytes packet = ota_packet(inner, counter);
    REQUIRE(packet.size() > 132);  // two parts: 00 03 ref 02 seq (70 00 in the first)
    REQUIRE(packet.size() <= 132 + 134);
    Bytes udh1 = hex("0003010201 7000");
    auto first = apdu::parse_response(app.process(envelope(udh1, Bytes(packet.begin(), packet.begin() + 132))));
    REQUIRE(first.ok());
    REQUIRE(first->sw == 0x9000);
    auto r = apdu::parse_response(app.process(envelope(hex("0003010202"), Bytes(packet.begin() + 132, packet.end()))));
    REQUIRE(r.ok());
    REQUIRE(r->sw == 0x9000);
    return open_por(r->data).data;
  };
  const std::string letter = "OTAC card initialization\nCard identity N: 1122334455667788\nAlgorithm: 3DES (two-key)\n"
                             "Card key K: 0123456789abcdeffedcba9876543210\nServer SMS number: +15550100\n";
  TempDir dir;
  const auto letter_file = (dir.path / "letter.txt").string();
  SECTION("from the letter") {
    { std::ofstream l(letter_file); l << letter << "Card CA key: " << to_hex(ca_point) << "\n"; }
    const std::string st = (dir.path / "card").string();
    REQUIRE(run_cli("init --state " + st).status == 0);
    REQUIRE(run_cli("activate --state " + st + " --pin 1234 --puk 87654321 --letter " + letter_file).status == 0);
    CHECK(deliver_to_file(st, e4(other), 1) == hex("6982"));
    CHECK(deliver_to_file(st, e4(ca), 2) == hex("9000"));
  }
  SECTION("--ca-key, which wins over the letter") {
    { std::ofstream l(letter_file); l << letter << "Card CA key: " << to_hex(crypto::ec_public_point(other).value()) << "\n"; }
    const std::string st = (dir.path / "card").string();
    REQUIRE(run_cli("init --state " + st).status == 0);
    CHECK(run_cli("activate --state " + st + " --pin 1234 --puk 87654321 --letter " + letter_file + " --ca-key 0411").status == 2);
    REQUIRE(run_cli("activate --state " + st + " --pin 1234 --puk 87654321 --letter " + letter_file + " --ca-key " + to_hex(ca_point)).status == 0);
    CHECK(deliver_to_file(st, e4(other), 1) == hex("6982"));
    CHECK(deliver_to_file(st, e4(ca), 2) == hex("9000"));
  }
  SECTION("without a CA key the card refuses every E4") {
    { std::ofstream l(letter_file); l << letter; }
    const std::string st = (dir.path / "card").string();
    REQUIRE(run_cli("init --state " + st).status == 0);
    REQUIRE(run_cli("activate --state " + st + " --pin 1234 --puk 87654321 --letter " + letter_file).status == 0);
    CHECK(deliver_to_file(st, e4(ca), 1) == hex("6985"));
  }
}

TEST_CASE("otac-card keygen: the card's own key pair, its public key printed for enrollment") {
  TempDir dir;
  const std::string st = (dir.path / "card").string();
  REQUIRE(run_cli("init --state " + st).status == 0);
  CHECK(run_cli("keygen --state " + st + " --pin 1234 --alg dsa").status == 2);
  CHECK(run_cli("keygen --state " + st + " --pin 12 --alg p256").status == 2);
  CHECK(run_cli("keygen --state " + st + " --alg p256 </dev/null").status == 2);  // no PIN given
  // On a blank card keygen sets the PIN; stdout is the SubjectPublicKeyInfo alone.
  auto gen = run_shell(std::string(OTAC_CARD_BIN) + " keygen --state " + st + " --pin 1234 --alg p256 2>/dev/null");
  REQUIRE(gen.status == 0);
  std::string hexline = gen.out.substr(0, gen.out.find('\n'));
  auto der = from_hex(hexline);
  REQUIRE(der.ok());
  auto pub = crypto::public_key_from_der(*der);
  REQUIRE(pub.ok());
  CHECK(crypto::ec_public_point(*pub).ok());  // a P-256 key
  // The PIN is now set: a wrong one is refused, and the card is not yet activated.
  CHECK(run_cli("keygen --state " + st + " --pin 9999 --alg rsa").status == 1);
  auto status = run_cli("status --state " + st + " --json");
  CHECK(status.out.find("\"life\":1") != std::string::npos);
  auto rsa = run_cli("keygen --state " + st + " --pin 1234 --alg rsa");
  CHECK(rsa.status == 0);
  CHECK(rsa.out.find("RSA-2048 key pair") != std::string::npos);
}

TEST_CASE("daemon as vicc: ATR, APDUs, reset, and reconnection after the reader drops") {
  TempDir dir;
  Card c;
  personalize(c);
  c.select();
  auto codes = test_codes(3);
  load_codes(c, 5, codes, 1);
  const auto st = dir.path / "card";
  write_card_state(st, c);
  Server vpcd;
  Child card({OTAC_CARD_BIN, "run", "--state", st.string(), "--vicc", "127.0.0.1:" + std::to_string(vpcd.port)}, dir.path / "log");
  for (int round = 0; round < 2; ++round) {
    auto conn = vpcd.accept();
    REQUIRE(conn);
    CHECK(vicc_exchange(conn.get(), hex("04")) == hex("3B80800101"));
    CHECK(vicc_exchange(conn.get(), hex("00A4040006F04F5441430100")).size() > 2);
    Ch chal;
    chal.un = be_bytes(static_cast<std::uint64_t>(round), 8);
    auto r = apdu::parse_response(vicc_exchange(conn.get(), cmd(0x80, 0xA0, 0x00, 0x00, chal.encode(), true))).value();
    REQUIRE(r.sw == 0x9000);
    CHECK(field(r.data, 0x77, 0x9F26) ==
          mac8(0x01, codes[static_cast<std::size_t>(round)], chal.mac_input(5, static_cast<std::uint16_t>(round), static_cast<std::uint16_t>(round + 1))));
    // Control bytes get no answer; after a reset the applet is no longer selected.
    REQUIRE(ch::write_all(conn.get(), ch::ViccFramer::frame(hex("02")), 1000).ok());
    CHECK(vicc_exchange(conn.get(), hex("80A6000000")) == hex("6D00"));
    // Drop the connection: the daemon reconnects (the card is "put back in the field").
  }
  CHECK(card.running());
  CHECK(card.stop() == 0);
  std::ifstream log(dir.path / "log");
  std::string all, line;
  for (int i = 0; i < 10000 && std::getline(log, line); ++i) all += line + "\n";
  CHECK(all.find("reconnecting") != std::string::npos);
  CHECK(all.find("0123456789abcdef") == std::string::npos);
}

// A list arrives as many parts, each an ENVELOPE that commits: a card in the field is served
// between them, not after the last. The order is read from the daemon's log, which has a line
// per APDU from the reader and per message from the gateway.
TEST_CASE("daemon as card and phone: an APDU from the reader is answered between the parts of the lists") {
  TempDir dir;
  Card c;
  personalize(c);
  c.select();
  const auto st = dir.path / "card";
  write_card_state(st, c);
  Server smsc, vpcd;
  Child card({OTAC_CARD_BIN, "run", "--state", st.string(), "--vicc", "127.0.0.1:" + std::to_string(vpcd.port), "--smsc",
              "127.0.0.1:" + std::to_string(smsc.port), "--msisdn", kPhone},
             dir.path / "log");
  auto reader = vpcd.accept();
  REQUIRE(reader);
  auto gw = smsc.accept();
  REQUIRE(gw);
  read_until(gw.get(), [](const Bytes& b) { return std::count(b.begin(), b.end(), '\n') >= 1; });
  // Three lists of 100 codes, 13 parts each, in one write; then at once a SELECT.
  std::string mt;
  std::size_t parts = 0;
  for (std::uint8_t list = 1; list <= 3; ++list) {
    Bytes packet = ota_packet(e1(list, 1, test_codes(100)), list);
    const std::size_t first = 132, later = 134;
    const std::size_t total = 1 + (packet.size() - first + later - 1) / later;
    for (std::size_t seq = 1, pos = 0; seq <= total; ++seq) {
      Bytes udh{0x00, 0x03, static_cast<std::uint8_t>(0x20 + list), static_cast<std::uint8_t>(total), static_cast<std::uint8_t>(seq)};
      if (seq == 1) append(udh, hex("7000"));
      udh.insert(udh.begin(), static_cast<std::uint8_t>(udh.size()));
      const std::size_t n = std::min(seq == 1 ? first : later, packet.size() - pos);
      mt += ch::format_mo_line({kServer, kPhone, udh, Bytes(packet.begin() + static_cast<std::ptrdiff_t>(pos), packet.begin() + static_cast<std::ptrdiff_t>(pos + n))});
      pos += n;
      ++parts;
    }
  }
  REQUIRE(parts >= 36);
  REQUIRE(ch::write_all(gw.get(), as_bytes(mt), 2000).ok());
  // The SELECT goes out once the card has begun on the parts (its log shows the first).
  // What is measured is how many parts the card takes between the SELECT's sending and its
  // answer, so the test's own delay before sending it (a loaded machine) does not count.
  auto envelopes_logged = [&] {
    std::ifstream in(dir.path / "log");
    std::string l;
    std::size_t n = 0;
    for (int k = 0; k < 10000 && std::getline(in, l); ++k)
      if (l.find("-> ENVELOPE") != std::string::npos) ++n;
    return n;
  };
  for (int i = 0; i < 25000 && envelopes_logged() == 0; ++i) ::usleep(200);
  const std::size_t at_send = envelopes_logged();
  REQUIRE(at_send > 0);
  CHECK(vicc_exchange(reader.get(), hex("00A4040006F04F5441430100")).size() > 2);
  // Every part still reaches the card: a PoR for each list.
  read_until(gw.get(), [](const Bytes& b) { return std::count(b.begin(), b.end(), '\n') >= 3; });
  CHECK(card.stop() == 0);
  std::ifstream log(dir.path / "log");
  std::string line;
  std::size_t envelopes = 0, before_select = 0;
  bool selected = false;
  for (int i = 0; i < 10000 && std::getline(log, line); ++i) {
    if (line.find("-> ENVELOPE") != std::string::npos) ++envelopes;
    if (!selected && line.find("vicc: ") != std::string::npos && line.find("A4") != std::string::npos) {
      selected = true;
      before_select = envelopes;
    }
  }
  CHECK(selected);
  CHECK(envelopes == parts);
  INFO("parts handed to the card: " << at_send << " before the SELECT was sent, " << before_select
                                    << " before it was answered, of " << parts);
  REQUIRE(before_select >= at_send);
  CHECK(before_select - at_send < parts / 4);
}

TEST_CASE("daemon as phone: MT parts become ENVELOPEs, PoR and queued requests go out as MO, menu works meanwhile") {
  TempDir dir;
  Card c;
  personalize(c);  // initialization request waits in the outbox
  const auto st = dir.path / "card";
  write_card_state(st, c);
  Server smsc;
  Child card({OTAC_CARD_BIN, "run", "--state", st.string(), "--smsc", "127.0.0.1:" + std::to_string(smsc.port), "--msisdn", kPhone},
             dir.path / "log");
  auto conn = smsc.accept();
  REQUIRE(conn);
  // The queued initialization request arrives first.
  auto lines = read_until(conn.get(), [](const Bytes& b) { return std::count(b.begin(), b.end(), '\n') >= 1; });
  std::string text(lines.begin(), lines.end());
  auto mo = ch::parse_mt_line(text.substr(0, text.find('\n')));  // same syntax, "udh <udh> <bytes>"
  REQUIRE(mo.ok());
  CHECK(mo->from == kPhone);
  CHECK(mo->to == kServer);
  CHECK(mo->udh == hex("027000"));
  CHECK(ota::open_command(mo->data, SecretBytes{}, test_keys().kid).ok());
  // A list in three parts; one message for another phone in between is ignored.
  Bytes packet = ota_packet(e1(1, 1, test_codes(20)), 1);
  const std::size_t first = 132, later = 134;
  const std::size_t total = 1 + (packet.size() - first + later - 1) / later;
  std::size_t pos = 0;
  std::string mt;
  for (std::size_t seq = 1; seq <= total; ++seq) {
    Bytes udh{0x00, 0x03, 0x09, static_cast<std::uint8_t>(total), static_cast<std::uint8_t>(seq)};
    if (seq == 1) append(udh, hex("7000"));
    udh.insert(udh.begin(), static_cast<std::uint8_t>(udh.size()));
    const std::size_t n = std::min(seq == 1 ? first : later, packet.size() - pos);
    mt += ch::format_mo_line({kServer, kPhone, udh, Bytes(packet.begin() + static_cast<std::ptrdiff_t>(pos), packet.begin() + static_cast<std::ptrdiff_t>(pos + n))});
    if (seq == 1) mt += kServer + " +19999999 data %00\n";
    pos += n;
  }
  REQUIRE(ch::write_all(conn.get(), as_bytes(mt), 2000).ok());
  auto por_line = read_until(conn.get(), [](const Bytes& b) { return std::count(b.begin(), b.end(), '\n') >= 1; });
  std::string pl(por_line.begin(), por_line.end());
  auto por = ch::parse_mt_line(pl.substr(0, pl.find('\n')));
  REQUIRE(por.ok());
  CHECK(por->udh == hex("027100"));
  CHECK(por->to == kServer);
  CHECK(open_por(por->data).data == hex("9000"));
  // The menu acts on the same state while the daemon runs; the daemon sends what it queues.
  CHECK(run_cli("code --state " + st.string() + " --pin 1234").status == 0);
  CHECK(run_cli("refresh --state " + st.string() + " --pin 1234").status == 0);
  auto req = read_until(conn.get(), [](const Bytes& b) { return std::count(b.begin(), b.end(), '\n') >= 1; });
  std::string rl(req.begin(), req.end());
  auto refresh = ch::parse_mt_line(rl.substr(0, rl.find('\n')));
  REQUIRE(refresh.ok());
  auto opened = ota::open_command(refresh->data, SecretBytes{}, test_keys().kid);
  REQUIRE(opened.ok());
  CHECK(opened->data == hex("F11C DF410811223344556677 88 C00102 DF42020001 DF48020013 DF490101"));
  CHECK(card.stop() == 0);
}
