#include "cluster.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cinttypes>
#include <csignal>
#include <cstdio>

#include "kv/command.h"

namespace raftkv::sim {

namespace {

// Calm ticks allowed for node 1 to bootstrap and the others to join.
constexpr uint64_t kWarmupMaxTicks = 400;
// Calm ticks allowed, after everything heals, for a final write to commit.
constexpr uint64_t kTailMaxTicks = 1500;
constexpr uint64_t kFinalTimeoutTicks = 50;
// The liveness check's own writes: a request id apart from the clients'.
constexpr uint64_t kFinalClient = uint64_t{1} << 62;
// Voter bounds for membership changes: keep a real quorum, do not grow forever.
constexpr size_t kMinVoters = 3;
constexpr int kExtraMembers = 2;

// For the crash handler: the run in progress, if any (single-threaded).
Cluster* g_current = nullptr;

constexpr uint32_t kMillion = 1'000'000;

ClientOptions DrawClientOptions(uint64_t seed) {
  raft::Rng r(DeriveSeed(seed, 6));
  ClientOptions o;
  o.clients = 3 + static_cast<int>(r.Uniform(3));
  o.keys = 3 + static_cast<int>(r.Uniform(3));
  o.think_max_ticks = 2 + static_cast<uint32_t>(r.Uniform(9));
  o.get_percent = 30 + static_cast<uint32_t>(r.Uniform(41));
  return o;
}

void OnFatalSignal(int sig) {
  if (g_current != nullptr) {
    const SimOptions& o = g_current->options();
    std::fprintf(stderr,
                 "\nraftkv-sim: %s in seed %" PRIu64 " (nodes %d) at tick %" PRIu64
                 "\nreproduce: raftkv-sim --seed %" PRIu64 " --nodes %d --ticks %" PRIu64
                 " --trace\nlast events:\n%s",
                 sig == SIGABRT ? "abort (assertion failed?)" : "fatal signal", o.seed, o.nodes,
                 g_current->trace().tick(), o.seed, o.nodes, o.ticks,
                 g_current->trace().Tail(o.trace_tail).c_str());
    std::fflush(stderr);
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

void InstallCrashHandler() {
  std::signal(SIGABRT, OnFatalSignal);
  std::signal(SIGSEGV, OnFatalSignal);
}

// ---------------------------------------------------------------------------
// Setup.

Cluster::Cluster(const SimOptions& options)
    : options_(options),
      profile_(DrawProfile(options.seed, options.nodes)),
      trace_(options.trace_tail, options.echo_trace, options.trace_out),
      rng_(DeriveSeed(options.seed, 3)),
      disk_rng_(DeriveSeed(options.seed, 5)),
      env_rng_(DeriveSeed(options.seed, 7)),
      persist_rng_(DeriveSeed(options.seed, 11)),
      wal_(ResolveDiskMode(options.disk, options.seed) == DiskMode::kWal),
      segment_bytes_(1024 + DeriveSeed(options.seed, 8) % 8192),
      net_(DeriveSeed(options.seed, 2), &trace_),
      clients_(DeriveSeed(options.seed, 4), DrawClientOptions(options.seed), &trace_),
      request_timeout_ticks_(20 + DeriveSeed(options.seed, 12) % 61) {
  // The drivers log as the server does; the trace is the simulator's log.
  spdlog::set_level(spdlog::level::off);
}

Cluster::~Cluster() {
  if (g_current == this) g_current = nullptr;
}

Cluster::SimNode* Cluster::AddNode(raft::NodeId id) {
  if (nodes_.size() <= id) nodes_.resize(id + 1);
  nodes_[id] = std::make_unique<SimNode>();
  nodes_[id]->id = id;
  return nodes_[id].get();
}

Cluster::SimNode* Cluster::Find(raft::NodeId id) {
  return id < nodes_.size() ? nodes_[id].get() : nullptr;
}

const Cluster::SimNode* Cluster::Find(raft::NodeId id) const {
  return id < nodes_.size() ? nodes_[id].get() : nullptr;
}

int Cluster::DownOrPaused() const {
  int count = 0;
  for (const auto& n : nodes_) {
    if (n && (n->state == NodeState::kDown || n->state == NodeState::kPaused)) count++;
  }
  return count;
}

Cluster::SimNode* Cluster::Leader() {
  SimNode* best = nullptr;
  for (auto& n : nodes_) {
    if (!n || n->state != NodeState::kUp || n->node().role() != raft::Role::kLeader) continue;
    if (best == nullptr || n->node().term() > best->node().term()) best = n.get();
  }
  return best;
}

void Cluster::Fail(std::string what) {
  if (failure_.empty()) failure_ = std::move(what);
}

// ---------------------------------------------------------------------------
// ClientTransport.

void Cluster::UpNodes(std::vector<raft::NodeId>* out) const {
  for (const auto& n : nodes_) {
    if (n && n->state == NodeState::kUp) out->push_back(n->id);
  }
}

server::Driver* Cluster::DriverOf(raft::NodeId node) {
  SimNode* n = Find(node);
  return n != nullptr && n->state == NodeState::kUp ? n->driver.get() : nullptr;
}

const kv::Store* Cluster::StoreOf(raft::NodeId node) const {
  const SimNode* n = Find(node);
  return n != nullptr && n->state == NodeState::kUp ? n->kv.get() : nullptr;
}

// ---------------------------------------------------------------------------
// The run.

void Cluster::DeliverDue(uint64_t step) {
  raft::Message m;
  while (!failed() && net_.PopDue(step, &m)) {
    SimNode* n = Find(m.to);
    if (n == nullptr || n->state == NodeState::kDown || n->state == NodeState::kGone) {
      trace_.Msg(EventKind::kDown, m);
      continue;
    }
    if (net_.Blocked(m.from, m.to)) {
      trace_.Msg(EventKind::kBlocked, m);
      continue;
    }
    if (n->state == NodeState::kPaused) {
      // It waits in the socket buffer until the node resumes.
      net_.Hold(n->wake_tick * kStepsPerTick + rng_.Uniform(kStepsPerTick), std::move(m));
      continue;
    }
    trace_.Msg(EventKind::kDeliver, m);
    std::vector<raft::Message> one;
    one.push_back(std::move(m));
    n->driver->Receive(std::move(one));
    AfterInput(n);
  }
}

void Cluster::ScheduledEvents() {
  for (auto& n : nodes_) {
    if (!n) continue;
    if (n->gone_tick != 0 && n->gone_tick <= tick_ && n->state != NodeState::kGone) {
      MakeGone(n.get());
      continue;
    }
    if (n->state == NodeState::kDown && n->wake_tick <= tick_) {
      StartNode(n.get());
    } else if (n->state == NodeState::kPaused && n->wake_tick <= tick_) {
      n->state = NodeState::kUp;
      trace_.Textf(n->id, "resume");
    }
  }
  if (heal_tick_ != 0 && tick_ >= heal_tick_) {
    net_.HealAll();
    heal_tick_ = 0;
    trace_.Text(raft::kNoNode, "network heals");
  }
}

Cluster::SimNode* Cluster::PickVictim(const std::vector<SimNode*>& candidates) {
  // Half the time, hit the leader: faults at the leader, in the middle of
  // replicating, make the interesting histories (Raft paper, Figure 8).
  if (rng_.Chance(1, 2)) {
    SimNode* l = Leader();
    if (l != nullptr && std::find(candidates.begin(), candidates.end(), l) != candidates.end()) {
      return l;
    }
  }
  return candidates[rng_.Uniform(candidates.size())];
}

void Cluster::FaultEvents() {
  std::vector<SimNode*> up;
  std::vector<SimNode*> alive;  // Not gone: partitions apply to these.
  for (auto& n : nodes_) {
    if (!n || n->state == NodeState::kGone) continue;
    alive.push_back(n.get());
    if (n->state == NodeState::kUp) up.push_back(n.get());
  }

  if (!net_.AnyBlocked() && profile_.partition_ppm > 0 &&
      rng_.Chance(profile_.partition_ppm, kMillion) && alive.size() >= 2) {
    stats_.partitions++;
    std::string what;
    uint64_t kind = rng_.Uniform(3);
    if (kind == 0) {
      // A random split into two sides, both non-empty.
      std::vector<int> side(alive.size());
      for (int& x : side) x = static_cast<int>(rng_.Uniform(2));
      if (std::count(side.begin(), side.end(), side[0]) == static_cast<long>(side.size())) {
        side[rng_.Uniform(side.size())] ^= 1;
      }
      std::string a, b;
      for (size_t i = 0; i < alive.size(); i++) {
        (side[i] == 0 ? a : b) += " " + std::to_string(alive[i]->id);
        for (size_t j = 0; j < alive.size(); j++) {
          if (side[i] != side[j]) net_.Block(alive[i]->id, alive[j]->id);
        }
      }
      what = "partition {" + a + " } | {" + b + " }";
    } else if (kind == 1) {
      SimNode* x = PickVictim(alive);
      for (SimNode* o : alive) {
        if (o == x) continue;
        net_.Block(x->id, o->id);
        net_.Block(o->id, x->id);
      }
      what = "isolate n" + std::to_string(x->id);
    } else {
      // One-way cuts: a->b lost while b->a still works.
      what = "one-way cuts";
      uint64_t cuts = 1 + rng_.Uniform(3);
      for (uint64_t c = 0; c < cuts; c++) {
        SimNode* x = alive[rng_.Uniform(alive.size())];
        SimNode* y = alive[rng_.Uniform(alive.size())];
        if (x == y) continue;
        net_.Block(x->id, y->id);
        what += " " + std::to_string(x->id) + "->" + std::to_string(y->id);
      }
    }
    uint32_t span = profile_.partition_max_ticks - profile_.partition_min_ticks + 1;
    heal_tick_ = tick_ + profile_.partition_min_ticks + rng_.Uniform(span);
    trace_.Textf(raft::kNoNode, "%s (until tick %" PRIu64 ")", what.c_str(), heal_tick_);
  }

  if (profile_.crash_ppm > 0 && rng_.Chance(profile_.crash_ppm, kMillion) && !up.empty() &&
      DownOrPaused() < profile_.max_down) {
    SimNode* n = PickVictim(up);
    Crash(n, "crash");
    up.erase(std::find(up.begin(), up.end(), n));
  }

  if (profile_.pause_ppm > 0 && rng_.Chance(profile_.pause_ppm, kMillion) && !up.empty() &&
      DownOrPaused() < profile_.max_down) {
    SimNode* n = PickVictim(up);
    n->state = NodeState::kPaused;
    n->wake_tick = tick_ + 1 + rng_.Uniform(profile_.pause_max_ticks + 1);
    stats_.pauses++;
    trace_.Textf(n->id, "PAUSE until tick %" PRIu64, n->wake_tick);
  }

  if (profile_.transfer_ppm > 0 && rng_.Chance(profile_.transfer_ppm, kMillion)) {
    SimNode* l = Leader();
    if (l != nullptr) {
      std::vector<raft::NodeId> voters = l->node().conf().Voters();
      voters.erase(std::remove(voters.begin(), voters.end(), l->id), voters.end());
      if (!voters.empty()) {
        raft::NodeId target = voters[rng_.Uniform(voters.size())];
        raft::Status s = l->driver->TransferLeadership(target);
        AfterInput(l);
        stats_.transfers += s.ok();
        trace_.Textf(l->id, "transfer leadership to n%" PRIu64 ": %s", target,
                     s.ToString().c_str());
      }
    }
  }
}

void Cluster::MembershipEvents(bool warmup) {
  SimNode* l = Leader();
  if (l == nullptr) return;
  server::Driver* d = l->driver.get();
  const raft::ConfState& conf = l->node().conf();
  auto add = [d](raft::NodeId id) {
    server::MemberInfo m = SimMember(id);
    return CallDriver([d, &m](server::Callback cb) { d->AddMember(m, std::move(cb)); }, nullptr);
  };
  if (warmup) {
    // Grow the bootstrapped one-node cluster to N, one change at a time:
    // each joins as a learner and is promoted once caught up.
    for (raft::NodeId id = 2; id <= static_cast<raft::NodeId>(options_.nodes); id++) {
      if (conf.Find(id) != nullptr) continue;
      std::optional<server::Outcome> refused = add(id);
      AfterInput(l);
      if (!refused) trace_.Textf(l->id, "warm-up: propose add n%" PRIu64, id);
      return;
    }
    return;
  }
  if (!faults_on_ || !options_.membership || profile_.member_ppm == 0 ||
      !rng_.Chance(profile_.member_ppm, kMillion)) {
    return;
  }
  size_t voters = conf.Voters().size();
  bool can_add = conf.members.size() < static_cast<size_t>(options_.nodes + kExtraMembers);
  std::vector<raft::NodeId> removable;
  for (const raft::Member& m : conf.members) {
    if (m.role == raft::MemberRole::kLearner || voters > kMinVoters) removable.push_back(m.id);
  }
  std::string before = DescribeConf(conf);
  if (can_add && (removable.empty() || rng_.Chance(1, 2))) {
    raft::NodeId id = next_id_;
    std::optional<server::Outcome> refused = add(id);
    AfterInput(l);
    trace_.Textf(l->id, "propose add n%" PRIu64 " (conf %s): %s", id, before.c_str(),
                 refused ? refused->message.c_str() : "ok");
    if (!refused) {
      // The new node starts empty and waits for the leader to contact it.
      next_id_++;
      stats_.conf_changes++;
      StartNode(AddNode(id));
    }
  } else if (!removable.empty()) {
    raft::NodeId id = removable[rng_.Uniform(removable.size())];
    std::optional<server::Outcome> refused =
        CallDriver([d, id](server::Callback cb) { d->RemoveMember(id, std::move(cb)); }, nullptr);
    AfterInput(l);
    stats_.conf_changes += !refused;
    trace_.Textf(l->id, "propose remove n%" PRIu64 " (conf %s): %s", id, before.c_str(),
                 refused ? refused->message.c_str() : "ok");
  }
}

void Cluster::StartTail() {
  faults_on_ = false;
  net_.HealAll();
  heal_tick_ = 0;
  net_.set_faults(NetFaults{0, 0, 1, 4, 0, 0});
  trace_.Text(raft::kNoNode, "calm tail: network healed, all nodes restarted and resumed");
  for (auto& n : nodes_) {
    if (!n) continue;
    if (n->state == NodeState::kDown) {
      StartNode(n.get());
    } else if (n->state == NodeState::kPaused) {
      n->state = NodeState::kUp;
    }
  }
}

void Cluster::LivenessDriver() {
  if (final_done_) return;
  if (final_attempt_ != 0) {
    SimNode* n = Find(final_node_);
    if (n != nullptr && n->state == NodeState::kUp && n->incarnation == final_incarnation_ &&
        tick_ < final_deadline_) {
      return;
    }
    final_attempt_ = 0;
  }
  SimNode* l = Leader();
  if (l == nullptr) return;
  // Through the driver, as a client's write: done once it answers ok.
  uint64_t attempt = tick_ + 1;
  kv::RequestId id{kFinalClient, attempt};
  std::string cmd = kv::EncodePut(id, "final", "f" + std::to_string(tick_));
  server::Driver* d = l->driver.get();
  std::optional<server::Outcome> refused = CallDriver(
      [d, &cmd, id](server::Callback cb) { d->Propose(std::move(cmd), id, std::move(cb)); },
      [this, attempt, node = l->id](server::Outcome o) {
        if (attempt != final_attempt_) return;
        if (!o.ok()) {
          final_attempt_ = 0;
          return;
        }
        final_done_ = true;
        trace_.Textf(node, "liveness: final write applied at index %" PRIu64, o.index);
      });
  AfterInput(l);
  if (refused) return;
  final_attempt_ = attempt;
  final_node_ = l->id;
  final_incarnation_ = l->incarnation;
  final_deadline_ = tick_ + kFinalTimeoutTicks;
  trace_.Textf(l->id, "liveness: propose the final write");
}

RunResult Cluster::Run() {
  g_current = this;
  RunResult result;
  result.profile = profile_.Describe();
  if (wal_) result.profile += StrFormat(" disk=wal segment=%" PRIu64, segment_bytes_);
  trace_.Textf(raft::kNoNode, "seed %" PRIu64 ", %d nodes, %" PRIu64 " ticks; profile %s",
               options_.seed, options_.nodes, options_.ticks, result.profile.c_str());
  net_.set_faults(NetFaults{0, 0, 1, 4, 0, 0});

  // Node 1 founds a one-node cluster; the others start empty and join
  // during the warm-up, which also exercises joining.
  for (raft::NodeId id = 1; id <= static_cast<raft::NodeId>(options_.nodes); id++) {
    StartNode(AddNode(id));
  }
  next_id_ = static_cast<raft::NodeId>(options_.nodes) + 1;
  if (!failed()) {
    raft::Status s = nodes_[1]->driver->Bootstrap();
    if (!s.ok()) Fail("bootstrap: " + s.ToString());
    AfterInput(nodes_[1].get());
  }

  const uint64_t fault_end = options_.ticks;
  for (tick_ = 0; !failed(); tick_++) {
    step_ = tick_ * kStepsPerTick;
    trace_.SetTime(tick_, 0);
    bool tail = tick_ >= fault_end;
    if (tick_ == fault_end) StartTail();
    if (tail && (final_done_ || tick_ >= fault_end + kTailMaxTicks)) break;

    if (!warm_ && !tail) {
      SimNode* l = Leader();
      if (l != nullptr && l->node().conf().Voters().size() == static_cast<size_t>(options_.nodes)) {
        warm_ = true;
        faults_on_ = options_.faults;
        if (faults_on_) net_.set_faults(profile_.net);
        trace_.Textf(raft::kNoNode, "warm-up done: conf %s; faults %s",
                     DescribeConf(l->node().conf()).c_str(), faults_on_ ? "on" : "off");
      } else if (tick_ >= kWarmupMaxTicks) {
        Fail(StrFormat("liveness (warm-up): no %d-voter cluster after %" PRIu64 " calm ticks",
                       options_.nodes, kWarmupMaxTicks));
        break;
      }
    }

    ScheduledEvents();
    if (faults_on_) FaultEvents();
    if (!tail) MembershipEvents(!warm_);

    for (auto& n : nodes_) {
      if (!n || n->state != NodeState::kUp) continue;
      n->driver->Tick();
      AfterInput(n.get());
    }
    ProcessDirty();
    clients_.Tick(tick_, this);
    if (tail) LivenessDriver();
    ProcessDirty();
    for (uint32_t sub = 0; sub < kStepsPerTick && !failed(); sub++) {
      step_ = tick_ * kStepsPerTick + sub;
      trace_.SetTime(tick_, sub);
      DeliverDue(step_);
      ProcessDirty();
      CompletePersists(step_);
      ProcessDirty();
    }
  }
  stats_.ticks = tick_;
  stats_.messages = net_.sent();
  stats_.dropped = net_.dropped();

  if (!failed() && !final_done_) {
    std::string status;
    for (auto& n : nodes_) {
      if (!n) continue;
      status += StrFormat("\n  n%" PRIu64 ": ", n->id);
      if (n->state != NodeState::kUp) {
        status += n->state == NodeState::kGone ? "gone" : "not up";
        continue;
      }
      raft::NodeStatus st = n->node().GetStatus();
      status += StrFormat("%s term=%" PRIu64 " leader=n%" PRIu64 " commit=%" PRIu64
                          " applied=%" PRIu64 " last=%" PRIu64 " conf=%s",
                          RoleShortName(st.role), st.term, st.leader, st.commit, n->kv->revision(),
                          st.last_index, DescribeConf(st.conf).c_str());
    }
    Fail(StrFormat("liveness: no write committed within %" PRIu64
                   " calm ticks after healing everything; nodes:",
                   kTailMaxTicks) +
         status);
  }

  clients_.Finish();
  if (!failed()) {
    LinearizabilityResult lin = CheckLinearizable(clients_.History());
    stats_.lin_states = lin.states;
    result.lin_inconclusive = lin.inconclusive;
    if (!lin.ok) {
      std::string where;
      if (lin.stuck_op != 0) where = "  " + clients_.Describe(lin.stuck_op) + "\n";
      Fail("linearizability: " + lin.explanation + where +
           "  (rerun with --trace and look for the op ids, e.g. '#17')");
    }
  }

  stats_.clients = clients_.stats();
  stats_.state_comparisons = checker_.state_comparisons();
  result.stats = stats_;
  result.trace_hash = trace_.hash();
  result.events = trace_.count();
  if (failed()) {
    result.ok = false;
    result.failure = !checker_.ok() ? checker_.failure() : failure_;
    result.trace_tail = trace_.Tail(options_.trace_tail);
  }
  g_current = nullptr;
  return result;
}

RunResult RunSimulation(const SimOptions& options) {
  Cluster cluster(options);
  return cluster.Run();
}

}  // namespace raftkv::sim
