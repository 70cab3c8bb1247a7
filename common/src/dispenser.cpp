#include "otac/common/dispenser.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <numeric>
#include <set>

namespace otac::dispenser {
namespace {

constexpr std::array<Fault, 6> kFaults = {Fault::none, Fault::jam, Fault::partial, Fault::shutter, Fault::not_taken, Fault::empty};
constexpr std::array<Status, 7> kStatuses = {Status::dispensed, Status::jam,   Status::partial,    Status::shutter,
                                             Status::retracted, Status::empty, Status::bad_request};

// The line split at single spaces; empty words (two spaces, a leading or trailing one) make
// the line malformed.
Result<std::vector<std::string_view>> words(std::string_view line) {
  if (line.size() + 1 > kMaxLine) return make_error(Errc::bad_length, "dispenser line longer than " + std::to_string(kMaxLine - 1) + " bytes");
  for (const char c : line) {
    if (c < 0x20 || c > 0x7E) return make_error(Errc::bad_value, "dispenser line holds a byte that is not printable ASCII");
  }
  std::vector<std::string_view> out;
  for (std::size_t i = 0; i <= line.size() && out.size() <= 8;) {
    const std::size_t sp = std::min(line.find(' ', i), line.size());
    if (sp == i) return make_error(Errc::bad_value, "dispenser line has an empty word (two spaces, or one at an end)");
    out.push_back(line.substr(i, sp - i));
    i = sp + 1;
  }
  if (out.size() > 8) return make_error(Errc::bad_length, "dispenser line has too many words");
  return out;
}

// A decimal number in [lo, hi], digits only (no sign, no leading zero but "0").
Result<std::int64_t> number(std::string_view s, std::int64_t lo, std::int64_t hi, const char* what) {
  std::int64_t v = 0;
  const bool shape = !s.empty() && s.size() <= 12 && s.find_first_not_of("0123456789") == std::string_view::npos &&
                     (s.size() == 1 || s[0] != '0');
  if (!shape || std::from_chars(s.data(), s.data() + s.size(), v).ec != std::errc() || v < lo || v > hi)
    return make_error(Errc::bad_value, std::string(what) + " must be a whole number from " + std::to_string(lo) + " to " +
                                           std::to_string(hi) + " (got \"" + std::string(s.substr(0, 16)) + "\")");
  return v;
}

Result<Fault> fault_of(std::string_view s) {
  for (Fault f : kFaults)
    if (s == fault_name(f)) return f;
  return make_error(Errc::bad_value, "unknown dispenser fault \"" + std::string(s.substr(0, 16)) +
                                         "\" (none, jam, partial, shutter, not_taken, empty)");
}

// The reply word of a dispense status (upper case on the wire).
std::string status_word(Status s) {
  std::string w = status_name(s);
  std::transform(w.begin(), w.end(), w.begin(), [](char c) { return static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c); });
  return w;
}

Result<void> count_words(const std::vector<std::string_view>& w, std::size_t n, const char* what) {
  if (w.size() != n) return make_error(Errc::bad_value, std::string(what) + " takes " + std::to_string(n - 1) + " words after it");
  return {};
}

}  // namespace

const char* fault_name(Fault f) noexcept {
  switch (f) {
    case Fault::none: return "none";
    case Fault::jam: return "jam";
    case Fault::partial: return "partial";
    case Fault::shutter: return "shutter";
    case Fault::not_taken: return "not_taken";
    case Fault::empty: return "empty";
  }
  return "?";
}

const char* status_name(Status s) noexcept {
  switch (s) {
    case Status::dispensed: return "dispensed";
    case Status::jam: return "jam";
    case Status::partial: return "partial";
    case Status::shutter: return "shutter";
    case Status::retracted: return "retracted";
    case Status::empty: return "empty";
    case Status::bad_request: return "bad_request";
  }
  return "?";
}

