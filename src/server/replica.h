// Replica: the server's Asio shell around the Raft driver (driver.h). It
// runs the Driver on an io_context that one thread runs (the server's, which
// also serves the peer transport, so that messages reach the node without a
// hop), posts every request to that thread, and ticks the driver with a
// fixed-rate timer. All Raft and request logic is in the Driver, which the
// simulator runs too.
//
// Threads: every public method may be called from any thread; requests are
// posted to the driver thread and answered through their callback, which
// runs on the driver thread and must be cheap (HTTP sessions post back to
// their own executor). view() is a lock-protected snapshot for any thread.
#pragma once

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "server/driver.h"

namespace raftkv::server {

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
  // `feed` (may be null) hears of every change to the store (watches).
  Replica(ReplicaConfig config, LogStore* store, kv::Store* kv, SendFn send, PeersFn peers,
          MembersFn members, boost::asio::io_context& io, ChangeFeed* feed = nullptr);
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
  void AddMember(MemberInfo member, Callback done) { AddMember(std::move(member), true, done); }
  // The membership operations of /v1/members (see Driver: kNotLeader on a
  // follower, kConflict with the reason, else kOk once applied).
  void AddMember(MemberInfo member, bool promote, Callback done);
  void PromoteMember(raft::NodeId id, Callback done);
  void RemoveMember(raft::NodeId id, bool force, Callback done);
  // Leader only: starts handing leadership to `to` (raft::kNoNode: the most
  // up-to-date active voter). kOk once started; kConflict not_voter if `to`
  // is no voter, no_candidate if no voter is active; kNotLeader.
  void TransferLeadership(raft::NodeId to, Callback done);
  // Leader only: hands leadership to the most up-to-date voter, if any, and
  // waits up to `wait` for it to happen (graceful shutdown). Blocks.
  void TransferLeadershipAway(std::chrono::milliseconds wait);
  void GetStatus(std::function<void(StatusReport)> done);
  // The store's image and its revision (Driver::Image), taken on the driver thread.
  void TakeImage(std::function<void(std::string image, uint64_t revision)> done);

  std::shared_ptr<const ClusterView> view() const;
  // Any thread: see Driver::MillisSinceLeaderContact.
  int64_t MillisSinceLeaderContact() const { return driver_->MillisSinceLeaderContact(); }
  // Any thread: the driver's figures for /metrics.
  const DriverMetrics& metrics() const { return driver_->metrics(); }
  // Any thread: "" while the storage is healthy, else "storage failed: ..."
  // (the node then refuses writes; see Driver::OnStorageFailed).
  std::string health() const;
  // Any thread: "" while every background duty works, else why not (a
  // failing snapshot; see Driver::degraded()). The node still serves.
  std::string degraded() const;
  // Whether this node has been admitted to its cluster (bootstrapped or
  // joined). Set by the Server; shown in /status.
  void set_admitted(bool admitted) { admitted_ = admitted; }
  const MemberInfo& self() const { return driver_->self(); }
  // Any thread: see Driver::LeaseRemainingMs.
  std::optional<int64_t> LeaseRemainingMs(uint64_t id) const {
    return driver_->LeaseRemainingMs(id);
  }
  uint64_t NextSeq() { return seq_.fetch_add(1, std::memory_order_relaxed) + 1; }

 private:
  using Clock = std::chrono::steady_clock;

  void Post(std::function<void()> fn);
  void ArmTicker();

  const std::chrono::milliseconds tick_;
  std::atomic<uint64_t> seq_{0};
  std::atomic<bool> admitted_{false};

  boost::asio::io_context& ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  boost::asio::steady_timer ticker_;
  Clock::time_point next_tick_;
  bool started_ = false;
  std::atomic<bool> stopped_{false};
  // Set once in the constructor. Its methods run on the io thread, except
  // view(), health() and self(), which any thread may call.
  std::unique_ptr<Driver> driver_;
};

}  // namespace raftkv::server
