// OTA subcommands: ota-build, ota-open, derive-keys.
#include <ostream>
#include <string>

#include "otac/common/ota.hpp"
#include "tool.hpp"

namespace otac::tool {
namespace {

const char* kBuildHelp =
    "usage: otac-tool ota-build --spi HHHH --kic HH --kid HH --tar HHHHHH --cntr HEX10 --data HEX\n"
    "                           [--kic-key-file FILE] [--kid-key-file FILE]\n"
    "       otac-tool ota-build --response --spi HHHH --kic HH --kid HH --tar HHHHHH --cntr HEX10\n"
    "                           --rsc HH [--data HEX] [--kic-key-file FILE] [--kid-key-file FILE]\n\n"
    "Builds a TS 102 225 / TS 31.115 command packet (from CPL on, without the SMS UDH) or,\n"
    "with --response, a response packet (PoR, from RPL on) protected as the command's SPI\n"
    "second octet says. Prints the packet in hex.\n\n"
    "  --spi      the two SPI octets, e.g. 1639 (CC, ciphered, counter higher; PoR CC ciphered)\n"
    "  --kic/--kid  key identifiers, e.g. 15 (3DES two-key, version 1) or 12 (AES, version 1)\n"
    "  --cntr     5-byte counter in hex, e.g. 0000000001\n"
    "  --kic-key-file  file holding the ciphering key in hex (when the SPI asks for ciphering)\n"
    "  --kid-key-file  file holding the CC key in hex (when the SPI asks for a CC)\n"
    "Key files must be mode 0600 or stricter. The old --kic-key HEX and --kid-key HEX still\n"
    "work but warn: ps and the shell history show them.\n";

const char* kOpenHelp =
    "usage: otac-tool ota-open [--kic-key-file FILE] [--kid-key-file FILE] PACKET\n"
    "       otac-tool ota-open --response --spi HHHH --kic HH --kid HH [--kic-key-file FILE] [--kid-key-file FILE] PACKET\n\n"
    "Decodes a command packet (from CPL) or, with --response, a response packet (from RPL).\n"
    "Without keys, shows what can be read without them. With keys, deciphers and checks the\n"
    "RC/CC and shows the secured data. A PoR carries no SPI/KIc/KID: give the command's.\n"
    "Exit status 1 when the packet does not parse or does not verify.\n"
    "Key files must be mode 0600 or stricter; --kic-key HEX and --kid-key HEX are deprecated.\n";

const char* kDeriveHelp =
    "usage: otac-tool derive-keys --k-file FILE --n HEX16 [--aes]\n\n"
    "Derives a card's OTA ciphering key (KIc), CC key (KID) and MO request MAC key from its\n"
    "master key K and identity N (docs/protocol.md 1.1). 3DES keys (default) get odd parity.\n"
    "FILE holds K in hex (32 digits) and must be mode 0600 or stricter; the old --k HEX still\n"
    "works but warns. Prints the derived keys; K itself is not printed.\n";

std::string hex_byte(std::uint8_t b) { return to_hex(ByteView(&b, 1)); }

ota::Spi spi_option(const Args& a) {
  const Bytes b = a.hex_option("spi", 2);
  auto s = ota::Spi::decode(static_cast<std::uint16_t>((b[0] << 8) | b[1]));
  if (!s) throw UsageError{"--spi: " + s.error().message};
  return *s;
}

ota::Tar tar_option(const Args& a) {
  const Bytes b = a.hex_option("tar", 3);
  return {b[0], b[1], b[2]};
}

std::uint64_t cntr_option(const Args& a) {
  const Bytes b = a.hex_option("cntr", 5);
  std::uint64_t v = 0;
  for (auto x : b) v = (v << 8) | x;
  return v;
}

const char* integrity_name(ota::Integrity i) {
  switch (i) {
    case ota::Integrity::none: return "no RC/CC/DS";
    case ota::Integrity::rc: return "RC";
    case ota::Integrity::cc: return "CC";
    case ota::Integrity::ds: return "DS";
  }
  return "?";
}

std::string describe_spi(const ota::Spi& s) {
  static const char* counters[] = {"no counter", "counter not checked", "counter must be higher",
                                   "counter must be one higher"};
  static const char* pors[] = {"no PoR", "PoR required", "PoR on error", "PoR reserved"};
  std::string out = to_hex(be_bytes(s.encode(), 2)) + ": " + integrity_name(s.integrity) +
                    (s.ciphered ? ", ciphered" : ", not ciphered") + ", " + counters[static_cast<int>(s.counter)] +
                    "; " + pors[static_cast<int>(s.por)];
  if (s.por != ota::PorMode::none) {
    out += std::string(", PoR ") + integrity_name(s.por_integrity) + (s.por_ciphered ? ", PoR ciphered" : "") +
           (s.por_via_submit ? ", PoR by SMS-SUBMIT" : ", PoR by DELIVER-REPORT");
  }
  return out;
}

std::string describe_key_id(std::uint8_t id, ota::Integrity integrity, bool is_kid) {
  const auto alg = is_kid ? ota::kid_algorithm(id, integrity) : ota::kic_algorithm(id);
  return hex_byte(id) + ": " + ota::algorithm_name(alg) + ", key version " + std::to_string(ota::key_version(id));
}

std::string counter_hex(std::uint64_t c) { return to_hex(be_bytes(c, 5)); }

int run_build(const Args& a, std::ostream& out) {
  const ota::Spi spi = spi_option(a);
  const std::uint8_t kic = a.byte_option("kic"), kid = a.byte_option("kid");
  const SecretBytes kic_key = a.key_option_opt("kic-key");
  const SecretBytes kid_key = a.key_option_opt("kid-key");
  Result<Bytes> packet = Bytes{};
  if (a.flag("response")) {
    ota::Response r;
    r.tar = tar_option(a);
    r.counter = cntr_option(a);
    r.status = static_cast<ota::Rsc>(a.byte_option("rsc"));
    if (auto d = a.hex_option_opt("data")) r.data = *d;
    packet = ota::build_response({spi, kic, kid}, r, kic_key, kid_key);
  } else {
    if (a.option("rsc")) throw UsageError{"--rsc belongs to --response"};
    packet = ota::build_command({spi, kic, kid, tar_option(a)}, cntr_option(a), a.hex_option("data"), kic_key, kid_key);
  }
  if (!packet) throw InputError{packet.error().message};
  out << to_hex(*packet) << "\n";
  return exit_ok;
}

int run_open(const Args& a, std::ostream& out) {
  const Bytes packet = a.hex_positional("packet");
  const SecretBytes kic_key = a.key_option_opt("kic-key");
  const SecretBytes kid_key = a.key_option_opt("kid-key");
  const bool have_keys = !kic_key.empty() || !kid_key.empty();

  if (a.flag("response")) {
    const ota::PorSecurity sec{spi_option(a), a.byte_option("kic"), a.byte_option("kid")};
    auto tar = ota::peek_response_tar(packet);
    if (!tar) throw InputError{tar.error().message};
    out << "response packet (PoR), " << packet.size() << " bytes\n  TAR   " << to_hex(*tar) << "\n";
    if ((sec.spi.por_ciphered || sec.spi.por_integrity == ota::Integrity::cc) && !have_keys) {
      out << "  (the rest is protected; give --kic-key/--kid-key to open it)\n";
      return exit_ok;
    }
    auto r = ota::open_response(packet, sec, kic_key, kid_key);
    if (!r) throw InputError{r.error().message};
    out << "  CNTR  " << counter_hex(r->counter) << "\n  PCNTR " << int(r->pcntr) << "\n  RSC   "
        << hex_byte(static_cast<std::uint8_t>(r->status)) << " (" << ota::rsc_name(r->status) << ")\n"
        << "  check " << integrity_name(sec.spi.por_integrity)
        << (sec.spi.por_integrity == ota::Integrity::none ? "" : " verified") << "\n  data  " << to_hex(r->data)
        << " (" << r->data.size() << " bytes)\n";
    return exit_ok;
  }
  if (a.option("spi") || a.option("kic") || a.option("kid"))
    throw UsageError{"--spi/--kic/--kid are read from a command packet; they belong to --response"};
  auto peek = ota::peek_command(packet);
  if (!peek) throw InputError{peek.error().message};
  const auto& h = peek->header;
  out << "command packet, " << packet.size() << " bytes\n  SPI   " << describe_spi(h.spi) << "\n  KIc   "
      << describe_key_id(h.kic, h.spi.integrity, false) << "\n  KID   " << describe_key_id(h.kid, h.spi.integrity, true)
      << "\n  TAR   " << to_hex(h.tar) << "\n";
  const bool protected_ = h.spi.ciphered || h.spi.integrity == ota::Integrity::cc;
  if (protected_ && !have_keys) {
    if (peek->counter) out << "  CNTR  " << counter_hex(*peek->counter) << "\n";
    out << "  (protected; give --kic-key/--kid-key to verify and decipher)\n";
    return exit_ok;
  }
  auto c = ota::open_command(packet, kic_key, kid_key);
  if (!c) throw InputError{c.error().message};
  out << "  CNTR  " << counter_hex(c->counter) << "\n  PCNTR " << int(c->pcntr) << "\n  check "
      << integrity_name(h.spi.integrity) << (h.spi.integrity == ota::Integrity::none ? "" : " verified") << "\n  data  "
      << to_hex(c->data) << " (" << c->data.size() << " bytes)\n";
  return exit_ok;
}

int run_derive(const Args& a, std::ostream& out) {
  const SecretBytes k = a.key_option("k");
  const Bytes n = a.hex_option("n", 8);
  const auto alg = a.flag("aes") ? ota::CardAlgorithm::aes128 : ota::CardAlgorithm::des3_2key;
  auto keys = ota::derive_card_keys(k, n, alg);
  if (!keys) throw UsageError{"--k-file/--n: " + keys.error().message};
  out << "algorithm " << (a.flag("aes") ? "AES-128" : "3DES two-key") << ", KIc/KID "
      << hex_byte(ota::key_id_for(alg, 1)) << " for key version 1\n"
      << "KIc key    " << to_hex(keys->kic.view()) << "\nKID key    " << to_hex(keys->kid.view())
      << "\nMO MAC key " << to_hex(keys->mo_mac.view()) << "\n";
  return exit_ok;
}

}  // namespace

std::vector<Command> ota_commands() {
  return {
      {"ota-build", "build a TS 102 225 command or response packet", kBuildHelp,
       {"spi", "kic", "kid", "tar", "cntr", "data", "kic-key", "kid-key", "kic-key-file", "kid-key-file", "rsc"},
       {"response"}, false, run_build},
      {"ota-open", "decode, verify and decipher a command or response packet", kOpenHelp,
       {"spi", "kic", "kid", "kic-key", "kid-key", "kic-key-file", "kid-key-file"}, {"response"}, true, run_open},
      {"derive-keys", "derive a card's KIc/KID/MO keys from K and N", kDeriveHelp, {"k", "k-file", "n"}, {"aes"}, false,
       run_derive},
  };
}

}  // namespace otac::tool
