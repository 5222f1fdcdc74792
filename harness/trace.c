/* trace.c - read a pcap or pcapng capture and reassemble its TCP streams.
 *
 * libpcap's offline reader gives the frames (pcap and pcapng, any byte
 * order), except for classic pcap files, which are mapped and read here
 * (read_mapped: the hot path of a large capture); this file decodes the link layers faultgate meets
 * (Ethernet with an 802.1Q tag, Linux cooked v1/v2, raw IP, BSD loopback), IPv4 and IPv6, and TCP.
 * Per connection and direction it keeps the next expected sequence number, delivers bytes once and
 * in order, holds out-of-order segments (bounded) and reports holes that are never filled as gaps.
 * Closed connections stay as small tombstones for a while so that late
 * ACKs and RSTs do not open phantom connections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/trace.h"
#include "faultgate/util.h"

#define OOO_LIMIT (4u * 1024 * 1024) /* out-of-order octets held per direction */
#define TOMB_MAX 65536               /* closed connections remembered */
#define TOMB_US (240ull * 1000000)   /* and for how long: 2 MSL (RFC 9293 §3.4.2) */
#define ACK_SANE (1ull << 30)        /* larger jumps of an ACK are not believed */
#define TRACE_IOBUF (1u << 16)       /* stdio buffer for the capture file */

enum { F_FIN = 0x01, F_SYN = 0x02, F_RST = 0x04, F_ACK = 0x10 };

struct seg {
    struct seg *next;
    uint64_t off;
    size_t len;
    uint8_t data[];
};

/* One direction of a connection, indexed by sender: 0 client, 1 server. */
struct half {
    int base_known;
    uint32_t base; /* sequence number of stream offset 0 */
    uint64_t next; /* next offset to deliver */
    int have_ack;  /* the receiver acknowledged up to max_ack */
    uint64_t max_ack;
    struct seg *ooo; /* sorted by off */
    struct seg *ooo_tail;
    size_t ooo_bytes;
    int fin_seen, fin_done;
    uint64_t fin_off;
};

struct conn {
    /* What a lookup reads first, together at the start (one cache line). */
    struct conn *hnext; /* hash chain */
    uint64_t hash;
    int family;
    uint16_t port[2];
    uint8_t addr[2][16];      /* 0 client, 1 server */
    struct conn *next, *prev; /* open list (id order) or tombstone list */
    struct half h[2];
    struct fg_trace_conn pub;
    int closing, closed;
    uint64_t last_us;
};

struct list {
    struct conn *head, *tail;
    size_t n;
};

struct reader {
    const struct fg_trace_cbs *cbs;
    void *ud;
    struct fg_trace_stats *st;
    struct conn **bucket;
    size_t nbucket, nentries;
    struct list open, tomb;
    struct conn *last; /* the connection of the last segment looked up */
    unsigned next_id;
    uint64_t frame, us;
};

/* The fields of one TCP segment. */
struct pkt {
    int family;
    const uint8_t *src, *dst;
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags;
    const uint8_t *payload;
    size_t len;
};

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- lists and the connection table ---------------------------------- */

static void list_add(struct list *l, struct conn *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_del(struct list *l, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->next = c->prev = NULL;
    l->n--;
}

/* FNV-1a over both endpoints, combined so that either direction hashes
 * the same. */
static uint64_t ep_hash(const uint8_t *a, size_t alen, uint16_t port)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < alen; i++)
        h = (h ^ a[i]) * 1099511628211ull;
    h = (h ^ (port & 0xff)) * 1099511628211ull;
    h = (h ^ (port >> 8)) * 1099511628211ull;
    return h;
}

static size_t alen_of(int family)
{
    return family == AF_INET6 ? 16 : 4;
}

static uint64_t conn_hash(int family, const uint8_t *a, uint16_t pa, const uint8_t *b, uint16_t pb)
{
    size_t al = alen_of(family);
    return ep_hash(a, al, pa) + ep_hash(b, al, pb) + (uint64_t)family;
}

/* A chained table whose size is a power of two, at most one entry per
 * bucket on average; each entry keeps its hash so that a lookup compares
 * it before the addresses. */
