// End-to-end tests of raftkv clusters: real processes on 127.0.0.1.
#include "cluster.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

namespace raftkv::itest {
namespace {

namespace json = boost::json;

// The last "storage ...: recovered ..." line of a node's log.
std::string RecoveryLine(const std::string& log_path) {
  std::ifstream in(log_path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.find("] storage ") != std::string::npos) last = line;
  }
  return last;
}

// The last index in a recovery line ("...; log [first, last]"), 0 if absent.
uint64_t RecoveredLastIndex(const std::string& line) {
  size_t at = line.find("; log [");
  if (at == std::string::npos) return 0;
  size_t comma = line.find(", ", at);
  if (comma == std::string::npos) return 0;
  return std::strtoull(line.c_str() + comma + 2, nullptr, 10);
}

std::vector<std::string> NodeArgv(const Cluster& c, int i) {
  const NodeInfo& n = c.node(i);
  return {RAFTKV_BIN, "--id",   n.name,      "--bind", n.raft(),
          "--http",   n.http(), "--datadir", n.datadir};
}

std::string Role(Cluster& c, int i) {
  auto st = c.Status(i);
  return st ? std::string(st->at("role").as_string()) : "";
}

uint64_t Term(Cluster& c, int i) {
  auto st = c.Status(i);
  return st ? st->at("term").to_number<uint64_t>() : 0;
}

// The original README's session, verbatim, against every node.
TEST(ClusterTest, ReadmeSessionOnEveryNode) {
  Cluster c(3);
  c.StartAll();
  for (int i = 0; i < c.size(); i++) {
    SCOPED_TRACE(c.node(i).name);
    HttpClient cl(c.http_port(i));
    std::string target = "/keys/some-key-" + std::to_string(i) + "/";
    HttpResponse r = cl.Get(target);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, R"({"value":""})");
    EXPECT_EQ(r.Header("content-type"), "application/json; charset=utf-8");
    // The README sends a misspelt content type; the body is JSON regardless.
    r = cl.Request("POST", target, R"({"value": "some-value"})",
                   {{"Content-Type", "application/jspn"}});
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, R"({"value":"some-value"})");
    r = cl.Get(target);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, R"({"value":"some-value"})");
  }
  // And each node's write is visible, linearizably, on every node.
  for (int i = 0; i < c.size(); i++) {
    for (int j = 0; j < c.size(); j++) {
      HttpResponse r = Http(c.http_port(j), "GET", "/keys/some-key-" + std::to_string(i) + "/");
      EXPECT_EQ(r.body, R"({"value":"some-value"})") << "node " << j << " key " << i;
    }
  }
}

void CheckWritesToFollowersAreForwardedAndReadEverywhere(Cluster& c) {
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  for (int i = 0; i < c.size(); i++) {
    if (i == leader) continue;
    HttpClient cl(c.http_port(i));
    for (int k = 0; k < 20; k++) {
      std::string key = "f" + std::to_string(i) + "-" + std::to_string(k);
      HttpResponse r = cl.Post("/keys/" + key + "/", "{\"value\":\"v" + std::to_string(k) + "\"}");
      ASSERT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(r.body, ValueJson("v" + std::to_string(k)));
      // Read-your-write through the same follower, linearizably.
      r = cl.Get("/keys/" + key + "/");
      EXPECT_EQ(r.body, ValueJson("v" + std::to_string(k)));
    }
  }
  for (int j = 0; j < c.size(); j++) {
    HttpClient cl(c.http_port(j));
    for (int i = 0; i < c.size(); i++) {
      if (i == leader) continue;
      std::string key = "/keys/f" + std::to_string(i) + "-19/";
      EXPECT_EQ(cl.Get(key).body, ValueJson("v19"));
      // A stale read catches up on its own.
      EXPECT_TRUE(WaitFor([&] { return cl.Get(key + "?stale").body == ValueJson("v19"); },
                          milliseconds(5000)));
    }
  }
}

TEST(ClusterTest, WritesToFollowersAreForwardedAndReadEverywhere) {
  Cluster c(3);
  CheckWritesToFollowersAreForwardedAndReadEverywhere(c);
}

// The same with HTTP sessions on two threads of their own (the default on 4
// cores or more), apart from the thread that drives Raft; stopping the
// cluster at the end shuts every thread down.
// A write reaching a follower after max_forward_hops (2) forwards is not
// forwarded again (a loop between nodes that disagree on the leader ends);
// one hop fewer still goes through.
TEST(ClusterTest, ForwardingStopsAtTheHopLimit) {
  Cluster c(3);
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  HttpClient cl(c.http_port((leader + 1) % c.size()));
  HttpResponse r = cl.Request("POST", "/keys/hop/", "{\"value\":\"2\"}", {{"X-Raftkv-Hops", "2"}});
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("forwarded too often"), std::string::npos) << r.body;
  r = cl.Request("POST", "/keys/hop/", "{\"value\":\"1\"}", {{"X-Raftkv-Hops", "1"}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Http(c.http_port(leader), "GET", "/keys/hop/").body, ValueJson("1"));
}

