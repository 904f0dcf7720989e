// The deterministic cluster simulator.
//
// One run: N nodes talk over a simulated Network, driven by a single thread
// on a virtual clock. Each node is the server's own server::Driver (driver.h)
// with the real kv::Store as its state machine and, as its disk, a
// MemoryStorage or the real storage::DiskStorage over an in-memory Env; its
// persists complete after a simulated delay while the driver keeps stepping
// the node, as on the server. One tick of the clock ticks every
// running node once; each tick is divided into kStepsPerTick delivery steps.
// Everything random (the fault profile, delays, drops, crashes, client
// choices, each node's election timeouts) comes from the run's one 64-bit
// seed, so `raftkv-sim --seed N` replays a run exactly.
//
// A run: node 1 bootstraps and the others join through membership changes
// (warm-up, calm); then faults for the requested number of ticks (drops,
// duplicates, delays, partitions, one-way partitions, crashes with torn
// writes, pauses, membership changes, leadership transfers); then a calm
// tail in which everything heals, until a final write commits (the weak
// liveness check). Safety checkers run after every step, linearizability of
// the clients' history at the end.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "checker.h"
#include "client.h"
#include "faults.h"
#include "kv/store.h"
#include "leases.h"
#include "network.h"
#include "raft/node.h"
#include "raft/rng.h"
#include "raft/storage.h"
#include "server/driver.h"
#include "server/log_store.h"
#include "storage/disk_storage.h"
#include "storage/mem_env.h"
#include "trace.h"
#include "watches.h"

namespace raftkv::sim {

inline constexpr uint32_t kStepsPerTick = 4;
// Each driver's ReplicaConfig::max_pending_requests.
inline constexpr size_t kMaxPendingRequests = 64;
// Each node's raft::Config::max_entry_bytes.
inline constexpr uint64_t kMaxEntryBytes = 256;

// A simulated node's disk. kMemory: a raft::MemoryStorage, with lost unsynced
// commit indexes and torn Readies modelled by the driver. kWal: the real
// storage::DiskStorage (WAL format, snapshot files) over the node's own
// storage::MemEnv, which loses unsynced bytes and tears tails on a crash.
// kBySeed: kWal for seeds with seed % 4 < 2, kMemory for the others, so that
// a campaign runs both with 3 and with 5 nodes.
enum class DiskMode : uint8_t { kBySeed, kMemory, kWal };
DiskMode ResolveDiskMode(DiskMode mode, uint64_t seed);
// How node `id` names itself to the driver and in its member context.
server::MemberInfo SimMember(raft::NodeId id);
const char* DiskModeName(DiskMode mode);

struct SimOptions {
  uint64_t seed = 1;
  int nodes = 3;          // Initial cluster size.
  uint64_t ticks = 5000;  // Ticks with faults on (warm-up included).
  bool faults = true;     // Off: no faults at all (debugging).
  // Off: no membership changes after the warm-up (triage: rules them out).
  bool membership = true;
  // Off: no targeted schedule (faults.h) is drawn (comparisons).
  bool schedules = true;
  DiskMode disk = DiskMode::kBySeed;
  // The lease-reset mutation (raftkv-sim --mutate=lease-reset): each new
  // leader resets every lease deadline to a full TTL
  // (ReplicaConfig::unsafe_reset_lease_deadlines_on_election); the lease
  // checker must catch it.
  bool mutate_lease_reset = false;
  bool echo_trace = false;
  FILE* trace_out = stdout;
  size_t trace_tail = 200;  // Events kept for failure reports.
};

struct RunStats {
  uint64_t ticks = 0;
  uint64_t messages = 0;
  uint64_t dropped = 0;
  uint64_t crashes = 0;
  uint64_t torn_crashes = 0;
  uint64_t pauses = 0;
  uint64_t partitions = 0;
  uint64_t leaders = 0;  // Leader elections observed.
  uint64_t snapshots_installed = 0;
  uint64_t snapshot_chunks = 0;      // Chunks of snapshots from the leader stored.
  uint64_t chunked_installs = 0;     // Installed snapshots that were streamed in 2+ chunks.
  uint64_t transfer_crashes = 0;     // Crashes while storing snapshot chunks.
  uint64_t taken = 0;                // Entries applied while a Ready was on disk (TakeCommitted).
  uint64_t persists = 0;             // Readies persisted.
  uint64_t persists_overlapped = 0;  // ... while the node took other input.
  uint64_t state_comparisons = 0;    // Key-value maps of two nodes compared at one index.
  uint64_t conf_changes = 0;         // Membership changes proposed and accepted.
  uint64_t transfers = 0;
  // Targeted schedules (faults.h): how often each fired.
  uint64_t figure8_crashes = 0;     // Leaders with an entry on a minority crashed...
  uint64_t figure8_isolations = 0;  // ... or cut off.
  uint64_t divergences = 0;         // Leaders cut off for long with proposals flowing.
  uint64_t divergent_entries = 0;   // Uncommitted entries they held when the cut healed.
  uint64_t snapshots_refused = 0;   // Snapshot transfers refused as over the limit.
  uint64_t lone_crashes = 0;        // Crashes of node 1 while the lone voter.
  uint64_t lone_term_changes = 0;   // Readies of a lone voter with learners that change its term.
  uint64_t lone_term_crashes = 0;   // ... crashed while on disk.
  uint64_t lin_states = 0;
  ClientStats clients;
  WatchStats watches;
  LeaseClientStats lease_clients;
  LeaseStats leases;
};

struct RunResult {
  bool ok = true;
  std::string failure;      // Which checker fired, with context.
  std::string trace_tail;   // The last events, on failure.
  std::string profile;      // The fault profile drawn from the seed.
  uint64_t trace_hash = 0;  // Hash of every trace event: equal for equal seeds.
  uint64_t events = 0;
  bool lin_inconclusive = false;
  RunStats stats;
};

// Runs one simulation. Never throws; a core assertion aborts the process
// after printing the seed and the trace tail (see InstallCrashHandler).
RunResult RunSimulation(const SimOptions& options);

// Makes SIGABRT/SIGSEGV print the running simulation's seed and trace tail
// before the process dies (RAFT_ASSERT aborts).
void InstallCrashHandler();

class Cluster : public ClientTransport {
 public:
  explicit Cluster(const SimOptions& options);
  ~Cluster() override;

