#include "storage/snapshot_file.h"

#include <vector>

namespace raftkv::storage {

Status WriteSnapshotFile(Env* env, const std::string& dir, uint64_t cluster_id, uint64_t node_id,
                         const raft::Snapshot& snap, bool sync) {
  SnapshotHeader h;
  h.cluster_id = cluster_id;
  h.node_id = node_id;
  h.meta = snap.meta;
  h.data_bytes = snap.data.size();
  std::string header;
  AppendSnapshotHeaderRecord(h, &header);
  std::string trailer;
  PutU64(&trailer, Checksum(snap.data));
  PutU64(&trailer, kSnapshotMagic);

  std::string name = SnapshotFileName(snap.meta.index);
  Status s;
  if (sync) {
    s = WriteFileAtomically(env, dir, name, {header, snap.data, trailer});
  } else {
    // --fsync=never: same steps without the fsyncs.
    std::string tmp = JoinPath(dir, name + ".tmp");
    std::unique_ptr<WritableFile> f;
    s = env->NewWritableFile(tmp, &f);
    if (s.ok()) s = f->Append({header, snap.data, trailer});
    f.reset();
    if (s.ok()) s = env->RenameFile(tmp, JoinPath(dir, name));
  }
  if (!s.ok()) return s;
  return RemoveSnapshotsBefore(env, dir, snap.meta.index);
}

Status ReadSnapshotFile(Env* env, const std::string& path, uint64_t cluster_id, uint64_t node_id,
                        uint64_t max_bytes, raft::Snapshot* out) {
  std::string file;
  Status s = env->ReadFile(path, max_bytes, &file);
  if (!s.ok()) return s;
  auto corrupt = [&](uint64_t offset, const std::string& why) {
    return Status(raft::Code::kCorruption,
                  "snapshot " + path + " at offset " + std::to_string(offset) + ": " + why);
  };
  ParsedRecord rec;
  std::string why;
  // A snapshot file is complete once renamed, so a torn header is corruption too.
  if (ParseRecord(file, 0, max_bytes, &rec, &why) != ParseResult::kOk) return corrupt(0, why);
  SnapshotHeader h;
  if (rec.type != RecordType::kSnapshotHeader || !DecodeSnapshotHeader(rec.payload, &h)) {
    return corrupt(0, "bad snapshot header");
  }
  if (h.cluster_id != cluster_id || h.node_id != node_id) {
    return corrupt(0, "belongs to cluster " + std::to_string(h.cluster_id) + " node " +
                          std::to_string(h.node_id) + ", not cluster " +
                          std::to_string(cluster_id) + " node " + std::to_string(node_id));
  }
  uint64_t data_at = rec.size;
  if (h.data_bytes == kStreamedDataBytes) {
    // Received from the leader: the data runs to the trailer that ends the
    // file (a file too short for one fails the check below). A cut file has
    // no trailer there; its magic and checksum fail.
    h.data_bytes = file.size() - data_at >= 16 ? file.size() - data_at - 16 : 0;
  }
  if (file.size() - data_at < 16 || file.size() - data_at - 16 < h.data_bytes) {
    return corrupt(file.size(), "truncated: " + std::to_string(h.data_bytes) +
                                    " data bytes and a 16-byte trailer expected from offset " +
                                    std::to_string(data_at));
  }
  uint64_t trailer_at = data_at + h.data_bytes;
  if (file.size() != trailer_at + 16) {
    return corrupt(trailer_at + 16, "unexpected bytes after the trailer");
  }
  std::string_view data(file.data() + data_at, h.data_bytes);
  if (LoadU64(file.data() + trailer_at + 8) != kSnapshotMagic) {
    return corrupt(trailer_at + 8, "bad trailer magic");
  }
  if (LoadU64(file.data() + trailer_at) != Checksum(data)) {
    return corrupt(data_at, "data checksum mismatch");
  }
  out->meta = h.meta;
  out->data.assign(data);
  return Status::Ok();
}

Status RemoveSnapshotsBefore(Env* env, const std::string& dir, raft::Index keep_index) {
  std::vector<std::string> names;
  Status s = env->ListDir(dir, &names);
  if (!s.ok()) return s;
  for (const std::string& n : names) {
    raft::Index index = 0;
    if (ParseSnapshotFileName(n, &index) && index < keep_index) {
      s = env->RemoveFile(JoinPath(dir, n));
      if (!s.ok()) return s;
    }
  }
  return Status::Ok();
}

SnapshotReceiver::SnapshotReceiver(Env* env, std::string dir, uint64_t cluster_id, uint64_t node_id,
                                   uint64_t max_file_bytes, bool sync)
    : env_(env),
      dir_(std::move(dir)),
      cluster_id_(cluster_id),
      node_id_(node_id),
      max_file_bytes_(max_file_bytes),
      sync_(sync) {}

SnapshotReceiver::~SnapshotReceiver() = default;

Status SnapshotReceiver::Write(const raft::SnapshotChunk& chunk, raft::Snapshot* completed) {
  if (chunk.offset != 0 &&
      (file_ == nullptr || chunk.meta != meta_ || chunk.offset != data_bytes_)) {
    return Status(raft::Code::kInvalidArgument,
                  "snapshot chunk at offset " + std::to_string(chunk.offset) + " of index " +
                      std::to_string(chunk.meta.index) + " refused: the transfer in " + dir_ + "/" +
                      kReceiveFileName +
                      (file_ == nullptr ? " is not in progress"
                                        : " is at index " + std::to_string(meta_.index) +
                                              " offset " + std::to_string(data_bytes_)));
  }
  if (chunk.offset == 0) {
    Status s = Start(chunk.meta);
    if (!s.ok()) return s;
  }
  // The trailer must fit too: the whole file is what Open will read.
  if (header_bytes_ + data_bytes_ + chunk.data.size() + 16 > max_file_bytes_) {
    file_.reset();
    return Status(raft::Code::kInvalidArgument, "snapshot at index " + std::to_string(meta_.index) +
                                                    " is too large for max_snapshot_bytes " +
                                                    std::to_string(max_file_bytes_));
  }
  Status s = file_->Append({chunk.data});
  if (s.ok() && sync_ && !chunk.done) s = file_->Sync();
  if (!s.ok()) {
    file_.reset();
    return s;
  }
  checksum_.Update(chunk.data);
  data_bytes_ += chunk.data.size();
  if (!chunk.done) return Status::Ok();
  s = Finish(completed);
  file_.reset();
  return s;
}

Status SnapshotReceiver::Start(const raft::SnapshotMeta& meta) {
  file_.reset();
  SnapshotHeader h;
  h.cluster_id = cluster_id_;
  h.node_id = node_id_;
  h.meta = meta;
  h.data_bytes = kStreamedDataBytes;
  std::string header;
  AppendSnapshotHeaderRecord(h, &header);
  std::unique_ptr<WritableFile> f;
  Status s = env_->NewWritableFile(JoinPath(dir_, kReceiveFileName), &f);
  if (s.ok()) s = f->Append({header});
  if (!s.ok()) return s;
  file_ = std::move(f);
  meta_ = meta;
  header_bytes_ = header.size();
  data_bytes_ = 0;
  checksum_.Reset();
  return Status::Ok();
}

Status SnapshotReceiver::Finish(raft::Snapshot* completed) {
  RAFT_ASSERT(completed != nullptr, "the last snapshot chunk needs somewhere to put the image");
  std::string trailer;
  PutU64(&trailer, checksum_.Digest());
  PutU64(&trailer, kSnapshotMagic);
  Status s = file_->Append({trailer});
  if (s.ok() && sync_) s = file_->Sync();
  file_.reset();
  const std::string path = JoinPath(dir_, SnapshotFileName(meta_.index));
  if (s.ok()) s = env_->RenameFile(JoinPath(dir_, kReceiveFileName), path);
  if (s.ok() && sync_) s = env_->SyncDir(dir_);
  if (s.ok()) s = RemoveSnapshotsBefore(env_, dir_, meta_.index);
  if (s.ok()) s = ReadSnapshotFile(env_, path, cluster_id_, node_id_, max_file_bytes_, completed);
  return s;
}

}  // namespace raftkv::storage