TEST(ClusterTest, WritesAndReadsWithSessionThreadsApartFromTheDriver) {
  Cluster c(3, {"--io-threads", "3"});
  CheckWritesToFollowersAreForwardedAndReadEverywhere(c);
}

// Kill -9 the leader ten times: a new leader within 2 s each time, writes
// resume, and the old leader comes back on its data directory as a follower
// (still a voter: it resumes with its state) and catches up. Catching up by
// snapshot is RestartedFollowerResumesAndCatchesUpBySnapshot's business.
TEST(ClusterTest, KillLeaderFailoverAndCatchUpBySnapshot) {
  Cluster c(3, {"--snapshot-entries", "100", "--snapshot-keep-entries", "20"});
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  {
    HttpClient cl(c.http_port(leader));
    for (int k = 0; k < 150; k++) {
      ASSERT_EQ(cl.Post("/keys/pre" + std::to_string(k) + "/", R"({"value":"x"})").status, 200);
    }
  }
  std::vector<double> elect_ms, write_ms;
  for (int round = 0; round < 10; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    leader = c.FindLeader();
    ASSERT_GE(leader, 0);
    uint64_t old_term = Term(c, leader);
    int survivor = (leader + 1) % c.size();
    auto t0 = Clock::now();
    c.Kill(leader);
    int next = c.WaitForLeader(milliseconds(5000), old_term + 1);
    auto t1 = Clock::now();
    ASSERT_GE(next, 0) << "no new leader";
    elect_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    EXPECT_LT(elect_ms.back(), 2000) << "new leader took too long";
    std::string key = "after" + std::to_string(round);
    ASSERT_TRUE(c.PutRetry(survivor, key, "r" + std::to_string(round), milliseconds(5000)));
    write_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    // More writes so that the leader's log moves past another snapshot.
    HttpClient cl(c.http_port(next));
    for (int k = 0; k < 30; k++) {
      ASSERT_EQ(cl.Post("/keys/more" + std::to_string(round) + "-" + std::to_string(k) + "/",
                        R"({"value":"y"})")
                    .status,
                200);
    }
    // The old leader restarts and catches up; wait for that before the
    // next kill, or two voters would be down.
    c.Restart(leader);
    ASSERT_TRUE(c.WaitVoter(leader, next, milliseconds(10000)));
    ASSERT_TRUE(c.WaitConverged(milliseconds(10000)));
    EXPECT_EQ(Role(c, leader), "Follower");
    HttpClient old(c.http_port(leader));
    EXPECT_EQ(old.Get("/keys/" + key + "/?stale").body, ValueJson("r" + std::to_string(round)));
    EXPECT_EQ(old.Get("/keys/pre7/?stale").body, ValueJson("x"));
    EXPECT_EQ(old.Get("/keys/" + key + "/").body, ValueJson("r" + std::to_string(round)));
  }
  auto report = [](const char* what, std::vector<double> v) {
    std::sort(v.begin(), v.end());
    std::printf("failover %s over %zu kills: min %.0f ms, median %.0f ms, max %.0f ms\n", what,
                v.size(), v.front(), v[v.size() / 2], v.back());
  };
  report("(kill -9 -> new leader)", elect_ms);
  report("(kill -9 -> first write acknowledged via a survivor)", write_ms);
}

