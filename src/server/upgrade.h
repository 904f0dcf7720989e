// ProtoWatch: which command language every member speaks, so that a leader
// proposes a command of the newer language (kv::kProtoVersion: Delete, Txn,
// a Put with a lease) only once no member would meet a command it does not
// understand (docs/http-api.md, "Upgrades").
//
// As etcd's leader decides the cluster version from its members' /version,
// every node asks each member's GET /status for its "proto" (a node of the
// first release answers without it: language 1) every `every`, and at once
// when a member it has not heard from appears. The answer is the lowest
// language over the members, counting one that has not answered yet as 1.
//
// Threads: SetMembers and the polls run on `io`; ClusterProto() on any
// thread.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "server/forwarder.h"
#include "server/identity.h"

namespace raftkv::server {

class ProtoWatch {
 public:
  ProtoWatch(boost::asio::io_context& io, Forwarder* forwarder, raft::NodeId self,
             std::chrono::milliseconds every = std::chrono::milliseconds(2000));
  ~ProtoWatch();
  ProtoWatch(const ProtoWatch&) = delete;
  ProtoWatch& operator=(const ProtoWatch&) = delete;

  // io thread: the members now (as of the commit index).
  void SetMembers(const std::vector<MemberInfo>& members);
  void Start();
  void Stop();
  // Any thread: the language every member speaks.
  int ClusterProto() const { return cluster_proto_.load(std::memory_order_acquire); }

 private:
  void Poll();
  void OnAnswer(raft::NodeId id, int proto);
  void Recompute();

  boost::asio::io_context& io_;
  Forwarder* forwarder_;
  const raft::NodeId self_;
  const std::chrono::milliseconds every_;
  boost::asio::steady_timer timer_;
  std::vector<MemberInfo> members_;
  std::map<raft::NodeId, int> known_;  // Last answer per member.
  bool stopped_ = false;
  // Shared with the callbacks of polls in flight, which may outlive a Stop.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::atomic<int> cluster_proto_{1};
};

// The "proto" of a /status body: 1 if absent (the first release), 0 if the
// body is not a JSON object.
int ProtoFromStatus(std::string_view body);

}  // namespace raftkv::server
