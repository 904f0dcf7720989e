// DiskStorage: round trips through close and reopen, and every recovery case
// of docs/wal-format.md.
#include "storage/disk_storage.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "storage/format.h"
#include "storage/mem_env.h"
#include "storage/snapshot_file.h"
#include "test_util.h"

namespace raftkv::storage {
namespace {

using testing::MakeEntry;
using testing::TempDir;

constexpr uint64_t kCluster = 7;
constexpr uint64_t kNode = 2;

StorageOptions Opts(uint64_t segment_bytes = 64 << 20) {
  StorageOptions o;
  o.cluster_id = kCluster;
  o.node_id = kNode;
  o.segment_bytes = segment_bytes;
  return o;
}

std::unique_ptr<DiskStorage> MustOpen(const std::string& dir, const StorageOptions& o,
                                      RecoveryInfo* info = nullptr) {
  std::unique_ptr<DiskStorage> ds;
  Status s = DiskStorage::Open(dir, o, &ds, info);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return ds;
}

Update Entries(raft::Term term, raft::Index lo, raft::Index hi, size_t bytes = 16) {
  Update u;
  for (raft::Index i = lo; i <= hi; i++) u.entries.push_back(MakeEntry(term, i, bytes));
  return u;
}

void ExpectEntries(const DiskStorage& ds, raft::Term term, raft::Index lo, raft::Index hi,
                   size_t bytes = 16) {
  std::vector<raft::Entry> got;
  ASSERT_TRUE(ds.Entries(lo, hi + 1, UINT64_MAX, &got).ok());
  ASSERT_EQ(got.size(), hi - lo + 1);
  for (raft::Index i = lo; i <= hi; i++) EXPECT_EQ(got[i - lo], MakeEntry(term, i, bytes));
}

// A whole snapshot from the leader, as a Ready carries it.
std::shared_ptr<raft::Snapshot> LeaderSnapshot(raft::Index index, raft::Term term,
                                               std::string data) {
  auto snap = std::make_shared<raft::Snapshot>();
  snap->meta.index = index;
  snap->meta.term = term;
  snap->data = std::move(data);
  return snap;
}

std::string Segment(const TempDir& d, uint64_t seq) { return d.Sub(SegmentFileName(seq)); }

Status OpenStatus(const std::string& dir, const StorageOptions& o) {
  std::unique_ptr<DiskStorage> ds;
  return DiskStorage::Open(dir, o, &ds);
}

TEST(DiskStorageTest, EmptyDirectoryStartsANewNode) {
  TempDir d;
  RecoveryInfo info;
  auto ds = MustOpen(d.path(), Opts(), &info);
  EXPECT_TRUE(info.created);
  EXPECT_EQ(ds->FirstIndex(), 1u);
  EXPECT_EQ(ds->LastIndex(), 0u);
  EXPECT_TRUE(ds->InitialHardState().IsEmpty());
  EXPECT_TRUE(ds->LatestSnapshot().IsEmpty());
  EXPECT_TRUE(std::filesystem::exists(d.Sub("META")));
}

TEST(DiskStorageTest, MissingDirectoryIsCreated) {
  TempDir d;
  auto ds = MustOpen(d.Sub("node"), Opts());
  EXPECT_TRUE(std::filesystem::exists(d.Sub("node/META")));
}

TEST(DiskStorageTest, EmptyDirectoryIsRefusedWithoutCreateIfMissing) {
  TempDir d;
  StorageOptions o = Opts();
  o.create_if_missing = false;
  EXPECT_EQ(OpenStatus(d.path(), o).code(), raft::Code::kIoError);
}

TEST(DiskStorageTest, EntriesHardStateAndSnapshotSurviveReopen) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    Update u = Entries(1, 1, 10);
    u.hard_state = raft::HardState{1, 1, 5};
    ASSERT_TRUE(ds->Save(u).ok());
    Update u2 = Entries(2, 11, 20);
    u2.hard_state = raft::HardState{2, 3, 15};
    ASSERT_TRUE(ds->Save(u2).ok());
    raft::ConfState conf;
    conf.members = {{1, raft::MemberRole::kVoter, false, "h1"},
                    {2, raft::MemberRole::kVoter, false, "h2"}};
    ASSERT_TRUE(ds->CreateSnapshot(12, conf, "state-at-12").ok());
  }
  RecoveryInfo info;
  auto ds = MustOpen(d.path(), Opts(), &info);
  EXPECT_FALSE(info.created);
  EXPECT_EQ(ds->InitialHardState(), (raft::HardState{2, 3, 15}));
  EXPECT_EQ(ds->LatestSnapshot().meta.index, 12u);
  EXPECT_EQ(ds->LatestSnapshot().meta.term, 2u);
  EXPECT_EQ(ds->LatestSnapshot().meta.conf.members.size(), 2u);
  EXPECT_EQ(ds->LatestSnapshot().meta.conf.members[1].context, "h2");
  EXPECT_EQ(ds->LatestSnapshot().data, "state-at-12");
  EXPECT_EQ(ds->FirstIndex(), 13u);
  EXPECT_EQ(ds->LastIndex(), 20u);
  ExpectEntries(*ds, 2, 13, 20);
  raft::Term t = 0;
  ASSERT_TRUE(ds->TermAt(12, &t).ok());
  EXPECT_EQ(t, 2u);
}

