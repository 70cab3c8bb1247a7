// TS 102 225 / TS 31.115 secured packets. Readings chosen where the standard leaves room
// are in docs/protocol.md section 6.
#include "otac/common/ota.hpp"

#include <algorithm>
#include <initializer_list>
#include <string>

#include "otac/common/crypto.hpp"
#include "otac/common/cursor.hpp"

namespace otac::ota {
namespace {

// CHL counts SPI(2) KIc KID TAR(3) CNTR(5) PCNTR before the RC/CC/DS.
constexpr std::size_t kChlFixed = 13;
// RHL counts TAR(3) CNTR(5) PCNTR RSC before the RC/CC/DS.
constexpr std::size_t kRhlFixed = 10;
// Bytes after CPL that are never ciphered: CHL SPI(2) KIc KID TAR(3).
constexpr std::size_t kCmdClear = 8;
// Bytes after RPL that are never ciphered: RHL TAR(3).
constexpr std::size_t kRspClear = 4;
// The SMS user data header of a response packet (UDHL 02, IEI 71, length 00). TS 31.115
// includes it in the PoR's RC/CC/DS.
constexpr std::uint8_t kPorUdh[] = {0x02, 0x71, 0x00};

std::string hex2(std::uint8_t b) { return to_hex(ByteView(&b, 1)); }

Error unknown_key_error(const char* role, std::uint8_t id, Algorithm a) {
  return make_error(Errc::unknown_key, std::string(role) + " " + hex2(id) + " names " + algorithm_name(a) +
                                           ", which is not supported; use 3DES (x5/x9), DES (x1) or AES (x2)");
}

std::size_t block_size(Algorithm a) { return a == Algorithm::aes ? 16 : 8; }

bool key_fits(Algorithm a, std::size_t len) {
  switch (a) {
    case Algorithm::des_cbc: return len == 8;
    case Algorithm::des3_2key: return len == 16;
    case Algorithm::des3_3key: return len == 24;
    case Algorithm::aes: return len == 16 || len == 24 || len == 32;
    default: return false;
  }
}

// The ciphering algorithm of a KIc, checked against the key given.
Result<Algorithm> cipher_for(std::uint8_t kic, const SecretBytes& key) {
  const Algorithm a = kic_algorithm(kic);
  if (a != Algorithm::des_cbc && a != Algorithm::des3_2key && a != Algorithm::des3_3key && a != Algorithm::aes)
    return unknown_key_error("KIc", kic, a);
  if (!key_fits(a, key.size()))
    return make_error(Errc::unknown_key, "KIc " + hex2(kic) + " names " + algorithm_name(a) + " but the KIc key is " +
                                             std::to_string(key.size()) + " bytes; give a key of the right length");
  return a;
}

Result<Bytes> encipher(Algorithm a, const SecretBytes& key, ByteView data) {
  if (a == Algorithm::aes) return crypto::aes_cbc_encrypt(key, Bytes(16, 0), data);
  return crypto::des3_cbc_encrypt(key, Bytes(8, 0), data);
}

Result<Bytes> decipher(Algorithm a, const SecretBytes& key, ByteView data) {
  if (a == Algorithm::aes) return crypto::aes_cbc_decrypt(key, Bytes(16, 0), data);
  return crypto::des3_cbc_decrypt(key, Bytes(8, 0), data);
}

// RC/CC over `input`, for the integrity type and KID. The caller has checked check_length.
Result<Bytes> compute_check(Integrity integrity, std::uint8_t kid, const SecretBytes& key, ByteView input) {
  const Algorithm a = kid_algorithm(kid, integrity);
  if (integrity == Integrity::rc) {
    if (a == Algorithm::crc16) return be_bytes(crc16(input), 2);
    return be_bytes(crc32(input), 4);
  }
  if (!key_fits(a, key.size()))
    return make_error(Errc::unknown_key, "KID " + hex2(kid) + " names " + algorithm_name(a) + " but the KID key is " +
                                             std::to_string(key.size()) + " bytes; give a key of the right length");
  if (a == Algorithm::aes) {
    auto tag = crypto::aes_cmac(key, input);
    if (!tag) return std::move(tag).error();
    tag->resize(8);  // the leftmost 8 bytes
    return tag;
  }
  // DES CBC-MAC (ISO/IEC 9797-1 MAC algorithm 1) with zero padding to the block, which is
  // not transmitted: the input is CC-aligned only by chance.
  return crypto::mac_alg1(key, input, crypto::Padding::method1, 8);
}

// compute_check over the concatenation of parts; the cleartext input is wiped afterwards.
Result<Bytes> check_over(Integrity integrity, std::uint8_t kid, const SecretBytes& key,
                         std::initializer_list<ByteView> parts) {
  Bytes input = concat(parts);
  auto r = compute_check(integrity, kid, key, input);
  secure_zero(input.data(), input.size());
  return r;
}

Result<std::size_t> check_len_or_zero(Integrity integrity, std::uint8_t kid) {
  if (integrity == Integrity::none) return std::size_t{0};
  return check_length(integrity, kid);
}

std::size_t pad_for(std::size_t len, std::size_t block) { return (block - len % block) % block; }

// Secured data often carries key material (inner commands load keys), so the cleartext
// copies this module makes are wiped when they go out of scope.
class WipeOnExit {
 public:
  explicit WipeOnExit(Bytes& b) : b_(b) {}
  ~WipeOnExit() { if (!b_.empty()) secure_zero(b_.data(), b_.size()); }
  WipeOnExit(const WipeOnExit&) = delete;
  WipeOnExit& operator=(const WipeOnExit&) = delete;

