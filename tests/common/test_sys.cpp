// common/sys: the file-descriptor owner, the atomic file replacement, secrets read from
// descriptors and owner-only files, the log format.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "otac/sys/fd.hpp"
#include "otac/sys/file.hpp"
#include "otac/sys/log.hpp"
#include "otac/sys/secret_input.hpp"
#include "test_support.hpp"

using otac::Errc;
using otac::sys::Fd;
using otac::sys::write_file_atomic;
using otac::test::TempDir;
namespace fs = std::filesystem;

namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777u;
}

std::string content_of(const fs::path& p) {
  auto r = otac::sys::read_file(p);
  REQUIRE(r.ok());
  return *r;
}

// Everything in dir except the named file: temporary files left behind.
std::vector<std::string> others(const fs::path& dir, const std::string& keep) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename() != keep) out.push_back(e.path().filename().string());
  return out;
}

}  // namespace

TEST_CASE("sys Fd closes on destruction and moves ownership") {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  {
    Fd w(p[1]);
    Fd r(p[0]);
    CHECK(r.valid());
    Fd moved(std::move(r));
    CHECK_FALSE(r.valid());  // NOLINT(bugprone-use-after-move): the moved-from state is the point
    CHECK(moved.get() == p[0]);
    CHECK(is_open(p[0]));
    Fd target;
    CHECK_FALSE(target);
    target = std::move(moved);
    CHECK(target.get() == p[0]);
    CHECK_FALSE(moved.valid());  // NOLINT(bugprone-use-after-move)
    CHECK(is_open(p[0]));
    CHECK(is_open(p[1]));
  }
  CHECK_FALSE(is_open(p[0]));
  CHECK_FALSE(is_open(p[1]));
}

TEST_CASE("sys Fd move assignment closes the descriptor it held, release gives it up") {
  int a[2], b[2];
  REQUIRE(::pipe2(a, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(b, O_CLOEXEC) == 0);
  Fd x(a[0]);
  x = Fd(b[0]);
  CHECK_FALSE(is_open(a[0]));
  CHECK(x.get() == b[0]);
  const int raw = x.release();
  CHECK_FALSE(x.valid());
  CHECK(is_open(raw));
  Fd y(raw);
  CHECK(y.close() == 0);
  CHECK_FALSE(y.valid());
  CHECK_FALSE(is_open(raw));
  CHECK(y.close() == 0);  // closing an empty Fd does nothing
  ::close(a[1]);
  ::close(b[1]);
}

TEST_CASE("atomic write: content and exact mode, replacing the old file, nothing left behind") {
  TempDir d;
  const fs::path f = d.path / "secret.key";
  const mode_t old_mask = ::umask(077);
  auto w1 = write_file_atomic(f, std::string_view("first"), {.mode = 0644});
  ::umask(old_mask);
  REQUIRE(w1.ok());
  CHECK(content_of(f) == "first");
  CHECK(mode_of(f) == 0644u);  // exactly as asked, whatever the umask
  REQUIRE(write_file_atomic(f, std::string_view("second, longer")).ok());
  CHECK(content_of(f) == "second, longer");
  CHECK(mode_of(f) == 0600u);  // the default is for secrets
  CHECK(others(d.path, "secret.key").empty());
  REQUIRE(write_file_atomic(f, std::string_view("")).ok());
  CHECK(content_of(f).empty());
}

TEST_CASE("atomic write: a power cut at any step leaves the old or the new content") {
  TempDir d;
  const fs::path f = d.path / "state";
  const std::string old_text = "old state", new_text(100, 'n');
  std::size_t steps_seen = 0;
  for (std::size_t cut_at = 0; cut_at < 64; ++cut_at) {
    REQUIRE(write_file_atomic(f, old_text).ok());
    std::size_t step = 0;
    bool cut = false;
    auto r = write_file_atomic(f, new_text, {.mode = 0600, .replace = true, .chunk = 10, .cut = [&] {
                                               cut = cut || step == cut_at;
                                               return step++ == cut_at;
                                             }});
    if (!cut) break;
    ++steps_seen;
    const std::string now = content_of(f);
    INFO("cut at step " << cut_at);
    CHECK((now == old_text || now == new_text));
    CHECK(r.ok() == (now == new_text));  // success is reported exactly when the new content is in place
    for (const auto& e : others(d.path, "state")) fs::remove(d.path / e);
  }
  CHECK(steps_seen == 14);  // create, 10 chunks, fsync, rename, after the rename (before the directory sync)
}

TEST_CASE("atomic write: a failing write leaves the old file intact and no temporary file") {
  TempDir d;
  const fs::path f = d.path / "config";
  REQUIRE(write_file_atomic(f, std::string_view("old")).ok());
  // A real write(2) failure: EFBIG past a file-size limit.
  struct rlimit saved {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
  auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 16;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  auto r = write_file_atomic(f, std::string(4096, 'x'));
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::io);
  CHECK(r.error().message.find("cannot write") != std::string::npos);
  CHECK(content_of(f) == "old");
  CHECK(others(d.path, "config").empty());
}

TEST_CASE("atomic write: a failing rename leaves the target intact and no temporary file") {
  TempDir d;
  const fs::path target = d.path / "busy";
  fs::create_directory(target);
  { auto w = write_file_atomic(target / "inside", std::string_view("kept")); REQUIRE(w.ok()); }
  auto r = write_file_atomic(target, std::string_view("new"));  // rename over a non-empty directory fails
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::io);
  CHECK(r.error().message.find(target.string()) != std::string::npos);
  CHECK(fs::is_directory(target));
  CHECK(content_of(target / "inside") == "kept");
  CHECK(others(d.path, "busy").empty());
}

