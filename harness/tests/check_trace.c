/* check_trace.c - TCP reassembly and link layers of the trace reader.
 *
 * Each test writes a small capture by hand (libpcap's pcap_open_dead and
 * pcap_dump for pcap files, raw blocks for pcapng) with chosen sequence
 * numbers, then checks what fg_trace_read delivers: in-order bytes, holes
 * reported as gaps, retransmissions counted once, FIN/RST/close, port
 * reuse, and the same stream through every supported link type.
 */
#include <arpa/inet.h>
#include <check.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/trace.h"
#include "faultgate/util.h"

static char tmpdir[64];
static char path[128];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/fgtrace-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(path, sizeof(path), "%s/t.pcap", tmpdir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(tmpdir);
}

/* ---- writing frames ----------------------------------------------------- */

enum { FIN = 0x01, SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10 };

struct writer {
    pcap_t *p;
    pcap_dumper_t *d;
    int lt;
    int vlan;  /* Ethernet: add an 802.1Q tag */
    int v6ext; /* IPv6: add a hop-by-hop options header */
    uint64_t us;
    uint64_t frames;
};

static void w_open(struct writer *w, int lt)
{
    memset(w, 0, sizeof(*w));
    w->lt = lt;
    w->p = pcap_open_dead(lt, 65535);
    ck_assert_ptr_nonnull(w->p);
    w->d = pcap_dump_open(w->p, path);
    ck_assert_ptr_nonnull(w->d);
    w->us = 1700000000ull * 1000000;
}

static void w_close(struct writer *w)
{
    pcap_dump_close(w->d);
    pcap_close(w->p);
}

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

/* An IP packet (v4 or v6) carrying one TCP segment; returns its length. */
static size_t build_ip(uint8_t *b, const struct writer *w, const char *src, int sport,
                       const char *dst, int dport, uint32_t seq, uint32_t ack, uint8_t flags,
                       const void *data, size_t len)
{
    int v6 = strchr(src, ':') != NULL;
    size_t off;
    if (v6) {
        size_t ext = w->v6ext ? 8 : 0;
        memset(b, 0, 40 + ext);
        put32(b, 0x60000000);
        put16(b + 4, (uint16_t)(ext + 20 + len));
        b[6] = w->v6ext ? 0 : IPPROTO_TCP;
        b[7] = 64;
        ck_assert_int_eq(inet_pton(AF_INET6, src, b + 8), 1);
        ck_assert_int_eq(inet_pton(AF_INET6, dst, b + 24), 1);
        if (w->v6ext) {
            b[40] = IPPROTO_TCP; /* next header; length 0 = 8 octets of PadN */
            b[42] = 1;
            b[43] = 4;
        }
        off = 40 + ext;
    } else {
        memset(b, 0, 20);
        b[0] = 0x45;
        put16(b + 2, (uint16_t)(20 + 20 + len));
        put16(b + 6, 0x4000);
        b[8] = 64;
        b[9] = IPPROTO_TCP;
        ck_assert_int_eq(inet_pton(AF_INET, src, b + 12), 1);
        ck_assert_int_eq(inet_pton(AF_INET, dst, b + 16), 1);
        off = 20;
    }
    uint8_t *t = b + off;
    memset(t, 0, 20);
    put16(t, (uint16_t)sport);
    put16(t + 2, (uint16_t)dport);
    put32(t + 4, seq);
    put32(t + 8, ack);
    t[12] = 5 << 4;
    t[13] = flags;
    put16(t + 14, 65535);
    if (len)
        memcpy(t + 20, data, len);
    return off + 20 + len;
}

static void w_frame(struct writer *w, const uint8_t *frame, size_t len)
{
    struct pcap_pkthdr h;
    memset(&h, 0, sizeof(h));
    w->us += 1000;
    h.ts.tv_sec = (time_t)(w->us / 1000000);
    h.ts.tv_usec = (suseconds_t)(w->us % 1000000);
    h.caplen = h.len = (bpf_u_int32)len;
    pcap_dump((u_char *)w->d, &h, frame);
    w->frames++;
}

