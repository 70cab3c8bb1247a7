// applet_bench: the card applet's benchmark figures (built by default, never run in CI).
//
//   applet_bench core [--iterations N (2000)] [--dir DIR (/tmp)]
//       In process: time for Applet::process to answer AUTHENTICATE (protocol.md 3), with
//       MemoryStorage and with FileStorage (a slot written in place, fdatasync) in DIR, for
//       3DES and AES cards; then the persistent state size for 2 lists x 200 codes.
//   applet_bench prepare --state FILE [--alg des3|aes]
//       Writes an activated card state file holding 2 full lists (the codes are derived from
//       fixed seeds, so `pcsc` can check the cryptograms), for `otac-card run`.
//   applet_bench pcsc --reader NAME --state FILE [--iterations N (1000)] [--alg des3|aes]
//                     [--wait-ms MS (10000)]
//       A PC/SC client (libpcsclite) against the reader whose name contains NAME: N SELECT
//       round trips back to back, then N transactions SELECT, AUTHENTICATE, CONFIRM. When the
//       400 codes run out it restores the prepared FILE under FILE.lock (the lock otac-card
//       takes for every command), outside the timing. bench/applet_pcsc.sh runs the lot.
//
// Every cryptogram is checked against the codes (outside the timing), so a figure never comes
// from error answers. Prints p50, p99, mean and max in microseconds; exit 0 ok, 1 failure,
// 2 usage.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "otac/applet/applet.hpp"
#include "otac/applet/sms_lite.hpp"
#include "otac/applet/storage.hpp"
#include "otac/common/apdu.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/ota.hpp"
#include "otac/common/protocol.hpp"
#include "otac/common/secret.hpp"
#include "otac/common/tlv.hpp"
#include "otac/sys/pcsc.hpp"

