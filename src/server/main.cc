// raftkv: one node of a Raft-replicated key-value store (see --help).
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "server/options.h"
#include "server/server.h"

int main(int argc, char** argv) {
  using raftkv::server::ParseResult;
  raftkv::server::Options options;
  std::string message;
  switch (raftkv::server::ParseOptions(argc, argv, &options, &message)) {
    case ParseResult::kExitOk:
      std::fputs(message.c_str(), stdout);
      std::fputs("\n", stdout);
      return 0;
    case ParseResult::kExitError:
      std::fprintf(stderr, "%s\n", message.c_str());
      return 2;
    case ParseResult::kRun:
      break;
  }

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
