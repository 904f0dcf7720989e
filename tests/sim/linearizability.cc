#include "linearizability.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <unordered_set>
#include <utility>

namespace raftkv::sim {

namespace {

// Register state: the id of the value currently stored, or kAbsent.
constexpr int kAbsent = -1;
// A Get that read a value no Put of this key wrote.
constexpr int kUnwritten = -2;

std::string TimeString(uint64_t t) { return t == kNever ? "?" : std::to_string(t); }

// One explored configuration: which ops are linearized, and the state after.
struct Config {
  std::vector<uint64_t> bits;
  int state;
  bool operator==(const Config& o) const { return state == o.state && bits == o.bits; }
};

struct ConfigHash {
  size_t operator()(const Config& c) const {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ static_cast<uint64_t>(c.state + 2);
    for (uint64_t w : c.bits) {
      h ^= w + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
      h *= 0xbf58476d1ce4e5b9ULL;
    }
    return static_cast<size_t>(h ^ (h >> 31));
  }
};

// Lowe's doubly linked list of call and return entries, in time order.
struct Entry {
  int op = -1;
  bool is_call = false;
  int match = -1;  // Call: index of its return entry.
  int prev = -1;
  int next = -1;
};

class KeyChecker {
 public:
  KeyChecker(std::string key, std::vector<KvOp> ops, const LinearizabilityOptions& options)
      : key_(std::move(key)), ops_(std::move(ops)), options_(options) {}

  // Returns false with *explanation on a violation; sets *inconclusive when
  // the budget ran out.
  bool Check(std::string* explanation, bool* inconclusive, uint64_t* states);
  uint64_t stuck_op() const { return stuck_op_; }

 private:
  bool Prepare(std::string* explanation);
  bool Step(int state, const KvOp& op, int value, int* next) const;
  void Lift(int call);
  void Unlift(int call);
  std::string Explain();

  std::string key_;
  std::vector<KvOp> ops_;
  LinearizabilityOptions options_;
  std::vector<int> value_of_;   // Per op: the value id it writes or expects to read.
  std::vector<Entry> entries_;  // entries_[0] is the list head.

