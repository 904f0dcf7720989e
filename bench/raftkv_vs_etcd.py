#!/usr/bin/env python3
"""raftkv vs etcd, side by side (issue 5): the driver behind `make bench`.

Starts a 3-node raftkv cluster and a 3-member etcd cluster on 127.0.0.1 (free ports, data on
the real disk under one temporary directory, fsync on and default election timing for both),
drives both with the same wrk load (bench/wrk/load.lua, one thread), checks after every write
cell that what was stored is what the load wrote, measures failover under a steady write
load, and writes a Markdown table, a PNG chart and the raw numbers to bench/results/.
bench/README.md describes the cells, the verification and how to read the table.

Standard library only. Environment (all optional):
  RAFTKV_BIN      the raftkv binary (default: $BUILD_DIR/src/raftkv; `make bench` builds it)
  BUILD_DIR       default build
  BENCH_SECONDS   seconds per cell (default 10)
  BENCH_CONNS     connection counts, comma separated (default 1,16,64)
  BENCH_CELLS     cells to run, comma separated names (default all; see CELLS below),
                  e.g. rk_write,e3_put; "none" runs no load cell
  BENCH_KILLS     leader kills per system in the failover cell (default 10; 0 skips it)
  BENCH_SYSTEMS   raftkv,etcd (default both)
  BENCH_KEYS      key pool size (default 10000)
  BENCH_OUT       output directory (default bench/results)
  BENCH_TMPDIR    parent of the temporary run directory (default $TMPDIR or /tmp, unless it
                  is a tmpfs: then $BUILD_DIR)
  BENCH_KEEP=1    keep the run directory (data and logs) afterwards
  BENCH_RAFTKV_FLAGS  extra raftkv flags, space separated (e.g. "--snapshot-entries 20000"
                  to cross several snapshots in a write cell); marks the run not the default
  BENCH_MEMKEYS   keys of the memory and restart cell (default 1000000; 0 skips it)
  BENCH_WATCH     1 (default) runs the watch cells on fresh clusters, 0 skips them
  WATCH_LOAD      their load generator (default: $BUILD_DIR/bench/watch_load)
  BENCH_FANOUT_WATCHERS, BENCH_FANOUT_RATE, BENCH_IDLE_WATCHERS  the watch cells' sizes
                  (default 1000 streaming watchers at 200 writes/s; 10000 idle watchers)
  BENCH_LEASES    1 (default) runs the lease cells (rk_lease, e_lease) on fresh clusters, 0
                  skips them; a BENCH_CELLS list runs them only if it names them
  LEASE_LOAD      their load generator (default: $BUILD_DIR/bench/lease_load)
  BENCH_LEASE_COUNT, BENCH_LEASE_TTL  leases renewed at a third of their TTL (default 10000
                  leases of 30 s: 1,000 renewals per second)
Exit status: 0 when every check passed (the bar is reported, not enforced), 1 when a
correctness check failed, 2 when the benchmark could not run (setup, a process died), 130
when interrupted.
"""

import base64
import concurrent.futures
import ctypes
import datetime
import http.client
import json
import math
import queue
import resource
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = os.path.join(ROOT, "bench", "wrk", "load.lua")
CAS_LUA = os.path.join(ROOT, "bench", "wrk", "cas.lua")  # rk1_cas, e3_cas
BUILD_DIR = os.path.join(ROOT, os.environ.get("BUILD_DIR", "build"))

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNS = [int(c) for c in os.environ.get("BENCH_CONNS", "1,16,64").split(",") if c]
KILLS = int(os.environ.get("BENCH_KILLS", "10"))
MEMKEYS = int(os.environ.get("BENCH_MEMKEYS", "1000000"))
SYSTEMS = os.environ.get("BENCH_SYSTEMS", "raftkv,etcd").split(",")
NKEYS = int(os.environ.get("BENCH_KEYS", "10000"))
OUT = os.path.abspath(os.environ.get("BENCH_OUT", os.path.join(ROOT, "bench", "results")))
RAFTKV_BIN = os.environ.get("RAFTKV_BIN") or os.path.join(BUILD_DIR, "src", "raftkv")
KEEP = os.environ.get("BENCH_KEEP") == "1"
RAFTKV_FLAGS = os.environ.get("BENCH_RAFTKV_FLAGS", "").split()
WATCH = os.environ.get("BENCH_WATCH", "1") != "0"
WATCH_LOAD = os.environ.get("WATCH_LOAD") or os.path.join(BUILD_DIR, "bench", "watch_load")
FANOUT_WATCHERS = int(os.environ.get("BENCH_FANOUT_WATCHERS", "1000"))
FANOUT_RATE = int(os.environ.get("BENCH_FANOUT_RATE", "200"))
IDLE_WATCHERS = int(os.environ.get("BENCH_IDLE_WATCHERS", "10000"))
LEASES = os.environ.get("BENCH_LEASES", "1") != "0"
LEASE_LOAD = os.environ.get("LEASE_LOAD") or os.path.join(BUILD_DIR, "bench", "lease_load")
LEASE_COUNT = int(os.environ.get("BENCH_LEASE_COUNT", "10000"))
LEASE_TTL_S = int(os.environ.get("BENCH_LEASE_TTL", "30"))
# The lease cells (issue 13): not wrk cells; each runs on a fresh cluster of its system.
LEASE_CELLS = {"rk_lease": "raftkv", "e_lease": "etcd"}

# Limits: every load stops by itself.
WRK_MAX_REQUESTS = 5_000_000  # per wrk run, on top of -d
WRK_TIMEOUT_S = 5  # wrk's per-request timeout; a request slower than that is an error
VERIFY_THREADS = 8
FAILOVER_WRITERS = 4
FAILOVER_MAX_WRITES = 2_000_000  # per writer thread
FAILOVER_WRITE_TIMEOUT_S = 3  # a write not answered by then counts as failed
FAILOVER_STEP_TIMEOUT_S = 30  # to elect a leader and take a write, or to catch up
PROBE_INTERVAL_S = 0.02  # after a kill, a fresh probe write this often until one succeeds
FAILOVER_MAX_PROBES = 500  # per kill
CONVERGE_TIMEOUT_S = 60

# The cells: name -> (system, wrk mode, target node, store written or None).
# Stores: raftkv's map, etcd's v3 keyspace, etcd's v2 store (separate from v3).
CELLS = {
    "rk_ceiling": ("raftkv", "health", "leader", None),
    "e_ceiling": ("etcd", "version", "leader", None),
    "rk_write": ("raftkv", "rk_write", "leader", "raftkv"),
    # The /v1 cells (issue 11) run right after the legacy cell they are held to (the host's
    # speed drifts over minutes), each at the connection count the issue names.
    "rk1_put": ("raftkv", "rk1_put", "leader", "raftkv"),
    "e3_put": ("etcd", "e3_put", "leader", "v3"),
    "e2_put": ("etcd", "e2_put", "leader", "v2"),
    "rk_write_f": ("raftkv", "rk_write", "follower", "raftkv"),
    "rk_read": ("raftkv", "rk_read", "leader", None),
    "rk1_get": ("raftkv", "rk1_get", "leader", None),
    "e3_range": ("etcd", "e3_range", "leader", None),
    "rk_read_f": ("raftkv", "rk_read", "follower", None),
    "rk_stale": ("raftkv", "rk_stale", "leader", None),
    "e3_range_ser": ("etcd", "e3_range_ser", "leader", None),
    "e2_get": ("etcd", "e2_get", "leader", None),
    "rk1_cas": ("raftkv", "rk1_cas", "leader", "hot"),
    "e3_cas": ("etcd", "e3_cas", "leader", "hot"),
    "rk1_range": ("raftkv", "rk1_range", "leader", None),
    "e3_range100": ("etcd", "e3_range100", "leader", None),
    "rk1_txn4": ("raftkv", "rk1_txn4", "leader", "raftkv"),
    "e3_txn4": ("etcd", "e3_txn4", "leader", "v3"),
}
# Cells run at these connection counts only (of BENCH_CONNS); the others at all of them.
CELL_CONNS = {"rk1_put": [64], "rk1_get": [64], "rk1_cas": [64], "e3_cas": [64],
              "rk1_range": [16], "e3_range100": [16], "rk1_txn4": [64], "e3_txn4": [64]}
HOT_KEYS = [f"hot-{h:012d}" for h in range(16)]  # the CAS cells' counters (16 bytes)
# Rows of the table: label, raftkv cell, etcd cell.
ROWS = [
    ("ceiling: raftkv GET /health, etcd GET /version", "rk_ceiling", "e_ceiling"),
    ("write to the leader; etcd v3 put", "rk_write", "e3_put"),
    ("write to the leader; etcd v2 PUT", "rk_write", "e2_put"),
    ("write to a follower (raftkv only)", "rk_write_f", None),
    ("linearizable read, leader; etcd v3 range", "rk_read", "e3_range"),
    ("linearizable read, follower (raftkv only)", "rk_read_f", None),
    ("stale read, leader; etcd v3 serializable range", "rk_stale", "e3_range_ser"),
    ("stale read, leader; etcd v2 GET", "rk_stale", "e2_get"),
    ("/v1 put, leader; etcd v3 put", "rk1_put", "e3_put"),
    ("/v1 get (linearizable), leader; etcd v3 range", "rk1_get", "e3_range"),
    ("CAS increment on 16 hot keys; etcd txn on mod_revision", "rk1_cas", "e3_cas"),
    ("100-key prefix range (linearizable); etcd range, limit 100", "rk1_range", "e3_range100"),
    ("transaction of 4 puts; etcd txn of 4 puts", "rk1_txn4", "e3_txn4"),
]
CHART_LABELS = {
    "rk_ceiling": "ceiling", "rk_write": "write v3", "rk_write_f": "write (follower)",
    "rk_read": "lin. read", "rk_read_f": "lin. read (follower)", "rk_stale": "stale read v3",
    "rk1_put": "/v1 put", "rk1_get": "/v1 get", "rk1_cas": "CAS 16 keys",
    "rk1_range": "range 100", "rk1_txn4": "txn 4 puts",
}

_cells_env = os.environ.get("BENCH_CELLS", "")
if _cells_env == "none":
    SELECTED = []
elif _cells_env:
    SELECTED = [c for c in _cells_env.split(",") if c]
    for c in SELECTED:
        if c not in CELLS and c not in LEASE_CELLS:
            sys.exit(f"bench: unknown cell {c}; cells: "
                     f"{', '.join(list(CELLS) + list(LEASE_CELLS))}")
else:
    SELECTED = list(CELLS) + list(LEASE_CELLS)
LEASE_SELECTED = [c for c in SELECTED if c in LEASE_CELLS and LEASE_CELLS[c] in SYSTEMS] \
    if LEASES else []
SELECTED = [c for c in SELECTED if c in CELLS]
SELECTED = [c for c in SELECTED if CELLS[c][0] in SYSTEMS]
DEFAULT_RUN = (SECONDS == 10 and CONNS == [1, 16, 64] and KILLS == 10 and NKEYS == 10000 and
               SELECTED == list(CELLS) and not RAFTKV_FLAGS and MEMKEYS == 1000000 and WATCH
               and FANOUT_WATCHERS == 1000 and FANOUT_RATE == 200 and IDLE_WATCHERS == 10000
               and LEASE_SELECTED == [c for c in LEASE_CELLS if LEASE_CELLS[c] in SYSTEMS]
               and LEASE_COUNT == 10000 and LEASE_TTL_S == 30)

PROCS = None  # every process started, for the final cleanup and the CPU accounting
STOP = threading.Event()  # set on Ctrl-C/SIGTERM: worker threads give up


