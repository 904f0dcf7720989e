// Unit tests of the server's small pure helpers: Go-compatible JSON output,
// percent-decoding, node identity.
#include <gtest/gtest.h>

#include "server/http_server.h"
#include "server/identity.h"
#include "server/json.h"
#include "server/metrics_http.h"
#include "server/upgrade.h"
#include "server/v1.h"

namespace raftkv::server {
namespace {

std::string Json(std::string_view s) {
  std::string out;
  AppendJsonString(&out, s);
  return out;
}

TEST(JsonTest, EscapesLikeGoEncodingJson) {
  EXPECT_EQ(Json("some-value"), R"("some-value")");
  EXPECT_EQ(Json("q\"b\\"), R"("q\"b\\")");
  EXPECT_EQ(Json("\n\r\t"), R"("\n\r\t")");
  EXPECT_EQ(Json(std::string("\x00\x01\x1f\x08\x0c", 5)), R"("\u0000\u0001\u001f\u0008\u000c")");
  EXPECT_EQ(Json("<a&b>"), R"("\u003ca\u0026b\u003e")");
  EXPECT_EQ(Json("\xE2\x80\xA8\xE2\x80\xA9"), R"("\u2028\u2029")");
  EXPECT_EQ(Json("\xC3\xA9\xF0\x9F\x98\x80"), "\"\xC3\xA9\xF0\x9F\x98\x80\"");
  // Invalid UTF-8: each bad byte becomes U+FFFD.
  EXPECT_EQ(Json("a\xff"
                 "b"),
            R"("a\ufffdb")");
  EXPECT_EQ(Json("\xC0\xAF"), R"("\ufffd\ufffd")");            // Overlong.
  EXPECT_EQ(Json("\xED\xA0\x80"), R"("\ufffd\ufffd\ufffd")");  // Surrogate.
  EXPECT_EQ(Json("\xE2\x82"), R"("\ufffd\ufffd")");            // Truncated.
  EXPECT_EQ(JsonObject1("value", "x"), R"({"value":"x"})");
}

TEST(PercentDecodeTest, DecodesEscapesAndRejectsMalformedOnes) {
  std::string out;
  EXPECT_TRUE(PercentDecode("a%2Fb%00%c3%A9+c", &out));
  EXPECT_EQ(out, std::string("a/b\0\xC3\xA9+c", 8));
  EXPECT_FALSE(PercentDecode("%", &out));
  EXPECT_FALSE(PercentDecode("%2", &out));
  EXPECT_FALSE(PercentDecode("%zz", &out));
  EXPECT_TRUE(PercentDecode("", &out));
  EXPECT_EQ(out, "");
}

TEST(IdentityTest, NodeIdsAreStableNonzeroAndContextsRoundTrip) {
  EXPECT_EQ(NodeIdFromName("127.0.0.1:7001"), NodeIdFromName("127.0.0.1:7001"));
  EXPECT_NE(NodeIdFromName("127.0.0.1:7001"), NodeIdFromName("127.0.0.1:7002"));
  EXPECT_NE(NodeIdFromName(""), raft::kNoNode);
  MemberInfo m{NodeIdFromName("n1"), "n1", "127.0.0.1:7001", "127.0.0.1:4001"};
  std::string ctx = EncodeMemberContext(m);
  EXPECT_EQ(ctx, R"({"id":"n1","raft":"127.0.0.1:7001","http":"127.0.0.1:4001"})");
  MemberInfo out;
  ASSERT_TRUE(DecodeMemberContext(ctx, &out));
  out.id = m.id;
  EXPECT_EQ(out, m);
  EXPECT_FALSE(DecodeMemberContext("not json", &out));
  EXPECT_FALSE(DecodeMemberContext(R"({"raft":5})", &out));
}

TEST(IdentityTest, ClusterIdFromStatus) {
  uint64_t id = 7;
  std::string why;
  EXPECT_TRUE(
      ClusterIdFromStatus(R"({"node_id":"1","cluster_id":"18446744073709551615"})", &id, &why));
  EXPECT_EQ(id, 18446744073709551615ULL);
  // A node of the release before cluster ids: its cluster has none.
  EXPECT_TRUE(ClusterIdFromStatus(R"({"node_id":"1"})", &id, &why));
  EXPECT_EQ(id, 0u);
  for (const char* bad : {R"({"cluster_id":"5"})", R"({"node_id":"1","cluster_id":5})",
                          R"({"node_id":"1","cluster_id":"-5"})", "not json", "[]"}) {
    EXPECT_FALSE(ClusterIdFromStatus(bad, &id, &why)) << bad;
  }
  EXPECT_NE(NewClusterId(), 0u);
}

TEST(V1HelpersTest, Base64RoundTripsAndRefusesMalformedInput) {
  for (std::string raw : {std::string(), std::string("a"), std::string("ab"), std::string("abc"),
                          std::string("\xff\x00\x01\xfe", 4)}) {
    std::string out;
    ASSERT_TRUE(v1::Unbase64(v1::Base64(raw), &out)) << raw;
    EXPECT_EQ(out, raw);
    ASSERT_TRUE(v1::UnBase64Url(v1::Base64Url(raw), &out)) << raw;
    EXPECT_EQ(out, raw);
  }
  EXPECT_EQ(v1::Base64("ab"), "YWI=");
  EXPECT_EQ(v1::Base64Url("\xfb\xff"), "-_8");
  std::string out;
  for (const char* bad : {"YWI", "YW=I", "Y===", "YWJ=", "%%%%", "YWI=YWI=", "YW I="}) {
    EXPECT_FALSE(v1::Unbase64(bad, &out)) << bad;
  }
  EXPECT_FALSE(v1::UnBase64Url("YWI=", &out));  // No padding in base64url.
  EXPECT_FALSE(v1::UnBase64Url("+/8", &out));
}

TEST(V1HelpersTest, ContinueTokensAndQueries) {
  std::string key;
  uint64_t rev = 0;
  ASSERT_TRUE(
      v1::ParseContinueToken(v1::ContinueToken(std::string("a/\0\xff", 4), 77), &key, &rev));
  EXPECT_EQ(key, std::string("a/\0\xff", 4));
  EXPECT_EQ(rev, 77u);
  EXPECT_FALSE(v1::ParseContinueToken("AAAA", &key, &rev));  // Shorter than a revision.
  v1::Query q;
  std::string error;
  ASSERT_TRUE(q.Parse("prefix&limit=7&x=%41b&limit=9&stale=false&&", &error));
  EXPECT_TRUE(q.Has("prefix"));
  EXPECT_EQ(q.Get("prefix"), "");
  EXPECT_EQ(q.Get("x"), "Ab");
  EXPECT_FALSE(q.Flag("stale"));
  EXPECT_TRUE(q.Flag("prefix"));
  uint64_t n = 0;
  v1::ApiError e;
  ASSERT_TRUE(q.Number("limit", &n, &e));
  EXPECT_EQ(n, 7u);  // The first of duplicates.
  EXPECT_EQ(q.Unknown({"prefix", "limit", "x"}), "stale");
  ASSERT_TRUE(q.Parse("n=9007199254740991&m=9007199254740992&o=1e3&p=", &error));
  EXPECT_TRUE(q.Number("n", &n, &e));
  EXPECT_FALSE(q.Number("m", &n, &e));
  EXPECT_EQ(e.code, "invalid_argument");
  EXPECT_FALSE(q.Number("o", &n, &e));
  EXPECT_FALSE(q.Number("p", &n, &e));
  EXPECT_FALSE(q.Parse("a=%zz", &error));
  // Durations.
  ASSERT_TRUE(q.Parse("a=500ms&b=2s&c=1m&d=2&e=1h&f=ms&g=-1s&h=9007199254740991m", &error));
  uint64_t ms = 7;
  EXPECT_TRUE(q.Duration("absent", &ms, &e));
  EXPECT_EQ(ms, 7u);
  EXPECT_TRUE(q.Duration("a", &ms, &e));
  EXPECT_EQ(ms, 500u);
  EXPECT_TRUE(q.Duration("b", &ms, &e));
  EXPECT_EQ(ms, 2000u);
  EXPECT_TRUE(q.Duration("c", &ms, &e));
  EXPECT_EQ(ms, 60000u);
  for (const char* bad : {"d", "e", "f", "g", "h"}) EXPECT_FALSE(q.Duration(bad, &ms, &e)) << bad;
}

TEST(V1HelpersTest, ProtoFromStatus) {
  EXPECT_EQ(ProtoFromStatus(R"({"id":"a","proto":2})"), 2);
  EXPECT_EQ(ProtoFromStatus(R"({"id":"a"})"), 1);  // The first release.
  EXPECT_EQ(ProtoFromStatus("not json"), 0);
  EXPECT_EQ(ProtoFromStatus(R"({"proto":"2"})"), 0);
  EXPECT_EQ(ProtoFromStatus(R"({"proto":0})"), 0);
}

TEST(ReadyTest, EachReasonForNotBeingReady) {
  using std::chrono::milliseconds;
  StatusReport r;
  r.node.id = 7;
  r.node.leader = 9;
  r.node.role = raft::Role::kFollower;
  r.node.conf.members = {raft::Member{7, raft::MemberRole::kVoter, false, ""},
                         raft::Member{9, raft::MemberRole::kVoter, false, ""}};
  r.node.commit = 5000;
  r.revision = 4000;
  auto reasons = [&](bool draining, int64_t ms, uint64_t max_lag) {
    return NotReadyReasons(r, draining, ms, milliseconds(1000), max_lag);
  };
  EXPECT_TRUE(reasons(false, 100, 1000).empty());  // 1000 behind: on the bound.
  EXPECT_EQ(reasons(false, 100, 999),
            std::vector<std::string>{"catching_up applied=4000 commit=5000"});
  EXPECT_EQ(reasons(false, 1001, 1000), std::vector<std::string>{"leader_silent ms=1001"});
  // A follower's own commit index trails what it has not received: the lag is
  // measured against the leader's, as its appends said.
  r.revision = 5000;
  r.leader_commit = 9000;
  EXPECT_EQ(reasons(false, 100, 1000),
            std::vector<std::string>{"catching_up applied=5000 commit=9000"});
  r.leader_commit = 0;
  r.revision = 4000;
  EXPECT_EQ(reasons(false, INT64_MAX, 1000), std::vector<std::string>{"leader_silent never"});
  EXPECT_EQ(reasons(true, 100, 1000), std::vector<std::string>{"shutting_down"});
  r.node.role = raft::Role::kLeader;  // A leader hears from itself.
  EXPECT_TRUE(reasons(false, 5000, 1000).empty());
  r.node.leader = raft::kNoNode;
  r.node.role = raft::Role::kCandidate;
  EXPECT_EQ(reasons(false, 5000, 1000), std::vector<std::string>{"no_leader"});
  r.health = "storage failed: EIO";
  r.node.conf.members.erase(r.node.conf.members.begin());
  EXPECT_EQ(reasons(false, 0, 1000),
            (std::vector<std::string>{"storage_failed", "not_a_member", "no_leader"}));
}

// Each status is counted under its own code, and one outside the known list (418, 999)
// under "other"; the count per (route, method, code) is exact.
TEST(HttpMetricsTest, EachStatusIsCountedUnderItsCodeAndUnknownOnesUnderOther) {
  HttpMetrics m;
  auto record = [&](unsigned status) {
    m.Record(Route::kV1Kv, boost::beast::http::verb::put, status, std::chrono::milliseconds(1));
  };
  for (unsigned s : {200u, 200u, 504u, 404u, 418u, 999u, 0u}) record(s);
  metrics::Writer w;
  m.Write(&w);
  const std::string& t = w.text();
  auto count = [&](const std::string& code) {
    std::string line =
        "raftkv_http_requests_total{route=\"/v1/kv/{key}\",method=\"PUT\",code=\"" + code + "\"} ";
    size_t at = t.find(line);
    if (at == std::string::npos) return std::string("absent");
    return t.substr(at + line.size(), t.find('\n', at) - at - line.size());
  };
  EXPECT_EQ(count("200"), "2") << t;
  EXPECT_EQ(count("504"), "1") << t;
  EXPECT_EQ(count("404"), "1") << t;
  EXPECT_EQ(count("other"), "3") << t;
  EXPECT_EQ(count("418"), "absent") << t;
}

}  // namespace
}  // namespace raftkv::server
