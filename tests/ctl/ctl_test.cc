// raftkvctl driven as a user would: the binary run as a child process
// against real 3-node clusters on 127.0.0.1, its stdout, stderr and exit
// code checked (docs/raftkvctl.md). Every documented exit code is produced
// at least once; every command runs at least once.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <boost/json.hpp>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

#include "child.h"
#include "cluster.h"
#include "json_test_util.h"
#include "wait.h"

namespace raftkv::ctltest {
namespace {

namespace json = boost::json;
using itest::Cluster;
using itest::FreePort;
using itest::HttpClient;
using itest::WaitFor;

// Exit codes (src/ctl/errors.h, docs/raftkvctl.md).
constexpr int kOk = 0, kError = 1, kUsage = 2, kNotFound = 3, kCompareFailed = 4, kUnavailable = 5,
              kCompacted = 6, kOutcomeUnknown = 7, kConflict = 8;

std::string Addr(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

json::object Object(const std::string& s) { return itest::ParseObject(s); }

std::string Describe(const RunResult& r) {
  return "exit " + std::to_string(r.code) + "\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
}

std::string WriteTemp(const std::string& name, const std::string& content) {
  std::string path = testing::TempDir() + "/raftkvctl-" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool Exists(const std::string& path) { return std::filesystem::exists(path); }

// A path in the test's temporary directory that does not exist (nor its .part).
std::string FreshPath(const std::string& name) {
  std::string path = testing::TempDir() + "/raftkvctl-" + name;
  std::filesystem::remove(path);
  std::filesystem::remove(path + ".part");
  return path;
}

// --- Without a cluster ---------------------------------------------------------

TEST(CtlUsageTest, BadInputExitsTwoNamingTheProblem) {
  const std::string dead = Addr(FreePort());  // Nothing may be sent: exit 2, never 5.
  const std::string bad_json = WriteTemp("bad.json", "{\"compare\": [");
  const std::string existing = WriteTemp("existing.snap", "keep me");
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{}, "no command given"},
      {{"frobnicate"}, "unknown command \"frobnicate\""},
      {{"--bogus", "get", "k"}, "--bogus"},
      {{"get"}, "missing KEY"},
      {{"get", "k", "--bogus"}, "bogus"},
      {{"get", "k", "extra"}, "too many positional"},
      {{"put", "k"}, "missing VALUE"},
      {{"get", "k", "--rev", "abc"}, "--rev"},
      {{"get", "k", "--rev", "-5"}, "rev"},
      {{"get", "k", "--limit", "3"}, "--prefix"},
      {{"get", "k", "--max-staleness", "2s"}, "--stale"},
      {{"--endpoints", "nohostport", "get", "k"}, "--endpoints"},
      {{"--endpoints", "127.0.0.1:99999", "get", "k"}, "port"},
      {{"--timeout", "5", "get", "k"}, "--timeout"},
      {{"-o", "yaml", "get", "k"}, "yaml"},
      {{"lease"}, "needs a subcommand"},
      {{"lease", "frob"}, "unknown command \"lease frob\""},
      {{"lease", "grant", "ten"}, "TTL"},
      {{"lease", "revoke", "0"}, "ID"},
      {{"member"}, "needs a subcommand"},
      {{"member", "list", "extra"}, "too many positional"},
      {{"member", "add", "n4"}, "--raft HOST:PORT is required"},
      {{"member", "add", "n4", "--raft", "nohostport"}, "--raft"},
      {{"member", "add", "n4", "--raft", "127.0.0.1:7000", "--http", "http://h:1"}, "--http"},
      {{"member", "add", "n4", "--raft", "127.0.0.1:7000", "--promote", "later"}, "--promote"},
      {{"member", "add", "", "--raft", "127.0.0.1:7000"}, "ID is empty"},
      {{"member", "promote"}, "missing ID"},
      {{"member", "remove", ""}, "ID is empty"},
      {{"leader"}, "needs a subcommand"},
      {{"leader", "transfer", ""}, "ID is empty"},
      {{"snapshot", "save"}, "missing FILE"},
      {{"snapshot", "save", existing}, "exists (--force to overwrite it)"},
      {{"snapshot", "save", testing::TempDir()}, "is a directory"},
      {{"snapshot", "save", "/nonexistent/raftkvctl/backup.snap"}, "cannot create"},
      {{"txn", bad_json}, "not valid JSON"},
      {{"txn", "/nonexistent/raftkvctl.json"}, "cannot open"},
      {{"check", "--prefix", ""}, "--prefix is empty"},
      {{"check", "--duration", "1s", "--requests", "5"}, "not both"},
      {{"range", "b", "a"}, "TO must sort after FROM"},
      {{"del", "k", "--limit", "3"}, "--limit needs --prefix"},
      {{"del", "k", "--prefix", "--if-version", "1"}, "--if-max-mod-revision"},
      {{"put", "k", "v", "--create-only", "--if-version", "2"}, "--create-only"},
      {{"watch", "k", "--max-events", "0"}, "--max-events"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = c.args;
    if (std::find(args.begin(), args.end(), "--endpoints") == args.end()) {
      args.insert(args.begin(), {"--endpoints", dead});
    }
    RunResult r = RunCtl(args, "", milliseconds(20000));
    const std::string what =
        (c.args.empty() ? "(no arguments)" : c.args[0] + " ...") + ": " + Describe(r);
    EXPECT_EQ(r.code, kUsage) << what;
    EXPECT_EQ(r.out, "") << what;
    EXPECT_TRUE(r.err.starts_with("raftkvctl: ")) << what;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << "wanted \"" << c.needle << "\": " << what;
  }
  // An existing backup is left as it was, and no .part is left behind.
  EXPECT_EQ(ReadWhole(existing), "keep me");
  EXPECT_FALSE(Exists(existing + ".part"));
  EXPECT_FALSE(Exists("/nonexistent/raftkvctl/backup.snap.part"));
  // A bad JSON file on stdin as well.
  RunResult r = RunCtl({"--endpoints", dead, "txn", "-"}, "not json", milliseconds(20000));
  EXPECT_EQ(r.code, kUsage) << Describe(r);
  EXPECT_NE(r.err.find("stdin is not valid JSON"), std::string::npos) << Describe(r);
}

TEST(CtlUsageTest, HelpForTheToolAndEveryCommand) {
  RunResult r = RunCtl({"--help"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  const std::vector<std::string> commands = {"get",
                                             "put",
                                             "del",
                                             "list",
                                             "range",
                                             "txn",
                                             "watch",
                                             "lease grant",
                                             "lease keepalive",
                                             "lease revoke",
                                             "lease list",
                                             "lease show",
                                             "status",
                                             "check",
                                             "member list",
                                             "member add",
                                             "member promote",
                                             "member remove",
                                             "leader transfer",
                                             "snapshot save"};
  for (const std::string& c : commands) {
    EXPECT_NE(r.out.find("  " + c + " "), std::string::npos) << c << "\n" << r.out;
    std::vector<std::string> args;
    std::istringstream words(c);
    for (std::string w; words >> w;) args.push_back(w);
    args.push_back("--help");
    RunResult h = RunCtl(args);
    EXPECT_EQ(h.code, kOk) << c << ": " << Describe(h);
    EXPECT_NE(h.out.find("Usage: raftkvctl " + c), std::string::npos) << Describe(h);
  }
  for (const char* needle : {"--endpoints", "--output", "--timeout", "Exit codes", "8 conflict"}) {
    EXPECT_NE(r.out.find(needle), std::string::npos) << needle;
  }
  RunResult put = RunCtl({"put", "--help"});
  for (const char* flag : {"--lease", "--if-mod-revision", "--if-version", "--create-only"}) {
    EXPECT_NE(put.out.find(flag), std::string::npos) << flag << "\n" << put.out;
  }
  RunResult add = RunCtl({"member", "add", "--help"});
  for (const char* flag : {"--raft", "--http", "--promote"}) {
    EXPECT_NE(add.out.find(flag), std::string::npos) << flag << "\n" << add.out;
  }
  RunResult help = RunCtl({"help", "lease", "keepalive"});
  EXPECT_EQ(help.code, kOk);
  EXPECT_NE(help.out.find("--once"), std::string::npos) << help.out;
  RunResult v = RunCtl({"--version"});
  EXPECT_EQ(v.code, kOk);
  EXPECT_TRUE(v.out.starts_with("raftkvctl ")) << v.out;
}

TEST(CtlUnavailableTest, ClosedPortsExitFiveWithinTheTimeout) {
  const std::string a = Addr(FreePort()), b = Addr(FreePort());
  const std::string eps = a + "," + b;
  const std::string backup = FreshPath("unavailable.snap");
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"get", "k"},
                                             {"put", "k", "v"},
                                             {"del", "k"},
                                             {"list"},
                                             {"watch", "k"},
                                             {"lease", "list"},
                                             {"lease", "keepalive", "5", "--once"},
                                             {"status"},
                                             {"member", "list"},
                                             {"member", "add", "n4", "--raft", "127.0.0.1:7"},
                                             {"member", "promote", "n4"},
                                             {"member", "remove", "n4"},
                                             {"leader", "transfer"},
                                             {"snapshot", "save", backup}}) {
    args.insert(args.begin(), {"--endpoints", eps, "--timeout", "2s"});
    RunResult r = RunCtl(args, "", milliseconds(20000));
    EXPECT_EQ(r.code, kUnavailable) << args[4] << ": " << Describe(r);
    EXPECT_LT(r.elapsed, milliseconds(8000)) << args[4];
    if (args[4] != "status") {
      EXPECT_NE(r.err.find(a), std::string::npos) << Describe(r);
      EXPECT_NE(r.err.find(b), std::string::npos) << Describe(r);
    }
  }
  EXPECT_FALSE(Exists(backup));
  EXPECT_FALSE(Exists(backup + ".part"));
  RunResult check =
      RunCtl({"--endpoints", eps, "--timeout", "1s", "check", "--duration", "1s", "--conns", "2"},
             "", milliseconds(20000));
  EXPECT_EQ(check.code, kUnavailable) << Describe(check);
}

// A listening TCP socket on 127.0.0.1:port.
int ListenOnLoopback(uint16_t port, int backlog) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(listen(fd, backlog), 0);
  return fd;
}

// A test server on 127.0.0.1 that reads each request (head and body) and
// answers the k-th with answers[k] (the last one again once they run out),
// then closes the connection. An empty answer closes it without one: the
// client cannot know whether a write was applied.
class TestServer {
 public:
  explicit TestServer(std::vector<std::string> answers = {""})
      : answers_(std::move(answers)), port_(FreePort()) {
    fd_ = ListenOnLoopback(port_, 16);
    thread_ = std::thread([this] { Serve(); });
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  std::string address() const { return Addr(port_); }
  int requests() const { return requests_; }
  // The request lines received ("DELETE /v1/members/n4?force HTTP/1.1").
  std::vector<std::string> request_lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }

