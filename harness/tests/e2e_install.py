#!/usr/bin/env python3
"""Installed use: `meson install` into a DESTDIR, then, from a directory
outside the checkout, the installed faultgate finds its bundled suites and
profiles (no -g, bare suite names, `list` with no argument), a path given
on the command line wins, and FAULTGATE_DATADIR overrides the data root.

Usage: e2e_install.py BUILD_DIR SOURCE_DIR
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


def verdicts(out):
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        res = json.load(f)
    return res, {s["id"]: s["verdict"] for s in res["scenarios"]}


class Installed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-install-")
        dest = os.path.join(cls.tmp, "dest")
        p = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--quiet",
                            "--destdir", dest], capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise AssertionError("meson install failed: " + p.stderr[-2000:])
        prefix = subprocess.run(["meson", "introspect", "--buildoptions", BUILD],
                                capture_output=True, text=True, timeout=60)
        opts = {o["name"]: o["value"] for o in json.loads(prefix.stdout)}
        root = dest + opts["prefix"]
        cls.fg_bin = os.path.join(root, opts["bindir"], "faultgate")
        cls.data = os.path.join(root, opts["datadir"], "faultgate")
        cls.cwd = os.path.join(cls.tmp, "elsewhere")
        os.mkdir(cls.cwd)
        # The environment of a user: no FAULTGATE_DATADIR, no FG_BINDIR.
        cls.env = {k: v for k, v in os.environ.items() if k not in ("FAULTGATE_DATADIR", "FG_BINDIR")}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def fg(self, *args, env=None, timeout=300):
        return subprocess.run([self.fg_path()] + list(args), cwd=self.cwd, capture_output=True,
                              text=True, timeout=timeout, env=env or self.env)

    def fg_path(self):
        return self.fg_bin

    def test_data_installed(self):
        for rel in ("scenarios/kb", "scenarios/gateways/refgw.yaml",
                    "scenarios/gateways/postfix/postfix-gateway.sh", "reports/results.schema.json"):
            self.assertTrue(os.path.exists(os.path.join(self.data, rel)), rel)
        self.assertTrue(os.access(os.path.join(self.data, "scenarios/gateways/postfix/postfix-gateway.sh"),
                                  os.X_OK), "the profiles' scripts stay executable")

    def test_list_bundled(self):
        p = self.fg("list")
        self.assertEqual(p.returncode, 0, p.stderr)
        for sid in ("kb-q129140-hang-after-data", "kb-q194685-x400-invalid-minor-sync"):
            self.assertIn(sid, p.stdout)
        p = self.fg("list", "kb")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sum(1 for l in p.stdout.splitlines() if l.startswith("kb-")),
                         len([f for f in os.listdir(os.path.join(SRC, "scenarios", "kb"))
                              if f.endswith(".yaml")]))

    def test_run_kb_no_profile(self):
        """The issue's check: the KB suite by its bare name, the installed refgw, no -g."""
        out = os.path.join(self.cwd, "OUT")
        p = self.fg("run", "-q", "--seed", "5", "-o", out, "kb")
        res, v = verdicts(out)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(len(v), 6)
        # refgw sends DATA: the BDAT path of Q129140 does not apply to it.
        self.assertEqual(v.pop("kb-q129140-hang-after-bdat"), "skip")
        self.assertEqual(set(v.values()), {"pass"}, v)
        self.assertEqual(res["profile"]["name"], "refgw")

    def test_bare_profile_name(self):
        """-g NAME finds scenarios/gateways/NAME.yaml: the Q135031 bug mode fails its scenario."""
        out = os.path.join(self.cwd, "bug")
        p = self.fg("run", "-q", "--seed", "5", "-g", "refgw-silent-drop", "-o", out,
                    "kb/kb-q135031-silent-queue-stall.yaml")
        _, v = verdicts(out)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(v, {"kb-q135031-silent-queue-stall": "fail"})

    def test_path_wins(self):
        """A directory named kb in the working directory is what `kb` means."""
        local = os.path.join(self.cwd, "kb")
        os.makedirs(local, exist_ok=True)
        shutil.copy(os.path.join(SRC, "scenarios", "kb", "kb-q135031-silent-queue-stall.yaml"), local)
        try:
            p = self.fg("list", "kb")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual([l.split()[0] for l in p.stdout.splitlines() if l.startswith("kb-")],
                             ["kb-q135031-silent-queue-stall"])
        finally:
            shutil.rmtree(local)

    def test_datadir_override(self):
        env = dict(self.env, FAULTGATE_DATADIR=os.path.join(self.tmp, "nowhere"))
        p = self.fg("run", "-q", "-o", os.path.join(self.cwd, "none"), "kb", env=env)
        self.assertEqual(p.returncode, 2)
        self.assertIn("nowhere", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
