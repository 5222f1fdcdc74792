/* capture.c - the run's pcap file: live libpcap capture on loopback, or
 * frames synthesized from what faultgate's own endpoints saw.
 *
 * Live: pcap_create("lo") in immediate mode with a BPF filter on the run's
 * ports; a uv_poll_t on pcap's selectable fd runs pcap_dispatch, which
 * appends every packet to the file with pcap_dump.  Synth: pcap_open_dead
 * (Ethernet) and Ethernet/IPv4-or-IPv6/TCP frames built here with a
 * handshake, consistent sequence and acknowledgment numbers, checksums,
 * FIN and RST, so that Wireshark and trace.c decode them as a real capture.
 * This is the only file that includes pcap.h for capturing or writing.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "faultgate/capture.h"
#include "faultgate/error.h"
#include "faultgate/util.h"

#define SNAPLEN 262144
#define LIVE_BUFFER (8 * 1024 * 1024)
#define FLUSH_MS 250
#define SEG_MAX 1448    /* payload per segment: a 1500-octet MTU with TCP timestamps */
#define ACK_EVERY 32768 /* receiver ACKs at least this often within a burst */
#define WINDOW 65535    /* advertised window; in flight stays below it */
#define DISPATCH_ROUNDS 64

struct fg_capture {
    uv_loop_t *loop;
    enum fg_capture_mode mode;
    pcap_t *pcap;
    pcap_dumper_t *dumper;
    uv_poll_t *poll; /* live: freed by its close callback */
    int *ports;
    size_t nports, capports;
    uint64_t frames;
    uint64_t last_flush_ms;
    uint64_t last_us; /* synth: timestamps never go backwards */
    uint16_t ip_id;
    uint32_t isn_seed;
    int failed;                  /* live: poll error, dispatch stopped */
    struct fg_synth_conn *conns; /* synth connections still attached */
    /* Synth: the fg_capture_conn_* calls may come from a proxy's worker
     * threads (faultgate/proxy.h). */
    uv_mutex_t mu;
};

struct fg_synth_conn {
    struct fg_capture *c;
    struct fg_synth_conn *next, *prev;
    int family;
    uint8_t addr[2][16]; /* [0] client, [1] server */
    uint16_t port[2];    /* host order */
    uint32_t seq[2];     /* next sequence number each side sends */
    uint32_t acked[2];   /* last ack number each side sent */
    int fin[2];
    int rst;
};

static const uint8_t mac[2][6] = {{0x02, 0x00, 0x00, 0x00, 0x00, 0x01},
                                  {0x02, 0x00, 0x00, 0x00, 0x00, 0x02}};

const char *fg_capture_mode_name(enum fg_capture_mode m)
{
    switch (m) {
    case FG_CAPTURE_AUTO:
        return "auto";
    case FG_CAPTURE_LIVE:
        return "live";
    case FG_CAPTURE_SYNTH:
        return "synth";
    }
    return "?";
}

enum fg_capture_mode fg_capture_mode(const struct fg_capture *c)
{
    return c->mode;
}

uint64_t fg_capture_frames(const struct fg_capture *c)
{
    return c ? c->frames : 0;
}

static void maybe_flush(struct fg_capture *c)
{
    uint64_t now = fg_now_ms();
    if (c->dumper && now - c->last_flush_ms >= FLUSH_MS) {
        pcap_dump_flush(c->dumper);
        c->last_flush_ms = now;
    }
}

/* ---- live ------------------------------------------------------------- */

static void live_packet(u_char *ud, const struct pcap_pkthdr *h, const u_char *bytes)
{
    struct fg_capture *c = (struct fg_capture *)ud;
    pcap_dump((u_char *)c->dumper, h, bytes);
    c->frames++;
}

/* Take what the kernel holds; in non-blocking mode pcap_dispatch returns 0
 * once nothing is left.  Bounded so that a flood cannot starve the loop. */
static int live_drain(struct fg_capture *c, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        int n = pcap_dispatch(c->pcap, -1, live_packet, (u_char *)c);
        if (n < 0)
            return FG_ECAPTURE;
        if (n == 0)
            break;
    }
    return 0;
}

static void live_poll_cb(uv_poll_t *h, int status, int events)
{
    struct fg_capture *c = h->data;
    if (status < 0 || live_drain(c, DISPATCH_ROUNDS) < 0) {
        c->failed = 1;
        uv_poll_stop(h);
        return;
    }
    maybe_flush(c);
}

