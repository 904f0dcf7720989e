#include "server/log_store.h"

#include <algorithm>

namespace raftkv::server {

void WalLogStore::Persist(const raft::Ready& rd, Done done) {
  RAFT_ASSERT(!inflight_.has_value(), "a second Persist while one is outstanding");
  RAFT_ASSERT(post_ != nullptr, "WalLogStore used before Attach");
  if (!rd.must_sync) {
    // The core sets must_sync for any entry, snapshot, chunk, term or vote,
    // so there is nothing to write but perhaps a new commit index. The
    // commit index is not part of Raft's durable state (a restarted node
    // learns it again from the leader, and a lower one on disk only means
    // replaying less at start), so it is neither written nor waited for now:
    // it goes to disk with the next write. As etcd, which does not sync for
    // a commit-only HardState.
    RAFT_ASSERT(rd.entries.empty() && !rd.snapshot && rd.snapshot_chunks.empty(),
                "a Ready with something to store but must_sync false");
    if (rd.hard_state) deferred_hard_state_ = rd.hard_state;
    return done(disk_->health());
  }
  storage::Update u = storage::Update::FromReady(rd);
  if (!u.hard_state) u.hard_state = deferred_hard_state_;
  deferred_hard_state_.reset();
  inflight_ = std::move(u);
  // The completion runs on the WAL writer thread: hand it to the driver
  // thread, which alone touches DiskStorage's in-memory view.
  raft::Status s = disk_->Submit(*inflight_, [this, done](const raft::Status& st) mutable {
    post_([this, st, done = std::move(done)] {
      if (st.ok()) disk_->Apply(*inflight_);
      inflight_.reset();
      done(st);
    });
  });
  if (!s.ok()) {
    // Refused before queuing (a failed WAL, or over a limit): the completion
    // will not run; report on the driver thread all the same.
    inflight_.reset();
    post_([s, done = std::move(done)] { done(s); });
  }
}

std::string WalLogStore::Describe() const {
  std::string d = disk_->Describe();
  if (d.find("fsync never") != std::string::npos) {
    d += " (NOT DURABLE: acknowledged writes can be lost on a machine crash; benchmarks only)";
  }
  return d;
}

void WalLogStore::WriteMetrics(metrics::Writer* w) const {
  using Type = metrics::Writer::Type;
  w->Family("raftkv_disk_wal_fsync_duration_seconds", Type::kHistogram,
            "fsyncs of WAL segments (each commits a group of writes).");
  w->Histo("raftkv_disk_wal_fsync_duration_seconds", {}, disk_->wal_fsync_histogram().Read());
  storage::WalStats s = disk_->wal_stats();
  w->Counter("raftkv_disk_wal_write_bytes_total", "Bytes written to WAL segments.",
             static_cast<double>(s.bytes));
  w->Counter("raftkv_disk_wal_writes_total", "Group writes to the WAL (one system call each).",
             static_cast<double>(s.writes));
  w->Counter("raftkv_disk_wal_entries_total", "Log entries written to the WAL.",
             static_cast<double>(s.entries));
}

void WalLogStore::SaveSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                               raft::Index compact_to, Done done) {
  RAFT_ASSERT(post_ != nullptr, "WalLogStore used before Attach");
  // As Persist: the completion runs on the snapshot thread, and only the
  // driver thread touches DiskStorage's in-memory view.
  raft::Status s = disk_->SubmitSnapshot(index, conf, std::move(data), std::min(compact_to, index),
                                         [this, done](const raft::Status& st) mutable {
                                           post_([this, st, done = std::move(done)] {
                                             if (st.ok()) {
                                               disk_->ApplySnapshotWritten();
                                             } else {
                                               disk_->AbandonSnapshot();
                                             }
                                             done(st);
                                           });
                                         });
  if (!s.ok()) post_([s, done = std::move(done)] { done(s); });
}

void MemoryLogStore::Persist(const raft::Ready& rd, Done done) {
  for (const raft::SnapshotChunk& c : rd.snapshot_chunks) {
    raft::Status s = storage_.WriteSnapshotChunk(c);
    if (!s.ok()) return done(std::move(s));
  }
  if (rd.snapshot) storage_.ApplySnapshot(*rd.snapshot);
  storage_.Append(rd.entries);
  if (rd.hard_state) storage_.SetHardState(*rd.hard_state);
  done(raft::Status::Ok());
}

void MemoryLogStore::SaveSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                                  raft::Index compact_to, Done done) {
  raft::Status s = storage_.CreateSnapshot(index, conf, std::move(data));
  if (s.ok() && compact_to > 0) s = storage_.Compact(std::min(compact_to, index));
  done(std::move(s));
}

}  // namespace raftkv::server
