// lease_load: the load generator of `make bench`'s lease cells (bench/README.md, "Lease
// cells"), for raftkv's /v1/leases and etcd's v3 leases (through its JSON gateway, as the
// other etcd cells).
//
//   lease_load --system raftkv|etcd --addr HOST:PORT[,HOST:PORT..] [--leases 10000]
//              [--ttl 30] [--seconds 0] [--batch-ms 100] [--conns N] [--prefix lease/]
//              [--revoke 1] [--ids-out FILE] [--max-seconds 900]
//
// 1. Grants --leases leases of --ttl seconds and puts one key under each (`<prefix><n>`, like
//    a service registration), from 32 connections; prints {"granted":N,...} once all are.
// 2. Renews every lease once per TTL/3 (as etcd's Go client does), spread evenly over time:
//    renewal j of the sequence (lease j % N) is due at start + j * (TTL/3) / N, from the
//    start of step 1 (a lease not granted yet skips its turn).
//    - raftkv: every --batch-ms (100) one `POST /v1/leases/keepalive {"ids":[..]}` with the
//      ids that came due since the last batch (one log entry for the batch), over up to 4
//      keep-alive connections; ids due while every connection is busy join the next batch.
//    - etcd: one `POST /v3/lease/keepalive {"ID":..}` per renewal (the gateway maps its
//      bidirectional stream to one request, one answer), over a pool of --conns (64)
//      keep-alive connections; a renewal due while all are busy waits for the first free one.
//    A renewal fails when its request fails (socket error, status other than 200) or the
//    lease is gone (raftkv: its id in "not_found"; etcd: an answer without a TTL), or when a
//    lease's successful renewals are sent more than a TTL apart (it may have lapsed).
// 3. A line "mark" on standard input prints the statistics since the previous mark (or since
//    the renewals started) as one JSON object and starts a new phase; "pause" stops
//    scheduling renewals and "resume" goes on with the sequence where it stopped (no catch-up
//    burst: a pause adds its length to every lease's time between renewals); "stop", the end
//    of standard input, --seconds (when > 0) or --max-seconds print the last phase and stop.
// 4. With --revoke 1 (default) revokes every lease (its key goes with it) and prints
//    {"revoked":N,...}.
// With --ids-out FILE, writes "<id> <key>" per lease after step 1, for the driver's checks.
//
// One thread (Boost.Asio), so that the client's own cost is alike for both systems.
// Bounded: every wait has a deadline, and the whole run ends by --max-seconds.
#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "load_util.h"

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using bench::B64;
using bench::Endpoint;
using bench::HttpRequest;
using bench::UnB64;

namespace {

constexpr int kGrantConns = 32;
constexpr int kRaftkvRenewConns = 4;
constexpr int kMaxIdsPerBatch = 10000;  // raftkv's --max-keepalive-ids default
constexpr int kGrantAttempts = 20;      // per request, on a 503 or a socket error

struct Args {
  std::string system = "raftkv";
  std::vector<std::string> addrs;
  int leases = 10000;
  int ttl_s = 30;
  int seconds = 0;
  int batch_ms = 100;
  int conns = 64;
  std::string prefix = "lease/";
  bool revoke = true;
  std::string ids_out;
  int max_seconds = 900;
};

// The number after `"name":` in a JSON text, quoted or not (etcd quotes its 64-bit ids).
bool JsonNumber(std::string_view body, std::string_view name, uint64_t* out) {
  std::string pat = "\"" + std::string(name) + "\":";
  size_t p = body.find(pat);
  if (p == body.npos) return false;
  p += pat.size();
  if (p < body.size() && body[p] == '"') p++;
  auto [end, ec] = std::from_chars(body.data() + p, body.data() + body.size(), *out);
  return ec == std::errc() && end != body.data() + p;
}

// One keep-alive HTTP/1.1 connection, one request at a time. The answer is read whole
// (Content-Length or chunked) and handed to the callback with its status (0: socket error,
// after which the connection reconnects on the next request). A request on a reused
// connection that fails before any byte of an answer arrived is sent once more on a new
// connection, as HTTP clients do: the server may have closed the connection as idle
// (raftkv's --http-timeout-ms) just as the request went out. Every request here may be
// repeated (keepalives, revokes; a grant repeated would only leave a spare lease).
class Conn : public std::enable_shared_from_this<Conn> {
 public:
  using Done = std::function<void(int status, const std::string& body)>;

