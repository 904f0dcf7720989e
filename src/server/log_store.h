// LogStore: where the Raft driver makes each Ready durable.
//
// This is the seam between the Raft driver (driver.h) and the
// storage engine. The driver calls GetReady, hands the Ready to Persist and
// keeps stepping the node (Step, Tick, Propose, ReadIndex are allowed between
// GetReady and Advance; their effects go into the next Ready, which is how
// group commit happens). When the persist completes, on the driver thread,
// the driver sends the Ready's remaining messages, applies its committed
// entries, serves its read states and calls Advance.
//
// WalLogStore is the server's store: storage::DiskStorage (docs/wal-format.md),
// whose WAL writer thread writes and fsyncs each Ready and whose completion
// is posted back to the driver thread. MemoryLogStore keeps everything in a
// raft::MemoryStorage and completes at once; nothing survives a restart (for
// tests of the driver only; the server never uses it).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "metrics/metrics.h"
#include "raft/status.h"
#include "raft/storage.h"
#include "raft/types.h"
#include "storage/disk_storage.h"

namespace raftkv::server {

class LogStore {
 public:
  using Done = std::function<void(raft::Status)>;
  // Runs a closure on the driver thread (posts it to the driver's io_context).
  using DriverPost = std::function<void(std::function<void()>)>;

  virtual ~LogStore() = default;

  // Called once by the driver before any other call, from the thread that
  // constructs it.
  virtual void Attach(DriverPost post) { (void)post; }

  // Any thread: the store's figures for /metrics (docs/metrics.md).
  virtual void WriteMetrics(metrics::Writer* w) const { (void)w; }

  // Driver thread. The stable state the raft::Node reads: what was persisted
  // before this process started, plus every Persist and SaveSnapshot whose
  // `done` has run. Must outlive the Node.
  virtual const raft::Storage& storage() const = 0;

  // Driver thread. Starts making rd.snapshot_chunks, rd.snapshot,
  // rd.entries and rd.hard_state durable, in that order, synced before
  // completion when rd.must_sync. Chunks are stored as they come (never the
  // whole image at once); a streamed rd.snapshot is installed from the file
  // its chunks completed, and once `done` runs storage().LatestSnapshot()
  // holds its image.
  // `rd` stays alive and its snapshot, entries and hard state unchanged until
  // `done` runs (the driver only moves out rd.messages and rd.read_states).
  // `done` runs exactly once, on the driver thread, after storage() reflects
  // the Ready (if ok); it may run before Persist returns. A non-OK status
  // means the disk refused the write (disk full, I/O error): nothing of the
  // Ready may be acknowledged, and every later Persist fails the same way.
  // At most one Persist is outstanding at a time.
  virtual void Persist(const raft::Ready& rd, Done done) = 0;

  // Driver thread. Starts recording a snapshot of the state machine taken
  // at applied index `index` (membership `conf` as of that index; the log
  // must hold the entry applied there) and dropping the log up to and
  // including `compact_to` (<= index), so that a follower missing those
  // entries is sent the snapshot. `done` runs exactly once, on the driver
  // thread, after storage() reflects it (if ok); it may run before
  // SaveSnapshot returns. Persists may be outstanding meanwhile, and may
  // start and complete before it; a snapshot from the leader stored
  // meanwhile supersedes it (done(ok), storage() keeps the leader's). A
  // non-OK status means this snapshot was not recorded; storage() is as
  // before and a later SaveSnapshot may succeed (it does not fail the
  // store). At most one SaveSnapshot is outstanding at a time.
  virtual void SaveSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                            raft::Index compact_to, Done done) = 0;

  // Driver thread, no Persist or SaveSnapshot outstanding: flushes whatever
  // is buffered.
  virtual raft::Status Close() = 0;

  // For /status and logs, e.g. "memory (not durable)".
  virtual std::string Describe() const = 0;

  // Whether what Persist stored survives a process crash.
  virtual bool durable() const = 0;

  // Any thread. Ok, or the error that made the store refuse writes.
  virtual raft::Status health() const { return raft::Status::Ok(); }
};

// The durable store: a storage::DiskStorage driven one Ready at a time.
class WalLogStore : public LogStore {
 public:
  explicit WalLogStore(std::unique_ptr<storage::DiskStorage> disk) : disk_(std::move(disk)) {}
  // Waits for queued WAL writes (DiskStorage's destructor).
  ~WalLogStore() override = default;

  void Attach(DriverPost post) override { post_ = std::move(post); }
  const raft::Storage& storage() const override { return *disk_; }
  // Submits the Ready to the WAL writer thread; its completion is posted back
  // to the driver thread, which applies the update to DiskStorage's
  // in-memory view and then runs `done`. A Ready whose only change to store
  // is a new commit index (must_sync false) completes at once: that hard
  // state is written with the next update that goes to disk.
  void Persist(const raft::Ready& rd, Done done) override;
  // Hands the snapshot to DiskStorage's snapshot thread, which writes its
  // file and deletes the WAL segments it covers (their fsyncs never block
  // the driver, nor the WAL writer); the completion is posted back to the
  // driver thread, which updates DiskStorage's in-memory view and runs `done`.
  void SaveSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                    raft::Index compact_to, Done done) override;
  raft::Status Close() override { return disk_->health(); }
  std::string Describe() const override;
  bool durable() const override { return true; }
  raft::Status health() const override { return disk_->health(); }
  // The WAL's fsync durations and bytes written.
  void WriteMetrics(metrics::Writer* w) const override;

 private:
  std::unique_ptr<storage::DiskStorage> disk_;
  DriverPost post_;
  // The update being written; kept for DiskStorage::Apply on completion.
  std::optional<storage::Update> inflight_;
  // The latest commit-only hard state, not yet written (see Persist).
  std::optional<raft::HardState> deferred_hard_state_;
};

// In memory only: for tests of the driver. Nothing survives a restart.
class MemoryLogStore : public LogStore {
 public:
  const raft::Storage& storage() const override { return storage_; }
  void Persist(const raft::Ready& rd, Done done) override;
  // Completes before it returns.
  void SaveSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                    raft::Index compact_to, Done done) override;
  raft::Status Close() override { return raft::Status::Ok(); }
  std::string Describe() const override { return "memory (not durable)"; }
  bool durable() const override { return false; }

 private:
  raft::MemoryStorage storage_;
};

}  // namespace raftkv::server
