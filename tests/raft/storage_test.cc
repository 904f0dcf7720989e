// Unit tests of MemoryStorage: the stable log, hard state and snapshot the
// core reads (storage.h states the contract).
#include "raft/storage.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::MakeConf;
using test::MakeEntries;
using test::MakeEntry;

// An empty log: FirstIndex is 1 and LastIndex 0; the dummy entry 0 has term 0.
TEST(MemoryStorageTest, EmptyStorageHasNoEntries) {
  MemoryStorage s;
  EXPECT_EQ(s.FirstIndex(), 1u);
  EXPECT_EQ(s.LastIndex(), 0u);
  Term t = 99;
  ASSERT_TRUE(s.TermAt(0, &t).ok());
  EXPECT_EQ(t, 0u);
  EXPECT_TRUE(s.InitialHardState().IsEmpty());
  EXPECT_TRUE(s.LatestSnapshot().IsEmpty());
}

TEST(MemoryStorageTest, AppendedEntriesAreReadBack) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 5, 1));
  EXPECT_EQ(s.FirstIndex(), 1u);
  EXPECT_EQ(s.LastIndex(), 5u);
  std::vector<Entry> out;
  ASSERT_TRUE(s.Entries(2, 5, UINT64_MAX, &out).ok());
  EXPECT_EQ(out, std::vector<Entry>(MakeEntries(2, 4, 1)));
}

// types.h Ready contract: an entry at an existing index replaces that entry
// and everything after it (Raft paper Figure 2, AppendEntries receiver step 3).
TEST(MemoryStorageTest, AppendTruncatesConflictingSuffix) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 5, 1));
  s.Append(MakeEntries(3, 3, 2));
  EXPECT_EQ(s.LastIndex(), 3u);
  Term t = 0;
  ASSERT_TRUE(s.TermAt(3, &t).ok());
  EXPECT_EQ(t, 2u);
  ASSERT_TRUE(s.TermAt(2, &t).ok());
  EXPECT_EQ(t, 1u);
  EXPECT_FALSE(s.TermAt(4, &t).ok());
}

// TermAt is defined on [FirstIndex()-1, LastIndex()] and kUnavailable elsewhere.
TEST(MemoryStorageTest, TermAtOutsideLogIsUnavailable) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 3, 1));
  Term t = 0;
  Status st = s.TermAt(4, &t);
  EXPECT_EQ(st.code(), Code::kUnavailable);
  ASSERT_TRUE(s.CreateSnapshot(2, MakeConf({1}), "img").ok());
  ASSERT_TRUE(s.Compact(2).ok());
  EXPECT_EQ(s.TermAt(1, &t).code(), Code::kUnavailable);
  ASSERT_TRUE(s.TermAt(2, &t).ok());  // The snapshot's own term stays known.
  EXPECT_EQ(t, 1u);
}

// Limits: Entries stops once the total passes max_bytes, but always returns
// at least one entry so a single large entry can still be replicated.
TEST(MemoryStorageTest, EntriesStopsAtMaxBytesButReturnsAtLeastOne) {
  MemoryStorage s;
  s.Append({MakeEntry(1, 1, std::string(100, 'a')), MakeEntry(2, 1, std::string(100, 'b')),
            MakeEntry(3, 1, std::string(100, 'c'))});
  std::vector<Entry> out;
  ASSERT_TRUE(s.Entries(1, 4, 1, &out).ok());
  EXPECT_EQ(out.size(), 1u);
  out.clear();
  // Two entries are 2*124 bytes: a limit of 250 holds two, not three.
  ASSERT_TRUE(s.Entries(1, 4, 250, &out).ok());
  EXPECT_EQ(out.size(), 2u);
  uint64_t total = 0;
  for (const Entry& e : out) total += e.SizeBytes();
  EXPECT_LE(total, 250u);
}

// Log compaction (Raft paper 7): a snapshot records the state at an index;
// Compact drops entries up to it, and FirstIndex moves past it.
TEST(MemoryStorageTest, CreateSnapshotThenCompactDropsEntries) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 10, 1));
  ASSERT_TRUE(s.CreateSnapshot(6, MakeConf({1, 2, 3}), "state@6").ok());
  EXPECT_EQ(s.FirstIndex(), 1u) << "CreateSnapshot must not drop entries";
  EXPECT_EQ(s.LatestSnapshot().meta.index, 6u);
  EXPECT_EQ(s.LatestSnapshot().meta.term, 1u);
  EXPECT_EQ(s.LatestSnapshot().meta.conf, MakeConf({1, 2, 3}));
  EXPECT_EQ(s.LatestSnapshot().data, "state@6");
  ASSERT_TRUE(s.Compact(4).ok());  // Keeping a few entries after the compaction point is allowed.
  EXPECT_EQ(s.FirstIndex(), 5u);
  ASSERT_TRUE(s.Compact(6).ok());
  EXPECT_EQ(s.FirstIndex(), 7u);
  EXPECT_EQ(s.LastIndex(), 10u);
  std::vector<Entry> out;
  ASSERT_TRUE(s.Entries(7, 11, UINT64_MAX, &out).ok());
  EXPECT_EQ(out, MakeEntries(7, 10, 1));
}

// Compact must not drop entries the latest snapshot does not cover, or a
// lagging follower could be served neither entries nor a snapshot.
TEST(MemoryStorageTest, CompactPastSnapshotIsRefused) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 10, 1));
  ASSERT_TRUE(s.CreateSnapshot(4, MakeConf({1}), "x").ok());
  EXPECT_FALSE(s.Compact(5).ok());
  EXPECT_EQ(s.FirstIndex(), 1u);
}

TEST(MemoryStorageTest, CreateSnapshotBeyondLastIndexIsRefused) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 3, 1));
  EXPECT_FALSE(s.CreateSnapshot(4, MakeConf({1}), "x").ok());
  EXPECT_TRUE(s.LatestSnapshot().IsEmpty());
}

// A snapshot received from the leader replaces the whole log (Raft paper
// Figure 13, InstallSnapshot receiver step 7: discard the entire log).
TEST(MemoryStorageTest, ApplySnapshotReplacesLog) {
  MemoryStorage s;
  s.Append(MakeEntries(1, 5, 1));
  Snapshot snap;
  snap.meta.index = 20;
  snap.meta.term = 4;
  snap.meta.conf = MakeConf({1, 2});
  snap.data = "image";
  s.ApplySnapshot(snap);
  EXPECT_EQ(s.FirstIndex(), 21u);
  EXPECT_EQ(s.LastIndex(), 20u);
  Term t = 0;
  ASSERT_TRUE(s.TermAt(20, &t).ok());
  EXPECT_EQ(t, 4u);
  EXPECT_EQ(s.LatestSnapshot(), snap);
  // The log continues right after the snapshot.
  s.Append(MakeEntries(21, 22, 4));
  EXPECT_EQ(s.LastIndex(), 22u);
}

TEST(MemoryStorageTest, HardStateIsKept) {
  MemoryStorage s;
  s.SetHardState(HardState{3, 2, 7});
  EXPECT_EQ(s.InitialHardState(), (HardState{3, 2, 7}));
}

}  // namespace
}  // namespace raftkv::raft