static void w_seg(struct writer *w, const char *src, int sport, const char *dst, int dport,
                  uint32_t seq, uint32_t ack, uint8_t flags, const char *data)
{
    uint8_t f[4096];
    size_t len = data ? strlen(data) : 0;
    int v6 = strchr(src, ':') != NULL;
    size_t hl = 0;
    switch (w->lt) {
    case DLT_EN10MB:
        memset(f, 0x02, 12);
        hl = 12;
        if (w->vlan) {
            put16(f + hl, 0x8100);
            put16(f + hl + 2, 42);
            hl += 4;
        }
        put16(f + hl, v6 ? 0x86dd : 0x0800);
        hl += 2;
        break;
    case DLT_LINUX_SLL:
        memset(f, 0, 16);
        put16(f + 2, 772); /* ARPHRD_LOOPBACK */
        put16(f + 14, v6 ? 0x86dd : 0x0800);
        hl = 16;
        break;
    case DLT_LINUX_SLL2:
        memset(f, 0, 20);
        put16(f, v6 ? 0x86dd : 0x0800);
        put16(f + 8, 772);
        hl = 20;
        break;
    case DLT_NULL: {
        uint32_t fam = v6 ? 30 : 2; /* host order, as BSD writes it */
        memcpy(f, &fam, 4);
        hl = 4;
        break;
    }
    case DLT_LOOP: /* OpenBSD loopback: the family in network order */
        put32(f, v6 ? 24 : 2);
        hl = 4;
        break;
    default: /* raw IP */
        break;
    }
    size_t n = build_ip(f + hl, w, src, sport, dst, dport, seq, ack, flags, data, len);
    w_frame(w, f, hl + n);
}

/* A client and a server; seq numbers are given as stream offsets. */
struct tcpc {
    struct writer *w;
    const char *cip, *sip;
    int cport, sport;
    uint32_t isn[2];
};

static void t_send(struct tcpc *t, int from, uint32_t off, uint32_t ackoff, uint8_t flags,
                   const char *data)
{
    uint32_t seq = t->isn[from] + 1 + off;
    uint32_t ack = (flags & ACK) ? t->isn[!from] + 1 + ackoff : 0;
    if (from == 0)
        w_seg(t->w, t->cip, t->cport, t->sip, t->sport, seq, ack, flags, data);
    else
        w_seg(t->w, t->sip, t->sport, t->cip, t->cport, seq, ack, flags, data);
}

static void t_handshake(struct tcpc *t)
{
    w_seg(t->w, t->cip, t->cport, t->sip, t->sport, t->isn[0], 0, SYN, NULL);
    w_seg(t->w, t->sip, t->sport, t->cip, t->cport, t->isn[1], t->isn[0] + 1, SYN | ACK, NULL);
    t_send(t, 0, 0, 0, ACK, NULL);
}

/* ---- collecting --------------------------------------------------------- */

#define MAXC 8
#define MAXEV 64

struct ev {
    char kind; /* o d f r g c */
    unsigned conn;
    int dir;
    uint64_t n, frame;
};

struct stream {
    unsigned id;
    int saw_syn, client_port, server_port;
    char *buf[2];
    size_t len[2];
    int fin[2], rst[2], closed;
    uint64_t gap[2], open_frame;
};

struct collect {
    struct stream s[MAXC];
    size_t n;
    struct ev ev[MAXEV];
    size_t nev;
};

static void add_ev(struct collect *co, char kind, const struct fg_trace_conn *c, int dir,
                   uint64_t n, uint64_t frame)
{
    if (co->nev < MAXEV)
        co->ev[co->nev++] = (struct ev){kind, c->id, dir, n, frame};
}

static void c_open(void *ud, struct fg_trace_conn *c)
{
    struct collect *co = ud;
    ck_assert_uint_lt(co->n, MAXC);
    struct stream *s = &co->s[co->n++];
    memset(s, 0, sizeof(*s));
    s->id = c->id;
    s->saw_syn = c->saw_syn;
    s->client_port = c->client_port;
    s->server_port = c->server_port;
    s->open_frame = c->open_frame;
    c->user = s;
    add_ev(co, 'o', c, 0, 0, c->open_frame);
}

