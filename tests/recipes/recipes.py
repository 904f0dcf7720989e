"""The recipes of docs/recipes.md over raftkv's /v1 HTTP API: a lease kept alive from a
thread (Session), a distributed lock (Mutex) and a leader election (Election).

Python 3 standard library only (http.client). One Client per thread: it is not
thread-safe. Times are time.monotonic(), which on Linux is CLOCK_MONOTONIC and so
comparable between processes of one machine (the tests compare them).
"""

import http.client
import json
import random
import threading
import time
import urllib.parse
from typing import List, Optional, Tuple


class OutcomeUnknown(Exception):
    """A write was sent and no definite answer came back: it may or may not apply."""


class Unavailable(Exception):
    """No node gave a definite answer before the call's deadline (nothing was applied,
    or the call is idempotent)."""


class Client:
    """HTTP calls to a raftkv cluster, trying the nodes in turn.

    A call sticks to the node that last answered. A connection that cannot be opened,
    a 503 (documented: not applied) or, for an idempotent call, a timeout or a 504 moves
    on to the next node until `deadline_s` runs out (Unavailable). For a call that is not
    idempotent, a timeout, reset or 504 after the request was sent raises OutcomeUnknown.
    Each request uses a fresh connection: a kept-alive one that a restarted node closed
    would make a sent-or-not question out of every write.
    """

    def __init__(self, endpoints: List[str], timeout_s: float = 1.0):
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s
        self.cur = random.randrange(len(self.endpoints))

    def _rotate(self):
        self.cur = (self.cur + 1) % len(self.endpoints)

    def call(self, method: str, path: str, body=None, idempotent: bool = True,
             timeout_s: Optional[float] = None, deadline_s: float = 4.0) -> Tuple[int, dict]:
        timeout_s = timeout_s or self.timeout_s
        data = None if body is None else json.dumps(body).encode()
        end = time.monotonic() + deadline_s
        last = "no attempt"
        while True:
            host, port = self.endpoints[self.cur].rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
            try:
                try:
                    conn.connect()
                except OSError as e:  # nothing sent
                    last = "connect %s: %s" % (self.endpoints[self.cur], e)
                    self._rotate()
                else:
                    try:
                        conn.request(method, path, body=data,
                                     headers={"Content-Type": "application/json"})
                        resp = conn.getresponse()
                        status, raw = resp.status, resp.read()
                    except (OSError, http.client.HTTPException) as e:
                        last = "%s %s on %s: %r" % (method, path, self.endpoints[self.cur], e)
                        self._rotate()
                        if not idempotent:
                            raise OutcomeUnknown(last)
                    else:
                        try:
                            obj = json.loads(raw) if raw else {}
                        except ValueError:
                            obj = {"raw": raw.decode("utf-8", "replace")}
                        if status == 503 or (status == 504 and idempotent):
                            last = "%d %s from %s" % (status, obj, self.endpoints[self.cur])
                            self._rotate()
                        elif status == 504:
                            raise OutcomeUnknown("504 %s" % obj)
                        else:
                            return status, obj
            finally:
                conn.close()
            if time.monotonic() >= end:
                raise Unavailable(last)
            time.sleep(0.02)


def kv_path(key: str) -> str:
    return "/v1/kv/" + urllib.parse.quote(key, safe="")


def watch_path(key: str, **params) -> str:
    q = "&".join(k if v is True else "%s=%s" % (k, v) for k, v in params.items())
    return "/v1/watch/" + urllib.parse.quote(key, safe="") + ("?" + q if q else "")


class Session:
    """A lease and the thread that keeps it alive (etcd's concurrency.Session).

    The local deadline is the send time of the last acknowledged keepalive (the grant's,
    at first) plus the TTL: the server expires the lease no earlier than that (it counts
    from its own apply, which comes after the send). `alive()` is the rule a holder obeys
    before every action: past the deadline, or once the server said the lease is gone,
    it must not act. `unsafe_ignore_deadline` turns the rule off (the tests show that the
    checkers catch what follows).
    """

    def __init__(self, endpoints: List[str], ttl_s: int, unsafe_ignore_deadline: bool = False,
                 log=None):
        self.endpoints = endpoints
        self.ttl_s = ttl_s
        self.unsafe = unsafe_ignore_deadline
        self.log = log or (lambda *a: None)
        self.lost = False
        self.keepalives_held_until = 0.0  # a test hook: see hold_keepalives
        self._mu = threading.Lock()
        self._stop = threading.Event()
        client = Client(endpoints)
        for _ in range(20):
            t_send = time.monotonic()
            try:
                status, obj = client.call("POST", "/v1/leases", {"ttl": ttl_s})
            except Unavailable:
                continue
            if status == 201:
                break
            raise RuntimeError("lease grant: %d %s" % (status, obj))
        else:
            raise Unavailable("no lease granted in 20 attempts")
        self.id = obj["id"]
        self.ttl_s = obj["ttl"]  # the server may raise a short TTL
        self.deadline = t_send + self.ttl_s
        self._thread = threading.Thread(target=self._keepalive, daemon=True)
        self._thread.start()

    def _keepalive(self):
        client = Client(self.endpoints, timeout_s=max(0.3, self.ttl_s / 6))
        period = self.ttl_s / 3.0
        while not self._stop.is_set() and not self.lost:
            held = self.keepalives_held_until - time.monotonic()
            if held > 0:
                self._stop.wait(held)
                continue
            t_send = time.monotonic()
            self.log("keepalive_sent", lease=self.id, t_send=t_send)
            try:
                status, obj = client.call("POST", "/v1/leases/%d/keepalive" % self.id,
                                          deadline_s=period)
            except Unavailable:
                continue  # retried at once on the next node
            if status == 200:
                with self._mu:
                    self.deadline = max(self.deadline, t_send + self.ttl_s)
                self.log("keepalive", lease=self.id, t_send=t_send)
            elif status == 404:
                self.lost = True
                self.log("lease_lost", lease=self.id)
                return
            self._stop.wait(max(0.0, t_send + period - time.monotonic()))

    def hold_keepalives(self, seconds: float):
        """Test hook: sends no keepalive for `seconds`, as if the whole process were
        paused (client.py --stall-prob)."""
        self.keepalives_held_until = time.monotonic() + seconds

    def alive(self) -> bool:
        if self.unsafe:
            return True
        with self._mu:
            return not self.lost and time.monotonic() < self.deadline

    def close(self, revoke: bool = True):
        self._stop.set()
        if revoke:
            try:
                Client(self.endpoints).call("DELETE", "/v1/leases/%d" % self.id, deadline_s=2.0)
            except Unavailable:
                pass  # it expires on its own


