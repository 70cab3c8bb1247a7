// otac-loadgen: benchmark for otac-backend (not run in CI). Speaks HTTPS with a terminal
// client certificate over keep-alive connections, like a fleet of terminals.
//
//   otac-loadgen --data-dir DIR --url https://127.0.0.1:PORT [--url ...] [--connections 16]
//                [--seconds 10] [--rate 0|N] [--codes 60000] [--reference URL] [--no-healthz]
//                [--fill-cards N] [--fill-per-run 2000] [--fill-traffic]
//
// It needs the backend's data directory (admin token, CA, and - as a bench shortcut - the KEK
// and database, to read the codes a real card would hold): it enrolls cards, registers a
// terminal, issues lists, precomputes valid authorization requests, then sends them.
// --rate 0 sends as fast as the connections allow (throughput); --rate N paces the total at N
// requests/s (latency at a fixed rate). --fill-cards N first adds N enrolled cards with one
// used code each straight through the store (fill.hpp), to measure a store as it fills;
// --fill-traffic sends the authorizations to those cards. Each run also measures GET /healthz
// (a trivial handler over the same TLS settings) the same way and prints the ratio. --reference URL first
// drives GET URL (bench/ratio.sh: nginx's static 200 over the same certificate) the same way.
// Only 2xx answers with the expected content count as throughput: an authorization must be
// answered "approved" (every prepared request is valid and fresh); anything else is an error.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "custody.hpp"
#include "fill.hpp"
#include "kek.hpp"
#include "otac/sys/file.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/protocol.hpp"
#include "otac/common/url.hpp"
#include "otac/net/http_client.hpp"
#include "otac/sys/cli.hpp"
#include "otac/sys/log.hpp"
#include "store_open.hpp"

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using namespace otac;           // NOLINT: a program's main file
using namespace otac::backend;  // NOLINT
namespace slog = otac::sys::log;
using Clock = std::chrono::steady_clock;

namespace {

// The text of --help after CLI11's list of the options.
constexpr const char* kHelp = R"(
SYNOPSIS
  otac-loadgen --data-dir DIR --url https://127.0.0.1:PORT [--url ...] [--connections N] [--seconds S]
               [--rate R] [--codes C] [--reference URL] [--no-healthz] [--fill-cards N]
               [--fill-per-run K] [--fill-traffic] [--latency-log FILE]

DESCRIPTION
  Acts as a fleet of terminals: registers a terminal, enrolls cards and issues them lists
  through the operator API (DIR/admin.token, DIR/ca.pem), keeps the terminal's certificate
  and key (0600) in DIR as loadgen-ID.pem/.key, reads the codes a real card would hold
  straight from the backend's store (DIR/kek.bin and the store DIR/otac-backend.conf names,
  SQLite or PostgreSQL: a bench shortcut, so run it only against a throwaway data directory),
  precomputes valid authorizations and sends them over N keep-alive mutual-TLS connections,
  spread round-robin over the nodes when --url is given more than once (same host). Then it sends GET /healthz the same way, as
  the reference for a trivial handler over the same TLS, and prints both and their ratio,
  after the disk's latency for a 4 KiB write + fdatasync in DIR.

  Throughput counts only answers with a 2xx status and the expected content: "decision":
  "approved" for an authorization (each prepared request is valid and used once). Every other
  answer, and every connection or transport failure, is counted as an error. Each phase first
  opens all its connections (TLS handshake, then one GET: the reference URL, or /healthz on
  the backend) and starts its clock when every one is open, so that it measures keep-alive
  requests and not a queue of handshakes. Each phase also prints one machine-readable line:
    phase=NAME rps=R p50_ms=A p99_ms=B ok=N errors=E

