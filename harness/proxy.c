/* proxy.c - the fault-injecting SMTP proxy (faultgate/proxy.h).
 *
 * Accepts connections, connects each to the upstream, and forwards bytes
 * byte-exact both ways with bounded buffering.  Each direction's bytes go
 * through the connection's SMTP parser before they are forwarded; when an
 * event fires a fault the feed stops at the event's end, so the action can
 * take effect exactly there and nothing after the trigger point leaks.
 * Byte-offset triggers bound the feed the same way; time triggers and the
 * time-shaping actions (delay, throttle, slice pauses, banner-delay) share
 * one timer per connection.  Every leg is reported to the capture, and
 * every decision to the log.
 *
 * Speed: reads land in 256 KiB buffers taken from a small per-proxy pool
 * (no malloc per read; a buffer just freed is reused while still in
 * cache), small reads are copied out so that a big buffer is never pinned
 * by a few octets, and bytes are written straight from the read buffer,
 * first with uv_try_write so that the common case needs no write request
 * and frees the buffer at once.  The parser is allocated on a connection's
 * first octet, so idle connections stay small.
 *
 * TLS-terminating mode (proxy.h): once the parser has seen the 220 to
 * STARTTLS, each leg gets an OpenSSL session over memory BIOs (fakes/tls.c):
 * ciphertext read from a leg goes into its session and the plaintext that
 * comes out is queued exactly as a plain read would be; what the forwarding
 * loop writes to a leg is encrypted on the way out.  Everything between
 * (parser, faults, shaping) sees plaintext only.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/proxy.h"
#include "faultgate/serve.h"
#include "faultgate/util.h"

#include "../fakes/tls.h"

#define CHUNK_SIZE (256 * 1024)
#define SMALL_READ 16384 /* reads up to this size are copied out of the pool buffer */
#define POOL_MAX 16      /* idle pool buffers kept per proxy */
#define STALL_POLL_MS 50

enum { CLI = 0, UPS = 1 }; /* the two sides of a connection */

/* Direction d reads from SRC(d) and writes to DST(d). */
#define SRC(d) ((d) == FG_C2S ? CLI : UPS)
#define DST(d) ((d) == FG_C2S ? UPS : CLI)
/* Direction of the bytes coming from / going to a side. */
#define FROM(side) ((side) == CLI ? FG_C2S : FG_S2C)
#define TOWARD(side) ((side) == CLI ? FG_S2C : FG_C2S)

/* One read's bytes.  Shared by the queue (until consumed) and by each
 * write that sends a slice of it (until its callback). */
struct chunk {
    struct chunk *next;
    struct fg_proxy *p; /* pool owner, for a CHUNK_SIZE buffer; NULL otherwise */
    size_t len, off;    /* off: bytes already forwarded or dropped */
    uint64_t t_ms;      /* loop time it was read (delay) */
    unsigned refs;
    char data[];
};

struct wreq {
    uv_write_t req;
    struct conn *c;
    struct chunk *ch;
    int side; /* written to */
    uv_buf_t buf;
    int injected;
};

struct side {
    uv_tcp_t tcp;
    int closed; /* uv_close called */
    int reading;
    struct fg_synth_conn *sc; /* this leg in the capture */
    /* TLS-terminating mode, from the 220 to STARTTLS on: the leg's TLS
     * session (the proxy is the server on the client leg, the client on
     * the upstream leg), and plaintext written before its handshake. */
    struct fg_tls *tls;
    int tls_failed;
    char *pend;
    size_t pend_len;
};

struct flow {
    struct chunk *head, *tail;
    size_t held;    /* queued bytes not consumed yet */
    size_t noparse; /* bytes at the queue head the parser has already seen */
    uint64_t off;   /* stream offset of the queue head's first unconsumed byte */
    int eof;        /* the source sent FIN */
    int done;       /* a close fault ended this direction: stop reading */
    int discard;    /* blackhole / half-close: read and discard */
    int stalled;
    uint64_t hold_until; /* loop ms: nothing forwarded before (banner-delay, slice pause) */
    uint64_t delay_ms;   /* per-chunk one-way delay */
    uint64_t rate;       /* throttle, octets/s; 0 = none */
    uint64_t tokens, last_ms;
    uint64_t slice, pause_ms; /* slice; 0 = none */
    uint64_t limit_left;      /* UINT64_MAX = no limit */
    uint64_t corrupt_at;      /* stream offset of the octet to change */
    int corrupt_armed;
    enum fg_corrupt_op corrupt_op;
    unsigned char corrupt_val;
    uint64_t next_byte; /* next byte trigger offset (UINT64_MAX none) */
    int bp;             /* over the high-water mark */
    int shut_started;
    int fin_relayed; /* our FIN towards DST went out (or could not) */
    uv_shutdown_t shut;
};

struct conn {
    struct fg_proxy *p;
    struct conn *next, *prev;
    unsigned id;
    uint64_t t0_us;
    struct side s[2];
    struct flow f[2];
    uv_connect_t creq;
    uv_timer_t timer; /* delay, throttle, slice pauses, banner-delay, after */
    uint64_t timer_due;
    uint64_t t0_ms; /* loop time of accept */
    int timer_closed;
    unsigned handles; /* initialised and not yet closed-and-called-back */
    int connected;
    int dead;        /* closing everything */
    int stalled;     /* a stall fault acts */
    int client_gone; /* the client closed while stalled */
    int reset_pending;
    int connect_fault; /* fault fired at accept, applied once connected */
    int parse;
    struct fg_smtp_parser *parser; /* allocated on the first octet */
    struct fg_fault_conn fc;
    int hit;           /* fault fired by the last feed, or -1 */
    size_t hit_evlen;  /* octets of the event that fired it, as far as known */
    int injecting;     /* feeding an injected reply: ignore events */
    unsigned hit_wait; /* C2S hit: replies owed to the client, this one's included */
    /* Replies the proxy owes the client in answer to a command: each goes
     * out after `wait` more server replies, so that replies stay in command
     * order under pipelining (RFC 2920 §3.1). */
    struct {
        int fault;
        unsigned wait;
    } inj[8];
    unsigned ninj;
    int inject_due;
    int tls_switched; /* terminate mode: the legs speak TLS */
    int tls_counted;  /* both handshakes done (fg_proxy_tls_sessions) */
};

/* An accepted socket on its way to the worker that will carry it. */
struct handoff {
    int fd;
    unsigned id; /* its connection number */
};

struct fg_proxy {
    uv_loop_t *loop;
    struct fg_fault_set *faults;
    struct fg_capture *capture;
    FILE *log;
    size_t high_water;
    struct sockaddr_storage up_addr;
    uv_tcp_t listener;
    uv_timer_t watch;
    int watching;
    unsigned handles;
    struct conn *conns;
    unsigned accepted, open;
    size_t peak;
    uint64_t bytes[2];
    struct chunk *pool; /* idle CHUNK_SIZE buffers */
    unsigned npool;
    int closing;
    void (*close_cb)(void *ud);
    void *close_ud;
    int tls_terminate;
    struct fg_tls_ctx *tls_srv, *tls_cli; /* terminate mode: the two ends */
    char *tls_hostname;
    unsigned tls_sessions;
    /* Worker threads (fg_proxy_opts.threads > 1).  The proxy handed to
     * the caller then only owns the listener and the connection count;
     * its workers, each a fg_proxy with its own loop and thread, accept in
     * turn and carry the connections.  The fault set's decision log is the
     * one thing they share that changes, hence fault_mu; counters are read
     * across threads with relaxed atomics. */
    struct fg_proxy *parent; /* set in a worker */
    struct fg_proxy **workers;
    unsigned nworkers, workers_left;
    unsigned nlive;     /* parent: workers[0..nlive) have a running (or joined) thread */
    int joined;         /* worker: its thread was joined */
    uv_os_sock_t lfd;   /* parent: the listening socket */
    uv_poll_t acceptor; /* worker: lfd readable */
    uv_async_t wake;    /* worker: stop; parent: a worker ended */
    uv_thread_t thread;
    uv_mutex_t mu; /* parent: accept4 and numbering; worker: stop */
    int stop, ended, mu_ok;
    unsigned stalled_seen; /* worker: stalled connections at the last watch */
    unsigned busy_poll_us; /* fg_proxy_opts.busy_poll_us, for each loop */
    /* Least-connections: the accepting worker gives a connection to the
     * worker carrying the fewest (load), through that worker's hand-off
     * queue (under its mu), so that long-lived connections spread evenly
     * whichever worker the kernel woke. */
    unsigned load;    /* worker: connections assigned and not yet closed */
    unsigned carried; /* worker: connections it carried in all */
    struct handoff *hq;
    size_t nhq, caphq;
    uv_mutex_t *fault_mu; /* NULL in a single-threaded proxy */
    uv_mutex_t fault_mu_own;
};

static void proxy_handle_closed(uv_handle_t *h);

/* Counters another thread may read (the fg_proxy_* getters). */
static void count_add(unsigned *x, int n)
{
    __atomic_fetch_add(x, (unsigned)n, __ATOMIC_RELAXED);
}

static void bytes_add(struct fg_proxy *p, int d, uint64_t n)
{
    __atomic_fetch_add(&p->bytes[d], n, __ATOMIC_RELAXED);
}

/* The decision log is appended by the match that fires and read back by
 * log_decision: one critical section. */
static void faults_lock(struct fg_proxy *p)
{
    if (p->fault_mu)
        uv_mutex_lock(p->fault_mu);
}