static void c_data(void *ud, struct fg_trace_conn *c, enum fg_dir dir, const uint8_t *buf,
                   size_t len, uint64_t frame, uint64_t us)
{
    struct stream *s = c->user;
    ck_assert_uint_gt(len, 0);
    s->buf[dir] = fg_realloc(s->buf[dir], s->len[dir] + len + 1);
    memcpy(s->buf[dir] + s->len[dir], buf, len);
    s->len[dir] += len;
    s->buf[dir][s->len[dir]] = '\0';
    add_ev(ud, 'd', c, dir, len, frame);
}

static void c_fin(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    ((struct stream *)c->user)->fin[dir]++;
    add_ev(ud, 'f', c, dir, 0, frame);
}

static void c_rst(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    ((struct stream *)c->user)->rst[dir]++;
    add_ev(ud, 'r', c, dir, 0, frame);
}

static void c_gap(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t missing,
                  uint64_t frame, uint64_t us)
{
    ((struct stream *)c->user)->gap[dir] += missing;
    add_ev(ud, 'g', c, dir, missing, frame);
}

static void c_close(void *ud, struct fg_trace_conn *c)
{
    ((struct stream *)c->user)->closed++;
    add_ev(ud, 'c', c, 0, 0, 0);
}

static const struct fg_trace_cbs cbs = {c_open, c_data, c_fin, c_rst, c_gap, c_close};

static void collect_free(struct collect *co)
{
    for (size_t i = 0; i < co->n; i++)
        for (int d = 0; d < 2; d++)
            free(co->s[i].buf[d]);
}

static void read_ok(struct collect *co, struct fg_trace_stats *st)
{
    char err[FG_ERRBUF_SIZE];
    memset(co, 0, sizeof(*co));
    int rc = fg_trace_read(path, &cbs, co, st, err, sizeof(err));
    ck_assert_msg(rc == 0, "fg_trace_read: %s", err);
    for (size_t i = 0; i < co->n; i++)
        ck_assert_int_eq(co->s[i].closed, 1);
}