OPTIONS
  --data-dir DIR    the backend's data directory (required)
  --url URL         the backend, https://127.0.0.1:PORT (required); give it once per node
  --connections N   concurrent keep-alive connections, 1..4096 (default 16)
  --seconds S       length of each phase, 0.1..86400 (default 10)
  --rate R          0: as fast as the connections allow (throughput, the default);
                    R > 0: paced at R requests/s in total (latency at a fixed rate)
  --codes C         authorizations to prepare, 1..20000000 (default 60000); a phase ends early when
                    they are used up
  --reference URL   before the authorizations, send GET URL (https, same CA, same client
                    certificate) the same way: the reference for bench/ratio.sh
  --no-healthz      skip the GET /healthz phase
  --fill-cards N    before preparing the authorizations, add N cards (0..10000000, default 0)
                    straight through the store, K per database transaction, as the backend
                    leaves a card enrolled by an operator that loaded one list of 4 codes
                    (OTA packet, SMS sent, OK Proof of Receipt) and used its first code in an
                    approved purchase at the loadgen's terminal: N enrolled cards and N used
                    codes, with their transactions and audit entries. Codes and keys are
                    sealed under the backend's KEK as the backend seals them. A SQLite
                    store's WAL is checkpointed into the database (TRUNCATE) every 25
                    transactions and at the end, so the measurement starts from a store as
                    months of use leave it. Prints its progress and then "fill: N cards in
                    S s". A bench shortcut: throwaway data directories only
  --fill-per-run K  cards per database transaction of the fill, 1..100000 (default 2000)
  --fill-traffic    prepare the authorizations from the fill cards' unused codes first (3 a
                    card, the cards in random order, the requests shuffled), so that they
                    reach cards spread over the whole store as a large fleet's would; the
                    rest, if --codes asks for more, from cards enrolled through the API
  --latency-log FILE  write one line per authorization to FILE: its start on the monotonic
                    clock (CLOCK_MONOTONIC, ns) and its latency (ns), in start order; for
                    lining the slow ones up with what the backend did then (perf record -k
                    mono stamps events on the same clock)

Progress and results go to standard output; logs (connection failures, set-up errors) to
standard error, one key=value line per event.

EXIT STATUS
  0 done, 1 the backend refused the set-up or a phase had errors, 2 usage error.
)";


