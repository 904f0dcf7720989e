// Watches end to end (issue 12), on real 3-node clusters: every watcher's
// events against the writes the clients saw applied, resuming across leader
// kills, the 410 for a compacted revision, slow consumers, --max-watchers,
// SIGTERM, long polls and Server-Sent Events.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <boost/json.hpp>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "cluster.h"
#include "json_test_util.h"
#include "stream_client.h"

namespace raftkv::itest {
namespace {

namespace json = boost::json;

bool Until(milliseconds timeout, const std::function<bool()>& cond) {
  return WaitFor(cond, timeout);
}
json::object Parse(const std::string& s) { return ParseObject(s); }

// One event as the tests compare them.
struct Ev {
  std::string type;  // "put" or "delete"
  std::string key;
  std::string value;
  uint64_t revision = 0;
  bool operator==(const Ev&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Ev& e) {
  return os << e.revision << ":" << e.type << ":" << e.key << "=" << e.value;
}

void AppendEvents(const json::array& events, std::vector<Ev>* out) {
  for (const json::value& v : events) {
    const json::object& e = v.as_object();
    const json::object& kv = e.at("kv").as_object();
    Ev ev{Str(e.at("type")), Str(kv.at("key")), kv.contains("value") ? Str(kv.at("value")) : "",
          Num(kv.at("mod_revision"))};
    out->push_back(std::move(ev));
  }
}

// The current revision of the cluster, as a linearizable read on node i sees it.
uint64_t Revision(HttpClient& c) {
  HttpResponse r = c.Get("/v1/kv/?prefix&count_only");
  EXPECT_EQ(r.status, 200) << r.body;
  return std::stoull(r.Header("x-raftkv-revision"));
}

// key -> (value, mod_revision) under a prefix, by a linearizable range.
std::map<std::string, std::pair<std::string, uint64_t>> Range(HttpClient& c,
                                                              const std::string& prefix) {
  std::map<std::string, std::pair<std::string, uint64_t>> out;
  HttpResponse r = c.Get("/v1/kv/" + prefix + "?prefix&limit=10000");
  EXPECT_EQ(r.status, 200) << r.body;
  json::object o = Obj(r);
  if (!o.contains("kvs")) return out;
  for (const json::value& v : o.at("kvs").as_array()) {
    const json::object& kv = v.as_object();
    out[Str(kv.at("key"))] = {Str(kv.at("value")), Num(kv.at("mod_revision"))};
  }
  return out;
}

// Replays events over an initial state.
std::map<std::string, std::pair<std::string, uint64_t>> Replay(
    std::map<std::string, std::pair<std::string, uint64_t>> state, const std::vector<Ev>& evs) {
  for (const Ev& e : evs) {
    if (e.type == "put") {
      state[e.key] = {e.value, e.revision};
    } else {
      state.erase(e.key);
    }
  }
  return state;
}

// Reads a stream until it has an "events" or "progress" message at or
// past `revision` (or the deadline); appends the events.
bool ReadThrough(StreamClient& s, uint64_t revision, std::vector<Ev>* out,
                 milliseconds timeout = milliseconds(20000)) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto m = s.Next(milliseconds(500));
    if (!m) {
      if (s.ended()) return false;
      continue;
    }
    json::object o = Parse(*m);
    std::string type = Str(o.at("type"));
    if (type == "events") AppendEvents(o.at("events").as_array(), out);
    if ((type == "events" || type == "progress") && Num(o.at("revision")) >= revision) return true;
    if (type == "canceled") return false;
  }
  return false;
}

// Reads a stream up to its canceled message: appends the events before it,
// checks its reason, and returns the revision it names (0 if none came);
// *last_sent is the revision of the last events message.
uint64_t ReadUntilCanceled(StreamClient& s, const std::string& reason, std::vector<Ev>* out,
                           uint64_t* last_sent) {
  auto deadline = Clock::now() + milliseconds(20000);
  while (Clock::now() < deadline) {
    auto m = s.Next(milliseconds(2000));
    if (!m) return 0;
    json::object o = Parse(*m);
    if (Str(o.at("type")) == "events") {
      AppendEvents(o.at("events").as_array(), out);
      *last_sent = Num(o.at("revision"));
    }
    if (Str(o.at("type")) == "canceled") {
      EXPECT_EQ(Str(o.at("reason")), reason);
      return Num(o.at("revision"));
    }
  }
  return 0;
}

std::string WatchTarget(const std::string& prefix, uint64_t rev, const std::string& extra = "") {
  return "/v1/watch/" + prefix + "?prefix&stream&progress=1s&rev=" + std::to_string(rev) + extra;
}

// --- 1. Every node's watcher equals the applied writes ----------------------

// What one acknowledged write changed under the watched prefix.
struct Acked {
  uint64_t revision;
  std::vector<Ev> events;
};

TEST(WatchTest, WatchersOnEveryNodeSeeExactlyTheAppliedChanges) {
  Cluster cluster(3);
  cluster.StartAll();
  HttpClient c0(cluster.http_port(0));
  const uint64_t start = Revision(c0) + 1;
  // A stream on every node, and a chain of long polls on node 1.
  std::vector<std::unique_ptr<StreamClient>> streams;
  for (int i = 0; i < 3; i++) {
    streams.push_back(
        std::make_unique<StreamClient>(cluster.http_port(i), "GET", WatchTarget("w/", start)));
    auto created = streams.back()->Next(milliseconds(5000));
    ASSERT_TRUE(created) << "node " << i;
    EXPECT_EQ(Str(Parse(*created).at("type")), "created");
  }
  std::vector<Ev> polled;
  std::atomic<bool> writing{true};
  std::atomic<uint64_t> poll_target{0};
  std::thread poller([&] {
    HttpClient c(cluster.http_port(1), milliseconds(15000));
    uint64_t rev = start;
    auto deadline = Clock::now() + milliseconds(60000);
    while (Clock::now() < deadline) {
      HttpResponse r = c.Get("/v1/watch/w/?prefix&wait=2s&limit=7&rev=" + std::to_string(rev));
      if (r.status != 200) continue;
      json::object o = Obj(r);
      AppendEvents(o.at("events").as_array(), &polled);
      rev = Num(o.at("revision")) + 1;
      if (!writing && poll_target != 0 && rev > poll_target) break;
    }
  });

  // 8 clients write, delete and run transactions through all nodes, under
  // the watched prefix and outside it.
  std::mutex mu;
  std::vector<Acked> acked;
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; t++) {
    clients.emplace_back([&, t] {
      HttpClient c(cluster.http_port(t % 3));
      std::mt19937 rng(t + 1);
      for (int i = 0; i < 40; i++) {
        std::string k = "w/k" + std::to_string(rng() % 12);
        std::string v = "t" + std::to_string(t) + "-" + std::to_string(i);
        int what = static_cast<int>(rng() % 10);
        Acked a;
        if (what < 5) {
          HttpResponse r = c.Request("PUT", "/v1/kv/" + k, "{\"value\":\"" + v + "\"}");
          ASSERT_EQ(r.status, 200) << r.body;
          a.revision = Num(Obj(r).at("revision"));
          a.events.push_back(Ev{"put", k, v, a.revision});
        } else if (what < 7) {
          HttpResponse r = c.Request("DELETE", "/v1/kv/" + k);
          ASSERT_EQ(r.status, 200) << r.body;
          a.revision = Num(Obj(r).at("revision"));
          if (Num(Obj(r).at("deleted")) == 1) a.events.push_back(Ev{"delete", k, "", a.revision});
        } else if (what < 9) {
          // Two puts (one outside the prefix) and a delete, atomically.
          std::string k2 = "w/k" + std::to_string(rng() % 12);
          if (k2 == k) k2 = k + "x";
          std::string body = "{\"success\":[{\"put\":{\"key\":\"" + k + "\",\"value\":\"" + v +
                             "\"}},{\"put\":{\"key\":\"o/" + k + "\",\"value\":\"" + v +
                             "\"}},{\"delete\":{\"key\":\"" + k2 + "\"}}]}";
          HttpResponse r = c.Post("/v1/txn", body);
          ASSERT_EQ(r.status, 200) << r.body;
          json::object o = Obj(r);
          a.revision = Num(o.at("revision"));
          a.events.push_back(Ev{"put", k, v, a.revision});
          const json::array& res = o.at("results").as_array();
          if (Num(res[2].as_object().at("delete").as_object().at("deleted")) == 1) {
            a.events.push_back(Ev{"delete", k2, "", a.revision});
          }
        } else {
          HttpResponse r = c.Request("PUT", "/v1/kv/o/" + k, "{\"value\":\"" + v + "\"}");
          ASSERT_EQ(r.status, 200) << r.body;
          continue;  // Outside the prefix: no event expected.
        }
        std::lock_guard lock(mu);
        acked.push_back(std::move(a));
      }
    });
  }
  for (auto& t : clients) t.join();
  writing = false;
  std::sort(acked.begin(), acked.end(),
            [](const Acked& a, const Acked& b) { return a.revision < b.revision; });
  std::vector<Ev> want;
  for (const Acked& a : acked) want.insert(want.end(), a.events.begin(), a.events.end());
  ASSERT_FALSE(want.empty());
  const uint64_t last = acked.back().revision;
  poll_target = last;

