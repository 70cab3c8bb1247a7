// Integration across all three parties without SMS plumbing: the real backend service
// (in-process, SQLite in a temp dir) enrolls a card and sends its first list, which is carried
// into the applet by ENVELOPE; the personalized card then runs as otac-card behind
// otac-pn532-emu, and the terminal's libnfc reader and flow tap it, with the terminal's POSTs
// answered by Service::authorize. Covers: approval confirmed by the card (ARPC), a replayed
// cryptogram declined, an amount changed between card and backend declined, and a held
// purchase approved by an operator while the terminal waits.
#include <boost/json.hpp>

#include "backend_link.hpp"
#include "terminal/backend_json.hpp"
#include "terminal/driver.hpp"
#include "terminal/reader.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;
namespace be = otac::backend;
namespace term = otac::terminal;

namespace {

// The HTTP layer's JSON for a service answer (protocol.md 5).
std::string answer_json(const be::AuthAnswer& a) {
  boost::json::object o;
  o["txn_id"] = a.txn_id;
  o["decision"] = be::decision_name(a.decision);
  o["reason"] = a.reason;
  if (!a.auth_code.empty()) o["auth_code"] = a.auth_code;
  if (!a.arc.empty()) o["arc"] = to_hex(a.arc);
  if (!a.arpc.empty()) o["arpc"] = to_hex(a.arpc);
  return boost::json::serialize(o);
}

be::AuthRequest request_of(const std::string& body) {
  auto o = boost::json::parse(body).as_object();
  be::AuthRequest r;
  r.txn_id = std::string(o.at("txn_id").as_string());
  r.card = from_hex(std::string(o.at("card").as_string())).value();
  r.list_id = static_cast<std::uint16_t>(o.at("list").as_int64());
  r.index = static_cast<std::uint16_t>(o.at("index").as_int64());
  r.atc = static_cast<std::uint16_t>(o.at("atc").as_int64());
  r.pin_state = static_cast<std::uint8_t>(o.at("pin_state").as_int64());
  r.challenge = from_hex(std::string(o.at("challenge").as_string())).value();
  r.cryptogram = from_hex(std::string(o.at("cryptogram").as_string())).value();
  return r;
}

term::TxnParams params(const std::string& txn, std::uint64_t amount) {
  term::TxnParams p;
  p.txn_id = txn;
  p.terminal_id = "TERM0001";
  p.amount = amount;
  p.year = 2026; p.month = 9; p.day = 21; p.hour = 14; p.minute = 13; p.second = 20;
  return p;
}

}  // namespace