// Writes a private key readable by the owner only: created 0600 (never briefly wider), an
// existing file or link at the path replaced rather than followed.
bool write_private(const std::string& path, const std::string& content) {
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  const bool ok = done == content.size() && ::fchmod(fd, 0600) == 0;
  return ::close(fd) == 0 && ok;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// A POS purchase of 12.34 EUR with code (list, index), as a card answers it (fill.hpp).
std::string request_body(const std::string& txn, const Bytes& n, std::uint16_t list, std::uint16_t index,
                         const SecretBytes& otac, const std::string& terminal) {
  const protocol::Challenge ch = bench::purchase_challenge(terminal);
  const Bytes mac = bench::purchase_cryptogram(ch, n, list, index, otac);
  json::object o;
  o["txn_id"] = txn;
  o["card"] = to_hex(n);
  o["list"] = list;
  o["index"] = index;
  o["atc"] = 1;
  o["pin_state"] = 3;
  o["challenge"] = to_hex(ch.encode());
  o["cryptogram"] = to_hex(mac);
  return json::serialize(o);
}

struct Result_ {
  std::vector<double> lat_ms;
  /// With Phase::timeline: each request's start (steady clock, ns) and latency (ns), unsorted.
  std::vector<std::pair<std::int64_t, std::int64_t>> timeline;
  std::uint64_t ok = 0, errors = 0, approved = 0;
  double seconds = 0;
};

/// What one phase sends: GET `target`, or POST the prepared bodies to `target`.
struct Phase {
  std::string host;
  std::vector<std::uint16_t> ports;  ///< several nodes: connections spread round-robin
  std::string target;
  const std::vector<std::string>* bodies = nullptr;  ///< null: GET
  std::string warmup;  ///< GET once on each connection before the clock starts
  bool timeline = false;  ///< keep each request's start and latency (--latency-log)
};

// True for an authorization answer whose "decision" is "approved" (parsed, not searched for:
// a reason or message could contain the word).
bool approved_answer(const std::string& body) {
  boost::system::error_code ec;
  const json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return false;
  const auto* d = v.as_object().if_contains("decision");
  return d && d->is_string() && d->as_string() == "approved";
}

// Runs `connections` keep-alive TLS connections for `seconds`; each sends the phase's next
// request and waits for the answer. rate > 0 paces the total. Only a 2xx answer (and for an
// authorization, "approved") counts as ok; a transport failure ends that connection.
// Every connection first completes its TLS handshake and one GET of ph.warmup, and the clock
// starts when all have: the phase measures keep-alive requests, not a queue of handshakes
// (512 handshakes at once take seconds on two cores).
Result_ run(const Phase& ph, const std::string& ca, const std::string& cert, const std::string& key, unsigned connections,
            double seconds, double rate) {
  std::atomic<std::size_t> next{0};
  std::mutex mu;
  Result_ total;
  Clock::time_point t0, end;  // set once every connection is ready, before any thread goes on
  std::barrier ready(static_cast<std::ptrdiff_t>(connections), [&]() noexcept {
    t0 = Clock::now();
    end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  });
  std::vector<std::thread> threads;
  for (unsigned c = 0; c < connections; ++c) {
    threads.emplace_back([&, c] {
      Result_ mine;
      otac::net::ClientOptions o;
      o.host = ph.host;
      o.port = ph.ports[c % ph.ports.size()];
      o.ca_file = ca;
      o.cert_file = cert;
      o.key_file = key;
      o.user_agent = "otac-loadgen";
      o.connect_timeout = o.handshake_timeout = std::chrono::seconds(60);  // set-up, not measured
      auto client = otac::net::HttpClient::create(o);
      bool usable = static_cast<bool>(client);
      if (!client) {
        slog::warn("connection_failed", {{"connection", std::to_string(c)}, {"error", client.error().message}});
        ++mine.errors;
      } else if (auto w = (*client)->request(bhttp::verb::get, ph.warmup); !w || w->status < 200 || w->status >= 300) {
        slog::warn("connection_failed", {{"connection", std::to_string(c)},
                                         {"error", w ? "GET " + ph.warmup + " answered " + std::to_string(w->status)
                                                     : w.error().message}});
        ++mine.errors;
        usable = false;
      }
      ready.arrive_and_wait();
      for (std::uint64_t k = 0; usable && k < 10'000'000; ++k) {
        std::size_t i = next.fetch_add(1);
        if (rate > 0) {
          const auto due = t0 + std::chrono::duration<double>(static_cast<double>(i) / rate);
          if (due > end) break;
          std::this_thread::sleep_until(due);
        }
        if (Clock::now() >= end) break;
        if (ph.bodies && i >= ph.bodies->size()) break;
        const auto a = Clock::now();
        auto res = ph.bodies ? (*client)->request(bhttp::verb::post, ph.target, (*ph.bodies)[i])
                             : (*client)->request(bhttp::verb::get, ph.target);
        if (!res) {
          slog::warn("request_failed", {{"connection", std::to_string(c)}, {"error", res.error().message}});
          ++mine.errors;
          break;
        }
        const auto b = Clock::now();
        mine.lat_ms.push_back(std::chrono::duration<double, std::milli>(b - a).count());
        if (ph.timeline) {
          mine.timeline.emplace_back(std::chrono::duration_cast<std::chrono::nanoseconds>(a.time_since_epoch()).count(),
                                     std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
        }
        const bool success = res->status >= 200 && res->status < 300;
        const bool approved = ph.bodies && success && approved_answer(res->body);
        if (approved) ++mine.approved;
        if (success && (!ph.bodies || approved)) {
          ++mine.ok;
        } else {
          if (mine.errors < 3) {
            slog::warn("unexpected_answer", {{"connection", std::to_string(c)}, {"status", std::to_string(res->status)},
                                             {"body", res->body.substr(0, 200)}});
          }
          ++mine.errors;
        }
      }
      std::lock_guard lock(mu);
      total.lat_ms.insert(total.lat_ms.end(), mine.lat_ms.begin(), mine.lat_ms.end());
      total.timeline.insert(total.timeline.end(), mine.timeline.begin(), mine.timeline.end());
      total.ok += mine.ok;
      total.errors += mine.errors;
      total.approved += mine.approved;
    });
  }
  for (auto& t : threads) t.join();
  total.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::sort(total.lat_ms.begin(), total.lat_ms.end());
  return total;
}

double pct(const std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  return v[i];
}

// The disk's durable-write latency in the data directory (4 KiB append + fdatasync, like one
// small WAL commit): the floor under the latency of any durable authorization.
void fsync_probe(const std::string& dir) {
  const std::string path = dir + "/loadgen-fsync-probe.tmp";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) { slog::warn("fsync_probe_skipped", {{"file", path}, {"error", std::strerror(errno)}}); return; }
  std::vector<double> lat;
  const std::vector<char> page(4096, 'x');
  for (int i = 0; i < 200; ++i) {
    const auto a = Clock::now();
    if (::write(fd, page.data(), page.size()) != static_cast<ssize_t>(page.size()) || ::fdatasync(fd) != 0) break;
    lat.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
  }
  ::close(fd);
  ::unlink(path.c_str());
  std::sort(lat.begin(), lat.end());
  std::printf("disk: 4 KiB write + fdatasync in the data directory  p50 %.2f ms  p99 %.2f ms  (%zu samples)\n",
              pct(lat, 0.5), pct(lat, 0.99), lat.size());
}

void report(const char* what, const Result_& r) {
  std::printf("%-14s %8.0f req/s  ok %llu  errors %llu  approved %llu  p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", what,
              static_cast<double>(r.ok) / r.seconds, static_cast<unsigned long long>(r.ok),
              static_cast<unsigned long long>(r.errors), static_cast<unsigned long long>(r.approved), pct(r.lat_ms, 0.5),
              pct(r.lat_ms, 0.99), r.lat_ms.empty() ? 0.0 : r.lat_ms.back());
  std::printf("phase=%s rps=%.0f p50_ms=%.2f p99_ms=%.2f ok=%llu errors=%llu\n", what,
              static_cast<double>(r.ok) / r.seconds, pct(r.lat_ms, 0.5), pct(r.lat_ms, 0.99),
              static_cast<unsigned long long>(r.ok), static_cast<unsigned long long>(r.errors));
}

}  // namespace

