#include "storage/format.h"

#include <xxhash.h>

#include <cstdio>
#include <cstring>

#include "raft/status.h"

namespace raftkv::storage {

void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }

void PutU32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; i++) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 4);
}

void PutU64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; i++) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 8);
}

uint32_t LoadU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t LoadU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

static void StoreU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

static void StoreU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

bool Decoder::U8(uint8_t* v) {
  if (in_.size() < 1) return false;
  *v = static_cast<uint8_t>(in_[0]);
  in_.remove_prefix(1);
  return true;
}

bool Decoder::U32(uint32_t* v) {
  if (in_.size() < 4) return false;
  *v = LoadU32(in_.data());
  in_.remove_prefix(4);
  return true;
}

bool Decoder::U64(uint64_t* v) {
  if (in_.size() < 8) return false;
  *v = LoadU64(in_.data());
  in_.remove_prefix(8);
  return true;
}

bool Decoder::Bytes(size_t n, std::string_view* v) {
  if (in_.size() < n) return false;
  *v = in_.substr(0, n);
  in_.remove_prefix(n);
  return true;
}

uint64_t Checksum(std::string_view data, uint64_t seed) {
  return XXH3_64bits_withSeed(data.data(), data.size(), seed);
}

StreamingChecksum::StreamingChecksum() : state_(XXH3_createState()) {
  RAFT_ASSERT(state_ != nullptr, "XXH3_createState: out of memory");
  Reset();
}

StreamingChecksum::~StreamingChecksum() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void StreamingChecksum::Reset() { XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_)); }

void StreamingChecksum::Update(std::string_view data) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data.data(), data.size());
}

uint64_t StreamingChecksum::Digest() const {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_));
}

size_t BeginRecord(std::string* out) {
  size_t begin = out->size();
  out->append(kRecordHeaderBytes, '\0');
  return begin;
}

void FinishRecord(RecordType type, size_t begin, std::string* out) {
  char* h = out->data() + begin;
  std::string_view payload(out->data() + begin + kRecordHeaderBytes,
                           out->size() - begin - kRecordHeaderBytes);
  StoreU64(h, Checksum(payload, static_cast<uint64_t>(type)));
  StoreU32(h + 8, static_cast<uint32_t>(payload.size()));
  h[12] = static_cast<char>(type);
  h[13] = h[14] = h[15] = 0;
  StoreU32(h + 16, static_cast<uint32_t>(Checksum(std::string_view(h, 16))));
}

void AppendRecord(RecordType type, std::string_view payload, std::string* out) {
  size_t begin = BeginRecord(out);
  out->append(payload);
  FinishRecord(type, begin, out);
}

static bool AllZero(std::string_view s) {
  for (char c : s) {
    if (c != 0) return false;
  }
  return true;
}

ParseResult ParseRecord(std::string_view data, size_t offset, uint64_t max_record_bytes,
                        ParsedRecord* rec, std::string* why) {
  std::string_view rest = data.substr(offset);
  if (rest.size() < kRecordHeaderBytes) {
    *why = "incomplete record header (" + std::to_string(rest.size()) + " bytes)";
    return ParseResult::kTorn;
  }
  const char* h = rest.data();
  if (LoadU32(h + 16) != static_cast<uint32_t>(Checksum(std::string_view(h, 16)))) {
    if (AllZero(rest)) {
      *why = "zero-filled tail";
      return ParseResult::kTorn;
    }
    *why = "record header checksum mismatch";
    return ParseResult::kCorrupt;
  }
  uint64_t length = LoadU32(h + 8);
  uint8_t type = static_cast<uint8_t>(h[12]);
  if (length > max_record_bytes) {
    *why = "record length " + std::to_string(length) + " over the limit of " +
           std::to_string(max_record_bytes);
    return ParseResult::kCorrupt;
  }
  if (type < static_cast<uint8_t>(RecordType::kSegmentHeader) ||
      type > static_cast<uint8_t>(RecordType::kSegmentEnd) || h[13] || h[14] || h[15]) {
    *why = "unknown record type " + std::to_string(type);
    return ParseResult::kCorrupt;
  }
  if (rest.size() - kRecordHeaderBytes < length) {
    *why = "record of " + std::to_string(length) + " bytes runs past the end of the file";
    return ParseResult::kTorn;
  }
  std::string_view payload = rest.substr(kRecordHeaderBytes, length);
  if (LoadU64(h) != Checksum(payload, type)) {
    *why = "record checksum mismatch";
    return ParseResult::kCorrupt;
  }
  rec->type = static_cast<RecordType>(type);
  rec->payload = payload;
  rec->size = kRecordHeaderBytes + length;
  return ParseResult::kOk;
}

void AppendEntryRecord(const raft::Entry& e, std::string* out) {
  size_t begin = BeginRecord(out);
  PutU64(out, e.term);
  PutU64(out, e.index);
  PutU8(out, static_cast<uint8_t>(e.type));
  out->append(e.data);
  FinishRecord(RecordType::kEntry, begin, out);
}

void AppendHardStateRecord(const raft::HardState& hs, std::string* out) {
  size_t begin = BeginRecord(out);
  PutU64(out, hs.term);
  PutU64(out, hs.vote);
  PutU64(out, hs.commit);
  FinishRecord(RecordType::kHardState, begin, out);
}

void AppendSnapshotMarkerRecord(raft::Index index, raft::Term term, std::string* out) {
  size_t begin = BeginRecord(out);
  PutU64(out, index);
  PutU64(out, term);
  FinishRecord(RecordType::kSnapshotMarker, begin, out);
}

void AppendSegmentHeaderRecord(const SegmentHeader& h, std::string* out) {
  size_t begin = BeginRecord(out);
  PutU32(out, kFormatVersion);
  PutU64(out, h.cluster_id);
  PutU64(out, h.node_id);
  PutU64(out, h.seq);
  FinishRecord(RecordType::kSegmentHeader, begin, out);
}

