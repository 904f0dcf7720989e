// LogStore: where the Raft driver makes each Ready durable.
//
// This is the seam between the server's Raft driver (replica.h) and the
// storage engine. The driver calls GetReady, hands the Ready to Persist and
// keeps stepping the node (Step, Tick, Propose, ReadIndex are allowed between
// GetReady and Advance; their effects go into the next Ready, which is how
// group commit happens). When the persist completes, on the driver thread,
// the driver sends the Ready's remaining messages, applies its committed
// entries, serves its read states and calls Advance.
//
// MemoryLogStore keeps everything in a raft::MemoryStorage and completes at
// once: nothing survives a restart. The durable WAL (src/storage, issue 3)
// plugs in as another LogStore whose Persist writes and fsyncs on its own
// thread and posts `done` back through the DriverPost given to Attach().
#pragma once

#include <functional>
#include <string>

#include "raft/status.h"
#include "raft/storage.h"
#include "raft/types.h"

namespace raftkv::server {

class LogStore {
 public:
  using Done = std::function<void(raft::Status)>;
  // Runs a closure on the driver thread (posts it to the driver's io_context).
  using DriverPost = std::function<void(std::function<void()>)>;

  virtual ~LogStore() = default;

  // Called once by the driver before any other call, from the thread that
  // constructs it.
  virtual void Attach(DriverPost post) { (void)post; }

  // Driver thread. The stable state the raft::Node reads: what was persisted
  // before this process started, plus every Persist whose `done` has run
  // and every SaveSnapshot. Must outlive the Node.
  virtual const raft::Storage& storage() const = 0;

  // Driver thread. Starts making rd.snapshot, rd.entries and rd.hard_state
  // durable, in that order, synced before completion when rd.must_sync.
  // `rd` stays alive and its snapshot, entries and hard state unchanged until
  // `done` runs (the driver only moves out rd.messages and rd.read_states).
  // `done` runs exactly once, on the driver thread, after storage() reflects
  // the Ready; it may run before Persist returns. A non-OK status means the
  // node cannot go on (disk full, I/O error): the driver stops the process.
  // At most one Persist is outstanding at a time.
  virtual void Persist(const raft::Ready& rd, Done done) = 0;

  // Driver thread, no Persist outstanding. Records a snapshot of the state
  // machine taken at applied index `index` (membership `conf` as of that
  // index) and drops the log up to and including `compact_to` (<= index), so
  // that a follower missing those entries is sent the snapshot.
  virtual raft::Status SaveSnapshot(raft::Index index, const raft::ConfState& conf,
                                    std::string data, raft::Index compact_to) = 0;

  // Driver thread, no Persist outstanding: flushes whatever is buffered.
  virtual raft::Status Close() = 0;

  // For /status and logs, e.g. "memory (not durable)".
  virtual std::string Describe() const = 0;

  // Whether what Persist stored survives a process crash. A node restarted
  // over a store that is not durable has lost its log and its vote: it must
  // rejoin the cluster as if new (see Server).
  virtual bool durable() const = 0;
};

// In memory only: durable storage arrives with the WAL (issue 3).
class MemoryLogStore : public LogStore {
 public:
  const raft::Storage& storage() const override { return storage_; }
  void Persist(const raft::Ready& rd, Done done) override;
  raft::Status SaveSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                            raft::Index compact_to) override;
  raft::Status Close() override { return raft::Status::Ok(); }
  std::string Describe() const override { return "memory (not durable until issue 3's WAL)"; }
  bool durable() const override { return false; }

 private:
  raft::MemoryStorage storage_;
};

}  // namespace raftkv::server
