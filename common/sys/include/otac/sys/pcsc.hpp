// PC/SC (pcsc-lite): the context and card handles, owned once, and the one table that turns
// SCard return codes into Errors.
#pragma once

#include <winscard.h>

#include <string>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::sys::pcsc {

/// An Error for an SCard return code, prefixed by `where` and saying what to do.
/// Card gone: Errc::not_found; SCARD_E_TIMEOUT: Errc::timeout; everything else: Errc::io.
Error to_error(LONG rv, const std::string& where);

/// One SCARDCONTEXT, released once; move-only.
class Context {
 public:
  /// Connects to pcscd (system scope).
  static Result<Context> establish();
  Context(Context&& o) noexcept : c_(o.c_), valid_(o.valid_) { o.valid_ = false; }
  Context& operator=(Context&& o) noexcept;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() { release(); }

  SCARDCONTEXT get() const noexcept { return c_; }
  /// The names of the readers pcscd knows (empty list: none plugged in).
  Result<std::vector<std::string>> readers() const;

 private:
  explicit Context(SCARDCONTEXT c) noexcept : c_(c), valid_(true) {}
  void release() noexcept;
  SCARDCONTEXT c_ = 0;
  bool valid_ = false;
};

/// One SCARDHANDLE, disconnected once (leaving the card as it is unless said otherwise); move-only.
/// Must not outlive the Context it was connected through.
class Card {
 public:
  /// SCardConnect to `reader` with the given share mode and protocols (SCARD_PROTOCOL_T0/T1).
  static Result<Card> connect(const Context& ctx, const std::string& reader, DWORD share, DWORD protocols);
  Card(Card&& o) noexcept : h_(o.h_), protocol_(o.protocol_), connected_(o.connected_) { o.connected_ = false; }
  Card& operator=(Card&& o) noexcept;
  Card(const Card&) = delete;
  Card& operator=(const Card&) = delete;
  ~Card() { disconnect(SCARD_LEAVE_CARD); }

  /// Sends a C-APDU and gives the R-APDU (at most max_answer bytes, status word included).
  Result<Bytes> transmit(ByteView capdu, std::size_t max_answer = 258) const;
  /// SCardDisconnect with `how` (SCARD_LEAVE_CARD, SCARD_RESET_CARD, ...); then empty.
  void disconnect(DWORD how) noexcept;
  bool connected() const noexcept { return connected_; }
  /// The protocol agreed at connect (SCARD_PROTOCOL_T0 or _T1).
  DWORD protocol() const noexcept { return protocol_; }

 private:
  Card(SCARDHANDLE h, DWORD protocol) noexcept : h_(h), protocol_(protocol), connected_(true) {}
  SCARDHANDLE h_ = 0;
  DWORD protocol_ = 0;
  bool connected_ = false;
};

}  // namespace otac::sys::pcsc
