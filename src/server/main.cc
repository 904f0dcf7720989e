// raftkv: one node of a Raft-replicated key-value store (see --help).
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>

#include "server/options.h"
#include "server/restore.h"
#include "server/server.h"

namespace {

using raftkv::server::ParseResult;

// The exit status for a parse that ends the process (help, version: 0; a bad
// flag: 2), after printing its message; -1 to run.
int ExitFor(ParseResult r, const std::string& message) {
  switch (r) {
    case ParseResult::kExitOk:
      std::printf("%s\n", message.c_str());
      return 0;
    case ParseResult::kExitError:
      std::fprintf(stderr, "%s\n", message.c_str());
      return 2;
    case ParseResult::kRun:
      break;
  }
  return -1;
}

// raftkv restore ...: offline, no logger (its errors go to stderr).
int Restore(int argc, char** argv) {
  raftkv::server::RestoreOptions options;
  std::string message;
  int rc = ExitFor(raftkv::server::ParseRestoreOptions(argc, argv, &options, &message), message);
  if (rc >= 0) return rc;
  std::string summary;
  raftkv::raft::Status s = raftkv::server::RestoreDataDir(options, &summary);
  if (!s.ok()) {
    std::fprintf(stderr, "raftkv restore: %s\n", s.message().c_str());
    return 1;
  }
  std::printf("%s\n", summary.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "restore") == 0) return Restore(argc, argv);
  raftkv::server::Options options;
  std::string message;
  int rc = ExitFor(raftkv::server::ParseOptions(argc, argv, &options, &message), message);
  if (rc >= 0) return rc;

  // One line per event, naming the node: "<time> <level> [<name>] <event>".
  auto logger = spdlog::stderr_logger_mt("raftkv");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %L [" + options.name + "] %v");
  logger->set_level(spdlog::level::from_str(options.log_level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);

  raftkv::server::Server server(options);
  raftkv::raft::Status s = server.Start();
  if (!s.ok()) {
    spdlog::critical("cannot start: {}", s.ToString());
    return 1;
  }
  server.RunUntilSignal();
  return 0;
}
