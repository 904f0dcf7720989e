// A simulated node: the server's own driver (server::Driver) with the real
// kv::Store, run on the simulator's thread. This file is its harness: the
// node's life cycle (start, crash, removal), the driver's task queue, and its
// disk, whose writes (Readies and snapshots) complete after a simulated delay
// while the driver keeps stepping the node, as the server's WAL writer and
// snapshot threads do.
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <mutex>

#include "cluster.h"

namespace raftkv::sim {

namespace {

// Tasks run for one node without its queue going empty.
constexpr int kMaxTasksPerRun = 10000;
constexpr uint32_t kMillion = 1'000'000;
// The simulated length of a tick (the driver's clock and timeouts).
constexpr std::chrono::microseconds kTick{10000};

}  // namespace

server::MemberInfo SimMember(raft::NodeId id) {
  return server::MemberInfo{id, "n" + std::to_string(id), "sim:" + std::to_string(id), ""};
}

DiskMode ResolveDiskMode(DiskMode mode, uint64_t seed) {
  if (mode != DiskMode::kBySeed) return mode;
  return seed % 4 < 2 ? DiskMode::kWal : DiskMode::kMemory;
}

const char* DiskModeName(DiskMode mode) {
  switch (mode) {
    case DiskMode::kMemory:
      return "memory";
    case DiskMode::kWal:
      return "wal";
    default:
      return "by-seed";
  }
}

// The node's LogStore. Persist hands the Ready to the cluster, which writes
// it (and runs its completion) at a later simulated step; SaveSnapshot keeps
// the snapshot here until CompleteSnapshot writes it, a few steps later (a
// crash before then loses it with the store). Memory mode: the node's
// MemoryStorage is the disk. Wal mode: the server's own WalLogStore over a
// DiskStorage on the node's MemEnv, without threads (manual_threads): the
// cluster runs the WAL writer's and the snapshot's work on the simulator's
// thread when it completes a persist or a snapshot (WaitMail), and their
// completions, posted to a mailbox, run there too.
class Cluster::SimLogStore : public server::LogStore {
 public:
  // A snapshot the driver asked for, written at step `due`.
  struct PendingSnapshot {
    raft::Index index = 0;
    raft::ConfState conf;
    std::string data;
    raft::Index compact_to = 0;
    Done done;
    uint64_t due = 0;
  };

  SimLogStore(Cluster* cluster, SimNode* n, std::unique_ptr<storage::DiskStorage> disk)
      : cluster_(cluster),
        n_(n),
        // A stream of its own per incarnation: the other streams replay as before.
        rng_(DeriveSeed(cluster->options_.seed, 500000 + n->id * 4096 + n->incarnation)) {
    if (disk) {
      disk_ = disk.get();
      wal_ = std::make_unique<server::WalLogStore>(std::move(disk));
      wal_->Attach([this](std::function<void()> fn) { mail_.push_back(std::move(fn)); });
    }
  }

  // The driver's post is not for completions: the cluster runs them.
  void Attach(DriverPost) override {}
  const raft::Storage& storage() const override {
    if (wal_) return wal_->storage();
    return n_->mem;
  }
  void Persist(const raft::Ready& rd, Done done) override {
    cluster_->OnPersist(n_, rd, std::move(done));
  }
  // Written like a Ready that takes a while: a snapshot file is larger.
  void SaveSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                    raft::Index compact_to, Done done) override {
    RAFT_ASSERT(!snapshot_, "a second SaveSnapshot while one is outstanding");
    uint64_t delay = rng_.Chance(1, 10) ? 8 + rng_.Uniform(33) : 1 + rng_.Uniform(8);
    snapshot_ = PendingSnapshot{
        index, conf, std::move(data), compact_to, std::move(done), cluster_->step_ + delay};
  }
  raft::Status Close() override { return wal_ ? wal_->Close() : raft::Status::Ok(); }
  std::string Describe() const override { return wal_ ? wal_->Describe() : "simulated memory"; }
  bool durable() const override { return true; }

