// The /v1 data API end to end (issue 11): one 3-node cluster of real
// processes shared by the tests of this file, every route, method and error
// code, and two concurrency checks (a CAS counter, a transfer between keys).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "cluster.h"
#include "json_test_util.h"

namespace raftkv::itest {
namespace {

namespace json = boost::json;

// Small limits, so that each is crossed cheaply.
const std::vector<std::string> kFlags = {"--max-txn-ops",     "8",   "--max-range-limit", "50",
                                         "--max-delete-keys", "20",  "--max-value-bytes", "1000",
                                         "--max-range-bytes", "4000"};

class V1Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new Cluster(3, kFlags);
    cluster_->StartAll();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << cluster_->LogTails();
  }

  static int Leader() {
    int l = cluster_->WaitForLeader(milliseconds(5000));
    EXPECT_GE(l, 0);
    return l;
  }
  static int Follower() { return (Leader() + 1) % 3; }
  static uint16_t Port(int i) { return cluster_->http_port(i); }

  static Cluster* cluster_;
};
Cluster* V1Test::cluster_ = nullptr;

HttpResponse Put(HttpClient& c, const std::string& key, const std::string& value,
                 const std::string& query = "",
                 const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  json::object body;
  body["value"] = value;
  return c.Request("PUT", "/v1/kv/" + key + query, json::serialize(body), headers);
}

TEST_F(V1Test, SingleKeyLifecycleOnLeaderAndFollower) {
  for (int node : {Leader(), Follower()}) {
    HttpClient c(Port(node));
    std::string key = "life/" + std::to_string(node);
    HttpResponse r = c.Get("/v1/kv/" + key);
    ExpectError(r, 404, "key_not_found", "missing key");
    EXPECT_FALSE(r.Header("x-raftkv-revision").empty());

    r = Put(c, key, "one");
    ASSERT_EQ(r.status, 200) << r.body;
    json::object o = Obj(r);
    uint64_t rev = Num(o.at("revision"));
    json::object kv = o.at("kv").as_object();
    EXPECT_EQ(Str(kv.at("key")), key);
    EXPECT_EQ(Str(kv.at("value")), "one");
    EXPECT_EQ(Num(kv.at("create_revision")), rev);
    EXPECT_EQ(Num(kv.at("mod_revision")), rev);
    EXPECT_EQ(Num(kv.at("version")), 1u);
    EXPECT_EQ(Num(kv.at("lease")), 0u);
    // A write's own revision, the term, the node that answered (the leader,
    // through forwarding) and the leader's HTTP address.
    EXPECT_EQ(r.Header("x-raftkv-revision"), std::to_string(rev));
    EXPECT_FALSE(r.Header("x-raftkv-raft-term").empty());
    EXPECT_EQ(r.Header("x-raftkv-leader"), cluster_->node(Leader()).http());
    EXPECT_EQ(r.Header("x-raftkv-node"), cluster_->node(Leader()).name);

    r = c.Get("/v1/kv/" + key);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Str(Obj(r).at("value")), "one");
    EXPECT_EQ(r.Header("etag"), "\"" + std::to_string(rev) + "\"");
    EXPECT_GE(std::stoull(r.Header("x-raftkv-revision")), rev);
    EXPECT_EQ(r.Header("x-raftkv-node"), cluster_->node(node).name);

    r = c.Request("POST", "/v1/kv/" + key, R"({"value":"two"})");
    ASSERT_EQ(r.status, 200) << r.body;
    kv = Obj(r).at("kv").as_object();
    EXPECT_EQ(Num(kv.at("create_revision")), rev);
    EXPECT_EQ(Num(kv.at("version")), 2u);
    uint64_t rev2 = Num(kv.at("mod_revision"));
    EXPECT_GT(rev2, rev);

    r = c.Request("DELETE", "/v1/kv/" + key);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Num(Obj(r).at("deleted")), 1u);
    ExpectError(c.Get("/v1/kv/" + key), 404, "key_not_found", "deleted key");
    r = c.Request("DELETE", "/v1/kv/" + key);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Num(Obj(r).at("deleted")), 0u);
    EXPECT_GT(Num(Obj(r).at("revision")), rev2);  // Still an entry.

    // Recreated: a new create_revision, version 1.
    r = Put(c, key, "three");
    kv = Obj(r).at("kv").as_object();
    EXPECT_GT(Num(kv.at("create_revision")), rev2);
    EXPECT_EQ(Num(kv.at("version")), 1u);
  }
}

