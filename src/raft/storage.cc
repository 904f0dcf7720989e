#include "raft/storage.h"

namespace raftkv::raft {

Status MemoryStorage::TermAt(Index i, Term* term) const {
  Index offset = entries_.front().index;
  if (i < offset || i > LastIndex()) {
    return Status(Code::kUnavailable, "index " + std::to_string(i) + " not in log");
  }
  *term = entries_[i - offset].term;
  return Status::Ok();
}

Status MemoryStorage::Entries(Index lo, Index hi, uint64_t max_bytes,
                              std::vector<Entry>* out) const {
  Index offset = entries_.front().index;
  if (lo <= offset) return Status(Code::kUnavailable, "index " + std::to_string(lo) + " compacted");
  RAFT_ASSERT(hi <= LastIndex() + 1 && lo < hi, "Entries(" + std::to_string(lo) + "," +
                                                    std::to_string(hi) + ") last " +
                                                    std::to_string(LastIndex()));
  uint64_t bytes = 0;
  for (Index i = lo; i < hi; i++) {
    const Entry& e = entries_[i - offset];
    bytes += e.SizeBytes();
    if (i > lo && bytes > max_bytes) break;
    out->push_back(e);
  }
  return Status::Ok();
}

void MemoryStorage::Append(const std::vector<Entry>& entries) {
  if (entries.empty()) return;
  Index offset = entries_.front().index;
  Index first = entries.front().index;
  RAFT_ASSERT(first <= LastIndex() + 1, "gap in append at " + std::to_string(first));
  // Entries at or before the placeholder are already compacted into a snapshot.
  size_t skip = first <= offset ? offset - first + 1 : 0;
  if (skip >= entries.size()) return;
  Index start = first + skip;
  entries_.resize(start - offset);
  for (size_t i = skip; i < entries.size(); i++) {
    RAFT_ASSERT(entries[i].index == start + (i - skip), "non-contiguous append");
    entries_.push_back(entries[i]);
  }
}

Status MemoryStorage::WriteSnapshotChunk(const SnapshotChunk& chunk) {
  if (chunk.offset != 0 && (!receiving_ || receiving_done_ || receiving_->meta != chunk.meta ||
                            receiving_->data.size() != chunk.offset)) {
    return Status(Code::kInvalidArgument,
                  "snapshot chunk at offset " + std::to_string(chunk.offset) + " of index " +
                      std::to_string(chunk.meta.index) + " does not continue the transfer");
  }
  if (chunk.offset == 0) {
    receiving_ = Snapshot{chunk.meta, std::string()};
    receiving_done_ = false;
  }
  receiving_->data += chunk.data;
  receiving_done_ = chunk.done;
  return Status::Ok();
}

void MemoryStorage::ApplySnapshot(const Snapshot& snapshot) {
  if (snapshot.streamed) {
    RAFT_ASSERT(receiving_ && receiving_done_ && receiving_->meta == snapshot.meta,
                "streamed snapshot at " + std::to_string(snapshot.meta.index) +
                    " applied without its chunks");
    snapshot_ = std::move(*receiving_);
    receiving_.reset();
  } else {
    snapshot_ = snapshot;
  }
  entries_.clear();
  entries_.push_back(Entry{snapshot.meta.term, snapshot.meta.index, EntryType::kNormal, {}});
}

Status MemoryStorage::CreateSnapshot(Index index, const ConfState& conf, std::string data) {
  if (index <= snapshot_.meta.index) {
    return Status(Code::kInvalidArgument, "snapshot at " + std::to_string(index) + " is not newer");
  }
  Term term = 0;
  Status s = TermAt(index, &term);
  if (!s.ok()) return s;
  snapshot_.meta.index = index;
  snapshot_.meta.term = term;
  snapshot_.meta.conf = conf;
  snapshot_.data = std::move(data);
  return Status::Ok();
}

Status MemoryStorage::Compact(Index index) {
  Index offset = entries_.front().index;
  if (index <= offset) return Status::Ok();
  if (index > snapshot_.meta.index) {
    return Status(Code::kInvalidArgument, "compact past snapshot at " + std::to_string(index));
  }
  entries_.erase(entries_.begin(), entries_.begin() + (index - offset));
  entries_.front().data.clear();
  return Status::Ok();
}

}  // namespace raftkv::raft
