#include "cluster.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

extern char** environ;

namespace raftkv::itest {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using asio::ip::tcp;
using boost::system::error_code;

uint16_t FreePort() {
  static std::mutex mu;
  static std::set<uint16_t> used;
  static std::mt19937 rng(std::random_device{}());
  std::lock_guard lock(mu);
  asio::io_context ioc;
  for (int attempt = 0; attempt < 1000; attempt++) {
    uint16_t port = static_cast<uint16_t>(20000 + rng() % 12000);
    if (used.count(port)) continue;
    tcp::acceptor a(ioc);
    error_code ec;
    a.open(tcp::v4(), ec);
    if (!ec) a.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
    if (ec) continue;
    used.insert(port);
    return port;
  }
  ADD_FAILURE() << "no free port";
  return 0;
}

std::string HttpResponse::Header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

std::string ValueJson(const std::string& v) { return "{\"value\":\"" + v + "\"}"; }

// ---------------------------------------------------------------------------

struct HttpClient::Impl {
  asio::io_context ioc;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;

  // Runs the io_context until the operation started by `start` completes.
  template <typename Start>
  error_code Run(Start start) {
    error_code result = asio::error::would_block;
    start([&result](error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }
};

HttpClient::HttpClient(uint16_t port, milliseconds timeout)
    : port_(port), timeout_(timeout), impl_(std::make_unique<Impl>()) {}

HttpClient::~HttpClient() = default;

HttpResponse HttpClient::Request(const std::string& method, const std::string& target,
                                 const std::string& body,
                                 const std::vector<std::pair<std::string, std::string>>& headers) {
  HttpResponse out;
  Impl& im = *impl_;
  for (int attempt = 0; attempt < 2; attempt++) {
    bool fresh = !im.stream.has_value();
    if (fresh) {
      im.stream.emplace(im.ioc);
      im.buffer.clear();
      im.stream->expires_after(timeout_);
      tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port_);
      error_code ec = im.Run([&](auto h) { im.stream->async_connect(ep, h); });
      if (ec) {
        im.stream.reset();
        out.error = "connect: " + ec.message();
        return out;
      }
    }
    http::request<http::string_body> req;
    req.method_string(method);
    req.target(target);
    req.version(11);
    req.set(http::field::host, "127.0.0.1:" + std::to_string(port_));
    for (auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() || method == "POST") {
      req.body() = body;
      req.prepare_payload();
    }
    im.stream->expires_after(timeout_);
    error_code ec = im.Run([&](auto h) { http::async_write(*im.stream, req, h); });
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    if (!ec) {
      ec = im.Run([&](auto h) { http::async_read(*im.stream, im.buffer, parser, h); });
    }
    if (ec) {
      im.stream.reset();
      // A kept-alive connection the server closed meanwhile: try once more.
      if (!fresh && !parser.got_some() && ec != beast::error::timeout) continue;
      out.error = ec.message();
      return out;
    }
    auto res = parser.release();
    out.status = res.result_int();
    out.body = res.body();
    for (auto& f : res) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.headers[name] = std::string(f.value());
    }
    if (!res.keep_alive()) im.stream.reset();
    return out;
  }
  return out;
}

HttpResponse Http(uint16_t port, const std::string& method, const std::string& target,
                  const std::string& body) {
  HttpClient c(port);
  return c.Request(method, target, body);
}

// ---------------------------------------------------------------------------

Process::Process(const std::vector<std::string>& argv, const std::string& log_path) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  // Through setpriv (util-linux, in every Debian): the child gets SIGKILL when this test
  // process dies, so a test that crashes or that ctest times out leaves no node running.
  // The death signal follows the spawning thread: spawn from the test's main thread.
  std::vector<std::string> full = {"/usr/bin/setpriv", "--pdeathsig", "KILL", "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  std::vector<char*> args;
  for (const std::string& a : full) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << argv[0] << ": " << std::strerror(rc);
    pid_ = -1;
  }
}

Process::~Process() { Kill(); }

bool Process::Alive() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return true;
}

