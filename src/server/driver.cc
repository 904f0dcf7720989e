#include "server/driver.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <utility>

#include "kv/encoding.h"

namespace raftkv::server {

namespace {

// A read round's context: this life's nonce, then the round's number. A
// leader's answer can arrive after the node restarted (a duplicated, delayed
// message); the nonce keeps it from releasing a round of the new life that
// happens to have the same number.
std::string EncodeReadContext(uint64_t nonce, uint64_t round) {
  std::string s;
  kv::PutU64(&s, nonce);
  kv::PutU64(&s, round);
  return s;
}

// SplitMix64's finalizer: a nonce per life from the Raft seed, which the
// server draws at random and the simulator anew for every incarnation.
uint64_t MixSeed(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

const MemberView* ClusterView::Find(raft::NodeId id) const {
  for (const MemberView& m : members) {
    if (m.info.id == id) return &m;
  }
  return nullptr;
}

Driver::Driver(ReplicaConfig config, LogStore* store, kv::Store* kv, DriverHooks hooks)
    : config_(std::move(config)), store_(store), kv_(kv), hooks_(std::move(hooks)) {
  RAFT_ASSERT(hooks_.post && hooks_.send && hooks_.now, "a driver needs post, send and now");
  config_.raft.id = config_.self.id;
  read_nonce_ = MixSeed(config_.raft.seed);
  store_->Attach(hooks_.post);
  const raft::Snapshot& snap = store_->storage().LatestSnapshot();
  if (!snap.IsEmpty()) {
    raft::Status s = kv_->Restore(snap.data);
    if (!s.ok()) Fatal("restoring the state machine from the stored snapshot: " + s.ToString());
    conf_applied_ = snap.meta.conf;
    last_snapshot_index_ = snap.meta.index;
    applied_term_ = snap.meta.term;
  }
  lessor_.Reset(kv_->Leases(), hooks_.now());
  if (hooks_.feed) hooks_.feed->OnRestored(kv_->revision());
  node_ = std::make_unique<raft::Node>(config_.raft, &store_->storage());
  soft_ = raft::SoftState{node_->Leader(), node_->role()};
  MaybePublishView(true);
}

raft::Status Driver::Bootstrap() {
  raft::Status s = node_->Bootstrap(EncodeMemberContext(config_.self));
  if (s.ok()) spdlog::info("bootstrapping a new one-node cluster");
  return s;
}

void Driver::Start() { Schedule(); }

void Driver::Shutdown(std::function<void()> closed) {
  RAFT_ASSERT(!stopped_, "Shutdown called twice");
  stopped_ = true;
  FailAll(Code::kShuttingDown, "the node is shutting down");
  // Flush starts no new persist, MaybeSnapshot no new snapshot, from now
  // on. One still running must end before the store closes: a persist's
  // completion still sends the votes and acknowledgements that wait for it,
  // and a snapshot's runs on the store.
  stop_done_ = [this, closed = std::move(closed)] {
    raft::Status s = store_->Close();
    if (!s.ok()) spdlog::error("closing the log store: {}", s.ToString());
    closed();
  };
  MaybeFinishShutdown();
}

void Driver::MaybeFinishShutdown() {
  // After a storage failure the persist is not outstanding: its failed
  // completion has run.
  if (!stop_done_ || (persisting_ && !storage_failed_) || snapshotting_) return;
  auto fn = std::move(stop_done_);
  stop_done_ = nullptr;
  fn();
}

// ---------------------------------------------------------------------------
// Requests.

bool Driver::Refuse(const Callback& done) {
  if (stopped_) {
    done(Outcome{Code::kShuttingDown, "the node is shutting down"});
  } else if (storage_failed_) {
    done(StorageFailedOutcome());
  } else if (writes_.size() + reads_.size() >= config_.max_pending_requests) {
    done(Outcome{Code::kBusy, "too many pending requests"});
  } else {
    return false;
  }
  return true;
}

void Driver::Receive(std::vector<raft::Message> msgs) {
  // A node whose disk failed takes no further part: it could not persist
  // what the messages ask for, so it neither votes nor acknowledges.
  if (storage_failed_) return;
  const TimePoint now = hooks_.now();
  for (raft::Message& m : msgs) {
    switch (m.type) {
      case raft::MessageType::kHeartbeatResp:
        if (auto it = heartbeat_sent_.find(m.from); it != heartbeat_sent_.end()) {
          // A response after an outage times the outage, not the link.
          if (now - it->second <= config_.tick * config_.raft.election_timeout_ticks) {
            metrics_.ObservePeerRoundTrip(m.from, now - it->second);
          }
          heartbeat_sent_.erase(it);
        }
        [[fallthrough]];
      case raft::MessageType::kAppResp:
      case raft::MessageType::kSnapResp:
      case raft::MessageType::kVoteResp:
      case raft::MessageType::kPreVoteResp:
        // Only answers count as a peer that works (PeerActive): a peer cut off
        // from the leader still sends vote requests. Vote answers count, so that
        // a leader just elected (by a transfer, say) knows its voters at once.
        heard_from_[m.from] = now;
        break;
      case raft::MessageType::kApp:
        // The leader's commit index, which a follower's own trails until it
        // has received the entries (/ready's catching_up).
        leader_commit_seen_ = std::max(leader_commit_seen_, m.commit);
        break;
      case raft::MessageType::kSnap:
        leader_commit_seen_ = std::max(leader_commit_seen_, m.snap_meta.index);
        break;
      default:
        break;
    }
    node_->Step(m);
  }
  const raft::NodeId leader = node_->Leader();
  if (leader != raft::kNoNode && leader != config_.self.id) {
    for (const raft::Message& m : msgs) {
      if (m.from == leader && m.term == node_->term()) {
        leader_contact_ns_.store(
            std::chrono::duration_cast<std::chrono::nanoseconds>(hooks_.now().time_since_epoch())
                .count(),
            std::memory_order_release);
        break;
      }
    }
  }
  Schedule();
}

int64_t Driver::MillisSinceLeaderContact() const {
  if (view()->IsLeader()) return 0;
  int64_t at = leader_contact_ns_.load(std::memory_order_acquire);
  if (at == 0) return INT64_MAX;
  int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(hooks_.now().time_since_epoch()).count();
  return std::max<int64_t>(0, (now - at) / 1'000'000);
}

std::vector<std::pair<raft::NodeId, metrics::Histogram::Snapshot>> DriverMetrics::PeerRoundTrips()
    const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<raft::NodeId, metrics::Histogram::Snapshot>> out;
  for (const auto& [id, h] : peer_rtt_) out.emplace_back(id, h->Read());
  return out;
}

void DriverMetrics::ObservePeerRoundTrip(raft::NodeId peer, std::chrono::nanoseconds rtt) {
  std::lock_guard lock(mu_);
  auto& h = peer_rtt_[peer];
  if (!h) h = std::make_unique<metrics::Histogram>();
  h->Observe(rtt);
}

void Driver::Propose(std::string command, kv::RequestId id, Callback done) {
  done = [this, done = std::move(done)](Outcome o) {
    if (!o.ok()) metrics_.proposals_failed[static_cast<size_t>(o.code)].Add();
    done(std::move(o));
  };
  if (Refuse(done)) return;
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
  writes_.Add(PendingWrite{index, term, id, false, hooks_.now() + config_.request_timeout,
                           std::move(done)});
  Schedule();
}

void Driver::ReadBarrier(Callback done) {
  done = [this, start = hooks_.now(), done = std::move(done)](Outcome o) {
    metrics_.read_index.Observe(hooks_.now() - start);
    done(std::move(o));
  };
  if (Refuse(done)) return;
  reads_.Queue(std::move(done));
  Schedule();
}

void Driver::AddMember(MemberInfo member, bool promote, Callback done) {
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
      return done(Conflict("member_exists",
                           "node '" + member.name + "' is already a member with other addresses"));
    }
    if (info.raft == member.raft) {
      return done(Conflict("member_exists",
                           "address " + member.raft + " is used by member '" + info.name + "'"));
    }
  }
  ProposeConfChange(raft::ConfChange{raft::ConfChangeType::kAddLearner, member.id, promote,
                                     EncodeMemberContext(member)},
                    std::move(done));
}

