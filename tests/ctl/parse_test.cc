// Unit tests of raftkvctl's pure helpers (src/ctl/parse.h).
#include "parse.h"

#include <gtest/gtest.h>

namespace raftkv::ctl {
namespace {

using std::chrono::milliseconds;

TEST(ParseEndpoints, AcceptsHostPortListsWithOptionalScheme) {
  std::vector<Endpoint> eps;
  ASSERT_TRUE(ParseEndpoints("127.0.0.1:4001, http://localhost:4002/,[::1]:4003", &eps).ok());
  ASSERT_EQ(eps.size(), 3u);
  EXPECT_EQ(eps[0], (Endpoint{"127.0.0.1", 4001}));
  EXPECT_EQ(eps[1], (Endpoint{"localhost", 4002}));
  EXPECT_EQ(eps[2], (Endpoint{"::1", 4003}));
  EXPECT_EQ(eps[2].ToString(), "[::1]:4003");
}

TEST(ParseEndpoints, RefusesWhatIsNotHostPortNamingIt) {
  for (const char* bad : {"", ",", "localhost", "host:", ":4001", "host:0", "host:65536",
                          "host:12x", "https://host:1", "a:1:2", "[::1]4001", "ho st:1"}) {
    std::vector<Endpoint> eps;
    Status s = ParseEndpoints(bad, &eps);
    EXPECT_EQ(s.code(), Exit::kUsage) << bad;
    EXPECT_NE(s.message().find("--endpoints"), std::string::npos) << s.message();
  }
}

TEST(ParseHostPort, TakesOneAddressAndNamesTheFlag) {
  Endpoint e;
  ASSERT_TRUE(ParseHostPort("--raft", "10.0.0.4:7001", &e).ok());
  EXPECT_EQ(e, (Endpoint{"10.0.0.4", 7001}));
  ASSERT_TRUE(ParseHostPort("--raft", "[::1]:7001", &e).ok());
  EXPECT_EQ(e, (Endpoint{"::1", 7001}));
  for (const char* bad : {"", "host", "host:0", "http://host:1", "a:1,b:2", " host:1", "host:1 "}) {
    Status s = ParseHostPort("--raft", bad, &e);
    EXPECT_EQ(s.code(), Exit::kUsage) << bad;
    EXPECT_NE(s.message().find("--raft"), std::string::npos) << s.message();
  }
}

TEST(ParseDuration, TakesWholeNumbersWithAUnit) {
  milliseconds d{0};
  ASSERT_TRUE(ParseDuration("--timeout", "500ms", &d).ok());
  EXPECT_EQ(d, milliseconds(500));
  ASSERT_TRUE(ParseDuration("--timeout", "5s", &d).ok());
  EXPECT_EQ(d, milliseconds(5000));
  ASSERT_TRUE(ParseDuration("--timeout", "2m", &d).ok());
  EXPECT_EQ(d, milliseconds(120000));
  for (const char* bad : {"5", "s", "-1s", "1.5s", "5 s", "5sec", "", "99999999999999h"}) {
    Status s = ParseDuration("--timeout", bad, &d);
    EXPECT_EQ(s.code(), Exit::kUsage) << bad;
    EXPECT_NE(s.message().find("--timeout"), std::string::npos) << s.message();
  }
}

TEST(ParseNumber, ChecksDigitsAndBounds) {
  uint64_t n = 0;
  EXPECT_TRUE(ParseNumber("N", "42", &n).ok());
  EXPECT_EQ(n, 42u);
  EXPECT_TRUE(ParseNumber("N", "9007199254740991", &n).ok());
  for (const char* bad : {"-1", "+1", "1e3", "0x10", "", "9007199254740992", "12 "}) {
    EXPECT_EQ(ParseNumber("N", bad, &n).code(), Exit::kUsage) << bad;
  }
  EXPECT_EQ(ParseNumber("N", "0", &n, 1).code(), Exit::kUsage);
}

TEST(PathEscape, KeepsSlashesAndEscapesTheRest) {
  EXPECT_EQ(PathEscape("app/config-1_x.y~"), "app/config-1_x.y~");
  EXPECT_EQ(PathEscape("a b?c#d%e&f+"), "a%20b%3Fc%23d%25e%26f%2B");
  EXPECT_EQ(PathEscape(std::string("\0\xff", 2)), "%00%FF");
}

TEST(Query, JoinsParametersAndEscapesValues) {
  Query q;
  EXPECT_EQ(q.str(), "");
  q.Add("prefix");
  q.Add("continue", "a/b+c=");
  EXPECT_EQ(q.str(), "?prefix&continue=a%2Fb%2Bc%3D");
}

TEST(Base64, RoundTripsAnyBytesAndRefusesGarbage) {
  for (std::string s : {std::string(""), std::string("f"), std::string("fo"), std::string("foo"),
                        std::string("\0\x01\xfe\xff", 4)}) {
    EXPECT_EQ(Base64Decode(Base64Encode(s)), s);
  }
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Decode("Zm8="), "fo");
  EXPECT_FALSE(Base64Decode("Zm9").has_value());
  EXPECT_FALSE(Base64Decode("Zm!v").has_value());
  EXPECT_FALSE(Base64Decode("Zg==Zg==").has_value());
}

TEST(IsValidUtf8, FollowsTheStandard) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // Truncated.
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // Overlong.
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // A surrogate.
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // Past U+10FFFF.
}

}  // namespace
}  // namespace raftkv::ctl
