#include "kv/store.h"

#include <xxhash.h>

#include <algorithm>
#include <mutex>

#include "kv/encoding.h"

namespace raftkv::kv {

namespace {

// Version 1: the first release's image, without leases. Version 2 adds a
// lease per key and a lease table (docs/wire-format.md section 3).
constexpr uint8_t kImageV1 = 1;
constexpr uint8_t kImageV2 = 2;

template <typename T>
bool Cmp(CmpOp op, const T& a, const T& b) {
  switch (op) {
    case CmpOp::kEqual:
      return a == b;
    case CmpOp::kNotEqual:
      return a != b;
    case CmpOp::kLess:
      return a < b;
    case CmpOp::kGreater:
      return a > b;
  }
  return false;
}

uint64_t MetaField(const KeyMeta& m, Target t) {
  switch (t) {
    case Target::kVersion:
      return m.version;
    case Target::kCreateRevision:
      return m.create_revision;
    case Target::kModRevision:
      return m.mod_revision;
    case Target::kLease:
      return m.lease;
    case Target::kValue:
      break;
  }
  return 0;
}

// A key that does not exist, as a compare sees it (etcd: every number 0; a
// value compare fails).
bool CompareAbsent(const Compare& c) {
  if (c.target == Target::kValue) return false;
  return Cmp<uint64_t>(c.op, 0, c.number);
}

}  // namespace

size_t Store::NodeHash::operator()(std::string_view s) const {
  return static_cast<size_t>(XXH3_64bits(s.data(), s.size()));
}

Store::Keys::~Keys() {
  tree.clear();
  for (Node* n : index) delete n;
}

Store::~Store() = default;

KeyValue Store::ToKv(const Node& n, bool with_value) {
  return KeyValue{n.key, with_value ? n.value : std::string(), n.meta};
}

const Store::Node* Store::Find(std::string_view key) const {
  auto it = keys_.index.find(key);
  return it == keys_.index.end() ? nullptr : *it;
}

Store::Tree::const_iterator Store::First(const KeyRange& keys) const {
  auto it = keys_.tree.lower_bound(keys.key);
  if (it != keys_.tree.end() && !keys.Contains(it->key)) return keys_.tree.end();
  return it;
}

bool Store::CompareHolds(const Compare& c) const {
  auto holds = [&](const Node& n) {
    if (c.target == Target::kValue) return Cmp<std::string_view>(c.op, n.value, c.value);
    return Cmp<uint64_t>(c.op, MetaField(n.meta, c.target), c.number);
  };
  if (!c.keys.range) {
    const Node* n = Find(c.keys.key);
    return n ? holds(*n) : CompareAbsent(c);
  }
  // A range compare holds for every key in it; an empty range is one absent
  // key (etcd).
  auto it = First(c.keys);
  if (it == keys_.tree.end()) return CompareAbsent(c);
  for (; it != keys_.tree.end() && c.keys.Contains(it->key); ++it) {
    if (!holds(*it)) return false;
  }
  return true;
}

bool Store::AllHold(const std::vector<Compare>& cs) const {
  for (const Compare& c : cs) {
    if (!CompareHolds(c)) return false;
  }
  return true;
}

ResultCode Store::Check(const std::vector<TxnOp>& ops) const {
  for (const TxnOp& op : ops) {
    if (op.kind == TxnOpKind::kPut && op.lease != 0 && !keys_.leases.contains(op.lease)) {
      return ResultCode::kLeaseNotFound;
    }
    if (op.kind == TxnOpKind::kDelete && op.keys.range && op.max_keys != 0 && op.limit == 0) {
      uint64_t n = 0;
      for (auto it = First(op.keys); it != keys_.tree.end() && op.keys.Contains(it->key); ++it) {
        if (++n > op.max_keys) return ResultCode::kTooManyKeys;
      }
    }
  }
  return ResultCode::kOk;
}

void Store::ReadOp(const TxnOp& op, OpResult* out) const {
  out->kind = op.kind;
  bool values = (op.flags & kKeysOnly) == 0;
  if (op.kind == TxnOpKind::kGet) {
    const Node* n = Find(op.keys.key);
    out->found = n != nullptr;
    if (n) out->kv = ToKv(*n, values);
    return;
  }
  // kRange.
  bool count_only = (op.flags & kCountOnly) != 0;
  uint64_t bytes = 0;
  for (auto it = First(op.keys); it != keys_.tree.end() && op.keys.Contains(it->key); ++it) {
    if (count_only) {
      out->count++;
      continue;
    }
    bool full = (op.limit != 0 && out->kvs.size() >= op.limit) ||
                (op.max_bytes != 0 && !out->kvs.empty() && bytes >= op.max_bytes);
    if (full) {
      out->more = true;
      break;
    }
    out->kvs.push_back(ToKv(*it, values));
    bytes += it->key.size() + (values ? it->value.size() : 0);
  }
  if (!count_only) out->count = out->kvs.size();
}

void Store::Attach(Node* n, uint64_t lease) {
  if (n->meta.lease == lease) return;
  if (n->meta.lease != 0) {
    auto it = keys_.leases.find(n->meta.lease);
    RAFT_ASSERT(it != keys_.leases.end(), "key attached to a missing lease");
    it->second.keys.erase(n);
  }
  if (lease != 0) keys_.leases.find(lease)->second.keys.insert(n);  // Check() found it.
  n->meta.lease = lease;
}

void Store::Erase(Node* n) {
  Attach(n, 0);
  keys_.index.erase(n);
  keys_.tree.erase(keys_.tree.iterator_to(*n));
  delete n;
}

void Store::DeleteNode(Node* n, uint64_t index, Event::Cause cause, const ApplyOptions& options) {
  if (options.events) {
    KeyValue gone{n->key, {}, KeyMeta{0, index, 0, n->meta.lease}};
    options.events->push_back(Event{Event::Type::kDelete, std::move(gone), cause});
  }
  Erase(n);
}

void Store::PutOp(const TxnOp& op, uint64_t index, OpResult* out, const ApplyOptions& options) {
  auto it = keys_.index.find(op.keys.key);
  Node* n;
  if (it == keys_.index.end()) {
    n = new Node;
    n->key.assign(op.keys.key.data(), op.keys.key.size());
    n->meta.create_revision = index;
    keys_.index.insert(n);
    keys_.tree.insert_unique(*n);
  } else {
    n = *it;
    if (out && (op.flags & kWantPrevKv)) out->kvs.push_back(ToKv(*n, true));
  }
  n->value.assign(op.value.data(), op.value.size());
  n->meta.mod_revision = index;
  n->meta.version++;
  Attach(n, op.lease);
  if (out) out->kv = ToKv(*n, true);
  if (options.events) options.events->push_back(Event{Event::Type::kPut, ToKv(*n, true)});
}

void Store::DeleteOp(const TxnOp& op, uint64_t index, OpResult* out, const ApplyOptions& options) {
  std::vector<Node*> doomed;
  bool more = false;
  if (!op.keys.range) {
    if (const Node* n = Find(op.keys.key)) doomed.push_back(const_cast<Node*>(n));
  } else {
    for (auto it = First(op.keys); it != keys_.tree.end() && op.keys.Contains(it->key); ++it) {
      if (op.limit != 0 && doomed.size() >= op.limit) {
        more = true;
        break;
      }
      doomed.push_back(const_cast<Node*>(&*it));
    }
  }
  for (Node* n : doomed) {
    if (out && (op.flags & kWantPrevKv)) out->kvs.push_back(ToKv(*n, true));
    DeleteNode(n, index, Event::Cause::kRequest, options);
  }
  if (out) {
    out->deleted = doomed.size();
    out->count = doomed.size();
    out->more = more;
  }
}

void Store::RunOps(const std::vector<TxnOp>& ops, uint64_t index, Result* out,
                   const ApplyOptions& options) {
  if (out) out->ops.resize(ops.size());
  for (size_t i = 0; i < ops.size(); i++) {
    const TxnOp& op = ops[i];
    OpResult* r = out ? &out->ops[i] : nullptr;
    if (r) r->kind = op.kind;
    switch (op.kind) {
      case TxnOpKind::kPut:
        PutOp(op, index, r, options);
        break;
      case TxnOpKind::kDelete:
        DeleteOp(op, index, r, options);
        break;
      case TxnOpKind::kGet:
      case TxnOpKind::kRange:
        if (r) ReadOp(op, r);
        break;
    }
  }
}

uint64_t Store::EndLease(uint64_t id, uint64_t index, Event::Cause cause,
                         const ApplyOptions& options) {
  auto it = keys_.leases.find(id);
  // Key order, so that every node reports the events in the same order.
  std::vector<Node*> doomed(it->second.keys.begin(), it->second.keys.end());
  std::sort(doomed.begin(), doomed.end(),
            [](const Node* a, const Node* b) { return a->key < b->key; });
  LeaseInfo info{id, it->second.ttl_ms, it->second.renewed_at};
  for (Node* n : doomed) DeleteNode(n, index, cause, options);
  keys_.leases.erase(id);
  if (options.lease_changes) {
    options.lease_changes->push_back(LeaseChange{info, true,
                                                 cause == Event::Cause::kLeaseExpired
                                                     ? LeaseChange::Why::kExpire
                                                     : LeaseChange::Why::kRevoke});
  }
  return doomed.size();
}

ResultCode Store::ApplyLease(const CommandView& cmd, uint64_t index, Result* out,
                             const ApplyOptions& options) {
  auto renewed = [&](uint64_t id, Lease& l) {
    l.renewed_at = index;
    LeaseInfo info{id, l.ttl_ms, index};
    if (options.lease_changes) {
      options.lease_changes->push_back(LeaseChange{
          info, false,
          cmd.op == Op::kLeaseGrant ? LeaseChange::Why::kGrant : LeaseChange::Why::kKeepAlive});
    }
    if (out) out->leases.push_back(info);
  };
  switch (cmd.op) {
    case Op::kLeaseGrant: {
      uint64_t id = cmd.lease_id;
      if (id == 0) {
        id = index;  // Deterministic: the same on every node.
        while (keys_.leases.contains(id)) id++;
      } else if (keys_.leases.contains(id)) {
        return ResultCode::kLeaseExists;
      }
      Lease& l = keys_.leases[id];
      l.ttl_ms = cmd.ttl_ms;
      renewed(id, l);
      return ResultCode::kOk;
    }
    case Op::kLeaseKeepAlive:
      for (const LeaseRef& ref : cmd.leases) {
        auto it = keys_.leases.find(ref.id);
        if (it != keys_.leases.end()) {
          renewed(ref.id, it->second);
        } else if (out) {
          out->not_found.push_back(ref.id);
        }
      }
      return ResultCode::kOk;
    case Op::kLeaseRevoke: {
      bool expire = cmd.reason == RevokeReason::kExpire;
      for (const LeaseRef& ref : cmd.leases) {
        auto it = keys_.leases.find(ref.id);
        // An expiry leaves a lease renewed since the leader decided alone.
        if (it == keys_.leases.end() || (expire && it->second.renewed_at != ref.renewed_at)) {
          if (out) out->not_found.push_back(ref.id);
          continue;
        }
        uint64_t n =
            EndLease(ref.id, index,
                     expire ? Event::Cause::kLeaseExpired : Event::Cause::kLeaseRevoked, options);
        if (out) out->deleted += n;
      }
      return ResultCode::kOk;
    }
    default:
      break;
  }
  return ResultCode::kOk;
}

raft::Status Store::Apply(std::span<const raft::Entry> entries, std::vector<Applied>* applied,
                          const ApplyOptions& options) {
  if (entries.empty()) return raft::Status::Ok();
  std::unique_lock lock(mu_);
  uint64_t rev = revision_.load(std::memory_order_relaxed);
  CommandView cmd;
  std::vector<TxnOp> one(1);
  for (const raft::Entry& e : entries) {
    RAFT_ASSERT(e.index == rev + 1, "apply of index " + std::to_string(e.index) +
                                        " after revision " + std::to_string(rev));
    if (e.type == raft::EntryType::kNormal && !e.data.empty()) {
      if (!DecodeCommand(e.data, &cmd)) {
        revision_.store(rev, std::memory_order_release);
        return raft::Status(
            raft::Code::kCorruption,
            "committed entry " + std::to_string(e.index) +
                " is not a command this version knows (format version " +
                std::to_string(static_cast<uint8_t>(e.data[0])) + ", op " +
                std::to_string(e.data.size() > 1 ? static_cast<uint8_t>(e.data[1]) : 0) + ")");
      }
      bool want = options.want_result && options.want_result(e.index);
      std::shared_ptr<Result> result = want ? std::make_shared<Result>() : nullptr;
      if (cmd.op >= Op::kLeaseGrant) {
        ResultCode code = ApplyLease(cmd, e.index, result.get(), options);
        if (result) {
          result->code = code;
          result->revision = e.index;
        }
        applied->push_back(Applied{e.index, cmd.id, code, std::move(result)});
        rev = e.index;
        continue;
      }
      const std::vector<TxnOp>* ops = &one;
      bool succeeded = true;
      if (cmd.op == Op::kTxn) {
        succeeded = AllHold(cmd.compares);
        ops = succeeded ? &cmd.success : &cmd.failure;
      } else {
        one[0] = cmd.single;
      }
      ResultCode code = Check(*ops);
      if (code == ResultCode::kOk) RunOps(*ops, e.index, result.get(), options);
      if (result) {
        result->code = code;
        result->revision = e.index;
        result->succeeded = succeeded;
        if (code != ResultCode::kOk) result->ops.clear();
      }
      applied->push_back(Applied{e.index, cmd.id, code, std::move(result)});
    }
    rev = e.index;
  }
  revision_.store(rev, std::memory_order_release);
  return raft::Status::Ok();
}

Result Store::Read(const TxnOp& op) const {
  std::shared_lock lock(mu_);
  Result r;
  r.revision = revision_.load(std::memory_order_relaxed);
  r.ops.resize(1);
  ReadOp(op, &r.ops[0]);
  return r;
}

Result Store::ReadTxn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success,
                      const std::vector<TxnOp>& failure) const {
  std::shared_lock lock(mu_);
  Result r;
  r.revision = revision_.load(std::memory_order_relaxed);
  r.succeeded = AllHold(compares);
  const std::vector<TxnOp>& ops = r.succeeded ? success : failure;
  r.ops.resize(ops.size());
  for (size_t i = 0; i < ops.size(); i++) ReadOp(ops[i], &r.ops[i]);
  return r;
}

