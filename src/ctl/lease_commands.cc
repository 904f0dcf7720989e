// lease grant | keepalive | revoke | list | show: the /v1/leases routes
// (docs/http-api.md, "Leases").
#include <signal.h>

#include <boost/json/serialize.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <cerrno>
#include <ctime>
#include <iostream>

#include "commands.h"
#include "output.h"

namespace raftkv::ctl {

namespace json = boost::json;
using boost::beast::http::verb;
using std::chrono::milliseconds;

namespace {

// The first wait before a failed renewal is sent again (at most a third of
// the TTL); it doubles with each failure, up to a third of the TTL.
constexpr milliseconds kFirstRetry{500};

std::string LeaseName(uint64_t id) { return "lease " + std::to_string(id); }

Status LeaseId(const Args& args, uint64_t* id) { return args.Number("ID", id, 1); }

// Waits up to `interval` for SIGINT or SIGTERM (which the caller blocked);
// true if one came.
bool WaitForSignal(const sigset_t& signals, milliseconds interval) {
  timespec ts{};
  ts.tv_sec = interval.count() / 1000;
  ts.tv_nsec = (interval.count() % 1000) * 1000000;
  while (true) {
    int sig = sigtimedwait(&signals, nullptr, &ts);
    if (sig > 0) return true;
    if (errno == EAGAIN) return false;
    // EINTR: another signal's handler ran; waiting the whole interval again is harmless.
  }
}

}  // namespace

void DefineLeaseGrant(po::options_description* d) {
  d->add_options()("id", po::value<std::string>()->value_name("N"),
                   "the lease's id (default: the server picks one)");
}

Status RunLeaseGrant(Context& ctx, const Args& args) {
  uint64_t ttl = 0, id = 0;
  if (Status s = args.Number("TTL", &ttl, 1); !s.ok()) return s;
  if (Status s = args.Number("id", &id, 1); !s.ok()) return s;
  json::object body{{"ttl", ttl}};
  if (id > 0) body["id"] = id;
  json::object answer;
  std::string raw;
  Status s = Call(ctx, {verb::post, "/v1/leases", json::serialize(body), Retry::kIfNotApplied},
                  "the lease grant", &answer, &raw);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << raw << "\n";
  } else {
    ctx.out() << "lease " << NumberOf(answer, "id") << " granted with TTL "
              << NumberOf(answer, "ttl") << "s\n";
  }
  return Status::Ok();
}

void DefineLeaseKeepAlive(po::options_description* d) {
  d->add_options()("once", po::bool_switch(), "renew once and exit");
}

Status RunLeaseKeepAlive(Context& ctx, const Args& args) {
  uint64_t id = 0;
  if (Status s = LeaseId(args, &id); !s.ok()) return s;
  const bool once = args.Flag("once");
  // SIGINT and SIGTERM end the loop between renewals (exit 0); blocked, they
  // wait for sigtimedwait instead of killing the process mid-request.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  if (!once) sigprocmask(SIG_BLOCK, &signals, nullptr);
  // A renewal applied twice only renews twice: safe to send again.
  const Request request{verb::post, "/v1/leases/" + std::to_string(id) + "/keepalive", "",
                        Retry::kAlways};
  // Until the first renewal answers nothing says how long the lease lasts:
  // its failure ends the command. After that a renewal that fails for want
  // of an answer (5, 7) is tried again until the lease's TTL has passed
  // since the last renewal that succeeded, counted from when it was sent
  // (the server counts from later, so the lease cannot outlive this bound).
  bool renewed = false;
  Clock::time_point expires_at{};
  milliseconds interval{0}, retry_wait{0};
  while (true) {
    json::object answer;
    std::string raw;
    const Clock::time_point sent = Clock::now();
    Status s = Call(ctx, request, LeaseName(id) + " (it expired or was revoked)", &answer, &raw);
    if (s.ok()) {
      const uint64_t ttl = NumberOf(answer, "ttl");
      if (ctx.json()) {
        ctx.out() << raw << "\n";
      } else {
        ctx.out() << LeaseName(id) << " kept alive, TTL " << ttl << "s\n";
      }
      if (Status w = FlushOutput(ctx.out()); !w.ok()) return w;
      if (once) return Status::Ok();
      renewed = true;
      expires_at = sent + std::chrono::seconds(ttl);
      // A third of the TTL, as the server advises: two renewals can fail
      // before the lease expires.
      interval = std::max<milliseconds>(milliseconds(ttl * 1000 / 3), milliseconds(100));
      retry_wait = std::min(kFirstRetry, interval);
      if (WaitForSignal(signals, interval)) return Status::Ok();
      continue;
    }
    const bool transient = s.code() == Exit::kUnavailable || s.code() == Exit::kOutcomeUnknown;
    if (once || !renewed || !transient) return s;  // 3: the lease is gone; 1: refused.
    const auto left = std::chrono::duration_cast<milliseconds>(expires_at - Clock::now());
    if (left <= milliseconds(0)) {
      return Status(Exit::kUnavailable,
                    "lease keepalive: " + LeaseName(id) +
                        " was not renewed within its TTL since the last renewal, so it has "
                        "expired (or will before a renewal can reach it): " +
                        s.message());
    }
    const milliseconds wait = std::min(retry_wait, left);
    std::cerr << "raftkvctl: lease keepalive: " << s.message() << "; trying again in "
              << wait.count() << " ms (the lease has at most " << left.count() << " ms left)\n";
    if (WaitForSignal(signals, wait)) return Status::Ok();
    retry_wait = std::min(retry_wait * 2, interval);
  }
}

