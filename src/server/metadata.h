// The node's metadata file in its data directory (<datadir>/raftkv-node.json):
// who this node is, and whether it has already been admitted to a cluster.
// Its presence is what makes a start a *restart*: --bootstrap and --join are
// then ignored and the node resumes with its state.
#pragma once

#include <string>
#include <vector>

#include "raft/status.h"
#include "raft/types.h"

namespace raftkv::server {

struct NodeMetadata {
  std::string name;
  raft::NodeId id = raft::kNoNode;
  std::string raft;           // --bind at first start.
  std::string http;           // --http at first start.
  bool bootstrapped = false;  // Founded a cluster with --bootstrap.
  std::string join;           // --join target at first start, if any.
  bool member = false;        // Admitted (bootstrap, or a join that succeeded).
  // The cluster's id, drawn at bootstrap or learned before joining; also in
  // the WAL's META. 0: a cluster without an id (a data directory of the
  // release before cluster ids, whose file has no such field).
  uint64_t cluster_id = 0;
  // HTTP addresses of the other members, as last seen in the membership: whom
  // a restarted node asks to re-add it while its log is not durable.
  std::vector<std::string> peers_http;
};

inline constexpr const char* kMetadataFile = "raftkv-node.json";

// Creates the directory (and parents) if needed and checks it is writable.
raft::Status EnsureDataDir(const std::string& dir);
// *found = false (and OK) when the file does not exist. kCorruption if it
// exists but cannot be parsed.
raft::Status LoadMetadata(const std::string& dir, NodeMetadata* out, bool* found);
// Writes atomically: temp file, fsync, rename, fsync of the directory.
raft::Status SaveMetadata(const std::string& dir, const NodeMetadata& m);

}  // namespace raftkv::server
