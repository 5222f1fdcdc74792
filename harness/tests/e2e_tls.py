#!/usr/bin/env python3
"""End-to-end checks of the proxy's TLS-terminating mode (`tls: terminate`)
and the key log: `faultgate run` with a real STARTTLS client (Python's
smtplib verifying the run's test CA; swaks too when installed) against
scenarios/tls/tls-refusal-under-starttls.yaml, whose trigger
(RCPT, after STARTTLS) only fires when the proxy sees the plaintext.

Asserts: the post-STARTTLS trigger fired (meta decisions, the client's
exit and stderr, the verdict); <id>.keys exists, is named in the meta and
holds well-formed NSS key log lines; with tshark installed, the pcap
decrypted with the key log shows the commands sent after STARTTLS (EHLO
again, MAIL, RCPT) on both legs and the injected 550 on the gateway's leg
only; the same scenario in pass-through mode cannot fire the trigger (the
message is delivered under TLS instead); `judge` on the saved trace gives
the live verdict; a bad `tls:` value is a file:line:col error, exit 2.

The judge decrypts the trace itself with the key log
(scenarios/tls/starttls-fresh-session.yaml): smtplib and swaks pass
starttls-fresh-session, live and on the saved trace, and the frame it names
as the new EHLO is one tshark decrypts as EHLO; the test peer that sends
MAIL inside TLS without EHLO fails it, with that MAIL FROM read from the
decrypted trace; without the key file the verdict is inconc, never pass;
a malformed --keylog is a file:line:col error, exit 2.

Usage: e2e_tls.py BUILD_DIR SOURCE_DIR [TEST...]
Every child has a timeout; faultgate bounds every wait inside.
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
GW = os.path.join(SRC, "scenarios", "gateways")
SCEN = os.path.join(SRC, "scenarios", "tls", "tls-refusal-under-starttls.yaml")
SID = "tls-refusal-under-starttls"
FRESH = os.path.join(SRC, "scenarios", "tls", "starttls-fresh-session.yaml")
FRESH_ID = "starttls-fresh-session"
CAPTURE = os.environ.get("FG_E2E_CAPTURE", "auto")

# NSS key log: LABEL <client random, 32 octets> <secret>; TLS 1.3 secrets
# are 32 or 48 octets (SHA-256 / SHA-384 suites), a TLS 1.2 master secret 48.
KEYLINE = re.compile(r"^(CLIENT_RANDOM [0-9a-f]{64} [0-9a-f]{96}|"
                     r"(CLIENT|SERVER)_(HANDSHAKE_TRAFFIC_SECRET|TRAFFIC_SECRET_0) "
                     r"[0-9a-f]{64} ([0-9a-f]{64}|[0-9a-f]{96})|"
                     r"EXPORTER_SECRET [0-9a-f]{64} ([0-9a-f]{64}|[0-9a-f]{96}))$", re.I)


def fg(*args, timeout=300):
    return subprocess.run([FG, *args], capture_output=True, text=True, timeout=timeout)


def results(out):
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return {s["id"]: s for s in json.load(f)["scenarios"]}


def meta(out):
    with open(os.path.join(out, SID + ".meta.json"), encoding="utf-8") as f:
        return json.load(f)


class Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-e2e-tls-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_scenario(self, profile, scenario, name):
        out = os.path.join(self.tmp, name)
        r = fg("run", "-q", "--capture", CAPTURE, "-g", os.path.join(GW, profile), "-o", out,
               scenario)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        return out

    def check_keylog(self, out, m, sessions=2):
        self.assertEqual(m.get("keylog"), SID + ".keys")
        path = os.path.join(out, m["keylog"])
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
        self.assertTrue(lines, "empty key log")
        for ln in lines:
            self.assertRegex(ln, KEYLINE)
        # Terminated: gateway <-> proxy and proxy <-> fake MTA.
        randoms = {ln.split()[1] for ln in lines}
        self.assertEqual(len(randoms), sessions)
        return path

    def check_decrypted(self, out, m, keys):
        """tshark, given the key log, reads the SMTP inside TLS."""
        if not shutil.which("tshark"):
            self.skipTest("tshark not installed")
        pcap = os.path.join(out, m["pcap"])
        r = subprocess.run(["tshark", "-r", pcap, "-o", "tls.keylog_file:" + keys,
                            "-d", "tcp.port==%d,smtp" % m["proxy_port"],
                            "-d", "tcp.port==%d,smtp" % m["mta_port"], "-Y", "smtp",
                            "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport",
                            "-e", "tls.record.content_type", "-e", "smtp.req.command",
                            "-e", "smtp.response.code"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = [ln.split("\t") for ln in r.stdout.splitlines()]
        # Commands carried in TLS records (content type 23) per leg.
        under_tls = {m["proxy_port"]: [], m["mta_port"]: []}
        replies_to_gw = []
        for row in rows:
            src, dst, ctype, cmd, code = (row + [""] * 5)[:5]
            if "23" in ctype.split(","):
                if cmd and int(dst) in under_tls:
                    under_tls[int(dst)].append(cmd.upper())
                if code and int(src) == m["proxy_port"]:
                    replies_to_gw.append(code)
        for port, cmds in under_tls.items():
            self.assertIn("EHLO", cmds, "no EHLO decrypted on port %d: %s" % (port, r.stdout))
            self.assertIn("MAIL", cmds, "no MAIL decrypted on port %d: %s" % (port, r.stdout))
        self.assertIn("RCPT", under_tls[m["proxy_port"]])
        # The proxy answered the RCPT itself: the fake MTA never saw it.
        self.assertNotIn("RCPT", under_tls[m["mta_port"]])
        self.assertIn("550", replies_to_gw)

    def test_smtplib_terminate(self):
        out = self.run_scenario("smtplib-starttls.yaml", SCEN, "smtplib")
        s = results(out)[SID]
        self.assertEqual(s["verdict"], "pass", json.dumps(s, indent=1))
        m = meta(out)
        self.assertEqual(m.get("tls"), "terminate")
        self.assertEqual([d["trigger"] for d in m["decisions"]], ["command RCPT #1"])
        self.assertEqual(m["clients"][0]["exit_status"], 1)
        self.assertIn("refused inside TLS", m["clients"][0]["stderr_tail"])
        # The gateway was handed the CA bundle and verified the proxy with it.
        self.assertTrue(os.path.exists(os.path.join(out, SID, "ca.pem")))
        keys = self.check_keylog(out, m)
        # The saved trace judges as the live run did.
        j = fg("judge", "-s", SCEN, os.path.join(out, m["pcap"]))
        self.assertEqual(j.returncode, 0, j.stdout + j.stderr)
        self.assertIn("PASS", j.stdout)
        self.check_decrypted(out, m, keys)

    def test_swaks_terminate(self):
        if not shutil.which("swaks"):
            self.skipTest("swaks not installed")
        out = self.run_scenario("swaks-starttls.yaml", SCEN, "swaks")
        s = results(out)[SID]
        self.assertEqual(s["verdict"], "pass", json.dumps(s, indent=1))
        m = meta(out)
        self.assertEqual([d["trigger"] for d in m["decisions"]], ["command RCPT #1"])
        self.check_decrypted(out, m, self.check_keylog(out, m))

    def test_passthrough_cannot_see_rcpt(self):
        """The control: without termination the RCPT is inside TLS, the
        trigger cannot fire and the message is delivered."""
        with open(SCEN, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("tls: terminate\n", text)
        path = os.path.join(self.tmp, SID + ".yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace("tls: terminate\n", "tls: passthrough\n"))
        out = self.run_scenario("smtplib-starttls.yaml", path, "passthrough")
        m = meta(out)
        self.assertNotIn("tls", m)
        self.assertEqual(m["decisions"], [])
        self.assertEqual(m["clients"][0]["exit_status"], 0)
        with open(os.path.join(out, m["ledger"]), encoding="utf-8") as f:
            ledger = [json.loads(ln) for ln in f if ln.strip()]
        self.assertEqual(len(ledger), 1)
        self.assertTrue(ledger[0]["tls"])
        # The fake MTA's session with the client is in the key log even then.
        self.check_keylog(out, m, sessions=1)

    # --- the judge decrypts TLS from the trace (starttls-fresh-session) ---

    def tshark_command_at(self, pcap, keys, m, frame):
        """The SMTP command tshark decrypts in `frame` with the key log."""
        if not shutil.which("tshark"):
            return None
        r = subprocess.run(["tshark", "-r", pcap, "-o", "tls.keylog_file:" + keys,
                            "-d", "tcp.port==%d,smtp" % m["proxy_port"],
                            "-Y", "frame.number==%d" % frame, "-T", "fields",
                            "-e", "tls.record.content_type", "-e", "smtp.req.command",
                            "-e", "smtp.req.parameter"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def fresh_session(self, profile, name):
        out = self.run_scenario(profile, FRESH, name)
        s = results(out)[FRESH_ID]
        with open(os.path.join(out, FRESH_ID + ".meta.json"), encoding="utf-8") as f:
            m = json.load(f)
        self.assertEqual(m.get("keylog"), FRESH_ID + ".keys")
        return out, s, m

    def test_fresh_session_conforming(self):
        """smtplib (and swaks when installed): EHLO first inside TLS -> pass,
        live and from the saved trace; the EHLO's frame is one tshark also
        decrypts as EHLO; without the key log the rule cannot pass."""
        profiles = ["smtplib-starttls.yaml"] + (["swaks-starttls.yaml"]
                                                 if shutil.which("swaks") else [])
        for profile in profiles:
            with self.subTest(profile=profile):
                out, s, m = self.fresh_session(profile, "fresh-" + profile)
                self.assertEqual(s["verdict"], "pass", json.dumps(s, indent=1))
                o = s["expectations"][0]
                self.assertEqual(o["rule"], "starttls-fresh-session")
                frame = int(re.search(r"new EHLO \(frame (\d+)\)", o["evidence"]).group(1))
                pcap = os.path.join(out, m["pcap"])
                keys = os.path.join(out, m["keylog"])
                seen = self.tshark_command_at(pcap, keys, m, frame)
                if seen is not None:
                    self.assertIn("23", seen.split("\t")[0], seen)  # inside a TLS record
                    self.assertIn("EHLO", seen.upper(), seen)
                # The saved trace, the key log found through the meta.
                j = fg("judge", "-s", FRESH, pcap)
                self.assertEqual(j.returncode, 0, j.stdout + j.stderr)
                self.assertIn("PASS", j.stdout)
                # Without the key file: the inside is unknown -> inconc, never pass.
                moved = keys + ".away"
                os.rename(keys, moved)
                try:
                    j = fg("judge", "-s", FRESH, pcap)
                finally:
                    os.rename(moved, keys)
                self.assertEqual(j.returncode, 1, j.stdout + j.stderr)
                self.assertIn("INCONC", j.stdout)
                self.assertNotIn("PASS", j.stdout)
                self.assertIn("key log", j.stdout)
                # Named explicitly: the same verdict as the run.
                os.rename(keys, moved)
                try:
                    j = fg("judge", "-s", FRESH, "--keylog", moved, pcap)
                finally:
                    os.rename(moved, keys)
                self.assertEqual(j.returncode, 0, j.stdout + j.stderr)

    def test_fresh_session_peer_fails(self):
        """The test peer sends MAIL inside TLS without a new EHLO: the
        judge reads that MAIL FROM from the decrypted trace and fails it."""
        out, s, m = self.fresh_session("peer-no-ehlo-after-tls.yaml", "fresh-peer")
        self.assertEqual(s["verdict"], "fail", json.dumps(s, indent=1))
        o = s["expectations"][0]
        self.assertIn("MAIL FROM:<user1@company1.test>", o["summary"])
        self.assertIn("before any EHLO", o["summary"])
        pcap = os.path.join(out, m["pcap"])
        keys = os.path.join(out, m["keylog"])
        seen = self.tshark_command_at(pcap, keys, m, o["frames"][-1])
        if seen is not None:
            self.assertIn("MAIL", seen.upper(), seen)
        j = fg("judge", "-s", FRESH, pcap)
        self.assertEqual(j.returncode, 1, j.stdout + j.stderr)
        self.assertIn("FAIL", j.stdout)
        self.assertIn("MAIL FROM:<user1@company1.test>", j.stdout)

    def test_bad_keylog(self):
        """A malformed key log named with --keylog: file:line:col, exit 2."""
        out, _, m = self.fresh_session("smtplib-starttls.yaml", "fresh-badkeys")
        bad = os.path.join(self.tmp, "bad.keys")
        with open(bad, "w", encoding="ascii") as f:
            f.write("# keys\nCLIENT_RANDOM 00zz\n")
        j = fg("judge", "-s", FRESH, "--keylog", bad, os.path.join(out, m["pcap"]))
        self.assertEqual(j.returncode, 2, j.stdout + j.stderr)
        self.assertIn(bad + ":2:17:", j.stdout + j.stderr)

    def test_bad_tls_value(self):
        path = os.path.join(self.tmp, "bad.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("id: bad-tls\nleg: outbound\ntls: terminated\n")
        gw = os.path.join(SRC, "scenarios", "gateways", "refgw.yaml")
        r = fg("run", "-q", "-g", gw, "-o", os.path.join(self.tmp, "bad"), path, timeout=60)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertRegex(r.stderr, re.escape(path) + r":3:6: .*tls")


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:], verbosity=2)
