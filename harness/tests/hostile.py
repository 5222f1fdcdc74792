#!/usr/bin/env python3
"""hostile.py - faultgate against hostile input, one attack per test.

  hostile.py BUILD_DIR SOURCE_DIR ATTACK...   (or --list)

Each attack runs faultgate in a fresh directory and asserts the exit status,
the one line that says what went wrong (a regular expression), a bound on the
wall time (HOSTILE_TIME_SCALE stretches it, for sanitizer builds) and that no
process it started is left: this process is a child subreaper, so anything
faultgate leaves behind becomes its child, and any process still naming the
attack's directory on its command line counts too.  Exit 0 when every attack
named held.
"""
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

BUILD = os.path.abspath(sys.argv[1])
SRC = os.path.abspath(sys.argv[2])
FG = os.path.join(BUILD, 'faultgate')
SCEN = os.path.join(SRC, 'scenarios', 'kb', 'kb-q129140-hang-after-data.yaml')
REFGW = os.path.join(SRC, 'scenarios', 'gateways', 'refgw.yaml')
SCALE = float(os.environ.get('HOSTILE_TIME_SCALE', '1'))
PR_SET_CHILD_SUBREAPER = 36

META = {
    'version': 1, 'scenario_id': 'kb-q129140-hang-after-data', 'seed': 1,
    'capture_mode': 'synth', 'pcap': 't.pcap', 'gateway_port': 26294, 'proxy_port': 36483,
    'mta_port': 43731, 'x400_port': 43631, 'profile_name': 'refgw', 'tls_policy': 'none',
    'timeouts': {'greeting': 5000, 'ehlo': 5000, 'mail': 5000, 'rcpt': 5000, 'data_init': 5000,
                 'data_block': 5000, 'data_done': 4000, 'idle': 30000, 'retry': 1000},
    'decisions': [{'t_us': 1000000, 'conn': 1, 'fault': 0, 'trigger': 'reply 354',
                   'action': 'stall'}],
    'tokens': [], 'start_us': 1000000, 'end_us': 9000000, 'probe_start_us': 8000000,
    'gateway_running_at_end': True, 'gateway_exit_status': 0, 'gateway_term_signal': 0,
}

PCAP_HDR = struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1)


