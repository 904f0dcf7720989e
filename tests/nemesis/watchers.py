"""Watchers for the nemesis's `watch` workload (issue 12), and the check of what they saw.

Each watcher follows the workload's keys (the prefix "k") with a /v1/watch stream from the
revision of a first listing (list, then watch from its revision + 1). When a stream ends, for
whatever reason (the node was killed, paused, partitioned, shut down, or the watcher hops
on purpose every few seconds), it reconnects to another node with rev = the last revision it
examined + 1: the last events message, or the last progress message ("everything up to R
was delivered"). A read that waits longer than a few progress intervals counts as a stuck
stream. If every node answers 410 (each one's history starts after that revision: nodes
restarted from snapshots), it lists again and watches from the new listing: a new segment.

check() holds each watcher to the clients' history (checker's ops):
  * order: revisions never go back, and no (revision, key) is delivered twice;
  * exactly once: every write the clients saw applied (ok) whose revision lies in a segment
    the watcher covered is among its events, as put (key, value) or delete (key) at that
    revision; no write that certainly failed appears;
  * agreement: two watchers that both covered a revision saw the same events for it;
  * state: the last segment's listing, replayed with its events up to the final revision,
    equals the final listing, and every earlier segment's replay equals the next listing
    wherever the watcher covered everything up to it.
Standard library only.
"""

import http.client
import json
import random
import socket
import threading
import time
import urllib.parse
from typing import Dict, List, Optional, Tuple

from history import FAIL, OK, Op

PREFIX = "k"
PROGRESS_S = 1
STUCK_S = 4 * PROGRESS_S  # no message for this long: the stream is stuck (paused node...)
HOP_S = (3.0, 8.0)  # a watcher moves to another node this often, faults or not