TEST_CASE("terminal + card + backend service: approve, replay, tampered amount, held then approved",
          "[terminal][service][integration]") {
  ::setenv("LIBNFC_AUTO_SCAN", "false", 1);
  ServiceBackend b(20);
  REQUIRE(b.svc->register_terminal(be::TerminalRecord{"TERM0001", "ab", 0, true}, "test"));
  be::EnrollRequest er;
  er.msisdn = kPhone;
  er.review_minor = 5000;  // purchases above 50.00 wait for an operator
  auto e = b.svc->enroll_card(er, "test");
  REQUIRE(e.ok());
  TempDir dir;
  const auto state = dir.path / "card.state";
  {
    Card c;
    c.select();
    REQUIRE(c.sw(cmd(0x00, 0x24, 0x01, 0x80, pin_block("1234"))) == 0x9000);
    Bytes d;
    put(d, hex("DF41"), e->n);
    put(d, hex("DF44"), Bytes(e->k.view().begin(), e->k.view().end()));
    put(d, hex("DF45"), Bytes{0x01});
    put(d, hex("DF46"), to_bytes(kServer));
    put(d, hex("DF47"), pin_block("87654321"));
    REQUIRE(c.sw(cmd(0x80, 0x10, 0x00, 0x00, d, true)) == 0x9000);
    pump(c, b);
    FileStorage fs(state);
    REQUIRE(fs.commit(c.store.load().value()));
  }
  const std::string link = (dir.path / "pn532").string();
  Child emu({OTAC_PN532_EMU_BIN, "--link", link, "--card-port", "0", "--port-file", (dir.path / "card.port").string()},
            dir.path / "emu.log");
  std::string port;
  for (int i = 0; i < 200 && port.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    std::ifstream in(dir.path / "card.port");
    std::getline(in, port);
  }
  REQUIRE_FALSE(port.empty());
  Child card({OTAC_CARD_BIN, "run", "--state", state.string(), "--vicc", "127.0.0.1:" + port}, dir.path / "card.log");
  auto reader = term::open_reader("pn532_uart:" + link);
  REQUIRE(reader.ok());

  std::vector<std::string> bodies;
  term::DriverIo io;
  io.reader = reader->get();
  io.post = [&](const std::string& body) -> Result<std::string> {
    bodies.push_back(body);
    auto a = b.svc->authorize(request_of(body), "TERM0001");
    if (!a) return a.error();
    return answer_json(*a);
  };
  io.poll = [&](const std::string& txn, unsigned) -> Result<std::string> {
    // The operator approves while the terminal waits.
    auto d = b.svc->decide_held(txn, true, "operator");
    if (!d) return d.error();
    auto a = b.svc->get_authorization(txn, std::chrono::milliseconds(0));
    if (!a) return a.error();
    return answer_json(*a);
  };
  term::DriverLimits lim;
  lim.card_wait = std::chrono::milliseconds(5000);
  lim.removal_wait = std::chrono::milliseconds(0);
  lim.held_limit = std::chrono::seconds(10);
  auto rng = [](std::size_t n) { return crypto::random_bytes(n); };

  // 1. Approved, and the card accepts the backend's ARPC.
  {
    term::Flow f(params("T-SVC-1", 1234), rng);
    auto o = term::run_flow(f, io, lim);
    INFO(o.reason << ": " << o.detail);
    CHECK(o.decision == term::Decision::approved);
    CHECK(o.auth_code.size() == 6);
    CHECK(o.card_confirmed);
    CHECK(o.apdu_exchanges == 3);
    CHECK(o.card_hex == to_hex(e->n));
  }
  // 2. The same cryptogram replayed under a new transaction id: declined.
  {
    REQUIRE(bodies.size() == 1);
    auto req = request_of(bodies[0]);
    req.txn_id = "T-SVC-REPLAY";
    auto a = b.svc->authorize(req, "TERM0001");
    REQUIRE(a.ok());
    CHECK(a->decision == be::Decision::declined);
    auto parsed = term::parse_answer(answer_json(*a));
    REQUIRE(parsed.ok());
    CHECK(parsed->decision == term::Decision::declined);
  }
  // 3. The amount changed between card and backend: the cryptogram no longer verifies.
  {
    auto honest = io.post;
    io.post = [&](const std::string& body) -> Result<std::string> {
      auto o = boost::json::parse(body).as_object();
      std::string ch(o.at("challenge").as_string());
      const auto pos = ch.find("9f0206");
      REQUIRE(pos != std::string::npos);
      ch[pos + 6 + 11] = ch[pos + 6 + 11] == '9' ? '8' : '9';  // last digit of the amount
      o["challenge"] = ch;
      return honest(boost::json::serialize(o));
    };
    term::Flow f(params("T-SVC-2", 1000), rng);
    auto o = term::run_flow(f, io, lim);
    io.post = honest;
    CHECK(o.decision == term::Decision::declined);
    CHECK(o.reason == "bad_cryptogram");
  }
  // 4. Above the review limit: held, "waiting for operator", approved by the operator.
  {
    std::vector<std::string> shown;
    io.display = [&](const std::string& s) { shown.push_back(s); };
    term::Flow f(params("T-SVC-3", 9900), rng);
    auto o = term::run_flow(f, io, lim);
    INFO(o.reason << ": " << o.detail);
    CHECK(o.held_before);
    CHECK(o.decision == term::Decision::approved);
    CHECK(o.card_confirmed);
    CHECK(std::find(shown.begin(), shown.end(), "Waiting for operator...") != shown.end());
  }
  reader->reset();
}
