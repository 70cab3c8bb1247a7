// The backend's E3/E4/E5 packets (protocol.md 6.1, 6.1.2, 6.2) through the REAL applet core
// (card-applet's otac_applet, in process): the service builds and queues the SMS, the test
// hands each part to the card as an ENVELOPE (SMS-PP download), and the card's PoRs and
// requests go back through Service::handle_mo_sms. Negative cases are built with foreign keys
// or by leaving out CF, and the card must refuse them.
#include <catch2/catch.hpp>

#include <functional>
#include <map>

#include "ota_push.hpp"
#include "otac/applet/applet.hpp"
#include "otac/applet/sms_lite.hpp"
#include "otac/common/apdu.hpp"
#include "otac/common/ota.hpp"
#include "otac/common/tlv.hpp"
#include "softhsm_fixture.hpp"
#include "test_service_support.hpp"

namespace otac::backend::test {
namespace {

namespace ap = otac::applet;
const std::string kPhone = "+15550123";

Bytes pin_block(const std::string& pin) {
  Bytes b = to_bytes(pin);
  b.resize(8, 0xFF);
  return b;
}

Bytes cmd(std::uint8_t cla, std::uint8_t ins, std::uint8_t p1, std::uint8_t p2, const Bytes& data = {}, bool le = false) {
  Bytes a{cla, ins, p1, p2};
  if (!data.empty()) {
    REQUIRE(data.size() <= 255);
    a.push_back(static_cast<std::uint8_t>(data.size()));
    append(a, data);
  }
  if (le) a.push_back(0x00);
  return a;
}

struct Card {
  ap::MemoryStorage store;
  ap::Applet app{store};
  apdu::Response tx(const Bytes& a) {
    auto r = apdu::parse_response(app.process(a));
    REQUIRE(r.ok());
    return *r;
  }
  std::uint16_t status_field(tlv::Tag tag) {
    auto s = tx(hex("80A6000000"));
    REQUIRE(s.sw == 0x9000);
    auto nodes = tlv::parse(s.data).value();
    const tlv::Node* e0 = tlv::find(nodes, 0xE0);
    REQUIRE(e0 != nullptr);
    const tlv::Node* f = tlv::find(e0->children, tag);
    REQUIRE(f != nullptr);
    return static_cast<std::uint16_t>(f->value.size() == 1 ? f->value[0] : f->value[0] << 8 | f->value[1]);
  }
  std::uint16_t unused() { return status_field(0xDF48); }
};

// SELECT, first PIN; with key_pair 01 (RSA-2048) or 02 (P-256) GENERATE KEY PAIR, returning
// the DER SubjectPublicKeyInfo the card exports.
Bytes prepare(Card& c, std::uint8_t key_pair) {
  REQUIRE(c.tx(hex("00A4040006F04F5441430100")).sw == 0x9000);
  REQUIRE(c.tx(cmd(0x00, 0x24, 0x01, 0x80, pin_block("1234"))).sw == 0x9000);
  if (key_pair == 0) return {};
  auto r = c.tx(cmd(0x80, 0x46, key_pair, 0x00, {}, true));
  REQUIRE(r.sw == 0x9000);
  auto nodes = tlv::parse(r.data).value();
  const tlv::Node* spki = tlv::find(nodes, 0xDF50);
  REQUIRE(spki != nullptr);
  return spki->value;
}

// ACTIVATE with the letter's N, K, algorithm and server number, and the card CA point (DF51).
void activate(Card& c, const Enrollment& e, const Bytes& ca_point) {
  Bytes d;
  tlv(d, hex("DF41"), e.n);
  tlv(d, hex("DF44"), Bytes(e.k.view().begin(), e.k.view().end()));
  tlv(d, hex("DF45"), Bytes{static_cast<std::uint8_t>(e.algorithm == Algorithm::des3 ? 1 : 2)});
  tlv(d, hex("DF46"), to_bytes("+15550100"));
  tlv(d, hex("DF47"), pin_block("87654321"));
  if (!ca_point.empty()) tlv(d, hex("DF51"), ca_point);
  REQUIRE(c.tx(cmd(0x80, 0x10, 0x00, 0x00, d, true)).sw == 0x9000);
}

Bytes envelope(const Bytes& udh, const Bytes& payload) {
  auto tpdu = ap::sms::encode_deliver("+15550100", udh, payload);
  REQUIRE(tpdu.ok());
  auto env = ap::sms::encode_sms_pp_download("+4917000000", *tpdu);
  REQUIRE(env.ok());
  return cmd(0x80, 0xC2, 0x00, 0x00, *env, true);
}

// What went over the air, for the checks: every MT part delivered, every PoR (status, data).
struct Link {
  std::function<bool(const OutboxMessage&)> drop_mt;  // true: the SMS is lost
  bool drop_pors = false;
  std::vector<OutboxMessage> delivered;
  std::vector<std::pair<std::uint8_t, Bytes>> pors;  // RSC and inner status word, opened by the test
};

// Carries SMS both ways until nothing moves (bounded): card outbox -> backend, backend
// outbox -> card (ENVELOPE per part), the card's PoR -> backend.
void pump(Card& c, Env& env, Link& link, const Enrollment& e) {
  for (int round = 0; round < 20; ++round) {
    bool moved = false;
    for (int i = 0; i < 10; ++i) {
      auto f = c.tx(hex("8012000000"));
      if (f.sw == 0x6A88) break;
      REQUIRE(f.sw == 0x9000);
      auto ssm = ap::sms::parse_send_short_message(f.data);
      REQUIRE(ssm.ok());
      auto sub = ap::sms::parse_submit(ssm->tpdu);
      REQUIRE(sub.ok());
      auto r = env.svc->handle_mo_sms(MoSms{kPhone, sub->to, sub->udh, sub->payload});
      INFO((r.ok() ? std::string() : r.error().message));
      REQUIRE(r.ok());
      moved = true;
    }
    auto due = env.svc->next_due(100);
    REQUIRE(due.ok());
    for (const auto& m : *due) {
      REQUIRE(env.svc->mark_sent(m.id, "202 Accepted"));
      moved = true;
      if (link.drop_mt && link.drop_mt(m)) continue;
      link.delivered.push_back(m);
      auto r = c.tx(envelope(m.udh, m.payload));
      REQUIRE(r.sw == 0x9000);
      if (r.data.empty()) continue;
      // Open the PoR independently of the service, with the card's OTA keys.
      auto keys = ota::derive_card_keys(e.k, e.n, e.algorithm == Algorithm::des3 ? ota::CardAlgorithm::des3_2key
                                                                                 : ota::CardAlgorithm::aes128).value();
      const std::uint8_t kid = ota::key_id_for(e.algorithm == Algorithm::des3 ? ota::CardAlgorithm::des3_2key
                                                                              : ota::CardAlgorithm::aes128, 1);
      auto por = ota::open_response(r.data, ota::PorSecurity{ota::Spi::decode(0x1639).value(), kid, kid}, keys.kic, keys.kid);
      REQUIRE(por.ok());
      link.pors.emplace_back(static_cast<std::uint8_t>(por->status), por->data);
      if (link.drop_pors) continue;
      auto pr = env.svc->handle_mo_sms(MoSms{kPhone, "+15550100", hex("7100"), r.data});
      INFO((pr.ok() ? std::string() : pr.error().message));
      REQUIRE(pr.ok());
    }
    if (!moved) return;
  }
  FAIL("SMS still moving after 20 rounds");
}

// The inner commands (top-level tags) of the packets among `msgs`, reassembled and opened
// with the card's OTA keys, in sending order.
std::vector<std::vector<tlv::Tag>> inner_tags(const std::vector<OutboxMessage>& msgs, const Enrollment& e) {
  auto keys = ota::derive_card_keys(e.k, e.n, e.algorithm == Algorithm::des3 ? ota::CardAlgorithm::des3_2key
                                                                             : ota::CardAlgorithm::aes128).value();
  std::vector<std::vector<tlv::Tag>> out;
  std::map<std::uint8_t, Bytes> partial;
  for (const auto& m : msgs) {
    Bytes packet;
    if (m.udh.size() >= 5 && m.udh[0] == 0x00) {
      const std::uint8_t ref = m.udh[2], total = m.udh[3], seq = m.udh[4];
      append(partial[ref], m.payload);
      if (seq != total) continue;
      packet = std::move(partial[ref]);
      partial.erase(ref);
    } else {
      packet = m.payload;
    }
    auto opened = ota::open_command(packet, keys.kic, keys.kid);
    REQUIRE(opened.ok());
    auto nodes = tlv::parse(opened->data).value();
    std::vector<tlv::Tag> tags;
    for (const auto& n : nodes) tags.push_back(n.tag);
    out.push_back(std::move(tags));
  }
  return out;
}

// A command packet for the card, built here (not by the service) with a chosen counter.
std::vector<SmsPart> foreign_packet(const Enrollment& e, ByteView inner, std::uint64_t counter) {
  const auto alg = e.algorithm == Algorithm::des3 ? ota::CardAlgorithm::des3_2key : ota::CardAlgorithm::aes128;
  auto keys = ota::derive_card_keys(e.k, e.n, alg).value();
  const std::uint8_t kid = ota::key_id_for(alg, 1);
  ota::CommandHeader h{ota::Spi::decode(0x1639).value(), kid, kid, ota::otac_tar};
  auto packet = ota::build_command(h, counter, inner, keys.kic, keys.kid).value();
  return split_packet(packet, 0x77).value();
}

// Delivers parts to the card; returns the PoR's RSC and inner status word.
std::pair<std::uint8_t, Bytes> deliver(Card& c, const Enrollment& e, const std::vector<SmsPart>& parts) {
  apdu::Response last;
  for (const auto& p : parts) {
    last = c.tx(envelope(p.udh, p.payload));
    REQUIRE(last.sw == 0x9000);
  }
  const auto alg = e.algorithm == Algorithm::des3 ? ota::CardAlgorithm::des3_2key : ota::CardAlgorithm::aes128;
  auto keys = ota::derive_card_keys(e.k, e.n, alg).value();
  const std::uint8_t kid = ota::key_id_for(alg, 1);
  auto por = ota::open_response(last.data, ota::PorSecurity{ota::Spi::decode(0x1639).value(), kid, kid}, keys.kic, keys.kid);
  REQUIRE(por.ok());
  return {static_cast<std::uint8_t>(por->status), por->data};
}

// One tap: AUTHENTICATE on the card, the backend decides, CONFIRM on the card.
AuthAnswer tap(Card& c, Env& env, const std::string& txn, std::uint8_t un) {
  Ch ch;
  ch.un[7] = un;
  const Bytes challenge = ch.encode();
  auto r = c.tx(cmd(0x80, 0xA0, 0x00, 0x00, challenge, true));
  REQUIRE(r.sw == 0x9000);
  auto nodes = tlv::parse(r.data).value();
  const auto& t = tlv::find(nodes, 0x77)->children;
  auto u16 = [&](tlv::Tag tag) { const auto& v = tlv::find(t, tag)->value; return static_cast<std::uint16_t>(v[0] << 8 | v[1]); };
  AuthRequest req;
  req.txn_id = txn;
  req.card = tlv::find(t, 0xDF41)->value;
  req.list_id = u16(0xDF42);
  req.index = u16(0xDF43);
  req.atc = u16(0x9F36);
  req.pin_state = tlv::find(t, 0xDF35)->value.at(0);
  req.challenge = challenge;
  req.cryptogram = tlv::find(t, 0x9F26)->value;
  auto ans = env.svc->authorize(req, "TERM0001");
  REQUIRE(ans.ok());
  if (!ans->arpc.empty()) {
    Bytes confirm = ans->arpc;
    append(confirm, ans->arc);
    CHECK(c.tx(cmd(0x80, 0xA2, 0x00, 0x00, confirm)).sw == 0x9000);
  }
  return *ans;
}

struct Setup {
  Env env;
  Card card;
  Enrollment e;
  Link link;

