// watch::History: grouping, reads from a revision, trimming, resets.
#include "watch/history.h"

#include <gtest/gtest.h>

namespace raftkv::watch {
namespace {

kv::Event Put(std::string key, uint64_t rev, std::string value = "v") {
  kv::Event e;
  e.type = kv::Event::Type::kPut;
  e.kv.key = std::move(key);
  e.kv.value = std::move(value);
  e.kv.meta.mod_revision = rev;
  return e;
}

std::vector<uint64_t> RevisionsOf(const Slice& s) {
  std::vector<uint64_t> out;
  for (const auto& b : s.batches) {
    for (const Change& c : b->changes) out.push_back(c.revision);
  }
  return out;
}

TEST(HistoryTest, AppendGroupsEventsByRevision) {
  History h;
  auto b = h.Append(0, 5, {Put("a", 2), Put("b", 2), Put("c", 4)});
  ASSERT_EQ(b->changes.size(), 2u);
  EXPECT_EQ(b->changes[0].revision, 2u);
  EXPECT_EQ(b->changes[0].events.size(), 2u);
  EXPECT_EQ(b->changes[1].revision, 4u);
  EXPECT_EQ(b->prev_revision, 0u);
  EXPECT_EQ(b->revision, 5u);
  EXPECT_EQ(h.revision(), 5u);
  EXPECT_EQ(h.revisions_held(), 2u);
}

TEST(HistoryTest, ReadReturnsTheBatchesFromARevisionAndSaysWhereItEnds) {
  History h;
  h.Append(0, 3, {Put("a", 1), Put("b", 3)});
  h.Append(3, 4, {});  // A no-op: advances the head only.
  h.Append(4, 6, {Put("c", 6)});
  Slice s = h.Read(2, 100);
  EXPECT_FALSE(s.compacted);
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.head, 6u);
  // The first batch reaches revision 2, so it is returned whole.
  EXPECT_EQ(RevisionsOf(s), (std::vector<uint64_t>{1, 3, 6}));
  EXPECT_EQ(RevisionsOf(h.Read(4, 100)), (std::vector<uint64_t>{6}));
  Slice past = h.Read(7, 100);
  EXPECT_TRUE(past.batches.empty());
  EXPECT_TRUE(past.complete);
  // A read that stops at max_changes is not complete.
  Slice part = h.Read(1, 1);
  EXPECT_EQ(part.batches.size(), 1u);
  EXPECT_FALSE(part.complete);
}

TEST(HistoryTest, TrimsTheOldestBatchesPastTheRevisionBound) {
  History h(HistoryLimits{3, 1 << 20});
  for (uint64_t r = 1; r <= 5; r++) h.Append(r - 1, r, {Put("k", r)});
  EXPECT_EQ(h.revisions_held(), 3u);
  EXPECT_EQ(h.compact_revision(), 2u);
  EXPECT_TRUE(h.Read(2, 100).compacted);
  Slice s = h.Read(3, 100);
  EXPECT_FALSE(s.compacted);
  EXPECT_EQ(RevisionsOf(s), (std::vector<uint64_t>{3, 4, 5}));
}

TEST(HistoryTest, TrimsPastTheByteBoundButKeepsTheNewestBatch) {
  History h(HistoryLimits{1000, 1000});
  std::string big(600, 'x');
  h.Append(0, 1, {Put("a", 1, big)});
  h.Append(1, 2, {Put("b", 2, big)});
  EXPECT_EQ(h.compact_revision(), 1u);
  EXPECT_EQ(h.revisions_held(), 1u);
  // One batch larger than the bound stays: its watchers still need it.
  h.Append(2, 3, {Put("c", 3, std::string(5000, 'y'))});
  EXPECT_EQ(h.compact_revision(), 2u);
  EXPECT_EQ(RevisionsOf(h.Read(3, 100)), (std::vector<uint64_t>{3}));
}

TEST(HistoryTest, RevisionsWithoutChangesAfterATrimmedBatchAreStillServed) {
  History h(HistoryLimits{1, 1 << 20});
  h.Append(0, 1, {Put("a", 1)});
  h.Append(1, 5, {});  // Revisions 2-5 changed nothing.
  h.Append(5, 6, {Put("b", 6)});
  EXPECT_EQ(h.compact_revision(), 1u);
  Slice s = h.Read(2, 100);
  EXPECT_FALSE(s.compacted);
  EXPECT_EQ(RevisionsOf(s), (std::vector<uint64_t>{6}));
}

TEST(HistoryTest, ResetEmptiesTheHistoryAndStartsAGeneration) {
  History h;
  h.Append(0, 2, {Put("a", 2)});
  uint64_t g = h.generation();
  EXPECT_EQ(h.Reset(10), g + 1);
  EXPECT_EQ(h.revision(), 10u);
  EXPECT_EQ(h.compact_revision(), 10u);
  EXPECT_EQ(h.revisions_held(), 0u);
  EXPECT_TRUE(h.Read(10, 100).compacted);
  auto b = h.Append(10, 11, {Put("b", 11)});
  EXPECT_EQ(b->generation, g + 1);
  EXPECT_EQ(RevisionsOf(h.Read(11, 100)), (std::vector<uint64_t>{11}));
}

TEST(HistoryDeathTest, AGapOrAnEventOutsideItsBatchIsABug) {
  History h;
  h.Append(0, 2, {});
  EXPECT_DEATH(h.Append(3, 4, {}), "appended a batch");
  EXPECT_DEATH(h.Append(2, 4, {Put("a", 5)}), "outside its batch");
}

}  // namespace
}  // namespace raftkv::watch
