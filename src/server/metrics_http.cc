#include "server/metrics_http.h"

#include <algorithm>
#include <array>
#include <string_view>

#include "kv/command.h"
#include "server/watch_hub.h"
#include "version.h"

namespace raftkv::server {

namespace http = boost::beast::http;
using metrics::Writer;
using Type = metrics::Writer::Type;

const char* RouteTemplate(Route r) {
  switch (r) {
    case Route::kOther:
      return "other";
    case Route::kKeys:
      return "/keys/{key}";
    case Route::kJoin:
      return "/cluster/join";
    case Route::kStatus:
      return "/status";
    case Route::kHealth:
      return "/health";
    case Route::kReady:
      return "/ready";
    case Route::kMetrics:
      return "/metrics";
    case Route::kV1Kv:
      return "/v1/kv/{key}";
    case Route::kV1KvPrefix:
      return "/v1/kv/{prefix}?prefix";
    case Route::kV1Txn:
      return "/v1/txn";
    case Route::kV1Watch:
      return "/v1/watch/{key}";
    case Route::kV1WatchMulti:
      return "/v1/watch";
    case Route::kV1Leases:
      return "/v1/leases";
    case Route::kV1Lease:
      return "/v1/leases/{id}";
    case Route::kV1LeaseKeepAlive:
      return "/v1/leases/{id}/keepalive";
    case Route::kV1LeasesKeepAlive:
      return "/v1/leases/keepalive";
    case Route::kV1Members:
      return "/v1/members";
    case Route::kV1Member:
      return "/v1/members/{id}";
    case Route::kV1MemberPromote:
      return "/v1/members/{id}/promote";
    case Route::kV1LeaderTransfer:
      return "/v1/leader/transfer";
    case Route::kV1Snapshot:
      return "/v1/snapshot";
    case Route::kCount:
      break;
  }
  return "other";
}

namespace {

constexpr const char* kMethodNames[] = {"GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "other"};

}  // namespace

size_t HttpMetrics::MethodIndex(http::verb m) {
  switch (m) {
    case http::verb::get:
      return 0;
    case http::verb::put:
      return 1;
    case http::verb::post:
      return 2;
    case http::verb::delete_:
      return 3;
    case http::verb::head:
      return 4;
    case http::verb::options:
      return 5;
    default:
      return 6;
  }
}

size_t HttpMetrics::CodeIndex(unsigned status) {
  // Status -> its slot in kCodes (or the "other" slot), made once at compile time.
  static constexpr auto kSlots = [] {
    std::array<uint8_t, 600> t{};
    t.fill(static_cast<uint8_t>(std::size(kCodes)));
    for (size_t i = 0; i < std::size(kCodes); i++) t[kCodes[i]] = static_cast<uint8_t>(i);
    return t;
  }();
  static_assert(kCodeCount <= 256);
  return status < kSlots.size() ? kSlots[status] : std::size(kCodes);
}

void HttpMetrics::Record(Route route, http::verb method, unsigned status,
                         std::chrono::steady_clock::duration took) {
  const size_t r = static_cast<size_t>(route), m = MethodIndex(method);
  requests_[r][m][CodeIndex(status)].Add();
  durations_[r][m].Observe(took);
}

void HttpMetrics::Write(Writer* w) const {
  w->Family("raftkv_http_requests_total", Type::kCounter,
            "HTTP requests answered, by route template, method and status code.");
  for (size_t r = 0; r < kRoutes; r++) {
    for (size_t m = 0; m < kMethods; m++) {
      for (size_t c = 0; c < kCodeCount; c++) {
        uint64_t n = requests_[r][m][c].Read();
        if (n == 0) continue;
        std::string code = c < std::size(kCodes) ? std::to_string(kCodes[c]) : "other";
        w->Sample("raftkv_http_requests_total",
                  {{"route", RouteTemplate(static_cast<Route>(r))},
                   {"method", kMethodNames[m]},
                   {"code", code}},
                  static_cast<double>(n));
      }
    }
  }
  w->Family("raftkv_http_request_duration_seconds", Type::kHistogram,
            "From reading a request to queueing its answer (a stream: its start), by route "
            "template and method.");
  for (size_t r = 0; r < kRoutes; r++) {
    for (size_t m = 0; m < kMethods; m++) {
      metrics::Histogram::Snapshot h = durations_[r][m].Read();
      if (h.count == 0) continue;
      w->Histo("raftkv_http_request_duration_seconds",
               {{"route", RouteTemplate(static_cast<Route>(r))}, {"method", kMethodNames[m]}}, h);
    }
  }
}

std::string PeerLabel(const ClusterView& view, raft::NodeId id) {
  // A label value must be UTF-8: a name of printable ASCII is used as it is,
  // any other is replaced by the node id (a scrape must never fail on a name).
  if (const MemberView* m = view.Find(id)) {
    const std::string& n = m->info.name;
    if (!n.empty() &&
        std::all_of(n.begin(), n.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
      return n;
    }
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(id));
  return buf;
}

namespace {

void WriteServer(const StatusReport& r, const DriverMetrics* d, Writer* w) {
  const bool has_leader = r.node.leader != raft::kNoNode;
  w->Gauge("raftkv_server_has_leader", "Whether this node knows a leader (1) or not (0).",
           has_leader ? 1 : 0);
  w->Gauge("raftkv_server_is_leader", "Whether this node is the leader (1) or not (0).",
           r.node.role == raft::Role::kLeader ? 1 : 0);
  w->Gauge("raftkv_server_term", "The node's Raft term.", static_cast<double>(r.node.term));
  w->Gauge("raftkv_server_commit_index", "The highest log index this node knows committed.",
           static_cast<double>(r.node.commit));
  w->Gauge("raftkv_server_applied_index",
           "The highest log index applied to this node's store (its revision).",
           static_cast<double>(r.revision));
  w->Gauge("raftkv_server_last_index", "The last index in this node's log.",
           static_cast<double>(r.node.last_index));
  w->Gauge("raftkv_server_proposals_pending", "Writes proposed on this node, not yet answered.",
           static_cast<double>(r.pending_writes));
  w->Gauge("raftkv_server_reads_pending", "Linearizable reads waiting on this node.",
           static_cast<double>(r.pending_reads));
  w->Gauge("raftkv_server_keys", "Keys in the store.", static_cast<double>(r.keys));
  w->Gauge("raftkv_server_storage_healthy",
           "Whether the disk accepts writes (1) or failed, so the node takes none (0).",
           r.health == "ok" ? 1 : 0);
  w->Gauge("raftkv_server_degraded",
           "Whether a background duty fails (1: see /health), the node still serving.",
           r.degraded.empty() ? 0 : 1);
  size_t voters = 0, learners = 0;
  for (const raft::Member& m : r.node.conf.members) {
    (m.role == raft::MemberRole::kVoter ? voters : learners)++;
  }
  w->Family("raftkv_server_members", Type::kGauge, "Members of the cluster, by role.");
  w->Sample("raftkv_server_members", {{"role", "voter"}}, static_cast<double>(voters));
  w->Sample("raftkv_server_members", {{"role", "learner"}}, static_cast<double>(learners));
  if (d != nullptr) {
    w->Counter("raftkv_server_leader_changes_seen_total",
               "Times this node saw a leader other than the last one it knew.",
               static_cast<double>(d->leader_changes.Read()));
    w->Family("raftkv_server_proposals_failed_total", Type::kCounter,
              "Writes proposed on this node that failed, by reason (not_leader: the node "
              "stopped leading before proposing; the HTTP layer then forwards).");
    for (size_t c = 1; c < kCodeCount; c++) {
      w->Sample("raftkv_server_proposals_failed_total",
                {{"reason", CodeName(static_cast<Code>(c))}},
                static_cast<double>(d->proposals_failed[c].Read()));
    }
    w->Family("raftkv_server_read_index_duration_seconds", Type::kHistogram,
              "Linearizable read barriers (ReadIndex), from the request to its release.");
    w->Histo("raftkv_server_read_index_duration_seconds", {}, d->read_index.Read());
  }
  w->Family("raftkv_build_info", Type::kGauge,
            "Always 1; the labels name the version and the command language.");
  std::string proto = std::to_string(kv::kProtoVersion);
  w->Sample("raftkv_build_info", {{"version", RAFTKV_VERSION}, {"proto", proto}}, 1);
}

void WriteDisk(const StatusReport& r, const DriverMetrics* d, Writer* w) {
  if (d != nullptr) {
    w->Family("raftkv_disk_snapshot_save_duration_seconds", Type::kHistogram,
              "Snapshots of the store taken here: serializing, writing and syncing the file.");
    w->Histo("raftkv_disk_snapshot_save_duration_seconds", {}, d->snapshot_save.Read());
  }
  w->Counter("raftkv_disk_snapshots_taken_total", "Snapshots of the store this node took.",
             static_cast<double>(r.snapshots_taken));
  w->Counter("raftkv_disk_snapshots_installed_total",
             "Snapshots this node installed from the leader.",
             static_cast<double>(r.snapshots_installed));
  w->Gauge("raftkv_disk_snapshot_failures_in_a_row",
           "Snapshot attempts that failed since the last that succeeded (0: snapshots work).",
           static_cast<double>(r.snapshot_failures));
}

void WriteNetwork(const StatusReport& r, const DriverMetrics* d, Writer* w) {
  if (d == nullptr) return;
  w->Family("raftkv_network_peer_round_trip_time_seconds", Type::kHistogram,
            "Leader only: from a heartbeat to its response, per peer.");
  for (const auto& [id, h] : d->PeerRoundTrips()) {
    std::string to = PeerLabel(*r.view, id);
    w->Histo("raftkv_network_peer_round_trip_time_seconds", {{"to", to}}, h);
  }
}

void WriteWatches(const WatchHub* hub, Writer* w) {
  if (hub == nullptr) return;
  const WatchMetrics& m = hub->metrics();
  const watch::History& h = hub->history();
  w->Gauge("raftkv_watch_streams", "Open watch streams (each may carry several watches).",
           static_cast<double>(m.streams.load()));
  w->Gauge("raftkv_watch_long_polls", "Long polls waiting for events.",
           static_cast<double>(m.long_polls.load()));
  w->Gauge("raftkv_watch_watchers", "Watches held against --max-watchers.",
           static_cast<double>(hub->watchers()));
  w->Gauge("raftkv_watch_history_revisions", "Revisions with changes held in the watch history.",
           static_cast<double>(h.revisions_held()));
  w->Gauge("raftkv_watch_history_bytes", "Bytes held by the watch history.",
           static_cast<double>(h.bytes_held()));
  w->Gauge("raftkv_watch_compact_revision",
           "The watch history's compact revision: watches from at or below it get 410.",
           static_cast<double>(h.compact_revision()));
  w->Counter("raftkv_watch_events_sent_total",
             "Events queued to watch streams or put in long-poll answers.",
             static_cast<double>(m.events_sent.Read()));
  w->Family("raftkv_watch_canceled_total", Type::kCounter, "Watches canceled, by reason.");
  for (size_t i = 0; i < WatchMetrics::kCancelReasonCount; i++) {
    w->Sample("raftkv_watch_canceled_total", {{"reason", WatchMetrics::kCancelReasons[i]}},
              static_cast<double>(m.canceled[i].Read()));
  }
}

void WriteLeases(const StatusReport& r, const DriverMetrics* d, Writer* w) {
  w->Gauge("raftkv_leases", "Leases in the store.", static_cast<double>(r.leases));
  if (d == nullptr) return;
  w->Counter("raftkv_lease_granted_total", "Lease grants applied here.",
             static_cast<double>(d->leases_granted.Read()));
  w->Counter("raftkv_lease_revoked_total", "Leases revoked by a client, as applied here.",
             static_cast<double>(d->leases_revoked.Read()));
  w->Counter("raftkv_lease_expired_total", "Leases that expired, as applied here.",
             static_cast<double>(d->leases_expired.Read()));
  w->Counter("raftkv_lease_keepalives_total",
             "Lease renewals applied here (a batch keepalive counts each lease).",
             static_cast<double>(d->lease_keepalives.Read()));
}

}  // namespace

std::vector<std::string> NotReadyReasons(const StatusReport& r, bool draining,
                                         int64_t ms_since_leader,
                                         std::chrono::milliseconds leader_timeout,
                                         uint64_t max_lag) {
  std::vector<std::string> reasons;
  if (draining) reasons.push_back("shutting_down");
  if (r.health != "ok") reasons.push_back("storage_failed");
  bool member = false;
  for (const raft::Member& m : r.node.conf.members) member = member || m.id == r.node.id;
  if (!member) reasons.push_back("not_a_member");
  if (r.node.leader == raft::kNoNode) {
    reasons.push_back("no_leader");
  } else if (r.node.role != raft::Role::kLeader && ms_since_leader > leader_timeout.count()) {
    reasons.push_back(ms_since_leader == INT64_MAX
                          ? "leader_silent never"
                          : "leader_silent ms=" + std::to_string(ms_since_leader));
  }
  const raft::Index commit = std::max(r.leader_commit, r.node.commit);
  if (commit > r.revision && commit - r.revision > max_lag) {
    reasons.push_back("catching_up applied=" + std::to_string(r.revision) +
                      " commit=" + std::to_string(commit));
  }
  return reasons;
}

std::string RenderMetrics(const StatusReport& r, const MetricsSources& s) {
  Writer w;
  WriteServer(r, s.driver, &w);
  WriteDisk(r, s.driver, &w);
  WriteNetwork(r, s.driver, &w);
  if (s.extra) s.extra(&w);
  if (s.http != nullptr) {
    s.http->Write(&w);
    w.Counter("raftkv_http_forwarded_total", "Requests this node forwarded to the leader.",
              static_cast<double>(s.http->forwarded.Read()));
    w.Family("raftkv_txn_total", Type::kCounter,
             "Transactions answered by this node, by whether their compares held.");
    w.Sample("raftkv_txn_total", {{"result", "success"}},
             static_cast<double>(s.http->txn_succeeded.Read()));
    w.Sample("raftkv_txn_total", {{"result", "failure"}},
             static_cast<double>(s.http->txn_failed.Read()));
  }
  w.Gauge("raftkv_http_connections", "Open client connections (watch streams included).",
          static_cast<double>(s.http_connections));
  WriteWatches(s.watches, &w);
  WriteLeases(r, s.driver, &w);
  metrics::WriteProcessMetrics(&w);
  return w.Take();
}

}  // namespace raftkv::server
