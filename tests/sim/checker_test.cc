// The safety checkers must fire on the violations they exist for (a checker
// that cannot fail proves nothing), and stay quiet on legal histories.
#include "checker.h"

#include <gtest/gtest.h>

#include <vector>

namespace raftkv::sim {
namespace {

using raft::Entry;
using raft::EntryType;

Entry E(raft::Index index, raft::Term term, std::string data = "x") {
  return Entry{term, index, EntryType::kNormal, std::move(data)};
}

TEST(SafetyChecker, OneLeaderPerTerm) {
  SafetyChecker c;
  c.OnLeader(1, 5);
  c.OnLeader(1, 5);
  c.OnLeader(2, 6);
  EXPECT_TRUE(c.ok());
  c.OnLeader(3, 6);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.failure().find("election safety"), std::string::npos) << c.failure();
}

TEST(SafetyChecker, LogMatchingSameEntryEverywhere) {
  raft::MemoryStorage s1, s2;
  SafetyChecker c;
  std::vector<Entry> a = {E(1, 1, "a"), E(2, 1, "b")};
  c.OnPersist(1, 0, a.data(), a.size(), s1);
  c.OnPersist(2, 0, a.data(), a.size(), s2);
  EXPECT_TRUE(c.ok()) << c.failure();
  std::vector<Entry> b = {E(2, 1, "different")};
  c.OnPersist(3, 1, b.data(), b.size(), s2);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.failure().find("log matching"), std::string::npos) << c.failure();
}

TEST(SafetyChecker, LogMatchingSamePrefix) {
  raft::MemoryStorage s;
  SafetyChecker c;
  std::vector<Entry> a = {E(3, 2)};
  c.OnPersist(1, 1, a.data(), a.size(), s);
  // Same (index, term) and data, but after an entry of another term.
  c.OnPersist(2, 2, a.data(), a.size(), s);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.failure().find("log matching"), std::string::npos) << c.failure();
}

TEST(SafetyChecker, NoTruncationBelowCommit) {
  raft::MemoryStorage s;
  s.Append({E(1, 1), E(2, 1), E(3, 1)});
  s.SetHardState(raft::HardState{1, 1, 2});
  SafetyChecker c;
  // Overwriting index 3 (not committed) is a legal conflict resolution.
  std::vector<Entry> ok = {E(3, 2)};
  c.OnPersist(1, 1, ok.data(), ok.size(), s);
  EXPECT_TRUE(c.ok()) << c.failure();
  // Overwriting committed index 2 is not.
  std::vector<Entry> bad = {E(2, 2)};
  c.OnPersist(1, 1, bad.data(), bad.size(), s);
  EXPECT_FALSE(c.ok());
}

TEST(SafetyChecker, HardStateInvariants) {
  {
    SafetyChecker c;
    c.OnHardState(1, {5, 2, 10}, {4, 2, 10}, 10);  // Term goes back.
    EXPECT_FALSE(c.ok());
  }
  {
    SafetyChecker c;
    c.OnHardState(1, {5, 2, 10}, {5, 3, 10}, 10);  // Second vote in a term.
    EXPECT_FALSE(c.ok());
  }
  {
    SafetyChecker c;
    c.OnHardState(1, {5, 2, 10}, {5, 2, 9}, 10);  // Commit goes back.
    EXPECT_FALSE(c.ok());
  }
  {
    SafetyChecker c;
    c.OnHardState(1, {5, 2, 10}, {5, 2, 11}, 10);  // Commit past the log.
    EXPECT_FALSE(c.ok());
  }
  {
    SafetyChecker c;
    c.OnHardState(1, {5, 2, 10}, {6, 0, 10}, 10);  // New term, no vote yet: fine.
    c.OnHardState(1, {6, 0, 10}, {6, 3, 12}, 12);
    EXPECT_TRUE(c.ok()) << c.failure();
  }
}

TEST(SafetyChecker, StateMachineSafety) {
  SafetyChecker c;
  c.OnApply(1, 3, E(1, 1, "a"), 100);
  c.OnApply(2, 4, E(1, 1, "a"), 100);
  EXPECT_TRUE(c.ok()) << c.failure();
  c.OnApply(3, 4, E(1, 2, "b"), 100);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.failure().find("state machine safety"), std::string::npos) << c.failure();
}

TEST(SafetyChecker, StateMachinesAgreeAfterEachIndex) {
  SafetyChecker c;
  c.OnApply(1, 3, E(1, 1, "a"), 100);
  c.OnApply(2, 3, E(1, 1, "a"), 101);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.failure().find("state machine safety"), std::string::npos) << c.failure();
}

TEST(SafetyChecker, SnapshotMustMatchAppliedState) {
  SafetyChecker c;
  c.OnApply(1, 3, E(7, 2, "a"), 100);
  raft::SnapshotMeta meta;
  meta.index = 7;
  meta.term = 2;
  c.OnRestore(2, meta, 100);
  EXPECT_TRUE(c.ok()) << c.failure();
  c.OnRestore(3, meta, 555);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.failure().find("restored a snapshot"), std::string::npos) << c.failure();
}

TEST(SafetyChecker, LeaderCompleteness) {
  SafetyChecker c;
  // Entries 1 and 2 committed by nodes in term 2.
  c.OnApply(1, 2, E(1, 1, "a"), 1);
  c.OnApply(1, 2, E(2, 2, "b"), 2);
  raft::MemoryStorage complete;
  complete.Append({E(1, 1, "a"), E(2, 2, "b"), E(3, 3, "")});
  c.OnBecameLeader(2, 3, complete);
  EXPECT_TRUE(c.ok()) << c.failure();

  // A leader of term 3 without entry 2.
  raft::MemoryStorage missing;
  missing.Append({E(1, 1, "a")});
  c.OnBecameLeader(3, 3, missing);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.failure().find("leader completeness"), std::string::npos) << c.failure();
}

TEST(SafetyChecker, LeaderCompletenessOnlyForLaterTerms) {
  // An entry first seen applied in term 5 may legitimately be missing from
  // a leader of term 4 that is only now being recognized.
  SafetyChecker c;
  c.OnApply(1, 5, E(1, 5, "a"), 1);
  raft::MemoryStorage empty;
  c.OnBecameLeader(2, 4, empty);
  EXPECT_TRUE(c.ok()) << c.failure();
}

}  // namespace
}  // namespace raftkv::sim
