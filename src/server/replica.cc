#include "server/replica.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <cstdlib>
#include <future>
#include <thread>

#include "kv/encoding.h"

namespace raftkv::server {

namespace asio = boost::asio;

namespace {

std::string EncodeReadContext(uint64_t ctx) {
  std::string s;
  kv::PutU64(&s, ctx);
  return s;
}

}  // namespace

const MemberView* ClusterView::Find(raft::NodeId id) const {
  for (const MemberView& m : members) {
    if (m.info.id == id) return &m;
  }
  return nullptr;
}

Replica::Replica(ReplicaConfig config, LogStore* store, kv::Store* kv, SendFn send, PeersFn peers,
                 MembersFn members, asio::io_context& io)
    : config_(std::move(config)),
      store_(store),
      kv_(kv),
      send_(std::move(send)),
      peers_(std::move(peers)),
      members_(std::move(members)),
      ioc_(io),
      work_(ioc_.get_executor()),
      ticker_(ioc_) {
  config_.raft.id = config_.self.id;
  store_->Attach([this](std::function<void()> fn) { Post(std::move(fn)); });
  const raft::Snapshot& snap = store_->storage().LatestSnapshot();
  if (!snap.IsEmpty()) {
    raft::Status s = kv_->Restore(snap.data);
    if (!s.ok()) Fatal("restoring the state machine from the stored snapshot: " + s.ToString());
    conf_applied_ = snap.meta.conf;
    last_snapshot_index_ = snap.meta.index;
  }
  node_ = std::make_unique<raft::Node>(config_.raft, &store_->storage());
  soft_ = raft::SoftState{node_->Leader(), node_->role()};
  MaybePublishView(true);
}

Replica::~Replica() { Stop(); }

raft::Status Replica::Bootstrap() {
  raft::Status s = node_->Bootstrap(EncodeMemberContext(config_.self));
  if (s.ok()) spdlog::info("bootstrapping a new one-node cluster");
  return s;
}

void Replica::Start() {
  next_tick_ = Clock::now() + config_.tick;
  ticker_.expires_at(next_tick_);
  ticker_.async_wait([this](boost::system::error_code ec) {
    if (!ec) OnTick();
  });
  Schedule();
  started_ = true;
}

void Replica::Stop() {
  if (stopped_.exchange(true)) return;
  if (started_) {
    std::promise<void> done;
    asio::post(ioc_, [this, &done] {
      ticker_.cancel();
      FailPending(Code::kShuttingDown, "the node is shutting down; the write's outcome is unknown");
      FailReads(Code::kShuttingDown, "the node is shutting down");
      // Flush starts no new persist from now on. One still running must end
      // before the store closes: its completion still sends the votes and
      // acknowledgements that wait for it. After a storage failure nothing
      // is outstanding (the failed completion has run).
      stop_done_ = [this, &done] {
        raft::Status s = store_->Close();
        if (!s.ok()) spdlog::error("closing the log store: {}", s.ToString());
        done.set_value();
      };
      if (!persisting_ || storage_failed_) {
        auto fn = std::move(stop_done_);
        stop_done_ = nullptr;
        fn();
      }
    });
    done.get_future().wait();
    work_.reset();
  }
}

void Replica::Post(std::function<void()> fn) { asio::post(ioc_, std::move(fn)); }

// ---------------------------------------------------------------------------
// Requests (any thread -> driver thread).

void Replica::Receive(std::vector<raft::Message> msgs) {
  asio::post(ioc_, [this, msgs = std::move(msgs)]() mutable {
    // A node whose disk failed takes no further part: it could not persist
    // what the messages ask for, so it neither votes nor acknowledges.
    if (storage_failed_) return;
    for (raft::Message& m : msgs) node_->Step(m);
    Schedule();
  });
}

void Replica::Propose(std::string command, kv::RequestId id, Callback done) {
  asio::post(ioc_, [this, command = std::move(command), id, done = std::move(done)]() mutable {
    if (stopped_) return done(Outcome{Code::kShuttingDown, "the node is shutting down"});
    if (storage_failed_) return done(StorageFailedOutcome());
    if (PendingCount() >= config_.max_pending_requests) {
      return done(Outcome{Code::kBusy, "too many pending requests"});
    }
    raft::Index index = 0;
    raft::Term term = 0;
    raft::Status s = node_->Propose(std::move(command), &index, &term);
    if (!s.ok()) {
      switch (s.code()) {
        case raft::Code::kNotLeader:
          return done(Outcome{Code::kNotLeader, "not the leader"});
        case raft::Code::kEntryTooLarge:
          return done(Outcome{Code::kInvalid, "command too large: " + s.message()});
        case raft::Code::kTooManyUncommitted:
        case raft::Code::kTransferInProgress:
          return done(Outcome{Code::kBusy, s.ToString()});
        default:
          return done(Outcome{Code::kUnavailable, s.ToString()});
      }
    }
    AddPending(PendingWrite{index, term, id, false, Clock::now() + config_.request_timeout,
                            std::move(done)});
    Schedule();
  });
}

void Replica::ReadBarrier(Callback done) {
  asio::post(ioc_, [this, done = std::move(done)]() mutable {
    if (stopped_) return done(Outcome{Code::kShuttingDown, "the node is shutting down"});
    if (storage_failed_) return done(StorageFailedOutcome());
    if (PendingCount() >= config_.max_pending_requests) {
      return done(Outcome{Code::kBusy, "too many pending requests"});
    }
    read_batch_.push_back(std::move(done));
    pending_reads_++;
    Schedule();
  });
}

void Replica::AddMember(MemberInfo member, Callback done) {
  asio::post(ioc_, [this, member = std::move(member), done = std::move(done)]() mutable {
    if (storage_failed_) return done(StorageFailedOutcome());
    if (node_->role() != raft::Role::kLeader) {
      return done(Outcome{Code::kNotLeader, "not the leader"});
    }
    for (const raft::Member& m : node_->conf().members) {
      MemberInfo info;
      DecodeMemberContext(m.context, &info);
      if (m.id == member.id) {
        if (info.raft == member.raft && (member.http.empty() || info.http == member.http)) {
          return done(Outcome{Code::kOk, "already a member"});
        }
        return done(Outcome{Code::kInvalid,
                            "node '" + member.name + "' is already a member with other addresses"});
      }
      if (info.raft == member.raft) {
        return done(Outcome{Code::kInvalid,
                            "address " + member.raft + " is used by member '" + info.name + "'"});
      }
    }
    raft::ConfChange cc{raft::ConfChangeType::kAddLearner, member.id, true,
                        EncodeMemberContext(member)};
    raft::Index index = 0;
    raft::Term term = 0;
    raft::Status s = node_->ProposeConfChange(cc, &index, &term);
    if (!s.ok()) {
      if (s.code() == raft::Code::kNotLeader) return done(Outcome{Code::kNotLeader, s.message()});
      if (s.code() == raft::Code::kInvalidArgument) {
        return done(Outcome{Code::kInvalid, s.message()});
      }
      return done(Outcome{Code::kBusy, s.ToString()});
    }
    spdlog::info("membership: proposing to add learner {} (raft={} http={}) at index {}",
                 member.name, member.raft, member.http, index);
    AddPending(PendingWrite{
        index, term, {}, true, Clock::now() + config_.request_timeout, std::move(done)});
    Schedule();
  });
}

void Replica::TransferLeadershipAway(std::chrono::milliseconds wait) {
  if (stopped_ || !started_) return;
  std::promise<bool> started;
  asio::post(ioc_, [this, &started] {
    if (node_->role() != raft::Role::kLeader) return started.set_value(false);
    raft::NodeStatus st = node_->GetStatus();
    raft::NodeId best = raft::kNoNode;
    raft::Index best_match = 0;
    for (const raft::PeerStatus& p : st.peers) {
      if (p.role == raft::MemberRole::kVoter && p.recent_active && p.match >= best_match) {
        best = p.id;
        best_match = p.match;
      }
    }
    if (best == raft::kNoNode) return started.set_value(false);
    spdlog::info("shutdown: transferring leadership to {}", NameOf(best));
    node_->TransferLeadership(best);
    Schedule();
    started.set_value(true);
  });
  if (!started.get_future().get()) return;
  auto deadline = Clock::now() + wait;
  while (Clock::now() < deadline && view()->IsLeader()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Replica::GetStatus(std::function<void(StatusReport)> done) {
  asio::post(ioc_, [this, done = std::move(done)] {
    StatusReport r;
    r.node = node_->GetStatus();
    r.revision = kv_->revision();
    r.snapshot_index = store_->storage().LatestSnapshot().meta.index;
    r.snapshots_taken = snapshots_taken_;
    r.snapshots_installed = snapshots_installed_;
    r.keys = kv_->size();
    r.pending_writes = pending_.size();
    r.pending_reads = pending_reads_;
    r.admitted = admitted_;
    r.view = view();
    r.storage = store_->Describe();
    r.storage_durable = store_->durable();
    if (storage_failed_) r.health = "storage failed: " + storage_error_.ToString();
    done(std::move(r));
  });
}

std::shared_ptr<const ClusterView> Replica::view() const {
  std::lock_guard lock(view_mu_);
  return view_;
}

// ---------------------------------------------------------------------------
// The driver loop.

void Replica::Schedule() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  // Posting (rather than flushing now) lets every event already queued be
  // stepped first: they all leave in one Ready (batching).
  asio::post(ioc_, [this] {
    flush_scheduled_ = false;
    Flush();
  });
}

void Replica::OnTick() {
  // After a storage failure the node is frozen (see OnPersisted): no
  // election timeouts, no heartbeats; requests still expire below.
  if (!storage_failed_) node_->Tick();
  // Expire what waited too long. Deadlines are in arrival order.
  Clock::time_point now = Clock::now();
  while (!pending_.empty() && pending_.begin()->second.deadline <= now) {
    uint64_t serial = pending_.begin()->first;
    PendingWrite w = std::move(pending_.begin()->second);
    pending_.erase(pending_.begin());
    auto [lo, hi] = pending_by_index_.equal_range(w.index);
    for (auto j = lo; j != hi; ++j) {
      if (j->second == serial) {
        pending_by_index_.erase(j);
        break;
      }
    }
    w.done(Outcome{Code::kTimeout,
                   "timed out after " + std::to_string(config_.request_timeout.count()) +
                       " ms; the write's outcome is unknown (it may still be applied)"});
  }
  while (!reads_inflight_.empty() && reads_inflight_.begin()->second.deadline <= now) {
    ReadRound r = std::move(reads_inflight_.begin()->second);
    reads_inflight_.erase(reads_inflight_.begin());
    pending_reads_ -= r.waiters.size();
    for (Callback& cb : r.waiters) cb(Outcome{Code::kUnavailable, "read timed out: no quorum"});
  }
  for (auto it = reads_ready_.begin(); it != reads_ready_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    pending_reads_ -= it->second.waiters.size();
    for (Callback& cb : it->second.waiters) {
      cb(Outcome{Code::kUnavailable, "read timed out waiting for this node to catch up"});
    }
    it = reads_ready_.erase(it);
  }
  Schedule();
  // Fixed-rate ticks: the next deadline does not drift with handler latency,
  // but a long stall does not cause a burst of catch-up ticks either.
  next_tick_ += config_.tick;
  if (next_tick_ < now) next_tick_ = now + config_.tick;
  ticker_.expires_at(next_tick_);
  ticker_.async_wait([this](boost::system::error_code ec) {
    if (!ec) OnTick();
  });
}

void Replica::Flush() {
  if (!read_batch_.empty()) IssueReads();
  // While this node's Ready is on disk, what the others commit meanwhile (an
  // acknowledgement reaching the leader) is applied and answered now rather
  // than after that unrelated fsync. A frozen node applies nothing.
  if (persisting_ && !stopped_ && !storage_failed_) {
    std::vector<raft::Entry> committed = node_->TakeCommitted();
    if (!committed.empty()) {
      ApplyEntries(committed);
      CompleteReads();
    }
  }
  // Stopping: no new persist (what is not persisted was not acknowledged).
  if (persisting_ || stopped_ || !node_->HasReady()) return;
  inflight_ = node_->GetReady();
  raft::Ready& rd = *inflight_;
  if (rd.soft_state) OnSoftState(*rd.soft_state);
  // The peer map must know a member before the first message to it leaves.
  MaybePublishView(false);
  // A Ready that changes the term or vote holds every message until it is
  // durable: a lone voter becomes leader in the same Ready as its new term,
  // and its first appends (to learners) must not outlive a crash that loses
  // that term.
  std::vector<raft::Message> now;
  // OnPersisted and OnStorageFailed empty it; no persist is outstanding here.
  RAFT_ASSERT(send_after_persist_.empty(), "messages of an earlier Ready still held");
  for (raft::Message& m : rd.messages) {
    bool early = !rd.term_or_vote_changed && raft::MaySendBeforePersist(m.type);
    (early ? now : send_after_persist_).push_back(std::move(m));
  }
  rd.messages.clear();
  if (!now.empty()) send_(std::move(now));
  // Committed entries are durable on a quorum already, so they are applied
  // now, while this Ready's own writes go to disk, as etcd's server does: a
  // write's answer need not wait for an fsync that does not concern it. A
  // crash loses only memory, rebuilt from the log. A snapshot from the
  // leader is the exception: it replaces the state these entries follow, so
  // it is installed, and they applied, once it is stored.
  if (!rd.snapshot) ApplyAndRead(rd);
  persisting_ = true;
  store_->Persist(rd, [this](raft::Status s) { OnPersisted(std::move(s)); });
}

void Replica::ApplyAndRead(const raft::Ready& rd) {
  ApplyEntries(rd.committed_entries);
  for (const raft::ReadState& rs : rd.read_states) ServeReadState(rs);
  CompleteReads();
}

void Replica::OnPersisted(raft::Status s) {
  if (!s.ok()) return OnStorageFailed(std::move(s));
  raft::Ready& rd = *inflight_;
  // 1. A snapshot from the leader replaces the state machine. A streamed
  // one's image is the file its chunks built, now the store's latest.
  if (rd.snapshot) {
    const raft::Snapshot& image =
        rd.snapshot->streamed ? store_->storage().LatestSnapshot() : *rd.snapshot;
    RAFT_ASSERT(image.meta == rd.snapshot->meta,
                "the stored snapshot is not the one the Ready installs, at index " +
                    std::to_string(rd.snapshot->meta.index));
    InstallSnapshot(image);
  }
  // 2. Votes and acknowledgements, now that what they promise is stored.
  if (!send_after_persist_.empty()) send_(std::move(send_after_persist_));
  send_after_persist_.clear();
  // 3. Apply, then release reads, unless done before the write (Flush).
  if (rd.snapshot) ApplyAndRead(rd);
  node_->Advance(rd);
  inflight_.reset();
  persisting_ = false;
  if (stop_done_) {
    // Stop() waited for this persist; it closes the store now.
    auto fn = std::move(stop_done_);
    stop_done_ = nullptr;
    return fn();
  }
  MaybeSnapshot();
  MaybePublishView(false);
  Schedule();
}

void Replica::OnStorageFailed(raft::Status s) {
  // The disk refused this Ready (disk full, I/O error). Nothing it holds may
  // be acknowledged, and the WAL refuses every later write (it never retries
  // after a failed fsync: the page cache state is unknown). The node stays
  // up, frozen: the Ready is never advanced, so no vote, acknowledgement or
  // heartbeat leaves it again, and the others elect a leader without it;
  // writes and linearizable reads are refused, stale reads and /status
  // still answer. An operator frees space or replaces the disk and
  // restarts it; recovery then runs as after a crash.
  storage_failed_ = true;
  storage_error_ = s;
  send_after_persist_.clear();
  spdlog::critical(
      "storage failed: {}; this node no longer accepts writes or takes part in Raft; "
      "fix the disk and restart it",
      s.ToString());
  FailPending(Code::kStorageFailed,
              "storage failed: " + s.ToString() + "; the write's outcome is unknown");
  FailReads(Code::kStorageFailed, "storage failed: " + s.ToString());
  {
    std::lock_guard lock(view_mu_);
    health_ = "storage failed: " + s.ToString();
  }
  if (stop_done_) {
    auto fn = std::move(stop_done_);
    stop_done_ = nullptr;
    fn();
  }
}

Outcome Replica::StorageFailedOutcome() const {
  return Outcome{Code::kStorageFailed, "storage failed: " + storage_error_.ToString()};
}

std::string Replica::health() const {
  std::lock_guard lock(view_mu_);
  return health_;
}

void Replica::IssueReads() {
  uint64_t ctx = next_read_ctx_++;
  raft::Status s = node_->ReadIndex(EncodeReadContext(ctx));
  if (!s.ok()) {
    Code code = s.code() == raft::Code::kTooManyReads ? Code::kBusy : Code::kUnavailable;
    std::string why = s.code() == raft::Code::kNotLeader ? "no leader" : s.ToString();
    pending_reads_ -= read_batch_.size();
    for (Callback& cb : read_batch_) cb(Outcome{code, why});
    read_batch_.clear();
    return;
  }
  reads_inflight_.emplace(
      ctx, ReadRound{std::move(read_batch_), Clock::now() + config_.request_timeout});
  read_batch_.clear();
}

void Replica::ServeReadState(const raft::ReadState& rs) {
  if (rs.context.size() != 8) return;
  uint64_t ctx = kv::LoadLE(rs.context.data(), 8);
  auto it = reads_inflight_.find(ctx);
  if (it == reads_inflight_.end()) return;  // Timed out or failed already.
  reads_ready_.emplace(rs.index, std::move(it->second));
  reads_inflight_.erase(it);
}

void Replica::CompleteReads() {
  uint64_t applied = kv_->revision();
  while (!reads_ready_.empty() && reads_ready_.begin()->first <= applied) {
    ReadRound r = std::move(reads_ready_.begin()->second);
    reads_ready_.erase(reads_ready_.begin());
    pending_reads_ -= r.waiters.size();
    for (Callback& cb : r.waiters) cb(Outcome{Code::kOk, "", applied});
  }
}

void Replica::InstallSnapshot(const raft::Snapshot& snap) {
  raft::Status s = kv_->Restore(snap.data);
  if (!s.ok()) Fatal("installing the snapshot from the leader: " + s.ToString());
  RAFT_ASSERT(kv_->revision() == snap.meta.index,
              "snapshot image revision " + std::to_string(kv_->revision()) + " != its index " +
                  std::to_string(snap.meta.index));
  conf_applied_ = snap.meta.conf;
  last_snapshot_index_ = snap.meta.index;
  snapshots_installed_++;
  spdlog::info("installed a snapshot from the leader at index {} term {} ({} keys, {} bytes)",
               snap.meta.index, snap.meta.term, kv_->size(), snap.data.size());
  // Writes proposed here at or below the snapshot cannot be matched anymore.
  while (!pending_by_index_.empty() && pending_by_index_.begin()->first <= snap.meta.index) {
    auto it = pending_.find(pending_by_index_.begin()->second);
    pending_by_index_.erase(pending_by_index_.begin());
    if (it == pending_.end()) continue;
    Callback cb = std::move(it->second.done);
    pending_.erase(it);
    cb(Outcome{Code::kTimeout, "leadership changed; the write's outcome is unknown"});
  }
}

void Replica::ApplyEntries(const std::vector<raft::Entry>& entries) {
  if (entries.empty()) return;
  std::vector<kv::Applied> applied;
  raft::Status s = kv_->Apply(entries, &applied);
  if (!s.ok()) Fatal("applying committed entries: " + s.ToString());
  size_t cursor = 0;
  for (const raft::Entry& e : entries) {
    if (e.type == raft::EntryType::kConfChange) ApplyConfChange(e);
    if (!pending_by_index_.empty() && pending_by_index_.begin()->first <= e.index) {
      ResolveWrites(e, applied, &cursor);
    }
  }
}

void Replica::ResolveWrites(const raft::Entry& e, const std::vector<kv::Applied>& applied,
                            size_t* cursor) {
  // The request id of the command applied at e.index, if it is one.
  const kv::RequestId* id = nullptr;
  while (*cursor < applied.size() && applied[*cursor].index < e.index) (*cursor)++;
  if (*cursor < applied.size() && applied[*cursor].index == e.index) id = &applied[*cursor].id;
  // Pending entries below e.index were skipped (none should be: indexes are
  // applied without gaps); those at it are decided by the term (Log
  // Matching, Raft paper 5.3: the entry committed at an index is the one
  // proposed there in that term).
  while (!pending_by_index_.empty() && pending_by_index_.begin()->first <= e.index) {
    auto by_index = pending_by_index_.begin();
    auto it = pending_.find(by_index->second);
    bool at = by_index->first == e.index;
    pending_by_index_.erase(by_index);
    if (it == pending_.end()) continue;
    PendingWrite w = std::move(it->second);
    pending_.erase(it);
    if (!at) {
      w.done(Outcome{Code::kTimeout, "the write's outcome is unknown"});
    } else if (w.term == e.term) {
      RAFT_ASSERT(w.conf || (id != nullptr && *id == w.id),
                  "entry " + std::to_string(e.index) + " applied with another request id");
      w.done(Outcome{Code::kOk, "", e.index});
    } else {
      w.done(Outcome{Code::kNotCommitted,
                     "leadership changed before the write committed; it was not applied"});
    }
  }
}

void Replica::ApplyConfChange(const raft::Entry& e) {
  raft::ConfChange cc;
  RAFT_ASSERT(raft::DecodeConfChange(e.data, &cc),
              "malformed conf change at " + std::to_string(e.index));
  if (!raft::ApplyConfChange(cc, &conf_applied_)) return;  // A no-op on every node alike.
  switch (cc.type) {
    case raft::ConfChangeType::kAddLearner: {
      MemberInfo info;
      DecodeMemberContext(cc.context, &info);
      const raft::Member* m = conf_applied_.Find(cc.node);
      spdlog::info("membership: added {} {} (raft={} http={}) at index {}",
                   m && m->role == raft::MemberRole::kVoter ? "voter" : "learner", info.name,
                   info.raft, info.http, e.index);
      break;
    }
    case raft::ConfChangeType::kPromoteLearner:
      spdlog::info("membership: promoted {} to voter at index {}", NameOf(cc.node), e.index);
      break;
    case raft::ConfChangeType::kRemoveNode:
      spdlog::info("membership: removed {:x} at index {}", cc.node, e.index);
      break;
  }
}

void Replica::AddPending(PendingWrite w) {
  uint64_t serial = next_serial_++;
  pending_by_index_.emplace(w.index, serial);
  pending_.emplace(serial, std::move(w));
}

void Replica::FailPending(Code code, const std::string& why) {
  std::map<uint64_t, PendingWrite> pending;
  pending.swap(pending_);
  pending_by_index_.clear();
  for (auto& [serial, w] : pending) w.done(Outcome{code, why});
}

void Replica::FailReads(Code code, const std::string& why) {
  std::vector<Callback> all = std::move(read_batch_);
  read_batch_.clear();
  for (auto& [ctx, r] : reads_inflight_) {
    for (Callback& cb : r.waiters) all.push_back(std::move(cb));
  }
  reads_inflight_.clear();
  for (auto& [index, r] : reads_ready_) {
    for (Callback& cb : r.waiters) all.push_back(std::move(cb));
  }
  reads_ready_.clear();
  pending_reads_ = 0;
  for (Callback& cb : all) cb(Outcome{code, why});
}

size_t Replica::PendingCount() const { return pending_.size() + pending_reads_; }

void Replica::MaybeSnapshot() {
  if (storage_failed_) return;
  uint64_t applied = kv_->revision();
  if (config_.snapshot_entries == 0 || applied < last_snapshot_index_ + config_.snapshot_entries) {
    return;
  }
  // A follower may have applied (TakeCommitted) entries that its disk does
  // not hold yet; the snapshot waits for them rather than fail in TermAt.
  if (applied > store_->storage().LastIndex()) return;
  // The driver thread (and, with one io thread, HTTP) waits for all of this:
  // the log line says for how long.
  Clock::time_point start = Clock::now();
  std::string data = kv_->Snapshot();
  size_t bytes = data.size();
  raft::Index compact_to =
      applied > config_.snapshot_keep_entries ? applied - config_.snapshot_keep_entries : 0;
  raft::Status s = store_->SaveSnapshot(applied, conf_applied_, std::move(data), compact_to);
  if (!s.ok()) {
    spdlog::warn("snapshot at index {} failed: {}", applied, s.ToString());
    return;
  }
  last_snapshot_index_ = applied;
  snapshots_taken_++;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
  spdlog::info(
      "snapshot at index {} ({} keys, {} bytes) in {:.1f} ms; log compacted through index {}",
      applied, kv_->size(), bytes, us / 1000.0, compact_to);
}

void Replica::OnSoftState(const raft::SoftState& ss) {
  bool leader_changed = ss.leader != soft_.leader || ss.role != soft_.role;
  soft_ = ss;
  LogState();
  if (leader_changed && !reads_inflight_.empty()) {
    // Their ReadIndex went to a leader that is gone; the core dropped them.
    std::vector<Callback> failed;
    for (auto& [ctx, r] : reads_inflight_) {
      for (Callback& cb : r.waiters) failed.push_back(std::move(cb));
    }
    reads_inflight_.clear();
    pending_reads_ -= failed.size();
    for (Callback& cb : failed) cb(Outcome{Code::kUnavailable, "leadership changed; retry"});
  }
  MaybePublishView(true);
}

void Replica::MaybePublishView(bool force) {
  const raft::ConfState& conf = node_->conf();
  bool conf_changed = conf != conf_published_;
  if (!force && !conf_changed) return;
  auto v = std::make_shared<ClusterView>();
  v->self = config_.self.id;
  v->leader = soft_.leader;
  v->role = soft_.role;
  v->term = node_->term();
  std::map<raft::NodeId, std::string> peers;
  for (const raft::Member& m : conf.members) {
    MemberView mv;
    mv.info.id = m.id;
    DecodeMemberContext(m.context, &mv.info);
    mv.role = m.role;
    mv.promote = m.promote;
    if (!mv.info.raft.empty()) peers[m.id] = mv.info.raft;
    v->members.push_back(std::move(mv));
  }
  std::vector<MemberView> v_members = v->members;
  {
    std::lock_guard lock(view_mu_);
    view_ = std::move(v);
  }
  if (conf_changed) {
    conf_published_ = conf;
    peers_(peers);
    if (members_) {
      std::vector<MemberInfo> infos;
      for (const MemberView& mv : v_members) infos.push_back(mv.info);
      members_(infos);
    }
    // A node that learns the membership only from its leader logs the
    // leader's name once it knows it.
    if (leader_name_pending_ && IsMember(soft_.leader)) LogState();
  }
}

bool Replica::IsMember(raft::NodeId id) const {
  if (id == config_.self.id) return true;
  for (const raft::Member& m : node_->conf().members) {
    if (m.id == id) return true;
  }
  return false;
}

void Replica::LogState() {
  // The original (hashicorp/raft) logged role changes this way.
  leader_name_pending_ = soft_.leader != raft::kNoNode && !IsMember(soft_.leader);
  spdlog::info("state={} leader={} term={}", raft::RoleName(soft_.role),
               soft_.leader == raft::kNoNode ? "" : NameOf(soft_.leader), node_->term());
}

std::string Replica::NameOf(raft::NodeId id) const {
  if (id == config_.self.id) return config_.self.name;
  for (const raft::Member& m : node_->conf().members) {
    if (m.id != id) continue;
    MemberInfo info;
    if (DecodeMemberContext(m.context, &info) && !info.name.empty()) return info.name;
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(id));
  return buf;
}

void Replica::Fatal(const std::string& why) {
  spdlog::critical("{}; stopping", why);
  spdlog::default_logger()->flush();
  std::_Exit(1);
}

}  // namespace raftkv::server