def frame(sport, dport, seq, flags, payload=b''):
    """One Ethernet/IPv4/TCP frame (checksums left 0: the reader ignores them)."""
    tcp = struct.pack('>HHIIBBHHH', sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + tcp
    return b'\0' * 12 + b'\x08\x00' + ip


def record(t, data, caplen=None, origlen=None):
    return struct.pack('<IIII', t, 0, len(data) if caplen is None else caplen,
                       len(data) if origlen is None else origlen) + data


def small_trace():
    recs = [record(1, frame(40000, 26294, 100, 0x02)), record(1, frame(26294, 40000, 500, 0x12)),
            record(1, frame(40000, 26294, 101, 0x18, b'EHLO x\r\n' * 20)),
            record(2, frame(26294, 40000, 501, 0x18, b'250 ok\r\n' * 20))]
    return PCAP_HDR + b''.join(recs)


def pcapng_if99():
    def blk(t, body):
        body += b'\0' * ((4 - len(body) % 4) % 4)
        n = 12 + len(body)
        return struct.pack('<II', t, n) + body + struct.pack('<I', n)
    shb = blk(0x0A0D0D0A, struct.pack('<IHHq', 0x1A2B3C4D, 1, 0, -1))
    idb = blk(1, struct.pack('<HHI', 1, 0, 65535))
    pkt = frame(40000, 26294, 100, 0x02)
    epb = blk(6, struct.pack('<IIIII', 99, 0, 0, len(pkt), len(pkt)) + pkt)
    return shb + idb + epb


class Attack:
    def __init__(self, name):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix='fg-hostile-%s-' % name)

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def write(self, name, data, mode='wb'):
        with open(self.path(name), mode) as f:
            f.write(data)
        return self.path(name)

    def fifo(self, name='fifo'):
        os.mkfifo(self.path(name))
        return self.path(name)

    def meta(self, **kw):
        m = dict(META)
        m.update(kw)
        return self.write('t.meta.json', json.dumps(m), 'w')

    def run(self, args, rc, message, bound, stream='stderr', cwd=None):
        """faultgate ARGS: exit status rc, a line matching message, within
        bound seconds (scaled), nothing left running."""
        t0 = time.monotonic()
        limit = max(10.0, bound * SCALE * 4)
        try:
            p = subprocess.run([FG] + args, capture_output=True, text=True, errors='replace',
                               timeout=limit, cwd=cwd or self.dir)
        except subprocess.TimeoutExpired:
            raise AssertionError('%s: no answer within %.0f s' % (' '.join(args), limit))
        took = time.monotonic() - t0
        out = p.stdout + p.stderr
        text = p.stderr if stream == 'stderr' else p.stdout if stream == 'stdout' else out
        what = 'faultgate %s' % ' '.join(args)
        if p.returncode != rc:
            raise AssertionError('%s: exit %d, want %d\n%s' % (what, p.returncode, rc, out[-2000:]))
        if message and not re.search(message, text, re.M):
            raise AssertionError('%s: no line matching %r in\n%s' % (what, message, out[-2000:]))
        if took > bound * SCALE:
            raise AssertionError('%s: %.2f s, bound %.1f s' % (what, took, bound * SCALE))
        for bad in ('AddressSanitizer', 'runtime error:', 'LeakSanitizer'):
            if bad in out:
                raise AssertionError('%s: sanitizer report\n%s' % (what, out[-4000:]))
        self.no_leftovers()
        return p

    def no_leftovers(self):
        left = []
        deadline = time.monotonic() + 2
        while True:
            left = []
            while True:  # reap what was reparented to us and already exited
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
            for pid in os.listdir('/proc'):
                if not pid.isdigit() or int(pid) == os.getpid():
                    continue
                try:
                    with open('/proc/%s/cmdline' % pid, 'rb') as f:
                        cmd = f.read().replace(b'\0', b' ').decode('utf-8', 'replace')
                    with open('/proc/%s/status' % pid) as f:
                        st = f.read()
                except OSError:
                    continue
                ppid = int(re.search(r'^PPid:\s+(\d+)', st, re.M).group(1))
                zombie = re.search(r'^State:\s+Z', st, re.M)
                if (ppid == os.getpid() or self.dir in cmd) and not zombie:
                    left.append('%s %s' % (pid, cmd.strip()))
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # a process just reparented may still be exiting; bounded above
        if left:
            for ln in left:
                try:
                    os.kill(int(ln.split()[0]), signal.SIGKILL)
                except OSError:
                    pass
            raise AssertionError('processes left behind:\n' + '\n'.join(left))

    def judge(self, trace, message, bound=1.0, **kw):
        meta = self.meta()
        self.run(['judge', '-s', SCEN, '--meta', meta] + kw.get('extra', []) + [trace], 2,
                 message, bound, stream='both')

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


ATTACKS = {}


def attack(fn):
    ATTACKS[fn.__name__.replace('_', '-')] = fn
    return fn


# --- 3. traces that cannot support a verdict ---------------------------------

def trace_attack(a, data, message):
    t = a.write('t.pcap', data)
    a.judge(t, message)
    a.run(['x400-timeline', t], 2, message, 1.0)


@attack
def trace_header_only(a):
    trace_attack(a, PCAP_HDR, r't\.pcap: the trace holds no frames')


@attack
def trace_cut_at_30(a):
    trace_attack(a, small_trace()[:30], r't\.pcap: truncated dump file.*cannot be read to its end')