namespace {

using namespace otac;
using Clock = std::chrono::steady_clock;

// A broken precondition of the benchmark (wrong answer from the card, I/O failure): caught in
// main, printed, exit 1.
struct BenchFailure {
  std::string message;
};

[[noreturn]] void fail(const std::string& what) { throw BenchFailure{what}; }

// ---- the test card -------------------------------------------------------------------------

const Bytes kN = hex("0102030405060708");
const Bytes kK = hex("00112233445566778899AABBCCDDEEFF");
const std::string kServer = "+15550100";
const std::string kSmsc = "+4917000000";
constexpr std::uint16_t kCodes = static_cast<std::uint16_t>(applet::max_codes_per_list);
constexpr std::size_t kCardCodes = applet::max_lists * applet::max_codes_per_list;

std::uint8_t alg_byte(const std::string& name) {
  if (name == "des3") return 0x01;
  if (name == "aes") return 0x02;
  throw BenchFailure{"--alg must be des3 or aes"};
}

// The code (OTAC key) `index` of list `list`: fixed, so that the client can check cryptograms
// of a card prepared by another process.
Bytes code_for(std::uint16_t list, std::uint16_t index) {
  Bytes seed = to_bytes("otac-bench-code");
  append(seed, be_bytes(list, 2));
  append(seed, be_bytes(index, 2));
  Bytes d = crypto::sha256(seed);
  d.resize(16);
  return d;
}

Bytes pin_block(const std::string& pin) {
  Bytes b = to_bytes(pin);
  b.resize(8, 0xFF);
  return b;
}

Bytes command(std::uint8_t cla, protocol::Ins ins, std::uint8_t p1, std::uint8_t p2, const Bytes& data, bool le) {
  apdu::Command c{cla, protocol::ins(ins), p1, p2, data, le ? std::optional<std::uint32_t>(256) : std::nullopt, false};
  auto raw = apdu::encode(c);
  if (!raw) fail("cannot encode APDU: " + raw.error().message);
  return *raw;
}

const Bytes kSelect = command(protocol::cla_iso, protocol::Ins::select, 0x04, 0x00, Bytes(protocol::aid.begin(), protocol::aid.end()), true);

// The challenge of protocol.md 3 (POS mode) with an unpredictable number derived from i.
struct Challenge {
  protocol::Challenge ch;
  Bytes data;
  explicit Challenge(std::uint64_t i) {
    const Bytes un = be_bytes(i, 8);
    std::copy(un.begin(), un.end(), ch.un.begin());
    ch.amount_minor = 1250;
    ch.currency_code = 978;
    ch.date = {0x26, 0x11, 0x22};
    ch.time = {0x23, 0x55, 0x00};
    ch.type = 0x00;
    ch.terminal = "BENCH001";
    data = ch.encode();
  }
  Bytes apdu() const { return command(protocol::cla_proprietary, protocol::Ins::authenticate, 0x00, 0x00, data, true); }
  // The card's PIN state DF35 03: three tries left, no PIN entered.
  Bytes mac_input(std::uint16_t list, std::uint16_t index, std::uint16_t atc, std::uint8_t pin_state = 0x03) const {
    return protocol::mac_input(ch, protocol::CardAnswer{kN, list, index, atc, {}, pin_state});
  }
};

Bytes mac8(std::uint8_t alg, const Bytes& key, ByteView data) {
  auto m = alg == 0x01 ? crypto::mac_alg3(SecretBytes(key), data, crypto::Padding::method2, 8)
                       : crypto::aes_cmac(SecretBytes(key), data);
  if (!m) fail("MAC failed: " + m.error().message);
  m->resize(8);
  return *m;
}

// Checks an AUTHENTICATE answer against the codes; returns the cryptogram (for CONFIRM) and
// the code it used.
struct Checked {
  Bytes cryptogram;
  Bytes code;
};
Checked check_answer(std::uint8_t alg, const Challenge& ch, const apdu::Response& r) {
  if (r.sw != 0x9000) fail("AUTHENTICATE answered " + to_hex(be_bytes(r.sw, 2)));
  auto a = protocol::CardAnswer::parse(r.data);
  if (!a) fail("card answered a malformed template: " + a.error().message);
  Checked c{a->cryptogram, code_for(a->list_id, a->index)};
  if (c.cryptogram != mac8(alg, c.code, ch.mac_input(a->list_id, a->index, a->atc, a->pin_state)))
    fail("AUTHENTICATE cryptogram does not verify");
  return c;
}

// CONFIRM data for "approved": ARPC = MAC("ARPC" || cryptogram || "00") || "00" (protocol.md 3.1).
Bytes confirm_apdu(std::uint8_t alg, const Checked& c) {
  Bytes d = mac8(alg, c.code, protocol::arpc_input(c.cryptogram, to_bytes("00")));
  append(d, to_bytes("00"));
  return command(protocol::cla_proprietary, protocol::Ins::confirm, 0x00, 0x00, d, false);
}

apdu::Response tx(applet::Applet& app, const Bytes& a) {
  auto r = apdu::parse_response(app.process(a));
  if (!r) fail("applet answered garbage: " + r.error().message);
  return *r;
}

void expect(const apdu::Response& r, const char* what) {
  if (r.sw != 0x9000) fail(std::string(what) + " answered " + to_hex(be_bytes(r.sw, 2)));
}

// The E1 inner command (protocol.md 6) with a full list, sent as the backend does: an OTA
// command packet (SPI 16 39) in concatenated SMS-DELIVERs, each in its own ENVELOPE.
void load_list(applet::Applet& app, std::uint8_t alg, std::uint16_t id, std::uint8_t activation, std::uint64_t counter) {
  Bytes keys;
  for (std::uint16_t i = 0; i < kCodes; ++i) append(keys, code_for(id, i));
  const Bytes inner = protocol::encode_inner(protocol::LoadList{id, activation, kCodes, SecretBytes(keys)});
  const auto ca = static_cast<ota::CardAlgorithm>(alg);
  auto ck = ota::derive_card_keys(SecretBytes(kK), kN, ca);
  if (!ck) fail("key derivation failed: " + ck.error().message);
  const std::uint8_t kid = ota::key_id_for(ca, 1);
  ota::CommandHeader h{ota::Spi::decode(0x1639).value(), kid, kid, ota::otac_tar};
  auto packet = ota::build_command(h, counter, inner, ck->kic, ck->kid);
  if (!packet) fail("cannot build OTA packet: " + packet.error().message);
  // Parts as in protocol.md 7: 00 03 ref total seq (+ 70 00 in the first), 140 octets of UD.
  const std::size_t first = 132, later = 134;
  const std::size_t total = 1 + (packet->size() - first + later - 1) / later;
  std::size_t pos = 0;
  apdu::Response last;
  for (std::size_t seq = 1; seq <= total; ++seq) {
    Bytes udh{0x00, 0x03, static_cast<std::uint8_t>(counter), static_cast<std::uint8_t>(total), static_cast<std::uint8_t>(seq)};
    if (seq == 1) append(udh, hex("7000"));
    const std::size_t n = std::min(seq == 1 ? first : later, packet->size() - pos);
    auto tpdu = applet::sms::encode_deliver(kServer, udh, ByteView(*packet).subspan(pos, n));
    if (!tpdu) fail("cannot encode SMS-DELIVER: " + tpdu.error().message);
    auto env = applet::sms::encode_sms_pp_download(kSmsc, *tpdu);
    if (!env) fail("cannot encode ENVELOPE: " + env.error().message);
    last = tx(app, command(protocol::cla_proprietary, protocol::Ins::envelope, 0x00, 0x00, *env, true));
    expect(last, "ENVELOPE");
    pos += n;
  }
  auto por = ota::open_response(last.data, ota::PorSecurity{h.spi, kid, kid}, ck->kic, ck->kid);
  if (!por) fail("cannot open the PoR: " + por.error().message);
  if (por->status != ota::Rsc::ok || por->data != hex("9000")) fail("the card refused list " + std::to_string(id));
}

// Personalizes a blank card in `storage` and loads 2 full lists; drains the outbox (FETCH)
// when asked, as the host does once it has sent the messages.
void prepare_card(applet::Storage& storage, std::uint8_t alg, bool drain) {
  applet::Applet app(storage);
  expect(tx(app, kSelect), "SELECT");
  expect(tx(app, command(protocol::cla_iso, protocol::Ins::change_reference_data, 0x01, 0x80, pin_block("1234"), false)), "set first PIN");
  Bytes act;
  tlv::append(act, 0xDF41, kN);
  tlv::append(act, 0xDF44, kK);
  tlv::append(act, 0xDF45, Bytes{alg});
  tlv::append(act, 0xDF46, to_bytes(kServer));
  tlv::append(act, 0xDF47, pin_block("87654321"));
  expect(tx(app, command(protocol::cla_proprietary, protocol::Ins::activate, 0x00, 0x00, act, true)), "ACTIVATE");
  load_list(app, alg, 1, 0x01, 1);
  load_list(app, alg, 2, 0x00, 2);
  for (int i = 0; drain && i < 16; ++i)
    if (tx(app, command(protocol::cla_proprietary, protocol::Ins::fetch, 0x00, 0x00, {}, true)).sw != 0x9000) break;
}

// ---- statistics ----------------------------------------------------------------------------

void print_stats(const std::string& label, std::vector<double> us) {
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) {  // nearest rank
    const auto rank = static_cast<std::size_t>(std::max(1.0, std::ceil(p / 100.0 * static_cast<double>(us.size()))));
    return us[std::min(us.size(), rank) - 1];
  };
  const double mean = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  std::printf("  %-44s n=%-6zu p50 %9.1f us  p99 %9.1f us  mean %9.1f us  max %9.1f us\n", label.c_str(), us.size(),
              pct(50), pct(99), mean, us.back());
}

