// Backup and restore on real clusters (issue 14): GET /v1/snapshot under a
// write load, `raftkv restore` into a new cluster on other ports, and the
// comparison of every key, value and revision at the backup's revision.

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster.h"
#include "json_test_util.h"
#include "wait.h"

namespace raftkv::itest {
namespace {

using std::chrono::milliseconds;

struct Written {
  std::string value;
  uint64_t revision = 0;
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

// `raftkv restore ...`: its exit status and what it printed.
int RunRestore(const std::vector<std::string>& args, const std::string& log, std::string* out) {
  std::vector<std::string> argv = {RAFTKV_BIN, "restore"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::filesystem::remove(log);
  int rc;
  {
    Process p(argv, log);
    rc = p.Wait(milliseconds(60000));
  }
  *out = ReadFile(log);
  return rc;
}

// Every key under `prefix` on node i (linearizable, paged): key -> kv object.
std::map<std::string, boost::json::object> ListAll(Cluster& c, int i, const std::string& prefix) {
  std::map<std::string, boost::json::object> out;
  HttpClient client(c.http_port(i));
  std::string cont;
  for (int page = 0; page < 1000; page++) {
    HttpResponse r = client.Get("/v1/kv/" + prefix + "?prefix&limit=1000" +
                                (cont.empty() ? "" : "&continue=" + cont));
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) break;
    boost::json::object o = Obj(r);
    for (const auto& kv : o.at("kvs").as_array()) out[Str(kv.at("key"))] = kv.as_object();
    if (!o.at("more").as_bool()) break;
    cont = Str(o.at("continue"));
  }
  return out;
}

TEST(BackupTest, ABackupUnderLoadRestoresIntoANewClusterWithEveryKeyValueAndRevision) {
  Cluster old_cluster(3);
  old_cluster.StartAll();
  // Writers: each write to a key of its own, its revision recorded when acknowledged.
  std::mutex mu;
  std::map<std::string, Written> acked;
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < 3; w++) {
    writers.emplace_back([&, w] {
      HttpClient c(old_cluster.http_port(w));
      for (int i = 0; !stop && i < 20000; i++) {
        std::string key = "b/" + std::to_string(w) + "-" + std::to_string(i);
        std::string value = "v" + std::to_string(i * 7 + w);
        HttpResponse r = c.Request("PUT", "/v1/kv/" + key, "{\"value\":\"" + value + "\"}");
        if (r.status != 200) continue;  // An unacknowledged write may or may not be in.
        std::lock_guard lock(mu);
        acked[key] = Written{value, Num(Obj(r).at("revision"))};
      }
    });
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        std::lock_guard lock(mu);
        return acked.size() >= 300;
      },
      milliseconds(10000)));
  // The backup, from a follower, while the writes go on.
  const int leader = old_cluster.WaitForLeader(milliseconds(5000));
  const int follower = (leader + 1) % 3;
  HttpResponse b = Http(old_cluster.http_port(follower), "GET", "/v1/snapshot");
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(b.Header("content-type"), "application/octet-stream");
  EXPECT_EQ(b.Header("content-length"), std::to_string(b.body.size()));
  EXPECT_TRUE(b.Header("x-raftkv-checksum").starts_with("xxh3-64="))
      << b.Header("x-raftkv-checksum");
  const uint64_t backup_rev = std::stoull(b.Header("x-raftkv-revision"));
  ASSERT_TRUE(WaitFor(
      [&] {
        std::lock_guard lock(mu);
        return acked.size() >= 600;
      },
      milliseconds(10000)));
  stop = true;
  for (std::thread& t : writers) t.join();
  // An acknowledged write at or below the backup's revision is in it; no later one is.
  std::map<std::string, Written> expected;
  size_t after = 0;
  for (const auto& [k, w] : acked) {
    if (w.revision <= backup_rev) {
      expected[k] = w;
    } else {
      after++;
    }
  }
  ASSERT_GT(expected.size(), 100u);
  ASSERT_GT(after, 100u) << "the backup was not taken under load";
  const std::string file = old_cluster.dir() + "/backup.snap";
  WriteFile(file, b.body);

