#!/usr/bin/env python3
"""End-to-end checks of real SMTP clients as the system under test: each
client profile (msmtp, swaks, Python's smtplib with and without a timeout,
Postfix's smtp-source) under `faultgate run` against scenarios/clients/,
asserting each scenario's verdict and the rule that decides it.  Also
negative controls that a client which lies about the outcome (exit 0 after
a 451, non-zero after a 250) fails client-reports-failure, a command that
cannot be started is an error, and profile load errors point at
file:line:col with exit status 2.

Usage: e2e_clients.py BUILD_DIR SOURCE_DIR [TEST...]
A client whose program is not installed is skipped (ci/packages.txt lists
them).  Every child has a timeout; faultgate bounds every wait inside.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build"
SRC = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "."
FG = os.path.join(BUILD, "faultgate")
CLIENTS = os.path.join(SRC, "scenarios", "clients")
GW = os.path.join(SRC, "scenarios", "gateways")
CAPTURE = os.environ.get("FG_E2E_CAPTURE", "auto")

SCENARIOS = ["client-hang-after-data", "client-drop-after-ehlo", "client-421-greeting",
             "client-4xx-reply", "client-5xx-reply"]
# profile -> (program it needs, {scenario: expected verdict}); a scenario
# not listed is expected to pass.  A client without a timeout (smtplib's
# default) and smtp-source (its fixed read timeout is longer than the
# scenario's limit) hang after the message body: faultgate kills them.
EXPECTED = {
    "msmtp": ("msmtp", {}),
    "swaks": ("swaks", {}),
    "smtplib": ("python3", {}),
    "smtplib-no-timeout": ("python3", {"client-hang-after-data": "fail"}),
    "smtp-source": ("/usr/sbin/smtp-source", {"client-hang-after-data": "fail"}),
}


def fg(*args, timeout=300):
    return subprocess.run([FG, *args], capture_output=True, text=True, timeout=timeout)


def have(prog):
    return shutil.which(prog) is not None or os.access(prog, os.X_OK)


def results(out):
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return {s["id"]: s for s in json.load(f)["scenarios"]}


def rules(s):
    return {e["rule"]: e for e in s["expectations"]}


class Clients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-e2e-clients-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def profile(self, name, text):
        path = os.path.join(self.tmp, name + ".yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def run_profile(self, name):
        prog, special = EXPECTED[name]
        if not have(prog):
            self.skipTest("%s is not installed" % prog)
        out = os.path.join(self.tmp, name)
        p = fg("run", "-q", "--capture", CAPTURE, "--seed", "5", "-g",
               os.path.join(GW, name + ".yaml"), "-o", out, CLIENTS)
        res = results(out)
        self.assertEqual(sorted(res), sorted(SCENARIOS), p.stderr)
        self.assertEqual(p.returncode, 1 if "fail" in special.values() else 0, p.stderr)
        self.assertNotIn("Sanitizer", p.stderr)
        for sid in SCENARIOS:
            s = res[sid]
            want = special.get(sid, "pass")
            self.assertEqual(s["verdict"], want, "%s / %s: %s" % (name, sid, json.dumps(
                s["expectations"], indent=1)))
            r = rules(s)
            with open(os.path.join(out, sid + ".meta.json"), encoding="utf-8") as f:
                meta = json.load(f)
            self.assertEqual(len(meta["clients"]), 1, sid)
            c = meta["clients"][0]
            self.assertTrue(c["spawned"], sid)
            if want == "pass":
                self.assertFalse(c["timed_out"], sid)
                # Every scenario makes the message fail: the client reported it.
                self.assertNotEqual(c["exit_status"], 0, sid)
                self.assertEqual(r["client-reports-failure"]["verdict"], "pass", sid)
                self.assertEqual(r["client-exits"]["verdict"], "pass", sid)
            else:
                # The hang: killed at submit.timeout, named as such.
                self.assertTrue(c["timed_out"], sid)
                self.assertEqual(c["term_signal"], 9, sid)
                self.assertEqual(r["client-exits"]["verdict"], "fail", sid)
                self.assertIn("never ended", r["client-exits"]["summary"])
                self.assertEqual(r["closes-after-stall"]["verdict"], "fail", sid)
        # Each run's outbound leg is in the trace: the judge gives the
        # live verdicts again on the saved pcap.
        sid = "client-4xx-reply"
        j = fg("judge", "-s", os.path.join(CLIENTS, sid + ".yaml"),
               os.path.join(out, sid + ".pcap"))
        self.assertEqual(j.returncode, 0, j.stdout + j.stderr)
        self.assertIn("PASS", j.stdout)
        return res

    def test_msmtp(self):
        self.run_profile("msmtp")

    def test_swaks(self):
        self.run_profile("swaks")

    def test_smtplib(self):
        self.run_profile("smtplib")

    def test_smtplib_no_timeout(self):
        self.run_profile("smtplib-no-timeout")

    def test_smtp_source(self):
        self.run_profile("smtp-source")

    def test_lying_client_fails(self):
        # Exit 0 whatever happened: after a 451 that loses the message.
        liar = self.profile("liar", """name: liar
