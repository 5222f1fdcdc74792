#!/usr/bin/env python3
"""smtplib-starttls.py - send one message read from standard input with
Python's smtplib over STARTTLS (RFC 3207), verifying the server's
certificate against a CA file: a real TLS client for faultgate's client
profiles (scenarios/gateways/smtplib-starttls.yaml).

Usage: smtplib-starttls.py --host H --port P --from ADDR --cafile PEM
                           [--timeout SECONDS] [--helo NAME] RCPT...

It says EHLO, requires STARTTLS (no plaintext fallback), verifies the
certificate chain and the server's name (the address it connected to),
says EHLO again as RFC 3207 §4.2 requires, and sends the message.  Exits 0
when the server accepted it, 1 (with the reason on standard error) on a
4xx or 5xx reply, a failed handshake, a dropped connection or a timeout.
"""
import argparse
import smtplib
import socket
import ssl
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--from", dest="sender", required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--helo", default="smtplib-tls.faultgate.test")
    ap.add_argument("rcpts", nargs="+")
    a = ap.parse_args()
    msg = sys.stdin.buffer.read()
    try:
        ctx = ssl.create_default_context(cafile=a.cafile)
        s = smtplib.SMTP(a.host, a.port, local_hostname=a.helo, timeout=a.timeout)
        try:
            s.ehlo()
            if not s.has_extn("starttls"):
                raise smtplib.SMTPNotSupportedError("STARTTLS not offered")
            s.starttls(context=ctx)  # raises unless 220 and a verified handshake
            s.ehlo()
            refused = s.sendmail(a.sender, a.rcpts, msg)
        finally:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass
    except (smtplib.SMTPException, OSError, ssl.SSLError, socket.timeout) as e:
        print("smtplib-starttls: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    if refused:
        print("smtplib-starttls: refused recipients: %r" % (refused,), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