static void poll_close_cb(uv_handle_t *h)
{
    free(h);
}

static int set_filter(pcap_t *p, const int *ports, size_t nports, char *err, size_t errlen)
{
    size_t cap = 32 + nports * 16;
    char *expr = fg_malloc(cap);
    size_t off = (size_t)snprintf(expr, cap, "tcp");
    for (size_t i = 0; i < nports; i++)
        off +=
            (size_t)snprintf(expr + off, cap - off, "%s port %d", i ? " or" : " and (", ports[i]);
    if (nports)
        snprintf(expr + off, cap - off, ")");
    struct bpf_program prog;
    int rc = 0;
    if (pcap_compile(p, &prog, expr, 1, PCAP_NETMASK_UNKNOWN) < 0) {
        rc = fg_errf(err, errlen, FG_ECAPTURE, "filter \"%s\": %s", expr, pcap_geterr(p));
    } else {
        if (pcap_setfilter(p, &prog) < 0)
            rc = fg_errf(err, errlen, FG_ECAPTURE, "setfilter: %s", pcap_geterr(p));
        pcap_freecode(&prog);
    }
    free(expr);
    return rc;
}

/* pcap_activate's tri-state meets faultgate's errors here: a warning (> 0)
 * still captures; an error (< 0) names its cause. */
static pcap_t *live_activate(char *err, size_t errlen)
{
    char pe[PCAP_ERRBUF_SIZE] = "";
    pcap_t *p = pcap_create("lo", pe);
    if (!p) {
        fg_errf(err, errlen, FG_ECAPTURE, "pcap_create(lo): %s", pe);
        return NULL;
    }
    pcap_set_snaplen(p, SNAPLEN);
    pcap_set_immediate_mode(p, 1);
    pcap_set_buffer_size(p, LIVE_BUFFER);
    int rc = pcap_activate(p);
    if (rc < 0) {
        const char *why = pcap_geterr(p);
        fg_errf(err, errlen, FG_ECAPTURE, "capture on lo: %s%s%s", pcap_statustostr(rc),
                why && *why ? ": " : "", why ? why : "");
        pcap_close(p);
        return NULL;
    }
    return p;
}

int fg_capture_can_live(void)
{
    pcap_t *p = live_activate(NULL, 0);
    if (!p)
        return 0;
    pcap_close(p);
    return 1;
}

static int live_open(struct fg_capture *c, const char *path, char *err, size_t errlen)
{
    char pe[PCAP_ERRBUF_SIZE] = "";
    c->pcap = live_activate(err, errlen);
    if (!c->pcap)
        return FG_ECAPTURE;
    int rc = set_filter(c->pcap, c->ports, c->nports, err, errlen);
    if (rc < 0)
        return rc;
    if (pcap_setnonblock(c->pcap, 1, pe) < 0)
        return fg_errf(err, errlen, FG_ECAPTURE, "setnonblock: %s", pe);
    int fd = pcap_get_selectable_fd(c->pcap);
    if (fd < 0)
        return fg_errf(err, errlen, FG_ECAPTURE, "lo has no selectable descriptor");
    c->dumper = pcap_dump_open(c->pcap, path);
    if (!c->dumper)
        return fg_errf(err, errlen, FG_ECAPTURE, "%s: %s", path, pcap_geterr(c->pcap));
    c->poll = fg_calloc(1, sizeof(*c->poll));
    rc = uv_poll_init(c->loop, c->poll, fd);
    if (rc < 0) {
        FG_FREE(c->poll);
        return fg_errf(err, errlen, rc, "uv_poll_init: %s", uv_strerror(rc));
    }
    c->poll->data = c;
    rc = uv_poll_start(c->poll, UV_READABLE, live_poll_cb);
    if (rc < 0)
        return fg_errf(err, errlen, rc, "uv_poll_start: %s", uv_strerror(rc));
    /* A capture watches; it does not keep the loop running by itself.  What
     * the loop has not dispatched when it ends, fg_capture_close drains. */
    uv_unref((uv_handle_t *)c->poll);
    c->mode = FG_CAPTURE_LIVE;
    return 0;
}

/* Undo a failed live_open so that synth can take over. */
static void live_undo(struct fg_capture *c)
{
    if (c->poll) {
        uv_close((uv_handle_t *)c->poll, poll_close_cb);
        c->poll = NULL;
    }
    if (c->dumper) {
        pcap_dump_close(c->dumper);
        c->dumper = NULL;
    }
    if (c->pcap) {
        pcap_close(c->pcap);
        c->pcap = NULL;
    }
}

