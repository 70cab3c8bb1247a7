// otac-tool: encode and decode OTAC's wire formats from the command line.
// Usage: otac-tool <subcommand> [options]; otac-tool <subcommand> --help.
#include <iostream>
#include <string>
#include <vector>

#include "tool.hpp"

namespace {

std::vector<otac::tool::Command> all_commands() {
  auto cmds = otac::tool::ota_commands();
  for (auto& c : otac::tool::codec_commands()) cmds.push_back(c);
  return cmds;
}

void overview(std::ostream& out, const std::vector<otac::tool::Command>& cmds) {
  out << "usage: otac-tool <subcommand> [options]   (otac-tool <subcommand> --help for details)\n\n"
         "subcommands:\n";
  for (const auto& c : cmds) out << "  " << c.name << std::string(18 - std::string(c.name).size(), ' ') << c.summary << "\n";
  out << "\nexit status: 0 ok, 1 bad input (does not parse or verify), 2 usage error\n";
}

}  // namespace

int main(int argc, char** argv) {
  const auto cmds = all_commands();
  if (argc < 2) {
    overview(std::cerr, cmds);
    return otac::tool::exit_usage;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    overview(std::cout, cmds);
    return otac::tool::exit_ok;
  }
  for (const auto& c : cmds) {
    if (name != c.name) continue;
    std::vector<std::string> args(argv + 2, argv + argc);
    for (const auto& a : args) {
      if (a == "--help" || a == "-h") {
        std::cout << c.help;
        return otac::tool::exit_ok;
      }
    }
    try {
      return c.run(args, std::cout);
    } catch (const otac::tool::UsageError& e) {
      std::cerr << "otac-tool " << c.name << ": " << e.message << "\n\n" << c.help;
      return otac::tool::exit_usage;
    } catch (const otac::tool::InputError& e) {
      std::cerr << "otac-tool " << c.name << ": " << e.message << "\n";
      return otac::tool::exit_bad_input;
    } catch (const std::exception& e) {
      std::cerr << "otac-tool " << c.name << ": internal error: " << e.what() << "\n";
      return otac::tool::exit_bad_input;
    }
  }
  std::cerr << "otac-tool: unknown subcommand '" << name << "'\n\n";
  overview(std::cerr, cmds);
  return otac::tool::exit_usage;
}
