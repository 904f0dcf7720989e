#include "client.h"

#include <cinttypes>

namespace raftkv::sim {

std::optional<server::Outcome> CallDriver(const std::function<void(server::Callback)>& start,
                                          server::Callback later) {
  struct Call {
    bool returned = false;
    std::optional<server::Outcome> now;
    server::Callback later;
  };
  auto call = std::make_shared<Call>();
  call->later = std::move(later);
  start([call](server::Outcome o) {
    if (!call->returned) {
      call->now = std::move(o);
    } else if (call->later) {
      call->later(std::move(o));
    }
  });
  call->returned = true;
  return call->now;
}

Clients::Clients(uint64_t seed, const ClientOptions& options, Trace* trace)
    : rng_(seed), options_(options), trace_(trace) {
  for (int i = 0; i < options_.clients; i++) {
    Client c;
    c.id = static_cast<uint64_t>(i + 1);
    c.next_tick = rng_.Uniform(options_.think_max_ticks + 1);
    clients_.push_back(c);
  }
}

raft::NodeId Clients::PickNode(Client* c, const std::vector<raft::NodeId>& up) {
  if (c->leader_hint != raft::kNoNode && !rng_.Chance(options_.random_node_percent, 100)) {
    for (raft::NodeId id : up) {
      if (id == c->leader_hint) return id;
    }
  }
  return up[rng_.Uniform(up.size())];
}

void Clients::Tick(uint64_t tick, ClientTransport* transport) {
  tick_ = tick;
  for (Client& c : clients_) {
    if (c.phase != Phase::kIdle && tick >= c.deadline) {
      KvOp& op = ops_[c.op];
      if (c.phase == Phase::kPut) {
        // The entry may still commit later: the outcome is unknown.
        stats_.puts_unknown++;
        trace_->Textf(raft::kNoNode,
                      "c%" PRIu64 " put #%" PRIu64 " UNKNOWN (timeout on n%" PRIu64 ")", c.id,
                      op.id, c.node);
      } else {
        stats_.gets_failed++;
        failed_[c.op] = true;
        trace_->Textf(raft::kNoNode,
                      "c%" PRIu64 " get #%" PRIu64 " failed (timeout on n%" PRIu64 ")", c.id, op.id,
                      c.node);
      }
      Complete(&c, options_.retry_max_ticks);
    }
    if (c.phase == Phase::kIdle && !stopped_ && tick >= c.next_tick) Start(&c, tick, transport);
  }
}

void Clients::Start(Client* c, uint64_t tick, ClientTransport* transport) {
  up_.clear();
  transport->UpNodes(&up_);
  if (up_.empty()) {
    c->next_tick = tick + 1 + rng_.Uniform(options_.retry_max_ticks + 1);
    return;
  }
  raft::NodeId node = PickNode(c, up_);
  bool is_get = rng_.Chance(options_.get_percent, 100);
  std::string key = "k" + std::to_string(rng_.Uniform(options_.keys));
  uint64_t op_id = next_op_id_;
  server::Driver* driver = transport->DriverOf(node);
  // The op this request becomes if the driver takes it.
  size_t op_index = ops_.size();
  uint64_t cid = c->id;
  std::string value;
  std::optional<server::Outcome> refused;
  if (is_get) {
    refused = CallDriver([driver](server::Callback cb) { driver->ReadBarrier(std::move(cb)); },
                         [this, cid, op_index, transport](server::Outcome o) {
                           OnGetDone(cid, op_index, o, transport);
                         });
  } else {
    // Values are unique per key (the checker relies on it): the op id is.
    value = "c" + std::to_string(c->id) + "." + std::to_string(op_id);
    kv::RequestId id{c->id, op_id};
    std::string cmd = kv::EncodePut(id, key, value);
    refused =
        CallDriver([driver, &cmd, id](
                       server::Callback cb) { driver->Propose(std::move(cmd), id, std::move(cb)); },
                   [this, cid, op_index](server::Outcome o) { OnPutDone(cid, op_index, o); });
  }
  raft::NodeId leader = driver->node().Leader();
  if (refused) {
    // Refused: it had no effect, so trying again is a new invocation.
    stats_.refused++;
    c->leader_hint = leader;
    trace_->Textf(node, "c%" PRIu64 " %s %s via n%" PRIu64 " refused: %s (leader n%" PRIu64 ")",
                  c->id, is_get ? "get" : "put", key.c_str(), node, refused->message.c_str(),
                  leader);
    c->next_tick = tick + 1 + rng_.Uniform(options_.retry_max_ticks + 1);
    return;
  }
  next_op_id_++;
  KvOp op;
  op.id = op_id;
  op.client = c->id;
  op.kind = is_get ? OpKind::kGet : OpKind::kPut;
  op.key = key;
  op.value = value;
  op.invoke = ++clock_;
  op.response = kNever;
  ops_.push_back(std::move(op));
  failed_.push_back(false);
  info_.push_back(OpInfo{node, tick, 0, 0});
  c->op = op_index;
  c->node = node;
  c->phase = is_get ? Phase::kGet : Phase::kPut;
  c->deadline = tick + (is_get ? options_.get_timeout_ticks : options_.put_timeout_ticks);
  trace_->Textf(node, "c%" PRIu64 " %s #%" PRIu64 " %s%s%s via n%" PRIu64, c->id,
                is_get ? "get" : "put", op_id, key.c_str(), is_get ? "" : "=", value.c_str(), node);
}

void Clients::Complete(Client* c, uint64_t delay_max) {
  c->phase = Phase::kIdle;
  c->next_tick = tick_ + 1 + rng_.Uniform(delay_max + 1);
}

void Clients::OnPutDone(uint64_t cid, size_t op_index, const server::Outcome& o) {
  Client& c = clients_[cid - 1];
  if (c.phase != Phase::kPut || c.op != op_index) return;  // Given up on already.
  KvOp& op = ops_[c.op];
  if (o.ok()) {
    op.response = ++clock_;
    info_[c.op].response_tick = tick_;
    info_[c.op].index = o.index;
    stats_.puts_ok++;
    trace_->Textf(c.node, "c%" PRIu64 " put #%" PRIu64 " ok at index %" PRIu64, c.id, op.id,
                  o.index);
    c.leader_hint = c.node;
    Complete(&c, options_.think_max_ticks);
  } else if (o.code == server::Code::kNotCommitted) {
    // Another entry was committed at its index (Log Matching): it never
    // will be.
    stats_.puts_failed++;
    failed_[c.op] = true;
    trace_->Textf(c.node, "c%" PRIu64 " put #%" PRIu64 " failed: %s", c.id, op.id,
                  o.message.c_str());
    Complete(&c, options_.retry_max_ticks);
  } else {
    stats_.puts_unknown++;
    trace_->Textf(c.node, "c%" PRIu64 " put #%" PRIu64 " UNKNOWN: %s", c.id, op.id,
                  o.message.c_str());
    Complete(&c, options_.retry_max_ticks);
  }
}

void Clients::OnGetDone(uint64_t cid, size_t op_index, const server::Outcome& o,
                        ClientTransport* transport) {
  Client& c = clients_[cid - 1];
  if (c.phase != Phase::kGet || c.op != op_index) return;
  KvOp& op = ops_[c.op];
  if (!o.ok()) {
    stats_.gets_failed++;
    failed_[c.op] = true;
    trace_->Textf(c.node, "c%" PRIu64 " get #%" PRIu64 " failed: %s", c.id, op.id,
                  o.message.c_str());
    Complete(&c, options_.retry_max_ticks);
    return;
  }
  // As the HTTP handler does once the barrier is passed: read the store.
  const kv::Store* kv = transport->StoreOf(c.node);
  op.found = kv->Get(op.key, &op.value);
  op.response = ++clock_;
  info_[c.op].response_tick = tick_;
  stats_.gets_ok++;
  trace_->Textf(c.node, "c%" PRIu64 " get #%" PRIu64 " %s = %s (applied %" PRIu64 ")", c.id, op.id,
                op.key.c_str(), op.found ? op.value.c_str() : "(absent)", o.index);
  Complete(&c, options_.think_max_ticks);
}

void Clients::OnNodeDown(raft::NodeId node) {
  for (Client& c : clients_) {
    if (c.phase == Phase::kIdle || c.node != node) continue;
    KvOp& op = ops_[c.op];
    if (c.phase == Phase::kPut) {
      stats_.puts_unknown++;
      trace_->Textf(raft::kNoNode, "c%" PRIu64 " put #%" PRIu64 " UNKNOWN (n%" PRIu64 " down)",
                    c.id, op.id, node);
    } else {
      stats_.gets_failed++;
      failed_[c.op] = true;
      trace_->Textf(raft::kNoNode, "c%" PRIu64 " get #%" PRIu64 " failed (n%" PRIu64 " down)", c.id,
                    op.id, node);
    }
    c.leader_hint = raft::kNoNode;
    Complete(&c, options_.retry_max_ticks);
  }
}

void Clients::Finish() {
  for (Client& c : clients_) {
    if (c.phase == Phase::kIdle) continue;
    if (c.phase == Phase::kPut) {
      stats_.puts_unknown++;
    } else {
      stats_.gets_failed++;
      failed_[c.op] = true;
    }
    c.phase = Phase::kIdle;
  }
}

bool Clients::AnyOutstanding() const {
  for (const Client& c : clients_) {
    if (c.phase != Phase::kIdle) return true;
  }
  return false;
}

std::string Clients::Describe(uint64_t id) const {
  // Op ids are assigned in order, one per recorded op.
  for (size_t i = 0; i < ops_.size(); i++) {
    if (ops_[i].id != id) continue;
    const OpInfo& in = info_[i];
    std::string s = DescribeOp(ops_[i]) + ": sent to n" + std::to_string(in.node) + " at tick " +
                    std::to_string(in.invoke_tick);
    if (in.index != 0) s += " (applied at index " + std::to_string(in.index) + ")";
    if (ops_[i].response != kNever) s += ", answered at tick " + std::to_string(in.response_tick);
    return s;
  }
  return "";
}

std::vector<KvOp> Clients::History() const {
  std::vector<KvOp> out;
  out.reserve(ops_.size());
  for (size_t i = 0; i < ops_.size(); i++) {
    if (!failed_[i]) out.push_back(ops_[i]);
  }
  return out;
}

}  // namespace raftkv::sim
