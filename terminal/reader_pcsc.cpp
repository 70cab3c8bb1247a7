// PC/SC back end (pcsc-lite): SCardGetStatusChange for card presence, SCardConnect with
// T=1 or T=0, SCardTransmit. PC/SC has no per-command timeout; the reader driver's own
// limits (CCID) apply to transmit.
#include <PCSC/winscard.h>
#include <PCSC/wintypes.h>

#include <array>

#include "terminal/reader.hpp"

namespace otac::terminal {

namespace {

// One SCARDCONTEXT, released once.
class Context {
 public:
  Context() = default;
  explicit Context(SCARDCONTEXT c) : c_(c), valid_(true) {}
  ~Context() { if (valid_) SCardReleaseContext(c_); }
  Context(Context&& o) noexcept : c_(o.c_), valid_(o.valid_) { o.valid_ = false; }
  Context& operator=(Context&&) = delete;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  SCARDCONTEXT get() const { return c_; }

 private:
  SCARDCONTEXT c_ = 0;
  bool valid_ = false;
};

std::string pcsc_text(LONG rv) { return pcsc_stringify_error(rv); }

Error map_error(LONG rv, const std::string& where) {
  switch (rv) {
    case SCARD_W_REMOVED_CARD:
    case SCARD_E_NO_SMARTCARD:
    case SCARD_W_RESET_CARD:
    case SCARD_W_UNPOWERED_CARD:
      return make_error(Errc::not_found, where + ": card removed mid-transaction (" + pcsc_text(rv) + "); tap again");
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
    default:
      return make_error(Errc::io, where + ": " + pcsc_text(rv));
  }
}

class PcscReader final : public Reader {
 public:
  PcscReader(Context ctx, std::string reader) : ctx_(std::move(ctx)), reader_(std::move(reader)) {}
  ~PcscReader() override { disconnect(SCARD_LEAVE_CARD); }

  Result<void> wait_card(Millis timeout) override {
    if (connected_) return {};
    auto present = wait_state(SCARD_STATE_PRESENT, timeout);
    if (!present) return present.error();
    DWORD proto = 0;
    const LONG rv = SCardConnect(ctx_.get(), reader_.c_str(), SCARD_SHARE_EXCLUSIVE,
                                 SCARD_PROTOCOL_T1 | SCARD_PROTOCOL_T0, &card_, &proto);
    if (rv != SCARD_S_SUCCESS) return map_error(rv, "connecting to the card in " + reader_);
    connected_ = true;
    protocol_ = proto;
    return {};
  }

  Result<Bytes> transceive(ByteView capdu, Millis) override {
    if (!connected_) return make_error(Errc::not_found, "no card connected in " + reader_);
    std::array<BYTE, 258> rx{};
    DWORD rx_len = rx.size();
    const SCARD_IO_REQUEST* pci = protocol_ == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;
    const LONG rv = SCardTransmit(card_, pci, capdu.data(), static_cast<DWORD>(capdu.size()), nullptr, rx.data(), &rx_len);
    if (rv != SCARD_S_SUCCESS) {
      if (rv == SCARD_W_REMOVED_CARD || rv == SCARD_E_NO_SMARTCARD) disconnect(SCARD_LEAVE_CARD);
      return map_error(rv, "exchanging an APDU in " + reader_);
    }
    return Bytes(rx.begin(), rx.begin() + static_cast<std::ptrdiff_t>(rx_len));
  }

  Result<void> wait_removal(Millis timeout) override {
    // Reset ends the card's PIN verification for this session.
    disconnect(SCARD_RESET_CARD);
    return wait_state(SCARD_STATE_EMPTY, timeout);
  }

  std::string name() const override { return "PC/SC " + reader_; }

 private:
  void disconnect(DWORD how) {
    if (connected_) SCardDisconnect(card_, how);
    connected_ = false;
  }

  // Waits until the reader's state has the bit (PRESENT or EMPTY).
  Result<void> wait_state(DWORD bit, Millis timeout) {
    SCARD_READERSTATE st{};
    st.szReader = reader_.c_str();
    st.dwCurrentState = SCARD_STATE_UNAWARE;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int i = 0; i < 10000; ++i) {
      const auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      const DWORD ms = i == 0 ? 0 : static_cast<DWORD>(std::max<long long>(0, left.count()));
      const LONG rv = SCardGetStatusChange(ctx_.get(), ms, &st, 1);
      if (rv == SCARD_E_TIMEOUT) break;
      if (rv != SCARD_S_SUCCESS) return map_error(rv, "watching " + reader_);
      if (st.dwEventState & SCARD_STATE_UNKNOWN) return make_error(Errc::io, "the reader " + reader_ + " is gone");
      const bool mute = (st.dwEventState & SCARD_STATE_MUTE) != 0;
      if ((st.dwEventState & bit) && !(bit == SCARD_STATE_PRESENT && mute)) return {};
      st.dwCurrentState = st.dwEventState & ~static_cast<DWORD>(SCARD_STATE_CHANGED);
      if (left.count() <= 0) break;
    }
    if (bit == SCARD_STATE_PRESENT)
      return make_error(Errc::not_found, "no card in " + reader_ + " within " + std::to_string(timeout.count()) + " ms");
    return make_error(Errc::timeout, "the card is still in " + reader_);
  }

  Context ctx_;
  std::string reader_;
  SCARDHANDLE card_ = 0;
  DWORD protocol_ = 0;
  bool connected_ = false;
};

}  // namespace

Result<std::unique_ptr<Reader>> open_pcsc_reader(const std::string& prefix) {
  SCARDCONTEXT raw = 0;
  LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &raw);
  if (rv != SCARD_S_SUCCESS) return map_error(rv, "PC/SC");
  Context ctx(raw);
  DWORD len = 0;
  rv = SCardListReaders(ctx.get(), nullptr, nullptr, &len);
  if (rv == SCARD_E_NO_READERS_AVAILABLE) return make_error(Errc::io, "no PC/SC reader: pcscd sees no reader (plug one in)");
  if (rv != SCARD_S_SUCCESS) return map_error(rv, "listing PC/SC readers");
  std::string names(len, '\0');
  rv = SCardListReaders(ctx.get(), nullptr, names.data(), &len);
  if (rv != SCARD_S_SUCCESS) return map_error(rv, "listing PC/SC readers");
  names.resize(len);
  // A multi-string: names separated by NUL, ended by an empty one.
  std::string all;
  for (std::size_t pos = 0; pos < names.size();) {
    const auto end = names.find('\0', pos);
    const std::string n = names.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    if (n.empty()) break;
    if (n.rfind(prefix, 0) == 0) return std::unique_ptr<Reader>(std::make_unique<PcscReader>(std::move(ctx), n));
    all += (all.empty() ? "" : ", ") + n;
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return make_error(Errc::io, "no PC/SC reader named \"" + prefix + "...\" (readers: " + all + ")");
}

}  // namespace otac::terminal
