#!/usr/bin/env python3
"""A real Postfix as the gateway under test: the SMTP KB scenarios against a
private Postfix instance (scenarios/gateways/postfix.yaml). Postfix passes
them all; the X.400 scenario is skipped (Postfix has no X.400 side). Needs
Debian's postfix and root (Postfix's own files must belong to root).

Usage: e2e_postfix.py BUILD_DIR SOURCE_DIR
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


@unittest.skipUnless(os.path.exists("/usr/sbin/postfix") and os.geteuid() == 0,
                     "needs Debian's postfix and root")
class PostfixKB(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fg-postfix-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_kb_suite(self):
        out = os.path.join(self.tmp, "out")
        p = subprocess.run([FG, "run", "-q", "--seed", "5", "-g",
                            os.path.join(SRC, "scenarios", "gateways", "postfix.yaml"), "-o", out,
                            os.path.join(SRC, "scenarios", "kb")],
                           capture_output=True, text=True, timeout=600)
        with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
            res = json.load(f)
        verdicts = {s["id"]: s["verdict"] for s in res["scenarios"]}
        print("\n" + "\n".join("%-45s %s" % kv for kv in sorted(verdicts.items())), file=sys.stderr)
        self.assertEqual(p.returncode, 0, p.stderr + json.dumps(verdicts, indent=1))
        self.assertEqual(verdicts.pop("kb-q194685-x400-invalid-minor-sync"), "skip")
        # Postfix's client never sends BDAT: the BDAT path does not apply.
        bdat = {s["id"]: s for s in res["scenarios"]}["kb-q129140-hang-after-bdat"]
        self.assertEqual(verdicts.pop("kb-q129140-hang-after-bdat"), "skip")
        self.assertIn("does not use BDAT", bdat.get("error") or "")
        self.assertTrue(verdicts)
        for sid, v in verdicts.items():
            self.assertEqual(v, "pass", sid)
        gw = res["scenarios"][0]["gateway"]
        self.assertEqual(gw["name"], "postfix")
        self.assertTrue(gw["version"], "the Postfix version is recorded")
        # No Postfix process outlives the run (its master leaves the group).
        left = subprocess.run(["pgrep", "-f", out], capture_output=True, text=True)
        self.assertEqual(left.stdout.strip(), "", "processes left: " + left.stdout)

    def smuggle(self, profile, variant):
        out = os.path.join(self.tmp, profile)
        scen = os.path.join(SRC, "scenarios", "security", "sec-smuggle-%s.yaml" % variant)
        subprocess.run([FG, "run", "-q", "--seed", "5", "-g",
                        os.path.join(SRC, "scenarios", "gateways", profile + ".yaml"), "-o", out,
                        scen], capture_output=True, text=True, timeout=300)
        with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
            s = json.load(f)["scenarios"][0]
        return s, {e["rule"]: e for e in s["expectations"]}

    def test_smuggling_defence(self):
        """Debian's Postfix as configured by default (smtpd_forbid_bare_newline
        = no, and its exclusions cover loopback) takes <LF>.<LF> as the end
        of data (CVE-2023-51764); with smtpd_forbid_bare_newline = normalize
        and no exclusions it does not.  The same scenario tells them apart."""
        s, r = self.smuggle("postfix", "lflf")
        self.assertEqual(s["verdict"], "fail", json.dumps(r, indent=1))
        ev = r["no-smuggled-message"]["evidence"]
        self.assertIn("smuggled@", ev)
        self.assertIn("relayed on outbound connection", ev)
        s, r = self.smuggle("postfix-hardened", "lflf")
        self.assertEqual(s["verdict"], "pass", json.dumps(r, indent=1))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
