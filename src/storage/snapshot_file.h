// Snapshot files (docs/wal-format.md, "Snapshots").
//
// Free functions without shared state: callable from any thread, but two
// writers of the same directory must not run at once (each removes the
// other's older files). DiskStorage's snapshot thread writes a local
// snapshot through Wal::WriteSnapshot, and the WAL writer thread writes a
// leader's snapshot, whole or through a SnapshotReceiver; the Wal's
// snapshot_files_mu_ lets one of them at a time into the directory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "raft/status.h"
#include "raft/types.h"
#include "storage/env.h"
#include "storage/format.h"

namespace raftkv::storage {

// Writes `snap` as dir/snap-<index>.snap: to a .tmp file, fsynced, renamed,
// directory fsynced. Older snapshot files are removed only after that.
Status WriteSnapshotFile(Env* env, const std::string& dir, uint64_t cluster_id, uint64_t node_id,
                         const raft::Snapshot& snap, bool sync);

// Reads and checks the snapshot file at `path`. kCorruption (naming the file
// and byte offset) if it is short, fails a checksum, or belongs to another
// cluster or node; kIoError if it cannot be read or is over max_bytes.
Status ReadSnapshotFile(Env* env, const std::string& path, uint64_t cluster_id, uint64_t node_id,
                        uint64_t max_bytes, raft::Snapshot* out);

// Removes the snapshot files of `dir` older than `keep_index`.
Status RemoveSnapshotsBefore(Env* env, const std::string& dir, raft::Index keep_index);

// The file a snapshot from the leader is received into (a *.tmp file: never
// read, deleted by Open).
inline constexpr const char* kReceiveFileName = "snap-receive.tmp";

// Receives a snapshot from the leader chunk by chunk (raft::SnapshotChunk,
// from Ready::snapshot_chunks) straight into dir/snap-receive.tmp, which
// becomes its snapshot file snap-<index>.snap once the last chunk is in
// (docs/wal-format.md, "Snapshots received from the leader"). At most one
// transfer is in progress; nothing of it survives a restart but the file,
// which Open deletes.
//
// Not thread-safe: one thread at a time (the WAL writer thread).
class SnapshotReceiver {
 public:
  // `sync` false (--fsync=never) skips every fsync. Snapshot files over
  // max_file_bytes (what Open reads) are refused.
  SnapshotReceiver(Env* env, std::string dir, uint64_t cluster_id, uint64_t node_id,
                   uint64_t max_file_bytes, bool sync);
  ~SnapshotReceiver();

  // Writes `chunk` and fsyncs it before returning. A chunk at offset 0
  // starts a transfer: the receive file is created anew with the snapshot
  // header. Any other chunk must continue the current transfer: the same
  // meta, at the offset where the stored data ends; otherwise (and past
  // max_file_bytes) it is refused with kInvalidArgument and nothing is
  // written. The last chunk (done) also writes the trailer, fsyncs the file,
  // renames it to snap-<index>.snap, fsyncs the directory (only now is the
  // previous snapshot file replaced: older ones are removed), and reads the
  // file back as Open would into *completed. After an I/O error the
  // transfer is over: only a chunk at offset 0 is accepted.
  Status Write(const raft::SnapshotChunk& chunk, raft::Snapshot* completed);

 private:
  Status Start(const raft::SnapshotMeta& meta);
  Status Finish(raft::Snapshot* completed);

  Env* const env_;
  const std::string dir_;
  const uint64_t cluster_id_;
  const uint64_t node_id_;
  const uint64_t max_file_bytes_;
  const bool sync_;
  // The transfer in progress (file_ null if none).
  std::unique_ptr<WritableFile> file_;
  raft::SnapshotMeta meta_;
  uint64_t header_bytes_ = 0;
  uint64_t data_bytes_ = 0;
  StreamingChecksum checksum_;
};

}  // namespace raftkv::storage
