// The client requests waiting on a node's driver, and how they end.
//
// PendingWrites holds proposed writes (and membership changes) until the
// entry at their index is applied, their deadline passes or the node gives
// them up; PendingReads holds linearizable reads through their three stages
// (batched for the next ReadIndex, waiting for its ReadState, waiting for
// the apply index). Both are plain containers for the driver thread: they
// decide nothing about Raft, they only find and hand back the requests that
// the driver resolves.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kv/command.h"
#include "kv/store.h"
#include "raft/types.h"

namespace raftkv::server {

// How a client request ended. The HTTP layer maps each code to a status.
enum class Code : uint8_t {
  kOk = 0,
  kNotLeader,      // This node does not lead; view() names the leader if known.
  kUnavailable,    // No leader or no quorum reachable: retry later (503).
  kTimeout,        // A write's outcome is unknown after its deadline (504).
  kNotCommitted,   // Leadership changed and the write was not committed (503; safe to retry).
  kInvalid,        // The request cannot succeed as sent (400).
  kBusy,           // A limit on pending work was reached (503).
  kShuttingDown,   // The node is stopping (503).
  kStorageFailed,  // The disk refused a write; this node takes no writes until restarted (503).
  // The request conflicts with the cluster's state (409). The message is
  // "<reason>: <text>", the reason being the /v1 error code
  // (member_exists, not_learner, learner_not_caught_up, would_lose_quorum, ...).
  kConflict,
};

// The lower-case name of a code, for metrics labels ("not_leader", ...).
const char* CodeName(Code code);
inline constexpr size_t kCodeCount = static_cast<size_t>(Code::kConflict) + 1;

struct Outcome {
  Code code = Code::kOk;
  std::string message;
  raft::Index index = 0;  // The applied index, for successful writes and reads.
  // A write's result as the store applied it (its ResultCode may still say
  // that it changed nothing); null for reads and membership changes.
  std::shared_ptr<const kv::Result> result = nullptr;
  // For kConflict: the stable reason clients decide on ("member_exists", "not_voter", ...);
  // `message` says it for people.
  std::string reason = {};
  bool ok() const { return code == Code::kOk; }
};

// A request the current state refuses (409 on /v1), with its reason.
inline Outcome Conflict(std::string reason, std::string message) {
  return Outcome{Code::kConflict, std::move(message), 0, nullptr, std::move(reason)};
}

using Callback = std::function<void(Outcome)>;
using TimePoint = std::chrono::steady_clock::time_point;

// Runs every callback with the same outcome.
void Answer(std::vector<Callback>* callbacks, const Outcome& outcome);

struct PendingWrite {
  raft::Index index = 0;
  raft::Term term = 0;
  kv::RequestId id;
  bool conf = false;  // A membership change: no request id to match.
  TimePoint deadline;
  Callback done;
};

class PendingWrites {
 public:
  size_t size() const { return by_serial_.size(); }
  void Add(PendingWrite w);
  // Whether a write waits at an index <= `index`.
  bool AnyThrough(raft::Index index) const {
    return !by_index_.empty() && by_index_.begin()->first <= index;
  }
  // Whether a write waits at `index`.
  bool WaitsAt(raft::Index index) const { return by_index_.contains(index); }
  // Removes and returns the writes at indexes <= `index`, in index order.
  std::vector<PendingWrite> TakeThrough(raft::Index index);
  // Removes and returns the writes whose deadline is <= now.
  std::vector<PendingWrite> TakeExpired(TimePoint now);
  // Removes and returns every write, in arrival order.
  std::vector<PendingWrite> TakeAll();

 private:
  // By serial (= arrival order = deadline order), and the same by log index.
  std::map<uint64_t, PendingWrite> by_serial_;
  std::multimap<raft::Index, uint64_t> by_index_;
  uint64_t next_serial_ = 1;
};

class PendingReads {
 public:
  // Reads in every stage.
  size_t size() const { return count_; }
  // Stage 1: waits for the next ReadIndex.
  void Queue(Callback done);
  bool HasBatch() const { return !batch_.empty(); }
  std::vector<Callback> TakeBatch();
  // Stage 2: the batch went out as ReadIndex context `ctx`.
  void Issued(uint64_t ctx, std::vector<Callback> batch, TimePoint deadline);
  // Stage 3: the ReadState for `ctx` says the reads may be served once
  // `index` is applied. False if `ctx` no longer waits (failed or expired).
  bool Released(uint64_t ctx, raft::Index index);
  // Removes and returns the released reads whose index is <= applied.
  std::vector<Callback> TakeServable(raft::Index applied);
  // Removes and returns the reads still waiting for their ReadState.
  std::vector<Callback> TakeIssued();
  // Removes and returns the reads of context `ctx` if they still wait for
  // their ReadState (none if they were released, failed or expired).
  std::vector<Callback> TakeIssued(uint64_t ctx);
  // Removes and returns issued reads (first) and released reads (second)
  // whose deadline is <= now.
  std::pair<std::vector<Callback>, std::vector<Callback>> TakeExpired(TimePoint now);
  // Removes and returns every read.
  std::vector<Callback> TakeAll();

 private:
  struct Round {
    std::vector<Callback> waiters;
    TimePoint deadline;
  };
  // Removes the rounds for which take(round) holds; returns their waiters
  // (not yet uncounted: see Uncount).
  template <typename Rounds, typename Pred>
  static std::vector<Callback> TakeRounds(Rounds* rounds, Pred take);
  // Uncounts `cbs`, which leave the table, and returns them.
  std::vector<Callback> Uncount(std::vector<Callback> cbs);

  std::vector<Callback> batch_;
  std::map<uint64_t, Round> issued_;            // By context.
  std::multimap<raft::Index, Round> released_;  // By read index.
  size_t count_ = 0;
};

}  // namespace raftkv::server
