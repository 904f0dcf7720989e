// raftkvctl's commands: the table main dispatches on, what each command is
// given (the global flags, a client, its parsed arguments), and the entry
// points of every command (docs/raftkvctl.md lists them).
//
// Adding a command: write its Define and Run functions in a file of this
// folder, declare them below, and add one row to the table in commands.cc.
#pragma once

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/variables_map.hpp>
#include <chrono>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "errors.h"
#include "http_client.h"
#include "parse.h"

namespace raftkv::ctl {

namespace po = boost::program_options;

enum class Output { kTable, kJson };

// The global flags, validated.
struct Globals {
  std::vector<Endpoint> endpoints;
  Output output = Output::kTable;
  std::chrono::milliseconds timeout{10000};
};

// What a command runs with.
class Context {
 public:
  Context(Globals globals, std::ostream& out) : globals_(std::move(globals)), out_(out) {}

  const Globals& globals() const { return globals_; }
  bool json() const { return globals_.output == Output::kJson; }
  std::ostream& out() { return out_; }
  // The failover client over the global endpoints, made on first use.
  Client& client();

 private:
  Globals globals_;
  std::ostream& out_;
  std::unique_ptr<Client> client_;
};

// A command's parsed flags and positional arguments.
class Args {
 public:
  explicit Args(const po::variables_map& vm) : vm_(vm) {}
  bool Has(const char* name) const { return vm_.count(name) > 0 && !vm_[name].defaulted(); }
  // The string value of a flag or argument; `fallback` when absent.
  std::string String(const char* name, std::string fallback = "") const;
  // A bool_switch flag.
  bool Flag(const char* name) const;
  // A number flag or argument; *out is left alone when it is absent.
  Status Number(const char* name, uint64_t* out, uint64_t min = 0, uint64_t max = kMaxNumber) const;
  Status Duration(const char* name, std::chrono::milliseconds* out) const;

 private:
  const po::variables_map& vm_;
};

struct Positional {
  const char* name;  // Also its variables_map key.
  bool required;
};

struct Command {
  std::string_view name;         // "get", or a group and a word: "lease grant".
  std::string_view usage;        // What follows the name: "KEY [VALUE] [flags]".
  std::string_view summary;      // One line, for `raftkvctl --help`.
  std::string_view description;  // For `raftkvctl NAME --help`.
  std::vector<Positional> positionals;
  void (*define)(po::options_description*);  // Its flags, or null.
  Status (*run)(Context&, const Args&);
};

// Every command, in the order the tool's help lists them.
const std::vector<Command>& Commands();

// The command named by args[0] (and args[1] for a group such as "lease");
// *words is how many arguments the name took. Null if none matches.
const Command* FindCommand(const std::vector<std::string>& args, size_t* words);
// Whether `word` is a command group ("lease").
bool IsGroup(std::string_view word);

// --- Commands (kv_commands.cc) ---
void DefineGet(po::options_description* d);
Status RunGet(Context& ctx, const Args& args);
void DefinePut(po::options_description* d);
Status RunPut(Context& ctx, const Args& args);
void DefineDel(po::options_description* d);
Status RunDel(Context& ctx, const Args& args);
void DefineList(po::options_description* d);
Status RunList(Context& ctx, const Args& args);
Status RunRange(Context& ctx, const Args& args);
void DefineTxn(po::options_description* d);
Status RunTxn(Context& ctx, const Args& args);

// --- watch_command.cc ---
void DefineWatch(po::options_description* d);
Status RunWatch(Context& ctx, const Args& args);

// --- lease_commands.cc ---
void DefineLeaseGrant(po::options_description* d);
Status RunLeaseGrant(Context& ctx, const Args& args);
void DefineLeaseKeepAlive(po::options_description* d);
Status RunLeaseKeepAlive(Context& ctx, const Args& args);
Status RunLeaseRevoke(Context& ctx, const Args& args);
void DefineLeaseList(po::options_description* d);
Status RunLeaseList(Context& ctx, const Args& args);
void DefineLeaseShow(po::options_description* d);
Status RunLeaseShow(Context& ctx, const Args& args);

// --- status_command.cc ---
Status RunStatus(Context& ctx, const Args& args);

// --- check_command.cc ---
void DefineCheck(po::options_description* d);
Status RunCheck(Context& ctx, const Args& args);

// --- member_commands.cc ---
Status RunMemberList(Context& ctx, const Args& args);
void DefineMemberAdd(po::options_description* d);
Status RunMemberAdd(Context& ctx, const Args& args);
void DefineMemberPromote(po::options_description* d);
Status RunMemberPromote(Context& ctx, const Args& args);
void DefineMemberRemove(po::options_description* d);
Status RunMemberRemove(Context& ctx, const Args& args);
Status RunLeaderTransfer(Context& ctx, const Args& args);

// --- snapshot_command.cc ---
void DefineSnapshotSave(po::options_description* d);
Status RunSnapshotSave(Context& ctx, const Args& args);

}  // namespace raftkv::ctl
