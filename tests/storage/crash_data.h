// What the crash writer writes at each index, so that the crash test can
// check every recovered entry byte for byte.
#pragma once

#include <cstdint>
#include <string>

#include "storage/disk_storage.h"

namespace raftkv::storage::crash {

inline constexpr uint64_t kClusterId = 42;
inline constexpr uint64_t kNodeId = 1;
inline constexpr uint64_t kSegmentBytes = 64 << 10;

inline StorageOptions Options() {
  StorageOptions o;
  o.cluster_id = kClusterId;
  o.node_id = kNodeId;
  o.segment_bytes = kSegmentBytes;
  return o;
}

inline std::string EntryData(uint64_t index) {
  uint64_t h = index * 0x9e3779b97f4a7c15ULL;
  size_t len = 8 + static_cast<size_t>((h >> 40) % 400);
  std::string s = "i" + std::to_string(index) + ":";
  while (s.size() < len) {
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    s.push_back(static_cast<char>('a' + (h >> 59)));
  }
  return s;
}

inline std::string SnapshotData(uint64_t index) { return "state-through-" + std::to_string(index); }

}  // namespace raftkv::storage::crash