  RunResult Run();

  // ClientTransport.
  void UpNodes(std::vector<raft::NodeId>* out) const override;
  server::Driver* DriverOf(raft::NodeId node) override;
  const kv::Store* StoreOf(raft::NodeId node) const override;

  // For the crash handler.
  const SimOptions& options() const { return options_; }
  const Trace& trace() const { return trace_; }

 private:
  enum class NodeState : uint8_t { kUp, kPaused, kDown, kGone };
  class SimLogStore;
  class Observer;
  struct SimNode {
    SimNode();
    ~SimNode();
    raft::NodeId id = raft::kNoNode;
    // Durable: survives crashes. Memory mode: `mem` is the disk. Wal mode:
    // `env` is the disk, with a DiskStorage open on it (in the node's
    // SimLogStore) while the node runs.
    raft::MemoryStorage mem;
    std::unique_ptr<storage::MemEnv> env;
    // Memory mode: the last hard state written with a sync; a crash may lose
    // later ones.
    raft::HardState synced_hs;
    // This incarnation's raft::Config::max_snapshot_bytes (0: the default).
    uint64_t snapshot_limit_bytes = 0;
    // Chunks stored of the snapshot transfer in progress (stats only).
    uint64_t transfer_chunks = 0;
    NodeState state = NodeState::kDown;
    uint64_t incarnation = 0;
    uint64_t wake_tick = 0;  // Paused: resume then. Down: restart then.
    uint64_t gone_tick = 0;  // Removed from the cluster: stop then (0: not scheduled).
    // Volatile: lost on a crash. Destroyed in reverse order: the driver
    // first, then its store and state machine.
    std::unique_ptr<kv::Store> kv;
    std::unique_ptr<Watches::NodeFeed> feed;  // The driver's ChangeFeed (watches.h).
    std::unique_ptr<SimLogStore> store;
    std::unique_ptr<Observer> observer;
    std::unique_ptr<server::Driver> driver;
    // The driver thread's queue (DriverHooks::post), run by RunTasks.
    std::deque<std::function<void()>> tasks;
    // The Ready on disk, if any: it completes at step `persist_due`.
    const raft::Ready* persist_rd = nullptr;
    server::LogStore::Done persist_done;
    uint64_t persist_due = 0;
    bool persist_overlapped = false;  // Input arrived while it was out.
    bool completing = false;          // Inside CompletePersist.
    raft::Term leader_term_seen = 0;
    raft::Term leader_term = 0;  // The term of its latest Ready that made it leader.

    const raft::Storage& storage() const;
    const raft::Node& node() const { return driver->node(); }
  };

  // Phases of a tick.
  void FaultEvents();
  void ScheduledEvents();
  void MembershipEvents(bool warmup);
  void DeliverDue(uint64_t step);
  void LivenessDriver();
  void StartTail();
  // The targeted schedules (faults.h): called every tick, and every step.
  void TargetedEvents();
  void TargetedStepEvents();
  void Figure8Event();
  void DivergenceEvent();
  void LoneVoterEvent();
  bool InLonePhase() const;

  // Node lifecycle.
  SimNode* AddNode(raft::NodeId id);
  SimNode* Find(raft::NodeId id);
  const SimNode* Find(raft::NodeId id) const;
  void StartNode(SimNode* n);
  void Crash(SimNode* n, const char* why);
  void MakeGone(SimNode* n);
  int DownOrPaused() const;
  SimNode* PickVictim(const std::vector<SimNode*>& candidates);
  SimNode* Leader();

