// watch::Registry: catch-up, live delivery, matching, flow control, ends.
// The last test drives random appends, watches and flow control and checks
// that every watch receives exactly the matching changes after its start,
// once each and in order.
#include "watch/registry.h"

#include <gtest/gtest.h>

#include <random>

namespace raftkv::watch {
namespace {

kv::Event Put(std::string key, uint64_t rev) {
  kv::Event e;
  e.kv.key = std::move(key);
  e.kv.value = "v" + std::to_string(rev);
  e.kv.meta.mod_revision = rev;
  return e;
}

kv::Event Delete(std::string key, uint64_t rev) {
  kv::Event e = Put(std::move(key), rev);
  e.type = kv::Event::Type::kDelete;
  e.kv.value.clear();
  return e;
}

// Records what reaches it. take_ is what it answers (kMore unless told);
// with budget_ > 0 it answers kEnough once it has taken that many revisions.
class Recorder : public Sink {
 public:
  struct Got {
    uint64_t revision;
    std::vector<std::string> keys;
    bool whole;
  };
  Take OnEvents(Watch& w, const Change& c, std::span<const kv::Event* const> events,
                bool whole) override {
    (void)w;
    if (refuse_) return Take::kRefused;
    Got g{c.revision, {}, whole};
    for (const kv::Event* e : events) {
      g.keys.push_back((e->type == kv::Event::Type::kDelete ? "-" : "") + e->kv.key);
    }
    got_.push_back(std::move(g));
    if (budget_ > 0 && --budget_ == 0) return Take::kEnough;
    return Take::kMore;
  }
  void OnDelivered(Watch& w) override {
    (void)w;
    delivered_++;
  }
  void OnEnded(Watch& w, EndReason why, uint64_t compact) override {
    (void)w;
    ended_ = why;
    ended_compact_ = compact;
    ends_++;
  }
  std::vector<uint64_t> Revisions() const {
    std::vector<uint64_t> out;
    for (const Got& g : got_) out.push_back(g.revision);
    return out;
  }

  std::vector<Got> got_;
  int budget_ = 0;
  bool refuse_ = false;
  int delivered_ = 0;
  int ends_ = 0;
  EndReason ended_ = EndReason::kCompacted;
  uint64_t ended_compact_ = 0;
};

class RegistryTest : public ::testing::Test {
 protected:
  // Appends and publishes a batch to the registry.
  void Publish(uint64_t revision, std::vector<kv::Event> events) {
    reg_.OnBatch(*history_.Append(history_.revision(), revision, std::move(events)));
  }
  Watch* Add(const std::shared_ptr<Recorder>& r, std::string key, bool prefix, uint64_t from) {
    uint64_t compact = 0;
    return reg_.Add(Filter{std::move(key), prefix}, from, r, 0, &compact);
  }

  History history_{HistoryLimits{1000, 1 << 20}};
  Registry reg_{&history_};
};

TEST_F(RegistryTest, CatchesUpFromTheHistoryThenFollowsLiveBatches) {
  Publish(3, {Put("a/1", 1), Put("b", 2), Put("a/2", 3)});
  auto r = std::make_shared<Recorder>();
  Watch* w = Add(r, "a/", true, 2);
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(reg_.Synced(*w));
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{3}));
  EXPECT_EQ(reg_.Examined(*w), 3u);
  Publish(6, {Put("a/3", 4), Delete("a/1", 6)});
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{3, 4, 6}));
  EXPECT_EQ(r->got_.back().keys, (std::vector<std::string>{"-a/1"}));
  EXPECT_EQ(reg_.Examined(*w), 6u);
  // A batch that matches nothing still moves what the watch has examined.
  Publish(8, {Put("b", 8)});
  EXPECT_EQ(r->got_.size(), 3u);
  EXPECT_EQ(reg_.Examined(*w), 8u);
}

TEST_F(RegistryTest, ABatchTheCatchUpAlreadyReadIsNotDeliveredTwice) {
  // The driver appended the batch, then the watch read the history, then
  // the batch's notice reached this thread.
  auto b = history_.Append(0, 2, {Put("k", 1), Put("k", 2)});
  auto r = std::make_shared<Recorder>();
  Add(r, "k", false, 1);
  reg_.OnBatch(*b);
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{1, 2}));
}

