// raftkv-sim: runs the deterministic cluster simulator.
//
//   raftkv-sim --seed N [--nodes 3|5] [--ticks T] [--trace]   one run
//   raftkv-sim --seeds COUNT [--start S] [--nodes 3|5]         a campaign over S..S+COUNT-1
//   --disk=memory|wal                                          every node's disk (default: by seed)
//   --mutate=lease-reset                                       a known bug, for the lease checker
//
// A failing run prints its seed, the checker that fired and the last events;
// `--seed N --trace` replays it exactly and prints every event.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cluster.h"

namespace {

using raftkv::sim::DiskMode;
using raftkv::sim::RunResult;
using raftkv::sim::SimOptions;

struct Args {
  bool have_seed = false;
  uint64_t seed = 1;
  uint64_t seeds = 0;
  uint64_t start = 1;
  int nodes = 0;  // 0: alternate 3 and 5 by seed.
  DiskMode disk = DiskMode::kBySeed;
  uint64_t ticks = 5000;
  bool trace = false;
  bool faults = true;
  bool membership = true;
  bool schedules = true;
  bool mutate_lease_reset = false;
  bool verbose = false;
  bool fork = true;
};

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: raftkv-sim --seed N [--nodes 3|5] [--ticks T] [--trace] [--no-faults]\n"
               "                  [--no-membership] [--no-schedules] [--disk=memory|wal]\n"
               "       raftkv-sim --seeds COUNT [--start S] [--nodes 3|5] [--ticks T] [-v]\n"
               "                  [--no-fork] [--no-schedules] [--disk=memory|wal]\n"
               "Runs the deterministic Raft cluster simulator. A campaign alternates 3 and 5\n"
               "nodes by seed unless --nodes is given; it exits non-zero on any failure.\n"
               "--disk: memory (MemoryStorage) or wal (DiskStorage on an in-memory file\n"
               "system); by default wal for seeds with seed %% 4 < 2, memory for the others.\n"
               "--no-schedules: no targeted schedule (figure 8, divergence, ...) is drawn.\n"
               "--mutate=lease-reset: every new leader resets its lease deadlines (a bug the\n"
               "lease checker must catch: the run should fail with 'lease late').\n");
}

bool ParseU64(const char* s, uint64_t* out) {
  if (s == nullptr || *s == '\0') return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || s[0] == '-') return false;
  *out = v;
  return true;
}

// Returns false (after printing why) on a bad command line.
bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; i++) {
    std::string f = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    uint64_t n = 0;
    if (f == "--seed" && ParseU64(v, &a->seed)) {
      a->have_seed = true;
      i++;
    } else if (f == "--seeds" && ParseU64(v, &a->seeds)) {
      i++;
    } else if (f == "--start" && ParseU64(v, &a->start)) {
      i++;
    } else if (f == "--nodes" && ParseU64(v, &n) && (n == 3 || n == 5)) {
      a->nodes = static_cast<int>(n);
      i++;
    } else if (f == "--ticks" && ParseU64(v, &a->ticks) && a->ticks > 0) {
      i++;
    } else if (f == "--trace") {
      a->trace = true;
    } else if (f == "--disk=memory" || f == "--disk=wal") {
      a->disk = f == "--disk=wal" ? DiskMode::kWal : DiskMode::kMemory;
    } else if (f == "--no-faults") {
      a->faults = false;
    } else if (f == "--no-membership") {
      a->membership = false;
    } else if (f == "--no-schedules") {
      a->schedules = false;
    } else if (f == "--mutate=lease-reset") {
      a->mutate_lease_reset = true;
    } else if (f == "--no-fork") {
      a->fork = false;
    } else if (f == "-v" || f == "--verbose") {
      a->verbose = true;
    } else if (f == "-h" || f == "--help") {
      Usage(stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "raftkv-sim: bad argument '%s'%s\n", f.c_str(),
                   v != nullptr && f.rfind("--", 0) == 0 ? " (or its value)" : "");
      Usage(stderr);
      return false;
    }
  }
  if (a->have_seed == (a->seeds > 0)) {
    std::fprintf(stderr, "raftkv-sim: give exactly one of --seed N and --seeds COUNT\n");
    Usage(stderr);
    return false;
  }
  return true;
}