double since_us(Clock::time_point t0, Clock::time_point t1) { return std::chrono::duration<double, std::micro>(t1 - t0).count(); }

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

// The first three fields of /proc/loadavg, and a newline: the machine is shared, so say how busy.
std::string load_average() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (!f) return "unknown\n";
  char buf[128] = {};
  const bool got = std::fgets(buf, sizeof buf, f) != nullptr;
  std::fclose(f);
  if (!got) return "unknown\n";
  std::string s(buf);
  std::size_t pos = 0;
  for (int field = 0; field < 3 && pos != std::string::npos; ++field) pos = s.find(' ', pos + 1);
  return (pos == std::string::npos ? s : s.substr(0, pos)) + "\n";
}

// ---- core: in-process AUTHENTICATE ---------------------------------------------------------

// N AUTHENTICATEs on one applet; every 400 the prepared state is committed back (a fresh card
// with 2 full lists), outside the timing. 20 warm-up commands are not recorded.
std::vector<double> time_authenticate(applet::Storage& storage, std::uint8_t alg, long iterations) {
  const Bytes fresh = storage.load().value();
  applet::Applet app(storage);
  expect(tx(app, kSelect), "SELECT");
  const long warmup = 20;
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(iterations));
  std::size_t used = 0;
  for (long i = 0; i < warmup + iterations; ++i) {
    if (used == kCardCodes) {
      if (!storage.commit(fresh)) fail("cannot restore the prepared state");
      used = 0;
    }
    const Challenge ch(static_cast<std::uint64_t>(i));
    const Bytes a = ch.apdu();
    const auto t0 = Clock::now();
    const Bytes raw = app.process(a);
    const auto t1 = Clock::now();
    ++used;
    auto r = apdu::parse_response(raw);
    if (!r) fail("applet answered garbage");
    check_answer(alg, ch, *r);
    if (i >= warmup) us.push_back(since_us(t0, t1));
  }
  return us;
}

