// Membership changes one server at a time: Raft thesis 4.1-4.2 (learners
// catch up before they vote, removed leaders step down, one change at a time).
#include <gtest/gtest.h>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::MakeConf;
using test::Network;

ConfChange AddLearner(NodeId id, bool promote, std::string context = "") {
  return ConfChange{ConfChangeType::kAddLearner, id, promote, std::move(context)};
}
ConfChange Remove(NodeId id) { return ConfChange{ConfChangeType::kRemoveNode, id, false, ""}; }
ConfChange Change(ConfChangeType type, NodeId id) { return ConfChange{type, id, false, ""}; }

// Raft thesis 4.2.1: a new server joins as a non-voting learner; it does not
// count for commitment while it catches up, and is made a voter (by the
// leader, automatically, when promote is set) once its log has caught up.
TEST(MembershipTest, LearnerIsAddedThenPromotedOnceCaughtUp) {
  Network net;
  net.AddEmpty(1);
  ASSERT_TRUE(net.node(1).Bootstrap("a1").ok());
  ASSERT_GE(net.TickUntil([&] { return net.node(1).role() == Role::kLeader; }, 5), 0);
  net.AddEmpty(2);
  net.Isolate(2);
  ASSERT_TRUE(net.node(1).ProposeConfChange(AddLearner(2, true, "a2")).ok());
  net.Stabilize();
  const Member* m2 = net.node(1).conf().Find(2);
  ASSERT_NE(m2, nullptr) << "learner not added";
  EXPECT_EQ(m2->role, MemberRole::kLearner);
  EXPECT_EQ(m2->context, "a2");
  // The unreachable learner does not hold up commitment.
  Index index = 0;
  ASSERT_TRUE(net.node(1).Propose("x", &index).ok());
  net.Stabilize();
  EXPECT_EQ(net.node(1).commit(), index) << "a learner counted towards the quorum";
  EXPECT_FALSE(net.node(1).conf().IsVoter(2)) << "promoted before catching up";

  net.Heal();
  int t = net.TickUntil(
      [&] { return net.node(1).conf().IsVoter(2) && net.node(2).conf().IsVoter(2); }, 50);
  ASSERT_GE(t, 0) << "learner was never promoted";
  EXPECT_EQ(net.peer(2).AppliedData(), std::vector<std::string>{"x"});
  ASSERT_NE(net.node(2).conf().Find(1), nullptr);
  EXPECT_EQ(net.node(2).conf().Find(1)->context, "a1");
  // Now 2 is a voter of a two-voter cluster: nothing commits without it.
  net.Isolate(2);
  ASSERT_TRUE(net.node(1).Propose("y", &index).ok());
  net.Stabilize();
  EXPECT_LT(net.node(1).commit(), index);
}

// Raft thesis 4.2.1, catch-up rounds: under a steady write load a lone voter
// commits each entry as soon as it has persisted it, so a learner that keeps
// pace is still one entry short of the commit index at every tick. It is
// promoted once it finishes a round (reaches the leader's last index as of
// the round's start) within an election timeout.
TEST(MembershipTest, LearnerKeepingPaceUnderSteadyWritesIsPromoted) {
  Network net;
  net.AddEmpty(1);
  ASSERT_TRUE(net.node(1).Bootstrap("a1").ok());
  ASSERT_GE(net.TickUntil([&] { return net.node(1).role() == Role::kLeader; }, 5), 0);
  net.AddEmpty(2);
  ASSERT_TRUE(net.node(1).ProposeConfChange(AddLearner(2, true, "a2")).ok());
  net.Stabilize();
  ASSERT_NE(net.node(1).conf().Find(2), nullptr);
  int writes = 0;
  for (; writes < 50; writes++) {
    net.Stabilize();  // The learner has everything so far...
    if (net.node(1).conf().IsVoter(2)) break;
    ASSERT_TRUE(net.node(1).Propose("w" + std::to_string(writes)).ok());
    net.ProcessReady(1);  // ...and the lone voter commits one more at once.
    ASSERT_LT(net.peer(2).node->GetStatus().last_index, net.node(1).commit());
    net.Tick(1);
  }
  EXPECT_TRUE(net.node(1).conf().IsVoter(2))
      << "a learner one entry behind at every tick was never promoted (" << writes << " writes)";
  EXPECT_LT(writes, 5);
}