Result<std::vector<Cassette>> parse_cassettes(std::string_view text) {
  std::vector<Cassette> out;
  if (text == "-") return out;
  std::set<std::int64_t> seen;
  for (std::size_t i = 0; i <= text.size();) {
    const std::size_t comma = std::min(text.find(',', i), text.size());
    const std::string_view item = text.substr(i, comma - i);
    const std::size_t x = item.find('x');
    if (x == std::string_view::npos) return make_error(Errc::bad_value, "a cassette is DENOMINATIONxCOUNT, as 2000x50");
    auto d = number(item.substr(0, x), 1, kMaxAmount, "a cassette's denomination");
    if (!d) return d.error();
    auto n = number(item.substr(x + 1), 0, kMaxNotes, "a cassette's note count");
    if (!n) return n.error();
    if (!seen.insert(*d).second) return make_error(Errc::bad_value, "denomination " + std::to_string(*d) + " appears twice");
    if (out.size() == kMaxCassettes) return make_error(Errc::bad_length, "more than " + std::to_string(kMaxCassettes) + " cassettes");
    out.push_back(Cassette{*d, static_cast<std::uint32_t>(*n)});
    i = comma + 1;
  }
  return out;
}

std::string encode_cassettes(const std::vector<Cassette>& c) {
  if (c.empty()) return "-";
  std::string out;
  for (const auto& k : c) out += (out.empty() ? "" : ",") + std::to_string(k.denomination) + "x" + std::to_string(k.count);
  return out;
}

Result<Request> parse_request(std::string_view line) {
  auto w = words(line);
  if (!w) return w.error();
  Request r;
  const std::string_view verb = (*w)[0];
  if (verb == "STATUS") {
    if (auto c = count_words(*w, 1, "STATUS"); !c) return c.error();
    r.kind = Request::Kind::status;
  } else if (verb == "DISPENSE") {
    if (auto c = count_words(*w, 3, "DISPENSE"); !c) return c.error();
    auto amount = number((*w)[1], 1, kMaxAmount, "the amount to dispense");
    if (!amount) return amount.error();
    auto secs = number((*w)[2], 1, kMaxTakeSeconds, "the seconds to take the notes");
    if (!secs) return secs.error();
    r.kind = Request::Kind::dispense;
    r.amount = *amount;
    r.take_seconds = static_cast<std::uint32_t>(*secs);
  } else if (verb == "FAULT") {
    if (auto c = count_words(*w, 2, "FAULT"); !c) return c.error();
    auto f = fault_of((*w)[1]);
    if (!f) return f.error();
    r.kind = Request::Kind::fault;
    r.fault = *f;
  } else {
    return make_error(Errc::bad_value, "unknown dispenser request \"" + std::string(verb.substr(0, 16)) + "\" (STATUS, DISPENSE, FAULT)");
  }
  return r;
}

Result<Reply> parse_reply(std::string_view line) {
  auto w = words(line);
  if (!w) return w.error();
  Reply r;
  const std::string_view head = (*w)[0];
  if (head == "OK" && w->size() >= 2 && (*w)[1] == "STATUS") {
    if (auto c = count_words(*w, 4, "OK STATUS"); !c) return c.error();
    const std::string_view state = (*w)[2];
    if (state.size() > 32 || state.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string_view::npos)
      return make_error(Errc::bad_value, "a dispenser state is a lower-case word of at most 32 letters");
    auto c = parse_cassettes((*w)[3]);
    if (!c) return c.error();
    r.kind = Reply::Kind::status;
    r.state = std::string(state);
    r.cassettes = std::move(*c);
  } else if (head == "OK" && w->size() >= 2 && (*w)[1] == "DISPENSED") {
    if (auto c = count_words(*w, 3, "OK DISPENSED"); !c) return c.error();
    auto amount = number((*w)[2], 1, kMaxAmount, "the amount dispensed");
    if (!amount) return amount.error();
    r.kind = Reply::Kind::dispense;
    r.status = Status::dispensed;
    r.handed = *amount;
  } else if (head == "OK" && w->size() >= 2 && (*w)[1] == "FAULT") {
    if (auto c = count_words(*w, 3, "OK FAULT"); !c) return c.error();
    auto f = fault_of((*w)[2]);
    if (!f) return f.error();
    r.kind = Reply::Kind::fault;
    r.fault = *f;
  } else if (head == "ERR") {
    if (auto c = count_words(*w, 3, "ERR"); !c) return c.error();
    auto handed = number((*w)[2], 0, kMaxAmount, "the amount handed over");
    if (!handed) return handed.error();
    bool known = false;
    for (Status s : kStatuses) {
      if (s != Status::dispensed && (*w)[1] == status_word(s)) {
        r.status = s;
        known = true;
      }
    }
    if (!known) return make_error(Errc::bad_value, "unknown dispenser error \"" + std::string((*w)[1].substr(0, 16)) + "\"");
    if (r.status != Status::partial && *handed != 0)
      return make_error(Errc::bad_value, "only a partial dispense hands notes over; " + status_word(r.status) + " hands 0");
    if (r.status == Status::partial && *handed == 0) return make_error(Errc::bad_value, "a partial dispense hands over more than 0");
    r.kind = Reply::Kind::dispense;
    r.handed = *handed;
  } else {
    return make_error(Errc::bad_value, "a dispenser reply starts with OK STATUS, OK DISPENSED, OK FAULT or ERR");
  }
  return r;
}

