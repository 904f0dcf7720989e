#include "trace.h"

#include <cstdarg>

namespace raftkv::sim {

uint64_t HashBytes(uint64_t h, const std::string& s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return HashMix(h, s.size());
}

uint64_t DeriveSeed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::string StrFormat(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

std::string DescribeConf(const raft::ConfState& conf) {
  std::string s = "{";
  for (const raft::Member& m : conf.members) {
    if (s.size() > 1) s += ",";
    s += std::to_string(m.id);
    if (m.role == raft::MemberRole::kLearner) s += m.promote ? "L+" : "L";
  }
  return s + "}";
}

const char* RoleShortName(raft::Role role) {
  switch (role) {
    case raft::Role::kFollower:
      return "follower";
    case raft::Role::kPreCandidate:
      return "pre-candidate";
    case raft::Role::kCandidate:
      return "candidate";
    case raft::Role::kLeader:
      return "LEADER";
  }
  return "?";
}

Trace::Trace(size_t capacity, bool echo, FILE* out)
    : ring_(capacity == 0 ? 1 : capacity), echo_(echo), out_(out) {}

Trace::Event& Trace::NextSlot() {
  Event& e = ring_[next_];
  next_ = (next_ + 1) % ring_.size();
  e.tick = tick_;
  e.sub = sub_;
  return e;
}

void Trace::Finish(const Event& e) {
  count_++;
  uint64_t h = hash_;
  h = HashMix(h, e.tick);
  h = HashMix(h, e.sub);
  h = HashMix(h, static_cast<uint64_t>(e.kind));
  h = HashMix(h, e.node);
  if (e.kind == EventKind::kText) {
    h = HashBytes(h, e.text);
  } else {
    h = HashMix(h, static_cast<uint64_t>(e.type));
    h = HashMix(h, e.from);
    h = HashMix(h, e.to);
    h = HashMix(h, e.term);
    h = HashMix(h, e.log_term);
    h = HashMix(h, e.index);
    h = HashMix(h, e.commit);
    h = HashMix(h, e.aux);
    h = HashMix(h, e.entries);
    h = HashMix(h, e.reject);
  }
  hash_ = h;
  if (echo_) {
    std::string line = Format(e);
    std::fprintf(out_, "%s\n", line.c_str());
  }
}

void Trace::Msg(EventKind kind, const raft::Message& m) {
  Event& e = NextSlot();
  e.kind = kind;
  e.node = kind == EventKind::kSend ? m.from : m.to;
  e.type = m.type;
  e.from = m.from;
  e.to = m.to;
  e.term = m.term;
  e.log_term = m.log_term;
  e.index = m.index;
  e.commit = m.commit;
  // One extra number worth seeing per type: the snapshot chunk offset, the
  // read round of heartbeats, the reject hint.
  switch (m.type) {
    case raft::MessageType::kSnap:
    case raft::MessageType::kSnapResp:
      e.aux = m.snap_offset;
      e.index = m.snap_meta.index;
      break;
    case raft::MessageType::kHeartbeat:
    case raft::MessageType::kHeartbeatResp:
      e.aux = m.read_round;
      break;
    default:
      e.aux = m.reject ? m.reject_hint : 0;
      break;
  }
  e.entries = static_cast<uint32_t>(m.entries.size());
  e.reject = m.reject;
  e.text.clear();
  Finish(e);
}

void Trace::Text(raft::NodeId node, std::string text) {
  Event& e = NextSlot();
  e.kind = EventKind::kText;
  e.node = node;
  e.text = std::move(text);
  Finish(e);
}

void Trace::Textf(raft::NodeId node, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  Text(node, buf);
}

std::string Trace::Format(const Event& e) const {
  char head[64];
  if (e.node == raft::kNoNode) {
    std::snprintf(head, sizeof(head), "[%6llu.%u] --  ", static_cast<unsigned long long>(e.tick),
                  e.sub);
  } else {
    std::snprintf(head, sizeof(head), "[%6llu.%u] n%-2llu ",
                  static_cast<unsigned long long>(e.tick), e.sub,
                  static_cast<unsigned long long>(e.node));
  }
  std::string line = head;
  if (e.kind == EventKind::kText) return line + e.text;
  const char* what = "?";
  switch (e.kind) {
    case EventKind::kSend:
      what = "send";
      break;
    case EventKind::kDeliver:
      what = "recv";
      break;
    case EventKind::kDrop:
      what = "LOST";
      break;
    case EventKind::kBlocked:
      what = "CUT ";
      break;
    case EventKind::kDown:
      what = "DOWN";
      break;
    case EventKind::kDup:
      what = "DUP ";
      break;
    case EventKind::kText:
      break;
  }
  char body[256];
  std::snprintf(body, sizeof(body), "%s %s %llu->%llu term=%llu lt=%llu idx=%llu commit=%llu", what,
                raft::MessageTypeName(e.type), static_cast<unsigned long long>(e.from),
                static_cast<unsigned long long>(e.to), static_cast<unsigned long long>(e.term),
                static_cast<unsigned long long>(e.log_term),
                static_cast<unsigned long long>(e.index),
                static_cast<unsigned long long>(e.commit));
  line += body;
  if (e.entries > 0) line += " ents=" + std::to_string(e.entries);
  if (e.reject) line += " REJECT hint=" + std::to_string(e.aux);
  if (e.type == raft::MessageType::kSnap || e.type == raft::MessageType::kSnapResp) {
    line += " off=" + std::to_string(e.aux);
  }
  if (e.type == raft::MessageType::kHeartbeat || e.type == raft::MessageType::kHeartbeatResp) {
    line += " round=" + std::to_string(e.aux);
  }
  return line;
}

std::string Trace::Tail(size_t n) const {
  size_t have = count_ < ring_.size() ? static_cast<size_t>(count_) : ring_.size();
  if (n > have) n = have;
  std::string out;
  for (size_t i = 0; i < n; i++) {
    size_t slot = (next_ + ring_.size() - n + i) % ring_.size();
    out += Format(ring_[slot]);
    out += '\n';
  }
  return out;
}

}  // namespace raftkv::sim
