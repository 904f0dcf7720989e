// Driver: the Raft driver, free of I/O. It owns the raft::Node and runs it
// against a LogStore (where each Ready is made durable) and the kv::Store
// (where committed entries are applied), and turns client requests into
// proposals and read barriers. It owns every request waiting on the node, the
// read rounds, snapshots of the state machine and apply.
//
// It touches no socket, timer, thread or clock of its own: the harness hands
// it a way to post work to the driver thread, a way to send messages, a clock,
// and calls Tick() at a fixed rate. Two harnesses run it: the server's Asio
// shell (Replica, replica.h) and the deterministic simulator (tests/sim),
// so the code that production runs is the code that the simulator checks.
//
// Threads: every method runs on the driver thread (the one `post` runs work
// on), except view(), health(), degraded() and self(), which any thread may call. Callbacks run
// on the driver thread and must be cheap.
//
// The driver loop (see log_store.h for the persistence contract):
//   events (peer messages, proposals, reads, ticks) -> node.Step/Propose/...
//   Flush (posted, so that every event already queued is stepped first and
//   they all leave in one Ready): batch pending reads into one ReadIndex; if
//   a Ready is on disk, apply what the node committed meanwhile
//   (TakeCommitted); else, if the node has a Ready: send the messages that may
//   leave before it is durable (Raft thesis 10.2.1: a leader writes its log in
//   parallel with replicating it), apply its committed entries (unless it
//   installs a snapshot), and hand it to the LogStore. On completion: install
//   its snapshot, send the other messages, apply (if not done), release
//   reads, Advance, and maybe start a snapshot + compaction of the log, which
//   the LogStore writes in the background (MaybeSnapshot).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kv/command.h"
#include "kv/store.h"
#include "metrics/metrics.h"
#include "raft/node.h"
#include "server/identity.h"
#include "server/lessor.h"
#include "server/log_store.h"
#include "server/pending.h"

namespace raftkv::server {

struct MemberView {
  MemberInfo info;
  raft::MemberRole role = raft::MemberRole::kVoter;
  bool promote = false;
};

// What the HTTP layer needs to route a request without asking the driver.
struct ClusterView {
  raft::NodeId self = raft::kNoNode;
  raft::NodeId leader = raft::kNoNode;
  raft::Role role = raft::Role::kFollower;
  raft::Term term = 0;
  std::vector<MemberView> members;  // As of the commit index.

  const MemberView* Find(raft::NodeId id) const;
  bool IsLeader() const { return role == raft::Role::kLeader; }
};

struct StatusReport {
  raft::NodeStatus node;
  uint64_t revision = 0;
  raft::Index snapshot_index = 0;
  uint64_t snapshots_taken = 0;
  uint64_t snapshots_installed = 0;
  size_t keys = 0;
  size_t leases = 0;
  // Leases whose expiry this node (as leader) proposed, not yet applied.
  size_t lease_expiries_proposed = 0;
  uint64_t leases_expired = 0;  // Expiries this node proposed that ended leases.
  size_t pending_writes = 0;
  size_t pending_reads = 0;
  bool admitted = false;
  std::shared_ptr<const ClusterView> view;
  std::string storage;
  bool storage_durable = false;
  // "ok", or why this node stopped accepting writes ("storage failed: ...").
  std::string health = "ok";
  // "" while healthy; else what works but needs an operator's eye, the node
  // still serving ("snapshot failed ...": see Driver::degraded()).
  std::string degraded;
  // Snapshot attempts that failed since the last one that succeeded, and
  // the last failure ("" once one succeeds).
  uint64_t snapshot_failures = 0;
  std::string snapshot_error;
  // Milliseconds since an answer from each peer last arrived (as the quorum
  // check of RemoveMember counts them).
  std::vector<std::pair<raft::NodeId, int64_t>> peer_heard_ms;
  // The highest commit index this node knows the leader reached: its own, or
  // what the leader's appends and snapshots said (a follower's own commit
  // index trails until it has received the entries).
  raft::Index leader_commit = 0;
};

// What the driver counts for /metrics (docs/metrics.md). Updated on the
// driver thread; any thread may read it.
struct DriverMetrics {
  // A leader other than the last one this node knew (etcd's leader_changes_seen).
  metrics::Counter leader_changes;
  // Writes (Propose) answered with an error, by Code (CodeName).
  std::array<metrics::Counter, kCodeCount> proposals_failed;
  // ReadBarrier: from the call to its answer (ok or not).
  metrics::Histogram read_index;
  // Snapshots of the store that succeeded: serialize and write.
  metrics::Histogram snapshot_save;
  // The lease table's changes as applied here.
  metrics::Counter leases_granted, lease_keepalives, leases_revoked, leases_expired;

