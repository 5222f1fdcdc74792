/* gen_trace.c - write a large synthetic SMTP capture for the analyzer
 * benchmarks (ci/bench/judge_speed.sh).
 *
 * usage: gen_trace OUT.pcap [SESSIONS] [BODY_OCTETS] [hang]
 *
 * A classic pcap (Ethernet, IPv4, TCP) of SESSIONS complete SMTP sessions
 * (default 100000) with BODY_OCTETS of message body each (default 10240):
 * even sessions are a client submitting to the gateway 10.0.0.1:25, odd
 * ones the gateway relaying that message to 10.0.0.9:25 (same token), so
 * the trace has both legs of a relay.  Bodies go in 1448-octet segments,
 * each acknowledged, with proper sequence numbers, handshakes and FINs.
 * At the start, one message passes through a faultgate run's three ports
 * (injector -> 2525 gateway, gateway -> 2526 proxy, proxy -> 2527 fake
 * MTA); OUT.meta.json describes that run, so `faultgate judge` can judge it
 * inside the large capture.  Timestamps advance 20 us per frame.
 * With `hang`, one relayed session half-way through is the KB Q129140
 * hang: its end of data is never answered and the gateway resets the
 * connection 30 s later (the capture's one finding for `diagnose`).
 * Written with stdio, not libpcap, so the generator is as fast as the
 * disk.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FIN = 0x01, SYN = 0x02, PSH = 0x08, ACK = 0x10 };

static FILE *out;
static uint64_t now_us = 1700000000ull * 1000000;
static uint64_t frames;

struct conn {
    uint32_t ip[2];
    uint16_t port[2];
    uint32_t seq[2];
};

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static uint16_t csum(const uint8_t *p, size_t n)
{
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static void seg(struct conn *c, int d, uint8_t flags, const void *data, size_t len)
{
    uint8_t f[14 + 20 + 20 + 1500];
    memset(f, 0, 54);
    f[5] = 1;
    f[11] = 2;
    put16(f + 12, 0x0800);
    uint8_t *ip = f + 14, *t = ip + 20;
    ip[0] = 0x45;
    put16(ip + 2, (uint16_t)(40 + len));
    put16(ip + 6, 0x4000);
    ip[8] = 64;
    ip[9] = 6;
    put32(ip + 12, c->ip[d]);
    put32(ip + 16, c->ip[!d]);
    put16(ip + 10, csum(ip, 20));
    put16(t, c->port[d]);
    put16(t + 2, c->port[!d]);
    put32(t + 4, c->seq[d]);
    put32(t + 8, (flags & ACK) ? c->seq[!d] : 0);
    t[12] = 5 << 4;
    t[13] = flags;
    put16(t + 14, 65535);
    memcpy(t + 20, data, len);
    c->seq[d] += (uint32_t)len + ((flags & (SYN | FIN)) ? 1 : 0);
    now_us += 20;
    uint32_t n = (uint32_t)(54 + len);
    uint32_t h[4] = {(uint32_t)(now_us / 1000000), (uint32_t)(now_us % 1000000), n, n};
    fwrite(h, sizeof h, 1, out);
    fwrite(f, n, 1, out);
    frames++;
}

static void say(struct conn *c, int d, const char *s)
{
    seg(c, d, PSH | ACK, s, strlen(s));
    seg(c, !d, ACK, "", 0);
}

static int hang_next; /* the next session is the Q129140 hang */