  for (int i = 0; i < 3; i++) {
    std::vector<Ev> got;
    ASSERT_TRUE(ReadThrough(*streams[i], last, &got)) << "node " << i << cluster.LogTails();
    EXPECT_EQ(got, want) << "the stream on node " << i;
  }
  poller.join();
  EXPECT_EQ(polled, want) << "the long polls on node 1";
  for (size_t i = 0; i < std::min(polled.size(), want.size()); i++) {
    if (!(polled[i] == want[i])) {
      ADD_FAILURE() << "first difference at " << i << ": " << polled[i] << " vs " << want[i];
      break;
    }
  }
  EXPECT_EQ(polled.size(), want.size());
  // And the events replayed give the state a linearizable range reads.
  EXPECT_EQ(Replay({}, want), Range(c0, "w/"));
}

// --- 2. Resuming across leader kills ------------------------------------------

// A watcher that follows a prefix across node failures: when its stream
// ends it reconnects to the next node with rev = the last revision it was
// sent + 1.
class Follower {
 public:
  Follower(Cluster* cluster, int node, std::string prefix, uint64_t start)
      : cluster_(cluster), node_(node), prefix_(std::move(prefix)), next_(start) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Follower() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // The revision examined so far (everything up to it was delivered).
  uint64_t examined() const { return next_.load() - 1; }
  std::vector<Ev> events() {
    std::lock_guard lock(mu_);
    return events_;
  }
  int reconnects() const { return reconnects_; }
  std::string problems() {
    std::lock_guard lock(mu_);
    return problems_;
  }
  std::string cancels() {
    std::lock_guard lock(mu_);
    return cancels_;
  }