void Driver::PromoteMember(raft::NodeId id, Callback done) {
  if (storage_failed_) return done(StorageFailedOutcome());
  if (node_->role() != raft::Role::kLeader) {
    return done(Outcome{Code::kNotLeader, "not the leader"});
  }
  raft::NodeStatus st = node_->GetStatus();
  const raft::Member* m = st.conf.Find(id);
  if (m == nullptr) return done(Conflict("not_found", "no member " + NameOf(id)));
  if (m->role != raft::MemberRole::kLearner) {
    return done(Conflict("not_learner", NameOf(id) + " is a voter"));
  }
  raft::Index match = 0;
  for (const raft::PeerStatus& p : st.peers) {
    if (p.id == id) match = p.match;
  }
  // etcd's rule (isLearnerReady): the learner holds 90% of the leader's log.
  if (match * 10 < st.last_index * 9) {
    return done(Conflict("learner_not_caught_up", NameOf(id) + " holds " + std::to_string(match) +
                                                      " of " + std::to_string(st.last_index) +
                                                      " entries"));
  }
  ProposeConfChange(raft::ConfChange{raft::ConfChangeType::kPromoteLearner, id, false, ""},
                    std::move(done));
}

void Driver::RemoveMember(raft::NodeId id, bool force, Callback done) {
  if (storage_failed_) return done(StorageFailedOutcome());
  if (!force && node_->role() == raft::Role::kLeader) {
    if (std::string why = QuorumWithout(id); !why.empty()) {
      if (hooks_.now() < leader_since_ + config_.tick * config_.raft.election_timeout_ticks) {
        deferred_removals_.push_back(DeferredRemoval{id, std::move(done)});
        return;
      }
      return done(Conflict("would_lose_quorum", why));
    }
  }
  ProposeConfChange(raft::ConfChange{raft::ConfChangeType::kRemoveNode, id, false, ""},
                    std::move(done));
}

