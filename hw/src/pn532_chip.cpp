#include "otac/hw/pn532_chip.hpp"

#include <algorithm>
#include <charconv>
#include <string>
#include <vector>

#include "otac/common/cursor.hpp"

namespace otac::hw::pn532 {
namespace {

// Command codes (PN532 user manual UM0701-02, section 7).
constexpr std::uint8_t cmd_diagnose = 0x00;
constexpr std::uint8_t cmd_get_firmware_version = 0x02;
constexpr std::uint8_t cmd_get_general_status = 0x04;
constexpr std::uint8_t cmd_read_register = 0x06;
constexpr std::uint8_t cmd_write_register = 0x08;
constexpr std::uint8_t cmd_read_gpio = 0x0C;
constexpr std::uint8_t cmd_write_gpio = 0x0E;
constexpr std::uint8_t cmd_set_serial_baud_rate = 0x10;
constexpr std::uint8_t cmd_set_parameters = 0x12;
constexpr std::uint8_t cmd_sam_configuration = 0x14;
constexpr std::uint8_t cmd_power_down = 0x16;
constexpr std::uint8_t cmd_rf_configuration = 0x32;
constexpr std::uint8_t cmd_in_data_exchange = 0x40;
constexpr std::uint8_t cmd_in_communicate_thru = 0x42;
constexpr std::uint8_t cmd_in_deselect = 0x44;
constexpr std::uint8_t cmd_in_jump_for_psl = 0x46;
constexpr std::uint8_t cmd_in_list_passive_target = 0x4A;
constexpr std::uint8_t cmd_in_psl = 0x4E;
constexpr std::uint8_t cmd_in_atr = 0x50;
constexpr std::uint8_t cmd_in_release = 0x52;
constexpr std::uint8_t cmd_in_select = 0x54;
constexpr std::uint8_t cmd_in_jump_for_dep = 0x56;
constexpr std::uint8_t cmd_in_auto_poll = 0x60;

// Status byte values (UM0701-02 table "Error code list").
constexpr std::uint8_t st_ok = 0x00;
constexpr std::uint8_t st_timeout = 0x01;      // the target did not answer
constexpr std::uint8_t st_buffer_overflow = 0x09;
constexpr std::uint8_t st_invalid_param = 0x10;
constexpr std::uint8_t st_wrong_context = 0x27;  // no target activated

constexpr std::uint8_t param_auto_rats = 0x10;  // SetParameters fAutomaticRATS
constexpr std::size_t max_pn532_data = 262;      // DataOut / DataIn limit of InDataExchange

Bytes reply(std::uint8_t cmd, std::initializer_list<std::uint8_t> rest = {}) {
  Bytes r{tfi_chip, static_cast<std::uint8_t>(cmd + 1)};
  r.insert(r.end(), rest.begin(), rest.end());
  return r;
}

std::optional<std::uint64_t> parse_uint(std::string_view s, int base = 10) {
  std::uint64_t v = 0;
  const auto* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v, base);
  if (ec != std::errc{} || p != end || s.empty()) return std::nullopt;
  return v;
}

std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size() && words.size() < 8) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '\n') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

}  // namespace

Chip::Chip(Card& card, Identity identity, Faults faults)
    : card_(card), id_(std::move(identity)), faults_(faults) {}

bool Chip::card_in_field() const { return card_.connected() && !faults_.card_out; }

void Chip::receive(ByteView host_bytes, Clock::time_point now) {
  decoder_.feed(host_bytes);
  // Each frame is at least 6 bytes, so this bound is never the limiting factor in practice.
  for (int i = 0; i < 1024; ++i) {
    auto next = decoder_.next();
    if (!next) break;
    if (!*next) {
      ++stats_.bad_frames;  // a real PN532 stays silent; the host times out waiting for ACK
      continue;
    }
    handle_frame(next->value(), now);
  }
}

