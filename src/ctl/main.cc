// raftkvctl: the command-line client of raftkv (docs/raftkvctl.md).
//
// The command line is parsed twice with Boost.Program_options: first the
// global flags (anywhere on the line), leaving the command's words, flags
// and arguments in order; then those with the command's own flags. Every
// error ends in a message on stderr and an exit code from errors.h.
#include <algorithm>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/positional_options.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <cstdlib>
#include <exception>
#include <iostream>

#include "commands.h"
#include "output.h"
#include "version.h"

namespace raftkv::ctl {
namespace {

// Prefixes of long flags are not accepted: "--end" is not "--endpoints",
// so that a script's typo fails instead of meaning something else.
constexpr int kStyle =
    po::command_line_style::default_style & ~po::command_line_style::allow_guessing;

po::options_description GlobalFlags() {
  po::options_description d("Global flags");
  d.add_options()("endpoints", po::value<std::string>()->value_name("HOST:PORT,..."),
                  "the servers to talk to, tried in order (default: $RAFTKV_ENDPOINTS, else "
                  "127.0.0.1:4001)")("output,o", po::value<std::string>()->value_name("FORMAT"),
                                     "table (default) or json: the server's JSON, one document "
                                     "per line")(
      "timeout", po::value<std::string>()->value_name("D"),
      "bound on each request, retries and failover included (default 10s)")(
      "help,h", po::bool_switch(), "this help; after a command, the command's help")(
      "version", po::bool_switch(), "print the version");
  return d;
}

void PrintToolHelp(std::ostream& out) {
  out << "raftkvctl " RAFTKV_VERSION ": the command-line client of raftkv\n\n"
      << "Usage: raftkvctl [global flags] COMMAND [flags] [arguments]\n"
      << "       raftkvctl COMMAND --help\n\nCommands:\n";
  size_t width = 0;
  for (const Command& c : Commands()) {
    width = std::max(width, c.name.size() + 1 + c.usage.size());
  }
  for (const Command& c : Commands()) {
    std::string head = std::string(c.name) + " " + std::string(c.usage);
    out << "  " << head << std::string(width - head.size() + 2, ' ') << c.summary << "\n";
  }
  out << "\n"
      << GlobalFlags()
      << "\nExit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 compare failed, 5 unavailable,\n"
         "6 compacted, 7 outcome unknown (a write without an answer), 8 conflict (the cluster\n"
         "refused a membership change or leader transfer). See docs/raftkvctl.md.\n";
}

// The command's flags, plus --help and its positional arguments (hidden).
void CommandOptions(const Command& c, po::options_description* visible,
                    po::options_description* all, po::positional_options_description* pos) {
  if (c.define) c.define(visible);
  visible->add_options()("help,h", po::bool_switch(), "this help");
  all->add(*visible);
  for (const Positional& p : c.positionals) {
    all->add_options()(p.name, po::value<std::string>());
    pos->add(p.name, 1);
  }
}

void PrintCommandHelp(std::ostream& out, const Command& c) {
  po::options_description visible("Flags"), all;
  po::positional_options_description pos;
  CommandOptions(c, &visible, &all, &pos);
  out << "Usage: raftkvctl " << c.name << " " << c.usage << "\n\n"
      << c.summary << ".\n"
      << c.description << "\n\n"
      << visible << "\nGlobal flags (--endpoints, -o, --timeout): see raftkvctl --help.\n";
}

Status ParseGlobals(const po::variables_map& vm, Globals* g) {
  std::string endpoints = "127.0.0.1:4001";
  // Errors name where the endpoints came from: a bad environment variable
  // is not a bad flag the user can see on the command line.
  std::string source = "--endpoints";
  if (const char* env = std::getenv("RAFTKV_ENDPOINTS"); env && *env) {
    endpoints = env;
    source = "$RAFTKV_ENDPOINTS";
  }
  if (vm.count("endpoints")) {
    endpoints = vm["endpoints"].as<std::string>();
    source = "--endpoints";
  }
  if (Status s = ParseEndpoints(endpoints, &g->endpoints, source); !s.ok()) return s;
  if (vm.count("output")) {
    const std::string o = vm["output"].as<std::string>();
    if (o == "json") {
      g->output = Output::kJson;
    } else if (o != "table") {
      return Status::Usage("-o/--output: \"" + o + "\" is not table or json");
    }
  }
  if (vm.count("timeout")) {
    if (Status s = ParseDuration("--timeout", vm["timeout"].as<std::string>(), &g->timeout);
        !s.ok()) {
      return s;
    }
    if (g->timeout.count() == 0) return Status::Usage("--timeout must be above 0");
  }
  return Status::Ok();
}

// A group's help ("raftkvctl help lease", "raftkvctl lease --help"): its
// subcommands, each with its usage and summary.
void PrintGroupHelp(std::ostream& out, const std::string& group) {
  out << "Usage: raftkvctl " << group << " SUBCOMMAND [flags] [arguments]\n"
      << "       raftkvctl " << group << " SUBCOMMAND --help\n\nSubcommands:\n";
  size_t width = 0;
  for (const Command& c : Commands()) {
    if (c.name.starts_with(group + " "))
      width = std::max(width, c.name.size() + 1 + c.usage.size());
  }
  for (const Command& c : Commands()) {
    if (!c.name.starts_with(group + " ")) continue;
    std::string head = std::string(c.name) + " " + std::string(c.usage);
    out << "  " << head << std::string(width - head.size() + 2, ' ') << c.summary << "\n";
  }
  out << "\nGlobal flags (--endpoints, -o, --timeout): see raftkvctl --help.\n";
}

// The command named by `words` that does not exist: why, as a usage error.
Status UnknownCommand(const std::vector<std::string>& words) {
  if (IsGroup(words[0])) {
    std::string subs;
    for (const Command& c : Commands()) {
      if (c.name.starts_with(words[0] + " ")) {
        subs += (subs.empty() ? "" : ", ") + std::string(c.name.substr(words[0].size() + 1));
      }
    }
    if (words.size() < 2) return Status::Usage(words[0] + " needs a subcommand: " + subs);
    return Status::Usage("unknown command \"" + words[0] + " " + words[1] + "\" (" + words[0] +
                         " takes " + subs + ")");
  }
  return Status::Usage("unknown command \"" + words[0] + "\" (see raftkvctl --help)");
}

Status RunCommand(const Command& c, const std::vector<std::string>& argv, bool help,
                  const po::variables_map& globals_vm) {
  po::options_description visible("Flags"), all;
  po::positional_options_description pos;
  CommandOptions(c, &visible, &all, &pos);
  po::variables_map vm;
  const std::string name(c.name);
  try {
    po::store(po::command_line_parser(argv).options(all).positional(pos).style(kStyle).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return Status::Usage(name + ": " + e.what() + " (see raftkvctl " + name + " --help)");
  }
  if (help || vm["help"].as<bool>()) {
    PrintCommandHelp(std::cout, c);
    return Status::Ok();
  }
  for (const Positional& p : c.positionals) {
    if (p.required && !vm.count(p.name)) {
      return Status::Usage(name + ": missing " + p.name + " (usage: raftkvctl " + name + " " +
                           std::string(c.usage) + ")");
    }
  }
  Globals globals;
  if (Status s = ParseGlobals(globals_vm, &globals); !s.ok()) return s;
  Context ctx(std::move(globals), std::cout);
  return c.run(ctx, Args(vm));
}

Status Main(int argc, char** argv) {
  // Everything after "--" is an argument, never a flag (a value such as "-5").
  std::vector<std::string> head, tail;
  bool after = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (!after && a == "--") {
      after = true;
      continue;
    }
    (after ? tail : head).push_back(std::move(a));
  }
  po::options_description global = GlobalFlags();
  po::options_description all;
  all.add(global).add_options()("words", po::value<std::vector<std::string>>());
  po::positional_options_description pos;
  pos.add("words", -1);
  po::variables_map vm;
  std::vector<std::string> rest;
  try {
    po::parsed_options parsed = po::command_line_parser(head)
                                    .options(all)
                                    .positional(pos)
                                    .style(kStyle)
                                    .allow_unregistered()
                                    .run();
    po::store(parsed, vm);
    po::notify(vm);
    rest = po::collect_unrecognized(parsed.options, po::include_positional);
  } catch (const po::error& e) {
    return Status::Usage(std::string(e.what()) + " (see raftkvctl --help)");
  }
  if (vm["version"].as<bool>()) {
    std::cout << "raftkvctl " RAFTKV_VERSION "\n";
    return Status::Ok();
  }
  const bool help = vm["help"].as<bool>();
  if (!rest.empty() && rest[0] == "help") {  // "raftkvctl help [COMMAND]"
    rest.erase(rest.begin());
    if (rest.empty()) {
      PrintToolHelp(std::cout);
      return Status::Ok();
    }
    size_t words = 0;
    const Command* c = FindCommand(rest, &words);
    if (!c && rest.size() == 1 && IsGroup(rest[0])) {  // "raftkvctl help lease"
      PrintGroupHelp(std::cout, rest[0]);
      return Status::Ok();
    }
    if (!c) return UnknownCommand(rest);
    PrintCommandHelp(std::cout, *c);
    return Status::Ok();
  }
  if (rest.empty()) {
    if (help) {
      PrintToolHelp(std::cout);
      return Status::Ok();
    }
    return Status::Usage("no command given (see raftkvctl --help)");
  }
  if (rest[0].starts_with("-")) {
    return Status::Usage("unknown flag \"" + rest[0] + "\" (see raftkvctl --help)");
  }
  size_t words = 0;
  const Command* c = FindCommand(rest, &words);
  if (!c && help && IsGroup(rest[0])) {  // "raftkvctl lease --help"
    PrintGroupHelp(std::cout, rest[0]);
    return Status::Ok();
  }
  if (!c) return UnknownCommand(rest);
  std::vector<std::string> args(rest.begin() + static_cast<long>(words), rest.end());
  if (!tail.empty()) {
    args.push_back("--");
    args.insert(args.end(), tail.begin(), tail.end());
  }
  return RunCommand(*c, args, help, vm);
}

}  // namespace
}  // namespace raftkv::ctl

int main(int argc, char** argv) {
  try {
    raftkv::ctl::Status s = raftkv::ctl::Main(argc, argv);
    // Output that did not reach stdout (a full disk, a closed pipe) is a
    // failure even when the command succeeded: a script must not take a
    // value it never received for an answer.
    raftkv::ctl::Status written = raftkv::ctl::FlushOutput(std::cout);
    if (s.ok()) s = std::move(written);
    if (!s.ok()) std::cerr << "raftkvctl: " << s.message() << "\n";
    return static_cast<int>(s.code());
  } catch (const std::exception& e) {
    // A bug, not an operating error: say so rather than abort.
    std::cerr << "raftkvctl: internal error: " << e.what() << "\n";
    return static_cast<int>(raftkv::ctl::Exit::kError);
  }
}
