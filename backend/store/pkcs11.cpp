#include "pkcs11.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <thread>
#include <map>
#include <mutex>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/bn.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "otac/common/crypto.hpp"
#include "otac/sys/fd.hpp"
#include "otac/sys/log.hpp"

namespace otac::backend::p11 {
namespace {

// Sessions kept open for reuse; more concurrent operations wait for one (bounded pool).
constexpr std::size_t kMaxSessions = 16;
// A lost token is re-opened by the first operation after the backoff: 250 ms doubling to 30 s.
constexpr std::chrono::milliseconds kFirstReopenWait{250}, kMaxReopenWait{30000};
// How long a re-initialization of the module waits for calls in flight to return.
constexpr int kQuiesceSteps = 200;
constexpr std::chrono::milliseconds kQuiesceStep{10};
// DER OID of P-256 (prime256v1), the CKA_EC_PARAMS of every EC key we make or import.
const Bytes kP256Params = {0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07};

// Names of the return values a person may meet; others are shown in hex.
std::string rv_name(CK_RV rv) {
  switch (rv) {
    case CKR_PIN_INCORRECT: return "CKR_PIN_INCORRECT (wrong token PIN)";
    case CKR_PIN_LOCKED: return "CKR_PIN_LOCKED (the token PIN is locked; the security officer must reset it)";
    case CKR_TOKEN_NOT_PRESENT: return "CKR_TOKEN_NOT_PRESENT";
    case CKR_DEVICE_REMOVED: return "CKR_DEVICE_REMOVED";
    case CKR_DEVICE_ERROR: return "CKR_DEVICE_ERROR";
    case CKR_GENERAL_ERROR: return "CKR_GENERAL_ERROR";
    case CKR_ENCRYPTED_DATA_INVALID: return "CKR_ENCRYPTED_DATA_INVALID";
    case CKR_KEY_HANDLE_INVALID: return "CKR_KEY_HANDLE_INVALID";
    case CKR_OBJECT_HANDLE_INVALID: return "CKR_OBJECT_HANDLE_INVALID";
    case CKR_SESSION_HANDLE_INVALID: return "CKR_SESSION_HANDLE_INVALID";
    case CKR_USER_NOT_LOGGED_IN: return "CKR_USER_NOT_LOGGED_IN";
    case CKR_MECHANISM_INVALID: return "CKR_MECHANISM_INVALID";
    case CKR_KEY_FUNCTION_NOT_PERMITTED: return "CKR_KEY_FUNCTION_NOT_PERMITTED";
    default: {
      char b[32];
      std::snprintf(b, sizeof b, "CKR 0x%lX", static_cast<unsigned long>(rv));
      return b;
    }
  }
}

// Return values after which the session or the login is gone: the token was removed, reset or
// cannot be reached. The token is then re-opened (Token::Impl::session).
bool token_lost(CK_RV rv) {
  switch (rv) {
    case CKR_DEVICE_REMOVED: case CKR_DEVICE_ERROR: case CKR_TOKEN_NOT_PRESENT: case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SESSION_HANDLE_INVALID: case CKR_SESSION_CLOSED: case CKR_USER_NOT_LOGGED_IN:
    case CKR_CRYPTOKI_NOT_INITIALIZED: case CKR_SLOT_ID_INVALID: case CKR_GENERAL_ERROR:
      return true;
    default:
      return false;
  }
}

Error p11_error(const char* what, CK_RV rv) {
  // unknown_key: the handle went stale (the token was re-read); a caller may look it up again.
  // unavailable: the token is gone for now (token_lost); it is re-opened, so a retry may pass.
  const Errc code = rv == CKR_ENCRYPTED_DATA_INVALID                                   ? Errc::bad_mac
                    : rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID ? Errc::unknown_key
                    : token_lost(rv)                                                  ? Errc::unavailable
                                                                                      : Errc::io;
  return make_error(code, std::string("PKCS#11 ") + what + " failed: " + rv_name(rv));
}

// A blank-padded fixed-width PKCS#11 string field, trimmed.
std::string field(const unsigned char* p, std::size_t n) {
  std::string s(reinterpret_cast<const char*>(p), n);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

CK_ATTRIBUTE attr(CK_ATTRIBUTE_TYPE t, const void* p, std::size_t n) {
  return CK_ATTRIBUTE{t, const_cast<void*>(p), static_cast<CK_ULONG>(n)};
}
template <class T>
CK_ATTRIBUTE attr(CK_ATTRIBUTE_TYPE t, const T& v) { return attr(t, &v, sizeof v); }

// Reads the PIN file: 0600 or stricter, one line. The PIN is a secret (zeroized).
Result<SecretBytes> read_pin(const std::filesystem::path& file) {
  sys::Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return make_error(Errc::io, "cannot open the token PIN file " + file.string() + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return make_error(Errc::io, "token PIN file " + file.string() + " is not a regular file");
  if ((st.st_mode & 077) != 0)
    return make_error(Errc::state, "token PIN file " + file.string() + " is readable by group or others; run chmod 600 on it");
  if (st.st_size <= 0 || st.st_size > 256) return make_error(Errc::bad_length, "token PIN file " + file.string() + " must hold one PIN of 1 to 255 bytes");
  SecretBytes pin(static_cast<std::size_t>(st.st_size));
  if (::read(fd.get(), pin.data(), pin.size()) != static_cast<ssize_t>(pin.size()))
    return make_error(Errc::io, "cannot read the token PIN file " + file.string());
  std::size_t n = pin.size();
  while (n > 0 && (pin.data()[n - 1] == '\n' || pin.data()[n - 1] == '\r')) --n;
  if (n == 0) return make_error(Errc::bad_value, "token PIN file " + file.string() + " is empty");
  return SecretBytes(pin.view().first(n));
}

// The 32-byte private scalar of a PKCS#8 P-256 key (for C_CreateObject at import).
Result<SecretBytes> p256_scalar(const SecretBytes& pkcs8) {
  auto key = crypto::private_key_from_der(pkcs8.view());
  if (!key) return key.error();
  BIGNUM* d = nullptr;
  if (EVP_PKEY_get_bn_param(static_cast<EVP_PKEY*>(key->get()), OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1)
    return make_error(Errc::bad_value, "the key is not an EC private key");
  SecretBytes out(32);
  const int ok = BN_bn2binpad(d, out.data(), 32);
  BN_clear_free(d);
  if (ok != 32) return make_error(Errc::bad_value, "the EC private key is not a P-256 scalar");
  return out;
}

CK_RV initialize(CK_FUNCTION_LIST_PTR f) {
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;  // the module locks with the OS's primitives: we call it from many threads
  return f->C_Initialize(&args);
}

// A loaded, initialized module, shared by every Token of the process: C_Initialize and
// C_Finalize are per process, so the last Token to go finalizes it.
struct Module {
  void* lib = nullptr;
  CK_FUNCTION_LIST_PTR f = nullptr;
  bool initialized = false;
  std::mutex mu;                 // serializes reinitialize()
  std::atomic<std::uint64_t> epoch{0};  // how many times it was initialized again (changed under mu)
  std::atomic<int> in_flight{0};  // calls into the module now, from every Token
  ~Module() {
    if (f && initialized) f->C_Finalize(nullptr);
    if (lib) ::dlclose(lib);
  }

  // C_Finalize and C_Initialize again: a module may see a token that went away and came back
  // only then (SoftHSM2 stops reading a token directory that vanished). Done once per loss
  // even when several Tokens of the process lost their sessions (seen_epoch: the epoch the
  // caller's sessions belong to), only when this process initialized the module, and only
  // once no call is in flight (waits at most kQuiesceSteps * kQuiesceStep).
  Result<std::uint64_t> reinitialize(std::uint64_t seen_epoch) {
    std::lock_guard lk(mu);
    if (epoch.load() != seen_epoch || !initialized) return epoch.load();
    for (int i = 0; i < kQuiesceSteps && in_flight.load() > 0; ++i) std::this_thread::sleep_for(kQuiesceStep);
    if (in_flight.load() > 0) return make_error(Errc::io, "calls into the PKCS#11 module are still in flight; not re-initialized");
    f->C_Finalize(nullptr);
    const CK_RV rv = initialize(f);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) return p11_error("C_Initialize", rv);
    return ++epoch;
  }
};

Result<std::shared_ptr<Module>> load_module(const std::filesystem::path& path) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<Module>> loaded;
  std::lock_guard lk(mu);
  if (auto m = loaded[path.string()].lock()) return m;
  auto m = std::make_shared<Module>();
  m->lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!m->lib) return make_error(Errc::io, "cannot load the PKCS#11 module " + path.string() + ": " + ::dlerror());
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(m->lib, "C_GetFunctionList"));
  if (!get_list) return make_error(Errc::io, path.string() + " is not a PKCS#11 module (no C_GetFunctionList)");
  if (CK_RV rv = get_list(&m->f); rv != CKR_OK || !m->f) return p11_error("C_GetFunctionList", rv);
  const CK_RV rv = initialize(m->f);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) return p11_error("C_Initialize", rv);
  m->initialized = rv == CKR_OK;  // someone else's initialization is theirs to finalize
  loaded[path.string()] = m;
  return m;
}

}  // namespace

