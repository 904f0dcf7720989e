"""Linearizability checker: the Wing-Gong-Lowe search with memoization.

A history is checked one key at a time (a model of a single object: P-compositionality,
Horn & Kroening 2015). For one key, the search looks for a total order of the operations
that (1) respects real time: if a returned before b was called, a comes first, and
(2) is legal for the model: replaying it from the initial state produces every answer the
clients saw.

The search is Lowe's refinement of Wing & Gong ("Testing for linearizability", 2017), as in
Porcupine: the calls and returns of the operations form a doubly linked list in time order;
the search walks it from the front, tries to linearize each call it meets (the model accepts
it from the current state), lifts the linearized call and its return out of the list, and
restarts from the front; meeting a return means an operation that had to be linearized by
then was not, so it backtracks. The pair (set of linearized operations as a bitmask, model
state) is cached (the bitmask as a 128-bit digest, see _digest): reaching a pair twice cannot
lead anywhere new.

Outcomes:
  * fail ops are dropped (they did not take effect, and a failed read tells nothing);
  * unknown ops have no return (it is at infinity): the search may linearize them anywhere
    after their call, or never. The check succeeds once every ok op is linearized.
A model may rewrite the history first (Model.prepare) when it knows a cheaper equivalent.
"""

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from history import FAIL, OK, UNKNOWN, Event, Op


class Model:
    """A sequential specification of one object (one key)."""

    name = "model"

    def init(self):
        """The initial state: a hashable value."""
        raise NotImplementedError

    def step(self, state, op: Op) -> Tuple[bool, object]:
        """Whether `op` may take effect in `state` with the answer it got, and the state after.

        For an op of unknown outcome there is no answer to match: say how it would change
        the state if it took effect.
        """
        raise NotImplementedError

    def prepare(self, ops: List[Op]) -> List[Op]:
        """Returns an equivalent history that is cheaper to search (default: the same)."""
        return ops


class RegisterModel(Model):
    """A read/write register whose initial value is "" (a missing key reads as "").

    Ops: kind "write" with arg = the value written; kind "read" with result = the value read.
    """

    name = "register"

    def init(self):
        return ""

    def step(self, state, op):
        if op.kind == "write":
            return True, op.arg
        if op.kind == "read":
            if op.status != OK:
                return True, state
            return op.result == state, state
        raise ValueError("register: unknown op kind %r" % op.kind)

    def prepare(self, ops):
        """Shrinks the search when every write writes a unique value (the workload's rule).

        * A read of unknown outcome has no effect: dropped.
        * A write of unknown outcome whose value no ok read returned can be left out: if a
          linearization had it, dropping it keeps the linearization legal (the op after it
          is a write, or a read that would have had to return its value: there is none).
        * A write of unknown outcome whose value some ok read returned must be in every
          linearization, before the first such read returns: that is its return time
          (still an unknown op in reports; it is marked extra["bounded_by_read"]).
        Values are not unique if two writes write the same one: then nothing is rewritten.
        """
        writes = [o for o in ops if o.kind == "write"]
        if len({o.arg for o in writes}) != len(writes):
            return ops
        first_read_ret: Dict[str, int] = {}
        for o in ops:
            if o.kind == "read" and o.status == OK:
                r = first_read_ret.get(o.result)
                if r is None or o.ret < r:
                    first_read_ret[o.result] = o.ret
        out = []
        for o in ops:
            if o.status == UNKNOWN:
                if o.kind == "read":
                    continue
                if o.kind == "write":
                    r = first_read_ret.get(o.arg)
                    if r is None:
                        continue
                    # A read that returned before the write was even called is itself
                    # the violation; the interval stays well formed and the search finds it.
                    o = dataclasses.replace(o, ret=max(r, o.call),
                                            extra=dict(o.extra, bounded_by_read=True))
            out.append(o)
        return out


