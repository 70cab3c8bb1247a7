// Transaction policy of the service: transaction types (9C), currencies (ISO 4217), the global
// maximum amount, door windows across midnight and in a door's time zone, and changing a
// card's settings after enrollment.
#include <catch2/catch.hpp>

#include <date/date.h>

#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::Ch;
using otac::backend::test::Env;

namespace {

struct Card : backend::test::IssuedCard {
  std::uint16_t next = 0;  ///< the card's next unused code
};

Card setup(Env& env, EnrollRequest er = {}, std::int64_t terminal_limit = 0) {
  return Card{backend::test::enroll_issued(env, std::move(er), terminal_limit)};
}

// A tap with the card's next code.
AuthAnswer tap(Env& env, Card& c, const Ch& ch) {
  const std::uint16_t i = c.next++;
  auto a = env.svc->authorize(backend::test::card_request("T" + std::to_string(i), c.n, Algorithm::des3, c.list, i, c.codes[i], ch),
                              "TERM0001");
  REQUIRE(a);
  return *a;
}

Ch pos(const char* amount = "000000001234", const char* currency = "0978", std::uint8_t type = 0x00) {
  Ch ch;
  ch.amount = hex(amount);
  ch.currency = hex(currency);
  ch.type = type;
  return ch;
}

Ch door(const std::string& id, std::optional<std::uint8_t> type = std::nullopt) {
  Ch ch;
  ch.mode = 2;
  ch.amount = hex("000000000000");
  ch.door = id;
  ch.type = type;
  return ch;
}

UnixTime utc(int y, unsigned mo, unsigned d, int h, int mi) {
  const auto days = date::sys_days{date::year{y} / date::month{mo} / date::day{d}};
  return days.time_since_epoch().count() * 86400 + h * 3600 + mi * 60;
}

}  // namespace

TEST_CASE("policy: the ISO 4217 list from iso-codes") {
  auto t = load_iso4217();
  REQUIRE(t);
  // ISO 4217: EUR 978, USD 840, JPY 392, CHF 756, XOF 952 (CFA franc); 000 is unassigned,
  // 999 is XXX "no currency", 963 XTS is for testing, 959 XAU is gold.
  CHECK(t->resolve("EUR").value() == 978);
  CHECK(t->resolve("USD").value() == 840);
  CHECK(t->resolve("392").value() == 392);
  CHECK(t->contains(756));
  CHECK_FALSE(t->contains(0));
  CHECK_FALSE(t->contains(999));
  CHECK_FALSE(t->contains(963));
  CHECK_FALSE(t->contains(959));
  CHECK(t->contains(952));
  CHECK_FALSE(t->resolve("XXX"));
  CHECK_FALSE(t->resolve("eur"));
  CHECK_FALSE(t->resolve("0999"));
  CHECK_FALSE(t->resolve(""));
  CHECK(t->size() > 150);

  CHECK_FALSE(parse_iso4217(""));
  CHECK_FALSE(parse_iso4217("{}"));
  CHECK_FALSE(parse_iso4217(R"({"4217": []})"));
  CHECK_FALSE(parse_iso4217(R"({"4217": [{"alpha_3": "EUR"}]})"));
  CHECK_FALSE(parse_iso4217(R"({"4217": [{"alpha_3": "EUR", "numeric": "97"}]})"));
  CHECK_FALSE(parse_iso4217(R"({"4217": [{"alpha_3": "eur", "numeric": "978"}]})"));
  CHECK_FALSE(parse_iso4217(R"({"4217": [{"alpha_3": "EUR", "numeric": "978"}, {"alpha_3": "EUX", "numeric": "978"}]})"));
  CHECK(parse_iso4217(R"({"4217": [{"alpha_3": "EUR", "numeric": "978", "name": "Euro"}]})"));
  CHECK_FALSE(parse_iso4217(R"({"4217": [{"alpha_3": "XXX", "numeric": "999"}]})"));  // nothing left
  auto missing = load_iso4217("/nonexistent/iso_4217.json");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find("iso-codes") != std::string::npos);
}

