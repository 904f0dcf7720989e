// End-to-end tests of the cluster id (docs/wire-format.md section 4): drawn
// at bootstrap, learned by a joiner before it writes, checked on every peer
// handshake and against a restarted node's --join. Real processes on
// 127.0.0.1.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "cluster.h"

namespace raftkv::itest {
namespace {

namespace json = boost::json;

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The cluster id in <datadir>/raft/META, read by hand from the format of
// docs/wal-format.md: a 20-byte record header, then u32 version, u64
// cluster_id (little endian). nullopt if the file is missing or short.
std::optional<uint64_t> MetaClusterId(const std::string& datadir) {
  std::string meta = ReadWhole(datadir + "/raft/META");
  if (meta.size() < 32) return std::nullopt;
  uint64_t id = 0;
  for (int b = 7; b >= 0; b--) id = (id << 8) | static_cast<uint8_t>(meta[24 + b]);
  return id;
}

std::string ClusterIdOf(Cluster& c, int i) {
  auto st = c.Status(i);
  if (!st || !st->contains("cluster_id")) return "";
  return std::string(st->at("cluster_id").as_string());
}

uint64_t RefusedOtherCluster(Cluster& c, int i) {
  auto st = c.Status(i);
  if (!st || !st->contains("transport")) return 0;
  return st->at("transport").at("refused_other_cluster").to_number<uint64_t>();
}

// Whether some line of node i's log holds every one of `parts`.
bool LogHasLineWith(const Cluster& c, int i, const std::vector<std::string>& parts) {
  std::ifstream in(c.node(i).log);
  std::string line;
  while (std::getline(in, line)) {
    bool all = true;
    for (const std::string& p : parts) all = all && line.find(p) != std::string::npos;
    if (all) return true;
  }
  return false;
}

TEST(ClusterIdTest, BootstrapDrawsAnIdThatAJoinerLearnsBeforeItWrites) {
  Cluster c(2);
  c.StartAll();
  const std::string id = ClusterIdOf(c, 0);
  ASSERT_FALSE(id.empty()) << "no cluster_id in /status";
  EXPECT_NE(id, "0");
  EXPECT_EQ(ClusterIdOf(c, 1), id);
  for (int i = 0; i < c.size(); i++) {
    SCOPED_TRACE(c.node(i).name);
    EXPECT_EQ(MetaClusterId(c.node(i).datadir), std::stoull(id));
    json::value meta = json::parse(ReadWhole(c.node(i).datadir + "/raftkv-node.json"));
    EXPECT_EQ(meta.at("cluster_id").as_string(), id);
  }
}

TEST(ClusterIdTest, JoinerWaitsForItsTargetWithoutCreatingStorage) {
  Cluster target(1);  // Ports chosen, not started yet.
  // Only its node2 runs: node1 is the target's name.
  Cluster joiner(2);
  const int j = 1;
  joiner.Launch(j, false, target.node(0).http());
  ASSERT_TRUE(WaitFor(
      [&] {
        return LogHasLineWith(joiner, j, {"learning the cluster id from", target.node(0).http()});
      },
      milliseconds(10000)))
      << joiner.LogTails();
  // It has asked and been refused: nothing of the Raft log exists yet (a
  // WAL created now could only carry id 0).
  EXPECT_FALSE(std::filesystem::exists(joiner.node(j).datadir + "/raft"));
  EXPECT_TRUE(joiner.Proc(j)->Alive());
  // Once the cluster is up, the joiner's retries find it.
  target.StartAll();
  const std::string id = ClusterIdOf(target, 0);
  ASSERT_NE(id, "");
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = joiner.Status(j);
        return st && st->at("admitted").as_bool() && st->at("cluster_id").as_string() == id;
      },
      milliseconds(20000)))
      << joiner.LogTails();
  EXPECT_EQ(MetaClusterId(joiner.node(j).datadir), std::stoull(id));
}

TEST(ClusterIdTest, NodeAndDataDirectoryOfAnotherClusterAreRefused) {
  Cluster a(2);
  a.StartAll();
  Cluster b(1);
  b.StartAll();
  const std::string id_a = ClusterIdOf(a, 0), id_b = ClusterIdOf(b, 0);
  ASSERT_NE(id_a, "");
  ASSERT_NE(id_b, "");
  ASSERT_NE(id_a, id_b);

  // 1. The handshake. B is asked (by mistake) to add a node of A: B adds it
  // as a learner and dials it; the node refuses B's Hello, logs both ids
  // and B's address, counts it, and never takes part in B.
  json::object join;
  join["address"] = a.node(1).raft();
  join["id"] = a.node(1).name;
  join["http"] = a.node(1).http();
  // Right after its bootstrap, B's leader refuses membership changes (503) until an entry
  // of its term commits: try until it takes the change.
  HttpResponse r;
  ASSERT_TRUE(WaitFor(
      [&] {
        r = Http(b.http_port(0), "POST", "/cluster/join/", json::serialize(join));
        return r.status != 503;
      },
      milliseconds(10000)))
      << r.body;
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(WaitFor([&] { return RefusedOtherCluster(a, 1) >= 2; }, milliseconds(10000)))
      << a.LogTails();
  EXPECT_TRUE(LogHasLineWith(a, 1,
                             {"refusing peer connection", "cluster " + id_b, "cluster " + id_a,
                              "advertising " + b.node(0).raft()}))
      << a.LogTails();
  auto st = a.Status(1);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->at("cluster_id").as_string(), id_a);
  for (const json::value& m : st->at("members").as_array()) {
    EXPECT_NE(m.at("raft").as_string(), b.node(0).raft()) << "A's node lists B's node";
  }
  // In B it stays a learner that has nothing (B's leader was refused).
  st = b.Status(0);
  ASSERT_TRUE(st);
  bool listed = false;
  for (const json::value& m : st->at("members").as_array()) {
    if (m.at("raft").as_string() != a.node(1).raft()) continue;
    listed = true;
    EXPECT_EQ(m.at("role").as_string(), "learner");
    if (m.as_object().contains("match")) {
      EXPECT_EQ(m.at("match").to_number<uint64_t>(), 0u);
    }
  }
  EXPECT_TRUE(listed);
  // A itself is unharmed.
  EXPECT_TRUE(a.PutRetry(1, "still", "a", milliseconds(5000)));

  // 2. The data directory. A's node restarted with --join pointing at B
  // exits non-zero, naming both ids, and its directory is still A's.
  a.Terminate(1);
  a.Launch(1, false, b.node(0).http());
  int rc = a.Proc(1)->Wait(milliseconds(10000));
  EXPECT_NE(rc, -1) << "still running with a data directory of another cluster";
  EXPECT_EQ(rc, 1);
  EXPECT_TRUE(LogHasLineWith(a, 1, {"cannot start", "cluster " + id_a, "cluster " + id_b}))
      << a.LogTails();
  EXPECT_EQ(MetaClusterId(a.node(1).datadir), std::stoull(id_a));
}

}  // namespace
}  // namespace raftkv::itest