// A follower killed (or stopped) while the leader stays, then restarted:
// the election demo. It resumes from its own data directory (no re-add),
// and since the leader compacted its log meanwhile, it catches up by
// snapshot.
TEST(ClusterTest, RestartedFollowerResumesAndCatchesUpBySnapshot) {
  Cluster c(3, {"--snapshot-entries", "100", "--snapshot-keep-entries", "20"});
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  HttpClient cl(c.http_port(leader));
  for (int k = 0; k < 150; k++) {
    ASSERT_EQ(cl.Post("/keys/k" + std::to_string(k) + "/", R"({"value":"a"})").status, 200);
  }
  for (bool graceful : {false, true}) {
    SCOPED_TRACE(graceful ? "SIGTERM" : "SIGKILL");
    int follower = (leader + 1) % 3;
    ASSERT_TRUE(c.WaitConverged(milliseconds(5000)));
    auto before = c.Status(follower);
    ASSERT_TRUE(before);
    uint64_t applied_before = before->at("applied").to_number<uint64_t>();
    if (graceful) {
      c.Terminate(follower);
    } else {
      c.Kill(follower);
    }
    for (int k = 0; k < 150; k++) {
      ASSERT_EQ(cl.Post("/keys/k" + std::to_string(k) + "/",
                        graceful ? R"({"value":"c"})" : R"({"value":"b"})")
                    .status,
                200);
    }
    c.Restart(follower);
    // It resumes with its own state: its log recovered from disk ends at
    // least where it had applied, and it stays the voter it was.
    std::string recovered = RecoveryLine(c.node(follower).log);
    EXPECT_NE(recovered.find("recovered"), std::string::npos) << recovered;
    EXPECT_GE(RecoveredLastIndex(recovered), applied_before) << recovered;
    ASSERT_TRUE(c.WaitVoter(follower, leader, milliseconds(10000)));
    ASSERT_TRUE(c.WaitConverged(milliseconds(10000)));
    EXPECT_EQ(c.FindLeader(), leader) << "the restart disturbed the leader";
    HttpClient f(c.http_port(follower));
    EXPECT_EQ(f.Get("/keys/k149/?stale").body, ValueJson(graceful ? "c" : "b"));
    EXPECT_EQ(f.Get("/keys/k0/").body, ValueJson(graceful ? "c" : "b"));
    auto st = c.Status(follower);
    ASSERT_TRUE(st);
    EXPECT_GE(st->at("snapshots_installed").to_number<uint64_t>(), 1u);
    EXPECT_EQ(st->at("role").as_string(), "Follower");
  }
  // The cluster still takes writes through the restarted follower.
  EXPECT_TRUE(c.PutRetry((leader + 1) % 3, "end", "ok", milliseconds(3000)));
}

// Issue 3's "a node's data directory survives kill -9": writers keep
// writing through the leader and a follower while every node is killed
// with SIGKILL; all three restart on their data directories, and every
// write that was acknowledged (200) is there, on every node.
TEST(ClusterTest, KillAllNodesThenRestartKeepsEveryAcknowledgedWrite) {
  Cluster c(3, {"--snapshot-entries", "200", "--snapshot-keep-entries", "50"});
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  std::mutex mu;
  std::vector<std::string> acked;
  std::atomic<bool> stop{false};
  std::atomic<int> ok_count{0};
  auto writer = [&](int via, std::string prefix) {
    HttpClient cl(c.http_port(via), milliseconds(2000));
    for (int k = 0; !stop; k++) {
      std::string key = prefix + std::to_string(k);
      HttpResponse r = cl.Post("/keys/" + key + "/", "{\"value\":\"" + key + "\"}");
      if (r.status == 200) {
        std::lock_guard lock(mu);
        acked.push_back(key);
        ok_count++;
      }
    }
  };
  std::thread w1(writer, leader, "l"), w2(writer, (leader + 1) % 3, "f");
  // Enough writes to take snapshots and compact, then kill while writing.
  bool enough = WaitFor([&] { return ok_count >= 500; }, milliseconds(30000));
  for (int i = 0; i < c.size(); i++) c.Kill(i);
  stop = true;
  w1.join();
  w2.join();
  ASSERT_TRUE(enough) << "only " << ok_count << " writes acknowledged";
  for (int i = 0; i < c.size(); i++) c.Restart(i);
  ASSERT_GE(c.WaitForLeader(milliseconds(10000)), 0);
  ASSERT_TRUE(c.PutRetry(0, "after-restart", "yes", milliseconds(5000)));
  ASSERT_TRUE(c.WaitConverged(milliseconds(10000)));
  std::printf("%zu acknowledged writes before kill -9 of every node\n", acked.size());
  for (int i = 0; i < c.size(); i++) {
    SCOPED_TRACE(c.node(i).name);
    HttpClient cl(c.http_port(i));
    size_t missing = 0;
    for (const std::string& key : acked) {
      // Converged: every node has applied the leader's commit index, which
      // covers every acknowledged write; stale reads show the local copy.
      if (cl.Get("/keys/" + key + "/?stale").body != ValueJson(key)) missing++;
    }
    EXPECT_EQ(missing, 0u) << "acknowledged writes lost";
    EXPECT_EQ(cl.Get("/keys/" + acked.back() + "/").body, ValueJson(acked.back()));
    auto st = c.Status(i);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->at("health").as_string(), "ok");
    EXPECT_TRUE(st->at("admitted").as_bool());
  }
}

