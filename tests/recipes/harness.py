"""What the recipe tests share: a 3-node raftkv cluster (tests/nemesis/cluster.py, so each
node runs under its own uid with --pdeathsig), client processes (client.py) in their own
process groups that die with the test, the faults on both, a watch reader, and teardown
that runs on every exit path.
"""

import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "nemesis"))
sys.path.insert(0, HERE)

from cluster import Cluster, SetupError  # noqa: E402  (tests/nemesis)
from recipes import Client, Unavailable, watch_path  # noqa: E402

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: the client gets SIGKILL when the test's main thread dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Proc:
    def __init__(self, name: str, argv: List[str], log_dir: str):
        self.name = name
        self.argv = argv
        self.log_dir = log_dir
        self.popen: Optional[subprocess.Popen] = None
        self.paused = False
        self.incarnation = 0
        self.logs: List[str] = []
        self.exits: List[str] = []  # exits the test did not cause

    def start(self):
        self.incarnation += 1
        log = os.path.join(self.log_dir, "%s.%d.jsonl" % (self.name, self.incarnation))
        err = open(os.path.join(self.log_dir, "%s.%d.stderr" % (self.name, self.incarnation)), "w")
        self.logs.append(log)
        self.popen = subprocess.Popen(self.argv + ["--log", log], stdin=subprocess.DEVNULL,
                                      stdout=err, stderr=err, start_new_session=True,
                                      preexec_fn=_die_with_parent)
        err.close()
        self.paused = False

    def signal_group(self, sig):
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)
        self.popen = None
        self.paused = False

    def pause(self):
        self.signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.signal_group(signal.SIGCONT)
        self.paused = False

    def stop(self, grace_s: float = 4.0):
        """SIGCONT + SIGTERM, then SIGKILL the group after grace_s."""
        if self.popen is None:
            return
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        self.signal_group(signal.SIGKILL)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.popen = None

    def poll_exit(self) -> bool:
        """True (and recorded) if it exited without the test asking."""
        if self.popen is not None and self.popen.poll() is not None:
            rc = self.popen.returncode
            err = os.path.join(self.log_dir, "%s.%d.stderr" % (self.name, self.incarnation))
            with open(err) as f:
                tail = f.read()[-2000:]
            self.exits.append("%s (incarnation %d) exited with %s:\n%s"
                              % (self.name, self.incarnation, rc, tail))
            self.popen = None
            return True
        return False


def read_records(proc: Proc) -> List[dict]:
    out = []
    for path in proc.logs:
        try:
            with open(path) as f:
                for line in f:
                    if line.endswith("\n"):
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
    return out