static void table_insert(struct reader *r, struct conn *c)
{
    if (r->nentries + 1 > r->nbucket) {
        size_t nb = r->nbucket ? r->nbucket * 4 : 256;
        struct conn **b = fg_calloc(nb, sizeof(*b));
        for (size_t i = 0; i < r->nbucket; i++) {
            while (r->bucket[i]) {
                struct conn *x = r->bucket[i];
                r->bucket[i] = x->hnext;
                size_t k = x->hash & (nb - 1);
                x->hnext = b[k];
                b[k] = x;
            }
        }
        free(r->bucket);
        r->bucket = b;
        r->nbucket = nb;
    }
    c->hash = conn_hash(c->family, c->addr[0], c->port[0], c->addr[1], c->port[1]);
    size_t k = c->hash & (r->nbucket - 1);
    c->hnext = r->bucket[k];
    r->bucket[k] = c;
    r->nentries++;
}

static void table_remove(struct reader *r, struct conn *c)
{
    if (r->last == c)
        r->last = NULL;
    size_t k = c->hash & (r->nbucket - 1);
    for (struct conn **pp = &r->bucket[k]; *pp; pp = &(*pp)->hnext) {
        if (*pp == c) {
            *pp = c->hnext;
            r->nentries--;
            return;
        }
    }
}

static int conn_is(const struct conn *c, const struct pkt *p, size_t al, int d)
{
    return c->family == p->family && c->port[d] == p->sport && c->port[!d] == p->dport &&
           !memcmp(c->addr[d], p->src, al) && !memcmp(c->addr[!d], p->dst, al);
}

/* The connection of p, with *dir the sender's side (0 client, 1 server).
 * Consecutive segments mostly belong to one connection: the last one
 * found is tried before the table. */
static struct conn *table_find(struct reader *r, const struct pkt *p, int *dir)
{
    if (!r->nbucket)
        return NULL;
    size_t al = alen_of(p->family);
    struct conn *c = r->last;
    if (c) {
        for (int d = 0; d < 2; d++)
            if (conn_is(c, p, al, d)) {
                *dir = d;
                return c;
            }
    }
    uint64_t h = conn_hash(p->family, p->src, p->sport, p->dst, p->dport);
    for (c = r->bucket[h & (r->nbucket - 1)]; c; c = c->hnext) {
        if (c->hash != h)
            continue;
        for (int d = 0; d < 2; d++) {
            if (conn_is(c, p, al, d)) {
                *dir = d;
                r->last = c;
                return c;
            }
        }
    }
    return NULL;
}

static void free_segs(struct half *h)
{
    while (h->ooo) {
        struct seg *s = h->ooo;
        h->ooo = s->next;
        free(s);
    }
    h->ooo_tail = NULL;
    h->ooo_bytes = 0;
}

static void tomb_expire(struct reader *r)
{
    while (r->tomb.head && (r->tomb.n > TOMB_MAX || r->tomb.head->last_us + TOMB_US < r->us)) {
        struct conn *c = r->tomb.head;
        list_del(&r->tomb, c);
        table_remove(r, c);
        free(c);
    }
}

/* ---- reassembly -------------------------------------------------------- */

static void close_conn(struct reader *r, struct conn *c, int rst_dir);

/* Offset in h's stream of sequence number seq, taken nearest to h->next
 * (serial arithmetic, RFC 1982), so streams past 4 GiB keep counting. */
static int64_t seq_off(const struct half *h, uint32_t seq)
{
    uint32_t rel = seq - h->base;
    int32_t d = (int32_t)(rel - (uint32_t)h->next);
    return (int64_t)h->next + d;
}

static void check_fin(struct reader *r, struct conn *c, int d)
{
    struct half *h = &c->h[d];
    if (!h->fin_seen || h->fin_done || h->next < h->fin_off)
        return;
    h->fin_done = 1;
    if (r->cbs->on_fin)
        r->cbs->on_fin(r->ud, &c->pub, (enum fg_dir)d, r->frame, r->us);
    if (c->h[!d].fin_done)
        close_conn(r, c, -1);
}