int NodesFor(const Args& a, uint64_t seed) {
  if (a.nodes != 0) return a.nodes;
  return seed % 2 == 0 ? 3 : 5;
}

void PrintFailure(const SimOptions& o, const RunResult& r) {
  std::fprintf(stderr,
               "\nFAIL seed=%" PRIu64
               " nodes=%d: %s\n  profile: %s\n"
               "  reproduce: raftkv-sim --seed %" PRIu64 " --nodes %d --ticks %" PRIu64
               " --disk=%s --trace\n  last %zu events:\n%s\n",
               o.seed, o.nodes, r.failure.c_str(), r.profile.c_str(), o.seed, o.nodes, o.ticks,
               raftkv::sim::DiskModeName(raftkv::sim::ResolveDiskMode(o.disk, o.seed)),
               o.trace_tail, r.trace_tail.c_str());
}

void PrintRun(const SimOptions& o, const RunResult& r, FILE* out) {
  const auto& s = r.stats;
  std::fprintf(
      out,
      "seed=%" PRIu64 " nodes=%d disk=%s %s ticks=%" PRIu64 " msgs=%" PRIu64 " lost=%" PRIu64
      " leaders=%" PRIu64 " crashes=%" PRIu64 " torn=%" PRIu64 " pauses=%" PRIu64
      " partitions=%" PRIu64 " snapshots=%" PRIu64 " chunked=%" PRIu64 " chunks=%" PRIu64
      " transfer_crashes=%" PRIu64 " taken=%" PRIu64 " persists=%" PRIu64 "/%" PRIu64
      " state_comparisons=%" PRIu64 " confchanges=%" PRIu64 " transfers=%" PRIu64 " writes=%" PRIu64
      "/%" PRIu64 "?/%" PRIu64 "x (del=%" PRIu64 " cas=%" PRIu64 "/%" PRIu64 "x txn=%" PRIu64
      ") reads=%" PRIu64 "/%" PRIu64 "x (txn=%" PRIu64 ") refused=%" PRIu64 " lin_states=%" PRIu64
      "%s hash=%016" PRIx64 "\n",
      o.seed, o.nodes, raftkv::sim::DiskModeName(raftkv::sim::ResolveDiskMode(o.disk, o.seed)),
      r.ok ? "ok" : "FAIL", s.ticks, s.messages, s.dropped, s.leaders, s.crashes, s.torn_crashes,
      s.pauses, s.partitions, s.snapshots_installed, s.chunked_installs, s.snapshot_chunks,
      s.transfer_crashes, s.taken, s.persists_overlapped, s.persists, s.state_comparisons,
      s.conf_changes, s.transfers, s.clients.puts_ok, s.clients.puts_unknown, s.clients.puts_failed,
      s.clients.deletes_ok, s.clients.cas_ok, s.clients.cas_failed, s.clients.txn_puts_ok,
      s.clients.gets_ok, s.clients.gets_failed, s.clients.txn_gets_ok, s.clients.refused,
      s.lin_states, r.lin_inconclusive ? " (INCONCLUSIVE)" : "", r.trace_hash);
  // The watches (watches.h).
  const auto& w = s.watches;
  std::fprintf(out,
               "  watches: %" PRIu64 " started, %" PRIu64 " events, ended %" PRIu64
               " compacted / %" PRIu64 " snapshot, %" PRIu64 " resumes, %" PRIu64
               " checked, %" PRIu64 " revisions compared across nodes\n",
               w.watches, w.events, w.ended_compacted, w.ended_snapshot, w.resumes, w.checks,
               w.revisions_compared);
  // The leases (leases.h).
  const auto& l = s.leases;
  const auto& lc = s.lease_clients;
  std::fprintf(out,
               "  leases: %" PRIu64 " granted, %" PRIu64 " keepalives, %" PRIu64
               " revoked, %" PRIu64 " expired (%" PRIu64 " expiry refs checked not early), %" PRIu64
               " armed / %" PRIu64 " checked not late (at most %" PRId64
               " ms from a deadline to its check), %" PRIu64 " state checks; clients: %" PRIu64
               " puts, %" PRIu64 " unknown, %" PRIu64 " refused\n",
               l.grants, l.keepalives, l.revokes, l.expiries, l.expiry_refs_checked, l.armed,
               l.late_checks, l.max_late_ms, l.state_checks, lc.puts_ok, lc.unknown, lc.refused);
  // The targeted schedules that fired (README.md, "Targeted schedules").
  if (s.figure8_crashes + s.figure8_isolations + s.divergences + s.snapshots_refused +
          s.lone_crashes >
      0) {
    std::fprintf(out,
                 "  schedules: figure8=%" PRIu64 "+%" PRIu64 " divergence=%" PRIu64 "/%" PRIu64
                 " refused=%" PRIu64 " lone=%" PRIu64 "/%" PRIu64 "/%" PRIu64 "\n",
                 s.figure8_crashes, s.figure8_isolations, s.divergences, s.divergent_entries,
                 s.snapshots_refused, s.lone_crashes, s.lone_term_changes, s.lone_term_crashes);
  }
}

