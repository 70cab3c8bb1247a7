// libFuzzer target: the whole APDU surface of the applet (SELECT, PIN, ACTIVATE,
// AUTHENTICATE, ENVELOPE with SMS/TS 102 225/inner commands, ...). The input is a sequence
// of APDUs, each prefixed by a one-byte length, run against a personalized card with a list
// (or a blank card when the first byte is odd), so deep paths are reachable.
#include <cstddef>
#include <cstdint>

#include "otac/applet/applet.hpp"
#include "otac/common/crypto.hpp"
#include "otac/common/ota.hpp"
#include "otac/common/tlv.hpp"

namespace {

using otac::Bytes;

Bytes run(otac::applet::Applet& a, const Bytes& apdu) { return a.process(apdu); }

// A personalized card with one 4-code list, built once through the applet itself.
const Bytes& base_state() {
  static const Bytes state = [] {
    otac::applet::MemoryStorage s;
    otac::applet::Applet a(s);
    run(a, otac::hex("00A4040006F04F5441430100"));
    run(a, otac::hex("0024018008 31323334FFFFFFFF"));
    Bytes act = otac::hex("DF410811223344556677 88 DF4410 0123456789abcdeffedcba9876543210 DF450101 DF4609 2B3135353530313030 DF4708 3837363534333231");
    Bytes apdu = otac::hex("80100000");
    apdu.push_back(static_cast<std::uint8_t>(act.size()));
    otac::append(apdu, act);
    run(a, apdu);
    auto keys = otac::ota::derive_card_keys(otac::SecretBytes(otac::hex("0123456789abcdeffedcba9876543210")),
                                            otac::hex("1122334455667788"), otac::ota::CardAlgorithm::des3_2key).value();
    Bytes body = otac::hex("C1020001 C20101 C4020004");
    otac::tlv::append(body, 0xC5, Bytes(64, 0x5A));
    otac::ota::CommandHeader h{otac::ota::Spi::decode(0x1639).value(), 0x15, 0x15, otac::ota::otac_tar};
    Bytes packet = otac::ota::build_command(h, 1, otac::tlv::encode(0xE1, body), keys.kic, keys.kid).value();
    Bytes tpdu = otac::hex("44089151551000 7FF6 62112200000000");
    tpdu.push_back(static_cast<std::uint8_t>(3 + packet.size()));
    otac::append(tpdu, otac::hex("027000"));
    otac::append(tpdu, packet);
    Bytes d1 = otac::hex("82028381");
    otac::tlv::append(d1, 0x8B, tpdu);
    Bytes env = otac::tlv::encode(0xD1, d1);
    Bytes e = otac::hex("80C20000");
    e.push_back(static_cast<std::uint8_t>(env.size()));
    otac::append(e, env);
    run(a, e);
    return s.load().value();
  }();
  return state;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  otac::applet::MemoryStorage s;
  if (size > 0 && (data[0] & 1) == 0) (void)s.commit(base_state());
  otac::applet::Applet a(s);
  std::size_t pos = size > 0 ? 1 : 0;
  for (int i = 0; i < 32 && pos < size; ++i) {
    const std::size_t n = data[pos++];
    const std::size_t take = n < size - pos ? n : size - pos;
    Bytes apdu(data + pos, data + pos + take);
    pos += take;
    Bytes r = a.process(apdu);
    if (r.size() < 2) __builtin_trap();  // every answer ends with a status word
  }
  return 0;
}
