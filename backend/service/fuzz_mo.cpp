// libFuzzer: a card's MO SMS (request packet or PoR) through the service, against an
// in-memory store holding one enrolled card with that phone number.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "service.hpp"
#include "sqlite_store.hpp"

namespace {

otac::backend::Service& service() {
  static auto kek = std::make_shared<const otac::backend::Kek>(
      otac::backend::Kek::from_bytes(otac::SecretBytes(otac::Bytes(32, 7))));
  static otac::backend::Service svc({}, [] { return otac::backend::open_sqlite_store(":memory:", kek); });
  static bool enrolled = [] {
    otac::backend::EnrollRequest er;
    er.msisdn = "+4915550001";
    return svc.enroll_card(er, "fuzz").ok();
  }();
  (void)enrolled;
  return svc;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  otac::backend::MoSms sms;
  sms.from = "+4915550001";
  // First byte picks the UDH: request packet (70), PoR (71), or the next bytes as raw UDH.
  const std::uint8_t sel = data[0] % 3;
  std::size_t pos = 1;
  if (sel == 0) sms.udh = {0x70, 0x00};
  else if (sel == 1) sms.udh = {0x71, 0x00};
  else if (size > 1) {
    const std::size_t n = std::min<std::size_t>(data[1] % 16, size - 2);
    sms.udh.assign(data + 2, data + 2 + n);
    pos = 2 + n;
  }
  sms.data.assign(data + pos, data + size);
  (void)service().handle_mo_sms(sms);
  return 0;
}