  server::WalLogStore* wal() { return wal_.get(); }
  // The snapshot to write at `step`, if one is due.
  std::optional<PendingSnapshot> TakeDueSnapshot(uint64_t step) {
    if (!snapshot_ || snapshot_->due > step) return std::nullopt;
    std::optional<PendingSnapshot> p = std::move(snapshot_);
    snapshot_.reset();
    return p;
  }
  raft::Rng* rng() { return &rng_; }

  // Wal mode: the next completion the WAL writer or snapshot work posted,
  // doing that work first if none is there yet.
  std::function<void()> WaitMail() {
    while (mail_.empty()) {
      RAFT_ASSERT(disk_->RunBackgroundWork(),
                  "waiting for a completion with no storage work queued");
    }
    std::function<void()> fn = std::move(mail_.front());
    mail_.pop_front();
    return fn;
  }

 private:
  Cluster* cluster_;
  SimNode* n_;
  raft::Rng rng_;  // The snapshot's delay and whether power fails during it.
  std::optional<PendingSnapshot> snapshot_;
  // The mailbox is declared before wal_, so that it outlives the storage,
  // whose destruction may still run queued work (and post completions).
  std::deque<std::function<void()>> mail_;
  storage::DiskStorage* disk_ = nullptr;  // Owned by wal_.
  std::unique_ptr<server::WalLogStore> wal_;
};

class Cluster::Observer : public server::DriverObserver {
 public:
  Observer(Cluster* cluster, SimNode* n) : cluster_(cluster), n_(n) {}
  void OnApplied(std::span<const raft::Entry> entries) override {
    cluster_->OnApplied(n_, entries);
  }
  void OnSnapshotInstalled(const raft::SnapshotMeta& meta) override {
    cluster_->OnSnapshotInstalled(n_, meta);
  }
  void OnSoftState(const raft::SoftState& ss) override {
    // The term it leads: the completeness check runs when this Ready is
    // durable, by which time the node may have moved to a later term.
    if (ss.role == raft::Role::kLeader) n_->leader_term = n_->node().term();
    cluster_->trace_.Textf(n_->id, "role %s term=%" PRIu64 " leader=n%" PRIu64,
                           RoleShortName(ss.role), n_->node().term(), ss.leader);
  }

 private:
  Cluster* cluster_;
  SimNode* n_;
};

Cluster::SimNode::SimNode() = default;
Cluster::SimNode::~SimNode() = default;

const raft::Storage& Cluster::SimNode::storage() const { return store->storage(); }

// ---------------------------------------------------------------------------
// Life cycle.

// Wal mode: opens the node's DiskStorage on its MemEnv (a new one for a new
// node). Recovery cuts a torn tail; anything it refuses is a failure of the
// run, since the simulated disk only ever loses unsynced bytes.
bool Cluster::OpenDisk(SimNode* n, std::unique_ptr<storage::DiskStorage>* disk) {
  if (!n->env) n->env = std::make_unique<storage::MemEnv>();
  storage::StorageOptions so;
  so.cluster_id = 1;
  so.node_id = n->id;
  so.segment_bytes = segment_bytes_;
  so.env = n->env.get();
  // The WAL writer's and the snapshot thread's work runs on the simulator's
  // thread, when SimLogStore::WaitMail asks for it: same order as with the
  // threads (each completion is waited for before the next submit), no
  // hand-off, and nothing left to the OS scheduler.
  so.manual_threads = true;
  storage::RecoveryInfo info;
  raft::Status s = storage::DiskStorage::Open("/data", so, disk, &info);
  if (!s.ok()) {
    Fail(StrFormat("storage: n%" PRIu64 " DiskStorage::Open after a crash: %s", n->id,
                   s.ToString().c_str()));
    return false;
  }
  trace_.Textf(n->id, "disk: %s", info.ToString().c_str());
  return true;
}

