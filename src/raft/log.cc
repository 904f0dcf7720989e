#include "raft/log.h"

#include <algorithm>

namespace raftkv::raft {

RaftLog::RaftLog(const Storage* storage) : storage_(storage) {
  unstable_offset_ = storage_->LastIndex() + 1;
  in_progress_ = unstable_offset_ - 1;
  // Everything up to the snapshot is committed by definition; the hard
  // state's commit is applied by the Node.
  committed_ = std::max(storage_->FirstIndex() - 1, storage_->LatestSnapshot().meta.index);
}

Index RaftLog::FirstIndex() const {
  if (unstable_snap_) return unstable_snap_->meta.index + 1;
  return storage_->FirstIndex();
}

Index RaftLog::LastIndex() const {
  if (!unstable_.empty()) return UnstableLast();
  if (unstable_snap_) return unstable_snap_->meta.index;
  return std::min(storage_->LastIndex(), unstable_offset_ - 1);
}

Index RaftLog::StableLastIndex() const {
  if (unstable_snap_) return 0;
  return std::min(storage_->LastIndex(), unstable_offset_ - 1);
}

Term RaftLog::LastTerm() const {
  Term t = 0;
  bool ok = TermAt(LastIndex(), &t);
  RAFT_ASSERT(ok, "term of last index " + std::to_string(LastIndex()) + " unavailable");
  return t;
}

bool RaftLog::TermAt(Index i, Term* term) const {
  if (i >= unstable_offset_) {
    if (i > LastIndex() || unstable_.empty()) return false;
    *term = unstable_[i - unstable_offset_].term;
    return true;
  }
  if (unstable_snap_) {
    if (i != unstable_snap_->meta.index) return false;
    *term = unstable_snap_->meta.term;
    return true;
  }
  if (i == 0) {
    *term = 0;
    return true;
  }
  return storage_->TermAt(i, term).ok();
}

bool RaftLog::MatchTerm(Index i, Term term) const {
  Term t = 0;
  return TermAt(i, &t) && t == term;
}

bool RaftLog::IsUpToDate(Index last_index, Term last_term) const {
  Term our = LastTerm();
  return last_term > our || (last_term == our && last_index >= LastIndex());
}

bool RaftLog::MaybeAppend(Index prev_index, Term prev_term, Index commit,
                          const std::vector<Entry>& entries, Index* last_new, Index* conflict) {
  if (!MatchTerm(prev_index, prev_term)) return false;
  *conflict = 0;
  *last_new = prev_index + entries.size();
  // Find the first entry that is not already in our log with the same term.
  // Entries before it are kept: truncating them could drop committed entries
  // when an old, delayed AppendEntries arrives (Figure 2, receiver step 3:
  // only delete on conflict).
  size_t i = 0;
  for (; i < entries.size(); i++) {
    const Entry& e = entries[i];
    if (!MatchTerm(e.index, e.term)) break;
  }
  if (i < entries.size()) {
    RAFT_ASSERT(entries[i].index > committed_,
                "conflicting entry " + std::to_string(entries[i].index) + " at or below commit " +
                    std::to_string(committed_));
    *conflict = entries[i].index;
    TruncateAndAppend(std::vector<Entry>(entries.begin() + i, entries.end()));
  }
  CommitTo(std::min(commit, *last_new));
  return true;
}

Index RaftLog::Append(const std::vector<Entry>& entries) {
  if (entries.empty()) return LastIndex();
  RAFT_ASSERT(entries.front().index == LastIndex() + 1, "leader append out of order");
  TruncateAndAppend(entries);
  return LastIndex();
}

void RaftLog::TruncateAndAppend(const std::vector<Entry>& entries) {
  Index after = entries.front().index;
  if (after == unstable_offset_ + unstable_.size()) {
    unstable_.insert(unstable_.end(), entries.begin(), entries.end());
  } else if (after <= unstable_offset_) {
    // Replaces part of the stable log (storage truncates when it appends).
    unstable_offset_ = after;
    unstable_ = entries;
  } else {
    unstable_.resize(after - unstable_offset_);
    unstable_.insert(unstable_.end(), entries.begin(), entries.end());
  }
  // Entries handed to the driver but now replaced must be handed out again.
  in_progress_ = std::min(in_progress_, after - 1);
}

Index RaftLog::FindConflictByTerm(Index index, Term term, Term* found_term) const {
  Index i = std::min(index, LastIndex());
  while (true) {
    Term t = 0;
    if (!TermAt(i, &t)) {
      // Compacted: the caller will probe from here and may need a snapshot.
      *found_term = 0;
      return i;
    }
    if (t <= term || i == 0) {
      *found_term = t;
      return i;
    }
    i--;
  }
}

void RaftLog::CommitTo(Index index) {
  if (index <= committed_) return;
  RAFT_ASSERT(index <= LastIndex(), "commit " + std::to_string(index) + " past last index " +
                                        std::to_string(LastIndex()));
  committed_ = index;
}

bool RaftLog::MaybeCommit(Index max_index, Term term) {
  if (max_index > committed_ && MatchTerm(max_index, term)) {
    CommitTo(max_index);
    return true;
  }
  return false;
}

Status RaftLog::Slice(Index lo, Index hi, uint64_t max_bytes, std::vector<Entry>* out) const {
  if (lo < FirstIndex()) return Status(Code::kUnavailable, "compacted");
  RAFT_ASSERT(lo < hi && hi <= LastIndex() + 1, "bad slice");
  if (lo < unstable_offset_) {
    Index stable_hi = std::min(hi, unstable_offset_);
    Status s = storage_->Entries(lo, stable_hi, max_bytes, out);
    if (!s.ok()) return s;
    if (out->empty() || out->back().index + 1 < stable_hi) return Status::Ok();  // byte limit hit
  }
  uint64_t bytes = 0;
  for (const Entry& e : *out) bytes += e.SizeBytes();
  for (Index i = std::max(lo, unstable_offset_); i < hi; i++) {
    const Entry& e = unstable_[i - unstable_offset_];
    bytes += e.SizeBytes();
    if (!out->empty() && bytes > max_bytes) break;
    out->push_back(e);
  }
  return Status::Ok();
}

void RaftLog::Restore(const Snapshot& snapshot) {
  unstable_snap_ = snapshot;
  snap_in_progress_ = false;
  unstable_.clear();
  unstable_offset_ = snapshot.meta.index + 1;
  in_progress_ = snapshot.meta.index;
  committed_ = snapshot.meta.index;
}

const Snapshot& RaftLog::LatestSnapshot() const {
  if (unstable_snap_) return *unstable_snap_;
  return storage_->LatestSnapshot();
}

bool RaftLog::HasUnstableToPersist() const {
  return !unstable_.empty() && in_progress_ < UnstableLast();
}

std::vector<Entry> RaftLog::TakeUnstableToPersist() {
  std::vector<Entry> out;
  if (!HasUnstableToPersist()) return out;
  Index from = std::max(in_progress_ + 1, unstable_offset_);
  out.assign(unstable_.begin() + (from - unstable_offset_), unstable_.end());
  in_progress_ = UnstableLast();
  return out;
}

void RaftLog::StableTo(Index index, Term term) {
  if (index < unstable_offset_ || unstable_.empty() || index > UnstableLast()) return;
  // The entry may have been replaced since it was handed out; then it is
  // not the one that got persisted, and it stays unstable.
  if (unstable_[index - unstable_offset_].term != term) return;
  if (index > in_progress_) return;
  unstable_.erase(unstable_.begin(), unstable_.begin() + (index + 1 - unstable_offset_));
  unstable_offset_ = index + 1;
}

void RaftLog::StableSnapTo(Index index) {
  if (unstable_snap_ && unstable_snap_->meta.index == index) {
    unstable_snap_.reset();
    snap_in_progress_ = false;
  }
}

bool RaftLog::HasCommittedAfter(Index applied) const {
  return committed_ > applied && applied + 1 >= FirstIndex();
}

std::vector<Entry> RaftLog::CommittedAfter(Index applied, uint64_t max_bytes) const {
  std::vector<Entry> out;
  if (!HasCommittedAfter(applied)) return out;
  Status s = Slice(applied + 1, committed_ + 1, max_bytes, &out);
  RAFT_ASSERT(s.ok(), "committed entries unavailable after " + std::to_string(applied) + ": " +
                          s.ToString());
  return out;
}

}  // namespace raftkv::raft
