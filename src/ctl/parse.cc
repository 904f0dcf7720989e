#include "parse.h"

#include <boost/beast/core/detail/base64.hpp>
#include <charconv>

namespace raftkv::ctl {

namespace base64 = boost::beast::detail::base64;

std::string Endpoint::ToString() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// One HOST:PORT; errors name `flag`.
Status ParseEndpoint(std::string_view item, std::string_view flag, Endpoint* out) {
  const std::string quoted = "\"" + std::string(item) + "\"";
  const std::string f(flag);
  if (item.starts_with("https://")) {
    return Status::Usage(f + ": " + quoted + ": https is not supported (plain HTTP only)");
  }
  if (item.starts_with("http://")) item.remove_prefix(7);
  if (item.ends_with("/")) item.remove_suffix(1);
  std::string_view host, port;
  if (item.starts_with("[")) {
    size_t close = item.find(']');
    if (close == std::string_view::npos || close + 1 >= item.size() || item[close + 1] != ':') {
      return Status::Usage(f + ": " + quoted + " is not [IPV6]:PORT");
    }
    host = item.substr(1, close - 1);
    port = item.substr(close + 2);
  } else {
    size_t colon = item.rfind(':');
    if (colon == std::string_view::npos || item.find(':') != colon) {
      return Status::Usage(f + ": " + quoted + " is not HOST:PORT");
    }
    host = item.substr(0, colon);
    port = item.substr(colon + 1);
  }
  if (host.empty()) return Status::Usage(f + ": " + quoted + " has no host");
  for (char c : host) {
    if (c == '/' || c == ' ' || c == '@' || c == '?' || c == '#') {
      return Status::Usage(f + ": " + quoted + " is not HOST:PORT");
    }
  }
  uint64_t p = 0;
  if (Status s = ParseNumber("the port of " + quoted + " in " + f, port, &p, 1, 65535); !s.ok()) {
    return s;
  }
  out->host = std::string(host);
  out->port = static_cast<uint16_t>(p);
  return Status::Ok();
}

}  // namespace

Status ParseEndpoints(std::string_view spec, std::vector<Endpoint>* out, std::string_view source) {
  out->clear();
  while (true) {
    size_t comma = spec.find(',');
    std::string_view item = Trim(spec.substr(0, comma));
    if (!item.empty()) {
      Endpoint e;
      if (Status s = ParseEndpoint(item, source, &e); !s.ok()) return s;
      out->push_back(std::move(e));
    }
    if (comma == std::string_view::npos) break;
    spec.remove_prefix(comma + 1);
  }
  if (out->empty()) {
    return Status::Usage(std::string(source) + ": no endpoint given (HOST:PORT,...)");
  }
  return Status::Ok();
}

Status ParseHostPort(std::string_view flag, std::string_view text, Endpoint* out) {
  if (text.find("://") != std::string_view::npos || text.find(',') != std::string_view::npos ||
      text != Trim(text)) {
    return Status::Usage(std::string(flag) + ": \"" + std::string(text) + "\" is not HOST:PORT");
  }
  return ParseEndpoint(text, flag, out);
}

Status ParseDuration(std::string_view flag, std::string_view text, std::chrono::milliseconds* out) {
  const std::string bad = std::string(flag) + ": \"" + std::string(text) +
                          "\" is not a duration (for example 500ms, 5s, 1m)";
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end == text.data()) return Status::Usage(bad);
  std::string_view unit(end, text.data() + text.size() - end);
  uint64_t ms_per_unit = 0;
  if (unit == "ms") {
    ms_per_unit = 1;
  } else if (unit == "s") {
    ms_per_unit = 1000;
  } else if (unit == "m") {
    ms_per_unit = 60 * 1000;
  } else if (unit == "h") {
    ms_per_unit = 3600 * 1000;
  } else {
    return Status::Usage(bad);
  }
  // A year is long enough for any flag, and keeps the product far from overflow.
  constexpr uint64_t kMaxMs = uint64_t{365} * 24 * 3600 * 1000;
  if (n > kMaxMs / ms_per_unit) return Status::Usage(std::string(flag) + ": too long");
  *out = std::chrono::milliseconds(n * ms_per_unit);
  return Status::Ok();
}

Status ParseNumber(std::string_view what, std::string_view text, uint64_t* out, uint64_t min,
                   uint64_t max) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec == std::errc() && end == text.data() + text.size() && n >= min && n <= max) {
    *out = n;
    return Status::Ok();
  }
  return Status::Usage(std::string(what) + ": \"" + std::string(text) + "\" is not a number from " +
                       std::to_string(min) + " to " + std::to_string(max));
}

void Query::Add(std::string_view name) {
  if (!text_.empty()) text_ += '&';
  text_ += name;
}

void Query::Add(std::string_view name, std::string_view value) {
  Add(name);
  text_ += '=';
  // A '/' in a value is escaped too: only the path keeps it.
  for (char c : PathEscape(value)) {
    if (c == '/') {
      text_ += "%2F";
    } else {
      text_ += c;
    }
  }
}

std::string PathEscape(std::string_view key) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(key.size());
  for (unsigned char c : key) {
    bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == '.' || c == '~' || c == '/';
    if (keep) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string Base64Encode(std::string_view in) {
  std::string out(base64::encoded_size(in.size()), '\0');
  out.resize(base64::encode(out.data(), in.data(), in.size()));
  return out;
}

std::optional<std::string> Base64Decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out(base64::decoded_size(in.size()), '\0');
  auto [written, read] = base64::decode(out.data(), in.data(), in.size());
  // Beast's decoder stops at the padding or at the first byte that is not
  // base64: only up to two '=' may follow what it read.
  std::string_view rest = in.substr(read);
  if (rest.size() > 2 || rest.find_first_not_of('=') != std::string_view::npos) {
    return std::nullopt;
  }
  out.resize(written);
  return out;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    for (size_t k = 1; k <= n; k++) {
      if (i + k >= s.size()) return false;
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are invalid.
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

}  // namespace raftkv::ctl