std::string Driver::QuorumWithout(raft::NodeId id) const {
  // Without the removed member, the voters this leader hears from must
  // still be a majority, or the cluster stops taking writes.
  size_t voters = 0, active = 0;
  for (const raft::Member& m : node_->conf().members) {
    if (m.role != raft::MemberRole::kVoter || m.id == id) continue;
    voters++;
    if (m.id == config_.self.id || PeerActive(m.id)) active++;
  }
  if (voters == 0 || active >= voters / 2 + 1) return "";
  return "without " + NameOf(id) + ", " + std::to_string(active) + " of the " +
         std::to_string(voters) + " voters left answer the leader; a majority is " +
         std::to_string(voters / 2 + 1) + " (force it with ?force)";
}

void Driver::RetryDeferredRemovals() {
  std::vector<DeferredRemoval> waiting = std::move(deferred_removals_);
  deferred_removals_.clear();
  // RemoveMember defers again while the leader is new, and decides after.
  for (DeferredRemoval& d : waiting) RemoveMember(d.id, false, std::move(d.done));
}

void Driver::ProposeConfChange(const raft::ConfChange& cc, Callback done) {
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
  if (cc.type == raft::ConfChangeType::kAddLearner) {
    MemberInfo info;
    DecodeMemberContext(cc.context, &info);
    spdlog::info("membership: proposing to add learner {} (raft={} http={}) at index {}", info.name,
                 info.raft, info.http, index);
  } else {
    spdlog::info("membership: proposing to {} {} at index {}",
                 cc.type == raft::ConfChangeType::kPromoteLearner ? "promote" : "remove",
                 NameOf(cc.node), index);
  }
  writes_.Add(
      PendingWrite{index, term, {}, true, hooks_.now() + config_.request_timeout, std::move(done)});
  Schedule();
}

raft::Status Driver::TransferLeadership(raft::NodeId to) {
  raft::Status s = node_->TransferLeadership(to);
  Schedule();
  return s;
}

bool Driver::PeerActive(raft::NodeId id) const {
  auto it = heard_from_.find(id);
  return it != heard_from_.end() &&
         hooks_.now() - it->second <= config_.tick * config_.raft.election_timeout_ticks;
}

bool Driver::TransferLeadershipAway() {
  if (node_->role() != raft::Role::kLeader) return false;
  raft::NodeStatus st = node_->GetStatus();
  raft::NodeId best = raft::kNoNode;
  raft::Index best_match = 0;
  for (const raft::PeerStatus& p : st.peers) {
    // Active as the removal's quorum check and a chosen transfer count it: the voter's
    // answers reached this leader within an election timeout.
    if (p.role == raft::MemberRole::kVoter && PeerActive(p.id) && p.match >= best_match) {
      best = p.id;
      best_match = p.match;
    }
  }
  if (best == raft::kNoNode) return false;
  spdlog::info("transferring leadership to {}", NameOf(best));
  return TransferLeadership(best).ok();
}

