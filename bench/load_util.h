// Small helpers the bench's load generators (watch_load, lease_load) share:
// base64 for etcd's JSON gateway, "host:port" endpoints and a request head.
#pragma once

#include <boost/asio.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <string>
#include <string_view>

namespace bench {

inline std::string B64(std::string_view s) {
  namespace b = boost::beast::detail::base64;
  std::string out(b::encoded_size(s.size()), '\0');
  out.resize(b::encode(out.data(), s.data(), s.size()));
  return out;
}

inline std::string UnB64(std::string_view s) {
  namespace b = boost::beast::detail::base64;
  std::string out(b::decoded_size(s.size()), '\0');
  auto [n, read] = b::decode(out.data(), s.data(), s.size());
  (void)read;
  out.resize(n);
  return out;
}

inline boost::asio::ip::tcp::endpoint Endpoint(const std::string& addr) {
  size_t colon = addr.rfind(':');
  return boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address(addr.substr(0, colon)),
                                        static_cast<uint16_t>(std::stoi(addr.substr(colon + 1))));
}

inline std::string HttpRequest(const std::string& method, const std::string& target,
                               const std::string& body) {
  return method + " " + target + " HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n" +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace bench
