// Unit tests of RaftLog: the stable log in Storage plus the unstable suffix.
#include "raft/log.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::MakeConf;
using test::MakeEntries;
using test::MakeEntry;

Term TermOf(const RaftLog& log, Index i) {
  Term t = 0;
  EXPECT_TRUE(log.TermAt(i, &t)) << "no term at " << i;
  return t;
}

// Raft paper Figure 2, AppendEntries receiver step 2: reply false if the log
// does not contain an entry at prevLogIndex whose term matches prevLogTerm.
TEST(RaftLogTest, MaybeAppendRejectsMismatchedPrevEntry) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 3, 1));
  RaftLog log(&s);
  Index last_new = 0;
  Index conflict = 0;
  EXPECT_FALSE(log.MaybeAppend(3, 2, 0, {MakeEntry(4, 2)}, &last_new, &conflict));  // Wrong term.
  EXPECT_FALSE(
      log.MaybeAppend(5, 1, 0, {MakeEntry(6, 1)}, &last_new, &conflict));  // Missing entry.
  EXPECT_EQ(log.LastIndex(), 3u);
}

// Raft paper Figure 2, AppendEntries receiver step 3: if an existing entry
// conflicts with a new one (same index, different term), delete it and all
// that follow it.
TEST(RaftLogTest, MaybeAppendTruncatesConflictingSuffix) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 5, 1));
  RaftLog log(&s);
  Index last_new = 0;
  Index conflict = 0;
  ASSERT_TRUE(log.MaybeAppend(1, 1, 0, {MakeEntry(2, 2, "new")}, &last_new, &conflict));
  EXPECT_EQ(last_new, 2u);
  EXPECT_EQ(conflict, 2u);
  EXPECT_EQ(log.LastIndex(), 2u);
  EXPECT_EQ(TermOf(log, 2), 2u);
  Term t = 0;
  EXPECT_FALSE(log.TermAt(3, &t));
}

// Raft paper Figure 2, AppendEntries receiver step 4 ("append any new
// entries not already in the log"): a delayed, shorter AppendEntries whose
// entries all match must not truncate the entries that follow them.
TEST(RaftLogTest, MaybeAppendKeepsEntriesAfterMatchingPrefix) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 5, 1));
  RaftLog log(&s);
  Index last_new = 0;
  Index conflict = 0;
  ASSERT_TRUE(log.MaybeAppend(1, 1, 0, MakeEntries(2, 3, 1), &last_new, &conflict));
  EXPECT_EQ(last_new, 3u);
  EXPECT_EQ(conflict, 0u);
  EXPECT_EQ(log.LastIndex(), 5u);
  EXPECT_FALSE(log.HasUnstableToPersist()) << "nothing new to persist";
}

// Raft paper Figure 2, AppendEntries receiver step 5: commitIndex =
// min(leaderCommit, index of last new entry); it never moves back.
TEST(RaftLogTest, MaybeAppendCommitsUpToMinOfLeaderCommitAndLastNew) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 5, 1));
  RaftLog log(&s);
  Index last_new = 0;
  Index conflict = 0;
  // Our entries 3..5 are not known to match the leader's: commit stops at 2.
  ASSERT_TRUE(log.MaybeAppend(1, 1, 10, {MakeEntry(2, 1, "t1i2")}, &last_new, &conflict));
  EXPECT_EQ(log.committed(), 2u);
  ASSERT_TRUE(log.MaybeAppend(0, 0, 1, {}, &last_new, &conflict));
  EXPECT_EQ(log.committed(), 2u) << "commit index went backwards";
  ASSERT_TRUE(log.MaybeAppend(4, 1, 4, {}, &last_new, &conflict));
  EXPECT_EQ(log.committed(), 4u);
}

// Raft paper 5.4.1: the log whose last entry has the later term is more
// up-to-date; with equal last terms, the longer log is.
TEST(RaftLogTest, IsUpToDateComparesLastTermThenIndex) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 2, 1));
  s.Append(MakeEntries(3, 3, 2));
  RaftLog log(&s);
  EXPECT_TRUE(log.IsUpToDate(2, 3));   // Later term, shorter log.
  EXPECT_TRUE(log.IsUpToDate(3, 2));   // Same.
  EXPECT_TRUE(log.IsUpToDate(4, 2));   // Same term, longer.
  EXPECT_FALSE(log.IsUpToDate(2, 2));  // Same term, shorter.
  EXPECT_FALSE(log.IsUpToDate(9, 1));  // Earlier term, longer.
}

// Raft paper 5.4.2: a leader commits by counting replicas only an entry of
// its current term.
TEST(RaftLogTest, MaybeCommitOnlyForEntryOfGivenTerm) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 2, 1));
  s.Append(MakeEntries(3, 3, 2));
  RaftLog log(&s);
  EXPECT_FALSE(log.MaybeCommit(2, 2));
  EXPECT_EQ(log.committed(), 0u);
  EXPECT_TRUE(log.MaybeCommit(3, 2));
  EXPECT_EQ(log.committed(), 3u);
  EXPECT_FALSE(log.MaybeCommit(2, 1)) << "commit index went backwards";
  EXPECT_EQ(log.committed(), 3u);
}