StatusReport Driver::Status() const {
  StatusReport r;
  r.node = node_->GetStatus();
  r.revision = kv_->revision();
  r.snapshot_index = store_->storage().LatestSnapshot().meta.index;
  r.leader_commit = std::max(leader_commit_seen_, r.node.commit);
  for (const auto& [id, t] : heard_from_) {
    r.peer_heard_ms.emplace_back(
        id, std::chrono::duration_cast<std::chrono::milliseconds>(hooks_.now() - t).count());
  }
  r.snapshots_taken = snapshots_taken_;
  r.snapshots_installed = snapshots_installed_;
  r.keys = kv_->size();
  r.leases = kv_->lease_count();
  r.lease_expiries_proposed = lessor_.proposed();
  r.leases_expired = leases_expired_;
  r.pending_writes = writes_.size();
  r.pending_reads = reads_.size();
  r.view = view();
  r.storage = store_->Describe();
  r.storage_durable = store_->durable();
  if (storage_failed_) r.health = "storage failed: " + storage_error_.ToString();
  r.degraded = degraded();
  r.snapshot_failures = snapshot_failures_;
  if (snapshot_failures_ > 0) r.snapshot_error = snapshot_error_.ToString();
  return r;
}

std::shared_ptr<const ClusterView> Driver::view() const {
  std::lock_guard lock(view_mu_);
  return view_;
}

std::string Driver::health() const {
  std::lock_guard lock(view_mu_);
  return health_;
}

std::string Driver::degraded() const {
  std::lock_guard lock(view_mu_);
  return degraded_;
}

// ---------------------------------------------------------------------------
// The driver loop.

void Driver::Schedule() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  // Posting (rather than flushing now) lets every event already queued be
  // stepped first: they all leave in one Ready (batching).
  hooks_.post([this] {
    flush_scheduled_ = false;
    Flush();
  });
}

void Driver::Tick() {
  // After a storage failure the node is frozen (see OnPersisted): no
  // election timeouts, no heartbeats; requests still expire below.
  if (!storage_failed_) node_->Tick();
  ticks_++;
  // A snapshot retried after a failure is due even if no write comes.
  if (snapshot_failures_ > 0 && ticks_ >= snapshot_retry_tick_) MaybeSnapshot();
  TimePoint now = hooks_.now();
  for (PendingWrite& w : writes_.TakeExpired(now)) {
    w.done(Outcome{Code::kTimeout,
                   "timed out after " + std::to_string(config_.request_timeout.count()) +
                       " ms; the write's outcome is unknown (it may still be applied)"});
  }
  auto [issued, released] = reads_.TakeExpired(now);
  Answer(&issued, Outcome{Code::kUnavailable, "read timed out: no quorum"});
  Answer(&released,
         Outcome{Code::kUnavailable, "read timed out waiting for this node to catch up"});
  ProposeExpiries();
  if (!deferred_removals_.empty()) RetryDeferredRemovals();
  Schedule();
}

void Driver::ProposeExpiries() {
  const double rate = static_cast<double>(config_.lease_expiries_per_second);
  const double per_tick = rate * std::chrono::duration<double>(config_.tick).count();
  expiry_budget_ = std::min(std::max(rate, 1.0), expiry_budget_ + per_tick);
  // Only a leader whose term's no-op is applied: it then has applied every
  // renewal committed before its term, so its deadlines are at least the
  // ones the previous leader had (docs/leases.md).
  if (stopped_ || storage_failed_ || node_->role() != raft::Role::kLeader ||
      applied_term_ != node_->term() || lessor_.size() == 0) {
    return;
  }
  TimePoint now = hooks_.now();
  if (expiry_term_ != node_->term()) {
    // Expiries proposed in an earlier term (this node led, lost, and leads
    // again) may never commit: take them up now rather than when their
    // writes time out (seeds 32 and 380 of the simulator's lease checker).
    // A stale one that still commits is a no-op for a lease renewed since.
    expiry_term_ = node_->term();
    lessor_.SettleAll();
    if (config_.unsafe_reset_lease_deadlines_on_election) {
      // TEST KNOB (ReplicaConfig): the wrong behaviour the simulator must catch.
      lessor_.Reset(kv_->Leases(), now);
    }
  }
  // An expiry entry must fit max_entry_bytes: 16 bytes per lease.
  const size_t fit = std::max<size_t>(1, (config_.raft.max_entry_bytes - 64) / 16);
  while (expiry_budget_ >= 1) {
    size_t max = std::min({kMaxExpiriesPerEntry, fit, static_cast<size_t>(expiry_budget_)});
    std::vector<kv::LeaseRef> due = lessor_.TakeDue(now, max);
    if (due.empty()) return;
    expiry_budget_ -= static_cast<double>(due.size());
    kv::RequestId id{config_.self.id, 0};
    std::string command = kv::EncodeLeaseRevoke(id, kv::RevokeReason::kExpire, due);
    // Propose answers only a refusal before it returns.
    auto answered = std::make_shared<bool>(false);
    Propose(std::move(command), id, [this, due, answered](const Outcome& o) {
      *answered = true;
      if (o.ok() && o.result) leases_expired_ += due.size() - o.result->not_found.size();
      lessor_.Settled(due);
    });
    // Refused (busy, a transfer under way): the next tick tries again.
    if (*answered) return;
  }
}

