// watch_load: the load generator of `make bench`'s watch cells (bench/README.md), for raftkv's
// /v1/watch streams and etcd's v3 watches (through its JSON gateway, as the other etcd cells).
//
//   watch_load fanout --system raftkv|etcd --watch HOST:PORT --write HOST:PORT
//              [--watchers 1000] [--rate 200] [--seconds 10] [--prefix fan/]
//     opens the watchers on a prefix, waits until every one is created, then writes at a
//     fixed rate (values are the send time in ns) and measures, per delivered event, the time
//     from the write's send to its arrival. Prints one JSON object.
//   watch_load idle --system raftkv|etcd --watch HOST:PORT [--watchers 10000]
//     opens watchers on keys nobody writes, prints {"created":N} once every one is created,
//     and holds them until its standard input closes.
//
// One thread (Boost.Asio), so that the client's own cost is the same for both systems. Bounded:
// every run ends after --seconds plus a grace period, whatever the servers do.
#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
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

struct Args {
  std::string mode;
  std::string system = "raftkv";
  std::string watch_addr;
  std::string write_addr;
  int watchers = 1000;
  int rate = 200;
  int seconds = 10;
  std::string prefix = "fan/";
};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// Removes the chunked framing as bytes arrive.
class Dechunker {
 public:
  // Appends the body bytes in `in` (consumed) to *out.
  void Feed(std::string* in, std::string* out) {
    while (!in->empty()) {
      if (left_ == 0) {
        size_t e = in->find("\r\n");
        if (e == std::string::npos) return;
        if (e == 0) {  // The CRLF after a chunk's data.
          in->erase(0, 2);
          continue;
        }
        left_ = std::strtoul(in->substr(0, e).c_str(), nullptr, 16);
        in->erase(0, e + 2);
        if (left_ == 0) {
          done_ = true;
          in->clear();
          return;
        }
      }
      size_t n = std::min(left_, in->size());
      out->append(*in, 0, n);
      in->erase(0, n);
      left_ -= n;
    }
  }
  bool done() const { return done_; }

 private:
  size_t left_ = 0;
  bool done_ = false;
};

struct Stats {
  uint64_t created = 0;
  uint64_t events = 0;
  uint64_t failed = 0;
  std::vector<uint32_t> latency_us;
  bool measuring = false;
};

// One watch stream: parses its messages and records each event's latency.
class Watcher : public std::enable_shared_from_this<Watcher> {
 public:
  Watcher(asio::io_context& io, const Args& a, Stats* stats, std::string key, bool prefix)
      : socket_(io), args_(a), stats_(stats), key_(std::move(key)), prefix_(prefix) {}

  void Start(const tcp::endpoint& ep) {
    socket_.async_connect(ep, [self = shared_from_this()](error_code ec) {
      if (ec) return self->Fail();
      self->socket_.set_option(tcp::no_delay(true));
      self->req_ = self->Request();
      asio::async_write(self->socket_, asio::buffer(self->req_), [self](error_code ec, size_t) {
        if (ec) return self->Fail();
        self->Read();
      });
    });
  }
  void Stop() {
    error_code ignored;
    socket_.close(ignored);
  }

 private:
  std::string Request() {
    if (args_.system == "raftkv") {
      return HttpRequest("GET", "/v1/watch/" + key_ + (prefix_ ? "?prefix&stream" : "?stream"), "");
    }
    std::string end = key_;
    end.back()++;
    std::string body = "{\"create_request\":{\"key\":\"" + B64(key_) + "\"" +
                       (prefix_ ? ",\"range_end\":\"" + B64(end) + "\"" : "") + "}}";
    return HttpRequest("POST", "/v3/watch", body);
  }

