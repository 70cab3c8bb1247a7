// Opens the store the configuration names (store = sqlite | postgresql) for otac-backend.
#pragma once

#include <functional>
#include <memory>

#include "config.hpp"
#include "kek.hpp"
#include "store.hpp"

namespace otac::backend {

/// Opens one store per call (the service keeps a pool).
using StoreFactory = std::function<Result<std::unique_ptr<Store>>()>;

/// Opens the configured store once, creating and migrating it (fails early on a bad file or
/// schema), and returns the factory for the service's connections. For PostgreSQL, a server
/// that cannot be reached is retried with backoff (1/4 s doubling to 8 s) for
/// postgres_start_timeout_seconds, each attempt said on stderr; then the error names why.
Result<StoreFactory> store_opener(const Config& c, std::shared_ptr<const Kek> kek);

}  // namespace otac::backend
