// Unit tests of the key-value state machine and its command format (src/kv).
#include <gtest/gtest.h>
#include <xxhash.h>

#include "kv/command.h"
#include "kv/encoding.h"
#include "kv/store.h"

namespace raftkv::kv {
namespace {

raft::Entry Put(raft::Index index, const std::string& key, const std::string& value,
                uint64_t seq = 1) {
  return raft::Entry{1, index, raft::EntryType::kNormal, EncodePut({7, seq}, key, value)};
}

TEST(CommandTest, PutRoundTrips) {
  std::string data = EncodePut({0xabc, 42}, std::string("k\0ey", 4), "value");
  CommandView cmd;
  ASSERT_TRUE(DecodeCommand(data, &cmd));
  EXPECT_EQ(cmd.op, Op::kPut);
  EXPECT_EQ(cmd.id, (RequestId{0xabc, 42}));
  EXPECT_EQ(cmd.single.keys.key, std::string("k\0ey", 4));
  EXPECT_EQ(cmd.single.value, "value");
  EXPECT_EQ(cmd.single.lease, 0u);
  EXPECT_EQ(ProtoOf(data), 1);  // The first release's Put, byte for byte.
}

TEST(CommandTest, RejectsUnknownVersionOpFieldCountAndBadLengths) {
  std::string good = EncodePut({1, 2}, "k", "v");
  CommandView cmd;
  std::string bad = good;
  bad[0] = 2;  // Format version.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  bad = good;
  bad[1] = 9;  // Op.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  bad = good;
  bad[18] = 3;  // Field count.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  EXPECT_FALSE(DecodeCommand(good + "x", &cmd));  // Trailing bytes.
  for (size_t n = 0; n < good.size(); n++) {
    EXPECT_FALSE(DecodeCommand(good.substr(0, n), &cmd)) << "truncated at " << n;
  }
  bad = good;
  bad[19] = static_cast<char>(0xff);  // Key length far past the end.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
}

TEST(StoreTest, PutTracksRevisionsAndVersionsLikeEtcd) {
  Store s;
  std::vector<Applied> applied;
  std::vector<raft::Entry> entries = {
      raft::Entry{1, 1, raft::EntryType::kNormal, ""},  // Leader no-op.
      Put(2, "a", "1"), Put(3, "b", "x"), Put(4, "a", "2", 9)};
  ASSERT_TRUE(s.Apply(entries, &applied).ok());
  EXPECT_EQ(s.revision(), 4u);
  ASSERT_EQ(applied.size(), 3u);
  EXPECT_EQ(applied[2].index, 4u);
  EXPECT_EQ(applied[2].id, (RequestId{7, 9}));
  std::string v;
  KeyMeta m;
  ASSERT_TRUE(s.Get("a", &v, &m));
  EXPECT_EQ(v, "2");
  EXPECT_EQ(m, (KeyMeta{2, 4, 2}));
  ASSERT_TRUE(s.Get("b", &v, &m));
  EXPECT_EQ(m, (KeyMeta{3, 3, 1}));
  EXPECT_FALSE(s.Get("c", &v));
  EXPECT_EQ(s.size(), 2u);
}

TEST(StoreTest, ConfChangesAndNoOpsOnlyAdvanceTheRevision) {
  Store s;
  std::vector<Applied> applied;
  std::vector<raft::Entry> entries = {raft::Entry{1, 1, raft::EntryType::kConfChange, "cc"},
                                      raft::Entry{1, 2, raft::EntryType::kNormal, ""}};
  ASSERT_TRUE(s.Apply(entries, &applied).ok());
  EXPECT_EQ(s.revision(), 2u);
  EXPECT_TRUE(applied.empty());
  EXPECT_EQ(s.size(), 0u);
}

TEST(StoreTest, UnknownCommandIsCorruptionNamingTheIndex) {
  Store s;
  std::vector<Applied> applied;
  std::vector<raft::Entry> entries = {Put(1, "a", "1"),
                                      raft::Entry{1, 2, raft::EntryType::kNormal, "\x09junk"}};
  raft::Status st = s.Apply(entries, &applied);
  EXPECT_EQ(st.code(), raft::Code::kCorruption);
  EXPECT_NE(st.message().find("entry 2"), std::string::npos) << st.message();
  EXPECT_EQ(s.revision(), 1u);  // The good entry before it stays applied.
}

TEST(StoreTest, ApplyIsDeterministic) {
  Store a, b;
  std::vector<Applied> ignored;
  std::vector<raft::Entry> entries;
  for (raft::Index i = 1; i <= 200; i++) {
    entries.push_back(Put(i, "k" + std::to_string(i % 17), "v" + std::to_string(i)));
  }
  ASSERT_TRUE(a.Apply(entries, &ignored).ok());
  for (const raft::Entry& e : entries) ASSERT_TRUE(b.Apply({&e, 1}, &ignored).ok());
  EXPECT_EQ(a.Hash(), b.Hash());
  EXPECT_EQ(a.Snapshot(), b.Snapshot());
}

TEST(StoreTest, SnapshotRestoresExactly) {
  Store a;
  std::vector<Applied> ignored;
  std::vector<raft::Entry> entries = {Put(1, "x", "1"), Put(2, std::string("\0y", 2), ""),
                                      Put(3, "x", "3")};
  ASSERT_TRUE(a.Apply(entries, &ignored).ok());
  Store b;
  ASSERT_TRUE(b.Restore(a.Snapshot()).ok());
  EXPECT_EQ(b.revision(), 3u);
  EXPECT_EQ(a.Hash(), b.Hash());
  std::string v;
  KeyMeta m;
  ASSERT_TRUE(b.Get("x", &v, &m));
  EXPECT_EQ(v, "3");
  EXPECT_EQ(m, (KeyMeta{1, 3, 2}));
  // And applying continues from the snapshot's revision.
  std::vector<raft::Entry> next = {Put(4, "x", "4")};
  ASSERT_TRUE(b.Apply(next, &ignored).ok());
  ASSERT_TRUE(b.Get("x", &v, &m));
  EXPECT_EQ(m, (KeyMeta{1, 4, 3}));
}

TEST(StoreTest, CorruptSnapshotIsRefusedAndLeavesStateAlone) {
  Store a;
  std::vector<Applied> ignored;
  std::vector<raft::Entry> entries = {Put(1, "x", "1"), Put(2, "y", "2")};
  ASSERT_TRUE(a.Apply(entries, &ignored).ok());
  std::string image = a.Snapshot();
  Store b;
  std::vector<raft::Entry> mine = {Put(1, "mine", "1")};
  ASSERT_TRUE(b.Apply(mine, &ignored).ok());
  uint64_t before = b.Hash();
  for (size_t i = 0; i < image.size(); i++) {
    std::string bad = image;
    bad[i] ^= 0x20;
    EXPECT_EQ(b.Restore(bad).code(), raft::Code::kCorruption) << "flipped byte " << i;
  }
  EXPECT_EQ(b.Restore(image.substr(0, image.size() - 1)).code(), raft::Code::kCorruption);
  EXPECT_EQ(b.Restore("").code(), raft::Code::kCorruption);
  EXPECT_EQ(b.Hash(), before);
}

// --- The /v1 commands (issue 11) -------------------------------------------

KeyRange One(std::string_view k) { return KeyRange{k, "", false}; }
KeyRange Prefix(std::string_view p, std::string* end) {
  *end = PrefixEnd(p);
  return KeyRange{p, *end, true};
}

TxnOp PutOp(std::string_view k, std::string_view v, uint8_t flags = 0) {
  TxnOp op;
  op.kind = TxnOpKind::kPut;
  op.keys = One(k);
  op.value = v;
  op.flags = flags;
  return op;
}
TxnOp DelOp(KeyRange keys, uint8_t flags = 0, uint64_t limit = 0, uint64_t max_keys = 0) {
  TxnOp op;
  op.kind = TxnOpKind::kDelete;
  op.keys = keys;
  op.flags = flags;
  op.limit = limit;
  op.max_keys = max_keys;
  return op;
}
TxnOp GetOp(std::string_view k, uint8_t flags = 0) {
  TxnOp op;
  op.kind = TxnOpKind::kGet;
  op.keys = One(k);
  op.flags = flags;
  return op;
}
TxnOp RangeOp(KeyRange keys, uint64_t limit = 0, uint8_t flags = 0, uint64_t max_bytes = 0) {
  TxnOp op;
  op.kind = TxnOpKind::kRange;
  op.keys = keys;
  op.limit = limit;
  op.flags = flags;
  op.max_bytes = max_bytes;
  return op;
}
Compare Cmp(std::string_view k, Target t, CmpOp op, uint64_t n) {
  Compare c;
  c.keys = One(k);
  c.target = t;
  c.op = op;
  c.number = n;
  return c;
}
Compare CmpValue(std::string_view k, CmpOp op, std::string_view v) {
  Compare c;
  c.keys = One(k);
  c.target = Target::kValue;
  c.op = op;
  c.value = v;
  return c;
}

raft::Entry Entry(raft::Index index, std::string data) {
  return raft::Entry{1, index, raft::EntryType::kNormal, std::move(data)};
}

// A store with a helper that applies one command and returns its result
// (always wanted) and the events it made.
class V1 {
 public:
  Result Apply(std::string data, std::vector<Event>* events = nullptr) {
    raft::Index index = store.revision() + 1;
    std::vector<raft::Entry> e = {Entry(index, std::move(data))};
    std::vector<Applied> applied;
    ApplyOptions o;
    o.want_result = [](raft::Index) { return true; };
    o.events = events;
    EXPECT_TRUE(store.Apply(e, &applied, o).ok());
    EXPECT_EQ(applied.size(), 1u);
    EXPECT_TRUE(applied[0].result);
    EXPECT_EQ(applied[0].code, applied[0].result->code);
    return *applied[0].result;
  }
  Result Put(std::string_view k, std::string_view v) { return Apply(EncodePut({1, seq++}, k, v)); }
  Result Txn(const std::vector<Compare>& c, const std::vector<TxnOp>& s,
             const std::vector<TxnOp>& f = {}) {
    return Apply(EncodeTxn({1, seq++}, c, s, f));
  }
  Result Delete(const TxnOp& op) { return Apply(EncodeDelete({1, seq++}, op)); }
  std::vector<std::string> Keys(KeyRange r, uint64_t limit = 0) {
    std::vector<std::string> out;
    Result res = store.Read(RangeOp(r, limit));
    for (const KeyValue& kv : res.ops[0].kvs) out.push_back(kv.key);
    return out;
  }
  KeyMeta Meta(std::string_view k) {
    std::string v;
    KeyMeta m;
    EXPECT_TRUE(store.Get(k, &v, &m)) << k;
    return m;
  }