class Run:
    """One test run: the cluster, the client processes, the fault log. Use as a context
    manager: everything is stopped on exit, whatever happened."""

    def __init__(self, binary: str, workdir: str, seed: int, uid_base: int):
        self.workdir = os.path.abspath(workdir)
        self.seed = seed
        self.rng = random.Random(seed)
        self.t0 = time.monotonic()
        self.faults: List[tuple] = []  # (t, text)
        self.procs: Dict[str, Proc] = {}
        self.cluster = Cluster(binary, 3, os.path.join(self.workdir, "cluster"), uid_base,
                               ["--request-timeout-ms=1500"], self.say)
        self.endpoints: List[str] = []
        self.failed = False

    def say(self, msg: str):
        print("[%7.3f] %s" % (time.monotonic() - self.t0, msg), flush=True)

    def fault(self, text: str):
        self.faults.append((time.monotonic(), text))
        self.say("fault: " + text)

    def __enter__(self):
        os.makedirs(self.workdir, exist_ok=True)
        Cluster.remove_leftover_node_dirs(self.say)
        self.cluster.start()
        self.endpoints = ["127.0.0.1:%d" % n.http_port for n in self.cluster.nodes.values()]
        # The clients append to their logs: a directory left by an earlier run would mix
        # its records into this run's.
        self.clients_dir = os.path.join(self.workdir, "clients")
        shutil.rmtree(self.clients_dir, ignore_errors=True)
        os.makedirs(self.clients_dir)
        self.say("cluster up: %s (seed %d)" % (" ".join(self.endpoints), self.seed))
        return self

    def __exit__(self, *exc):
        for p in self.procs.values():
            try:
                p.stop(grace_s=0.5)
            except Exception as e:  # keep stopping the others
                print("stopping %s: %r" % (p.name, e))
        self.cluster.stop_all()
        if exc[0] is None and not self.failed:
            self.cluster.remove_node_dirs()
        else:
            self.say("kept node directories: %s" % self.cluster.keep_node_dirs())
        return False

    def add_client(self, name: str, mode: str, extra: List[str]):
        argv = [sys.executable, "-B", os.path.join(HERE, "client.py"), mode,
                "--endpoints", ",".join(self.endpoints), "--name", name] + extra
        p = Proc(name, argv, self.clients_dir)
        self.procs[name] = p
        p.start()
        return p

    def stop_clients(self):
        for p in self.procs.values():
            p.stop()

    def check_clients(self):
        """Restarts clients that exited on their own (recorded: the run fails)."""
        for p in self.procs.values():
            if p.poll_exit():
                self.say("client %s exited on its own" % p.name)
                p.start()

    def check_nodes(self):
        for i in self.cluster.poll_crashes():
            self.say("node%d exited on its own; restarting" % i)
            self.cluster.start_node(i)

    def sleep(self, seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check_clients()
            self.check_nodes()
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    # --- raftkv faults ----------------------------------------------------------------

    def leader_node(self) -> Optional[int]:
        return self.cluster.leader()

    def kill_raftkv_leader(self, down_s: float):
        i = self.leader_node() or self.rng.randint(1, 3)
        self.fault("SIGKILL raftkv node%d (the leader), down %.1f s" % (i, down_s))
        self.cluster.kill(i)
        self.sleep(down_s)
        self.cluster.start_node(i)
        self.fault("restart raftkv node%d" % i)

    def pause_raftkv_leader(self, paused_s: float):
        i = self.leader_node() or self.rng.randint(1, 3)
        self.fault("SIGSTOP raftkv node%d (the leader) for %.1f s" % (i, paused_s))
        self.cluster.pause(i)
        self.sleep(paused_s)
        self.cluster.resume(i)
        self.fault("SIGCONT raftkv node%d" % i)

    def heal(self):
        for i in self.cluster.nodes:
            self.cluster.resume(i)
        for i, n in self.cluster.nodes.items():
            if n.proc is None:
                self.cluster.start_node(i)
        for p in self.procs.values():
            p.resume()

    def wait_healthy(self, timeout_s: float = 30):
        self.cluster.wait_healthy(timeout_s)

    # --- reading ------------------------------------------------------------------------

    def holder(self, prefix: str) -> Optional[dict]:
        """The key with the lowest create_revision under prefix (value: the client's name),
        by a linearizable range; None if there is none or no answer within 1 s."""
        try:
            status, obj = Client(self.endpoints, timeout_s=0.5).call(
                "GET", "/v1/kv/%s?prefix" % prefix, deadline_s=1.0)
        except Unavailable:
            return None
        if status != 200 or not obj["kvs"]:
            return None
        return min(obj["kvs"], key=lambda kv: kv["create_revision"])

    def current_revision(self) -> int:
        status, obj = Client(self.endpoints).call("GET", "/v1/kv/recipes/?prefix&count_only",
                                                  deadline_s=30)
        assert status == 200, (status, obj)
        return obj["revision"]


def read_history(endpoints: List[str], key: str, prefix: bool, upto: int,
                 deadline_s: float = 30) -> List[dict]:
    """Every event on key (or under prefix) from revision 1 to `upto`, by long polls, as
    [{"revision": R, "type": .., "kv": ..}]; raises if the history is not complete."""
    client = Client(endpoints, timeout_s=3.0)
    events, rev = [], 1
    end = time.monotonic() + deadline_s
    while rev <= upto:
        if time.monotonic() > end:
            raise RuntimeError("history of %s: stuck at revision %d of %d" % (key, rev, upto))
        params = {"rev": rev, "wait": "200ms"}
        if prefix:
            params["prefix"] = True
        status, obj = client.call("GET", watch_path(key, **params), deadline_s=10)
        if status == 410:
            raise RuntimeError("history of %s from revision %d compacted: %s" % (key, rev, obj))
        if status != 200:
            raise RuntimeError("watch %s: %d %s" % (key, status, obj))
        for e in obj["events"]:
            if e["kv"]["mod_revision"] <= upto:
                events.append(dict(e, revision=e["kv"]["mod_revision"]))
        rev = obj["revision"] + 1
    return events
