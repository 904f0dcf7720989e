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

  std::string Describe() const;
};

FaultProfile DrawProfile(uint64_t seed, int nodes);

}  // namespace raftkv::sim
