// The replicated key-value commands: what a Raft kNormal entry carries.
//
// The byte format is specified in docs/wire-format.md (section 2): a format
// version, an op, the request id (client node id + sequence) and the op's
// length-prefixed fields. Encoding and decoding are pure functions, safe on
// any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace raftkv::kv {

inline constexpr uint8_t kCommandFormatVersion = 1;

enum class Op : uint8_t {
  kPut = 1,
  // Reserved for later issues (not decoded yet): kDelete = 2, kCompareAndSwap = 3,
  // kTxn = 4, kLeaseGrant = 5, kLeaseRevoke = 6, kLeaseKeepAlive = 7.
};

// Identifies one client request cluster-wide: the node that accepted it and
// that node's sequence number.
struct RequestId {
  uint64_t client = 0;
  uint64_t seq = 0;
  bool operator==(const RequestId&) const = default;
};

// A decoded command. Views point into the encoded bytes it was decoded from,
// so the bytes must outlive it (apply decodes straight from the log entry).
struct CommandView {
  Op op = Op::kPut;
  RequestId id;
  std::string_view key;
  std::string_view value;
};

// Encodes Put(key, value) with request id `id`.
std::string EncodePut(RequestId id, std::string_view key, std::string_view value);

// Decodes `data`. False (out unspecified) if it is not a command this version
// knows: wrong format version, unknown op, wrong field count, bad lengths or
// trailing bytes.
bool DecodeCommand(std::string_view data, CommandView* out);

}  // namespace raftkv::kv