Result<Uri> parse_uri(std::string_view text) {
  std::unique_ptr<P11KitUri, void (*)(P11KitUri*)> u(p11_kit_uri_new(), p11_kit_uri_free);
  if (!u) throw std::bad_alloc();
  const std::string s(text);
  const int rc = p11_kit_uri_parse(s.c_str(), P11_KIT_URI_FOR_ANY, u.get());
  if (rc != P11_KIT_URI_OK)
    return make_error(Errc::bad_value, "'" + s + "' is not a PKCS#11 URI (RFC 7512): " + p11_kit_uri_message(rc));
  if (p11_kit_uri_get_pin_value(u.get()) != nullptr)
    return make_error(Errc::bad_value, "the PKCS#11 URI carries a PIN (pin-value); put the PIN in the pin file instead");
  if (p11_kit_uri_any_unrecognized(u.get()))
    return make_error(Errc::bad_value, "the PKCS#11 URI '" + s + "' has an attribute this backend does not know");
  Uri out;
  out.text = s;
  if (const CK_ATTRIBUTE* a = p11_kit_uri_get_attribute(u.get(), CKA_LABEL); a && a->pValue)
    out.object.assign(static_cast<const char*>(a->pValue), a->ulValueLen);
  if (const CK_ATTRIBUTE* a = p11_kit_uri_get_attribute(u.get(), CKA_ID); a && a->pValue) {
    const auto* p = static_cast<const std::uint8_t*>(a->pValue);
    out.id.assign(p, p + a->ulValueLen);
  }
  if (const char* m = p11_kit_uri_get_module_path(u.get())) out.module_path = m;
  return out;
}