TEST_CASE("policy: only purchases (9C 00) are approvable at a POS, cash and refunds decline") {
  Env env;
  Card c = setup(env);
  CHECK(tap(env, c, pos()).reason == "ok");
  for (const int type : {0x01, 0x20, 0x90, 0x09}) {
    INFO("9C " << int(type));
    auto a = tap(env, c, pos("000000001234", "0978", static_cast<std::uint8_t>(type)));
    CHECK(a.decision == Decision::declined);
    CHECK(a.reason == "type_not_allowed");
    CHECK(a.auth_code.empty());
  }
  // A door tap must say door entry (90).
  REQUIRE(env.svc->update_card_settings(c.n, CardSettings{.doors = std::vector<DoorPermission>{{"D1", 0, 1440, "UTC"}}}, "admin"));
  CHECK(tap(env, c, door("D1")).reason == "ok");
  CHECK(tap(env, c, door("D1", 0x00)).reason == "type_not_allowed");
}

TEST_CASE("policy: currencies must be ISO 4217 and the card's own") {
  Env env;
  SECTION("a card enrolled without a currency gets the backend's default") {
    Card c = setup(env);
    CHECK(env.svc->card(c.n)->currency == 978);
    CHECK(tap(env, c, pos("000000001234", "0978")).reason == "ok");
    CHECK(tap(env, c, pos("000000001234", "0840")).reason == "currency_not_allowed");
    CHECK(tap(env, c, pos("000000001234", "0000")).reason == "invalid_currency");
    CHECK(tap(env, c, pos("000000001234", "0999")).reason == "invalid_currency");
  }
  SECTION("a card enrolled in USD") {
    EnrollRequest er;
    er.currency = 840;
    er.limit_minor = 5000;
    Card c = setup(env, er);
    CHECK(tap(env, c, pos("000000001234", "0840")).reason == "ok");
    CHECK(tap(env, c, pos("000000001234", "0978")).reason == "currency_not_allowed");
    CHECK(tap(env, c, pos("000000006000", "0840")).reason == "card_limit");
  }
  SECTION("a terminal limit is in the default currency: other currencies are refused there") {
    EnrollRequest er;
    er.currency = 840;
    Card c = setup(env, er, 100000);
    CHECK(tap(env, c, pos("000000001234", "0840")).reason == "currency_not_allowed");
  }
  SECTION("enrollment refuses a currency that is not ISO 4217") {
    EnrollRequest er;
    er.msisdn = "+4915550001";
    er.currency = 999;
    auto e = env.svc->enroll_card(er, "admin");
    REQUIRE_FALSE(e);
    CHECK(e.error().code == Errc::bad_value);
  }
  SECTION("without a currency list nothing is approved") {
    env.config.currencies = CurrencyTable{};
    env.svc = std::make_unique<Service>(env.config, [&env] { return open_sqlite_store(env.db, env.kek); },
                                        [&env] { return env.clock; });
    Card c = setup(env);
    CHECK(tap(env, c, pos()).reason == "invalid_currency");
  }
}

TEST_CASE("policy: a global maximum amount, configurable") {
  Env env;
  Card c = setup(env);
  auto a = tap(env, c, pos("999999999999"));
  CHECK(a.decision == Decision::declined);
  CHECK(a.reason == "amount_too_large");
  CHECK(a.arc == to_bytes("51"));
  CHECK(tap(env, c, pos("000010000000")).reason == "ok");  // the default maximum itself
  CHECK(tap(env, c, pos("000010000001")).reason == "amount_too_large");
  env.config.max_amount_minor = 500;
  env.svc = std::make_unique<Service>(env.config, [&env] { return open_sqlite_store(env.db, env.kek); },
                                      [&env] { return env.clock; });
  CHECK(tap(env, c, pos("000000000501")).reason == "amount_too_large");
  CHECK(tap(env, c, pos("000000000500")).reason == "ok");
}

TEST_CASE("policy: door windows across midnight") {
  Env env(60);
  EnrollRequest er;
  er.doors = {{"NIGHT", 22 * 60, 6 * 60, "UTC"}, {"DAY", 8 * 60, 18 * 60, "UTC"}, {"LATE", 20 * 60, 0, "UTC"}};
  Card c = setup(env, er);
  struct Case { int h, mi; const char* night; const char* day; const char* late; };
  for (const Case& k : {Case{22, 13, "ok", "outside_hours", "ok"}, Case{23, 59, "ok", "outside_hours", "ok"},
                        Case{0, 0, "ok", "outside_hours", "outside_hours"}, Case{5, 59, "ok", "outside_hours", "outside_hours"},
                        Case{6, 0, "outside_hours", "outside_hours", "outside_hours"},
                        Case{12, 0, "outside_hours", "ok", "outside_hours"}, Case{21, 59, "outside_hours", "outside_hours", "ok"}}) {
    INFO(k.h << ":" << k.mi);
    env.clock = utc(2023, 11, 14, k.h, k.mi);
    CHECK(tap(env, c, door("NIGHT")).reason == k.night);
    CHECK(tap(env, c, door("DAY")).reason == k.day);
    CHECK(tap(env, c, door("LATE")).reason == k.late);
  }
}

