#include "storage/wal.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <future>

#include "storage/snapshot_file.h"

namespace raftkv::storage {

const char* FsyncModeName(FsyncMode mode) {
  return mode == FsyncMode::kAlways ? "always" : "never (benchmarks only: not durable)";
}

bool ParseFsyncMode(std::string_view text, FsyncMode* mode) {
  if (text == "always") {
    *mode = FsyncMode::kAlways;
    return true;
  }
  if (text == "never") {
    *mode = FsyncMode::kNever;
    return true;
  }
  return false;
}

void WalBatch::AddSnapshotChunk(const raft::SnapshotChunk& chunk) {
  RAFT_ASSERT(records_.empty() && hard_state_record_.empty() && !snapshot_,
              "WalBatch::AddSnapshotChunk after the snapshot or records");
  chunks_.push_back(chunk);
}

void WalBatch::SetSnapshot(std::shared_ptr<const raft::Snapshot> snapshot,
                           std::shared_ptr<raft::Snapshot> received) {
  RAFT_ASSERT(records_.empty() && hard_state_record_.empty(),
              "WalBatch::SetSnapshot after records");
  if (snapshot->streamed) {
    bool completed = false;
    for (const raft::SnapshotChunk& c : chunks_) completed |= c.done && c.meta == snapshot->meta;
    RAFT_ASSERT(completed && received != nullptr,
                "streamed snapshot at " + std::to_string(snapshot->meta.index) +
                    " without its last chunk or a place for its image");
  }
  AppendSnapshotMarkerRecord(snapshot->meta.index, snapshot->meta.term, &records_);
  snapshot_ = std::move(snapshot);
  received_ = std::move(received);
}

void WalBatch::AddEntry(const raft::Entry& entry) {
  RAFT_ASSERT(hard_state_record_.empty(), "WalBatch::AddEntry after SetHardState");
  AppendEntryRecord(entry, &records_);
  max_index_ = std::max(max_index_, entry.index);
  entries_++;
  max_payload_bytes_ = std::max<uint64_t>(max_payload_bytes_, entry.data.size() + 17);
}

void WalBatch::SetHardState(const raft::HardState& hs) {
  hard_state_record_.clear();
  AppendHardStateRecord(hs, &hard_state_record_);
}

Wal::Wal(const WalOptions& options)
    : opts_(options),
      env_(options.env ? options.env : DefaultEnv()),
      receiver_(std::make_unique<SnapshotReceiver>(env_, opts_.dir, opts_.cluster_id, opts_.node_id,
                                                   opts_.max_snapshot_bytes,
                                                   opts_.fsync == FsyncMode::kAlways)) {}

Wal::~Wal() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (opts_.manual_writer) {
    while (WriteQueued()) {
    }
  }
}

static Status Corrupt(const std::string& file, uint64_t offset, const std::string& why) {
  return Status(raft::Code::kCorruption,
                "WAL segment " + file + " at offset " + std::to_string(offset) + ": " + why);
}

