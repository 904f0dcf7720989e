// Membership over HTTP on real clusters (issue 14): /v1/members and
// /v1/leader/transfer (docs/http-api.md, "Membership").

#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster.h"
#include "json_test_util.h"
#include "wait.h"

namespace raftkv::itest {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// name -> role, from GET /v1/members on node i (empty if it did not answer 200).
std::map<std::string, std::string> Roles(Cluster& c, int i) {
  std::map<std::string, std::string> roles;
  HttpResponse r = Http(c.http_port(i), "GET", "/v1/members");
  if (r.status != 200) return roles;
  const boost::json::object o = Obj(r);  // Kept: the loop walks into it.
  for (const auto& m : o.at("members").as_array()) {
    roles[Str(m.at("id"))] = Str(m.at("role"));
  }
  return roles;
}

std::string MemberBody(const NodeInfo& n, const std::string& promote) {
  return "{\"id\":\"" + n.name + "\",\"raft\":\"" + n.raft() + "\",\"http\":\"" + n.http() +
         "\",\"promote\":\"" + promote + "\"}";
}

// Sequential writes through the given nodes, in turn, until stopped; every
// answer must be 200 (a membership change must not fail a write).
class Writer {
 public:
  Writer(Cluster& c, std::vector<int> nodes) : cluster_(c), nodes_(std::move(nodes)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Writer() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int written() const { return written_; }
  std::vector<std::string> failures() {
    std::lock_guard lock(mu_);
    return failures_;
  }

 private:
  void Run() {
    std::vector<std::unique_ptr<HttpClient>> clients;
    for (int n : nodes_) clients.push_back(std::make_unique<HttpClient>(cluster_.http_port(n)));
    for (int i = 0; !stop_ && i < 100000; i++) {
      HttpClient& c = *clients[i % clients.size()];
      HttpResponse r = c.Request("PUT", "/v1/kv/w-" + std::to_string(i),
                                 "{\"value\":\"" + std::to_string(i) + "\"}");
      if (r.status != 200) {
        std::lock_guard lock(mu_);
        failures_.push_back("w-" + std::to_string(i) + ": " + std::to_string(r.status) + " " +
                            r.body + r.error);
      }
      written_ = i + 1;
    }
  }

  Cluster& cluster_;
  std::vector<int> nodes_;
  std::atomic<bool> stop_{false};
  std::atomic<int> written_{0};
  std::mutex mu_;
  std::vector<std::string> failures_;
  std::thread thread_;
};

TEST(MembersTest, GrowFromThreeToFiveAndShrinkBackWhileWritesRunWithNoFailedWrite) {
  Cluster cluster(3);
  cluster.StartAll();
  const int leader = cluster.WaitForLeader(milliseconds(5000));
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % 3;
  auto roles = Roles(cluster, follower);
  EXPECT_EQ(roles.size(), 3u);
  for (const auto& [name, role] : roles) EXPECT_EQ(role, "voter") << name;

  Writer writer(cluster, {0, 1, 2});
  ASSERT_TRUE(WaitFor([&] { return writer.written() >= 20; }, milliseconds(5000)));

  // node4: added through a follower (forwarded), promoted by the leader once caught up.
  const int n4 = cluster.AddNode();
  HttpResponse r = Http(cluster.http_port(follower), "POST", "/v1/members",
                        MemberBody(cluster.node(n4), "auto"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Str(Obj(r).at("role")), "learner");
  EXPECT_EQ(Str(Obj(r).at("id")), cluster.node(n4).name);
  cluster.Start(n4, false, cluster.node(leader).http());
  ASSERT_TRUE(WaitFor([&] { return Roles(cluster, leader)[cluster.node(n4).name] == "voter"; },
                      milliseconds(15000)))
      << cluster.LogTails();

  // node5: added with manual promotion; it stays a learner until promoted.
  const int n5 = cluster.AddNode();
  r = Http(cluster.http_port(leader), "POST", "/v1/members",
           MemberBody(cluster.node(n5), "manual"));
  ASSERT_EQ(r.status, 201) << r.body;
  // A learner cannot lead.
  r = Http(cluster.http_port(follower), "POST", "/v1/leader/transfer",
           "{\"to\":\"" + cluster.node(n5).name + "\"}");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(Str(Obj(r).at("code")), "not_voter") << r.body;
  cluster.Start(n5, false, cluster.node(leader).http());
  HttpResponse promote;
  ASSERT_TRUE(WaitFor(
      [&] {
        promote = Http(cluster.http_port(follower), "POST",
                       "/v1/members/" + cluster.node(n5).name + "/promote", "");
        return promote.status == 200;
      },
      milliseconds(15000), milliseconds(100)))
      << promote.status << " " << promote.body;
  EXPECT_EQ(Str(Obj(promote).at("role")), "voter");
  // node5 itself learns its promotion from the leader, a moment later.
  ASSERT_TRUE(WaitFor(
      [&] {
        roles = Roles(cluster, n5);
        if (roles.size() != 5) return false;
        for (const auto& [name, role] : roles) {
          if (role != "voter") return false;
        }
        return true;
      },
      milliseconds(5000)));
  // Promoting a voter again is a conflict.
  r = Http(cluster.http_port(leader), "POST", "/v1/members/" + cluster.node(n5).name + "/promote",
           "");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(Str(Obj(r).at("code")), "not_learner") << r.body;

  // Shrink back to the first three, through a follower.
  for (int n : {n5, n4}) {
    r = Http(cluster.http_port(follower), "DELETE", "/v1/members/" + cluster.node(n).name);
    ASSERT_EQ(r.status, 200) << r.body;
    cluster.Kill(n);
  }
  ASSERT_TRUE(WaitFor([&] { return Roles(cluster, follower).size() == 3; }, milliseconds(5000)));
  const int before = writer.written();
  ASSERT_TRUE(WaitFor([&] { return writer.written() >= before + 20; }, milliseconds(5000)));
  writer.Stop();
  EXPECT_TRUE(writer.failures().empty())
      << writer.failures().size() << " writes failed, first: " << writer.failures().front();
  // Every write is there.
  HttpClient c(cluster.http_port(leader));
  for (int i = 0; i < writer.written(); i += 7) {
    r = c.Get("/v1/kv/w-" + std::to_string(i));
    ASSERT_EQ(r.status, 200) << i << " " << r.body;
  }
  std::printf("membership: %d writes while growing 3 -> 5 -> 3, %zu failed\n", writer.written(),
              writer.failures().size());
}

TEST(MembersTest, ReplaceADeadNodeAndRefuseARemovalThatWouldLoseTheQuorum) {
  Cluster cluster(3);
  cluster.StartAll();
  const int leader = cluster.WaitForLeader(milliseconds(5000));
  ASSERT_GE(leader, 0);
  const int dead = (leader + 1) % 3, alive = (leader + 2) % 3;
  cluster.Kill(dead);
  // The leader counts a voter active for an election timeout after its last
  // message: wait until it has noticed the silence.
  ASSERT_TRUE(WaitFor(
      [&] {
        HttpResponse m = Http(cluster.http_port(leader), "GET", "/v1/members");
        if (m.status != 200) return false;
        const boost::json::object o = Obj(m);
        for (const auto& x : o.at("members").as_array()) {
          if (Str(x.at("id")) == cluster.node(dead).name &&
              x.as_object().contains("last_heard_ms")) {
            return Num(x.at("last_heard_ms")) > 1500;
          }
        }
        return false;
      },
      milliseconds(5000)));
  // Leadership is not handed to a node that does not answer.
  HttpResponse t = Http(cluster.http_port(alive), "POST", "/v1/leader/transfer",
                        "{\"to\":\"" + cluster.node(dead).name + "\"}");
  ExpectError(t, 409, "not_active", "a transfer to a dead voter");
  // Removing the live follower would leave the leader and a dead node: refused.
  HttpResponse r =
      Http(cluster.http_port(alive), "DELETE", "/v1/members/" + cluster.node(alive).name);
  ASSERT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(Str(Obj(r).at("code")), "would_lose_quorum") << r.body;
  EXPECT_EQ(Roles(cluster, leader).size(), 3u);
  // The dead one may go: two voters left, both answering.
  r = Http(cluster.http_port(alive), "DELETE", "/v1/members/" + cluster.node(dead).name);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(WaitFor([&] { return Roles(cluster, alive).size() == 2; }, milliseconds(5000)));
  // Its replacement starts on an empty data directory and becomes a voter.
  const int fresh = cluster.AddNode();
  r = Http(cluster.http_port(leader), "POST", "/v1/members",
           MemberBody(cluster.node(fresh), "auto"));
  ASSERT_EQ(r.status, 201) << r.body;
  cluster.Start(fresh, false, cluster.node(leader).http());
  ASSERT_TRUE(WaitFor([&] { return Roles(cluster, leader)[cluster.node(fresh).name] == "voter"; },
                      milliseconds(15000)))
      << cluster.LogTails();
  // The cluster works through the new node, and survives losing the old leader.
  ASSERT_EQ(Http(cluster.http_port(fresh), "PUT", "/v1/kv/after", "{\"value\":\"x\"}").status, 200);
  cluster.Kill(leader);
  ASSERT_GE(cluster.WaitForLeader(milliseconds(10000)), 0);
  ASSERT_TRUE(WaitFor(
      [&] {
        HttpResponse g = Http(cluster.http_port(fresh), "GET", "/v1/kv/after");
        return g.status == 200 && g.body.find("\"x\"") != std::string::npos;
      },
      milliseconds(10000)));
  // The unknown, the malformed and the duplicate.
  EXPECT_EQ(Http(cluster.http_port(alive), "DELETE", "/v1/members/nobody").status, 404);
  EXPECT_EQ(Http(cluster.http_port(alive), "POST", "/v1/members", "{").status, 400);
  EXPECT_EQ(Http(cluster.http_port(alive), "POST", "/v1/members", "{\"id\":\"x\"}").status, 400);
  EXPECT_EQ(Http(cluster.http_port(alive), "POST", "/v1/members",
                 "{\"id\":\"x\",\"raft\":\"127.0.0.1:1\",\"promote\":\"later\"}")
                .status,
            400);
  r = Http(cluster.http_port(alive), "POST", "/v1/members",
           MemberBody(cluster.node(fresh), "auto"));
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(Str(Obj(r).at("code")), "member_exists") << r.body;
  EXPECT_EQ(Http(cluster.http_port(alive), "GET", "/v1/members/" + cluster.node(alive).name).status,
            405);
  EXPECT_EQ(Http(cluster.http_port(alive), "PUT", "/v1/members").status, 405);
}

TEST(MembersTest, LeadershipMovesToTheChosenNodeWithinASecondAndAwayFromARemovedLeader) {
  Cluster cluster(3);
  cluster.StartAll();
  int leader = cluster.WaitForLeader(milliseconds(5000));
  ASSERT_GE(leader, 0);
  for (int round = 0; round < 3; round++) {
    const int target = (leader + 1 + round % 2) % 3;
    // The request goes through the third node, once it knows the leader (just after a
    // transfer it may not yet, and answers 503 no_leader).
    const int via = (leader + 2) % 3;
    ASSERT_TRUE(WaitFor(
        [&] {
          auto st = cluster.Status(via);
          return st && st->at("leader").is_object() &&
                 Str(st->at("leader").at("id")) == cluster.node(leader).name;
        },
        milliseconds(5000)));
    const auto start = Clock::now();
    HttpResponse r = Http(cluster.http_port(via), "POST", "/v1/leader/transfer",
                          "{\"to\":\"" + cluster.node(target).name + "\"}");
    const double took = std::chrono::duration<double>(Clock::now() - start).count();
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Str(Obj(r).at("leader")), cluster.node(target).name);
    EXPECT_LT(took, 1.0) << "the transfer took " << took << " s";
    auto st = cluster.Status(target);
    ASSERT_TRUE(st);
    EXPECT_EQ(Str(st->at("role")), "Leader");
    std::printf("transfer %d: %s leads after %.3f s\n", round, cluster.node(target).name.c_str(),
                took);
    leader = target;
  }
  // Without "to": the most up-to-date voter.
  HttpResponse r = Http(cluster.http_port(leader), "POST", "/v1/leader/transfer", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(Str(Obj(r).at("leader")), cluster.node(leader).name);
  leader = cluster.WaitForLeader(milliseconds(5000));
  ASSERT_GE(leader, 0);
  EXPECT_EQ(Http(cluster.http_port(leader), "POST", "/v1/leader/transfer", "{\"to\":7}").status,
            400);
  EXPECT_EQ(
      Http(cluster.http_port(leader), "POST", "/v1/leader/transfer", "{\"to\":\"nobody\"}").status,
      404);
  // Removing the leader hands leadership over first; the others go on.
  const int removed = leader;
  r = Http(cluster.http_port(removed), "DELETE", "/v1/members/" + cluster.node(removed).name);
  ASSERT_EQ(r.status, 200) << r.body;
  cluster.Kill(removed);
  const int next = cluster.WaitForLeader(milliseconds(5000));
  ASSERT_GE(next, 0);
  EXPECT_NE(next, removed);
  auto roles = Roles(cluster, next);
  EXPECT_EQ(roles.size(), 2u);
  EXPECT_FALSE(roles.contains(cluster.node(removed).name));
  EXPECT_EQ(Http(cluster.http_port(next), "PUT", "/v1/kv/k", "{\"value\":\"v\"}").status, 200);
}

}  // namespace
}  // namespace raftkv::itest
