// Unit tests of the server's small pure helpers: Go-compatible JSON output,
// percent-decoding, node identity.
#include <gtest/gtest.h>

#include "server/http_server.h"
#include "server/identity.h"
#include "server/json.h"

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

}  // namespace
}  // namespace raftkv::server
