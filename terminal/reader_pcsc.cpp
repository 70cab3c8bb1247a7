// PC/SC back end (pcsc-lite): SCardGetStatusChange for card presence, SCardConnect with
// T=1 or T=0, SCardTransmit. PC/SC has no per-command timeout; the reader driver's own
// limits (CCID) apply to transmit.
#include <optional>

#include "otac/sys/pcsc.hpp"
#include "terminal/reader.hpp"

namespace otac::terminal {

namespace {

using sys::pcsc::Card;
using sys::pcsc::Context;

class PcscReader final : public Reader {
 public:
  PcscReader(Context ctx, std::string reader) : ctx_(std::move(ctx)), reader_(std::move(reader)) {}
  ~PcscReader() override { card_.reset(); }  // the card is disconnected before its context is released

  Result<void> wait_card(Millis timeout) override {
    if (card_) return {};
    auto present = wait_state(SCARD_STATE_PRESENT, timeout);
    if (!present) return present.error();
    auto c = Card::connect(ctx_, reader_, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1 | SCARD_PROTOCOL_T0);
    if (!c) return c.error();
    card_.emplace(std::move(*c));
    return {};
  }

  Result<Bytes> transceive(ByteView capdu, Millis) override {
    if (!card_) return make_error(Errc::not_found, "no card connected in " + reader_);
    auto r = card_->transmit(capdu);
    if (!r) {
      if (r.error().code == Errc::not_found) card_.reset();  // removed: the next tap connects afresh
      return make_error(r.error().code, r.error().message + " in " + reader_);
    }
    return r;
  }

  Result<void> wait_removal(Millis timeout) override {
    // Reset ends the card's PIN verification for this session.
    disconnect(SCARD_RESET_CARD);
    return wait_state(SCARD_STATE_EMPTY, timeout);
  }

  std::string name() const override { return "PC/SC " + reader_; }

 private:
  void disconnect(DWORD how) {
    if (card_) card_->disconnect(how);
    card_.reset();
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
      if (rv != SCARD_S_SUCCESS) return sys::pcsc::to_error(rv, "watching " + reader_);
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

  Context ctx_;  // declared first: released after card_
  std::string reader_;
  std::optional<Card> card_;
};

}  // namespace

Result<std::unique_ptr<Reader>> open_pcsc_reader(const std::string& prefix) {
  auto ctx = Context::establish();
  if (!ctx) return ctx.error();
  auto names = ctx->readers();
  if (!names) return names.error();
  if (names->empty()) return make_error(Errc::io, "no PC/SC reader: pcscd sees no reader (plug one in)");
  std::string all;
  for (const auto& n : *names) {
    if (n.rfind(prefix, 0) == 0) return std::unique_ptr<Reader>(std::make_unique<PcscReader>(std::move(*ctx), n));
    all += (all.empty() ? "" : ", ") + n;
  }
  return make_error(Errc::io, "no PC/SC reader named \"" + prefix + "...\" (readers: " + all + ")");
}

}  // namespace otac::terminal
