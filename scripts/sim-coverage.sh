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
# Branches not counted: exception branches (gcov's "throw" branches: the
# unwinding paths GCC adds around every call that may throw, which a run
# takes only on std::bad_alloc), and the branches on the lines of a
# RAFT_ASSERT statement, all of its lines (an assertion's failing side is a
# crash, never a path a passing run takes; its condition's short-circuit
# branches and its message's string building go with it). Lines are all
# counted.
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

rc=(--rc lcov_branch_coverage=1)

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
lcov --quiet "${rc[@]}" --capture --directory "$build" --output-file "$build/all.info" 2>&1 |
  grep -v 'redefined at' || true
lcov --quiet "${rc[@]}" --extract "$build/all.info" "$root/src/raft/*.cc" \
  "$root/src/server/driver.cc" "$root/src/server/pending.cc" --output-file "$info"
# Branch records made anew from gcov's JSON, which marks exception branches
# ("throw"): lcov 1.16 keeps them whatever geninfo_no_exception_branch says.
# Left out too: every line of a RAFT_ASSERT(...) statement.
python3 - "$info" "$build" <<'PY'
import glob, gzip, json, os, subprocess, sys, tempfile

info, build = sys.argv[1], os.path.abspath(sys.argv[2])

def assert_lines(path):
    skip, depth = set(), 0
    for no, text in enumerate(open(path), 1):
        if depth == 0 and "RAFT_ASSERT(" in text:
            text = text[text.index("RAFT_ASSERT("):]
        elif depth == 0:
            continue
        skip.add(no)
        depth += text.count("(") - text.count(")")
        depth = max(depth, 0)
    return skip

wanted = {l[3:].strip() for l in open(info) if l.startswith("SF:")}
branches = {}  # source -> line -> [counts of its non-exception branches]
with tempfile.TemporaryDirectory() as tmp:
    for gcda in glob.glob(os.path.join(build, "**", "*.gcda"), recursive=True):
        if not any(os.path.basename(gcda) == os.path.basename(w) + ".gcda" for w in wanted):
            continue
        subprocess.run(["gcov", "-b", "--json-format", "-o", gcda, gcda], cwd=tmp,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        for out in glob.glob(os.path.join(tmp, "*.gcov.json.gz")):
            doc = json.load(gzip.open(out))
            os.remove(out)
            for f in doc["files"]:
                src = os.path.normpath(os.path.join(doc.get("current_working_directory", ""), f["file"]))
                if src not in wanted:
                    continue
                per_line = branches.setdefault(src, {})
                for l in f["lines"]:
                    counts = [b["count"] for b in l["branches"] if not b["throw"]]
                    if counts:
                        per_line.setdefault(l["line_number"], []).append(counts)

out, src = [], None
for line in open(info):
    if line.startswith(("BRDA:", "BRF:", "BRH:")):
        continue
    if line.startswith("SF:"):
        src = line[3:].strip()
    if line.startswith("end_of_record") and src in branches:
        skip = assert_lines(src)
        for no in sorted(branches[src]):
            if no in skip:
                continue
            for block, counts in enumerate(branches[src][no]):
                for i, c in enumerate(counts):
                    out.append(f"BRDA:{no},{block},{i},{c}\n")
    out.append(line)
open(info, "w").writelines(out)
PY
lcov "${rc[@]}" --list "$info"
lcov "${rc[@]}" --summary "$info"

# Branch records: BRDA:line,block,branch,taken.
awk -F'[:,]' '
  /^SF:/ { file = substr($0, 4); sub(".*/src/", "src/", file) }
  /^BRDA:/ && $5 == "0" { key = file ":" $2; miss[key] = miss[key] " " $3 "." $4 }
  END { for (k in miss) print k ":" miss[k] }
' "$info" | sort -t: -k1,1 -k2,2n >"$build/uncovered-branches.txt"
echo "sim-coverage: $(wc -l <"$build/uncovered-branches.txt") lines with a branch never taken," \
  "listed in $build/uncovered-branches.txt"
exit "$status"
