// Codec subcommands (SMS, ENVELOPE, APDU, TLV): added when the codecs land in common/.
#include "tool.hpp"

namespace otac::tool {

std::vector<Command> codec_commands() { return {}; }

}  // namespace otac::tool
