// The Ready/Advance contract (types.h): state that a message depends on is
// handed to the driver no later than the message, so the driver persists it
// before sending; the core is deterministic given its seed and inputs.
#include <gtest/gtest.h>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::MakeConf;
using test::MakeEntry;
using test::MakeStorage;
using test::Network;
using test::OfType;

// Raft paper Figure 2 ("Persistent state ... updated on stable storage
// before responding to RPCs"): the grant of a vote comes in the same Ready as
// the hard state recording that vote, with must_sync, so the driver makes the
// vote durable before sending the grant.
TEST(ReadyTest, VoteGrantComesWithHardStateRecordingTheVote) {
  auto storage = MakeStorage(MakeConf({1, 2, 3}));
  Node node(test::DefaultConfig(3), storage.get());
  Message m = test::MakeMsg(MessageType::kVote, 1, 3, 2);
  m.index = 1;
  m.log_term = 1;
  node.Step(m);
  ASSERT_TRUE(node.HasReady());
  Ready rd = node.GetReady();
  auto resp = OfType(rd.messages, MessageType::kVoteResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_FALSE(resp[0].reject);
  ASSERT_TRUE(rd.hard_state.has_value()) << "vote sent without the hard state recording it";
  EXPECT_EQ(rd.hard_state->term, 2u);
  EXPECT_EQ(rd.hard_state->vote, 1u);
  EXPECT_TRUE(rd.must_sync);
  EXPECT_TRUE(rd.term_or_vote_changed) << "the grant may not leave before the vote is durable";
  node.Advance(rd);
}

// Raft paper Figure 2: a candidate votes for itself and persists currentTerm
// and votedFor before requesting votes.
TEST(ReadyTest, VoteRequestsComeWithCandidatesOwnVote) {
  Config c = test::DefaultConfig(1);
  c.pre_vote = false;
  auto storage = MakeStorage(MakeConf({1, 2, 3}));
  Node node(c, storage.get());
  node.Campaign();
  Ready rd = node.GetReady();
  EXPECT_EQ(OfType(rd.messages, MessageType::kVote).size(), 2u);
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->term, 2u);
  EXPECT_EQ(rd.hard_state->vote, 1u);
  EXPECT_TRUE(rd.must_sync);
  node.Advance(rd);
}

// Raft paper Figure 2 (AppendEntries receiver): the follower acknowledges
// entries only together with (or after) the Ready that hands them to the
// driver for appending, with must_sync.
TEST(ReadyTest, AppendAckComesWithTheEntriesItAcknowledges) {
  auto storage = MakeStorage(MakeConf({1, 2, 3}));
  Node node(test::DefaultConfig(2), storage.get());
  Message m = test::AppendMsg(1, 2, 2, 1, 1, 1, {MakeEntry(2, 2, "a"), MakeEntry(3, 2, "b")});
  node.Step(m);
  Ready rd = node.GetReady();
  auto acks = OfType(rd.messages, MessageType::kAppResp);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_FALSE(acks[0].reject);
  EXPECT_EQ(acks[0].index, 3u);
  EXPECT_EQ(rd.entries, m.entries) << "acknowledged entries not handed out for persistence";
  EXPECT_TRUE(rd.must_sync);
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->term, 2u);
  node.Advance(rd);
}

// Raft paper 5.3 / thesis 10.2.1: the leader may send entries before they
// are on its own disk, but it counts itself towards commitment only once the
// driver has persisted them (Advance).
TEST(ReadyTest, LeaderCountsItsOwnEntryOnlyAfterPersisting) {
  test::Solo solo(test::DefaultConfig(1), std::make_unique<MemoryStorage>());
  ASSERT_TRUE(solo.node->Bootstrap("a").ok());
  solo.node->Tick();
  solo.Drain();
  ASSERT_EQ(solo.node->role(), Role::kLeader);
  Index index = 0;
  ASSERT_TRUE(solo.node->Propose("x", &index).ok());
  Ready rd = solo.node->GetReady();
  ASSERT_FALSE(rd.entries.empty());
  EXPECT_EQ(rd.entries.back().index, index);
  EXPECT_FALSE(rd.term_or_vote_changed) << "a leader's appends in its term wait for nothing";
  for (const Entry& e : rd.committed_entries)
    EXPECT_LT(e.index, index) << "committed before its own write was persisted";
  EXPECT_LT(solo.node->commit(), index);
  solo.storage->Append(rd.entries);
  if (rd.hard_state) solo.storage->SetHardState(*rd.hard_state);
  solo.node->Advance(rd);
  EXPECT_EQ(solo.node->commit(), index);
  solo.Drain();
  ASSERT_FALSE(solo.applied.empty());
  EXPECT_EQ(solo.applied.back().index, index);
  EXPECT_EQ(solo.applied.back().data, "x");
}

