#include "terminal/reader.hpp"

#include "otac/common/sw.hpp"

namespace otac::terminal {

Result<std::unique_ptr<Reader>> open_reader(const std::string& spec) {
  if (spec == "pcsc") return open_pcsc_reader("");
  if (spec.rfind("pcsc:", 0) == 0) return open_pcsc_reader(spec.substr(5));
  if (spec == "libnfc") return open_nfc_reader("");
  return open_nfc_reader(spec);
}

Result<apdu::Response> transmit(Reader& r, const apdu::Command& c, Millis timeout, int* exchanges) {
  auto enc = apdu::encode(c);
  if (!enc) return enc.error();
  Bytes joined;
  Bytes next = std::move(*enc);
  for (int round = 0; round < 9; ++round) {
    auto raw = r.transceive(next, timeout);
    if (exchanges) ++*exchanges;
    if (!raw) return raw.error();
    auto resp = apdu::parse_response(*raw);
    if (!resp) return make_error(Errc::bad_value, "the card's answer is shorter than a status word");
    if (sw::is_bytes_available(resp->sw)) {
      append(joined, resp->data);
      apdu::Command gr;
      gr.cla = static_cast<std::uint8_t>(c.cla & 0x03);  // GET RESPONSE is interindustry, same channel
      gr.ins = 0xC0;
      gr.ne = resp->sw2() == 0 ? 256u : resp->sw2();
      next = *apdu::encode(gr);
      continue;
    }
    if (sw::is_wrong_le(resp->sw) && round == 0) {
      apdu::Command again = c;
      again.ne = resp->sw2() == 0 ? 256u : resp->sw2();
      auto e = apdu::encode(again);
      if (!e) return e.error();
      next = std::move(*e);
      continue;
    }
    if (!joined.empty()) {
      append(joined, resp->data);
      resp->data = std::move(joined);
    }
    return resp;
  }
  return make_error(Errc::bad_value, "the card kept answering 61xx/6Cxx; giving up after 8 GET RESPONSE rounds");
}

}  // namespace otac::terminal
