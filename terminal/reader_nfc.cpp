// libnfc back end: nfc_open by connstring, ISO 14443-4 type A at 106 kbps,
// nfc_initiator_transceive_bytes with a timeout. libnfc handles the ISO 14443-4 block
// protocol itself (NP_AUTO_ISO14443_4, on by default).
#include <nfc/nfc.h>

#include <sys/stat.h>

#include <array>
#include <thread>

#include "terminal/reader.hpp"

namespace otac::terminal {

namespace {

struct ContextDeleter { void operator()(nfc_context* c) const { nfc_exit(c); } };
struct DeviceDeleter { void operator()(nfc_device* d) const { nfc_close(d); } };

constexpr nfc_modulation kIso14443a{NMT_ISO14443A, NBR_106};

int clamp_ms(Millis t) {
  const auto v = t.count();
  return v < 1 ? 1 : v > 600000 ? 600000 : static_cast<int>(v);
}

class NfcReader final : public Reader {
 public:
  // Destruction order matters: the device closes (InRelease, PowerDown) before the context
  // exits, so dev_ is declared after ctx_.
  NfcReader(std::unique_ptr<nfc_context, ContextDeleter> ctx, std::unique_ptr<nfc_device, DeviceDeleter> dev,
            std::string connstring)
      : ctx_(std::move(ctx)), dev_(std::move(dev)), connstring_(std::move(connstring)) {}

  ~NfcReader() override {
    if (selected_) nfc_initiator_deselect_target(dev_.get());
  }

  Result<void> wait_card(Millis timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    // Bounded: one select attempt per 20 ms until the deadline.
    for (int i = 0; i < 1000000; ++i) {
      nfc_target t{};
      const int n = nfc_initiator_select_passive_target(dev_.get(), kIso14443a, nullptr, 0, &t);
      if (n < 0 && n != NFC_ETIMEOUT) return error(n, "waiting for a card");
      if (n > 0) {
        if ((t.nti.nai.btSak & 0x20) == 0) {
          nfc_initiator_deselect_target(dev_.get());
          return make_error(Errc::bad_value, "the card in the field is not ISO 14443-4 (SAK " +
                                                 std::to_string(t.nti.nai.btSak) + "); it cannot be an OTAC card");
        }
        target_ = t;
        selected_ = true;
        return {};
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(Millis(20));
    }
    return make_error(Errc::not_found, "no card within " + std::to_string(timeout.count()) + " ms");
  }

  Result<Bytes> transceive(ByteView capdu, Millis timeout) override {
    if (!selected_) return make_error(Errc::not_found, "no card selected");
    std::array<std::uint8_t, 512> rx{};
    const int n = nfc_initiator_transceive_bytes(dev_.get(), capdu.data(), capdu.size(), rx.data(), rx.size(),
                                                 clamp_ms(timeout));
    if (n < 0) {
      if (n == NFC_ERFTRANS || n == NFC_ETGRELEASED) selected_ = false;
      return error(n, "exchanging an APDU");
    }
    return Bytes(rx.begin(), rx.begin() + n);
  }

  Result<void> wait_removal(Millis timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int i = 0; i < 1000000 && selected_; ++i) {
      if (nfc_initiator_target_is_present(dev_.get(), &target_) != NFC_SUCCESS) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        nfc_initiator_deselect_target(dev_.get());
        selected_ = false;
        return make_error(Errc::timeout, "the card is still in the field");
      }
      std::this_thread::sleep_for(Millis(50));
    }
    if (selected_) nfc_initiator_deselect_target(dev_.get());
    selected_ = false;
    return {};
  }

  std::string name() const override { return "libnfc " + connstring_; }

 private:
  Error error(int code, const char* during) const {
    const std::string where = std::string(during) + " on " + connstring_ + ": ";
    switch (code) {
      case NFC_ETIMEOUT:
        return make_error(Errc::timeout, where + "the card did not answer in time (hold it still, closer to the reader)");
      case NFC_ERFTRANS:
      case NFC_ETGRELEASED:
        return make_error(Errc::not_found, where + "card removed mid-transaction (RF error); tap again");
      case NFC_EIO:
        return make_error(Errc::io, where + "reader I/O error; is the reader still connected?");
      case NFC_ENOTSUCHDEV:
        return make_error(Errc::io, where + "the reader is gone; check the cable and the connstring");
      default:
        return make_error(Errc::io, where + nfc_strerror(dev_.get()));
    }
  }

  std::unique_ptr<nfc_context, ContextDeleter> ctx_;
  std::unique_ptr<nfc_device, DeviceDeleter> dev_;
  std::string connstring_;
  nfc_target target_{};
  bool selected_ = false;
};

}  // namespace

Result<std::unique_ptr<Reader>> open_nfc_reader(const std::string& connstring_in) {
  nfc_context* raw_ctx = nullptr;
  nfc_init(&raw_ctx);
  if (!raw_ctx) return make_error(Errc::io, "libnfc could not start (nfc_init failed; out of memory?)");
  std::unique_ptr<nfc_context, ContextDeleter> ctx(raw_ctx);
  std::string connstring = connstring_in;
  if (connstring.empty()) {
    if (const char* env = std::getenv("LIBNFC_DEFAULT_DEVICE")) connstring = env;
  }
  if (connstring.size() >= NFC_BUFSIZE_CONNSTRING)
    return make_error(Errc::bad_value, "libnfc connstring longer than " + std::to_string(NFC_BUFSIZE_CONNSTRING - 1));
  nfc_device* raw_dev = nfc_open(ctx.get(), connstring.empty() ? nullptr : connstring.c_str());
  if (!raw_dev) {
    // libnfc does not say why; the likely causes differ by whether the port exists.
    const auto colon = connstring.find(':');
    if (colon != std::string::npos) {
      std::string path = connstring.substr(colon + 1);
      if (const auto c2 = path.find(':'); c2 != std::string::npos) path.resize(c2);
      struct stat st {};
      if (!path.empty() && path[0] == '/' && ::stat(path.c_str(), &st) != 0)
        return make_error(Errc::io, "no reader: " + path + " does not exist (check the connstring " + connstring +
                                        " and that the reader is plugged in)");
      return make_error(Errc::io, "cannot open the reader " + connstring +
                                      ": it is busy (another program holds it) or it is not answering as a PN53x");
    }
    return make_error(Errc::io, connstring.empty()
                                    ? "no NFC reader found; set reader = CONNSTRING in the config or LIBNFC_DEFAULT_DEVICE"
                                    : "cannot open the reader " + connstring + " (no such device, or busy)");
  }
  std::unique_ptr<nfc_device, DeviceDeleter> dev(raw_dev);
  if (nfc_initiator_init(dev.get()) < 0)
    return make_error(Errc::io, "the reader " + connstring + " refused initiator mode: " + nfc_strerror(dev.get()));
  // One select attempt per call: wait_card bounds the waiting, not the chip.
  if (nfc_device_set_property_bool(dev.get(), NP_INFINITE_SELECT, false) < 0)
    return make_error(Errc::io, "the reader " + connstring + " refused NP_INFINITE_SELECT: " + nfc_strerror(dev.get()));
  const std::string name = connstring.empty() ? std::string(nfc_device_get_connstring(dev.get())) : connstring;
  return std::unique_ptr<Reader>(std::make_unique<NfcReader>(std::move(ctx), std::move(dev), name));
}

}  // namespace otac::terminal
