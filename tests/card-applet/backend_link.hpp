// The applet next to the real backend service (in-process, SQLite in a temp dir), and the
// SMS carried between them without Kannel: the card's FETCHed requests and Proofs of Receipt
// go to Service::handle_mo_sms, the backend's due MT messages go into the card by ENVELOPE.
#pragma once

#include <filesystem>
#include <memory>

#include "card_fixture.hpp"
#include "kek.hpp"
#include "process.hpp"
#include "service.hpp"
#include "sqlite_store.hpp"

namespace otac::applet::test {

/// A backend Service on a fresh SQLite database, with its clock at `clock` (2026-09-21T14:13:20Z).
struct ServiceBackend {
  TempDir dir;
  std::shared_ptr<const backend::Kek> kek =
      std::make_shared<const backend::Kek>(backend::Kek::from_bytes(SecretBytes(Bytes(32, 0x42))));
  backend::UnixTime clock = 1'790'000'000;
  std::unique_ptr<backend::Service> svc;

  explicit ServiceBackend(std::uint16_t list_size) {
    backend::ServiceConfig cfg;
    cfg.server_msisdn = kServer;
    cfg.list_size = list_size;
    cfg.currencies = backend::load_iso4217().value();
    svc = std::make_unique<backend::Service>(cfg, [this] { return backend::open_sqlite_store(dir.path / "otac.db", kek); },
                                             [this] { return clock; });
  }
};

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
      auto ssm = sms::parse_send_short_message(f.data);
      REQUIRE(ssm.ok());
      auto sub = sms::parse_submit(ssm->tpdu);
      REQUIRE(sub.ok());
      auto r = b.svc->handle_mo_sms(backend::MoSms{kPhone, sub->to, sub->udh, sub->payload});
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