// etcd-io/raft fast backtracking: the largest index <= index whose term is
// <= term lets the leader skip a whole divergent term in one round trip.
TEST(RaftLogTest, FindConflictByTermSkipsWholeTerms) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 3, 1));
  s.Append(MakeEntries(4, 6, 3));
  RaftLog log(&s);
  Term found = 0;
  EXPECT_EQ(log.FindConflictByTerm(6, 2, &found), 3u);
  EXPECT_EQ(found, 1u);
  EXPECT_EQ(log.FindConflictByTerm(6, 5, &found), 6u);
  EXPECT_EQ(found, 3u);
  EXPECT_EQ(log.FindConflictByTerm(5, 3, &found), 5u);
  EXPECT_EQ(found, 3u);
}

// Ready contract: new entries are handed to the driver once, and after it
// reports them stable they are read from storage.
TEST(RaftLogTest, UnstableEntriesAreHandedOutOnce) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 2, 1));
  RaftLog log(&s);
  EXPECT_FALSE(log.HasUnstableToPersist());
  EXPECT_EQ(log.Append(MakeEntries(3, 4, 1)), 4u);
  ASSERT_TRUE(log.HasUnstableToPersist());
  std::vector<Entry> out = log.TakeUnstableToPersist();
  EXPECT_EQ(out, MakeEntries(3, 4, 1));
  EXPECT_FALSE(log.HasUnstableToPersist()) << "entries handed out twice";
  s.Append(out);
  log.StableTo(4, 1);
  EXPECT_EQ(log.LastIndex(), 4u);
  EXPECT_EQ(TermOf(log, 4), 1u);
}

// Slice reads across the stable/unstable boundary and honours max_bytes
// (always at least one entry).
TEST(RaftLogTest, SliceSpansStorageAndUnstable) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 2, 1));
  RaftLog log(&s);
  log.Append(MakeEntries(3, 4, 1));
  std::vector<Entry> out;
  ASSERT_TRUE(log.Slice(1, 5, UINT64_MAX, &out).ok());
  EXPECT_EQ(out, MakeEntries(1, 4, 1));
  out.clear();
  ASSERT_TRUE(log.Slice(2, 5, 1, &out).ok());
  EXPECT_EQ(out, MakeEntries(2, 2, 1));
}

// Compacted entries are unavailable; the snapshot's last term stays known
// (Raft paper 7: the snapshot keeps last included index and term).
TEST(RaftLogTest, CompactedEntriesAreUnavailable) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 6, 1));
  ASSERT_TRUE(s.CreateSnapshot(4, MakeConf({1}), "img").ok());
  ASSERT_TRUE(s.Compact(4).ok());
  RaftLog log(&s);
  EXPECT_EQ(log.FirstIndex(), 5u);
  Term t = 0;
  EXPECT_FALSE(log.TermAt(3, &t));
  EXPECT_EQ(TermOf(log, 4), 1u);
  std::vector<Entry> out;
  EXPECT_EQ(log.Slice(3, 6, UINT64_MAX, &out).code(), Code::kUnavailable);
}

// Raft paper Figure 13, receiver steps 6-7: a snapshot replaces the log;
// everything it covers counts as committed.
TEST(RaftLogTest, RestoreReplacesLogWithSnapshot) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 3, 1));
  RaftLog log(&s);
  Snapshot snap;
  snap.meta.index = 10;
  snap.meta.term = 3;
  snap.meta.conf = MakeConf({1, 2, 3});
  log.Restore(snap);
  EXPECT_EQ(log.LastIndex(), 10u);
  EXPECT_EQ(log.FirstIndex(), 11u);
  EXPECT_EQ(log.LastTerm(), 3u);
  EXPECT_EQ(log.committed(), 10u);
  ASSERT_TRUE(log.PendingSnapshot().has_value());
  EXPECT_EQ(log.PendingSnapshot()->meta.index, 10u);
}

// Committed entries are handed out after `applied`, bounded by max_bytes
// (at least one), so one Ready never carries an unbounded batch.
TEST(RaftLogTest, CommittedAfterIsBoundedAndStartsAfterApplied) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 5, 1));
  RaftLog log(&s);
  log.CommitTo(4);
  EXPECT_TRUE(log.HasCommittedAfter(2));
  EXPECT_FALSE(log.HasCommittedAfter(4));
  EXPECT_EQ(log.CommittedAfter(0, UINT64_MAX), MakeEntries(1, 4, 1));
  EXPECT_EQ(log.CommittedAfter(1, 1), MakeEntries(2, 2, 1));
}

}  // namespace
}  // namespace raftkv::raft
