#include "http_client.h"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <thread>

#include "version.h"

namespace raftkv::ctl {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

Clock::time_point ReadAttemptDeadline(Clock::time_point overall, milliseconds timeout,
                                      size_t endpoints) {
  const milliseconds share = timeout / static_cast<int64_t>(std::max<size_t>(endpoints, 1));
  return std::min(overall, Clock::now() + std::max(kMinReadAttempt, share));
}

std::string Describe(const error_code& ec) {
  if (ec == beast::error::timeout) return "timed out";
  if (ec == http::error::end_of_stream || ec == asio::error::eof) {
    return "the connection was closed";
  }
  return ec.message();
}

// --- Connection --------------------------------------------------------------

Connection::Connection(Endpoint endpoint) : endpoint_(std::move(endpoint)) {}

Connection::~Connection() { Close(); }

template <typename Start>
error_code Connection::Run(Clock::time_point deadline, Start&& start) {
  stream_->expires_at(deadline);
  error_code result = asio::error::would_block;
  start([&result](error_code ec, auto&&...) { result = ec; });
  ioc_.restart();
  ioc_.run();
  return result;
}

error_code Connection::Connect(Clock::time_point deadline) {
  Close();
  error_code ec;
  std::vector<tcp::endpoint> targets;
  asio::ip::address address = asio::ip::make_address(endpoint_.host, ec);
  if (!ec) {
    targets.emplace_back(address, endpoint_.port);
  } else {
    tcp::resolver resolver(ioc_);
    auto results = resolver.resolve(endpoint_.host, std::to_string(endpoint_.port), ec);
    if (ec) return ec;
    for (const auto& r : results) targets.push_back(r.endpoint());
  }
  stream_.emplace(ioc_);
  ec = Run(deadline, [&](auto handler) { stream_->async_connect(targets, handler); });
  if (ec) Close();
  return ec;
}

error_code Connection::Write(const Request& request, Clock::time_point deadline) {
  http::request<http::string_body> req{request.method, request.target, 11};
  req.set(http::field::host, endpoint_.ToString());
  req.set(http::field::user_agent, "raftkvctl/" RAFTKV_VERSION);
  if (!request.body.empty() || request.method == http::verb::post ||
      request.method == http::verb::put) {
    req.set(http::field::content_type, "application/json");
    req.body() = request.body;
    req.prepare_payload();
  }
  error_code ec = Run(deadline, [&](auto handler) { http::async_write(*stream_, req, handler); });
  if (ec) Close();
  return ec;
}

error_code Connection::Read(Reply* out, bool* got_some, Clock::time_point deadline) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxReplyBytes);
  error_code ec =
      Run(deadline, [&](auto handler) { http::async_read(*stream_, buffer_, parser, handler); });
  *got_some = parser.got_some();
  if (ec) {
    Close();
    return ec;
  }
  http::response<http::string_body> res = parser.release();
  out->status = res.result_int();
  out->body = std::move(res.body());
  out->retry_after = std::string(res[http::field::retry_after]);
  out->endpoint = endpoint_.ToString();
  if (!res.keep_alive()) Close();
  return ec;
}

error_code Connection::ReadHead(int* status, Clock::time_point deadline) {
  streaming_.emplace();
  streaming_->body_limit(boost::none);  // A watch stream has no end.
  error_code ec = Run(deadline, [&](auto handler) {
    http::async_read_header(*stream_, buffer_, *streaming_, handler);
  });
  if (ec) {
    Close();
    return ec;
  }
  *status = streaming_->get().result_int();
  return ec;
}

error_code Connection::ReadSome(std::string* out, bool* done, Clock::time_point deadline) {
  *done = streaming_->is_done();
  if (*done) return {};
  char chunk[16384];
  auto& body = streaming_->get().body();
  body.data = chunk;
  body.size = sizeof chunk;
  error_code ec = Run(deadline, [&](auto handler) {
    http::async_read_some(*stream_, buffer_, *streaming_, handler);
  });
  if (ec == http::error::need_buffer) ec = {};  // The chunk buffer is full: not an error.
  out->append(chunk, sizeof chunk - body.size);
  body.data = nullptr;
  *done = streaming_->is_done();
  if (ec) Close();
  return ec;
}

std::string Connection::Header(std::string_view name) const {
  if (!streaming_) return "";
  return std::string(streaming_->get()[name]);
}

std::optional<uint64_t> Connection::ContentLength() const {
  if (!streaming_) return std::nullopt;
  boost::optional<uint64_t> length = streaming_->content_length();
  if (!length) return std::nullopt;
  return *length;
}

Reply Connection::ReadRefusal(int status, Clock::time_point deadline) {
  Reply r;
  r.status = status;
  r.endpoint = endpoint_.ToString();
  r.retry_after = Header("Retry-After");
  bool done = false;
  while (!done && r.body.size() < kMaxRefusalBytes) {
    if (ReadSome(&r.body, &done, deadline)) break;
  }
  return r;
}

