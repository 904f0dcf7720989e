// snapshot save: GET /v1/snapshot (docs/operations.md, "Backup and
// restore") streamed to FILE.part, checked, synced and renamed to FILE.
//
// Until the answer's head arrives the request fails over as any read; once
// the image flows, a break ends the command (exit 5) rather than starting
// the download again elsewhere. FILE exists only once the image was received
// whole (Content-Length), its XXH3-64 matched both its trailer and the
// X-Raftkv-Checksum header, and it was fsynced: a crash or a failure never
// leaves a FILE that `raftkv restore` would refuse.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <cerrno>
#include <cstring>
#include <thread>

#include "commands.h"
#include "image_checksum.h"
#include "output.h"

namespace raftkv::ctl {

namespace json = boost::json;
using boost::beast::http::verb;
using std::chrono::milliseconds;

namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// FILE.part while it is written: removed on destruction unless committed.
class PartFile {
 public:
  explicit PartFile(std::string path) : path_(std::move(path)) {}
  ~PartFile() {
    if (fd_ >= 0) close(fd_);
    if (created_ && !committed_) unlink(path_.c_str());
  }
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;

  // Creates (or truncates: a .part is what an earlier, interrupted save
  // left) the file, readable by its owner only: a backup holds every key.
  Status Create() {
    fd_ = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd_ < 0) return Status::Usage(Errno("cannot create " + path_));
    created_ = true;
    return Status::Ok();
  }

  Status Append(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = write(fd_, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::Error(Errno("writing " + path_));
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return Status::Ok();
  }

  // Syncs and closes the file, then renames it to `file` (replacing it
  // only if `replace`) and syncs the directory so that the name lasts.
  Status Commit(const std::string& file, bool replace) {
    if (fsync(fd_) != 0) return Status::Error(Errno("fsync " + path_));
    const int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) return Status::Error(Errno("closing " + path_));
    if (Status s = Rename(file, replace); !s.ok()) return s;
    committed_ = true;
    const size_t slash = file.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : file.substr(0, slash + 1);
    const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return Status::Error(Errno("saved " + file + ", but opening its directory"));
    const int rc = fsync(dfd);
    close(dfd);
    if (rc != 0) return Status::Error(Errno("saved " + file + ", but fsync of its directory"));
    return Status::Ok();
  }

 private:
  Status Rename(const std::string& file, bool replace) {
    if (replace) {
      if (rename(path_.c_str(), file.c_str()) != 0) {
        return Status::Error(Errno("renaming " + path_ + " to " + file));
      }
      return Status::Ok();
    }
    // Never over a FILE that appeared during the download.
    if (renameat2(AT_FDCWD, path_.c_str(), AT_FDCWD, file.c_str(), RENAME_NOREPLACE) == 0) {
      return Status::Ok();
    }
    if (errno == EINVAL || errno == ENOSYS) {  // A file system without RENAME_NOREPLACE.
      if (link(path_.c_str(), file.c_str()) == 0) {
        unlink(path_.c_str());
        return Status::Ok();
      }
    }
    if (errno == EEXIST) {
      return Status::Error(file +
                           " appeared during the download: nothing was saved (--force "
                           "to overwrite it)");
    }
    return Status::Error(Errno("renaming " + path_ + " to " + file));
  }

  std::string path_;
  int fd_ = -1;
  bool created_ = false, committed_ = false;
};

struct Saved {
  std::string endpoint;
  uint64_t revision = 0;
  uint64_t size = 0;
  uint64_t checksum = 0;
};

// The answer's headers that the image is checked against.
Status ImageHeaders(Connection& conn, uint64_t* length, uint64_t* revision, uint64_t* checksum) {
  const std::string from = " (from " + conn.endpoint().ToString() + ")";
  std::optional<uint64_t> declared = conn.ContentLength();
  if (!declared) return Status::Error("the snapshot answer has no Content-Length" + from);
  *length = *declared;
  const std::string rev = conn.Header("X-Raftkv-Revision");
  if (!ParseNumber("X-Raftkv-Revision", rev, revision).ok()) {
    return Status::Error("the snapshot answer's X-Raftkv-Revision \"" + rev +
                         "\" is not a revision" + from);
  }
  const std::string sum = conn.Header("X-Raftkv-Checksum");
  std::optional<uint64_t> parsed = ParseChecksum(sum);
  if (!parsed) {
    return Status::Error("the snapshot answer's X-Raftkv-Checksum \"" + sum +
                         "\" is not xxh3-64=<16 hex digits>" + from);
  }
  *checksum = *parsed;
  return Status::Ok();
}

