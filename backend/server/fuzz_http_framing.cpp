// libFuzzer target: raw request bytes through Beast's HTTP parser exactly as a connection of
// otac-backend reads them (check_request_bytes: the same limits, buffer bound and chunk-
// extension check), chunked framing, extensions and trailers included. Small limits let
// inputs of a few KiB reach every limit; the default limits are run too. Nothing may throw,
// crash or hang, and the answer is always one a connection can give.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  otac::backend::http::Limits small;
  small.max_header = 512;
  small.max_body = 1024;
  small.max_buffer = 768;
  small.max_request = 2048;
  for (const auto& limits : {small, otac::backend::http::Limits{}}) {
    const unsigned status = otac::backend::http::check_request_bytes(bytes, limits);
    if (status != 0 && status != 200 && status != 400 && status != 413 && status != 431) std::abort();
  }
  return 0;
}
