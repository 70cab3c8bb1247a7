// The console's static files, compiled into the binary by embed_assets.cmake.
#pragma once

#include <span>
#include <string_view>

namespace otac::backend::console {

/// One embedded file.
struct Asset {
  std::string_view name;          ///< file name relative to /console/, e.g. "console.js"
  std::string_view content_type;  ///< MIME type with charset for text
  std::string_view etag;          ///< quoted strong validator (SHA-256 prefix of the content)
  std::span<const unsigned char> bytes;
};

/// Every embedded file (generated at build time).
std::span<const Asset> assets() noexcept;

/// The embedded file with this name, or nullptr.
const Asset* find_asset(std::string_view name) noexcept;

}  // namespace otac::backend::console