  Conn(asio::io_context& io, tcp::endpoint ep) : socket_(io), ep_(ep) {}

  bool busy() const { return busy_; }
  static uint64_t resent() { return resent_; }

  void Request(std::string req, Done done) {
    busy_ = true;
    req_ = std::move(req);
    done_ = std::move(done);
    reused_ = connected_;
    Go();
  }

  void Close() {
    error_code ignored;
    socket_.close(ignored);
  }

 private:
  void Go() {
    if (!connected_) {
      error_code ignored;
      socket_.close(ignored);
      raw_.clear();
      socket_.async_connect(ep_, [self = shared_from_this()](error_code ec) {
        if (ec) return self->Finish(0);
        self->connected_ = true;
        error_code ignored;
        self->socket_.set_option(tcp::no_delay(true), ignored);
        self->Send();
      });
      return;
    }
    Send();
  }

  void Send() {
    raw_.clear();
    asio::async_write(socket_, asio::buffer(req_),
                      [self = shared_from_this()](error_code ec, size_t) {
                        if (ec) return self->Finish(0);
                        self->Read();
                      });
  }

  void Read() {
    socket_.async_read_some(asio::buffer(buf_),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              if (ec) return self->Finish(0);
                              self->raw_.append(self->buf_, n);
                              if (!self->Complete()) return self->Read();
                              self->Finish(std::atoi(self->raw_.c_str() + 9));
                            });
  }

  // Whether raw_ holds a whole answer; then body_ holds its body.
  bool Complete() {
    size_t e = raw_.find("\r\n\r\n");
    if (e == std::string::npos) return false;
    std::string_view head(raw_.data(), e + 2);
    size_t cl = head.find("Content-Length: ");
    if (cl == head.npos) cl = head.find("content-length: ");
    if (cl != head.npos) {
      size_t len = std::strtoul(raw_.c_str() + cl + 16, nullptr, 10);
      if (raw_.size() < e + 4 + len) return false;
      body_ = raw_.substr(e + 4, len);
      return true;
    }
    // Chunked: decode from the start each time (answers here are small).
    body_.clear();
    size_t p = e + 4;
    while (true) {
      size_t le = raw_.find("\r\n", p);
      if (le == std::string::npos) return false;
      size_t n = std::strtoul(raw_.c_str() + p, nullptr, 16);
      if (n == 0) return raw_.size() >= le + 4;
      if (raw_.size() < le + 2 + n + 2) return false;
      body_.append(raw_, le + 2, n);
      p = le + 2 + n + 2;
    }
  }

  void Finish(int status) {
    if (status == 0 && reused_ && raw_.empty()) {
      reused_ = false;
      connected_ = false;
      resent_++;
      return Go();
    }
    if (status == 0) connected_ = false;
    busy_ = false;
    Done d = std::move(done_);
    done_ = nullptr;
    d(status, body_);
  }

  tcp::socket socket_;
  tcp::endpoint ep_;
  bool connected_ = false;
  bool busy_ = false;
  bool reused_ = false;  // the request went out on a connection that served one before
  static inline uint64_t resent_ = 0;
  std::string req_, raw_, body_;
  char buf_[16384];
  Done done_;
};

struct Lease {
  uint64_t id = 0;
  std::string key;
  Clock::time_point last_ok_sent;  // the send of the grant or the last successful renewal
};

// The statistics of one phase.
struct Phase {
  Clock::time_point start;
  uint64_t due = 0;       // renewals that came due
  uint64_t renewed = 0;   // renewals answered as done
  uint64_t requests = 0;  // keepalive requests answered (a raftkv batch is one)
  uint64_t socket_errors = 0, status_errors = 0, not_found = 0, lapsed = 0;
  double max_gap_s = 0;              // longest time between two successful renewals of a lease
  std::vector<uint32_t> latency_us;  // send to answer, per renewal
  std::vector<uint32_t> delay_us;    // due to answer, per renewal (includes waiting to be sent)
  // The first kMaxSlow requests slower than kSlowMs: seconds since the start, ms taken.
  std::vector<std::pair<double, double>> slow;
};

