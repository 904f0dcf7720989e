#include "network.h"

#include <algorithm>

namespace raftkv::sim {

uint64_t Network::Delay() {
  const NetFaults& f = faults_;
  uint64_t lo = std::max<uint32_t>(1, f.min_delay_steps);
  uint64_t hi = std::max<uint64_t>(lo, f.max_delay_steps);
  uint64_t d = lo + rng_.Uniform(hi - lo + 1);
  if (f.long_delay_ppm > 0 && f.long_delay_max_steps > hi &&
      rng_.Chance(f.long_delay_ppm, 1'000'000)) {
    d = hi + 1 + rng_.Uniform(f.long_delay_max_steps - hi);
  }
  return d;
}

void Network::Push(uint64_t due, raft::Message m) {
  queue_.push_back(InFlight{due, seq_++, std::move(m)});
  std::push_heap(queue_.begin(), queue_.end(), Later{});
}

void Network::Send(uint64_t now_step, raft::Message m) {
  sent_++;
  trace_->Msg(EventKind::kSend, m);
  if (faults_.drop_ppm > 0 && rng_.Chance(faults_.drop_ppm, 1'000'000)) {
    dropped_++;
    trace_->Msg(EventKind::kDrop, m);
    return;
  }
  if (faults_.dup_ppm > 0 && rng_.Chance(faults_.dup_ppm, 1'000'000)) {
    trace_->Msg(EventKind::kDup, m);
    Push(now_step + Delay(), m);
  }
  Push(now_step + Delay(), std::move(m));
}

bool Network::PopDue(uint64_t now_step, raft::Message* out) {
  if (queue_.empty() || queue_.front().due > now_step) return false;
  std::pop_heap(queue_.begin(), queue_.end(), Later{});
  *out = std::move(queue_.back().m);
  queue_.pop_back();
  return true;
}

}  // namespace raftkv::sim
