"""Unit tests of the fault schedule and of the partitions it asks for (no processes, no
iptables: a fake cluster that answers who leads, a fake firewall that records rules).

Run: python3 tests/nemesis/test_faults.py   (ctest runs it in nemesis.unit)
"""

import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faults import PROFILES, Nemesis, Plan, Routing, Step  # noqa: E402


class FakeNode:
    def __init__(self, i):
        self.uid = 46000 + i
        self.raft_port = 7000 + i
        self.http_port = 4000 + i
        self.proc = object()
        self.paused = False


class FakeCluster:
    def __init__(self, n, leader):
        self.nodes = {i: FakeNode(i) for i in range(1, n + 1)}
        self._leader = leader

    def leader(self):
        return self._leader

    def poll_crashes(self):
        return []


class FakeFirewall:
    def __init__(self):
        self.rules = []  # (src uid, dst port, mode) in place now
        self.ever = []  # every rule ever added

    def block(self, uid, ports, mode):
        self.rules += [(uid, p, mode) for p in ports]
        self.ever += [(uid, p, mode) for p in ports]

    def heal(self):
        self.rules = []


def nemesis(n=3, leader=2):
    return Nemesis(FakeCluster(n, leader), FakeFirewall(), [], Routing(), lambda s: None, 0)


def step(kind, perm, variant="pair"):
    return Step(kind=kind, duration_s=0, gap_s=0, on_leader=False, perm=perm, mode="drop",
                variant=variant)


def reach(pairs, n):
    """Who can send to whom once the cuts are in place."""
    cut = set(pairs)
    return {(a, b) for a in range(1, n + 1) for b in range(1, n + 1)
            if a != b and (a, b) not in cut}


class Cuts(unittest.TestCase):
    def test_isolate_leader_cuts_both_directions(self):
        pairs, text, isolated = nemesis(3, leader=2).cuts(step("isolate-leader", [1, 2, 3]))
        self.assertEqual(reach(pairs, 3), {(1, 3), (3, 1)})
        self.assertEqual(isolated, {2})
        self.assertIn("node2 (the leader)", text)

    def test_isolate_follower_never_picks_the_leader(self):
        for perm in ([2, 1, 3], [2, 3, 1], [1, 2, 3], [3, 2, 1]):
            pairs, _, isolated = nemesis(3, leader=2).cuts(step("isolate-follower", perm))
            self.assertNotIn(2, isolated)
            (f,) = isolated
            self.assertEqual({x for x in (1, 2, 3) if x != f},
                             {b for a, b in reach(pairs, 3)})

    def test_bridge_node_reaches_both_halves_which_do_not_reach_each_other(self):
        for n, perm in ((3, [3, 1, 2]), (5, [5, 4, 1, 2, 3])):
            pairs, _, _ = nemesis(n).cuts(step("bridge", perm))
            r = reach(pairs, n)
            half = (n - 1) // 2
            a, bridge, b = perm[:half], perm[half], perm[half + 1:]
            for x in a + b:
                self.assertIn((bridge, x), r)
                self.assertIn((x, bridge), r)
            for x in a:
                for y in b:
                    self.assertNotIn((x, y), r)
                    self.assertNotIn((y, x), r)

    def test_split_cuts_a_minority(self):
        pairs, _, isolated = nemesis(5).cuts(step("split", [4, 1, 2, 3, 5]))
        self.assertEqual(isolated, {4, 1})
        r = reach(pairs, 5)
        self.assertNotIn((4, 2), r)
        self.assertIn((4, 1), r)
        self.assertIn((2, 5), r)

    def test_one_way_cuts_one_direction_only(self):
        pairs, _, _ = nemesis(3, leader=1).cuts(step("one-way", [3, 1, 2], "mute"))
        self.assertEqual(sorted(pairs), [(1, 2), (1, 3)])
        pairs, _, _ = nemesis(3, leader=1).cuts(step("one-way", [3, 1, 2], "deaf"))
        self.assertEqual(sorted(pairs), [(2, 1), (3, 1)])
        pairs, _, _ = nemesis(3, leader=1).cuts(step("one-way", [3, 1, 2], "pair"))
        self.assertEqual(pairs, [(3, 1)])

    def test_no_leader_known_falls_back_to_the_seeded_pick(self):
        _, _, isolated = nemesis(3, leader=None).cuts(step("isolate-leader", [3, 1, 2]))
        self.assertEqual(isolated, {3})

    def test_a_cut_blocks_the_raft_and_http_ports_of_the_destination_for_the_source_uid(self):
        nem = nemesis(3, leader=2)
        nem._partition(step("one-way", [3, 1, 2], "pair"))  # node3 -/-> node1, then healed
        self.assertEqual(nem.fw.ever, [(46003, 7001, "drop"), (46003, 4001, "drop")])
        self.assertEqual(nem.fw.rules, [])
        self.assertEqual([e.action for e in nem.events], ["partition", "heal"])
        self.assertEqual(nem.routing.isolated, set())


class PlanFromSeed(unittest.TestCase):
    def test_same_seed_same_schedule(self):
        p, q = Plan(42, 3, "mixed"), Plan(42, 3, "mixed")
        self.assertEqual([p.next() for _ in range(50)], [q.next() for _ in range(50)])
        self.assertNotEqual([Plan(43, 3, "mixed").next() for _ in range(50)],
                            [Plan(42, 3, "mixed").next() for _ in range(50)])

    def test_mixed_profile_reaches_every_fault(self):
        p = Plan(1, 5, "mixed")
        kinds = {p.next().kind for _ in range(500)}
        self.assertEqual(kinds, set(PROFILES["mixed"]))

    def test_stale_follower_profile_only_isolates_followers(self):
        p = Plan(1, 3, "stale-follower")
        self.assertEqual({p.next().kind for _ in range(50)}, {"isolate-follower"})


if __name__ == "__main__":
    unittest.main()