 private:
  void Run() {
    while (!stop_) {
      if (!cluster_->Running(node_)) {
        node_ = (node_ + 1) % cluster_->size();
        continue;
      }
      StreamClient s(cluster_->http_port(node_), "GET", WatchTarget(prefix_, next_));
      if (!s.ReadHead(milliseconds(3000)) || s.status() != 200) {
        node_ = (node_ + 1) % cluster_->size();
        reconnects_++;
        std::this_thread::sleep_for(milliseconds(50));  // Backoff between attempts.
        continue;
      }
      while (!stop_) {
        auto m = s.Next(milliseconds(300));
        if (!m) {
          if (s.ended()) break;
          continue;
        }
        json::object o = Parse(*m);
        std::string type = Str(o.at("type"));
        uint64_t rev = o.contains("revision") ? Num(o.at("revision")) : 0;
        if (type == "events") {
          std::lock_guard lock(mu_);
          if (rev < next_) problems_ += "duplicate or old revision " + std::to_string(rev) + "; ";
          AppendEvents(o.at("events").as_array(), &events_);
          next_ = rev + 1;
        } else if (type == "progress") {
          if (rev + 1 > next_) next_ = rev + 1;
        } else if (type == "canceled") {
          if (rev + 1 > next_) next_ = rev + 1;
          std::lock_guard lock(mu_);
          cancels_ += Str(o.at("reason")) + " ";
          break;
        }
      }
      node_ = (node_ + 1) % cluster_->size();
      reconnects_++;
    }
  }

  Cluster* cluster_;
  std::atomic<int> node_;
  std::string prefix_;
  std::atomic<uint64_t> next_;
  std::atomic<bool> stop_{false};
  std::atomic<int> reconnects_{0};
  std::mutex mu_;
  std::vector<Ev> events_;
  std::string problems_;
  std::string cancels_;
  std::thread thread_;
};

TEST(WatchTest, WatchersResumeOnAnotherNodeAcrossLeaderKillsWithoutGapOrDuplicate) {
  Cluster cluster(3);
  cluster.StartAll();
  uint64_t start;
  {
    HttpClient c(cluster.http_port(0));
    start = Revision(c) + 1;
  }
  std::vector<std::unique_ptr<Follower>> followers;
  for (int i = 0; i < 3; i++)
    followers.push_back(std::make_unique<Follower>(&cluster, i, "f/", start));
  // Writers: every write acknowledged must reach every watcher.
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<uint64_t> acked;
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; t++) {
    writers.emplace_back([&, t] {
      std::mt19937 rng(t + 7);
      int i = 0;
      while (!stop && i < 100000) {
        int node = static_cast<int>(rng() % 3);
        if (!cluster.Running(node)) continue;
        HttpResponse r =
            Http(cluster.http_port(node), "PUT", "/v1/kv/f/k" + std::to_string(rng() % 16),
                 "{\"value\":\"w" + std::to_string(t) + "-" + std::to_string(i++) + "\"}");
        if (r.status == 200) {
          std::lock_guard lock(mu);
          acked.push_back(Num(Obj(r).at("revision")));
        }
      }
    });
  }
  for (int kill = 0; kill < 5; kill++) {
    int leader = cluster.WaitForLeader(milliseconds(10000));
    ASSERT_GE(leader, 0) << cluster.LogTails();
    // Let some writes land under this leader first.
    size_t before;
    {
      std::lock_guard lock(mu);
      before = acked.size();
    }
    ASSERT_TRUE(Until(milliseconds(10000), [&] {
      std::lock_guard lock(mu);
      return acked.size() >= before + 50;
    })) << cluster.LogTails();
    cluster.Kill(leader);
    ASSERT_GE(cluster.WaitForLeader(milliseconds(10000)), 0) << cluster.LogTails();
    cluster.Restart(leader);
  }
  stop = true;
  for (auto& t : writers) t.join();
  ASSERT_TRUE(cluster.WaitConverged(milliseconds(20000)));
  int leader = cluster.WaitForLeader(milliseconds(10000));
  ASSERT_GE(leader, 0);
  HttpClient c(cluster.http_port(leader));
  const uint64_t end = Revision(c);
  auto final_state = Range(c, "f/");
  for (auto& f : followers) {
    EXPECT_TRUE(Until(milliseconds(20000), [&] { return f->examined() >= end; }))
        << "examined " << f->examined() << " of " << end;
    f->Stop();
  }
  std::vector<Ev> first = followers[0]->events();
  std::set<uint64_t> revisions;
  for (const Ev& e : first) revisions.insert(e.revision);
  for (size_t i = 0; i < followers.size(); i++) {
    std::vector<Ev> evs = followers[i]->events();
    EXPECT_EQ(followers[i]->problems(), "") << "watcher " << i;
    EXPECT_GE(followers[i]->reconnects(), 1) << "watcher " << i << " never had to resume";
    std::cerr << "watcher " << i << ": " << evs.size() << " events, " << followers[i]->reconnects()
              << " reconnects, cancels: " << followers[i]->cancels() << "\n";
    // No duplicate: revisions never go back (a txn's events share one).
    for (size_t j = 1; j < evs.size(); j++) {
      ASSERT_LE(evs[j - 1].revision, evs[j].revision) << "watcher " << i << " at " << j;
      if (evs[j - 1].revision == evs[j].revision) {
        ASSERT_NE(evs[j - 1].key, evs[j].key);
      }
    }
    EXPECT_EQ(evs, first) << "watcher " << i << " differs from watcher 0";
    // No gap: the events replay to the state the cluster holds.
    std::vector<Ev> upto;
    for (const Ev& e : evs) {
      if (e.revision <= end) upto.push_back(e);
    }
    EXPECT_EQ(Replay({}, upto), final_state) << "watcher " << i;
  }
  std::lock_guard lock(mu);
  ASSERT_GT(acked.size(), 250u);
  for (uint64_t r : acked) EXPECT_TRUE(revisions.count(r)) << "acknowledged write " << r;
}

