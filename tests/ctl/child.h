// Running raftkvctl as a user would: a child process with its stdin, stdout
// and stderr on pipes, read with deadlines. The destructor SIGKILLs and
// reaps a child still running, so a failing test leaves nothing behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace raftkv::ctltest {

using std::chrono::milliseconds;

class Child {
 public:
  // Starts argv[0] with the given arguments. The environment is the test's,
  // without RAFTKV_ENDPOINTS, plus `env` ("NAME=value" items).
  explicit Child(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Writes all of `data` to the child's stdin (small inputs: the pipe's
  // buffer holds them) and closes it.
  void FinishStdin(const std::string& data);
  // Reads the child's output until `cond(stdout)` holds (true) or the timeout passes (false).
  bool ReadUntil(const std::function<bool(const std::string&)>& cond, milliseconds timeout);
  // Reads until the child exits and returns its exit code (128+N if a signal
  // N ended it), or -1 if it did not exit in time (it is then killed).
  int Wait(milliseconds timeout);
  void Signal(int sig);

  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  // Reads what the pipes hold, waiting at most `wait` for something. False
  // once both have reached their end.
  bool Pump(milliseconds wait);

  pid_t pid_ = -1;
  int in_ = -1, out_fd_ = -1, err_fd_ = -1;
  std::string out_, err_;
  bool reaped_ = false;
  int status_ = 0;
};

struct RunResult {
  int code = -1;
  std::string out, err;
  milliseconds elapsed{0};
};

// Runs raftkvctl with `args` and `stdin_data` to its end (at most `timeout`).
RunResult RunCtl(const std::vector<std::string>& args, const std::string& stdin_data = "",
                 milliseconds timeout = milliseconds(60000),
                 const std::vector<std::string>& env = {});

}  // namespace raftkv::ctltest
