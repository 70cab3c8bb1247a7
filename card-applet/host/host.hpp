// Pieces of the otac-card host: sockets, the vicc framing, the Kannel fake-SMSC line format.
// Protocol logic (framing, line parsing) does no I/O so that tests can drive it directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"
#include "otac/sys/fd.hpp"

namespace otac::card_host {

/// An owned socket or file descriptor (the one shared class).
using Fd = sys::Fd;

/// HOST:PORT split; port 1..65535.
Result<std::pair<std::string, std::uint16_t>> parse_endpoint(std::string_view s);
/// A connected TCP socket (non-blocking afterwards), with TCP_NODELAY; timeout for the connect.
Result<Fd> connect_tcp(const std::string& host, std::uint16_t port, int timeout_ms);
/// Writes everything (the socket is non-blocking: waits up to timeout_ms in total).
Result<void> write_all(int fd, ByteView data, int timeout_ms);
/// Sets TCP_QUICKACK; Linux clears it after use, so it is set again before every read.
void quickack(int fd);

/// vicc framing (vpcd protocol): 2-byte big-endian length, then the payload.
class ViccFramer {
 public:
  /// Adds received bytes.
  void feed(ByteView data) { append(buf_, data); }
  /// The next complete message, if any.
  std::optional<Bytes> next();
  /// Encodes a message.
  static Bytes frame(ByteView payload);

 private:
  Bytes buf_;
};

/// percent_encode / percent_decode (otac/common/bytes.hpp) for the bytes of a fake-SMSC line.
std::string url_encode(ByteView data);
Result<Bytes> url_decode(std::string_view s);

/// One message on the fake-SMSC line protocol.
struct FakeSms {
  std::string from;
  std::string to;
  Bytes udh;   ///< as Kannel carries it: starting with the UDHL byte; empty if none
  Bytes data;
};
/// Parses an MT line: "from to udh <udh> [data] <bytes>", "from to data <bytes>" or
/// "from to text <text>" (trailing CR/LF removed).
Result<FakeSms> parse_mt_line(std::string_view line);
/// Formats an MO line: "from to udh <udh> <bytes>\n" (or "data" without UDH).
std::string format_mo_line(const FakeSms& m);

/// Splits complete '\n'-terminated lines off a buffer (bounded line length).
class LineSplitter {
 public:
  void feed(ByteView data) { append(buf_, data); }
  /// The next line; an error when a line exceeds 64 KiB (the buffer is then dropped).
  std::optional<Result<std::string>> next();

 private:
  Bytes buf_;
};

}  // namespace otac::card_host
