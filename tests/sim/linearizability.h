// A linearizability checker for histories of a key-value store whose
// operations are Put, Get, Delete and compare-and-swap on one key, and a put
// or a get of two keys at once (a transaction).
//
// The search is Wing & Gong's, with Lowe's improvements ("Testing for
// linearizability", 2017), as in Porcupine and Knossos: repeatedly try to
// linearize a minimal pending call, backtracking when some operation's return
// is reached before it was linearized, and remember every (set of linearized
// operations, state) already explored so no configuration is searched twice.
//
// Linearizability is P-compositional (Herlihy & Wing 1990, Horn & Kroening
// 2015): a history is linearizable iff each sub-history over a set of keys
// that no operation links to another key is. Keys are grouped by the
// transactions that span them (at most two keys per group), and each group
// is checked separately, which keeps the searched sets small.
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

enum class OpKind : uint8_t {
  kPut = 0,
  kGet = 1,
  // Removes key (whether it existed is not checked).
  kDelete = 2,
  // If key holds `expect` (expect_found) or is absent (!expect_found), put
  // `value`: succeeded. Otherwise nothing changes and the op read the key:
  // !succeeded, with `found`/`read` as a Get's.
  kCas = 3,
  // Puts `value` at key and `value2` at key2 at once.
  kTxnPut = 4,
  // Reads key and key2 at once: found/read and found2/read2.
  kTxnGet = 5,
};

struct KvOp {
  uint64_t id = 0;      // Unique per history; used in explanations.
  uint64_t client = 0;  // Used in explanations only.
  OpKind kind = OpKind::kPut;
  std::string key;
  // Put, Cas, TxnPut: the value written. Get, TxnGet: the value read, if
  // found; a failed Cas: the value it read.
  std::string value;
  // Get, TxnGet, failed Cas: false if the key was absent.
  bool found = true;
  // Cas.
  std::string expect;
  bool expect_found = true;
  bool succeeded = true;
  // TxnPut, TxnGet: the second key, as value and found are for the first.
  std::string key2;
  std::string value2;
  bool found2 = true;
  // Logical times; every invocation and response has a distinct time in the
  // simulator. An op whose response equals another's invocation is treated
  // as concurrent with it.
  uint64_t invoke = 0;
  uint64_t response = kNever;
};

struct LinearizabilityOptions {
  // Every value is written by one op only (the simulator guarantees it).
  // Under that assumption an unknown-outcome Put, Cas or TxnPut none of whose
  // values any op read can be dropped (if a linearization includes it, the
  // ops between it and the next write of its keys read nothing, so removing
  // it leaves one), and one whose value some op read must precede the
  // earliest such read, so it becomes a completed op responding then. This
  // shrinks the search a lot in stormy runs. Turn it off to exercise the
  // general search.
  bool assume_unique_values = true;
  // Bound on explored configurations per key; past it the result is
  // inconclusive (reported, not treated as a failure).
  uint64_t max_states = 1'000'000;
};

struct LinearizabilityResult {
  bool ok = true;
  bool inconclusive = false;  // Search budget exhausted on some key.
  std::string key;            // The keys of the first group that failed.
  std::string explanation;    // Human-readable context for a failure.
  uint64_t stuck_op = 0;      // Id of an op no linearization could place (0 if unknown).
  uint64_t states = 0;        // Configurations explored, over all keys.
};

// Checks a whole history. Gets and TxnGets with response kNever are ignored
// (a read that never returned had no effect). A history whose transactions
// link more than two keys into one group fails with an explanation saying so.
LinearizabilityResult CheckLinearizable(const std::vector<KvOp>& history,
                                        const LinearizabilityOptions& options = {});

// Formats one op for explanations, e.g. "#17 c2 put(k1, v9) [120, 131]".
std::string DescribeOp(const KvOp& op);

}  // namespace raftkv::sim
