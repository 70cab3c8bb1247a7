// PN532 host-interface frames (UART/HSU): decoding what a host sends, encoding what the chip
// answers. Pure byte logic, no I/O, so it can be driven byte for byte and fuzzed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "otac/common/bytes.hpp"
#include "otac/common/result.hpp"

namespace otac::hw::pn532 {

/// Frame identifier of host-to-chip information frames.
inline constexpr std::uint8_t tfi_host = 0xD4;
/// Frame identifier of chip-to-host information frames.
inline constexpr std::uint8_t tfi_chip = 0xD5;
/// Largest TFI+PD length the emulator accepts in one frame (PN532 buffer: 265 bytes + slack).
inline constexpr std::size_t max_frame_data = 300;
/// Largest TFI+PD length sent in a normal (not extended) frame.
inline constexpr std::size_t max_normal_data = 255;

/// What kind of frame arrived.
enum class FrameKind { information, ack, nack };

/// One decoded host frame: for information frames, data is TFI followed by PD0..PDn.
struct Frame {
  FrameKind kind = FrameKind::information;
  Bytes data;
  bool extended = false;
};

/// Incremental decoder of the byte stream a host writes: skips wake-up bytes (0x55), preambles
/// and postambles, finds each start code 00 FF and checks LEN/LCS and DCS.
class FrameDecoder {
 public:
  /// Appends host bytes. The buffer is bounded: beyond 4 KiB the oldest bytes are dropped.
  void feed(ByteView bytes);
  /// The next complete frame; nullopt when more bytes are needed; an Error for a frame with a
  /// bad checksum or length (its bytes are skipped, decoding resumes after them).
  std::optional<Result<Frame>> next();
  /// Bytes buffered and not yet decoded.
  std::size_t buffered() const { return buf_.size(); }

 private:
  Bytes buf_;
};

/// An information frame carrying data (TFI + PD): normal up to 255 bytes, extended above.
Bytes encode_frame(ByteView data);
/// The ACK frame 00 00 FF 00 FF 00.
Bytes ack_frame();
/// The NACK frame 00 00 FF FF 00 00.
Bytes nack_frame();
/// The application-level error frame 00 00 FF 01 FF 7F 81 00 (syntax error).
Bytes error_frame();

}  // namespace otac::hw::pn532
