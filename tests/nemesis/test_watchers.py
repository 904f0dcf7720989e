"""watchers.check: what it accepts and what it reports (no cluster needed)."""

import unittest

import watchers
from history import FAIL, OK, Op


def op(i, kind, key, arg, status, rev=None, deleted=None):
    o = Op(i, 0, 1, key, kind, arg, i, i + 1, status)
    if rev is not None:
        o.extra["revision"] = rev
    if deleted is not None:
        o.extra["deleted"] = deleted
    return o


class FakeWatcher:
    def __init__(self, wid, pieces, examined):
        self.wid, self.pieces, self.examined, self.errors = wid, pieces, examined, []


OPS = [op(1, "write", "k1", "a", OK, 5), op(2, "cas", "k2", ("", "b", 0), OK, 6),
       op(3, "delete", "k1", None, OK, 7, 1), op(4, "write", "k3", "never", FAIL),
       op(5, "delete", "k9", None, OK, 8, 0)]
GOOD = [("list", 4, {"k0": ("z", 2)}), ("events", 5, [("put", "k1", "a")]),
        ("events", 6, [("put", "k2", "b")]), ("events", 7, [("delete", "k1", "")])]
FINAL = (8, {"k0": ("z", 2), "k2": ("b", 6)})


class CheckTest(unittest.TestCase):
    def test_a_faithful_watcher_passes(self):
        ws = [FakeWatcher(0, GOOD, 8), FakeWatcher(1, GOOD, 9)]
        self.assertEqual(watchers.check(ws, OPS, FINAL), [])

    def test_a_missed_write_is_reported(self):
        pieces = [p for p in GOOD if p[1] != 6]
        v = watchers.check([FakeWatcher(0, pieces, 8)], OPS, FINAL)
        self.assertTrue(any("missed put k2 at revision 6" in x for x in v), v)

    def test_a_duplicate_is_reported(self):
        pieces = GOOD + [("events", 6, [("put", "k2", "b")])]
        v = watchers.check([FakeWatcher(0, pieces, 8)], OPS, FINAL)
        self.assertTrue(any("delivered" in x for x in v), v)

    def test_a_failed_write_that_arrives_is_reported(self):
        pieces = GOOD + [("events", 8, [("put", "k3", "never")])]
        v = watchers.check([FakeWatcher(0, pieces, 8)], OPS, FINAL)
        self.assertTrue(any("failed write" in x for x in v), v)

    def test_watchers_that_disagree_are_reported(self):
        other = GOOD[:2] + [("events", 6, [("put", "k2", "B")])] + GOOD[3:]
        v = watchers.check([FakeWatcher(0, GOOD, 8), FakeWatcher(1, other, 8)], OPS, FINAL)
        self.assertTrue(any("watcher 0 saw" in x for x in v), v)

    def test_a_state_that_does_not_replay_is_reported(self):
        final = (8, {"k0": ("z", 2), "k2": ("b", 6), "k5": ("x", 3)})
        v = watchers.check([FakeWatcher(0, GOOD, 8)], OPS, final)
        self.assertTrue(any("replayed events differ" in x for x in v), v)

    def test_a_relist_starts_a_new_segment(self):
        # Revisions 5-6 were never covered (the watcher relisted at 6).
        pieces = [("list", 4, {"k0": ("z", 2)}), ("until", 4), ("list", 6, {"k0": ("z", 2), "k1": ("a", 5),
                                                              "k2": ("b", 6)}),
                  ("events", 7, [("delete", "k1", "")])]
        self.assertEqual(watchers.check([FakeWatcher(0, pieces, 8)], OPS, FINAL), [])


if __name__ == "__main__":
    unittest.main()
