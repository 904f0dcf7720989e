#include "server/restore.h"

#include <sys/stat.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "kv/store.h"
#include "server/identity.h"
#include "server/metadata.h"
#include "storage/disk_storage.h"
#include "transport/transport.h"

namespace raftkv::server {

namespace po = boost::program_options;

ParseResult ParseRestoreOptions(int argc, char** argv, RestoreOptions* out, std::string* message) {
  RestoreOptions d;
  po::options_description desc(
      "raftkv restore: build the data directory of a new one-node cluster from a backup\n"
      "(GET /v1/snapshot, raftkvctl snapshot save). Start the node on it afterwards with the\n"
      "same --id, --bind and --http, then add the other nodes with --join.\n\n"
      "Usage: raftkv restore --snapshot FILE --datadir DIR [--id NAME] --bind HOST:PORT "
      "--http HOST:PORT [--revision-bump N]\n\nOptions");
  // clang-format off
  desc.add_options()
      ("help,h", "print this help and exit")
      ("snapshot", po::value(&out->snapshot)->required(), "the backup file")
      ("datadir", po::value(&out->datadir)->required(),
       "the new node's data directory (must not hold a node)")
      ("id", po::value(&out->name), "the node's name (default: the --bind address)")
      ("bind", po::value(&out->bind)->default_value(d.bind), "its Raft peer address")
      ("http", po::value(&out->http)->default_value(d.http), "its HTTP client address")
      ("revision-bump", po::value(&out->revision_bump)->default_value(d.revision_bump),
       "move every revision forward by this much, so that the old cluster's watchers list "
       "again instead of seeing revisions go backwards");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc - 1, argv + 1, desc), vm);
    if (vm.count("help")) {
      std::ostringstream ss;
      ss << desc;
      *message = ss.str();
      return ParseResult::kExitOk;
    }
    po::notify(vm);
  } catch (const std::exception& e) {
    *message = std::string("raftkv restore: ") + e.what() + " (see raftkv restore --help)";
    return ParseResult::kExitError;
  }
  if (out->name.empty()) out->name = out->bind;
  std::string host;
  uint16_t port = 0;
  if (!transport::SplitHostPort(out->bind, &host, &port) ||
      !transport::SplitHostPort(out->http, &host, &port)) {
    *message = "raftkv restore: --bind and --http must be HOST:PORT";
    return ParseResult::kExitError;
  }
  return ParseResult::kRun;
}

namespace {

raft::Status Fail(const std::string& why) {
  return raft::Status(raft::Code::kInvalidArgument, why);
}

}  // namespace

raft::Status RestoreDataDir(const RestoreOptions& o, std::string* summary) {
  // 1. The backup: a snapshot image whose checksum and layout hold.
  std::ifstream in(o.snapshot, std::ios::binary);
  if (!in) return Fail("cannot open the backup " + o.snapshot + ": " + std::strerror(errno));
  std::string image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Fail("cannot read the backup " + o.snapshot);
  kv::Store probe;
  if (raft::Status s = probe.Restore(image); !s.ok()) {
    return Fail("the backup " + o.snapshot + " (" + std::to_string(image.size()) +
                " bytes) is not a whole raftkv snapshot: " + s.message() +
                (s.message().find("checksum") != std::string::npos
                     ? " (the file is truncated or corrupted)"
                     : ""));
  }
  const uint64_t revision = probe.revision();
  constexpr uint64_t kMaxRevision = (1ULL << 53) - 1;
  if (o.revision_bump > kMaxRevision - revision) {
    return Fail("--revision-bump " + std::to_string(o.revision_bump) + " moves revision " +
                std::to_string(revision) + " past 2^53-1");
  }
  const uint64_t index = revision + o.revision_bump;
  if (raft::Status s = kv::SetImageRevision(&image, index); !s.ok()) return s;

  // 2. The directory: new, or empty of any node.
  if (raft::Status s = EnsureDataDir(o.datadir); !s.ok()) return s;
  NodeMetadata existing;
  bool found = false;
  if (raft::Status s = LoadMetadata(o.datadir, &existing, &found); !s.ok()) return s;
  const std::string raft_dir = o.datadir + "/raft";
  std::error_code ec;
  if (found ||
      (std::filesystem::exists(raft_dir, ec) && !std::filesystem::is_empty(raft_dir, ec))) {
    return Fail("the data directory " + o.datadir +
                " already holds a node; restore into a new or empty directory");
  }

  // 3. The Raft log: a snapshot at `index`, term 1, this node its only voter.
  MemberInfo self{NodeIdFromName(o.name), o.name, o.bind, o.http};
  NodeMetadata m;
  m.name = o.name;
  m.id = self.id;
  m.raft = o.bind;
  m.http = o.http;
  m.bootstrapped = true;
  m.member = true;
  m.cluster_id = NewClusterId();
  storage::StorageOptions so;
  so.node_id = self.id;
  so.cluster_id = m.cluster_id;
  if (image.size() > so.max_snapshot_bytes - (64 << 10)) {
    return Fail("the backup's image (" + std::to_string(image.size()) +
                " bytes) is larger than a snapshot file may be");
  }
  // From here on a failure removes what it wrote: a retry must find the directory empty.
  struct Cleanup {
    const std::string& dir;
    bool armed = true;
    ~Cleanup() {
      std::error_code ignored;
      if (armed) std::filesystem::remove_all(dir, ignored);
    }
  } cleanup{raft_dir};
  std::unique_ptr<storage::DiskStorage> disk;
  if (raft::Status s = storage::DiskStorage::Open(raft_dir, so, &disk); !s.ok()) {
    return raft::Status(s.code(), "creating the Raft log in " + raft_dir + ": " + s.message());
  }
  if (image.size() > disk->max_snapshot_data_bytes()) {
    return Fail("the backup's image (" + std::to_string(image.size()) +
                " bytes) is larger than a snapshot file may be");
  }
  auto snap = std::make_shared<raft::Snapshot>();
  snap->meta.index = index;
  snap->meta.term = 1;
  snap->meta.conf.members.push_back(
      raft::Member{self.id, raft::MemberRole::kVoter, false, EncodeMemberContext(self)});
  snap->data = std::move(image);
  storage::Update u;
  u.hard_state = raft::HardState{1, raft::kNoNode, index};
  u.snapshot = snap;
  if (raft::Status s = disk->Save(u); !s.ok()) {
    return raft::Status(s.code(), "writing the snapshot in " + raft_dir + ": " + s.message());
  }
  disk.reset();
  // Last: its presence makes the next start a restart of this node.
  if (raft::Status s = SaveMetadata(o.datadir, m); !s.ok()) return s;
  cleanup.armed = false;
  *summary = "restored " + std::to_string(probe.size()) + " keys at revision " +
             std::to_string(revision) + " into " + o.datadir + " as revision " +
             std::to_string(index) + " (bumped by " + std::to_string(o.revision_bump) + "), node " +
             o.name + " the only member of new cluster " + std::to_string(m.cluster_id) +
             "; start it with: raftkv --id " + o.name + " --bind " + o.bind + " --http " + o.http +
             " --datadir " + o.datadir;
  return raft::Status::Ok();
}

}  // namespace raftkv::server
