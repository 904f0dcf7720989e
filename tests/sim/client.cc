#include "client.h"

#include <cinttypes>

namespace raftkv::sim {

namespace {

constexpr char kReadPrefix = 'r';

std::string ReadContext(uint64_t op_id) { return kReadPrefix + std::to_string(op_id); }

bool ParseReadContext(const std::string& ctx, uint64_t* op_id) {
  if (ctx.size() < 2 || ctx[0] != kReadPrefix || ctx.size() > 21) return false;
  uint64_t v = 0;
  for (size_t i = 1; i < ctx.size(); i++) {
    if (ctx[i] < '0' || ctx[i] > '9') return false;
    v = v * 10 + static_cast<uint64_t>(ctx[i] - '0');
  }
  *op_id = v;
  return true;
}

}  // namespace

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
  raft::NodeId leader = raft::kNoNode;
  raft::Status s;
  raft::Index index = 0;
  raft::Term term = 0;
  std::string value;
  if (is_get) {
    s = transport->ReadIndex(node, ReadContext(op_id), &leader);
  } else {
    // Values are unique per key (the checker relies on it): the op id is.
    value = "c" + std::to_string(c->id) + "." + std::to_string(op_id);
    Command cmd{op_id, key, value};
    s = transport->Propose(node, EncodeCommand(cmd), &index, &term, &leader);
  }
  if (!s.ok()) {
    // Refused: it had no effect, so trying again is a new invocation.
    stats_.refused++;
    c->leader_hint = leader;
    trace_->Textf(node, "c%" PRIu64 " %s %s via n%" PRIu64 " refused: %s (leader n%" PRIu64 ")",
                  c->id, is_get ? "get" : "put", key.c_str(), node, raft::CodeName(s.code()),
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
  info_.push_back(OpInfo{node, tick, 0, index});
  c->op = ops_.size() - 1;
  c->node = node;
  c->incarnation = transport->Incarnation(node);
  c->index = index;
  c->phase = is_get ? Phase::kGet : Phase::kPut;
  c->deadline = tick + (is_get ? options_.get_timeout_ticks : options_.put_timeout_ticks);
  if (is_get) {
    trace_->Textf(node, "c%" PRIu64 " get #%" PRIu64 " %s via n%" PRIu64, c->id, op_id, key.c_str(),
                  node);
  } else {
    trace_->Textf(node,
                  "c%" PRIu64 " put #%" PRIu64 " %s=%s via n%" PRIu64 " at index %" PRIu64
                  " term %" PRIu64,
                  c->id, op_id, key.c_str(), value.c_str(), node, index, term);
  }
}

void Clients::Complete(Client* c, uint64_t delay_max) {
  c->phase = Phase::kIdle;
  c->next_tick = tick_ + 1 + rng_.Uniform(delay_max + 1);
}

void Clients::OnApplied(raft::NodeId node, uint64_t incarnation, raft::Index index,
                        uint64_t op_id) {
  for (Client& c : clients_) {
    if (c.phase != Phase::kPut || c.node != node || c.incarnation != incarnation) continue;
    KvOp& op = ops_[c.op];
    if (op_id == op.id) {
      op.response = ++clock_;
      info_[c.op].response_tick = tick_;
      stats_.puts_ok++;
      trace_->Textf(node, "c%" PRIu64 " put #%" PRIu64 " ok", c.id, op.id);
      c.leader_hint = node;
      Complete(&c, options_.think_max_ticks);
    } else if (index == c.index) {
      // Raft's log matching: our entry can only ever sit at this index, and
      // another one was committed there, so ours never will be.
      stats_.puts_failed++;
      failed_[c.op] = true;
      trace_->Textf(node, "c%" PRIu64 " put #%" PRIu64 " failed (index %" PRIu64 " taken)", c.id,
                    op.id, index);
      Complete(&c, options_.retry_max_ticks);
    }
  }
}

void Clients::OnRead(raft::NodeId node, uint64_t incarnation, const std::string& context,
                     const KvStore& kv) {
  uint64_t op_id = 0;
  if (!ParseReadContext(context, &op_id)) return;
  for (Client& c : clients_) {
    if (c.phase != Phase::kGet || c.node != node || c.incarnation != incarnation) continue;
    KvOp& op = ops_[c.op];
    if (op.id != op_id) continue;
    op.found = kv.Get(op.key, &op.value);
    op.response = ++clock_;
    info_[c.op].response_tick = tick_;
    stats_.gets_ok++;
    trace_->Textf(node, "c%" PRIu64 " get #%" PRIu64 " %s = %s", c.id, op.id, op.key.c_str(),
                  op.found ? op.value.c_str() : "(absent)");
    Complete(&c, options_.think_max_ticks);
  }
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
    if (ops_[i].kind == OpKind::kPut) s += " (index " + std::to_string(in.index) + ")";
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
