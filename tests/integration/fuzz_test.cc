// Fuzzed input against live nodes: random HTTP requests (methods, paths,
// headers, bodies, truncation) on the client port and random bytes and
// corrupted frames on the peer port. Bounded in count and time. Every node
// must stay alive and serving, and the data written before must be intact
// and identical on every node.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <cstdlib>
#include <random>
#include <string>

#include "cluster.h"

namespace raftkv::itest {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

// Sends raw bytes, half-closes if asked (so that a server waiting for more
// of a cut request sees the end at once), and reads whatever comes back
// until the first answer's header, the peer closes, or `timeout` passes.
std::string RawExchange(uint16_t port, const std::string& bytes, bool read_answer,
                        milliseconds timeout, bool half_close = true) {
  asio::io_context ioc;
  tcp::socket s(ioc);
  error_code ec;
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return "";
  std::string got;
  std::array<char, 4096> buf;
  std::function<void()> read = [&] {
    s.async_read_some(asio::buffer(buf), [&](error_code ec, size_t n) {
      got.append(buf.data(), n);
      // One answer is enough: do not wait out keep-alive.
      if (ec || got.find("\r\n\r\n") != std::string::npos) return;
      read();
    });
  };
  asio::async_write(s, asio::buffer(bytes), [&](error_code ec, size_t) {
    if (ec || !read_answer) return s.close();
    error_code ignored;
    if (half_close) s.shutdown(tcp::socket::shutdown_send, ignored);
    read();
  });
  ioc.run_for(timeout);
  return got;
}

class Fuzzer {
 public:
  explicit Fuzzer(uint64_t seed) : rng_(seed) {}

  size_t Uniform(size_t n) { return rng_() % n; }
  bool Chance(int percent) { return static_cast<int>(Uniform(100)) < percent; }