static void emit_data(struct reader *r, struct conn *c, int d, const uint8_t *p, uint64_t off,
                      size_t len)
{
    struct half *h = &c->h[d];
    uint64_t skip = h->next - off;
    if (skip >= len)
        return;
    if (r->cbs->on_data)
        r->cbs->on_data(r->ud, &c->pub, (enum fg_dir)d, p + skip, len - (size_t)skip, r->frame,
                        r->us);
    h->next += len - skip;
    r->st->bytes += len - skip;
}

/* Deliver the held segments that the stream has reached. */
static void drain(struct reader *r, struct conn *c, int d)
{
    struct half *h = &c->h[d];
    while (h->ooo && h->ooo->off <= h->next) {
        struct seg *s = h->ooo;
        h->ooo = s->next;
        if (!h->ooo)
            h->ooo_tail = NULL;
        h->ooo_bytes -= s->len;
        emit_data(r, c, d, s->data, s->off, s->len);
        free(s);
    }
    check_fin(r, c, d);
}

/* Declare the bytes up to target missing and go on from there. */
static void gap_to(struct reader *r, struct conn *c, int d, uint64_t target)
{
    struct half *h = &c->h[d];
    if (target > h->next) {
        r->st->gaps++;
        if (r->cbs->on_gap)
            r->cbs->on_gap(r->ud, &c->pub, (enum fg_dir)d, target - h->next, r->frame, r->us);
        h->next = target;
    }
    drain(r, c, d);
}

/* The lowest offset beyond a hole that the trace holds (a segment or the
 * FIN), or 0 when nothing waits. */
static int hole_end(const struct half *h, uint64_t *end)
{
    int found = 0;
    if (h->ooo) {
        *end = h->ooo->off;
        found = 1;
    }
    if (h->fin_seen && !h->fin_done && h->fin_off > h->next && (!found || h->fin_off < *end)) {
        *end = h->fin_off;
        found = 1;
    }
    return found;
}

/* The receiver already has bytes the trace lacks: what lies before the
 * next held bytes will never show up. */
static void check_ack_gap(struct reader *r, struct conn *c, int d)
{
    struct half *h = &c->h[d];
    uint64_t end;
    while (!c->closed && h->have_ack && h->max_ack > h->next && hole_end(h, &end)) {
        gap_to(r, c, d, end < h->max_ack ? end : h->max_ack);
    }
}

static void hold(struct reader *r, struct conn *c, int d, const uint8_t *p, uint64_t off,
                 size_t len)
{
    struct half *h = &c->h[d];
    struct seg **pp = &h->ooo;
    /* Segments behind a hole usually arrive in order: start at the tail
     * (the loop checks it and steps to its next at once). */
    if (h->ooo_tail && h->ooo_tail->off <= off)
        pp = &h->ooo_tail;
    for (; *pp && (*pp)->off <= off; pp = &(*pp)->next) {
        if ((*pp)->off + (*pp)->len >= off + len) { /* already held */
            r->st->retrans++;
            return;
        }
    }
    struct seg *s = fg_malloc(sizeof(*s) + len);
    s->off = off;
    s->len = len;
    memcpy(s->data, p, len);
    s->next = *pp;
    *pp = s;
    if (!s->next)
        h->ooo_tail = s;
    h->ooo_bytes += len;
    while (h->ooo && h->ooo_bytes > OOO_LIMIT)
        gap_to(r, c, d, h->ooo->off);
}

static void on_ack(struct reader *r, struct conn *c, int d, uint32_t ack)
{
    struct half *h = &c->h[d];
    if (!h->base_known)
        return;
    int64_t off = seq_off(h, ack);
    if (off <= (int64_t)h->next || (uint64_t)off - h->next > ACK_SANE)
        return;
    if (!h->have_ack || (uint64_t)off > h->max_ack) {
        h->have_ack = 1;
        h->max_ack = (uint64_t)off;
    }
    check_ack_gap(r, c, d);
}

