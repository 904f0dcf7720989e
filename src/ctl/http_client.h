// raftkvctl's HTTP client: Boost.Beast over plain TCP, one connection per
// endpoint, every operation bounded by a deadline, and failover between the
// endpoints a user gave (docs/raftkvctl.md, "Endpoints and failover").
//
// Neither class is thread-safe: a thread that needs a client makes its own
// (`check` runs one per connection).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "errors.h"
#include "parse.h"

namespace raftkv::ctl {

using Clock = std::chrono::steady_clock;
using boost::system::error_code;

// Whether a request may be sent again, to the same or another endpoint, after
// a failure. The server answers 503 only for a request it did not apply
// (docs/http-api.md, "Errors"), so a 503 is retried either way.
enum class Retry {
  // A read, or a write whose repetition is harmless (a lease keepalive):
  // sent again after any failure.
  kAlways,
  // A write: sent again only when it cannot have been applied (no connection
  // was made, the request was not written whole, or the server answered 503). A write sent without
  // an answer
  // ends with Exit::kOutcomeUnknown. The server offers no deduplication of
  // client retries (X-Raftkv-Request-Id is for its own forwarding), so this
  // is the only exactly-once-safe rule.
  kIfNotApplied,
};

struct Request {
  Request(boost::beast::http::verb m, std::string t, std::string b = "", Retry r = Retry::kAlways)
      : method(m), target(std::move(t)), body(std::move(b)), retry(r) {}

  boost::beast::http::verb method;
  std::string target;  // Path and query: "/v1/kv/app%2Fx?prev_kv".
  std::string body;    // Sent as application/json when not empty.
  Retry retry;
};

struct Reply {
  int status = 0;
  std::string body;
  std::string retry_after;
  std::string endpoint;  // The endpoint that answered, "host:port".
};

// One HTTP/1.1 connection to one endpoint.
class Connection {
 public:
  explicit Connection(Endpoint endpoint);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const Endpoint& endpoint() const { return endpoint_; }
  bool is_open() const { return stream_.has_value(); }

  // Resolves the host (a name goes through the system resolver, which has
  // its own timeouts) and connects.
  error_code Connect(Clock::time_point deadline);
  error_code Write(const Request& request, Clock::time_point deadline);
  // Reads one whole answer (at most kMaxReplyBytes of body). *got_some says
  // whether any byte of it arrived. Closes the connection unless it is kept
  // alive.
  error_code Read(Reply* out, bool* got_some, Clock::time_point deadline);

  // A streamed answer (a watch, a snapshot): ReadHead reads the status line and headers,
  // then each ReadSome appends the next body bytes, without chunk framing,
  // to *out and sets *done once the body has ended.
  error_code ReadHead(int* status, Clock::time_point deadline);
  error_code ReadSome(std::string* out, bool* done, Clock::time_point deadline);
  // After ReadHead: a header of the answer ("" if absent), and its
  // Content-Length (none for a chunked answer).
  std::string Header(std::string_view name) const;
  std::optional<uint64_t> ContentLength() const;
  // After ReadHead of an answer that is not the stream asked for (an error):
  // the rest of it as a Reply, at most kMaxRefusalBytes of body, read until
  // the deadline (what came by then).
  Reply ReadRefusal(int status, Clock::time_point deadline);

  void Close();

  static constexpr uint64_t kMaxReplyBytes = 64 << 20;
  static constexpr size_t kMaxRefusalBytes = 1 << 20;

 private:
  // Runs the operation `start` begins until it completes or the deadline passes.
  template <typename Start>
  error_code Run(Clock::time_point deadline, Start&& start);

  Endpoint endpoint_;
  boost::asio::io_context ioc_;
  std::optional<boost::beast::tcp_stream> stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::response_parser<boost::beast::http::buffer_body>> streaming_;
};

// Sends requests to a list of endpoints with failover:
//   - endpoints are tried in order, starting with the last one that answered;
//   - a failure to connect, a 503 (+ Retry-After), and for Retry::kAlways
//     also a lost answer or a 504, moves on to the next endpoint;
//   - after each round over every endpoint it waits (100 ms doubling, at most
//     the answer's Retry-After or 1 s), for at most kMaxRounds rounds and
//     never past the client's timeout; a round that would start with less
//     than kMinAttemptTime left is not started;
//   - a Retry::kAlways request gets ReadAttemptDeadline per attempt, so that
//     a node that accepts it and never answers (hung, SIGSTOPped) leaves time
//     for the next; a write waits for its answer until the overall deadline,
//     since giving up on it early could only end as "outcome unknown".
class Client {
 public:
  // `timeout` bounds each Send, retries included; a connection attempt gets
  // at most kConnectTimeout of it so that a dead host leaves time for the
  // next. `keep_alive` keeps one connection per endpoint open between Sends.
  Client(std::vector<Endpoint> endpoints, std::chrono::milliseconds timeout,
         bool keep_alive = false);
  ~Client();

  // Ok with *out filled when an endpoint answered (any status but the ones
  // moved on from); Exit::kUnavailable when none did, naming each endpoint's
  // last failure; Exit::kOutcomeUnknown for a kIfNotApplied request sent
  // without an answer.
  Status Send(const Request& request, Reply* out);

  const std::vector<Endpoint>& endpoints() const { return endpoints_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  // The endpoint to try first (the next Send starts there).
  void Prefer(size_t index) { preferred_ = index % endpoints_.size(); }

  static constexpr int kMaxRounds = 10;
  static constexpr std::chrono::milliseconds kConnectTimeout{2000};
  static constexpr std::chrono::milliseconds kMinAttemptTime{200};

 private:
  enum class Attempt { kAnswered, kNotSent, kNoAnswer };
  Attempt Try(size_t index, const Request& request, Clock::time_point deadline, Reply* out,
              std::string* failure);

  std::vector<Endpoint> endpoints_;
  std::chrono::milliseconds timeout_;
  bool keep_alive_;
  size_t preferred_ = 0;
  std::vector<std::unique_ptr<Connection>> connections_;  // One per endpoint, when kept.
};

// The deadline of one attempt of a read (a request that may be sent again)
// over `endpoints` endpoints within `timeout`: max(kMinReadAttempt,
// timeout / endpoints) from now, never past `overall`. Client::Send, the watch's
// connection and the snapshot's fetch use it.
inline constexpr std::chrono::milliseconds kMinReadAttempt{1000};
Clock::time_point ReadAttemptDeadline(Clock::time_point overall, std::chrono::milliseconds timeout,
                                      size_t endpoints);

// The text of a transport error, for messages ("connection refused", "timed out").
std::string Describe(const error_code& ec);

}  // namespace raftkv::ctl