 private:
  Bytes& b_;
};

// Error messages name public fields only, never key material.
struct ParsedCommand {
  std::uint16_t cpl = 0;
  std::uint8_t chl = 0;
  std::uint16_t spi_raw = 0;
  CommandHeader header;
  ByteView clear_header;  // CPL .. TAR, 10 bytes
  ByteView body;          // CNTR .. end, possibly ciphered
  std::size_t check_len = 0;
};

Result<ParsedCommand> parse_command(ByteView packet) {
  ParsedCommand p;
  Cursor c(packet, "OTA command packet");
  p.cpl = c.u16("CPL");
  if (c.ok() && c.remaining() != p.cpl) {
    if (c.remaining() < p.cpl)
      return make_error(Errc::truncated, "OTA command packet: CPL says " + std::to_string(p.cpl) + " bytes follow but only " +
                                             std::to_string(c.remaining()) + " do; the packet is cut short");
    return make_error(Errc::trailing_data, "OTA command packet: " + std::to_string(c.remaining() - p.cpl) +
                                               " bytes after the CPL=" + std::to_string(p.cpl) + " bytes of the packet");
  }
  p.chl = c.u8("CHL");
  p.spi_raw = c.u16("SPI");
  p.header.kic = c.u8("KIc");
  p.header.kid = c.u8("KID");
  auto tar = c.take(3, "TAR");
  if (!c.ok()) return c.error();
  std::copy(tar.begin(), tar.end(), p.header.tar.begin());
  auto spi = Spi::decode(p.spi_raw);
  if (!spi) return std::move(spi).error();
  p.header.spi = *spi;

  // CHL must match the RC/CC/DS length. Where the algorithm is not known (implicit,
  // proprietary) CHL is the only source of that length, so accept what it says.
  if (p.chl < kChlFixed)
    return make_error(Errc::bad_length, "OTA command packet: CHL " + std::to_string(p.chl) + " is below the minimum 13");
  p.check_len = p.chl - kChlFixed;
  if (p.header.spi.integrity == Integrity::none && p.check_len != 0)
    return make_error(Errc::bad_length, "OTA command packet: CHL " + std::to_string(p.chl) +
                                            " announces an RC/CC/DS but the SPI says there is none");
  if (p.header.spi.integrity != Integrity::none) {
    auto n = check_length(p.header.spi.integrity, p.header.kid);
    if (n && *n != p.check_len)
      return make_error(Errc::bad_length, "OTA command packet: CHL " + std::to_string(p.chl) + " does not fit the " +
                                              std::to_string(*n) + "-byte RC/CC of KID " + hex2(p.header.kid));
  }
  p.clear_header = packet.subspan(0, 2 + kCmdClear);
  p.body = c.rest();
  if (p.body.size() < 6 + p.check_len && !p.header.spi.ciphered)
    return make_error(Errc::truncated, "OTA command packet: " + std::to_string(p.body.size()) +
                                           " bytes after TAR, fewer than CNTR, PCNTR and the RC/CC/DS need");
  if (auto f = c.finish(); !f) return std::move(f).error();
  return p;
}

}  // namespace

// ---- SPI, KIc/KID ------------------------------------------------------------------------

std::uint16_t Spi::encode() const {
  const unsigned first = static_cast<unsigned>(integrity) | (ciphered ? 0x04u : 0u) |
                         (static_cast<unsigned>(counter) << 3);
  const unsigned second = static_cast<unsigned>(por) | (static_cast<unsigned>(por_integrity) << 2) |
                          (por_ciphered ? 0x10u : 0u) | (por_via_submit ? 0x20u : 0u);
  return static_cast<std::uint16_t>((first << 8) | second);
}

Result<Spi> Spi::decode(std::uint16_t raw) {
  const unsigned first = raw >> 8;
  const unsigned second = raw & 0xFFu;
  Spi s;
  s.integrity = static_cast<Integrity>(first & 0x03u);
  s.ciphered = (first & 0x04u) != 0;
  s.counter = static_cast<CounterMode>((first >> 3) & 0x03u);
  if ((second & 0x03u) == 0x03u)
    return make_error(Errc::bad_value, "SPI " + to_hex(be_bytes(raw, 2)) + ": PoR mode 11 is reserved");
  s.por = static_cast<PorMode>(second & 0x03u);
  s.por_integrity = static_cast<Integrity>((second >> 2) & 0x03u);
  s.por_ciphered = (second & 0x10u) != 0;
  s.por_via_submit = (second & 0x20u) != 0;
  return s;
}

Algorithm kic_algorithm(std::uint8_t kic) {
  const unsigned alg = kic & 0x03u, mode = (kic >> 2) & 0x03u;
  switch (alg) {
    case 0: return Algorithm::implicit;
    case 1:
      switch (mode) {
        case 0: return Algorithm::des_cbc;
        case 1: return Algorithm::des3_2key;
        case 2: return Algorithm::des3_3key;
        default: return Algorithm::des_ecb;
      }
    case 2: return mode == 0 ? Algorithm::aes : Algorithm::reserved;
    default: return Algorithm::proprietary;
  }
}

Algorithm kid_algorithm(std::uint8_t kid, Integrity integrity) {
  const unsigned alg = kid & 0x03u, mode = (kid >> 2) & 0x03u;
  if (integrity == Integrity::rc) {
    switch (alg) {
      case 0: return Algorithm::implicit;
      case 1: return mode == 0 ? Algorithm::crc16 : mode == 1 ? Algorithm::crc32 : Algorithm::reserved;
      case 2: return Algorithm::reserved;
      default: return Algorithm::proprietary;
    }
  }
  const Algorithm a = kic_algorithm(kid);
  return a == Algorithm::des_ecb ? Algorithm::reserved : a;  // KID 11 in DES mode is reserved
}

const char* algorithm_name(Algorithm a) {
  switch (a) {
    case Algorithm::implicit: return "implicit (agreed beforehand)";
    case Algorithm::des_cbc: return "DES";
    case Algorithm::des3_2key: return "3DES-2key";
    case Algorithm::des3_3key: return "3DES-3key";
    case Algorithm::des_ecb: return "DES-ECB";
    case Algorithm::aes: return "AES";
    case Algorithm::crc16: return "CRC-16";
    case Algorithm::crc32: return "CRC-32";
    case Algorithm::proprietary: return "proprietary";
    case Algorithm::reserved: return "reserved";
  }
  return "?";
}

Result<std::size_t> check_length(Integrity integrity, std::uint8_t kid) {
  switch (integrity) {
    case Integrity::none: return std::size_t{0};
    case Integrity::ds:
      return make_error(Errc::unsupported, "digital signatures (SPI RC/CC/DS = 11) are not supported; use a CC");
    case Integrity::rc: {
      const Algorithm a = kid_algorithm(kid, integrity);
      if (a == Algorithm::crc16) return std::size_t{2};
      if (a == Algorithm::crc32) return std::size_t{4};
      return unknown_key_error("KID", kid, a);
    }
    case Integrity::cc: {
      const Algorithm a = kid_algorithm(kid, integrity);
      if (a == Algorithm::des_cbc || a == Algorithm::des3_2key || a == Algorithm::des3_3key || a == Algorithm::aes)
        return std::size_t{8};
      return unknown_key_error("KID", kid, a);
    }
  }
  return make_error(Errc::internal, "bad integrity value");
}

const char* rsc_name(Rsc rsc) {
  switch (rsc) {
    case Rsc::ok: return "PoR OK";
    case Rsc::rc_cc_ds_failed: return "RC/CC/DS failed";
    case Rsc::counter_low: return "CNTR low";
    case Rsc::counter_high: return "CNTR high";
    case Rsc::counter_blocked: return "CNTR blocked";
    case Rsc::ciphering_error: return "ciphering error";
    case Rsc::unidentified_security_error: return "unidentified security error";
    case Rsc::insufficient_memory: return "insufficient memory to process incoming message";
    case Rsc::more_time: return "more time needed to process the command";
    case Rsc::tar_unknown: return "TAR unknown";
    case Rsc::insufficient_security_level: return "insufficient security level";
    case Rsc::response_in_sms_submit: return "actual response data sent using SMS-SUBMIT";
    case Rsc::response_in_ussd: return "actual response data sent using a USSD operation";
  }
  return "reserved RSC";
}

// ---- command packets ----------------------------------------------------------------------

Result<Bytes> build_command(const CommandHeader& header, std::uint64_t counter, ByteView data,
                            const SecretBytes& kic_key, const SecretBytes& kid_key) {
  if (counter > counter_max)
    return make_error(Errc::bad_value, "OTA counter " + std::to_string(counter) + " does not fit in 5 bytes");
  if (header.spi.por == PorMode{3}) return make_error(Errc::bad_value, "SPI PoR mode 11 is reserved");
  auto n = check_len_or_zero(header.spi.integrity, header.kid);
  if (!n) return std::move(n).error();
  std::size_t pad = 0;
  Algorithm alg = Algorithm::implicit;
  if (header.spi.ciphered) {
    auto a = cipher_for(header.kic, kic_key);
    if (!a) return std::move(a).error();
    alg = *a;
    pad = pad_for(6 + *n + data.size(), block_size(alg));
  }
  const std::size_t cpl = 1 + kChlFixed + *n + data.size() + pad;
  if (cpl > 0xFFFF)
    return make_error(Errc::bad_length, "OTA command packet: " + std::to_string(data.size()) +
                                            " bytes of data do not fit the 2-byte CPL");

  Bytes head = be_bytes(cpl, 2);
  head.push_back(static_cast<std::uint8_t>(kChlFixed + *n));
  append(head, be_bytes(header.spi.encode(), 2));
  head.push_back(header.kic);
  head.push_back(header.kid);
  append(head, header.tar);

  Bytes counters = be_bytes(counter, 5);
  counters.push_back(static_cast<std::uint8_t>(pad));
  Bytes padded(data.size() + pad, 0);
  WipeOnExit wipe_padded(padded);
  std::copy(data.begin(), data.end(), padded.begin());

  Bytes check;
  if (*n != 0) {
    auto c = check_over(header.spi.integrity, header.kid, kid_key, {head, counters, padded});
    if (!c) return std::move(c).error();
    check = std::move(*c);
  }
  Bytes body = concat({counters, check, padded});
  if (header.spi.ciphered) {
    auto e = encipher(alg, kic_key, body);
    secure_zero(body.data(), body.size());
    if (!e) return std::move(e).error();
    body = std::move(*e);
  }
  return concat({head, body});
}

Result<CommandPeek> peek_command(ByteView packet) {
  auto p = parse_command(packet);
  if (!p) return std::move(p).error();
  CommandPeek out{p->header, std::nullopt};
  if (!p->header.spi.ciphered) {
    Cursor c(p->body, "OTA command packet");
    out.counter = c.be(5, "CNTR");
    if (!c.ok()) return c.error();
  }
  return out;
}

Result<Command> open_command(ByteView packet, const SecretBytes& kic_key, const SecretBytes& kid_key) {
  auto p = parse_command(packet);
  if (!p) return std::move(p).error();
  const Spi& spi = p->header.spi;
  auto n = check_len_or_zero(spi.integrity, p->header.kid);
  if (!n) return std::move(n).error();

  Bytes plain;
  WipeOnExit wipe_plain(plain);
  if (spi.ciphered) {
    auto a = cipher_for(p->header.kic, kic_key);
    if (!a) return std::move(a).error();
    const std::size_t bs = block_size(*a);
    if (p->body.empty() || p->body.size() % bs != 0)
      return make_error(Errc::crypto, "OTA command packet: the ciphered part is " + std::to_string(p->body.size()) +
                                          " bytes, not a whole number of " + std::to_string(bs) + "-byte blocks");
    auto d = decipher(*a, kic_key, p->body);
    if (!d) return std::move(d).error();
    plain = std::move(*d);
  } else {
    plain.assign(p->body.begin(), p->body.end());
  }

  Cursor c(plain, "OTA command packet (deciphered part)");
  Command out;
  out.header = p->header;
  auto counters = c.take(6, "CNTR/PCNTR");
  auto received_check = c.take(*n, "RC/CC/DS");
  auto padded = c.rest();
  if (!c.ok()) return c.error();
  if (auto f = c.finish(); !f) return std::move(f).error();
  out.counter = (std::uint64_t{counters[0]} << 32) | (std::uint64_t{counters[1]} << 24) |
                (std::uint64_t{counters[2]} << 16) | (std::uint64_t{counters[3]} << 8) | counters[4];
  out.pcntr = counters[5];

  if (*n != 0) {
    auto expect = check_over(spi.integrity, p->header.kid, kid_key, {p->clear_header, counters, padded});
    if (!expect) return std::move(expect).error();
    if (!ct_equal(*expect, received_check))
      return make_error(Errc::bad_mac, std::string("OTA command packet: the ") +
                                           (spi.integrity == Integrity::cc ? "CC" : "RC") +
                                           " does not verify; wrong KID key, or the packet was altered");
  }
  if (out.pcntr > padded.size())
    return make_error(Errc::bad_value, "OTA command packet: PCNTR " + std::to_string(out.pcntr) + " exceeds the " +
                                           std::to_string(padded.size()) + " bytes of secured data");
  out.data.assign(padded.begin(), padded.end() - out.pcntr);
  return out;
}

Rsc counter_status(CounterMode mode, std::uint64_t received, std::uint64_t stored) {
  switch (mode) {
    case CounterMode::none:
    case CounterMode::no_check: return Rsc::ok;
    case CounterMode::higher:
      if (stored >= counter_max) return Rsc::counter_blocked;
      return received > stored ? Rsc::ok : Rsc::counter_low;
    case CounterMode::one_higher:
      if (stored >= counter_max) return Rsc::counter_blocked;
      if (received <= stored) return Rsc::counter_low;
      return received == stored + 1 ? Rsc::ok : Rsc::counter_high;
  }
  return Rsc::unidentified_security_error;
}

Result<void> check_counter(CounterMode mode, std::uint64_t received, std::uint64_t stored) {
  const Rsc r = counter_status(mode, received, stored);
  if (r == Rsc::ok) return {};
  return make_error(Errc::replay, std::string("OTA counter ") + std::to_string(received) + " refused (" + rsc_name(r) +
                                      ", receiver holds " + std::to_string(stored) +
                                      "); the sender must use a higher counter");
}

Rsc rsc_for(const Error& e) {
  switch (e.code) {
    case Errc::bad_mac: return Rsc::rc_cc_ds_failed;
    case Errc::replay: return Rsc::counter_low;
    case Errc::crypto: return Rsc::ciphering_error;
    default: return Rsc::unidentified_security_error;
  }
}

// ---- response packets ---------------------------------------------------------------------

Result<Bytes> build_response(const PorSecurity& sec, const Response& r, const SecretBytes& kic_key,
                             const SecretBytes& kid_key) {
  if (r.counter > counter_max)
    return make_error(Errc::bad_value, "OTA counter " + std::to_string(r.counter) + " does not fit in 5 bytes");
  auto n = check_len_or_zero(sec.spi.por_integrity, sec.kid);
  if (!n) return std::move(n).error();
  std::size_t pad = 0;
  Algorithm alg = Algorithm::implicit;
  if (sec.spi.por_ciphered) {
    auto a = cipher_for(sec.kic, kic_key);
    if (!a) return std::move(a).error();
    alg = *a;
    pad = pad_for(7 + *n + r.data.size(), block_size(alg));
  }
  const std::size_t rpl = 1 + kRhlFixed + *n + r.data.size() + pad;
  if (rpl > 0xFFFF) return make_error(Errc::bad_length, "OTA response packet: data too long for the 2-byte RPL");

  Bytes head = be_bytes(rpl, 2);
  head.push_back(static_cast<std::uint8_t>(kRhlFixed + *n));
  append(head, r.tar);
  Bytes fields = be_bytes(r.counter, 5);
  fields.push_back(static_cast<std::uint8_t>(pad));
  fields.push_back(static_cast<std::uint8_t>(r.status));
  Bytes padded(r.data.size() + pad, 0);
  WipeOnExit wipe_padded(padded);
  std::copy(r.data.begin(), r.data.end(), padded.begin());

  Bytes check;
  if (*n != 0) {
    auto c = check_over(sec.spi.por_integrity, sec.kid, kid_key, {kPorUdh, head, fields, padded});
    if (!c) return std::move(c).error();
    check = std::move(*c);
  }
  Bytes body = concat({fields, check, padded});
  if (sec.spi.por_ciphered) {
    auto e = encipher(alg, kic_key, body);
    secure_zero(body.data(), body.size());
    if (!e) return std::move(e).error();
    body = std::move(*e);
  }
  return concat({head, body});
}

namespace {

struct ParsedResponse {
  std::uint8_t rhl = 0;
  Tar tar{};
  ByteView clear_header;  // RPL RHL TAR
  ByteView body;          // CNTR .. end
};

Result<ParsedResponse> parse_response(ByteView packet) {
  ParsedResponse p;
  Cursor c(packet, "OTA response packet");
  const std::uint16_t rpl = c.u16("RPL");
  if (c.ok() && c.remaining() != rpl) {
    if (c.remaining() < rpl)
      return make_error(Errc::truncated, "OTA response packet: RPL says " + std::to_string(rpl) + " bytes follow but only " +
                                             std::to_string(c.remaining()) + " do; the packet is cut short");
    return make_error(Errc::trailing_data, "OTA response packet: " + std::to_string(c.remaining() - rpl) +
                                               " bytes after the RPL=" + std::to_string(rpl) + " bytes of the packet");
  }
  p.rhl = c.u8("RHL");
  auto tar = c.take(3, "TAR");
  if (!c.ok()) return c.error();
  std::copy(tar.begin(), tar.end(), p.tar.begin());
  if (p.rhl < kRhlFixed)
    return make_error(Errc::bad_length, "OTA response packet: RHL " + std::to_string(p.rhl) + " is below the minimum 10");
  p.clear_header = packet.subspan(0, 2 + kRspClear);
  p.body = c.rest();
  if (auto f = c.finish(); !f) return std::move(f).error();
  return p;
}

}  // namespace

Result<Tar> peek_response_tar(ByteView packet) {
  auto p = parse_response(packet);
  if (!p) return std::move(p).error();
  return p->tar;
}

Result<Response> open_response(ByteView packet, const PorSecurity& sec, const SecretBytes& kic_key,
                               const SecretBytes& kid_key) {
  auto p = parse_response(packet);
  if (!p) return std::move(p).error();
  auto n = check_len_or_zero(sec.spi.por_integrity, sec.kid);
  if (!n) return std::move(n).error();
  if (p->rhl != kRhlFixed + *n)
    return make_error(Errc::bad_length, "OTA response packet: RHL " + std::to_string(p->rhl) + " but the PoR security asks for a " +
                                            std::to_string(*n) + "-byte RC/CC (RHL " + std::to_string(kRhlFixed + *n) + ")");
  Bytes plain;
  WipeOnExit wipe_plain(plain);
  if (sec.spi.por_ciphered) {
    auto a = cipher_for(sec.kic, kic_key);
    if (!a) return std::move(a).error();
    const std::size_t bs = block_size(*a);
    if (p->body.empty() || p->body.size() % bs != 0)
      return make_error(Errc::crypto, "OTA response packet: the ciphered part is " + std::to_string(p->body.size()) +
                                          " bytes, not a whole number of " + std::to_string(bs) + "-byte blocks");
    auto d = decipher(*a, kic_key, p->body);
    if (!d) return std::move(d).error();
    plain = std::move(*d);
  } else {
    plain.assign(p->body.begin(), p->body.end());
  }
  Cursor c(plain, "OTA response packet (deciphered part)");
  auto fields = c.take(7, "CNTR/PCNTR/RSC");
  auto received_check = c.take(*n, "RC/CC/DS");
  auto padded = c.rest();
  if (!c.ok()) return c.error();
  if (auto f = c.finish(); !f) return std::move(f).error();
  if (*n != 0) {
    auto expect = check_over(sec.spi.por_integrity, sec.kid, kid_key, {kPorUdh, p->clear_header, fields, padded});
    if (!expect) return std::move(expect).error();
    if (!ct_equal(*expect, received_check))
      return make_error(Errc::bad_mac, "OTA response packet: the RC/CC does not verify; wrong KID key, or the packet was altered");
  }
  Response r;
  r.tar = p->tar;
  r.counter = (std::uint64_t{fields[0]} << 32) | (std::uint64_t{fields[1]} << 24) | (std::uint64_t{fields[2]} << 16) |
              (std::uint64_t{fields[3]} << 8) | fields[4];
  r.pcntr = fields[5];
  r.status = static_cast<Rsc>(fields[6]);
  if (r.pcntr > padded.size())
    return make_error(Errc::bad_value, "OTA response packet: PCNTR " + std::to_string(r.pcntr) + " exceeds the " +
                                           std::to_string(padded.size()) + " bytes of data");
  r.data.assign(padded.begin(), padded.end() - r.pcntr);
  return r;
}

// ---- checks and keys ----------------------------------------------------------------------

std::uint16_t crc16(ByteView data) {
  std::uint16_t crc = 0xFFFF;
  for (std::uint8_t b : data) {
    crc ^= b;
    for (int i = 0; i < 8; ++i)
      crc = static_cast<std::uint16_t>((crc & 1u) ? (crc >> 1) ^ 0x8408u : crc >> 1);
  }
  return static_cast<std::uint16_t>(crc ^ 0xFFFFu);
}

std::uint32_t crc32(ByteView data) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (std::uint8_t b : data) {
    crc ^= b;
    for (int i = 0; i < 8; ++i) crc = (crc & 1u) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
  }
  return crc ^ 0xFFFFFFFFu;
}