Status Wal::Open(const WalOptions& options, const ReplayFn& replay, WalRecovery* recovery,
                 std::unique_ptr<Wal>* out) {
  std::unique_ptr<Wal> wal(new Wal(options));
  Env* env = wal->env_;
  const std::string& dir = options.dir;
  *recovery = WalRecovery();

  std::vector<std::string> names;
  Status s = env->ListDir(dir, &names);
  if (!s.ok()) return s;
  std::vector<uint64_t> seqs;
  for (const std::string& n : names) {
    uint64_t seq = 0;
    if (ParseSegmentFileName(n, &seq)) seqs.push_back(seq);
  }
  std::sort(seqs.begin(), seqs.end());
  for (size_t i = 1; i < seqs.size(); i++) {
    if (seqs[i] != seqs[i - 1] + 1) {
      return Status(raft::Code::kCorruption,
                    "WAL segment " + JoinPath(dir, SegmentFileName(seqs[i - 1] + 1)) +
                        " is missing (found " + SegmentFileName(seqs[i - 1]) + " and " +
                        SegmentFileName(seqs[i]) + ")");
    }
  }
  if (!seqs.empty()) recovery->first_seq = seqs.front();

  // A segment holds at most segment_bytes plus one batch; allow for a larger
  // segment_bytes in an earlier run.
  const uint64_t max_read =
      std::max<uint64_t>(options.segment_bytes, 1ull << 30) + options.max_batch_bytes + (1 << 20);
  uint64_t next_seq = 1;
  bool prev_sealed = false;
  uint64_t prev_size = 0;
  // A torn record in the next-to-last segment: a crash while sealing it
  // during a rotation, acceptable only if the last segment turns out to be
  // that rotation's new segment (checked below).
  bool prev_torn = false;
  uint64_t prev_torn_offset = 0;
  std::string prev_torn_why;
  for (size_t i = 0; i < seqs.size(); i++) {
    const bool last = i + 1 == seqs.size();
    const std::string path = JoinPath(dir, SegmentFileName(seqs[i]));
    next_seq = seqs[i] + 1;
    std::string data;
    s = env->ReadFile(path, max_read, &data);
    if (!s.ok()) return s;

    ParsedRecord rec;
    std::string why;
    ParseResult r = data.empty() ? ParseResult::kTorn
                                 : ParseRecord(data, 0, options.max_record_bytes, &rec, &why);
    if (r == ParseResult::kTorn && last) {
      // Created but its header never made it: it holds nothing acknowledged.
      s = env->RemoveFile(path);
      if (s.ok()) s = env->SyncDir(dir);
      if (s.ok() && prev_torn)
        s = env->TruncateFile(JoinPath(dir, SegmentFileName(seqs[i - 1])), prev_torn_offset);
      if (!s.ok()) return s;
      recovery->removed_torn_segment = true;
      next_seq = seqs[i];
      break;
    }
    if (r != ParseResult::kOk) return Corrupt(path, 0, data.empty() ? "empty segment" : why);
    SegmentHeader h;
    if (rec.type != RecordType::kSegmentHeader || !DecodeSegmentHeader(rec.payload, &h)) {
      return Corrupt(path, 0, "bad segment header");
    }
    if (h.cluster_id != options.cluster_id || h.node_id != options.node_id) {
      return Corrupt(path, 0,
                     "belongs to cluster " + std::to_string(h.cluster_id) + " node " +
                         std::to_string(h.node_id) + ", not cluster " +
                         std::to_string(options.cluster_id) + " node " +
                         std::to_string(options.node_id));
    }
    if (h.seq != seqs[i]) {
      return Corrupt(path, 0, "segment header says seq " + std::to_string(h.seq));
    }
    Segment seg{seqs[i], 0};
    uint64_t other_records = 0;  // Records other than the hard state copy.
    uint64_t hard_states = 0;
    bool sealed = false;
    uint64_t offset = rec.size;
    while (offset < data.size()) {
      r = ParseRecord(data, offset, options.max_record_bytes, &rec, &why);
      if (r == ParseResult::kTorn) {
        if (!last) {
          // The seal is the only write to a segment after its successor
          // exists, so a crash while sealing leaves a torn record here and a
          // last segment holding only its header and hard state copy.
          if (i + 2 != seqs.size()) {
            return Corrupt(path, offset, why + " in a segment that is not the last");
          }
          prev_torn = true;
          prev_torn_offset = offset;
          prev_torn_why = why;
          break;
        }
        s = env->TruncateFile(path, offset);
        if (!s.ok()) return s;
        recovery->torn_tail_cut = true;
        recovery->torn_file = path;
        recovery->torn_offset = offset;
        recovery->torn_bytes = data.size() - offset;
        recovery->torn_reason = why;
        break;
      }
      if (r == ParseResult::kCorrupt) return Corrupt(path, offset, why);
      RecordLocation loc{path, offset};
      if (sealed) return Corrupt(path, offset, "record after the segment end record");
      if (rec.type == RecordType::kSegmentEnd) {
        uint64_t next = 0;
        if (!DecodeSegmentEnd(rec.payload, &next) || next != seqs[i] + 1) {
          return Corrupt(path, offset, "bad segment end record");
        }
        sealed = true;
        offset += rec.size;
        continue;
      }
      switch (rec.type) {
        case RecordType::kEntry: {
          raft::Index index = 0;
          if (!DecodeEntryIndex(rec.payload, &index)) {
            return Corrupt(path, offset, "bad entry record");
          }
          seg.max_index = std::max(seg.max_index, index);
          break;
        }
        case RecordType::kHardState: {
          hard_states++;
          raft::HardState hs;
          if (!DecodeHardState(rec.payload, &hs)) {
            return Corrupt(path, offset, "bad hard state record");
          }
          wal->last_hard_state_record_.assign(data, offset, rec.size);
          break;
        }
        case RecordType::kSnapshotMarker: {
          raft::Index index = 0;
          raft::Term term = 0;
          if (!DecodeSnapshotMarker(rec.payload, &index, &term)) {
            return Corrupt(path, offset, "bad snapshot marker record");
          }
          break;
        }
        default:
          return Corrupt(path, offset,
                         "unexpected record type " + std::to_string(static_cast<int>(rec.type)));
      }
      if (rec.type != RecordType::kHardState) other_records++;
      s = replay(rec.type, rec.payload, loc);
      if (!s.ok()) return s;
      recovery->records++;
      offset += rec.size;
    }
    if (i > 0 && !prev_sealed) {
      const std::string prev_path = JoinPath(dir, SegmentFileName(seqs[i - 1]));
      if (!last || other_records > 0 || hard_states > 1) {
        if (prev_torn) {
          return Corrupt(prev_path, prev_torn_offset,
                         prev_torn_why + " in a segment that is not the last");
        }
        return Corrupt(prev_path, prev_size,
                       "segment is not sealed but " + SegmentFileName(seqs[i]) + " follows it");
      }
      // A crash during rotation, after the new segment was created and before
      // the old one was sealed (or while its seal was written). The new one
      // holds only a copy of a hard state that the old one has: remove it,
      // cut a torn seal, and continue in the old one.
      s = env->RemoveFile(path);
      if (s.ok()) s = env->SyncDir(dir);
      if (!s.ok()) return s;
      recovery->removed_unsealed_rotation = true;
      if (prev_torn) {
        s = env->TruncateFile(prev_path, prev_torn_offset);
        if (!s.ok()) return s;
        recovery->torn_tail_cut = true;
        recovery->torn_file = prev_path;
        recovery->torn_offset = prev_torn_offset;
        recovery->torn_bytes = prev_size - prev_torn_offset;
        recovery->torn_reason = prev_torn_why;
      }
      break;
    }
    recovery->segments++;
    wal->segments_.push_back(seg);
    prev_sealed = sealed;
    prev_size = data.size();
  }
  if (prev_sealed) {
    return Status(raft::Code::kCorruption,
                  "WAL segment " + JoinPath(dir, SegmentFileName(wal->segments_.back().seq + 1)) +
                      " is missing (" + SegmentFileName(wal->segments_.back().seq) +
                      " is sealed and says it follows)");
  }

  if (wal->segments_.empty()) {
    s = wal->CreateSegment(next_seq, &wal->active_);
    if (!s.ok()) return s;
    wal->segments_.push_back(Segment{next_seq, 0});
  } else {
    s = env->ReopenWritableFile(JoinPath(dir, SegmentFileName(wal->segments_.back().seq)),
                                &wal->active_);
    if (!s.ok()) return s;
    // The header part of a reopened segment is already there; any batch may follow.
    wal->active_data_start_ = 0;
  }
  if (!options.manual_writer) {
    Wal* w = wal.get();
    wal->writer_ = std::thread([w] {
      pthread_setname_np(pthread_self(), "raftkv-wal");
      w->WriterLoop();
    });
  }
  *out = std::move(wal);
  return Status::Ok();
}

