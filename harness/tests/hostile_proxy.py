#!/usr/bin/env python3
"""hostile_proxy.py - `faultgate proxy` between a hostile client and a hostile
server, under each fault action.

  hostile_proxy.py BUILD_DIR [SECONDS] [SEED]

For each fault in FAULTS in turn (round robin until SECONDS, default 40, are
used up) a fresh `faultgate proxy` runs in front of a scripted SMTP server
that misbehaves at random: it resets or closes mid-session (a gateway that
crashes), writes before and after its replies, and ignores QUIT.  Clients
open connections through it and do random things: commands and garbage,
writes before the greeting, writes after QUIT, half-closes, resets (SO_LINGER
0), and plain closes at any point.  The proxy must stay up the whole time,
answer a last well-formed session, exit 0 on SIGTERM within its deadline, and
print no sanitizer report.  The seed (default: from the clock) is printed so
that a failure can be replayed.  Exit 0 when all held, 1 otherwise.
"""
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

FAULTS = [
    'connect: delay 100ms c2s',
    'command QUIT: delay 200ms c2s',
    'connect: slice 1 pause 20ms c2s',
    'connect: throttle 20 c2s',
    'connect: slice 3 s2c',
    'connect: delay 50ms both',
    'command MAIL: stall',
    'greeting: stall c2s',
    'command RCPT: blackhole',
    'command DATA: close',
    'command EHLO: half-close',
    'reply 250: reset',
    'command QUIT: reset',
    'reply 354: drop',
    'command RCPT: reply 451 busy|try later, replace',
    'command MAIL: reply 250 extra',
    'end-of-data: corrupt at 2 flip',
    'connect: limit 40',
    'connect: banner-delay 100ms',
    'after 150ms: close',
    'after 100ms: reset',
    'byte c2s 7: slice 2 pause 5ms',
    'connect, p 0.5: refuse',
    'connect, nth 3: accept-then-close',
]

COMMANDS = [b'EHLO x\r\n', b'HELO x\r\n', b'MAIL FROM:<a@b>\r\n', b'RCPT TO:<c@d>\r\n',
            b'DATA\r\n', b'hello\r\n.\r\n', b'RSET\r\n', b'NOOP\r\n', b'QUIT\r\n',
            b'STARTTLS\r\n', b'BDAT 5 LAST\r\nabcde', b'\x00\xff\r\n', b'A' * 3000 + b'\r\n',
            b'EHLO', b'\r\n', b'.\r\n']


def linger_reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))


