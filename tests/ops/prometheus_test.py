"""/metrics against the real tools (issue 14): Debian's `promtool check metrics` must
accept every node's page, and a real Prometheus server scraping a 3-node cluster must
answer, through its query API, that exactly one node is leader, that the leader-change
counter rises after the leader is SIGKILLed, and that the write counter moves with a load.

Standard library only. Every process it starts is in its own process group, gets SIGKILL
when this test dies (PR_SET_PDEATHSIG), and is stopped on every exit path. Exits 0 on
success, 1 on a failed check (naming it), 2 when a tool is missing (install-deps.sh installs
the `prometheus` package; the test never skips).
"""

import argparse
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

PR_SET_PDEATHSIG = 1


def die_with_parent():
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_ports(n):
    """Ports in [20000, 32000) that nothing listens on now (below the ephemeral range)."""
    ports, tried = [], set()
    for p in range(20000 + (os.getpid() * 7) % 11000, 32000):
        if len(ports) == n:
            break
        if p in tried:
            continue
        tried.add(p)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
    if len(ports) < n:
        raise SystemExit("no free ports")
    return ports


def request(port, method, path, body=None, timeout=3.0):
    """(status, body text); (0, error) when the node does not answer."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        out = (r.status, r.read().decode("utf-8", "replace"))
        c.close()
        return out
    except (OSError, http.client.HTTPException) as e:
        return 0, repr(e)


def wait_until(what, cond, timeout_s, interval_s=0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout_s, what))
        time.sleep(interval_s)


class Node:
    def __init__(self, binary, name, raft_port, http_port, workdir):
        self.binary, self.name = binary, name
        self.raft_port, self.http_port = raft_port, http_port
        self.datadir = os.path.join(workdir, name)
        self.log = os.path.join(workdir, name + ".log")
        self.proc = None

    def start(self, bootstrap=False, join=None):
        args = [self.binary, "--id", self.name, "--bind", "127.0.0.1:%d" % self.raft_port,
                "--http", "127.0.0.1:%d" % self.http_port, "--datadir", self.datadir]
        if bootstrap:
            args.append("--bootstrap")
        if join:
            args += ["--join", join]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         preexec_fn=die_with_parent)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def status(self):
        st, body = request(self.http_port, "GET", "/status", timeout=1.0)
        return json.loads(body) if st == 200 else None


class Prometheus:
    def __init__(self, workdir, port, targets):
        self.port = port
        self.dir = os.path.join(workdir, "prometheus")
        os.makedirs(self.dir, exist_ok=True)
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                    "scrape_configs:\n  - job_name: raftkv\n    static_configs:\n"
                    "      - targets: [%s]\n" % ", ".join("'%s'" % t for t in targets))
        self.log = os.path.join(self.dir, "prometheus.log")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["prometheus", "--config.file", config, "--storage.tsdb.path",
                 os.path.join(self.dir, "data"), "--web.listen-address",
                 "127.0.0.1:%d" % port],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def query(self, q):
        """The instant vector of query q, as [(labels, float)]; None if Prometheus did not answer."""
        st, body = request(self.port, "GET", "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
        if st != 200:
            return None
        d = json.loads(body)
        if d.get("status") != "success":
            raise AssertionError("query %r: %s" % (q, body))
        return [(r["metric"], float(r["value"][1])) for r in d["data"]["result"]]

    def scalar(self, q):
        r = self.query(q)
        return r[0][1] if r else None


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok: " + what, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raftkv", required=True)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    for tool in ("promtool", "prometheus"):
        if shutil.which(tool) is None:
            print("CANNOT RUN: %s is missing (Debian's prometheus package; "
                  "scripts/install-deps.sh installs it)" % tool, file=sys.stderr)
            return 2
    workdir = args.workdir or tempfile.mkdtemp(prefix="raftkv-prom-")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    ports = free_ports(7)
    nodes = [Node(args.raftkv, "node%d" % (i + 1), ports[2 * i], ports[2 * i + 1], workdir)
             for i in range(3)]
    prom = None
    try:
        nodes[0].start(bootstrap=True)
        wait_until("node1 to lead", lambda: (nodes[0].status() or {}).get("role") == "Leader", 20)
        for n in nodes[1:]:
            n.start(join="127.0.0.1:%d" % nodes[0].http_port)
        wait_until("3 voters that know the leader", lambda: all(
            (n.status() or {}).get("leader") and
            sum(m["role"] == "voter" for m in n.status()["members"]) == 3 for n in nodes), 30)

        # 1. promtool accepts every node's page.
        for n in nodes:
            st, page = request(n.http_port, "GET", "/metrics")
            check(st == 200, "%s answers /metrics" % n.name)
            p = subprocess.run(["promtool", "check", "metrics"], input=page, text=True,
                               capture_output=True, timeout=30)
            if p.returncode != 0:
                raise AssertionError("promtool check metrics rejects %s's page:\n%s%s" %
                                     (n.name, p.stdout, p.stderr))
            print("ok: promtool check metrics accepts %s (%d lines, %d series)%s" % (
                n.name, page.count("\n"),
                sum(1 for line in page.splitlines() if line and not line.startswith("#")),
                (": " + (p.stdout + p.stderr).strip()) if (p.stdout + p.stderr).strip() else ""),
                flush=True)

        # 2. A real Prometheus scrapes the cluster.
        prom = Prometheus(workdir, ports[6], ["127.0.0.1:%d" % n.http_port for n in nodes])
        wait_until("Prometheus to scrape all 3 nodes",
                   lambda: prom.scalar("count(up{job='raftkv'} == 1)") == 3, 60, 0.5)
        leaders = wait_until("one leader in Prometheus",
                             lambda: (lambda r: r if r is not None and len(r) == 1 else None)(
                                 prom.query("raftkv_server_is_leader == 1")), 30, 0.5)
        check(prom.scalar("sum(raftkv_server_is_leader)") == 1,
              "sum(raftkv_server_is_leader) == 1, the leader being %s" % leaders[0][0]["instance"])

        # 3. The write counter moves with a load.
        q_writes = ("sum(raftkv_http_requests_total{route='/v1/kv/{key}',method='PUT',"
                    "code='200'})")
        before = prom.scalar(q_writes) or 0.0
        conn = http.client.HTTPConnection("127.0.0.1", nodes[1].http_port, timeout=5)
        writes = 200
        for i in range(writes):
            conn.request("PUT", "/v1/kv/prom-%d" % i, body='{"value":"v"}',
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise AssertionError("write %d answered %d" % (i, r.status))
        conn.close()
        # A forwarded write counts on the follower and on the leader.
        after = wait_until("the write counter to rise by %d" % (2 * writes),
                           lambda: (lambda v: v if v is not None and v >= before + 2 * writes
                                    else None)(prom.scalar(q_writes)), 30, 0.5)
        check(after - before == 2 * writes, "%s rose from %.0f to %.0f with %d writes through "
              "a follower (each counted by the follower and the leader)" % (
                  q_writes, before, after, writes))
        fwd = prom.scalar("sum(raftkv_http_forwarded_total)")
        check(fwd is not None and fwd >= writes, "raftkv_http_forwarded_total = %s" % fwd)

        # 4. The leader-change counter rises after the leader is SIGKILLed.
        q_changes = "sum(raftkv_server_leader_changes_seen_total{instance!='%s'})"
        old = leaders[0][0]["instance"]
        old_node = [n for n in nodes if "127.0.0.1:%d" % n.http_port == old][0]
        changes_before = prom.scalar(q_changes % old)
        old_node.kill()
        changes_after = wait_until(
            "the survivors' leader_changes_seen_total to rise",
            lambda: (lambda v: v if v is not None and v > changes_before else None)(
                prom.scalar(q_changes % old)), 30, 0.5)
        check(changes_after > changes_before,
              "leader changes seen by the survivors: %.0f -> %.0f after SIGKILL of %s" % (
                  changes_before, changes_after, old_node.name))
        new_leader = wait_until("a new leader in Prometheus",
                                lambda: (lambda r: r if r is not None and len(r) == 1 and
                                         r[0][0]["instance"] != old else None)(
                                    prom.query("raftkv_server_is_leader == 1")), 30, 0.5)
        print("ok: Prometheus sees the new leader %s" % new_leader[0][0]["instance"], flush=True)
        print("PASS", flush=True)
        return 0
    except AssertionError as e:
        print("FAIL: %s" % e, file=sys.stderr, flush=True)
        for n in nodes:
            if os.path.exists(n.log):
                with open(n.log, errors="replace") as f:
                    print("--- %s ---\n%s" % (n.name, "".join(f.readlines()[-15:])),
                          file=sys.stderr)
        if prom and os.path.exists(prom.log):
            with open(prom.log, errors="replace") as f:
                print("--- prometheus ---\n%s" % "".join(f.readlines()[-15:]), file=sys.stderr)
        return 1
    finally:
        if prom:
            prom.stop()
        for n in nodes:
            n.kill()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