void Process::Signal(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

int Process::Wait(milliseconds timeout) {
  if (pid_ <= 0) return -1;
  if (!WaitFor([this] { return !Alive(); }, timeout, milliseconds(5))) return -1;
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

void Process::Kill() {
  if (pid_ <= 0 || reaped_) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  reaped_ = true;
  status_ = status;
}

// ---------------------------------------------------------------------------

Cluster::Cluster(int n, std::vector<std::string> extra) : extra_(std::move(extra)) {
  char tmpl[] = "/tmp/raftkv-itest-XXXXXX";
  char* d = mkdtemp(tmpl);
  if (d == nullptr) ADD_FAILURE() << "mkdtemp failed";
  dir_ = d ? d : "/tmp";
  for (int i = 0; i < n; i++) {
    NodeInfo ni;
    ni.name = "node" + std::to_string(i + 1);
    ni.raft_port = FreePort();
    ni.http_port = FreePort();
    ni.datadir = dir_ + "/" + ni.name;
    ni.log = dir_ + "/" + ni.name + ".log";
    nodes_.push_back(ni);
    procs_.emplace_back();
  }
}

Cluster::~Cluster() {
  for (auto& p : procs_) p.reset();  // SIGKILL every node.
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "--- node logs (kept in %s) ---\n%s\n", dir_.c_str(), LogTails().c_str());
  } else {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

void Cluster::Launch(int i, bool bootstrap, const std::string& join) {
  const NodeInfo& n = nodes_[i];
  std::vector<std::string> argv = {RAFTKV_BIN, "--id",   n.name,      "--bind", n.raft(),
                                   "--http",   n.http(), "--datadir", n.datadir};
  if (bootstrap) argv.push_back("--bootstrap");
  if (!join.empty()) {
    argv.push_back("--join");
    argv.push_back(join);
  }
  for (const std::string& e : extra_) argv.push_back(e);
  procs_[i] = std::make_unique<Process>(argv, n.log);
}

void Cluster::Start(int i, bool bootstrap, const std::string& join) {
  Launch(i, bootstrap, join);
  // Serving once its HTTP port answers.
  const NodeInfo& n = nodes_[i];
  bool up = WaitFor([&] { return Http(n.http_port, "GET", "/health").status == 200; },
                    milliseconds(10000));
  EXPECT_TRUE(up) << n.name << " did not start serving";
}

void Cluster::StartAll() {
  Start(0, true, "");
  ASSERT_GE(WaitForLeader(milliseconds(10000)), 0);
  for (int i = 1; i < size(); i++) Start(i, false, nodes_[0].http());
  for (int i = 1; i < size(); i++) {
    ASSERT_TRUE(WaitVoter(i, 0, milliseconds(15000))) << nodes_[i].name << " never became a voter";
  }
  ASSERT_TRUE(WaitConverged(milliseconds(10000)));
}

int Cluster::AddNode() {
  NodeInfo ni;
  int i = size();
  ni.name = "node" + std::to_string(i + 1);
  ni.raft_port = FreePort();
  ni.http_port = FreePort();
  ni.datadir = dir_ + "/" + ni.name;
  ni.log = dir_ + "/" + ni.name + ".log";
  nodes_.push_back(ni);
  procs_.emplace_back();
  return i;
}

int Cluster::AddJoining(int via) {
  int i = AddNode();
  Start(i, false, nodes_[via].http());
  return i;
}

void Cluster::Kill(int i) { procs_[i].reset(); }

void Cluster::Terminate(int i) {
  if (!procs_[i]) return;
  procs_[i]->Signal(SIGTERM);
  int rc = procs_[i]->Wait(milliseconds(10000));
  EXPECT_EQ(rc, 0) << nodes_[i].name << " did not exit 0 on SIGTERM";
  procs_[i].reset();
}

std::optional<json::object> Cluster::Status(int i, milliseconds timeout) {
  if (!procs_[i]) return std::nullopt;
  HttpClient c(nodes_[i].http_port, timeout);
  HttpResponse r = c.Get("/status");
  if (r.status != 200) return std::nullopt;
  error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return v.get_object();
}

int Cluster::FindLeader() {
  int best = -1;
  uint64_t best_term = 0;
  for (int i = 0; i < size(); i++) {
    auto st = Status(i);
    if (!st || st->at("role").as_string() != "Leader") continue;
    uint64_t term = st->at("term").to_number<uint64_t>();
    if (best < 0 || term > best_term) best = i, best_term = term;
  }
  return best;
}

int Cluster::WaitForLeader(milliseconds timeout, uint64_t min_term) {
  int leader = -1;
  WaitFor(
      [&] {
        for (int i = 0; i < size(); i++) {
          auto st = Status(i, milliseconds(500));
          if (!st || st->at("role").as_string() != "Leader") continue;
          if (st->at("term").to_number<uint64_t>() < min_term) continue;
          leader = i;
          return true;
        }
        return false;
      },
      timeout, milliseconds(5));
  return leader;
}

bool Cluster::WaitConverged(milliseconds timeout) {
  return WaitFor(
      [&] {
        int l = FindLeader();
        if (l < 0) return false;
        auto ls = Status(l);
        if (!ls) return false;
        uint64_t commit = ls->at("commit").to_number<uint64_t>();
        for (int i = 0; i < size(); i++) {
          if (!procs_[i]) continue;
          auto st = Status(i);
          if (!st || st->at("applied").to_number<uint64_t>() < commit) return false;
        }
        return true;
      },
      timeout, milliseconds(20));
}

bool Cluster::WaitVoter(int i, int by, milliseconds timeout) {
  return WaitFor(
      [&] {
        auto self = Status(i);
        if (!self || !self->at("admitted").as_bool()) return false;
        auto st = Status(by);
        if (!st) return false;
        for (const json::value& m : st->at("members").as_array()) {
          const json::object& o = m.as_object();
          if (o.at("id").as_string() == nodes_[i].name && o.at("role").as_string() == "voter") {
            return true;
          }
        }
        return false;
      },
      timeout, milliseconds(20));
}

bool Cluster::PutRetry(int i, const std::string& key, const std::string& value,
                       milliseconds timeout) {
  bool ok = false;
  WaitFor(
      [&] {
        HttpResponse r = Http(nodes_[i].http_port, "POST", "/keys/" + key + "/",
                              "{\"value\":\"" + value + "\"}");
        if (r.status == 200) return ok = true;
        if (r.status == 0 || r.status == 503 || r.status == 504) return false;
        ADD_FAILURE() << "PUT " << key << " via " << nodes_[i].name << ": " << r.status << " "
                      << r.body;
        return true;
      },
      timeout, milliseconds(20));
  return ok;
}

std::string Cluster::LogTails(size_t lines) const {
  std::ostringstream out;
  for (const NodeInfo& n : nodes_) {
    std::ifstream in(n.log);
    std::vector<std::string> all;
    std::string line;
    while (std::getline(in, line)) all.push_back(line);
    out << "=== " << n.name << " (" << n.log << ", last " << lines << " lines)\n";
    for (size_t k = all.size() > lines ? all.size() - lines : 0; k < all.size(); k++) {
      out << all[k] << "\n";
    }
  }
  return out.str();
}

}  // namespace raftkv::itest