std::string encode(const Request& r) {
  switch (r.kind) {
    case Request::Kind::status: return "STATUS\n";
    case Request::Kind::dispense: return "DISPENSE " + std::to_string(r.amount) + " " + std::to_string(r.take_seconds) + "\n";
    case Request::Kind::fault: return std::string("FAULT ") + fault_name(r.fault) + "\n";
  }
  return "\n";
}

std::string encode(const Reply& r) {
  switch (r.kind) {
    case Reply::Kind::status: return "OK STATUS " + r.state + " " + encode_cassettes(r.cassettes) + "\n";
    case Reply::Kind::fault: return std::string("OK FAULT ") + fault_name(r.fault) + "\n";
    case Reply::Kind::dispense:
      if (r.status == Status::dispensed) return "OK DISPENSED " + std::to_string(r.handed) + "\n";
      return "ERR " + status_word(r.status) + " " + std::to_string(r.handed) + "\n";
  }
  return "\n";
}

std::vector<std::uint32_t> plan_notes(const std::vector<Cassette>& cassettes, std::int64_t amount) {
  if (amount <= 0 || cassettes.empty() || cassettes.size() > kMaxCassettes) return {};
  // Cassettes by denomination, largest first; a depth-first search that tries the most notes
  // of each first finds a plan with large notes, and a node budget bounds the work.
  std::vector<std::size_t> order(cassettes.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return cassettes[a].denomination > cassettes[b].denomination; });
  std::vector<std::uint32_t> take(cassettes.size(), 0);
  std::uint32_t budget = 100'000;
  // Iterative search: level k chooses take[order[k]], from the most that fits down to 0.
  std::array<std::int64_t, kMaxCassettes + 1> left{};
  std::array<std::int64_t, kMaxCassettes> next{};  // the count tried last at each level, -1: none yet
  next.fill(-1);
  left[0] = amount;
  std::size_t k = 0;
  while (budget-- > 0) {
    const Cassette& c = cassettes[order[k]];
    if (next[k] < 0) next[k] = std::min<std::int64_t>(c.count, left[k] / c.denomination);
    else --next[k];
    if (next[k] < 0) {  // exhausted here: back up
      if (k == 0) return {};
      take[order[k]] = 0;
      next[k] = -1;
      --k;
      continue;
    }
    take[order[k]] = static_cast<std::uint32_t>(next[k]);
    left[k + 1] = left[k] - next[k] * c.denomination;
    if (left[k + 1] == 0) {
      for (std::size_t j = k + 1; j < order.size(); ++j) take[order[j]] = 0;
      return take;
    }
    if (k + 1 < order.size()) {
      ++k;
      next[k] = -1;
    }
  }
  return {};
}

}  // namespace otac::dispenser
