// Test helpers: real raftkv processes on 127.0.0.1, a small HTTP client, and
// polling with deadlines.
//
// Every process is started by a Process guard that SIGKILLs it in its
// destructor, so a failing test never leaves nodes behind (ctest's timeout
// covers a hung test). Ports are picked free from outside the ephemeral range.
// Waiting is always "poll a condition until a deadline", never a bare sleep.
#pragma once

#include <sys/types.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "wait.h"

namespace raftkv::itest {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A port on 127.0.0.1 that nothing listens on now, not handed out before by
// this process. Picked in [20000, 32000), below Linux's ephemeral range, so
// that outgoing connections do not take it meanwhile.
uint16_t FreePort();

struct HttpResponse {
  int status = 0;  // 0: no (complete) answer; see error.
  std::string body;
  std::map<std::string, std::string> headers;  // Lower-case names.
  std::string error;
  std::string Header(const std::string& lower_name) const;
};

// One keep-alive HTTP/1.1 connection to 127.0.0.1:port (Boost.Beast, sync,
// with socket timeouts). Reconnects on the next request after a failure.
class HttpClient {
 public:
  explicit HttpClient(uint16_t port, milliseconds timeout = milliseconds(8000));
  ~HttpClient();
  HttpResponse Request(const std::string& method, const std::string& target,
                       const std::string& body = "",
                       const std::vector<std::pair<std::string, std::string>>& headers = {});
  HttpResponse Get(const std::string& target) { return Request("GET", target); }
  HttpResponse Post(const std::string& target, const std::string& body) {
    return Request("POST", target, body);
  }
  uint16_t port() const { return port_; }

 private:
  struct Impl;
  uint16_t port_;
  milliseconds timeout_;
  std::unique_ptr<Impl> impl_;
};

// One-shot request on a fresh connection.
HttpResponse Http(uint16_t port, const std::string& method, const std::string& target,
                  const std::string& body = "");

// {"value":"<v>"} as the server writes it (for plain ASCII values).
std::string ValueJson(const std::string& v);

// A child process with stdout+stderr to a file; SIGKILLed by the destructor.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool Alive();
  void Signal(int sig);
  // Waits for exit; returns the exit status (or -1 on timeout, 128+sig if killed).
  int Wait(milliseconds timeout);
  void Kill();  // SIGKILL and reap.

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

struct NodeInfo {
  std::string name;
  uint16_t raft_port = 0;
  uint16_t http_port = 0;
  std::string datadir;
  std::string log;
  std::string raft() const { return "127.0.0.1:" + std::to_string(raft_port); }
  std::string http() const { return "127.0.0.1:" + std::to_string(http_port); }
};

// N raftkv nodes. Node 0 bootstraps; the others join through node 0.
class Cluster {
 public:
  // `extra` flags go to every node.
  Cluster(int n, std::vector<std::string> extra = {});
  ~Cluster();

  // Starts every node and waits until all are voters that know the leader.
  void StartAll();
  // Adds and starts another node that joins through `via`'s HTTP address.
  int AddJoining(int via);
  // Adds another node's ports and directory without starting it.
  int AddNode();
  // Starts node i: first start (bootstrap/join) or restart on its datadir.
  void Start(int i, bool bootstrap, const std::string& join);
  // Starts node i like Start, without waiting for it to serve.
  void Launch(int i, bool bootstrap, const std::string& join);
  void Restart(int i) { Start(i, false, ""); }
  void Kill(int i);
  void Terminate(int i);
  bool Running(int i) const { return procs_[i] != nullptr; }
  Process* Proc(int i) { return procs_[i].get(); }

  int size() const { return static_cast<int>(nodes_.size()); }
  const NodeInfo& node(int i) const { return nodes_[i]; }
  uint16_t http_port(int i) const { return nodes_[i].http_port; }

  // /status of node i, or nullopt if it does not answer.
  std::optional<boost::json::object> Status(int i, milliseconds timeout = milliseconds(2000));
  // The index of the node that reports itself leader with the highest term,
  // among running nodes; -1 if none.
  int FindLeader();
  // Waits until a running node reports itself leader (and, if min_term > 0,
  // at a term >= min_term). Returns its index or -1.
  int WaitForLeader(milliseconds timeout, uint64_t min_term = 0);
  // Waits until every running node has applied at least the leader's commit index.
  bool WaitConverged(milliseconds timeout);
  // Waits until node i says it is admitted (joined, or re-added after a
  // restart) and node `by` lists it as a voter.
  bool WaitVoter(int i, int by, milliseconds timeout);

  // Writes through node i, retrying 503s until the deadline. True on 200.
  bool PutRetry(int i, const std::string& key, const std::string& value, milliseconds timeout);
  // The last lines of every node's log (printed when a test fails).
  std::string LogTails(size_t lines = 40) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::string> extra_;
  std::vector<NodeInfo> nodes_;
  std::vector<std::unique_ptr<Process>> procs_;
};

}  // namespace raftkv::itest
