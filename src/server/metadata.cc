#include "server/metadata.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "server/identity.h"

namespace raftkv::server {

namespace fs = std::filesystem;

namespace {

raft::Status IoError(const std::string& what) {
  return raft::Status(raft::Code::kIoError, what + ": " + std::strerror(errno));
}

raft::Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return IoError("open " + path);
  int rc = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  errno = saved;
  if (rc != 0) return IoError("fsync " + path);
  return raft::Status::Ok();
}

}  // namespace

raft::Status EnsureDataDir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return raft::Status(raft::Code::kIoError, "create " + dir + ": " + ec.message());
  if (!fs::is_directory(dir, ec)) {
    return raft::Status(raft::Code::kIoError, dir + " is not a directory");
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) return IoError("data directory " + dir);
  return raft::Status::Ok();
}

raft::Status LoadMetadata(const std::string& dir, NodeMetadata* out, bool* found) {
  std::string path = (fs::path(dir) / kMetadataFile).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *found = false;
    std::error_code ec;
    if (fs::exists(path, ec)) return IoError("read " + path);
    return raft::Status::Ok();
  }
  *found = true;
  std::stringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(ss.str(), ec);
  auto corrupt = [&path](const std::string& why) {
    return raft::Status(raft::Code::kCorruption, path + ": " + why);
  };
  if (ec || !v.is_object()) return corrupt("not a JSON object");
  const boost::json::object& o = v.get_object();
  try {
    if (o.at("format").to_number<int64_t>() != 1) return corrupt("unknown format");
    out->name = std::string(o.at("name").as_string());
    out->id = std::stoull(std::string(o.at("node_id").as_string()));
    out->raft = std::string(o.at("raft").as_string());
    out->http = std::string(o.at("http").as_string());
    out->bootstrapped = o.at("bootstrapped").as_bool();
    out->join = std::string(o.at("join").as_string());
    out->member = o.at("member").as_bool();
    out->cluster_id = 0;
    if (const boost::json::value* cid = o.if_contains("cluster_id")) {
      if (!ParseClusterId(cid->as_string(), &out->cluster_id)) return corrupt("bad cluster_id");
    }
    out->peers_http.clear();
    if (const boost::json::value* peers = o.if_contains("peers_http")) {
      for (const boost::json::value& p : peers->as_array()) {
        out->peers_http.emplace_back(p.as_string());
      }
    }
  } catch (const std::exception& e) {
    // Boost.JSON accessors throw on a missing or mistyped field; this is the
    // module's edge, so turn it into a value.
    return corrupt(std::string("bad field: ") + e.what());
  }
  return raft::Status::Ok();
}

raft::Status SaveMetadata(const std::string& dir, const NodeMetadata& m) {
  boost::json::object o;
  o["format"] = 1;
  o["name"] = m.name;
  o["node_id"] = std::to_string(m.id);
  o["raft"] = m.raft;
  o["http"] = m.http;
  o["bootstrapped"] = m.bootstrapped;
  o["join"] = m.join;
  o["member"] = m.member;
  // A decimal string, as node_id: JSON numbers lose precision past 2^53.
  o["cluster_id"] = std::to_string(m.cluster_id);
  boost::json::array peers;
  for (const std::string& p : m.peers_http) peers.emplace_back(p);
  o["peers_http"] = std::move(peers);
  std::string text = boost::json::serialize(o) + "\n";
  std::string path = (fs::path(dir) / kMetadataFile).string();
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError("create " + tmp);
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      errno = saved;
      return IoError("write " + tmp);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return IoError("fsync " + tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return IoError("rename " + tmp);
  return FsyncPath(dir, O_RDONLY | O_DIRECTORY);
}

}  // namespace raftkv::server
