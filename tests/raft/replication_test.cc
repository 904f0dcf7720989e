// Log replication: Raft paper 5.3 and 5.4.2, Figure 2 (AppendEntries), and
// etcd-io/raft's batching, pipelining and fast backtracking.
#include <gtest/gtest.h>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::MakeConf;
using test::MakeEntries;
using test::MakeEntry;
using test::MakeStorage;
using test::Network;

std::vector<Entry> Concat(std::vector<Entry> a, const std::vector<Entry>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// kApp messages from `from` to `to` that carry at least one entry.
std::vector<Message> AppsWithEntries(const std::vector<Message>& msgs, NodeId from, NodeId to) {
  std::vector<Message> out;
  for (const Message& m : msgs)
    if (m.type == MessageType::kApp && m.from == from && m.to == to && !m.entries.empty())
      out.push_back(m);
  return out;
}

// Raft paper 5.3: the leader appends the command to its log, replicates it,
// and once it is committed every server applies it at the same index.
TEST(ReplicationTest, ProposalReplicatesAndCommitsOnAllNodes) {
  auto net = Network::Make(3);
  net->Campaign(1);
  Index index = 0;
  Term term = 0;
  ASSERT_TRUE(net->node(1).Propose("x", &index, &term).ok());
  EXPECT_EQ(index, 3u);  // 1: initial snapshot, 2: the leader's no-op.
  EXPECT_EQ(term, net->node(1).term());
  net->Stabilize();
  for (NodeId id : {1, 2, 3}) {
    const auto& applied = net->peer(id).applied;
    ASSERT_FALSE(applied.empty()) << "node " << id;
    EXPECT_EQ(applied.back(), MakeEntry(index, term, "x")) << "node " << id;
    EXPECT_EQ(net->node(id).commit(), index) << "node " << id;
  }
}

// Raft paper 5.3 / etcd-io/raft: a follower that is slow to answer gets the
// entries proposed meanwhile batched into one AppendEntries, not one message
// per proposal.
TEST(ReplicationTest, ProposalsMadeWhileWaitingAreBatchedIntoOneAppendEntries) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_inflight_msgs = 1; });
  net->Campaign(1);
  net->ClearRecords();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(net->node(1).Propose("p" + std::to_string(i)).ok());
  net->Stabilize();
  auto apps = AppsWithEntries(net->sent, 1, 2);
  EXPECT_LE(apps.size(), 2u) << "5 proposals took " << apps.size() << " AppendEntries";
  size_t biggest = 0;
  for (const Message& m : apps) biggest = std::max(biggest, m.entries.size());
  EXPECT_GE(biggest, 4u);
  EXPECT_EQ(net->peer(2).AppliedData(), (std::vector<std::string>{"p0", "p1", "p2", "p3", "p4"}));
}

// etcd-io/raft flow control (Config::max_inflight_msgs): to a follower in
// replicate state at most max_inflight_msgs AppendEntries are outstanding;
// while it does not answer, the leader stops sending it entries.
TEST(ReplicationTest, PipelineIsBoundedByMaxInflightMsgs) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_inflight_msgs = 3; });
  net->Campaign(1);
  net->CutOneWay(2, 1);  // 2 receives but its answers are lost.
  net->ClearRecords();
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(net->node(1).Propose("p" + std::to_string(i)).ok());
    net->Stabilize();
  }
  EXPECT_EQ(AppsWithEntries(net->sent, 1, 2).size(), 3u);
  EXPECT_EQ(net->peer(3).AppliedData().size(), 10u) << "node 3 answers: it must not be held back";
  // Once 2's answers get through again, it catches up.
  net->Heal();
  int t = net->TickUntil([&] { return net->peer(2).AppliedData().size() == 10; }, 50);
  EXPECT_GE(t, 0) << "follower 2 never caught up after its answers got through";
}