class UniqueValueModel(Model):
    """A base for models whose every written value is unique (the workloads' rule), with
    the register's pruning generalised to conditional writes and multi-value ops.

    Subclasses say which values an op wrote (`written`) and which it read (`observed`,
    including a successful CAS's expected value), and, for an op that writes only if a
    compare holds, the value it expected (`expected`).
    """

    def written(self, op: Op) -> List[str]:
        raise NotImplementedError

    def observed(self, op: Op) -> List[str]:
        raise NotImplementedError

    def expected(self, op: Op) -> Optional[str]:
        return None

    def prepare(self, ops):
        """* A read of unknown outcome has no effect: dropped.
        * A write of unknown outcome none of whose values an ok op read can be left out
          (between it and the next write of its keys no op read anything).
        * One whose value was read must precede the first such read: that is its return.
          A conditional one whose value was read succeeded, so it had read its expected
          value by then, which may be all that bounds an unknown write before it.
        Values are not unique if two ops write the same one: then nothing is rewritten."""
        all_written = [v for o in ops for v in self.written(o)]
        if len(set(all_written)) != len(all_written):
            return ops
        first_read: Dict[str, int] = {}
        for o in ops:
            if o.status == OK:
                for v in self.observed(o):
                    if v not in first_read or o.ret < first_read[v]:
                        first_read[v] = o.ret
        changed = True
        while changed:
            changed = False
            for o in ops:
                e = self.expected(o)
                if o.status != UNKNOWN or e is None or e == "":
                    continue
                seen = [first_read[v] for v in self.written(o) if v in first_read]
                if seen and (e not in first_read or min(seen) < first_read[e]):
                    first_read[e] = min(seen)
                    changed = True
        out = []
        for o in ops:
            if o.status == UNKNOWN:
                ws = self.written(o)
                if not ws:
                    if self.observed(o) or o.kind in self.read_kinds:
                        continue  # an unknown read
                    out.append(o)  # an unknown delete
                    continue
                seen = [first_read[v] for v in ws if v in first_read]
                if not seen:
                    continue
                o = dataclasses.replace(o, ret=max(min(seen), o.call),
                                        extra=dict(o.extra, bounded_by_read=True))
            out.append(o)
        return out

    read_kinds: Tuple[str, ...] = ("read",)


class CasModel(UniqueValueModel):
    """A register with delete and compare-and-swap; "" is a missing key.

    Ops: "write" (arg = value), "delete", "read" (result = value read), "cas" with arg =
    (expected, new, mod_revision) and result ("ok",) or ("failed", value read)."""

    name = "cas-register"
    read_kinds = ("read",)

    def init(self):
        return ""

    def written(self, op):
        if op.kind == "write":
            return [op.arg]
        if op.kind == "cas" and not (op.status == OK and op.result[0] == "failed"):
            return [op.arg[1]]
        return []

    def observed(self, op):
        if op.status != OK:
            return []
        if op.kind == "read":
            return [op.result] if op.result else []
        if op.kind == "cas":
            v = op.arg[0] if op.result[0] == "ok" else op.result[1]
            return [v] if v else []
        return []

    def expected(self, op):
        return op.arg[0] if op.kind == "cas" else None

    def step(self, state, op):
        if op.kind == "write":
            return True, op.arg
        if op.kind == "delete":
            return True, ""
        if op.kind == "read":
            if op.status != OK:
                return True, state
            return op.result == state, state
        if op.kind == "cas":
            expect, new = op.arg[0], op.arg[1]
            if op.status != OK:
                return True, new if state == expect else state
            if op.result[0] == "ok":
                return state == expect, new
            return state != expect and state == op.result[1], state
        raise ValueError("cas-register: unknown op kind %r" % op.kind)


class PairModel(UniqueValueModel):
    """Two keys written and read together by transactions; "" is a missing key. The state
    is (a, b).

    Ops: "txn" (arg = (a, b): both put in one transaction), "read" (a write-free
    transaction reading both: result (a, b)), "get" (one key: arg 0 or 1, result its
    value), "txn-cas" (arg = (expected a, new a, new b, mod_revision of a): if a holds its
    expected value put both, else read both; result ("ok",) or ("failed", (a, b)))."""

    name = "pair"
    read_kinds = ("read", "get")

    def init(self):
        return ("", "")

    def written(self, op):
        if op.kind == "txn":
            return list(op.arg)
        if op.kind == "txn-cas" and not (op.status == OK and op.result[0] == "failed"):
            return [op.arg[1], op.arg[2]]
        return []

    def observed(self, op):
        if op.status != OK:
            return []
        if op.kind == "read":
            return [v for v in op.result if v]
        if op.kind == "get":
            return [op.result] if op.result else []
        if op.kind == "txn-cas":
            vs = [op.arg[0]] if op.result[0] == "ok" else list(op.result[1])
            return [v for v in vs if v]
        return []

    def expected(self, op):
        return op.arg[0] if op.kind == "txn-cas" else None

    def step(self, state, op):
        if op.kind == "txn":
            return True, tuple(op.arg)
        if op.kind in ("read", "get"):
            if op.status != OK:
                return True, state
            if op.kind == "read":
                return tuple(op.result) == state, state
            return state[op.arg] == op.result, state
        if op.kind == "txn-cas":
            expect, new = op.arg[0], (op.arg[1], op.arg[2])
            if op.status != OK:
                return True, new if state[0] == expect else state
            if op.result[0] == "ok":
                return state[0] == expect, new
            return state[0] != expect and state == tuple(op.result[1]), state
        raise ValueError("pair: unknown op kind %r" % op.kind)


