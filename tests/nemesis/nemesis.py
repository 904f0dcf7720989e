#!/usr/bin/env python3
"""raftkv nemesis: a real cluster, client workloads, injected faults, a linearizability check.

    python3 tests/nemesis/nemesis.py --raftkv build/src/raftkv [--seconds 180] [--seed N]

Starts N raftkv processes (3, or 5 with --nodes 5) on free ports of 127.0.0.1, each under
its own uid; runs client threads that send reads and writes to random nodes while the main
thread injects faults (kills, pauses, partitions built with iptables: see cluster.py and
faults.py); then heals everything, reads every key from every node, checks the history
for linearizability key by key (checker.py) and prints a table. Exit status: 0 when the
history is linearizable and no node crashed; 1 on a violation, a crash or an inconclusive
check; 2 when the machine cannot run it (not root, no iptables). With --expect-violation
(used with --unsafe-stale-reads) the meaning of a violation is inverted: 0 iff one is found.

Requires root and iptables. Python 3 standard library only. tests/nemesis/README.md has more.
"""

import argparse
import atexit
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import List

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from checker import check_history, explain  # noqa: E402
from cluster import Cluster, Firewall, SetupError  # noqa: E402
from faults import PROFILES, Nemesis, Plan, Routing  # noqa: E402
from history import FAIL, OK, UNKNOWN, Event, Op  # noqa: E402
from workloads import WORKLOADS, Counters, Session  # noqa: E402

FINAL_CLIENT = 99  # the client id of the reads made after the faults


def log(msg: str):
    sys.stdout.write("nemesis: %s\n" % msg)
    sys.stdout.flush()


