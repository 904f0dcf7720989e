// Lessor: a node's lease deadlines, kept outside the replicated state.
//
// Every node, leader or not, sets a lease's deadline when it applies the
// lease's grant or keepalive: the time of that apply (on the driver's clock)
// plus the TTL. A keepalive is acknowledged only once applied on the node
// that proposed it, and no node applies an entry before it is committed, so
// every node's deadline is at least the client's send time plus the TTL: no
// lease expires early. A new leader continues from the deadlines it computed
// as a follower instead of resetting them to the full TTL (etcd-io/etcd#9888).
// A store restored from a snapshot (startup, or an install from the leader)
// has no apply time for its leases: their deadlines count from the restore.
//
// Only the leader acts on the deadlines (Driver::ProposeExpiries): it takes
// the due leases, proposes a LeaseRevoke(kExpire) naming the revision each
// deadline counts from, and apply ignores a lease renewed since.
//
// Threads: the driver thread calls everything but RemainingMs, which any
// thread may call (GET /v1/leases/<id> on the leader).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kv/command.h"
#include "kv/store.h"

namespace raftkv::server {

class Lessor {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // The store applied a change to lease `c.lease` at `now`.
  void Apply(const kv::LeaseChange& c, TimePoint now);
  // The store was replaced: `leases` is its whole lease table, and every
  // deadline counts from `now`.
  void Reset(const std::vector<kv::LeaseInfo>& leases, TimePoint now);

  // Up to `max` leases whose deadline is at or before `now` and whose expiry
  // is not already proposed, earliest deadline first, each with the revision
  // its deadline counts from. They count as proposed until Settled.
  std::vector<kv::LeaseRef> TakeDue(TimePoint now, size_t max);
  // The expiry proposed for `refs` was applied or failed: a lease among them
  // that still exists, not renewed since, is due again.
  void Settled(const std::vector<kv::LeaseRef>& refs);
  // Forgets every proposal (this node stopped leading).
  void SettleAll();

  // Any thread. Milliseconds from `now` to lease `id`'s deadline (negative
  // once past it); nullopt if this node knows no such lease.
  std::optional<int64_t> RemainingMs(uint64_t id, TimePoint now) const;
  size_t size() const;
  // Leases whose expiry is proposed and not yet settled.
  size_t proposed() const;

 private:
  struct Entry {
    uint64_t renewed_at = 0;
    TimePoint deadline;
    bool proposed = false;  // Out of by_deadline_ while true.
  };
  void Unschedule(uint64_t id, const Entry& e);

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> leases_;
  // The leases not proposed, by deadline.
  std::set<std::pair<TimePoint, uint64_t>> by_deadline_;
  size_t proposed_ = 0;
};

}  // namespace raftkv::server