static void on_segment(struct reader *r, struct conn *c, int d, const struct pkt *p)
{
    struct half *h = &c->h[d];
    uint32_t dseq = p->seq + ((p->flags & F_SYN) ? 1 : 0);
    if (!h->base_known) {
        h->base_known = 1;
        h->base = dseq;
        h->next = 0;
    }
    c->last_us = r->us;
    if (p->flags & F_ACK)
        on_ack(r, c, !d, p->ack);
    if (c->closed)
        return;
    if (p->flags & F_RST) {
        close_conn(r, c, d);
        return;
    }
    int64_t soff = seq_off(h, dseq);
    const uint8_t *data = p->payload;
    size_t len = p->len;
    if (soff < 0) { /* before the stream's start: only the part after it counts */
        if ((uint64_t)-soff >= len) {
            if (len)
                r->st->retrans++;
            len = 0;
        } else {
            data += (size_t)-soff;
            len -= (size_t)-soff;
        }
        soff = 0;
    }
    uint64_t off = (uint64_t)soff;
    if (len) {
        if (off + len <= h->next) {
            r->st->retrans++;
        } else if (off <= h->next) {
            if (off < h->next)
                r->st->retrans++;
            emit_data(r, c, d, data, off, len);
            drain(r, c, d);
        } else {
            hold(r, c, d, data, off, len);
        }
    }
    if (c->closed)
        return;
    if ((p->flags & F_FIN) && !h->fin_seen) {
        h->fin_seen = 1;
        h->fin_off = off + len;
    }
    check_ack_gap(r, c, d);
    if (!c->closed)
        check_fin(r, c, d);
}

/* Flush both directions (holes become gaps), report the RST if any, then
 * on_close; the connection stays as a tombstone. */
static void close_conn(struct reader *r, struct conn *c, int rst_dir)
{
    if (c->closing)
        return;
    c->closing = 1;
    for (int d = 0; d < 2; d++) {
        struct half *h = &c->h[d];
        while (h->ooo)
            gap_to(r, c, d, h->ooo->off);
        if (h->fin_seen && !h->fin_done)
            gap_to(r, c, d, h->fin_off);
    }
    if (rst_dir >= 0 && r->cbs->on_rst)
        r->cbs->on_rst(r->ud, &c->pub, (enum fg_dir)rst_dir, r->frame, r->us);
    if (r->cbs->on_close)
        r->cbs->on_close(r->ud, &c->pub);
    c->closed = 1;
    for (int d = 0; d < 2; d++)
        free_segs(&c->h[d]);
    list_del(&r->open, c);
    list_add(&r->tomb, c);
}

static void format_ep(char *out, size_t outlen, int family, const uint8_t *a, uint16_t port)
{
    char s[INET6_ADDRSTRLEN];
    inet_ntop(family, a, s, sizeof(s));
    snprintf(out, outlen, family == AF_INET6 ? "[%s]:%u" : "%s:%u", s, port);
}

static void fill_sa(struct sockaddr_storage *ss, int family, const uint8_t *a, uint16_t port)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, a, 16);
        s6->sin6_port = htons(port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a, 4);
        s4->sin_port = htons(port);
    }
}

/* Which end of a connection first seen in p is the client. */
static int src_is_client(const struct pkt *p)
{
    if (p->flags & F_SYN)
        return !(p->flags & F_ACK);
    int sw = p->sport < 1024, dw = p->dport < 1024;
    if (sw != dw)
        return dw;
    if (p->sport != p->dport)
        return p->dport < p->sport;
    return 1;
}

static struct conn *conn_new(struct reader *r, const struct pkt *p)
{
    struct conn *c = fg_calloc(1, sizeof(*c));
    int sc = src_is_client(p);
    size_t al = alen_of(p->family);
    c->family = p->family;
    memcpy(c->addr[sc ? 0 : 1], p->src, al);
    memcpy(c->addr[sc ? 1 : 0], p->dst, al);
    c->port[sc ? 0 : 1] = p->sport;
    c->port[sc ? 1 : 0] = p->dport;
    c->pub.id = ++r->next_id;
    fill_sa(&c->pub.client, c->family, c->addr[0], c->port[0]);
    fill_sa(&c->pub.server, c->family, c->addr[1], c->port[1]);
    c->pub.client_port = c->port[0];
    c->pub.server_port = c->port[1];
    format_ep(c->pub.client_str, sizeof(c->pub.client_str), c->family, c->addr[0], c->port[0]);
    format_ep(c->pub.server_str, sizeof(c->pub.server_str), c->family, c->addr[1], c->port[1]);
    c->pub.open_frame = r->frame;
    c->pub.open_us = r->us;
    c->pub.saw_syn = (p->flags & (F_SYN | F_ACK)) == F_SYN;
    c->last_us = r->us;
    table_insert(r, c);
    list_add(&r->open, c);
    r->st->conns++;
    if (r->cbs->on_open)
        r->cbs->on_open(r->ud, &c->pub);
    return c;
}