TEST_F(V1Test, ConditionalWritesAnswer412WithTheCurrentKey) {
  HttpClient c(Port(Follower()));
  // if_version=0: create only.
  HttpResponse r = Put(c, "cond/a", "1", "?if_version=0");
  ASSERT_EQ(r.status, 200) << r.body;
  uint64_t rev = Num(Obj(r).at("revision"));
  r = Put(c, "cond/a", "2", "?if_version=0");
  ExpectError(r, 412, "compare_failed", "create-only over an existing key");
  EXPECT_EQ(Str(Obj(r).at("kv").at("value")), "1");
  EXPECT_EQ(Num(Obj(r).at("kv").at("mod_revision")), rev);
  // if_mod_revision.
  ExpectError(Put(c, "cond/a", "2", "?if_mod_revision=" + std::to_string(rev + 1000)), 412,
              "compare_failed", "stale mod_revision");
  r = Put(c, "cond/a", "2", "?if_mod_revision=" + std::to_string(rev) + "&prev_kv");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Str(Obj(r).at("prev_kv").at("value")), "1");
  uint64_t rev2 = Num(Obj(r).at("revision"));
  // if_version.
  ExpectError(Put(c, "cond/a", "x", "?if_version=1"), 412, "compare_failed", "version 2 != 1");
  // If-Match with the ETag; If-None-Match: *.
  std::string etag = "\"" + std::to_string(rev2) + "\"";
  ExpectError(Put(c, "cond/a", "x", "", {{"If-Match", "\"1\""}}), 412, "compare_failed",
              "If-Match of another revision");
  r = Put(c, "cond/a", "3", "", {{"If-Match", etag}});
  ASSERT_EQ(r.status, 200) << r.body;
  ExpectError(Put(c, "cond/a", "x", "", {{"If-None-Match", "*"}}), 412, "compare_failed",
              "If-None-Match over an existing key");
  ASSERT_EQ(Put(c, "cond/new", "n", "", {{"If-None-Match", "*"}}).status, 200);
  ExpectError(Put(c, "cond/a", "x", "", {{"If-Match", "7"}}), 400, "invalid_argument",
              "unquoted If-Match");
  // A missing key: if_mod_revision fails with kv null.
  r = Put(c, "cond/none", "x", "?if_mod_revision=5");
  ExpectError(r, 412, "compare_failed", "missing key");
  EXPECT_TRUE(Obj(r).at("kv").is_null());
  // Conditional delete, with prev_kv.
  r = c.Request("DELETE", "/v1/kv/cond/a?if_version=9");
  ExpectError(r, 412, "compare_failed", "delete with a wrong version");
  r = c.Request("DELETE", "/v1/kv/cond/a?if_version=3&prev_kv");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Num(Obj(r).at("deleted")), 1u);
  EXPECT_EQ(Str(Obj(r).at("prev_kvs").at(0).at("value")), "3");
  // prev_kv of a new key is null.
  r = Put(c, "cond/fresh", "f", "?prev_kv");
  EXPECT_TRUE(Obj(r).at("prev_kv").is_null()) << r.body;
}

TEST_F(V1Test, BinaryKeysAndValues) {
  HttpClient c(Port(Leader()));
  // A key with a slash, a NUL and a 0xFF byte; a value with invalid UTF-8.
  std::string key_path = "bin/a%2Fb%00%FF";
  std::string value("\xfe\x00v", 3);
  json::object body;
  body["value_b64"] = "/gB2";  // base64 of FE 00 76.
  HttpResponse r = c.Request("PUT", "/v1/kv/" + key_path, json::serialize(body));
  ASSERT_EQ(r.status, 200) << r.body;
  json::object kv = Obj(r).at("kv").as_object();
  EXPECT_FALSE(kv.contains("key"));
  EXPECT_EQ(Str(kv.at("key_b64")), "YmluL2EvYgD/");
  EXPECT_EQ(Str(kv.at("value_b64")), "/gB2");
  r = c.Get("/v1/kv/" + key_path + "?raw");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, value);
  EXPECT_EQ(r.Header("content-type"), "application/octet-stream");
  EXPECT_EQ(r.Header("x-content-type-options"), "nosniff");
  // ?raw PUT: the body is the value; ?encoding=base64 forces _b64.
  r = c.Request("PUT", "/v1/kv/bin/raw?raw", std::string("{not json\0", 10));
  ASSERT_EQ(r.status, 200) << r.body;
  r = c.Get("/v1/kv/bin/raw?encoding=base64");
  EXPECT_EQ(Str(Obj(r).at("key_b64")), "YmluL3Jhdw==");
  EXPECT_EQ(Str(Obj(r).at("value_b64")), "e25vdCBqc29uAA==");
  // Bad base64 and both forms at once are 400.
  ExpectError(c.Request("PUT", "/v1/kv/bin/x", R"({"value_b64":"%%%"})"), 400, "invalid_argument",
              "bad base64");
  ExpectError(c.Request("PUT", "/v1/kv/bin/x", R"({"value":"a","value_b64":"YQ=="})"), 400,
              "invalid_argument", "value and value_b64");
}

