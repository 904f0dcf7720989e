// Leases under the simulator (issue 13): a checker of lease expiry that
// uses only what the harness observes itself (when each client request was
// sent, what each node applied and when, each node's store, its role and
// its log's last index), never the driver's Lessor, whose deadlines are
// what it checks.
//
// It keeps a model of the lease table (ids, TTLs, renewal revisions and
// attached keys) built from the committed log, entry by entry, at the first
// apply of each index anywhere, and checks:
//
//   * no early expiry: when an expiry (LeaseRevoke kExpire) is first applied
//     anywhere, at virtual time A, every lease it names was due: A >= the
//     send time of the client request applied at the LeaseRef's renewed_at
//     (its grant or keepalive) + the lease's TTL. Every node's deadline is at
//     least that (no node applies an entry before its client sent it), and
//     the leader proposes only past its deadline;
//   * a bound on lateness: a leader acts on its own deadlines. Per node and
//     lease the checker records when that node applied the lease's latest
//     renewal (or, for the leases of a store restored at start or from a
//     snapshot, when it was restored: deadlines count from then). At a tick
//     of a leader whose term's no-op it has applied, a lease whose recorded
//     time + TTL has passed is "armed" with W, the leader's last log index
//     after that tick: the driver proposed its expiry in that tick (or
//     earlier, then at a lower index). If that leader, still leading in the
//     same term and incarnation, then applies through W, the expiry is
//     applied with it: the lease must be gone from its store (or renewed
//     since it was armed). So the slack is one tick (ticks come every 10
//     virtual ms; the first at or past the deadline proposes) plus the
//     commit round trip of that tick's entries, measured (the leader
//     committed past them) rather than assumed: drops, delays, partitions,
//     pauses and crashes make it unbounded, and a leader that cannot commit
//     is never checked. A tick at which the driver would refuse the
//     proposal for a reason the harness sees (a leadership transfer in
//     progress, the pending-request limit reached, more due leases than one
//     tick's budget or one entry takes) arms nothing and disarms its leases;
//   * keys follow their lease: after each batch a node applies, every key
//     attached to a lease in its store belongs to a lease its store holds,
//     and at the first apply of each index the node's lease table and its
//     keys under "lease/" equal the model's.
// Every node agrees on the outcome through the state machine hash (which
// covers the lease table) compared at every index by the SafetyChecker.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "kv/command.h"
#include "kv/store.h"
#include "raft/node.h"
#include "raft/types.h"
#include "server/driver.h"

namespace raftkv::sim {

struct LeaseStats {
  uint64_t grants = 0;               // Grants applied (first apply anywhere).
  uint64_t keepalives = 0;           // Keepalive entries applied.
  uint64_t revokes = 0;              // Leases ended by a client's revoke.
  uint64_t expiries = 0;             // Leases ended by an expiry.
  uint64_t expiry_refs_checked = 0;  // LeaseRefs of expiries checked against their send time.
  uint64_t armed = 0;                // Due leases armed on a leader (lateness).
  uint64_t late_checks = 0;          // Armed leases found gone once the leader applied past them.
  uint64_t state_checks = 0;         // Node stores compared with the model.
  int64_t max_late_ms = 0;           // Largest (check - the leader's deadline) of a late check.
};

class LeaseChecker {
 public:
  using TimePoint = server::TimePoint;
  // The drivers' limits that can make them refuse an expiry's proposal.
  struct Limits {
    size_t max_pending_requests = 0;     // ReplicaConfig.
    uint64_t max_entry_bytes = 0;        // raft::Config.
    uint64_t max_uncommitted_bytes = 0;  // raft::Config.
  };
  LeaseChecker(std::function<void(std::string)> fail, Limits limits);

  // A client sent request `id` (a grant or keepalive) at `at`.
  void OnSent(kv::RequestId id, TimePoint at);
  // Node `n` (re)started, or installed a snapshot: its store holds the
  // leases of that image, and their deadlines count from `now`; `term` is
  // the term of the image's last entry.
  void OnRestored(raft::NodeId n, const kv::Store& kv, raft::Term term, TimePoint now);
  void OnStop(raft::NodeId n);
  // Node `n` applied `entries` at `now`; `kv` reflects them. (The driver's
  // Lessor is read only to say more in a failure report.)
  void OnApplied(raft::NodeId n, const server::Driver& driver, std::span<const raft::Entry> entries,
                 const kv::Store& kv, TimePoint now);
  // Node `n`'s driver is about to tick.
  void BeforeTick(raft::NodeId n, const server::Driver& driver);
  // Node `n`'s driver ticked at `now` (its expiries, if any, are proposed).
  void AfterTick(raft::NodeId n, const server::Driver& driver, const kv::Store& kv, TimePoint now);

  const LeaseStats& stats() const { return stats_; }

 private:
  struct Lease {
    uint64_t ttl_ms = 0;
    uint64_t renewed_at = 0;
    std::set<std::string> keys;
  };
  // Lateness: a due lease on a leader, and the index past which its expiry
  // must be applied.
  struct Armed {
    uint64_t renewed_at = 0;
    raft::Index watermark = 0;
    TimePoint deadline;
    TimePoint armed_at;
  };
  struct NodeView {
    raft::Term applied_term = 0;
    // Lease id -> (renewed_at, when this node applied it or restored it).
    std::map<uint64_t, std::pair<uint64_t, TimePoint>> renewed;
    // Before its latest tick: at most this many bytes of the leader's
    // proposals uncommitted (each entry past its commit index counted at
    // the largest size an entry can have).
    uint64_t uncommitted_bound = UINT64_MAX;
    raft::Term armed_term = 0;
    std::map<uint64_t, Armed> armed;
  };

  // The model applies the entry at `e.index` (the first apply anywhere).
  void Model(const raft::Entry& e, TimePoint now);
  void EndLease(uint64_t id);
  void CheckState(raft::NodeId n, const kv::Store& kv, bool against_model);
  void CheckArmed(raft::NodeId n, NodeView& v, const server::Driver& driver, const kv::Store& kv,
                  TimePoint now);
  void Fail(std::string why);

  std::function<void(std::string)> fail_;
  Limits limits_;
  bool failed_ = false;
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, TimePoint>> sent_;  // client -> seq.
  raft::Index frontier_ = 0;  // The last index the model applied.
  std::map<uint64_t, Lease> leases_;
  std::map<std::string, uint64_t> key_lease_;
  std::unordered_map<uint64_t, uint64_t> ttl_of_;         // Every lease ever granted.
  std::unordered_map<uint64_t, TimePoint> renewal_sent_;  // Revision -> its request's send time.
  std::map<raft::NodeId, NodeView> nodes_;
  LeaseStats stats_;
};

}  // namespace raftkv::sim