constexpr double kSlowMs = 100;
constexpr size_t kMaxSlow = 20;

double Pct(std::vector<uint32_t>* v, double p) {
  if (v->empty()) return 0;
  size_t k = std::min(v->size() - 1, static_cast<size_t>(p * v->size()));
  std::nth_element(v->begin(), v->begin() + k, v->end());
  return (*v)[k] / 1000.0;
}

class LeaseLoad {
 public:
  LeaseLoad(asio::io_context& io, const Args& a) : io_(io), args_(a), timer_(io) {}

  // Step 1 (the renewals start with it: see Schedule). Returns false (and prints why) if a
  // lease could not be granted.
  bool Grant() {
    auto t0 = Clock::now();
    std::vector<std::shared_ptr<Conn>> conns;
    for (int c = 0; c < kGrantConns; c++) {
      conns.push_back(std::make_shared<Conn>(io_, Endpoint(args_.addrs[c % args_.addrs.size()])));
    }
    for (auto& c : conns) GrantNext(c);
    auto deadline = t0 + std::chrono::seconds(300);
    while (grants_done_ < args_.leases && grant_error_.empty() && Clock::now() < deadline) {
      io_.run_for(std::chrono::milliseconds(20));
    }
    grant_s_ = std::chrono::duration<double>(Clock::now() - t0).count();
    if (grants_done_ < args_.leases || !grant_error_.empty()) {
      for (auto& c : conns) c->Close();
      io_.run_for(std::chrono::milliseconds(100));
      std::printf("{\"error\":\"granted %d of %d leases in %.1f s: %s\"}\n", grants_done_,
                  args_.leases, grant_s_, grant_error_.c_str());
      return false;
    }
    for (auto& c : conns) c->Close();
    if (!args_.ids_out.empty()) {
      std::ofstream f(args_.ids_out);
      for (auto& l : leases_) f << l.id << ' ' << l.key << '\n';
    }
    // The wall-clock time of t0_, to set the "slow" lists beside the servers' logs.
    double t0_unix =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() -
        std::chrono::duration<double>(Clock::now() - t0_).count();
    std::printf(
        "{\"granted\":%d,\"ttl_s\":%d,\"grant_s\":%.2f,\"grant_retries\":%d,"
        "\"t0_unix\":%.3f}\n",
        args_.leases, args_.ttl_s, grant_s_, grant_retries_, t0_unix);
    std::fflush(stdout);
    return true;
  }

  // Step 2: starts the renewals (they run while the io_context runs), before step 1, so that
  // a lease granted early is not left unrenewed until the last one is granted.
  void StartRenewing() {
    leases_.resize(args_.leases);
    for (int i = 0; i < args_.leases; i++) leases_[i].key = args_.prefix + std::to_string(i);
    int n = args_.system == "raftkv" ? kRaftkvRenewConns : args_.conns;
    for (int c = 0; c < n; c++) {
      renew_conns_.push_back(
          std::make_shared<Conn>(io_, Endpoint(args_.addrs[c % args_.addrs.size()])));
    }
    start_ = Clock::now();
    period_ns_ = static_cast<int64_t>(args_.ttl_s) * 1000000000LL / 3;
    phase_.start = start_;
    tick_ = args_.system == "raftkv" ? std::chrono::milliseconds(args_.batch_ms)
                                     : std::chrono::milliseconds(2);
    next_tick_ = start_;
    Tick();
  }

