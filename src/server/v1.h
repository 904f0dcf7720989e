// The /v1 data API's request parsing and answer formatting (docs/http-api.md,
// "/v1"): pure functions of their inputs, on any thread. The HTTP session
// (http_server.cc) routes a request, calls these to turn it into a kv
// command or a read, and to turn the outcome into JSON.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kv/command.h"
#include "kv/store.h"

namespace raftkv::server::v1 {

// Revisions, ids and limits travel as JSON numbers below 2^53.
inline constexpr uint64_t kMaxNumber = (uint64_t{1} << 53) - 1;

// A client error: the HTTP status, a stable snake_case code and a message.
struct ApiError {
  unsigned status = 400;
  std::string code;
  std::string message;
};

struct Limits {
  uint64_t max_key_bytes = 4096;
  uint64_t max_value_bytes = 1 << 20;
  uint64_t max_txn_ops = 128;
  uint64_t max_range_limit = 10000;
  uint64_t default_range_limit = 1000;
  uint64_t max_range_bytes = 4 << 20;
  uint64_t max_delete_keys = 10000;
};

// The query string, percent-decoded. Later duplicates are ignored.
class Query {
 public:
  // False (and *error) on malformed percent-encoding.
  bool Parse(std::string_view query, std::string* error);
  bool Has(std::string_view name) const;
  // The value of `name`, or nullopt if absent ("" for a bare flag).
  std::optional<std::string_view> Get(std::string_view name) const;
  // A flag: present, and not "false", "0" or "no".
  bool Flag(std::string_view name) const;
  // A number parameter: false (and *error) if present but not a decimal
  // integer <= kMaxNumber. Absent leaves *out alone.
  bool Number(std::string_view name, uint64_t* out, ApiError* error) const;
  // A duration parameter ("500ms", "2s", "1m"): false (and *error) if present
  // but not one. Absent leaves *ms alone.
  bool Duration(std::string_view name, uint64_t* ms, ApiError* error) const;
  // The first parameter whose name is not in `known`, or nullopt.
  std::optional<std::string> Unknown(const std::vector<std::string_view>& known) const;

 private:
  std::vector<std::pair<std::string, std::string>> params_;
};

// Strings that the views of a parsed command point into.
struct Arena {
  std::deque<std::string> strings;
  std::string_view Keep(std::string s) { return strings.emplace_back(std::move(s)); }
};

// A parsed POST /v1/txn body.
struct TxnRequest {
  std::vector<kv::Compare> compares;
  std::vector<kv::TxnOp> success;
  std::vector<kv::TxnOp> failure;
  bool writes = false;  // Either branch puts or deletes.
};

// Parses a txn body (api-v1.md section 2.3). Keys, values and ranges are
// kept in *arena.
bool ParseTxn(std::string_view body, const Limits& limits, Arena* arena, TxnRequest* out,
              ApiError* error);

// Checks a branch: at most max_txn_ops ops, no key put twice, no key both
// put and deleted (etcd's rule).
bool CheckBranch(const std::vector<kv::TxnOp>& ops, const Limits& limits, std::string_view name,
                 ApiError* error);

// Parses a PUT body: {"value":"..."} or {"value_b64":"..."}, optional
// "lease". The value goes to *value.
bool ParsePutBody(std::string_view body, std::string* value, uint64_t* lease, ApiError* error);

// Parses a lease grant body {"ttl":10[,"id":N]}: the TTL in seconds
// (nonzero; the caller applies the bounds) and the id asked for (0: none).
bool ParseLeaseGrant(std::string_view body, uint64_t* ttl_s, uint64_t* id, ApiError* error);
// Parses {"ids":[..]}: 0 to `max` lease ids (1 to 2^53-1), duplicates dropped.
bool ParseLeaseIds(std::string_view body, size_t max, std::vector<uint64_t>* ids, ApiError* error);
// A lease's TTL in whole seconds, as the API shows it (rounded up).
inline uint64_t TtlSeconds(uint64_t ttl_ms) { return (ttl_ms + 999) / 1000; }

// One watch of a POST /v1/watch?stream body.
struct WatchItem {
  std::string id;  // Unique in the request; its index when not given.
  std::string key;
  bool prefix = false;
  uint64_t rev = 0;  // 0: from the next revision.
};
inline constexpr size_t kMaxStreamWatches = 64;

// Parses {"watches":[{"id":"a","key":"cfg/","prefix":true,"rev":120}, ...]}
// (1 to kMaxStreamWatches watches; key_b64 for any bytes).
bool ParseWatches(std::string_view body, const Limits& limits, std::vector<WatchItem>* out,
                  ApiError* error);

// Base64 (RFC 4648, with padding) and base64url (no padding).
std::string Base64(std::string_view in);
bool Unbase64(std::string_view in, std::string* out);
std::string Base64Url(std::string_view in);
bool UnBase64Url(std::string_view in, std::string* out);

// A range continuation token: the last key of a page and the first page's
// revision, opaque to the client.
std::string ContinueToken(std::string_view last_key, uint64_t revision);
bool ParseContinueToken(std::string_view token, std::string* last_key, uint64_t* revision);

// JSON output. `b64` forces key_b64/value_b64; otherwise they are used only
// for bytes that are not valid UTF-8.
void AppendKv(std::string* out, const kv::KeyValue& kv, bool b64, bool with_value = true);
void AppendKvs(std::string* out, const std::vector<kv::KeyValue>& kvs, bool b64,
               bool with_value = true);
// A watch's events as a JSON array: {"type":"put","kv":{..}} and
// {"type":"delete","kv":{"key":..,"mod_revision":R,"lease":L}}.
void AppendEvents(std::string* out, std::span<const kv::Event* const> events, bool b64);
// {"id":N,"ttl":S}.
void AppendLease(std::string* out, uint64_t id, uint64_t ttl_ms);
// [1,2,3].
void AppendIds(std::string* out, std::span<const uint64_t> ids);
// "keys":[..], or "keys_b64":[..] when b64 is set or a key is not UTF-8.
void AppendKeyList(std::string* out, const std::vector<std::string>& keys, bool b64);
// {"revision":R,"succeeded":..,"results":[...]} for a txn.
std::string TxnJson(const kv::Result& r, const TxnRequest& req, bool b64);
// {"error":"..","code":".."} plus `extra` (a JSON fragment starting with ','
// or empty).
std::string ErrorJson(std::string_view code, std::string_view message, std::string_view extra = "");

}  // namespace raftkv::server::v1