@dataclass
class KeyResult:
    key: str
    ok: bool  # linearizable
    ops: int  # ops searched (after prepare)
    steps: int
    inconclusive: bool = False  # the step budget ran out
    # When not ok: the op that could not be linearized, and the longest linearizable
    # prefix found (the last ops of it).
    stuck: Optional[Op] = None
    prefix: List[Op] = field(default_factory=list)
    prefix_len: int = 0
    history: List[Op] = field(default_factory=list)  # the prepared history searched


def _digest(mask: int) -> bytes:
    """The cache keeps a 128-bit digest of the linearized-set bitmask, not the bitmask: its
    memory then grows with the number of ops, not with its square (an 80 000-op key took
    1.1 GB with full bitmasks). A collision (odds about steps^2 / 2^129) could only make the
    search skip a branch it has not seen, that is report a violation that is not one; it can
    never hide one."""
    return hashlib.blake2b(mask.to_bytes((mask.bit_length() + 7) // 8, "little"),
                           digest_size=16).digest()


def check_key(model: Model, key: str, ops: List[Op], max_steps: int = 20_000_000) -> KeyResult:
    """Checks the ops of one key against `model`."""
    ops = [o for o in ops if o.status != FAIL]
    ops = model.prepare(ops)
    # Events: (time, 0 = call / 1 = return, op index). At equal times calls come first:
    # the two ops are then taken as concurrent, the permissive reading.
    events = []
    for i, o in enumerate(ops):
        events.append((o.call, 0, i))
        if o.ret is not None:
            if o.ret < o.call:
                raise ValueError("op %d returns before its call" % o.id)
            events.append((o.ret, 1, i))
    events.sort()
    n = len(events)
    # Linked list over event indices 0..n-1, with a head sentinel at n.
    head = n
    nxt = [e + 1 for e in range(n)] + [0 if n else -1]
    if n:
        nxt[n - 1] = -1
    prv = [head] + list(range(0, n - 1)) + [-1]
    is_call = [e[1] == 0 for e in events]
    op_of = [e[2] for e in events]
    ret_event = [-1] * len(ops)
    for ei, e in enumerate(events):
        if e[1] == 1:
            ret_event[e[2]] = ei

    def lift(ei):
        nxt[prv[ei]] = nxt[ei]
        if nxt[ei] != -1:
            prv[nxt[ei]] = prv[ei]
        r = ret_event[op_of[ei]]
        if r != -1:
            nxt[prv[r]] = nxt[r]
            if nxt[r] != -1:
                prv[nxt[r]] = prv[r]

    def unlift(ei):
        r = ret_event[op_of[ei]]
        if r != -1:
            nxt[prv[r]] = r
            if nxt[r] != -1:
                prv[nxt[r]] = r
        nxt[prv[ei]] = ei
        if nxt[ei] != -1:
            prv[nxt[ei]] = ei

    remaining = sum(1 for o in ops if o.ret is not None)  # ops that must be linearized
    state = model.init()
    mask = 0
    stack: List[Tuple[int, object]] = []  # (call event, state before it)
    cache = set()
    best_depth, best_stuck, best_prefix = -1, None, []
    steps = 0
    entry = nxt[head]
    while True:
        if remaining == 0:
            return KeyResult(key, True, len(ops), steps)
        steps += 1
        if steps > max_steps:
            return KeyResult(key, False, len(ops), steps, inconclusive=True, history=ops)
        if entry == -1:
            # Only calls of unknown ops are left and none fits; cannot happen while an
            # ok op is pending (its return is in the list), kept as a guard.
            raise AssertionError("search ran off the end with %d ops pending" % remaining)
        i = op_of[entry]
        if is_call[entry]:
            legal, new_state = model.step(state, ops[i])
            if legal:
                new_mask = mask | (1 << i)
                seen = (_digest(new_mask), new_state)
                if seen not in cache:
                    cache.add(seen)
                    stack.append((entry, state))
                    state, mask = new_state, new_mask
                    if ops[i].ret is not None:
                        remaining -= 1
                    lift(entry)
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            # ops[i] returned here without being linearized: undo the last choice.
            if len(stack) > best_depth:
                best_depth, best_stuck = len(stack), ops[i]
                best_prefix = [ops[op_of[e]] for e, _ in stack[-8:]]
            if not stack:
                break
            entry, state = stack.pop()
            j = op_of[entry]
            mask &= ~(1 << j)
            if ops[j].ret is not None:
                remaining += 1
            unlift(entry)
            entry = nxt[entry]
    return KeyResult(key, False, len(ops), steps, stuck=best_stuck, prefix=best_prefix,
                     prefix_len=best_depth, history=ops)


@dataclass
class Report:
    results: List[KeyResult]
    seconds: float

    @property
    def violations(self) -> List[KeyResult]:
        return [r for r in self.results if not r.ok and not r.inconclusive]

    @property
    def inconclusive(self) -> List[KeyResult]:
        return [r for r in self.results if r.inconclusive]


def check_history(model: Model, ops: List[Op], max_steps: int = 20_000_000) -> Report:
    start = time.monotonic()
    by_key: Dict[str, List[Op]] = {}
    for o in ops:
        by_key.setdefault(o.key, []).append(o)
    results = [check_key(model, k, by_key[k], max_steps) for k in sorted(by_key)]
    return Report(results, time.monotonic() - start)


def explain(result: KeyResult, all_ops: List[Op], events: List[Event], t0: int,
            max_lines: int = 60) -> str:
    """A human-readable account of a violation on one key: the op that could not be
    linearized, the end of the longest linearizable prefix, the key's history around it
    and the fault schedule around it. Times are seconds since t0."""
    lines = []
    s = result.stuck
    lines.append("VIOLATION on key %r: not linearizable (%d ops searched, %d steps)"
                 % (result.key, result.ops, result.steps))
    if s is None:
        return "\n".join(lines)
    lines.append("  no linearization of the first %d ops can be extended past this op:"
                 % result.prefix_len)
    lines.append("    " + s.describe(t0))
    if s.kind == "read" and s.status == OK and isinstance(s.result, str):
        # The register's and the cas workload's writes (a CAS's arg: expected, new, rev).
        writers = [o for o in all_ops if o.key == s.key and (
            (o.kind == "write" and o.arg == s.result) or
            (o.kind == "cas" and o.arg[1] == s.result))]
        if writers:
            lines.append("  the write of the value it read:")
            for w in writers:
                lines.append("    " + w.describe(t0))
        elif s.result != "":
            lines.append("  no client wrote the value it read")
    if result.prefix:
        lines.append("  the last ops of the longest linearizable prefix, in linearization order:")
        for o in result.prefix:
            lines.append("    " + o.describe(t0))
    # The key's history around the stuck op: the ops on the key whose interval meets
    # [lo, hi] (lo reaches back to the last prefix ops, or 2 s), at most max_lines of them
    # centred on the stuck op (most of them before it).
    lo = min([s.call - 2_000_000_000] + [o.call for o in result.prefix])
    hi = (s.ret if s.ret is not None else s.call) + 500_000_000
    near = [o for o in all_ops if o.key == s.key and o.call <= hi and
            (o.ret is None or o.ret >= lo)]
    near.sort(key=lambda o: (o.call, o.id))
    at = next((k for k, o in enumerate(near) if o.id == s.id), len(near))
    first = max(0, at - (max_lines * 3) // 4)
    shown = near[first:first + max_lines]
    lines.append("  history of key %r around it (%d of %d ops from %.3f s to %.3f s; "
                 ">> marks it):" % (s.key, len(shown), len(near), (lo - t0) / 1e9,
                                    (hi - t0) / 1e9))
    for o in shown:
        mark = "  >> " if o.id == s.id else "     "
        lines.append(mark + o.describe(t0))
    ev_lo = max(t0, lo - 10_000_000_000)
    ev = [e for e in events if ev_lo <= e.t <= hi + 1_000_000_000]
    lines.append("  fault schedule from %.3f s to %.3f s:" % ((ev_lo - t0) / 1e9,
                                                             (hi - t0) / 1e9 + 1))
    if not ev:
        lines.append("     (no fault events)")
    for e in ev:
        lines.append("     " + e.describe(t0))
    return "\n".join(lines)
