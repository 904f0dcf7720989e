#include "kv/store.h"

#include <xxhash.h>

#include <algorithm>
#include <mutex>

#include "kv/encoding.h"

namespace raftkv::kv {

namespace {
constexpr uint8_t kSnapshotFormatVersion = 1;
}  // namespace

size_t Store::KeyHash::operator()(std::string_view s) const {
  return static_cast<size_t>(XXH3_64bits(s.data(), s.size()));
}

raft::Status Store::Apply(std::span<const raft::Entry> entries, std::vector<Applied>* applied) {
  if (entries.empty()) return raft::Status::Ok();
  std::unique_lock lock(mu_);
  uint64_t rev = revision_.load(std::memory_order_relaxed);
  for (const raft::Entry& e : entries) {
    RAFT_ASSERT(e.index == rev + 1, "apply of index " + std::to_string(e.index) +
                                        " after revision " + std::to_string(rev));
    if (e.type == raft::EntryType::kNormal && !e.data.empty()) {
      CommandView cmd;
      if (!DecodeCommand(e.data, &cmd)) {
        revision_.store(rev, std::memory_order_release);
        return raft::Status(raft::Code::kCorruption,
                            "committed entry " + std::to_string(e.index) +
                                " is not a command this version knows (format version " +
                                std::to_string(static_cast<uint8_t>(e.data[0])) + ")");
      }
      switch (cmd.op) {
        case Op::kPut: {
          auto it = map_.find(cmd.key);
          if (it == map_.end()) {
            it = map_.emplace(std::string(cmd.key), Record{}).first;
            it->second.meta.create_revision = e.index;
          }
          it->second.value.assign(cmd.value.data(), cmd.value.size());
          it->second.meta.mod_revision = e.index;
          it->second.meta.version++;
          break;
        }
      }
      applied->push_back(Applied{e.index, cmd.id});
    }
    rev = e.index;
  }
  revision_.store(rev, std::memory_order_release);
  return raft::Status::Ok();
}

std::vector<const Store::Map::value_type*> Store::SortedLocked() const {
  std::vector<const Map::value_type*> items;
  items.reserve(map_.size());
  for (const auto& kv : map_) items.push_back(&kv);
  std::sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
  return items;
}

std::string Store::Snapshot() const {
  // Only the driver thread writes, and it is the caller: no lock needed for
  // reading, but take the shared one to keep the contract simple.
  std::shared_lock lock(mu_);
  std::vector<const Map::value_type*> items = SortedLocked();
  size_t bytes = 1 + 8 + 8 + 8;
  for (auto* kv : items) bytes += 8 + kv->first.size() + kv->second.value.size() + 24;
  std::string out;
  out.reserve(bytes);
  PutU8(&out, kSnapshotFormatVersion);
  PutU64(&out, revision_.load(std::memory_order_relaxed));
  PutU64(&out, items.size());
  for (auto* kv : items) {
    PutBytes(&out, kv->first);
    PutBytes(&out, kv->second.value);
    PutU64(&out, kv->second.meta.create_revision);
    PutU64(&out, kv->second.meta.mod_revision);
    PutU64(&out, kv->second.meta.version);
  }
  PutU64(&out, XXH3_64bits(out.data(), out.size()));
  return out;
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
  if (!r.U8(&version) || version != kSnapshotFormatVersion) return corrupt("unknown version");
  if (!r.U64(&rev) || !r.U64(&count)) return corrupt("truncated header");
  // Each record takes at least 32 bytes: bound the count before reserving.
  if (count > r.left() / 32) return corrupt("key count " + std::to_string(count) + " too large");
  Map map;
  map.reserve(count);
  std::string_view prev;
  for (uint64_t i = 0; i < count; i++) {
    std::string_view key, value;
    KeyMeta meta;
    if (!r.Bytes(&key) || !r.Bytes(&value) || !r.U64(&meta.create_revision) ||
        !r.U64(&meta.mod_revision) || !r.U64(&meta.version)) {
      return corrupt("truncated record " + std::to_string(i));
    }
    if (i > 0 && key <= prev) return corrupt("keys out of order at record " + std::to_string(i));
    prev = key;
    map.emplace(std::string(key), Record{std::string(value), meta});
  }
  if (!r.done()) return corrupt("trailing bytes");
  std::unique_lock lock(mu_);
  map_ = std::move(map);
  revision_.store(rev, std::memory_order_release);
  return raft::Status::Ok();
}

bool Store::Get(std::string_view key, std::string* value, KeyMeta* meta) const {
  std::shared_lock lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  value->assign(it->second.value);
  if (meta) *meta = it->second.meta;
  return true;
}

size_t Store::size() const {
  std::shared_lock lock(mu_);
  return map_.size();
}

uint64_t Store::Hash() const {
  std::shared_lock lock(mu_);
  std::vector<const Map::value_type*> items = SortedLocked();
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  uint64_t rev = revision_.load(std::memory_order_relaxed);
  XXH3_64bits_update(st, &rev, sizeof rev);
  for (auto* kv : items) {
    std::string rec;
    PutBytes(&rec, kv->first);
    PutBytes(&rec, kv->second.value);
    PutU64(&rec, kv->second.meta.create_revision);
    PutU64(&rec, kv->second.meta.mod_revision);
    PutU64(&rec, kv->second.meta.version);
    XXH3_64bits_update(st, rec.data(), rec.size());
  }
  uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

}  // namespace raftkv::kv