 private:
  // Reads one request, the body's Content-Length bytes included (so that
  // closing does not reset the connection under the answer); bounded by a
  // 2 s wait for each read.
  static std::string ReadRequest(int c) {
    std::string request;
    char buf[4096];
    size_t want = std::string::npos;
    while (request.size() < want) {
      pollfd q{c, POLLIN, 0};
      if (poll(&q, 1, 2000) <= 0) break;
      ssize_t n = read(c, buf, sizeof buf);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
      const size_t head = request.find("\r\n\r\n");
      if (want == std::string::npos && head != std::string::npos) {
        std::string lower = request.substr(0, head);
        for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        const size_t cl = lower.find("\r\ncontent-length:");
        want = head + 4 + (cl == std::string::npos ? 0 : std::stoull(lower.substr(cl + 18)));
      }
    }
    return request;
  }

  void Serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      int c = accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      const std::string request = ReadRequest(c);
      if (!request.empty()) {
        const int k = requests_++;
        {
          std::lock_guard lock(mu_);
          lines_.push_back(request.substr(0, request.find("\r\n")));
        }
        const std::string& answer = answers_[std::min<size_t>(k, answers_.size() - 1)];
        for (size_t at = 0; at < answer.size();) {
          ssize_t n = send(c, answer.data() + at, answer.size() - at, MSG_NOSIGNAL);
          if (n <= 0) break;
          at += static_cast<size_t>(n);
        }
      }
      close(c);
    }
  }

  const std::vector<std::string> answers_;
  uint16_t port_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::vector<std::string> lines_;
  std::thread thread_;
};

// An HTTP/1.1 answer with a JSON body that closes the connection.
std::string Answer(int status, const std::string& body, const std::string& headers = "") {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n" + headers + "\r\n" + body;
}

TEST(CtlUnavailableTest, AWriteWithoutAnAnswerIsNotRetriedAndExitsSeven) {
  TestServer silent;
  const std::string closed = Addr(FreePort());
  const std::string eps = silent.address() + "," + closed;
  RunResult r = RunCtl({"--endpoints", eps, "--timeout", "3s", "put", "k", "v"});
  EXPECT_EQ(r.code, 7) << Describe(r);
  EXPECT_NE(r.err.find("may or may not have been applied"), std::string::npos) << r.err;
  EXPECT_EQ(silent.requests(), 1);  // Sent once, never again.
  // A read is sent again, to the next endpoint and the next round: then 5.
  r = RunCtl({"--endpoints", eps, "--timeout", "3s", "get", "k"});
  EXPECT_EQ(r.code, kUnavailable) << Describe(r);
  EXPECT_GE(silent.requests(), 3);
}

TEST(CtlUnavailableTest, AMembershipChangeWithoutAnAnswerIsNotRetriedAndExitsSeven) {
  const std::string closed = Addr(FreePort());
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"member", "add", "n4", "--raft", "127.0.0.1:7004"},
                                             {"member", "promote", "n4"},
                                             {"member", "remove", "n4", "--force"},
                                             {"leader", "transfer", "n2"},
                                             {"leader", "transfer"}}) {
    TestServer silent;
    args.insert(args.begin(), {"--endpoints", silent.address() + "," + closed, "--timeout", "3s"});
    RunResult r = RunCtl(args);
    EXPECT_EQ(r.code, kOutcomeUnknown) << args[4] << " " << args[5] << ": " << Describe(r);
    EXPECT_NE(r.err.find("may or may not have been applied"), std::string::npos) << r.err;
    EXPECT_EQ(silent.requests(), 1) << args[4] << " " << args[5];  // Sent once, never again.
  }
}