TEST_F(RegistryTest, FromZeroMeansFromTheNextRevision) {
  Publish(2, {Put("k", 2)});
  auto r = std::make_shared<Recorder>();
  Watch* w = Add(r, "k", false, 0);
  EXPECT_TRUE(r->got_.empty());
  EXPECT_EQ(reg_.Examined(*w), 2u);
  Publish(3, {Put("k", 3)});
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{3}));
}

TEST_F(RegistryTest, AFutureRevisionWaitsForIt) {
  Publish(2, {Put("k", 2)});
  auto r = std::make_shared<Recorder>();
  Watch* w = Add(r, "k", false, 5);
  EXPECT_EQ(reg_.Examined(*w), 4u);
  Publish(4, {Put("k", 3), Put("k", 4)});
  EXPECT_TRUE(r->got_.empty());
  Publish(5, {Put("k", 5)});
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{5}));
}

TEST_F(RegistryTest, ATransactionsEventsArriveTogetherAndWholeIsSaid) {
  auto all = std::make_shared<Recorder>();
  auto some = std::make_shared<Recorder>();
  Add(all, "", true, 0);
  Add(some, "x", true, 0);
  Publish(1, {Put("x1", 1), Put("y1", 1), Put("x2", 1)});
  ASSERT_EQ(all->got_.size(), 1u);
  EXPECT_EQ(all->got_[0].keys, (std::vector<std::string>{"x1", "y1", "x2"}));
  EXPECT_TRUE(all->got_[0].whole);
  ASSERT_EQ(some->got_.size(), 1u);
  EXPECT_EQ(some->got_[0].keys, (std::vector<std::string>{"x1", "x2"}));
  EXPECT_FALSE(some->got_[0].whole);
  EXPECT_EQ(all->delivered_, 1);
}

TEST_F(RegistryTest, MatchesExactKeysAndPrefixesOfSeveralLengths) {
  auto exact = std::make_shared<Recorder>();
  auto p1 = std::make_shared<Recorder>();
  auto p3 = std::make_shared<Recorder>();
  auto other = std::make_shared<Recorder>();
  Add(exact, "abc", false, 0);
  Add(p1, "a", true, 0);
  Add(p3, "abc", true, 0);
  Add(other, "b", true, 0);
  Publish(3, {Put("abc", 1), Put("abcd", 2), Put("ab", 3)});
  EXPECT_EQ(exact->Revisions(), (std::vector<uint64_t>{1}));
  EXPECT_EQ(p1->Revisions(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(p3->Revisions(), (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(other->got_.empty());
}

TEST_F(RegistryTest, ASinkThatSaysEnoughIsCaughtUpOnResumeAndMissesNothing) {
  Publish(4, {Put("k", 1), Put("k", 2), Put("k", 3), Put("k", 4)});
  auto r = std::make_shared<Recorder>();
  r->budget_ = 2;
  Watch* w = Add(r, "k", false, 1);
  EXPECT_FALSE(reg_.Synced(*w));
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(reg_.Examined(*w), 2u);
  // A live batch while it is behind is not delivered out of order...
  Publish(5, {Put("k", 5)});
  EXPECT_EQ(r->got_.size(), 2u);
  // ...but read from the history when it resumes.
  r->budget_ = 0;
  reg_.Resume(w);
  EXPECT_TRUE(reg_.Synced(*w));
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
}

TEST_F(RegistryTest, ASyncedSinkThatSaysEnoughGetsNoLaterRevisionOfTheBatch) {
  auto r = std::make_shared<Recorder>();
  Watch* w = Add(r, "k", true, 0);
  ASSERT_TRUE(reg_.Synced(*w));
  r->budget_ = 1;
  Publish(3, {Put("k1", 1), Put("k2", 2), Put("k3", 3)});
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{1}));
  EXPECT_FALSE(reg_.Synced(*w));
  EXPECT_EQ(reg_.Examined(*w), 1u);
  r->refuse_ = true;
  reg_.Resume(w);
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{1}));
  r->refuse_ = false;
  reg_.Resume(w);
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(reg_.Synced(*w));
}

