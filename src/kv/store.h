// Store: the replicated key-value state machine.
//
// The application surface Raft sees is apply / snapshot / restore (as in
// hashicorp/raft's FSM): the Raft driver thread applies committed entries in
// index order, takes snapshot images and restores them. Apply is
// deterministic, so every node that applied the same entries holds the same
// state. Per key the store keeps etcd's create_revision, mod_revision and
// version; the store's revision is the last applied Raft index.
//
// Threads: Apply, Snapshot and Restore are called by the Raft driver thread
// only. Get, revision(), size() and Hash() may be called from any thread (the
// HTTP threads serve reads directly): they take a shared lock that Apply and
// Restore take exclusively, once per batch.
#pragma once

#include <atomic>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kv/command.h"
#include "raft/status.h"
#include "raft/types.h"

namespace raftkv::kv {

struct KeyMeta {
  uint64_t create_revision = 0;  // Index of the write that created the key.
  uint64_t mod_revision = 0;     // Index of the last write.
  uint64_t version = 0;          // Writes since creation.
  bool operator==(const KeyMeta&) const = default;
};

// One applied command, reported so that the driver can complete the request
// that proposed it.
struct Applied {
  raft::Index index = 0;
  RequestId id;
};

class Store {
 public:
  Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Driver thread. Applies committed entries, which must follow revision()
  // without a gap (an entry at or below revision() is a bug). Conf-change
  // entries and empty no-ops only advance the revision. Appends one Applied
  // per command to *applied. Returns kCorruption naming the index if an entry
  // is not a command this version knows (the caller must stop: see
  // docs/wire-format.md, "Extending the format"); entries before it stay
  // applied.
  raft::Status Apply(std::span<const raft::Entry> entries, std::vector<Applied>* applied);

  // Driver thread. The snapshot image (docs/wire-format.md section 3).
  std::string Snapshot() const;
  // Driver thread. Replaces the whole state with an image. kCorruption (state
  // unchanged) if the image is malformed.
  raft::Status Restore(std::string_view image);

  // Any thread. False if the key is absent.
  bool Get(std::string_view key, std::string* value, KeyMeta* meta = nullptr) const;
  // Any thread. The last applied index.
  uint64_t revision() const { return revision_.load(std::memory_order_acquire); }
  size_t size() const;
  // Any thread. A digest of the whole state (keys, values, metadata and
  // revision) that tests compare across nodes.
  uint64_t Hash() const;

 private:
  struct Record {
    std::string value;
    KeyMeta meta;
  };
  struct KeyHash {
    using is_transparent = void;
    using is_avalanching = void;  // XXH3: the map needs no extra mixing.
    size_t operator()(std::string_view s) const;
  };
  // Open addressing (Boost 1.81): a lookup touches one metadata group and one
  // slot, where std::unordered_map chased a bucket and list nodes; applying a
  // put was 13% of a follower's driver thread in perf.
  using Map = boost::unordered_flat_map<std::string, Record, KeyHash, std::equal_to<>>;

  std::vector<const Map::value_type*> SortedLocked() const;

  mutable std::shared_mutex mu_;
  Map map_;
  std::atomic<uint64_t> revision_{0};
};

}  // namespace raftkv::kv
