// SafetyChecker: the Raft safety properties (Raft paper, Figure 3), checked
// incrementally as the simulation runs so that a violation stops the run at
// the step that caused it, with the trace of what led there.
//
//   Election safety     at most one leader per term.
//   Log matching        two logs holding an entry with the same index and
//                       term hold the same entry there and agree on the term
//                       of the entry before it (so, by induction, on the
//                       whole prefix).
//   Leader completeness a new leader's log holds every entry committed in an
//                       earlier term.
//   State machine       no two nodes apply different entries at one index,
//   safety              and their key-value maps agree after each index.
//
// Plus per-node invariants on what a node persists (LogCabin style: what may
// and may not change between two states of a node): the term never goes
// back, a vote is never changed within a term, the commit index never goes
// back, and a node never truncates its log below its own commit index.
//
// Every check is O(size of the event), except leader completeness, which
// scans the new leader's (compacted) log once per election.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "raft/storage.h"
#include "raft/types.h"

namespace raftkv::sim {

class SafetyChecker {
 public:
  bool ok() const { return failure_.empty(); }
  // The first violation found, with context ("" if none).
  const std::string& failure() const { return failure_; }

  // `node` is the leader of `term` (called after every input to a node).
  void OnLeader(raft::NodeId node, raft::Term term);

  // `node` is about to persist entries[0, count) (contiguous) right after an
  // entry of term prev_term; `storage` is its log before the append.
  void OnPersist(raft::NodeId node, raft::Term prev_term, const raft::Entry* entries, size_t count,
                 const raft::Storage& storage);

  // `node` replaces its persisted hard state `prev` with `next`;
  // last_index is its last log index once the Ready's entries are written.
  void OnHardState(raft::NodeId node, const raft::HardState& prev, const raft::HardState& next,
                   raft::Index last_index);

  // `node` (whose term is node_term) applied entry e; state_hash is the hash
  // of its key-value map afterwards, if known (the driver applies in
  // batches: the state is known after a batch's last entry only).
  void OnApply(raft::NodeId node, raft::Term node_term, const raft::Entry& e,
               std::optional<uint64_t> state_hash);

  // `node` restored its state machine from a snapshot.
  void OnRestore(raft::NodeId node, const raft::SnapshotMeta& meta, uint64_t state_hash);

  // `node` just became leader of `term`; `storage` holds its whole log.
  void OnBecameLeader(raft::NodeId node, raft::Term term, const raft::Storage& storage);

  // How many times two nodes' key-value maps were compared at one index.
  uint64_t state_comparisons() const { return state_comparisons_; }

  // Highest index known to be committed.
  raft::Index max_committed() const { return committed_.empty() ? 0 : committed_.size() - 1; }

 private:
  void Fail(std::string what);

  std::map<raft::Term, raft::NodeId> leaders_;

  struct LogKey {
    raft::Index index;
    raft::Term term;
    bool operator==(const LogKey& o) const { return index == o.index && term == o.term; }
  };
  struct LogKeyHash {
    size_t operator()(const LogKey& k) const {
      return static_cast<size_t>(k.index * 0x9e3779b97f4a7c15ULL ^ k.term);
    }
  };
  struct LogInfo {
    uint64_t hash;
    raft::Term prev_term;
    raft::NodeId node;  // The first node seen persisting it.
  };
  // Only looked up, never iterated: its order cannot leak into the trace.
  std::unordered_map<LogKey, LogInfo, LogKeyHash> log_;

  struct Committed {
    bool set = false;
    raft::Term term = 0;
    uint64_t entry_hash = 0;
    // Upper bound on the term in which the entry was committed: the lowest
    // term of a node when it applied the entry.
    raft::Term commit_term_bound = 0;
    raft::NodeId node = 0;
    bool has_state = false;
    uint64_t state_hash = 0;
    raft::NodeId state_node = 0;
  };
  // Indexed by log index; committed_[0] unused.
  std::vector<Committed> committed_;

  uint64_t state_comparisons_ = 0;
  std::string failure_;
};

uint64_t EntryHash(const raft::Entry& e);

}  // namespace raftkv::sim
