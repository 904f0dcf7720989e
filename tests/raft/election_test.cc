// Leader election: Raft paper 5.2 and 5.4.1, Figure 2 (RequestVote), and
// the thesis extensions pre-vote (9.6), check-quorum and leases (6.2, 4.2.3).
#include <gtest/gtest.h>

#include <set>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::MakeConf;
using test::MakeEntries;
using test::MakeStorage;
using test::Network;
using test::OfType;
using test::Solo;

Message VoteRequest(MessageType type, NodeId from, NodeId to, Term term, Index last_index,
                    Term last_term, bool force = false) {
  Message m = test::MakeMsg(type, from, to, term);
  m.index = last_index;
  m.log_term = last_term;
  m.force = force;
  return m;
}

// The vote responses in `msgs` addressed to `to`.
std::vector<Message> VoteResponsesTo(const std::vector<Message>& msgs, NodeId to,
                                     MessageType type = MessageType::kVoteResp) {
  std::vector<Message> out;
  for (const Message& m : msgs)
    if (m.type == type && m.to == to) out.push_back(m);
  return out;
}

// Raft thesis 4.1 (bootstrapping) and 3.4: a one-member cluster's single
// server is a majority of itself, so it elects itself without any peer; the
// founding configuration names it as a voter with its context.
TEST(ElectionTest, SingleNodeBootstrapsAndBecomesLeader) {
  Network net;
  net.AddEmpty(1);
  ASSERT_TRUE(net.node(1).Bootstrap("addr-1").ok());
  int ticks = net.TickUntil([&] { return net.node(1).role() == Role::kLeader; }, 20);
  ASSERT_GE(ticks, 0) << "bootstrapped node never became leader";
  EXPECT_LE(ticks, 1) << "node.h: a bootstrapped node campaigns on its next tick";
  net.Stabilize();
  Node& n = net.node(1);
  EXPECT_EQ(n.Leader(), 1u);
  EXPECT_TRUE(n.conf().IsVoter(1));
  ASSERT_NE(n.conf().Find(1), nullptr);
  EXPECT_EQ(n.conf().Find(1)->context, "addr-1");
  // The founding configuration is entry 1, and the leader commits a no-op of
  // its own term on top (Raft thesis 6.4 / 8).
  ASSERT_GE(net.peer(1).applied.size(), 2u);
  EXPECT_EQ(net.peer(1).applied[0].index, 1u);
  EXPECT_EQ(net.peer(1).applied[0].type, EntryType::kConfChange);
  EXPECT_EQ(net.peer(1).applied.back().term, n.term());
  // A node with a log cannot be bootstrapped again.
  EXPECT_FALSE(n.Bootstrap("again").ok());
}

// Raft paper 5.2: election timeouts are chosen randomly from a fixed
// interval, here [election_timeout_ticks, 2*election_timeout_ticks), so that
// split votes are rare.
TEST(ElectionTest, ElectionTimeoutIsRandomizedBetweenTimeoutAndTwiceTimeout) {
  const int et = 10;
  std::set<int> seen;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    Config c = test::DefaultConfig(1);
    c.seed = seed;
    Solo solo(c, MakeStorage(MakeConf({1, 2, 3})));
    int ticks = 0;
    while (solo.node->role() == Role::kFollower && ticks < 10 * et) {
      solo.node->Tick();
      ++ticks;
    }
    EXPECT_GE(ticks, et) << "seed " << seed << " campaigned before the election timeout";
    EXPECT_LT(ticks, 2 * et) << "seed " << seed << " waited 2*election_timeout or more";
    seen.insert(ticks);
  }
  // Over 200 seeds every value of the interval should come up.
  EXPECT_EQ(seen.size(), static_cast<size_t>(et));
}

// Raft paper 5.2: a candidate wins an election if it receives votes from a
// majority of the servers in the full cluster for the same term.
TEST(ElectionTest, CandidateWithMajorityOfVotesBecomesLeader) {
  auto net = Network::Make(3);
  net->Isolate(3);
  net->Campaign(1);
  EXPECT_EQ(net->node(1).role(), Role::kLeader);
  EXPECT_EQ(net->node(1).term(), 2u);
  EXPECT_EQ(net->node(2).Leader(), 1u);
  EXPECT_EQ(net->node(2).term(), 2u);
  EXPECT_EQ(net->node(3).term(), 1u) << "isolated node heard of the election";
}

