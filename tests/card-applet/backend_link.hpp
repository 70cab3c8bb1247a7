// The applet next to the real backend service (in-process, SQLite in a temp dir), and the
// SMS carried between them without Kannel: the card's FETCHed requests and Proofs of Receipt
// go to Service::handle_mo_sms, the backend's due MT messages go into the card by ENVELOPE.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>

#include "card_fixture.hpp"
#include "kek.hpp"
#include "process.hpp"
#include "service.hpp"
#include "sqlite_store.hpp"

namespace otac::applet::test {

/// A backend Service on a fresh SQLite database, with its clock at `clock` (2026-09-21T14:13:20Z).
/// restart() destroys the Service and opens a new one on the same database, as a process
/// restart would.
struct ServiceBackend {
  TempDir dir;
  std::shared_ptr<const backend::Kek> kek =
      std::make_shared<const backend::Kek>(backend::Kek::from_bytes(SecretBytes(Bytes(32, 0x42))));
  backend::UnixTime clock = 1'790'000'000;
  backend::ServiceConfig cfg;
  std::unique_ptr<backend::Service> svc;

  explicit ServiceBackend(std::uint16_t list_size) : ServiceBackend(config_with(list_size)) {}
  explicit ServiceBackend(backend::ServiceConfig config) : cfg(std::move(config)) { restart(); }

  std::filesystem::path db() const { return dir.path / "otac.db"; }
  void restart() {
    svc.reset();
    svc = std::make_unique<backend::Service>(cfg, [this] { return backend::open_sqlite_store(db(), kek); },
                                             [this] { return clock; });
  }
  static backend::ServiceConfig config_with(std::uint16_t list_size) {
    backend::ServiceConfig c;
    c.currencies = backend::load_iso4217().value();
    c.server_msisdn = kServer;
    c.list_size = list_size;
    return c;
  }
};

/// ACTIVATE data for a card enrolled at the backend (PUK 87654321), with extra TLVs appended.
inline Bytes activation_data(const backend::Enrollment& e, const Bytes& extra = {}) {
  Bytes d;
  put(d, hex("DF41"), e.n);
  put(d, hex("DF44"), Bytes(e.k.view().begin(), e.k.view().end()));
  put(d, hex("DF45"), Bytes{static_cast<std::uint8_t>(e.algorithm == backend::Algorithm::des3 ? 1 : 2)});
  put(d, hex("DF46"), to_bytes(kServer));
  put(d, hex("DF47"), pin_block("87654321"));
  append(d, extra);
  return d;
}

/// The authorization request a terminal builds from the card's AUTHENTICATE answer (tag 77).
/// Empty when the answer lacks a field.
inline std::optional<backend::AuthRequest> request_from_answer(const Bytes& answer, const Bytes& challenge,
                                                               const std::string& txn) {
  auto nodes = tlv::parse(answer);
  if (!nodes) return std::nullopt;
  const tlv::Node* t = tlv::find(*nodes, 0x77);
  if (!t) return std::nullopt;
  auto get = [&](tlv::Tag tag, std::size_t len) -> const Bytes* {
    const tlv::Node* n = tlv::find(t->children, tag);
    return n && n->value.size() == len ? &n->value : nullptr;
  };
  const Bytes *n = get(0xDF41, 8), *list = get(0xDF42, 2), *index = get(0xDF43, 2), *atc = get(0x9F36, 2),
              *mac = get(0x9F26, 8), *pin = get(0xDF35, 1);
  if (!n || !list || !index || !atc || !mac || !pin) return std::nullopt;
  auto u16 = [](const Bytes& v) { return static_cast<std::uint16_t>(v[0] << 8 | v[1]); };
  backend::AuthRequest req;
  req.txn_id = txn;
  req.card = *n;
  req.list_id = u16(*list);
  req.index = u16(*index);
  req.atc = u16(*atc);
  req.pin_state = pin->at(0);
  req.challenge = challenge;
  req.cryptogram = *mac;
  return req;
}

/// The MO SMS the phone sends for a FETCHed SEND SHORT MESSAGE; empty if it does not parse.
inline std::optional<backend::MoSms> mo_from_fetch(const Bytes& fetched, const std::string& from = kPhone) {
  auto ssm = sms::parse_send_short_message(fetched);
  if (!ssm) return std::nullopt;
  auto sub = sms::parse_submit(ssm->tpdu);
  if (!sub) return std::nullopt;
  return backend::MoSms{from, sub->to, sub->udh, sub->payload};
}

/// Messages carried by pump: MO requests, MT packets, Proofs of Receipt.
struct PumpCounts {
  int mo = 0, mt = 0, por = 0;
};

/// Carries SMS both ways until nothing moves (at most 10 rounds of 10 FETCHes each).
inline PumpCounts pump(Card& c, ServiceBackend& b) {
  PumpCounts n;
  for (int round = 0; round < 10; ++round) {
    bool moved = false;
    for (int i = 0; i < 10; ++i) {
      auto f = c.tx("8012000000");
      if (f.sw == 0x6A88) break;
      REQUIRE(f.sw == 0x9000);
      auto mo = mo_from_fetch(f.data);
      REQUIRE(mo);
      auto r = b.svc->handle_mo_sms(*mo);
      INFO((r.ok() ? std::string() : r.error().message));
      REQUIRE(r.ok());
      ++n.mo;
      moved = true;
    }
    auto due = b.svc->next_due(100);
    REQUIRE(due.ok());
    for (const auto& m : *due) {
      REQUIRE(m.to == kPhone);
      auto r = c.tx(envelope(m.udh, m.payload));
      REQUIRE(r.sw == 0x9000);
      REQUIRE(b.svc->mark_sent(m.id, "202 Accepted"));
      ++n.mt;
      moved = true;
      if (r.data.empty()) continue;
      auto pr = b.svc->handle_mo_sms(backend::MoSms{kPhone, kServer, hex("7100"), r.data});
      INFO((pr.ok() ? std::string() : pr.error().message));
      REQUIRE(pr.ok());
      ++n.por;
    }
    if (!moved) break;
  }
  return n;
}

}  // namespace otac::applet::test
