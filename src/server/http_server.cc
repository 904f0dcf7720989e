#include "server/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <optional>

#include "kv/command.h"
#include "server/json.h"
#include "transport/transport.h"

namespace raftkv::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using asio::ip::tcp;
using boost::system::error_code;
// Sessions run on an io_context served by one thread: their executor is the
// context's own, not a strand, and not type-erased.
using SessionExecutor = asio::io_context::executor_type;
using SessionSocket = asio::basic_stream_socket<tcp, SessionExecutor>;
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

  ~Session() { shared_->connections--; }

  void Start() {
    error_code ignored;
    stream_.socket().set_option(tcp::no_delay(true), ignored);
    ReadHeader();
  }

  // Answers 503 at once and closes: over the connection limit.
  void Refuse() {
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
    if (shared_->draining) {
      keep_alive_ = false;
      return Error(http::status::service_unavailable, "the node is shutting down", "1");
    }
    auto& req = parser_->get();
    std::string_view target(req.target().data(), req.target().size());
    size_t q = target.find('?');
    std::string_view path = target.substr(0, q);
    std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
    http::verb method = req.method();
    // Every answer carries a body; a HEAD client would take it for the next
    // response, so do not keep its connection.
    if (method == http::verb::head) keep_alive_ = false;

    if (path.starts_with("/keys/")) {
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
      if (method != http::verb::post) {
        return Error(http::status::method_not_allowed, "method not allowed", "", "POST");
      }
      return HandleJoin();
    }
    if (path == "/status" || path == "/status/") {
      if (method != http::verb::get) {
        return Error(http::status::method_not_allowed, "method not allowed", "", "GET");
      }
      return HandleStatus();
    }
    if (path == "/health" || path == "/health/") {
      if (method != http::verb::get) {
        return Error(http::status::method_not_allowed, "method not allowed", "", "GET");
      }
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
    kv::RequestId id;
    std::string_view fwd_id = parser_->get()[kRequestIdHeader];
    if (fwd_id.empty() || !ParseRequestId(fwd_id, &id)) {
      id = kv::RequestId{shared_->replica->self().id, shared_->replica->NextSeq()};
    }
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
    if (!view->IsLeader()) return Forward(*view, false);
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
          return self->Forward(*self->shared_->replica->view(), false);
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

  // --- Forwarding to the leader ------------------------------------------------

  void Forward(const ClusterView& view, bool is_write) {
    auto& req = parser_->get();
    int hops = 0;
    std::string_view h = req[kHopsHeader];
    std::from_chars(h.data(), h.data() + h.size(), hops);
    const MemberView* leader = view.Find(view.leader);
    if (view.leader == raft::kNoNode || view.leader == view.self || leader == nullptr ||
        leader->info.http.empty()) {
      return Error(http::status::service_unavailable, "no leader", "1");
    }
    if (hops >= opts().max_forward_hops) {
      return Error(http::status::service_unavailable, "no stable leader (forwarded too often)",
                   "1");
    }
    ForwardRequest fr;
    fr.method = req.method();
    fr.target = std::string(req.target());
    fr.body = std::move(req.body());
    fr.headers.emplace_back(std::string(kHopsHeader), std::to_string(hops + 1));
    if (is_write) {
      std::string_view fwd_id = req[kRequestIdHeader];
      kv::RequestId id;
      if (fwd_id.empty() || !ParseRequestId(fwd_id, &id)) {
        id = kv::RequestId{shared_->replica->self().id, shared_->replica->NextSeq()};
      }
      fr.headers.emplace_back(std::string(kRequestIdHeader), FormatRequestId(id));
    }
    std::string leader_name = leader->info.name;
    shared_->forwarder->Send(
        leader->info.http, std::move(fr),
        [self = shared_from_this(), leader_name](ForwardResponse r) {
          self->Later([self, r = std::move(r), leader_name]() mutable {
            switch (r.error) {
              case ForwardResponse::Error::kNone:
                return self->Respond(static_cast<http::status>(r.status), r.body, r.retry_after);
              case ForwardResponse::Error::kUnreachable:
                return self->Error(http::status::service_unavailable,
                                   "leader " + leader_name + " unreachable: " + r.message, "1");
              case ForwardResponse::Error::kNoAnswer:
                return self->Error(http::status::gateway_timeout,
                                   "the leader " + leader_name + " did not answer (" + r.message +
                                       "); the request's outcome is unknown");
            }
          });
        });
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
    bool keep = keep_alive_ && !shared_->draining;
    out_.clear();
    out_ += version_ == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    AppendNumber(static_cast<unsigned>(status));
    out_ += ' ';
    beast::string_view reason = http::obsolete_reason(status);
    out_.append(reason.data(), reason.size());
    out_ += "\r\nContent-Type: ";
    out_ += kContentType;
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
                        if (ec) return self->Close();
                        if (!keep) return self->LingerClose();
                        self->ReadHeader();
                      });
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

  SessionStream stream_;
  std::shared_ptr<HttpServer::Shared> shared_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string out_;  // The answer being written.
  unsigned version_ = 0;
  bool keep_alive_ = true;
  bool counted_ = false;
  std::string key_;
  std::string value_;
  MemberInfo join_;
  size_t drained_ = 0;
  std::array<char, 4096> drain_buf_;
};

// ---------------------------------------------------------------------------

HttpServer::HttpServer(asio::io_context& io, std::vector<asio::io_context*> session_ios,
                       HttpOptions options, Replica* replica, kv::Store* kv, Forwarder* forwarder,
                       const transport::Transport* transport)
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
