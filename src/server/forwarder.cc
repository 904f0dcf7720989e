#include "server/forwarder.h"

#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <optional>

#include "transport/transport.h"

namespace raftkv::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;

namespace {
// An idle connection older than this may have been closed by the server
// (whose keep-alive idle timeout is --http-timeout-ms); do not reuse it.
constexpr std::chrono::seconds kMaxIdleAge{10};
constexpr uint64_t kMaxResponseBytes = 64 << 20;

// Whether an idle keep-alive connection can carry a request: the server has
// not closed it (a peek finds no end of stream, no error and no stray bytes).
bool StillOpen(tcp::socket& socket) {
  char byte;
  ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}
}  // namespace

class Forwarder::Op : public std::enable_shared_from_this<Forwarder::Op> {
 public:
  Op(Forwarder* fwd, std::string address, ForwardRequest fr,
     std::function<void(ForwardResponse)> done)
      : fwd_(fwd), address_(std::move(address)), done_(std::move(done)) {
    req_.method(fr.method);
    req_.target(fr.target);
    req_.version(11);
    req_.set(http::field::host, address_);
    req_.set(http::field::content_type, "application/json");
    for (auto& [k, v] : fr.headers) req_.set(k, v);
    req_.keep_alive(true);
    req_.body() = std::move(fr.body);
    req_.prepare_payload();
  }

  void Start() {
    stream_ = fwd_->TakeIdle(address_);
    if (stream_) {
      reused_ = true;
      Write();
    } else {
      Connect();
    }
  }

 private:
  void Connect() {
    reused_ = false;
    std::string host;
    uint16_t port = 0;
    if (!transport::SplitHostPort(address_, &host, &port)) {
      return Finish(ForwardResponse::Error::kUnreachable, "bad address '" + address_ + "'");
    }
    stream_ = std::make_unique<beast::tcp_stream>(asio::make_strand(fwd_->io_));
    if (!resolver_) resolver_.emplace(fwd_->io_);
    resolver_->async_resolve(
        host, std::to_string(port),
        [self = shared_from_this()](error_code ec, tcp::resolver::results_type results) {
          if (ec) {
            return self->Finish(ForwardResponse::Error::kUnreachable, "resolve: " + ec.message());
          }
          self->stream_->expires_after(self->fwd_->timeout_);
          self->stream_->async_connect(results, [self](error_code ec, const tcp::endpoint&) {
            if (ec) {
              return self->Finish(ForwardResponse::Error::kUnreachable, "connect: " + ec.message());
            }
            error_code ignored;
            self->stream_->socket().set_option(tcp::no_delay(true), ignored);
            self->Write();
          });
        });
  }

  void Write() {
    stream_->expires_after(fwd_->timeout_);
    http::async_write(*stream_, req_, [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return self->Failed(ec, false);
      self->Read();
    });
  }

  void Read() {
    parser_.emplace();
    parser_->body_limit(kMaxResponseBytes);
    buffer_.clear();
    http::async_read(*stream_, buffer_, *parser_,
                     [self = shared_from_this()](error_code ec, size_t) {
                       if (ec) return self->Failed(ec, true);
                       self->Done();
                     });
  }

  void Failed(error_code ec, bool request_sent) {
    // A pooled connection that fails while the request is being written
    // (the server closed it meanwhile): the server cannot have a whole
    // request, so sending it on a fresh connection cannot apply it twice.
    // Once the request was written the server may have applied it, even if
    // it then died without answering: that is never retried (the nemesis
    // caught such a retry answering 503 "not applied" for an applied write).
    // TakeIdle drops pooled connections the server has already closed.
    if (reused_ && !request_sent && ec != beast::error::timeout) {
      error_code ignored;
      stream_->socket().close(ignored);
      return Connect();
    }
    Finish(ForwardResponse::Error::kNoAnswer,
           ec == beast::error::timeout ? "no answer within the timeout" : ec.message());
  }

  void Done() {
    http::response<http::string_body> res = parser_->release();
    ForwardResponse r;
    r.status = res.result_int();
    r.retry_after = std::string(res[http::field::retry_after]);
    for (const auto& f : res) {
      std::string_view name(f.name_string().data(), f.name_string().size());
      if (name.size() > 9 && beast::iequals(name.substr(0, 9), "X-Raftkv-")) {
        r.headers.emplace_back(std::string(name), std::string(f.value()));
      } else if (f.name() == http::field::etag || beast::iequals(name, "X-Content-Type-Options")) {
        r.headers.emplace_back(std::string(name), std::string(f.value()));
      }
    }
    r.body = std::move(res.body());
    if (res.keep_alive() && buffer_.size() == 0) {
      stream_->expires_never();
      fwd_->ReturnIdle(address_, std::move(stream_));
    }
    done_(std::move(r));
  }

  void Finish(ForwardResponse::Error error, std::string message) {
    if (stream_) {
      error_code ignored;
      stream_->socket().close(ignored);
    }
    ForwardResponse r;
    r.error = error;
    r.message = std::move(message);
    done_(std::move(r));
  }

  Forwarder* fwd_;
  std::string address_;
  std::function<void(ForwardResponse)> done_;
  std::optional<tcp::resolver> resolver_;  // Only for new connections.
  http::request<http::string_body> req_;
  std::unique_ptr<beast::tcp_stream> stream_;
  bool reused_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

Forwarder::Forwarder(asio::io_context& io, std::chrono::milliseconds timeout,
                     size_t max_idle_per_address)
    : io_(io), timeout_(timeout), max_idle_per_address_(max_idle_per_address) {}

Forwarder::~Forwarder() { Stop(); }

void Forwarder::Send(const std::string& address, ForwardRequest req,
                     std::function<void(ForwardResponse)> done) {
  {
    std::lock_guard lock(mu_);
    if (stopped_) {
      ForwardResponse r;
      r.error = ForwardResponse::Error::kUnreachable;
      r.message = "shutting down";
      asio::post(io_, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
      return;
    }
  }
  std::make_shared<Op>(this, address, std::move(req), std::move(done))->Start();
}

void Forwarder::Stop() {
  std::map<std::string, std::vector<Idle>> idle;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    idle.swap(idle_);
  }
  for (auto& [addr, v] : idle) {
    for (Idle& i : v) {
      error_code ignored;
      i.stream->socket().close(ignored);
    }
  }
}

std::unique_ptr<beast::tcp_stream> Forwarder::TakeIdle(const std::string& address) {
  std::lock_guard lock(mu_);
  auto it = idle_.find(address);
  if (it == idle_.end()) return nullptr;
  auto now = std::chrono::steady_clock::now();
  while (!it->second.empty()) {
    Idle i = std::move(it->second.back());
    it->second.pop_back();
    if (now - i.since < kMaxIdleAge && StillOpen(i.stream->socket())) return std::move(i.stream);
  }
  return nullptr;
}

void Forwarder::ReturnIdle(const std::string& address, std::unique_ptr<beast::tcp_stream> stream) {
  std::lock_guard lock(mu_);
  if (stopped_) return;
  std::vector<Idle>& v = idle_[address];
  if (v.size() >= max_idle_per_address_) return;
  v.push_back(Idle{std::move(stream), std::chrono::steady_clock::now()});
}

}  // namespace raftkv::server
