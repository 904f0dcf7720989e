#include "server/lessor.h"

namespace raftkv::server {

void Lessor::Unschedule(uint64_t id, const Entry& e) {
  if (e.proposed) {
    proposed_--;
  } else {
    by_deadline_.erase({e.deadline, id});
  }
}

void Lessor::Apply(const kv::LeaseChange& c, TimePoint now) {
  std::lock_guard lock(mu_);
  const uint64_t id = c.lease.id;
  auto it = leases_.find(id);
  if (it != leases_.end()) Unschedule(id, it->second);
  if (c.gone) {
    if (it != leases_.end()) leases_.erase(it);
    return;
  }
  Entry e{c.lease.renewed_at, now + std::chrono::milliseconds(c.lease.ttl_ms), false};
  leases_[id] = e;
  by_deadline_.emplace(e.deadline, id);
}

void Lessor::Reset(const std::vector<kv::LeaseInfo>& leases, TimePoint now) {
  std::lock_guard lock(mu_);
  leases_.clear();
  by_deadline_.clear();
  proposed_ = 0;
  for (const kv::LeaseInfo& l : leases) {
    Entry e{l.renewed_at, now + std::chrono::milliseconds(l.ttl_ms), false};
    leases_[l.id] = e;
    by_deadline_.emplace(e.deadline, l.id);
  }
}

std::vector<kv::LeaseRef> Lessor::TakeDue(TimePoint now, size_t max) {
  std::lock_guard lock(mu_);
  std::vector<kv::LeaseRef> due;
  while (due.size() < max && !by_deadline_.empty() && by_deadline_.begin()->first <= now) {
    uint64_t id = by_deadline_.begin()->second;
    by_deadline_.erase(by_deadline_.begin());
    Entry& e = leases_.at(id);
    e.proposed = true;
    proposed_++;
    due.push_back(kv::LeaseRef{id, e.renewed_at});
  }
  return due;
}

void Lessor::Settled(const std::vector<kv::LeaseRef>& refs) {
  std::lock_guard lock(mu_);
  for (const kv::LeaseRef& r : refs) {
    auto it = leases_.find(r.id);
    // Gone (expired, revoked), or renewed since (Apply rescheduled it).
    if (it == leases_.end() || !it->second.proposed || it->second.renewed_at != r.renewed_at) {
      continue;
    }
    it->second.proposed = false;
    proposed_--;
    by_deadline_.emplace(it->second.deadline, r.id);
  }
}

void Lessor::SettleAll() {
  std::lock_guard lock(mu_);
  for (auto& [id, e] : leases_) {
    if (!e.proposed) continue;
    e.proposed = false;
    by_deadline_.emplace(e.deadline, id);
  }
  proposed_ = 0;
}

std::optional<int64_t> Lessor::RemainingMs(uint64_t id, TimePoint now) const {
  std::lock_guard lock(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::milliseconds>(it->second.deadline - now).count();
}

size_t Lessor::size() const {
  std::lock_guard lock(mu_);
  return leases_.size();
}

size_t Lessor::proposed() const {
  std::lock_guard lock(mu_);
  return proposed_;
}

}  // namespace raftkv::server
