// libFuzzer target: the server's request parsers. The input is split at the first 0x00:
// before it a request target (path + query, percent escapes), after it a JSON body parsed
// strictly as an authorization request and as an enrollment's door list; and the whole input
// as a config file. None may crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config.hpp"
#include "json_input.hpp"
#include "router.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::size_t cut = all.find('\0');
  const std::string_view target = all.substr(0, cut);
  const std::string_view body = cut == std::string_view::npos ? std::string_view{} : all.substr(cut + 1);

  std::string path;
  std::map<std::string, std::string> query;
  (void)otac::backend::http::split_target(target, path, query);
  (void)otac::percent_decode(target, true);

  // Parsed as the authorization handler parses it, into a small stack arena (a body larger
  // than the arena falls back to the heap), and once more on the heap.
  alignas(std::max_align_t) unsigned char arena[512];
  boost::json::monotonic_resource mr(arena, sizeof arena);
  (void)otac::backend::http::parse_object(body, {"txn_id", "card", "list", "index", "atc", "challenge", "cryptogram", "doors"}, &mr);
  auto o = otac::backend::http::parse_object(body, {"txn_id", "card", "list", "index", "atc", "challenge", "cryptogram", "doors"});
  if (o) {
    otac::backend::http::Fields f(*o);
    (void)f.str("txn_id", true, 64);
    (void)f.hexbytes("card", true, 8, 8);
    (void)f.integer("list", true, 0, 65535);
    (void)f.hexbytes("challenge", false, 1, 1024);
    (void)f.boolean("atc", false);
    if (const auto* a = f.array("doors", false)) {
      for (const auto& d : *a) {
        if (!d.is_object()) continue;
        otac::backend::http::Fields df(d.as_object());
        (void)df.str("door", true, 16);
        (void)df.integer("from_minute", false, 0, 1440);
      }
    }
  }
  (void)otac::backend::parse_config(all, otac::backend::Config{});
  return 0;
}