static void session(uint32_t cip, uint16_t cport, uint32_t sip, uint16_t sport, const char *token,
                    const char *body, size_t blen)
{
    int hang = hang_next;
    hang_next = 0;
    struct conn c = {{cip, sip}, {cport, sport}, {cport * 7919u, sport * 104729u + cip}};
    seg(&c, 0, SYN, "", 0);
    seg(&c, 1, SYN | ACK, "", 0);
    seg(&c, 0, ACK, "", 0);
    say(&c, 1, "220 mx.example.test ESMTP\r\n");
    say(&c, 0, "EHLO client.example.test\r\n");
    say(&c, 1, "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n");
    say(&c, 0, "MAIL FROM:<user1@company1.test>\r\n");
    say(&c, 1, "250 2.1.0 Sender ok\r\n");
    say(&c, 0, "RCPT TO:<user2@company2.test>\r\n");
    say(&c, 1, "250 2.1.5 Recipient ok\r\n");
    say(&c, 0, "DATA\r\n");
    say(&c, 1, "354 End data with <CR><LF>.<CR><LF>\r\n");
    char hdr[256];
    int hl = snprintf(hdr, sizeof hdr,
                      "X-Faultgate-Token: %s\r\nMessage-ID: <%s@company1.test>\r\n"
                      "Subject: benchmark\r\n\r\n",
                      token, token);
    /* header and body in full segments, one ACK per two, as a stack
     * would */
    size_t total = (size_t)hl + blen + 3, off = 0;
    uint8_t buf[1448];
    int k = 0;
    while (off < total) {
        size_t n = total - off < sizeof buf ? total - off : sizeof buf;
        for (size_t i = 0; i < n; i++) {
            size_t o = off + i;
            buf[i] = o < (size_t)hl          ? (uint8_t)hdr[o]
                     : o < (size_t)hl + blen ? (uint8_t)body[o - (size_t)hl]
                                             : (uint8_t) ".\r\n"[o - (size_t)hl - blen];
        }
        seg(&c, 0, PSH | ACK, buf, n);
        if (++k % 2 == 0)
            seg(&c, 1, ACK, "", 0);
        off += n;
    }
    if (hang) {
        now_us += 30ull * 1000000;
        seg(&c, 0, 0x04 | ACK, "", 0); /* RST */
        return;
    }
    say(&c, 1, "250 2.0.0 Ok: queued\r\n");
    say(&c, 0, "QUIT\r\n");
    say(&c, 1, "221 2.0.0 Bye\r\n");
    seg(&c, 0, FIN | ACK, "", 0);
    seg(&c, 1, FIN | ACK, "", 0);
    seg(&c, 0, ACK, "", 0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: gen_trace OUT.pcap [SESSIONS] [BODY_OCTETS] [hang]\n");
        return 2;
    }
    unsigned long sessions = argc > 2 ? strtoul(argv[2], NULL, 10) : 100000;
    size_t blen = argc > 3 ? strtoul(argv[3], NULL, 10) : 10240;
    int with_hang = argc > 4 && strcmp(argv[4], "hang") == 0;
    if (blen < 80)
        blen = 80;
    out = fopen(argv[1], "wb");
    if (!out) {
        perror(argv[1]);
        return 2;
    }
    static char iobuf[1 << 20];
    setvbuf(out, iobuf, _IOFBF, sizeof iobuf);
    uint32_t gh[6] = {0xa1b2c3d4, 0x00040002, 0, 0, 262144, 1};
    fwrite(gh, sizeof gh, 1, out);

    /* The body: text lines of 78 octets with CRLF. */
    char *body = malloc(blen);
    for (size_t i = 0; i < blen; i++)
        body[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : (char)('a' + (i * 7) % 26);
    body[blen - 2] = '\r';
    body[blen - 1] = '\n';

    /* The embedded run: injector -> gateway -> proxy -> fake MTA. */
    uint32_t lo = 0x7f000001;
    uint64_t run_start = now_us;
    session(lo, 41000, lo, 2525, "run-0001", body, blen);
    session(lo, 41001, lo, 2526, "run-0001", body, blen);
    session(lo, 41002, lo, 2527, "run-0001", body, blen);
    uint64_t run_accept = now_us;

    uint32_t gw = 0x0a000001, hop = 0x0a000009;
    char token[32];
    for (unsigned long i = 0; i < sessions; i++) {
        unsigned long m = i / 2;
        snprintf(token, sizeof token, "bench-%lu", m);
        hang_next = with_hang && i % 2 == 1 && m == sessions / 4;
        if (i % 2 == 0)
            session(0x0a010000 | (uint32_t)(m % 65000 + 1), (uint16_t)(10000 + m % 50000), gw, 25,
                    token, body, blen);
        else
            session(gw, (uint16_t)(10000 + m % 50000), hop, 25, token, body, blen);
    }
    fclose(out);
    free(body);

    char mp[4096];
    size_t pl = strlen(argv[1]);
    if (pl > 5 && strcmp(argv[1] + pl - 5, ".pcap") == 0)
        snprintf(mp, sizeof mp, "%.*s.meta.json", (int)(pl - 5), argv[1]);
    else
        snprintf(mp, sizeof mp, "%s.meta.json", argv[1]);
    FILE *mf = fopen(mp, "w");
    if (!mf) {
        perror(mp);
        return 2;
    }
    fprintf(mf,
            "{\"version\": 1, \"scenario_id\": \"bench\", \"seed\": 1, \"capture_mode\": "
            "\"synth\", \"gateway_port\": 2525, \"proxy_port\": 2526, \"mta_port\": 2527, "
            "\"profile_name\": \"bench\", \"timeouts\": {\"data_done\": 4000}, \"decisions\": [], "
            "\"tokens\": [{\"token\": \"run-0001\", \"accepted\": true, \"reply_code\": 250, "
            "\"accepted_us\": %llu}], \"start_us\": %llu, \"end_us\": %llu, "
            "\"gateway_running_at_end\": true}\n",
            (unsigned long long)run_accept, (unsigned long long)run_start,
            (unsigned long long)now_us);
    fclose(mf);
    fprintf(stderr, "gen_trace: %s: %llu frames, %lu sessions\n", argv[1],
            (unsigned long long)frames, sessions);
    return 0;
}