  Store store;
  uint64_t seq = 1;
};

TEST(CommandTest, DeleteAndTxnRoundTrip) {
  std::string end;
  TxnOp del = DelOp(Prefix("a/", &end), 0, 5, 10);
  CommandView cmd;
  ASSERT_TRUE(DecodeCommand(EncodeDelete({3, 4}, del), &cmd));
  EXPECT_EQ(cmd.op, Op::kDelete);
  EXPECT_EQ(cmd.single.keys.key, "a/");
  EXPECT_EQ(cmd.single.keys.end, "a0");
  EXPECT_TRUE(cmd.single.keys.range);
  EXPECT_EQ(cmd.single.limit, 5u);
  EXPECT_EQ(cmd.single.max_keys, 10u);
  ASSERT_TRUE(DecodeCommand(EncodeDelete({3, 4}, DelOp(One("k"))), &cmd));
  EXPECT_FALSE(cmd.single.keys.range);
  EXPECT_EQ(cmd.single.keys.key, "k");

  const std::string operand("\xff\0", 2);
  Compare c = CmpValue("k", CmpOp::kNotEqual, operand);
  Compare p = Cmp("", Target::kLease, CmpOp::kGreater, 1ull << 60);
  p.keys = KeyRange{"", "", true};
  std::vector<TxnOp> success = {PutOp("k", "v", kWantPrevKv), DelOp(Prefix("a/", &end)),
                                GetOp("g", kKeysOnly),
                                RangeOp(KeyRange{"r", "s", true}, 7, kCountOnly, 99)};
  success[0].lease = 12;
  std::string data = EncodeTxn({5, 6}, {c, p}, success, {GetOp("f")});
  EXPECT_EQ(ProtoOf(data), 2);
  ASSERT_TRUE(DecodeCommand(data, &cmd));
  EXPECT_EQ(cmd.op, Op::kTxn);
  EXPECT_EQ(cmd.id, (RequestId{5, 6}));
  ASSERT_EQ(cmd.compares.size(), 2u);
  EXPECT_EQ(cmd.compares[0].value, std::string("\xff\0", 2));
  EXPECT_EQ(cmd.compares[0].op, CmpOp::kNotEqual);
  EXPECT_EQ(cmd.compares[1].number, 1ull << 60);
  EXPECT_EQ(cmd.compares[1].target, Target::kLease);
  EXPECT_TRUE(cmd.compares[1].keys.range);
  ASSERT_EQ(cmd.success.size(), 4u);
  EXPECT_EQ(cmd.success[0].lease, 12u);
  EXPECT_EQ(cmd.success[0].flags, kWantPrevKv);
  EXPECT_EQ(cmd.success[1].keys.end, "a0");
  EXPECT_EQ(cmd.success[2].flags, kKeysOnly);
  EXPECT_EQ(cmd.success[3].limit, 7u);
  EXPECT_EQ(cmd.success[3].max_bytes, 99u);
  ASSERT_EQ(cmd.failure.size(), 1u);
  EXPECT_EQ(cmd.failure[0].keys.key, "f");
  // Every truncation and any trailing byte is refused.
  for (size_t n = 0; n < data.size(); n++) {
    EXPECT_FALSE(DecodeCommand(data.substr(0, n), &cmd)) << "truncated at " << n;
  }
  EXPECT_FALSE(DecodeCommand(data + "x", &cmd));
  EXPECT_EQ(ProtoOf(EncodePut({1, 1}, "k", "v", 3)), 2);
}

TEST(CommandTest, UnknownTargetsKindsAndFlagsAreRefused) {
  // Byte offsets inside a one-compare, one-op txn: header 19, then the
  // compares field (u32 length, u32 count, target, op, ...).
  std::string data =
      EncodeTxn({1, 1}, {Cmp("k", Target::kVersion, CmpOp::kEqual, 1)}, {PutOp("k", "v")}, {});
  CommandView cmd;
  ASSERT_TRUE(DecodeCommand(data, &cmd));
  size_t target = 19 + 4 + 4;
  std::string bad = data;
  bad[target] = 9;
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  bad = data;
  bad[target + 1] = 4;  // CmpOp past kGreater.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  // The success list follows the compares: its first op's kind and flags.
  uint32_t clen = static_cast<uint32_t>(LoadLE(data.data() + 19, 4));
  size_t kind = 19 + 4 + clen + 4 + 4;
  ASSERT_EQ(data[kind], static_cast<char>(TxnOpKind::kPut));
  bad = data;
  bad[kind] = 5;
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  bad = data;
  bad[kind] = 0;
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  bad = data;
  bad[kind + 1] = 8;  // An unknown flag.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
  bad = data;
  bad[kind + 2] = 1;  // A put over a range.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
}

TEST(KeyRangeTest, PrefixEndAndOverlaps) {
  EXPECT_EQ(PrefixEnd("a"), "b");
  EXPECT_EQ(PrefixEnd("a/"), "a0");
  EXPECT_EQ(PrefixEnd("a\xff"), "b");
  EXPECT_EQ(PrefixEnd("a\xfe"), "a\xff");
  EXPECT_EQ(PrefixEnd("\xff\xff"), "");  // No end: every key from the prefix on.
  EXPECT_EQ(PrefixEnd(""), "");
  std::string e1, e2;
  KeyRange a = Prefix("a/", &e1), ab = Prefix("a/b", &e2);
  EXPECT_TRUE(a.Overlaps(ab));
  EXPECT_TRUE(ab.Overlaps(a));
  EXPECT_TRUE(a.Overlaps(One("a/x")));
  EXPECT_TRUE(One("a/x").Overlaps(a));
  EXPECT_FALSE(a.Overlaps(One("a0")));
  EXPECT_FALSE(One("a").Overlaps(One("b")));
  EXPECT_TRUE(One("b").Overlaps(One("b")));
  EXPECT_TRUE((KeyRange{"", "", true}).Overlaps(One("\xff")));
  EXPECT_FALSE((KeyRange{"b", "c", true}).Overlaps(KeyRange{"c", "", true}));
  EXPECT_TRUE((KeyRange{"b", "", true}).Overlaps(KeyRange{"c", "d", true}));
}

TEST(StoreV1Test, DeleteResetsTheVersionAndStillTakesARevision) {
  V1 s;
  s.Put("k", "1");
  s.Put("k", "2");
  EXPECT_EQ(s.Meta("k"), (KeyMeta{1, 2, 2, 0}));
  std::vector<Event> events;
  Result r = s.Apply(EncodeDelete({1, 9}, DelOp(One("k"), kWantPrevKv)), &events);
  EXPECT_EQ(r.revision, 3u);
  EXPECT_EQ(r.ops[0].deleted, 1u);
  // A Delete command reports no previous kvs: only a Txn's delete can.
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, Event::Type::kDelete);
  EXPECT_EQ(events[0].kv.key, "k");
  EXPECT_EQ(events[0].kv.meta.mod_revision, 3u);
  std::string v;
  EXPECT_FALSE(s.store.Get("k", &v));
  // Deleting a missing key is still an entry, deleting nothing.
  r = s.Delete(DelOp(One("k")));
  EXPECT_EQ(r.revision, 4u);
  EXPECT_EQ(r.ops[0].deleted, 0u);
  EXPECT_EQ(s.store.revision(), 4u);
  // Recreated: a new create_revision, version 1.
  s.Put("k", "3");
  EXPECT_EQ(s.Meta("k"), (KeyMeta{5, 5, 1, 0}));
}

TEST(StoreV1Test, RangesAreInKeyByteOrderWithLimitsAndPrefixEdges) {
  V1 s;
  for (const std::string& k :
       std::vector<std::string>{"b", "a/2", "a/10", "a/1", "a", "a/\xff", "\xff\xff",
                                "\xff\xff\x01", std::string("a\0", 2)}) {
    s.Put(k, "v-" + k);
  }
  std::string end;
  EXPECT_EQ(s.Keys(Prefix("a/", &end)), (std::vector<std::string>{"a/1", "a/10", "a/2", "a/\xff"}));
  EXPECT_EQ(s.Keys(Prefix("a/", &end), 2), (std::vector<std::string>{"a/1", "a/10"}));
  EXPECT_EQ(s.Keys(Prefix("a", &end)),
            (std::vector<std::string>{"a", std::string("a\0", 2), "a/1", "a/10", "a/2", "a/\xff"}));
  // A prefix of 0xFF bytes has no end: every key from it on.
  EXPECT_EQ(s.Keys(Prefix("\xff\xff", &end)),
            (std::vector<std::string>{"\xff\xff", "\xff\xff\x01"}));
  EXPECT_EQ(s.Keys(Prefix("\xff\xff\x01", &end)), (std::vector<std::string>{"\xff\xff\x01"}));
  // The empty prefix is every key.
  EXPECT_EQ(s.Keys(Prefix("", &end)).size(), 9u);
  EXPECT_TRUE(s.Keys(Prefix("c", &end)).empty());
  EXPECT_TRUE(s.Keys(Prefix("a/3", &end)).empty());

  Result r = s.store.Read(RangeOp(Prefix("a/", &end), 3));
  EXPECT_TRUE(r.ops[0].more);
  EXPECT_EQ(r.revision, 9u);
  r = s.store.Read(RangeOp(Prefix("a/", &end), 4));
  EXPECT_FALSE(r.ops[0].more);
  EXPECT_EQ(r.ops[0].kvs[0].value, "v-a/1");
  EXPECT_EQ(r.ops[0].kvs[0].meta.mod_revision, 4u);
  r = s.store.Read(RangeOp(Prefix("a/", &end), 0, kKeysOnly));
  EXPECT_EQ(r.ops[0].kvs.size(), 4u);
  EXPECT_EQ(r.ops[0].kvs[0].value, "");
  EXPECT_EQ(r.ops[0].kvs[0].meta.version, 1u);
  r = s.store.Read(RangeOp(Prefix("a/", &end), 1, kCountOnly));
  EXPECT_EQ(r.ops[0].count, 4u);  // The limit does not bound a count.
  EXPECT_TRUE(r.ops[0].kvs.empty());
  // A byte cap ends the page after the kv that reaches it (at least one).
  r = s.store.Read(RangeOp(Prefix("a/", &end), 0, 0, 1));
  EXPECT_EQ(r.ops[0].kvs.size(), 1u);
  EXPECT_TRUE(r.ops[0].more);
  r = s.store.Read(RangeOp(Prefix("a/", &end), 0, 0, 3 + 5 + 4));
  EXPECT_EQ(r.ops[0].kvs.size(), 2u);
  // A range [key, end) that is not a prefix.
  EXPECT_EQ(s.Keys(KeyRange{"a/10", "b", true}),
            (std::vector<std::string>{"a/10", "a/2", "a/\xff"}));
  r = s.store.Read(GetOp("a/2"));
  EXPECT_TRUE(r.ops[0].found);
  EXPECT_EQ(r.ops[0].kv.value, "v-a/2");
  r = s.store.Read(GetOp("nope"));
  EXPECT_FALSE(r.ops[0].found);
}

TEST(StoreV1Test, EveryCompareTargetAndOperator) {
  V1 s;
  s.Put("k", "m");    // rev 1
  s.Put("x", "pad");  // rev 2
  s.Put("k", "m");    // rev 3: create 1, mod 3, version 2.
  struct Case {
    Compare c;
    bool holds;
  };
  std::vector<Case> cases = {
      {CmpValue("k", CmpOp::kEqual, "m"), true},
      {CmpValue("k", CmpOp::kNotEqual, "m"), false},
      {CmpValue("k", CmpOp::kLess, "n"), true},
      {CmpValue("k", CmpOp::kLess, "m"), false},
      {CmpValue("k", CmpOp::kGreater, "l"), true},
      {CmpValue("k", CmpOp::kGreater, "m\x01"), false},
      {Cmp("k", Target::kVersion, CmpOp::kEqual, 2), true},
      {Cmp("k", Target::kVersion, CmpOp::kNotEqual, 2), false},
      {Cmp("k", Target::kVersion, CmpOp::kLess, 3), true},
      {Cmp("k", Target::kVersion, CmpOp::kGreater, 2), false},
      {Cmp("k", Target::kCreateRevision, CmpOp::kEqual, 1), true},
      {Cmp("k", Target::kCreateRevision, CmpOp::kGreater, 0), true},
      {Cmp("k", Target::kModRevision, CmpOp::kEqual, 3), true},
      {Cmp("k", Target::kModRevision, CmpOp::kLess, 3), false},
      {Cmp("k", Target::kModRevision, CmpOp::kNotEqual, 1), true},
      {Cmp("k", Target::kLease, CmpOp::kEqual, 0), true},
      {Cmp("k", Target::kLease, CmpOp::kGreater, 0), false},
      // A missing key: every number is 0, and a value compare fails (etcd).
      {Cmp("none", Target::kVersion, CmpOp::kEqual, 0), true},
      {Cmp("none", Target::kCreateRevision, CmpOp::kLess, 1), true},
      {Cmp("none", Target::kModRevision, CmpOp::kGreater, 0), false},
      {CmpValue("none", CmpOp::kEqual, ""), false},
      {CmpValue("none", CmpOp::kNotEqual, "x"), false},
  };
  for (size_t i = 0; i < cases.size(); i++) {
    uint64_t before = s.store.Hash();
    Result r = s.Txn({cases[i].c}, {GetOp("x")}, {GetOp("k")});
    EXPECT_EQ(r.succeeded, cases[i].holds) << "case " << i;
    ASSERT_EQ(r.ops.size(), 1u);
    EXPECT_EQ(r.ops[0].kv.key, cases[i].holds ? "x" : "k") << "case " << i;
    // A read-only txn entry changes nothing but the revision.
    EXPECT_NE(s.store.Hash(), before);
    EXPECT_EQ(s.Meta("k"), (KeyMeta{1, 3, 2, 0}));
    // The same compare served without the log agrees.
    EXPECT_EQ(s.store.ReadTxn({cases[i].c}, {}, {}).succeeded, cases[i].holds) << "case " << i;
  }
}

TEST(StoreV1Test, PrefixComparesHoldForEveryKeyAndAnEmptyRangeIsAMissingKey) {
  V1 s;
  s.Put("p/a", "1");
  s.Put("p/b", "2");
  s.Put("q", "3");
  std::string end;
  auto pc = [&](Target t, CmpOp op, uint64_t n) {
    Compare c = Cmp("", t, op, n);
    c.keys = Prefix("p/", &end);
    return c;
  };
  EXPECT_TRUE(s.store.ReadTxn({pc(Target::kModRevision, CmpOp::kLess, 3)}, {}, {}).succeeded);
  EXPECT_FALSE(s.store.ReadTxn({pc(Target::kModRevision, CmpOp::kLess, 2)}, {}, {}).succeeded);
  EXPECT_TRUE(s.store.ReadTxn({pc(Target::kVersion, CmpOp::kEqual, 1)}, {}, {}).succeeded);
  Compare v = CmpValue("", CmpOp::kGreater, "0");
  v.keys = Prefix("p/", &end);
  EXPECT_TRUE(s.store.ReadTxn({v}, {}, {}).succeeded);
  v.value = "1";
  EXPECT_FALSE(s.store.ReadTxn({v}, {}, {}).succeeded);  // p/a's "1" is not > "1".
  Compare empty = Cmp("", Target::kCreateRevision, CmpOp::kEqual, 0);
  empty.keys = Prefix("r/", &end);
  EXPECT_TRUE(s.store.ReadTxn({empty}, {}, {}).succeeded);
  Compare empty_value = CmpValue("", CmpOp::kNotEqual, "z");
  empty_value.keys = Prefix("r/", &end);
  EXPECT_FALSE(s.store.ReadTxn({empty_value}, {}, {}).succeeded);
  // Every compare must hold: one failing one fails the txn.
  EXPECT_FALSE(s.store
                   .ReadTxn({pc(Target::kVersion, CmpOp::kEqual, 1),
                             Cmp("q", Target::kVersion, CmpOp::kEqual, 2)},
                            {}, {})
                   .succeeded);
  // No compares: success.
  EXPECT_TRUE(s.store.ReadTxn({}, {}, {}).succeeded);
}

TEST(StoreV1Test, TxnIsOneRevisionAndReadsSeeEarlierOpsOfTheBranch) {
  V1 s;
  s.Put("from", "10");
  std::string end;
  std::vector<Event> events;
  Result r = s.Apply(EncodeTxn({1, 50}, {CmpValue("from", CmpOp::kEqual, "10")},
                               {PutOp("from", "0", kWantPrevKv), PutOp("to", "10"), GetOp("to"),
                                RangeOp(KeyRange{"", "", true})},
                               {GetOp("from")}),
                     &events);
  EXPECT_TRUE(r.succeeded);
  EXPECT_EQ(r.revision, 2u);
  ASSERT_EQ(r.ops.size(), 4u);
  ASSERT_EQ(r.ops[0].kvs.size(), 1u);
  EXPECT_EQ(r.ops[0].kvs[0].value, "10");  // prev_kv.
  EXPECT_EQ(r.ops[0].kv.meta, (KeyMeta{1, 2, 2, 0}));
  EXPECT_EQ(r.ops[1].kv.meta, (KeyMeta{2, 2, 1, 0}));
  EXPECT_TRUE(r.ops[2].found);
  EXPECT_EQ(r.ops[2].kv.value, "10");
  EXPECT_EQ(r.ops[3].kvs.size(), 2u);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kv.key, "from");
  EXPECT_EQ(events[1].kv.key, "to");
  EXPECT_EQ(events[1].kv.meta.mod_revision, 2u);
  // The same txn again: the compare fails, the failure branch runs.
  r = s.Txn({CmpValue("from", CmpOp::kEqual, "10")}, {PutOp("from", "0")}, {GetOp("from")});
  EXPECT_FALSE(r.succeeded);
  EXPECT_EQ(r.ops[0].kv.value, "0");
  EXPECT_EQ(s.Meta("from").mod_revision, 2u);
  // An empty txn succeeds and takes a revision.
  r = s.Txn({}, {}, {});
  EXPECT_TRUE(r.succeeded);
  EXPECT_EQ(r.revision, 4u);
}