struct Token::Impl {
  std::shared_ptr<Module> module;  // outlives the sessions closed below
  CK_FUNCTION_LIST_PTR f = nullptr;
  CK_SLOT_ID slot = 0;
  std::string label;
  std::string uri;                      // to find the token again after a loss
  std::filesystem::path module_path, pin_file;
  std::atomic<std::uint64_t> module_epoch{0};  // the module initialization our sessions belong to
  std::atomic<std::uint64_t> generation{0};
  std::mutex mu;
  std::condition_variable freed;
  std::vector<CK_SESSION_HANDLE> idle;
  std::size_t open_sessions = 0;
  // A lost token (under mu): operations fail at once with unavailable() until the next
  // re-open attempt is due; the first operation after that makes one attempt.
  bool lost = false, reopening = false;
  std::string lost_why, last_failure;
  std::chrono::steady_clock::time_point lost_at, next_attempt;
  std::chrono::milliseconds wait = kFirstReopenWait;
  unsigned attempts = 0;
  // The PIN file as it was when the token refused its PIN at a re-open: that PIN is not
  // tried again (a token locks its PIN after a few wrong tries) until the file changes.
  std::optional<std::pair<std::int64_t, std::int64_t>> refused_pin_file;

  ~Impl() {
    std::lock_guard lk(module->mu);
    if (module_epoch.load() == module->epoch.load())  // else the module was initialized again: nothing to close
      for (CK_SESSION_HANDLE s : idle) f->C_CloseSession(s);
  }

  // Borrows a session (opening one if the pool is not full); returns it on destruction.
  class Session {
   public:
    Session(Impl& t, CK_SESSION_HANDLE h) : t_(t), h_(h), generation_(t.generation.load()) { ++t_.module->in_flight; }
    ~Session() {
      --t_.module->in_flight;
      t_.give_back(h_, broken_, generation_);
    }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    CK_SESSION_HANDLE get() const { return h_; }
    /// The re-open this session belongs to (Impl::generation when it was borrowed).
    std::uint64_t generation() const { return generation_; }
    /// After an error that may leave the session unusable (device removed, handle invalid).
    void mark_broken() { broken_ = true; }

   private:
    Impl& t_;
    CK_SESSION_HANDLE h_;
    std::uint64_t generation_;
    bool broken_ = false;
  };