/* The event of kind k (the nth such, 0-based), or NULL. */
static const struct ev *find_ev(const struct collect *co, char k, size_t nth)
{
    for (size_t i = 0; i < co->nev; i++)
        if (co->ev[i].kind == k && nth-- == 0)
            return &co->ev[i];
    return NULL;
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(out_of_order_and_retransmission)
{
    struct writer w;
    w_open(&w, DLT_EN10MB);
    struct tcpc t = {&w, "10.0.0.1", "10.0.0.2", 40000, 25, {1000, 0xfffffff0u}};
    t_handshake(&t);                              /* frames 1-3 */
    t_send(&t, 1, 0, 0, PSH | ACK, "220 hi\r\n"); /* 4; server seq wraps */
    t_send(&t, 0, 0, 8, PSH | ACK, "AAAA");       /* 5 */
    t_send(&t, 0, 8, 8, PSH | ACK, "CCCC");       /* 6: ahead of a hole */
    t_send(&t, 0, 4, 8, PSH | ACK, "BBBB");       /* 7: fills it */
    t_send(&t, 0, 0, 8, PSH | ACK, "AAAA");       /* 8: retransmission */
    t_send(&t, 0, 6, 8, PSH | ACK, "BBCCCCDD");   /* 9: overlap, 2 new */
    t_send(&t, 0, 16, 8, PSH | ACK, "EEEE");      /* 10: ahead again */
    t_send(&t, 0, 16, 8, PSH | ACK, "EEEE");      /* 11: held twice */
    t_send(&t, 0, 14, 8, PSH | ACK, "DD");        /* 12 */
    t_send(&t, 1, 8, 20, PSH | ACK | FIN, "221 bye\r\n");
    t_send(&t, 0, 20, 18, ACK | FIN, NULL);
    t_send(&t, 1, 18, 21, ACK, NULL);
    w_close(&w);

    struct collect co;
    struct fg_trace_stats st;
    read_ok(&co, &st);
    ck_assert_uint_eq(co.n, 1);
    struct stream *s = &co.s[0];
    ck_assert(s->saw_syn);
    ck_assert_int_eq(s->client_port, 40000);
    ck_assert_int_eq(s->server_port, 25);
    ck_assert_str_eq(s->buf[FG_C2S], "AAAABBBBCCCCDDDDEEEE");
    ck_assert_str_eq(s->buf[FG_S2C], "220 hi\r\n221 bye\r\n");
    ck_assert_int_eq(s->fin[0], 1);
    ck_assert_int_eq(s->fin[1], 1);
    ck_assert_uint_eq(s->gap[0] + s->gap[1], 0);
    ck_assert_uint_eq(st.retrans, 3);
    ck_assert_uint_eq(st.gaps, 0);
    ck_assert_uint_eq(st.frames, w.frames);
    ck_assert_uint_eq(st.tcp_frames, w.frames);
    ck_assert_uint_eq(st.bytes, 20 + 17);
    ck_assert_uint_eq(st.last_us - st.first_us, (w.frames - 1) * 1000);
    /* "BBBBCCCC" became deliverable with frame 7, "DDEEEE" with frame 12. */
    int seen7 = 0, seen12 = 0;
    for (size_t i = 0; i < co.nev; i++) {
        if (co.ev[i].kind == 'd' && co.ev[i].frame == 7)
            seen7 += (int)co.ev[i].n;
        if (co.ev[i].kind == 'd' && co.ev[i].frame == 12)
            seen12 += (int)co.ev[i].n;
        ck_assert(co.ev[i].kind != 'd' || co.ev[i].frame != 6);
    }
    ck_assert_int_eq(seen7, 8);
    ck_assert_int_eq(seen12, 6);
    /* close comes last, once */
    ck_assert_int_eq(co.ev[co.nev - 1].kind, 'c');
    collect_free(&co);
}
END_TEST

START_TEST(gap_by_ack_and_at_close)
{
    struct writer w;
    w_open(&w, DLT_EN10MB);
    struct tcpc t = {&w, "10.0.0.1", "10.0.0.2", 40000, 25, {1000, 9000}};
    t_handshake(&t);
    t_send(&t, 0, 0, 0, PSH | ACK, "AAAA"); /* 4 */
    /* [4,8) never appears */
    t_send(&t, 0, 8, 0, PSH | ACK, "CCCC");  /* 5: held */
    t_send(&t, 1, 0, 12, ACK, NULL);         /* 6: server has it all: gap */
    t_send(&t, 0, 12, 0, PSH | ACK, "DDDD"); /* 7 */
    /* An ACK of missing bytes before the data that follows them. */
    t_send(&t, 1, 0, 20, ACK, NULL);         /* 8: [16,20) missing */
    t_send(&t, 0, 20, 0, PSH | ACK, "FFFF"); /* 9: gap reported here */
    /* A hole never acknowledged: reported when the trace ends. */
    t_send(&t, 0, 28, 0, PSH | ACK, "HHHH"); /* 10 */
    w_close(&w);

    struct collect co;
    struct fg_trace_stats st;
    read_ok(&co, &st);
    ck_assert_uint_eq(co.n, 1);
    struct stream *s = &co.s[0];
    ck_assert_str_eq(s->buf[FG_C2S], "AAAACCCCDDDDFFFFHHHH");
    ck_assert_uint_eq(s->gap[FG_C2S], 12);
    ck_assert_uint_eq(st.gaps, 3);
    const struct ev *g = find_ev(&co, 'g', 0);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq(g->n, 4);
    ck_assert_uint_eq(g->frame, 6);
    ck_assert_int_eq(g->dir, FG_C2S);
    g = find_ev(&co, 'g', 1);
    ck_assert_uint_eq(g->n, 4);
    ck_assert_uint_eq(g->frame, 9);
    g = find_ev(&co, 'g', 2);
    ck_assert_uint_eq(g->n, 4);
    ck_assert_uint_eq(g->frame, 10); /* the last frame: end of trace */
    /* The gap comes right before the bytes after it. */
    for (size_t i = 0; i + 1 < co.nev; i++)
        if (co.ev[i].kind == 'g')
            ck_assert_int_eq(co.ev[i + 1].kind, 'd');
    ck_assert_int_eq(s->fin[0] + s->fin[1], 0);
    collect_free(&co);
}
END_TEST

START_TEST(ooo_limit)
{
    struct writer w;
    w_open(&w, DLT_RAW);
    struct tcpc t = {&w, "10.0.0.1", "10.0.0.2", 40000, 25, {1000, 9000}};
    t_handshake(&t);
    char *blk = fg_malloc(1401);
    memset(blk, 'x', 1400);
    blk[1400] = '\0';
    /* [0,100) is missing; more than 4 MiB waits behind it. */
    size_t n = (4u * 1024 * 1024) / 1400 + 50;
    for (size_t i = 0; i < n; i++)
        t_send(&t, 0, (uint32_t)(100 + i * 1400), 0, ACK, blk);
    free(blk);
    w_close(&w);

    struct collect co;
    struct fg_trace_stats st;
    read_ok(&co, &st);
    ck_assert_uint_eq(co.n, 1);
    ck_assert_uint_eq(co.s[0].len[FG_C2S], n * 1400);
    ck_assert_uint_eq(co.s[0].gap[FG_C2S], 100);
    const struct ev *g = find_ev(&co, 'g', 0);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_lt(g->frame, w.frames); /* before the trace ended */
    ck_assert_uint_eq(st.gaps, 1);
    collect_free(&co);
}
END_TEST

START_TEST(rst_and_port_reuse)
{
    struct writer w;
    w_open(&w, DLT_EN10MB);
    struct tcpc t = {&w, "127.0.0.1", "127.0.0.1", 50000, 2525, {100, 200}};
    t_handshake(&t);
    t_send(&t, 1, 0, 0, PSH | ACK, "220 hi\r\n");
    t_send(&t, 0, 0, 8, RST | ACK, NULL);       /* 5: client resets */
    t_send(&t, 1, 8, 0, PSH | ACK, "late\r\n"); /* 6: ignored */
    /* The same 4-tuple again, new ISN: a new connection. */
    t.isn[0] = 7000;
    t.isn[1] = 8000;
    t_handshake(&t); /* 7-9 */
    t_send(&t, 1, 0, 0, PSH | ACK, "220 again\r\n");
    /* A refused connection: SYN answered by RST. */
    w_seg(&w, "127.0.0.1", 50001, "127.0.0.1", 2526, 5, 0, SYN, NULL);
    w_seg(&w, "127.0.0.1", 2526, "127.0.0.1", 50001, 0, 6, RST | ACK, NULL);
    w_close(&w);

    struct collect co;
    struct fg_trace_stats st;
    read_ok(&co, &st);
    ck_assert_uint_eq(co.n, 3);
    ck_assert_uint_eq(st.conns, 3);
    ck_assert_uint_eq(co.s[0].id, 1);
    ck_assert_str_eq(co.s[0].buf[FG_S2C], "220 hi\r\n");
    ck_assert_int_eq(co.s[0].rst[FG_C2S], 1);
    ck_assert_int_eq(co.s[0].rst[FG_S2C], 0);
    const struct ev *r = find_ev(&co, 'r', 0);
    ck_assert_uint_eq(r->frame, 5);
    ck_assert_uint_ge(st.skipped, 1);

    ck_assert_uint_eq(co.s[1].id, 2);
    ck_assert_uint_eq(co.s[1].open_frame, 7);
    ck_assert(co.s[1].saw_syn);
    ck_assert_str_eq(co.s[1].buf[FG_S2C], "220 again\r\n");
    ck_assert_int_eq(co.s[1].rst[0] + co.s[1].rst[1], 0);

    ck_assert_uint_eq(co.s[2].id, 3);
    ck_assert_int_eq(co.s[2].server_port, 2526);
    ck_assert_int_eq(co.s[2].rst[FG_S2C], 1);
    ck_assert_uint_eq(co.s[2].len[0] + co.s[2].len[1], 0);
    /* conn 1 closed at its RST, before conn 2 opened */
    size_t close1 = 0, open2 = 0;
    for (size_t i = 0; i < co.nev; i++) {
        if (co.ev[i].kind == 'c' && co.ev[i].conn == 1)
            close1 = i;
        if (co.ev[i].kind == 'o' && co.ev[i].conn == 2)
            open2 = i;
    }
    ck_assert_uint_lt(close1, open2);
    collect_free(&co);
}
END_TEST

START_TEST(midstream)
{
    /* No handshake: the side with the lower (well-known) port is the server. */
    struct writer w;
    w_open(&w, DLT_EN10MB);
    w_seg(&w, "10.0.0.2", 25, "10.0.0.1", 41000, 500, 77, PSH | ACK, "250 ok\r\n");
    w_seg(&w, "10.0.0.1", 41000, "10.0.0.2", 25, 77, 508, PSH | ACK, "QUIT\r\n");
    w_seg(&w, "10.0.0.2", 25, "10.0.0.1", 41000, 508, 83, PSH | ACK | FIN, "221 bye\r\n");
    w_close(&w);
    struct collect co;
    struct fg_trace_stats st;
    read_ok(&co, &st);
    ck_assert_uint_eq(co.n, 1);
    ck_assert(!co.s[0].saw_syn);
    ck_assert_int_eq(co.s[0].server_port, 25);
    ck_assert_int_eq(co.s[0].client_port, 41000);
    ck_assert_str_eq(co.s[0].buf[FG_S2C], "250 ok\r\n221 bye\r\n");
    ck_assert_str_eq(co.s[0].buf[FG_C2S], "QUIT\r\n");
    ck_assert_int_eq(co.s[0].fin[FG_S2C], 1);
    collect_free(&co);
}
END_TEST

/* The same exchange through every link type, v4 and v6. */
static const int link_types[] = {DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_RAW,
                                 DLT_NULL,   DLT_LOOP,      DLT_IPV4,       DLT_IPV6};

START_TEST(link_types_loop)
{
    int lt = link_types[_i];
    for (int v6 = 0; v6 < 2; v6++) {
        if ((lt == DLT_IPV4 && v6) || (lt == DLT_IPV6 && !v6))
            continue;
        struct writer w;
        w_open(&w, lt);
        w.vlan = 1;
        w.v6ext = 1;
        struct tcpc t = {
            &w, v6 ? "fd00::1" : "192.0.2.1", v6 ? "fd00::2" : "192.0.2.2", 33333, 587, {42, 4242}};
        t_handshake(&t);
        t_send(&t, 1, 0, 0, PSH | ACK, "220 x\r\n");
        t_send(&t, 0, 0, 7, PSH | ACK, "EHLO y\r\n");
        t_send(&t, 0, 8, 7, FIN | ACK, NULL);
        t_send(&t, 1, 7, 9, FIN | ACK, NULL);
        w_close(&w);
        struct collect co;
        struct fg_trace_stats st;
        read_ok(&co, &st);
        ck_assert_msg(co.n == 1, "link type %d v6 %d: %zu conns", lt, v6, co.n);
        ck_assert_str_eq(co.s[0].buf[FG_S2C], "220 x\r\n");
        ck_assert_str_eq(co.s[0].buf[FG_C2S], "EHLO y\r\n");
        ck_assert_int_eq(co.s[0].fin[0], 1);
        ck_assert_int_eq(co.s[0].fin[1], 1);
        ck_assert_uint_eq(st.skipped, 0);
        collect_free(&co);
    }
}
END_TEST

START_TEST(fragments_and_noise)
{
    struct writer w;
    w_open(&w, DLT_EN10MB);
    struct tcpc t = {&w, "10.0.0.1", "10.0.0.2", 40000, 25, {1000, 9000}};
    t_handshake(&t);
    /* An IPv4 fragment: skipped and counted. */
    uint8_t f[128];
    memset(f, 0x02, 12);
    put16(f + 12, 0x0800);
    size_t n = build_ip(f + 14, &w, "10.0.0.1", 40000, "10.0.0.2", 25, 1001, 9001, ACK, "zz", 2);
    put16(f + 14 + 6, 0x2000); /* MF */
    w_frame(&w, f, 14 + n);
    /* ARP: not IP. */
    memset(f, 0xff, 12);
    put16(f + 12, 0x0806);
    w_frame(&w, f, 42);
    /* A runt. */
    w_frame(&w, f, 10);
    t_send(&t, 0, 0, 0, PSH | ACK, "HELO\r\n");
    w_close(&w);
    struct collect co;
    struct fg_trace_stats st;
    read_ok(&co, &st);
    ck_assert_uint_eq(st.fragments, 1);
    ck_assert_uint_eq(st.skipped, 2);
    ck_assert_uint_eq(st.frames, w.frames);
    ck_assert_str_eq(co.s[0].buf[FG_C2S], "HELO\r\n");
    collect_free(&co);
}
END_TEST

/* ---- pcapng, written by hand (libpcap cannot write it) ------------------ */

static void ng_block(FILE *f, uint32_t type, const uint8_t *body, size_t len)
{
    size_t pad = (4 - len % 4) % 4;
    uint32_t total = (uint32_t)(12 + len + pad);
    static const uint8_t zero[4];
    fwrite(&type, 4, 1, f);
    fwrite(&total, 4, 1, f);
    fwrite(body, 1, len, f);
    fwrite(zero, 1, pad, f);
    fwrite(&total, 4, 1, f);
}

static void le16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2); /* written in host order, which the SHB's magic declares */
}