// What a campaign needs to know about one run.
struct Outcome {
  bool ok = false;
  bool inconclusive = false;
  uint64_t ticks = 0;
  uint64_t snapshots_installed = 0;
  uint64_t chunked_installs = 0;  // Streamed in 2 or more chunks.
  uint64_t transfer_crashes = 0;  // Crashes while storing snapshot chunks.
  uint64_t taken = 0;             // Entries applied through TakeCommitted.
  uint64_t overlapped = 0;        // Persists during which the node took input.
  uint64_t state_comparisons = 0;
  // Targeted schedules: runs in which each fired, and how often.
  uint64_t figure8 = 0, divergences = 0, divergent_entries = 0, refused = 0, lone = 0,
           lone_term_changes = 0;
  // Leases: granted, expired, and checked not late.
  uint64_t lease_grants = 0, lease_expiries = 0, lease_late_checks = 0;
};

Outcome RunInProcess(const SimOptions& o, bool verbose) {
  RunResult r = raftkv::sim::RunSimulation(o);
  if (verbose) PrintRun(o, r, stdout);
  if (!r.ok) PrintFailure(o, r);
  std::fflush(stdout);
  std::fflush(stderr);
  return Outcome{r.ok,
                 r.lin_inconclusive,
                 r.stats.ticks,
                 r.stats.snapshots_installed,
                 r.stats.chunked_installs,
                 r.stats.transfer_crashes,
                 r.stats.taken,
                 r.stats.persists_overlapped,
                 r.stats.state_comparisons,
                 r.stats.figure8_crashes + r.stats.figure8_isolations,
                 r.stats.divergences,
                 r.stats.divergent_entries,
                 r.stats.snapshots_refused,
                 r.stats.lone_crashes,
                 r.stats.lone_term_changes,
                 r.stats.leases.grants,
                 r.stats.leases.expiries,
                 r.stats.leases.late_checks};
}