Result<CardKeys> derive_card_keys(const SecretBytes& k, ByteView n, CardAlgorithm algorithm) {
  if (k.size() != 16)
    return make_error(Errc::bad_length, "card key K must be 16 bytes, got " + std::to_string(k.size()));
  if (n.size() != 8) return make_error(Errc::bad_length, "card identity N must be 8 bytes, got " + std::to_string(n.size()));
  if (algorithm != CardAlgorithm::des3_2key && algorithm != CardAlgorithm::aes128)
    return make_error(Errc::bad_value, "card algorithm must be 01 (3DES) or 02 (AES-128)");
  CardKeys keys{crypto::kdf_sp800_108(k, "OTAC-OTA-ENC", n, 16), crypto::kdf_sp800_108(k, "OTAC-OTA-MAC", n, 16),
                crypto::kdf_sp800_108(k, "OTAC-MO-MAC", n, 16)};
  if (algorithm == CardAlgorithm::des3_2key) {
    crypto::set_des_parity(keys.kic.data(), keys.kic.size());
    crypto::set_des_parity(keys.kid.data(), keys.kid.size());
    crypto::set_des_parity(keys.mo_mac.data(), keys.mo_mac.size());
  }
  return keys;
}

std::uint8_t key_id_for(CardAlgorithm algorithm, std::uint8_t version) {
  const unsigned low = algorithm == CardAlgorithm::aes128 ? 0x02u : 0x05u;
  return static_cast<std::uint8_t>(((version & 0x0Fu) << 4) | low);
}

}  // namespace otac::ota