server::ReplicaConfig Cluster::ConfigFor(SimNode* n) const {
  server::ReplicaConfig rc;
  rc.self = SimMember(n->id);
  raft::Config& cfg = rc.raft;
  cfg.election_timeout_ticks = 10;
  cfg.heartbeat_interval_ticks = profile_.heartbeat_interval_ticks;
  cfg.pre_vote = profile_.pre_vote;
  cfg.check_quorum = profile_.check_quorum;
  cfg.max_entry_bytes = kMaxEntryBytes;
  cfg.max_msg_bytes = profile_.max_msg_bytes;
  cfg.max_inflight_msgs = profile_.max_inflight_msgs;
  cfg.max_uncommitted_bytes = profile_.max_uncommitted_bytes;
  cfg.max_snapshot_chunk_bytes = profile_.max_snapshot_chunk_bytes;
  cfg.max_pending_reads = profile_.max_pending_reads;
  cfg.max_committed_bytes_per_ready = profile_.max_committed_bytes_per_ready;
  if (n->snapshot_limit_bytes > 0) cfg.max_snapshot_bytes = n->snapshot_limit_bytes;
  // A fresh seed per incarnation: a restarted node does not replay the
  // timeouts of its previous life.
  cfg.seed = DeriveSeed(options_.seed, 1000 + n->id * 4096 + n->incarnation);
  rc.tick = std::chrono::duration_cast<std::chrono::milliseconds>(kTick);
  rc.request_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      kTick * static_cast<int64_t>(request_timeout_ticks_));
  rc.snapshot_entries = profile_.compact_every;
  // At least one snapshot interval of log stays behind each snapshot (as
  // etcd keeps catch-up entries): with 8-64 byte chunks and a snapshot every
  // few entries, a member installing one would otherwise find the entries
  // after it compacted away again, and never catch up.
  rc.snapshot_keep_entries = profile_.compact_every + profile_.compact_margin;
  rc.max_pending_requests = kMaxPendingRequests;
  rc.unsafe_reset_lease_deadlines_on_election = options_.mutate_lease_reset;
  return rc;
}

server::TimePoint Cluster::Now() const {
  return server::TimePoint(kTick * static_cast<int64_t>(step_) / kStepsPerTick);
}

server::DriverHooks Cluster::HooksFor(SimNode* n) {
  server::DriverHooks h;
  h.post = [n](std::function<void()> fn) { n->tasks.push_back(std::move(fn)); };
  h.send = [this, n](std::vector<raft::Message> msgs) {
    for (raft::Message& m : msgs) {
      CheckSend(n, m);
      net_.Send(step_, std::move(m));
    }
  };
  h.now = [this] { return Now(); };
  h.fatal = [n](const std::string& why) {
    RAFT_ASSERT(false, "n" + std::to_string(n->id) + " stops: " + why);
  };
  h.observer = n->observer.get();
  h.feed = n->feed.get();
  return h;
}

void Cluster::StartNode(SimNode* n) {
  std::unique_ptr<storage::DiskStorage> disk;
  if (wal_ && !OpenDisk(n, &disk)) {
    n->state = NodeState::kDown;
    n->wake_tick = UINT64_MAX;
    return;
  }
  n->incarnation++;
  n->snapshot_limit_bytes = SnapshotLimitFor(n);
  n->tasks.clear();
  n->kv = std::make_unique<kv::Store>();
  n->feed = watches_.Attach(n->id);
  n->store = std::make_unique<SimLogStore>(this, n, std::move(disk));
  n->observer = std::make_unique<Observer>(this, n);
  // The state machine restarts from the latest snapshot; the core hands out
  // the committed entries after it again.
  n->driver =
      std::make_unique<server::Driver>(ConfigFor(n), n->store.get(), n->kv.get(), HooksFor(n));
  n->driver->Start();
  lease_checker_.OnRestored(n->id, *n->kv, n->storage().LatestSnapshot().meta.term, Now());
  n->leader_term_seen = 0;
  n->state = NodeState::kUp;
  raft::HardState hs = n->storage().InitialHardState();
  trace_.Textf(n->id,
               "start (incarnation %" PRIu64 ") term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64
               " log=[%" PRIu64 ",%" PRIu64 "] snapshot=%" PRIu64,
               n->incarnation, hs.term, hs.vote, hs.commit, n->storage().FirstIndex(),
               n->storage().LastIndex(), n->storage().LatestSnapshot().meta.index);
}