Status Wal::SyncFile(WritableFile* f) {
  if (opts_.fsync == FsyncMode::kNever) return Status::Ok();
  auto start = std::chrono::steady_clock::now();
  Status s = f->Sync();
  auto took = std::chrono::steady_clock::now() - start;
  stats_.fsync.Observe(took);
  uint64_t us =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(took).count());
  stats_.fsyncs.fetch_add(1, std::memory_order_relaxed);
  stats_.fsync_latency_us_total.fetch_add(us, std::memory_order_relaxed);
  uint64_t prev = stats_.fsync_latency_us_max.load(std::memory_order_relaxed);
  while (us > prev && !stats_.fsync_latency_us_max.compare_exchange_weak(prev, us)) {
  }
  return s;
}

Status Wal::SyncDirTimed() {
  if (opts_.fsync == FsyncMode::kNever) return Status::Ok();
  stats_.fsyncs.fetch_add(1, std::memory_order_relaxed);
  return env_->SyncDir(opts_.dir);
}

Status Wal::CreateSegment(uint64_t seq, std::unique_ptr<WritableFile>* out) {
  std::string header;
  AppendSegmentHeaderRecord(SegmentHeader{opts_.cluster_id, opts_.node_id, seq}, &header);
  std::unique_ptr<WritableFile> f;
  Status s = env_->NewWritableFile(JoinPath(opts_.dir, SegmentFileName(seq)), &f);
  if (s.ok()) s = f->Append({header, last_hard_state_record_});
  if (s.ok()) s = SyncFile(f.get());
  if (s.ok()) s = SyncDirTimed();
  if (!s.ok()) return s;
  active_data_start_ = f->Size();
  stats_.segments_created.fetch_add(1, std::memory_order_relaxed);
  *out = std::move(f);
  return Status::Ok();
}

