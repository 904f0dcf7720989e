// The simulated nodes' state machine: a tiny key-value map, and the encoding
// of the client commands that the log carries.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace raftkv::sim {

// A Put command as carried in the data of a Normal log entry. op_id is unique
// per client invocation, so a client recognizes its own entry when a node
// applies it.
struct Command {
  uint64_t op_id = 0;
  std::string key;
  std::string value;
};

std::string EncodeCommand(const Command& cmd);
// False if data is not a command (e.g. the leader's empty no-op).
bool DecodeCommand(const std::string& data, Command* out);

// The state machine. Deterministic: applying the same commands in the same
// order on every node yields the same map (and the same Hash()).
class KvStore {
 public:
  void Apply(const Command& cmd) { map_[cmd.key] = cmd.value; }
  // False if key is absent.
  bool Get(const std::string& key, std::string* value) const;

  // Snapshot image: the whole map, length-prefixed.
  std::string Serialize() const;
  // Replaces the map with a snapshot image; false (map cleared) if malformed.
  bool Restore(const std::string& data);
  void Clear() { map_.clear(); }

  // A hash of the contents, compared across nodes at equal applied indexes.
  uint64_t Hash() const;
  size_t size() const { return map_.size(); }

 private:
  std::map<std::string, std::string> map_;
};

}  // namespace raftkv::sim