static void faults_unlock(struct fg_proxy *p)
{
    if (p->fault_mu)
        uv_mutex_unlock(p->fault_mu);
}

static void pump(struct conn *c, int d);
static void conn_kill(struct conn *c);
static void tls_flush(struct conn *c, int side);
static void update_reading(struct conn *c, int d);

/* --- chunks ------------------------------------------------------------- */

static void chunk_unref(struct chunk *ch)
{
    if (--ch->refs)
        return;
    struct fg_proxy *p = ch->p;
    if (p && !p->closing && p->npool < POOL_MAX) {
        ch->next = p->pool;
        p->pool = ch;
        p->npool++;
        return;
    }
    free(ch);
}

static void pool_free(struct fg_proxy *p)
{
    while (p->pool) {
        struct chunk *ch = p->pool;
        p->pool = ch->next;
        free(ch);
    }
    p->npool = 0;
}

static void flow_drop(struct flow *f)
{
    while (f->head) {
        struct chunk *ch = f->head;
        f->head = ch->next;
        chunk_unref(ch);
    }
    f->tail = NULL;
    f->held = 0;
    f->noparse = 0;
}

/* What waits to go out on a side: the kernel's queue, plus plaintext held
 * for a TLS handshake (it counts towards backpressure too). */
static size_t wq(struct conn *c, int side)
{
    return c->s[side].closed ? 0
                             : uv_stream_get_write_queue_size((uv_stream_t *)&c->s[side].tcp) +
                                   c->s[side].pend_len;
}

static void note_buffered(struct conn *c)
{
    size_t b = c->f[0].held + c->f[1].held + wq(c, CLI) + wq(c, UPS);
    if (b > c->p->peak)
        __atomic_store_n(&c->p->peak, b, __ATOMIC_RELAXED);
}

/* synth - whether legs are reported to a synthesized capture, which needs
 * each leg's addresses (a live capture reads them off the wire). */
static int synth(const struct fg_proxy *p)
{
    return p->capture && fg_capture_mode(p->capture) == FG_CAPTURE_SYNTH;
}

/* --- closing ------------------------------------------------------------ */

static void proxy_maybe_done(struct fg_proxy *p)
{
    if (!p->closing || p->handles || p->conns)
        return;
    pool_free(p);
    if (p->parent)
        return; /* its loop ends now; the parent joins and frees it */
    free(p->workers);
    if (p->fault_mu)
        uv_mutex_destroy(p->fault_mu);
    if (p->mu_ok)
        uv_mutex_destroy(&p->mu);
    fg_tls_ctx_free(p->tls_srv);
    fg_tls_ctx_free(p->tls_cli);
    free(p->tls_hostname);
    void (*cb)(void *) = p->close_cb;
    void *ud = p->close_ud;
    free(p);
    if (cb)
        cb(ud);
}

static void conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles)
        return;
    struct fg_proxy *p = c->p;
    flow_drop(&c->f[0]);
    flow_drop(&c->f[1]);
    for (int side = CLI; side <= UPS; side++) {
        fg_capture_conn_free(c->s[side].sc);
        fg_tls_free(c->s[side].tls);
        free(c->s[side].pend);
    }
    free(c->parser);
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    proxy_maybe_done(p);
}

/* Bytes the kernel holds that nobody read: closing then sends RST, not FIN
 * (RFC 1122 §4.2.2.13), and the capture must say so. */
static int unread(struct conn *c, int side)
{
    uv_os_fd_t fd;
    int n = 0;
    if (uv_fileno((uv_handle_t *)&c->s[side].tcp, &fd) != 0)
        return 0;
    if (ioctl(fd, FIONREAD, &n) != 0)
        return 0;
    return n > 0;
}

static void side_close(struct conn *c, int side, int reset)
{
    struct side *s = &c->s[side];
    if (s->closed)
        return;
    s->closed = 1;
    s->reading = 0;
    if (reset) {
        if (uv_tcp_close_reset(&s->tcp, conn_handle_closed) == 0) {
            fg_capture_conn_rst(s->sc, TOWARD(side));
            return;
        }
        /* A shutdown is pending: an ordinary close is all that is left. */
    }
    uv_close((uv_handle_t *)&s->tcp, conn_handle_closed);
}

/* Close what is still open.  A side closed here without a FIN relayed
 * before sends FIN, or RST when unread bytes remain; record which. */
static void conn_kill(struct conn *c)
{
    if (!c->dead) {
        c->dead = 1;
        count_add(&c->p->open, -1);
        if (c->p->parent)
            count_add(&c->p->load, -1);
    }
    for (int side = CLI; side <= UPS; side++) {
        struct side *s = &c->s[side];
        if (s->closed)
            continue;
        int d = TOWARD(side);
        if (s->sc && (c->connected || side == CLI)) {
            if (unread(c, side))
                fg_capture_conn_rst(s->sc, d);
            else if (!c->f[d].fin_relayed)
                fg_capture_conn_fin(s->sc, d);
        }
        side_close(c, side, 0);
    }
    if (!c->timer_closed) {
        c->timer_closed = 1;
        uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    }
    flow_drop(&c->f[0]);
    flow_drop(&c->f[1]);
}

/* An error or RST on one side: reset the other (and close both). */
static void conn_abort(struct conn *c, int bad_side)
{
    if (c->dead)
        return;
    fg_capture_conn_rst(c->s[bad_side].sc, FROM(bad_side));
    if (!c->s[bad_side].closed) {
        c->s[bad_side].closed = 1;
        uv_close((uv_handle_t *)&c->s[bad_side].tcp, conn_handle_closed);
    }
    int other = 1 - bad_side;
    if (!c->s[other].closed && (other == CLI || c->connected))
        side_close(c, other, 1);
    conn_kill(c);
}

static void do_reset(struct conn *c)
{
    c->reset_pending = 0;
    side_close(c, CLI, 1);
    if (c->connected)
        side_close(c, UPS, 1);
    conn_kill(c);
}

static void maybe_finish(struct conn *c)
{
    if (!c->dead && c->f[FG_C2S].fin_relayed && c->f[FG_S2C].fin_relayed)
        conn_kill(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct flow *f = req->data;
    struct conn *c = f->shut.handle->data;
    if (status == UV_ECANCELED)
        return;
    int d = f == &c->f[FG_C2S] ? FG_C2S : FG_S2C;
    f->fin_relayed = 1;
    if (status == 0)
        fg_capture_conn_fin(c->s[DST(d)].sc, d);
    maybe_finish(c);
}

/* FIN towards DST(d) once the writes queued before it are out (libuv
 * orders the shutdown after them). */
static void relay_fin(struct conn *c, int d)
{
    struct flow *f = &c->f[d];
    if (f->shut_started || c->dead)
        return;
    f->shut_started = 1;
    f->shut.data = f;
    struct side *ds = &c->s[DST(d)];
    if (ds->tls && !ds->tls_failed && !ds->closed && fg_tls_is_up(ds->tls)) {
        fg_tls_shutdown(ds->tls);
        tls_flush(c, DST(d));
        if (c->dead)
            return;
    }
    if (c->s[DST(d)].closed ||
        uv_shutdown(&f->shut, (uv_stream_t *)&c->s[DST(d)].tcp, on_shutdown) != 0) {
        f->fin_relayed = 1;
        maybe_finish(c);
    }
}

/* --- writing ------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->c;
    int side = w->side;
    if (status == 0)
        fg_capture_conn_data(c->s[side].sc, TOWARD(side), w->buf.base, w->buf.len);
    if (status == 0 && !w->injected)
        bytes_add(c->p, TOWARD(side), w->buf.len);
    chunk_unref(w->ch);
    free(w);
    if (c->dead)
        return;
    if (status < 0) {
        conn_abort(c, side);
        return;
    }
    if (c->reset_pending && wq(c, CLI) == 0 && wq(c, UPS) == 0) {
        do_reset(c);
        return;
    }
    /* A slice waits for its writes to drain before the next ones. */
    int d = TOWARD(side);
    if (c->f[d].slice && c->f[d].held)
        pump(c, d);
    if (c->dead)
        return;
    update_reading(c, FG_C2S);
    update_reading(c, FG_S2C);
}

/* Write len bytes of ch at off to a side's socket as they are. */
static void raw_write(struct conn *c, int side, struct chunk *ch, size_t off, size_t len,
                      int injected)
{
    if (!len || c->dead || c->s[side].closed)
        return;
    uv_stream_t *st = (uv_stream_t *)&c->s[side].tcp;
    /* The common case: the kernel takes it all now; no request, no
     * callback, and the buffer can go back to the pool at once. */
    uv_buf_t b = uv_buf_init(ch->data + off, (unsigned)len);
    int rc = uv_try_write(st, &b, 1);
    if (rc > 0) {
        fg_capture_conn_data(c->s[side].sc, TOWARD(side), b.base, (size_t)rc);
        if (!injected)
            bytes_add(c->p, TOWARD(side), (uint64_t)rc);
        off += (size_t)rc;
        len -= (size_t)rc;
        if (!len)
            return;
    } else if (rc != UV_EAGAIN && rc != UV_ENOSYS) {
        conn_abort(c, side);
        return;
    }
    if (ch->p && len <= SMALL_READ) {
        /* It will wait for the kernel: copy the few octets out rather than
         * pin a pool buffer. */
        struct chunk *small = fg_malloc(sizeof *small + len);
        memset(small, 0, sizeof *small);
        memcpy(small->data, ch->data + off, len);
        small->len = len;
        small->refs = 1;
        ch = small;
        off = 0;
    } else {
        ch->refs++;
    }
    struct wreq *w = fg_calloc(1, sizeof *w);
    w->c = c;
    w->ch = ch;
    w->side = side;
    w->injected = injected;
    w->buf = uv_buf_init(ch->data + off, (unsigned)len);
    rc = uv_write(&w->req, st, &w->buf, 1, on_write);
    if (rc != 0) {
        chunk_unref(ch);
        free(w);
        conn_abort(c, side);
        return;
    }
    note_buffered(c);
}

