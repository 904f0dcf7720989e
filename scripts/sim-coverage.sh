#!/usr/bin/env bash
# Line and branch coverage of the Raft core (src/raft/*.cc) and the server's
# driver (src/server/driver.cc, pending.cc) under a simulator campaign.
#
#   scripts/sim-coverage.sh [SEEDS] [START]     default 500 seeds from 1, in each disk mode
#
# Builds raftkv-sim in build-cov (-DRAFTKV_COVERAGE=ON: --coverage -O1), runs
# SEEDS seeds with --disk=memory and SEEDS with --disk=wal (the two campaigns
# in parallel, -j2), then prints lcov's per-file summary and writes
# build-cov/sim-coverage.info (lcov tracefile, with branch records) and
# build-cov/uncovered-branches.txt (file:line and the branches never taken).
#
# Branches not counted: exception branches (geninfo_no_exception_branch=1:
# the unwinding paths GCC adds around every call that may throw, which a run
# takes only on std::bad_alloc), and the branches on lines with a RAFT_ASSERT
# (lcov_excl_br_line: an assertion's failing side is a crash, never a path a
# passing run takes; its condition's own short-circuit branches go with it).
# Lines are all counted.
#
# Needs lcov (scripts/install-deps.sh --coverage). The campaigns run without
# a child process per seed (--no-fork), since a child leaves with _exit and
# would never write its counters: a seed that aborts ends its campaign.
set -euo pipefail

seeds="${1:-500}"
start="${2:-1}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-cov}"
jobs="${JOBS:-2}"

command -v lcov >/dev/null || {
  echo "sim-coverage: lcov is missing (scripts/install-deps.sh --coverage)" >&2
  exit 1
}

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRAFTKV_COVERAGE=ON
fi
cmake --build "$build" -j "$jobs" --target raftkv-sim

rc=(--rc lcov_branch_coverage=1 --rc geninfo_no_exception_branch=1
    --rc 'lcov_excl_br_line=LCOV_EXCL_BR_LINE|RAFT_ASSERT')

# Counters from an earlier run would add up with this one's.
lcov --quiet --zerocounters --directory "$build"

sim="$build/tests/sim/raftkv-sim"
log="$build/sim-coverage"
echo "sim-coverage: $seeds seeds from $start, memory and wal, in parallel"
"$sim" --seeds "$seeds" --start "$start" --disk=memory --no-fork >"$log.memory.log" 2>&1 &
mem_pid=$!
"$sim" --seeds "$seeds" --start "$start" --disk=wal --no-fork >"$log.wal.log" 2>&1 &
wal_pid=$!
status=0
wait "$mem_pid" || status=1
wait "$wal_pid" || status=1
tail -n 2 "$log.memory.log" "$log.wal.log"
if ((status != 0)); then
  echo "sim-coverage: a campaign failed (see $log.*.log); coverage below is of what ran" >&2
fi

info="$build/sim-coverage.info"
lcov --quiet "${rc[@]}" --capture --directory "$build" --output-file "$build/all.info"
lcov --quiet "${rc[@]}" --extract "$build/all.info" "$root/src/raft/*.cc" \
  "$root/src/server/driver.cc" "$root/src/server/pending.cc" --output-file "$info"
lcov "${rc[@]}" --list "$info"
lcov "${rc[@]}" --summary "$info"

# Branch records: BRDA:line,block,branch,taken ("-": the line never ran).
awk -F'[:,]' '
  /^SF:/ { file = substr($0, 4); sub(".*/src/", "src/", file) }
  /^BRDA:/ {
    key = file ":" $2
    if ($5 == "-" || $5 == "0") { miss[key] = miss[key] " " $3 "." $4 (($5 == "-") ? "(line not run)" : "") }
    total[key]++
  }
  END { for (k in miss) print k ":" miss[k] }
' "$info" | sort -t: -k1,1 -k2,2n >"$build/uncovered-branches.txt"
echo "sim-coverage: $(wc -l <"$build/uncovered-branches.txt") lines with a branch never taken," \
  "listed in $build/uncovered-branches.txt"
exit "$status"
