#!/usr/bin/env python3
"""The election recipe (docs/recipes.md) under faults.

A 3-node raftkv cluster and three election clients (client.py elect), separate OS
processes, campaign for `recipes/election/demo/`; the leader proclaims a value every
100 ms (a transaction fenced by its key's create_revision, the term) and resigns after
3-6 s. For --seconds, one fault at a time: SIGKILL of the client leader (restarted),
alone or followed 0.3 s later by SIGKILL of the raftkv leader, SIGSTOP of the client leader
past its lease, SIGKILL or SIGSTOP of the raftkv leader.
An observer thread in this process follows the prefix with a watch (long polls from
revision 1, any node, resuming after the last revision seen) and tracks the leader (the
key with the lowest create_revision) as it changes. Checks:

  terms     every proclamation (a put to an existing key) at revision R is on the key that
            leads just before R: one proclaimer per term, and an older term never writes
            again once a newer one leads; every acknowledged proclamation is in the
            history at its revision with its value; a fenced one is not.
  observer  the leaders the observer saw, in order, have increasing create_revisions, and
            its events equal the history read afterwards from each node.
  clients   the clients' own terms (elected .. last check of the local deadline) never
            overlap.
  leases    a key deleted by its lease's expiry was seen deleted no earlier than TTL after
            the send time of the lease's last acknowledged keepalive (the lease promise);
            how much later is printed.
  failover  after a client leader is killed or paused, another client is elected within
            --failover-bound-s (TTL + one election timeout + slack); the times are printed.
  progress  at least 2 clients led, and proclamations were acknowledged.
Exit 0: pass; 1: fail; 2: cannot run here.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Run, SetupError, read_history, read_records  # noqa: E402
from client import ELECTION_PREFIX  # noqa: E402
from recipes import Client, Unavailable, watch_path  # noqa: E402


class Observer(threading.Thread):
    """Follows the election prefix from revision 1 by long polls, switching nodes when
    one does not answer; records (time, event) and the leader changes it derives."""

    def __init__(self, endpoints):
        super().__init__(daemon=True)
        self.client = Client(endpoints, timeout_s=2.5)
        self.stop = threading.Event()
        self.events = []
        self.keys = {}  # key -> create_revision
        self.leaders = []  # (t, key, create_revision, revision)
        self.next_rev = 1
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    status, obj = self.client.call(
                        "GET", watch_path(ELECTION_PREFIX, prefix=True, rev=self.next_rev,
                                          wait="1s"), deadline_s=3.0)
                except Unavailable:
                    continue
                if status != 200:
                    raise RuntimeError("observer watch: %d %s" % (status, obj))
                now = time.monotonic()
                for e in obj["events"]:
                    self.apply(now, e)
                self.next_rev = max(self.next_rev, obj["revision"] + 1)
        except Exception as e:  # reported by the checks
            self.error = repr(e)

    def leader(self):
        if not self.keys:
            return None
        return min(self.keys.items(), key=lambda kv: kv[1])

    def apply(self, now, e):
        rev = e["kv"]["mod_revision"]
        self.events.append((now, dict(e, revision=rev)))
        if e["type"] == "put":
            self.keys[e["kv"]["key"]] = e["kv"]["create_revision"]
        else:
            self.keys.pop(e["kv"]["key"], None)
        lead = self.leader()
        if lead is not None and (not self.leaders or self.leaders[-1][1] != lead[0]):
            self.leaders.append((now, lead[0], lead[1], rev))


def check_history(history, upto, records, observer, failovers, bound_s):
    bad, figures = [], {}
    keys = {}
    proclaimed = {}
    for e in history:
        k = e["kv"]["key"]
        if e["type"] == "put":
            if k in keys:  # a proclamation
                lead = min(keys.items(), key=lambda kv: kv[1])
                if lead[0] != k:
                    bad.append("revision %d: %s proclaimed %s while %s (create_revision %d) "
                               "led" % (e["revision"], k, e["kv"]["value"], lead[0], lead[1]))
                proclaimed[e["revision"]] = e["kv"]["value"]
            else:
                keys[k] = e["kv"]["create_revision"]
        else:
            keys.pop(k, None)
    n_ok = 0
    for who, rs in records.items():
        for r in rs:
            if r["ev"] != "proclaim":
                continue
            if r["outcome"] == "ok":
                n_ok += 1
                if proclaimed.get(r["revision"]) != r["value"]:
                    bad.append("%s's acknowledged proclamation %s at revision %d is not in the "
                               "history" % (who, r["value"], r["revision"]))
            elif r["outcome"] in ("fenced", "failed") and r["value"] in proclaimed.values():
                bad.append("%s's proclamation %s answered %s but is in the history"
                           % (who, r["value"], r["outcome"]))
    # Observer: leaders in increasing create_revision; the same events as the history.
    crs = [l[2] for l in observer.leaders]
    for a, b in zip(crs, crs[1:]):
        if b <= a:
            bad.append("the observer saw leader create_revision %d after %d" % (b, a))
    # (A lease of a client killed at the end may expire after the history's last
    # revision: the observer may have seen more.)
    seen = [(e["revision"], e["type"], e["kv"]["key"], e["kv"].get("value"))
            for _, e in observer.events if e["revision"] <= upto]
    hist = [(e["revision"], e["type"], e["kv"]["key"], e["kv"].get("value")) for e in history]
    if seen != hist:
        i = next((i for i, (a, b) in enumerate(zip(seen, hist)) if a != b),
                 min(len(seen), len(hist)))
        bad.append("the observer's events differ from the history (%d vs %d events), first "
                   "at #%d: %s vs %s" % (len(seen), len(hist), i, seen[i:i + 1], hist[i:i + 1]))
    if observer.error:
        bad.append("observer: " + observer.error)
    # Clients: terms from the clients' side never overlap.
    terms = []
    for who, rs in records.items():
        held = {}
        for r in rs:
            if r["ev"] == "elected":
                held[r["token"]] = [r["t"], r["t"]]
            elif r["ev"] == "check" and r["token"] in held:
                held[r["token"]][1] = r["t"]
        terms += [(a, b, who, tok) for tok, (a, b) in held.items()]
    terms.sort()
    for x, y in zip(terms, terms[1:]):
        if y[0] < x[1]:
            bad.append("client terms overlap: %s (term %d) until %.3f, %s (term %d) from %.3f"
                       % (x[2], x[3], x[1], y[2], y[3], y[0]))
    # Failover: from the fault to the next client elected (a later term).
    times, after_end = [], []
    for t_fault, token, key, what in failovers:
        later = [t for t in terms if t[3] > token and t[0] >= t_fault]
        if not later:
            bad.append("no new leader after %s" % what)
            continue
        dt = min(later)[0] - t_fault
        times.append(round(dt, 2))
        # From the observer seeing the old term's key go (its lease ended) to the new
        # leader knowing it leads.
        gone = [t for t, e in observer.events if e["type"] == "delete" and
                e["kv"]["key"] == key and t >= t_fault]
        if gone:
            after_end.append(round(min(later)[0] - gone[0], 2))
        if dt > bound_s:
            bad.append("failover after %s took %.2f s (bound %.1f s)" % (what, dt, bound_s))
    # The lease promise, seen from outside: a key deleted by its lease's expiry goes no
    # earlier than TTL after the send time of its last acknowledged keepalive (or grant),
    # and (reported, not checked: a keepalive the client sent but never saw answered may
    # have renewed it) about one election timeout later at most.
    acked, tried, ttl = {}, {}, {}
    for rs in records.values():
        for r in rs:
            if r["ev"] in ("session", "keepalive"):
                acked.setdefault(r["lease"], []).append(r["t_send"])
            if r["ev"] in ("session", "keepalive_sent"):
                tried.setdefault(r["lease"], []).append(r["t_send"])
            if r["ev"] == "session":
                ttl[r["lease"]] = r["ttl"]
    late, late_try = [], []
    for t, e in observer.events:
        lease = e["kv"].get("lease")
        if e.get("cause") != "lease_expired" or lease not in acked:
            continue
        # Every acknowledged keepalive counts (one acknowledged after the delete would be
        # a violation too); of the others, those sent before the delete was seen.
        margin = t - (max(acked[lease]) + ttl[lease])
        if margin < 0:
            bad.append("lease %d expired %.0f ms before its deadline (last acknowledged "
                       "keepalive sent at %.3f, TTL %d s)" % (lease, -margin * 1000,
                                                              max(acked[lease]), ttl[lease]))
        late.append(round(margin, 2))
        late_try.append(round(t - (max(x for x in tried[lease] if x < t) + ttl[lease]), 2))
    # After the last acknowledged keepalive's send + TTL (the client's deadline), and after
    # the last keepalive sent at all + TTL (one sent but not seen answered, because the
    # client was killed or the node it went to stalled, may have renewed the lease).
    figures["expiry_after_deadline_s"] = late
    figures["expiry_after_last_keepalive_sent_plus_ttl_s"] = late_try
    elected = {who: sum(1 for r in rs if r["ev"] == "elected") for who, rs in records.items()}
    figures.update(terms_per_client=elected, proclamations_ok=n_ok,
                   leader_changes_observed=len(observer.leaders), failover_s=times,
                   old_key_gone_to_new_leader_s=after_end)
    slow = []
    if sum(1 for n in elected.values() if n) < 2:
        slow.append("fewer than 2 clients led: %s" % elected)
    if n_ok < 20:
        slow.append("only %d proclamations acknowledged" % n_ok)
    return bad, slow, figures


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raftkv", required=True)
    p.add_argument("--workdir", default="/tmp/raftkv-recipes-election")
    p.add_argument("--seconds", type=float, default=35)
    p.add_argument("--ttl", type=int, default=2)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--uid-base", type=int, default=46210)
    p.add_argument("--failover-bound-s", type=float, default=None,
                   help="default: TTL + 1 s (election timeout) + 1.5 s")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    bound = args.failover_bound_s or args.ttl + 2.5
    started = time.monotonic()
    extra = ["--ttl", str(args.ttl), "--seconds", str(args.seconds + 60)]
    try:
        run = Run(args.raftkv, args.workdir, seed, args.uid_base)
    except SetupError as e:
        print("recipes.election: CANNOT RUN: %s" % e)
        return 2
    with run:
        observer = Observer(run.endpoints)
        observer.start()
        clients = [run.add_client("e%d" % i, "elect", extra) for i in range(1, 4)]
        run.sleep(1.5)
        failovers = []  # (time of the fault, the term it hit, its key, what)
        kinds = ["kill-client-leader", "pause-client-leader", "kill-client-leader+raftkv",
                 "pause-client-leader", "kill-raftkv-leader", "pause-raftkv-leader"]
        end = time.monotonic() + args.seconds
        rng = run.rng
        while time.monotonic() < end - 1:
            kind = rng.choice(kinds)
            if "client-leader" in kind:
                h = run.holder(ELECTION_PREFIX)
                if h is None:
                    run.sleep(0.1)
                    continue
                target = run.procs[json.loads(h["value"])["who"]]
                what = "%s %s (term %d)" % ("SIGKILL" if kind.startswith("kill") else "SIGSTOP",
                                             target.name, h["create_revision"])
                if kind.startswith("kill"):
                    run.fault(what + ", the client leader")
                    failovers.append((time.monotonic(), h["create_revision"], h["key"], what))
                    target.kill()
                    if kind.endswith("+raftkv"):
                        # The lease must end on time across a raftkv leader change too:
                        # the new leader continues the deadlines it kept as a follower.
                        run.sleep(0.3)
                        run.kill_raftkv_leader(rng.uniform(0.5, 1.5))
                    else:
                        run.sleep(rng.uniform(0.5, 1.5))
                    target.start()
                    run.fault("restart %s" % target.name)
                    run.sleep(args.ttl + 1.5)
                else:
                    d = rng.uniform(args.ttl + 1.5, args.ttl + 3.0)
                    run.fault(what + ", the client leader, for %.1f s" % d)
                    failovers.append((time.monotonic(), h["create_revision"], h["key"], what))
                    target.pause()
                    run.sleep(d)
                    target.resume()
                    run.fault("SIGCONT %s" % target.name)
            elif kind == "kill-raftkv-leader":
                run.kill_raftkv_leader(rng.uniform(0.5, 2.5))
            else:
                run.pause_raftkv_leader(rng.uniform(0.5, 2.5))
            run.sleep(rng.uniform(0.7, 1.5))
        run.heal()
        run.wait_healthy(30)
        run.sleep(2.0)
        run.stop_clients()
        upto = run.current_revision()
        deadline = time.monotonic() + 10
        while observer.next_rev <= upto and time.monotonic() < deadline:
            time.sleep(0.1)
        observer.stop.set()
        observer.join(5)
        history = read_history(run.endpoints, ELECTION_PREFIX, True, upto)
        bad = []
        for ep in run.endpoints:
            other = read_history([ep], ELECTION_PREFIX, True, upto)
            if [(e["revision"], e["kv"]["key"]) for e in other] != \
                    [(e["revision"], e["kv"]["key"]) for e in history]:
                bad.append("%s's history of the election differs" % ep)
        records = {name: read_records(proc) for name, proc in run.procs.items()}
        with open(os.path.join(args.workdir, "history.json"), "w") as f:
            json.dump({"upto": upto, "history": history, "observed": observer.events,
                       "faults": run.faults}, f)
        b2, slow, figures = check_history(history, upto, records, observer, failovers, bound)
        bad += b2
        crashes = [x for proc in run.procs.values() for x in proc.exits] + run.cluster.crashes
        print("faults injected: %d" % len([f for f in run.faults
                                           if "SIGKILL" in f[1] or "SIGSTOP" in f[1]]))
        for k, v in sorted(figures.items()):
            print("%s: %s" % (k, v))
        print("failover bound: %.1f s" % bound)
        for b in bad:
            print("VIOLATION: " + b)
        for s in slow:
            print("NO PROGRESS: " + s)
        for c in crashes:
            print("CRASH: " + c)
        ok = not bad and not slow and not crashes
        print("seed %d, %.1f s wall" % (seed, time.monotonic() - started))
        print("recipes.election: %s" % ("PASS" if ok else "FAIL"))
        run.failed = not ok
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
