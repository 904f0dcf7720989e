// Wal: the segmented write-ahead log of docs/wal-format.md, with group commit.
//
// Threads. Submit, WriteSnapshot, RemoveSegmentsThrough, stats and health may
// be called from any thread. Completions run on the Wal's own writer thread, which is the
// only thread that writes segment files: it takes every batch queued since
// its last write, writes them with one pwritev, issues one fdatasync, and then
// runs their completions in submission order. A completion must be short and
// must not call back into the Wal (hand the result to your own thread).
//
// Failures. A write or fsync error fails every batch of that write and puts
// the Wal in a failed state: later submits return the same status at once and
// nothing more is written. The Wal never crashes on an I/O error.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "metrics/metrics.h"
#include "raft/status.h"
#include "raft/types.h"
#include "storage/env.h"
#include "storage/format.h"
#include "storage/snapshot_file.h"

namespace raftkv::storage {

// --fsync=always|never. kNever skips every fsync: for benchmarks only, a
// machine crash can then lose acknowledged writes.
enum class FsyncMode { kAlways, kNever };
const char* FsyncModeName(FsyncMode mode);
bool ParseFsyncMode(std::string_view text, FsyncMode* mode);

struct WalOptions {
  std::string dir;
  uint64_t cluster_id = 0;
  uint64_t node_id = 0;
  // A new segment is started before a batch that would take the active one
  // past segment_bytes (a batch is never split, so one large batch may).
  uint64_t segment_bytes = 64ull << 20;
  // Largest record payload (an entry's data plus 17 bytes).
  uint64_t max_record_bytes = 8ull << 20;
  // Largest batch, and most bytes waiting for the writer; past them Submit
  // refuses with kUnavailable.
  uint64_t max_batch_bytes = 128ull << 20;
  uint64_t max_queued_bytes = 512ull << 20;
  FsyncMode fsync = FsyncMode::kAlways;
  Env* env = nullptr;  // nullptr: DefaultEnv().
  // Largest snapshot file received from the leader in chunks.
  uint64_t max_snapshot_bytes = 4ull << 30;
  // No writer thread: the owner runs the queued batches with RunQueued(), on
  // its own thread, when it likes (the simulator does, so that a run is
  // deterministic and pays no thread hand-off per batch). Completions then
  // run inside RunQueued().
  bool manual_writer = false;
};

// Monotonic counters, readable at any time.
struct WalStats {
  uint64_t batches = 0;  // Batches completed successfully.
  uint64_t entries = 0;  // Entry records in them.
  uint64_t bytes = 0;    // Bytes written to segments.
  uint64_t writes = 0;   // Group writes (one pwritev each, plus rotations).
  uint64_t fsyncs = 0;   // fdatasync/fsync calls on segments and the directory.
  uint64_t fsync_latency_us_total = 0;
  uint64_t fsync_latency_us_max = 0;
  uint64_t segments_created = 0;
  uint64_t segments_removed = 0;
};

// What one submit persists, in this order: chunks of a snapshot being
// received from the leader (each written to the receive file and fsynced; the
// last one renames it into place as the snapshot file), an optional snapshot
// file (a snapshot from the leader, written and fsynced before the records,
// unless it was streamed in chunks) with its marker record, entry records,
// and an optional hard state record.
class WalBatch {
 public:
  // Must come before SetSnapshot and any entry.
  void AddSnapshotChunk(const raft::SnapshotChunk& chunk);
  // Must come before any entry. For a streamed snapshot (snapshot->streamed),
  // a chunk of this batch completes its file, and the writer thread puts the
  // image it reads back from that file into *received before completing the
  // batch; `received` is null otherwise.
  void SetSnapshot(std::shared_ptr<const raft::Snapshot> snapshot,
                   std::shared_ptr<raft::Snapshot> received = nullptr);
  void AddEntry(const raft::Entry& entry);
  void SetHardState(const raft::HardState& hs);

  bool empty() const {
    return records_.empty() && hard_state_record_.empty() && !snapshot_ && chunks_.empty();
  }
  uint64_t bytes() const { return records_.size() + hard_state_record_.size(); }
  uint64_t entry_count() const { return entries_; }
  // Largest record payload in the batch.
  uint64_t max_payload_bytes() const { return max_payload_bytes_; }