TEST_F(RegistryTest, ARefusedRevisionIsOfferedAgainOnResume) {
  Publish(2, {Put("k", 1), Put("k", 2)});
  auto r = std::make_shared<Recorder>();
  r->refuse_ = true;
  Watch* w = Add(r, "k", false, 1);
  EXPECT_TRUE(r->got_.empty());
  EXPECT_EQ(reg_.Examined(*w), 0u);
  r->refuse_ = false;
  reg_.Resume(w);
  EXPECT_EQ(r->Revisions(), (std::vector<uint64_t>{1, 2}));
}

TEST_F(RegistryTest, AStartAtOrBelowTheCompactRevisionIsRefused) {
  History small(HistoryLimits{2, 1 << 20});
  Registry reg(&small);
  for (uint64_t i = 1; i <= 4; i++) small.Append(i - 1, i, {Put("k", i)});
  auto r = std::make_shared<Recorder>();
  uint64_t compact = 0;
  EXPECT_EQ(reg.Add(Filter{"k", false}, 2, r, 0, &compact), nullptr);
  EXPECT_EQ(compact, 2u);
  EXPECT_NE(reg.Add(Filter{"k", false}, 3, r, 0, &compact), nullptr);
}

TEST_F(RegistryTest, AWatchLeftBehindByTrimmingEndsCompacted) {
  History small(HistoryLimits{2, 1 << 20});
  Registry reg(&small);
  small.Append(0, 2, {Put("k", 1), Put("k", 2)});
  auto r = std::make_shared<Recorder>();
  r->budget_ = 1;
  uint64_t compact = 0;
  Watch* w = reg.Add(Filter{"k", false}, 1, r, 0, &compact);
  ASSERT_NE(w, nullptr);
  // While it waits, the history moves on past revision 2.
  for (uint64_t i = 3; i <= 5; i++) small.Append(i - 1, i, {Put("k", i)});
  reg.Resume(w);
  EXPECT_EQ(r->ends_, 1);
  EXPECT_EQ(r->ended_, EndReason::kCompacted);
  EXPECT_EQ(r->ended_compact_, small.compact_revision());
  EXPECT_EQ(reg.size(), 0u);
}

TEST_F(RegistryTest, AResetEndsTheOlderWatchesOnly) {
  Publish(2, {Put("k", 2)});
  auto old = std::make_shared<Recorder>();
  Add(old, "k", false, 0);
  // A snapshot replaced the store; a watch added before this thread hears
  // of it already belongs to the new generation.
  uint64_t g = history_.Reset(10);
  auto fresh = std::make_shared<Recorder>();
  Watch* f = Add(fresh, "k", false, 0);
  reg_.OnReset(g, 10);
  EXPECT_EQ(old->ends_, 1);
  EXPECT_EQ(old->ended_, EndReason::kSnapshotInstalled);
  EXPECT_EQ(fresh->ends_, 0);
  EXPECT_EQ(reg_.Examined(*f), 10u);
  Publish(11, {Put("k", 11)});
  EXPECT_EQ(fresh->Revisions(), (std::vector<uint64_t>{11}));
}

// A sink that removes another watch when it gets events (a stream whose
// other watch fails), which must not disturb the delivery in progress.
class Remover : public Recorder {
 public:
  Take OnEvents(Watch& w, const Change& c, std::span<const kv::Event* const> events,
                bool whole) override {
    if (victim_ != nullptr) reg_->Remove(std::exchange(victim_, nullptr));
    return Recorder::OnEvents(w, c, events, whole);
  }
  Registry* reg_ = nullptr;
  Watch* victim_ = nullptr;
};

TEST_F(RegistryTest, RemovingAWatchDuringADeliveryIsSafe) {
  auto remover = std::make_shared<Remover>();
  remover->reg_ = &reg_;
  auto victim = std::make_shared<Recorder>();
  Add(remover, "k", false, 0);
  remover->victim_ = Add(victim, "k", false, 0);
  Publish(1, {Put("k", 1)});
  EXPECT_EQ(remover->got_.size(), 1u);
  EXPECT_EQ(reg_.size(), 1u);
  Publish(2, {Put("k", 2)});
  EXPECT_EQ(remover->got_.size(), 2u);
}

