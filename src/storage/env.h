// Env: the file operations storage needs, behind an interface so that tests
// can inject faults (disk full, failing fsync) without a real broken disk.
//
// All methods are thread-safe in the sense that separate files may be used
// from separate threads; one WritableFile is used by one thread at a time.
// Errors are returned as raft::Status with Code::kIoError and a message that
// names the path and the operating system's reason.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "raft/status.h"

namespace raftkv::storage {

using raft::Status;

// A file opened for writing at its end. Not thread-safe.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes all of `parts`, in order, at the current end of the file. On
  // failure some prefix of the bytes may have been written; Size() then
  // still reports the size before the call.
  virtual Status Append(const std::vector<std::string_view>& parts) = 0;
  // Makes the written bytes durable (fdatasync).
  virtual Status Sync() = 0;
  // Cuts the file to `size` bytes (size <= Size()) and continues writing there.
  virtual Status Truncate(uint64_t size) = 0;
  // Size of the file as far as this object wrote it successfully.
  virtual uint64_t Size() const = 0;
  virtual const std::string& path() const = 0;
};

class Env {
 public:
  virtual ~Env() = default;

  // Creates (or truncates) `path` for writing.
  virtual Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) = 0;
  // Opens an existing file for writing after its current end.
  virtual Status ReopenWritableFile(const std::string& path,
                                    std::unique_ptr<WritableFile>* out) = 0;
  // Reads the whole file; fails with kIoError if it is larger than max_bytes.
  virtual Status ReadFile(const std::string& path, uint64_t max_bytes, std::string* out) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..".
  virtual Status ListDir(const std::string& dir, std::vector<std::string>* names) = 0;
  virtual Status FileExists(const std::string& path, bool* exists) = 0;
  // Creates `dir` (and fsyncs its parent) if it does not exist.
  virtual Status CreateDir(const std::string& dir) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  // Cuts `path` to `size` bytes and fsyncs it.
  virtual Status TruncateFile(const std::string& path, uint64_t size) = 0;
  // Makes creations, renames and removals in `dir` durable.
  virtual Status SyncDir(const std::string& dir) = 0;
};

// The POSIX implementation. The returned object lives for the whole process.
Env* DefaultEnv();

// An Env that forwards every call to `base` (LevelDB's EnvWrapper). Fault
// injecting Envs derive from it and override only what they change; files
// opened for writing pass through WrapFile.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* base) : base_(base) {}

  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override {
    std::unique_ptr<WritableFile> f;
    Status s = base_->NewWritableFile(path, &f);
    if (s.ok()) *out = WrapFile(std::move(f));
    return s;
  }
  Status ReopenWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override {
    std::unique_ptr<WritableFile> f;
    Status s = base_->ReopenWritableFile(path, &f);
    if (s.ok()) *out = WrapFile(std::move(f));
    return s;
  }
  Status ReadFile(const std::string& path, uint64_t max_bytes, std::string* out) override {
    return base_->ReadFile(path, max_bytes, out);
  }
  Status ListDir(const std::string& dir, std::vector<std::string>* names) override {
    return base_->ListDir(dir, names);
  }
  Status FileExists(const std::string& path, bool* exists) override {
    return base_->FileExists(path, exists);
  }
  Status CreateDir(const std::string& dir) override { return base_->CreateDir(dir); }
  Status RemoveFile(const std::string& path) override { return base_->RemoveFile(path); }
  Status RenameFile(const std::string& from, const std::string& to) override {
    return base_->RenameFile(from, to);
  }
  Status TruncateFile(const std::string& path, uint64_t size) override {
    return base_->TruncateFile(path, size);
  }
  Status SyncDir(const std::string& dir) override { return base_->SyncDir(dir); }

 protected:
  // What the wrapper hands out for a file `base` opened; by default the file itself.
  virtual std::unique_ptr<WritableFile> WrapFile(std::unique_ptr<WritableFile> f) { return f; }
  Env* base() const { return base_; }

 private:
  Env* base_;
};

// Writes `contents` to `path` atomically: to path + ".tmp", fsynced, renamed,
// directory fsynced.
Status WriteFileAtomically(Env* env, const std::string& dir, const std::string& name,
                           const std::vector<std::string_view>& contents);

inline std::string JoinPath(const std::string& dir, const std::string& name) {
  return dir + "/" + name;
}

}  // namespace raftkv::storage
