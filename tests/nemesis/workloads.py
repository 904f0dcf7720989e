"""Client workloads: what the clients send, how an answer is classified, and the model the
checker holds the answers to.

A workload is pluggable: it names its op kinds (for the table), makes the next op from a
seeded generator, runs it against one node over HTTP and classifies the answer as ok, fail
(certainly did not take effect) or unknown (may or may not have). Its `model` is the
sequential specification the checker uses (checker.Model). Workloads: `register` (the legacy
routes), `cas` (/v1 put, delete, get and compare-and-swap by mod_revision) and `txn` (/v1
transactions over pairs of keys, unconditional and conditional). Later ones (watches, leases)
add a class here and a name in WORKLOADS.

The classification follows docs/http-api.md:
  200  ok.
  503  the request was refused and not applied (no leader, leader unreachable before
       anything was sent, leadership changed before the write committed, a limit,
       shutting down, storage failed): a write is fail.
  504  a write whose outcome is unknown: unknown.
  4xx  the request was malformed: fail, and counted as a nemesis bug (`bad_requests`).
  A connection that could not be opened: nothing was sent: fail.
  A timeout, reset or close after the request was sent: a write is unknown.
  Anything else (500, a body that does not parse): unknown, and reported.
A read has no effect, so a read that did not return 200 is fail whatever the reason.
On /v1 a GET answering 404 key_not_found read a missing key, and a conditional write
answering 412 compare_failed was applied (its compare did not hold: it changed nothing and
read the key).
"""

import http.client
import json
import socket
import threading
import time
import urllib.parse
from typing import Dict, List, Optional, Tuple

from checker import CasModel, Model, PairModel, RegisterModel
from history import FAIL, OK, UNKNOWN, Op


class Session:
    """One client's keep-alive HTTP connections, one per node (not thread-safe: one per
    client thread)."""

    def __init__(self, http_ports: Dict[int, int], timeout_s: float):
        self.http_ports = http_ports
        self.timeout_s = timeout_s
        self.conns: Dict[int, http.client.HTTPConnection] = {}

    def request(self, node: int, method: str, path: str, body: Optional[bytes] = None
                ) -> Tuple[bool, Optional[int], str]:
        """Sends one request. Returns (sent, status, body or error). sent is False only if
        the connection could not be opened (nothing reached the node); status is None when
        no complete answer came."""
        conn = self.conns.get(node)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_ports[node],
                                              timeout=self.timeout_s)
            try:
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as e:
                conn.close()
                return False, None, "connect: %s" % (e.__class__.__name__,)
            self.conns[node] = conn
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read().decode("utf-8", "replace")
            if resp.will_close:
                self.close(node)
            return True, resp.status, data
        except (OSError, http.client.HTTPException) as e:
            self.close(node)
            return True, None, e.__class__.__name__

    def close(self, node: int):
        conn = self.conns.pop(node, None)
        if conn is not None:
            conn.close()

    def close_all(self):
        for node in list(self.conns):
            self.close(node)


class Workload:
    name = "workload"
    kinds: List[str] = []
    model: Model

    def keys(self) -> List[str]:
        raise NotImplementedError

    def next_op(self, rng, client: int, seq: int) -> Tuple[str, str, Optional[str]]:
        """(kind, key, arg) of the client's next op; seq is unique to the client."""
        raise NotImplementedError

    def invoke(self, session: Session, op: Op) -> None:
        """Runs op against op.node; sets op.status, op.result and op.detail (not times)."""
        raise NotImplementedError


class Counters:
    """Anomalies of the client side that a run reports (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bad_requests: List[str] = []  # 4xx: the nemesis sent something malformed
        self.odd_answers: List[str] = []  # 500, unparsable bodies, a write echoing another value

    def add(self, which: str, text: str):
        with self.lock:
            lst = getattr(self, which)
            if len(lst) < 20:
                lst.append(text)


def describe_answer(status: Optional[int], body: str) -> str:
    """"503 no leader": the status and the server's {"error": ...} message, for reports."""
    if status is None:
        return body
    try:
        msg = json.loads(body).get("error")
    except (ValueError, AttributeError):
        msg = None
    return "%d %s" % (status, msg) if isinstance(msg, str) else str(status)