TEST(StoreV1Test, AFailingOpLeavesTheWholeTxnUnapplied) {
  V1 s;
  s.Put("a", "1");
  uint64_t before = s.store.Hash();
  TxnOp leased = PutOp("b", "2");
  leased.lease = 5;  // No such lease.
  Result r = s.Txn({}, {PutOp("a", "changed"), leased});
  EXPECT_EQ(r.code, ResultCode::kLeaseNotFound);
  EXPECT_TRUE(r.ops.empty());
  std::string v;
  ASSERT_TRUE(s.store.Get("a", &v));
  EXPECT_EQ(v, "1");
  EXPECT_FALSE(s.store.Get("b", &v));
  EXPECT_EQ(s.store.revision(), 2u);
  EXPECT_NE(s.store.Hash(), before);  // Only the revision moved.
  r = s.Apply(EncodePut({1, 77}, "b", "2", 5));
  EXPECT_EQ(r.code, ResultCode::kLeaseNotFound);
  EXPECT_FALSE(s.store.Get("b", &v));
}

TEST(StoreV1Test, PrefixDeleteHonoursLimitAndMaxKeys) {
  V1 s;
  for (int i = 0; i < 5; i++) s.Put("d/" + std::to_string(i), "v");
  s.Put("e", "v");
  std::string end;
  // More keys than max_keys and no limit: refused, nothing deleted.
  Result r = s.Delete(DelOp(Prefix("d/", &end), 0, 0, 4));
  EXPECT_EQ(r.code, ResultCode::kTooManyKeys);
  EXPECT_EQ(s.store.size(), 6u);
  // A limit deletes the first keys in order and says more remain.
  r = s.Txn({}, {DelOp(Prefix("d/", &end), kWantPrevKv, 2, 4)});
  EXPECT_EQ(r.code, ResultCode::kOk);
  EXPECT_EQ(r.ops[0].deleted, 2u);
  EXPECT_TRUE(r.ops[0].more);
  ASSERT_EQ(r.ops[0].kvs.size(), 2u);
  EXPECT_EQ(r.ops[0].kvs[0].key, "d/0");
  EXPECT_EQ(r.ops[0].kvs[1].key, "d/1");
  EXPECT_EQ(s.Keys(Prefix("d/", &end)), (std::vector<std::string>{"d/2", "d/3", "d/4"}));
  // Exactly max_keys: allowed.
  r = s.Delete(DelOp(Prefix("d/", &end), 0, 0, 3));
  EXPECT_EQ(r.ops[0].deleted, 3u);
  EXPECT_FALSE(r.ops[0].more);
  EXPECT_EQ(s.store.size(), 1u);
  // The empty prefix: every key.
  r = s.Delete(DelOp(KeyRange{"", "", true}));
  EXPECT_EQ(r.ops[0].deleted, 1u);
  EXPECT_EQ(s.store.size(), 0u);
}