  // Step 3: prints the phase's statistics as one JSON line and starts a new phase.
  void Mark(const char* why) {
    Phase& p = phase_;
    double secs = std::chrono::duration<double>(Clock::now() - p.start).count();
    uint64_t failures = p.socket_errors + p.status_errors + p.not_found + p.lapsed;
    std::string slow;
    for (auto [at, ms] : p.slow) {
      char b[64];
      std::snprintf(b, sizeof b, "%s[%.3f,%.1f]", slow.empty() ? "" : ",", at, ms);
      slow += b;
    }
    std::printf(
        "{\"phase\":%d,\"end\":\"%s\",\"seconds\":%.3f,\"due\":%llu,\"renewed\":%llu,"
        "\"renewals_per_s\":%.1f,\"requests\":%llu,\"failures\":%llu,\"socket_errors\":%llu,"
        "\"status_errors\":%llu,\"not_found\":%llu,\"lapsed\":%llu,\"max_gap_s\":%.3f,"
        "\"in_flight_or_queued\":%llu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
        "\"max_ms\":%.3f,\"delay_p50_ms\":%.3f,\"delay_p99_ms\":%.3f,\"slow\":[%s]}\n",
        phase_no_, why, secs, ull(p.due), ull(p.renewed), p.renewed / std::max(secs, 1e-9),
        ull(p.requests), ull(failures), ull(p.socket_errors), ull(p.status_errors),
        ull(p.not_found), ull(p.lapsed), p.max_gap_s, ull(queue_.size() + in_flight_),
        Pct(&p.latency_us, 0.5), Pct(&p.latency_us, 0.99), Pct(&p.latency_us, 0.999),
        Pct(&p.latency_us, 1.0), Pct(&p.delay_us, 0.5), Pct(&p.delay_us, 0.99), slow.c_str());
    std::fflush(stdout);
    phase_ = Phase{};
    phase_.start = Clock::now();
    phase_no_++;
  }

  void Pause() {
    if (paused_) return;
    paused_ = true;
    paused_at_ = Clock::now();
  }
  void Resume() {
    if (!paused_) return;
    paused_ = false;
    start_ += Clock::now() - paused_at_;
  }

  // Stops scheduling renewals and waits (bounded) for those in flight.
  void StopRenewing() {
    stopped_ = true;
    timer_.cancel();
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (in_flight_ > 0 && Clock::now() < deadline) io_.run_for(std::chrono::milliseconds(10));
    for (auto& c : renew_conns_) c->Close();
  }

  // Step 4.
  void RevokeAll() {
    auto t0 = Clock::now();
    std::vector<std::shared_ptr<Conn>> conns;
    for (int c = 0; c < kGrantConns; c++) {
      conns.push_back(std::make_shared<Conn>(io_, Endpoint(args_.addrs[c % args_.addrs.size()])));
    }
    next_revoke_ = 0;
    for (auto& c : conns) RevokeNext(c);
    auto deadline = t0 + std::chrono::seconds(120);
    while (revokes_done_ < args_.leases && Clock::now() < deadline) {
      io_.run_for(std::chrono::milliseconds(20));
    }
    for (auto& c : conns) c->Close();
    std::printf(
        "{\"revoked\":%d,\"revoke_errors\":%d,\"first_revoke_error\":\"%s\",\"revoke_s\":%.2f,"
        "\"requests_resent\":%llu}\n",
        revoked_, revokes_done_ - revoked_, revoke_error_.c_str(),
        std::chrono::duration<double>(Clock::now() - t0).count(), ull(Conn::resent()));
    std::fflush(stdout);
  }

 private:
  static unsigned long long ull(uint64_t v) { return static_cast<unsigned long long>(v); }

  // --- granting -------------------------------------------------------------------------

  void GrantNext(const std::shared_ptr<Conn>& c) {
    if (next_grant_ >= args_.leases || !grant_error_.empty()) return;
    GrantOne(c, next_grant_++, 0);
  }

  void GrantOne(const std::shared_ptr<Conn>& c, int i, int attempt) {
    Lease& l = leases_[i];
    l.last_ok_sent = Clock::now();
    std::string req =
        args_.system == "raftkv"
            ? HttpRequest("POST", "/v1/leases", "{\"ttl\":" + std::to_string(args_.ttl_s) + "}")
            : HttpRequest("POST", "/v3/lease/grant",
                          "{\"TTL\":" + std::to_string(args_.ttl_s) + "}");
    c->Request(std::move(req), [this, c, i, attempt](int status, const std::string& body) {
      uint64_t id = 0;
      bool ok = (status == 200 || status == 201) &&
                JsonNumber(body, args_.system == "raftkv" ? "id" : "ID", &id) && id != 0;
      if (!ok) return GrantRetry(c, i, attempt, status, body, /*put=*/false);
      leases_[i].id = id;
      PutOne(c, i, 0);
    });
  }

