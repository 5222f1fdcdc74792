#!/usr/bin/env python3
"""End-to-end checks of faultgate's reports as a CI user meets them: the KB
suite (scenarios/kb, plus a few quick scenarios made here so that both
shards hold some) run once unsharded and once as two shards merged with
`faultgate report merge`; the merged report must equal the unsharded one
(same verdicts, same counts, same JUnit test cases).  Every results.json
validates against reports/results.schema.json, every junit.xml against
reports/junit.xsd; report.html is rendered by headless Chromium (a
screenshot is taken and the rendered DOM holds the report's parts);
`faultgate report html` re-renders the same page from results.json; bad
input exits 2 naming the file.

Usage: e2e_report.py BUILD_DIR SOURCE_DIR [TEST...]
Every child has a timeout; the harness bounds every wait inside.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build"
SRC = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "."
FG = os.path.join(BUILD, "faultgate")
KB = os.path.join(SRC, "scenarios", "kb")
PROFILE = os.path.join(SRC, "scenarios", "gateways", "refgw-no-data-timeout.yaml")
SCHEMA = os.path.join(SRC, "reports", "results.schema.json")
XSD = os.path.join(SRC, "reports", "junit.xsd")
CAPTURE = os.environ.get("FG_E2E_CAPTURE", "auto")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def fg(*args, timeout=900):
    return subprocess.run([FG, *args], capture_output=True, text=True, timeout=timeout)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read(path, mode="r"):
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        return f.read()


def shard_of(scenario_id, n):
    """The run's partition (FNV-1a of the id), to pick ids for both shards."""
    h = 2166136261
    for b in scenario_id.encode():
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h % n + 1


QUICK = """id: {id}
title: A message through a healthy next hop is delivered once and the gateway still answers
rfc: ["5321 6.1"]
leg: outbound
messages:
  - {{from: a@one.test, to: [b@two.test], size: 1k}}
expect:
  - {{rule: message-fate, fate: delivered-once, within: "timeouts.retry + 10s"}}
  - {{rule: gateway-alive}}
"""