TEST(StoreV1Test, ResultsAreBuiltOnlyWhereWantedAndOutcomesAgreeEverywhere) {
  Store wanted, other;
  TxnOp leased = PutOp("b", "2");
  leased.lease = 1;
  std::vector<raft::Entry> entries = {Entry(1, EncodePut({1, 1}, "a", "1")),
                                      Entry(2, EncodeTxn({1, 2}, {}, {leased}, {})),
                                      Entry(3, EncodeTxn({1, 3}, {}, {GetOp("a")}, {}))};
  std::vector<Applied> a1, a2;
  ApplyOptions only3;
  only3.want_result = [](raft::Index i) { return i == 3; };
  ASSERT_TRUE(wanted.Apply(entries, &a1, only3).ok());
  ASSERT_TRUE(other.Apply(entries, &a2).ok());
  ASSERT_EQ(a1.size(), 3u);
  ASSERT_EQ(a2.size(), 3u);
  EXPECT_FALSE(a1[0].result);
  EXPECT_FALSE(a1[1].result);
  ASSERT_TRUE(a1[2].result);
  EXPECT_EQ(a1[2].result->ops[0].kv.value, "1");
  for (size_t i = 0; i < 3; i++) {
    EXPECT_FALSE(a2[i].result);
    EXPECT_EQ(a1[i].code, a2[i].code) << i;
  }
  EXPECT_EQ(a1[1].code, ResultCode::kLeaseNotFound);
  EXPECT_EQ(wanted.Hash(), other.Hash());
}

