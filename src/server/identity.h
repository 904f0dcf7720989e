// Node identity: names, Raft node ids and the member context that the
// replicated membership carries (docs/wire-format.md section 1).
#pragma once

#include <string>
#include <string_view>

#include "raft/types.h"

namespace raftkv::server {

// A member as the server sees it: its name and addresses.
struct MemberInfo {
  raft::NodeId id = raft::kNoNode;
  std::string name;  // --id; defaults to the raft address.
  std::string raft;  // Peer address (--bind).
  std::string http;  // Client address (--http); may be empty if unknown.
  bool operator==(const MemberInfo&) const = default;
};

// XXH64 of the name (seed 0), or 1 if that is 0: never raft::kNoNode.
raft::NodeId NodeIdFromName(std::string_view name);

// A new cluster's id (docs/wire-format.md section 4): 64 bits from
// std::random_device, never 0 (0 is a cluster without an id).
uint64_t NewClusterId();
// A cluster id as /status and raftkv-node.json write it (decimal). False
// unless `text` is exactly a decimal u64.
bool ParseClusterId(std::string_view text, uint64_t* out);
// The cluster id in a node's GET /status answer: its "cluster_id", or 0 when
// the answer has none (a node of the release before cluster ids, whose
// cluster has no id). False, with *why, if `body` is not a raftkv /status.
bool ClusterIdFromStatus(std::string_view body, uint64_t* out, std::string* why);

// {"id":name,"raft":addr,"http":addr}
std::string EncodeMemberContext(const MemberInfo& m);
// Fills name/raft/http (not id). False if the context is not such an object.
bool DecodeMemberContext(std::string_view context, MemberInfo* out);

}  // namespace raftkv::server
