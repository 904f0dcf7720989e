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

// {"id":name,"raft":addr,"http":addr}
std::string EncodeMemberContext(const MemberInfo& m);
// Fills name/raft/http (not id). False if the context is not such an object.
bool DecodeMemberContext(std::string_view context, MemberInfo* out);

}  // namespace raftkv::server
