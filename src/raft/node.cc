#include "raft/node.h"

#include <algorithm>

namespace raftkv::raft {
namespace {

// A follower that refused a snapshot as over its max_snapshot_bytes is
// offered one again only after this many election timeouts, doubled for
// each earlier refusal up to kSnapRefusedBackoffMaxDoublings times: by then
// the leader may have a smaller snapshot or the follower a larger limit,
// but each attempt can cost up to the follower's limit in bytes sent and
// stored before it is refused again.
constexpr int kSnapRefusedBackoffTimeouts = 8;
constexpr uint64_t kSnapRefusedBackoffMaxDoublings = 4;

}  // namespace

Status Config::Validate() const {
  if (id == kNoNode) return Status(Code::kInvalidArgument, "node id must not be 0");
  if (heartbeat_interval_ticks <= 0) {
    return Status(Code::kInvalidArgument, "heartbeat_interval_ticks must be positive");
  }
  if (election_timeout_ticks <= heartbeat_interval_ticks) {
    return Status(Code::kInvalidArgument,
                  "election_timeout_ticks must be greater than heartbeat_interval_ticks");
  }
  if (max_entry_bytes == 0 || max_msg_bytes == 0 || max_inflight_msgs == 0 ||
      max_uncommitted_bytes == 0 || max_snapshot_chunk_bytes == 0 || max_pending_reads == 0 ||
      max_committed_bytes_per_ready == 0 || max_snapshot_bytes == 0) {
    return Status(Code::kInvalidArgument, "limits must be positive");
  }
  return Status::Ok();
}

Node::Node(const Config& config, const Storage* storage)
    : cfg_(config), id_(config.id), rng_(config.seed), log_(storage) {
  Status s = cfg_.Validate();
  RAFT_ASSERT(s.ok(), s.ToString());

  HardState hs = storage->InitialHardState();
  term_ = hs.term;
  vote_ = hs.vote;
  const Snapshot& snap = storage->LatestSnapshot();
  conf_ = snap.meta.conf;
  applied_ = snap.meta.index;
  handed_ = applied_;
  // Remember the ConfChange entries in the log, then apply the committed
  // ones so the node starts with the membership as of its commit index.
  // Entries at or below the snapshot may still be in the log (compaction
  // may keep some); the snapshot's membership already includes them.
  Index first = std::max(log_.FirstIndex(), snap.meta.index + 1), last = log_.LastIndex();
  if (first <= last) {
    std::vector<Entry> entries;
    Status es = log_.Slice(first, last + 1, UINT64_MAX, &entries);
    RAFT_ASSERT(es.ok(), es.ToString());
    NoteAppended(entries, 0);
  }
  RAFT_ASSERT(hs.commit <= last, "hard state commit " + std::to_string(hs.commit) +
                                     " is past the last log index " + std::to_string(last));
  log_.CommitTo(hs.commit);
  ApplyCommittedConfChanges();
  prev_hard_ = HardState{term_, vote_, log_.committed()};
  prev_soft_ = SoftState{kNoNode, Role::kFollower};
  BecomeFollower(term_, kNoNode);
}

Node::~Node() = default;

Status Node::Bootstrap(const std::string& context) {
  if (log_.LastIndex() != 0 || term_ != 0) {
    return Status(Code::kInvalidArgument, "bootstrap needs an empty log");
  }
  // The founding configuration is entry 1 of term 1, committed by
  // definition: a one-member cluster agrees with itself.
  term_ = 1;
  ConfChange cc{ConfChangeType::kAddLearner, id_, false, context};
  std::vector<Entry> entries{Entry{1, 1, EntryType::kConfChange, EncodeConfChange(cc)}};
  log_.Append(entries);
  NoteAppended(entries, 0);
  log_.CommitTo(1);
  ApplyCommittedConfChanges();
  // Campaign on the next tick rather than after a full timeout.
  election_elapsed_ = randomized_election_timeout_ - 1;
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Transitions.

void Node::ResetTerm(Term term) {
  // A leader's unconfirmed reads are refused in the term they were asked
  // in, before the term changes, so that their askers still accept the
  // answer.
  RejectPendingReads();
  if (term_ != term) {
    term_ = term;
    vote_ = kNoNode;
  }
  leader_ = kNoNode;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  ResetRandomizedElectionTimeout();
  AbortTransfer();
  votes_.clear();
  progress_.clear();
  acked_round_.clear();
  uncommitted_.clear();
  uncommitted_bytes_ = 0;
  pending_broadcast_ = false;
}

void Node::ResetRandomizedElectionTimeout() {
  // Raft paper 5.2: randomized election timeouts make split votes rare.
  randomized_election_timeout_ =
      cfg_.election_timeout_ticks + static_cast<int>(rng_.Uniform(cfg_.election_timeout_ticks));
}

void Node::BecomeFollower(Term term, NodeId leader) {
  ResetTerm(term);
  role_ = Role::kFollower;
  leader_ = leader;
}

void Node::BecomePreCandidate() {
  RAFT_ASSERT(role_ != Role::kLeader, "leader cannot become pre-candidate");
  // Raft thesis 9.6: a pre-candidate keeps its term and vote; it only asks
  // whether it could win an election at term+1.
  votes_.clear();
  progress_.clear();
  role_ = Role::kPreCandidate;
  leader_ = kNoNode;
  election_elapsed_ = 0;
  ResetRandomizedElectionTimeout();
}

void Node::BecomeCandidate() {
  RAFT_ASSERT(role_ != Role::kLeader, "leader cannot become candidate");
  ResetTerm(term_ + 1);
  vote_ = id_;
  role_ = Role::kCandidate;
}

void Node::BecomeLeader() {
  RAFT_ASSERT(role_ == Role::kCandidate, "only a candidate becomes leader");
  ResetTerm(term_);
  role_ = Role::kLeader;
  leader_ = id_;
  self_match_ = log_.StableLastIndex();
  RebuildProgress();
  // Raft thesis 6.4: a new leader commits a no-op of its own term to learn
  // which entries are committed; reads and membership changes wait for it.
  AppendEntry(EntryType::kNormal, std::string(), nullptr, nullptr);
  pending_broadcast_ = true;
}

void Node::RebuildProgress() {
  // Updated in place: pointers to the Progress of peers that stay valid.
  for (auto it = progress_.begin(); it != progress_.end();) {
    const Member* m = conf_.Find(it->first);
    if (m == nullptr || m->id == id_) {
      acked_round_.erase(it->first);
      it = progress_.erase(it);
    } else {
      it->second.role = m->role;
      ++it;
    }
  }
  for (const Member& m : conf_.members) {
    if (m.id == id_ || progress_.count(m.id)) continue;
    Progress pr(cfg_.max_inflight_msgs);
    pr.role = m.role;
    pr.next = log_.LastIndex() + 1;
    pr.match = 0;
    // A new peer gets the benefit of the doubt for the current
    // check-quorum period.
    pr.recent_active = true;
    progress_.emplace(m.id, std::move(pr));
  }
}

bool Node::Promotable() const { return conf_.IsVoter(id_); }

bool Node::InLease() const {
  return cfg_.check_quorum && leader_ != kNoNode && election_elapsed_ < cfg_.election_timeout_ticks;
}

// ---------------------------------------------------------------------------
// Time.

void Node::Tick() {
  if (role_ == Role::kLeader) {
    TickHeartbeat();
  } else {
    TickElection();
  }
}

void Node::TickElection() {
  election_elapsed_++;
  if (Promotable() && election_elapsed_ >= randomized_election_timeout_) {
    election_elapsed_ = 0;
    StartElection(cfg_.pre_vote, false);
  }
}

void Node::TickHeartbeat() {
  heartbeat_elapsed_++;
  election_elapsed_++;
  if (election_elapsed_ >= cfg_.election_timeout_ticks) {
    election_elapsed_ = 0;
    if (cfg_.check_quorum) {
      // Raft thesis 6.2: step down if a quorum has not been heard from for
      // an election timeout, so that clients can find the real leader.
      uint64_t active = 1;
      for (auto& [id, pr] : progress_) {
        if (pr.role == MemberRole::kVoter && pr.recent_active) active++;
        pr.recent_active = false;
      }
      if (!Promotable() || active < Quorum()) {
        BecomeFollower(term_, kNoNode);
        return;
      }
    }
    // Raft thesis 3.10: a transfer that has not finished within an election
    // timeout is aborted so that the leader resumes accepting proposals.
    AbortTransfer();
  }
  TickSnapshotBackoff();
  if (heartbeat_elapsed_ >= cfg_.heartbeat_interval_ticks) {
    heartbeat_elapsed_ = 0;
    BroadcastHeartbeat();
    for (auto& [id, pr] : progress_) {
      if (pr.state != ProgressState::kSnapshot ||
          ++pr.snap_idle_ticks < cfg_.election_timeout_ticks) {
        continue;
      }
      if (pr.snap_heard) {
        // The last chunk or its answer was lost: send it again.
        SendSnapshotChunk(id, &pr);
      } else {
        // Not a word from the follower since the last chunk, heartbeats
        // included: it is down or cut off. Release the image rather than
        // hold it for a follower that may never come back (and that forgets
        // the transfer if it restarts); once heard from again, it gets the
        // newest snapshot.
        pr.SnapshotAbandoned();
      }
    }
  }
  MaybePromoteLearners();
}

// ---------------------------------------------------------------------------
// Elections.

void Node::Campaign() {
  if (role_ != Role::kLeader && Promotable()) StartElection(cfg_.pre_vote, false);
}

void Node::StartElection(bool pre_vote, bool force) {
  MessageType type;
  Term term;
  if (pre_vote) {
    BecomePreCandidate();
    type = MessageType::kPreVote;
    term = term_ + 1;
  } else {
    BecomeCandidate();
    type = MessageType::kVote;
    term = term_;
  }
  if (Poll(id_, true) > 0) {
    // A single-voter cluster wins at once.
    if (pre_vote) {
      StartElection(false, force);
    } else {
      BecomeLeader();
    }
    return;
  }
  for (NodeId voter : conf_.Voters()) {
    if (voter == id_) continue;
    Message m;
    m.type = type;
    m.to = voter;
    m.term = term;
    m.index = log_.LastIndex();
    m.log_term = log_.LastTerm();
    m.force = force;
    Send(std::move(m));
  }
}

// Records a vote; returns 1 if the election is won, -1 if lost, 0 if open.
int Node::Poll(NodeId from, bool granted) {
  if (!conf_.IsVoter(from)) return 0;
  votes_.emplace(from, granted);
  uint64_t yes = 0, no = 0;
  for (NodeId v : conf_.Voters()) {
    auto it = votes_.find(v);
    if (it == votes_.end()) continue;
    (it->second ? yes : no)++;
  }
  uint64_t voters = conf_.Voters().size();
  if (yes >= Quorum()) return 1;
  if (no > voters - Quorum()) return -1;
  return 0;
}

uint64_t Node::Quorum() const { return conf_.Voters().size() / 2 + 1; }

// ---------------------------------------------------------------------------
// Step.

void Node::Step(const Message& m) {
  // Term handling, in one place (Raft paper Figure 2, "Rules for Servers").
  if (m.term > term_) {
    if (m.type == MessageType::kVote || m.type == MessageType::kPreVote) {
      // Raft thesis 4.2.3: a server that heard from a current leader within
      // the minimum election timeout ignores vote requests, so a removed or
      // partitioned server cannot disrupt the cluster. A transfer (force)
      // is the exception.
      if (!m.force && InLease()) return;
    }
    if (m.type == MessageType::kPreVote) {
      // A pre-vote never changes our term.
    } else if (m.type == MessageType::kPreVoteResp && !m.reject) {
      // A granted pre-vote carries the term we would campaign at.
    } else if (m.type == MessageType::kApp || m.type == MessageType::kHeartbeat ||
               m.type == MessageType::kSnap) {
      BecomeFollower(m.term, m.from);
    } else {
      BecomeFollower(m.term, kNoNode);
    }
  } else if (m.term < term_) {
    if ((cfg_.check_quorum || cfg_.pre_vote) &&
        (m.type == MessageType::kApp || m.type == MessageType::kHeartbeat)) {
      // A stale leader (e.g. healed from a partition) would otherwise never
      // learn the new term: with pre-vote nobody raises it by campaigning.
      Message resp;
      resp.type = MessageType::kAppResp;
      resp.to = m.from;
      Send(std::move(resp));
    } else if (m.type == MessageType::kPreVote) {
      // Tell the pre-candidate our term so that it can catch up.
      Message resp;
      resp.type = MessageType::kPreVoteResp;
      resp.to = m.from;
      resp.reject = true;
      Send(std::move(resp));
    } else if (m.type == MessageType::kReadIndex) {
      // The asker follows a leader of an older term: this node cannot serve
      // the read, and telling it so (with our term) fails the read now
      // rather than at the asker's timeout.
      RejectRead(m.from, m.context);
    }
    // Anything else from an old term is ignored (Raft paper 5.1).
    return;
  }

  switch (m.type) {
    case MessageType::kVote:
    case MessageType::kPreVote: {
      // Figure 2, RequestVote receiver: grant at most one vote per term, and
      // only to a candidate whose log is at least as up-to-date (5.4.1).
      bool can_vote = vote_ == m.from || (vote_ == kNoNode && leader_ == kNoNode) ||
                      (m.type == MessageType::kPreVote && m.term > term_);
      Message resp;
      resp.type = m.type == MessageType::kVote ? MessageType::kVoteResp : MessageType::kPreVoteResp;
      resp.to = m.from;
      if (can_vote && log_.IsUpToDate(m.index, m.log_term)) {
        resp.term = m.term;
        if (m.type == MessageType::kVote) {
          election_elapsed_ = 0;
          vote_ = m.from;
        }
      } else {
        resp.term = term_;
        resp.reject = true;
      }
      Send(std::move(resp));
      return;
    }
    default:
      break;
  }

  switch (role_) {
    case Role::kLeader:
      StepLeader(m);
      break;
    case Role::kCandidate:
    case Role::kPreCandidate:
      StepCandidate(m);
      break;
    case Role::kFollower:
      StepFollower(m);
      break;
  }
}

void Node::StepLeader(const Message& m) {
  if (m.type == MessageType::kReadIndex) {
    if (pending_reads_.size() >= cfg_.max_pending_reads || !conf_.Find(m.from)) {
      RejectRead(m.from, m.context);
      return;
    }
    pending_reads_.push_back(PendingRead{m.context, m.from, 0, 0});
    StartReadRound();
    return;
  }
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;
  Progress* pr = &it->second;
  pr->snap_heard = true;
  switch (m.type) {
    case MessageType::kAppResp:
      pr->recent_active = true;
      HandleAppendResponse(m, pr);
      break;
    case MessageType::kHeartbeatResp:
      pr->recent_active = true;
      HandleHeartbeatResponse(m, pr);
      break;
    case MessageType::kSnapResp:
      pr->recent_active = true;
      HandleSnapResponse(m, pr);
      break;
    default:
      break;
  }
}

void Node::StepCandidate(const Message& m) {
  switch (m.type) {
    case MessageType::kApp:
    case MessageType::kHeartbeat:
    case MessageType::kSnap:
      // Raft paper 5.2: a candidate that hears from a leader of its term
      // returns to follower.
      BecomeFollower(m.term, m.from);
      StepFollower(m);
      break;
    case MessageType::kVoteResp:
    case MessageType::kPreVoteResp: {
      bool pre = m.type == MessageType::kPreVoteResp;
      if (pre != (role_ == Role::kPreCandidate)) return;
      int result = Poll(m.from, !m.reject);
      if (result > 0) {
        if (pre) {
          StartElection(false, false);
        } else {
          BecomeLeader();
        }
      } else if (result < 0) {
        BecomeFollower(term_, kNoNode);
      }
      break;
    }
    default:
      HandleReadNotLeader(m);
      break;
  }
}

void Node::StepFollower(const Message& m) {
  switch (m.type) {
    case MessageType::kApp:
      election_elapsed_ = 0;
      leader_ = m.from;
      HandleAppendEntries(m);
      break;
    case MessageType::kHeartbeat:
      election_elapsed_ = 0;
      leader_ = m.from;
      HandleHeartbeat(m);
      break;
    case MessageType::kSnap:
      election_elapsed_ = 0;
      leader_ = m.from;
      HandleSnapshotChunk(m);
      break;
    case MessageType::kTimeoutNow:
      // Raft thesis 3.10: the transfer target campaigns at once, without
      // pre-vote, and its requests override the voters' leader leases.
      if (Promotable()) StartElection(false, true);
      break;
    default:
      HandleReadNotLeader(m);
      break;
  }
}

// ---------------------------------------------------------------------------
// Proposals.

void Node::AppendEntry(EntryType type, std::string data, Index* index, Term* term) {
  Entry e{term_, log_.LastIndex() + 1, type, std::move(data)};
  uint64_t bytes = e.SizeBytes();
  std::vector<Entry> entries{std::move(e)};
  log_.Append(entries);
  NoteAppended(entries, 0);
  uncommitted_.emplace_back(entries[0].index, bytes);
  uncommitted_bytes_ += bytes;
  if (index) *index = entries[0].index;
  if (term) *term = term_;
  pending_broadcast_ = true;
}

Status Node::Propose(std::string data, Index* index, Term* term) {
  if (role_ != Role::kLeader) {
    return Status(Code::kNotLeader, "leader is " + std::to_string(leader_));
  }
  if (transferee_ != kNoNode) {
    return Status(Code::kTransferInProgress, "transferring to " + std::to_string(transferee_));
  }
  if (data.size() > cfg_.max_entry_bytes) {
    return Status(Code::kEntryTooLarge, std::to_string(data.size()) + " bytes > limit " +
                                            std::to_string(cfg_.max_entry_bytes));
  }
  if (uncommitted_bytes_ > 0 && uncommitted_bytes_ + data.size() > cfg_.max_uncommitted_bytes) {
    return Status(Code::kTooManyUncommitted, std::to_string(uncommitted_bytes_) +
                                                 " bytes uncommitted, limit " +
                                                 std::to_string(cfg_.max_uncommitted_bytes));
  }
  AppendEntry(EntryType::kNormal, std::move(data), index, term);
  return Status::Ok();
}

bool Node::IsLeaderTermCommitted() const {
  Term t = 0;
  return log_.TermAt(log_.committed(), &t) && t == term_;
}

Status Node::ProposeConfChange(const ConfChange& cc, Index* index, Term* term) {
  if (role_ != Role::kLeader) {
    return Status(Code::kNotLeader, "leader is " + std::to_string(leader_));
  }
  if (transferee_ != kNoNode) {
    return Status(Code::kTransferInProgress, "transferring to " + std::to_string(transferee_));
  }
  // Raft thesis 4.1: one change at a time, and (raft-dev, 2015) only after
  // the leader has committed an entry of its own term, so that a change
  // from an earlier term that may be committed is known before a new one.
  if (!conf_indexes_.empty() || !IsLeaderTermCommitted()) {
    return Status(Code::kConfChangePending, "a membership change is in progress");
  }
  ConfState next = conf_;
  if (!ApplyConfChange(cc, &next)) {
    return Status(Code::kInvalidArgument, "change does not apply to the current membership");
  }
  if (next.Voters().empty()) {
    return Status(Code::kInvalidArgument, "cannot remove the last voter");
  }
  AppendEntry(EntryType::kConfChange, EncodeConfChange(cc), index, term);
  return Status::Ok();
}

void Node::MaybePromoteLearners() {
  if (role_ != Role::kLeader || !conf_indexes_.empty() || transferee_ != kNoNode ||
      !IsLeaderTermCommitted()) {
    return;
  }
  for (const Member& m : conf_.members) {
    if (m.role != MemberRole::kLearner || !m.promote) continue;
    auto it = progress_.find(m.id);
    if (it == progress_.end()) continue;
    // Raft thesis 4.2.1: a new server votes only once its log has caught
    // up, so that it does not stall commitment. Caught up: it holds every
    // committed entry, or it finished a catch-up round (reached the leader's
    // last index as of the round's start) within an election timeout. Under
    // a steady write load a learner that keeps pace is never exactly at the
    // commit index (a lone voter commits each entry as it persists it), so
    // rounds are what promote it there. Called once per tick.
    Progress& pr = it->second;
    // A promotion that keeps the quorum size (an even number of voters
    // becoming odd: 2 -> 3, 4 -> 5) cannot hurt availability: every quorum
    // of the old voters is one of the new, so the new voter is never needed
    // to commit, however far behind it is. Only a learner that has answered
    // this leader (match > 0) and is not being sent a snapshot is promoted so.
    // Without this, a learner whose replication barely outpaces the write
    // load never finishes a round and stays a learner forever, although
    // promoting it only adds fault tolerance once it catches up (sim seed
    // 305208 wal: tiny appends, 2 -> 3 voters).
    const size_t voters = conf_.Voters().size();
    if ((voters + 1) / 2 + 1 == Quorum() && pr.match > 0 && pr.state != ProgressState::kSnapshot) {
      ProposeConfChange(ConfChange{ConfChangeType::kPromoteLearner, m.id, false, std::string()},
                        nullptr, nullptr);
      return;
    }
    bool caught_up = pr.match >= log_.committed();
    if (!caught_up && pr.catchup_target != 0 && pr.match >= pr.catchup_target) {
      caught_up = pr.catchup_ticks < cfg_.election_timeout_ticks;
      pr.catchup_target = 0;  // Too slow: the next round starts now.
    }
    if (!caught_up) {
      if (pr.catchup_target == 0) {
        pr.catchup_target = log_.LastIndex();
        pr.catchup_ticks = 0;
      } else {
        pr.catchup_ticks++;
      }
      continue;
    }
    ConfChange cc{ConfChangeType::kPromoteLearner, m.id, false, std::string()};
    ProposeConfChange(cc, nullptr, nullptr);
    return;
  }
}

// ---------------------------------------------------------------------------
// Leadership transfer.

Status Node::TransferLeadership(NodeId target) {
  if (role_ != Role::kLeader) {
    return Status(Code::kNotLeader, "leader is " + std::to_string(leader_));
  }
  if (target == id_) return Status::Ok();
  if (!conf_.IsVoter(target)) {
    return Status(Code::kInvalidArgument, "node " + std::to_string(target) + " is not a voter");
  }
  if (transferee_ == target) return Status::Ok();
  transferee_ = target;
  // The transfer must finish within one election timeout.
  election_elapsed_ = 0;
  Progress* pr = &progress_.at(target);
  MaybeFinishTransfer(target, pr);
  if (transferee_ != kNoNode) MaybeSendAppend(target, true);
  return Status::Ok();
}

void Node::MaybeFinishTransfer(NodeId from, Progress* pr) {
  if (from != transferee_ || pr->match != log_.LastIndex()) return;
  Message m;
  m.type = MessageType::kTimeoutNow;
  m.to = from;
  Send(std::move(m));
}

void Node::AbortTransfer() { transferee_ = kNoNode; }

// ---------------------------------------------------------------------------
// Replication, leader side.

Term Node::TermOrZero(Index i) const {
  Term t = 0;
  return log_.TermAt(i, &t) ? t : 0;
}

void Node::BroadcastAppend() {
  pending_broadcast_ = false;
  for (auto& [id, pr] : progress_) {
    MaybeSendAppend(id, true);
  }
}

bool Node::MaybeSendAppend(NodeId to, bool send_if_empty) {
  Progress* pr = &progress_.at(to);
  if (pr->IsPaused()) return false;
  Message m;
  m.type = MessageType::kApp;
  m.to = to;
  m.index = pr->next - 1;
  Term prev_term = 0;
  bool have_term = log_.TermAt(m.index, &prev_term);
  Status s;
  if (have_term && pr->next <= log_.LastIndex()) {
    s = log_.Slice(pr->next, log_.LastIndex() + 1, cfg_.max_msg_bytes, &m.entries);
  }
  if (!have_term || !s.ok()) {
    // Raft paper 7: the follower needs entries that were compacted away.
    const Snapshot& snap = log_.LatestSnapshot();
    RAFT_ASSERT(!snap.IsEmpty(), "entries compacted without a snapshot");
    // The follower refused our last snapshot as too large: wait for the
    // backoff (TickSnapshotBackoff) before offering one again.
    if (pr->snap_backoff_ticks > 0) return false;
    if (snap.streamed) {
      // This node became leader right after restoring from a snapshot that
      // was streamed to its driver, before the Ready that installs it was
      // advanced: the core does not have the image, and an empty one must
      // never go out as if it were the state. Once advanced, storage holds
      // the image and the next heartbeat response retries.
      return false;
    }
    pr->BecomeSnapshot(PinLatestSnapshot());
    SendSnapshotChunk(to, pr);
    return true;
  }
  if (m.entries.empty() && !send_if_empty) return false;
  m.log_term = prev_term;
  m.commit = log_.committed();
  Index last = m.entries.empty() ? m.index : m.entries.back().index;
  pr->SentEntries(last, m.entries.size());
  Send(std::move(m));
  return true;
}

std::shared_ptr<const Snapshot> Node::PinLatestSnapshot() {
  const Snapshot& snap = log_.LatestSnapshot();
  // MaybeSendAppend starts no transfer from a streamed snapshot, and a
  // leader never restores one.
  RAFT_ASSERT(!snap.streamed, "sending the image of a streamed snapshot at " +
                                  std::to_string(snap.meta.index) + ", which the core lacks");
  // Storage keeps only its latest snapshot and replaces it when the driver
  // takes a newer one, so a transfer that must outlive that keeps its own
  // copy. One copy per snapshot: a transfer that starts while another one of
  // the same snapshot runs shares its copy. A leader's snapshots only move
  // forward, so once the latest is newer than the last copy made, that copy
  // is never wanted again for a new transfer and lives only as long as the
  // transfers already sending it.
  std::shared_ptr<const Snapshot> image = last_pinned_snapshot_.lock();
  if (!image || image->meta != snap.meta) {
    image = std::make_shared<const Snapshot>(snap);
    last_pinned_snapshot_ = image;
  }
  return image;
}

void Node::SendSnapshotChunk(NodeId to, Progress* pr) {
  // The transfer sends the snapshot it started with to the end, even if a
  // newer one was taken meanwhile: restarting with the newer one would
  // starve a follower whenever a transfer takes longer than the interval
  // between two snapshots. If the follower still needs entries compacted
  // since, the next MaybeSendAppend starts a transfer of the newest one.
  const Snapshot& snap = *pr->snap_image;
  Message m;
  m.type = MessageType::kSnap;
  m.to = to;
  m.snap_meta = snap.meta;
  m.snap_offset = std::min<uint64_t>(pr->snap_offset, snap.data.size());
  m.snap_data = snap.data.substr(m.snap_offset, cfg_.max_snapshot_chunk_bytes);
  m.snap_done = m.snap_offset + m.snap_data.size() == snap.data.size();
  pr->snap_idle_ticks = 0;
  pr->snap_heard = false;
  Send(std::move(m));
}

void Node::HandleSnapResponse(const Message& m, Progress* pr) {
  if (pr->state != ProgressState::kSnapshot || m.snap_meta.index != pr->pending_snapshot) return;
  if (m.reject && m.reject_hint > 0) {
    HandleSnapRefusal(m, pr);
    return;
  }
  pr->snap_offset = m.snap_offset;
  SendSnapshotChunk(m.from, pr);
}

void Node::HandleSnapRefusal(const Message& m, Progress* pr) {
  // The follower will not store a snapshot this large (types.h, Message::
  // reject_hint). Sending it again at once would only resend up to its
  // limit and be refused again: the peer gets heartbeats (so it keeps its
  // leader and learns the commit index) but no snapshot until the backoff
  // runs out.
  uint64_t doublings = std::min(pr->snap_refusals, kSnapRefusedBackoffMaxDoublings);
  int backoff = cfg_.election_timeout_ticks * (kSnapRefusedBackoffTimeouts << doublings);
  pr->SnapshotRefused(m.reject_hint, backoff);
}

void Node::TickSnapshotBackoff() {
  for (auto& [id, pr] : progress_) {
    if (pr.snap_backoff_ticks > 0 && --pr.snap_backoff_ticks == 0) MaybeSendAppend(id, true);
  }
}

void Node::HandleAppendResponse(const Message& m, Progress* pr) {
  if (m.reject) {
    // Fast backtracking (etcd-io/raft): the follower names the last index
    // at which its log could match, and the term there; skip every entry of
    // ours after it whose term is larger.
    Index next_probe = m.reject_hint;
    if (m.log_term > 0) {
      Term unused = 0;
      next_probe = log_.FindConflictByTerm(m.reject_hint, m.log_term, &unused);
    }
    if (pr->MaybeDecrTo(m.index, next_probe)) {
      if (pr->state == ProgressState::kReplicate) pr->BecomeProbe();
      MaybeSendAppend(m.from, false);
    }
    return;
  }
  bool was_paused = pr->IsPaused();
  if (!pr->MaybeUpdate(m.index)) {
    return;
  }
  switch (pr->state) {
    case ProgressState::kProbe:
      pr->BecomeReplicate();
      break;
    case ProgressState::kSnapshot:
      if (pr->match >= pr->pending_snapshot) {
        pr->BecomeProbe();
        pr->BecomeReplicate();
      }
      break;
    case ProgressState::kReplicate:
      pr->inflights.FreeLE(m.index);
      break;
  }
  if (MaybeCommit()) {
    // The commit may have applied a membership change that removed this
    // peer, or this leader.
    if (role_ != Role::kLeader) return;
    auto it = progress_.find(m.from);
    if (it == progress_.end()) return;
    pr = &it->second;
    // Tell everyone the new commit index at once.
    BroadcastAppend();
  } else if (was_paused) {
    // The follower may not know the current commit index yet: it was not
    // sent anything while paused.
    MaybeSendAppend(m.from, true);
  }
  // Keep the pipeline full.
  while (pr->state == ProgressState::kReplicate && MaybeSendAppend(m.from, false)) {
  }
  MaybeFinishTransfer(m.from, pr);
}

void Node::HandleHeartbeatResponse(const Message& m, Progress* pr) {
  uint64_t& acked = acked_round_[m.from];
  acked = std::max(acked, m.read_round);
  if (pr->match < log_.LastIndex()) {
    // The follower is behind and alive: a lost AppendEntries must not stall
    // it (etcd-io/raft frees one in-flight slot, or the probe, here).
    if (pr->state == ProgressState::kProbe) pr->probe_sent = false;
    if (pr->state == ProgressState::kReplicate && pr->inflights.Full()) pr->inflights.Reset();
    // Even with nothing new to send, an empty AppendEntries at next-1 makes
    // the follower tell us how far it really is (its acknowledgement may
    // have been lost).
    MaybeSendAppend(m.from, true);
  }
  ReleaseReads();
}

Index Node::QuorumMatch() const {
  std::vector<Index> matches;
  for (NodeId v : conf_.Voters()) {
    if (v == id_) {
      matches.push_back(self_match_);
    } else {
      auto it = progress_.find(v);
      matches.push_back(it == progress_.end() ? 0 : it->second.match);
    }
  }
  std::sort(matches.begin(), matches.end(), std::greater<Index>());
  return matches[Quorum() - 1];
}

bool Node::MaybeCommit() {
  if (role_ != Role::kLeader || !Promotable()) return false;
  // Raft paper 5.4.2: an entry from an earlier term is never committed by
  // counting replicas; it becomes committed with a current-term entry.
  if (!log_.MaybeCommit(QuorumMatch(), term_)) return false;
  OnCommitAdvanced();
  return true;
}

void Node::OnCommitAdvanced() {
  while (!uncommitted_.empty() && uncommitted_.front().first <= log_.committed()) {
    uncommitted_bytes_ -= uncommitted_.front().second;
    uncommitted_.pop_front();
  }
  ApplyCommittedConfChanges();
  if (role_ == Role::kLeader) ReleaseReads();
}

void Node::BroadcastHeartbeat() {
  for (auto& [id, pr] : progress_) SendHeartbeat(id);
}

void Node::SendHeartbeat(NodeId to) {
  Message m;
  m.type = MessageType::kHeartbeat;
  m.to = to;
  // Never tell a follower to commit past what it is known to have.
  m.commit = std::min(progress_.at(to).match, log_.committed());
  m.read_round = read_round_;
  Send(std::move(m));
}

// ---------------------------------------------------------------------------
// Replication, follower side.

void Node::HandleAppendEntries(const Message& m) {
  Message resp;
  resp.type = MessageType::kAppResp;
  resp.to = m.from;
  if (m.index < log_.committed()) {
    // Everything up to our commit index matches the leader's log.
    resp.index = log_.committed();
    Send(std::move(resp));
    return;
  }
  Index last_new = 0, conflict = 0;
  if (log_.MaybeAppend(m.index, m.log_term, m.commit, m.entries, &last_new, &conflict)) {
    if (conflict != 0) NoteAppended(m.entries, conflict - m.entries.front().index);
    ApplyCommittedConfChanges();
    resp.index = last_new;
    Send(std::move(resp));
    return;
  }
  // Figure 2, receiver step 2: reject, with a hint for fast backtracking.
  Term hint_term = 0;
  Index hint = log_.FindConflictByTerm(std::min(m.index, log_.LastIndex()), m.log_term, &hint_term);
  resp.index = m.index;
  resp.reject = true;
  resp.reject_hint = hint;
  resp.log_term = hint_term;
  Send(std::move(resp));
}

void Node::HandleHeartbeat(const Message& m) {
  log_.CommitTo(m.commit);
  ApplyCommittedConfChanges();
  Message resp;
  resp.type = MessageType::kHeartbeatResp;
  resp.to = m.from;
  resp.read_round = m.read_round;
  Send(std::move(resp));
}

void Node::HandleSnapshotChunk(const Message& m) {
  const SnapshotMeta& meta = m.snap_meta;
  if (meta.index <= log_.committed()) {
    // Nothing to install; tell the leader where we are.
    incoming_snap_.reset();
    Message resp;
    resp.type = MessageType::kAppResp;
    resp.to = m.from;
    resp.index = log_.committed();
    Send(std::move(resp));
    return;
  }
  if (!snap_chunks_.empty() && snap_chunks_.back().done) {
    // The next Ready installs the snapshot that chunk completes; the driver
    // stores chunks before it installs (types.h, Ready), so no chunk of
    // another transfer may follow it there. Drop this one unanswered, as if
    // lost: the leader sends it again.
    return;
  }
  if (m.snap_offset == 0) incoming_snap_ = IncomingSnapshot{meta, 0};
  Message resp;
  resp.to = m.from;
  resp.snap_meta = meta;
  if (!incoming_snap_ || incoming_snap_->meta != meta ||
      incoming_snap_->next_offset != m.snap_offset) {
    // Out of order or a different snapshot: name the offset we can accept.
    bool same = incoming_snap_ && incoming_snap_->meta == meta;
    resp.type = MessageType::kSnapResp;
    resp.snap_offset = same ? incoming_snap_->next_offset : 0;
    resp.reject = true;
    Send(std::move(resp));
    return;
  }
  if (m.snap_data.size() > cfg_.max_snapshot_bytes - incoming_snap_->next_offset) {
    RefuseSnapshot(m);
    return;
  }
  // The driver stores the chunk before this node's answer leaves (types.h,
  // Ready, step 0); the core keeps only the offset, never the image.
  snap_chunks_.push_back(SnapshotChunk{meta, m.snap_offset, m.snap_data, m.snap_done});
  incoming_snap_->next_offset += m.snap_data.size();
  if (!m.snap_done) {
    resp.type = MessageType::kSnapResp;
    resp.snap_offset = incoming_snap_->next_offset;
    Send(std::move(resp));
    return;
  }
  incoming_snap_.reset();
  if (!Restore(Snapshot{meta, std::string(), /*streamed=*/true})) {
    // We already had the snapshot's last entry (Figure 13, receiver step
    // 6): the log is kept and the image is not installed. The final chunk
    // is not handed out, so the driver never completes this transfer; its
    // stored chunks are replaced by the next transfer (or dropped on
    // restart).
    snap_chunks_.pop_back();
  }
  // Our log now matches the leader's up to the snapshot (and no further
  // is known: entries we kept after it are unverified).
  resp.type = MessageType::kAppResp;
  resp.index = meta.index;
  Send(std::move(resp));
}

// The snapshot is larger than this node will store (Config::
// max_snapshot_bytes). Refused here, in the core, so that the driver's
// storage never sees a chunk past its limit: a refusal there is a failed
// write, which stops the node. The transfer is abandoned (its stored chunks
// are simply never completed, as types.h allows) and the leader is told why,
// so that it backs off instead of starting over.
void Node::RefuseSnapshot(const Message& m) {
  incoming_snap_.reset();
  snapshots_refused_++;
  last_refused_snapshot_index_ = m.snap_meta.index;
  Message resp;
  resp.type = MessageType::kSnapResp;
  resp.to = m.from;
  resp.snap_meta = m.snap_meta;
  resp.reject = true;
  resp.reject_hint = cfg_.max_snapshot_bytes;
  Send(std::move(resp));
}

bool Node::Restore(const Snapshot& snap) {
  if (snap.meta.index <= log_.committed()) return false;
  if (log_.MatchTerm(snap.meta.index, snap.meta.term)) {
    // We already have the snapshot's last entry: the log agrees up to it,
    // so just commit it (the entries stay; the state machine applies them).
    log_.CommitTo(snap.meta.index);
    ApplyCommittedConfChanges();
    return false;
  }
  log_.Restore(snap);
  conf_ = snap.meta.conf;
  conf_indexes_.clear();
  return true;
}

// ---------------------------------------------------------------------------
// Membership.

void Node::NoteAppended(const std::vector<Entry>& entries, size_t from) {
  if (from >= entries.size()) return;
  // Entries from entries[from] on replace whatever the log had there.
  conf_indexes_.erase(conf_indexes_.lower_bound(entries[from].index), conf_indexes_.end());
  for (size_t i = from; i < entries.size(); i++) {
    if (entries[i].type == EntryType::kConfChange) conf_indexes_.insert(entries[i].index);
  }
}

// A membership change takes effect on a node when the node learns that it is
// committed. With one-server-at-a-time changes any majority of the old and
// of the new configuration overlap, so nodes that switch at different times
// still cannot elect two leaders in a term; and because a leader proposes a
// change only when none is uncommitted and it has committed an entry of its
// term, no two configurations more than one step apart are ever in use.
void Node::ApplyCommittedConfChanges() {
  bool changed = false;
  while (!conf_indexes_.empty() && *conf_indexes_.begin() <= log_.committed()) {
    Index i = *conf_indexes_.begin();
    conf_indexes_.erase(conf_indexes_.begin());
    std::vector<Entry> e;
    Status s = log_.Slice(i, i + 1, UINT64_MAX, &e);
    RAFT_ASSERT(s.ok() && e.size() == 1,
                "committed conf change " + std::to_string(i) + " unreadable");
    ConfChange cc;
    RAFT_ASSERT(DecodeConfChange(e[0].data, &cc), "malformed conf change at " + std::to_string(i));
    // A change that does not apply (e.g. adding a member twice) is a no-op
    // on every node alike.
    changed |= ApplyConfChange(cc, &conf_);
  }
  if (!changed || role_ != Role::kLeader) return;
  if (!Promotable()) {
    // Raft thesis 4.2.2: a leader removed from the cluster steps down once
    // the change is committed. It first tells the others the new commit
    // index, so that they switch to the new membership without waiting for
    // the next leader to rediscover it.
    BroadcastAppend();
    BecomeFollower(term_, kNoNode);
    return;
  }
  RebuildProgress();
  if (transferee_ != kNoNode && !conf_.IsVoter(transferee_)) AbortTransfer();
  pending_broadcast_ = true;
  // The quorum may have shrunk.
  MaybeCommit();
}

// ---------------------------------------------------------------------------
// Reads (Raft thesis 6.4).

Status Node::ReadIndex(std::string context) {
  if (role_ == Role::kLeader) {
    if (pending_reads_.size() >= cfg_.max_pending_reads) {
      return Status(Code::kTooManyReads, std::to_string(pending_reads_.size()) + " reads pending");
    }
    pending_reads_.push_back(PendingRead{std::move(context), id_, 0, 0});
    StartReadRound();
    return Status::Ok();
  }
  if (leader_ == kNoNode || role_ != Role::kFollower) {
    return Status(Code::kNotLeader, "no leader known");
  }
  Message m;
  m.type = MessageType::kReadIndex;
  m.to = leader_;
  m.context = std::move(context);
  Send(std::move(m));
  return Status::Ok();
}

uint64_t Node::QuorumReadRound() const {
  std::vector<uint64_t> rounds;
  for (NodeId v : conf_.Voters()) {
    if (v == id_) {
      rounds.push_back(read_round_);
    } else {
      auto it = acked_round_.find(v);
      rounds.push_back(it == acked_round_.end() ? 0 : it->second);
    }
  }
  std::sort(rounds.begin(), rounds.end(), std::greater<uint64_t>());
  return rounds[Quorum() - 1];
}

void Node::StartReadRound() {
  // Reads that arrive while a round is in flight wait for it to finish and
  // then share the next round: one heartbeat broadcast serves them all.
  if (pending_reads_.empty() || pending_reads_.back().round != 0) return;
  if (pending_reads_.front().round != 0) return;  // A round is in flight.
  read_round_++;
  for (auto it = pending_reads_.rbegin(); it != pending_reads_.rend() && it->round == 0; ++it) {
    it->round = read_round_;
  }
  BroadcastHeartbeat();
  ReleaseReads();
}

void Node::ReleaseReads() {
  // Until its no-op commits, a new leader does not know the commit index.
  if (!IsLeaderTermCommitted()) return;
  uint64_t confirmed = QuorumReadRound();
  while (!pending_reads_.empty() && pending_reads_.front().round != 0 &&
         pending_reads_.front().round <= confirmed) {
    PendingRead r = std::move(pending_reads_.front());
    pending_reads_.pop_front();
    // Any index at or above the commit index when the read arrived will
    // do; the current commit index is one.
    RespondRead(r.from, r.context, log_.committed());
  }
  if (!pending_reads_.empty() && pending_reads_.back().round == 0) StartReadRound();
}

void Node::RespondRead(NodeId from, const std::string& context, std::optional<Index> index) {
  if (from == id_) {
    if (index) {
      read_states_.push_back(ReadState{*index, context});
    } else {
      rejected_reads_.push_back(context);
    }
    return;
  }
  Message m;
  m.type = MessageType::kReadIndexResp;
  m.to = from;
  m.index = index.value_or(0);
  m.reject = !index;
  m.context = context;
  Send(std::move(m));
}

void Node::RejectRead(NodeId from, const std::string& context) {
  RespondRead(from, context, std::nullopt);
}

// A leader leaving office cannot confirm its pending reads any more; their
// askers learn it now instead of at their timeouts.
void Node::RejectPendingReads() {
  for (const PendingRead& r : pending_reads_) RejectRead(r.from, r.context);
  pending_reads_.clear();
}

// Reads on a follower or candidate: a request is refused, and the leader's
// answer to this node's own request goes to the driver as if the node had
// answered it.
void Node::HandleReadNotLeader(const Message& m) {
  if (m.type == MessageType::kReadIndex) {
    // The asker believes this node leads this term; it does not.
    RejectRead(m.from, m.context);
  } else if (m.type == MessageType::kReadIndexResp) {
    // The leader answers a read this node asked as its follower (a
    // candidate of the same term still takes it: the answer is the leader's).
    RespondRead(id_, m.context, m.reject ? std::nullopt : std::optional<Index>(m.index));
  }
}

// ---------------------------------------------------------------------------
// Ready / Advance.

void Node::Send(Message m) {
  m.from = id_;
  if (m.type != MessageType::kPreVote && m.type != MessageType::kPreVoteResp &&
      m.type != MessageType::kVoteResp) {
    m.term = term_;
  }
  if (m.type == MessageType::kPreVoteResp && m.term == 0) m.term = term_;
  msgs_.push_back(std::move(m));
}

bool Node::HasReady() const {
  if (ready_outstanding_) return false;
  if (pending_broadcast_ || !msgs_.empty() || !read_states_.empty() || !rejected_reads_.empty() ||
      !snap_chunks_.empty()) {
    return true;
  }
  if (SoftState{leader_, role_} != prev_soft_) return true;
  if (HardState{term_, vote_, log_.committed()} != prev_hard_) return true;
  if (log_.SnapshotToPersist() || log_.HasUnstableToPersist()) return true;
  return log_.HasCommittedAfter(handed_);
}

Ready Node::GetReady() {
  RAFT_ASSERT(!ready_outstanding_, "GetReady called again before Advance");
  if (pending_broadcast_) BroadcastAppend();
  Ready rd;
  SoftState soft{leader_, role_};
  if (soft != prev_soft_) {
    rd.soft_state = soft;
    prev_soft_ = soft;
  }
  HardState hard{term_, vote_, log_.committed()};
  if (hard != prev_hard_) {
    rd.hard_state = hard;
    // Term and vote must be durable before any message that depends on
    // them (a vote, an append acknowledgement) leaves the node.
    rd.term_or_vote_changed = hard.term != prev_hard_.term || hard.vote != prev_hard_.vote;
    rd.must_sync = rd.term_or_vote_changed;
    prev_hard_ = hard;
  }
  Index from = handed_;  // Committed entries after it go out in this Ready.
  if (log_.SnapshotToPersist()) {
    rd.snapshot = *log_.PendingSnapshot();
    log_.MarkSnapshotInProgress();
    from = rd.snapshot->meta.index;
    rd.must_sync = true;
  }
  // Each chunk is acknowledged by a kSnapResp of this Ready: stored first.
  rd.snapshot_chunks = std::move(snap_chunks_);
  snap_chunks_.clear();
  if (!rd.snapshot_chunks.empty()) rd.must_sync = true;
  rd.entries = log_.TakeUnstableToPersist();
  if (!rd.entries.empty()) rd.must_sync = true;
  rd.committed_entries = log_.CommittedAfter(from, cfg_.max_committed_bytes_per_ready);
  handed_ = rd.committed_entries.empty() ? from : rd.committed_entries.back().index;
  rd.messages = std::move(msgs_);
  msgs_.clear();
  rd.read_states = std::move(read_states_);
  read_states_.clear();
  rd.rejected_reads = std::move(rejected_reads_);
  rejected_reads_.clear();
  ready_outstanding_ = true;
  return rd;
}

void Node::Advance(const Ready& rd) {
  RAFT_ASSERT(ready_outstanding_, "Advance without GetReady");
  ready_outstanding_ = false;
  if (rd.snapshot) {
    log_.StableSnapTo(rd.snapshot->meta.index);
    applied_ = std::max(applied_, rd.snapshot->meta.index);
  }
  if (!rd.entries.empty()) log_.StableTo(rd.entries.back().index, rd.entries.back().term);
  if (!rd.committed_entries.empty()) {
    applied_ = std::max(applied_, rd.committed_entries.back().index);
  }
  if (role_ == Role::kLeader) {
    self_match_ = std::max(self_match_, log_.StableLastIndex());
    if (MaybeCommit()) pending_broadcast_ = true;
  }
}

std::vector<Entry> Node::TakeCommitted() {
  if (log_.PendingSnapshot()) return {};
  std::vector<Entry> out = log_.CommittedAfter(handed_, cfg_.max_committed_bytes_per_ready);
  if (!out.empty()) {
    handed_ = out.back().index;
    applied_ = handed_;  // Never below applied_: Readies hand out no more than handed_.
  }
  return out;
}

Index Node::OldestSnapshotInTransfer() const {
  Index oldest = 0;
  for (const auto& [id, pr] : progress_) {
    if (pr.state != ProgressState::kSnapshot) continue;
    if (oldest == 0 || pr.pending_snapshot < oldest) oldest = pr.pending_snapshot;
  }
  return oldest;
}

NodeStatus Node::GetStatus() const {
  NodeStatus st;
  st.id = id_;
  st.role = role_;
  st.leader = leader_;
  st.term = term_;
  st.vote = vote_;
  st.commit = log_.committed();
  st.applied = applied_;
  st.last_index = log_.LastIndex();
  st.conf = conf_;
  st.transferee = transferee_;
  st.snapshots_refused = snapshots_refused_;
  st.last_refused_snapshot_index = last_refused_snapshot_index_;
  std::set<const Snapshot*> pinned;
  for (const auto& [id, pr] : progress_) {
    st.peers.push_back(PeerStatus{id, pr.role, pr.match, pr.next, pr.state, pr.recent_active,
                                  pr.snap_refusals, pr.snap_refused_limit_bytes,
                                  pr.snap_backoff_ticks, pr.pending_snapshot});
    if (pr.snap_image && pinned.insert(pr.snap_image.get()).second) {
      st.pinned_snapshot_images++;
      st.pinned_snapshot_bytes += pr.snap_image->data.size();
    }
  }
  return st;
}

}  // namespace raftkv::raft
