#include "linearizability.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace raftkv::sim {
namespace {

// Small builders; times are chosen by the tests to make the real-time order
// explicit.
KvOp Put(uint64_t client, std::string key, std::string value, uint64_t invoke, uint64_t response) {
  static uint64_t next_id = 1;
  KvOp op;
  op.id = next_id++;
  op.client = client;
  op.kind = OpKind::kPut;
  op.key = std::move(key);
  op.value = std::move(value);
  op.invoke = invoke;
  op.response = response;
  return op;
}

KvOp Get(uint64_t client, std::string key, std::string value, uint64_t invoke, uint64_t response) {
  KvOp op = Put(client, std::move(key), std::move(value), invoke, response);
  op.kind = OpKind::kGet;
  return op;
}

KvOp GetAbsent(uint64_t client, std::string key, uint64_t invoke, uint64_t response) {
  KvOp op = Get(client, std::move(key), "", invoke, response);
  op.found = false;
  return op;
}

// Every test runs with and without the unique-value pruning, so both the
// pruning and the general search are held to the same answers.
class LinearizabilityTest : public ::testing::TestWithParam<bool> {
 protected:
  LinearizabilityResult Check(const std::vector<KvOp>& h) {
    LinearizabilityOptions options;
    options.assume_unique_values = GetParam();
    return CheckLinearizable(h, options);
  }
};

TEST_P(LinearizabilityTest, EmptyHistoryPasses) { EXPECT_TRUE(Check({}).ok); }

TEST_P(LinearizabilityTest, SequentialHistoryPasses) {
  std::vector<KvOp> h = {
      GetAbsent(1, "a", 1, 2), Put(1, "a", "x", 3, 4),  Get(2, "a", "x", 5, 6),
      Put(2, "a", "y", 7, 8),  Get(1, "a", "y", 9, 10),
  };
  EXPECT_TRUE(Check(h).ok);
}

TEST_P(LinearizabilityTest, ConcurrentReadMaySeeEitherValue) {
  // The read overlaps the write: old and new values are both fine.
  std::vector<KvOp> old_value = {Put(1, "a", "x", 1, 2), Put(1, "a", "y", 3, 10),
                                 Get(2, "a", "x", 4, 5)};
  std::vector<KvOp> new_value = {Put(1, "a", "x", 1, 2), Put(1, "a", "y", 3, 10),
                                 Get(2, "a", "y", 4, 5)};
  EXPECT_TRUE(Check(old_value).ok);
  EXPECT_TRUE(Check(new_value).ok);
}

TEST_P(LinearizabilityTest, StaleReadFails) {
  // y was acknowledged before the read started, yet the read returns x.
  std::vector<KvOp> h = {Put(1, "a", "x", 1, 2), Put(1, "a", "y", 3, 4), Get(2, "a", "x", 5, 6)};
  LinearizabilityResult r = Check(h);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.key, "a");
  EXPECT_NE(r.explanation.find("get(a) -> x"), std::string::npos) << r.explanation;
}

TEST_P(LinearizabilityTest, LostWriteFails) {
  // An acknowledged write is not visible to a later read.
  std::vector<KvOp> h = {Put(1, "a", "x", 1, 2), GetAbsent(2, "a", 3, 4)};
  EXPECT_FALSE(Check(h).ok);
}

TEST_P(LinearizabilityTest, ReadOfUnwrittenValueFails) {
  std::vector<KvOp> h = {Put(1, "a", "x", 1, 2), Get(2, "a", "z", 3, 4)};
  EXPECT_FALSE(Check(h).ok);
}

TEST_P(LinearizabilityTest, ReadBeforeWriteInvokedFails) {
  std::vector<KvOp> h = {Get(2, "a", "x", 1, 2), Put(1, "a", "x", 3, 4)};
  EXPECT_FALSE(Check(h).ok);
}

TEST_P(LinearizabilityTest, UnknownWriteThatAppearsLaterPasses) {
  // The client gave up on the write, but it did take effect.
  std::vector<KvOp> h = {Put(1, "a", "x", 1, kNever), Get(2, "a", "x", 50, 51),
                         Get(2, "a", "x", 60, 61)};
  EXPECT_TRUE(Check(h).ok);
}

TEST_P(LinearizabilityTest, UnknownWriteThatNeverAppearsPasses) {
  std::vector<KvOp> h = {Put(1, "a", "x", 1, 2), Put(1, "a", "y", 3, kNever),
                         Get(2, "a", "x", 50, 51)};
  EXPECT_TRUE(Check(h).ok);
}

TEST_P(LinearizabilityTest, UnknownWriteCannotFlickerBack) {
  // Once y was seen and then overwritten by z, y cannot reappear: the
  // unknown write happened once, not twice.
  std::vector<KvOp> h = {Put(1, "a", "y", 1, kNever), Get(2, "a", "y", 10, 11),
                         Put(3, "a", "z", 12, 13), Get(2, "a", "y", 14, 15)};
  EXPECT_FALSE(Check(h).ok);
}

TEST_P(LinearizabilityTest, UnknownWriteCannotTakeEffectBeforeInvocation) {
  std::vector<KvOp> h = {Get(2, "a", "y", 1, 2), Put(1, "a", "y", 5, kNever)};
  EXPECT_FALSE(Check(h).ok);
}

TEST_P(LinearizabilityTest, UnknownReadIsIgnored) {
  // A read that never returned says nothing, whatever value it carries.
  std::vector<KvOp> h = {Put(1, "a", "x", 1, 2), Get(2, "a", "garbage", 3, kNever)};
  EXPECT_TRUE(Check(h).ok);
}

