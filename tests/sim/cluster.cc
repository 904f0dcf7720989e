#include "cluster.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cinttypes>
#include <csignal>
#include <cstdio>

#include "kv/command.h"

namespace raftkv::sim {

namespace {

// Calm ticks allowed for node 1 to bootstrap and the others to join: the
// warm-up fails once neither the voter count nor any joining node's last
// index moved for kWarmupMaxTicks, or after kWarmupHardMaxTicks in all
// (clients pause after kWarmupMaxTicks: see Run).
constexpr uint64_t kWarmupMaxTicks = 400;
constexpr uint64_t kWarmupHardMaxTicks = 2000;
// Calm ticks allowed, after everything heals, for a final write to commit.
// The calm tail fails once neither any node's commit index nor the sum of
// the nodes' last indexes reached a new high for kTailMaxTicks, or after
// kTailHardMaxTicks in all: a long divergent log rewritten one entry per
// message (the tiny-message schedule) can take longer than kTailMaxTicks to
// catch up while making steady progress (seed 200336), and a new leader
// commits nothing until a quorum holds an entry of its term, which can be
// some 1,500 entries of catching up away (seed 503252).
constexpr uint64_t kTailMaxTicks = 1500;
constexpr uint64_t kTailHardMaxTicks = 6000;
constexpr uint64_t kFinalTimeoutTicks = 50;
// The liveness check's own writes: a request id apart from the clients'.
constexpr uint64_t kFinalClient = uint64_t{1} << 62;
// The divergence schedule's writes to a cut-off leader.
constexpr uint64_t kDivergentClient = uint64_t{1} << 61;
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
  o.txn_get_percent = 10 + static_cast<uint32_t>(r.Uniform(31));
  o.delete_percent = 5 + static_cast<uint32_t>(r.Uniform(11));
  o.cas_percent = 15 + static_cast<uint32_t>(r.Uniform(31));
  o.txn_put_percent = 10 + static_cast<uint32_t>(r.Uniform(21));
  return o;
}

// From a stream of its own, so that the other clients' options stay what
// the seed gave them before the lease workload existed.
LeaseClientOptions DrawLeaseClientOptions(uint64_t seed) {
  raft::Rng r(DeriveSeed(seed, 17));
  LeaseClientOptions o;
  o.clients = 1 + static_cast<int>(r.Uniform(2));
  o.max_leases = 2 + static_cast<int>(r.Uniform(3));
  o.think_max_ticks = 3 + static_cast<uint32_t>(r.Uniform(10));
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
      profile_(DrawProfile(options.seed, options.nodes, options.schedules)),
      trace_(options.trace_tail, options.echo_trace, options.trace_out),
      rng_(DeriveSeed(options.seed, 3)),
      disk_rng_(DeriveSeed(options.seed, 5)),
      env_rng_(DeriveSeed(options.seed, 7)),
      persist_rng_(DeriveSeed(options.seed, 11)),
      wal_(ResolveDiskMode(options.disk, options.seed) == DiskMode::kWal),
      segment_bytes_(1024 + DeriveSeed(options.seed, 8) % 8192),
      net_(DeriveSeed(options.seed, 2), &trace_),
      clients_(DeriveSeed(options.seed, 4), DrawClientOptions(options.seed), &trace_),
      watches_(DeriveSeed(options.seed, 15), [this](std::string why) { Fail(std::move(why)); }),
      lease_checker_([this](std::string why) { Fail(std::move(why)); },
                     LeaseChecker::Limits{kMaxPendingRequests, kMaxEntryBytes,
                                          profile_.max_uncommitted_bytes}),
      lease_clients_(DeriveSeed(options.seed, 16), DrawLeaseClientOptions(options.seed), &trace_,
                     [this](kv::RequestId id) { lease_checker_.OnSent(id, Now()); }),
      sched_rng_(DeriveSeed(options.seed, 14)),
      request_timeout_ticks_(20 + DeriveSeed(options.seed, 12) % 61) {
  if (profile_.lone_voter && options.faults) lone_end_tick_ = profile_.lone_ticks;
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
    if (n->state != NodeState::kGone && n->snapshot_limit_bytes > 0) {
      // Snapshot refusal: restarted without the limit, so that it catches up.
      if (n->state != NodeState::kDown) Crash(n.get(), "restart without the snapshot limit");
      n->state = NodeState::kDown;
    }
    if (n->state == NodeState::kDown) {
      StartNode(n.get());
    } else if (n->state == NodeState::kPaused) {
      n->state = NodeState::kUp;
    }
  }
}

// ---------------------------------------------------------------------------
// Targeted schedules (faults.h; README.md, "Targeted schedules").

void Cluster::TargetedEvents() {
  if (InLonePhase() || (lone_end_tick_ != 0 && tick_ == lone_end_tick_)) LoneVoterEvent();
  if (!faults_on_) return;
  if (profile_.figure8) Figure8Event();
  if (profile_.divergence) DivergenceEvent();
}

// Raft paper, Figure 8: a leader replicates an entry to a minority and
// crashes; a leader of a later term, which lacks it, writes another entry at
// its index and crashes too; the first comes back, is elected, and copies its
// old entry to a majority. Counting those copies must not commit it: only an
// entry of the leader's own term commits by counting (5.4.2). Crashing every
// leader that holds an entry fewer than a quorum have, right then, makes such
// histories over and over; small appends (tiny_messages) let the old entry be
// acknowledged alone, before the new leader's own entry after it.
void Cluster::Figure8Event() {
  if (tick_ < figure8_next_tick_) return;
  SimNode* l = Leader();
  if (l == nullptr) return;
  raft::NodeStatus st = l->node().GetStatus();
  if (st.last_index <= st.commit) return;
  size_t holders = 1, followers = 0;  // Of the entry after the commit index.
  for (const raft::PeerStatus& p : st.peers) {
    if (p.role == raft::MemberRole::kVoter && p.match > st.commit) followers++;
  }
  holders += followers;
  if (holders >= st.conf.Voters().size() / 2 + 1) return;
  // Most often right after a follower took it (a minority, not only the leader).
  if (!sched_rng_.Chance(1, followers > 0 ? 2 : 4)) return;
  figure8_next_tick_ = tick_ + 2 + sched_rng_.Uniform(20);
  std::string why = StrFormat("figure 8: leader of term %" PRIu64 " holds [%" PRIu64 ",%" PRIu64
                              "], commit %" PRIu64 ", followers holding more: %zu",
                              st.term, st.commit + 1, st.last_index, st.commit, followers);
  if (DownOrPaused() < std::max(1, profile_.max_down) && sched_rng_.Chance(3, 4)) {
    stats_.figure8_crashes++;
    Crash(l, why.c_str());
    l->wake_tick = tick_ + 1 + sched_rng_.Uniform(20);
    return;
  }
  if (net_.AnyBlocked()) return;
  std::vector<SimNode*> others;
  for (auto& n : nodes_) {
    if (n && n.get() != l && n->state != NodeState::kGone) others.push_back(n.get());
  }
  for (SimNode* o : others) {
    net_.Block(l->id, o->id);
    net_.Block(o->id, l->id);
  }
  stats_.figure8_isolations++;
  stats_.partitions++;
  heal_tick_ = tick_ + 10 + sched_rng_.Uniform(51);
  trace_.Textf(l->id, "%s: isolated until tick %" PRIu64, why.c_str(), heal_tick_);
}

// Long-lived divergent logs: the leader (with one follower, in a cluster of
// five or more) is cut off for 100-400 ticks. Check-quorum is off, so it
// stays leader and takes proposals while the majority elects another and
// commits; when the cut heals it must find where its log parts from the new
// leader's (the reject hint's fast backtracking) and truncate everything after.
void Cluster::DivergenceEvent() {
  if (divergent_leader_ != raft::kNoNode) {
    SimNode* old = Find(divergent_leader_);
    if (net_.AnyBlocked()) {
      // Writes keep reaching the cut-off leader (the clients' own wait for
      // their timeouts): 1-3 a tick on a key of their own, never read.
      if (old == nullptr || old->state != NodeState::kUp ||
          old->node().role() != raft::Role::kLeader) {
        return;
      }
      server::Driver* d = old->driver.get();
      for (uint64_t i = 1 + sched_rng_.Uniform(3); i > 0; i--) {
        kv::RequestId id{kDivergentClient, ++divergent_writes_};
        std::string cmd = kv::EncodePut(id, "divergent", std::to_string(divergent_writes_));
        CallDriver(
            [d, &cmd, id](server::Callback cb) { d->Propose(std::move(cmd), id, std::move(cb)); },
            nullptr);
      }
      AfterInput(old);
      return;
    }
    divergent_leader_ = raft::kNoNode;
    if (old == nullptr || old->state != NodeState::kUp) return;
    raft::NodeStatus st = old->node().GetStatus();
    stats_.divergent_entries += st.last_index - st.commit;
    trace_.Textf(old->id,
                 "divergence heals: %s of term %" PRIu64 " holds %" PRIu64
                 " entries past its commit index",
                 RoleShortName(st.role), st.term, st.last_index - st.commit);
    return;
  }
  if (divergence_next_tick_ == 0) divergence_next_tick_ = tick_ + sched_rng_.Uniform(200);
  if (tick_ < divergence_next_tick_ || net_.AnyBlocked()) return;
  SimNode* l = Leader();
  if (l == nullptr) return;
  std::vector<SimNode*> side{l}, rest;
  for (auto& n : nodes_) {
    if (n && n.get() != l && n->state != NodeState::kGone) rest.push_back(n.get());
  }
  if (rest.size() >= 4) {
    size_t i = sched_rng_.Uniform(rest.size());
    side.push_back(rest[i]);
    rest.erase(rest.begin() + static_cast<long>(i));
  }
  std::string a, b;
  for (SimNode* x : side) {
    a += " " + std::to_string(x->id);
    for (SimNode* y : rest) {
      net_.Block(x->id, y->id);
      net_.Block(y->id, x->id);
    }
  }
  for (SimNode* y : rest) b += " " + std::to_string(y->id);
  stats_.divergences++;
  stats_.partitions++;
  divergent_leader_ = l->id;
  heal_tick_ = tick_ + 100 + sched_rng_.Uniform(301);
  divergence_next_tick_ = heal_tick_ + 100 + sched_rng_.Uniform(400);
  trace_.Textf(l->id, "divergence: leader cut off {%s } | {%s } until tick %" PRIu64, a.c_str(),
               b.c_str(), heal_tick_);
}

bool Cluster::InLonePhase() const { return tick_ < lone_end_tick_; }

// A lone voter with learners: node 1 is the only voter while its learners'
// answers are cut (so none is promoted), and it is crashed every 10-40
// ticks. Each restart it campaigns and becomes leader in the Ready that
// changes its term, whose appends to the learners the driver must hold
// until that term is durable (CheckSend).
void Cluster::LoneVoterEvent() {
  if (!InLonePhase()) {
    net_.HealAll();
    trace_.Text(raft::kNoNode, "lone voter phase ends: learners' answers flow again");
    return;
  }
  for (auto& n : nodes_) {
    if (n && n->id != 1) net_.Block(n->id, 1);
  }
  SimNode* one = Find(1);
  if (one == nullptr || one->state != NodeState::kUp || tick_ < lone_next_crash_tick_ ||
      one->node().conf().members.size() < 2) {
    return;
  }
  lone_next_crash_tick_ = tick_ + 10 + sched_rng_.Uniform(31);
  stats_.lone_crashes++;
  Crash(one, "lone voter: crash");
  one->wake_tick = tick_ + 1 + sched_rng_.Uniform(5);
}

// Every step of the lone phase: a lone voter whose Ready that makes it
// leader of a new term is on disk is crashed half the time, so that the
// term may be lost with everything the Ready held back.
void Cluster::TargetedStepEvents() {
  if (!InLonePhase()) return;
  SimNode* one = Find(1);
  if (one == nullptr || one->state != NodeState::kUp || one->persist_rd == nullptr) return;
  const raft::Ready& rd = *one->persist_rd;
  if (!rd.term_or_vote_changed || !rd.soft_state || rd.soft_state->role != raft::Role::kLeader ||
      one->node().conf().members.size() < 2 || lone_seen_incarnation_ == one->incarnation) {
    return;
  }
  // One such Ready an incarnation: the lone voter leads until it crashes.
  lone_seen_incarnation_ = one->incarnation;
  stats_.lone_term_changes++;
  if (!sched_rng_.Chance(1, 2)) return;
  stats_.lone_term_crashes++;
  stats_.lone_crashes++;
  Crash(one, "lone voter: crash while the Ready of its new term is on disk");
  one->wake_tick = tick_ + 1 + sched_rng_.Uniform(5);
}

uint64_t Cluster::SnapshotLimitFor(const SimNode* n) const {
  if (!profile_.snapshot_refusal || !faults_on_) return 0;
  raft::Rng r(DeriveSeed(options_.seed, 3000 + n->id * 4096 + n->incarnation));
  return r.Chance(1, 2) ? profile_.snapshot_limit_bytes : 0;
}

void Cluster::CheckSend(SimNode* n, const raft::Message& m) {
  // A pre-vote and its grant name the term the candidate would campaign
  // at; every other message carries the sender's term, which must be on its
  // disk before the message leaves (types.h, Ready: term_or_vote_changed).
  if (m.type == raft::MessageType::kPreVote || m.type == raft::MessageType::kPreVoteResp) return;
  raft::Term durable = n->storage().InitialHardState().term;
  if (m.term > durable) {
    Fail(StrFormat("persistence: n%" PRIu64 " sends %s to n%" PRIu64 " in term %" PRIu64
                   " while its disk holds term %" PRIu64,
                   n->id, raft::MessageTypeName(m.type), m.to, m.term, durable));
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
    if (tail) {
      raft::Index commit = 0;
      raft::Index logs = 0;  // Replication progress, for a leader of a new term
                             // that commits nothing until a quorum holds its entry.
      for (auto& n : nodes_) {
        if (!n || n->state != NodeState::kUp) continue;
        commit = std::max(commit, n->node().commit());
        logs += n->node().GetStatus().last_index;
      }
      if (commit > tail_commit_ || logs > tail_logs_ || tick_ == fault_end) {
        tail_commit_ = std::max(tail_commit_, commit);
        tail_logs_ = std::max(tail_logs_, logs);
        tail_progress_tick_ = tick_;
      }
      if (final_done_ || tick_ >= tail_progress_tick_ + kTailMaxTicks ||
          tick_ >= fault_end + kTailHardMaxTicks) {
        break;
      }
    }

    if (!warm_ && !tail) {
      SimNode* l = Leader();
      if (l != nullptr && l->node().conf().Voters().size() == static_cast<size_t>(options_.nodes)) {
        warm_ = true;
        clients_.set_stopped(false);
        lease_clients_.set_stopped(false);
        faults_on_ = options_.faults;
        if (faults_on_) net_.set_faults(profile_.net);
        trace_.Textf(raft::kNoNode, "warm-up done: conf %s; faults %s",
                     DescribeConf(l->node().conf()).c_str(), faults_on_ ? "on" : "off");
      } else {
        // Progress: more voters, or a joining node's log grew.
        size_t voters = l != nullptr ? l->node().conf().Voters().size() : 0;
        raft::Index joining = 0;
        for (auto& n : nodes_) {
          if (l == nullptr || !n || n->state != NodeState::kUp || l->node().conf().IsVoter(n->id)) {
            continue;
          }
          joining += n->node().GetStatus().last_index;
        }
        if (l != nullptr && (voters > warm_voters_ || joining > warm_joining_)) {
          warm_voters_ = voters;
          warm_joining_ = joining;  // A promotion drops a node from the sum.
          warm_progress_tick_ = tick_;
        }
        // A learner whose replication barely keeps up with the writes (tiny
        // appends, tiny snapshot chunks with little log kept after each) may
        // never catch up while they go on: Raft does not promise it, and an
        // operator would lower the load. So the clients pause once the
        // warm-up has taken kWarmupMaxTicks, until it is done (sim seed
        // 407031: 3 -> 4 voters, 9-byte snapshot chunks, 15 entries kept).
        if (tick_ == lone_end_tick_ + kWarmupMaxTicks) {
          clients_.set_stopped(true);
          lease_clients_.set_stopped(true);
          trace_.Textf(raft::kNoNode, "warm-up: clients pause until it is done");
        }
        uint64_t from = std::max(warm_progress_tick_, lone_end_tick_);
        if (tick_ >= from + kWarmupMaxTicks || tick_ >= lone_end_tick_ + kWarmupHardMaxTicks) {
          Fail(StrFormat("liveness (warm-up): no %d-voter cluster after %" PRIu64
                         " calm ticks (%" PRIu64 " without progress)",
                         options_.nodes, tick_ - lone_end_tick_, tick_ - warm_progress_tick_));
          break;
        }
      }
    }

    ScheduledEvents();
    if (faults_on_) FaultEvents();
    if (!tail) TargetedEvents();
    if (!tail) MembershipEvents(!warm_);

    for (auto& n : nodes_) {
      if (!n || n->state != NodeState::kUp) continue;
      lease_checker_.BeforeTick(n->id, *n->driver);
      n->driver->Tick();
      AfterInput(n.get());
      lease_checker_.AfterTick(n->id, *n->driver, *n->kv, Now());
    }
    ProcessDirty();
    for (auto& n : nodes_) {
      if (n && n->state == NodeState::kUp && n->feed) watches_.Tick(n->feed.get());
    }
    clients_.Tick(tick_, this);
    lease_clients_.Tick(tick_, this);
    if (tail) LivenessDriver();
    ProcessDirty();
    for (uint32_t sub = 0; sub < kStepsPerTick && !failed(); sub++) {
      step_ = tick_ * kStepsPerTick + sub;
      trace_.SetTime(tick_, sub);
      DeliverDue(step_);
      ProcessDirty();
      if (!tail) TargetedStepEvents();
      CompletePersists(step_);
      ProcessDirty();
    }
  }
  for (auto& n : nodes_) {
    if (n && n->state == NodeState::kUp) {
      stats_.snapshots_refused += n->node().GetStatus().snapshots_refused;
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
    Fail(StrFormat("liveness: the final write was not applied after healing everything: no "
                   "commit or replication progress for %" PRIu64 " ticks, or %" PRIu64
                   " ticks in all; nodes:",
                   kTailMaxTicks, kTailHardMaxTicks) +
         status);
  }

  clients_.Finish();
  for (auto& n : nodes_) {
    if (!failed() && n && n->feed) watches_.Check(n->feed.get());
  }
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
  stats_.watches = watches_.stats();
  stats_.lease_clients = lease_clients_.stats();
  stats_.leases = lease_checker_.stats();
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
