#!/usr/bin/env python3
"""End-to-end checks of message fate: for each fate, `faultgate run` of the
scenario under scenarios/fate/ against a refgw profile whose behaviour
produces it, and the verdict and evidence of the message-fate expectation
name that fate.  Also `faultgate fake-mta` under a stdlib SMTP client:
STARTTLS against the run-time test CA, the capabilities after TLS, AUTH,
and a violation in the ledger.  And a scenario's `mta:` section changing the
fake MTA of its run, and load errors of that section and of message options.

Usage: e2e_fate.py BUILD_DIR SOURCE_DIR [TEST...]
Every child has a timeout; the harness itself bounds every wait inside.
"""
import json
import re
import os
import shutil
import socket
import smtplib
import ssl
import subprocess
import sys
import tempfile
import unittest

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build"
SRC = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "."
FG = os.path.join(BUILD, "faultgate")
FATE = os.path.join(SRC, "scenarios", "fate")
GW = os.path.join(SRC, "scenarios", "gateways")
CAPTURE = os.environ.get("FG_E2E_CAPTURE", "auto")

# fate -> (scenario, profile, expected scenario verdict)
CASES = {
    "delivered-once": ("fate-delivered-once.yaml", "refgw.yaml", "pass"),
    "duplicated": ("fate-duplicated.yaml", "refgw.yaml", "pass"),
    "bounced": ("fate-bounced.yaml", "refgw.yaml", "pass"),
    "deferred": ("fate-deferred.yaml", "refgw.yaml", "inconc"),
    "lost": ("fate-lost.yaml", "refgw-silent-drop.yaml", "fail"),
}


def fg(*args, timeout=180):
    return subprocess.run([FG, *args], capture_output=True, text=True, timeout=timeout)


class Fate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-e2e-fate-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_fate(self, fate):
        scen, prof, verdict = CASES[fate]
        out = os.path.join(self.tmp, fate)
        p = fg("run", "-q", "--capture", CAPTURE, "--seed", "11", "-g", os.path.join(GW, prof),
               "-o", out, os.path.join(FATE, scen))
        with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
            res = json.load(f)
        self.assertEqual(len(res["scenarios"]), 1, p.stdout + p.stderr)
        sc = res["scenarios"][0]
        dump = p.stdout + p.stderr + json.dumps(sc, indent=1)[:6000]
        self.assertEqual(sc["verdict"], verdict, dump)
        self.assertEqual(p.returncode, {"pass": 0, "fail": 1, "inconc": 1}[verdict], dump)
        mf = [o for o in sc["expectations"] if o["rule"] == "message-fate"]
        self.assertEqual(len(mf), 1, dump)
        ev = mf[0].get("evidence") or ""
        # The evidence names the fate per message ("...: lost: neither ...").
        want = r"\bdelivered once\b" if fate == "delivered-once" else r"\b%s: " % re.escape(fate)
        self.assertRegex(ev, want, dump)
        if verdict != "pass":
            self.assertIn(fate, mf[0]["summary"], dump)
        self.assertTrue(os.path.exists(os.path.join(out, sc["id"] + ".pcap")), dump)
        return sc, ev, out

    def test_delivered_once(self):
        sc, ev, out = self.run_fate("delivered-once")
        # Three messages, three ledger entries at the fake MTA, one each.
        tokens = []
        with open(os.path.join(out, sc["id"], "ledger.jsonl"), encoding="utf-8") as f:
            for line in f:
                o = json.loads(line)
                if o.get("event", "message") == "message":
                    tokens.append(o["token"])
        self.assertEqual(len(tokens), 3, tokens)
        self.assertEqual(len(set(tokens)), 3, tokens)

    def test_duplicated(self):
        sc, ev, out = self.run_fate("duplicated")
        self.assertIn("RFC 1047", ev)

    def test_bounced(self):
        sc, ev, out = self.run_fate("bounced")
        self.assertIn("<>", ev)

    def test_deferred(self):
        self.run_fate("deferred")

    def test_lost(self):
        sc, ev, out = self.run_fate("lost")
        self.assertIn("0 deliveries", ev)