// A WAL segment with a byte flipped in the middle is corruption: the node
// refuses to start, exits non-zero, and says which file.
TEST(ClusterTest, CorruptedWalSegmentRefusesToStart) {
  Cluster c(1);
  c.StartAll();
  for (int k = 0; k < 50; k++) {
    ASSERT_TRUE(c.PutRetry(0, "c" + std::to_string(k), "some-value", milliseconds(3000)));
  }
  c.Terminate(0);
  namespace fs = std::filesystem;
  std::string segment;
  for (const auto& e : fs::directory_iterator(c.node(0).datadir + "/raft")) {
    std::string name = e.path().filename().string();
    if (name.starts_with("wal-") && (segment.empty() || e.path().string() > segment)) {
      segment = e.path().string();
    }
  }
  ASSERT_FALSE(segment.empty());
  {
    std::fstream f(segment, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    std::streamoff mid = f.tellg() / 2;
    char b = 0;
    f.seekg(mid);
    f.read(&b, 1);
    b = static_cast<char>(b ^ 0x5a);
    f.seekp(mid);
    f.write(&b, 1);
  }
  Process p(NodeArgv(c, 0), c.node(0).log);
  int rc = p.Wait(milliseconds(10000));
  EXPECT_NE(rc, 0);
  EXPECT_NE(rc, -1) << "still running on a corrupted data directory";
  std::ifstream in(c.node(0).log);
  std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string name = std::filesystem::path(segment).filename().string();
  EXPECT_NE(log.find("cannot start"), std::string::npos);
  EXPECT_NE(log.find(name), std::string::npos) << "the error does not name " << name;
}

// A write error (here the file-size limit, EFBIG; the same path as a full
// disk): the node stops accepting writes (503 "storage failed: ..."),
// reports it in /status and /health, stays up, and shuts down cleanly.
// Restarted with room again, it has every acknowledged write.
TEST(ClusterTest, WriteErrorStopsWritesAndIsReported) {
  Cluster c(1);
  c.StartAll();
  std::string big(200 << 10, 'x');
  ASSERT_TRUE(c.PutRetry(0, "before", "ok", milliseconds(3000)));
  // Limit every file of the process to about what it has written so far.
  rlimit rl{1 << 20, 1 << 20};
  ASSERT_EQ(prlimit(c.Proc(0)->pid(), RLIMIT_FSIZE, &rl, nullptr), 0);
  HttpClient cl(c.http_port(0));
  HttpResponse r;
  int acked = 0;
  for (int k = 0; k < 20; k++) {
    r = cl.Post("/keys/big" + std::to_string(k) + "/", "{\"value\":\"" + big + "\"}");
    if (r.status != 200) break;
    acked++;
  }
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("storage failed"), std::string::npos) << r.body;
  EXPECT_TRUE(c.Proc(0)->Alive());
  r = cl.Post("/keys/after/", R"({"value":"no"})");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("storage failed"), std::string::npos) << r.body;
  auto st = c.Status(0);
  ASSERT_TRUE(st);
  EXPECT_NE(std::string(st->at("health").as_string()).find("storage failed"), std::string::npos);
  EXPECT_EQ(Http(c.http_port(0), "GET", "/health").status, 503);
  EXPECT_EQ(Http(c.http_port(0), "GET", "/keys/before/?stale").body, ValueJson("ok"));
  c.Terminate(0);  // Exits 0.
  c.Restart(0);
  ASSERT_GE(c.WaitForLeader(milliseconds(10000)), 0);
  EXPECT_EQ(Http(c.http_port(0), "GET", "/keys/before/").body, ValueJson("ok"));
  for (int k = 0; k < acked; k++) {
    EXPECT_EQ(Http(c.http_port(0), "GET", "/keys/big" + std::to_string(k) + "/").body.size(),
              big.size() + 12)
        << k;
  }
  EXPECT_TRUE(c.PutRetry(0, "after", "yes", milliseconds(3000)));
}

TEST(ClusterTest, FiveNodesServeWithTwoDownAndRefuseWithThreeDown) {
  Cluster c(5, {"--request-timeout-ms", "1000"});
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  std::vector<int> followers;
  for (int i = 0; i < c.size(); i++) {
    if (i != leader) followers.push_back(i);
  }
  for (int k = 0; k < 10; k++) {
    ASSERT_TRUE(c.PutRetry(followers[0], "five" + std::to_string(k), "v", milliseconds(3000)));
  }
  ASSERT_TRUE(c.WaitConverged(milliseconds(5000)));
  // Two down: still a quorum of three.
  c.Kill(followers[0]);
  c.Kill(followers[1]);
  EXPECT_TRUE(c.PutRetry(leader, "two-down", "ok", milliseconds(3000)));
  EXPECT_TRUE(c.PutRetry(followers[2], "two-down-fwd", "ok", milliseconds(3000)));
  EXPECT_EQ(Http(c.http_port(followers[3]), "GET", "/keys/two-down/").body, ValueJson("ok"));
  ASSERT_TRUE(c.WaitConverged(milliseconds(5000)));
  // Three down: no quorum. The leader steps down (check-quorum) and every
  // write and linearizable read is refused with 503 and Retry-After.
  c.Kill(followers[2]);
  HttpResponse r;
  EXPECT_TRUE(WaitFor(
      [&] {
        r = Http(c.http_port(leader), "POST", "/keys/three-down/", R"({"value":"no"})");
        return r.status == 503;
      },
      milliseconds(8000)))
      << r.status << " " << r.body;
  EXPECT_EQ(r.Header("retry-after"), "1");
  r = Http(c.http_port(followers[3]), "POST", "/keys/three-down/", R"({"value":"no"})");
  EXPECT_EQ(r.status, 503) << r.body;
  r = Http(c.http_port(followers[3]), "GET", "/keys/five1/");
  EXPECT_EQ(r.status, 503) << r.body;
  // Stale reads still work.
  EXPECT_EQ(Http(c.http_port(leader), "GET", "/keys/five1/?stale").body, ValueJson("v"));
  // They come back: service resumes, nothing acknowledged is lost.
  for (int i : {followers[0], followers[1], followers[2]}) c.Restart(i);
  EXPECT_TRUE(c.PutRetry(followers[0], "recovered", "yes", milliseconds(10000)));
  ASSERT_TRUE(c.WaitConverged(milliseconds(10000)));
  for (int i = 0; i < c.size(); i++) {
    HttpClient cl(c.http_port(i));
    EXPECT_EQ(cl.Get("/keys/five9/").body, ValueJson("v")) << i;
    EXPECT_EQ(cl.Get("/keys/two-down/").body, ValueJson("ok")) << i;
    EXPECT_EQ(cl.Get("/keys/two-down-fwd/").body, ValueJson("ok")) << i;
    EXPECT_EQ(cl.Get("/keys/recovered/").body, ValueJson("yes")) << i;
  }
}

