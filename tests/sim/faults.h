// FaultProfile: how hostile one simulated run is. Drawn from the run's seed,
// so some runs are calm and some stormy, and a seed always gets the same one.
#pragma once

#include <cstdint>
#include <string>

#include "network.h"

namespace raftkv::sim {

// How hostile one run is; drawn from the seed, so some runs are calm and
// some are stormy.
struct FaultProfile {
  std::string name;
  NetFaults net;
  uint32_t partition_ppm = 0;  // Per tick, while the network is whole.
  uint32_t partition_min_ticks = 0, partition_max_ticks = 0;
  uint32_t crash_ppm = 0;  // Per tick.
  uint32_t torn_ppm = 0;   // Per Ready that persists something.
  uint32_t restart_min_ticks = 1, restart_max_ticks = 50;
  uint32_t pause_ppm = 0;  // Per tick.
  uint32_t pause_max_ticks = 0;
  uint32_t member_ppm = 0;    // Per tick: a membership change.
  uint32_t transfer_ppm = 0;  // Per tick: a leadership transfer.
  int max_down = 1;           // Nodes crashed or paused at once.
  // Node configuration knobs (small limits exercise flow control paths).
  int heartbeat_interval_ticks = 1;
  bool pre_vote = true;
  bool check_quorum = true;
  uint64_t max_msg_bytes = 256;
  uint64_t max_inflight_msgs = 4;
  uint64_t max_uncommitted_bytes = 4096;
  uint64_t max_snapshot_chunk_bytes = 64;
  uint64_t max_pending_reads = 16;
  uint64_t max_committed_bytes_per_ready = 512;
  // Compaction: snapshot every compact_every applied entries, keep up to
  // compact_margin entries behind the snapshot.
  uint64_t compact_every = 20;
  uint64_t compact_margin = 5;

  // Targeted schedules (README.md, "Targeted schedules"), each drawn for a
  // share of the seeds from a stream of their own, so the draws above stay
  // what they were. They aim at Raft rules that random faults rarely reach.
  // Small messages: max_msg_bytes below one entry (each append carries one)
  // and one or two messages in flight per peer.
  bool tiny_messages = false;
  // Figure 8: a leader holding an uncommitted entry that fewer than a quorum
  // have is crashed (or isolated) at once, again and again.
  bool figure8 = false;
  // Divergent logs: check-quorum off and a large uncommitted budget; the
  // leader (with one follower, of five nodes) is cut off for long periods,
  // keeps taking proposals, then must truncate them when the network heals.
  bool divergence = false;
  // Snapshot refusal: some incarnations of a node refuse snapshots over
  // snapshot_limit_bytes (raft::Config::max_snapshot_bytes); every node runs
  // without the limit in the calm tail, so it catches up.
  bool snapshot_refusal = false;
  uint64_t snapshot_limit_bytes = 0;
  // Lone voter: node 1 stays the only voter, its learners' answers cut off,
  // for lone_ticks of the warm-up, while it is crashed again and again (and
  // when a Ready that changes its term is on disk).
  bool lone_voter = false;
  uint64_t lone_ticks = 0;

  std::string Describe() const;
};

// `schedules` off: no targeted schedule is drawn (the profiles as they were
// before those existed; for comparisons).
FaultProfile DrawProfile(uint64_t seed, int nodes, bool schedules = true);

}  // namespace raftkv::sim