void AppendMetaRecord(const MetaRecord& m, std::string* out) {
  size_t begin = BeginRecord(out);
  PutU32(out, kFormatVersion);
  PutU64(out, m.cluster_id);
  PutU64(out, m.node_id);
  FinishRecord(RecordType::kMeta, begin, out);
}

void AppendSnapshotHeaderRecord(const SnapshotHeader& h, std::string* out) {
  size_t begin = BeginRecord(out);
  PutU32(out, kFormatVersion);
  PutU64(out, h.cluster_id);
  PutU64(out, h.node_id);
  PutU64(out, h.meta.index);
  PutU64(out, h.meta.term);
  PutU32(out, static_cast<uint32_t>(h.meta.conf.members.size()));
  for (const raft::Member& m : h.meta.conf.members) {
    PutU64(out, m.id);
    PutU8(out, static_cast<uint8_t>(m.role));
    PutU8(out, m.promote ? 1 : 0);
    PutU32(out, static_cast<uint32_t>(m.context.size()));
    out->append(m.context);
  }
  PutU64(out, h.data_bytes);
  FinishRecord(RecordType::kSnapshotHeader, begin, out);
}

void AppendSegmentEndRecord(uint64_t next_seq, std::string* out) {
  size_t begin = BeginRecord(out);
  PutU64(out, next_seq);
  FinishRecord(RecordType::kSegmentEnd, begin, out);
}

bool DecodeSegmentEnd(std::string_view payload, uint64_t* next_seq) {
  Decoder d(payload);
  return d.U64(next_seq) && d.Done();
}

bool DecodeEntry(std::string_view payload, raft::Entry* e) {
  Decoder d(payload);
  uint8_t type = 0;
  if (!d.U64(&e->term) || !d.U64(&e->index) || !d.U8(&type)) return false;
  if (type > static_cast<uint8_t>(raft::EntryType::kConfChange)) return false;
  e->type = static_cast<raft::EntryType>(type);
  e->data.assign(d.Rest());
  return true;
}

bool DecodeEntryIndex(std::string_view payload, raft::Index* index) {
  if (payload.size() < 17) return false;
  *index = LoadU64(payload.data() + 8);
  return true;
}

bool DecodeHardState(std::string_view payload, raft::HardState* hs) {
  Decoder d(payload);
  return d.U64(&hs->term) && d.U64(&hs->vote) && d.U64(&hs->commit) && d.Done();
}

bool DecodeSnapshotMarker(std::string_view payload, raft::Index* index, raft::Term* term) {
  Decoder d(payload);
  return d.U64(index) && d.U64(term) && d.Done();
}

bool DecodeSegmentHeader(std::string_view payload, SegmentHeader* h) {
  Decoder d(payload);
  uint32_t version = 0;
  return d.U32(&version) && version == kFormatVersion && d.U64(&h->cluster_id) &&
         d.U64(&h->node_id) && d.U64(&h->seq) && d.Done();
}

bool DecodeMeta(std::string_view payload, MetaRecord* m) {
  Decoder d(payload);
  uint32_t version = 0;
  return d.U32(&version) && version == kFormatVersion && d.U64(&m->cluster_id) &&
         d.U64(&m->node_id) && d.Done();
}

bool DecodeSnapshotHeader(std::string_view payload, SnapshotHeader* h) {
  Decoder d(payload);
  uint32_t version = 0, count = 0;
  if (!d.U32(&version) || version != kFormatVersion || !d.U64(&h->cluster_id) ||
      !d.U64(&h->node_id) || !d.U64(&h->meta.index) || !d.U64(&h->meta.term) || !d.U32(&count)) {
    return false;
  }
  h->meta.conf.members.clear();
  for (uint32_t i = 0; i < count; i++) {
    raft::Member m;
    uint8_t role = 0, promote = 0;
    uint32_t len = 0;
    std::string_view ctx;
    if (!d.U64(&m.id) || !d.U8(&role) || !d.U8(&promote) || !d.U32(&len) || !d.Bytes(len, &ctx)) {
      return false;
    }
    if (role > static_cast<uint8_t>(raft::MemberRole::kLearner) || promote > 1) return false;
    m.role = static_cast<raft::MemberRole>(role);
    m.promote = promote == 1;
    m.context.assign(ctx);
    h->meta.conf.members.push_back(std::move(m));
  }
  return d.U64(&h->data_bytes) && d.Done();
}

static std::string Hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

static bool ParseHex16(std::string_view s, uint64_t* v) {
  if (s.size() != 16) return false;
  uint64_t r = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return false;
    }
    r = (r << 4) | static_cast<uint64_t>(d);
  }
  *v = r;
  return true;
}

static bool ParseName(const std::string& name, std::string_view prefix, std::string_view suffix,
                      uint64_t* v) {
  std::string_view n(name);
  if (n.size() != prefix.size() + 16 + suffix.size()) return false;
  if (n.substr(0, prefix.size()) != prefix || n.substr(prefix.size() + 16) != suffix) return false;
  return ParseHex16(n.substr(prefix.size(), 16), v);
}

std::string SegmentFileName(uint64_t seq) { return "wal-" + Hex16(seq) + ".log"; }
bool ParseSegmentFileName(const std::string& name, uint64_t* seq) {
  return ParseName(name, "wal-", ".log", seq);
}
std::string SnapshotFileName(raft::Index index) { return "snap-" + Hex16(index) + ".snap"; }
bool ParseSnapshotFileName(const std::string& name, raft::Index* index) {
  return ParseName(name, "snap-", ".snap", index);
}

}  // namespace raftkv::storage
