// Log compaction and InstallSnapshot: Raft paper 7 and Figure 13, sent in
// chunks of at most Config::max_snapshot_chunk_bytes.
#include <gtest/gtest.h>

#include <map>

#include "test_util.h"

namespace raftkv::raft {
namespace {

using test::Network;

constexpr uint64_t kChunk = 64;

std::string SnapshotImage(size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>('a' + (i * 7 + i / 26) % 26));
  return s;
}

// Builds a 3-node cluster where 3 missed the election and 20 entries while partitioned and the
// leader compacted them away behind a snapshot of `image`. Returns the
// snapshot index.
Index LagAndCompact(Network* net, const std::string& image) {
  net->Isolate(3);
  net->Campaign(1);
  for (int i = 0; i < 20; ++i) {
    EXPECT_TRUE(net->node(1).Propose("p" + std::to_string(i)).ok());
    net->Stabilize();
  }
  const Index snap_index = net->peer(1).applied_index;
  EXPECT_TRUE(net->storage(1).CreateSnapshot(snap_index, net->node(1).conf(), image).ok());
  EXPECT_TRUE(net->storage(1).Compact(snap_index).ok());
  net->Heal();
  net->ClearRecords();
  return snap_index;
}

std::vector<Message> Chunks(const std::vector<Message>& msgs, NodeId to) {
  std::vector<Message> out;
  for (const Message& m : msgs)
    if (m.type == MessageType::kSnap && m.to == to) out.push_back(m);
  return out;
}

// Raft paper 7 / Figure 13: a follower that needs compacted entries gets the
// snapshot by InstallSnapshot, in chunks at offsets (here each at most
// max_snapshot_chunk_bytes), the last one marked done; it then installs the
// snapshot, adopts its membership and continues from the log after it.
TEST(SnapshotTest, LaggingFollowerCatchesUpByChunkedSnapshot) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_snapshot_chunk_bytes = kChunk; });
  const std::string image = SnapshotImage(1000);
  const Index snap_index = LagAndCompact(net.get(), image);
  ASSERT_TRUE(net->node(1).Propose("after").ok());
  int t = net->TickUntil(
      [&] {
        auto d = net->peer(3).AppliedData();
        return !d.empty() && d.back() == "after";
      },
      30);
  ASSERT_GE(t, 0) << "follower never caught up";

  auto chunks = Chunks(net->sent, 3);
  const size_t expected_chunks = (image.size() + kChunk - 1) / kChunk;  // 16
  EXPECT_EQ(chunks.size(), expected_chunks) << "chunks were resent although none was lost";
  std::map<uint64_t, std::string> by_offset;
  for (const Message& m : chunks) {
    EXPECT_LE(m.snap_data.size(), kChunk) << m.DebugString();
    EXPECT_EQ(m.snap_meta.index, snap_index);
    by_offset[m.snap_offset] = m.snap_data;
  }
  std::string reassembled;
  for (const auto& [offset, data] : by_offset) {
    EXPECT_EQ(offset, reassembled.size()) << "gap or overlap in chunk offsets";
    reassembled += data;
  }
  EXPECT_EQ(reassembled, image);
  ASSERT_FALSE(chunks.empty());
  EXPECT_TRUE(chunks.back().snap_done);
  for (size_t i = 0; i + 1 < chunks.size(); ++i) EXPECT_FALSE(chunks[i].snap_done);

  ASSERT_EQ(net->peer(3).installed.size(), 1u);
  const Snapshot& got = net->peer(3).installed[0];
  EXPECT_EQ(got.data, image);
  EXPECT_EQ(got.meta.index, snap_index);
  EXPECT_EQ(got.meta.conf, net->node(1).conf());
  EXPECT_EQ(net->node(3).conf(), net->node(1).conf());
  EXPECT_EQ(net->storage(3).FirstIndex(), snap_index + 1);
  EXPECT_EQ(net->node(3).commit(), net->node(1).commit());
}