@attack
def trace_caplen_past_end(a):
    trace_attack(a, PCAP_HDR + record(1, b'x' * 10, caplen=1000, origlen=1000),
                 r'tried to read 1000 captured bytes.*cannot be read to its end')


@attack
def trace_caplen_huge(a):
    trace_attack(a, PCAP_HDR + record(1, b'x' * 100, caplen=0x7fffffff, origlen=0x7fffffff),
                 r'invalid packet capture length 2147483647.*cannot be read to its end')


@attack
def trace_pcapng_interface_99(a):
    t = a.write('t.pcapng', pcapng_if99())
    a.judge(t, r'interface 99.*cannot be read to its end')
    a.run(['x400-timeline', t], 2, r'interface 99', 1.0)


@attack
def trace_cut_midstream(a):
    d = small_trace()
    trace_attack(a, d[:len(d) - 40], r'truncated dump file.*cannot be read to its end')


# --- 4. FIFOs, devices, huge and deep files ----------------------------------

FIFO_MSG = r'a FIFO: only a regular file is read here'
DEV_MSG = r'/dev/zero: a character device: only a regular file is read here'


@attack
def fifo_scenario(a):
    a.run(['judge', '-s', a.fifo(), '--meta', a.meta(), a.write('t.pcap', small_trace())], 2,
          FIFO_MSG, 1.0)


@attack
def fifo_profile(a):
    a.run(['run', '-q', '-g', a.fifo(), '-o', a.path('out'), SCEN], 2, FIFO_MSG, 1.0)


@attack
def fifo_trace(a):
    f = a.fifo()
    a.judge(f, FIFO_MSG)
    a.run(['diagnose', f], 2, FIFO_MSG, 1.0)
    a.run(['x400-timeline', f], 2, FIFO_MSG, 1.0)


@attack
def fifo_meta(a):
    a.run(['judge', '-s', SCEN, '--meta', a.fifo(), a.write('t.pcap', small_trace())], 2,
          FIFO_MSG, 1.0)


@attack
def fifo_keylog(a):
    f = a.fifo('t.keys')
    t = a.write('t.pcap', small_trace())
    # named on the command line, and named by the metadata
    a.run(['judge', '-s', SCEN, '--meta', a.meta(), '--keylog', f, t], 2,
          r'key log .*' + FIFO_MSG, 1.0, stream='both')
    a.run(['judge', '-s', SCEN, '--meta', a.meta(keylog='t.keys'), t], 2,
          r'key log .*' + FIFO_MSG, 1.0, stream='both')


@attack
def fifo_script(a):
    a.run(['fake-mta', '--listen', '127.0.0.1:0', '--script', a.fifo()], 2, FIFO_MSG, 1.0)


@attack
def devzero_inputs(a):
    t = a.write('t.pcap', small_trace())
    a.run(['judge', '-s', '/dev/zero', '--meta', a.meta(), t], 2, DEV_MSG, 1.0)
    a.run(['run', '-q', '-g', '/dev/zero', '-o', a.path('out'), SCEN], 2, DEV_MSG, 1.0)
    a.run(['fake-mta', '--listen', '127.0.0.1:0', '--script', '/dev/zero'], 2, DEV_MSG, 1.0)
    a.run(['judge', '-s', SCEN, '--meta', a.meta(), '--keylog', '/dev/zero', t], 2, DEV_MSG, 1.0,
          stream='both')


@attack
def yaml_100mb(a):
    y = a.path('big.yaml')
    with open(y, 'wb') as f:
        f.truncate(100 << 20)
    a.run(['list', y], 2, r'big\.yaml: 104857600 bytes, more than the 4194304 allowed', 1.0)


@attack
def yaml_deep(a):
    y = a.write('deep.yaml', b'id: x\na: ' + b'[' * 100000 + b'\n')
    a.run(['list', y], 2, r'deep\.yaml:2:\d+: nested more than 64 levels deep', 1.0)