// --- 3. History bounds, slow consumers, limits, shutdown --------------------

TEST(WatchTest, ARevisionOlderThanTheHistoryAnswers410) {
  Cluster cluster(3, {"--watch-history-revisions", "10"});
  cluster.StartAll();
  int leader = cluster.WaitForLeader(milliseconds(5000));
  HttpClient c(cluster.http_port(leader));
  uint64_t first = 0;
  for (int i = 0; i < 30; i++) {
    HttpResponse r = c.Request("PUT", "/v1/kv/h/k" + std::to_string(i), R"({"value":"v"})");
    ASSERT_EQ(r.status, 200);
    if (i == 0) first = Num(Obj(r).at("revision"));
  }
  ASSERT_TRUE(cluster.WaitConverged(milliseconds(10000)));
  for (int node = 0; node < 3; node++) {
    uint16_t port = cluster.http_port(node);
    HttpResponse r = Http(port, "GET", "/v1/watch/h/?prefix&rev=" + std::to_string(first));
    ExpectError(r, 410, "compacted", "long poll");
    json::object o = Obj(r);
    uint64_t compact = Num(o.at("compact_revision"));
    EXPECT_GE(compact, first);
    EXPECT_GE(Num(o.at("revision")), compact);
    // The stream form is refused the same way, before it starts.
    StreamClient s(port, "GET", WatchTarget("h/", first));
    EXPECT_EQ(s.ReadBody(milliseconds(5000)).find("\"compacted\"") != std::string::npos, true);
    EXPECT_EQ(s.status(), 410);
    // From compact + 1 it is served: the last 10 revisions with changes.
    r = Http(port, "GET", "/v1/watch/h/?prefix&wait=1s&rev=" + std::to_string(compact + 1));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Obj(r).at("events").as_array().size(), 10u);
    // In a multi-watch stream, the compacted watch is cancelled alone.
    StreamClient m(port, "POST", "/v1/watch?stream",
                   "{\"watches\":[{\"id\":\"old\",\"key\":\"h/\",\"prefix\":true,\"rev\":" +
                       std::to_string(first) +
                       "},{\"id\":\"new\",\"key\":\"h/\",\"prefix\":true}]}");
    // created (old), canceled (old), created (new).
    std::map<std::string, std::string> last_type;
    for (int i = 0; i < 3; i++) {
      auto msg = m.Next(milliseconds(3000));
      ASSERT_TRUE(msg);
      json::object mo = Parse(*msg);
      last_type[Str(mo.at("watch"))] = Str(mo.at("type"));
      if (Str(mo.at("type")) == "canceled") {
        EXPECT_EQ(Str(mo.at("reason")), "compacted");
        EXPECT_EQ(Str(mo.at("watch")), "old");
        EXPECT_GE(Num(mo.at("compact_revision")), first);
      }
    }
    EXPECT_EQ(last_type["old"], "canceled");
    EXPECT_EQ(last_type["new"], "created");
  }
}

uint64_t Watchers(Cluster& cluster, int node) {
  auto st = cluster.Status(node);
  if (!st) return UINT64_MAX;
  return Num(st->at("watch").as_object().at("watchers"));
}

TEST(WatchTest, ASlowConsumerIsCancelledAndResumesFromTheRevisionItWasTold) {
  Cluster cluster(1, {"--watch-buffer-bytes", "65536"});
  cluster.StartAll();
  HttpClient c(cluster.http_port(0));
  const uint64_t start = Revision(c) + 1;
  // A consumer that reads the head and then stops, with a small socket buffer.
  StreamClient slow(cluster.http_port(0), "GET", WatchTarget("s/", start), "", {}, 4096);
  ASSERT_TRUE(slow.Next(milliseconds(5000)));  // created
  // A healthy watcher beside it keeps up.
  StreamClient healthy(cluster.http_port(0), "GET", WatchTarget("s/", start));
  ASSERT_TRUE(healthy.Next(milliseconds(5000)));
  ASSERT_EQ(Watchers(cluster, 0), 2u);
  std::string value(2000, 'x');
  uint64_t last = 0;
  int writes = 0;
  // Writes go on until the slow watcher is gone (bounded).
  while (Watchers(cluster, 0) == 2 && writes < 5000) {
    for (int i = 0; i < 20; i++, writes++) {
      HttpResponse r = c.Request("PUT", "/v1/kv/s/k" + std::to_string(writes % 50),
                                 "{\"value\":\"" + value + "\"}");
      ASSERT_EQ(r.status, 200) << r.body;
      last = Num(Obj(r).at("revision"));
    }
  }
  ASSERT_EQ(Watchers(cluster, 0), 1u)
      << "the slow consumer was not cancelled after " << writes << " writes";
  // Writes still go through while it sits there unread.
  for (int i = 0; i < 50; i++, writes++) {
    HttpResponse r = c.Request("PUT", "/v1/kv/s/k" + std::to_string(i), R"({"value":"after"})");
    ASSERT_EQ(r.status, 200);
    last = Num(Obj(r).at("revision"));
  }
  std::vector<Ev> healthy_events;
  ASSERT_TRUE(ReadThrough(healthy, last, &healthy_events));
  // The slow one reads again: what was sent, then canceled with the last
  // revision it was sent, and the end of the stream.
  std::vector<Ev> got;
  uint64_t last_sent = start - 1;
  uint64_t told = ReadUntilCanceled(slow, "slow_consumer", &got, &last_sent);
  ASSERT_GT(told, 0u) << "no canceled message";
  EXPECT_EQ(told, last_sent);
  EXPECT_LT(told, last);
  EXPECT_FALSE(slow.Next(milliseconds(5000)));
  EXPECT_TRUE(slow.ended());
  // Resuming from told + 1 gives the rest, with no gap.
  StreamClient resumed(cluster.http_port(0), "GET", WatchTarget("s/", told + 1));
  ASSERT_TRUE(ReadThrough(resumed, last, &got));
  EXPECT_EQ(got, healthy_events);
}