TEST(DiskStorageTest, ReopenedLogContinuesAndReopensAgain) {
  TempDir d;
  for (int round = 0; round < 3; round++) {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_EQ(ds->LastIndex(), static_cast<raft::Index>(round * 5));
    ASSERT_TRUE(ds->Save(Entries(1, round * 5 + 1, round * 5 + 5)).ok());
  }
  auto ds = MustOpen(d.path(), Opts());
  ExpectEntries(*ds, 1, 1, 15);
}

// A new leader overwrote a suffix: the new entries are written after the old
// ones, and replay truncates at the first overwritten index.
TEST(DiskStorageTest, OverwrittenSuffixIsTruncatedOnReplay) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_TRUE(ds->Save(Entries(1, 1, 10)).ok());
    ASSERT_TRUE(ds->Save(Entries(2, 6, 8)).ok());
    EXPECT_EQ(ds->LastIndex(), 8u);
  }
  auto ds = MustOpen(d.path(), Opts());
  EXPECT_EQ(ds->LastIndex(), 8u);
  ExpectEntries(*ds, 1, 1, 5);
  ExpectEntries(*ds, 2, 6, 8);
}

TEST(DiskStorageTest, SnapshotFromLeaderReplacesTheLog) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_TRUE(ds->Save(Entries(1, 1, 10)).ok());
    Update u = Entries(3, 51, 52);
    u.snapshot = LeaderSnapshot(50, 3, "leader-state");
    u.hard_state = raft::HardState{3, 0, 50};
    ASSERT_TRUE(ds->Save(u).ok());
    EXPECT_EQ(ds->FirstIndex(), 51u);
  }
  auto ds = MustOpen(d.path(), Opts());
  EXPECT_EQ(ds->LatestSnapshot().meta.index, 50u);
  EXPECT_EQ(ds->LatestSnapshot().data, "leader-state");
  EXPECT_EQ(ds->FirstIndex(), 51u);
  EXPECT_EQ(ds->LastIndex(), 52u);
  ExpectEntries(*ds, 3, 51, 52);
  EXPECT_EQ(ds->InitialHardState().commit, 50u);
}

TEST(DiskStorageTest, SnapshotMarkerWithoutItsSnapshotFileIsCorruption) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    Update u;
    auto snap = std::make_shared<raft::Snapshot>();
    snap->meta.index = 50;
    snap->meta.term = 3;
    u.snapshot = snap;
    ASSERT_TRUE(ds->Save(u).ok());
  }
  std::filesystem::remove(d.Sub(SnapshotFileName(50)));
  Status s = OpenStatus(d.path(), Opts());
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("snapshot marker for index 50"), std::string::npos) << s.ToString();
}

