// The values the Raft core exchanges with its driver: log entries, persistent
// state, membership, snapshots, messages and the Ready batch.
//
// Everything here is a plain value type. The core never performs I/O; the
// driver (the server runtime, or the simulator) persists, sends and applies
// what a Ready asks for, then calls Node::Advance().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace raftkv::raft {

using NodeId = uint64_t;
using Term = uint64_t;
using Index = uint64_t;

// NodeId 0 means "nobody" (no vote, no known leader).
inline constexpr NodeId kNoNode = 0;

enum class EntryType : uint8_t {
  kNormal = 0,      // Application command; data is opaque to Raft. Empty data is a leader no-op.
  kConfChange = 1,  // Membership change; data is an encoded ConfChange.
};

struct Entry {
  Term term = 0;
  Index index = 0;
  EntryType type = EntryType::kNormal;
  std::string data;

  // Bytes this entry counts for against size limits.
  uint64_t SizeBytes() const { return data.size() + 24; }
  bool operator==(const Entry&) const = default;
};

// What must be on stable storage before the node may send any message that
// depends on it (Raft paper, Figure 2, "Persistent state on all servers").
struct HardState {
  Term term = 0;
  NodeId vote = kNoNode;
  Index commit = 0;
  bool operator==(const HardState&) const = default;
  bool IsEmpty() const { return term == 0 && vote == kNoNode && commit == 0; }
};

enum class MemberRole : uint8_t { kVoter = 0, kLearner = 1 };

struct Member {
  NodeId id = kNoNode;
  MemberRole role = MemberRole::kVoter;
  // A learner with promote=true is promoted to voter by the leader once its
  // log has caught up (Raft thesis 4.2.1: new servers join without votes).
  bool promote = false;
  // Opaque to Raft: the server keeps peer addresses here.
  std::string context;
  bool operator==(const Member&) const = default;
};

// The cluster membership at some log position. Members are sorted by id.
struct ConfState {
  std::vector<Member> members;

  const Member* Find(NodeId id) const;
  bool IsVoter(NodeId id) const;
  std::vector<NodeId> Voters() const;
  std::vector<NodeId> Ids() const;
  bool operator==(const ConfState&) const = default;
};

enum class ConfChangeType : uint8_t {
  kAddLearner = 0,      // Add a non-voting member (promote says whether it becomes a voter).
  kPromoteLearner = 1,  // Turn a caught-up learner into a voter.
  kRemoveNode = 2,      // Remove a voter or learner; a removed leader steps down.
};

// A single-server membership change (Raft thesis 4.1). Encoded into the data
// of an EntryType::kConfChange entry with EncodeConfChange.
struct ConfChange {
  ConfChangeType type = ConfChangeType::kAddLearner;
  NodeId node = kNoNode;
  bool promote = false;  // kAddLearner only.
  std::string context;   // kAddLearner only.
  bool operator==(const ConfChange&) const = default;
};

std::string EncodeConfChange(const ConfChange& cc);
// Returns false if data is not a well-formed ConfChange.
bool DecodeConfChange(const std::string& data, ConfChange* out);
// Applies cc to conf. Returns false (leaving conf unchanged) when the change
// does not make sense for conf, e.g. removing an unknown node.
bool ApplyConfChange(const ConfChange& cc, ConfState* conf);

struct SnapshotMeta {
  Index index = 0;  // Last index the snapshot covers.
  Term term = 0;    // Term of that entry.
  ConfState conf;   // Membership as of index.
  bool operator==(const SnapshotMeta&) const = default;
};

struct Snapshot {
  SnapshotMeta meta;
  std::string data;  // Opaque state-machine image.
  // Only in Ready::snapshot, for a snapshot received from the leader: the
  // image was handed to the driver chunk by chunk in Ready::snapshot_chunks
  // (this Ready's and earlier ones'), so `data` is empty and the driver
  // builds the image from the chunks it stored. A Storage never returns a
  // streamed snapshot.
  bool streamed = false;
  bool IsEmpty() const { return meta.index == 0; }
  bool operator==(const Snapshot&) const = default;
};

// One chunk of a snapshot being received from the leader (a kSnap message
// the follower accepted), handed to the driver in Ready::snapshot_chunks.
// The chunks of one transfer come in order: offset 0 starts a transfer (and
// abandons any earlier one, finished or not), every other chunk continues
// the current transfer at the end of what was stored, and the one with
// done=true completes it. A transfer may be abandoned without notice (a
// newer snapshot, a restart, or the follower already having the entries);
// its chunks are then simply never completed.
struct SnapshotChunk {
  SnapshotMeta meta;
  uint64_t offset = 0;
  std::string data;
  bool done = false;
  bool operator==(const SnapshotChunk&) const = default;
};

enum class MessageType : uint8_t {
  kVote = 0,
  kVoteResp,
  kPreVote,
  kPreVoteResp,
  kApp,            // AppendEntries: index/log_term name the entry before `entries`.
  kAppResp,        // index: highest index now matching (or rejected index, with hint).
  kHeartbeat,      // commit and read_round.
  kHeartbeatResp,  // echoes read_round.
  kSnap,           // One chunk of a snapshot: snap_meta, snap_offset, snap_data, snap_done.
  kSnapResp,       // snap_offset: next byte the follower expects; reject: see reject_hint.
  kTimeoutNow,     // Leadership transfer: campaign now, skipping pre-vote.
  kReadIndex,      // Follower asks the leader for a read index; context identifies it.
  kReadIndexResp,  // index: the read index; reject if the leader could not serve it.
};