int run_core(long iterations, const std::filesystem::path& dir) {
  std::printf("date: %s; machine: %u hardware threads; load average %s", utc_now().c_str(), std::thread::hardware_concurrency(),
              load_average().c_str());
  std::printf("applet core, in process (Applet::process; the state is loaded from the storage, decoded, the code\n"
              "burned, the state encoded and committed before the answer), %ld AUTHENTICATE each:\n", iterations);
  char tmpl[] = "applet-bench-XXXXXX";
  const std::string base = (dir / tmpl).string();
  std::vector<char> name(base.begin(), base.end());
  name.push_back('\0');
  if (!::mkdtemp(name.data())) fail("cannot create a directory in " + dir.string() + ": " + std::strerror(errno));
  const std::filesystem::path work(name.data());
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() { std::error_code ec; std::filesystem::remove_all(p, ec); }
  } cleanup{work};
  for (const char* alg_name : {"des3", "aes"}) {
    const std::uint8_t alg = alg_byte(alg_name);
    applet::MemoryStorage prepared;
    prepare_card(prepared, alg, true);
    const Bytes fresh = prepared.load().value();
    applet::MemoryStorage mem;
    if (!mem.commit(fresh)) fail("cannot copy the prepared state");
    print_stats(std::string("AUTHENTICATE ") + alg_name + ", MemoryStorage", time_authenticate(mem, alg, iterations));
    applet::FileStorage file(work / (std::string("card-") + alg_name + ".state"));
    if (!file.commit(fresh)) fail("cannot write the state file in " + work.string());
    print_stats(std::string("AUTHENTICATE ") + alg_name + ", FileStorage (fsync)", time_authenticate(file, alg, iterations));
  }
  // References: the MAC alone, and SELECT (no state change, no commit), to separate the crypto
  // and the state handling from the command.
  for (const std::uint8_t alg : {std::uint8_t{0x01}, std::uint8_t{0x02}}) {
    const Bytes key = code_for(1, 0), input = Challenge(1).mac_input(1, 0, 1);
    std::vector<double> us;
    for (long i = 0; i < 20 + iterations; ++i) {
      const auto t0 = Clock::now();
      const Bytes m = mac8(alg, key, input);
      const auto t1 = Clock::now();
      if (m.size() != 8) fail("MAC failed");
      if (i >= 20) us.push_back(since_us(t0, t1));
    }
    print_stats(std::string("MAC only (reference), ") + (alg == 0x01 ? "ISO 9797-1 alg 3" : "AES-CMAC"), us);
  }
  {
    applet::MemoryStorage mem;
    prepare_card(mem, 0x01, true);
    applet::Applet app(mem);
    std::vector<double> us;
    for (long i = 0; i < 20 + iterations; ++i) {
      const auto t0 = Clock::now();
      const Bytes raw = app.process(kSelect);
      const auto t1 = Clock::now();
      if (raw.size() < 2 || raw[raw.size() - 2] != 0x90) fail("SELECT failed");
      if (i >= 20) us.push_back(since_us(t0, t1));
    }
    print_stats("SELECT (reference), MemoryStorage", us);
  }
  std::printf("  (FileStorage directory: %s)\n\n", dir.c_str());

  // State size: the blob the applet commits, and the host's state file (FileStorage keeps a
  // 4 KiB header block and two slots of whole 4 KiB blocks, each slot with a 44-byte header:
  // sequence 8, length 4, SHA-256 32).
  applet::MemoryStorage drained, queued, blank;
  prepare_card(drained, 0x01, true);
  prepare_card(queued, 0x01, false);
  {
    applet::Applet app(blank);
    expect(tx(app, kSelect), "SELECT");
    expect(tx(app, command(protocol::cla_iso, protocol::Ins::change_reference_data, 0x01, 0x80, pin_block("1234"), false)), "set first PIN");
  }
  const std::size_t blob = drained.load().value().size();
  applet::FileStorage file(work / "size.state");
  if (!file.commit(drained.load().value())) fail("cannot write the state file in " + work.string());
  const auto file_size = std::filesystem::file_size(file.path());
  std::printf("persistent state, 2 lists x %zu codes (3DES card, no key pair):\n", applet::max_codes_per_list);
  std::printf("  state blob (outbox empty)                      %6zu bytes\n", blob);
  std::printf("  host state file (otac-card --state)            %6ju bytes (header block, two slots)\n",
              static_cast<std::uintmax_t>(file_size));
  std::printf("  state blob with the outbox as left by the loads %5zu bytes\n", queued.load().value().size());
  std::printf("  state blob of a card with only a PIN set       %6zu bytes (fixed layout; the server number, door ids\n"
              "                                                       and outbox are the only variable parts)\n", blank.load().value().size());
  std::printf("  upper bound with a full outbox                 %6zu bytes (%zu entries of at most 1 + 255 bytes)\n",
              blob + applet::max_outbox * 256, applet::max_outbox);
  std::printf("fixed capacity: %zu lists x %zu codes x 16 bytes = %zu bytes of codes (+ %zu bytes used-bitmap per list),\n"
              "  outbox %zu messages, SMS reassembly %zu parts\n",
              applet::max_lists, applet::max_codes_per_list, applet::max_lists * applet::max_codes_per_list * 16,
              (applet::max_codes_per_list + 7) / 8, applet::max_outbox, applet::max_sms_parts);
  return 0;
}