TEST(WatchTest, MaxWatchersIsEnforcedAndSlotsComeBack) {
  Cluster cluster(1, {"--max-watchers", "3", "--max-connections", "20"});
  cluster.StartAll();
  uint16_t port = cluster.http_port(0);
  std::vector<std::unique_ptr<StreamClient>> open;
  // A multi-watch stream counts each of its watches.
  open.push_back(std::make_unique<StreamClient>(port, "POST", "/v1/watch?stream",
                                                R"({"watches":[{"key":"a"},{"key":"b"}]})"));
  ASSERT_TRUE(open.back()->Next(milliseconds(5000)));
  open.push_back(std::make_unique<StreamClient>(port, "GET", "/v1/watch/c?stream"));
  ASSERT_TRUE(open.back()->Next(milliseconds(5000)));
  ASSERT_EQ(Watchers(cluster, 0), 3u);
  HttpResponse r = Http(port, "GET", "/v1/watch/d?stream");
  ExpectError(r, 429, "too_many_watchers", "stream past the limit");
  EXPECT_EQ(r.Header("retry-after"), "1");
  ExpectError(Http(port, "GET", "/v1/watch/d?wait=1s"), 429, "too_many_watchers", "long poll");
  // Closing a stream gives its slots back.
  open.front()->Close();
  ASSERT_TRUE(Until(milliseconds(5000), [&] { return Watchers(cluster, 0) == 1; }));
  r = Http(port, "GET", "/v1/watch/d?wait=100ms");
  EXPECT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(Until(milliseconds(5000), [&] { return Watchers(cluster, 0) == 1; }));
  // Streams opened and closed give their connections back too (--max-connections 20).
  for (int i = 0; i < 50; i++) {
    StreamClient s(port, "GET", "/v1/watch/e?stream");
    ASSERT_TRUE(s.Next(milliseconds(5000))) << "stream " << i;
    s.Close();
    ASSERT_TRUE(Until(milliseconds(5000), [&] { return Watchers(cluster, 0) == 1; }));
  }
  EXPECT_EQ(Http(port, "GET", "/health").status, 200);
}

TEST(WatchTest, StreamsEndCleanlyOnSigtermAndLongPollsAnswer) {
  Cluster cluster(1);
  cluster.StartAll();
  uint16_t port = cluster.http_port(0);
  HttpClient c(port);
  HttpResponse w = c.Request("PUT", "/v1/kv/t/a", R"({"value":"1"})");
  ASSERT_EQ(w.status, 200);
  uint64_t rev = Num(Obj(w).at("revision"));
  // A consumer that never reads, with a megabyte of events waiting for it: the node
  // must still stop promptly and cleanly.
  StreamClient stuck(port, "GET", WatchTarget("big/", rev), "", {}, 4096);
  std::string big(100000, 'x');
  for (int i = 0; i < 10; i++) {
    ASSERT_EQ(
        c.Request("PUT", "/v1/kv/big/" + std::to_string(i), "{\"value\":\"" + big + "\"}").status,
        200);
  }
  StreamClient s(port, "GET", WatchTarget("t/", rev));
  StreamClient sse(port, "GET", "/v1/watch/t/?prefix&rev=" + std::to_string(rev), "",
                   {{"Accept", "text/event-stream"}});
  StreamClient poll(port, "GET", "/v1/watch/t/?prefix&wait=60s");
  std::vector<Ev> evs;
  ASSERT_TRUE(ReadThrough(s, rev, &evs));
  ASSERT_TRUE(sse.Next(milliseconds(5000)));
  ASSERT_TRUE(Until(milliseconds(5000), [&] { return Watchers(cluster, 0) == 4; }));
  cluster.Proc(0)->Signal(SIGTERM);
  for (StreamClient* st : {&s, &sse}) {
    std::optional<std::string> last;
    while (auto m = st->Next(milliseconds(5000))) last = m;
    ASSERT_TRUE(last);
    json::object o = Parse(*last);
    EXPECT_EQ(Str(o.at("type")), "canceled");
    EXPECT_EQ(Str(o.at("reason")), "shutdown");
    EXPECT_EQ(Num(o.at("revision")), rev);
    EXPECT_TRUE(st->ended()) << "no last chunk";
  }
  EXPECT_EQ(poll.ReadBody(milliseconds(5000)).find("shutting_down") != std::string::npos, true);
  EXPECT_EQ(poll.status(), 503);
  EXPECT_EQ(cluster.Proc(0)->Wait(milliseconds(10000)), 0);
}

