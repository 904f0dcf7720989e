#include "stream_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace raftkv::itest {

using Clock = std::chrono::steady_clock;

StreamClient::StreamClient(uint16_t port, const std::string& method, const std::string& target,
                           const std::string& body,
                           const std::vector<std::pair<std::string, std::string>>& headers,
                           int rcvbuf) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) return;
  if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Close();
    return;
  }
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST")
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  size_t off = 0;
  while (off < req.size()) {
    ssize_t n = ::send(fd_, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      Close();
      return;
    }
    off += static_cast<size_t>(n);
  }
}

StreamClient::~StreamClient() { Close(); }

void StreamClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool StreamClient::Fill(Clock::time_point deadline) {
  if (fd_ < 0 || eof_) return false;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() < 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
  char buf[16384];
  ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
  if (n <= 0) {
    eof_ = true;
    return false;
  }
  raw_.append(buf, static_cast<size_t>(n));
  return true;
}

bool StreamClient::ReadHead(std::chrono::milliseconds timeout) {
  if (head_read_) return true;
  auto deadline = Clock::now() + timeout;
  size_t end;
  while ((end = raw_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill(deadline)) return false;
  }
  std::string head = raw_.substr(0, end);
  raw_.erase(0, end + 4);
  size_t line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  if (status_line.size() >= 12) status_ = std::atoi(status_line.c_str() + 9);
  size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    if (e == std::string::npos) e = head.size();
    std::string line = head.substr(pos, e - pos);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      headers_[name] = value;
    }
    pos = e + 2;
  }
  chunked_ = Header("transfer-encoding") == "chunked";
  sse_ = Header("content-type").starts_with("text/event-stream");
  head_read_ = true;
  return true;
}

std::string StreamClient::Header(const std::string& lower_name) const {
  auto it = headers_.find(lower_name);
  return it == headers_.end() ? "" : it->second;
}

void StreamClient::Dechunk() {
  if (!chunked_) {
    body_ += raw_;
    raw_.clear();
    if (eof_) ended_ = true;
    return;
  }
  while (true) {
    size_t e = raw_.find("\r\n");
    if (e == std::string::npos) return;
    size_t len = std::strtoul(raw_.substr(0, e).c_str(), nullptr, 16);
    if (raw_.size() < e + 2 + len + 2) return;
    if (len == 0) {
      ended_ = true;
      raw_.clear();
      return;
    }
    body_.append(raw_, e + 2, len);
    raw_.erase(0, e + 2 + len + 2);
  }
}

std::optional<std::string> StreamClient::Next(std::chrono::milliseconds timeout, std::string* id) {
  auto deadline = Clock::now() + timeout;
  if (!ReadHead(timeout)) return std::nullopt;
  while (true) {
    Dechunk();
    if (!sse_) {
      size_t nl = body_.find('\n');
      if (nl != std::string::npos) {
        std::string line = body_.substr(0, nl);
        body_.erase(0, nl + 1);
        return line;
      }
    } else {
      size_t end;
      while ((end = body_.find("\n\n")) != std::string::npos) {
        std::string event = body_.substr(0, end);
        body_.erase(0, end + 2);
        std::string data;
        size_t pos = 0;
        while (pos < event.size()) {
          size_t e = event.find('\n', pos);
          if (e == std::string::npos) e = event.size();
          std::string line = event.substr(pos, e - pos);
          if (line.starts_with("data: ")) data += line.substr(6);
          if (line.starts_with("id: ") && id != nullptr) *id = line.substr(4);
          pos = e + 1;
        }
        if (!data.empty()) return data;  // "retry:" alone is no message.
      }
    }
    if (ended_) return std::nullopt;
    if (!Fill(deadline)) {
      if (eof_) {
        Dechunk();
        ended_ = true;
        if (!sse_ && !body_.empty()) continue;
      }
      return std::nullopt;
    }
  }
}

std::string StreamClient::ReadBody(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  if (!ReadHead(timeout)) return "";
  size_t want = std::strtoul(Header("content-length").c_str(), nullptr, 10);
  while (raw_.size() < want && Fill(deadline)) {
  }
  return raw_.substr(0, want);
}

}  // namespace raftkv::itest
