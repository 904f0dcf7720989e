// HttpServer: the client API over HTTP/1.1 (Boost.Beast), as specified in
// docs/http-api.md and kept byte-compatible with the original Go server.
//
// Keep-alive connections, each served by one session: read a request (bounded header and body
// sizes, a timeout), answer it, read the next. Answers that need the Raft driver (linearizable
// reads, writes, joins, status) are completed by a callback posted back to the session. Followers
// forward writes and joins to the leader through the Forwarder. Stale reads and /health never leave
// the io thread.
//
// Threads: the listener runs on `io`; each new connection is handed to the
// next of `session_ios` in turn, each of which must be run by exactly one
// thread (an io_context per thread: a session's handlers never need a
// strand, and two connections on different threads share no lock).
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kv/store.h"
#include "raft/status.h"
#include "server/forwarder.h"
#include "server/metrics_http.h"
#include "server/replica.h"
#include "server/upgrade.h"
#include "server/watch_hub.h"
#include "transport/transport.h"

namespace raftkv::server {

struct HttpOptions {
  std::string address;                              // --http
  uint64_t max_body_bytes = 4 << 20;                // 413 past it.
  uint64_t max_header_bytes = 64 << 10;             // 431 past it.
  uint64_t max_key_bytes = 4096;                    // 400 past it.
  uint64_t max_value_bytes = 1 << 20;               // 413 past it.
  uint64_t max_connections = 10000;                 // Past it, 503 and close.
  std::chrono::milliseconds timeout{30000};         // Idle keep-alive wait + request read; write.
  std::chrono::milliseconds request_timeout{5000};  // For messages (forwarding adds 1 s).
  int max_forward_hops = 2;
  uint64_t cluster_id = 0;  // Shown in /status (0: a cluster without an id).
  // /v1 limits (docs/http-api.md, "Limits").
  uint64_t max_txn_ops = 128;           // Per txn list; 400 too_many_ops past it.
  uint64_t default_range_limit = 1000;  // A range page without ?limit.
  uint64_t max_range_limit = 10000;     // A larger ?limit is lowered to it.
  uint64_t max_range_bytes = 4 << 20;   // A page ends once it holds this many bytes.
  uint64_t max_delete_keys = 10000;     // A prefix delete without limit: 413 past it.
  // Leases (docs/http-api.md, "Leases").
  uint64_t max_leases = 100000;                      // 429 too_many_leases past it.
  uint64_t min_lease_ttl_ms = 2000;                  // A shorter TTL is raised to it.
  uint64_t max_lease_ttl_ms = 30ULL * 86400 * 1000;  // 400 past it.
  uint64_t max_keepalive_ids = 10000;                // 400 too_many_ids past it.
  // Browser origins allowed to call the API (CORS), comma separated; "*": any.
  std::string cors_origins;
  // /ready (docs/http-api.md, "Probes"): a follower is not ready once it has
  // not heard from its leader for this long (the longest election timeout).
  std::chrono::milliseconds ready_leader_timeout{2000};
  // Nor while its applied index trails the commit index by more (--ready-max-lag).
  uint64_t ready_max_lag = 1000;
};

class HttpServer {
 public:
  // `transport` (may be null) is read for its counters in /status; it must
  // outlive the server.
  HttpServer(boost::asio::io_context& io, std::vector<boost::asio::io_context*> session_ios,
             HttpOptions options, Replica* replica, kv::Store* kv, Forwarder* forwarder,
             const transport::Transport* transport = nullptr, const ProtoWatch* proto = nullptr,
             WatchHub* watches = nullptr);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds synchronously (a taken port is a startup error) and starts accepting.
  raft::Status Listen();
  // Stops accepting. Requests already being served finish; a request that
  // arrives later on an open connection gets 503 and the connection closes.
  void StopAccepting();
  // Requests read but not yet answered.
  size_t in_flight() const { return shared_->in_flight.load(); }
  // Adds figures to /metrics (called on an io thread at each scrape). Before Listen.
  void SetExtraMetrics(std::function<void(metrics::Writer*)> fn) {
    shared_->extra_metrics = std::move(fn);
  }

  // State the sessions share; outlives the server while sessions exist.
  struct Shared {
    HttpOptions options;
    Replica* replica;
    kv::Store* kv;
    Forwarder* forwarder;
    const transport::Transport* transport = nullptr;
    // The members' command language (null: every member speaks this one's).
    const ProtoWatch* proto = nullptr;
    // Watches (null: the /v1/watch routes answer 503).
    WatchHub* watches = nullptr;
    std::atomic<size_t> connections{0};
    std::atomic<size_t> in_flight{0};
    std::atomic<bool> draining{false};
    std::atomic<bool> backup_running{false};  // GET /v1/snapshot: one at a time.
    HttpMetrics metrics;
    // More figures for /metrics (the WAL's, the transport's); set before Listen.
    std::function<void(metrics::Writer*)> extra_metrics;
  };

 private:
  void Accept();

  boost::asio::io_context& io_;
  std::vector<boost::asio::io_context*> session_ios_;
  size_t next_io_ = 0;
  std::shared_ptr<Shared> shared_;
  boost::asio::ip::tcp::acceptor acceptor_;
};

// Percent-decodes a path segment ("%2F" -> "/"; '+' stays '+'). False on a
// malformed escape.
bool PercentDecode(std::string_view in, std::string* out);

}  // namespace raftkv::server
