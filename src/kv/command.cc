#include "kv/command.h"

#include "kv/encoding.h"

namespace raftkv::kv {

namespace {

constexpr size_t kHeaderBytes = 1 + 1 + 8 + 8 + 1;
constexpr uint8_t kPutFields = 2;
constexpr uint8_t kPutLeaseFields = 3;
constexpr uint8_t kDeleteKeyFields = 1;
constexpr uint8_t kDeleteRangeFields = 4;
constexpr uint8_t kTxnFields = 3;
constexpr uint8_t kLeaseGrantFields = 2;
constexpr uint8_t kLeaseRevokeFields = 2;
constexpr uint8_t kLeaseKeepAliveFields = 1;
// The smallest compare or op record: three u8 and two empty `bytes`.
constexpr size_t kMinRecordBytes = 3 + 4 + 4;
constexpr uint8_t kKnownFlags = kWantPrevKv | kKeysOnly | kCountOnly;

void Header(std::string* out, Op op, RequestId id, uint8_t fields, size_t payload) {
  out->reserve(kHeaderBytes + payload);
  PutU8(out, kCommandFormatVersion);
  PutU8(out, static_cast<uint8_t>(op));
  PutU64(out, id.client);
  PutU64(out, id.seq);
  PutU8(out, fields);
}

// A u64 field: `bytes` of length 8 (docs/wire-format.md).
void PutU64Field(std::string* out, uint64_t v) {
  PutU32(out, 8);
  PutU64(out, v);
}

bool U64Field(Reader* r, uint64_t* v) {
  std::string_view b;
  if (!r->Bytes(&b) || b.size() != 8) return false;
  *v = LoadLE(b.data(), 8);
  return true;
}

void PutKeys(std::string* out, const KeyRange& k) {
  PutU8(out, k.range ? 1 : 0);
  PutBytes(out, k.key);
  PutBytes(out, k.range ? k.end : std::string_view());
}

bool Keys(Reader* r, KeyRange* k) {
  uint8_t range = 0;
  if (!r->U8(&range) || range > 1 || !r->Bytes(&k->key) || !r->Bytes(&k->end)) return false;
  k->range = range == 1;
  return k->range || k->end.empty();
}

std::string EncodeCompares(const std::vector<Compare>& cs) {
  std::string out;
  PutU32(&out, static_cast<uint32_t>(cs.size()));
  for (const Compare& c : cs) {
    PutU8(&out, static_cast<uint8_t>(c.target));
    PutU8(&out, static_cast<uint8_t>(c.op));
    PutKeys(&out, c.keys);
    if (c.target == Target::kValue) {
      PutBytes(&out, c.value);
    } else {
      PutU64(&out, c.number);
    }
  }
  return out;
}

std::string EncodeOps(const std::vector<TxnOp>& ops) {
  std::string out;
  PutU32(&out, static_cast<uint32_t>(ops.size()));
  for (const TxnOp& op : ops) {
    PutU8(&out, static_cast<uint8_t>(op.kind));
    PutU8(&out, op.flags);
    PutKeys(&out, op.keys);
    switch (op.kind) {
      case TxnOpKind::kPut:
        PutBytes(&out, op.value);
        PutU64(&out, op.lease);
        break;
      case TxnOpKind::kDelete:
        PutU64(&out, op.limit);
        PutU64(&out, op.max_keys);
        break;
      case TxnOpKind::kGet:
        break;
      case TxnOpKind::kRange:
        PutU64(&out, op.limit);
        PutU64(&out, op.max_bytes);
        break;
    }
  }
  return out;
}

bool DecodeCompares(std::string_view data, std::vector<Compare>* out) {
  Reader r(data);
  uint32_t n = 0;
  if (!r.U32(&n) || n > r.left() / kMinRecordBytes) return false;
  out->resize(n);
  for (Compare& c : *out) {
    uint8_t target = 0, op = 0;
    if (!r.U8(&target) || target > static_cast<uint8_t>(Target::kLease)) return false;
    if (!r.U8(&op) || op > static_cast<uint8_t>(CmpOp::kGreater)) return false;
    c.target = static_cast<Target>(target);
    c.op = static_cast<CmpOp>(op);
    if (!Keys(&r, &c.keys)) return false;
    if (c.target == Target::kValue ? !r.Bytes(&c.value) : !r.U64(&c.number)) return false;
  }
  return r.done();
}

bool DecodeOps(std::string_view data, std::vector<TxnOp>* out) {
  Reader r(data);
  uint32_t n = 0;
  if (!r.U32(&n) || n > r.left() / kMinRecordBytes) return false;
  out->resize(n);
  for (TxnOp& op : *out) {
    uint8_t kind = 0;
    if (!r.U8(&kind) || kind < 1 || kind > static_cast<uint8_t>(TxnOpKind::kRange)) return false;
    op.kind = static_cast<TxnOpKind>(kind);
    if (!r.U8(&op.flags) || (op.flags & ~kKnownFlags) != 0 || !Keys(&r, &op.keys)) return false;
    switch (op.kind) {
      case TxnOpKind::kPut:
        if (op.keys.range || !r.Bytes(&op.value) || !r.U64(&op.lease)) return false;
        break;
      case TxnOpKind::kDelete:
        if (!r.U64(&op.limit) || !r.U64(&op.max_keys)) return false;
        break;
      case TxnOpKind::kGet:
        if (op.keys.range) return false;
        break;
      case TxnOpKind::kRange:
        if (!r.U64(&op.limit) || !r.U64(&op.max_bytes)) return false;
        break;
    }
  }
  return r.done();
}

// A lease list: u32 count, then per lease u64 id and, if `with_renewed`,
// u64 renewed_at.
std::string EncodeLeaseList(const std::vector<LeaseRef>& leases, bool with_renewed) {
  std::string out;
  out.reserve(4 + leases.size() * 16);
  PutU32(&out, static_cast<uint32_t>(leases.size()));
  for (const LeaseRef& l : leases) {
    PutU64(&out, l.id);
    if (with_renewed) PutU64(&out, l.renewed_at);
  }
  return out;
}

bool DecodeLeaseList(std::string_view data, bool with_renewed, std::vector<LeaseRef>* out) {
  Reader r(data);
  uint32_t n = 0;
  size_t record = with_renewed ? 16 : 8;
  if (!r.U32(&n) || n > r.left() / record) return false;
  out->assign(n, LeaseRef{});
  for (LeaseRef& l : *out) {
    if (!r.U64(&l.id) || (with_renewed && !r.U64(&l.renewed_at))) return false;
  }
  return r.done();
}

}  // namespace

bool KeyRange::Overlaps(const KeyRange& o) const {
  if (!range) return o.Contains(key);
  if (!o.range) return Contains(o.key);
  // [a, b) and [c, d) meet iff a < d and c < b (an empty end is +infinity).
  bool a_before_d = o.end.empty() || key < o.end;
  bool c_before_b = end.empty() || o.key < end;
  return a_before_d && c_before_b;
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      last++;
      return end;
    }
    end.pop_back();
  }
  return end;
}

