"""Unit tests of the recipe checkers on made-up histories: each check must fire on the
history it is there to catch, and a clean history must pass. No cluster needed."""

import json
import os
import sys
import types
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import election_test  # noqa: E402
import lock_test  # noqa: E402


def put(rev, token, seq, count, who):
    value = json.dumps({"token": token, "seq": seq, "count": count, "who": who}, sort_keys=True)
    return {"revision": rev, "type": "put",
            "kv": {"key": "recipes/register", "value": value, "mod_revision": rev}}


def write(ev, outcome="ok"):
    return {"ev": "write", "token": json.loads(ev["kv"]["value"])["token"],
            "seq": json.loads(ev["kv"]["value"])["seq"], "value": ev["kv"]["value"],
            "outcome": outcome, "revision": ev["revision"], "who": "x"}


class LockChecker(unittest.TestCase):
    def clean(self):
        h = [put(10, 5, 1, 1, "a"), put(11, 5, 2, 2, "a"), put(20, 15, 1, 3, "b")]
        recs = {"a": [{"ev": "acquired", "token": 5, "t": 1.0}, {"ev": "check", "token": 5, "t": 1.5},
                      write(h[0]), write(h[1])],
                "b": [{"ev": "acquired", "token": 15, "t": 2.0}, {"ev": "check", "token": 15, "t": 2.1},
                      write(h[2])],
                "c": [{"ev": "acquired", "token": 25, "t": 3.0}]}
        return h, recs

    def test_clean_history_passes(self):
        h, recs = self.clean()
        bad, slow, _ = lock_test.check(recs, h, 3)
        self.assertEqual(bad, [])
        self.assertEqual(slow, [])

    def test_token_going_back_is_two_holders(self):
        h, recs = self.clean()
        h.append(put(21, 5, 3, 4, "a"))
        bad, _, _ = lock_test.check(recs, h, 3)
        self.assertTrue(any("token 5 (a) wrote after token 15" in b for b in bad), bad)

    def test_lost_update_is_caught(self):
        h, recs = self.clean()
        h[2] = put(20, 15, 1, 2, "b")  # read the state before a's second write
        recs["b"][2] = write(h[2])
        bad, _, _ = lock_test.check(recs, h, 3)
        self.assertTrue(any("lost update" in b for b in bad), bad)

    def test_acknowledged_write_missing_is_caught(self):
        h, recs = self.clean()
        recs["b"].append(write(put(22, 15, 2, 4, "b")))
        bad, _, _ = lock_test.check(recs, h, 3)
        self.assertTrue(any("not in the history" in b for b in bad), bad)

    def test_fenced_write_present_is_caught(self):
        h, recs = self.clean()
        recs["a"][3] = write(h[1], outcome="fenced")
        bad, _, _ = lock_test.check(recs, h, 3)
        self.assertTrue(any("answered fenced but applied" in b for b in bad), bad)

    def test_overlapping_client_intervals_are_caught(self):
        h, recs = self.clean()
        recs["a"].append({"ev": "check", "token": 5, "t": 2.05})  # a acted after b acquired
        bad, _, _ = lock_test.check(recs, h, 3)
        self.assertTrue(any("client intervals overlap" in b for b in bad), bad)

    def test_no_progress_is_reported(self):
        h, recs = self.clean()
        _, slow, _ = lock_test.check(recs, h, 10)
        self.assertTrue(slow)


def ev(rev, typ, key, cr, value=""):
    kv = {"key": key, "mod_revision": rev}
    if typ == "put":
        kv.update(create_revision=cr, value=value)
    return {"revision": rev, "type": typ, "kv": kv}


class ElectionChecker(unittest.TestCase):
    def run_check(self, history, records, leaders=None, observed=None):
        obs = types.SimpleNamespace(
            events=[(0.0, e) for e in (history if observed is None else observed)],
            leaders=leaders or [], error=None)
        return election_test.check_history(history, history[-1]["revision"], records, obs, [],
                                           4.5)

    def clean(self):
        h = [ev(5, "put", "e/1", 5, "a0"), ev(6, "put", "e/2", 6, "b0"),
             ev(7, "put", "e/1", 5, "a1"), ev(8, "delete", "e/1", 0), ev(9, "put", "e/2", 6, "b1")]
        recs = {"a": [{"ev": "elected", "token": 5, "t": 1.0},
                      {"ev": "check", "token": 5, "t": 1.1},
                      {"ev": "proclaim", "outcome": "ok", "revision": 7, "value": "a1"}],
                "b": [{"ev": "elected", "token": 6, "t": 2.0},
                      {"ev": "check", "token": 6, "t": 2.1},
                      {"ev": "proclaim", "outcome": "ok", "revision": 9, "value": "b1"}]}
        return h, recs

    def test_clean_history_passes(self):
        h, recs = self.clean()
        bad, _, _ = self.run_check(h, recs, leaders=[(0, "e/1", 5, 5), (0, "e/2", 6, 8)])
        self.assertEqual(bad, [])

    def test_proclamation_out_of_term_is_caught(self):
        h, recs = self.clean()
        h.insert(2, ev(7, "put", "e/2", 6, "b-early"))  # b proclaims while a leads
        h[3] = ev(8, "put", "e/1", 5, "a1")
        bad, _, _ = self.run_check(h, {})
        self.assertTrue(any("proclaimed" in b and "while e/1" in b for b in bad), bad)

    def test_leaders_out_of_order_are_caught(self):
        h, recs = self.clean()
        bad, _, _ = self.run_check(h, recs, leaders=[(0, "e/2", 6, 6), (0, "e/1", 5, 7)])
        self.assertTrue(any("leader create_revision 5 after 6" in b for b in bad), bad)

    def test_observer_missing_an_event_is_caught(self):
        h, recs = self.clean()
        bad, _, _ = self.run_check(h, recs, observed=h[:2] + h[3:])
        self.assertTrue(any("observer's events differ" in b for b in bad), bad)

    def test_early_lease_expiry_is_caught(self):
        h, recs = self.clean()
        recs["a"] += [{"ev": "session", "lease": 1, "ttl": 2, "t_send": 0.5},
                      {"ev": "keepalive_sent", "lease": 1, "t_send": 1.0},
                      {"ev": "keepalive", "lease": 1, "t_send": 1.0},
                      {"ev": "keepalive_sent", "lease": 1, "t_send": 1.1}]
        expired = dict(h[3], cause="lease_expired")
        expired["kv"] = dict(expired["kv"], lease=1)
        obs = types.SimpleNamespace(events=[(0.0, e) for e in h[:3]] + [(2.9, expired)] +
                                    [(3.0, h[4])], leaders=[], error=None)
        bad, _, figures = election_test.check_history(h, 9, recs, obs, [], 4.5)
        self.assertTrue(any("lease 1 expired 100 ms before its deadline" in b for b in bad), bad)
        obs.events[3] = (3.2, expired)
        bad, _, figures = election_test.check_history(h, 9, recs, obs, [], 4.5)
        self.assertEqual(bad, [])
        self.assertEqual(figures["expiry_after_deadline_s"], [0.2])
        self.assertEqual(figures["expiry_after_last_keepalive_sent_plus_ttl_s"], [0.1])

    def test_overlapping_terms_are_caught(self):
        h, recs = self.clean()
        recs["a"].append({"ev": "check", "token": 5, "t": 2.5})
        bad, _, _ = self.run_check(h, recs)
        self.assertTrue(any("client terms overlap" in b for b in bad), bad)


if __name__ == "__main__":
    unittest.main()
