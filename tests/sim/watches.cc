#include "watches.h"

#include <algorithm>

namespace raftkv::sim {

namespace {

constexpr size_t kMaxWatchesPerNode = 4;

std::string Describe(const kv::Event& e) {
  return (e.type == kv::Event::Type::kPut ? "put " : "del ") + e.kv.key + "=" + e.kv.value + "@" +
         std::to_string(e.kv.meta.mod_revision) + "/" + std::to_string(e.kv.meta.lease);
}

std::string Describe(const watch::Change& c) {
  std::string s;
  for (const kv::Event& e : c.events) s += Describe(e) + "; ";
  return s;
}

}  // namespace

// One watch and what it received.
struct SimWatch final : public watch::Sink {
  watch::Filter filter;
  uint64_t start = 0;  // Its first revision.
  int budget = 0;      // Revisions it takes before it says enough (0: no limit).
  int left = 0;
  watch::Watch* w = nullptr;
  bool ended = false;
  uint64_t ended_examined = 0;
  std::vector<std::pair<uint64_t, std::string>> got;  // (revision, events)
  watch::Registry* registry = nullptr;
  WatchStats* stats = nullptr;

  watch::Take OnEvents(watch::Watch& watch, const watch::Change& c,
                       std::span<const kv::Event* const> events, bool whole) override {
    (void)watch;
    (void)whole;
    std::string s;
    for (const kv::Event* e : events) s += Describe(*e) + "; ";
    got.emplace_back(c.revision, std::move(s));
    stats->events += events.size();
    if (budget > 0 && --left <= 0) {
      left = budget;
      return watch::Take::kEnough;
    }
    return watch::Take::kMore;
  }
  void OnEnded(watch::Watch& watch, watch::EndReason why, uint64_t compact) override {
    (void)compact;
    ended = true;
    ended_examined = registry->Examined(watch);
    w = nullptr;
    if (why == watch::EndReason::kCompacted) stats->ended_compacted++;
    if (why == watch::EndReason::kSnapshotInstalled) stats->ended_snapshot++;
  }
};

Watches::NodeFeed::NodeFeed(Watches* owner, raft::NodeId id) : owner_(owner), id_(id) {}

Watches::NodeFeed::~NodeFeed() {
  for (auto& w : watches_) {
    if (w->w != nullptr) registry_.Remove(w->w);
  }
}

void Watches::NodeFeed::OnChanges(uint64_t prev_revision, uint64_t revision,
                                  std::vector<kv::Event> events) {
  std::shared_ptr<const watch::Batch> b =
      history_.Append(prev_revision, revision, std::move(events));
  for (const watch::Change& c : b->changes) {
    owner_->Compare(id_, c);
    log_.push_back(c);
  }
  pending_.push_back([this, b] { registry_.OnBatch(*b); });
}

void Watches::NodeFeed::OnRestored(uint64_t revision) {
  uint64_t generation = history_.Reset(revision);
  pending_.push_back([this, generation, revision] { registry_.OnReset(generation, revision); });
}

Watches::Watches(uint64_t seed, std::function<void(std::string)> fail)
    : rng_(seed), fail_(std::move(fail)) {}

Watches::~Watches() = default;

std::unique_ptr<Watches::NodeFeed> Watches::Attach(raft::NodeId id) {
  return std::make_unique<NodeFeed>(this, id);
}

void Watches::Compare(raft::NodeId node, const watch::Change& c) {
  std::string d = Describe(c);
  auto [it, inserted] = changes_.emplace(c.revision, d);
  if (inserted) return;
  stats_.revisions_compared++;
  if (it->second != d) {
    fail_("watch: n" + std::to_string(node) + " reports revision " + std::to_string(c.revision) +
          " as {" + d + "}, another node as {" + it->second + "}");
  }
}

void Watches::StartWatch(NodeFeed* f) {
  auto w = std::make_shared<SimWatch>();
  static const char* kFilters[] = {"", "k", "k1", "k2"};
  w->filter.key = kFilters[rng_.Uniform(4)];
  w->filter.prefix = w->filter.key.empty() || rng_.Chance(2, 3);
  const uint64_t head = f->history_.revision();
  const uint64_t compact = f->history_.compact_revision();
  // From the next revision, or from one the history holds (or just lost).
  w->start = rng_.Chance(1, 4) ? 0 : compact + rng_.Uniform(head - compact + 2);
  w->budget = static_cast<int>(rng_.Uniform(4));
  w->left = w->budget;
  w->registry = &f->registry_;
  w->stats = &stats_;
  uint64_t refused = 0;
  if (w->start == 0) w->start = head + 1;  // What Add does with 0 (nothing applies meanwhile).
  w->w = f->registry_.Add(w->filter, w->start, w, 0, &refused);
  if (w->w == nullptr && !w->ended) {
    if (w->start > refused) {
      fail_("watch: n" + std::to_string(f->id_) + " refused a watch from " +
            std::to_string(w->start) + " above its compact revision " + std::to_string(refused));
    }
    return;  // Compacted at the start: nothing to check.
  }
  stats_.watches++;
  f->watches_.push_back(std::move(w));
}

void Watches::Tick(NodeFeed* f) {
  // Deliver what was published since the last tick (the io thread's turn).
  while (!f->pending_.empty()) {
    auto fn = std::move(f->pending_.front());
    f->pending_.pop_front();
    fn();
  }
  size_t live = 0;
  for (auto& w : f->watches_) {
    if (w->w == nullptr) continue;
    live++;
    if (!f->registry_.Synced(*w->w) && rng_.Chance(1, 2)) {
      stats_.resumes++;
      f->registry_.Resume(w->w);
    }
  }
  if (live < kMaxWatchesPerNode && rng_.Chance(1, 8)) StartWatch(f);
}

void Watches::Check(NodeFeed* f) {
  for (auto& w : f->watches_) {
    const uint64_t examined = w->w != nullptr ? f->registry_.Examined(*w->w) : w->ended_examined;
    std::vector<std::pair<uint64_t, std::string>> want;
    for (const watch::Change& c : f->log_) {
      if (c.revision < w->start || c.revision > examined) continue;
      std::string s;
      for (const kv::Event& e : c.events) {
        if (w->filter.Matches(e.kv.key)) s += Describe(e) + "; ";
      }
      if (!s.empty()) want.emplace_back(c.revision, std::move(s));
    }
    stats_.checks++;
    if (w->got == want) continue;
    size_t i = 0;
    while (i < w->got.size() && i < want.size() && w->got[i] == want[i]) i++;
    auto at = [](const std::vector<std::pair<uint64_t, std::string>>& v, size_t i) {
      return i < v.size() ? std::to_string(v[i].first) + " {" + v[i].second + "}"
                          : std::string("nothing");
    };
    fail_("watch: n" + std::to_string(f->id_) + " watch of \"" + w->filter.key + "\"" +
          (w->filter.prefix ? "*" : "") + " from " + std::to_string(w->start) + " (examined " +
          std::to_string(examined) + (w->ended ? ", ended" : "") + "): at its event " +
          std::to_string(i) + " it got " + at(w->got, i) + ", the node " + at(want, i));
    return;
  }
}

}  // namespace raftkv::sim
