// The simulated node's driver: its life cycle (start, crash, removal) and
// the Ready contract of types.h, followed to the letter.
#include <cinttypes>

#include "cluster.h"

namespace raftkv::sim {

namespace {

// Readies handled for one node without the node going quiet.
constexpr int kMaxReadiesPerInput = 10000;
constexpr uint32_t kMillion = 1'000'000;

}  // namespace

// ---------------------------------------------------------------------------
// Life cycle.

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

// Wal mode: opens the node's DiskStorage on its MemEnv (a new one for a new
// node). Recovery cuts a torn tail; anything it refuses is a failure of the
// run, since the simulated disk only ever loses unsynced bytes.
bool Cluster::OpenDisk(SimNode* n) {
  if (!n->env) n->env = std::make_unique<storage::MemEnv>();
  storage::StorageOptions so;
  so.cluster_id = 1;
  so.node_id = n->id;
  so.segment_bytes = segment_bytes_;
  so.env = n->env.get();
  storage::RecoveryInfo info;
  raft::Status s = storage::DiskStorage::Open("/data", so, &n->disk, &info);
  if (!s.ok()) {
    Fail(StrFormat("storage: n%" PRIu64 " DiskStorage::Open after a crash: %s", n->id,
                   s.ToString().c_str()));
    return false;
  }
  trace_.Textf(n->id, "disk: %s", info.ToString().c_str());
  return true;
}

void Cluster::StartNode(SimNode* n) {
  if (wal_ && !OpenDisk(n)) {
    n->state = NodeState::kDown;
    n->wake_tick = UINT64_MAX;
    return;
  }
  n->incarnation++;
  raft::Config cfg;
  cfg.id = n->id;
  cfg.election_timeout_ticks = 10;
  cfg.heartbeat_interval_ticks = profile_.heartbeat_interval_ticks;
  cfg.pre_vote = profile_.pre_vote;
  cfg.check_quorum = profile_.check_quorum;
  cfg.max_entry_bytes = 256;
  cfg.max_msg_bytes = profile_.max_msg_bytes;
  cfg.max_inflight_msgs = profile_.max_inflight_msgs;
  cfg.max_uncommitted_bytes = profile_.max_uncommitted_bytes;
  cfg.max_snapshot_chunk_bytes = profile_.max_snapshot_chunk_bytes;
  cfg.max_pending_reads = profile_.max_pending_reads;
  cfg.max_committed_bytes_per_ready = profile_.max_committed_bytes_per_ready;
  // A fresh seed per incarnation: a restarted node does not replay the
  // timeouts of its previous life.
  cfg.seed = DeriveSeed(options_.seed, 1000 + n->id * 4096 + n->incarnation);
  n->node = std::make_unique<raft::Node>(cfg, &n->storage());

  // The state machine restarts from the latest snapshot; the core hands out
  // the committed entries after it again.
  const raft::Snapshot& snap = n->storage().LatestSnapshot();
  n->kv.Clear();
  n->conf = raft::ConfState{};
  n->applied = 0;
  if (!snap.IsEmpty()) {
    if (!n->kv.Restore(snap.data)) {
      Fail(StrFormat("driver: n%" PRIu64 " has a malformed snapshot", n->id));
    }
    n->conf = snap.meta.conf;
    n->applied = snap.meta.index;
  }
  n->reads.clear();
  n->role = raft::Role::kFollower;
  n->leader_term_seen = 0;
  n->state = NodeState::kUp;
  n->dirty = true;
  raft::HardState hs = n->storage().InitialHardState();
  trace_.Textf(n->id,
               "start (incarnation %" PRIu64 ") term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64
               " log=[%" PRIu64 ",%" PRIu64 "] snapshot=%" PRIu64,
               n->incarnation, hs.term, hs.vote, hs.commit, n->storage().FirstIndex(),
               n->storage().LastIndex(), snap.meta.index);
}

void Cluster::Crash(SimNode* n, const char* why) {
  stats_.crashes++;
  n->node.reset();
  n->state = NodeState::kDown;
  n->wake_tick = tick_ + profile_.restart_min_ticks +
                 rng_.Uniform(profile_.restart_max_ticks - profile_.restart_min_ticks + 1);
  n->kv.Clear();
  n->conf = raft::ConfState{};
  n->applied = 0;
  n->reads.clear();
  n->dirty = false;
  trace_.Textf(n->id, "CRASH: %s (restart at tick %" PRIu64 ")", why, n->wake_tick);
  if (wal_) {
    // Power loss: the env keeps what was synced and maybe a torn prefix of
    // what was not. Closing first stops the WAL writer thread; an armed env
    // is frozen, so nothing written after the failed fsync reaches it.
    n->disk.reset();
    n->env->Crash(&env_rng_);
    clients_.OnNodeDown(n->id);
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
  clients_.OnNodeDown(n->id);
}

void Cluster::MakeGone(SimNode* n) {
  trace_.Textf(n->id, "removed from the cluster: shut down for good");
  n->node.reset();
  n->disk.reset();
  n->state = NodeState::kGone;
  n->reads.clear();
  n->dirty = false;
  clients_.OnNodeDown(n->id);
}

// ---------------------------------------------------------------------------
// The Ready contract.

void Cluster::AfterInput(SimNode* n) {
  n->dirty = true;
  // The server applies a commit learned while its Ready is on disk through
  // TakeCommitted. This driver persists synchronously, so no input arrives
  // while a Ready is out: it calls TakeCommitted between Readies here, and
  // in HandleReadies while one is out (for what the Ready's byte limit left).
  if (!MaybeTakeCommitted(n)) return;
  // Election safety is checked on every input, not only when a Ready shows
  // the role change: a node could win and lose within one batch.
  if (n->node->role() == raft::Role::kLeader && n->node->term() != n->leader_term_seen) {
    n->leader_term_seen = n->node->term();
    stats_.leaders++;
    checker_.OnLeader(n->id, n->node->term());
  }
}

void Cluster::ProcessDirty() {
  for (auto& n : nodes_) {
    if (failed()) return;
    if (!n || !n->dirty || n->state != NodeState::kUp) continue;
    n->dirty = false;
    HandleReadies(n.get());
  }
}

void Cluster::HandleReadies(SimNode* n) {
  // A node keeps producing Readies only while it has work; a core that
  // never settles would hang the run, so call that a failure instead.
  int budget = kMaxReadiesPerInput;
  while (!failed() && n->state == NodeState::kUp && n->node->HasReady()) {
    if (--budget < 0) {
      Fail(StrFormat("liveness: n%" PRIu64 " produced %d Readies in a row without settling", n->id,
                     kMaxReadiesPerInput));
      return;
    }
    raft::Ready rd = n->node->GetReady();
    // As the server does (Replica::Flush): committed entries are applied
    // before this Ready is stored, unless it installs a snapshot. They are
    // durable on a quorum, so a crash in Persist below may lose the applied
    // state but never the entries.
    bool early = !rd.snapshot;
    if (early && !ApplyAndRead(n, &rd)) return;
    // The Ready is outstanding: more committed entries (past the Ready's
    // byte limit) may be taken now, and must then never come in a Ready.
    if (!MaybeTakeCommitted(n)) return;
    // 1 and 2: snapshot, entries, hard state (maybe torn by a crash).
    if (!Persist(n, &rd)) return;
    // 3: only now may messages that depend on that state leave the node.
    for (raft::Message& m : rd.messages) net_.Send(step_, std::move(m));
    // 4: apply, then serve the reads whose index is applied.
    if (!early && !ApplyAndRead(n, &rd)) return;
    if (rd.soft_state) {
      n->role = rd.soft_state->role;
      trace_.Textf(n->id, "role %s term=%" PRIu64 " leader=n%" PRIu64,
                   RoleShortName(rd.soft_state->role), n->node->term(), rd.soft_state->leader);
    }
    // 5.
    n->node->Advance(rd);
    // Our copy of the membership comes from applying the log; once
    // everything committed is applied it must match the core's.
    if (n->node->commit() == n->applied && n->conf != n->node->conf()) {
      Fail(StrFormat("membership: n%" PRIu64 " at applied index %" PRIu64
                     " has conf %s from its log but the core says %s",
                     n->id, n->applied, DescribeConf(n->conf).c_str(),
                     DescribeConf(n->node->conf()).c_str()));
      return;
    }
    MaybeCompact(n);
  }
}

bool Cluster::MaybeTakeCommitted(SimNode* n) {
  if (!take_rng_.Chance(1, 3)) return true;
  std::vector<raft::Entry> es = n->node->TakeCommitted();
  for (const raft::Entry& e : es) {
    Apply(n, e);
    if (failed()) return false;
  }
  stats_.taken += es.size();
  ReleaseReads(n);
  return true;
}

bool Cluster::ApplyAndRead(SimNode* n, raft::Ready* rd) {
  for (const raft::Entry& e : rd->committed_entries) {
    Apply(n, e);
    if (failed()) return false;
  }
  for (raft::ReadState& rs : rd->read_states) n->reads.push_back(std::move(rs));
  ReleaseReads(n);
  return true;
}

// Counts a stored chunk of a snapshot from the leader (stats only).
void Cluster::NoteChunkStored(SimNode* n, const raft::SnapshotChunk& c) {
  if (c.offset == 0) n->transfer_chunks = 0;
  n->transfer_chunks++;
  stats_.snapshot_chunks++;
}

// Step 1 for the state machine: `image` is the snapshot the Ready installed,
// as its storage now holds it (for a streamed one, built from its chunks).
bool Cluster::InstallSnapshot(SimNode* n, const raft::Snapshot& installed,
                              const raft::Snapshot& image) {
  if (image.meta != installed.meta || image.streamed) {
    Fail(StrFormat("driver: n%" PRIu64 " installed the snapshot at index %" PRIu64
                   " but its storage holds the one at %" PRIu64,
                   n->id, installed.meta.index, image.meta.index));
    return false;
  }
  if (!n->kv.Restore(image.data)) {
    Fail(StrFormat("driver: n%" PRIu64 " received a malformed snapshot at index %" PRIu64, n->id,
                   image.meta.index));
    return false;
  }
  n->conf = image.meta.conf;
  n->applied = image.meta.index;
  stats_.snapshots_installed++;
  if (installed.streamed && n->transfer_chunks >= 2) stats_.chunked_installs++;
  trace_.Textf(n->id, "install snapshot index=%" PRIu64 " term=%" PRIu64 " conf=%s%s",
               image.meta.index, image.meta.term, DescribeConf(image.meta.conf).c_str(),
               installed.streamed
                   ? StrFormat(" (streamed, %" PRIu64 " chunks)", n->transfer_chunks).c_str()
                   : "");
  checker_.OnRestore(n->id, image.meta, n->kv.Hash());
  return true;
}

bool Cluster::Persist(SimNode* n, raft::Ready* rd) {
  bool has_work = rd->snapshot.has_value() || !rd->snapshot_chunks.empty() ||
                  !rd->entries.empty() || rd->hard_state.has_value();
  // A crash in the middle of writing this Ready: what was not yet written
  // is lost, and nothing was sent (TigerBeetle's torn writes).
  bool torn = faults_on_ && has_work && profile_.torn_ppm > 0 &&
              disk_rng_.Chance(profile_.torn_ppm, kMillion);
  if (torn) stats_.torn_crashes++;
  if (wal_) return PersistWal(n, rd, torn);

  if (rd->snapshot || !rd->snapshot_chunks.empty()) {
    // A crash here keeps a prefix of the chunks and installs nothing.
    const std::vector<raft::SnapshotChunk>& chunks = rd->snapshot_chunks;
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
    if (rd->snapshot) {
      n->mem.ApplySnapshot(*rd->snapshot);
      if (!InstallSnapshot(n, *rd->snapshot, n->mem.LatestSnapshot())) return false;
    }
  }

  if (!rd->entries.empty()) {
    // Entries at or before the storage's snapshot are already compacted
    // there (Append skips them); check log matching on the rest.
    const std::vector<raft::Entry>& es = rd->entries;
    size_t skip = 0;
    while (skip < es.size() && es[skip].index < n->mem.FirstIndex()) skip++;
    if (skip < es.size()) {
      raft::Term prev = 0;
      raft::Index before = es[skip].index - 1;
      if (before > 0 && !n->mem.TermAt(before, &prev).ok()) {
        Fail(StrFormat("driver contract: n%" PRIu64 " must persist entries from %" PRIu64
                       " but its log is [%" PRIu64 ",%" PRIu64 "]",
                       n->id, es[skip].index, n->mem.FirstIndex(), n->mem.LastIndex()));
        return false;
      }
      size_t count = es.size() - skip;
      size_t written = count;
      if (torn) written = static_cast<size_t>(disk_rng_.Uniform(count + 1));
      checker_.OnPersist(n->id, prev, es.data() + skip, written, n->mem);
      if (failed()) return false;
      if (written < count) {
        std::vector<raft::Entry> prefix(es.begin() + skip, es.begin() + skip + written);
        n->mem.Append(prefix);
        Crash(n,
              StrFormat("torn write: %zu of %zu entries written, hard state lost", written, count)
                  .c_str());
        return false;
      }
      n->mem.Append(es);
    }
  }

  if (torn && (!rd->hard_state || disk_rng_.Chance(1, 2))) {
    Crash(n, rd->hard_state ? "torn write: entries written, hard state lost"
                            : "crash after writing the Ready, before sending");
    return false;
  }
  if (rd->hard_state) {
    checker_.OnHardState(n->id, n->mem.InitialHardState(), *rd->hard_state, n->mem.LastIndex());
    n->mem.SetHardState(*rd->hard_state);
  }
  if (torn) {
    Crash(n, "crash after writing the Ready, before sending");
    return false;
  }
  // A sync makes everything written so far durable, including a hard state
  // written earlier without one.
  if (rd->must_sync) n->synced_hs = n->mem.InitialHardState();
  if (rd->soft_state && rd->soft_state->role == raft::Role::kLeader) {
    checker_.OnBecameLeader(n->id, n->node->term(), n->mem);
  }
  return !failed();
}

// Wal mode: the same contract through DiskStorage::Save (submit, wait for
// the writer thread's fsync, apply), so the writer's timing changes nothing.
// A torn write is a power loss at one of the fsyncs the Save issues (usually
// the first: the one covering this Ready's records, written but not yet
// durable); MemEnv::Crash then keeps a random prefix of the unsynced bytes and
// the restart's DiskStorage::Open must cut the torn tail. If the Save needed
// fewer fsyncs, the crash comes right after it, before anything is sent. The
// chunks and the snapshot from the leader are saved as an Update of their
// own, first: the WAL writes the same files and records in the same order,
// with one more fsync between. Each chunk is fsynced (the snapshot's last
// one, its rename and directory too), so a power loss may come in the middle
// of a transfer; the restart must then drop the receive file and keep the
// previous snapshot and log.
bool Cluster::PersistWal(SimNode* n, raft::Ready* rd, bool torn) {
  auto crash_at_sync = [this]() -> uint64_t {
    return env_rng_.Chance(2, 3) ? 1 : 2 + env_rng_.Uniform(3);
  };
  if (rd->snapshot || !rd->snapshot_chunks.empty()) {
    bool snapshot_torn = torn && disk_rng_.Chance(1, 3);
    if (snapshot_torn) stats_.transfer_crashes++;
    storage::Update su;
    su.snapshot_chunks = rd->snapshot_chunks;
    if (rd->snapshot) su.snapshot = std::make_shared<raft::Snapshot>(*rd->snapshot);
    if (!SaveWal(n, su, snapshot_torn ? crash_at_sync() : 0,
                 rd->snapshot ? "the leader's snapshot" : "snapshot chunks")) {
      return false;
    }
    for (const raft::SnapshotChunk& c : rd->snapshot_chunks) NoteChunkStored(n, c);
    if (snapshot_torn) {
      Crash(n, "crash after writing the leader's snapshot (chunks)");
      return false;
    }
    if (rd->snapshot && !InstallSnapshot(n, *rd->snapshot, n->disk->LatestSnapshot())) {
      return false;
    }
  }

  storage::DiskStorage* d = n->disk.get();
  storage::Update u;
  u.hard_state = rd->hard_state;
  raft::Index last_index = d->LastIndex();
  if (!rd->entries.empty()) {
    const std::vector<raft::Entry>& es = rd->entries;
    size_t skip = 0;
    while (skip < es.size() && es[skip].index < d->FirstIndex()) skip++;
    if (skip < es.size()) {
      raft::Term prev = 0;
      raft::Index before = es[skip].index - 1;
      if (before > 0 && !d->TermAt(before, &prev).ok()) {
        Fail(StrFormat("driver contract: n%" PRIu64 " must persist entries from %" PRIu64
                       " but its log is [%" PRIu64 ",%" PRIu64 "]",
                       n->id, es[skip].index, d->FirstIndex(), d->LastIndex()));
        return false;
      }
      // A torn write may keep any prefix of them, so all are checked.
      checker_.OnPersist(n->id, prev, es.data() + skip, es.size() - skip, *d);
      if (failed()) return false;
      last_index = es.back().index;
    }
    u.entries = es;
  }
  if (rd->hard_state) {
    checker_.OnHardState(n->id, d->InitialHardState(), *rd->hard_state, last_index);
    if (failed()) return false;
  }
  if (!u.empty() && !SaveWal(n, u, torn ? crash_at_sync() : 0, "the Ready")) return false;
  if (torn) {
    Crash(n, "crash after writing the Ready, before sending");
    return false;
  }
  if (rd->soft_state && rd->soft_state->role == raft::Role::kLeader) {
    checker_.OnBecameLeader(n->id, n->node->term(), *d);
  }
  return !failed();
}

bool Cluster::SaveWal(SimNode* n, const storage::Update& u, uint64_t crash_at_sync,
                      const char* what) {
  if (crash_at_sync > 0) n->env->ArmCrashAtSync(crash_at_sync);
  raft::Status s = n->disk->Save(u);
  if (s.ok()) {
    n->env->ArmCrashAtSync(0);
    return true;
  }
  if (crash_at_sync > 0 && n->env->frozen()) {
    Crash(n, StrFormat("power lost at fsync %" PRIu64 " while writing %s (%zu entries%s%s%s)",
                       crash_at_sync, what, u.entries.size(), u.hard_state ? ", hard state" : "",
                       u.snapshot ? ", snapshot" : "",
                       u.snapshot_chunks.empty()
                           ? ""
                           : StrFormat(", %zu snapshot chunks", u.snapshot_chunks.size()).c_str())
                 .c_str());
    return false;
  }
  Fail(StrFormat("storage: n%" PRIu64 " DiskStorage::Save of %s: %s", n->id, what,
                 s.ToString().c_str()));
  return false;
}

void Cluster::Apply(SimNode* n, const raft::Entry& e) {
  if (e.index != n->applied + 1) {
    Fail(StrFormat("driver contract: n%" PRIu64 " is handed entry %" PRIu64
                   " to apply but has applied up to %" PRIu64,
                   n->id, e.index, n->applied));
    return;
  }
  uint64_t op_id = 0;
  if (e.type == raft::EntryType::kNormal) {
    // Empty data is a new leader's no-op.
    if (!e.data.empty()) {
      Command cmd;
      if (!DecodeCommand(e.data, &cmd)) {
        Fail(StrFormat("state machine: n%" PRIu64 " applies an undecodable entry at %" PRIu64,
                       n->id, e.index));
        return;
      }
      n->kv.Apply(cmd);
      op_id = cmd.op_id;
    }
  } else {
    raft::ConfChange cc;
    if (!raft::DecodeConfChange(e.data, &cc)) {
      Fail(StrFormat("state machine: n%" PRIu64 " applies a malformed conf change at %" PRIu64,
                     n->id, e.index));
      return;
    }
    bool changed = raft::ApplyConfChange(cc, &n->conf);
    static constexpr const char* kNames[] = {"add learner", "promote", "remove"};
    trace_.Textf(n->id, "apply conf change at %" PRIu64 ": %s n%" PRIu64 "%s -> %s", e.index,
                 kNames[static_cast<int>(cc.type)], cc.node, changed ? "" : " (no-op)",
                 DescribeConf(n->conf).c_str());
    if (changed && cc.type == raft::ConfChangeType::kRemoveNode) {
      // Committed: the removed node is no longer needed; stop it a bit
      // later so that it may still disturb the others for a while.
      SimNode* r = Find(cc.node);
      if (r != nullptr && r->gone_tick == 0 && r->state != NodeState::kGone) {
        r->gone_tick = tick_ + 1 + rng_.Uniform(30);
      }
    }
  }
  n->applied = e.index;
  checker_.OnApply(n->id, n->node->term(), e, n->kv.Hash());
  clients_.OnApplied(n->id, n->incarnation, e.index, op_id);
  if (op_id != 0 && op_id == final_op_id_ && n->id == final_node_ &&
      n->incarnation == final_incarnation_) {
    final_done_ = true;
    trace_.Textf(n->id, "liveness: final write committed at index %" PRIu64, e.index);
  }
}

void Cluster::ReleaseReads(SimNode* n) {
  size_t kept = 0;
  for (size_t i = 0; i < n->reads.size(); i++) {
    if (n->reads[i].index <= n->applied) {
      clients_.OnRead(n->id, n->incarnation, n->reads[i].context, n->kv);
    } else {
      if (kept != i) n->reads[kept] = std::move(n->reads[i]);
      kept++;
    }
  }
  n->reads.resize(kept);
}

void Cluster::MaybeCompact(SimNode* n) {
  raft::Storage& st = n->storage();
  const raft::Snapshot& snap = st.LatestSnapshot();
  if (n->applied < snap.meta.index + profile_.compact_every) return;
  if (n->applied > st.LastIndex()) return;
  raft::Status s = wal_ ? n->disk->CreateSnapshot(n->applied, n->conf, n->kv.Serialize())
                        : n->mem.CreateSnapshot(n->applied, n->conf, n->kv.Serialize());
  if (!s.ok()) {
    Fail(StrFormat("driver: n%" PRIu64 " CreateSnapshot(%" PRIu64 "): %s", n->id, n->applied,
                   s.ToString().c_str()));
    return;
  }
  // Writing a snapshot syncs the disk, hard state included: a restarted
  // node never finds a commit index below its snapshot.
  if (!wal_) n->synced_hs = n->mem.InitialHardState();
  // Keep a few entries behind the snapshot so slightly lagging followers
  // catch up from the log; the others get the snapshot.
  raft::Index margin = disk_rng_.Uniform(profile_.compact_margin + 1);
  if (n->applied <= margin) return;
  if (!wal_) {
    n->mem.Compact(n->applied - margin);
    return;
  }
  // Removes the WAL segments that hold only compacted entries.
  s = n->disk->Compact(n->applied - margin);
  if (!s.ok()) {
    Fail(StrFormat("storage: n%" PRIu64 " Compact(%" PRIu64 "): %s", n->id, n->applied - margin,
                   s.ToString().c_str()));
  }
}

}  // namespace raftkv::sim
