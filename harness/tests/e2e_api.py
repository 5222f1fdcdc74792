#!/usr/bin/env python3
"""End-to-end checks of `faultgate proxy --api`: a small client written from
toxiproxy's documented HTTP API (README "HTTP API": paths, status codes,
JSON fields, {"error", "status"} bodies) drives faultgate, and each toxic's
effect is asserted at the socket level against an echo server: latency
against its value, reset_peer as ECONNRESET, limit_data closing after N
bytes, slicer's segments, timeout holding then closing, down and
enabled=false refusing, bandwidth slowing.  Also the faultgate toxic on a
connection that was open before it, toxicity draws under --seed, and the
loopback rule.

Usage: e2e_api.py BUILD_DIR SOURCE_DIR [TEST...]
Every wait has a deadline; every child is reaped.
"""
import errno
import json
import os
import re
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build"
FG = os.path.join(BUILD, "faultgate")
DEADLINE = 10.0


class Toxiproxy:
    """The calls toxiproxy's clients make, nothing faultgate-specific."""

    def __init__(self, base):
        self.base = base

    def call(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE) as r:
                text = r.read().decode()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, json.loads(text) if text else None

    def create(self, name, upstream, listen="127.0.0.1:0", enabled=True):
        return self.call("POST", "/proxies", {"name": name, "listen": listen,
                                              "upstream": upstream, "enabled": enabled})

    def add_toxic(self, proxy, type_, attributes, stream="downstream", name=None, toxicity=1.0):
        body = {"type": type_, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        if name:
            body["name"] = name
        return self.call("POST", "/proxies/%s/toxics" % proxy, body)


class Echo(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(DEADLINE)
        try:
            while True:
                b = self.request.recv(65536)
                if not b:
                    return
                self.request.sendall(b)
        except OSError:
            return


def start_api(*extra):
    p = subprocess.Popen([FG, "proxy", "--api", "127.0.0.1:0", *extra],
                         stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + DEADLINE
    lines = []
    while time.monotonic() < end:
        line = p.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"api listening on [0-9.]+:(\d+)", line)
        if m:
            # keep draining stderr so the child never blocks on it
            p.drain = threading.Thread(target=p.stderr.read, daemon=True)
            p.drain.start()
            return p, Toxiproxy("http://127.0.0.1:%s" % m.group(1))
    p.kill()
    p.wait(timeout=DEADLINE)
    raise AssertionError("faultgate proxy --api did not start: " + "".join(lines))


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=DEADLINE)
    p.drain.join(timeout=DEADLINE)
    p.stderr.close()
    return p.returncode


def port_of(proxy_json):
    return int(proxy_json["listen"].rsplit(":", 1)[1])


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    got = b""
    while len(got) < n:
        b = s.recv(n - len(got))
        if not b:
            break
        got += b
    return got


def recv_to_end(s):
    """Bytes until EOF or reset; (bytes, 'eof'|'reset')."""
    got = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return got, "eof"
            got += b
    except ConnectionResetError:
        return got, "reset"


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.echo = Echo(("127.0.0.1", 0), EchoHandler)
        cls.echo_thread = threading.Thread(target=cls.echo.serve_forever, daemon=True)
        cls.echo_thread.start()
        cls.up = "127.0.0.1:%d" % cls.echo.server_address[1]
        cls.proc, cls.tp = start_api("--seed", "7")

    @classmethod
    def tearDownClass(cls):
        rc = stop(cls.proc)
        cls.echo.shutdown()
        cls.echo.server_close()
        assert rc == 0, "faultgate proxy --api exited %s" % rc

    def setUp(self):
        self.tp.call("POST", "/reset")
        for name in list(self.tp.call("GET", "/proxies")[1]):
            self.tp.call("DELETE", "/proxies/" + name)
        st, self.px = self.tp.create("echo", self.up)
        self.assertEqual(st, 201, self.px)
        self.port = port_of(self.px)

    def roundtrip(self, payload=b"ping\r\n"):
        with connect(self.port) as s:
            t = time.monotonic()
            s.sendall(payload)
            got = recv_exact(s, len(payload))
            return got, time.monotonic() - t

    # --- the API's shapes --------------------------------------------------

    def test_shapes(self):
        tp = self.tp
        st, v = tp.call("GET", "/version")
        self.assertEqual(st, 200)
        self.assertIn("version", v)
        self.assertEqual(self.px["upstream"], self.up)
        self.assertTrue(self.px["enabled"])
        self.assertEqual(self.px["toxics"], [])
        st, e = tp.create("echo", self.up)
        self.assertEqual((st, e), (409, {"error": "proxy already exists", "status": 409}))
        st, e = tp.call("POST", "/proxies", {"name": "x"})
        self.assertEqual(st, 400)
        self.assertRegex(e["error"], "missing required field")
        st, e = tp.call("GET", "/proxies/nope")
        self.assertEqual((st, e), (404, {"error": "proxy not found", "status": 404}))
        st, e = tp.add_toxic("echo", "no_such", {})
        self.assertEqual((st, e["error"]), (400, "invalid toxic type"))
        st, e = tp.add_toxic("echo", "latency", {"latency": 5}, stream="sideways")
        self.assertEqual(st, 400)
        self.assertRegex(e["error"], "stream was invalid")
        st, t = tp.add_toxic("echo", "latency", {"latency": 5})
        self.assertEqual(st, 200, t)
        self.assertEqual(t, {"name": "latency_downstream", "type": "latency",
                             "stream": "downstream", "toxicity": 1.0,
                             "attributes": {"latency": 5, "jitter": 0}})
        st, e = tp.add_toxic("echo", "latency", {"latency": 5})
        self.assertEqual((st, e["error"]), (409, "toxic already exists"))
        st, t = tp.call("POST", "/proxies/echo/toxics/latency_downstream",
                        {"attributes": {"jitter": 2}})
        self.assertEqual((st, t["attributes"]), (200, {"latency": 5, "jitter": 2}))
        st, lst = tp.call("GET", "/proxies/echo/toxics")
        self.assertEqual((st, [x["name"] for x in lst]), (200, ["latency_downstream"]))
        st, e = tp.call("GET", "/proxies/echo/toxics/nope")
        self.assertEqual((st, e["error"]), (404, "toxic not found"))
        st, e = tp.call("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0"})
        self.assertEqual(st, 403)
        st, _ = tp.call("POST", "/proxies/echo", {"enabled": False})
        self.assertEqual(st, 200)
        st, _ = tp.call("POST", "/reset")
        self.assertEqual(st, 204)
        st, px = tp.call("GET", "/proxies/echo")
        self.assertEqual((px["enabled"], px["toxics"]), (True, []))
        st, res = tp.call("POST", "/populate",
                          [{"name": "a", "listen": "127.0.0.1:0", "upstream": self.up},
                           {"name": "b", "listen": "localhost:0", "upstream": self.up}])
        self.assertEqual(st, 201, res)
        self.assertEqual(sorted(p["name"] for p in res["proxies"]), ["a", "b"])
        st, allp = tp.call("GET", "/proxies")
        self.assertEqual(sorted(allp), ["a", "b", "echo"])
        # several listeners in one process, each forwarding
        for p in res["proxies"]:
            with connect(port_of(p)) as s:
                s.sendall(b"x")
                self.assertEqual(recv_exact(s, 1), b"x")
        st, _ = tp.call("DELETE", "/proxies/a")
        self.assertEqual(st, 204)
        st, _ = tp.call("DELETE", "/proxies/a")
        self.assertEqual(st, 404)

    # --- each toxic at the socket level -------------------------------------

    def test_latency(self):
        got, base = self.roundtrip()
        self.assertEqual(got, b"ping\r\n")
        self.assertLess(base, 0.25)  # a loaded CI runner's margin
        self.tp.add_toxic("echo", "latency", {"latency": 300, "jitter": 0})
        got, t = self.roundtrip()
        self.assertEqual(got, b"ping\r\n")
        self.assertGreaterEqual(t, 0.29)
        self.assertLess(t, 0.3 + 1.0)
        self.tp.add_toxic("echo", "latency", {"latency": 200}, stream="upstream")
        got, t = self.roundtrip()
        self.assertGreaterEqual(t, 0.49)
        st, _ = self.tp.call("DELETE", "/proxies/echo/toxics/latency_downstream")
        self.assertEqual(st, 204)
        self.tp.call("DELETE", "/proxies/echo/toxics/latency_upstream")
        got, t = self.roundtrip()
        self.assertLess(t, 0.25)

    def test_reset_peer(self):
        self.tp.add_toxic("echo", "reset_peer", {"timeout": 0})
        # On loopback the RST may already meet connect() itself.
        with self.assertRaises(ConnectionResetError) as cm:
            with connect(self.port) as s:
                s.sendall(b"ping\r\n")
                s.recv(10)
        self.assertEqual(cm.exception.errno, errno.ECONNRESET)

    def test_reset_peer_timeout(self):
        self.tp.add_toxic("echo", "reset_peer", {"timeout": 300})
        with connect(self.port) as s:
            t = time.monotonic()
            s.sendall(b"ping\r\n")
            self.assertEqual(recv_exact(s, 6), b"ping\r\n")  # flows until the timeout
            got, how = recv_to_end(s)
            self.assertEqual(how, "reset")
            self.assertGreaterEqual(time.monotonic() - t, 0.28)

    def test_limit_data(self):
        self.tp.add_toxic("echo", "limit_data", {"bytes": 10})
        with connect(self.port) as s:
            s.sendall(b"a" * 100)
            got, how = recv_to_end(s)
        self.assertEqual(got, b"a" * 10, how)

    def test_slicer(self):
        self.tp.add_toxic("echo", "slicer",
                          {"average_size": 10, "size_variation": 0, "delay": 20000})
        with connect(self.port) as s:
            t = time.monotonic()
            s.sendall(b"b" * 100)
            sizes = []
            total = 0
            while total < 100:
                b = s.recv(65536)
                if not b:
                    break
                sizes.append(len(b))
                total += len(b)
            took = time.monotonic() - t
        self.assertEqual(total, 100)
        self.assertLessEqual(max(sizes), 10, sizes)
        self.assertGreaterEqual(len(sizes), 10, sizes)
        self.assertGreaterEqual(took, 9 * 0.02 * 0.8)

    def test_timeout(self):
        self.tp.add_toxic("echo", "timeout", {"timeout": 500}, stream="upstream")
        with connect(self.port) as s:
            t = time.monotonic()
            s.sendall(b"ping\r\n")
            got, how = recv_to_end(s)
            took = time.monotonic() - t
        self.assertEqual(got, b"")  # held: nothing came back
        self.assertGreaterEqual(took, 0.45, how)
        self.assertLess(took, 3.0, how)

    def test_down_and_disabled(self):
        st, t = self.tp.add_toxic("echo", "down", {})
        self.assertEqual(st, 200, t)
        try:
            with connect(self.port) as s:
                got, how = recv_to_end(s)
        except ConnectionResetError:
            got, how = b"", "reset"
        self.assertEqual((got, how), (b"", "reset"))
        self.tp.call("DELETE", "/proxies/echo/toxics/down_downstream")
        self.assertEqual(self.roundtrip()[0], b"ping\r\n")
        st, _ = self.tp.call("POST", "/proxies/echo", {"enabled": False})
        self.assertEqual(st, 200)
        with self.assertRaises(ConnectionRefusedError):
            connect(self.port).close()
        self.tp.call("POST", "/proxies/echo", {"enabled": True})
        self.assertEqual(self.roundtrip()[0], b"ping\r\n")

    def test_bandwidth(self):
        n = 10000
        got, base = self.roundtrip(b"c" * n)
        self.assertEqual(len(got), n)
        self.assertLess(base, 0.6)
        self.tp.add_toxic("echo", "bandwidth", {"rate": 10})  # KB/s
        got, t = self.roundtrip(b"c" * n)
        self.assertEqual(len(got), n)
        self.assertGreaterEqual(t, 0.8)  # 10000 octets at 10000/s, burst 1000
        self.assertLess(t, 3.0)

    # --- faultgate's own ------------------------------------------------------

    def test_faultgate_toxic_from_next_event(self):
        with connect(self.port) as s:  # open before the toxic exists
            s.sendall(b"NOOP\r\n")
            self.assertEqual(recv_exact(s, 6), b"NOOP\r\n")
            st, t = self.tp.add_toxic("echo", "faultgate", {"spec": "command EHLO: close"},
                                      name="q197142")
            self.assertEqual(st, 200, t)
            s.sendall(b"NOOP\r\n")
            self.assertEqual(recv_exact(s, 6), b"NOOP\r\n")
            s.sendall(b"EHLO client.test\r\n")
            got, how = recv_to_end(s)
        self.assertEqual(got, b"EHLO client.test\r\n"[:len(got)])
        st, dec = self.tp.call("GET", "/proxies/echo/decisions")
        self.assertEqual(st, 200)
        mine = [d for d in dec if d["toxic"] == "q197142"]
        self.assertEqual(len(mine), 1, dec)
        self.assertEqual((mine[0]["trigger"], mine[0]["action"]), ("command EHLO #1", "close"))
        st, e = self.tp.add_toxic("echo", "faultgate", {"spec": "reply 354 stall"}, name="bad")
        self.assertEqual(st, 400)
        self.assertIn("column", e["error"])


