#include "storage/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace raftkv::storage {
namespace {

Status IoError(const std::string& what, const std::string& path, int err) {
  return Status(raft::Code::kIoError, what + " " + path + ": " + std::strerror(err));
}

// Opens `path` with `flags` (plus O_CLOEXEC) and reads its size.
Status OpenWithSize(const std::string& path, int flags, int* fd, uint64_t* size) {
  *fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (*fd < 0) return IoError("open", path, errno);
  struct stat st;
  if (::fstat(*fd, &st) != 0) {
    int err = errno;
    ::close(*fd);
    *fd = -1;
    return IoError("stat", path, err);
  }
  *size = static_cast<uint64_t>(st.st_size);
  return Status::Ok();
}

class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixWritableFile() override { ::close(fd_); }

  Status Append(const std::vector<std::string_view>& parts) override {
    // pwritev at our own offset: after a failed or partial write the next
    // Truncate/Append starts from a known place.
    std::vector<iovec> iov;
    iov.reserve(parts.size());
    for (std::string_view p : parts) {
      if (!p.empty()) iov.push_back(iovec{const_cast<char*>(p.data()), p.size()});
    }
    uint64_t offset = size_;
    size_t i = 0;
    while (i < iov.size()) {
      int n = static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX));
      ssize_t w = ::pwritev(fd_, &iov[i], n, static_cast<off_t>(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        return IoError("write", path_, errno);
      }
      offset += static_cast<uint64_t>(w);
      size_t left = static_cast<size_t>(w);
      while (i < iov.size() && left >= iov[i].iov_len) {
        left -= iov[i].iov_len;
        i++;
      }
      if (left > 0) {
        iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
        iov[i].iov_len -= left;
      }
    }
    size_ = offset;
    return Status::Ok();
  }

  Status Sync() override {
    if (::fdatasync(fd_) != 0) return IoError("fdatasync", path_, errno);
    return Status::Ok();
  }

  Status Truncate(uint64_t size) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return IoError("ftruncate", path_, errno);
    size_ = size;
    return Status::Ok();
  }

  uint64_t Size() const override { return size_; }
  const std::string& path() const override { return path_; }

 private:
  const std::string path_;
  const int fd_;
  uint64_t size_;
};

class PosixEnv : public Env {
 public:
  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return IoError("create", path, errno);
    *out = std::make_unique<PosixWritableFile>(path, fd, 0);
    return Status::Ok();
  }

  Status ReopenWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override {
    int fd = -1;
    uint64_t size = 0;
    Status s = OpenWithSize(path, O_WRONLY, &fd, &size);
    if (!s.ok()) return s;
    *out = std::make_unique<PosixWritableFile>(path, fd, size);
    return Status::Ok();
  }

  Status ReadFile(const std::string& path, uint64_t max_bytes, std::string* out) override {
    int fd = -1;
    uint64_t size = 0;
    Status s = OpenWithSize(path, O_RDONLY, &fd, &size);
    if (!s.ok()) return s;
    if (size > max_bytes) {
      ::close(fd);
      return Status(raft::Code::kIoError, "read " + path + ": " + std::to_string(size) +
                                              " bytes is over the limit of " +
                                              std::to_string(max_bytes));
    }
    out->resize(size);
    uint64_t done = 0;
    while (done < size) {
      ssize_t r = ::pread(fd, out->data() + done, size - done, static_cast<off_t>(done));
      if (r < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        return IoError("read", path, err);
      }
      if (r == 0) break;  // Shrunk under us; return what is there.
      done += static_cast<uint64_t>(r);
    }
    out->resize(done);
    ::close(fd);
    return Status::Ok();
  }

  Status ListDir(const std::string& dir, std::vector<std::string>* names) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return IoError("list", dir, errno);
    names->clear();
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names->push_back(n);
    }
    ::closedir(d);
    return Status::Ok();
  }

  Status FileExists(const std::string& path, bool* exists) override {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      *exists = true;
      return Status::Ok();
    }
    if (errno == ENOENT) {
      *exists = false;
      return Status::Ok();
    }
    return IoError("stat", path, errno);
  }

  Status CreateDir(const std::string& dir) override {
    if (::mkdir(dir.c_str(), 0755) != 0) {
      if (errno == EEXIST) return Status::Ok();
      return IoError("mkdir", dir, errno);
    }
    std::string parent = ".";
    size_t slash = dir.find_last_of('/');
    if (slash == 0) parent = "/";
    if (slash != std::string::npos && slash > 0) parent = dir.substr(0, slash);
    return SyncDir(parent);
  }

  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return IoError("unlink", path, errno);
    return Status::Ok();
  }

  Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0)
      return IoError("rename", from + " to " + to, errno);
    return Status::Ok();
  }

  Status TruncateFile(const std::string& path, uint64_t size) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return IoError("open", path, errno);
    Status s;
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      s = IoError("ftruncate", path, errno);
    } else if (::fsync(fd) != 0) {
      s = IoError("fsync", path, errno);
    }
    ::close(fd);
    return s;
  }

  Status SyncDir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return IoError("open", dir, errno);
    Status s;
    if (::fsync(fd) != 0) s = IoError("fsync", dir, errno);
    ::close(fd);
    return s;
  }
};

}  // namespace

Env* DefaultEnv() {
  static PosixEnv* env = new PosixEnv();
  return env;
}

Status WriteFileAtomically(Env* env, const std::string& dir, const std::string& name,
                           const std::vector<std::string_view>& contents) {
  std::string tmp = JoinPath(dir, name + ".tmp");
  std::unique_ptr<WritableFile> f;
  Status s = env->NewWritableFile(tmp, &f);
  if (s.ok()) s = f->Append(contents);
  if (s.ok()) s = f->Sync();
  f.reset();
  if (s.ok()) s = env->RenameFile(tmp, JoinPath(dir, name));
  if (s.ok()) s = env->SyncDir(dir);
  if (!s.ok()) {
    bool exists = false;
    if (env->FileExists(tmp, &exists).ok() && exists) env->RemoveFile(tmp);
  }
  return s;
}

}  // namespace raftkv::storage
