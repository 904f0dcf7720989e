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

// Three voters that send snapshots in chunks of kChunk bytes.
std::unique_ptr<Network> ChunkedNetwork() {
  return Network::Make(3, 0, [](Config& c) { c.max_snapshot_chunk_bytes = kChunk; });
}

// Makes node 3 need the leader's snapshot of `image` (LagAndCompact) and runs
// until it has installed it, recording each of node 3's Readies that stores
// chunks or installs a snapshot. Returns the snapshot index.
Index StreamRecorded(Network* net, const std::string& image, std::vector<Ready>* readies) {
  const Index snap_index = LagAndCompact(net, image);
  net->on_ready = [readies](NodeId id, const Ready& rd) {
    if (id == 3 && (!rd.snapshot_chunks.empty() || rd.snapshot)) readies->push_back(rd);
  };
  EXPECT_GE(net->TickUntil([&] { return !net->peer(3).installed.empty(); }, 30), 0)
      << "follower never installed the snapshot";
  return snap_index;
}

// Proposes `data` on node 1 and ticks until node `id` has applied it.
// Returns the ticks taken, or -1 if max_ticks passed first.
int ProposeUntilApplied(Network* net, NodeId id, const std::string& data, int max_ticks) {
  EXPECT_TRUE(net->node(1).Propose(data).ok());
  return net->TickUntil(
      [&] {
        auto d = net->peer(id).AppliedData();
        return !d.empty() && d.back() == data;
      },
      max_ticks);
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
  auto net = ChunkedNetwork();
  const std::string image = SnapshotImage(1000);
  const Index snap_index = LagAndCompact(net.get(), image);
  int t = ProposeUntilApplied(net.get(), 3, "after", 30);
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
// Raft paper Figure 13, and what a follower may install: a snapshot at or
// below the follower's commit index is never installed. Here the follower
// has committed through 10 and compacted its own log through 8 (its own
// snapshot), so it cannot even see that the leader's snapshot at 5 agrees
// with its log; installing it would roll its state back to index 5.
TEST(SnapshotTest, SnapshotAtOrBelowTheCommitIndexIsNotInstalled) {
  ConfState conf = test::MakeConf({1, 2, 3});
  auto storage = test::MakeStorage(conf, test::MakeEntries(2, 10, 1), HardState{1, kNoNode, 10});
  ASSERT_TRUE(storage->CreateSnapshot(8, conf, "image at 8").ok());
  ASSERT_TRUE(storage->Compact(8).ok());
  Node node(test::DefaultConfig(2), storage.get());
  // Drain what a restart hands out (entries 9 and 10).
  while (node.HasReady()) node.Advance(node.GetReady());
  ASSERT_EQ(node.commit(), 10u);
  SnapshotMeta old;
  old.index = 5;
  old.term = 1;
  old.conf = conf;
  node.Step(test::SnapChunkMsg(1, 2, 1, old, "image at 5", 0, 64));
  ASSERT_TRUE(node.HasReady());
  Ready rd = node.GetReady();
  EXPECT_FALSE(rd.snapshot.has_value()) << "installed a snapshot at 5 below commit 10";
  EXPECT_EQ(node.commit(), 10u);
  EXPECT_EQ(node.GetStatus().last_index, 10u);
  // The leader learns where the follower is.
  ASSERT_EQ(rd.messages.size(), 1u);
  EXPECT_EQ(rd.messages[0].type, MessageType::kAppResp);
  EXPECT_EQ(rd.messages[0].index, 10u);
}

TEST(SnapshotTest, LostChunkIsRecovered) {
  auto net = ChunkedNetwork();
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
  t = ProposeUntilApplied(net.get(), 3, "after", 10);
  EXPECT_GE(t, 0);
}

// Raft paper Figure 13, receiver step 6: if the follower already has the
// entries a snapshot covers (it was only slightly behind), the leader sends
// entries instead, since they are still in its log.
TEST(SnapshotTest, FollowerBehindOnlyUncompactedEntriesGetsEntriesNotSnapshot) {
  auto net = ChunkedNetwork();
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

// The follower streams the snapshot: every chunk it accepts goes to the
// driver in the Ready that also carries its acknowledgement (so the driver
// stores it first), one chunk per Ready, and no Ready before the last one
// installs anything. The core never holds the image.
TEST(SnapshotTest, FollowerHandsOutOneChunkPerReadyWithItsAck) {
  auto net = ChunkedNetwork();
  const std::string image = SnapshotImage(1000);
  std::vector<Ready> readies;
  const Index snap_index = StreamRecorded(net.get(), image, &readies);
  ASSERT_FALSE(readies.empty());

  const size_t expected_chunks = (image.size() + kChunk - 1) / kChunk;
  ASSERT_EQ(readies.size(), expected_chunks);
  std::string streamed;
  for (size_t i = 0; i < readies.size(); ++i) {
    const Ready& rd = readies[i];
    const bool last = i + 1 == readies.size();
    ASSERT_EQ(rd.snapshot_chunks.size(), 1u) << "Ready " << i;
    const SnapshotChunk& c = rd.snapshot_chunks[0];
    EXPECT_EQ(c.meta.index, snap_index);
    EXPECT_EQ(c.offset, streamed.size());
    EXPECT_LE(c.data.size(), kChunk);
    EXPECT_EQ(c.done, last);
    EXPECT_TRUE(rd.must_sync) << "a chunk is acknowledged only once it is durable";
    streamed += c.data;
    // The acknowledgement leaves with (after) the chunk it acknowledges.
    if (!last) {
      EXPECT_FALSE(rd.snapshot.has_value()) << "installed before the last chunk";
      auto acks = test::OfType(rd.messages, MessageType::kSnapResp);
      ASSERT_EQ(acks.size(), 1u);
      EXPECT_FALSE(acks[0].reject);
      EXPECT_EQ(acks[0].snap_offset, streamed.size());
    } else {
      EXPECT_TRUE(test::OfType(rd.messages, MessageType::kSnapResp).empty());
      auto resp = test::OfType(rd.messages, MessageType::kAppResp);
      ASSERT_EQ(resp.size(), 1u);
      EXPECT_EQ(resp[0].index, snap_index);
    }
  }
  EXPECT_EQ(streamed, image);
}

// On the last chunk the core restores from the snapshot's meta alone: the
// Ready's snapshot is marked streamed and carries no data; the driver builds
// the image from the chunks it stored, and storage then holds the full image.
TEST(SnapshotTest, StreamedRestoreCarriesTheMarkerAndNoImage) {
  auto net = ChunkedNetwork();
  const std::string image = SnapshotImage(300);
  std::vector<Ready> readies;
  const Index snap_index = StreamRecorded(net.get(), image, &readies);
  ASSERT_FALSE(readies.empty());
  const std::optional<Snapshot>& restored = readies.back().snapshot;
  ASSERT_TRUE(restored.has_value());
  EXPECT_TRUE(restored->streamed);
  EXPECT_TRUE(restored->data.empty());
  EXPECT_EQ(restored->meta.index, snap_index);
  EXPECT_EQ(restored->meta.conf, net->node(1).conf());
  const Snapshot& stored = net->storage(3).LatestSnapshot();
  EXPECT_FALSE(stored.streamed);
  EXPECT_EQ(stored.meta, restored->meta);
  EXPECT_EQ(stored.data, image);
}

// The core forgets a transfer in progress when it restarts (the driver's
// stored chunks are dropped too): the next chunk from the leader is
// refused with offset 0, and the transfer starts over from the beginning.
TEST(SnapshotTest, RestartMidTransferStartsOverFromOffsetZero) {
  auto net = ChunkedNetwork();
  const std::string image = SnapshotImage(1000);
  const Index snap_index = LagAndCompact(net.get(), image);
  bool restarted = false;
  net->on_deliver = [&](const Message& m) {
    if (!restarted && m.type == MessageType::kSnap && m.to == 3 && m.snap_offset == 4 * kChunk) {
      restarted = true;
      net->Restart(3);
    }
  };
  int t = net->TickUntil([&] { return !net->peer(3).installed.empty(); }, 100);
  ASSERT_GE(t, 0) << "transfer never finished after the restart";
  ASSERT_TRUE(restarted);
  bool rejected_to_zero = false;
  for (const Message& m : net->sent) {
    if (m.type == MessageType::kSnapResp && m.from == 3 && m.reject) {
      EXPECT_EQ(m.snap_offset, 0u) << m.DebugString();
      rejected_to_zero = true;
    }
  }
  EXPECT_TRUE(rejected_to_zero);
  int zero_offsets = 0;
  for (const Message& m : Chunks(net->sent, 3)) zero_offsets += m.snap_offset == 0;
  EXPECT_EQ(zero_offsets, 2) << "the transfer did not start over once";
  EXPECT_EQ(net->peer(3).installed[0].data, image);
  EXPECT_EQ(net->peer(3).installed[0].meta.index, snap_index);
}

// Node 3 of voters {1, 2, 3}, alone, sending snapshots in chunks of kChunk.
test::Solo ChunkedFollower3(const ConfState& conf) {
  Config cfg = test::DefaultConfig(3);
  cfg.max_snapshot_chunk_bytes = kChunk;
  return test::Solo(cfg, test::MakeStorage(conf));
}

Message SnapChunk(NodeId from, NodeId to, Term term, const SnapshotMeta& meta,
                  const std::string& image, uint64_t offset) {
  return test::SnapChunkMsg(from, to, term, meta, image, offset, kChunk);
}

// A follower that restored from a streamed snapshot and wins an election
// before its driver has installed that snapshot (the Ready is not yet
// advanced) has no image in the core: it must not send a snapshot with empty
// data as if it were the state. Once the snapshot is installed, it sends the
// real image.
TEST(SnapshotTest, NewLeaderSendsNoSnapshotBeforeItsStreamedOneIsInstalled) {
  const ConfState conf = test::MakeConf({1, 2, 3});
  test::Solo solo = ChunkedFollower3(conf);
  Node& n = *solo.node;
  const SnapshotMeta meta{50, 2, conf};
  const std::string image = SnapshotImage(3 * kChunk + 10);
  for (uint64_t off = 0; off + kChunk < image.size(); off += kChunk) {
    n.Step(SnapChunk(1, 3, 2, meta, image, off));
    solo.Drain();
  }
  n.Step(SnapChunk(1, 3, 2, meta, image, 3 * kChunk));
  Ready rd = n.GetReady();
  ASSERT_TRUE(rd.snapshot.has_value());
  ASSERT_TRUE(rd.snapshot->streamed);

  // While that Ready is being persisted, node 3 wins an election.
  n.Campaign();
  for (NodeId from : {1, 2}) {
    Message r;
    r.type = MessageType::kPreVoteResp;
    r.from = from;
    r.to = 3;
    r.term = n.term() + 1;
    n.Step(r);
  }
  for (NodeId from : {1, 2}) {
    Message r;
    r.type = MessageType::kVoteResp;
    r.from = from;
    r.to = 3;
    r.term = n.term();
    n.Step(r);
  }
  ASSERT_EQ(n.role(), Role::kLeader);
  // Node 2 rejects the probe after the snapshot (the leader's first probe
  // goes there), hinting at an index the snapshot covers: it needs the
  // snapshot, which the core does not have yet.
  Message rej;
  rej.type = MessageType::kAppResp;
  rej.from = 2;
  rej.to = 3;
  rej.term = n.term();
  rej.index = meta.index;
  rej.reject = true;
  rej.reject_hint = 10;
  rej.log_term = 1;
  n.Step(rej);

  // The driver now stores the snapshot and advances.
  test::StoreSnapshot(solo.storage.get(), rd);
  n.Advance(rd);
  ASSERT_EQ(solo.storage->LatestSnapshot().data, image);
  std::vector<Message> out = solo.Drain();
  Message hb;
  hb.type = MessageType::kHeartbeatResp;
  hb.from = 2;
  hb.to = 3;
  hb.term = n.term();
  n.Step(hb);
  std::vector<Message> more = solo.Drain();
  out.insert(out.end(), more.begin(), more.end());
  std::vector<Message> snaps = Chunks(out, 2);
  ASSERT_FALSE(snaps.empty()) << "the new leader never sent node 2 the snapshot";
  for (const Message& m : snaps) {
    EXPECT_EQ(m.snap_meta, meta);
    EXPECT_EQ(m.snap_data, image.substr(m.snap_offset, kChunk)) << m.DebugString();
  }
}

// The last chunk of one snapshot and the first of a newer one arrive before
// the driver takes a Ready. The Ready stores chunks (step 0) before it
// installs its snapshot (step 1), so it must not carry a chunk of the newer
// transfer after the last chunk of the one it installs: that chunk would
// restart the receiver and leave the install without its image (found by
// the simulator, seed 400907). The follower drops it unanswered, like a
// lost message, and takes it when the leader sends it again.
TEST(SnapshotTest, NoChunkAfterTheLastChunkOfTheSnapshotAReadyInstalls) {
  const ConfState conf = test::MakeConf({1, 2, 3});
  test::Solo solo = ChunkedFollower3(conf);
  Node& n = *solo.node;
  const SnapshotMeta older{50, 2, conf}, newer{60, 2, conf};
  const std::string a = SnapshotImage(kChunk - 1), b = SnapshotImage(2 * kChunk);
  n.Step(SnapChunk(1, 3, 2, older, a, 0));  // The only chunk: done.
  n.Step(SnapChunk(1, 3, 2, newer, b, 0));
  Ready rd = n.GetReady();
  ASSERT_TRUE(rd.snapshot.has_value());
  EXPECT_EQ(rd.snapshot->meta, older);
  ASSERT_EQ(rd.snapshot_chunks.size(), 1u);
  EXPECT_TRUE(rd.snapshot_chunks[0].done);
  EXPECT_EQ(rd.snapshot_chunks[0].meta, older);
  for (const Message& m : rd.messages) {
    EXPECT_FALSE(m.type == MessageType::kSnapResp && m.snap_meta == newer) << m.DebugString();
  }
  test::StoreSnapshot(solo.storage.get(), rd);
  n.Advance(rd);
  EXPECT_EQ(solo.storage->LatestSnapshot().data, a);
  solo.Drain();
  // Sent again, the newer snapshot's first chunk is taken and acknowledged.
  n.Step(SnapChunk(1, 3, 2, newer, b, 0));
  rd = n.GetReady();
  ASSERT_EQ(rd.snapshot_chunks.size(), 1u);
  EXPECT_EQ(rd.snapshot_chunks[0].meta, newer);
  bool acked = false;
  for (const Message& m : rd.messages) {
    acked |= m.type == MessageType::kSnapResp && !m.reject && m.snap_offset == kChunk;
  }
  EXPECT_TRUE(acked);
}

// Config::max_snapshot_bytes: a follower refuses, in the core, the chunk
// that would take a snapshot from the leader past its limit. The chunk never
// reaches the driver (whose storage would fail on it), the transfer is
// forgotten, and the leader is told the limit (kSnapResp, reject,
// reject_hint) rather than asked to start over.
TEST(SnapshotTest, ChunkPastMaxSnapshotBytesIsRefusedInTheCore) {
  const ConfState conf = test::MakeConf({1, 2, 3});
  Config cfg = test::DefaultConfig(3);
  cfg.max_snapshot_chunk_bytes = kChunk;
  cfg.max_snapshot_bytes = 2 * kChunk + 10;
  test::Solo solo(cfg, test::MakeStorage(conf));
  Node& n = *solo.node;
  const SnapshotMeta meta{50, 2, conf};
  const std::string image = SnapshotImage(4 * kChunk);
  n.Step(SnapChunk(1, 3, 2, meta, image, 0));
  n.Step(SnapChunk(1, 3, 2, meta, image, kChunk));
  solo.Drain();
  ASSERT_EQ(solo.chunks.size(), 2u);

  n.Step(SnapChunk(1, 3, 2, meta, image, 2 * kChunk));  // Would end at 3*kChunk.
  std::vector<Message> out = solo.Drain();
  EXPECT_EQ(solo.chunks.size(), 2u) << "a chunk past the limit was handed to the driver";
  auto resp = test::OfType(out, MessageType::kSnapResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  EXPECT_EQ(resp[0].reject_hint, cfg.max_snapshot_bytes) << resp[0].DebugString();
  EXPECT_EQ(resp[0].snap_meta, meta);
  EXPECT_EQ(n.GetStatus().snapshots_refused, 1u);
  EXPECT_EQ(n.GetStatus().last_refused_snapshot_index, meta.index);

  // The transfer is gone: its next chunk is out of order (start over), not
  // stored.
  n.Step(SnapChunk(1, 3, 2, meta, image, 3 * kChunk));
  out = solo.Drain();
  EXPECT_EQ(solo.chunks.size(), 2u);
  resp = test::OfType(out, MessageType::kSnapResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  EXPECT_EQ(resp[0].reject_hint, 0u);
  EXPECT_EQ(resp[0].snap_offset, 0u);

  // A snapshot that fits is still taken, from offset 0.
  const SnapshotMeta small{60, 2, conf};
  const std::string fits = SnapshotImage(2 * kChunk);
  n.Step(SnapChunk(1, 3, 2, small, fits, 0));
  n.Step(SnapChunk(1, 3, 2, small, fits, kChunk));
  solo.Drain();
  EXPECT_EQ(solo.storage->LatestSnapshot().meta, small);
  EXPECT_EQ(solo.storage->LatestSnapshot().data, fits);
  EXPECT_EQ(n.GetStatus().snapshots_refused, 1u);
}

// A chunk larger than the whole limit is refused even as the first one.
TEST(SnapshotTest, FirstChunkPastMaxSnapshotBytesIsRefused) {
  const ConfState conf = test::MakeConf({1, 2, 3});
  Config cfg = test::DefaultConfig(3);
  cfg.max_snapshot_bytes = kChunk - 1;
  test::Solo solo(cfg, test::MakeStorage(conf));
  solo.node->Step(SnapChunk(1, 3, 2, SnapshotMeta{50, 2, conf}, SnapshotImage(kChunk), 0));
  std::vector<Message> out = solo.Drain();
  EXPECT_TRUE(solo.chunks.empty());
  EXPECT_TRUE(solo.storage->LatestSnapshot().data.empty());
  auto resp = test::OfType(out, MessageType::kSnapResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  EXPECT_EQ(resp[0].reject_hint, kChunk - 1);
}

// The leader's side of a refusal: it stops sending the snapshot (no
// hammering: every attempt costs up to the follower's limit), keeps the
// follower in its cluster with heartbeats, shows the refusal in
// PeerStatus, and offers a snapshot again only after a backoff of
// kSnapRefusedBackoffTimeouts (8) election timeouts, longer after each
// refusal. Once the follower accepts larger snapshots, it catches up.
TEST(SnapshotTest, LeaderBacksOffFromAFollowerThatRefusedItsSnapshot) {
  auto net = ChunkedNetwork();
  net->peer(3).cfg.max_snapshot_bytes = 3 * kChunk + 10;
  net->Restart(3);
  const std::string image = SnapshotImage(1000);
  LagAndCompact(net.get(), image);
  uint64_t largest_stored = 0;
  net->on_ready = [&](NodeId id, const Ready& rd) {
    if (id != 3) return;
    for (const SnapshotChunk& c : rd.snapshot_chunks) {
      largest_stored = std::max<uint64_t>(largest_stored, c.offset + c.data.size());
    }
  };
  auto peer3 = [&]() {
    for (const PeerStatus& p : net->node(1).GetStatus().peers)
      if (p.id == 3) return p;
    ADD_FAILURE() << "no peer 3";
    return PeerStatus{};
  };
  int t = net->TickUntil([&] { return net->node(3).GetStatus().snapshots_refused > 0; }, 30);
  ASSERT_GE(t, 0) << "the follower never refused the snapshot";
  EXPECT_LE(largest_stored, 3 * kChunk + 10);
  EXPECT_EQ(peer3().snapshot_refusals, 1u);
  EXPECT_EQ(peer3().snapshot_refused_limit_bytes, 3 * kChunk + 10);
  EXPECT_EQ(peer3().state, ProgressState::kProbe);
  const int backoff = peer3().snapshot_backoff_ticks;
  EXPECT_GE(backoff, 8 * 10 - 2);

  // Backing off: heartbeats only, no chunk, and node 3 keeps its leader.
  const int chunks_before = net->CountSent(MessageType::kSnap, 1, 3);
  for (int i = 0; i < backoff - 2; ++i) net->TickAll();
  EXPECT_EQ(net->CountSent(MessageType::kSnap, 1, 3), chunks_before) << "the leader hammered";
  EXPECT_EQ(net->node(3).Leader(), 1u);
  EXPECT_EQ(net->node(1).role(), Role::kLeader);

  // The backoff runs out: the leader tries again, is refused again, and
  // now waits twice as long.
  t = net->TickUntil([&] { return peer3().snapshot_refusals == 2; }, 20);
  ASSERT_GE(t, 0) << "the leader never offered the snapshot again";
  EXPECT_EQ(net->node(3).GetStatus().snapshots_refused, 2u);
  EXPECT_GE(peer3().snapshot_backoff_ticks, 2 * 8 * 10 - 2);

  // The follower restarts with room for the snapshot; after the backoff it
  // installs it and catches up.
  net->peer(3).cfg.max_snapshot_bytes = 4096;
  net->Restart(3);
  t = ProposeUntilApplied(net.get(), 3, "after", 2 * 8 * 10 + 30);
  ASSERT_GE(t, 0) << "the follower never caught up once the snapshot fit";
  ASSERT_EQ(net->peer(3).installed.size(), 1u);
  EXPECT_EQ(net->peer(3).installed[0].data, image);
}

// The leader's transfers and the snapshot images it holds for them.
NodeStatus LeaderStatus(Network* net) { return net->node(1).GetStatus(); }

// Proposes `n` entries on node 1 and commits them (on the nodes not held);
// returns node 1's applied index.
Index ProposeAndApply(Network* net, int n, const std::string& prefix) {
  for (int i = 0; i < n; ++i) {
    EXPECT_TRUE(net->node(1).Propose(prefix + std::to_string(i)).ok());
    net->Stabilize();
  }
  return net->peer(1).applied_index;
}

// Holds (Network::Hold) node `id` once its driver stores the chunk at
// `offset`: the transfer is then in progress, its answer in flight.
void HoldAtChunk(Network* net, std::map<NodeId, bool>* held, uint64_t offset) {
  net->on_ready = [net, held, offset](NodeId id, const Ready& rd) {
    if (!held->count(id) || (*held)[id]) return;
    for (const SnapshotChunk& c : rd.snapshot_chunks) {
      if (c.offset == offset) {
        (*held)[id] = true;
        net->Hold(id);
      }
    }
  };
}

// A transfer sends the snapshot it started with to the end, even when the
// leader takes a newer one meanwhile (as etcd-io/raft sends the snapshot it
// started with). Restarting with the newer one starves the follower whenever
// a transfer takes longer than the interval between two snapshots. The
// follower then needs entries the leader has compacted since, and gets the
// newer snapshot next: two complete transfers, none restarted.
TEST(SnapshotTest, TransferKeepsItsSnapshotWhenTheLeaderTakesANewerOne) {
  auto net = ChunkedNetwork();
  const std::string first = SnapshotImage(1000);
  const Index first_index = LagAndCompact(net.get(), first);
  std::map<NodeId, bool> held{{3, false}};
  HoldAtChunk(net.get(), &held, 3 * kChunk);
  ASSERT_GE(net->TickUntil([&] { return held[3]; }, 30), 0) << "the transfer never started";
  net->on_ready = nullptr;

  // Mid-transfer, the leader takes a newer snapshot (another image) and
  // compacts its log through it.
  const Index second_index = ProposeAndApply(net.get(), 5, "q");
  const std::string second = SnapshotImage(700) + "/2";
  ASSERT_TRUE(net->storage(1).CreateSnapshot(second_index, net->node(1).conf(), second).ok());
  ASSERT_TRUE(net->storage(1).Compact(second_index).ok());
  EXPECT_EQ(LeaderStatus(net.get()).pinned_snapshot_images, 1u);
  EXPECT_EQ(LeaderStatus(net.get()).pinned_snapshot_bytes, first.size());

  net->ReleaseHeld();
  int t = ProposeUntilApplied(net.get(), 3, "after", 60);
  ASSERT_GE(t, 0) << "follower never caught up";
  ASSERT_EQ(net->peer(3).installed.size(), 2u);
  EXPECT_EQ(net->peer(3).installed[0].meta.index, first_index);
  EXPECT_EQ(net->peer(3).installed[0].data, first) << "the first transfer was not completed";
  EXPECT_EQ(net->peer(3).installed[1].meta.index, second_index);
  EXPECT_EQ(net->peer(3).installed[1].data, second);
  int first_starts = 0;
  for (const Message& m : Chunks(net->sent, 3))
    first_starts += m.snap_meta.index == first_index && m.snap_offset == 0;
  EXPECT_EQ(first_starts, 1) << "the transfer of the first snapshot started over";
  EXPECT_EQ(LeaderStatus(net.get()).pinned_snapshot_images, 0u) << "image held after its transfers";
  EXPECT_EQ(LeaderStatus(net.get()).pinned_snapshot_bytes, 0u);
}

// The leader copies the image a transfer pins once per snapshot, not once
// per follower, and releases it when the last transfer of it ends.
TEST(SnapshotTest, TransfersOfOneSnapshotShareOneImage) {
  auto net = Network::Make(5, 0, [](Config& c) { c.max_snapshot_chunk_bytes = kChunk; });
  net->Isolate(4);
  net->Isolate(5);
  net->Campaign(1);
  const Index snap_index = ProposeAndApply(net.get(), 20, "p");
  const std::string image = SnapshotImage(1000);
  ASSERT_TRUE(net->storage(1).CreateSnapshot(snap_index, net->node(1).conf(), image).ok());
  ASSERT_TRUE(net->storage(1).Compact(snap_index).ok());
  net->Heal();
  std::map<NodeId, bool> held{{4, false}, {5, false}};
  HoldAtChunk(net.get(), &held, 2 * kChunk);
  ASSERT_GE(net->TickUntil([&] { return held[4] && held[5]; }, 30), 0);
  net->on_ready = nullptr;
  NodeStatus st = LeaderStatus(net.get());
  EXPECT_EQ(st.pinned_snapshot_images, 1u);
  EXPECT_EQ(st.pinned_snapshot_bytes, image.size());
  EXPECT_EQ(net->node(1).OldestSnapshotInTransfer(), snap_index);
  for (const PeerStatus& p : st.peers)
    EXPECT_EQ(p.sending_snapshot_index, p.id >= 4 ? snap_index : 0) << "peer " << p.id;

  // A newer snapshot is not copied until a transfer needs it.
  const Index newer = ProposeAndApply(net.get(), 3, "q");
  ASSERT_TRUE(net->storage(1).CreateSnapshot(newer, net->node(1).conf(), image + "+").ok());
  EXPECT_EQ(LeaderStatus(net.get()).pinned_snapshot_bytes, image.size());

  net->ReleaseHeld();
  int t = net->TickUntil(
      [&] { return net->peer(4).installed.size() == 1 && net->peer(5).installed.size() == 1; }, 30);
  ASSERT_GE(t, 0) << "the transfers never completed";
  EXPECT_EQ(net->peer(4).installed[0].data, image);
  EXPECT_EQ(net->peer(5).installed[0].data, image);
  st = LeaderStatus(net.get());
  EXPECT_EQ(st.pinned_snapshot_images, 0u);
  EXPECT_EQ(st.pinned_snapshot_bytes, 0u);
  EXPECT_EQ(net->node(1).OldestSnapshotInTransfer(), 0u);
}

// A follower that falls silent mid-transfer (no answer to a chunk or a
// heartbeat for an election timeout) loses its transfer: the leader stops
// sending it chunks and releases the image, rather than hold it for a
// follower that may never come back. Heard from again, it gets the newest
// snapshot and catches up.
TEST(SnapshotTest, SilentFollowerLosesItsTransferAndItsImage) {
  auto net = ChunkedNetwork();
  const std::string image = SnapshotImage(1000);
  LagAndCompact(net.get(), image);
  std::map<NodeId, bool> held{{3, false}};
  HoldAtChunk(net.get(), &held, 2 * kChunk);
  ASSERT_GE(net->TickUntil([&] { return held[3]; }, 30), 0);
  net->on_ready = nullptr;
  EXPECT_EQ(LeaderStatus(net.get()).pinned_snapshot_images, 1u);

  // Node 3 goes dark: what was held is lost, and so is everything after.
  net->Heal();
  net->Isolate(3);
  net->ReleaseHeld();
  const int chunks_before = net->CountSent(MessageType::kSnap, 1, 3);
  for (int i = 0; i < 5 * 10; ++i) net->TickAll();
  EXPECT_LE(net->CountSent(MessageType::kSnap, 1, 3), chunks_before + 1)
      << "the leader kept sending chunks to a follower it never heard from";
  EXPECT_EQ(LeaderStatus(net.get()).pinned_snapshot_images, 0u);
  EXPECT_EQ(LeaderStatus(net.get()).pinned_snapshot_bytes, 0u);

  net->Heal();
  int t = ProposeUntilApplied(net.get(), 3, "after", 60);
  ASSERT_GE(t, 0) << "follower never caught up once heard from again";
  ASSERT_EQ(net->peer(3).installed.size(), 1u);
  EXPECT_EQ(net->peer(3).installed[0].data, image);
}

}  // namespace
}  // namespace raftkv::raft