TEST(ClusterTest, JoinFourthNodeUnderLoad) {
  Cluster c(3);
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  std::atomic<bool> stop{false};
  std::atomic<int> written{0}, failed{0};
  std::thread load([&] {
    HttpClient cl(c.http_port(leader));
    while (!stop) {
      int k = written.load();
      HttpResponse r = cl.Post("/keys/load" + std::to_string(k) + "/",
                               "{\"value\":\"" + std::to_string(k) + "\"}");
      if (r.status == 200) {
        written++;
      } else {
        failed++;
      }
    }
  });
  ASSERT_TRUE(WaitFor([&] { return written >= 200; }, milliseconds(10000)));
  // Join through a follower: the join is forwarded to the leader.
  int via = (leader + 1) % 3;
  int fourth = c.AddJoining(via);
  EXPECT_TRUE(c.WaitVoter(fourth, leader, milliseconds(10000)));
  int at_join = written;
  ASSERT_TRUE(WaitFor([&] { return written >= at_join + 200; }, milliseconds(10000)));
  stop = true;
  load.join();
  EXPECT_EQ(failed, 0);
  ASSERT_TRUE(c.WaitConverged(milliseconds(10000)));
  HttpClient cl(c.http_port(fourth));
  int last = written - 1;
  EXPECT_EQ(cl.Get("/keys/load" + std::to_string(last) + "/").body,
            ValueJson(std::to_string(last)));
  for (int k = 0; k <= last; k += 7) {
    ASSERT_EQ(cl.Get("/keys/load" + std::to_string(k) + "/?stale").body,
              ValueJson(std::to_string(k)));
  }
  auto st = c.Status(leader);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->at("members").as_array().size(), 4u);
}

TEST(ClusterTest, SigtermExitsZeroAndHandsOverLeadership) {
  // Elections time out after 2-4 s here: a leader within the bound below can
  // only come from the handover, not from an election after the old leader left.
  Cluster c(3, {"--election-ticks", "40"});
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  ASSERT_TRUE(c.PutRetry(leader, "before", "1", milliseconds(3000)));
  uint64_t term = Term(c, leader);
  auto t0 = Clock::now();
  c.Terminate(leader);  // Expects exit status 0.
  int next = c.WaitForLeader(milliseconds(3000), term + 1);
  ASSERT_GE(next, 0);
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("leader handover on SIGTERM: %.0f ms\n", ms);
  EXPECT_LT(ms, 1800) << "the new leader came from an election timeout, not a handover";
  EXPECT_TRUE(c.PutRetry(next, "after", "2", milliseconds(3000)));
  int follower = 3 - leader - next;
  c.Terminate(follower);
  EXPECT_EQ(Http(c.http_port(next), "GET", "/keys/after/?stale").body, ValueJson("2"));
}

