#include "custody.hpp"

#include <sys/mman.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "log.hpp"
#include "otac/common/crypto.hpp"
#include "pkcs11.hpp"
#include "store.hpp"
#include "store_open.hpp"

namespace otac::backend {
namespace {

namespace fs = std::filesystem;

bool token_mode(const Config& c) { return !c.kek_uri.empty(); }

Result<TokenLabels> labels_of(const Config& c) {
  if (c.server_key_uri.empty() != c.card_ca_key_uri.empty())
    return make_error(Errc::bad_value, "server_key_uri and card_ca_key_uri go together: set both or neither");
  TokenLabels l;
  auto k = p11::parse_uri(c.kek_uri);
  if (!k) return make_error(k.error().code, "kek_uri: " + k.error().message);
  l.kek = k->object;
  l.audit = k->object + "-audit";
  if (!c.server_key_uri.empty()) {
    auto s = p11::parse_uri(c.server_key_uri);
    if (!s) return make_error(s.error().code, "server_key_uri: " + s.error().message);
    auto a = p11::parse_uri(c.card_ca_key_uri);
    if (!a) return make_error(a.error().code, "card_ca_key_uri: " + a.error().message);
    l.server = s->object;
    l.card_ca = a->object;
  }
  return l;
}

Result<std::shared_ptr<p11::Token>> open_token(const Config& c) {
  auto u = p11::parse_uri(c.kek_uri);
  if (!u) return make_error(u.error().code, "kek_uri: " + u.error().message);
  const fs::path module = u->module_path.empty() ? c.pkcs11_module : fs::path(u->module_path);
  return p11::Token::open(module, *u, c.resolve(c.pkcs11_pin_file));
}

// The keys a running backend needs must stay out of swap and core files: lock the process's
// pages (best effort: RLIMIT_MEMLOCK may forbid it) and make it non-dumpable.
void protect_process_memory() {
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (::mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0)
    log::warn("memory_not_locked", {{"why", std::strerror(errno)},
                                    {"action", "raise LimitMEMLOCK (systemd) or ulimit -l so clear keys cannot be swapped out"}});
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The store the config names (SQLite file or PostgreSQL database), for the re-wrap.
StoreAddress address_of(const Config& c) {
  if (c.store == "postgresql") return StoreAddress::postgresql(c.postgres_conninfo);
  return StoreAddress(c.resolve(c.database));
}

// One connection to the store the config names, opened (and migrated) as the backend does.
Result<std::unique_ptr<Store>> open_store(const Config& c, std::shared_ptr<const Kek> kek) {
  auto factory = store_opener(c, std::move(kek));
  if (!factory) return factory.error();
  return (*factory)();
}

Result<void> write_audit(const Config& c, std::shared_ptr<const Kek> kek, const std::string& actor,
                         const std::string& action, const std::string& detail) {
  auto store = open_store(c, std::move(kek));
  if (!store) return store.error();
  return (*store)->run([&](Tx& tx) -> Result<void> {
    auto a = tx.audit(unix_now(), actor, action, detail);
    if (!a) return a.error();
    return {};
  });
}

struct Opened {
  std::shared_ptr<p11::Token> token;
  TokenLabels labels;
};

Result<Opened> open_for_ceremony(const Config& c) {
  if (!token_mode(c)) return make_error(Errc::state, "kek_uri is not set in the configuration; the key ceremony needs a token");
  auto labels = labels_of(c);
  if (!labels) return labels.error();
  auto token = open_token(c);
  if (!token) return token.error();
  return Opened{std::move(*token), std::move(*labels)};
}

// The KEK versions the token holds (ascending).
Result<std::vector<std::pair<std::uint32_t, p11::Handle>>> kek_versions(p11::Token& t, const std::string& label) {
  auto keys = t.find_secret_keys(label);
  if (!keys) return keys.error();
  std::vector<std::pair<std::uint32_t, p11::Handle>> out;
  for (const auto& [id, h] : *keys) {
    if (id.size() != 4) return make_error(Errc::bad_value, "token key '" + label + "' has an id that is not a 4-byte version");
    out.emplace_back(static_cast<std::uint32_t>(id[0]) << 24 | static_cast<std::uint32_t>(id[1]) << 16 |
                         static_cast<std::uint32_t>(id[2]) << 8 | id[3],
                     h);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::uint32_t> ensure_kek(p11::Token& t, const std::string& label) {
  auto v = kek_versions(t, label);
  if (!v) return v.error();
  if (!v->empty()) return v->back().first;
  auto g = t.generate_aes(label, be_bytes(1, 4));
  if (!g) return g.error();
  return 1u;
}

// The server key pair with this label in the token: made when absent, its point returned.
Result<Bytes> ensure_ec(p11::Token& t, const std::string& label) {
  auto pub = t.find_ec_key(label, false);
  if (pub) return t.ec_point(*pub);
  if (pub.error().code != Errc::not_found) return pub.error();
  return t.generate_ec(label);
}

// The audit key the chain so far was made with goes into the token, or is checked there.
Result<void> ensure_audit_key(p11::Token& t, const std::string& label, const FileKek* file) {
  auto have = t.find_secret_keys(label);
  if (!have) return have.error();
  if (have->size() > 1) return make_error(Errc::state, "token holds more than one audit key labelled '" + label + "'");
  if (have->empty()) {
    auto h = file ? t.import_hmac(label, file->audit_key()) : t.generate_hmac(label);
    if (!h) return h.error();
    return {};
  }
  if (!file) return {};
  // Same key? Compare one MAC made both ways (constant time; the probe is public).
  const Bytes probe = to_bytes("OTAC audit key check");
  auto in_token = t.hmac_sha256(have->front().second, probe);
  if (!in_token) return in_token.error();
  auto in_file = file->audit_mac(probe);
  if (!in_file) return in_file.error();
  if (!ct_equal(*in_token, *in_file))
    return make_error(Errc::state, "the token's audit key '" + label + "' is not the one this store's audit log is chained with");
  return {};
}

}  // namespace

Result<std::shared_ptr<const Kek>> open_custody(const Config& c, std::vector<std::string>* created) {
  const fs::path kek_file = c.resolve(c.kek_file);
  if (!token_mode(c)) {
    const bool fresh = !fs::exists(kek_file);
    auto k = Kek::load_or_create(kek_file);
    if (!k) return k.error();
    if (fresh && created) created->push_back(kek_file.string() + " (key-encryption key, 0600; back it up apart from the database)");
    return std::make_shared<const Kek>(std::move(*k));
  }
  auto o = open_for_ceremony(c);
  if (!o) return o.error();
  auto tk = TokenKek::open(o->token, o->labels);
  if (!tk) return tk.error();
  std::optional<FileKek> file;
  if (auto f = FileKek::load(kek_file)) file = std::move(*f);
  else if (f.error().code != Errc::not_found) return f.error();
  protect_process_memory();
  return std::make_shared<const Kek>(Kek::with_token(std::move(*tk), std::move(file), !c.server_key_uri.empty()));
}

Result<std::string> hsm_init(const Config& c, const CeremonyOptions& o) {
  auto op = open_for_ceremony(c);
  if (!op) return op.error();
  const fs::path kek_file = c.resolve(c.kek_file);
  if (fs::exists(kek_file)) {
    // SQLite: a database beside the file KEK was made with it. PostgreSQL: the database is
    // shared, so what tells is a value the file KEK sealed.
    bool file_store = false;
    if (c.store == "postgresql") {
      auto n = count_not_token_sealed(address_of(c));
      if (!n) return n.error();
      file_store = *n > 0;
    } else {
      file_store = fs::exists(c.resolve(c.database));
    }
    if (file_store)
      return make_error(Errc::state, "this store was made with the file KEK " + kek_file.string() + "; use hsm-migrate, not hsm-init");
  }
  p11::Token& t = *op->token;
  auto v = ensure_kek(t, op->labels.kek);
  if (!v) return v.error();
  if (auto a = ensure_audit_key(t, op->labels.audit, nullptr); !a) return a.error();
  std::string detail = "token=" + t.label() + " kek=" + op->labels.kek + " kek_version=" + std::to_string(*v);
  if (!c.server_key_uri.empty()) {
    auto s = ensure_ec(t, op->labels.server);
    if (!s) return s.error();
    auto ca = ensure_ec(t, op->labels.card_ca);
    if (!ca) return ca.error();
    detail += " server=" + to_hex(*s) + " card_ca=" + to_hex(*ca);
  }
  auto kek = open_custody(c, nullptr);
  if (!kek) return kek.error();
  if (auto a = write_audit(c, *kek, o.actor, "hsm_init", detail); !a) return a.error();
  return "hsm-init: " + detail;
}

Result<std::string> hsm_migrate(const Config& c, const CeremonyOptions& o) {
  auto op = open_for_ceremony(c);
  if (!op) return op.error();
  const StoreAddress db = address_of(c);
  auto file = FileKek::load(c.resolve(c.kek_file));
  if (!file) return make_error(file.error().code, "hsm-migrate needs the file KEK: " + file.error().message);
  p11::Token& t = *op->token;
  auto v = ensure_kek(t, op->labels.kek);
  if (!v) return v.error();
  if (auto a = ensure_audit_key(t, op->labels.audit, &*file); !a) return a.error();
  auto tk = TokenKek::open(op->token, op->labels);
  if (!tk) return tk.error();
  // First the server keys go into the token (cards trust these very keys: they are imported,
  // never made anew), while the store still opens them.
  std::vector<std::string> held;
  if (!c.server_key_uri.empty()) {
    auto reading_file = FileKek::load(c.resolve(c.kek_file));
    if (!reading_file) return reading_file.error();
    auto store = open_store(c, std::make_shared<const Kek>(Kek::with_token(*tk, std::move(*reading_file), false)));
    if (!store) return store.error();
    for (const auto& [name, label] : {std::pair{std::string("server"), op->labels.server}, std::pair{std::string("card-ca"), op->labels.card_ca}}) {
      ServerKeyRecord rec;
      bool stored = false;
      // A named copy: clang 14 cannot capture a structured binding in a lambda.
      const std::string& key_name = name;
      auto r = (*store)->run([&](Tx& tx) -> Result<void> {
        auto k = tx.server_key(key_name);
        if (!k) return k.error();
        rec = std::move(*k);
        stored = true;
        return {};
      });
      if (!r && r.error().code != Errc::not_found && r.error().code != Errc::bad_value) return r.error();
      auto pub = t.find_ec_key(label, false);
      if (!pub && pub.error().code != Errc::not_found) return pub.error();
      if (pub) {  // imported by an earlier run, or made by hsm-init: must be the same key
        auto point = t.ec_point(*pub);
        if (!point) return point.error();
        if (stored && !ct_equal(*point, rec.public_point))
          return make_error(Errc::state, "token key '" + label + "' differs from server key " + name + " in the store");
      } else if (stored) {
        if (auto i = t.import_ec(label, rec.private_der, rec.public_point); !i) return i.error();
      } else {
        if (auto g = t.generate_ec(label); !g) return g.error();
      }
      held.push_back(name);
    }
  }
  auto full = FileKek::load(c.resolve(c.kek_file));
  if (!full) return full.error();
  const Kek kek = Kek::with_token(*tk, std::move(*full), false);
  auto report = rewrap_store(db, kek, kSealedToken, *v, o.rewrap);
  if (!report) return report.error();
  if (report->remaining != 0)
    return make_error(Errc::state, std::to_string(report->remaining) + " sealed values are still under the file KEK; run hsm-migrate again");
  for (const auto& name : held) {
    if (auto d = drop_stored_private_key(db, name); !d) return d.error();
  }
  auto custody = open_custody(c, nullptr);
  if (!custody) return custody.error();
  const std::string detail = "token=" + t.label() + " kek_version=" + std::to_string(*v) + " rewrapped=" +
                             std::to_string(report->rewrapped) + " server_keys=" + (held.empty() ? "store" : "token");
  if (auto a = write_audit(c, *custody, o.actor, "hsm_migrate", detail); !a) return a.error();
  return "hsm-migrate: " + detail + "; every key is now wrapped by the token: destroy " + c.resolve(c.kek_file).string() +
         " (and its backups) once a backup of the database has been checked";
}

Result<std::string> hsm_rotate(const Config& c, const CeremonyOptions& o) {
  auto op = open_for_ceremony(c);
  if (!op) return op.error();
  const StoreAddress db = address_of(c);
  p11::Token& t = *op->token;
  auto versions = kek_versions(t, op->labels.kek);
  if (!versions) return versions.error();
  if (versions->empty()) return make_error(Errc::state, "the token has no KEK yet; run hsm-init or hsm-migrate first");
  std::uint32_t target = versions->back().first;
  auto behind = count_not_under(db, kSealedToken, target);
  if (!behind) return behind.error();
  const bool resume = *behind > 0 && versions->size() > 1;
  auto start_custody = open_custody(c, nullptr);
  if (!start_custody) return start_custody.error();
  if (!resume) {
    ++target;
    if (auto g = t.generate_aes(op->labels.kek, be_bytes(target, 4)); !g) return g.error();
    if (auto a = write_audit(c, *start_custody, o.actor, "kek_rotation_started",
                             "token=" + t.label() + " from=" + std::to_string(target - 1) + " to=" + std::to_string(target));
        !a)
      return a.error();
    std::this_thread::sleep_for(o.settle);  // running backends now seal under `target`
  }
  auto custody = open_custody(c, nullptr);  // sees the new version
  if (!custody) return custody.error();
  auto report = rewrap_store(db, **custody, kSealedToken, target, o.rewrap);
  if (!report) return report.error();
  if (report->remaining != 0)
    return make_error(Errc::state, std::to_string(report->remaining) + " sealed values are not yet under KEK version " +
                                       std::to_string(target) + "; run hsm-rotate again to finish");
  std::string destroyed;
  if (!o.keep_old) {
    auto now_versions = kek_versions(t, op->labels.kek);
    if (!now_versions) return now_versions.error();
    for (const auto& [ver, h] : *now_versions) {
      if (ver >= target) continue;
      if (auto d = t.destroy(h); !d) return d.error();
      destroyed += (destroyed.empty() ? "" : ",") + std::to_string(ver);
    }
  }
  const std::string detail = "token=" + t.label() + " version=" + std::to_string(target) + " rewrapped=" +
                             std::to_string(report->rewrapped) + (resume ? " resumed" : "") +
                             " destroyed=" + (destroyed.empty() ? "none" : destroyed);
  if (auto a = write_audit(c, *custody, o.actor, "kek_rotation_finished", detail); !a) return a.error();
  return "hsm-rotate: " + detail;
}

}  // namespace otac::backend
