#include "raft/status.h"

namespace raftkv::raft {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kNotLeader:
      return "not leader";
    case Code::kTransferInProgress:
      return "leadership transfer in progress";
    case Code::kEntryTooLarge:
      return "entry too large";
    case Code::kTooManyUncommitted:
      return "too many uncommitted bytes";
    case Code::kConfChangePending:
      return "membership change pending";
    case Code::kInvalidArgument:
      return "invalid argument";
    case Code::kTooManyReads:
      return "too many pending reads";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kCorruption:
      return "corruption";
    case Code::kIoError:
      return "io error";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string s = CodeName(code_);
  if (!message_.empty()) s += ": " + message_;
  return s;
}

void AssertFailed(const char* expr, const char* file, int line, const std::string& context) {
  std::fprintf(stderr, "raftkv: assertion failed: %s at %s:%d%s%s\n", expr, file, line,
               context.empty() ? "" : ": ", context.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace raftkv::raft
