#include "leases.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>

#include "trace.h"

namespace raftkv::sim {

namespace {

// The most due leases a leader is checked for at one tick: the driver's
// expiry budget grows 10 a tick (1000/s at 10 ms ticks; it starts at 0 on a
// fresh driver, and what one tick leaves is carried over). More due at once
// and the driver may take several ticks: the lateness check then skips them.
constexpr size_t kMaxDueChecked = 8;

int64_t Millis(server::TimePoint a, server::TimePoint b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(a - b).count();
}

std::string Ms(server::TimePoint t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  return StrFormat("%.1f", static_cast<double>(us) / 1000.0);
}

}  // namespace

LeaseChecker::LeaseChecker(std::function<void(std::string)> fail, Limits limits)
    : fail_(std::move(fail)), limits_(limits) {}

void LeaseChecker::Fail(std::string why) {
  if (failed_) return;
  failed_ = true;
  fail_(std::move(why));
}

void LeaseChecker::OnSent(kv::RequestId id, TimePoint at) { sent_[id.client][id.seq] = at; }

void LeaseChecker::OnRestored(raft::NodeId n, const kv::Store& kv, raft::Term term, TimePoint now) {
  NodeView& v = nodes_[n];
  v.applied_term = term;
  v.renewed.clear();
  v.armed.clear();
  for (const kv::LeaseInfo& l : kv.Leases()) v.renewed[l.id] = {l.renewed_at, now};
}

void LeaseChecker::OnStop(raft::NodeId n) { nodes_.erase(n); }

void LeaseChecker::EndLease(uint64_t id) {
  auto it = leases_.find(id);
  for (const std::string& k : it->second.keys) key_lease_.erase(k);
  leases_.erase(it);
}

void LeaseChecker::Model(const raft::Entry& e, TimePoint now) {
  if (e.type != raft::EntryType::kNormal || e.data.empty()) return;
  kv::CommandView cmd;
  if (!kv::DecodeCommand(e.data, &cmd)) return;  // The store fails the run.
  auto renew = [&](uint64_t id, uint64_t ttl_ms) {
    Lease& l = leases_[id];
    l.ttl_ms = ttl_ms;
    l.renewed_at = e.index;
    auto it = sent_.find(cmd.id.client);
    if (it == sent_.end() || !it->second.contains(cmd.id.seq)) {
      Fail(StrFormat("lease: the renewal at %" PRIu64 " (request %" PRIu64 ".%" PRIu64
                     ") was never sent by a client",
                     e.index, cmd.id.client, cmd.id.seq));
      return;
    }
    renewal_sent_[e.index] = it->second.at(cmd.id.seq);
  };
  switch (cmd.op) {
    case kv::Op::kPut: {
      if (cmd.single.lease == 0) return;  // Only lease clients write lease keys.
      auto l = leases_.find(cmd.single.lease);
      if (l == leases_.end()) return;  // kLeaseNotFound: no effect.
      std::string key(cmd.single.keys.key);
      auto old = key_lease_.find(key);
      if (old != key_lease_.end()) leases_[old->second].keys.erase(key);
      key_lease_[key] = cmd.single.lease;
      l->second.keys.insert(key);
      return;
    }
    case kv::Op::kLeaseGrant: {
      uint64_t id = cmd.lease_id;
      if (id == 0) {
        id = e.index;
        while (leases_.contains(id)) id++;
      } else if (leases_.contains(id)) {
        return;
      }
      stats_.grants++;
      ttl_of_[id] = cmd.ttl_ms;
      renew(id, cmd.ttl_ms);
      return;
    }
    case kv::Op::kLeaseKeepAlive:
      stats_.keepalives++;
      for (const kv::LeaseRef& r : cmd.leases) {
        auto it = leases_.find(r.id);
        if (it != leases_.end()) renew(r.id, it->second.ttl_ms);
      }
      return;
    case kv::Op::kLeaseRevoke: {
      const bool expire = cmd.reason == kv::RevokeReason::kExpire;
      for (const kv::LeaseRef& r : cmd.leases) {
        if (expire) {
          // No early expiry: the deadline the leader acted on counts from
          // the apply (or a later restore) of the renewal at r.renewed_at,
          // which came after its client sent it.
          auto sent = renewal_sent_.find(r.renewed_at);
          auto ttl = ttl_of_.find(r.id);
          if (sent == renewal_sent_.end() || ttl == ttl_of_.end()) {
            Fail(StrFormat("lease: the expiry at %" PRIu64 " names lease %" PRIu64
                           " renewed at %" PRIu64 ", which no grant or keepalive renewed",
                           e.index, r.id, r.renewed_at));
            return;
          }
          stats_.expiry_refs_checked++;
          const TimePoint due = sent->second + std::chrono::milliseconds(ttl->second);
          if (now < due) {
            Fail(StrFormat("lease early: the expiry of lease %" PRIu64 " (ttl %" PRIu64
                           " ms, renewed at %" PRIu64 " by a request sent at %s ms) applied "
                           "first at index %" PRIu64 " at %s ms, %" PRId64 " ms early",
                           r.id, ttl->second, r.renewed_at, Ms(sent->second).c_str(), e.index,
                           Ms(now).c_str(), Millis(due, now)));
            return;
          }
        }
        auto it = leases_.find(r.id);
        if (it == leases_.end() || (expire && it->second.renewed_at != r.renewed_at)) continue;
        (expire ? stats_.expiries : stats_.revokes)++;
        EndLease(r.id);
      }
      return;
    }
    default:
      return;
  }
}

void LeaseChecker::CheckState(raft::NodeId n, const kv::Store& kv, bool against_model) {
  kv::TxnOp all;
  all.kind = kv::TxnOpKind::kRange;
  all.flags = kv::kKeysOnly;
  all.keys = kv::KeyRange{"", "", true};
  kv::Result r = kv.Read(all);
  std::vector<kv::LeaseInfo> leases = kv.Leases();
  stats_.state_checks++;
  auto has = [&](uint64_t id) {
    for (const kv::LeaseInfo& l : leases) {
      if (l.id == id) return true;
    }
    return false;
  };
  for (const kv::KeyValue& k : r.ops.at(0).kvs) {
    if (k.meta.lease != 0 && !has(k.meta.lease)) {
      Fail(StrFormat("lease: n%" PRIu64 " at revision %" PRIu64 " holds key %s attached to lease "
                     "%" PRIu64 ", which its store does not hold",
                     n, kv.revision(), k.key.c_str(), k.meta.lease));
      return;
    }
    if (!against_model || k.key.rfind("lease/", 0) != 0) continue;
    auto m = key_lease_.find(k.key);
    if (m == key_lease_.end() || m->second != k.meta.lease) {
      Fail(StrFormat(
          "lease: n%" PRIu64 " at revision %" PRIu64 " holds key %s on lease %" PRIu64
          "; the log says %s",
          n, kv.revision(), k.key.c_str(), k.meta.lease,
          m == key_lease_.end() ? "it is gone" : ("lease " + std::to_string(m->second)).c_str()));
      return;
    }
  }
  if (!against_model) return;
  std::vector<kv::LeaseInfo> want;
  size_t keys = 0;
  for (const auto& [id, l] : leases_) {
    want.push_back(kv::LeaseInfo{id, l.ttl_ms, l.renewed_at});
    keys += l.keys.size();
  }
  size_t lease_keys = 0;
  for (const kv::KeyValue& k : r.ops.at(0).kvs) lease_keys += k.key.rfind("lease/", 0) == 0;
  if (want != leases || keys != lease_keys) {
    auto describe = [](const std::vector<kv::LeaseInfo>& ls) {
      std::string s;
      for (const kv::LeaseInfo& l : ls) {
        s += StrFormat(" %" PRIu64 "(ttl %" PRIu64 " @%" PRIu64 ")", l.id, l.ttl_ms, l.renewed_at);
      }
      return s;
    };
    Fail(StrFormat("lease: n%" PRIu64 " at revision %" PRIu64
                   " holds leases {%s } and %zu lease keys; the log says {%s } and %zu",
                   n, kv.revision(), describe(leases).c_str(), lease_keys, describe(want).c_str(),
                   keys));
  }
}

void LeaseChecker::OnApplied(raft::NodeId n, const server::Driver& driver,
                             std::span<const raft::Entry> entries, const kv::Store& kv,
                             TimePoint now) {
  if (failed_ || entries.empty()) return;
  bool first = false;
  for (const raft::Entry& e : entries) {
    if (e.index <= frontier_) continue;
    if (e.index != frontier_ + 1) {
      Fail(StrFormat("lease: n%" PRIu64 " applied index %" PRIu64
                     " first, before any node applied %" PRIu64,
                     n, e.index, frontier_ + 1));
      return;
    }
    Model(e, now);
    frontier_ = e.index;
    first = true;
    if (failed_) return;
  }
  NodeView& v = nodes_[n];
  v.applied_term = entries.back().term;
  // This node's renewals: the leases its store renewed in this batch.
  std::map<uint64_t, std::pair<uint64_t, TimePoint>> renewed;
  for (const kv::LeaseInfo& l : kv.Leases()) {
    auto it = v.renewed.find(l.id);
    if (it != v.renewed.end() && it->second.first == l.renewed_at) {
      renewed.emplace(l.id, it->second);
    } else {
      renewed.emplace(l.id, std::make_pair(l.renewed_at, now));
    }
  }
  v.renewed.swap(renewed);
  CheckState(n, kv, first && kv.revision() == frontier_);
  if (!failed_) CheckArmed(n, v, driver, kv, now);
}

void LeaseChecker::CheckArmed(raft::NodeId n, NodeView& v, const server::Driver& driver,
                              const kv::Store& kv, TimePoint now) {
  if (v.armed.empty()) return;
  const raft::Node& node = driver.node();
  if (node.role() != raft::Role::kLeader || node.term() != v.armed_term) {
    v.armed.clear();
    return;
  }
  for (auto it = v.armed.begin(); it != v.armed.end();) {
    const Armed& a = it->second;
    if (kv.revision() < a.watermark) {
      ++it;
      continue;
    }
    kv::LeaseInfo l;
    if (kv.GetLease(it->first, &l) && l.renewed_at == a.renewed_at) {
      Fail(StrFormat("lease late: n%" PRIu64 " leads term %" PRIu64
                     " and has applied through %" PRIu64 ", past index %" PRIu64
                     " (its last at its tick at %s ms, when lease %" PRIu64 " (ttl %" PRIu64
                     " ms, renewed at %" PRIu64
                     ") was past its deadline %s ms on this node), and the lease is still there "
                     "at %s ms (the driver's Lessor: %s ms to its deadline, %zu expiries "
                     "proposed)",
                     n, node.term(), kv.revision(), a.watermark, Ms(a.armed_at).c_str(), it->first,
                     l.ttl_ms, l.renewed_at, Ms(a.deadline).c_str(), Ms(now).c_str(),
                     std::to_string(driver.LeaseRemainingMs(it->first).value_or(INT64_MIN)).c_str(),
                     driver.lessor().proposed()));
      return;
    }
    stats_.late_checks++;
    stats_.max_late_ms = std::max(stats_.max_late_ms, Millis(now, a.deadline));
    it = v.armed.erase(it);
  }
}

void LeaseChecker::BeforeTick(raft::NodeId n, const server::Driver& driver) {
  auto it = nodes_.find(n);
  if (it == nodes_.end()) return;
  const raft::Node& node = driver.node();
  it->second.uncommitted_bound = UINT64_MAX;
  if (node.role() != raft::Role::kLeader) return;
  // The core counts the leader's own proposals of its term past the commit
  // index, each as its data + 24 bytes (raft::Entry::SizeBytes), and refuses
  // a proposal that would take them past max_uncommitted_bytes (none if
  // none is uncommitted). Every entry past the commit index counted at the
  // largest size is an upper bound.
  const raft::Index last = node.GetStatus().last_index;
  const raft::Index behind = last > node.commit() ? last - node.commit() : 0;
  it->second.uncommitted_bound = behind * (limits_.max_entry_bytes + 24);
}

void LeaseChecker::AfterTick(raft::NodeId n, const server::Driver& driver, const kv::Store& kv,
                             TimePoint now) {
  const raft::Node& node = driver.node();
  if (failed_) return;
  auto vit = nodes_.find(n);
  if (vit == nodes_.end()) return;
  NodeView& v = vit->second;
  // As Driver::ProposeExpiries: only a leader whose term's no-op is applied.
  if (node.role() != raft::Role::kLeader || v.applied_term != node.term()) {
    v.armed.clear();
    return;
  }
  if (v.armed_term != node.term()) {
    v.armed.clear();
    v.armed_term = node.term();
  }
  std::vector<std::pair<uint64_t, Armed>> due;
  for (const kv::LeaseInfo& l : kv.Leases()) {
    auto r = v.renewed.find(l.id);
    if (r == v.renewed.end() || r->second.first != l.renewed_at) continue;  // Not yet seen.
    const TimePoint deadline = r->second.second + std::chrono::milliseconds(l.ttl_ms);
    if (deadline > now) continue;
    due.push_back({l.id, Armed{l.renewed_at, 0, deadline, now}});
  }
  // Armed only at a tick where the driver could not refuse the expiry's
  // proposal: none of the leader's entries uncommitted (else a proposal may
  // pass max_uncommitted_bytes), no leadership transfer in progress, fewer
  // requests pending than the driver takes, few enough leases due for its
  // budget and one entry. Otherwise it tries again at a later tick, and the
  // leases due are armed from a tick where nothing stands in the way. Leases
  // armed earlier stay armed: their expiry is in the log at or below their
  // watermark.
  if (due.empty() || due.size() > kMaxDueChecked) return;
  std::vector<kv::LeaseRef> refs;
  for (const auto& [id, a] : due) refs.push_back(kv::LeaseRef{id, a.renewed_at});
  const uint64_t bytes =
      kv::EncodeLeaseRevoke(kv::RequestId{n, 0}, kv::RevokeReason::kExpire, refs).size();
  if (bytes > limits_.max_entry_bytes ||
      (v.uncommitted_bound > 0 && v.uncommitted_bound + bytes > limits_.max_uncommitted_bytes)) {
    return;
  }
  raft::NodeStatus st = node.GetStatus();
  server::StatusReport report = driver.Status();
  if (st.transferee != raft::kNoNode ||
      report.pending_writes + report.pending_reads >= limits_.max_pending_requests) {
    return;
  }
  for (auto& [id, a] : due) {
    auto it = v.armed.find(id);
    if (it != v.armed.end() && it->second.renewed_at == a.renewed_at) continue;
    a.watermark = st.last_index;
    v.armed[id] = a;
    stats_.armed++;
  }
}

}  // namespace raftkv::sim