TEST_F(V1Test, ReadLevels) {
  int f = Follower();
  HttpClient leader(Port(Leader())), follower(Port(f));
  HttpResponse r = Put(leader, "levels/k", "v1");
  ASSERT_EQ(r.status, 200) << r.body;
  uint64_t rev = Num(Obj(r).at("revision"));
  // Read-your-writes on a follower: min_revision waits for the write.
  r = follower.Get("/v1/kv/levels/k?consistency=stale&min_revision=" + std::to_string(rev));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Str(Obj(r).at("value")), "v1");
  EXPECT_GE(std::stoull(r.Header("x-raftkv-revision")), rev);
  // Linearizable (the default) on the follower.
  r = follower.Get("/v1/kv/levels/k");
  EXPECT_EQ(Str(Obj(r).at("value")), "v1");
  // Stale reads converge.
  EXPECT_TRUE(WaitFor([&] { return follower.Get("/v1/kv/levels/k?stale").status == 200; },
                      milliseconds(5000)));
  // A revision the cluster has not reached.
  ExpectError(follower.Get("/v1/kv/levels/k?min_revision=9000000000000"), 400, "invalid_argument",
              "future min_revision");
  ExpectError(follower.Get("/v1/kv/levels/k?consistency=weak"), 400, "invalid_argument",
              "unknown consistency");
  ExpectError(follower.Get("/v1/kv/levels/k?min_revision=-1"), 400, "invalid_argument",
              "negative min_revision");
  ExpectError(follower.Get("/v1/kv/levels/k?min_revision=9007199254740992"), 400,
              "invalid_argument", "min_revision of 2^53");
  // max_staleness: a follower that hears from the leader serves a bounded stale read; once
  // the other two nodes are paused it has heard from no leader for longer than the bound,
  // and answers 503 stale_too_old, while an unbounded stale read is still served.
  EXPECT_EQ(follower.Get("/v1/kv/levels/k?stale&max_staleness=60s").status, 200);
  ExpectError(follower.Get("/v1/kv/levels/k?stale&max_staleness=2h"), 400, "invalid_argument",
              "bad duration");
  std::vector<int> others;
  for (int i = 0; i < 3; i++) {
    if (i != f) others.push_back(i);
  }
  for (int i : others) cluster_->Proc(i)->Signal(SIGSTOP);
  bool too_old = WaitFor(
      [&] { return follower.Get("/v1/kv/levels/k?stale&max_staleness=300ms").status == 503; },
      milliseconds(5000));
  HttpResponse old = follower.Get("/v1/kv/levels/k?consistency=stale&max_staleness=300ms");
  HttpResponse unbounded = follower.Get("/v1/kv/levels/k?stale");
  for (int i : others) cluster_->Proc(i)->Signal(SIGCONT);
  EXPECT_TRUE(too_old) << "a bounded stale read was still served with no leader for 5 s";
  ExpectError(old, 503, "stale_too_old", "no leader heard from");
  EXPECT_EQ(old.Header("retry-after"), "1");
  EXPECT_EQ(unbounded.status, 200) << unbounded.body;
  EXPECT_TRUE(
      WaitFor([&] { return follower.Get("/v1/kv/levels/k?stale&max_staleness=2s").status == 200; },
              milliseconds(10000)));
}