void Chip::handle_frame(const Frame& f, Clock::time_point now) {
  asleep_ = false;  // any frame after the wake-up preamble finds the chip awake
  if (f.kind == FrameKind::ack) {
    pending_.reset();  // the host aborts the running command
    return;
  }
  if (f.kind == FrameKind::nack) {
    append(out_, last_answer_);  // the host missed our answer: send it again, as the chip does
    return;
  }
  if (f.data.size() < 2 || f.data[0] != tfi_host) {
    ++stats_.bad_frames;
    append(out_, ack_frame());
    append(out_, error_frame());
    return;
  }
  ++stats_.frames;
  pending_.reset();  // a new command supersedes a command still running
  append(out_, ack_frame());
  if (faults_.error_frames > 0) {
    --faults_.error_frames;
    append(out_, error_frame());
    return;
  }
  Outcome o = execute(f.data, now);
  if (o.syntax_error) {
    append(out_, error_frame());
  } else if (!o.answer) {
    Pending p;
    p.command = f.data;
    p.waiting_for_card = true;
    const auto budget = poll_budget(f.data);
    p.has_deadline = budget.has_value();
    if (budget) p.due = now + *budget;
    pending_ = std::move(p);
  } else if (o.card_traffic && faults_.delay_ms > 0) {
    Pending p;
    p.answer = std::move(*o.answer);
    p.due = now + std::chrono::milliseconds(faults_.delay_ms);
    pending_ = std::move(p);
  } else {
    send_answer(std::move(*o.answer));
  }
}

void Chip::send_answer(Bytes answer) {
  Bytes frame = encode_frame(answer);
  last_answer_ = frame;  // a NACK gets the intact frame, as if the line had garbled it
  if (faults_.corrupt > 0) {
    --faults_.corrupt;
    frame[frame.size() - 2] = static_cast<std::uint8_t>(frame[frame.size() - 2] ^ 0x5A);  // DCS
  }
  append(out_, frame);
}

void Chip::tick(Clock::time_point now) {
  if (!pending_) return;
  if (pending_->waiting_for_card) {
    if (card_in_field()) {
      Bytes command = std::move(pending_->command);
      pending_.reset();
      Outcome o = execute(command, now);
      if (o.answer) {
        send_answer(std::move(*o.answer));
      } else {
        // The card left again before activation; keep waiting with the same budget.
        Pending p;
        p.command = std::move(command);
        p.waiting_for_card = true;
        const auto budget = poll_budget(p.command);
        p.has_deadline = budget.has_value();
        if (budget) p.due = now + *budget;
        pending_ = std::move(p);
      }
    } else if (pending_->has_deadline && now >= pending_->due) {
      const std::uint8_t cmd = pending_->command[1];
      pending_.reset();
      send_answer(reply(cmd, {0x00}));  // NbTg = 0
    }
    return;
  }
  if (now >= pending_->due) {
    Bytes answer = std::move(pending_->answer);
    pending_.reset();
    send_answer(std::move(answer));
  }
}

Bytes Chip::take_output() {
  Bytes out;
  out.swap(out_);
  return out;
}

std::optional<Chip::Clock::time_point> Chip::next_wakeup() const {
  if (!pending_) return std::nullopt;
  if (pending_->waiting_for_card && !pending_->has_deadline) return std::nullopt;
  return pending_->due;
}

std::optional<Chip::Clock::duration> Chip::poll_budget(ByteView data) const {
  if (data.size() >= 4 && data[1] == cmd_in_auto_poll) {
    const std::uint8_t poll_nr = data[2];
    const std::uint8_t period = data[3];
    if (poll_nr == 0xFF) return std::nullopt;  // endless polling
    const auto types = static_cast<long>(data.size() - 4);
    return std::chrono::milliseconds(150L * poll_nr * period * std::max(1L, types));
  }
  return std::nullopt;  // InListPassiveTarget waits only with endless retries
}

