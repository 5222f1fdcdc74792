#!/usr/bin/env python3
"""smtplib-send.py - send one message read from standard input with
Python's smtplib: a real SMTP client for faultgate's client profiles
(scenarios/gateways/smtplib*.yaml).

Usage: smtplib-send.py --host H --port P --from ADDR [--timeout SECONDS|none]
                       [--helo NAME] RCPT...

Exits 0 when the server accepted the message, 1 (with the reason on
standard error) when smtplib raised: a 4xx or 5xx reply, a dropped
connection, a timeout.  With --timeout none, smtplib waits for ever on a
silent server (its default: no socket timeout).
"""
import argparse
import smtplib
import socket
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--from", dest="sender", required=True)
    ap.add_argument("--timeout", default="30")
    ap.add_argument("--helo", default="smtplib.faultgate.test")
    ap.add_argument("rcpts", nargs="+")
    a = ap.parse_args()
    msg = sys.stdin.buffer.read()
    kw = {}
    if a.timeout != "none":
        kw["timeout"] = float(a.timeout)
    try:
        s = smtplib.SMTP(a.host, a.port, local_hostname=a.helo, **kw)
        try:
            refused = s.sendmail(a.sender, a.rcpts, msg)
        finally:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass
    except (smtplib.SMTPException, OSError, socket.timeout) as e:
        print("smtplib-send: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    if refused:
        print("smtplib-send: refused recipients: %r" % (refused,), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