  void Read() {
    socket_.async_read_some(asio::buffer(buf_),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              if (ec) return self->Fail();
                              self->raw_.append(self->buf_, n);
                              self->Parse();
                              self->Read();
                            });
  }

  void Parse() {
    if (!head_done_) {
      size_t e = raw_.find("\r\n\r\n");
      if (e == std::string::npos) return;
      if (raw_.compare(0, 12, "HTTP/1.1 200") != 0) return Fail();
      raw_.erase(0, e + 4);
      head_done_ = true;
    }
    dechunk_.Feed(&raw_, &body_);
    size_t start = 0, nl;
    while ((nl = body_.find('\n', start)) != std::string::npos) {
      OnMessage(std::string_view(body_).substr(start, nl - start));
      start = nl + 1;
    }
    body_.erase(0, start);
  }

  void OnMessage(std::string_view m) {
    if (!created_) {
      bool c = args_.system == "raftkv" ? m.find("\"type\":\"created\"") != m.npos
                                        : m.find("\"created\":true") != m.npos;
      if (c) {
        created_ = true;
        stats_->created++;
      }
      return;
    }
    int64_t now = NowNs();
    size_t pos = 0;
    static constexpr std::string_view kValue = "\"value\":\"";
    while ((pos = m.find(kValue, pos)) != m.npos) {
      pos += kValue.size();
      size_t end = m.find('"', pos);
      if (end == m.npos) break;
      std::string v = args_.system == "raftkv" ? std::string(m.substr(pos, end - pos))
                                               : UnB64(m.substr(pos, end - pos));
      int64_t sent = 0;
      std::from_chars(v.data(), v.data() + v.size(), sent);
      if (stats_->measuring && sent > 0) {
        stats_->events++;
        stats_->latency_us.push_back(
            static_cast<uint32_t>(std::max<int64_t>(0, now - sent) / 1000));
      }
      pos = end;
    }
  }

  void Fail() {
    if (failed_) return;
    failed_ = true;
    stats_->failed++;
  }

  tcp::socket socket_;
  const Args& args_;
  Stats* stats_;
  std::string key_;
  bool prefix_;
  std::string req_;
  char buf_[16384];
  std::string raw_, body_;
  Dechunker dechunk_;
  bool head_done_ = false;
  bool created_ = false;
  bool failed_ = false;
};

// Writes at a fixed rate over a few keep-alive connections; a write whose connection is
// still busy is counted as behind, not queued.
class Writer : public std::enable_shared_from_this<Writer> {
 public:
  Writer(asio::io_context& io, const Args& a) : io_(io), args_(a), timer_(io) {}

  void Start(const tcp::endpoint& ep, int conns) {
    for (int i = 0; i < conns; i++) {
      auto c = std::make_shared<Conn>(io_);
      c->socket.connect(ep);
      c->socket.set_option(tcp::no_delay(true));
      conns_.push_back(c);
    }
    next_ = Clock::now();
    Tick();
  }
  void Stop() {
    stopped_ = true;
    timer_.cancel();
  }
  uint64_t sent() const { return sent_; }
  uint64_t ok() const { return ok_; }
  uint64_t behind() const { return behind_; }

 private:
  struct Conn {
    explicit Conn(asio::io_context& io) : socket(io) {}
    tcp::socket socket;
    bool busy = false;
    std::string req, raw;
    char buf[4096];
  };

  void Tick() {
    if (stopped_) return;
    next_ += std::chrono::nanoseconds(1000000000LL / args_.rate);
    timer_.expires_at(next_);
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (ec) return;
      self->Send();
      self->Tick();
    });
  }

  void Send() {
    auto it = std::find_if(conns_.begin(), conns_.end(), [](auto& c) { return !c->busy; });
    if (it == conns_.end()) {
      behind_++;
      return;
    }
    auto c = *it;
    c->busy = true;
    std::string key = args_.prefix + "k" + std::to_string(sent_ % 100);
    std::string value = std::to_string(NowNs());
    c->req = args_.system == "raftkv"
                 ? HttpRequest("PUT", "/v1/kv/" + key, "{\"value\":\"" + value + "\"}")
                 : HttpRequest("POST", "/v3/kv/put",
                               "{\"key\":\"" + B64(key) + "\",\"value\":\"" + B64(value) + "\"}");
    sent_++;
    asio::async_write(c->socket, asio::buffer(c->req),
                      [self = shared_from_this(), c](error_code ec, size_t) {
                        if (ec) return;
                        c->raw.clear();
                        self->ReadAnswer(c);
                      });
  }

  // Reads one answer (Content-Length, or chunked until its last chunk).
  void ReadAnswer(const std::shared_ptr<Conn>& c) {
    c->socket.async_read_some(asio::buffer(c->buf),
                              [self = shared_from_this(), c](error_code ec, size_t n) {
                                if (ec) return;
                                c->raw.append(c->buf, n);
                                size_t e = c->raw.find("\r\n\r\n");
                                if (e == std::string::npos) return self->ReadAnswer(c);
                                bool complete = false;
                                size_t cl = c->raw.find("Content-Length: ");
                                if (cl != std::string::npos && cl < e) {
                                  size_t len = std::strtoul(c->raw.c_str() + cl + 16, nullptr, 10);
                                  complete = c->raw.size() >= e + 4 + len;
                                } else {
                                  complete = c->raw.find("\r\n0\r\n\r\n", e) != std::string::npos ||
                                             c->raw.compare(e + 4, 3, "0\r\n") == 0;
                                }
                                if (!complete) return self->ReadAnswer(c);
                                if (c->raw.compare(0, 12, "HTTP/1.1 200") == 0) self->ok_++;
                                c->busy = false;
                              });
  }

  asio::io_context& io_;
  const Args& args_;
  asio::steady_timer timer_;
  std::vector<std::shared_ptr<Conn>> conns_;
  Clock::time_point next_;
  bool stopped_ = false;
  uint64_t sent_ = 0, ok_ = 0, behind_ = 0;
};