submit:
  command: [sh, -c, 'python3 "$0" "$@"; exit 0', "%s/clients/smtplib-send.py",
            --host, "{upstream_host}", --port, "{upstream_port}", --from, "{from}",
            --timeout, "5", "{to}"]
  timeout: 20s
""" % GW)
        out = os.path.join(self.tmp, "liar")
        fg("run", "-q", "--capture", CAPTURE, "-g", liar, "-o", out,
           os.path.join(CLIENTS, "client-4xx-reply.yaml"))
        s = results(out)["client-4xx-reply"]
        self.assertEqual(s["verdict"], "fail")
        r = rules(s)["client-reports-failure"]
        self.assertEqual(r["verdict"], "fail")
        self.assertIn("claimed success", r["summary"])
        self.assertIn("451", r["summary"])

    def test_pessimist_fails_after_success(self):
        # Non-zero whatever happened, here after a 250: a false alarm.
        # The scenario without faults is written here.
        scen = os.path.join(self.tmp, "client-ok.yaml")
        with open(scen, "w", encoding="utf-8") as f:
            f.write("id: client-ok\nmessages:\n  - {to: [a@b.test, c@d.test]}\n"
                    "expect:\n  - {rule: client-reports-failure}\n  - {rule: client-exits,"
                    " within: 10s}\n")
        prof = self.profile("pessimist", """name: pessimist
submit:
  command: [sh, -c, 'python3 "$0" "$@"; exit 3', "%s/clients/smtplib-send.py",
            --host, "{upstream_host}", --port, "{upstream_port}", --from, "{from}",
            --timeout, "5", "{to}"]
""" % GW)
        out = os.path.join(self.tmp, "pessimist")
        fg("run", "-q", "--capture", CAPTURE, "-g", prof, "-o", out, scen)
        s = results(out)["client-ok"]
        r = rules(s)
        self.assertEqual(r["client-reports-failure"]["verdict"], "fail")
        self.assertIn("reported a failure", r["client-reports-failure"]["summary"])
        self.assertEqual(r["client-exits"]["verdict"], "pass")
        # {to} alone gave one argv word per recipient: both were sent.
        with open(os.path.join(out, "client-ok.pcap"), "rb") as f:
            pcap = f.read()
        for rcpt in (rb"a@b\.test", rb"c@d\.test"):
            self.assertTrue(re.search(rb"(?i)rcpt to:<" + rcpt + rb">", pcap),
                            "no RCPT for %r in the trace" % rcpt)

    def test_not_found_is_error(self):
        prof = self.profile("missing", """name: missing
submit: {command: [/nonexistent/faultgate-client, "{upstream}"], timeout: 5s}
""")
        out = os.path.join(self.tmp, "missing")
        p = fg("run", "-q", "--capture", CAPTURE, "-g", prof, "-o", out,
               os.path.join(CLIENTS, "client-4xx-reply.yaml"))
        s = results(out)["client-4xx-reply"]
        self.assertEqual(s["verdict"], "error", json.dumps(s, indent=1))
        self.assertEqual(p.returncode, 2)

    def test_profile_errors(self):
        cases = [
            ("name: x\nsubmit: {command: [a]}\nstart: {argv: [b]}\n", 2, 9, "not both"),
            ("name: x\nsubmit: {command: [a]}\nready: {timeout: 5s}\n", 3, 8, "does not apply"),
            ("name: x\nsubmit: {command: [a], stdin: file}\n", 2, 31, "message or none"),
            ("name: x\nsubmit: {command: [], timeout: 5s}\n", 2, 19, "must not be empty"),
            ("name: x\nsubmit: {command: [a], timeout: soon}\n", 2, 33, "bad duration"),
            ("name: x\nsubmit: {command: [a], retries: 3}\n", 2, 24, "retries"),
            ("name: x\ndescription: nothing to run\n", 1, 1, "'start' (a gateway) or 'submit'"),
        ]
        for i, (text, line, col, msg) in enumerate(cases):
            prof = self.profile("bad%d" % i, text)
            p = fg("run", "-q", "-g", prof, "-o", os.path.join(self.tmp, "bad"),
                   os.path.join(CLIENTS, "client-4xx-reply.yaml"))
            self.assertEqual(p.returncode, 2, text)
            m = re.search(r"bad%d\.yaml:(\d+):(\d+): (.*)" % i, p.stderr)
            self.assertTrue(m, p.stderr)
            self.assertEqual((int(m.group(1)), int(m.group(2))), (line, col), p.stderr)
            self.assertIn(msg, m.group(3))
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:], verbosity=2)