// The first release's snapshot image (version 1), built byte by byte as
// docs/wire-format.md section 3 specifies it.
std::string ImageV1(uint64_t rev, const std::vector<std::pair<std::string, KeyMeta>>& kvs) {
  std::string out;
  PutU8(&out, 1);
  PutU64(&out, rev);
  PutU64(&out, kvs.size());
  for (const auto& [k, m] : kvs) {
    PutBytes(&out, k);
    PutBytes(&out, "v-" + k);
    PutU64(&out, m.create_revision);
    PutU64(&out, m.mod_revision);
    PutU64(&out, m.version);
  }
  PutU64(&out, XXH3_64bits(out.data(), out.size()));
  return out;
}

TEST(StoreV1Test, TheFirstReleasesImageLoadsAndImagesStayVersion1WithoutLeases) {
  std::string v1 = ImageV1(9, {{"a", KeyMeta{1, 5, 2, 0}}, {"b/c", KeyMeta{7, 9, 1, 0}}});
  Store s;
  ASSERT_TRUE(s.Restore(v1).ok());
  EXPECT_EQ(s.revision(), 9u);
  std::string v;
  KeyMeta m;
  ASSERT_TRUE(s.Get("b/c", &v, &m));
  EXPECT_EQ(v, "v-b/c");
  EXPECT_EQ(m, (KeyMeta{7, 9, 1, 0}));
  // No key has a lease, so the image is the first release's format, byte
  // for byte: a node not yet upgraded can install it.
  EXPECT_EQ(s.Snapshot(), v1);
}

