// Limits (shared/STYLE.md, from TigerBeetle: put a limit on everything;
// past a limit, refuse with a clear error) and the refusals of node.h.
#include <gtest/gtest.h>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::Network;

uint64_t EntriesBytes(const std::vector<Entry>& entries) {
  uint64_t n = 0;
  for (const Entry& e : entries) n += e.SizeBytes();
  return n;
}

// Config::max_entry_bytes: one command over the limit is refused with
// kEntryTooLarge and nothing is appended.
TEST(LimitsTest, EntryOverMaxEntryBytesIsRefused) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_entry_bytes = 100; });
  net->Campaign(1);
  const Index last = net->storage(1).LastIndex();
  Status s = net->node(1).Propose(std::string(200, 'x'));
  EXPECT_EQ(s.code(), Code::kEntryTooLarge) << s.ToString();
  net->Stabilize();
  EXPECT_EQ(net->storage(1).LastIndex(), last);
  EXPECT_TRUE(net->node(1).Propose(std::string(50, 'x')).ok());
}

// Config::max_uncommitted_bytes: a leader that cannot commit stops accepting
// proposals once the uncommitted bytes would pass the limit, and accepts
// them again once they commit.
TEST(LimitsTest, UncommittedBytesOverLimitAreRefused) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_uncommitted_bytes = 1000; });
  net->Campaign(1);
  net->Hold(2);
  net->Hold(3);
  int accepted = 0;
  Status s;
  for (int i = 0; i < 20; ++i) {
    s = net->node(1).Propose(std::string(100, 'a' + i));  // 124 bytes each.
    if (!s.ok()) break;
    ++accepted;
    net->Stabilize();
  }
  EXPECT_EQ(s.code(), Code::kTooManyUncommitted) << s.ToString();
  // 8 entries are 992 bytes; a 9th would make 1116.
  EXPECT_EQ(accepted, 8);
  net->ReleaseHeld();
  net->Stabilize();
  EXPECT_EQ(net->peer(1).AppliedData().size(), 8u);
  s = net->node(1).Propose("y");
  EXPECT_TRUE(s.ok()) << "uncommitted bytes not released on commit: " << s.ToString();
}

// Config::max_msg_bytes: an AppendEntries carries at most max_msg_bytes of
// entries, so a follower catching up gets many bounded messages.
TEST(LimitsTest, AppendEntriesNeverExceedMaxMsgBytes) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_msg_bytes = 300; });
  net->Isolate(3);
  net->Campaign(1);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(net->node(1).Propose(std::string(50, 'a' + i)).ok());  // 74 bytes each.
  }
  net->Stabilize();
  net->Heal();
  int t = net->TickUntil([&] { return net->peer(3).AppliedData().size() == 20; }, 20);
  ASSERT_GE(t, 0);
  size_t max_entries = 0;
  for (const Message& m : net->sent) {
    if (m.type != MessageType::kApp) continue;
    if (m.entries.size() > 1) {
      EXPECT_LE(EntriesBytes(m.entries), 300u) << m.DebugString();
    }
    max_entries = std::max(max_entries, m.entries.size());
  }
  EXPECT_EQ(max_entries, 4u) << "messages should still be filled up to the limit";
}

// Config::max_msg_bytes: an entry larger than max_msg_bytes (but within
// max_entry_bytes) still goes, alone in its message, or it could never be
// replicated.
TEST(LimitsTest, SingleEntryLargerThanMaxMsgBytesIsSentAlone) {
  auto net = Network::Make(3, 0, [](Config& c) {
    c.max_msg_bytes = 100;
    c.max_entry_bytes = 1000;
  });
  net->Isolate(3);
  net->Campaign(1);
  ASSERT_TRUE(net->node(1).Propose("small").ok());
  ASSERT_TRUE(net->node(1).Propose(std::string(500, 'b')).ok());
  ASSERT_TRUE(net->node(1).Propose("tail").ok());
  net->Stabilize();
  net->Heal();
  int t = net->TickUntil([&] { return net->peer(3).AppliedData().size() == 3; }, 20);
  ASSERT_GE(t, 0) << "a large entry was never replicated";
  for (const Message& m : net->sent) {
    if (m.type == MessageType::kApp && m.entries.size() > 1) {
      EXPECT_LE(EntriesBytes(m.entries), 100u) << m.DebugString();
    }
  }
}