// A learner that answers but lags (its appends carrying entries are lost
// here, as if replication barely kept pace with the writes), with `voters`
// voters and writes going on: is it promoted while still behind?
bool PromotedWhileLagging(int voters) {
  auto net = Network::Make(voters);
  net->Campaign(1);
  const NodeId learner = static_cast<NodeId>(voters) + 1;
  net->AddEmpty(learner);
  if (!net->node(1).ProposeConfChange(AddLearner(learner, true, "")).ok()) return false;
  net->Stabilize();
  if (net->node(1).conf().Find(learner) == nullptr) return false;
  // Catch it up with everything but the newest write, then starve it.
  net->AddFilter([learner](const Message& m) {
    return m.to == learner && m.type == MessageType::kApp && !m.entries.empty();
  });
  for (int i = 0; i < 30; i++) {
    if (!net->node(1).Propose("w" + std::to_string(i)).ok()) return false;
    net->Stabilize();
    net->Tick(1);
    net->Stabilize();
    if (net->node(1).conf().IsVoter(learner)) {
      // Promoted while behind, and commitment never waits for it.
      EXPECT_LT(net->storage(learner).LastIndex(), net->node(1).commit());
      Index index = 0;
      EXPECT_TRUE(net->node(1).Propose("after", &index).ok());
      net->Stabilize();
      EXPECT_EQ(net->node(1).commit(), index) << "the lagging new voter holds up commitment";
      return true;
    }
  }
  return false;
}

// A promotion that keeps the quorum size (2 -> 3 voters) cannot cost
// availability, so a learner that answers is promoted even while it lags:
// otherwise one whose replication barely outpaces the writes would never
// finish a catch-up round (sim seed 305208). One that raises the quorum
// (3 -> 4) still waits until it has caught up.
TEST(MembershipTest, LaggingLearnerIsPromotedOnlyWhenTheQuorumSizeStays) {
  EXPECT_TRUE(PromotedWhileLagging(2)) << "2 -> 3 voters: not promoted";
  EXPECT_FALSE(PromotedWhileLagging(3)) << "3 -> 4 voters: promoted while lagging";
  EXPECT_TRUE(PromotedWhileLagging(4)) << "4 -> 5 voters: not promoted";
}

// Raft thesis 4.2.1: a learner's acknowledgement does not count towards the
// majority.
TEST(MembershipTest, LearnerDoesNotCountForQuorum) {
  auto net = Network::Make(2, 1);  // Voters 1, 2; learner 3.
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  net->Hold(2);
  Index index = 0;
  ASSERT_TRUE(net->node(1).Propose("x", &index).ok());
  net->Stabilize();
  EXPECT_GE(net->storage(3).LastIndex(), index) << "the learner should still replicate";
  EXPECT_LT(net->node(1).commit(), index) << "committed with the learner's acknowledgement";
  net->ReleaseHeld();
  net->Stabilize();
  EXPECT_EQ(net->node(1).commit(), index);
}

// Raft thesis 4.2.1: a learner never starts an election and is never asked
// for its vote.
TEST(MembershipTest, LearnerNeverCampaigns) {
  auto net = Network::Make(2, 1);
  net->Campaign(1);
  for (const Message& m : net->sent) {
    EXPECT_FALSE((m.type == MessageType::kVote || m.type == MessageType::kPreVote) && m.to == 3)
        << "asked the learner to vote: " << m.DebugString();
  }
  net->Isolate(3);
  const Term term = net->node(3).term();
  net->ClearRecords();
  for (int i = 0; i < 100; ++i) net->TickAll();
  net->node(3).Campaign();
  net->Stabilize();
  EXPECT_EQ(net->node(3).role(), Role::kFollower);
  EXPECT_EQ(net->node(3).term(), term);
  EXPECT_EQ(net->CountSent(MessageType::kPreVote, 3) + net->CountSent(MessageType::kVote, 3), 0);
}