// A version 2 image up to its lease table: revision 4, one key "k" at
// revisions 2..4, version 3, on lease 77.
std::string ImageV2KeyOnLease77() {
  std::string out;
  PutU8(&out, 2);
  PutU64(&out, 4);
  PutU64(&out, 1);
  PutBytes(&out, "k");
  PutBytes(&out, "v");
  PutU64(&out, 2);
  PutU64(&out, 4);
  PutU64(&out, 3);
  PutU64(&out, 77);
  return out;
}

TEST(StoreV1Test, AVersion2ImageCarriesLeases) {
  std::string out = ImageV2KeyOnLease77();
  PutU64(&out, 1);  // The lease table: one lease.
  PutU64(&out, 77);
  PutU64(&out, 5000);
  PutU64(&out, 3);
  std::string image = out;
  PutU64(&image, XXH3_64bits(image.data(), image.size()));
  Store s;
  ASSERT_TRUE(s.Restore(image).ok());
  std::string v;
  KeyMeta m;
  ASSERT_TRUE(s.Get("k", &v, &m));
  EXPECT_EQ(m, (KeyMeta{2, 4, 3, 77}));
  LeaseInfo l;
  std::vector<std::string> keys;
  ASSERT_TRUE(s.GetLease(77, &l, &keys));
  EXPECT_EQ(l, (LeaseInfo{77, 5000, 3}));
  EXPECT_EQ(keys, std::vector<std::string>{"k"});
  EXPECT_EQ(s.Snapshot(), image);  // A lease keeps the image at version 2.
  Store t;
  ASSERT_TRUE(t.Restore(s.Snapshot()).ok());
  EXPECT_EQ(t.Hash(), s.Hash());
  // A version this release does not know is refused.
  std::string v3 = out;
  v3[0] = 3;
  PutU64(&v3, XXH3_64bits(v3.data(), v3.size()));
  EXPECT_EQ(t.Restore(v3).code(), raft::Code::kCorruption);
}