  void PutOne(const std::shared_ptr<Conn>& c, int i, int attempt) {
    const Lease& l = leases_[i];
    std::string value = "10.0.0." + std::to_string(i % 250) + ":8080";
    std::string req =
        args_.system == "raftkv"
            ? HttpRequest("PUT", "/v1/kv/" + l.key,
                          "{\"value\":\"" + value + "\",\"lease\":" + std::to_string(l.id) + "}")
            : HttpRequest("POST", "/v3/kv/put",
                          "{\"key\":\"" + B64(l.key) + "\",\"value\":\"" + B64(value) +
                              "\",\"lease\":\"" + std::to_string(l.id) + "\"}");
    c->Request(std::move(req), [this, c, i, attempt](int status, const std::string& body) {
      if (status != 200) return GrantRetry(c, i, attempt, status, body, /*put=*/true);
      grants_done_++;
      GrantNext(c);
    });
  }

  // A 503 or a socket error is retried after 100 ms; anything else ends step 1.
  void GrantRetry(const std::shared_ptr<Conn>& c, int i, int attempt, int status,
                  const std::string& body, bool put) {
    if ((status == 0 || status == 503) && attempt + 1 < kGrantAttempts) {
      grant_retries_++;
      auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
      t->async_wait([this, c, i, attempt, put, t](error_code) {
        put ? PutOne(c, i, attempt + 1) : GrantOne(c, i, attempt + 1);
      });
      return;
    }
    if (grant_error_.empty()) {
      std::string b = body.substr(0, 120);
      std::replace(b.begin(), b.end(), '"', '\'');
      grant_error_ = std::string(put ? "put" : "grant") + " of lease " + std::to_string(i) +
                     ": HTTP " + std::to_string(status) + " " + b;
    }
  }

  // --- renewing -------------------------------------------------------------------------

  struct Due {
    int lease;
    Clock::time_point due;
  };

  void Tick() {
    if (stopped_) return;
    next_tick_ += tick_;
    timer_.expires_at(next_tick_);
    timer_.async_wait([this](error_code ec) {
      if (ec || stopped_) return;
      Schedule();
      Dispatch();
      Tick();
    });
  }