TEST_CASE("atomic write without replace creates once and refuses an existing file") {
  TempDir d;
  const fs::path f = d.path / "kek.bin";
  REQUIRE(write_file_atomic(f, std::string_view("first"), {.mode = 0600, .replace = false}).ok());
  CHECK(content_of(f) == "first");
  auto again = write_file_atomic(f, std::string_view("second"), {.mode = 0600, .replace = false});
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == Errc::conflict);
  CHECK(content_of(f) == "first");
  CHECK(others(d.path, "kek.bin").empty());
}

TEST_CASE("atomic write into a missing directory says what failed") {
  TempDir d;
  auto r = write_file_atomic(d.path / "no-such-dir" / "f", std::string_view("x"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("check the directory exists") != std::string::npos);
}

TEST_CASE("read_file refuses a file above its size limit") {
  TempDir d;
  REQUIRE(write_file_atomic(d.path / "big", std::string(100, 'b')).ok());
  auto r = otac::sys::read_file(d.path / "big", 99);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::bad_length);
  CHECK(otac::sys::read_file(d.path / "big", 100).ok());
}

// --- secrets read without the command line (otac/sys/secret_input.hpp) ---

namespace {

// A pipe holding `text`, its write end closed: a script's here-document or `printf | program`.
Fd pipe_with(const std::string& text) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  REQUIRE(::write(fds[1], text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  ::close(fds[1]);
  return Fd(fds[0]);
}

std::string str(const otac::SecretBytes& s) { return std::string(s.data(), s.data() + s.size()); }

}  // namespace

TEST_CASE("SecretReader reads one line per secret from a descriptor and leaves the rest") {
  Fd in = pipe_with("1234\r\n87654321\nrest");
  otac::sys::SecretReader r(in.get());
  CHECK_FALSE(r.interactive());
  auto pin = r.read("PIN");
  REQUIRE(pin.ok());
  CHECK(str(*pin) == "1234");  // CR LF from a Windows editor: both go
  auto puk = r.read("PUK");
  REQUIRE(puk.ok());
  CHECK(str(*puk) == "87654321");
  // The rest stayed in the pipe: the reader took nothing after the second newline.
  char buf[8] = {};
  CHECK(::read(in.get(), buf, sizeof buf) == 4);
  CHECK(std::string(buf, 4) == "rest");
}

TEST_CASE("SecretReader: ended input and overlong lines are errors that name the secret") {
  Fd empty = pipe_with("");
  auto none = otac::sys::SecretReader(empty.get()).read("new PIN");
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().code == Errc::truncated);
  CHECK(none.error().message.find("no new PIN") != std::string::npos);
  Fd lng = pipe_with(std::string(100, '7') + "\n1234\n");
  otac::sys::SecretReader r(lng.get());
  auto too_long = r.read("PIN", 16);
  REQUIRE_FALSE(too_long.ok());
  CHECK(too_long.error().code == Errc::bad_length);
  CHECK(too_long.error().message.find("7777") == std::string::npos);  // the secret is not repeated
  auto next = r.read("PIN", 16);  // the overlong line was consumed whole
  REQUIRE(next.ok());
  CHECK(str(*next) == "1234");
  // A last line without its newline still counts.
  Fd no_nl = pipe_with("5555");
  auto last = otac::sys::SecretReader(no_nl.get()).read("PIN");
  REQUIRE(last.ok());
  CHECK(str(*last) == "5555");
}

TEST_CASE("read_secret_file: owner-only regular files, first line, trailing blanks removed") {
  TempDir dir;
  const fs::path p = dir.path / "token";
  REQUIRE(write_file_atomic(p, std::string("s3cr3t-token \t\nsecond line\n"), {.mode = 0600}).ok());
  auto t = otac::sys::read_secret_file(p);
  REQUIRE(t.ok());
  CHECK(str(*t) == "s3cr3t-token");
  for (unsigned mode : {0640u, 0604u, 0620u, 0644u}) {
    ::chmod(p.c_str(), mode);
    auto refused = otac::sys::read_secret_file(p);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().message.find("chmod 600") != std::string::npos);
    CHECK(refused.error().message.find("s3cr3t") == std::string::npos);
  }
  ::chmod(p.c_str(), 0400);
  CHECK(otac::sys::read_secret_file(p).ok());
  REQUIRE(write_file_atomic(p, std::string("\nkey\n"), {.mode = 0600}).ok());
  auto blank = otac::sys::read_secret_file(p);
  REQUIRE_FALSE(blank.ok());
  CHECK(blank.error().message.find("is empty") != std::string::npos);
  auto dir_refused = otac::sys::read_secret_file(dir.path);
  REQUIRE_FALSE(dir_refused.ok());
  CHECK(dir_refused.error().message.find("not a regular file") != std::string::npos);
  auto missing = otac::sys::read_secret_file(dir.path / "missing");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == Errc::io);
}

