// Wal: group commit, fsync modes, limits and write failures.
#include "storage/wal.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "storage/disk_storage.h"
#include "test_util.h"

namespace raftkv::storage {
namespace {

using testing::FaultEnv;
using testing::MakeEntry;
using testing::TempDir;

WalOptions Opts(const std::string& dir, Env* env = nullptr) {
  WalOptions o;
  o.dir = dir;
  o.cluster_id = 1;
  o.node_id = 1;
  o.env = env;
  return o;
}

std::unique_ptr<Wal> MustOpen(const WalOptions& o) {
  std::unique_ptr<Wal> wal;
  WalRecovery rec;
  Status s = Wal::Open(
      o, [](RecordType, std::string_view, const RecordLocation&) { return Status::Ok(); }, &rec,
      &wal);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return wal;
}

WalBatch OneEntry(raft::Index index) {
  WalBatch b;
  b.AddEntry(MakeEntry(1, index, 64));
  return b;
}

// Many concurrent submitters: the writer covers many batches with one fsync.
TEST(WalTest, ConcurrentSubmittersShareFsyncs) {
  TempDir d;
  FaultEnv env;
  env.faults.sync_delay_us = 5000;  // A slow disk makes the grouping visible.
  auto wal = MustOpen(Opts(d.path(), &env));
  constexpr int kThreads = 32;
  constexpr int kPerThread = 40;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; i++) {
        if (!wal->SubmitAndWait(OneEntry(t * kPerThread + i + 1)).ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, 0);
  WalStats st = wal->stats();
  EXPECT_EQ(st.batches, uint64_t{kThreads * kPerThread});
  EXPECT_EQ(st.entries, uint64_t{kThreads * kPerThread});
  // One fsync per batch would be 1280; with 32 submitters waiting during each
  // 5 ms fsync, each one covers many batches.
  EXPECT_LT(st.fsyncs * 8, st.batches) << "fsyncs " << st.fsyncs << " batches " << st.batches;
  EXPECT_GT(st.fsyncs, 0u);
}

TEST(WalTest, OneSubmitterGetsOneFsyncPerBatch) {
  TempDir d;
  auto wal = MustOpen(Opts(d.path()));
  uint64_t base = wal->stats().fsyncs;
  for (raft::Index i = 1; i <= 10; i++) ASSERT_TRUE(wal->SubmitAndWait(OneEntry(i)).ok());
  EXPECT_EQ(wal->stats().fsyncs - base, 10u);
}

TEST(WalTest, FsyncNeverIssuesNoFsync) {
  TempDir d;
  WalOptions o = Opts(d.path());
  o.fsync = FsyncMode::kNever;
  auto wal = MustOpen(o);
  for (raft::Index i = 1; i <= 10; i++) ASSERT_TRUE(wal->SubmitAndWait(OneEntry(i)).ok());
  EXPECT_EQ(wal->stats().fsyncs, 0u);
  EXPECT_NE(wal->Describe().find("never (benchmarks only"), std::string::npos) << wal->Describe();
  FsyncMode m;
  EXPECT_TRUE(ParseFsyncMode("never", &m));
  EXPECT_EQ(m, FsyncMode::kNever);
  EXPECT_TRUE(ParseFsyncMode("always", &m));
  EXPECT_EQ(m, FsyncMode::kAlways);
  EXPECT_FALSE(ParseFsyncMode("sometimes", &m));
}

TEST(WalTest, CompletionsRunInSubmissionOrder) {
  TempDir d;
  auto wal = MustOpen(Opts(d.path()));
  std::mutex mu;
  std::vector<int> order;
  std::promise<void> all;
  constexpr int kN = 200;
  for (int i = 0; i < kN; i++) {
    ASSERT_TRUE(wal->Submit(OneEntry(i + 1),
                            [&, i](const Status& s) {
                              EXPECT_TRUE(s.ok());
                              std::lock_guard<std::mutex> l(mu);
                              order.push_back(i);
                              if (i == kN - 1) all.set_value();
                            })
                    .ok());
  }
  all.get_future().wait();
  for (int i = 0; i < kN; i++) EXPECT_EQ(order[i], i);
}

// manual_writer (the simulator's mode): nothing is written or completed
// until the owner runs the queue, and then every batch queued so far goes
// as one group with one fsync, completions in order, on the caller's thread.
TEST(WalTest, ManualWriterWritesOnlyWhenRunAndAsOneGroup) {
  TempDir d;
  WalOptions o = Opts(d.path());
  o.manual_writer = true;
  auto wal = MustOpen(o);
  EXPECT_FALSE(wal->RunQueued());
  std::vector<int> done;
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(wal->Submit(OneEntry(i + 1),
                            [&, i](const Status& s) {
                              EXPECT_TRUE(s.ok());
                              done.push_back(i);
                            })
                    .ok());
  }
  WalStats before = wal->stats();
  EXPECT_TRUE(done.empty());
  EXPECT_EQ(before.batches, 0u);
  EXPECT_TRUE(wal->RunQueued());
  EXPECT_EQ(done, (std::vector<int>{0, 1, 2}));
  WalStats after = wal->stats();
  EXPECT_EQ(after.batches, 3u);
  EXPECT_EQ(after.writes - before.writes, 1u);
  EXPECT_FALSE(wal->RunQueued());
}

TEST(WalTest, RecordOverTheLimitIsRefused) {
  TempDir d;
  WalOptions o = Opts(d.path());
  o.max_record_bytes = 100;
  auto wal = MustOpen(o);
  WalBatch b;
  b.AddEntry(MakeEntry(1, 1, 200));
  Status s = wal->Submit(std::move(b), [](const Status&) { FAIL() << "must not run"; });
  EXPECT_EQ(s.code(), raft::Code::kUnavailable);
  EXPECT_NE(s.message().find("max_record_bytes"), std::string::npos);
  EXPECT_TRUE(wal->health().ok());
}

TEST(WalTest, BatchOverTheLimitIsRefused) {
  TempDir d;
  WalOptions o = Opts(d.path());
  o.max_batch_bytes = 1000;
  auto wal = MustOpen(o);
  WalBatch b;
  for (raft::Index i = 1; i <= 20; i++) b.AddEntry(MakeEntry(1, i, 64));
  EXPECT_EQ(wal->SubmitAndWait(std::move(b)).code(), raft::Code::kUnavailable);
}

StorageOptions StorageOpts(Env* env) {
  StorageOptions o;
  o.cluster_id = 1;
  o.node_id = 1;
  o.env = env;
  o.segment_bytes = 4096;
  return o;
}

Update Entries(raft::Index lo, raft::Index hi) {
  Update u;
  for (raft::Index i = lo; i <= hi; i++) u.entries.push_back(MakeEntry(1, i, 64));
  u.hard_state = raft::HardState{1, 1, hi};
  return u;
}

// Disk full in the middle of a write: the batch fails, the storage refuses
// further writes with the same status, and what is on disk stays readable
// with every acknowledged entry.
TEST(WalTest, DiskFullFailsTheBatchAndLaterSubmitsAndKeepsTheDiskClean) {
  TempDir d;
  FaultEnv env;
  {
    std::unique_ptr<DiskStorage> ds;
    ASSERT_TRUE(DiskStorage::Open(d.path(), StorageOpts(&env), &ds).ok());
    ASSERT_TRUE(ds->Save(Entries(1, 5)).ok());
    env.faults.write_budget_bytes = 100;  // The next batch is about 1 KB.
    Status s = ds->Save(Entries(6, 15));
    EXPECT_EQ(s.code(), raft::Code::kIoError) << s.ToString();
    EXPECT_NE(s.message().find("No space left"), std::string::npos) << s.ToString();
    EXPECT_EQ(ds->health().code(), raft::Code::kIoError);
    env.faults.write_budget_bytes = -1;  // Space is back, but the WAL stays failed.
    Status again = ds->Submit(Entries(6, 6), [](const Status&) { FAIL() << "must not run"; });
    EXPECT_EQ(again.code(), raft::Code::kIoError);
    EXPECT_EQ(again.message(), s.message());
    EXPECT_EQ(ds->CreateSnapshot(5, {}, "x").code(), raft::Code::kIoError);
    EXPECT_EQ(ds->LastIndex(), 5u);
  }
  RecoveryInfo info;
  std::unique_ptr<DiskStorage> ds;
  Status s = DiskStorage::Open(d.path(), StorageOpts(nullptr), &ds, &info);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(info.wal.torn_tail_cut) << "the failed write was truncated away";
  EXPECT_EQ(ds->LastIndex(), 5u);
  EXPECT_EQ(ds->InitialHardState().commit, 5u);
  ASSERT_TRUE(ds->Save(Entries(6, 7)).ok());
}

TEST(WalTest, DiskFullDuringSegmentRotationKeepsTheDiskReadable) {
  TempDir d;
  FaultEnv env;
  raft::Index acked = 0;
  {
    std::unique_ptr<DiskStorage> ds;
    ASSERT_TRUE(DiskStorage::Open(d.path(), StorageOpts(&env), &ds).ok());
    env.faults.write_budget_bytes = 20000;  // About five 4 KiB segments.
    for (raft::Index i = 1; i <= 400; i++) {
      Status s = ds->Save(Entries(i, i));
      if (!s.ok()) {
        EXPECT_EQ(s.code(), raft::Code::kIoError);
        break;
      }
      acked = i;
    }
    ASSERT_FALSE(ds->health().ok());
  }
  ASSERT_GT(acked, 10u);
  std::unique_ptr<DiskStorage> ds;
  Status s = DiskStorage::Open(d.path(), StorageOpts(nullptr), &ds);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_GE(ds->LastIndex(), acked);
  std::vector<raft::Entry> got;
  ASSERT_TRUE(ds->Entries(1, acked + 1, UINT64_MAX, &got).ok());
  for (raft::Index i = 1; i <= acked; i++) EXPECT_EQ(got[i - 1], MakeEntry(1, i, 64));
}

TEST(WalTest, FsyncErrorFailsTheBatchAndTheWal) {
  TempDir d;
  FaultEnv env;
  std::unique_ptr<DiskStorage> ds;
  ASSERT_TRUE(DiskStorage::Open(d.path(), StorageOpts(&env), &ds).ok());
  ASSERT_TRUE(ds->Save(Entries(1, 3)).ok());
  env.faults.fail_sync = true;
  Status s = ds->Save(Entries(4, 4));
  EXPECT_EQ(s.code(), raft::Code::kIoError) << s.ToString();
  env.faults.fail_sync = false;
  EXPECT_EQ(ds->Save(Entries(4, 4)).code(), raft::Code::kIoError);
  EXPECT_EQ(ds->LastIndex(), 3u);
}

// Batches queued behind a failing write get its error too, although the
// disk would take them: after a failed fsync the page cache state is
// unknown, so the WAL writes and syncs nothing more.
TEST(WalTest, QueuedBatchesBehindAFailureAllFail) {
  TempDir d;
  FaultEnv env;
  auto wal = MustOpen(Opts(d.path(), &env));
  const uint64_t syncs_before = env.faults.syncs;
  env.faults.fail_next_syncs = 1;  // Only the first sync fails.
  env.faults.HoldSyncs();
  std::atomic<int> failed{0};
  std::promise<void> done;
  constexpr int kN = 50;
  std::atomic<int> completed{0};
  auto submit = [&](int i) {
    Status s = wal->Submit(OneEntry(i + 1), [&](const Status& st) {
      if (!st.ok()) failed++;
      if (++completed == kN) done.set_value();
    });
    EXPECT_TRUE(s.ok()) << "batch " << i << " refused before the failure: " << s.ToString();
  };
  // The first batch reaches its sync and waits there; the others queue
  // behind it, then the sync fails.
  submit(0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (env.faults.syncs == syncs_before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  if (env.faults.syncs - syncs_before != 1) {
    env.faults.ReleaseSyncs();  // Or the writer thread never ends.
    FAIL() << "the first batch never reached its sync";
  }
  for (int i = 1; i < kN; i++) submit(i);
  env.faults.ReleaseSyncs();
  done.get_future().wait();
  EXPECT_EQ(failed, kN);
  // The failed sync, and the one after truncating its batch away; none for
  // the batches queued behind it.
  EXPECT_EQ(env.faults.syncs - syncs_before, 2u) << "queued batches written after the failure";
  EXPECT_FALSE(wal->Submit(OneEntry(kN + 1), [](const Status&) {}).ok());
}

}  // namespace
}  // namespace raftkv::storage