// Raft paper 5.3 and Figure 2 (AppendEntries receiver step 3): a follower's
// conflicting, uncommitted entries are deleted and replaced by the leader's;
// they are never applied.
TEST(ReplicationTest, FollowerConflictingEntriesAreTruncatedAndReplaced) {
  auto net = std::make_unique<Network>();
  ConfState conf = MakeConf({1, 2, 3});
  // 1 and 2 hold entry 3 of term 4; 3 holds entries 3..5 of term 3 that a
  // leader of term 3 never managed to replicate.
  auto good = Concat(MakeEntries(2, 2, 2), MakeEntries(3, 3, 4));
  auto stale = Concat(MakeEntries(2, 2, 2), MakeEntries(3, 5, 3));
  net->Add(test::DefaultConfig(1), MakeStorage(conf, good, HardState{4, kNoNode, 1}));
  net->Add(test::DefaultConfig(2), MakeStorage(conf, good, HardState{4, kNoNode, 1}));
  net->Add(test::DefaultConfig(3), MakeStorage(conf, stale, HardState{3, kNoNode, 1}));
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  ASSERT_EQ(net->node(1).term(), 5u);
  ASSERT_TRUE(net->node(1).Propose("z").ok());
  net->Stabilize();
  MemoryStorage& s1 = net->storage(1);
  MemoryStorage& s3 = net->storage(3);
  ASSERT_EQ(s3.LastIndex(), s1.LastIndex());
  std::vector<Entry> e1, e3;
  ASSERT_TRUE(s1.Entries(2, s1.LastIndex() + 1, UINT64_MAX, &e1).ok());
  ASSERT_TRUE(s3.Entries(2, s3.LastIndex() + 1, UINT64_MAX, &e3).ok());
  EXPECT_EQ(e3, e1) << "Log Matching violated";
  for (const Entry& e : net->peer(3).applied) EXPECT_NE(e.term, 3u) << "applied a stale entry";
  EXPECT_EQ(net->peer(3).AppliedData(), (std::vector<std::string>{"t2i2", "t4i3", "z"}));
}

// Raft paper 5.3 (the optimization at the end) / etcd-io/raft fast log
// backtracking: a follower with a long divergent suffix is brought in line in
// a couple of round trips, not one per divergent entry.
TEST(ReplicationTest, FastBacktrackingSkipsLongDivergentSuffix) {
  auto net = std::make_unique<Network>();
  ConfState conf = MakeConf({1, 2, 3});
  auto good = Concat(MakeEntries(2, 11, 2), MakeEntries(12, 61, 4));        // 50 entries of term 4.
  auto divergent = Concat(MakeEntries(2, 11, 2), MakeEntries(12, 111, 3));  // 100 of term 3.
  net->Add(test::DefaultConfig(1), MakeStorage(conf, good, HardState{4, kNoNode, 1}));
  net->Add(test::DefaultConfig(2), MakeStorage(conf, good, HardState{4, kNoNode, 1}));
  net->Add(test::DefaultConfig(3), MakeStorage(conf, divergent, HardState{3, kNoNode, 1}));
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  int rejections = 0;
  for (const Message& m : net->sent)
    if (m.type == MessageType::kAppResp && m.from == 3 && m.reject) ++rejections;
  EXPECT_LE(rejections, 2) << "backtracking took " << rejections << " rejected probes";
  EXPECT_EQ(net->storage(3).LastIndex(), net->storage(1).LastIndex());
  Term t = 0;
  ASSERT_TRUE(net->storage(3).TermAt(61, &t).ok());
  EXPECT_EQ(t, 4u);
}

// The same for a follower that is far behind and divergent: its hint names
// its own last index, and the leader skips the follower's whole divergent
// term in one step.
TEST(ReplicationTest, FastBacktrackingCatchesUpFarBehindDivergentFollower) {
  auto net = std::make_unique<Network>();
  ConfState conf = MakeConf({1, 2, 3});
  auto good = Concat(MakeEntries(2, 11, 2), MakeEntries(12, 61, 4));
  auto behind = Concat(MakeEntries(2, 11, 2), MakeEntries(12, 21, 3));
  net->Add(test::DefaultConfig(1), MakeStorage(conf, good, HardState{4, kNoNode, 1}));
  net->Add(test::DefaultConfig(2), MakeStorage(conf, good, HardState{4, kNoNode, 1}));
  net->Add(test::DefaultConfig(3), MakeStorage(conf, behind, HardState{3, kNoNode, 1}));
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  int rejections = 0;
  for (const Message& m : net->sent)
    if (m.type == MessageType::kAppResp && m.from == 3 && m.reject) ++rejections;
  EXPECT_LE(rejections, 2) << "backtracking took " << rejections << " rejected probes";
  EXPECT_EQ(net->storage(3).LastIndex(), net->storage(1).LastIndex());
  EXPECT_EQ(net->node(3).commit(), net->node(1).commit());
}

