// check: a short load run. --conns threads, each with its own kept-alive
// connection (spread over the endpoints; followers forward to the leader),
// put keys under a subprefix of --prefix that is the run's own
// ("check-<16 hex digits>/") for --duration or until --requests puts were
// sent in all; then the throughput, the latency percentiles and the errors
// are printed, and the run's keys (only those: a user's keys under
// --prefix are left alone) are deleted with prefix deletes.
#include <algorithm>
#include <atomic>
#include <boost/json/serialize.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <cstdio>
#include <random>
#include <thread>

#include "commands.h"
#include "output.h"

namespace raftkv::ctl {

namespace json = boost::json;
using boost::beast::http::verb;
using std::chrono::milliseconds;

namespace {

// Keys each connection cycles through: the run's keys stay bounded (and
// few prefix deletes remove them) however long it lasts.
constexpr uint64_t kKeysPerConnection = 1000;
// Keys per prefix delete at the end (the server's default --max-delete-keys).
constexpr uint64_t kDeleteBatch = 10000;

struct Plan {
  uint64_t conns = 16;
  std::string prefix = "raftkvctl-check/";
  milliseconds duration{5000};
  uint64_t requests = 0;  // 0: run for `duration`.
  uint64_t value_bytes = 64;
};

struct WorkerResult {
  std::vector<double> latencies_ms;  // Of the puts that succeeded.
  uint64_t errors = 0;
  uint64_t refused = 0;  // Of the errors, those the cluster answered with a 4xx.
  std::string first_error;
};

// The run's own prefix under the user's: "<prefix>check-<16 hex digits>/".
std::string RunPrefix(const std::string& prefix) {
  std::random_device rd;
  const uint64_t r = (uint64_t{rd()} << 32) ^ rd();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(r));
  return prefix + "check-" + hex + "/";
}

void Worker(size_t w, const Globals& g, const Plan& plan, Clock::time_point end,
            std::atomic<uint64_t>* sent, WorkerResult* out) {
  Client client(g.endpoints, g.timeout, /*keep_alive=*/true);
  client.Prefer(w);
  const std::string body =
      json::serialize(json::object{{"value", std::string(plan.value_bytes, 'x')}});
  const std::string base = "/v1/kv/" + PathEscape(plan.prefix + "c" + std::to_string(w) + "/");
  for (uint64_t i = 0;; i++) {
    if (plan.requests > 0 ? sent->fetch_add(1) >= plan.requests : Clock::now() >= end) break;
    Request req{verb::put, base + std::to_string(i % kKeysPerConnection), body,
                Retry::kIfNotApplied};
    Reply reply;
    const auto t0 = Clock::now();
    Status s = client.Send(req, &reply);
    const auto t1 = Clock::now();
    if (s.ok() && reply.status == 200) {
      out->latencies_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      continue;
    }
    out->errors++;
    if (s.ok() && reply.status >= 400 && reply.status <= 499) out->refused++;
    if (out->first_error.empty()) {
      out->first_error = s.ok() ? ReplyError(reply, "a put", req.retry).message() : s.message();
    }
  }
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

// Deletes every key under the run's prefix, kDeleteBatch at a time.
Status Cleanup(Context& ctx, const std::string& prefix, uint64_t* deleted) {
  Query q;
  q.Add("prefix");
  q.Add("limit", std::to_string(kDeleteBatch));
  const Request req{verb::delete_, "/v1/kv/" + PathEscape(prefix) + q.str(), "",
                    Retry::kIfNotApplied};
  // Bounded: the run wrote at most conns * kKeysPerConnection keys.
  for (int round = 0; round < 1000; round++) {
    json::object answer;
    Status s = Call(ctx, req, "the keys under \"" + prefix + "\"", &answer);
    if (!s.ok()) return s;
    *deleted += NumberOf(answer, "deleted");
    if (!BoolOf(answer, "more")) return Status::Ok();
  }
  return Status::Error("the keys under \"" + prefix + "\" were not all deleted");
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

void DefineCheck(po::options_description* d) {
  d->add_options()("conns", po::value<std::string>()->value_name("N"),
                   "concurrent connections, 1 to 1000 (default 16)")(
      "prefix", po::value<std::string>()->value_name("P"),
      "the run writes under P + check-<random hex>/ and deletes only that at the end (default "
      "raftkvctl-check/)")("duration", po::value<std::string>()->value_name("D"),
                           "how long to run (default 5s)")(
      "requests", po::value<std::string>()->value_name("N"),
      "send N puts in all instead of running for --duration")(
      "value-size", po::value<std::string>()->value_name("BYTES"),
      "bytes per value, up to 1048576 (default 64)");
}

Status RunCheck(Context& ctx, const Args& args) {
  Plan plan;
  plan.prefix = args.String("prefix", plan.prefix);
  if (plan.prefix.empty()) {
    return Status::Usage("--prefix is empty: give the prefix check writes its keys under");
  }
  if (Status s = args.Number("conns", &plan.conns, 1, 1000); !s.ok()) return s;
  if (Status s = args.Duration("duration", &plan.duration); !s.ok()) return s;
  if (Status s = args.Number("requests", &plan.requests, 1); !s.ok()) return s;
  if (Status s = args.Number("value-size", &plan.value_bytes, 0, 1 << 20); !s.ok()) return s;
  if (args.Has("requests") && args.Has("duration")) {
    return Status::Usage("give --duration or --requests, not both");
  }

  plan.prefix = RunPrefix(plan.prefix);

  std::vector<WorkerResult> results(plan.conns);
  std::atomic<uint64_t> sent{0};
  const auto start = Clock::now();
  const auto end = start + plan.duration;
  std::vector<std::thread> threads;
  for (size_t w = 0; w < plan.conns; w++) {
    threads.emplace_back(Worker, w, std::cref(ctx.globals()), std::cref(plan), end, &sent,
                         &results[w]);
  }
  for (std::thread& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<double> latencies;
  uint64_t errors = 0, refused = 0;
  std::string first_error;
  for (WorkerResult& r : results) {
    latencies.insert(latencies.end(), r.latencies_ms.begin(), r.latencies_ms.end());
    errors += r.errors;
    refused += r.refused;
    if (first_error.empty()) first_error = r.first_error;
  }
  std::sort(latencies.begin(), latencies.end());
  const uint64_t ok = latencies.size();
  const double throughput = seconds > 0 ? static_cast<double>(ok) / seconds : 0;
  const double p50 = Percentile(latencies, 0.50), p99 = Percentile(latencies, 0.99);
  const double max = latencies.empty() ? 0 : latencies.back();

  // Even when no put succeeded: one without an answer may have been applied.
  uint64_t deleted = 0;
  Status cleanup = Cleanup(ctx, plan.prefix, &deleted);

  if (ctx.json()) {
    json::object o{
        {"conns", plan.conns},      {"prefix", plan.prefix},
        {"requests", ok + errors},  {"succeeded", ok},
        {"errors", errors},         {"seconds", seconds},
        {"throughput", throughput}, {"latency_ms", {{"p50", p50}, {"p99", p99}, {"max", max}}},
        {"deleted", deleted}};
    if (!first_error.empty()) o["first_error"] = first_error;
    if (!cleanup.ok()) o["cleanup_error"] = cleanup.message();
    ctx.out() << json::serialize(o) << "\n";
  } else {
    ctx.out() << "requests    " << ok + errors << " (" << errors << " errors) in "
              << Fixed(seconds, 2) << " s over " << plan.conns << " connections\n"
              << "throughput  " << Fixed(throughput, 1) << " puts/s\n"
              << "latency     p50 " << Fixed(p50, 2) << " ms, p99 " << Fixed(p99, 2) << " ms, max "
              << Fixed(max, 2) << " ms\n"
              << "cleanup     " << deleted << " keys deleted under \"" << plan.prefix << "\""
              << (cleanup.ok() ? "" : " (failed: " + cleanup.message() + ")") << "\n";
    if (!first_error.empty()) ctx.out() << "first error " << first_error << "\n";
  }
  // A failed cleanup is reported whatever else failed: keys are left behind.
  const std::string left_behind =
      cleanup.ok() ? "" : "; cleanup of \"" + plan.prefix + "\" failed: " + cleanup.message();
  if (ok == 0) {
    // A cluster that answered and refused every put (a 4xx: a value over
    // its limit, say) is not unavailable: retrying will not help.
    const Exit code = refused > 0 && refused == errors ? Exit::kError : Exit::kUnavailable;
    return Status(code, "check: no put succeeded" +
                            (first_error.empty() ? "" : ": " + first_error) + left_behind);
  }
  if (errors > 0) {
    return Status::Error("check: " + std::to_string(errors) + " of " + std::to_string(ok + errors) +
                         " puts failed: " + first_error + left_behind);
  }
  if (!cleanup.ok()) return Status(cleanup.code(), "check: cleanup: " + cleanup.message());
  return Status::Ok();
}

}  // namespace raftkv::ctl
