// Clients: the simulated users of the key-value store, and the history of
// their operations that the linearizability checker reads at the end.
//
// Clients make the requests the HTTP handlers make, through the same calls
// on the node's server::Driver and kv::Store: a write is a kv command (Put,
// Delete, or a Txn built as the /v1 handlers build it) with a request id,
// handed to Driver::Propose, and its result is the kv::Result the driver
// hands back; a linearizable read is Driver::ReadBarrier, then a read of the
// node's store (Get, or ReadTxn for a two-key read). So a request the driver
// or the store resolves wrongly (a write answered ok that was not applied, a
// read released early, a compare not applied, a transaction torn) shows up
// as a linearizability failure.
//
// The ops: put, get and delete of one key; compare-and-swap, as PUT
// /v1/kv/<key>?if_mod_revision=R (or if_version=0 to create) is built: a Txn
// whose compare is on the mod_revision the client last saw with the value
// it expects, with a get of the key as the failure branch; and a put or a
// get of two keys in one transaction. Keys k0..k{n-1}; transactions span
// the pairs (k0, k1), (k2, k3), ... only, so the checker's groups stay at
// two keys.
//
// Each client has at most one operation outstanding. A write goes to some
// node (the leader the client believes in, sometimes a random node). If the
// driver answers before Propose returns, it refused: nothing happened, and
// the client tries again later as a new invocation. Otherwise kOk means
// applied, kNotCommitted means it never will be, and anything else (a
// timeout, the node shutting down) leaves the outcome unknown: the op is
// "pending forever" in the history, it may or may not have happened. So is
// one whose node crashes (its answers die with it) or that the client gives
// up on. A read that does not end in kOk had no effect and is dropped.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
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
  uint32_t get_percent = 50;          // Reads; the rest are writes.
  uint32_t txn_get_percent = 25;      // Of the reads: two-key reads.
  uint32_t delete_percent = 10;       // Of the writes: deletes,
  uint32_t cas_percent = 30;          // compare-and-swaps,
  uint32_t txn_put_percent = 15;      // two-key puts; the rest plain puts.
  uint32_t random_node_percent = 20;  // Ignore the leader hint sometimes.
};

// Writes (puts, deletes, CASes, two-key puts) and reads (gets, two-key
// reads) by outcome, and some kinds on their own.
struct ClientStats {
  uint64_t puts_ok = 0;
  uint64_t puts_unknown = 0;
  uint64_t puts_failed = 0;  // Another entry took its index.
  uint64_t gets_ok = 0;
  uint64_t gets_failed = 0;
  uint64_t refused = 0;
  uint64_t deletes_ok = 0;
  uint64_t cas_ok = 0;
  uint64_t cas_failed = 0;  // Applied, and its compare did not hold.
  uint64_t txn_puts_ok = 0;
  uint64_t txn_gets_ok = 0;
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
  enum class Phase : uint8_t { kIdle, kWrite, kRead };
  // What a client last learnt of a key: its value and mod_revision, for the
  // next CAS on it.
  struct Known {
    bool found = false;
    std::string value;
    uint64_t mod_revision = 0;
  };
  struct Client {
    uint64_t id = 0;
    Phase phase = Phase::kIdle;
    uint64_t next_tick = 0;  // Idle: when to start the next operation.
    raft::NodeId leader_hint = raft::kNoNode;
    std::map<std::string, Known> known;
    // The outstanding operation.
    size_t op = 0;  // Index into ops_.
    raft::NodeId node = raft::kNoNode;
    uint64_t deadline = 0;
  };

  void Start(Client* c, uint64_t tick, ClientTransport* transport);
  // Draws the next op of client `c` (kind, keys, values; a CAS's compare),
  // and the command a write proposes ("" for a read).
  KvOp Draw(Client* c, uint64_t op_id, std::string* command);
  // The driver's answer to op `op` of client `c` (ignored if the client
  // has moved on).
  void OnWriteDone(uint64_t c, size_t op, const server::Outcome& o);
  void OnReadDone(uint64_t c, size_t op, const server::Outcome& o, ClientTransport* transport);
  // The outcome of a write or read is now unknown, or it failed.
  void GiveUp(Client* c, const std::string& why);
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
    raft::Index index = 0;  // A write: the index the driver applied it at.
  };
  std::vector<OpInfo> info_;  // Per op.
  uint64_t clock_ = 0;        // Logical time of invocations and responses.
  uint64_t next_op_id_ = 1;
  uint64_t tick_ = 0;
  bool stopped_ = false;
  ClientStats stats_;
  std::vector<raft::NodeId> up_;  // Scratch.
};

