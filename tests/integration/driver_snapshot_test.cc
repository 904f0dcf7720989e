// The driver's snapshots over the server's own WalLogStore and DiskStorage
// (on a MemEnv whose snapshot files a test can fail or hold): a snapshot's
// file I/O never blocks the driver, and a failed one is reported in the
// status and retried with back-off until it succeeds (issue 10).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kv/command.h"
#include "kv/store.h"
#include "server/driver.h"
#include "server/log_store.h"
#include "storage/disk_storage.h"
#include "storage/mem_env.h"

namespace raftkv::server {
namespace {

using raft::Status;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// A MemEnv whose local snapshot files (snap-<index>.snap.tmp, before their
// rename) can be refused at creation, or held at their fsync.
class SnapshotFaultEnv : public storage::EnvWrapper {
 public:
  SnapshotFaultEnv() : EnvWrapper(&mem_) {}

  std::atomic<bool> fail{false};
  std::atomic<int> attempts{0};  // Snapshot files created or refused.

  void Hold() {
    std::lock_guard l(mu_);
    held_ = true;
  }
  void Release() {
    {
      std::lock_guard l(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // Whether a snapshot's fsync is waiting in Hold.
  bool waiting() {
    std::lock_guard l(mu_);
    return waiting_;
  }

  Status NewWritableFile(const std::string& path,
                         std::unique_ptr<storage::WritableFile>* out) override {
    if (!IsSnapshotFile(path)) return EnvWrapper::NewWritableFile(path, out);
    attempts++;
    if (fail) return Status(raft::Code::kIoError, "open " + path + ": No space left on device");
    Status s = EnvWrapper::NewWritableFile(path, out);
    if (s.ok()) *out = std::make_unique<HeldFile>(std::move(*out), this);
    return s;
  }

 private:
  static bool IsSnapshotFile(const std::string& path) {
    const std::string suffix = ".snap.tmp";
    return path.size() > suffix.size() &&
           path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  }

  // Waits while held (at most 10 s: a driver that blocks on it must not
  // hang the test).
  void WaitWhileHeld() {
    std::unique_lock l(mu_);
    waiting_ = held_;
    cv_.wait_for(l, std::chrono::seconds(10), [this] { return !held_; });
    waiting_ = false;
  }

  class HeldFile : public storage::WritableFile {
   public:
    HeldFile(std::unique_ptr<storage::WritableFile> base, SnapshotFaultEnv* env)
        : base_(std::move(base)), env_(env) {}
    Status Append(const std::vector<std::string_view>& parts) override {
      return base_->Append(parts);
    }
    Status Sync() override {
      env_->WaitWhileHeld();
      return base_->Sync();
    }
    Status Truncate(uint64_t size) override { return base_->Truncate(size); }
    uint64_t Size() const override { return base_->Size(); }
    const std::string& path() const override { return base_->path(); }

   private:
    std::unique_ptr<storage::WritableFile> base_;
    SnapshotFaultEnv* env_;
  };

  storage::MemEnv mem_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  bool waiting_ = false;
};

// Forwards to a WalLogStore, counting what is outstanding (so that the test
// can wait for the store's threads) and when each snapshot was started.
class CountingLogStore : public LogStore {
 public:
  CountingLogStore(std::unique_ptr<WalLogStore> base, const uint64_t* tick)
      : base_(std::move(base)), tick_(tick) {}

  void Attach(DriverPost post) override { base_->Attach(std::move(post)); }
  const raft::Storage& storage() const override { return base_->storage(); }
  void Persist(const raft::Ready& rd, Done done) override {
    persists_++;
    base_->Persist(rd, [this, done = std::move(done)](raft::Status s) {
      persists_--;
      done(std::move(s));
    });
  }
  void SaveSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                    raft::Index compact_to, Done done) override {
    snapshots_++;
    snapshot_ticks.push_back(*tick_);
    base_->SaveSnapshot(index, conf, std::move(data), compact_to,
                        [this, done = std::move(done)](raft::Status s) {
                          snapshots_--;
                          done(std::move(s));
                        });
  }
  raft::Status Close() override { return base_->Close(); }
  std::string Describe() const override { return base_->Describe(); }
  bool durable() const override { return true; }

  int persists() const { return persists_; }
  int outstanding() const { return persists_ + snapshots_; }
  // The tick at which each SaveSnapshot was called.
  std::vector<uint64_t> snapshot_ticks;

 private:
  std::unique_ptr<WalLogStore> base_;
  const uint64_t* tick_;
  // Outstanding; driver thread (the test's).
  int persists_ = 0;
  int snapshots_ = 0;
};

// One node, bootstrapped, whose driver thread is the test's: Step() runs a
// tick and then every task until nothing is outstanding.
class SnapshotNode {
 public:
  SnapshotNode() {
    storage::StorageOptions so;
    so.node_id = 1;
    so.segment_bytes = 4096;  // Several segments for the compaction to delete.
    so.env = &env;
    std::unique_ptr<storage::DiskStorage> disk;
    raft::Status s = storage::DiskStorage::Open("/data", so, &disk);
    EXPECT_TRUE(s.ok()) << s.ToString();
    store_ =
        std::make_unique<CountingLogStore>(std::make_unique<WalLogStore>(std::move(disk)), &tick_);
    ReplicaConfig rc;
    rc.self = MemberInfo{1, "n1", "127.0.0.1:1", ""};
    rc.raft.seed = 7;
    rc.snapshot_entries = 20;
    rc.snapshot_keep_entries = 5;
    rc.snapshot_retry_base_ticks = 2;
    rc.snapshot_retry_max_ticks = 8;
    DriverHooks h;
    h.post = [this](std::function<void()> fn) {
      {
        std::lock_guard l(mu_);
        tasks_.push_back(std::move(fn));
      }
      cv_.notify_one();
    };
    h.send = [](std::vector<raft::Message>) {};
    h.now = [] { return steady_clock::now(); };
    driver = std::make_unique<Driver>(rc, store_.get(), &kv_, h);
    EXPECT_TRUE(driver->Bootstrap().ok());
    driver->Start();
    for (int i = 0; i < 50 && !driver->view()->IsLeader(); i++) Step();
    EXPECT_TRUE(driver->view()->IsLeader());
  }

  ~SnapshotNode() {
    env.Release();
    bool closed = false;
    driver->Shutdown([&closed] { closed = true; });
    Drain([&closed] { return closed; });
    EXPECT_TRUE(closed);
  }

  // One tick, then everything it and the store's threads cause.
  void Step() {
    tick_++;
    driver->Tick();
    Settle();
  }
  // Runs tasks until no persist or snapshot is outstanding.
  bool Settle() {
    return Drain([this] { return store_->outstanding() == 0; });
  }

  // Runs tasks until `done` holds with no task queued (false after 10 s).
  bool Drain(const std::function<bool()>& done) {
    auto deadline = steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock l(mu_);
        if (tasks_.empty() && done()) return true;
        if (!cv_.wait_until(l, deadline, [this] { return !tasks_.empty(); })) return false;
        fn = std::move(tasks_.front());
        tasks_.pop_front();
      }
      fn();
    }
  }