/* --- TLS legs ----------------------------------------------------------- */

static const char *side_name(int side)
{
    return side == CLI ? "client" : "upstream";
}

/* Ciphertext the session produced, onto the socket. */
static void tls_flush(struct conn *c, int side)
{
    struct fg_tls *t = c->s[side].tls;
    size_t n;
    while (!c->dead && (n = fg_tls_output_len(t)) > 0) {
        struct chunk *ch = fg_malloc(sizeof *ch + n);
        memset(ch, 0, sizeof *ch);
        ch->refs = 1;
        ch->len = fg_tls_output_read(t, ch->data, n);
        size_t got = ch->len;
        raw_write(c, side, ch, 0, got, 1);
        chunk_unref(ch);
        if (!got)
            break;
    }
}

/* A handshake or record failed: send what alert there is and close both
 * legs with FIN, as a server refusing the session would. */
static void tls_fail(struct conn *c, int side)
{
    struct side *s = &c->s[side];
    if (s->tls_failed || c->dead)
        return;
    s->tls_failed = 1;
    if (c->p->log) {
        fprintf(c->p->log, "faultgate: conn #%u TLS with the %s: %s\n", c->id, side_name(side),
                fg_tls_error(s->tls));
        fflush(c->p->log);
    }
    tls_flush(c, side);
    for (int d = FG_C2S; d <= FG_S2C && !c->dead; d++) {
        struct flow *f = &c->f[d];
        f->done = 1;
        flow_drop(f);
        update_reading(c, d);
        relay_fin(c, d);
    }
}

/* Plaintext into a side's session (encrypted now, or held until its
 * handshake is done). */
static void tls_write(struct conn *c, int side, const char *buf, size_t len)
{
    struct side *s = &c->s[side];
    if (s->tls_failed)
        return;
    if (!fg_tls_is_up(s->tls)) {
        s->pend = fg_realloc(s->pend, s->pend_len + len);
        memcpy(s->pend + s->pend_len, buf, len);
        s->pend_len += len;
        return;
    }
    if (fg_tls_write(s->tls, buf, len) < 0) {
        tls_fail(c, side);
        return;
    }
    tls_flush(c, side);
}

/* The next bytes towards a side: through its TLS session if it has one. */
static void write_slice(struct conn *c, int side, struct chunk *ch, size_t off, size_t len,
                        int injected)
{
    struct side *s = &c->s[side];
    if (!s->tls) {
        raw_write(c, side, ch, off, len, injected);
        return;
    }
    if (!len || c->dead || s->closed)
        return;
    if (!injected)
        bytes_add(c->p, TOWARD(side), len);
    tls_write(c, side, ch->data + off, len);
}

/* Forward len bytes of ch at off, the next bytes of direction d; a corrupt
 * fault changes its octet here, in the buffer (the source leg's capture
 * already holds the original). */
static void forward(struct conn *c, int d, struct chunk *ch, size_t off, size_t len)
{
    struct flow *f = &c->f[d];
    if (f->done || f->discard || !len)
        return;
    if (f->corrupt_armed) {
        uint64_t start = f->off + (off - ch->off);
        if (f->corrupt_at >= start && f->corrupt_at < start + len) {
            char *b = &ch->data[off + (f->corrupt_at - start)];
            if (f->corrupt_op == FG_CORRUPT_SET)
                *b = (char)f->corrupt_val;
            else
                *b = (char)(*b ^ (f->corrupt_op == FG_CORRUPT_XOR ? f->corrupt_val : 0xff));
            f->corrupt_armed = 0;
        }
    }
    write_slice(c, DST(d), ch, off, len, 0);
}

/* A reply from the proxy itself, towards the client. */
static void inject(struct conn *c, const char *text)
{
    size_t n = strlen(text);
    struct chunk *ch = fg_malloc(sizeof *ch + n);
    memset(ch, 0, sizeof *ch);
    memcpy(ch->data, text, n);
    ch->len = n;
    ch->refs = 1;
    write_slice(c, CLI, ch, 0, n, 1);
    chunk_unref(ch);
}

/* --- reading ------------------------------------------------------------ */

static struct chunk *chunk_get(struct fg_proxy *p);

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    struct chunk *ch = chunk_get(c->p);
    *buf = uv_buf_init(ch->data, CHUNK_SIZE);
}

static struct chunk *buf_chunk(const uv_buf_t *buf)
{
    return buf->base ? (struct chunk *)(void *)(buf->base - offsetof(struct chunk, data)) : NULL;
}

static void client_gone(struct conn *c, int rst);

/* Queue nread bytes of ch (which the queue now owns) as direction d's
 * next bytes, and forward what may go. */
static void enqueue(struct conn *c, int d, struct chunk *ch, size_t nread)
{
    struct flow *f = &c->f[d];
    if (f->done || f->discard) {
        chunk_unref(ch);
        return;
    }
    if (nread <= SMALL_READ &&
        (f->head || f->stalled || f->hold_until || f->delay_ms || f->rate || f->slice)) {
        /* It will wait in the queue: do not pin a pool buffer with it. */
        struct chunk *small = fg_malloc(sizeof *small + nread);
        memset(small, 0, sizeof *small);
        small->refs = 1;
        memcpy(small->data, ch->data, nread);
        chunk_unref(ch);
        ch = small;
    }
    ch->len = nread;
    ch->t_ms = uv_now(c->p->loop);
    if (f->tail)
        f->tail->next = ch;
    else
        f->head = ch;
    f->tail = ch;
    f->held += ch->len;
    note_buffered(c);
    pump(c, d);
    if (!c->dead)
        update_reading(c, d);
}

static struct chunk *chunk_get(struct fg_proxy *p)
{
    struct chunk *ch = p->pool;
    if (ch) {
        p->pool = ch->next;
        p->npool--;
    } else {
        ch = fg_malloc(sizeof *ch + CHUNK_SIZE);
    }
    memset(ch, 0, sizeof *ch);
    ch->p = p;
    ch->refs = 1;
    return ch;
}

static void tls_ready(struct conn *c, int side)
{
    struct side *s = &c->s[side];
    if (c->p->log) {
        fprintf(c->p->log, "faultgate: conn #%u TLS with the %s established (%s)\n", c->id,
                side_name(side), fg_tls_version(s->tls));
        fflush(c->p->log);
    }
    if (!c->tls_counted && fg_tls_is_up(c->s[1 - side].tls)) {
        c->tls_counted = 1;
        count_add(&c->p->tls_sessions, 1);
    }
    if (s->pend_len) {
        char *b = s->pend;
        size_t n = s->pend_len;
        s->pend = NULL;
        s->pend_len = 0;
        tls_write(c, side, b, n);
        free(b);
    }
}

/* Ciphertext read from a TLS leg: advance its handshake, then queue the
 * plaintext it yields as the direction's next bytes. */
