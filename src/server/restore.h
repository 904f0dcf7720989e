// `raftkv restore`: builds the data directory of a new one-node cluster from a
// backup (GET /v1/snapshot), offline, as etcd's `snapshot restore` does
// (docs/operations.md, "Backup and restore").
#pragma once

#include <cstdint>
#include <string>

#include "raft/status.h"
#include "server/options.h"

namespace raftkv::server {

struct RestoreOptions {
  std::string snapshot;  // The backup file.
  std::string datadir;   // Must not hold a node yet.
  std::string name;      // --id; default: the --bind address.
  std::string bind = "127.0.0.1:7001";
  std::string http = "127.0.0.1:4001";
  // Revisions move forward by this much, so that watchers of the old cluster
  // see a revision newer than any they saw (and get 410, then list again)
  // instead of revisions going backwards.
  uint64_t revision_bump = 1000000;
};

// argv[1] is "restore". kExitOk/kExitError with *message for --help and errors.
ParseResult ParseRestoreOptions(int argc, char** argv, RestoreOptions* out, std::string* message);

// Checks the backup and writes the data directory: the node's metadata (a new
// cluster id, this node its only member) and a Raft log that starts with a
// snapshot at the backup's revision + revision_bump. *summary says what was
// written. Errors name the file and the problem; nothing is left half-written
// that a start would take for a node (the metadata file is written last).
raft::Status RestoreDataDir(const RestoreOptions& o, std::string* summary);

}  // namespace raftkv::server