// Everything volatile goes: the driver (and with it every request waiting on
// it, unanswered), its disk handle and its state machine.
void Cluster::StopNode(SimNode* n) {
  if (n->driver) stats_.snapshots_refused += n->node().GetStatus().snapshots_refused;
  if (n->feed && !failed()) watches_.Check(n->feed.get());
  n->driver.reset();
  n->observer.reset();
  n->store.reset();
  n->feed.reset();
  n->kv.reset();
  n->tasks.clear();
  n->persist_rd = nullptr;
  n->persist_done = nullptr;
  n->completing = false;
  clients_.OnNodeDown(n->id);
  lease_clients_.OnNodeDown(n->id);
  lease_checker_.OnStop(n->id);
}

void Cluster::Crash(SimNode* n, const char* why) {
  stats_.crashes++;
  // A Ready on disk may have been written and synced whole, and only its
  // completion lost with the process; not if the power failed at an fsync
  // of the snapshot being written (the env is frozen: nothing more is written).
  bool frozen = wal_ && n->env->frozen();
  if (n->persist_rd != nullptr && !frozen && disk_rng_.Chance(1, 3)) {
    trace_.Textf(n->id, "the Ready on disk is synced whole, its completion lost");
    CompletePersist(n, false, false);
  }
  StopNode(n);
  n->state = NodeState::kDown;
  n->wake_tick = tick_ + profile_.restart_min_ticks +
                 rng_.Uniform(profile_.restart_max_ticks - profile_.restart_min_ticks + 1);
  trace_.Textf(n->id, "CRASH: %s (restart at tick %" PRIu64 ")", why, n->wake_tick);
  if (wal_) {
    // Power loss: the env keeps what was synced and maybe a torn prefix of
    // what was not. The store is closed (its writer thread stopped); an
    // armed env is frozen, so nothing written after the failed fsync reached it.
    n->env->Crash(&env_rng_);
    return;
  }
  // A hard state written without a sync (must_sync false: only the commit
  // index moved) may not have reached the disk. Term and vote changes are
  // always synced, so only the commit index can go back.
  raft::HardState hs = n->mem.InitialHardState();
  if (hs != n->synced_hs && hs.term == n->synced_hs.term && hs.vote == n->synced_hs.vote &&
      disk_rng_.Chance(1, 2)) {
    trace_.Textf(n->id, "unsynced commit index %" PRIu64 " lost; back to %" PRIu64, hs.commit,
                 n->synced_hs.commit);
    n->mem.SetHardState(n->synced_hs);
  }
}

void Cluster::MakeGone(SimNode* n) {
  trace_.Textf(n->id, "removed from the cluster: shut down for good");
  StopNode(n);
  n->state = NodeState::kGone;
}

// ---------------------------------------------------------------------------
// The driver's thread and input.

void Cluster::AfterInput(SimNode* n) {
  // Election safety is checked on every input, not only when a Ready shows
  // the role change: a node could win and lose within one batch.
  if (n->state != NodeState::kUp) return;
  const raft::Node& node = n->node();
  if (node.role() == raft::Role::kLeader && node.term() != n->leader_term_seen) {
    n->leader_term_seen = node.term();
    stats_.leaders++;
    checker_.OnLeader(n->id, node.term());
  }
}

void Cluster::RunTasks(SimNode* n) {
  // A node keeps posting work only while it has some; a driver that never
  // settles would hang the run, so call that a failure instead.
  int budget = kMaxTasksPerRun;
  while (!failed() && n->state == NodeState::kUp && !n->tasks.empty()) {
    if (--budget < 0) {
      Fail(StrFormat("liveness: n%" PRIu64 " ran %d driver tasks in a row without settling", n->id,
                     kMaxTasksPerRun));
      return;
    }
    if (n->persist_rd != nullptr) n->persist_overlapped = true;
    std::function<void()> fn = std::move(n->tasks.front());
    n->tasks.pop_front();
    fn();
    AfterInput(n);
  }
}

void Cluster::ProcessDirty() {
  for (auto& n : nodes_) {
    if (failed()) return;
    if (n && n->state == NodeState::kUp) RunTasks(n.get());
  }
}

// ---------------------------------------------------------------------------
// Persistence, asynchronous as on the server.