// A crash after a leader's snapshot file was renamed into place but before
// its marker record was durable: the log the snapshot replaced is dropped if
// it disagrees with the snapshot at the snapshot's index, kept if it agrees.
TEST(DiskStorageTest, SnapshotFileWithoutItsMarkerDropsAConflictingLog) {
  for (raft::Term snap_term : {raft::Term{1}, raft::Term{2}}) {
    SCOPED_TRACE("snapshot term " + std::to_string(snap_term));
    TempDir d;
    {
      auto ds = MustOpen(d.path(), Opts());
      ASSERT_TRUE(ds->Save(Entries(1, 1, 10)).ok());
    }
    raft::Snapshot snap;
    snap.meta.index = 8;
    snap.meta.term = snap_term;
    snap.data = "leader";
    ASSERT_TRUE(WriteSnapshotFile(DefaultEnv(), d.path(), kCluster, kNode, snap, true).ok());
    RecoveryInfo info;
    auto ds = MustOpen(d.path(), Opts(), &info);
    EXPECT_EQ(ds->FirstIndex(), 9u);
    EXPECT_EQ(ds->LatestSnapshot().data, "leader");
    if (snap_term == 1) {
      EXPECT_EQ(ds->LastIndex(), 10u);
      EXPECT_EQ(info.entries_dropped_by_snapshot, 0u);
    } else {
      EXPECT_EQ(ds->LastIndex(), 8u);
      EXPECT_EQ(info.entries_dropped_by_snapshot, 2u);
      EXPECT_NE(info.ToString().find("dropped 2 entries"), std::string::npos) << info.ToString();
    }
  }
}

// A snapshot file at `index` (term `term`) written behind the WAL's back, as
// a crash between the file's rename and the WAL's marker leaves it, over a
// log of 1..log_last (term 1; none if 0). The entries appended after the
// snapshot must replay on the next open although no marker bridges the gap.
void CheckEntriesReplayAfterALostMarker(const std::string& dir, raft::Index log_last,
                                        raft::Index index, raft::Term term) {
  {
    auto ds = MustOpen(dir, Opts());
    if (log_last > 0) {
      ASSERT_TRUE(ds->Save(Entries(1, 1, log_last)).ok());
    }
  }
  raft::Snapshot snap;
  snap.meta.index = index;
  snap.meta.term = term;
  snap.data = "leader";
  ASSERT_TRUE(WriteSnapshotFile(DefaultEnv(), dir, kCluster, kNode, snap, true).ok());
  {
    auto ds = MustOpen(dir, Opts());
    EXPECT_EQ(ds->FirstIndex(), index + 1);
    EXPECT_EQ(ds->LastIndex(), index);
    ASSERT_TRUE(ds->Save(Entries(term, index + 1, index + 3)).ok());
  }
  auto ds = MustOpen(dir, Opts());
  EXPECT_EQ(ds->LatestSnapshot().meta.index, index);
  EXPECT_EQ(ds->FirstIndex(), index + 1);
  EXPECT_EQ(ds->LastIndex(), index + 3);
  ExpectEntries(*ds, term, index + 1, index + 3);
}

// The same crash, with the snapshot ahead of the whole log (found by the
// simulator, seed 4097 with --disk=wal).
TEST(DiskStorageTest, EntriesAfterASnapshotWhoseMarkerWasLostReplay) {
  TempDir d;
  ASSERT_NO_FATAL_FAILURE(CheckEntriesReplayAfterALostMarker(d.path(), 10, 15, 2));
}

// The same on a node whose first segment holds no entry yet (a new member
// catching up by snapshot): the entries after the snapshot are the first in
// segment 1, and replay although the log does not start at index 1 (found by
// the simulator, seed 300360 with --disk=wal).
TEST(DiskStorageTest, FirstEntriesAfterASnapshotWhoseMarkerWasLostReplay) {
  TempDir d;
  ASSERT_NO_FATAL_FAILURE(CheckEntriesReplayAfterALostMarker(d.path(), 0, 28, 4));
  // Without the snapshot file nothing covers 1..28: corruption.
  ASSERT_TRUE(DefaultEnv()->RemoveFile(d.path() + "/" + SnapshotFileName(28)).ok());
  std::unique_ptr<DiskStorage> ds;
  Status s = DiskStorage::Open(d.path(), Opts(), &ds);
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("entries 1..28 are missing"), std::string::npos) << s.ToString();
}