static void tls_input(struct conn *c, int side, const char *data, size_t n)
{
    struct side *s = &c->s[side];
    int d = FROM(side);
    if (s->tls_failed)
        return;
    if (fg_tls_put(s->tls, data, n) < 0) {
        tls_fail(c, side);
        return;
    }
    if (!fg_tls_is_up(s->tls)) {
        int r = fg_tls_handshake(s->tls);
        tls_flush(c, side);
        if (c->dead)
            return;
        if (r < 0) {
            tls_fail(c, side);
            return;
        }
        if (r == 0)
            return;
        tls_ready(c, side);
        if (c->dead)
            return;
    }
    while (!c->dead && !s->tls_failed) {
        struct chunk *pc = chunk_get(c->p);
        int k = fg_tls_read(s->tls, pc->data, CHUNK_SIZE);
        tls_flush(c, side); /* a read may answer (a key update) */
        if (k <= 0 || c->dead) {
            chunk_unref(pc);
            /* close_notify (UV_EOF): the TCP FIN that follows ends the
             * direction, as for a plain leg. */
            if (k < 0 && k != UV_EOF)
                tls_fail(c, side);
            return;
        }
        enqueue(c, d, pc, (size_t)k);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    int side = stream == (uv_stream_t *)&c->s[CLI].tcp ? CLI : UPS;
    int d = FROM(side);
    struct flow *f = &c->f[d];
    struct chunk *ch = buf_chunk(buf);

    if (nread > 0 && !c->dead) {
        fg_capture_conn_data(c->s[side].sc, d, ch->data, (size_t)nread);
        if (c->s[side].tls) {
            tls_input(c, side, ch->data, (size_t)nread);
            chunk_unref(ch);
            if (!c->dead)
                update_reading(c, d);
            return;
        }
        enqueue(c, d, ch, (size_t)nread);
        return;
    }
    if (ch)
        chunk_unref(ch);
    if (nread == 0 || c->dead)
        return;
    uv_read_stop(stream);
    c->s[side].reading = 0;
    if (nread == UV_EOF) {
        fg_capture_conn_fin(c->s[side].sc, d);
        f->eof = 1;
        if (side == CLI && c->stalled) {
            client_gone(c, 0);
            return;
        }
        pump(c, d);
        return;
    }
    if (side == CLI && c->stalled)
        client_gone(c, 1);
    else
        conn_abort(c, side);
}

/* Read from SRC(d) only while the connection is up, the direction is not
 * ended, stalled or closed, and what waits to be written towards DST(d)
 * (plus what a delay holds) is under the high-water mark; resume below
 * half of it. */
static void update_reading(struct conn *c, int d)
{
    struct flow *f = &c->f[d];
    struct side *src = &c->s[SRC(d)];
    size_t hw = c->p->high_water;
    size_t load = wq(c, DST(d)) + f->held;
    if (load > hw)
        f->bp = 1;
    else if (load < hw / 2)
        f->bp = 0;
    int want = c->connected && !c->dead && !src->closed && !f->eof && !f->done && !f->stalled &&
               (!f->bp || f->discard) && !c->reset_pending;
    if (want && !src->reading) {
        if (uv_read_start((uv_stream_t *)&src->tcp, alloc_cb, on_read) == 0)
            src->reading = 1;
    } else if (!want && src->reading) {
        uv_read_stop((uv_stream_t *)&src->tcp);
        src->reading = 0;
    }
}

/* --- faults ------------------------------------------------------------- */

static const struct fg_fault *fault_at(struct conn *c, int i)
{
    return &c->p->faults->faults[i];
}

static void log_decision(struct conn *c)
{
    struct fg_fault_set *fs = c->p->faults;
    if (!c->p->log || !fs->nlog)
        return;
    const struct fg_decision *d = &fs->log[fs->nlog - 1];
    double t = d->t_us >= c->t0_us ? (double)(d->t_us - c->t0_us) / 1e6 : 0.0;
    fprintf(c->p->log, "faultgate: conn #%u t=+%.3fs %s -> %s\n", d->conn, t, d->trigger,
            d->action);
    fflush(c->p->log);
}

/* The octets of the event, counted back from its end, as far as the event
 * says (a truncated line is held from the feed position instead). */
static size_t event_len(const struct fg_smtp_event *ev)
{
    switch (ev->type) {
    case FG_SMTP_EV_COMMAND:
        return ev->truncated ? 0 : ev->line_len + 2;
    case FG_SMTP_EV_REPLY:
        return ev->text_len;
    case FG_SMTP_EV_END_OF_DATA:
        return 3; /* ".\r\n"; the CRLF before it ends the last body line */
    default:
        return 0; /* BDAT_END, TLS_START: a point, not bytes */
    }
}

static int on_event(void *ud, const struct fg_smtp_event *ev)
{
    struct conn *c = ud;
    if (c->injecting || !c->p->faults)
        return 0;
    switch (ev->type) {
    case FG_SMTP_EV_COMMAND:
    case FG_SMTP_EV_REPLY:
    case FG_SMTP_EV_END_OF_DATA:
    case FG_SMTP_EV_BDAT_END:
    case FG_SMTP_EV_TLS_START:
        break;
    default:
        return 0;
    }
    if (ev->type == FG_SMTP_EV_REPLY) {
        for (unsigned k = 0; k < c->ninj; k++)
            if (c->inj[k].wait > 0 && --c->inj[k].wait == 0)
                c->inject_due = 1;
    }
    faults_lock(c->p);
    int i = fg_fault_set_match(c->p->faults, &c->fc, ev, 0);
    if (i >= 0)
        log_decision(c);
    faults_unlock(c->p);
    if (i < 0)
        return c->inject_due;
    c->hit = i;
    c->hit_evlen = event_len(ev);
    /* The parser has already queued this command (or end of data) among
     * those awaiting a reply; before the greeting, that is owed first. */
    c->hit_wait = c->parser->pend_len + (c->parser->greeted ? 0 : 1);
    return 1;
}

static void start_watch(struct fg_proxy *p);
static void on_timer(uv_timer_t *t);

/* Wake the connection's timer no later than loop time `when`. */
static void schedule(struct conn *c, uint64_t when)
{
    if (c->dead || c->timer_closed)
        return;
    if (c->timer_due && c->timer_due <= when)
        return;
    uint64_t now = uv_now(c->p->loop);
    c->timer_due = when;
    uv_timer_start(&c->timer, on_timer, when > now ? when - now : 0, 0);
}

/* Whether fault direction fd covers d; FG_FDIR_DEFAULT means dflt, which
 * is a direction, or -1 for both. */
static int dir_has(enum fg_fault_dir fd, int d, int dflt)
{
    if (fd == FG_FDIR_BOTH)
        return 1;
    if (fd == FG_FDIR_C2S)
        return d == FG_C2S;
    if (fd == FG_FDIR_S2C)
        return d == FG_S2C;
    return dflt < 0 || d == dflt;
}

static void act_stall(struct conn *c, enum fg_fault_dir fd)
{
    for (int d = FG_C2S; d <= FG_S2C; d++)
        if (dir_has(fd, d, -1)) {
            c->f[d].stalled = 1;
            update_reading(c, d);
        }
    c->stalled = 1;
    start_watch(c->p);
}

static void act_close(struct conn *c, enum fg_fault_dir fd)
{
    for (int d = FG_C2S; d <= FG_S2C && !c->dead; d++) {
        if (!dir_has(fd, d, -1))
            continue;
        struct flow *f = &c->f[d];
        f->done = 1;
        flow_drop(f);
        update_reading(c, d);
        relay_fin(c, d);
    }
}

/* blackhole (fin 0) and half-close (fin 1): read and discard from here. */
static void act_discard(struct conn *c, enum fg_fault_dir fd, int dflt, int fin)
{
    for (int d = FG_C2S; d <= FG_S2C && !c->dead; d++) {
        if (!dir_has(fd, d, dflt))
            continue;
        struct flow *f = &c->f[d];
        f->discard = 1;
        flow_drop(f);
        update_reading(c, d);
        if (fin)
            relay_fin(c, d);
    }
}

static void act_reset(struct conn *c)
{
    c->reset_pending = 1;
    flow_drop(&c->f[0]);
    flow_drop(&c->f[1]);
    update_reading(c, FG_C2S);
    update_reading(c, FG_S2C);
    if (wq(c, CLI) == 0 && wq(c, UPS) == 0)
        do_reset(c);
}

/* The reply is sent as if from the server: the parser sees it on the
 * server's side so that it keeps matching replies to commands. */
static void feed_injected(struct conn *c, const char *text)
{
    if (!c->parser)
        return;
    c->injecting = 1;
    fg_smtp_parser_feed(c->parser, FG_S2C, text, strlen(text));
    c->injecting = 0;
}

/* Send the owed replies whose turn has come, in order. */
static void inject_due(struct conn *c)
{
    c->inject_due = 0;
    unsigned k = 0;
    while (k < c->ninj && !c->dead) {
        if (c->inj[k].wait > 0) {
            k++;
            continue;
        }
        const struct fg_fault *f = fault_at(c, c->inj[k].fault);
        memmove(&c->inj[k], &c->inj[k + 1], (c->ninj - k - 1) * sizeof c->inj[0]);
        c->ninj--;
        inject(c, f->reply_text);
        if (f->replace)
            feed_injected(c, f->reply_text);
    }
}

/* A reply owed after `wait` more server replies. */
static void owe_reply(struct conn *c, int i, unsigned wait)
{
    if (wait > 0 && c->ninj < sizeof c->inj / sizeof c->inj[0]) {
        c->inj[c->ninj].fault = i;
        c->inj[c->ninj].wait = wait;
        c->ninj++;
        return;
    }
    const struct fg_fault *f = fault_at(c, i);
    inject(c, f->reply_text);
    if (f->replace)
        feed_injected(c, f->reply_text);
}

/* A dropped command never reaches the server, so no reply will answer
 * it: take it off the parser's list of commands awaiting a reply (it is
 * the newest), and undo what it announced (a body after DATA's 354, TLS
 * after STARTTLS, a BDAT chunk, which the server will now read as
 * commands, as the parser does). */
static void parser_unsend(struct conn *c, const struct fg_fault *f)
{
    struct fg_smtp_parser *ps = c->parser;
    if (ps->pend_len)
        ps->pend_len--;
    if (f->trig == FG_TRIG_COMMAND) {
        if (f->verb == FG_VERB_DATA)
            ps->data_pending = 0;
        else if (f->verb == FG_VERB_STARTTLS)
            ps->starttls_pending = 0;
        else if (f->verb == FG_VERB_BDAT)
            ps->bdat_left = 0;
    } else if (f->trig == FG_TRIG_DATA_START) {
        ps->bdat_left = 0; /* a dropped first BDAT; nothing to undo after a 354 */
    }
}

/* Shaping actions hold the triggering event's bytes: they are the first
 * bytes shaped.  ch->off goes back to the event's start; the parser has
 * seen them already. */
static void hold_event(struct conn *c, int d, struct chunk *ch, size_t off, size_t evstart,
                       size_t end)
{
    forward(c, d, ch, off, evstart - off);
    c->f[d].off += evstart - off;
    ch->off = evstart;
    c->f[d].noparse = end - evstart;
}

/* Fault i fired on an event of direction d ending n bytes into ch (past
 * its consumed part).  For connect, after and starttls, d is -1 or the
 * point's direction, ch is NULL and n 0.  Consumes what it forwards or
 * drops from ch (ch->off) and advances the flow's offset accordingly. */
static void apply(struct conn *c, int d, struct chunk *ch, size_t n, int i)
{
    const struct fg_fault *f = fault_at(c, i);
    size_t off = ch ? ch->off : 0, end = off + n;
    size_t evstart = end - (c->hit_evlen < n ? c->hit_evlen : n);
    int consumed = 1; /* forward(off..end) happens below, unless an action holds */
    uint64_t now = uv_now(c->p->loop);
    int shaping = f->action == FG_ACT_DELAY || f->action == FG_ACT_THROTTLE ||
                  f->action == FG_ACT_SLICE || f->action == FG_ACT_CORRUPT;

    if (ch && shaping && dir_has(f->dir, d, d)) {
        hold_event(c, d, ch, off, evstart, end);
        consumed = 0;
    } else if (ch && (f->action == FG_ACT_DROP ||
                      (f->action == FG_ACT_REPLY && (d == FG_S2C || f->replace)))) {
        /* These decide about the event's own bytes below. */
        consumed = 0;
    } else if (ch) {
        forward(c, d, ch, off, n);
        c->f[d].off += n;
        ch->off = end;
    }

    switch (f->action) {
    case FG_ACT_STALL:
        act_stall(c, f->dir);
        break;
    case FG_ACT_BLACKHOLE:
        act_discard(c, f->dir, -1, 0);
        break;
    case FG_ACT_CLOSE:
        act_close(c, f->dir);
        break;
    case FG_ACT_HALF_CLOSE:
        act_discard(c, f->dir, FG_C2S, 1);
        break;
    case FG_ACT_RESET:
        act_reset(c);
        break;
    case FG_ACT_LIMIT:
        for (int k = FG_C2S; k <= FG_S2C; k++)
            if (dir_has(f->dir, k, -1))
                c->f[k].limit_left = f->limit;
        break;
    case FG_ACT_DELAY:
    case FG_ACT_THROTTLE:
    case FG_ACT_SLICE:
        for (int k = FG_C2S; k <= FG_S2C; k++) {
            if (!dir_has(f->dir, k, d))
                continue;
            struct flow *fl = &c->f[k];
            if (f->action == FG_ACT_DELAY) {
                fl->delay_ms = f->delay_ms;
            } else if (f->action == FG_ACT_THROTTLE) {
                fl->rate = f->rate;
                fl->tokens = 0;
                fl->last_ms = now;
            } else {
                fl->slice = f->slice;
                fl->pause_ms = f->pause_ms;
            }
        }
        break;
    case FG_ACT_CORRUPT: {
        int k = f->dir == FG_FDIR_S2C ? FG_S2C : f->dir == FG_FDIR_C2S ? FG_C2S : d;
        if (k < 0)
            k = FG_C2S;
        struct flow *fl = &c->f[k];
        /* From the event's first octet, or from the trigger point. */
        fl->corrupt_at = fl->off + f->at;
        fl->corrupt_op = f->op;
        fl->corrupt_val = f->value;
        fl->corrupt_armed = 1;
        break;
    }
    case FG_ACT_DROP:
        if (ch) {
            forward(c, d, ch, off, evstart - off);
            c->f[d].off += n;
            ch->off = end;
            if (d == FG_C2S)
                parser_unsend(c, f);
        }
        break;
    case FG_ACT_REPLY:
        if (!ch) {
            inject(c, f->reply_text);
        } else if (d == FG_S2C) {
            /* Before the server's reply, or instead of it. */
            forward(c, d, ch, off, evstart - off);
            inject(c, f->reply_text);
            if (!f->replace)
                forward(c, d, ch, evstart, end - evstart);
            c->f[d].off += n;
            ch->off = end;
        } else if (f->replace) {
            /* The client's bytes go no further; the proxy answers in the
             * place the server's reply would have taken. */
            forward(c, d, ch, off, evstart - off);
            c->f[d].off += n;
            ch->off = end;
            owe_reply(c, i, c->hit_wait ? c->hit_wait - 1 : 0);
        } else {
            /* An extra reply, right after the server's reply to it. */
            owe_reply(c, i, c->hit_wait);
        }
        break;
    case FG_ACT_REFUSE:
    case FG_ACT_ACCEPT_THEN_CLOSE:
    case FG_ACT_BANNER_DELAY:
        break; /* at accept: see on_connection */
    default:
        break;
    }
    (void)consumed;
}

/* Time triggers whose time has come (once connected). */
static void fire_after(struct conn *c)
{
    struct fg_fault_set *fs = c->p->faults;
    if (!fs || !c->connected || c->dead)
        return;
    uint64_t el = uv_now(c->p->loop) - c->t0_ms;
    for (int i = -1; !c->dead;) {
        faults_lock(c->p);
        i = fg_fault_match_after(fs, &c->fc, el, (size_t)(i + 1));
        if (i >= 0)
            log_decision(c);
        faults_unlock(c->p);
        if (i < 0)
            break;
        c->hit_evlen = 0;
        apply(c, -1, NULL, 0, i);
    }
    if (c->dead)
        return;
    uint64_t next = fg_fault_next_after(fs, &c->fc, el);
    if (next != UINT64_MAX)
        schedule(c, c->t0_ms + next);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    c->timer_due = 0;
    fire_after(c);
    for (int d = FG_C2S; d <= FG_S2C && !c->dead; d++) {
        pump(c, d);
        if (!c->dead)
            update_reading(c, d);
    }
}

/* --- run-time fault changes (the control API) --------------------------- */

void fg_proxy_faults_changed(struct fg_proxy *p)
{
    if (p->workers || !p->faults)
        return; /* threaded proxies keep the set they started with */
    /* conn_kill only unlinks in a close callback, so next stays valid. */
    for (struct conn *c = p->conns, *next; c; c = next) {
        next = c->next;
        if (c->dead)
            continue;
        c->parse = 1; /* events from here on: a new trigger may watch them */
        if (!c->connected)
            continue; /* on_connect matches the after faults */
        fire_after(c);
        for (int d = FG_C2S; d <= FG_S2C && !c->dead; d++) {
            pump(c, d);
            if (!c->dead)
                update_reading(c, d);
        }
    }
}

/* --- the forwarding loop ------------------------------------------------ */

static void ensure_parser(struct conn *c)
{
    if (!c->parser) {
        c->parser = fg_malloc(sizeof *c->parser);
        fg_smtp_parser_init(c->parser, on_event, c);
    }
}

/* Terminate mode, at the 220 to STARTTLS (RFC 3207 §4): bytes either side
 * sent after it in plaintext go on raw (the server's after its 220, the
 * client's injected behind STARTTLS: what a pass-through proxy would send;
 * RFC 3207 §5 and CVE-2011-0411 are about exactly those), then both legs
 * get a TLS session and the upstream handshake starts.  The parser
 * restarts for the new session (§4.2: the client starts over with EHLO),
 * keeping its verb counts so that `nth` counts on the connection. */
static void tls_switch(struct conn *c)
{
    struct fg_proxy *p = c->p;
    c->tls_switched = 1;
    /* A fault stopped the feed at the 220 itself: its TLS_START is held
     * in the parser; deliver it (a `starttls` trigger) before the restart. */
    if (fg_smtp_parser_queued(c->parser, FG_S2C)) {
        c->hit = -1;
        fg_smtp_parser_feed(c->parser, FG_S2C, NULL, 0);
        if (c->hit >= 0) {
            c->hit_evlen = 0;
            apply(c, FG_S2C, NULL, 0, c->hit);
        }
        if (c->dead)
            return;
    }
    for (int d = FG_C2S; d <= FG_S2C; d++) {
        struct flow *f = &c->f[d];
        for (struct chunk *ch = f->head; ch && !c->dead; ch = ch->next) {
            size_t n = ch->len - ch->off;
            /* A write error ends the connection and frees the queue. */
            ch->refs++;
            forward(c, d, ch, ch->off, n);
            int alive = !c->dead;
            chunk_unref(ch);
            if (!alive)
                return;
            f->off += n;
            f->held -= n;
            ch->off = ch->len;
        }
        f->noparse = 0;
    }
    if (c->dead)
        return;
    c->s[CLI].tls = fg_tls_new(p->tls_srv);
    c->s[UPS].tls = fg_tls_new(p->tls_cli);
    fg_tls_set_server_name(c->s[UPS].tls, p->tls_hostname);
    unsigned counts[FG_VERB__COUNT];
    memcpy(counts, c->parser->verb_count, sizeof counts);
    fg_smtp_parser_init(c->parser, on_event, c);
    memcpy(c->parser->verb_count, counts, sizeof counts);
    c->parser->greeted = 1;
    if (p->log) {
        fprintf(p->log, "faultgate: conn #%u STARTTLS: TLS terminated at the proxy\n", c->id);
        fflush(p->log);
    }
    int r = fg_tls_handshake(c->s[UPS].tls);
    tls_flush(c, UPS);
    if (r < 0)
        tls_fail(c, UPS);
}

static int tls_due(const struct conn *c)
{
    return c->p->tls_terminate && !c->tls_switched && c->parser && fg_smtp_parser_is_tls(c->parser);
}

/* Byte triggers of direction d that fire at the current offset. */
static void fire_bytes(struct conn *c, int d)
{
    struct flow *f = &c->f[d];
    struct fg_fault_set *fs = c->p->faults;
    for (int i = -1; !c->dead;) {
        faults_lock(c->p);
        i = fg_fault_match_byte(fs, &c->fc, (enum fg_dir)d, f->off, (size_t)(i + 1));
        if (i >= 0)
            log_decision(c);
        faults_unlock(c->p);
        if (i < 0)
            break;
        c->hit_evlen = 0;
        apply(c, d, NULL, 0, i);
    }
    f->next_byte = fg_fault_next_byte(fs, &c->fc, (enum fg_dir)d, f->off);
}

static void pump(struct conn *c, int d)
{
    struct flow *f = &c->f[d];
    while (!c->dead && !f->stalled && !f->done && !c->reset_pending) {
        if (tls_due(c)) {
            tls_switch(c);
            continue;
        }
        struct chunk *ch = f->head;
        if (!ch)
            break;
        if (ch->off == ch->len) {
            f->head = ch->next;
            if (!f->head)
                f->tail = NULL;
            chunk_unref(ch);
            continue;
        }
        size_t avail = ch->len - ch->off;
        if (f->discard) {
            f->off += avail;
            f->held -= avail;
            ch->off = ch->len;
            continue;
        }
        /* Shaping: how much may go now. */
        uint64_t now = uv_now(c->p->loop);
        if (f->hold_until > now) {
            schedule(c, f->hold_until);
            break;
        }
        if (f->delay_ms && ch->t_ms + f->delay_ms > now) {
            schedule(c, ch->t_ms + f->delay_ms);
            break;
        }
        size_t budget = avail;
        if (f->rate) {
            uint64_t cap = f->rate / 10 ? f->rate / 10 : 1;
            f->tokens += (now - f->last_ms) * f->rate / 1000;
            if (f->tokens > cap)
                f->tokens = cap;
            f->last_ms = now;
            if (!f->tokens) {
                schedule(c, now + (1000 + f->rate - 1) / f->rate);
                break;
            }
            if (budget > f->tokens)
                budget = (size_t)f->tokens;
        }
        if (f->slice) {
            if (wq(c, DST(d)) > 0)
                break; /* on_write pumps again once the last slice is out */
            if (budget > f->slice)
                budget = (size_t)f->slice;
        }
        if (f->limit_left != UINT64_MAX && budget > f->limit_left)
            budget = (size_t)f->limit_left;
        if (f->next_byte != UINT64_MAX && f->next_byte - f->off < budget)
            budget = (size_t)(f->next_byte - f->off);

        size_t n = budget;
        c->hit = -1;
        /* Forwarding may end the connection (a write error aborts it) and
         * an action may drop the queue (close, reset, a TLS failure): pump
         * holds its own reference to ch until ch's accounting is done. */
        size_t before = ch->off;
        ch->refs++;
        if (f->noparse) {
            /* Already parsed before a shaping action held it. */
            if (n > f->noparse)
                n = f->noparse;
            f->noparse -= n;
        } else if (c->parse && n) {
            ensure_parser(c);
            n = fg_smtp_parser_feed(c->parser, (enum fg_dir)d, ch->data + ch->off, n);
        }
        if (c->hit < 0) {
            forward(c, d, ch, ch->off, n);
            ch->off += n;
            f->off += n;
        } else {
            apply(c, d, ch, n, c->hit);
        }
        n = ch->off - before;
        int still_queued = !c->dead && f->head == ch;
        chunk_unref(ch);
        if (c->dead)
            return;
        if (still_queued)
            f->held -= n; /* else the queue, ch with it, was dropped */
        if (f->rate)
            f->tokens -= n < f->tokens ? n : f->tokens;
        if (f->limit_left != UINT64_MAX) {
            f->limit_left -= n < f->limit_left ? n : f->limit_left;
            if (!f->limit_left) {
                act_close(c, FG_FDIR_BOTH);
                break;
            }
        }
        if (f->next_byte != UINT64_MAX && f->off >= f->next_byte)
            fire_bytes(c, d);
        if (c->inject_due && !c->dead)
            inject_due(c);
        if (f->slice && f->pause_ms && n && f->held) {
            f->hold_until = now + f->pause_ms;
            schedule(c, f->hold_until);
            break;
        }
    }
    if (!c->dead && tls_due(c))
        tls_switch(c);
    if (c->dead)
        return;
    if (f->eof && !f->head && !f->stalled && !c->reset_pending && !f->discard)
        relay_fin(c, d);
}

/* --- stalled connections: noticing the client leave --------------------- */

/* The client closed or reset while the proxy is not reading it: close both
 * legs, as a hung peer's host would once the connection is gone. */
static void client_gone(struct conn *c, int rst)
{
    if (c->dead)
        return;
    c->client_gone = 1;
    if (rst) {
        fg_capture_conn_rst(c->s[CLI].sc, FG_C2S);
        c->s[CLI].closed = 1;
        uv_close((uv_handle_t *)&c->s[CLI].tcp, conn_handle_closed);
        if (c->connected)
            side_close(c, UPS, 1);
    }
    conn_kill(c);
}

/* TCP state of the client socket, read without reading its data. */
static void check_client(struct conn *c)
{
    uv_os_fd_t fd;
    if (c->s[CLI].reading || uv_fileno((uv_handle_t *)&c->s[CLI].tcp, &fd) != 0)
        return;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr != 0) {
        client_gone(c, 1);
        return;
    }
    struct tcp_info ti;
    socklen_t tl = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0)
        return;
    if (ti.tcpi_state == TCP_CLOSE_WAIT) {
        fg_capture_conn_fin(c->s[CLI].sc, FG_C2S);
        client_gone(c, 0);
    } else if (ti.tcpi_state == TCP_CLOSE) {
        client_gone(c, 1);
    }
}