// Random appends, watches, flow control and trimming: each watch receives
// exactly the matching changes from its start, once each and in order, or
// ends compacted.
TEST(RegistryRandomTest, EveryWatchGetsEachMatchingChangeOnceInOrder) {
  for (uint64_t seed = 1; seed <= 40; seed++) {
    std::mt19937_64 rng(seed);
    History history(HistoryLimits{200, 1 << 20});
    Registry reg(&history, 1 + seed % 4);  // Small catch-up steps.
    std::vector<Change> log;               // Every change ever appended.
    struct W {
      std::shared_ptr<Recorder> r;
      Watch* w;
      Filter f;
      uint64_t from;
    };
    std::vector<W> ws;
    // Batches appended but not yet published to the registry's thread.
    std::vector<std::shared_ptr<const Batch>> queued;
    const char* keys[] = {"a", "ab", "abc", "b", "ba", "c"};
    uint64_t rev = 0;
    for (int step = 0; step < 600; step++) {
      int what = static_cast<int>(rng() % 10);
      if (what < 5) {
        uint64_t prev = rev;
        std::vector<kv::Event> events;
        int n = static_cast<int>(rng() % 4);
        for (int i = 0; i < n; i++) {
          rev += rng() % 2;  // Some events share a revision (a txn).
          if (rev == prev) rev++;
          events.push_back(Put(keys[rng() % 6], rev));
        }
        rev += rng() % 2;
        if (rev == prev) rev++;
        auto b = history.Append(prev, rev, events);
        for (const Change& c : b->changes) log.push_back(c);
        queued.push_back(b);
      } else if (what < 7 && !queued.empty()) {
        reg.OnBatch(*queued.front());
        queued.erase(queued.begin());
      } else if (what < 8 && ws.size() < 12) {
        auto r = std::make_shared<Recorder>();
        r->budget_ = static_cast<int>(rng() % 4);
        Filter f{keys[rng() % 6], rng() % 2 == 0};
        uint64_t from = rev == 0 ? 0 : rng() % (rev + 2);
        uint64_t compact = 0;
        Watch* w = reg.Add(f, from, r, 0, &compact);
        if (w == nullptr && r->ends_ == 0) continue;  // Compacted at the start.
        ws.push_back(W{r, w, f, from == 0 ? history.revision() + 1 : from});
      } else {
        for (W& w : ws) {
          if (w.r->ends_ == 0 && !reg.Synced(*w.w)) {
            w.r->budget_ = static_cast<int>(rng() % 4);
            reg.Resume(w.w);
          }
        }
      }
    }
    // Drain: publish the rest and resume everyone without a budget.
    for (auto& b : queued) reg.OnBatch(*b);
    for (W& w : ws) {
      if (w.r->ends_ == 0) {
        w.r->budget_ = 0;
        reg.Resume(w.w);
      }
    }
    for (W& w : ws) {
      if (w.r->ends_ != 0) {
        EXPECT_EQ(w.r->ended_, EndReason::kCompacted) << "seed " << seed;
        continue;
      }
      EXPECT_EQ(reg.Examined(*w.w), history.revision()) << "seed " << seed;
      std::vector<std::pair<uint64_t, std::vector<std::string>>> want, got;
      for (const Change& c : log) {
        if (c.revision < w.from) continue;
        std::vector<std::string> k;
        for (const kv::Event& e : c.events) {
          if (w.f.Matches(e.kv.key)) k.push_back(e.kv.key);
        }
        if (!k.empty()) want.emplace_back(c.revision, k);
      }
      for (const Recorder::Got& g : w.r->got_) got.emplace_back(g.revision, g.keys);
      EXPECT_EQ(got, want) << "seed " << seed << " watch " << w.f.key << (w.f.prefix ? "*" : "")
                           << " from " << w.from;
    }
  }
}

}  // namespace
}  // namespace raftkv::watch
