// Leadership transfer: Raft thesis 3.10 (TimeoutNow).
#include <gtest/gtest.h>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::Network;

// Raft thesis 3.10: once the target's log is up to date the leader sends it
// TimeoutNow; the target campaigns at once (no pre-vote, no waiting for an
// election timeout) with a forced vote request that followers in lease
// still answer, and wins.
TEST(TransferTest, TimeoutNowMakesTargetLeaderWithoutWaiting) {
  auto net = Network::Make(3);
  net->Campaign(1);
  const Term term = net->node(1).term();
  net->ClearRecords();
  ASSERT_TRUE(net->node(1).TransferLeadership(2).ok());
  net->Stabilize();  // No ticks at all.
  EXPECT_EQ(net->node(2).role(), Role::kLeader);
  EXPECT_EQ(net->node(2).term(), term + 1);
  EXPECT_EQ(net->node(1).role(), Role::kFollower);
  EXPECT_EQ(net->node(1).Leader(), 2u);
  EXPECT_EQ(net->CountSent(MessageType::kTimeoutNow, 1, 2), 1);
  EXPECT_EQ(net->CountSent(MessageType::kPreVote, 2), 0) << "TimeoutNow skips pre-vote";
  int votes = 0;
  for (const Message& m : net->sent) {
    if (m.type == MessageType::kVote && m.from == 2) {
      EXPECT_TRUE(m.force) << m.DebugString();
      ++votes;
    }
  }
  EXPECT_EQ(votes, 2);
  // The new leader works.
  Index index = 0;
  ASSERT_TRUE(net->node(2).Propose("x", &index).ok());
  net->Stabilize();
  EXPECT_EQ(net->node(2).commit(), index);
}

// Raft thesis 3.10 step 2: a target that lags is first brought up to date;
// TimeoutNow is sent only once its log matches the leader's, so it can win.
TEST(TransferTest, LaggingTargetIsCaughtUpBeforeTimeoutNow) {
  auto net = Network::Make(3);
  net->Campaign(1);
  net->Hold(3);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(net->node(1).Propose("p" + std::to_string(i)).ok());
    net->Stabilize();
  }
  const Index leader_last = net->storage(1).LastIndex();
  ASSERT_LT(net->storage(3).LastIndex(), leader_last);
  Index target_last_at_timeout_now = 0;
  net->on_deliver = [&](const Message& m) {
    if (m.type == MessageType::kTimeoutNow && m.to == 3)
      target_last_at_timeout_now = net->storage(3).LastIndex();
  };
  ASSERT_TRUE(net->node(1).TransferLeadership(3).ok());
  net->ProcessAllReady();
  EXPECT_EQ(net->CountSent(MessageType::kTimeoutNow, 1, 3), 0)
      << "TimeoutNow sent to a target that lacks entries";
  net->ReleaseHeld();
  int t = net->TickUntil([&] { return net->node(3).role() == Role::kLeader; }, 10);
  ASSERT_GE(t, 0) << "transfer to a lagging target did not complete";
  EXPECT_EQ(target_last_at_timeout_now, leader_last);
  EXPECT_EQ(net->peer(3).AppliedData().size(), 5u);
}

// Raft thesis 3.10: during a transfer the leader stops accepting client
// requests (they would be lost or delay the transfer).
TEST(TransferTest, ProposalsRefusedDuringTransfer) {
  auto net = Network::Make(3);
  net->Campaign(1);
  net->Isolate(2);  // The target never hears TimeoutNow.
  ASSERT_TRUE(net->node(1).TransferLeadership(2).ok());
  net->Stabilize();
  EXPECT_EQ(net->node(1).GetStatus().transferee, 2u);
  Status s = net->node(1).Propose("x");
  EXPECT_EQ(s.code(), Code::kTransferInProgress) << s.ToString();
}

// Raft thesis 3.10 step 3: if the transfer does not complete within an
// election timeout, the leader aborts it and resumes accepting requests.
TEST(TransferTest, TransferAbortedAfterElectionTimeoutIfTargetUnreachable) {
  const int et = 10;
  auto net = Network::Make(3);
  net->Campaign(1);
  const Term term = net->node(1).term();
  net->Isolate(2);
  ASSERT_TRUE(net->node(1).TransferLeadership(2).ok());
  net->Stabilize();
  for (int i = 0; i < et / 2; ++i) net->TickAll();
  EXPECT_EQ(net->node(1).GetStatus().transferee, 2u) << "aborted well before an election timeout";
  for (int i = et / 2; i < et; ++i) net->TickAll();
  EXPECT_EQ(net->node(1).GetStatus().transferee, kNoNode) << "transfer still running";
  EXPECT_EQ(net->node(1).role(), Role::kLeader);
  EXPECT_EQ(net->node(1).term(), term);
  Index index = 0;
  ASSERT_TRUE(net->node(1).Propose("x", &index).ok());
  net->Stabilize();
  EXPECT_EQ(net->node(1).commit(), index);
}

// Raft thesis 3.10: leadership can only go to a voting member.
TEST(TransferTest, TransferToNonVoterIsRefused) {
  auto net = Network::Make(3, 1);  // 4 is a learner.
  net->Campaign(1);
  EXPECT_FALSE(net->node(1).TransferLeadership(9).ok());
  EXPECT_FALSE(net->node(1).TransferLeadership(4).ok());
  EXPECT_EQ(net->node(1).GetStatus().transferee, kNoNode);
  EXPECT_TRUE(net->node(1).Propose("x").ok());
}

// Only the leader can hand leadership over.
TEST(TransferTest, TransferOnFollowerReturnsNotLeader) {
  auto net = Network::Make(3);
  net->Campaign(1);
  EXPECT_EQ(net->node(2).TransferLeadership(3).code(), Code::kNotLeader);
}

}  // namespace
}  // namespace raftkv::raft