/* ---- open / close ----------------------------------------------------- */

static int synth_open(struct fg_capture *c, const char *path, char *err, size_t errlen)
{
    c->pcap = pcap_open_dead(DLT_EN10MB, SNAPLEN);
    if (!c->pcap)
        return fg_errf(err, errlen, FG_ECAPTURE, "pcap_open_dead failed");
    c->dumper = pcap_dump_open(c->pcap, path);
    if (!c->dumper) {
        int rc = fg_errf(err, errlen, FG_ECAPTURE, "%s: %s", path, pcap_geterr(c->pcap));
        pcap_close(c->pcap);
        c->pcap = NULL;
        return rc;
    }
    c->mode = FG_CAPTURE_SYNTH;
    return 0;
}

int fg_capture_open(uv_loop_t *loop, enum fg_capture_mode mode, const char *path, const int *ports,
                    size_t nports, struct fg_capture **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!path || (mode == FG_CAPTURE_LIVE && !loop))
        return fg_errf(err, errlen, FG_EINPUT, "capture needs a path (and, live, a loop)");
    for (size_t i = 0; i < nports; i++)
        if (ports[i] <= 0 || ports[i] > 65535)
            return fg_errf(err, errlen, FG_EINPUT, "bad port %d", ports[i]);
    struct fg_capture *c = fg_calloc(1, sizeof(*c));
    if (uv_mutex_init(&c->mu) != 0) {
        free(c);
        return fg_errf(err, errlen, FG_ECAPTURE, "cannot create a mutex");
    }
    c->loop = loop;
    c->last_flush_ms = fg_now_ms();
    c->isn_seed = (uint32_t)(fg_wall_us() * 2654435761u);
    for (size_t i = 0; i < nports; i++)
        *FG_ARRAY_PUSH(c->ports, c->nports, c->capports) = ports[i];

    int rc = FG_ECAPTURE;
    if (mode == FG_CAPTURE_AUTO && !loop) {
        fg_errf(err, errlen, FG_ECAPTURE, "no loop to drive a live capture");
    } else if (mode == FG_CAPTURE_LIVE || mode == FG_CAPTURE_AUTO) {
        rc = live_open(c, path, err, errlen);
        if (rc < 0)
            live_undo(c);
    }
    if (rc < 0 && mode != FG_CAPTURE_LIVE) {
        /* AUTO keeps the reason live capture failed in err. */
        char serr[FG_ERRBUF_SIZE];
        rc = synth_open(c, path, serr, sizeof(serr));
        if (rc < 0)
            fg_errf(err, errlen, rc, "%s", serr);
    }
    if (rc < 0) {
        uv_mutex_destroy(&c->mu);
        free(c->ports);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int fg_capture_add_port(struct fg_capture *c, int port)
{
    if (!c)
        return FG_EINPUT;
    if (port <= 0 || port > 65535)
        return FG_EINPUT;
    for (size_t i = 0; i < c->nports; i++)
        if (c->ports[i] == port)
            return 0;
    *FG_ARRAY_PUSH(c->ports, c->nports, c->capports) = port;
    if (c->mode == FG_CAPTURE_LIVE)
        return set_filter(c->pcap, c->ports, c->nports, NULL, 0);
    return 0;
}

int fg_capture_flush(struct fg_capture *c)
{
    if (!c)
        return FG_EINPUT;
    int rc = 0;
    if (c->mode == FG_CAPTURE_LIVE && !c->failed)
        rc = live_drain(c, 1 << 20);
    if (pcap_dump_flush(c->dumper) < 0 && rc == 0)
        rc = FG_ECAPTURE;
    c->last_flush_ms = fg_now_ms();
    return rc;
}

int fg_capture_close(struct fg_capture *c)
{
    if (!c)
        return 0;
    int rc = 0;
    if (c->mode == FG_CAPTURE_LIVE) {
        /* Stop watching before draining: pcap_close below closes the fd,
         * and uv_close removes it from the loop's poller right away. */
        if (c->poll) {
            uv_close((uv_handle_t *)c->poll, poll_close_cb);
            c->poll = NULL;
        }
        if (c->failed || live_drain(c, 1 << 20) < 0)
            rc = FG_ECAPTURE;
    }
    while (c->conns) {
        struct fg_synth_conn *sc = c->conns;
        c->conns = sc->next;
        sc->c = NULL;
        sc->next = sc->prev = NULL;
    }
    if (pcap_dump_flush(c->dumper) < 0)
        rc = FG_ECAPTURE;
    pcap_dump_close(c->dumper);
    pcap_close(c->pcap);
    uv_mutex_destroy(&c->mu);
    free(c->ports);
    free(c);
    return rc;
}

/* ---- synthesized frames ------------------------------------------------- */

/* Internet checksum (RFC 1071), accumulated over several pieces. */
static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t len)
{
    for (; len > 1; p += 2, len -= 2)
        sum += (uint32_t)p[0] << 8 | p[1];
    if (len)
        sum += (uint32_t)p[0] << 8;
    return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

enum { F_FIN = 0x01, F_SYN = 0x02, F_RST = 0x04, F_PSH = 0x08, F_ACK = 0x10 };

/* One frame from side `from` (0 client, 1 server). */
static void emit(struct fg_synth_conn *sc, int from, uint8_t flags, uint32_t seq, uint32_t ack,
                 const uint8_t *payload, size_t len)
{
    struct fg_capture *c = sc->c;
    uint8_t f[14 + 40 + 20 + SEG_MAX];
    int to = !from;
    int v6 = sc->family == AF_INET6;
    size_t iphl = v6 ? 40 : 20, tcplen = 20 + len;

    memcpy(f, mac[to], 6);
    memcpy(f + 6, mac[from], 6);
    put16(f + 12, v6 ? 0x86dd : 0x0800);
    uint8_t *ip = f + 14, *tcp = ip + iphl;
    if (v6) {
        put32(ip, 0x60000000);
        put16(ip + 4, (uint16_t)tcplen);
        ip[6] = IPPROTO_TCP;
        ip[7] = 64;
        memcpy(ip + 8, sc->addr[from], 16);
        memcpy(ip + 24, sc->addr[to], 16);
    } else {
        ip[0] = 0x45;
        ip[1] = 0;
        put16(ip + 2, (uint16_t)(iphl + tcplen));
        put16(ip + 4, c->ip_id++);
        put16(ip + 6, 0x4000); /* DF */
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        put16(ip + 10, 0);
        memcpy(ip + 12, sc->addr[from], 4);
        memcpy(ip + 16, sc->addr[to], 4);
        put16(ip + 10, csum_fold(csum_add(0, ip, 20)));
    }
    put16(tcp, sc->port[from]);
    put16(tcp + 2, sc->port[to]);
    put32(tcp + 4, seq);
    put32(tcp + 8, (flags & F_ACK) ? ack : 0);
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    put16(tcp + 14, WINDOW);
    put16(tcp + 16, 0);
    put16(tcp + 18, 0);
    if (len)
        memcpy(tcp + 20, payload, len);

    /* TCP checksum over the pseudo-header (RFC 793 §3.1, RFC 8200 §8.1). */
    uint8_t ph[40];
    size_t alen = v6 ? 16 : 4;
    uint32_t sum = csum_add(0, sc->addr[from], alen);
    sum = csum_add(sum, sc->addr[to], alen);
    if (v6) {
        put32(ph, (uint32_t)tcplen);
        put32(ph + 4, IPPROTO_TCP);
        sum = csum_add(sum, ph, 8);
    } else {
        ph[0] = 0;
        ph[1] = IPPROTO_TCP;
        put16(ph + 2, (uint16_t)tcplen);
        sum = csum_add(sum, ph, 4);
    }
    sum = csum_add(sum, tcp, tcplen);
    put16(tcp + 16, csum_fold(sum));

    uint64_t us = fg_wall_us();
    if (us < c->last_us)
        us = c->last_us;
    c->last_us = us;
    struct pcap_pkthdr h;
    memset(&h, 0, sizeof(h));
    h.ts.tv_sec = (time_t)(us / 1000000);
    h.ts.tv_usec = (suseconds_t)(us % 1000000);
    h.caplen = h.len = (bpf_u_int32)(14 + iphl + tcplen);
    pcap_dump((u_char *)c->dumper, &h, f);
    c->frames++;
    if (flags & F_ACK)
        sc->acked[from] = ack;
}

static int sa_get(const struct sockaddr *sa, int *family, uint8_t addr[16], uint16_t *port)
{
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(addr, &in->sin_addr, 4);
        *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(addr, &in6->sin6_addr, 16);
        *port = ntohs(in6->sin6_port);
    } else {
        return -1;
    }
    *family = sa->sa_family;
    return 0;
}

