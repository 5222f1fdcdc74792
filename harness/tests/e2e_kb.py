#!/usr/bin/env python3
"""The KB discrimination matrix: every KB scenario against refgw's correct
mode (all pass) and against each refgw bug mode (each fails exactly its own
scenario, and the evidence names the symptom). Prints the matrix.

Usage: e2e_kb.py BUILD_DIR SOURCE_DIR
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
KB = os.path.join(SRC, "scenarios", "kb")
GW = os.path.join(SRC, "scenarios", "gateways")

# bug profile -> (the scenario it must fail, words its evidence must hold)
BUGS = {
    "refgw-no-data-timeout": ("kb-q129140-hang-after-data", ["stall", "never closed"]),
    "refgw-crash-on-ehlo-drop": ("kb-q197142-ehlo-dropped-before-reply", ["died", "sigabrt"]),
    "refgw-silent-drop": ("kb-q135031-silent-queue-stall", ["lost", "neither delivered nor bounced"]),
    "refgw-serial-inbound": ("kb-q131150-inbound-refused-while-busy", ["inbound", "greeting"]),
    "refgw-bad-minor-sync": ("kb-q194685-x400-invalid-minor-sync", ["minor", "serial"]),
}


# Scenarios of a path a gateway may not take: skipped, with this reason,
# by a gateway that does not take it (refgw never sends BDAT).
PATH_SKIPS = {"kb-q129140-hang-after-bdat": "does not use BDAT"}


def ok_verdict(sid, s):
    """pass, or the skip of a path the gateway does not take."""
    if s["verdict"] == "skip" and sid in PATH_SKIPS:
        return PATH_SKIPS[sid] in (s.get("error") or "")
    return s["verdict"] == "pass"


def label(sid):
    """q129140, q129140/bdat, ...: the KB number, and the path if the id names one."""
    return sid.split("-")[1] + ("/bdat" if sid.endswith("-bdat") else "")


def scenario_ids():
    return sorted(f[:-5] for f in os.listdir(KB) if f.endswith(".yaml"))


def run(profile, out):
    # -j 5: the whole KB suite at once, as a CI user runs it (the verdicts
    # must not depend on it).
    p = subprocess.run([FG, "run", "-q", "-j", "5", "--seed", "11", "-g", os.path.join(GW, profile + ".yaml"),
                        "-o", out, KB], capture_output=True, text=True, timeout=900)
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        res = json.load(f)
    return p, {s["id"]: s for s in res["scenarios"]}


class Matrix(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-kb-")
        cls.ids = scenario_ids()
        cls.profiles = ["refgw"] + [b for b, (sid, _) in BUGS.items()
                                    if sid in cls.ids and os.path.exists(os.path.join(GW, b + ".yaml"))]
        cls.results = {}
        for prof in cls.profiles:
            cls.results[prof] = run(prof, os.path.join(cls.tmp, prof))
        # The printed table: one row per profile, one column per scenario.
        width = max(len(p) for p in cls.profiles)
        print("\n%-*s  %s" % (width, "profile \\ scenario", "  ".join(label(i) for i in cls.ids)),
              file=sys.stderr)
        for prof in cls.profiles:
            cells = [cls.results[prof][1].get(i, {}).get("verdict", "-").upper()[:6].ljust(len(label(i)))
                     for i in cls.ids]
            print("%-*s  %s" % (width, prof, " ".join(cells)), file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_correct_mode_passes_every_kb_scenario(self):
        p, res = self.results["refgw"]
        self.assertEqual(sorted(res), self.ids)
        for sid, s in res.items():
            self.assertTrue(ok_verdict(sid, s), "%s: %s" % (sid, json.dumps(s, indent=1)))
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_each_bug_fails_exactly_its_scenario_naming_the_symptom(self):
        for prof in self.profiles[1:]:
            own, words = BUGS[prof]
            p, res = self.results[prof]
            self.assertEqual(p.returncode, 1, prof + ": " + p.stderr)
            for sid, s in res.items():
                with self.subTest(profile=prof, scenario=sid):
                    if sid == own:
                        self.assertEqual(s["verdict"], "fail")
                        failing = [e for e in s["expectations"] if e["verdict"] == "fail"]
                        text = " ".join(e["summary"] + " " + e["evidence"] for e in failing).lower()
                        for w in words:
                            self.assertIn(w, text)
                    else:
                        self.assertTrue(ok_verdict(sid, s), json.dumps(s, indent=1))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
