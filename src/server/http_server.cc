#include "server/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <optional>

#include "kv/command.h"
#include "server/json.h"
#include "server/v1.h"
#include "server/watch_http.h"
#include "transport/transport.h"

namespace raftkv::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using asio::ip::tcp;
using boost::system::error_code;
using SessionStream = beast::basic_stream<tcp, SessionExecutor>;

namespace {

constexpr std::string_view kContentType = "application/json; charset=utf-8";
constexpr std::string_view kHopsHeader = "X-Raftkv-Hops";
constexpr std::string_view kRequestIdHeader = "X-Raftkv-Request-Id";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// True if the query string has `name` as a flag: "stale", "stale=", or
// "stale=<anything but false/0/no>".
// Whether `origin` is one of the comma-separated `allowed` ("*": any).
bool OriginAllowed(std::string_view allowed, std::string_view origin) {
  while (!allowed.empty()) {
    size_t comma = allowed.find(',');
    std::string_view one = allowed.substr(0, comma);
    allowed = comma == std::string_view::npos ? std::string_view() : allowed.substr(comma + 1);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    if (one == "*" || one == origin) return true;
  }
  return false;
}

bool QueryFlag(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = param.find('=');
    if (param.substr(0, eq) != name) continue;
    if (eq == std::string_view::npos) return true;
    std::string_view v = param.substr(eq + 1);
    return v != "false" && v != "0" && v != "no";
  }
  return false;
}

// Parses a body of the form {"value": "<string>"} (other fields ignored).
bool ParseValueBody(std::string_view body, std::string* value, std::string* error) {
  unsigned char buf[4096];
  json::monotonic_resource mr(buf);
  error_code ec;
  json::value v = json::parse(body, ec, &mr);
  if (ec) {
    *error = "malformed JSON body: " + ec.message();
    return false;
  }
  if (!v.is_object()) {
    *error = "the body must be a JSON object {\"value\": \"...\"}";
    return false;
  }
  const json::value* f = v.get_object().if_contains("value");
  if (f == nullptr) {
    *error = "missing \"value\"";
    return false;
  }
  if (!f->is_string()) {
    *error = "\"value\" must be a string";
    return false;
  }
  value->assign(f->get_string().data(), f->get_string().size());
  return true;
}

bool ParseRequestId(std::string_view s, kv::RequestId* id) {
  size_t dash = s.find('-');
  if (dash == std::string_view::npos) return false;
  auto a = std::from_chars(s.data(), s.data() + dash, id->client, 16);
  auto b = std::from_chars(s.data() + dash + 1, s.data() + s.size(), id->seq, 10);
  return a.ec == std::errc() && a.ptr == s.data() + dash && b.ec == std::errc() &&
         b.ptr == s.data() + s.size() && id->client != 0;
}

std::string FormatRequestId(kv::RequestId id) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%llx-%llu", static_cast<unsigned long long>(id.client),
                static_cast<unsigned long long>(id.seq));
  return buf;
}

const char* RoleString(raft::MemberRole r) {
  return r == raft::MemberRole::kVoter ? "voter" : "learner";
}

json::value MemberJson(const MemberInfo& info) {
  json::object o;
  o["id"] = info.name;
  o["node_id"] = std::to_string(info.id);
  o["raft"] = info.raft;
  o["http"] = info.http;
  return o;
}

json::object TransportJson(const transport::Stats& t) {
  json::object o;
  o["sent_msgs"] = t.sent_msgs;
  o["dropped_msgs"] = t.dropped_msgs;
  o["received_msgs"] = t.received_msgs;
  o["bad_frames"] = t.bad_frames;
  o["connects"] = t.connects;
  o["refused_other_cluster"] = t.refused_other_cluster;
  return o;
}

std::string StatusJson(const StatusReport& r, const HttpServer::Shared& shared) {
  const ClusterView& view = *r.view;
  json::object o;
  const MemberView* self = view.Find(view.self);
  o["id"] = self ? self->info.name : "";
  o["node_id"] = std::to_string(r.node.id);
  // A string, as node_id: JSON numbers lose precision past 2^53.
  o["cluster_id"] = std::to_string(shared.options.cluster_id);
  // The command language this node speaks (kv/command.h); members read it
  // to decide when the newer commands may be proposed (upgrade.h).
  o["proto"] = kv::kProtoVersion;
  if (shared.proto != nullptr) o["cluster_proto"] = shared.proto->ClusterProto();
  o["role"] = raft::RoleName(r.node.role);
  o["term"] = r.node.term;
  if (r.node.leader != raft::kNoNode) {
    const MemberView* l = view.Find(r.node.leader);
    MemberInfo info = l ? l->info : MemberInfo{r.node.leader, "", "", ""};
    info.id = r.node.leader;
    o["leader"] = MemberJson(info);
  } else {
    o["leader"] = nullptr;
  }
  o["commit"] = r.node.commit;
  o["applied"] = r.revision;
  o["last_index"] = r.node.last_index;
  o["snapshot_index"] = r.snapshot_index;
  o["snapshots_taken"] = r.snapshots_taken;
  o["snapshots_installed"] = r.snapshots_installed;
  o["keys"] = r.keys;
  o["leases"] = {{"count", r.leases},
                 {"expiries_proposed", r.lease_expiries_proposed},
                 {"expired", r.leases_expired}};
  o["pending_writes"] = r.pending_writes;
  o["pending_reads"] = r.pending_reads;
  o["storage"] = r.storage;
  o["durable"] = r.storage_durable;
  o["health"] = r.health;
  o["degraded"] = r.degraded;
  o["snapshot_failures"] = r.snapshot_failures;
  o["snapshot_error"] = r.snapshot_error;
  o["admitted"] = r.admitted;
  json::array members;
  for (const raft::Member& m : r.node.conf.members) {
    MemberInfo info;
    info.id = m.id;
    DecodeMemberContext(m.context, &info);
    json::object mo = MemberJson(info).as_object();
    mo["role"] = RoleString(m.role);
    mo["promote"] = m.promote;
    for (const raft::PeerStatus& p : r.node.peers) {
      if (p.id == m.id) mo["match"] = p.match;
    }
    members.push_back(std::move(mo));
  }
  o["members"] = std::move(members);
  if (shared.transport != nullptr) o["transport"] = TransportJson(shared.transport->stats());
  if (shared.watches != nullptr) {
    const watch::History& h = shared.watches->history();
    json::object w;
    w["watchers"] = shared.watches->watchers();
    w["max_watchers"] = shared.watches->options().max_watchers;
    w["history_revision"] = h.revision();
    w["compact_revision"] = h.compact_revision();
    w["history_revisions"] = h.revisions_held();
    w["history_bytes"] = h.bytes_held();
    o["watch"] = std::move(w);
  }
  return json::serialize(o);
}

bool IsHttpParseError(const error_code& ec) {
  return ec.category() == make_error_code(http::error::bad_method).category();
}

}  // namespace

bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); i++) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = HexValue(in[i + 1]), lo = HexValue(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

// ---------------------------------------------------------------------------

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(SessionSocket socket, std::shared_ptr<HttpServer::Shared> shared)
      : stream_(std::move(socket)), shared_(std::move(shared)) {}

  ~Session() {
    if (!handed_off_) shared_->connections--;
  }

  void Start() {
    error_code ignored;
    stream_.socket().set_option(tcp::no_delay(true), ignored);
    ReadHeader();
  }

  // Answers 503 at once and closes: over the connection limit.
  void Refuse() {
    started_ = std::chrono::steady_clock::now();
    version_ = 11;
    keep_alive_ = false;
    Error(http::status::service_unavailable, "too many connections", "1");
  }

 private:
  const HttpOptions& opts() const { return shared_->options; }

  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(opts().max_header_bytes));
    parser_->body_limit(opts().max_body_bytes);
    stream_.expires_after(opts().timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(error_code ec) {
    if (ec) return OnReadError(ec);
    auto& req = parser_->get();
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    if (parser_->is_done()) return OnRequest();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      // curl sends this for bodies over 1 KiB and waits for the go-ahead.
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](error_code ec, size_t) {
                          if (ec) return self->Close();
                          self->ReadBody();
                        });
      return;
    }
    // A small body usually arrived with the header: parse it from the
    // buffer now rather than through another asynchronous read.
    while (buffer_.size() > 0 && !parser_->is_done()) {
      error_code pec;
      size_t n = parser_->put(buffer_.data(), pec);
      buffer_.consume(n);
      if (pec == http::error::need_more) break;
      if (pec) return OnReadError(pec);
      if (n == 0) break;
    }
    if (parser_->is_done()) return OnRequest();
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](error_code ec, size_t) {
                       if (ec) return self->OnReadError(ec);
                       self->OnRequest();
                     });
  }

  void OnReadError(error_code ec) {
    started_ = std::chrono::steady_clock::now();
    route_ = Route::kOther;
    method_ = http::verb::unknown;
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      return Error(http::status::payload_too_large,
                   "body larger than " + std::to_string(opts().max_body_bytes) + " bytes");
    }
    if (ec == http::error::header_limit) {
      keep_alive_ = false;
      return Error(http::status::request_header_fields_too_large, "request header too large");
    }
    if (IsHttpParseError(ec) && ec != http::error::end_of_stream &&
        ec != http::error::partial_message) {
      keep_alive_ = false;
      if (version_ == 0) version_ = 11;
      return Error(http::status::bad_request, "malformed HTTP request: " + ec.message());
    }
    // Closed by the client, timed out, reset, or cut mid-request: nothing to answer.
    Close();
  }

  void OnRequest() {
    shared_->in_flight++;
    counted_ = true;
    started_ = std::chrono::steady_clock::now();
    route_ = Route::kOther;
    method_ = parser_->get().method();
    v1_ = false;
    v1_revision_ = 0;
    etag_.clear();
    relayed_headers_.clear();
    content_type_ = kContentType;
    if (shared_->draining) {
      keep_alive_ = false;
      return Error(http::status::service_unavailable, "the node is shutting down", "1");
    }
    auto& req = parser_->get();
    cors_origin_.clear();
    if (!opts().cors_origins.empty()) {
      std::string_view origin = req[http::field::origin];
      if (!origin.empty() && OriginAllowed(opts().cors_origins, origin)) cors_origin_ = origin;
    }
    std::string_view target(req.target().data(), req.target().size());
    size_t q = target.find('?');
    std::string_view path = target.substr(0, q);
    std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
    http::verb method = req.method();
    // Every answer carries a body; a HEAD client would take it for the next
    // response, so do not keep its connection.
    if (method == http::verb::head) keep_alive_ = false;

    if (path.starts_with("/v1/")) return HandleV1(method, path, query);
    if (path.starts_with("/keys/")) {
      route_ = Route::kKeys;
      if (method != http::verb::get && method != http::verb::post) {
        return Error(http::status::method_not_allowed, "method not allowed", "", "GET, POST");
      }
      std::string_view seg = path.substr(6);
      if (!seg.empty() && seg.back() == '/') seg.remove_suffix(1);
      if (seg.find('/') != std::string_view::npos) {
        return Error(http::status::not_found, "not found");
      }
      if (!PercentDecode(seg, &key_)) {
        return Error(http::status::bad_request, "malformed percent-encoding in the key");
      }
      if (key_.empty()) return Error(http::status::bad_request, "empty key");
      if (key_.size() > opts().max_key_bytes) {
        return Error(http::status::bad_request,
                     "key longer than " + std::to_string(opts().max_key_bytes) + " bytes");
      }
      if (method == http::verb::get) return HandleGet(QueryFlag(query, "stale"));
      return HandlePut();
    }
    if (path == "/cluster/join/" || path == "/cluster/join") {
      route_ = Route::kJoin;
      return Allow(method, http::verb::post) ? HandleJoin() : void();
    }
    if (path == "/status" || path == "/status/") {
      route_ = Route::kStatus;
      return Allow(method, http::verb::get) ? HandleStatus() : void();
    }
    if (path == "/metrics" || path == "/metrics/") {
      route_ = Route::kMetrics;
      return Allow(method, http::verb::get) ? HandleMetrics() : void();
    }
    if (path == "/ready" || path == "/ready/") {
      route_ = Route::kReady;
      return Allow(method, http::verb::get) ? HandleReady(QueryFlag(query, "linearizable"))
                                            : void();
    }
    if (path == "/health" || path == "/health/") {
      route_ = Route::kHealth;
      if (!Allow(method, http::verb::get)) return;
      static const std::string kOk = R"({"status":"ok"})";
      if (std::string h = shared_->replica->health(); !h.empty()) {
        return Respond(http::status::service_unavailable, JsonObject1("status", h));
      }
      // Degraded is still healthy (200, "ok"): the node serves reads and
      // writes correctly, so a load balancer keeps it; monitoring reads
      // "degraded" (docs/http-api.md).
      if (std::string d = shared_->replica->degraded(); !d.empty()) {
        std::string body = R"({"status":"ok","degraded":)";
        AppendJsonString(&body, d);
        body.push_back('}');
        return Respond(http::status::ok, body);
      }
      return Respond(http::status::ok, kOk);
    }
    Error(http::status::not_found, "not found");
  }

  // Answers 405 (with Allow) unless `method` is `allowed`; true when the request may go on.
  bool Allow(http::verb method, http::verb allowed) {
    if (method == allowed) return true;
    beast::string_view name = http::to_string(allowed);
    Error(http::status::method_not_allowed, "method not allowed", "",
          std::string_view(name.data(), name.size()));
    return false;
  }

  // Posts `fn` to this session's io_context: driver callbacks use it.
  template <typename F>
  void Later(F&& fn) {
    asio::post(stream_.get_executor(), std::forward<F>(fn));
  }

  // --- GET /keys/<key>/ ------------------------------------------------------

  void HandleGet(bool stale) {
    if (stale) return RespondValue();
    shared_->replica->ReadBarrier([self = shared_from_this()](Outcome o) {
      self->Later([self, o = std::move(o)] {
        if (!o.ok()) return self->OutcomeError(o, false);
        self->RespondValue();
      });
    });
  }

  void RespondValue() {
    std::string value;
    shared_->kv->Get(key_, &value);  // A missing key reads as "", as the original.
    Respond(http::status::ok, JsonObject1("value", value));
  }

  // --- POST /keys/<key>/ -----------------------------------------------------

  void HandlePut() {
    std::string error;
    if (!ParseValueBody(parser_->get().body(), &value_, &error)) {
      return Error(http::status::bad_request, error);
    }
    if (value_.size() > opts().max_value_bytes) {
      return Error(http::status::payload_too_large,
                   "value longer than " + std::to_string(opts().max_value_bytes) + " bytes");
    }
    // A node whose disk failed takes no writes, not even to forward: its
    // clients should learn that it is broken (503), not that it works.
    if (std::string h = shared_->replica->health(); !h.empty()) {
      return Error(http::status::service_unavailable, h, "1");
    }
    auto view = shared_->replica->view();
    if (!view->IsLeader()) return Forward(*view, true);
    ProposePut();
  }

  void ProposePut() {
    kv::RequestId id = RequestIdOf();
    shared_->replica->Propose(
        kv::EncodePut(id, key_, value_), id, [self = shared_from_this()](Outcome o) {
          self->Later([self, o = std::move(o)] {
            if (o.ok()) {
              return self->Respond(http::status::ok, JsonObject1("value", self->value_));
            }
            if (o.code == Code::kNotLeader) {
              return self->Forward(*self->shared_->replica->view(), true);
            }
            self->OutcomeError(o, true);
          });
        });
  }

  // --- POST /cluster/join/ ---------------------------------------------------

  void HandleJoin() {
    unsigned char buf[2048];
    json::monotonic_resource mr(buf);
    error_code ec;
    json::value v = json::parse(parser_->get().body(), ec, &mr);
    if (ec || !v.is_object()) {
      return Error(http::status::bad_request,
                   "malformed JSON body: expected {\"address\": \"HOST:PORT\"}");
    }
    const json::object& o = v.get_object();
    auto field = [&o](const char* name, std::string* out, bool* bad) {
      const json::value* f = o.if_contains(name);
      if (f == nullptr || f->is_null()) return false;
      if (!f->is_string()) {
        *bad = true;
        return false;
      }
      out->assign(f->get_string().data(), f->get_string().size());
      return true;
    };
    MemberInfo m;
    bool bad = false;
    std::string host;
    uint16_t port = 0;
    if (!field("address", &m.raft, &bad) || bad ||
        !transport::SplitHostPort(m.raft, &host, &port)) {
      return Error(http::status::bad_request, "\"address\" must be a string \"HOST:PORT\"");
    }
    if (!field("id", &m.name, &bad) && !bad) m.name = m.raft;
    field("http", &m.http, &bad);
    if (bad || m.name.empty() ||
        (!m.http.empty() && !transport::SplitHostPort(m.http, &host, &port))) {
      return Error(http::status::bad_request,
                   "\"id\" must be a nonempty string and \"http\" a string \"HOST:PORT\"");
    }
    m.id = NodeIdFromName(m.name);
    join_ = m;
    auto view = shared_->replica->view();
    if (!view->IsLeader()) return Forward(*view, true);
    ProposeJoin();
  }

  void ProposeJoin() {
    shared_->replica->AddMember(join_, [self = shared_from_this()](Outcome o) {
      self->Later([self, o = std::move(o)] {
        if (o.ok()) {
          json::object r;
          r["id"] = self->join_.name;
          r["node_id"] = std::to_string(self->join_.id);
          r["raft"] = self->join_.raft;
          r["http"] = self->join_.http;
          return self->Respond(http::status::ok, json::serialize(r));
        }
        if (o.code == Code::kNotLeader) {
          return self->Forward(*self->shared_->replica->view(), true);
        }
        if (o.code == Code::kConflict) {  // 400, as this route always answered.
          return self->Error(http::status::bad_request, o.message);
        }
        self->OutcomeError(o, true);
      });
    });
  }

  // --- GET /status -------------------------------------------------------------

  void HandleStatus() {
    shared_->replica->GetStatus([self = shared_from_this()](StatusReport r) {
      std::string body = StatusJson(r, *self->shared_);
      self->Later([self, body = std::move(body)] { self->Respond(http::status::ok, body); });
    });
  }

  // --- GET /metrics (docs/metrics.md) ----------------------------------------

  void HandleMetrics() {
    shared_->replica->GetStatus([self = shared_from_this()](StatusReport r) {
      // The page is written on this session's thread, not the driver's.
      self->Later([self, r = std::move(r)] {
        const HttpServer::Shared& sh = *self->shared_;
        MetricsSources s;
        s.driver = &sh.replica->metrics();
        s.http = &sh.metrics;
        s.http_connections = sh.connections.load();
        s.extra = sh.extra_metrics;
        s.watches = sh.watches;
        std::string body = RenderMetrics(r, s);
        self->content_type_ = "text/plain; version=0.0.4; charset=utf-8";
        self->Respond(http::status::ok, body);
      });
    });
  }

  // --- GET /ready[?linearizable] (docs/http-api.md, "Probes") -----------------

  void HandleReady(bool linearizable) {
    shared_->replica->GetStatus([self = shared_from_this(), linearizable](StatusReport r) {
      self->Later([self, r = std::move(r), linearizable] {
        std::vector<std::string> reasons = self->NotReadyReasons(r);
        if (!reasons.empty() || !linearizable) return self->AnswerReady(reasons);
        // A ReadIndex round: the leader still holds a quorum, and this node can serve.
        self->shared_->replica->ReadBarrier([self](Outcome o) {
          self->Later([self, o = std::move(o)] {
            std::vector<std::string> reasons;
            if (!o.ok()) reasons.push_back("read_index_failed: " + o.message);
            self->AnswerReady(reasons);
          });
        });
      });
    });
  }

  std::vector<std::string> NotReadyReasons(const StatusReport& r) const {
    return server::NotReadyReasons(r, shared_->draining,
                                   shared_->replica->MillisSinceLeaderContact(),
                                   opts().ready_leader_timeout, opts().ready_max_lag);
  }

  void AnswerReady(const std::vector<std::string>& reasons) {
    if (reasons.empty()) return Respond(http::status::ok, R"({"ready":true})");
    json::object o;
    o["ready"] = false;
    json::array a;
    for (const std::string& s : reasons) a.emplace_back(s);
    o["reasons"] = std::move(a);
    Respond(http::status::service_unavailable, json::serialize(o), "1");
  }

  // --- Forwarding to the leader ------------------------------------------------

  // is_write: the request changes state (a key, a lease, the membership), so an answer
  // lost after it was sent leaves its outcome unknown.
  void Forward(const ClusterView& view, bool is_write) {
    auto& req = parser_->get();
    int hops = 0;
    std::string_view h = req[kHopsHeader];
    std::from_chars(h.data(), h.data() + h.size(), hops);
    const MemberView* leader = view.Find(view.leader);
    if (view.leader == raft::kNoNode || view.leader == view.self || leader == nullptr ||
        leader->info.http.empty()) {
      return ForwardError(503, "no leader", false);
    }
    if (hops >= opts().max_forward_hops) {
      return ForwardError(503, "no stable leader (forwarded too often)", false);
    }
    ForwardRequest fr;
    fr.method = req.method();
    fr.target = std::string(req.target());
    fr.body = std::move(req.body());
    fr.headers.emplace_back(std::string(kHopsHeader), std::to_string(hops + 1));
    // A conditional /v1 write's conditions travel with it.
    for (http::field f : {http::field::if_match, http::field::if_none_match}) {
      if (std::string_view v = req[f]; !v.empty()) {
        fr.headers.emplace_back(std::string(http::to_string(f)), std::string(v));
      }
    }
    if (is_write) {
      fr.headers.emplace_back(std::string(kRequestIdHeader), FormatRequestId(RequestIdOf()));
    }
    std::string leader_name = leader->info.name;
    shared_->metrics.forwarded.Add();
    shared_->forwarder->Send(
        leader->info.http, std::move(fr),
        [self = shared_from_this(), leader_name, is_write](ForwardResponse r) {
          self->Later([self, r = std::move(r), leader_name, is_write]() mutable {
            switch (r.error) {
              case ForwardResponse::Error::kNone:
                self->relayed_headers_ = std::move(r.headers);
                return self->Respond(static_cast<http::status>(r.status), r.body, r.retry_after);
              case ForwardResponse::Error::kUnreachable:
                return self->ForwardError(
                    503, "leader " + leader_name + " unreachable: " + r.message, false);
              case ForwardResponse::Error::kNoAnswer:
                return self->ForwardError(504,
                                          "the leader " + leader_name + " did not answer (" +
                                              r.message + "); the request's outcome is unknown",
                                          is_write);
            }
          });
        });
  }

  // A request that could not be forwarded: 503 (nothing was sent to a leader, or nothing
  // reached one) or 504 (sent, and no answer). The legacy routes keep their {"error"} body;
  // /v1 answers carry the code a client decides on: a write's 504 is outcome_unknown.
  void ForwardError(unsigned status, const std::string& message, bool is_write) {
    if (!v1_) {
      return Error(static_cast<http::status>(status), message, status == 503 ? "1" : "");
    }
    if (status == 503) return V1Error(503, "no_leader", message, "", "1");
    V1Error(504, is_write ? "outcome_unknown" : "timeout", message);
  }

  // --- Responses ---------------------------------------------------------------

  void OutcomeError(const Outcome& o, bool is_write) {
    switch (o.code) {
      case Code::kOk:
        break;
      case Code::kTimeout:
        return Error(http::status::gateway_timeout, o.message);
      case Code::kInvalid:
        return Error(http::status::bad_request, o.message);
      case Code::kNotLeader:
        return Error(http::status::service_unavailable, "no leader", "1");
      case Code::kShuttingDown:
        keep_alive_ = false;
        if (is_write) return Error(http::status::gateway_timeout, o.message);
        return Error(http::status::service_unavailable, o.message, "1");
      case Code::kUnavailable:
      case Code::kNotCommitted:
      case Code::kBusy:
      case Code::kStorageFailed:
        return Error(http::status::service_unavailable, o.message, "1");
      case Code::kConflict:
        return Error(http::status::conflict, o.message);
    }
    Error(http::status::internal_server_error, "unexpected outcome");
  }

  void Error(http::status status, const std::string& message, std::string_view retry_after = "",
             std::string_view allow = "") {
    Respond(status, JsonObject1("error", message), retry_after, allow);
  }

  // Every answer is a small JSON document: its head is formatted straight
  // into one buffer with the body and written with a single send (Beast's
  // generic serializer costs more than the send itself at this size).
  void Respond(http::status status, std::string_view body, std::string_view retry_after = "",
               std::string_view allow = "") {
    shared_->metrics.Record(route_, method_, static_cast<unsigned>(status),
                            std::chrono::steady_clock::now() - started_);
    bool keep = keep_alive_ && !shared_->draining;
    out_.clear();
    out_ += version_ == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    AppendNumber(static_cast<unsigned>(status));
    out_ += ' ';
    beast::string_view reason = http::obsolete_reason(status);
    out_.append(reason.data(), reason.size());
    out_ += "\r\nContent-Type: ";
    out_ += content_type_;
    if (v1_) AppendV1Headers();
    AppendCorsHeaders();
    if (!extra_headers_.empty()) {
      out_ += extra_headers_;
      extra_headers_ = {};
    }
    if (!retry_after.empty()) {
      out_ += "\r\nRetry-After: ";
      out_ += retry_after;
    }
    if (!allow.empty()) {
      out_ += "\r\nAllow: ";
      out_ += allow;
    }
    out_ += "\r\nContent-Length: ";
    AppendNumber(body.size());
    // HTTP/1.1 keeps the connection unless told; HTTP/1.0 closes it unless told.
    if (!keep && version_ != 10) out_ += "\r\nConnection: close";
    if (keep && version_ == 10) out_ += "\r\nConnection: keep-alive";
    out_ += "\r\n\r\n";
    out_ += body;
    stream_.expires_after(opts().timeout);
    asio::async_write(stream_, asio::buffer(out_),
                      [self = shared_from_this(), keep](error_code ec, size_t) {
                        if (self->counted_) {
                          self->shared_->in_flight--;
                          self->counted_ = false;
                        }
                        self->backup_slot_.reset();
                        // A large answer (a backup) does not keep its buffer for the
                        // rest of a keep-alive connection.
                        if (self->out_.capacity() > (1u << 20)) std::string().swap(self->out_);
                        if (ec) return self->Close();
                        if (!keep) return self->LingerClose();
                        self->ReadHeader();
                      });
  }

  void AppendCorsHeaders() {
    if (cors_origin_.empty()) return;
    out_ += "\r\nAccess-Control-Allow-Origin: ";
    out_ += cors_origin_;
    out_ +=
        "\r\nVary: Origin\r\nAccess-Control-Expose-Headers: X-Raftkv-Revision, "
        "X-Raftkv-Raft-Term, X-Raftkv-Node, X-Raftkv-Leader, ETag";
  }

  void AppendNumber(uint64_t n) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), n);
    out_.append(buf, end);
  }

  // Half-closes and drains what the client still sends, so that closing
  // with unread input does not reset the connection before the client has
  // read our answer.
  void LingerClose() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(1));
    Drain();
  }

  void Drain() {
    if (drained_ > (4u << 20)) return Close();
    stream_.async_read_some(asio::buffer(drain_buf_),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              if (ec) return self->Close();
                              self->drained_ += n;
                              self->Drain();
                            });
  }

  void Close() {
    if (counted_) {
      shared_->in_flight--;
      counted_ = false;
    }
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

  // --- /v1 (docs/http-api.md) -----------------------------------------------

  // Writes the body of a successful /v1 write from its applied result.
  using V1Answer = void (Session::*)(const kv::Result&);

  v1::Limits Limits() const {
    v1::Limits l;
    l.max_key_bytes = opts().max_key_bytes;
    l.max_value_bytes = opts().max_value_bytes;
    l.max_txn_ops = opts().max_txn_ops;
    l.max_range_limit = opts().max_range_limit;
    l.default_range_limit = std::min(opts().default_range_limit, opts().max_range_limit);
    l.max_range_bytes = opts().max_range_bytes;
    l.max_delete_keys = opts().max_delete_keys;
    return l;
  }

  // Headers on every /v1 answer: the revision it reflects, the term, this
  // node and the leader's HTTP address; a forwarded answer carries the
  // leader's own instead.
  void AppendV1Headers() {
    if (!relayed_headers_.empty()) {
      for (const auto& [name, value] : relayed_headers_) {
        out_ += "\r\n";
        out_ += name;
        out_ += ": ";
        out_ += value;
      }
      return;
    }
    auto view = shared_->replica->view();
    out_ += "\r\nX-Raftkv-Revision: ";
    AppendNumber(v1_revision_ != 0 ? v1_revision_ : shared_->kv->revision());
    out_ += "\r\nX-Raftkv-Raft-Term: ";
    AppendNumber(view->term);
    out_ += "\r\nX-Raftkv-Node: ";
    out_ += shared_->replica->self().name;
    out_ += "\r\nX-Raftkv-Leader: ";
    if (const MemberView* l = view->Find(view->leader)) out_ += l->info.http;
    if (!etag_.empty()) {
      out_ += "\r\nETag: ";
      out_ += etag_;
    }
    if (content_type_ != kContentType) out_ += "\r\nX-Content-Type-Options: nosniff";
  }

  void V1Error(unsigned status, std::string_view code, const std::string& message,
               std::string_view extra = "", std::string_view retry_after = "",
               std::string_view allow = "") {
    content_type_ = kContentType;
    Respond(static_cast<http::status>(status), v1::ErrorJson(code, message, extra), retry_after,
            allow);
  }
  void V1Error(const v1::ApiError& e) { V1Error(e.status, e.code, e.message); }

  // A driver outcome that is not kOk, in /v1 terms.
  void V1OutcomeError(const Outcome& o, bool is_write) {
    switch (o.code) {
      case Code::kOk:
        break;
      case Code::kTimeout:
        if (is_write) return V1Error(504, "outcome_unknown", o.message);
        return V1Error(504, "timeout", o.message);
      case Code::kInvalid:
        return V1Error(413, "body_too_large", o.message);
      case Code::kNotLeader:
        return V1Error(503, "no_leader", "no leader", "", "1");
      case Code::kShuttingDown:
        keep_alive_ = false;
        if (is_write) return V1Error(504, "outcome_unknown", o.message);
        return V1Error(503, "shutting_down", o.message, "", "1");
      case Code::kUnavailable:
        return V1Error(503, is_write ? "no_leader" : "no_quorum", o.message, "", "1");
      case Code::kNotCommitted:
        return V1Error(503, "leadership_changed", o.message, "", "1");
      case Code::kBusy:
        return V1Error(503, "overloaded", o.message, "", "1");
      case Code::kStorageFailed:
        return V1Error(503, "storage_failed", o.message, "", "1");
      case Code::kConflict:
        return V1Error(409, "conflict", o.message);
    }
    V1Error(500, "internal", "unexpected outcome");
  }

  void HandleV1(http::verb method, std::string_view path, std::string_view query) {
    v1_ = true;
    if (method == http::verb::options && !cors_origin_.empty()) return CorsPreflight();
    std::string error;
    if (!query_.Parse(query, &error)) return V1Error(400, "invalid_argument", error);
    b64_ = false;
    if (auto enc = query_.Get("encoding")) {
      if (*enc != "base64" && *enc != "utf8") {
        return V1Error(400, "invalid_argument", "\"encoding\" must be base64 or utf8");
      }
      b64_ = *enc == "base64";
    }
    if (path.starts_with("/v1/kv/")) {
      route_ = query_.Has("prefix") ? Route::kV1KvPrefix : Route::kV1Kv;
      if (!PercentDecode(path.substr(7), &key_)) {
        return V1Error(400, "invalid_argument", "malformed percent-encoding in the key");
      }
      bool prefix = query_.Has("prefix");
      if (!prefix && key_.empty()) {
        return V1Error(400, "invalid_argument", "empty key (an empty prefix needs ?prefix)");
      }
      if (key_.size() > opts().max_key_bytes) {
        return V1Error(400, "invalid_argument",
                       "key longer than " + std::to_string(opts().max_key_bytes) + " bytes");
      }
      switch (method) {
        case http::verb::get:
          return prefix ? V1Range() : V1Get();
        case http::verb::put:
        case http::verb::post:
          if (prefix) return V1Error(400, "invalid_argument", "a put takes one key, not ?prefix");
          return V1Put();
        case http::verb::delete_:
          return V1Delete(prefix);
        default:
          return V1Error(405, "method_not_allowed", "method not allowed", "", "",
                         "GET, PUT, POST, DELETE");
      }
    }
    if (path == "/v1/watch" || path.starts_with("/v1/watch/")) {
      route_ = path.starts_with("/v1/watch/") ? Route::kV1Watch : Route::kV1WatchMulti;
      return V1Watch(method, path);
    }
    if (path == "/v1/leases" || path.starts_with("/v1/leases/")) {
      route_ = Route::kV1Leases;
      return V1Leases(method, path);
    }
    if (path == "/v1/members" || path.starts_with("/v1/members/")) {
      route_ = Route::kV1Members;
      return V1Members(method, path.substr(std::string_view("/v1/members").size()));
    }
    if (path == "/v1/leader/transfer") {
      route_ = Route::kV1LeaderTransfer;
      if (method != http::verb::post) {
        return V1Error(405, "method_not_allowed", "method not allowed", "", "", "POST");
      }
      return V1LeaderTransfer();
    }
    if (path == "/v1/snapshot") {
      route_ = Route::kV1Snapshot;
      if (method != http::verb::get) {
        return V1Error(405, "method_not_allowed", "method not allowed", "", "", "GET");
      }
      return V1Snapshot();
    }
    if (path == "/v1/txn") {
      route_ = Route::kV1Txn;
      if (method != http::verb::post) {
        return V1Error(405, "method_not_allowed", "method not allowed", "", "", "POST");
      }
      return V1Txn();
    }
    V1Error(404, "not_found", "no such route");
  }

  // A browser's preflight before a cross-origin request (CORS).
  void CorsPreflight() {
    content_type_ = kContentType;
    out_.clear();
    std::string_view headers =
        "\r\nAccess-Control-Allow-Methods: GET, PUT, POST, DELETE"
        "\r\nAccess-Control-Allow-Headers: Content-Type, If-Match, If-None-Match, Last-Event-ID"
        "\r\nAccess-Control-Max-Age: 600";
    relayed_headers_.clear();
    extra_headers_ = headers;
    Respond(http::status::no_content, "");
  }

  // --- GET /v1/snapshot (docs/operations.md, "Backup and restore") -------------

  // The store's image at one revision, after a ReadIndex round unless
  // ?consistency=stale: every write acknowledged before the request is in it.
  void V1Snapshot() {
    if (!V1Params({"consistency"})) return;
    auto c = query_.Get("consistency");
    if (c && *c != "stale" && *c != "linearizable") {
      return V1Error(400, "invalid_argument", "\"consistency\" must be linearizable or stale");
    }
    // One backup at a time per node: each serializes the store on the driver
    // thread and holds a copy of it until sent.
    if (shared_->backup_running.exchange(true)) {
      return V1Error(503, "busy", "a backup is being taken on this node; retry shortly", "", "1");
    }
    std::shared_ptr<void> slot(nullptr, [sh = shared_](void*) { sh->backup_running = false; });
    auto take = [self = shared_from_this(), slot] {
      self->shared_->replica->TakeImage([self, slot](std::string image, uint64_t revision) {
        self->Later([self, image = std::move(image), revision, slot] {
          self->v1_revision_ = revision;
          self->content_type_ = "application/octet-stream";
          // The image ends with its own XXH3-64 (little-endian); the header repeats it.
          uint64_t sum = 0;
          for (int i = 7; i >= 0; i--) {
            sum = (sum << 8) | static_cast<unsigned char>(image[image.size() - 8 + i]);
          }
          char buf[160];
          std::snprintf(buf, sizeof buf,
                        "\r\nX-Raftkv-Checksum: xxh3-64=%016llx\r\nContent-Disposition: "
                        "attachment; filename=\"raftkv-%llu.snap\"",
                        static_cast<unsigned long long>(sum),
                        static_cast<unsigned long long>(revision));
          self->snapshot_headers_ = buf;
          self->extra_headers_ = self->snapshot_headers_;
          self->backup_slot_ = slot;  // Until the answer's copy of the image is written.
          self->Respond(http::status::ok, image);
        });
      });
    };
    if (c && *c == "stale") return take();
    shared_->replica->ReadBarrier([self = shared_from_this(), take](Outcome o) {
      self->Later([self, o = std::move(o), take] {
        if (!o.ok()) return self->V1OutcomeError(o, false);
        take();
      });
    });
    // `take` holds the slot until the image is in the answer, which holds it until the
    // write ends: written, failed, or timed out (a client that stops reading).
  }

  // --- /v1/members and /v1/leader/transfer (docs/http-api.md, "Membership") ---

  void V1Members(http::verb method, std::string_view rest) {
    if (rest.empty() || rest == "/") {
      if (method == http::verb::get) return V1MemberList();
      if (method == http::verb::post) return V1MemberAdd();
      return V1Error(405, "method_not_allowed", "method not allowed", "", "", "GET, POST");
    }
    rest.remove_prefix(1);
    bool promote = false;
    if (rest.ends_with("/promote")) {
      promote = true;
      rest.remove_suffix(std::string_view("/promote").size());
    }
    route_ = promote ? Route::kV1MemberPromote : Route::kV1Member;
    std::string name;
    if (rest.empty() || rest.find('/') != std::string_view::npos || !PercentDecode(rest, &name)) {
      return V1Error(404, "not_found", "no such route (/v1/members/<id>[/promote])");
    }
    if (promote && method != http::verb::post) {
      return V1Error(405, "method_not_allowed", "method not allowed", "", "", "POST");
    }
    if (!promote && method != http::verb::delete_) {
      return V1Error(405, "method_not_allowed", "method not allowed", "", "", "DELETE");
    }
    if (!V1Params(promote ? std::vector<std::string_view>{}
                          : std::vector<std::string_view>{"force"})) {
      return;
    }
    // The leader decides (a follower's membership may trail the leader's).
    auto view = shared_->replica->view();
    if (!view->IsLeader()) return Forward(*view, true);
    const MemberView* m = view->Find(NodeIdFromName(name));
    if (m == nullptr) {
      return V1Error(404, "member_not_found", "no member '" + name + "'");
    }
    member_ = m->info;
    if (promote) return V1MemberPromote();
    V1MemberRemove(query_.Flag("force"));
  }

  // The members as of this node's commit index; the leader adds each one's match index.
  void V1MemberList() {
    if (!V1Params({})) return;
    shared_->replica->GetStatus([self = shared_from_this()](StatusReport r) {
      self->Later([self, r = std::move(r)] {
        json::array members;
        for (const MemberView& m : r.view->members) {
          json::object o = MemberJson(m.info).as_object();
          o["role"] = RoleString(m.role);
          o["promote"] = m.promote ? "auto" : "manual";
          o["leader"] = m.info.id == r.view->leader;
          for (const raft::PeerStatus& p : r.node.peers) {
            if (p.id == m.info.id) o["match"] = p.match;
          }
          if (r.view->IsLeader()) {
            for (const auto& [id, ms] : r.peer_heard_ms) {
              if (id == m.info.id) o["last_heard_ms"] = ms;
            }
          }
          if (m.info.id == r.view->self && r.view->IsLeader()) o["match"] = r.node.last_index;
          members.push_back(std::move(o));
        }
        json::object out;
        out["members"] = std::move(members);
        self->Respond(http::status::ok, json::serialize(out));
      });
    });
  }

  // {"id": "name", "raft": "HOST:PORT", "http": "HOST:PORT", "promote": "auto"|"manual"}
  void V1MemberAdd() {
    if (!V1Params({})) return;
    error_code ec;
    json::value v = json::parse(parser_->get().body(), ec);
    if (ec || !v.is_object()) {
      return V1Error(400, "invalid_argument",
                     "the body must be a JSON object {\"id\", \"raft\", \"http\", \"promote\"}");
    }
    const json::object& o = v.get_object();
    for (const auto& kv : o) {
      if (kv.key() != "id" && kv.key() != "raft" && kv.key() != "http" && kv.key() != "promote") {
        return V1Error(400, "invalid_argument", "unknown field \"" + std::string(kv.key()) + "\"");
      }
    }
    auto str = [&o](const char* name) -> std::optional<std::string> {
      const json::value* f = o.if_contains(name);
      if (f == nullptr || !f->is_string()) return std::nullopt;
      return std::string(f->get_string());
    };
    std::string host;
    uint16_t port = 0;
    auto id = str("id"), raft_addr = str("raft"), http_addr = str("http");
    if (!id || id->empty() || id->size() > 256) {
      return V1Error(400, "invalid_argument", "\"id\" must be a name of 1 to 256 bytes");
    }
    if (!raft_addr || !transport::SplitHostPort(*raft_addr, &host, &port)) {
      return V1Error(400, "invalid_argument", "\"raft\" must be a string \"HOST:PORT\"");
    }
    if (o.contains("http") && (!http_addr || !transport::SplitHostPort(*http_addr, &host, &port))) {
      return V1Error(400, "invalid_argument", "\"http\" must be a string \"HOST:PORT\"");
    }
    bool promote = true;
    if (o.contains("promote")) {
      auto p = str("promote");
      if (!p || (*p != "auto" && *p != "manual")) {
        return V1Error(400, "invalid_argument", "\"promote\" must be \"auto\" or \"manual\"");
      }
      promote = *p == "auto";
    }
    member_ = MemberInfo{NodeIdFromName(*id), *id, *raft_addr, http_addr.value_or("")};
    auto view = shared_->replica->view();
    if (!view->IsLeader()) return Forward(*view, true);
    if (view->Find(member_.id) != nullptr) {
      return V1Error(409, "member_exists", "'" + *id + "' is a member already");
    }
    shared_->replica->AddMember(member_, promote, [self = shared_from_this()](Outcome o) {
      self->Later([self, o = std::move(o)] {
        if (o.ok() && o.message == "already a member") {
          return self->V1Error(409, "member_exists",
                               "'" + self->member_.name + "' is a member already");
        }
        if (!o.ok()) return self->V1MembershipError(o);
        json::object r = MemberJson(self->member_).as_object();
        r["role"] = "learner";
        self->Respond(http::status::created, json::serialize(r));
      });
    });
  }

  void V1MemberPromote() {
    shared_->replica->PromoteMember(member_.id, [self = shared_from_this()](Outcome o) {
      self->Later([self, o = std::move(o)] {
        if (!o.ok()) return self->V1MembershipError(o);
        json::object r = MemberJson(self->member_).as_object();
        r["role"] = "voter";
        self->Respond(http::status::ok, json::serialize(r));
      });
    });
  }

  void V1MemberRemove(bool force) {
    if (member_.id == shared_->replica->self().id) {
      // The leader removes itself: it hands leadership over first, then
      // the new leader removes it (its answer is relayed).
      return shared_->replica->TransferLeadership(
          raft::kNoNode, [self = shared_from_this()](Outcome o) {
            self->Later([self, o = std::move(o)] {
              if (!o.ok()) return self->V1MembershipError(o);
              self->AfterLeaderMoved([self](bool moved) {
                if (!moved) {
                  return self->V1Error(504, "timeout",
                                       "leadership did not move away within the request timeout");
                }
                self->Forward(*self->shared_->replica->view(), true);
              });
            });
          });
    }
    shared_->replica->RemoveMember(member_.id, force, [self = shared_from_this()](Outcome o) {
      self->Later([self, o = std::move(o)] {
        if (!o.ok()) return self->V1MembershipError(o);
        json::object r;
        r["removed"] = MemberJson(self->member_);
        self->Respond(http::status::ok, json::serialize(r));
      });
    });
  }

  // {"to": "name"} (optional: the most up-to-date voter).
  void V1LeaderTransfer() {
    if (!V1Params({})) return;
    raft::NodeId to = raft::kNoNode;
    const std::string& body = parser_->get().body();
    if (!body.empty()) {
      error_code ec;
      json::value v = json::parse(body, ec);
      const json::value* t = !ec && v.is_object() ? v.get_object().if_contains("to") : nullptr;
      if (ec || !v.is_object() || v.get_object().size() > (t ? 1u : 0u) ||
          (t != nullptr && !t->is_string())) {
        return V1Error(400, "invalid_argument", "the body must be {} or {\"to\": \"<member id>\"}");
      }
      if (t != nullptr) to = NodeIdFromName(std::string(t->get_string()));
    }
    auto view = shared_->replica->view();
    if (!view->IsLeader()) return Forward(*view, true);
    if (to != raft::kNoNode && view->Find(to) == nullptr) {
      return V1Error(404, "member_not_found", "no member with that id");
    }
    if (to == view->self) return V1TransferDone();
    shared_->replica->TransferLeadership(to, [self = shared_from_this()](Outcome o) {
      self->Later([self, o = std::move(o)] {
        if (o.code == Code::kNotLeader) return self->Forward(*self->shared_->replica->view(), true);
        if (!o.ok()) return self->V1MembershipError(o);
        self->AfterLeaderMoved([self](bool moved) {
          if (!moved) {
            return self->V1Error(504, "timeout",
                                 "leadership did not move within the request timeout");
          }
          self->V1TransferDone();
        });
      });
    });
  }

  void V1TransferDone() {
    auto view = shared_->replica->view();
    json::object r;
    const MemberView* l = view->Find(view->leader);
    r["leader"] = l ? l->info.name : "";
    r["term"] = view->term;
    Respond(http::status::ok, json::serialize(r));
  }

  // Calls then(true) once another node leads (this one knows it), or
  // then(false) after the request timeout. Polls every 10 ms.
  void AfterLeaderMoved(std::function<void(bool)> then) {
    const auto deadline = std::chrono::steady_clock::now() + opts().request_timeout;
    if (!timer_) timer_.emplace(stream_.get_executor());
    PollLeader(deadline, std::move(then));
  }

  void PollLeader(std::chrono::steady_clock::time_point deadline, std::function<void(bool)> then) {
    auto view = shared_->replica->view();
    if (view->leader != raft::kNoNode && view->leader != view->self) return then(true);
    if (std::chrono::steady_clock::now() >= deadline) return then(false);
    timer_->expires_after(std::chrono::milliseconds(10));
    timer_->async_wait(
        [self = shared_from_this(), deadline, then = std::move(then)](error_code ec) mutable {
          if (ec) return;
          self->PollLeader(deadline, std::move(then));
        });
  }

  void V1MembershipError(const Outcome& o) {
    if (o.code == Code::kConflict) {
      if (o.reason == "not_found") return V1Error(404, "member_not_found", o.message);
      return V1Error(409, o.reason.empty() ? "conflict" : o.reason, o.message);
    }
    if (o.code == Code::kInvalid) return V1Error(409, "conflict", o.message);
    if (o.code == Code::kBusy)
      return V1Error(503, "membership_change_in_progress", o.message, "", "1");
    V1OutcomeError(o, true);
  }

  // --- /v1/leases (docs/http-api.md, "Leases") ---------------------------------

  void V1Leases(http::verb method, std::string_view path) {
    std::string_view rest = path.substr(std::string_view("/v1/leases").size());
    if (rest.empty() || rest == "/") {
      if (method == http::verb::post) return V1LeaseGrant();
      if (method == http::verb::get) return V1LeaseList();
      return V1Error(405, "method_not_allowed", "method not allowed", "", "", "GET, POST");
    }
    rest.remove_prefix(1);
    route_ = Route::kV1Lease;
    if (rest == "keepalive") {
      route_ = Route::kV1LeasesKeepAlive;
      if (method != http::verb::post) {
        return V1Error(405, "method_not_allowed", "method not allowed", "", "", "POST");
      }
      return V1LeaseKeepAlive(std::nullopt);
    }
    bool keepalive = false;
    if (rest.ends_with("/keepalive")) {
      route_ = Route::kV1LeaseKeepAlive;
      keepalive = true;
      rest.remove_suffix(std::string_view("/keepalive").size());
    }
    uint64_t id = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), id, 10);
    if (ec != std::errc() || p != rest.data() + rest.size() || id == 0 || id > v1::kMaxNumber) {
      return V1Error(404, "not_found", "no such route (a lease id is an integer from 1 to 2^53-1)");
    }
    if (keepalive) {
      if (method != http::verb::post) {
        return V1Error(405, "method_not_allowed", "method not allowed", "", "", "POST");
      }
      return V1LeaseKeepAlive(id);
    }
    if (method == http::verb::get) return V1LeaseGet(id);
    if (method == http::verb::delete_) return V1LeaseRevoke(id);
    V1Error(405, "method_not_allowed", "method not allowed", "", "", "GET, DELETE");
  }

  void V1LeaseGrant() {
    if (!V1Params({})) return;
    uint64_t ttl_s = 0, id = 0;
    v1::ApiError e;
    if (!v1::ParseLeaseGrant(parser_->get().body(), &ttl_s, &id, &e)) return V1Error(e);
    uint64_t ttl_ms = ttl_s > opts().max_lease_ttl_ms / 1000 ? UINT64_MAX : ttl_s * 1000;
    if (ttl_ms > opts().max_lease_ttl_ms) {
      return V1Error(400, "invalid_argument",
                     "ttl longer than " + std::to_string(opts().max_lease_ttl_ms / 1000) +
                         " s (--max-lease-ttl)");
    }
    // etcd raises a short TTL too: a lease must outlive a leader change.
    ttl_ms = std::max(ttl_ms, opts().min_lease_ttl_ms);
    // Counted against what this node has applied: grants in flight can pass
    // the bound by their number (docs/http-api.md, "Leases").
    if (shared_->kv->lease_count() >= opts().max_leases) {
      return V1Error(429, "too_many_leases",
                     "the cluster holds " + std::to_string(opts().max_leases) +
                         " leases (--max-leases); revoke some or let them expire",
                     "", "1");
    }
    lease_ttl_ms_ = ttl_ms;
    lease_id_ = id;
    V1Write(
        [this](kv::RequestId rid) { return kv::EncodeLeaseGrant(rid, lease_id_, lease_ttl_ms_); },
        &Session::V1LeaseGrantAnswer);
  }

  void V1LeaseGrantAnswer(const kv::Result& r) {
    const kv::LeaseInfo& l = r.leases.at(0);
    std::string body = "{\"id\":" + std::to_string(l.id) +
                       ",\"ttl\":" + std::to_string(v1::TtlSeconds(l.ttl_ms)) +
                       ",\"revision\":" + std::to_string(r.revision) + "}";
    Respond(http::status::created, body);
  }

  // One lease (`one`), or the ids of the body.
  void V1LeaseKeepAlive(std::optional<uint64_t> one) {
    if (!V1Params({})) return;
    lease_ids_.clear();
    if (one) {
      lease_ids_.push_back(*one);
    } else {
      v1::ApiError e;
      if (!v1::ParseLeaseIds(parser_->get().body(), opts().max_keepalive_ids, &lease_ids_, &e)) {
        return V1Error(e);
      }
      if (lease_ids_.empty()) {
        return Respond(http::status::ok, "{\"renewed\":[],\"not_found\":[],\"revision\":" +
                                             std::to_string(shared_->kv->revision()) + "}");
      }
    }
    lease_batch_ = !one.has_value();
    V1Write([this](kv::RequestId rid) { return kv::EncodeLeaseKeepAlive(rid, lease_ids_); },
            &Session::V1LeaseKeepAliveAnswer);
  }

  void V1LeaseKeepAliveAnswer(const kv::Result& r) {
    std::string body;
    if (!lease_batch_) {
      if (r.leases.empty()) return V1LeaseNotFound();
      body = "{\"id\":" + std::to_string(r.leases[0].id) +
             ",\"ttl\":" + std::to_string(v1::TtlSeconds(r.leases[0].ttl_ms)) +
             ",\"revision\":" + std::to_string(r.revision) + "}";
      return Respond(http::status::ok, body);
    }
    body = "{\"renewed\":[";
    for (size_t i = 0; i < r.leases.size(); i++) {
      if (i > 0) body += ',';
      v1::AppendLease(&body, r.leases[i].id, r.leases[i].ttl_ms);
    }
    body += "],\"not_found\":";
    v1::AppendIds(&body, r.not_found);
    body += ",\"revision\":" + std::to_string(r.revision) + "}";
    Respond(http::status::ok, body);
  }

  void V1LeaseNotFound() {
    V1Error(404, "lease_not_found",
            "the lease does not exist (it expired or was revoked: grant a new one and put its "
            "keys again)");
  }

  void V1LeaseRevoke(uint64_t id) {
    if (!V1Params({})) return;
    lease_ids_ = {id};
    V1Write(
        [this](kv::RequestId rid) {
          return kv::EncodeLeaseRevoke(rid, kv::RevokeReason::kRevoke,
                                       {kv::LeaseRef{lease_ids_[0], 0}});
        },
        &Session::V1LeaseRevokeAnswer);
  }

  void V1LeaseRevokeAnswer(const kv::Result& r) {
    if (!r.not_found.empty()) return V1LeaseNotFound();
    Respond(http::status::ok, "{\"revision\":" + std::to_string(r.revision) +
                                  ",\"deleted\":" + std::to_string(r.deleted) + "}");
  }

  // Served by the leader, the only node whose deadlines decide (a follower
  // forwards): a read barrier, then the store and the leader's deadline.
  void V1LeaseGet(uint64_t id) {
    if (!V1Params({"keys"})) return;
    auto view = shared_->replica->view();
    if (!view->IsLeader()) return Forward(*view, false);
    shared_->replica->ReadBarrier([self = shared_from_this(), id](Outcome o) {
      self->Later([self, o = std::move(o), id] {
        if (!o.ok()) return self->V1OutcomeError(o, false);
        kv::LeaseInfo l;
        std::vector<std::string> keys;
        bool with_keys = self->query_.Flag("keys");
        if (!self->shared_->kv->GetLease(id, &l, with_keys ? &keys : nullptr)) {
          return self->V1LeaseNotFound();
        }
        int64_t remaining = self->shared_->replica->LeaseRemainingMs(id).value_or(0);
        std::string body = "{\"id\":" + std::to_string(id) +
                           ",\"ttl\":" + std::to_string(v1::TtlSeconds(l.ttl_ms)) +
                           ",\"remaining_ms\":" + std::to_string(std::max<int64_t>(0, remaining)) +
                           ",\"renewed_revision\":" + std::to_string(l.renewed_at);
        if (with_keys) {
          body += ',';
          v1::AppendKeyList(&body, keys, self->b64_);
        }
        body += '}';
        self->Respond(http::status::ok, body);
      });
    });
  }

  void V1LeaseList() {
    if (!V1Params({"consistency", "stale", "min_revision", "max_staleness"})) return;
    V1Read([this] {
      std::vector<kv::LeaseInfo> leases = shared_->kv->Leases();
      std::string body = "{\"leases\":[";
      for (size_t i = 0; i < leases.size(); i++) {
        if (i > 0) body += ',';
        v1::AppendLease(&body, leases[i].id, leases[i].ttl_ms);
      }
      body += "]}";
      Respond(http::status::ok, body);
    });
  }

  // --- /v1/watch (docs/http-api.md, "Watch") -----------------------------------

  void V1Watch(http::verb method, std::string_view path) {
    WatchHub* hub = shared_->watches;
    if (hub == nullptr) return V1Error(503, "unavailable", "this server serves no watches");
    auto& req = parser_->get();
    const bool sse = std::string_view(req[http::field::accept]).find("text/event-stream") !=
                     std::string_view::npos;
    const bool stream = sse || query_.Flag("stream");
    v1::ApiError e;
    std::vector<WatchSpec> specs;
    bool multi = false;
    if (path == "/v1/watch") {
      if (method != http::verb::post) {
        return V1Error(405, "method_not_allowed", "method not allowed", "", "", "POST");
      }
      if (!V1Params({"stream", "progress", "require_leader"})) return;
      if (!stream) {
        return V1Error(400, "invalid_argument",
                       "several watches are served as a stream: POST /v1/watch?stream");
      }
      std::vector<v1::WatchItem> items;
      if (!v1::ParseWatches(req.body(), Limits(), &items, &e)) return V1Error(e);
      for (v1::WatchItem& w : items) {
        specs.push_back(
            WatchSpec{std::move(w.id), watch::Filter{std::move(w.key), w.prefix}, w.rev});
      }
      multi = true;
    } else {
      if (method != http::verb::get) {
        return V1Error(405, "method_not_allowed", "method not allowed", "", "", "GET");
      }
      if (!V1Params({"prefix", "rev", "wait", "limit", "stream", "progress", "require_leader"})) {
        return;
      }
      WatchSpec spec;
      if (!PercentDecode(path.substr(10), &spec.filter.key)) {
        return V1Error(400, "invalid_argument", "malformed percent-encoding in the key");
      }
      spec.filter.prefix = query_.Has("prefix");
      if (!spec.filter.prefix && spec.filter.key.empty()) {
        return V1Error(400, "invalid_argument", "empty key (an empty prefix needs ?prefix)");
      }
      if (spec.filter.key.size() > opts().max_key_bytes) {
        return V1Error(400, "invalid_argument",
                       "key longer than " + std::to_string(opts().max_key_bytes) + " bytes");
      }
      if (!query_.Number("rev", &spec.rev, &e)) return V1Error(e);
      // An EventSource that reconnects says the last id it received: the
      // revision of the last message it has; it resumes after it.
      std::string_view last_id = req["Last-Event-ID"];
      if (sse && !last_id.empty()) {
        uint64_t id = 0;
        auto [end, ec] = std::from_chars(last_id.data(), last_id.data() + last_id.size(), id);
        if (ec != std::errc() || end != last_id.data() + last_id.size() || id >= v1::kMaxNumber) {
          return V1Error(400, "invalid_argument", "Last-Event-ID must be a revision");
        }
        spec.rev = id + 1;
      }
      specs.push_back(std::move(spec));
    }
    // A single watch from a revision the history no longer holds is refused
    // before anything is streamed (a multi-watch is told per watch).
    if (specs.size() == 1 && !multi) {
      const uint64_t compact = hub->history().compact_revision();
      if (specs[0].rev != 0 && specs[0].rev <= compact) {
        return V1Error(410, "compacted",
                       "revision " + std::to_string(specs[0].rev) +
                           " is no longer in this node's watch history; list again and watch "
                           "from the listing's revision",
                       ",\"compact_revision\":" + std::to_string(compact) +
                           ",\"revision\":" + std::to_string(hub->history().revision()));
      }
    }
    WatchContext ctx;
    ctx.hub = hub;
    ctx.thread = hub->ThreadOf(stream_.get_executor().context());
    ctx.replica = shared_->replica;
    ctx.write_timeout = opts().timeout;
    RAFT_ASSERT(ctx.thread != nullptr, "a session on an io thread the watch hub does not know");
    if (shared_->draining) {
      keep_alive_ = false;
      return V1Error(503, "shutting_down", "the node is shutting down", "", "1");
    }
    // require_leader on a node that has lost its leader: refused before anything starts
    // (later losses end the watch: no_leader).
    if (query_.Flag("require_leader") && hub->NoLeader()) {
      return V1Error(503, "no_leader", "this node has no leader", "", "1");
    }
    if (!hub->Acquire(ctx.thread, specs.size())) {
      return V1Error(429, "too_many_watchers",
                     "this node serves " + std::to_string(hub->options().max_watchers) +
                         " watchers at most (--max-watchers)",
                     "", "1");
    }
    if (stream) return V1StartStream(std::move(specs), multi, sse, std::move(ctx));
    V1LongPoll(std::move(specs[0]), std::move(ctx));
  }

  void V1StartStream(std::vector<WatchSpec> specs, bool multi, bool sse, WatchContext ctx) {
    StreamRequest sr;
    sr.watches = std::move(specs);
    sr.multi = multi;
    sr.sse = sse;
    sr.b64 = b64_;
    sr.http_version = version_;
    v1::ApiError e;
    uint64_t progress_ms = 10000;
    if (!query_.Duration("progress", &progress_ms, &e)) {
      ctx.hub->Release(ctx.thread, sr.watches.size());
      return V1Error(e);
    }
    sr.progress = std::chrono::milliseconds(std::max<uint64_t>(progress_ms, 1000));
    sr.require_leader = query_.Flag("require_leader");
    // The answer's head carries the /v1 headers, as of the history's head.
    out_.clear();
    v1_revision_ = ctx.hub->history().revision();
    AppendV1Headers();
    AppendCorsHeaders();
    sr.headers = std::move(out_);
    out_.clear();
    // The stream owns the connection from now on, and counts it.
    struct ConnectionSlot {
      explicit ConnectionSlot(std::shared_ptr<HttpServer::Shared> s) : shared(std::move(s)) {}
      ConnectionSlot(const ConnectionSlot&) = delete;
      ConnectionSlot& operator=(const ConnectionSlot&) = delete;
      ~ConnectionSlot() { shared->connections--; }
      std::shared_ptr<HttpServer::Shared> shared;
    };
    ctx.connection = std::make_shared<ConnectionSlot>(shared_);
    shared_->metrics.Record(route_, method_, 200, std::chrono::steady_clock::now() - started_);
    handed_off_ = true;
    if (counted_) {
      shared_->in_flight--;
      counted_ = false;
    }
    StartWatchStream(stream_.release_socket(), std::move(sr), std::move(ctx));
  }

  void V1LongPoll(WatchSpec spec, WatchContext ctx) {
    PollRequest pr;
    pr.watch = std::move(spec);
    pr.b64 = b64_;
    v1::ApiError e;
    uint64_t limit = 1000, wait_ms = 60000;
    if (!query_.Number("limit", &limit, &e) || !query_.Duration("wait", &wait_ms, &e)) {
      ctx.hub->Release(ctx.thread, 1);
      return V1Error(e);
    }
    pr.limit = std::clamp<uint64_t>(limit, 1, opts().max_range_limit);
    pr.max_bytes = opts().max_range_bytes;
    pr.wait = std::chrono::milliseconds(std::min<uint64_t>(wait_ms, 600000));
    pr.require_leader = query_.Flag("require_leader");
    StartLongPoll(std::move(pr), std::move(ctx),
                  [self = shared_from_this()](unsigned status, std::string body, uint64_t revision,
                                              std::string_view retry_after) {
                    self->v1_revision_ = revision;
                    self->content_type_ = kContentType;
                    self->Respond(static_cast<http::status>(status), body, retry_after);
                  });
  }

  // Refuses query parameters the route does not know (a typo such as
  // ?prefx would otherwise silently read one key).
  bool V1Params(std::vector<std::string_view> known) {
    known.push_back("encoding");
    if (auto u = query_.Unknown(known)) {
      V1Error(400, "invalid_argument", "unknown query parameter \"" + *u + "\"");
      return false;
    }
    return true;
  }

  // The read level of a /v1 read: linearizable (ReadIndex) by default;
  // `stale` (or consistency=stale) reads this node's state; min_revision=N
  // waits until this node has applied N. Calls serve() on the session's
  // thread when the read may be served.
  void V1Read(std::function<void()> serve) {
    std::string_view consistency = query_.Get("consistency").value_or("linearizable");
    if (consistency != "linearizable" && consistency != "stale") {
      return V1Error(400, "invalid_argument", "\"consistency\" must be linearizable or stale");
    }
    bool stale = consistency == "stale" || query_.Flag("stale");
    v1::ApiError e;
    uint64_t min_rev = 0;
    if (!query_.Number("min_revision", &min_rev, &e)) return V1Error(e);
    // max_staleness bounds a stale read by how long ago this node last heard
    // from the leader (rqlite's freshness); a linearizable read meets any bound.
    uint64_t max_staleness_ms = 0;
    bool bounded = query_.Has("max_staleness");
    if (!query_.Duration("max_staleness", &max_staleness_ms, &e)) return V1Error(e);
    if (stale && bounded) {
      int64_t since = shared_->replica->MillisSinceLeaderContact();
      if (since > static_cast<int64_t>(max_staleness_ms)) {
        return V1Error(503, "stale_too_old",
                       since == INT64_MAX
                           ? std::string("this node has not heard from a leader")
                           : "this node last heard from the leader " + std::to_string(since) +
                                 " ms ago, more than max_staleness",
                       "", "1");
      }
    }
    if (stale && shared_->kv->revision() >= min_rev) return serve();
    // Linearizable, or stale but behind min_revision: a read barrier brings
    // this node up to the leader's commit index, which covers every
    // revision that exists.
    shared_->replica->ReadBarrier(
        [self = shared_from_this(), serve = std::move(serve), min_rev](Outcome o) {
          self->Later([self, o = std::move(o), serve = std::move(serve), min_rev] {
            if (!o.ok()) return self->V1OutcomeError(o, false);
            uint64_t rev = self->shared_->kv->revision();
            if (rev < min_rev) {
              return self->V1Error(400, "invalid_argument",
                                   "min_revision " + std::to_string(min_rev) +
                                       " is past the cluster's revision " + std::to_string(rev));
            }
            serve();
          });
        });
  }

  void V1Get() {
    if (!V1Params({"consistency", "stale", "min_revision", "max_staleness", "raw"})) return;
    V1Read([this] {
      kv::TxnOp get;
      get.kind = kv::TxnOpKind::kGet;
      get.keys = kv::KeyRange{key_, "", false};
      kv::Result r = shared_->kv->Read(get);
      v1_revision_ = r.revision;
      const kv::OpResult& o = r.ops[0];
      if (!o.found) return V1Error(404, "key_not_found", "key not found");
      etag_ = "\"" + std::to_string(o.kv.meta.mod_revision) + "\"";
      if (query_.Flag("raw")) {
        content_type_ = "application/octet-stream";
        return Respond(http::status::ok, o.kv.value);
      }
      std::string body;
      v1::AppendKv(&body, o.kv, b64_);
      Respond(http::status::ok, body);
    });
  }

  void V1Range() {
    if (!V1Params({"prefix", "consistency", "stale", "min_revision", "max_staleness", "limit",
                   "continue", "keys_only", "count_only"})) {
      return;
    }
    v1::Limits l = Limits();
    v1::ApiError e;
    uint64_t limit = l.default_range_limit;
    if (!query_.Number("limit", &limit, &e)) return V1Error(e);
    if (limit == 0 || limit > l.max_range_limit) limit = l.max_range_limit;
    range_ = kv::TxnOp{};
    range_.kind = kv::TxnOpKind::kRange;
    range_end_ = kv::PrefixEnd(key_);
    range_start_ = key_;
    first_revision_ = 0;
    if (auto token = query_.Get("continue")) {
      std::string last;
      if (!v1::ParseContinueToken(*token, &last, &first_revision_) || !last.starts_with(key_)) {
        return V1Error(400, "invalid_argument", "malformed \"continue\" token for this prefix");
      }
      range_start_ = last + '\0';  // The first key after the last one served.
    }
    range_.keys = kv::KeyRange{range_start_, range_end_, true};
    range_.limit = limit;
    range_.max_bytes = l.max_range_bytes;
    range_.flags = (query_.Flag("keys_only") ? kv::kKeysOnly : 0) |
                   (query_.Flag("count_only") ? kv::kCountOnly : 0);
    V1Read([this] {
      kv::Result r = shared_->kv->Read(range_);
      v1_revision_ = r.revision;
      const kv::OpResult& o = r.ops[0];
      uint64_t first = first_revision_ != 0 ? first_revision_ : r.revision;
      std::string body = "{\"revision\":" + std::to_string(first);
      if (range_.flags & kv::kCountOnly) {
        body += ",\"count\":" + std::to_string(o.count) + "}";
        return Respond(http::status::ok, body);
      }
      body += ",\"kvs\":";
      v1::AppendKvs(&body, o.kvs, b64_, (range_.flags & kv::kKeysOnly) == 0);
      if (o.more) {
        body +=
            ",\"more\":true,\"continue\":\"" + v1::ContinueToken(o.kvs.back().key, first) + "\"}";
      } else {
        body += ",\"more\":false,\"watch_from\":" + std::to_string(first + 1) + "}";
      }
      Respond(http::status::ok, body);
    });
  }

  // Conditions of a single-key write: if_mod_revision, if_version (0: must
  // not exist), If-Match: "N", If-None-Match: *.
  bool V1Conditions(std::vector<kv::Compare>* out) {
    v1::ApiError e;
    auto number = [&](std::string_view name, kv::Target t) {
      if (!query_.Has(name)) return true;
      uint64_t n = 0;
      if (!query_.Number(name, &n, &e)) return false;
      kv::Compare c;
      c.keys = kv::KeyRange{key_, "", false};
      c.target = t;
      c.op = kv::CmpOp::kEqual;
      c.number = n;
      out->push_back(c);
      return true;
    };
    if (!number("if_mod_revision", kv::Target::kModRevision) ||
        !number("if_version", kv::Target::kVersion)) {
      V1Error(e);
      return false;
    }
    auto& req = parser_->get();
    std::string_view match = req[http::field::if_match];
    if (!match.empty()) {
      uint64_t n = 0;
      if (match.size() < 3 || match.front() != '"' || match.back() != '"' ||
          std::from_chars(match.data() + 1, match.data() + match.size() - 1, n).ptr !=
              match.data() + match.size() - 1) {
        V1Error(400, "invalid_argument", "If-Match must be a quoted mod_revision, as the ETag");
        return false;
      }
      kv::Compare c;
      c.keys = kv::KeyRange{key_, "", false};
      c.target = kv::Target::kModRevision;
      c.number = n;
      out->push_back(c);
    }
    std::string_view none = req[http::field::if_none_match];
    if (!none.empty()) {
      if (none != "*") {
        V1Error(400, "invalid_argument", "If-None-Match takes only *");
        return false;
      }
      kv::Compare c;
      c.keys = kv::KeyRange{key_, "", false};
      c.target = kv::Target::kVersion;
      c.number = 0;
      out->push_back(c);
    }
    return true;
  }

  void V1Put() {
    if (!V1Params({"if_mod_revision", "if_version", "prev_kv", "raw"})) return;
    uint64_t lease = 0;
    if (query_.Flag("raw")) {
      value_ = parser_->get().body();
    } else {
      v1::ApiError e;
      if (!v1::ParsePutBody(parser_->get().body(), &value_, &lease, &e)) return V1Error(e);
    }
    if (value_.size() > opts().max_value_bytes) {
      return V1Error(413, "value_too_large",
                     "value longer than " + std::to_string(opts().max_value_bytes) + " bytes");
    }
    std::vector<kv::Compare> compares;
    if (!V1Conditions(&compares)) return;
    bool prev = query_.Flag("prev_kv");
    txn_ = v1::TxnRequest{};
    kv::TxnOp put;
    put.kind = kv::TxnOpKind::kPut;
    put.keys = kv::KeyRange{key_, "", false};
    put.value = value_;
    put.lease = lease;
    put.flags = prev ? kv::kWantPrevKv : 0;
    if (compares.empty() && !prev && lease == 0) {
      return V1Write([this](kv::RequestId id) { return kv::EncodePut(id, key_, value_); },
                     &Session::V1PutAnswer);
    }
    V1SingleOpTxn(std::move(compares), put, true, &Session::V1PutAnswer);
  }

  // A single-key or prefix write with conditions or prev_kv, as a Txn: the
  // op if the compares hold, else (with `get_on_failure`) a get of its key
  // for the 412 answer.
  void V1SingleOpTxn(std::vector<kv::Compare> compares, const kv::TxnOp& op, bool get_on_failure,
                     V1Answer answer) {
    txn_.compares = std::move(compares);
    txn_.success = {op};
    txn_.failure.clear();
    if (get_on_failure) {
      kv::TxnOp get;
      get.kind = kv::TxnOpKind::kGet;
      get.keys = op.keys;
      txn_.failure = {get};
    }
    V1WriteTxn(answer);
  }

  void V1WriteTxn(V1Answer answer) {
    V1Write(
        [this](kv::RequestId id) {
          return kv::EncodeTxn(id, txn_.compares, txn_.success, txn_.failure);
        },
        answer);
  }

  void V1PutAnswer(const kv::Result& r) {
    if (!r.succeeded) return V1CompareFailed(r);
    const kv::OpResult& o = r.ops.at(0);
    std::string body = "{\"revision\":" + std::to_string(r.revision) + ",\"kv\":";
    v1::AppendKv(&body, o.kv, b64_);
    if (query_.Flag("prev_kv")) {
      body += ",\"prev_kv\":";
      if (o.kvs.empty()) {
        body += "null";
      } else {
        v1::AppendKv(&body, o.kvs[0], b64_);
      }
    }
    body += "}";
    Respond(http::status::ok, body);
  }

  // 412 with the key as it is now (the failure branch's get), or null.
  void V1CompareFailed(const kv::Result& r) {
    std::string extra = ",\"kv\":";
    if (!r.ops.empty() && r.ops[0].found) {
      v1::AppendKv(&extra, r.ops[0].kv, b64_);
    } else {
      extra += "null";
    }
    V1Error(412, "compare_failed", "the condition does not hold", extra);
  }

  void V1Delete(bool prefix) {
    if (prefix ? !V1Params({"prefix", "if_max_mod_revision", "limit", "prev_kv"})
               : !V1Params({"if_mod_revision", "if_version", "prev_kv"})) {
      return;
    }
    bool prev = query_.Flag("prev_kv");
    txn_ = v1::TxnRequest{};
    kv::TxnOp del;
    del.kind = kv::TxnOpKind::kDelete;
    del.flags = prev ? kv::kWantPrevKv : 0;
    std::vector<kv::Compare> compares;
    if (prefix) {
      range_end_ = kv::PrefixEnd(key_);
      del.keys = kv::KeyRange{key_, range_end_, true};
      v1::ApiError e;
      if (!query_.Number("limit", &del.limit, &e)) return V1Error(e);
      if (del.limit == 0) del.max_keys = opts().max_delete_keys;
      uint64_t max_mod = 0;
      if (query_.Has("if_max_mod_revision")) {
        if (!query_.Number("if_max_mod_revision", &max_mod, &e)) return V1Error(e);
        kv::Compare c;
        c.keys = del.keys;
        c.target = kv::Target::kModRevision;
        c.op = kv::CmpOp::kLess;
        c.number = max_mod + 1;
        // A prefix compare on an empty range compares one absent key (0),
        // which is < max_mod + 1: no keys, no objection.
        compares.push_back(c);
      }
    } else {
      del.keys = kv::KeyRange{key_, "", false};
      if (!V1Conditions(&compares)) return;
    }
    if (compares.empty() && !prev) {
      txn_.success = {del};
      return V1Write([this](kv::RequestId id) { return kv::EncodeDelete(id, txn_.success[0]); },
                     &Session::V1DeleteAnswer);
    }
    V1SingleOpTxn(std::move(compares), del, !prefix, &Session::V1DeleteAnswer);
  }

  void V1DeleteAnswer(const kv::Result& r) {
    if (!r.succeeded) return V1CompareFailed(r);
    const kv::OpResult& o = r.ops.at(0);
    std::string body =
        "{\"revision\":" + std::to_string(r.revision) + ",\"deleted\":" + std::to_string(o.deleted);
    if (txn_.success[0].keys.range) body += o.more ? ",\"more\":true" : ",\"more\":false";
    if (query_.Flag("prev_kv")) {
      body += ",\"prev_kvs\":";
      v1::AppendKvs(&body, o.kvs, b64_);
    }
    body += "}";
    Respond(http::status::ok, body);
  }

  void V1Txn() {
    if (!V1Params({"consistency", "stale", "min_revision", "max_staleness"})) return;
    txn_ = v1::TxnRequest{};
    arena_ = v1::Arena{};
    v1::ApiError e;
    if (!v1::ParseTxn(parser_->get().body(), Limits(), &arena_, &txn_, &e)) return V1Error(e);
    if (!txn_.writes) {
      return V1Read([this] {
        kv::Result r = shared_->kv->ReadTxn(txn_.compares, txn_.success, txn_.failure);
        v1_revision_ = r.revision;
        V1TxnAnswer(r);
      });
    }
    V1WriteTxn(&Session::V1TxnAnswer);
  }

  void V1TxnAnswer(const kv::Result& r) {
    (r.succeeded ? shared_->metrics.txn_succeeded : shared_->metrics.txn_failed).Add();
    Respond(http::status::ok, v1::TxnJson(r, txn_, b64_));
  }

  // A /v1 write: forwarded by a follower, proposed by the leader; once
  // applied, a result code that changed nothing becomes its error, else
  // `answer` writes the body.
  void V1Write(std::function<std::string(kv::RequestId)> encode, V1Answer answer) {
    if (std::string h = shared_->replica->health(); !h.empty()) {
      return V1Error(503, "storage_failed", h, "", "1");
    }
    auto view = shared_->replica->view();
    if (!view->IsLeader()) return Forward(*view, true);
    kv::RequestId id = RequestIdOf();
    std::string command = encode(id);
    // A command of the newer language waits until every member speaks it:
    // a member of the first release would stop at it (docs/http-api.md,
    // "Upgrades").
    if (kv::ProtoOf(command) > 1 && shared_->proto != nullptr &&
        shared_->proto->ClusterProto() < kv::ProtoOf(command)) {
      return V1Error(503, "cluster_upgrading",
                     "a member does not speak this request's command language yet (a rolling "
                     "upgrade in progress, or a member not heard from)",
                     "", "1");
    }
    shared_->replica->Propose(
        std::move(command), id, [self = shared_from_this(), answer](Outcome o) {
          self->Later([self, o = std::move(o), answer] {
            if (o.code == Code::kNotLeader)
              return self->Forward(*self->shared_->replica->view(), true);
            if (!o.ok()) return self->V1OutcomeError(o, true);
            self->v1_revision_ = o.index;
            if (!o.result) return self->V1Error(500, "internal", "the write's result was lost");
            const kv::Result& r = *o.result;
            switch (r.code) {
              case kv::ResultCode::kOk:
                return (self.get()->*answer)(r);
              case kv::ResultCode::kLeaseNotFound:
                return self->V1Error(404, "lease_not_found", "the lease does not exist");
              case kv::ResultCode::kLeaseExists:
                return self->V1Error(409, "lease_exists", "a lease with this id exists");
              case kv::ResultCode::kTooManyKeys:
                return self->V1Error(413, "too_many_keys",
                                     "more than " + std::to_string(self->opts().max_delete_keys) +
                                         " keys match (--max-delete-keys); give a limit");
            }
            self->V1Error(500, "internal", "unknown result");
          });
        });
  }

  kv::RequestId RequestIdOf() {
    kv::RequestId id;
    std::string_view fwd_id = parser_->get()[kRequestIdHeader];
    if (fwd_id.empty() || !ParseRequestId(fwd_id, &id)) {
      id = kv::RequestId{shared_->replica->self().id, shared_->replica->NextSeq()};
    }
    return id;
  }

  SessionStream stream_;
  std::shared_ptr<HttpServer::Shared> shared_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string out_;  // The answer being written.
  unsigned version_ = 0;
  bool keep_alive_ = true;
  bool counted_ = false;
  // The connection went to a watch stream, which now counts it.
  bool handed_off_ = false;
  // For /metrics: the request's route template, method and start.
  Route route_ = Route::kOther;
  http::verb method_ = http::verb::unknown;
  std::chrono::steady_clock::time_point started_;
  // A lease request's parsed fields (kept for the encode callback).
  uint64_t lease_ttl_ms_ = 0;
  uint64_t lease_id_ = 0;
  std::vector<uint64_t> lease_ids_;
  bool lease_batch_ = false;
  // The allowed Origin of this request (CORS), or empty.
  std::string cors_origin_;
  // More header lines for the next answer ("\r\nName: value"...).
  std::string_view extra_headers_;
  std::string key_;
  std::string value_;
  MemberInfo join_;
  MemberInfo member_;                        // The /v1/members request's member.
  std::string snapshot_headers_;             // Held while extra_headers_ points at them.
  std::shared_ptr<void> backup_slot_;        // This node's one backup, while it is written.
  std::optional<asio::steady_timer> timer_;  // AfterLeaderMoved's polls.
  // The /v1 request being served.
  bool v1_ = false;
  uint64_t v1_revision_ = 0;  // X-Raftkv-Revision; 0: the store's.
  bool b64_ = false;
  std::string etag_;
  std::string_view content_type_ = kContentType;
  std::vector<std::pair<std::string, std::string>> relayed_headers_;
  v1::Query query_;
  v1::TxnRequest txn_;
  v1::Arena arena_;
  kv::TxnOp range_;
  std::string range_start_, range_end_;
  uint64_t first_revision_ = 0;
  size_t drained_ = 0;
  std::array<char, 4096> drain_buf_;
};

