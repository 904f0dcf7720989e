#include "checker.h"

#include <algorithm>
#include <cinttypes>

#include "trace.h"

namespace raftkv::sim {

uint64_t EntryHash(const raft::Entry& e) {
  return HashBytes(HashMix(0x5bd1e995ULL, static_cast<uint64_t>(e.type)), e.data);
}

void SafetyChecker::Fail(std::string what) {
  if (failure_.empty()) failure_ = std::move(what);
}

void SafetyChecker::OnLeader(raft::NodeId node, raft::Term term) {
  auto [it, inserted] = leaders_.emplace(term, node);
  if (!inserted && it->second != node) {
    Fail(StrFormat("election safety: term %" PRIu64 " has two leaders, n%" PRIu64 " and n%" PRIu64,
                   term, it->second, node));
  }
}

void SafetyChecker::OnPersist(raft::NodeId node, raft::Term prev_term, const raft::Entry* entries,
                              size_t count, const raft::Storage& storage) {
  if (count == 0) return;
  raft::HardState hs = storage.InitialHardState();
  // A node truncates its log only to resolve a conflict with a leader, and
  // committed entries never conflict (Raft paper 5.3 and 5.4).
  raft::Index overlap_end = std::min(storage.LastIndex(), hs.commit);
  for (size_t i = 0; i < count; i++) {
    const raft::Entry& e = entries[i];
    if (e.index > overlap_end) break;
    raft::Term t = 0;
    if (storage.TermAt(e.index, &t).ok() && t != e.term) {
      Fail(StrFormat("node invariant: n%" PRIu64 " overwrites its entry %" PRIu64 " (term %" PRIu64
                     ") with term %" PRIu64 " but has committed up to %" PRIu64,
                     node, e.index, t, e.term, hs.commit));
      return;
    }
  }
  raft::Term prev = prev_term;
  raft::Index expect = entries[0].index;
  for (size_t i = 0; i < count; i++) {
    const raft::Entry& e = entries[i];
    if (e.index != expect) {
      Fail(StrFormat("driver contract: n%" PRIu64 " got non-contiguous entries to persist (%" PRIu64
                     " after %" PRIu64 ")",
                     node, e.index, expect - 1));
      return;
    }
    if (e.term < prev) {
      Fail(StrFormat("log matching: n%" PRIu64 " persists entry %" PRIu64 " of term %" PRIu64
                     " after an entry of term %" PRIu64 " (terms must not decrease along a log)",
                     node, e.index, e.term, prev));
      return;
    }
    uint64_t h = EntryHash(e);
    auto [it, inserted] = log_.emplace(LogKey{e.index, e.term}, LogInfo{h, prev, node});
    if (!inserted && (it->second.hash != h || it->second.prev_term != prev)) {
      Fail(StrFormat("log matching: entry (index %" PRIu64 ", term %" PRIu64
                     ") persisted by n%" PRIu64 " differs from the one n%" PRIu64
                     " persisted (%s; previous term %" PRIu64 " vs %" PRIu64 ")",
                     e.index, e.term, node, it->second.node,
                     it->second.hash != h ? "different data" : "same data", prev,
                     it->second.prev_term));
      return;
    }
    prev = e.term;
    expect++;
  }
}

void SafetyChecker::OnHardState(raft::NodeId node, const raft::HardState& prev,
                                const raft::HardState& next, raft::Index last_index) {
  if (next.term < prev.term) {
    Fail(StrFormat("node invariant: n%" PRIu64 " persists term %" PRIu64 " after term %" PRIu64,
                   node, next.term, prev.term));
  } else if (next.term == prev.term && prev.vote != raft::kNoNode && next.vote != prev.vote) {
    Fail(StrFormat("node invariant: n%" PRIu64 " changes its vote in term %" PRIu64
                   " from n%" PRIu64 " to n%" PRIu64,
                   node, next.term, prev.vote, next.vote));
  } else if (next.commit < prev.commit) {
    Fail(StrFormat("node invariant: n%" PRIu64 " persists commit %" PRIu64 " after commit %" PRIu64,
                   node, next.commit, prev.commit));
  } else if (next.commit > last_index) {
    Fail(StrFormat("node invariant: n%" PRIu64 " persists commit %" PRIu64
                   " past its last log index %" PRIu64,
                   node, next.commit, last_index));
  }
}

void SafetyChecker::OnApply(raft::NodeId node, raft::Term node_term, const raft::Entry& e,
                            std::optional<uint64_t> state_hash) {
  if (e.index >= committed_.size()) committed_.resize(e.index + 1);
  Committed& c = committed_[e.index];
  uint64_t h = EntryHash(e);
  if (!c.set) {
    c.set = true;
    c.term = e.term;
    c.entry_hash = h;
    c.commit_term_bound = node_term;
    c.node = node;
  } else if (c.term != e.term || c.entry_hash != h) {
    Fail(StrFormat("state machine safety: n%" PRIu64 " applied (index %" PRIu64 ", term %" PRIu64
                   ") but n%" PRIu64 " applied (index %" PRIu64 ", term %" PRIu64 ")%s",
                   node, e.index, e.term, c.node, e.index, c.term,
                   c.term == e.term ? " with different data" : ""));
    return;
  } else {
    c.commit_term_bound = std::min(c.commit_term_bound, node_term);
  }
  if (!state_hash) return;
  if (!c.has_state) {
    c.has_state = true;
    c.state_hash = *state_hash;
    c.state_node = node;
    return;
  }
  state_comparisons_++;
  if (c.state_hash != *state_hash) {
    Fail(StrFormat("state machine safety: n%" PRIu64 " and n%" PRIu64
                   " have different key-value maps after applying index %" PRIu64,
                   node, c.state_node, e.index));
  }
}

void SafetyChecker::OnRestore(raft::NodeId node, const raft::SnapshotMeta& meta,
                              uint64_t state_hash) {
  if (meta.index >= committed_.size()) committed_.resize(meta.index + 1);
  Committed& c = committed_[meta.index];
  if (c.set && c.term != meta.term) {
    Fail(StrFormat("state machine safety: n%" PRIu64 " restored a snapshot at (index %" PRIu64
                   ", term %" PRIu64 ") but n%" PRIu64 " applied term %" PRIu64 " there",
                   node, meta.index, meta.term, c.node, c.term));
    return;
  }
  if (!c.has_state) {
    c.has_state = true;
    c.state_hash = state_hash;
    c.state_node = node;
    return;
  }
  state_comparisons_++;
  if (c.state_hash != state_hash) {
    Fail(StrFormat("state machine safety: n%" PRIu64 " restored a snapshot at index %" PRIu64
                   " whose key-value map differs from n%" PRIu64 "'s there",
                   node, meta.index, c.state_node));
  }
}

void SafetyChecker::OnBecameLeader(raft::NodeId node, raft::Term term,
                                   const raft::Storage& storage) {
  raft::Index first = storage.FirstIndex();
  raft::Index last = storage.LastIndex();
  // Entries before the snapshot are summarized by it; compare from the
  // snapshot's own index on.
  for (raft::Index i = first - 1; i < committed_.size(); i++) {
    const Committed& c = committed_[i];
    if (i == 0 || !c.set || c.commit_term_bound >= term) continue;
    if (i > last) {
      Fail(StrFormat("leader completeness: n%" PRIu64 " became leader of term %" PRIu64
                     " with last index %" PRIu64 " but index %" PRIu64 " (term %" PRIu64
                     ") was committed by term %" PRIu64,
                     node, term, last, i, c.term, c.commit_term_bound));
      return;
    }
    raft::Term t = 0;
    if (!storage.TermAt(i, &t).ok() || t != c.term) {
      Fail(StrFormat("leader completeness: n%" PRIu64 " became leader of term %" PRIu64
                     " with term %" PRIu64 " at index %" PRIu64 " but term %" PRIu64
                     " was committed there by term %" PRIu64,
                     node, term, t, i, c.term, c.commit_term_bound));
      return;
    }
  }
}

}  // namespace raftkv::sim