// The same crash after an older snapshot's marker with no entry behind it: the
// WAL holds the marker of 5, then, once the snapshot file of 15 was durable and
// its marker torn off, the entries after 15 (found by the simulator, seed
// 500111 with --disk=wal: the first open after the crash, with no entry yet,
// succeeded; the next one, after entries had followed, refused the gap).
TEST(DiskStorageTest, EntriesAfterASnapshotWhoseMarkerWasLostReplayAfterAnOlderMarker) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_TRUE(ds->Save(Entries(1, 1, 5)).ok());
    Update u;
    auto snap = std::make_shared<raft::Snapshot>();
    snap->meta.index = 5;
    snap->meta.term = 1;
    snap->data = "older";
    u.snapshot = snap;
    ASSERT_TRUE(ds->Save(u).ok());
  }
  ASSERT_NO_FATAL_FAILURE(CheckEntriesReplayAfterALostMarker(d.path(), 0, 15, 2));
}

TEST(DiskStorageTest, UpdateFromReadyTakesWhatMustBePersisted) {
  raft::Ready rd;
  rd.hard_state = raft::HardState{3, 1, 7};
  rd.entries = {MakeEntry(3, 8), MakeEntry(3, 9)};
  rd.snapshot = raft::Snapshot{};
  rd.snapshot_chunks = {raft::SnapshotChunk{raft::SnapshotMeta{}, 0, "chunk", false}};
  rd.committed_entries = {MakeEntry(3, 7)};
  Update u = Update::FromReady(rd);
  EXPECT_EQ(u.hard_state, rd.hard_state);
  EXPECT_EQ(u.entries, rd.entries);
  EXPECT_EQ(u.snapshot_chunks, rd.snapshot_chunks);
  ASSERT_TRUE(u.snapshot);
}

// The last record is cut at every byte offset: recovery keeps everything
// before it, reports the cut, and the log continues from there.
TEST(DiskStorageTest, TornTailIsCutAtEveryByteOffsetOfTheLastRecord) {
  TempDir d;
  const std::string pristine = d.Sub("pristine");
  {
    auto ds = MustOpen(pristine, Opts());
    for (raft::Index i = 1; i <= 20; i++) ASSERT_TRUE(ds->Save(Entries(1, i, i, 50)).ok());
  }
  std::string seg = testing::ReadAll(pristine + "/" + SegmentFileName(1));
  std::string last_record;
  AppendEntryRecord(MakeEntry(1, 20, 50), &last_record);
  ASSERT_GE(seg.size(), last_record.size());
  const size_t start = seg.size() - last_record.size();
  ASSERT_EQ(seg.substr(start), last_record);
  const std::string work = d.Sub("work");
  for (size_t cut = start; cut < seg.size(); cut++) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    testing::CopyDir(pristine, work);
    std::filesystem::resize_file(work + "/" + SegmentFileName(1), cut);
    RecoveryInfo info;
    {
      auto ds = MustOpen(work, Opts(), &info);
      ASSERT_TRUE(ds);
      EXPECT_EQ(ds->LastIndex(), 19u);
      EXPECT_EQ(info.wal.torn_tail_cut, cut > start);
      if (cut > start) {
        EXPECT_EQ(info.wal.torn_offset, start);
        EXPECT_EQ(info.wal.torn_bytes, cut - start);
      }
      EXPECT_EQ(std::filesystem::file_size(work + "/" + SegmentFileName(1)), start);
      ASSERT_TRUE(ds->Save(Entries(2, 20, 20, 50)).ok());
    }
    auto ds = MustOpen(work, Opts());
    ASSERT_TRUE(ds);
    ExpectEntries(*ds, 1, 1, 19, 50);
    ExpectEntries(*ds, 2, 20, 20, 50);
  }
}

TEST(DiskStorageTest, ZeroFilledTailIsCut) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_TRUE(ds->Save(Entries(1, 1, 5)).ok());
  }
  std::string seg = testing::ReadAll(Segment(d, 1));
  testing::WriteAll(Segment(d, 1), seg + std::string(4096, '\0'));
  RecoveryInfo info;
  auto ds = MustOpen(d.path(), Opts(), &info);
  EXPECT_TRUE(info.wal.torn_tail_cut);
  ExpectEntries(*ds, 1, 1, 5);
}

Status FlipBitAndOpen(const TempDir& d, const std::string& file, size_t offset) {
  std::string data = testing::ReadAll(file);
  data[offset] = static_cast<char>(data[offset] ^ 0x10);
  testing::WriteAll(file, data);
  return OpenStatus(d.path(), Opts());
}