void Cluster::OnPersist(SimNode* n, const raft::Ready& rd, server::LogStore::Done done) {
  RAFT_ASSERT(n->persist_rd == nullptr, "a second Persist while one is outstanding");
  stats_.persists++;
  n->persist_rd = &rd;
  n->persist_done = std::move(done);
  n->persist_overlapped = false;
  // A Ready with nothing to sync completes at once half the time, as
  // WalLogStore's commit-only Readies do (done runs inside Persist).
  // Never torn then: a crash inside the driver's own call is not
  // simulated (the next step may crash the node instead).
  if (!rd.must_sync && persist_rng_.Chance(1, 2)) return CompletePersist(n, true, false);
  // Mostly quick (a tick is 4 steps, and an fsync is usually well under a
  // tick), sometimes slow, rarely a stall of a few ticks: the driver keeps
  // taking messages, proposals, ticks and reads meanwhile.
  uint64_t r = persist_rng_.Uniform(100);
  uint64_t delay = r < 70   ? persist_rng_.Uniform(2)
                   : r < 95 ? 2 + persist_rng_.Uniform(4)
                            : 6 + persist_rng_.Uniform(15);
  n->persist_due = step_ + delay;
}

void Cluster::CompletePersists(uint64_t step) {
  for (auto& n : nodes_) {
    if (failed()) return;
    if (!n || n->state != NodeState::kUp || n->persist_rd == nullptr) continue;
    if (n->persist_due <= step) CompletePersist(n.get(), true, true);
  }
  for (auto& n : nodes_) {
    if (failed()) return;
    if (!n || n->state != NodeState::kUp) continue;
    CompleteSnapshot(n.get(), step);
  }
}

// Writes a snapshot the driver took (SaveSnapshot) and runs its completion.
// During faults, power sometimes fails: in wal mode at one of the snapshot's
// fsyncs (the file's, the directory's after its rename, or one per WAL
// segment deleted after it: a crash between the file and the compaction), or
// right after it, before the completion; in memory mode before it is stored.
void Cluster::CompleteSnapshot(SimNode* n, uint64_t step) {
  std::optional<SimLogStore::PendingSnapshot> due = n->store->TakeDueSnapshot(step);
  if (!due) return;
  SimLogStore::PendingSnapshot& p = *due;
  raft::Rng* rng = n->store->rng();
  bool torn = faults_on_ && profile_.torn_ppm > 0 &&
              rng->Chance(std::min<uint64_t>(10 * profile_.torn_ppm, kMillion), kMillion);
  if (torn) stats_.torn_crashes++;
  raft::Status st;
  if (n->storage().LatestSnapshot().meta.index >= p.index) {
    // A snapshot from the leader, installed while this one waited to be
    // written, superseded it (the LogStore contract: done(ok), the
    // leader's stays). The real store submits at once and drops the local
    // one when it completes; here the write itself comes later.
    trace_.Textf(n->id, "snapshot at %" PRIu64 " superseded by the leader's at %" PRIu64, p.index,
                 n->storage().LatestSnapshot().meta.index);
    p.done(raft::Status::Ok());
    return;
  }
  if (wal_) {
    uint64_t crash_at_sync = torn ? 1 + rng->Uniform(4) : 0;
    n->env->ArmCrashAtSync(crash_at_sync);
    bool called = false;
    n->store->wal()->SaveSnapshot(p.index, p.conf, std::move(p.data), p.compact_to,
                                  [&](raft::Status s) {
                                    st = std::move(s);
                                    called = true;
                                  });
    while (!called) n->store->WaitMail()();
    if (torn) {
      bool frozen = n->env->frozen();
      n->env->ArmCrashAtSync(0);
      if (st.ok() || frozen) {
        Crash(n, st.ok() ? "crash after writing a snapshot, before its completion"
                         : StrFormat("power lost at fsync %" PRIu64
                                     " while writing the snapshot at %" PRIu64,
                                     crash_at_sync, p.index)
                               .c_str());
        return;
      }
    }
  } else if (torn) {
    Crash(
        n,
        StrFormat("crash while writing the snapshot at %" PRIu64 ": not stored", p.index).c_str());
    return;
  } else {
    st = n->mem.CreateSnapshot(p.index, p.conf, std::move(p.data));
    // Writing a snapshot syncs the disk, hard state included: a restarted
    // node never finds a commit index below its snapshot.
    n->synced_hs = n->mem.InitialHardState();
    if (st.ok() && p.compact_to > 0) st = n->mem.Compact(std::min(p.compact_to, p.index));
  }
  // The simulated disk never fails a write (the driver would retry later).
  if (!st.ok()) {
    Fail(StrFormat("storage: n%" PRIu64 " snapshot at %" PRIu64 ": %s", n->id, p.index,
                   st.ToString().c_str()));
    return;
  }
  trace_.Textf(n->id, "snapshot at %" PRIu64 " written, log compacted through %" PRIu64, p.index,
               p.compact_to);
  p.done(raft::Status::Ok());
}