// Raft paper 5.4.2 and Figure 8: a leader never commits an entry of an
// earlier term by counting replicas, even once a majority stores it; it
// becomes committed only when an entry of the current term after it is.
TEST(ReplicationTest, LeaderCommitsOnlyCurrentTermEntriesByCounting) {
  auto net = std::make_unique<Network>();
  ConfState conf = MakeConf({1, 2, 3});
  auto tweak = [](Config& c) { c.max_msg_bytes = 30; };  // One entry per AppendEntries.
  for (NodeId id : {1, 2, 3}) {
    Config c = test::DefaultConfig(id);
    tweak(c);
    // 1 led term 2 and wrote entry 2 (term 2) only to itself.
    auto entries = id == 1 ? std::vector<Entry>{MakeEntry(2, 2, "old")} : std::vector<Entry>{};
    net->Add(c, MakeStorage(conf, entries, HardState{3, kNoNode, 1}));
  }
  net->Isolate(3);
  // 2's acknowledgements of entry 3 (the new leader's no-op) are lost, so the
  // leader knows only that 2 stores entry 2.
  net->AddFilter([](const Message& m) {
    return m.type == MessageType::kAppResp && m.from == 2 && !m.reject && m.index >= 3;
  });
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  ASSERT_EQ(net->node(1).term(), 4u);
  Term t = 0;
  ASSERT_TRUE(net->storage(2).TermAt(2, &t).ok()) << "entry 2 was not replicated to node 2";
  ASSERT_EQ(t, 2u);
  bool acked2 = false;
  for (const Message& m : net->delivered)
    if (m.type == MessageType::kAppResp && m.from == 2 && !m.reject && m.index == 2) acked2 = true;
  ASSERT_TRUE(acked2) << "setup: the leader should know that 2 stores entry 2";
  // Entry 2 is on a majority (1 and 2) but is of term 2: not committed.
  EXPECT_EQ(net->node(1).commit(), 1u) << "committed an earlier-term entry by counting";
  EXPECT_TRUE(net->peer(1).AppliedData().empty());
  // An entry of term 4 reaching a majority commits everything before it.
  net->Heal();
  Index index = 0;
  ASSERT_TRUE(net->node(1).Propose("new", &index).ok());
  net->Stabilize();
  EXPECT_EQ(net->node(1).commit(), index);
  EXPECT_EQ(net->peer(1).AppliedData(), (std::vector<std::string>{"old", "new"}));
  net->TickUntil([&] { return net->peer(3).AppliedData().size() == 2; }, 10);
  EXPECT_EQ(net->peer(3).AppliedData(), (std::vector<std::string>{"old", "new"}));
}

// Raft paper 5.3: if a follower's response is lost the leader retries
// AppendEntries indefinitely; the heartbeat exchange reveals the follower
// still lacks (or has not acknowledged) the entry.
TEST(ReplicationTest, LostAppendResponseIsRecoveredByHeartbeat) {
  auto net = Network::Make(3);
  net->Campaign(1);
  net->Isolate(3);
  net->AddFilter([](const Message& m) { return m.type == MessageType::kAppResp && m.from == 2; });
  Index index = 0;
  ASSERT_TRUE(net->node(1).Propose("x", &index).ok());
  net->Stabilize();
  ASSERT_LT(net->node(1).commit(), index);
  net->Heal();
  net->Isolate(3);
  int t = net->TickUntil([&] { return net->node(1).commit() >= index; }, 10);
  EXPECT_GE(t, 0) << "lost acknowledgement never recovered";
}

// Raft paper 5.3 / Figure 2: followers learn the commit index from the
// leader (AppendEntries leaderCommit, and heartbeats) and apply up to it.
TEST(ReplicationTest, FollowersLearnCommitIndexAndApply) {
  auto net = Network::Make(5);
  net->Campaign(1);
  Index index = 0;
  ASSERT_TRUE(net->node(1).Propose("x", &index).ok());
  net->Stabilize();
  net->TickAll();
  for (NodeId id : {1, 2, 3, 4, 5}) {
    EXPECT_EQ(net->node(id).commit(), index) << "node " << id;
    EXPECT_EQ(net->peer(id).AppliedData(), std::vector<std::string>{"x"}) << "node " << id;
  }
}

// Raft paper 5.3: a follower that missed entries while partitioned is
// brought up to date once it is reachable again.
TEST(ReplicationTest, PartitionedFollowerCatchesUpAfterHealing) {
  auto net = Network::Make(3);
  net->Campaign(1);
  net->Isolate(3);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(net->node(1).Propose("p" + std::to_string(i)).ok());
    net->Stabilize();
  }
  EXPECT_EQ(net->peer(2).AppliedData().size(), 20u);
  EXPECT_TRUE(net->peer(3).AppliedData().empty());
  net->Heal();
  int t = net->TickUntil([&] { return net->peer(3).AppliedData().size() == 20; }, 10);
  EXPECT_GE(t, 0);
  EXPECT_EQ(net->peer(3).AppliedData(), net->peer(1).AppliedData());
}

}  // namespace
}  // namespace raftkv::raft
