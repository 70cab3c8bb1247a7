#include "ota_push.hpp"

#include "otac/common/crypto.hpp"
#include "otac/common/cursor.hpp"
#include "otac/common/ota.hpp"
#include "otac/common/protocol.hpp"

namespace otac::backend {
namespace {

ota::CardAlgorithm ota_alg(Algorithm a) {
  return a == Algorithm::des3 ? ota::CardAlgorithm::des3_2key : ota::CardAlgorithm::aes128;
}

// The card request template F1 { DF41 N, C0 type, DF42 list, DF48 unused, DF49 version }.
Result<CardRequest> parse_f1(ByteView data) {
  Cursor c(data, "card request");
  if (c.u8("F1 tag") != 0xF1) return make_error(Errc::bad_value, "card request: template F1 expected");
  const std::size_t len = c.u8("F1 length");
  if (len > 0x7F) return make_error(Errc::bad_length, "card request: F1 too long");
  ByteView body = c.take(len, "F1 value");
  if (auto f = c.finish(); !f) return f.error();
  CardRequest r;
  bool seen[5] = {};
  Cursor b(body, "card request F1");
  for (int guard = 0; !b.empty() && guard < 16; ++guard) {
    std::uint32_t tag = b.u8("tag");
    if ((tag & 0x1F) == 0x1F) tag = (tag << 8) | b.u8("tag");
    const std::size_t l = b.u8("length");
    ByteView v = b.take(l, "value");
    if (!b.ok()) return b.error();
    auto want = [&](int slot, std::size_t n) -> Result<void> {
      if (seen[slot]) return make_error(Errc::bad_value, "card request: a tag appears twice");
      if (v.size() != n) return make_error(Errc::bad_length, "card request: a field has a wrong length");
      seen[slot] = true;
      return {};
    };
    Result<void> ok;
    switch (tag) {
      case 0xDF41: ok = want(0, 8); if (ok) r.n.assign(v.begin(), v.end()); break;
      case 0xC0: ok = want(1, 1); if (ok) r.type = v[0]; break;
      case 0xDF42: ok = want(2, 2); if (ok) r.active_list = static_cast<std::uint16_t>(v[0] << 8 | v[1]); break;
      case 0xDF48: ok = want(3, 2); if (ok) r.unused = static_cast<std::uint16_t>(v[0] << 8 | v[1]); break;
      case 0xDF49: ok = want(4, 1); if (ok) r.key_version = v[0]; break;
      default: return make_error(Errc::bad_value, "card request: unexpected tag");
    }
    if (!ok) return ok.error();
  }
  if (auto f = b.finish(); !f) return f.error();
  for (bool s : seen) if (!s) return make_error(Errc::bad_value, "card request: a required tag is missing");
  if (r.type < 1 || r.type > 3) return make_error(Errc::bad_value, "card request: type must be 01, 02 or 03");
  return r;
}

}  // namespace

Bytes encode_load_list(std::uint16_t list_id, bool activate_now, const std::vector<SecretBytes>& keys) {
  protocol::LoadList cmd;
  cmd.list_id = list_id;
  cmd.activation = activate_now ? 1 : 0;
  cmd.count = static_cast<std::uint16_t>(keys.size());
  cmd.keys = SecretBytes(keys.size() * 16);
  std::size_t at = 0;
  for (const auto& k : keys) {
    std::copy(k.view().begin(), k.view().end(), cmd.keys.data() + at);
    at += k.size();
  }
  return protocol::encode_inner(std::move(cmd));
}

Bytes encode_set_signature_key(const SecretBytes& key) {
  return protocol::encode_inner(protocol::SetSignatureKey{key.clone()});
}

Bytes encode_server_key(ByteView server_point, ByteView ca_signature) {
  return protocol::encode_inner(
      protocol::SetServerKey{Bytes(server_point.begin(), server_point.end()), Bytes(ca_signature.begin(), ca_signature.end())});
}

std::uint16_t max_e5_codes(ByteView card_spki) {
  auto pub = crypto::public_key_from_der(card_spki);
  return pub && crypto::ec_public_point(*pub) ? 110 : 100;
}

Result<void> check_card_public_key(ByteView spki) {
  auto pub = crypto::public_key_from_der(spki);
  if (!pub) return make_error(Errc::bad_value, "public key: not a DER SubjectPublicKeyInfo (" + pub.error().message + ")");
  if (auto point = crypto::ec_public_point(*pub)) {
    // Any 65-byte curve point would pass ec_public_point; P-256 re-encodes to the same SPKI.
    auto p256 = crypto::ec_public_from_point(*point);
    auto der = p256 ? crypto::public_key_der(*p256) : Result<Bytes>(p256.error());
    if (!der || !ct_equal(*der, spki)) return make_error(Errc::bad_value, "public key: an EC key must be on P-256 (uncompressed point)");
    return {};
  }
  // RSA: the wrapped session key must be exactly 256 bytes (RSA-2048), as the card expects.
  auto probe = crypto::rsa_oaep_encrypt(*pub, Bytes(16, 0));
  if (!probe || probe->size() != 256) return make_error(Errc::bad_value, "public key: must be RSA-2048 or EC P-256 (the card's GENERATE KEY PAIR output)");
  return {};
}

Result<Bytes> sign_with_server_key(const ServerKeyRecord& key, ByteView message) {
  if (key.sign_in_token) return key.sign_in_token(message);
  auto priv = crypto::private_key_from_der(key.private_der.view());
  if (!priv) return make_error(priv.error().code, "server key " + key.name + ": " + priv.error().message);
  return crypto::ecdsa_sign(*priv, message);
}

Result<Bytes> encode_load_list_asymmetric(std::uint16_t list_id, bool activate_now, const std::vector<SecretBytes>& keys,
                                          ByteView card_spki, ByteView n, const ServerKeyRecord& server) {
  auto pub = crypto::public_key_from_der(card_spki);
  if (!pub) return make_error(pub.error().code, "card public key: " + pub.error().message);
  SecretBytes session;
  Bytes wrapped;
  if (crypto::ec_public_point(*pub)) {
    auto eph = crypto::ec_p256_generate();
    if (!eph) return eph.error();
    auto point = crypto::ec_public_point(*eph);
    if (!point) return point.error();
    auto shared = crypto::ecdh_p256(*eph, *pub);
    if (!shared) return shared.error();
    Bytes info = to_bytes("OTAC-E5");
    append(info, n);
    session = crypto::hkdf_sha256(*shared, {}, info, 16);
    wrapped = std::move(*point);
  } else {
    session = crypto::random_secret(16);
    auto w = crypto::rsa_oaep_encrypt(*pub, session.view());
    if (!w) return w.error();
    wrapped = std::move(*w);
  }
  Bytes all;
  for (const auto& k : keys) append(all, k.view());
  auto enc = crypto::aes_cbc_encrypt(session, Bytes(16, 0), all);
  secure_zero(all.data(), all.size());
  if (!enc) return enc.error();
  protocol::LoadListAsymmetric cmd;
  cmd.list_id = list_id;
  cmd.activation = activate_now ? 1 : 0;
  cmd.count = static_cast<std::uint16_t>(keys.size());
  cmd.wrapped_key = std::move(wrapped);
  cmd.encrypted_keys = std::move(*enc);
  auto sig = sign_with_server_key(server, cmd.signed_part());
  if (!sig) return sig.error();
  cmd.signature = std::move(*sig);
  return protocol::encode_inner(std::move(cmd));
}

Result<std::vector<SmsPart>> split_packet(ByteView packet, std::uint8_t ref) {
  constexpr std::size_t kUserData = 140;  // octets, including UDHL and UDH (TS 23.040)
  std::vector<SmsPart> parts;
  if (1 + 2 + packet.size() <= kUserData) {
    parts.push_back({Bytes{0x70, 0x00}, Bytes(packet.begin(), packet.end())});
    return parts;
  }
  const std::size_t first = kUserData - 1 - 5 - 2, later = kUserData - 1 - 5;
  const std::size_t total = packet.size() <= first ? 1 : 1 + (packet.size() - first + later - 1) / later;
  if (total > kMaxParts)
    return make_error(Errc::bad_length, "packet needs " + std::to_string(total) + " SMS parts; the card takes at most 16 (reduce list_size)");
  std::size_t pos = 0;
  for (std::size_t seq = 1; seq <= total; ++seq) {
    SmsPart p;
    p.udh = {0x00, 0x03, ref, static_cast<std::uint8_t>(total), static_cast<std::uint8_t>(seq)};
    if (seq == 1) append(p.udh, Bytes{0x70, 0x00});
    const std::size_t n = std::min(seq == 1 ? first : later, packet.size() - pos);
    p.payload.assign(packet.begin() + static_cast<std::ptrdiff_t>(pos), packet.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
    parts.push_back(std::move(p));
  }
  return parts;
}

Result<std::uint64_t> enqueue_packet(Tx& tx, const CardRecord& card, ByteView inner_commands, UnixTime now,
                                     std::string_view kind, std::int64_t ref) {
  auto sec = tx.card_security(card.n);
  if (!sec) return sec.error();
  Bytes inner(inner_commands.begin(), inner_commands.end());
  if (sec->sig_key) protocol::append_inner_mac(inner, *sec->sig_key);
  auto keys = ota::derive_card_keys(card.k, card.n, ota_alg(card.algorithm));
  if (!keys) return keys.error();
  auto counter = tx.next_ota_counter(card.n);
  if (!counter) return counter.error();
  auto spi = ota::Spi::decode(0x1639);
  if (!spi) return spi.error();
  const std::uint8_t kid = ota::key_id_for(ota_alg(card.algorithm), card.key_version);
  ota::CommandHeader h{*spi, kid, kid, ota::otac_tar};
  auto packet = ota::build_command(h, *counter, inner, keys->kic, keys->kid);
  secure_zero(inner.data(), inner.size());
  if (!packet) return packet.error();
  if (auto x = tx.record_ota_sent(card.n, *counter, kind, ref, now); !x) return x.error();
  if (sec->sig_key && sec->sig_since == 0) {  // the first packet with CF under this S
    sec->sig_since = *counter;
    if (auto x = tx.set_card_security(card.n, *sec); !x) return x.error();
  }
  auto parts = split_packet(*packet, static_cast<std::uint8_t>(*counter));
  if (!parts) return parts.error();
  for (auto& p : *parts) {
    OutboxMessage m;
    m.card = card.n;
    m.to = card.msisdn;
    m.udh = std::move(p.udh);
    m.payload = std::move(p.payload);
    m.next_attempt_at = now;
    m.created_at = now;
    if (auto id = tx.enqueue_sms(m); !id) return id.error();
  }
  return *counter;
}

Result<PorResult> open_por(Tx& tx, std::string_view from, ByteView packet) {
  auto tar = ota::peek_response_tar(packet);
  if (!tar) return tar.error();
  if (*tar != ota::otac_tar) return make_error(Errc::bad_value, "PoR: TAR is not the OTAC applet's");
  auto n = tx.card_by_msisdn(from);
  if (!n) return n.error();
  auto card = tx.card(*n);
  if (!card) return card.error();
  auto spi = ota::Spi::decode(0x1639);
  if (!spi) return spi.error();
  const auto alg = ota_alg(card->algorithm);
  auto try_key = [&](const SecretBytes& k, std::uint8_t version) -> Result<ota::Response> {
    auto keys = ota::derive_card_keys(k, card->n, alg);
    if (!keys) return keys.error();
    const std::uint8_t kid = ota::key_id_for(alg, version);
    return ota::open_response(packet, ota::PorSecurity{*spi, kid, kid}, keys->kic, keys->kid);
  };
  // K, then K' (the card may have switched), then the retired K (a PoR the card sealed
  // before it switched, arriving after the backend promoted K').
  auto r = try_key(card->k, card->key_version);
  if (!r && card->pending_k) {
    auto r2 = try_key(*card->pending_k, card->pending_version);
    if (r2) r = std::move(r2);
  }
  if (!r && card->retired_k) {
    auto r3 = try_key(*card->retired_k, card->retired_version);
    if (r3) r = std::move(r3);
  }
  if (!r) return make_error(r.error().code, "PoR from " + std::string(from) + ": " + r.error().message);
  return PorResult{*n, r->counter, static_cast<std::uint8_t>(r->status), std::move(r->data)};
}

Result<CardRequest> open_card_request(Tx& tx, ByteView packet) {
  auto peek = ota::peek_command(packet);
  if (!peek) return peek.error();
  if (peek->header.tar != ota::otac_tar) return make_error(Errc::bad_value, "card request: TAR is not the OTAC applet's");
  if (peek->header.spi.ciphered || peek->header.spi.integrity != ota::Integrity::cc)
    return make_error(Errc::bad_value, "card request: expected SPI with CC and no ciphering (12 00)");
  // Unciphered: the secured data follows CPL(2) CHL(1) and the CHL header bytes. We read N
  // from it only to choose keys; nothing is trusted before the CC verifies.
  Cursor c(packet, "card request packet");
  c.u16("CPL");
  const std::size_t chl = c.u8("CHL");
  c.take(chl, "header");
  auto unverified = parse_f1(c.rest());
  if (!unverified) return unverified.error();
  auto card = tx.card(unverified->n);
  if (!card) return card.error();
  const auto alg = ota_alg(card->algorithm);
  auto try_key = [&](const SecretBytes& k) -> Result<ota::Command> {
    auto keys = ota::derive_card_keys(k, card->n, alg);
    if (!keys) return keys.error();
    return ota::open_command(packet, keys->kic, keys->kid);
  };
  // K, then K' (the card switched: the request proves it), then the retired K (a request the
  // card sealed under K before it switched; its counter still has to be fresh).
  KeyUsed used = KeyUsed::current;
  auto opened = try_key(card->k);
  if (!opened && opened.error().code == Errc::bad_mac && card->pending_k) {
    opened = try_key(*card->pending_k);
    if (opened) used = KeyUsed::pending;
  }
  if (!opened && opened.error().code == Errc::bad_mac && card->retired_k) {
    opened = try_key(*card->retired_k);
    if (opened) used = KeyUsed::retired;
  }
  if (!opened) return make_error(opened.error().code, "card request from " + to_hex(card->n) + ": " + opened.error().message);
  auto stored = tx.card_counter(card->n);
  if (!stored) return stored.error();
  if (auto ok = ota::check_counter(ota::CounterMode::higher, opened->counter, *stored); !ok) return ok.error();
  if (auto s = tx.set_card_counter(card->n, opened->counter); !s) return s.error();
  auto req = parse_f1(opened->data);
  if (!req) return req.error();
  if (req->n != card->n) return make_error(Errc::bad_value, "card request: N changed between peek and open");
  req->key = used;
  return req;
}

}  // namespace otac::backend
