// History: the bounded in-memory record of recent changes that watches are
// served from (docs/http-api.md, "Watch"; api-v1.md section 4).
//
// The driver appends each applied batch of committed entries: the revisions
// (prev_revision, revision] it covered and, for those that changed keys, the
// changes (kv::Event, in apply order; a transaction's several events share
// one revision). Revisions without a change (no-ops, membership changes,
// failed compares) leave no record but are covered all the same, so that a
// watcher learns it has examined them.
//
// The history is trimmed from its oldest end, a whole batch at a time, once it
// holds more than max_revisions revisions with changes or max_bytes of keys
// and values; compact_revision() is then the last revision trimmed. A watch
// from a revision at or below it cannot be served: the client lists again.
// Replacing the store (a snapshot installed from the leader, or the restart's
// restore) empties the history and starts a new generation: nothing before
// the new store's revision can be served.
//
// Threads: Append and Reset on the driver thread; everything else on any
// thread. Batches are immutable once appended and shared (the io threads
// deliver them to their watchers while the history may already trim them).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "kv/store.h"

namespace raftkv::watch {

// One revision's changes, in apply order.
struct Change {
  uint64_t revision = 0;
  std::vector<kv::Event> events;
};

// One applied batch.
struct Batch {
  uint64_t generation = 0;      // The history's generation when appended.
  uint64_t prev_revision = 0;   // The store's revision before the batch.
  uint64_t revision = 0;        // ... and after it.
  std::vector<Change> changes;  // In revision order; revisions without changes are absent.
  uint64_t bytes = 0;           // What the history counts for it.
};

// Which keys a watch follows: one key, or every key starting with `key`.
struct Filter {
  std::string key;
  bool prefix = false;
  bool Matches(std::string_view k) const { return prefix ? k.starts_with(key) : k == key; }
};

struct HistoryLimits {
  uint64_t max_revisions = 100000;  // Revisions with changes.
  uint64_t max_bytes = 64 << 20;    // Keys and values, plus a fixed cost per event.
};

// What a read from revision `from` found.
struct Slice {
  uint64_t generation = 0;
  uint64_t compact_revision = 0;
  uint64_t head = 0;       // The history's revision when read.
  bool compacted = false;  // from <= compact_revision: the changes since `from` are gone.
  bool complete = false;   // `batches` reach the head (else there is more to read).
  // The batches holding revisions >= from, oldest first: all of them up to
  // the head unless the read stopped once it had `max_changes` changes.
  std::vector<std::shared_ptr<const Batch>> batches;
};

class History {
 public:
  explicit History(HistoryLimits limits = {}) : limits_(limits) {}

  // Driver thread. Records a batch (prev_revision must be revision(), unless
  // the history is empty after a Reset to exactly prev_revision) and returns
  // it, to publish to the watchers. `events` are the batch's changes in apply
  // order; an event's revision is its kv's mod_revision.
  std::shared_ptr<const Batch> Append(uint64_t prev_revision, uint64_t revision,
                                      std::vector<kv::Event> events);
  // Driver thread. The store now holds the state at `revision` and nothing
  // before it: empties the history, whose compact revision becomes
  // `revision`, and returns the new generation.
  uint64_t Reset(uint64_t revision);

  // Any thread. Reads from revision `from` (see Slice).
  Slice Read(uint64_t from, size_t max_changes) const;
  uint64_t revision() const;
  uint64_t compact_revision() const;
  uint64_t generation() const;
  // Revisions with changes, and bytes, held now.
  uint64_t revisions_held() const;
  uint64_t bytes_held() const;

  // The bytes an event counts for.
  static uint64_t EventBytes(const kv::Event& e);

 private:
  void Trim();

  const HistoryLimits limits_;
  mutable std::shared_mutex mu_;
  std::deque<std::shared_ptr<const Batch>> batches_;
  uint64_t generation_ = 0;
  uint64_t revision_ = 0;
  uint64_t compact_revision_ = 0;
  uint64_t revisions_held_ = 0;
  uint64_t bytes_held_ = 0;
};

}  // namespace raftkv::watch
