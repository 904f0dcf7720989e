// Crash test with real processes: wal_crash_writer appends and acknowledges
// entries as fast as it can and is killed with SIGKILL at random moments;
// after every kill the data directory must open, and every acknowledged
// entry (and hard state) must be there, byte for byte.
//
// Seeded: RAFTKV_CRASH_SEED=N replays a run's schedule of kills (the disk's
// timing still varies). RAFTKV_CRASH_KILLS=N changes the number of kills.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>

#include "crash_data.h"
#include "storage/disk_storage.h"
#include "test_util.h"

namespace raftkv::storage {
namespace {

using Clock = std::chrono::steady_clock;

// A running wal_crash_writer. The destructor kills it, so a failing
// assertion never leaves a child behind.
class Child {
 public:
  Child(const std::string& dir, uint64_t seed) {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      std::string s = std::to_string(seed);
      ::execl(WAL_CRASH_WRITER, WAL_CRASH_WRITER, dir.c_str(), s.c_str(), nullptr);
      std::_Exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
  }
  ~Child() {
    Kill();
    if (out_ >= 0) ::close(out_);
  }

  // Reads acknowledgements until `deadline`. Returns false if the child
  // closed its output (it exited).
  bool ReadUntil(Clock::time_point deadline) {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return true;
      pollfd p{out_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r > 0 && !Drain()) return false;
    }
  }

  // SIGKILLs the child and reaps it. Returns its wait status.
  int Kill() {
    if (pid_ <= 0) return status_;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
    pid_ = -1;
    while (Drain()) {
    }
    return status_;
  }

  uint64_t acked() const { return acked_; }

 private:
  // Reads what is there; false at end of file.
  bool Drain() {
    char buf[4096];
    ssize_t n = ::read(out_, buf, sizeof(buf));
    if (n <= 0) return false;
    pending_.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending_.find('\n')) != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      if (line.rfind("ack ", 0) == 0)
        acked_ = std::max<uint64_t>(acked_, std::stoull(line.substr(4)));
    }
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int status_ = 0;
  std::string pending_;
  uint64_t acked_ = 0;
};

uint64_t EnvOr(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v ? std::stoull(v) : def;
}

// Opens the directory as a restarted node would and checks it.
void Verify(const std::string& dir, uint64_t acked, uint64_t kill, RecoveryInfo* info) {
  SCOPED_TRACE("after kill " + std::to_string(kill) + ", acknowledged through " +
               std::to_string(acked));
  std::unique_ptr<DiskStorage> ds;
  Status s = DiskStorage::Open(dir, crash::Options(), &ds, info);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_GE(ds->LastIndex(), acked) << info->ToString();
  ASSERT_GE(ds->InitialHardState().commit, acked);
  const raft::Snapshot& snap = ds->LatestSnapshot();
  if (!snap.IsEmpty()) {
    ASSERT_EQ(snap.data, crash::SnapshotData(snap.meta.index));
  }
  ASSERT_EQ(ds->FirstIndex(), snap.meta.index + 1);
  if (ds->LastIndex() >= ds->FirstIndex()) {
    std::vector<raft::Entry> got;
    ASSERT_TRUE(ds->Entries(ds->FirstIndex(), ds->LastIndex() + 1, UINT64_MAX, &got).ok());
    ASSERT_EQ(got.size(), ds->LastIndex() - ds->FirstIndex() + 1);
    for (const raft::Entry& e : got) {
      ASSERT_EQ(e.data, crash::EntryData(e.index)) << "entry " << e.index;
      ASSERT_EQ(e.term, 1u);
    }
  }
}

TEST(WalCrashTest, AcknowledgedEntriesSurviveSigkill) {
  const uint64_t seed = EnvOr("RAFTKV_CRASH_SEED", 20261126);
  const uint64_t kills = EnvOr("RAFTKV_CRASH_KILLS", 100);
  const auto budget = std::chrono::seconds(45);
  std::printf("crash test: seed %llu (replay with RAFTKV_CRASH_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  testing::TempDir tmp;
  const std::string dir = tmp.Sub("node");
  const auto start = Clock::now();
  uint64_t acked = 0, done = 0, torn = 0, rotations = 0;
  while (done < kills && Clock::now() - start < budget) {
    Child child(dir, rng());
    // Kill at a random moment: sometimes during startup and recovery,
    // mostly while appending.
    auto run = std::chrono::microseconds(rng() % 4 == 0 ? rng() % 20000 : rng() % 250000);
    ASSERT_TRUE(child.ReadUntil(Clock::now() + run)) << "the writer exited by itself";
    int status = child.Kill();
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the writer exited by itself with status " << status;
    acked = std::max(acked, child.acked());
    done++;
    RecoveryInfo info;
    Verify(dir, acked, done, &info);
    if (HasFatalFailure()) return;
    torn += info.wal.torn_tail_cut;
    rotations += info.wal.removed_torn_segment || info.wal.removed_unsealed_rotation;
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf(
      "crash test: %llu kills in %.1f s, %llu entries acknowledged; recovery cut %llu torn "
      "tails and cleaned up %llu interrupted rotations\n",
      static_cast<unsigned long long>(done), secs, static_cast<unsigned long long>(acked),
      static_cast<unsigned long long>(torn), static_cast<unsigned long long>(rotations));
  RecordProperty("kills", static_cast<int>(done));
  EXPECT_GE(done, 50u) << "too slow: fewer than 50 kills in " << budget.count() << " s";
  EXPECT_GT(acked, 1000u) << "the writer made too little progress";
}

}  // namespace
}  // namespace raftkv::storage