Status RunLeaseRevoke(Context& ctx, const Args& args) {
  uint64_t id = 0;
  if (Status s = LeaseId(args, &id); !s.ok()) return s;
  json::object answer;
  std::string raw;
  Status s =
      Call(ctx, {verb::delete_, "/v1/leases/" + std::to_string(id), "", Retry::kIfNotApplied},
           LeaseName(id), &answer, &raw);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << raw << "\n";
  } else {
    ctx.out() << LeaseName(id) << " revoked, " << NumberOf(answer, "deleted") << " keys deleted\n";
  }
  return Status::Ok();
}

void DefineLeaseList(po::options_description* d) {
  d->add_options()("stale", po::bool_switch(), "serve from the node's own copy");
}

Status RunLeaseList(Context& ctx, const Args& args) {
  Query q;
  if (args.Flag("stale")) q.Add("consistency", "stale");
  json::object answer;
  std::string raw;
  Status s = Call(ctx, {verb::get, "/v1/leases" + q.str()}, "the leases", &answer, &raw);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << raw << "\n";
    return Status::Ok();
  }
  std::vector<std::vector<std::string>> rows;
  if (auto* leases = answer.if_contains("leases"); leases && leases->is_array()) {
    for (const json::value& l : leases->get_array()) {
      if (!l.is_object()) continue;
      rows.push_back({std::to_string(NumberOf(l.get_object(), "id")),
                      std::to_string(NumberOf(l.get_object(), "ttl")) + "s"});
    }
  }
  PrintTable(ctx.out(), {"ID", "TTL"}, rows);
  return Status::Ok();
}

void DefineLeaseShow(po::options_description* d) {
  d->add_options()("keys", po::bool_switch(), "also list the keys attached to it");
}

Status RunLeaseShow(Context& ctx, const Args& args) {
  uint64_t id = 0;
  if (Status s = LeaseId(args, &id); !s.ok()) return s;
  Query q;
  if (args.Flag("keys")) q.Add("keys");
  json::object answer;
  std::string raw;
  Status s = Call(ctx, {verb::get, "/v1/leases/" + std::to_string(id) + q.str()}, LeaseName(id),
                  &answer, &raw);
  if (!s.ok()) return s;
  if (ctx.json()) {
    ctx.out() << raw << "\n";
    return Status::Ok();
  }
  ctx.out() << LeaseName(id) << ": TTL " << NumberOf(answer, "ttl") << "s, "
            << NumberOf(answer, "remaining_ms") << " ms left (renewed at revision "
            << NumberOf(answer, "renewed_revision") << ")\n";
  if (auto* keys = answer.if_contains("keys"); keys && keys->is_array()) {
    for (const json::value& k : keys->get_array()) {
      if (k.is_string()) ctx.out() << std::string(k.get_string()) << "\n";
    }
  }
  if (auto* keys = answer.if_contains("keys_b64"); keys && keys->is_array()) {
    for (const json::value& k : keys->get_array()) {
      if (k.is_string()) ctx.out() << Base64Decode(k.get_string()).value_or("") << "\n";
    }
  }
  return Status::Ok();
}

}  // namespace raftkv::ctl
