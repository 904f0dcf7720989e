// watch: follows GET /v1/watch/<key>?stream (NDJSON) across endpoints
// (docs/http-api.md, "Watch"). Every stream resumes at the revision after
// the last one it has seen (an events or progress message, or the created
// message of the first stream), so that a reconnect to any node neither
// skips nor repeats an event while that revision is in the node's history.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <iostream>
#include <optional>
#include <thread>

#include "commands.h"
#include "output.h"

namespace raftkv::ctl {

namespace json = boost::json;
using boost::beast::http::verb;
using std::chrono::milliseconds;

namespace {

// The server sends a progress message after this long without one; a
// stream silent for kIdleProgresses of them is taken as lost (a node cut
// off without closing the connection).
constexpr milliseconds kProgress{2000};
constexpr int kIdleProgresses = 3;
// The pause before each new stream: kFirstBackoff after a healthy stream,
// doubling with every stream that was not, at most kMaxBackoff.
constexpr milliseconds kFirstBackoff{100};
constexpr milliseconds kMaxBackoff{1000};

struct WatchSpec {
  std::string key;
  bool prefix = false;
  uint64_t max_events = 0;  // 0: no bound.
};

struct WatchState {
  uint64_t next_rev = 0;  // The revision to resume at; 0: from now (not known yet).
  uint64_t events = 0;    // Printed so far.
};

// How one stream ended.
enum class End {
  kDone,       // --max-events reached.
  kLost,       // Disconnected, cancelled (not compacted), or refused for now: try the next.
  kCompacted,  // 410, or cancelled because its revision left the history.
  kFatal,      // Refused for good (a bad request): stop.
};

std::string Target(const WatchSpec& spec, const WatchState& state) {
  Query q;
  q.Add("stream");
  if (spec.prefix) q.Add("prefix");
  if (state.next_rev > 0) q.Add("rev", std::to_string(state.next_rev));
  q.Add("progress", std::to_string(kProgress.count()) + "ms");
  return "/v1/watch/" + PathEscape(spec.key) + q.str();
}

void PrintEvents(Context& ctx, const json::object& message, const std::string& line) {
  if (ctx.json()) {
    ctx.out() << line << "\n";
  } else if (auto* events = message.if_contains("events"); events && events->is_array()) {
    for (const json::value& e : events->get_array()) {
      if (!e.is_object()) continue;
      const json::object& o = e.get_object();
      const json::value* kv = o.if_contains("kv");
      if (!kv || !kv->is_object()) continue;
      const std::string type = StringOf(o, "type");
      if (type == "put") {
        ctx.out() << "PUT\n"
                  << KeyOf(kv->get_object()) << "\n"
                  << ValueOf(kv->get_object()) << "\n";
      } else {
        ctx.out() << "DELETE\n" << KeyOf(kv->get_object()) << "\n";
      }
    }
  }
}

// Handles one stream message: nullopt to read on, else how the stream ended.
std::optional<End> OnMessage(Context& ctx, const WatchSpec& spec, const std::string& line,
                             WatchState* state, bool* healthy, std::string* why) {
  error_code ec;
  json::value v = json::parse(line, ec);
  if (ec || !v.is_object()) {
    *why = "a stream message that is not a JSON object: " + line.substr(0, 200);
    return End::kFatal;
  }
  const json::object& m = v.get_object();
  const std::string type = StringOf(m, "type");
  const uint64_t revision = NumberOf(m, "revision");
  if (type == "created") {
    if (state->next_rev == 0) state->next_rev = revision + 1;
  } else if (type == "events") {
    *healthy = true;
    PrintEvents(ctx, m, line);
    // Stdout gone (a full disk, a closed pipe): stop rather than watch on
    // printing nothing.
    if (Status s = FlushOutput(ctx.out()); !s.ok()) {
      *why = s.message();
      return End::kFatal;
    }
    if (auto* events = m.if_contains("events"); events && events->is_array()) {
      state->events += events->get_array().size();
    }
    state->next_rev = revision + 1;
    if (spec.max_events > 0 && state->events >= spec.max_events) return End::kDone;
  } else if (type == "progress" || type == "canceled") {
    if (type == "progress") *healthy = true;
    state->next_rev = std::max(state->next_rev, revision + 1);
    if (type == "canceled") {
      const std::string reason = StringOf(m, "reason");
      *why = "the stream was cancelled: " + reason;
      return reason == "compacted" ? End::kCompacted : End::kLost;
    }
  }
  return std::nullopt;
}

// One stream on one endpoint, until it ends. *healthy says whether it
// delivered an events or progress message: a node that answers 200 and
// ends the stream at once (or after its created message) did not serve the
// watch, and must not reset the give-up window.
End WatchOn(Context& ctx, const WatchSpec& spec, Connection& conn, WatchState* state, bool* healthy,
            std::string* why, Status* fatal) {
  const auto timeout = ctx.globals().timeout;
  // As a read's attempt: a node that takes the request and never answers
  // leaves time for the next endpoint.
  const auto attempt =
      ReadAttemptDeadline(Clock::now() + timeout, timeout, ctx.globals().endpoints.size());
  error_code ec = conn.Connect(std::min(attempt, Clock::now() + Client::kConnectTimeout));
  int status = 0;
  if (!ec) ec = conn.Write({verb::get, Target(spec, *state)}, attempt);
  if (!ec) ec = conn.ReadHead(&status, attempt);
  if (ec) {
    *why = Describe(ec);
    return End::kLost;
  }
  if (status != 200) {
    Reply r = conn.ReadRefusal(status, attempt);
    Status s = ReplyError(r, "the watch of \"" + spec.key + "\"", Retry::kAlways);
    *why = s.message();
    if (status == 410) return End::kCompacted;
    if (status == 503 || status == 429 || status == 504) return End::kLost;
    *fatal = s;
    return End::kFatal;
  }
  std::string pending;
  while (true) {
    bool done = false;
    ec = conn.ReadSome(&pending, &done, Clock::now() + kProgress * kIdleProgresses);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string line = pending.substr(start, nl - start);
      if (line.empty()) continue;
      std::optional<End> end = OnMessage(ctx, spec, line, state, healthy, why);
      if (end == End::kFatal) *fatal = Status::Error(*why);
      if (end) return *end;
    }
    pending.erase(0, start);
    if (ec || done) {
      *why = ec ? Describe(ec) : "the stream ended";
      return End::kLost;
    }
  }
}

}  // namespace

