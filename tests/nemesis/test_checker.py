"""Unit tests of the linearizability checker on hand-written register histories.

Run: python3 tests/nemesis/test_checker.py   (ctest runs it in nemesis.unit)
Times below are in abstract units; each op is (call, ret) with ret None = unknown.
"""

import os
import random
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from checker import (CasModel, Model, PairModel, RegisterModel, check_history,  # noqa: E402
                     check_key, explain)
from history import FAIL, OK, UNKNOWN, Event, Op  # noqa: E402

_ids = iter(range(1, 1 << 30))


def w(value, call, ret, status=OK, key="k", client=0):
    return Op(next(_ids), client, 1, key, "write", value, call,
              ret if status == OK else None, status)


def r(value, call, ret, status=OK, key="k", client=0):
    return Op(next(_ids), client, 1, key, "read", None, call,
              ret if status == OK else None, status, result=value if status == OK else None)


class RawRegister(RegisterModel):
    """The register without the prepare rewrite: the plain search must agree with it."""

    def prepare(self, ops):
        return ops


MODELS = [RegisterModel(), RawRegister()]


class LinearizableHistories(unittest.TestCase):
    def assertLinearizable(self, ops):
        for m in MODELS:
            res = check_key(m, "k", ops)
            self.assertTrue(res.ok, "%s: expected linearizable" % type(m).__name__)
            self.assertFalse(res.inconclusive)

    def test_empty_history(self):
        self.assertLinearizable([])

    def test_missing_key_reads_empty(self):
        self.assertLinearizable([r("", 0, 1)])

    def test_sequential_write_then_read(self):
        self.assertLinearizable([w("a", 0, 1), r("a", 2, 3), w("b", 4, 5), r("b", 6, 7)])

    def test_concurrent_read_sees_old_or_new(self):
        # The read overlaps the write: both answers are fine.
        self.assertLinearizable([w("a", 0, 1), w("b", 2, 6), r("a", 3, 4)])
        self.assertLinearizable([w("a", 0, 1), w("b", 2, 6), r("b", 3, 4)])

    def test_reads_order_concurrent_writes(self):
        # Two overlapping writes; reads after both fix the order b then a.
        self.assertLinearizable([w("a", 0, 5), w("b", 1, 6), r("a", 7, 8), r("a", 9, 10)])

    def test_failed_write_is_ignored(self):
        self.assertLinearizable([w("a", 0, 1), w("b", 2, 3, FAIL), r("a", 4, 5)])

    def test_unknown_write_may_take_effect_late(self):
        # Called at 2, outcome unknown: it may be applied long after, between the reads.
        self.assertLinearizable([w("a", 0, 1), w("b", 2, None, UNKNOWN), r("a", 10, 11),
                                 r("b", 20, 21), r("b", 30, 31)])

    def test_unknown_write_may_never_take_effect(self):
        self.assertLinearizable([w("a", 0, 1), w("b", 2, None, UNKNOWN), r("a", 10, 11),
                                 r("a", 20, 21)])

    def test_unknown_read_is_ignored(self):
        self.assertLinearizable([w("a", 0, 1), r(None, 2, None, UNKNOWN), r("a", 3, 4)])

    def test_equal_times_are_concurrent(self):
        # The read is called when the write returns: taken as concurrent.
        self.assertLinearizable([w("a", 0, 5), r("", 5, 6)])


class NonLinearizableHistories(unittest.TestCase):
    def assertViolation(self, ops, stuck_value=None):
        for m in MODELS:
            res = check_key(m, "k", ops)
            self.assertFalse(res.ok, "%s: expected a violation" % type(m).__name__)
            self.assertFalse(res.inconclusive)
            self.assertIsNotNone(res.stuck)
            if stuck_value is not None:
                self.assertEqual(res.stuck.result, stuck_value)

    def test_stale_read_after_write_returned(self):
        # The write of b returned before the read was called: a read of a is stale.
        self.assertViolation([w("a", 0, 1), w("b", 2, 3), r("a", 4, 5)])

    def test_read_of_a_value_never_written(self):
        self.assertViolation([w("a", 0, 1), r("z", 2, 3)], stuck_value="z")

    def test_failed_write_must_not_be_seen(self):
        self.assertViolation([w("a", 0, 1), w("b", 2, 3, FAIL), r("b", 4, 5)], "b")

    def test_value_flips_back(self):
        # Reads see b, then a again, with both writes long done: a went back in time.
        self.assertViolation([w("a", 0, 1), w("b", 2, 3), r("b", 4, 5), r("a", 6, 7)], "a")

    def test_unknown_write_cannot_be_seen_before_its_call(self):
        self.assertViolation([w("a", 0, 1), r("b", 2, 3), w("b", 4, None, UNKNOWN)], "b")

    def test_unknown_write_cannot_be_unseen(self):
        # Once a read returned b, later reads cannot see a again.
        self.assertViolation([w("a", 0, 1), w("b", 2, None, UNKNOWN), r("b", 5, 6),
                              r("a", 7, 8)], "a")

    def test_concurrent_reads_disagree_on_order(self):
        # Writes a and b overlap; one reader sees a then b, another b then a, all
        # sequential per reader and after both writes returned: impossible.
        self.assertViolation([w("a", 0, 3), w("b", 0, 3), r("a", 4, 5), r("b", 6, 7),
                              r("a", 8, 9)])