void Cluster::CompletePersist(SimNode* n, bool deliver, bool may_tear) {
  RAFT_ASSERT(!n->completing, "nested CompletePersist");
  const raft::Ready& rd = *n->persist_rd;
  server::LogStore::Done done = std::move(n->persist_done);
  n->persist_rd = nullptr;
  n->persist_done = nullptr;
  bool has_work = rd.snapshot.has_value() || !rd.snapshot_chunks.empty() || !rd.entries.empty() ||
                  rd.hard_state.has_value();
  // A crash in the middle of writing this Ready: what was not yet written
  // is lost, and nothing that waited for it was sent (TigerBeetle's torn
  // writes).
  bool torn = may_tear && faults_on_ && has_work && profile_.torn_ppm > 0 &&
              disk_rng_.Chance(profile_.torn_ppm, kMillion);
  if (torn) stats_.torn_crashes++;
  n->completing = true;
  bool ok = wal_ ? WriteWal(n, rd, torn) : WriteMemory(n, rd, torn);
  n->completing = false;
  if (!ok) return;  // Crashed (the driver and the Ready are gone) or failed.
  if (!deliver) return;
  if (rd.soft_state && rd.soft_state->role == raft::Role::kLeader) {
    checker_.OnBecameLeader(n->id, n->leader_term, n->storage());
  }
  if (n->persist_overlapped) stats_.persists_overlapped++;
  done(raft::Status::Ok());
  if (failed() || n->state != NodeState::kUp) return;
  // The driver's copy of the membership comes from applying the log; once
  // everything committed is applied it must match the core's.
  if (n->node().commit() == n->kv->revision() && n->driver->conf_applied() != n->node().conf()) {
    Fail(StrFormat("membership: n%" PRIu64 " at applied index %" PRIu64
                   " has conf %s from its log but the core says %s",
                   n->id, n->kv->revision(), DescribeConf(n->driver->conf_applied()).c_str(),
                   DescribeConf(n->node().conf()).c_str()));
  }
}

// Counts a stored chunk of a snapshot from the leader (stats only).
void Cluster::NoteChunkStored(SimNode* n, const raft::SnapshotChunk& c) {
  if (c.offset == 0) n->transfer_chunks = 0;
  n->transfer_chunks++;
  stats_.snapshot_chunks++;
}

// The entries of rd that `st` does not hold compacted, and the term before
// them. False (the run failed) if the log has a gap before them.
bool Cluster::CheckEntries(SimNode* n, const raft::Ready& rd, const raft::Storage& st,
                           raft::Index* last_index) {
  // Wal mode checks before the Ready's snapshot is stored: the log then
  // starts after it.
  const raft::SnapshotMeta* snap = rd.snapshot ? &rd.snapshot->meta : nullptr;
  if (snap != nullptr) *last_index = std::max(*last_index, snap->index);
  raft::Index first = std::max(st.FirstIndex(), snap != nullptr ? snap->index + 1 : 0);
  const std::vector<raft::Entry>& es = rd.entries;
  size_t skip = 0;
  while (skip < es.size() && es[skip].index < first) skip++;
  if (skip == es.size()) return true;
  raft::Term prev = 0;
  raft::Index before = es[skip].index - 1;
  if (snap != nullptr && before == snap->index) {
    prev = snap->term;
  } else if (before > 0 && !st.TermAt(before, &prev).ok()) {
    Fail(StrFormat("driver contract: n%" PRIu64 " must persist entries from %" PRIu64
                   " but its log is [%" PRIu64 ",%" PRIu64 "]",
                   n->id, es[skip].index, st.FirstIndex(), st.LastIndex()));
    return false;
  }
  // A torn write may keep any prefix of them, so all are checked.
  checker_.OnPersist(n->id, prev, es.data() + skip, es.size() - skip, st);
  *last_index = es.back().index;
  return !failed();
}

