// Trace: the simulator's event log.
//
// Every event of a run (message sent, delivered or dropped, role change,
// crash, partition, client operation...) goes through a Trace. The Trace
// keeps the last `capacity` events in a ring buffer, to print when a checker
// fires, and folds every event into a running 64-bit hash. Two runs of one
// seed must produce the same hash: that is how the determinism test checks
// that `raftkv-sim --seed N` really replays a failure.
//
// Message events are stored as structs and formatted only when printed,
// because a run records a few hundred thousand of them and formatting each
// one would dominate the simulator's cost.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "raft/types.h"

namespace raftkv::sim {

// FNV-1a style folding; stable across platforms, unlike std::hash.
inline uint64_t HashMix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h *= 0x100000001b3ULL;
  return h ^ (h >> 29);
}
uint64_t HashBytes(uint64_t h, const std::string& s);

// SplitMix64 finalizer: derives independent seeds from (seed, stream).
uint64_t DeriveSeed(uint64_t seed, uint64_t stream);

// Formatting helpers shared by the simulator's reports.
std::string StrFormat(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// "{1,2,4L+}": member ids; L marks a learner, + one to be promoted.
std::string DescribeConf(const raft::ConfState& conf);
const char* RoleShortName(raft::Role role);

enum class EventKind : uint8_t {
  kSend,     // A node handed a message to the network.
  kDeliver,  // The network delivered a message to its destination.
  kDrop,     // The network lost a message (random drop).
  kBlocked,  // A partition swallowed a message.
  kDown,     // The destination was crashed or gone.
  kDup,      // The network duplicated a message.
  kText,     // Anything else, already formatted.
};

class Trace {
 public:
  // If echo is set, every event is also printed to `out` as it happens.
  Trace(size_t capacity, bool echo, FILE* out);

  void SetTime(uint64_t tick, uint32_t sub) {
    tick_ = tick;
    sub_ = sub;
  }
  uint64_t tick() const { return tick_; }

  void Msg(EventKind kind, const raft::Message& m);
  // node == raft::kNoNode for cluster-wide events.
  void Text(raft::NodeId node, std::string text);
  // printf-style convenience for Text.
  void Textf(raft::NodeId node, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

  uint64_t hash() const { return hash_; }
  uint64_t count() const { return count_; }
  // The last n events (oldest first), one per line.
  std::string Tail(size_t n) const;

 private:
  struct Event {
    uint64_t tick = 0;
    uint32_t sub = 0;
    EventKind kind = EventKind::kText;
    raft::NodeId node = raft::kNoNode;
    // Message summary (message events only).
    raft::MessageType type = raft::MessageType::kApp;
    raft::NodeId from = 0, to = 0;
    uint64_t term = 0, log_term = 0, index = 0, commit = 0, aux = 0;
    uint32_t entries = 0;
    bool reject = false;
    std::string text;
  };

  std::string Format(const Event& e) const;
  Event& NextSlot();
  void Finish(const Event& e);

  std::vector<Event> ring_;
  size_t next_ = 0;
  uint64_t count_ = 0;
  uint64_t hash_ = 0xcbf29ce484222325ULL;
  uint64_t tick_ = 0;
  uint32_t sub_ = 0;
  bool echo_;
  FILE* out_;
};

}  // namespace raftkv::sim
