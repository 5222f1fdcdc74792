#!/usr/bin/env python3
"""Parallel runs (-j) and interrupted runs: the same verdicts and fault
decisions at -j 1 and -j N; the profile's `parallel: 1` honoured; SIGTERM,
and SIGINT to a run whose SIGINT was inherited ignored (a background job),
after the first verdict: results.json and junit.xml exist, validate, hold the
finished verdicts, and no gateway process is left; a second signal skips the
gateways' stop grace; --last-failed runs again only what did not pass.

Usage: e2e_parallel.py BUILD_DIR SOURCE_DIR
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build"
SRC = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "."
FG = os.path.join(BUILD, "faultgate")
FAKE_GW = os.path.join(BUILD, "harness", "tests", "fake_gateway")
KB = os.path.join(SRC, "scenarios", "kb")
GW = os.path.join(SRC, "scenarios", "gateways")
REFGW = os.path.join(GW, "refgw.yaml")
SCHEMA = os.path.join(SRC, "reports", "results.schema.json")
XSD = os.path.join(SRC, "reports", "junit.xsd")

# Probabilistic faults: which replies are delayed depends on the seed, so
# the decisions show whether a scenario's seed depends on anything but the
# run's seed and the scenario's id.
P_SCENARIO = """id: {id}
title: replies delayed at random
leg: outbound
deadline: 15s
messages:
  - {{from: user1@company1.test, to: [user2@company2.test, user3@company2.test], size: 1k, count: 2}}
faults:
  - "reply 2xx, every, p 0.5, each: delay 20ms"
expect:
  - {{rule: message-fate, fate: delivered-once, within: 10s}}
"""


def results(out):
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return json.load(f)


def by_id(doc):
    return {s["id"]: s for s in doc["scenarios"]}


def decisions(s):
    return [(d["conn"], d["fault"], d["trigger"], d["action"]) for d in s["decisions"]]


def left_behind(root, cwd_only=False):
    """Processes (but this one) running in root or, unless cwd_only, naming it."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if cwd.startswith(root) or (not cwd_only and root in cmd):
            found.append("%s %s" % (pid, cmd))
    return found