TEST(ClusterTest, KeysAreBytesAndValuesAnyJsonString) {
  Cluster c(1);
  c.StartAll();
  HttpClient cl(c.http_port(0));
  // Percent-decoded keys: a slash, a NUL, UTF-8, a space.
  HttpResponse r = cl.Post("/keys/a%2Fb%00c%C3%A9%20d/", R"({"value":"slashy"})");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(cl.Get("/keys/a%2Fb%00c%C3%A9%20d/").body, ValueJson("slashy"));
  EXPECT_EQ(cl.Get("/keys/a%2fb%00c%c3%a9%20d").body, ValueJson("slashy"));  // No trailing slash.
  EXPECT_EQ(cl.Get("/keys/a%2Fb/").body, R"({"value":""})");
  // Values: escapes in, Go's encoding/json out.
  r = cl.Post("/keys/esc/",
              R"({"value":"q\"b\\s\n<tag>&\u2028\u00e9\u0001\ud83d\ude00", "extra": [1,2]})");
  std::string want = R"({"value":"q\"b\\s\n\u003ctag\u003e\u0026\u2028)"
                     "\xC3\xA9"
                     R"(\u0001)"
                     "\xF0\x9F\x98\x80"
                     R"("})";
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, want);
  EXPECT_EQ(cl.Get("/keys/esc/").body, want);
  // An empty value is a value.
  EXPECT_EQ(cl.Post("/keys/empty/", R"({"value":""})").body, R"({"value":""})");
  // Status and health.
  r = cl.Get("/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"status":"ok"})");
  auto st = c.Status(0);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->at("role").as_string(), "Leader");
  EXPECT_EQ(st->at("id").as_string(), "node1");
  EXPECT_EQ(st->at("leader").as_object().at("http").as_string(), c.node(0).http());
  EXPECT_EQ(st->at("members").as_array().size(), 1u);
}

TEST(ClusterTest, ConnectionLimitAndKeepAlive) {
  Cluster c(1, {"--max-connections", "4"});
  c.StartAll();
  std::vector<std::unique_ptr<HttpClient>> open;
  for (int i = 0; i < 4; i++) {
    open.push_back(std::make_unique<HttpClient>(c.http_port(0)));
    // Several requests on one kept-alive connection.
    for (int k = 0; k < 3; k++) ASSERT_EQ(open.back()->Get("/health").status, 200);
  }
  HttpResponse r = Http(c.http_port(0), "GET", "/health");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.body, R"({"error":"too many connections"})");
  EXPECT_EQ(r.Header("retry-after"), "1");
  open.pop_back();  // Frees a slot once the server sees the close.
  EXPECT_TRUE(WaitFor([&] { return Http(c.http_port(0), "GET", "/health").status == 200; },
                      milliseconds(3000)));
  // HEAD is refused and closes its connection (answers carry bodies). The
  // probes above may still hold slots until the server sees them close, so
  // retry while the answer is the connection limit's.
  open.clear();
  EXPECT_TRUE(WaitFor(
      [&] {
        HttpClient head(c.http_port(0));
        r = head.Request("HEAD", "/keys/k/");
        return r.status != 503;
      },
      milliseconds(3000)));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.Header("connection"), "close");
}

// --max-pending-requests bounds what a node holds for Raft: past it a write
// or a linearizable read is refused at once with 503 and Retry-After, and
// stale reads still answer. The writes held count; when they end, writes are
// accepted again.
TEST(ClusterTest, PendingRequestLimitRefusesAtOnce) {
  // Slow election timing: the leader keeps leading (and holding the writes)
  // for a while after its followers die.
  Cluster c(3, {"--max-pending-requests", "2", "--request-timeout-ms", "4000", "--election-ticks",
                "200"});
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  ASSERT_TRUE(c.PutRetry(leader, "before", "v", milliseconds(5000)));
  ASSERT_TRUE(c.WaitConverged(milliseconds(5000)));
  int follower = (leader + 1) % 3;
  c.Kill(follower);
  c.Kill(3 - leader - follower);
  // Two writes that cannot commit now: they stay pending until they time out.
  std::vector<HttpResponse> held(2);
  std::vector<std::thread> writers;
  for (int i = 0; i < 2; i++) {
    writers.emplace_back([&, i] {
      held[i] = Http(c.http_port(leader), "POST", "/keys/held" + std::to_string(i) + "/",
                     R"({"value":"x"})");
    });
  }
  auto pending = [&] {
    auto st = c.Status(leader);
    return st ? st->at("pending_writes").to_number<uint64_t>() : 0;
  };
  bool full = WaitFor([&] { return pending() == 2; }, milliseconds(3000));
  EXPECT_TRUE(full) << "pending_writes " << pending();
  if (full) {
    auto start = Clock::now();
    HttpResponse r = Http(c.http_port(leader), "POST", "/keys/third/", R"({"value":"x"})");
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_NE(r.body.find("too many pending requests"), std::string::npos) << r.body;
    EXPECT_EQ(r.Header("retry-after"), "1");
    r = Http(c.http_port(leader), "GET", "/keys/before/");
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_NE(r.body.find("too many pending requests"), std::string::npos) << r.body;
    EXPECT_LT(Clock::now() - start, milliseconds(2000)) << "refusals waited for a timeout";
    EXPECT_EQ(Http(c.http_port(leader), "GET", "/keys/before/?stale").body, ValueJson("v"));
  }
  for (auto& t : writers) t.join();
  for (const HttpResponse& r : held) EXPECT_EQ(r.status, 504) << r.body;
  // The slots are free again: with the followers back, writes go through.
  c.Restart(follower);
  c.Restart(3 - leader - follower);
  EXPECT_TRUE(c.PutRetry(leader, "after", "ok", milliseconds(10000)));
}