static void on_tcp(struct reader *r, const struct pkt *p)
{
    int d = 0;
    struct conn *c = table_find(r, p, &d);
    int syn = (p->flags & (F_SYN | F_ACK | F_RST)) == F_SYN;
    if (c && syn) {
        /* A SYN repeating the known initial sequence number is a
         * retransmission; any other starts a new connection (port reuse). */
        struct half *h = &c->h[d];
        int same = !c->closed && d == 0 && c->pub.saw_syn && h->base_known && h->base == p->seq + 1;
        if (!same) {
            if (!c->closed)
                close_conn(r, c, -1);
            list_del(&r->tomb, c);
            table_remove(r, c);
            free(c);
            c = NULL;
        }
    }
    if (c && c->closed) {
        c->last_us = r->us;
        r->st->skipped++;
        return;
    }
    if (!c) {
        c = conn_new(r, p);
        d = src_is_client(p) ? 0 : 1;
    }
    on_segment(r, c, d, p);
}

/* ---- decoding ---------------------------------------------------------- */

static int decode_tcp(struct reader *r, struct pkt *p, const uint8_t *t, size_t len)
{
    if (len < 20)
        return -1;
    size_t doff = (size_t)(t[12] >> 4) * 4;
    if (doff < 20 || doff > len)
        return -1;
    p->sport = be16(t);
    p->dport = be16(t + 2);
    p->seq = be32(t + 4);
    p->ack = be32(t + 8);
    p->flags = t[13];
    p->payload = t + doff;
    p->len = len - doff;
    r->st->tcp_frames++;
    on_tcp(r, p);
    return 0;
}

static int decode_ipv4(struct reader *r, const uint8_t *ip, size_t len)
{
    if (len < 20 || (ip[0] >> 4) != 4)
        return -1;
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    size_t tot = be16(ip + 2);
    if (tot == 0 || tot > len) /* 0: segmentation offload; > len: snapped */
        tot = len;
    if (ihl < 20 || ihl > tot)
        return -1;
    if (be16(ip + 6) & 0x3fff) { /* MF or an offset: a fragment */
        r->st->fragments++;
        return 0;
    }
    if (ip[9] != IPPROTO_TCP)
        return -1;
    struct pkt p = {.family = AF_INET, .src = ip + 12, .dst = ip + 16};
    return decode_tcp(r, &p, ip + ihl, tot - ihl);
}

static int decode_ipv6(struct reader *r, const uint8_t *ip, size_t len)
{
    if (len < 40 || (ip[0] >> 4) != 6)
        return -1;
    size_t plen = be16(ip + 4);
    size_t end = 40 + plen;
    if (plen == 0 || end > len)
        end = len;
    uint8_t nh = ip[6];
    size_t off = 40;
    for (;;) {
        if (nh == IPPROTO_TCP)
            break;
        if (nh == 44) { /* fragment header */
            r->st->fragments++;
            return 0;
        }
        if (nh != 0 && nh != 43 && nh != 60 && nh != 51)
            return -1;
        if (off + 8 > end)
            return -1;
        size_t hl = nh == 51 ? ((size_t)ip[off + 1] + 2) * 4 : ((size_t)ip[off + 1] + 1) * 8;
        nh = ip[off];
        off += hl;
        if (off > end)
            return -1;
    }
    struct pkt p = {.family = AF_INET6, .src = ip + 8, .dst = ip + 24};
    return decode_tcp(r, &p, ip + off, end - off);
}

