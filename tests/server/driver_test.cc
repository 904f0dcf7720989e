// Unit tests of the driver's own safety rules (docs/raft-core.md, "The
// driver's own rules"): one server::Driver over a LogStore whose persists
// complete only when the test says so, fed the messages a peer would send.
// The simulator checks the same rules under faults; these pin each one to a
// single schedule, so that removing a rule fails a named test.
#include "server/driver.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kv/command.h"
#include "kv/store.h"
#include "raft/types.h"
#include "server/log_store.h"

namespace raftkv::server {
namespace {

using raft::Entry;
using raft::EntryType;
using raft::Message;
using raft::MessageType;
using raft::NodeId;

MemberInfo Info(NodeId id) {
  std::string n = std::to_string(id);
  return MemberInfo{id, "n" + n, "127.0.0.1:70" + n, "127.0.0.1:40" + n};
}

// A LogStore whose Persist completes only in Complete(): what the test does
// in between happens while the Ready is "on disk".
class HeldLogStore : public LogStore {
 public:
  const raft::Storage& storage() const override { return mem_.storage(); }
  void Persist(const raft::Ready& rd, Done done) override {
    held_ = &rd;
    done_ = std::move(done);
  }
  // Snapshots complete at once: these tests hold only persists.
  void SaveSnapshot(raft::Index index, const raft::ConfState& conf, std::string data,
                    raft::Index compact_to, Done done) override {
    mem_.SaveSnapshot(index, conf, std::move(data), compact_to, std::move(done));
  }
  raft::Status Close() override { return raft::Status::Ok(); }
  std::string Describe() const override { return "held (test)"; }
  bool durable() const override { return false; }

  bool holding() const { return held_ != nullptr; }
  const raft::Ready& held() const { return *held_; }
  // Stores the held Ready and runs its completion.
  void Complete() {
    ASSERT_TRUE(holding());
    const raft::Ready* rd = held_;
    Done done = std::move(done_);
    held_ = nullptr;
    mem_.Persist(*rd, std::move(done));
  }
  // Before the driver exists: what an earlier life left on disk.
  void Seed(const raft::Ready& rd) {
    mem_.Persist(rd, [](raft::Status s) { ASSERT_TRUE(s.ok()) << s.ToString(); });
  }

 private:
  MemoryLogStore mem_;
  const raft::Ready* held_ = nullptr;
  Done done_;
};

Message Msg(MessageType type, NodeId from, raft::Term term) {
  Message m;
  m.type = type;
  m.from = from;
  m.to = 1;
  m.term = term;
  return m;
}

// Leader 2's answer (term 1) to the ReadIndex `ask`, at read index `index`.
Message ReadAnswer(const Message& ask, raft::Index index) {
  Message m = Msg(MessageType::kReadIndexResp, 2, 1);
  m.index = index;
  m.context = ask.context;
  return m;
}

Message Append(NodeId from, raft::Term term, raft::Index prev, raft::Term prev_term,
               std::vector<Entry> entries, raft::Index commit) {
  Message m = Msg(MessageType::kApp, from, term);
  m.index = prev;
  m.log_term = prev_term;
  m.entries = std::move(entries);
  m.commit = commit;
  return m;
}

Entry Put(raft::Term term, raft::Index index, uint64_t client, const std::string& value) {
  return Entry{term, index, EntryType::kNormal,
               kv::EncodePut(kv::RequestId{client, 1}, "k", value)};
}

// Node 1, started from a snapshot at index 1 (term 1) whose membership has
// `voters` and `learners`; the others are played by the test.
class DriverTest : public ::testing::Test {
 protected:
  void SetUp() override { spdlog::set_level(spdlog::level::warn); }

  void Start(const std::vector<NodeId>& voters, const std::vector<NodeId>& learners = {},
             uint64_t snapshot_entries = 100000) {
    raft::Snapshot snap;
    snap.meta.index = 1;
    snap.meta.term = 1;
    for (NodeId id : voters) snap.meta.conf.members.push_back(Member(id, raft::MemberRole::kVoter));
    for (NodeId id : learners) {
      snap.meta.conf.members.push_back(Member(id, raft::MemberRole::kLearner));
    }
    kv::Store image;
    std::vector<kv::Applied> applied;
    Entry noop{1, 1, EntryType::kNormal, ""};
    ASSERT_TRUE(image.Apply(std::span<const Entry>(&noop, 1), &applied).ok());
    snap.data = image.Snapshot();
    raft::Ready rd;
    rd.snapshot = snap;
    rd.hard_state = raft::HardState{1, raft::kNoNode, 1};
    store_.Seed(rd);
    snapshot_entries_ = snapshot_entries;
    MakeDriver(7);
  }