TEST_F(V1Test, PrefixRangesPageInKeyOrder) {
  HttpClient c(Port(Leader()));
  std::set<std::string> want;
  for (int i = 0; i < 120; i++) {
    std::string k = "rng/" + std::to_string(i);
    ASSERT_EQ(Put(c, k, "v" + std::to_string(i)).status, 200);
    want.insert(k);
  }
  ASSERT_EQ(Put(c, "rng0", "outside").status, 200);
  ASSERT_EQ(Put(c, "rn", "outside").status, 200);
  // Pages of 7 with continuation tokens cover every key once, in order.
  HttpClient f(Port(Follower()));
  std::vector<std::string> got;
  std::string token;
  uint64_t first_rev = 0;
  for (int page = 0; page < 100; page++) {
    std::string target = "/v1/kv/rng/?prefix&limit=7";
    if (!token.empty()) target += "&continue=" + token;
    HttpResponse r = f.Get(target);
    ASSERT_EQ(r.status, 200) << r.body;
    json::object o = Obj(r);
    if (first_rev == 0) first_rev = Num(o.at("revision"));
    EXPECT_EQ(Num(o.at("revision")), first_rev);  // The first page's revision, throughout.
    for (const json::value& kv : o.at("kvs").as_array()) got.push_back(Str(kv.at("key")));
    if (!o.at("more").as_bool()) {
      EXPECT_EQ(Num(o.at("watch_from")), first_rev + 1);
      break;
    }
    EXPECT_LE(o.at("kvs").as_array().size(), 7u);
    token = Str(o.at("continue"));
  }
  EXPECT_EQ(got, std::vector<std::string>(want.begin(), want.end()));
  // A larger limit is lowered to --max-range-limit (50 here).
  HttpResponse r = c.Get("/v1/kv/rng/?prefix&limit=1000");
  EXPECT_EQ(Obj(r).at("kvs").as_array().size(), 50u);
  EXPECT_TRUE(Obj(r).at("more").as_bool());
  // A page also ends once it holds --max-range-bytes (4000 here) of keys and values: 8 keys
  // of about 905 bytes come in pages of 5 and 3.
  for (int i = 0; i < 8; i++) {
    ASSERT_EQ(Put(c, "big/" + std::to_string(i), std::string(900, 'a' + i)).status, 200);
  }
  r = c.Get("/v1/kv/big/?prefix&limit=50");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Obj(r).at("kvs").as_array().size(), 5u);
  EXPECT_TRUE(Obj(r).at("more").as_bool());
  r = c.Get("/v1/kv/big/?prefix&limit=50&continue=" + Str(Obj(r).at("continue")));
  EXPECT_EQ(Obj(r).at("kvs").as_array().size(), 3u);
  EXPECT_FALSE(Obj(r).at("more").as_bool());
  // keys_only and count_only.
  r = c.Get("/v1/kv/rng/1?prefix&keys_only");
  json::array kvs = Obj(r).at("kvs").as_array();
  ASSERT_FALSE(kvs.empty());
  EXPECT_FALSE(kvs[0].as_object().contains("value"));
  r = c.Get("/v1/kv/rng/?prefix&count_only");
  EXPECT_EQ(Num(Obj(r).at("count")), 120u);
  // The empty prefix lists every key (at most a page).
  r = c.Get("/v1/kv/?prefix&count_only");
  EXPECT_GE(Num(Obj(r).at("count")), 130u);
  // A token for another prefix, and a malformed one.
  ExpectError(c.Get("/v1/kv/other/?prefix&continue=" + token), 400, "invalid_argument",
              "token of another prefix");
  ExpectError(c.Get("/v1/kv/rng/?prefix&continue=%21%21"), 400, "invalid_argument", "bad token");
  ExpectError(c.Get("/v1/kv/rng/?prefx"), 400, "invalid_argument", "unknown parameter");
}

TEST_F(V1Test, PrefixDeleteLimitsAndConditions) {
  HttpClient c(Port(Follower()));
  uint64_t last = 0;
  for (int i = 0; i < 25; i++) {
    HttpResponse r = Put(c, "pd/" + std::to_string(100 + i), "v");
    ASSERT_EQ(r.status, 200) << r.body;
    last = Num(Obj(r).at("revision"));
  }
  // 25 keys > --max-delete-keys 20, no limit: refused, nothing deleted.
  ExpectError(c.Request("DELETE", "/v1/kv/pd/?prefix"), 413, "too_many_keys", "over the cap");
  EXPECT_EQ(Num(Obj(c.Get("/v1/kv/pd/?prefix&count_only")).at("count")), 25u);
  // A key changed after the listing: if_max_mod_revision fails.
  ExpectError(c.Request("DELETE", "/v1/kv/pd/?prefix&limit=5&if_max_mod_revision=" +
                                      std::to_string(last - 1)),
              412, "compare_failed", "a newer key under the prefix");
  HttpResponse r = c.Request(
      "DELETE", "/v1/kv/pd/?prefix&limit=10&prev_kv&if_max_mod_revision=" + std::to_string(last));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Num(Obj(r).at("deleted")), 10u);
  EXPECT_TRUE(Obj(r).at("more").as_bool());
  EXPECT_EQ(Str(Obj(r).at("prev_kvs").at(0).at("key")), "pd/100");
  r = c.Request("DELETE", "/v1/kv/pd/?prefix");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Num(Obj(r).at("deleted")), 15u);
  EXPECT_FALSE(Obj(r).at("more").as_bool());
}

