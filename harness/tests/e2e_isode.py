#!/usr/bin/env python3
"""End-to-end checks of the X.400 side against a real OSI stack: ISODE 8
(RFC 1006, ISO 8327 session, RTS in X.410-1984 mode and 1988 normal mode),
built once by ci/isode.sh into a cache directory outside the checkout.

- `faultgate proxy --fault 'spdu MIP: abort'` between isoc and tsapd makes
  isoc fail; with no fault isoc's 10 echoes come back intact (both modes).
- Unmodified isoc -> `faultgate x400-peer --listen`: `rtsap sink` and
  `"isode/rtse sink"` exit 0 and the fake MTA's ledger holds 10 messages.
- `faultgate x400-peer --send` -> tsapd completes an association with at
  least 3 confirmed checkpoints, both modes.
- A real association with one serial number rewritten by the proxy and no
  abort: `faultgate diagnose` names Q194685 and the rewritten MIP's frame.
- refgw's X.400 side, ISODE's tsapd the foreign system behind the X.400
  proxy armed with each scenarios/x400 scenario's `x400_faults:`, both
  modes: every message is delivered, after the association the fault
  aborted; rewrite-serial is not aborted by ISODE (it does not check
  serials) and diagnose reports Q194685 without an abort.
- tshark's session SPDU types and serial numbers of every capture are
  those of `faultgate x400-timeline`.

Usage: e2e_isode.py BUILD_DIR SOURCE_DIR.  Skipped (77) when the ISODE
source is not there.  Every child has a timeout and is reaped.
"""
import glob
import json
import os
import queue
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build"
SRC = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "."
FG = os.path.join(BUILD, "faultgate")
REFGW = os.path.join(BUILD, "fakes", "refgw", "refgw")
ISODE_SH = os.path.join(SRC, "ci", "isode.sh")
PREFIX = None
SI_MIP, SI_MIA = 49, 50
MODES = {"x410": "%s", "1988": "isode/rtse %s"}


def isode_build():
    p = subprocess.run(["bash", ISODE_SH], capture_output=True, text=True, timeout=900)
    if p.returncode == 77:
        return None
    if p.returncode != 0:
        raise RuntimeError("ci/isode.sh failed:\n" + p.stderr[-2000:])
    return p.stdout.strip().splitlines()[-1]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening(port):
    """Whether a socket listens on 127.0.0.1:port (/proc/net/tcp, state 0A)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp", encoding="ascii") as f:
        return any(l.split()[1] == want and l.split()[3] == "0A" for l in list(f)[1:])


def wait_listening(port, proc, deadline=10.0):
    """tsapd prints nothing when ready, and a probe connection that sends no
    CR would upset it: watch the kernel's socket table instead."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError("tsapd exited: %s" % proc.stderr.read())
        if listening(port):
            return
        time.sleep(0.02)
    raise AssertionError("tsapd did not listen on %d" % port)


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = proc.stderr.read() if proc.stderr else ""
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()
    return out


