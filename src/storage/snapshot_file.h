// Snapshot files (docs/wal-format.md, "Snapshots").
//
// Free functions without shared state: callable from any thread, but two
// writers of the same directory must not run at once (DiskStorage calls
// WriteSnapshotFile from the driver thread for CreateSnapshot and from the
// WAL writer thread for a leader's snapshot; the driver never has both
// outstanding, because a Ready is persisted before the next one is made).
#pragma once

#include <cstdint>
#include <string>

#include "raft/status.h"
#include "raft/types.h"
#include "storage/env.h"

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

}  // namespace raftkv::storage
