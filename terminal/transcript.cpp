#include "terminal/transcript.hpp"

#include <algorithm>
#include <cctype>

namespace otac::terminal {

namespace {

using Kind = TranscriptStep::Kind;

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

Result<Bytes> parse_apdu(std::string_view text) {
  std::string digits;
  for (char c : text)
    if (c != ' ' && c != '\t') digits.push_back(c);
  if (digits.size() > 2 * max_transcript_apdu) return make_error(Errc::bad_length, "APDU longer than 65538 bytes");
  auto b = from_hex(digits);
  if (!b) return make_error(Errc::bad_value, "APDU is not hex");
  if (b->empty()) return make_error(Errc::truncated, "APDU is empty");
  return std::move(*b);
}

Result<Errc> parse_failure(std::string_view s) {
  if (s == "timeout") return Errc::timeout;
  if (s == "io") return Errc::io;
  if (s == "not_found") return Errc::not_found;
  return make_error(Errc::bad_value, "reader failure must be timeout, io or not_found");
}

Result<TranscriptStep> parse_line(std::string_view line) {
  if (line == "card") return TranscriptStep{Kind::card, {}, Errc::io};
  if (line == "no-card") return TranscriptStep{Kind::no_card, {}, Errc::io};
  if (line == "removed") return TranscriptStep{Kind::removed, {}, Errc::io};
  if ((line[0] == '>' || line[0] == '<') && (line.size() == 1 || line[1] == ' ')) {
    auto a = parse_apdu(line.substr(1));
    if (!a) return a.error();
    return TranscriptStep{line[0] == '>' ? Kind::command : Kind::response, std::move(*a), Errc::io};
  }
  if (line.size() >= 2 && line[0] == '!' && line[1] == ' ') {
    auto e = parse_failure(trim(line.substr(2)));
    if (!e) return e.error();
    return TranscriptStep{Kind::failure, {}, *e};
  }
  return make_error(Errc::bad_value, "unknown event (card, no-card, > C-APDU, < R-APDU, ! failure, removed)");
}

const char* failure_name(Errc e) {
  switch (e) {
    case Errc::timeout: return "timeout";
    case Errc::not_found: return "not_found";
    default: return "io";
  }
}

}  // namespace

Result<Transcript> parse_transcript(std::string_view text) {
  Transcript t;
  std::size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const auto nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty() || line.front() == '#') continue;
    auto step = parse_line(line);
    auto where = [&](const std::string& what) { return "transcript line " + std::to_string(line_no) + ": " + what; };
    if (!step) return make_error(step.error().code, where(step.error().message));
    const bool after_command = !t.steps.empty() && t.steps.back().kind == Kind::command;
    const bool answer = step->kind == Kind::response || step->kind == Kind::failure;
    if (after_command != answer)
      return make_error(Errc::bad_value, where(answer ? "an answer without a command before it"
                                                      : "the command before it has no answer"));
    if (t.steps.size() == max_transcript_steps) return make_error(Errc::bad_length, where("more than 4096 events"));
    t.steps.push_back(std::move(*step));
  }
  if (!t.steps.empty() && t.steps.back().kind == Kind::command)
    return make_error(Errc::truncated, "transcript ends with a command that has no answer");
  return t;
}

std::string format_transcript(const Transcript& t) {
  std::string out;
  for (const auto& s : t.steps) {
    switch (s.kind) {
      case Kind::card: out += "card\n"; break;
      case Kind::no_card: out += "no-card\n"; break;
      case Kind::removed: out += "removed\n"; break;
      case Kind::command: out += "> " + to_hex(s.apdu) + "\n"; break;
      case Kind::response: out += "< " + to_hex(s.apdu) + "\n"; break;
      case Kind::failure: out += std::string("! ") + failure_name(s.error) + "\n"; break;
    }
  }
  return out;
}

Result<void> RecordingReader::wait_card(Millis timeout) {
  auto r = inner_.wait_card(timeout);
  t_.steps.push_back(TranscriptStep{r ? Kind::card : Kind::no_card, {}, Errc::io});
  return r;
}

Result<Bytes> RecordingReader::transceive(ByteView capdu, Millis timeout) {
  t_.steps.push_back(TranscriptStep{Kind::command, Bytes(capdu.begin(), capdu.end()), Errc::io});
  auto r = inner_.transceive(capdu, timeout);
  if (r) t_.steps.push_back(TranscriptStep{Kind::response, *r, Errc::io});
  else t_.steps.push_back(TranscriptStep{Kind::failure, {}, r.error().code});
  return r;
}

Result<void> RecordingReader::wait_removal(Millis timeout) {
  auto r = inner_.wait_removal(timeout);
  if (r) t_.steps.push_back(TranscriptStep{Kind::removed, {}, Errc::io});
  return r;
}

Error ReplayReader::mismatch(std::string_view call) const {
  return Error{Errc::io, "replay: " + std::string(call) + " is not what the transcript has at event " +
                             std::to_string(next_ + 1)};
}

Result<void> ReplayReader::wait_card(Millis) {
  if (finished()) return Error{Errc::not_found, "replay: the transcript has no further card"};
  const auto& s = t_.steps[next_];
  if (s.kind != Kind::card && s.kind != Kind::no_card) return mismatch("waiting for a card");
  ++next_;
  if (s.kind == Kind::no_card) return Error{Errc::not_found, "replay: no card came"};
  return {};
}

Result<Bytes> ReplayReader::transceive(ByteView capdu, Millis) {
  if (finished()) return Error{Errc::not_found, "replay: the card left (the transcript ends)"};
  const auto& cmd = t_.steps[next_];
  if (cmd.kind != Kind::command) return mismatch("a command");
  if (strict_ && !std::equal(capdu.begin(), capdu.end(), cmd.apdu.begin(), cmd.apdu.end()))
    return mismatch("C-APDU " + to_hex(capdu));
  // parse_transcript guarantees an answer after every command; a hand-built transcript may not.
  if (next_ + 1 == t_.steps.size()) return mismatch("a command's answer");
  const auto& ans = t_.steps[next_ + 1];
  next_ += 2;
  if (ans.kind == Kind::failure) return Error{ans.error, "replay: the reader failed (" + std::string(failure_name(ans.error)) + ")"};
  if (ans.kind != Kind::response) return mismatch("a command's answer");
  return ans.apdu;
}

Result<void> ReplayReader::wait_removal(Millis) {
  if (finished() || t_.steps[next_].kind != Kind::removed)
    return Error{Errc::timeout, "replay: the card did not leave"};
  ++next_;
  return {};
}

}  // namespace otac::terminal
