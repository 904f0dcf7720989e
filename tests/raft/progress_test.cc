// Unit tests of Progress and Inflights: the leader's per-follower view
// (Raft paper 5.3, nextIndex and matchIndex) and etcd-io/raft's flow control.
#include "raft/progress.h"

#include <gtest/gtest.h>

namespace raftkv::raft {
namespace {

// Flow control (etcd-io/raft inflights): at most `capacity` AppendEntries
// may be outstanding to one follower.
TEST(InflightsTest, FullAtCapacity) {
  Inflights in(3);
  EXPECT_FALSE(in.Full());
  in.Add(5);
  in.Add(7);
  EXPECT_FALSE(in.Full());
  in.Add(9);
  EXPECT_TRUE(in.Full());
  EXPECT_EQ(in.Count(), 3u);
}

// An acknowledgement of index n frees every message ending at or before n,
// and only those.
TEST(InflightsTest, FreeLEFreesAcknowledgedMessagesOnly) {
  Inflights in(4);
  in.Add(5);
  in.Add(7);
  in.Add(9);
  in.FreeLE(6);
  EXPECT_EQ(in.Count(), 2u);
  in.FreeLE(6);  // Stale acknowledgement: nothing more to free.
  EXPECT_EQ(in.Count(), 2u);
  in.FreeLE(9);
  EXPECT_EQ(in.Count(), 0u);
}

// Raft paper 5.3: when the follower's log is unknown the leader probes one
// AppendEntries at a time.
TEST(ProgressTest, ProbeSendsOneMessageAtATime) {
  Progress pr(10);
  pr.BecomeProbe();
  EXPECT_FALSE(pr.IsPaused());
  pr.SentEntries(5, 2);
  EXPECT_TRUE(pr.IsPaused());
  // A probe does not move next: it is only confirmed by the answer.
  EXPECT_EQ(pr.next, 1u);
  // Any acknowledgement unpauses the probe.
  EXPECT_TRUE(pr.MaybeUpdate(3));
  EXPECT_FALSE(pr.IsPaused());
}

// etcd-io/raft flow control: once matching, AppendEntries are pipelined
// (next moves optimistically) until max_inflight_msgs are outstanding.
TEST(ProgressTest, ReplicatePipelinesUntilInflightsFull) {
  Progress pr(2);
  pr.match = 4;
  pr.BecomeReplicate();
  EXPECT_EQ(pr.next, 5u);
  pr.SentEntries(6, 2);
  EXPECT_EQ(pr.next, 7u);
  EXPECT_FALSE(pr.IsPaused());
  pr.SentEntries(8, 2);
  EXPECT_EQ(pr.next, 9u);
  EXPECT_TRUE(pr.IsPaused());
  // Acknowledging the first message frees one slot.
  EXPECT_TRUE(pr.MaybeUpdate(6));
  pr.inflights.FreeLE(6);
  EXPECT_FALSE(pr.IsPaused());
}

// Raft paper 5.3: matchIndex only increases; a stale acknowledgement
// changes nothing.
TEST(ProgressTest, MaybeUpdateIgnoresStaleAcknowledgement) {
  Progress pr(10);
  EXPECT_TRUE(pr.MaybeUpdate(5));
  EXPECT_EQ(pr.match, 5u);
  EXPECT_EQ(pr.next, 6u);
  EXPECT_FALSE(pr.MaybeUpdate(3));
  EXPECT_EQ(pr.match, 5u);
  EXPECT_EQ(pr.next, 6u);
}

// A rejection at or below match in replicate state is a reordered old
// answer: that prefix is known to match, so it must not move next back.
TEST(ProgressTest, ReplicateIgnoresStaleRejection) {
  Progress pr(10);
  pr.match = 5;
  pr.BecomeReplicate();
  pr.SentEntries(9, 4);
  EXPECT_FALSE(pr.MaybeDecrTo(4, 4));
  EXPECT_EQ(pr.next, 10u);
}

// A fresh rejection in replicate state falls back to just after match.
TEST(ProgressTest, ReplicateRejectionRewindsToMatch) {
  Progress pr(10);
  pr.match = 5;
  pr.BecomeReplicate();
  pr.SentEntries(9, 4);
  EXPECT_TRUE(pr.MaybeDecrTo(9, 7));
  EXPECT_EQ(pr.next, 6u);
}

// Probe: only the answer to the outstanding probe (at next-1) counts, and
// the follower's hint lets the leader skip back many entries at once
// (Raft paper 5.3, the optimization of the conflicting term's first index).
TEST(ProgressTest, ProbeRejectionUsesHint) {
  Progress pr(10);
  pr.match = 2;
  pr.next = 50;
  pr.SentEntries(60, 10);
  EXPECT_FALSE(pr.MaybeDecrTo(30, 10));  // Not our probe (49).
  EXPECT_EQ(pr.next, 50u);
  EXPECT_TRUE(pr.MaybeDecrTo(49, 10));
  EXPECT_EQ(pr.next, 11u);
  EXPECT_FALSE(pr.IsPaused());
}

// The hint never sends next to or below match.
TEST(ProgressTest, ProbeRejectionNeverRewindsBelowMatch) {
  Progress pr(10);
  pr.match = 20;
  pr.next = 50;
  EXPECT_TRUE(pr.MaybeDecrTo(49, 3));
  EXPECT_EQ(pr.next, 21u);
}

// While a snapshot is in flight nothing else is sent; afterwards probing
// resumes just after the snapshot.
TEST(ProgressTest, SnapshotPausesThenProbeResumesAfterIt) {
  Progress pr(10);
  pr.match = 3;
  Snapshot snap;
  snap.meta.index = 40;
  pr.BecomeSnapshot(std::make_shared<const Snapshot>(snap));
  EXPECT_TRUE(pr.IsPaused());
  pr.BecomeProbe();
  EXPECT_EQ(pr.next, 41u);
  EXPECT_EQ(pr.state, ProgressState::kProbe);
  EXPECT_EQ(pr.pending_snapshot, 0u);
  EXPECT_EQ(pr.snap_image, nullptr) << "the image outlived the transfer";
}

// Becoming replicate forgets in-flight messages of an earlier state.
TEST(ProgressTest, StateChangesResetInflights) {
  Progress pr(2);
  pr.match = 1;
  pr.BecomeReplicate();
  pr.SentEntries(2, 1);
  pr.SentEntries(3, 1);
  EXPECT_TRUE(pr.IsPaused());
  pr.BecomeProbe();
  EXPECT_EQ(pr.inflights.Count(), 0u);
  EXPECT_EQ(pr.next, 2u);
  EXPECT_FALSE(pr.IsPaused());
}

}  // namespace
}  // namespace raftkv::raft