class FakeMta(unittest.TestCase):
    """`faultgate fake-mta` with a script, under Python's smtplib."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fg-e2e-mta-")
        self.ledger = os.path.join(self.tmp, "ledger.jsonl")
        self.ca = os.path.join(self.tmp, "ca.pem")
        script = os.path.join(self.tmp, "script.yaml")
        with open(script, "w", encoding="utf-8") as f:
            f.write("hide_after_tls: [PIPELINING, SIZE]\n"
                    "stages:\n  - {stage: rcpt, nth: 2, reply: \"452 4.5.3 no more|really\"}\n")
        self.p = subprocess.Popen([FG, "fake-mta", "--listen", "127.0.0.1:0", "--script", script,
                                   "--ledger", self.ledger, "--ca-out", self.ca],
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stderr.readline()  # the process prints its port first
        self.assertIn("listening on", line)
        self.port = int(line.rsplit(":", 1)[1])

    def tearDown(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=10)
        self.p.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_starttls_auth_script_and_violation(self):
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        code, caps = s.ehlo("client.test")
        self.assertEqual(code, 250)
        for cap in (b"PIPELINING", b"SIZE", b"8BITMIME", b"SMTPUTF8", b"CHUNKING", b"DSN",
                    b"ENHANCEDSTATUSCODES", b"STARTTLS", b"AUTH PLAIN LOGIN"):
            self.assertIn(cap, caps)
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = False  # the certificate names mta.faultgate.test
        self.assertEqual(s.starttls(context=ctx)[0], 220)
        code, caps = s.ehlo("client.test")
        self.assertNotIn(b"PIPELINING", caps)  # capabilities after TLS differ
        self.assertNotIn(b"STARTTLS", caps)
        self.assertEqual(s.login("user", "secret")[0], 235)
        self.assertEqual(s.mail("a@one.test")[0], 250)
        self.assertEqual(s.rcpt("b@two.test")[0], 250)
        code, text = s.rcpt("c@two.test")
        self.assertEqual((code, text), (452, b"4.5.3 no more\nreally"))
        self.assertEqual(s.data(b"Subject: t\r\nX-Faultgate-Token: e2e-1\r\n\r\nbare\nlf\r\n")[0],
                         250)
        s.quit()
        self.p.terminate()
        self.p.wait(timeout=10)
        events = [json.loads(l) for l in open(self.ledger, encoding="utf-8")]
        msgs = [e for e in events if e["event"] == "message"]
        self.assertEqual(len(msgs), 1, events)
        self.assertTrue(msgs[0]["tls"])
        self.assertEqual(msgs[0]["token"], "e2e-1")
        self.assertEqual(msgs[0]["rcpt"], ["b@two.test"])
        self.assertIn("bare-lf", msgs[0]["violations"])
        self.assertTrue(any(e["event"] == "violation" and e["rule"] == "bare-lf" for e in events))

    def test_bad_script_is_exit_2_with_position(self):
        bad = os.path.join(self.tmp, "bad.yaml")
        with open(bad, "w", encoding="utf-8") as f:
            f.write("stages:\n  - {stage: rcpt, action: explode}\n")
        p = fg("fake-mta", "--listen", "127.0.0.1:0", "--script", bad, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("bad.yaml:2:", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)

    def test_bad_busy_poll_is_exit_2(self):
        for cmd in (["fake-mta", "--listen", "127.0.0.1:0"],
                    ["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:25"],
                    ["inject", "--to", "127.0.0.1:25"]):
            for bad in ("fast", "-1", "2000000"):
                p = fg(*cmd, "--busy-poll", bad, timeout=30)
                self.assertEqual(p.returncode, 2, (cmd, bad, p.stderr))
                self.assertIn("--busy-poll", p.stderr)


class ScenarioMta(unittest.TestCase):
    """A scenario's `mta:` section is the fake MTA's script for that run."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-e2e-scmta-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_scenario(self, path, name):
        out = os.path.join(self.tmp, name)
        p = fg("run", "-q", "--capture", CAPTURE, "--seed", "11", "-g",
               os.path.join(GW, "refgw.yaml"), "-o", out, path)
        with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
            sc = json.load(f)["scenarios"][0]
        return p, sc, {e["rule"]: e for e in sc["expectations"]}

    def test_ehlo_refused_by_script_then_helo(self):
        path = os.path.join(SRC, "scenarios", "mta", "mta-ehlo-refused.yaml")
        p, sc, ex = self.run_scenario(path, "with")
        dump = p.stdout + p.stderr + json.dumps(sc, indent=1)[:4000]
        self.assertEqual(sc["verdict"], "pass", dump)
        self.assertEqual(ex["ehlo-helo-fallback"]["verdict"], "pass", dump)
        self.assertEqual(ex["message-fate"]["verdict"], "pass", dump)
        # The same scenario without its `mta:` section: EHLO is accepted,
        # so there is no fallback to judge.
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("mta:\n  esmtp: false\n", text)
        plain = os.path.join(self.tmp, "mta-ehlo-accepted.yaml")
        with open(plain, "w", encoding="utf-8") as f:
            f.write(text.replace("mta:\n  esmtp: false\n", ""))
        p, sc, ex = self.run_scenario(plain, "without")
        dump = p.stdout + p.stderr + json.dumps(sc, indent=1)[:4000]
        self.assertEqual(ex["ehlo-helo-fallback"]["verdict"], "inconc", dump)
        self.assertEqual(ex["message-fate"]["verdict"], "pass", dump)

    def test_bad_mta_section_and_message_options_are_exit_2(self):
        cases = [
            ("mta:\n  stages:\n    - {stage: rcpt, action: explode}\n", ":8:29:"),
            ("mta:\n  colour: blue\n", ":7:3:"),
            ("messages:\n  - {to: a@b.test, pipelining: maybe}\n", ":7:"),
            ("messages:\n  - {to: [a@b.test, c@b.test], rcpts: 1}\n", ":7:"),
            ("messages:\n  - {concurrency: 0}\n", ":7:"),
        ]
        for i, (body, pos) in enumerate(cases):
            path = os.path.join(self.tmp, "bad-%d.yaml" % i)
            with open(path, "w", encoding="utf-8") as f:
                f.write("id: bad-%d\nleg: outbound\nexpect:\n  - {rule: gateway-alive}\n"
                        "deadline: 5s\n%s" % (i, body))
            p = fg("run", "-q", "-g", os.path.join(GW, "refgw.yaml"), "-o",
                   os.path.join(self.tmp, "bad-out-%d" % i), path, timeout=60)
            self.assertEqual(p.returncode, 2, (body, p.stdout, p.stderr))
            self.assertIn("bad-%d.yaml%s" % (i, pos), p.stderr, body)


