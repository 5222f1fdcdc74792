#!/usr/bin/env python3
"""badclient.py - a small SMTP client that breaks exactly one rule of
RFC 5321 / RFC 2920, chosen with --violation, and is correct otherwise
(CRLF lines, dot-stuffing, one command at a time, QUIT at the end, a
socket timeout).  faultgate runs it through the client profiles
scenarios/gateways/peer-<violation>.yaml, so that each conformance
scenario can be shown to fail the client that breaks its rule while a
conforming client passes it.

Usage: badclient.py --host H --port P --from ADDR [--violation V]
                    [--timeout SECONDS|none] [--bdat] [--cafile PEM] RCPT...
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
  size-unadvertised        declares SIZE= whether SIZE is offered or not (RFC 1870)
  size-over-limit          sends a message above the advertised SIZE, undeclared (RFC 1870)
  8bit-unadvertised        BODY=8BITMIME and 8-bit text, 8BITMIME offered or not (RFC 6152 §3)
  8bit-undeclared          8-bit text without BODY=8BITMIME (RFC 6152 §3)
  bdat-unadvertised        BDAT whether CHUNKING is offered or not (RFC 3030 §2)
  bdat-miscount            BDAT whose first chunk carries 2 octets more than declared (RFC 3030 §2)
  dsn-unadvertised         RET= and NOTIFY= whether DSN is offered or not (RFC 3461 §4)
  no-ehlo-after-tls        STARTTLS (verified against --cafile), then MAIL inside TLS
                           without a new EHLO, reusing the list from before (RFC 3207 §4.2)
  starttls-stale-buffer    STARTTLS (verified against --cafile) keeping what the read of
                           the 220 brought behind it as the start of the input inside TLS,
                           so that it answers the new EHLO (RFC 3207 §4.2; CVE-2011-0411
                           class); one command at a time, or pipelined when those stale
                           lines offer PIPELINING
  tls-downgrade            STARTTLS when offered (verified against --cafile), but in
                           clear when it is not offered or refused, and again in clear
                           on a new connection after a failed handshake: wrong for a
                           client whose profile declares tls_policy: mandatory (RFC 3207
                           §6, RFC 8461 §5, RFC 7672 §2.2)

Conforming otherwise: SIZE=<octets> when SIZE is offered, and no attempt
above its limit; BODY=8BITMIME for 8-bit text when 8BITMIME is offered,
and no attempt when it is not (no downgrade); with --bdat, the body in two
BDAT chunks when CHUNKING is offered (RFC 3030 §2), else DATA.

Exit status: 0 when the message was accepted, 1 otherwise, 2 usage.
"""
import argparse
import socket
import ssl
import sys

VIOLATIONS = ("none", "bare-lf", "bare-cr", "no-dot-stuffing", "long-line", "long-command",
              "nested-mail", "data-before-354", "data-after-reject", "pipelining-unadvertised",
              "pipeline-after-ehlo", "no-helo-fallback", "no-quit", "retry-after-5xx",
              "short-timeout", "ignore-421", "early-ehlo", "starttls-pipelined",
              "size-unadvertised", "size-over-limit", "8bit-unadvertised", "8bit-undeclared",
              "bdat-unadvertised", "bdat-miscount", "dsn-unadvertised", "no-ehlo-after-tls",
              "starttls-stale-buffer", "tls-downgrade")


class Failed(Exception):
    pass


class HandshakeFailed(Failed):
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
        if line.startswith(b".") and v != "no-dot-stuffing-raw":
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


def caps_of(ext):
    """The EHLO reply's keywords and their parameters ("SIZE 1000")."""
    caps = {}
    for line in ext:
        key, _, rest = line.partition(" ")
        caps[key.upper()] = rest.strip()
    return caps


