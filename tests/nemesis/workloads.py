"""Client workloads: what the clients send, how an answer is classified, and the model the
checker holds the answers to.

A workload is pluggable: it names its op kinds (for the table), makes the next op from a
seeded generator, runs it against one node over HTTP and classifies the answer as ok, fail
(certainly did not take effect) or unknown (may or may not have). Its `model` is the
sequential specification the checker uses (checker.Model). Later workloads (compare-and-set,
transactions, watches, leases) add a class here and a name in WORKLOADS.

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
"""

import http.client
import json
import socket
import threading
import urllib.parse
from typing import Dict, List, Optional, Tuple

from checker import Model, RegisterModel
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


WORKLOADS = {"register": RegisterWorkload}