bool Cluster::WriteMemory(SimNode* n, const raft::Ready& rd, bool torn) {
  if (rd.snapshot || !rd.snapshot_chunks.empty()) {
    // A crash here keeps a prefix of the chunks and installs nothing.
    const std::vector<raft::SnapshotChunk>& chunks = rd.snapshot_chunks;
    bool snapshot_torn = torn && disk_rng_.Chance(1, 3);
    if (snapshot_torn) stats_.transfer_crashes++;
    size_t stored = snapshot_torn ? disk_rng_.Uniform(chunks.size() + 1) : chunks.size();
    for (size_t i = 0; i < stored; i++) {
      raft::Status s = n->mem.WriteSnapshotChunk(chunks[i]);
      if (!s.ok()) {
        Fail(StrFormat("driver: n%" PRIu64 " storing a snapshot chunk: %s", n->id,
                       s.ToString().c_str()));
        return false;
      }
      NoteChunkStored(n, chunks[i]);
    }
    if (snapshot_torn) {
      Crash(n, StrFormat("torn write: %zu of %zu snapshot chunks stored, snapshot not installed",
                         stored, chunks.size())
                   .c_str());
      return false;
    }
    if (rd.snapshot) n->mem.ApplySnapshot(*rd.snapshot);
  }

  raft::Index last_index = n->mem.LastIndex();
  if (!CheckEntries(n, rd, n->mem, &last_index)) return false;
  if (!rd.entries.empty()) {
    size_t count = rd.entries.size();
    size_t written = torn ? static_cast<size_t>(disk_rng_.Uniform(count + 1)) : count;
    if (written < count) {
      std::vector<raft::Entry> prefix(rd.entries.begin(), rd.entries.begin() + written);
      n->mem.Append(prefix);
      Crash(n, StrFormat("torn write: %zu of %zu entries written, hard state lost", written, count)
                   .c_str());
      return false;
    }
    n->mem.Append(rd.entries);
  }

  if (torn && (!rd.hard_state || disk_rng_.Chance(1, 2))) {
    Crash(n, rd.hard_state ? "torn write: entries written, hard state lost"
                           : "crash after writing the Ready, before its completion");
    return false;
  }
  if (rd.hard_state) {
    checker_.OnHardState(n->id, n->mem.InitialHardState(), *rd.hard_state, last_index);
    n->mem.SetHardState(*rd.hard_state);
  }
  if (torn) {
    Crash(n, "crash after writing the Ready, before its completion");
    return false;
  }
  // A sync makes everything written so far durable, including a hard state
  // written earlier without one.
  if (rd.must_sync) n->synced_hs = n->mem.InitialHardState();
  return !failed();
}