  // key_pair 0: symmetric card (E1 lists); 01/02: enrolled with the card's public key (E5).
  explicit Setup(std::uint8_t key_pair, Algorithm alg = Algorithm::aes128, std::optional<Bytes> ca_override = std::nullopt,
                 std::uint16_t list_size = 20, std::shared_ptr<const Kek> custody = nullptr)
      : env(list_size, std::move(custody)) {
    REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0001", "ab", 0, true}, "test"));
    const Bytes spki = prepare(card, key_pair);
    EnrollRequest er;
    er.algorithm = alg;
    er.msisdn = kPhone;
    er.public_key = spki;
    er.threshold = 5;  // taps in these tests must not trigger lists by themselves
    auto en = env.svc->enroll_card(er, "test");
    REQUIRE(en.ok());
    e = std::move(*en);
    REQUIRE(e.k.size() == 16);
    REQUIRE(e.ca_point == env.svc->card_ca_public().value());
    activate(card, e, ca_override.value_or(e.ca_point));
  }
};

}  // namespace

TEST_CASE("E5: a card enrolled with its public key gets E4 then E5 lists it can use (RSA-2048 and P-256)") {
  for (std::uint8_t kp : {std::uint8_t{0x01}, std::uint8_t{0x02}}) {
    DYNAMIC_SECTION("key pair " << int(kp)) {
      Setup s(kp);
      CHECK_FALSE(s.env.svc->key_status(s.e.n).value().server_key);
      // The initialization message asks for list 1: E4 (not yet confirmed) then E5.
      pump(s.card, s.env, s.link, s.e);
      auto tags = inner_tags(s.link.delivered, s.e);
      REQUIRE(tags.size() == 2);
      CHECK(tags[0] == std::vector<tlv::Tag>{0xE4});
      CHECK(tags[1] == std::vector<tlv::Tag>{0xE5});
      REQUIRE(s.link.pors.size() == 2);
      for (const auto& [rsc, data] : s.link.pors) {
        CHECK(rsc == 0x00);
        CHECK(data == hex("9000"));
      }
      CHECK(s.card.unused() == 20);
      CHECK(s.env.svc->key_status(s.e.n).value().server_key);
      CHECK_FALSE(s.env.svc->card(s.e.n).value().list_push_in_flight);
      // The codes the card decrypted are the backend's: a tap is approved, the ARPC verifies.
      auto a = tap(s.card, s.env, "K-1", 1);
      CHECK(a.decision == Decision::approved);
      CHECK(a.reason == "ok");
      // Later lists need no E4 any more.
      s.link.delivered.clear();
      REQUIRE(s.env.svc->refresh_card(s.e.n, "test"));
      pump(s.card, s.env, s.link, s.e);
      // (The card's own refresh request, queued by the tap, crosses list 2 and gets list 2
      // again, the resend rule of 6.2: so one or two E5, and no E4.)
      tags = inner_tags(s.link.delivered, s.e);
      REQUIRE(!tags.empty());
      REQUIRE(tags.size() <= 2);
      for (const auto& t : tags) CHECK(t == std::vector<tlv::Tag>{0xE5});
      CHECK(s.card.unused() == 39);
    }
  }
}

TEST_CASE("SoftHSM2: E4 and E5 signed inside the token are verified by the card, and the keys never leave it", "[softhsm]") {
  backend::test::SoftHsm hsm;
  auto custody = hsm.init_custody();
  auto token = hsm.token().value();
  const Bytes ca_point = token->ec_point(token->find_ec_key("otac-card-ca", false).value()).value();
  const Bytes server_point = token->ec_point(token->find_ec_key("otac-server", false).value()).value();
  Setup s(0x02, Algorithm::aes128, std::nullopt, 20, custody);
  // The card is personalized with the token's card CA point, and the store keeps no copy.
  CHECK(s.e.ca_point == ca_point);
  pump(s.card, s.env, s.link, s.e);
  auto tags = inner_tags(s.link.delivered, s.e);
  REQUIRE(tags.size() == 2);
  CHECK(tags[0] == std::vector<tlv::Tag>{0xE4});
  CHECK(tags[1] == std::vector<tlv::Tag>{0xE5});
  REQUIRE(s.link.pors.size() == 2);
  for (const auto& [rsc, data] : s.link.pors) {  // the card checked both ECDSA signatures
    CHECK(rsc == 0x00);
    CHECK(data == hex("9000"));
  }
  CHECK(s.card.unused() == 20);
  CHECK(s.env.svc->key_status(s.e.n).value().server_key);
  auto a = tap(s.card, s.env, "H-1", 1);
  CHECK(a.decision == Decision::approved);
  // A store that holds the server keys itself would have made rows; this one made none.
  auto store = s.env.store();
  REQUIRE((*store).run([&](Tx& tx) -> Result<void> {
    auto k = tx.server_key("server");
    REQUIRE(k);
    CHECK(k->private_der.empty());
    CHECK(k->public_point == server_point);
    return {};
  }));
  // The card's own key K is wrapped by the token: the database holds it only sealed.
  CHECK(backend::test::find_secrets(s.env.dir.path, {Bytes(s.e.k.view().begin(), s.e.k.view().end())}).empty());
}

TEST_CASE("E5 lists are capped so that they fit 16 SMS: 100 codes for RSA-2048, 110 for P-256") {
  for (std::uint8_t kp : {std::uint8_t{0x01}, std::uint8_t{0x02}}) {
    DYNAMIC_SECTION("key pair " << int(kp)) {
      Setup s(kp, Algorithm::des3, std::nullopt, 150);
      pump(s.card, s.env, s.link, s.e);
      CHECK(s.card.unused() == (kp == 0x01 ? 100 : 110));
      CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));
      // With CF too (the packet grows by 34 bytes).
      REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));
      REQUIRE(s.env.svc->refresh_card(s.e.n, "test"));
      pump(s.card, s.env, s.link, s.e);
      CHECK(s.env.svc->key_status(s.e.n).value().signature_key);
      CHECK(s.card.unused() == (kp == 0x01 ? 200 : 220));
    }
  }
}