  // A driver (a life of node 1) over what store_ holds; `raft_seed` is drawn
  // anew for every life, as the server and the simulator do.
  void MakeDriver(uint64_t raft_seed) {
    driver_.reset();
    tasks_.clear();
    sent_.clear();
    ReplicaConfig rc;
    rc.self = Info(1);
    rc.raft.election_timeout_ticks = 10;
    rc.raft.heartbeat_interval_ticks = 1;
    rc.raft.seed = raft_seed;
    rc.snapshot_entries = snapshot_entries_;
    rc.snapshot_keep_entries = 100;
    DriverHooks h;
    h.post = [this](std::function<void()> fn) { tasks_.push_back(std::move(fn)); };
    h.send = [this](std::vector<Message> msgs) {
      for (Message& m : msgs) sent_.push_back(std::move(m));
    };
    h.now = [this] { return now_; };
    h.fatal = [](const std::string& why) {
      FAIL() << "driver stopped: " << why;
      std::abort();
    };
    driver_ = std::make_unique<Driver>(rc, &store_, &kv_, h);
    driver_->Start();
    Run();
  }

  raft::Member Member(NodeId id, raft::MemberRole role) {
    return raft::Member{id, role, false, EncodeMemberContext(Info(id))};
  }

  // Runs what the driver posted, until nothing is left (a held persist
  // stays held).
  void Run() {
    while (!tasks_.empty()) {
      auto fn = std::move(tasks_.front());
      tasks_.pop_front();
      fn();
    }
  }
  // Runs and completes persists until the driver is idle.
  void Settle() {
    for (int i = 0; i < 100; i++) {
      Run();
      if (!store_.holding()) return;
      store_.Complete();
    }
    FAIL() << "the driver never settled";
  }
  void Receive(Message m) {
    driver_->Receive({std::move(m)});
    Run();
  }
  // Messages sent so far of `type` (to anyone), removed from sent_.
  std::vector<Message> Sent(MessageType type) {
    std::vector<Message> out, rest;
    for (Message& m : sent_) (m.type == type ? out : rest).push_back(std::move(m));
    sent_ = std::move(rest);
    return out;
  }
  // Ticks until the node is leader of a 3-voter cluster, with node 2's votes.
  void BecomeLeader() {
    for (int i = 0; i < 100 && driver_->node().role() == raft::Role::kFollower; i++) {
      driver_->Tick();
      Settle();
    }
    ASSERT_EQ(driver_->node().role(), raft::Role::kPreCandidate);
    Message pre = Msg(MessageType::kPreVoteResp, 2, driver_->node().term() + 1);
    Receive(pre);
    Settle();
    ASSERT_EQ(driver_->node().role(), raft::Role::kCandidate);
    Receive(Msg(MessageType::kVoteResp, 2, driver_->node().term()));
    Settle();
    ASSERT_EQ(driver_->node().role(), raft::Role::kLeader);
    sent_.clear();
  }