TEST(StoreV1Test, AnImageWhoseKeyNamesAMissingLeaseIsCorrupt) {
  std::string out = ImageV2KeyOnLease77();  // A lease the table does not hold.
  PutU64(&out, 0);
  PutU64(&out, XXH3_64bits(out.data(), out.size()));
  Store s;
  raft::Status st = s.Restore(out);
  EXPECT_EQ(st.code(), raft::Code::kCorruption);
  EXPECT_NE(st.message().find("lease 77"), std::string::npos) << st.message();
}

// --- Leases (issue 13) -------------------------------------------------------

TEST(CommandTest, LeaseCommandsRoundTripAndNeedLanguage3) {
  CommandView cmd;
  std::string grant = EncodeLeaseGrant({3, 9}, 42, 7000);
  ASSERT_TRUE(DecodeCommand(grant, &cmd));
  EXPECT_EQ(cmd.op, Op::kLeaseGrant);
  EXPECT_EQ(cmd.id, (RequestId{3, 9}));
  EXPECT_EQ(cmd.lease_id, 42u);
  EXPECT_EQ(cmd.ttl_ms, 7000u);
  EXPECT_EQ(ProtoOf(grant), 3);

  std::string expire = EncodeLeaseRevoke({3, 0}, RevokeReason::kExpire, {{5, 11}, {6, 12}});
  ASSERT_TRUE(DecodeCommand(expire, &cmd));
  EXPECT_EQ(cmd.op, Op::kLeaseRevoke);
  EXPECT_EQ(cmd.reason, RevokeReason::kExpire);
  EXPECT_EQ(cmd.leases, (std::vector<LeaseRef>{{5, 11}, {6, 12}}));
  EXPECT_EQ(ProtoOf(expire), 3);

  std::string revoke = EncodeLeaseRevoke({3, 1}, RevokeReason::kRevoke, {{5, 99}});
  ASSERT_TRUE(DecodeCommand(revoke, &cmd));
  EXPECT_EQ(cmd.reason, RevokeReason::kRevoke);
  EXPECT_EQ(cmd.leases, (std::vector<LeaseRef>{{5, 0}}));  // A revoke carries no revision.

  std::string keepalive = EncodeLeaseKeepAlive({3, 2}, {8, 9, 10});
  ASSERT_TRUE(DecodeCommand(keepalive, &cmd));
  EXPECT_EQ(cmd.op, Op::kLeaseKeepAlive);
  EXPECT_EQ(cmd.leases, (std::vector<LeaseRef>{{8, 0}, {9, 0}, {10, 0}}));
  EXPECT_EQ(ProtoOf(keepalive), 3);
  // A Delete still needs only language 2.
  EXPECT_EQ(ProtoOf(EncodeDelete({1, 1}, DelOp(One("k")))), 2);

  // Every truncation, an unknown reason, and a trailing byte are refused.
  for (const std::string& data : {grant, expire, keepalive}) {
    for (size_t n = 0; n < data.size(); n++) {
      EXPECT_FALSE(DecodeCommand(data.substr(0, n), &cmd)) << n;
    }
    EXPECT_FALSE(DecodeCommand(data + "x", &cmd));
  }
  std::string bad = EncodeLeaseRevoke({3, 1}, RevokeReason::kRevoke, {{5, 0}});
  // Header (19 bytes), then the reason field: u32 length 8, then the u64.
  bad[19 + 4] = 2;  // 2 is no reason.
  EXPECT_FALSE(DecodeCommand(bad, &cmd));
}

class Leases : public V1 {
 public:
  Result Grant(uint64_t id, uint64_t ttl_ms) {
    return Apply(EncodeLeaseGrant({1, seq++}, id, ttl_ms));
  }
  Result KeepAlive(const std::vector<uint64_t>& ids) {
    return Apply(EncodeLeaseKeepAlive({1, seq++}, ids));
  }
  Result Revoke(RevokeReason why, const std::vector<LeaseRef>& refs,
                std::vector<Event>* events = nullptr) {
    return Apply(EncodeLeaseRevoke({1, seq++}, why, refs), events);
  }
  Result PutLeased(std::string_view k, uint64_t lease) {
    return Apply(EncodePut({1, seq++}, k, "v", lease));
  }
  std::vector<std::string> KeysOf(uint64_t id) {
    LeaseInfo l;
    std::vector<std::string> keys;
    EXPECT_TRUE(store.GetLease(id, &l, &keys)) << id;
    return keys;
  }
};

TEST(StoreLeaseTest, GrantPicksTheEntrysIndexOrTheNextFreeIdAndRefusesATakenOne) {
  Leases s;
  Result r = s.Grant(0, 5000);  // Index 1.
  ASSERT_EQ(r.code, ResultCode::kOk);
  EXPECT_EQ(r.leases, (std::vector<LeaseInfo>{{1, 5000, 1}}));
  r = s.Grant(3, 4000);  // Index 2, id 3 chosen.
  EXPECT_EQ(r.leases, (std::vector<LeaseInfo>{{3, 4000, 2}}));
  r = s.Grant(0, 5000);  // Index 3: taken by the chosen id, so 4.
  EXPECT_EQ(r.leases, (std::vector<LeaseInfo>{{4, 5000, 3}}));
  r = s.Grant(3, 9000);
  EXPECT_EQ(r.code, ResultCode::kLeaseExists);
  LeaseInfo l;
  ASSERT_TRUE(s.store.GetLease(3, &l));
  EXPECT_EQ(l.ttl_ms, 4000u);  // Unchanged.
  EXPECT_EQ(s.store.lease_count(), 3u);
  EXPECT_EQ(s.store.Leases(), (std::vector<LeaseInfo>{{1, 5000, 1}, {3, 4000, 2}, {4, 5000, 3}}));
}