def list_prefix(port: int, timeout_s: float) -> Optional[Tuple[int, Dict[str, Tuple[str, int]]]]:
    """A linearizable listing of the prefix: (revision, {key: (value, mod_revision)})."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", "/v1/kv/%s?prefix&limit=10000" % PREFIX)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return None
        j = json.loads(body)
        if j.get("more"):
            return None
        return j["revision"], {kv["key"]: (kv["value"], kv["mod_revision"]) for kv in j["kvs"]}
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return None
    finally:
        conn.close()


class Watcher:
    """One watcher thread. pieces: ("list", R, state), ("events", R, [(type, key, value)]) and
    ("until", R): the segment since the last listing covered revisions up to R."""

    def __init__(self, wid: int, ports: Dict[int, int], seed: int, log):
        self.wid = wid
        self.ports = ports
        self.rng = random.Random("watcher-%d-%d" % (seed, wid))
        self.log = log
        self.lock = threading.Lock()
        self.pieces: List[tuple] = []
        self.examined = 0  # the last revision examined
        self.reconnects = 0
        self.cancels: Dict[str, int] = {}
        self.relists = 0
        self.errors: List[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="watcher-%d" % wid, daemon=True)

    def start(self):
        self.thread.start()

    def finish(self, timeout_s: float):
        self.stop.set()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.errors.append("watcher %d did not stop" % self.wid)

    def _list(self) -> bool:
        for node in self.rng.sample(sorted(self.ports), len(self.ports)):
            got = list_prefix(self.ports[node], 3)
            if got is not None:
                rev, state = got
                with self.lock:
                    self.pieces.append(("list", rev, state))
                    self.examined = rev
                return True
        return False

    def _run(self):
        try:
            while not self.stop.is_set() and not self._list():
                self.stop.wait(0.2)
            node = self.rng.choice(sorted(self.ports))
            refused = 0
            while not self.stop.is_set():
                outcome = self._follow(node)
                if outcome == "compacted":
                    refused += 1
                    if refused >= len(self.ports):
                        # No node holds the history from here: list again. What this
                        # segment covered ends where the watcher got to.
                        self.relists += 1
                        with self.lock:
                            self.pieces.append(("until", self.examined))
                        refused = 0
                        while not self.stop.is_set() and not self._list():
                            self.stop.wait(0.2)
                else:
                    refused = 0
                nodes = sorted(self.ports)
                node = nodes[(nodes.index(node) + 1) % len(nodes)]
                self.reconnects += 1
                if outcome == "unreachable":
                    self.stop.wait(0.1)
        except Exception as e:  # a bug in the nemesis: fail the run loudly
            self.errors.append("watcher %d: %r" % (self.wid, e))

    def _follow(self, node: int) -> str:
        """One stream on one node, until it ends. Returns why it ended."""
        target = "/v1/watch/%s?prefix&stream&progress=%ds&rev=%d" % (
            PREFIX, PROGRESS_S, self.examined + 1)
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[node], timeout=STUCK_S)
        hop_at = time.monotonic() + self.rng.uniform(*HOP_S)
        try:
            conn.request("GET", target)
            resp = conn.getresponse()
            if resp.status == 410:
                resp.read()
                return "compacted"
            if resp.status != 200:
                resp.read()
                return "refused"
            while not self.stop.is_set() and time.monotonic() < hop_at:
                line = resp.readline()
                if not line:
                    return "ended"
                m = json.loads(line)
                t = m["type"]
                rev = m.get("revision", 0)
                with self.lock:
                    if t == "events":
                        evs = [(e["type"], e["kv"]["key"], e["kv"].get("value", ""))
                               for e in m["events"]]
                        self.pieces.append(("events", rev, evs))
                        if rev <= self.examined:
                            self.errors.append(
                                "watcher %d: node%d sent revision %d after %d was examined"
                                % (self.wid, node, rev, self.examined))
                        self.examined = max(self.examined, rev)
                    elif t == "progress":
                        self.examined = max(self.examined, rev)
                    elif t == "canceled":
                        reason = m.get("reason", "?")
                        self.cancels[reason] = self.cancels.get(reason, 0) + 1
                        self.examined = max(self.examined, rev)
                        return "canceled"
            return "hop"
        except (OSError, http.client.HTTPException, ValueError):
            return "unreachable"
        finally:
            conn.close()


def _write_effects(ops: List[Op]) -> Tuple[Dict[int, tuple], set]:
    """The changes of the writes the clients saw applied, by revision: revision ->
    (type, key, value); and the values of the writes that certainly failed."""
    applied: Dict[int, tuple] = {}
    failed = set()
    for o in ops:
        rev = o.extra.get("revision")
        if o.kind in ("write", "cas"):
            value = o.arg if o.kind == "write" else o.arg[1]
            if o.status == OK and rev is not None:
                applied[rev] = ("put", o.key, value)
            elif o.status == FAIL:
                failed.add(value)
        elif o.kind == "delete" and o.status == OK and rev is not None:
            if o.extra.get("deleted"):
                applied[rev] = ("delete", o.key, "")
    return applied, failed


def _replay(state: Dict[str, Tuple[str, int]], rev: int, evs: List[tuple]):
    for typ, key, value in evs:
        if typ == "put":
            state[key] = (value, rev)
        else:
            state.pop(key, None)


def check(watchers: List["Watcher"], ops: List[Op],
          final: Optional[Tuple[int, Dict[str, Tuple[str, int]]]]) -> List[str]:
    """Violations (sentences), empty when every watcher passed."""
    violations: List[str] = []
    applied, failed = _write_effects(ops)
    seen_by_rev: Dict[int, Tuple[int, List[tuple]]] = {}  # revision -> (watcher, events)
    for w in watchers:
        tag = "watcher %d" % w.wid
        pieces = list(w.pieces)
        # Segments: a listing, then the events after it.
        segments: List[list] = []  # [start, state, events, covered up to]
        for p in pieces:
            if p[0] == "list":
                segments.append([p[1], dict(p[2]), [], None])
            elif p[0] == "until" and segments:
                segments[-1][3] = p[1]
            elif segments:
                segments[-1][2].append((p[1], p[2]))
        for si, (start, state, events, until) in enumerate(segments):
            # Where this segment's coverage ends: where the watcher got to before it had to
            # list again, or what it examined last.
            end = until if until is not None else w.examined
            last = start
            keys_at: Dict[int, set] = {}
            for rev, evs in events:
                if rev <= last and rev not in keys_at:
                    violations.append("%s: revision %d delivered after %d" % (tag, rev, last))
                ks = keys_at.setdefault(rev, set())
                for e in evs:
                    if e[1] in ks:
                        violations.append("%s: %s at revision %d delivered twice"
                                          % (tag, e[1], rev))
                    ks.add(e[1])
                    if e[0] == "put" and e[2] in failed:
                        violations.append("%s: a failed write's value %r arrived at %d"
                                          % (tag, e[2], rev))
                last = max(last, rev)
                other = seen_by_rev.get(rev)
                if other is None:
                    seen_by_rev[rev] = (w.wid, evs)
                elif sorted(other[1]) != sorted(evs):
                    violations.append("revision %d: watcher %d saw %s, watcher %d saw %s"
                                      % (rev, other[0], other[1], w.wid, evs))
            got = {(rev, e) for rev, evs in events for e in evs}
            for rev, change in applied.items():
                if start < rev <= end and (rev, change) not in got:
                    violations.append("%s: missed %s %s at revision %d (acknowledged)"
                                      % (tag, change[0], change[1], rev))
            # State: this segment's replay against the next listing, or the final one.
            if si + 1 < len(segments):
                target = segments[si + 1]
                want_rev, want = target[0], target[1]
                complete = False  # a relist means the watcher could not cover up to it
            else:
                complete = final is not None and end >= final[0]
                want_rev, want = final if final is not None else (0, {})
            if complete:
                st = dict(state)
                for rev, evs in events:
                    if rev <= want_rev:
                        _replay(st, rev, evs)
                if st != want:
                    diff = sorted(set(st.items()) ^ set(want.items()))[:6]
                    violations.append("%s: replayed events differ from the listing at %d: %s"
                                      % (tag, want_rev, diff))
        for e in w.errors:
            violations.append(e)
    return violations
