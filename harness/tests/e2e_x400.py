#!/usr/bin/env python3
"""End-to-end checks of the X.400 leg (KB Q194685): the Q194685 scenario
against refgw's X.400 correct mode and every bad-minor-sync variant, the
verdicts and their evidence (SPDU, serial number, rule), `faultgate judge`
on the saved pcaps, and tshark's decoding of every capture compared with
`faultgate x400-timeline`: the session SPDU types and serial numbers of
every frame must be the same.

Usage: e2e_x400.py BUILD_DIR SOURCE_DIR
Every child has a timeout.
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
SCEN = os.path.join(SRC, "scenarios", "kb", "kb-q194685-x400-invalid-minor-sync.yaml")
GW = os.path.join(SRC, "scenarios", "gateways")
CAPTURE = os.environ.get("FG_E2E_CAPTURE", "auto")

# variant -> the x400_state rule its first invalid sync point breaks
VARIANTS = {
    "first-serial-0": "serial-not-vm",
    "duplicate-serial": "serial-not-vm",
    "skipped-serial": "serial-not-vm",
    "no-reset": "serial-not-vm",
    "no-gt": "concatenation",
    "window-overrun": "window-exceeded",
}
# The SI of a MIP (X.225 §8.3; x400-wire.md §2.2).
SI_MIP = 49

# tshark cannot find a presentation PCI in X.410-1984 mode user data and
# flags every such DT; that is its known limitation (x400-wire.md §4).
TSHARK_X410_NOISE = "can't get spdu type from session dissector"


def fg(*args, timeout=180):
    return subprocess.run([FG, *args], capture_output=True, text=True, timeout=timeout)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def profiles():
    out = {"correct": os.path.join(GW, "refgw-x400.yaml")}
    for v in VARIANTS:
        out[v] = os.path.join(GW, "refgw-bad-minor-sync-%s.yaml" % v)
    return out


def tshark_frames(pcap, port):
    """frame -> (list of SIs, list of serial numbers) as tshark decodes them."""
    p = subprocess.run(["tshark", "-n", "-r", pcap, "-d", "tcp.port==%d,tpkt" % port,
                        "-Y", "ses", "-T", "fields", "-E", "separator=\t",
                        "-e", "frame.number", "-e", "ses.type", "-e", "ses.serial_number"],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("tshark failed: " + p.stderr)
    frames = {}
    for line in p.stdout.splitlines():
        cols = line.split("\t")
        while len(cols) < 3:
            cols.append("")
        types = [int(x) for x in cols[1].split(",") if x]
        serials = [x for x in cols[2].split(",") if x]
        frames[int(cols[0])] = (types, serials)
    return frames


def timeline_frames(pcap, port):
    """The same from `faultgate x400-timeline --json`."""
    p = fg("x400-timeline", "--port", str(port), "--json", pcap)
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
    return frames, json.loads(p.stdout)


class Q194685(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-e2e-x400-")
        cls.runs = {}
        procs = {}
        # The runs are independent (ephemeral ports, own directories): run
        # them side by side.
        for name, prof in profiles().items():
            out = os.path.join(cls.tmp, name)
            procs[name] = (subprocess.Popen(
                [FG, "run", "-q", "--capture", CAPTURE, "--seed", "5", "-g", prof, "-o", out, SCEN],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out)
        for name, (proc, out) in procs.items():
            try:
                so, se = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                so, se = proc.communicate()
            cls.runs[name] = (proc.returncode, so + se, out)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def scenario(self, name):
        rc, text, out = self.runs[name]
        path = os.path.join(out, "results.json")
        self.assertTrue(os.path.exists(path), "%s: no results.json: %s" % (name, text))
        res = load(path)
        self.assertEqual(len(res["scenarios"]), 1, text)
        sc = res["scenarios"][0]
        meta = load(os.path.join(out, sc["pcap"][:-len(".pcap")] + ".meta.json"))
        return rc, text, out, sc, meta

    def outcome(self, sc, rule):
        got = [e for e in sc["expectations"] if e["rule"] == rule]
        self.assertEqual(len(got), 1, json.dumps(sc, indent=1)[:3000])
        return got[0]

    def test_correct_mode_passes(self):
        rc, text, out, sc, meta = self.scenario("correct")
        self.assertEqual(rc, 0, text + json.dumps(sc, indent=1)[:4000])
        self.assertEqual(sc["verdict"], "pass")
        sync = self.outcome(sc, "x400-minor-sync-valid")
        self.assertEqual(sync["verdict"], "pass")
        # Minor sync points were really exercised, not vacuously valid.
        m = re.match(r"(\d+) minor sync point", sync["summary"])
        self.assertTrue(m and int(m.group(1)) > 0, sync["summary"])
        self.assertEqual(self.outcome(sc, "x400-association-completed")["verdict"], "pass")
        self.assertGreater(meta.get("x400_port", 0), 0)

    def test_each_variant_fails_naming_spdu_serial_and_rule(self):
        for variant, rule in VARIANTS.items():
            with self.subTest(variant=variant):
                rc, text, out, sc, meta = self.scenario(variant)
                self.assertEqual(rc, 1, text)
                self.assertEqual(sc["verdict"], "fail")
                sync = self.outcome(sc, "x400-minor-sync-valid")
                self.assertEqual(sync["verdict"], "fail", sync["summary"])
                m = re.search(r"\b(GT\+)?MIP serial (\S+) \(X\.400 connection \d+, frame (\d+) "
                              r"at [0-9.]+ s\) broke ([a-z-]+) \((X\.22[58][^)]*)\)",
                              sync["summary"])
                self.assertTrue(m, sync["summary"])
                serial, frame, broke = m.group(2), int(m.group(3)), m.group(4)
                self.assertEqual(broke, rule, sync["summary"])
                self.assertIn(frame, sync["frames"])
                self.assertIn("frame %d" % frame, sync["evidence"])
                # The named SPDU and serial are what tshark sees in that frame.
                if shutil.which("tshark"):
                    ts = tshark_frames(os.path.join(out, sc["pcap"]), meta["x400_port"])
                    self.assertIn(frame, ts)
                    self.assertIn(SI_MIP, ts[frame][0])
                    self.assertIn(serial, ts[frame][1])
                # The foreign system's reaction is part of the evidence.
                self.assertIn("AB (transport disconnect", sync["evidence"])
                self.assertEqual(self.outcome(sc, "x400-association-completed")["verdict"],
                                 "fail")

    def test_judge_gives_the_same_verdicts(self):
        for name in self.runs:
            with self.subTest(run=name):
                rc, text, out, sc, meta = self.scenario(name)
                p = fg("judge", "-s", SCEN, os.path.join(out, sc["pcap"]))
                self.assertEqual(p.returncode, rc, p.stdout + p.stderr)

    @unittest.skipUnless(shutil.which("tshark"), "tshark is not installed")
    def test_tshark_agrees_with_timeline(self):
        for name in self.runs:
            with self.subTest(run=name):
                rc, text, out, sc, meta = self.scenario(name)
                pcap = os.path.join(out, sc["pcap"])
                port = meta["x400_port"]
                ts = tshark_frames(pcap, port)
                mine, events = timeline_frames(pcap, port)
                self.assertTrue(mine, "no SPDU in the X.400 timeline")
                self.assertEqual(sorted(ts), sorted(mine), "frames with session SPDUs")
                for f in mine:
                    self.assertEqual(ts[f], mine[f], "frame %d: tshark vs timeline" % f)
                # tshark decodes every X.400 frame: nothing malformed but
                # its documented X.410-mode presentation limitation.
                p = subprocess.run(["tshark", "-n", "-r", pcap, "-d", "tcp.port==%d,tpkt" % port,
                                    "-Y", "_ws.malformed && tcp.port==%d" % port,
                                    "-T", "fields", "-E", "aggregator=\x1e", "-e", "frame.number",
                                    "-e", "_ws.expert.message"],
                                   capture_output=True, text=True, timeout=120)
                # The run's frame comments (pcapng) are expert items too, cut
                # to tshark's label length.
                cm = subprocess.run(["tshark", "-n", "-r", pcap, "-Y", "frame.comment", "-T",
                                     "fields", "-E", "aggregator=\x1e", "-e", "frame.comment"],
                                    capture_output=True, text=True, timeout=120)
                comments = [c for line in cm.stdout.splitlines() for c in line.split("\x1e")]
                for line in p.stdout.splitlines():
                    fields = line.split("\t") + [""]
                    for msg in fields[1].split("\x1e"):
                        if msg and not any(c.startswith(msg) for c in comments):
                            self.assertIn(TSHARK_X410_NOISE, msg, line)
                # AE and AEA, MIP and MIA all appear in the correct run.
                if name == "correct":
                    names = {e.get("spdu") for e in events}
                    self.assertTrue({"MIP", "MIA", "AE", "AEA", "CN", "AC"} <= names, names)


    def test_transcript_lists_the_timelines_spdus(self):
        """faultgate transcript shows the X.400 connections as the timeline
        decodes them: every SPDU frame, with its serial number."""
        rc, text, out, sc, meta = self.scenario("correct")
        pcap = os.path.join(out, sc["pcap"])
        mine, events = timeline_frames(pcap, meta["x400_port"])
        p = fg("transcript", "--json", pcap)
        self.assertEqual(p.returncode, 0, p.stderr)
        doc = json.loads(p.stdout)
        x4 = [c for c in doc["connections"] if c["protocol"] == "x400"
              and c["server"].endswith(":%d" % meta["x400_port"])]
        self.assertTrue(x4, "no X.400 connection in the transcript")
        spdu = {e["frame"] for c in x4 for e in c["events"] if e["kind"] == "spdu"}
        self.assertEqual(spdu, set(mine))
        self.assertTrue(any("serial" in e["text"] for c in x4 for e in c["events"]))

if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
