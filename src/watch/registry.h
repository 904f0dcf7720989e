// Registry: the watches of one io thread, matched against the history's
// batches as they are published (api-v1.md section 3, "Watch hub").
//
// A watch starts from a revision. Until it has seen every change in the
// history up to the head it is "catching up": it reads the history in steps,
// as fast as its sink takes the events (a stream's unsent bytes are bounded),
// so that a watch from far back never holds the whole history in a buffer.
// Once it reaches the head it is "synced": it sits in an index (exact keys,
// and prefixes by length), and each published batch is matched against the
// index, so that a batch costs what its events match, not what is watched.
//
// No gap and no duplicate: a catch-up step that reaches the head reads it
// under the history's lock; a batch appended after that read is published to
// this thread after it, and so reaches the watch once it is synced; a batch
// the read already covered is skipped (its revisions are below the watch's
// next revision). Publishing skips a thread without watches, so a watch
// announces itself (Hub::Acquire in the server: an atomic count) before its
// first read: a batch whose publisher saw no watch was appended before that.
//
// Threads: one thread per registry (the io thread it belongs to); the
// history may be appended to concurrently.
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "watch/history.h"

namespace raftkv::watch {

class Sink;

// Why the registry ended a watch.
enum class EndReason : uint8_t {
  kCompacted,          // Its next revision is no longer in the history.
  kSnapshotInstalled,  // The store was replaced: the history was reset.
};

std::string_view EndReasonName(EndReason r);

// What a sink says to one revision's events.
enum class Take : uint8_t {
  kMore,     // Taken; send more.
  kEnough,   // Taken; no more for now (a catch-up waits for Resume).
  kRefused,  // Not taken; no more for now (a catch-up offers it again on Resume).
};

// One watch. Owned by its Registry; valid until removed or ended.
class Watch {
 public:
  const Filter& filter() const { return filter_; }
  Sink* sink() const { return sink_.get(); }
  // The sink's own number for the watch (a multi-watch stream's index).
  uint32_t tag = 0;

 private:
  friend class Registry;
  Filter filter_;
  std::shared_ptr<Sink> sink_;  // Keeps the sink alive while the watch is.
  uint64_t next_rev_ = 0;       // The first revision not yet examined.
  uint64_t generation_ = 0;
  bool synced_ = false;
  bool dead_ = false;
  uint64_t mark_ = 0;        // The last change that matched (deduplicates a change's events).
  uint64_t batch_mark_ = 0;  // The last batch that offered it events.
  std::vector<const kv::Event*> matched_;
};

class Sink {
 public:
  virtual ~Sink() = default;
  // The events of one revision that match `w`, in apply order; `whole`
  // when they are all of the change's events (a serialization can then be
  // shared between watches). Never called for a revision twice. Unless it
  // answers kMore, the watch gets nothing more until Resume(w), which goes
  // on from the first revision not taken (a synced watch falls back to
  // catching up from the history).
  virtual Take OnEvents(Watch& w, const Change& change, std::span<const kv::Event* const> events,
                        bool whole) = 0;
  // After a batch or a catch-up step that offered `w` events.
  virtual void OnDelivered(Watch& w) { (void)w; }
  // The registry ended `w` (it is already removed, but valid during the call).
  virtual void OnEnded(Watch& w, EndReason why, uint64_t compact_revision) = 0;
};

class Registry {
 public:
  // A catch-up reads about `catch_up_changes` changes per history read.
  explicit Registry(const History* history, size_t catch_up_changes = 1024)
      : history_(history), catch_up_changes_(catch_up_changes) {}
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Adds a watch of `filter` from revision `from` (0: from the next one
  // applied), and catches it up as far as the sink takes. Returns null if
  // `from` is at or below the history's compact revision (*compact_revision
  // then says which); nothing is delivered then.
  Watch* Add(Filter filter, uint64_t from, std::shared_ptr<Sink> sink, uint32_t tag,
             uint64_t* compact_revision);
  // Removes a watch; no call reaches its sink after this. The caller keeps
  // the sink alive during the call.
  void Remove(Watch* w);
  // Continues a catch-up that the sink stopped (kEnough, kRefused).
  void Resume(Watch* w);
  // Delivers a published batch to the synced watches.
  void OnBatch(const Batch& b);
  // The history was reset to `generation` at `revision`: ends the watches of
  // older generations (kSnapshotInstalled).
  void OnReset(uint64_t generation, uint64_t revision);

  // The last revision `w` has examined: every matching change up to it has
  // been offered to its sink.
  uint64_t Examined(const Watch& w) const;
  bool Synced(const Watch& w) const { return w.synced_; }
  size_t size() const { return watches_.size(); }

 private:
  void CatchUp(Watch* w);
  void Index(Watch* w);
  void Unindex(Watch* w);
  void End(Watch* w, EndReason why, uint64_t compact_revision);
  void Unlink(Watch* w);
  // Collects the watches a change's events match into touched_.
  void Match(const Change& c);
  void Free();

  // Looks a key up by string_view (no copy per event).
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  using KeyMap =
      boost::unordered_flat_map<std::string, std::vector<Watch*>, KeyHash, std::equal_to<>>;

  const History* history_;
  const size_t catch_up_changes_;
  // Every live watch, by address.
  boost::unordered_flat_map<Watch*, std::unique_ptr<Watch>> watches_;
  // Synced watches by exact key, and by prefix; prefix_lengths_ counts the
  // prefix watches of each length, so that an event key is looked up once
  // per length in use.
  KeyMap exact_;
  KeyMap prefixes_;
  std::map<size_t, size_t> prefix_lengths_;
  // The newest batch delivered, and its generation.
  uint64_t processed_ = 0;
  uint64_t generation_ = 0;
  std::vector<Watch*> touched_;    // Scratch: the watches one change matched.
  std::vector<Watch*> delivered_;  // Scratch: the watches one batch offered events.
  // Watches removed while a delivery runs: freed once it ends.
  int delivering_ = 0;
  std::vector<std::unique_ptr<Watch>> dead_;
};

}  // namespace raftkv::watch
