#include "raft/progress.h"

#include <algorithm>

namespace raftkv::raft {

const char* ProgressStateName(ProgressState s) {
  switch (s) {
    case ProgressState::kProbe:
      return "probe";
    case ProgressState::kReplicate:
      return "replicate";
    case ProgressState::kSnapshot:
      return "snapshot";
  }
  return "?";
}

void Progress::BecomeProbe() {
  // After a snapshot, resume right after it; otherwise just after match.
  if (state == ProgressState::kSnapshot) {
    next = std::max(match + 1, pending_snapshot + 1);
  } else {
    next = match + 1;
  }
  state = ProgressState::kProbe;
  probe_sent = false;
  ForgetSnapshot();
  inflights.Reset();
}

void Progress::BecomeReplicate() {
  state = ProgressState::kReplicate;
  next = match + 1;
  probe_sent = false;
  ForgetSnapshot();
  inflights.Reset();
}

void Progress::BecomeSnapshot(std::shared_ptr<const Snapshot> image) {
  state = ProgressState::kSnapshot;
  probe_sent = false;
  pending_snapshot = image->meta.index;
  snap_image = std::move(image);
  snap_offset = 0;
  snap_idle_ticks = 0;
  snap_heard = false;
  inflights.Reset();
}

void Progress::SnapshotAbandoned() {
  ProbeWithoutSnapshot();
  // Paused until the follower is heard from (HandleHeartbeatResponse).
  probe_sent = true;
}

void Progress::SnapshotRefused(uint64_t limit_bytes, int backoff_ticks) {
  ProbeWithoutSnapshot();
  snap_refusals++;
  snap_refused_limit_bytes = limit_bytes;
  snap_backoff_ticks = backoff_ticks;
}

void Progress::ProbeWithoutSnapshot() {
  // Not BecomeProbe: that resumes after the snapshot, which the follower
  // does not have.
  state = ProgressState::kProbe;
  next = match + 1;
  probe_sent = false;
  ForgetSnapshot();
  inflights.Reset();
}

void Progress::ForgetSnapshot() {
  snap_image.reset();
  pending_snapshot = 0;
  snap_offset = 0;
  snap_idle_ticks = 0;
  snap_heard = false;
}

bool Progress::MaybeUpdate(Index n) {
  bool updated = false;
  if (match < n) {
    match = n;
    updated = true;
    probe_sent = false;
  }
  next = std::max(next, n + 1);
  return updated;
}

bool Progress::MaybeDecrTo(Index rejected, Index hint) {
  if (state == ProgressState::kReplicate) {
    // A rejection at or below match is stale: that prefix is known to match.
    if (rejected <= match) return false;
    next = match + 1;
    return true;
  }
  // Probe: only the answer to the probe we sent (at next-1) counts.
  if (next == 0 || next - 1 != rejected) return false;
  next = std::max(std::min(rejected, hint + 1), match + 1);
  probe_sent = false;
  return true;
}

bool Progress::IsPaused() const {
  switch (state) {
    case ProgressState::kProbe:
      return probe_sent;
    case ProgressState::kReplicate:
      return inflights.Full();
    case ProgressState::kSnapshot:
      return true;
  }
  return true;
}

void Progress::SentEntries(Index last, uint64_t count) {
  switch (state) {
    case ProgressState::kReplicate:
      if (count > 0) {
        next = last + 1;
        inflights.Add(last);
      }
      break;
    case ProgressState::kProbe:
      probe_sent = true;
      break;
    case ProgressState::kSnapshot:
      break;
  }
}

}  // namespace raftkv::raft