// The lease workload (issue 13): a few clients of their own that grant
// leases (TTL 400-2500 virtual ms: at least twice the largest election
// timeout, 2 x 10 ticks of 10 ms, as the server demands, and short next to a
// run's 50 virtual seconds, so that many expire), put keys on them
// ("lease/<client>/<lease>/<n>", a namespace no other client touches),
// keep some alive at about TTL/3 (one lease or all the client's due ones in
// one keepalive) for 2-6 TTLs, let others lapse, and revoke some. Their ops
// stay out of the linearizability history: an expiry deletes keys at a
// moment no client chose, which its model of keys does not know, so lease
// keys live apart from the keys it checks; the lease checker (leases.h)
// checks them instead. Its choices come from a random stream of its own, so
// the other clients draw what they drew before.
struct LeaseClientOptions {
  int clients = 2;
  int max_leases = 3;  // Per client, known to it (granted, not yet ended).
  uint32_t ttl_min_ms = 400;
  uint32_t ttl_max_ms = 2500;
  uint32_t think_max_ticks = 8;
  uint32_t timeout_ticks = 60;
  uint32_t tick_ms = 10;  // The simulator's tick.
};

struct LeaseClientStats {
  uint64_t grants_ok = 0;
  uint64_t keepalives_ok = 0;
  uint64_t revokes_ok = 0;
  uint64_t puts_ok = 0;
  uint64_t unknown = 0;  // Timed out, or the node went down.
  uint64_t refused = 0;
};

class LeaseClients {
 public:
  // `sent` hears of every grant and keepalive handed to a driver (the
  // checker maps request ids to send times).
  LeaseClients(uint64_t seed, const LeaseClientOptions& options, Trace* trace,
               std::function<void(kv::RequestId)> sent);

  void Tick(uint64_t tick, ClientTransport* transport);
  void set_stopped(bool stopped) { stopped_ = stopped; }
  void OnNodeDown(raft::NodeId node);
  const LeaseClientStats& stats() const { return stats_; }

  // Request ids of lease clients: client ids from here up.
  static constexpr uint64_t kFirstClient = uint64_t{1} << 60;

 private:
  enum class Mode : uint8_t { kKeep, kLapse, kRevoke };
  struct Held {
    uint64_t id = 0;
    uint64_t ttl_ms = 0;
    Mode mode = Mode::kLapse;
    uint64_t renew_tick = 0;   // Keep: the last keepalive sent (or the grant).
    uint64_t until_tick = 0;   // Keep: kept alive until then. Revoke: revoked then.
    uint64_t forget_tick = 0;  // Lapse: forgotten then (surely expired).
    int keys = 0;
  };
  enum class Kind : uint8_t { kGrant, kKeepAlive, kRevoke, kPut };
  struct Client {
    uint64_t id = 0;
    bool busy = false;
    uint64_t next_tick = 0;
    uint64_t deadline = 0;
    uint64_t seq = 0;
    raft::NodeId node = raft::kNoNode;
    raft::NodeId leader_hint = raft::kNoNode;
    Kind kind = Kind::kGrant;
    uint64_t ttl_ms = 0;           // Grant.
    std::vector<uint64_t> leases;  // KeepAlive, Revoke, Put.
    std::vector<Held> held;
  };

  void Start(Client* c, uint64_t tick, ClientTransport* transport);
  void OnDone(uint64_t client, uint64_t seq, const server::Outcome& o);
  Held* Find(Client* c, uint64_t id);
  void Forget(Client* c, uint64_t id);
  uint64_t TicksOf(uint64_t ms) const { return ms / options_.tick_ms; }

  raft::Rng rng_;
  LeaseClientOptions options_;
  Trace* trace_;
  std::function<void(kv::RequestId)> sent_;
  std::vector<Client> clients_;
  uint64_t tick_ = 0;
  bool stopped_ = false;
  LeaseClientStats stats_;
  std::vector<raft::NodeId> up_;
};

}  // namespace raftkv::sim