std::string EncodePut(RequestId id, std::string_view key, std::string_view value, uint64_t lease) {
  std::string out;
  Header(&out, Op::kPut, id, lease == 0 ? kPutFields : kPutLeaseFields,
         8 + key.size() + value.size() + 12);
  PutBytes(&out, key);
  PutBytes(&out, value);
  if (lease != 0) PutU64Field(&out, lease);
  return out;
}

std::string EncodeDelete(RequestId id, const TxnOp& op) {
  std::string out;
  Header(&out, Op::kDelete, id, op.keys.range ? kDeleteRangeFields : kDeleteKeyFields,
         8 + op.keys.key.size() + op.keys.end.size() + 24);
  PutBytes(&out, op.keys.key);
  if (op.keys.range) {
    PutBytes(&out, op.keys.end);
    PutU64Field(&out, op.limit);
    PutU64Field(&out, op.max_keys);
  }
  return out;
}

std::string EncodeTxn(RequestId id, const std::vector<Compare>& compares,
                      const std::vector<TxnOp>& success, const std::vector<TxnOp>& failure) {
  std::string c = EncodeCompares(compares), s = EncodeOps(success), f = EncodeOps(failure);
  std::string out;
  Header(&out, Op::kTxn, id, kTxnFields, 12 + c.size() + s.size() + f.size());
  PutBytes(&out, c);
  PutBytes(&out, s);
  PutBytes(&out, f);
  return out;
}

std::string EncodeLeaseGrant(RequestId id, uint64_t lease_id, uint64_t ttl_ms) {
  std::string out;
  Header(&out, Op::kLeaseGrant, id, kLeaseGrantFields, 24);
  PutU64Field(&out, lease_id);
  PutU64Field(&out, ttl_ms);
  return out;
}