  // Proposes `n` puts; true once all are applied and no persist is
  // outstanding (within 10 s). A snapshot may be.
  bool Write(int n) {
    int ok = 0;
    int answered = 0;
    for (int i = 0; i < n; i++) {
      seq_++;
      std::string cmd = kv::EncodePut(kv::RequestId{1, seq_}, "k" + std::to_string(seq_ % 7),
                                      std::string(200, 'v'));
      driver->Propose(std::move(cmd), kv::RequestId{1, seq_}, [&](Outcome o) {
        answered++;
        if (o.ok()) ok++;
      });
    }
    return Drain([&] { return answered == n && store_->persists() == 0; }) && ok == n;
  }

  CountingLogStore& store() { return *store_; }

  // Destroyed in reverse: the driver, its store (which joins the store's
  // threads), the task queue they post to, and the env last.
  SnapshotFaultEnv env;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  kv::Store kv_;
  uint64_t tick_ = 0;
  uint64_t seq_ = 0;
  std::unique_ptr<CountingLogStore> store_;

 public:
  std::unique_ptr<Driver> driver;
};

// The fix for "CreateSnapshot/Compact block the driver thread": while a
// snapshot's fsync is held, the driver keeps committing and answering writes.
TEST(DriverSnapshotTest, SnapshotFsyncDoesNotBlockTheDriver) {
  SnapshotNode n;
  n.env.Hold();
  // Past snapshot_entries: the driver starts a snapshot after these.
  ASSERT_TRUE(n.Write(25));
  ASSERT_EQ(n.store().snapshot_ticks.size(), 1u);
  auto deadline = steady_clock::now() + std::chrono::seconds(10);
  while (!n.env.waiting() && steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(1));  // The snapshot thread gets there on its own.
  }
  ASSERT_TRUE(n.env.waiting()) << "the snapshot's fsync never started";
  // The snapshot is on disk (held): writes still go through, at once.
  auto start = steady_clock::now();
  ASSERT_TRUE(n.Write(10));
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(n.env.waiting()) << "the writes waited for the snapshot's fsync";
  EXPECT_EQ(n.driver->Status().snapshots_taken, 0u);
  n.env.Release();
  ASSERT_TRUE(n.Settle());
  StatusReport r = n.driver->Status();
  EXPECT_EQ(r.snapshots_taken, 1u);
  EXPECT_GE(r.snapshot_index, 20u);
  EXPECT_GT(n.store().storage().FirstIndex(), 1u) << "the log was not compacted";
}

// A failed snapshot write is reported in the status (health stays ok, the
// node degraded), retried with doubling back-off (2, 4, 8, 8 ticks), and
// once the disk works again the snapshot succeeds and the report clears.
TEST(DriverSnapshotTest, FailedSnapshotIsReportedAndRetriedWithBackoff) {
  SnapshotNode n;
  n.env.fail = true;
  ASSERT_TRUE(n.Write(25));
  ASSERT_TRUE(n.Settle());
  StatusReport r = n.driver->Status();
  ASSERT_EQ(n.env.attempts, 1);
  EXPECT_EQ(r.snapshot_failures, 1u);
  EXPECT_NE(r.snapshot_error.find("No space left on device"), std::string::npos)
      << r.snapshot_error;
  EXPECT_NE(n.driver->degraded().find("snapshot failed"), std::string::npos);
  EXPECT_EQ(n.driver->health(), "") << "a failed snapshot must not stop writes";
  EXPECT_EQ(r.snapshots_taken, 0u);

  // Writes keep working, and do not retry the snapshot on every batch.
  ASSERT_TRUE(n.Write(5));
  ASSERT_TRUE(n.Settle());
  EXPECT_EQ(n.env.attempts, 1) << "retried without back-off";
  for (int i = 0; i < 25; i++) n.Step();
  const std::vector<uint64_t>& at = n.store().snapshot_ticks;
  ASSERT_EQ(at.size(), 5u) << "attempts in 25 ticks";
  EXPECT_EQ(at[1] - at[0], 2u);
  EXPECT_EQ(at[2] - at[1], 4u);
  EXPECT_EQ(at[3] - at[2], 8u);
  EXPECT_EQ(at[4] - at[3], 8u) << "the back-off is capped at snapshot_retry_max_ticks";
  EXPECT_EQ(n.driver->Status().snapshot_failures, 5u);

  // The disk recovers: the next attempt succeeds and the report clears.
  n.env.fail = false;
  for (int i = 0; i < 10 && n.driver->Status().snapshots_taken == 0; i++) n.Step();
  r = n.driver->Status();
  EXPECT_EQ(r.snapshots_taken, 1u);
  EXPECT_EQ(r.snapshot_failures, 0u);
  EXPECT_EQ(r.snapshot_error, "");
  EXPECT_EQ(r.degraded, "");
  EXPECT_EQ(n.driver->degraded(), "");
  EXPECT_GE(r.snapshot_index, 20u);
  EXPECT_GT(n.store().storage().FirstIndex(), 1u) << "the log was not compacted";
}

}  // namespace
}  // namespace raftkv::server
