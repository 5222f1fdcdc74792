#!/usr/bin/env python3
"""The KB scenarios on the BDAT and HELO paths, against minirelay
(scenarios/gateways/peers/minirelay.py): a relay that sends with BDAT when
CHUNKING is offered, or opens with HELO, as real MTAs do.  Its correct
modes pass (or skip the path they do not take, with the reason), and its
bug modes are caught by the KB scenario of their path: a hang after the
last BDAT chunk by Q129140, a crash after a drop following HELO by
Q197142.  A retry later than the profile's schedule fails only
r1-retry-on-schedule-after-drop, never the KB scenario.

Usage: e2e_kb_paths.py BUILD_DIR SOURCE_DIR
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
SC = os.path.join(SRC, "scenarios")
GW = os.path.join(SC, "gateways")
Q129140_DATA = os.path.join(SC, "kb", "kb-q129140-hang-after-data.yaml")
Q129140_BDAT = os.path.join(SC, "kb", "kb-q129140-hang-after-bdat.yaml")
Q197142 = os.path.join(SC, "kb", "kb-q197142-ehlo-dropped-before-reply.yaml")
SCHEDULE = os.path.join(SC, "rfc5321", "r1-retry-on-schedule-after-drop.yaml")


def run(tmp, profile, scenarios):
    out = os.path.join(tmp, profile)
    p = subprocess.run([FG, "run", "-q", "--seed", "11", "-g", os.path.join(GW, profile + ".yaml"),
                        "-o", out] + scenarios, capture_output=True, text=True, timeout=600)
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        res = json.load(f)
    return p, {s["id"]: s for s in res["scenarios"]}


def text_of(s):
    return " ".join((e["summary"] + " " + e["evidence"]) for e in s["expectations"]).lower()


class Paths(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-kbp-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_bdat_relay_passes_both_data_paths(self):
        p, res = run(self.tmp, "peer-relay-bdat", [Q129140_DATA, Q129140_BDAT])
        for sid, s in res.items():
            self.assertEqual(s["verdict"], "pass", json.dumps(s, indent=1))
        # the BDAT scenario was judged on BDAT: the stall came at BDAT #1
        self.assertIn("bdat", text_of(res["kb-q129140-hang-after-bdat"]))
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_hang_after_last_chunk_fails_only_the_bdat_path(self):
        p, res = run(self.tmp, "peer-relay-bdat-hang", [Q129140_DATA, Q129140_BDAT])
        self.assertEqual(res["kb-q129140-hang-after-data"]["verdict"], "pass")
        s = res["kb-q129140-hang-after-bdat"]
        self.assertEqual(s["verdict"], "fail")
        failing = {e["rule"] for e in s["expectations"] if e["verdict"] == "fail"}
        self.assertEqual(failing, {"closes-after-stall", "message-fate"})
        self.assertIn("never closed", text_of(s))
        self.assertEqual(p.returncode, 1, p.stderr)

    def test_helo_relay_passes_and_skips_bdat_with_reason(self):
        p, res = run(self.tmp, "peer-relay-helo", [Q197142, Q129140_BDAT, SCHEDULE])
        s = res["kb-q197142-ehlo-dropped-before-reply"]
        self.assertEqual(s["verdict"], "pass", json.dumps(s, indent=1))
        self.assertIn("helo", text_of(s))
        self.assertEqual(res["r1-retry-on-schedule-after-drop"]["verdict"], "pass")
        b = res["kb-q129140-hang-after-bdat"]
        self.assertEqual(b["verdict"], "skip")
        self.assertIn("CHUNKING was never offered", b.get("error") or "")

    def test_crash_after_helo_drop_fails_q197142(self):
        p, res = run(self.tmp, "peer-relay-helo-crash", [Q197142])
        s = res["kb-q197142-ehlo-dropped-before-reply"]
        self.assertEqual(s["verdict"], "fail")
        alive = [e for e in s["expectations"] if e["rule"] == "gateway-alive"][0]
        self.assertEqual(alive["verdict"], "fail")
        self.assertIn("sigabrt", (alive["summary"] + alive["evidence"]).lower())

    def test_late_retry_fails_the_schedule_rule_not_the_kb(self):
        # The relay retries after 8 s while its profile declares 1 s: the
        # KB symptom (the service stops) did not happen.
        p, res = run(self.tmp, "peer-relay-late-retry", [Q197142, SCHEDULE])
        self.assertEqual(res["kb-q197142-ehlo-dropped-before-reply"]["verdict"], "pass",
                         json.dumps(res["kb-q197142-ehlo-dropped-before-reply"], indent=1))
        s = res["r1-retry-on-schedule-after-drop"]
        self.assertEqual(s["verdict"], "fail")
        self.assertIn("retry schedule", text_of(s))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
