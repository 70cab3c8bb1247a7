// The OTAC applet core: ISO 7816-4 command APDU bytes in, response APDU bytes out.
// No I/O: persistent state goes through a Storage with atomic commit; everything a
// terminal, the phone (ENVELOPE, FETCH) or the user's menu does arrives as an APDU.
// docs/protocol.md sections 2, 3, 4, 6 and 7 are the byte contract.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "otac/applet/storage.hpp"
#include "otac/common/bytes.hpp"

namespace otac::applet {

/// Fixed capacity, as on a real card.
inline constexpr std::size_t max_lists = 2;
inline constexpr std::size_t max_codes_per_list = 200;
inline constexpr std::size_t max_outbox = 4;
inline constexpr std::size_t max_sms_parts = 32;  // 2 x 200 codes fit; the backend sends at most 16

/// One applet instance. Each instance is one logical channel with its own transient state
/// (selection, PIN verified, the last transaction); persistent state is reloaded from the
/// storage at every command, so several instances (contactless side, phone menu) may share
/// one storage as long as calls are serialized (the host holds a file lock).
class Applet {
 public:
  explicit Applet(Storage& storage);
  ~Applet();
  Applet(const Applet&) = delete;
  Applet& operator=(const Applet&) = delete;

  /// Processes one command APDU and returns the response APDU (data || SW1 SW2). Never
  /// throws; a storage failure answers 6F00 and leaves the stored state unchanged.
  Bytes process(ByteView command);
  /// Card reset or power cycle: drops selection, PIN verification and the last transaction.
  void reset();
  /// The ATR the host presents (T=1, no historical bytes: 3B 80 80 01 01).
  static Bytes atr();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace otac::applet