// node.h: only the leader accepts proposals; a follower refuses with
// kNotLeader and names the leader it knows.
TEST(LimitsTest, ProposeOnFollowerReturnsNotLeader) {
  auto net = Network::Make(3);
  net->Campaign(1);
  Status s = net->node(2).Propose("x");
  EXPECT_EQ(s.code(), Code::kNotLeader) << s.ToString();
  EXPECT_EQ(net->node(2).Leader(), 1u);
  net->Stabilize();
  EXPECT_EQ(net->CountSent(MessageType::kApp, 2), 0);
}

// Before any election nobody leads: kNotLeader with no leader named.
TEST(LimitsTest, ProposeWithoutLeaderReturnsNotLeader) {
  auto net = Network::Make(3);
  EXPECT_EQ(net->node(1).Propose("x").code(), Code::kNotLeader);
  EXPECT_EQ(net->node(1).Leader(), kNoNode);
}

// Config::max_pending_reads: a leader that cannot confirm reads refuses new
// ones once max_pending_reads wait.
TEST(LimitsTest, PendingReadsOverLimitAreRefused) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_pending_reads = 3; });
  net->Campaign(1);
  net->Isolate(2);
  net->Isolate(3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(net->node(1).ReadIndex("r" + std::to_string(i)).ok());
    net->Stabilize();
  }
  Status s = net->node(1).ReadIndex("r3");
  EXPECT_EQ(s.code(), Code::kTooManyReads) << s.ToString();
}

// node.h: a read needs a leader; with none known it is refused with kNotLeader.
TEST(LimitsTest, ReadIndexWithoutKnownLeaderReturnsNotLeader) {
  auto net = Network::Make(3);
  EXPECT_EQ(net->node(2).ReadIndex("r").code(), Code::kNotLeader);
}

// Config::max_committed_bytes_per_ready: a node applying a long backlog gets
// it in bounded batches (at least one entry each).
TEST(LimitsTest, CommittedEntriesPerReadyAreBounded) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_committed_bytes_per_ready = 300; });
  net->Isolate(3);
  net->Campaign(1);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(net->node(1).Propose(std::string(100, 'a' + i)).ok());
  net->Stabilize();
  int readies_with_entries = 0;
  net->on_ready = [&](NodeId id, const Ready& rd) {
    if (id != 3 || rd.committed_entries.empty()) return;
    ++readies_with_entries;
    if (rd.committed_entries.size() > 1) {
      EXPECT_LE(EntriesBytes(rd.committed_entries), 300u);
    }
  };
  net->Heal();
  int t = net->TickUntil([&] { return net->peer(3).AppliedData().size() == 20; }, 20);
  ASSERT_GE(t, 0);
  EXPECT_GE(readies_with_entries, 10) << "20 entries of 124 bytes in 300-byte batches";
}

// Config::Validate: nonsensical configurations are refused with a reason.
TEST(LimitsTest, ConfigValidateRefusesNonsense) {
  Config c = test::DefaultConfig(1);
  EXPECT_TRUE(c.Validate().ok());
  Config no_id = c;
  no_id.id = kNoNode;
  EXPECT_EQ(no_id.Validate().code(), Code::kInvalidArgument);
  Config short_election = c;
  short_election.election_timeout_ticks = short_election.heartbeat_interval_ticks;
  EXPECT_EQ(short_election.Validate().code(), Code::kInvalidArgument);
  Config zero_limit = c;
  zero_limit.max_inflight_msgs = 0;
  EXPECT_EQ(zero_limit.Validate().code(), Code::kInvalidArgument);
  Config zero_snapshot = c;
  zero_snapshot.max_snapshot_bytes = 0;
  EXPECT_EQ(zero_snapshot.Validate().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace raftkv::raft
