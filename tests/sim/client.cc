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
      GiveUp(&c, "timeout on n" + std::to_string(c.node));
    }
    if (c.phase == Phase::kIdle && !stopped_ && tick >= c.next_tick) Start(&c, tick, transport);
  }
}

void Clients::GiveUp(Client* c, const std::string& why) {
  const KvOp& op = ops_[c->op];
  if (c->phase == Phase::kWrite) {
    // The entry may still commit later: the outcome is unknown.
    stats_.puts_unknown++;
    trace_->Textf(raft::kNoNode, "c%" PRIu64 " #%" PRIu64 " UNKNOWN (%s)", c->id, op.id,
                  why.c_str());
  } else {
    stats_.gets_failed++;
    failed_[c->op] = true;
    trace_->Textf(raft::kNoNode, "c%" PRIu64 " #%" PRIu64 " failed (%s)", c->id, op.id,
                  why.c_str());
  }
  Complete(c, options_.retry_max_ticks);
}

namespace {

kv::TxnOp PutOp(std::string_view key, std::string_view value) {
  kv::TxnOp op;
  op.kind = kv::TxnOpKind::kPut;
  op.keys = kv::KeyRange{key, "", false};
  op.value = value;
  return op;
}

kv::TxnOp GetOp(std::string_view key) {
  kv::TxnOp op;
  op.kind = kv::TxnOpKind::kGet;
  op.keys = kv::KeyRange{key, "", false};
  return op;
}

}  // namespace

KvOp Clients::Draw(Client* c, uint64_t op_id, std::string* command) {
  KvOp op;
  op.id = op_id;
  op.client = c->id;
  const int pairs = options_.keys / 2;
  auto key = [](int i) { return "k" + std::to_string(i); };
  // Values are unique (the checker relies on it): the op id is.
  const std::string value = "c" + std::to_string(c->id) + "." + std::to_string(op_id);
  const kv::RequestId id{c->id, op_id};
  if (rng_.Chance(options_.get_percent, 100)) {
    if (pairs > 0 && rng_.Chance(options_.txn_get_percent, 100)) {
      int p = static_cast<int>(rng_.Uniform(pairs));
      op.kind = OpKind::kTxnGet;
      op.key = key(2 * p);
      op.key2 = key(2 * p + 1);
    } else {
      op.kind = OpKind::kGet;
      op.key = key(static_cast<int>(rng_.Uniform(options_.keys)));
    }
    command->clear();
    return op;
  }
  uint64_t r = rng_.Uniform(100);
  if (r < options_.delete_percent) {
    op.kind = OpKind::kDelete;
  } else if (r < options_.delete_percent + options_.cas_percent) {
    op.kind = OpKind::kCas;
  } else if (r < options_.delete_percent + options_.cas_percent + options_.txn_put_percent &&
             pairs > 0) {
    op.kind = OpKind::kTxnPut;
  } else {
    op.kind = OpKind::kPut;
  }
  if (op.kind == OpKind::kTxnPut) {
    int p = static_cast<int>(rng_.Uniform(pairs));
    op.key = key(2 * p);
    op.key2 = key(2 * p + 1);
    op.value = value + "a";
    op.value2 = value + "b";
    *command = kv::EncodeTxn(id, {}, {PutOp(op.key, op.value), PutOp(op.key2, op.value2)}, {});
    return op;
  }
  op.key = key(static_cast<int>(rng_.Uniform(options_.keys)));
  op.value = value;
  switch (op.kind) {
    case OpKind::kPut:
      *command = kv::EncodePut(id, op.key, op.value);
      break;
    case OpKind::kDelete: {
      kv::TxnOp del;
      del.kind = kv::TxnOpKind::kDelete;
      del.keys = kv::KeyRange{op.key, "", false};
      op.value.clear();
      *command = kv::EncodeDelete(id, del);
      break;
    }
    default: {
      // As V1Put builds ?if_mod_revision=R (the client's last knowledge of
      // the key), or ?if_version=0 when it knows of no value.
      kv::Compare cmp;
      cmp.keys = kv::KeyRange{op.key, "", false};
      cmp.op = kv::CmpOp::kEqual;
      auto it = c->known.find(op.key);
      if (it != c->known.end() && it->second.found) {
        cmp.target = kv::Target::kModRevision;
        cmp.number = it->second.mod_revision;
        op.expect_found = true;
        op.expect = it->second.value;
      } else {
        cmp.target = kv::Target::kVersion;
        cmp.number = 0;
        op.expect_found = false;
      }
      *command = kv::EncodeTxn(id, {cmp}, {PutOp(op.key, op.value)}, {GetOp(op.key)});
      break;
    }
  }
  return op;
}

