#include "storage/disk_storage.h"

#include <pthread.h>

#include <algorithm>
#include <deque>
#include <future>

#include "storage/format.h"
#include "storage/snapshot_file.h"

namespace raftkv::storage {
namespace {

Status Corruption(const std::string& msg) { return Status(raft::Code::kCorruption, msg); }

std::string Where(const RecordLocation& loc) {
  return loc.file + " at offset " + std::to_string(loc.offset);
}

// Room left in a snapshot file for its header and trailer.
constexpr uint64_t kSnapshotOverheadBytes = 1 << 20;

uint64_t MaxSnapshotDataBytes(uint64_t max_snapshot_bytes) {
  return max_snapshot_bytes > kSnapshotOverheadBytes ? max_snapshot_bytes - kSnapshotOverheadBytes
                                                     : 0;
}

Status CheckSnapshotSize(uint64_t data_bytes, uint64_t max_snapshot_bytes) {
  if (data_bytes > MaxSnapshotDataBytes(max_snapshot_bytes)) {
    return Status(raft::Code::kInvalidArgument, "snapshot of " + std::to_string(data_bytes) +
                                                    " bytes is too large for max_snapshot_bytes " +
                                                    std::to_string(max_snapshot_bytes));
  }
  return Status::Ok();
}

// A chunk of a snapshot received from the leader must not take the image
// past the limit either. Checked here, on the driver thread, because the
// writer thread's SnapshotReceiver can only refuse it by failing the WAL.
Status CheckSnapshotChunk(const raft::SnapshotChunk& c, uint64_t max_snapshot_bytes) {
  const uint64_t max_data = MaxSnapshotDataBytes(max_snapshot_bytes);
  if (c.offset > max_data || c.data.size() > max_data - c.offset) {
    return Status(raft::Code::kInvalidArgument,
                  "snapshot chunk at offset " + std::to_string(c.offset) + " (" +
                      std::to_string(c.data.size()) + " bytes) of the snapshot at index " +
                      std::to_string(c.meta.index) + " would pass max_snapshot_bytes " +
                      std::to_string(max_snapshot_bytes) + " (at most " + std::to_string(max_data) +
                      " bytes of image); not stored");
  }
  return Status::Ok();
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Status ReadMetaFile(Env* env, const std::string& path, MetaRecord* m) {
  std::string data;
  Status s = env->ReadFile(path, 1 << 16, &data);
  if (!s.ok()) return s;
  ParsedRecord rec;
  std::string why;
  if (data.empty()) return Corruption(path + " at offset 0: empty file");
  if (ParseRecord(data, 0, 1 << 16, &rec, &why) != ParseResult::kOk) {
    return Corruption(path + " at offset 0: " + why);
  }
  if (rec.type != RecordType::kMeta || !DecodeMeta(rec.payload, m) || rec.size != data.size()) {
    return Corruption(path + " at offset 0: bad META record");
  }
  return Status::Ok();
}

// Reads or creates META; checks that the directory is this node's.
Status OpenMeta(Env* env, const std::string& dir, const StorageOptions& opts, bool* created) {
  *created = false;
  bool exists = false;
  Status s = env->FileExists(dir, &exists);
  if (!s.ok()) return s;
  std::vector<std::string> names;
  if (exists) {
    s = env->ListDir(dir, &names);
    if (!s.ok()) return s;
  }
  // *.tmp files are leftovers of a write interrupted by a crash (META or a
  // snapshot); they are removed once the directory is known to be ours.
  std::vector<std::string> live, tmps;
  for (const std::string& n : names) (EndsWith(n, ".tmp") ? tmps : live).push_back(n);
  auto remove_tmps = [&]() {
    for (const std::string& n : tmps) {
      Status r = env->RemoveFile(JoinPath(dir, n));
      if (!r.ok()) return r;
    }
    return Status::Ok();
  };
  if (live.empty()) {
    if (!opts.create_if_missing) {
      return Status(raft::Code::kIoError, "data directory " + dir + " is missing or empty");
    }
    if (!exists) {
      s = env->CreateDir(dir);
      if (!s.ok()) return s;
    }
    s = remove_tmps();
    if (!s.ok()) return s;
    std::string meta;
    AppendMetaRecord(MetaRecord{opts.cluster_id, opts.node_id}, &meta);
    s = WriteFileAtomically(env, dir, kMetaFileName, {meta});
    if (!s.ok()) return s;
    *created = true;
    return Status::Ok();
  }
  const std::string path = JoinPath(dir, kMetaFileName);
  if (std::find(live.begin(), live.end(), kMetaFileName) == live.end()) {
    return Corruption(path + " is missing: " + dir + " is not a raftkv data directory");
  }
  MetaRecord m;
  s = ReadMetaFile(env, path, &m);
  if (!s.ok()) return s;
  if (m.cluster_id != opts.cluster_id || m.node_id != opts.node_id) {
    return Corruption(dir + " belongs to cluster " + std::to_string(m.cluster_id) + " node " +
                      std::to_string(m.node_id) + ", not cluster " +
                      std::to_string(opts.cluster_id) + " node " + std::to_string(opts.node_id) +
                      " (" + path + ")");
  }
  return remove_tmps();
}

// The log as replayed from the WAL (docs/wal-format.md, "Replay").
struct Replayer {
  std::deque<raft::Entry> log;  // Contiguous indexes.
  RecordLocation first_loc;     // Where log.front() was read.
  bool base_known = false;      // The next entry must be at or below base+1.
  raft::Index base = 0;
  raft::HardState hs;
  raft::Index marker_index = 0;
  RecordLocation marker_loc;
  // Index of the latest snapshot file, read before the WAL.
  raft::Index snapshot_index = 0;

  Status Record(RecordType type, std::string_view payload, const RecordLocation& loc) {
    switch (type) {
      case RecordType::kEntry: {
        raft::Entry e;
        if (!DecodeEntry(payload, &e) || e.index == 0) {
          return Corruption("WAL segment " + Where(loc) + ": bad entry record");
        }
        if (!log.empty() && e.index > log.back().index + 1) {
          if (e.index > snapshot_index + 1) {
            return Corruption("WAL segment " + Where(loc) + ": entry index " +
                              std::to_string(e.index) + " after " +
                              std::to_string(log.back().index) + " leaves a gap");
          }
          // The snapshot file covers the gap: a crash tore off the snapshot
          // marker written after it (docs/wal-format.md, "Replay"), and the
          // log went on after the snapshot. The snapshot is the new base.
          log.clear();
          base_known = true;
          base = snapshot_index;
        }
        if (!log.empty()) {
          raft::Index last = log.back().index;
          if (e.index < log.front().index) {
            log.clear();
          } else if (e.index <= last) {
            // A new leader overwrote the entries from e.index on.
            log.resize(e.index - log.front().index);
          }
        }
        if (log.empty()) {
          if (base_known && e.index > base + 1) {
            if (e.index > snapshot_index + 1) {
              return Corruption("WAL segment " + Where(loc) + ": entry index " +
                                std::to_string(e.index) + " but the log starts after " +
                                std::to_string(base) + ": gap");
            }
            // The same torn-off marker as above, after an older marker with
            // no entry behind it yet (sim seed 500111, wal): the snapshot
            // file covers the gap.
            base = snapshot_index;
          }
          if (base_known && e.index <= base) return Status::Ok();  // Covered by a snapshot.
          first_loc = loc;
        }
        log.push_back(std::move(e));
        return Status::Ok();
      }
      case RecordType::kHardState:
        DecodeHardState(payload, &hs);  // Checked by the Wal.
        return Status::Ok();
      case RecordType::kSnapshotMarker: {
        raft::Term term = 0;
        DecodeSnapshotMarker(payload, &marker_index, &term);
        marker_loc = loc;
        log.clear();
        base_known = true;
        base = marker_index;
        return Status::Ok();
      }
      default:
        return Corruption("WAL segment " + Where(loc) + ": unexpected record");
    }
  }
};

}  // namespace

Status ReadMetaIds(const std::string& dir, Env* env, uint64_t* cluster_id, uint64_t* node_id,
                   bool* found) {
  if (env == nullptr) env = DefaultEnv();
  const std::string path = JoinPath(dir, kMetaFileName);
  Status s = env->FileExists(path, found);
  if (!s.ok() || !*found) return s;
  MetaRecord m;
  s = ReadMetaFile(env, path, &m);
  if (!s.ok()) return s;
  *cluster_id = m.cluster_id;
  *node_id = m.node_id;
  return Status::Ok();
}

std::string RecoveryInfo::ToString() const {
  if (created) return "created a new data directory";
  std::string s = "recovered " + std::to_string(wal.records) + " records from " +
                  std::to_string(wal.segments) + " WAL segments; snapshot at " +
                  std::to_string(snapshot_index) + "; log [" + std::to_string(first_index) + ", " +
                  std::to_string(last_index) + "]";
  if (wal.torn_tail_cut) {
    s += "; cut a torn tail of " + std::to_string(wal.torn_bytes) + " bytes at " + wal.torn_file +
         " offset " + std::to_string(wal.torn_offset) + " (" + wal.torn_reason + ")";
  }
  if (wal.removed_torn_segment) s += "; removed a last segment with a torn header";
  if (wal.removed_unsealed_rotation) s += "; removed the empty segment of an interrupted rotation";
  if (entries_dropped_by_snapshot > 0) {
    s += "; dropped " + std::to_string(entries_dropped_by_snapshot) +
         " entries replaced by the leader's snapshot";
  }
  return s;
}

Update Update::FromReady(const raft::Ready& rd) {
  Update u;
  u.hard_state = rd.hard_state;
  u.snapshot_chunks = rd.snapshot_chunks;
  if (rd.snapshot) u.snapshot = std::make_shared<raft::Snapshot>(*rd.snapshot);
  u.entries = rd.entries;
  return u;
}

DiskStorage::DiskStorage(std::string dir, const StorageOptions& options)
    : dir_(std::move(dir)), opts_(options), env_(options.env ? options.env : DefaultEnv()) {}

DiskStorage::~DiskStorage() {
  // The snapshot thread uses wal_: it stops (after its work) before wal_ goes.
  {
    std::lock_guard l(snapshot_mu_);
    snapshot_stop_ = true;
  }
  snapshot_cv_.notify_all();
  if (snapshot_thread_.joinable()) snapshot_thread_.join();
  if (opts_.manual_threads && snapshot_work_) snapshot_work_();
}

bool DiskStorage::RunBackgroundWork() {
  RAFT_ASSERT(opts_.manual_threads, "RunBackgroundWork without manual_threads");
  if (wal_->RunQueued()) return true;
  if (!snapshot_work_) return false;
  std::function<void()> work = std::move(snapshot_work_);
  snapshot_work_ = nullptr;
  work();
  return true;
}

void DiskStorage::SnapshotLoop() {
  for (;;) {
    std::function<void()> work;
    {
      std::unique_lock l(snapshot_mu_);
      snapshot_cv_.wait(l, [this] { return snapshot_stop_ || snapshot_work_ != nullptr; });
      if (snapshot_work_ == nullptr) return;  // Stopping, and nothing left to do.
      work = std::move(snapshot_work_);
      snapshot_work_ = nullptr;
    }
    work();
  }
}

Status DiskStorage::Open(const std::string& dir, const StorageOptions& options,
                         std::unique_ptr<DiskStorage>* out, RecoveryInfo* info) {
  std::unique_ptr<DiskStorage> ds(new DiskStorage(dir, options));
  Env* env = ds->env_;
  RecoveryInfo local;
  if (info == nullptr) info = &local;
  *info = RecoveryInfo();

  Status s = OpenMeta(env, dir, options, &info->created);
  if (!s.ok()) return s;

  // The latest snapshot file; older ones are superseded.
  std::vector<std::string> names;
  s = env->ListDir(dir, &names);
  if (!s.ok()) return s;
  raft::Index snap_index = 0;
  bool have_snap = false;
  for (const std::string& n : names) {
    raft::Index index = 0;
    if (ParseSnapshotFileName(n, &index) && (!have_snap || index > snap_index)) {
      snap_index = index;
      have_snap = true;
    }
  }
  raft::Snapshot snap;
  if (have_snap) {
    std::string path = JoinPath(dir, SnapshotFileName(snap_index));
    s = ReadSnapshotFile(env, path, options.cluster_id, options.node_id, options.max_snapshot_bytes,
                         &snap);
    if (!s.ok()) return s;
    if (snap.meta.index != snap_index) {
      return Corruption("snapshot " + path + " at offset 0: header says index " +
                        std::to_string(snap.meta.index));
    }
    s = RemoveSnapshotsBefore(env, dir, snap_index);
    if (!s.ok()) return s;
  }

  WalOptions wo;
  wo.dir = dir;
  wo.cluster_id = options.cluster_id;
  wo.node_id = options.node_id;
  wo.segment_bytes = options.segment_bytes;
  wo.max_record_bytes = options.max_record_bytes;
  wo.max_batch_bytes = options.max_batch_bytes;
  wo.max_queued_bytes = options.max_queued_bytes;
  wo.fsync = options.fsync;
  wo.env = env;
  wo.manual_writer = options.manual_threads;
  wo.max_snapshot_bytes = options.max_snapshot_bytes;
  Replayer rp;
  rp.snapshot_index = snap.meta.index;
  s = Wal::Open(
      wo,
      [&rp](RecordType t, std::string_view p, const RecordLocation& loc) {
        return rp.Record(t, p, loc);
      },
      &info->wal, &ds->wal_);
  if (!s.ok()) return s;

  const raft::Index I = snap.meta.index;
  if (rp.marker_index > I) {
    return Corruption("WAL segment " + Where(rp.marker_loc) + ": snapshot marker for index " +
                      std::to_string(rp.marker_index) + " but the latest snapshot file is at " +
                      std::to_string(I));
  }
  if (!rp.log.empty()) {
    raft::Index first = rp.log.front().index;
    raft::Index last = rp.log.back().index;
    // The log must start right after the snapshot, or at index 1 without
    // one. It may start at or below I+1 even in the first segment: the
    // snapshot file covers the start when a crash tore off its marker
    // before any entry was written (a new member catching up by snapshot).
    if (first > I + 1) {
      return Corruption("WAL segment " + Where(rp.first_loc) + ": the oldest entry is " +
                        std::to_string(first) + " but the snapshot ends at " + std::to_string(I) +
                        ": entries " + std::to_string(I + 1) + ".." + std::to_string(first - 1) +
                        " are missing");
    }
    if (I >= first && I <= last && rp.log[I - first].term != snap.meta.term) {
      info->entries_dropped_by_snapshot = last - I;
      rp.log.clear();
    }
    while (!rp.log.empty() && rp.log.front().index <= I) rp.log.pop_front();
  }
  raft::Index last = rp.log.empty() ? I : rp.log.back().index;
  if (rp.hs.commit > last) {
    return Corruption("WAL in " + dir + ": hard state commit " + std::to_string(rp.hs.commit) +
                      " is past the last entry " + std::to_string(last) + ": entries are missing");
  }

  if (have_snap) ds->mem_.ApplySnapshot(snap);
  ds->mem_.Append(std::vector<raft::Entry>(std::make_move_iterator(rp.log.begin()),
                                           std::make_move_iterator(rp.log.end())));
  ds->mem_.SetHardState(rp.hs);
  info->snapshot_index = I;
  info->first_index = ds->mem_.FirstIndex();
  info->last_index = ds->mem_.LastIndex();
  *out = std::move(ds);
  return Status::Ok();
}

Status DiskStorage::Submit(const Update& update, WalCallback done) {
  // Limits first: a refused update writes nothing and leaves the WAL healthy.
  if (update.snapshot) {
    Status s = CheckSnapshotSize(update.snapshot->data.size(), opts_.max_snapshot_bytes);
    if (!s.ok()) return s;
  }
  for (const raft::SnapshotChunk& c : update.snapshot_chunks) {
    Status s = CheckSnapshotChunk(c, opts_.max_snapshot_bytes);
    if (!s.ok()) return s;
  }
  WalBatch b;
  for (const raft::SnapshotChunk& c : update.snapshot_chunks) b.AddSnapshotChunk(c);
  std::shared_ptr<raft::Snapshot> received;
  if (update.snapshot && update.snapshot->streamed) received = std::make_shared<raft::Snapshot>();
  if (update.snapshot) b.SetSnapshot(update.snapshot, received);
  for (size_t i = 0; i < update.entries.size(); i++) {
    if (i > 0) {
      RAFT_ASSERT(update.entries[i].index == update.entries[i - 1].index + 1,
                  "non-contiguous entries in Update at " + std::to_string(update.entries[i].index));
    }
    b.AddEntry(update.entries[i]);
  }
  if (update.hard_state) b.SetHardState(*update.hard_state);
  Status s = wal_->Submit(std::move(b), std::move(done));
  if (s.ok() && received) received_.push_back(std::move(received));
  return s;
}

void DiskStorage::Apply(const Update& update) {
  if (update.snapshot && update.snapshot->streamed) {
    RAFT_ASSERT(!received_.empty() && received_.front()->meta == update.snapshot->meta,
                "Apply of a streamed snapshot at " + std::to_string(update.snapshot->meta.index) +
                    " out of submission order");
    mem_.ApplySnapshot(std::move(*received_.front()));
    received_.pop_front();
  } else if (update.snapshot) {
    mem_.ApplySnapshot(*update.snapshot);
  }
  mem_.Append(update.entries);
  if (update.hard_state) mem_.SetHardState(*update.hard_state);
}

uint64_t DiskStorage::max_snapshot_data_bytes() const {
  return MaxSnapshotDataBytes(opts_.max_snapshot_bytes);
}

Status DiskStorage::Save(const Update& update) {
  std::promise<Status> p;
  std::future<Status> f = p.get_future();
  Status s = Submit(update, [&p](const Status& st) { p.set_value(st); });
  if (!s.ok()) return s;
  s = f.get();
  if (!s.ok()) return s;
  Apply(update);
  return Status::Ok();
}

Status DiskStorage::SubmitSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                                   raft::Index compact_to, WalCallback done) {
  RAFT_ASSERT(!snapshot_job_.has_value(), "a second SubmitSnapshot while one is outstanding");
  RAFT_ASSERT(compact_to <= index, "compacting past the snapshot at " + std::to_string(index));
  Status s = wal_->health();
  if (!s.ok()) return s;
  if (index <= mem_.LatestSnapshot().meta.index) {
    return Status(raft::Code::kInvalidArgument,
                  "snapshot at " + std::to_string(index) + " is not newer");
  }
  s = CheckSnapshotSize(data.size(), opts_.max_snapshot_bytes);
  if (!s.ok()) return s;
  auto snap = std::make_shared<raft::Snapshot>();
  // The term is read now: the entry at an applied index stays in the log
  // until a snapshot covers it (Raft never truncates a committed entry).
  s = mem_.TermAt(index, &snap->meta.term);
  if (!s.ok()) return s;
  snap->meta.index = index;
  snap->meta.conf = conf;
  snap->data = std::move(data);
  snapshot_job_ = SnapshotJob{snap, compact_to};
  // The file is durable before any segment goes (the crash-safety order).
  Wal* wal = wal_.get();
  std::function<void()> work = [wal, snap, compact_to, done = std::move(done)] {
    Status st = wal->WriteSnapshot(*snap);
    if (st.ok() && compact_to > 0) st = wal->RemoveSegmentsThrough(compact_to);
    done(st);
  };
  {
    std::lock_guard l(snapshot_mu_);
    snapshot_work_ = std::move(work);
    if (!snapshot_thread_.joinable() && !opts_.manual_threads) {
      snapshot_thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "raftkv-snap");
        SnapshotLoop();
      });
    }
  }
  snapshot_cv_.notify_one();
  return Status::Ok();
}

