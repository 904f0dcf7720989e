#!/usr/bin/env python3
"""A recipe client process, started (and killed, paused, restarted) by the tests.

  client.py lock  --endpoints H:P,.. --name c1 --log FILE [--ttl 3] [--seconds 90]
                  [--unsafe-no-fence] [--unsafe-no-deadline]
  client.py elect --endpoints H:P,.. --name e1 --log FILE [--ttl 2] [--seconds 90]

`lock` runs the lock loop of docs/recipes.md: acquire `recipes/lock/demo/`, do `--ops`
guarded read-modify-writes of the protected register `recipes/register` (each a
transaction fenced by the lock key's create_revision), release. `elect` campaigns for
`recipes/election/demo/`, proclaims values while it leads, and resigns after a few seconds
to let the others lead too.

Each step is one JSON line in --log (appended, flushed per line, so a SIGKILL loses
nothing written), with time.monotonic() times for the checkers. SIGTERM ends the loop:
release, revoke the lease, exit 0. The process also ends on its own after --seconds.
"""

import argparse
import json
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recipes  # noqa: E402
from recipes import Client, Election, Mutex, NotHeld, OutcomeUnknown, Session, Unavailable  # noqa: E402

LOCK_PREFIX = "recipes/lock/demo/"
REGISTER = "recipes/register"
ELECTION_PREFIX = "recipes/election/demo/"

stopping = False


def on_term(signum, frame):
    global stopping
    stopping = True


class Log:
    def __init__(self, path, name):
        self.f = open(path, "a", buffering=1)
        self.name = name

    def __call__(self, ev, **fields):
        fields.update(ev=ev, who=self.name, pid=os.getpid())
        fields.setdefault("t", time.monotonic())
        self.f.write(json.dumps(fields) + "\n")


def new_session(args, log, end):
    while not stopping and time.monotonic() < end:
        try:
            s = Session(args.endpoints, args.ttl, unsafe_ignore_deadline=args.unsafe_no_deadline,
                        log=log)
            log("session", lease=s.id, ttl=s.ttl_s, deadline=s.deadline,
                t_send=s.deadline - s.ttl_s)
            return s
        except Unavailable as e:
            log("session_failed", error=str(e))
            time.sleep(0.2)
    return None


def guarded_write(args, client, m: Mutex, log, token, seq) -> str:
    """One read-modify-write of the register inside the critical section. Returns "ok",
    "fenced" (the compare failed: the lock is lost), "unknown", "unavailable" or
    "deadline" (the local deadline passed: stop acting)."""
    if not m.session.alive():
        return "deadline"
    try:
        status, obj = client.call("GET", recipes.kv_path(REGISTER), deadline_s=2.0)
    except Unavailable:
        return "unavailable"
    if status == 404:
        count = 0
    elif status == 200:
        count = json.loads(obj["value"])["count"]
    else:
        raise RuntimeError("read register: %d %s" % (status, obj))
    # The rule: act only before the local deadline. The check's time is where this
    # holder's critical section ends at the latest, for the interval checker.
    if not m.session.alive():
        return "deadline"
    t_check = time.monotonic()
    log("check", token=token, t=t_check)
    if args.stall_prob and random.random() < args.stall_prob:
        # A pause at the worst moment, which no client-side rule can see: after the
        # deadline check, before the write it guards (a GC pause, a descheduled thread).
        # The lease ends meanwhile (no keepalive either); only the fencing compare stops
        # the late write.
        log("stall", token=token, seconds=args.stall_s)
        m.session.hold_keepalives(args.stall_s)  # the whole process stalls
        time.sleep(args.stall_s)
    value = json.dumps({"token": token, "seq": seq, "count": count + 1, "who": args.name},
                       sort_keys=True)
    txn = {"compare": [] if args.unsafe_no_fence else [m.fence()],
           "success": [{"put": {"key": REGISTER, "value": value}}],
           "failure": [{"get": {"key": m.key}}]}
    t0 = time.monotonic()
    try:
        status, obj = client.call("POST", "/v1/txn", txn, idempotent=False, deadline_s=2.0)
    except OutcomeUnknown as e:
        log("write", token=token, seq=seq, value=value, outcome="unknown", t0=t0,
            t1=time.monotonic(), error=str(e))
        return "unknown"
    except Unavailable as e:  # no node took it: not applied
        log("write", token=token, seq=seq, value=value, outcome="failed", t0=t0,
            t1=time.monotonic(), error=str(e))
        return "unavailable"
    if status != 200:
        raise RuntimeError("guarded write: %d %s" % (status, obj))
    outcome = "ok" if obj["succeeded"] else "fenced"
    log("write", token=token, seq=seq, value=value, outcome=outcome, revision=obj["revision"],
        t0=t0, t1=time.monotonic())
    return outcome