class Explain(unittest.TestCase):
    def test_report_names_key_op_and_faults(self):
        ops = [w("a", 0, 1_000_000_000, key="x"), w("b", 2_000_000_000, 3_000_000_000, key="x"),
               r("a", 4_000_000_000, 5_000_000_000, key="x")]
        rep = check_history(RegisterModel(), ops)
        self.assertEqual(len(rep.violations), 1)
        events = [Event(3_500_000_000, "partition", "isolate-follower node3")]
        text = explain(rep.violations[0], ops, events, 0)
        self.assertIn("VIOLATION on key 'x'", text)
        self.assertIn("read  x -> 'a'", text)
        self.assertIn("isolate-follower node3", text)
        self.assertIn("the write of the value it read", text)


class Randomized(unittest.TestCase):
    """Histories made by a simulated atomic register are linearizable; corrupting one
    read to a value that was overwritten long before makes them not linearizable. The
    plain search and the rewritten one agree on both."""

    def simulate(self, rng, clients=4, ops_per_client=25):
        value, ops, t = "", [], 0
        # Each op takes effect at one instant inside its interval.
        busy_until = [0] * clients
        pending = []  # (effect time, op)
        seq = 0
        for _ in range(clients * ops_per_client):
            c = rng.randrange(clients)
            call = busy_until[c] + rng.randrange(1, 5)
            effect = call + rng.randrange(0, 5)
            ret = effect + rng.randrange(0, 5)
            busy_until[c] = ret
            seq += 1
            if rng.random() < 0.5:
                op = Op(seq, c, 1, "k", "write", "v%d" % seq, call, ret, OK)
            else:
                op = Op(seq, c, 1, "k", "read", None, call, ret, OK)
            pending.append((effect, seq, op))
        pending.sort(key=lambda p: (p[0], p[1]))
        for _, _, op in pending:
            if op.kind == "write":
                value = op.arg
            else:
                op.result = value
            ops.append(op)
        return ops

    def test_simulated_register_is_linearizable(self):
        rng = random.Random(7)
        for _ in range(30):
            ops = self.simulate(rng)
            # Some writes lose their answer: unknown, which must stay linearizable.
            for o in ops:
                if o.kind == "write" and rng.random() < 0.2:
                    o.status, o.ret = UNKNOWN, None
            for m in MODELS:
                self.assertTrue(check_key(m, "k", ops).ok)

    def test_corrupted_read_is_caught(self):
        rng = random.Random(11)
        caught = 0
        for _ in range(30):
            ops = self.simulate(rng)
            reads = [o for o in ops if o.kind == "read"]
            writes = [o for o in ops if o.kind == "write"]
            if not reads or not writes:
                continue
            # A read that started after two writes returned, made to return the older one.
            late = [rd for rd in reads
                    if sum(1 for wr in writes if wr.ret < rd.call) >= 2]
            if not late:
                continue
            rd = late[-1]
            done = sorted((wr for wr in writes if wr.ret < rd.call), key=lambda o: o.ret)
            old = done[0]
            # Only a violation if some write returned after `old` was last written and
            # before the read; check that by construction: a later write returned
            # before the read was called and was called after old returned.
            if not any(wr.call > old.ret and wr.ret < rd.call for wr in writes):
                continue
            rd.result = old.arg
            results = [check_key(m, "k", ops).ok for m in MODELS]
            self.assertEqual(results, [False, False])
            caught += 1
        self.assertGreater(caught, 5)


class Budget(unittest.TestCase):
    def test_budget_is_reported_as_inconclusive(self):
        ops = [w("v%d" % i, 0, 100) for i in range(12)] + [r("nope", 200, 201)]
        res = check_key(RawRegister(), "k", ops, max_steps=50)
        self.assertTrue(res.inconclusive)
        self.assertFalse(res.ok)


def op(kind, arg, result, call, ret, status=OK, key="k"):
    return Op(next(_ids), 0, 1, key, kind, arg, call, ret if status != UNKNOWN else None,
              status, result=result)


class RawCas(CasModel):
    def prepare(self, ops):
        return ops


