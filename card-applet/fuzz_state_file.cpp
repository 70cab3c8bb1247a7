// libFuzzer target: the virtual card's state file as read from disk (format 1 or 2), which a
// crash, a full disk or an editor may have damaged. Whatever parses must be a state within
// bounds, and a format-2 file built from it, and a commit over that, must parse back to it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "storage_format.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace otac::applet::state_file;
  auto p = parse(otac::ByteView(data, size), "fuzz input");
  if (!p) return 0;
  if (p->blob.size() > kMaxBlob) std::abort();
  if (p->format == 2 && (!p->current || p->slot_size < kMinSlot || size != kBlock + 2 * p->slot_size)) std::abort();
  const std::uint64_t seq = p->format == 2 ? p->seq + 1 : 1;
  otac::Bytes file = file_image(p->blob, seq, slot_size_for(p->blob.size()));
  auto again = parse(file, "image");
  if (!again || again->format != 2 || again->seq != seq || *again->current != 0 ||
      !std::equal(again->blob.begin(), again->blob.end(), p->blob.begin(), p->blob.end()))
    std::abort();
  // The next commit goes into slot 1 with the next number, and is what is read.
  const otac::Bytes slot = slot_image(p->blob.first(p->blob.size() / 2), seq + 1);
  std::copy(slot.begin(), slot.end(), file.begin() + static_cast<std::ptrdiff_t>(slot_offset(1, again->slot_size)));
  auto next = parse(file, "image after a commit");
  if (!next || next->seq != seq + 1 || *next->current != 1 || next->blob.size() != p->blob.size() / 2) std::abort();
  return 0;
}