class RegisterWorkload(Workload):
    """Single-key registers: linearizable reads (GET /keys/<k>/) and writes of unique values
    (POST /keys/<k>/ {"value": ...}).

    forward_503_unknown: a write answered "503 leader ... unreachable" (a follower's forward
    that failed) is unknown instead of fail: a known raftkv bug (FINDINGS.md) makes such an
    answer possible for an applied write. Off by default; for looking past that bug only.

    unsafe_stale_reads: reads are sent as GET /keys/<k>/?stale (this node's copy, which may
    lag) but recorded as linearizable reads; a run in this mode must be caught by the checker.
    """

    name = "register"
    kinds = ["read", "write"]

    def __init__(self, n_keys: int = 6, read_fraction: float = 0.5,
                 unsafe_stale_reads: bool = False, counters: Optional[Counters] = None,
                 forward_503_unknown: bool = False):
        self.model = RegisterModel()
        self.forward_503_unknown = forward_503_unknown
        self._keys = ["k%d" % i for i in range(n_keys)]
        self.read_fraction = read_fraction
        self.unsafe_stale_reads = unsafe_stale_reads
        self.counters = counters or Counters()

    def keys(self):
        return list(self._keys)

    def next_op(self, rng, client, seq):
        key = rng.choice(self._keys)
        if rng.random() < self.read_fraction:
            return "read", key, None
        return "write", key, "c%d-%d" % (client, seq)

    def invoke(self, session, op):
        path = "/keys/%s/" % urllib.parse.quote(op.key, safe="")
        if op.kind == "read":
            self._read(session, op, path + ("?stale" if self.unsafe_stale_reads else ""))
        elif op.kind == "write":
            self._write(session, op, path)
        else:
            raise ValueError(op.kind)

    def _value(self, op, body) -> Optional[str]:
        try:
            v = json.loads(body)["value"]
            if isinstance(v, str):
                return v
        except (ValueError, KeyError, TypeError):
            pass
        self.counters.add("odd_answers", "node%d %s %s: 200 with body %r"
                          % (op.node, op.kind, op.key, body[:200]))
        return None

    def _read(self, session, op, path):
        sent, status, body = session.request(op.node, "GET", path)
        if status == 200:
            v = self._value(op, body)
            if v is not None:
                op.status, op.result, op.detail = OK, v, "200"
                return
        elif status is not None and 400 <= status < 500:
            self.counters.add("bad_requests", "node%d GET %s: %d %s" % (op.node, path, status,
                                                                        body[:200]))
        op.status = FAIL
        op.detail = describe_answer(status, body)

    def _write(self, session, op, path):
        payload = json.dumps({"value": op.arg}).encode()
        sent, status, body = session.request(op.node, "POST", path, payload)
        op.detail = describe_answer(status, body)
        if not sent:
            op.status = FAIL
        elif status == 200:
            v = self._value(op, body)
            if v == op.arg:
                op.status = OK
            else:
                # Applied or not, the answer is not the one the API promises.
                if v is not None:
                    self.counters.add("odd_answers", "node%d write %s := %r answered %r"
                                      % (op.node, op.key, op.arg, v))
                op.status = UNKNOWN
        elif status == 503:
            op.status = FAIL
            if self.forward_503_unknown and "unreachable" in op.detail:
                # tests/nemesis/FINDINGS.md: such a 503 can be a write that was applied.
                op.status = UNKNOWN
        elif status == 504 or status is None:
            op.status = UNKNOWN
        elif 400 <= status < 500:
            self.counters.add("bad_requests", "node%d POST %s: %d %s" % (op.node, path, status,
                                                                         body[:200]))
            op.status = FAIL
        else:
            self.counters.add("odd_answers", "node%d POST %s: %d %s" % (op.node, path, status,
                                                                        body[:200]))
            op.status = UNKNOWN


class V1Workload(Workload):
    """What the /v1 workloads share: keys, per-client knowledge of what each key holds
    (value and mod_revision, for the next compare-and-swap), and answer classification."""

    def __init__(self, counters: Optional[Counters]):
        self.counters = counters or Counters()
        # client id -> key -> (value, mod_revision); value "" = missing. Each client
        # thread touches only its own entry.
        self.known: Dict[int, Dict[str, Tuple[str, int]]] = {}

    def _know(self, client: int, key: str, value: str, rev: int):
        self.known.setdefault(client, {})[key] = (value, rev)

    def _knows(self, client: int, key: str) -> Tuple[str, int]:
        return self.known.get(client, {}).get(key, ("", 0))

    def _json(self, op, status, body) -> Optional[dict]:
        try:
            j = json.loads(body)
            if isinstance(j, dict):
                return j
        except ValueError:
            pass
        self.counters.add("odd_answers", "node%d %s %s: %d with body %r"
                          % (op.node, op.kind, op.key, status, body[:200]))
        return None

    def _kv(self, kv) -> Tuple[str, int]:
        """(value, mod_revision) of a kv object, ("", 0) for null."""
        if kv is None:
            return "", 0
        return kv["value"], kv["mod_revision"]

    def _request(self, session, op, method, path, payload=None, read=False):
        """Sends and classifies: returns the parsed body of a 200 or 412 (op.status OK), or
        None with op.status set to FAIL or UNKNOWN. A GET of one key (whose 200 body is the
        kv itself) returns {"kv": kv}, and {"kv": null} for its 404."""
        body = json.dumps(payload).encode() if payload is not None else None
        sent, status, text = session.request(op.node, method, path, body)
        op.detail = describe_answer(status, text)
        if status in (200, 412) or (status == 404 and read and method == "GET" and
                                    '"key_not_found"' in text):
            j = self._json(op, status, text)
            if j is not None:
                if status == 404:
                    j = {"kv": None}
                elif method == "GET":
                    j = {"kv": j}
                op.status = OK
                op.detail = str(status)
                return j
            op.status = FAIL if read else UNKNOWN
        elif read or not sent or status == 503:
            op.status = FAIL
        elif status == 504 or status is None:
            op.status = UNKNOWN
        elif 400 <= status < 500:
            self.counters.add("bad_requests", "node%d %s %s: %d %s" % (op.node, method, path,
                                                                       status, text[:200]))
            op.status = FAIL
        else:
            self.counters.add("odd_answers", "node%d %s %s: %d %s" % (op.node, method, path,
                                                                      status, text[:200]))
            op.status = UNKNOWN
        if read and status is not None and 400 <= status < 500 and status != 404:
            self.counters.add("bad_requests", "node%d %s %s: %d %s" % (op.node, method, path,
                                                                       status, text[:200]))
        return None


