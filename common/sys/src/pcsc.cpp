#include "otac/sys/pcsc.hpp"

#include <algorithm>

namespace otac::sys::pcsc {

Error to_error(LONG rv, const std::string& where) {
  const std::string text = pcsc_stringify_error(rv);
  switch (rv) {
    case SCARD_W_REMOVED_CARD:
    case SCARD_E_NO_SMARTCARD:
    case SCARD_W_RESET_CARD:
    case SCARD_W_UNPOWERED_CARD:
      return make_error(Errc::not_found, where + ": card removed mid-transaction (" + text + "); tap again");
    case SCARD_E_TIMEOUT:
      return make_error(Errc::timeout, where + ": the card did not answer in time");
    case SCARD_E_SHARING_VIOLATION:
      return make_error(Errc::io, where + ": the reader is busy (another program holds the card)");
    case SCARD_E_NO_SERVICE:
    case SCARD_E_SERVICE_STOPPED:
      return make_error(Errc::io, where + ": pcscd is not running (start it, or check /run/pcscd)");
    case SCARD_E_READER_UNAVAILABLE:
    case SCARD_E_UNKNOWN_READER:
      return make_error(Errc::io, where + ": the reader is gone; check that it is plugged in");
    case SCARD_E_NO_READERS_AVAILABLE:
      return make_error(Errc::io, where + ": pcscd sees no reader (plug one in)");
    default:
      return make_error(Errc::io, where + ": " + text);
  }
}

Result<Context> Context::establish() {
  SCARDCONTEXT raw = 0;
  const LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &raw);
  if (rv != SCARD_S_SUCCESS) return to_error(rv, "connecting to pcscd");
  return Context(raw);
}

Context& Context::operator=(Context&& o) noexcept {
  if (this != &o) {
    release();
    c_ = o.c_;
    valid_ = o.valid_;
    o.valid_ = false;
  }
  return *this;
}

void Context::release() noexcept {
  if (valid_) (void)SCardReleaseContext(c_);
  valid_ = false;
}

Result<std::vector<std::string>> Context::readers() const {
  DWORD len = 0;
  LONG rv = SCardListReaders(c_, nullptr, nullptr, &len);
  if (rv == SCARD_E_NO_READERS_AVAILABLE) return std::vector<std::string>{};
  if (rv != SCARD_S_SUCCESS) return to_error(rv, "listing PC/SC readers");
  std::string names(len, '\0');
  rv = SCardListReaders(c_, nullptr, names.data(), &len);
  if (rv == SCARD_E_NO_READERS_AVAILABLE) return std::vector<std::string>{};
  if (rv != SCARD_S_SUCCESS) return to_error(rv, "listing PC/SC readers");
  names.resize(std::min<std::size_t>(len, names.size()));
  // A multi-string: names ended by NUL, the list by an empty name. Bounded by its length.
  std::vector<std::string> out;
  for (std::size_t pos = 0; pos < names.size();) {
    const auto end = names.find('\0', pos);
    std::string n = names.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    if (n.empty()) break;
    out.push_back(std::move(n));
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return out;
}

Result<Card> Card::connect(const Context& ctx, const std::string& reader, DWORD share, DWORD protocols) {
  SCARDHANDLE h = 0;
  DWORD proto = 0;
  const LONG rv = SCardConnect(ctx.get(), reader.c_str(), share, protocols, &h, &proto);
  if (rv != SCARD_S_SUCCESS) return to_error(rv, "connecting to the card in " + reader);
  return Card(h, proto);
}

Card& Card::operator=(Card&& o) noexcept {
  if (this != &o) {
    disconnect(SCARD_LEAVE_CARD);
    h_ = o.h_;
    protocol_ = o.protocol_;
    connected_ = o.connected_;
    o.connected_ = false;
  }
  return *this;
}

void Card::disconnect(DWORD how) noexcept {
  if (connected_) (void)SCardDisconnect(h_, how);
  connected_ = false;
}

Result<Bytes> Card::transmit(ByteView capdu, std::size_t max_answer) const {
  if (!connected_) return make_error(Errc::not_found, "no card connected");
  Bytes rx(max_answer);
  auto rx_len = static_cast<DWORD>(rx.size());
  const SCARD_IO_REQUEST* pci = protocol_ == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;
  const LONG rv = SCardTransmit(h_, pci, capdu.data(), static_cast<DWORD>(capdu.size()), nullptr, rx.data(), &rx_len);
  if (rv != SCARD_S_SUCCESS) return to_error(rv, "exchanging an APDU");
  rx.resize(rx_len);
  return rx;
}

}  // namespace otac::sys::pcsc
