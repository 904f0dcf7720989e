// The process the crash test kills: appends entries through DiskStorage as
// fast as it can and writes "ack N\n" to stdout once entries up to N are
// durable. Takes snapshots and compacts now and then, so that segment
// rotation and deletion are also interrupted by kills.
//
// Usage: wal_crash_writer DIR SEED
//
// A process kill does not tear a single write(2) to a regular file, so with
// an odd SEED the writer splits every write into 61-byte pieces with pauses between them (the same
// WAL code over a wrapping Env): kills then leave torn records for recovery
// to cut, as a machine crash would.
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <random>
#include <string>

#include "crash_data.h"
#include "storage/disk_storage.h"

using namespace raftkv;
using namespace raftkv::storage;

namespace {

class ChunkedFile : public WritableFile {
 public:
  explicit ChunkedFile(std::unique_ptr<WritableFile> base) : base_(std::move(base)) {}
  Status Append(const std::vector<std::string_view>& parts) override {
    uint64_t before = base_->Size();
    for (std::string_view p : parts) {
      for (size_t off = 0; off < p.size(); off += 61) {
        // A pause between pieces, so that kills often land mid-write.
        if (off > 0) ::usleep(20);
        Status s = base_->Append({p.substr(off, 61)});
        if (!s.ok()) {
          (void)base_->Truncate(before);
          return s;
        }
      }
    }
    return Status::Ok();
  }
  Status Sync() override { return base_->Sync(); }
  Status Truncate(uint64_t size) override { return base_->Truncate(size); }
  uint64_t Size() const override { return base_->Size(); }
  const std::string& path() const override { return base_->path(); }

 private:
  std::unique_ptr<WritableFile> base_;
};

class ChunkedEnv : public EnvWrapper {
 public:
  ChunkedEnv() : EnvWrapper(DefaultEnv()) {}

 protected:
  std::unique_ptr<WritableFile> WrapFile(std::unique_ptr<WritableFile> f) override {
    return std::make_unique<ChunkedFile>(std::move(f));
  }
};

void WriteLine(const std::string& line) {
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t w = ::write(1, p, left);
    if (w <= 0) std::_Exit(3);  // The test is gone.
    p += w;
    left -= static_cast<size_t>(w);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR SEED\n", argv[0]);
    return 2;
  }
  const uint64_t seed = std::stoull(argv[2]);
  ChunkedEnv chunked;
  StorageOptions options = crash::Options();
  if (seed % 2 == 1) options.env = &chunked;
  std::unique_ptr<DiskStorage> ds;
  RecoveryInfo info;
  Status s = DiskStorage::Open(argv[1], options, &ds, &info);
  if (!s.ok()) {
    std::fprintf(stderr, "wal_crash_writer: open failed: %s\n", s.ToString().c_str());
    return 1;
  }
  std::mt19937_64 rng(seed);

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<Update, Status>> done;  // Completed, in submission order.
  std::deque<Update> inflight;
  constexpr size_t kMaxInflight = 8;
  raft::Index next = ds->LastIndex() + 1;
  raft::Index last_snapshot = ds->LatestSnapshot().meta.index;

  for (;;) {
    while (inflight.size() < kMaxInflight) {
      Update u;
      size_t n = 1 + rng() % 32;
      for (size_t i = 0; i < n; i++) {
        raft::Entry e;
        e.term = 1;
        e.index = next++;
        e.data = crash::EntryData(e.index);
        u.entries.push_back(std::move(e));
      }
      u.hard_state = raft::HardState{1, crash::kNodeId, u.entries.back().index};
      auto holder = std::make_shared<Update>(u);
      s = ds->Submit(u, [&, holder](const Status& st) {
        std::lock_guard<std::mutex> l(mu);
        done.emplace_back(*holder, st);
        cv.notify_one();
      });
      if (!s.ok()) {
        std::fprintf(stderr, "wal_crash_writer: submit failed: %s\n", s.ToString().c_str());
        return 1;
      }
      inflight.push_back(std::move(u));
    }
    std::pair<Update, Status> c;
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return !done.empty(); });
      c = std::move(done.front());
      done.pop_front();
    }
    inflight.pop_front();
    if (!c.second.ok()) {
      std::fprintf(stderr, "wal_crash_writer: write failed: %s\n", c.second.ToString().c_str());
      return 1;
    }
    ds->Apply(c.first);
    raft::Index last = c.first.entries.back().index;
    WriteLine("ack " + std::to_string(last) + "\n");

    if (last >= last_snapshot + 3000) {
      raft::Index snap = last - 200;
      s = ds->CreateSnapshot(snap, {}, crash::SnapshotData(snap));
      if (s.ok()) s = ds->Compact(snap - 500);
      if (!s.ok()) {
        std::fprintf(stderr, "wal_crash_writer: snapshot failed: %s\n", s.ToString().c_str());
        return 1;
      }
      last_snapshot = snap;
    }
  }
}