// Streams the body of an accepted answer into `part` and checks it.
Status Receive(Context& ctx, Connection& conn, PartFile* part, Saved* saved) {
  uint64_t length = 0, header_sum = 0;
  if (Status s = ImageHeaders(conn, &length, &saved->revision, &header_sum); !s.ok()) return s;
  const std::string from = conn.endpoint().ToString();
  ImageChecksum sum;
  std::string chunk;
  bool done = false;
  while (!done) {
    chunk.clear();
    // --timeout bounds each wait for more bytes, not the whole download.
    error_code ec = conn.ReadSome(&chunk, &done, Clock::now() + ctx.globals().timeout);
    if (Status s = part->Append(chunk); !s.ok()) return s;
    sum.Update(chunk);
    if (ec) {
      return Status(Exit::kUnavailable, "the download from " + from + " broke off after " +
                                            std::to_string(sum.size()) + " of " +
                                            std::to_string(length) + " bytes (" + Describe(ec) +
                                            "): nothing was saved");
    }
  }
  // A body shorter than its Content-Length never gets here: Beast's parser
  // is done only once Content-Length bytes came, and a connection that ends
  // before reports partial_message, a break above (exit 5). A longer body is
  // not read past Content-Length. So a mismatch is a bug in that reasoning,
  // not a corrupted download: say so loudly rather than save the image.
  if (sum.size() != length) {
    return Status::Error("internal error: the parser ended the body from " + from + " after " +
                         std::to_string(sum.size()) + " bytes, but Content-Length said " +
                         std::to_string(length) + ": nothing was saved");
  }
  uint64_t computed = 0, trailer = 0;
  if (!sum.Finish(&computed, &trailer)) {
    return Status::Error("the snapshot from " + from + " is " + std::to_string(length) +
                         " bytes, too short to be an image: nothing was saved");
  }
  if (computed != trailer || trailer != header_sum) {
    return Status::Error("checksum mismatch: the image's bytes hash to " +
                         FormatChecksum(computed) + ", its trailer says " +
                         FormatChecksum(trailer) + " and X-Raftkv-Checksum says " +
                         FormatChecksum(header_sum) + " (from " + from +
                         "): the download is corrupted, nothing was saved");
  }
  saved->endpoint = from;
  saved->size = length;
  saved->checksum = computed;
  return Status::Ok();
}

// Asks the endpoints in turn, as Client::Send does a read (failover past an
// unreachable node, a 503 or a 504; rounds with backoff within --timeout),
// and receives the first image a node starts to send.
Status Fetch(Context& ctx, const std::string& target, PartFile* part, Saved* saved) {
  const auto& endpoints = ctx.globals().endpoints;
  const size_t n = endpoints.size();
  const auto deadline = Clock::now() + ctx.globals().timeout;
  std::vector<std::string> failures(n);
  milliseconds backoff(100);
  for (int round = 0; round < Client::kMaxRounds && Clock::now() < deadline; round++) {
    milliseconds wait = backoff;
    for (size_t i = 0; i < n && Clock::now() < deadline; i++) {
      Connection conn(endpoints[i]);
      int status = 0;
      // As a read's attempt: a node that takes the request and never
      // answers (hung, stopped) leaves time for the next endpoint.
      const auto attempt = ReadAttemptDeadline(deadline, ctx.globals().timeout, n);
      error_code ec = conn.Connect(std::min(attempt, Clock::now() + Client::kConnectTimeout));
      if (!ec) ec = conn.Write({verb::get, target}, attempt);
      if (!ec) ec = conn.ReadHead(&status, attempt);
      if (ec) {
        failures[i] = Describe(ec);
        continue;
      }
      if (status == 200) return Receive(ctx, conn, part, saved);
      Reply refusal = conn.ReadRefusal(status, attempt);
      if (status != 503 && status != 504)
        return ReplyError(refusal, "the snapshot", Retry::kAlways);
      failures[i] = ReplyDetail(refusal);
      uint64_t seconds = 0;
      if (ParseNumber("Retry-After", refusal.retry_after, &seconds).ok()) {
        wait = std::max(wait, milliseconds(std::min<uint64_t>(seconds, 1) * 1000));
      }
    }
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (round + 1 == Client::kMaxRounds || left < wait + Client::kMinAttemptTime) break;
    std::this_thread::sleep_for(wait);
    backoff = std::min(backoff * 2, milliseconds(1000));
  }
  std::string message = "no endpoint could serve the snapshot within " +
                        std::to_string(ctx.globals().timeout.count()) + " ms:";
  for (size_t i = 0; i < n; i++) {
    message += (i == 0 ? " " : "; ") + endpoints[i].ToString() + ": " +
               (failures[i].empty() ? "not tried" : failures[i]);
  }
  return Status(Exit::kUnavailable, message);
}

}  // namespace

void DefineSnapshotSave(po::options_description* d) {
  d->add_options()("stale", po::bool_switch(),
                   "the node's own applied state, without a ReadIndex round (may lag)")(
      "force", po::bool_switch(), "overwrite FILE if it exists");
}

Status RunSnapshotSave(Context& ctx, const Args& args) {
  const std::string file = args.String("FILE");
  const bool force = args.Flag("force");
  struct stat st;
  if (stat(file.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::Usage(file + " is a directory");
    if (!force) return Status::Usage(file + " exists (--force to overwrite it)");
  }
  if (file.empty() || file.ends_with("/")) {
    return Status::Usage("FILE \"" + file + "\" is not a file name");
  }
  PartFile part(file + ".part");
  if (Status s = part.Create(); !s.ok()) return s;
  Query q;
  if (args.Flag("stale")) q.Add("consistency", "stale");
  Saved saved;
  if (Status s = Fetch(ctx, "/v1/snapshot" + q.str(), &part, &saved); !s.ok()) return s;
  if (Status s = part.Commit(file, force); !s.ok()) return s;
  if (ctx.json()) {
    json::object o{{"file", file},
                   {"revision", saved.revision},
                   {"size", saved.size},
                   {"checksum", FormatChecksum(saved.checksum)},
                   {"endpoint", saved.endpoint}};
    ctx.out() << json::serialize(o) << "\n";
  } else {
    ctx.out() << "snapshot saved to " << file << ": revision " << saved.revision << ", "
              << saved.size << " bytes, " << FormatChecksum(saved.checksum) << " (from "
              << saved.endpoint << ")\n";
  }
  return Status::Ok();
}

}  // namespace raftkv::ctl