void Connection::Close() {
  if (!stream_) return;
  error_code ignored;
  stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream_->socket().close(ignored);
  stream_.reset();
  buffer_.clear();
  streaming_.reset();
}

// --- Client ------------------------------------------------------------------

namespace {

// "503 no_leader: no leader", from a /v1 error body (or the legacy one).
std::string Summary(const Reply& r) {
  std::string out = std::to_string(r.status);
  error_code ec;
  boost::json::value v = boost::json::parse(r.body, ec);
  if (ec || !v.is_object()) return out;
  const auto& o = v.get_object();
  if (auto* code = o.if_contains("code"); code && code->is_string()) {
    out += " " + std::string(code->get_string());
  }
  if (auto* error = o.if_contains("error"); error && error->is_string()) {
    out += ": " + std::string(error->get_string());
  }
  return out;
}

milliseconds RetryAfter(const Reply& r) {
  uint64_t seconds = 0;
  if (ParseNumber("Retry-After", r.retry_after, &seconds).ok()) {
    return milliseconds(std::min<uint64_t>(seconds, 3600) * 1000);
  }
  return milliseconds(0);
}

}  // namespace

Client::Client(std::vector<Endpoint> endpoints, milliseconds timeout, bool keep_alive)
    : endpoints_(std::move(endpoints)), timeout_(timeout), keep_alive_(keep_alive) {
  connections_.resize(endpoints_.size());
}

Client::~Client() = default;

Client::Attempt Client::Try(size_t index, const Request& request, Clock::time_point deadline,
                            Reply* out, std::string* failure) {
  std::unique_ptr<Connection>& conn = connections_[index];
  if (!conn) conn = std::make_unique<Connection>(endpoints_[index]);
  if (!conn->is_open()) {
    auto connect_deadline = std::min(deadline, Clock::now() + kConnectTimeout);
    if (error_code ec = conn->Connect(connect_deadline)) {
      *failure = "connect: " + Describe(ec);
      return Attempt::kNotSent;
    }
  }
  // A request not written whole cannot have been applied: the server parses
  // a request only once it has all of it (Content-Length).
  if (error_code ec = conn->Write(request, deadline)) {
    *failure = "sending: " + Describe(ec);
    return Attempt::kNotSent;
  }
  // From here the server may have applied it, even without an answer (a
  // kept-alive connection it closed meanwhile looks the same): only a
  // request that may be repeated is sent again.
  bool got_some = false;
  error_code ec = conn->Read(out, &got_some, deadline);
  if (!keep_alive_) conn->Close();
  if (ec) {
    *failure = Describe(ec) + (got_some ? " while reading the answer" : " before any answer");
    return Attempt::kNoAnswer;
  }
  return Attempt::kAnswered;
}

Status Client::Send(const Request& request, Reply* out) {
  const Clock::time_point deadline = Clock::now() + timeout_;
  const size_t n = endpoints_.size();
  std::vector<std::string> failures(n);
  milliseconds backoff(100);
  int attempts = 0;
  for (int round = 0; round < kMaxRounds && Clock::now() < deadline; round++) {
    milliseconds wait = backoff;
    for (size_t k = 0; k < n && Clock::now() < deadline; k++) {
      const size_t index = (preferred_ + k) % n;
      attempts++;
      std::string failure;
      const Clock::time_point attempt_deadline =
          request.retry == Retry::kAlways ? ReadAttemptDeadline(deadline, timeout_, n) : deadline;
      switch (Try(index, request, attempt_deadline, out, &failure)) {
        case Attempt::kNotSent:
          failures[index] = failure;
          continue;
        case Attempt::kNoAnswer:
          failures[index] = failure;
          if (request.retry == Retry::kAlways) continue;
          return Status(Exit::kOutcomeUnknown, endpoints_[index].ToString() + ": " + failure +
                                                   ": the write may or may not have been applied");
        case Attempt::kAnswered:
          break;
      }
      const bool moves_on =
          out->status == 503 || (out->status == 504 && request.retry == Retry::kAlways);
      if (!moves_on) {
        preferred_ = index;
        return Status::Ok();
      }
      failures[index] = Summary(*out);
      wait = std::max(wait, std::min(RetryAfter(*out), milliseconds(1000)));
    }
    if (round + 1 == kMaxRounds) break;
    // Another round only if its attempt has time to be answered: a write
    // sent at the deadline would end as outcome unknown (7) where stopping
    // now says, truly, not applied (5).
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left < wait + kMinAttemptTime) break;
    std::this_thread::sleep_for(wait);
    backoff = std::min(backoff * 2, milliseconds(1000));
  }
  std::string message = "no endpoint could serve the request (" + std::to_string(attempts) +
                        " attempts within " + std::to_string(timeout_.count()) + " ms):";
  for (size_t i = 0; i < n; i++) {
    message += (i == 0 ? " " : "; ") + endpoints_[i].ToString() + ": " +
               (failures[i].empty() ? "not tried" : failures[i]);
  }
  return Status(Exit::kUnavailable, message);
}

}  // namespace raftkv::ctl
