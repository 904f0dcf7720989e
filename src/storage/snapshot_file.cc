#include "storage/snapshot_file.h"

#include <vector>

#include "storage/format.h"

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

}  // namespace raftkv::storage