class BenchError(Exception):
    """The benchmark cannot go on (a process died, a cluster did not form)."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: each in its own process group, killed if this driver dies, all stopped at the end.

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup():
    os.setsid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Procs:
    def __init__(self):
        self.procs = []

    def spawn(self, args, log_path):
        out = open(log_path, "ab")
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=_child_setup)
        out.close()
        self.procs.append(p)
        return p

    def stop_all(self):
        live = [p for p in self.procs if p.poll() is None]
        for p in live:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


# ---------------------------------------------------------------------------------------------
# HTTP: one kept-alive connection per (thread, address).

class Http:
    def __init__(self, addr, timeout):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def req(self, method, path, body=None, headers=None, retry=True):
        """Returns (status, body bytes); raises OSError/HTTPException if there is no answer."""
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port,
                                                           timeout=self.timeout)
                self.conn.request(method, path, body, headers or {})
                r = self.conn.getresponse()
                data = r.read()
                if (r.getheader("Connection") or "").lower() == "close":
                    self.close()
                return r.status, data
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 1 or not retry:
                    raise


_tls = threading.local()

# Check reads answered 503 and asked again, per node (Raftkv.read).
READ_RETRY_SECONDS = 15
_read_retries = {}
_read_retries_lock = threading.Lock()


def take_read_retries():
    """The check reads retried after a 503 since the last call, per node."""
    with _read_retries_lock:
        out = dict(_read_retries)
        _read_retries.clear()
    return out


def client(addr, timeout=10):
    d = getattr(_tls, "clients", None)
    if d is None:
        d = _tls.clients = {}
    c = d.get((addr, timeout))
    if c is None:
        c = d[(addr, timeout)] = Http(addr, timeout)
    return c


def get_json(addr, path, method="GET", body=None, timeout=2):
    try:
        st, data = client(addr, timeout).req(method, path, body,
                                             {"Content-Type": "application/json"} if body else None)
    except (OSError, http.client.HTTPException):
        return None
    if st != 200:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def pmap(fn, items, threads=VERIFY_THREADS):
    def run(x):
        if STOP.is_set():
            raise BenchError("interrupted")
        return fn(x)
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return list(ex.map(run, items))


def wait_for(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if STOP.is_set():
            raise BenchError("interrupted")
        v = pred()
        if v is not None and v is not False:  # 0 is an answer (a node index)
            return v
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout} s waiting for {what}")


def pause(seconds):
    if STOP.wait(seconds):
        raise BenchError("interrupted")


def key_name(i):
    return f"key-{i:012d}"  # 16 bytes


def value_for(i, tag, seq):
    v = f"{i:05d}.{tag}.{seq:010d}."
    return v + "x" * (32 - len(v))  # 32 bytes


def b64(s):
    return base64.b64encode(s.encode()).decode()


def unb64(s):
    return base64.b64decode(s).decode()


# ---------------------------------------------------------------------------------------------
# The clusters. Both offer the same small interface to the cells, the checks and the failover.

def three_nodes(run_dir, system, prefix, peer_key, log_prefix):
    """Names, free ports, data directories and log files of one system's three nodes."""
    ports = free_ports(6)
    return [{"name": f"{prefix}{i + 1}", "http": f"127.0.0.1:{ports[2 * i]}",
             peer_key: f"127.0.0.1:{ports[2 * i + 1]}",
             "dir": os.path.join(run_dir, system, f"{prefix}{i + 1}"),
             "log": os.path.join(run_dir, f"{log_prefix}{i + 1}.log"), "proc": None}
            for i in range(3)]


class Cluster:
    """What the driver needs of a 3-node cluster; Raftkv and Etcd supply status() and how to
    read its role, commit index and applied index."""

    def alive(self, i):
        p = self.nodes[i]["proc"]
        return p is not None and p.poll() is None

    def check_alive(self):
        for i, n in enumerate(self.nodes):
            if not self.alive(i):
                raise BenchError(f"{self.system} {n['name']} exited (see {n['log']})")

    def leader_index(self):
        for i in range(3):
            if not self.alive(i):
                continue
            s = self.status(i)
            if s and self.is_leader(s):
                return i
        return None

    def addr(self, i):
        return self.nodes[i]["http"]

    def max_term(self):
        """The highest Raft term any live node reports (None if none answers)."""
        terms = []
        for i in range(3):
            if self.alive(i):
                try:
                    s = self.status(i)
                except Exception:  # a node that does not answer has no say here
                    s = None
                if s:
                    terms.append(self.term_of(s))
        return max(terms) if terms else None

    def kill(self, i):
        os.kill(self.nodes[i]["proc"].pid, signal.SIGKILL)
        self.nodes[i]["proc"].wait()

    def converge(self, timeout=CONVERGE_TIMEOUT_S):
        """Waits until every live node has applied what the leader had committed."""
        def commit():
            li = self.leader_index()
            s = self.status(li) if li is not None else None
            return s and self.commit_of(s)
        c = wait_for(commit, timeout, f"a {self.system} leader")
        wait_for(lambda: all(self.applied_of(self.status(i) or {}) >= c
                             for i in range(3) if self.alive(i)),
                 timeout, f"{self.system} nodes to apply index {c}")

    def caught_up(self, i):
        """Node i is a follower that knows the leader and has applied the leader's commit."""
        li = self.leader_index()
        if li is None or li == i:
            return li == i
        ls, s = self.status(li), self.status(i)
        return bool(ls and s and s.get("leader") and self.applied_of(s) >= self.commit_of(ls))


class Raftkv(Cluster):
    system = "raftkv"

    def __init__(self, procs, run_dir, extra=(), label=""):
        self.procs = procs
        self.nodes = three_nodes(run_dir, "raftkv" + label, "node", "raft",
                                 "raftkv" + label + "-node")
        self.extra = list(extra)

    def start(self, i):
        n = self.nodes[i]
        args = [RAFTKV_BIN, "--id", n["name"], "--bind", n["raft"], "--http", n["http"],
                "--datadir", n["dir"]]
        # On an existing data directory (a restart) raftkv ignores --bootstrap and --join.
        args += ["--bootstrap"] if i == 0 else ["--join", self.nodes[0]["http"]]
        args += RAFTKV_FLAGS + self.extra
        n["proc"] = self.procs.spawn(args, n["log"])

    def start_cluster(self):
        for n in self.nodes:
            os.makedirs(n["dir"], exist_ok=True)
        self.start(0)
        wait_for(lambda: (self.status(0) or {}).get("role") == "Leader", 20, "raftkv node1 to lead")
        self.start(1)
        self.start(2)

        def formed():
            li = self.leader_index()
            s = self.status(0 if li is None else li)
            if not s or len(s.get("members", [])) != 3:
                return False
            if any(m.get("role") != "voter" for m in s["members"]):
                return False
            return all((self.status(i) or {}).get("leader") for i in range(3))
        wait_for(formed, 60, "the raftkv cluster to have 3 voters")
        self.converge()

    def status(self, i):
        return get_json(self.nodes[i]["http"], "/status", timeout=2)

    @staticmethod
    def is_leader(s):
        return s.get("role") == "Leader"

    @staticmethod
    def term_of(s):
        return int(s["term"])

    @staticmethod
    def commit_of(s):
        return s["commit"]

    @staticmethod
    def applied_of(s):
        return s.get("applied", -1)

    # Key-value access for the checks (raise on a transport error).
    def write(self, i, key, value, timeout=10, retry=True):
        body = json.dumps({"value": value})
        st, data = client(self.addr(i), timeout).req(
            "POST", f"/keys/{key}/", body, {"Content-Type": "application/json"}, retry=retry)
        return st == 200 and json.loads(data).get("value") == value, st

    def read(self, i, key, stale=False):
        # A 503 (no leader during an election, a read refused by a leader
        # stepping down) is not an answer about the data: the check asks
        # again until READ_RETRY_SECONDS have passed, and counts it. Any
        # other status, or a 503 that lasts, is reported as the value.
        deadline = time.monotonic() + READ_RETRY_SECONDS
        while True:
            st, data = client(self.addr(i)).req("GET", f"/keys/{key}/" + ("?stale" if stale else ""))
            if st != 503 or time.monotonic() >= deadline:
                break
            with _read_retries_lock:
                _read_retries[self.nodes[i]["name"]] = _read_retries.get(self.nodes[i]["name"], 0) + 1
            time.sleep(0.1)
        if st != 200:
            # Not a value: what the node answered, so that a failed check says why.
            return f"<no value: HTTP {st} {data[:120]!r}>"
        return json.loads(data)["value"]

    def read_pool(self, i, stale, store):
        keys = [key_name(k) for k in range(NKEYS)]
        return pmap(lambda k: self.read(i, k, stale), keys)

    def read_keys(self, i, keys):
        return pmap(lambda k: self.read(i, k), keys)

    def read_hot(self, i, stale):
        return [self.read(i, k, stale) for k in HOT_KEYS]

    def read_mem(self, i, keys):
        return pmap(lambda k: self.read(i, k), keys)

    def put_batch(self, i, kvs):
        body = json.dumps({"success": [{"put": {"key": k, "value": v}} for k, v in kvs]})
        st, _ = client(self.addr(i), 30).req("POST", "/v1/txn", body,
                                             {"Content-Type": "application/json"})
        return st

    def version(self):
        return "raftkv"