std::string Store::Snapshot() const {
  // Only the driver thread writes, and it is the caller: no lock needed for
  // reading, but take the shared one to keep the contract simple.
  std::shared_lock lock(mu_);
  uint8_t version = keys_.leases.empty() ? kImageV1 : kImageV2;
  size_t count = keys_.index.size();
  size_t bytes = 1 + 8 + 8 + 8 + 8;
  for (const Node& n : keys_.tree) bytes += 8 + n.key.size() + n.value.size() + 32;
  std::string out;
  out.reserve(bytes);
  PutU8(&out, version);
  PutU64(&out, revision_.load(std::memory_order_relaxed));
  PutU64(&out, count);
  for (const Node& n : keys_.tree) {
    PutBytes(&out, n.key);
    PutBytes(&out, n.value);
    PutU64(&out, n.meta.create_revision);
    PutU64(&out, n.meta.mod_revision);
    PutU64(&out, n.meta.version);
    if (version == kImageV2) PutU64(&out, n.meta.lease);
  }
  if (version == kImageV2) {
    std::vector<LeaseInfo> leases = LeasesLocked();
    PutU64(&out, leases.size());
    for (const LeaseInfo& l : leases) {
      PutU64(&out, l.id);
      PutU64(&out, l.ttl_ms);
      PutU64(&out, l.renewed_at);
    }
  }
  PutU64(&out, XXH3_64bits(out.data(), out.size()));
  return out;
}