def mail_params(a, v, body, ext):
    """MAIL's parameters as the extensions offered allow (or, for the
    extension violations, regardless of them); Failed when a conforming
    client must not try at all."""
    caps = caps_of(ext)
    text = body.replace(b"\r\n", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    size = len(text) + text.count(b"\n")  # RFC 1870 §3: CRLF counted, no stuffing
    params = ""
    limit = caps.get("SIZE", "")
    if limit.isdigit() and int(limit) and size > int(limit) and v != "size-over-limit":
        raise Failed("message of %d octets above the server's SIZE %s (RFC 1870)" % (size, limit))
    if ("SIZE" in caps and v != "size-over-limit") or v == "size-unadvertised":
        params += " SIZE=%d" % size
    if any(c > 127 for c in body) and v != "8bit-undeclared":
        if "8BITMIME" not in caps and v != "8bit-unadvertised":
            raise Failed("8-bit message and no 8BITMIME offered (RFC 6152 §3)")
        params += " BODY=8BITMIME"
    if v == "dsn-unadvertised":
        params += " RET=HDRS"
    return params


def send_bdat(s, a, v, body):
    """The body in two BDAT chunks, unstuffed (RFC 3030 §2); the LAST
    chunk's reply."""
    data = stuffed(body, "no-dot-stuffing-raw")
    half = len(data) // 2
    first, rest = data[:half], data[half:]
    declared = len(first) - 2 if v == "bdat-miscount" and len(first) > 2 else len(first)
    s.send(b"BDAT %d\r\n" % declared + first)
    code, text = s.reply()
    if code // 100 != 2:
        raise Failed("BDAT refused: %s" % text)
    s.send(b"BDAT %d LAST\r\n" % len(rest) + rest)
    return s.reply()


def transaction(s, a, v, body, ext):
    """MAIL, RCPT, DATA and the body on an open session; the dot's reply."""
    rcpts = a.rcpts
    params = mail_params(a, v, body, ext)
    notify = " NOTIFY=SUCCESS,FAILURE" if v == "dsn-unadvertised" else ""
    bdat = (v in ("bdat-unadvertised", "bdat-miscount") or
            (a.bdat and "CHUNKING" in caps_of(ext)))
    if v == "pipelining-unadvertised":
        group = "MAIL FROM:<%s>%s\r\n" % (a.sender, params)
        group += "".join("RCPT TO:<%s>%s\r\n" % (r, notify) for r in rcpts) + "DATA\r\n"
        s.send(group.encode("latin-1"))
        codes = [s.reply()[0] for _ in range(len(rcpts) + 2)]
        if codes[-1] != 354:
            raise Failed("DATA refused: %d" % codes[-1])
    else:
        code, text = s.cmd("MAIL FROM:<%s>%s" % (a.sender, params))
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
            code, text = s.cmd("RCPT TO:<%s>%s" % (r, notify))
            if code not in (250, 251):
                raise Failed("RCPT refused: %s" % text)
        if bdat:
            return send_bdat(s, a, v, body)
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
                ext = [t[4:] for t in text[1:]]
            if v == "no-ehlo-after-tls":
                if "STARTTLS" not in caps_of(ext):
                    raise Failed("STARTTLS not offered")
                code, text = s.cmd("STARTTLS")
                if code != 220:
                    raise Failed("STARTTLS refused: %s" % text)
                s.buf = b""  # RFC 3207 §4: nothing read before the handshake counts
                ctx = ssl.create_default_context(cafile=a.cafile)
                s.sock = ctx.wrap_socket(s.sock, server_hostname=a.host)
                # the violation: no EHLO inside TLS; the old list is reused
            if v == "starttls-stale-buffer":
                if "STARTTLS" not in caps_of(ext):
                    raise Failed("STARTTLS not offered")
                code, text = s.cmd("STARTTLS")
                if code != 220:
                    raise Failed("STARTTLS refused: %s" % text)
                # the violation: s.buf keeps what came with the 220
                ctx = ssl.create_default_context(cafile=a.cafile)
                s.sock = ctx.wrap_socket(s.sock, server_hostname=a.host)
                code, text = s.cmd("EHLO " + name)
                if code // 100 != 2:
                    raise Failed("EHLO inside TLS refused: %s" % text)
                ext = [t[4:] for t in text[1:]]
                if "PIPELINING" in caps_of(ext):
                    v = s.v = "pipelining-unadvertised"  # what the stale reply offered
            if v == "tls-downgrade" and "STARTTLS" in caps_of(ext) and not a.plain:
                code, text = s.cmd("STARTTLS")
                if code == 220:  # refused: the violation, on in clear
                    s.buf = b""
                    try:
                        ctx = ssl.create_default_context(cafile=a.cafile)
                        s.sock = ctx.wrap_socket(s.sock, server_hostname=a.host)
                    except (OSError, ssl.SSLError) as e:
                        raise HandshakeFailed(str(e))
                    code, text = s.cmd("EHLO " + name)
                    if code // 100 != 2:
                        raise Failed("EHLO inside TLS refused: %s" % text)
                    ext = [t[4:] for t in text[1:]]
            if v == "starttls-pipelined":
                if "STARTTLS" not in caps_of(ext):
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
    except HandshakeFailed:
        raise  # the connection is gone: no QUIT
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
    ap.add_argument("--bdat", action="store_true",
                    help="send the body with BDAT when CHUNKING is offered")
    ap.add_argument("--cafile", help="CA certificates to verify the server with after STARTTLS")
    ap.add_argument("rcpts", nargs="+")
    a = ap.parse_args()
    a.plain = False  # tls-downgrade: set for the attempt in clear after a failed handshake
    v = a.violation
    timeout = None if a.timeout == "none" else float(a.timeout)
    if v == "short-timeout":
        timeout = 1.0
    body = sys.stdin.buffer.read()
    try:
        try:
            code, text = attempt(a, v, body, timeout)
        except HandshakeFailed:
            if v != "tls-downgrade":
                raise
            a.plain = True  # the violation: a new connection, in clear
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