  // Queues the renewals that came due: renewal j is due at start + j * period / N. A lease
  // not yet granted skips its turn: its next one comes at most a period after its grant.
  void Schedule() {
    if (paused_) return;
    int64_t elapsed =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start_).count();
    const uint64_t n = args_.leases;
    // Renewal j is due when j * period / N <= elapsed.
    while (static_cast<int64_t>((static_cast<__int128>(next_renewal_) * period_ns_) / n) <=
           elapsed) {
      auto due = start_ + std::chrono::nanoseconds(static_cast<int64_t>(
                              (static_cast<__int128>(next_renewal_) * period_ns_) / n));
      int lease = static_cast<int>(next_renewal_ % n);
      next_renewal_++;
      if (leases_[lease].id == 0) continue;
      queue_.push_back({lease, due});
      phase_.due++;
    }
  }

  void Dispatch() {
    for (auto& c : renew_conns_) {
      if (queue_.empty()) return;
      if (c->busy()) continue;
      if (args_.system == "raftkv") {
        SendBatch(c);
      } else {
        SendOne(c);
      }
    }
  }

  void SendBatch(const std::shared_ptr<Conn>& c) {
    auto batch = std::make_shared<std::vector<Due>>();
    std::string body = "{\"ids\":[";
    while (!queue_.empty() && batch->size() < kMaxIdsPerBatch) {
      if (!batch->empty()) body += ',';
      body += std::to_string(leases_[queue_.front().lease].id);
      batch->push_back(queue_.front());
      queue_.pop_front();
    }
    body += "]}";
    auto sent = Clock::now();
    in_flight_ += batch->size();
    c->Request(HttpRequest("POST", "/v1/leases/keepalive", body),
               [this, batch, sent](int status, const std::string& answer) {
                 in_flight_ -= batch->size();
                 auto now = Clock::now();
                 phase_.requests++;
                 NoteSlow(sent, now);
                 // not_found names the ids of the batch that no longer exist.
                 std::vector<uint64_t> gone;
                 if (status == 200) {
                   size_t p = answer.find("\"not_found\":[");
                   if (p == answer.npos) {
                     status = -1;  // An answer without the field: counted as an error.
                   } else {
                     p += 13;
                     while (p < answer.size() && answer[p] != ']') {
                       uint64_t id = 0;
                       auto [end, ec] =
                           std::from_chars(answer.data() + p, answer.data() + answer.size(), id);
                       if (ec != std::errc()) break;
                       gone.push_back(id);
                       p = end - answer.data();
                       if (p < answer.size() && answer[p] == ',') p++;
                     }
                   }
                 }
                 for (const Due& d : *batch) {
                   bool lost =
                       std::find(gone.begin(), gone.end(), leases_[d.lease].id) != gone.end();
                   Record(d, sent, now, status, lost);
                 }
                 Dispatch();
               });
  }

  void SendOne(const std::shared_ptr<Conn>& c) {
    Due d = queue_.front();
    queue_.pop_front();
    auto sent = Clock::now();
    in_flight_++;
    c->Request(HttpRequest("POST", "/v3/lease/keepalive",
                           "{\"ID\":\"" + std::to_string(leases_[d.lease].id) + "\"}"),
               [this, d, sent](int status, const std::string& answer) {
                 in_flight_--;
                 phase_.requests++;
                 NoteSlow(sent, Clock::now());
                 // etcd answers a lease it does not know with 200 and no TTL (TTL 0).
                 uint64_t ttl = 0;
                 bool lost = status == 200 && (!JsonNumber(answer, "TTL", &ttl) || ttl == 0);
                 Record(d, sent, Clock::now(), status, lost);
                 Dispatch();
               });
  }

  void NoteSlow(Clock::time_point sent, Clock::time_point now) {
    double ms = std::chrono::duration<double, std::milli>(now - sent).count();
    if (ms < kSlowMs || phase_.slow.size() >= kMaxSlow) return;
    phase_.slow.push_back({std::chrono::duration<double>(sent - t0_).count(), ms});
  }

  void Record(const Due& d, Clock::time_point sent, Clock::time_point now, int status, bool lost) {
    if (status == 0) {
      phase_.socket_errors++;
      return;
    }
    if (status != 200) {
      phase_.status_errors++;
      return;
    }
    if (lost) {
      phase_.not_found++;
      return;
    }
    Lease& l = leases_[d.lease];
    double gap = std::chrono::duration<double>(sent - l.last_ok_sent).count();
    phase_.max_gap_s = std::max(phase_.max_gap_s, gap);
    if (gap > args_.ttl_s) phase_.lapsed++;
    l.last_ok_sent = sent;
    phase_.renewed++;
    auto us = [](Clock::duration x) {
      return static_cast<uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(x).count());
    };
    phase_.latency_us.push_back(us(now - sent));
    phase_.delay_us.push_back(us(now - d.due));
  }

  // --- revoking -------------------------------------------------------------------------

  void RevokeNext(const std::shared_ptr<Conn>& c) {
    if (next_revoke_ >= args_.leases) return;
    const Lease& l = leases_[next_revoke_++];
    std::string req =
        args_.system == "raftkv"
            ? HttpRequest("DELETE", "/v1/leases/" + std::to_string(l.id), "")
            : HttpRequest("POST", "/v3/lease/revoke", "{\"ID\":\"" + std::to_string(l.id) + "\"}");
    c->Request(std::move(req), [this, c](int status, const std::string& body) {
      revokes_done_++;
      if (status == 200) {
        revoked_++;
      } else if (revoke_error_.empty()) {
        revoke_error_ = "HTTP " + std::to_string(status) + " " + body.substr(0, 100);
        std::replace(revoke_error_.begin(), revoke_error_.end(), '"', '\'');
        std::replace(revoke_error_.begin(), revoke_error_.end(), '\\', '/');
        std::replace(revoke_error_.begin(), revoke_error_.end(), '\n', ' ');
      }
      RevokeNext(c);
    });
  }

  asio::io_context& io_;
  const Args& args_;
  asio::steady_timer timer_;
  std::vector<Lease> leases_;
  // Granting.
  int next_grant_ = 0, grants_done_ = 0, grant_retries_ = 0;
  double grant_s_ = 0;
  std::string grant_error_;
  // Renewing.
  std::vector<std::shared_ptr<Conn>> renew_conns_;
  Clock::time_point start_, next_tick_;
  const Clock::time_point t0_ = Clock::now();  // the "slow" list's time origin
  Clock::duration tick_{};
  int64_t period_ns_ = 0;
  uint64_t next_renewal_ = 0;
  std::deque<Due> queue_;
  uint64_t in_flight_ = 0;
  bool stopped_ = false;
  bool paused_ = false;
  Clock::time_point paused_at_;
  Phase phase_;
  int phase_no_ = 0;
  // Revoking.
  int next_revoke_ = 0, revokes_done_ = 0, revoked_ = 0;
  std::string revoke_error_;
};

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--system") {
      a->system = v;
    } else if (k == "--addr") {
      size_t s = 0, e;
      while ((e = v.find(',', s)) != std::string::npos) {
        a->addrs.push_back(v.substr(s, e - s));
        s = e + 1;
      }
      a->addrs.push_back(v.substr(s));
    } else if (k == "--leases") {
      a->leases = std::stoi(v);
    } else if (k == "--ttl") {
      a->ttl_s = std::stoi(v);
    } else if (k == "--seconds") {
      a->seconds = std::stoi(v);
    } else if (k == "--batch-ms") {
      a->batch_ms = std::stoi(v);
    } else if (k == "--conns") {
      a->conns = std::stoi(v);
    } else if (k == "--prefix") {
      a->prefix = v;
    } else if (k == "--revoke") {
      a->revoke = v != "0";
    } else if (k == "--ids-out") {
      a->ids_out = v;
    } else if (k == "--max-seconds") {
      a->max_seconds = std::stoi(v);
    } else {
      return false;
    }
  }
  return argc % 2 == 1 && !a->addrs.empty() && (a->system == "raftkv" || a->system == "etcd") &&
         a->leases > 0 && a->ttl_s >= 3 && a->seconds >= 0 && a->batch_ms > 0 && a->conns > 0 &&
         a->max_seconds > 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!ParseArgs(argc, argv, &a)) {
    std::cerr << "usage: lease_load --system raftkv|etcd --addr HOST:PORT[,..] [--leases N] "
                 "[--ttl S] [--seconds S] [--batch-ms MS] [--conns N] [--prefix P] "
                 "[--revoke 0|1] [--ids-out FILE] [--max-seconds S]\n";
    return 2;
  }
  auto t0 = Clock::now();
  asio::io_context io(1);
  // run_for() returns at once on a context that ran out of work: keep it working throughout.
  auto guard = asio::make_work_guard(io);
  LeaseLoad load(io, a);
  load.StartRenewing();
  if (!load.Grant()) return 1;

  // Standard input: "mark", "pause", "resume" lines and the end ("stop" or EOF), read on a
  // thread of their own and taken in order by the main loop. The thread is detached: main
  // may end first (--seconds).
  std::mutex mu;
  std::deque<std::string> commands;  // guarded by mu
  std::thread([&mu, &commands] {
    std::string line;
    while (std::getline(std::cin, line) && line != "stop") {
      std::lock_guard<std::mutex> lock(mu);
      commands.push_back(line);
    }
    std::lock_guard<std::mutex> lock(mu);
    commands.push_back("stop");
  }).detach();

  auto end = a.seconds > 0 ? Clock::now() + std::chrono::seconds(a.seconds)
                           : t0 + std::chrono::seconds(a.max_seconds);
  end = std::min(end, t0 + std::chrono::seconds(a.max_seconds));
  const char* why = a.seconds > 0 ? "seconds" : "max_seconds";
  bool stop = false;
  while (!stop && Clock::now() < end) {
    io.run_for(std::chrono::milliseconds(10));
    std::deque<std::string> todo;
    {
      std::lock_guard<std::mutex> lock(mu);
      todo.swap(commands);
    }
    for (const std::string& c : todo) {
      if (c == "mark") load.Mark("mark");
      if (c == "pause") load.Pause();
      if (c == "resume") load.Resume();
      if (c == "stop" && a.seconds == 0) {
        why = "stop";
        stop = true;
        break;
      }
    }
  }
  load.Mark(why);
  load.StopRenewing();
  if (a.revoke) load.RevokeAll();
  std::fflush(stdout);
  // The stdin thread may still be blocked in a read: leave without joining it.
  std::_Exit(0);
}
