// DiskStorage: the durable raft::Storage (docs/wal-format.md).
//
// The whole log, hard state and latest snapshot are kept in memory (as in
// raft::MemoryStorage; raftkv is an in-memory store) and made durable in a
// data directory: a segmented WAL written by a writer thread with group
// commit, snapshot files, and a META file naming the cluster and node.
//
// Threads. One thread, the Raft driver, owns a DiskStorage and calls every
// method (the raft::Storage reads, Submit, Apply, Save, SubmitSnapshot,
// ApplySnapshotWritten, CreateSnapshot, Compact). The in-memory view changes
// only in Apply, ApplySnapshotWritten, CreateSnapshot and Compact, so the
// driver never races with the two threads that only write files: the WAL
// writer thread (each Ready) and the snapshot thread (a snapshot of the
// state machine taken on this node, and the compaction after it). health(),
// wal_stats() and Describe() may be called from any thread.
//
// Driving it (one Ready at a time):
//   Update u = Update::FromReady(rd);
//   storage->Submit(u, [](const Status& s) { post s to the driver thread });
//   ... on the driver thread, when the completion is ok:
//   storage->Apply(u); send rd.messages; apply committed entries; node.Advance(rd);
// A completion with an error means the disk refused a write: stop accepting
// writes and report health(); every later Submit fails with the same status.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "raft/status.h"
#include "raft/storage.h"
#include "raft/types.h"
#include "storage/env.h"
#include "storage/wal.h"

namespace raftkv::storage {

struct StorageOptions {
  // Written to META when the directory is created and checked on every open.
  uint64_t cluster_id = 0;
  uint64_t node_id = 0;
  // Open creates a missing or empty directory as a new node.
  bool create_if_missing = true;
  uint64_t segment_bytes = 64ull << 20;
  uint64_t max_record_bytes = 8ull << 20;
  uint64_t max_batch_bytes = 128ull << 20;
  uint64_t max_queued_bytes = 512ull << 20;
  // Largest snapshot file Open will read; Submit and CreateSnapshot refuse
  // (kInvalidArgument) snapshot data within 1 MiB of it, whole or (a
  // snapshot received in chunks) as far as a chunk would take it. See
  // DiskStorage::max_snapshot_data_bytes().
  uint64_t max_snapshot_bytes = 4ull << 30;
  FsyncMode fsync = FsyncMode::kAlways;
  Env* env = nullptr;  // nullptr: DefaultEnv().
  // No WAL writer or snapshot thread: their work waits until the owner
  // calls RunBackgroundWork() on its own thread, and completions run in it
  // (the simulator: deterministic, and no thread hand-off per Ready).
  bool manual_threads = false;
};

// The ids in the META file of data directory `dir`, without opening it:
// *found = false (and OK) when there is no META. kCorruption if META fails
// its checks. `env` nullptr: DefaultEnv().
Status ReadMetaIds(const std::string& dir, Env* env, uint64_t* cluster_id, uint64_t* node_id,
                   bool* found);

// What Open found, for the startup log line.
struct RecoveryInfo {
  bool created = false;  // A new, empty node.
  WalRecovery wal;
  raft::Index snapshot_index = 0;
  raft::Index first_index = 0;
  raft::Index last_index = 0;
  // Entries after a snapshot received from the leader, dropped because the
  // log they belonged to had been replaced (docs/wal-format.md, "Replay").
  uint64_t entries_dropped_by_snapshot = 0;
  std::string ToString() const;
};

// What one Ready asks to persist.
struct Update {
  std::optional<raft::HardState> hard_state;
  // Chunks of a snapshot being received from the leader, streamed to disk
  // (docs/wal-format.md, "Snapshots received from the leader").
  std::vector<raft::SnapshotChunk> snapshot_chunks;
  // A snapshot from the leader: whole, or streamed (its image is the file
  // that a chunk of this update completes).
  std::shared_ptr<const raft::Snapshot> snapshot;
  std::vector<raft::Entry> entries;

  static Update FromReady(const raft::Ready& rd);
  bool empty() const {
    return !hard_state && snapshot_chunks.empty() && !snapshot && entries.empty();
  }
};

class DiskStorage : public raft::Storage {
 public:
  // Opens (or creates) the data directory `dir` and recovers its state.
  // kCorruption or kIoError, naming the file and offset, if it cannot be
  // trusted; see docs/wal-format.md for exactly what is repaired and what is
  // refused. `info` (optional) receives what recovery found.
  static Status Open(const std::string& dir, const StorageOptions& options,
                     std::unique_ptr<DiskStorage>* out, RecoveryInfo* info = nullptr);

  // Waits for a snapshot being written and for queued WAL writes, and stops
  // both threads.
  ~DiskStorage() override;

  // raft::Storage, as of the last Apply, ApplySnapshotWritten, CreateSnapshot
  // or Compact.
  raft::HardState InitialHardState() const override { return mem_.InitialHardState(); }
  raft::Index FirstIndex() const override { return mem_.FirstIndex(); }
  raft::Index LastIndex() const override { return mem_.LastIndex(); }
  Status TermAt(raft::Index i, raft::Term* term) const override { return mem_.TermAt(i, term); }
  Status Entries(raft::Index lo, raft::Index hi, uint64_t max_bytes,
                 std::vector<raft::Entry>* out) const override {
    return mem_.Entries(lo, hi, max_bytes, out);
  }
  const raft::Snapshot& LatestSnapshot() const override { return mem_.LatestSnapshot(); }

