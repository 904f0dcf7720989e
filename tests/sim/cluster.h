// The deterministic cluster simulator.
//
// One run: N raft::Nodes (each with a MemoryStorage as its disk and a tiny
// key-value map as its state machine) talk over a simulated Network, driven
// by a single thread on a virtual clock. One tick of the clock ticks every
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
#include <memory>
#include <string>
#include <vector>

#include "checker.h"
#include "client.h"
#include "faults.h"
#include "kv.h"
#include "network.h"
#include "raft/node.h"
#include "raft/rng.h"
#include "raft/storage.h"
#include "storage/disk_storage.h"
#include "storage/mem_env.h"
#include "trace.h"

namespace raftkv::sim {

inline constexpr uint32_t kStepsPerTick = 4;

// A simulated node's disk. kMemory: a raft::MemoryStorage, with lost unsynced
// commit indexes and torn Readies modelled by the driver. kWal: the real
// storage::DiskStorage (WAL format, snapshot files) over the node's own
// storage::MemEnv, which loses unsynced bytes and tears tails on a crash.
// kBySeed: kWal for seeds with seed % 4 < 2, kMemory for the others, so that
// a campaign runs both with 3 and with 5 nodes.
enum class DiskMode : uint8_t { kBySeed, kMemory, kWal };
DiskMode ResolveDiskMode(DiskMode mode, uint64_t seed);
const char* DiskModeName(DiskMode mode);

struct SimOptions {
  uint64_t seed = 1;
  int nodes = 3;          // Initial cluster size.
  uint64_t ticks = 5000;  // Ticks with faults on (warm-up included).
  bool faults = true;     // Off: no faults at all (debugging).
  // Off: no membership changes after the warm-up (triage: rules them out).
  bool membership = true;
  DiskMode disk = DiskMode::kBySeed;
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
  uint64_t snapshot_chunks = 0;   // Chunks of snapshots from the leader stored.
  uint64_t chunked_installs = 0;  // Installed snapshots that were streamed in 2+ chunks.
  uint64_t transfer_crashes = 0;  // Crashes while storing snapshot chunks.
  uint64_t taken = 0;             // Entries applied through Node::TakeCommitted.
  uint64_t conf_changes = 0;      // Membership changes proposed and accepted.
  uint64_t transfers = 0;
  uint64_t lin_states = 0;
  ClientStats clients;
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
  raft::Status Propose(raft::NodeId node, std::string data, raft::Index* index, raft::Term* term,
                       raft::NodeId* leader) override;
  raft::Status ReadIndex(raft::NodeId node, std::string context, raft::NodeId* leader) override;
  uint64_t Incarnation(raft::NodeId node) const override;

  // For the crash handler.
  const SimOptions& options() const { return options_; }
  const Trace& trace() const { return trace_; }

 private:
  enum class NodeState : uint8_t { kUp, kPaused, kDown, kGone };
  struct SimNode {
    raft::NodeId id = raft::kNoNode;
    // Durable: survives crashes. Memory mode: `mem` is the disk. Wal mode:
    // `env` is the disk and `disk` the DiskStorage open on it while the
    // node runs (closed on a crash, reopened on restart).
    raft::MemoryStorage mem;
    std::unique_ptr<storage::MemEnv> env;
    std::unique_ptr<storage::DiskStorage> disk;
    // Memory mode: the last hard state written with a sync; a crash may lose
    // later ones.
    raft::HardState synced_hs;
    // Chunks stored of the snapshot transfer in progress (stats only).
    uint64_t transfer_chunks = 0;
    NodeState state = NodeState::kDown;
    uint64_t incarnation = 0;
    uint64_t wake_tick = 0;  // Paused: resume then. Down: restart then.
    uint64_t gone_tick = 0;  // Removed from the cluster: stop then (0: not scheduled).
    // Volatile: lost on a crash.
    std::unique_ptr<raft::Node> node;
    KvStore kv;
    raft::ConfState conf;  // Membership as of `applied`, for snapshots.
    raft::Index applied = 0;
    std::vector<raft::ReadState> reads;  // Released by Raft, waiting for apply.
    raft::Role role = raft::Role::kFollower;
    raft::Term leader_term_seen = 0;
    bool dirty = false;

    raft::Storage& storage() {
      if (disk) return *disk;
      return mem;
    }
  };

  // Phases of a tick.
  void FaultEvents();
  void ScheduledEvents();
  void MembershipEvents(bool warmup);
  void DeliverDue(uint64_t step);
  void LivenessDriver();
  void StartTail();

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

  // The Ready contract (types.h).
  void AfterInput(SimNode* n);
  void ProcessDirty();
  void HandleReadies(SimNode* n);
  bool Persist(SimNode* n, raft::Ready* rd);
  bool ApplyAndRead(SimNode* n, raft::Ready* rd);
  bool MaybeTakeCommitted(SimNode* n);
  void NoteChunkStored(SimNode* n, const raft::SnapshotChunk& c);
  bool InstallSnapshot(SimNode* n, const raft::Snapshot& installed, const raft::Snapshot& image);
  bool PersistWal(SimNode* n, raft::Ready* rd, bool torn);
  // Wal mode: DiskStorage::Save, with the MemEnv armed to lose power at one
  // of its fsyncs if `crash_at_sync` > 0. False if the node crashed.
  bool SaveWal(SimNode* n, const storage::Update& u, uint64_t crash_at_sync, const char* what);
  bool OpenDisk(SimNode* n);
  void Apply(SimNode* n, const raft::Entry& e);
  void ReleaseReads(SimNode* n);
  void MaybeCompact(SimNode* n);

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
  // When the driver calls Node::TakeCommitted (a stream of its own too).
  raft::Rng take_rng_;
  const bool wal_;
  const uint64_t segment_bytes_;  // Wal mode: small, so segments rotate often.
  Network net_;
  SafetyChecker checker_;
  Clients clients_;
  std::vector<std::unique_ptr<SimNode>> nodes_;  // Indexed by node id.
  raft::NodeId next_id_ = 1;

  uint64_t tick_ = 0;
  uint64_t step_ = 0;  // tick_ * kStepsPerTick + delivery round.
  bool faults_on_ = false;
  bool warm_ = false;  // All initial nodes are voters.
  uint64_t heal_tick_ = 0;
  // Final write of the liveness check.
  uint64_t final_op_id_ = 0;
  raft::NodeId final_node_ = raft::kNoNode;
  uint64_t final_incarnation_ = 0;
  uint64_t final_deadline_ = 0;
  bool final_done_ = false;

  std::string failure_;
  RunStats stats_;
};

}  // namespace raftkv::sim