class Parallel(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fg-par-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_fg(self, *args, timeout=600):
        return subprocess.run([FG, "run"] + list(args), capture_output=True, text=True,
                              timeout=timeout)

    def validate(self, out):
        import jsonschema
        with open(SCHEMA, encoding="utf-8") as f:
            jsonschema.validate(results(out), json.load(f))
        if shutil.which("xmllint"):
            p = subprocess.run(["xmllint", "--noout", "--schema", XSD, os.path.join(out, "junit.xml")],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)

    def test_same_verdicts_and_decisions_at_any_j_and_in_any_company(self):
        sdir = os.path.join(self.tmp, "p")
        os.mkdir(sdir)
        ids = ["par-p-%d" % i for i in range(1, 4)]
        for i in ids:
            with open(os.path.join(sdir, i + ".yaml"), "w", encoding="utf-8") as f:
                f.write(P_SCENARIO.format(id=i))
        runs = {}
        for name, args in (("j1", ["-j", "1", sdir]), ("j3", ["-j", "3", sdir]),
                           ("alone", ["-j", "2", os.path.join(sdir, ids[1] + ".yaml")])):
            out = os.path.join(self.tmp, name)
            p = self.run_fg("-q", "--seed", "99", "-g", REFGW, "-o", out, *args)
            self.assertIn(p.returncode, (0, 1), p.stderr)
            runs[name] = results(out)
        j1, j3, alone = (by_id(runs[k]) for k in ("j1", "j3", "alone"))
        # catalogue order, whatever order they finished in
        self.assertEqual([s["id"] for s in runs["j3"]["scenarios"]], ids)
        for i in ids:
            self.assertEqual(j1[i]["verdict"], j3[i]["verdict"], i)
            self.assertTrue(decisions(j1[i]), i)
            self.assertEqual(decisions(j1[i]), decisions(j3[i]), i)
        self.assertEqual(decisions(alone[ids[1]]), decisions(j1[ids[1]]))

    def test_profile_parallel_1_runs_one_at_a_time(self):
        prof = os.path.join(self.tmp, "refgw-serial.yaml")
        with open(REFGW, encoding="utf-8") as f:
            text = f.read()
        with open(prof, "w", encoding="utf-8") as f:
            f.write(text + "\nparallel: 1\n")
        out = os.path.join(self.tmp, "serial")
        scen = [os.path.join(KB, "kb-q135031-silent-queue-stall.yaml"),
                os.path.join(KB, "kb-q194685-x400-invalid-minor-sync.yaml"),
                os.path.join(KB, "kb-q197142-ehlo-dropped-before-reply.yaml")]
        p = self.run_fg("-j", "4", "--seed", "3", "-g", prof, "-o", out, *scen)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("1 at once", p.stdout)
        spans = sorted((s["start_us"], s["start_us"] + s["duration_ms"] * 1000)
                       for s in results(out)["scenarios"])
        for a, b in zip(spans, spans[1:]):
            self.assertLessEqual(a[1], b[0], spans)

    def interrupt_after_first_verdict(self, sig, ignore_sigint):
        out = os.path.join(self.tmp, "run")
        pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        p = subprocess.Popen([FG, "run", "-j", "2", "--seed", "5", "-g", REFGW, "-o", out, KB],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pre)
        first = b""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line or line.startswith((b"PASS", b"FAIL", b"ERROR", b"INCONC", b"SKIP")):
                first = line
                break
        if not first:
            p.kill()
            _, err = p.communicate(timeout=60)
            self.fail("no verdict before the deadline: " + err.decode())
        p.send_signal(sig)
        rest, err = p.communicate(timeout=120)
        text = (first + rest).decode()
        self.assertEqual(p.returncode, 2, text + err.decode())
        self.validate(out)
        doc = results(out)
        got = by_id(doc)
        first_id = first.decode().split()[1]
        self.assertIn(first_id, got)
        self.assertNotEqual(got[first_id]["verdict"], "error")
        # every verdict printed is in the files, and what was cut short says so
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("PASS", "FAIL", "INCONC", "ERROR", "SKIP"):
                self.assertEqual(got[words[1]]["verdict"], words[0].lower())
        interrupted = [s for s in doc["scenarios"] if s["error"] == "interrupted"]
        self.assertTrue(interrupted, text)
        for s in interrupted:
            self.assertEqual(s["verdict"], "error")
        with open(os.path.join(out, "junit.xml"), encoding="utf-8") as f:
            junit = f.read()
        self.assertIn(first_id, junit)
        self.assertIn("interrupted", junit)
        for name in ("summary.md", "report.html"):
            with open(os.path.join(out, name), encoding="utf-8") as f:
                self.assertIn(first_id, f.read(), name)
        self.assertEqual(left_behind(self.tmp), [])

    def test_sigterm_after_first_verdict(self):
        self.interrupt_after_first_verdict(signal.SIGTERM, False)

    def test_sigint_to_background_run_with_sigint_ignored(self):
        self.interrupt_after_first_verdict(signal.SIGINT, True)

    @unittest.skipUnless(os.access(FAKE_GW, os.X_OK), "fake_gateway is not built")
    def test_second_signal_skips_the_stop_grace(self):
        prof = os.path.join(self.tmp, "stubborn.yaml")
        with open(prof, "w", encoding="utf-8") as f:
            f.write('name: stubborn\nstart:\n  argv: ["%s", --port, "{gateway_port}", --ignore-term]\n'
                    'stop: {signal: TERM, grace: 120s}\n' % FAKE_GW)
        out = os.path.join(self.tmp, "run")
        p = subprocess.Popen([FG, "run", "-j", "2", "--seed", "1", "-g", prof, "-o", out,
                              os.path.join(KB, "kb-q129140-hang-after-data.yaml"),
                              os.path.join(KB, "kb-q135031-silent-queue-stall.yaml")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # both gateways up (their cwd is the scenario's work directory)
        deadline = time.monotonic() + 60
        while len(left_behind(out, True)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(len(left_behind(out, True)), 2)
        p.send_signal(signal.SIGTERM)
        # the run says it is stopping: the gateways ignore it, grace 120 s
        line = p.stderr.readline()
        self.assertIn(b"stopping", line)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rest, err = p.communicate(timeout=60)
        self.assertLess(time.monotonic() - t0, 30)
        self.assertEqual(p.returncode, 2, (rest + err).decode())
        self.validate(out)
        doc = results(out)
        self.assertEqual(len(doc["scenarios"]), 2)
        for s in doc["scenarios"]:
            self.assertEqual((s["verdict"], s["error"]), ("error", "interrupted"))
        self.assertEqual(left_behind(self.tmp), [])

    def test_last_failed_runs_again_only_what_did_not_pass(self):
        first = os.path.join(self.tmp, "first")
        p = self.run_fg("-q", "-j", "5", "--seed", "8", "-g",
                        os.path.join(GW, "refgw-no-data-timeout.yaml"), "-o", first, KB)
        self.assertEqual(p.returncode, 1, p.stderr)
        # (refgw sends DATA, so the BDAT path of Q129140 is skip, not rerun)
        failed = sorted(s["id"] for s in results(first)["scenarios"]
                        if s["verdict"] not in ("pass", "skip"))
        self.assertEqual(failed, ["kb-q129140-hang-after-data"])
        again = os.path.join(self.tmp, "again")
        # the previous run's profile (no -g) and seed come along
        p = self.run_fg("--last-failed", first, "-o", again)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        doc = results(again)
        self.assertEqual([s["id"] for s in doc["scenarios"]], failed)
        self.assertEqual(doc["seed"], 8)
        self.assertEqual(doc["profile"]["name"], "refgw-no-data-timeout")
        self.validate(again)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
