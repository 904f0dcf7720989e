// RaftLog: the node's log as the core sees it: the stable part in Storage
// plus an unstable suffix (and possibly a snapshot) that the driver has not
// yet persisted. Internal to src/raft.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "raft/status.h"
#include "raft/storage.h"
#include "raft/types.h"

namespace raftkv::raft {

class RaftLog {
 public:
  explicit RaftLog(const Storage* storage);

  Index FirstIndex() const;
  Index LastIndex() const;
  Term LastTerm() const;
  // Last index known to be on stable storage (handed out and advanced).
  Index StableLastIndex() const;
  // Term of entry i; false when i is compacted or past the end.
  bool TermAt(Index i, Term* term) const;
  bool MatchTerm(Index i, Term term) const;
  // Raft paper 5.4.1: is a log ending at (last_index, last_term) at least as
  // up-to-date as ours?
  bool IsUpToDate(Index last_index, Term last_term) const;

  // Follower side of AppendEntries (Raft paper Figure 2, receiver steps 2-5).
  // False if our log has no entry (prev_index, prev_term). Otherwise appends
  // what is new, truncating a conflicting suffix, sets *last_new to the index
  // of the last entry the leader sent, and commits up to min(commit, *last_new).
  // *conflict is the first index that was replaced or added (0 if none).
  bool MaybeAppend(Index prev_index, Term prev_term, Index commit,
                   const std::vector<Entry>& entries, Index* last_new, Index* conflict);
  // Leader side: appends new entries after the last one. Returns LastIndex().
  Index Append(const std::vector<Entry>& entries);
  // For a rejected AppendEntries at (index, term): the largest index <= index
  // whose term is <= term (etcd-io/raft's fast log backtracking), and its term.
  Index FindConflictByTerm(Index index, Term term, Term* found_term) const;

  Index committed() const { return committed_; }
  void CommitTo(Index index);
  // Raft paper 5.4.2: only commit by counting replicas when the entry at
  // max_index is of the current term.
  bool MaybeCommit(Index max_index, Term term);

  // Entries [lo, hi) up to max_bytes (at least one). kUnavailable if lo is compacted.
  Status Slice(Index lo, Index hi, uint64_t max_bytes, std::vector<Entry>* out) const;

  // Replaces the log with a snapshot received from the leader.
  void Restore(const Snapshot& snapshot);
  // The snapshot to hand to storage: the pending unstable one, or storage's.
  const Snapshot& LatestSnapshot() const;

  // Ready support.
  bool HasUnstableToPersist() const;
  std::vector<Entry> TakeUnstableToPersist();
  const std::optional<Snapshot>& PendingSnapshot() const { return unstable_snap_; }
  bool SnapshotToPersist() const { return unstable_snap_.has_value() && !snap_in_progress_; }
  void MarkSnapshotInProgress() { snap_in_progress_ = true; }
  void StableTo(Index index, Term term);
  void StableSnapTo(Index index);
  // Committed entries after `applied`, up to max_bytes (at least one).
  bool HasCommittedAfter(Index applied) const;
  std::vector<Entry> CommittedAfter(Index applied, uint64_t max_bytes) const;

 private:
  void TruncateAndAppend(const std::vector<Entry>& entries);
  Index UnstableLast() const { return unstable_offset_ + unstable_.size() - 1; }

  const Storage* storage_;
  std::optional<Snapshot> unstable_snap_;
  bool snap_in_progress_ = false;
  // unstable_[i].index == unstable_offset_ + i. Storage entries at or after
  // unstable_offset_ are superseded by these (or, if beyond, by nothing).
  std::vector<Entry> unstable_;
  Index unstable_offset_ = 1;
  // Unstable entries up to here were handed to the driver in a Ready.
  Index in_progress_ = 0;
  Index committed_ = 0;
};

}  // namespace raftkv::raft