TEST_CASE("E5 with a wrong CD (signed by another server key) is refused by the card") {
  Setup s(0x02);
  pump(s.card, s.env, s.link, s.e);
  REQUIRE(s.card.unused() == 20);
  auto foreign = crypto::ec_p256_generate().value();
  std::vector<SecretBytes> codes;
  for (int i = 0; i < 5; ++i) codes.push_back(crypto::random_secret(16));
  auto card_rec = s.env.svc->card(s.e.n).value();
  ServerKeyRecord foreign_key{"server", crypto::private_key_der(foreign).value(), crypto::ec_public_point(foreign).value(), 0};
  auto forged = encode_load_list_asymmetric(50, false, codes, card_rec.public_key, s.e.n, foreign_key);
  REQUIRE(forged.ok());
  auto r = deliver(s.card, s.e, foreign_packet(s.e, *forged, 1000));
  CHECK(r.first == 0x0A);
  CHECK(r.second == hex("6982"));
  CHECK(s.card.unused() == 20);
  CHECK(s.card.status_field(0xDF4C) == 1);  // still one list
}

TEST_CASE("E4 signed by another CA is refused, the backend then sends no list the card could load") {
  auto other_ca = crypto::ec_public_point(crypto::ec_p256_generate().value()).value();
  Setup s(0x02, Algorithm::des3, other_ca);
  pump(s.card, s.env, s.link, s.e);
  // E4 refused (RSC 0A, 6982), E5 without a server key refused (6985): no codes on the card.
  REQUIRE(s.link.pors.size() == 2);
  CHECK(s.link.pors[0] == std::make_pair(std::uint8_t{0x0A}, hex("6982")));
  CHECK(s.link.pors[1] == std::make_pair(std::uint8_t{0x00}, hex("6985")));
  CHECK(s.card.unused() == 0);
  CHECK_FALSE(s.env.svc->key_status(s.e.n).value().server_key);
  // The list the card could not open is recorded refused (protocol.md 6.4): its codes never
  // count, and nothing is left in flight.
  CHECK_FALSE(s.env.svc->card(s.e.n).value().list_push_in_flight);
  auto lists = s.env.svc->card_lists(s.e.n).value();
  REQUIRE(lists.size() == 1);
  CHECK(lists[0].state == ListState::refused);
  CHECK(lists[0].refusal == "rsc=00 sw=6985");
  CHECK(lists[0].unused == 0);
  // The operator action sends E4 again; same CA mismatch, same refusal.
  REQUIRE(s.env.svc->install_server_key(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  REQUIRE(s.link.pors.size() == 3);
  CHECK(s.link.pors[2] == std::make_pair(std::uint8_t{0x0A}, hex("6982")));
}

TEST_CASE("install_server_key queues an E4 the card accepts") {
  Setup s(0x00);
  pump(s.card, s.env, s.link, s.e);
  CHECK(s.card.unused() == 20);
  CHECK_FALSE(s.env.svc->key_status(s.e.n).value().server_key);
  s.link.delivered.clear();
  REQUIRE(s.env.svc->install_server_key(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  CHECK(inner_tags(s.link.delivered, s.e) == std::vector<std::vector<tlv::Tag>>{{0xE4}});
  CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));
  CHECK(s.env.svc->key_status(s.e.n).value().server_key);
  CHECK(!s.env.svc->install_server_key(hex("0000000000000000"), "test"));
}

TEST_CASE("E3: after the PoR proves S, every packet carries CF, packets without CF or with a wrong CF are refused") {
  for (auto alg : {Algorithm::des3, Algorithm::aes128}) {
    DYNAMIC_SECTION("algorithm " << int(alg)) {
      Setup s(0x00, alg);
      pump(s.card, s.env, s.link, s.e);
      REQUIRE(s.card.unused() == 20);
      s.link.delivered.clear();
      REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));
      CHECK(s.env.svc->key_status(s.e.n).value().signature_key_pending);
      pump(s.card, s.env, s.link, s.e);
      CHECK(inner_tags(s.link.delivered, s.e) == std::vector<std::vector<tlv::Tag>>{{0xE3}});  // no CF yet
      auto st = s.env.svc->key_status(s.e.n).value();
      CHECK(st.signature_key);
      CHECK_FALSE(st.signature_key_pending);
      // A new list now ends with CF and the card loads it.
      s.link.delivered.clear();
      REQUIRE(s.env.svc->refresh_card(s.e.n, "test"));
      pump(s.card, s.env, s.link, s.e);
      CHECK(inner_tags(s.link.delivered, s.e) == std::vector<std::vector<tlv::Tag>>{{0xE1, 0xCF}});
      CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));
      CHECK(s.card.unused() == 40);
      CHECK(tap(s.card, s.env, "S-1", 1).decision == Decision::approved);
      // A packet without CF (right OTA keys, fresh counter) is refused: RSC 0A, 6982.
      std::vector<SecretBytes> codes;
      for (int i = 0; i < 3; ++i) codes.push_back(crypto::random_secret(16));
      const Bytes e1 = encode_load_list(100, false, codes);
      CHECK(deliver(s.card, s.e, foreign_packet(s.e, e1, 1000)) == std::make_pair(std::uint8_t{0x0A}, hex("6982")));
      // A wrong CF (HMAC under another S) is refused: RSC 01, 6982.
      Bytes wrong = e1;
      append(wrong, hex("CF20"));
      append(wrong, crypto::hmac_sha256(Bytes(16, 0x5A), e1));
      CHECK(deliver(s.card, s.e, foreign_packet(s.e, wrong, 1001)) == std::make_pair(std::uint8_t{0x01}, hex("6982")));
      CHECK(s.card.unused() == 39);
    }
  }
}

