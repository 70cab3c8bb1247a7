// Key custody as the configuration names it (kek_file, or kek_uri and the key URIs of a
// PKCS#11 token), and the key ceremony commands of otac-backend: hsm-init, hsm-migrate,
// hsm-rotate, on the store the configuration names (SQLite or PostgreSQL). docs/operations.md,
// "Keys in an HSM", is the operator's guide.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "config.hpp"
#include "kek.hpp"
#include "rewrap.hpp"

namespace otac::backend {

/// Opens the custody the config names. File mode creates kek.bin when absent (its path is
/// then appended to created). Token mode logs in to the token and loads kek_file only if it
/// exists (values not yet migrated).
Result<std::shared_ptr<const Kek>> open_custody(const Config& c, std::vector<std::string>* created);

/// Options of the ceremonies that re-wrap.
struct CeremonyOptions {
  RewrapOptions rewrap;
  /// hsm-rotate: how long to wait after making the new KEK version before re-wrapping, so that
  /// every running backend seals under it (they look for new versions once a second).
  std::chrono::milliseconds settle{2500};
  bool keep_old = false;  ///< hsm-rotate: keep the old KEK versions in the token afterwards
  std::string actor = "ceremony";
};

/// hsm-init: makes what is missing in the token (KEK version 1, audit key, and with the key
/// URIs the server and card CA key pairs) for a store that has no file-KEK data. Returns a
/// summary for the operator; writes an audit entry.
Result<std::string> hsm_init(const Config& c, const CeremonyOptions& o);
/// hsm-migrate: moves a file-KEK store into the token: imports the audit key and the server
/// keys, re-wraps every sealed value, drops the stored private keys. Resumable.
Result<std::string> hsm_migrate(const Config& c, const CeremonyOptions& o);
/// hsm-rotate: a new KEK version, every value re-wrapped under it while backends serve, the
/// old versions destroyed at the end (unless keep_old). Resumes an unfinished rotation.
Result<std::string> hsm_rotate(const Config& c, const CeremonyOptions& o);

}  // namespace otac::backend
