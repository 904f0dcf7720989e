// MemEnv: what survives a simulated power loss, and DiskStorage on top of it.
#include "storage/mem_env.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "raft/rng.h"
#include "storage/disk_storage.h"
#include "test_util.h"

namespace raftkv::storage {
namespace {

using testing::MakeEntry;

std::string Read(MemEnv* env, const std::string& path) {
  std::string out;
  Status s = env->ReadFile(path, 1 << 30, &out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

bool Exists(MemEnv* env, const std::string& path) {
  bool exists = false;
  EXPECT_TRUE(env->FileExists(path, &exists).ok());
  return exists;
}

// A file /d/f holding `synced`, durable, then `unsynced` appended.
std::unique_ptr<WritableFile> MakeFile(MemEnv* env, const std::string& synced,
                                       const std::string& unsynced) {
  EXPECT_TRUE(env->CreateDir("/d").ok());
  std::unique_ptr<WritableFile> f;
  EXPECT_TRUE(env->NewWritableFile("/d/f", &f).ok());
  EXPECT_TRUE(f->Append({synced}).ok());
  EXPECT_TRUE(f->Sync().ok());
  EXPECT_TRUE(env->SyncDir("/d").ok());
  EXPECT_TRUE(f->Append({unsynced}).ok());
  return f;
}

TEST(MemEnvTest, ReadsSeeUnsyncedWrites) {
  MemEnv env;
  auto f = MakeFile(&env, "abc", "def");
  EXPECT_EQ(Read(&env, "/d/f"), "abcdef");
  EXPECT_EQ(f->Size(), 6u);
  EXPECT_EQ(env.UnsyncedBytes("/d/f"), 3u);
  EXPECT_FALSE(env.AllDurable());
  EXPECT_TRUE(f->Sync().ok());
  EXPECT_TRUE(env.AllDurable());
}

TEST(MemEnvTest, SyncedContentSurvivesACrash) {
  MemEnv env;
  auto f = MakeFile(&env, "abc", "");
  raft::Rng rng(1);
  env.Crash(&rng);
  EXPECT_EQ(Read(&env, "/d/f"), "abc");
}

TEST(MemEnvTest, CrashKeepsNoneOrATornPrefixOfTheUnsyncedTail) {
  bool lost = false, torn = false, whole = false;
  for (uint64_t seed = 1; seed <= 200; seed++) {
    MemEnv env;
    auto f = MakeFile(&env, "abc", "defghijk");
    raft::Rng rng(seed);
    env.Crash(&rng);
    std::string got = Read(&env, "/d/f");
    ASSERT_GE(got.size(), 3u);
    ASSERT_EQ(std::string("abcdefghijk").substr(0, got.size()), got) << "seed " << seed;
    lost |= got.size() == 3;
    torn |= got.size() > 3 && got.size() < 11;
    whole |= got.size() == 11;
    // What survived is durable now.
    EXPECT_TRUE(env.AllDurable());
  }
  EXPECT_TRUE(lost);
  EXPECT_TRUE(torn);
  EXPECT_TRUE(whole);
}

TEST(MemEnvTest, UnsyncedTruncationIsUndone) {
  for (uint64_t seed = 1; seed <= 50; seed++) {
    MemEnv env;
    auto f = MakeFile(&env, "abcdef", "");
    ASSERT_TRUE(f->Truncate(2).ok());
    EXPECT_EQ(Read(&env, "/d/f"), "ab");
    raft::Rng rng(seed);
    env.Crash(&rng);
    std::string got = Read(&env, "/d/f");
    EXPECT_EQ(got, "abcdef");
  }
}

TEST(MemEnvTest, TruncateFileIsDurable) {
  MemEnv env;
  auto f = MakeFile(&env, "abcdef", "gh");
  ASSERT_TRUE(env.TruncateFile("/d/f", 4).ok());
  raft::Rng rng(3);
  env.Crash(&rng);
  EXPECT_EQ(Read(&env, "/d/f"), "abcd");
}

TEST(MemEnvTest, UnsyncedDirectoryOperationsMayBeUndoneAndRenamesStayWhole) {
  bool created_lost = false, created_kept = false, renamed = false, not_renamed = false;
  for (uint64_t seed = 1; seed <= 200; seed++) {
    MemEnv env;
    ASSERT_TRUE(env.CreateDir("/d").ok());
    std::unique_ptr<WritableFile> f;
    ASSERT_TRUE(env.NewWritableFile("/d/a.tmp", &f).ok());
    ASSERT_TRUE(f->Append({"x"}).ok());
    ASSERT_TRUE(f->Sync().ok());
    ASSERT_TRUE(env.SyncDir("/d").ok());
    ASSERT_TRUE(env.NewWritableFile("/d/b", &f).ok());
    ASSERT_TRUE(f->Sync().ok());
    ASSERT_TRUE(env.RenameFile("/d/a.tmp", "/d/a").ok());
    EXPECT_TRUE(Exists(&env, "/d/a"));
    EXPECT_FALSE(Exists(&env, "/d/a.tmp"));
    raft::Rng rng(seed);
    env.Crash(&rng);
    // The rename is all or nothing.
    bool a = Exists(&env, "/d/a"), tmp = Exists(&env, "/d/a.tmp");
    ASSERT_NE(a, tmp) << "seed " << seed;
    EXPECT_EQ(Read(&env, a ? "/d/a" : "/d/a.tmp"), "x");
    // Operations reach the disk in order: no rename without the create before it.
    if (a) {
      EXPECT_TRUE(Exists(&env, "/d/b"));
    }
    (Exists(&env, "/d/b") ? created_kept : created_lost) = true;
    (a ? renamed : not_renamed) = true;
  }
  EXPECT_TRUE(created_lost && created_kept && renamed && not_renamed);
}

TEST(MemEnvTest, SyncDirMakesDirectoryOperationsDurable) {
  MemEnv env;
  ASSERT_TRUE(env.CreateDir("/d").ok());
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(env.NewWritableFile("/d/a", &f).ok());
  ASSERT_TRUE(env.NewWritableFile("/d/b", &f).ok());
  ASSERT_TRUE(env.RemoveFile("/d/a").ok());
  ASSERT_TRUE(env.SyncDir("/d").ok());
  raft::Rng rng(5);
  env.Crash(&rng);
  EXPECT_FALSE(Exists(&env, "/d/a"));
  EXPECT_TRUE(Exists(&env, "/d/b"));
  std::vector<std::string> names;
  ASSERT_TRUE(env.ListDir("/d", &names).ok());
  EXPECT_EQ(names, std::vector<std::string>{"b"});
}

TEST(MemEnvTest, HandlesOpenedBeforeACrashFail) {
  MemEnv env;
  auto f = MakeFile(&env, "abc", "");
  raft::Rng rng(1);
  env.Crash(&rng);
  EXPECT_EQ(f->Append({"x"}).code(), raft::Code::kIoError);
  EXPECT_EQ(Read(&env, "/d/f"), "abc");
}

TEST(MemEnvTest, ArmedSyncFailsAndFreezesTheEnvUntilTheCrash) {
  MemEnv env;
  auto f = MakeFile(&env, "abc", "def");
  env.ArmCrashAtSync(2);
  ASSERT_TRUE(env.SyncDir("/d").ok());  // The first sync still works.
  EXPECT_FALSE(env.frozen());
  EXPECT_EQ(f->Sync().code(), raft::Code::kIoError);
  EXPECT_TRUE(env.frozen());
  // Nothing after the power loss reaches the disk.
  EXPECT_FALSE(f->Truncate(3).ok());
  EXPECT_FALSE(env.RemoveFile("/d/f").ok());
  EXPECT_EQ(Read(&env, "/d/f"), "abcdef");
  EXPECT_EQ(env.UnsyncedBytes("/d/f"), 3u);
  raft::Rng rng(9);
  env.Crash(&rng);
  EXPECT_FALSE(env.frozen());
  std::string got = Read(&env, "/d/f");
  EXPECT_EQ(std::string("abcdef").substr(0, got.size()), got);
  EXPECT_GE(got.size(), 3u);
}

// DiskStorage over a MemEnv that loses power at every possible fsync of a
// Save, with small segments so that rotations (and their seals) are hit too:
// after every crash and reopen, every entry whose Save completed is there.
TEST(MemEnvTest, DiskStorageKeepsEveryAcknowledgedEntryAcrossCrashes) {
  uint64_t crashes = 0, torn_cuts = 0, torn_seals = 0;
  for (uint64_t seed = 1; seed <= 40; seed++) {
    MemEnv env;
    raft::Rng rng(seed);
    StorageOptions o;
    o.cluster_id = 7;
    o.node_id = 3;
    o.segment_bytes = 300 + rng.Uniform(400);
    o.env = &env;
    raft::Index acked = 0;    // Last index whose Save completed.
    raft::Index written = 0;  // Last index handed to Save.
    const raft::Term term = 1;
    for (int round = 0; round < 30; round++) {
      std::unique_ptr<DiskStorage> ds;
      RecoveryInfo info;
      Status s = DiskStorage::Open("/data", o, &ds, &info);
      ASSERT_TRUE(s.ok()) << "seed " << seed << " round " << round << ": " << s.ToString();
      torn_cuts += info.wal.torn_tail_cut;
      torn_seals += info.wal.torn_tail_cut && info.wal.removed_unsealed_rotation;
      ASSERT_GE(ds->LastIndex(), acked) << "seed " << seed << " round " << round;
      ASSERT_LE(ds->LastIndex(), written);
      for (raft::Index i = ds->FirstIndex(); i <= acked; i++) {
        std::vector<raft::Entry> es;
        ASSERT_TRUE(ds->Entries(i, i + 1, UINT64_MAX, &es).ok());
        ASSERT_EQ(es.size(), 1u);
        ASSERT_EQ(es[0].data, MakeEntry(es[0].term, i, 40).data) << "index " << i;
      }
      // Continue after what survived; unacknowledged entries may be gone.
      written = ds->LastIndex();
      acked = written;
      int saves = 1 + static_cast<int>(rng.Uniform(6));
      bool crashed = false;
      for (int k = 0; k < saves && !crashed; k++) {
        Update u;
        size_t n = 1 + rng.Uniform(4);
        for (size_t j = 0; j < n; j++) u.entries.push_back(MakeEntry(term, written + 1 + j, 40));
        u.hard_state = raft::HardState{term, 0, 0};
        if (k == saves - 1 && rng.Chance(3, 4)) env.ArmCrashAtSync(1 + rng.Uniform(4));
        written += n;
        s = ds->Save(u);
        if (s.ok()) {
          acked = written;
        } else {
          ASSERT_TRUE(env.frozen()) << s.ToString();
          crashed = true;
        }
      }
      env.ArmCrashAtSync(0);
      ds.reset();
      env.Crash(&rng);
      crashes++;
    }
  }
  EXPECT_EQ(crashes, 40u * 30u);
  EXPECT_GT(torn_cuts, 0u);
  EXPECT_GT(torn_seals, 0u);  // A crash while sealing a segment was recovered.
}

}  // namespace
}  // namespace raftkv::storage