  // The one slot whose token matches the URI's token attributes, and the token's label.
  Result<std::pair<CK_SLOT_ID, std::string>> find_slot() const {
    std::unique_ptr<P11KitUri, void (*)(P11KitUri*)> u(p11_kit_uri_new(), p11_kit_uri_free);
    if (p11_kit_uri_parse(uri.c_str(), P11_KIT_URI_FOR_ANY, u.get()) != P11_KIT_URI_OK)
      return make_error(Errc::bad_value, "PKCS#11 URI " + uri + " does not parse");
    CK_ULONG count = 0;
    if (CK_RV rv = f->C_GetSlotList(CK_TRUE, nullptr, &count); rv != CKR_OK) return p11_error("C_GetSlotList", rv);
    std::vector<CK_SLOT_ID> slots(count);
    if (CK_RV rv = f->C_GetSlotList(CK_TRUE, slots.data(), &count); rv != CKR_OK) return p11_error("C_GetSlotList", rv);
    slots.resize(count);
    std::vector<std::string> seen;
    std::optional<std::pair<CK_SLOT_ID, std::string>> found;
    for (CK_SLOT_ID s : slots) {
      CK_TOKEN_INFO info{};
      if (f->C_GetTokenInfo(s, &info) != CKR_OK) continue;
      if (!(info.flags & CKF_TOKEN_INITIALIZED)) continue;
      seen.push_back(field(info.label, sizeof info.label));
      if (p11_kit_uri_match_token_info(u.get(), &info) != 1) continue;
      if (found) return make_error(Errc::state, "PKCS#11 URI " + uri + " matches more than one token; add serial= to it");
      found.emplace(s, seen.back());
    }
    if (!found) {
      std::string names;
      for (const auto& n : seen) names += (names.empty() ? "'" : ", '") + n + "'";
      return make_error(Errc::not_found, "no PKCS#11 token matches " + uri + " in " + module_path.string() +
                                             (names.empty() ? " (the module shows no initialized token)" : " (tokens present: " + names + ")"));
    }
    return *found;
  }

