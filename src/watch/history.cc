#include "watch/history.h"

#include <algorithm>
#include <mutex>

#include "raft/status.h"

namespace raftkv::watch {

namespace {

// The heap bytes of a string: none while it fits inside (libstdc++ keeps up
// to 15 bytes in place), else its buffer, rounded up as the allocator's
// small size classes do.
uint64_t HeapBytes(const std::string& s) {
  if (s.capacity() <= 15) return 0;
  return (s.capacity() + 1 + 15) & ~uint64_t{15};
}

}  // namespace

uint64_t History::EventBytes(const kv::Event& e) {
  // What the event holds in memory: itself (in its change's vector) and its
  // strings' buffers, so that --watch-history-bytes bounds real memory.
  return sizeof(kv::Event) + HeapBytes(e.kv.key) + HeapBytes(e.kv.value);
}

std::shared_ptr<const Batch> History::Append(uint64_t prev_revision, uint64_t revision,
                                             std::vector<kv::Event> events) {
  auto b = std::make_shared<Batch>();
  b->prev_revision = prev_revision;
  b->revision = revision;
  for (kv::Event& e : events) {
    const uint64_t rev = e.kv.meta.mod_revision;
    RAFT_ASSERT(rev > prev_revision && rev <= revision,
                "event at revision " + std::to_string(rev) + " outside its batch (" +
                    std::to_string(prev_revision) + ", " + std::to_string(revision) + "]");
    if (b->changes.empty() || b->changes.back().revision != rev) {
      RAFT_ASSERT(b->changes.empty() || b->changes.back().revision < rev,
                  "events out of revision order at " + std::to_string(rev));
      b->changes.push_back(Change{rev, {}});
    }
    b->bytes += EventBytes(e);
    b->changes.back().events.push_back(std::move(e));
  }
  // No spare capacity kept for the life of the batch in the history.
  for (Change& c : b->changes) c.events.shrink_to_fit();
  b->changes.shrink_to_fit();
  b->bytes += b->changes.size() * sizeof(Change) + sizeof(Batch);
  std::unique_lock lock(mu_);
  RAFT_ASSERT(prev_revision == revision_ && revision > prev_revision,
              "history at " + std::to_string(revision_) + " appended a batch (" +
                  std::to_string(prev_revision) + ", " + std::to_string(revision) + "]");
  b->generation = generation_;
  revision_ = revision;
  // A batch without changes is not held: it only advances the revision.
  if (!b->changes.empty()) {
    revisions_held_ += b->changes.size();
    bytes_held_ += b->bytes;
    batches_.push_back(b);
    Trim();
  }
  return b;
}

void History::Trim() {
  // Keeps at least the newest batch: its watchers still need it.
  while (batches_.size() > 1 &&
         (revisions_held_ > limits_.max_revisions || bytes_held_ > limits_.max_bytes)) {
    const Batch& oldest = *batches_.front();
    revisions_held_ -= oldest.changes.size();
    bytes_held_ -= oldest.bytes;
    // The revisions after it up to the next batch held had no changes: a
    // watch from them is still served (it finds none of them).
    compact_revision_ = oldest.revision;
    batches_.pop_front();
  }
}

uint64_t History::Reset(uint64_t revision) {
  std::unique_lock lock(mu_);
  batches_.clear();
  revisions_held_ = 0;
  bytes_held_ = 0;
  revision_ = revision;
  compact_revision_ = revision;
  return ++generation_;
}

Slice History::Read(uint64_t from, size_t max_changes) const {
  std::shared_lock lock(mu_);
  Slice s;
  s.generation = generation_;
  s.compact_revision = compact_revision_;
  s.head = revision_;
  if (from <= compact_revision_) {
    s.compacted = true;
    return s;
  }
  // The first batch whose revision reaches `from`.
  auto it = std::partition_point(
      batches_.begin(), batches_.end(),
      [from](const std::shared_ptr<const Batch>& b) { return b->revision < from; });
  size_t changes = 0;
  for (; it != batches_.end() && changes < max_changes; ++it) {
    s.batches.push_back(*it);
    changes += (*it)->changes.size();
  }
  s.complete = it == batches_.end();
  return s;
}

uint64_t History::revision() const {
  std::shared_lock lock(mu_);
  return revision_;
}

uint64_t History::compact_revision() const {
  std::shared_lock lock(mu_);
  return compact_revision_;
}

uint64_t History::generation() const {
  std::shared_lock lock(mu_);
  return generation_;
}

uint64_t History::revisions_held() const {
  std::shared_lock lock(mu_);
  return revisions_held_;
}

uint64_t History::bytes_held() const {
  std::shared_lock lock(mu_);
  return bytes_held_;
}

}  // namespace raftkv::watch
