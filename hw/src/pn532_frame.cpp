#include "otac/hw/pn532_frame.hpp"

#include <string>

#include "otac/common/cursor.hpp"

namespace otac::hw::pn532 {
namespace {

constexpr std::size_t max_buffer = 4096;

std::uint8_t checksum_of(ByteView data) {
  unsigned sum = 0;
  for (auto b : data) sum += b;
  return static_cast<std::uint8_t>((0x100U - (sum & 0xFFU)) & 0xFFU);
}

}  // namespace

void FrameDecoder::feed(ByteView bytes) {
  append(buf_, bytes);
  if (buf_.size() > max_buffer) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(buf_.size() - max_buffer));
  }
}

std::optional<Result<Frame>> FrameDecoder::next() {
  // Find the start code 00 FF; everything before it is preamble, wake-up or line noise.
  std::size_t start = buf_.size();
  for (std::size_t i = 0; i + 1 < buf_.size(); ++i) {
    if (buf_[i] == 0x00 && buf_[i + 1] == 0xFF) {
      start = i;
      break;
    }
  }
  if (start == buf_.size()) {
    // Keep a trailing 00: it may be the first half of a start code.
    const bool keep = !buf_.empty() && buf_.back() == 0x00;
    buf_.erase(buf_.begin(), buf_.end() - (keep ? 1 : 0));
    return std::nullopt;
  }
  buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(start));

  // Skips the start code so that a damaged frame cannot stall the stream.
  auto skip_start = [this] { buf_.erase(buf_.begin(), buf_.begin() + 2); };
  auto consume = [this](std::size_t n) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(n));
  };

  if (buf_.size() < 4) return std::nullopt;
  Cursor head(ByteView(buf_).subspan(2), "PN532 frame header");
  const std::uint8_t len = head.u8("LEN");
  const std::uint8_t lcs = head.u8("LCS");
  if (len == 0x00 && lcs == 0xFF) {
    consume(4);
    return Result<Frame>(Frame{FrameKind::ack, {}, false});
  }
  if (len == 0xFF && lcs == 0x00) {
    consume(4);
    return Result<Frame>(Frame{FrameKind::nack, {}, false});
  }
  std::size_t n = 0;
  std::size_t header = 4;
  bool extended = false;
  if (len == 0xFF && lcs == 0xFF) {
    if (buf_.size() < 7) return std::nullopt;
    const std::uint16_t xlen = head.u16("LENM LENL");
    const std::uint8_t xlcs = head.u8("LCS");
    if (((xlen >> 8) + (xlen & 0xFFU) + xlcs) % 0x100U != 0) {
      skip_start();
      return Result<Frame>(make_error(Errc::bad_value, "PN532 extended frame: length checksum LCS does not match LENM LENL; frame skipped"));
    }
    n = xlen;
    header = 7;
    extended = true;
  } else {
    if ((static_cast<unsigned>(len) + lcs) % 0x100U != 0) {
      skip_start();
      return Result<Frame>(make_error(Errc::bad_value, "PN532 frame: length checksum LCS does not match LEN; frame skipped"));
    }
    n = len;
  }
  if (n == 0 || n > max_frame_data) {
    skip_start();
    return Result<Frame>(make_error(Errc::bad_length, "PN532 frame: data length " + std::to_string(n) +
                                                          " outside 1.." + std::to_string(max_frame_data) + "; frame skipped"));
  }
  if (buf_.size() < header + n + 1) return std::nullopt;  // wait for data and DCS

  Cursor body(ByteView(buf_).subspan(header, n + 1), "PN532 frame body");
  const ByteView data = body.take(n, "TFI and PD");
  const std::uint8_t dcs = body.u8("DCS");
  if (auto fin = body.finish(); !fin) {
    consume(header + n + 1);
    return Result<Frame>(fin.error());
  }
  if (checksum_of(data) != dcs) {
    consume(header + n + 1);
    return Result<Frame>(make_error(Errc::bad_mac, "PN532 frame: data checksum DCS mismatch; frame skipped"));
  }
  Frame f{FrameKind::information, Bytes(data.begin(), data.end()), extended};
  consume(header + n + 1);
  return Result<Frame>(std::move(f));
}

Bytes encode_frame(ByteView data) {
  Bytes out;
  out.reserve(data.size() + 10);
  out.push_back(0x00);
  out.push_back(0x00);
  out.push_back(0xFF);
  if (data.size() <= max_normal_data) {
    const auto len = static_cast<std::uint8_t>(data.size());
    out.push_back(len);
    out.push_back(static_cast<std::uint8_t>((0x100U - len) & 0xFFU));
  } else {
    const auto hi = static_cast<std::uint8_t>(data.size() >> 8);
    const auto lo = static_cast<std::uint8_t>(data.size() & 0xFFU);
    for (std::uint8_t b : {std::uint8_t{0xFF}, std::uint8_t{0xFF}, hi, lo, static_cast<std::uint8_t>((0x200U - hi - lo) & 0xFFU)}) {
      out.push_back(b);
    }
  }
  append(out, data);
  out.push_back(checksum_of(data));
  out.push_back(0x00);
  return out;
}

Bytes ack_frame() { return {0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00}; }
Bytes nack_frame() { return {0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00}; }
Bytes error_frame() { return {0x00, 0x00, 0xFF, 0x01, 0xFF, 0x7F, 0x81, 0x00}; }

}  // namespace otac::hw::pn532