// Raft paper 5.2: without a majority the candidate does not become leader
// (it waits, and times out into a new election).
TEST(ElectionTest, CandidateWithoutMajorityDoesNotBecomeLeader) {
  auto net = Network::Make(5, 0, [](Config& c) { c.pre_vote = false; });
  net->Isolate(3);
  net->Isolate(4);
  net->Isolate(5);
  net->Campaign(1);
  EXPECT_EQ(net->node(1).role(), Role::kCandidate);
  EXPECT_EQ(net->node(1).term(), 2u);
  EXPECT_EQ(net->node(2).Leader(), kNoNode);
}

// Raft paper Figure 2, RequestVote receiver: grant only if votedFor is null
// or candidateId, so each server votes for at most one candidate per term;
// the vote is durable (it survives a restart).
TEST(ElectionTest, NodeGrantsAtMostOneVotePerTerm) {
  Solo solo(test::DefaultConfig(3), MakeStorage(MakeConf({1, 2, 3})));
  solo.node->Step(VoteRequest(MessageType::kVote, 1, 3, 2, 1, 1));
  auto resp = VoteResponsesTo(solo.Drain(), 1);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_FALSE(resp[0].reject);
  EXPECT_EQ(resp[0].term, 2u);

  solo.node->Step(VoteRequest(MessageType::kVote, 2, 3, 2, 1, 1));
  resp = VoteResponsesTo(solo.Drain(), 2);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject) << "voted twice in term 2";

  // A repeated request from the candidate we voted for is granted again
  // (votedFor == candidateId), e.g. when our first answer was lost.
  solo.node->Step(VoteRequest(MessageType::kVote, 1, 3, 2, 1, 1));
  resp = VoteResponsesTo(solo.Drain(), 1);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_FALSE(resp[0].reject);

  // After a restart the persisted vote still binds.
  solo.node = std::make_unique<Node>(test::DefaultConfig(3), solo.storage.get());
  solo.node->Step(VoteRequest(MessageType::kVote, 2, 3, 2, 1, 1));
  resp = VoteResponsesTo(solo.Drain(), 2);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject) << "restart forgot the vote of term 2";
}

// Raft paper 5.4.1: the voter denies its vote if its own log is more
// up-to-date than the candidate's (later last term, or same last term and
// longer). A request with a higher term still advances the voter's term (5.1).
TEST(ElectionTest, VoteRefusedToCandidateWithLessUpToDateLog) {
  Config c = test::DefaultConfig(3);
  Solo solo(c, MakeStorage(MakeConf({1, 2, 3}), MakeEntries(2, 3, 2), HardState{2, kNoNode, 1}));
  // Same last term, shorter log.
  solo.node->Step(VoteRequest(MessageType::kVote, 1, 3, 3, 2, 2));
  auto resp = VoteResponsesTo(solo.Drain(), 1);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  EXPECT_EQ(solo.node->term(), 3u);
  EXPECT_EQ(solo.node->GetStatus().vote, kNoNode);
  // Longer log, but of an earlier last term.
  solo.node->Step(VoteRequest(MessageType::kVote, 2, 3, 3, 9, 1));
  resp = VoteResponsesTo(solo.Drain(), 2);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  // As up-to-date: granted (nobody got our vote in term 3 yet).
  solo.node->Step(VoteRequest(MessageType::kVote, 2, 3, 3, 3, 2));
  resp = VoteResponsesTo(solo.Drain(), 2);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_FALSE(resp[0].reject);
}