def _path(key: str, query: str = "") -> str:
    return "/v1/kv/" + urllib.parse.quote(key, safe="") + query


class CasWorkload(V1Workload):
    """Single keys through /v1: linearizable GETs, PUTs and DELETEs, and compare-and-swaps:
    PUT ?if_mod_revision=R (the mod_revision the client last saw the key at, with the value
    it saw) or ?if_version=0 (the client last saw it missing). Values are unique, so "the
    key's mod_revision is R" holds exactly when "the key holds the value the client saw at
    R", and the checker models the CAS on values."""

    name = "cas"
    kinds = ["read", "write", "delete", "cas"]

    def __init__(self, n_keys: int = 6, counters: Optional[Counters] = None, **unused):
        super().__init__(counters)
        self.model = CasModel()
        self._keys = ["k%d" % i for i in range(n_keys)]

    def keys(self):
        return list(self._keys)

    def next_op(self, rng, client, seq):
        key = rng.choice(self._keys)
        r = rng.random()
        value = "c%d-%d" % (client, seq)
        if r < 0.35:
            return "read", key, None
        if r < 0.55:
            return "write", key, value
        if r < 0.62:
            return "delete", key, None
        expect, rev = self._knows(client, key)
        return "cas", key, (expect, value, rev)

    def invoke(self, session, op):
        if op.kind == "read":
            j = self._request(session, op, "GET", _path(op.key), read=True)
            if j is not None:
                value, rev = self._kv(j.get("kv"))
                op.result = value
                self._know(op.client, op.key, value, rev)
        elif op.kind == "write":
            j = self._request(session, op, "PUT", _path(op.key), {"value": op.arg})
            if j is not None:
                self._know(op.client, op.key, op.arg, j["kv"]["mod_revision"])
                op.extra["revision"] = j["kv"]["mod_revision"]
        elif op.kind == "delete":
            j = self._request(session, op, "DELETE", _path(op.key))
            if j is not None:
                self._know(op.client, op.key, "", 0)
                op.extra["revision"] = j.get("revision")
                op.extra["deleted"] = j.get("deleted")
        elif op.kind == "cas":
            expect, new, rev = op.arg
            query = "?if_mod_revision=%d" % rev if expect else "?if_version=0"
            j = self._request(session, op, "PUT", _path(op.key, query), {"value": new})
            if j is None:
                return
            if "revision" in j and "kv" in j and j.get("code") is None:
                op.result = ("ok",)
                self._know(op.client, op.key, new, j["kv"]["mod_revision"])
                op.extra["revision"] = j["kv"]["mod_revision"]
            else:
                value, r = self._kv(j.get("kv"))
                op.result = ("failed", value)
                self._know(op.client, op.key, value, r)
        else:
            raise ValueError(op.kind)


