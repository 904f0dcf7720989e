// Network: the simulated message transport between nodes.
//
// Every message sent gets a delivery step drawn from the run's fault
// profile; messages are delivered in (delivery step, send order), so random
// delays also reorder them. The network may drop or duplicate a message when
// it is sent, and partitions (possibly one-way: a->b cut while b->a works)
// swallow messages at delivery time, so a partition also catches what was in
// flight when it started. Crashed and paused destinations are the cluster's
// business: it asks the network to hold or drop those messages.
#pragma once

#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "raft/rng.h"
#include "raft/types.h"
#include "trace.h"

namespace raftkv::sim {

// Probabilities are in parts per million.
struct NetFaults {
  uint32_t drop_ppm = 0;
  uint32_t dup_ppm = 0;
  // Normal latency, uniform in [min, max] steps (at least 1).
  uint32_t min_delay_steps = 1;
  uint32_t max_delay_steps = 4;
  // Occasionally a message is very late (a stalled TCP connection).
  uint32_t long_delay_ppm = 0;
  uint32_t long_delay_max_steps = 0;
};

class Network {
 public:
  Network(uint64_t seed, Trace* trace) : rng_(seed), trace_(trace) {}

  void set_faults(const NetFaults& faults) { faults_ = faults; }
  const NetFaults& faults() const { return faults_; }

  // Takes a message from a node at now_step: maybe drops it, maybe
  // duplicates it, and schedules delivery at a later step.
  void Send(uint64_t now_step, raft::Message m);
  // Removes the next message due at or before now_step, if any. The message
  // may be for a destination that is blocked by a partition: the caller asks
  // Blocked() and reports the loss.
  bool PopDue(uint64_t now_step, raft::Message* out);
  // Holds a message for later delivery (its destination is paused).
  void Hold(uint64_t step, raft::Message m) { Push(step, std::move(m)); }

  // Partitions, one direction at a time.
  void Block(raft::NodeId from, raft::NodeId to) { blocked_.insert({from, to}); }
  bool Blocked(raft::NodeId from, raft::NodeId to) const {
    return !blocked_.empty() && blocked_.count({from, to}) > 0;
  }
  bool AnyBlocked() const { return !blocked_.empty(); }
  void HealAll() { blocked_.clear(); }

  size_t in_flight() const { return queue_.size(); }
  uint64_t sent() const { return sent_; }
  uint64_t dropped() const { return dropped_; }

 private:
  struct InFlight {
    uint64_t due;
    uint64_t seq;
    raft::Message m;
  };
  // Min-heap order on (due, seq): std heaps are max-heaps, so compare reversed.
  struct Later {
    bool operator()(const InFlight& a, const InFlight& b) const {
      return a.due != b.due ? a.due > b.due : a.seq > b.seq;
    }
  };

  uint64_t Delay();
  void Push(uint64_t due, raft::Message m);

  raft::Rng rng_;
  Trace* trace_;
  NetFaults faults_;
  std::vector<InFlight> queue_;
  uint64_t seq_ = 0;
  std::set<std::pair<raft::NodeId, raft::NodeId>> blocked_;
  uint64_t sent_ = 0;
  uint64_t dropped_ = 0;
};

}  // namespace raftkv::sim