void Clients::Start(Client* c, uint64_t tick, ClientTransport* transport) {
  up_.clear();
  transport->UpNodes(&up_);
  if (up_.empty()) {
    c->next_tick = tick + 1 + rng_.Uniform(options_.retry_max_ticks + 1);
    return;
  }
  raft::NodeId node = PickNode(c, up_);
  uint64_t op_id = next_op_id_;
  std::string cmd;
  KvOp op = Draw(c, op_id, &cmd);
  const bool is_read = op.kind == OpKind::kGet || op.kind == OpKind::kTxnGet;
  server::Driver* driver = transport->DriverOf(node);
  // The op this request becomes if the driver takes it.
  size_t op_index = ops_.size();
  uint64_t cid = c->id;
  std::optional<server::Outcome> refused;
  if (is_read) {
    refused = CallDriver([driver](server::Callback cb) { driver->ReadBarrier(std::move(cb)); },
                         [this, cid, op_index, transport](server::Outcome o) {
                           OnReadDone(cid, op_index, o, transport);
                         });
  } else {
    kv::RequestId id{c->id, op_id};
    refused =
        CallDriver([driver, &cmd, id](
                       server::Callback cb) { driver->Propose(std::move(cmd), id, std::move(cb)); },
                   [this, cid, op_index](server::Outcome o) { OnWriteDone(cid, op_index, o); });
  }
  raft::NodeId leader = driver->node().Leader();
  op.invoke = clock_ + 1;
  op.response = kNever;
  if (refused) {
    // Refused: it had no effect, so trying again is a new invocation.
    stats_.refused++;
    c->leader_hint = leader;
    trace_->Textf(node, "c%" PRIu64 " %s via n%" PRIu64 " refused: %s (leader n%" PRIu64 ")", c->id,
                  DescribeOp(op).c_str(), node, refused->message.c_str(), leader);
    c->next_tick = tick + 1 + rng_.Uniform(options_.retry_max_ticks + 1);
    return;
  }
  next_op_id_++;
  clock_++;
  trace_->Textf(node, "c%" PRIu64 " %s via n%" PRIu64, c->id, DescribeOp(op).c_str(), node);
  ops_.push_back(std::move(op));
  failed_.push_back(false);
  info_.push_back(OpInfo{node, tick, 0, 0});
  c->op = op_index;
  c->node = node;
  c->phase = is_read ? Phase::kRead : Phase::kWrite;
  c->deadline = tick + (is_read ? options_.get_timeout_ticks : options_.put_timeout_ticks);
}

void Clients::Complete(Client* c, uint64_t delay_max) {
  c->phase = Phase::kIdle;
  c->next_tick = tick_ + 1 + rng_.Uniform(delay_max + 1);
}