static void on_watch(uv_timer_t *t)
{
    struct fg_proxy *p = t->data;
    unsigned left = 0;
    for (struct conn *c = p->conns, *next; c; c = next) {
        next = c->next;
        if (c->dead || !c->stalled || c->client_gone)
            continue;
        check_client(c);
        if (!c->dead)
            left++;
    }
    __atomic_store_n(&p->stalled_seen, left, __ATOMIC_RELAXED);
    if (!left) {
        uv_timer_stop(&p->watch);
        p->watching = 0;
    }
}

static void start_watch(struct fg_proxy *p)
{
    if (p->watching || p->closing)
        return;
    p->watching = 1;
    uv_timer_start(&p->watch, on_watch, STALL_POLL_MS, STALL_POLL_MS);
}

/* --- connections -------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (status == UV_ECANCELED || c->dead)
        return;
    if (status < 0) {
        /* Upstream refused: the client sees a reset, as from a dead host. */
        if (c->p->log)
            fprintf(c->p->log, "faultgate: conn #%u upstream: %s\n", c->id, uv_strerror(status));
        side_close(c, CLI, 1);
        conn_kill(c);
        return;
    }
    c->connected = 1;
    struct sockaddr_storage a, b;
    int al = sizeof a, bl = sizeof b;
    /* Addresses only for a synthesized capture: two system calls per
     * leg that the proxy's connection rate would pay for nothing. */
    if (synth(c->p) && uv_tcp_getsockname(&c->s[UPS].tcp, (struct sockaddr *)&a, &al) == 0 &&
        uv_tcp_getpeername(&c->s[UPS].tcp, (struct sockaddr *)&b, &bl) == 0)
        c->s[UPS].sc =
            fg_capture_conn_open(c->p->capture, (struct sockaddr *)&a, (struct sockaddr *)&b);
    uv_tcp_nodelay(&c->s[UPS].tcp, 1);
    if (c->connect_fault >= 0) {
        c->hit_evlen = 0;
        apply(c, -1, NULL, 0, c->connect_fault);
    }
    for (int d = FG_C2S; d <= FG_S2C && !c->dead; d++)
        if (c->f[d].next_byte == 0)
            fire_bytes(c, d); /* compute the first byte trigger */
    fire_after(c);
    if (!c->dead) {
        update_reading(c, FG_C2S);
        update_reading(c, FG_S2C);
    }
}