TEST_CASE("E3 with its PoR lost: the next packet's refusal proves S, and that packet is sent again with CF") {
  Setup s(0x00);
  pump(s.card, s.env, s.link, s.e);
  s.link.drop_pors = true;
  REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));  // the card took S
  CHECK(s.env.svc->key_status(s.e.n).value().signature_key_pending);           // the backend cannot know
  s.link.drop_pors = false;
  s.link.delivered.clear();
  REQUIRE(s.env.svc->refresh_card(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  // The list without CF is refused, the backend switches to S and resends it with CF.
  CHECK(inner_tags(s.link.delivered, s.e) == std::vector<std::vector<tlv::Tag>>{{0xE1}, {0xE1, 0xCF}});
  CHECK(s.link.pors[s.link.pors.size() - 2] == std::make_pair(std::uint8_t{0x0A}, hex("6982")));
  CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));
  CHECK(s.env.svc->key_status(s.e.n).value().signature_key);
  CHECK(s.card.unused() == 40);
  CHECK_FALSE(s.env.svc->card(s.e.n).value().list_push_in_flight);
}

TEST_CASE("E3 lost on the way: a later packet accepted without CF makes the backend send E3 again") {
  Setup s(0x00);
  pump(s.card, s.env, s.link, s.e);
  s.link.drop_mt = [](const OutboxMessage&) { return true; };
  REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);  // the E3 SMS is lost
  s.link.drop_mt = nullptr;
  s.link.delivered.clear();
  REQUIRE(s.env.svc->refresh_card(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  // The list goes without CF (S unproven) and is accepted; that proves E3 can no longer
  // apply (its counter is lower), so the same S goes again and is confirmed.
  CHECK(inner_tags(s.link.delivered, s.e) == std::vector<std::vector<tlv::Tag>>{{0xE1}, {0xE3}});
  CHECK(s.env.svc->key_status(s.e.n).value().signature_key);
  CHECK(s.card.unused() == 40);
  // And from now on packets carry CF, and the card accepts them.
  s.link.delivered.clear();
  REQUIRE(s.env.svc->install_server_key(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  CHECK(inner_tags(s.link.delivered, s.e) == std::vector<std::vector<tlv::Tag>>{{0xE4, 0xCF}});
  CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));
}

TEST_CASE("set_signature_key while an E3 is unconfirmed sends the same S again") {
  Setup s(0x00);
  pump(s.card, s.env, s.link, s.e);
  s.link.drop_pors = true;
  REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);  // the card holds S, the PoR is lost
  s.link.drop_pors = false;
  REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  // The repeated E3 (without CF) is refused by a card that holds S: that refusal proves S.
  CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x0A}, hex("6982")));
  CHECK(s.env.svc->key_status(s.e.n).value().signature_key);
  REQUIRE(s.env.svc->refresh_card(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));
  CHECK(s.card.unused() == 40);
}

