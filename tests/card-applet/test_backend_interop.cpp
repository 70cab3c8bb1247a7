// The applet against the real backend service (SQLite store in a temp dir): the backend's own
// packets go through ENVELOPE into the card, the card's FETCHed requests and PoRs go back
// through Service::handle_mo_sms, and the backend verifies the card's cryptograms.
#include <unistd.h>

#include <filesystem>

#include "backend_link.hpp"

using namespace otac;
using namespace otac::applet;
using namespace otac::applet::test;
namespace be = otac::backend;

namespace {

std::uint16_t status_u16(Card& c, tlv::Tag tag) {
  auto s = c.tx("80A6000000");
  REQUIRE(s.sw == 0x9000);
  auto v = field(s.data, 0xE0, tag);
  return static_cast<std::uint16_t>(v.size() == 1 ? v[0] : v[0] << 8 | v[1]);
}

be::AuthRequest request_for(const Bytes& answer, const Bytes& challenge, const std::string& txn) {
  be::AuthRequest req;
  req.txn_id = txn;
  req.card = field(answer, 0x77, 0xDF41);
  auto u16 = [&](tlv::Tag t) { auto v = field(answer, 0x77, t); return static_cast<std::uint16_t>(v[0] << 8 | v[1]); };
  req.list_id = u16(0xDF42);
  req.index = u16(0xDF43);
  req.atc = u16(0x9F36);
  req.pin_state = field(answer, 0x77, 0xDF35).at(0);
  req.challenge = challenge;
  req.cryptogram = field(answer, 0x77, 0x9F26);
  return req;
}

void activate_with(Card& c, const be::Enrollment& e) {
  c.select();
  REQUIRE(c.sw(cmd(0x00, 0x24, 0x01, 0x80, pin_block("1234"))) == 0x9000);
  Bytes d;
  put(d, hex("DF41"), e.n);
  put(d, hex("DF44"), Bytes(e.k.view().begin(), e.k.view().end()));
  put(d, hex("DF45"), Bytes{static_cast<std::uint8_t>(e.algorithm == be::Algorithm::des3 ? 1 : 2)});
  put(d, hex("DF46"), to_bytes(kServer));
  put(d, hex("DF47"), pin_block("87654321"));
  REQUIRE(c.sw(cmd(0x80, 0x10, 0x00, 0x00, d, true)) == 0x9000);
}

}  // namespace

TEST_CASE("backend interop: activation, list by concatenated SMS, approval, ARPC, replay, threshold refresh, key rotation") {
  for (auto alg : {be::Algorithm::des3, be::Algorithm::aes128}) {
    DYNAMIC_SECTION("algorithm " << static_cast<int>(alg)) {
      ServiceBackend b(100);
      REQUIRE(b.svc->register_terminal(be::TerminalRecord{"TERM0001", "ab", 0, true}, "test"));
      be::EnrollRequest er;
      er.algorithm = alg;
      er.msisdn = kPhone;
      auto e = b.svc->enroll_card(er, "test");
      REQUIRE(e.ok());
      Card c;
      activate_with(c, *e);
      // Initialization message -> backend allocates list 1 -> concatenated packet -> card -> PoR.
      auto n = pump(c, b);
      CHECK(n.mo == 1);
      CHECK(n.mt >= 10);  // 100 codes need about 13 SMS
      CHECK(n.por == 1);
      CHECK(status_u16(c, 0xDF48) == 100);
      CHECK(status_u16(c, 0xDF42) == 1);
      CHECK(!b.svc->card(e->n)->list_push_in_flight);

      // A tap: the backend verifies the cryptogram; the card checks the ARPC.
      Ch ch;
      Bytes challenge = ch.encode();
      auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, challenge, true));
      REQUIRE(r.sw == 0x9000);
      auto ans = b.svc->authorize(request_for(r.data, challenge, "T-1"), "TERM0001");
      REQUIRE(ans.ok());
      CHECK(ans->decision == be::Decision::approved);
      CHECK(ans->reason == "ok");
      Bytes confirm = ans->arpc;
      append(confirm, ans->arc);
      CHECK(c.sw(cmd(0x80, 0xA2, 0x00, 0x00, confirm)) == 0x9000);
      // The same answer again (new txn id) is a replay: declined.
      auto again = b.svc->authorize(request_for(r.data, challenge, "T-2"), "TERM0001");
      REQUIRE(again.ok());
      CHECK(again->decision == be::Decision::declined);
      // A tampered amount fails the MAC.
      Ch other;
      other.amount = hex("000000009999");
      auto r2 = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, other.encode(), true));
      auto forged = b.svc->authorize(request_for(r2.data, challenge, "T-3"), "TERM0001");
      REQUIRE(forged.ok());
      CHECK(forged->decision == be::Decision::declined);
      CHECK(forged->reason == "bad_cryptogram");

      // Display code: the backend accepts the typed digits.
      REQUIRE(c.sw(cmd(0x00, 0x20, 0x00, 0x80, pin_block("1234"))) == 0x9000);
      auto shown = c.tx("80A4000000");
      REQUIRE(shown.sw == 0x9000);
      auto nodes = tlv::parse(shown.data).value();
      const auto& code = tlv::find(nodes, 0xDF4D)->value;
      be::CodeRequest cr{"T-4", e->n, std::string(code.begin(), code.end()), ""};
      auto verified = b.svc->verify_display_code(cr, "TERM0001");
      REQUIRE(verified.ok());
      CHECK(verified->decision == be::Decision::approved);

      // Spend down to the threshold (20): a new list arrives by itself.
      int txn = 10;
      while (status_u16(c, 0xDF48) > 20) {
        Ch t;
        t.un = be_bytes(static_cast<std::uint64_t>(txn), 8);
        auto a = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, t.encode(), true));
        REQUIRE(a.sw == 0x9000);
        auto d = b.svc->authorize(request_for(a.data, t.encode(), "T-" + std::to_string(txn++)), "TERM0001");
        REQUIRE(d.ok());
        REQUIRE(d->decision == be::Decision::approved);
        REQUIRE(txn < 200);
      }
      pump(c, b);
      CHECK(status_u16(c, 0xDF48) == 120);
      CHECK(status_u16(c, 0xDF4C) == 2);
      CHECK(status_u16(c, 0xDF4A) == 0);

      // Key rotation: E2 under K, the card switches, the backend follows; lists still flow.
      REQUIRE(b.svc->rotate_key(e->n, "test"));
      pump(c, b);
      CHECK(status_u16(c, 0xDF49) == 2);
      auto rec = b.svc->card(e->n);
      REQUIRE(rec.ok());
      CHECK(rec->key_version == 2);
      CHECK(!rec->pending_k);
    }
  }
}