TEST_F(V1Test, TransactionsAndTheirErrors) {
  HttpClient c(Port(Follower()));
  ASSERT_EQ(Put(c, "tx/a", "1").status, 200);
  std::string body = R"({"compare":[{"key":"tx/a","target":"value","op":"=","value":"1"}],
    "success":[{"put":{"key":"tx/a","value":"2","prev_kv":true}},{"put":{"key":"tx/b","value":"x"}},
               {"get":{"key":"tx/a"}},{"range":{"prefix":"tx/"}},{"delete":{"key":"tx/none"}}],
    "failure":[{"get":{"key":"tx/a"}}]})";
  HttpResponse r = c.Post("/v1/txn", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json::object o = Obj(r);
  EXPECT_TRUE(o.at("succeeded").as_bool());
  uint64_t rev = Num(o.at("revision"));
  json::array res = o.at("results").as_array();
  ASSERT_EQ(res.size(), 5u);
  EXPECT_EQ(Str(res[0].at("put").at("prev_kv").at("value")), "1");
  EXPECT_EQ(Num(res[1].at("put").at("kv").at("mod_revision")), rev);
  EXPECT_EQ(Str(res[2].at("get").at("kv").at("value")), "2");
  EXPECT_EQ(res[3].at("range").at("kvs").as_array().size(), 2u);
  EXPECT_EQ(Num(res[4].at("delete").at("deleted")), 0u);
  // Both keys carry the one revision.
  EXPECT_EQ(Num(Obj(c.Get("/v1/kv/tx/b")).at("mod_revision")), rev);
  // The compare fails now: 200 with the failure branch.
  r = c.Post("/v1/txn", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(Obj(r).at("succeeded").as_bool());
  EXPECT_EQ(Str(Obj(r).at("results").at(0).at("get").at("kv").at("value")), "2");
  // A write-free txn is served by ReadIndex (no new revision from it).
  r = c.Post("/v1/txn", R"({"compare":[{"prefix":"tx/","target":"version","op":">","value":0}],
                            "success":[{"range":{"prefix":"tx/","count_only":true}}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Num(Obj(r).at("results").at(0).at("range").at("count")), 2u);
  // An empty txn succeeds.
  r = c.Post("/v1/txn", "{}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(Obj(r).at("succeeded").as_bool());

  ExpectError(c.Post("/v1/txn", R"({"success":[{"put":{"key":"d","value":"1"}},
                                                {"put":{"key":"d","value":"2"}}]})"),
              400, "duplicate_key", "a key put twice");
  ExpectError(c.Post("/v1/txn", R"({"success":[{"delete":{"prefix":"d"}},
                                                {"put":{"key":"dd","value":"2"}}]})"),
              400, "duplicate_key", "a put inside a delete");
  std::string many = R"({"success":[)";
  for (int i = 0; i < 9; i++) many += (i ? "," : "") + std::string(R"({"get":{"key":"k"}})");
  ExpectError(c.Post("/v1/txn", many + "]}"), 400, "too_many_ops", "9 ops over --max-txn-ops 8");
  ExpectError(c.Post("/v1/txn", R"({"success":[{"put":{"key":"big","value":")" +
                                    std::string(1001, 'x') + R"("}}]})"),
              413, "value_too_large", "a value over --max-value-bytes");
  for (const char* bad :
       {"", "[]", "{", R"({"compare":{}})", R"({"extra":1})",
        R"({"success":[{"put":{"key":"k"}}]})", R"({"success":[{"put":{"key":"","value":"v"}}]})",
        R"({"success":[{"frob":{"key":"k"}}]})",
        R"({"success":[{"get":{"key":"k","prefix":"p"}}]})",
        R"({"compare":[{"key":"k","target":"version","op":"=","value":-1}]})",
        R"({"compare":[{"key":"k","target":"version","op":"=","value":1e300}]})",
        R"({"compare":[{"key":"k","target":"version","op":"=","value":"1"}]})",
        R"({"compare":[{"key":"k","target":"value","op":"=","value":1}]})",
        R"({"compare":[{"key":"k","target":"size","op":"=","value":1}]})",
        R"({"compare":[{"key":"k","target":"version","op":"~","value":1}]})",
        R"({"success":[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]})"}) {
    ExpectError(c.Post("/v1/txn", bad), 400, "invalid_argument", std::string("body ") + bad);
  }
  ExpectError(c.Get("/v1/txn"), 405, "method_not_allowed", "GET /v1/txn");
}

