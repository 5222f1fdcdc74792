#!/usr/bin/env python3
"""badclient.py - a small SMTP client that breaks exactly one rule of
RFC 5321 / RFC 2920, chosen with --violation, and is correct otherwise
(CRLF lines, dot-stuffing, one command at a time, QUIT at the end, a
socket timeout).  faultgate runs it through the client profiles
scenarios/gateways/peer-<violation>.yaml, so that each conformance
scenario can be shown to fail the client that breaks its rule while a
conforming client passes it.

Usage: badclient.py --host H --port P --from ADDR [--violation V]
                    [--timeout SECONDS|none] RCPT...
The message is read from standard input (CRLF or LF line ends).

Violations:
  none                     conforming
  bare-lf                  body lines end with LF only (RFC 5321 §2.3.8)
  bare-cr                  a body line carries a bare CR (§2.3.8)
  no-dot-stuffing          lines beginning with '.' are sent as they are (§4.5.2)
  long-line                a 1500-octet body line (§4.5.3.1.6)
  long-command             a 600-octet EHLO argument (§4.5.3.1.4)
  nested-mail              a second MAIL inside the open transaction (§4.1.4)
  data-before-354          the body follows DATA without waiting for 354 (§3.3)
  data-after-reject        the body is sent although DATA was refused (§3.3)
  pipelining-unadvertised  MAIL, RCPT and DATA in one write, offered or not (RFC 2920 §3.1)
  pipeline-after-ehlo      MAIL in the same write as EHLO (RFC 2920 §3.1)
  no-helo-fallback         gives up when EHLO is refused (§3.2)
  no-quit                  closes without QUIT (§4.1.1.10)
  retry-after-5xx          sends the message again after a 5xx to the dot (§4.2.5)
  short-timeout            gives up after 1 s whatever it waits for (§4.5.3.2)
  ignore-421               keeps talking after a 421 (§3.8)
  early-ehlo               sends EHLO before the greeting (RFC 2920 §3.1)
  starttls-pipelined       sends EHLO in the same write as STARTTLS (RFC 3207 §4)

Exit status: 0 when the message was accepted, 1 otherwise, 2 usage.
"""
import argparse
import socket
import sys

VIOLATIONS = ("none", "bare-lf", "bare-cr", "no-dot-stuffing", "long-line", "long-command",
              "nested-mail", "data-before-354", "data-after-reject", "pipelining-unadvertised",
              "pipeline-after-ehlo", "no-helo-fallback", "no-quit", "retry-after-5xx",
              "short-timeout", "ignore-421", "early-ehlo", "starttls-pipelined")


class Failed(Exception):
    pass


class Session:
    def __init__(self, host, port, timeout, v):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.v = v

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """One whole reply (RFC 5321 §4.2.1: lines 'CODE-' then 'CODE ')."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise Failed("connection closed by the server")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("latin-1"))
            if len(line) < 4 or line[3:4] != b"-":
                code = int(line[:3]) if line[:3].isdigit() else 0
                if code == 421 and self.v == "ignore-421":
                    self.v = "none"
                    self.send(b"RSET\r\n")  # the violation: talk on after 421
                return code, lines

    def cmd(self, text):
        self.send(text.encode("latin-1") + b"\r\n")
        return self.reply()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stuffed(body, v):
    """The body as DATA sends it: CRLF lines, dot-stuffed, ending CRLF."""
    text = body.replace(b"\r\n", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    out = []
    for line in text.split(b"\n")[:-1]:
        if line.startswith(b"."):
            if v == "no-dot-stuffing":
                if line == b".":
                    continue  # a lone '.' would end the data: keep the session usable
            else:
                line = b"." + line
        out.append(line)
    if v == "long-line":
        out.append(b"x" * 1500)
    if v == "bare-cr" and out:
        out[len(out) // 2] += b"\rstray carriage return"
    eol = b"\n" if v == "bare-lf" else b"\r\n"
    return eol.join(out) + eol


def transaction(s, a, v, body, ext):
    """MAIL, RCPT, DATA and the body on an open session; the dot's reply."""
    rcpts = a.rcpts
    if v == "pipelining-unadvertised":
        group = "MAIL FROM:<%s>\r\n" % a.sender
        group += "".join("RCPT TO:<%s>\r\n" % r for r in rcpts) + "DATA\r\n"
        s.send(group.encode("latin-1"))
        codes = [s.reply()[0] for _ in range(len(rcpts) + 2)]
        if codes[-1] != 354:
            raise Failed("DATA refused: %d" % codes[-1])
    else:
        code, text = s.cmd("MAIL FROM:<%s>" % a.sender)
        if code != 250:
            raise Failed("MAIL refused: %s" % text)
        if v == "nested-mail":
            code, _ = s.cmd("MAIL FROM:<%s>" % a.sender)  # the violation
            if code == 250:
                s.cmd("RSET")
                code, text = s.cmd("MAIL FROM:<%s>" % a.sender)
            elif code // 100 != 5:
                raise Failed("nested MAIL: %d" % code)
        for r in rcpts:
            code, text = s.cmd("RCPT TO:<%s>" % r)
            if code not in (250, 251):
                raise Failed("RCPT refused: %s" % text)
        if v == "data-before-354":
            s.send(b"DATA\r\n" + stuffed(body, v) + b".\r\n")
            code, text = s.reply()
            if code != 354:
                raise Failed("DATA refused: %s" % text)
            return s.reply()
        code, text = s.cmd("DATA")
        if code != 354:
            if v == "data-after-reject":
                s.send(stuffed(body, v) + b".\r\n")  # the violation
            raise Failed("DATA refused: %s" % text)
    s.send(stuffed(body, v) + b".\r\n")
    return s.reply()


