#include "raft/types.h"

#include <algorithm>
#include <cstring>

namespace raftkv::raft {

const Member* ConfState::Find(NodeId id) const {
  for (const Member& m : members) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

bool ConfState::IsVoter(NodeId id) const {
  const Member* m = Find(id);
  return m != nullptr && m->role == MemberRole::kVoter;
}

std::vector<NodeId> ConfState::Voters() const {
  std::vector<NodeId> out;
  for (const Member& m : members) {
    if (m.role == MemberRole::kVoter) out.push_back(m.id);
  }
  return out;
}

std::vector<NodeId> ConfState::Ids() const {
  std::vector<NodeId> out;
  for (const Member& m : members) out.push_back(m.id);
  return out;
}

// ConfChange encoding (inside a kConfChange entry), little endian:
//   u8 version (1) | u8 type | u64 node | u8 promote | u32 context length | context bytes
// The version byte lets later releases add fields without misreading old logs.
namespace {
constexpr uint8_t kConfChangeVersion = 1;

void PutU64(std::string* s, uint64_t v) {
  for (int i = 0; i < 8; i++) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; i++) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetLE(const std::string& s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= uint64_t(uint8_t(s[pos + i])) << (8 * i);
  return v;
}
}  // namespace

std::string EncodeConfChange(const ConfChange& cc) {
  std::string s;
  s.push_back(static_cast<char>(kConfChangeVersion));
  s.push_back(static_cast<char>(cc.type));
  PutU64(&s, cc.node);
  s.push_back(cc.promote ? 1 : 0);
  PutU32(&s, static_cast<uint32_t>(cc.context.size()));
  s += cc.context;
  return s;
}

bool DecodeConfChange(const std::string& data, ConfChange* out) {
  constexpr size_t kHeader = 1 + 1 + 8 + 1 + 4;
  if (data.size() < kHeader || uint8_t(data[0]) != kConfChangeVersion) return false;
  uint8_t type = uint8_t(data[1]);
  if (type > uint8_t(ConfChangeType::kRemoveNode)) return false;
  uint64_t len = GetLE(data, 11, 4);
  if (data.size() != kHeader + len) return false;
  out->type = static_cast<ConfChangeType>(type);
  out->node = GetLE(data, 2, 8);
  out->promote = data[10] != 0;
  out->context = data.substr(kHeader);
  return out->node != kNoNode;
}

bool ApplyConfChange(const ConfChange& cc, ConfState* conf) {
  auto it = std::find_if(conf->members.begin(), conf->members.end(),
                         [&](const Member& m) { return m.id == cc.node; });
  switch (cc.type) {
    case ConfChangeType::kAddLearner: {
      if (it != conf->members.end()) return false;
      Member m{cc.node, MemberRole::kLearner, cc.promote, cc.context};
      // The very first member of a cluster is a voter (bootstrap).
      if (conf->members.empty()) m.role = MemberRole::kVoter, m.promote = false;
      conf->members.push_back(m);
      std::sort(conf->members.begin(), conf->members.end(),
                [](const Member& a, const Member& b) { return a.id < b.id; });
      return true;
    }
    case ConfChangeType::kPromoteLearner:
      if (it == conf->members.end() || it->role != MemberRole::kLearner) return false;
      it->role = MemberRole::kVoter;
      it->promote = false;
      return true;
    case ConfChangeType::kRemoveNode:
      if (it == conf->members.end()) return false;
      conf->members.erase(it);
      return true;
  }
  return false;
}

bool MaySendBeforePersist(MessageType t) {
  switch (t) {
    case MessageType::kApp:
    case MessageType::kHeartbeat:
    case MessageType::kSnap:
    case MessageType::kReadIndex:
      return true;
    default:
      return false;
  }
}

const char* MessageTypeName(MessageType t) {
  switch (t) {
    case MessageType::kVote:
      return "Vote";
    case MessageType::kVoteResp:
      return "VoteResp";
    case MessageType::kPreVote:
      return "PreVote";
    case MessageType::kPreVoteResp:
      return "PreVoteResp";
    case MessageType::kApp:
      return "App";
    case MessageType::kAppResp:
      return "AppResp";
    case MessageType::kHeartbeat:
      return "Heartbeat";
    case MessageType::kHeartbeatResp:
      return "HeartbeatResp";
    case MessageType::kSnap:
      return "Snap";
    case MessageType::kSnapResp:
      return "SnapResp";
    case MessageType::kTimeoutNow:
      return "TimeoutNow";
    case MessageType::kReadIndex:
      return "ReadIndex";
    case MessageType::kReadIndexResp:
      return "ReadIndexResp";
  }
  return "?";
}

const char* RoleName(Role r) {
  switch (r) {
    case Role::kFollower:
      return "Follower";
    case Role::kPreCandidate:
      return "PreCandidate";
    case Role::kCandidate:
      return "Candidate";
    case Role::kLeader:
      return "Leader";
  }
  return "?";
}

uint64_t Message::SizeBytes() const {
  uint64_t n = 64 + context.size() + snap_data.size();
  for (const Entry& e : entries) n += e.SizeBytes();
  for (const Member& m : snap_meta.conf.members) n += 16 + m.context.size();
  return n;
}

std::string Message::DebugString() const {
  std::string s = std::to_string(from) + "->" + std::to_string(to) + " " + MessageTypeName(type) +
                  " term=" + std::to_string(term);
  auto add = [&s](const char* k, uint64_t v) {
    s += std::string(" ") + k + "=" + std::to_string(v);
  };
  switch (type) {
    case MessageType::kVote:
    case MessageType::kPreVote:
      add("last_index", index);
      add("last_term", log_term);
      if (force) s += " force";
      break;
    case MessageType::kVoteResp:
    case MessageType::kPreVoteResp:
      s += reject ? " rejected" : " granted";
      break;
    case MessageType::kApp:
      add("prev_index", index);
      add("prev_term", log_term);
      add("commit", commit);
      s += " entries=[";
      for (size_t i = 0; i < entries.size(); i++) {
        if (i) s += ",";
        s += std::to_string(entries[i].term) + "/" + std::to_string(entries[i].index);
        if (entries[i].type == EntryType::kConfChange) s += "(conf)";
      }
      s += "]";
      break;
    case MessageType::kAppResp:
      add("index", index);
      if (reject) {
        s += " rejected";
        add("hint", reject_hint);
        add("hint_term", log_term);
      }
      break;
    case MessageType::kHeartbeat:
      add("commit", commit);
      add("round", read_round);
      break;
    case MessageType::kHeartbeatResp:
      add("round", read_round);
      break;
    case MessageType::kSnap:
      add("snap_index", snap_meta.index);
      add("snap_term", snap_meta.term);
      add("offset", snap_offset);
      add("bytes", snap_data.size());
      if (snap_done) s += " done";
      break;
    case MessageType::kSnapResp:
      add("snap_index", snap_meta.index);
      add("offset", snap_offset);
      if (reject) s += " rejected";
      if (reject && reject_hint > 0) add("limit", reject_hint);
      break;
    case MessageType::kTimeoutNow:
      break;
    case MessageType::kReadIndex:
      s += " ctx=" + context;
      break;
    case MessageType::kReadIndexResp:
      add("index", index);
      s += " ctx=" + context;
      if (reject) s += " rejected";
      break;
  }
  return s;
}

}  // namespace raftkv::raft