/* A connection whose client handle is initialised but not yet open. */
static struct conn *conn_new(struct fg_proxy *p)
{
    struct conn *c = fg_calloc(1, sizeof *c);
    c->p = p;
    c->hit = -1;
    c->connect_fault = -1;
    uv_tcp_init(p->loop, &c->s[CLI].tcp);
    c->s[CLI].tcp.data = c;
    c->handles = 1;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    return c;
}

/* The client socket could not be taken: close the lone handle. */
static void conn_discard(struct conn *c)
{
    c->dead = 1;
    c->s[CLI].closed = 1;
    c->s[UPS].closed = 1;
    c->timer_closed = 1;
    uv_close((uv_handle_t *)&c->s[CLI].tcp, conn_handle_closed);
}

/* Connection number id's client leg is open: connect-time faults, then
 * the upstream leg. */
static void conn_start(struct conn *c, unsigned id)
{
    struct fg_proxy *p = c->p;
    uv_tcp_init(p->loop, &c->s[UPS].tcp);
    c->s[UPS].tcp.data = c;
    uv_timer_init(p->loop, &c->timer);
    c->timer.data = c;
    c->handles = 3;
    c->id = id;
    count_add(&p->open, 1);
    c->t0_us = fg_wall_us();
    c->t0_ms = uv_now(p->loop);
    for (int d = FG_C2S; d <= FG_S2C; d++) {
        c->f[d].limit_left = UINT64_MAX;
        c->f[d].next_byte = UINT64_MAX;
    }
    /* TCP_NODELAY: accepted sockets inherit it from the listener (Linux
     * copies the listener's options to the child socket). */

    struct sockaddr_storage peer, local;
    int pl = sizeof peer, ll = sizeof local;
    if (synth(p) && uv_tcp_getpeername(&c->s[CLI].tcp, (struct sockaddr *)&peer, &pl) == 0 &&
        uv_tcp_getsockname(&c->s[CLI].tcp, (struct sockaddr *)&local, &ll) == 0)
        c->s[CLI].sc =
            fg_capture_conn_open(p->capture, (struct sockaddr *)&peer, (struct sockaddr *)&local);

    c->fc.conn = c->id;
    c->parse = p->tls_terminate; /* the 220 to STARTTLS must be seen */
    if (p->faults && p->faults->n) {
        c->parse = 1;
        c->f[FG_C2S].next_byte = c->f[FG_S2C].next_byte = 0; /* computed once connected */
        faults_lock(p);
        c->connect_fault = fg_fault_set_match(p->faults, &c->fc, NULL, 0);
        if (c->connect_fault >= 0)
            log_decision(c);
        faults_unlock(p);
        if (c->connect_fault >= 0) {
            const struct fg_fault *f = fault_at(c, c->connect_fault);
            if (f->action == FG_ACT_REFUSE || f->action == FG_ACT_ACCEPT_THEN_CLOSE) {
                /* Before any byte, and without an upstream connection:
                 * refuse resets (as a host with no listener would answer
                 * a SYN, RFC 793 §3.4), accept-then-close sends FIN. */
                side_close(c, CLI, f->action == FG_ACT_REFUSE);
                conn_kill(c);
                return;
            }
            if (f->action == FG_ACT_BANNER_DELAY)
                c->f[FG_S2C].hold_until = c->t0_ms + f->delay_ms;
        }
    }
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->s[UPS].tcp, (struct sockaddr *)&p->up_addr, on_connect);
    if (rc != 0) {
        if (p->log)
            fprintf(p->log, "faultgate: conn #%u upstream: %s\n", c->id, uv_strerror(rc));
        side_close(c, CLI, 1);
        conn_kill(c);
        return;
    }
    /* Read interest now, while connecting: libuv then keeps the socket's
     * epoll registration when the connect completes instead of adding it
     * again (one system call per connection).  libuv reports the connect
     * before any read, and on_connect re-decides reading. */
    if (uv_read_start((uv_stream_t *)&c->s[UPS].tcp, alloc_cb, on_read) == 0)
        c->s[UPS].reading = 1;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct fg_proxy *p = server->data;
    if (status < 0 || p->closing)
        return;
    struct conn *c = conn_new(p);
    if (uv_accept(server, (uv_stream_t *)&c->s[CLI].tcp) != 0) {
        conn_discard(c);
        return;
    }
    conn_start(c, ++p->accepted);
}

