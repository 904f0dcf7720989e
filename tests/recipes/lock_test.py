#!/usr/bin/env python3
"""The lock recipe (docs/recipes.md) under faults: never two holders at once.

A 3-node raftkv cluster and --contenders lock clients (client.py lock), separate OS
processes, for --seconds of faults, one at a time: SIGKILL or SIGSTOP of the lock holder
(paused past its lease) or of a random contender, SIGKILL or SIGSTOP of the raftkv leader.
Killed processes are restarted. Then every process is stopped and the history is checked:

  store   The protected register `recipes/register` is written only by fenced
          transactions, each writing {token, seq, count, who}: token is the writer's lock
          key create_revision, count the value it read inside its critical section plus
          one. Its full history (a watch from revision 1) must show: tokens never go back
          (once a higher token wrote, no lower token writes again); count goes up by
          exactly one at each write (every holder read the previous holder's last write:
          no lost update); every acknowledged write present once, at its revision, with
          its value; no write whose compare failed present; no (token, seq) twice.
  client  Each holder's critical section, from the time it learned it holds the lock to
          the last time it checked its local deadline before acting (time.monotonic(),
          one clock for every process of the machine), overlaps no other holder's.
  progress The lock was acquired at least --min-acquisitions times, by at least 3
          contenders, and the register was written.

--unsafe-no-fence / --unsafe-no-deadline run the contenders without the fencing compare /
the local-deadline rule; with --expect-violation the run passes only if a check fails
(the checkers can fail). Exit 0: pass; 1: fail; 2: cannot run here (not root).
"""

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Run, SetupError, read_history, read_records  # noqa: E402
from client import LOCK_PREFIX, REGISTER  # noqa: E402


def check(records_by_client, history, min_acquisitions):
    """Returns (violations, progress problems, figures)."""
    bad, slow = [], []
    writes = [r for rs in records_by_client.values() for r in rs if r["ev"] == "write"]
    puts = [e for e in history if e["type"] == "put"]
    for e in history:
        if e["type"] != "put":
            bad.append("the register was deleted at revision %d" % e["revision"])

    # Store: the register's history.
    last_token, last_count, seen = 0, 0, {}
    for e in puts:
        v = json.loads(e["kv"]["value"])
        if v["token"] < last_token:
            bad.append("revision %d: token %d (%s) wrote after token %d had written: two "
                       "holders" % (e["revision"], v["token"], v["who"], last_token))
        if v["count"] != last_count + 1:
            bad.append("revision %d: count %d after %d (%s, token %d): a lost update, two "
                       "holders read the same state" % (e["revision"], v["count"], last_count,
                                                        v["who"], v["token"]))
        ts = (v["token"], v["seq"])
        if ts in seen:
            bad.append("(token, seq) %s written twice, at %d and %d" % (ts, seen[ts],
                                                                      e["revision"]))
        seen[ts] = e["revision"]
        last_token, last_count = max(last_token, v["token"]), v["count"]
    by_rev = {e["revision"]: e["kv"]["value"] for e in puts}
    for w in writes:
        ts = (w["token"], w["seq"])
        if w["outcome"] == "ok":
            if by_rev.get(w["revision"]) != w["value"]:
                bad.append("acknowledged write %s of %s at revision %d is not in the history "
                           "(there: %r)" % (ts, w["who"], w["revision"],
                                            by_rev.get(w["revision"])))
        elif w["outcome"] in ("fenced", "failed") and ts in seen:
            bad.append("write %s of %s answered %s but applied at revision %d"
                       % (ts, w["who"], w["outcome"], seen[ts]))

    # Client: hold intervals.
    intervals = []
    for who, rs in records_by_client.items():
        held = {}
        for r in rs:
            if r["ev"] == "acquired":
                held[r["token"]] = [r["t"], r["t"], who]
            elif r["ev"] == "check" and r["token"] in held:
                held[r["token"]][1] = max(held[r["token"]][1], r["t"])
        intervals += [(a, b, who, tok) for tok, (a, b, who) in held.items()]
    intervals.sort()
    for x, y in zip(intervals, intervals[1:]):
        if y[0] < x[1]:
            bad.append("client intervals overlap: %s held token %d until %.3f, %s held token "
                       "%d from %.3f (%.0f ms of overlap)" % (x[2], x[3], x[1], y[2], y[3],
                                                              y[0], (x[1] - y[0]) * 1000))

    acq = {who: sum(1 for r in rs if r["ev"] == "acquired")
           for who, rs in records_by_client.items()}
    outcomes = {}
    for w in writes:
        outcomes[w["outcome"]] = outcomes.get(w["outcome"], 0) + 1
    why = {}
    for rs in records_by_client.values():
        for r in rs:
            if r["ev"] == "release":
                why[r["why"]] = why.get(r["why"], 0) + 1
    stalls = sum(1 for rs in records_by_client.values() for r in rs if r["ev"] == "stall")
    figures = {"acquisitions": acq, "writes": outcomes, "register_writes": len(puts),
               "release_reasons": why, "stalls_after_check": stalls}
    if sum(acq.values()) < min_acquisitions:
        slow.append("only %d acquisitions (want %d)" % (sum(acq.values()), min_acquisitions))
    if sum(1 for n in acq.values() if n > 0) < min(3, len(acq)):
        slow.append("fewer than 3 contenders acquired the lock: %s" % acq)
    if not puts:
        slow.append("the register was never written")
    return bad, slow, figures


