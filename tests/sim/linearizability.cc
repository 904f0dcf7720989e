#include "linearizability.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <unordered_set>
#include <utility>

namespace raftkv::sim {

namespace {

// A key's value: the id of the value stored, or kAbsent.
constexpr int kAbsent = -1;
// A read of a value that no op wrote.
constexpr int kUnwritten = -2;

// A group's state: the value at each of its (at most two) keys, one 32-bit
// slot each.
using State = uint64_t;
constexpr int kMaxGroupKeys = 2;

int ValueAt(State s, int slot) {
  return static_cast<int32_t>(static_cast<uint32_t>(s >> (32 * slot)));
}

State WithValue(State s, int slot, int value) {
  const uint64_t mask = uint64_t{0xffffffff} << (32 * slot);
  return (s & ~mask) | (uint64_t{static_cast<uint32_t>(value)} << (32 * slot));
}

constexpr State kEmptyState = ~State{0};  // kAbsent in every slot.

std::string TimeString(uint64_t t) { return t == kNever ? "?" : std::to_string(t); }

bool IsWrite(OpKind k) { return k == OpKind::kPut || k == OpKind::kCas || k == OpKind::kTxnPut; }
bool IsRead(OpKind k) { return k == OpKind::kGet || k == OpKind::kTxnGet; }

// One explored configuration: which ops are linearized, and the state after.
struct Config {
  std::vector<uint64_t> bits;
  State state;
  bool operator==(const Config& o) const { return state == o.state && bits == o.bits; }
};

struct ConfigHash {
  size_t operator()(const Config& c) const {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ c.state;
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

// An op's values as ids, and the slots of its keys in the group.
struct Prepared {
  int slot = 0;
  int slot2 = 0;
  int write = kAbsent;  // Put, Cas, TxnPut.
  int write2 = kAbsent;
  int read = kAbsent;  // Get, TxnGet, failed Cas: the value read.
  int read2 = kAbsent;
  int expect = kAbsent;  // Cas.
};

class GroupChecker {
 public:
  // `keys`: the group's keys (at most kMaxGroupKeys); slot i holds keys[i].
  GroupChecker(std::vector<std::string> keys, std::vector<KvOp> ops,
               const LinearizabilityOptions& options)
      : keys_(std::move(keys)), ops_(std::move(ops)), options_(options) {}

  // Returns false with *explanation on a violation; sets *inconclusive when
  // the budget ran out.
  bool Check(std::string* explanation, bool* inconclusive, uint64_t* states);
  uint64_t stuck_op() const { return stuck_op_; }

 private:
  // Drops or completes unknown writes (assume_unique_values).
  bool PruneUnknownWrites(std::string* explanation);
  bool Prepare(std::string* explanation);
  bool Step(State state, const KvOp& op, const Prepared& p, State* next) const;
  void Lift(int call);
  void Unlift(int call);
  std::string Explain();
  std::string DescribeState(State s) const;
  int Slot(const std::string& key) const { return key == keys_[0] ? 0 : 1; }
  std::string GroupName() const { return keys_.size() == 1 ? keys_[0] : keys_[0] + "," + keys_[1]; }

  std::vector<std::string> keys_;
  std::vector<KvOp> ops_;
  LinearizabilityOptions options_;
  std::map<std::string, int> ids_;  // Every written value's id.
  std::vector<Prepared> prepared_;  // Per op.
  std::vector<Entry> entries_;      // entries_[0] is the list head.

  // The deepest partial linearization found, for explanations.
  std::vector<int> best_order_;
  State best_state_ = kEmptyState;
  uint64_t stuck_op_ = 0;
};

// The values an op read, with whether it found them (a successful Cas read
// its expected value).
void ForEachRead(const KvOp& op, const std::function<void(const std::string&)>& f) {
  if (op.response == kNever) return;
  if ((op.kind == OpKind::kGet || op.kind == OpKind::kTxnGet) && op.found) f(op.value);
  if (op.kind == OpKind::kTxnGet && op.found2) f(op.value2);
  if (op.kind == OpKind::kCas && !op.succeeded && op.found) f(op.value);
  if (op.kind == OpKind::kCas && op.succeeded && op.expect_found) f(op.expect);
}

void ForEachWrite(const KvOp& op, const std::function<void(const std::string&)>& f) {
  // A failed Cas wrote nothing: its value is what it read.
  if (op.kind == OpKind::kCas && op.response != kNever && !op.succeeded) return;
  if (IsWrite(op.kind)) f(op.value);
  if (op.kind == OpKind::kTxnPut) f(op.value2);
}

bool GroupChecker::PruneUnknownWrites(std::string* explanation) {
  std::map<std::string, int> writes;
  for (const KvOp& op : ops_) ForEachWrite(op, [&](const std::string& v) { writes[v]++; });
  // Earliest response of a completed op that read each value.
  std::map<std::string, uint64_t> first_seen;
  for (const KvOp& op : ops_) {
    ForEachRead(op, [&](const std::string& v) {
      auto [it, inserted] = first_seen.emplace(v, op.response);
      if (!inserted) it->second = std::min(it->second, op.response);
    });
  }
  // An unknown Cas whose value was read succeeded: by then it had read its
  // expected value too (which may be all that shows an unknown write
  // before it took effect), and so on down a chain of them.
  for (bool changed = true; changed;) {
    changed = false;
    for (const KvOp& op : ops_) {
      if (op.kind != OpKind::kCas || op.response != kNever || !op.expect_found) continue;
      auto seen = first_seen.find(op.value);
      if (seen == first_seen.end()) continue;
      auto [it, inserted] = first_seen.emplace(op.expect, seen->second);
      if (inserted || seen->second < it->second) {
        it->second = seen->second;
        changed = true;
      }
    }
  }
  std::vector<KvOp> kept;
  for (KvOp& op : ops_) {
    if (IsWrite(op.kind) && op.response == kNever) {
      bool unique = true;
      uint64_t seen = kNever;
      ForEachWrite(op, [&](const std::string& v) {
        unique = unique && writes[v] == 1;
        auto it = first_seen.find(v);
        if (it != first_seen.end()) seen = std::min(seen, it->second);
      });
      if (unique) {
        // Nobody saw it: whether or not it happened, no completed op can tell.
        if (seen == kNever) continue;
        if (seen < op.invoke) {
          *explanation =
              "an op read a value before the op writing it was invoked: " + DescribeOp(op);
          stuck_op_ = op.id;
          return false;
        }
        // Someone saw it: it took effect (a Cas succeeded) before that read
        // returned.
        op.response = seen;
        op.succeeded = true;
      }
    }
    kept.push_back(std::move(op));
  }
  ops_ = std::move(kept);
  return true;
}

bool GroupChecker::Prepare(std::string* explanation) {
  for (const KvOp& op : ops_) {
    ForEachWrite(op, [&](const std::string& v) { ids_.emplace(v, static_cast<int>(ids_.size())); });
  }
  if (options_.assume_unique_values && !PruneUnknownWrites(explanation)) return false;

  auto id = [this](bool found, const std::string& v) {
    if (!found) return kAbsent;
    auto it = ids_.find(v);
    return it == ids_.end() ? kUnwritten : it->second;
  };
  prepared_.assign(ops_.size(), Prepared{});
  for (size_t i = 0; i < ops_.size(); i++) {
    const KvOp& op = ops_[i];
    Prepared& p = prepared_[i];
    p.slot = Slot(op.key);
    bool two = op.kind == OpKind::kTxnPut || op.kind == OpKind::kTxnGet;
    if (two) p.slot2 = Slot(op.key2);
    if (IsWrite(op.kind)) p.write = id(true, op.value);
    if (op.kind == OpKind::kTxnPut) p.write2 = id(true, op.value2);
    if (op.kind == OpKind::kCas) p.expect = id(op.expect_found, op.expect);
    bool reads = IsRead(op.kind) || (op.kind == OpKind::kCas && !op.succeeded);
    if (reads) {
      p.read = id(op.found, op.value);
      if (op.kind == OpKind::kTxnGet) p.read2 = id(op.found2, op.value2);
      if (p.read == kUnwritten || p.read2 == kUnwritten) {
        *explanation = "an op read a value that no op wrote: " + DescribeOp(op);
        stuck_op_ = op.id;
        return false;
      }
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

bool GroupChecker::Step(State state, const KvOp& op, const Prepared& p, State* next) const {
  *next = state;
  switch (op.kind) {
    case OpKind::kPut:
      *next = WithValue(state, p.slot, p.write);
      return true;
    case OpKind::kGet:
      return ValueAt(state, p.slot) == p.read;
    case OpKind::kDelete:
      *next = WithValue(state, p.slot, kAbsent);
      return true;
    case OpKind::kCas: {
      bool holds = ValueAt(state, p.slot) == p.expect;
      if (op.response == kNever) {
        // Unknown: it applied its put if the compare held, else nothing.
        if (holds) *next = WithValue(state, p.slot, p.write);
        return true;
      }
      if (op.succeeded) {
        *next = WithValue(state, p.slot, p.write);
        return holds;
      }
      return !holds && ValueAt(state, p.slot) == p.read;
    }
    case OpKind::kTxnPut:
      *next = WithValue(WithValue(state, p.slot, p.write), p.slot2, p.write2);
      return true;
    case OpKind::kTxnGet:
      return ValueAt(state, p.slot) == p.read && ValueAt(state, p.slot2) == p.read2;
  }
  return false;
}

void GroupChecker::Lift(int call) {
  for (int e : {call, entries_[call].match}) {
    Entry& x = entries_[e];
    entries_[x.prev].next = x.next;
    if (x.next != -1) entries_[x.next].prev = x.prev;
  }
}

void GroupChecker::Unlift(int call) {
  for (int e : {entries_[call].match, call}) {
    Entry& x = entries_[e];
    entries_[x.prev].next = e;
    if (x.next != -1) entries_[x.next].prev = e;
  }
}

bool GroupChecker::Check(std::string* explanation, bool* inconclusive, uint64_t* states) {
  if (!Prepare(explanation)) return false;

  size_t completed = 0;
  for (const KvOp& op : ops_) completed += op.response != kNever;
  size_t linearized_completed = 0;

  std::unordered_set<Config, ConfigHash> seen;
  Config cur{std::vector<uint64_t>((ops_.size() + 63) / 64, 0), kEmptyState};
  struct Frame {
    int call;
    State state;
  };
  std::vector<Frame> stack;

  int entry = entries_[0].next;
  while (linearized_completed < completed) {
    // A completed op's return is always still in the list here, so the walk
    // meets one before running off the end.
    const Entry& e = entries_[entry];
    if (e.is_call) {
      State next_state;
      if (Step(cur.state, ops_[e.op], prepared_[e.op], &next_state)) {
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

std::string GroupChecker::Explain() {
  std::vector<bool> done(ops_.size(), false);
  for (int op : best_order_) done[op] = true;
  // The op that blocked the longest partial linearization: the unlinearized
  // completed op that returns first.
  int stuck = -1;
  for (size_t i = 0; i < ops_.size(); i++) {
    if (done[i] || ops_[i].response == kNever) continue;
    if (stuck == -1 || ops_[i].response < ops_[stuck].response) stuck = static_cast<int>(i);
  }
  std::string out = "keys " + GroupName() + ": " + std::to_string(ops_.size()) +
                    " ops; the longest linearizable prefix has " +
                    std::to_string(best_order_.size()) + " ops\n";
  size_t from = best_order_.size() > 8 ? best_order_.size() - 8 : 0;
  out += "  its last ops:\n";
  for (size_t i = from; i < best_order_.size(); i++) {
    out += "    " + DescribeOp(ops_[best_order_[i]]) + "\n";
  }
  out += "  state after it: " + DescribeState(best_state_) + "\n";
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

std::string GroupChecker::DescribeState(State s) const {
  std::string out;
  for (size_t slot = 0; slot < keys_.size(); slot++) {
    int v = ValueAt(s, static_cast<int>(slot));
    std::string value = "(absent)";
    for (const auto& [text, id] : ids_) {
      if (id == v) value = text;
    }
    out += (slot == 0 ? "" : ", ") + keys_[slot] + "=" + value;
  }
  return out;
}

}  // namespace

std::string DescribeOp(const KvOp& op) {
  auto read = [](bool found, const std::string& v) { return found ? v : std::string("(absent)"); };
  std::string s = "#" + std::to_string(op.id) + " c" + std::to_string(op.client) + " ";
  switch (op.kind) {
    case OpKind::kPut:
      s += "put(" + op.key + ", " + op.value + ")";
      break;
    case OpKind::kGet:
      s += "get(" + op.key + ") -> " + read(op.found, op.value);
      break;
    case OpKind::kDelete:
      s += "delete(" + op.key + ")";
      break;
    case OpKind::kCas:
      // A failed one's value is what it read.
      if (op.response != kNever && !op.succeeded) {
        s += "cas(" + op.key + ", " + read(op.expect_found, op.expect) + " -> ...) failed, read " +
             read(op.found, op.value);
      } else {
        s += "cas(" + op.key + ", " + read(op.expect_found, op.expect) + " -> " + op.value + ")" +
             (op.response != kNever ? " ok" : "");
      }
      break;
    case OpKind::kTxnPut:
      s += "txn put(" + op.key + "=" + op.value + ", " + op.key2 + "=" + op.value2 + ")";
      break;
    case OpKind::kTxnGet:
      s += "txn get(" + op.key + ", " + op.key2 + ") -> (" + read(op.found, op.value) + ", " +
           read(op.found2, op.value2) + ")";
      break;
  }
  s += " [" + TimeString(op.invoke) + ", " + TimeString(op.response) + "]";
  return s;
}

LinearizabilityResult CheckLinearizable(const std::vector<KvOp>& history,
                                        const LinearizabilityOptions& options) {
  // P-compositionality: split into groups of keys that no op links to
  // another key (a union-find over the keys of two-key ops).
  std::map<std::string, std::string> parent;
  std::function<std::string(const std::string&)> root = [&](const std::string& k) {
    auto it = parent.find(k);
    if (it == parent.end() || it->second == k) return k;
    it->second = root(it->second);
    return it->second;
  };
  for (const KvOp& op : history) {
    if (op.response != kNever && op.response < op.invoke) {
      LinearizabilityResult bad;
      bad.ok = false;
      bad.key = op.key;
      bad.explanation = "an op returns before it is invoked: " + DescribeOp(op);
      bad.stuck_op = op.id;
      return bad;
    }
    parent.emplace(op.key, op.key);
    if (op.kind == OpKind::kTxnPut || op.kind == OpKind::kTxnGet) {
      parent.emplace(op.key2, op.key2);
      std::string a = root(op.key), b = root(op.key2);
      if (a != b) parent[std::max(a, b)] = std::min(a, b);
    }
  }
  // std::map for a stable group order.
  std::map<std::string, std::vector<std::string>> keys_of;
  for (const auto& [key, unused] : parent) keys_of[root(key)].push_back(key);
  std::map<std::string, std::vector<KvOp>> by_group;
  for (const KvOp& op : history) {
    bool read = IsRead(op.kind);
    if (read && op.response == kNever) continue;
    by_group[root(op.key)].push_back(op);
  }
  LinearizabilityResult result;
  for (auto& [group, ops] : by_group) {
    std::vector<std::string>& keys = keys_of[group];
    if (keys.size() > static_cast<size_t>(kMaxGroupKeys)) {
      result.ok = false;
      result.key = keys[0] + "...";
      result.explanation = "two-key ops link " + std::to_string(keys.size()) +
                           " keys into one group; the checker handles at most " +
                           std::to_string(kMaxGroupKeys);
      return result;
    }
    GroupChecker checker(keys, std::move(ops), options);
    std::string explanation;
    bool inconclusive = false;
    if (!checker.Check(&explanation, &inconclusive, &result.states)) {
      result.ok = false;
      result.key = keys.size() == 1 ? keys[0] : keys[0] + "," + keys[1];
      result.explanation = explanation;
      result.stuck_op = checker.stuck_op();
      return result;
    }
    if (inconclusive) result.inconclusive = true;
  }
  return result;
}

}  // namespace raftkv::sim
