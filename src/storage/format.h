// The record framing and payload encodings of docs/wal-format.md.
//
// Pure functions on bytes; no I/O, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "raft/types.h"

namespace raftkv::storage {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kRecordHeaderBytes = 20;
// Trailer magic of a snapshot file: the bytes "RTKVSNAP" on disk (little-endian).
inline constexpr uint64_t kSnapshotMagic = 0x50414e53564b5452ULL;

enum class RecordType : uint8_t {
  kSegmentHeader = 1,
  kEntry = 2,
  kHardState = 3,
  kSnapshotMarker = 4,
  kMeta = 5,
  kSnapshotHeader = 6,
  kSegmentEnd = 7,
};

// Fixed-size little-endian integers.
void PutU8(std::string* out, uint8_t v);
void PutU32(std::string* out, uint32_t v);
void PutU64(std::string* out, uint64_t v);
uint32_t LoadU32(const char* p);
uint64_t LoadU64(const char* p);

// Reads fixed-size integers from a payload, failing (returning false) instead
// of reading past its end.
class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  bool U8(uint8_t* v);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  bool Bytes(size_t n, std::string_view* v);
  std::string_view Rest() const { return in_; }
  bool Done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

// Building a record in place: BeginRecord reserves the header, the caller
// appends the payload to *out, FinishRecord fills in the header.
size_t BeginRecord(std::string* out);
void FinishRecord(RecordType type, size_t begin, std::string* out);
void AppendRecord(RecordType type, std::string_view payload, std::string* out);

enum class ParseResult { kOk, kTorn, kCorrupt };

struct ParsedRecord {
  RecordType type = RecordType::kEntry;
  std::string_view payload;
  size_t size = 0;  // Header plus payload.
};

// Parses the record starting at data[offset] (offset < data.size()). kTorn is
// a record that the crash of a write can leave (docs/wal-format.md, "Torn
// tail and corruption"); kCorrupt is anything else that is wrong, with the
// reason in *why.
ParseResult ParseRecord(std::string_view data, size_t offset, uint64_t max_record_bytes,
                        ParsedRecord* rec, std::string* why);

// Payloads.
struct SegmentHeader {
  uint64_t cluster_id = 0;
  uint64_t node_id = 0;
  uint64_t seq = 0;
};
struct MetaRecord {
  uint64_t cluster_id = 0;
  uint64_t node_id = 0;
};
struct SnapshotHeader {
  uint64_t cluster_id = 0;
  uint64_t node_id = 0;
  raft::SnapshotMeta meta;
  uint64_t data_bytes = 0;  // kStreamedDataBytes: the data runs to the trailer.
};
// data_bytes of a snapshot received from the leader in chunks, whose length
// was not known when its header was written (docs/wal-format.md).
inline constexpr uint64_t kStreamedDataBytes = ~0ULL;

void AppendEntryRecord(const raft::Entry& e, std::string* out);
void AppendHardStateRecord(const raft::HardState& hs, std::string* out);
void AppendSnapshotMarkerRecord(raft::Index index, raft::Term term, std::string* out);
void AppendSegmentHeaderRecord(const SegmentHeader& h, std::string* out);
void AppendMetaRecord(const MetaRecord& m, std::string* out);
void AppendSnapshotHeaderRecord(const SnapshotHeader& h, std::string* out);
void AppendSegmentEndRecord(uint64_t next_seq, std::string* out);

bool DecodeEntry(std::string_view payload, raft::Entry* e);
// Only the index of an entry payload, without copying its data.
bool DecodeEntryIndex(std::string_view payload, raft::Index* index);
bool DecodeHardState(std::string_view payload, raft::HardState* hs);
bool DecodeSnapshotMarker(std::string_view payload, raft::Index* index, raft::Term* term);
bool DecodeSegmentHeader(std::string_view payload, SegmentHeader* h);
bool DecodeMeta(std::string_view payload, MetaRecord* m);
bool DecodeSnapshotHeader(std::string_view payload, SnapshotHeader* h);
bool DecodeSegmentEnd(std::string_view payload, uint64_t* next_seq);

uint64_t Checksum(std::string_view data, uint64_t seed = 0);

// Checksum(data) (seed 0) of data given in pieces. Not thread-safe.
class StreamingChecksum {
 public:
  StreamingChecksum();
  ~StreamingChecksum();
  StreamingChecksum(const StreamingChecksum&) = delete;
  StreamingChecksum& operator=(const StreamingChecksum&) = delete;
  void Reset();
  void Update(std::string_view data);
  uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t, kept out of this header.
};

// File names.
std::string SegmentFileName(uint64_t seq);
bool ParseSegmentFileName(const std::string& name, uint64_t* seq);
std::string SnapshotFileName(raft::Index index);
bool ParseSnapshotFileName(const std::string& name, raft::Index* index);
inline constexpr const char* kMetaFileName = "META";

}  // namespace raftkv::storage
