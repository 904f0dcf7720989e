#!/usr/bin/env python3
"""A browser follows a watch with EventSource, across a restart of the node it watches.

Issue 12: Chromium (Debian's `chromium`, headless, driven through `chromedriver`'s W3C
WebDriver HTTP API) opens an EventSource on /v1/watch of one node of a 3-node raftkv
cluster. The test writes keys through the leader, restarts the watched node (SIGTERM: the
stream ends with `canceled: shutdown`), writes more while it is down, starts it again and
writes more. The page's EventSource reconnects by itself, sending Last-Event-ID (the
revision of the last event it received), and must end up with every write exactly once,
in revision order.

The page is served by this script from another port (another origin), so raftkv runs with
--cors-origins naming it. Standard library only. Every process (nodes, chromedriver and the
browser under it) is stopped on exit, also on failure.
"""

import argparse
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>raftkv watch</title></head><body>
<pre id="log"></pre>
<script>
const src = new URLSearchParams(location.search).get("src");
window.received = [];  // [revision, type, key, value, lastEventId]
window.cancels = [];
window.opens = 0;
window.errors = 0;
const es = new EventSource(src);
es.onopen = () => { window.opens++; };
es.onerror = () => { window.errors++; };
es.onmessage = (m) => {
  const o = JSON.parse(m.data);
  if (o.type === "events") {
    for (const e of o.events) {
      window.received.push([o.revision, e.type, e.kv.key, e.kv.value || "", m.lastEventId]);
    }
  } else if (o.type === "canceled") {
    window.cancels.push(o.reason);
  }
  document.getElementById("log").textContent += m.data + "\\n";
};
</script></body></html>
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_until(what, cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class Cluster:
    def __init__(self, binary, workdir, cors):
        self.binary, self.workdir, self.cors = binary, workdir, cors
        self.nodes = []
        for i in range(3):
            self.nodes.append({"name": "n%d" % i, "raft": free_port(), "http": free_port(),
                               "dir": os.path.join(workdir, "n%d" % i), "proc": None})

    def start(self, i, first=False):
        n = self.nodes[i]
        args = [self.binary, "--id", n["name"], "--bind", "127.0.0.1:%d" % n["raft"],
                "--http", "127.0.0.1:%d" % n["http"], "--datadir", n["dir"],
                "--cors-origins", self.cors]
        if first and i == 0:
            args.append("--bootstrap")
        elif first:
            args += ["--join", "127.0.0.1:%d" % self.nodes[0]["http"]]
        log = open(os.path.join(self.workdir, n["name"] + ".log"), "a")
        n["proc"] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(n["name"] + " to serve", lambda: self.status(i).get("admitted"), 20)

    def status(self, i):
        return request("GET", "http://127.0.0.1:%d/status" % self.nodes[i]["http"], timeout=2)[1]

    def leader_port(self):
        def find():
            for i, n in enumerate(self.nodes):
                if n["proc"] is None:
                    continue
                try:
                    st = self.status(i)
                except OSError:
                    continue
                if st.get("role") == "Leader":
                    return n["http"]
            return None
        return wait_until("a leader", find, 20)

    def stop(self, i, sig=signal.SIGTERM):
        p = self.nodes[i]["proc"]
        if p is None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.nodes[i]["proc"] = None

    def stop_all(self):
        for i in range(len(self.nodes)):
            self.stop(i, signal.SIGKILL)


class WebDriver:
    """Just enough of the W3C WebDriver protocol: a session, a page, a script."""

    def __init__(self, driver_bin, browser_bin, workdir):
        self.port = free_port()
        self.log = open(os.path.join(workdir, "chromedriver.log"), "w")
        self.proc = subprocess.Popen([driver_bin, "--port=%d" % self.port],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.base = "http://127.0.0.1:%d" % self.port
        wait_until("chromedriver", lambda: request("GET", self.base + "/status")[1]
                   .get("value", {}).get("ready"), 20)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser_bin,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--user-data-dir=" +
                         os.path.join(workdir, "profile")]}}}}
        status, r = request("POST", self.base + "/session", caps, timeout=60)
        if status != 200:
            raise AssertionError("no browser session: %s" % r)
        self.session = self.base + "/session/" + r["value"]["sessionId"]

    def get(self, url):
        status, r = request("POST", self.session + "/url", {"url": url}, timeout=30)
        assert status == 200, r

    def js(self, script):
        status, r = request("POST", self.session + "/execute/sync",
                            {"script": script, "args": []}, timeout=30)
        assert status == 200, r
        return r["value"]

    def quit(self):
        try:
            request("DELETE", self.session, timeout=10)
        except Exception:  # noqa: BLE001 - best effort; the process is killed next
            pass
        self.proc.kill()
        self.proc.wait()


