#include "storage/mem_env.h"

#include <utility>

namespace raftkv::storage {
namespace {

Status IoError(const std::string& what, const std::string& path, const std::string& why) {
  return Status(raft::Code::kIoError, what + " " + path + ": " + why);
}

std::string DirOf(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

// A file's bytes. Its durable content is data[0, common) + durable_rest:
// appends leave the durable part alone, and a truncation below `common`
// moves the cut-off durable bytes to durable_rest until the next sync.
struct MemEnv::Node {
  std::string data;
  uint64_t common = 0;
  std::string durable_rest;

  std::string Durable() const { return data.substr(0, common) + durable_rest; }
  // Bytes written after the durable content (none if a truncation is pending).
  uint64_t Tail() const { return durable_rest.empty() ? data.size() - common : 0; }
};

class MemEnv::File : public WritableFile {
 public:
  File(MemEnv* env, std::string path, std::shared_ptr<Node> node, uint64_t generation)
      : env_(env),
        path_(std::move(path)),
        node_(std::move(node)),
        generation_(generation),
        size_(node_->data.size()) {}

  Status Append(const std::vector<std::string_view>& parts) override {
    std::lock_guard<std::mutex> l(env_->mu_);
    Status s = Check("write");
    if (!s.ok()) return s;
    for (std::string_view p : parts) node_->data.append(p);
    size_ = node_->data.size();
    return Status::Ok();
  }

  Status Sync() override {
    std::lock_guard<std::mutex> l(env_->mu_);
    Status s = Check("fdatasync");
    if (!s.ok()) return s;
    return env_->SyncNode(node_.get(), path_);
  }

  Status Truncate(uint64_t size) override {
    std::lock_guard<std::mutex> l(env_->mu_);
    Status s = Check("ftruncate");
    if (!s.ok()) return s;
    if (size > node_->data.size()) return IoError("ftruncate", path_, "past the end");
    if (size < node_->common) {
      node_->durable_rest = node_->data.substr(size, node_->common - size) + node_->durable_rest;
      node_->common = size;
    }
    node_->data.resize(size);
    size_ = size;
    return Status::Ok();
  }

  uint64_t Size() const override { return size_; }
  const std::string& path() const override { return path_; }

 private:
  // mu_ held.
  Status Check(const char* what) const {
    if (generation_ != env_->generation_) {
      return IoError(what, path_, "handle opened before a crash");
    }
    return env_->CheckWritable(what, path_);
  }

  MemEnv* const env_;
  const std::string path_;
  const std::shared_ptr<Node> node_;
  const uint64_t generation_;
  uint64_t size_;
};

MemEnv::MemEnv() {
  dirs_.insert("/");
  dirs_.insert(".");
}

MemEnv::~MemEnv() = default;

Status MemEnv::CheckWritable(const std::string& what, const std::string& path) const {
  if (frozen_) return IoError(what, path, "power lost (MemEnv crash armed)");
  return Status::Ok();
}

Status MemEnv::SyncNode(Node* node, const std::string& path) {
  if (syncs_until_crash_ > 0 && --syncs_until_crash_ == 0) {
    frozen_ = true;
    return IoError("fsync", path, "power lost (MemEnv crash armed)");
  }
  node->common = node->data.size();
  node->durable_rest.clear();
  return Status::Ok();
}

bool MemEnv::DirExists(const std::string& dir) const { return dirs_.count(dir) > 0; }

void MemEnv::Link(const std::string& path, std::shared_ptr<Node> node) {
  files_[path] = node;
  pending_[DirOf(path)].push_back(DirOp{{{path, std::move(node)}}});
}

void MemEnv::Unlink(const std::string& path) {
  files_.erase(path);
  pending_[DirOf(path)].push_back(DirOp{{{path, nullptr}}});
}

Status MemEnv::NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) {
  std::lock_guard<std::mutex> l(mu_);
  Status s = CheckWritable("create", path);
  if (!s.ok()) return s;
  if (!DirExists(DirOf(path))) return IoError("create", path, "no such directory");
  if (dirs_.count(path)) return IoError("create", path, "is a directory");
  auto it = files_.find(path);
  std::shared_ptr<Node> node;
  if (it != files_.end()) {
    // O_TRUNC on an existing file: the name stays, the content goes
    // (durably only once synced).
    node = it->second;
    Node* n = node.get();
    if (n->common > 0) {
      n->durable_rest = n->data.substr(0, n->common) + n->durable_rest;
      n->common = 0;
    }
    n->data.clear();
  } else {
    node = std::make_shared<Node>();
    Link(path, node);
  }
  *out = std::make_unique<File>(this, path, node, generation_);
  return Status::Ok();
}

Status MemEnv::ReopenWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) {
  std::lock_guard<std::mutex> l(mu_);
  Status s = CheckWritable("open", path);
  if (!s.ok()) return s;
  auto it = files_.find(path);
  if (it == files_.end()) return IoError("open", path, "no such file");
  *out = std::make_unique<File>(this, path, it->second, generation_);
  return Status::Ok();
}

Status MemEnv::ReadFile(const std::string& path, uint64_t max_bytes, std::string* out) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return IoError("open", path, "no such file");
  const std::string& data = it->second->data;
  if (data.size() > max_bytes) {
    return IoError(
        "read", path,
        std::to_string(data.size()) + " bytes is over the limit of " + std::to_string(max_bytes));
  }
  *out = data;
  return Status::Ok();
}

