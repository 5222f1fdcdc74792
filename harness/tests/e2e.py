#!/usr/bin/env python3
"""End-to-end checks of `faultgate run` and `faultgate judge` as a user runs
them: the Q129140 scenario against refgw's correct mode and its
no-data-timeout mode, judging the saved pcaps again, tshark's reading of
every pcap, and bad input.

Usage: e2e.py BUILD_DIR SOURCE_DIR [TEST...]
Every child has a timeout; the harness itself bounds every wait inside.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build"
SRC = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "."
FG = os.path.join(BUILD, "faultgate")
SCEN = os.path.join(SRC, "scenarios", "kb", "kb-q129140-hang-after-data.yaml")
GOOD = os.path.join(SRC, "scenarios", "gateways", "refgw.yaml")
BUGGY = os.path.join(SRC, "scenarios", "gateways", "refgw-no-data-timeout.yaml")
CAPTURE = os.environ.get("FG_E2E_CAPTURE", "auto")


def fg(*args, timeout=180):
    return subprocess.run([FG, *args], capture_output=True, text=True, timeout=timeout)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Q129140(unittest.TestCase):
    """The issue's first must-show, against both refgw profiles."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-e2e-")
        cls.runs = {}
        for name, prof in (("good", GOOD), ("buggy", BUGGY)):
            out = os.path.join(cls.tmp, name)
            p = fg("run", "-q", "--capture", CAPTURE, "--seed", "7", "-g", prof, "-o", out, SCEN)
            cls.runs[name] = (p, out)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def scenario(self, name):
        p, out = self.runs[name]
        res = load(os.path.join(out, "results.json"))
        self.assertEqual(len(res["scenarios"]), 1, p.stdout + p.stderr)
        return p, out, res["scenarios"][0]

    def test_correct_gateway_passes(self):
        p, out, sc = self.scenario("good")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr + json.dumps(sc, indent=1)[:4000])
        self.assertEqual(sc["verdict"], "pass")
        rules = {e["rule"]: e["verdict"] for e in sc["expectations"]}
        self.assertEqual(rules, {"closes-after-stall": "pass", "message-fate": "pass",
                                 "gateway-alive": "pass"})

    def test_buggy_gateway_fails_naming_the_stall(self):
        p, out, sc = self.scenario("buggy")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(sc["verdict"], "fail")
        cas = [e for e in sc["expectations"] if e["rule"] == "closes-after-stall"][0]
        self.assertEqual(cas["verdict"], "fail")
        text = (cas["summary"] + "\n" + cas["evidence"]).lower()
        self.assertIn("stall", text)
        self.assertIn("connection #1", text)
        self.assertIn("never closed", text)
        self.assertTrue(cas["frames"], "evidence carries frame numbers")

    def test_judge_gives_the_same_verdicts(self):
        for name in ("good", "buggy"):
            p, out, sc = self.scenario(name)
            pcap = os.path.join(out, sc["pcap"])
            jout = os.path.join(self.tmp, name + "-judged")
            j = fg("judge", "-s", SCEN, "-o", jout, pcap)
            self.assertEqual(j.returncode, p.returncode, j.stdout + j.stderr)
            again = load(os.path.join(jout, "results.json"))["scenarios"][0]
            self.assertEqual(again["verdict"], sc["verdict"])
            self.assertEqual([(e["rule"], e["verdict"], e["summary"]) for e in again["expectations"]],
                             [(e["rule"], e["verdict"], e["summary"]) for e in sc["expectations"]])

    def test_junit_written(self):
        import xml.etree.ElementTree as ET
        for name in ("good", "buggy"):
            _, out, sc = self.scenario(name)
            root = ET.parse(os.path.join(out, "junit.xml")).getroot()
            cases = root.findall(".//testcase")
            self.assertEqual([c.get("name") for c in cases], [sc["id"]])
            failed = cases[0].find("failure") is not None
            self.assertEqual(failed, sc["verdict"] == "fail")

    @unittest.skipUnless(shutil.which("tshark"), "tshark is not installed")
    def test_pcapng_comments_show_the_stall_and_the_fail_evidence(self):
        _, out, sc = self.scenario("buggy")
        pcap = os.path.join(out, sc["pcap"])
        with open(pcap, "rb") as f:
            self.assertEqual(f.read(4), b"\x0a\x0d\x0d\x0a", "the run writes pcapng")
        p = subprocess.run(["tshark", "-n", "-r", pcap, "-Y", "frame.comment", "-T", "fields",
                            "-e", "frame.number", "-e", "frame.comment"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        comments = {}
        for line in p.stdout.splitlines():
            num, _, text = line.partition("\t")
            comments.setdefault(int(num), []).append(text)
        flat = "\n".join(t for ts in comments.values() for t in ts)
        self.assertRegex(flat, r"fault 1: stall after reply 354, conn #1")
        cas = [e for e in sc["expectations"] if e["rule"] == "closes-after-stall"][0]
        for frame in cas["frames"]:
            self.assertIn(frame, comments, flat)
            self.assertTrue(any(t.startswith("FAIL closes-after-stall:") for t in comments[frame]),
                            comments[frame])
        # faultgate transcript marks the same frames from meta.json and results.json
        t = fg("transcript", pcap)
        self.assertEqual(t.returncode, 0, t.stderr)
        self.assertIn("** fault 1: stall after reply 354, conn #1", t.stdout)
        self.assertIn("** FAIL closes-after-stall:", t.stdout)
        self.assertRegex(t.stdout, r"-> DATA\n\s+\d+\s+[\d.]+\s+<- 354 ")
        # the run's metadata in the section header (capinfos: wireshark-common, tshark's)
        info = subprocess.run(["capinfos", pcap], capture_output=True, text=True, timeout=60) \
            if shutil.which("capinfos") else None
        if info is not None:
            self.assertEqual(info.returncode, 0, info.stderr)
            self.assertIn("profile refgw-no-data-timeout", info.stdout)
            self.assertIn("seed 7", info.stdout)

    @unittest.skipUnless(shutil.which("tshark"), "tshark is not installed")
    def test_tshark_reads_pcaps_and_agrees_with_transcript(self):
        for name in ("good", "buggy"):
            _, out, sc = self.scenario(name)
            pcap = os.path.join(out, sc["pcap"])
            mal = subprocess.run(["tshark", "-n", "-r", pcap, "-Y", "_ws.malformed"],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(mal.returncode, 0, mal.stderr)
            self.assertEqual(mal.stdout.strip(), "", "malformed packets:\n" + mal.stdout)
            # tshark decodes SMTP on port 25 only; tell it the run's ports.
            meta = load(pcap[:-len(".pcap")] + ".meta.json")
            ports = [meta["gateway_port"], meta["proxy_port"], meta["mta_port"]]
            decode = []
            for port in ports:
                decode += ["-d", "tcp.port==%d,smtp" % port]
            cmd = subprocess.run(["tshark", "-n", "-r", pcap, *decode, "-Y", "smtp.req.command",
                                  "-T", "fields", "-e", "tcp.stream", "-e", "smtp.req.command"],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(cmd.returncode, 0, cmd.stderr)
            got = []
            for line in cmd.stdout.splitlines():
                fields = line.split("\t")
                # One frame may carry several pipelined commands.
                got += [c.upper() for c in fields[1].split(",") if c]
            want = []
            for conn in sc["connections"]:
                for ev in conn["events"]:
                    if ev["kind"] == "command":
                        want.append(ev["text"].split(" ")[0].split(":")[0].upper())
            self.assertTrue(want, "the transcript has commands")
            self.assertEqual(sorted(got), sorted(want))


class BadInput(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fg-e2e-bad-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_yaml_error_names_file_line_col(self):
        path = self.write("broken.yaml", "id: x\ntitle: [unclosed\nexpect: []\n")
        p = fg("run", "-g", GOOD, "-o", os.path.join(self.tmp, "o"), path)
        self.assertEqual(p.returncode, 2)
        line = p.stderr.strip().splitlines()[-1]
        self.assertRegex(line, r"broken\.yaml:\d+:\d+: ")

    def test_unknown_rule_names_file_line_col(self):
        path = self.write("rule.yaml",
                          "id: bad-rule\nleg: outbound\nmessages:\n  - {from: a@b.test, to: [c@d.test]}\n"
                          "expect:\n  - {rule: gateway-alive}\n  - {rule: no-such-rule}\n")
        p = fg("run", "-g", GOOD, "-o", os.path.join(self.tmp, "o"), path)
        self.assertEqual(p.returncode, 2)
        self.assertRegex(p.stderr, r"rule\.yaml:7:\d+: .*no-such-rule")

    def test_gateway_never_ready_is_an_error(self):
        prof = self.write("never.yaml",
                          "name: never-ready\nstart:\n  argv: [\"sleep\", \"30\"]\n"
                          "ready: {tcp: gateway_port, timeout: 2s}\nstop: {signal: TERM, grace: 1s}\n"
                          "timeouts: {data_done: 1s, data_block: 1s, retry: 1s}\n")
        out = os.path.join(self.tmp, "o")
        p = fg("run", "-g", prof, "-o", out, SCEN, timeout=60)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        sc = load(os.path.join(out, "results.json"))["scenarios"][0]
        self.assertEqual(sc["verdict"], "error")
        self.assertIn("ready", sc["error"])
        self.assertTrue(os.path.exists(os.path.join(out, sc["pcap"])), "the trace is kept")


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2)
