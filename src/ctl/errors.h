// raftkvctl's exit codes and the Status that carries one with its message
// (docs/raftkvctl.md, "Exit codes"). Every command returns a Status; main
// prints a failed one's message to stderr and exits with its code.
#pragma once

#include <string>
#include <utility>

namespace raftkv::ctl {

// The exit codes scripts rely on. Their numbers are part of the interface:
// never renumber, only add.
enum class Exit : int {
  kOk = 0,
  kError = 1,           // Anything else: the server refused the request, a bad answer, ...
  kUsage = 2,           // Bad flags, arguments or input files; nothing was sent.
  kNotFound = 3,        // The key or lease does not exist.
  kCompareFailed = 4,   // A condition (CAS flag, txn compare) did not hold.
  kUnavailable = 5,     // No endpoint could serve the request; a write was not applied.
  kCompacted = 6,       // watch: the revision left the history; list again.
  kOutcomeUnknown = 7,  // A write got no answer: it may or may not have been applied.
  kConflict = 8,        // The cluster refused a membership change or leader transfer (a 409).
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Exit code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status Usage(std::string m) { return Status(Exit::kUsage, std::move(m)); }
  static Status Error(std::string m) { return Status(Exit::kError, std::move(m)); }

  bool ok() const { return code_ == Exit::kOk; }
  Exit code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Exit code_ = Exit::kOk;
  std::string message_;
};

}  // namespace raftkv::ctl