// The same rule where it matters: in a 3-voter cluster a follower's
// acknowledgement plus the leader's own copy is a quorum only once the
// leader's copy is on its disk. A leader that counted its unpersisted entry
// would commit it on one acknowledgement, and a crash of both could lose it.
TEST(ReadyTest, LeaderDoesNotCountItsUnpersistedEntryTowardACommit) {
  auto net = Network::Make(3);
  net->Campaign(1);
  Index index = 0;
  ASSERT_TRUE(net->node(1).Propose("x", &index).ok());
  // The leader's Ready with the entry is "on disk": its appends may leave.
  Ready rd = net->node(1).GetReady();
  ASSERT_FALSE(rd.entries.empty());
  ASSERT_EQ(rd.entries.back().index, index);
  for (const Message& m : rd.messages) {
    if (m.to == 2 && m.type == MessageType::kApp) net->Deliver(m);
  }
  // Follower 2 stores it and acknowledges; the acknowledgement reaches the leader.
  while (net->ProcessReady(2)) {
  }
  for (const Message& m : net->TakeQueue()) {
    if (m.to == 1) net->Deliver(m);
  }
  EXPECT_LT(net->node(1).commit(), index)
      << "committed on one acknowledgement while its own copy was not persisted";
  net->peer(1).storage->Append(rd.entries);
  if (rd.hard_state) net->peer(1).storage->SetHardState(*rd.hard_state);
  net->node(1).Advance(rd);
  EXPECT_EQ(net->node(1).commit(), index);
}

// types.h: committed entries are handed out once; after Advance they do not
// come back, and an idle node has nothing ready.
TEST(ReadyTest, CommittedEntriesAreHandedOutOnce) {
  test::Solo solo(test::DefaultConfig(1), std::make_unique<MemoryStorage>());
  ASSERT_TRUE(solo.node->Bootstrap("a").ok());
  solo.node->Tick();
  solo.Drain();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(solo.node->Propose("p" + std::to_string(i)).ok());
    solo.Drain();
  }
  EXPECT_FALSE(solo.node->HasReady());
  for (size_t i = 1; i < solo.applied.size(); ++i) {
    EXPECT_EQ(solo.applied[i].index, solo.applied[i - 1].index + 1);
  }
  EXPECT_EQ(solo.applied.back().data, "p4");
  EXPECT_EQ(solo.node->GetStatus().applied, solo.applied.back().index);
}

// node.h (TakeCommitted): a leader that learns a commit while its next
// Ready is still being persisted can take the committed entries at once;
// they hold only what is committed (not the outstanding Ready's own entry)
// and never come again in a Ready.
TEST(ReadyTest, CommitLearnedWhileAReadyIsOutstandingIsTakenOnce) {
  auto net = Network::Make(3);
  net->Campaign(1);
  ASSERT_EQ(net->Leader(), 1u);
  Index x = 0, y = 0;
  ASSERT_TRUE(net->node(1).Propose("x", &x).ok());
  ASSERT_TRUE(net->ProcessReady(1));  // x on the leader's disk, appends queued.
  net->DeliverAll();
  net->ProcessReady(2);
  net->ProcessReady(3);
  std::vector<Message> acks = net->TakeQueue();  // The followers' acknowledgements of x.
  ASSERT_FALSE(OfType(acks, MessageType::kAppResp).empty());

  ASSERT_TRUE(net->node(1).Propose("y", &y).ok());
  Ready rd = net->node(1).GetReady();  // Outstanding: y goes to disk.
  ASSERT_FALSE(rd.entries.empty());
  EXPECT_EQ(rd.entries.back().index, y);
  EXPECT_TRUE(rd.committed_entries.empty()) << "x committed before its acknowledgements";
  EXPECT_TRUE(net->node(1).TakeCommitted().empty()) << "nothing new is committed yet";
  for (const Message& m : acks) net->Deliver(m);
  EXPECT_EQ(net->node(1).commit(), x);

  std::vector<Entry> taken = net->node(1).TakeCommitted();
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].index, x);
  EXPECT_EQ(taken[0].data, "x");
  EXPECT_TRUE(net->node(1).TakeCommitted().empty()) << "handed out twice";
  EXPECT_EQ(net->node(1).GetStatus().applied, x);
  test::Peer& leader = net->peer(1);
  leader.applied_index = x;
  leader.applied.push_back(taken[0]);

  // The outstanding Ready completes; no later Ready hands out x again, and y
  // commits as usual.
  net->storage(1).Append(rd.entries);
  if (rd.hard_state) net->storage(1).SetHardState(*rd.hard_state);
  net->node(1).Advance(rd);
  net->on_ready = [&](NodeId id, const Ready& r) {
    if (id != 1) return;
    for (const Entry& e : r.committed_entries) EXPECT_GT(e.index, x) << "x handed out again";
  };
  net->Stabilize();
  ASSERT_FALSE(leader.applied.empty());
  EXPECT_EQ(leader.applied.back().index, y);
  EXPECT_EQ(leader.applied.back().data, "y");
}