class Server:
    """A scripted SMTP server that misbehaves at random."""

    def __init__(self, rng_seed):
        self.ls = socket.socket()
        self.ls.bind(('127.0.0.1', 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.rng = random.Random(rng_seed)
        self.stop = False
        self.t = threading.Thread(target=self.accept_loop, daemon=True)
        self.t.start()

    def accept_loop(self):
        self.ls.settimeout(0.2)
        while not self.stop:
            try:
                s, _ = self.ls.accept()
            except OSError:
                continue
            seed = self.rng.random()
            threading.Thread(target=self.session, args=(s, seed), daemon=True).start()

    def session(self, s, seed):
        rng = random.Random(seed)
        hostile = rng.random() < 0.6
        s.settimeout(2.0)
        try:
            if hostile and rng.random() < 0.1:
                linger_reset(s)
                s.close()  # a gateway that crashes at once
                return
            s.sendall(b'220 up ESMTP\r\n')
            buf = b''
            in_data = False
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    d = s.recv(4096)
                except socket.timeout:
                    break
                if not d:
                    break
                buf += d
                if hostile and rng.random() < 0.08:
                    linger_reset(s)
                    break  # crash mid-session
                if hostile and rng.random() < 0.05:
                    s.sendall(b'250 unasked\r\n' * rng.randint(1, 5))
                while b'\n' in buf:
                    line, buf = buf.split(b'\n', 1)
                    if in_data:
                        if line.rstrip(b'\r') == b'.':
                            in_data = False
                            s.sendall(b'250 queued\r\n')
                        continue
                    verb = line[:4].upper()
                    if verb == b'QUIT':
                        s.sendall(b'221 bye\r\n')
                        if hostile and rng.random() < 0.5:
                            s.sendall(b'250 after quit\r\n' * 3)  # writes after QUIT
                            continue
                        s.shutdown(socket.SHUT_WR)
                        continue
                    if verb == b'DATA':
                        in_data = True
                        s.sendall(b'354 go\r\n')
                    elif verb == b'EHLO':
                        s.sendall(b'250-up\r\n250-PIPELINING\r\n250 8BITMIME\r\n')
                    else:
                        s.sendall(b'250 ok\r\n')
            if hostile and rng.random() < 0.3:
                linger_reset(s)
        except OSError:
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass


def client(port, rng):
    """One hostile client session; any network error is fine."""
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect(('127.0.0.1', port))
        steps = rng.randint(0, 12)
        if rng.random() < 0.3:
            s.sendall(rng.choice(COMMANDS))  # before the greeting
        for _ in range(steps):
            r = rng.random()
            if r < 0.55:
                s.sendall(rng.choice(COMMANDS))
            elif r < 0.7:
                try:
                    s.recv(4096)
                except socket.timeout:
                    pass
            elif r < 0.78:
                s.sendall(b'QUIT\r\n' + rng.choice(COMMANDS) * rng.randint(1, 4))
            elif r < 0.84:
                s.shutdown(socket.SHUT_WR)
                if rng.random() < 0.5:
                    try:
                        s.recv(4096)
                    except socket.timeout:
                        pass
                break
            elif r < 0.9:
                linger_reset(s)
                break
            elif r < 0.95:
                time.sleep(rng.random() * 0.05)  # pacing the peer, not synchronising
            else:
                s.sendall(os.urandom(rng.randint(1, 200)))
        if rng.random() < 0.3:
            linger_reset(s)
    except OSError:
        pass
    finally:
        s.close()


def good_session(port):
    """A well-formed session through the proxy: it is still serving (the
    server misbehaves at random, so a few tries)."""
    for _ in range(10):
        try:
            if one_session(port):
                return True
        except OSError:
            pass
    return False


def one_session(port):
    with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
        s.sendall(b'NOOP\r\n')
        s.settimeout(5)
        got = b''
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                d = s.recv(4096)
            except socket.timeout:
                break
            if not d:
                break
            got += d
            if b'250' in got:
                return True
    return False


def start_proxy(build, upstream, fault):
    env = dict(os.environ)
    env.setdefault('ASAN_OPTIONS', 'detect_leaks=1:abort_on_error=0')
    env.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1:halt_on_error=1')
    p = subprocess.Popen([os.path.join(build, 'faultgate'), 'proxy', '--listen', '127.0.0.1:0',
                          '--upstream', '127.0.0.1:%d' % upstream, '--fault', fault, '--seed', '7'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    port = None
    lines = []
    deadline = time.monotonic() + 10
    fd = p.stderr.fileno()
    buf = b''
    while port is None and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if not r:
            if p.poll() is not None:
                break
            continue
        d = os.read(fd, 4096)
        if not d:
            break
        buf += d
        for ln in buf.split(b'\n'):
            if b'listening on' in ln:
                port = int(ln.rsplit(b':', 1)[1])
    lines.append(buf)
    # Drain stderr from here on so that the decision log never blocks it.
    def drain():
        while True:
            d = p.stderr.read(65536)
            if not d:
                return
            lines.append(d)
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    return p, port, lines, t


def main():
    build = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 40
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
    print('hostile_proxy: seed %d, %.0f s' % (seed, seconds), flush=True)
    rng = random.Random(seed)
    server = Server(rng.random())
    end = time.monotonic() + seconds
    failures = []
    rounds = 0
    # Each fault gets its turn; starting and stopping a proxy takes ~0.5 s.
    per_fault = max(0.5, min(4.0, seconds / len(FAULTS) - 0.5))
    i = 0
    while time.monotonic() < end or rounds < len(FAULTS) and seconds >= len(FAULTS):
        fault = FAULTS[i % len(FAULTS)]
        i += 1
        rounds += 1
        p, port, lines, drain = start_proxy(build, server.port, fault)
        if port is None:
            p.kill()
            p.wait()
            failures.append('%s: the proxy did not start: %s' % (fault, b''.join(lines)[-500:]))
            break
        stop_at = time.monotonic() + per_fault
        nconn = 0
        while time.monotonic() < stop_at and p.poll() is None:
            threads = [threading.Thread(target=client, args=(port, random.Random(rng.random())))
                       for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(5)
            nconn += len(threads)
        alive = p.poll() is None
        ok_session = alive and ('refuse' in fault or 'close' in fault or 'reset' in fault
                                or 'stall' in fault or 'blackhole' in fault or 'limit' in fault
                                or 'drop' in fault or good_session(port))
        if alive:
            p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            failures.append('%s: the proxy did not exit within 10 s of SIGTERM' % fault)
        drain.join(5)
        err = b''.join(lines).decode('utf-8', 'replace')
        bad = [ln for ln in err.splitlines()
               if 'AddressSanitizer' in ln or 'runtime error' in ln or 'LeakSanitizer' in ln]
        if not alive or rc != 0 or bad or not ok_session:
            report = '\n'.join(err.splitlines()[-40:]) if (bad or not alive) else ''
            failures.append('%s: alive=%s exit=%s session=%s %d connections\n%s'
                            % (fault, alive, rc, ok_session, nconn, report))
            print('FAIL ' + failures[-1], flush=True)
        if rounds >= len(FAULTS) and time.monotonic() >= end:
            break
    server.stop = True
    print('hostile_proxy: %d rounds, %d failed (seed %d)' % (rounds, len(failures), seed))
    for f in failures[:5]:
        print(f)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