const char* MessageTypeName(MessageType t);
// Whether a message may leave before the Ready that carries it is durable:
// a leader's appends, heartbeats and snapshot chunks (its term and vote were
// durable before it could win, and it counts its own log toward a commit
// only once persisted) and a follower's read request (it carries no state).
// Votes and acknowledgements wait. A Ready that changes the term or vote
// holds all of its messages (see Ready).
bool MaySendBeforePersist(MessageType t);

struct Message {
  MessageType type = MessageType::kApp;
  NodeId from = kNoNode;
  NodeId to = kNoNode;
  Term term = 0;
  Term log_term = 0;
  Index index = 0;
  Index commit = 0;
  std::vector<Entry> entries;
  bool reject = false;
  // kAppResp with reject: the follower's suggested probe index. kSnapResp
  // with reject: 0 asks the leader to resend from snap_offset; nonzero says
  // the follower refuses the snapshot (it is over the follower's
  // Config::max_snapshot_bytes, which reject_hint is) and the leader backs off.
  Index reject_hint = 0;
  uint64_t read_round = 0;   // kHeartbeat(Resp): leadership-confirmation round.
  bool force = false;        // kVote: campaign caused by TimeoutNow; ignore leader leases.
  std::string context;       // kReadIndex(Resp): opaque request id.
  SnapshotMeta snap_meta;    // kSnap/kSnapResp.
  uint64_t snap_offset = 0;  // kSnap: offset of snap_data; kSnapResp: next offset wanted.
  std::string snap_data;     // kSnap.
  bool snap_done = false;    // kSnap: last chunk.

  // Approximate encoded size, for Config::max_msg_bytes accounting.
  uint64_t SizeBytes() const;
  std::string DebugString() const;
};

// A linearizable read may be served once the state machine has applied
// `index` (Raft thesis 6.4, ReadIndex).
struct ReadState {
  Index index = 0;
  std::string context;
  bool operator==(const ReadState&) const = default;
};

enum class Role : uint8_t { kFollower = 0, kPreCandidate, kCandidate, kLeader };
const char* RoleName(Role r);

// Volatile state that the driver may want to log or expose.
struct SoftState {
  NodeId leader = kNoNode;
  Role role = Role::kFollower;
  bool operator==(const SoftState&) const = default;
};

// What the driver must do, in this order:
//   0. Store `snapshot_chunks`, in order (see SnapshotChunk). Each chunk
//      acknowledges itself: the kSnapResp for it is among `messages`, so
//      the chunk must be stored (fsynced: must_sync is true) before step 3.
//      The core keeps only the meta and next offset of the transfer.
//   1. If snapshot is set, install it in storage (it replaces the log up to
//      its index and resets the state machine). If snapshot->streamed, its
//      data is empty: the image is the one the chunks stored in step 0 (and
//      earlier Readys) complete, the last of them with done=true.
//   2. Append `entries` to storage (an entry at an existing index replaces
//      that entry and everything after it) and persist hard_state if set.
//      Steps 0-2 must be durable (fsynced) before step 3 when must_sync is
//      true.
//   3. Send `messages`. Those for which MaySendBeforePersist holds may be
//      sent before steps 0-2 are durable, unless term_or_vote_changed.
//   4. Apply `committed_entries` in order, and serve `read_states` once the
//      state machine has applied their index. Fail the reads named in
//      `rejected_reads` at once (they will never get a ReadState).
//   5. Call Node::Advance(ready).
struct Ready {
  std::optional<SoftState> soft_state;
  std::optional<HardState> hard_state;
  std::optional<Snapshot> snapshot;
  std::vector<SnapshotChunk> snapshot_chunks;
  std::vector<Entry> entries;
  std::vector<Message> messages;
  std::vector<Entry> committed_entries;
  std::vector<ReadState> read_states;
  // Contexts of ReadIndex requests that were accepted by Node::ReadIndex but
  // will get no ReadState: the leader refused the request (it is no longer
  // the leader, or too many reads are pending) or dropped it when it stepped
  // down. The refusal comes back within one round trip; the driver fails
  // such a read at once (it may retry, e.g. on the new leader) rather than
  // wait for its timeout. Each answer a node receives is reported once, so
  // a request the network duplicated may be answered twice, even once in
  // read_states and once here: the first answer is the outcome, and the
  // driver ignores a context it no longer waits for. A request or answer
  // lost in the network gets neither: the driver still needs its timeout.
  std::vector<std::string> rejected_reads;
  bool must_sync = false;
  // hard_state carries a new term or vote: every message waits for it.
  bool term_or_vote_changed = false;

  bool Empty() const {
    return !soft_state && !hard_state && !snapshot && snapshot_chunks.empty() && entries.empty() &&
           messages.empty() && committed_entries.empty() && read_states.empty() &&
           rejected_reads.empty();
  }
};

}  // namespace raftkv::raft