raft::Status SetImageRevision(std::string* image, uint64_t revision) {
  auto corrupt = [](const std::string& why) {
    return raft::Status(raft::Code::kCorruption, "snapshot image: " + why);
  };
  if (image->size() < 1 + 8 + 8 + 8) return corrupt("too short");
  const size_t body = image->size() - 8;
  if (XXH3_64bits(image->data(), body) != LoadLE(image->data() + body, 8)) {
    return corrupt("checksum mismatch");
  }
  const auto version = static_cast<uint8_t>((*image)[0]);
  if (version != kImageV1 && version != kImageV2) {
    return corrupt("unknown version " + std::to_string(version));
  }
  std::string rev;
  PutU64(&rev, revision);
  image->replace(1, 8, rev);
  std::string sum;
  PutU64(&sum, XXH3_64bits(image->data(), body));
  image->replace(body, 8, sum);
  return raft::Status::Ok();
}

raft::Status Store::Restore(std::string_view image) {
  auto corrupt = [](const std::string& why) {
    return raft::Status(raft::Code::kCorruption, "snapshot image: " + why);
  };
  if (image.size() < 1 + 8 + 8 + 8) return corrupt("too short");
  uint64_t want = LoadLE(image.data() + image.size() - 8, 8);
  if (XXH3_64bits(image.data(), image.size() - 8) != want) return corrupt("checksum mismatch");
  Reader r(image.substr(0, image.size() - 8));
  uint8_t version = 0;
  uint64_t rev = 0, count = 0;
  if (!r.U8(&version) || (version != kImageV1 && version != kImageV2)) {
    return corrupt("unknown version " + std::to_string(version));
  }
  if (!r.U64(&rev) || !r.U64(&count)) return corrupt("truncated header");
  // Each record takes at least 32 bytes: bound the count before reserving.
  if (count > r.left() / 32) return corrupt("key count " + std::to_string(count) + " too large");
  auto keys = std::make_unique<Keys>();
  keys->index.reserve(count);
  const Node* prev = nullptr;
  for (uint64_t i = 0; i < count; i++) {
    std::string_view key, value;
    KeyMeta meta;
    if (!r.Bytes(&key) || !r.Bytes(&value) || !r.U64(&meta.create_revision) ||
        !r.U64(&meta.mod_revision) || !r.U64(&meta.version) ||
        (version == kImageV2 && !r.U64(&meta.lease))) {
      return corrupt("truncated record " + std::to_string(i));
    }
    if (prev && key <= prev->key) {
      return corrupt("keys out of order at record " + std::to_string(i));
    }
    Node* n = new Node;
    n->key.assign(key.data(), key.size());
    n->value.assign(value.data(), value.size());
    n->meta = meta;
    keys->index.insert(n);
    keys->tree.insert_unique(keys->tree.end(), *n);  // In order: constant time.
    prev = n;
  }
  if (version == kImageV2) {
    uint64_t leases = 0;
    if (!r.U64(&leases)) return corrupt("truncated lease table");
    if (leases > r.left() / 24) {
      return corrupt("lease count " + std::to_string(leases) + " too large");
    }
    uint64_t prev_id = 0;
    for (uint64_t i = 0; i < leases; i++) {
      uint64_t id = 0;
      Lease l;
      if (!r.U64(&id) || !r.U64(&l.ttl_ms) || !r.U64(&l.renewed_at)) {
        return corrupt("truncated lease " + std::to_string(i));
      }
      if (id == 0 || id <= prev_id)
        return corrupt("lease ids out of order at lease " + std::to_string(i));
      prev_id = id;
      keys->leases.emplace(id, std::move(l));
    }
  }
  for (Node& n : keys->tree) {
    if (n.meta.lease == 0) continue;
    auto it = keys->leases.find(n.meta.lease);
    if (it == keys->leases.end()) {
      return corrupt("key attached to lease " + std::to_string(n.meta.lease) +
                     ", which the image does not hold");
    }
    it->second.keys.insert(&n);
  }
  if (!r.done()) return corrupt("trailing bytes");
  {
    std::unique_lock lock(mu_);
    keys_.index.swap(keys->index);
    keys_.tree.swap(keys->tree);
    keys_.leases.swap(keys->leases);
    revision_.store(rev, std::memory_order_release);
  }
  return raft::Status::Ok();  // `keys` now holds the old state and frees it unlocked.
}