def run_lock(args, log):
    end = time.monotonic() + args.seconds
    client = Client(args.endpoints)
    session = None
    while not stopping and time.monotonic() < end:
        if session is None or session.lost or (not session.alive() and not session.unsafe):
            if session is not None:
                session.close(revoke=True)
                log("session_end", lease=session.id, lost=session.lost)
            session = new_session(args, log, end)
            if session is None:
                break
        m = Mutex(client, session, LOCK_PREFIX, value=args.name)
        try:
            token = m.lock(timeout_s=min(10.0, max(0.5, end - time.monotonic())))
        except NotHeld as e:
            log("not_acquired", error=str(e))
            continue
        except Unavailable as e:
            log("not_acquired", error=str(e))
            time.sleep(0.1)
            continue
        t_acq = time.monotonic()
        if not session.alive():
            log("acquired_too_late", token=token)
            why = "deadline"
        else:
            log("acquired", token=token, lease=session.id, t=t_acq, deadline=session.deadline)
            why = "done"
            for seq in range(1, args.ops + 1):
                if stopping:
                    why = "stopping"
                    break
                r = guarded_write(args, client, m, log, token, seq)
                if r != "ok":
                    why = r
                    break
                time.sleep(args.op_gap_ms / 1000.0)
        log("release", token=token, why=why)
        try:
            m.unlock()
        except Unavailable:
            pass  # the lease ends it
        time.sleep(random.uniform(0, 0.05))
    if session is not None:
        session.close(revoke=True)


def run_elect(args, log):
    end = time.monotonic() + args.seconds
    client = Client(args.endpoints)
    session = None
    while not stopping and time.monotonic() < end:
        if session is None or session.lost or not session.alive():
            if session is not None:
                session.close(revoke=True)
                log("session_end", lease=session.id, lost=session.lost)
            session = new_session(args, log, end)
            if session is None:
                break
        e = Election(client, session, ELECTION_PREFIX)
        try:
            token = e.campaign(json.dumps({"who": args.name, "seq": 0}),
                               timeout_s=min(10.0, max(0.5, end - time.monotonic())))
        except (NotHeld, Unavailable) as ex:
            log("not_elected", error=str(ex))
            continue
        if not session.alive():
            log("elected_too_late", token=token)
            e.resign()
            continue
        log("elected", token=token, lease=session.id)
        term_end = time.monotonic() + random.uniform(args.term_min_s, args.term_max_s)
        why, seq = "resign", 0
        while not stopping and time.monotonic() < term_end:
            if not session.alive():
                why = "deadline"
                break
            log("check", token=token)
            seq += 1
            value = json.dumps({"who": args.name, "token": token, "seq": seq}, sort_keys=True)
            t0 = time.monotonic()
            try:
                ok, rev = e.proclaim(value)
            except OutcomeUnknown as ex:
                log("proclaim", token=token, value=value, outcome="unknown", t0=t0, error=str(ex))
                why = "unknown"
                break
            except Unavailable as ex:
                log("proclaim", token=token, value=value, outcome="failed", t0=t0, error=str(ex))
                continue
            log("proclaim", token=token, value=value, outcome="ok" if ok else "fenced",
                revision=rev, t0=t0, t1=time.monotonic())
            if not ok:
                why = "fenced"
                break
            time.sleep(0.1)
        log("resign", token=token, why=why)
        try:
            e.resign()
        except Unavailable:
            pass
        time.sleep(random.uniform(0.05, 0.3))
    if session is not None:
        session.close(revoke=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["lock", "elect"])
    p.add_argument("--endpoints", required=True, type=lambda s: s.split(","))
    p.add_argument("--name", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--ttl", type=int, default=3)
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--ops", type=int, default=6, help="guarded writes per acquisition")
    p.add_argument("--op-gap-ms", type=int, default=60)
    p.add_argument("--term-min-s", type=float, default=3.0)
    p.add_argument("--term-max-s", type=float, default=6.0)
    p.add_argument("--stall-prob", type=float, default=0.0,
                   help="chance that a guarded write stalls --stall-s between its deadline "
                        "check and its send")
    p.add_argument("--stall-s", type=float, default=5.0)
    p.add_argument("--unsafe-no-fence", action="store_true",
                   help="guarded writes without the fencing compare (the checker must fail)")
    p.add_argument("--unsafe-no-deadline", action="store_true",
                   help="act past the local lease deadline (the checker must fail)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    log = Log(args.log, args.name)
    log("start", mode=args.mode, args=sys.argv[1:])
    try:
        (run_lock if args.mode == "lock" else run_elect)(args, log)
    except Exception as ex:  # a bug or an answer the API does not allow: fail loudly
        log("crash", error=repr(ex))
        raise
    log("exit")


if __name__ == "__main__":
    main()
