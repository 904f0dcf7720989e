// Operator endpoints on real clusters (issue 14): /metrics and /ready.

#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <sstream>
#include <string>

#include "cluster.h"
#include "json_test_util.h"
#include "wait.h"

namespace raftkv::itest {
namespace {

using std::chrono::milliseconds;

// One scrape: every sample by its series ("name{labels}" as written), and the
// families' TYPE lines. Fails the test on a line that is neither.
struct Scrape {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  std::string text;

  double Get(const std::string& series) const {
    auto it = samples.find(series);
    return it == samples.end() ? -1 : it->second;
  }
  bool Has(const std::string& series) const { return samples.contains(series); }
};

Scrape ScrapeNode(uint16_t port) {
  Scrape s;
  HttpResponse r = Http(port, "GET", "/metrics");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.Header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  s.text = r.body;
  std::istringstream in(r.body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("# TYPE ")) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      s.types[name] = type;
      continue;
    }
    if (line.starts_with("# HELP ")) continue;
    size_t sp = line.rfind(' ');
    EXPECT_NE(sp, std::string::npos) << line;
    if (sp == std::string::npos) continue;
    s.samples[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return s;
}

std::string Requests(const std::string& route, const std::string& method, int code) {
  return "raftkv_http_requests_total{route=\"" + route + "\",method=\"" + method + "\",code=\"" +
         std::to_string(code) + "\"}";
}

TEST(MetricsTest, EveryNodeReportsItsFiguresWithoutKeysAndTheyMoveWithTheLoad) {
  Cluster cluster(3);
  cluster.StartAll();
  const int leader = cluster.WaitForLeader(milliseconds(5000));
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % 3;
  ASSERT_TRUE(cluster.WaitConverged(milliseconds(5000)));
  // Heartbeats have gone round, so the leader has round trips to both peers.
  ASSERT_TRUE(WaitFor(
      [&] {
        Scrape s = ScrapeNode(cluster.http_port(leader));
        for (int i = 0; i < 3; i++) {
          if (i == leader) continue;
          std::string c = "raftkv_network_peer_round_trip_time_seconds_count{to=\"" +
                          cluster.node(i).name + "\"}";
          if (s.Get(c) < 1) return false;
        }
        return true;
      },
      milliseconds(5000)));

  Scrape before = ScrapeNode(cluster.http_port(leader));
  const int kWrites = 50;
  HttpClient c(cluster.http_port(leader));
  for (int i = 0; i < kWrites; i++) {
    HttpResponse r =
        c.Request("PUT", "/v1/kv/secret-key-" + std::to_string(i), "{\"value\":\"v\"}");
    ASSERT_EQ(r.status, 200) << r.body;
  }
  HttpClient fc(cluster.http_port(follower));
  ASSERT_EQ(fc.Request("PUT", "/v1/kv/secret-key-forwarded", "{\"value\":\"v\"}").status, 200);
  ASSERT_TRUE(cluster.WaitConverged(milliseconds(5000)));

  double is_leader = 0;
  uint64_t term = 0;
  for (int i = 0; i < 3; i++) {
    SCOPED_TRACE(cluster.node(i).name);
    Scrape s = ScrapeNode(cluster.http_port(i));
    EXPECT_EQ(s.text.find("secret-key"), std::string::npos) << "a key in a label";
    EXPECT_EQ(s.Get("raftkv_server_has_leader"), 1);
    is_leader += s.Get("raftkv_server_is_leader");
    if (i == 0) term = static_cast<uint64_t>(s.Get("raftkv_server_term"));
    EXPECT_EQ(s.Get("raftkv_server_term"), static_cast<double>(term));
    EXPECT_GE(s.Get("raftkv_server_applied_index"), kWrites + 1.0);
    EXPECT_EQ(s.Get("raftkv_server_keys"), kWrites + 1.0);
    EXPECT_EQ(s.Get("raftkv_server_members{role=\"voter\"}"), 3);
    EXPECT_EQ(s.Get("raftkv_server_storage_healthy"), 1);
    // Every write was fsynced on every node.
    EXPECT_GE(s.Get("raftkv_disk_wal_fsync_duration_seconds_count"), 1);
    EXPECT_GT(s.Get("raftkv_disk_wal_write_bytes_total"), kWrites * 30.0);
    EXPECT_GT(s.Get("process_resident_memory_bytes"), 1e6);
    EXPECT_GT(s.Get("process_open_fds"), 5);
    EXPECT_EQ(s.types["raftkv_http_request_duration_seconds"], "histogram");
    EXPECT_EQ(s.types["raftkv_http_requests_total"], "counter");
    // Raft traffic both ways between the leader and each follower (followers
    // do not talk to each other).
    for (int j = 0; j < 3; j++) {
      if (j == i || (i != leader && j != leader)) continue;
      EXPECT_GT(s.Get("raftkv_network_peer_sent_bytes_total{to=\"" + cluster.node(j).name + "\"}"),
                0)
          << cluster.node(j).name;
      EXPECT_GT(
          s.Get("raftkv_network_peer_received_bytes_total{from=\"" + cluster.node(j).name + "\"}"),
          0)
          << cluster.node(j).name;
    }
  }
  EXPECT_EQ(is_leader, 1);

  // The leader answered exactly the 50 puts, plus the one the follower forwarded.
  Scrape after = ScrapeNode(cluster.http_port(leader));
  const std::string puts = Requests("/v1/kv/{key}", "PUT", 200);
  EXPECT_EQ(after.Get(puts) - std::max(0.0, before.Get(puts)), kWrites + 1.0);
  EXPECT_GE(after.Get("raftkv_http_request_duration_seconds_count{route=\"/v1/kv/{key}\","
                      "method=\"PUT\"}"),
            kWrites + 1.0);
  // The follower forwarded one and counted it as a request of its own.
  Scrape fs = ScrapeNode(cluster.http_port(follower));
  EXPECT_EQ(fs.Get("raftkv_http_forwarded_total"), 1);
  EXPECT_EQ(fs.Get(puts), 1);
  // A route that does not exist is counted as such, never by its path.
  EXPECT_EQ(Http(cluster.http_port(follower), "GET", "/no/such/secret-key").status, 404);
  fs = ScrapeNode(cluster.http_port(follower));
  EXPECT_EQ(fs.Get(Requests("other", "GET", 404)), 1);
  EXPECT_EQ(fs.text.find("secret-key"), std::string::npos);

  // A leader change is seen by the survivors.
  Scrape f_before = ScrapeNode(cluster.http_port(follower));
  cluster.Kill(leader);
  ASSERT_GE(cluster.WaitForLeader(milliseconds(10000), term + 1), 0);
  ASSERT_TRUE(WaitFor(
      [&] {
        return ScrapeNode(cluster.http_port(follower))
                   .Get("raftkv_server_leader_changes_seen_total") >
               f_before.Get("raftkv_server_leader_changes_seen_total");
      },
      milliseconds(5000)));
}

TEST(ReadyTest, ReadyWithALeaderAndNotWithoutOne) {
  Cluster cluster(3);
  cluster.StartAll();
  ASSERT_TRUE(cluster.WaitConverged(milliseconds(5000)));
  for (int i = 0; i < 3; i++) {
    HttpResponse r = Http(cluster.http_port(i), "GET", "/ready");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, R"({"ready":true})");
    r = Http(cluster.http_port(i), "GET", "/ready?linearizable");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Http(cluster.http_port(i), "POST", "/ready").status, 405);
  }
  // Alone, a node loses its leader (or, as the leader, steps down): not ready, with the reason.
  cluster.Kill(1);
  cluster.Kill(2);
  HttpResponse last;
  ASSERT_TRUE(WaitFor(
      [&] {
        last = Http(cluster.http_port(0), "GET", "/ready");
        if (last.status != 503) return false;
        boost::json::object o = Obj(last);
        if (o.at("ready") != false) return false;
        for (const auto& reason : o.at("reasons").as_array()) {
          std::string s = Str(reason);
          if (s == "no_leader" || s.starts_with("leader_silent ")) return true;
        }
        return false;
      },
      milliseconds(10000)))
      << last.status << " " << last.body;
  EXPECT_EQ(last.Header("retry-after"), "1");
  // /health stays the liveness probe: the process and its disk work.
  EXPECT_EQ(Http(cluster.http_port(0), "GET", "/health").status, 200);
  // Back with a quorum, ready again.
  cluster.Restart(1);
  ASSERT_TRUE(WaitFor([&] { return Http(cluster.http_port(0), "GET", "/ready").status == 200; },
                      milliseconds(10000)));
  ASSERT_TRUE(WaitFor([&] { return Http(cluster.http_port(1), "GET", "/ready").status == 200; },
                      milliseconds(10000)));
  EXPECT_EQ(Http(cluster.http_port(1), "GET", "/ready?linearizable").status, 200);
}

}  // namespace
}  // namespace raftkv::itest
