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

KvOp Delete(uint64_t client, std::string key, uint64_t invoke, uint64_t response) {
  KvOp op = Put(client, std::move(key), "", invoke, response);
  op.kind = OpKind::kDelete;
  return op;
}

// A compare-and-swap: expects `expect` (or absence), writes `value`. What a
// failed one read is set by the caller (found, value), or by FailedCas.
KvOp Cas(uint64_t client, std::string key, bool expect_found, std::string expect, std::string value,
         bool succeeded, uint64_t invoke, uint64_t response) {
  KvOp op = Put(client, std::move(key), std::move(value), invoke, response);
  op.kind = OpKind::kCas;
  op.expect_found = expect_found;
  op.expect = std::move(expect);
  op.succeeded = succeeded;
  return op;
}

KvOp FailedCas(uint64_t client, std::string key, std::string expect, bool found, std::string read,
               uint64_t invoke, uint64_t response) {
  KvOp op = Cas(client, std::move(key), true, std::move(expect), "", false, invoke, response);
  op.found = found;
  op.value = std::move(read);
  return op;
}

KvOp TxnPut(uint64_t client, std::string a, std::string va, std::string b, std::string vb,
            uint64_t invoke, uint64_t response) {
  KvOp op = Put(client, std::move(a), std::move(va), invoke, response);
  op.kind = OpKind::kTxnPut;
  op.key2 = std::move(b);
  op.value2 = std::move(vb);
  return op;
}

// A two-key read; an empty value means absent.
KvOp TxnGet(uint64_t client, std::string a, std::string va, std::string b, std::string vb,
            uint64_t invoke, uint64_t response) {
  KvOp op =
      TxnPut(client, std::move(a), std::move(va), std::move(b), std::move(vb), invoke, response);
  op.kind = OpKind::kTxnGet;
  op.found = !op.value.empty();
  op.found2 = !op.value2.empty();
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

TEST_P(LinearizabilityTest, DeleteRemovesTheKey) {
  std::vector<KvOp> ok = {Put(1, "a", "x", 1, 2), Delete(1, "a", 3, 4), GetAbsent(2, "a", 5, 6)};
  EXPECT_TRUE(Check(ok).ok);
  // A read after an acknowledged delete still sees the value.
  std::vector<KvOp> bad = {Put(1, "a", "x", 1, 2), Delete(1, "a", 3, 4), Get(2, "a", "x", 5, 6)};
  EXPECT_FALSE(Check(bad).ok);
}

TEST_P(LinearizabilityTest, CasSucceedsOnlyWhenItsCompareHolds) {
  std::vector<KvOp> ok = {Put(1, "a", "x", 1, 2), Cas(2, "a", true, "x", "y", true, 3, 4),
                          Get(1, "a", "y", 5, 6)};
  EXPECT_TRUE(Check(ok).ok);
  // A CAS applied without its compare: it expected x, but z was there.
  std::vector<KvOp> bad = {Put(1, "a", "x", 1, 2), Put(1, "a", "z", 3, 4),
                           Cas(2, "a", true, "x", "y", true, 5, 6)};
  LinearizabilityResult r = Check(bad);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.explanation.find("cas(a, x -> y) ok"), std::string::npos) << r.explanation;
  // A create-only CAS on a key that exists.
  std::vector<KvOp> create = {Put(1, "a", "x", 1, 2), Cas(2, "a", false, "", "y", true, 3, 4)};
  EXPECT_FALSE(Check(create).ok);
}

TEST_P(LinearizabilityTest, FailedCasReadsTheValueThatBeatIt) {
  std::vector<KvOp> ok = {Put(1, "a", "x", 1, 2), Put(1, "a", "z", 3, 4),
                          FailedCas(2, "a", "x", true, "z", 5, 6)};
  EXPECT_TRUE(Check(ok).ok);
  // It failed although x was there: a lost update.
  std::vector<KvOp> lost = {Put(1, "a", "x", 1, 2), FailedCas(2, "a", "x", true, "x", 3, 4)};
  EXPECT_FALSE(Check(lost).ok);
  // It read a value that is not the current one.
  std::vector<KvOp> stale = {Put(1, "a", "x", 1, 2), Put(1, "a", "z", 3, 4), Put(1, "a", "w", 5, 6),
                             FailedCas(2, "a", "x", true, "z", 7, 8)};
  EXPECT_FALSE(Check(stale).ok);
}

