#include "child.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

extern char** environ;

namespace raftkv::ctltest {

using Clock = std::chrono::steady_clock;

Child::Child(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  // A child that exits before reading its stdin must not kill the test.
  signal(SIGPIPE, SIG_IGN);
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    return;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::vector<std::string> envs;
  for (char** e = environ; *e; e++) {
    if (std::strncmp(*e, "RAFTKV_ENDPOINTS=", 17) != 0) envs.push_back(*e);
  }
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> args, envp;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const std::string& e : envs) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  in_ = in[1];
  out_fd_ = out[0];
  err_fd_ = err[0];
  fcntl(out_fd_, F_SETFL, O_NONBLOCK);
  fcntl(err_fd_, F_SETFL, O_NONBLOCK);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << argv[0] << ": " << std::strerror(rc);
    pid_ = -1;
  }
}

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
  }
  for (int fd : {in_, out_fd_, err_fd_}) {
    if (fd >= 0) close(fd);
  }
}

void Child::FinishStdin(const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(in_, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // The child closed its stdin.
    off += static_cast<size_t>(n);
  }
  close(in_);
  in_ = -1;
}

bool Child::Pump(milliseconds wait) {
  pollfd fds[2];
  int n = 0;
  for (int fd : {out_fd_, err_fd_}) {
    if (fd >= 0) fds[n++] = pollfd{fd, POLLIN, 0};
  }
  if (n == 0) return false;
  if (poll(fds, n, static_cast<int>(wait.count())) <= 0) return true;
  for (int i = 0; i < n; i++) {
    if (fds[i].revents == 0) continue;
    const bool is_out = fds[i].fd == out_fd_;
    char buf[65536];
    ssize_t r = read(fds[i].fd, buf, sizeof buf);
    if (r > 0) {
      (is_out ? out_ : err_).append(buf, static_cast<size_t>(r));
    } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
      close(fds[i].fd);
      (is_out ? out_fd_ : err_fd_) = -1;
    }
  }
  return out_fd_ >= 0 || err_fd_ >= 0;
}

bool Child::ReadUntil(const std::function<bool(const std::string&)>& cond, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!cond(out_)) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left <= milliseconds(0)) return false;
    if (!Pump(std::min(left, milliseconds(50)))) return cond(out_);
  }
  return true;
}

int Child::Wait(milliseconds timeout) {
  if (pid_ <= 0) return -1;
  const auto deadline = Clock::now() + timeout;
  // Both pipes reach their end when the child exits (it starts no others).
  while (Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (!Pump(std::min(left, milliseconds(50)))) break;
  }
  while (!reaped_) {
    pid_t r = waitpid(pid_, &status_, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      break;
    }
    if (Clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
      reaped_ = true;
      return -1;
    }
    usleep(5000);  // Only between its pipes' end and its exit: microseconds.
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

void Child::Signal(int sig) {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

RunResult RunCtl(const std::vector<std::string>& args, const std::string& stdin_data,
                 milliseconds timeout, const std::vector<std::string>& env) {
  std::vector<std::string> argv = {RAFTKVCTL_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto start = Clock::now();
  Child c(argv, env);
  c.FinishStdin(stdin_data);
  RunResult r;
  r.code = c.Wait(timeout);
  r.out = c.out();
  r.err = c.err();
  r.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  return r;
}

}  // namespace raftkv::ctltest
