// Node: one Raft participant as a pure, deterministic state machine.
//
// Inputs: Tick(), Step(message), Propose(data), ReadIndex(context),
// ProposeConfChange(change), TransferLeadership(target). Output: a Ready
// batch (see types.h for what the driver must do with it), acknowledged by
// Advance(). The Node performs no I/O, reads no clock and owns no thread:
// time is counted in ticks and randomness comes from a generator seeded by
// Config::seed, so the same inputs always produce the same outputs.
//
// Not thread-safe: one thread (the driver) calls everything.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "raft/log.h"
#include "raft/progress.h"
#include "raft/rng.h"
#include "raft/status.h"
#include "raft/storage.h"
#include "raft/types.h"

namespace raftkv::raft {

struct Config {
  NodeId id = kNoNode;

  // A follower that hears nothing from a leader for a randomized timeout in
  // [election_timeout_ticks, 2*election_timeout_ticks) starts an election.
  int election_timeout_ticks = 10;
  // A leader sends heartbeats every heartbeat_interval_ticks.
  int heartbeat_interval_ticks = 1;

  // Raft thesis 9.6: a node first asks whether it could win before
  // disrupting the cluster with a higher term.
  bool pre_vote = true;
  // Raft thesis 6.2: a leader that has not heard from a quorum for an
  // election timeout steps down; followers that heard from a leader recently
  // ignore vote requests.
  bool check_quorum = true;

  // Limits (TigerBeetle: put a limit on everything).
  uint64_t max_entry_bytes = 1 << 20;                // One proposed command.
  uint64_t max_msg_bytes = 1 << 20;                  // Entries per AppendEntries.
  uint64_t max_inflight_msgs = 256;                  // AppendEntries in flight per follower.
  uint64_t max_uncommitted_bytes = 64 << 20;         // Proposed but not yet committed.
  uint64_t max_snapshot_chunk_bytes = 1 << 20;       // One InstallSnapshot chunk.
  uint64_t max_pending_reads = 65536;                // ReadIndex requests waiting on the leader.
  uint64_t max_committed_bytes_per_ready = 8 << 20;  // Committed entries per Ready.
  // Largest snapshot image (bytes of Snapshot::data) this node accepts from
  // a leader. A follower refuses a transfer whose next chunk would take the
  // image past it: the chunk is not handed to the driver, the transfer is
  // forgotten, and the leader is told (kSnapResp, reject, reject_hint = this
  // limit) and retries only after a backoff. A driver over a storage with a
  // size limit sets this to what that storage accepts (for
  // storage::DiskStorage, max_snapshot_data_bytes()). The default is
  // DiskStorage's default.
  uint64_t max_snapshot_bytes = (4ull << 30) - (1 << 20);

  // Seed of the node's private random generator (election timeouts).
  uint64_t seed = 1;

  Status Validate() const;
};

// A read of a peer's replication state, for status pages and the simulator.
struct PeerStatus {
  NodeId id = kNoNode;
  MemberRole role = MemberRole::kVoter;
  Index match = 0;
  Index next = 0;
  ProgressState state = ProgressState::kProbe;
  bool recent_active = false;
  // Times this peer refused a snapshot from this leader as over its
  // max_snapshot_bytes (since this node became leader), the limit it named
  // the last time, and the ticks left before the leader offers a snapshot
  // again (0: not backing off).
  uint64_t snapshot_refusals = 0;
  uint64_t snapshot_refused_limit_bytes = 0;
  int snapshot_backoff_ticks = 0;
  // The index of the snapshot being sent to this peer (0: none).
  Index sending_snapshot_index = 0;
};

struct NodeStatus {
  NodeId id = kNoNode;
  Role role = Role::kFollower;
  NodeId leader = kNoNode;
  Term term = 0;
  NodeId vote = kNoNode;
  Index commit = 0;
  Index applied = 0;  // Last index handed out in committed_entries and advanced.
  Index last_index = 0;
  ConfState conf;
  NodeId transferee = kNoNode;
  // Snapshot transfers this node refused (since it started) because the
  // image would pass Config::max_snapshot_bytes, and the index of the last
  // one (0: none). A follower stuck behind such a snapshot stays behind
  // until the leader's snapshot fits: operators should see this.
  uint64_t snapshots_refused = 0;
  Index last_refused_snapshot_index = 0;
  // Leader: the snapshot images it holds for transfers in progress (each
  // transfer keeps sending the snapshot it started with, see
  // Node::PinLatestSnapshot) and their bytes. One per snapshot, however many
  // followers receive it; released when its last transfer ends.
  uint64_t pinned_snapshot_images = 0;
  uint64_t pinned_snapshot_bytes = 0;
  std::vector<PeerStatus> peers;  // Leader only.
};

class Node {
 public:
  // Starts from whatever `storage` holds (an empty storage starts a node with
  // no membership, which waits to be told about the cluster by a leader).
  // `storage` must outlive the Node.
  Node(const Config& config, const Storage* storage);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Makes a fresh node the founding member of a one-node cluster with the
  // given member context (its address). Only valid on an empty log; the
  // change is written as entry 1 and the node campaigns on its next tick.
  Status Bootstrap(const std::string& context);