static int decode_ip(struct reader *r, const uint8_t *p, size_t len)
{
    if (len < 1)
        return -1;
    switch (p[0] >> 4) {
    case 4:
        return decode_ipv4(r, p, len);
    case 6:
        return decode_ipv6(r, p, len);
    }
    return -1;
}

static int decode_ethertype(struct reader *r, uint16_t type, const uint8_t *p, size_t len)
{
    if (type == 0x0800 || type == 0x86dd)
        return decode_ip(r, p, len);
    return -1;
}

static int decode_frame(struct reader *r, int linktype, const uint8_t *p, size_t len)
{
    switch (linktype) {
    case DLT_EN10MB: {
        if (len < 14)
            return -1;
        uint16_t type = be16(p + 12);
        size_t off = 14;
        for (int tags = 0; tags < 2 && (type == 0x8100 || type == 0x88a8); tags++) {
            if (len < off + 4)
                return -1;
            type = be16(p + off + 2);
            off += 4;
        }
        return decode_ethertype(r, type, p + off, len - off);
    }
    case DLT_LINUX_SLL:
        if (len < 16)
            return -1;
        return decode_ethertype(r, be16(p + 14), p + 16, len - 16);
#ifdef DLT_LINUX_SLL2
    case DLT_LINUX_SLL2:
        if (len < 20)
            return -1;
        return decode_ethertype(r, be16(p), p + 20, len - 20);
#endif
    case DLT_RAW:
#ifdef DLT_IPV4
    case DLT_IPV4:
#endif
#ifdef DLT_IPV6
    case DLT_IPV6:
#endif
        return decode_ip(r, p, len);
    case DLT_NULL:
    case DLT_LOOP:
        /* The 4-octet family is in the writer's byte order (NULL) or
         * network order (LOOP), and IPv6's value differs between systems:
         * the IP version nibble says it all. */
        if (len < 4)
            return -1;
        return decode_ip(r, p + 4, len - 4);
    }
    return -1;
}

static int link_supported(int lt)
{
    switch (lt) {
    case DLT_EN10MB:
    case DLT_LINUX_SLL:
#ifdef DLT_LINUX_SLL2
    case DLT_LINUX_SLL2:
#endif
    case DLT_RAW:
#ifdef DLT_IPV4
    case DLT_IPV4:
#endif
#ifdef DLT_IPV6
    case DLT_IPV6:
#endif
    case DLT_NULL:
    case DLT_LOOP:
        return 1;
    }
    return 0;
}

static void one_frame(struct reader *r, int lt, uint64_t us, const uint8_t *bytes, size_t caplen)
{
    struct fg_trace_stats *stats = r->st;
    r->frame++;
    stats->frames++;
    r->us = us;
    if (stats->frames == 1)
        stats->first_us = r->us;
    stats->last_us = r->us;
    tomb_expire(r);
    if (decode_frame(r, lt, bytes, caplen) < 0)
        stats->skipped++;
}

static void reader_finish(struct reader *r)
{
    while (r->open.head)
        close_conn(r, r->open.head, -1);
    while (r->tomb.head) {
        struct conn *c = r->tomb.head;
        list_del(&r->tomb, c);
        free(c);
    }
    free(r->bucket);
}

/* ---- classic pcap, mapped ---------------------------------------------- */

/* A classic pcap file (the format of libpcap's pcap_dump, tcpdump -w and
 * faultgate's own captures) is read here straight from a read-only
 * mapping: a 24-octet file header, then records of a 16-octet header and
 * the frame (the layout libpcap documents in pcap-savefile(5)).  This is
 * what libpcap's offline reader does, without its two stdio reads and
 * one copy per record, which were most of the time spent on a large
 * capture.  pcapng, other magic numbers, pipes and link types not listed
 * here go to libpcap.  The pages already read are dropped from the
 * mapping as the reader moves on, so the resident memory stays that of
 * one window, whatever the file's size. */