  // Leader only: from a heartbeat to its response, per peer.
  std::vector<std::pair<raft::NodeId, metrics::Histogram::Snapshot>> PeerRoundTrips() const;
  void ObservePeerRoundTrip(raft::NodeId peer, std::chrono::nanoseconds rtt);

 private:
  mutable std::mutex mu_;
  std::map<raft::NodeId, std::unique_ptr<metrics::Histogram>> peer_rtt_;  // Guarded by mu_.
};

struct ReplicaConfig {
  MemberInfo self;
  raft::Config raft;  // raft.id is overwritten with self.id.
  std::chrono::milliseconds tick{50};
  std::chrono::milliseconds request_timeout{5000};
  // Take a snapshot every snapshot_entries applied entries, keeping the last
  // snapshot_keep_entries in the log for slightly lagging followers.
  uint64_t snapshot_entries = 100000;
  uint64_t snapshot_keep_entries = 5000;
  // After a failed snapshot the next attempt waits this many ticks, doubled
  // after each further failure up to snapshot_retry_max_ticks, and back to
  // the base after a success.
  uint64_t snapshot_retry_base_ticks = 20;
  uint64_t snapshot_retry_max_ticks = 1200;
  // Writes plus reads waiting on this node.
  uint64_t max_pending_requests = 100000;
  // The leader proposes the expiry of at most this many leases per second
  // (at most kMaxExpiriesPerEntry per entry), so that a mass expiry does not
  // crowd out client writes (etcd: 1000/s).
  uint64_t lease_expiries_per_second = 1000;
  // TEST ONLY, never set in the server: a new leader resets every lease
  // deadline to a full TTL from its election (the bug etcd-io/etcd#9888
  // describes), so that the simulator's lease checker can show it catches
  // it (raftkv-sim --mutate=lease-reset).
  bool unsafe_reset_lease_deadlines_on_election = false;
};

// What a harness may watch (the simulator's checkers; later, metrics). Every
// call is on the driver thread, after the fact.
class DriverObserver {
 public:
  virtual ~DriverObserver() = default;
  // The store applied `entries` (consecutive); it now reflects the last one.
  virtual void OnApplied(std::span<const raft::Entry> entries) { (void)entries; }
  // The store was replaced by the snapshot image at `meta`.
  virtual void OnSnapshotInstalled(const raft::SnapshotMeta& meta) { (void)meta; }
  // The node's leader or role changed (from a Ready, before it is persisted).
  virtual void OnSoftState(const raft::SoftState& ss) { (void)ss; }
};

// Where the driver reports the store's changes: the server's watch history
// (watch/history.h). Calls come from the driver thread, or from the Driver's
// constructor.
class ChangeFeed {
 public:
  virtual ~ChangeFeed() = default;
  // The store applied a batch of committed entries: the revisions
  // (prev_revision, revision], and the changes to keys in apply order.
  virtual void OnChanges(uint64_t prev_revision, uint64_t revision,
                         std::vector<kv::Event> events) = 0;
  // The store was replaced by a snapshot image at `revision`: the stored one
  // at startup (from the constructor), or one installed from the leader.
  virtual void OnRestored(uint64_t revision) = 0;
};

// What the driver needs from its harness.
struct DriverHooks {
  // Runs `fn` on the driver thread later, after the work already queued.
  // Any thread may call it (a LogStore's completion arrives through it).
  std::function<void(std::function<void()>)> post;
  // Sends messages to their peers (best effort, may drop).
  std::function<void(std::vector<raft::Message>)> send;
  // The peers' raft addresses, whenever the membership (as of the commit
  // index) changes; may be empty.
  std::function<void(const std::map<raft::NodeId, std::string>&)> peers;
  // The members, on the same occasions; may be empty.
  std::function<void(const std::vector<MemberInfo>&)> members;
  // The driver's clock, for request deadlines.
  std::function<TimePoint()> now;
  // A corrupt snapshot or a command this version does not know: the node
  // must stop. Logs and exits the process when empty. Must not return.
  std::function<void(const std::string&)> fatal;
  DriverObserver* observer = nullptr;
  // If set, it hears of every change (watches); it must outlive the Driver.
  ChangeFeed* feed = nullptr;
};

class Driver {
 public:
  // `store` and `kv` must outlive the Driver. The node starts from what
  // store->storage() holds (restoring `kv` from its latest snapshot).
  Driver(ReplicaConfig config, LogStore* store, kv::Store* kv, DriverHooks hooks);
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  // Before Start: makes this fresh node the founding member of a one-node cluster.
  raft::Status Bootstrap();
  // Starts the driver loop (the harness calls Tick() from now on).
  void Start();
  // Fails every request still waiting (kShuttingDown), starts no new persist
  // or snapshot and, once none is outstanding, closes the LogStore and runs
  // `closed`.
  void Shutdown(std::function<void()> closed);