@attack
def yaml_many_keys(a):
    y = a.write('keys.yaml', b'id: x\n' + b''.join(b'k%d: 1\n' % i for i in range(100000)))
    a.run(['list', y], 2, r'keys\.yaml:257:1: more than 256 keys in one mapping', 1.0)


# --- 7. positions of bad octets ------------------------------------------------

@attack
def yaml_non_utf8_position(a):
    y = a.write('bad.yaml', b'id: x\ntitle: "ab\xffc"\n')
    a.run(['list', y], 2, r'bad\.yaml:2:11: invalid leading UTF-8 octet \(octet 0xff\)', 1.0)


@attack
def yaml_nul_position(a):
    y = a.write('nul.yaml', b'id: x\n\ntitle: abc\0d\n')
    a.run(['list', y], 2, r'nul\.yaml:3:11: control characters are not allowed \(octet 0x00\)',
          1.0)


# --- 8. values that would inject SMTP -----------------------------------------

def message_attack(a, body, message):
    y = a.write('m.yaml', ('id: x\nmessages:\n  - {%s}\nexpect:\n  - {rule: gateway-alive}\n'
                           % body).encode())
    a.run(['list', y], 2, message, 1.0)


@attack
def size_100000g(a):
    message_attack(a, 'size: 100000g', r"m\.yaml:3:12: bad size '100000g' .*at most 1g")


@attack
def from_crlf(a):
    message_attack(a, r'from: "a@b\r\nRSET"', r"m\.yaml:3:12: 'from': an address may not hold a CR")


@attack
def to_lf(a):
    message_attack(a, r'to: [ok@x, "a@b\nDATA"]', r"m\.yaml:3:17: 'to': an address may not hold an LF")


# --- 5. runs that spoil each other ---------------------------------------------

@attack
def outdir_symlink(a):
    os.mkdir(a.path('real'))
    os.symlink(a.path('real'), a.path('link'))
    a.run(['run', '-q', '-g', REFGW, '-o', a.path('link'), SCEN], 2,
          r'link is a symbolic link, not a directory: refusing', 1.0)
    assert os.path.islink(a.path('link')) and not os.listdir(a.path('real'))


@attack
def outdir_fifo(a):
    f = a.fifo()
    a.run(['run', '-q', '-g', REFGW, '-o', f, SCEN], 2, r'fifo is a FIFO, not a directory: refusing', 1.0)
    assert os.path.exists(f) and not os.path.isfile(f)


