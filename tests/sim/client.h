// Clients: the simulated users of the key-value store, and the history of
// their operations that the linearizability checker reads at the end.
//
// Each client has at most one operation outstanding. A Put is proposed to
// some node (the leader the client believes in, sometimes a random node);
// if the node refuses (not leader, too many uncommitted entries...), nothing
// happened, and the client tries again later as a new invocation. Once a
// node accepted the proposal the outcome is known only if that same node
// (same incarnation) applies the entry: applying it means success, applying
// another entry at its index means it definitely failed. If the node
// crashes first, or the client times out, the outcome stays unknown and the
// op is "pending forever" in the history: it may or may not have happened.
//
// A Get asks a node (leader or follower) for a ReadIndex; when that node
// releases the read and has applied its index, the node's map answers. A
// read that times out or whose node crashes is dropped: it had no effect.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv.h"
#include "linearizability.h"
#include "raft/rng.h"
#include "raft/status.h"
#include "raft/types.h"
#include "trace.h"

namespace raftkv::sim {

// What clients need from the cluster.
class ClientTransport {
 public:
  virtual ~ClientTransport() = default;
  // Nodes that take requests now, in id order.
  virtual void UpNodes(std::vector<raft::NodeId>* out) const = 0;
  // Node::Propose on `node`; *leader is the node's leader hint afterwards.
  virtual raft::Status Propose(raft::NodeId node, std::string data, raft::Index* index,
                               raft::Term* term, raft::NodeId* leader) = 0;
  // Node::ReadIndex on `node`.
  virtual raft::Status ReadIndex(raft::NodeId node, std::string context, raft::NodeId* leader) = 0;
  // Bumped every time the node restarts: answers from another incarnation
  // say nothing about requests made to this one.
  virtual uint64_t Incarnation(raft::NodeId node) const = 0;
};

struct ClientOptions {
  int clients = 4;
  int keys = 4;
  uint32_t think_max_ticks = 6;  // Pause between two operations of a client.
  uint32_t retry_max_ticks = 3;  // Pause after a refusal.
  uint32_t put_timeout_ticks = 60;
  uint32_t get_timeout_ticks = 40;
  uint32_t get_percent = 50;
  uint32_t random_node_percent = 20;  // Ignore the leader hint sometimes.
};

struct ClientStats {
  uint64_t puts_ok = 0;
  uint64_t puts_unknown = 0;
  uint64_t puts_failed = 0;  // Another entry took its index.
  uint64_t gets_ok = 0;
  uint64_t gets_failed = 0;
  uint64_t refused = 0;
};

class Clients {
 public:
  Clients(uint64_t seed, const ClientOptions& options, Trace* trace);

  // Starts operations that are due and expires timed-out ones.
  void Tick(uint64_t tick, ClientTransport* transport);
  // While stopped, clients start no new operations (the run is ending).
  void set_stopped(bool stopped) { stopped_ = stopped; }

  // `node` (in `incarnation`) applied the entry at `index`; op_id is the
  // command's id, or 0 for an entry that is not a client command.
  void OnApplied(raft::NodeId node, uint64_t incarnation, raft::Index index, uint64_t op_id);
  // `node` released the read `context` and has applied its index: read `kv`.
  void OnRead(raft::NodeId node, uint64_t incarnation, const std::string& context,
              const KvStore& kv);
  // `node` crashed or left: whatever waits on it will never be answered.
  void OnNodeDown(raft::NodeId node);
  // The run is over: outstanding Puts become unknown, Gets are dropped.
  void Finish();

  // The history (failed ops left out), in invocation order.
  std::vector<KvOp> History() const;
  const ClientStats& stats() const { return stats_; }
  bool AnyOutstanding() const;
  // Where and when op `id` ran, for failure reports ("" if unknown).
  std::string Describe(uint64_t id) const;

 private:
  enum class Phase : uint8_t { kIdle, kPut, kGet };
  struct Client {
    uint64_t id = 0;
    Phase phase = Phase::kIdle;
    uint64_t next_tick = 0;  // Idle: when to start the next operation.
    raft::NodeId leader_hint = raft::kNoNode;
    // The outstanding operation.
    size_t op = 0;  // Index into ops_.
    raft::NodeId node = raft::kNoNode;
    uint64_t incarnation = 0;
    raft::Index index = 0;
    uint64_t deadline = 0;
  };

  void Start(Client* c, uint64_t tick, ClientTransport* transport);
  void Complete(Client* c, uint64_t tick_delay_max);
  raft::NodeId PickNode(Client* c, const std::vector<raft::NodeId>& up);

  raft::Rng rng_;
  ClientOptions options_;
  Trace* trace_;
  std::vector<Client> clients_;
  std::vector<KvOp> ops_;
  std::vector<bool> failed_;  // Per op: definitely had no effect.
  struct OpInfo {
    raft::NodeId node = raft::kNoNode;
    uint64_t invoke_tick = 0;
    uint64_t response_tick = 0;
    raft::Index index = 0;  // Put: the index its entry was proposed at.
  };
  std::vector<OpInfo> info_;  // Per op.
  uint64_t clock_ = 0;        // Logical time of invocations and responses.
  uint64_t next_op_id_ = 1;
  uint64_t tick_ = 0;
  bool stopped_ = false;
  ClientStats stats_;
  std::vector<raft::NodeId> up_;  // Scratch.
};

}  // namespace raftkv::sim
