// Progress: the leader's view of one follower's log (Raft paper 5.3:
// nextIndex and matchIndex), with the flow control of etcd-io/raft.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>

#include "raft/types.h"

namespace raftkv::raft {

enum class ProgressState : uint8_t {
  // Not known where the follower's log matches: one AppendEntries at a
  // time, each waiting for its answer (or the next heartbeat).
  kProbe = 0,
  // Matching: AppendEntries are pipelined, up to max_inflight_msgs.
  kReplicate,
  // The follower needs entries we compacted: a snapshot is being sent.
  kSnapshot,
};

const char* ProgressStateName(ProgressState s);

// Bounded window of in-flight AppendEntries (each remembered by its last index).
class Inflights {
 public:
  explicit Inflights(uint64_t capacity) : capacity_(capacity) {}
  bool Full() const { return last_.size() >= capacity_; }
  uint64_t Count() const { return last_.size(); }
  void Add(Index last) { last_.push_back(last); }
  // Frees every message whose last index is <= index.
  void FreeLE(Index index) {
    while (!last_.empty() && last_.front() <= index) last_.pop_front();
  }
  void Reset() { last_.clear(); }

 private:
  uint64_t capacity_;
  std::deque<Index> last_;
};

struct Progress {
  explicit Progress(uint64_t max_inflight) : inflights(max_inflight) {}

  MemberRole role = MemberRole::kVoter;
  Index match = 0;
  Index next = 1;
  ProgressState state = ProgressState::kProbe;
  // Probe: an AppendEntries is outstanding; wait for a reply or heartbeat.
  bool probe_sent = false;
  // Heard from this peer since the last check-quorum round.
  bool recent_active = false;
  Inflights inflights;

  // Snapshot state: the snapshot being sent and how far. The transfer is
  // pinned to the snapshot it started with: snap_image holds that image
  // (shared by every follower's transfer of the same snapshot, see
  // Node::PinLatestSnapshot) until the transfer ends, however many newer
  // snapshots the leader takes meanwhile. Every way out of kSnapshot drops it.
  std::shared_ptr<const Snapshot> snap_image;
  Index pending_snapshot = 0;  // snap_image->meta.index while in kSnapshot.
  uint64_t snap_offset = 0;
  int snap_idle_ticks = 0;
  // Heard from the follower (any message) since the last chunk was sent.
  bool snap_heard = false;
  // The follower refused a snapshot as over its size limit: how often (for
  // this leader), the limit it named, and the ticks left before a snapshot
  // is offered again. While snap_backoff_ticks > 0 the peer is probed with
  // heartbeats only.
  uint64_t snap_refusals = 0;
  uint64_t snap_refused_limit_bytes = 0;
  int snap_backoff_ticks = 0;
  // A learner waiting for promotion (Raft thesis 4.2.1): the current
  // catch-up round must bring match to catchup_target (the leader's last
  // index when the round began, 0: no round), and has run catchup_ticks.
  Index catchup_target = 0;
  int catchup_ticks = 0;

  void BecomeProbe();
  void BecomeReplicate();
  // Starts sending `image` (not null, not streamed) from offset 0.
  void BecomeSnapshot(std::shared_ptr<const Snapshot> image);
  // The follower has been silent for a whole retry interval: the transfer is
  // given up (its image released), back to probe from match, paused until
  // the follower is heard from again (a heartbeat response unpauses it, and
  // the next MaybeSendAppend starts a transfer of the newest snapshot).
  void SnapshotAbandoned();
  // The follower refused the snapshot being sent (over its limit_bytes):
  // back to probe from match, and no snapshot for backoff_ticks.
  void SnapshotRefused(uint64_t limit_bytes, int backoff_ticks);
  // Records that entries up to n are on the follower. False if stale.
  bool MaybeUpdate(Index n);
  // Handles a rejection of the AppendEntries at `rejected`; hint is the
  // follower's suggested next probe point. False if the rejection is stale.
  bool MaybeDecrTo(Index rejected, Index hint);
  bool IsPaused() const;
  void SentEntries(Index last, uint64_t count);

 private:
  // Leaves no trace of a transfer (and releases its image).
  void ForgetSnapshot();
  // A transfer that did not complete: probe from match.
  void ProbeWithoutSnapshot();
};

}  // namespace raftkv::raft
