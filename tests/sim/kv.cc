#include "kv.h"

#include "trace.h"

namespace raftkv::sim {

namespace {

void PutString(std::string* out, const std::string& s) {
  out->append(std::to_string(s.size()));
  out->push_back(':');
  out->append(s);
}

bool GetString(const std::string& in, size_t* pos, std::string* out) {
  size_t colon = in.find(':', *pos);
  if (colon == std::string::npos || colon == *pos || colon - *pos > 9) return false;
  size_t len = 0;
  for (size_t i = *pos; i < colon; i++) {
    if (in[i] < '0' || in[i] > '9') return false;
    len = len * 10 + static_cast<size_t>(in[i] - '0');
  }
  if (in.size() - (colon + 1) < len) return false;
  out->assign(in, colon + 1, len);
  *pos = colon + 1 + len;
  return true;
}

}  // namespace

// Format: "P" op_id ";" len ":" key len ":" value. Text, so that traces and
// debuggers show it as is.
std::string EncodeCommand(const Command& cmd) {
  std::string out = "P" + std::to_string(cmd.op_id) + ";";
  PutString(&out, cmd.key);
  PutString(&out, cmd.value);
  return out;
}

bool DecodeCommand(const std::string& data, Command* out) {
  if (data.size() < 3 || data[0] != 'P') return false;
  size_t semi = data.find(';');
  if (semi == std::string::npos || semi == 1 || semi > 21) return false;
  uint64_t id = 0;
  for (size_t i = 1; i < semi; i++) {
    if (data[i] < '0' || data[i] > '9') return false;
    id = id * 10 + static_cast<uint64_t>(data[i] - '0');
  }
  size_t pos = semi + 1;
  Command cmd;
  cmd.op_id = id;
  if (!GetString(data, &pos, &cmd.key) || !GetString(data, &pos, &cmd.value)) return false;
  if (pos != data.size()) return false;
  *out = std::move(cmd);
  return true;
}

bool KvStore::Get(const std::string& key, std::string* value) const {
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  *value = it->second;
  return true;
}

std::string KvStore::Serialize() const {
  std::string out = "KV" + std::to_string(map_.size()) + ";";
  for (const auto& [k, v] : map_) {
    PutString(&out, k);
    PutString(&out, v);
  }
  return out;
}

bool KvStore::Restore(const std::string& data) {
  map_.clear();
  if (data.size() < 3 || data[0] != 'K' || data[1] != 'V') return false;
  size_t semi = data.find(';');
  if (semi == std::string::npos || semi == 2) return false;
  size_t n = 0;
  for (size_t i = 2; i < semi; i++) {
    if (data[i] < '0' || data[i] > '9') return false;
    n = n * 10 + static_cast<size_t>(data[i] - '0');
  }
  size_t pos = semi + 1;
  for (size_t i = 0; i < n; i++) {
    std::string k, v;
    if (!GetString(data, &pos, &k) || !GetString(data, &pos, &v)) {
      map_.clear();
      return false;
    }
    map_[k] = v;
  }
  if (pos != data.size()) {
    map_.clear();
    return false;
  }
  return true;
}

uint64_t KvStore::Hash() const {
  uint64_t h = 0x84222325cbf29ce4ULL;
  for (const auto& [k, v] : map_) {
    h = HashBytes(h, k);
    h = HashBytes(h, v);
  }
  return h;
}

}  // namespace raftkv::sim