class RawPair(PairModel):
    def prepare(self, ops):
        return ops


class CasHistories(unittest.TestCase):
    """The cas workload's model: the pruned and the plain search agree."""

    def check(self, ops):
        results = [check_key(m, "k", ops).ok for m in (CasModel(), RawCas())]
        self.assertEqual(results[0], results[1])
        return results[0]

    def test_cas_succeeds_only_on_its_expected_value(self):
        self.assertTrue(self.check([op("write", "x", None, 0, 1),
                                    op("cas", ("x", "y", 1), ("ok",), 2, 3),
                                    op("read", None, "y", 4, 5)]))
        # Applied without its compare: z was there, not x.
        self.assertFalse(self.check([op("write", "x", None, 0, 1), op("write", "z", None, 2, 3),
                                     op("cas", ("x", "y", 1), ("ok",), 4, 5)]))
        # Create-only on a key that exists.
        self.assertFalse(self.check([op("write", "x", None, 0, 1),
                                     op("cas", ("", "y", 0), ("ok",), 2, 3)]))

    def test_failed_cas_reads_the_current_value(self):
        self.assertTrue(self.check([op("write", "x", None, 0, 1), op("write", "z", None, 2, 3),
                                    op("cas", ("x", "y", 1), ("failed", "z"), 4, 5)]))
        # Failed although x was there: a lost update.
        self.assertFalse(self.check([op("write", "x", None, 0, 1),
                                     op("cas", ("x", "y", 1), ("failed", "x"), 2, 3)]))

    def test_delete_then_read_is_missing(self):
        self.assertTrue(self.check([op("write", "x", None, 0, 1), op("delete", None, None, 2, 3),
                                    op("read", None, "", 4, 5)]))
        self.assertFalse(self.check([op("write", "x", None, 0, 1),
                                     op("delete", None, None, 2, 3),
                                     op("read", None, "x", 4, 5)]))

    def test_unknown_cas_whose_value_was_read_needs_its_write_before_it(self):
        # x's write is unknown and only the CAS that replaced it shows it happened.
        self.assertTrue(self.check([op("write", "x", None, 0, None, UNKNOWN),
                                    op("cas", ("x", "y", 1), None, 2, None, UNKNOWN),
                                    op("read", None, "y", 10, 11)]))
        self.assertFalse(self.check([op("cas", ("x", "y", 1), None, 2, None, UNKNOWN),
                                     op("write", "x", None, 20, 21),
                                     op("read", None, "y", 10, 11)]))


class PairHistories(unittest.TestCase):
    """The txn workload's model."""

    def check(self, ops):
        results = [check_key(m, "p", ops).ok for m in (PairModel(), RawPair())]
        self.assertEqual(results[0], results[1])
        return results[0]

    def test_transactions_are_atomic(self):
        self.assertTrue(self.check([op("txn", ("a1", "b1"), None, 0, 1),
                                    op("txn", ("a2", "b2"), None, 2, 10),
                                    op("read", None, ("a1", "b1"), 3, 4),
                                    op("read", None, ("a2", "b2"), 5, 6)]))
        # Torn: the new a with the old b.
        self.assertFalse(self.check([op("txn", ("a1", "b1"), None, 0, 1),
                                     op("txn", ("a2", "b2"), None, 2, 10),
                                     op("read", None, ("a2", "b1"), 3, 4)]))
        # The same seen by single-key gets.
        self.assertFalse(self.check([op("txn", ("a1", "b1"), None, 0, 1),
                                     op("txn", ("a2", "b2"), None, 2, 20),
                                     op("get", 0, "a2", 3, 4), op("get", 1, "b1", 5, 6)]))

    def test_conditional_transaction(self):
        self.assertTrue(self.check([op("txn", ("a1", "b1"), None, 0, 1),
                                    op("txn-cas", ("a1", "a2", "b2", 1), ("ok",), 2, 3),
                                    op("read", None, ("a2", "b2"), 4, 5)]))
        self.assertTrue(self.check([op("txn", ("a1", "b1"), None, 0, 1),
                                    op("txn", ("a3", "b3"), None, 2, 3),
                                    op("txn-cas", ("a1", "a2", "b2", 1), ("failed", ("a3", "b3")),
                                       4, 5)]))
        # Succeeded without its compare holding.
        self.assertFalse(self.check([op("txn", ("a1", "b1"), None, 0, 1),
                                     op("txn", ("a3", "b3"), None, 2, 3),
                                     op("txn-cas", ("a1", "a2", "b2", 1), ("ok",), 4, 5)]))


class ModelInterface(unittest.TestCase):
    def test_base_model_is_abstract(self):
        with self.assertRaises(NotImplementedError):
            Model().init()


if __name__ == "__main__":
    unittest.main()