  // The deepest partial linearization found, for explanations.
  std::vector<int> best_order_;
  int best_state_ = kAbsent;
  uint64_t stuck_op_ = 0;
};

bool KeyChecker::Prepare(std::string* explanation) {
  // Give each distinct written value an id; count how often each is written.
  std::map<std::string, int> ids;
  std::map<std::string, int> writes;
  for (const KvOp& op : ops_) {
    if (op.kind != OpKind::kPut) continue;
    ids.emplace(op.value, static_cast<int>(ids.size()));
    writes[op.value]++;
  }

  if (options_.assume_unique_values) {
    // Earliest response of a completed Get that observed each value.
    std::map<std::string, uint64_t> first_seen;
    for (const KvOp& op : ops_) {
      if (op.kind != OpKind::kGet || !op.found || op.response == kNever) continue;
      auto [it, inserted] = first_seen.emplace(op.value, op.response);
      if (!inserted) it->second = std::min(it->second, op.response);
    }
    std::vector<KvOp> kept;
    for (KvOp& op : ops_) {
      if (op.kind == OpKind::kPut && op.response == kNever && writes[op.value] == 1) {
        auto it = first_seen.find(op.value);
        // Nobody saw it: whether or not it happened, no completed op can tell.
        if (it == first_seen.end()) continue;
        if (it->second < op.invoke) {
          *explanation = "a get returned " + op.value +
                         " before the put writing it was invoked: " + DescribeOp(op);
          stuck_op_ = op.id;
          return false;
        }
        // Someone saw it: it took effect before that read returned.
        op.response = it->second;
      }
      kept.push_back(std::move(op));
    }
    ops_ = std::move(kept);
  }

  value_of_.assign(ops_.size(), kAbsent);
  for (size_t i = 0; i < ops_.size(); i++) {
    const KvOp& op = ops_[i];
    if (op.kind == OpKind::kPut || op.found) {
      auto it = ids.find(op.value);
      value_of_[i] = it == ids.end() ? kUnwritten : it->second;
    }
    if (op.kind == OpKind::kGet && value_of_[i] == kUnwritten) {
      *explanation = "a get returned a value that no put wrote: " + DescribeOp(op);
      stuck_op_ = op.id;
      return false;
    }
  }

  // Entries sorted by time; at equal times calls come first, so an op that
  // responds at the instant another is invoked counts as concurrent with it.
  struct Event {
    uint64_t time;
    bool is_return;
    int op;
  };
  std::vector<Event> events;
  events.reserve(ops_.size() * 2);
  for (size_t i = 0; i < ops_.size(); i++) {
    events.push_back({ops_[i].invoke, false, static_cast<int>(i)});
    events.push_back({ops_[i].response, true, static_cast<int>(i)});
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    if (a.time != b.time) return a.time < b.time;
    if (a.is_return != b.is_return) return !a.is_return;
    return a.op < b.op;
  });
  entries_.assign(events.size() + 1, Entry{});
  std::vector<int> call_entry(ops_.size(), -1);
  for (size_t i = 0; i < events.size(); i++) {
    Entry& e = entries_[i + 1];
    e.op = events[i].op;
    e.is_call = !events[i].is_return;
    e.prev = static_cast<int>(i);
    e.next = i + 1 < events.size() ? static_cast<int>(i + 2) : -1;
    if (e.is_call) {
      call_entry[e.op] = static_cast<int>(i + 1);
    } else {
      entries_[call_entry[e.op]].match = static_cast<int>(i + 1);
    }
  }
  entries_[0].next = events.empty() ? -1 : 1;
  return true;
}

bool KeyChecker::Step(int state, const KvOp& op, int value, int* next) const {
  if (op.kind == OpKind::kPut) {
    *next = value;
    return true;
  }
  *next = state;
  return op.found ? state == value : state == kAbsent;
}

void KeyChecker::Lift(int call) {
  for (int e : {call, entries_[call].match}) {
    Entry& x = entries_[e];
    entries_[x.prev].next = x.next;
    if (x.next != -1) entries_[x.next].prev = x.prev;
  }
}

void KeyChecker::Unlift(int call) {
  for (int e : {entries_[call].match, call}) {
    Entry& x = entries_[e];
    entries_[x.prev].next = e;
    if (x.next != -1) entries_[x.next].prev = e;
  }
}

bool KeyChecker::Check(std::string* explanation, bool* inconclusive, uint64_t* states) {
  if (!Prepare(explanation)) return false;

  size_t completed = 0;
  for (const KvOp& op : ops_) completed += op.response != kNever;
  size_t linearized_completed = 0;

  std::unordered_set<Config, ConfigHash> seen;
  Config cur{std::vector<uint64_t>((ops_.size() + 63) / 64, 0), kAbsent};
  struct Frame {
    int call;
    int state;
  };
  std::vector<Frame> stack;

  int entry = entries_[0].next;
  while (linearized_completed < completed) {
    // A completed op's return is always still in the list here, so the walk
    // meets one before running off the end.
    const Entry& e = entries_[entry];
    if (e.is_call) {
      int next_state;
      if (Step(cur.state, ops_[e.op], value_of_[e.op], &next_state)) {
        Config next = cur;
        next.bits[e.op / 64] |= uint64_t{1} << (e.op % 64);
        next.state = next_state;
        if (seen.insert(next).second) {
          if (seen.size() > options_.max_states) {
            *inconclusive = true;
            *states += seen.size();
            return true;
          }
          stack.push_back({entry, cur.state});
          cur = std::move(next);
          if (ops_[e.op].response != kNever) linearized_completed++;
          Lift(entry);
          if (stack.size() > best_order_.size()) {
            best_order_.clear();
            for (const Frame& f : stack) best_order_.push_back(entries_[f.call].op);
            best_state_ = cur.state;
          }
          entry = entries_[0].next;
          continue;
        }
      }
      entry = e.next;
    } else {
      // This op returned before we found a place for it: undo the last choice.
      if (stack.empty()) {
        *states += seen.size();
        *explanation = Explain();
        return false;
      }
      Frame f = stack.back();
      stack.pop_back();
      int op = entries_[f.call].op;
      cur.bits[op / 64] &= ~(uint64_t{1} << (op % 64));
      cur.state = f.state;
      if (ops_[op].response != kNever) linearized_completed--;
      Unlift(f.call);
      entry = entries_[f.call].next;
    }
  }
  *states += seen.size();
  return true;
}

std::string KeyChecker::Explain() {
  std::vector<bool> done(ops_.size(), false);
  for (int op : best_order_) done[op] = true;
  // The op that blocked the longest partial linearization: the unlinearized
  // completed op that returns first.
  int stuck = -1;
  for (size_t i = 0; i < ops_.size(); i++) {
    if (done[i] || ops_[i].response == kNever) continue;
    if (stuck == -1 || ops_[i].response < ops_[stuck].response) stuck = static_cast<int>(i);
  }
  std::string out = "key " + key_ + ": " + std::to_string(ops_.size()) +
                    " ops; the longest linearizable prefix has " +
                    std::to_string(best_order_.size()) + " ops\n";
  size_t from = best_order_.size() > 8 ? best_order_.size() - 8 : 0;
  out += "  its last ops:\n";
  for (size_t i = from; i < best_order_.size(); i++) {
    out += "    " + DescribeOp(ops_[best_order_[i]]) + "\n";
  }
  std::string value = "(absent)";
  for (size_t i = 0; i < ops_.size(); i++) {
    if (ops_[i].kind == OpKind::kPut && value_of_[i] == best_state_) value = ops_[i].value;
  }
  out += "  value after it: " + value + "\n";
  if (stuck >= 0) {
    const KvOp& s = ops_[stuck];
    stuck_op_ = s.id;
    out += "  no op order explains: " + DescribeOp(s) + "\n";
    out += "  ops overlapping it:\n";
    int shown = 0;
    for (size_t i = 0; i < ops_.size() && shown < 24; i++) {
      if (static_cast<int>(i) == stuck) continue;
      if (ops_[i].invoke <= s.response && ops_[i].response >= s.invoke) {
        out += "    " + DescribeOp(ops_[i]) + (done[i] ? "" : "  (not linearized)") + "\n";
        shown++;
      }
    }
  }
  return out;
}

}  // namespace