  // A new cluster on other ports: node1 restored, the others joining it.
  constexpr uint64_t kBump = 1000000;
  Cluster fresh(3);
  const NodeInfo& n1 = fresh.node(0);
  std::string out;
  ASSERT_EQ(RunRestore({"--snapshot", file, "--datadir", n1.datadir, "--id", n1.name, "--bind",
                        n1.raft(), "--http", n1.http(), "--revision-bump", std::to_string(kBump)},
                       fresh.dir() + "/restore.log", &out),
            0)
      << out;
  EXPECT_NE(out.find("as revision " + std::to_string(backup_rev + kBump)), std::string::npos)
      << out;
  fresh.Start(0, false, "");
  ASSERT_GE(fresh.WaitForLeader(milliseconds(10000)), 0) << fresh.LogTails();
  fresh.Start(1, false, n1.http());
  fresh.Start(2, false, n1.http());
  ASSERT_TRUE(fresh.WaitVoter(1, 0, milliseconds(15000))) << fresh.LogTails();
  ASSERT_TRUE(fresh.WaitVoter(2, 0, milliseconds(15000))) << fresh.LogTails();
  ASSERT_TRUE(fresh.WaitConverged(milliseconds(10000)));

  // Every key, value and revision, on every node of the new cluster.
  for (int i = 0; i < 3; i++) {
    SCOPED_TRACE(fresh.node(i).name);
    auto got = ListAll(fresh, i, "b/");
    size_t unacked = 0;
    for (const auto& [k, kv] : got) {
      auto it = expected.find(k);
      if (it == expected.end()) {
        // Only a write that was never acknowledged (its answer lost at the end)
        // may be in the backup without being in `expected`.
        EXPECT_FALSE(acked.contains(k)) << k << " was acknowledged after the backup's revision";
        unacked++;
        continue;
      }
      EXPECT_EQ(Str(kv.at("value")), it->second.value) << k;
      // Keys keep their revisions (a CAS prepared against the old cluster still
      // holds); the store's revision moved forward past all of them.
      EXPECT_EQ(Num(kv.at("mod_revision")), it->second.revision) << k;
      EXPECT_EQ(Num(kv.at("create_revision")), it->second.revision) << k;
      EXPECT_EQ(Num(kv.at("version")), 1u) << k;
    }
    for (const auto& [k, w] : expected) EXPECT_TRUE(got.contains(k)) << k << " is missing";
    EXPECT_LE(unacked, 3u);
  }
  // Revisions moved forward: a new write lands above the old cluster's revisions,
  // and the old cluster's watchers are told to list again (410).
  HttpResponse w = Http(fresh.http_port(1), "PUT", "/v1/kv/after", "{\"value\":\"x\"}");
  ASSERT_EQ(w.status, 200) << w.body;
  EXPECT_GT(Num(Obj(w).at("revision")), backup_rev + kBump);
  HttpResponse watch =
      Http(fresh.http_port(0), "GET", "/v1/watch/b/?prefix&rev=" + std::to_string(backup_rev));
  ExpectError(watch, 410, "compacted", "a watch from the old cluster's revision");
  std::printf(
      "backup at revision %llu: %zu keys acknowledged at or below it, %zu after; restored "
      "at %llu\n",
      static_cast<unsigned long long>(backup_rev), expected.size(), after,
      static_cast<unsigned long long>(backup_rev + kBump));
}

