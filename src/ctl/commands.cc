#include "commands.h"

#include <boost/program_options/value_semantic.hpp>

namespace raftkv::ctl {

Client& Context::client() {
  if (!client_) client_ = std::make_unique<Client>(globals_.endpoints, globals_.timeout);
  return *client_;
}

std::string Args::String(const char* name, std::string fallback) const {
  if (!vm_.count(name)) return fallback;
  return vm_[name].as<std::string>();
}

bool Args::Flag(const char* name) const { return vm_.count(name) && vm_[name].as<bool>(); }

Status Args::Number(const char* name, uint64_t* out, uint64_t min, uint64_t max) const {
  if (!Has(name)) return Status::Ok();
  // Positional arguments are named in upper case ("TTL"), flags in lower case.
  const bool positional = name[0] >= 'A' && name[0] <= 'Z';
  return ParseNumber(positional ? std::string(name) : "--" + std::string(name),
                     vm_[name].as<std::string>(), out, min, max);
}

Status Args::Duration(const char* name, std::chrono::milliseconds* out) const {
  if (!vm_.count(name)) return Status::Ok();
  return ParseDuration("--" + std::string(name), vm_[name].as<std::string>(), out);
}

const std::vector<Command>& Commands() {
  static const std::vector<Command> kCommands = {
      {"get",
       "KEY [flags]",
       "Read a key (or, with --prefix, every key under it)",
       "Prints the key's value (--keys-only: its name); with --prefix, each key under KEY and "
       "its value on the next line, every page followed. A missing key exits 3.",
       {{"KEY", true}},
       DefineGet,
       RunGet},
      {"put",
       "KEY VALUE|- [flags]",
       "Write a key (VALUE '-' reads it from stdin)",
       "Writes VALUE (or stdin's bytes, with '-') to KEY. The --if-* flags and --create-only "
       "make it conditional: exit 4 if the condition does not hold.",
       {{"KEY", true}, {"VALUE", true}},
       DefinePut,
       RunPut},
      {"del",
       "KEY [flags]",
       "Delete a key (or, with --prefix, every key under it)",
       "Prints how many keys were deleted (0 for a missing key, which is not an error). The "
       "--if-* flags make it conditional: exit 4 if the condition does not hold.",
       {{"KEY", true}},
       DefineDel,
       RunDel},
      {"list",
       "[PREFIX] [flags]",
       "List the keys under a prefix (every key by default)",
       "Follows every page unless --limit; prints each key and its value on the next line "
       "(--keys-only: the keys).",
       {{"PREFIX", false}},
       DefineList,
       RunList},
      {"range",
       "FROM TO [flags]",
       "List the keys in [FROM, TO)",
       "Follows every page unless --limit; prints each key and its value on the next line "
       "(--keys-only: the keys).",
       {{"FROM", true}, {"TO", true}},
       DefineList,
       RunRange},
      {"txn",
       "[FILE|-]",
       "Run a transaction from a JSON file (or stdin)",
       "Sends the JSON body (docs/http-api.md, \"Transactions\") to POST /v1/txn and prints "
       "the result. Exit 4 when the compares failed (the failure branch ran).",
       {{"FILE", false}},
       DefineTxn,
       RunTxn},
      {"watch",
       "KEY [flags]",
       "Print changes to a key (or prefix) as they happen",
       "Streams the events after --rev (default: from now), reconnecting to the next endpoint "
       "on a disconnect and resuming after the last revision seen. Runs until interrupted or "
       "--max-events; exit 6 if the revision is no longer in the history (list again).",
       {{"KEY", true}},
       DefineWatch,
       RunWatch},
      {"lease grant",
       "TTL [flags]",
       "Grant a lease of TTL seconds",
       "Prints the lease's id. Keys put with --lease ID are deleted when it expires.",
       {{"TTL", true}},
       DefineLeaseGrant,
       RunLeaseGrant},
      {"lease keepalive",
       "ID [--once]",
       "Keep a lease alive (every TTL/3) until interrupted",
       "Renews the lease every third of its TTL until SIGINT or SIGTERM (exit 0), or once with "
       "--once. A renewal that fails (unavailable, no answer) is tried again with backoff; exit "
       "5 once the TTL has passed since the last renewal that succeeded, 3 once the lease is "
       "gone.",
       {{"ID", true}},
       DefineLeaseKeepAlive,
       RunLeaseKeepAlive},
      {"lease revoke",
       "ID",
       "Revoke a lease, deleting its keys",
       "Exit 3 if there is no such lease.",
       {{"ID", true}},
       nullptr,
       RunLeaseRevoke},
      {"lease list",
       "[flags]",
       "List the leases",
       "Prints each lease's id and TTL.",
       {},
       DefineLeaseList,
       RunLeaseList},
      {"lease show",
       "ID [--keys]",
       "Show a lease's TTL, time left and keys",
       "Exit 3 if there is no such lease.",
       {{"ID", true}},
       DefineLeaseShow,
       RunLeaseShow},
      {"status",
       "",
       "One table for the whole cluster",
       "Asks every endpoint, and every member their /status lists, for /status and /health: "
       "node, HTTP address, role, term, leader, commit, applied, lag (the leader's commit - the "
       "node's applied) and health. Unreachable nodes show as such. Exit 5 if no node answered.",
       {},
       nullptr,
       RunStatus},
      {"check",
       "[flags]",
       "A short load run: throughput and latency of puts",
       "Runs --conns connections putting keys under a subprefix of --prefix of its own "
       "(check-<random hex>/) for --duration (or --requests puts in all), prints throughput and "
       "latency percentiles, then deletes that subprefix only. Exit 1 if any put failed (or the "
       "cluster refused them all), 5 if none got an answer.",
       {},
       DefineCheck,
       RunCheck},
      {"member list",
       "",
       "List the members: role, leader, match and last contact",
       "Prints each member's id, role (voter/learner), promotion (auto/manual), whether it "
       "leads, Raft and HTTP addresses, and from the leader (asked directly when another node "
       "answered) its match index and how long ago it last heard from the member.",
       {},
       nullptr,
       RunMemberList},
      {"member add",
       "ID --raft HOST:PORT [flags]",
       "Add a node as a learner (then start it with --join)",
       "Adds the member as a learner and prints how to start it. Exit 8 if the id or Raft "
       "address is taken (member_exists).",
       {{"ID", true}},
       DefineMemberAdd,
       RunMemberAdd},
      {"member promote",
       "ID [--wait]",
       "Make a learner a voter",
       "Exit 8 if it is a voter already (not_learner) or its log is not caught up "
       "(learner_not_caught_up; --wait asks again until --timeout); exit 3 if no such member.",
       {{"ID", true}},
       DefineMemberPromote,
       RunMemberPromote},
      {"member remove",
       "ID [--force]",
       "Remove a member",
       "Exit 8 (would_lose_quorum) if the voters left that answer the leader would not be a "
       "majority, unless --force; exit 3 if no such member. Removing the leader moves "
       "leadership first.",
       {{"ID", true}},
       DefineMemberRemove,
       RunMemberRemove},
      {"leader transfer",
       "[ID]",
       "Move leadership to a voter (default: the most up-to-date one)",
       "Prints the new leader and term once it leads. Exit 8 if ID is a learner (not_voter), "
       "has not answered the leader recently (not_active) or no voter can take over "
       "(no_candidate), 3 if no such member, 7 if leadership did not move within the server's "
       "request timeout (it may still move).",
       {{"ID", false}},
       nullptr,
       RunLeaderTransfer},
      {"snapshot save",
       "FILE [--stale] [--force]",
       "Save a backup of the store (for raftkv restore)",
       "Streams GET /v1/snapshot to FILE.part, checks its length and XXH3-64 checksum (the "
       "image's trailer and X-Raftkv-Checksum), fsyncs it and renames it to FILE. Refuses an "
       "existing FILE unless --force. Exit 1 on a corrupted image, 5 if the download broke off; "
       "FILE is then left untouched.",
       {{"FILE", true}},
       DefineSnapshotSave,
       RunSnapshotSave},
  };
  return kCommands;
}

bool IsGroup(std::string_view word) {
  for (const Command& c : Commands()) {
    if (c.name.size() > word.size() && c.name.starts_with(word) && c.name[word.size()] == ' ') {
      return true;
    }
  }
  return false;
}

const Command* FindCommand(const std::vector<std::string>& args, size_t* words) {
  if (args.empty()) return nullptr;
  std::string name = args[0];
  *words = 1;
  if (IsGroup(name)) {
    if (args.size() < 2) return nullptr;
    name += " " + args[1];
    *words = 2;
  }
  for (const Command& c : Commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

}  // namespace raftkv::ctl
