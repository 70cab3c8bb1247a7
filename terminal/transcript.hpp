// Recorded card exchanges, in the manner of libfido2's wiredata and OpenSC's fuzzing reader:
// a RecordingReader writes down what a real reader and card said, a ReplayReader plays it back
// into the terminal's Flow. Tests replay recorded taps byte for byte, and fuzz_terminal_flow
// feeds made-up card answers into the Flow through the same reader.
//
// The text form has one event per line; '#' starts a comment, blank lines are ignored:
//   card            a card came into the field (wait_card succeeds)
//   no-card         none came (wait_card fails: not_found)
//   > 00A4 0400 ... the C-APDU the terminal sent (hex; spaces allowed)
//   < 6F17 ... 9000 the R-APDU that answered it
//   ! timeout       the reader failed on that command instead (timeout, io or not_found)
//   removed         the card left the field (wait_removal succeeds)
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "terminal/reader.hpp"

namespace otac::terminal {

/// One event of a recorded exchange.
struct TranscriptStep {
  enum class Kind { card, no_card, command, response, failure, removed };
  Kind kind = Kind::card;
  Bytes apdu;               ///< command and response
  Errc error = Errc::io;    ///< failure: timeout, io or not_found
  bool operator==(const TranscriptStep&) const = default;
};

/// A recorded exchange, oldest event first.
struct Transcript {
  std::vector<TranscriptStep> steps;
};

/// Limits of a transcript: steps, and bytes of one APDU (an extended R-APDU with 65536 data bytes).
inline constexpr std::size_t max_transcript_steps = 4096;
inline constexpr std::size_t max_transcript_apdu = 65538;

/// Parses the text form; errors name the line and what was wrong. Every command is followed by
/// its response or failure, and nothing else follows a command.
Result<Transcript> parse_transcript(std::string_view text);
/// The text form (parse_transcript reads it back unchanged).
std::string format_transcript(const Transcript& t);

/// A reader that records every call to another reader, as it happens.
class RecordingReader final : public Reader {
 public:
  explicit RecordingReader(Reader& inner) : inner_(inner) {}
  Result<void> wait_card(Millis timeout) override;
  Result<Bytes> transceive(ByteView capdu, Millis timeout) override;
  Result<void> wait_removal(Millis timeout) override;
  std::string name() const override { return "recording " + inner_.name(); }
  /// What was recorded so far.
  const Transcript& transcript() const noexcept { return t_; }

 private:
  Reader& inner_;
  Transcript t_;
};

/// A reader that plays a transcript back: each call takes the next event. A call the transcript
/// does not have next fails with io (a mismatch, naming the step), and once the transcript is
/// used up there is no card (not_found) and no removal (timeout).
class ReplayReader final : public Reader {
 public:
  /// strict: every C-APDU must equal the recorded one (a test's exact replay); otherwise the
  /// recorded commands are not compared (the fuzz target, whose answers are made up).
  explicit ReplayReader(Transcript t, bool strict = true) : t_(std::move(t)), strict_(strict) {}
  Result<void> wait_card(Millis timeout) override;
  Result<Bytes> transceive(ByteView capdu, Millis timeout) override;
  Result<void> wait_removal(Millis timeout) override;
  std::string name() const override { return "replay"; }
  /// True once every recorded event was played.
  bool finished() const noexcept { return next_ == t_.steps.size(); }
  /// The index of the next event to play.
  std::size_t position() const noexcept { return next_; }

 private:
  Error mismatch(std::string_view call) const;
  Transcript t_;
  bool strict_;
  std::size_t next_ = 0;
};

}  // namespace otac::terminal
