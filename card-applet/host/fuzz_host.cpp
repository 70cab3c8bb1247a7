// libFuzzer target: what the host parses from the network (fake-SMSC lines, vicc frames) and
// from the card (SEND SHORT MESSAGE, SMS-SUBMIT), plus the SMS-DELIVER/ENVELOPE readers.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "host.hpp"
#include "otac/applet/sms_lite.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const otac::ByteView in(data, size);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto m = otac::card_host::parse_mt_line(text); m) (void)otac::card_host::format_mo_line(*m);
  (void)otac::card_host::parse_endpoint(text);
  otac::card_host::ViccFramer f;
  f.feed(in);
  for (int i = 0; i < 64 && f.next(); ++i) {}
  otac::card_host::LineSplitter ls;
  ls.feed(in);
  for (int i = 0; i < 64 && ls.next(); ++i) {}
  (void)otac::applet::sms::parse_send_short_message(in);
  (void)otac::applet::sms::parse_submit(in);
  (void)otac::applet::sms::parse_deliver(in);
  (void)otac::applet::sms::parse_sms_pp_download(in);
  (void)otac::applet::sms::parse_address(in);
  return 0;
}
