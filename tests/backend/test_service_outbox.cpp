// The SMS outbox pump (backend/service/sms_outbox.hpp) with an in-process gateway: retries
// with exponential backoff on the injected clock, hand-over in queue order, nothing lost or
// sent twice. Kannel itself is tested for real in test_server_kannel.cpp.
#include <catch2/catch.hpp>

#include <deque>

#include "sms_outbox.hpp"
#include "test_service_support.hpp"

using namespace otac;
using namespace otac::backend;
using otac::backend::test::Env;

namespace {

// A gateway whose answers the test scripts: each send takes the next scripted answer (true =
// accepted) and records what it was given.
struct ScriptedGateway final : SmsGateway {
  std::deque<bool> answers;
  std::vector<OutboxMessage> seen;
  Result<std::string> send(const OutboxMessage& m) override {
    seen.push_back(m);
    const bool ok = !answers.empty() && answers.front();
    if (!answers.empty()) answers.pop_front();
    if (!ok) return make_error(Errc::io, "gateway down");
    return std::string("0: Accepted for delivery");
  }
};

// A new card with one list queued as SMS (the Service queues it; no gateway has seen it yet);
// returns the outbox depth.
std::uint32_t queue_a_list(Env& env, const char* msisdn = "+4915550001") {
  EnrollRequest er;
  er.msisdn = msisdn;
  auto e = env.svc->enroll_card(er, "admin").value();
  REQUIRE(env.svc->refresh_card(e.n, "admin"));
  auto m = env.svc->metrics();
  REQUIRE(m);
  REQUIRE(m->outbox_depth > 0);
  return m->outbox_depth;
}

}  // namespace

TEST_CASE("outbox backoff doubles from the base and stops at the maximum") {
  OutboxPumpConfig c;
  c.retry_base = std::chrono::seconds(2);
  c.retry_max = std::chrono::seconds(30);
  CHECK(backoff(c, 0).count() == 2);
  CHECK(backoff(c, 1).count() == 4);
  CHECK(backoff(c, 3).count() == 16);
  CHECK(backoff(c, 4).count() == 30);
  CHECK(backoff(c, 1000).count() == 30);
}

TEST_CASE("outbox pump: a refused message waits for its backoff on the injected clock, then goes out once") {
  Env env;
  const std::uint32_t queued = queue_a_list(env);
  ScriptedGateway gw;
  OutboxPumpConfig pc;
  pc.retry_base = std::chrono::seconds(10);
  pc.retry_max = std::chrono::seconds(25);
  pc.batch = 64;
  std::vector<PumpEvent> events;
  OutboxPump pump(*env.svc, gw, pc, [&env] { return env.clock; }, [&events](const PumpEvent& e) { events.push_back(e); });

  // Gateway down: every message is refused and rescheduled 10 s later.
  CHECK(pump.drain_once() == 0);
  REQUIRE(gw.seen.size() == queued);
  REQUIRE(events.size() == queued);
  for (const auto& e : events) {
    CHECK(e.kind == PumpEvent::Kind::retry);
    CHECK(e.attempt == 1);
    CHECK(e.retry_in.count() == 10);
    CHECK(e.reply == "gateway down");
  }
  // Not due yet: nothing is offered again before the clock reaches the retry time.
  env.clock += 9;
  CHECK(pump.drain_once() == 0);
  CHECK(gw.seen.size() == queued);
  // Due: refused again, now 20 s later; then 25 s (the maximum).
  env.clock += 1;
  CHECK(pump.drain_once() == 0);
  CHECK(gw.seen.size() == 2 * queued);
  CHECK(events.back().retry_in.count() == 20);
  env.clock += 20;
  CHECK(pump.drain_once() == 0);
  CHECK(events.back().retry_in.count() == 25);
  CHECK(events.back().attempt == 3);

  // The gateway is back: each message is handed over exactly once, in queue order.
  gw.answers.assign(queued, true);
  gw.seen.clear();
  env.clock += 25;
  CHECK(pump.drain_once() == queued);
  REQUIRE(gw.seen.size() == queued);
  for (std::size_t i = 1; i < gw.seen.size(); ++i) CHECK(gw.seen[i - 1].id < gw.seen[i].id);
  CHECK(events.back().kind == PumpEvent::Kind::sent);
  CHECK(events.back().attempt == 4);
  CHECK(env.svc->metrics()->outbox_depth == 0);
  env.clock += 1000;
  CHECK(pump.drain_once() == 0);
  CHECK(gw.seen.size() == queued);  // nothing goes out twice
}

TEST_CASE("outbox pump thread: wake() hands a queued message over without waiting for the poll") {
  Env env;
  ScriptedGateway gw;
  const std::uint32_t first = queue_a_list(env);
  gw.answers.assign(first, false);  // the first pass refuses the first card's messages...
  gw.answers.insert(gw.answers.end(), 64, true);
  OutboxPumpConfig pc;
  pc.poll = std::chrono::hours(1);        // ...and only wake() can make the thread look again
  pc.retry_base = std::chrono::hours(1);  // (the refused ones are not due again meanwhile)
  std::mutex mu;
  std::condition_variable cv;
  std::uint32_t retried = 0, sent = 0;
  OutboxPump pump(*env.svc, gw, pc, [&env] { return env.clock; }, [&](const PumpEvent& e) {
    std::lock_guard lock(mu);
    if (e.kind == PumpEvent::Kind::retry) ++retried;
    if (e.kind == PumpEvent::Kind::sent) ++sent;
    cv.notify_all();
  });
  pump.start();
  std::unique_lock lock(mu);
  const bool first_pass = cv.wait_for(lock, std::chrono::seconds(10), [&] { return retried == first; });
  lock.unlock();
  // The thread now waits for its hour-long poll; a second card's list is queued and woken for.
  const std::uint32_t second = first_pass ? queue_a_list(env, "+4915550002") - first : 0;
  pump.wake();
  lock.lock();
  const bool woken = cv.wait_for(lock, std::chrono::seconds(10), [&] { return sent == second; });
  lock.unlock();
  pump.stop();
  REQUIRE(first_pass);
  CHECK(second > 0);
  CHECK(woken);
  CHECK(env.svc->metrics()->outbox_depth == first);  // the refused ones wait for their retry time
}