TEST_F(V1Test, RoutesMethodsAndTheLegacyRoutes) {
  HttpClient c(Port(Leader()));
  HttpResponse r = c.Request("PATCH", "/v1/kv/x");
  ExpectError(r, 405, "method_not_allowed", "PATCH");
  EXPECT_EQ(r.Header("allow"), "GET, PUT, POST, DELETE");
  ExpectError(c.Get("/v1/nope"), 404, "not_found", "unknown route");
  ExpectError(c.Get("/v1/kv/"), 400, "invalid_argument", "empty key");
  ExpectError(c.Get("/v1/kv/" + std::string(4097, 'k')), 400, "invalid_argument", "long key");
  ExpectError(c.Get("/v1/kv/%zz"), 400, "invalid_argument", "bad escape");
  ExpectError(c.Request("PUT", "/v1/kv/x", "{\"value\":1}"), 400, "invalid_argument", "number");
  ExpectError(c.Request("PUT", "/v1/kv/x", "{\"value\":\"v\",\"lease\":7}"), 404, "lease_not_found",
              "a lease that does not exist");
  ExpectError(c.Request("PUT", "/v1/kv/x?prefix", R"({"value":"v"})"), 400, "invalid_argument",
              "put with ?prefix");
  // A legacy write is an ordinary put, visible in /v1 with its revisions;
  // a /v1 write is visible on the legacy route.
  r = c.Post("/keys/legacy/", R"({"value":"old"})");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"value":"old"})");
  EXPECT_TRUE(r.Header("x-raftkv-revision").empty());  // Legacy answers stay as they were.
  r = c.Get("/v1/kv/legacy");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Num(Obj(r).at("version")), 1u);
  ASSERT_EQ(Put(c, "legacy", "new").status, 200);
  EXPECT_EQ(c.Get("/keys/legacy/").body, R"({"value":"new"})");
}

