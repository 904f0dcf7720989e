// Watches over HTTP (docs/http-api.md, "Watch"): long polls, and streams of
// NDJSON or Server-Sent Events.
//
// The session (http_server.cc) parses a watch request, takes its watcher
// slots (WatchHub::Acquire) and starts one of these on its own io thread:
// - a long poll answers through the session once, when a matching event
//   exists at or after `rev`, when `wait` runs out, or when it is ended;
// - a stream takes the connection over: it writes the answer's head, then
//   one message per revision with events, progress when idle, and a
//   `canceled` message with the reason before it closes.
// A stream's unsent bytes are bounded (WatchOptions::buffer_bytes): a
// consumer that falls behind is cancelled (slow_consumer) with the last
// revision it was sent, never buffered without bound, and apply never waits
// for it.
//
// Threads: everything runs on the io thread of the session that started it.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "server/replica.h"
#include "server/watch_hub.h"
#include "watch/history.h"

namespace raftkv::server {

// Sessions run on an io_context served by one thread: their executor is the
// context's own, not a strand, and not type-erased.
using SessionExecutor = boost::asio::io_context::executor_type;
using SessionSocket = boost::asio::basic_stream_socket<boost::asio::ip::tcp, SessionExecutor>;

// One watch of a request.
struct WatchSpec {
  std::string name;  // A multi-watch's "id" (its messages carry it); else empty.
  watch::Filter filter;
  uint64_t rev = 0;  // The first revision wanted; 0: the next one applied.
};

// What streams and long polls use of the server.
struct WatchContext {
  WatchHub* hub = nullptr;
  WatchThread* thread = nullptr;  // The calling session's.
  Replica* replica = nullptr;
  // A write that takes longer closes the stream.
  std::chrono::milliseconds write_timeout{30000};
  // Held while the connection lives (the server's connection count).
  std::shared_ptr<void> connection;
};

struct StreamRequest {
  std::vector<WatchSpec> watches;
  bool multi = false;  // POST /v1/watch: messages name their watch.
  bool sse = false;    // text/event-stream, else NDJSON.
  bool b64 = false;
  unsigned http_version = 11;
  std::chrono::milliseconds progress{10000};
  bool require_leader = false;
  std::string headers;  // More header lines for the answer, each "\r\nName: value".
};

// Streams on `socket` from now on. One watcher slot per watch must have
// been acquired on ctx.thread; the stream gives them back when it ends.
void StartWatchStream(SessionSocket socket, StreamRequest req, WatchContext ctx);

struct PollRequest {
  WatchSpec watch;
  bool b64 = false;
  uint64_t limit = 1000;                  // Events per answer (a revision is never split).
  uint64_t max_bytes = 4 << 20;           // Bytes of events per answer (likewise).
  std::chrono::milliseconds wait{60000};  // Plus up to wait/16 of jitter.
  bool require_leader = false;
};

// The long poll's one answer: the HTTP status, the JSON body, the revision
// it reflects, and Retry-After ("" for none).
using PollAnswer =
    std::function<void(unsigned status, std::string body, uint64_t revision, std::string_view)>;

// Starts a long poll; `answer` runs once, on this thread (perhaps before this
// returns). One watcher slot must have been acquired on ctx.thread; it is
// given back before the answer.
void StartLongPoll(PollRequest req, WatchContext ctx, PollAnswer answer);

}  // namespace raftkv::server
