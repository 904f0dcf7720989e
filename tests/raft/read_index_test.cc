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
  // Stepping down (check-quorum), it told its driver the read failed.
  EXPECT_EQ(net->peer(1).rejected_reads, std::vector<std::string>{"r"});
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

// Ready::rejected_reads: a read the leader refuses comes back to the
// follower that asked, in its next Ready after one round trip, under its
// own context, so that the driver fails it at once instead of at its
// timeout. A later read is served as usual.
TEST(ReadIndexTest, FollowerReadRefusedByLeaderIsRejectedWithinOneRoundTrip) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_pending_reads = 1; });
  net->Campaign(1);
  net->Hold(3);  // The leader's read round waits for node 2.
  ASSERT_TRUE(net->node(1).ReadIndex("leader-read").ok());
  net->ProcessReady(1);
  std::vector<Message> round = net->TakeQueue();  // Held back: the round stays open.
  ASSERT_TRUE(net->node(2).ReadIndex("f1").ok());
  ASSERT_TRUE(net->ProcessReady(2));
  net->DeliverAll();  // kReadIndex reaches the leader, whose one read slot is taken.
  ASSERT_TRUE(net->ProcessReady(1));
  auto resp = OfType(net->queue(), MessageType::kReadIndexResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  net->DeliverAll();
  ASSERT_TRUE(net->ProcessReady(2));
  EXPECT_EQ(net->peer(2).rejected_reads, std::vector<std::string>{"f1"});
  EXPECT_TRUE(net->peer(2).reads.empty());

  // Once the leader's read is served, the follower's next one goes through.
  for (const Message& m : round) net->Deliver(m);
  net->Stabilize();
  ASSERT_EQ(net->peer(1).reads.size(), 1u);
  ASSERT_TRUE(net->node(2).ReadIndex("f2").ok());
  int t = net->TickUntil([&] { return !net->peer(2).reads.empty(); }, 5);
  ASSERT_GE(t, 0);
  EXPECT_EQ(net->peer(2).reads[0].context, "f2");
  EXPECT_EQ(net->peer(2).rejected_reads, std::vector<std::string>{"f1"});
}

// A leader that steps down (here: check-quorum, having lost its followers'
// acknowledgements) refuses the forwarded reads it could not confirm, and
// tells its own driver about its local ones.
TEST(ReadIndexTest, LeaderSteppingDownRejectsItsPendingReads) {
  auto net = Network::Make(3);
  net->Campaign(1);
  ASSERT_TRUE(net->node(1).ReadIndex("local").ok());
  ASSERT_TRUE(net->node(2).ReadIndex("forwarded").ok());
  net->ProcessReady(1);
  net->ProcessReady(2);
  // Only the read request and its answer get through: no heartbeat or
  // acknowledgement, so the leader can neither confirm the reads nor keep
  // its lease.
  net->AddFilter([](const Message& m) {
    return m.type != MessageType::kReadIndex && m.type != MessageType::kReadIndexResp;
  });
  net->DeliverAll();
  for (int i = 0; i < 30 && net->node(1).role() == Role::kLeader; ++i) {
    net->Tick(1);
    net->ProcessReady(1);
    net->DeliverAll();
  }
  ASSERT_EQ(net->node(1).role(), Role::kFollower);
  net->ProcessReady(1);
  net->DeliverAll();
  net->ProcessReady(2);
  EXPECT_EQ(net->peer(1).rejected_reads, std::vector<std::string>{"local"});
  EXPECT_EQ(net->peer(2).rejected_reads, std::vector<std::string>{"forwarded"});
  EXPECT_TRUE(net->peer(1).reads.empty());
  EXPECT_TRUE(net->peer(2).reads.empty());

  // A new leader serves the next read.
  net->Heal();
  int t = net->TickUntil([&] { return net->Leader() != kNoNode; }, 40);
  ASSERT_GE(t, 0);
  const NodeId leader = net->Leader();
  const NodeId follower = leader == 2 ? 3 : 2;
  t = net->TickUntil([&] { return net->node(follower).Leader() == leader; }, 10);
  ASSERT_GE(t, 0);
  ASSERT_TRUE(net->node(follower).ReadIndex("again").ok());
  t = net->TickUntil([&] { return !net->peer(follower).reads.empty(); }, 10);
  ASSERT_GE(t, 0);
  EXPECT_EQ(net->peer(follower).reads.back().context, "again");
}

// A read sent to a node that is not (or no longer) the leader of the
// asker's term is refused, not dropped: by a follower of the same term, and
// by a node at a newer term (which tells the asker that term).
TEST(ReadIndexTest, NonLeaderRejectsAForwardedRead) {
  const ConfState conf = test::MakeConf({1, 2, 3});
  test::Solo follower(test::DefaultConfig(1),
                      test::MakeStorage(conf, {}, HardState{3, kNoNode, 1}));
  Message req = test::MakeMsg(MessageType::kReadIndex, 2, 1, 3);
  req.context = "same-term";
  follower.node->Step(req);
  std::vector<Message> out = follower.Drain();
  auto resp = OfType(out, MessageType::kReadIndexResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  EXPECT_EQ(resp[0].context, "same-term");
  EXPECT_EQ(resp[0].term, 3u);

  req.term = 2;
  req.context = "old-term";
  follower.node->Step(req);
  out = follower.Drain();
  resp = OfType(out, MessageType::kReadIndexResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  EXPECT_EQ(resp[0].context, "old-term");
  EXPECT_EQ(resp[0].term, 3u);

  // The asker, a follower of term 2, learns of term 3 and fails the read.
  test::Solo asker(test::DefaultConfig(2), test::MakeStorage(conf, {}, HardState{2, kNoNode, 1}));
  asker.node->Step(test::MakeMsg(MessageType::kHeartbeat, 3, 2, 2));
  asker.Drain();
  ASSERT_EQ(asker.node->Leader(), 3u);
  ASSERT_TRUE(asker.node->ReadIndex("old-term").ok());
  asker.Drain();
  asker.node->Step(resp[0]);
  asker.Drain();
  EXPECT_EQ(asker.rejected_reads, std::vector<std::string>{"old-term"});
  EXPECT_EQ(asker.node->term(), 3u);
}

// Node::ReadIndex refuses at once what it can never serve: a node that is
// neither leader nor a follower with a leader (kNotLeader), a leader past
// max_pending_reads (kTooManyReads). Such a read never appears in a Ready.
TEST(ReadIndexTest, ReadIndexRefusesAtOnceWhatItCannotServe) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_pending_reads = 1; });
  EXPECT_EQ(net->node(2).ReadIndex("no-leader").code(), Code::kNotLeader);
  net->Campaign(1);
  net->Hold(2);
  net->Hold(3);
  ASSERT_TRUE(net->node(1).ReadIndex("first").ok());
  EXPECT_EQ(net->node(1).ReadIndex("second").code(), Code::kTooManyReads);
  net->node(2).Campaign();  // Now a pre-candidate: no leader to ask.
  EXPECT_EQ(net->node(2).ReadIndex("candidate").code(), Code::kNotLeader);
  net->Stabilize();
  net->ReleaseHeld();
  net->Stabilize();
  for (NodeId id : {1, 2, 3}) {
    for (const std::string& c : net->peer(id).rejected_reads) {
      EXPECT_TRUE(c == "first") << "node " << id << " reported " << c;
    }
    for (const ReadState& r : net->peer(id).reads) EXPECT_EQ(r.context, "first");
  }
}

}  // namespace
}  // namespace raftkv::raft
