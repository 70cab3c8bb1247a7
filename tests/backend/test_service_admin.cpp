// Operators, terminals, transaction listing, metrics, asymmetric enrollment.
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>

#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::Env;

namespace {
std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  Bytes b(std::istreambuf_iterator<char>(f), {});
  return std::string(b.begin(), b.end());
}
}  // namespace

TEST_CASE("operator tokens: random, stored only as a hash, resolved to name and role") {
  Env env;
  auto t1 = env.svc->create_operator("alice", Role::operator_, "bootstrap");
  auto t2 = env.svc->create_operator("bob", Role::viewer, "alice");
  REQUIRE(t1);
  REQUIRE(t2);
  CHECK(*t1 != *t2);
  CHECK(t1->size() >= 32);
  auto op = env.svc->authenticate_operator(*t1);
  REQUIRE(op);
  CHECK(op->name == "alice");
  CHECK(op->role == Role::operator_);
  CHECK(env.svc->authenticate_operator(*t2)->role == Role::viewer);
  auto bad = env.svc->authenticate_operator(*t1 + "x");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::not_found);
  CHECK_FALSE(env.svc->authenticate_operator(""));
  std::string files = slurp(env.db) + slurp(env.db.string() + "-wal");
  CHECK(files.find(*t1) == std::string::npos);
  CHECK(files.find("alice") != std::string::npos);  // sanity: names are stored in clear
}

TEST_CASE("terminal ids must be 8 printable characters, transactions can be listed by filter") {
  Env env;
  CHECK_FALSE(env.svc->register_terminal(TerminalRecord{"SHORT", "ab", 0, true}, "admin"));
  REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0001", "ab", 0, true}, "admin"));
  REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0002", "cd", 0, true}, "admin"));
  EnrollRequest er;
  er.msisdn = "1";
  auto e = env.svc->enroll_card(er, "admin").value();
  auto l = env.svc->issue_list(e.n, "admin").value();
  backend::test::Ch ch1, ch2;
  ch2.terminal = to_bytes("TERM0002");
  REQUIRE(env.svc->authorize(backend::test::card_request("A", e.n, e.algorithm, l.first, 0, l.second[0], ch1), "TERM0001"));
  env.clock += 10;
  REQUIRE(env.svc->authorize(backend::test::card_request("B", e.n, e.algorithm, l.first, 1, l.second[1], ch2), "TERM0002"));
  env.clock += 10;
  auto bad = backend::test::card_request("C", e.n, e.algorithm, l.first, 2, l.second[3], ch1);
  REQUIRE(env.svc->authorize(bad, "TERM0001"));

  TransactionFilter all;
  auto v = env.svc->list_transactions(all).value();
  REQUIRE(v.size() == 3);
  CHECK(v[0].txn_id == "C");  // newest first
  TransactionFilter f;
  f.terminal_id = "TERM0001";
  CHECK(env.svc->list_transactions(f)->size() == 2);
  f.decision = Decision::declined;
  auto d = env.svc->list_transactions(f).value();
  REQUIRE(d.size() == 1);
  CHECK(d[0].reason == "bad_cryptogram");
  CHECK(d[0].amount_minor == 1234);
  CHECK(d[0].currency == 978);
  TransactionFilter since;
  since.since = env.clock - 10;
  CHECK(env.svc->list_transactions(since)->size() == 2);
  TransactionFilter by_card;
  by_card.card = hex("0000000000000000");
  CHECK(env.svc->list_transactions(by_card)->empty());

  auto m = env.svc->metrics().value();
  CHECK(m.decisions["approved/ok"] == 2);
  CHECK(m.decisions["declined/bad_cryptogram"] == 1);
  CHECK(m.outbox_depth > 0);  // the list went out as packets
  CHECK(env.svc->verify_audit().value() >= 7);
}

TEST_CASE("asymmetric enrollment stores the public key and still issues K for the OTA packets") {
  Env env;
  auto pk = crypto::ec_p256_generate().value();
  EnrollRequest er;
  er.msisdn = "1";
  er.public_key = crypto::public_key_der(pk).value();
  auto e = env.svc->enroll_card(er, "admin");
  REQUIRE(e);
  CHECK(e->k.size() == 16);  // E5 travels under the OTA keys of K (protocol.md 6.1.2)
  CHECK(e->letter.find("Card key K: " + to_hex(e->k.view())) != std::string::npos);
  CHECK(e->letter.find("Card CA key: " + to_hex(e->ca_point)) != std::string::npos);
  CHECK(e->ca_point.size() == 65);
  auto c = env.svc->card(e->n).value();
  CHECK(ct_equal(c.k.view(), e->k.view()));
  CHECK(c.public_key == er.public_key);
  CHECK(env.svc->rotate_key(e->n, "admin"));
}

TEST_CASE("operators' listings come from the store: cards newest first with their lists and queued SMS, terminals by id") {
  Env env;
  CHECK(env.svc->list_cards(1000).value().empty());
  CHECK(env.svc->list_cards(0).error().code == Errc::bad_value);
  CHECK(env.svc->list_terminals(1001).error().code == Errc::bad_value);
  std::vector<Bytes> enrolled;
  for (int i = 0; i < 3; ++i) {
    EnrollRequest er;
    er.msisdn = "+491555000" + std::to_string(i);
    enrolled.push_back(env.svc->enroll_card(er, "admin").value().n);
    env.clock += 10;  // enrolled at distinct times
  }
  REQUIRE(env.svc->refresh_card(enrolled[1], "admin"));
  auto cards = env.svc->list_cards(2).value();
  REQUIRE(cards.size() == 2);
  CHECK(cards[0].n == enrolled[2]);  // newest first, at most the limit
  CHECK(cards[1].n == enrolled[1]);
  CHECK(cards[1].msisdn == "+4915550001");
  REQUIRE(cards[1].lists.size() == 1);
  CHECK(cards[1].lists[0].unused == 20);
  CHECK(cards[1].sms_queued >= 1);  // no gateway here: the list waits in the outbox
  REQUIRE(cards[1].sms_last);
  CHECK(cards[1].sms_last->to == "+4915550001");
  CHECK(cards[0].sms_queued == 0);
  CHECK_FALSE(cards[0].sms_last);
  // The summary is the same record one card at a time; an unknown card is not_found.
  auto one = env.svc->card_summary(enrolled[1]).value();
  CHECK(one.sms_queued == cards[1].sms_queued);
  CHECK(one.created_at == cards[1].created_at);
  CHECK(env.svc->card_summary(hex("0102030405060708")).error().code == Errc::not_found);

  REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0002", "cd", 500, true}, "admin"));
  REQUIRE(env.svc->register_terminal(TerminalRecord{"TERM0001", "ab", 0, false}, "admin"));
  auto terms = env.svc->list_terminals(10).value();
  REQUIRE(terms.size() == 2);
  CHECK(terms[0].id == "TERM0001");
  CHECK_FALSE(terms[0].enabled);
  CHECK(terms[1].id == "TERM0002");
  CHECK(terms[1].limit_minor == 500);
  CHECK(env.svc->list_terminals(1).value().size() == 1);
}
