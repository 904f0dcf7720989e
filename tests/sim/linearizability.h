// A linearizability checker for histories of a key-value store whose
// operations are Put(key, value) and Get(key).
//
// The search is Wing & Gong's, with Lowe's improvements ("Testing for
// linearizability", 2017), as in Porcupine and Knossos: repeatedly try to
// linearize a minimal pending call, backtracking when some operation's return
// is reached before it was linearized, and remember every (set of linearized
// operations, register state) already explored so no configuration is
// searched twice.
//
// Linearizability is P-compositional (Herlihy & Wing 1990, Horn & Kroening
// 2015): a history of independent keys is linearizable iff each key's
// sub-history is, so keys are checked separately, which keeps the searched
// sets small.
//
// Operations whose outcome is unknown (the client gave up: the node crashed,
// lost leadership, or the request timed out) have response time kNever: they
// may have taken effect at any point after their invocation, or never.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace raftkv::sim {

// Response time of an operation whose outcome is unknown.
inline constexpr uint64_t kNever = UINT64_MAX;

enum class OpKind : uint8_t { kPut = 0, kGet = 1 };

struct KvOp {
  uint64_t id = 0;      // Unique per history; used in explanations.
  uint64_t client = 0;  // Used in explanations only.
  OpKind kind = OpKind::kPut;
  std::string key;
  // Put: the value written. Get: the value read, if found.
  std::string value;
  // Get: false if the key was absent. Ignored for Put.
  bool found = true;
  // Logical times; every invocation and response has a distinct time in the
  // simulator. An op whose response equals another's invocation is treated
  // as concurrent with it.
  uint64_t invoke = 0;
  uint64_t response = kNever;
};

struct LinearizabilityOptions {
  // Values written by Puts are unique per key (the simulator guarantees it).
  // Under that assumption an unknown-outcome Put whose value no Get observed
  // can be dropped (if a linearization includes it, removing it leaves one),
  // and one whose value some Get observed must precede the earliest such Get,
  // so it becomes a completed op responding then. This shrinks the search a
  // lot in stormy runs. Turn it off to exercise the general search.
  bool assume_unique_values = true;
  // Bound on explored configurations per key; past it the result is
  // inconclusive (reported, not treated as a failure).
  uint64_t max_states = 1'000'000;
};

struct LinearizabilityResult {
  bool ok = true;
  bool inconclusive = false;  // Search budget exhausted on some key.
  std::string key;            // The first key that failed.
  std::string explanation;    // Human-readable context for a failure.
  uint64_t stuck_op = 0;      // Id of an op no linearization could place (0 if unknown).
  uint64_t states = 0;        // Configurations explored, over all keys.
};

// Checks a whole history. Gets with response kNever are ignored (a read that
// never returned had no effect).
LinearizabilityResult CheckLinearizable(const std::vector<KvOp>& history,
                                        const LinearizabilityOptions& options = {});

// Formats one op for explanations, e.g. "#17 c2 put(k1, v9) [120, 131]".
std::string DescribeOp(const KvOp& op);

}  // namespace raftkv::sim
