"""The fault schedule: which fault, on which node, for how long; and its execution.

The schedule is drawn from its own generator seeded by the run's seed, one step at a time,
so the same seed gives the same sequence of faults (kinds, node picks, durations, drop or
reject). What a step does still depends on the real cluster: "the leader" is whoever leads
when the step starts, and how many steps fit in the run depends on real time.

Faults (one at a time, each healed before the next, with a quiet gap between):
  kill              SIGKILL a node (the leader or a random one), restart it on the same data
                    directory after a while
  crash-all         SIGKILL every node at once, restart them all
  pause             SIGSTOP a node (the leader or a random one), SIGCONT it after a while
  isolate-leader    the leader cannot reach anyone and no one can reach it
  isolate-follower  the same for one follower
  bridge            two halves that cannot reach each other, and one node that reaches both
  split             a random minority cut from the majority (both directions)
  one-way           one direction only: the leader cannot send to the others ("mute"),
                    the others cannot send to the leader ("deaf"), or one random pair
A partition drops packets ("drop": the sender retransmits, then times out) or answers them
with a TCP reset ("reject": the sender sees a refused or reset connection), chosen per step.
"""

import random
import time
from dataclasses import dataclass, field
from typing import Callable, List, Set, Tuple

from history import Event

PROFILES = {
    # kind: weight
    "mixed": {"kill": 2.0, "crash-all": 0.3, "pause": 2.0, "isolate-leader": 1.5,
              "isolate-follower": 1.5, "bridge": 1.0, "split": 1.0, "one-way": 1.5},
    # Process faults only.
    "kills": {"kill": 3.0, "crash-all": 0.5, "pause": 1.0},
    # Partitions only.
    "partitions": {"isolate-leader": 1.5, "isolate-follower": 1.5, "bridge": 1.0, "split": 1.0,
                   "one-way": 1.5},
    # For --unsafe-stale-reads: a follower cut off while the majority keeps writing.
    "stale-follower": {"isolate-follower": 1.0},
}

PARTITIONS = {"isolate-leader", "isolate-follower", "bridge", "split", "one-way"}


@dataclass
class Step:
    kind: str
    duration_s: float
    gap_s: float
    on_leader: bool  # kill/pause: the leader (else perm[0])
    perm: List[int]  # a random permutation of the node numbers: the step's random picks
    mode: str  # partitions: "drop" or "reject"
    variant: str = ""  # one-way: "mute", "deaf" or "pair"


class Plan:
    """Draws steps from Random(seed) (independent of the clients' generators)."""

    def __init__(self, seed: int, n: int, profile: str):
        self.rng = random.Random("faults-%d" % seed)
        self.n = n
        self.weights = PROFILES[profile]
        self.profile = profile

    def next(self) -> Step:
        rng = self.rng
        kinds = sorted(self.weights)
        kind = rng.choices(kinds, [self.weights[k] for k in kinds])[0]
        perm = list(range(1, self.n + 1))
        rng.shuffle(perm)
        if self.profile == "stale-follower":
            duration, gap = rng.uniform(4.0, 6.0), rng.uniform(1.0, 2.0)
        elif kind in ("kill", "crash-all"):
            duration, gap = rng.uniform(0.5, 4.0), rng.uniform(1.0, 3.0)
        elif kind == "pause":
            duration, gap = rng.uniform(1.0, 5.0), rng.uniform(1.0, 3.0)
        else:
            duration, gap = rng.uniform(2.0, 6.0), rng.uniform(1.0, 3.0)
        return Step(kind=kind, duration_s=duration, gap_s=gap, on_leader=rng.random() < 0.5,
                    perm=perm, mode=rng.choice(["drop", "reject"]),
                    variant=rng.choice(["mute", "deaf", "pair"]))


@dataclass
class Routing:
    """What the nemesis tells the clients (used only by --unsafe-stale-reads, which reads
    from isolated nodes and writes through the others)."""
    isolated: Set[int] = field(default_factory=set)


