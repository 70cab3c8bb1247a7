// libFuzzer target: SMS-DELIVER and SMS-SUBMIT (parse, re-encode, re-parse must agree),
// UDH and BCD addresses, and the concatenation path: split the input and reassemble it,
// and feed input-derived parts to a bounded Reassembler.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "otac/common/bytes.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/sms.hpp"

namespace sms = otac::sms;

namespace {

template <class T, class Parse>
void round_trip(otac::ByteView in, Parse parse) {
  auto m = parse(in);
  if (!m) return;
  auto enc = sms::encode(*m);
  if (!enc) std::abort();  // whatever parses is encodable
  auto again = parse(*enc);
  if (!again || !(*again == *m)) std::abort();
}

void reassemble(otac::ByteView in) {
  // Parts: [originator 1][seq-ish fields 3][len 1][data len], bounded by the input.
  sms::Reassembler r(sms::ReassemblerLimits{16, 4, std::chrono::seconds(60)});
  auto now = sms::Reassembler::Clock::time_point{};
  otac::Cursor c(in, "fuzz parts");
  for (int i = 0; i < 64 && c.remaining() >= 5; ++i) {
    const std::string from(1, static_cast<char>('0' + (c.u8("from") & 3)));
    const std::uint8_t ref = c.u8("ref") & 3;
    const std::uint8_t tot = c.u8("tot") & 0x1F;
    const std::uint8_t seq = c.u8("seq") & 0x1F;
    const auto data = c.take(c.u8("len") & 0x1F, "data");
    if (!c.ok()) break;
    now += std::chrono::seconds(ref);
    auto res = r.add(from, {{sms::iei_concat_8bit, {ref, tot, seq}}}, data, now);
    if (res && res->has_value() && (*res)->data.size() > 16 * 31) std::abort();
    if (r.pending() > 4) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const otac::ByteView in(data, size);
  round_trip<sms::Deliver>(in, [](otac::ByteView b) { return sms::parse_deliver(b); });
  round_trip<sms::Submit>(in, [](otac::ByteView b) { return sms::parse_submit(b); });

  if (auto udh = sms::parse_udh(in)) {
    auto enc = sms::encode_udh(*udh);
    if (!enc || *enc != otac::Bytes(in.begin(), in.end())) std::abort();
  }
  if (auto a = sms::parse_address_bcd(in)) {
    auto enc = sms::encode_address_bcd(*a);
    if (!enc) std::abort();
    auto back = sms::parse_address_bcd(*enc);
    if (!back || !(*back == *a)) std::abort();
  }
  (void)sms::gsm7_to_utf8(in);

  // Split the input as a packet and put it back together, parts in reverse order.
  if (auto parts = sms::split_concatenated(in, sms::iei_command_packet, 7)) {
    sms::Reassembler r(sms::ReassemblerLimits{255, 1, std::chrono::seconds(60)});
    std::optional<sms::Message> out;
    for (std::size_t k = parts->size(); k-- > 0;) {
      auto h = sms::encode_udh((*parts)[k].udh);
      if (!h || 1 + h->size() + (*parts)[k].data.size() > sms::max_user_data) std::abort();
      auto res = r.add("x", (*parts)[k].udh, (*parts)[k].data, {});
      if (!res) std::abort();
      if (res->has_value()) out = std::move(**res);
    }
    if (!out || out->data != otac::Bytes(in.begin(), in.end())) std::abort();
  }
  reassemble(in);
  return 0;
}