// ---- prepare: a state file for otac-card run ----------------------------------------------

int run_prepare(const std::filesystem::path& state, std::uint8_t alg) {
  applet::MemoryStorage mem;
  prepare_card(mem, alg, true);
  applet::FileStorage file(state);
  if (auto r = file.commit(mem.load().value()); !r) fail(r.error().message);
  std::printf("prepared %s: activated card, 2 lists x %zu codes\n", state.c_str(), applet::max_codes_per_list);
  return 0;
}

// ---- pcsc: round trips through pcscd ---------------------------------------------------------

// One exchange through the shared PC/SC card handle; a failure ends the benchmark.
apdu::Response transmit(const sys::pcsc::Card& card, const Bytes& a) {
  auto rx = card.transmit(a, 600);
  if (!rx) fail(rx.error().message);
  auto r = apdu::parse_response(*rx);
  if (!r) fail("card answered garbage: " + r.error().message);
  return *r;
}

std::string find_reader(const sys::pcsc::Context& ctx, const std::string& want) {
  auto names = ctx.readers();
  if (!names) return {};
  for (const auto& n : *names)
    if (n.find(want) != std::string::npos) return n;
  return {};
}

// Restores the prepared state file under STATE.lock, as a menu command of otac-card would
// change it: the daemon loads the state at every command, so the next one sees 400 codes.
void restore_state(const std::filesystem::path& state, const Bytes& fresh) {
  const int fd = ::open((state.string() + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) fail("cannot open " + state.string() + ".lock: " + std::strerror(errno));
  bool locked = false;
  for (int i = 0; i < 200 && !locked; ++i) {  // at most ~2 s
    locked = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
    if (!locked) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!locked) {
    ::close(fd);
    fail(state.string() + ".lock stays locked; is otac-card stuck?");
  }
  auto r = applet::FileStorage(state).commit(fresh);
  ::flock(fd, LOCK_UN);
  ::close(fd);
  if (!r) fail("cannot restore " + state.string() + ": " + r.error().message);
}

int run_pcsc(const std::string& want, const std::filesystem::path& state, long iterations, std::uint8_t alg, long wait_ms) {
  auto loaded = applet::FileStorage(state).load();
  if (!loaded || loaded->empty()) fail("cannot read the prepared state " + state.string() + " (run `applet_bench prepare` first)");
  const Bytes fresh = *loaded;
  auto ctx = sys::pcsc::Context::establish();
  if (!ctx) fail(ctx.error().message + " (is pcscd running?)");
  std::optional<sys::pcsc::Card> handle;
  std::string reader;
  const auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
  for (int i = 0; i < 10000 && !handle && Clock::now() < deadline; ++i) {  // the card shows up ~0.4 s after the vicc connects
    if (reader.empty()) reader = find_reader(*ctx, want);
    if (!reader.empty()) {
      if (auto c = sys::pcsc::Card::connect(*ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1)) handle.emplace(std::move(*c));
    }
    if (!handle) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!handle)
    fail(reader.empty() ? "no reader named like '" + want + "' appeared" : "no card in reader '" + reader + "' (is otac-card run connected?)");
  std::printf("date: %s; machine: %u hardware threads; load average %s", utc_now().c_str(), std::thread::hardware_concurrency(),
              load_average().c_str());
  const sys::pcsc::Card& card = *handle;
  std::printf("PC/SC client -> pcscd -> vpcd -> otac-card (vicc, state file %s), reader '%s', %ld each:\n", state.c_str(),
              reader.c_str(), iterations);

  // Warm-up, not recorded.
  for (int i = 0; i < 20; ++i) expect(transmit(card, kSelect), "SELECT");
  std::vector<double> select_us;
  for (long i = 0; i < iterations; ++i) {
    const auto t0 = Clock::now();
    const auto r = transmit(card, kSelect);
    const auto t1 = Clock::now();
    expect(r, "SELECT");
    select_us.push_back(since_us(t0, t1));
  }
  print_stats("SELECT", select_us);
  // Without TCP_QUICKACK in the virtual card each APDU costs ~44 ms (delayed ACK): say so.
  if (const double mean = std::accumulate(select_us.begin(), select_us.end(), 0.0) / static_cast<double>(std::max<std::size_t>(select_us.size(), 1));
      mean > 40000.0)
    std::printf("  SLOW: a mean SELECT round trip above 40 ms points at delayed ACKs (TCP_QUICKACK missing in the vicc)\n");

  std::vector<double> sel, auth, conf, total;
  std::size_t used = 0;
  for (long i = 0; i < iterations; ++i) {
    if (used == kCardCodes) {
      restore_state(state, fresh);
      used = 0;
    }
    const Challenge ch(static_cast<std::uint64_t>(i));
    const Bytes a = ch.apdu();
    const auto t0 = Clock::now();
    const auto rs = transmit(card, kSelect);
    const auto t1 = Clock::now();
    const auto ra = transmit(card, a);
    const auto t2 = Clock::now();
    ++used;
    expect(rs, "SELECT");
    const Checked c = check_answer(alg, ch, ra);
    const Bytes confirm = confirm_apdu(alg, c);
    const auto t3 = Clock::now();
    const auto rc = transmit(card, confirm);
    const auto t4 = Clock::now();
    expect(rc, "CONFIRM");
    sel.push_back(since_us(t0, t1));
    auth.push_back(since_us(t1, t2));
    conf.push_back(since_us(t3, t4));
    total.push_back(since_us(t0, t2) + since_us(t3, t4));
  }
  print_stats("SELECT (in a transaction)", sel);
  print_stats("AUTHENTICATE (burn + commit with fsync)", auth);
  print_stats("CONFIRM (records the outcome: commit, fsync)", conf);
  print_stats("SELECT + AUTHENTICATE + CONFIRM", total);
  const std::string end_load = load_average();
  std::printf("  (load average at the end: %s)\n", end_load.substr(0, end_load.size() - 1).c_str());
  return 0;
}

// ---- command line --------------------------------------------------------------------------

constexpr const char* kUsage =
    "usage: applet_bench core [--iterations N (2000)] [--dir DIR (/tmp)]\n"
    "       applet_bench prepare --state FILE [--alg des3|aes]\n"
    "       applet_bench pcsc --reader NAME --state FILE [--iterations N (1000)] [--alg des3|aes] [--wait-ms MS]\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) { std::fputs(kUsage, stderr); return 2; }
  const std::string mode = argv[1];
  if (mode == "--help" || mode == "-h" || mode == "help") {
    std::fputs(kUsage, stdout);
    std::fputs("core: AUTHENTICATE in process (MemoryStorage, FileStorage in DIR), 3DES and AES; state sizes.\n"
               "prepare: an activated card state file with 2 lists x 200 codes, for otac-card run.\n"
               "pcsc: SELECT and SELECT/AUTHENTICATE/CONFIRM round trips through pcscd (bench/applet_pcsc.sh).\n"
               "Exit status: 0 ok, 1 failure, 2 usage.\n", stdout);
    return 0;
  }
  std::map<std::string, std::string> opt;
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc) { std::fputs(kUsage, stderr); return 2; }
    opt[k.substr(2)] = argv[++i];
  }
  auto get = [&](const std::string& k, const std::string& def) { auto it = opt.find(k); return it == opt.end() ? def : it->second; };
  auto allow = [&](std::initializer_list<const char*> keys) {
    for (const auto& kv : opt) {
      const std::string& k = kv.first;  // not a structured binding: clang 14 cannot capture those
      if (std::none_of(keys.begin(), keys.end(), [&](const char* a) { return k == a; })) return false;
    }
    return true;
  };
  const std::string alg_name = get("alg", "des3");
  if (alg_name != "des3" && alg_name != "aes") { std::fputs("applet_bench: --alg must be des3 or aes\n", stderr); return 2; }
  try {
    if (mode == "core" && allow({"iterations", "dir"})) {
      const long n = std::strtol(get("iterations", "2000").c_str(), nullptr, 10);
      if (n < 1 || n > 10000000) { std::fputs(kUsage, stderr); return 2; }
      return run_core(n, get("dir", "/tmp"));
    }
    if (mode == "prepare" && allow({"state", "alg"}) && opt.count("state"))
      return run_prepare(opt["state"], alg_byte(alg_name));
    if (mode == "pcsc" && allow({"reader", "state", "iterations", "alg", "wait-ms"}) && opt.count("reader") && opt.count("state")) {
      const long n = std::strtol(get("iterations", "1000").c_str(), nullptr, 10);
      const long w = std::strtol(get("wait-ms", "10000").c_str(), nullptr, 10);
      if (n < 1 || n > 10000000 || w < 0 || w > 600000) { std::fputs(kUsage, stderr); return 2; }
      return run_pcsc(opt["reader"], opt["state"], n, alg_byte(alg_name), w);
    }
    std::fputs(kUsage, stderr);
    return 2;
  } catch (const BenchFailure& f) {
    std::fprintf(stderr, "applet_bench: %s\n", f.message.c_str());
    return 1;
  }
}