TEST(DiskStorageTest, FlippedBitInTheMiddleIsCorruption) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    for (raft::Index i = 1; i <= 20; i++) ASSERT_TRUE(ds->Save(Entries(1, i, i, 50)).ok());
  }
  size_t size = std::filesystem::file_size(Segment(d, 1));
  Status s = FlipBitAndOpen(d, Segment(d, 1), size / 2);
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find(SegmentFileName(1)), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("at offset "), std::string::npos) << s.ToString();
}

TEST(DiskStorageTest, FlippedBitInACompleteLastRecordIsCorruptionNotATornTail) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_TRUE(ds->Save(Entries(1, 1, 5, 50)).ok());
  }
  size_t size = std::filesystem::file_size(Segment(d, 1));
  Status s = FlipBitAndOpen(d, Segment(d, 1), size - 3);
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
}

TEST(DiskStorageTest, FlippedBitInARecordLengthIsCorruption) {
  TempDir d;
  std::string rec;
  AppendEntryRecord(MakeEntry(1, 5, 50), &rec);
  {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_TRUE(ds->Save(Entries(1, 1, 5, 50)).ok());
  }
  // The length field of the last record: a larger length would point past the
  // end of the file, which must not pass for a torn tail.
  size_t size = std::filesystem::file_size(Segment(d, 1));
  std::string data = testing::ReadAll(Segment(d, 1));
  data[size - rec.size() + 10] = static_cast<char>(data[size - rec.size() + 10] ^ 0x01);
  testing::WriteAll(Segment(d, 1), data);
  Status s = OpenStatus(d.path(), Opts());
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("offset " + std::to_string(size - rec.size())), std::string::npos)
      << s.ToString();
}

// Makes a WAL of several segments (about 20 entries of 200 bytes each).
void WriteSegments(const TempDir& d, raft::Index n) {
  auto ds = MustOpen(d.path(), Opts(4096));
  for (raft::Index i = 1; i <= n; i++) {
    Update u = Entries(1, i, i, 200);
    u.hard_state = raft::HardState{1, 1, i};
    ASSERT_TRUE(ds->Save(u).ok());
  }
  ASSERT_GE(ds->wal()->SegmentSeqs().size(), 4u);
}

TEST(DiskStorageTest, MissingMiddleSegmentIsCorruption) {
  TempDir d;
  WriteSegments(d, 100);
  std::filesystem::remove(Segment(d, 2));
  Status s = OpenStatus(d.path(), Opts(4096));
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find(SegmentFileName(2)), std::string::npos) << s.ToString();
}

TEST(DiskStorageTest, MissingFirstSegmentIsCorruption) {
  TempDir d;
  WriteSegments(d, 100);
  std::filesystem::remove(Segment(d, 1));
  Status s = OpenStatus(d.path(), Opts(4096));
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("missing"), std::string::npos) << s.ToString();
}

TEST(DiskStorageTest, MissingLastSegmentIsCorruption) {
  TempDir d;
  WriteSegments(d, 100);
  auto segs = testing::FilesWithPrefix(d.path(), "wal-");
  std::filesystem::remove(d.Sub(segs.back()));
  // The segment before it is sealed and names it.
  Status s = OpenStatus(d.path(), Opts(4096));
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
}

TEST(DiskStorageTest, TornRecordInASegmentThatIsNotTheLastIsCorruption) {
  TempDir d;
  WriteSegments(d, 100);
  std::filesystem::resize_file(Segment(d, 1), std::filesystem::file_size(Segment(d, 1)) - 5);
  Status s = OpenStatus(d.path(), Opts(4096));
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find(SegmentFileName(1)), std::string::npos) << s.ToString();
}

