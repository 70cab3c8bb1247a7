// tap_latency: tap-to-decision latency through the configured reader and backend (built,
// not run in CI). Each tap runs the real flow (SELECT, AUTHENTICATE, POST, CONFIRM) with the
// card left in the field; latency runs from "card detected" to "decision shown".
//
//   tap_latency --config FILE [--taps N (1000)] [--amount 1.00] [--gap-ms MS (0)]
//
// --gap-ms pauses between taps (outside the measured interval): one card tapped back to back
// uses codes faster than lists of 120 arrive by SMS, and a card without codes is not what is
// being measured.
//
// Prints p50, p99 and max latency, APDU exchanges per tap, and the decisions seen. Exit 0
// when every tap got a decision from the backend (approved or declined by it), else 1.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "otac/common/crypto.hpp"
#include "terminal/backend_json.hpp"
#include "terminal/backend_link.hpp"
#include "terminal/config.hpp"
#include "terminal/driver.hpp"

using namespace otac;
using namespace otac::terminal;

int main(int argc, char** argv) {
  std::string config;
  long taps = 1000;
  std::string amount_text = "1.00";
  long gap_ms = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help") {
      std::cout << "tap_latency - tap-to-decision latency through the real reader and backend (a benchmark)\n\n"
                   "usage: tap_latency --config FILE [--taps N] [--amount 1.00] [--gap-ms MS]\n\n"
                   "  --config FILE  an otac-terminal config (reader, backend URL, certificates)\n"
                   "  --taps N       transactions to run, 1..1000000 (default 1000)\n"
                   "  --amount A     amount of each purchase (default 1.00)\n"
                   "  --gap-ms MS    pause between taps, outside the measurement, 0..60000 (default 0)\n\n"
                   "Every tap runs SELECT, AUTHENTICATE, the POST to the backend and CONFIRM with the card\n"
                   "left in the field, and is timed from card detected to decision shown. Prints p50, p99\n"
                   "and max latency, APDU exchanges per tap and the decisions. Exit 0 when every tap got\n"
                   "a decision from the backend, 1 otherwise, 2 usage error. bench/tap_latency.sh runs it\n"
                   "against the whole system on loopback.\n";
      return 0;
    }
    if (a == "--config" && i + 1 < argc) config = argv[++i];
    else if (a == "--taps" && i + 1 < argc) taps = std::strtol(argv[++i], nullptr, 10);
    else if (a == "--amount" && i + 1 < argc) amount_text = argv[++i];
    else if (a == "--gap-ms" && i + 1 < argc) gap_ms = std::strtol(argv[++i], nullptr, 10);
    else {
      std::cerr << "usage: tap_latency --config FILE [--taps N] [--amount 1.00] [--gap-ms MS]\n";
      return 2;
    }
  }
  if (config.empty() || taps < 1 || taps > 1000000 || gap_ms < 0 || gap_ms > 60000) {
    std::cerr << "usage: tap_latency --config FILE [--taps N (1..1000000)] [--amount 1.00] [--gap-ms MS (0..60000)]\n";
    return 2;
  }
  auto cfg = load_config(config);
  if (!cfg) { std::cerr << "tap_latency: " << cfg.error().message << "\n"; return 2; }
  auto amount = parse_amount(amount_text, cfg->currency_exponent);
  if (!amount) { std::cerr << "tap_latency: " << amount.error().message << "\n"; return 2; }
  auto http = BackendLink::create(*cfg);
  if (!http) { std::cerr << "tap_latency: " << http.error().message << "\n"; return 1; }
  auto reader = open_reader(cfg->reader);
  if (!reader) { std::cerr << "tap_latency: " << reader.error().message << "\n"; return 1; }
  DriverIo io;
  io.reader = reader->get();
  io.post = [&](const std::string& body) { return (*http)->post("/v1/authorizations", body); };
  io.poll = [&](const std::string& txn, unsigned w) { return (*http)->poll(txn, w); };
  DriverLimits lim;
  lim.card_wait = std::chrono::milliseconds(cfg->card_wait_ms);
  lim.apdu_timeout = std::chrono::milliseconds(cfg->apdu_timeout_ms);
  lim.removal_wait = std::chrono::milliseconds(0);
  lim.held_limit = std::chrono::seconds(0);
  std::vector<double> lat, backend_lat, card_lat;
  std::map<std::string, long> decisions;
  long apdus = 0, backend_decided = 0;
  const std::string run_id = to_hex(crypto::random_bytes(4));
  for (long i = 0; i < taps; ++i) {
    if (gap_ms > 0 && i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
    (void)(*http)->warm();  // as otac-terminal --loop does between taps, outside the measurement
    TxnParams p;
    p.txn_id = cfg->terminal_id + "-bench-" + run_id + "-" + std::to_string(i);
    p.terminal_id = cfg->terminal_id;
    p.mode = cfg->door_mode ? Mode::door : Mode::pos;
    p.amount = cfg->door_mode ? 0 : *amount;
    p.currency = cfg->currency;
    p.door_id = cfg->door_mode ? cfg->door_id : "";
    p.txn_type = cfg->door_mode ? 0x90 : 0x00;
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    p.year = tm.tm_year + 1900; p.month = tm.tm_mon + 1; p.day = tm.tm_mday;
    p.hour = tm.tm_hour; p.minute = tm.tm_min; p.second = tm.tm_sec;
    Flow flow(p, [](std::size_t n) { return crypto::random_bytes(n); });
    TapTimes times;
    const Outcome o = run_flow(flow, io, lim, &times);
    if (times.tap_to_decision_ms >= 0) {
      lat.push_back(times.tap_to_decision_ms);
      backend_lat.push_back(times.backend_ms);
      card_lat.push_back(times.card_ms);
    }
    apdus += o.apdu_exchanges;
    const std::string key = std::string(decision_name(o.decision)) + "/" + o.reason;
    ++decisions[key];
    // A decision by the backend: anything but the terminal's own failure reasons.
    if (o.reason != "no_card" && o.reason.rfind("card_", 0) != 0 && o.reason.rfind("backend_", 0) != 0 &&
        o.reason != "malformed_answer" && o.reason != "internal" && o.reason != "no_codes")
      ++backend_decided;
  }
  // The slowest taps, by where their time went (before the sort breaks the pairing).
  std::vector<std::size_t> order(lat.size());
  for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return lat[x] > lat[y]; });
  double slow_backend = 0, slow_card = 0, slow_total = 0;
  const std::size_t slow_n = std::max<std::size_t>(1, lat.size() / 100);
  for (std::size_t k = 0; k < std::min(slow_n, order.size()); ++k) {
    slow_total += lat[order[k]];
    slow_backend += backend_lat[order[k]];
    slow_card += card_lat[order[k]];
  }
  std::sort(lat.begin(), lat.end());
  std::sort(backend_lat.begin(), backend_lat.end());
  std::sort(card_lat.begin(), card_lat.end());
  auto pct_of = [](const std::vector<double>& v, double q) {
    if (v.empty()) return -1.0;
    const auto idx = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(idx, v.size() - 1)];
  };
  auto pct = [&](double q) { return pct_of(lat, q); };
  std::printf("taps: %ld through %s and https://%s (%d TLS connection(s), %d resumed)\n", taps,
              (*reader)->name().c_str(), (*http)->client().where().c_str(), (*http)->client().connections_opened(),
              (*http)->client().sessions_resumed());
  std::printf("tap-to-decision latency: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%zu samples)\n", pct(0.50), pct(0.99),
              lat.empty() ? -1.0 : lat.back(), lat.size());
  std::printf("  of which the backend (POST to answer): p50 %.2f ms, p99 %.2f ms; the card (APDUs): p50 %.2f ms, p99 %.2f ms\n",
              pct_of(backend_lat, 0.50), pct_of(backend_lat, 0.99), pct_of(card_lat, 0.50), pct_of(card_lat, 0.99));
  if (!order.empty())
    std::printf("  the slowest 1%% (%zu taps): mean %.2f ms, of which backend %.2f ms, card %.2f ms\n", slow_n,
                slow_total / static_cast<double>(slow_n), slow_backend / static_cast<double>(slow_n),
                slow_card / static_cast<double>(slow_n));
  std::printf("APDU exchanges per tap: %.2f\n", static_cast<double>(apdus) / static_cast<double>(taps));
  for (const auto& [k, v] : decisions) std::printf("  %-40s %ld\n", k.c_str(), v);
  return backend_decided == taps ? 0 : 1;
}