// 16 clients increment one counter with CAS through all three nodes: the
// final value is exactly the number of successful CAS answers.
TEST_F(V1Test, CasCounterUnderConcurrency) {
  HttpClient init(Port(Leader()));
  ASSERT_EQ(Put(init, "cas/counter", "0").status, 200);
  std::atomic<int> successes{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; t++) {
    threads.emplace_back([&, t] {
      HttpClient c(Port(t % 3));
      for (int attempt = 0; attempt < 15; attempt++) {
        HttpResponse g = c.Get("/v1/kv/cas/counter");
        if (g.status != 200) {
          errors++;
          continue;
        }
        json::object kv = Obj(g);
        uint64_t n = std::stoull(Str(kv.at("value")));
        HttpResponse p = Put(c, "cas/counter", std::to_string(n + 1),
                             "?if_mod_revision=" + std::to_string(Num(kv.at("mod_revision"))));
        if (p.status == 200) {
          successes++;
        } else if (p.status != 412) {
          errors++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  HttpResponse r = init.Get("/v1/kv/cas/counter");
  ASSERT_EQ(r.status, 200);
  EXPECT_GT(successes.load(), 0);
  EXPECT_EQ(Str(Obj(r).at("value")), std::to_string(successes.load()));
  EXPECT_EQ(Num(Obj(r).at("version")), 1u + successes.load());
  EXPECT_EQ(errors.load(), 0);
}

// Writers move a token between two keys with a txn; readers check with a
// linearizable write-free txn that exactly one key holds it, always.
TEST_F(V1Test, TransferBetweenKeysIsAtomic) {
  HttpClient init(Port(Leader()));
  ASSERT_EQ(Put(init, "xfer/a", "token").status, 200);
  ASSERT_EQ(init.Request("DELETE", "/v1/kv/xfer/b").status, 200);
  std::atomic<bool> stop{false};
  std::atomic<int> moves{0}, bad{0}, reads{0};
  std::mutex mu;
  std::string bad_body;
  auto move_body = [](const std::string& from, const std::string& to) {
    return R"({"compare":[{"key":"xfer/)" + from +
           R"(","target":"version","op":">","value":0}],"success":[{"delete":{"key":"xfer/)" +
           from + R"("}},{"put":{"key":"xfer/)" + to + R"(","value":"token"}}]})";
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      HttpClient c(Port(t % 3));
      for (int i = 0; i < 40 && !stop; i++) {
        bool ab = (i + t) % 2 == 0;
        HttpResponse r = c.Post("/v1/txn", move_body(ab ? "a" : "b", ab ? "b" : "a"));
        if (r.status == 200 && Obj(r).at("succeeded").as_bool()) moves++;
      }
    });
  }
  for (int t = 0; t < 3; t++) {
    threads.emplace_back([&, t] {
      HttpClient c(Port(t));
      for (int i = 0; i < 60; i++) {
        HttpResponse r =
            c.Post("/v1/txn", R"({"success":[{"get":{"key":"xfer/a"}},{"get":{"key":"xfer/b"}}]})");
        if (r.status != 200) continue;
        json::array res = Obj(r).at("results").as_array();
        bool a = !res[0].at("get").at("kv").is_null(), b = !res[1].at("get").at("kv").is_null();
        reads++;
        if (a == b) {
          bad++;
          std::lock_guard lock(mu);
          bad_body = r.body;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GT(moves.load(), 0);
  EXPECT_GT(reads.load(), 100);
  EXPECT_EQ(bad.load(), 0) << bad_body;
}

// A stand-in for a member of the first release: it answers GET /status
// with whatever body the test sets (the first release's has no "proto").
class FakeStatusServer {
 public:
  FakeStatusServer() : acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeStatusServer() {
    stop_ = true;
    boost::system::error_code ignored;
    // Wake the blocking accept with one connection of our own.
    boost::asio::ip::tcp::socket s(io_);
    s.connect(acceptor_.local_endpoint(), ignored);
    thread_.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  void set_body(const std::string& body) {
    std::lock_guard lock(mu_);
    body_ = body;
  }

 private:
  void Run() {
    while (!stop_) {
      boost::system::error_code ec;
      boost::asio::ip::tcp::socket s(io_);
      acceptor_.accept(s, ec);
      if (ec || stop_) continue;
      boost::asio::streambuf buf;
      boost::asio::read_until(s, buf, "\r\n\r\n", ec);
      std::string body;
      {
        std::lock_guard lock(mu_);
        body = body_;
      }
      std::string answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
      boost::asio::write(s, boost::asio::buffer(answer), ec);
    }
  }

  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string body_ = R"({"id":"old","role":"follower"})";
};

// Mixed versions: while a member has not said it speaks the newer command
// language, the routes that need new commands answer 503 cluster_upgrading
// and the others work; once it says so, they work too.
int ClusterProto(HttpClient& c) {
  json::object o = Obj(c.Get("/status"));
  return o.contains("cluster_proto") ? static_cast<int>(o.at("cluster_proto").to_number<int64_t>())
                                     : -1;
}

TEST(V1UpgradeTest, NewCommandsWaitUntilEveryMemberSpeaksThem) {
  Cluster c(3);
  c.StartAll();
  int leader = c.WaitForLeader(milliseconds(5000));
  ASSERT_GE(leader, 0);
  HttpClient cl(c.http_port(leader));
  auto cas = [&] { return Put(cl, "up/k", "v", "?if_version=0"); };
  // Every member is of this release: the gate is open.
  EXPECT_TRUE(WaitFor([&] { return ClusterProto(cl) == 3; }, milliseconds(10000)));
  ASSERT_EQ(cas().status, 200);

  // A member of the first release joins (a learner that never catches up:
  // nothing listens on its raft port, and it counts for no quorum).
  FakeStatusServer old;
  json::object join;
  join["address"] = "127.0.0.1:" + std::to_string(FreePort());
  join["id"] = "old-release";
  join["http"] = "127.0.0.1:" + std::to_string(old.port());
  ASSERT_EQ(cl.Post("/cluster/join/", json::serialize(join)).status, 200);
  EXPECT_TRUE(WaitFor([&] { return ClusterProto(cl) == 1; }, milliseconds(10000)));
  HttpResponse r = Put(cl, "up/k2", "v", "?if_version=0");
  ExpectError(r, 503, "cluster_upgrading", "a conditional put with a first-release member");
  EXPECT_EQ(r.Header("retry-after"), "1");
  ExpectError(cl.Request("DELETE", "/v1/kv/up/k"), 503, "cluster_upgrading", "a delete");
  ExpectError(cl.Post("/v1/txn", R"({"success":[{"put":{"key":"a","value":"b"}}]})"), 503,
              "cluster_upgrading", "a txn with a write");
  // What the first release understands still works: plain puts (the
  // first release's command), reads, write-free txns, the legacy routes.
  EXPECT_EQ(Put(cl, "up/plain", "v").status, 200);
  EXPECT_EQ(cl.Get("/v1/kv/up/plain").status, 200);
  EXPECT_EQ(cl.Post("/v1/txn", R"({"success":[{"get":{"key":"up/plain"}}]})").status, 200);
  EXPECT_EQ(cl.Post("/keys/up-legacy/", R"({"value":"x"})").status, 200);
  // A follower forwards the write and relays the leader's refusal.
  HttpClient f(c.http_port((leader + 1) % 3));
  ExpectError(Put(f, "up/k3", "v", "?if_version=0"), 503, "cluster_upgrading", "via a follower");

  // The member is upgraded to the release before leases: it speaks
  // language 2, so conditional writes work and lease commands still wait.
  old.set_body(R"({"id":"old","proto":2})");
  EXPECT_TRUE(WaitFor([&] { return Put(cl, "up/k4", "v", "?if_version=0").status == 200; },
                      milliseconds(10000)));
  ExpectError(cl.Post("/v1/leases", R"({"ttl":10})"), 503, "cluster_upgrading",
              "a lease grant with a language-2 member");
  // And to this release.
  old.set_body(R"({"id":"old","proto":3})");
  EXPECT_TRUE(WaitFor([&] { return cl.Post("/v1/leases", R"({"ttl":10})").status == 201; },
                      milliseconds(10000)));
}

// A data directory written by the release before /v1 (tests/fixtures)
// opens: its version 1 snapshot image and its log replay, and every key has
// the revisions the legacy writes gave it.
TEST(V1UpgradeTest, DataDirectoryOfThePreviousReleaseOpens) {
  Cluster c(1);  // For its directory and ports; node 0 is started by hand.
  const NodeInfo& n = c.node(0);
  std::filesystem::create_directories(n.datadir);
  std::string cmd = std::string("tar -xzf ") + RAFTKV_FIXTURES + "/datadir-d309605.tar.gz -C " +
                    n.datadir + " --strip-components=1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto start = [&] {
    return std::make_unique<Process>(
        std::vector<std::string>{RAFTKV_BIN, "--id", "fixture", "--bind", n.raft(), "--http",
                                 n.http(), "--datadir", n.datadir},
        n.log);
  };
  auto proc = start();
  HttpClient cl(n.http_port);
  auto check = [&](const std::string& when) {
    ASSERT_TRUE(WaitFor([&] { return cl.Get("/keys/k3/").status == 200; }, milliseconds(10000)))
        << when;
    // k3 was written by i = 3, 28 and 53, at indexes i + 2.
    EXPECT_EQ(cl.Get("/keys/k3/").body, R"({"value":"v53"})") << when;
    json::object kv = Obj(cl.Get("/v1/kv/k3"));
    EXPECT_EQ(Num(kv.at("create_revision")), 5u) << when;
    EXPECT_EQ(Num(kv.at("mod_revision")), 55u) << when;
    EXPECT_EQ(Num(kv.at("version")), 3u) << when;
    kv = Obj(cl.Get("/v1/kv/a%2Fb%00%FF"));
    EXPECT_EQ(Str(kv.at("value")), "binary key") << when;
    EXPECT_EQ(Num(kv.at("mod_revision")), 63u) << when;
    EXPECT_EQ(Num(Obj(cl.Get("/v1/kv/k?prefix&count_only")).at("count")), 25u) << when;
  };
  check("first start");
  // The new commands work on it, and it restarts with them.
  HttpResponse r = Put(cl, "k3", "v-new", "?if_mod_revision=55");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(cl.Request("DELETE", "/v1/kv/k4").status, 200);
  proc->Signal(SIGTERM);
  ASSERT_EQ(proc->Wait(milliseconds(10000)), 0);
  proc = start();
  ASSERT_TRUE(WaitFor([&] { return cl.Get("/v1/kv/k3").status == 200; }, milliseconds(10000)));
  EXPECT_EQ(Str(Obj(cl.Get("/v1/kv/k3")).at("value")), "v-new");
  EXPECT_EQ(cl.Get("/v1/kv/k4").status, 404);
  if (HasFailure()) std::cerr << c.LogTails();
}

// A follower forwards a write to a leader that stops answering (SIGSTOP: its port still
// accepts): the write was sent and may still apply, so the answer is 504 outcome_unknown,
// the code a client must not retry blindly on. (Before, a /v1 forward answered the legacy
// {"error"} body with no code, and raftkvctl took it for "not applied".)
TEST(V1ForwardTest, AForwardedWriteWhoseLeaderStopsAnsweringIsOutcomeUnknown) {
  Cluster c(3, {"--request-timeout-ms", "1000"});  // The forwarder waits 1 s longer.
  c.StartAll();
  int leader = c.WaitForLeader(milliseconds(5000));
  ASSERT_GE(leader, 0);
  int f = (leader + 1) % 3;
  HttpClient cl(c.http_port(f));
  ASSERT_EQ(Put(cl, "fwd/warm", "1").status, 200);  // The follower's pooled connection.
  c.Proc(leader)->Signal(SIGSTOP);
  HttpResponse w = Put(cl, "fwd/k", "maybe");
  c.Proc(leader)->Signal(SIGCONT);
  ExpectError(w, 504, "outcome_unknown", "a forwarded write without an answer");
  EXPECT_NE(w.body.find("did not answer"), std::string::npos) << w.body;
  // The cluster goes on: the write through the follower is taken again.
  EXPECT_TRUE(c.PutRetry(f, "fwd-after", "1", milliseconds(10000)));
}

}  // namespace
}  // namespace raftkv::itest