class NotHeld(Exception):
    """The session ended (locally or on the server) before the lock was acquired."""


class Mutex:
    """A lock (etcd's concurrency.Mutex): each contender puts `<prefix><lease>` on its own
    lease, create-only; the holder is the key with the lowest create_revision; a waiter
    watches the delete of the key just before its own, then looks again.

    `token` (the create_revision of the holder's key) is the fencing token: a write to
    the protected resource is a transaction whose compare `fence()` says that the key
    still exists with that create_revision.
    """

    def __init__(self, client: Client, session: Session, prefix: str, value: str = ""):
        self.client = client
        self.session = session
        self.prefix = prefix
        self.key = prefix + str(session.id)
        self.value = value
        self.token = 0

    def lock(self, timeout_s: float) -> int:
        """Blocks until held (returns the token) or raises NotHeld / Unavailable."""
        end = time.monotonic() + timeout_s
        self.token = self._enqueue()
        while time.monotonic() < end:
            if not self.session.alive():
                raise NotHeld("session ended while waiting")
            status, obj = self.client.call(
                "GET", kv_path(self.prefix) + "?prefix&keys_only")
            if status != 200:
                raise RuntimeError("range %s: %d %s" % (self.prefix, status, obj))
            kvs = sorted(obj["kvs"], key=lambda kv: kv["create_revision"])
            mine = [kv for kv in kvs if kv["key"] == self.key]
            if not mine or mine[0]["create_revision"] != self.token:
                raise NotHeld("my key is gone: the lease ended")
            before = [kv for kv in kvs if kv["create_revision"] < self.token]
            if not before:
                return self.token
            # Wait for the delete of the key just before mine (no thundering herd), at
            # most a couple of seconds (a bounded long poll), then look again.
            pred = before[-1]["key"]
            wait = max(0.2, min(2.0, end - time.monotonic()))
            try:
                self.client.call("GET", watch_path(pred, rev=obj["revision"] + 1,
                                                   wait="%dms" % int(wait * 1000)),
                                 timeout_s=wait + 1.5, deadline_s=wait + 2.0)
            except Unavailable:
                pass
        raise NotHeld("not acquired within %.1f s" % timeout_s)

    def _enqueue(self) -> int:
        body = {"value": self.value, "lease": self.session.id}
        # Create-only: a retry after an unknown outcome finds the key it made (412 with
        # our own lease), so the put is safe to repeat.
        status, obj = self.client.call("PUT", kv_path(self.key) + "?if_version=0", body)
        if status == 200:
            return obj["kv"]["create_revision"]
        if status == 412 and obj.get("kv") and obj["kv"]["lease"] == self.session.id:
            return obj["kv"]["create_revision"]
        if status == 404:
            raise NotHeld("lease gone: %s" % obj)
        raise RuntimeError("enqueue %s: %d %s" % (self.key, status, obj))

    def fence(self) -> dict:
        return {"key": self.key, "target": "create_revision", "op": "=", "value": self.token}

    def unlock(self):
        """Deletes the key (idempotent: only this session ever writes it)."""
        self.client.call("DELETE", kv_path(self.key), deadline_s=3.0)
        self.token = 0


class Election:
    """Leader election (etcd's concurrency.Election): campaigning is queueing as for the
    lock under `<prefix>`; the leader's key carries the value it proclaims, updated by a
    transaction that compares the key's create_revision (the term's fencing token)."""

    def __init__(self, client: Client, session: Session, prefix: str):
        self.mutex = Mutex(client, session, prefix)
        self.client = client

    @property
    def token(self) -> int:
        return self.mutex.token

    def campaign(self, value: str, timeout_s: float) -> int:
        self.mutex.value = value
        return self.mutex.lock(timeout_s)

    def proclaim(self, value: str) -> Tuple[bool, int]:
        """(True, revision) if the value was published under this term; (False, 0) if the
        term is over (the key is gone). May raise OutcomeUnknown."""
        m = self.mutex
        status, obj = self.client.call("POST", "/v1/txn", {
            "compare": [m.fence()],
            "success": [{"put": {"key": m.key, "value": value, "lease": m.session.id}}],
            "failure": []}, idempotent=False)
        if status != 200:
            raise RuntimeError("proclaim: %d %s" % (status, obj))
        return (True, obj["revision"]) if obj["succeeded"] else (False, 0)

    def resign(self):
        self.mutex.unlock()