class Etcd(Cluster):
    system = "etcd"

    def __init__(self, procs, run_dir, extra=(), label=""):
        self.procs = procs
        self.nodes = three_nodes(run_dir, "etcd" + label, "etcd", "peer", "etcd" + label)
        self.extra = list(extra)
        self.initial = ",".join(f"{n['name']}=http://{n['peer']}" for n in self.nodes)

    def start(self, i):
        n = self.nodes[i]
        # Defaults otherwise: fsync on, 100 ms heartbeat, 1000 ms election timeout.
        args = ["etcd", "--name", n["name"], "--data-dir", n["dir"],
                "--listen-client-urls", f"http://{n['http']}",
                "--advertise-client-urls", f"http://{n['http']}",
                "--listen-peer-urls", f"http://{n['peer']}",
                "--initial-advertise-peer-urls", f"http://{n['peer']}",
                "--initial-cluster", self.initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "raftkv-bench", "--enable-v2=true",
                "--logger=zap", "--log-outputs=stderr"] + self.extra
        n["proc"] = self.procs.spawn(args, n["log"])

    def start_cluster(self):
        for i in range(3):
            self.start(i)
        wait_for(lambda: self.leader_index() is not None and
                 all(self.status(i) for i in range(3)), 60, "the etcd cluster to elect a leader")
        self.converge()

    def status(self, i):
        return get_json(self.nodes[i]["http"], "/v3/maintenance/status", "POST", "{}", timeout=2)

    @staticmethod
    def is_leader(s):
        return bool(s.get("leader")) and s["leader"] == s["header"]["member_id"]

    @staticmethod
    def term_of(s):
        return int(s["raftTerm"])

    @staticmethod
    def commit_of(s):
        return int(s["raftIndex"])

    @staticmethod
    def applied_of(s):
        return int(s.get("raftAppliedIndex", -1))

    def write(self, i, key, value, timeout=10, retry=True, store="v3"):
        if store == "v2":
            st, _ = client(self.addr(i), timeout).req(
                "PUT", f"/v2/keys/{key}", f"value={value}",
                {"Content-Type": "application/x-www-form-urlencoded"}, retry=retry)
            return st in (200, 201), st
        body = json.dumps({"key": b64(key), "value": b64(value)})
        st, _ = client(self.addr(i), timeout).req(
            "POST", "/v3/kv/put", body, {"Content-Type": "application/json"}, retry=retry)
        return st == 200, st

    def range_prefix(self, i, prefix, serializable):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = {"key": b64(prefix), "range_end": b64(end)}
        if serializable:
            body["serializable"] = True
        st, data = client(self.addr(i), 60).req("POST", "/v3/kv/range", json.dumps(body),
                                                {"Content-Type": "application/json"})
        if st != 200:
            raise BenchError(f"etcd range on {self.nodes[i]['name']}: HTTP {st}")
        return {unb64(kv["key"]): unb64(kv.get("value", "")) for kv in
                json.loads(data).get("kvs", [])}

    def read_pool(self, i, stale, store):
        if store == "v2":
            # A v2 GET is served from the member's own store unless quorum=true.
            q = "" if stale else "?quorum=true"
            st, data = client(self.addr(i), 60).req("GET", "/v2/keys/" + q)
            if st != 200:
                raise BenchError(f"etcd v2 list on {self.nodes[i]['name']}: HTTP {st}")
            got = {n["key"].lstrip("/"): n.get("value") for n in
                   json.loads(data)["node"].get("nodes", [])}
        else:
            got = self.range_prefix(i, "key-", stale)
        return [got.get(key_name(k)) for k in range(NKEYS)]

    def read_keys(self, i, keys):
        got = self.range_prefix(i, "f", False)
        return [got.get(k) for k in keys]

    def read_hot(self, i, stale):
        got = self.range_prefix(i, "hot-", stale)
        return [got.get(k) for k in HOT_KEYS]

    def read_one(self, i, key):
        body = json.dumps({"key": b64(key)})
        st, data = client(self.addr(i)).req("POST", "/v3/kv/range", body,
                                            {"Content-Type": "application/json"})
        kvs = json.loads(data).get("kvs") if st == 200 else None
        return unb64(kvs[0].get("value", "")) if kvs else None

    def read_mem(self, i, keys):
        return pmap(lambda k: self.read_one(i, k), keys)

    def put_batch(self, i, kvs):
        body = json.dumps({"success": [{"request_put": {"key": b64(k), "value": b64(v)}}
                                       for k, v in kvs]})
        st, _ = client(self.addr(i), 30).req("POST", "/v3/kv/txn", body,
                                             {"Content-Type": "application/json"})
        return st


# ---------------------------------------------------------------------------------------------
# Correctness: what is stored is what the load wrote, and every node agrees.