TEST_P(LinearizabilityTest, UnknownCasThatWasSeenMustHaveHeld) {
  // The CAS's value was read, so it succeeded: it must have found x.
  std::vector<KvOp> ok = {Put(1, "a", "x", 1, 2), Cas(2, "a", true, "x", "y", false, 3, kNever),
                          Get(1, "a", "y", 10, 11)};
  EXPECT_TRUE(Check(ok).ok);
  std::vector<KvOp> bad = {Put(1, "a", "x", 1, 2), Put(1, "a", "z", 3, 4),
                           Cas(2, "a", true, "x", "y", false, 5, kNever), Get(1, "a", "y", 10, 11)};
  EXPECT_FALSE(Check(bad).ok);
}

TEST_P(LinearizabilityTest, TransactionsAreAtomicAcrossTwoKeys) {
  std::vector<KvOp> ok = {
      TxnPut(1, "a", "x1", "b", "y1", 1, 2), TxnPut(1, "a", "x2", "b", "y2", 3, 10),
      TxnGet(2, "a", "x1", "b", "y1", 4, 5), TxnGet(2, "a", "x2", "b", "y2", 6, 7)};
  EXPECT_TRUE(Check(ok).ok);
  // Half of a transaction seen: the new a with the old b, during the txn.
  std::vector<KvOp> torn = {TxnPut(1, "a", "x1", "b", "y1", 1, 2),
                            TxnPut(1, "a", "x2", "b", "y2", 3, 10),
                            TxnGet(2, "a", "x2", "b", "y1", 4, 5)};
  LinearizabilityResult r = Check(torn);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.key, "a,b");
  // The same with single-key reads: a is new, then b is still old.
  std::vector<KvOp> torn_gets = {TxnPut(1, "a", "x1", "b", "y1", 1, 2),
                                 TxnPut(1, "a", "x2", "b", "y2", 3, 20), Get(2, "a", "x2", 4, 5),
                                 Get(2, "b", "y1", 6, 7)};
  EXPECT_FALSE(Check(torn_gets).ok);
}

TEST_P(LinearizabilityTest, OpReturningBeforeItsInvocationIsRefused) {
  LinearizabilityResult r = Check({Put(1, "a", "x", 5, 4)});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.explanation.find("returns before it is invoked"), std::string::npos);
}

TEST_P(LinearizabilityTest, MoreThanTwoLinkedKeysAreRefused) {
  std::vector<KvOp> h = {TxnPut(1, "a", "x", "b", "y", 1, 2), TxnPut(1, "b", "z", "c", "w", 3, 4)};
  LinearizabilityResult r = Check(h);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.explanation.find("at most 2"), std::string::npos) << r.explanation;
}

// Random histories of puts, gets, deletes and CASes on a real register, each
// taking effect at a point inside its interval: linearizable by
// construction.
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
  std::vector<std::string> written;
  for (int k = 1; k <= ops; k++) {
    uint64_t point = 10 * static_cast<uint64_t>(k);
    uint64_t client = next(4);
    if (busy_until[client] >= point) continue;
    uint64_t invoke = std::max(busy_until[client] + 1, point - std::min<uint64_t>(point, next(25)));
    uint64_t response = point + next(25);
    // Some writes lose their answer: the client moves on without it.
    bool unknown = next(8) == 0;
    uint64_t kind = next(12);
    if (kind < 4) {
      current = "v" + std::to_string(k);
      present = true;
      written.push_back(current);
      h.push_back(Put(client, "a", current, invoke, unknown ? kNever : response));
      busy_until[client] = unknown ? invoke : response;
    } else if (kind == 4) {
      present = false;
      h.push_back(Delete(client, "a", invoke, unknown ? kNever : response));
      busy_until[client] = unknown ? invoke : response;
    } else if (kind < 7) {
      // Expect the current value, an older one, or absence.
      uint64_t pick = next(3);
      bool expect_found = pick != 2 && !written.empty();
      std::string expect;
      if (expect_found) expect = pick == 0 && present ? current : written[next(written.size())];
      bool holds = expect_found ? present && expect == current : !present;
      std::string value = "c" + std::to_string(k);
      KvOp op =
          Cas(client, "a", expect_found, expect, value, holds, invoke, unknown ? kNever : response);
      if (!holds) {
        op.found = present;
        op.value = present ? current : "";
      }
      h.push_back(op);
      if (holds) {
        current = value;
        present = true;
        written.push_back(value);
      }
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