TEST(WatchTest, RequireLeaderEndsStreamsAndRefusesWatchesWhenTheLeaderIsGone) {
  Cluster cluster(3);
  cluster.StartAll();
  int leader = cluster.WaitForLeader(milliseconds(5000));
  int f = (leader + 1) % 3;
  uint16_t port = cluster.http_port(f);
  StreamClient strict(port, "GET", "/v1/watch/r/?prefix&stream&require_leader");
  StreamClient lax(port, "GET", "/v1/watch/r/?prefix&stream&progress=1s");
  ASSERT_TRUE(strict.Next(milliseconds(5000)));
  ASSERT_TRUE(lax.Next(milliseconds(5000)));
  // The other two nodes go: the follower is left without a leader.
  for (int i = 0; i < 3; i++) {
    if (i != f) cluster.Kill(i);
  }
  std::optional<std::string> last;
  while (auto m = strict.Next(milliseconds(10000))) last = m;
  ASSERT_TRUE(last) << "the stream did not end";
  json::object o = Parse(*last);
  EXPECT_EQ(Str(o.at("type")), "canceled");
  EXPECT_EQ(Str(o.at("reason")), "no_leader");
  EXPECT_TRUE(strict.ended());
  // Without require_leader a stream goes on (progress from what the node has).
  auto m = lax.Next(milliseconds(3000));
  ASSERT_TRUE(m);
  EXPECT_EQ(Str(Parse(*m).at("type")), "progress");
  ExpectError(Http(port, "GET", "/v1/watch/r?stream&require_leader"), 503, "no_leader",
              "a new strict stream");
  ExpectError(Http(port, "GET", "/v1/watch/r?wait=1s&require_leader"), 503, "no_leader",
              "a strict long poll");
  EXPECT_EQ(Http(port, "GET", "/v1/watch/r?wait=100ms").status, 200);
}

TEST(WatchTest, ASnapshotFromTheLeaderCancelsTheNodesWatchesWhichResumeElsewhere) {
  Cluster cluster(3, {"--snapshot-entries", "50", "--snapshot-keep-entries", "10"});
  cluster.StartAll();
  int leader = cluster.WaitForLeader(milliseconds(5000));
  int f = (leader + 1) % 3;
  HttpClient c(cluster.http_port(leader));
  const uint64_t start = Revision(c) + 1;
  StreamClient s(cluster.http_port(f), "GET", WatchTarget("z/", start));
  ASSERT_TRUE(s.Next(milliseconds(5000)));
  // The follower stops (SIGSTOP) while the leader writes far past its log: more appends
  // than the leader keeps in flight to it (256), so that it needs a snapshot.
  cluster.Proc(f)->Signal(SIGSTOP);
  uint64_t last = 0;
  const int kWrites = 600;
  for (int i = 0; i < kWrites; i++) {
    HttpResponse r = c.Request("PUT", "/v1/kv/z/" + std::to_string(i % 20), R"({"value":"v"})");
    ASSERT_EQ(r.status, 200) << r.body;
    last = Num(Obj(r).at("revision"));
  }
  cluster.Proc(f)->Signal(SIGCONT);
  // It sends what it applied from the appends already on their way, then installs the
  // snapshot and cancels, naming the last revision it sent.
  std::vector<Ev> got;
  uint64_t last_sent = start - 1;
  uint64_t told = ReadUntilCanceled(s, "snapshot_installed", &got, &last_sent);
  ASSERT_GT(told, 0u) << "no canceled message";
  EXPECT_EQ(told, last_sent);
  EXPECT_LT(told, last);
  auto st = cluster.Status(f);
  ASSERT_TRUE(st);
  EXPECT_GE(Num(st->at("snapshots_installed")), 1u);
  // Here the history now starts after the snapshot: 410; the leader resumes it.
  ExpectError(
      Http(cluster.http_port(f), "GET", "/v1/watch/z/?prefix&rev=" + std::to_string(told + 1)), 410,
      "compacted", "resume on the follower");
  StreamClient again(cluster.http_port(leader), "GET", WatchTarget("z/", told + 1));
  ASSERT_TRUE(ReadThrough(again, last, &got));
  ASSERT_EQ(got.size(), static_cast<size_t>(kWrites));
  for (size_t i = 0; i < got.size(); i++) EXPECT_EQ(got[i].revision, last - kWrites + 1 + i);
}

TEST(WatchTest, WatchesOutliveTheIdleTimeoutAndTheHistoryOutlivesARestart) {
  Cluster cluster(1, {"--http-timeout-ms", "300"});
  cluster.StartAll();
  uint16_t port = cluster.http_port(0);
  HttpClient c(port);
  const uint64_t start = Revision(c) + 1;
  std::vector<uint64_t> revs;
  for (int i = 0; i < 5; i++) {
    HttpResponse r = c.Request("PUT", "/v1/kv/i/" + std::to_string(i), R"({"value":"v"})");
    ASSERT_EQ(r.status, 200);
    revs.push_back(Num(Obj(r).at("revision")));
  }
  // A stream idle for longer than --http-timeout-ms stays open (its progress
  // messages are a second apart), and so does a long poll.
  StreamClient s(port, "GET", WatchTarget("i/", revs.back() + 1));
  ASSERT_TRUE(s.Next(milliseconds(5000)));  // created
  StreamClient poll(port, "GET", "/v1/watch/i/?prefix&wait=1500ms");
  auto p = s.Next(milliseconds(3000));
  ASSERT_TRUE(p) << "the idle stream was closed";
  EXPECT_EQ(Str(Parse(*p).at("type")), "progress");
  EXPECT_NE(poll.ReadBody(milliseconds(5000)).find("\"events\":[]"), std::string::npos);
  EXPECT_EQ(poll.status(), 200);
  // After a restart the history is rebuilt from the log: a watch from before it is served.
  cluster.Terminate(0);
  cluster.Restart(0);
  // (The restarted node may not have applied the last write yet: poll on, from the
  // revision each answer examined.)
  std::vector<Ev> got;
  uint64_t rev = start;
  auto deadline = Clock::now() + milliseconds(10000);
  while (got.size() < 5 && Clock::now() < deadline) {
    HttpResponse r = Http(port, "GET", "/v1/watch/i/?prefix&wait=1s&rev=" + std::to_string(rev));
    ASSERT_EQ(r.status, 200) << r.body;
    json::object o = Obj(r);
    AppendEvents(o.at("events").as_array(), &got);
    rev = Num(o.at("revision")) + 1;
  }
  ASSERT_EQ(got.size(), 5u);
  for (size_t i = 0; i < 5; i++) EXPECT_EQ(got[i].revision, revs[i]);
}

