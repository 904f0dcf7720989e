#include "server/options.h"

#include <boost/program_options.hpp>
#include <map>
#include <sstream>

#include "kv/command.h"
#include "version.h"

namespace raftkv::server {

namespace po = boost::program_options;

ParseResult ParseOptions(int argc, char** argv, Options* out, std::string* message) {
  Options d;  // Defaults.
  po::options_description desc(
      "raftkv: a Raft-replicated in-memory key-value store with an HTTP API.\n\n"
      "Usage: raftkv --bind HOST:PORT --http HOST:PORT --datadir DIR [--bootstrap | --join "
      "HOST:PORT] [--id NAME]\n\n"
      "BIND, HTTP, DATA_DIR, BOOTSTRAP, JOIN, ID and FSYNC in the environment stand for the\n"
      "flags of the same name (flags win). A new data directory needs --bootstrap or --join.\n"
      "A node restarted on an existing data directory ignores --bootstrap and --join (except\n"
      "that it refuses to start if --join names a member of another cluster) and resumes\n"
      "with its state. Options");
  // clang-format off
  desc.add_options()
      ("help,h", "print this help and exit")
      ("version", "print the version and exit")
      ("bind", po::value(&out->bind)->default_value(d.bind),
       "Raft peer address to listen on and advertise (env BIND)")
      ("http", po::value(&out->http)->default_value(d.http),
       "HTTP client address to listen on and advertise (env HTTP)")
      ("datadir", po::value(&out->datadir)->default_value(d.datadir),
       "data directory: node identity (raftkv-node.json) and the Raft log, hard state and "
       "snapshots (raft/); a node restarted on it resumes with its state (env DATA_DIR)")
      ("bootstrap", po::value(&out->bootstrap)->default_value(false)->implicit_value(true),
       "on an empty data directory, found a new one-node cluster (env BOOTSTRAP=1)")
      ("join", po::value(&out->join),
       "on an empty data directory, learn the cluster id from the member at this HTTP "
       "address (GET /status), then ask it to add this node; both retried with backoff "
       "(env JOIN)")
      ("id", po::value(&out->name),
       "node name; its Raft id is XXH64(name). Default: the --bind address (env ID)")
      ("tick-ms", po::value(&out->tick_ms)->default_value(d.tick_ms),
       "length of a Raft tick in milliseconds")
      ("election-ticks", po::value(&out->election_ticks)->default_value(d.election_ticks),
       "election timeout in ticks, randomized in [T, 2T): default 500-1000 ms")
      ("heartbeat-ticks", po::value(&out->heartbeat_ticks)->default_value(d.heartbeat_ticks),
       "leader heartbeat interval in ticks")
      ("request-timeout-ms", po::value(&out->request_timeout_ms)->default_value(d.request_timeout_ms),
       "a write not applied by then answers 504 (outcome unknown); a read 503")
      ("http-timeout-ms", po::value(&out->http_timeout_ms)->default_value(d.http_timeout_ms),
       "HTTP keep-alive idle time plus time to read one request, and to write one answer")
      ("max-key-bytes", po::value(&out->max_key_bytes)->default_value(d.max_key_bytes),
       "longest key (after percent-decoding); longer is 400")
      ("max-value-bytes", po::value(&out->max_value_bytes)->default_value(d.max_value_bytes),
       "longest value (decoded); longer is 413")
      ("max-body-bytes", po::value(&out->max_body_bytes)->default_value(d.max_body_bytes),
       "largest HTTP request body; larger is 413")
      ("max-connections", po::value(&out->max_connections)->default_value(d.max_connections),
       "open HTTP connections; past it a new connection gets 503 and is closed")
      ("max-pending-requests",
       po::value(&out->max_pending_requests)->default_value(d.max_pending_requests),
       "writes and linearizable reads waiting on this node; past it 503")
      ("max-txn-ops", po::value(&out->max_txn_ops)->default_value(d.max_txn_ops),
       "compares, and ops per branch, of one /v1 transaction; more is 400 too_many_ops")
      ("max-range-limit", po::value(&out->max_range_limit)->default_value(d.max_range_limit),
       "most keys in one /v1 range page (a larger ?limit is lowered to it)")
      ("max-range-bytes", po::value(&out->max_range_bytes)->default_value(d.max_range_bytes),
       "a /v1 range page ends once it holds this many key and value bytes")
      ("max-delete-keys", po::value(&out->max_delete_keys)->default_value(d.max_delete_keys),
       "most keys one /v1 prefix delete without ?limit removes; more is 413 too_many_keys")
      ("max-watchers", po::value(&out->max_watchers)->default_value(d.max_watchers),
       "watches on this node (streams' watches and long polls); past it 429 too_many_watchers")
      ("max-leases", po::value(&out->max_leases)->default_value(d.max_leases),
       "leases in the cluster; a grant past it is 429 too_many_leases")
      ("max-lease-ttl", po::value(&out->max_lease_ttl_s)->default_value(d.max_lease_ttl_s),
       "longest lease TTL in seconds; longer is 400 (the shortest is twice the longest "
       "election timeout, and a shorter TTL is raised to it)")
      ("max-keepalive-ids", po::value(&out->max_keepalive_ids)->default_value(d.max_keepalive_ids),
       "lease ids in one POST /v1/leases/keepalive; more is 400 too_many_ids")
      ("ready-max-lag", po::value(&out->ready_max_lag)->default_value(d.ready_max_lag),
       "/ready answers 503 catching_up while this node's applied index trails the commit "
       "index by more entries")
      ("lease-expiries-per-second",
       po::value(&out->lease_expiries_per_second)->default_value(d.lease_expiries_per_second),
       "leases the leader expires per second at most (1000 per log entry)")
      ("watch-buffer-bytes",
       po::value(&out->watch_buffer_bytes)->default_value(d.watch_buffer_bytes),
       "unsent bytes per watch stream; a consumer that falls further behind is cancelled "
       "(slow_consumer)")
      ("watch-history-revisions",
       po::value(&out->watch_history_revisions)->default_value(d.watch_history_revisions),
       "revisions with changes kept for watches; a watch from an older revision gets 410")
      ("watch-history-bytes",
       po::value(&out->watch_history_bytes)->default_value(d.watch_history_bytes),
       "memory held by the events kept for watches, keys and values included (the oldest are "
       "trimmed first)")
      ("cors-origins", po::value(&out->cors_origins)->default_value(d.cors_origins),
       "origins whose browser pages may call the API (CORS), comma separated, or * for any")
      ("snapshot-entries", po::value(&out->snapshot_entries)->default_value(d.snapshot_entries),
       "take a state-machine snapshot every N applied entries (0: never)")
      ("snapshot-keep-entries",
       po::value(&out->snapshot_keep_entries)->default_value(d.snapshot_keep_entries),
       "log entries kept after a snapshot for followers that lag a little")
      ("max-uncommitted-bytes",
       po::value(&out->max_uncommitted_bytes)->default_value(d.max_uncommitted_bytes),
       "proposed but uncommitted bytes on the leader; past it writes get 503")
      ("fsync", po::value(&out->fsync)->default_value(d.fsync),
       "WAL fsync policy: always (fsync before any vote or acknowledgement leaves) or never "
       "(no fsync at all: a machine crash can lose acknowledged writes; for benchmarks only, "
       "logged at startup and shown in /status) (env FSYNC)")
      ("max-frame-bytes", po::value(&out->max_frame_bytes)->default_value(d.max_frame_bytes),
       "largest peer transport frame accepted")
      ("peer-queue-bytes", po::value(&out->peer_queue_bytes)->default_value(d.peer_queue_bytes),
       "encoded messages queued per peer; past it messages are dropped")
      ("io-threads", po::value(&out->io_threads)->default_value(d.io_threads),
       "threads: the first runs the Raft driver, the peer connections and (alone) HTTP; "
       "the others serve HTTP (default: 1 below 4 cores, else 2)")
      ("log-level", po::value(&out->log_level)->default_value(d.log_level),
       "trace, debug, info, warn, error or critical");
  // clang-format on

  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    // Environment variables fill in what the command line did not set
    // (program_options keeps the first value stored for an option).
    static const std::map<std::string, std::string> kEnv = {
        {"BIND", "bind"}, {"HTTP", "http"}, {"DATA_DIR", "datadir"}, {"BOOTSTRAP", "bootstrap"},
        {"JOIN", "join"}, {"ID", "id"},     {"FSYNC", "fsync"}};
    po::store(po::parse_environment(desc,
                                    [](const std::string& env) -> std::string {
                                      auto it = kEnv.find(env);
                                      return it == kEnv.end() ? "" : it->second;
                                    }),
              vm);
    if (vm.count("help")) {
      std::ostringstream ss;
      ss << desc << "\nAlso: raftkv restore --help (build a data directory from a backup).";
      *message = ss.str();
      return ParseResult::kExitOk;
    }
    if (vm.count("version")) {
      *message = std::string("raftkv ") + RAFTKV_VERSION + " (command language " +
                 std::to_string(kv::kProtoVersion) + ")";
      return ParseResult::kExitOk;
    }
    po::notify(vm);
  } catch (const std::exception& e) {
    // Boost.Program_options reports errors by throwing; this is the edge.
    *message = std::string("raftkv: ") + e.what() + " (see --help)";
    return ParseResult::kExitError;
  }
  if (out->name.empty()) out->name = out->bind;
  auto bad = [message](const std::string& why) {
    *message = "raftkv: " + why + " (see --help)";
    return ParseResult::kExitError;
  };
  if (out->tick_ms <= 0) return bad("--tick-ms must be positive");
  if (out->heartbeat_ticks <= 0 || out->election_ticks <= out->heartbeat_ticks) {
    return bad("--election-ticks must be greater than --heartbeat-ticks > 0");
  }
  if (out->request_timeout_ms <= 0 || out->http_timeout_ms <= 0) {
    return bad("timeouts must be positive");
  }
  if (out->io_threads <= 0 || out->io_threads > 64) return bad("--io-threads must be 1..64");
  if (out->max_key_bytes == 0) return bad("--max-key-bytes must be positive");
  if (out->max_txn_ops == 0) return bad("--max-txn-ops must be positive");
  if (out->max_range_limit == 0) return bad("--max-range-limit must be positive");
  if (out->max_range_bytes == 0) return bad("--max-range-bytes must be positive");
  if (out->max_delete_keys == 0) return bad("--max-delete-keys must be positive");
  if (out->watch_buffer_bytes < 1024) return bad("--watch-buffer-bytes must be at least 1024");
  if (out->watch_history_revisions == 0 || out->watch_history_bytes == 0) {
    return bad("--watch-history-revisions and --watch-history-bytes must be positive");
  }
  if (out->max_leases == 0) return bad("--max-leases must be positive");
  // Ten years: a deadline is a steady-clock time point in nanoseconds.
  if (out->max_lease_ttl_s == 0 || out->max_lease_ttl_s > 10ULL * 365 * 86400) {
    return bad("--max-lease-ttl must be 1..315360000 seconds (ten years)");
  }
  // 8 bytes per id in one log entry: 100,000 ids make 800 KB.
  if (out->max_keepalive_ids == 0 || out->max_keepalive_ids > 100000) {
    return bad("--max-keepalive-ids must be 1..100000");
  }
  if (out->lease_expiries_per_second == 0) {
    return bad("--lease-expiries-per-second must be positive (0 would never expire a lease)");
  }
  if (out->fsync != "always" && out->fsync != "never") return bad("--fsync must be always|never");
  if (out->bootstrap && !out->join.empty()) return bad("--bootstrap and --join exclude each other");
  return ParseResult::kRun;
}

}  // namespace raftkv::server
