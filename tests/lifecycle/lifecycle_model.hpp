// A model-based lifecycle soak: the real applet core (APDUs in and out, its real storage) and
// the real backend Service (SQLite in a temporary directory) driven through long seeded
// random sequences of what users, operators, terminals and the SMS network do, with the
// invariants of DESIGN.md §6 checked after every step. docs/operations.md describes how to
// run it; a failing run prints its seed and a shrunk action list that replay() runs again.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace otac::lifecycle {

/// What happens in one step. The argument is a random draw that the action interprets when
/// it runs (an amount, which message in flight, which RSC), so that any subset of a recorded
/// sequence still replays.
enum class Act : std::uint8_t {
  tap_pos,           ///< a purchase of a random amount (PIN in the challenge above the PIN limit)
  tap_door,          ///< a door: allowed, outside its hours, or not permitted
  display_code,      ///< the user shows a code (PIN first) and types it at a keypad
  user_refresh,      ///< the user asks for a refresh (PIN first)
  operator_refresh,  ///< Service::refresh_card
  rotate_key,        ///< Service::rotate_key (E2)
  signature_key,     ///< Service::set_signature_key (E3)
  server_key,        ///< Service::install_server_key (E4; lists of asymmetric cards are E5)
  card_fetch,        ///< the phone FETCHes the card's outbox into the network
  backend_send,      ///< the backend hands its due MT messages to the network
  deliver_mt,        ///< one MT part in flight (any of them: reordering) reaches the card
  deliver_mo,        ///< one MO message in flight reaches the backend
  drop_mt,           ///< an MT part is lost
  drop_mo,           ///< an MO message (request or PoR) is lost
  dup_mt,            ///< an MT part is duplicated
  dup_mo,            ///< an MO message is duplicated
  refuse_packet,     ///< the card refuses a whole packet in flight: a PoR with RSC 01..0C
  restart_backend,   ///< the Service is destroyed and re-created on the same database
  tap_lost,          ///< a tap whose card answer never reaches the terminal
  tap_retry,         ///< a tap whose first authorization times out; the same txn_id is resent
  terminal_poll,     ///< a terminal waiting on a held transaction asks again, or gives up
  operator_decide,   ///< an operator approves or declines a held transaction (maybe late)
  block,             ///< Service::block_card
  unblock,           ///< Service::unblock_card
  pin_failure,       ///< a wrong PIN; once the PIN is blocked, the user unblocks it with the PUK
  quiet,             ///< every SMS in flight is delivered, in order, until nothing moves
};

/// One recorded step.
struct Action {
  Act act = Act::quiet;
  std::uint32_t arg = 0;
  bool operator==(const Action&) const = default;
};

/// Lifecycle bugs the soak found. While one is listed in Options::open_bugs, a failure its
/// trigger explains does not fail the run: the card concerned is retired and a fresh one is
/// enrolled (counted in Stats::retired). all_known_bugs() lists the open ones; a fixed one
/// stays here for its regression sequence in found() (test_lifecycle.cpp).
enum class KnownBug : std::uint8_t {
  refused_list_stuck = 1,       ///< fixed (issue 12 #1): a list refused with RSC 07 left refresh_pending and list_push_in_flight set
  operator_refresh_lost = 2,    ///< fixed (issue 12 #2): an operator refresh the card refused was lost silently
  display_no_push = 3,          ///< fixed (issue 12 #3): display codes never triggered the backend's threshold push
  held_never_expires = 4,       ///< fixed (issue 12 #4): held transactions never expired; an operator could approve after the terminal gave up
  lost_sms_not_repaired = 5,    ///< fixed: a lost list, card request or PoR was never repaired (backend resends, card re-asks on polls)
  display_window_stale = 7,     ///< fixed: ten codes used on the card but never consumed at the backend (blocked card, lost answers) put every later display code outside the backend's window
  request_under_retired_key = 8,  ///< fixed: a card request queued under K before the card switched to K' was refused once the backend retired K
  refused_after_loaded = 9,     ///< fixed: list N loaded from its first packet; a resend of N refused and that PoR read first made the backend withdraw codes the card holds
  unreadable_por_ignored = 6,   ///< fixed: a list sent under K reached a card already on K'; its unprotected RSC 06 PoR was rejected and the list never re-sent
};

/// The known bugs still open (the default of Options::open_bugs).
std::set<KnownBug> all_known_bugs();
/// "refused_list_stuck", ...
const char* bug_name(KnownBug b);

/// The card variants the model runs.
enum class CardKind : std::uint8_t { des3, aes, p256 };

/// How a run is set up.
struct Options {
  std::uint64_t seed = 1;
  CardKind kind = CardKind::des3;
  std::set<KnownBug> open_bugs = all_known_bugs();
  std::uint32_t quiet_every = 64;  ///< a quiet phase at least every this many steps
  bool verbose = false;            ///< print each action as it runs
};

/// A broken invariant.
struct Failure {
  std::string invariant;  ///< liveness, agreement, double_approval, terminal_agrees, keys, ...
  std::string detail;
  std::size_t step = 0;   ///< index of the action after which it was found
};

/// What a run did.
struct Stats {
  std::size_t steps = 0;
  std::size_t approvals = 0, declines = 0, held = 0, quiet_phases = 0, lists_loaded = 0, restarts = 0;
  std::size_t cancel_window = 0;           ///< operator approvals in the last second before the backend's deadline whose cancel was lost (protocol.md 5.2)
  std::size_t retired = 0;                 ///< cards retired because an open known bug struck
  std::set<KnownBug> struck;               ///< which open bugs struck
};

/// The result of running or replaying a sequence.
struct Outcome {
  std::optional<Failure> failure;
  Stats stats;
  std::vector<Action> actions;  ///< what ran (for a generated run: the recorded sequence)
};

/// Runs `steps` generated actions (stops at the first failure or after `seconds` > 0).
Outcome run(const Options& opt, std::size_t steps, double seconds = 0);
/// Runs an explicit action list: the regression form of a shrunk failure.
Outcome replay(const Options& opt, const std::vector<Action>& actions);
/// Delta-debugging: the smallest sub-list of `actions` found (within `seconds`) whose replay
/// still breaks the same invariant.
std::vector<Action> shrink(const Options& opt, const std::vector<Action>& actions, const std::string& invariant,
                           double seconds);
/// C++ source for an action list: {{Act::tap_pos, 12}, ...}.
std::string to_source(const std::vector<Action>& actions);
/// A report of a failed run: seed, step, invariant, detail, the shrunk list.
std::string describe(const Options& opt, const Failure& f, const std::vector<Action>& shrunk);

}  // namespace otac::lifecycle
