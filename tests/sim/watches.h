// Watches under the simulator (issue 12): every node incarnation feeds the
// server's own watch::History through the driver's ChangeFeed, as the
// server's WatchHub does, and a watch::Registry delivers the batches to a few
// watches a tick later (the server posts them to an io thread), with random
// starts, filters and flow control.
//
// Checked:
//   * events are the same on every node: two nodes never report different
//     changes for one revision (Store::Apply's events are deterministic);
//   * each watch receives exactly the changes of its node that match it,
//     from its start up to what it has examined, once each and in revision
//     order; a watch the registry ends (compacted, snapshot_installed) has
//     received exactly those up to where it ended.
// A failure goes to `fail` with the node, the watch and the first difference.
//
// Its random choices come from a stream of their own, and its work never
// enters the driver's task queue, so the rest of a seed's schedule is the
// same with or without it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "raft/rng.h"
#include "raft/types.h"
#include "server/driver.h"
#include "watch/history.h"
#include "watch/registry.h"

namespace raftkv::sim {

struct WatchStats {
  uint64_t watches = 0;  // Watches started.
  uint64_t events = 0;   // Events delivered to them.
  uint64_t ended_compacted = 0;
  uint64_t ended_snapshot = 0;
  uint64_t resumes = 0;             // Catch-ups resumed after the sink said enough.
  uint64_t checks = 0;              // Watches checked against their node's changes.
  uint64_t revisions_compared = 0;  // Revisions whose changes two nodes both reported.
};

struct SimWatch;

class Watches {
 public:
  Watches(uint64_t seed, std::function<void(std::string)> fail);
  ~Watches();

  // One node incarnation's history, registry and watches.
  class NodeFeed final : public server::ChangeFeed {
   public:
    NodeFeed(Watches* owner, raft::NodeId id);
    ~NodeFeed() override;
    void OnChanges(uint64_t prev_revision, uint64_t revision,
                   std::vector<kv::Event> events) override;
    void OnRestored(uint64_t revision) override;

   private:
    friend class Watches;
    Watches* owner_;
    raft::NodeId id_;
    // Small bounds, so that trimming (and watches ended by it) happens often.
    watch::History history_{watch::HistoryLimits{24, 4096}};
    watch::Registry registry_{&history_, 7};  // Small catch-up steps.
    std::vector<watch::Change> log_;          // Every change this incarnation applied.
    // Published batches and resets, delivered at the next tick (the io thread's turn).
    std::deque<std::function<void()>> pending_;
    std::vector<std::shared_ptr<SimWatch>> watches_;
  };

  // The feed for one incarnation of node `id` (its driver's DriverHooks::feed).
  std::unique_ptr<NodeFeed> Attach(raft::NodeId id);
  // Once per tick per running node: delivers the batches published since
  // the last tick, resumes and starts watches at random.
  void Tick(NodeFeed* feed);
  // Checks every watch of the incarnation (at its stop, and at the end of the run).
  void Check(NodeFeed* feed);

  const WatchStats& stats() const { return stats_; }

 private:
  friend class NodeFeed;
  void StartWatch(NodeFeed* feed);
  void Compare(raft::NodeId node, const watch::Change& c);

  raft::Rng rng_;
  std::function<void(std::string)> fail_;
  // revision -> its changes as the first node that applied it reported them.
  std::map<uint64_t, std::string> changes_;
  WatchStats stats_;
};

}  // namespace raftkv::sim
