// The HTTP server's own figures (requests by route template, method and
// code, with durations) and the /metrics page, which gathers every
// component's figures (docs/metrics.md).
#pragma once

#include <array>
#include <atomic>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "metrics/metrics.h"
#include "server/driver.h"

namespace raftkv::server {

class WatchHub;

// Route templates: a label never holds a key, a lease id or a member name.
enum class Route : uint8_t {
  kOther = 0,  // No route matched (404) or the request was refused before routing.
  kKeys,       // /keys/{key}
  kJoin,       // /cluster/join
  kStatus,
  kHealth,
  kReady,
  kMetrics,
  kV1Kv,        // /v1/kv/{key}
  kV1KvPrefix,  // /v1/kv/{prefix}?prefix
  kV1Txn,
  kV1Watch,            // /v1/watch/{key} (long polls and streams)
  kV1WatchMulti,       // POST /v1/watch
  kV1Leases,           // /v1/leases (grant, list)
  kV1Lease,            // /v1/leases/{id}
  kV1LeaseKeepAlive,   // /v1/leases/{id}/keepalive
  kV1LeasesKeepAlive,  // /v1/leases/keepalive (batch)
  kV1Members,          // /v1/members
  kV1Member,           // /v1/members/{id}
  kV1MemberPromote,    // /v1/members/{id}/promote
  kV1LeaderTransfer,   // /v1/leader/transfer
  kV1Snapshot,         // /v1/snapshot
  kCount,
};
const char* RouteTemplate(Route r);

class HttpMetrics {
 public:
  // One answered request (streams: when the stream starts).
  void Record(Route route, boost::beast::http::verb method, unsigned status,
              std::chrono::steady_clock::duration took);

  metrics::Counter forwarded;  // Requests this node forwarded to the leader.
  // Transactions answered here, by whether their compares held.
  metrics::Counter txn_succeeded, txn_failed;

  // The requests_total and request_duration_seconds families.
  void Write(metrics::Writer* w) const;

 private:
  static constexpr size_t kRoutes = static_cast<size_t>(Route::kCount);
  static constexpr size_t kMethods = 7;  // GET PUT POST DELETE HEAD OPTIONS other
  static constexpr unsigned kCodes[] = {200, 201, 204, 206, 301, 304, 400, 401, 403, 404,
                                        405, 406, 408, 409, 410, 411, 412, 413, 414, 415,
                                        416, 417, 422, 429, 431, 500, 501, 502, 503, 504};
  static constexpr size_t kCodeCount = std::size(kCodes) + 1;  // + "other"
  static size_t MethodIndex(boost::beast::http::verb m);
  static size_t CodeIndex(unsigned status);

  std::array<std::array<std::array<metrics::Counter, kCodeCount>, kMethods>, kRoutes> requests_;
  std::array<std::array<metrics::Histogram, kMethods>, kRoutes> durations_;
};

// What /metrics reads besides the driver's StatusReport.
struct MetricsSources {
  const DriverMetrics* driver = nullptr;
  const HttpMetrics* http = nullptr;
  size_t http_connections = 0;
  // Figures the server adds (the WAL's, the transport's); may be empty.
  std::function<void(metrics::Writer*)> extra;
  const WatchHub* watches = nullptr;
};

// A peer's `to`/`from` label: its member name if that is printable ASCII (a
// label must be UTF-8), else its node id in hex.
std::string PeerLabel(const ClusterView& view, raft::NodeId id);

// Why a node is not ready (docs/metrics.md, "Probes"); empty when it is.
// `ms_since_leader` is Driver::MillisSinceLeaderContact().
std::vector<std::string> NotReadyReasons(const StatusReport& r, bool draining,
                                         int64_t ms_since_leader,
                                         std::chrono::milliseconds leader_timeout,
                                         uint64_t max_lag);

// The whole page, in the Prometheus text format 0.0.4.
std::string RenderMetrics(const StatusReport& r, const MetricsSources& s);

}  // namespace raftkv::server