class TxnWorkload(V1Workload):
    """Pairs of keys (pNa, pNb) through POST /v1/txn: both put in one transaction, both
    read in one write-free transaction, one read with GET, and a conditional transaction
    (if a's mod_revision is the one the client last saw, put both; else read both). A
    transaction applied as two entries, or a compare not applied, is a violation."""

    name = "txn"
    kinds = ["read", "get", "txn", "txn-cas"]

    def __init__(self, n_keys: int = 6, counters: Optional[Counters] = None, **unused):
        super().__init__(counters)
        self.model = PairModel()
        self._pairs = ["p%d" % i for i in range(max(1, n_keys // 2))]

    def keys(self):
        return list(self._pairs)

    def next_op(self, rng, client, seq):
        pair = rng.choice(self._pairs)
        r = rng.random()
        value = "c%d-%d" % (client, seq)
        if r < 0.3:
            return "read", pair, None
        if r < 0.45:
            return "get", pair, rng.randrange(2)
        if r < 0.75:
            return "txn", pair, (value + "a", value + "b")
        expect, rev = self._knows(client, pair + "a")
        return "txn-cas", pair, (expect, value + "a", value + "b", rev)

    @staticmethod
    def _gets(pair):
        return [{"get": {"key": pair + "a"}}, {"get": {"key": pair + "b"}}]

    def _read_both(self, op, results) -> Tuple[str, str]:
        out = []
        for i, r in enumerate(results):
            value, rev = self._kv(r["get"]["kv"])
            self._know(op.client, op.key + "ab"[i], value, rev)
            out.append(value)
        return out[0], out[1]

    def invoke(self, session, op):
        a, b = op.key + "a", op.key + "b"
        if op.kind == "read":
            j = self._request(session, op, "POST", "/v1/txn", {"success": self._gets(op.key)},
                              read=True)
            if j is not None:
                op.result = self._read_both(op, j["results"])
        elif op.kind == "get":
            key = op.key + "ab"[op.arg]
            j = self._request(session, op, "GET", _path(key), read=True)
            if j is not None:
                value, rev = self._kv(j.get("kv"))
                op.result = value
                self._know(op.client, key, value, rev)
        elif op.kind == "txn":
            va, vb = op.arg
            j = self._request(session, op, "POST", "/v1/txn", {"success": [
                {"put": {"key": a, "value": va}}, {"put": {"key": b, "value": vb}}]})
            if j is not None:
                self._know(op.client, a, va, j["revision"])
                self._know(op.client, b, vb, j["revision"])
        elif op.kind == "txn-cas":
            expect, va, vb, rev = op.arg
            compare = ({"key": a, "target": "mod_revision", "op": "=", "value": rev} if expect
                       else {"key": a, "target": "version", "op": "=", "value": 0})
            j = self._request(session, op, "POST", "/v1/txn", {
                "compare": [compare],
                "success": [{"put": {"key": a, "value": va}}, {"put": {"key": b, "value": vb}}],
                "failure": self._gets(op.key)})
            if j is None:
                return
            if j.get("succeeded"):
                op.result = ("ok",)
                self._know(op.client, a, va, j["revision"])
                self._know(op.client, b, vb, j["revision"])
            else:
                op.result = ("failed", self._read_both(op, j["results"]))
        else:
            raise ValueError(op.kind)


class WatchWorkload(CasWorkload):
    """The cas workload's clients (checked for linearizability as there), plus watchers
    that follow every key with /v1/watch streams across faults, reconnecting to other
    nodes from the last revision they examined (watchers.py): every change the clients saw
    applied must reach every watcher exactly once, in revision order."""

    name = "watch"
    n_watchers = 3

    def __init__(self, n_keys: int = 6, counters: Optional[Counters] = None, **unused):
        super().__init__(n_keys, counters)
        self.watchers = []

    def start_watchers(self, ports: Dict[int, int], seed: int, log):
        import watchers
        self.watchers = [watchers.Watcher(i, ports, seed, log) for i in range(self.n_watchers)]
        for w in self.watchers:
            w.start()

    def finish_watchers(self, ports: Dict[int, int], ops, timeout_s: float) -> List[str]:
        """Lists the keys once more, waits until every watcher has examined that revision,
        stops them and checks what they saw."""
        import watchers
        final = None
        deadline = time.monotonic() + 60
        while final is None and time.monotonic() < deadline:
            for port in ports.values():
                final = watchers.list_prefix(port, timeout_s)
                if final is not None:
                    break
            else:
                time.sleep(0.2)
        problems = []
        if final is None:
            problems.append("the final listing never succeeded")
        else:
            while time.monotonic() < deadline and any(
                    w.examined < final[0] for w in self.watchers):
                time.sleep(0.1)
            for w in self.watchers:
                if w.examined < final[0]:
                    problems.append("watcher %d examined only up to %d of %d"
                                    % (w.wid, w.examined, final[0]))
        for w in self.watchers:
            w.finish(timeout_s + 5)
        return problems + watchers.check(self.watchers, ops, final)

    def summary(self) -> str:
        lines = ["watchers     events  reconnects  relists  cancels"]
        for w in self.watchers:
            n = sum(len(p[2]) for p in w.pieces if p[0] == "events")
            lines.append("  %-8d %8d %11d %8d  %s" % (w.wid, n, w.reconnects, w.relists,
                                                       dict(sorted(w.cancels.items()))))
        return "\n".join(lines)


WORKLOADS = {"register": RegisterWorkload, "cas": CasWorkload, "txn": TxnWorkload,
             "watch": WatchWorkload}