  // One tick of the Raft clock (ReplicaConfig::tick long); expires requests.
  void Tick();
  // Peer messages.
  void Receive(std::vector<raft::Message> msgs);
  // Proposes an encoded kv command whose request id is `id`; `done` runs once
  // it is applied (kOk), or fails (kNotLeader, kBusy, kTimeout, kNotCommitted, ...).
  // A refusal (nothing was proposed) is answered before Propose returns.
  void Propose(std::string command, kv::RequestId id, Callback done);
  // A linearizable read barrier (Raft thesis 6.4): `done` runs with kOk once
  // this node has applied an index at least the leader's commit index at
  // some point after the call; reading the Store then is linearizable.
  void ReadBarrier(Callback done);
  // Leader only: adds `member` as a learner, promoted by the leader once
  // caught up if `promote`. kOk once the change is applied (or at once if it
  // already is a member with the same addresses); kConflict member_exists if
  // its id or raft address is a member's with other addresses.
  void AddMember(MemberInfo member, bool promote, Callback done);
  void AddMember(MemberInfo member, Callback done) { AddMember(std::move(member), true, done); }
  // Leader only: makes learner `id` a voter; kOk once applied. kConflict
  // not_learner, or learner_not_caught_up unless its log holds 90% of the
  // leader's (etcd's rule).
  void PromoteMember(raft::NodeId id, Callback done);
  // Leader only: removes member `id`; kOk once the change is applied. Unless
  // `force`, kConflict would_lose_quorum when the voters left that this
  // leader heard from within an election timeout (itself included) would
  // not be a majority of the voters left. A leader elected less than an
  // election timeout ago has not heard every voter yet (a vote's answer waits
  // for its fsync): it checks again on each tick until then.
  void RemoveMember(raft::NodeId id, bool force, Callback done);
  void RemoveMember(raft::NodeId id, Callback done) { RemoveMember(id, true, std::move(done)); }
  // Leader only: starts handing leadership to `to` (Raft thesis 3.10).
  raft::Status TransferLeadership(raft::NodeId to);
  // Whether `id` answered this node within an election timeout.
  bool PeerActive(raft::NodeId id) const;
  // Leader only: starts handing leadership to the most up-to-date voter that
  // is active; false if there is none (or this node does not lead).
  bool TransferLeadershipAway();
  StatusReport Status() const;
  // The store's snapshot image (docs/wire-format.md section 3) and its
  // revision: a backup (GET /v1/snapshot). Serializes on the driver thread.
  std::string Image(uint64_t* revision) const {
    *revision = kv_->revision();
    return kv_->Snapshot();
  }

  // Any thread.
  std::shared_ptr<const ClusterView> view() const;
  // Any thread: how long ago this node last heard from the leader it follows,
  // in milliseconds (by hooks.now); 0 on the leader itself (which steps down
  // after an election timeout without a quorum); INT64_MAX if it never has.
  // For stale reads with a bound (GET ?stale&max_staleness=2s).
  int64_t MillisSinceLeaderContact() const;
  // Any thread: milliseconds until lease `id`'s deadline on this node
  // (negative once past it: its expiry is on its way), nullopt if unknown.
  std::optional<int64_t> LeaseRemainingMs(uint64_t id) const;
  // Any thread: "" while the storage is healthy, else "storage failed: ..."
  // (the node then refuses writes; see OnStorageFailed).
  std::string health() const;
  // Any thread: "" while every background duty works, else why not
  // ("snapshot failed ..."). The node still serves reads and writes; its log
  // grows until a snapshot succeeds (retried with back-off).
  std::string degraded() const;

  // For harnesses that check the node (the simulator): read only.
  const raft::Node& node() const { return *node_; }
  // Membership as of the applied index.
  const raft::ConfState& conf_applied() const { return conf_applied_; }
  const MemberInfo& self() const { return config_.self; }
  const Lessor& lessor() const { return lessor_; }
  // Any thread.
  const DriverMetrics& metrics() const { return metrics_; }

  static constexpr size_t kMaxExpiriesPerEntry = 1000;

