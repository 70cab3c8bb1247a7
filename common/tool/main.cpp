// otac-tool: encode and decode OTAC's wire formats from the command line.
// Usage: otac-tool <subcommand> [options]; otac-tool <subcommand> --help.
// The command line is parsed by CLI11 (every OTAC program's style, otac/sys/cli.hpp); each
// subcommand's table entry (ota_cmds.cpp, codec_cmds.cpp) names its options and flags.
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "otac/sys/cli.hpp"
#include "tool.hpp"

namespace {

std::vector<otac::tool::Command> all_commands() {
  auto cmds = otac::tool::ota_commands();
  for (auto& c : otac::tool::codec_commands()) cmds.push_back(c);
  return cmds;
}

// Keys given as arguments: deprecated aliases of the --*-file options (args.cpp warns).
bool is_deprecated(const std::string& option) { return option == "kic-key" || option == "kid-key" || option == "k"; }

// Where CLI11 stores one subcommand's values; read back into an Args after the parse.
struct Values {
  std::map<std::string, std::string> options;
  std::vector<std::string> positional;
};

otac::tool::Args collect(const otac::tool::Command& c, CLI::App& sub, const Values& v) {
  std::map<std::string, std::string> options;
  for (const auto& o : c.options)
    if (sub.count("--" + o) != 0) options[o] = v.options.at(o);
  std::set<std::string> flags;
  for (const auto& f : c.flags)
    if (sub.count("--" + f) != 0) flags.insert(f);
  return otac::tool::Args(std::move(options), std::move(flags), v.positional);
}

int run(const otac::tool::Command& c, const otac::tool::Args& a) {
  const std::string who = std::string("otac-tool ") + c.name;
  try {
    return c.run(a, std::cout);
  } catch (const otac::tool::UsageError& e) {
    std::cerr << who << ": " << e.message << " (" << who << " --help)\n";
    return otac::tool::exit_usage;
  } catch (const otac::tool::InputError& e) {
    std::cerr << who << ": " << e.message << "\n";
    return otac::tool::exit_bad_input;
  } catch (const std::exception& e) {
    std::cerr << who << ": internal error: " << e.what() << "\n";
    return otac::tool::exit_bad_input;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const auto cmds = all_commands();
  CLI::App app{"Encodes and decodes OTAC's wire formats: TS 102 225 secured packets, SMS TPDUs, ENVELOPEs, APDUs "
               "and BER-TLV.",
               "otac-tool"};
  otac::sys::cli_defaults(app);
  app.require_subcommand(1);
  app.footer("Exit status: 0 ok, 1 bad input (does not parse or verify), 2 usage error.");
  std::vector<Values> values(cmds.size());  // sized once: CLI11 keeps pointers into it
  std::vector<CLI::App*> subs;
  for (std::size_t i = 0; i < cmds.size(); ++i) {
    const auto& c = cmds[i];
    CLI::App* sub = app.add_subcommand(c.name, c.summary);
    sub->footer(c.help);
    for (const auto& o : c.options) {
      CLI::Option* opt = sub->add_option("--" + o, values[i].options[o])->type_name("VALUE");
      if (is_deprecated(o)) opt->group("");  // still parsed, no longer offered in help or completion
    }
    for (const auto& f : c.flags) sub->add_flag("--" + f);
    if (c.positional) sub->add_option("args", values[i].positional, "hex data, or the form to encode")->type_name("ARG");
    subs.push_back(sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return otac::sys::cli_exit(app, e);
  }
  for (std::size_t i = 0; i < cmds.size(); ++i)
    if (subs[i]->parsed()) return run(cmds[i], collect(cmds[i], *subs[i], values[i]));
  return otac::tool::exit_usage;  // not reached: require_subcommand(1)
}