// node.h (TakeCommitted): while a Ready that installs a snapshot is
// outstanding, entries committed after the snapshot are not handed out: the
// state they apply to is not installed yet. They come in a Ready after it.
TEST(ReadyTest, NothingIsTakenWhileASnapshotIsBeingInstalled) {
  auto storage = MakeStorage(MakeConf({1, 2, 3}));
  Node node(test::DefaultConfig(2), storage.get());
  SnapshotMeta meta;
  meta.index = 10;
  meta.term = 2;
  meta.conf = MakeConf({1, 2, 3});
  node.Step(test::SnapChunkMsg(1, 2, 2, meta, "image", 0, 64));  // The only chunk.
  Ready rd = node.GetReady();
  ASSERT_TRUE(rd.snapshot.has_value());
  ASSERT_EQ(rd.snapshot->meta.index, 10u);

  // While it is stored, the leader's next append commits entries after it.
  node.Step(test::AppendMsg(1, 2, 2, 10, 2, 12, {MakeEntry(11, 2, "a"), MakeEntry(12, 2, "b")}));
  ASSERT_EQ(node.commit(), 12u);
  EXPECT_TRUE(node.TakeCommitted().empty()) << "entries handed out before their snapshot";

  test::StoreSnapshot(storage.get(), rd);
  if (rd.hard_state) storage->SetHardState(*rd.hard_state);
  node.Advance(rd);
  Ready next = node.GetReady();
  ASSERT_EQ(next.committed_entries.size(), 2u);
  EXPECT_EQ(next.committed_entries[0].index, 11u);
  EXPECT_EQ(next.committed_entries[1].index, 12u);
  storage->Append(next.entries);
  node.Advance(next);
  EXPECT_TRUE(node.TakeCommitted().empty());
}

// shared/STYLE.md: "Assert the Ready/advance pairing". A second GetReady
// before Advance is a driver bug and stops the process.
TEST(ReadyDeathTest, GetReadyTwiceWithoutAdvanceAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto storage = MakeStorage(MakeConf({1, 2, 3}));
  Node node(test::DefaultConfig(1), storage.get());
  node.Campaign();
  Ready rd = node.GetReady();
  EXPECT_DEATH(node.GetReady(), "Advance");
}

TEST(ReadyDeathTest, AdvanceWithoutGetReadyAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto storage = MakeStorage(MakeConf({1, 2, 3}));
  Node node(test::DefaultConfig(1), storage.get());
  EXPECT_DEATH(node.Advance(Ready{}), "Advance");
}

// shared/STYLE.md ("randomness is a seeded generator handed in"): the same
// seeds and the same inputs give the same Ready sequence on every node;
// another seed gives another history.
TEST(ReadyTest, SameSeedAndInputsGiveIdenticalReadySequences) {
  auto run = [](uint64_t seed_offset) {
    auto net = Network::Make(3, 0, [&](Config& c) { c.seed += seed_offset; });
    net->record_readies = true;
    net->TickUntil([&] { return net->Leader() != kNoNode; }, 100);
    NodeId leader = net->Leader();
    for (int i = 0; i < 3 && leader != kNoNode; ++i) {
      EXPECT_TRUE(net->node(leader).Propose("p" + std::to_string(i)).ok());
      net->Stabilize();
    }
    net->Isolate(leader == kNoNode ? 1 : leader);
    for (int i = 0; i < 40; ++i) net->TickAll();
    net->Heal();
    for (int i = 0; i < 40; ++i) net->TickAll();
    return net->ready_log;
  };
  auto a = run(0);
  auto b = run(0);
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, run(1));
}

}  // namespace
}  // namespace raftkv::raft
