// Linearizable reads without log writes: Raft thesis 6.4 (ReadIndex).
#include <gtest/gtest.h>

#include <set>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::Network;
using test::OfType;

// Raft thesis 6.4 step 3: the leader serves a read only after a round of
// heartbeats sent after the request arrived has been acknowledged by a
// majority, proving it was still the leader when the request arrived.
TEST(ReadIndexTest, LeaderReleasesReadOnlyAfterQuorumAcksHeartbeatRound) {
  auto net = Network::Make(3);
  net->Campaign(1);
  const Index commit = net->node(1).commit();
  net->Isolate(3);
  ASSERT_TRUE(net->node(1).ReadIndex("r1").ok());
  net->ProcessReady(1);
  if (OfType(net->queue(), MessageType::kHeartbeat).empty()) {
    net->Tick(1);  // The round may start with the next heartbeat tick.
    net->ProcessReady(1);
  }
  ASSERT_FALSE(OfType(net->queue(), MessageType::kHeartbeat).empty());
  EXPECT_TRUE(net->peer(1).reads.empty()) << "read released before any heartbeat round";
  net->DeliverAll();  // Heartbeat reaches 2 (3 is cut off).
  net->ProcessReady(1);
  EXPECT_TRUE(net->peer(1).reads.empty()) << "read released before the quorum answered";
  net->ProcessReady(2);
  net->DeliverAll();  // 2's acknowledgement reaches 1: with 1 itself, a majority.
  net->ProcessReady(1);
  ASSERT_EQ(net->peer(1).reads.size(), 1u);
  EXPECT_EQ(net->peer(1).reads[0], (ReadState{commit, "r1"}));
}

// Raft thesis 6.4: the heartbeat round must start after the read arrived;
// an acknowledgement of an earlier heartbeat says nothing about leadership
// at the time of the read.
TEST(ReadIndexTest, AckOfEarlierHeartbeatDoesNotReleaseRead) {
  auto net = Network::Make(3);
  net->Campaign(1);
  net->Isolate(3);
  net->Tick(1);
  net->ProcessReady(1);
  net->DeliverAll();
  net->ProcessReady(2);
  std::vector<Message> old_acks = OfType(net->TakeQueue(), MessageType::kHeartbeatResp);
  ASSERT_EQ(old_acks.size(), 1u);
  ASSERT_TRUE(net->node(1).ReadIndex("r").ok());
  net->ProcessReady(1);
  auto fresh = net->TakeQueue();  // Hold the new round's heartbeats.
  for (const Message& m : old_acks) net->Deliver(m);
  net->ProcessReady(1);
  EXPECT_TRUE(net->peer(1).reads.empty()) << "released on an acknowledgement older than the read";
  for (const Message& m : fresh) net->Deliver(m);
  net->Stabilize();
  if (net->peer(1).reads.empty()) net->TickAll();
  EXPECT_EQ(net->peer(1).reads.size(), 1u);
}

// Raft thesis 6.4 ("batching"): reads that arrive while a heartbeat round is
// in flight do not each start a round: they share the next one.
TEST(ReadIndexTest, ReadsArrivingDuringARoundShareTheNextRound) {
  auto net = Network::Make(3);
  net->Campaign(1);
  net->ClearRecords();
  ASSERT_TRUE(net->node(1).ReadIndex("r0").ok());
  net->ProcessReady(1);  // Round 1 (or nothing yet, if rounds start on ticks).
  for (int i = 1; i <= 4; ++i) ASSERT_TRUE(net->node(1).ReadIndex("r" + std::to_string(i)).ok());
  net->Stabilize();
  for (int t = 0; t < 3 && net->peer(1).reads.size() < 5; ++t) net->TickAll();
  ASSERT_EQ(net->peer(1).reads.size(), 5u);
  std::set<uint64_t> rounds;
  for (const Message& m : net->sent)
    if (m.type == MessageType::kHeartbeat && m.read_round > 0) rounds.insert(m.read_round);
  EXPECT_LE(rounds.size(), 2u) << "5 reads used " << rounds.size() << " heartbeat rounds";
  EXPECT_LE(net->CountSent(MessageType::kHeartbeat, 1), 4)
      << "more than two heartbeat broadcasts for two batches of reads";
  for (const ReadState& r : net->peer(1).reads) EXPECT_EQ(r.index, net->node(1).commit());
}