TEST_CASE("policy: door windows in the door's time zone, across the DST changes") {
  // EU summer time (Directive 2000/84/EC) in 2026: from Sunday 29 March 01:00 UTC to Sunday
  // 25 October 01:00 UTC; Europe/Berlin is UTC+1, UTC+2 in summer.
  Env env(60);
  EnrollRequest er;
  er.doors = {{"NIGHT", 22 * 60, 6 * 60, "Europe/Berlin"}, {"DAY", 8 * 60, 17 * 60, "Europe/Berlin"}};
  Card c = setup(env, er);
  struct Case { UnixTime at; const char* night; const char* day; };
  for (const Case& k : {Case{utc(2026, 3, 28, 4, 30), "ok", "outside_hours"},              // 05:30 CET
                        Case{utc(2026, 3, 29, 4, 30), "outside_hours", "outside_hours"},   // 06:30 CEST
                        Case{utc(2026, 3, 29, 0, 59), "ok", "outside_hours"},              // 01:59 CET
                        Case{utc(2026, 3, 29, 1, 0), "ok", "outside_hours"},               // 03:00 CEST
                        Case{utc(2026, 3, 29, 6, 30), "outside_hours", "ok"},              // 08:30 CEST
                        Case{utc(2026, 3, 28, 6, 30), "outside_hours", "outside_hours"},   // 07:30 CET
                        Case{utc(2026, 3, 29, 20, 0), "ok", "outside_hours"},              // 22:00 CEST
                        Case{utc(2026, 10, 24, 4, 30), "outside_hours", "outside_hours"},  // 06:30 CEST
                        Case{utc(2026, 10, 25, 4, 30), "ok", "outside_hours"},             // 05:30 CET
                        Case{utc(2026, 10, 25, 0, 30), "ok", "outside_hours"},             // 02:30 CEST
                        Case{utc(2026, 10, 25, 1, 30), "ok", "outside_hours"},             // 02:30 CET
                        Case{utc(2026, 10, 26, 15, 59), "outside_hours", "ok"},            // 16:59 CET
                        Case{utc(2026, 10, 26, 16, 0), "outside_hours", "outside_hours"}}) {  // 17:00 CET
    INFO(k.at);
    env.clock = k.at;
    CHECK(tap(env, c, door("NIGHT")).reason == k.night);
    CHECK(tap(env, c, door("DAY")).reason == k.day);
  }
}

TEST_CASE("policy: door windows that can never match are refused when configured") {
  auto bad = [](DoorPermission p) {
    std::vector<DoorPermission> v{std::move(p)};
    auto r = validate_doors(v);
    return r ? std::string{} : r.error().message;
  };
  CHECK(bad({"D", 8 * 60, 8 * 60, "UTC"}).find("empty") != std::string::npos);
  CHECK(bad({"D", 0, 0, "UTC"}).find("empty") != std::string::npos);
  CHECK(bad({"D", 1440, 60, "UTC"}).find("window") != std::string::npos);
  CHECK(bad({"D", 0, 1441, "UTC"}).find("window") != std::string::npos);
  CHECK(bad({"D", 0, 1440, "Mars/Olympus"}).find("unknown time zone") != std::string::npos);
  CHECK(bad({"", 0, 1440, "UTC"}).find("door id") != std::string::npos);
  CHECK(bad({"D", 0, 1440, "UTC"}).empty());
  CHECK(bad({"D", 22 * 60, 0, "America/New_York"}).empty());
  std::vector<DoorPermission> twice{{"D", 0, 1440, "UTC"}, {"D", 60, 120, "UTC"}};
  CHECK_FALSE(validate_doors(twice));
  std::vector<DoorPermission> no_zone{{"D", 0, 1440, ""}};
  REQUIRE(validate_doors(no_zone));
  CHECK(no_zone[0].tz == "UTC");

  CHECK(parse_hhmm("22:00") == 1320u);
  CHECK(parse_hhmm("24:00") == 1440u);
  CHECK(parse_hhmm("00:00") == 0u);
  CHECK_FALSE(parse_hhmm("24:01"));
  CHECK_FALSE(parse_hhmm("12:60"));
  CHECK_FALSE(parse_hhmm("1:00"));
  CHECK_FALSE(parse_hhmm("ab:cd"));
  CHECK(format_hhmm(1320) == "22:00");

  Env env;
  EnrollRequest er;
  er.msisdn = "+4915550001";
  er.doors = {{"D", 600, 600, "UTC"}};
  CHECK_FALSE(env.svc->enroll_card(er, "admin"));
}

