// Forwarder: an HTTP/1.1 client (Boost.Beast) with a keep-alive connection
// pool per address. Followers relay writes and joins to the leader's HTTP
// address through it, and a joining node uses it to ask to be added.
//
// Threads: Send may be called from any thread; `done` runs on an io thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace raftkv::server {

struct ForwardRequest {
  boost::beast::http::verb method = boost::beast::http::verb::post;
  std::string target;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct ForwardResponse {
  enum class Error {
    kNone,         // status/body/retry_after hold the answer.
    kUnreachable,  // Nothing was sent (resolve or connect failed).
    kNoAnswer,     // The request may have been received; no complete answer came.
  };
  Error error = Error::kNone;
  unsigned status = 0;
  std::string body;
  std::string retry_after;
  // The answer's X-Raftkv-* and ETag headers, relayed to the client.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string message;  // Why, when error != kNone.
};

class Forwarder {
 public:
  // `timeout` bounds connect, write and read of one request.
  Forwarder(boost::asio::io_context& io, std::chrono::milliseconds timeout,
            size_t max_idle_per_address = 64);
  ~Forwarder();
  Forwarder(const Forwarder&) = delete;
  Forwarder& operator=(const Forwarder&) = delete;

  void Send(const std::string& address, ForwardRequest req,
            std::function<void(ForwardResponse)> done);
  // Closes idle connections; later Sends fail with kUnreachable.
  void Stop();

 private:
  class Op;
  struct Idle {
    std::unique_ptr<boost::beast::tcp_stream> stream;
    std::chrono::steady_clock::time_point since;
  };

  std::unique_ptr<boost::beast::tcp_stream> TakeIdle(const std::string& address);
  void ReturnIdle(const std::string& address, std::unique_ptr<boost::beast::tcp_stream> stream);

  boost::asio::io_context& io_;
  const std::chrono::milliseconds timeout_;
  const size_t max_idle_per_address_;
  std::mutex mu_;
  bool stopped_ = false;
  std::map<std::string, std::vector<Idle>> idle_;
};

}  // namespace raftkv::server