Chip::Outcome Chip::execute(ByteView data, Clock::time_point /*now*/) {
  const std::uint8_t cmd = data[1];
  const ByteView params = data.subspan(2);
  auto ok = [](Bytes b) { return Outcome{std::move(b), false, false}; };
  auto syntax = [] { return Outcome{Bytes{}, false, true}; };
  switch (cmd) {
    case cmd_diagnose:
      return diagnose(params);
    case cmd_get_firmware_version:
      if (!params.empty()) return syntax();
      return ok(reply(cmd, {0x32, 0x01, 0x06, 0x07}));  // IC PN532, v1.6, ISO A+B, FeliCa
    case cmd_get_general_status:
      return general_status();
    case cmd_read_register:
      return read_register(params);
    case cmd_write_register:
      return write_register(params);
    case cmd_read_gpio:
      return ok(reply(cmd, {0xFF, 0xFF, 0x00}));
    case cmd_write_gpio:
    case cmd_set_serial_baud_rate:
      return ok(reply(cmd));
    case cmd_set_parameters: {
      Cursor c(params, "SetParameters");
      const std::uint8_t flags = c.u8("Flags");
      if (!c.finish()) return syntax();
      parameters_ = flags;
      return ok(reply(cmd));
    }
    case cmd_sam_configuration: {
      if (params.empty() || params.size() > 3 || params[0] < 1 || params[0] > 4) return syntax();
      return ok(reply(cmd));
    }
    case cmd_power_down: {
      if (params.empty() || params.size() > 2) return syntax();
      release();
      rf_on_ = false;
      asleep_ = true;
      return ok(reply(cmd, {st_ok}));
    }
    case cmd_rf_configuration:
      return rf_configuration(params);
    case cmd_in_list_passive_target:
      return in_list_passive_target(params);
    case cmd_in_auto_poll:
      return in_auto_poll(params);
    case cmd_in_data_exchange:
      return in_data_exchange(params);
    case cmd_in_communicate_thru:
      return in_communicate_thru(params);
    case cmd_in_deselect:
    case cmd_in_release: {
      Cursor c(params, "InRelease/InDeselect");
      (void)c.u8("Tg");
      if (!c.finish()) return syntax();
      release();
      return ok(reply(cmd, {st_ok}));
    }
    case cmd_in_select: {
      Cursor c(params, "InSelect");
      const std::uint8_t tg = c.u8("Tg");
      if (!c.finish()) return syntax();
      if (tg != 1 || !card_in_field() || !activate()) return ok(reply(cmd, {st_wrong_context}));
      return ok(reply(cmd, {st_ok}));
    }
    case cmd_in_jump_for_psl:
    case cmd_in_jump_for_dep:
    case cmd_in_atr:
    case cmd_in_psl:
      return ok(reply(cmd, {st_timeout}));  // no NFC-DEP target is emulated
    default:
      return syntax();
  }
}

Chip::Outcome Chip::diagnose(ByteView params) {
  Cursor c(params, "Diagnose");
  const std::uint8_t test = c.u8("NumTst");
  if (!c.ok()) return Outcome{Bytes{}, false, true};
  Bytes r = reply(cmd_diagnose);
  switch (test) {
    case 0x00:  // communication line test: echo NumTst and InParam
      append(r, params);
      break;
    case 0x01:  // ROM test
    case 0x02:  // RAM test
      if (!c.finish()) return Outcome{Bytes{}, false, true};
      r.push_back(st_ok);
      break;
    case 0x06:  // card presence
      r.push_back(target_ && card_in_field() ? st_ok : st_timeout);
      break;
    default:
      return Outcome{Bytes{}, false, true};
  }
  return Outcome{std::move(r), false, false};
}

Chip::Outcome Chip::general_status() {
  Bytes r = reply(cmd_get_general_status, {last_error_, static_cast<std::uint8_t>(rf_on_ ? 1 : 0)});
  if (target_) {
    r.insert(r.end(), {0x01, 0x01, 0x00, 0x00, 0x00});  // NbTg 1: Tg 1, 106 kbps both ways, type A
  } else {
    r.push_back(0x00);
  }
  r.push_back(0x00);  // SAM status
  return Outcome{std::move(r), false, false};
}