TEST(DiskStorageTest, SegmentsRotateAndCompactionDeletesOldOnes) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts(4096));
    for (raft::Index i = 1; i <= 100; i++) {
      Update u = Entries(1, i, i, 200);
      u.hard_state = raft::HardState{1, 1, i};
      ASSERT_TRUE(ds->Save(u).ok());
    }
    size_t before = testing::FilesWithPrefix(d.path(), "wal-").size();
    ASSERT_GE(before, 4u);
    ASSERT_TRUE(ds->CreateSnapshot(80, {}, "state-80").ok());
    ASSERT_TRUE(ds->Compact(80).ok());
    EXPECT_EQ(ds->FirstIndex(), 81u);
    size_t after = testing::FilesWithPrefix(d.path(), "wal-").size();
    EXPECT_LT(after, before);
    EXPECT_EQ(ds->wal_stats().segments_removed, before - after);
    // Every segment left but the oldest holds an entry past 80; the oldest
    // holds entries up to at least 81.
    EXPECT_EQ(ds->wal()->SegmentSeqs().size(), after);
  }
  RecoveryInfo info;
  auto ds = MustOpen(d.path(), Opts(4096), &info);
  EXPECT_GT(info.wal.first_seq, 1u);
  EXPECT_EQ(ds->FirstIndex(), 81u);
  EXPECT_EQ(ds->LastIndex(), 100u);
  ExpectEntries(*ds, 1, 81, 100, 200);
  EXPECT_EQ(ds->InitialHardState().commit, 100u);
  EXPECT_EQ(ds->LatestSnapshot().data, "state-80");
}

TEST(DiskStorageTest, HardStateSurvivesDeletionOfTheSegmentThatWroteIt) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts(4096));
    Update u = Entries(1, 1, 1, 200);
    u.hard_state = raft::HardState{4, 2, 1};
    ASSERT_TRUE(ds->Save(u).ok());
    for (raft::Index i = 2; i <= 100; i++) ASSERT_TRUE(ds->Save(Entries(1, i, i, 200)).ok());
    ASSERT_TRUE(ds->CreateSnapshot(90, {}, "s").ok());
    ASSERT_TRUE(ds->Compact(90).ok());
    ASSERT_FALSE(std::filesystem::exists(Segment(d, 1)));
  }
  auto ds = MustOpen(d.path(), Opts(4096));
  EXPECT_EQ(ds->InitialHardState(), (raft::HardState{4, 2, 1}));
}

TEST(DiskStorageTest, TruncatedSnapshotIsCorruption) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_TRUE(ds->Save(Entries(1, 1, 10)).ok());
    ASSERT_TRUE(ds->CreateSnapshot(8, {}, std::string(1000, 's')).ok());
  }
  std::string snap = d.Sub(SnapshotFileName(8));
  for (uint64_t size :
       {uint64_t{0}, uint64_t{10}, uint64_t{200}, std::filesystem::file_size(snap) - 1}) {
    std::filesystem::resize_file(snap, size);
    Status s = OpenStatus(d.path(), Opts());
    EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
    EXPECT_NE(s.message().find(SnapshotFileName(8)), std::string::npos) << s.ToString();
  }
}

TEST(DiskStorageTest, FlippedBitInSnapshotDataIsCorruption) {
  TempDir d;
  {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_TRUE(ds->Save(Entries(1, 1, 10)).ok());
    ASSERT_TRUE(ds->CreateSnapshot(8, {}, std::string(1000, 's')).ok());
  }
  Status s = FlipBitAndOpen(d, d.Sub(SnapshotFileName(8)), 500);
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.ToString();
}

TEST(DiskStorageTest, NewSnapshotReplacesThePreviousOneOnlyWhenComplete) {
  TempDir d;
  auto ds = MustOpen(d.path(), Opts());
  ASSERT_TRUE(ds->Save(Entries(1, 1, 10)).ok());
  ASSERT_TRUE(ds->CreateSnapshot(4, {}, "four").ok());
  ASSERT_TRUE(ds->CreateSnapshot(8, {}, "eight").ok());
  EXPECT_EQ(testing::FilesWithPrefix(d.path(), "snap-"),
            std::vector<std::string>{SnapshotFileName(8)});
  // A snapshot write interrupted by a crash leaves a .tmp file, which Open removes.
  testing::WriteAll(d.Sub(SnapshotFileName(9) + ".tmp"), "half");
  ds.reset();
  ds = MustOpen(d.path(), Opts());
  EXPECT_EQ(ds->LatestSnapshot().data, "eight");
  EXPECT_FALSE(std::filesystem::exists(d.Sub(SnapshotFileName(9) + ".tmp")));
}