std::string DescribeOp(const KvOp& op) {
  std::string s = "#" + std::to_string(op.id) + " c" + std::to_string(op.client) + " ";
  if (op.kind == OpKind::kPut) {
    s += "put(" + op.key + ", " + op.value + ")";
  } else {
    s += "get(" + op.key + ") -> " + (op.found ? op.value : std::string("(absent)"));
  }
  s += " [" + TimeString(op.invoke) + ", " + TimeString(op.response) + "]";
  return s;
}

LinearizabilityResult CheckLinearizable(const std::vector<KvOp>& history,
                                        const LinearizabilityOptions& options) {
  // P-compositionality: split by key (std::map for a stable key order).
  std::map<std::string, std::vector<KvOp>> by_key;
  for (const KvOp& op : history) {
    if (op.kind == OpKind::kGet && op.response == kNever) continue;
    by_key[op.key].push_back(op);
  }
  LinearizabilityResult result;
  for (auto& [key, ops] : by_key) {
    KeyChecker checker(key, std::move(ops), options);
    std::string explanation;
    bool inconclusive = false;
    if (!checker.Check(&explanation, &inconclusive, &result.states)) {
      result.ok = false;
      result.key = key;
      result.explanation = explanation;
      result.stuck_op = checker.stuck_op();
      return result;
    }
    if (inconclusive) result.inconclusive = true;
  }
  return result;
}

}  // namespace raftkv::sim
