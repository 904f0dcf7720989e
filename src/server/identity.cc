#include "server/identity.h"

#include <xxhash.h>

#include <boost/json.hpp>

namespace raftkv::server {

raft::NodeId NodeIdFromName(std::string_view name) {
  raft::NodeId id = XXH64(name.data(), name.size(), 0);
  return id == raft::kNoNode ? 1 : id;
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
