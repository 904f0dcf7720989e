#include "watch/registry.h"

#include <algorithm>

#include "raft/status.h"

namespace raftkv::watch {

namespace {

void EraseFrom(std::vector<Watch*>* v, Watch* w) {
  auto it = std::find(v->begin(), v->end(), w);
  if (it == v->end()) return;
  *it = v->back();
  v->pop_back();
}

}  // namespace

std::string_view EndReasonName(EndReason r) {
  switch (r) {
    case EndReason::kCompacted:
      return "compacted";
    case EndReason::kSnapshotInstalled:
      return "snapshot_installed";
  }
  return "unknown";
}

Registry::~Registry() = default;

Watch* Registry::Add(Filter filter, uint64_t from, std::shared_ptr<Sink> sink, uint32_t tag,
                     uint64_t* compact_revision) {
  Free();
  Slice probe = history_->Read(from == 0 ? UINT64_MAX : from, 0);
  if (from == 0) from = probe.head + 1;
  if (from <= probe.compact_revision) {
    *compact_revision = probe.compact_revision;
    return nullptr;
  }
  auto owned = std::make_unique<Watch>();
  Watch* w = owned.get();
  w->tag = tag;
  w->filter_ = std::move(filter);
  w->sink_ = std::move(sink);
  w->next_rev_ = from;
  w->generation_ = probe.generation;
  watches_.emplace(w, std::move(owned));
  CatchUp(w);
  return w->dead_ ? nullptr : w;
}

void Registry::Remove(Watch* w) {
  if (w == nullptr || w->dead_) return;
  Unlink(w);
  Free();
}

void Registry::Unlink(Watch* w) {
  if (w->synced_) Unindex(w);
  w->dead_ = true;
  auto it = watches_.find(w);
  RAFT_ASSERT(it != watches_.end(), "removing a watch this registry does not hold");
  dead_.push_back(std::move(it->second));
  watches_.erase(it);
}

void Registry::Free() {
  if (delivering_ == 0) dead_.clear();
}

void Registry::End(Watch* w, EndReason why, uint64_t compact_revision) {
  delivering_++;
  Unlink(w);
  w->sink_->OnEnded(*w, why, compact_revision);
  delivering_--;
}

void Registry::Resume(Watch* w) {
  if (w == nullptr || w->dead_ || w->synced_) return;
  CatchUp(w);
  Free();
}

void Registry::CatchUp(Watch* w) {
  delivering_++;
  bool offered = false;
  while (!w->dead_ && !w->synced_) {
    Slice s = history_->Read(w->next_rev_, catch_up_changes_);
    if (s.generation != w->generation_) {
      End(w, EndReason::kSnapshotInstalled, s.compact_revision);
      break;
    }
    if (s.compacted) {
      End(w, EndReason::kCompacted, s.compact_revision);
      break;
    }
    bool stopped = false;
    for (const auto& b : s.batches) {
      for (const Change& c : b->changes) {
        if (c.revision < w->next_rev_) continue;
        w->matched_.clear();
        for (const kv::Event& e : c.events) {
          if (w->filter_.Matches(e.kv.key)) w->matched_.push_back(&e);
        }
        if (w->matched_.empty()) {
          w->next_rev_ = c.revision + 1;
          continue;
        }
        offered = true;
        Take t = w->sink_->OnEvents(*w, c, w->matched_, w->matched_.size() == c.events.size());
        if (w->dead_) {
          stopped = true;
          break;
        }
        if (t != Take::kRefused) w->next_rev_ = c.revision + 1;
        if (t != Take::kMore) {
          stopped = true;
          break;
        }
      }
      if (stopped) break;
      w->next_rev_ = std::max(w->next_rev_, b->revision + 1);
    }
    w->matched_.clear();
    if (stopped) break;
    if (s.complete) {
      // The read reached the end of the history: every revision up to the
      // head is examined, and the batches after it will be published to
      // this thread.
      w->next_rev_ = std::max(w->next_rev_, s.head + 1);
      w->synced_ = true;
      Index(w);
    }
  }
  if (offered && !w->dead_) w->sink_->OnDelivered(*w);
  delivering_--;
}

void Registry::Index(Watch* w) {
  if (w->filter_.prefix) {
    prefixes_[w->filter_.key].push_back(w);
    prefix_lengths_[w->filter_.key.size()]++;
  } else {
    exact_[w->filter_.key].push_back(w);
  }
}

void Registry::Unindex(Watch* w) {
  // A synced watch was offered every batch this thread delivered.
  if (w->generation_ == generation_) w->next_rev_ = std::max(w->next_rev_, processed_ + 1);
  auto& map = w->filter_.prefix ? prefixes_ : exact_;
  auto it = map.find(w->filter_.key);
  RAFT_ASSERT(it != map.end(), "a synced watch missing from the index");
  EraseFrom(&it->second, w);
  if (it->second.empty()) map.erase(it);
  if (w->filter_.prefix) {
    auto len = prefix_lengths_.find(w->filter_.key.size());
    if (--len->second == 0) prefix_lengths_.erase(len);
  }
  w->synced_ = false;
}

void Registry::Match(const Change& c) {
  touched_.clear();
  auto add = [&](const std::vector<Watch*>& ws, const kv::Event& e) {
    for (Watch* w : ws) {
      if (w->mark_ != c.revision) {
        w->mark_ = c.revision;
        w->matched_.clear();
        touched_.push_back(w);
      }
      w->matched_.push_back(&e);
    }
  };
  for (const kv::Event& e : c.events) {
    std::string_view key = e.kv.key;
    if (!exact_.empty()) {
      if (auto it = exact_.find(key); it != exact_.end()) add(it->second, e);
    }
    for (const auto& [len, count] : prefix_lengths_) {
      if (len > key.size()) break;
      if (auto it = prefixes_.find(key.substr(0, len)); it != prefixes_.end()) add(it->second, e);
    }
  }
}

void Registry::OnBatch(const Batch& b) {
  if (b.generation < generation_) return;  // Published before a reset this thread has seen.
  generation_ = b.generation;
  processed_ = std::max(processed_, b.revision);
  if (exact_.empty() && prefixes_.empty()) return;
  delivering_++;
  delivered_.clear();
  for (const Change& c : b.changes) {
    Match(c);
    for (Watch* w : touched_) {
      if (w->dead_ || w->generation_ != b.generation || c.revision < w->next_rev_) continue;
      Take t = w->sink_->OnEvents(*w, c, w->matched_, w->matched_.size() == c.events.size());
      if (t != Take::kMore && !w->dead_) {
        // The sink wants no more for now: the watch falls back to catching
        // up from the history, from the first revision it has not taken, on
        // Resume. (Delivering a later change of this batch would skip the
        // one refused.)
        Unindex(w);
        w->next_rev_ = t == Take::kRefused ? c.revision : c.revision + 1;
      }
      if (w->batch_mark_ != b.revision) {
        w->batch_mark_ = b.revision;
        delivered_.push_back(w);
      }
    }
    for (Watch* w : touched_) w->matched_.clear();
  }
  // OnDelivered may end other watches: take the list first.
  std::vector<Watch*> delivered;
  delivered.swap(delivered_);
  for (Watch* w : delivered) {
    if (!w->dead_) w->sink_->OnDelivered(*w);
  }
  delivering_--;
  Free();
}

void Registry::OnReset(uint64_t generation, uint64_t revision) {
  if (generation <= generation_) return;
  std::vector<Watch*> old;
  for (const auto& [w, owned] : watches_) {
    if (w->generation_ < generation) old.push_back(w);
  }
  // Ended under the old generation, so that each says what it examined.
  for (Watch* w : old) {
    if (!w->dead_) End(w, EndReason::kSnapshotInstalled, revision);
  }
  generation_ = generation;
  processed_ = revision;
  Free();
}

uint64_t Registry::Examined(const Watch& w) const {
  if (!w.synced_) return w.next_rev_ - 1;
  uint64_t processed = w.generation_ == generation_ ? processed_ : 0;
  return std::max(w.next_rev_ - 1, processed);
}

}  // namespace raftkv::watch
