"""synthcap - write pcap files of scripted TCP sessions, as other tools
would have captured them: several link types (Ethernet, Linux cooked SLL
and SLL2, raw IP, BSD loopback), IPv4 and IPv6, retransmitted segments and
several commands in one segment.  The tests use them as captures that
faultgate did not write.
"""
import struct

EN10MB, NULL, RAW, SLL, SLL2 = 1, 0, 101, 113, 276


def _csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


class Writer:
    def __init__(self, path, linktype=EN10MB, t0=1_700_000_000.0):
        self.f = open(path, "wb")
        self.linktype = linktype
        self.t = t0
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))

    def close(self):
        self.f.close()

    def _link(self, ip, v6):
        et = 0x86DD if v6 else 0x0800
        if self.linktype == EN10MB:
            return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + struct.pack("!H", et) + ip
        if self.linktype == NULL:
            return struct.pack("<I", 30 if v6 else 2) + ip
        if self.linktype == RAW:
            return ip
        if self.linktype == SLL:
            return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, et) + ip
        if self.linktype == SLL2:
            return struct.pack("!HHIHBB8s", et, 0, 1, 772, 0, 6, b"\0" * 8) + ip
        raise ValueError(self.linktype)

    def packet(self, src, dst, sport, dport, seq, ack, flags, data=b"", dt=0.001):
        v6 = ":" in src
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                          5 << 4, flags, 65535, 0, 0) + data
        if v6:
            import socket
            s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
            pseudo = s + d + struct.pack("!IxxxB", len(tcp), 6)
            tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
            ip = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + s + d + tcp
        else:
            import socket
            s, d = socket.inet_aton(src), socket.inet_aton(dst)
            pseudo = s + d + struct.pack("!xBH", 6, len(tcp))
            tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, s, d)
            hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
            ip = hdr + tcp
        frame = self._link(ip, v6)
        self.t += dt
        sec = int(self.t)
        usec = int(round((self.t - sec) * 1e6))
        self.f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)


FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16


class Conn:
    """One TCP connection: client (c) and server (s) sides."""

    def __init__(self, w, client, server, cport, sport=25, handshake=True):
        self.w = w
        self.addr = {0: (client, cport), 1: (server, sport)}
        self.seq = {0: 1000, 1: 5000}
        if handshake:
            self._raw(0, SYN, b"", ack=0)
            self.seq[0] += 1
            self._raw(1, SYN | ACK, b"")
            self.seq[1] += 1
            self._raw(0, ACK, b"")

    def _raw(self, side, flags, data, ack=None, seq=None, dt=0.001):
        (a, pa), (b, pb) = self.addr[side], self.addr[1 - side]
        self.w.packet(a, b, pa, pb, self.seq[side] if seq is None else seq,
                      self.seq[1 - side] if ack is None else ack, flags, data, dt)

    def send(self, side, data, dt=0.001, retransmit=False, ackit=True):
        if isinstance(data, str):
            data = data.encode()
        for off in range(0, len(data), 1400):
            seg = data[off:off + 1400]
            self._raw(side, PSH | ACK, seg, dt=dt)
            if retransmit:
                self._raw(side, PSH | ACK, seg, dt=0.2)
            self.seq[side] += len(seg)
        if ackit:
            self._raw(1 - side, ACK, b"")

    def c(self, data, **kw):
        self.send(0, data, **kw)

    def s(self, data, **kw):
        self.send(1, data, **kw)

    def fin(self, side, dt=0.001):
        self._raw(side, FIN | ACK, b"", dt=dt)
        self.seq[side] += 1
        self._raw(1 - side, ACK, b"")

    def rst(self, side, dt=0.001):
        self._raw(side, RST | ACK, b"", dt=dt)

    def close(self):
        self.fin(0)
        self.fin(1)


def body(size, token=None):
    lines = ["From: a@example.com", "To: b@example.org", "Subject: test"]
    if token:
        lines.append("X-Faultgate-Token: " + token)
    lines.append("")
    text = "\r\n".join(lines) + "\r\n"
    line = "The quick brown fox jumps over the lazy dog 0123456789\r\n"
    while len(text) < size:
        text += line
    return text


def ehlo_session(k, greet="220 mx.example.org ESMTP\r\n", ehlo_ext=("PIPELINING", "SIZE 10240000",
                                                                     "8BITMIME", "CHUNKING")):
    k.s(greet)
    k.c("EHLO client.example.com\r\n")
    lines = ["mx.example.org"] + list(ehlo_ext)
    k.s("".join("250%s%s\r\n" % ("-" if i + 1 < len(lines) else " ", l)
                for i, l in enumerate(lines)))
