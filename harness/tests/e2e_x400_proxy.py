#!/usr/bin/env python3
"""End-to-end checks of the X.400 proxy's faults: every scenarios/x400
scenario with `x400_faults:` against refgw's X.400 side, which recovers
(each must pass), and against a refgw profile that does not retry in time
(each scenario that aborts before the transfer was confirmed must fail);
the proxy's X.400 decisions in results.json and the metadata's two X.400
ports; `faultgate judge` on the saved pcaps; and, when tshark is
installed, tshark's session SPDU types and serial numbers on the gateway's
leg equal to `faultgate x400-timeline`, and the rewritten serial number
visible on the proxy's leg to the fake MTA.

Usage: e2e_x400_proxy.py BUILD_DIR SOURCE_DIR
Every child has a timeout.
"""
import concurrent.futures
import glob
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
GW = os.path.join(SRC, "scenarios", "gateways")
CAPTURE = os.environ.get("FG_E2E_CAPTURE", "auto")
# Aborts after the AEA confirmed the transfer: nothing is left to send, so
# a gateway that does not retry still passes them.
CONFIRMED = {"x400-abort-on-fn", "x400-close-after-aea"}


def fault_scenarios():
    out = []
    for path in sorted(glob.glob(os.path.join(SRC, "scenarios", "x400", "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            if "\nx400_faults:" in f.read():
                out.append(path)
    return out


def run(profile, scen, out):
    p = subprocess.run([FG, "run", "-q", "--capture", CAPTURE, "--seed", "11", "-g", profile,
                        "-o", out, scen], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tshark_frames(pcap, port):
    p = subprocess.run(["tshark", "-n", "-r", pcap, "-d", "tcp.port==%d,tpkt" % port,
                        "-Y", "ses && tcp.port==%d" % port, "-T", "fields", "-E", "separator=\t",
                        "-e", "frame.number", "-e", "ses.type", "-e", "ses.serial_number"],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("tshark failed: " + p.stderr)
    frames = {}
    for line in p.stdout.splitlines():
        cols = (line.split("\t") + ["", ""])[:3]
        frames[int(cols[0])] = ([int(x) for x in cols[1].split(",") if x],
                                [x for x in cols[2].split(",") if x])
    return frames


def timeline(pcap, port):
    p = subprocess.run([FG, "x400-timeline", "--port", str(port), "--json", pcap],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("x400-timeline failed: " + p.stderr)
    return json.loads(p.stdout)


def timeline_frames(events):
    frames = {}
    for ev in events:
        if ev["kind"] != "spdu":
            continue
        types, serials = frames.setdefault(ev["frame"], ([], []))
        types.append(ev["si"])
        if "serial" in ev:
            serials.append(ev["serial"])
    return frames


class X400Proxy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-e2e-x400-proxy-")
        cls.scens = fault_scenarios()
        cls.runs = {}
        jobs = {}
        profiles = {"recovers": os.path.join(GW, "refgw-x400.yaml"),
                    "no-retry": os.path.join(GW, "refgw-x400-no-retry.yaml")}
        # Independent runs (ephemeral ports, own directories) side by side.
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as ex:
            for name, prof in profiles.items():
                for scen in cls.scens:
                    sid = os.path.basename(scen)[:-len(".yaml")]
                    out = os.path.join(cls.tmp, name, sid)
                    jobs[(name, sid)] = (ex.submit(run, prof, scen, out), out, scen)
            for key, (fut, out, scen) in jobs.items():
                rc, text = fut.result()
                cls.runs[key] = (rc, text, out, scen)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def result(self, name, sid):
        rc, text, out, scen = self.runs[(name, sid)]
        path = os.path.join(out, "results.json")
        self.assertTrue(os.path.exists(path), "%s %s: no results.json: %s" % (name, sid, text))
        sc = load(path)["scenarios"][0]
        meta = load(os.path.join(out, sid + ".meta.json"))
        return rc, text, out, scen, sc, meta

    def test_set_covers_the_abort_points(self):
        ids = {os.path.basename(s)[:-len(".yaml")] for s in self.scens}
        self.assertGreaterEqual(len(ids), 12, ids)
        self.assertIn("x400-rewrite-serial", ids)

    def test_recovering_gateway_passes_each(self):
        for name, sid in self.runs:
            if name != "recovers":
                continue
            with self.subTest(scenario=sid):
                rc, text, out, scen, sc, meta = self.result(name, sid)
                self.assertEqual(rc, 0, text + json.dumps(sc, indent=1)[:3000])
                self.assertEqual(sc["verdict"], "pass")
                rec = [e for e in sc["expectations"] if e["rule"] == "x400-recovers-after-abort"]
                self.assertEqual(len(rec), 1)
                self.assertEqual(rec[0]["verdict"], "pass", rec[0]["summary"])
                # Recovery was exercised: an association was aborted.
                self.assertNotIn("no X.400 association was aborted", rec[0]["summary"])
                # The proxy's X.400 decision is in the results, on the
                # first connection only (selector first).
                x4 = [d for d in sc["decisions"] if d["action"].startswith("x400 ")]
                self.assertEqual(len(x4), 1, sc["decisions"])
                self.assertEqual(x4[0]["conn"], 1)
                # Two X.400 legs: the gateway's (judged) and the proxy's.
                self.assertGreater(meta["x400_port"], 0)
                self.assertGreater(meta["x400_mta_port"], 0)
                self.assertNotEqual(meta["x400_port"], meta["x400_mta_port"])

    def test_non_retrying_gateway_fails(self):
        for name, sid in self.runs:
            if name != "no-retry":
                continue
            with self.subTest(scenario=sid):
                rc, text, out, scen, sc, meta = self.result(name, sid)
                rec = [e for e in sc["expectations"] if e["rule"] == "x400-recovers-after-abort"][0]
                if sid in CONFIRMED:
                    self.assertEqual(rec["verdict"], "pass", rec["summary"])
                    continue
                self.assertEqual(rc, 1, text)
                self.assertEqual(rec["verdict"], "fail", rec["summary"])
                self.assertIn("not followed by a new one", rec["summary"])
                self.assertIn("never transferred", rec["evidence"])

    def test_judge_gives_the_same_verdicts(self):
        for (name, sid), (rc, text, out, scen) in sorted(self.runs.items()):
            if name != "recovers":
                continue
            with self.subTest(scenario=sid):
                p = subprocess.run([FG, "judge", "-s", scen, os.path.join(out, sid + ".pcap")],
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual(p.returncode, rc, p.stdout + p.stderr)

    def test_rewrite_visible_on_the_mta_leg(self):
        rc, text, out, scen, sc, meta = self.result("recovers", "x400-rewrite-serial")
        pcap = os.path.join(out, sc["pcap"])
        gw = [e for e in timeline(pcap, meta["x400_port"]) if e.get("spdu") == "MIP"]
        mta = [e for e in timeline(pcap, meta["x400_mta_port"]) if e.get("spdu") == "MIP"]
        first_gw = [e["serial"] for e in gw if e["conn"] == gw[0]["conn"]]
        first_mta = [e["serial"] for e in mta if e["conn"] == mta[0]["conn"]]
        # The gateway numbered 1, 2, ...; the fake MTA received 1, 3.
        self.assertEqual(first_gw[:2], ["1", "2"], first_gw)
        self.assertEqual(first_mta[:2], ["1", "3"], first_mta)

    @unittest.skipUnless(shutil.which("tshark"), "tshark is not installed")
    def test_tshark_agrees_with_timeline(self):
        for (name, sid), (rc, text, out, scen) in sorted(self.runs.items()):
            if name != "recovers":
                continue
            with self.subTest(scenario=sid):
                rc, text, out, scen, sc, meta = self.result(name, sid)
                pcap = os.path.join(out, sc["pcap"])
                for port in (meta["x400_port"], meta["x400_mta_port"]):
                    ts = tshark_frames(pcap, port)
                    mine = timeline_frames(timeline(pcap, port))
                    self.assertEqual(sorted(ts), sorted(mine), "port %d: frames" % port)
                    for f in mine:
                        self.assertEqual(ts[f], mine[f], "port %d frame %d" % (port, f))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
