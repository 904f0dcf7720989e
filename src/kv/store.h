// Store: the replicated key-value state machine.
//
// The application surface Raft sees is apply / snapshot / restore (as in
// hashicorp/raft's FSM): the Raft driver thread applies committed entries in
// index order, takes snapshot images and restores them. Apply is
// deterministic, so every node that applied the same entries holds the same
// state. Per key the store keeps etcd's create_revision, mod_revision,
// version and lease; the store's revision is the last applied Raft index.
//
// Keys live in one heap node each, found by a hash set of node pointers (a
// point lookup costs what the plain hash map cost) and kept in key byte order
// by an intrusive red-black tree whose hook lives in the node (a range is a
// lower_bound and a walk). The choice and its figures: docs/store.md.
//
// Threads: Apply, Snapshot and Restore are called by the Raft driver thread
// only. The read methods (Get, Range, ReadTxn, revision(), size(), Hash())
// may be called from any thread (the HTTP threads serve reads directly): they
// take a shared lock that Apply and Restore take exclusively, once per batch.
#pragma once

#include <atomic>
#include <boost/intrusive/set.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <boost/unordered/unordered_flat_set.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kv/command.h"
#include "raft/status.h"
#include "raft/types.h"

namespace raftkv::kv {

struct KeyMeta {
  uint64_t create_revision = 0;  // Index of the write that created the key.
  uint64_t mod_revision = 0;     // Index of the last write.
  uint64_t version = 0;          // Writes since creation.
  uint64_t lease = 0;            // The lease the key is attached to (0: none).
  bool operator==(const KeyMeta&) const = default;
};

struct KeyValue {
  std::string key;
  std::string value;
  KeyMeta meta;
  bool operator==(const KeyValue&) const = default;
};

// A lease as the replicated state holds it. Its deadline is not here: each
// node keeps deadlines by its own clock, outside the store (server/lessor.h),
// so that apply stays a pure function of the log.
struct LeaseInfo {
  uint64_t id = 0;
  uint64_t ttl_ms = 0;
  uint64_t renewed_at = 0;  // The revision of its grant or latest keepalive.
  bool operator==(const LeaseInfo&) const = default;
};

// A change to the lease table, reported to whoever keeps the deadlines: a
// grant or renewal (`gone` false), or the lease's end.
struct LeaseChange {
  enum class Why : uint8_t { kGrant, kKeepAlive, kRevoke, kExpire };
  LeaseInfo lease;
  bool gone = false;  // Revoked or expired; else granted or renewed.
  Why why = Why::kGrant;
};

// How a command ended, the same on every node. A command that does not end
// kOk changed nothing (a transaction is all or nothing).
enum class ResultCode : uint8_t {
  kOk = 0,
  kLeaseNotFound,  // A put named a lease that does not exist.
  kTooManyKeys,    // A delete's range holds more than its max_keys.
  kLeaseExists,    // A grant asked for an id that a lease has.
};

// One op's outcome. Payloads (kvs, the get's kv) are built only where the
// caller asked for them (ApplyOptions::want_result); counts always are.
struct OpResult {
  TxnOpKind kind = TxnOpKind::kPut;
  bool found = false;         // get: the key exists (kv holds it).
  KeyValue kv;                // put: the key as written; get: the key.
  std::vector<KeyValue> kvs;  // range: the page; delete, put: the previous kvs (kWantPrevKv).
  uint64_t deleted = 0;       // delete.
  uint64_t count = 0;         // range: keys in the range (kCountOnly); delete: keys matched.
  bool more = false;          // range, delete: keys past the page or the limit remain.
};

struct Result {
  ResultCode code = ResultCode::kOk;
  uint64_t revision = 0;  // The store revision the result reflects (a write: its index).
  bool succeeded = true;  // A transaction: its compares held.
  std::vector<OpResult> ops;
  // Lease commands: the lease granted, or those renewed; the named leases
  // that did not exist (keepalive, revoke; an expiry lists those it left
  // alone); the keys a revoke or expiry deleted.
  std::vector<LeaseInfo> leases;
  std::vector<uint64_t> not_found;
  uint64_t deleted = 0;
};

// A change to one key, for watchers (issue 12): a put carries the new kv, a
// delete the key, its lease and mod_revision = the deleting revision. A
// delete caused by the end of the key's lease says so.
struct Event {
  enum class Type : uint8_t { kPut, kDelete };
  enum class Cause : uint8_t { kRequest, kLeaseRevoked, kLeaseExpired };
  Type type = Type::kPut;
  KeyValue kv;
  Cause cause = Cause::kRequest;
};

// One applied command, reported so that the driver can complete the request
// that proposed it.
struct Applied {
  raft::Index index = 0;
  RequestId id;
  ResultCode code = ResultCode::kOk;
  // Built when want_result(index) held; else null.
  std::shared_ptr<Result> result;
};

struct ApplyOptions {
  // Whether the result of the command at an index is wanted (a request on
  // this node waits for it). Empty: none is.
  std::function<bool(raft::Index)> want_result;
  // If set, every change is appended here in apply order.
  std::vector<Event>* events = nullptr;
  // If set, every change to the lease table is appended here in apply order.
  std::vector<LeaseChange>* lease_changes = nullptr;
};

// Rewrites the revision in a snapshot image's header (docs/wire-format.md
// section 3) and its checksum: `raftkv restore` moves a backup's revisions
// forward. kCorruption, image unchanged, if its checksum or version is wrong.
raft::Status SetImageRevision(std::string* image, uint64_t revision);

class Store {
 public:
  Store() = default;
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Driver thread. Applies committed entries, which must follow revision()
  // without a gap (an entry at or below revision() is a bug). Conf-change
  // entries and empty no-ops only advance the revision. Appends one Applied
  // per command to *applied. Returns kCorruption naming the index if an entry
  // is not a command this version knows (the caller must stop: see
  // docs/wire-format.md, "Extending the format"); entries before it stay
  // applied.
  raft::Status Apply(std::span<const raft::Entry> entries, std::vector<Applied>* applied,
                     const ApplyOptions& options = {});