TEST(DiskStorageTest, DirectoryOfAnotherClusterIsRefused) {
  TempDir d;
  MustOpen(d.path(), Opts());
  StorageOptions o = Opts();
  o.cluster_id = kCluster + 1;
  Status s = OpenStatus(d.path(), o);
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("belongs to cluster 7 node 2"), std::string::npos) << s.ToString();
}

TEST(DiskStorageTest, DirectoryOfAnotherNodeIsRefused) {
  TempDir d;
  MustOpen(d.path(), Opts());
  StorageOptions o = Opts();
  o.node_id = kNode + 1;
  Status s = OpenStatus(d.path(), o);
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
}

TEST(DiskStorageTest, DirectoryWithoutMetaIsRefused) {
  TempDir d;
  testing::WriteAll(d.Sub("something-else"), "x");
  Status s = OpenStatus(d.path(), Opts());
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("META"), std::string::npos) << s.ToString();
}

TEST(DiskStorageTest, CorruptMetaIsRefused) {
  TempDir d;
  MustOpen(d.path(), Opts());
  Status s = FlipBitAndOpen(d, d.Sub("META"), 25);
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
}

TEST(DiskStorageTest, SegmentOfAnotherNodeIsCorruption) {
  TempDir d;
  TempDir other;
  {
    auto ds = MustOpen(d.path(), Opts());
    ASSERT_TRUE(ds->Save(Entries(1, 1, 3)).ok());
    StorageOptions o = Opts();
    o.node_id = 9;
    auto ds2 = MustOpen(other.path(), o);
    ASSERT_TRUE(ds2->Save(Entries(1, 1, 3)).ok());
  }
  std::filesystem::copy_file(other.Sub(SegmentFileName(1)), Segment(d, 1),
                             std::filesystem::copy_options::overwrite_existing);
  Status s = OpenStatus(d.path(), Opts());
  EXPECT_EQ(s.code(), raft::Code::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("node 9"), std::string::npos) << s.ToString();
}

// SubmitSnapshot's work, waited for on the test's (driver) thread.
Status WaitSubmitted(DiskStorage* ds, raft::Index index, std::string data, raft::Index compact_to) {
  std::promise<Status> p;
  std::future<Status> f = p.get_future();
  Status s = ds->SubmitSnapshot(index, {}, std::move(data), compact_to,
                                [&p](const Status& st) { p.set_value(st); });
  if (!s.ok()) return s;
  return f.get();
}

TEST(DiskStorageTest, SubmittedSnapshotChangesNothingInMemoryUntilApplied) {
  TempDir d;
  auto ds = MustOpen(d.path(), Opts(4096));
  for (raft::Index i = 1; i <= 100; i++) ASSERT_TRUE(ds->Save(Entries(1, i, i, 200)).ok());
  size_t before = testing::FilesWithPrefix(d.path(), "wal-").size();
  ASSERT_TRUE(WaitSubmitted(ds.get(), 80, "state-80", 70).ok());
  // On disk already: the file, and fewer segments.
  EXPECT_TRUE(std::filesystem::exists(d.Sub(SnapshotFileName(80))));
  EXPECT_LT(testing::FilesWithPrefix(d.path(), "wal-").size(), before);
  // In memory only once applied (the driver thread's step).
  EXPECT_EQ(ds->LatestSnapshot().meta.index, 0u);
  EXPECT_EQ(ds->FirstIndex(), 1u);
  EXPECT_TRUE(ds->ApplySnapshotWritten());
  EXPECT_EQ(ds->LatestSnapshot().meta.index, 80u);
  EXPECT_EQ(ds->LatestSnapshot().meta.term, 1u);
  EXPECT_EQ(ds->FirstIndex(), 71u);
  // Readies go on meanwhile and after.
  ASSERT_TRUE(ds->Save(Entries(1, 101, 101, 200)).ok());
  ds.reset();
  auto re = MustOpen(d.path(), Opts(4096));
  EXPECT_EQ(re->LatestSnapshot().data, "state-80");
  EXPECT_EQ(re->LastIndex(), 101u);
  ExpectEntries(*re, 1, 81, 101, 200);
}