class Nemesis:
    """Runs steps against the cluster, from the main thread (see cluster.start_node)."""

    def __init__(self, cluster, firewall, events: List[Event], routing: Routing,
                 log: Callable[[str], None], t0: int):
        self.t0 = t0
        self.cluster = cluster
        self.fw = firewall
        self.events = events
        self.routing = routing
        self.log = log
        self.counts = {}

    def record(self, action: str, text: str):
        e = Event(time.monotonic_ns(), action, text)
        self.events.append(e)
        self.log(e.describe(self.t0))

    def hold(self, seconds: float):
        """Waits out a fault's (or gap's) duration, restarting a node that exits on its
        own meanwhile (a crash is recorded and fails the run; restarting keeps it going)."""
        end = time.monotonic() + seconds
        while True:
            self.restart_crashed()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    def restart_crashed(self):
        for i in self.cluster.poll_crashes():
            self.record("crash", "node%d exited on its own (a bug); restarting it" % i)
            self.cluster.start_node(i)

    def _leader_or(self, fallback: int) -> int:
        lead = self.cluster.leader()
        return lead if lead is not None else fallback

    def run(self, step: Step):
        kind = step.kind
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "kill":
            self._kill(step)
        elif kind == "crash-all":
            self._crash_all(step)
        elif kind == "pause":
            self._pause(step)
        else:
            self._partition(step)
        self.hold(step.gap_s)

    def _target(self, step) -> Tuple[int, str]:
        if step.on_leader:
            return self._leader_or(step.perm[0]), "the leader"
        return step.perm[0], "a random node"

    def _kill(self, step):
        i, who = self._target(step)
        self.cluster.kill(i)
        self.record("kill", "SIGKILL node%d (%s), down for %.1f s" % (i, who, step.duration_s))
        self.hold(step.duration_s)
        self.cluster.start_node(i)
        self.record("restart", "node%d on its data directory" % i)
        self._wait_up([i])

    def _crash_all(self, step):
        for i in self.cluster.nodes:
            self.cluster.kill(i)
        self.record("kill", "SIGKILL every node, down for %.1f s" % step.duration_s)
        self.hold(step.duration_s)
        for i in self.cluster.nodes:
            self.cluster.start_node(i)
        self.record("restart", "every node on its data directory")
        self._wait_up(list(self.cluster.nodes))

    def _wait_up(self, nodes):
        """Polls until the restarted nodes answer /status (bounded: 15 s)."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            self.restart_crashed()
            if all(self.cluster.status(i) for i in nodes):
                return
            time.sleep(0.1)
        self.record("slow", "node(s) %s not answering 15 s after restart" % nodes)

    def _pause(self, step):
        i, who = self._target(step)
        self.cluster.pause(i)
        self.record("pause", "SIGSTOP node%d (%s) for %.1f s" % (i, who, step.duration_s))
        try:
            self.hold(step.duration_s)
        finally:
            self.cluster.resume(i)
        self.record("resume", "SIGCONT node%d" % i)

    def cuts(self, step) -> Tuple[List[Tuple[int, int]], str, Set[int]]:
        """The directed pairs (a, b) to cut (a cannot reach b), a description, and the
        nodes cut off from the majority."""
        nodes = list(self.cluster.nodes)
        perm = step.perm
        n = len(nodes)

        def both(xs, ys):
            return [(a, b) for a in xs for b in ys] + [(b, a) for a in xs for b in ys]

        def names(xs):
            return ",".join("node%d" % x for x in sorted(xs))

        if step.kind == "isolate-leader":
            lead = self._leader_or(perm[0])
            rest = [x for x in nodes if x != lead]
            return both([lead], rest), "node%d (the leader) | %s" % (lead, names(rest)), {lead}
        if step.kind == "isolate-follower":
            lead = self._leader_or(perm[0])
            f = next(x for x in perm if x != lead)
            rest = [x for x in nodes if x != f]
            return both([f], rest), "node%d (a follower) | %s" % (f, names(rest)), {f}
        if step.kind == "bridge":
            half = (n - 1) // 2
            a, bridge, b = perm[:half], perm[half], perm[half + 1:]
            return (both(a, b), "%s | %s, node%d reaches both" % (names(a), names(b), bridge),
                    set())
        if step.kind == "split":
            minority = perm[:(n - 1) // 2]
            rest = perm[(n - 1) // 2:]
            return both(minority, rest), "%s | %s" % (names(minority), names(rest)), set(minority)
        if step.kind == "one-way":
            lead = self._leader_or(perm[0])
            rest = [x for x in nodes if x != lead]
            if step.variant == "mute":
                return ([(lead, x) for x in rest],
                        "node%d (the leader) -/-> %s (mute leader)" % (lead, names(rest)), set())
            if step.variant == "deaf":
                return ([(x, lead) for x in rest],
                        "%s -/-> node%d (the leader; deaf leader)" % (names(rest), lead), set())
            a, b = perm[0], perm[1]
            return [(a, b)], "node%d -/-> node%d" % (a, b), set()
        raise ValueError(step.kind)

    def _partition(self, step):
        pairs, text, isolated = self.cuts(step)
        for a, b in pairs:
            nb = self.cluster.nodes[b]
            self.fw.block(self.cluster.nodes[a].uid, [nb.raft_port, nb.http_port], step.mode)
        self.routing.isolated = set(isolated)
        self.record("partition", "%s: %s (%s) for %.1f s" % (step.kind, text, step.mode,
                                                             step.duration_s))
        try:
            if step.kind == "isolate-leader":
                self._watch_new_leader(step.duration_s, isolated)
            else:
                self.hold(step.duration_s)
        finally:
            self.routing.isolated = set()
            self.fw.heal()
        self.record("heal", "all links restored")

    def _watch_new_leader(self, duration_s: float, old: Set[int]):
        """Holds the partition for duration_s, noting when the majority elects a leader of
        its own: the proof, in the event log, that the cut is real."""
        end = time.monotonic() + duration_s
        start = time.monotonic()
        while time.monotonic() < end:
            self.restart_crashed()
            lead = self.cluster.leader()
            if lead is not None and lead not in old:
                self.record("leader", "node%d leads the majority %.2f s into the partition"
                            % (lead, time.monotonic() - start))
                break
            time.sleep(0.1)
        else:
            self.record("leader", "no new leader in the majority during the partition")
        self.hold(end - time.monotonic())

    def heal_all(self):
        """Ends every fault: links restored, paused nodes resumed, killed nodes started."""
        self.routing.isolated = set()
        self.fw.heal()
        for i, node in self.cluster.nodes.items():
            if node.paused:
                self.cluster.resume(i)
            if node.proc is None:
                self.cluster.start_node(i)
        self.record("heal", "end of faults: every node up, every link restored")
