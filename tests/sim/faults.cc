#include "faults.h"

#include <cinttypes>

#include "raft/rng.h"
#include "trace.h"

namespace raftkv::sim {

std::string FaultProfile::Describe() const {
  return StrFormat(
             "%s drop=%u dup=%u delay=%u..%u long=%u/%u part=%u crash=%u torn=%u pause=%u "
             "member=%u transfer=%u max_down=%d hb=%d prevote=%d cq=%d msg=%" PRIu64
             " inflight=%" PRIu64 " uncommitted=%" PRIu64 " chunk=%" PRIu64 " compact=%" PRIu64
             "/%" PRIu64,
             name.c_str(), net.drop_ppm, net.dup_ppm, net.min_delay_steps, net.max_delay_steps,
             net.long_delay_ppm, net.long_delay_max_steps, partition_ppm, crash_ppm, torn_ppm,
             pause_ppm, member_ppm, transfer_ppm, max_down, heartbeat_interval_ticks, pre_vote,
             check_quorum, max_msg_bytes, max_inflight_msgs, max_uncommitted_bytes,
             max_snapshot_chunk_bytes, compact_every, compact_margin) +
         (tiny_messages ? " +tiny" : "") + (figure8 ? " +figure8" : "") +
         (divergence ? " +divergence" : "") +
         (snapshot_refusal ? StrFormat(" +refusal=%" PRIu64, snapshot_limit_bytes) : "") +
         (lone_voter ? StrFormat(" +lone=%" PRIu64, lone_ticks) : "");
}

namespace {

// The targeted schedules, from a stream of their own (see faults.h).
void DrawSchedules(uint64_t seed, FaultProfile* p) {
  raft::Rng r(DeriveSeed(seed, 13));
  p->figure8 = r.Chance(1, 4);
  // Figure 8 needs an old entry acknowledged alone, without the new
  // leader's own entry after it: small appends make that likely.
  p->tiny_messages = r.Chance(1, 4) || (p->figure8 && r.Chance(3, 4));
  if (p->tiny_messages) {
    // A put is some 40-90 bytes: at most one entry per append (a slice
    // always carries one, whatever the limit). With one append in flight,
    // a learner replicates an entry per round trip, slower than the clients
    // write during the warm-up, and would never catch up to be promoted.
    p->max_msg_bytes = 1 + r.Uniform(48);
    p->max_inflight_msgs = 2 + r.Uniform(2);
  }
  p->divergence = r.Chance(1, 5);
  if (p->divergence) {
    // An isolated leader must stay leader to keep taking proposals.
    p->check_quorum = false;
    p->max_uncommitted_bytes = 32768 + r.Uniform(32769);
  }
  p->snapshot_refusal = r.Chance(1, 5);
  if (p->snapshot_refusal) p->snapshot_limit_bytes = 24 + r.Uniform(200);
  p->lone_voter = r.Chance(1, 6);
  if (p->lone_voter) p->lone_ticks = 80 + r.Uniform(121);
}

}  // namespace

FaultProfile DrawProfile(uint64_t seed, int nodes, bool schedules) {
  raft::Rng r(DeriveSeed(seed, 1));
  // Each rate varies within [v/2, 3v/2] so no two runs of a level are alike.
  auto jitter = [&r](uint32_t v) -> uint32_t {
    return v == 0 ? 0 : v / 2 + static_cast<uint32_t>(r.Uniform(v + 1));
  };
  FaultProfile p;
  uint64_t level = r.Uniform(4);
  switch (level) {
    case 0:
      p.name = "calm";
      p.net = NetFaults{0, 0, 1, 4, 0, 0};
      p.crash_ppm = jitter(200);
      p.member_ppm = jitter(1000);
      p.transfer_ppm = jitter(1000);
      p.max_down = 1;
      break;
    case 1:
      p.name = "mild";
      p.net = NetFaults{jitter(10000), jitter(5000), 1, 8, jitter(2000), 40};
      p.partition_ppm = jitter(2000);
      p.partition_min_ticks = 20;
      p.partition_max_ticks = 200;
      p.crash_ppm = jitter(2000);
      p.torn_ppm = jitter(500);
      p.restart_min_ticks = 5;
      p.restart_max_ticks = 60;
      p.pause_ppm = jitter(2000);
      p.pause_max_ticks = 40;
      p.member_ppm = jitter(2000);
      p.transfer_ppm = jitter(2000);
      p.max_down = nodes / 2;
      break;
    case 2:
      p.name = "stormy";
      p.net = NetFaults{jitter(50000), jitter(20000), 1, 12, jitter(10000), 160};
      p.partition_ppm = jitter(6000);
      p.partition_min_ticks = 10;
      p.partition_max_ticks = 150;
      p.crash_ppm = jitter(5000);
      p.torn_ppm = jitter(2000);
      p.restart_min_ticks = 2;
      p.restart_max_ticks = 40;
      p.pause_ppm = jitter(4000);
      p.pause_max_ticks = 30;
      p.member_ppm = jitter(4000);
      p.transfer_ppm = jitter(3000);
      p.max_down = nodes / 2;
      break;
    default:
      p.name = "chaos";
      p.net = NetFaults{jitter(150000), jitter(50000), 1, 16, jitter(30000), 400};
      p.partition_ppm = jitter(12000);
      p.partition_min_ticks = 5;
      p.partition_max_ticks = 100;
      p.crash_ppm = jitter(10000);
      p.torn_ppm = jitter(5000);
      p.restart_min_ticks = 1;
      p.restart_max_ticks = 30;
      p.pause_ppm = jitter(8000);
      p.pause_max_ticks = 30;
      p.member_ppm = jitter(6000);
      p.transfer_ppm = jitter(5000);
      // Everyone may be down at once: safety must still hold.
      p.max_down = nodes;
      break;
  }
  p.heartbeat_interval_ticks = 1 + static_cast<int>(r.Uniform(2));
  p.pre_vote = r.Chance(85, 100);
  p.check_quorum = r.Chance(85, 100);
  p.max_msg_bytes = 64 + r.Uniform(961);
  p.max_inflight_msgs = 1 + r.Uniform(4);
  p.max_uncommitted_bytes = 512 + r.Uniform(8192);
  p.max_snapshot_chunk_bytes = 8 + r.Uniform(57);
  p.max_pending_reads = 2 + r.Uniform(31);
  p.max_committed_bytes_per_ready = 64 + r.Uniform(1025);
  p.compact_every = 5 + r.Uniform(60);
  p.compact_margin = r.Uniform(11);
  if (schedules) DrawSchedules(seed, &p);
  return p;
}

}  // namespace raftkv::sim