// A snapshot from the leader stored while a local one is written wins, in
// memory and on disk, whichever file was written last.
TEST(DiskStorageTest, LeaderSnapshotAppliedMeanwhileSupersedesTheLocalOne) {
  TempDir d;
  auto ds = MustOpen(d.path(), Opts());
  ASSERT_TRUE(ds->Save(Entries(1, 1, 10)).ok());
  std::promise<Status> p;
  std::future<Status> f = p.get_future();
  ASSERT_TRUE(
      ds->SubmitSnapshot(8, {}, "local-8", 8, [&p](const Status& st) { p.set_value(st); }).ok());
  Update u = Entries(3, 51, 52);
  u.snapshot = LeaderSnapshot(50, 3, "leader-50");
  ASSERT_TRUE(ds->Save(u).ok());
  ASSERT_TRUE(f.get().ok());
  EXPECT_FALSE(ds->ApplySnapshotWritten()) << "the older local snapshot replaced the leader's";
  EXPECT_EQ(ds->LatestSnapshot().data, "leader-50");
  EXPECT_EQ(ds->FirstIndex(), 51u);
  ds.reset();
  auto re = MustOpen(d.path(), Opts());
  EXPECT_EQ(re->LatestSnapshot().data, "leader-50");
  ExpectEntries(*re, 3, 51, 52);
}

// A failed snapshot write leaves the storage as it was and healthy; the
// next attempt succeeds.
TEST(DiskStorageTest, FailedSnapshotWriteLeavesTheStorageHealthy) {
  TempDir d;
  testing::FaultEnv env;
  StorageOptions o = Opts(4096);
  o.env = &env;
  auto ds = MustOpen(d.path(), o);
  for (raft::Index i = 1; i <= 50; i++) ASSERT_TRUE(ds->Save(Entries(1, i, i, 200)).ok());
  size_t segments = testing::FilesWithPrefix(d.path(), "wal-").size();
  env.faults.fail_next_syncs = 1;  // The snapshot file's fsync.
  Status s = WaitSubmitted(ds.get(), 40, "state-40", 30);
  EXPECT_EQ(s.code(), raft::Code::kIoError) << s.ToString();
  ds->AbandonSnapshot();
  EXPECT_TRUE(ds->health().ok());
  EXPECT_EQ(testing::FilesWithPrefix(d.path(), "wal-").size(), segments);
  EXPECT_EQ(ds->LatestSnapshot().meta.index, 0u);
  ASSERT_TRUE(ds->Save(Entries(1, 51, 51, 200)).ok());
  ASSERT_TRUE(WaitSubmitted(ds.get(), 40, "state-40", 30).ok());
  EXPECT_TRUE(ds->ApplySnapshotWritten());
  EXPECT_EQ(ds->FirstIndex(), 31u);
}

// Power lost at each fsync of a snapshot with compaction (the file's, the
// directory's after its rename, then one per deleted segment): the node
// recovers every entry, from the old snapshot or the new one.
TEST(DiskStorageTest, CrashAtAnyFsyncOfASnapshotRecovers) {
  for (uint64_t crash_at = 1; crash_at <= 6; crash_at++) {
    SCOPED_TRACE("crash at fsync " + std::to_string(crash_at));
    MemEnv env;
    StorageOptions o = Opts(4096);
    o.env = &env;
    {
      auto ds = MustOpen("/data", o);
      for (raft::Index i = 1; i <= 100; i++) ASSERT_TRUE(ds->Save(Entries(1, i, i, 200)).ok());
      env.ArmCrashAtSync(crash_at);
      Status s = WaitSubmitted(ds.get(), 80, "state-80", 75);
      if (s.ok()) {
        EXPECT_FALSE(env.frozen());
        ds->ApplySnapshotWritten();
      } else {
        EXPECT_TRUE(env.frozen()) << s.ToString();
        ds->AbandonSnapshot();
      }
    }
    raft::Rng rng(crash_at);
    env.Crash(&rng);
    auto ds = MustOpen("/data", o);
    raft::Index snap = ds->LatestSnapshot().meta.index;
    EXPECT_TRUE(snap == 0 || snap == 80) << snap;
    EXPECT_EQ(ds->LastIndex(), 100u);
    ExpectEntries(*ds, 1, std::max<raft::Index>(ds->FirstIndex(), 1), 100, 200);
    EXPECT_LE(ds->FirstIndex(), snap + 1);
  }
}

}  // namespace
}  // namespace raftkv::storage