def chromium(*args, timeout=120):
    profile = tempfile.mkdtemp(prefix="fg-chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + profile, *args],
            capture_output=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def digest(results):
    """What must be equal between a merged and an unsharded run."""
    return {
        "counts": results["counts"],
        "verdict": results["verdict"],
        "scenarios": [(s["id"], s["group"], s["verdict"],
                       [(e["rule"], e["verdict"]) for e in s["expectations"]])
                      for s in results["scenarios"]],
    }


def junit_digest(path):
    root = ET.parse(path).getroot()
    suites = {}
    for ts in root.findall("testsuite"):
        cases = []
        for tc in ts.findall("testcase"):
            outcome = [(c.tag, c.get("type")) for c in tc if c.tag in ("failure", "error", "skipped")]
            cases.append((tc.get("classname"), tc.get("name"), outcome))
        suites[ts.get("name")] = (ts.get("tests"), ts.get("failures"), ts.get("errors"),
                                  ts.get("skipped"), cases)
    return ({k: root.get(k) for k in ("tests", "failures", "errors", "skipped")}, suites)


class Reports(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-e2e-report-")
        # The KB suite, and quick scenarios with ids that land in each shard.
        extra = os.path.join(cls.tmp, "scenarios", "quick")
        os.makedirs(extra)
        want = {1: 1, 2: 1}
        for i in range(200):
            sid = "quick-delivered-%d" % i
            k = shard_of(sid, 2)
            if want[k] > 0:
                want[k] -= 1
                with open(os.path.join(extra, sid + ".yaml"), "w", encoding="utf-8") as f:
                    f.write(QUICK.format(id=sid))
            if not any(want.values()):
                break
        cls.inputs = [KB, extra]
        common = ["run", "-q", "--capture", CAPTURE, "--seed", "11", "-g", PROFILE]
        cls.out = {}
        cls.proc = {}
        for name, extra_args in (("all", []), ("s1", ["--shard", "1/2"]), ("s2", ["--shard", "2/2"])):
            out = os.path.join(cls.tmp, name)
            cls.proc[name] = fg(*common, *extra_args, "-o", out, *cls.inputs)
            cls.out[name] = out
        merged = os.path.join(cls.tmp, "merged")
        cls.proc["merged"] = fg("report", "merge", cls.out["s1"], cls.out["s2"], "-o", merged)
        cls.out["merged"] = merged

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("FG_TEST_KEEP"):
            print("kept", cls.tmp, file=sys.stderr)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def results(self, name):
        p = self.proc[name]
        self.assertIn(p.returncode, (0, 1), "%s: %s%s" % (name, p.stdout, p.stderr))
        return load(os.path.join(self.out[name], "results.json"))

    def test_shards_partition_the_suite(self):
        ids = lambda n: [s["id"] for s in self.results(n)["scenarios"]]
        s1, s2, whole = set(ids("s1")), set(ids("s2")), ids("all")
        self.assertTrue(s1 and s2, "both shards ran scenarios")
        self.assertFalse(s1 & s2, "a scenario ran in both shards")
        self.assertEqual(s1 | s2, set(whole))
        self.assertGreaterEqual(len(whole), 3)

    def test_merged_equals_unsharded(self):
        whole, merged = self.results("all"), self.results("merged")
        self.assertEqual(digest(merged), digest(whole))
        # the suite has failures against this profile, so the check can fail
        self.assertGreaterEqual(whole["counts"]["fail"], 1)
        self.assertEqual(self.proc["merged"].returncode, self.proc["all"].returncode)
        self.assertEqual(len(merged["shards"]), 2)
        self.assertEqual(junit_digest(os.path.join(self.out["merged"], "junit.xml")),
                         junit_digest(os.path.join(self.out["all"], "junit.xml")))
        # the traces came along, so the report's links and judge work there
        for s in merged["scenarios"]:
            if s["pcap"]:
                self.assertTrue(os.path.exists(os.path.join(self.out["merged"], s["pcap"])), s["pcap"])

    def test_every_results_file_validates(self):
        import jsonschema
        schema = load(SCHEMA)
        jsonschema.validators.validator_for(schema).check_schema(schema)
        for name in ("all", "s1", "s2", "merged"):
            jsonschema.validate(self.results(name), schema)

    @unittest.skipUnless(shutil.which("xmllint"), "xmllint is not installed")
    def test_every_junit_validates_against_xsd(self):
        for name in ("all", "s1", "s2", "merged"):
            path = os.path.join(self.out[name], "junit.xml")
            p = subprocess.run(["xmllint", "--noout", "--schema", XSD, path],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)

    def test_failure_carries_evidence_in_junit(self):
        root = ET.parse(os.path.join(self.out["all"], "junit.xml")).getroot()
        for tc in root.iter("testcase"):
            if tc.get("name") == "kb-q129140-hang-after-data":
                failure = tc.find("failure")
                self.assertIsNotNone(failure)
                self.assertIn("closes-after-stall", failure.text)
                self.assertIn("frame", failure.text)
                break
        else:
            self.fail("no testcase for kb-q129140-hang-after-data")
        props = {p.get("name"): p.get("value") for p in root.iter("property")}
        self.assertEqual(props["seed"], "11")
        self.assertTrue(props["gateway"].startswith("refgw-no-data-timeout"))

    def test_summary_md(self):
        for name in ("all", "merged"):
            md = read(os.path.join(self.out[name], "summary.md"))
            self.assertIn("| verdict | scenario | title | duration |", md)
            self.assertIn("kb-q129140-hang-after-data", md)
            self.assertIn("closes-after-stall", md)
        merged = read(os.path.join(self.out["merged"], "summary.md"))
        self.assertIn("merged from 2 shards", merged)

    def test_report_html_rerenders_identically(self):
        work = os.path.join(self.tmp, "rerender")
        shutil.copytree(self.out["all"], work)
        os.unlink(os.path.join(work, "report.html"))
        p = fg("report", "html", os.path.join(work, "results.json"), timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(read(os.path.join(work, "report.html"), "rb"),
                         read(os.path.join(self.out["all"], "report.html"), "rb"))
        # elsewhere: the pcap links lead back to the run's directory
        other = os.path.join(self.tmp, "elsewhere", "r.html")
        os.makedirs(os.path.dirname(other))
        p = fg("report", "html", os.path.join(work, "results.json"), "-o", other, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        html = read(other)
        self.assertIn('href="../rerender/kb-q129140-hang-after-data.pcap"', html)

    @unittest.skipUnless(CHROMIUM, "chromium is not installed")
    def test_chromium_renders_the_report(self):
        for name in ("all", "merged"):
            url = "file://" + os.path.join(self.out[name], "report.html")
            png = os.path.join(self.tmp, name + ".png")
            p = chromium("--screenshot=" + png, "--window-size=1280,2000", url)
            self.assertTrue(os.path.exists(png), p.stderr.decode(errors="replace")[-2000:])
            data = read(png, "rb")
            self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
            w, h = struct.unpack(">II", data[16:24])
            self.assertEqual((w, h), (1280, 2000))
            # a blank page compresses to a few kilobytes; a report does not
            self.assertGreater(len(data), 40000)

            p = chromium("--dump-dom", url)
            self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace")[-2000:])
            dom = p.stdout.decode("utf-8", errors="replace")
            results = self.results(name)
            self.assertIn('id="environment"', dom)
            self.assertIn('id="matrix"', dom)
            self.assertIn("KB Q129140", dom)
            self.assertIn("<svg", dom)
            self.assertIn('class="row fault"', dom)
            self.assertIn("Gateway under test", dom)
            self.assertIn(">11<", dom)  # the seed
            for i, s in enumerate(results["scenarios"]):
                m = re.search(r'<section class="scenario s-(\w+)" id="sc-%d">' % i, dom)
                self.assertIsNotNone(m, s["id"])
                self.assertEqual(m.group(1), s["verdict"], s["id"])
                self.assertIn(s["id"], dom)
            if name == "merged":
                self.assertIn("Merged from 2 shards", dom)


class BadInput(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fg-e2e-report-bad-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_broken_results_names_file_line_col(self):
        path = os.path.join(self.tmp, "results.json")
        with open(path, "w") as f:
            f.write('{\n  "schema_version": "1.1",\n  "scenarios": [,]\n}\n')
        p = fg("report", "html", path, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertRegex(p.stderr.strip().splitlines()[-1], re.escape(path) + r":3:\d+: ")

    def test_merge_needs_out_and_existing_dirs(self):
        p = fg("report", "merge", self.tmp, timeout=60)
        self.assertEqual(p.returncode, 2)
        p = fg("report", "merge", os.path.join(self.tmp, "nope"), "-o",
               os.path.join(self.tmp, "o"), timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("nope/results.json", p.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2)