Status Wal::Submit(WalBatch batch, WalCallback done) {
  if (batch.bytes() > opts_.max_batch_bytes) {
    return Status(raft::Code::kUnavailable, "WAL batch of " + std::to_string(batch.bytes()) +
                                                " bytes is over max_batch_bytes " +
                                                std::to_string(opts_.max_batch_bytes));
  }
  if (batch.max_payload_bytes() > opts_.max_record_bytes) {
    return Status(raft::Code::kUnavailable,
                  "WAL record of " + std::to_string(batch.max_payload_bytes()) +
                      " bytes is over max_record_bytes " + std::to_string(opts_.max_record_bytes));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!failed_.ok()) return failed_;
    if (stop_) return Status(raft::Code::kUnavailable, "WAL is closed");
    if (!queue_.empty() && queued_bytes_ + batch.bytes() > opts_.max_queued_bytes) {
      return Status(raft::Code::kUnavailable,
                    "WAL queue is full (" + std::to_string(queued_bytes_) + " bytes waiting)");
    }
    queued_bytes_ += batch.bytes();
    queue_.push_back(Pending{std::move(batch), std::move(done)});
  }
  cv_.notify_one();
  return Status::Ok();
}

Status Wal::SubmitAndWait(WalBatch batch) {
  std::promise<Status> p;
  std::future<Status> f = p.get_future();
  Status s = Submit(std::move(batch), [&p](const Status& st) { p.set_value(st); });
  if (!s.ok()) return s;
  return f.get();
}

void Wal::WriterLoop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained.
    }
    WriteQueued();
  }
}

bool Wal::RunQueued() {
  RAFT_ASSERT(opts_.manual_writer, "RunQueued on a Wal with a writer thread");
  return WriteQueued();
}

bool Wal::WriteQueued() {
  std::deque<Pending> group;
  Status failed;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (queue_.empty()) return false;
    group.swap(queue_);
    queued_bytes_ = 0;
    failed = failed_;
  }
  Status s = failed.ok() ? WriteGroup(&group) : failed;
  if (!s.ok()) Fail(s);
  if (s.ok()) {
    uint64_t entries = 0;
    for (const Pending& p : group) entries += p.batch.entry_count();
    stats_.batches.fetch_add(group.size(), std::memory_order_relaxed);
    stats_.entries.fetch_add(entries, std::memory_order_relaxed);
  }
  for (Pending& p : group) {
    if (p.done) p.done(s);
  }
  return true;
}

void Wal::Fail(const Status& s) {
  std::lock_guard<std::mutex> l(mu_);
  if (failed_.ok()) failed_ = s;
}

Status Wal::Flush(std::vector<std::string_view>* parts, uint64_t* part_bytes) {
  if (*part_bytes == 0) {
    parts->clear();
    return Status::Ok();
  }
  uint64_t good = active_->Size();
  Status s = active_->Append(*parts);
  if (s.ok()) {
    stats_.writes.fetch_add(1, std::memory_order_relaxed);
    stats_.bytes.fetch_add(*part_bytes, std::memory_order_relaxed);
    s = SyncFile(active_.get());
  }
  if (!s.ok()) {
    // Leave no half-written batch behind if the file system lets us; if it
    // does not, recovery cuts or rejects what is there, and we write no more.
    Status t = active_->Truncate(good);
    if (t.ok()) t = SyncFile(active_.get());
    if (!t.ok()) {
      return Status(s.code(), s.message() + " (and truncating back to offset " +
                                  std::to_string(good) + " failed: " + t.message() + ")");
    }
    return s;
  }
  parts->clear();
  *part_bytes = 0;
  return Status::Ok();
}

Status Wal::Rotate(std::vector<std::string_view>* parts, uint64_t* part_bytes) {
  // Order matters for recovery (docs/wal-format.md, "WAL segments"): the old
  // segment's batches are durable before the new segment copies the latest
  // hard state, and the new segment is durable before the old one is sealed.
  Status s = Flush(parts, part_bytes);
  if (!s.ok()) return s;
  uint64_t seq;
  {
    std::lock_guard<std::mutex> l(mu_);
    seq = segments_.back().seq + 1;
  }
  std::unique_ptr<WritableFile> next;
  s = CreateSegment(seq, &next);
  if (!s.ok()) return s;
  std::string seal;
  AppendSegmentEndRecord(seq, &seal);
  std::vector<std::string_view> seal_parts{seal};
  uint64_t seal_bytes = seal.size();
  s = Flush(&seal_parts, &seal_bytes);
  if (!s.ok()) {
    // Best effort: an unsealed segment followed by another reads as corrupt.
    next.reset();
    (void)env_->RemoveFile(JoinPath(opts_.dir, SegmentFileName(seq)));
    return s;
  }
  active_ = std::move(next);
  std::lock_guard<std::mutex> l(mu_);
  segments_.push_back(Segment{seq, 0});
  return Status::Ok();
}

