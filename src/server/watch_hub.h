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

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <memory>
#include <vector>

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

// A stream or a long poll, as its thread's sweep sees it.
class WatchClient {
 public:
  virtual ~WatchClient() = default;
  // About every 100 ms.
  virtual void OnSweep(std::chrono::steady_clock::time_point now) = 0;
  // The node is shutting down.
  virtual void OnShutdown() = 0;
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

 private:
  friend class WatchHub;
  void ArmSweep();
  void Sweep();

  WatchHub* hub_;
  boost::asio::io_context* io_;
  watch::Registry registry_;
  boost::asio::steady_timer sweep_timer_;
  bool sweeping_ = false;
  boost::unordered_flat_map<WatchClient*, std::weak_ptr<WatchClient>> clients_;
  // Watches on this thread (Acquire/Release): the hub posts batches only to
  // threads with some.
  std::atomic<uint64_t> watches_{0};
};

class WatchHub : public ChangeFeed {
 public:
  explicit WatchHub(WatchOptions options);
  ~WatchHub() override;

  // Before the io threads run: the threads that serve HTTP sessions.
  void SetThreads(const std::vector<boost::asio::io_context*>& ios);
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

  // Any thread: every stream ends with `shutdown`, every long poll answers
  // 503; new watches are refused.
  void Shutdown();

  const watch::History& history() const { return history_; }
  const WatchOptions& options() const { return options_; }

 private:
  const WatchOptions options_;
  watch::History history_;
  std::vector<std::unique_ptr<WatchThread>> threads_;
  std::atomic<uint64_t> watchers_{0};
  std::atomic<bool> shutdown_{false};
};

}  // namespace raftkv::server
