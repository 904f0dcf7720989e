#include "storage/format.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace raftkv::storage {
namespace {

std::string OneEntryRecord() {
  std::string out;
  AppendEntryRecord(testing::MakeEntry(3, 7, 40), &out);
  return out;
}

TEST(FormatTest, EntryRecordRoundTrips) {
  std::string rec = OneEntryRecord();
  ParsedRecord p;
  std::string why;
  ASSERT_EQ(ParseRecord(rec, 0, 1 << 20, &p, &why), ParseResult::kOk) << why;
  EXPECT_EQ(p.type, RecordType::kEntry);
  EXPECT_EQ(p.size, rec.size());
  raft::Entry e;
  ASSERT_TRUE(DecodeEntry(p.payload, &e));
  EXPECT_EQ(e, testing::MakeEntry(3, 7, 40));
}

TEST(FormatTest, HardStateMarkerMetaAndSegmentHeaderRoundTrip) {
  std::string buf;
  AppendHardStateRecord(raft::HardState{5, 2, 9}, &buf);
  AppendSnapshotMarkerRecord(40, 4, &buf);
  AppendMetaRecord(MetaRecord{11, 3}, &buf);
  AppendSegmentHeaderRecord(SegmentHeader{11, 3, 42}, &buf);
  ParsedRecord p;
  std::string why;
  size_t off = 0;
  ASSERT_EQ(ParseRecord(buf, off, 1 << 20, &p, &why), ParseResult::kOk);
  raft::HardState hs;
  ASSERT_TRUE(DecodeHardState(p.payload, &hs));
  EXPECT_EQ(hs, (raft::HardState{5, 2, 9}));
  off += p.size;
  ASSERT_EQ(ParseRecord(buf, off, 1 << 20, &p, &why), ParseResult::kOk);
  raft::Index i = 0;
  raft::Term t = 0;
  ASSERT_TRUE(DecodeSnapshotMarker(p.payload, &i, &t));
  EXPECT_EQ(i, 40u);
  EXPECT_EQ(t, 4u);
  off += p.size;
  ASSERT_EQ(ParseRecord(buf, off, 1 << 20, &p, &why), ParseResult::kOk);
  MetaRecord m;
  ASSERT_TRUE(DecodeMeta(p.payload, &m));
  EXPECT_EQ(m.cluster_id, 11u);
  EXPECT_EQ(m.node_id, 3u);
  off += p.size;
  ASSERT_EQ(ParseRecord(buf, off, 1 << 20, &p, &why), ParseResult::kOk);
  SegmentHeader h;
  ASSERT_TRUE(DecodeSegmentHeader(p.payload, &h));
  EXPECT_EQ(h.seq, 42u);
  EXPECT_EQ(off + p.size, buf.size());
}

TEST(FormatTest, SnapshotHeaderRoundTripsConfState) {
  SnapshotHeader h;
  h.cluster_id = 1;
  h.node_id = 2;
  h.meta.index = 100;
  h.meta.term = 7;
  h.meta.conf.members = {{1, raft::MemberRole::kVoter, false, "a:1"},
                         {4, raft::MemberRole::kLearner, true, "b:2"}};
  h.data_bytes = 12345;
  std::string buf;
  AppendSnapshotHeaderRecord(h, &buf);
  ParsedRecord p;
  std::string why;
  ASSERT_EQ(ParseRecord(buf, 0, 1 << 20, &p, &why), ParseResult::kOk);
  SnapshotHeader got;
  ASSERT_TRUE(DecodeSnapshotHeader(p.payload, &got));
  EXPECT_EQ(got.meta, h.meta);
  EXPECT_EQ(got.data_bytes, 12345u);
}

TEST(FormatTest, EveryPrefixOfARecordIsTorn) {
  std::string rec = OneEntryRecord();
  for (size_t n = 1; n < rec.size(); n++) {
    ParsedRecord p;
    std::string why;
    EXPECT_EQ(ParseRecord(rec.substr(0, n), 0, 1 << 20, &p, &why), ParseResult::kTorn) << n;
  }
}

TEST(FormatTest, ZeroFilledTailIsTorn) {
  std::string zeros(100, '\0');
  ParsedRecord p;
  std::string why;
  EXPECT_EQ(ParseRecord(zeros, 0, 1 << 20, &p, &why), ParseResult::kTorn);
}

TEST(FormatTest, EveryFlippedBitOfACompleteRecordIsCorruption) {
  std::string rec = OneEntryRecord();
  for (size_t bit = 0; bit < rec.size() * 8; bit++) {
    std::string bad = rec;
    bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    ParsedRecord p;
    std::string why;
    ParseResult r = ParseRecord(bad, 0, 1 << 20, &p, &why);
    EXPECT_EQ(r, ParseResult::kCorrupt) << "bit " << bit;
  }
}

TEST(FormatTest, LengthOverTheLimitIsCorruption) {
  std::string rec = OneEntryRecord();
  ParsedRecord p;
  std::string why;
  EXPECT_EQ(ParseRecord(rec, 0, 10, &p, &why), ParseResult::kCorrupt);
  EXPECT_NE(why.find("over the limit"), std::string::npos) << why;
}

TEST(FormatTest, FileNamesRoundTrip) {
  uint64_t v = 0;
  EXPECT_EQ(SegmentFileName(26), "wal-000000000000001a.log");
  EXPECT_TRUE(ParseSegmentFileName(SegmentFileName(26), &v));
  EXPECT_EQ(v, 26u);
  EXPECT_TRUE(ParseSnapshotFileName(SnapshotFileName(1000), &v));
  EXPECT_EQ(v, 1000u);
  EXPECT_FALSE(ParseSegmentFileName("wal-000000000000001A.log", &v));
  EXPECT_FALSE(ParseSegmentFileName("wal-1.log", &v));
  EXPECT_FALSE(ParseSnapshotFileName("snap-0000000000000001.snap.tmp", &v));
}

}  // namespace
}  // namespace raftkv::storage