  // Queues `update` for the WAL. `done` runs on the writer thread when it is
  // durable or failed; it must not touch this object. A non-ok return means
  // `done` will not run and nothing of the update was written: the failed
  // state's status, kUnavailable past a WAL limit, or kInvalidArgument for
  // a snapshot (whole, or a chunk's end) past max_snapshot_data_bytes().
  // kInvalidArgument does not fail the storage (health() stays ok); the
  // Raft core does not hand out such a chunk when its Config::
  // max_snapshot_bytes is at most max_snapshot_data_bytes().
  Status Submit(const Update& update, WalCallback done);
  // Makes a durable update visible through raft::Storage. Call for each
  // update whose completion was ok, in submission order, before Node::Advance.
  // A streamed snapshot becomes LatestSnapshot() with the image the writer
  // thread read back from its file.
  void Apply(const Update& update);
  // Submit, wait for the completion, Apply. Blocks the caller for an fsync.
  Status Save(const Update& update);

  // Starts recording a snapshot of the state machine at applied index
  // `index` (membership `conf` as of it), whose term is the log's there, and
  // then compacting the log through `compact_to` (0: not at all; at most
  // `index`). The snapshot thread writes the snapshot file (fsynced), then
  // deletes the WAL segments whose entries are all at or below compact_to
  // (a directory fsync each), while the driver goes on and the WAL writer
  // keeps writing Readies. `done` runs on the snapshot thread and must not
  // touch this object: hand it to the driver thread, which then calls
  // ApplySnapshotWritten (ok) or AbandonSnapshot (not ok). Nothing of the
  // in-memory view changes before that.
  // A non-ok return means `done` will not run: kInvalidArgument if `index`
  // is not newer than the latest snapshot, past the log, or the image is
  // over max_snapshot_data_bytes(); the failed WAL's status. A failed write
  // (done with an error) leaves the storage healthy: no segment was deleted
  // before the file was durable, a stray *.tmp file is removed by the next
  // Open, and a later SubmitSnapshot may succeed. At most one is outstanding.
  // Crash safety: the snapshot file is durable before any segment goes, and
  // segments go oldest first, so a crash at any point recovers (the
  // snapshot covers the entries of the segments not yet deleted).
  Status SubmitSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                        raft::Index compact_to, WalCallback done);
  // After an ok completion of SubmitSnapshot: the snapshot becomes
  // LatestSnapshot() and the entries through compact_to leave memory, unless
  // a newer snapshot from the leader was applied meanwhile (the written one
  // is then superseded: its file is gone already, or left for the next Open
  // to remove). Returns false in that case.
  bool ApplySnapshotWritten();
  // After a failed completion of SubmitSnapshot: forgets it.
  void AbandonSnapshot();
  // SubmitSnapshot without compaction, waited for, then applied: blocks the
  // caller for the snapshot's fsyncs (for tests and tools).
  Status CreateSnapshot(raft::Index index, const raft::ConfState& conf, std::string data);
  // Drops the entries up to `index` (at most the latest snapshot's) from
  // memory and deletes the WAL segments that hold only such entries (blocks
  // for their directory fsyncs). Not while a SubmitSnapshot is outstanding.
  Status Compact(raft::Index index);

  // The largest snapshot image (raft::Snapshot::data bytes) that Submit and
  // CreateSnapshot accept: StorageOptions::max_snapshot_bytes less room for
  // the file's header and trailer. The driver passes it as
  // raft::Config::max_snapshot_bytes, so that the core refuses a snapshot
  // from the leader before storage would. 0 if the options leave no room
  // for any snapshot (a configuration the driver should refuse to start with).
  uint64_t max_snapshot_data_bytes() const;

  Status health() const { return wal_->health(); }
  WalStats wal_stats() const { return wal_->stats(); }
  const metrics::Histogram& wal_fsync_histogram() const { return wal_->fsync_histogram(); }
  std::string Describe() const { return wal_->Describe(); }
  // For tests and benchmarks.
  Wal* wal() { return wal_.get(); }
  // manual_threads only: does the queued WAL writes, then a submitted
  // snapshot's, as those threads would, running their completions. False
  // if there was nothing to do.
  bool RunBackgroundWork();

 private:
  DiskStorage(std::string dir, const StorageOptions& options);
  void SnapshotLoop();

  const std::string dir_;
  const StorageOptions opts_;
  Env* const env_;
  raft::MemoryStorage mem_;
  std::unique_ptr<Wal> wal_;
  // Driver thread: for each submitted update with a streamed snapshot, in
  // submission order, where the writer thread puts its image for Apply.
  std::deque<std::shared_ptr<raft::Snapshot>> received_;

  // A local snapshot submitted and not yet applied or abandoned (driver thread).
  struct SnapshotJob {
    std::shared_ptr<raft::Snapshot> snap;
    raft::Index compact_to = 0;
  };
  std::optional<SnapshotJob> snapshot_job_;
  // The snapshot thread (started by the first SubmitSnapshot) and the work
  // handed to it; guarded by snapshot_mu_.
  std::mutex snapshot_mu_;
  std::condition_variable snapshot_cv_;
  std::function<void()> snapshot_work_;
  bool snapshot_stop_ = false;
  std::thread snapshot_thread_;
};

}  // namespace raftkv::storage