bool DiskStorage::ApplySnapshotWritten() {
  RAFT_ASSERT(snapshot_job_.has_value(), "ApplySnapshotWritten without SubmitSnapshot");
  SnapshotJob job = std::move(*snapshot_job_);
  snapshot_job_.reset();
  raft::Snapshot& snap = *job.snap;
  // A snapshot from the leader at a later index replaced the log meanwhile.
  if (mem_.LatestSnapshot().meta.index >= snap.meta.index) return false;
  raft::Term term = 0;
  RAFT_ASSERT(mem_.TermAt(snap.meta.index, &term).ok() && term == snap.meta.term,
              "the log changed under the snapshot at " + std::to_string(snap.meta.index) +
                  " while it was written");
  Status s = mem_.CreateSnapshot(snap.meta.index, snap.meta.conf, std::move(snap.data));
  RAFT_ASSERT(s.ok(), "recording the written snapshot: " + s.ToString());
  if (job.compact_to > 0) {
    s = mem_.Compact(job.compact_to);
    RAFT_ASSERT(s.ok(), "compacting after the written snapshot: " + s.ToString());
  }
  return true;
}

void DiskStorage::AbandonSnapshot() {
  RAFT_ASSERT(snapshot_job_.has_value(), "AbandonSnapshot without SubmitSnapshot");
  snapshot_job_.reset();
}

Status DiskStorage::CreateSnapshot(raft::Index index, const raft::ConfState& conf,
                                   std::string data) {
  std::promise<Status> p;
  std::future<Status> f = p.get_future();
  Status s =
      SubmitSnapshot(index, conf, std::move(data), 0, [&p](const Status& st) { p.set_value(st); });
  if (!s.ok()) return s;
  s = f.get();
  if (!s.ok()) {
    AbandonSnapshot();
    return s;
  }
  ApplySnapshotWritten();
  return Status::Ok();
}

Status DiskStorage::Compact(raft::Index index) {
  RAFT_ASSERT(!snapshot_job_.has_value(), "Compact while a snapshot is being written");
  Status s = mem_.Compact(index);
  if (!s.ok()) return s;
  return wal_->RemoveSegmentsThrough(index);
}

}  // namespace raftkv::storage