void DefineWatch(po::options_description* d) {
  d->add_options()("prefix", po::bool_switch(), "every key under KEY")(
      "rev", po::value<std::string>()->value_name("N"),
      "start at revision N (default: the next change); e.g. a listing's watch_from")(
      "max-events", po::value<std::string>()->value_name("N"),
      "stop after N events (a revision's events are never split: it may print a few more)");
}

Status RunWatch(Context& ctx, const Args& args) {
  WatchSpec spec{args.String("KEY"), args.Flag("prefix")};
  if (spec.key.empty() && !spec.prefix) {
    return Status::Usage("KEY is empty (every key needs --prefix)");
  }
  WatchState state;
  if (Status s = args.Number("rev", &state.next_rev, 1); !s.ok()) return s;
  if (Status s = args.Number("max-events", &spec.max_events, 1); !s.ok()) return s;
  const auto& endpoints = ctx.globals().endpoints;
  const size_t n = endpoints.size();
  std::vector<std::string> failures(n);
  // Streams ended since the last healthy one, and how many said compacted.
  size_t failed = 0, compacted = 0;
  auto give_up_at = Clock::now() + ctx.globals().timeout;
  milliseconds backoff = kFirstBackoff;
  for (size_t index = 0;; index = (index + 1) % n) {
    Connection conn(endpoints[index]);
    bool healthy = false;
    std::string why;
    Status fatal;
    End end = WatchOn(ctx, spec, conn, &state, &healthy, &why, &fatal);
    if (end == End::kDone) return Status::Ok();
    if (end == End::kFatal) return fatal;
    failures[index] = why;
    if (healthy) {
      failed = compacted = 0;
      give_up_at = Clock::now() + ctx.globals().timeout;
      backoff = kFirstBackoff;
      std::cerr << "raftkvctl: watch: " << endpoints[index].ToString() << ": " << why
                << "; resuming at revision " << state.next_rev << "\n";
    }
    failed++;
    if (end == End::kCompacted) compacted++;
    // Every endpoint has been tried since the last healthy stream: give up
    // if one said compacted (the others failed too), or once the time is up.
    if (failed >= n && compacted > 0) {
      return Status(Exit::kCompacted, "compacted: revision " + std::to_string(state.next_rev) +
                                          " is no longer in the watch history (" + why +
                                          "); list again and watch from the listing's "
                                          "watch_from");
    }
    if (Clock::now() >= give_up_at) {
      std::string message = "watch: no endpoint served the watch for " +
                            std::to_string(ctx.globals().timeout.count()) + " ms:";
      for (size_t i = 0; i < n; i++) {
        message += (i == 0 ? " " : "; ") + endpoints[i].ToString() + ": " +
                   (failures[i].empty() ? "not tried" : failures[i]);
      }
      return Status(Exit::kUnavailable, message);
    }
    // Always a pause before the next stream, growing while none is healthy:
    // a node that accepts the watch and ends it at once must not be asked
    // again in a tight loop.
    auto left = std::chrono::duration_cast<milliseconds>(give_up_at - Clock::now());
    std::this_thread::sleep_for(std::max(milliseconds(0), std::min(backoff, left)));
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

}  // namespace raftkv::ctl