TEST(BackupTest, ATruncatedOrCorruptedBackupOrAUsedDirectoryIsRefusedWithTheProblemNamed) {
  Cluster c(1);
  c.StartAll();
  for (int i = 0; i < 50; i++) {
    ASSERT_EQ(
        Http(c.http_port(0), "PUT", "/v1/kv/k" + std::to_string(i), "{\"value\":\"v\"}").status,
        200);
  }
  HttpResponse b = Http(c.http_port(0), "GET", "/v1/snapshot?consistency=stale");
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(Http(c.http_port(0), "GET", "/v1/snapshot?consistency=maybe").status, 400);
  EXPECT_EQ(Http(c.http_port(0), "POST", "/v1/snapshot").status, 405);
  const std::string dir = c.dir();
  std::string out;
  auto restore = [&](const std::string& file, const std::string& datadir) {
    return RunRestore({"--snapshot", file, "--datadir", datadir, "--id", "r", "--bind",
                       "127.0.0.1:1", "--http", "127.0.0.1:2"},
                      dir + "/restore.log", &out);
  };
  WriteFile(dir + "/truncated.snap", b.body.substr(0, b.body.size() - 100));
  EXPECT_EQ(restore(dir + "/truncated.snap", dir + "/t"), 1) << out;
  EXPECT_NE(out.find("truncated or corrupted"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/t/raftkv-node.json"));
  std::string flipped = b.body;
  flipped[flipped.size() / 2] ^= 0x20;
  WriteFile(dir + "/flipped.snap", flipped);
  EXPECT_EQ(restore(dir + "/flipped.snap", dir + "/f"), 1) << out;
  EXPECT_NE(out.find("checksum mismatch"), std::string::npos) << out;
  EXPECT_EQ(restore(dir + "/missing.snap", dir + "/m"), 1) << out;
  EXPECT_NE(out.find("cannot open the backup"), std::string::npos) << out;
  WriteFile(dir + "/good.snap", b.body);
  EXPECT_EQ(restore(dir + "/good.snap", dir + "/g"), 0) << out;
  EXPECT_EQ(restore(dir + "/good.snap", dir + "/g"), 1) << out;
  EXPECT_NE(out.find("already holds a node"), std::string::npos) << out;
  EXPECT_EQ(RunRestore({"--datadir", dir + "/x"}, dir + "/restore.log", &out), 2) << out;
  EXPECT_NE(out.find("snapshot"), std::string::npos) << out;
}

// One backup at a time per node, for as long as its answer is being written: a client
// that stops reading holds the slot (until --http-timeout-ms), and a second backup is
// refused with 503 "busy" and Retry-After rather than a second copy of the store.
TEST(BackupTest, ASecondBackupWhileOneIsStillBeingSentIsRefusedBusy) {
  Cluster c(1);
  c.StartAll();
  // 24 MiB of values: more than the kernel buffers between a server and a client that
  // does not read, so that the first answer cannot be written all at once.
  const std::string value(512 << 10, 'v');
  for (int i = 0; i < 48; i++) {
    ASSERT_EQ(Http(c.http_port(0), "PUT", "/v1/kv/big" + std::to_string(i),
                   "{\"value\":\"" + value + "\"}")
                  .status,
              200);
  }
  namespace asio = boost::asio;
  asio::io_context ioc;
  asio::ip::tcp::socket slow(ioc);
  slow.connect({asio::ip::make_address("127.0.0.1"), c.http_port(0)});
  std::string req = "GET /v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  asio::write(slow, asio::buffer(req));
  // Its status line has come: the server is writing the image, and it stops reading.
  std::string head(12, '\0');
  asio::read(slow, asio::buffer(head));
  ASSERT_EQ(head, "HTTP/1.1 200");

  HttpResponse busy = Http(c.http_port(0), "GET", "/v1/snapshot");
  ExpectError(busy, 503, "busy", "a second backup");
  EXPECT_EQ(busy.headers["retry-after"], "1");

  slow.close();  // The write fails, and the slot is free again.
  HttpResponse next;
  EXPECT_TRUE(WaitFor(
      [&] {
        next = Http(c.http_port(0), "GET", "/v1/snapshot");
        return next.status == 200;
      },
      milliseconds(10000)))
      << next.status << " " << next.body.substr(0, 200);
  EXPECT_GT(next.body.size(), size_t{48} * value.size());
}

}  // namespace
}  // namespace raftkv::itest