TEST_CASE("enrollment refuses a public key the card could not have made") {
  Env env;
  EnrollRequest er;
  er.msisdn = "1";
  er.public_key = hex("3000");
  CHECK(env.svc->enroll_card(er, "admin").error().code == Errc::bad_value);
  er.public_key = crypto::public_key_der(crypto::rsa_generate(1024).value()).value();
  CHECK(env.svc->enroll_card(er, "admin").error().code == Errc::bad_value);
}

}  // namespace otac::backend::test

namespace otac::backend::test {

TEST_CASE("a list queued behind E3 (no CF) and refused after S was confirmed is sent again with CF, once") {
  Setup s(0x00);
  pump(s.card, s.env, s.link, s.e);
  REQUIRE(s.card.unused() == 20);
  s.link.delivered.clear();
  REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));
  REQUIRE(s.env.svc->refresh_card(s.e.n, "test"));  // built while S is unproven: no CF
  pump(s.card, s.env, s.link, s.e);
  CHECK(inner_tags(s.link.delivered, s.e) == std::vector<std::vector<tlv::Tag>>{{0xE3}, {0xE1}, {0xE1, 0xCF}});
  REQUIRE(s.link.pors.size() >= 3);
  CHECK(s.link.pors[s.link.pors.size() - 2] == std::make_pair(std::uint8_t{0x0A}, hex("6982")));
  CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));
  CHECK(s.card.unused() == 40);
  CHECK_FALSE(s.env.svc->card(s.e.n).value().list_push_in_flight);
}

}  // namespace otac::backend::test