Chip::Outcome Chip::read_register(ByteView params) {
  if (params.empty() || params.size() % 2 != 0) return Outcome{Bytes{}, false, true};
  Cursor c(params, "ReadRegister");
  Bytes r = reply(cmd_read_register);
  while (!c.empty()) {
    const std::uint16_t addr = c.u16("ADR");
    auto it = registers_.find(addr);
    r.push_back(it == registers_.end() ? 0x00 : it->second);
  }
  if (!c.finish()) return Outcome{Bytes{}, false, true};
  return Outcome{std::move(r), false, false};
}

Chip::Outcome Chip::write_register(ByteView params) {
  if (params.empty() || params.size() % 3 != 0) return Outcome{Bytes{}, false, true};
  Cursor c(params, "WriteRegister");
  while (!c.empty()) {
    const std::uint16_t addr = c.u16("ADR");
    const std::uint8_t val = c.u8("VAL");
    registers_[addr] = val;
  }
  if (!c.finish()) return Outcome{Bytes{}, false, true};
  return Outcome{reply(cmd_write_register), false, false};
}

Chip::Outcome Chip::rf_configuration(ByteView params) {
  Cursor c(params, "RFConfiguration");
  const std::uint8_t item = c.u8("CfgItem");
  if (!c.ok()) return Outcome{Bytes{}, false, true};
  if (item == 0x01) {  // RF field
    const std::uint8_t field = c.u8("RF field");
    if (!c.finish()) return Outcome{Bytes{}, false, true};
    rf_on_ = (field & 0x01) != 0;
    if (!rf_on_) release();  // the card loses power with the field
  } else if (item == 0x05) {  // MaxRetries: ATR, PSL, passive activation
    (void)c.u8("MxRtyATR");
    (void)c.u8("MxRtyPSL");
    const std::uint8_t passive = c.u8("MxRtyPassiveActivation");
    if (!c.finish()) return Outcome{Bytes{}, false, true};
    max_retries_passive_ = passive;
  }
  // Timings (02), MaxRtyCOM (04) and analog settings (0A..0D) do not change the model.
  return Outcome{reply(cmd_rf_configuration), false, false};
}

bool Chip::activate() {
  if (!card_in_field()) return false;
  if (auto r = card_.power_on(); !r) return false;
  target_ = true;
  block_number_ = 0;
  ++stats_.selects;
  return true;
}

void Chip::release() {
  if (target_) card_.power_off();
  target_ = false;
  iso4_ = false;
}

bool Chip::take_removal() {
  if (!faults_.remove_after) return false;
  if (*faults_.remove_after == 0) {
    faults_.remove_after.reset();
    faults_.card_out = true;
    return true;
  }
  --*faults_.remove_after;
  return false;
}

Bytes Chip::target_data(bool with_ats) const {
  Bytes t{0x01, id_.atqa_hi, id_.atqa_lo, id_.sak, static_cast<std::uint8_t>(id_.uid.size())};
  append(t, id_.uid);
  if (with_ats) append(t, id_.ats);
  return t;
}

Chip::Outcome Chip::in_list_passive_target(ByteView params) {
  Cursor c(params, "InListPassiveTarget");
  const std::uint8_t max_tg = c.u8("MaxTg");
  const std::uint8_t br_ty = c.u8("BrTy");
  const ByteView init = c.rest();
  if (!c.ok() || max_tg == 0 || max_tg > 2) return Outcome{Bytes{}, false, true};
  rf_on_ = true;  // the chip switches the field on by itself
  release();
  if (br_ty != 0x00) return Outcome{reply(cmd_in_list_passive_target, {0x00}), false, false};  // no FeliCa/B/Jewel
  if (!init.empty() && !std::equal(init.begin(), init.end(), id_.uid.begin(), id_.uid.end())) {
    return Outcome{reply(cmd_in_list_passive_target, {0x00}), false, false};
  }
  if (!card_in_field()) {
    if (max_retries_passive_ == 0xFF) return Outcome{std::nullopt, false, false};  // wait for a card
    return Outcome{reply(cmd_in_list_passive_target, {0x00}), false, false};
  }
  if (!activate()) return Outcome{reply(cmd_in_list_passive_target, {0x00}), false, false};
  const bool rats = (parameters_ & param_auto_rats) != 0 && (id_.sak & 0x20) != 0;
  iso4_ = rats;
  Bytes r = reply(cmd_in_list_passive_target, {0x01});
  append(r, target_data(rats));
  return Outcome{std::move(r), false, false};
}