/* --- worker threads ----------------------------------------------------- */

/* Worker: carry an accepted socket (numbered id) on this loop. */
static void worker_take(struct fg_proxy *w, int fd, unsigned id)
{
    struct conn *c = conn_new(w);
    if (w->closing || uv_tcp_open(&c->s[CLI].tcp, fd) != 0) {
        close(fd);
        conn_discard(c);
        count_add(&w->load, -1);
        return;
    }
    count_add(&w->carried, 1);
    conn_start(c, id);
}

/* The worker carrying the fewest connections; ties go to self, which
 * needs no hand-off.  Called under the parent's lock, so that two
 * accepting workers never both count a worker as idle. */
static struct fg_proxy *least_loaded(struct fg_proxy *p, struct fg_proxy *self)
{
    struct fg_proxy *best = self;
    unsigned min = __atomic_load_n(&self->load, __ATOMIC_RELAXED);
    unsigned n = __atomic_load_n(&p->nlive, __ATOMIC_ACQUIRE);
    for (unsigned i = 0; i < n; i++) {
        struct fg_proxy *w = p->workers[i];
        if (w == self)
            continue;
        unsigned l = __atomic_load_n(&w->load, __ATOMIC_RELAXED);
        if (l < min) {
            min = l;
            best = w;
        }
    }
    return best;
}

/* Worker: the listening socket is readable.  Workers take turns at it
 * under the parent's lock, so that numbers follow the kernel's accept
 * queue exactly; a worker that finds nothing left goes back to its loop.
 * A bounded batch per wakeup lets an idle worker take the next ones. */
static void on_acceptable(uv_poll_t *h, int status, int events)
{
    struct fg_proxy *w = h->data;
    struct fg_proxy *p = w->parent;
    (void)events;
    if (status < 0 || w->closing)
        return;
    for (int k = 0; k < 8; k++) {
        struct fg_proxy *to = w;
        unsigned id = 0;
        uv_mutex_lock(&p->mu);
        int fd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        int e = errno;
        if (fd >= 0) {
            id = __atomic_add_fetch(&p->accepted, 1, __ATOMIC_RELAXED);
            to = least_loaded(p, w);
            count_add(&to->load, 1);
        }
        uv_mutex_unlock(&p->mu);
        if (fd < 0) {
            if (e == EINTR || e == ECONNABORTED)
                continue;
            if (e != EAGAIN && e != EWOULDBLOCK && w->log)
                fprintf(w->log, "faultgate: accept: %s\n", strerror(e));
            return;
        }
        if (to == w) {
            worker_take(w, fd, id);
            continue;
        }
        uv_mutex_lock(&to->mu);
        int stopping = to->stop;
        if (!stopping)
            *FG_ARRAY_PUSH(to->hq, to->nhq, to->caphq) = (struct handoff){fd, id};
        uv_mutex_unlock(&to->mu);
        if (stopping) {
            close(fd);
            count_add(&to->load, -1);
        } else {
            uv_async_send(&to->wake);
        }
    }
}

/* Worker: connections handed over, or the parent asks it to stop. */
static void worker_wake(uv_async_t *a)
{
    struct fg_proxy *w = a->data;
    uv_mutex_lock(&w->mu);
    int stop = w->stop;
    struct handoff *hq = w->hq;
    size_t n = w->nhq;
    w->hq = NULL;
    w->nhq = w->caphq = 0;
    uv_mutex_unlock(&w->mu);
    for (size_t i = 0; i < n; i++)
        worker_take(w, hq[i].fd, hq[i].id); /* closes it when stopping */
    free(hq);
    if (!stop || w->closing)
        return;
    uv_close((uv_handle_t *)&w->acceptor, proxy_handle_closed);
    fg_proxy_close(w, NULL, NULL);
}

static void worker_main(void *arg)
{
    struct fg_proxy *w = arg;
    fg_serve_run(w->loop, w->busy_poll_us);
    uv_loop_close(w->loop);
    __atomic_store_n(&w->ended, 1, __ATOMIC_RELEASE);
    uv_async_send(&w->parent->wake);
}

/* A worker whose thread never ran (or has been joined): free it. */
static void worker_free(struct fg_proxy *w)
{
    for (size_t k = 0; k < w->nhq; k++) /* handed over as it stopped */
        close(w->hq[k].fd);
    free(w->hq);
    uv_mutex_destroy(&w->mu);
    free(w->loop);
    free(w);
}

/* Parent: a worker's loop ended.  Each is joined as it ends, but freed
 * only once the last has: until then the others still read its load. */
static void parent_wake(uv_async_t *a)
{
    struct fg_proxy *p = a->data;
    for (unsigned i = 0; i < p->nworkers; i++) {
        struct fg_proxy *w = p->workers[i];
        if (!w || w->joined || !__atomic_load_n(&w->ended, __ATOMIC_ACQUIRE))
            continue;
        uv_thread_join(&w->thread);
        w->joined = 1;
        p->workers_left--;
        if (p->log)
            fprintf(p->log, "faultgate: worker %u carried %u connection(s)\n", i + 1, w->carried);
    }
    if (p->workers_left)
        return;
    for (unsigned i = 0; i < p->nworkers; i++) {
        struct fg_proxy *w = p->workers[i];
        if (!w)
            continue;
        /* Keep what the getters report once the workers are gone. */
        p->open += w->open;
        p->tls_sessions += w->tls_sessions;
        p->peak = w->peak > p->peak ? w->peak : p->peak;
        p->bytes[0] += w->bytes[0];
        p->bytes[1] += w->bytes[1];
        worker_free(w);
        p->workers[i] = NULL;
    }
    if (p->closing && !uv_is_closing((uv_handle_t *)&p->wake)) {
        uv_close((uv_handle_t *)&p->listener, proxy_handle_closed);
        uv_close((uv_handle_t *)&p->wake, proxy_handle_closed);
    }
}

/* A worker: its own loop, sharing the parent's settings; its thread is
 * started once every worker exists (threads_start). */
static int worker_new(struct fg_proxy *p, unsigned i)
{
    struct fg_proxy *w = fg_calloc(1, sizeof *w);
    w->parent = p;
    w->loop = fg_malloc(sizeof *w->loop);
    w->faults = p->faults;
    w->capture = p->capture;
    w->log = p->log;
    w->high_water = p->high_water;
    w->up_addr = p->up_addr;
    w->tls_terminate = p->tls_terminate;
    w->tls_srv = p->tls_srv;
    w->tls_cli = p->tls_cli;
    w->fault_mu = p->fault_mu;
    w->busy_poll_us = p->busy_poll_us;
    int rc = uv_loop_init(w->loop);
    if (rc == 0 && (rc = uv_mutex_init(&w->mu)) != 0)
        uv_loop_close(w->loop);
    if (rc != 0) {
        free(w->loop);
        free(w);
        return rc;
    }
    uv_async_init(w->loop, &w->wake, worker_wake);
    w->wake.data = w;
    uv_timer_init(w->loop, &w->watch);
    w->watch.data = w;
    uv_poll_init_socket(w->loop, &w->acceptor, p->lfd);
    w->acceptor.data = w;
    w->handles = 3;
    p->workers[i] = w;
    return uv_poll_start(&w->acceptor, UV_READABLE, on_acceptable);
}