class History:
    """Ops recorded by every client thread (thread-safe append)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops: List[Op] = []
        self.next_id = 0

    def new_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    def add(self, op: Op):
        with self.lock:
            self.ops.append(op)


def client_loop(cid: int, seed: int, workload, cluster, history: History, routing: Routing,
                stop: threading.Event, deadline: float, timeout_s: float, think_ms: float,
                errors: list):
    """One client: ops back to back (with a little think time) until stop or the deadline.
    Its choices (op, key, node) come from Random(seed, cid)."""
    rng = random.Random("client-%d-%d" % (seed, cid))
    session = Session({i: n.http_port for i, n in cluster.nodes.items()}, timeout_s)
    nodes = sorted(cluster.nodes)
    seq = 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            seq += 1
            kind, key, arg = workload.next_op(rng, cid, seq)
            node = rng.choice(nodes)
            isolated = routing.isolated
            if getattr(workload, "unsafe_stale_reads", False) and isolated:
                # Read from the cut-off node, write through the majority.
                if kind == "read":
                    node = rng.choice(sorted(isolated))
                else:
                    node = rng.choice([x for x in nodes if x not in isolated])
            op = Op(history.new_id(), cid, node, key, kind, arg, time.monotonic_ns())
            workload.invoke(session, op)
            if op.status != UNKNOWN:
                op.ret = time.monotonic_ns()
            history.add(op)
            # A little think time; a little more after a refusal, so that a client does not
            # spin on a dead node's refused connections.
            pause_ms = rng.uniform(0, think_ms) + (0 if op.status == OK else 50)
            if pause_ms > 0:
                stop.wait(pause_ms / 1000)
    except Exception as e:  # a bug in the nemesis: fail the run loudly
        errors.append("client %d: %r" % (cid, e))
        raise
    finally:
        session.close_all()


def final_reads(workload, cluster, history: History, timeout_s: float, errors: list):
    """Reads every key from every node once the faults are over (linearizable reads, so
    they must see every acknowledged write). Retried on a failure, for up to 60 s in all."""
    session = Session({i: n.http_port for i, n in cluster.nodes.items()}, timeout_s)
    deadline = time.monotonic() + 60
    try:
        for key in workload.keys():
            for node in sorted(cluster.nodes):
                while True:
                    op = Op(history.new_id(), FINAL_CLIENT, node, key, "read", None,
                            time.monotonic_ns())
                    workload.invoke(session, op)
                    if op.status != UNKNOWN:
                        op.ret = time.monotonic_ns()
                    history.add(op)
                    if op.status == OK:
                        break
                    if time.monotonic() > deadline:
                        errors.append("final read of %s on node%d never succeeded (last: %s)"
                                      % (key, node, op.detail))
                        break
                    time.sleep(0.2)
    finally:
        session.close_all()


def table(ops: List[Op], kinds: List[str], fault_counts: dict, events: List[Event]) -> str:
    lines = ["operations           ok     fail  unknown    total"]
    for kind in kinds:
        ks = [o for o in ops if o.kind == kind]
        c = {s: sum(1 for o in ks if o.status == s) for s in (OK, FAIL, UNKNOWN)}
        lines.append("  %-12s %9d %8d %8d %8d" % (kind, c[OK], c[FAIL], c[UNKNOWN], len(ks)))
    lines.append("faults                count")
    for kind in sorted(fault_counts):
        lines.append("  %-18s %6d" % (kind, fault_counts[kind]))
    crashes = sum(1 for e in events if e.action == "crash")
    lines.append("  %-18s %6d" % ("(node crashes)", crashes))
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Fault injection against a real raftkv cluster, with a linearizability "
        "check of the history.",
        epilog="Timing of real processes is not reproducible: --seed N replays the same fault "
        "schedule and the same client choices, not the same interleaving.")
    p.add_argument("--raftkv", required=True, help="path to the raftkv binary")
    p.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    p.add_argument("--seconds", type=float, default=None,
                   help="how long faults are injected (default 180; see --minutes)")
    p.add_argument("--minutes", type=float, default=None, help="the same, in minutes")
    p.add_argument("--seed", type=int, default=None, help="default: from the clock, printed")
    p.add_argument("--workload", default="register", choices=sorted(WORKLOADS))
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--keys", type=int, default=6)
    p.add_argument("--think-ms", type=float, default=10.0,
                   help="each client waits up to this long between ops (uniform)")
    p.add_argument("--client-timeout", type=float, default=2.5,
                   help="HTTP timeout of one client request, seconds")
    p.add_argument("--profile", default=None, choices=sorted(PROFILES),
                   help="fault mix (default mixed; stale-follower with --unsafe-stale-reads)")
    p.add_argument("--unsafe-stale-reads", action="store_true",
                   help="send reads as ?stale but record them as linearizable: must be caught")
    p.add_argument("--forward-503-unknown", action="store_true",
                   help="count a write answered '503 leader ... unreachable' as unknown, not "
                   "failed: looks past the forwarder bug in tests/nemesis/FINDINGS.md (off by "
                   "default: the API documents 503 as not applied)")
    p.add_argument("--expect-violation", action="store_true",
                   help="exit 0 only if the checker finds a violation (for the unsafe mode)")
    p.add_argument("--workdir", default=None,
                   help="node logs (default: a new directory in /tmp); emptied first; removed "
                   "after a passing run unless --keep (the data directories are in "
                   "/tmp/raftkv-nemesis-nodes-<pid>-*, kept likewise)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work and node data directories")
    p.add_argument("--uid-base", type=int, default=46001,
                   help="node i runs as uid BASE+i-1 (must not belong to a user)")
    p.add_argument("--raftkv-arg", action="append", default=[],
                   help="extra raftkv flag (repeatable), e.g. --raftkv-arg=--tick-ms=20")
    a = p.parse_args(argv)
    if a.seconds is None:
        a.seconds = a.minutes * 60 if a.minutes is not None else 180.0
    if a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "little")
    if a.profile is None:
        a.profile = "stale-follower" if a.unsafe_stale_reads else "mixed"
    return a


# Small snapshots so that restarted and cut-off nodes catch up by snapshot during a run;
# a request timeout under the client timeout so most answers are definite.
DEFAULT_RAFTKV_ARGS = ["--snapshot-entries=500", "--snapshot-keep-entries=100",
                       "--request-timeout-ms=1500", "--log-level=info"]


def main(argv) -> int:
    args = parse_args(argv)
    if not os.path.isfile(args.raftkv) or not os.access(args.raftkv, os.X_OK):
        print("nemesis: %s is not an executable raftkv binary" % args.raftkv, file=sys.stderr)
        return 2
    try:
        Firewall.probe()
        Firewall.remove_leftovers(log)
        Cluster.remove_leftover_node_dirs(log)
    except SetupError as e:
        print("nemesis: CANNOT RUN: %s" % e, file=sys.stderr)
        return 2

    workdir = args.workdir or tempfile.mkdtemp(prefix="raftkv-nemesis-")
    counters = Counters()
    workload = WORKLOADS[args.workload](n_keys=args.keys,
                                        unsafe_stale_reads=args.unsafe_stale_reads,
                                        counters=counters,
                                        forward_503_unknown=args.forward_503_unknown)
    fw = Firewall(log)
    try:
        cluster = Cluster(args.raftkv, args.nodes, workdir, args.uid_base,
                          DEFAULT_RAFTKV_ARGS + args.raftkv_arg, log)
    except SetupError as e:
        print("nemesis: CANNOT RUN: %s" % e, file=sys.stderr)
        return 2

    cleaned = []

    def cleanup():
        if cleaned:
            return
        cleaned.append(True)
        cluster.stop_all()
        fw.remove()

    atexit.register(cleanup)

    def on_signal(signum, frame):
        raise SystemExit("nemesis: stopped by signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    replay = ("python3 tests/nemesis/nemesis.py --raftkv %s --nodes %d --seconds %g --seed %d"
              " --workload %s --profile %s --clients %d --keys %d%s%s" % (
                  args.raftkv, args.nodes, args.seconds, args.seed, args.workload, args.profile,
                  args.clients,
                  args.keys, " --unsafe-stale-reads" if args.unsafe_stale_reads else "",
                  " --forward-503-unknown" if args.forward_503_unknown else ""))
    log("seed %d; %d nodes, %g s of faults (profile %s), workload %s (%d keys, %d clients)%s"
        % (args.seed, args.nodes, args.seconds, args.profile, args.workload, args.keys,
           args.clients, ", UNSAFE stale reads" if args.unsafe_stale_reads else ""))
    log("work directory %s" % workdir)

    history = History()
    watch_violations: List[str] = []
    events: List[Event] = []
    errors: List[str] = []
    routing = Routing()
    stop = threading.Event()
    threads = []
    t0 = time.monotonic_ns()
    nemesis = Nemesis(cluster, fw, events, routing, log, t0)
    try:
        try:
            fw.install()
            fw.self_test(args.uid_base)
            cluster.start()
        except (RuntimeError, SetupError) as e:
            print("nemesis: CANNOT RUN: %s" % e, file=sys.stderr)
            for i in cluster.nodes:
                print("node%d log:\n%s" % (i, cluster.log_tail(i)), file=sys.stderr)
            return 2
        log("cluster up: " + ", ".join("node%d http %d raft %d uid %d" % (
            i, n.http_port, n.raft_port, n.uid) for i, n in cluster.nodes.items()))
        t0 = time.monotonic_ns()
        nemesis.t0 = t0
        if hasattr(workload, "start_watchers"):
            workload.start_watchers({i: n.http_port for i, n in cluster.nodes.items()},
                                    args.seed, log)
        fault_end = time.monotonic() + args.seconds
        client_deadline = fault_end + 120  # a hard bound; normally stopped well before
        for cid in range(args.clients):
            t = threading.Thread(target=client_loop, name="client-%d" % cid, daemon=True,
                                 args=(cid, args.seed, workload, cluster, history, routing,
                                       stop, client_deadline, args.client_timeout,
                                       args.think_ms, errors))
            t.start()
            threads.append(t)
        nemesis.hold(2.0)  # a little history before the first fault
        plan = Plan(args.seed, args.nodes, args.profile)
        while time.monotonic() < fault_end and not errors:
            nemesis.run(plan.next())
        nemesis.heal_all()
        try:
            cluster.wait_healthy(60)
        except RuntimeError as e:
            errors.append("after the faults: %s" % e)
        nemesis.hold(3.0)  # the clients keep going on a healed cluster
        stop.set()
        for t in threads:
            t.join(timeout=args.client_timeout + 10)
            if t.is_alive():
                errors.append("%s did not stop" % t.name)
        if not errors:
            final_reads(workload, cluster, history, args.client_timeout, errors)
        if hasattr(workload, "finish_watchers"):
            watch_violations = workload.finish_watchers(
                {i: n.http_port for i, n in cluster.nodes.items()}, history.ops,
                args.client_timeout)
        nemesis.restart_crashed()
    finally:
        stop.set()
        cleanup()
    run_s = (time.monotonic_ns() - t0) / 1e9

    ops = history.ops
    report = check_history(workload.model, ops)
    print()
    print("nemesis: seed %d, %d nodes, %.0f s run, workload %s%s" % (
        args.seed, args.nodes, run_s, workload.name,
        " (UNSAFE stale reads)" if args.unsafe_stale_reads else ""))
    print(table(ops, workload.kinds, nemesis.counts, events))
    print("checker: %d keys, %d ops searched, %.1f s" % (
        len(report.results), sum(r.ops for r in report.results), report.seconds))
    print("violations: %d" % len(report.violations))
    failed = False
    if hasattr(workload, "summary"):
        print(workload.summary())
        print("watch violations: %d" % len(watch_violations))
    for v in watch_violations:
        print("WATCH: " + v)
    if watch_violations and not args.expect_violation:
        failed = True
    for r in report.violations:
        print()
        print(explain(r, ops, events, t0))
    for r in report.inconclusive:
        print("INCONCLUSIVE: key %r: the search gave up after %d steps" % (r.key, r.steps))
        failed = True
    for c in cluster.crashes:
        print("CRASH: " + c)
        failed = True
    for e in errors:
        print("ERROR: " + e)
        failed = True
    for text in counters.bad_requests:
        print("BAD REQUEST (a nemesis bug): " + text)
        failed = True
    for text in counters.odd_answers:
        print("ODD ANSWER: " + text)
        failed = True
    if report.violations or failed:
        print("replay the schedule with: %s" % replay)
        print("(real-process timing is not reproducible: the same seed gives the same faults "
              "and client choices, not the same interleaving)")
        print("node logs: %s" % workdir)
    elif not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.expect_violation:
        passed = bool(report.violations) and not failed
    else:
        passed = not report.violations and not failed
    # The node data directories (in /tmp, not in the work directory) are kept
    # only when there is something to look at.
    if passed and not args.keep:
        cluster.remove_node_dirs()
    else:
        print("node data directories: %s" % cluster.keep_node_dirs())
    if args.expect_violation:
        if passed:
            print("nemesis: the violation was expected (--expect-violation): PASS")
            return 0
        print("nemesis: FAIL: --expect-violation, but %s" % (
            "the run failed otherwise" if failed else "the checker found no violation"))
        return 1
    if not passed:
        print("nemesis: FAIL")
        return 1
    print("nemesis: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