// Opens a connection, sends `bytes` (maybe nothing), reads whatever comes and
// returns how long the server took to close the connection (nullopt if it
// had not after `limit`). `answer` receives what was read.
std::optional<milliseconds> ClosedAfter(uint16_t port, const std::string& bytes,
                                        std::string* answer, milliseconds limit) {
  namespace asio = boost::asio;
  asio::io_context ioc;
  asio::ip::tcp::socket s(ioc);
  boost::system::error_code ec;
  s.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return std::nullopt;
  if (!bytes.empty()) asio::write(s, asio::buffer(bytes), ec);
  auto start = Clock::now();
  std::optional<milliseconds> closed;
  std::array<char, 4096> buf;
  std::function<void()> read = [&] {
    s.async_read_some(asio::buffer(buf), [&](boost::system::error_code rec, size_t n) {
      answer->append(buf.data(), n);
      if (rec) {
        closed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
        return;
      }
      read();
    });
  };
  read();
  ioc.run_for(limit);
  return closed;
}

// --http-timeout-ms: a connection that sends nothing, stops in the middle of
// a request, or stays idle after an answer, is closed once the timeout
// passes, and not long before.
TEST(ClusterTest, IdleAndStalledConnectionsCloseAfterTheHttpTimeout) {
  Cluster c(1, {"--http-timeout-ms", "600"});
  c.StartAll();
  const std::string whole = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  struct Case {
    const char* what;
    std::string bytes;
  } cases[] = {
      {"idle from the start", ""},
      {"stalled in the header", "GET /health HTTP/1.1\r\nHost: x\r\n"},
      {"stalled in the body",
       "POST /keys/k/ HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"va"},
      {"idle after an answer", whole},
  };
  for (const Case& t : cases) {
    std::string answer;
    std::optional<milliseconds> closed =
        ClosedAfter(c.http_port(0), t.bytes, &answer, milliseconds(8000));
    ASSERT_TRUE(closed.has_value()) << t.what << ": still open after 8 s";
    EXPECT_GE(closed->count(), 500) << t.what << ": closed before the timeout";
    EXPECT_LE(closed->count(), 4000) << t.what;
    if (t.bytes == whole) {
      EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u)
          << answer;  // Answered, kept open, then closed.
    } else {
      EXPECT_EQ(answer, "") << t.what << ": a timed-out request gets no answer";
    }
  }
}

