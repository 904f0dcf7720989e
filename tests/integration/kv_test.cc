// Unit tests of the key-value state machine and its command format (src/kv).
#include <gtest/gtest.h>

#include "kv/command.h"
#include "kv/store.h"

namespace raftkv::kv {
namespace {

raft::Entry Put(raft::Index index, const std::string& key, const std::string& value,
                uint64_t seq = 1) {
  return raft::Entry{1, index, raft::EntryType::kNormal, EncodePut({7, seq}, key, value)};
}

TEST(CommandTest, PutRoundTrips) {
  std::string data = EncodePut({0xabc, 42}, std::string("k\0ey", 4), "value");
  CommandView cmd;
  ASSERT_TRUE(DecodeCommand(data, &cmd));
  EXPECT_EQ(cmd.op, Op::kPut);
  EXPECT_EQ(cmd.id, (RequestId{0xabc, 42}));
  EXPECT_EQ(cmd.key, std::string("k\0ey", 4));
  EXPECT_EQ(cmd.value, "value");
}

TEST(CommandTest, RejectsUnknownVersionOpFieldCountAndBadLengths) {
  std::string good = EncodePut({1, 2}, "k", "v");
  CommandView cmd;
  std::string bad = good;
  bad[0] = 2;  // Format version.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  bad = good;
  bad[1] = 9;  // Op.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  bad = good;
  bad[18] = 3;  // Field count.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  EXPECT_FALSE(DecodeCommand(good + "x", &cmd));  // Trailing bytes.
  for (size_t n = 0; n < good.size(); n++) {
    EXPECT_FALSE(DecodeCommand(good.substr(0, n), &cmd)) << "truncated at " << n;
  }
  bad = good;
  bad[19] = static_cast<char>(0xff);  // Key length far past the end.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
}

TEST(StoreTest, PutTracksRevisionsAndVersionsLikeEtcd) {
  Store s;
  std::vector<Applied> applied;
  std::vector<raft::Entry> entries = {
      raft::Entry{1, 1, raft::EntryType::kNormal, ""},  // Leader no-op.
      Put(2, "a", "1"), Put(3, "b", "x"), Put(4, "a", "2", 9)};
  ASSERT_TRUE(s.Apply(entries, &applied).ok());
  EXPECT_EQ(s.revision(), 4u);
  ASSERT_EQ(applied.size(), 3u);
  EXPECT_EQ(applied[2].index, 4u);
  EXPECT_EQ(applied[2].id, (RequestId{7, 9}));
  std::string v;
  KeyMeta m;
  ASSERT_TRUE(s.Get("a", &v, &m));
  EXPECT_EQ(v, "2");
  EXPECT_EQ(m, (KeyMeta{2, 4, 2}));
  ASSERT_TRUE(s.Get("b", &v, &m));
  EXPECT_EQ(m, (KeyMeta{3, 3, 1}));
  EXPECT_FALSE(s.Get("c", &v));
  EXPECT_EQ(s.size(), 2u);
}

TEST(StoreTest, ConfChangesAndNoOpsOnlyAdvanceTheRevision) {
  Store s;
  std::vector<Applied> applied;
  std::vector<raft::Entry> entries = {raft::Entry{1, 1, raft::EntryType::kConfChange, "cc"},
                                      raft::Entry{1, 2, raft::EntryType::kNormal, ""}};
  ASSERT_TRUE(s.Apply(entries, &applied).ok());
  EXPECT_EQ(s.revision(), 2u);
  EXPECT_TRUE(applied.empty());
  EXPECT_EQ(s.size(), 0u);
}

TEST(StoreTest, UnknownCommandIsCorruptionNamingTheIndex) {
  Store s;
  std::vector<Applied> applied;
  std::vector<raft::Entry> entries = {Put(1, "a", "1"),
                                      raft::Entry{1, 2, raft::EntryType::kNormal, "\x09junk"}};
  raft::Status st = s.Apply(entries, &applied);
  EXPECT_EQ(st.code(), raft::Code::kCorruption);
  EXPECT_NE(st.message().find("entry 2"), std::string::npos) << st.message();
  EXPECT_EQ(s.revision(), 1u);  // The good entry before it stays applied.
}

TEST(StoreTest, ApplyIsDeterministic) {
  Store a, b;
  std::vector<Applied> ignored;
  std::vector<raft::Entry> entries;
  for (raft::Index i = 1; i <= 200; i++) {
    entries.push_back(Put(i, "k" + std::to_string(i % 17), "v" + std::to_string(i)));
  }
  ASSERT_TRUE(a.Apply(entries, &ignored).ok());
  for (const raft::Entry& e : entries) ASSERT_TRUE(b.Apply({&e, 1}, &ignored).ok());
  EXPECT_EQ(a.Hash(), b.Hash());
  EXPECT_EQ(a.Snapshot(), b.Snapshot());
}

TEST(StoreTest, SnapshotRestoresExactly) {
  Store a;
  std::vector<Applied> ignored;
  std::vector<raft::Entry> entries = {Put(1, "x", "1"), Put(2, std::string("\0y", 2), ""),
                                      Put(3, "x", "3")};
  ASSERT_TRUE(a.Apply(entries, &ignored).ok());
  Store b;
  ASSERT_TRUE(b.Restore(a.Snapshot()).ok());
  EXPECT_EQ(b.revision(), 3u);
  EXPECT_EQ(a.Hash(), b.Hash());
  std::string v;
  KeyMeta m;
  ASSERT_TRUE(b.Get("x", &v, &m));
  EXPECT_EQ(v, "3");
  EXPECT_EQ(m, (KeyMeta{1, 3, 2}));
  // And applying continues from the snapshot's revision.
  std::vector<raft::Entry> next = {Put(4, "x", "4")};
  ASSERT_TRUE(b.Apply(next, &ignored).ok());
  ASSERT_TRUE(b.Get("x", &v, &m));
  EXPECT_EQ(m, (KeyMeta{1, 4, 3}));
}

TEST(StoreTest, CorruptSnapshotIsRefusedAndLeavesStateAlone) {
  Store a;
  std::vector<Applied> ignored;
  std::vector<raft::Entry> entries = {Put(1, "x", "1"), Put(2, "y", "2")};
  ASSERT_TRUE(a.Apply(entries, &ignored).ok());
  std::string image = a.Snapshot();
  Store b;
  std::vector<raft::Entry> mine = {Put(1, "mine", "1")};
  ASSERT_TRUE(b.Apply(mine, &ignored).ok());
  uint64_t before = b.Hash();
  for (size_t i = 0; i < image.size(); i++) {
    std::string bad = image;
    bad[i] ^= 0x20;
    EXPECT_EQ(b.Restore(bad).code(), raft::Code::kCorruption) << "flipped byte " << i;
  }
  EXPECT_EQ(b.Restore(image.substr(0, image.size() - 1)).code(), raft::Code::kCorruption);
  EXPECT_EQ(b.Restore("").code(), raft::Code::kCorruption);
  EXPECT_EQ(b.Hash(), before);
}

}  // namespace
}  // namespace raftkv::kv