void Clients::OnWriteDone(uint64_t cid, size_t op_index, const server::Outcome& o) {
  Client& c = clients_[cid - 1];
  if (c.phase != Phase::kWrite || c.op != op_index) return;  // Given up on already.
  KvOp& op = ops_[c.op];
  if (o.code == server::Code::kNotCommitted) {
    // Another entry was committed at its index (Log Matching): it never
    // will be.
    stats_.puts_failed++;
    failed_[c.op] = true;
    trace_->Textf(c.node, "c%" PRIu64 " #%" PRIu64 " failed: %s", c.id, op.id, o.message.c_str());
    Complete(&c, options_.retry_max_ticks);
    return;
  }
  if (!o.ok()) {
    GiveUp(&c, o.message);
    return;
  }
  // What the store answered, as the /v1 handlers read it.
  const kv::Result* r = o.result.get();
  if (op.kind != OpKind::kPut && op.kind != OpKind::kDelete &&
      (r == nullptr || r->code != kv::ResultCode::kOk)) {
    GiveUp(&c, "no result");  // Not expected: the checker sees it as unknown.
    return;
  }
  op.response = ++clock_;
  info_[c.op].response_tick = tick_;
  info_[c.op].index = o.index;
  stats_.puts_ok++;
  switch (op.kind) {
    case OpKind::kPut:
      c.known[op.key] = Known{true, op.value, o.index};
      break;
    case OpKind::kDelete:
      stats_.deletes_ok++;
      c.known[op.key] = Known{};
      break;
    case OpKind::kCas:
      op.succeeded = r->succeeded;
      if (r->succeeded) {
        stats_.cas_ok++;
        c.known[op.key] = Known{true, op.value, o.index};
      } else {
        // The failure branch's get: what beat it.
        stats_.cas_failed++;
        const kv::OpResult& get = r->ops.at(0);
        op.found = get.found;
        op.value = get.found ? get.kv.value : std::string();
        c.known[op.key] = Known{get.found, op.value, get.kv.meta.mod_revision};
      }
      break;
    case OpKind::kTxnPut:
      stats_.txn_puts_ok++;
      c.known[op.key] = Known{true, op.value, o.index};
      c.known[op.key2] = Known{true, op.value2, o.index};
      break;
    default:
      break;
  }
  trace_->Textf(c.node, "c%" PRIu64 " %s at index %" PRIu64, c.id, DescribeOp(op).c_str(), o.index);
  c.leader_hint = c.node;
  Complete(&c, options_.think_max_ticks);
}

void Clients::OnReadDone(uint64_t cid, size_t op_index, const server::Outcome& o,
                         ClientTransport* transport) {
  Client& c = clients_[cid - 1];
  if (c.phase != Phase::kRead || c.op != op_index) return;
  KvOp& op = ops_[c.op];
  if (!o.ok()) {
    GiveUp(&c, o.message);
    return;
  }
  // As the HTTP handlers do once the barrier is passed: read the store.
  const kv::Store* kv = transport->StoreOf(c.node);
  if (op.kind == OpKind::kGet) {
    kv::KeyMeta meta;
    op.found = kv->Get(op.key, &op.value, &meta);
    c.known[op.key] = Known{op.found, op.value, meta.mod_revision};
  } else {
    kv::Result r = kv->ReadTxn({}, {GetOp(op.key), GetOp(op.key2)}, {});
    const kv::OpResult& a = r.ops.at(0);
    const kv::OpResult& b = r.ops.at(1);
    op.found = a.found;
    op.value = a.found ? a.kv.value : std::string();
    op.found2 = b.found;
    op.value2 = b.found ? b.kv.value : std::string();
    c.known[op.key] = Known{a.found, op.value, a.kv.meta.mod_revision};
    c.known[op.key2] = Known{b.found, op.value2, b.kv.meta.mod_revision};
    stats_.txn_gets_ok++;
  }
  op.response = ++clock_;
  info_[c.op].response_tick = tick_;
  stats_.gets_ok++;
  trace_->Textf(c.node, "c%" PRIu64 " %s (applied %" PRIu64 ")", c.id, DescribeOp(op).c_str(),
                o.index);
  Complete(&c, options_.think_max_ticks);
}

void Clients::OnNodeDown(raft::NodeId node) {
  for (Client& c : clients_) {
    if (c.phase == Phase::kIdle || c.node != node) continue;
    GiveUp(&c, "n" + std::to_string(node) + " down");
    c.leader_hint = raft::kNoNode;
  }
}

