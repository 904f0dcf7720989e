#include "server/upgrade.h"

#include <spdlog/spdlog.h>

#include <boost/json.hpp>

#include "kv/command.h"

namespace raftkv::server {

namespace json = boost::json;

int ProtoFromStatus(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return 0;
  const json::value* p = v.get_object().if_contains("proto");
  if (p == nullptr) return 1;
  if (p->is_int64() && p->get_int64() >= 1 && p->get_int64() <= 1000) {
    return static_cast<int>(p->get_int64());
  }
  return 0;
}

ProtoWatch::ProtoWatch(boost::asio::io_context& io, Forwarder* forwarder, raft::NodeId self,
                       std::chrono::milliseconds every)
    : io_(io), forwarder_(forwarder), self_(self), every_(every), timer_(io) {}

ProtoWatch::~ProtoWatch() { *alive_ = false; }

void ProtoWatch::SetMembers(const std::vector<MemberInfo>& members) {
  members_ = members;
  bool unknown = false;
  for (const MemberInfo& m : members_) {
    if (m.id != self_ && !known_.contains(m.id)) unknown = true;
  }
  Recompute();
  if (unknown && !stopped_) Poll();
}

void ProtoWatch::Start() {
  Recompute();
  Poll();
}

void ProtoWatch::Stop() {
  stopped_ = true;
  timer_.cancel();
}

void ProtoWatch::Poll() {
  if (stopped_) return;
  for (const MemberInfo& m : members_) {
    if (m.id == self_ || m.http.empty()) continue;
    ForwardRequest req;
    req.method = boost::beast::http::verb::get;
    req.target = "/status";
    raft::NodeId id = m.id;
    forwarder_->Send(m.http, std::move(req), [this, alive = alive_, id](ForwardResponse r) {
      int proto =
          r.error == ForwardResponse::Error::kNone && r.status == 200 ? ProtoFromStatus(r.body) : 0;
      boost::asio::post(io_, [this, alive, id, proto] {
        if (*alive && proto > 0) OnAnswer(id, proto);
      });
    });
  }
  timer_.expires_after(every_);
  timer_.async_wait([this, alive = alive_](boost::system::error_code ec) {
    if (!ec && *alive) Poll();
  });
}

void ProtoWatch::OnAnswer(raft::NodeId id, int proto) {
  auto it = known_.find(id);
  if (it == known_.end() || it->second != proto) {
    spdlog::info("member {:x} speaks command language {}", id, proto);
  }
  known_[id] = proto;
  Recompute();
}

void ProtoWatch::Recompute() {
  // Before the first membership is known, nobody is known to speak it.
  int lowest = members_.empty() ? 1 : kv::kProtoVersion;
  for (const MemberInfo& m : members_) {
    if (m.id == self_) continue;
    auto it = known_.find(m.id);
    lowest = std::min(lowest, it == known_.end() ? 1 : it->second);
  }
  int before = cluster_proto_.exchange(lowest, std::memory_order_acq_rel);
  if (before != lowest) spdlog::info("the cluster speaks command language {}", lowest);
}

}  // namespace raftkv::server
