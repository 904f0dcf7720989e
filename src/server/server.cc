#include "server/server.h"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/json.hpp>
#include <csignal>
#include <future>
#include <random>
#include <thread>

#include "server/identity.h"
#include "storage/disk_storage.h"

namespace raftkv::server {

namespace asio = boost::asio;

namespace {

// Many client connections need many descriptors: lift the soft limit.
void RaiseFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

Server::Server(Options options) : options_(std::move(options)), io_(1) {
  for (int i = 1; i < options_.io_threads; i++) {
    session_ios_.push_back(std::make_unique<asio::io_context>(1));
  }
}

Server::~Server() { Shutdown(); }

raft::Status Server::Start() {
  RaiseFileLimit();
  std::signal(SIGPIPE, SIG_IGN);
  // A file-size limit (ulimit -f) must surface as a failed WAL write (EFBIG),
  // which the node reports and survives, not as a signal that kills it.
  std::signal(SIGXFSZ, SIG_IGN);

  self_.name = options_.name;
  self_.id = NodeIdFromName(self_.name);
  self_.raft = options_.bind;
  self_.http = options_.http;

  // The data directory says whether this is a first start or a restart.
  raft::Status s = EnsureDataDir(options_.datadir);
  if (!s.ok()) return s;
  bool found = false;
  s = LoadMetadata(options_.datadir, &meta_, &found);
  if (!s.ok()) return s;
  if (found) {
    if (meta_.name != self_.name) {
      return raft::Status(raft::Code::kInvalidArgument,
                          "data directory " + options_.datadir + " belongs to node '" + meta_.name +
                              "', not '" + self_.name + "' (check --id/--bind)");
    }
    if (meta_.raft != self_.raft || meta_.http != self_.http) {
      spdlog::warn(
          "addresses differ from the first start (raft {} http {}); the membership still "
          "advertises those",
          meta_.raft, meta_.http);
    }
    if (options_.bootstrap || !options_.join.empty()) {
      spdlog::info("restart on an existing data directory: ignoring --bootstrap/--join");
    }
    // A node that crashed before its join was answered asks again (the
    // membership it has replicated since may already list it: TryJoin).
    if (!meta_.member && !meta_.join.empty()) join_targets_.push_back(meta_.join);
  } else {
    meta_.name = self_.name;
    meta_.id = self_.id;
    meta_.raft = self_.raft;
    meta_.http = self_.http;
    meta_.bootstrapped = options_.bootstrap;
    meta_.join = options_.join;
    meta_.member = options_.bootstrap;
    if (!options_.join.empty()) join_targets_.push_back(options_.join);
  }

  const std::string raft_dir = options_.datadir + "/raft";
  s = ResolveClusterId(found, raft_dir);
  if (!s.ok()) return s;

  // The Raft log, hard state and snapshots (docs/wal-format.md), in their
  // own subdirectory next to raftkv-node.json. META, every segment header
  // and every snapshot file carry the cluster id, and Open refuses a
  // directory of another cluster or node, naming both.
  storage::StorageOptions so;
  so.node_id = self_.id;
  so.cluster_id = meta_.cluster_id;
  if (!storage::ParseFsyncMode(options_.fsync, &so.fsync)) {
    return raft::Status(raft::Code::kInvalidArgument, "--fsync must be always|never");
  }
  std::unique_ptr<storage::DiskStorage> disk;
  storage::RecoveryInfo recovery;
  s = storage::DiskStorage::Open(raft_dir, so, &disk, &recovery);
  if (!s.ok()) {
    return raft::Status(s.code(), "opening the Raft log in " + raft_dir + ": " + s.message());
  }
  spdlog::info("storage {}: {}", raft_dir, recovery.ToString());
  if (recovery.created && found && meta_.member) {
    // A member whose log is gone would vote and acknowledge as if it had
    // never promised anything (a directory from before the WAL, or a
    // deleted raft/ subdirectory). Refuse rather than break Raft's safety.
    return raft::Status(raft::Code::kCorruption,
                        "data directory " + options_.datadir + " belongs to a cluster member but " +
                            raft_dir +
                            " held no Raft log; wipe the data directory to add this "
                            "node again as a new member");
  }
  if (so.fsync == storage::FsyncMode::kNever) {
    spdlog::warn(
        "*** --fsync=never: the WAL is never fsynced; a machine crash or power loss can lose "
        "acknowledged writes and break Raft's safety. For benchmarks only. ***");
  }
  ReplicaConfig rc;
  // The core refuses, and answers the leader, a snapshot this disk would
  // refuse: the WAL never sees a chunk past its limit.
  rc.raft.max_snapshot_bytes = disk->max_snapshot_data_bytes();
  log_store_ = std::make_unique<WalLogStore>(std::move(disk));
  rc.self = self_;
  rc.raft.id = self_.id;
  rc.raft.election_timeout_ticks = options_.election_ticks;
  rc.raft.heartbeat_interval_ticks = options_.heartbeat_ticks;
  rc.lease_expiries_per_second = options_.lease_expiries_per_second;
  // One command: a put's key and value, or a /v1 txn, which its body bounds
  // (its encoding adds a few bytes per op, and a prefix's end per range).
  rc.raft.max_entry_bytes = std::max(options_.max_key_bytes + options_.max_value_bytes + 256,
                                     2 * options_.max_body_bytes + (64 << 10));
  rc.raft.max_msg_bytes = std::max<uint64_t>(1 << 20, rc.raft.max_entry_bytes);
  rc.raft.max_uncommitted_bytes = options_.max_uncommitted_bytes;
  rc.raft.seed = self_.id ^ std::random_device{}();
  rc.tick = std::chrono::milliseconds(options_.tick_ms);
  rc.request_timeout = std::chrono::milliseconds(options_.request_timeout_ms);
  rc.snapshot_entries = options_.snapshot_entries;
  rc.snapshot_keep_entries = options_.snapshot_keep_entries;
  rc.max_pending_requests = options_.max_pending_requests;
  // Limits derived from flags are refused here with a message, not by the
  // core's assertion.
  if (raft::Status v = rc.raft.Validate(); !v.ok()) {
    return raft::Status(v.code(), "Raft configuration: " + v.message());
  }

  transport::Options to;
  // A frame holds at most one AppendEntries (max_msg_bytes of entries, or one
  // entry if larger) or one snapshot chunk, plus headers.
  to.max_frame_bytes = std::max<uint64_t>(
      options_.max_frame_bytes,
      std::max(rc.raft.max_msg_bytes, rc.raft.max_snapshot_chunk_bytes) + (64 << 10));
  to.max_queue_bytes = options_.peer_queue_bytes;
  transport_ = std::make_unique<transport::Transport>(
      io_, self_.id, meta_.cluster_id, self_.raft, to,
      [this](std::vector<raft::Message> msgs) { replica_->Receive(std::move(msgs)); });
  WatchOptions wo;
  wo.max_watchers = options_.max_watchers;
  wo.buffer_bytes = options_.watch_buffer_bytes;
  wo.history.max_revisions = options_.watch_history_revisions;
  wo.history.max_bytes = options_.watch_history_bytes;
  // etcd's WithRequireLeader: two election timeouts (the longest) without one.
  wo.no_leader_after = std::chrono::milliseconds(4 * options_.tick_ms * options_.election_ticks);
  watch_hub_ = std::make_unique<WatchHub>(wo);
  // HTTP sessions stay off the thread that drives Raft when there is another.
  std::vector<asio::io_context*> ios;
  for (auto& io : session_ios_) ios.push_back(io.get());
  if (ios.empty()) ios.push_back(&io_);
  watch_hub_->SetThreads(ios);
  replica_ = std::make_unique<Replica>(
      rc, log_store_.get(), &kv_,
      [this](std::vector<raft::Message> msgs) { transport_->Send(std::move(msgs)); },
      [this](const std::map<raft::NodeId, std::string>& peers) { transport_->SetPeers(peers); },
      [this](const std::vector<MemberInfo>& members) {
        asio::post(io_, [this, members] { OnMembers(members); });
      },
      io_, watch_hub_.get());

  watch_hub_->SetNodeState(
      [this, after = wo.no_leader_after.count()] {
        return replica_->MillisSinceLeaderContact() > after;
      },
      [this] {
        auto view = replica_->view();
        return view->Find(view->self) != nullptr;
      });
  forwarder_ = std::make_unique<Forwarder>(
      io_, std::chrono::milliseconds(options_.request_timeout_ms + 1000));
  proto_ = std::make_unique<ProtoWatch>(io_, forwarder_.get(), self_.id);
  HttpOptions ho;
  ho.address = options_.http;
  ho.max_body_bytes = options_.max_body_bytes;
  ho.max_key_bytes = options_.max_key_bytes;
  ho.max_value_bytes = options_.max_value_bytes;
  ho.max_connections = options_.max_connections;
  ho.timeout = std::chrono::milliseconds(options_.http_timeout_ms);
  ho.request_timeout = std::chrono::milliseconds(options_.request_timeout_ms);
  ho.cluster_id = meta_.cluster_id;
  ho.max_txn_ops = options_.max_txn_ops;
  ho.max_range_limit = options_.max_range_limit;
  ho.default_range_limit = std::min<uint64_t>(1000, options_.max_range_limit);
  ho.max_range_bytes = options_.max_range_bytes;
  ho.max_delete_keys = options_.max_delete_keys;
  ho.cors_origins = options_.cors_origins;
  ho.max_leases = options_.max_leases;
  // Twice the longest election timeout: a lease outlives a leader change.
  // Whole seconds, rounded up: the API speaks seconds, and the TTL it
  // reports must not be longer than the one granted.
  uint64_t min_ttl_ms = 2 * 2 * static_cast<uint64_t>(options_.tick_ms) *
                        static_cast<uint64_t>(options_.election_ticks);
  ho.min_lease_ttl_ms = (min_ttl_ms + 999) / 1000 * 1000;
  ho.max_lease_ttl_ms = std::max<uint64_t>(options_.max_lease_ttl_s * 1000, ho.min_lease_ttl_ms);
  ho.max_keepalive_ids = options_.max_keepalive_ids;
  ho.ready_max_lag = options_.ready_max_lag;
  // The longest election timeout: a follower that heard nothing for longer
  // would have started an election (check-quorum makes a leader step down).
  ho.ready_leader_timeout =
      std::chrono::milliseconds(2 * options_.tick_ms * options_.election_ticks);
  http_ =
      std::make_unique<HttpServer>(io_, std::move(ios), ho, replica_.get(), &kv_, forwarder_.get(),
                                   transport_.get(), proto_.get(), watch_hub_.get());
  http_->SetExtraMetrics([this](metrics::Writer* w) { WriteMetrics(w); });

  s = transport_->Listen(self_.raft);
  if (!s.ok()) return s;
  s = http_->Listen();
  if (!s.ok()) return s;
  if (!found) {
    s = SaveMetadata(options_.datadir, meta_);
    if (!s.ok()) return s;
  }
  if (!found && options_.bootstrap) {
    s = replica_->Bootstrap();
    if (!s.ok()) return s;
  }

  spdlog::info("raftkv node {} (id {:x}) cluster {} raft={} http={} datadir={} storage: {}",
               self_.name, self_.id, meta_.cluster_id, self_.raft, self_.http, options_.datadir,
               log_store_->Describe());
  spdlog::info("timing: tick {} ms, election timeout {}-{} ms, heartbeat every {} ms",
               options_.tick_ms, options_.tick_ms * options_.election_ticks,
               options_.tick_ms * options_.election_ticks * 2,
               options_.tick_ms * options_.heartbeat_ticks);
  if (found && !meta_.member && join_targets_.empty()) {
    spdlog::info("waiting to be added to a cluster (POST /cluster/join/ on a member)");
  }

  replica_->set_admitted(join_targets_.empty() && meta_.member);
  // Before any thread runs: a signal from now on means "shut down".
  signals_ = std::make_unique<asio::signal_set>(io_, SIGINT, SIGTERM);
  replica_->Start();
  io_threads_.emplace_back([this] {
    pthread_setname_np(pthread_self(), "raftkv-io0");
    io_.run();
  });
  for (auto& io : session_ios_) {
    // Idle until a connection arrives; stopped explicitly at shutdown.
    auto* ctx = io.get();
    std::string name = "raftkv-io" + std::to_string(io_threads_.size());
    io_threads_.emplace_back([ctx, name] {
      pthread_setname_np(pthread_self(), name.c_str());
      auto work = asio::make_work_guard(*ctx);
      ctx->run();
    });
  }
  started_ = true;
  asio::post(io_, [this] { proto_->Start(); });
  if (!join_targets_.empty()) {
    join_timer_ = std::make_unique<asio::steady_timer>(io_);
    asio::post(io_, [this] { TryJoin(); });
  }
  return raft::Status::Ok();
}

raft::Status Server::ResolveClusterId(bool found, const std::string& raft_dir) {
  if (found) {
    if (options_.join.empty()) return raft::Status::Ok();
    // A restart with --join: a data directory moved to, or a command line
    // pointed at, another cluster is refused here rather than left to be
    // refused by every peer. One attempt: a member restarts whether or not
    // the node it was told to join is up (the handshake still checks).
    uint64_t theirs = 0;
    std::string why;
    if (!FetchClusterId(options_.join, std::chrono::milliseconds(1000), &theirs, &why)) {
      spdlog::info("could not check the cluster id of --join {} ({}); the peer handshake will",
                   options_.join, why);
      return raft::Status::Ok();
    }
    if (theirs != meta_.cluster_id) {
      return raft::Status(raft::Code::kInvalidArgument,
                          "data directory " + options_.datadir + " belongs to cluster " +
                              std::to_string(meta_.cluster_id) + ", but --join " + options_.join +
                              " is a member of cluster " + std::to_string(theirs) +
                              "; refusing to start (wipe the data directory to join that cluster "
                              "as a new member)");
    }
    return raft::Status::Ok();
  }
  // No raftkv-node.json: a first start, or one that crashed after the
  // storage created its META but before the metadata was saved (nothing
  // else is written before it). The id in that META is the directory's.
  uint64_t meta_cluster = 0, meta_node = 0;
  bool meta_found = false;
  raft::Status s = storage::ReadMetaIds(raft_dir, nullptr, &meta_cluster, &meta_node, &meta_found);
  if (!s.ok()) return raft::Status(s.code(), "reading " + raft_dir + ": " + s.message());
  if (options_.bootstrap) {
    meta_.cluster_id = meta_found ? meta_cluster : NewClusterId();
    spdlog::info("founding cluster {}", meta_.cluster_id);
    return raft::Status::Ok();
  }
  if (join_targets_.empty()) {
    return raft::Status(raft::Code::kInvalidArgument,
                        "a new data directory needs --bootstrap (found a cluster) or --join "
                        "HOST:PORT (join one): a node learns its cluster's id before it writes");
  }
  // Before anything is written: the storage is created with the id.
  meta_.cluster_id = LearnClusterId();
  return raft::Status::Ok();
}

bool Server::FetchClusterId(const std::string& target, std::chrono::milliseconds timeout,
                            uint64_t* out, std::string* why) {
  // Its own io_context: this runs in Start, before the node's threads.
  asio::io_context io(1);
  Forwarder fwd(io, timeout);
  ForwardRequest req;
  req.method = boost::beast::http::verb::get;
  req.target = "/status";
  ForwardResponse resp;
  fwd.Send(target, std::move(req), [&resp](ForwardResponse r) { resp = std::move(r); });
  io.run();
  fwd.Stop();
  if (resp.error != ForwardResponse::Error::kNone) {
    *why = resp.message;
    return false;
  }
  if (resp.status != 200) {
    *why = "GET /status answered HTTP " + std::to_string(resp.status);
    return false;
  }
  return ClusterIdFromStatus(resp.body, out, why);
}

uint64_t Server::LearnClusterId() {
  std::chrono::milliseconds backoff(100);
  for (uint64_t attempt = 1;; attempt++) {
    const std::string& target = join_targets_[(attempt - 1) % join_targets_.size()];
    uint64_t id = 0;
    std::string why;
    if (FetchClusterId(target, std::chrono::milliseconds(2000), &id, &why)) {
      spdlog::info("joining cluster {} (its id learned from {})", id, target);
      return id;
    }
    if (attempt == 1 || attempt % 20 == 0) {
      spdlog::info("learning the cluster id from {}: {}; retrying (attempt {})", target, why,
                   attempt);
    }
    // Nothing runs yet and nothing is written: SIGTERM ends the process as is.
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
}

void Server::TryJoin() {
  if (stopping_) return;
  if (replica_->view()->Find(self_.id) != nullptr) {
    // The replicated membership already lists us (an earlier answer was lost).
    spdlog::info("joined the cluster (found in the membership)");
    return MarkMember();
  }
  boost::json::object body;
  body["address"] = self_.raft;
  body["id"] = self_.name;
  body["http"] = self_.http;
  ForwardRequest fr;
  fr.target = "/cluster/join/";
  fr.body = boost::json::serialize(body);
  const std::string target = join_targets_[join_attempts_ % join_targets_.size()];
  join_attempts_++;
  forwarder_->Send(target, std::move(fr), [this, target](ForwardResponse r) {
    if (stopping_) return;
    if (r.error == ForwardResponse::Error::kNone && r.status == 200) {
      spdlog::info("joined the cluster via {} after {} attempt(s)", target, join_attempts_);
      return MarkMember();
    }
    std::string why = r.error == ForwardResponse::Error::kNone
                          ? "HTTP " + std::to_string(r.status) + " " + r.body
                          : r.message;
    if (join_attempts_ == 1 || join_attempts_ % 20 == 0) {
      spdlog::info("join via {}: {}; retrying (attempt {})", target, why, join_attempts_);
    }
    join_timer_->expires_after(join_backoff_);
    join_backoff_ = std::min(join_backoff_ * 2, std::chrono::milliseconds(1000));
    join_timer_->async_wait([this](boost::system::error_code ec) {
      if (!ec) TryJoin();
    });
  });
}

void Server::MarkMember() {
  replica_->set_admitted(true);
  std::lock_guard lock(meta_mu_);
  if (meta_.member) return;
  meta_.member = true;
  raft::Status s = SaveMetadata(options_.datadir, meta_);
  if (!s.ok()) spdlog::error("saving node metadata: {}", s.ToString());
}

void Server::OnMembers(const std::vector<MemberInfo>& members) {
  proto_->SetMembers(members);
  std::vector<std::string> peers;
  bool self_in = false;
  for (const MemberInfo& m : members) {
    if (m.id == self_.id) {
      self_in = true;
    } else if (!m.http.empty()) {
      peers.push_back(m.http);
    }
  }
  std::lock_guard lock(meta_mu_);
  // Only a membership that includes us is worth remembering (a node
  // catching up replays old ones), and only a change is worth a write.
  if (!self_in || peers == meta_.peers_http) return;
  meta_.peers_http = std::move(peers);
  raft::Status s = SaveMetadata(options_.datadir, meta_);
  if (!s.ok()) spdlog::error("saving node metadata: {}", s.ToString());
}

void Server::RunUntilSignal() {
  std::promise<int> got;
  signals_->async_wait([&got](boost::system::error_code ec, int sig) {
    if (!ec) got.set_value(sig);
  });
  int sig = got.get_future().get();
  spdlog::info("received {}; shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
  Shutdown();
}

void Server::Shutdown() {
  if (!started_ || stopping_.exchange(true)) return;
  // 1. No new connections; new requests on open ones get 503; watch streams
  // end (canceled: shutdown) and long polls answer 503.
  http_->StopAccepting();
  watch_hub_->Shutdown();
  // 2. A leader hands over so that the cluster does not wait an election timeout.
  replica_->TransferLeadershipAway(std::chrono::milliseconds(1000));
  // 3. Let requests in flight finish, within the request timeout.
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(std::min(options_.request_timeout_ms, 5000));
  while (http_->in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // 4. Fail what is left, flush the log store, stop the driver; give the
  // answers a moment to be written, then stop the network.
  if (join_timer_) asio::post(io_, [this] { join_timer_->cancel(); });
  asio::post(io_, [this] { proto_->Stop(); });
  replica_->Stop();
  deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (http_->in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Streams still writing their last messages to consumers that do not read close now.
  watch_hub_->CloseAll();
  forwarder_->Stop();
  transport_->Stop();
  io_.stop();
  for (auto& io : session_ios_) io->stop();
  for (std::thread& t : io_threads_) t.join();
  io_threads_.clear();
  spdlog::info("stopped");
}

void Server::WriteMetrics(metrics::Writer* w) const {
  using Type = metrics::Writer::Type;
  log_store_->WriteMetrics(w);
  std::vector<transport::PeerStats> peers = transport_->peer_stats();
  auto view = replica_->view();
  auto name = [&view](raft::NodeId id) { return PeerLabel(*view, id); };
  struct Family {
    const char* metric;
    const char* label;
    Type type;
    const char* help;
    uint64_t transport::PeerStats::*field;
  };
  static constexpr Family kFamilies[] = {
      {"raftkv_network_peer_sent_bytes_total", "to", Type::kCounter,
       "Bytes of Raft messages sent to each peer.", &transport::PeerStats::sent_bytes},
      {"raftkv_network_peer_received_bytes_total", "from", Type::kCounter,
       "Bytes of Raft messages received from each peer.", &transport::PeerStats::received_bytes},
      {"raftkv_network_peer_sent_failures_total", "to", Type::kCounter,
       "Connections to each peer that failed (connect or write), each followed by a reconnect.",
       &transport::PeerStats::send_failures},
      {"raftkv_network_peer_queue_bytes", "to", Type::kGauge,
       "Bytes queued for each peer, not yet written.", &transport::PeerStats::queue_bytes},
  };
  for (const Family& f : kFamilies) {
    w->Family(f.metric, f.type, f.help);
    for (const transport::PeerStats& p : peers) {
      std::string n = name(p.id);
      w->Sample(f.metric, {{f.label, n}}, static_cast<double>(p.*f.field));
    }
  }
}

}  // namespace raftkv::server