  // The driver's harness: its tasks, its input, its persists.
  server::DriverHooks HooksFor(SimNode* n);
  server::ReplicaConfig ConfigFor(SimNode* n) const;
  void RunTasks(SimNode* n);
  void ProcessDirty();
  // After any input to n's driver: checks that need no Ready.
  void AfterInput(SimNode* n);
  // SimLogStore::Persist: schedules the completion.
  void OnPersist(SimNode* n, const raft::Ready& rd, server::LogStore::Done done);
  void CompletePersists(uint64_t step);
  // Writes the Ready on disk (torn, if `may_tear` and the dice say so: then
  // the node crashes), and runs its completion if `deliver` (not if the
  // node dies right after).
  void CompletePersist(SimNode* n, bool deliver, bool may_tear);
  // A message leaves n: a term it has not made durable must not be in it.
  void CheckSend(SimNode* n, const raft::Message& m);
  uint64_t SnapshotLimitFor(const SimNode* n) const;
  bool WriteMemory(SimNode* n, const raft::Ready& rd, bool torn);
  // Writes the snapshot the driver took, if its delay is over at `step`.
  void CompleteSnapshot(SimNode* n, uint64_t step);
  bool WriteWal(SimNode* n, const raft::Ready& rd, bool torn);
  bool CheckEntries(SimNode* n, const raft::Ready& rd, const raft::Storage& st,
                    raft::Index* last_index);
  void NoteChunkStored(SimNode* n, const raft::SnapshotChunk& c);
  bool OpenDisk(SimNode* n, std::unique_ptr<storage::DiskStorage>* disk);
  // Observer: what the driver applied and installed.
  void OnApplied(SimNode* n, std::span<const raft::Entry> entries);
  void OnSnapshotInstalled(SimNode* n, const raft::SnapshotMeta& meta);
  void StopNode(SimNode* n);

  // The drivers' clock (DriverHooks::now): the current step's virtual time.
  server::TimePoint Now() const;
  void Fail(std::string what);
  bool failed() const { return !failure_.empty() || !checker_.ok(); }

  SimOptions options_;
  FaultProfile profile_;
  Trace trace_;
  raft::Rng rng_;       // Fault schedule and driver choices.
  raft::Rng disk_rng_;  // Torn writes.
  // Wal mode: what MemEnv::Crash keeps, and which fsync a torn write hits
  // (a stream of its own, so memory-mode runs replay as before).
  raft::Rng env_rng_;
  // How long each persist takes (a stream of its own too).
  raft::Rng persist_rng_;
  const bool wal_;
  const uint64_t segment_bytes_;  // Wal mode: small, so segments rotate often.
  Network net_;
  SafetyChecker checker_;
  Clients clients_;
  Watches watches_;
  LeaseChecker lease_checker_;
  LeaseClients lease_clients_;
  std::vector<std::unique_ptr<SimNode>> nodes_;  // Indexed by node id.
  raft::NodeId next_id_ = 1;

  uint64_t tick_ = 0;
  uint64_t step_ = 0;  // tick_ * kStepsPerTick + delivery round.
  bool faults_on_ = false;
  bool warm_ = false;  // All initial nodes are voters.
  uint64_t heal_tick_ = 0;
  // Final write of the liveness check: the attempt under way (0: none).
  uint64_t final_attempt_ = 0;
  raft::NodeId final_node_ = raft::kNoNode;
  uint64_t final_incarnation_ = 0;
  uint64_t final_deadline_ = 0;
  bool final_done_ = false;
  // The warm-up's progress: the most voters and the largest sum of the
  // joining nodes' last indexes seen, and when either last rose.
  size_t warm_voters_ = 0;
  raft::Index warm_joining_ = 0;
  uint64_t warm_progress_tick_ = 0;
  // The calm tail: the highest commit index seen, and when it last rose.
  raft::Index tail_commit_ = 0;
  raft::Index tail_logs_ = 0;  // The highest sum of the nodes' last indexes.
  uint64_t tail_progress_tick_ = 0;
  // Targeted schedules: their own random stream, and when each may fire next.
  raft::Rng sched_rng_;
  uint64_t figure8_next_tick_ = 0;
  uint64_t divergence_next_tick_ = 0;
  raft::NodeId divergent_leader_ = raft::kNoNode;  // Cut off by DivergenceEvent.
  uint64_t divergent_writes_ = 0;                  // Proposed to it while cut off.
  uint64_t lone_end_tick_ = 0;                     // The lone phase ends (network healed) then.
  uint64_t lone_next_crash_tick_ = 0;
  uint64_t lone_seen_incarnation_ = 0;  // Node 1's, whose term-change Ready was seen.
  // Driver timings drawn from the seed.
  uint64_t request_timeout_ticks_ = 0;

  std::string failure_;
  RunStats stats_;
};

}  // namespace raftkv::sim
