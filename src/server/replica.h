// Replica: the Raft driver. It owns the raft::Node and runs it on an
// io_context that one thread runs (the server's, which also serves the peer
// transport), wiring it to the LogStore, the key-value Store and the peer
// transport, and turning client requests into proposals and read barriers.
//
// Threads: every public method may be called from any thread; requests are
// posted to the driver thread and answered through their callback, which
// runs on the driver thread and must be cheap (HTTP sessions post back to
// their own executor). view() is a lock-protected snapshot for any thread.
//
// The driver loop (see log_store.h for the persistence contract):
//   events (peer messages, proposals, reads, ticks) -> node.Step/Propose/...
//   Flush: batch pending reads into one ReadIndex; if no persist is running
//   and the node has a Ready: send the leader's replication messages at once
//   (Raft thesis 10.2.1: a leader may write its log in parallel with
//   replicating it; it counts itself toward a commit only once persisted),
//   hand the Ready to the LogStore, and on completion send the other
//   messages, apply committed entries, release reads, Advance, and maybe
//   snapshot + compact the log.
#pragma once

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kv/command.h"
#include "kv/store.h"
#include "raft/node.h"
#include "server/identity.h"
#include "server/log_store.h"

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
};

struct Outcome {
  Code code = Code::kOk;
  std::string message;
  raft::Index index = 0;  // The applied index, for successful writes and reads.
  bool ok() const { return code == Code::kOk; }
};

using Callback = std::function<void(Outcome)>;

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
  size_t pending_writes = 0;
  size_t pending_reads = 0;
  bool admitted = false;
  std::shared_ptr<const ClusterView> view;
  std::string storage;
  bool storage_durable = false;
  // "ok", or why this node stopped accepting writes ("storage failed: ...").
  std::string health = "ok";
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
  // Writes plus reads waiting on this node.
  uint64_t max_pending_requests = 100000;
};

class Replica {
 public:
  using SendFn = std::function<void(std::vector<raft::Message>)>;
  using PeersFn = std::function<void(const std::map<raft::NodeId, std::string>&)>;
  // Called on the driver thread whenever the membership (as of the commit
  // index) changes.
  using MembersFn = std::function<void(const std::vector<MemberInfo>&)>;

  // `store` and `kv` must outlive the Replica. The node starts from what
  // store->storage() holds (restoring `kv` from its latest snapshot).
  // The driver runs on `io`, which exactly one thread must run (the one that
  // also serves the peer transport: messages reach the node without a hop).
  Replica(ReplicaConfig config, LogStore* store, kv::Store* kv, SendFn send, PeersFn peers,
          MembersFn members, boost::asio::io_context& io);
  ~Replica();
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  // Before Start: makes this fresh node the founding member of a one-node cluster.
  raft::Status Bootstrap();
  // Starts the ticker and the driver loop.
  void Start();
  // Fails every request still waiting (kShuttingDown), stops the driver
  // loop and closes the LogStore. Idempotent; blocks until done on the io
  // thread (so not to be called from it).
  void Stop();

  // Peer messages (from the transport).
  void Receive(std::vector<raft::Message> msgs);
  // Proposes an encoded kv command whose request id is `id`; `done` runs once
  // it is applied (kOk), or fails (kNotLeader, kBusy, kTimeout, kNotCommitted, ...).
  void Propose(std::string command, kv::RequestId id, Callback done);
  // A linearizable read barrier (Raft thesis 6.4): `done` runs with kOk once
  // this node has applied an index at least the leader's commit index at
  // some point after the call; reading the Store then is linearizable.
  void ReadBarrier(Callback done);
  // Leader only: adds `member` as a learner that is promoted once caught up.
  // kOk once the change is applied (or at once if it already is a member
  // with the same addresses). A member restarted on its data directory
  // resumes with its state and is not added again.
  void AddMember(MemberInfo member, Callback done);
  // Leader only: hands leadership to the most up-to-date voter, if any, and
  // waits up to `wait` for it to happen (graceful shutdown). Blocks.
  void TransferLeadershipAway(std::chrono::milliseconds wait);
  void GetStatus(std::function<void(StatusReport)> done);