def start_listening(args, pattern):
    """Start a faultgate server on port 0; its port from its first lines."""
    proc = subprocess.Popen([FG, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(pattern, line)
        if m:
            return proc, int(m.group(1))
    stop(proc)
    raise AssertionError("%s did not report its port" % args[0])


class Entity:
    """An isoentities line NAME -> 127.0.0.1:PORT, for isoc."""
    n = 0

    def __init__(self, port):
        Entity.n += 1
        self.name = "fge2e%d_%d" % (os.getpid(), Entity.n)
        subprocess.run(["bash", ISODE_SH, "add-entity", self.name, str(port)], check=True,
                       timeout=30)

    def __enter__(self):
        return self.name

    def __exit__(self, *a):
        subprocess.run(["bash", ISODE_SH, "remove-entity", self.name], timeout=30)


def isoc(name, entity, data, timeout=60):
    with open(data, "rb") as f:
        return subprocess.run([os.path.join(PREFIX, "bin", "isoc"), name, "rtsap", entity],
                              stdin=f, capture_output=True, text=True, timeout=timeout)


class Tsapd:
    def __enter__(self):
        for _ in range(5):  # a fresh port each run: tsapd sets no SO_REUSEADDR
            self.port = free_port()
            self.proc = subprocess.Popen([os.path.join(PREFIX, "sbin", "tsapd"), "-f", "-p",
                                          str(self.port)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True)
            try:
                wait_listening(self.port, self.proc)
                return self
            except AssertionError:
                stop(self.proc)
        raise AssertionError("tsapd did not start")

    def __exit__(self, *a):
        self.rc = self.proc.poll()  # None: still serving
        stop(self.proc)


class Proxy:
    def __init__(self, upstream, *args):
        self.args = ["proxy", "--protocol", "x400", "--listen", "127.0.0.1:0", "--upstream",
                     "127.0.0.1:%d" % upstream, *args]

    def __enter__(self):
        self.proc, self.port = start_listening(self.args, r"listening on 127\.0\.0\.1:(\d+)")
        return self

    def __exit__(self, *a):
        self.log = stop(self.proc)


def tshark_frames(pcap, ports):
    args = ["tshark", "-n", "-r", pcap]
    for p in ports:
        args += ["-d", "tcp.port==%d,tpkt" % p]
    args += ["-Y", "ses", "-T", "fields", "-E", "separator=\t", "-e", "frame.number",
             "-e", "ses.type", "-e", "ses.serial_number"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("tshark failed: " + p.stderr)
    frames = {}
    for line in p.stdout.splitlines():
        cols = (line.split("\t") + ["", "", ""])[:3]
        frames[int(cols[0])] = ([int(x) for x in cols[1].split(",") if x],
                                [x for x in cols[2].split(",") if x])
    return frames


def timeline_frames(pcap, ports):
    args = ["x400-timeline", "--json"]
    for p in ports:
        args += ["--port", str(p)]
    p = subprocess.run([FG, *args, pcap], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("x400-timeline failed: " + p.stderr)
    frames = {}
    for ev in json.loads(p.stdout):
        if ev["kind"] != "spdu":
            continue
        types, serials = frames.setdefault(ev["frame"], ([], []))
        types.append(ev["si"])
        if "serial" in ev:
            serials.append(ev["serial"])
    return frames


class Isode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-e2e-isode-")
        cls.data10k = os.path.join(cls.tmp, "data10k")
        cls.data3k = os.path.join(cls.tmp, "data3k")
        with open(cls.data10k, "wb") as f:
            f.write(bytes((i * 7 + 3) % 251 for i in range(10240)))
        with open(cls.data3k, "wb") as f:
            f.write(bytes((i * 13 + 1) % 253 for i in range(3000)))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def same_as_tshark(self, pcap, ports):
        if not shutil.which("tshark"):
            return
        ts, tl = tshark_frames(pcap, ports), timeline_frames(pcap, ports)
        self.assertTrue(tl, "the timeline saw no SPDU in " + pcap)
        self.assertEqual(ts, tl, "tshark and x400-timeline disagree on " + pcap)

    def test_proxy_between_isoc_and_tsapd(self):
        for mode, ent in MODES.items():
            with self.subTest(mode=mode), Tsapd() as t:
                pcap = os.path.join(self.tmp, "clean-%s.pcap" % mode)
                with Proxy(t.port, "--pcap", pcap, "--capture", "synth") as px, \
                        Entity(px.port) as name:
                    r = isoc(name, ent % "echo", self.data10k)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(len(re.findall(r"10240 bytes echoed", r.stderr)), 10, r.stderr)
                self.same_as_tshark(pcap, [t.port, px.port])
                with Proxy(t.port, "--fault", "spdu MIP: abort") as px, Entity(px.port) as name:
                    r = isoc(name, ent % "echo", self.data10k)
                self.assertNotEqual(r.returncode, 0, r.stderr)
                self.assertNotIn("bytes echoed", r.stderr)
                self.assertIn("spdu MIP c2s #1 serial 1 -> x400 abort provider", px.log)

    def test_isoc_to_fake_mta(self):
        for mode, ent in MODES.items():
            with self.subTest(mode=mode):
                ledger = os.path.join(self.tmp, "ledger-%s.jsonl" % mode)
                peer, port = start_listening(["x400-peer", "--listen", "127.0.0.1:0",
                                              "--ledger", ledger],
                                             r"listening on 127\.0\.0\.1:(\d+)")
                try:
                    with Entity(port) as name:
                        r = isoc(name, ent % "sink", self.data3k)
                finally:
                    log = stop(peer)
                self.assertEqual(r.returncode, 0, r.stderr + log)
                self.assertEqual(len(re.findall(r"3000 bytes sunk", r.stderr)), 10, r.stderr)
                with open(ledger, encoding="utf-8") as f:
                    entries = [json.loads(x) for x in f]
                # the APDU: an OCTET STRING of the 3000 octets (04 82 0b b8 ...)
                self.assertEqual([e["size"] for e in entries], [3004] * 10)
                self.assertIn("1988 normal mode" if mode == "1988" else "X.410-1984 mode", log)
                self.assertNotIn("invalid", log)

    def test_fake_mta_to_tsapd(self):
        for mode in MODES:
            with self.subTest(mode=mode), Tsapd() as t:
                pcap = os.path.join(self.tmp, "send-%s.pcap" % mode)
                with Proxy(t.port, "--pcap", pcap, "--capture", "synth") as px:
                    r = subprocess.run([FG, "x400-peer", "--send", "127.0.0.1:%d" % px.port,
                                        "--message", self.data10k, "--application",
                                        "isode-sink", "--mode", mode, "--timeout", "10s"],
                                       capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                m = re.search(r"(\d+) minor sync points, (\d+) confirmed", r.stderr)
                self.assertTrue(m, r.stderr)
                self.assertGreaterEqual(int(m.group(2)), 3, r.stderr)
                self.assertEqual(m.group(1), m.group(2))
                # on the wire, tsapd's leg: every MIP answered by its MIA
                if shutil.which("tshark"):
                    ts = tshark_frames(pcap, [t.port, px.port])
                    mips = sum(f[0].count(SI_MIP) for f in ts.values())
                    mias = sum(f[0].count(SI_MIA) for f in ts.values())
                    self.assertGreaterEqual(mips, 6)  # both legs
                    self.assertEqual(mips, mias)
                self.same_as_tshark(pcap, [t.port, px.port])

    def test_rewritten_serial_without_abort(self):
        with Tsapd() as t:
            pcap = os.path.join(self.tmp, "rewrite.pcap")
            with Proxy(t.port, "--pcap", pcap, "--capture", "synth", "--fault",
                       "spdu MIP serial 2, first: rewrite-serial +5") as px, \
                    Entity(px.port) as name:
                r = isoc(name, "echo", self.data3k)
            # ISODE does not check serial numbers: the association goes on
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("MIP serial 2 -> 7", px.log)
        d = subprocess.run([FG, "diagnose", "--json", pcap], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(d.returncode, 1, d.stderr)
        findings = [f for f in json.loads(d.stdout)["findings"] if f["kb"] == "Q194685"]
        self.assertTrue(findings, d.stdout)
        # the MIP with serial 7 on tsapd's leg, as tshark shows it
        ts = tshark_frames(pcap, [t.port, px.port])
        frame7 = [n for n, (types, sns) in ts.items() if SI_MIP in types and "7" in sns]
        self.assertEqual(len(frame7), 1, ts)
        mip = [f for f in findings if frame7[0] in f["frames"]]
        self.assertEqual(len(mip), 1, findings)
        self.assertIn("no abort followed", mip[0]["summary"])
        self.assertEqual(mip[0]["rule"], "serial-not-vm")
        self.same_as_tshark(pcap, [t.port, px.port])


class Lines:
    """A child's stderr, line by line, with a deadline."""

    def __init__(self, proc):
        self.q, self.all = queue.Queue(), []
        threading.Thread(target=self._read, args=(proc.stderr,), daemon=True).start()

    def _read(self, f):
        for line in f:
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, pattern, deadline):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                line = self.q.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.all.append(line)
            if re.search(pattern, line):
                return line
        return None


def x400_scenarios():
    out = []
    for path in sorted(glob.glob(os.path.join(SRC, "scenarios", "x400", "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            if re.search(r"^x400_faults:", f.read(), re.M):
                out.append(path)
    return out


class RefgwToIsode(unittest.TestCase):
    """refgw -> faultgate proxy (a scenario's x400_faults) -> ISODE tsapd."""

    def deliver(self, scenario, mode, tmp, deadline):
        with Tsapd() as t:
            pcap = os.path.join(tmp, "refgw.pcap")
            with Proxy(t.port, "-s", scenario, "--pcap", pcap, "--capture", "synth") as px:
                gw_port = free_port()
                gw = subprocess.Popen(
                    [REFGW, "--listen", "127.0.0.1:%d" % gw_port, "--upstream",
                     "127.0.0.1:%d" % free_port(), "--x400-upstream", "127.0.0.1:%d" % px.port,
                     "--x400-domain", "x400.test", "--x400-mode", mode,
                     "--x400-application", "isode-sink", "--spool", os.path.join(tmp, "spool"),
                     "--timeout", "data_done=2s", "--retry", "300ms", "--max-retry-delay", "1s"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                lines = Lines(gw)
                try:
                    wait_listening(gw_port, gw)
                    with smtplib.SMTP("127.0.0.1", gw_port, timeout=20) as c:
                        c.sendmail("a@company1.test", ["u@x400.test"],
                                   "Subject: via ISODE\r\n\r\n" + "line of text\r\n" * 40)
                    done = lines.wait_for(r"delivered id=\S+ via x400", deadline)
                finally:
                    gw.terminate()
                    try:
                        gw.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        gw.kill()
                        gw.wait()
        return done, "".join(lines.all), px.log, pcap, t.port, px.port, t.rc

    def run_one(self, scenario, mode):
        tmp = tempfile.mkdtemp(prefix="fg-e2e-isode-gw-")
        with open(scenario, encoding="utf-8") as f:
            before_cr = re.search(r'"connect, ', f.read())
        try:
            done, gwlog, pxlog, pcap, p1, p2, rc = self.deliver(scenario, mode, tmp,
                                                                5 if before_cr else 30)
            d = subprocess.run([FG, "diagnose", "--json", pcap], capture_output=True, text=True,
                               timeout=120)
            found = [(f["kb"], f["symptom"]) for f in json.loads(d.stdout)["findings"]]
            same = None
            if shutil.which("tshark"):
                same = tshark_frames(pcap, [p1, p2]) == timeline_frames(pcap, [p1, p2])
            return done, gwlog, pxlog, found, same, rc, before_cr
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_scenarios_against_isode(self):
        import concurrent.futures
        jobs = {}
        # independent runs (own ports, own tsapd): side by side, as they
        # mostly wait on refgw's retry timer
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as ex:
            for scenario in x400_scenarios():
                for mode in MODES:
                    jobs[(os.path.basename(scenario), mode)] = ex.submit(self.run_one, scenario,
                                                                        mode)
        for (name, mode), job in sorted(jobs.items()):
            with self.subTest(scenario=name, mode=mode):
                done, gwlog, pxlog, found, same, rc, before_cr = job.result()
                self.assertIn("-> x400 ", pxlog)  # the fault fired
                if before_cr:
                    # A connection closed before its CR crashes ISODE's tsapd
                    # (SIGSEGV): the foreign system, not the gateway, fails here.
                    self.assertEqual(rc, -11, gwlog)
                    self.assertFalse(done)
                    continue
                self.assertTrue(done, gwlog + pxlog)  # the message got through
                after_aea = re.search(r"spdu (FN|AEA) ", pxlog)
                if "rewrite-serial" in pxlog:
                    # the cause of Q194685 is on the wire, aborted or not
                    self.assertTrue([k for k, _ in found if k == "Q194685"], found)
                elif not after_aea:
                    # aborted before the AEA: the transfer failed and was retried
                    self.assertIn("x400 transfer failed", gwlog)
                if same is not None:
                    self.assertTrue(same, "tshark and x400-timeline disagree")

if __name__ == "__main__":
    PREFIX = isode_build()
    if PREFIX is None:
        print("no ISODE source (FG_ISODE_SRC): skipped")
        sys.exit(77)
    unittest.main(argv=[sys.argv[0], "-v"])
