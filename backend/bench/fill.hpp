// The benchmark's bulk fill (otac-loadgen --fill-cards): enrolled cards and used codes written
// straight through the Store API, with the rows the backend itself writes, so that the
// benchmark can measure a store holding 10^6 of them without enrolling each through the
// operator API. A bench tool, for throwaway data directories only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "otac/common/bytes.hpp"
#include "otac/common/protocol.hpp"
#include "otac/common/result.hpp"
#include "otac/common/secret.hpp"
#include "store.hpp"

namespace otac::backend::bench {

/// The challenge of a POS purchase of 12.34 EUR at `terminal`, with a fresh unpredictable
/// number (protocol.md section 3).
protocol::Challenge purchase_challenge(const std::string& terminal);

/// The cryptogram a DES3 card computes for that challenge with code (list, index) = otac:
/// ATC 1, PIN state 03 (three tries left, no PIN entered).
Bytes purchase_cryptogram(const protocol::Challenge& ch, ByteView n, std::uint16_t list, std::uint16_t index,
                          const SecretBytes& otac);

struct FillOptions {
  std::size_t cards = 0;          ///< cards to add
  std::size_t per_run = 2000;     ///< cards per Store::run (one database transaction)
  std::string terminal;           ///< the registered terminal their approvals name
  std::string actor = "bench-fill";  ///< the operator their enrollment and list name in the audit log
  double max_seconds = 4 * 3600;  ///< gives up (an error) past this
  /// Called after each run with the cards added so far.
  std::function<void(std::size_t done, double seconds)> progress;
  /// Called every `checkpoint_every` runs and once at the end, between transactions: for a
  /// SQLite store, checkpoint_sqlite. Empty: none.
  std::function<Result<void>()> checkpoint;
  std::size_t checkpoint_every = 25;
  /// When set, receives each added card's N and list id (its codes 1 to 3 are unused).
  std::vector<std::pair<Bytes, std::uint16_t>>* added = nullptr;
};

/// Copies the WAL of the SQLite database at `db` into the database file and truncates it
/// (PRAGMA wal_checkpoint(TRUNCATE)), waiting up to 60 s for other connections. The store's
/// own checkpoints are PASSIVE and beside the writers: under the fill's back-to-back
/// transactions they never catch up, and the WAL would grow by gigabytes and be copied back
/// during the measurement that follows. A real store grows over months; this one is left as
/// if it had.
Result<void> checkpoint_sqlite(const std::filesystem::path& db);

/// Adds opts.cards cards. Each is left as an approval leaves a card that was enrolled by an
/// operator (threshold 0: no list pushed as codes run low), given one list of 4 codes that
/// went out by SMS and that the card confirmed with an OK Proof of Receipt, and then used
/// its first code in an approved purchase: the card, its list and sealed codes, the OTA
/// packet sent and its outbox messages (sent), the consumed code, the transaction and the
/// audit entries of each step. Returns the seconds it took.
Result<double> fill_store(Store& store, const FillOptions& opts);

}  // namespace otac::backend::bench