// ---------------------------------------------------------------------------

HttpServer::HttpServer(asio::io_context& io, std::vector<asio::io_context*> session_ios,
                       HttpOptions options, Replica* replica, kv::Store* kv, Forwarder* forwarder,
                       const transport::Transport* transport, const ProtoWatch* proto,
                       WatchHub* watches)
    : io_(io),
      session_ios_(std::move(session_ios)),
      shared_(std::make_shared<Shared>()),
      acceptor_(asio::make_strand(io)) {
  RAFT_ASSERT(!session_ios_.empty(), "HttpServer needs an io_context for sessions");
  shared_->options = std::move(options);
  shared_->replica = replica;
  shared_->kv = kv;
  shared_->forwarder = forwarder;
  shared_->transport = transport;
  shared_->proto = proto;
  shared_->watches = watches;
}

HttpServer::~HttpServer() {
  // The io threads are stopped by now: close directly.
  error_code ignored;
  acceptor_.close(ignored);
}

raft::Status HttpServer::Listen() {
  const std::string& address = shared_->options.address;
  raft::Status s = transport::Listen(io_, &acceptor_, address);
  if (!s.ok()) return s;
  Accept();
  return raft::Status::Ok();
}

void HttpServer::Accept() {
  asio::io_context& session_io = *session_ios_[next_io_++ % session_ios_.size()];
  acceptor_.async_accept(session_io, [this](error_code ec, SessionSocket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      spdlog::warn("http listener: accept: {}", ec.message());
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
      timer->async_wait([this, timer](error_code) { Accept(); });
      return;
    }
    size_t n = ++shared_->connections;
    auto session = std::make_shared<Session>(std::move(socket), shared_);
    if (n > shared_->options.max_connections) {
      session->Refuse();
    } else {
      session->Start();
    }
    Accept();
  });
}

void HttpServer::StopAccepting() {
  shared_->draining = true;
  asio::post(acceptor_.get_executor(), [this] {
    error_code ignored;
    acceptor_.close(ignored);
  });
}

}  // namespace raftkv::server
