// A model of a PN532 as libnfc's pn532_uart driver drives it: host frames in, ACKs and answers
// out, one ISO 14443-4 type A card in the field behind a small Card interface. No I/O: the
// caller moves bytes and time, so tests and fuzzers drive it directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/hw/pn532_frame.hpp"

namespace otac::hw::pn532 {

/// The card in the field as the chip sees it (a vicc client in the emulator).
class Card {
 public:
  virtual ~Card() = default;
  /// True while a card is attached (the vicc client is connected).
  virtual bool connected() const = 0;
  /// Powers the card up (cold start of its applet state); fails if it does not answer.
  virtual Result<void> power_on() = 0;
  /// Powers the card down; never fails.
  virtual void power_off() = 0;
  /// Sends a C-APDU and returns the R-APDU.
  virtual Result<Bytes> transmit(ByteView capdu) = 0;
};

/// Fault injection for tests; changed by command-line flags or control commands.
struct Faults {
  bool card_out = false;                       ///< the card is held out of the field
  std::optional<std::uint32_t> remove_after;   ///< APDUs left before the card leaves the field
  std::uint32_t delay_ms = 0;                  ///< delay of answers carrying card traffic
  std::uint32_t corrupt = 0;                   ///< next N answers get a wrong DCS
  std::uint32_t error_frames = 0;              ///< next N commands get the error frame
  std::uint32_t status_errors = 0;             ///< next N InDataExchange get status_byte
  std::uint8_t status_byte = 0x01;             ///< status used by status_errors (01 = timeout)
};

/// How the emulated card presents itself to anticollision (ISO 14443-3 type A, -4 ATS).
struct Identity {
  Bytes uid{0x08, 0x4F, 0x54, 0x41};   ///< 4-byte random-type UID (first byte 08)
  std::uint8_t atqa_hi = 0x00;         ///< ATQA byte 1 as the PN532 reports it
  std::uint8_t atqa_lo = 0x04;         ///< ATQA byte 2
  std::uint8_t sak = 0x20;             ///< ISO 14443-4 compliant
  Bytes ats{0x05, 0x78, 0x80, 0x70, 0x02};  ///< TL counts itself; FSCI 8 (256 bytes)
};

/// Counters for logs and tests.
struct Stats {
  std::uint64_t frames = 0;        ///< information frames accepted
  std::uint64_t bad_frames = 0;    ///< frames with bad checksums or lengths
  std::uint64_t selects = 0;       ///< successful activations of the card
  std::uint64_t apdus = 0;         ///< APDUs exchanged with the card
};

/// The chip model.
class Chip {
 public:
  using Clock = std::chrono::steady_clock;

  /// card must outlive the chip.
  explicit Chip(Card& card, Identity identity = {}, Faults faults = {});

  /// Bytes written by the host. Answers become available through take_output().
  void receive(ByteView host_bytes, Clock::time_point now);
  /// Releases delayed answers that are due and answers polls waiting for a card that came.
  void tick(Clock::time_point now);
  /// Bytes for the host (ACKs and answer frames), in order; clears the queue.
  Bytes take_output();
  /// When tick() has something to do next, if anything is pending.
  std::optional<Clock::time_point> next_wakeup() const;
  /// Applies one control command (see control_help()); returns "ok ..." or "error: ...".
  std::string control(std::string_view line, Clock::time_point now);
  /// Text describing the control commands.
  static const char* control_help();
  /// True when a card is attached and not held out of the field.
  bool card_in_field() const;

  const Faults& faults() const { return faults_; }  ///< current faults
  const Stats& stats() const { return stats_; }     ///< counters
  bool asleep() const { return asleep_; }           ///< after PowerDown, until the next frame

 private:
  // An answer (TFI D5, CMD+1, ...), or a wait: for a card (polls) or for time (delay).
  struct Pending {
    Bytes command;                           // the frame data that is waiting (polls)
    Bytes answer;                            // ready answer (delays)
    Clock::time_point due{};                 // delay: when to send; poll: when to give up
    bool has_deadline = true;                // polls with endless retries wait forever
    bool waiting_for_card = false;
  };
  struct Outcome {                           // result of one command
    std::optional<Bytes> answer;             // nullopt: wait for a card
    bool card_traffic = false;               // subject to the delay fault
    bool syntax_error = false;               // answer with the error frame
  };

  void handle_frame(const Frame& f, Clock::time_point now);
  Outcome execute(ByteView data, Clock::time_point now);
  void send_answer(Bytes answer);
  std::optional<Clock::duration> poll_budget(ByteView data) const;

  Outcome diagnose(ByteView params);
  Outcome read_register(ByteView params);
  Outcome write_register(ByteView params);
  Outcome rf_configuration(ByteView params);
  Outcome in_list_passive_target(ByteView params);
  Outcome in_auto_poll(ByteView params);
  Outcome in_data_exchange(ByteView params);
  Outcome in_communicate_thru(ByteView params);
  Outcome general_status();
  Bytes target_data(bool with_ats) const;
  bool activate();
  void release();
  bool take_removal();

  Card& card_;
  Identity id_;
  Faults faults_;
  Stats stats_;
  FrameDecoder decoder_;
  Bytes out_;
  Bytes last_answer_;                  // resent when the host sends NACK
  std::optional<Pending> pending_;
  std::map<std::uint16_t, std::uint8_t> registers_;  // bounded by the 16-bit address space
  std::uint8_t parameters_ = 0x14;     // SetParameters flags; PN532 default has auto ATR_RES and RATS
  std::uint8_t max_retries_passive_ = 0xFF;
  bool rf_on_ = false;
  bool asleep_ = false;
  bool target_ = false;                // a target is activated (Tg 1)
  bool iso4_ = false;                  // it was activated with RATS
  std::uint8_t last_error_ = 0;
  std::uint8_t block_number_ = 0;      // ISO 14443-4 block number for presence checks
};

}  // namespace otac::hw::pn532