// Raft thesis 6.4: a leader cut off from the majority cannot confirm its
// leadership, so it never releases the read (the client times out).
TEST(ReadIndexTest, LeaderWithoutQuorumDoesNotReleaseReads) {
  auto net = Network::Make(3);
  net->Campaign(1);
  net->Isolate(1);
  ASSERT_TRUE(net->node(1).ReadIndex("r").ok());
  for (int i = 0; i < 30; ++i) net->TickAll();
  EXPECT_TRUE(net->peer(1).reads.empty());
  // Not even once it is reconnected as a follower of a newer leader.
  net->Heal();
  for (int i = 0; i < 30; ++i) net->TickAll();
  EXPECT_TRUE(net->peer(1).reads.empty()) << "a deposed leader released a stale read";
}

// Raft thesis 6.4: a follower asks the leader for the read index; the
// leader confirms its leadership and answers with its commit index, which
// the follower releases (to be served once applied).
TEST(ReadIndexTest, FollowerReadIndexIsServedThroughLeader) {
  auto net = Network::Make(3);
  net->Campaign(1);
  ASSERT_TRUE(net->node(1).Propose("x").ok());
  net->Stabilize();
  const Index commit = net->node(1).commit();
  net->ClearRecords();
  ASSERT_TRUE(net->node(2).ReadIndex("f1").ok());
  int t = net->TickUntil([&] { return !net->peer(2).reads.empty(); }, 5);
  ASSERT_GE(t, 0);
  EXPECT_EQ(net->peer(2).reads[0], (ReadState{commit, "f1"}));
  EXPECT_EQ(net->CountSent(MessageType::kReadIndex, 2, 1), 1);
  EXPECT_EQ(net->CountSent(MessageType::kReadIndexResp, 1, 2), 1);
  EXPECT_TRUE(net->peer(1).reads.empty()) << "the follower's read was released on the leader";
  EXPECT_GE(net->peer(2).applied_index, commit);
}

// Raft thesis 6.4 step 1: a new leader does not know the latest commit index
// until it has committed an entry of its own term, so it serves no read
// before then; the read index it then uses covers that entry.
TEST(ReadIndexTest, NewLeaderServesNoReadBeforeCommittingEntryOfItsTerm) {
  auto net = Network::Make(3);
  net->AddFilter([](const Message& m) { return m.type == MessageType::kApp; });
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  ASSERT_EQ(net->node(1).commit(), 1u);  // Its no-op (entry 2) is not committed.
  Status s = net->node(1).ReadIndex("early");
  for (int i = 0; i < 5; ++i) net->TickAll();  // Heartbeat rounds are acknowledged.
  EXPECT_TRUE(net->peer(1).reads.empty()) << "served a read before committing its no-op";
  if (!s.ok()) return;  // Refusing the read outright is also safe.
  net->Heal();
  int t = net->TickUntil([&] { return !net->peer(1).reads.empty(); }, 5);
  ASSERT_GE(t, 0);
  EXPECT_GE(net->peer(1).reads[0].index, 2u);
}

// Raft thesis 6.4: the read index is the commit index, so once the state
// machine has applied up to it the read sees every write acknowledged before
// the read was issued.
TEST(ReadIndexTest, ReadIndexCoversEveryCommittedWrite) {
  auto net = Network::Make(3);
  net->Campaign(1);
  Index w = 0;
  ASSERT_TRUE(net->node(1).Propose("w", &w).ok());
  net->Stabilize();
  ASSERT_TRUE(net->node(3).ReadIndex("after-w").ok());
  int t = net->TickUntil([&] { return !net->peer(3).reads.empty(); }, 5);
  ASSERT_GE(t, 0);
  EXPECT_GE(net->peer(3).reads[0].index, w);
}

}  // namespace
}  // namespace raftkv::raft