def attempt(a, v, body, timeout):
    s = Session(a.host, a.port, timeout, v)
    try:
        if v == "early-ehlo":
            s.send(b"EHLO badclient.faultgate.test\r\n")  # the violation
            code, text = s.reply()
            if code != 220 or s.reply()[0] != 250:
                raise Failed("greeting or EHLO refused: %s" % text)
            code, text = transaction(s, a, v, body, [])
            s.cmd("QUIT")
            return code, text
        code, text = s.reply()
        if code != 220:
            raise Failed("greeting: %s" % text)
        name = "badclient.faultgate.test"
        if v == "long-command":
            name = "a" * 590 + ".test"
        ext = []
        if v == "pipeline-after-ehlo":
            s.send(("EHLO %s\r\nMAIL FROM:<%s>\r\n" % (name, a.sender)).encode("latin-1"))
            code, text = s.reply()
            if code != 250:
                raise Failed("EHLO refused: %s" % text)
            code, mtext = s.reply()
            if code != 250:
                raise Failed("MAIL refused: %s" % mtext)
            for r in a.rcpts:
                code, rtext = s.cmd("RCPT TO:<%s>" % r)
                if code not in (250, 251):
                    raise Failed("RCPT refused: %s" % rtext)
            code, dtext = s.cmd("DATA")
            if code != 354:
                raise Failed("DATA refused: %s" % dtext)
            s.send(stuffed(body, v) + b".\r\n")
            code, text = s.reply()
        else:
            code, text = s.cmd("EHLO " + name)
            if code // 100 != 2:
                if v == "no-helo-fallback" or code not in (500, 502):
                    s.cmd("QUIT")
                    raise Failed("EHLO refused: %s" % text)
                code, text = s.cmd("HELO " + name)
                if code != 250:
                    raise Failed("HELO refused: %s" % text)
            else:
                ext = [t[4:].split(" ")[0].upper() for t in text[1:]]
            if v == "starttls-pipelined":
                if "STARTTLS" not in ext:
                    raise Failed("STARTTLS not offered")
                s.send(("STARTTLS\r\nEHLO %s\r\n" % name).encode("latin-1"))  # the violation
                code, text = s.reply()
                raise Failed("STARTTLS: %s (no TLS in this peer)" % text)
            code, text = transaction(s, a, v, body, ext)
        if v != "no-quit":
            try:
                s.cmd("QUIT")
            except (Failed, OSError):
                pass
        return code, text
    except Failed:
        if v not in ("no-quit", "starttls-pipelined"):
            try:  # a conforming client still ends the session (§4.1.1.10)
                s.send(b"QUIT\r\n")
            except OSError:
                pass
        raise
    except OSError as e:
        raise Failed("%s: %s" % (type(e).__name__, e))
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--from", dest="sender", required=True)
    ap.add_argument("--violation", default="none", choices=VIOLATIONS)
    ap.add_argument("--timeout", default="5")
    ap.add_argument("rcpts", nargs="+")
    a = ap.parse_args()
    v = a.violation
    timeout = None if a.timeout == "none" else float(a.timeout)
    if v == "short-timeout":
        timeout = 1.0
    body = sys.stdin.buffer.read()
    try:
        code, text = attempt(a, v, body, timeout)
        if code // 100 == 5 and v == "retry-after-5xx":
            code, text = attempt(a, v, body, timeout)  # the violation
    except Failed as e:
        print("badclient (%s): %s" % (v, e), file=sys.stderr)
        return 1
    if code != 250:
        print("badclient (%s): end of data: %s" % (v, text), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