  std::string Bytes(size_t max_len) {
    std::string s(Uniform(max_len + 1), '\0');
    for (char& c : s) c = static_cast<char>(rng_());
    return s;
  }

  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Uniform(v.size())];
  }

  std::string Method() {
    static const std::vector<std::string> kMethods = {
        "GET",     "POST",  "PUT", "DELETE", "HEAD",         "OPTIONS", "PATCH",
        "CONNECT", "TRACE", "get", "G\x01T", "POSTPOSTPOST", ""};
    return Chance(90) ? Pick(kMethods) : Bytes(8);
  }

  std::string Path() {
    static const std::vector<std::string> kPaths = {
        "/keys/fz/", "/keys/fz", "/keys/", "/keys//", "/keys/%zz/", "/keys/%/", "/keys/a/b/",
        "/status", "/health", "/cluster/join/", "/", "*", "/keys/fz/?stale", "/keys/fz/?stale=0",
        "/keys/" + std::string(5000, 'k') + "/", "http://x/keys/fz/", "/keys/%00%ff/",
        // The /v1 routes, on fz keys only: the
        // known keys must stay as written.
        "/v1/kv/fz", "/v1/kv/fz/a%2F%00%ff", "/v1/kv/fz?prefix",
        "/v1/kv/fz/?prefix&limit=3&keys_only", "/v1/kv/fz?prefix&continue=%21%21",
        "/v1/kv/fz?prefix&limit=1&if_max_mod_revision=1", "/v1/kv/fz?if_version=0&prev_kv",
        "/v1/kv/fz?if_mod_revision=abc", "/v1/kv/fz?raw",
        "/v1/kv/fz?min_revision=99999999999999999999",
        "/v1/kv/fz?consistency=stale&encoding=base64", "/v1/kv/fz?count_only&prefix&encoding=hex",
        "/v1/txn", "/v1/txn?stale", "/v1/nope", "/v1/kv/"};
    std::string p = Pick(kPaths);
    if (Chance(20)) p.insert(Uniform(p.size() + 1), Bytes(4));
    return p;
  }

  std::string Body() {
    static const std::vector<std::string> kBodies = {
        R"({"value":"fuzz"})", R"({"value":)", R"({"value":"\ud800"})", R"({"value":1e999})",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        R"({"address":"127.0.0.1:1","id":""})", R"({"address":"h:99999"})", "null", "",
        R"({"value":"\u0000"})", "{\"value\":\"" + std::string(3000, 'v') + "\"}",
        // /v1 bodies: values, transactions, wrong types, huge numbers,
        // deep nesting, invalid UTF-8.
        R"({"value_b64":"Zno="})", R"({"value":"v","lease":18446744073709551615})",
        R"({"value":"v","lease":-1})", R"({"value":"v","extra":true})", "{\"value\":\"\xff\xfe\"}",
        R"({"compare":[{"key":"fz","target":"version","op":">","value":0}],)"
        R"("success":[{"put":{"key":"fz","value":"t","prev_kv":true}},{"range":{"prefix":"fz"}}],)"
        R"("failure":[{"delete":{"prefix":"fz/","limit":2,"prev_kv":true}}]})",
        R"({"compare":[{"prefix":"fz","target":"value","op":"<","value_b64":"/w=="}],)"
        R"("success":[{"get":{"key":"fz","keys_only":true}}]})",
        R"({"success":[{"put":{"key":"fz","value":"a"}},{"put":{"key":"fz","value":"b"}}]})",
        R"({"compare":[{"key":"fz","target":"mod_revision","op":"=","value":1e400}]})",
        R"({"compare":[{"key":"fz","target":"lease","op":"=","value":9007199254740993}]})",
        R"({"success":{"put":{"key":"fz","value":"a"}}})",
        R"({"success":[{"put":{"key":["fz"],"value":"a"}}]})",
        R"({"success":[{"range":{"key":"fz","range_end":"fy"}}]})",
        "{\"success\":[{\"put\":{\"key\":\"fz\xc0\",\"value\":\"a\"}}]}",
        std::string(200, '{') + std::string(200, '}')};
    std::string b = Pick(kBodies);
    if (Chance(30) && !b.empty()) b[Uniform(b.size())] = static_cast<char>(rng_());
    if (Chance(10)) b = Bytes(300);
    return b;
  }

  // A whole request, possibly malformed or cut short.
  std::string Request(bool* complete) {
    std::string body = Body();
    std::string req = Method() + " " + Path() + " " + (Chance(90) ? "HTTP/1.1" : "HTTP/9.9") +
                      "\r\nHost: fuzz\r\n";
    switch (Uniform(8)) {
      case 0:
        req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
        break;
      case 1:
        req += "Content-Length: " + std::to_string(Uniform(5000)) + "\r\n";
        break;
      case 2:
        req += "Transfer-Encoding: chunked\r\n";
        body = (Chance(50) ? "5\r\nhello\r\n0\r\n\r\n" : "zz\r\n" + body);
        break;
      case 3:
        req += "Content-Length: -1\r\n";
        break;
      case 4:
        req += "Expect: 100-continue\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
        break;
      case 5:
        req += "Content-Length: 1\r\nContent-Length: 2\r\n";
        break;
      case 6:
        req += "X-Raftkv-Hops: " + Bytes(4) + "\r\nX-Raftkv-Request-Id: " + Bytes(10) + "\r\n";
        req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
        break;
      default:
        req += Bytes(40) + "\r\n";
    }
    if (Chance(10)) req += "Connection: close\r\n";
    req += "\r\n" + body;
    *complete = true;
    if (Chance(15)) {
      req.resize(Uniform(req.size()));
      *complete = false;
    }
    return req;
  }

 private:
  std::mt19937_64 rng_;
};