// --- the one log format (otac/sys/log.hpp) ---

namespace {

}  // namespace

TEST_CASE("log: one logfmt line per event, time stamp, level, event, quoted values") {
  TempDir dir;
  const std::string line = otac::test::stderr_during(dir.path / "err", [] {
    otac::sys::log::warn("sms", {{"to", "+4912345"}, {"msg", "sms: MT \"x\" = y"}, {"ctl", std::string("a\nb\x7f", 4)}, {"e", ""}});
  });
  INFO(line);
  REQUIRE(line.size() > 30);
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);  // a newline in a value cannot split the line
  // ts=2026-12-06T12:18:51.123Z: UTC, milliseconds.
  CHECK(line.rfind("ts=", 0) == 0);
  CHECK(line[7] == '-');
  CHECK(line[13] == 'T');
  CHECK(line[26] == 'Z');
  CHECK(line.substr(27) ==
        " level=warn event=sms to=+4912345 msg=\"sms: MT \\\"x\\\" = y\" ctl=\"a\\x0ab\\x7f\" e=\"\"\n");

  // The time stamp is this moment's, in UTC (formatted by hand, so checked against the C library).
  std::tm tm{};
  REQUIRE(strptime(line.substr(3, 19).c_str(), "%Y-%m-%dT%H:%M:%S", &tm) != nullptr);
  const std::time_t logged = timegm(&tm);
  const std::time_t now = std::time(nullptr);
  CHECK(logged <= now);
  CHECK(logged >= now - 5);
  CHECK(std::isdigit(static_cast<unsigned char>(line[23])));
  CHECK(std::isdigit(static_cast<unsigned char>(line[25])));
}

TEST_CASE("log: lines gathered with format and written with write_lines stay whole and in order") {
  // The backend's network threads gather their request lines and write each burst at once,
  // while other threads write single lines: no line may be cut or mixed into another.
  TempDir dir;
  constexpr int kBursts = 300;
  const std::string out = otac::test::stderr_during(dir.path / "err", [] {
    auto burster = [](const std::string& who) {
      for (int b = 0; b < kBursts; ++b) {
        std::string lines;
        for (int i = 0; i < 3; ++i) {
          lines += otac::sys::log::format("info", "request", {{"who", who}, {"n", std::to_string(3 * b + i)}, {"pad", std::string(300, 'x')}});
        }
        otac::sys::log::write_lines(lines);
      }
    };
    std::thread a(burster, "a");
    std::thread b(burster, "b");
    for (int i = 0; i < 3 * kBursts; ++i) otac::sys::log::info("single", {{"who", "c"}, {"n", std::to_string(i)}});
    a.join();
    b.join();
    otac::sys::log::write_lines("");  // nothing to write: nothing written
  });
  std::istringstream in(out);
  std::string line;
  int next_a = 0, next_b = 0, next_c = 0, lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    INFO(line);
    REQUIRE(line.rfind("ts=", 0) == 0);
    const auto who = line.find(" who=");
    const auto n = line.find(" n=");
    REQUIRE(who != std::string::npos);
    REQUIRE(n != std::string::npos);
    const int seq = std::stoi(line.substr(n + 3));
    const char w = line[who + 5];
    if (w == 'c') {
      CHECK(line.find(" level=info event=single ") != std::string::npos);
      CHECK(seq == next_c++);
      continue;
    }
    CHECK(line.find(" level=info event=request ") != std::string::npos);
    CHECK(line.size() == line.find(" pad=") + 5 + 300);
    int& next = w == 'a' ? next_a : next_b;
    CHECK(seq == next++);
    // The three lines of a burst are adjacent: a burst's second and third line follow its first.
    if (seq % 3 != 2) {
      std::string following;
      REQUIRE(std::getline(in, following));
      ++lines;
      CHECK(following.find(std::string(" who=") + w + " n=" + std::to_string(seq + 1) + " ") != std::string::npos);
      ++next;
      if (seq % 3 == 0) {
        REQUIRE(std::getline(in, following));
        ++lines;
        CHECK(following.find(std::string(" who=") + w + " n=" + std::to_string(seq + 2) + " ") != std::string::npos);
        ++next;
      }
    }
  }
  CHECK(lines == 9 * kBursts);
  CHECK(next_a == 3 * kBursts);
  CHECK(next_b == 3 * kBursts);
  CHECK(next_c == 3 * kBursts);
}