TEST(ClusterTest, EveryErrorStatus) {
  Cluster c(3, {"--max-key-bytes", "64", "--max-value-bytes", "128", "--max-body-bytes", "1024",
                "--request-timeout-ms", "500", "--election-ticks", "40"});
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  int follower = (leader + 1) % 3;
  auto expect_error = [](const HttpResponse& r, int status, const std::string& what) {
    EXPECT_EQ(r.status, status) << what << ": " << r.body;
    json::error_code ec;
    json::value v = json::parse(r.body, ec);
    EXPECT_TRUE(!ec && v.is_object() && v.as_object().contains("error"))
        << what << ": body " << r.body;
    EXPECT_EQ(r.Header("content-type"), "application/json; charset=utf-8") << what;
    if (status == 503) {
      EXPECT_EQ(r.Header("retry-after"), "1") << what;
    }
  };
  for (int i : {leader, follower}) {
    HttpClient cl(c.http_port(i));
    // 400: malformed JSON, missing or non-string value, empty or long key, bad escape.
    expect_error(cl.Post("/keys/k/", "{not json"), 400, "malformed JSON");
    expect_error(cl.Post("/keys/k/", ""), 400, "empty body");
    expect_error(cl.Post("/keys/k/", R"({"val":"x"})"), 400, "missing value");
    expect_error(cl.Post("/keys/k/", R"({"value":5})"), 400, "number value");
    expect_error(cl.Post("/keys/k/", R"({"value":null})"), 400, "null value");
    expect_error(cl.Post("/keys/k/", R"(["value"])"), 400, "array body");
    expect_error(cl.Post("/keys/k/", "{\"value\":\"\xff\"}"), 400, "invalid UTF-8");
    expect_error(cl.Post("/keys//", R"({"value":"x"})"), 400, "empty key");
    expect_error(cl.Get("/keys//"), 400, "empty key (GET)");
    expect_error(cl.Post("/keys/" + std::string(65, 'k') + "/", R"({"value":"x"})"), 400,
                 "key over the limit");
    EXPECT_EQ(cl.Post("/keys/" + std::string(64, 'k') + "/", R"({"value":"x"})").status, 200);
    expect_error(cl.Get("/keys/%zz/"), 400, "bad percent-encoding");
    // 413: body over the limit, value over the limit.
    expect_error(cl.Post("/keys/k/", "{\"value\":\"" + std::string(2000, 'v') + "\"}"), 413,
                 "body over the limit");
    HttpClient cl2(c.http_port(i));
    expect_error(cl2.Post("/keys/k/", "{\"value\":\"" + std::string(129, 'v') + "\"}"), 413,
                 "value over the limit");
    EXPECT_EQ(cl2.Post("/keys/k/", "{\"value\":\"" + std::string(128, 'v') + "\"}").status, 200);
    // 404 and 405.
    expect_error(cl2.Get("/nope"), 404, "unknown path");
    expect_error(cl2.Get("/"), 404, "root");
    expect_error(cl2.Get("/keys/a/b/"), 404, "two segments");
    expect_error(cl2.Get("/keys"), 404, "no key segment");
    HttpResponse r = cl2.Request("PUT", "/keys/k/", R"({"value":"x"})");
    expect_error(r, 405, "PUT key");
    EXPECT_EQ(r.Header("allow"), "GET, POST");
    expect_error(cl2.Request("DELETE", "/keys/k/"), 405, "DELETE key");
    expect_error(cl2.Get("/cluster/join/"), 405, "GET join");
    expect_error(cl2.Post("/status", "{}"), 405, "POST status");
    expect_error(cl2.Post("/health", "{}"), 405, "POST health");
    expect_error(cl2.Post("/cluster/join/", R"({"address":5})"), 400, "bad join address");
    expect_error(cl2.Post("/cluster/join/", R"({"address":"nocolon"})"), 400, "join no port");
  }
  // 431: a header block over the limit.
  HttpClient big(c.http_port(leader));
  HttpResponse r =
      big.Request("GET", "/keys/k/", "",
                  {{"X-Big1", std::string(40000, 'b')}, {"X-Big2", std::string(40000, 'b')}});
  EXPECT_EQ(r.status, 431) << r.body;
  // 504: a write whose outcome is unknown. Both followers die; the leader
  // (slow election timing here, so it does not step down yet) cannot commit.
  c.Kill(follower);
  c.Kill(3 - leader - follower);
  r = Http(c.http_port(leader), "POST", "/keys/unknown/", R"({"value":"maybe"})");
  expect_error(r, 504, "write without quorum");
  EXPECT_NE(r.body.find("unknown"), std::string::npos) << r.body;
  // 503: a linearizable read without a quorum times out as unavailable...
  expect_error(Http(c.http_port(leader), "GET", "/keys/k/"), 503, "read without quorum");
  // ...and once the leader steps down there is no leader at all.
  ASSERT_TRUE(WaitFor([&] { return Role(c, leader) != "Leader"; }, milliseconds(8000)));
  expect_error(Http(c.http_port(leader), "POST", "/keys/k/", R"({"value":"x"})"), 503,
               "write without leader");
  expect_error(Http(c.http_port(leader), "GET", "/keys/k/"), 503, "read without leader");
  // A node that is not in any cluster has no leader either: one that learned
  // the cluster id from the leaderless node but cannot be added (a joiner
  // whose target never answers does not serve at all: it learns the id
  // before it creates anything).
  Cluster lone(1);
  lone.Start(0, false, c.node(leader).http());
  expect_error(Http(lone.http_port(0), "POST", "/keys/k/", R"({"value":"x"})"), 503,
               "write on a lone node");
}

// A flag outside its range stops the process at once with a non-zero exit
// and a message naming the flag, before it opens anything.
TEST(FlagsTest, OutOfRangeLimitsExitNamingTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--max-leases", "0"}, "--max-leases"},
      {{"--max-lease-ttl", "0"}, "--max-lease-ttl"},
      {{"--max-lease-ttl", "315360001"}, "--max-lease-ttl"},
      {{"--max-keepalive-ids", "100001"}, "--max-keepalive-ids"},
      {{"--lease-expiries-per-second", "0"}, "--lease-expiries-per-second"},
      {{"--max-delete-keys", "0"}, "--max-delete-keys"},
  };
  std::string dir = ::testing::TempDir() + "/flags-test";
  std::filesystem::create_directories(dir);
  for (const auto& [flags, name] : cases) {
    std::vector<std::string> argv = {RAFTKV_BIN, "--datadir", dir + "/data"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    std::string log = dir + "/log.txt";
    Process p(argv, log);
    EXPECT_EQ(p.Wait(milliseconds(10000)), 2) << flags[0];
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find(name), std::string::npos) << text;
    EXPECT_FALSE(std::filesystem::exists(dir + "/data")) << "it opened its data directory";
  }
}

}  // namespace
}  // namespace raftkv::itest