Chip::Outcome Chip::in_auto_poll(ByteView params) {
  Cursor c(params, "InAutoPoll");
  const std::uint8_t poll_nr = c.u8("PollNr");
  const std::uint8_t period = c.u8("Period");
  const ByteView types = c.rest();
  if (!c.ok() || poll_nr == 0 || period == 0 || types.empty() || types.size() > 15) {
    return Outcome{Bytes{}, false, true};
  }
  rf_on_ = true;
  release();
  // Generic 106 kbps (00), MIFARE (10) and ISO 14443-4 A (20) all find a type A card.
  auto it = std::find_if(types.begin(), types.end(), [](std::uint8_t t) { return t == 0x00 || t == 0x10 || t == 0x20; });
  if (it == types.end()) return Outcome{reply(cmd_in_auto_poll, {0x00}), false, false};
  if (!card_in_field() || !activate()) return Outcome{std::nullopt, false, false};
  const bool rats = (*it == 0x20 || (parameters_ & param_auto_rats) != 0) && (id_.sak & 0x20) != 0;
  iso4_ = rats;
  const Bytes t = target_data(rats);
  Bytes r = reply(cmd_in_auto_poll, {0x01, *it, static_cast<std::uint8_t>(t.size())});
  append(r, t);
  return Outcome{std::move(r), false, false};
}

Chip::Outcome Chip::in_data_exchange(ByteView params) {
  Cursor c(params, "InDataExchange");
  const std::uint8_t tg = c.u8("Tg");
  const ByteView apdu = c.rest();
  if (!c.ok()) return Outcome{Bytes{}, false, true};
  auto status = [this](std::uint8_t s) {
    last_error_ = s;
    return Outcome{reply(cmd_in_data_exchange, {s}), true, false};
  };
  if ((tg & 0x3F) != 1 || !target_) return status(st_wrong_context);
  if (faults_.status_errors > 0) {
    --faults_.status_errors;
    return status(faults_.status_byte);
  }
  if (take_removal() || !card_in_field()) {
    release();
    return status(st_timeout);  // what a PN532 reports when the card left the field
  }
  if (apdu.empty() || apdu.size() > max_pn532_data) return status(st_invalid_param);
  auto r = card_.transmit(apdu);
  if (!r) {
    release();
    return status(st_timeout);
  }
  if (r->size() > max_pn532_data) return status(st_buffer_overflow);
  ++stats_.apdus;
  block_number_ ^= 1;
  last_error_ = st_ok;
  Bytes answer = reply(cmd_in_data_exchange, {st_ok});
  append(answer, *r);
  return Outcome{std::move(answer), true, false};
}

Chip::Outcome Chip::in_communicate_thru(ByteView params) {
  auto status = [this](std::uint8_t s, std::initializer_list<std::uint8_t> rest = {}) {
    last_error_ = s;
    Bytes r = reply(cmd_in_communicate_thru, {s});
    r.insert(r.end(), rest.begin(), rest.end());
    return Outcome{std::move(r), true, false};
  };
  // The only raw frame an ISO 14443-4 card answers here is an R-block: libnfc pings a PN532
  // target with R(NAK) to check presence; the card answers R(ACK) with its block number.
  const bool r_block = params.size() == 1 && (params[0] & 0xE6) == 0xA2;
  if (r_block && target_ && iso4_) {
    if (take_removal() || !card_in_field()) {
      release();
      return status(st_timeout);
    }
    return status(st_ok, {static_cast<std::uint8_t>(0xA2 | block_number_)});
  }
  return status(st_timeout);  // probes for other technologies find nothing
}

