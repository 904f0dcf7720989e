// WAL group-commit benchmark: N concurrent writers each append one 64-byte
// entry at a time and wait until it is durable (as the Raft driver of N
// independent clients would). Reports appends/s, fsyncs/s and entries per
// fsync for 1, 16 and 256 writers, then a summary table.
//
//   wal_bench [--fsync=always|never] [--wal_dir=DIR] [benchmark flags]
//
// --fsync=never skips fsync: it is for measuring the CPU cost only, and the
// numbers are not durable writes. --wal_dir should be on the disk you care
// about (default /tmp).
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "storage/wal.h"

namespace {

using raftkv::storage::FsyncMode;
using raftkv::storage::Wal;
using raftkv::storage::WalBatch;
using raftkv::storage::WalOptions;
using raftkv::storage::WalStats;
using Clock = std::chrono::steady_clock;

FsyncMode g_fsync = FsyncMode::kAlways;
std::string g_base = "/tmp";

// Shared by the threads of one run; set up and torn down by thread 0 (the
// benchmark library holds all threads at a barrier around the timed loop).
std::unique_ptr<Wal> g_wal;
std::string g_dir;
std::atomic<uint64_t> g_next_index{1};
WalStats g_start_stats;
Clock::time_point g_start;

struct Result {
  double appends_per_s = 0, fsyncs_per_s = 0, entries_per_fsync = 0, fsync_us_avg = 0;
};
std::map<int, Result> g_results;  // By thread count; the last (longest) run wins.

void Setup() {
  char tmpl[4096];
  std::snprintf(tmpl, sizeof(tmpl), "%s/raftkv-walbench-XXXXXX", g_base.c_str());
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  g_dir = tmpl;
  WalOptions o;
  o.dir = g_dir;
  o.cluster_id = 1;
  o.node_id = 1;
  o.fsync = g_fsync;
  raftkv::storage::WalRecovery rec;
  auto replay = [](raftkv::storage::RecordType, std::string_view,
                   const raftkv::storage::RecordLocation&) { return raftkv::raft::Status::Ok(); };
  raftkv::raft::Status s = Wal::Open(o, replay, &rec, &g_wal);
  if (!s.ok()) {
    std::fprintf(stderr, "wal_bench: %s\n", s.ToString().c_str());
    std::exit(1);
  }
  g_next_index = 1;
  g_start_stats = g_wal->stats();
  g_start = Clock::now();
}

void BM_WalAppend64B(benchmark::State& state) {
  if (state.thread_index() == 0) Setup();
  const std::string payload(64, 'x');
  for (auto _ : state) {
    WalBatch b;
    raftkv::raft::Entry e;
    e.term = 1;
    e.index = g_next_index.fetch_add(1, std::memory_order_relaxed);
    e.data = payload;
    b.AddEntry(e);
    raftkv::raft::Status s = g_wal->SubmitAndWait(std::move(b));
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    double secs = std::chrono::duration<double>(Clock::now() - g_start).count();
    WalStats end = g_wal->stats();
    double entries = static_cast<double>(end.entries - g_start_stats.entries);
    double fsyncs = static_cast<double>(end.fsyncs - g_start_stats.fsyncs);
    Result r;
    r.appends_per_s = entries / secs;
    r.fsyncs_per_s = fsyncs / secs;
    r.entries_per_fsync = fsyncs > 0 ? entries / fsyncs : 0;
    r.fsync_us_avg =
        fsyncs > 0 ? (end.fsync_latency_us_total - g_start_stats.fsync_latency_us_total) / fsyncs
                   : 0;
    state.counters["appends_per_s"] = r.appends_per_s;
    state.counters["fsyncs_per_s"] = r.fsyncs_per_s;
    state.counters["entries_per_fsync"] = r.entries_per_fsync;
    state.counters["fsync_us_avg"] = r.fsync_us_avg;
    g_results[state.threads()] = r;
    state.SetLabel(std::string("fsync=") + (g_fsync == FsyncMode::kAlways ? "always" : "never"));
    g_wal.reset();
    std::error_code ec;
    std::filesystem::remove_all(g_dir, ec);
  }
}

BENCHMARK(BM_WalAppend64B)->Threads(1)->Threads(16)->Threads(256)->UseRealTime()->MinTime(3.0);

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; i++) {
    if (std::strncmp(argv[i], "--fsync=", 8) == 0) {
      if (!raftkv::storage::ParseFsyncMode(argv[i] + 8, &g_fsync)) {
        std::fprintf(stderr, "wal_bench: --fsync must be always or never\n");
        return 2;
      }
    } else if (std::strncmp(argv[i], "--wal_dir=", 10) == 0) {
      g_base = argv[i] + 10;
    } else {
      rest.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 2;
  std::printf("wal_bench: WAL in %s, fsync %s\n", g_base.c_str(),
              raftkv::storage::FsyncModeName(g_fsync));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  std::printf("\n| writers | appends/s | fsyncs/s | entries per fsync | fsync us avg |\n");
  std::printf("| ---: | ---: | ---: | ---: | ---: |\n");
  for (const auto& [threads, r] : g_results) {
    std::printf("| %d | %.0f | %.0f | %.1f | %.0f |\n", threads, r.appends_per_s, r.fsyncs_per_s,
                r.entries_per_fsync, r.fsync_us_avg);
  }
  if (g_results.count(1) && g_results.count(256) && g_results[1].appends_per_s > 0) {
    std::printf("\n256 writers vs 1: %.1fx the appends/s (target: at least 50x)\n",
                g_results[256].appends_per_s / g_results[1].appends_per_s);
  }
  if (g_fsync == FsyncMode::kNever) {
    std::printf("NOTE: --fsync=never: nothing was made durable; not a storage result.\n");
  }
  return 0;
}
