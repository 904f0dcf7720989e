// A client of raftkv's watch streams for tests: one connection, a request,
// then the answer's messages one at a time (NDJSON lines or SSE events, the
// chunked framing removed), each read with a deadline. Plain POSIX sockets,
// so that a test can also stop reading and let the server's buffer fill.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace raftkv::itest {

class StreamClient {
 public:
  // Connects to 127.0.0.1:port and sends the request. `rcvbuf` (> 0) shrinks
  // the socket's receive buffer (a consumer that stops reading fills up sooner).
  StreamClient(uint16_t port, const std::string& method, const std::string& target,
               const std::string& body = "",
               const std::vector<std::pair<std::string, std::string>>& headers = {},
               int rcvbuf = 0);
  ~StreamClient();
  StreamClient(const StreamClient&) = delete;
  StreamClient& operator=(const StreamClient&) = delete;

  // Reads the status line and headers (false on timeout or a closed connection).
  bool ReadHead(std::chrono::milliseconds timeout);
  int status() const { return status_; }
  std::string Header(const std::string& lower_name) const;
  // The next message: an NDJSON line, or an SSE event's "data:" (its "id:"
  // in *id when asked). nullopt on timeout or when the stream ended
  // (ended() then says so). Reads the head first if not read yet.
  std::optional<std::string> Next(std::chrono::milliseconds timeout, std::string* id = nullptr);
  // The stream ended: the server closed it (after the last chunk, if chunked).
  bool ended() const { return ended_; }
  // For a non-stream answer: the whole body (read until its length or EOF).
  std::string ReadBody(std::chrono::milliseconds timeout);
  void Close();

 private:
  // Reads more bytes into raw_ until the deadline; false on timeout or EOF.
  bool Fill(std::chrono::steady_clock::time_point deadline);
  // Moves complete chunks from raw_ to body_ (or everything when not chunked).
  void Dechunk();

  int fd_ = -1;
  std::string raw_;   // Bytes read, not yet parsed.
  std::string body_;  // The answer's body, de-chunked, not yet returned.
  bool head_read_ = false;
  bool chunked_ = false;
  bool sse_ = false;
  bool eof_ = false;
  bool ended_ = false;
  int status_ = 0;
  std::map<std::string, std::string> headers_;
};

}  // namespace raftkv::itest