  uint64_t snapshot_entries_ = 100000;
  std::deque<std::function<void()>> tasks_;
  std::vector<Message> sent_;
  TimePoint now_{};
  HeldLogStore store_;
  kv::Store kv_;
  std::unique_ptr<Driver> driver_;
};

// Votes and append acknowledgements promise what the Ready stores: they
// leave only once it is durable (raft::MaySendBeforePersist).
TEST_F(DriverTest, VoteLeavesOnlyOnceItsHardStateIsPersisted) {
  Start({1, 2, 3});
  Message vote = Msg(MessageType::kVote, 2, 2);
  vote.index = 1;
  vote.log_term = 1;
  Receive(vote);
  ASSERT_TRUE(store_.holding());
  ASSERT_TRUE(store_.held().hard_state.has_value());
  EXPECT_EQ(store_.held().hard_state->vote, 2u);
  EXPECT_TRUE(Sent(MessageType::kVoteResp).empty()) << "vote sent before it was persisted";
  store_.Complete();
  Run();
  std::vector<Message> resp = Sent(MessageType::kVoteResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_FALSE(resp[0].reject);
  EXPECT_EQ(resp[0].to, 2u);
}

TEST_F(DriverTest, AppendIsAcknowledgedOnlyOnceItsEntriesArePersisted) {
  Start({1, 2, 3});
  Receive(Append(2, 1, 1, 1, {Put(1, 2, 9, "a")}, 1));
  ASSERT_TRUE(store_.holding());
  ASSERT_EQ(store_.held().entries.size(), 1u);
  EXPECT_TRUE(Sent(MessageType::kAppResp).empty()) << "append acknowledged before it was stored";
  store_.Complete();
  Run();
  std::vector<Message> resp = Sent(MessageType::kAppResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_EQ(resp[0].index, 2u);
  EXPECT_FALSE(resp[0].reject);
}

// A lone voter wins its election in the Ready that raises its term; its
// first appends (to learners, which MaySendBeforePersist would let go
// early) wait until that term is durable: after a crash that lost it, the
// node could lead the same term again and append a different entry at the
// same index and term.
TEST_F(DriverTest, LoneVoterHoldsItsFirstAppendsUntilItsNewTermIsPersisted) {
  Start({1}, {2});
  for (int i = 0; i < 100 && driver_->node().role() != raft::Role::kLeader; i++) {
    driver_->Tick();
    if (driver_->node().role() != raft::Role::kLeader) Settle();
  }
  ASSERT_EQ(driver_->node().role(), raft::Role::kLeader);
  Run();
  ASSERT_TRUE(store_.holding());
  ASSERT_TRUE(store_.held().term_or_vote_changed);
  EXPECT_TRUE(sent_.empty()) << sent_.size() << " messages left before the new term was stored, "
                             << "the first one: " << sent_[0].DebugString();
  store_.Complete();
  Run();
  std::vector<Message> apps = Sent(MessageType::kApp);
  ASSERT_FALSE(apps.empty());
  EXPECT_EQ(apps[0].to, 2u);
  EXPECT_EQ(apps[0].term, 2u);
}

// A write proposed at index 3 in term 2 whose slot a leader of term 3
// fills with another entry was never committed: it fails, although index 3
// is applied.
TEST_F(DriverTest, WriteIsAnsweredByTheTermOfTheEntryAppliedAtItsIndex) {
  Start({1, 2, 3});
  BecomeLeader();
  ASSERT_EQ(driver_->node().term(), 2u);
  std::optional<Outcome> out;
  driver_->Propose(kv::EncodePut(kv::RequestId{5, 1}, "k", "mine"), kv::RequestId{5, 1},
                   [&](Outcome o) { out = o; });
  Settle();
  ASSERT_FALSE(out.has_value());  // Not acknowledged by anyone: pending.
  // Leader 3 of term 3 holds the no-op (index 2, term 2) and puts its own entry at 3.
  Receive(Append(3, 3, 2, 2, {Put(3, 3, 6, "theirs")}, 3));
  Settle();
  ASSERT_EQ(kv_.revision(), 3u);
  std::string value;
  ASSERT_TRUE(kv_.Get("k", &value));
  EXPECT_EQ(value, "theirs");
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->code, Code::kNotCommitted) << out->message;
}

// A leader's answer to a ReadIndex that a node asked in an earlier life (a
// duplicated, delayed message) must not release a read of its new life, even
// if the two lives numbered their reads alike. Simulator seed 200099 (wal):
// a follower served a read at index 221 while a write at 228 had already
// been acknowledged.
TEST_F(DriverTest, ReadAnswerMeantForAnEarlierLifeReleasesNothing) {
  Start({1, 2, 3});
  Receive(Append(2, 1, 1, 1, {}, 1));
  Settle();
  driver_->ReadBarrier([](Outcome) {});
  Run();
  std::vector<Message> old_asks = Sent(MessageType::kReadIndex);
  ASSERT_EQ(old_asks.size(), 1u);

  MakeDriver(8);  // The node restarts.
  Receive(Append(2, 1, 1, 1, {}, 1));
  Settle();
  std::optional<Outcome> out;
  driver_->ReadBarrier([&](Outcome o) { out = o; });
  Run();
  std::vector<Message> asks = Sent(MessageType::kReadIndex);
  ASSERT_EQ(asks.size(), 1u);
  // The old ask's answer arrives now.
  Receive(ReadAnswer(old_asks[0], 1));
  Settle();
  EXPECT_FALSE(out.has_value()) << "a read of this life was released by an answer to the last";
  // Its own answer releases it.
  Receive(ReadAnswer(asks[0], 1));
  Settle();
  ASSERT_TRUE(out.has_value());
  EXPECT_TRUE(out->ok()) << out->message;
}

// A follower's linearizable read is served once it has applied the index
// the leader answered, not when the answer arrives.
TEST_F(DriverTest, ReadWaitsUntilTheReadIndexIsApplied) {
  Start({1, 2, 3});
  Receive(Append(2, 1, 1, 1, {}, 1));
  Settle();
  std::optional<Outcome> out;
  driver_->ReadBarrier([&](Outcome o) { out = o; });
  Run();
  std::vector<Message> asks = Sent(MessageType::kReadIndex);
  ASSERT_EQ(asks.size(), 1u);
  ASSERT_EQ(asks[0].to, 2u);
  // Two entries the follower holds but does not yet know committed.
  Receive(Append(2, 1, 1, 1, {Put(1, 2, 9, "a"), Put(1, 3, 9, "b")}, 1));
  Settle();
  Receive(ReadAnswer(asks[0], 3));
  Settle();
  EXPECT_EQ(kv_.revision(), 1u);
  EXPECT_FALSE(out.has_value()) << "read served at applied index 1 < read index 3";
  Message hb = Msg(MessageType::kHeartbeat, 2, 1);
  hb.commit = 3;
  Receive(hb);
  Settle();
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->code, Code::kOk);
  EXPECT_EQ(out->index, 3u);
}

// Entries a follower applied through TakeCommitted may replace, in memory,
// older-term entries its disk still holds at the same indexes: no snapshot
// is taken at the applied index until the disk holds the applied entry
// itself, or the snapshot would carry the older term.
TEST_F(DriverTest, SnapshotWaitsUntilTheDiskHoldsTheAppliedEntryOfItsTerm) {
  Start({1, 2, 3}, {}, /*snapshot_entries=*/1);
  // Leader 2 of term 1 sends two entries; their Ready goes to disk.
  Receive(Append(2, 1, 1, 1, {Put(1, 2, 9, "a"), Put(1, 3, 9, "b")}, 1));
  ASSERT_TRUE(store_.holding());
  // Meanwhile leader 3 of term 2 replaces them and commits its own.
  Receive(Append(3, 2, 1, 1, {Put(2, 2, 8, "c"), Put(2, 3, 8, "d")}, 3));
  ASSERT_EQ(kv_.revision(), 3u) << "the commit was not taken while the Ready was on disk";
  store_.Complete();  // The disk now holds index 3 of term 1.
  Run();
  const raft::Snapshot& early = store_.storage().LatestSnapshot();
  EXPECT_TRUE(early.meta.index < 3 || early.meta.term == 2)
      << "snapshot at index 3 records term " << early.meta.term;
  Settle();  // The term-2 entries reach the disk.
  const raft::Snapshot& snap = store_.storage().LatestSnapshot();
  EXPECT_EQ(snap.meta.index, 3u);
  EXPECT_EQ(snap.meta.term, 2u);
}

// A leader just elected has heard only the voters whose votes came first: another's
// answer waits for its fsync. A removal's quorum check then waits (each tick) instead
// of refusing; it refuses once an election timeout has passed without the answer.
TEST_F(DriverTest, ANewLeaderWaitsToHearItsVotersBeforeRefusingARemoval) {
  Start({1, 2, 3});
  BecomeLeader();  // Node 2 voted; node 3 has not answered anything yet.
  // Node 2 acknowledges the leader's first entry, which commits it (a membership
  // change waits for that).
  Message ack = Msg(MessageType::kAppResp, 2, driver_->node().term());
  ack.index = driver_->node().GetStatus().last_index;
  Receive(ack);
  Settle();
  std::optional<Outcome> first;
  driver_->RemoveMember(2, false, [&](Outcome o) { first = std::move(o); });
  Run();
  EXPECT_FALSE(first.has_value()) << "refused at once: " << first->message;
  // Node 3 answers a heartbeat; on the next tick the removal goes ahead.
  Receive(Msg(MessageType::kHeartbeatResp, 3, driver_->node().term()));
  const raft::Index before = driver_->node().GetStatus().last_index;
  driver_->Tick();
  Settle();
  EXPECT_FALSE(first.has_value() && first->code == Code::kConflict) << first->message;
  EXPECT_GT(driver_->node().GetStatus().last_index, before)
      << "no membership change proposed: " << (first ? first->message : "no answer");

  // A new life, elected again, where node 3 never answers: refused after the timeout.
  MakeDriver(8);
  BecomeLeader();
  std::optional<Outcome> second;
  driver_->RemoveMember(2, false, [&](Outcome o) { second = std::move(o); });
  Run();
  EXPECT_FALSE(second.has_value());
  now_ += std::chrono::milliseconds(50) * 10 + std::chrono::milliseconds(1);
  driver_->Tick();
  Settle();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->code, Code::kConflict);
  EXPECT_EQ(second->reason, "would_lose_quorum") << second->message;
}

}  // namespace
}  // namespace raftkv::server