const char* Chip::control_help() {
  return "  remove               take the card out of the field (the vicc stays connected)\n"
         "  insert               put the card back into the field\n"
         "  remove-after N|off   let N more APDUs pass, then take the card out of the field\n"
         "  delay MS             delay every answer carrying card traffic by MS ms (0 = off)\n"
         "  corrupt N            give the next N answer frames a wrong data checksum\n"
         "  error-frames N       answer the next N commands with the error frame\n"
         "  status HEX [N]       answer the next N (default 1) InDataExchange with status HEX\n"
         "  clear                remove every fault and put the card back\n"
         "  stats                print counters and the card state\n";
}

std::string Chip::control(std::string_view line, Clock::time_point now) {
  const auto w = split_words(line);
  if (w.empty()) return "error: empty command; send 'help'";
  const std::string_view verb = w[0];
  auto number = [&](std::size_t i, std::uint64_t max) -> std::optional<std::uint32_t> {
    if (i >= w.size()) return std::nullopt;
    auto v = parse_uint(w[i]);
    if (!v || *v > max) return std::nullopt;
    return static_cast<std::uint32_t>(*v);
  };
  std::string result = "ok";
  if (verb == "remove" && w.size() == 1) {
    faults_.card_out = true;
    release();
  } else if (verb == "insert" && w.size() == 1) {
    faults_.card_out = false;
  } else if (verb == "remove-after" && w.size() == 2) {
    if (w[1] == "off") {
      faults_.remove_after.reset();
    } else if (auto n = number(1, 1000000)) {
      faults_.remove_after = *n;
    } else {
      return "error: remove-after wants a count 0..1000000 or 'off'";
    }
  } else if (verb == "delay" && w.size() == 2) {
    auto n = number(1, 600000);
    if (!n) return "error: delay wants milliseconds 0..600000";
    faults_.delay_ms = *n;
  } else if (verb == "corrupt" && w.size() == 2) {
    auto n = number(1, 1000000);
    if (!n) return "error: corrupt wants a count 0..1000000";
    faults_.corrupt = *n;
  } else if (verb == "error-frames" && w.size() == 2) {
    auto n = number(1, 1000000);
    if (!n) return "error: error-frames wants a count 0..1000000";
    faults_.error_frames = *n;
  } else if (verb == "status" && (w.size() == 2 || w.size() == 3)) {
    auto s = parse_uint(w[1], 16);
    if (!s || *s > 0xFF) return "error: status wants a hex status byte such as 01 (timeout) or 29 (released)";
    std::uint32_t n = 1;
    if (w.size() == 3) {
      auto c = number(2, 1000000);
      if (!c) return "error: status count must be 0..1000000";
      n = *c;
    }
    faults_.status_byte = static_cast<std::uint8_t>(*s);
    faults_.status_errors = n;
  } else if (verb == "clear" && w.size() == 1) {
    faults_ = Faults{};
  } else if (verb == "stats" && w.size() == 1) {
    result += " frames=" + std::to_string(stats_.frames) + " bad_frames=" + std::to_string(stats_.bad_frames) +
              " selects=" + std::to_string(stats_.selects) + " apdus=" + std::to_string(stats_.apdus) +
              " card=" + (!card_.connected() ? "absent" : faults_.card_out ? "out" : "in") +
              " target=" + (target_ ? "1" : "0");
  } else if (verb == "help") {
    result += "\n";
    result += control_help();
  } else {
    return "error: unknown control command '" + std::string(line.substr(0, 64)) + "'; send 'help'";
  }
  tick(now);  // an inserted card answers a waiting poll at once
  return result;
}

}  // namespace otac::hw::pn532