TEST_CASE("card settings change after enrollment, each change audited with old and new values") {
  Env env;
  Card c = setup(env);
  CHECK(tap(env, c, pos("000000001234")).reason == "ok");

  CardSettings s;
  s.limit_minor = 1000;
  s.review_minor = 500;
  s.threshold = 7;
  s.currency = 840;
  s.doors = std::vector<DoorPermission>{{"BACK", 22 * 60, 6 * 60, "Europe/Berlin"}, {"A-FRONT", 0, 1440, ""}};
  auto r = env.svc->update_card_settings(c.n, s, "alice");
  REQUIRE(r);
  CHECK(r->limit_minor == 1000);
  auto card = env.svc->card(c.n);
  CHECK(card->limit_minor == 1000);
  CHECK(card->review_minor == 500);
  CHECK(card->threshold == 7);
  CHECK(card->currency == 840);
  auto doors = env.svc->card_doors(c.n);
  REQUIRE(doors);
  REQUIRE(doors->size() == 2);
  CHECK(describe_door((*doors)[0]) == "A-FRONT 00:00-24:00 UTC");
  CHECK(describe_door((*doors)[1]) == "BACK 22:00-06:00 Europe/Berlin");

  auto log = env.svc->audit_recent(1);
  REQUIRE(log);
  REQUIRE(log->size() == 1);
  CHECK(log->back().actor == "alice");
  CHECK(log->back().action == "card_settings");
  CHECK(log->back().detail == "card=" + to_hex(c.n) +
                                  " limit_minor=0->1000 review_minor=0->500 threshold=20->7 currency=978->840"
                                  " doors=[]->[A-FRONT 00:00-24:00 UTC, BACK 22:00-06:00 Europe/Berlin]");

  // The new settings rule the next taps.
  CHECK(tap(env, c, pos("000000001234", "0978")).reason == "currency_not_allowed");
  CHECK(tap(env, c, pos("000000001234", "0840")).reason == "card_limit");
  CHECK(tap(env, c, pos("000000000600", "0840")).decision == Decision::held);
  CHECK(tap(env, c, pos("000000000400", "0840")).reason == "ok");

  // Only what is named changes.
  REQUIRE(env.svc->update_card_settings(c.n, CardSettings{.limit_minor = 0}, "bob"));
  CHECK(env.svc->card(c.n)->review_minor == 500);
  CHECK(env.svc->card_doors(c.n)->size() == 2);
  CHECK(env.svc->audit_recent(1)->back().detail == "card=" + to_hex(c.n) + " limit_minor=1000->0");

  // Bad changes are refused and change nothing.
  const auto before = env.svc->audit_recent(1)->back().seq;
  CHECK(env.svc->update_card_settings(c.n, CardSettings{}, "bob").error().code == Errc::bad_value);
  CHECK(env.svc->update_card_settings(c.n, CardSettings{.currency = 999}, "bob").error().code == Errc::bad_value);
  CHECK(env.svc->update_card_settings(c.n, CardSettings{.limit_minor = -1}, "bob").error().code == Errc::bad_value);
  CHECK(env.svc->update_card_settings(c.n, CardSettings{.limit_minor = 5, .doors = std::vector<DoorPermission>{{"X", 60, 60, "UTC"}}},
                                      "bob").error().code == Errc::bad_value);
  CHECK(env.svc->update_card_settings(hex("0000000000000000"), CardSettings{.limit_minor = 5}, "bob").error().code ==
        Errc::not_found);
  CHECK(env.svc->card(c.n)->limit_minor == 0);
  CHECK(env.svc->audit_recent(1)->back().seq == before);
}