// The store otac-backend uses with DIR/otac-backend.conf (defaults without one): its key
// custody (the file KEK, or its PKCS#11 token) and its store (SQLite or PostgreSQL).
Result<std::unique_ptr<Store>> loadgen_store(const std::string& dir, std::optional<std::filesystem::path>* sqlite_file) {
  Config c;
  c.data_dir = std::filesystem::absolute(dir);
  const auto conf = c.data_dir / "otac-backend.conf";
  if (std::filesystem::exists(conf)) {
    auto parsed = load_config(conf, c);
    if (!parsed) return parsed.error();
    c = std::move(*parsed);
  }
  if (c.store == "sqlite") *sqlite_file = c.resolve(c.database);
  auto kek = open_custody(c, nullptr);
  if (!kek) return kek.error();
  auto open = store_opener(c, std::move(*kek));
  if (!open) return open.error();
  return (*open)();
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines reach a file or pipe as they happen
  std::string dir, reference;
  std::vector<std::string> urls;
  bool healthz = true;
  unsigned connections = 16;
  double seconds = 10, rate = 0;
  std::size_t codes = 60000;  // enough for 10 s at 6,000/s
  // The command line through CLI11 (otac/sys/cli.hpp).
  CLI::App app{"Load generator for otac-backend (a benchmark, not a test).", "otac-loadgen"};
  otac::sys::cli_defaults(app);
  app.footer(kHelp);
  app.add_option("--data-dir", dir, "the backend's data directory")->type_name("DIR")->required();
  app.add_option("--url", urls, "the backend, https://127.0.0.1:PORT; once per node")
      ->type_name("URL")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--connections", connections, "keep-alive connections (default 16)")->check(CLI::Range(1u, 4096u));
  app.add_option("--seconds", seconds, "length of each phase (default 10)")->check(CLI::Range(0.1, 86400.0));
  app.add_option("--rate", rate, "0: as fast as possible, or requests/s in total")->check(CLI::Range(0.0, 1e7));
  app.add_option("--codes", codes, "authorizations to prepare (default 60000)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{20'000'000}));
  app.add_option("--reference", reference, "first drive GET URL the same way")->type_name("URL");
  bool no_healthz = false;
  app.add_flag("--no-healthz", no_healthz, "skip the GET /healthz phase");
  std::size_t fill_cards = 0, fill_per_run = 2000;
  app.add_option("--fill-cards", fill_cards, "first add N cards with a used code each through the store (default 0)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{10'000'000}));
  bool fill_traffic = false;
  app.add_flag("--fill-traffic", fill_traffic, "prepare the authorizations from the fill cards' unused codes first");
  app.add_option("--fill-per-run", fill_per_run, "cards per database transaction of the fill (default 2000)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100'000}));
  std::string latency_log;
  app.add_option("--latency-log", latency_log, "write each authorization's start and latency to FILE")->type_name("FILE");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return otac::sys::cli_exit(app, e);
  }
  healthz = !no_healthz;
  // Checked before the run (a fill can take hours), written after it.
  if (!latency_log.empty()) {
    const auto parent = std::filesystem::absolute(latency_log).parent_path();
    if (std::error_code ec; !std::filesystem::is_directory(parent, ec))
      return otac::sys::cli_usage_error(app, "--latency-log: no directory " + parent.string());
  }
  std::vector<std::uint16_t> ports;
  std::string host;
  for (const auto& url : urls) {
    auto o = otac::parse_https_origin(url);
    if (!o) return otac::sys::cli_usage_error(app, "--url: " + o.error().message);
    if (!host.empty() && o->host != host) return otac::sys::cli_usage_error(app, "--url: every --url must name the same host");
    host = o->host;
    ports.push_back(o->port);
  }
  auto origin = otac::parse_https_origin(urls.front());
  Phase ref;
  if (!reference.empty()) {
    // "https://host:port/path": the origin through the same parser, the path kept as is.
    const auto slash = reference.find('/', reference.find("://") == std::string::npos ? 0 : reference.find("://") + 3);
    auto ro = otac::parse_https_origin(reference.substr(0, slash));
    if (!ro) return otac::sys::cli_usage_error(app, "--reference: " + ro.error().message);
    const std::string target = slash == std::string::npos ? "/" : reference.substr(slash);
    ref = Phase{ro->host, {ro->port}, target, nullptr, target};
  }
  otac::net::ClientOptions admin;
  admin.host = origin->host;
  admin.port = origin->port;
  admin.ca_file = dir + "/ca.pem";
  admin.bearer = slurp(dir + "/admin.token");

  // Terminal.
  const std::string term = "BENCH" + std::to_string(100 + (std::time(nullptr) % 900));
  auto reg = otac::net::request_once(admin, bhttp::verb::post, "/v1/admin/terminals", R"({"id":")" + term + R"("})");
  if (!reg || reg->status != 201) {
    slog::error("failed", {{"error", "cannot register a terminal"},
                           {"detail", reg ? std::to_string(reg->status) + " " + reg->body : reg.error().message}});
    return 1;
  }
  auto ro = json::parse(reg->body).as_object();
  // Next to the backend's own keys in its (0700) data directory, the key itself 0600.
  const std::string cert = dir + "/loadgen-" + term + ".pem", key = dir + "/loadgen-" + term + ".key";
  std::ofstream(cert) << std::string(ro.at("cert").as_string());
  if (!write_private(key, std::string(ro.at("key").as_string()))) {
    slog::error("failed", {{"error", "cannot write " + key + ": " + std::strerror(errno)}});
    return 1;
  }

  // Cards and lists; read the codes from the store (a card would hold them).
  // The backend's own custody (its config in DIR): the file KEK, or its PKCS#11 token.
  std::optional<std::filesystem::path> sqlite_file;
  auto store = loadgen_store(dir, &sqlite_file);
  if (!store) { slog::error("failed", {{"error", store.error().message}}); return 1; }
  std::vector<std::pair<Bytes, std::uint16_t>> fill_added;
  if (fill_cards > 0) {
    bench::FillOptions fo;
    fo.cards = fill_cards;
    fo.per_run = fill_per_run;
    fo.terminal = term;
    fo.added = &fill_added;
    if (sqlite_file) fo.checkpoint = [&] { return bench::checkpoint_sqlite(*sqlite_file); };
    const std::size_t step = std::max<std::size_t>(fill_cards / 10, fill_per_run);
    std::size_t next_report = step;
    fo.progress = [&](std::size_t done, double s) {
      if (done < next_report && done < fill_cards) return;
      next_report = done + step;
      std::printf("fill: %zu of %zu cards, %.1f s\n", done, fill_cards, s);
    };
    auto filled = bench::fill_store(**store, fo);
    if (!filled) { slog::error("failed", {{"error", filled.error().message}}); return 1; }
    // The load average here is the fill's own (it ran on the same cores), not the benchmark's.
    std::printf("fill: %zu cards in %.1f s (%.0f cards/s); load after the fill %s\n", fill_cards, *filled,
                static_cast<double>(fill_cards) / *filled, slurp("/proc/loadavg").substr(0, 14).c_str());
  }
  std::vector<std::string> bodies;
  std::size_t card_no = 0;
  if (fill_traffic) {
    // Codes 1..3 of fill cards in random order, read 1,000 cards per store transaction.
    std::mt19937_64 rng(std::random_device{}());
    std::shuffle(fill_added.begin(), fill_added.end(), rng);
    std::size_t used_cards = 0;
    for (std::size_t at = 0; at < fill_added.size() && bodies.size() < codes; at += 1000) {
      std::vector<std::string> some;
      auto r = (*store)->run([&](Tx& tx) -> Result<void> {
        some.clear();
        for (std::size_t c = at; c < std::min(at + 1000, fill_added.size()) && bodies.size() + some.size() < codes; ++c) {
          const auto& [n, list] = fill_added[c];
          for (std::uint16_t i = 1; i <= 3 && bodies.size() + some.size() < codes; ++i) {
            auto o = tx.otac(n, list, i);
            if (!o) return o.error();
            some.push_back(request_body("B-" + term + "-" + std::to_string(bodies.size() + some.size()), n, list, i, o->key, term));
          }
        }
        return {};
      });
      if (!r) { slog::error("failed", {{"error", r.error().message}}); return 1; }
      used_cards += std::min<std::size_t>(1000, fill_added.size() - at);
      bodies.insert(bodies.end(), std::make_move_iterator(some.begin()), std::make_move_iterator(some.end()));
    }
    std::shuffle(bodies.begin(), bodies.end(), rng);
    std::printf("prepared %zu authorizations from the codes of %zu fill cards\n", bodies.size(),
                std::min(used_cards, fill_added.size()));
  }
  while (bodies.size() < codes && card_no < 10000) {
    ++card_no;
    auto en = otac::net::request_once(admin, bhttp::verb::post, "/v1/admin/cards",
                              R"({"msisdn":"+49155)" + std::to_string(1000000 + card_no) + R"(","threshold":0})");
    if (!en || en->status != 201) {
      slog::error("failed", {{"error", "enroll failed"},
                             {"detail", en ? std::to_string(en->status) + " " + en->body : en.error().message}});
      return 1;
    }
    const Bytes n = hex(std::string(json::parse(en->body).as_object().at("n").as_string()));
    // Two lists per card: a card holds two (protocol.md 6.1.1), and the backend refuses a
    // third refresh (409) while it waits for the card's Proof of Receipt.
    for (int l = 0; l < 2 && bodies.size() < codes; ++l) {
      auto rf = otac::net::request_once(admin, bhttp::verb::post, "/v1/admin/cards/" + to_hex(n) + "/refresh");
      if (rf && rf->status == 409 && l > 0) break;
      if (!rf || rf->status != 200) {
        slog::error("failed", {{"error", "refresh failed"},
                               {"detail", rf ? std::to_string(rf->status) + " " + rf->body : rf.error().message}});
        return 1;
      }
      const auto list = static_cast<std::uint16_t>(json::parse(rf->body).as_object().at("list").as_int64());
      auto r = (*store)->run([&](Tx& tx) -> Result<void> {
        for (std::uint16_t i = 0; i < 1000 && bodies.size() < codes; ++i) {
          auto o = tx.otac(n, list, i);
          if (!o) break;
          bodies.push_back(request_body("B-" + term + "-" + std::to_string(bodies.size()), n, list, i, o->key, term));
        }
        return {};
      });
      if (!r) { slog::error("failed", {{"error", r.error().message}}); return 1; }
    }
  }
  std::printf("prepared %zu authorizations over %zu cards; %u connections, %.0f s, rate %s\n", bodies.size(), card_no,
              connections, seconds, rate > 0 ? std::to_string(static_cast<int>(rate)).c_str() : "max");
  fsync_probe(dir);
  const std::string ca = admin.ca_file.string();
  Result_ reference_result;
  if (!ref.target.empty()) reference_result = run(ref, ca, cert, key, connections, seconds, rate);
  Phase auth_phase{admin.host, ports, "/v1/authorizations", &bodies, "/healthz"};
  auth_phase.timeline = !latency_log.empty();
  Result_ auth = run(auth_phase, ca, cert, key, connections, seconds, rate);
  if (!latency_log.empty()) {
    std::sort(auth.timeline.begin(), auth.timeline.end());
    std::string text;
    for (const auto& [start, ns] : auth.timeline) text += std::to_string(start) + ' ' + std::to_string(ns) + '\n';
    otac::sys::WriteOptions wo;
    wo.mode = 0644;
    if (auto w = otac::sys::write_file_atomic(latency_log, text, wo); !w) {
      slog::error("failed", {{"error", "cannot write --latency-log: " + w.error().message}});
      return 1;
    }
  }
  Result_ stat;
  if (healthz) stat = run(Phase{admin.host, ports, "/healthz", nullptr, "/healthz"}, ca, cert, key, connections, seconds, rate);
  if (!ref.target.empty()) report("reference", reference_result);
  report("authorize", auth);
  if (healthz) report("healthz", stat);
  if (auth.ok > 0 && stat.ok > 0) {
    std::printf("ratio healthz/authorize throughput: %.2f\n",
                (static_cast<double>(stat.ok) / stat.seconds) / (static_cast<double>(auth.ok) / auth.seconds));
  }
  if (!ref.target.empty() && reference_result.errors != 0) return 1;
  return auth.errors == 0 ? 0 : 1;
}