 private:
  friend class Wal;
  std::vector<raft::SnapshotChunk> chunks_;
  std::shared_ptr<const raft::Snapshot> snapshot_;
  std::shared_ptr<raft::Snapshot> received_;
  std::string records_;  // Snapshot marker and entries, framed.
  std::string hard_state_record_;
  raft::Index max_index_ = 0;
  uint64_t entries_ = 0;
  uint64_t max_payload_bytes_ = 0;
};

using WalCallback = std::function<void(const Status&)>;

// Where a record is, for error messages.
struct RecordLocation {
  std::string file;
  uint64_t offset = 0;
};

// Called by Open for each entry, hard state and snapshot marker record, in
// log order. A non-ok return stops Open with that status.
using ReplayFn = std::function<Status(RecordType, std::string_view payload, const RecordLocation&)>;

// What Open found and repaired.
struct WalRecovery {
  uint64_t segments = 0;
  uint64_t records = 0;
  // A torn last record cut off (docs/wal-format.md).
  bool torn_tail_cut = false;
  std::string torn_file;
  uint64_t torn_offset = 0;
  uint64_t torn_bytes = 0;
  std::string torn_reason;
  // The last segment held no complete header and was removed.
  bool removed_torn_segment = false;
  // A crash interrupted a rotation before the old segment was sealed; the new
  // segment, which held nothing but a hard state copy, was removed.
  bool removed_unsealed_rotation = false;
  uint64_t first_seq = 0;  // Seq of the oldest segment read (0 if none).
};

class Wal {
 public:
  // Reads every segment of options.dir (which must exist and belong to the
  // cluster and node of the options), replaying records through `replay`,
  // cuts a torn tail, and starts the writer thread. Errors: kCorruption or
  // kIoError naming the file and offset.
  static Status Open(const WalOptions& options, const ReplayFn& replay, WalRecovery* recovery,
                     std::unique_ptr<Wal>* out);

  // Writes what is queued, stops the writer thread.
  ~Wal();
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  // Queues `batch`; `done` runs on the writer thread once the batch is
  // durable (ok) or failed. If Submit returns non-ok, `done` is never called:
  // kUnavailable past a limit, or the failed state's status.
  Status Submit(WalBatch batch, WalCallback done);
  // Submit and wait for the completion (any thread but the writer's; not
  // with manual_writer).
  Status SubmitAndWait(WalBatch batch);
  // manual_writer only: writes every batch queued so far as one group, as
  // the writer thread would, and runs their completions. False if none was
  // queued.
  bool RunQueued();

  // Writes `snap` (a snapshot of the state machine taken on this node) as
  // its snapshot file and removes older ones (WriteSnapshotFile), fsynced
  // unless --fsync=never. Blocks for those fsyncs; any thread but the
  // writer's (DiskStorage calls it from its snapshot thread). The writer
  // thread writes no snapshot file meanwhile (a chunk or a snapshot from the
  // leader waits for it), so the directory's snapshot files have one writer
  // at a time. An error does not fail the Wal: the segments are untouched.
  Status WriteSnapshot(const raft::Snapshot& snap);

  // Deletes, oldest first, the segments other than the active one whose
  // entries are all at or below `index`. Blocks for a directory fsync per
  // segment; any thread but the writer's, one caller at a time. Callers must
  // not pass an index past what a durable snapshot covers.
  Status RemoveSegmentsThrough(raft::Index index);

  WalStats stats() const;
  // The durations of segment fsyncs (any thread).
  const metrics::Histogram& fsync_histogram() const { return stats_.fsync; }
  // Ok, or the error that put the Wal in its failed state.
  Status health() const;
  // One line for the log: directory, segment size, fsync mode.
  std::string Describe() const;
  // Seqs of the segments on disk, oldest first (for tests and status pages).
  std::vector<uint64_t> SegmentSeqs() const;

 private:
  struct Segment {
    uint64_t seq = 0;
    raft::Index max_index = 0;  // Largest entry index written to it (0: none).
  };
  struct Pending {
    WalBatch batch;
    WalCallback done;
  };

  explicit Wal(const WalOptions& options);
  Status CreateSegment(uint64_t seq, std::unique_ptr<WritableFile>* out);
  void WriterLoop();
  // Takes the queue (and the failed state) under mu_, writes it as one
  // group and runs the completions. False if the queue was empty.
  bool WriteQueued();
  Status WriteGroup(std::deque<Pending>* group);
  Status Flush(std::vector<std::string_view>* parts, uint64_t* part_bytes);
  Status SyncFile(WritableFile* f);
  Status SyncDirTimed();
  Status Rotate(std::vector<std::string_view>* parts, uint64_t* part_bytes);
  void Fail(const Status& s);

  const WalOptions opts_;
  Env* const env_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;     // Guarded by mu_.
  uint64_t queued_bytes_ = 0;     // Guarded by mu_.
  bool stop_ = false;             // Guarded by mu_.
  Status failed_;                 // Guarded by mu_.
  std::deque<Segment> segments_;  // Guarded by mu_; back() is the active segment.
  // Held by whoever writes or removes snapshot files: the writer thread for a
  // leader's snapshot (whole or in chunks), WriteSnapshot for a local one.
  std::mutex snapshot_files_mu_;

  // Writer thread only (and Open, before the thread starts).
  std::unique_ptr<WritableFile> active_;
  std::unique_ptr<SnapshotReceiver> receiver_;
  uint64_t active_data_start_ = 0;  // Size of the active segment's header part.
  std::string last_hard_state_record_;

  struct AtomicStats {
    std::atomic<uint64_t> batches{0}, entries{0}, bytes{0}, writes{0}, fsyncs{0},
        fsync_latency_us_total{0}, fsync_latency_us_max{0}, segments_created{0},
        segments_removed{0};
    metrics::Histogram fsync;  // Segment fsyncs (not directory fsyncs).
  };
  AtomicStats stats_;

  std::thread writer_;
};

}  // namespace raftkv::storage
