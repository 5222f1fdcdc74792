#!/usr/bin/env python3
"""minirelay.py - a small store-and-forward SMTP relay for the KB scenarios'
other paths: it can send with BDAT (RFC 3030) and open with HELO, as real
MTAs do (Exim uses BDAT when CHUNKING is offered; nullmailer opens with
HELO), and it has one bug mode per path.  faultgate runs it through the
profiles scenarios/gateways/peer-relay-*.yaml.

Usage: minirelay.py --listen PORT --upstream HOST:PORT [--bdat] [--helo]
                    [--timeout S] [--retry S] [--backoff F] [--max-delay S]
                    [--give-up S] [--bug hang-after-last-chunk|crash-on-helo-drop]

Inbound: a thread per connection, greeting at once (RFC 5321 §3.1), EHLO
(PIPELINING and 8BITMIME offered, commands still read one at a time),
HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; the message is queued in memory
and acknowledged.  Outbound: one delivery thread; greeting, EHLO (or HELO
with --helo: no extensions, RFC 5321 §4.1.1.1), MAIL, RCPT, then with
--bdat and CHUNKING offered the whole body as one "BDAT n LAST" chunk,
else DATA and the dot-stuffed body.  Every wait has --timeout; a 4xx, a
timeout or a dropped connection is retried after --retry, growing by
--backoff up to --max-delay, until --give-up; a 5xx returns the message to
its sender from the null reverse-path (RFC 5321 §4.5.5, §6.1), with the
original X-Faultgate-Token line so that its fate can be followed.

Bugs:
  hang-after-last-chunk  no timeout while waiting for the reply to the LAST
                         BDAT chunk (KB Q129140 on the BDAT path); the DATA
                         path keeps its timeouts
  crash-on-helo-drop     aborts when the next hop closes the connection after
                         HELO before replying (KB Q197142 on the HELO path)
"""
import argparse
import os
import socket
import sys
import threading
import time

A = None
QUEUE = []  # [due, attempts_made, first_try, sender, rcpts, body(bytes, unstuffed, CRLF)]
QLOCK = threading.Condition()


def log(msg):
    print("minirelay: " + msg, file=sys.stderr, flush=True)


class Conn:
    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def line(self, timeout):
        self.s.settimeout(timeout)
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def reply(self, timeout):
        """(code, [lines]) of one reply, single or multi-line (§4.2.1)."""
        lines = []
        while True:
            ln = self.line(timeout)
            lines.append(ln[4:].decode("latin-1"))
            if len(ln) < 4 or ln[3:4] != b"-":
                return int(ln[:3]), lines

    def send(self, data):
        self.s.sendall(data)


# --- inbound -----------------------------------------------------------------

