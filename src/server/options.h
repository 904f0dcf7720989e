// Command-line flags and environment variables of the raftkv process.
#pragma once

#include <cstdint>
#include <string>
#include <thread>

namespace raftkv::server {

struct Options {
  // Identity and cluster formation (also BIND, HTTP, DATA_DIR, BOOTSTRAP, JOIN, ID).
  std::string bind = "127.0.0.1:7001";
  std::string http = "127.0.0.1:4001";
  std::string datadir = "raftkv-data";
  bool bootstrap = false;
  std::string join;
  std::string name;  // --id; empty means "the bind address".

  // Raft timing.
  int tick_ms = 50;
  int election_ticks = 10;
  int heartbeat_ticks = 1;

  // Requests.
  int request_timeout_ms = 5000;
  int http_timeout_ms = 30000;
  uint64_t max_key_bytes = 4096;
  uint64_t max_value_bytes = 1 << 20;
  uint64_t max_body_bytes = 4 << 20;
  uint64_t max_connections = 10000;
  uint64_t max_pending_requests = 100000;
  // The /v1 API (docs/http-api.md, "Limits").
  uint64_t max_txn_ops = 128;
  uint64_t max_range_limit = 10000;
  uint64_t max_range_bytes = 4 << 20;
  uint64_t max_delete_keys = 10000;
  // Watches (docs/http-api.md, "Watch").
  uint64_t max_watchers = 10000;
  uint64_t watch_buffer_bytes = 4 << 20;
  uint64_t watch_history_revisions = 100000;
  uint64_t watch_history_bytes = 64 << 20;
  // Leases (docs/http-api.md, "Leases").
  uint64_t max_leases = 100000;
  uint64_t max_lease_ttl_s = 30 * 24 * 3600;
  uint64_t max_keepalive_ids = 10000;
  uint64_t lease_expiries_per_second = 1000;
  // Origins a browser page may call the API from (CORS), comma separated;
  // "*" for any; empty for none.
  std::string cors_origins;
  // /ready answers 503 while applied trails commit by more (docs/http-api.md, "Probes").
  uint64_t ready_max_lag = 1000;

  // Log and snapshots.
  // As etcd: a snapshot every 100,000 entries, 5,000 kept for followers.
  uint64_t snapshot_entries = 100000;
  uint64_t snapshot_keep_entries = 5000;
  uint64_t max_uncommitted_bytes = 64 << 20;
  std::string fsync = "always";

  // Peer transport.
  uint64_t max_frame_bytes = 16 << 20;
  uint64_t peer_queue_bytes = 64 << 20;

  // One thread (Raft driver, peers and HTTP together) unless the machine has
  // cores to spare: on two cores a second thread only adds hand-offs.
  int io_threads = std::thread::hardware_concurrency() >= 4 ? 2 : 1;
  std::string log_level = "info";
};

enum class ParseResult { kRun, kExitOk, kExitError };

// Parses flags, then the environment for what flags did not set. On
// kExitOk (--help, --version) or kExitError, *message is what to print.
ParseResult ParseOptions(int argc, char** argv, Options* out, std::string* message);

}  // namespace raftkv::server
