// Clients: the simulated users of the key-value store, and the history of
// their operations that the linearizability checker reads at the end.
//
// Clients make the requests the HTTP handlers make, through the same calls
// on the node's server::Driver: a Put is kv::EncodePut with a request id,
// handed to Driver::Propose; a linearizable Get is Driver::ReadBarrier, then
// a read of the node's kv::Store. So a request the driver resolves wrongly
// (a write answered ok that was not applied, a read released early) shows up
// as a linearizability failure.
//
// Each client has at most one operation outstanding. A Put goes to some node
// (the leader the client believes in, sometimes a random node). If the
// driver answers before Propose returns, it refused: nothing happened, and
// the client tries again later as a new invocation. Otherwise kOk means
// applied, kNotCommitted means it never will be, and anything else (a
// timeout, the node shutting down) leaves the outcome unknown: the op is
// "pending forever" in the history, it may or may not have happened. So is
// one whose node crashes (its answers die with it) or that the client gives
// up on. A Get that does not end in kOk had no effect and is dropped.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kv/store.h"
#include "linearizability.h"
#include "raft/rng.h"
#include "raft/status.h"
#include "raft/types.h"
#include "server/driver.h"
#include "trace.h"

namespace raftkv::sim {

// What clients need from the cluster.
class ClientTransport {
 public:
  virtual ~ClientTransport() = default;
  // Nodes that take requests now, in id order.
  virtual void UpNodes(std::vector<raft::NodeId>* out) const = 0;
  // The running driver of `node` and its store (nullptr if it is not up).
  virtual server::Driver* DriverOf(raft::NodeId node) = 0;
  virtual const kv::Store* StoreOf(raft::NodeId node) const = 0;
};

// Runs start(cb): the outcome, if cb ran before start returned (a refusal);
// otherwise none, and `later` gets the outcome whenever it comes.
std::optional<server::Outcome> CallDriver(const std::function<void(server::Callback)>& start,
                                          server::Callback later);

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
    uint64_t deadline = 0;
  };

  void Start(Client* c, uint64_t tick, ClientTransport* transport);
  // The driver's answer to op `op` of client `c` (ignored if the client
  // has moved on).
  void OnPutDone(uint64_t c, size_t op, const server::Outcome& o);
  void OnGetDone(uint64_t c, size_t op, const server::Outcome& o, ClientTransport* transport);
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
    raft::Index index = 0;  // Put: the index the driver applied it at.
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
