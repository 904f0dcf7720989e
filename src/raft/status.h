// Status: how an operation that can fail for an expected reason reports it.
//
// Errors cross module boundaries as values, never as exceptions (see
// shared/STYLE.md). A broken invariant is not a Status: it is a bug and
// crashes through RAFT_ASSERT.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

namespace raftkv::raft {

enum class Code {
  kOk = 0,
  kNotLeader,           // This node is not the leader; leader_hint says who is.
  kTransferInProgress,  // A leadership transfer is running; proposals wait.
  kEntryTooLarge,       // A proposed entry is over Config::max_entry_bytes.
  kTooManyUncommitted,  // Uncommitted bytes would pass Config::max_uncommitted_bytes.
  kConfChangePending,   // A membership change is not yet committed.
  kInvalidArgument,     // The request itself is wrong (unknown node, bad change).
  kTooManyReads,        // Pending read requests reached Config::max_pending_reads.
  kUnavailable,         // Index compacted away or not yet known.
  kCorruption,          // Stored data failed a check.
  kIoError,             // The operating system refused a read or write.
};

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

const char* CodeName(Code code);

[[noreturn]] void AssertFailed(const char* expr, const char* file, int line,
                               const std::string& context);

}  // namespace raftkv::raft

// Assertions stay on in every build type: a broken invariant must stop the
// process loudly, with context, rather than corrupt replicated state.
#define RAFT_ASSERT(cond, ...)                                                           \
  do {                                                                                   \
    if (!(cond))                                                                         \
      ::raftkv::raft::AssertFailed(#cond, __FILE__, __LINE__, std::string(__VA_ARGS__)); \
  } while (0)