  // Advances logical time by one tick.
  void Tick();
  // Feeds a message received from a peer. Messages from unknown or stale
  // senders are handled as the protocol says (usually ignored).
  void Step(const Message& m);

  // Leader only: appends an application command. Returns kNotLeader (with
  // Leader() naming the leader if known), kEntryTooLarge,
  // kTooManyUncommitted or kTransferInProgress. On success *index is the
  // entry's index: the command is committed once it shows up there in
  // committed_entries with the same term (*term).
  Status Propose(std::string data, Index* index = nullptr, Term* term = nullptr);

  // Leader only: appends a single-server membership change. Refused with
  // kConfChangePending while an earlier change is uncommitted or before this
  // leader has committed an entry of its term (Raft thesis 4.1, and the
  // single-server change bug fix on the raft-dev list, 2015).
  Status ProposeConfChange(const ConfChange& cc, Index* index = nullptr, Term* term = nullptr);

  // Requests a linearizable read point. On a leader the context joins the
  // next heartbeat round; on a follower it is sent to the leader. Refused at
  // once with kNotLeader if this node is neither the leader nor a follower
  // that knows one, and on a leader with kTooManyReads past
  // max_pending_reads. Once accepted, the context comes back in a later
  // Ready, in read_states when the read may be served, or in
  // rejected_reads when it never will be: the leader refused it, or stepped
  // down before it could confirm it. Only a message lost in the network
  // leaves it unanswered (the caller then times out). A new leader holds
  // reads, not refuses them, until the first entry of its term commits
  // (about one round trip); if it steps down first, it rejects them.
  Status ReadIndex(std::string context);

  // Leader only: hands leadership to `target` (Raft thesis 3.10).
  Status TransferLeadership(NodeId target);

  // Campaigns now (testing and operator use); followers only.
  void Campaign();

  bool HasReady() const;
  // Collects what the driver must do. Must be followed by Advance(ready)
  // before the next call to GetReady.
  Ready GetReady();
  void Advance(const Ready& ready);

  // Committed entries that no Ready or earlier call has handed out, for a
  // driver whose Ready is still on its way to disk: a leader learns a commit
  // from an acknowledgement while its own next write is being synced, and
  // need not hold the answer until then. The caller applies them (in order,
  // after those of any outstanding Ready) before it next calls the Node;
  // they count as applied at once and never appear in a Ready. Empty while a
  // snapshot is being installed, since the entries after it wait for it.
  // Allowed with or without a Ready outstanding.
  std::vector<Entry> TakeCommitted();

  NodeId id() const { return id_; }
  Role role() const { return role_; }
  NodeId Leader() const { return leader_; }
  Term term() const { return term_; }
  Index commit() const { return log_.committed(); }
  const ConfState& conf() const { return conf_; }
  NodeStatus GetStatus() const;
  // Leader: the index of the oldest snapshot a transfer in progress is
  // sending (0: none, or not leader). When the transfer completes, the
  // follower continues from the entry after it, so a driver that compacts
  // its log should keep the entries after this index meanwhile; compacting
  // them makes the follower need a newer snapshot, and one whose transfers
  // always take longer than the log kept lasts never catches up (etcd's
  // server pauses compaction while a snapshot is in flight for this reason).
  Index OldestSnapshotInTransfer() const;

 private:
  // Transitions (one place each, named as in the paper).
  void BecomeFollower(Term term, NodeId leader);
  void BecomePreCandidate();
  void BecomeCandidate();
  void BecomeLeader();
  void ResetTerm(Term term);
  void ResetRandomizedElectionTimeout();

  // Per-role message handling.
  void StepLeader(const Message& m);
  void StepCandidate(const Message& m);
  void StepFollower(const Message& m);

  void TickElection();
  void TickHeartbeat();

  void StartElection(bool pre_vote, bool force);
  int Poll(NodeId from, bool granted);
  bool Promotable() const;
  bool InLease() const;

  // Replication (leader).
  void BroadcastAppend();
  bool MaybeSendAppend(NodeId to, bool send_if_empty);
  std::shared_ptr<const Snapshot> PinLatestSnapshot();
  void SendSnapshotChunk(NodeId to, Progress* pr);
  void BroadcastHeartbeat();
  void SendHeartbeat(NodeId to);
  bool MaybeCommit();
  void AppendEntry(EntryType type, std::string data, Index* index, Term* term);
  void HandleAppendResponse(const Message& m, Progress* pr);
  void HandleSnapResponse(const Message& m, Progress* pr);
  void HandleSnapRefusal(const Message& m, Progress* pr);
  void TickSnapshotBackoff();
  void HandleHeartbeatResponse(const Message& m, Progress* pr);
  void MaybePromoteLearners();
  void MaybeFinishTransfer(NodeId from, Progress* pr);
  void AbortTransfer();