#define MAP_WINDOW ((size_t)8 << 20)
#define PREFETCH_AHEAD 2048
#ifdef MADV_POPULATE_READ
#define FG_MADV_POPULATE_READ MADV_POPULATE_READ
#else
#define FG_MADV_POPULATE_READ 22 /* Linux 5.14; older kernels answer EINVAL */
#endif
#define PCAP_MAX_CAPLEN 262144u /* libpcap's largest snapshot length */

static uint32_t rd32(const uint8_t *p, int swap)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

/* LINKTYPE_ values of the file header (they equal the DLT_ values for
 * these, except raw IP: LINKTYPE_RAW is 101). */
static int map_linktype(uint32_t lt)
{
    switch (lt) {
    case 0:   /* NULL */
    case 1:   /* ETHERNET */
    case 108: /* LOOP */
    case 113: /* LINUX_SLL */
        return (int)lt;
#ifdef DLT_LINUX_SLL2
    case 276:
        return DLT_LINUX_SLL2;
#endif
#ifdef DLT_IPV4
    case 228:
        return DLT_IPV4;
#endif
#ifdef DLT_IPV6
    case 229:
        return DLT_IPV6;
#endif
    case 101:
        return DLT_RAW;
    }
    return -1;
}

/* Returns 1 when the file was read here (rc in *rc), 0 when libpcap should
 * read it. */
