// Server: one raftkv process. Sets up the data directory and identity, the
// log store, the key-value store, the Raft driver, the peer transport and the
// HTTP API; joins a cluster if asked; and shuts all of it down gracefully.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kv/store.h"
#include "raft/status.h"
#include "server/forwarder.h"
#include "server/http_server.h"
#include "server/log_store.h"
#include "server/metadata.h"
#include "server/options.h"
#include "server/replica.h"
#include "server/upgrade.h"
#include "server/watch_hub.h"
#include "transport/transport.h"

namespace raftkv::server {

class Server {
 public:
  explicit Server(Options options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Opens the data directory, binds both listeners and starts serving.
  // Errors here are startup errors (exit 1).
  raft::Status Start();
  // Blocks until SIGINT or SIGTERM, then shuts down: stops accepting, hands
  // leadership over, lets in-flight requests finish (bounded), flushes and
  // stops every thread.
  void RunUntilSignal();
  void Shutdown();

 private:
  // The cluster id the storage is opened with, in meta_.cluster_id: the
  // data directory's on a restart (refused if --join names a member of
  // another cluster), drawn at bootstrap, or learned from the join target,
  // retrying with back-off until it answers, before anything is written.
  raft::Status ResolveClusterId(bool found, const std::string& raft_dir);
  // One GET /status on `target` (an HTTP address). False, with *why, if it
  // did not answer as a raftkv node within `timeout`.
  static bool FetchClusterId(const std::string& target, std::chrono::milliseconds timeout,
                             uint64_t* out, std::string* why);
  uint64_t LearnClusterId();
  void TryJoin();
  void MarkMember();
  void OnMembers(const std::vector<MemberInfo>& members);
  // /metrics: the WAL's and the peer transport's figures (any io thread).
  void WriteMetrics(metrics::Writer* w) const;

  Options options_;
  MemberInfo self_;
  std::mutex meta_mu_;  // meta_ is updated from io threads.
  NodeMetadata meta_;
  // Whom to ask to be added; tried in turn.
  std::vector<std::string> join_targets_;

  // io_ runs the Raft driver, the peer transport, the forwarder and the
  // listeners; session_ios_ (--io-threads minus one) the HTTP sessions, or
  // io_ does when there are none. One thread each.
  boost::asio::io_context io_;
  std::vector<std::unique_ptr<boost::asio::io_context>> session_ios_;
  std::vector<std::thread> io_threads_;
  kv::Store kv_;
  std::unique_ptr<LogStore> log_store_;
  // The watch history and its delivery to the session threads; before the
  // replica, whose driver feeds it.
  std::unique_ptr<WatchHub> watch_hub_;
  std::unique_ptr<transport::Transport> transport_;
  std::unique_ptr<Replica> replica_;
  std::unique_ptr<Forwarder> forwarder_;
  std::unique_ptr<ProtoWatch> proto_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<boost::asio::signal_set> signals_;
  std::unique_ptr<boost::asio::steady_timer> join_timer_;
  std::chrono::milliseconds join_backoff_{100};
  uint64_t join_attempts_ = 0;
  std::atomic<bool> stopping_{false};
  bool started_ = false;
};

}  // namespace raftkv::server