  // Replication (follower).
  void HandleAppendEntries(const Message& m);
  void HandleHeartbeat(const Message& m);
  void HandleSnapshotChunk(const Message& m);
  void RefuseSnapshot(const Message& m);
  bool Restore(const Snapshot& snap);

  // Membership.
  void NoteAppended(const std::vector<Entry>& entries, size_t from);
  void ApplyCommittedConfChanges();
  void RebuildProgress();
  void OnCommitAdvanced();

  // Reads.
  void StartReadRound();
  void ReleaseReads();
  // Answers the read `context` of `from` (this node: into the next Ready)
  // with its read index, or refuses it (nullopt).
  void RespondRead(NodeId from, const std::string& context, std::optional<Index> index);
  void RejectRead(NodeId from, const std::string& context);
  void RejectPendingReads();
  void HandleReadNotLeader(const Message& m);
  uint64_t QuorumReadRound() const;

  void Send(Message m);
  Term TermOrZero(Index i) const;
  uint64_t Quorum() const;
  Index QuorumMatch() const;
  bool IsLeaderTermCommitted() const;

  const Config cfg_;
  const NodeId id_;
  Rng rng_;
  RaftLog log_;

  Term term_ = 0;
  NodeId vote_ = kNoNode;
  NodeId leader_ = kNoNode;
  Role role_ = Role::kFollower;
  ConfState conf_;
  // Indexes of ConfChange entries in the log that are not yet committed.
  // conf_ is the membership as of the commit index: a change takes effect
  // when it commits (see ApplyCommittedConfChanges for why that is safe with
  // one-server-at-a-time changes).
  std::set<Index> conf_indexes_;

  std::map<NodeId, Progress> progress_;  // Leader: one per member except self.
  std::map<NodeId, bool> votes_;         // Candidate/PreCandidate.

  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;

  NodeId transferee_ = kNoNode;
  // Leader: the last index of its own log that is on stable storage. The
  // leader counts itself towards a commit quorum only for persisted entries.
  Index self_match_ = 0;
  // Leader: the last snapshot image copied for a transfer (Progress::
  // snap_image), so that transfers of the same snapshot share one copy. Weak:
  // the transfers own it, and the last one to end frees it.
  std::weak_ptr<const Snapshot> last_pinned_snapshot_;
  // Leader: (index, bytes) of proposals not yet committed, for max_uncommitted_bytes.
  std::deque<std::pair<Index, uint64_t>> uncommitted_;
  uint64_t uncommitted_bytes_ = 0;
  // Leader: proposals arrived since the last Ready; they go out as one
  // AppendEntries per follower when the Ready is collected (batching).
  bool pending_broadcast_ = false;

  // ReadIndex (Raft thesis 6.4). A request waits for a heartbeat round
  // started after it arrived to be acknowledged by a quorum.
  struct PendingRead {
    std::string context;
    NodeId from;  // id_ for local requests.
    Index index;  // Commit index when the request arrived.
    uint64_t round;
  };
  std::deque<PendingRead> pending_reads_;
  uint64_t read_round_ = 0;                 // Last round started.
  std::map<NodeId, uint64_t> acked_round_;  // Highest round each peer acknowledged.
  std::vector<ReadState> read_states_;
  // Contexts of this node's ReadIndex requests that will get no ReadState
  // (Ready::rejected_reads).
  std::vector<std::string> rejected_reads_;

  // Follower: the snapshot being received in chunks. Only its meta and the
  // next offset expected are kept; every accepted chunk goes to the driver
  // (snap_chunks_, then Ready::snapshot_chunks), which stores it. Volatile:
  // after a restart the transfer starts over from offset 0.
  struct IncomingSnapshot {
    SnapshotMeta meta;
    uint64_t next_offset = 0;
  };
  std::optional<IncomingSnapshot> incoming_snap_;
  // Chunks accepted since the last GetReady (one in the normal flow: the
  // leader sends the next chunk only once this one's kSnapResp, which
  // leaves with the Ready that carries it, has arrived).
  std::vector<SnapshotChunk> snap_chunks_;
  // Follower: transfers refused as over max_snapshot_bytes (NodeStatus).
  uint64_t snapshots_refused_ = 0;
  Index last_refused_snapshot_index_ = 0;

  // Ready bookkeeping.
  std::vector<Message> msgs_;
  SoftState prev_soft_;
  HardState prev_hard_;
  bool ready_outstanding_ = false;
  Index applied_ = 0;
  // The last committed index handed out for applying, by a Ready (which
  // Advance then confirms into applied_) or by TakeCommitted.
  Index handed_ = 0;
};

}  // namespace raftkv::raft