 private:
  void Schedule();
  void Flush();
  // hooks_.send, noting when each heartbeat left (peer round trips).
  void Send(std::vector<raft::Message> msgs);
  void OnPersisted(raft::Status s);
  void OnStorageFailed(raft::Status s);
  Outcome StorageFailedOutcome() const;
  // Refuses a new request at once: the node is stopping, frozen or full.
  bool Refuse(const Callback& done);
  void IssueReads();
  void ServeReadState(const raft::ReadState& rs);
  void FailRejectedRead(const std::string& context);
  // The round number of one of this life's read contexts; false for a
  // context of another life (or malformed).
  bool ReadRoundOf(const std::string& context, uint64_t* round) const;
  void CompleteReads();
  void InstallSnapshot(const raft::Snapshot& snap);
  void ApplyEntries(std::span<const raft::Entry> entries);
  void ApplyAndRead(const raft::Ready& rd);
  void ApplyConfChange(const raft::Entry& e);
  // Leader, each tick: proposes the expiry of the leases past their deadline.
  void ProposeExpiries();
  void ResolveWrites(std::span<const raft::Entry> entries, const std::vector<kv::Applied>& applied);
  void ProposeConfChange(const raft::ConfChange& cc, Callback done);
  void FailAll(Code code, const std::string& why);
  void MaybeSnapshot();
  // Milliseconds from `start` to now on the driver's clock.
  double MillisSince(TimePoint start) const;
  void OnSnapshotSaved(raft::Index index, raft::Index compact_to, TimePoint start,
                       double serialize_ms, size_t bytes, raft::Status s);
  // Shutdown's last step, once no persist or snapshot is outstanding.
  void MaybeFinishShutdown();
  void OnSoftState(const raft::SoftState& ss);
  void MaybePublishView(bool force);
  void LogState();
  bool IsMember(raft::NodeId id) const;
  std::string NameOf(raft::NodeId id) const;
  [[noreturn]] void Fatal(const std::string& why);

  ReplicaConfig config_;
  LogStore* store_;
  kv::Store* kv_;
  DriverHooks hooks_;

  std::unique_ptr<raft::Node> node_;
  bool flush_scheduled_ = false;
  bool persisting_ = false;
  bool stopped_ = false;
  // Set by Shutdown() while a persist is outstanding: run once it completes.
  std::function<void()> stop_done_;
  // The LogStore failed a persist: the node is frozen (OnStorageFailed).
  bool storage_failed_ = false;
  raft::Status storage_error_;
  std::optional<raft::Ready> inflight_;
  std::vector<raft::Message> send_after_persist_;
  raft::SoftState soft_;
  bool leader_name_pending_ = false;
  raft::ConfState conf_applied_;  // Membership as of the applied index.
  raft::ConfState conf_published_;
  raft::Index last_snapshot_index_ = 0;
  // The term of the entry at the applied index (kv_->revision()).
  raft::Term applied_term_ = 0;
  uint64_t snapshots_taken_ = 0;
  uint64_t snapshots_installed_ = 0;
  uint64_t ticks_ = 0;
  // A SaveSnapshot is outstanding (at most one).
  bool snapshotting_ = false;
  // Failed snapshot attempts since the last success, the last error, and
  // the tick before which no new attempt starts.
  uint64_t snapshot_failures_ = 0;
  raft::Status snapshot_error_;
  uint64_t snapshot_retry_tick_ = 0;

  DriverMetrics metrics_;
  raft::NodeId last_known_leader_ = raft::kNoNode;
  // When the oldest unanswered heartbeat to each peer left (leader only).
  std::map<raft::NodeId, TimePoint> heartbeat_sent_;
  // When an answer (append or heartbeat response) from each peer last
  // arrived (RemoveMember's quorum check, PeerActive).
  std::map<raft::NodeId, TimePoint> heard_from_;
  // When this node last became leader, and the removals it checks again on
  // each tick until an election timeout after that (RemoveMember).
  TimePoint leader_since_{};
  struct DeferredRemoval {
    raft::NodeId id;
    Callback done;
  };
  std::vector<DeferredRemoval> deferred_removals_;
  // Empty if the voters left without `id` that this leader hears from are a
  // majority of them; otherwise why not.
  std::string QuorumWithout(raft::NodeId id) const;
  void RetryDeferredRemovals();
  // The highest commit index a leader's appends (or snapshot) told this node.
  raft::Index leader_commit_seen_ = 0;

  Lessor lessor_;
  double expiry_budget_ = 0;    // Leases whose expiry may be proposed now.
  raft::Term expiry_term_ = 0;  // The term of the last ProposeExpiries pass as leader.
  uint64_t leases_expired_ = 0;

  PendingWrites writes_;
  PendingReads reads_;
  uint64_t next_read_ctx_ = 1;
  // This life's read contexts carry it (EncodeReadContext in driver.cc).
  uint64_t read_nonce_ = 0;

  mutable std::mutex view_mu_;
  std::shared_ptr<const ClusterView> view_;
  // When a message from the leader this node follows last arrived
  // (hooks.now, nanoseconds since its epoch; 0: never).
  std::atomic<int64_t> leader_contact_ns_{0};
  std::string health_;    // Guarded by view_mu_; see health().
  std::string degraded_;  // Guarded by view_mu_; see degraded().
};

}  // namespace raftkv::server