// Raft thesis 4.2.1: a vote from a learner is not counted by a candidate,
// even if the learner answers a vote request.
TEST(MembershipTest, LearnerVoteDoesNotCountForCandidate) {
  auto net = Network::Make(3, 1, [](Config& c) { c.pre_vote = false; });  // Learner 4.
  net->Isolate(2);
  net->Isolate(3);
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kCandidate);
  Message m;
  m.type = MessageType::kVoteResp;
  m.from = 4;
  m.to = 1;
  m.term = net->node(1).term();
  net->node(1).Step(m);
  EXPECT_EQ(net->node(1).role(), Role::kCandidate) << "won with a learner's vote";
}

// Raft thesis 4.1: removing a server shrinks the configuration, and the
// majority is then counted in the new, smaller configuration.
TEST(MembershipTest, RemovingFollowerShrinksQuorum) {
  auto net = Network::Make(4);
  net->Campaign(1);
  // With 4 voters, 1 and 2 alone are not a majority.
  net->Hold(3);
  net->Hold(4);
  Index index = 0;
  ASSERT_TRUE(net->node(1).Propose("before", &index).ok());
  net->Stabilize();
  EXPECT_LT(net->node(1).commit(), index);
  net->ReleaseHeld();
  net->Stabilize();
  ASSERT_EQ(net->node(1).commit(), index);

  ASSERT_TRUE(net->node(1).ProposeConfChange(Remove(4)).ok());
  net->Stabilize();
  net->TickAll();
  for (NodeId id : {1, 2, 3}) {
    EXPECT_EQ(net->node(id).conf(), MakeConf({1, 2, 3})) << "node " << id;
  }
  // With 3 voters, 1 and 2 are a majority.
  net->Isolate(3);
  net->Isolate(4);
  ASSERT_TRUE(net->node(1).Propose("after", &index).ok());
  net->Stabilize();
  EXPECT_EQ(net->node(1).commit(), index);
}

// Raft thesis 4.2.2: a leader that is removed from the configuration steps
// down once the change is committed (not before: it still manages the
// cluster until then), and the remaining servers elect a leader among
// themselves.
TEST(MembershipTest, RemovedLeaderStepsDownAfterChangeCommits) {
  auto net = Network::Make(3);
  net->Campaign(1);
  net->Hold(2);
  net->Hold(3);
  Index index = 0;
  ASSERT_TRUE(net->node(1).ProposeConfChange(Remove(1), &index).ok());
  net->Stabilize();
  EXPECT_EQ(net->node(1).role(), Role::kLeader) << "stepped down before the removal committed";
  EXPECT_TRUE(net->node(1).conf().IsVoter(1));
  net->ReleaseHeld();
  net->Stabilize();
  ASSERT_GE(net->node(1).commit(), index);
  EXPECT_NE(net->node(1).role(), Role::kLeader) << "removed leader kept leading";
  EXPECT_FALSE(net->node(1).conf().IsVoter(1));
  int t = net->TickUntil(
      [&] {
        NodeId l = net->Leader();
        return (l == 2 || l == 3) && !net->node(l).conf().IsVoter(1) &&
               net->node(l).commit() > index;
      },
      100);
  ASSERT_GE(t, 0) << "2 and 3 never elected a leader of the new configuration";
  EXPECT_EQ(net->node(2).conf(), MakeConf({2, 3}));
  EXPECT_EQ(net->node(3).conf(), MakeConf({2, 3}));
  for (int i = 0; i < 50; ++i) {
    net->TickAll();
    ASSERT_NE(net->node(1).role(), Role::kLeader);
    ASSERT_NE(net->node(1).role(), Role::kCandidate);
  }
  Index after = 0;
  NodeId leader = net->Leader();
  ASSERT_TRUE(net->node(leader).Propose("after", &after).ok());
  net->Stabilize();
  EXPECT_EQ(net->node(leader).commit(), after);
}