Status MemEnv::ListDir(const std::string& dir, std::vector<std::string>* names) {
  std::lock_guard<std::mutex> l(mu_);
  if (!DirExists(dir)) return IoError("list", dir, "no such directory");
  names->clear();
  for (const auto& [path, node] : files_) {
    if (DirOf(path) == dir) names->push_back(path.substr(path.find_last_of('/') + 1));
  }
  for (const std::string& d : dirs_) {
    if (d != dir && DirOf(d) == dir) names->push_back(d.substr(d.find_last_of('/') + 1));
  }
  return Status::Ok();
}

Status MemEnv::FileExists(const std::string& path, bool* exists) {
  std::lock_guard<std::mutex> l(mu_);
  *exists = files_.count(path) > 0 || DirExists(path);
  return Status::Ok();
}

Status MemEnv::CreateDir(const std::string& dir) {
  std::lock_guard<std::mutex> l(mu_);
  Status s = CheckWritable("mkdir", dir);
  if (!s.ok()) return s;
  if (files_.count(dir)) return IoError("mkdir", dir, "a file has that name");
  // Env::CreateDir fsyncs the parent: the directory is durable at once.
  dirs_.insert(dir);
  return Status::Ok();
}

Status MemEnv::RemoveFile(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  Status s = CheckWritable("unlink", path);
  if (!s.ok()) return s;
  if (files_.count(path) == 0) return IoError("unlink", path, "no such file");
  Unlink(path);
  return Status::Ok();
}

Status MemEnv::RenameFile(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> l(mu_);
  Status s = CheckWritable("rename", from + " to " + to);
  if (!s.ok()) return s;
  auto it = files_.find(from);
  if (it == files_.end()) return IoError("rename", from + " to " + to, "no such file");
  if (!DirExists(DirOf(to))) return IoError("rename", from + " to " + to, "no such directory");
  if (from == to) return Status::Ok();
  std::shared_ptr<Node> node = it->second;
  files_.erase(it);
  files_[to] = node;
  // One operation, so that a crash keeps the rename whole or not at all. It
  // is logged in the target's directory: SyncDir of that one makes it durable.
  pending_[DirOf(to)].push_back(DirOp{{{from, nullptr}, {to, node}}});
  return Status::Ok();
}

Status MemEnv::TruncateFile(const std::string& path, uint64_t size) {
  std::lock_guard<std::mutex> l(mu_);
  Status s = CheckWritable("ftruncate", path);
  if (!s.ok()) return s;
  auto it = files_.find(path);
  if (it == files_.end()) return IoError("open", path, "no such file");
  Node* n = it->second.get();
  if (size > n->data.size()) return IoError("ftruncate", path, "past the end");
  // Like Truncate followed by fsync: if the fsync "loses power", the cut is
  // not durable.
  if (size < n->common) {
    n->durable_rest = n->data.substr(size, n->common - size) + n->durable_rest;
    n->common = size;
  }
  n->data.resize(size);
  return SyncNode(n, path);
}

Status MemEnv::SyncDir(const std::string& dir) {
  std::lock_guard<std::mutex> l(mu_);
  Status s = CheckWritable("fsync", dir);
  if (!s.ok()) return s;
  if (!DirExists(dir)) return IoError("open", dir, "no such directory");
  if (syncs_until_crash_ > 0 && --syncs_until_crash_ == 0) {
    frozen_ = true;
    return IoError("fsync", dir, "power lost (MemEnv crash armed)");
  }
  auto it = pending_.find(dir);
  if (it == pending_.end()) return Status::Ok();
  for (const DirOp& op : it->second) {
    for (const auto& [name, node] : op.sets) {
      if (node) {
        durable_files_[name] = node;
      } else {
        durable_files_.erase(name);
      }
    }
  }
  pending_.erase(it);
  return Status::Ok();
}

void MemEnv::Crash(raft::Rng* rng) {
  std::lock_guard<std::mutex> l(mu_);
  // Directories: a random prefix of each one's unsynced operations reached
  // the disk (std::map order keeps the draws deterministic).
  for (const auto& [dir, ops] : pending_) {
    uint64_t kept = rng->Chance(1, 2) ? 0 : rng->Uniform(ops.size() + 1);
    for (uint64_t i = 0; i < kept; i++) {
      for (const auto& [name, node] : ops[i].sets) {
        if (node) {
          durable_files_[name] = node;
        } else {
          durable_files_.erase(name);
        }
      }
    }
  }
  pending_.clear();
  files_ = durable_files_;
  // Files: the durable content, maybe with a torn prefix of the unsynced tail.
  std::set<Node*> done;
  for (const auto& [path, node] : files_) {
    Node* n = node.get();
    if (!done.insert(n).second) continue;
    uint64_t tail = n->Tail();
    uint64_t keep = 0;
    if (tail > 0 && rng->Chance(1, 2)) keep = rng->Uniform(tail + 1);
    std::string content = n->Durable();
    if (keep > 0) content.append(n->data, n->common, keep);
    n->data = std::move(content);
    // What survived a power loss is on the disk: durable.
    n->common = n->data.size();
    n->durable_rest.clear();
  }
  generation_++;
  syncs_until_crash_ = 0;
  frozen_ = false;
}

void MemEnv::ArmCrashAtSync(uint64_t n) {
  std::lock_guard<std::mutex> l(mu_);
  syncs_until_crash_ = n;
}

bool MemEnv::frozen() const {
  std::lock_guard<std::mutex> l(mu_);
  return frozen_;
}

uint64_t MemEnv::UnsyncedBytes(const std::string& path) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return 0;
  return it->second->data.size() - it->second->common;
}

bool MemEnv::AllDurable() const {
  std::lock_guard<std::mutex> l(mu_);
  if (!pending_.empty() || files_ != durable_files_) return false;
  for (const auto& [path, node] : files_) {
    if (node->common != node->data.size() || !node->durable_rest.empty()) return false;
  }
  return true;
}

}  // namespace raftkv::storage