// --- 4. Long polls ---------------------------------------------------------------

TEST(WatchTest, LongPollAnswersOnAMatchOrAtItsDeadlineAndNeverSplitsARevision) {
  Cluster cluster(3);
  cluster.StartAll();
  int leader = cluster.WaitForLeader(milliseconds(5000));
  int follower = (leader + 1) % 3;
  HttpClient c(cluster.http_port(leader));
  HttpClient f(cluster.http_port(follower), milliseconds(15000));
  const uint64_t start = Revision(c) + 1;
  // Nothing yet: the deadline answers with the examined revision.
  auto t0 = Clock::now();
  HttpResponse r = f.Get("/v1/watch/p/?prefix&wait=500ms&rev=" + std::to_string(start));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_GE(Clock::now() - t0, milliseconds(500));
  json::object o = Obj(r);
  EXPECT_TRUE(o.at("events").as_array().empty());
  EXPECT_GE(Num(o.at("revision")), start - 1);
  EXPECT_FALSE(o.at("more").as_bool());
  EXPECT_EQ(r.Header("x-raftkv-revision"), std::to_string(Num(o.at("revision"))));
  // A write to another key does not wake it; one under the prefix does.
  std::thread writer([&] {
    HttpClient w(cluster.http_port(leader));
    // Waits until the poll below is registered, by the watcher count.
    Until(milliseconds(5000), [&] { return Watchers(cluster, follower) == 1; });
    w.Request("PUT", "/v1/kv/other", R"({"value":"x"})");
    w.Request("PUT", "/v1/kv/p/1", R"({"value":"y"})");
  });
  r = f.Get("/v1/watch/p/?prefix&wait=20s&rev=" + std::to_string(start));
  writer.join();
  ASSERT_EQ(r.status, 200) << r.body;
  o = Obj(r);
  ASSERT_EQ(o.at("events").as_array().size(), 1u) << r.body;
  EXPECT_EQ(Str(o.at("events").as_array()[0].as_object().at("kv").as_object().at("key")), "p/1");
  // A txn of three keys and then single puts: with limit=2 the txn's three
  // events come whole, and more says there is more.
  r = c.Post(
      "/v1/txn",
      R"({"success":[{"put":{"key":"p/a","value":"1"}},{"put":{"key":"p/b","value":"1"}},{"put":{"key":"p/c","value":"1"}}]})");
  ASSERT_EQ(r.status, 200);
  uint64_t txn_rev = Num(Obj(r).at("revision"));
  ASSERT_EQ(c.Request("PUT", "/v1/kv/p/d", R"({"value":"1"})").status, 200);
  std::string q =
      "/v1/watch/p/?prefix&wait=1s&limit=2&min_revision=0&rev=" + std::to_string(txn_rev);
  ExpectError(f.Get(q), 400, "invalid_argument", "unknown parameter");
  q = "/v1/watch/p/?prefix&wait=5s&limit=2&rev=" + std::to_string(txn_rev);
  r = f.Get(q);
  ASSERT_EQ(r.status, 200) << r.body;
  o = Obj(r);
  EXPECT_EQ(o.at("events").as_array().size(), 3u) << r.body;
  EXPECT_TRUE(o.at("more").as_bool());
  EXPECT_EQ(Num(o.at("revision")), txn_rev);
  r = f.Get("/v1/watch/p/?prefix&wait=5s&limit=2&rev=" + std::to_string(txn_rev + 1));
  o = Obj(r);
  ASSERT_EQ(o.at("events").as_array().size(), 1u) << r.body;
  EXPECT_EQ(Str(o.at("events").as_array()[0].as_object().at("kv").as_object().at("key")), "p/d");
  // Bad requests.
  ExpectError(f.Get("/v1/watch/?wait=1s"), 400, "invalid_argument", "empty key");
  ExpectError(f.Get("/v1/watch/p?rev=-1"), 400, "invalid_argument", "negative rev");
  ExpectError(f.Get("/v1/watch/p?wait=forever"), 400, "invalid_argument", "bad wait");
  ExpectError(f.Request("PUT", "/v1/watch/p"), 405, "method_not_allowed", "PUT");
  ExpectError(f.Get("/v1/watch"), 405, "method_not_allowed", "GET multi");
  ExpectError(f.Post("/v1/watch", R"({"watches":[{"key":"a"}]})"), 400, "invalid_argument",
              "multi without stream");
  ExpectError(f.Post("/v1/watch?stream", R"({"watches":[]})"), 400, "invalid_argument",
              "no watches");
  ExpectError(
      f.Post("/v1/watch?stream", R"({"watches":[{"key":"a","id":"x"},{"key":"b","id":"x"}]})"), 400,
      "duplicate_key", "two ids alike");
  ExpectError(f.Post("/v1/watch?stream", R"({"watches":[{"key":"a","bogus":1}]})"), 400,
              "invalid_argument", "unknown field");
  std::string many = "{\"watches\":[";
  for (int i = 0; i < 65; i++) many += std::string(i ? "," : "") + "{\"key\":\"k\"}";
  ExpectError(f.Post("/v1/watch?stream", many + "]}"), 400, "too_many_ops", "65 watches");
  // Nothing leaked a watcher slot.
  EXPECT_TRUE(Until(milliseconds(5000), [&] { return Watchers(cluster, follower) == 0; }));
}

