#include "transport/codec.h"

#include <xxhash.h>

#include "kv/encoding.h"

namespace raftkv::transport {

using kv::PutBytes;
using kv::PutU32;
using kv::PutU64;
using kv::PutU8;
using kv::Reader;

namespace {

constexpr uint8_t kFlagReject = 1;
constexpr uint8_t kFlagForce = 2;
constexpr uint8_t kFlagSnapDone = 4;
constexpr uint8_t kMaxMessageType = static_cast<uint8_t>(raft::MessageType::kReadIndexResp);

// Writes the header in front of a payload that was appended after a
// placeholder at `start`.
void FinishFrame(FrameType type, uint8_t version, size_t start, std::string* out) {
  size_t payload_start = start + kFrameHeaderBytes;
  size_t len = out->size() - payload_start;
  uint64_t sum = XXH3_64bits_withSeed(out->data() + payload_start, len, static_cast<uint8_t>(type));
  std::string header;
  header.reserve(kFrameHeaderBytes);
  PutU32(&header, static_cast<uint32_t>(len));
  PutU8(&header, version);
  PutU8(&header, static_cast<uint8_t>(type));
  kv::PutU16(&header, 0);
  PutU64(&header, sum);
  out->replace(start, kFrameHeaderBytes, header);
}

}  // namespace

void EncodeMessage(const raft::Message& m, std::string* out) {
  PutU8(out, static_cast<uint8_t>(m.type));
  PutU8(out, (m.reject ? kFlagReject : 0) | (m.force ? kFlagForce : 0) |
                 (m.snap_done ? kFlagSnapDone : 0));
  for (uint64_t v : {m.from, m.to, m.term, m.log_term, m.index, m.commit, m.reject_hint,
                     m.read_round, m.snap_offset}) {
    PutU64(out, v);
  }
  PutBytes(out, m.context);
  PutU64(out, m.snap_meta.index);
  PutU64(out, m.snap_meta.term);
  PutU32(out, static_cast<uint32_t>(m.snap_meta.conf.members.size()));
  for (const raft::Member& mem : m.snap_meta.conf.members) {
    PutU64(out, mem.id);
    PutU8(out, static_cast<uint8_t>(mem.role));
    PutU8(out, mem.promote ? 1 : 0);
    PutBytes(out, mem.context);
  }
  PutBytes(out, m.snap_data);
  PutU32(out, static_cast<uint32_t>(m.entries.size()));
  for (const raft::Entry& e : m.entries) {
    PutU64(out, e.term);
    PutU64(out, e.index);
    PutU8(out, static_cast<uint8_t>(e.type));
    PutBytes(out, e.data);
  }
}

bool DecodeMessage(std::string_view payload, raft::Message* out) {
  Reader r(payload);
  uint8_t type = 0, flags = 0;
  if (!r.U8(&type) || type > kMaxMessageType || !r.U8(&flags)) return false;
  if (flags & ~(kFlagReject | kFlagForce | kFlagSnapDone)) return false;
  out->type = static_cast<raft::MessageType>(type);
  out->reject = flags & kFlagReject;
  out->force = flags & kFlagForce;
  out->snap_done = flags & kFlagSnapDone;
  for (uint64_t* v : {&out->from, &out->to, &out->term, &out->log_term, &out->index, &out->commit,
                      &out->reject_hint, &out->read_round, &out->snap_offset}) {
    if (!r.U64(v)) return false;
  }
  uint32_t members = 0;
  if (!r.Bytes(&out->context) || !r.U64(&out->snap_meta.index) || !r.U64(&out->snap_meta.term) ||
      !r.U32(&members)) {
    return false;
  }
  // A member takes at least 14 bytes, an entry at least 21: bound counts by
  // what the payload could hold before reserving anything.
  if (members > r.left() / 14) return false;
  out->snap_meta.conf.members.clear();
  out->snap_meta.conf.members.reserve(members);
  for (uint32_t i = 0; i < members; i++) {
    raft::Member mem;
    uint8_t role = 0, promote = 0;
    if (!r.U64(&mem.id) || !r.U8(&role) || role > 1 || !r.U8(&promote) || promote > 1 ||
        !r.Bytes(&mem.context)) {
      return false;
    }
    mem.role = static_cast<raft::MemberRole>(role);
    mem.promote = promote == 1;
    out->snap_meta.conf.members.push_back(std::move(mem));
  }
  uint32_t entries = 0;
  if (!r.Bytes(&out->snap_data) || !r.U32(&entries) || entries > r.left() / 21) return false;
  out->entries.clear();
  out->entries.reserve(entries);
  for (uint32_t i = 0; i < entries; i++) {
    raft::Entry e;
    uint8_t etype = 0;
    if (!r.U64(&e.term) || !r.U64(&e.index) || !r.U8(&etype) || etype > 1 || !r.Bytes(&e.data)) {
      return false;
    }
    e.type = static_cast<raft::EntryType>(etype);
    out->entries.push_back(std::move(e));
  }
  return r.done();
}

bool DecodeHello(std::string_view payload, uint8_t version, Hello* out) {
  Reader r(payload);
  if (!r.U64(&out->from) || !r.U64(&out->to) || !r.Bytes(&out->address)) return false;
  out->cluster_id = 0;
  if (version == kHelloWithClusterVersion) {
    // Version 2 exists to carry an id: a zero one is malformed.
    if (!r.U64(&out->cluster_id) || out->cluster_id == 0) return false;
  } else if (version != kFrameVersion) {
    return false;
  }
  return r.done() && out->from != raft::kNoNode;
}

void AppendHelloFrame(const Hello& hello, std::string* out) {
  size_t start = out->size();
  out->append(kFrameHeaderBytes, '\0');
  PutU64(out, hello.from);
  PutU64(out, hello.to);
  PutBytes(out, hello.address);
  uint8_t version = kFrameVersion;
  if (hello.cluster_id != 0) {
    PutU64(out, hello.cluster_id);
    version = kHelloWithClusterVersion;
  }
  FinishFrame(FrameType::kHello, version, start, out);
}

void AppendMessageFrame(const raft::Message& m, std::string* out) {
  size_t start = out->size();
  out->append(kFrameHeaderBytes, '\0');
  EncodeMessage(m, out);
  FinishFrame(FrameType::kMessage, kFrameVersion, start, out);
}

const char* HeaderCheckName(HeaderCheck c) {
  switch (c) {
    case HeaderCheck::kOk:
      return "ok";
    case HeaderCheck::kBadVersion:
      return "unknown frame version";
    case HeaderCheck::kBadType:
      return "unknown frame type";
    case HeaderCheck::kBadReserved:
      return "nonzero reserved field";
    case HeaderCheck::kTooLarge:
      return "frame over the size limit";
  }
  return "?";
}

HeaderCheck ParseFrameHeader(std::string_view bytes, uint64_t max_frame_bytes, FrameHeader* out) {
  const char* p = bytes.data();
  out->length = static_cast<uint32_t>(kv::LoadLE(p, 4));
  uint8_t version = static_cast<uint8_t>(p[4]);
  uint8_t type = static_cast<uint8_t>(p[5]);
  uint16_t reserved = static_cast<uint16_t>(kv::LoadLE(p + 6, 2));
  out->checksum = kv::LoadLE(p + 8, 8);
  if (type != static_cast<uint8_t>(FrameType::kHello) &&
      type != static_cast<uint8_t>(FrameType::kMessage)) {
    return version == kFrameVersion ? HeaderCheck::kBadType : HeaderCheck::kBadVersion;
  }
  const bool hello = type == static_cast<uint8_t>(FrameType::kHello);
  if (version != kFrameVersion && !(hello && version == kHelloWithClusterVersion)) {
    return HeaderCheck::kBadVersion;
  }
  if (reserved != 0) return HeaderCheck::kBadReserved;
  if (out->length > max_frame_bytes) return HeaderCheck::kTooLarge;
  out->type = static_cast<FrameType>(type);
  out->version = version;
  return HeaderCheck::kOk;
}

bool VerifyPayload(const FrameHeader& header, std::string_view payload) {
  return XXH3_64bits_withSeed(payload.data(), payload.size(), static_cast<uint8_t>(header.type)) ==
         header.checksum;
}

}  // namespace raftkv::transport