class ProxyThreads(unittest.TestCase):
    """`faultgate proxy --threads 2` between smtplib and the fake MTA: the
    connection numbers follow accept order across the workers, a `nth`
    fault fires on exactly that connection, and the synthesized capture
    (written from both workers) holds every leg."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fg-e2e-thr-")
        self.procs = []
        # Both busy-poll: every session below also runs through that loop.
        self.mta = self.spawn([FG, "fake-mta", "--listen", "127.0.0.1:0", "--quiet",
                               "--busy-poll", "50",
                               "--ledger", os.path.join(self.tmp, "ledger.jsonl")])
        mport = self.port_of(self.mta)
        self.pcap = os.path.join(self.tmp, "proxy.pcap")
        # Port 0 with --pcap: the capture learns the port once bound.
        self.proxy = self.spawn([FG, "proxy", "--listen", "127.0.0.1:0", "--upstream",
                                 "127.0.0.1:%d" % mport, "--threads", "2", "--capture", "synth",
                                 "--pcap", self.pcap, "--seed", "7", "--busy-poll", "50",
                                 "--fault", "command RCPT, nth 3: reply 451 4.3.0 third, replace"])
        self.port = self.port_of(self.proxy)
        for _ in range(5):  # ready once it says what it armed
            line = self.proxy.stderr.readline()
            if "armed" in line or not line:
                break
        self.assertIn("armed", line)

    def spawn(self, argv):
        p = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def port_of(self, p):
        for _ in range(5):  # the port line comes within the first few
            line = p.stderr.readline()
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])
        self.fail("no port announced")

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
            p.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def send(self, i):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("a@one.test")
            code, _ = s.rcpt("b%d@two.test" % i)
            if code == 250:
                s.data(b"Subject: %d\r\n\r\nbody\r\n" % i)
            return code

    def test_numbering_faults_and_capture_across_workers(self):
        codes = [self.send(i) for i in range(1, 9)]
        self.assertEqual(codes, [250, 250, 451, 250, 250, 250, 250, 250])
        # Then eight at once: every one is carried, none fires the fault.
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            more = list(ex.map(self.send, range(9, 17)))
        self.assertEqual(more, [250] * 8)
        self.proxy.terminate()
        self.assertEqual(self.proxy.wait(timeout=10), 0)
        log = self.proxy.stderr.read()
        decisions = re.findall(r"conn #(\d+) t=\S+ (.*) -> (.*)", log)
        self.assertEqual(decisions, [("3", "command RCPT #1", "reply 451 4.3.0 third, replace")], log)
        if not shutil.which("tshark"):
            self.skipTest("tshark missing")
        out = subprocess.run(["tshark", "-r", self.pcap, "-Y",
                              "tcp.flags.syn == 1 && tcp.flags.ack == 0", "-T", "fields",
                              "-e", "tcp.stream"], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(len(out.stdout.split()), 32)  # 16 connections, two legs each

    def test_held_connections_spread_over_workers(self):
        # Eight sessions held open: whichever worker the kernel wakes, each
        # connection goes to the worker carrying the fewest, four and four.
        socks = []
        try:
            for _ in range(8):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                socks.append(s)
                # the greeting came through: the proxy carries it end to end
                self.assertTrue(s.recv(512).startswith(b"220"))
        finally:
            for s in socks:
                s.close()
        self.proxy.terminate()
        self.assertEqual(self.proxy.wait(timeout=10), 0)
        log = self.proxy.stderr.read()
        carried = sorted(re.findall(r"worker (\d+) carried (\d+) connection", log))
        self.assertEqual(carried, [("1", "4"), ("2", "4")], log)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:])
