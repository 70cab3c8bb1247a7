// A contactless reader as the flow needs it: wait for a card, exchange APDUs, wait for the
// card to leave. Two back ends: libnfc (PN532 and friends) and PC/SC (CCID readers).
//
// Error codes every implementation uses, so that the flow can name the reason:
//   Errc::not_found  no card (none came, or it left mid-transaction)
//   Errc::timeout    the card did not answer in time
//   Errc::io         the reader failed (unplugged, busy, driver error)
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "otac/common/apdu.hpp"
#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::terminal {

using Millis = std::chrono::milliseconds;

/// One reader. Not thread-safe.
class Reader {
 public:
  virtual ~Reader() = default;
  /// Waits until an ISO 14443-4 (or PC/SC) card is in the field and selected.
  virtual Result<void> wait_card(Millis timeout) = 0;
  /// Sends one C-APDU and returns the raw R-APDU (data || SW1 SW2).
  virtual Result<Bytes> transceive(ByteView capdu, Millis timeout) = 0;
  /// Waits until the card has left the field (ok) or the timeout passes (timeout).
  virtual Result<void> wait_removal(Millis timeout) = 0;
  /// A name for logs ("libnfc pn532_uart:/dev/ttyUSB0", "PC/SC Virtual PCD 00 00").
  virtual std::string name() const = 0;
};

/// Opens a reader: "pcsc" or "pcsc:NAME" for PC/SC (the first reader whose name starts with
/// NAME), "libnfc" for LIBNFC_DEFAULT_DEVICE, anything else is a libnfc connstring.
Result<std::unique_ptr<Reader>> open_reader(const std::string& spec);

/// Opens a libnfc reader by connstring (empty: LIBNFC_DEFAULT_DEVICE / the first found).
Result<std::unique_ptr<Reader>> open_nfc_reader(const std::string& connstring);

/// Opens a PC/SC reader by name prefix (empty: the first reader).
Result<std::unique_ptr<Reader>> open_pcsc_reader(const std::string& name_prefix);

/// Sends a command and completes it per ISO 7816-4 5.3.4: on 61xx it sends GET RESPONSE
/// (Le = xx) and joins the data; on 6Cxx it resends the command with Le = xx. Bounded to 8
/// extra exchanges. exchanges (if given) is increased by every command/response pair.
Result<apdu::Response> transmit(Reader& r, const apdu::Command& c, Millis timeout, int* exchanges = nullptr);

}  // namespace otac::terminal