TEST(FuzzTest, RandomHttpAndPeerInputLeavesNodesAliveAndDataIntact) {
  Cluster c(3, {"--http-timeout-ms", "2000"});
  c.StartAll();
  int leader = c.FindLeader();
  ASSERT_GE(leader, 0);
  {
    HttpClient cl(c.http_port(leader));
    for (int k = 0; k < 50; k++) {
      ASSERT_EQ(cl.Post("/keys/known" + std::to_string(k) + "/",
                        "{\"value\":\"v" + std::to_string(k) + "\"}")
                    .status,
                200);
    }
  }
  // RAFTKV_FUZZ_SEED replays a run's requests (the cluster's timing differs).
  const char* seed_env = std::getenv("RAFTKV_FUZZ_SEED");
  uint64_t seed =
      seed_env != nullptr ? std::strtoull(seed_env, nullptr, 10) : std::random_device{}();
  std::printf("fuzz seed %llu (RAFTKV_FUZZ_SEED=%llu replays it)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  SCOPED_TRACE("fuzz seed " + std::to_string(seed));
  Fuzzer fz(seed);
  auto deadline = Clock::now() + std::chrono::seconds(20);
  int requests = 0, answered = 0, server_errors = 0, whole = 0;
  for (; requests < 4000 && Clock::now() < deadline; requests++) {
    int node = static_cast<int>(fz.Uniform(c.size()));
    if (fz.Chance(8)) {
      // The peer port: garbage, or a plausible header with a bad checksum.
      std::string bytes = fz.Bytes(200);
      if (fz.Chance(50)) {
        std::string h = {static_cast<char>(8), 0, 0, 0, 1, 2, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
        bytes = h + fz.Bytes(8);
      }
      RawExchange(c.node(node).raft_port, bytes, false, milliseconds(200));
      continue;
    }
    bool complete = false;
    std::string req = fz.Request(&complete);
    // Mostly half-close after sending; sometimes leave the connection open
    // and walk away, as a slow or vanished client would.
    bool half_close = fz.Chance(85);
    if (complete && half_close) whole++;
    std::string got = RawExchange(c.http_port(node), req, true,
                                  milliseconds(half_close ? 1000 : 100), half_close);
    if (got.empty()) continue;
    answered++;
    ASSERT_TRUE(got.rfind("HTTP/1.", 0) == 0) << "not an HTTP answer: " << got.substr(0, 80);
    // The only 5xx a request may cause are the documented 503/504.
    int status = std::atoi(got.substr(9, 3).c_str());
    if (status >= 500 && status != 503 && status != 504) {
      server_errors++;
      ADD_FAILURE() << "status " << status << " for request " << req.substr(0, 120);
    }
  }
  std::printf("fuzz: %d requests, %d whole and half-closed, %d answered, %d unexpected 5xx\n",
              requests, whole, answered, server_errors);
  // A server that answered nothing would pass every check above.
  EXPECT_GT(whole, 0);
  EXPECT_GE(answered, whole / 2) << "most whole requests went unanswered";
  for (int i = 0; i < c.size(); i++) {
    ASSERT_TRUE(c.Proc(i)->Alive()) << c.node(i).name << " died";
    EXPECT_EQ(Http(c.http_port(i), "GET", "/health").status, 200) << c.node(i).name;
  }
  ASSERT_TRUE(c.WaitConverged(milliseconds(10000)));
  for (int i = 0; i < c.size(); i++) {
    HttpClient cl(c.http_port(i));
    for (int k = 0; k < 50; k++) {
      ASSERT_EQ(cl.Get("/keys/known" + std::to_string(k) + "/?stale").body,
                ValueJson("v" + std::to_string(k)))
          << c.node(i).name;
    }
  }
  // The /v1 view of the known keys is the legacy writes', untouched.
  for (int i = 0; i < c.size(); i++) {
    HttpClient cl(c.http_port(i));
    HttpResponse r = cl.Get("/v1/kv/known?prefix&consistency=stale&limit=100");
    ASSERT_EQ(r.status, 200) << r.body;
    boost::json::object o = boost::json::parse(r.body).as_object();
    ASSERT_EQ(o.at("kvs").as_array().size(), 50u) << c.node(i).name;
    for (const boost::json::value& kv : o.at("kvs").as_array()) {
      EXPECT_EQ(kv.at("version").to_number<uint64_t>(), 1u) << kv;
    }
  }
  // And the cluster still takes writes.
  EXPECT_TRUE(c.PutRetry((leader + 1) % 3, "after-fuzz", "ok", milliseconds(5000)));
}

}  // namespace
}  // namespace raftkv::itest