// Raft thesis 4.1: single-server changes are safe only one at a time; a
// second change is refused while the first is uncommitted.
TEST(MembershipTest, SecondConfChangeRefusedWhileOneIsPending) {
  auto net = Network::Make(3);
  net->Campaign(1);
  net->Hold(2);
  net->Hold(3);
  Index index = 0;
  ASSERT_TRUE(net->node(1).ProposeConfChange(AddLearner(4, false), &index).ok());
  net->Stabilize();
  Status s = net->node(1).ProposeConfChange(AddLearner(5, false));
  EXPECT_EQ(s.code(), Code::kConfChangePending) << s.ToString();
  net->ReleaseHeld();
  net->Stabilize();
  ASSERT_GE(net->node(1).commit(), index);
  s = net->node(1).ProposeConfChange(AddLearner(5, false));
  EXPECT_TRUE(s.ok()) << s.ToString();
}

// Raft thesis 4.1 and the single-server change bug (raft-dev, 2015): a new
// leader must commit an entry of its own term before it may propose a
// membership change.
TEST(MembershipTest, ConfChangeRefusedBeforeLeaderCommitsEntryOfItsTerm) {
  auto net = Network::Make(3);
  net->AddFilter([](const Message& m) { return m.type == MessageType::kApp; });
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  Status s = net->node(1).ProposeConfChange(AddLearner(4, false));
  EXPECT_EQ(s.code(), Code::kConfChangePending) << s.ToString();
}

// A change that makes no sense for the configuration is refused up front.
TEST(MembershipTest, InvalidConfChangeIsRefused) {
  auto net = Network::Make(3);
  net->Campaign(1);
  EXPECT_FALSE(net->node(1).ProposeConfChange(Remove(9)).ok());
  EXPECT_FALSE(net->node(1).ProposeConfChange(AddLearner(2, false)).ok());
  EXPECT_FALSE(net->node(1).ProposeConfChange(Change(ConfChangeType::kPromoteLearner, 2)).ok());
}

// Followers refuse membership changes: only the leader proposes.
TEST(MembershipTest, ConfChangeOnFollowerReturnsNotLeader) {
  auto net = Network::Make(3);
  net->Campaign(1);
  EXPECT_EQ(net->node(2).ProposeConfChange(AddLearner(4, false)).code(), Code::kNotLeader);
}

// The ConfChange encoding round-trips and rejects malformed data.
TEST(ConfChangeTest, EncodingRoundTrips) {
  ConfChange cc{ConfChangeType::kAddLearner, 7, true, "10.0.0.7:7000"};
  ConfChange out;
  ASSERT_TRUE(DecodeConfChange(EncodeConfChange(cc), &out));
  EXPECT_EQ(out, cc);
  EXPECT_FALSE(DecodeConfChange("", &out));
  std::string truncated = EncodeConfChange(cc);
  truncated.pop_back();
  EXPECT_FALSE(DecodeConfChange(truncated, &out));
}

// ApplyConfChange: the membership transitions of Raft thesis 4.1.
TEST(ConfChangeTest, ApplyAddPromoteRemove) {
  ConfState conf = MakeConf({1});
  ASSERT_TRUE(ApplyConfChange(ConfChange{ConfChangeType::kAddLearner, 3, true, "c3"}, &conf));
  EXPECT_EQ(conf.Ids(), (std::vector<NodeId>{1, 3}));
  EXPECT_FALSE(conf.IsVoter(3));
  EXPECT_FALSE(ApplyConfChange(Change(ConfChangeType::kAddLearner, 3), &conf));  // Exists.
  ASSERT_TRUE(ApplyConfChange(Change(ConfChangeType::kPromoteLearner, 3), &conf));
  EXPECT_TRUE(conf.IsVoter(3));
  EXPECT_FALSE(ApplyConfChange(Change(ConfChangeType::kPromoteLearner, 3), &conf));
  EXPECT_EQ(conf.Voters(), (std::vector<NodeId>{1, 3}));
  ASSERT_TRUE(ApplyConfChange(Change(ConfChangeType::kRemoveNode, 1), &conf));
  EXPECT_EQ(conf.Voters(), (std::vector<NodeId>{3}));
  ConfState before = conf;
  EXPECT_FALSE(ApplyConfChange(Change(ConfChangeType::kRemoveNode, 9), &conf));
  EXPECT_EQ(conf, before) << "a refused change modified the configuration";
}

}  // namespace
}  // namespace raftkv::raft