@attack
def outdir_locked(a):
    os.mkdir(a.path('out'))
    fd = os.open(a.path('out', '.faultgate.lock'), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a run in progress holds it
    try:
        a.run(['run', '-q', '-g', REFGW, '-o', a.path('out'), SCEN], 2,
              r'out: another faultgate run is writing there', 1.0)
    finally:
        os.close(fd)


@attack
def duplicate_ids(a):
    dup = a.write('dup.yaml', open(SCEN, 'rb').read())
    a.run(['run', '-q', '-g', REFGW, '-o', a.path('out'), SCEN, dup], 2,
          r"scenario id 'kb-q129140-hang-after-data' is also the id of .*(dup\.yaml|kb-q129140)", 1.0)


# --- 6, 7. gateways that misbehave ------------------------------------------------

@attack
def gateway_exits_at_once(a):
    prof = a.write('p.yaml', b'name: exit3\nstart:\n  argv: [sh, -c, "echo starting; echo '
                   b'\'fatal: cannot bind\' >&2; exit 3"]\nready: {tcp: gateway_port, timeout: 4s}\n')
    a.run(['run', '-q', '-g', prof, '-o', a.path('out'), SCEN], 2,
          r'the gateway exited before it was ready \(exit status 3\); its last output: '
          r'"fatal: cannot bind"', 2.0)
    assert os.path.exists(a.path('out', 'results.json'))


@attack
def unknown_placeholder(a):
    prof = open(REFGW).read().replace('"{upstream}"', '"{bogus}"')
    p = a.write('p.yaml', prof, 'w')
    a.run(['run', '-q', '-g', p, '-o', a.path('out'), SCEN], 2,
          r'unknown placeholder \{bogus\}', 2.0)


@attack
def gateway_log_flood(a):
    prof = (b'name: flood\nstart:\n  argv: [sh, -c, "yes a-gateway-that-writes-without-end & '
            b'exec {bindir}/refgw --listen 127.0.0.1:{gateway_port} --upstream {upstream} '
            b'--spool {workdir}/spool"]\nready: {tcp: gateway_port, timeout: 10s}\n'
            b'stop: {signal: TERM, grace: 1s}\n')
    p = a.write('p.yaml', prof)
    a.run(['run', '-q', '-g', p, '-o', a.path('out'), SCEN], 2, None, 30.0)
    log = a.path('out', 'kb-q129140-hang-after-data', 'gateway.log')
    size = os.path.getsize(log)
    assert size < (8 << 20) + 4096, 'gateway.log is %d bytes' % size
    with open(log, 'rb') as f:
        f.seek(4 << 20)
        assert b"octets of the gateway's output left out here" in f.read(4096)
    json.load(open(a.path('out', 'results.json')))


@attack
def earlier_spool_not_reused(a):
    # What an earlier run left in the scenario's work directory is gone
    # before the gateway starts (refgw would deliver its queue).
    work = a.path('out', 'kb-q129140-hang-after-data', 'spool')
    os.makedirs(work)
    a.write(os.path.join(work, 'left-by-an-earlier-run'), b'x')
    a.run(['run', '-q', '-g', REFGW, '-o', a.path('out'), SCEN], 0, None, 30.0)
    assert not os.path.exists(os.path.join(work, 'left-by-an-earlier-run'))


# --- 2. shell injection --------------------------------------------------------

@attack
def shell_injection(a):
    prof = re.sub(r'(?m)^version:.*$', 'version: [echo, "{workdir}"]', open(REFGW).read())
    p = a.write('p.yaml', prof, 'w')
    out = a.path('inj;touch %s;#' % a.path('PWNED'))
    args = ['run', '-q', '-g', p, '-o', out, SCEN]
    strace = shutil.which('strace')
    if strace:
        # Every process start, seen from the kernel: no shell among them.
        log = a.path('execve.log')
        env = dict(os.environ)
        # LeakSanitizer cannot work under ptrace; the other sanitizers can.
        env['ASAN_OPTIONS'] = (env.get('ASAN_OPTIONS', '') + ':detect_leaks=0').lstrip(':')
        r = subprocess.run([strace, '-f', '-qq', '-e', 'trace=execve', '-e', 'signal=none', '-o',
                            log, FG] + args, capture_output=True, timeout=120, cwd=a.dir, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        progs = set(re.findall(r'execve\("([^"]+)"[^=]*= 0', open(log).read()))
        shells = [x for x in progs if os.path.basename(x) in ('sh', 'bash', 'dash', 'timeout')]
        assert not shells, 'a shell ran: %s' % shells
        a.no_leftovers()
    else:
        a.run(args, 0, None, 30.0)
    assert not os.path.exists(a.path('PWNED')), 'the shell ran the injected command'
    res = json.load(open(os.path.join(out, 'results.json')))
    ver = json.dumps(res)
    assert 'inj;touch' in ver, 'the version line should hold the literal directory name'


def main():
    if sys.argv[3:] == ['--list']:
        print('\n'.join(ATTACKS))
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    failed = 0
    for name in sys.argv[3:]:
        a = Attack(name)
        t0 = time.monotonic()
        try:
            ATTACKS[name](a)
            print('ok   %s (%.2f s)' % (name, time.monotonic() - t0), flush=True)
        except AssertionError as e:
            failed += 1
            print('FAIL %s: %s' % (name, e), flush=True)
        finally:
            a.cleanup()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
