// The replicated key-value commands: what a Raft kNormal entry carries.
//
// The byte format is specified in docs/wire-format.md (section 2): a format
// version, an op, the request id (client node id + sequence) and the op's
// length-prefixed fields. Encoding and decoding are pure functions, safe on
// any thread.
//
// Commands are built only by the server, after it has validated the client's
// request (key and value sizes, a key written at most once per transaction
// branch): a committed command that does not decode is a bug or corruption,
// and the node that meets one stops (Store::Apply).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace raftkv::kv {

inline constexpr uint8_t kCommandFormatVersion = 1;

// The command language a node speaks: 1 = Put only (the first release);
// 2 = Put with a lease, Delete and Txn; 3 = the lease commands. A leader
// proposes a command of a newer language only once every member speaks it
// (docs/http-api.md, "Upgrades").
inline constexpr int kProtoVersion = 3;

enum class Op : uint8_t {
  kPut = 1,
  kDelete = 2,
  // 3 (CompareAndSwap) is reserved and unused: conditional writes are Txns.
  kTxn = 4,
  kLeaseGrant = 5,
  kLeaseRevoke = 6,
  kLeaseKeepAlive = 7,
};

// Why a LeaseRevoke was proposed: a client asked (every named lease that
// exists goes), or the leader found the lease past its deadline (a lease
// renewed since the leader looked stays: see LeaseRef::renewed_at).
enum class RevokeReason : uint8_t { kRevoke = 0, kExpire = 1 };

// A lease named by a revoke or keepalive. For an expiry, `renewed_at` is
// the revision of the grant or keepalive the leader's deadline counts from;
// the expiry does nothing to a lease renewed at another revision.
struct LeaseRef {
  uint64_t id = 0;
  uint64_t renewed_at = 0;
  bool operator==(const LeaseRef&) const = default;
};

// Identifies one client request cluster-wide: the node that accepted it and
// that node's sequence number.
struct RequestId {
  uint64_t client = 0;
  uint64_t seq = 0;
  bool operator==(const RequestId&) const = default;
};

// One key, or the keys in [key, end). An empty `end` on a range means "to
// the last key", so that every key is the range {"", "", true}.
struct KeyRange {
  std::string_view key;
  std::string_view end;
  bool range = false;

  bool Contains(std::string_view k) const {
    if (!range) return k == key;
    return k >= key && (end.empty() || k < end);
  }
  // Whether the two share a key.
  bool Overlaps(const KeyRange& o) const;
};

// The end of the range of keys that start with `prefix`: the prefix with its
// last byte below 0xFF incremented and what follows dropped; "" (no end) if
// there is no such byte (an empty prefix, or only 0xFF bytes).
std::string PrefixEnd(std::string_view prefix);

// What a compare reads from a key (etcd's Compare.target).
enum class Target : uint8_t {
  kValue = 0,
  kVersion = 1,
  kCreateRevision = 2,
  kModRevision = 3,
  kLease = 4
};
enum class CmpOp : uint8_t { kEqual = 0, kNotEqual = 1, kLess = 2, kGreater = 3 };

struct Compare {
  Target target = Target::kValue;
  CmpOp op = CmpOp::kEqual;
  KeyRange keys;
  std::string_view value;  // kValue.
  uint64_t number = 0;     // Every other target.
};

enum class TxnOpKind : uint8_t { kPut = 1, kDelete = 2, kGet = 3, kRange = 4 };

// Flags of a transaction op.
inline constexpr uint8_t kWantPrevKv = 1;  // put, delete: report the previous kv(s).
inline constexpr uint8_t kKeysOnly = 2;    // get, range: no values.
inline constexpr uint8_t kCountOnly = 4;   // range: only the count.

struct TxnOp {
  TxnOpKind kind = TxnOpKind::kPut;
  uint8_t flags = 0;
  KeyRange keys;           // put and get: one key.
  std::string_view value;  // put.
  uint64_t lease = 0;      // put.
  uint64_t limit = 0;      // delete, range: at most this many keys (0 = no limit).
  uint64_t max_keys = 0;   // delete: refuse (kTooManyKeys) if more keys match (0 = no cap).
  uint64_t max_bytes = 0;  // range: the page ends past this many bytes (0 = no cap).
};

// A decoded command. Views point into the encoded bytes it was decoded from,
// so the bytes must outlive it (apply decodes straight from the log entry).
// Put and Delete are the one-op forms of a transaction without compares,
// kept because they are smaller and because the first release's Put is
// exactly the two-field Put.
struct CommandView {
  Op op = Op::kPut;
  RequestId id;
  // kPut: key, value, lease. kDelete: keys, limit, max_keys.
  TxnOp single;
  // kTxn.
  std::vector<Compare> compares;
  std::vector<TxnOp> success;
  std::vector<TxnOp> failure;
  // kLeaseGrant: the id asked for (0: the server picks) and the TTL.
  uint64_t lease_id = 0;
  uint64_t ttl_ms = 0;
  // kLeaseRevoke, kLeaseKeepAlive (renewed_at is 0 in both but an expiry).
  RevokeReason reason = RevokeReason::kRevoke;
  std::vector<LeaseRef> leases;
};

// Put(key, value) with request id `id`; with lease 0 this is byte for byte
// the first release's Put.
std::string EncodePut(RequestId id, std::string_view key, std::string_view value,
                      uint64_t lease = 0);
// Delete of one key or a range (`op` is a kDelete TxnOp; its flags are not
// encoded: a Delete reports no previous kvs, a Txn does).
std::string EncodeDelete(RequestId id, const TxnOp& op);
std::string EncodeTxn(RequestId id, const std::vector<Compare>& compares,
                      const std::vector<TxnOp>& success, const std::vector<TxnOp>& failure);

// Grants lease `lease_id` (0: the entry's index, or the next free id above
// it) with a TTL of `ttl_ms`.
std::string EncodeLeaseGrant(RequestId id, uint64_t lease_id, uint64_t ttl_ms);
// Revokes (kRevoke: renewed_at unused) or expires (kExpire) `leases`.
std::string EncodeLeaseRevoke(RequestId id, RevokeReason reason,
                              const std::vector<LeaseRef>& leases);
// Renews each of `lease_ids` from this entry's revision.
std::string EncodeLeaseKeepAlive(RequestId id, const std::vector<uint64_t>& lease_ids);

// Decodes `data`. False (out unspecified) if it is not a command this version
// knows: wrong format version, unknown op, target, kind or field count, bad
// lengths or trailing bytes.
bool DecodeCommand(std::string_view data, CommandView* out);

// The command language a command needs (1, 2 or 3).
int ProtoOf(std::string_view data);

}  // namespace raftkv::kv