static void le32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

START_TEST(pcapng_file)
{
    /* Build the frames with a pcap writer first, then copy them into EPBs
     * with nanosecond timestamps. */
    struct writer w;
    w_open(&w, DLT_EN10MB);
    struct tcpc t = {&w, "::1", "::1", 40000, 25, {1000, 9000}};
    t_handshake(&t);
    t_send(&t, 1, 0, 0, PSH | ACK, "220 ng\r\n");
    t_send(&t, 0, 0, 8, PSH | ACK, "QUIT\r\n");
    t_send(&t, 0, 6, 8, RST | ACK, NULL);
    w_close(&w);

    char pe[PCAP_ERRBUF_SIZE];
    pcap_t *in = pcap_open_offline(path, pe);
    ck_assert_ptr_nonnull(in);
    char ngpath[160];
    snprintf(ngpath, sizeof(ngpath), "%s/t.pcapng", tmpdir);
    FILE *f = fopen(ngpath, "wb");
    ck_assert_ptr_nonnull(f);
    uint8_t b[256];
    /* SHB: byte-order magic, version 1.0, section length unknown. */
    memset(b, 0, 16);
    le32(b, 0x1A2B3C4D);
    le16(b + 4, 1);
    le16(b + 6, 0);
    memset(b + 8, 0xff, 8);
    ng_block(f, 0x0A0D0D0A, b, 16);
    /* IDB: Ethernet, snaplen, option if_tsresol = 9 (nanoseconds). */
    memset(b, 0, 20);
    le16(b, 1);
    le32(b + 4, 65535);
    le16(b + 8, 9); /* if_tsresol */
    le16(b + 10, 1);
    b[12] = 9;
    le16(b + 16, 0); /* opt_endofopt */
    le16(b + 18, 0);
    ng_block(f, 1, b, 20);
    struct pcap_pkthdr *h;
    const u_char *bytes;
    uint64_t first_us = 0, nframes = 0;
    while (pcap_next_ex(in, &h, &bytes) == 1) {
        uint64_t us = (uint64_t)h->ts.tv_sec * 1000000 + (uint64_t)h->ts.tv_usec;
        if (!nframes++)
            first_us = us;
        uint64_t ns = us * 1000 + 123;
        uint8_t *epb = fg_malloc(20 + h->caplen);
        le32(epb, 0);
        le32(epb + 4, (uint32_t)(ns >> 32));
        le32(epb + 8, (uint32_t)ns);
        le32(epb + 12, h->caplen);
        le32(epb + 16, h->len);
        memcpy(epb + 20, bytes, h->caplen);
        ng_block(f, 6, epb, 20 + h->caplen);
        free(epb);
    }
    pcap_close(in);
    fclose(f);

    struct collect co;
    struct fg_trace_stats st;
    char err[FG_ERRBUF_SIZE];
    memset(&co, 0, sizeof(co));
    int rc = fg_trace_read(ngpath, &cbs, &co, &st, err, sizeof(err));
    unlink(ngpath);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(st.frames, nframes);
    ck_assert_uint_eq(st.first_us, first_us);
    ck_assert_uint_eq(co.n, 1);
    ck_assert_str_eq(co.s[0].buf[FG_S2C], "220 ng\r\n");
    ck_assert_str_eq(co.s[0].buf[FG_C2S], "QUIT\r\n");
    ck_assert_int_eq(co.s[0].rst[FG_C2S], 1);
    collect_free(&co);
}
END_TEST