TEST(WatchTest, LongPollsAnsweredFromTheHistoryLeaveNothingBehind) {
  Cluster cluster(1, {"--max-connections", "20"});
  cluster.StartAll();
  uint16_t port = cluster.http_port(0);
  HttpClient c(port);
  HttpResponse w = c.Request("PUT", "/v1/kv/lp", R"({"value":"1"})");
  ASSERT_EQ(w.status, 200);
  const std::string target = "/v1/watch/lp?rev=" + std::to_string(Num(Obj(w).at("revision")));
  // Each on a connection of its own, answered at once from the history: 50 of them
  // with at most 20 connections open at a time.
  for (int i = 0; i < 50; i++) {
    HttpResponse r = Http(port, "GET", target);
    ASSERT_EQ(r.status, 200) << "poll " << i << ": " << r.body;
    EXPECT_EQ(Obj(r).at("events").as_array().size(), 1u);
  }
  EXPECT_EQ(Http(port, "GET", "/health").status, 200);
  EXPECT_EQ(Watchers(cluster, 0), 0u);
}

TEST(WatchTest, ALongPollForARevisionNotYetAppliedWaitsForIt) {
  Cluster cluster(1);
  cluster.StartAll();
  HttpClient c(cluster.http_port(0));
  const uint64_t now = Revision(c);
  std::atomic<bool> answered{false};
  HttpResponse r;
  std::thread poller([&] {
    r = Http(cluster.http_port(0), "GET", "/v1/watch/fut?wait=20s&rev=" + std::to_string(now + 3));
    answered = true;
  });
  ASSERT_TRUE(Until(milliseconds(5000), [&] { return Watchers(cluster, 0) == 1; }));
  // Revisions now+1 and now+2 change the key; the poll wants now+3 onward.
  ASSERT_EQ(c.Request("PUT", "/v1/kv/fut", R"({"value":"1"})").status, 200);
  ASSERT_EQ(c.Request("PUT", "/v1/kv/fut", R"({"value":"2"})").status, 200);
  EXPECT_FALSE(answered.load());
  ASSERT_EQ(c.Request("PUT", "/v1/kv/fut", R"({"value":"3"})").status, 200);
  poller.join();
  ASSERT_EQ(r.status, 200) << r.body;
  json::array evs = Obj(r).at("events").as_array();
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(Str(evs[0].as_object().at("kv").as_object().at("value")), "3");
}

// --- 5. Server-Sent Events -----------------------------------------------------

TEST(WatchTest, ServerSentEventsCarryTheRevisionAsIdAndResumeFromLastEventId) {
  Cluster cluster(1, {"--cors-origins", "http://example.test"});
  cluster.StartAll();
  uint16_t port = cluster.http_port(0);
  HttpClient c(port);
  const uint64_t start = Revision(c) + 1;
  StreamClient sse(port, "GET", "/v1/watch/e/?prefix&progress=1s&rev=" + std::to_string(start), "",
                   {{"Accept", "text/event-stream"}, {"Origin", "http://example.test"}});
  ASSERT_TRUE(sse.Next(milliseconds(5000)));  // created
  EXPECT_EQ(sse.Header("content-type"), "text/event-stream");
  EXPECT_EQ(sse.Header("access-control-allow-origin"), "http://example.test");
  std::vector<uint64_t> revs;
  for (int i = 0; i < 3; i++) {
    HttpResponse r = c.Request("PUT", "/v1/kv/e/" + std::to_string(i), R"({"value":"v"})");
    revs.push_back(Num(Obj(r).at("revision")));
  }
  for (uint64_t want : revs) {
    std::string id;
    auto m = sse.Next(milliseconds(5000), &id);
    ASSERT_TRUE(m);
    EXPECT_EQ(id, std::to_string(want));
    EXPECT_EQ(Num(Parse(*m).at("revision")), want);
  }
  // Idle: progress, with the revision as id too.
  std::string id;
  auto p = sse.Next(milliseconds(5000), &id);
  ASSERT_TRUE(p);
  EXPECT_EQ(Str(Parse(*p).at("type")), "progress");
  EXPECT_EQ(id, std::to_string(revs.back()));
  // A reconnect with Last-Event-ID = the first event's id resumes after it,
  // whatever the URL's rev says.
  StreamClient again(port, "GET", "/v1/watch/e/?prefix&rev=" + std::to_string(start), "",
                     {{"Accept", "text/event-stream"}, {"Last-Event-ID", std::to_string(revs[0])}});
  ASSERT_TRUE(again.Next(milliseconds(5000)));  // created
  auto m = again.Next(milliseconds(5000), &id);
  ASSERT_TRUE(m);
  EXPECT_EQ(id, std::to_string(revs[1]));
  // Other origins get no CORS header.
  HttpResponse r = c.Request("GET", "/v1/kv/e/0", "", {{"Origin", "http://evil.test"}});
  EXPECT_EQ(r.Header("access-control-allow-origin"), "");
  r = c.Request("OPTIONS", "/v1/kv/e/0", "", {{"Origin", "http://example.test"}});
  EXPECT_EQ(r.status, 204);
  EXPECT_NE(r.Header("access-control-allow-methods").find("PUT"), std::string::npos);
}

}  // namespace
}  // namespace raftkv::itest
