// Pure helpers of raftkvctl: parsing command-line values (endpoints,
// durations, numbers) and encoding strings for the wire (key paths, base64,
// UTF-8 checks). No I/O; any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "errors.h"

namespace raftkv::ctl {

// Revisions, ids and limits travel as JSON numbers below 2^53 (the API's bound).
inline constexpr uint64_t kMaxNumber = (uint64_t{1} << 53) - 1;

// One server's HTTP address.
struct Endpoint {
  std::string host;
  uint16_t port = 0;
  // "host:port", with brackets around an IPv6 host.
  std::string ToString() const;
  bool operator==(const Endpoint&) const = default;
};

// Parses "host:port,host:port,..." (an "http://" prefix is allowed; IPv6
// hosts in brackets). A usage error names the bad item and `source`, where
// the list came from ("--endpoints", or "$RAFTKV_ENDPOINTS").
Status ParseEndpoints(std::string_view spec, std::vector<Endpoint>* out,
                      std::string_view source = "--endpoints");

// Parses one address given to a flag ("--raft"): HOST:PORT or [IPV6]:PORT,
// without a scheme. A usage error names `flag`.
Status ParseHostPort(std::string_view flag, std::string_view text, Endpoint* out);

// Parses a duration with a unit: "500ms", "5s", "1m", "1h" (whole numbers).
// A usage error names `flag`.
Status ParseDuration(std::string_view flag, std::string_view text, std::chrono::milliseconds* out);

// Parses a decimal integer in [min, max]. A usage error names `what`.
Status ParseNumber(std::string_view what, std::string_view text, uint64_t* out, uint64_t min = 0,
                   uint64_t max = kMaxNumber);

// A query string built parameter by parameter: Add("prefix"),
// Add("limit", "10") -> "?prefix&limit=10". Values are percent-encoded.
class Query {
 public:
  void Add(std::string_view name);
  void Add(std::string_view name, std::string_view value);
  bool empty() const { return text_.empty(); }
  // "" or "?a&b=1".
  std::string str() const { return text_.empty() ? "" : "?" + text_; }

 private:
  std::string text_;
};

// The key as a path segment of /v1/kv/<key>: percent-encodes every byte but
// unreserved characters and '/', which the server keeps as is.
std::string PathEscape(std::string_view key);

// Base64 (RFC 4648, with padding), as the API's *_b64 fields.
std::string Base64Encode(std::string_view in);
std::optional<std::string> Base64Decode(std::string_view in);

// Whether `s` is valid UTF-8 (a JSON string can carry it as is).
bool IsValidUtf8(std::string_view s);

}  // namespace raftkv::ctl