START_TEST(errors)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_trace_stats st;
    int rc = fg_trace_read("/nonexistent/x.pcap", NULL, NULL, &st, err, sizeof(err));
    ck_assert_int_eq(rc, FG_ETRACE);
    ck_assert_uint_gt(strlen(err), 0);

    /* Not a capture at all. */
    FILE *f = fopen(path, "wb");
    fputs("this is not a capture file, not even close\n", f);
    fclose(f);
    rc = fg_trace_read(path, NULL, NULL, &st, err, sizeof(err));
    ck_assert_int_eq(rc, FG_ETRACE);

    /* An unsupported link type. */
    pcap_t *p = pcap_open_dead(DLT_IEEE802_11, 65535);
    pcap_dumper_t *d = pcap_dump_open(p, path);
    pcap_dump_close(d);
    pcap_close(p);
    rc = fg_trace_read(path, NULL, NULL, &st, err, sizeof(err));
    ck_assert_int_eq(rc, FG_ETRACE);
    ck_assert_ptr_nonnull(strstr(err, "not supported"));

    /* A capture cut inside its last record still yields what came before. */
    struct writer w;
    w_open(&w, DLT_EN10MB);
    struct tcpc t = {&w, "10.0.0.1", "10.0.0.2", 40000, 25, {1000, 9000}};
    t_handshake(&t);
    t_send(&t, 1, 0, 0, PSH | ACK, "220 cut\r\n");
    t_send(&t, 1, 9, 0, PSH | ACK, "250 this record is cut short\r\n");
    w_close(&w);
    f = fopen(path, "rb+");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fclose(f);
    ck_assert_int_eq(truncate(path, sz - 10), 0);
    struct collect co;
    memset(&co, 0, sizeof(co));
    rc = fg_trace_read(path, &cbs, &co, &st, err, sizeof(err));
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(st.truncated, 1);
    ck_assert_uint_gt(strlen(err), 0);
    ck_assert_uint_eq(st.frames, w.frames - 1);
    ck_assert_str_eq(co.s[0].buf[FG_S2C], "220 cut\r\n");
    ck_assert_int_eq(co.s[0].closed, 1);
    collect_free(&co);
}
END_TEST

static Suite *trace_suite(void)
{
    Suite *s = suite_create("trace");
    TCase *tc = tcase_create("reassembly");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, out_of_order_and_retransmission);
    tcase_add_test(tc, gap_by_ack_and_at_close);
    tcase_add_test(tc, ooo_limit);
    tcase_add_test(tc, rst_and_port_reuse);
    tcase_add_test(tc, midstream);
    suite_add_tcase(s, tc);
    tc = tcase_create("formats");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, link_types_loop, 0, (int)(sizeof(link_types) / sizeof(link_types[0])));
    tcase_add_test(tc, fragments_and_noise);
    tcase_add_test(tc, pcapng_file);
    tcase_add_test(tc, errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(trace_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