// Raft paper 7: a lost chunk is not fatal; the leader notices (the follower
// asks for the offset it expects, or the transfer goes idle) and resends
// from there, and the follower installs the exact image.
TEST(SnapshotTest, LostChunkIsRecovered) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_snapshot_chunk_bytes = kChunk; });
  const std::string image = SnapshotImage(1000);
  const Index snap_index = LagAndCompact(net.get(), image);
  bool dropped = false;
  net->AddFilter([&dropped](const Message& m) {
    if (m.type == MessageType::kSnap && m.snap_offset == 2 * kChunk && !dropped) {
      dropped = true;
      return true;
    }
    return false;
  });
  int t = net->TickUntil([&] { return !net->peer(3).installed.empty(); }, 100);
  ASSERT_GE(t, 0) << "snapshot transfer never recovered from the lost chunk";
  EXPECT_TRUE(dropped);
  int sent_at_offset = 0;
  for (const Message& m : Chunks(net->sent, 3))
    if (m.snap_offset == 2 * kChunk) ++sent_at_offset;
  EXPECT_GE(sent_at_offset, 2);
  EXPECT_EQ(net->peer(3).installed[0].data, image);
  EXPECT_EQ(net->peer(3).installed[0].meta.index, snap_index);
  ASSERT_TRUE(net->node(1).Propose("after").ok());
  t = net->TickUntil(
      [&] {
        auto d = net->peer(3).AppliedData();
        return !d.empty() && d.back() == "after";
      },
      10);
  EXPECT_GE(t, 0);
}

// Raft paper Figure 13, receiver step 6: if the follower already has the
// entries a snapshot covers (it was only slightly behind), the leader sends
// entries instead, since they are still in its log.
TEST(SnapshotTest, FollowerBehindOnlyUncompactedEntriesGetsEntriesNotSnapshot) {
  auto net = Network::Make(3, 0, [](Config& c) { c.max_snapshot_chunk_bytes = kChunk; });
  net->Isolate(3);
  net->Campaign(1);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(net->node(1).Propose("p" + std::to_string(i)).ok());
    net->Stabilize();
  }
  // Snapshot at the applied index but keep the log: no entry is compacted.
  Index applied = net->peer(1).applied_index;
  ASSERT_TRUE(net->storage(1).CreateSnapshot(applied, net->node(1).conf(), "img").ok());
  net->Heal();
  net->ClearRecords();
  int t = net->TickUntil([&] { return net->peer(3).AppliedData().size() == 10; }, 20);
  ASSERT_GE(t, 0);
  EXPECT_EQ(net->CountSent(MessageType::kSnap), 0);
  EXPECT_TRUE(net->peer(3).installed.empty());
}

// Raft paper 7: a restarted node starts from its snapshot: membership and
// commit point come from the snapshot, and it does not re-apply entries the
// snapshot covers.
TEST(SnapshotTest, NodeRestartsFromSnapshotInStorage) {
  auto net = Network::Make(3);
  net->Campaign(1);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(net->node(1).Propose("p" + std::to_string(i)).ok());
    net->Stabilize();
  }
  net->TickAll();
  const Index applied = net->peer(2).applied_index;
  ASSERT_TRUE(net->storage(2).CreateSnapshot(applied, net->node(2).conf(), "img").ok());
  ASSERT_TRUE(net->storage(2).Compact(applied).ok());
  const size_t applied_before = net->peer(2).applied.size();
  net->Restart(2);
  net->Stabilize();
  EXPECT_EQ(net->node(2).conf(), net->node(1).conf());
  EXPECT_GE(net->node(2).commit(), applied);
  EXPECT_EQ(net->peer(2).applied.size(), applied_before) << "re-applied entries in the snapshot";
  ASSERT_TRUE(net->node(1).Propose("after").ok());
  net->Stabilize();
  net->TickAll();
  EXPECT_EQ(net->peer(2).AppliedData().back(), "after");
}

}  // namespace
}  // namespace raftkv::raft