Status Wal::WriteGroup(std::deque<Pending>* group) {
  std::vector<std::string_view> parts;
  uint64_t part_bytes = 0;
  for (Pending& p : *group) {
    WalBatch& b = p.batch;
    // Chunks go straight to the receive file; a Ready's messages (the
    // chunks' acknowledgements) leave only after this batch completes. A
    // local snapshot being written (WriteSnapshot) finishes first.
    std::unique_lock<std::mutex> files;
    if (!b.chunks_.empty() || b.snapshot_) files = std::unique_lock(snapshot_files_mu_);
    raft::Snapshot completed;
    for (const raft::SnapshotChunk& c : b.chunks_) {
      Status s = receiver_->Write(c, &completed);
      if (!s.ok()) return s;
    }
    if (b.snapshot_ && b.snapshot_->streamed) {
      // The last chunk made the snapshot file durable, before its marker.
      RAFT_ASSERT(completed.meta == b.snapshot_->meta, "streamed snapshot at " +
                                                           std::to_string(b.snapshot_->meta.index) +
                                                           " not completed by its batch's chunks");
      *b.received_ = std::move(completed);
    } else if (b.snapshot_) {
      // The snapshot file is durable before its marker record is written.
      Status s = WriteSnapshotFile(env_, opts_.dir, opts_.cluster_id, opts_.node_id, *b.snapshot_,
                                   opts_.fsync == FsyncMode::kAlways);
      if (!s.ok()) return s;
    }
    uint64_t size = active_->Size() + part_bytes;
    if (size > active_data_start_ && size + b.bytes() > opts_.segment_bytes) {
      Status s = Rotate(&parts, &part_bytes);
      if (!s.ok()) return s;
    }
    if (b.max_index_ > 0) {
      std::lock_guard<std::mutex> l(mu_);
      segments_.back().max_index = std::max(segments_.back().max_index, b.max_index_);
    }
    parts.push_back(b.records_);
    parts.push_back(b.hard_state_record_);
    part_bytes += b.bytes();
    if (!b.hard_state_record_.empty()) last_hard_state_record_ = b.hard_state_record_;
  }
  return Flush(&parts, &part_bytes);
}

Status Wal::WriteSnapshot(const raft::Snapshot& snap) {
  std::lock_guard<std::mutex> l(snapshot_files_mu_);
  return WriteSnapshotFile(env_, opts_.dir, opts_.cluster_id, opts_.node_id, snap,
                           opts_.fsync == FsyncMode::kAlways);
}

Status Wal::RemoveSegmentsThrough(raft::Index index) {
  for (;;) {
    uint64_t seq;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (segments_.size() < 2 || segments_.front().max_index > index) return Status::Ok();
      seq = segments_.front().seq;
    }
    // Only this function removes segments and the writer only touches the
    // back one, so the front segment cannot change under us. A removed file
    // leaves the list at once, so that a retry after a failed directory
    // fsync does not try to remove it again.
    Status s = env_->RemoveFile(JoinPath(opts_.dir, SegmentFileName(seq)));
    if (!s.ok()) return s;
    stats_.segments_removed.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> l(mu_);
      segments_.pop_front();
    }
    s = SyncDirTimed();
    if (!s.ok()) return s;
  }
}

WalStats Wal::stats() const {
  WalStats s;
  s.batches = stats_.batches.load();
  s.entries = stats_.entries.load();
  s.bytes = stats_.bytes.load();
  s.writes = stats_.writes.load();
  s.fsyncs = stats_.fsyncs.load();
  s.fsync_latency_us_total = stats_.fsync_latency_us_total.load();
  s.fsync_latency_us_max = stats_.fsync_latency_us_max.load();
  s.segments_created = stats_.segments_created.load();
  s.segments_removed = stats_.segments_removed.load();
  return s;
}

Status Wal::health() const {
  std::lock_guard<std::mutex> l(mu_);
  return failed_;
}

std::string Wal::Describe() const {
  return "WAL in " + opts_.dir + ", segment_bytes " + std::to_string(opts_.segment_bytes) +
         ", fsync " + FsyncModeName(opts_.fsync);
}

std::vector<uint64_t> Wal::SegmentSeqs() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<uint64_t> out;
  for (const Segment& s : segments_) out.push_back(s.seq);
  return out;
}

}  // namespace raftkv::storage