/* Initial sequence numbers only need to differ between connections. */
static uint32_t next_isn(struct fg_capture *c)
{
    uint32_t x = c->isn_seed += 0x9e3779b9u;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    return x;
}

struct fg_synth_conn *fg_capture_conn_open(struct fg_capture *c, const struct sockaddr *client,
                                           const struct sockaddr *server)
{
    if (!c || c->mode != FG_CAPTURE_SYNTH)
        return NULL;
    struct fg_synth_conn tmp;
    memset(&tmp, 0, sizeof(tmp));
    int fam2;
    if (sa_get(client, &tmp.family, tmp.addr[0], &tmp.port[0]) < 0 ||
        sa_get(server, &fam2, tmp.addr[1], &tmp.port[1]) < 0 || fam2 != tmp.family)
        return NULL;
    struct fg_synth_conn *sc = fg_malloc(sizeof(*sc));
    *sc = tmp;
    sc->c = c;
    uv_mutex_lock(&c->mu);
    sc->next = c->conns;
    if (c->conns)
        c->conns->prev = sc;
    c->conns = sc;

    uint32_t ic = next_isn(c), is = next_isn(c);
    emit(sc, 0, F_SYN, ic, 0, NULL, 0);
    emit(sc, 1, F_SYN | F_ACK, is, ic + 1, NULL, 0);
    sc->seq[0] = ic + 1;
    sc->seq[1] = is + 1;
    emit(sc, 0, F_ACK, sc->seq[0], sc->seq[1], NULL, 0);
    maybe_flush(c);
    uv_mutex_unlock(&c->mu);
    return sc;
}