class Store:
    """One key space (raftkv's; etcd v3; etcd v2) and the value tags written into it."""

    def __init__(self, cluster, kind):
        self.cluster, self.kind = cluster, kind
        self.ntags = 0
        self.baseline = None  # the tag every key held before the current cell

    def new_tag(self):
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"
        t = digits[self.ntags // 36 % 36] + digits[self.ntags % 36]
        self.ntags += 1
        return t

    def write(self, i, key, value):
        if self.kind == "v2":
            return self.cluster.write(i, key, value, store="v2")
        return self.cluster.write(i, key, value)


def set_every_key(store, label):
    """Writes every key of the pool once, with a value unique to this round, through the
    leader (VERIFY_THREADS writers, each key written by one of them only, so the last
    acknowledged value of each key is known), then reads all keys back from every node
    (linearizable) and compares exactly. Returns a list of problems."""
    c = store.cluster
    li = c.leader_index()
    if li is None:
        return [f"{label}: no leader"]
    tag = store.new_tag()

    def put(k):
        for _ in range(20):  # a 503 was not applied: try again
            try:
                ok, st = store.write(li, key_name(k), value_for(k, tag, 1))
            except (OSError, http.client.HTTPException) as e:
                st = repr(e)
                ok = False
            if ok:
                return None
            if st not in (503,):
                return f"write {key_name(k)}: {st}"
            time.sleep(0.1)
        return f"write {key_name(k)}: still 503"
    problems = [p for p in pmap(put, range(NKEYS)) if p]
    if problems:
        return [f"{label}: {len(problems)} writes failed, e.g. {problems[0]}"]
    store.baseline = tag
    for i in range(3):
        got = c.read_pool(i, False, store.kind)
        bad = [k for k in range(NKEYS) if got[k] != value_for(k, tag, 1)]
        if bad:
            k = bad[0]
            problems.append(f"{label}: {c.nodes[i]['name']} has {len(bad)} keys not at the "
                            f"value just written, e.g. {key_name(k)} = {got[k]!r}, "
                            f"expected {value_for(k, tag, 1)!r}")
    return problems


def report_read_retries(cluster, label):
    """Says so when check reads met 503s (an election during the check): the
    values were still compared, but the reader had to wait for a leader."""
    retries = take_read_retries()
    if retries:
        terms = []
        for i in range(3):
            try:
                terms.append(f"{cluster.nodes[i]['name']}={cluster.status(i).get('term')}")
            except Exception as e:  # a status read is only for the log line
                terms.append(f"{cluster.nodes[i]['name']}=? ({e!r})")
        log(f"  check ({label}): reads answered 503 and were asked again: {retries}; "
            f"terms now {', '.join(terms)}")


def verify_after_write_cell(store, label, tag, max_seq):
    """After a write cell (wrk wrote random keys, values tagged `tag`, seq 1..max_seq): once
    every node has applied the leader's commit index, each key holds a value that this cell
    wrote to that key or the one it held before the cell, the same on every node (leader:
    linearizable read; followers: stale). Then set_every_key. Returns a list of problems."""
    c = store.cluster
    c.converge()
    li = c.leader_index()
    problems = []
    values = {}
    for i in range(3):
        values[i] = c.read_pool(i, i != li, store.kind)
    from_cell = 0
    for k in range(NKEYS):
        v = values[li][k]
        ok = False
        if v is not None and len(v) == 32:
            parts = v.split(".")
            if len(parts) == 4 and parts[0] == f"{k:05d}" and parts[3] == "x" * 12:
                if parts[1] == store.baseline and parts[2] == f"{1:010d}":
                    ok = True
                elif parts[1] == tag and parts[2].isdigit() and 1 <= int(parts[2]) <= max_seq:
                    ok = True
                    from_cell += 1
        if not ok:
            problems.append(f"{label}: {key_name(k)} holds {v!r}, which no write of this cell "
                            f"or before it produced")
        for i in range(3):
            if values[i][k] != v:
                problems.append(f"{label}: {key_name(k)} is {v!r} on the leader "
                                f"{c.nodes[li]['name']} but {values[i][k]!r} on "
                                f"{c.nodes[i]['name']}")
        if len(problems) > 20:
            problems.append(f"{label}: stopping after 20 problems")
            break
    log(f"  check: {from_cell} of {NKEYS} keys hold a value of this cell, all nodes agree"
        if not problems else f"  check FAILED: {problems[0]}")
    report_read_retries(c, label)
    problems += set_every_key(store, label + " (rewrite)")
    report_read_retries(c, label + " (rewrite)")
    if not problems:
        log(f"  check: every key rewritten once and read back exactly from all 3 nodes")
    return problems


def reset_hot(cluster):
    """Sets the CAS cells' 16 counters to "0" through the leader."""
    li = cluster.leader_index()
    for k in HOT_KEYS:
        ok, st = cluster.write(li, k, "0")
        if not ok:
            return [f"{cluster.system}: setting {k} to 0: HTTP {st}"]
    return []


def verify_hot(cluster, label, r, conns):
    """After a CAS cell: the 16 counters add up to the increments acknowledged (cas_ok), plus
    at most one per connection (wrk stops with a request in flight on each, unanswered but
    perhaps applied), and every node agrees. Returns a list of problems."""
    cluster.converge()
    li = cluster.leader_index()
    values = {i: cluster.read_hot(i, stale=i != li) for i in range(3)}
    problems = []
    try:
        total = sum(int(v) for v in values[li])
    except (TypeError, ValueError):
        return [f"{label}: a counter is not a number: {values[li]}"]
    # Unknown outcomes: the requests in flight when wrk stopped, and those that timed out,
    # lost their connection or answered another error (a 504 may have been applied).
    unknown = conns + r["timeout"] + r["read"] + r["write"] + r["non2xx"]
    if r["cas_ok"] == 0:
        problems.append(f"{label}: no increment went through (is cas.lua reading the answers?)")
    if not r["cas_ok"] <= total <= r["cas_ok"] + unknown:
        problems.append(f"{label}: the counters add up to {total}, but {r['cas_ok']} "
                        f"increments were acknowledged (and {unknown} had unknown outcomes)")
    for i in range(3):
        if values[i] != values[li]:
            problems.append(f"{label}: {cluster.nodes[i]['name']} holds {values[i]}, the "
                            f"leader {values[li]}")
    log(f"  check: the counters add up to {total}: {r['cas_ok']} acknowledged increments "
        f"and {total - r['cas_ok']} of the {conns} in flight at the end; all nodes agree"
        if not problems else
        f"  check FAILED: {problems[0]}")
    return problems


# ---------------------------------------------------------------------------------------------
# The memory and restart cell: MEMKEYS keys on fresh clusters of each system.

MEM_BATCH = 10  # puts per transaction while loading


def mem_value(i):
    v = f"{i:014d}."
    return v + "v" * (100 - len(v))  # 100 bytes


def rss_bytes(pid, field="VmRSS"):
    """VmRSS (all resident pages), or RssAnon (heap and stacks, without mapped files such
    as etcd's bbolt database)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no {field} for pid {pid}")


def memory_cell(procs, run_dir, system):
    """Loads MEMKEYS keys (16 bytes, values of 100) into a fresh 3-node cluster in
    transactions of MEM_BATCH puts, then reports the RSS each node gained per key, and the
    time a follower takes, after a SIGKILL, to restart and catch up. Both systems snapshot
    every 10,000 entries (raftkv --snapshot-entries, etcd --snapshot-count) so that the
    entries kept in memory since the last snapshot weigh the same on both."""
    if system == "raftkv":
        c = Raftkv(procs, run_dir, ["--snapshot-entries=10000"], label="-mem")
    else:
        c = Etcd(procs, run_dir, ["--snapshot-count=10000"], label="-mem")
    for n in c.nodes:
        os.makedirs(n["dir"], exist_ok=True)
    c.start_cluster()
    rss0 = [rss_bytes(n["proc"].pid) for n in c.nodes]
    anon0 = [rss_bytes(n["proc"].pid, "RssAnon") for n in c.nodes]
    li = c.leader_index()
    t0 = time.monotonic()

    def load(b):
        ids = range(b * MEM_BATCH, min(MEMKEYS, (b + 1) * MEM_BATCH))
        for _ in range(50):
            try:
                st = c.put_batch(li, [(f"m-{i:014d}", mem_value(i)) for i in ids])
            except (OSError, http.client.HTTPException) as e:
                st = repr(e)
            if st == 200:
                return None
            time.sleep(0.1)
        return f"{system} memory load: batch {b}: {st}"
    problems = [p for p in pmap(load, range((MEMKEYS + MEM_BATCH - 1) // MEM_BATCH), 48) if p]
    if problems:
        raise BenchError(problems[0])
    load_s = time.monotonic() - t0
    c.converge()
    # Freed memory (a snapshot image serialized and written) goes back to the system a few
    # seconds later: measure once it has settled.
    pause(15)
    rss1 = [rss_bytes(n["proc"].pid) for n in c.nodes]
    anon1 = [rss_bytes(n["proc"].pid, "RssAnon") for n in c.nodes]
    per_key = [(b - a) / MEMKEYS for a, b in zip(rss0, rss1)]
    # raftkv's watch history is part of that: at most --watch-history-bytes (64 MiB) whatever
    # the number of keys; its own count, for the table.
    history = []
    if system == "raftkv":
        for i in range(3):
            st = get_json(c.addr(i), "/status", timeout=5)
            history.append(st.get("watch", {}).get("history_bytes", 0))
    anon_per_key = [(b - a) / MEMKEYS for a, b in zip(anon0, anon1)]
    # A sample of keys reads back exactly.
    sample = [(i * 7919) % MEMKEYS for i in range(1000)]
    got = c.read_mem(c.leader_index(), [f"m-{i:014d}" for i in sample])
    bad = [i for i, g in zip(sample, got) if g != mem_value(i)]
    if bad:
        problems.append(f"{system} memory cell: m-{bad[0]:014d} reads {got[sample.index(bad[0])]!r}")
    # Restart: SIGKILL a follower, start it, time until it knows the leader and has applied
    # the leader's commit index.
    fi = (c.leader_index() + 1) % 3
    c.kill(fi)
    t1 = time.monotonic()
    c.start(fi)
    wait_for(lambda: c.caught_up(fi), 300, f"{system} {c.nodes[fi]['name']} to catch up")
    restart_s = time.monotonic() - t1
    rss2 = rss_bytes(c.nodes[fi]["proc"].pid)
    for n in c.nodes:
        os.killpg(n["proc"].pid, signal.SIGTERM)
        n["proc"].wait(timeout=30)
    out = {"keys": MEMKEYS, "load_s": round(load_s, 1),
           "rss_before": rss0, "rss_after": rss1, "bytes_per_key": [round(x) for x in per_key],
           "anon_bytes_per_key": [round(x) for x in anon_per_key],
           "restart_s": round(restart_s, 2), "rss_after_restart": rss2,
           "history_bytes": history}
    log(f"  {system}: loaded {MEMKEYS} keys in {load_s:.0f} s; RSS per key "
        f"{', '.join(f'{x:.0f}' for x in per_key)} bytes (nodes; anonymous only "
        f"{', '.join(f'{x:.0f}' for x in anon_per_key)}); follower restart "
        f"{restart_s:.2f} s (RSS {rss2 / 1e6:.0f} MB after it)")
    return out, problems


# ---------------------------------------------------------------------------------------------
# wrk

class StallWatch:
    """A thread that sleeps STALL_TICK_S at a time and keeps the longest it overslept: when
    every process on the host is frozen (a hypervisor pause, the host swapping), this
    driver is frozen too and sees the gap."""

    def __init__(self):
        self.max_gap_s = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        last = time.monotonic()
        while not self._stop.wait(STALL_TICK_S):
            now = time.monotonic()
            self.max_gap_s = max(self.max_gap_s, now - last - STALL_TICK_S)
            last = now

    def stop(self):
        self._stop.set()
        self._t.join()
        return self.max_gap_s


STALL_TICK_S = 0.02
STEADY_ATTEMPTS = 3  # a cell whose run saw a leader change is run again, at most twice more


def run_steady(cluster, cell, conns, run_dir, prepare=lambda: "zz", check=lambda r, tag: []):
    """run_wrk, again if the leader changed during the run: such a run measures an election,
    not the cell. prepare() gives the run's tag; check(r, tag) checks each run, the ones set
    aside too, and returns problems. Returns (the run kept, problems); the kept run lists
    the runs set aside in r["set_aside"], each with the terms and the longest host stall."""
    problems, set_aside = [], []
    for attempt in range(STEADY_ATTEMPTS):
        tag = prepare()
        t0 = cluster.max_term()
        watch = StallWatch()
        try:
            r = run_wrk(cluster, cell, conns, tag, run_dir)
        finally:
            stall_s = watch.stop()
        t1 = cluster.max_term()
        problems += check(r, tag)
        if t0 is None or t1 is None or t1 == t0 or attempt == STEADY_ATTEMPTS - 1:
            r["set_aside"] = set_aside
            if t0 is not None and t1 is not None and t1 != t0:
                r["leader_changed"] = f"term {t0}->{t1}, host stall {stall_s * 1000:,.0f} ms"
            return r, problems
        note = (f"{cell} c={conns}: {r['rps']:,.0f} req/s set aside, the term went from {t0} "
                f"to {t1} during the run (longest host stall seen by the driver: "
                f"{stall_s * 1000:,.0f} ms)")
        log(f"  {note}; running it again")
        set_aside.append(note)


def run_wrk(cluster, cell, conns, tag, run_dir):
    system, mode, target, _ = CELLS[cell]
    li = cluster.leader_index()
    if li is None:
        raise BenchError(f"{system}: no leader before cell {cell}")
    node = li if target == "leader" else (li + 1) % 3
    url = f"http://{cluster.addr(node)}"
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{SECONDS}s", "--latency", "--timeout",
           f"{WRK_TIMEOUT_S}s", "-s", CAS_LUA if mode.endswith("_cas") else LUA, url, "--",
           mode, tag, str(NKEYS),
           str(WRK_MAX_REQUESTS), str(1000 + conns)]
    cpu0 = cpu_snapshot()
    out_path = os.path.join(run_dir, "wrk.out")
    with open(out_path, "wb") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_child_setup)
    try:
        deadline = time.monotonic() + SECONDS + 60
        while p.poll() is None:
            if STOP.is_set():
                raise BenchError("interrupted")
            if time.monotonic() > deadline:
                raise BenchError(f"wrk did not stop for cell {cell}")
            time.sleep(0.1)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    with open(out_path, errors="replace") as f:
        out = f.read()
    with open(os.path.join(run_dir, "wrk.log"), "a") as f:
        f.write(f"=== {cell} c={conns} {' '.join(cmd)}\n{out}\n")
    for line in out.splitlines():
        if line.startswith("BENCH_RESULT "):
            r = json.loads(line[len("BENCH_RESULT "):])
            if mode == "rk1_cas":
                r["non2xx"] -= r["cas_conflicts"]  # a 412 is a lost race, not an error
            r["errors"] = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
            r["node"] = cluster.nodes[node]["name"]
            r["other_cpus"] = round(other_cpus(cpu0, cpu_snapshot()), 2)
            return r
    raise BenchError(f"wrk gave no result for cell {cell}:\n{out}")


# ---------------------------------------------------------------------------------------------
# Failover: SIGKILL the leader under a steady write load, KILLS times.

def failover(cluster, run_dir):
    name = cluster.system
    lock = threading.Lock()
    acked = []  # (key, value, t_sent, t_ack)
    failed = [0]
    alive = set(range(3))
    stop = threading.Event()

    def writer(tid):
        for seq in range(FAILOVER_MAX_WRITES):
            if stop.is_set() or STOP.is_set():
                return
            with lock:
                nodes = sorted(alive)
            node = nodes[(tid + seq) % len(nodes)]
            key = f"fw{tid}-{seq:012d}"  # 16 bytes
            if not attempt(node, key):
                time.sleep(0.01)

    def attempt(node, key):
        value = key + "." + "x" * (31 - len(key))  # 32 bytes
        t_sent = time.monotonic()
        try:
            ok, _ = cluster.write(node, key, value, timeout=FAILOVER_WRITE_TIMEOUT_S,
                                  retry=False)
        except (OSError, http.client.HTTPException):
            ok = False
        with lock:
            if ok:
                acked.append((key, value, t_sent, time.monotonic()))
            else:
                failed[0] += 1
        return ok

    def probe(kill, n, node):
        attempt(node, f"fp{kill:02d}-{n:011d}")  # 16 bytes

    threads = [threading.Thread(target=writer, args=(t,), daemon=True)
               for t in range(FAILOVER_WRITERS)]
    for t in threads:
        t.start()
    downtimes, problems = [], []
    try:
        pause(1)
        for k in range(KILLS):
            li = wait_for(lambda: cluster.leader_index(), FAILOVER_STEP_TIMEOUT_S,
                          f"a {name} leader")
            with lock:
                alive.discard(li)
            t0 = time.monotonic()
            cluster.kill(li)

            # The steady writers may all be waiting on writes sent before the kill (to a
            # follower that forwarded them to the dead leader) until their timeout: probe
            # with a fresh write every PROBE_INTERVAL_S too, so that the first write the
            # cluster can take is seen when it can take it.
            probes = 0

            def first_write_after():
                nonlocal probes
                with lock:
                    ts = [a[3] for a in acked[-5000:] if a[2] >= t0]
                    nodes = sorted(alive)
                if ts:
                    return min(ts)
                if probes < FAILOVER_MAX_PROBES:
                    threading.Thread(target=probe, args=(k, probes, nodes[probes % len(nodes)]),
                                     daemon=True).start()
                    probes += 1
                return None
            try:
                t1 = wait_for(first_write_after, FAILOVER_STEP_TIMEOUT_S,
                              "a write through a surviving node", interval=PROBE_INTERVAL_S)
                downtimes.append(t1 - t0)
                log(f"  kill {k + 1}: {cluster.nodes[li]['name']} (leader) SIGKILLed; "
                    f"first write after {1000 * (t1 - t0):.0f} ms")
            except BenchError as e:
                problems.append(f"{name} failover kill {k + 1}: {e}")
                downtimes.append(float("inf"))
            cluster.start(li)
            wait_for(lambda: cluster.caught_up(li), FAILOVER_STEP_TIMEOUT_S,
                     f"{cluster.nodes[li]['name']} to restart and catch up")
            with lock:
                alive.add(li)
            pause(1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    cluster.check_alive()
    cluster.converge()
    li = cluster.leader_index()
    keys = [a[0] for a in acked]
    got = cluster.read_keys(li, keys)
    lost = [a[0] for a, g in zip(acked, got) if g != a[1]]
    if lost:
        problems.append(f"{name} failover: {len(lost)} acknowledged writes lost, e.g. {lost[:3]}")
    log(f"  {name} failover: {len(acked)} writes acknowledged, {failed[0]} failed/refused, "
        f"{len(lost)} acknowledged lost")
    return {"downtimes_s": downtimes, "acked": len(acked), "failed": failed[0],
            "lost": len(lost)}, problems


# ---------------------------------------------------------------------------------------------
# Watch cells (issue 12): fan-out to streaming watchers, and the cost of idle ones.

def proc_cpu_s(pids):
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read().rsplit(")", 1)[1].split()
        total += (int(st[11]) + int(st[12])) / CLK_TCK
    return total


def watch_cells(procs, run_dir, system):
    """On a fresh cluster of `system`: (1) FANOUT_WATCHERS streaming watchers on one prefix,
    on the leader, while FANOUT_RATE writes per second run through it: events delivered per
    second, write-to-event latency, and the servers' CPU per event; (2) IDLE_WATCHERS idle
    watchers on the leader: its RSS gained per watcher, and the /v1-or-v3 put throughput (64
    connections) with them open against without. Both systems serve one watch per HTTP
    connection (etcd through its JSON gateway, as in every etcd cell)."""
    if system == "raftkv":
        c = Raftkv(procs, run_dir, ["--max-watchers=20000", "--max-connections=20000"],
                   label="-watch")
        put_cell = "rk1_put"
    else:
        c = Etcd(procs, run_dir, [], label="-watch")
        put_cell = "e3_put"
    for n in c.nodes:
        os.makedirs(n["dir"], exist_ok=True)
    c.start_cluster()
    li = c.leader_index()
    leader = c.addr(li)
    pids = [n["proc"].pid for n in c.nodes]
    out, problems = {}, []

    def load(args, timeout):
        cmd = [WATCH_LOAD] + args
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=_child_setup)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        if r.returncode != 0 or not lines:
            raise BenchError(f"watch_load {' '.join(args)}: exit {r.returncode}: "
                             f"{r.stdout[-300:]} {r.stderr[-300:]}")
        return json.loads(lines[-1])

    cpu0 = proc_cpu_s(pids)
    f = load(["fanout", "--system", system, "--watch", leader, "--write", leader,
              "--watchers", str(FANOUT_WATCHERS), "--rate", str(FANOUT_RATE),
              "--seconds", str(SECONDS)], SECONDS + 120)
    cpu = proc_cpu_s(pids) - cpu0
    f["cpu_us_per_event"] = round(1e6 * cpu / f["events"], 2) if f["events"] else None
    out["fanout"] = f
    # raftkv cancels a watcher it cannot keep up with (slow_consumer) rather than let it
    # lag: an event missing without a failed watcher is a bug. etcd lets watchers lag (its
    # events arrive late, counted as they come within 5 s of the last write).
    if system == "raftkv" and (f["events"] < f["events_expected"] or f["failed_watchers"]):
        problems.append(f"{system} fan-out: {f['events']} of {f['events_expected']} events "
                        f"delivered, {f['failed_watchers']} watchers failed")
    log(f"  {system} fan-out: {f['events_per_s']:,.0f} events/s to {FANOUT_WATCHERS} watchers, "
        f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, {f['cpu_us_per_event']} CPU us/event "
        f"({f['events']} of {f['events_expected']} events)")

    # Puts without, with, and again without the idle watchers: the machine's speed drifts,
    # so the loss is against the mean of the two runs around the one with them.
    pause(3)
    base = run_steady(c, put_cell, 64, run_dir, lambda: "w0")[0]
    rss0 = rss_bytes(c.nodes[li]["proc"].pid)
    p = subprocess.Popen([WATCH_LOAD, "idle", "--system", system, "--watch", leader,
                          "--watchers", str(IDLE_WATCHERS)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, preexec_fn=_child_setup)
    try:
        line = p.stdout.readline()
        if not line.startswith('{"created"'):
            raise BenchError(f"{system}: idle watchers not created: {line!r}")
        pause(3)
        rss1 = rss_bytes(c.nodes[li]["proc"].pid)
        loaded = run_steady(c, put_cell, 64, run_dir, lambda: "w1")[0]
    finally:
        p.stdin.close()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    pause(3)
    after = run_steady(c, put_cell, 64, run_dir, lambda: "w2")[0]
    without = (base["rps"] + after["rps"]) / 2
    out["idle"] = {"watchers": IDLE_WATCHERS, "bytes_per_watcher": round((rss1 - rss0) /
                                                                          IDLE_WATCHERS),
                   "put_rps_without": round(without), "put_rps_with": round(loaded["rps"]),
                   "put_rps_runs": [round(base["rps"]), round(loaded["rps"]),
                                    round(after["rps"])],
                   "loss_pct": round(100 * (1 - loaded["rps"] / without), 1),
                   "set_aside": [n for r in (base, loaded, after) for n in r["set_aside"]]}
    log(f"  {system} idle: {out['idle']['bytes_per_watcher']} bytes per watcher; puts "
        f"{base['rps']:,.0f}/s without, {loaded['rps']:,.0f}/s with {IDLE_WATCHERS} watchers, "
        f"{after['rps']:,.0f}/s without again ({out['idle']['loss_pct']}% lost)")
    for n in c.nodes:
        os.killpg(n["proc"].pid, signal.SIGTERM)
        n["proc"].wait(timeout=30)
    return out, problems


def watch_rows(watch):
    a, b = watch.get("raftkv", {}), watch.get("etcd", {})

    def cell(d, k1, k2, fmt="{:,.0f}"):
        v = d.get(k1, {}).get(k2)
        return "-" if v is None else fmt.format(v)

    def rat(k1, k2, higher_better=True):
        x, y = a.get(k1, {}).get(k2), b.get(k1, {}).get(k2)
        if not x or not y:
            return "-"
        return f"{(x / y if higher_better else y / x):.1f}x"
    fw = a.get("fanout", b.get("fanout", {})).get("watchers", FANOUT_WATCHERS)
    iw = a.get("idle", b.get("idle", {})).get("watchers", IDLE_WATCHERS)
    rows = [
        (f"fan-out: events delivered per second ({fw} watchers, {FANOUT_RATE} writes/s)",
         "fanout", "events_per_s", "{:,.0f}", True),
        ("fan-out: write-to-event latency p50, ms", "fanout", "p50_ms", "{:.2f}", False),
        ("fan-out: write-to-event latency p99, ms", "fanout", "p99_ms", "{:.2f}", False),
        ("fan-out: server CPU per event delivered, us (3 nodes)", "fanout", "cpu_us_per_event",
         "{:.2f}", False),
        (f"idle: leader RSS per watcher, bytes ({iw} watchers)", "idle", "bytes_per_watcher",
         "{:,.0f}", False),
        ("idle: puts/s at 64 connections, without watchers (mean of before and after)", "idle",
         "put_rps_without", "{:,.0f}", True),
        (f"idle: puts/s at 64 connections, with {iw} idle watchers", "idle", "put_rps_with",
         "{:,.0f}", True),
        ("idle: put throughput lost to the idle watchers, %", "idle", "loss_pct", "{:.1f}",
         None),
    ]
    md = ["| cell | raftkv | etcd | raftkv ahead by |", "| --- | ---: | ---: | ---: |"]
    for label, k1, k2, fmt, hb in rows:
        md.append(f"| {label} | {cell(a, k1, k2, fmt)} | {cell(b, k1, k2, fmt)} | "
                  f"{rat(k1, k2, hb) if hb is not None else '-'} |")
    return md


# ---------------------------------------------------------------------------------------------
# Lease cells (issue 13): LEASE_COUNT leases renewed at a third of their TTL.

LEASE_IDLE_S = 5  # the idle cluster's CPU, measured before any lease exists
LEASE_SETTLE_S = 2  # after the grants, before the renewals-only phase is measured


class LeaseLoadProc:
    """bench/lease_load as a child: its JSON lines through a queue (every read has a
    timeout), its phases marked through its standard input."""

    def __init__(self, args, log_path):
        self.lines = queue.Queue()
        self.err = open(log_path, "ab")
        self.p = subprocess.Popen([LEASE_LOAD] + args, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.err, text=True,
                                  preexec_fn=_child_setup)

        def reader():
            for line in self.p.stdout:
                self.lines.put(line)
            self.lines.put(None)
        threading.Thread(target=reader, daemon=True).start()

    def next(self, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            if STOP.is_set():
                raise BenchError("interrupted")
            try:
                line = self.lines.get(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise BenchError(f"lease_load: no {what} within {timeout} s")
                continue
            if line is None:
                raise BenchError(f"lease_load exited (status {self.p.wait()}) before {what}")
            if line.startswith("{"):
                self.err.write(line.encode())  # the log keeps every answer, for a post-mortem
                self.err.flush()
                d = json.loads(line)
                if "error" in d:
                    raise BenchError(f"lease_load: {d['error']}")
                return d

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def mark(self):
        self.send("mark")
        return self.next(30, "phase statistics")

    def cpu_s(self):
        return proc_cpu_s([self.p.pid])

    def close(self, kill=False):
        if kill and self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(timeout=150)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.err.close()


def check_leases(c, ids_path):
    """The leases lease_load granted (and keeps renewing) all exist, each with its key
    attached, on the leader (raftkv: also the lease count in every node's /status).
    Returns (leases found, keys found with their lease, problems)."""
    want = {}
    with open(ids_path) as f:
        for line in f:
            lid, key = line.split()
            want[key] = int(lid)
    li = c.leader_index()
    if li is None:
        return 0, 0, ["no leader for the lease check"]
    addr, prefix = c.addr(li), "lease/"
    have_keys = {}
    if c.system == "raftkv":
        st, data = client(addr, 60).req("GET", "/v1/leases")
        if st != 200:
            return 0, 0, [f"GET /v1/leases: HTTP {st} {data[:120]!r}"]
        ids = {int(l["id"]) for l in json.loads(data)["leases"]}
        token = None
        for _ in range(1000):  # pages
            q = f"/v1/kv/{prefix}?prefix&limit=10000" + (f"&continue={token}" if token else "")
            st, data = client(addr, 60).req("GET", q)
            if st != 200:
                return len(ids), 0, [f"GET {q}: HTTP {st} {data[:120]!r}"]
            page = json.loads(data)
            for kv in page["kvs"]:
                have_keys[kv["key"]] = int(kv.get("lease", 0))
            token = page.get("continue")
            if not page.get("more") or not token:
                break
    else:
        st, data = client(addr, 60).req("POST", "/v3/lease/leases", "{}",
                                        {"Content-Type": "application/json"})
        if st != 200:
            return 0, 0, [f"etcd lease list: HTTP {st} {data[:120]!r}"]
        ids = {int(l["ID"]) for l in json.loads(data).get("leases", [])}
        body = json.dumps({"key": b64(prefix), "range_end": b64(prefix[:-1] + "0")})
        st, data = client(addr, 60).req("POST", "/v3/kv/range", body,
                                        {"Content-Type": "application/json"})
        if st != 200:
            return len(ids), 0, [f"etcd range {prefix}: HTTP {st} {data[:120]!r}"]
        for kv in json.loads(data).get("kvs", []):
            have_keys[unb64(kv["key"])] = int(kv.get("lease", 0))
    leases_found = sum(1 for lid in want.values() if lid in ids)
    keys_found = sum(1 for k, lid in want.items() if have_keys.get(k) == lid)
    problems = []
    if leases_found < len(want):
        problems.append(f"{c.system} leases: {len(want) - leases_found} of {len(want)} leases "
                        f"gone while renewed, e.g. "
                        f"{next(lid for lid in want.values() if lid not in ids)}")
    if keys_found < len(want):
        k = next(k for k, lid in want.items() if have_keys.get(k) != lid)
        problems.append(f"{c.system} leases: {len(want) - keys_found} of {len(want)} keys "
                        f"missing or not on their lease, e.g. {k}: lease "
                        f"{have_keys.get(k)} instead of {want[k]}")
    if c.system == "raftkv":
        for i in range(3):
            n = ((c.status(i) or {}).get("leases") or {}).get("count")
            if n != len(want):
                problems.append(f"raftkv leases: {c.nodes[i]['name']} /status counts {n} "
                                f"leases, not {len(want)}")
    return leases_found, keys_found, problems


def lease_cell(procs, run_dir, system):
    """On a fresh cluster of `system` (bench/README.md, "Lease cells"): the servers' CPU while
    LEASE_COUNT leases are renewed at a third of their TTL and nothing else runs, and the
    /v1-or-v3 put throughput at 64 connections with those renewals running against without
    (the mean of a run before the leases and one after they are revoked)."""
    if system == "raftkv":
        c = Raftkv(procs, run_dir, [], label="-lease")
        put_cell = "rk1_put"
    else:
        c = Etcd(procs, run_dir, [], label="-lease")
        put_cell = "e3_put"
    for n in c.nodes:
        os.makedirs(n["dir"], exist_ok=True)
    c.start_cluster()
    li = c.leader_index()
    pids = [n["proc"].pid for n in c.nodes]
    problems = []
    pause(2)
    t0, cpu0 = time.monotonic(), proc_cpu_s(pids)
    pause(LEASE_IDLE_S)
    idle = (proc_cpu_s(pids) - cpu0) / (time.monotonic() - t0)
    def put_run(tag):
        # A leader change under this light load is worth knowing: wait for a leader (the run
        # needs one) and note it, rather than give up.
        li2 = wait_for(lambda: c.leader_index(), 30, f"a {system} leader")
        if li2 != li:
            leader_changes.append(f"before put run {tag}: leader {c.nodes[li2]['name']}, was "
                                  f"{c.nodes[li]['name']}")
            log(f"  {system}: the leader changed: {leader_changes[-1]}")
        return run_wrk(c, put_cell, 64, tag, run_dir)
    leader_changes = []
    base = put_run("l0")
    ids_path = os.path.join(run_dir, f"lease-ids-{system}.txt")
    ll = LeaseLoadProc(["--system", system, "--addr", c.addr(li), "--leases", str(LEASE_COUNT),
                        "--ttl", str(LEASE_TTL_S), "--ids-out", ids_path],
                       os.path.join(run_dir, f"lease_load-{system}.log"))
    phases, finished = {}, False
    try:
        g = ll.next(300, "grants")
        t_granted = time.monotonic()
        log(f"  {system}: {g['granted']} leases of {g['ttl_s']} s granted (one key each) in "
            f"{g['grant_s']} s")
        pause(LEASE_SETTLE_S)
        phases["grants"] = ll.mark()  # from the first grant: renewals start with them
        # (a) Renewals alone: the servers' CPU.
        t1, cpu1, lcpu1 = time.monotonic(), proc_cpu_s(pids), ll.cpu_s()
        pause(SECONDS)
        dt = time.monotonic() - t1
        cpu = (proc_cpu_s(pids) - cpu1) / dt
        client_cpu = (ll.cpu_s() - lcpu1) / dt
        phases["alone"] = ll.mark()
        # (b) The put load while the renewals run, twice, between runs without them: before
        # the grants, with the renewals paused (a pause lengthens every lease's time between
        # renewals by its own length, so only if that stays well under the TTL), and after
        # the revoke. The host's speed drifts; alternating evens it out.
        loaded = [put_run("l1")]
        phases["with_writes"] = ll.mark()
        paused = None
        if SECONDS + 5 <= LEASE_TTL_S * 2 / 3:
            ll.send("pause")
            paused = put_run("l2")
            ll.send("resume")
            phases["paused"] = ll.mark()
            loaded.append(put_run("l3"))
            phases["with_writes_2"] = ll.mark()
        # Renew on until a TTL has passed since the grants: a lease not renewed is gone by
        # then, and the check below must see it.
        pause(max(1.0, LEASE_TTL_S + 2 - (time.monotonic() - t_granted)))
        phases["hold"] = ll.mark()
        leases_found, keys_found, p = check_leases(c, ids_path)
        ll.send("stop")
        phases["end"] = ll.next(30, "the last phase")
        rv = ll.next(150, "the revokes")
        finished = True
    finally:
        ll.close(kill=not finished)
    c.check_alive()
    pause(3)
    after = put_run("l4")
    a = phases["alone"]
    failures = sum(ph["failures"] for ph in phases.values())
    withouts = [r for r in (base, paused, after) if r]
    without = statistics.mean(r["rps"] for r in withouts)
    with_ = statistics.mean(r["rps"] for r in loaded)
    w_phases = [ph for k, ph in phases.items() if k.startswith("with_writes")]
    net = cpu - idle
    out = {
        "leases": LEASE_COUNT, "ttl_s": LEASE_TTL_S, "grant_s": g["grant_s"],
        "scheduled_per_s": round(LEASE_COUNT / (LEASE_TTL_S / 3), 1),
        "renewals_per_s": a["renewals_per_s"], "p50_ms": a["p50_ms"], "p99_ms": a["p99_ms"],
        "delay_p99_ms": a["delay_p99_ms"],
        "w_p50_ms": max(ph["p50_ms"] for ph in w_phases),
        "w_p99_ms": max(ph["p99_ms"] for ph in w_phases),
        "w_renewals_per_s": min(ph["renewals_per_s"] for ph in w_phases),
        "idle_cpu_s_per_s": round(idle, 4), "cpu_s_per_s": round(cpu, 4),
        "cpu_ms_per_1000": round(1e6 * net / a["renewals_per_s"], 1)
        if a["renewals_per_s"] else None,
        "client_cpu_s_per_s": round(client_cpu, 4),
        "put_rps_without": round(without), "put_rps_with": round(with_),
        "put_rps_runs": {"before": round(base["rps"]),
                         "with": [round(r["rps"]) for r in loaded],
                         "paused": round(paused["rps"]) if paused else None,
                         "after": round(after["rps"])},
        "put_errors": sum(r["errors"] for r in withouts + loaded),
        "loss_pct": round(100 * (1 - with_ / without), 1),
        "failures": failures, "leases_found": leases_found, "keys_found": keys_found,
        "check_problems": p, "revoked": rv.get("revoked"), "revoke": rv, "phases": phases,
        "leader_changes": leader_changes, "t0_unix": g.get("t0_unix"),
    }
    log(f"  {system} leases: {a['renewals_per_s']:,.0f} renewals/s (scheduled "
        f"{out['scheduled_per_s']:,.0f}), p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms; servers "
        f"{cpu:.3f} CPU-s/s ({idle:.3f} idle): {out['cpu_ms_per_1000']} CPU-ms per 1,000 "
        f"renewals; client {client_cpu:.3f} CPU-s/s")
    runs = out["put_rps_runs"]
    log(f"  {system} leases: puts/s {runs['before']:,} before the grants, "
        + " / ".join(f"{x:,}" for x in runs["with"]) + " with the renewals, "
        + (f"{runs['paused']:,} with them paused, " if paused else "")
        + f"{runs['after']:,} after the revoke: {out['loss_pct']}% lost (renewal p99 with the "
        f"puts {out['w_p99_ms']} ms); {failures} failed renewals; after "
        f"{LEASE_TTL_S + 2} s, {leases_found} leases and {keys_found} keys of {LEASE_COUNT} "
        f"present; {rv.get('revoked')} revoked")
    if system == "raftkv":
        if failures:
            problems.append(f"raftkv leases: {failures} renewals failed: "
                            + json.dumps({k: {f: ph[f] for f in ("socket_errors",
                                                                 "status_errors", "not_found",
                                                                 "lapsed")}
                                          for k, ph in phases.items()}))
        problems += p
    for n in c.nodes:
        os.killpg(n["proc"].pid, signal.SIGTERM)
        n["proc"].wait(timeout=30)
    return out, problems


def lease_rows(leases):
    a, b = leases.get("raftkv", {}), leases.get("etcd", {})

    def cell(d, k, fmt):
        v = d.get(k)
        return "-" if v is None else fmt.format(v)

    def rat(k, higher_better):
        x, y = a.get(k), b.get(k)
        if not x or not y:
            return "-"
        return f"{(x / y if higher_better else y / x):.1f}x"
    n = a.get("leases", b.get("leases", LEASE_COUNT))
    rows = [
        (f"renewals per second achieved (scheduled: {n:,} every "
         f"{a.get('ttl_s', b.get('ttl_s', LEASE_TTL_S)) / 3:g} s)", "renewals_per_s", "{:,.0f}",
         True),
        ("renewal latency p50, ms (renewals alone)", "p50_ms", "{:.2f}", False),
        ("renewal latency p99, ms (renewals alone)", "p99_ms", "{:.2f}", False),
        ("renewal latency p99, ms (with the put load)", "w_p99_ms", "{:.2f}", False),
        ("renewal delay p99, from its due time to its answer, ms (renewals alone; raftkv's "
         "includes up to 100 ms of batching)", "delay_p99_ms", "{:.0f}", False),
        ("server CPU while renewing, CPU-s per s (3 nodes)", "cpu_s_per_s", "{:.3f}", False),
        ("server CPU of the idle cluster, CPU-s per s (3 nodes)", "idle_cpu_s_per_s", "{:.3f}",
         None),
        ("server CPU per 1,000 renewals, CPU-ms (above idle)", "cpu_ms_per_1000", "{:.1f}",
         False),
        ("client CPU (lease_load), CPU-s per s", "client_cpu_s_per_s", "{:.3f}", None),
        ("puts/s at 64 connections, without renewals (mean of 3 runs: before the grants, "
         "renewals paused, after the revoke)", "put_rps_without", "{:,.0f}", True),
        ("puts/s at 64 connections, with the renewals (mean of 2 runs between those)",
         "put_rps_with", "{:,.0f}", True),
        ("put throughput lost to the renewals, %", "loss_pct", "{:.1f}", None),
        ("failed renewals (errors, leases gone or lapsed)", "failures", "{:,}", None),
        (f"leases still there with their key after a TTL and more (of {n:,})", "keys_found",
         "{:,}", None),
    ]
    md = ["| cell | raftkv | etcd | raftkv ahead by |", "| --- | ---: | ---: | ---: |"]
    for label, k, fmt, hb in rows:
        md.append(f"| {label} | {cell(a, k, fmt)} | {cell(b, k, fmt)} | "
                  f"{rat(k, hb) if hb is not None else '-'} |")
    return md


def lease_bar_lines(leases):
    """Issue 13's bar: the renewals all done, and raftkv ahead of etcd in CPU per renewal,
    put throughput lost and renewal latency."""
    a, b = leases.get("raftkv"), leases.get("etcd")
    out = []
    if not a:
        return ["- **n/a** leases: the raftkv lease cell was not run"]
    ok = (a["failures"] == 0 and a["keys_found"] == a["leases"] and
          a["leases_found"] == a["leases"] and
          a["renewals_per_s"] >= 0.98 * a["scheduled_per_s"])
    out.append(f"- **{'PASS' if ok else 'MISS'}** every renewal done: {a['renewals_per_s']:,.0f} "
               f"renewals/s of {a['scheduled_per_s']:,.0f} scheduled, {a['failures']} failed, "
               f"{a['keys_found']:,} of {a['leases']:,} leases with their key after "
               f"{a['ttl_s'] + 2} s")
    if not b:
        out.append("- **n/a** leases against etcd: the etcd lease cell was not run")
        return out
    for text, k, fmt in [("CPU per 1,000 renewals below etcd's", "cpu_ms_per_1000",
                          "{:.1f} vs {:.1f} CPU-ms"),
                         ("put throughput lost to the renewals below etcd's", "loss_pct",
                          "{:.1f}% vs {:.1f}%"),
                         ("renewal latency p99 below etcd's (renewals alone)", "p99_ms",
                          "{:.2f} vs {:.2f} ms"),
                         ("renewal latency p99 below etcd's (with the put load)", "w_p99_ms",
                          "{:.2f} vs {:.2f} ms")]:
        x, y = a.get(k), b.get(k)
        if x is None or y is None:
            out.append(f"- **n/a** {text}")
            continue
        out.append(f"- **{'PASS' if x < y else 'MISS'}** {text}: {fmt.format(x, y)}")
    return out


# ---------------------------------------------------------------------------------------------
# Report

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot():
    """(time, CPU seconds used by the whole machine, CPU seconds used by this benchmark: the
    servers, this driver and its reaped children, i.e. wrk)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # all but idle and iowait; no guest time
    ours = 0.0
    for p in PROCS.procs:
        try:
            with open(f"/proc/{p.pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            ours += (int(st[11]) + int(st[12])) / CLK_TCK  # utime, stime
        except (OSError, IndexError):
            pass
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        ours += ru.ru_utime + ru.ru_stime
    return time.monotonic(), busy, ours


def other_cpus(a, b):
    """CPUs kept busy by work other than this benchmark's between two snapshots, on average:
    other work on the machine skews a cell, so every cell reports it."""
    dt = b[0] - a[0]
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / dt) if dt > 0 else 0.0


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def fstype(path):
    best, typ = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, typ = mnt, parts[2]
    return typ


def stamp_info(run_dir):
    commit = sh(["git", "rev-parse", "--short=12", "HEAD"])
    if sh(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += "-dirty"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": sh(["nproc"]),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                     if l.startswith("model name")), "?"),
        "raftkv_commit": commit,
        "raftkv_bin": RAFTKV_BIN,
        "etcd": sh(["etcd", "--version"]).splitlines()[0].replace("etcd Version: ", "")
        if "etcd" in SYSTEMS else "-",
        "wrk": sh(["wrk", "-v"]).split(" Copyright")[0].replace("wrk ", "").strip(),
        "data_fs": fstype(run_dir),
        "seconds": SECONDS, "conns": CONNS, "keys": NKEYS, "kills": KILLS,
    }


def fmt_rps(r):
    if r is None:
        return "-"
    s = f"{r['rps']:,.0f}"
    return s + (f" ⚠{r['errors']} err" if r["errors"] else "")


def fmt_ms(us):
    return f"{us / 1000:.2f}"


def fmt_p999(r):
    # Results stored before p99.9 was measured have none.
    return fmt_ms(r["p999_us"]) if r and "p999_us" in r else "-"


def ratio(a, b):
    if not a or not b or not b["rps"]:
        return "-"
    return f"{a['rps'] / b['rps']:.1f}x"


def v1_bar_lines(res, mem):
    """Issue 11's bar: the /v1 routes as fast as the legacy ones, and ahead of etcd."""
    out = []

    def rate(cell, r):  # a CAS cell counts the increments that went through
        return r["cas_ok"] / (r["duration_us"] / 1e6) if cell.endswith("_cas") else r["rps"]

    for text, ca, cb, conns, share in [
            ("/v1 put within 10% of the legacy write", "rk1_put", "rk_write", 64, 0.9),
            ("/v1 get within 10% of the legacy linearizable read", "rk1_get", "rk_read", 64, 0.9),
            ("/v1 put ahead of etcd's v3 put", "rk1_put", "e3_put", 64, 1),
            ("/v1 get ahead of etcd's v3 range", "rk1_get", "e3_range", 64, 1),
            ("CAS increments ahead of etcd's (successful ones per second)", "rk1_cas", "e3_cas",
             64, 1),
            ("100-key range ahead of etcd's", "rk1_range", "e3_range100", 16, 1),
            ("4-put transaction ahead of etcd's", "rk1_txn4", "e3_txn4", 64, 1)]:
        a, b = res.get((ca, conns)), res.get((cb, conns))
        if not a or not b:
            out.append(f"- **n/a** {text} at {conns} connections: cell not run")
            continue
        x, y = rate(ca, a), rate(cb, b)
        ok = x >= share * y if share < 1 else x > y
        out.append(f"- **{'PASS' if ok else 'MISS'}** {text} at {conns} connections: "
                   f"{x:,.0f} vs {y:,.0f} per s = {x / y:.2f}x")
    r = mem.get("raftkv")
    if r:
        med = statistics.median(r["bytes_per_key"])
        hist = r.get("history_bytes") or []
        note = ""
        if hist:
            net = med - statistics.median(hist) / r["keys"]
            note = (f" ({net:.0f} without the watch history's "
                    f"{statistics.median(hist) / 2**20:.0f} MiB, which --watch-history-bytes "
                    f"caps whatever the number of keys)")
        out.append(f"- **{'PASS' if med < 500 else 'MISS'}** RSS per key under 500 bytes at "
                   f"{r['keys']:,} keys: {med:.0f}{note}")
    return out


def bar_lines(res, fo):
    """Issue 5's bar, a line each: PASS or MISS with the numbers, n/a if not measured."""
    def versus(a, b):
        return f"{a['rps']:,.0f} vs {b['rps']:,.0f} req/s = {a['rps'] / b['rps']:.1f}x"

    # (text, raftkv cell, etcd-or-ceiling cell, connections, pass?, numbers)
    comparisons = [
        ("writes at 64 connections ≥10x etcd v3 puts, p99 below etcd's", "rk_write", "e3_put", 64,
         lambda a, b: a["rps"] >= 10 * b["rps"] and a["p99_us"] < b["p99_us"],
         lambda a, b: f"{versus(a, b)}; p99 {fmt_ms(a['p99_us'])} vs {fmt_ms(b['p99_us'])} ms"),
        ("linearizable reads at 64 connections ≥5x etcd v3 linearizable ranges", "rk_read",
         "e3_range", 64, lambda a, b: a["rps"] >= 5 * b["rps"], versus),
        ("stale reads at 64 connections ≥80% of the raftkv ceiling", "rk_stale", "rk_ceiling", 64,
         lambda a, b: a["rps"] >= 0.8 * b["rps"],
         lambda a, b: f"{a['rps']:,.0f} vs {b['rps']:,.0f} req/s = "
                      f"{100 * a['rps'] / b['rps']:.0f}%"),
        ("writes at 1 connection: p50 below etcd's", "rk_write", "e3_put", 1,
         lambda a, b: a["p50_us"] < b["p50_us"],
         lambda a, b: f"p50 {fmt_ms(a['p50_us'])} vs {fmt_ms(b['p50_us'])} ms"),
    ]
    out = []

    def line(text, ok, nums):
        out.append(f"- **{'PASS' if ok else 'MISS'}** {text}: {nums}")

    for text, ca, cb, conns, ok, nums in comparisons:
        a, b = res.get((ca, conns)), res.get((cb, conns))
        if a and b:
            line(text, ok(a, b), nums(a, b))
        else:
            out.append(f"- **n/a** {text}: cell not run")
    text = "failover median ≤1.0 s with 0 acknowledged writes lost"
    f = fo.get("raftkv")
    if f and f["downtimes_s"]:
        med = statistics.median(f["downtimes_s"])
        line(text, med <= 1.0 and f["lost"] == 0,
             f"median {med:.2f} s over {len(f['downtimes_s'])} kills, {f['lost']} of "
             f"{f['acked']} acknowledged writes lost")
    else:
        out.append(f"- **n/a** {text}: failover not run")
    return out


def failover_row(name, f):
    if not f:
        return f"| {name} | - | - | - | - | - | - |"
    d = f["downtimes_s"]
    return (f"| {name} | {len(d)} | {min(d):.3f} | {statistics.median(d):.3f} | {max(d):.3f} | "
            f"{f['acked']} | {f['lost']} |")


def write_report(info, res, fo, mem, problems, run_dir, save=True, watch=None, leases=None):
    """Returns the Markdown report; with save, writes it, the chart and the raw numbers to
    OUT (latest.* and a copy of the .md and .png named by time and commit)."""
    stamp = (f"{info['date']} · {info['nproc']} CPUs ({info['cpu']}) · raftkv "
             f"{info['raftkv_commit']} · etcd {info['etcd']} · wrk {info['wrk']}")
    md = ["# raftkv vs etcd", "",
          f"{stamp}  ", f"wrk -t1, {info['seconds']} s per cell, keys of 16 bytes from a pool of "
          f"{info['keys']}, values of 32 bytes; 3 nodes of each on 127.0.0.1, fsync on, default "
          f"election timing, data on {info['data_fs']}. Latencies in ms. "
          f"Binary: `{info['raftkv_bin']}`." +
          ("" if DEFAULT_RUN else " **Not the default run** (shortened or subset)."), ""]
    if res:
        oc = [r["other_cpus"] for r in res.values()]
        md += [f"Other work on the machine during the cells (CPUs busy outside the "
                     f"servers, wrk and the driver): {statistics.median(oc):.2f} median, "
                     f"{max(oc):.2f} max of {info['nproc']}"
                     + (": **the machine was shared, so the numbers are skewed**"
                        if max(oc) > 0.25 else "") + ".", ""]
    md.append("| cell | conns | raftkv req/s | p50 | p99 | p99.9 | etcd req/s | p50 | p99 | p99.9 "
              "| raftkv/etcd | raftkv % of ceiling |")
    md.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, rc, ec in ROWS:
        for c in CONNS:
            a = res.get((rc, c)) if rc else None
            b = res.get((ec, c)) if ec else None
            if a is None and b is None:
                continue
            ceil = res.get(("rk_ceiling", c))
            pct = f"{100 * a['rps'] / ceil['rps']:.0f}%" if a and ceil and ceil["rps"] else "-"
            md.append(f"| {label} | {c} | {fmt_rps(a)} | {fmt_ms(a['p50_us']) if a else '-'} | "
                      f"{fmt_ms(a['p99_us']) if a else '-'} | {fmt_p999(a)} | {fmt_rps(b)} | "
                      f"{fmt_ms(b['p50_us']) if b else '-'} | {fmt_ms(b['p99_us']) if b else '-'} "
                      f"| {fmt_p999(b)} | {ratio(a, b)} | {pct} |")
    aside = [n for r in res.values() for n in r.get("set_aside", [])]
    aside += [n for w in (watch or {}).values() for n in w.get("idle", {}).get("set_aside", [])]
    changed = [f"{k[0]} c={k[1]}: {r['leader_changed']}" for k, r in sorted(res.items())
               if r.get("leader_changed")]
    md += ["", f"Runs set aside because the leader changed during them (each was run again, "
           f"up to {STEADY_ATTEMPTS} runs in all): " + ("none." if not aside else
                                                       "; ".join(aside) + ".")]
    if changed:
        md += ["", "**Cells whose last run still saw a leader change** (their figures include "
               "an election): " + "; ".join(changed) + "."]
    errs = [(k, r) for k, r in sorted(res.items()) if r["errors"]]
    md += ["", "Cells with errors (⚠): " + ("none." if not errs else "; ".join(
        f"{k[0]} c={k[1]}: {r['non2xx']} non-2xx, {r['connect']} connect, {r['read']} read, "
        f"{r['write']} write, {r['timeout']} timeout of {r['requests']}" for k, r in errs))]
    if fo:
        md += ["", f"## Failover ({KILLS} SIGKILLs of the leader under a steady write load of "
               f"{FAILOVER_WRITERS} sequential writers through the surviving nodes)", "",
               "| system | kills | min s | median s | max s | writes acknowledged | "
               "acknowledged writes lost |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
               failover_row("raftkv", fo.get("raftkv")), failover_row("etcd", fo.get("etcd"))]
    if mem:
        md += ["", f"## Memory and restart ({MEMKEYS:,} keys of 16 bytes, values of 100, loaded in "
               f"transactions of {MEM_BATCH} puts into a fresh cluster; both snapshot every 10,000 "
               f"entries)", "",
               "| system | load s | RSS gained per key, bytes (3 nodes) | of it anonymous "
               "(without mapped files) | follower restart s (SIGKILL to caught up) | its RSS "
               "after, MB | of the RSS, the watch history, MiB (3 nodes) |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name in ("raftkv", "etcd"):
            m = mem.get(name)
            if m:
                md.append(f"| {name} | {m['load_s']} | "
                          f"{', '.join(str(x) for x in m['bytes_per_key'])} | "
                          f"{', '.join(str(x) for x in m['anon_bytes_per_key'])} | "
                          f"{m['restart_s']} | "
                          f"{m['rss_after_restart'] / 1e6:.0f} | "
                          + (", ".join(f"{h / 2**20:.0f}" for h in m["history_bytes"])
                             if m.get("history_bytes") else "-") + " |")
    if watch:
        md += ["", "## Watches (issue 12): fan-out and idle watchers, one watch per connection "
               "(etcd through its JSON gateway's /v3/watch)", ""] + watch_rows(watch)
    if leases:
        md += ["", f"## Leases (issue 13): {LEASE_COUNT:,} leases of {LEASE_TTL_S} s, one key "
               f"each, renewed at a third of their TTL, evenly spread (raftkv: a batch keepalive "
               f"every 100 ms; etcd: one keepalive request per renewal through its JSON "
               f"gateway)", ""] + lease_rows(leases)
        changes = [f"{name}: {'; '.join(v['leader_changes'])}" for name, v in leases.items()
                   if v.get("leader_changes")]
        if changes:
            md += ["", "Leader changes during the lease cells: " + " · ".join(changes) + "."]
    md += ["", "## The bar", ""] + bar_lines(res, fo)
    md += ["", "### The /v1 API (issue 11)", ""] + v1_bar_lines(res, mem)
    if leases:
        md += ["", "### Leases (issue 13)", ""] + lease_bar_lines(leases)
    md += ["", "## Correctness", "",
           "Every write cell was followed by a check of every key on every node and a "
           "rewrite-and-read-back of the whole pool (bench/README.md)." if not problems else
           "**FAILED**:"] + [f"- {p}" for p in problems[:50]]
    text = "\n".join(md) + "\n"
    if not save:
        return text
    os.makedirs(OUT, exist_ok=True)
    ts = time.strftime("%Y%m%d-%H%M%S")
    base = f"{ts}-{info['raftkv_commit']}"
    with open(os.path.join(OUT, "latest.md"), "w") as f:
        f.write(text)
    shutil.copy(os.path.join(OUT, "latest.md"), os.path.join(OUT, base + ".md"))
    raw = {"info": info, "cells": [dict(cell=k[0], conns=k[1], **r) for k, r in res.items()],
           "failover": fo, "memory": mem, "watch": watch or {}, "leases": leases or {},
           "problems": problems}
    with open(os.path.join(OUT, "latest.json"), "w") as f:
        json.dump(raw, f, indent=1)
    if chart(info, res, os.path.join(OUT, "latest.png"), run_dir, stamp):
        shutil.copy(os.path.join(OUT, "latest.png"), os.path.join(OUT, base + ".png"))
    return text


def chart(info, res, png, run_dir, stamp):
    c = max(CONNS)
    rows = []
    for label, rc, ec in ROWS:
        if rc == "rk_write_f" or rc == "rk_read_f":
            a, b = res.get((rc, c)), None
            lab = CHART_LABELS[rc]
        else:
            a, b = res.get((rc, c)), res.get((ec, c))
            lab = CHART_LABELS[rc].replace(" v3", "") if ec and ec.startswith("e3") else \
                CHART_LABELS[rc].replace(" v3", " (etcd v2)") if ec and ec.startswith("e2") else \
                CHART_LABELS[rc]
        if a is None and b is None:
            continue
        rows.append((lab, a["rps"] if a else "NaN", b["rps"] if b else "NaN"))
    if not rows or not shutil.which("gnuplot"):
        return False
    dat = os.path.join(run_dir, "chart.dat")
    with open(dat, "w") as f:
        for lab, a, b in rows:
            f.write(f'"{lab}" {a} {b}\n')
    vals = [v for r in rows for v in r[1:] if v != "NaN" and v > 0]
    ymin = 10 ** math.floor(math.log10(min(vals) / 2)) if vals else 1
    plots = ", ".join(
        f'"{dat}" using {col}:xtic(1) title "{name}" lc rgb "{color}"'
        for col, name, color in ((2, "raftkv", "#1f77b4"), (3, "etcd", "#ff7f0e"))
        if any(r[col - 1] != "NaN" for r in rows))
    gp = f"""
set terminal pngcairo size 1200,650 font "sans,10"
set output "{png}"
set title "raftkv vs etcd, 3 nodes, {c} connections, wrk -t1, {info['seconds']} s per cell\\n{stamp}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set yrange [{ymin}:*]
set ylabel "requests/s (log scale)"
set grid ytics
set key top right
set xtics rotate by -20 left
plot {plots}
"""
    r = subprocess.run(["gnuplot"], input=gp, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()}")
        return False
    return True


# ---------------------------------------------------------------------------------------------

def pick_tmp_parent():
    p = os.environ.get("BENCH_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    if not os.environ.get("BENCH_TMPDIR") and fstype(os.path.abspath(p)) in ("tmpfs", "ramfs"):
        p = BUILD_DIR  # the data must be on the real disk: fsync must cost what it costs
    os.makedirs(p, exist_ok=True)
    return p


def main():
    for tool in ["wrk"] + (["etcd"] if "etcd" in SYSTEMS else []):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found; run scripts/install-deps.sh --bench")
    if "raftkv" in SYSTEMS and not os.access(RAFTKV_BIN, os.X_OK):
        sys.exit(f"bench: {RAFTKV_BIN} not found; build it (make bench does) or set RAFTKV_BIN")

    # A signal only sets STOP, which every wait and worker checks within 0.1 s: raising in the
    # main thread at an arbitrary point could leave a lock of the thread pool held forever.
    # A second signal gives up at once (the children die with this process: PDEATHSIG).
    def on_signal(signum, frame):
        if STOP.is_set():
            os._exit(130)
        log("bench: interrupted; stopping")
        STOP.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    run_dir = tempfile.mkdtemp(prefix="raftkv-bench-", dir=pick_tmp_parent())
    info = stamp_info(run_dir)
    log(f"bench: run directory {run_dir} ({info['data_fs']}); {SECONDS} s per cell, "
        f"connections {CONNS}, cells {','.join(SELECTED) or 'none'}, {KILLS} kills")
    global PROCS
    procs = PROCS = Procs()
    res, fo, mem, watch, leases, problems = {}, {}, {}, {}, {}, []
    status = 0
    try:
        clusters, stores = {}, {}
        if "raftkv" in SYSTEMS:
            clusters["raftkv"] = Raftkv(procs, run_dir)
        if "etcd" in SYSTEMS:
            clusters["etcd"] = Etcd(procs, run_dir)
        for name, c in clusters.items():
            log(f"starting {name}: " + ", ".join(n["http"] for n in c.nodes))
            c.start_cluster()
            li = c.leader_index()
            log(f"  {name} leader: {c.nodes[li]['name']}")
        if "raftkv" in clusters:
            stores["raftkv"] = Store(clusters["raftkv"], "raftkv")
        if "etcd" in clusters:
            stores["v3"] = Store(clusters["etcd"], "v3")
            stores["v2"] = Store(clusters["etcd"], "v2")
        for s, st in stores.items():
            log(f"preloading {NKEYS} keys into {s} and reading them back from every node")
            problems += set_every_key(st, f"preload {s}")
        if problems:
            raise BenchError("preload failed: " + problems[0])

        for cell in SELECTED:
            system, mode, target, store_name = CELLS[cell]
            c = clusters[system]
            for conns in CONNS:
                if cell in CELL_CONNS and conns not in CELL_CONNS[cell]:
                    continue
                c.check_alive()
                store = stores.get(store_name)

                def prepare():
                    if store_name == "hot":
                        problems.extend(reset_hot(c))
                    return store.new_tag() if store else "zz"

                def check(r, tag):
                    if store_name == "hot":
                        return verify_hot(c, f"{cell} c={conns}", r, conns)
                    if store:
                        return verify_after_write_cell(store, f"{cell} c={conns}", tag,
                                                       r["max_seq"])
                    return []
                r, p = run_steady(c, cell, conns, run_dir, prepare, check)
                problems += p
                res[(cell, conns)] = r
                log(f"{cell:13s} c={conns:<3d} {r['rps']:>10,.0f} req/s  p50 "
                    f"{fmt_ms(r['p50_us'])} ms  p99 {fmt_ms(r['p99_us'])} ms  on {r['node']}"
                    f"  (other work: {r['other_cpus']:.2f} CPUs)"
                    + (f"  ERRORS {r['errors']} (non-2xx {r['non2xx']}, timeout {r['timeout']},"
                       f" socket {r['connect'] + r['read'] + r['write']})"
                       if r["errors"] else ""))
                if r["cas_ok"] or r["cas_conflicts"]:
                    log(f"  {r['cas_ok'] / (r['duration_us'] / 1e6):,.0f} increments/s, "
                        f"{r['cas_conflicts']} conflicts")
                c.check_alive()

        if KILLS > 0:
            for name, c in clusters.items():
                log(f"failover: {KILLS} leader kills on {name}")
                f, p = failover(c, run_dir)
                fo[name] = f
                problems += p
                d = f["downtimes_s"]
                log(f"  {name} failover: min {min(d):.3f} s, median "
                    f"{statistics.median(d):.3f} s, max {max(d):.3f} s")
        if MEMKEYS > 0:
            for name, c in clusters.items():
                for n in c.nodes:  # the memory cell's clusters get the machine to themselves
                    if n["proc"] is not None and n["proc"].poll() is None:
                        os.killpg(n["proc"].pid, signal.SIGTERM)
                        n["proc"].wait(timeout=30)
            for name in clusters:
                log(f"memory and restart: {MEMKEYS} keys into a fresh {name} cluster")
                m, p = memory_cell(procs, run_dir, name)
                mem[name] = m
                problems += p
        if WATCH:
            if not os.access(WATCH_LOAD, os.X_OK):
                raise BenchError(f"{WATCH_LOAD} not found; make bench builds it")
            for name, c in clusters.items():
                for n in c.nodes:  # fresh clusters, the machine to themselves
                    if n["proc"] is not None and n["proc"].poll() is None:
                        os.killpg(n["proc"].pid, signal.SIGTERM)
                        n["proc"].wait(timeout=30)
            for name in clusters:
                log(f"watch cells: {name}")
                w, p = watch_cells(procs, run_dir, name)
                watch[name] = w
                problems += p
        if LEASE_SELECTED:
            if not os.access(LEASE_LOAD, os.X_OK):
                raise BenchError(f"{LEASE_LOAD} not found; make bench builds it")
            for name, c in clusters.items():
                for n in c.nodes:  # fresh clusters, the machine to themselves
                    if n["proc"] is not None and n["proc"].poll() is None:
                        os.killpg(n["proc"].pid, signal.SIGTERM)
                        n["proc"].wait(timeout=30)
            for cell in LEASE_SELECTED:
                name = LEASE_CELLS[cell]
                log(f"lease cell {cell}: {LEASE_COUNT} leases of {LEASE_TTL_S} s on {name}")
                lc, p = lease_cell(procs, run_dir, name)
                leases[name] = lc
                problems += p
    except BenchError as e:
        log(f"bench: {e}")
        status = 130 if STOP.is_set() else 2
    finally:
        STOP.set()
        log("stopping every process")
        procs.stop_all()
    try:
        if status == 2:
            for f in sorted(os.listdir(run_dir)):
                if f.endswith(".log") and f != "wrk.log":
                    with open(os.path.join(run_dir, f), errors="replace") as fh:
                        tail = fh.readlines()[-8:]
                    print(f"--- last lines of {f}:\n" + "".join(tail), end="")
        if status in (0, 2) and (res or fo or mem or watch or leases):
            # A run that could not finish prints what it has but keeps the last report.
            text = write_report(info, res, fo, mem, problems, run_dir, save=status == 0,
                                watch=watch, leases=leases)
            print()
            print(text)
            if status == 0:
                log(f"wrote {os.path.join(OUT, 'latest.md')}, latest.png, latest.json")
    finally:
        if KEEP:
            log(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    if problems:
        log(f"bench: {len(problems)} correctness problems; first: {problems[0]}")
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