namespace otac::backend::test {

TEST_CASE("a new S on a card that holds S: E3 goes with CF under the old S, a lost PoR is resolved by the next refusal (RSC 01)") {
  Setup s(0x00);
  pump(s.card, s.env, s.link, s.e);
  REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  REQUIRE(s.env.svc->key_status(s.e.n).value().signature_key);
  // Second S: the E3 carries CF under the first; its PoR is lost.
  s.link.delivered.clear();
  s.link.drop_pors = true;
  REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  CHECK(inner_tags(s.link.delivered, s.e) == std::vector<std::vector<tlv::Tag>>{{0xE3, 0xCF}});
  CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));
  CHECK(s.env.svc->key_status(s.e.n).value().signature_key_pending);
  s.link.drop_pors = false;
  // The next list has CF under the old S: the card refuses it (RSC 01), which proves the new S.
  REQUIRE(s.env.svc->refresh_card(s.e.n, "test"));
  pump(s.card, s.env, s.link, s.e);
  CHECK(s.link.pors[s.link.pors.size() - 2] == std::make_pair(std::uint8_t{0x01}, hex("6982")));
  CHECK(s.link.pors.back() == std::make_pair(std::uint8_t{0x00}, hex("9000")));
  auto st = s.env.svc->key_status(s.e.n).value();
  CHECK(st.signature_key);
  CHECK_FALSE(st.signature_key_pending);
  CHECK(s.card.unused() == 40);
}

}  // namespace otac::backend::test

