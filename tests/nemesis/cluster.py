"""A cluster of real raftkv processes on 127.0.0.1, each under its own Unix uid, and the
firewall that partitions them.

Each node runs as its own uid (no /etc/passwd entry is needed or created: the uid is a
number, by default 46001..46005, checked to be unused), through
`setpriv --reuid U --regid U --clear-groups --pdeathsig KILL`, so that:
  * iptables can tell its packets apart (`-m owner --uid-owner U`): a partition is a set
    of rules "packets from uid(A) to 127.0.0.1:port(B) are dropped", for B's Raft and HTTP
    ports. raftkv's peer transport opens one outbound connection per peer and never writes
    on an inbound one (src/transport/transport.h), and a follower forwards writes to the
    leader over its own HTTP client connections (src/server/forwarder.h), so one rule set
    A -> B cuts exactly the direction A to B. Answers on an inbound connection leave from
    B's port to A's ephemeral port and are not matched: a connection already open in the
    allowed direction keeps working.
  * a node dies with the nemesis (PR_SET_PDEATHSIG, set after the uid change; the node is
    started from the nemesis's main thread, whose exit is what the kernel watches).
The nemesis itself runs as root and is matched by no rule: clients reach every node.

The rules live in a chain of their own, RKVNEM-<pid>, jumped to from OUTPUT; it is removed
on exit (atexit, SIGTERM/SIGINT handlers) and chains left by a nemesis that died (SIGKILL)
are removed at the next start. Every iptables call uses -w (wait for the xtables lock).
"""

import json
import os
import pwd
import re
import shutil
import tempfile
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Dict, List, Optional

CHAIN_PREFIX = "RKVNEM-"


class SetupError(Exception):
    """The machine cannot run the nemesis (not root, no iptables, uid taken...)."""


def free_ports(count: int) -> List[int]:
    """Ports that are free on 127.0.0.1 now (bound together, then released)."""
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


# The nodes' own directory under the system's temporary directory (Cluster).
NODES_ROOT_PREFIX = "raftkv-nemesis-nodes-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purpose.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Firewall:
    """iptables rules in a chain of this process's own; see the module comment."""

    def __init__(self, log):
        self.chain = "%s%d" % (CHAIN_PREFIX, os.getpid())
        self.log = log
        self.installed = False
        self.rules = 0

    @staticmethod
    def probe():
        """Raises SetupError with a clear message if partitions cannot be built here."""
        if os.geteuid() != 0:
            raise SetupError("the nemesis must run as root: it runs each node under its own "
                             "uid and partitions them with iptables owner rules")
        if shutil.which("iptables") is None:
            raise SetupError("iptables not found: install the Debian package 'iptables' "
                             "(scripts/install-deps.sh does)")
        if shutil.which("setpriv") is None:
            raise SetupError("setpriv not found (Debian package util-linux)")
        r = subprocess.run(["iptables", "-w", "-S", "OUTPUT"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SetupError("iptables cannot read the OUTPUT chain: %s" % r.stderr.strip())

    @staticmethod
    def _ipt(*args, check=True):
        r = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True,
                           timeout=30)
        if check and r.returncode != 0:
            raise SetupError("iptables %s: %s" % (" ".join(args), r.stderr.strip()))
        return r

    @classmethod
    def remove_leftovers(cls, log):
        """Removes RKVNEM-<pid> chains whose nemesis is gone."""
        out = cls._ipt("-S", check=False).stdout
        chains = set(re.findall(r"^-N (%s(\d+))$" % CHAIN_PREFIX, out, re.M))
        for chain, pid in chains:
            if int(pid) != os.getpid() and not _pid_alive(int(pid)):
                log("removing the iptables chain %s left by a dead nemesis" % chain)
                cls._drop_chain(chain)

    @classmethod
    def _drop_chain(cls, chain):
        for _ in range(10):  # the jump may have been added more than once
            if cls._ipt("-D", "OUTPUT", "-j", chain, check=False).returncode != 0:
                break
        cls._ipt("-F", chain, check=False)
        cls._ipt("-X", chain, check=False)

    def install(self):
        self._drop_chain(self.chain)
        self._ipt("-N", self.chain)
        self.installed = True
        self._ipt("-I", "OUTPUT", "1", "-j", self.chain)

    def self_test(self, uid: int):
        """Checks that a rule of this chain stops a connection from `uid` and that healing
        lets it through again (raises SetupError otherwise): a kernel without the owner
        match, or a firewall that ignores loopback, would make every partition a no-op."""
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            srv.bind(("127.0.0.1", 0))
            srv.listen(8)
            port = srv.getsockname()[1]
            code = ("import socket,sys\n"
                    "s=socket.socket(); s.settimeout(5)\n"
                    "try:\n s.connect(('127.0.0.1',%d)); print('connected')\n"
                    "except OSError as e: print('refused', e)\n" % port)

            def attempt():
                r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid,
                                    "--clear-groups", "--", sys.executable, "-c", code],
                                   capture_output=True, text=True, timeout=20)
                return r.stdout.strip() or r.stderr.strip()

            self.block(uid, [port], "reject")
            blocked = attempt()
            self.heal()
            healed = attempt()
        finally:
            srv.close()
        if not blocked.startswith("refused") or healed != "connected":
            raise SetupError("iptables owner rules do not partition here: with a rule, a "
                             "connection from uid %d gave %r; without, %r"
                             % (uid, blocked, healed))

    def block(self, src_uid: int, dst_ports: List[int], mode: str):
        """Packets from src_uid to 127.0.0.1:dst_ports are dropped (mode "drop") or answered
        with a TCP reset (mode "reject": the sender sees a refused or reset connection)."""
        target = ["DROP"] if mode == "drop" else ["REJECT", "--reject-with", "tcp-reset"]
        for port in dst_ports:
            self._ipt("-A", self.chain, "-p", "tcp", "-d", "127.0.0.1", "--dport", str(port),
                      "-m", "owner", "--uid-owner", str(src_uid), "-j", *target)
            self.rules += 1

    def heal(self):
        if self.installed:
            self._ipt("-F", self.chain, check=False)
        self.rules = 0

    def remove(self):
        if self.installed:
            self._drop_chain(self.chain)
            self.installed = False

    def listing(self) -> str:
        return self._ipt("-S", self.chain, check=False).stdout