// Runs one seed in a child process, so that a core assertion (an abort)
// fails that seed rather than ending the campaign; the child prints its own
// report, with the trace, through the crash handler.
Outcome RunIsolated(const SimOptions& o, bool verbose) {
  int fds[2];
  if (pipe(fds) != 0) return RunInProcess(o, verbose);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return RunInProcess(o, verbose);
  }
  if (pid == 0) {
    close(fds[0]);
    Outcome out = RunInProcess(o, verbose);
    ssize_t written = write(fds[1], &out, sizeof(out));
    _exit(written == static_cast<ssize_t>(sizeof(out)) ? 0 : 1);
  }
  close(fds[1]);
  Outcome out;
  size_t got = 0;
  while (got < sizeof(out)) {
    ssize_t n = read(fds[0], reinterpret_cast<char*>(&out) + got, sizeof(out) - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got != sizeof(out)) {
    out = Outcome{};
    std::fprintf(stderr, "\nFAIL seed=%" PRIu64 " nodes=%d: the run died (%s %d)\n", o.seed,
                 o.nodes, WIFSIGNALED(status) ? "signal" : "exit status",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!ParseArgs(argc, argv, &a)) return 2;
  raftkv::sim::InstallCrashHandler();

  if (a.have_seed) {
    SimOptions o;
    o.seed = a.seed;
    o.nodes = NodesFor(a, a.seed);
    o.ticks = a.ticks;
    o.faults = a.faults;
    o.membership = a.membership;
    o.schedules = a.schedules;
    o.mutate_lease_reset = a.mutate_lease_reset;
    o.disk = a.disk;
    o.echo_trace = a.trace;
    RunResult r = raftkv::sim::RunSimulation(o);
    std::printf("profile: %s\n", r.profile.c_str());
    PrintRun(o, r, stdout);
    std::fflush(stdout);
    if (!r.ok) {
      PrintFailure(o, r);
      return 1;
    }
    return 0;
  }

  uint64_t runs = 0, ticks = 0, inconclusive = 0, snapshots = 0, chunked = 0, transfer_crashes = 0,
           taken = 0, overlapped = 0, state_comparisons = 0;
  Outcome sched;  // Sums of the targeted schedules' counts.
  std::vector<uint64_t> failed, unproven;
  uint64_t progress_every = a.seeds >= 10 ? a.seeds / 10 : 1;
  for (uint64_t seed = a.start; seed < a.start + a.seeds; seed++) {
    SimOptions o;
    o.seed = seed;
    o.nodes = NodesFor(a, seed);
    o.ticks = a.ticks;
    o.faults = a.faults;
    o.membership = a.membership;
    o.schedules = a.schedules;
    o.mutate_lease_reset = a.mutate_lease_reset;
    o.disk = a.disk;
    Outcome r = a.fork ? RunIsolated(o, a.verbose) : RunInProcess(o, a.verbose);
    runs++;
    ticks += r.ticks;
    inconclusive += r.inconclusive;
    snapshots += r.snapshots_installed;
    chunked += r.chunked_installs;
    transfer_crashes += r.transfer_crashes;
    taken += r.taken;
    overlapped += r.overlapped;
    state_comparisons += r.state_comparisons;
    sched.figure8 += r.figure8;
    sched.divergences += r.divergences;
    sched.divergent_entries += r.divergent_entries;
    sched.refused += r.refused;
    sched.lone += r.lone;
    sched.lone_term_changes += r.lone_term_changes;
    sched.lease_grants += r.lease_grants;
    sched.lease_expiries += r.lease_expiries;
    sched.lease_late_checks += r.lease_late_checks;
    if (!r.ok) failed.push_back(seed);
    if (r.inconclusive) unproven.push_back(seed);
    if (runs % progress_every == 0 || runs == a.seeds) {
      std::printf("progress: %" PRIu64 "/%" PRIu64 " runs, %zu failures\n", runs, a.seeds,
                  failed.size());
      std::fflush(stdout);
    }
  }
  std::printf("runs=%" PRIu64 " ticks=%" PRIu64 " failures=%zu snapshots=%" PRIu64
              " chunked=%" PRIu64 " transfer_crashes=%" PRIu64 " taken=%" PRIu64
              " overlapped_persists=%" PRIu64 " state_comparisons=%" PRIu64,
              runs, ticks, failed.size(), snapshots, chunked, transfer_crashes, taken, overlapped,
              state_comparisons);
  if (inconclusive > 0) std::printf(" inconclusive=%" PRIu64, inconclusive);
  std::printf("\nschedules: figure8=%" PRIu64 " divergences=%" PRIu64 " divergent_entries=%" PRIu64
              " snapshots_refused=%" PRIu64 " lone_crashes=%" PRIu64 " lone_term_changes=%" PRIu64
              "\n",
              sched.figure8, sched.divergences, sched.divergent_entries, sched.refused, sched.lone,
              sched.lone_term_changes);
  std::printf("leases: granted=%" PRIu64 " expired=%" PRIu64 " checked_not_late=%" PRIu64 "\n",
              sched.lease_grants, sched.lease_expiries, sched.lease_late_checks);
  if (!unproven.empty()) {
    // The linearizability search ran out of budget: not a failure, not a proof.
    std::printf("inconclusive seeds:");
    for (uint64_t s : unproven) std::printf(" %" PRIu64, s);
    std::printf("\n");
  }
  if (!failed.empty()) {
    std::printf("failing seeds:");
    for (uint64_t s : failed) std::printf(" %" PRIu64, s);
    std::printf("\n");
    return 1;
  }
  return 0;
}