/* A worker whose thread never started: close its handles on its own loop. */
static void worker_discard(struct fg_proxy *w)
{
    uv_close((uv_handle_t *)&w->wake, NULL);
    uv_close((uv_handle_t *)&w->watch, NULL);
    uv_close((uv_handle_t *)&w->acceptor, NULL);
    uv_run(w->loop, UV_RUN_DEFAULT);
    uv_loop_close(w->loop);
    worker_free(w);
}

/* --- the proxy ---------------------------------------------------------- */

static int addr_parse(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (!host || port < 0 || port > 65535)
        return UV_EINVAL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
}

static void proxy_handle_closed(uv_handle_t *h)
{
    struct fg_proxy *p = h->data;
    p->handles--;
    proxy_maybe_done(p);
}

/* The parent's side of threads: listen(2) on the bound socket (the
 * listener handle keeps it, but libuv never watches it), then the workers,
 * each polling it in its own loop. */
static int threads_start(struct fg_proxy *p, unsigned n)
{
    int rc;
    if (n > 64)
        n = 64;
    if ((rc = uv_fileno((uv_handle_t *)&p->listener, &p->lfd)) != 0)
        return rc;
    if (listen(p->lfd, 511) != 0)
        return uv_translate_sys_error(errno);
    if ((rc = uv_mutex_init(&p->fault_mu_own)) != 0)
        return rc;
    p->fault_mu = &p->fault_mu_own;
    if ((rc = uv_mutex_init(&p->mu)) != 0)
        return rc;
    p->mu_ok = 1;
    uv_async_init(p->loop, &p->wake, parent_wake);
    p->wake.data = p;
    p->handles++;
    p->workers = fg_calloc(n, sizeof *p->workers);
    p->nworkers = n;
    /* Every worker exists before the first thread runs, and none is freed
     * before the last has ended: least_loaded reads them all.  Those whose
     * thread is not running are beyond nlive, where no worker looks. */
    unsigned made = 0;
    for (; made < n && rc == 0; made++)
        rc = worker_new(p, made);
    unsigned run = 0;
    for (; rc == 0 && run < n; run++) {
        if ((rc = uv_thread_create(&p->workers[run]->thread, worker_main, p->workers[run])) != 0)
            break;
        p->workers_left++;
        __atomic_store_n(&p->nlive, run + 1, __ATOMIC_RELEASE);
    }
    for (unsigned i = run; i < n; i++) {
        if (p->workers[i])
            worker_discard(p->workers[i]);
        p->workers[i] = NULL;
    }
    return rc;
}

int fg_proxy_new(uv_loop_t *loop, const struct fg_proxy_opts *o, struct fg_proxy **out, char *err,
                 size_t errlen)
{
    struct sockaddr_storage la, ua;
    *out = NULL;
    if (addr_parse(o->listen_host, o->listen_port, &la) != 0)
        return fg_errf(err, errlen, FG_EINPUT, "bad listen address '%s' port %d",
                       o->listen_host ? o->listen_host : "(none)", o->listen_port);
    if (addr_parse(o->upstream_host, o->upstream_port, &ua) != 0 || o->upstream_port == 0)
        return fg_errf(err, errlen, FG_EINPUT, "bad upstream address '%s' port %d",
                       o->upstream_host ? o->upstream_host : "(none)", o->upstream_port);
    struct fg_proxy *p = fg_calloc(1, sizeof *p);
    p->loop = loop;
    p->faults = o->faults;
    p->capture = o->capture;
    p->log = o->log;
    p->high_water = o->high_water ? o->high_water : 256 * 1024;
    p->busy_poll_us = o->busy_poll_us;
    p->up_addr = ua;
    if (o->tls_terminate) {
        int trc;
        p->tls_terminate = 1;
        p->tls_hostname = fg_strdup(o->tls_hostname ? o->tls_hostname : "mta.faultgate.test");
        if ((trc = fg_tls_server_ctx_new(p->tls_hostname, &p->tls_srv, err, errlen)) < 0 ||
            (trc = fg_tls_client_ctx_new(o->tls_upstream_ca, &p->tls_cli, err, errlen)) < 0) {
            fg_tls_ctx_free(p->tls_srv);
            free(p->tls_hostname);
            free(p);
            return trc;
        }
    }
    uv_tcp_init(loop, &p->listener);
    p->listener.data = p;
    uv_timer_init(loop, &p->watch);
    p->watch.data = p;
    p->handles = 2;
    int rc = uv_tcp_bind(&p->listener, (struct sockaddr *)&la, 0);
    /* Replies and commands go out as they come: no Nagle delay behind an
     * unacknowledged segment, on either leg. */
    if (rc == 0)
        rc = uv_tcp_nodelay(&p->listener, 1);
    if (rc == 0 && o->threads > 1)
        rc = threads_start(p, o->threads);
    else if (rc == 0)
        rc = uv_listen((uv_stream_t *)&p->listener, 128, on_connection);
    struct sockaddr_storage bound;
    int bl = sizeof bound;
    if (rc == 0)
        rc = uv_tcp_getsockname(&p->listener, (struct sockaddr *)&bound, &bl);
    if (rc != 0) {
        fg_errf(err, errlen, rc, "listen on %s port %d: %s", o->listen_host, o->listen_port,
                uv_strerror(rc));
        fg_proxy_close(p, NULL, NULL);
        return rc;
    }
    *out = p;
    return 0;
}

int fg_proxy_port(const struct fg_proxy *p)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(&p->listener, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

unsigned fg_proxy_accepted(const struct fg_proxy *p)
{
    return __atomic_load_n(&p->accepted, __ATOMIC_RELAXED);
}

/* With workers the parent's own counters hold what ended workers left;
 * a running worker's are added in. */
static uint64_t sum_u(const struct fg_proxy *p, size_t field_off, int is64)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < p->nworkers; i++) {
        const char *w = (const char *)p->workers[i];
        if (!w)
            continue;
        if (is64)
            n += __atomic_load_n((const uint64_t *)(const void *)(w + field_off), __ATOMIC_RELAXED);
        else
            n += __atomic_load_n((const unsigned *)(const void *)(w + field_off), __ATOMIC_RELAXED);
    }
    return n;
}

unsigned fg_proxy_open(const struct fg_proxy *p)
{
    return p->open + (unsigned)sum_u(p, offsetof(struct fg_proxy, open), 0);
}

unsigned fg_proxy_stalled_open(const struct fg_proxy *p)
{
    if (p->nworkers) /* as of each worker's last 50 ms watch */
        return (unsigned)sum_u(p, offsetof(struct fg_proxy, stalled_seen), 0);
    unsigned n = 0;
    for (const struct conn *c = p->conns; c; c = c->next)
        n += !c->dead && c->stalled && !c->client_gone;
    return n;
}

const char *fg_proxy_tls_ca_pem(const struct fg_proxy *p)
{
    return p->tls_srv ? fg_tls_ca_pem(p->tls_srv) : NULL;
}

unsigned fg_proxy_tls_sessions(const struct fg_proxy *p)
{
    return p->tls_sessions + (unsigned)sum_u(p, offsetof(struct fg_proxy, tls_sessions), 0);
}

size_t fg_proxy_peak_buffered(const struct fg_proxy *p)
{
    size_t m = p->peak;
    for (unsigned i = 0; i < p->nworkers; i++) {
        size_t v = p->workers[i] ? __atomic_load_n(&p->workers[i]->peak, __ATOMIC_RELAXED) : 0;
        m = v > m ? v : m;
    }
    return m;
}

uint64_t fg_proxy_bytes(const struct fg_proxy *p, enum fg_dir dir)
{
    return p->bytes[dir] + sum_u(p, offsetof(struct fg_proxy, bytes) + dir * sizeof(uint64_t), 1);
}

void fg_proxy_close(struct fg_proxy *p, void (*cb)(void *ud), void *ud)
{
    if (p->closing)
        return;
    p->closing = 1;
    p->close_cb = cb;
    p->close_ud = ud;
    if (p->parent) { /* a worker: its handles, then its connections */
        uv_close((uv_handle_t *)&p->wake, proxy_handle_closed);
        uv_close((uv_handle_t *)&p->watch, proxy_handle_closed);
        for (struct conn *c = p->conns; c; c = c->next)
            if (!c->dead)
                conn_kill(c);
        return;
    }
    /* Workers poll the listening socket: it closes after they end. */
    if (!p->workers_left)
        uv_close((uv_handle_t *)&p->listener, proxy_handle_closed);
    uv_close((uv_handle_t *)&p->watch, proxy_handle_closed);
    for (unsigned i = 0; i < p->nworkers; i++) {
        struct fg_proxy *w = p->workers[i];
        if (!w)
            continue;
        uv_mutex_lock(&w->mu);
        w->stop = 1;
        uv_mutex_unlock(&w->mu);
        uv_async_send(&w->wake);
    }
    if (p->wake.data && !p->workers_left)
        uv_close((uv_handle_t *)&p->wake, proxy_handle_closed);
    for (struct conn *c = p->conns; c; c = c->next)
        if (!c->dead)
            conn_kill(c);
}