std::optional<int64_t> Driver::LeaseRemainingMs(uint64_t id) const {
  return lessor_.RemainingMs(id, hooks_.now());
}

void Driver::Flush() {
  if (reads_.HasBatch()) IssueReads();
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
  if (!now.empty()) Send(std::move(now));
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

void Driver::Send(std::vector<raft::Message> msgs) {
  for (const raft::Message& m : msgs) {
    if (m.type == raft::MessageType::kHeartbeat) heartbeat_sent_.try_emplace(m.to, hooks_.now());
  }
  hooks_.send(std::move(msgs));
}

void Driver::ApplyAndRead(const raft::Ready& rd) {
  ApplyEntries(rd.committed_entries);
  for (const raft::ReadState& rs : rd.read_states) ServeReadState(rs);
  for (const std::string& ctx : rd.rejected_reads) FailRejectedRead(ctx);
  CompleteReads();
}

void Driver::OnPersisted(raft::Status s) {
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
  if (!send_after_persist_.empty()) Send(std::move(send_after_persist_));
  send_after_persist_.clear();
  // 3. Apply, then release reads, unless done before the write (Flush).
  if (rd.snapshot) ApplyAndRead(rd);
  node_->Advance(rd);
  inflight_.reset();
  persisting_ = false;
  if (stop_done_) {
    // Shutdown() waited for this persist; it closes the store now (or once
    // the snapshot being written completes).
    return MaybeFinishShutdown();
  }
  MaybeSnapshot();
  MaybePublishView(false);
  Schedule();
}

void Driver::OnStorageFailed(raft::Status s) {
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
  FailAll(Code::kStorageFailed, "storage failed: " + s.ToString());
  {
    std::lock_guard lock(view_mu_);
    health_ = "storage failed: " + s.ToString();
  }
  MaybeFinishShutdown();
}

Outcome Driver::StorageFailedOutcome() const {
  return Outcome{Code::kStorageFailed, "storage failed: " + storage_error_.ToString()};
}

void Driver::IssueReads() {
  uint64_t ctx = next_read_ctx_++;
  std::vector<Callback> batch = reads_.TakeBatch();
  raft::Status s = node_->ReadIndex(EncodeReadContext(read_nonce_, ctx));
  if (!s.ok()) {
    Code code = s.code() == raft::Code::kTooManyReads ? Code::kBusy : Code::kUnavailable;
    std::string why = s.code() == raft::Code::kNotLeader ? "no leader" : s.ToString();
    return Answer(&batch, Outcome{code, why});
  }
  reads_.Issued(ctx, std::move(batch), hooks_.now() + config_.request_timeout);
}

bool Driver::ReadRoundOf(const std::string& context, uint64_t* round) const {
  if (context.size() != 16 || kv::LoadLE(context.data(), 8) != read_nonce_) return false;
  *round = kv::LoadLE(context.data() + 8, 8);
  return true;
}

void Driver::ServeReadState(const raft::ReadState& rs) {
  // Another life's context, or one that timed out or failed already: ignored.
  if (uint64_t round = 0; ReadRoundOf(rs.context, &round)) reads_.Released(round, rs.index);
}

void Driver::FailRejectedRead(const std::string& context) {
  // The leader refused the ReadIndex or dropped it stepping down: no
  // ReadState will come, so the read fails now rather than at its deadline.
  uint64_t round = 0;
  if (!ReadRoundOf(context, &round)) return;
  std::vector<Callback> failed = reads_.TakeIssued(round);
  Answer(&failed, Outcome{Code::kUnavailable, "read refused by the leader; retry"});
}

void Driver::CompleteReads() {
  uint64_t applied = kv_->revision();
  std::vector<Callback> servable = reads_.TakeServable(applied);
  Answer(&servable, Outcome{Code::kOk, "", applied});
}

void Driver::InstallSnapshot(const raft::Snapshot& snap) {
  raft::Status s = kv_->Restore(snap.data);
  if (!s.ok()) Fatal("installing the snapshot from the leader: " + s.ToString());
  RAFT_ASSERT(kv_->revision() == snap.meta.index,
              "snapshot image revision " + std::to_string(kv_->revision()) + " != its index " +
                  std::to_string(snap.meta.index));
  conf_applied_ = snap.meta.conf;
  last_snapshot_index_ = snap.meta.index;
  applied_term_ = snap.meta.term;
  lessor_.Reset(kv_->Leases(), hooks_.now());
  snapshots_installed_++;
  spdlog::info("installed a snapshot from the leader at index {} term {} ({} keys, {} bytes)",
               snap.meta.index, snap.meta.term, kv_->size(), snap.data.size());
  if (hooks_.observer) hooks_.observer->OnSnapshotInstalled(snap.meta);
  if (hooks_.feed) hooks_.feed->OnRestored(snap.meta.index);
  // Writes proposed here at or below the snapshot cannot be matched anymore.
  for (PendingWrite& w : writes_.TakeThrough(snap.meta.index)) {
    w.done(Outcome{Code::kTimeout, "leadership changed; the write's outcome is unknown"});
  }
}

void Driver::ApplyEntries(std::span<const raft::Entry> entries) {
  if (entries.empty()) return;
  std::vector<kv::Applied> applied;
  kv::ApplyOptions options;
  // Only the node a write waits on builds its result (read payloads,
  // previous values); the outcome code is the same everywhere.
  const bool waiting = writes_.AnyThrough(entries.back().index);
  if (waiting) {
    options.want_result = [this](raft::Index i) { return writes_.WaitsAt(i); };
  }
  std::vector<kv::Event> events;
  if (hooks_.feed) options.events = &events;
  std::vector<kv::LeaseChange> lease_changes;
  options.lease_changes = &lease_changes;
  const uint64_t prev_revision = kv_->revision();
  raft::Status s = kv_->Apply(entries, &applied, options);
  if (!s.ok()) Fatal("applying committed entries: " + s.ToString());
  applied_term_ = entries.back().term;
  // Before the writes resolve: a settled expiry must find its leases updated.
  if (!lease_changes.empty()) {
    TimePoint now = hooks_.now();
    for (const kv::LeaseChange& c : lease_changes) {
      lessor_.Apply(c, now);
      switch (c.why) {
        case kv::LeaseChange::Why::kGrant:
          metrics_.leases_granted.Add();
          break;
        case kv::LeaseChange::Why::kKeepAlive:
          metrics_.lease_keepalives.Add();
          break;
        case kv::LeaseChange::Why::kRevoke:
          metrics_.leases_revoked.Add();
          break;
        case kv::LeaseChange::Why::kExpire:
          metrics_.leases_expired.Add();
          break;
      }
    }
  }
  if (hooks_.feed) hooks_.feed->OnChanges(prev_revision, kv_->revision(), std::move(events));
  if (hooks_.observer) hooks_.observer->OnApplied(entries);
  bool conf_changed = false;
  for (const raft::Entry& e : entries) {
    if (e.type == raft::EntryType::kConfChange) {
      ApplyConfChange(e);
      conf_changed = true;
    }
  }
  // A membership change is answered once applied: by then view() shows it
  // (a request that follows the answer must find the new member).
  if (conf_changed) MaybePublishView(false);
  if (waiting) ResolveWrites(entries, applied);
}

void Driver::ResolveWrites(std::span<const raft::Entry> entries,
                           const std::vector<kv::Applied>& applied) {
  // The writes waiting at the batch's indexes, in index order, matched with
  // the entry applied there and its request id. None waits below the batch
  // (indexes are applied without gaps); one that did would have an unknown
  // outcome. Those at an entry are decided by its term (Log Matching, Raft
  // paper 5.3: the entry committed at an index is the one proposed there in
  // that term).
  std::vector<PendingWrite> writes = writes_.TakeThrough(entries.back().index);
  size_t cursor = 0;  // Into `applied`, which is in index order too.
  for (PendingWrite& w : writes) {
    if (w.index < entries.front().index) {
      w.done(Outcome{Code::kTimeout, "the write's outcome is unknown"});
      continue;
    }
    const raft::Entry& e = entries[w.index - entries.front().index];
    while (cursor < applied.size() && applied[cursor].index < e.index) cursor++;
    const kv::Applied* a =
        cursor < applied.size() && applied[cursor].index == e.index ? &applied[cursor] : nullptr;
    if (w.term == e.term) {
      RAFT_ASSERT(w.conf || (a != nullptr && a->id == w.id),
                  "entry " + std::to_string(e.index) + " applied with another request id");
      w.done(Outcome{Code::kOk, "", e.index, a ? a->result : nullptr});
    } else {
      w.done(Outcome{Code::kNotCommitted,
                     "leadership changed before the write committed; it was not applied"});
    }
  }
}

void Driver::ApplyConfChange(const raft::Entry& e) {
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

void Driver::FailAll(Code code, const std::string& why) {
  for (PendingWrite& w : writes_.TakeAll()) {
    w.done(Outcome{code, why + "; the write's outcome is unknown"});
  }
  std::vector<Callback> reads = reads_.TakeAll();
  Answer(&reads, Outcome{code, why});
  for (DeferredRemoval& d : std::exchange(deferred_removals_, {})) d.done(Outcome{code, why});
}

double Driver::MillisSince(TimePoint start) const {
  return std::chrono::duration_cast<std::chrono::microseconds>(hooks_.now() - start).count() /
         1000.0;
}

void Driver::MaybeSnapshot() {
  if (storage_failed_ || stopped_ || snapshotting_) return;
  // After a failure, wait out the back-off (OnSnapshotSaved).
  if (snapshot_failures_ > 0 && ticks_ < snapshot_retry_tick_) return;
  uint64_t applied = kv_->revision();
  if (config_.snapshot_entries == 0 || applied < last_snapshot_index_ + config_.snapshot_entries) {
    return;
  }
  // A follower may have applied (TakeCommitted) entries that its disk does
  // not hold yet, and its disk may still hold, at those indexes, entries of
  // an older term that the ones applied replace in the node's memory. The
  // snapshot (whose term the store reads from its log) waits until the disk
  // holds the applied entry itself; by Log Matching it then holds the
  // applied log up to there.
  raft::Term stored_term = 0;
  if (!store_->storage().TermAt(applied, &stored_term).ok() || stored_term != applied_term_) {
    return;
  }
  // Serializing the image is the only part on the driver thread (the
  // key-value map cannot change under it); the LogStore writes and fsyncs
  // the file and deletes the WAL segments it covers in the background,
  // while the driver goes on (docs/raft-core.md, "The driver's own rules").
  TimePoint start = hooks_.now();
  std::string data = kv_->Snapshot();
  double serialize_ms = MillisSince(start);
  size_t bytes = data.size();
  raft::Index compact_to =
      applied > config_.snapshot_keep_entries ? applied - config_.snapshot_keep_entries : 0;
  // A follower receiving a snapshot continues from the entry after it: keep
  // those entries until its transfer ends, or a transfer slower than the
  // log kept would leave it needing the next snapshot, forever (etcd's
  // server also holds compaction while a snapshot is in flight). The leader
  // drops the transfer of a follower that goes silent, so this is bounded
  // by transfers that make progress.
  if (raft::Index floor = node_->OldestSnapshotInTransfer(); floor != 0) {
    compact_to = std::min(compact_to, floor);
  }
  snapshotting_ = true;
  store_->SaveSnapshot(applied, conf_applied_, std::move(data), compact_to,
                       [this, applied, compact_to, start, serialize_ms, bytes](raft::Status s) {
                         OnSnapshotSaved(applied, compact_to, start, serialize_ms, bytes,
                                         std::move(s));
                       });
}

void Driver::OnSnapshotSaved(raft::Index index, raft::Index compact_to, TimePoint start,
                             double serialize_ms, size_t bytes, raft::Status s) {
  snapshotting_ = false;
  double ms = MillisSince(start);
  if (!s.ok()) {
    // The node still works (the log keeps everything since the last
    // snapshot), but its log grows: report it and retry with back-off
    // rather than at every applied batch.
    snapshot_failures_++;
    snapshot_error_ = s;
    uint64_t shift = std::min<uint64_t>(snapshot_failures_ - 1, 32);
    uint64_t backoff =
        std::min(config_.snapshot_retry_max_ticks, config_.snapshot_retry_base_ticks << shift);
    snapshot_retry_tick_ = ticks_ + backoff;
    auto retry_ms = static_cast<uint64_t>(config_.tick.count()) * backoff;
    std::string why = "snapshot failed (" + std::to_string(snapshot_failures_) +
                      " attempts in a row, the last at index " + std::to_string(index) + ": " +
                      s.ToString() + "); next attempt in " + std::to_string(retry_ms) + " ms";
    spdlog::warn("{}", why);
    std::lock_guard lock(view_mu_);
    degraded_ = std::move(why);
  } else {
    // A snapshot from the leader installed meanwhile may be newer.
    last_snapshot_index_ = std::max(last_snapshot_index_, index);
    snapshots_taken_++;
    metrics_.snapshot_save.Observe(hooks_.now() - start);
    if (snapshot_failures_ > 0) {
      spdlog::info("snapshots work again after {} failed attempts", snapshot_failures_);
    }
    snapshot_failures_ = 0;
    snapshot_error_ = raft::Status::Ok();
    {
      std::lock_guard lock(view_mu_);
      degraded_.clear();
    }
    spdlog::info(
        "snapshot at index {} ({} bytes; image serialized in {:.1f} ms on the driver thread, "
        "written in {:.1f} ms in the background); log compacted through index {}",
        index, bytes, serialize_ms, ms, compact_to);
  }
  MaybeFinishShutdown();
}

void Driver::OnSoftState(const raft::SoftState& ss) {
  bool leader_changed = ss.leader != soft_.leader || ss.role != soft_.role;
  if (ss.leader != raft::kNoNode && ss.leader != last_known_leader_) {
    metrics_.leader_changes.Add();
    last_known_leader_ = ss.leader;
  }
  // Heartbeats sent in an earlier term get no answer that counts.
  if (ss.role != raft::Role::kLeader) heartbeat_sent_.clear();
  if (ss.role == raft::Role::kLeader && soft_.role != raft::Role::kLeader) {
    leader_since_ = hooks_.now();
  }
  soft_ = ss;
  LogState();
  if (hooks_.observer) hooks_.observer->OnSoftState(ss);
  if (leader_changed) {
    // Their ReadIndex went to a leader that is gone; the core dropped them.
    std::vector<Callback> failed = reads_.TakeIssued();
    Answer(&failed, Outcome{Code::kUnavailable, "leadership changed; retry"});
  }
  MaybePublishView(true);
}

void Driver::MaybePublishView(bool force) {
  const raft::ConfState& conf = node_->conf();
  bool conf_changed = conf != conf_published_;
  if (!force && !conf_changed) return;
  auto v = std::make_shared<ClusterView>();
  v->self = config_.self.id;
  v->leader = soft_.leader;
  v->role = soft_.role;
  v->term = node_->term();
  std::map<raft::NodeId, std::string> peers;
  std::vector<MemberInfo> infos;
  for (const raft::Member& m : conf.members) {
    MemberView mv;
    mv.info.id = m.id;
    DecodeMemberContext(m.context, &mv.info);
    mv.role = m.role;
    mv.promote = m.promote;
    if (!mv.info.raft.empty()) peers[m.id] = mv.info.raft;
    if (conf_changed) infos.push_back(mv.info);
    v->members.push_back(std::move(mv));
  }
  {
    std::lock_guard lock(view_mu_);
    view_ = std::move(v);
  }
  if (conf_changed) {
    conf_published_ = conf;
    if (hooks_.peers) hooks_.peers(peers);
    if (hooks_.members) hooks_.members(infos);
    // A node that learns the membership only from its leader logs the
    // leader's name once it knows it.
    if (leader_name_pending_ && IsMember(soft_.leader)) LogState();
  }
}

bool Driver::IsMember(raft::NodeId id) const {
  if (id == config_.self.id) return true;
  for (const raft::Member& m : node_->conf().members) {
    if (m.id == id) return true;
  }
  return false;
}

void Driver::LogState() {
  // The original (hashicorp/raft) logged role changes this way.
  leader_name_pending_ = soft_.leader != raft::kNoNode && !IsMember(soft_.leader);
  spdlog::info("state={} leader={} term={}", raft::RoleName(soft_.role),
               soft_.leader == raft::kNoNode ? "" : NameOf(soft_.leader), node_->term());
}

std::string Driver::NameOf(raft::NodeId id) const {
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

void Driver::Fatal(const std::string& why) {
  if (hooks_.fatal) hooks_.fatal(why);
  spdlog::critical("{}; stopping", why);
  spdlog::default_logger()->flush();
  std::_Exit(1);
}

}  // namespace raftkv::server