bool ParseArgs(int argc, char** argv, Args* a) {
  if (argc < 2) return false;
  a->mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--system")
      a->system = v;
    else if (k == "--watch")
      a->watch_addr = v;
    else if (k == "--write")
      a->write_addr = v;
    else if (k == "--watchers")
      a->watchers = std::stoi(v);
    else if (k == "--rate")
      a->rate = std::stoi(v);
    else if (k == "--seconds")
      a->seconds = std::stoi(v);
    else if (k == "--prefix")
      a->prefix = v;
    else
      return false;
  }
  return (a->mode == "fanout" || a->mode == "idle") && !a->watch_addr.empty() &&
         (a->mode == "idle" || !a->write_addr.empty()) &&
         (a->system == "raftkv" || a->system == "etcd") && a->watchers > 0 && a->rate > 0 &&
         a->seconds > 0;
}

// Runs the io_context until `done` or the deadline.
template <typename F>
bool RunUntil(asio::io_context& io, Clock::time_point deadline, F done) {
  while (!done() && Clock::now() < deadline) io.run_for(std::chrono::milliseconds(20));
  return done();
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!ParseArgs(argc, argv, &a)) {
    std::cerr << "usage: watch_load fanout|idle --system raftkv|etcd --watch HOST:PORT "
                 "[--write HOST:PORT] [--watchers N] [--rate N] [--seconds N] [--prefix P]\n";
    return 2;
  }
  asio::io_context io(1);
  Stats stats;
  std::vector<std::shared_ptr<Watcher>> ws;
  tcp::endpoint wep = Endpoint(a.watch_addr);
  for (int i = 0; i < a.watchers; i++) {
    bool fan = a.mode == "fanout";
    ws.push_back(std::make_shared<Watcher>(
        io, a, &stats, fan ? a.prefix : "idle/" + std::to_string(i) + "/", fan));
    ws.back()->Start(wep);
    // Do not flood the listen backlog: let connections complete in steps.
    if (i % 256 == 255) io.run_for(std::chrono::milliseconds(5));
  }
  auto deadline = Clock::now() + std::chrono::seconds(60);
  if (!RunUntil(io, deadline, [&] { return stats.created + stats.failed >= ws.size(); }) ||
      stats.failed > 0) {
    std::printf("{\"error\":\"only %llu of %d watchers created (%llu failed)\"}\n",
                static_cast<unsigned long long>(stats.created), a.watchers,
                static_cast<unsigned long long>(stats.failed));
    return 1;
  }
  if (a.mode == "idle") {
    std::printf("{\"created\":%llu}\n", static_cast<unsigned long long>(stats.created));
    std::fflush(stdout);
    // Hold the watchers (serving their connections) until stdin closes.
    std::thread reader([&io] {
      char c;
      while (std::cin.get(c)) {
      }
      asio::post(io, [&io] { io.stop(); });
    });
    auto guard = asio::make_work_guard(io);
    io.run();
    reader.join();
    return 0;
  }
  auto writer = std::make_shared<Writer>(io, a);
  writer->Start(Endpoint(a.write_addr), 16);
  stats.measuring = true;
  auto t0 = Clock::now();
  RunUntil(io, t0 + std::chrono::seconds(a.seconds), [] { return false; });
  writer->Stop();
  // Events of the last writes still on their way.
  // (A write answered meanwhile counts: its events are expected too.)
  auto want_now = [&] { return writer->ok() * static_cast<uint64_t>(a.watchers); };
  RunUntil(io, Clock::now() + std::chrono::seconds(5), [&] { return stats.events >= want_now(); });
  const uint64_t want = want_now();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::sort(stats.latency_us.begin(), stats.latency_us.end());
  auto pct = [&](double p) -> double {
    if (stats.latency_us.empty()) return 0;
    return stats.latency_us[std::min(stats.latency_us.size() - 1,
                                     static_cast<size_t>(p * stats.latency_us.size()))] /
           1000.0;
  };
  std::printf(
      "{\"watchers\":%d,\"writes\":%llu,\"writes_ok\":%llu,\"writes_behind\":%llu,"
      "\"events\":%llu,\"events_expected\":%llu,\"seconds\":%.3f,\"events_per_s\":%.0f,"
      "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"failed_watchers\":%llu}\n",
      a.watchers, static_cast<unsigned long long>(writer->sent()),
      static_cast<unsigned long long>(writer->ok()),
      static_cast<unsigned long long>(writer->behind()),
      static_cast<unsigned long long>(stats.events), static_cast<unsigned long long>(want), secs,
      stats.events / secs, pct(0.5), pct(0.99), static_cast<unsigned long long>(stats.failed));
  for (auto& w : ws) w->Stop();
  return 0;
}