class Node:
    def __init__(self, idx: int, uid: int, raft_port: int, http_port: int, datadir: str,
                 log_path: str):
        self.idx = idx
        self.name = "node%d" % idx
        self.uid = uid
        self.raft_port = raft_port
        self.http_port = http_port
        self.datadir = datadir
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None
        self.paused = False
        self.expected_down = False  # killed by the nemesis
        self.starts = 0


class Cluster:
    def __init__(self, binary: str, n: int, workdir: str, uid_base: int, raftkv_args: List[str],
                 log):
        self.source_binary = os.path.abspath(binary)
        self.n = n
        self.workdir = os.path.abspath(workdir)
        self.raftkv_args = raftkv_args
        self.log = log
        self.crashes: List[str] = []  # nodes that exited without being killed
        for i in range(n):
            uid = uid_base + i
            try:
                pwd.getpwuid(uid)
                raise SetupError("uid %d is taken by user %r; pick another --uid-base"
                                 % (uid, pwd.getpwuid(uid).pw_name))
            except KeyError:
                pass
        ports = free_ports(2 * n)
        # The nodes run under their own uids, which may not reach into the
        # checkout (a clone made with mktemp -d is 0700): their binary and
        # data directories live in a directory of their own under the
        # system's temporary directory: removed after a passing run, kept
        # (with a KEPT marker) after a failing one, and removed by a later
        # run if its nemesis died without either (remove_leftover_node_dirs).
        # Logs stay in the work directory (root writes them).
        self.nodes_root = tempfile.mkdtemp(prefix="%s%d-" % (NODES_ROOT_PREFIX, os.getpid()))
        self.binary = os.path.join(self.nodes_root, "raftkv")
        self.nodes: Dict[int, Node] = {}
        for i in range(1, n + 1):
            self.nodes[i] = Node(i, uid_base + i - 1, ports[2 * i - 2], ports[2 * i - 1],
                                 os.path.join(self.nodes_root, "node%d" % i),
                                 os.path.join(self.workdir, "node%d.log" % i))

    # --- processes -------------------------------------------------------------

    def prepare_dirs(self):
        if os.path.exists(self.workdir):
            shutil.rmtree(self.workdir)
        os.makedirs(self.workdir, mode=0o755)
        os.chmod(self.nodes_root, 0o711)
        for node in self.nodes.values():
            if os.path.exists(node.datadir):
                shutil.rmtree(node.datadir)
            os.makedirs(node.datadir, mode=0o700)
            os.chown(node.datadir, node.uid, node.uid)
        # The node's uid must be able to reach and run the binary: a copy
        # beside the data directories.
        shutil.copyfile(self.source_binary, self.binary)
        os.chmod(self.binary, 0o755)

    def start_node(self, i: int):
        """Starts node i on its data directory (must be called from the main thread: the
        node is killed when the thread that started it exits)."""
        node = self.nodes[i]
        assert node.proc is None
        args = ["setpriv", "--reuid=%d" % node.uid, "--regid=%d" % node.uid, "--clear-groups",
                "--pdeathsig", "KILL", "--", self.binary,
                "--id", node.name,
                "--bind", "127.0.0.1:%d" % node.raft_port,
                "--http", "127.0.0.1:%d" % node.http_port,
                "--datadir", node.datadir]
        # Ignored by raftkv on an existing data directory (a restart).
        if i == 1:
            args.append("--bootstrap")
        else:
            args += ["--join", "127.0.0.1:%d" % self.nodes[1].http_port]
        args += self.raftkv_args
        with open(node.log_path, "ab") as logf:
            logf.write(("=== nemesis: start %d: %s\n" % (node.starts + 1, " ".join(args)))
                       .encode())
            logf.flush()
            node.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, cwd=node.datadir)
        node.starts += 1
        node.paused = False
        node.expected_down = False

    def kill(self, i: int):
        node = self.nodes[i]
        if node.proc is None:
            return
        node.expected_down = True
        node.proc.send_signal(signal.SIGKILL)
        try:
            node.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise RuntimeError("%s did not die within 10 s of SIGKILL" % node.name)
        node.proc = None
        node.paused = False

    def pause(self, i: int):
        node = self.nodes[i]
        if node.proc is not None and not node.paused:
            node.proc.send_signal(signal.SIGSTOP)
            node.paused = True

    def resume(self, i: int):
        node = self.nodes[i]
        if node.proc is not None and node.paused:
            node.proc.send_signal(signal.SIGCONT)
            node.paused = False

    def poll_crashes(self) -> List[int]:
        """Nodes that exited on their own since the last call (a bug: raftkv asserts, or
        refused to start). Records them with the tail of their log."""
        out = []
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is not None:
                rc = node.proc.returncode
                node.proc = None
                self.crashes.append("%s exited on its own with status %s; log tail:\n%s"
                                    % (node.name, rc, self.log_tail(node.idx)))
                out.append(node.idx)
        return out

    def log_tail(self, i: int, lines: int = 25) -> str:
        try:
            with open(self.nodes[i].log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join("    " + l for l in text[-lines:])
        except OSError as e:
            return "    (no log: %s)" % e

    def stop_all(self):
        """SIGCONT then SIGKILL every node; waits for them. Safe to call twice."""
        for node in self.nodes.values():
            if node.proc is not None:
                try:
                    node.proc.send_signal(signal.SIGCONT)
                    node.proc.send_signal(signal.SIGKILL)
                    node.proc.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
                node.proc = None
                node.paused = False

    def remove_node_dirs(self):
        """After a passing run: the nodes' binary copy and data directories go."""
        shutil.rmtree(self.nodes_root, ignore_errors=True)

    def keep_node_dirs(self) -> str:
        """After a failing run (or --keep): marks the node directories as kept, so that no
        later run removes them; returns their path."""
        with open(os.path.join(self.nodes_root, "KEPT"), "w") as f:
            f.write("kept by nemesis pid %d\n" % os.getpid())
        return self.nodes_root

    @staticmethod
    def remove_leftover_node_dirs(log):
        """Removes node directories of a nemesis that died (SIGKILL) before it could remove
        or keep them."""
        tmp = tempfile.gettempdir()
        for name in os.listdir(tmp):
            m = re.match(r"%s(\d+)-" % re.escape(NODES_ROOT_PREFIX), name)
            path = os.path.join(tmp, name)
            if (m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1)))
                    and not os.path.exists(os.path.join(path, "KEPT"))):
                log("removing node directories %s left by a dead nemesis" % path)
                shutil.rmtree(path, ignore_errors=True)

    # --- observation -------------------------------------------------------------

    def status(self, i: int, timeout_s: float = 0.5) -> Optional[dict]:
        node = self.nodes[i]
        if node.proc is None or node.paused:
            return None
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/status" % node.http_port,
                                        timeout=timeout_s) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def leader(self) -> Optional[int]:
        """The node that says it leads in the highest term, if any answers so."""
        best, best_term = None, -1
        for i in self.nodes:
            s = self.status(i)
            if s and s.get("role") == "Leader" and s.get("term", -1) > best_term:
                best, best_term = i, s["term"]
        return best

    def wait_until(self, what: str, cond, timeout_s: float, interval_s: float = 0.1):
        """Polls cond() until it returns a true value (returned) or the deadline passes
        (raises RuntimeError naming `what`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() >= deadline:
                raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout_s, what))
            time.sleep(interval_s)

    def start(self, timeout_s: float = 60):
        """Starts a fresh cluster: node1 bootstraps, the others join it; returns once every
        node is a voter and every node knows the leader."""
        self.prepare_dirs()
        self.start_node(1)
        self.wait_until("node1 to lead", lambda: self.leader() == 1, timeout_s)
        for i in range(2, self.n + 1):
            self.start_node(i)
        self.wait_until("every node to join as a voter", self._all_voters, timeout_s)
        self.wait_until("every node to know the leader", self._all_know_leader, timeout_s)

    def _all_voters(self):
        self._raise_on_crash()
        s = self.status(1)
        if not s:
            return False
        members = s.get("members", [])
        return len(members) == self.n and all(m.get("role") == "voter" for m in members)

    def _all_know_leader(self):
        self._raise_on_crash()
        for i in self.nodes:
            s = self.status(i)
            if not s or not s.get("leader"):
                return False
        return True

    def _raise_on_crash(self):
        if self.poll_crashes():
            raise RuntimeError("a node exited during startup:\n" + "\n".join(self.crashes))

    def wait_healthy(self, timeout_s: float):
        """Every node runs, answers /status and knows a leader."""
        self.wait_until("every node to be up and know the leader", self._all_know_leader,
                        timeout_s)