bool Store::Get(std::string_view key, std::string* value, KeyMeta* meta) const {
  std::shared_lock lock(mu_);
  const Node* n = Find(key);
  if (!n) return false;
  value->assign(n->value);
  if (meta) *meta = n->meta;
  return true;
}

std::vector<LeaseInfo> Store::LeasesLocked() const {
  std::vector<LeaseInfo> out;
  out.reserve(keys_.leases.size());
  for (const auto& [id, l] : keys_.leases) out.push_back(LeaseInfo{id, l.ttl_ms, l.renewed_at});
  std::sort(out.begin(), out.end(),
            [](const LeaseInfo& a, const LeaseInfo& b) { return a.id < b.id; });
  return out;
}

std::vector<LeaseInfo> Store::Leases() const {
  std::shared_lock lock(mu_);
  return LeasesLocked();
}

size_t Store::lease_count() const {
  std::shared_lock lock(mu_);
  return keys_.leases.size();
}

bool Store::GetLease(uint64_t id, LeaseInfo* out, std::vector<std::string>* keys) const {
  std::shared_lock lock(mu_);
  auto it = keys_.leases.find(id);
  if (it == keys_.leases.end()) return false;
  *out = LeaseInfo{id, it->second.ttl_ms, it->second.renewed_at};
  if (keys) {
    keys->clear();
    for (const Node* n : it->second.keys) keys->push_back(n->key);
    std::sort(keys->begin(), keys->end());
  }
  return true;
}

size_t Store::size() const {
  std::shared_lock lock(mu_);
  return keys_.index.size();
}

uint64_t Store::Hash() const {
  std::shared_lock lock(mu_);
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  uint64_t rev = revision_.load(std::memory_order_relaxed);
  XXH3_64bits_update(st, &rev, sizeof rev);
  std::string rec;
  for (const Node& n : keys_.tree) {
    rec.clear();
    PutBytes(&rec, n.key);
    PutBytes(&rec, n.value);
    PutU64(&rec, n.meta.create_revision);
    PutU64(&rec, n.meta.mod_revision);
    PutU64(&rec, n.meta.version);
    PutU64(&rec, n.meta.lease);
    XXH3_64bits_update(st, rec.data(), rec.size());
  }
  for (const LeaseInfo& l : LeasesLocked()) {
    rec.clear();
    PutU64(&rec, l.id);
    PutU64(&rec, l.ttl_ms);
    PutU64(&rec, l.renewed_at);
    XXH3_64bits_update(st, rec.data(), rec.size());
  }
  uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

}  // namespace raftkv::kv