TEST_P(LinearizabilityTest, KeysAreIndependent) {
  std::vector<KvOp> ok = {Put(1, "a", "x", 1, 10), Put(2, "b", "y", 2, 3), Get(3, "b", "y", 4, 5),
                          GetAbsent(3, "a", 6, 7)};
  EXPECT_TRUE(Check(ok).ok);
  std::vector<KvOp> bad = ok;
  bad.push_back(Get(3, "b", "x", 20, 21));
  LinearizabilityResult r = Check(bad);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.key, "b");
}

TEST_P(LinearizabilityTest, ReadsMustAgreeOnWriteOrder) {
  // Two concurrent writes; two later reads, each after the other, see them
  // in opposite orders: x then y then x again is impossible without a third
  // write.
  std::vector<KvOp> h = {Put(1, "a", "x", 1, 10), Put(2, "a", "y", 1, 10), Get(3, "a", "x", 11, 12),
                         Get(3, "a", "y", 13, 14), Get(3, "a", "x", 15, 16)};
  EXPECT_FALSE(Check(h).ok);
}

TEST_P(LinearizabilityTest, ConcurrentWritesAnyOrder) {
  std::vector<KvOp> h = {Put(1, "a", "x", 1, 10), Put(2, "a", "y", 2, 9), Get(3, "a", "y", 3, 4),
                         Get(3, "a", "x", 5, 6), Get(4, "a", "x", 11, 12)};
  EXPECT_TRUE(Check(h).ok);
}

TEST_P(LinearizabilityTest, ResponseAtInvocationInstantIsConcurrent) {
  // The write responds at time 5 and the read is invoked at 5: concurrent,
  // so the read may still see the old value.
  std::vector<KvOp> h = {GetAbsent(2, "a", 5, 6), Put(1, "a", "x", 1, 5)};
  EXPECT_TRUE(Check(h).ok);
}

TEST_P(LinearizabilityTest, LongHistoryWithManyUnknownsIsFast) {
  // Many clients, many unknown writes never observed, one long key: the
  // search must stay small thanks to memoization (and pruning).
  std::vector<KvOp> h;
  uint64_t t = 1;
  for (int i = 0; i < 400; i++) {
    std::string v = "v" + std::to_string(i);
    h.push_back(Put(1, "a", v, t, t + 3));
    if (i % 7 == 0) h.push_back(Put(2, "a", "lost" + std::to_string(i), t + 1, kNever));
    h.push_back(Get(3, "a", v, t + 4, t + 5));
    t += 6;
  }
  LinearizabilityResult r = Check(h);
  EXPECT_TRUE(r.ok) << r.explanation;
  EXPECT_FALSE(r.inconclusive);
}

// Random histories produced by a real register whose ops take effect at a
// point inside their interval are linearizable by construction.
std::vector<KvOp> RandomHistory(uint64_t seed, int ops) {
  uint64_t state = seed;
  auto next = [&state](uint64_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % n;
  };
  std::vector<KvOp> h;
  std::vector<uint64_t> busy_until(4, 0);
  std::string current;
  bool present = false;
  for (int k = 1; k <= ops; k++) {
    uint64_t point = 10 * static_cast<uint64_t>(k);
    uint64_t client = next(4);
    if (busy_until[client] >= point) continue;
    uint64_t invoke = std::max(busy_until[client] + 1, point - std::min<uint64_t>(point, next(25)));
    uint64_t response = point + next(25);
    if (next(3) == 0) {
      current = "v" + std::to_string(k);
      present = true;
      // Some writes lose their answer: the client moves on without it.
      bool unknown = next(8) == 0;
      h.push_back(Put(client, "a", current, invoke, unknown ? kNever : response));
      busy_until[client] = unknown ? invoke : response;
    } else {
      h.push_back(present ? Get(client, "a", current, invoke, response)
                          : GetAbsent(client, "a", invoke, response));
      busy_until[client] = response;
    }
  }
  return h;
}

TEST_P(LinearizabilityTest, RandomLinearizableHistoriesPass) {
  for (uint64_t seed = 1; seed <= 200; seed++) {
    LinearizabilityResult r = Check(RandomHistory(seed, 60));
    ASSERT_TRUE(r.ok) << "seed " << seed << ": " << r.explanation;
  }
}

TEST(LinearizabilityPruning, AgreesWithGeneralSearchOnCorruptedHistories) {
  // Corrupt one read per history; whatever the verdict, the pruned and the
  // general search must reach the same one.
  int failures = 0;
  for (uint64_t seed = 1; seed <= 200; seed++) {
    std::vector<KvOp> h = RandomHistory(seed, 40);
    std::vector<size_t> gets;
    std::vector<std::string> values;
    for (size_t i = 0; i < h.size(); i++) {
      if (h[i].kind == OpKind::kGet) gets.push_back(i);
      if (h[i].kind == OpKind::kPut) values.push_back(h[i].value);
    }
    if (gets.empty() || values.empty()) continue;
    KvOp& victim = h[gets[seed % gets.size()]];
    victim.value = values[(seed / 3) % values.size()];
    victim.found = true;
    LinearizabilityOptions general;
    general.assume_unique_values = false;
    bool a = CheckLinearizable(h, general).ok;
    bool b = CheckLinearizable(h).ok;
    ASSERT_EQ(a, b) << "seed " << seed;
    failures += !a;
  }
  // The corruption must actually produce some non-linearizable histories.
  EXPECT_GT(failures, 20);
}

INSTANTIATE_TEST_SUITE_P(Pruning, LinearizabilityTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("UniqueValues") : std::string("General");
                         });

}  // namespace
}  // namespace raftkv::sim