std::string EncodeLeaseRevoke(RequestId id, RevokeReason reason,
                              const std::vector<LeaseRef>& leases) {
  std::string list = EncodeLeaseList(leases, reason == RevokeReason::kExpire);
  std::string out;
  Header(&out, Op::kLeaseRevoke, id, kLeaseRevokeFields, 16 + list.size());
  PutU64Field(&out, static_cast<uint64_t>(reason));
  PutBytes(&out, list);
  return out;
}

std::string EncodeLeaseKeepAlive(RequestId id, const std::vector<uint64_t>& lease_ids) {
  std::vector<LeaseRef> refs;
  refs.reserve(lease_ids.size());
  for (uint64_t l : lease_ids) refs.push_back(LeaseRef{l, 0});
  std::string list = EncodeLeaseList(refs, false);
  std::string out;
  Header(&out, Op::kLeaseKeepAlive, id, kLeaseKeepAliveFields, 4 + list.size());
  PutBytes(&out, list);
  return out;
}

bool DecodeCommand(std::string_view data, CommandView* out) {
  Reader r(data);
  uint8_t version = 0, op = 0, fields = 0;
  if (!r.U8(&version) || version != kCommandFormatVersion) return false;
  if (!r.U8(&op) || !r.U64(&out->id.client) || !r.U64(&out->id.seq) || !r.U8(&fields)) {
    return false;
  }
  out->single = TxnOp{};
  switch (op) {
    case static_cast<uint8_t>(Op::kPut): {
      out->op = Op::kPut;
      out->single.kind = TxnOpKind::kPut;
      if (fields != kPutFields && fields != kPutLeaseFields) return false;
      if (!r.Bytes(&out->single.keys.key) || !r.Bytes(&out->single.value)) return false;
      if (fields == kPutLeaseFields && !U64Field(&r, &out->single.lease)) return false;
      break;
    }
    case static_cast<uint8_t>(Op::kDelete): {
      out->op = Op::kDelete;
      out->single.kind = TxnOpKind::kDelete;
      if (fields != kDeleteKeyFields && fields != kDeleteRangeFields) return false;
      if (!r.Bytes(&out->single.keys.key)) return false;
      if (fields == kDeleteRangeFields) {
        out->single.keys.range = true;
        if (!r.Bytes(&out->single.keys.end) || !U64Field(&r, &out->single.limit) ||
            !U64Field(&r, &out->single.max_keys)) {
          return false;
        }
      }
      break;
    }
    case static_cast<uint8_t>(Op::kTxn): {
      out->op = Op::kTxn;
      std::string_view c, s, f;
      if (fields != kTxnFields || !r.Bytes(&c) || !r.Bytes(&s) || !r.Bytes(&f)) return false;
      if (!DecodeCompares(c, &out->compares) || !DecodeOps(s, &out->success) ||
          !DecodeOps(f, &out->failure)) {
        return false;
      }
      break;
    }
    case static_cast<uint8_t>(Op::kLeaseGrant): {
      out->op = Op::kLeaseGrant;
      if (fields != kLeaseGrantFields || !U64Field(&r, &out->lease_id) ||
          !U64Field(&r, &out->ttl_ms)) {
        return false;
      }
      break;
    }
    case static_cast<uint8_t>(Op::kLeaseRevoke): {
      out->op = Op::kLeaseRevoke;
      uint64_t reason = 0;
      std::string_view list;
      if (fields != kLeaseRevokeFields || !U64Field(&r, &reason) ||
          reason > static_cast<uint64_t>(RevokeReason::kExpire) || !r.Bytes(&list)) {
        return false;
      }
      out->reason = static_cast<RevokeReason>(reason);
      if (!DecodeLeaseList(list, out->reason == RevokeReason::kExpire, &out->leases)) return false;
      break;
    }
    case static_cast<uint8_t>(Op::kLeaseKeepAlive): {
      out->op = Op::kLeaseKeepAlive;
      std::string_view list;
      if (fields != kLeaseKeepAliveFields || !r.Bytes(&list) ||
          !DecodeLeaseList(list, false, &out->leases)) {
        return false;
      }
      break;
    }
    default:
      return false;
  }
  return r.done();
}

int ProtoOf(std::string_view data) {
  if (data.size() < kHeaderBytes) return kProtoVersion;
  auto op = static_cast<uint8_t>(data[1]);
  // The first release knew only the two-field Put.
  if (op == static_cast<uint8_t>(Op::kPut) &&
      static_cast<uint8_t>(data[kHeaderBytes - 1]) == kPutFields) {
    return 1;
  }
  if (op >= static_cast<uint8_t>(Op::kLeaseGrant)) return 3;
  return 2;
}

}  // namespace raftkv::kv