  // Driver thread. The snapshot image (docs/wire-format.md section 3):
  // version 1 while no lease exists (so that a node of the first release
  // can still install it during a rolling upgrade), else version 2.
  std::string Snapshot() const;
  // Driver thread. Replaces the whole state with an image (version 1 or 2).
  // kCorruption (state unchanged) if the image is malformed.
  raft::Status Restore(std::string_view image);

  // Any thread. False if the key is absent.
  bool Get(std::string_view key, std::string* value, KeyMeta* meta = nullptr) const;
  // Any thread. A range op (kind kRange) or a get (kGet) against the current
  // state, with its payload.
  Result Read(const TxnOp& op) const;
  // Any thread. A transaction whose branches hold only gets and ranges: its
  // compares and its chosen branch, against one state (the caller checks
  // that neither branch writes).
  Result ReadTxn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success,
                 const std::vector<TxnOp>& failure) const;
  // Any thread. Lease `id` and, if `keys` is set, its keys in key order;
  // false if it does not exist.
  bool GetLease(uint64_t id, LeaseInfo* out, std::vector<std::string>* keys = nullptr) const;
  // Any thread. Every lease, by id.
  std::vector<LeaseInfo> Leases() const;
  size_t lease_count() const;
  // Any thread. The last applied index.
  uint64_t revision() const { return revision_.load(std::memory_order_acquire); }
  size_t size() const;
  // Any thread. A digest of the whole state (keys, values, metadata, leases
  // and revision) that tests compare across nodes.
  uint64_t Hash() const;

 private:
  struct Node : boost::intrusive::set_base_hook<boost::intrusive::optimize_size<true>> {
    std::string key;
    std::string value;
    KeyMeta meta;
  };
  struct KeyOfNode {
    using type = std::string_view;
    std::string_view operator()(const Node& n) const { return n.key; }
  };
  struct NodeHash {
    using is_transparent = void;
    using is_avalanching = void;  // XXH3: the set needs no extra mixing.
    size_t operator()(const Node* n) const { return (*this)(std::string_view(n->key)); }
    size_t operator()(std::string_view s) const;
  };
  struct NodeEq {
    using is_transparent = void;
    bool operator()(const Node* a, const Node* b) const { return a->key == b->key; }
    bool operator()(std::string_view a, const Node* b) const { return a == b->key; }
    bool operator()(const Node* a, std::string_view b) const { return a->key == b; }
  };
  using Tree = boost::intrusive::set<Node, boost::intrusive::key_of_value<KeyOfNode>,
                                     boost::intrusive::constant_time_size<false>>;
  using Index = boost::unordered_flat_set<Node*, NodeHash, NodeEq>;
  struct Lease {
    uint64_t ttl_ms = 0;
    uint64_t renewed_at = 0;
    boost::unordered_flat_set<Node*> keys;  // The keys attached to it.
  };
  struct Keys {
    Index index;
    Tree tree;
    boost::unordered_flat_map<uint64_t, Lease> leases;
    ~Keys();
  };

  const Node* Find(std::string_view key) const;
  // The first node of `keys` in key order, or tree.end().
  Tree::const_iterator First(const KeyRange& keys) const;
  bool CompareHolds(const Compare& c) const;
  bool AllHold(const std::vector<Compare>& cs) const;
  // Whether `ops` can run: kOk, or why not (nothing has changed yet).
  ResultCode Check(const std::vector<TxnOp>& ops) const;
  void ReadOp(const TxnOp& op, OpResult* out) const;
  void PutOp(const TxnOp& op, uint64_t index, OpResult* out, const ApplyOptions& options);
  void DeleteOp(const TxnOp& op, uint64_t index, OpResult* out, const ApplyOptions& options);
  // Runs `ops` (Check passed); `out` is null when no payload is wanted.
  void RunOps(const std::vector<TxnOp>& ops, uint64_t index, Result* out,
              const ApplyOptions& options);
  void Erase(Node* n);
  // Deletes `n` at revision `index`, reporting the event with `cause`.
  void DeleteNode(Node* n, uint64_t index, Event::Cause cause, const ApplyOptions& options);
  // Runs a lease command (Apply's part for ops 5-7).
  ResultCode ApplyLease(const CommandView& cmd, uint64_t index, Result* out,
                        const ApplyOptions& options);
  // Ends lease `id` (which exists) at revision `index`: deletes its keys in
  // key order, then the lease. Returns the keys deleted.
  uint64_t EndLease(uint64_t id, uint64_t index, Event::Cause cause, const ApplyOptions& options);
  std::vector<LeaseInfo> LeasesLocked() const;
  // Points `n` at lease `lease` (0: none), moving it between lease sets.
  void Attach(Node* n, uint64_t lease);
  static KeyValue ToKv(const Node& n, bool with_value);

  mutable std::shared_mutex mu_;
  Keys keys_;
  std::atomic<uint64_t> revision_{0};
};

}  // namespace raftkv::kv