TEST(StoreLeaseTest, KeysFollowTheirLeaseAndARevokeDeletesThemInOneRevisionInKeyOrder) {
  Leases s;
  s.Grant(10, 5000);
  s.Grant(20, 5000);
  EXPECT_EQ(s.PutLeased("x/b", 10).code, ResultCode::kOk);
  EXPECT_EQ(s.PutLeased("x/a", 10).code, ResultCode::kOk);
  EXPECT_EQ(s.PutLeased("x/c", 20).code, ResultCode::kOk);
  EXPECT_EQ(s.PutLeased("x/d", 10).code, ResultCode::kOk);
  // A put naming a missing lease changes nothing.
  EXPECT_EQ(s.PutLeased("x/e", 30).code, ResultCode::kLeaseNotFound);
  // Moving a key to another lease, and out of any lease.
  s.PutLeased("x/c", 10);
  s.PutLeased("x/d", 0);
  EXPECT_EQ(s.KeysOf(10), (std::vector<std::string>{"x/a", "x/b", "x/c"}));
  EXPECT_TRUE(s.KeysOf(20).empty());
  // Deleting a key detaches it.
  s.Delete(DelOp(One("x/b")));
  EXPECT_EQ(s.KeysOf(10), (std::vector<std::string>{"x/a", "x/c"}));

  std::vector<Event> events;
  uint64_t rev = s.store.revision() + 1;
  Result r = s.Revoke(RevokeReason::kRevoke, {{10, 0}, {99, 0}}, &events);
  EXPECT_EQ(r.deleted, 2u);
  EXPECT_EQ(r.not_found, std::vector<uint64_t>{99});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kv.key, "x/a");
  EXPECT_EQ(events[1].kv.key, "x/c");
  for (const Event& e : events) {
    EXPECT_EQ(e.type, Event::Type::kDelete);
    EXPECT_EQ(e.cause, Event::Cause::kLeaseRevoked);
    EXPECT_EQ(e.kv.meta.mod_revision, rev);
    EXPECT_EQ(e.kv.meta.lease, 10u);
  }
  LeaseInfo l;
  EXPECT_FALSE(s.store.GetLease(10, &l));
  EXPECT_TRUE(s.store.GetLease(20, &l));
  EXPECT_EQ(s.Keys(KeyRange{"x/", "x0", true}), std::vector<std::string>{"x/d"});
}

TEST(StoreLeaseTest, AnExpiryLeavesALeaseRenewedSinceTheLeaderLooked) {
  Leases s;
  s.Grant(7, 3000);  // renewed_at 1.
  s.PutLeased("k", 7);
  Result r = s.KeepAlive({7, 8});  // Index 3.
  EXPECT_EQ(r.leases, (std::vector<LeaseInfo>{{7, 3000, 3}}));
  EXPECT_EQ(r.not_found, std::vector<uint64_t>{8});
  // The leader decided from the grant (renewed_at 1): the keepalive won.
  std::vector<Event> events;
  r = s.Revoke(RevokeReason::kExpire, {{7, 1}}, &events);
  EXPECT_EQ(r.deleted, 0u);
  EXPECT_EQ(r.not_found, std::vector<uint64_t>{7});
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(s.KeysOf(7), std::vector<std::string>{"k"});
  // An expiry from the latest renewal ends it, and says so.
  r = s.Revoke(RevokeReason::kExpire, {{7, 3}}, &events);
  EXPECT_EQ(r.deleted, 1u);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].cause, Event::Cause::kLeaseExpired);
  std::string v;
  EXPECT_FALSE(s.store.Get("k", &v));
  // A keepalive after the end finds nothing.
  r = s.KeepAlive({7});
  EXPECT_TRUE(r.leases.empty());
  EXPECT_EQ(r.not_found, std::vector<uint64_t>{7});
}

TEST(StoreLeaseTest, LeaseChangesAreReportedForTheDeadlines) {
  Store store;
  std::vector<raft::Entry> entries = {
      Entry(1, EncodeLeaseGrant({1, 1}, 5, 2000)), Entry(2, EncodeLeaseKeepAlive({1, 2}, {5, 6})),
      Entry(3, EncodeLeaseRevoke({1, 3}, RevokeReason::kExpire, {{5, 1}})),
      Entry(4, EncodeLeaseRevoke({1, 4}, RevokeReason::kExpire, {{5, 2}}))};
  std::vector<Applied> applied;
  std::vector<LeaseChange> changes;
  ApplyOptions o;
  o.lease_changes = &changes;
  ASSERT_TRUE(store.Apply(entries, &applied, o).ok());
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[0].lease, (LeaseInfo{5, 2000, 1}));
  EXPECT_FALSE(changes[0].gone);
  EXPECT_EQ(changes[1].lease, (LeaseInfo{5, 2000, 2}));
  EXPECT_FALSE(changes[1].gone);
  EXPECT_EQ(changes[2].lease, (LeaseInfo{5, 2000, 2}));  // The stale expiry did nothing.
  EXPECT_TRUE(changes[2].gone);
  EXPECT_EQ(store.lease_count(), 0u);
}

TEST(StoreLeaseTest, LeasesSurviveASnapshotAndTheHashCoversThem) {
  Leases s;
  s.Grant(0, 4000);  // Id 1.
  s.Grant(9, 8000);
  s.PutLeased("a", 1);
  s.PutLeased("b", 9);
  s.PutLeased("c", 1);
  std::string image = s.store.Snapshot();
  EXPECT_EQ(static_cast<uint8_t>(image[0]), 2);
  Leases t;
  ASSERT_TRUE(t.store.Restore(image).ok());
  EXPECT_EQ(t.store.Hash(), s.store.Hash());
  EXPECT_EQ(t.store.Leases(), s.store.Leases());
  EXPECT_EQ(t.KeysOf(1), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(t.store.Snapshot(), image);
  // The restored store still ends a lease with its keys.
  t.seq = 100;
  Result r = t.Revoke(RevokeReason::kRevoke, {{1, 0}});
  EXPECT_EQ(r.deleted, 2u);
  EXPECT_EQ(t.store.size(), 1u);
  // A renewal alone changes the hash: deadlines count from it on every node.
  uint64_t before = s.store.Hash();
  Leases u;
  ASSERT_TRUE(u.store.Restore(image).ok());
  s.KeepAlive({9});
  u.Apply(EncodePut({1, 1}, "zz", "v"));
  u.Delete(DelOp(One("zz")));
  EXPECT_NE(s.store.Hash(), before);
  // A lease without keys still makes a version 2 image; none makes version 1.
  Leases w;
  w.Grant(0, 3000);
  EXPECT_EQ(static_cast<uint8_t>(w.store.Snapshot()[0]), 2);
  w.Revoke(RevokeReason::kRevoke, {{1, 0}});
  EXPECT_EQ(static_cast<uint8_t>(w.store.Snapshot()[0]), 1);
}

}  // namespace
}  // namespace raftkv::kv
