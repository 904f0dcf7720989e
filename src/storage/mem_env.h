// MemEnv: an in-memory storage::Env that models what a power loss does to a
// real file system, for the simulator (tests/sim) and crash tests.
//
// Each file keeps two versions: its durable content (as of its last Sync, or
// the fsync inside TruncateFile) and its current content (what reads see).
// Writes after the last Sync form the file's unsynced tail. Directory entries
// (file creation, rename, removal) are likewise current at once but durable
// only after SyncDir of their directory. Directories themselves are durable
// when CreateDir returns, as its contract says it fsyncs the parent.
//
// Crash(rng) models the power loss: every file goes back to its durable
// content, plus sometimes a random prefix of its unsynced tail (a torn
// write); each directory keeps a random prefix of its unsynced operations, in
// the order they were made (none, some or all, as a journaling file system
// may). File handles opened before a crash fail with kIoError afterwards.
//
// ArmCrashAtSync(n) lets a test crash "during" an fsync: the n-th Sync or
// SyncDir from now fails with kIoError without making anything durable, and
// from then on the env is frozen (every mutating call fails and changes
// nothing) until Crash, so whatever the writer does after the failed fsync
// (truncating its half-written batch, say) never reaches the "disk".
//
// Thread-safe: one mutex guards everything (the WAL writer thread and the
// driver thread share an env). Paths are plain strings; a file's directory is
// the part of its path before the last '/'.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "raft/rng.h"
#include "storage/env.h"

namespace raftkv::storage {

class MemEnv : public Env {
 public:
  MemEnv();
  ~MemEnv() override;
  MemEnv(const MemEnv&) = delete;
  MemEnv& operator=(const MemEnv&) = delete;

  // Env.
  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override;
  Status ReopenWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override;
  Status ReadFile(const std::string& path, uint64_t max_bytes, std::string* out) override;
  Status ListDir(const std::string& dir, std::vector<std::string>* names) override;
  Status FileExists(const std::string& path, bool* exists) override;
  Status CreateDir(const std::string& dir) override;
  Status RemoveFile(const std::string& path) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status TruncateFile(const std::string& path, uint64_t size) override;
  Status SyncDir(const std::string& dir) override;

  // Power loss, with every random choice drawn from `rng` (see above). Undoes
  // an armed or fired ArmCrashAtSync. Open handles become invalid.
  void Crash(raft::Rng* rng);

  // The n-th (n >= 1) Sync or SyncDir from now fails and freezes the env
  // until Crash. 0 disarms.
  void ArmCrashAtSync(uint64_t n);
  // True once an armed sync has failed (and until Crash).
  bool frozen() const;

  // For tests: bytes of `path` written but not yet synced (0 if none or no
  // such file), and whether anything at all is not durable.
  uint64_t UnsyncedBytes(const std::string& path) const;
  bool AllDurable() const;

 private:
  class File;
  struct Node;
  // One directory operation, applied whole or not at all: each full path is
  // set to a node, or removed (nullptr).
  struct DirOp {
    std::vector<std::pair<std::string, std::shared_ptr<Node>>> sets;
  };

  // All below: mu_ held.
  Status CheckWritable(const std::string& what, const std::string& path) const;
  Status SyncNode(Node* node, const std::string& path);
  void Link(const std::string& path, std::shared_ptr<Node> node);
  void Unlink(const std::string& path);
  bool DirExists(const std::string& dir) const;

  mutable std::mutex mu_;
  uint64_t generation_ = 0;  // Bumped by Crash: older handles are stale.
  uint64_t syncs_until_crash_ = 0;
  bool frozen_ = false;
  std::set<std::string> dirs_;
  std::map<std::string, std::shared_ptr<Node>> files_;          // Current names.
  std::map<std::string, std::shared_ptr<Node>> durable_files_;  // Names as of the last SyncDir.
  std::map<std::string, std::vector<DirOp>> pending_;           // Per directory, in order.
};

}  // namespace raftkv::storage
