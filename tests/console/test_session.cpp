// Session table, CSRF check and HTTP helpers of the console.
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "router.hpp"
#include "session.hpp"

using namespace otac::backend;
using namespace otac::backend::console;

TEST_CASE("sessions: random ids and CSRF tokens, idle and absolute expiry") {
  UnixTime clock = 1000;
  SessionLimits lim;
  lim.idle = std::chrono::seconds(60);
  lim.absolute = std::chrono::seconds(150);
  SessionStore store(lim, [&] { return clock; });

  auto a = store.create("alice", Role::operator_);
  REQUIRE(a);
  CHECK(a->id.size() == 64);
  CHECK(a->session.csrf.size() == 64);
  CHECK(a->id != a->session.csrf);
  CHECK(a->session.expires_at == 1060);

  auto b = store.create("bob", Role::viewer);
  REQUIRE(b);
  CHECK(b->id != a->id);
  CHECK(b->session.csrf != a->session.csrf);

  SECTION("a touch restarts the idle timer, up to the absolute limit") {
    clock = 1050;
    auto s = store.touch(a->id);
    REQUIRE(s);
    CHECK(s->operator_name == "alice");
    CHECK(s->role == Role::operator_);
    CHECK(s->expires_at == 1110);
    clock = 1100;
    REQUIRE(store.touch(a->id));
    clock = 1140;
    auto late = store.touch(a->id);
    REQUIRE(late);
    CHECK(late->expires_at == 1150);  // created 1000 + absolute 150
    clock = 1150;
    CHECK_FALSE(store.touch(a->id));
  }
  SECTION("background polling does not keep an unattended session alive") {
    clock = 1050;
    auto s = store.touch(a->id, false);
    REQUIRE(s);
    CHECK(s->expires_at == 1060);
    clock = 1059;
    REQUIRE(store.touch(a->id, false));
    clock = 1060;
    CHECK_FALSE(store.touch(a->id, false));
  }
  SECTION("an idle session expires and is dropped") {
    clock = 1060;
    CHECK_FALSE(store.touch(a->id));
    CHECK(store.size() == 0);  // bob expired too
  }
  SECTION("sign-out ends only that session") {
    CHECK(store.destroy(a->id));
    CHECK_FALSE(store.touch(a->id));
    CHECK(store.touch(b->id));
    CHECK_FALSE(store.destroy(a->id));
  }
  SECTION("unknown, truncated and altered ids are refused") {
    CHECK_FALSE(store.touch(""));
    CHECK_FALSE(store.touch(a->id.substr(0, 63)));
    std::string altered = a->id;
    altered[10] = altered[10] == '0' ? '1' : '0';
    CHECK_FALSE(store.touch(altered));
    CHECK_FALSE(store.touch(a->session.csrf));  // the CSRF token is not a session id
  }
}

TEST_CASE("sessions: the table is bounded") {
  SessionLimits lim;
  lim.max_sessions = 3;
  UnixTime clock = 0;
  SessionStore store(lim, [&] { return clock; });
  for (int i = 0; i < 3; ++i) REQUIRE(store.create("op" + std::to_string(i), Role::viewer));
  auto full = store.create("op3", Role::viewer);
  REQUIRE_FALSE(full);
  CHECK(full.error().code == otac::Errc::state);
  clock = lim.idle.count();  // all three expire; room again
  CHECK(store.create("op3", Role::viewer));
}

TEST_CASE("sessions: one operator's sign-ins replace their own oldest session") {
  SessionLimits lim;
  lim.max_per_operator = 3;
  UnixTime clock = 100;
  SessionStore store(lim, [&] { return clock; });
  auto other = store.create("bob", Role::viewer);
  REQUIRE(other);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ++clock;
    auto s = store.create("alice", Role::viewer);
    REQUIRE(s);
    ids.push_back(s->id);
  }
  ++clock;
  auto fourth = store.create("alice", Role::viewer);
  REQUIRE(fourth);
  CHECK_FALSE(store.touch(ids[0]));  // the oldest was ended
  CHECK(store.touch(ids[1]));
  CHECK(store.touch(ids[2]));
  CHECK(store.touch(fourth->id));
  CHECK(store.touch(other->id));  // another operator's session is untouched
  CHECK(store.size() == 4);
  for (int i = 0; i < 1000; ++i) REQUIRE(store.create("alice", Role::viewer));
  CHECK(store.size() == 4);
  CHECK(store.touch(other->id));
}

TEST_CASE("sessions: viewers filling their share never shut out an operator or an admin") {
  SessionLimits lim;
  lim.max_sessions = 50;
  lim.max_per_operator = 8;
  UnixTime clock = 0;
  SessionStore store(lim, [&] { return clock; });
  int refused = 0;
  for (int i = 0; i < 1000; ++i) {
    if (!store.create("viewer" + std::to_string(i % 200), Role::viewer)) ++refused;
  }
  CHECK(refused > 0);  // the viewers' share is full
  CHECK(store.size() == 50);
  auto admin = store.create("ada", Role::admin);
  REQUIRE(admin);
  CHECK(admin->session.role == Role::admin);
  CHECK(store.create("otto", Role::operator_));
  CHECK(store.size() == 52);
}

TEST_CASE("sessions: 200 ids are distinct") {
  SessionStore store;
  std::set<std::string> ids;
  for (int i = 0; i < 200; ++i) ids.insert(store.create("op", Role::viewer)->id);
  CHECK(ids.size() == 200);
}

TEST_CASE("csrf: only the session's exact token passes") {
  Session s;
  s.csrf = std::string(64, 'a');
  CHECK(csrf_ok(s, std::string_view(s.csrf)));
  CHECK_FALSE(csrf_ok(s, std::nullopt));
  CHECK_FALSE(csrf_ok(s, std::string_view("")));
  CHECK_FALSE(csrf_ok(s, std::string_view(std::string(63, 'a'))));
  CHECK_FALSE(csrf_ok(s, std::string_view(std::string(63, 'a') + "b")));
  Session empty;
  CHECK_FALSE(csrf_ok(empty, std::string_view("")));
  CHECK(is_state_changing("POST"));
  CHECK(is_state_changing("DELETE"));
  CHECK(is_state_changing("PUT"));
  CHECK_FALSE(is_state_changing("GET"));
  CHECK_FALSE(is_state_changing("HEAD"));
}

TEST_CASE("http helpers: cookies, targets, query parameters") {
  CHECK(cookie_value("a=1; __Host-x=abc ; b=2", "__Host-x") == std::string_view("abc"));
  CHECK(cookie_value("a=1;b=2", "b") == std::string_view("2"));
  CHECK_FALSE(cookie_value("ab=1; xb=2", "b"));
  CHECK_FALSE(cookie_value("", "b"));
  CHECK_FALSE(cookie_value("b", "b"));
  // The console's targets are split by the server's router (one parser for the whole API).
  std::string path;
  std::map<std::string, std::string> query;
  REQUIRE(otac::backend::http::split_target("/console/api/x?card=01&limit=5", path, query));
  CHECK(path == "/console/api/x");
  CHECK(query.at("card") == "01");
  CHECK(query.at("limit") == "5");
  REQUIRE(otac::backend::http::split_target("/console/api/x?terminal=T%20X+1&flag", path, query));
  CHECK(query.at("terminal") == "T X 1");
  CHECK(query.at("flag").empty());
  CHECK_FALSE(otac::backend::http::split_target("/a?a=%zz", path, query));
  CHECK_FALSE(otac::backend::http::split_target("/a?a=%4", path, query));
  CHECK_FALSE(otac::backend::http::split_target("/a?a=%", path, query));
}