def serve_page(port):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raftkv", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = ap.parse_args()
    for b in (args.chromium, args.chromedriver):
        if not shutil.which(b):
            print("sse_test: %s is missing: scripts/install-deps.sh installs Debian's chromium "
                  "and chromium-driver" % b, file=sys.stderr)
            return 1
    workdir = tempfile.mkdtemp(prefix="raftkv-sse-")
    page_port = free_port()
    origin = "http://127.0.0.1:%d" % page_port
    cluster = Cluster(args.raftkv, workdir, origin)
    page = driver = None
    ok = False
    try:
        for i in range(3):
            cluster.start(i, first=True)
        page = serve_page(page_port)
        leader = cluster.leader_port()
        status, r = request("GET", "http://127.0.0.1:%d/v1/kv/?prefix&count_only" % leader)
        assert status == 200, r
        start = r["revision"] + 1
        # Watch a node that is not the leader, so that writes go on while it restarts.
        watched = next(i for i, n in enumerate(cluster.nodes) if n["http"] != leader)
        src = "http://127.0.0.1:%d/v1/watch/sse/?prefix&progress=1s&rev=%d" % (
            cluster.nodes[watched]["http"], start)
        driver = WebDriver(args.chromedriver, args.chromium, workdir)
        driver.get(origin + "/page.html?src=" + urllib.request.quote(src, safe=""))
        wait_until("the EventSource to open", lambda: driver.js("return window.opens") >= 1, 20)

        written = []  # [revision, key, value]

        def write(n):
            for _ in range(n):
                k = "sse/k%d" % (len(written) % 7)
                v = "v%d" % len(written)
                port = cluster.leader_port()
                status, r = request("PUT", "http://127.0.0.1:%d/v1/kv/%s" % (port, k),
                                    {"value": v})
                assert status == 200, r
                written.append([r["revision"], k, v])

        def received():
            return driver.js("return window.received")

        write(20)
        wait_until("20 events in the browser", lambda: len(received()) >= 20, 20)
        cluster.stop(watched)  # SIGTERM: the stream ends with canceled: shutdown.
        write(20)  # While the watched node is down.
        cluster.start(watched)
        write(10)
        wait_until("50 events in the browser", lambda: len(received()) >= 50, 30)
        got = received()
        want = [[rev, "put", k, v, str(rev)] for rev, k, v in written]
        if got != want:
            print("sse_test: the browser's events differ from the writes:\n got  %s\n want %s"
                  % (got, want), file=sys.stderr)
            return 1
        opens = driver.js("return window.opens")
        cancels = driver.js("return window.cancels")
        if opens < 2 or "shutdown" not in cancels:
            print("sse_test: expected a reconnect after canceled: shutdown; opens=%d cancels=%s"
                  % (opens, cancels), file=sys.stderr)
            return 1
        print("sse_test: %d events received exactly once, in order, across a restart of the "
              "watched node (%d opens, cancels %s)" % (len(got), opens, cancels))
        ok = True
        return 0
    finally:
        if driver:
            driver.quit()
        if page:
            page.shutdown()
        cluster.stop_all()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("sse_test: logs kept in " + workdir, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
