#!/usr/bin/env python3
"""faultgate transcript on captures faultgate did not write: synthesized
with several link types, IPv4 and IPv6, retransmissions, pipelining and
BDAT.  The SMTP commands it lists, in order, are tshark's
(`tshark -Y smtp.req.command`).

Usage: e2e_transcript.py BUILD_DIR SOURCE_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthcap as sc  # noqa: E402

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build"
FG = os.path.join(BUILD, "faultgate")


def mail_session(w, cli, srv, cport, *, pipelining=False, bdat=False, retransmit=False):
    k = sc.Conn(w, cli, srv, cport)
    sc.ehlo_session(k)
    if pipelining:
        # RFC 2920: MAIL, RCPT and DATA in one segment, the replies in another.
        k.c("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n"
            "DATA\r\n")
        k.s("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
    else:
        k.c("MAIL FROM:<a@example.com>\r\n", retransmit=retransmit)
        k.s("250 2.1.0 Ok\r\n")
        k.c("RCPT TO:<b@example.org>\r\n")
        k.s("250 2.1.5 Ok\r\n", retransmit=retransmit)
    if bdat:
        data = sc.body(3000)
        # The command line in a segment of its own, as tshark wants it to
        # see the command (it takes a segment starting with BDAT and its
        # chunk for chunk data alone).
        k.c("BDAT %d\r\n" % 1000, ackit=False)
        k.c(data[:1000])
        k.s("250 2.0.0 1000 octets\r\n")
        k.c("BDAT %d LAST\r\n" % (len(data) - 1000), ackit=False)
        k.c(data[1000:])
        k.s("250 2.0.0 queued\r\n")
    else:
        if not pipelining:
            k.c("DATA\r\n")
            k.s("354 go ahead\r\n")
        k.c(sc.body(5000) + ".\r\n", retransmit=retransmit)
        k.s("250 2.0.0 queued as X\r\n")
    k.c("RSET\r\n")
    k.s("250 ok\r\n")
    k.c("NOOP\r\n")
    k.s("250 ok\r\n")
    k.c("QUIT\r\n")
    k.s("221 bye\r\n")
    k.close()


CASES = [
    ("ether-v4", sc.EN10MB, "192.0.2.10", "192.0.2.25", {}),
    ("sll-v6-pipelining", sc.SLL, "2001:db8::10", "2001:db8::25", {"pipelining": True}),
    ("raw-v4-bdat", sc.RAW, "198.51.100.7", "198.51.100.25", {"bdat": True}),
    ("null-v6-retransmit", sc.NULL, "2001:db8:1::7", "2001:db8:1::25", {"retransmit": True}),
    ("sll2-v4-mixed", sc.SLL2, "203.0.113.5", "203.0.113.25", {"pipelining": True,
                                                              "retransmit": True}),
]


def tshark_commands(path):
    p = subprocess.run(["tshark", "-n", "-r", path, "-Y", "smtp.req.command", "-T", "fields",
                        "-e", "tcp.stream", "-e", "smtp.req.command"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = []
    for line in p.stdout.splitlines():
        stream, _, cmds = line.partition("\t")
        # One frame may carry several pipelined commands.
        out += [(int(stream), c.upper()) for c in cmds.split(",") if c]
    return out


def faultgate_commands(path):
    p = subprocess.run([FG, "transcript", "--json", path], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    out = []
    for c in doc["connections"]:
        for e in c["events"]:
            if e["kind"] == "command":
                out.append((c["conn"] - 1, e["text"].split(" ")[0].upper()))
    return out, doc


@unittest.skipUnless(shutil.which("tshark"), "tshark is not installed")
class Transcript(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fg-transcript-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_same_commands_in_the_same_order_as_tshark(self):
        for name, lt, cli, srv, kw in CASES:
            with self.subTest(name):
                path = os.path.join(self.tmp, name + ".pcap")
                w = sc.Writer(path, lt)
                mail_session(w, cli, srv, 40001, **kw)
                mail_session(w, cli, srv, 40002, bdat=not kw.get("bdat"))
                w.close()
                want = tshark_commands(path)
                got, doc = faultgate_commands(path)
                self.assertGreater(len(want), 10)
                # Streams in order of appearance, commands in order per stream.
                self.assertEqual(got, want)
                self.assertIn("BDAT", [c for _, c in got])
                self.assertTrue(all(c["protocol"] == "smtp" for c in doc["connections"]))

    def test_text_lists_directions_and_bodies(self):
        path = os.path.join(self.tmp, "text.pcap")
        w = sc.Writer(path, sc.EN10MB)
        mail_session(w, "192.0.2.1", "192.0.2.2", 40100)
        w.close()
        p = subprocess.run([FG, "transcript", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"-> EHLO client\.example\.com")
        self.assertRegex(p.stdout, r"<- 220 mx\.example\.org ESMTP")
        self.assertRegex(p.stdout, r"-> \[body \d+ octets\]")
        only = subprocess.run([FG, "transcript", "--conn", "2", path], capture_output=True,
                              text=True, timeout=60)
        self.assertEqual(only.stdout, "")

    def test_bad_input_exits_2(self):
        bad = os.path.join(self.tmp, "bad.pcap")
        with open(bad, "wb") as f:
            f.write(b"not a capture")
        p = subprocess.run([FG, "transcript", bad], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("bad.pcap", p.stderr)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