def serve(sock):
    c = Conn(sock)
    try:
        c.send(b"220 minirelay.test ESMTP minirelay\r\n")
        sender, rcpts = None, []
        while True:
            ln = c.line(300).decode("latin-1")
            verb = ln[:4].upper()
            if verb == "EHLO":
                c.send(b"250-minirelay.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == "HELO":
                c.send(b"250 minirelay.test\r\n")
            elif verb == "MAIL":
                sender, rcpts = ln[ln.index("<") + 1:ln.index(">")], []
                c.send(b"250 2.1.0 ok\r\n")
            elif verb == "RCPT":
                rcpts.append(ln[ln.index("<") + 1:ln.index(">")])
                c.send(b"250 2.1.5 ok\r\n")
            elif verb == "DATA":
                if sender is None or not rcpts:
                    c.send(b"503 5.5.1 need MAIL and RCPT\r\n")
                    continue
                c.send(b"354 go ahead\r\n")
                body = []
                while True:
                    bl = c.line(300)
                    if bl == b".":
                        break
                    body.append(bl[1:] if bl.startswith(b".") else bl)
                data = b"".join(x + b"\r\n" for x in body)
                with QLOCK:
                    QUEUE.append([time.monotonic(), 0, time.monotonic(), sender, rcpts, data])
                    QLOCK.notify()
                log("queued from=<%s> rcpts=%d size=%d" % (sender, len(rcpts), len(data)))
                c.send(b"250 2.0.0 queued\r\n")
                sender, rcpts = None, []
            elif verb == "RSET":
                sender, rcpts = None, []
                c.send(b"250 2.0.0 ok\r\n")
            elif verb == "NOOP":
                c.send(b"250 2.0.0 ok\r\n")
            elif verb == "QUIT":
                c.send(b"221 2.0.0 bye\r\n")
                return
            else:
                c.send(b"502 5.5.2 not implemented\r\n")
    except (OSError, ConnectionError, ValueError):
        pass
    finally:
        sock.close()


def listener():
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", A.listen))
    ls.listen(64)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


# --- outbound ----------------------------------------------------------------

def deliver(sender, rcpts, body):
    """'ok', 'temp' or ('perm', text)."""
    host, port = A.upstream.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=A.timeout)
    c = Conn(s)
    try:
        code, _ = c.reply(A.timeout)
        if code != 220:
            return "temp"
        opening = "HELO" if A.helo else "EHLO"
        c.send(("%s minirelay.test\r\n" % opening).encode())
        try:
            code, lines = c.reply(A.timeout)
        except ConnectionError:
            if A.helo and A.bug == "crash-on-helo-drop":
                log("the next hop closed after HELO: abort (bug crash-on-helo-drop)")
                os.abort()
            raise
        if code != 250:
            return "temp" if code // 100 == 4 else ("perm", "%d to %s" % (code, opening))
        exts = {ln.split(" ")[0].upper() for ln in lines[1:]} if not A.helo else set()
        c.send(("MAIL FROM:<%s>\r\n" % sender).encode())
        code, lines = c.reply(A.timeout)
        if code != 250:
            return "temp" if code // 100 == 4 else ("perm", "%d %s" % (code, " ".join(lines)))
        ok, last_perm = 0, None
        for r in rcpts:
            c.send(("RCPT TO:<%s>\r\n" % r).encode())
            code, lines = c.reply(A.timeout)
            if code // 100 == 2:
                ok += 1
            elif code // 100 == 5:
                last_perm = "%d %s" % (code, " ".join(lines))
        if not ok:
            c.send(b"RSET\r\n")
            c.reply(A.timeout)
            return ("perm", last_perm) if last_perm else "temp"
        if A.bdat and "CHUNKING" in exts:
            c.send(b"BDAT %d LAST\r\n" % len(body) + body)
            # The bug: the reply to the last chunk is awaited for ever.
            wait = None if A.bug == "hang-after-last-chunk" else A.timeout
            code, lines = c.reply(wait)
        else:
            c.send(b"DATA\r\n")
            code, lines = c.reply(A.timeout)
            if code != 354:
                return "temp" if code // 100 == 4 else ("perm", "%d to DATA" % code)
            stuffed = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n"
                               for ln in body.split(b"\r\n")[:-1])
            c.send(stuffed + b".\r\n")
            code, lines = c.reply(A.timeout)
        if code // 100 == 2:
            c.send(b"QUIT\r\n")
            try:
                c.reply(A.timeout)
            except (OSError, ConnectionError):
                pass
            return "ok"
        return "temp" if code // 100 == 4 else ("perm", "%d %s" % (code, " ".join(lines)))
    finally:
        s.close()


def bounce(sender, rcpts, body, why):
    token = b""
    for ln in body.split(b"\r\n"):
        if ln.lower().startswith(b"x-faultgate-token:"):
            token = ln + b"\r\n"
        if not ln:
            break
    text = (b"From: Mail Delivery System <MAILER-DAEMON@minirelay.test>\r\nTo: <" +
            sender.encode() + b">\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"Auto-Submitted: auto-replied\r\n" + token + b"\r\nYour message to " +
            ", ".join(rcpts).encode() + b" could not be delivered: " + why.encode() + b"\r\n")
    with QLOCK:
        QUEUE.append([time.monotonic(), 0, time.monotonic(), "", [sender], text])
        QLOCK.notify()


def delivery():
    while True:
        with QLOCK:
            while not QUEUE or min(q[0] for q in QUEUE) > time.monotonic():
                QLOCK.wait(min((q[0] for q in QUEUE), default=time.monotonic() + 3600) -
                           time.monotonic() if QUEUE else None)
            item = min(QUEUE, key=lambda q: q[0])
            QUEUE.remove(item)
        due, tries, first, sender, rcpts, body = item
        try:
            res = deliver(sender, rcpts, body)
        except (OSError, ConnectionError, ValueError) as e:
            log("attempt failed: %s" % e)
            res = "temp"
        if res == "ok":
            log("delivered from=<%s>" % sender)
        elif res == "temp":
            delay = min(A.retry * (A.backoff ** tries), A.max_delay)
            if time.monotonic() + delay - first > A.give_up:
                if sender:
                    bounce(sender, rcpts, body, "gave up after %d attempts" % (tries + 1))
                continue
            log("deferred, retry in %.1f s" % delay)
            with QLOCK:
                QUEUE.append([time.monotonic() + delay, tries + 1, first, sender, rcpts, body])
        elif sender:  # never bounce a bounce (RFC 5321 §4.5.5)
            log("bouncing: %s" % res[1])
            bounce(sender, rcpts, body, res[1])


def main():
    global A
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--bdat", action="store_true")
    p.add_argument("--helo", action="store_true")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--retry", type=float, default=1.0)
    p.add_argument("--backoff", type=float, default=2.0)
    p.add_argument("--max-delay", type=float, default=4.0)
    p.add_argument("--give-up", type=float, default=120.0)
    p.add_argument("--bug", choices=["hang-after-last-chunk", "crash-on-helo-drop"])
    A = p.parse_args()
    threading.Thread(target=delivery, daemon=True).start()
    listener()


if __name__ == "__main__":
    main()
