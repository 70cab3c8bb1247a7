// console_card_sim: plays the card for the console's browser tests. It reads the card's next
// unused code from the backend's store (as only the card itself would know it: in production
// the list reaches the card by SMS, which the e2e tests cover) and prints the JSON body of a
// POST /v1/authorizations (protocol.md section 5) that a terminal would send for a tap.
//
//   console_card_sim DATA_DIR CARD_HEX TERMINAL_ID TXN_ID AMOUNT_MINOR
// Exit 0 with one JSON line on stdout; 1 with a message on stderr.
#include <cstdio>
#include <iostream>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/crypto.hpp"
#include "sqlite_store.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;

namespace {

// n12 BCD in 6 bytes (EMV 9F02).
Bytes amount_bcd(std::uint64_t minor) {
  Bytes out(6, 0);
  for (int i = 5; i >= 0; --i) {
    const auto lo = static_cast<std::uint8_t>(minor % 10);
    minor /= 10;
    const auto hi = static_cast<std::uint8_t>(minor % 10);
    minor /= 10;
    out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return out;
}

int fail(const std::string& msg) {
  std::cerr << "console_card_sim: " << msg << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) return fail("usage: console_card_sim DATA_DIR CARD_HEX TERMINAL_ID TXN_ID AMOUNT_MINOR");
  const std::filesystem::path dir = argv[1];
  auto n = from_hex(argv[2]);
  if (!n || n->size() != 8) return fail("CARD_HEX must be 16 hex digits");
  const std::string terminal = argv[3];
  if (terminal.size() != 8) return fail("TERMINAL_ID must be 8 characters");
  const std::string txn = argv[4];
  const std::uint64_t amount = std::stoull(argv[5]);

  auto kek = Kek::load_or_create(dir / "kek.bin");
  if (!kek) return fail(kek.error().message);
  auto store = open_sqlite_store(dir / "otac.db", std::make_shared<const Kek>(std::move(*kek)));
  if (!store) return fail(store.error().message);
  Algorithm alg = Algorithm::des3;
  OtacRecord code;
  auto r = (*store)->run([&](Tx& tx) -> Result<void> {
    auto card = tx.card(*n);
    if (!card) return std::move(card).error();
    alg = card->algorithm;
    auto codes = tx.lowest_unused(*n, 1);
    if (!codes) return std::move(codes).error();
    if (codes->empty()) return make_error(Errc::not_found, "the card has no unused code; send it a list first");
    code = std::move(codes->front());
    return {};
  });
  if (!r) return fail(r.error().message);

  backend::test::Ch ch;
  ch.un = crypto::random_bytes(8);
  ch.amount = amount_bcd(amount);
  ch.terminal = to_bytes(terminal);
  auto req = backend::test::card_request(txn, *n, alg, code.list_id, code.index, code.key, ch, 1);
  std::cout << "{\"txn_id\":\"" << txn << "\",\"card\":\"" << to_hex(req.card) << "\",\"list\":" << req.list_id
            << ",\"index\":" << req.index << ",\"atc\":" << req.atc << ",\"challenge\":\"" << to_hex(req.challenge)
            << "\",\"cryptogram\":\"" << to_hex(req.cryptogram) << "\"}\n";
  return 0;
}