// Wal mode: the server's WalLogStore writes the Ready (its writer thread
// writes and fsyncs; its completion applies the update to DiskStorage's
// view). A torn write is a power loss at one of the fsyncs the Ready needs
// (usually the first: the one covering its records, written but not yet
// durable; chunks of a snapshot are each fsynced, so power may also fail in
// the middle of a transfer); MemEnv::Crash then keeps a random prefix of the
// unsynced bytes and the restart's DiskStorage::Open must cut the torn tail.
// If the Ready needed fewer fsyncs, the crash comes right after it, before
// its completion.
bool Cluster::WriteWal(SimNode* n, const raft::Ready& rd, bool torn) {
  const raft::Storage& d = n->storage();
  raft::Index last_index = d.LastIndex();
  if (!CheckEntries(n, rd, d, &last_index)) return false;
  if (rd.hard_state) {
    checker_.OnHardState(n->id, d.InitialHardState(), *rd.hard_state, last_index);
    if (failed()) return false;
  }
  uint64_t crash_at_sync = 0;
  if (torn) {
    crash_at_sync = env_rng_.Chance(2, 3) ? 1 : 2 + env_rng_.Uniform(3);
    n->env->ArmCrashAtSync(crash_at_sync);
  }
  bool called = false;
  raft::Status st;
  n->store->wal()->Persist(rd, [&](raft::Status s) {
    st = std::move(s);
    called = true;
  });
  while (!called) n->store->WaitMail()();
  if (st.ok()) {
    n->env->ArmCrashAtSync(0);
    for (const raft::SnapshotChunk& c : rd.snapshot_chunks) NoteChunkStored(n, c);
  } else if (!rd.snapshot_chunks.empty()) {
    stats_.transfer_crashes++;  // Power lost while its chunks were written.
  }
  if (st.ok() && !torn) return true;
  if (torn && (st.ok() || n->env->frozen())) {
    Crash(n, st.ok()
                 ? "crash after writing the Ready, before its completion"
                 : StrFormat("power lost at fsync %" PRIu64
                             " while writing the Ready (%zu entries%s%s%s)",
                             crash_at_sync, rd.entries.size(), rd.hard_state ? ", hard state" : "",
                             rd.snapshot ? ", snapshot" : "",
                             rd.snapshot_chunks.empty() ? "" : ", snapshot chunks")
                       .c_str());
    return false;
  }
  Fail(StrFormat("storage: n%" PRIu64 " WalLogStore refused the Ready: %s", n->id,
                 st.ToString().c_str()));
  return false;
}

// ---------------------------------------------------------------------------
// What the driver applied.

void Cluster::OnApplied(SimNode* n, std::span<const raft::Entry> entries) {
  // Entries applied while the node's Ready is on disk came through
  // TakeCommitted (a Ready's own are applied before Persist, or after its
  // completion, when persist_rd is already cleared).
  if (n->persist_rd != nullptr) stats_.taken += entries.size();
  uint64_t state_hash = n->kv->Hash();
  for (const raft::Entry& e : entries) {
    if (e.type == raft::EntryType::kConfChange) {
      raft::ConfChange cc;
      if (!raft::DecodeConfChange(e.data, &cc)) {
        Fail(StrFormat("state machine: n%" PRIu64 " applies a malformed conf change at %" PRIu64,
                       n->id, e.index));
        return;
      }
      static constexpr const char* kNames[] = {"add learner", "promote", "remove"};
      trace_.Textf(n->id, "apply conf change at %" PRIu64 ": %s n%" PRIu64, e.index,
                   kNames[static_cast<int>(cc.type)], cc.node);
      if (cc.type == raft::ConfChangeType::kRemoveNode) {
        // Committed: the removed node is no longer needed; stop it a bit
        // later so that it may still disturb the others for a while.
        SimNode* r = Find(cc.node);
        if (r != nullptr && r->gone_tick == 0 && r->state != NodeState::kGone) {
          r->gone_tick = tick_ + 1 + rng_.Uniform(30);
        }
      }
    }
    // The store's state is known after the batch only.
    bool last = &e == &entries.back();
    checker_.OnApply(n->id, n->node().term(), e,
                     last ? std::optional<uint64_t>(state_hash) : std::nullopt);
    if (failed()) return;
  }
  lease_checker_.OnApplied(n->id, *n->driver, entries, *n->kv, Now());
}

void Cluster::OnSnapshotInstalled(SimNode* n, const raft::SnapshotMeta& meta) {
  stats_.snapshots_installed++;
  if (n->transfer_chunks >= 2) stats_.chunked_installs++;
  trace_.Textf(n->id,
               "install snapshot index=%" PRIu64 " term=%" PRIu64 " conf=%s (%" PRIu64 " chunks)",
               meta.index, meta.term, DescribeConf(meta.conf).c_str(), n->transfer_chunks);
  checker_.OnRestore(n->id, meta, n->kv->Hash());
  lease_checker_.OnRestored(n->id, *n->kv, meta.term, Now());
}

}  // namespace raftkv::sim