  // The PIN file's modification time (s, ns); empty when it cannot be read.
  std::optional<std::pair<std::int64_t, std::int64_t>> pin_file_version() const {
    struct stat st {};
    if (::stat(pin_file.c_str(), &st) != 0) return std::nullopt;
    return std::pair<std::int64_t, std::int64_t>(st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  }

  // Opens a session and logs in with the PIN read from the file now (the PIN is not kept).
  Result<void> login() {
    const auto version = pin_file_version();
    if (refused_pin_file && version == refused_pin_file)
      return make_error(Errc::state, "token '" + label + "' refused the PIN in " + pin_file.string() +
                                         "; it is not tried again (that would lock the token's PIN) until the file changes");
    auto pin = read_pin(pin_file);
    if (!pin) return pin.error();
    CK_SESSION_HANDLE h = 0;
    if (CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &h); rv != CKR_OK)
      return p11_error("C_OpenSession", rv);
    const CK_RV rv = f->C_Login(h, CKU_USER, pin->data(), static_cast<CK_ULONG>(pin->size()));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
      f->C_CloseSession(h);
      if (rv == CKR_PIN_INCORRECT) refused_pin_file = version;
      return make_error(rv == CKR_PIN_INCORRECT ? Errc::state : Errc::io,
                        "cannot log in to PKCS#11 token '" + label + "': " + rv_name(rv));
    }
    refused_pin_file.reset();
    std::lock_guard lk(mu);
    idle.push_back(h);
    ++open_sessions;
    return {};
  }

  // The token is gone (a call failed with one of token_lost's codes, or its keys vanished):
  // said once in the log; operations fail until a re-open succeeds.
  void mark_lost(const std::string& why) {
    std::lock_guard lk(mu);
    if (lost) return;
    lost = true;
    lost_why = why;
    lost_at = std::chrono::steady_clock::now();
    next_attempt = lost_at;  // the next operation tries at once
    wait = kFirstReopenWait;
    attempts = 0;
    last_failure.clear();
    sys::log::error("hsm_token_lost", {{"token", label}, {"why", why},
                                       {"action", "operations needing a key fail until the token is back; otac-backend re-opens it by itself"}});
  }

  Error unavailable(std::chrono::steady_clock::time_point now) const {
    using std::chrono::duration_cast;
    using std::chrono::milliseconds;
    const auto next = std::max<long long>(0, duration_cast<milliseconds>(next_attempt - now).count());
    return make_error(Errc::unavailable, "PKCS#11 token '" + label + "' is unavailable since " +
                                    std::to_string(duration_cast<milliseconds>(now - lost_at).count()) + " ms (" + lost_why + "); " +
                                    std::to_string(attempts) + " re-open attempts" +
                                    (last_failure.empty() ? std::string() : ", the last: " + last_failure) + "; next in " +
                                    std::to_string(next) + " ms");
  }

  // One re-open attempt: the old sessions are forgotten (never closed: their handles may be
  // reused), the module initialized again, the token found by its URI, a session logged in.
  Result<void> reopen() {
    {
      std::lock_guard lk(mu);
      open_sessions -= idle.size();
      idle.clear();
      ++generation;  // sessions borrowed before now are not given back to the pool
    }
    auto e = module->reinitialize(module_epoch.load());
    if (!e) return e.error();
    module_epoch.store(*e);
    auto found = find_slot();  // the slot may have changed; the label stays (read by others meanwhile)
    if (!found) return found.error();
    {
      std::lock_guard lk(mu);
      slot = found->first;
    }
    return login();
  }

  // A lost token's sessions are re-opened here, by one caller at a time, when due.
  Result<void> recover_if_lost() {
    std::unique_lock lk(mu);
    if (!lost) return {};
    auto now = std::chrono::steady_clock::now();
    if (reopening || now < next_attempt) return unavailable(now);
    reopening = true;
    lk.unlock();
    auto r = reopen();
    lk.lock();
    reopening = false;
    now = std::chrono::steady_clock::now();
    ++attempts;
    if (!r) {
      last_failure = r.error().message;
      next_attempt = now + wait;
      sys::log::warn("hsm_token_reopen_failed", {{"token", label}, {"attempt", std::to_string(attempts)}, {"why", last_failure},
                                                  {"next_in_ms", std::to_string(wait.count())}});
      wait = std::min(wait * 2, kMaxReopenWait);
      return unavailable(now);
    }
    sys::log::info("hsm_token_recovered",
                   {{"token", label}, {"attempts", std::to_string(attempts)},
                    {"down_ms", std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - lost_at).count())}});
    lost = false;
    return {};
  }

  Result<std::unique_ptr<Session>> session() {
    // Another Token of this process re-initialized the module: our sessions are gone too (and
    // their handle numbers may now name its sessions), so re-open before using any.
    if (module_epoch.load() != module->epoch.load()) mark_lost("the PKCS#11 module was initialized again in this process");
    if (auto r = recover_if_lost(); !r) return r.error();
    std::unique_lock lk(mu);
    freed.wait(lk, [this] { return !idle.empty() || open_sessions < kMaxSessions; });
    if (!idle.empty()) {
      const CK_SESSION_HANDLE h = idle.back();
      idle.pop_back();
      return std::make_unique<Session>(*this, h);
    }
    CK_SESSION_HANDLE h = 0;
    const CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &h);
    if (rv != CKR_OK) {
      lk.unlock();
      if (token_lost(rv)) mark_lost("C_OpenSession: " + rv_name(rv));
      return p11_error("C_OpenSession", rv);
    }
    ++open_sessions;
    return std::make_unique<Session>(*this, h);
  }

  void give_back(CK_SESSION_HANDLE h, bool broken, std::uint64_t borrowed_at) {
    std::lock_guard lk(mu);
    if (borrowed_at != generation.load()) {
      --open_sessions;  // from before a re-open: its handle means nothing now
    } else if (broken) {
      f->C_CloseSession(h);
      --open_sessions;
    } else {
      idle.push_back(h);
    }
    freed.notify_one();
  }

  // Runs one call with a borrowed session; a failure that is not about the data marks it,
  // and one that says the token is gone marks the token.
  template <class Fn>
  Result<CK_RV> with_session(Fn&& fn) {
    auto s = session();
    if (!s) return s.error();
    const CK_RV rv = fn((*s)->get());
    if (rv != CKR_OK && rv != CKR_ENCRYPTED_DATA_INVALID && rv != CKR_SIGNATURE_INVALID) (*s)->mark_broken();
    // A session from before a re-open failing says nothing about the token now.
    if (token_lost(rv) && (*s)->generation() == generation.load()) mark_lost(rv_name(rv));
    return rv;
  }

  Result<std::vector<CK_OBJECT_HANDLE>> find(std::vector<CK_ATTRIBUTE> tmpl) {
    std::vector<CK_OBJECT_HANDLE> out;
    auto rv = with_session([&](CK_SESSION_HANDLE s) -> CK_RV {
      CK_RV r = f->C_FindObjectsInit(s, tmpl.data(), static_cast<CK_ULONG>(tmpl.size()));
      if (r != CKR_OK) return r;
      CK_OBJECT_HANDLE batch[32];
      for (int round = 0; round < 64; ++round) {  // at most 2048 objects: far more than we make
        CK_ULONG n = 0;
        r = f->C_FindObjects(s, batch, 32, &n);
        if (r != CKR_OK || n == 0) break;
        out.insert(out.end(), batch, batch + n);
      }
      const CK_RV fin = f->C_FindObjectsFinal(s);
      return r != CKR_OK ? r : fin;
    });
    if (!rv) return rv.error();
    if (*rv != CKR_OK) return p11_error("C_FindObjects", *rv);
    return out;
  }

  Result<Bytes> attribute(CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, const char* what) {
    Bytes value;
    auto rv = with_session([&](CK_SESSION_HANDLE s) -> CK_RV {
      CK_ATTRIBUTE a{type, nullptr, 0};
      CK_RV r = f->C_GetAttributeValue(s, o, &a, 1);
      if (r != CKR_OK) return r;
      if (a.ulValueLen > 4096) return CKR_ATTRIBUTE_VALUE_INVALID;
      value.resize(a.ulValueLen);
      a.pValue = value.data();
      return f->C_GetAttributeValue(s, o, &a, 1);
    });
    if (!rv) return rv.error();
    if (*rv != CKR_OK) return p11_error(what, *rv);
    return value;
  }

  // One-part C_*Init + C_* call with a two-call size query, as PKCS#11 prescribes.
  template <class Init, class Op>
  Result<Bytes> one_shot(const char* what, Init&& init, Op&& op, ByteView in) {
    Bytes out;
    auto rv = with_session([&](CK_SESSION_HANDLE s) -> CK_RV {
      CK_RV r = init(s);
      if (r != CKR_OK) return r;
      CK_ULONG n = 0;
      auto* data = const_cast<CK_BYTE_PTR>(in.data());
      r = op(s, data, static_cast<CK_ULONG>(in.size()), nullptr, &n);
      if (r != CKR_OK) return r;  // a failed size query ends the operation (PKCS#11 5.2)
      out.resize(n);
      r = op(s, data, static_cast<CK_ULONG>(in.size()), out.data(), &n);
      out.resize(r == CKR_OK ? n : 0);
      return r;
    });
    if (!rv) return rv.error();
    if (*rv != CKR_OK) {
      secure_zero(out.data(), out.size());
      return p11_error(what, *rv);
    }
    return out;
  }

  Result<CK_OBJECT_HANDLE> create(std::vector<CK_ATTRIBUTE> tmpl, const char* what) {
    CK_OBJECT_HANDLE h = 0;
    auto rv = with_session([&](CK_SESSION_HANDLE s) {
      return f->C_CreateObject(s, tmpl.data(), static_cast<CK_ULONG>(tmpl.size()), &h);
    });
    if (!rv) return rv.error();
    if (*rv != CKR_OK) return p11_error(what, *rv);
    return h;
  }
};