def faults(run: Run, seconds: float, ttl: int, contenders):
    """One fault at a time, each healed, with 0.7-1.5 s between them."""
    end = time.monotonic() + seconds
    kinds = ["pause-holder", "pause-holder", "kill-holder", "kill-contender",
             "pause-contender", "kill-raftkv-leader", "pause-raftkv-leader"]
    rng = run.rng
    while time.monotonic() < end - 1:
        kind = rng.choice(kinds)
        if kind.endswith("holder"):
            h = None
            for _ in range(40):  # wait (up to 2 s) for someone to hold it
                h = run.holder(LOCK_PREFIX)
                if h is not None:
                    break
                run.sleep(0.05)
            target = (run.procs.get(h["value"]) if h else None) or rng.choice(contenders)
            what = "the holder (token %d)" % h["create_revision"] if h else "a contender"
        else:
            target = rng.choice(contenders)
            what = "a random contender"
        if kind.startswith("pause-holder"):
            d = rng.uniform(ttl + 1.5, ttl + 3.0)  # past the lease: another one takes over
            run.fault("SIGSTOP %s, %s, for %.1f s" % (target.name, what, d))
            target.pause()
            run.sleep(d)
            target.resume()
            run.fault("SIGCONT %s" % target.name)
        elif kind.startswith("kill"):
            if kind == "kill-raftkv-leader":
                run.kill_raftkv_leader(rng.uniform(0.5, 3.0))
            else:
                d = rng.uniform(0.3, 2.0)
                run.fault("SIGKILL %s, %s; restart after %.1f s" % (target.name, what, d))
                target.kill()
                run.sleep(d)
                target.start()
        elif kind == "pause-contender":
            d = rng.uniform(0.3, ttl + 2.0)
            run.fault("SIGSTOP %s, %s, for %.1f s" % (target.name, what, d))
            target.pause()
            run.sleep(d)
            target.resume()
            run.fault("SIGCONT %s" % target.name)
        elif kind == "pause-raftkv-leader":
            run.pause_raftkv_leader(rng.uniform(0.5, 3.0))
        run.sleep(rng.uniform(0.7, 1.5))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raftkv", required=True)
    p.add_argument("--workdir", default="/tmp/raftkv-recipes-lock")
    p.add_argument("--seconds", type=float, default=40)
    p.add_argument("--contenders", type=int, default=4)
    p.add_argument("--ttl", type=int, default=3)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--min-acquisitions", type=int, default=20)
    p.add_argument("--uid-base", type=int, default=46200)
    p.add_argument("--stall-prob", type=float, default=0.02,
                   help="chance that a contender stalls TTL + 1.5 s between a deadline check "
                        "and the guarded write (a pause no client-side rule can see)")
    p.add_argument("--only-holder-pauses", action="store_true",
                   help="the fault schedule pauses the lock holder and nothing else")
    p.add_argument("--unsafe-no-fence", action="store_true")
    p.add_argument("--unsafe-no-deadline", action="store_true")
    p.add_argument("--expect-violation", action="store_true")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    started = time.monotonic()
    extra = ["--ttl", str(args.ttl), "--seconds", str(args.seconds + 60),
             "--stall-prob", str(args.stall_prob), "--stall-s", str(args.ttl + 1.5)]
    if args.unsafe_no_fence:
        extra.append("--unsafe-no-fence")
    if args.unsafe_no_deadline:
        extra.append("--unsafe-no-deadline")
    try:
        run = Run(args.raftkv, args.workdir, seed, args.uid_base)
    except SetupError as e:
        print("recipes.lock: CANNOT RUN: %s" % e)
        return 2
    try:
        with run:
            contenders = [run.add_client("c%d" % i, "lock", extra)
                          for i in range(1, args.contenders + 1)]
            run.sleep(1.0)
            if args.only_holder_pauses:
                end = time.monotonic() + args.seconds
                while time.monotonic() < end - 1:
                    h = run.holder(LOCK_PREFIX)
                    if h is None or h["value"] not in run.procs:
                        run.sleep(0.05)
                        continue
                    target = run.procs[h["value"]]
                    d = args.ttl + 2.0
                    run.fault("SIGSTOP %s, the holder (token %d), for %.1f s"
                              % (target.name, h["create_revision"], d))
                    target.pause()
                    run.sleep(d)
                    target.resume()
                    run.fault("SIGCONT %s" % target.name)
                    run.sleep(1.0)
            else:
                faults(run, args.seconds, args.ttl, contenders)
            run.heal()
            run.wait_healthy(30)
            run.sleep(2.0)  # the contenders go on against the healed cluster
            run.stop_clients()
            upto = run.current_revision()
            history = read_history(run.endpoints, REGISTER, False, upto)
            # The same history from every node must agree (observers see one order).
            for ep in run.endpoints:
                other = read_history([ep], REGISTER, False, upto)
                if [(e["revision"], e["kv"].get("value")) for e in other] != \
                        [(e["revision"], e["kv"].get("value")) for e in history]:
                    run.failed = True
                    print("VIOLATION: %s's history of the register differs" % ep)
            records = {name: read_records(proc) for name, proc in run.procs.items()}
            with open(os.path.join(args.workdir, "history.json"), "w") as f:
                json.dump({"upto": upto, "history": history}, f)
            acked = max([r["revision"] for rs in records.values() for r in rs
                         if r["ev"] == "write" and r["outcome"] == "ok"] or [0])
            print("final read: revision %d; highest acknowledged write: %d" % (upto, acked))
            crashes = [x for proc in run.procs.values() for x in proc.exits] + run.cluster.crashes
            bad, slow, figures = check(records, history, args.min_acquisitions)
            print("faults injected: %d" % len([f for f in run.faults
                                               if "SIGKILL" in f[1] or "SIGSTOP" in f[1]]))
            for k, v in sorted(figures.items()):
                print("%s: %s" % (k, v))
            for b in bad:
                print("VIOLATION: " + b)
            for s in slow:
                print("NO PROGRESS: " + s)
            for c in crashes:
                print("CRASH: " + c)
            print("seed %d, %.1f s wall" % (seed, time.monotonic() - started))
            violated = bool(bad)
            if args.expect_violation:
                ok = violated and not crashes
                print("recipes.lock: %s (expected a violation: %s)"
                      % ("PASS" if ok else "FAIL", "caught" if violated else "none found"))
            else:
                ok = not bad and not slow and not crashes and not run.failed
                print("recipes.lock: %s" % ("PASS" if ok else "FAIL"))
            run.failed = run.failed or not ok
            return 0 if ok else 1
    except Exception:
        run.say("seed %d; work directory %s" % (seed, args.workdir))
        raise


if __name__ == "__main__":
    sys.exit(main())