void Clients::Finish() {
  for (Client& c : clients_) {
    if (c.phase == Phase::kIdle) continue;
    if (c.phase == Phase::kWrite) {
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

namespace raftkv::sim {

LeaseClients::LeaseClients(uint64_t seed, const LeaseClientOptions& options, Trace* trace,
                           std::function<void(kv::RequestId)> sent)
    : rng_(seed), options_(options), trace_(trace), sent_(std::move(sent)) {
  for (int i = 0; i < options_.clients; i++) {
    Client c;
    c.id = kFirstClient + static_cast<uint64_t>(i);
    c.next_tick = rng_.Uniform(options_.think_max_ticks + 1);
    clients_.push_back(std::move(c));
  }
}

LeaseClients::Held* LeaseClients::Find(Client* c, uint64_t id) {
  for (Held& h : c->held) {
    if (h.id == id) return &h;
  }
  return nullptr;
}

void LeaseClients::Forget(Client* c, uint64_t id) {
  std::erase_if(c->held, [id](const Held& h) { return h.id == id; });
}

void LeaseClients::Tick(uint64_t tick, ClientTransport* transport) {
  tick_ = tick;
  for (Client& c : clients_) {
    if (c.busy && tick >= c.deadline) {
      stats_.unknown++;
      trace_->Textf(raft::kNoNode, "lc%" PRIu64 " #%" PRIu64 " UNKNOWN (timeout)",
                    c.id - kFirstClient, c.seq);
      c.busy = false;
      c.next_tick = tick + 1;
    }
    if (!c.busy && !stopped_ && tick >= c.next_tick) Start(&c, tick, transport);
  }
}

void LeaseClients::Start(Client* c, uint64_t tick, ClientTransport* transport) {
  // Leases it no longer tracks: lapsed ones past their TTL (and a margin),
  // kept ones whose renewals did not arrive within a TTL (they may be gone).
  std::erase_if(c->held, [&](const Held& h) {
    if (h.mode == Mode::kLapse) return tick >= h.forget_tick;
    if (h.mode == Mode::kKeep) return tick >= h.renew_tick + TicksOf(h.ttl_ms);
    return false;
  });
  for (Held& h : c->held) {
    if (h.mode == Mode::kKeep && tick >= h.until_tick) {
      h.mode = Mode::kLapse;  // Kept long enough: now it lapses.
      h.forget_tick = h.renew_tick + 2 * TicksOf(h.ttl_ms);
    }
  }
  // What to do: a keepalive that is due first, then a revoke that is due,
  // else a grant or a put, at random.
  std::vector<uint64_t> due;
  for (const Held& h : c->held) {
    if (h.mode == Mode::kKeep && tick >= h.renew_tick + TicksOf(h.ttl_ms) / 3) due.push_back(h.id);
  }
  c->leases.clear();
  if (!due.empty()) {
    c->kind = Kind::kKeepAlive;
    if (due.size() > 1 && rng_.Chance(1, 2)) {
      c->leases = due;  // A batch keepalive.
    } else {
      c->leases.push_back(due[rng_.Uniform(due.size())]);
    }
  } else {
    for (const Held& h : c->held) {
      if (h.mode == Mode::kRevoke && tick >= h.until_tick) {
        c->kind = Kind::kRevoke;
        c->leases.push_back(h.id);
        break;
      }
    }
    if (c->leases.empty()) {
      uint64_t r = rng_.Uniform(100);
      if (r < 35 && c->held.size() < static_cast<size_t>(options_.max_leases)) {
        c->kind = Kind::kGrant;
        c->ttl_ms =
            options_.ttl_min_ms + rng_.Uniform(options_.ttl_max_ms - options_.ttl_min_ms + 1);
      } else if (r < 85 && !c->held.empty()) {
        c->kind = Kind::kPut;
        c->leases.push_back(c->held[rng_.Uniform(c->held.size())].id);
      } else {
        c->next_tick = tick + 1 + rng_.Uniform(options_.think_max_ticks + 1);
        return;
      }
    }
  }
  up_.clear();
  transport->UpNodes(&up_);
  if (up_.empty()) {
    c->next_tick = tick + 1;
    return;
  }
  raft::NodeId node = up_[rng_.Uniform(up_.size())];
  if (c->leader_hint != raft::kNoNode && rng_.Chance(4, 5)) {
    for (raft::NodeId id : up_) {
      if (id == c->leader_hint) node = id;
    }
  }
  server::Driver* driver = transport->DriverOf(node);
  const kv::RequestId id{c->id, c->seq + 1};
  std::string cmd;
  std::string what;
  switch (c->kind) {
    case Kind::kGrant:
      cmd = kv::EncodeLeaseGrant(id, 0, c->ttl_ms);
      what = "grant ttl=" + std::to_string(c->ttl_ms);
      break;
    case Kind::kKeepAlive:
      cmd = kv::EncodeLeaseKeepAlive(id, c->leases);
      what = "keepalive";
      break;
    case Kind::kRevoke: {
      std::vector<kv::LeaseRef> refs;
      for (uint64_t l : c->leases) refs.push_back(kv::LeaseRef{l, 0});
      cmd = kv::EncodeLeaseRevoke(id, kv::RevokeReason::kRevoke, refs);
      what = "revoke";
      break;
    }
    case Kind::kPut: {
      Held* h = Find(c, c->leases[0]);
      std::string key = "lease/" + std::to_string(c->id - kFirstClient) + "/" +
                        std::to_string(h->id) + "/" + std::to_string(rng_.Uniform(3));
      cmd = kv::EncodePut(id, key, "v" + std::to_string(id.seq), h->id);
      what = "put " + key;
      break;
    }
  }
  for (uint64_t l : c->leases) what += " " + std::to_string(l);
  const uint64_t cid = c->id;
  const uint64_t seq = id.seq;
  std::optional<server::Outcome> refused =
      CallDriver([driver, &cmd,
                  id](server::Callback cb) { driver->Propose(std::move(cmd), id, std::move(cb)); },
                 [this, cid, seq](server::Outcome o) { OnDone(cid, seq, o); });
  if (refused) {
    stats_.refused++;
    c->leader_hint = driver->node().Leader();
    c->next_tick = tick + 1 + rng_.Uniform(3);
    return;
  }
  if (c->kind == Kind::kGrant || c->kind == Kind::kKeepAlive) sent_(id);
  if (c->kind == Kind::kKeepAlive) {
    for (uint64_t l : c->leases) Find(c, l)->renew_tick = tick;
  }
  c->seq = seq;
  c->busy = true;
  c->node = node;
  c->deadline = tick + options_.timeout_ticks;
  trace_->Textf(node, "lc%" PRIu64 " #%" PRIu64 " %s via n%" PRIu64, cid - kFirstClient, seq,
                what.c_str(), node);
}

void LeaseClients::OnDone(uint64_t cid, uint64_t seq, const server::Outcome& o) {
  Client& c = clients_[cid - kFirstClient];
  if (!c.busy || c.seq != seq) return;  // Given up on already.
  c.busy = false;
  c.next_tick = tick_ + 1 + rng_.Uniform(options_.think_max_ticks + 1);
  const kv::Result* r = o.result.get();
  if (!o.ok() || r == nullptr) {
    if (o.code != server::Code::kNotCommitted) stats_.unknown++;
    trace_->Textf(c.node, "lc%" PRIu64 " #%" PRIu64 " %s", cid - kFirstClient, seq,
                  o.ok() ? "no result" : o.message.c_str());
    return;
  }
  c.leader_hint = c.node;
  trace_->Textf(c.node, "lc%" PRIu64 " #%" PRIu64 " ok at index %" PRIu64 " code %d",
                cid - kFirstClient, seq, o.index, static_cast<int>(r->code));
  switch (c.kind) {
    case Kind::kGrant: {
      if (r->code != kv::ResultCode::kOk || r->leases.empty()) return;
      stats_.grants_ok++;
      Held h;
      h.id = r->leases[0].id;
      h.ttl_ms = r->leases[0].ttl_ms;
      h.renew_tick = tick_;
      uint64_t ttl = TicksOf(h.ttl_ms);
      uint64_t mode = rng_.Uniform(100);
      h.mode = mode < 40 ? Mode::kKeep : mode < 75 ? Mode::kLapse : Mode::kRevoke;
      h.until_tick = h.mode == Mode::kKeep ? tick_ + ttl * (2 + rng_.Uniform(5))
                                           : tick_ + rng_.Uniform(ttl + 1);
      h.forget_tick = tick_ + 2 * ttl;
      c.held.push_back(h);
      return;
    }
    case Kind::kKeepAlive:
      stats_.keepalives_ok++;
      for (uint64_t l : r->not_found) Forget(&c, l);
      return;
    case Kind::kRevoke:
      stats_.revokes_ok++;
      for (uint64_t l : c.leases) Forget(&c, l);
      return;
    case Kind::kPut:
      if (r->code == kv::ResultCode::kOk) stats_.puts_ok++;
      if (r->code == kv::ResultCode::kLeaseNotFound) Forget(&c, c.leases[0]);
      return;
  }
}

void LeaseClients::OnNodeDown(raft::NodeId node) {
  for (Client& c : clients_) {
    if (!c.busy || c.node != node) continue;
    stats_.unknown++;
    c.busy = false;
    c.leader_hint = raft::kNoNode;
    c.next_tick = tick_ + 1;
  }
}

}  // namespace raftkv::sim