static int read_mapped(const char *path, struct reader *r, int *rc, char *err, size_t errlen)
{
    if (strcmp(path, "-") == 0)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* libpcap says why */
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 24 ||
        (uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return 0;
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (base == MAP_FAILED)
        return 0;
    uint32_t magic;
    memcpy(&magic, base, 4);
    int swap, nsec;
    if (magic == 0xa1b2c3d4u || magic == 0xa1b23c4du)
        swap = 0, nsec = magic == 0xa1b23c4du;
    else if (magic == 0xd4c3b2a1u || magic == 0x4d3cb2a1u)
        swap = 1, nsec = magic == 0x4d3cb2a1u;
    else
        goto not_here;
    uint16_t major;
    memcpy(&major, base + 4, 2);
    if (swap)
        major = __builtin_bswap16(major);
    int lt = map_linktype(rd32(base + 20, swap));
    if (major != 2 || lt < 0)
        goto not_here;
    madvise(base, size, MADV_SEQUENTIAL);

    size_t off = 24, dropped = 0, pf = 0, populated = 0;
    *rc = 0;
    while (off < size) {
        /* Map the next window's pages ahead of the reader in one call
         * rather than one page fault at a time, and ask for the octets a
         * little ahead into the cache: the parsers read the payloads once,
         * in order, so their first touch would otherwise stall on memory. */
        if (off + MAP_WINDOW / 2 > populated && populated < size) {
            size_t n = size - populated < MAP_WINDOW ? size - populated : MAP_WINDOW;
            madvise(base + populated, n, FG_MADV_POPULATE_READ);
            populated += n;
        }
        if (pf < off)
            pf = off;
        for (; pf < off + PREFETCH_AHEAD && pf < size; pf += 64)
            __builtin_prefetch(base + pf);
        if (size - off < 16) {
            r->st->truncated = 1;
            fg_errf(err, errlen, FG_ETRACE,
                    "%s: truncated dump file; tried to read 16 header bytes, only got %zu", path,
                    size - off);
            break;
        }
        const uint8_t *h = base + off;
        uint32_t sec = rd32(h, swap), frac = rd32(h + 4, swap), caplen = rd32(h + 8, swap);
        if (caplen > PCAP_MAX_CAPLEN) {
            r->st->truncated = 1;
            fg_errf(err, errlen, FG_ETRACE,
                    "%s: invalid packet capture length %u, bigger than maximum of %u", path, caplen,
                    PCAP_MAX_CAPLEN);
            break;
        }
        if (size - off - 16 < caplen) {
            r->st->truncated = 1;
            fg_errf(err, errlen, FG_ETRACE,
                    "%s: truncated dump file; tried to read %u captured bytes, only got %zu", path,
                    caplen, size - off - 16);
            break;
        }
        uint64_t us = (uint64_t)sec * 1000000 + (nsec ? frac / 1000 : frac);
        one_frame(r, lt, us, h + 16, caplen);
        off += 16 + (size_t)caplen;
        if (off - dropped >= 2 * MAP_WINDOW) {
            /* Pages behind the reader are not needed again (the callbacks
             * got their bytes during one_frame). */
            size_t upto = (off - MAP_WINDOW) & ~(size_t)(sysconf(_SC_PAGESIZE) - 1);
            madvise(base + dropped, upto - dropped, MADV_DONTNEED);
            dropped = upto;
        }
    }
    munmap(base, size);
    return 1;

not_here:
    munmap(base, size);
    return 0;
}

int fg_trace_read(const char *path, const struct fg_trace_cbs *cbs, void *ud,
                  struct fg_trace_stats *stats, char *err, size_t errlen)
{
    static const struct fg_trace_cbs nocbs;
    struct fg_trace_stats local;
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof(*stats));
    if (err && errlen)
        err[0] = '\0';

    if (strcmp(path, "-") != 0) {
        /* A FIFO or a device would hang or never end: regular files only
         * (standard input, "-", is the way to stream one). */
        FILE *probe;
        if (fg_file_open(path, 0, &probe, err, errlen) < 0)
            return FG_ETRACE;
        fclose(probe);
    }
    struct reader r;
    memset(&r, 0, sizeof(r));
    r.cbs = cbs ? cbs : &nocbs;
    r.ud = ud;
    r.st = stats;
    int mrc;
    if (read_mapped(path, &r, &mrc, err, errlen)) {
        reader_finish(&r);
        return mrc;
    }

    char pe[PCAP_ERRBUF_SIZE] = "";
    /* libpcap reads each record with two small freads: a large stdio
     * buffer turns a multi-gigabyte capture's many 4 KiB reads into few
     * big ones.  The buffer is owned by the stream and freed with it. */
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!fp)
        return fg_errf(err, errlen, FG_ETRACE, "%s: %s", path, strerror(errno));
    char *iobuf = malloc(TRACE_IOBUF);
    if (iobuf)
        setvbuf(fp, iobuf, _IOFBF, TRACE_IOBUF);
    pcap_t *pc = pcap_fopen_offline(fp, pe);
    if (!pc) {
        if (fp != stdin)
            fclose(fp);
        free(iobuf);
        return fg_errf(err, errlen, FG_ETRACE, "%s: %s", path, pe);
    }
    int lt = pcap_datalink(pc);
    if (!link_supported(lt)) {
        const char *name = pcap_datalink_val_to_name(lt);
        fg_errf(err, errlen, FG_ETRACE, "%s: link type %s (%d) is not supported", path,
                name ? name : "unknown", lt);
        pcap_close(pc);
        free(iobuf);
        return FG_ETRACE;
    }

    struct pcap_pkthdr *h;
    const u_char *bytes;
    int rc;
    while ((rc = pcap_next_ex(pc, &h, &bytes)) == 1)
        one_frame(&r, lt, (uint64_t)h->ts.tv_sec * 1000000 + (uint64_t)h->ts.tv_usec, bytes,
                  h->caplen);
    if (rc == PCAP_ERROR) {
        stats->truncated = 1;
        fg_errf(err, errlen, FG_ETRACE, "%s: %s", path, pcap_geterr(pc));
    }
    pcap_close(pc); /* closes fp too */
    free(iobuf);
    reader_finish(&r);
    return 0;
}

int fg_trace_sufficient(const char *path, const struct fg_trace_stats *st, const char *readerr,
                        char *err, size_t errlen)
{
    /* A verdict drawn from a trace that lost frames could say "missing"
     * of what was on the wire but not in the file. */
    if (st->truncated)
        return fg_errf(err, errlen, FG_ETRACE,
                       "%s (the trace cannot be read to its end: no verdict from it)",
                       readerr && readerr[0] ? readerr : path);
    if (st->frames == 0)
        return fg_errf(err, errlen, FG_ETRACE, "%s: the trace holds no frames", path);
    if (st->tcp_frames == 0)
        return fg_errf(err, errlen, FG_ETRACE,
                       "%s: none of the trace's %llu frame(s) is a TCP segment", path,
                       (unsigned long long)st->frames);
    return 0;
}
