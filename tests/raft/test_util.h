// A deterministic in-test harness for the Raft core: N nodes, each a
// raft::Node over a raft::MemoryStorage, joined by a virtual network that the
// test controls message by message. There is no clock and no thread: time is
// Tick(), delivery is Deliver*/Stabilize().
//
// The harness plays the driver exactly as types.h says (persist snapshot,
// entries and hard state; send; apply; Advance) and checks, while doing so,
// the invariants every test relies on:
//   - a follower sends a vote grant or an AppendEntries acknowledgement only
//     after the state it depends on is in storage (Raft paper Figure 2,
//     "persistent state ... updated on stable storage before responding");
//   - committed entries are handed out once each, in index order;
//   - no two nodes apply different entries at the same index (State Machine
//     Safety, Raft paper Figure 3);
//   - at most one leader per term (Election Safety, Raft paper Figure 3).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "raft/node.h"
#include "raft/storage.h"
#include "raft/types.h"

namespace raftkv::raft::test {

// A ConfState with the given voters (and learners), sorted by id.
inline ConfState MakeConf(std::vector<NodeId> voters, std::vector<NodeId> learners = {}) {
  ConfState conf;
  for (NodeId id : voters) conf.members.push_back(Member{id, MemberRole::kVoter, false, ""});
  for (NodeId id : learners) conf.members.push_back(Member{id, MemberRole::kLearner, false, ""});
  std::sort(conf.members.begin(), conf.members.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
  return conf;
}

inline Entry MakeEntry(Index index, Term term, std::string data = "") {
  Entry e;
  e.index = index;
  e.term = term;
  e.data = std::move(data);
  return e;
}

// Entries [from, to] all of term `term`, with data "t<term>i<index>".
inline std::vector<Entry> MakeEntries(Index from, Index to, Term term) {
  std::vector<Entry> out;
  for (Index i = from; i <= to; ++i) {
    out.push_back(MakeEntry(i, term, "t" + std::to_string(term) + "i" + std::to_string(i)));
  }
  return out;
}

// A storage as if the node had joined a cluster whose membership `conf` is
// recorded by a snapshot at (index 1, term 1), followed by `entries`, with
// hard state `hs` (term defaults to 1, commit to 1).
inline std::unique_ptr<MemoryStorage> MakeStorage(const ConfState& conf,
                                                  const std::vector<Entry>& entries = {},
                                                  HardState hs = HardState{1, kNoNode, 1}) {
  auto s = std::make_unique<MemoryStorage>();
  Snapshot snap;
  snap.meta.index = 1;
  snap.meta.term = 1;
  snap.meta.conf = conf;
  s->ApplySnapshot(snap);
  if (!entries.empty()) s->Append(entries);
  s->SetHardState(hs);
  return s;
}

inline Config DefaultConfig(NodeId id) {
  Config c;
  c.id = id;
  c.election_timeout_ticks = 10;
  c.heartbeat_interval_ticks = 1;
  c.seed = id * 1000 + 7;
  return c;
}

// A message of `type` from `from` to `to` at `term`; the caller fills the rest.
inline Message MakeMsg(MessageType type, NodeId from, NodeId to, Term term) {
  Message m;
  m.type = type;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

// An AppendEntries from `from` to `to`: entries after (index, log_term).
inline Message AppendMsg(NodeId from, NodeId to, Term term, Index index, Term log_term,
                         Index commit, std::vector<Entry> entries = {}) {
  Message m = MakeMsg(MessageType::kApp, from, to, term);
  m.index = index;
  m.log_term = log_term;
  m.commit = commit;
  m.entries = std::move(entries);
  return m;
}

// The chunk of snapshot `meta`'s `image` at `offset`, at most `chunk` bytes
// (the last one marked done).
inline Message SnapChunkMsg(NodeId from, NodeId to, Term term, const SnapshotMeta& meta,
                            const std::string& image, uint64_t offset, uint64_t chunk) {
  Message m = MakeMsg(MessageType::kSnap, from, to, term);
  m.snap_meta = meta;
  m.snap_offset = offset;
  m.snap_data = image.substr(offset, chunk);
  m.snap_done = offset + m.snap_data.size() == image.size();
  return m;
}

inline bool HasType(const std::vector<Message>& msgs, MessageType t) {
  for (const Message& m : msgs)
    if (m.type == t) return true;
  return false;
}

inline std::string ReadyToString(const Ready& rd) {
  std::ostringstream os;
  if (rd.soft_state)
    os << "soft{leader=" << rd.soft_state->leader << " role=" << RoleName(rd.soft_state->role)
       << "} ";
  if (rd.hard_state)
    os << "hard{term=" << rd.hard_state->term << " vote=" << rd.hard_state->vote
       << " commit=" << rd.hard_state->commit << "} ";
  for (const SnapshotChunk& c : rd.snapshot_chunks)
    os << "chunk{index=" << c.meta.index << " offset=" << c.offset << " bytes=" << c.data.size()
       << (c.done ? " done" : "") << "} ";
  if (rd.snapshot)
    os << "snap{index=" << rd.snapshot->meta.index << " term=" << rd.snapshot->meta.term
       << " bytes=" << rd.snapshot->data.size() << (rd.snapshot->streamed ? " streamed" : "")
       << "} ";
  for (const Entry& e : rd.entries)
    os << "ent{" << e.term << "/" << e.index << " " << e.data << "} ";
  for (const Message& m : rd.messages) os << "msg{" << m.DebugString() << "} ";
  for (const Entry& e : rd.committed_entries)
    os << "apply{" << e.term << "/" << e.index << " " << e.data << "} ";
  for (const ReadState& r : rd.read_states) os << "read{" << r.index << " " << r.context << "} ";
  for (const std::string& c : rd.rejected_reads) os << "read-rejected{" << c << "} ";
  os << "sync=" << rd.must_sync;
  return os.str();
}

// Steps 0 and 1 of the Ready contract on a MemoryStorage: stores the
// snapshot chunks (MemoryStorage assembles them), then installs the snapshot
// (for a streamed one, the image the chunks completed).
inline void StoreSnapshot(MemoryStorage* storage, const Ready& rd) {
  for (const SnapshotChunk& c : rd.snapshot_chunks) {
    Status s = storage->WriteSnapshotChunk(c);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  if (rd.snapshot) storage->ApplySnapshot(*rd.snapshot);
}

// One node of the network and what its driver has observed.
struct Peer {
  Config cfg;
  std::unique_ptr<MemoryStorage> storage;
  std::unique_ptr<Node> node;
  std::vector<Entry> applied;               // Every committed entry handed out, in order.
  std::vector<ReadState> reads;             // Every read state released.
  std::vector<std::string> rejected_reads;  // Every context in Ready::rejected_reads.
  std::vector<Snapshot> installed;  // Every snapshot installed from a Ready (with its image).
  Index applied_index = 0;
  // The snapshot transfer whose chunks are stored: meta and bytes stored.
  SnapshotMeta chunk_meta;
  uint64_t chunk_bytes = 0;

  // Data of the applied normal, non-empty entries (the "state machine").
  std::vector<std::string> AppliedData() const {
    std::vector<std::string> out;
    for (const Entry& e : applied)
      if (e.type == EntryType::kNormal && !e.data.empty()) out.push_back(e.data);
    return out;
  }
};

class Network {
 public:
  using Filter = std::function<bool(const Message&)>;  // true = drop.

  Network() = default;
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // A cluster of voters 1..n (and learners after them) that all start from
  // the same snapshot naming the membership. `tweak` adjusts every config.
  static std::unique_ptr<Network> Make(int voters, int learners = 0,
                                       std::function<void(Config&)> tweak = nullptr) {
    auto net = std::make_unique<Network>();
    std::vector<NodeId> v, l;
    for (int i = 1; i <= voters; ++i) v.push_back(i);
    for (int i = voters + 1; i <= voters + learners; ++i) l.push_back(i);
    ConfState conf = MakeConf(v, l);
    for (NodeId id = 1; id <= static_cast<NodeId>(voters + learners); ++id) {
      Config c = DefaultConfig(id);
      if (tweak) tweak(c);
      net->Add(c, MakeStorage(conf));
    }
    return net;
  }

  Peer& Add(const Config& cfg, std::unique_ptr<MemoryStorage> storage) {
    auto p = std::make_unique<Peer>();
    p->cfg = cfg;
    p->storage = std::move(storage);
    p->applied_index = p->storage->LatestSnapshot().meta.index;
    p->node = std::make_unique<Node>(cfg, p->storage.get());
    Peer& ref = *p;
    peers_[cfg.id] = std::move(p);
    return ref;
  }

  // Adds a node with an empty storage: it knows nothing until a leader
  // contacts it.
  Peer& AddEmpty(NodeId id, std::function<void(Config&)> tweak = nullptr) {
    Config c = DefaultConfig(id);
    if (tweak) tweak(c);
    return Add(c, std::make_unique<MemoryStorage>());
  }

  // Replaces a node's Node by one restarted from its storage (a crash that
  // loses only volatile state).
  void Restart(NodeId id) {
    Peer& p = peer(id);
    p.node = std::make_unique<Node>(p.cfg, p.storage.get());
    p.applied_index = p.storage->LatestSnapshot().meta.index;
  }

  Peer& peer(NodeId id) {
    auto it = peers_.find(id);
    EXPECT_NE(it, peers_.end()) << "no node " << id;
    return *it->second;
  }
  Node& node(NodeId id) { return *peer(id).node; }
  MemoryStorage& storage(NodeId id) { return *peer(id).storage; }
  std::vector<NodeId> ids() const {
    std::vector<NodeId> out;
    for (const auto& [id, p] : peers_) out.push_back(id);
    return out;
  }

  // ---- Filters -------------------------------------------------------------
  // Drops every message to or from `id`.
  void Isolate(NodeId id) {
    AddFilter([id](const Message& m) { return m.from == id || m.to == id; });
  }
  // Drops messages between a and b, both ways.
  void Cut(NodeId a, NodeId b) {
    AddFilter([a, b](const Message& m) {
      return (m.from == a && m.to == b) || (m.from == b && m.to == a);
    });
  }
  // Drops messages from a to b only.
  void CutOneWay(NodeId from, NodeId to) {
    AddFilter([from, to](const Message& m) { return m.from == from && m.to == to; });
  }
  void AddFilter(Filter f) { filters_.push_back(std::move(f)); }
  void Heal() { filters_.clear(); }
  // Delays, rather than drops, every message to or from `id` until
  // ReleaseHeld(): a partition whose messages arrive late. Tests whose
  // subject is not message loss use it so that they do not depend on how
  // the core recovers lost messages.
  void Hold(NodeId id) { holds_.push_back(id); }
  // Ends every Hold and queues the held messages, in the order sent.
  void ReleaseHeld() {
    holds_.clear();
    queue_.insert(queue_.begin(), held_.begin(), held_.end());
    held_.clear();
  }

  // ---- Driving -------------------------------------------------------------
  // Handles one Ready of node `id` as a driver must. Sent messages are queued
  // (not delivered). Returns false if the node had nothing ready.
  bool ProcessReady(NodeId id) {
    Peer& p = peer(id);
    if (!p.node->HasReady()) return false;
    Ready rd = p.node->GetReady();
    if (record_readies) ready_log[id].push_back(ReadyToString(rd));
    if (on_ready) on_ready(id, rd);
    // 0. Snapshot chunks, 1. snapshot, 2. entries and hard state.
    for (const SnapshotChunk& c : rd.snapshot_chunks) {
      if (c.offset == 0) p.chunk_meta = c.meta;
      p.chunk_bytes = c.offset + c.data.size();
    }
    StoreSnapshot(p.storage.get(), rd);
    if (rd.snapshot) {
      p.installed.push_back(p.storage->LatestSnapshot());
      p.applied_index = rd.snapshot->meta.index;
    }
    if (!rd.entries.empty()) p.storage->Append(rd.entries);
    if (rd.hard_state) p.storage->SetHardState(*rd.hard_state);
    CheckLeaders();
    // 3. Send, after checking that what each message promises is persisted.
    for (const Message& m : rd.messages) {
      CheckPersistedBeforeSend(p, m);
      EXPECT_EQ(m.from, id) << m.DebugString();
      sent.push_back(m);
      if (trace) trace->push_back(m.DebugString());
      queue_.push_back(m);
    }
    // 4. Apply and release reads.
    for (const Entry& e : rd.committed_entries) {
      EXPECT_EQ(e.index, p.applied_index + 1)
          << "node " << id << " applied out of order: " << e.term << "/" << e.index;
      p.applied_index = e.index;
      p.applied.push_back(e);
      auto [it, inserted] = applied_by_index_.emplace(e.index, e);
      if (!inserted) {
        EXPECT_EQ(it->second, e) << "State Machine Safety: node " << id
                                 << " applied a different entry at index " << e.index;
      }
    }
    for (const ReadState& r : rd.read_states) p.reads.push_back(r);
    for (const std::string& c : rd.rejected_reads) p.rejected_reads.push_back(c);
    // 5. Advance.
    p.node->Advance(rd);
    return true;
  }

  bool ProcessAllReady() {
    bool any = false;
    for (NodeId id : ids()) any |= ProcessReady(id);
    return any;
  }

  // Delivers every queued message (in the order sent) that no filter drops.
  // Messages sent while delivering wait for the next call.
  bool DeliverAll() {
    std::vector<Message> batch;
    batch.swap(queue_);
    for (const Message& m : batch) Deliver(m);
    return !batch.empty();
  }

  // Delivers (or drops) one message now.
  void Deliver(const Message& m) {
    bool drop = peers_.find(m.to) == peers_.end();
    for (const Filter& f : filters_) drop = drop || f(m);
    if (drop) {
      dropped.push_back(m);
      return;
    }
    for (NodeId h : holds_) {
      if (m.from == h || m.to == h) {
        held_.push_back(m);
        return;
      }
    }
    if (on_deliver) on_deliver(m);
    delivered.push_back(m);
    node(m.to).Step(m);
  }

  // Messages sent but not yet delivered.
  std::vector<Message>& queue() { return queue_; }
  // Takes the queued messages out of the network (the test decides their fate).
  std::vector<Message> TakeQueue() {
    std::vector<Message> out;
    out.swap(queue_);
    return out;
  }

  // Handles readies and delivers messages until nothing moves.
  void Stabilize() {
    for (int round = 0; round < 10000; ++round) {
      bool any = ProcessAllReady();
      any |= DeliverAll();
      if (!any) return;
    }
    ADD_FAILURE() << "network did not stabilize";
  }

  void Tick(NodeId id, int n = 1) {
    for (int i = 0; i < n; ++i) node(id).Tick();
  }
  // One tick of every node, then Stabilize().
  void TickAll() {
    for (NodeId id : ids()) node(id).Tick();
    Stabilize();
  }
  // TickAll() until cond() holds (checked before the first tick too).
  // Returns the number of ticks taken, or -1 if max_ticks passed first.
  int TickUntil(const std::function<bool()>& cond, int max_ticks) {
    Stabilize();
    for (int t = 0; t <= max_ticks; ++t) {
      if (cond()) return t;
      if (t == max_ticks) break;
      TickAll();
    }
    return -1;
  }

  // Like TickUntil, but only the nodes in `who` tick (the others are frozen).
  int TickNodesUntil(const std::vector<NodeId>& who, const std::function<bool()>& cond,
                     int max_ticks) {
    Stabilize();
    for (int t = 0; t <= max_ticks; ++t) {
      if (cond()) return t;
      if (t == max_ticks) break;
      for (NodeId id : who) node(id).Tick();
      Stabilize();
    }
    return -1;
  }

  // Campaigns node `id` and stabilizes; the caller checks the outcome.
  void Campaign(NodeId id) {
    node(id).Campaign();
    Stabilize();
  }
  // The leader of the highest term, or kNoNode.
  NodeId Leader() {
    NodeId best = kNoNode;
    Term best_term = 0;
    for (NodeId id : ids()) {
      Node& n = node(id);
      if (n.role() == Role::kLeader && n.term() >= best_term) {
        best = id;
        best_term = n.term();
      }
    }
    return best;
  }

  // Counts the messages of type t that `from` sent to `to` (kNoNode = any).
  int CountSent(MessageType t, NodeId from = kNoNode, NodeId to = kNoNode) const {
    int n = 0;
    for (const Message& m : sent)
      if (m.type == t && (from == kNoNode || m.from == from) && (to == kNoNode || m.to == to)) ++n;
    return n;
  }
  void ClearRecords() {
    sent.clear();
    delivered.clear();
    dropped.clear();
  }

  std::vector<Message> sent;       // Every message any node sent.
  std::vector<Message> delivered;  // Every message stepped into a node.
  std::vector<Message> dropped;    // Every message a filter (or no such node) dropped.
  std::function<void(const Message&)> on_deliver;      // Called before each delivery.
  std::function<void(NodeId, const Ready&)> on_ready;  // Called on each Ready, before handling.
  std::vector<std::string>* trace = nullptr;           // If set, DebugString of each sent message.
  bool record_readies = false;
  std::map<NodeId, std::vector<std::string>> ready_log;

 private:
  void CheckPersistedBeforeSend(const Peer& p, const Message& m) {
    const HardState hs = p.storage->InitialHardState();
    switch (m.type) {
      case MessageType::kVote:
        EXPECT_TRUE(hs.term == m.term && hs.vote == m.from)
            << "candidate sent " << m.DebugString() << " before persisting its own vote";
        break;
      case MessageType::kVoteResp:
        if (!m.reject) {
          EXPECT_TRUE(hs.term == m.term && hs.vote == m.to)
              << "vote granted (" << m.DebugString() << ") before the vote was persisted";
        }
        break;
      case MessageType::kAppResp:
        if (!m.reject) {
          EXPECT_LE(m.index, p.storage->LastIndex())
              << "acknowledged entries not yet in storage: " << m.DebugString();
        }
        break;
      case MessageType::kSnapResp:
        if (!m.reject) {
          EXPECT_TRUE(m.snap_meta == p.chunk_meta && m.snap_offset <= p.chunk_bytes)
              << "acknowledged a snapshot chunk not yet stored: " << m.DebugString();
        }
        break;
      default:
        break;
    }
  }

  void CheckLeaders() {
    for (const auto& [id, p] : peers_) {
      if (p->node->role() != Role::kLeader) continue;
      auto [it, inserted] = leader_of_term_.emplace(p->node->term(), id);
      EXPECT_EQ(it->second, id) << "Election Safety: two leaders in term " << p->node->term();
    }
  }

  std::map<NodeId, std::unique_ptr<Peer>> peers_;
  std::vector<Filter> filters_;
  std::vector<NodeId> holds_;
  std::vector<Message> held_;
  std::vector<Message> queue_;
  std::map<Index, Entry> applied_by_index_;
  std::map<Term, NodeId> leader_of_term_;
};

// Drives a lone Node (no network): the messages it sends are collected for
// the test to inspect.
struct Solo {
  explicit Solo(const Config& cfg, std::unique_ptr<MemoryStorage> s)
      : storage(std::move(s)), node(std::make_unique<Node>(cfg, storage.get())) {}

  // Handles every pending Ready; returns the messages sent.
  std::vector<Message> Drain() {
    std::vector<Message> out;
    while (node->HasReady()) {
      Ready rd = node->GetReady();
      StoreSnapshot(storage.get(), rd);
      if (!rd.entries.empty()) storage->Append(rd.entries);
      if (rd.hard_state) storage->SetHardState(*rd.hard_state);
      out.insert(out.end(), rd.messages.begin(), rd.messages.end());
      for (const Entry& e : rd.committed_entries) applied.push_back(e);
      for (const ReadState& r : rd.read_states) reads.push_back(r);
      for (const std::string& c : rd.rejected_reads) rejected_reads.push_back(c);
      chunks.insert(chunks.end(), rd.snapshot_chunks.begin(), rd.snapshot_chunks.end());
      node->Advance(rd);
    }
    return out;
  }

  std::unique_ptr<MemoryStorage> storage;
  std::unique_ptr<Node> node;
  std::vector<Entry> applied;
  std::vector<ReadState> reads;
  std::vector<std::string> rejected_reads;
  std::vector<SnapshotChunk> chunks;  // Every snapshot chunk handed out.
};

inline std::vector<Message> OfType(const std::vector<Message>& msgs, MessageType t) {
  std::vector<Message> out;
  for (const Message& m : msgs)
    if (m.type == t) out.push_back(m);
  return out;
}

}  // namespace raftkv::raft::test
