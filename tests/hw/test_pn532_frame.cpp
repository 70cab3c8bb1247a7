// PN532 frame codec. Known frames come from NXP's PN532 User Manual UM0701-02 (GetFirmwareVersion
// example, ACK/NACK/error frames, §6.2) and from libnfc 1.8.0's own encoder as logged with
// LIBNFC_LOG_LEVEL=3 (../shared/TESTBED.md), never from this codec's output.
#include <catch2/catch.hpp>

#include "otac/hw/pn532_frame.hpp"

using namespace otac;
using namespace otac::hw::pn532;

namespace {

std::vector<Result<Frame>> decode_all(ByteView stream) {
  FrameDecoder d;
  d.feed(stream);
  std::vector<Result<Frame>> out;
  for (int i = 0; i < 100; ++i) {
    auto f = d.next();
    if (!f) break;
    out.push_back(std::move(*f));
  }
  return out;
}

}  // namespace

TEST_CASE("UM0701 GetFirmwareVersion frames encode and decode", "[pn532][frame]") {
  CHECK(encode_frame(hex("d50332010607")) == hex("0000ff06fad50332010607e800"));
  auto frames = decode_all(hex("0000ff02fed4022a00"));
  REQUIRE(frames.size() == 1);
  REQUIRE(frames[0].ok());
  CHECK(frames[0]->kind == FrameKind::information);
  CHECK(frames[0]->data == hex("d402"));
  CHECK_FALSE(frames[0]->extended);
}

TEST_CASE("fixed frames are the manual's bytes", "[pn532][frame]") {
  CHECK(ack_frame() == hex("0000ff00ff00"));
  CHECK(nack_frame() == hex("0000ffff0000"));
  CHECK(error_frame() == hex("0000ff01ff7f8100"));
}

TEST_CASE("libnfc's wake-up preamble and SAMConfiguration in one write decode to one frame", "[pn532][frame]") {
  // Exactly what libnfc 1.8.0 wrote on nfc_open (16-byte preamble, then the frame).
  auto frames = decode_all(hex("55550000000000000000000000000000" "0000ff03fdd414011700"));
  REQUIRE(frames.size() == 1);
  REQUIRE(frames[0].ok());
  CHECK(frames[0]->data == hex("d41401"));
}

TEST_CASE("ACK, NACK and a command in one stream", "[pn532][frame]") {
  auto frames = decode_all(hex("0000ff00ff00" "0000ffff0000" "0000ff09f7d400006c69626e6663be00"));
  REQUIRE(frames.size() == 3);
  CHECK(frames[0]->kind == FrameKind::ack);
  CHECK(frames[1]->kind == FrameKind::nack);
  CHECK(frames[2]->data == hex("d400006c69626e6663"));  // Diagnose "libnfc" from libnfc
}

TEST_CASE("byte-by-byte feeding gives the same frame", "[pn532][frame]") {
  const Bytes stream = hex("0000ff0bf5d40863028363038b630d00db00");  // libnfc WriteRegister
  FrameDecoder d;
  int found = 0;
  for (std::size_t i = 0; i < stream.size(); ++i) {
    d.feed(ByteView(stream).subspan(i, 1));
    auto f = d.next();
    if (f) {
      REQUIRE(f->ok());
      CHECK(i == stream.size() - 2);  // complete at DCS; the postamble is not needed
      CHECK(f->value().data == hex("d40863028363038b630d00"));
      ++found;
    }
  }
  CHECK(found == 1);
}

TEST_CASE("extended frames: LENM LENL LCS, round trip above 255 bytes", "[pn532][frame]") {
  Bytes data{0xD5, 0x41, 0x00};
  for (int i = 0; i < 258; ++i) data.push_back(static_cast<std::uint8_t>(i));
  const Bytes f = encode_frame(data);
  REQUIRE(f.size() == data.size() + 10);
  CHECK(Bytes(f.begin(), f.begin() + 8) == hex("0000ffffff0105fa"));  // 0x0105 = 261, 01+05+FA = 0x100
  auto frames = decode_all(f);
  REQUIRE(frames.size() == 1);
  REQUIRE(frames[0].ok());
  CHECK(frames[0]->extended);
  CHECK(frames[0]->data == data);
  // 255 bytes still fit a normal frame (LEN FF, LCS 01).
  const Bytes normal = encode_frame(Bytes(255, 0x11));
  CHECK(Bytes(normal.begin(), normal.begin() + 5) == hex("0000ffff01"));
}

TEST_CASE("checksum and length errors are reported and skipped", "[pn532][frame]") {
  SECTION("bad LCS") {
    auto frames = decode_all(hex("0000ff02fdd4022a00" "0000ff02fed4022a00"));
    REQUIRE(frames.size() == 2);
    CHECK_FALSE(frames[0].ok());
    REQUIRE(frames[1].ok());
    CHECK(frames[1]->data == hex("d402"));
  }
  SECTION("bad DCS") {
    auto frames = decode_all(hex("0000ff02fed4022b00" "0000ff02fed4022a00"));
    REQUIRE(frames.size() == 2);
    CHECK(frames[0].error().code == Errc::bad_mac);
    CHECK(frames[1].ok());
  }
  SECTION("bad extended LCS") {
    auto frames = decode_all(hex("0000ffffff0105fb"));
    REQUIRE(frames.size() == 1);
    CHECK_FALSE(frames[0].ok());
  }
  SECTION("length beyond the chip's buffer") {
    auto frames = decode_all(hex("0000ffffff0400fc"));
    REQUIRE(frames.size() == 1);
    CHECK(frames[0].error().code == Errc::bad_length);
  }
}

TEST_CASE("an incomplete frame waits for more bytes", "[pn532][frame]") {
  FrameDecoder d;
  d.feed(hex("0000ff06fad4"));
  CHECK_FALSE(d.next().has_value());
  d.feed(hex("32050001"));
  CHECK_FALSE(d.next().has_value());
  d.feed(hex("02f2"));
  auto f = d.next();
  REQUIRE(f.has_value());
  REQUIRE(f->ok());
  CHECK(f->value().data == hex("d43205000102"));  // RFConfiguration MaxRetries from libnfc
}

TEST_CASE("noise without a start code is dropped, the buffer stays bounded", "[pn532][frame]") {
  FrameDecoder d;
  for (int i = 0; i < 100; ++i) {
    d.feed(Bytes(1000, 0x55));
    CHECK_FALSE(d.next().has_value());
  }
  CHECK(d.buffered() <= 4096);
}