namespace otac::backend::test {

// Found by the lifecycle soak: S set on an asymmetric card before its first list. The E4 and
// E5 of list 1 are built while S is unproven (no CF) and reach the card after E3, so both are
// refused for the missing CF (RSC 0A, 6982). The E3 PoR has confirmed S by then; the list
// must go again with CF, or the card is left with no code and nothing asks for one.
TEST_CASE("E3 before an asymmetric card's first list: E4 and E5 refused for the missing CF, the list goes again with CF") {
  for (std::uint8_t kp : {std::uint8_t{0x01}, std::uint8_t{0x02}}) {
    DYNAMIC_SECTION("key pair " << int(kp)) {
      Setup s(kp);
      REQUIRE(s.env.svc->set_signature_key(s.e.n, "test"));  // before the initialization request is read
      pump(s.card, s.env, s.link, s.e);
      auto tags = inner_tags(s.link.delivered, s.e);
      REQUIRE(tags.size() == 5);
      CHECK(tags[0] == std::vector<tlv::Tag>{0xE3});
      CHECK(tags[1] == std::vector<tlv::Tag>{0xE4});
      CHECK(tags[2] == std::vector<tlv::Tag>{0xE5});
      CHECK(tags[3] == std::vector<tlv::Tag>{0xE4, 0xCF});
      CHECK(tags[4] == std::vector<tlv::Tag>{0xE5, 0xCF});
      REQUIRE(s.link.pors.size() == 5);
      CHECK(s.link.pors[1] == std::make_pair(std::uint8_t{0x0A}, hex("6982")));
      CHECK(s.link.pors[2] == std::make_pair(std::uint8_t{0x0A}, hex("6982")));
      CHECK(s.link.pors[4] == std::make_pair(std::uint8_t{0x00}, hex("9000")));
      CHECK(s.card.unused() == 20);
      auto st = s.env.svc->key_status(s.e.n).value();
      CHECK(st.signature_key);
      CHECK(st.server_key);
      CHECK_FALSE(s.env.svc->card(s.e.n).value().list_push_in_flight);
      CHECK(tap(s.card, s.env, "S-1", 1).decision == Decision::approved);
    }
  }
}

}  // namespace otac::backend::test