TEST(CtlMembersServerTest, A503MeansNotAppliedAndIsSentAgain) {
  // Another change in flight, then the addition goes through: 2 requests, exit 0.
  const std::string added = R"({"id":"n4","node_id":"1","raft":"127.0.0.1:7004","http":"",)"
                            R"("role":"learner"})";
  TestServer busy({Answer(503,
                          R"({"error":"a membership change is in progress",)"
                          R"("code":"membership_change_in_progress"})",
                          "Retry-After: 1\r\n"),
                   Answer(201, added)});
  RunResult r = RunCtl({"--endpoints", busy.address(), "-o", "json", "member", "add", "n4",
                        "--raft", "127.0.0.1:7004"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, added + "\n");
  EXPECT_EQ(busy.requests(), 2);
  for (const std::string& line : busy.request_lines()) EXPECT_EQ(line, "POST /v1/members HTTP/1.1");

  // No leader for a while, then the transfer answers.
  TestServer election({Answer(503, R"({"error":"no leader","code":"no_leader"})"),
                       Answer(200, R"({"leader":"n2","term":9})")});
  r = RunCtl({"--endpoints", election.address(), "leader", "transfer", "n2"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "leader is n2 (term 9)\n");
  EXPECT_EQ(election.requests(), 2);

  // A 503 that lasts: not applied, exit 5 within the timeout.
  TestServer stuck({Answer(503, R"({"error":"busy","code":"membership_change_in_progress"})",
                           "Retry-After: 1\r\n")});
  r = RunCtl({"--endpoints", stuck.address(), "--timeout", "2s", "member", "remove", "n4"});
  EXPECT_EQ(r.code, kUnavailable) << Describe(r);
  EXPECT_NE(r.err.find("membership_change_in_progress"), std::string::npos) << r.err;
  EXPECT_GE(stuck.requests(), 2);
  EXPECT_EQ(stuck.request_lines().at(0), "DELETE /v1/members/n4 HTTP/1.1");
}

TEST(CtlMembersServerTest, ATransferTimeoutIsAnUnknownOutcomeAndABadAnswerAnError) {
  // 504: leadership did not move in time but still may: exit 7, not sent again.
  TestServer slow({Answer(504, R"({"error":"leadership did not move","code":"timeout"})")});
  RunResult r = RunCtl({"--endpoints", slow.address(), "leader", "transfer", "n2"});
  EXPECT_EQ(r.code, kOutcomeUnknown) << Describe(r);
  EXPECT_NE(r.err.find("may or may not take effect"), std::string::npos) << r.err;
  EXPECT_EQ(slow.requests(), 1);
  EXPECT_EQ(slow.request_lines().at(0), "POST /v1/leader/transfer HTTP/1.1");

  // A member list that is not JSON: exit 1 naming the endpoint.
  TestServer garbage({Answer(200, "<html>")});
  r = RunCtl({"--endpoints", garbage.address(), "member", "list"});
  EXPECT_EQ(r.code, kError) << Describe(r);
  EXPECT_NE(r.err.find(garbage.address()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not a JSON object"), std::string::npos) << r.err;
}

// --- snapshot save against a test server ---------------------------------------

// A stand-in for an image: `n` pseudo-random bytes and their XXH3-64,
// little-endian (docs/wire-format.md §3). The tool checks nothing else.
std::string FakeImage(size_t n) {
  std::string image(n, '\0');
  uint64_t x = 88172645463325252ULL;
  for (char& c : image) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<char>(x);
  }
  const uint64_t sum = XXH3_64bits(image.data(), image.size());
  for (int i = 0; i < 8; i++) image.push_back(static_cast<char>(sum >> (8 * i)));
  return image;
}

uint64_t Trailer(const std::string& image) {
  uint64_t t = 0;
  for (int i = 7; i >= 0; i--)
    t = (t << 8) | static_cast<unsigned char>(image[image.size() - 8 + i]);
  return t;
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "xxh3-64=%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// GET /v1/snapshot's answer: `body`, announced as `length` bytes, with the
// checksum header given.
std::string SnapshotAnswer(const std::string& body, const std::string& checksum,
                           size_t length = std::string::npos) {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
         std::to_string(length == std::string::npos ? body.size() : length) +
         "\r\nX-Raftkv-Revision: 42\r\n" +
         (checksum.empty() ? "" : "X-Raftkv-Checksum: " + checksum + "\r\n") +
         "Connection: close\r\n\r\n" + body;
}

TEST(CtlSnapshotTest, AGoodImageIsSavedWhole) {
  const std::string image = FakeImage(300000);  // Many reads' worth.
  TestServer server({SnapshotAnswer(image, Hex(Trailer(image)))});
  const std::string file = FreshPath("good.snap");
  RunResult r = RunCtl({"--endpoints", server.address(), "snapshot", "save", file});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "snapshot saved to " + file + ": revision 42, " + std::to_string(image.size()) +
                       " bytes, " + Hex(Trailer(image)) + " (from " + server.address() + ")\n");
  EXPECT_TRUE(ReadWhole(file) == image);
  EXPECT_FALSE(Exists(file + ".part"));
  EXPECT_EQ(std::filesystem::status(file).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(server.request_lines().at(0), "GET /v1/snapshot HTTP/1.1");

  // --force replaces it; -o json; --stale asks for the node's own state.
  const std::string other = FakeImage(1000);
  TestServer second({SnapshotAnswer(other, Hex(Trailer(other)))});
  r = RunCtl({"--endpoints", second.address(), "-o", "json", "snapshot", "save", file, "--force",
              "--stale"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  json::object o = Object(r.out);
  EXPECT_EQ(itest::Str(o.at("file")), file);
  EXPECT_EQ(itest::Num(o.at("revision")), 42u);
  EXPECT_EQ(itest::Num(o.at("size")), other.size());
  EXPECT_EQ(itest::Str(o.at("checksum")), Hex(Trailer(other)));
  EXPECT_EQ(itest::Str(o.at("endpoint")), second.address());
  EXPECT_TRUE(ReadWhole(file) == other);
  EXPECT_EQ(second.request_lines().at(0), "GET /v1/snapshot?consistency=stale HTTP/1.1");
  std::filesystem::remove(file);
}

TEST(CtlSnapshotTest, ACorruptedDownloadIsDetectedAndNothingSaved) {
  const std::string image = FakeImage(100000);
  std::string damaged = image;
  damaged[54321] ^= 0x04;
  std::string bad_trailer = image;
  bad_trailer.back() ^= 0x01;
  struct Case {
    std::string what, answer, needle;
    int code;
  };
  const std::vector<Case> cases = {
      {"a flipped byte", SnapshotAnswer(damaged, Hex(Trailer(image))), "checksum mismatch", kError},
      {"a bad trailer", SnapshotAnswer(bad_trailer, Hex(Trailer(image))), "checksum mismatch",
       kError},
      {"a header that differs", SnapshotAnswer(image, Hex(Trailer(image) ^ 1)), "checksum mismatch",
       kError},
      {"no checksum header", SnapshotAnswer(image, ""), "X-Raftkv-Checksum", kError},
      {"a malformed checksum header", SnapshotAnswer(image, "crc32=1234"), "X-Raftkv-Checksum",
       kError},
      {"too short", SnapshotAnswer("1234", Hex(0)), "too short", kError},
      {"cut short", SnapshotAnswer(image.substr(0, 60000), Hex(Trailer(image)), image.size()),
       "broke off after 60000 of 100008 bytes", kUnavailable},
  };
  for (const Case& c : cases) {
    TestServer server({c.answer});
    const std::string file = FreshPath("bad.snap");
    RunResult r = RunCtl({"--endpoints", server.address(), "snapshot", "save", file});
    EXPECT_EQ(r.code, c.code) << c.what << ": " << Describe(r);
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.what << ": " << r.err;
    EXPECT_EQ(r.out, "") << c.what;
    EXPECT_FALSE(Exists(file)) << c.what;
    EXPECT_FALSE(Exists(file + ".part")) << c.what;
    EXPECT_EQ(server.requests(), 1) << c.what;  // Not asked again.
  }
}

TEST(CtlSnapshotTest, A503IsAskedAgainAndARefusalExitsOne) {
  const std::string image = FakeImage(5000);
  TestServer busy({Answer(503, R"({"error":"no leader","code":"no_leader"})", "Retry-After: 1\r\n"),
                   SnapshotAnswer(image, Hex(Trailer(image)))});
  const std::string file = FreshPath("retried.snap");
  RunResult r = RunCtl({"--endpoints", busy.address(), "snapshot", "save", file});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(busy.requests(), 2);
  EXPECT_TRUE(ReadWhole(file) == image);
  std::filesystem::remove(file);

  TestServer old({Answer(404, R"({"error":"no such route","code":"not_found"})")});
  const std::string file2 = FreshPath("refused.snap");
  r = RunCtl({"--endpoints", old.address(), "snapshot", "save", file2});
  EXPECT_EQ(r.code, kError) << Describe(r);
  EXPECT_NE(r.err.find("404 not_found"), std::string::npos) << r.err;
  EXPECT_FALSE(Exists(file2));
  EXPECT_FALSE(Exists(file2 + ".part"));
}

// --- Review fixes, against test servers ----------------------------------------

// A socket that listens and never accepts: the kernel completes the TCP
// handshake and takes the request into its buffers, and no answer ever
// comes (a hung or SIGSTOPped node).
class HungServer {
 public:
  HungServer() : port_(FreePort()) { fd_ = ListenOnLoopback(port_, 64); }
  ~HungServer() { close(fd_); }
  HungServer(const HungServer&) = delete;
  HungServer& operator=(const HungServer&) = delete;
  std::string address() const { return Addr(port_); }

 private:
  uint16_t port_;
  int fd_ = -1;
};

TEST(CtlOutcomeTest, AWriteAnswered504WithoutACodeIsAnUnknownOutcome) {
  // A follower whose leader died while it forwarded: 504 without a "code"
  // (or without JSON at all). The write may have been applied: 7, sent once.
  for (const std::string& body :
       {std::string(R"({"error":"the leader did not answer in time"})"), std::string("timeout")}) {
    for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
             {"put", "k", "v"}, {"del", "k"}, {"lease", "grant", "10"}, {"lease", "revoke", "5"}}) {
      TestServer server({Answer(504, body)});
      args.insert(args.begin(), {"--endpoints", server.address(), "--timeout", "3s"});
      RunResult r = RunCtl(args);
      EXPECT_EQ(r.code, kOutcomeUnknown) << args[4] << " (" << body << "): " << Describe(r);
      EXPECT_NE(r.err.find("may or may not have been applied"), std::string::npos) << r.err;
      EXPECT_EQ(server.requests(), 1) << args[4];  // Never sent again.
    }
  }
  // A read answered 504 is asked again, and ends as unavailable.
  TestServer server({Answer(504, R"({"error":"the leader did not answer in time"})")});
  RunResult r = RunCtl({"--endpoints", server.address(), "--timeout", "1s", "get", "k"});
  EXPECT_EQ(r.code, kUnavailable) << Describe(r);
  EXPECT_GE(server.requests(), 2);
}

TEST(CtlOutputTest, StdoutThatCannotBeWrittenExitsOne) {
  const std::string kv = R"({"key":"k","value":"v","create_revision":2,"mod_revision":2,)"
                         R"("version":1,"lease":0})";
  TestServer server({Answer(200, kv)});
  const std::string ctl = RAFTKVCTL_BIN;
  Child child({"/bin/sh", "-c",
               "exec '" + ctl + "' --endpoints " + server.address() + " get k >/dev/full"});
  ASSERT_EQ(child.Wait(milliseconds(20000)), kError) << child.err();
  EXPECT_EQ(child.err(), "raftkvctl: writing stdout: No space left on device\n");
  EXPECT_EQ(server.requests(), 1);
  // The same command with a stdout that works prints the value and exits 0.
  TestServer again({Answer(200, kv)});
  RunResult r = RunCtl({"--endpoints", again.address(), "get", "k"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "v\n");
}

TEST(CtlFailoverTest, ReadsMovePastAHungEndpointAndWritesDoNot) {
  HungServer hung;
  const std::string kv = R"({"key":"k","value":"v","create_revision":2,"mod_revision":2,)"
                         R"("version":1,"lease":0})";
  TestServer good({Answer(200, kv)});
  const std::string eps = hung.address() + "," + good.address();
  // Each attempt of a read gets max(1s, 4s / 2 endpoints): the second
  // endpoint answers well within the timeout.
  RunResult r = RunCtl({"--endpoints", eps, "--timeout", "4s", "get", "k"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "v\n");
  EXPECT_LT(r.elapsed, milliseconds(3800));
  EXPECT_EQ(good.requests(), 1);

  // watch: the same for its stream's head.
  const std::string stream =
      "{\"type\":\"created\",\"revision\":5}\n"
      "{\"type\":\"events\",\"revision\":6,\"events\":[{\"type\":\"put\",\"kv\":"
      "{\"key\":\"k\",\"value\":\"w\",\"create_revision\":6,\"mod_revision\":6,\"version\":1}}]}\n";
  TestServer watched({Answer(200, stream)});
  r = RunCtl({"--endpoints", hung.address() + "," + watched.address(), "--timeout", "4s", "watch",
              "k", "--max-events", "1"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "PUT\nk\nw\n");
  EXPECT_LT(r.elapsed, milliseconds(3800));

  // snapshot save: the same until the image's head.
  const std::string image = FakeImage(2000);
  TestServer backup({SnapshotAnswer(image, Hex(Trailer(image)))});
  const std::string file = FreshPath("hung.snap");
  r = RunCtl({"--endpoints", hung.address() + "," + backup.address(), "--timeout", "4s", "snapshot",
              "save", file});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_TRUE(ReadWhole(file) == image);
  EXPECT_LT(r.elapsed, milliseconds(3800));
  std::filesystem::remove(file);

  // A write waits for its answer until the timeout and is never sent on.
  TestServer other({Answer(200, R"({"revision":3})")});
  r = RunCtl(
      {"--endpoints", hung.address() + "," + other.address(), "--timeout", "2s", "put", "k", "v"});
  EXPECT_EQ(r.code, kOutcomeUnknown) << Describe(r);
  EXPECT_GE(r.elapsed, milliseconds(1900));
  EXPECT_EQ(other.requests(), 0);
}

TEST(CtlWatchTest, AStreamThatEndsAtOnceIsNotReconnectedInAHotLoop) {
  // 200 and a created message, then the end: the node never serves the
  // watch. It must back off between attempts and give up after --timeout.
  TestServer flaky({Answer(200, "{\"type\":\"created\",\"revision\":5}\n")});
  RunResult r = RunCtl({"--endpoints", flaky.address(), "--timeout", "2s", "watch", "k"}, "",
                       milliseconds(15000));
  EXPECT_EQ(r.code, kUnavailable) << Describe(r);
  EXPECT_NE(r.err.find("no endpoint served the watch"), std::string::npos) << r.err;
  EXPECT_LT(r.elapsed, milliseconds(6000));
  // 100 ms doubling to 1 s between attempts: a handful in 2 s.
  EXPECT_GE(flaky.requests(), 3);
  EXPECT_LE(flaky.requests(), 10);
}

// Counts the "kept alive" lines of lease keepalive's output.
size_t Renewals(const std::string& out) {
  size_t n = 0;
  for (size_t p = 0; (p = out.find("kept alive", p)) != std::string::npos; p++) n++;
  return n;
}

TEST(CtlLeaseTest, KeepaliveRetriesAFailedRenewalWhileTheLeaseLasts) {
  // A renewal fails (503 for the whole of a short --timeout), the next one
  // succeeds: the loop keeps going.
  const std::string renewed = Answer(200, R"({"id":5,"ttl":2})");
  const std::string busy =
      Answer(503, R"({"error":"no leader","code":"no_leader"})", "Retry-After: 1\r\n");
  TestServer server({renewed, busy, renewed});
  Child loop({RAFTKVCTL_BIN, "--endpoints", server.address(), "--timeout", "300ms", "lease",
              "keepalive", "5"});
  EXPECT_TRUE(loop.ReadUntil([](const std::string& out) { return Renewals(out) >= 3; },
                             milliseconds(15000)))
      << loop.out() << loop.err();
  EXPECT_NE(loop.err().find("no_leader"), std::string::npos) << loop.err();
  EXPECT_NE(loop.err().find("trying again"), std::string::npos) << loop.err();
  loop.Signal(SIGTERM);
  EXPECT_EQ(loop.Wait(milliseconds(5000)), kOk) << loop.err();
  EXPECT_GE(server.requests(), 4);

  // Renewals that keep failing: exit 5 once the TTL (1 s) has passed since
  // the last success, having tried more than once.
  TestServer down({Answer(200, R"({"id":5,"ttl":1})"), busy});
  RunResult r =
      RunCtl({"--endpoints", down.address(), "--timeout", "300ms", "lease", "keepalive", "5"}, "",
             milliseconds(15000));
  EXPECT_EQ(r.code, kUnavailable) << Describe(r);
  EXPECT_EQ(Renewals(r.out), 1u) << r.out;
  EXPECT_NE(r.err.find("within its TTL"), std::string::npos) << r.err;
  EXPECT_GE(down.requests(), 3);
  EXPECT_LT(r.elapsed, milliseconds(5000));

  // The lease gone: exit 3 at once.
  TestServer gone({Answer(200, R"({"id":5,"ttl":2})"),
                   Answer(404, R"({"error":"no such lease","code":"lease_not_found"})")});
  r = RunCtl({"--endpoints", gone.address(), "lease", "keepalive", "5"}, "", milliseconds(15000));
  EXPECT_EQ(r.code, kNotFound) << Describe(r);
  EXPECT_NE(r.err.find("not found: lease 5"), std::string::npos) << r.err;
  EXPECT_EQ(gone.requests(), 2);
}

TEST(CtlCheckServerTest, PutsRefusedByTheClusterExitOneAndACleanupFailureIsReported) {
  // Every put refused with a 400, the cleanup too: the cluster answered, so
  // 1 (not 5), and the cleanup's failure is in the message.
  TestServer refusing({Answer(400, R"({"error":"value too large","code":"invalid_argument"})")});
  RunResult r = RunCtl({"--endpoints", refusing.address(), "check", "--requests", "3", "--conns",
                        "1", "--prefix", "chk/"});
  EXPECT_EQ(r.code, kError) << Describe(r);
  EXPECT_NE(r.err.find("no put succeeded"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("400 invalid_argument"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cleanup"), std::string::npos) << r.err;
  const std::vector<std::string> lines = refusing.request_lines();
  ASSERT_EQ(lines.size(), 4u);
  // The run's own subprefix, and only it, is deleted.
  std::smatch put, del;
  ASSERT_TRUE(std::regex_match(lines[0], put,
                               std::regex("PUT /v1/kv/(chk/check-[0-9a-f]{16}/)c0/0 HTTP/1.1")))
      << lines[0];
  ASSERT_TRUE(std::regex_match(lines[3], del,
                               std::regex("DELETE /v1/kv/(.*)\\?prefix&limit=10000 HTTP/1.1")))
      << lines[3];
  EXPECT_EQ(put[1].str(), del[1].str());
}

TEST(CtlUsageTest, GroupHelpAndABadEnvironmentVariable) {
  RunResult a = RunCtl({"help", "lease"});
  RunResult b = RunCtl({"lease", "--help"});
  EXPECT_EQ(a.code, kOk) << Describe(a);
  EXPECT_EQ(b.code, kOk) << Describe(b);
  EXPECT_EQ(a.out, b.out);
  for (const char* sub :
       {"lease grant", "lease keepalive", "lease revoke", "lease list", "lease show"}) {
    EXPECT_NE(a.out.find("  " + std::string(sub) + " "), std::string::npos) << sub << a.out;
  }
  EXPECT_EQ(a.out.find("member add"), std::string::npos) << a.out;
  EXPECT_EQ(RunCtl({"help", "member"}).code, kOk);

  // leader transfer's help names not_active.
  RunResult t = RunCtl({"leader", "transfer", "--help"});
  EXPECT_NE(t.out.find("not_active"), std::string::npos) << t.out;

  // A bad $RAFTKV_ENDPOINTS is named as such, not as a flag.
  RunResult r = RunCtl({"get", "k"}, "", milliseconds(20000), {"RAFTKV_ENDPOINTS=nohostport"});
  EXPECT_EQ(r.code, kUsage) << Describe(r);
  EXPECT_NE(r.err.find("$RAFTKV_ENDPOINTS"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("--endpoints"), std::string::npos) << r.err;
  // --endpoints overrides it, and is named when it is the bad one.
  r = RunCtl({"--endpoints", "bad", "get", "k"}, "", milliseconds(20000),
             {"RAFTKV_ENDPOINTS=127.0.0.1:1"});
  EXPECT_EQ(r.code, kUsage) << Describe(r);
  EXPECT_NE(r.err.find("--endpoints"), std::string::npos) << r.err;
}

// --- Against a 3-node cluster --------------------------------------------------

class CtlClusterTest : public testing::Test {
 protected:
  void SetUp() override {
    cluster_.StartAll();
    ASSERT_FALSE(HasFatalFailure());
  }

  std::string Endpoints(const std::vector<int>& nodes) const {
    std::string out;
    for (int i : nodes) out += (out.empty() ? "" : ",") + Addr(cluster_.http_port(i));
    return out;
  }
  std::string All() const { return Endpoints({0, 1, 2}); }

  // raftkvctl with every node as an endpoint.
  RunResult Ctl(std::vector<std::string> args, const std::string& in = "") {
    args.insert(args.begin(), {"--endpoints", All()});
    return RunCtl(args, in);
  }

  uint64_t Applied(int i) {
    auto st = cluster_.Status(i);
    return st ? st->at("applied").to_number<uint64_t>() : 0;
  }

  Cluster cluster_{3};
};

TEST_F(CtlClusterTest, PutGetDelAndTheirExitCodes) {
  RunResult r = Ctl({"put", "a/k", "v1"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, std::regex("OK \\(revision (\\d+)\\)\n"))) << r.out;
  const uint64_t rev1 = std::stoull(m[1]);

  r = Ctl({"get", "a/k"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "v1\n");
  r = Ctl({"-o", "json", "get", "a/k"});
  json::object kv = Object(r.out);
  EXPECT_EQ(itest::Str(kv.at("value")), "v1");
  EXPECT_EQ(itest::Num(kv.at("mod_revision")), rev1);
  EXPECT_EQ(itest::Num(kv.at("version")), 1u);

  // Not found: exit 3, nothing on stdout.
  r = Ctl({"get", "a/missing"});
  EXPECT_EQ(r.code, kNotFound) << Describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("not found: key \"a/missing\""), std::string::npos) << r.err;

  // Conditions: exit 4 when they do not hold; json mode prints the key as it is.
  r = Ctl({"put", "a/k", "v2", "--if-mod-revision", std::to_string(rev1 + 1000)});
  EXPECT_EQ(r.code, kCompareFailed) << Describe(r);
  EXPECT_NE(r.err.find("compare failed"), std::string::npos) << r.err;
  r = Ctl({"-o", "json", "put", "a/k", "v2", "--if-version", "7"});
  EXPECT_EQ(r.code, kCompareFailed) << Describe(r);
  EXPECT_EQ(itest::Str(Object(r.out).at("code")), "compare_failed");
  r = Ctl({"put", "a/k", "v2", "--if-mod-revision", std::to_string(rev1)});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  r = Ctl({"put", "a/k", "v3", "--create-only"});
  EXPECT_EQ(r.code, kCompareFailed) << Describe(r);
  r = Ctl({"put", "a/new", "n", "--create-only"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  r = Ctl({"put", "a/k", "v3", "--if-version", "2", "--prev-kv"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_NE(r.out.find("previous value:\nv2\n"), std::string::npos) << r.out;

  // Values from stdin, any bytes; keys with characters a URL reserves.
  const std::string bytes = std::string("line1\nline 2 \xff\x00 end", 20);
  r = Ctl({"put", "a/bin", "-"}, bytes);
  EXPECT_EQ(r.code, kOk) << Describe(r);
  r = Ctl({"get", "a/bin"});
  EXPECT_EQ(r.out, bytes + "\n");
  const std::string odd = "a/we ird?%#&+key";
  EXPECT_EQ(Ctl({"put", odd, "odd"}).code, kOk);
  r = Ctl({"get", odd});
  EXPECT_EQ(r.out, "odd\n") << Describe(r);
  r = Ctl({"put", "--", "a/neg", "-5"});  // After "--", "-5" is a value.
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(Ctl({"get", "a/neg"}).out, "-5\n");

  // Read levels.
  r = Ctl({"-o", "json", "put", "a/k", "v4"});
  const uint64_t rev4 = itest::Num(Object(r.out).at("revision"));
  r = Ctl({"get", "a/k", "--stale", "--rev", std::to_string(rev4)});  // Read-your-writes.
  EXPECT_EQ(r.out, "v4\n") << Describe(r);
  r = Ctl({"get", "a/k", "--stale", "--rev", std::to_string(rev4), "--max-staleness", "10s"});
  EXPECT_EQ(r.out, "v4\n") << Describe(r);
  EXPECT_EQ(Ctl({"get", "a/k", "--rev", std::to_string(rev4)}).out, "v4\n");

  // A lease that does not exist: not found.
  r = Ctl({"put", "a/l", "v", "--lease", "987654"});
  EXPECT_EQ(r.code, kNotFound) << Describe(r);

  // Deletes: the count, 0 for a missing key (not an error), conditions.
  r = Ctl({"del", "a/k"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "1\n");
  r = Ctl({"del", "a/k"});
  EXPECT_EQ(r.code, kOk);
  EXPECT_EQ(r.out, "0\n");
  EXPECT_EQ(Ctl({"get", "a/k"}).code, kNotFound);
  r = Ctl({"del", "a/new", "--if-version", "5"});
  EXPECT_EQ(r.code, kCompareFailed) << Describe(r);
  r = Ctl({"del", "a/", "--prefix", "--prev-kv"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(Lines(r.out).at(0), "4") << r.out;  // a/new, a/bin, the odd key and a/neg.
  EXPECT_NE(r.out.find("a/new\nn\n"), std::string::npos) << r.out;
  r = Ctl({"list", "a/"});
  EXPECT_EQ(r.code, kOk);
  EXPECT_EQ(r.out, "");
}

TEST_F(CtlClusterTest, ListAndRangeFollowEveryPage) {
  HttpClient http(cluster_.http_port(0));
  char key[16];
  for (int i = 0; i < 25; i++) {
    std::snprintf(key, sizeof key, "l/%02d", i);
    ASSERT_EQ(http.Request("PUT", std::string("/v1/kv/") + key,
                           "{\"value\":\"v" + std::to_string(i) + "\"}")
                  .status,
              200);
  }
  ASSERT_EQ(http.Request("PUT", "/v1/kv/m/x", "{\"value\":\"x\"}").status, 200);

  RunResult r = Ctl({"list", "l/", "--page-size", "4"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 50u) << r.out;
  for (int i = 0; i < 25; i++) {
    std::snprintf(key, sizeof key, "l/%02d", i);
    EXPECT_EQ(lines[2 * i], key);
    EXPECT_EQ(lines[2 * i + 1], "v" + std::to_string(i));
  }
  EXPECT_EQ(Lines(Ctl({"list", "l/", "--page-size", "4", "--keys-only"}).out).size(), 25u);
  EXPECT_EQ(Lines(Ctl({"get", "l/", "--prefix", "--keys-only"}).out).size(), 25u);
  EXPECT_EQ(Lines(Ctl({"list", "--keys-only"}).out).size(), 26u);
  r = Ctl({"list", "l/", "--limit", "7", "--page-size", "3", "--keys-only"});
  EXPECT_EQ(Lines(r.out).size(), 7u) << r.out;
  EXPECT_EQ(Lines(r.out).back(), "l/06");

  // json: one document shaped like a page, every page merged.
  json::object all = Object(Ctl({"-o", "json", "list", "l/", "--page-size", "4"}).out);
  EXPECT_EQ(all.at("kvs").as_array().size(), 25u);
  EXPECT_FALSE(all.at("more").as_bool());
  EXPECT_EQ(itest::Num(all.at("watch_from")), itest::Num(all.at("revision")) + 1);
  json::object some = Object(Ctl({"-o", "json", "list", "l/", "--limit", "7"}).out);
  EXPECT_EQ(some.at("kvs").as_array().size(), 7u);
  EXPECT_TRUE(some.at("more").as_bool());
  EXPECT_TRUE(some.contains("continue"));

  // [from, to), paged.
  r = Ctl({"range", "l/05", "l/15", "--page-size", "3", "--keys-only"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 10u) << r.out;
  EXPECT_EQ(lines.front(), "l/05");
  EXPECT_EQ(lines.back(), "l/14");
  json::object part = Object(Ctl({"-o", "json", "range", "l/05", "l/15", "--limit", "4"}).out);
  EXPECT_EQ(part.at("kvs").as_array().size(), 4u);
  EXPECT_TRUE(part.at("more").as_bool());
}

TEST_F(CtlClusterTest, TxnFromAFileAndFromStdin) {
  ASSERT_EQ(Ctl({"put", "t/a", "1"}).code, kOk);
  const std::string txn = R"({"compare":[{"key":"t/a","target":"value","op":"=","value":"1"}],)"
                          R"("success":[{"put":{"key":"t/b","value":"2"}},{"get":{"key":"t/a"}}],)"
                          R"("failure":[{"get":{"key":"t/a"}}]})";
  const std::string file = WriteTemp("txn.json", txn);
  RunResult r = Ctl({"txn", file});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  EXPECT_TRUE(r.out.starts_with("SUCCESS (revision ")) << r.out;
  EXPECT_NE(r.out.find("put t/b\nt/a\n1\n"), std::string::npos) << r.out;
  EXPECT_EQ(Ctl({"get", "t/b"}).out, "2\n");

  r = Ctl({"txn", "-"}, txn);
  EXPECT_EQ(r.code, kOk) << Describe(r);
  r = Ctl({"-o", "json", "txn"}, txn);  // No FILE: stdin.
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_TRUE(Object(r.out).at("succeeded").as_bool());

  // A compare that fails: the failure branch's results, exit 4.
  std::string failing = txn;
  failing.replace(failing.find("\"value\":\"1\""), 11, "\"value\":\"9\"");
  r = Ctl({"-o", "json", "txn", "-"}, failing);
  EXPECT_EQ(r.code, kCompareFailed) << Describe(r);
  EXPECT_FALSE(Object(r.out).at("succeeded").as_bool());
  r = Ctl({"txn", "-"}, failing);
  EXPECT_TRUE(r.out.starts_with("FAILURE")) << r.out;

  // A write-free transaction (retried freely) and the stale read level.
  r = Ctl({"txn", "--stale", "-"}, R"({"success":[{"range":{"prefix":"t/"}}]})");
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_NE(r.out.find("t/a\n1\nt/b\n2\n"), std::string::npos) << r.out;

  // The server refuses a body it cannot parse: exit 1, its reason on stderr.
  r = Ctl({"txn", "-"}, R"({"success":[{"bogus":{}}]})");
  EXPECT_EQ(r.code, kError) << Describe(r);
  EXPECT_NE(r.err.find("invalid_argument"), std::string::npos) << r.err;
}

TEST_F(CtlClusterTest, LeaseCommands) {
  RunResult r = Ctl({"-o", "json", "lease", "grant", "30"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  const std::string id = std::to_string(itest::Num(Object(r.out).at("id")));
  ASSERT_EQ(Ctl({"put", "lk/a", "v", "--lease", id}).code, kOk);

  r = Ctl({"lease", "show", id, "--keys"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_NE(r.out.find("lease " + id + ": TTL 30s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nlk/a\n"), std::string::npos) << r.out;
  r = Ctl({"lease", "list"});
  EXPECT_NE(r.out.find(id + "  "), std::string::npos) << r.out;
  r = Ctl({"lease", "keepalive", id, "--once"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "lease " + id + " kept alive, TTL 30s\n");

  // The loop: a renewal every TTL/3 until SIGINT, then exit 0.
  r = Ctl({"-o", "json", "lease", "grant", "3"});
  const uint64_t short_id = itest::Num(Object(r.out).at("id"));
  Child loop({RAFTKVCTL_BIN, "--endpoints", All(), "lease", "keepalive", std::to_string(short_id)});
  auto renewals = [](const std::string& out) {
    size_t n = 0;
    for (size_t p = 0; (p = out.find("kept alive", p)) != std::string::npos; p++) n++;
    return n;
  };
  EXPECT_TRUE(loop.ReadUntil([&](const std::string& out) { return renewals(out) >= 3; },
                             milliseconds(15000)))
      << loop.out() << loop.err();
  loop.Signal(SIGINT);
  EXPECT_EQ(loop.Wait(milliseconds(10000)), kOk) << loop.err();

  r = Ctl({"lease", "revoke", id});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "lease " + id + " revoked, 1 keys deleted\n");
  EXPECT_EQ(Ctl({"get", "lk/a"}).code, kNotFound);
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"lease", "revoke", id}, {"lease", "show", id}, {"lease", "keepalive", id, "--once"}}) {
    r = Ctl(args);
    EXPECT_EQ(r.code, kNotFound) << args[1] << ": " << Describe(r);
    EXPECT_NE(r.err.find("not found: lease " + id), std::string::npos) << r.err;
  }
  EXPECT_EQ(Ctl({"lease", "grant", "30", "--id", "777"}).code, kOk);
  r = Ctl({"lease", "grant", "30", "--id", "777"});
  EXPECT_EQ(r.code, kError) << Describe(r);
  EXPECT_NE(r.err.find("lease_exists"), std::string::npos) << r.err;
}

TEST_F(CtlClusterTest, FailsOverPastDeadEndpoints) {
  const std::string closed = Addr(FreePort());
  RunResult r = RunCtl({"--endpoints", closed + "," + All(), "put", "f/k", "v"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  r = RunCtl({"--endpoints", closed + "," + All(), "get", "f/k"});
  EXPECT_EQ(r.out, "v\n") << Describe(r);
  // The endpoints from the environment.
  r = RunCtl({"get", "f/k"}, "", milliseconds(60000), {"RAFTKV_ENDPOINTS=" + closed + "," + All()});
  EXPECT_EQ(r.out, "v\n") << Describe(r);

  // The first endpoint is a node SIGKILLed (the leader, so that writes also
  // wait out an election: 503s until a new leader, retried).
  const int leader = cluster_.FindLeader();
  ASSERT_GE(leader, 0);
  std::vector<int> order = {leader};
  for (int i = 0; i < 3; i++) {
    if (i != leader) order.push_back(i);
  }
  cluster_.Kill(leader);
  r = RunCtl({"--endpoints", Endpoints(order), "put", "f/k", "after"});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  r = RunCtl({"--endpoints", Endpoints(order), "get", "f/k"});
  EXPECT_EQ(r.out, "after\n") << Describe(r);
}

// Events of a prefix as they are written, in json: one message per line.
struct Event {
  std::string key;
  uint64_t revision;
};
std::vector<Event> ParseEvents(const std::string& out) {
  std::vector<Event> events;
  for (const std::string& line : Lines(out)) {
    json::object m = Object(line);
    if (!m.contains("events")) continue;
    for (const json::value& e : m.at("events").as_array()) {
      events.push_back({itest::Str(e.at("kv").at("key")), itest::Num(m.at("revision"))});
    }
  }
  return events;
}

TEST_F(CtlClusterTest, WatchPrintsEventsAndResumesAcrossAKill) {
  const int leader = cluster_.FindLeader();
  ASSERT_GE(leader, 0);
  const int watched = (leader + 1) % 3, other = (leader + 2) % 3;
  // From the next revision on: no race with the first writes.
  const uint64_t from = Applied(watched) + 1;
  Child watch({RAFTKVCTL_BIN, "--endpoints", Endpoints({watched, other, leader}), "-o", "json",
               "watch", "w/", "--prefix", "--rev", std::to_string(from), "--max-events", "20"});
  HttpClient http(cluster_.http_port(leader));
  auto put = [&](int i) {
    auto r = http.Request("PUT", "/v1/kv/w/" + std::to_string(i), "{\"value\":\"x\"}");
    ASSERT_EQ(r.status, 200) << r.body;
  };
  for (int i = 0; i < 10; i++) put(i);
  ASSERT_TRUE(watch.ReadUntil([](const std::string& out) { return ParseEvents(out).size() >= 10; },
                              milliseconds(15000)))
      << watch.out() << watch.err();

  cluster_.Kill(watched);  // The node the stream came from.
  for (int i = 10; i < 20; i++) put(i);
  ASSERT_EQ(watch.Wait(milliseconds(30000)), kOk) << watch.out() << watch.err();
  std::vector<Event> events = ParseEvents(watch.out());
  ASSERT_EQ(events.size(), 20u) << watch.out();
  for (int i = 0; i < 20; i++) {
    EXPECT_EQ(events[i].key, "w/" + std::to_string(i));
    if (i > 0) {
      EXPECT_GT(events[i].revision, events[i - 1].revision);
    }
  }
  EXPECT_NE(watch.err().find("resuming at revision"), std::string::npos) << watch.err();

  // Restarted, the node serves a new watch "from now" in table form.
  cluster_.Restart(watched);
  Child now(
      {RAFTKVCTL_BIN, "--endpoints", Endpoints({watched}), "watch", "w/now", "--max-events", "2"});
  // Its stream is open once the node counts a watcher.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = cluster_.Status(watched);
        return st && st->contains("watch") &&
               st->at("watch").as_object().at("watchers").to_number<uint64_t>() >= 1;
      },
      milliseconds(10000)));
  HttpClient http2(cluster_.http_port(leader));
  ASSERT_EQ(http2.Request("PUT", "/v1/kv/w/now", "{\"value\":\"a\"}").status, 200);
  ASSERT_EQ(http2.Request("DELETE", "/v1/kv/w/now").status, 200);
  EXPECT_EQ(now.Wait(milliseconds(15000)), kOk) << now.err();
  EXPECT_EQ(now.out(), "PUT\nw/now\na\nDELETE\nw/now\n");
}

TEST(CtlWatchTest, ARevisionOutOfTheHistoryExitsCompacted) {
  Cluster cluster(3, {"--watch-history-revisions", "10"});
  cluster.StartAll();
  ASSERT_FALSE(testing::Test::HasFatalFailure());
  HttpClient http(cluster.http_port(0));
  for (int i = 0; i < 30; i++) {
    ASSERT_EQ(http.Request("PUT", "/v1/kv/c/" + std::to_string(i), "{\"value\":\"x\"}").status,
              200);
  }
  ASSERT_TRUE(cluster.WaitConverged(milliseconds(10000)));
  std::string eps;
  for (int i = 0; i < 3; i++) eps += (i ? "," : "") + Addr(cluster.http_port(i));
  RunResult r = RunCtl({"--endpoints", eps, "watch", "c/", "--prefix", "--rev", "1"});
  EXPECT_EQ(r.code, kCompacted) << Describe(r);
  EXPECT_NE(r.err.find("compacted"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("list again"), std::string::npos) << r.err;
}

TEST_F(CtlClusterTest, StatusShowsTheClusterAndAKilledNodeUnreachable) {
  ASSERT_TRUE(cluster_.WaitConverged(milliseconds(10000)));
  RunResult r = Ctl({"status"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_TRUE(std::regex_match(
      lines[0], std::regex("NODE +HTTP +ROLE +TERM +LEADER +COMMIT +APPLIED +LAG +HEALTH")))
      << lines[0];
  int leaders = 0;
  for (int i = 1; i <= 3; i++) {
    EXPECT_TRUE(lines[i].starts_with("node" + std::to_string(i) + " ")) << lines[i];
    EXPECT_TRUE(lines[i].ends_with(" ok")) << lines[i];
    leaders += lines[i].find(" Leader ") != std::string::npos;
  }
  EXPECT_EQ(leaders, 1) << r.out;

  json::array rows = json::parse(Ctl({"-o", "json", "status"}).out).as_array();
  ASSERT_EQ(rows.size(), 3u);
  for (const json::value& row : rows) {
    EXPECT_TRUE(row.at("reachable").as_bool());
    EXPECT_EQ(itest::Str(row.at("health")), "ok");
    EXPECT_TRUE(row.at("lag").is_number());
  }

  // Given only the leader, the other members still show (from its /status).
  const int leader = cluster_.FindLeader();
  const int victim = (leader + 1) % 3;
  cluster_.Kill(victim);
  r = RunCtl({"--endpoints", Endpoints({leader}), "status"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  const std::string& dead = lines[victim + 1];
  EXPECT_TRUE(dead.starts_with(cluster_.node(victim).name + "  " + cluster_.node(victim).http()))
      << r.out;
  EXPECT_NE(dead.find("unreachable"), std::string::npos) << r.out;
  rows = json::parse(Ctl({"-o", "json", "status"}).out).as_array();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_FALSE(rows[victim].at("reachable").as_bool());
  EXPECT_TRUE(rows[victim].at("role").is_null());
}

TEST_F(CtlClusterTest, CheckPrintsSaneNumbersAndCleansUp) {
  RunResult r = Ctl({"check", "--duration", "1s", "--conns", "4"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("requests +(\\d+) \\(0 errors\\)"))) << r.out;
  const uint64_t requests = std::stoull(m[1]);
  EXPECT_GT(requests, 0u);
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("throughput +([0-9.]+) puts/s"))) << r.out;
  EXPECT_GT(std::stod(m[1]), 0.0);
  ASSERT_TRUE(std::regex_search(r.out, m,
                                std::regex("p50 ([0-9.]+) ms, p99 ([0-9.]+) ms, max ([0-9.]+) ms")))
      << r.out;
  const double p50 = std::stod(m[1]), p99 = std::stod(m[2]), max = std::stod(m[3]);
  EXPECT_GT(p50, 0.0);
  EXPECT_LE(p50, p99);
  EXPECT_LE(p99, max);
  EXPECT_LT(max, 5000.0);
  EXPECT_EQ(Ctl({"list", "raftkvctl-check/"}).out, "");

  // The user's own keys under --prefix survive: check writes and deletes
  // only a subprefix of its own.
  ASSERT_EQ(Ctl({"put", "chk/user", "mine"}).code, kOk);
  r = Ctl({"-o", "json", "check", "--requests", "50", "--conns", "3", "--prefix", "chk/"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  json::object o = Object(r.out);
  EXPECT_EQ(itest::Num(o.at("requests")), 50u);
  EXPECT_EQ(itest::Num(o.at("succeeded")), 50u);
  EXPECT_EQ(itest::Num(o.at("errors")), 0u);
  EXPECT_EQ(itest::Num(o.at("deleted")), 50u);
  EXPECT_TRUE(std::regex_match(itest::Str(o.at("prefix")), std::regex("chk/check-[0-9a-f]{16}/")))
      << r.out;
  EXPECT_EQ(Ctl({"list", "chk/"}).out, "chk/user\nmine\n");
}

// --- Membership and backups against a cluster ---------------------------------

// GET /v1/members on node i: id -> member object (empty if it did not answer 200).
std::map<std::string, json::object> Members(Cluster& c, int i) {
  std::map<std::string, json::object> out;
  itest::HttpResponse r = itest::Http(c.http_port(i), "GET", "/v1/members");
  if (r.status != 200) return out;
  const json::object o = Object(r.body);
  for (const json::value& m : o.at("members").as_array()) {
    out[itest::Str(m.at("id"))] = m.as_object();
  }
  return out;
}

std::string RoleOf(Cluster& c, int i, const std::string& id) {
  auto members = Members(c, i);
  auto it = members.find(id);
  return it == members.end() ? "" : itest::Str(it->second.at("role"));
}

// A member list's table row, split on runs of spaces ("LAST HEARD" is the
// one header with a space in it).
std::vector<std::string> Cells(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

TEST_F(CtlClusterTest, MemberListAddPromoteAndRemove) {
  const int leader = cluster_.FindLeader();
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % 3;

  // Asked through a follower, the table still has the leader's columns.
  RunResult r = RunCtl({"--endpoints", Endpoints({follower}), "member", "list"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_TRUE(std::regex_match(
      lines[0], std::regex("ID +ROLE +PROMOTE +LEADER +RAFT +HTTP +MATCH +LAST HEARD")))
      << lines[0];
  int leaders = 0;
  for (size_t i = 1; i < lines.size(); i++) {
    std::vector<std::string> c = Cells(lines[i]);
    ASSERT_EQ(c.size(), 8u) << lines[i];
    EXPECT_EQ(c[1], "voter") << lines[i];
    EXPECT_EQ(c[2], "-") << lines[i];  // PROMOTE: for learners.
    EXPECT_TRUE(std::regex_match(c[6], std::regex("\\d+"))) << lines[i];
    if (c[3] == "yes") {
      leaders++;
      EXPECT_EQ(c[0], cluster_.node(leader).name) << r.out;
      EXPECT_EQ(c[7], "-") << lines[i];
    } else {
      EXPECT_EQ(c[3], "no") << lines[i];
      EXPECT_TRUE(std::regex_match(c[7], std::regex("\\d+ms"))) << lines[i];
    }
  }
  EXPECT_EQ(leaders, 1) << r.out;
  json::object listed = Object(Ctl({"-o", "json", "member", "list"}).out);
  EXPECT_EQ(listed.at("members").as_array().size(), 3u);

  // node4, promoted by the leader once caught up.
  const itest::NodeInfo node4 = cluster_.node(cluster_.AddNode());
  const int n4 = cluster_.size() - 1;
  r = Ctl({"member", "add", node4.name, "--raft", node4.raft(), "--http", node4.http()});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  EXPECT_TRUE(r.out.starts_with("member " + node4.name + " added as a learner (promote auto)\n"))
      << r.out;
  EXPECT_NE(r.out.find("--bind " + node4.raft() + " --http " + node4.http()), std::string::npos)
      << r.out;
  cluster_.Start(n4, false, cluster_.node(leader).http());
  ASSERT_TRUE(
      WaitFor([&] { return RoleOf(cluster_, leader, node4.name) == "voter"; }, milliseconds(15000)))
      << cluster_.LogTails();
  // Its id is taken now: 8.
  r = Ctl({"member", "add", node4.name, "--raft", "127.0.0.1:9"});
  EXPECT_EQ(r.code, kConflict) << Describe(r);
  EXPECT_NE(r.err.find("member_exists"), std::string::npos) << r.err;
  // An id the server refuses (over 256 bytes): 1.
  r = Ctl({"member", "add", std::string(300, 'x'), "--raft", "127.0.0.1:9"});
  EXPECT_EQ(r.code, kError) << Describe(r);
  EXPECT_NE(r.err.find("invalid_argument"), std::string::npos) << r.err;

  // node5, manual: a learner until promoted.
  const itest::NodeInfo node5 = cluster_.node(cluster_.AddNode());
  const int n5 = cluster_.size() - 1;
  r = Ctl({"-o", "json", "member", "add", node5.name, "--raft", node5.raft(), "--http",
           node5.http(), "--promote", "manual"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(itest::Str(Object(r.out).at("role")), "learner");
  EXPECT_EQ(itest::Str(Object(r.out).at("id")), node5.name);
  // Not started, it holds nothing of the log: not caught up.
  r = Ctl({"member", "promote", node5.name});
  EXPECT_EQ(r.code, kConflict) << Describe(r);
  EXPECT_NE(r.err.find("learner_not_caught_up"), std::string::npos) << r.err;
  // A learner cannot lead.
  r = Ctl({"leader", "transfer", node5.name});
  EXPECT_EQ(r.code, kConflict) << Describe(r);
  EXPECT_NE(r.err.find("not_voter"), std::string::npos) << r.err;
  r = Ctl({"member", "list"});
  EXPECT_TRUE(std::regex_search(r.out, std::regex(node5.name + " +learner +manual +no "))) << r.out;
  cluster_.Start(n5, false, cluster_.node(leader).http());
  r = Ctl({"--timeout", "30s", "member", "promote", node5.name, "--wait"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(r.out, "member " + node5.name + " promoted to voter\n");
  EXPECT_EQ(RoleOf(cluster_, leader, node5.name), "voter");
  r = Ctl({"member", "promote", node5.name});
  EXPECT_EQ(r.code, kConflict) << Describe(r);
  EXPECT_NE(r.err.find("not_learner"), std::string::npos) << r.err;

  // No such member: 3.
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"member", "promote", "nosuch"},
                                             {"member", "remove", "nosuch"},
                                             {"leader", "transfer", "nosuch"}}) {
    r = Ctl(args);
    EXPECT_EQ(r.code, kNotFound) << args[0] << " " << args[1] << ": " << Describe(r);
    EXPECT_NE(r.err.find("not found: member \"nosuch\""), std::string::npos) << r.err;
  }

  // Back to three (--force is not needed here, and harmless).
  r = Ctl({"member", "remove", node5.name});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  EXPECT_TRUE(r.out.starts_with("member " + node5.name + " removed")) << r.out;
  cluster_.Kill(n5);
  r = Ctl({"-o", "json", "member", "remove", node4.name, "--force"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(itest::Str(Object(r.out).at("removed").at("id")), node4.name);
  cluster_.Kill(n4);
  EXPECT_TRUE(WaitFor(
      [&] {
        return Lines(Ctl({"member", "list"}).out).size() == 4;
      },
      milliseconds(5000)));
}

TEST_F(CtlClusterTest, ARemovalThatWouldLoseTheQuorumExitsEight) {
  const int leader = cluster_.FindLeader();
  ASSERT_GE(leader, 0);
  const int dead = (leader + 1) % 3, alive = (leader + 2) % 3;
  const std::string dead_name = cluster_.node(dead).name, alive_name = cluster_.node(alive).name;
  cluster_.Kill(dead);
  // The leader counts a voter active for an election timeout after its last
  // message: wait until it has noticed the silence.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto members = Members(cluster_, leader);
        auto it = members.find(dead_name);
        return it != members.end() && it->second.contains("last_heard_ms") &&
               itest::Num(it->second.at("last_heard_ms")) > 1500;
      },
      milliseconds(10000)));
  const std::string eps = Endpoints({alive, leader});
  RunResult r = RunCtl({"--endpoints", eps, "member", "list"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(dead_name + " .* (\\d+)ms\n"))) << r.out;
  EXPECT_GT(std::stoull(m[1]), 1500u) << r.out;

  // Removing the live follower would leave the leader and a dead node.
  r = RunCtl({"--endpoints", eps, "member", "remove", alive_name});
  EXPECT_EQ(r.code, kConflict) << Describe(r);
  EXPECT_NE(r.err.find("would_lose_quorum"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("conflict: the cluster refused the removal of member \"" + alive_name),
            std::string::npos)
      << r.err;
  EXPECT_EQ(Members(cluster_, leader).size(), 3u);
  // The dead one may go: two voters left, both answering.
  r = RunCtl({"--endpoints", eps, "member", "remove", dead_name});
  EXPECT_EQ(r.code, kOk) << Describe(r);
  EXPECT_TRUE(WaitFor([&] { return Members(cluster_, alive).size() == 2; }, milliseconds(5000)));
}

TEST_F(CtlClusterTest, LeaderTransferToAChosenNodeAndToTheBestOne) {
  const int leader = cluster_.FindLeader();
  ASSERT_GE(leader, 0);
  const int target = (leader + 1) % 3;
  const std::string name = cluster_.node(target).name;
  RunResult r = Ctl({"leader", "transfer", name});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, std::regex("leader is " + name + " \\(term (\\d+)\\)\n")))
      << r.out;
  const uint64_t term = std::stoull(m[1]);
  // The node itself says so.
  EXPECT_TRUE(WaitFor(
      [&] {
        auto st = cluster_.Status(target);
        return st && itest::Str(st->at("role")) == "Leader";
      },
      milliseconds(5000)));

  // Without ID: the most up-to-date other voter takes over.
  r = Ctl({"-o", "json", "leader", "transfer"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  json::object o = Object(r.out);
  EXPECT_NE(itest::Str(o.at("leader")), name) << r.out;
  EXPECT_GT(itest::Num(o.at("term")), term) << r.out;
}

TEST_F(CtlClusterTest, SnapshotSaveThenRaftkvRestoreTakesIt) {
  for (int i = 0; i < 20; i++) {
    ASSERT_EQ(Ctl({"put", "s/" + std::to_string(i), "v" + std::to_string(i)}).code, kOk);
  }
  RunResult r = Ctl({"-o", "json", "put", "s/last", "end"});
  const uint64_t last = itest::Num(Object(r.out).at("revision"));
  const std::string file = cluster_.dir() + "/backup.snap";
  r = Ctl({"snapshot", "save", file});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m,
                               std::regex("snapshot saved to " + file +
                                          ": revision (\\d+), (\\d+) bytes, xxh3-64=([0-9a-f]{16}) "
                                          "\\(from 127\\.0\\.0\\.1:\\d+\\)\n")))
      << r.out;
  EXPECT_GE(std::stoull(m[1]), last);
  EXPECT_EQ(std::filesystem::file_size(file), std::stoull(m[2]));
  EXPECT_FALSE(Exists(file + ".part"));
  const std::string image = ReadWhole(file);
  EXPECT_EQ(Hex(Trailer(image)), "xxh3-64=" + m[3].str());

  // From a follower, its own state, in json.
  const int follower = (cluster_.FindLeader() + 1) % 3;
  const std::string stale = cluster_.dir() + "/stale.snap";
  r = RunCtl(
      {"--endpoints", Endpoints({follower}), "-o", "json", "snapshot", "save", stale, "--stale"});
  ASSERT_EQ(r.code, kOk) << Describe(r);
  EXPECT_EQ(itest::Num(Object(r.out).at("size")), std::filesystem::file_size(stale));

  // An existing file is refused (nothing sent) unless --force.
  r = Ctl({"snapshot", "save", file});
  EXPECT_EQ(r.code, kUsage) << Describe(r);
  EXPECT_NE(r.err.find("exists"), std::string::npos) << r.err;
  EXPECT_TRUE(ReadWhole(file) == image);
  r = Ctl({"snapshot", "save", file, "--force"});
  EXPECT_EQ(r.code, kOk) << Describe(r);

  // raftkv restore builds a node from it, which serves the keys.
  const std::string datadir = cluster_.dir() + "/restored";
  const uint16_t http_port = FreePort();
  const std::string raft = Addr(FreePort()), http = Addr(http_port);
  Child restore({RAFTKV_BIN, "restore", "--snapshot", file, "--datadir", datadir, "--id", "r1",
                 "--bind", raft, "--http", http});
  ASSERT_EQ(restore.Wait(milliseconds(60000)), kOk) << restore.out() << restore.err();
  itest::Process node(
      {RAFTKV_BIN, "--id", "r1", "--bind", raft, "--http", http, "--datadir", datadir},
      cluster_.dir() + "/restored.log");
  HttpClient client(http_port);
  EXPECT_TRUE(
      WaitFor([&] { return client.Get("/v1/kv/s/last").status == 200; }, milliseconds(15000)));
  r = RunCtl({"--endpoints", http, "get", "s/7"});
  EXPECT_EQ(r.out, "v7\n") << Describe(r);
}

}  // namespace
}  // namespace raftkv::ctltest