static int usable(const struct fg_synth_conn *sc)
{
    return sc && sc->c && !sc->rst;
}

/* The receiver of direction `from`'s bytes acknowledges them, unless it
 * already has. */
static void ack_from_peer(struct fg_synth_conn *sc, int from)
{
    int to = !from;
    if (sc->acked[to] != sc->seq[from])
        emit(sc, to, F_ACK, sc->seq[to], sc->seq[from], NULL, 0);
}

void fg_capture_conn_data(struct fg_synth_conn *sc, enum fg_dir dir, const void *buf, size_t len)
{
    int from = dir == FG_C2S ? 0 : 1;
    if (!usable(sc) || sc->fin[from] || !len)
        return;
    uv_mutex_lock(&sc->c->mu);
    const uint8_t *p = buf;
    size_t since_ack = 0;
    while (len) {
        size_t n = len < SEG_MAX ? len : SEG_MAX;
        emit(sc, from, F_PSH | F_ACK, sc->seq[from], sc->seq[!from], p, n);
        sc->seq[from] += (uint32_t)n;
        p += n;
        len -= n;
        since_ack += n;
        if (since_ack >= ACK_EVERY && len) {
            ack_from_peer(sc, from);
            since_ack = 0;
        }
    }
    ack_from_peer(sc, from);
    maybe_flush(sc->c);
    uv_mutex_unlock(&sc->c->mu);
}

void fg_capture_conn_fin(struct fg_synth_conn *sc, enum fg_dir dir)
{
    int from = dir == FG_C2S ? 0 : 1;
    if (!usable(sc) || sc->fin[from])
        return;
    uv_mutex_lock(&sc->c->mu);
    emit(sc, from, F_FIN | F_ACK, sc->seq[from], sc->seq[!from], NULL, 0);
    sc->seq[from] += 1; /* a FIN takes one sequence number (RFC 9293 §3.4) */
    sc->fin[from] = 1;
    ack_from_peer(sc, from);
    maybe_flush(sc->c);
    uv_mutex_unlock(&sc->c->mu);
}

void fg_capture_conn_rst(struct fg_synth_conn *sc, enum fg_dir dir)
{
    int from = dir == FG_C2S ? 0 : 1;
    if (!usable(sc))
        return;
    uv_mutex_lock(&sc->c->mu);
    emit(sc, from, F_RST | F_ACK, sc->seq[from], sc->seq[!from], NULL, 0);
    sc->rst = 1;
    maybe_flush(sc->c);
    uv_mutex_unlock(&sc->c->mu);
}

void fg_capture_conn_free(struct fg_synth_conn *sc)
{
    if (!sc)
        return;
    if (sc->c) {
        uv_mutex_lock(&sc->c->mu);
        if (sc->prev)
            sc->prev->next = sc->next;
        else
            sc->c->conns = sc->next;
        if (sc->next)
            sc->next->prev = sc->prev;
        uv_mutex_unlock(&sc->c->mu);
    }
    free(sc);
}
