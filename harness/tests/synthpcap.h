/* synthpcap.h - a small pcap writer for the rule tests: TCP sessions on
 * loopback over Ethernet, written frame by frame, so that a test can
 * script exactly what each side sent (check_expect_security.c,
 * check_expect_tls.c).  Define SYNTHPCAP_TAG (a short name for the files
 * in /tmp) and BASE_US (the first frame's time) before including it. */
#ifndef FAULTGATE_TEST_SYNTHPCAP_H
#define FAULTGATE_TEST_SYNTHPCAP_H

#include <check.h>
#include <pcap/pcap.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct tw {
    pcap_t *dead;
    pcap_dumper_t *d;
    char path[256];
    uint64_t t_ms;
};

struct tc {
    struct tw *w;
    uint16_t cport, sport;
    uint32_t seq[2];
};

static inline uint16_t csum(const uint8_t *p, size_t n, uint32_t s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)(p[n - 1] << 8);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static inline void tw_open(struct tw *w, const char *name)
{
    snprintf(w->path, sizeof w->path, "/tmp/fg-check-" SYNTHPCAP_TAG "-%ld-%s.pcap", (long)getpid(),
             name);
    w->dead = pcap_open_dead(DLT_EN10MB, 65535);
    w->d = pcap_dump_open(w->dead, w->path);
    ck_assert_ptr_nonnull(w->d);
    w->t_ms = 100;
}

static inline void tw_close(struct tw *w)
{
    pcap_dump_close(w->d);
    pcap_close(w->dead);
}

/* One frame from side `from` (0 client, 1 server), 1 ms after the last. */
static inline void frame(struct tc *c, int from, uint8_t flags, const char *data, size_t len)
{
    static uint8_t b[9000];
    ck_assert_uint_lt(len, sizeof b - 54);
    memset(b, 0, 54);
    b[12] = 0x08;
    uint8_t *ip = b + 14, *tcp = b + 34;
    ip[0] = 0x45;
    uint16_t tot = (uint16_t)(40 + len);
    ip[2] = (uint8_t)(tot >> 8), ip[3] = (uint8_t)tot;
    ip[8] = 64, ip[9] = 6;
    ip[12] = ip[16] = 127, ip[15] = ip[19] = 1;
    uint16_t ck = csum(ip, 20, 0);
    ip[10] = (uint8_t)(ck >> 8), ip[11] = (uint8_t)ck;
    uint16_t sp = from ? c->sport : c->cport, dp = from ? c->cport : c->sport;
    tcp[0] = (uint8_t)(sp >> 8), tcp[1] = (uint8_t)sp, tcp[2] = (uint8_t)(dp >> 8),
    tcp[3] = (uint8_t)dp;
    uint32_t seq = c->seq[from], ack = (flags & 0x10) ? c->seq[!from] : 0;
    for (int i = 0; i < 4; i++) {
        tcp[4 + i] = (uint8_t)(seq >> (24 - 8 * i));
        tcp[8 + i] = (uint8_t)(ack >> (24 - 8 * i));
    }
    tcp[12] = 0x50, tcp[13] = flags, tcp[14] = 0xff, tcp[15] = 0xff;
    if (len)
        memcpy(tcp + 20, data, len);
    uint8_t ph[12] = {
        127, 0, 0, 1, 127, 0, 0, 1, 0, 6, (uint8_t)((20 + len) >> 8), (uint8_t)(20 + len)};
    uint32_t s = 0;
    for (int i = 0; i < 12; i += 2)
        s += (uint32_t)(ph[i] << 8 | ph[i + 1]);
    ck = csum(tcp, 20 + len, s);
    tcp[16] = (uint8_t)(ck >> 8), tcp[17] = (uint8_t)ck;
    c->seq[from] += (uint32_t)len + ((flags & 0x03) ? 1 : 0);
    struct pcap_pkthdr h;
    uint64_t us = BASE_US + (c->w->t_ms++) * 1000;
    h.ts.tv_sec = (time_t)(us / 1000000);
    h.ts.tv_usec = (suseconds_t)(us % 1000000);
    h.caplen = h.len = (bpf_u_int32)(54 + len);
    pcap_dump((u_char *)c->w->d, &h, b);
}

static inline struct tc conn_open(struct tw *w, uint16_t cport, uint16_t sport)
{
    struct tc c = {w, cport, sport, {1000u * cport, 7000u * sport}};
    frame(&c, 0, 0x02, NULL, 0);
    frame(&c, 1, 0x12, NULL, 0);
    frame(&c, 0, 0x10, NULL, 0);
    return c;
}

/* "C:..." from the client, "S:..." from the server, "c:"/"s:" a FIN; the
 * octets may hold NUL when given with their length. */
static inline void sayn(struct tc *c, int from, const char *text, size_t n)
{
    frame(c, from, 0x18, text, n);
}

static inline void say(struct tc *c, int from, const char *text)
{
    sayn(c, from, text, strlen(text));
}

static inline void fin(struct tc *c, int from)
{
    frame(c, from, 0x11, NULL, 0);
}

static inline void rst(struct tc *c, int from)
{
    frame(c, from, 0x14, NULL, 0);
}

#endif
