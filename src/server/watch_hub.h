// WatchHub: the watch history and its delivery to the io threads
// (api-v1.md section 3, "Watch hub").
//
// The driver reports each applied batch (ChangeFeed); the hub appends it to
// the history and posts it once to every io thread that has watches, whose
// registry matches it to that thread's watches. Apply never waits for a
// watcher: a post is the whole cost on the driver thread. A snapshot
// installed from the leader resets the history, and every thread ends its
// older watches (snapshot_installed).
//
// Each io thread also sweeps its watch clients (streams and long polls)
// about every 100 ms: progress messages, long-poll deadlines, require_leader.
//
// Threads: OnChanges/OnRestored on the driver thread (or the driver's
// constructor); Acquire, Release, Shutdown and the counters on any thread;
// a WatchThread only on its own io thread.
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <queue>
#include <string_view>
#include <vector>

#include "metrics/metrics.h"
#include "server/driver.h"
#include "watch/history.h"
#include "watch/registry.h"

namespace raftkv::server {

struct WatchOptions {
  uint64_t max_watchers = 10000;    // --max-watchers: 429 past it.
  uint64_t buffer_bytes = 4 << 20;  // --watch-buffer-bytes: unsent bytes per stream.
  watch::HistoryLimits history;     // --watch-history-revisions, --watch-history-bytes
  // require_leader: no leader for this long ends a stream (no_leader).
  std::chrono::milliseconds no_leader_after{2000};
};

// What a sweep tells every client of a thread (computed once per sweep).
struct SweepState {
  std::chrono::steady_clock::time_point now;
  bool no_leader = false;  // No leader heard for WatchOptions::no_leader_after.
  bool member = true;      // This node is a member of the cluster.
};

// A stream or a long poll, as its thread's sweep sees it.
class WatchClient {
 public:
  virtual ~WatchClient() = default;
  // When a time it asked for (WatchThread::Wake) has come, and for every
  // client when the node loses its leader or its membership. It asks for
  // its next wake-up, if any, again.
  virtual void OnSweep(const SweepState& s) = 0;
  // The node is shutting down.
  virtual void OnShutdown() = 0;
  // The node stops now: close at once (WatchHub::CloseAll).
  virtual void OnClose() = 0;
};

class WatchHub;

// One io thread's watches.
class WatchThread {
 public:
  WatchThread(WatchHub* hub, boost::asio::io_context* io);
  watch::Registry& registry() { return registry_; }
  boost::asio::io_context& io() { return *io_; }
  // A client joins (or leaves) the sweeps.
  void Attach(const std::shared_ptr<WatchClient>& c);
  void Detach(WatchClient* c);
  // Calls c->OnSweep at the first sweep (about every 100 ms) at or after
  // `due`. A sweep visits only the clients due, so that idle watchers cost
  // nothing between their progress messages.
  void Wake(const std::shared_ptr<WatchClient>& c, std::chrono::steady_clock::time_point due);

 private:
  friend class WatchHub;
  struct Due {
    std::chrono::steady_clock::time_point at;
    std::weak_ptr<WatchClient> client;
    bool operator>(const Due& o) const { return at > o.at; }
  };
  void ArmSweep();
  void Sweep();

  WatchHub* hub_;
  boost::asio::io_context* io_;
  watch::Registry registry_;
  boost::asio::steady_timer sweep_timer_;
  bool sweeping_ = false;
  boost::unordered_flat_map<WatchClient*, std::weak_ptr<WatchClient>> clients_;
  // Wake-ups asked for, earliest first (a client gone or woken since is skipped).
  std::priority_queue<Due, std::vector<Due>, std::greater<>> due_;
  // The node's state at the last sweep: a change visits every client.
  bool no_leader_ = false;
  bool member_ = true;
  // Watches on this thread (Acquire/Release): the hub posts batches only to
  // threads with some.
  std::atomic<uint64_t> watches_{0};
};

// What the watches count for /metrics (docs/metrics.md); any thread.
struct WatchMetrics {
  // The reasons a watch is canceled (docs/http-api.md, "Watch"), in label order.
  static constexpr const char* kCancelReasons[] = {
      "compacted",      "slow_consumer", "no_leader", "snapshot_installed",
      "member_removed", "shutdown",      "other"};
  static constexpr size_t kCancelReasonCount = std::size(kCancelReasons);
  static size_t CancelReasonIndex(std::string_view reason);

  std::atomic<int64_t> streams{0};     // Open watch streams (each may carry several watches).
  std::atomic<int64_t> long_polls{0};  // Long polls waiting.
  metrics::Counter events_sent;        // Events queued to streams or put in poll answers.
  std::array<metrics::Counter, kCancelReasonCount> canceled;
};

class WatchHub : public ChangeFeed {
 public:
  friend class WatchThread;
  explicit WatchHub(WatchOptions options);
  ~WatchHub() override;

  // Before the io threads run: the threads that serve HTTP sessions, and
  // how a sweep learns the node's state (any thread may call them).
  void SetThreads(const std::vector<boost::asio::io_context*>& ios);
  void SetNodeState(std::function<bool()> no_leader, std::function<bool()> member);
  // The calling session's thread (by its io_context).
  WatchThread* ThreadOf(boost::asio::io_context& io);

  // ChangeFeed (driver thread).
  void OnChanges(uint64_t prev_revision, uint64_t revision, std::vector<kv::Event> events) override;
  void OnRestored(uint64_t revision) override;

  // Any thread: takes `n` watcher slots on `t` before its watches are added
  // (false: --max-watchers is reached, or the node shuts down); Release
  // gives them back.
  bool Acquire(WatchThread* t, uint64_t n);
  void Release(WatchThread* t, uint64_t n);
  uint64_t watchers() const { return watchers_.load(); }
  WatchMetrics& metrics() { return metrics_; }
  const WatchMetrics& metrics() const { return metrics_; }
  // Any thread: no leader heard for options().no_leader_after (SetNodeState).
  bool NoLeader() const { return no_leader_ && no_leader_(); }

  // Any thread: every stream ends with `shutdown`, every long poll answers
  // 503; new watches are refused.
  void Shutdown();
  // Not on an io thread, while they run: closes every client still open (a
  // stream whose consumer does not read its last messages) and stops the
  // sweeps; returns once their closing handlers have run, so that no stream
  // outlives the hub.
  void CloseAll();

  const watch::History& history() const { return history_; }
  const WatchOptions& options() const { return options_; }

 private:
  const WatchOptions options_;
  watch::History history_;
  std::vector<std::unique_ptr<WatchThread>> threads_;
  std::atomic<uint64_t> watchers_{0};
  WatchMetrics metrics_;
  std::atomic<bool> shutdown_{false};
  std::function<bool()> no_leader_;
  std::function<bool()> member_;
};

}  // namespace raftkv::server