def fired(seed, extra_first):
    """Connections (1..16) on which toxic `lim` (toxicity 0.5) acted."""
    echo = Echo(("127.0.0.1", 0), EchoHandler)
    th = threading.Thread(target=echo.serve_forever, daemon=True)
    th.start()
    p, tp = start_api("--seed", str(seed))
    try:
        st, px = tp.create("s", "127.0.0.1:%d" % echo.server_address[1])
        if extra_first:
            tp.add_toxic("s", "limit_data", {"bytes": 1 << 20}, name="other", toxicity=0.5)
        tp.add_toxic("s", "limit_data", {"bytes": 1 << 20}, name="lim", toxicity=0.5)
        for _ in range(16):
            with connect(port_of(px)) as s:
                s.sendall(b"z")
                assert recv_exact(s, 1) == b"z"
        st, dec = tp.call("GET", "/proxies/s/decisions")
        return sorted(d["conn"] for d in dec if d["toxic"] == "lim")
    finally:
        assert stop(p) == 0, "faultgate proxy --api did not exit cleanly"

        echo.shutdown()
        echo.server_close()


class Seed(unittest.TestCase):
    def test_toxicity_reproducible(self):
        a = fired(11, False)
        self.assertTrue(0 < len(a) < 16, a)
        self.assertEqual(fired(11, False), a)
        # another toxic's draws do not move this one's
        self.assertEqual(fired(11, True), a)
        self.assertNotEqual(fired(12, False), a)


class Cli(unittest.TestCase):
    def test_loopback_only_unless_asked(self):
        p = subprocess.run([FG, "proxy", "--api", "0.0.0.0:0"], capture_output=True, text=True,
                           timeout=DEADLINE)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--api-remote", p.stderr)
        p = subprocess.run([FG, "proxy", "--api", "127.0.0.1:0", "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 2)

    def test_pcap(self):
        echo = Echo(("127.0.0.1", 0), EchoHandler)
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        with tempfile.TemporaryDirectory(prefix="fg-e2e-api-") as d:
            path = os.path.join(d, "api.pcap")
            p, tp = start_api("--pcap", path, "--capture", "synth")
            try:
                st, px = tp.create("c", "127.0.0.1:%d" % echo.server_address[1])
                with connect(port_of(px)) as s:
                    s.sendall(b"captured\r\n")
                    self.assertEqual(recv_exact(s, 10), b"captured\r\n")
            finally:
                self.assertEqual(stop(p), 0)
                echo.shutdown()
                echo.server_close()
            with open(path, "rb") as f:
                data = f.read()
            self.assertIn(b"captured\r\n", data)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:], verbosity=2)
