#include "server/identity.h"

#include <xxhash.h>

#include <boost/json.hpp>
#include <charconv>
#include <random>

namespace raftkv::server {

raft::NodeId NodeIdFromName(std::string_view name) {
  raft::NodeId id = XXH64(name.data(), name.size(), 0);
  return id == raft::kNoNode ? 1 : id;
}

uint64_t NewClusterId() {
  std::random_device rd;
  uint64_t id = 0;
  while (id == 0) id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return id;
}

bool ParseClusterId(std::string_view text, uint64_t* out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  return !text.empty() && ec == std::errc() && ptr == end;
}

bool ClusterIdFromStatus(std::string_view body, uint64_t* out, std::string* why) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(body, ec);
  // node_id is in every /status answer since the first release.
  if (ec || !v.is_object() || !v.get_object().contains("node_id")) {
    *why = "not a raftkv /status answer";
    return false;
  }
  const boost::json::value* cid = v.get_object().if_contains("cluster_id");
  if (cid == nullptr) {
    *out = 0;
    return true;
  }
  if (!cid->is_string() || !ParseClusterId(cid->get_string(), out)) {
    *why = "malformed cluster_id in /status";
    return false;
  }
  return true;
}

std::string EncodeMemberContext(const MemberInfo& m) {
  boost::json::object o;
  o["id"] = m.name;
  o["raft"] = m.raft;
  o["http"] = m.http;
  return boost::json::serialize(o);
}

bool DecodeMemberContext(std::string_view context, MemberInfo* out) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(context, ec);
  if (ec || !v.is_object()) return false;
  const boost::json::object& o = v.get_object();
  auto str = [&o](const char* k, std::string* dst) {
    auto it = o.find(k);
    if (it == o.end()) return true;
    if (!it->value().is_string()) return false;
    *dst = std::string(it->value().get_string());
    return true;
  };
  return str("id", &out->name) && str("raft", &out->raft) && str("http", &out->http);
}

}  // namespace raftkv::server