// Raft paper 5.4.1 applies to pre-votes too (Raft thesis 9.6): a pre-vote
// for a less up-to-date log is refused, and a pre-vote never changes the
// voter's term or vote.
TEST(ElectionTest, PreVoteRefusedToLessUpToDateLogAndLeavesTermAlone) {
  Solo solo(test::DefaultConfig(3),
            MakeStorage(MakeConf({1, 2, 3}), MakeEntries(2, 3, 2), HardState{2, kNoNode, 1}));
  solo.node->Step(VoteRequest(MessageType::kPreVote, 1, 3, 3, 2, 2));
  auto resp = VoteResponsesTo(solo.Drain(), 1, MessageType::kPreVoteResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  solo.node->Step(VoteRequest(MessageType::kPreVote, 2, 3, 3, 3, 2));
  resp = VoteResponsesTo(solo.Drain(), 2, MessageType::kPreVoteResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_FALSE(resp[0].reject);
  EXPECT_EQ(solo.node->term(), 2u) << "a pre-vote changed the voter's term";
  EXPECT_EQ(solo.node->GetStatus().vote, kNoNode);
  EXPECT_EQ(solo.storage->InitialHardState().term, 2u);
}

// Raft paper 5.1: if a server discovers that its term is out of date, it
// immediately reverts to follower state. A deposed leader learns the new
// term from the new leader.
TEST(ElectionTest, HigherTermMakesLeaderStepDown) {
  auto net = Network::Make(3);
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  const Term old_term = net->node(1).term();
  // 2 and 3 lose contact with 1 and elect one of themselves; 1 does not tick.
  net->Isolate(1);
  int t = net->TickNodesUntil(
      {2, 3},
      [&] { return net->node(2).role() == Role::kLeader || net->node(3).role() == Role::kLeader; },
      100);
  ASSERT_GE(t, 0) << "2 and 3 did not elect a new leader";
  const NodeId new_leader = net->node(2).role() == Role::kLeader ? 2 : 3;
  const Term new_term = net->node(new_leader).term();
  ASSERT_GT(new_term, old_term);
  EXPECT_EQ(net->node(1).role(), Role::kLeader);  // Still believes it leads.
  net->Heal();
  t = net->TickUntil([&] { return net->node(1).role() == Role::kFollower; }, 3);
  ASSERT_GE(t, 0) << "old leader did not step down on seeing term " << new_term;
  EXPECT_EQ(net->node(1).term(), new_term);
  net->TickAll();
  EXPECT_EQ(net->node(1).Leader(), new_leader);
}

// Raft paper 5.1: a message with a higher term, even a response, makes the
// leader step down at that term.
TEST(ElectionTest, HigherTermResponseMakesLeaderStepDown) {
  auto net = Network::Make(3);
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  Message m;
  m.type = MessageType::kAppResp;
  m.from = 2;
  m.to = 1;
  m.term = net->node(1).term() + 3;
  m.index = 2;
  net->node(1).Step(m);
  EXPECT_EQ(net->node(1).role(), Role::kFollower);
  EXPECT_EQ(net->node(1).term(), m.term);
  EXPECT_FALSE(net->node(1).Propose("x").ok());
}

// Raft thesis 9.6: with pre-vote, a node partitioned away keeps failing its
// pre-vote and never increments its term, so when it rejoins it does not
// force the healthy leader to step down.
TEST(ElectionTest, PreVoteKeepsRejoiningNodeFromDisruptingLeader) {
  auto net = Network::Make(3);
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  const Term term = net->node(1).term();
  net->Isolate(3);
  for (int i = 0; i < 100; ++i) net->TickAll();
  EXPECT_EQ(net->node(3).term(), term) << "partitioned node raised its term";
  EXPECT_NE(net->node(3).role(), Role::kCandidate);
  EXPECT_GT(net->CountSent(MessageType::kPreVote, 3), 0) << "it should have tried";
  net->Heal();
  for (int i = 0; i < 30; ++i) {
    net->TickAll();
    ASSERT_EQ(net->node(1).role(), Role::kLeader) << "rejoining node deposed the leader";
    ASSERT_EQ(net->node(1).term(), term);
  }
  EXPECT_EQ(net->node(3).role(), Role::kFollower);
  EXPECT_EQ(net->node(3).Leader(), 1u);
}

// Raft thesis 6.2: a leader that does not hear from a majority of the
// cluster for an election timeout steps down (so clients can find the real
// leader), but not before.
TEST(ElectionTest, CheckQuorumLeaderWithoutMajorityStepsDown) {
  const int et = 10;
  auto net = Network::Make(3);
  net->Campaign(1);
  ASSERT_EQ(net->node(1).role(), Role::kLeader);
  net->Isolate(1);
  for (int i = 0; i < et - 1; ++i) {
    net->Tick(1);
    net->Stabilize();
  }
  EXPECT_EQ(net->node(1).role(), Role::kLeader) << "stepped down before an election timeout";
  int t = net->TickNodesUntil(
      {1}, [&] { return net->node(1).role() != Role::kLeader; }, et + 1);
  EXPECT_GE(t, 0) << "isolated leader still leads after two election timeouts";
}

// Raft thesis 6.2, the other side: a leader that hears from a majority
// keeps leading indefinitely.
TEST(ElectionTest, CheckQuorumLeaderWithMajorityStaysLeader) {
  auto net = Network::Make(3);
  net->Campaign(1);
  const Term term = net->node(1).term();
  net->Isolate(3);  // One follower lost: 1 and 2 are still a majority.
  for (int i = 0; i < 100; ++i) net->TickAll();
  EXPECT_EQ(net->node(1).role(), Role::kLeader);
  EXPECT_EQ(net->node(1).term(), term);
}

// Raft thesis 4.2.3: a server that has heard from a current leader within
// the minimum election timeout neither grants a vote nor updates its term on
// a RequestVote (this stops removed or partitioned servers from disrupting).
TEST(ElectionTest, FollowerInLeaseIgnoresVoteRequest) {
  auto net = Network::Make(3);
  net->Campaign(1);
  const Term term = net->node(1).term();
  const Index last = net->storage(3).LastIndex();
  net->ClearRecords();
  net->node(2).Step(VoteRequest(MessageType::kVote, 3, 2, term + 1, last, term));
  net->ProcessReady(2);
  for (const Message& m : net->TakeQueue()) {
    EXPECT_FALSE(m.type == MessageType::kVoteResp && !m.reject) << m.DebugString();
  }
  EXPECT_EQ(net->node(2).term(), term) << "lease ignored: term raised by a vote request";
  EXPECT_EQ(net->node(2).Leader(), 1u);
  // Pre-votes are ignored in the lease as well.
  net->node(2).Step(VoteRequest(MessageType::kPreVote, 3, 2, term + 1, last, term));
  net->ProcessReady(2);
  for (const Message& m : net->TakeQueue()) {
    EXPECT_FALSE(m.type == MessageType::kPreVoteResp && !m.reject) << m.DebugString();
  }
}

// Raft thesis 3.10 / 4.2.3: a vote request caused by a leadership transfer
// (force) is exempt from the lease, since the leader itself asked for it.
TEST(ElectionTest, ForcedVoteRequestBypassesLease) {
  auto net = Network::Make(3);
  net->Campaign(1);
  const Term term = net->node(1).term();
  const Index last = net->storage(3).LastIndex();
  net->node(2).Step(VoteRequest(MessageType::kVote, 3, 2, term + 1, last, term, true));
  net->ProcessReady(2);
  auto resp = VoteResponsesTo(net->TakeQueue(), 3);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_FALSE(resp[0].reject);
  EXPECT_EQ(net->node(2).term(), term + 1);
}

// Raft thesis 9.6: a pre-candidate does not increment its term; only after
// a majority of pre-votes does it become a candidate at term+1.
TEST(ElectionTest, PreCandidateKeepsTermUntilPreVoteMajority) {
  auto net = Network::Make(3);
  net->node(1).Campaign();
  EXPECT_EQ(net->node(1).role(), Role::kPreCandidate);
  EXPECT_EQ(net->node(1).term(), 1u);
  net->ProcessReady(1);
  auto pre = OfType(net->queue(), MessageType::kPreVote);
  ASSERT_EQ(pre.size(), 2u);
  for (const Message& m : pre) EXPECT_EQ(m.term, 2u) << "pre-vote asks for the next term";
  EXPECT_EQ(net->storage(1).InitialHardState().term, 1u);
  net->Stabilize();
  EXPECT_EQ(net->node(1).role(), Role::kLeader);
  EXPECT_EQ(net->node(1).term(), 2u);
}

// Raft paper 5.2: a candidate that receives AppendEntries from a leader
// whose term is at least its own recognizes that leader and returns to
// follower state.
TEST(ElectionTest, CandidateStepsDownOnAppendEntriesFromLeaderOfItsTerm) {
  auto net = Network::Make(3, 0, [](Config& c) { c.pre_vote = false; });
  net->Isolate(2);
  net->Isolate(3);
  net->Campaign(2);  // Sends nothing anyone receives: a lone candidate of term 2.
  ASSERT_EQ(net->node(2).role(), Role::kCandidate);
  ASSERT_EQ(net->node(2).term(), 2u);
  net->node(2).Step(test::AppendMsg(1, 2, 2, 1, 1, 1));
  EXPECT_EQ(net->node(2).role(), Role::kFollower);
  EXPECT_EQ(net->node(2).term(), 2u);
  EXPECT_EQ(net->node(2).Leader(), 1u);
}

// Raft paper Figure 2 ("If RPC request or response contains term T >
// currentTerm ..." and AppendEntries receiver step 1): a message from a stale
// leader is rejected and does not change the follower's term or leader.
TEST(ElectionTest, StaleLeaderAppendEntriesIsRejected) {
  auto net = Network::Make(3);
  net->Campaign(1);
  const Term term = net->node(1).term();
  Message m = test::AppendMsg(3, 2, term - 1, 2, term, 0, {test::MakeEntry(3, term - 1, "stale")});
  const Index last = net->storage(2).LastIndex();
  net->node(2).Step(m);
  net->Stabilize();
  EXPECT_EQ(net->node(2).term(), term);
  EXPECT_EQ(net->node(2).Leader(), 1u);
  EXPECT_EQ(net->storage(2).LastIndex(), last) << "appended entries from a stale leader";
}

}  // namespace
}  // namespace raftkv::raft
