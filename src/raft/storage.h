// Storage: the core's read-only view of the node's stable state.
//
// The core reads the stable log, hard state and latest snapshot through this
// interface; it never writes to it. The driver writes what each Ready asks
// for (Append, SetHardState, ApplySnapshot) before calling Node::Advance, and
// compacts the log (CreateSnapshot + Compact) when it likes. MemoryStorage is
// the in-memory implementation used by tests and the simulator; src/storage
// provides the durable one.
//
// All methods are called from the thread that drives the Node.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "raft/status.h"
#include "raft/types.h"

namespace raftkv::raft {

class Storage {
 public:
  virtual ~Storage() = default;

  // State as of the last persisted Ready (used when a Node starts).
  virtual HardState InitialHardState() const = 0;

  // Index of the first entry still in the log; SnapshotIndex()+1 when the log
  // is empty after a snapshot. Entries before it have been compacted.
  virtual Index FirstIndex() const = 0;
  // Index of the last entry, or SnapshotIndex() when the log is empty.
  virtual Index LastIndex() const = 0;

  // Term of entry i, for FirstIndex()-1 <= i <= LastIndex() (the entry just
  // before FirstIndex is the snapshot's). kUnavailable outside that range.
  virtual Status TermAt(Index i, Term* term) const = 0;

  // Appends entries [lo, hi) to *out, stopping once the total passes
  // max_bytes (at least one entry is always returned). Requires
  // FirstIndex() <= lo < hi <= LastIndex()+1.
  virtual Status Entries(Index lo, Index hi, uint64_t max_bytes, std::vector<Entry>* out) const = 0;

  // The latest snapshot (empty if none yet).
  virtual const Snapshot& LatestSnapshot() const = 0;
};

// An in-memory Storage. Not thread-safe.
class MemoryStorage : public Storage {
 public:
  MemoryStorage() = default;

  HardState InitialHardState() const override { return hard_state_; }
  Index FirstIndex() const override { return entries_.front().index + 1; }
  Index LastIndex() const override { return entries_.front().index + entries_.size() - 1; }
  Status TermAt(Index i, Term* term) const override;
  Status Entries(Index lo, Index hi, uint64_t max_bytes, std::vector<Entry>* out) const override;
  const Snapshot& LatestSnapshot() const override { return snapshot_; }

  // Writers, called by the driver while handling a Ready.
  void SetHardState(const HardState& hs) { hard_state_ = hs; }
  // Appends entries; an entry at an existing index truncates the log from there.
  // Entries must be contiguous and start at or before LastIndex()+1.
  void Append(const std::vector<Entry>& entries);
  // Stores one chunk of a snapshot being received from the leader
  // (Ready::snapshot_chunks): a chunk at offset 0 starts a transfer over;
  // any other must continue the current transfer (same meta) at the end of
  // what it stored, or it is refused with kInvalidArgument and nothing
  // changes. The image is kept aside until ApplySnapshot installs it.
  Status WriteSnapshotChunk(const SnapshotChunk& chunk);
  // Replaces the whole log with a snapshot received from the leader. A
  // streamed snapshot takes its image from the transfer that chunks with the
  // same meta completed (asserted).
  void ApplySnapshot(const Snapshot& snapshot);
  // Records a snapshot of the state machine taken at applied index `index`
  // (FirstIndex()-1 <= index <= LastIndex()). Does not drop entries.
  Status CreateSnapshot(Index index, const ConfState& conf, std::string data);
  // Drops the entries up to and including `index`, which must not be past
  // the latest snapshot. Keeping some entries after a snapshot lets slightly
  // lagging followers catch up without a snapshot transfer.
  Status Compact(Index index);

 private:
  HardState hard_state_;
  Snapshot snapshot_;
  // The snapshot being received in chunks (meta and image so far), and
  // whether its last chunk has been stored.
  std::optional<Snapshot> receiving_;
  bool receiving_done_ = false;
  // entries_[0] is a placeholder for the entry at FirstIndex()-1 (only its
  // index and term are meaningful); entries_[i].index == entries_[0].index + i.
  std::deque<Entry> entries_{Entry{}};
};

}  // namespace raftkv::raft