  std::shared_ptr<const ClusterView> view() const;
  // Any thread: "" while the storage is healthy, else "storage failed: ..."
  // (the node then refuses writes; see OnStorageFailed).
  std::string health() const;
  // Whether this node has been admitted to its cluster (bootstrapped or
  // joined). Set by the Server; shown in /status.
  void set_admitted(bool admitted) { admitted_ = admitted; }
  const MemberInfo& self() const { return config_.self; }
  uint64_t NextSeq() { return seq_.fetch_add(1, std::memory_order_relaxed) + 1; }

 private:
  using Clock = std::chrono::steady_clock;

  struct PendingWrite {
    raft::Index index = 0;
    raft::Term term = 0;
    kv::RequestId id;
    bool conf = false;
    Clock::time_point deadline;
    Callback done;
  };
  struct ReadRound {
    std::vector<Callback> waiters;
    Clock::time_point deadline;
  };

  // Driver thread only from here on.
  void Post(std::function<void()> fn);
  void Schedule();
  void Flush();
  void OnPersisted(raft::Status s);
  void OnStorageFailed(raft::Status s);
  Outcome StorageFailedOutcome() const;
  void OnTick();
  void IssueReads();
  void ServeReadState(const raft::ReadState& rs);
  void CompleteReads();
  void InstallSnapshot(const raft::Snapshot& snap);
  void ApplyEntries(const std::vector<raft::Entry>& entries);
  void ApplyAndRead(const raft::Ready& rd);
  void ApplyConfChange(const raft::Entry& e);
  void ResolveWrites(const raft::Entry& e, const std::vector<kv::Applied>& applied, size_t* cursor);
  void AddPending(PendingWrite w);
  void FailPending(Code code, const std::string& why);
  void FailReads(Code code, const std::string& why);
  void MaybeSnapshot();
  void OnSoftState(const raft::SoftState& ss);
  void MaybePublishView(bool force);
  void LogState();
  bool IsMember(raft::NodeId id) const;
  std::string NameOf(raft::NodeId id) const;
  size_t PendingCount() const;
  [[noreturn]] void Fatal(const std::string& why);

  ReplicaConfig config_;
  LogStore* store_;
  kv::Store* kv_;
  SendFn send_;
  PeersFn peers_;
  MembersFn members_;
  std::atomic<uint64_t> seq_{0};
  std::atomic<bool> admitted_{false};

  boost::asio::io_context& ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  boost::asio::steady_timer ticker_;
  Clock::time_point next_tick_;
  bool started_ = false;
  std::atomic<bool> stopped_{false};

  std::unique_ptr<raft::Node> node_;
  bool flush_scheduled_ = false;
  bool persisting_ = false;
  // Set by Stop() while a persist is outstanding: run once it completes.
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
  uint64_t snapshots_taken_ = 0;
  uint64_t snapshots_installed_ = 0;

  // Writes (and membership changes) waiting to be applied, by serial
  // (= arrival order = deadline order), and the same by log index.
  std::map<uint64_t, PendingWrite> pending_;
  std::multimap<raft::Index, uint64_t> pending_by_index_;
  uint64_t next_serial_ = 1;

  // Reads: the batch for the next ReadIndex, rounds waiting for their
  // ReadState (by context), and rounds waiting for the apply index.
  std::vector<Callback> read_batch_;
  std::map<uint64_t, ReadRound> reads_inflight_;
  std::multimap<raft::Index, ReadRound> reads_ready_;
  uint64_t next_read_ctx_ = 1;
  size_t pending_reads_ = 0;

  mutable std::mutex view_mu_;
  std::shared_ptr<const ClusterView> view_;
  std::string health_;  // Guarded by view_mu_; see health().
};

}  // namespace raftkv::server
