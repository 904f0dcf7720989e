// Helpers for the storage tests: temporary directories, file surgery and an
// Env that injects faults.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "raft/types.h"
#include "storage/env.h"

namespace raftkv::storage::testing {

// A fresh directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "raftkv-storage-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

inline void CopyDir(const std::string& from, const std::string& to) {
  std::filesystem::remove_all(to);
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
}

inline std::vector<std::string> FilesWithPrefix(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

inline raft::Entry MakeEntry(raft::Term term, raft::Index index, size_t bytes = 16) {
  raft::Entry e;
  e.term = term;
  e.index = index;
  e.data = "entry-" + std::to_string(term) + "-" + std::to_string(index) + "-";
  while (e.data.size() < bytes)
    e.data.push_back(static_cast<char>('a' + (e.data.size() + index) % 26));
  return e;
}

// Knobs shared by a FaultEnv and the files it opened.
struct Faults {
  // Bytes that writes may still add; -1 is unlimited. A write past it writes
  // what fits and fails with "No space left on device".
  std::atomic<int64_t> write_budget_bytes{-1};
  std::atomic<bool> fail_sync{false};
  // The next this many file syncs fail (then they succeed again).
  std::atomic<int64_t> fail_next_syncs{0};
  // While held, a file sync waits (after counting itself in `syncs`).
  void HoldSyncs() {
    std::lock_guard l(gate_mu);
    syncs_held = true;
  }
  void ReleaseSyncs() {
    {
      std::lock_guard l(gate_mu);
      syncs_held = false;
    }
    gate_cv.notify_all();
  }
  void WaitWhileHeld() {
    std::unique_lock l(gate_mu);
    gate_cv.wait(l, [this] { return !syncs_held; });
  }
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool syncs_held = false;
  std::atomic<int64_t> sync_delay_us{0};
  std::atomic<uint64_t> syncs{0};
};

class FaultFile : public WritableFile {
 public:
  FaultFile(std::unique_ptr<WritableFile> base, Faults* faults)
      : base_(std::move(base)), faults_(faults), size_(base_->Size()) {}

  Status Append(const std::vector<std::string_view>& parts) override {
    uint64_t total = 0;
    for (auto p : parts) total += p.size();
    int64_t budget = faults_->write_budget_bytes.load();
    if (budget >= 0 && total > static_cast<uint64_t>(budget)) {
      std::vector<std::string_view> prefix;
      uint64_t left = static_cast<uint64_t>(budget);
      for (auto p : parts) {
        if (left == 0) break;
        prefix.push_back(p.substr(0, std::min<uint64_t>(left, p.size())));
        left -= prefix.back().size();
      }
      (void)base_->Append(prefix);
      faults_->write_budget_bytes = 0;
      return Status(raft::Code::kIoError, "write " + path() + ": No space left on device");
    }
    if (budget >= 0) faults_->write_budget_bytes -= static_cast<int64_t>(total);
    Status s = base_->Append(parts);
    if (s.ok()) size_ = base_->Size();
    return s;
  }
  Status Sync() override {
    faults_->syncs++;
    if (int64_t d = faults_->sync_delay_us.load()) {
      std::this_thread::sleep_for(std::chrono::microseconds(d));
    }
    faults_->WaitWhileHeld();
    int64_t left = faults_->fail_next_syncs.load();
    while (left > 0 && !faults_->fail_next_syncs.compare_exchange_weak(left, left - 1)) {
    }
    if (faults_->fail_sync || left > 0) {
      return Status(raft::Code::kIoError, "fdatasync " + path() + ": EIO");
    }
    return base_->Sync();
  }
  Status Truncate(uint64_t size) override {
    Status s = base_->Truncate(size);
    if (s.ok()) size_ = size;
    return s;
  }
  uint64_t Size() const override { return size_; }
  const std::string& path() const override { return base_->path(); }

 private:
  std::unique_ptr<WritableFile> base_;
  Faults* faults_;
  uint64_t size_;
};

class FaultEnv : public EnvWrapper {
 public:
  FaultEnv() : EnvWrapper(DefaultEnv()) {}

  Faults faults;

  Status SyncDir(const std::string& dir) override {
    if (faults.fail_sync) return Status(raft::Code::kIoError, "fsync " + dir + ": EIO");
    return EnvWrapper::SyncDir(dir);
  }

 protected:
  std::unique_ptr<WritableFile> WrapFile(std::unique_ptr<WritableFile> f) override {
    return std::make_unique<FaultFile>(std::move(f), &faults);
  }
};

}  // namespace raftkv::storage::testing
