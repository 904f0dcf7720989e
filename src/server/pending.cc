#include "server/pending.h"

namespace raftkv::server {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kNotLeader:
      return "not_leader";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kTimeout:
      return "timeout";
    case Code::kNotCommitted:
      return "not_committed";
    case Code::kInvalid:
      return "invalid";
    case Code::kBusy:
      return "busy";
    case Code::kShuttingDown:
      return "shutting_down";
    case Code::kStorageFailed:
      return "storage_failed";
    case Code::kConflict:
      return "conflict";
  }
  return "unknown";
}

void Answer(std::vector<Callback>* callbacks, const Outcome& outcome) {
  for (Callback& cb : *callbacks) cb(outcome);
}

void PendingWrites::Add(PendingWrite w) {
  uint64_t serial = next_serial_++;
  by_index_.emplace(w.index, serial);
  by_serial_.emplace(serial, std::move(w));
}

std::vector<PendingWrite> PendingWrites::TakeThrough(raft::Index index) {
  std::vector<PendingWrite> out;
  while (!by_index_.empty() && by_index_.begin()->first <= index) {
    auto it = by_serial_.find(by_index_.begin()->second);
    by_index_.erase(by_index_.begin());
    if (it == by_serial_.end()) continue;
    out.push_back(std::move(it->second));
    by_serial_.erase(it);
  }
  return out;
}

std::vector<PendingWrite> PendingWrites::TakeExpired(TimePoint now) {
  std::vector<PendingWrite> out;
  // Deadlines are in arrival order.
  while (!by_serial_.empty() && by_serial_.begin()->second.deadline <= now) {
    uint64_t serial = by_serial_.begin()->first;
    PendingWrite w = std::move(by_serial_.begin()->second);
    by_serial_.erase(by_serial_.begin());
    auto [lo, hi] = by_index_.equal_range(w.index);
    for (auto j = lo; j != hi; ++j) {
      if (j->second == serial) {
        by_index_.erase(j);
        break;
      }
    }
    out.push_back(std::move(w));
  }
  return out;
}

std::vector<PendingWrite> PendingWrites::TakeAll() {
  std::vector<PendingWrite> out;
  out.reserve(by_serial_.size());
  for (auto& [serial, w] : by_serial_) out.push_back(std::move(w));
  by_serial_.clear();
  by_index_.clear();
  return out;
}

void PendingReads::Queue(Callback done) {
  batch_.push_back(std::move(done));
  count_++;
}

template <typename Rounds, typename Pred>
std::vector<Callback> PendingReads::TakeRounds(Rounds* rounds, Pred take) {
  std::vector<Callback> out;
  for (auto it = rounds->begin(); it != rounds->end();) {
    if (!take(it->second)) {
      ++it;
      continue;
    }
    for (Callback& cb : it->second.waiters) out.push_back(std::move(cb));
    it = rounds->erase(it);
  }
  return out;
}

std::vector<Callback> PendingReads::Uncount(std::vector<Callback> cbs) {
  count_ -= cbs.size();
  return cbs;
}

std::vector<Callback> PendingReads::TakeBatch() {
  std::vector<Callback> out = std::move(batch_);
  batch_.clear();
  return Uncount(std::move(out));
}

void PendingReads::Issued(uint64_t ctx, std::vector<Callback> batch, TimePoint deadline) {
  count_ += batch.size();
  issued_.emplace(ctx, Round{std::move(batch), deadline});
}

bool PendingReads::Released(uint64_t ctx, raft::Index index) {
  auto it = issued_.find(ctx);
  if (it == issued_.end()) return false;
  released_.emplace(index, std::move(it->second));
  issued_.erase(it);
  return true;
}

std::vector<Callback> PendingReads::TakeServable(raft::Index applied) {
  std::vector<Callback> out;
  while (!released_.empty() && released_.begin()->first <= applied) {
    for (Callback& cb : released_.begin()->second.waiters) out.push_back(std::move(cb));
    released_.erase(released_.begin());
  }
  return Uncount(std::move(out));
}

std::vector<Callback> PendingReads::TakeIssued() {
  return Uncount(TakeRounds(&issued_, [](const Round&) { return true; }));
}

std::vector<Callback> PendingReads::TakeIssued(uint64_t ctx) {
  auto it = issued_.find(ctx);
  if (it == issued_.end()) return {};
  std::vector<Callback> out = std::move(it->second.waiters);
  issued_.erase(it);
  return Uncount(std::move(out));
}

std::pair<std::vector<Callback>, std::vector<Callback>> PendingReads::TakeExpired(TimePoint now) {
  auto expired = [now](const Round& r) { return r.deadline <= now; };
  std::vector<Callback> issued = TakeRounds(&issued_, expired);
  std::vector<Callback> released = TakeRounds(&released_, expired);
  return {Uncount(std::move(issued)), Uncount(std::move(released))};
}

std::vector<Callback> PendingReads::TakeAll() {
  std::vector<Callback> all = TakeBatch();
  for (Callback& cb : TakeIssued()) all.push_back(std::move(cb));
  for (Callback& cb : TakeServable(UINT64_MAX)) all.push_back(std::move(cb));
  return all;
}

}  // namespace raftkv::server
