// A snapshot received from the leader in chunks, streamed to disk
// (docs/wal-format.md, "Snapshots received from the leader"): through
// SnapshotReceiver alone and through DiskStorage, over a MemEnv that can lose
// power in the middle of a transfer.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "raft/rng.h"
#include "storage/disk_storage.h"
#include "storage/format.h"
#include "storage/mem_env.h"
#include "storage/snapshot_file.h"
#include "test_util.h"

namespace raftkv::storage {
namespace {

using testing::MakeEntry;

constexpr uint64_t kCluster = 7;
constexpr uint64_t kNode = 3;
constexpr uint64_t kChunk = 100;
const std::string kDir = "/data";

std::string Image(size_t n) {
  std::string s;
  for (size_t i = 0; i < n; i++) s.push_back(static_cast<char>((i * 131 + i / 7) & 0xff));
  return s;
}

raft::SnapshotMeta Meta(raft::Index index) {
  raft::SnapshotMeta m;
  m.index = index;
  m.term = 4;
  m.conf.members = {raft::Member{1, raft::MemberRole::kVoter, false, "a:1"},
                    raft::Member{3, raft::MemberRole::kLearner, true, "c:3"}};
  return m;
}

// The chunks a leader sends of `image`, as the follower's core hands them out.
std::vector<raft::SnapshotChunk> Chunks(const raft::SnapshotMeta& meta, const std::string& image) {
  std::vector<raft::SnapshotChunk> out;
  for (uint64_t off = 0; off == 0 || off < image.size(); off += kChunk) {
    std::string data = image.substr(off, kChunk);
    bool done = off + data.size() == image.size();
    out.push_back(raft::SnapshotChunk{meta, off, std::move(data), done});
  }
  return out;
}

StorageOptions Opts(MemEnv* env) {
  StorageOptions o;
  o.cluster_id = kCluster;
  o.node_id = kNode;
  o.env = env;
  return o;
}

std::unique_ptr<DiskStorage> MustOpen(MemEnv* env) {
  std::unique_ptr<DiskStorage> ds;
  Status s = DiskStorage::Open(kDir, Opts(env), &ds);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return ds;
}

bool Exists(MemEnv* env, const std::string& name) {
  bool exists = false;
  EXPECT_TRUE(env->FileExists(JoinPath(kDir, name), &exists).ok());
  return exists;
}

// A node with entries 1..10 of term 1 and a snapshot of its own at 5.
std::unique_ptr<DiskStorage> NodeWithSnapshotAt5(MemEnv* env) {
  auto ds = MustOpen(env);
  Update u;
  for (raft::Index i = 1; i <= 10; i++) u.entries.push_back(MakeEntry(1, i, 20));
  u.hard_state = raft::HardState{1, 1, 10};
  EXPECT_TRUE(ds->Save(u).ok());
  EXPECT_TRUE(ds->CreateSnapshot(5, {}, "state-at-5").ok());
  return ds;
}

void ExpectPreviousStateIntact(DiskStorage* ds) {
  EXPECT_EQ(ds->LatestSnapshot().meta.index, 5u);
  EXPECT_EQ(ds->LatestSnapshot().data, "state-at-5");
  ASSERT_EQ(ds->LastIndex(), 10u);
  for (raft::Index i = ds->FirstIndex(); i <= 10; i++) {
    std::vector<raft::Entry> es;
    ASSERT_TRUE(ds->Entries(i, i + 1, UINT64_MAX, &es).ok());
    EXPECT_EQ(es[0], MakeEntry(1, i, 20));
  }
  EXPECT_EQ(ds->InitialHardState(), (raft::HardState{1, 1, 10}));
}

// The Updates a driver saves for a transfer: one per chunk, the last with
// the streamed snapshot (and the hard state the restore commits).
std::vector<Update> TransferUpdates(const raft::SnapshotMeta& meta, const std::string& image) {
  std::vector<Update> out;
  for (raft::SnapshotChunk& c : Chunks(meta, image)) {
    Update u;
    bool done = c.done;
    u.snapshot_chunks.push_back(std::move(c));
    if (done) {
      auto snap = std::make_shared<raft::Snapshot>();
      snap->meta = meta;
      snap->streamed = true;
      u.snapshot = snap;
      u.hard_state = raft::HardState{4, 0, meta.index};
    }
    out.push_back(std::move(u));
  }
  return out;
}

TEST(SnapshotReceiverTest, ChunksInOrderProduceTheSourceImageByteForByte) {
  MemEnv env;
  auto ds = NodeWithSnapshotAt5(&env);
  const raft::SnapshotMeta meta = Meta(50);
  const std::string image = Image(10 * kChunk + 37);
  for (const Update& u : TransferUpdates(meta, image)) ASSERT_TRUE(ds->Save(u).ok());
  EXPECT_EQ(ds->LatestSnapshot().meta, meta);
  EXPECT_EQ(ds->LatestSnapshot().data, image);
  EXPECT_FALSE(ds->LatestSnapshot().streamed);
  EXPECT_EQ(ds->FirstIndex(), 51u);
  EXPECT_FALSE(Exists(&env, kReceiveFileName));
  EXPECT_FALSE(Exists(&env, SnapshotFileName(5))) << "the previous snapshot was not replaced";

  // The file's data section is the leader's image, byte for byte, and it
  // reads back whole after a restart.
  std::string file;
  ASSERT_TRUE(env.ReadFile(JoinPath(kDir, SnapshotFileName(50)), 1 << 20, &file).ok());
  ASSERT_GE(file.size(), image.size() + 16);
  EXPECT_EQ(file.substr(file.size() - 16 - image.size(), image.size()), image);
  ds.reset();
  ds = MustOpen(&env);
  EXPECT_EQ(ds->LatestSnapshot().meta, meta);
  EXPECT_EQ(ds->LatestSnapshot().data, image);
  EXPECT_EQ(ds->InitialHardState().commit, 50u);
}

TEST(SnapshotReceiverTest, EmptyImageInOneChunk) {
  MemEnv env;
  auto ds = NodeWithSnapshotAt5(&env);
  for (const Update& u : TransferUpdates(Meta(50), "")) ASSERT_TRUE(ds->Save(u).ok());
  ds.reset();
  ds = MustOpen(&env);
  EXPECT_EQ(ds->LatestSnapshot().meta.index, 50u);
  EXPECT_EQ(ds->LatestSnapshot().data, "");
}

TEST(SnapshotReceiverTest, ChunkNotAtTheEndIsRefused) {
  MemEnv env;
  ASSERT_TRUE(env.CreateDir(kDir).ok());
  SnapshotReceiver r(&env, kDir, kCluster, kNode, 1 << 20, true);
  const raft::SnapshotMeta meta = Meta(50);
  const std::string image = Image(4 * kChunk);
  std::vector<raft::SnapshotChunk> chunks = Chunks(meta, image);
  raft::Snapshot done;
  // No transfer in progress.
  EXPECT_EQ(r.Write(chunks[1], &done).code(), raft::Code::kInvalidArgument);
  ASSERT_TRUE(r.Write(chunks[0], &done).ok());
  // A gap, an overlap, and a chunk of another snapshot.
  EXPECT_EQ(r.Write(chunks[2], &done).code(), raft::Code::kInvalidArgument);
  EXPECT_EQ(r.Write(raft::SnapshotChunk{meta, kChunk / 2, "x", false}, &done).code(),
            raft::Code::kInvalidArgument);
  raft::SnapshotChunk other = chunks[1];
  other.meta = Meta(60);
  EXPECT_EQ(r.Write(other, &done).code(), raft::Code::kInvalidArgument);
  // Nothing was written by the refusals: the transfer goes on.
  for (size_t i = 1; i < chunks.size(); i++) ASSERT_TRUE(r.Write(chunks[i], &done).ok());
  EXPECT_EQ(done.meta, meta);
  EXPECT_EQ(done.data, image);
  // A finished transfer takes no more chunks but a new start.
  EXPECT_EQ(r.Write(raft::SnapshotChunk{meta, image.size(), "y", true}, &done).code(),
            raft::Code::kInvalidArgument);
}

TEST(SnapshotReceiverTest, ChunkAtOffsetZeroStartsOver) {
  MemEnv env;
  ASSERT_TRUE(env.CreateDir(kDir).ok());
  SnapshotReceiver r(&env, kDir, kCluster, kNode, 1 << 20, true);
  raft::Snapshot done;
  std::vector<raft::SnapshotChunk> first = Chunks(Meta(50), Image(3 * kChunk));
  ASSERT_TRUE(r.Write(first[0], &done).ok());
  ASSERT_TRUE(r.Write(first[1], &done).ok());
  const std::string image = Image(2 * kChunk + 1) + "newer";
  for (const raft::SnapshotChunk& c : Chunks(Meta(60), image)) ASSERT_TRUE(r.Write(c, &done).ok());
  EXPECT_EQ(done.meta.index, 60u);
  EXPECT_EQ(done.data, image);
}

TEST(SnapshotReceiverTest, SnapshotOverTheLimitIsRefused) {
  MemEnv env;
  ASSERT_TRUE(env.CreateDir(kDir).ok());
  SnapshotReceiver r(&env, kDir, kCluster, kNode, 3 * kChunk, true);
  raft::Snapshot done;
  std::vector<raft::SnapshotChunk> chunks = Chunks(Meta(50), Image(4 * kChunk));
  Status s;
  for (const raft::SnapshotChunk& c : chunks) {
    s = r.Write(c, &done);
    if (!s.ok()) break;
  }
  EXPECT_EQ(s.code(), raft::Code::kInvalidArgument) << s.ToString();
  EXPECT_FALSE(Exists(&env, SnapshotFileName(50)));
}

// A power loss in the middle of a transfer, at any of its fsyncs: the
// previous snapshot and the log survive, the receive file is deleted at
// Open and never taken as a snapshot, and a complete snapshot is there only
// if its rename reached the disk.
TEST(SnapshotReceiverTest, PowerLossMidStreamKeepsThePreviousSnapshotAndLog) {
  const raft::SnapshotMeta meta = Meta(50);
  const std::string image = Image(5 * kChunk + 3);
  const std::vector<Update> updates = TransferUpdates(meta, image);
  uint64_t kept_new = 0, kept_old = 0;
  for (uint64_t seed = 1; seed <= 60; seed++) {
    MemEnv env;
    raft::Rng rng(seed);
    auto ds = NodeWithSnapshotAt5(&env);
    // Lose power at the n-th fsync of the transfer's Saves (a chunk's, the
    // WAL's, the last chunk's file or directory sync, the marker's), or
    // after the transfer if it needs fewer.
    const uint64_t crash_at = 1 + rng.Uniform(3 * updates.size());
    env.ArmCrashAtSync(crash_at);
    bool crashed = false;
    for (const Update& u : updates) {
      if (!ds->Save(u).ok()) {
        ASSERT_TRUE(env.frozen()) << "seed " << seed;
        crashed = true;
        break;
      }
    }
    ds.reset();
    env.Crash(&rng);
    ds = MustOpen(&env);
    ASSERT_NE(ds, nullptr);
    EXPECT_FALSE(Exists(&env, kReceiveFileName)) << "seed " << seed;
    if (ds->LatestSnapshot().meta.index == 50) {
      // The last chunk's rename reached the disk (the marker may not have).
      EXPECT_EQ(ds->LatestSnapshot().data, image) << "seed " << seed;
      EXPECT_EQ(ds->FirstIndex(), 51u);
      kept_new++;
    } else {
      ASSERT_TRUE(crashed) << "seed " << seed << ": a completed transfer was lost";
      ExpectPreviousStateIntact(ds.get());
      kept_old++;
    }
  }
  EXPECT_GT(kept_old, 0u);
  EXPECT_GT(kept_new, 0u);
}

// A crash after some chunks leaves the receive file (synced) behind; Open
// deletes it and the node starts from its previous state.
TEST(SnapshotReceiverTest, LeftoverReceiveFileIsDeletedAtOpen) {
  MemEnv env;
  auto ds = NodeWithSnapshotAt5(&env);
  const std::vector<Update> updates = TransferUpdates(Meta(50), Image(5 * kChunk));
  for (size_t i = 0; i + 1 < updates.size(); i++) ASSERT_TRUE(ds->Save(updates[i]).ok());
  ASSERT_TRUE(Exists(&env, kReceiveFileName));
  ds.reset();
  raft::Rng rng(1);
  env.Crash(&rng);
  ds = MustOpen(&env);
  EXPECT_FALSE(Exists(&env, kReceiveFileName));
  ExpectPreviousStateIntact(ds.get());
}

// The renamed file of a streamed snapshot is checked at Open like any
// snapshot file: a short one is corruption, named, with no fallback.
TEST(SnapshotReceiverTest, TornStreamedSnapshotFileIsRefusedAtOpen) {
  const std::string image = Image(3 * kChunk + 11);
  std::string full;
  {
    MemEnv env;
    auto ds = NodeWithSnapshotAt5(&env);
    for (const Update& u : TransferUpdates(Meta(50), image)) ASSERT_TRUE(ds->Save(u).ok());
    ASSERT_TRUE(env.ReadFile(JoinPath(kDir, SnapshotFileName(50)), 1 << 20, &full).ok());
  }
  for (uint64_t size : {uint64_t{0}, uint64_t{10}, uint64_t{100}, uint64_t{full.size() - 17},
                        uint64_t{full.size() - 16}, uint64_t{full.size() - 1}}) {
    MemEnv env;
    auto ds = NodeWithSnapshotAt5(&env);
    for (const Update& u : TransferUpdates(Meta(50), image)) ASSERT_TRUE(ds->Save(u).ok());
    ds.reset();
    ASSERT_TRUE(env.TruncateFile(JoinPath(kDir, SnapshotFileName(50)), size).ok());
    std::unique_ptr<DiskStorage> reopened;
    Status s = DiskStorage::Open(kDir, Opts(&env), &reopened);
    EXPECT_EQ(s.code(), raft::Code::kCorruption) << "size " << size << ": " << s.ToString();
    EXPECT_NE(s.message().find(SnapshotFileName(50)), std::string::npos) << s.ToString();
  }
}

// StorageOptions::max_snapshot_bytes: a chunk that would take a snapshot
// received from the leader past the limit is refused at Submit
// (kInvalidArgument, nothing written) and the WAL stays healthy: the
// node's log goes on, and a snapshot that fits is still received. (Before,
// the writer thread's receiver refused it by failing the whole WAL.)
TEST(SnapshotReceiverTest, ChunkPastMaxSnapshotBytesIsRefusedWithoutFailingTheWal) {
  constexpr uint64_t kBigChunk = 256 << 10;
  MemEnv env;
  StorageOptions o = Opts(&env);
  o.max_snapshot_bytes = (1 << 20) + 2 * kBigChunk;  // 1 MiB of room for header and trailer.
  std::unique_ptr<DiskStorage> ds;
  ASSERT_TRUE(DiskStorage::Open(kDir, o, &ds).ok());
  EXPECT_EQ(ds->max_snapshot_data_bytes(), 2 * kBigChunk);
  Update log;
  for (raft::Index i = 1; i <= 10; i++) log.entries.push_back(MakeEntry(1, i, 20));
  log.hard_state = raft::HardState{1, 1, 10};
  ASSERT_TRUE(ds->Save(log).ok());

  // The leader's image is 8 chunks; the first two fit, the third would not.
  const raft::SnapshotMeta meta = Meta(50);
  const std::string image = Image(8 * kBigChunk);
  Status s;
  uint64_t stored = 0;
  for (uint64_t off = 0; off < image.size(); off += kBigChunk) {
    Update u;
    u.snapshot_chunks.push_back(raft::SnapshotChunk{meta, off, image.substr(off, kBigChunk),
                                                    off + kBigChunk == image.size()});
    s = ds->Save(u);
    if (!s.ok()) break;
    stored = off + kBigChunk;
  }
  EXPECT_EQ(s.code(), raft::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("max_snapshot_bytes"), std::string::npos) << s.ToString();
  EXPECT_EQ(stored, 2 * kBigChunk) << "refused at the wrong chunk";
  EXPECT_TRUE(ds->health().ok()) << "an over-limit chunk failed the WAL: "
                                 << ds->health().ToString();

  // The WAL goes on: entries, and a snapshot that fits.
  Update more;
  more.entries.push_back(MakeEntry(1, 11, 20));
  ASSERT_TRUE(ds->Save(more).ok());
  const std::string fits = Image(2 * kBigChunk - 5);
  const raft::SnapshotMeta meta60 = Meta(60);
  for (uint64_t off = 0; off < fits.size(); off += kBigChunk) {
    Update u;
    std::string data = fits.substr(off, kBigChunk);
    bool done = off + data.size() == fits.size();
    u.snapshot_chunks.push_back(raft::SnapshotChunk{meta60, off, std::move(data), done});
    if (done) {
      auto snap = std::make_shared<raft::Snapshot>();
      snap->meta = meta60;
      snap->streamed = true;
      u.snapshot = snap;
      u.hard_state = raft::HardState{4, 0, 60};
    }
    ASSERT_TRUE(ds->Save(u).ok());
  }
  EXPECT_EQ(ds->LatestSnapshot().meta.index, 60u);
  ds.reset();
  ASSERT_TRUE(DiskStorage::Open(kDir, o, &ds).ok());
  EXPECT_EQ(ds->LatestSnapshot().meta.index, 60u);
  EXPECT_EQ(ds->LatestSnapshot().data, fits);
}

}  // namespace
}  // namespace raftkv::storage