Token::Token(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Token::~Token() = default;
const std::string& Token::label() const { return impl_->label; }

Result<std::shared_ptr<Token>> Token::open(const std::filesystem::path& module_path, const Uri& uri,
                                           const std::filesystem::path& pin_file) {
  if (auto pin = read_pin(pin_file); !pin) return pin.error();  // first: a missing PIN file is the commonest mistake
  auto module = load_module(module_path);
  if (!module) return module.error();
  auto impl = std::make_unique<Impl>();
  impl->module = std::move(*module);
  impl->f = impl->module->f;
  impl->uri = uri.text;
  impl->module_path = module_path;
  impl->pin_file = pin_file;
  {
    std::lock_guard lk(impl->module->mu);
    impl->module_epoch.store(impl->module->epoch.load());
  }
  auto found = impl->find_slot();
  if (!found) return found.error();
  impl->slot = found->first;
  impl->label = found->second;
  if (auto l = impl->login(); !l) return l.error();
  return std::shared_ptr<Token>(new Token(std::move(impl)));
}

std::uint64_t Token::generation() const { return impl_->generation.load(); }

void Token::mark_lost(const std::string& why) { impl_->mark_lost(why); }

Result<std::vector<std::pair<Bytes, Handle>>> Token::find_secret_keys(std::string_view label) {
  const CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  auto hs = impl_->find({attr(CKA_CLASS, cls), attr(CKA_LABEL, label.data(), label.size())});
  if (!hs) return hs.error();
  std::vector<std::pair<Bytes, Handle>> out;
  for (CK_OBJECT_HANDLE h : *hs) {
    auto id = impl_->attribute(h, CKA_ID, "C_GetAttributeValue(CKA_ID)");
    if (!id) return id.error();
    out.emplace_back(std::move(*id), h);
  }
  return out;
}

Result<Handle> Token::find_ec_key(std::string_view label, bool private_key) {
  const CK_OBJECT_CLASS cls = private_key ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY;
  const CK_KEY_TYPE kt = CKK_EC;
  auto hs = impl_->find({attr(CKA_CLASS, cls), attr(CKA_KEY_TYPE, kt), attr(CKA_LABEL, label.data(), label.size())});
  if (!hs) return hs.error();
  const std::string what = std::string(private_key ? "private" : "public") + " EC key '" + std::string(label) + "'";
  if (hs->empty()) return make_error(Errc::not_found, "token '" + impl_->label + "' has no " + what);
  if (hs->size() > 1) return make_error(Errc::state, "token '" + impl_->label + "' has more than one " + what);
  return hs->front();
}

// AES-GCM one-shot in the token: encrypt gives C || tag, decrypt takes it.
Result<Bytes> gcm(Token::Impl& t, bool encrypt, Handle key, ByteView iv, ByteView aad, ByteView in) {
  CK_GCM_PARAMS gp{const_cast<CK_BYTE_PTR>(iv.data()), iv.size(), iv.size() * 8, const_cast<CK_BYTE_PTR>(aad.data()),
                   aad.size(), 128};
  CK_MECHANISM m{CKM_AES_GCM, &gp, sizeof gp};
  auto* f = t.f;
  return t.one_shot(
      encrypt ? "C_Encrypt (AES-GCM)" : "C_Decrypt (AES-GCM)",
      [&](CK_SESSION_HANDLE s) { return encrypt ? f->C_EncryptInit(s, &m, key) : f->C_DecryptInit(s, &m, key); },
      [&](CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG n, CK_BYTE_PTR out, CK_ULONG* on) {
        return encrypt ? f->C_Encrypt(s, data, n, out, on) : f->C_Decrypt(s, data, n, out, on);
      },
      in);
}

Result<Bytes> Token::gcm_encrypt(Handle key, ByteView iv, ByteView aad, ByteView plain) {
  return gcm(*impl_, true, key, iv, aad, plain);
}

Result<SecretBytes> Token::gcm_decrypt(Handle key, ByteView iv, ByteView aad, ByteView sealed) {
  auto p = gcm(*impl_, false, key, iv, aad, sealed);
  if (!p) {
    if (p.error().code == Errc::bad_mac)
      return make_error(Errc::bad_mac, "sealed key does not verify under the token's key-encryption key: wrong key or a modified database");
    return p.error();
  }
  SecretBytes out(*p);
  secure_zero(p->data(), p->size());
  return out;
}

// A one-part C_Sign with a mechanism that takes no parameter.
Result<Bytes> sign(Token::Impl& t, CK_MECHANISM_TYPE mech, const char* what, Handle key, ByteView data) {
  CK_MECHANISM m{mech, nullptr, 0};
  auto* f = t.f;
  return t.one_shot(what, [&](CK_SESSION_HANDLE s) { return f->C_SignInit(s, &m, key); },
                    [&](CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG n, CK_BYTE_PTR out, CK_ULONG* on) {
                      return f->C_Sign(s, in, n, out, on);
                    },
                    data);
}

Result<Bytes> Token::ecdsa_sign_digest(Handle key, ByteView digest) {
  return sign(*impl_, CKM_ECDSA, "C_Sign (ECDSA)", key, digest);
}

Result<Bytes> Token::hmac_sha256(Handle key, ByteView data) {
  return sign(*impl_, CKM_SHA256_HMAC, "C_Sign (HMAC-SHA-256)", key, data);
}

Result<Bytes> Token::ec_point(Handle public_key) {
  auto der = impl_->attribute(public_key, CKA_EC_POINT, "C_GetAttributeValue(CKA_EC_POINT)");
  if (!der) return der.error();
  // CKA_EC_POINT is a DER OCTET STRING around the point: 04 41 || 04 X Y.
  if (der->size() == 67 && (*der)[0] == 0x04 && (*der)[1] == 0x41 && (*der)[2] == 0x04) return Bytes(der->begin() + 2, der->end());
  if (der->size() == 65 && (*der)[0] == 0x04) return *der;  // some modules return the bare point
  return make_error(Errc::bad_value, "token EC public key is not an uncompressed P-256 point");
}

Result<Handle> Token::generate_aes(std::string_view label, ByteView id) {
  const CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  const CK_KEY_TYPE kt = CKK_AES;
  const CK_ULONG len = 32;
  const CK_BBOOL t = CK_TRUE, no = CK_FALSE;
  std::vector<CK_ATTRIBUTE> tmpl = {attr(CKA_CLASS, cls), attr(CKA_KEY_TYPE, kt), attr(CKA_VALUE_LEN, len),
                                    attr(CKA_LABEL, label.data(), label.size()), attr(CKA_ID, id.data(), id.size()),
                                    attr(CKA_TOKEN, t), attr(CKA_PRIVATE, t), attr(CKA_SENSITIVE, t),
                                    attr(CKA_EXTRACTABLE, no), attr(CKA_ENCRYPT, t), attr(CKA_DECRYPT, t),
                                    attr(CKA_WRAP, no), attr(CKA_UNWRAP, no), attr(CKA_SIGN, no)};
  CK_MECHANISM m{CKM_AES_KEY_GEN, nullptr, 0};
  CK_OBJECT_HANDLE h = 0;
  auto rv = impl_->with_session([&](CK_SESSION_HANDLE s) {
    return impl_->f->C_GenerateKey(s, &m, tmpl.data(), static_cast<CK_ULONG>(tmpl.size()), &h);
  });
  if (!rv) return rv.error();
  if (*rv != CKR_OK) return p11_error("C_GenerateKey (AES-256)", *rv);
  return h;
}

Result<Handle> Token::generate_hmac(std::string_view label) {
  SecretBytes v = crypto::random_secret(32);  // from OpenSSL's DRBG; imported, never extractable
  return import_hmac(label, v);
}

Result<Handle> Token::import_hmac(std::string_view label, const SecretBytes& value) {
  const CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  const CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
  const CK_BBOOL t = CK_TRUE, no = CK_FALSE;
  return impl_->create({attr(CKA_CLASS, cls), attr(CKA_KEY_TYPE, kt), attr(CKA_VALUE, value.data(), value.size()),
                        attr(CKA_LABEL, label.data(), label.size()), attr(CKA_TOKEN, t), attr(CKA_PRIVATE, t),
                        attr(CKA_SENSITIVE, t), attr(CKA_EXTRACTABLE, no), attr(CKA_SIGN, t), attr(CKA_VERIFY, t)},
                       "C_CreateObject (HMAC key)");
}

Result<Bytes> Token::generate_ec(std::string_view label) {
  const CK_BBOOL t = CK_TRUE, no = CK_FALSE;
  std::vector<CK_ATTRIBUTE> pub = {attr(CKA_EC_PARAMS, kP256Params.data(), kP256Params.size()),
                                   attr(CKA_LABEL, label.data(), label.size()), attr(CKA_TOKEN, t), attr(CKA_VERIFY, t)};
  std::vector<CK_ATTRIBUTE> priv = {attr(CKA_LABEL, label.data(), label.size()), attr(CKA_TOKEN, t), attr(CKA_PRIVATE, t),
                                    attr(CKA_SENSITIVE, t), attr(CKA_EXTRACTABLE, no), attr(CKA_SIGN, t)};
  CK_MECHANISM m{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
  CK_OBJECT_HANDLE hpub = 0, hpriv = 0;
  auto rv = impl_->with_session([&](CK_SESSION_HANDLE s) {
    return impl_->f->C_GenerateKeyPair(s, &m, pub.data(), static_cast<CK_ULONG>(pub.size()), priv.data(),
                                       static_cast<CK_ULONG>(priv.size()), &hpub, &hpriv);
  });
  if (!rv) return rv.error();
  if (*rv != CKR_OK) return p11_error("C_GenerateKeyPair (P-256)", *rv);
  return ec_point(hpub);
}

Result<void> Token::import_ec(std::string_view label, const SecretBytes& pkcs8, ByteView point) {
  auto d = p256_scalar(pkcs8);
  if (!d) return d.error();
  const CK_OBJECT_CLASS cpriv = CKO_PRIVATE_KEY, cpub = CKO_PUBLIC_KEY;
  const CK_KEY_TYPE kt = CKK_EC;
  const CK_BBOOL t = CK_TRUE, no = CK_FALSE;
  Bytes ec_point = {0x04, static_cast<std::uint8_t>(point.size())};
  append(ec_point, point);
  auto hpub = impl_->create({attr(CKA_CLASS, cpub), attr(CKA_KEY_TYPE, kt), attr(CKA_EC_PARAMS, kP256Params.data(), kP256Params.size()),
                             attr(CKA_EC_POINT, ec_point.data(), ec_point.size()), attr(CKA_LABEL, label.data(), label.size()),
                             attr(CKA_TOKEN, t), attr(CKA_VERIFY, t)},
                            "C_CreateObject (EC public key)");
  if (!hpub) return hpub.error();
  auto hpriv = impl_->create({attr(CKA_CLASS, cpriv), attr(CKA_KEY_TYPE, kt), attr(CKA_EC_PARAMS, kP256Params.data(), kP256Params.size()),
                              attr(CKA_VALUE, d->data(), d->size()), attr(CKA_LABEL, label.data(), label.size()),
                              attr(CKA_TOKEN, t), attr(CKA_PRIVATE, t), attr(CKA_SENSITIVE, t), attr(CKA_EXTRACTABLE, no),
                              attr(CKA_SIGN, t)},
                             "C_CreateObject (EC private key)");
  if (!hpriv) {
    (void)destroy(*hpub);
    return hpriv.error();
  }
  return {};
}

Result<void> Token::destroy(Handle object) {
  auto rv = impl_->with_session([&](CK_SESSION_HANDLE s) { return impl_->f->C_DestroyObject(s, object); });
  if (!rv) return rv.error();
  if (*rv != CKR_OK) return p11_error("C_DestroyObject", *rv);
  return {};
}

}  // namespace otac::backend::p11
