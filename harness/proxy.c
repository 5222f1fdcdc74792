/* proxy.c - the fault-injecting SMTP proxy (faultgate/proxy.h).
 *
 * Accepts connections, connects each to the upstream, and forwards bytes
 * byte-exact both ways with bounded buffering.  Each direction's bytes go
 * through the connection's SMTP parser before they are forwarded; when an
 * event fires a fault the feed stops at the event's end, so the action can
 * take effect exactly there and nothing after the trigger point leaks.
 * Every leg is reported to the capture, and every decision to the log.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "faultgate/error.h"
#include "faultgate/proxy.h"
#include "faultgate/util.h"

#define CHUNK_SIZE 65536
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
    size_t len, off; /* off: bytes already forwarded or dropped */
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
};

struct flow {
    struct chunk *head, *tail;
    size_t held;    /* queued bytes not consumed yet */
    size_t noparse; /* bytes at the queue head the parser has already seen */
    int eof;        /* the source sent FIN */
    int done;       /* a close fault ended this direction: discard */
    int stalled;
    int delayed;
    int bp; /* over the high-water mark */
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
    uv_timer_t delay_timer;
    int timer_closed;
    unsigned handles; /* initialised and not yet closed-and-called-back */
    int connected;
    int dead;        /* closing everything */
    int stalled;     /* a stall fault acts */
    int client_gone; /* the client closed while stalled */
    int reset_pending;
    int connect_fault; /* fault fired at accept, applied once connected */
    int parse;
    struct fg_smtp_parser parser;
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
    int closing;
    void (*close_cb)(void *ud);
    void *close_ud;
};

static void pump(struct conn *c, int d);
static void conn_kill(struct conn *c);
static void update_reading(struct conn *c, int d);

/* --- chunks ------------------------------------------------------------- */

static void chunk_unref(struct chunk *ch)
{
    if (--ch->refs == 0)
        free(ch);
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

static size_t wq(struct conn *c, int side)
{
    return c->s[side].closed ? 0 : uv_stream_get_write_queue_size((uv_stream_t *)&c->s[side].tcp);
}

static void note_buffered(struct conn *c)
{
    size_t b = c->f[0].held + c->f[1].held + wq(c, CLI) + wq(c, UPS);
    if (b > c->p->peak)
        c->p->peak = b;
}

/* --- closing ------------------------------------------------------------ */

static void proxy_maybe_done(struct fg_proxy *p)
{
    if (!p->closing || p->handles || p->conns)
        return;
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
    fg_capture_conn_free(c->s[CLI].sc);
    fg_capture_conn_free(c->s[UPS].sc);
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
        c->p->open--;
    }
    for (int side = CLI; side <= UPS; side++) {
        struct side *s = &c->s[side];
        if (s->closed)
            continue;
        int d = TOWARD(side);
        if (c->connected || side == CLI) {
            if (unread(c, side))
                fg_capture_conn_rst(s->sc, d);
            else if (!c->f[d].fin_relayed)
                fg_capture_conn_fin(s->sc, d);
        }
        side_close(c, side, 0);
    }
    if (!c->timer_closed) {
        c->timer_closed = 1;
        uv_close((uv_handle_t *)&c->delay_timer, conn_handle_closed);
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
    c->s[bad_side].closed = 1;
    uv_close((uv_handle_t *)&c->s[bad_side].tcp, conn_handle_closed);
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
        c->p->bytes[TOWARD(side)] += w->buf.len;
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
    update_reading(c, FG_C2S);
    update_reading(c, FG_S2C);
}

static void write_slice(struct conn *c, int side, struct chunk *ch, size_t off, size_t len,
                        int injected)
{
    if (!len || c->dead || c->s[side].closed)
        return;
    struct wreq *w = fg_calloc(1, sizeof *w);
    w->c = c;
    w->ch = ch;
    w->side = side;
    w->injected = injected;
    w->buf = uv_buf_init(ch->data + off, (unsigned)len);
    ch->refs++;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->s[side].tcp, &w->buf, 1, on_write);
    if (rc != 0) {
        chunk_unref(ch);
        free(w);
        conn_abort(c, side);
        return;
    }
    note_buffered(c);
}

static void forward(struct conn *c, int d, struct chunk *ch, size_t off, size_t len)
{
    if (!c->f[d].done)
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

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct chunk *ch = fg_malloc(sizeof *ch + CHUNK_SIZE);
    memset(ch, 0, sizeof *ch);
    ch->refs = 1;
    *buf = uv_buf_init(ch->data, CHUNK_SIZE);
}

static struct chunk *buf_chunk(const uv_buf_t *buf)
{
    return buf->base ? (struct chunk *)(void *)(buf->base - offsetof(struct chunk, data)) : NULL;
}

static void client_gone(struct conn *c, int rst);

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    int side = stream == (uv_stream_t *)&c->s[CLI].tcp ? CLI : UPS;
    int d = FROM(side);
    struct flow *f = &c->f[d];
    struct chunk *ch = buf_chunk(buf);

    if (nread > 0 && !c->dead) {
        ch->len = (size_t)nread;
        fg_capture_conn_data(c->s[side].sc, d, ch->data, ch->len);
        if (f->done) {
            chunk_unref(ch);
            return;
        }
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
               !f->bp && !c->reset_pending;
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
        return 0;
    }
}

static int on_event(void *ud, const struct fg_smtp_event *ev)
{
    struct conn *c = ud;
    if (c->injecting)
        return 0;
    switch (ev->type) {
    case FG_SMTP_EV_COMMAND:
    case FG_SMTP_EV_REPLY:
    case FG_SMTP_EV_END_OF_DATA:
    case FG_SMTP_EV_BDAT_END:
        break;
    default:
        return 0;
    }
    if (ev->type == FG_SMTP_EV_REPLY) {
        for (unsigned k = 0; k < c->ninj; k++)
            if (c->inj[k].wait > 0 && --c->inj[k].wait == 0)
                c->inject_due = 1;
    }
    int i = fg_fault_set_match(c->p->faults, &c->fc, ev, 0);
    if (i < 0)
        return c->inject_due;
    c->hit = i;
    c->hit_evlen = event_len(ev);
    /* The parser has already queued this command (or end of data) among
     * those awaiting a reply; before the greeting, that is owed first. */
    c->hit_wait = c->parser.pend_len + (c->parser.greeted ? 0 : 1);
    log_decision(c);
    return 1;
}

static void start_watch(struct fg_proxy *p);

static int dir_has(enum fg_fault_dir fd, int d)
{
    return fd == FG_FDIR_DEFAULT || fd == FG_FDIR_BOTH || (d == FG_C2S) == (fd == FG_FDIR_C2S);
}

static void act_stall(struct conn *c, enum fg_fault_dir fd)
{
    for (int d = FG_C2S; d <= FG_S2C; d++)
        if (dir_has(fd, d)) {
            c->f[d].stalled = 1;
            update_reading(c, d);
        }
    c->stalled = 1;
    start_watch(c->p);
}

static void act_close(struct conn *c, enum fg_fault_dir fd)
{
    for (int d = FG_C2S; d <= FG_S2C && !c->dead; d++) {
        if (!dir_has(fd, d))
            continue;
        struct flow *f = &c->f[d];
        f->done = 1;
        flow_drop(f);
        update_reading(c, d);
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

static void on_delay(uv_timer_t *t)
{
    struct conn *c = t->data;
    for (int d = FG_C2S; d <= FG_S2C && !c->dead; d++) {
        if (!c->f[d].delayed)
            continue;
        c->f[d].delayed = 0;
        pump(c, d);
        if (!c->dead)
            update_reading(c, d);
    }
}

static void act_delay(struct conn *c, int d, uint64_t ms)
{
    if (d < 0) {
        c->f[FG_C2S].delayed = c->f[FG_S2C].delayed = 1;
    } else {
        c->f[d].delayed = 1;
    }
    uv_timer_start(&c->delay_timer, on_delay, ms, 0);
}

/* The reply is sent as if from the server: the parser sees it on the
 * server's side so that it keeps matching replies to commands. */
static void feed_injected(struct conn *c, const char *text)
{
    if (!c->parse)
        return;
    c->injecting = 1;
    fg_smtp_parser_feed(&c->parser, FG_S2C, text, strlen(text));
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

/* Fault i fired on an event of direction d ending n bytes into the head
 * chunk (past its consumed part). */
static void apply(struct conn *c, int d, struct chunk *ch, size_t n, int i)
{
    const struct fg_fault *f = fault_at(c, i);
    size_t off = ch->off, end = off + n;
    size_t evstart = end - (c->hit_evlen < n ? c->hit_evlen : n);

    switch (f->action) {
    case FG_ACT_STALL:
        forward(c, d, ch, off, n);
        ch->off = end;
        act_stall(c, f->dir);
        break;
    case FG_ACT_CLOSE:
        forward(c, d, ch, off, n);
        ch->off = end;
        act_close(c, f->dir);
        break;
    case FG_ACT_RESET:
        forward(c, d, ch, off, n);
        ch->off = end;
        act_reset(c);
        break;
    case FG_ACT_REPLY:
        if (d == FG_S2C) {
            /* Before the server's reply, or instead of it. */
            forward(c, d, ch, off, evstart - off);
            inject(c, f->reply_text);
            if (!f->replace)
                forward(c, d, ch, evstart, end - evstart);
        } else if (f->replace) {
            /* The client's bytes go no further; the proxy answers in the
             * place the server's reply would have taken. */
            forward(c, d, ch, off, evstart - off);
            owe_reply(c, i, c->hit_wait ? c->hit_wait - 1 : 0);
        } else {
            /* An extra reply, right after the server's reply to it. */
            forward(c, d, ch, off, n);
            owe_reply(c, i, c->hit_wait);
        }
        ch->off = end;
        break;
    case FG_ACT_DELAY:
        forward(c, d, ch, off, evstart - off);
        ch->off = evstart;
        c->f[d].noparse = end - evstart;
        act_delay(c, d, f->delay_ms);
        break;
    default:
        forward(c, d, ch, off, n);
        ch->off = end;
        break;
    }
}

static void apply_connect_fault(struct conn *c)
{
    const struct fg_fault *f = fault_at(c, c->connect_fault);
    switch (f->action) {
    case FG_ACT_STALL:
        act_stall(c, f->dir);
        break;
    case FG_ACT_CLOSE:
        act_close(c, f->dir);
        break;
    case FG_ACT_RESET:
        act_reset(c);
        break;
    case FG_ACT_REPLY:
        inject(c, f->reply_text);
        break;
    case FG_ACT_DELAY:
        act_delay(c, -1, f->delay_ms);
        break;
    default:
        break;
    }
}

/* --- the forwarding loop ------------------------------------------------ */

static void pump(struct conn *c, int d)
{
    struct flow *f = &c->f[d];
    while (!c->dead && !f->stalled && !f->delayed && !f->done && !c->reset_pending) {
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
        if (f->noparse) {
            /* Already parsed before a delay: forward without a second look. */
            size_t n = f->noparse < avail ? f->noparse : avail;
            forward(c, d, ch, ch->off, n);
            ch->off += n;
            f->held -= n;
            f->noparse -= n;
            continue;
        }
        if (!c->parse) {
            forward(c, d, ch, ch->off, avail);
            ch->off += avail;
            f->held -= avail;
            continue;
        }
        c->hit = -1;
        size_t n = fg_smtp_parser_feed(&c->parser, (enum fg_dir)d, ch->data + ch->off, avail);
        if (c->hit < 0) {
            forward(c, d, ch, ch->off, n);
            ch->off += n;
            f->held -= n;
            if (c->inject_due)
                inject_due(c);
            continue;
        }
        /* The action may drop the queue (close, reset): keep ch alive to
         * account for what it consumed. */
        size_t before = ch->off;
        ch->refs++;
        apply(c, d, ch, n, c->hit);
        size_t used = ch->off - before;
        int still_queued = !c->dead && f->head == ch;
        chunk_unref(ch);
        if (still_queued)
            f->held -= used;
        if (c->inject_due && !c->dead)
            inject_due(c);
    }
    if (c->dead)
        return;
    if (f->eof && !f->head && !f->stalled && !f->delayed && !c->reset_pending)
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
    if (uv_tcp_getsockname(&c->s[UPS].tcp, (struct sockaddr *)&a, &al) == 0 &&
        uv_tcp_getpeername(&c->s[UPS].tcp, (struct sockaddr *)&b, &bl) == 0)
        c->s[UPS].sc =
            fg_capture_conn_open(c->p->capture, (struct sockaddr *)&a, (struct sockaddr *)&b);
    uv_tcp_nodelay(&c->s[UPS].tcp, 1);
    if (c->connect_fault >= 0)
        apply_connect_fault(c);
    if (!c->dead) {
        update_reading(c, FG_C2S);
        update_reading(c, FG_S2C);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct fg_proxy *p = server->data;
    if (status < 0 || p->closing)
        return;
    struct conn *c = fg_calloc(1, sizeof *c);
    c->p = p;
    c->hit = -1;
    c->connect_fault = -1;
    uv_tcp_init(p->loop, &c->s[CLI].tcp);
    c->s[CLI].tcp.data = c;
    c->handles = 1;
    if (uv_accept(server, (uv_stream_t *)&c->s[CLI].tcp) != 0) {
        c->dead = 1;
        c->s[CLI].closed = 1;
        c->s[UPS].closed = 1;
        c->timer_closed = 1;
        c->next = p->conns;
        if (p->conns)
            p->conns->prev = c;
        p->conns = c;
        uv_close((uv_handle_t *)&c->s[CLI].tcp, conn_handle_closed);
        return;
    }
    uv_tcp_init(p->loop, &c->s[UPS].tcp);
    c->s[UPS].tcp.data = c;
    uv_timer_init(p->loop, &c->delay_timer);
    c->delay_timer.data = c;
    c->handles = 3;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    c->id = ++p->accepted;
    p->open++;
    c->t0_us = fg_wall_us();
    uv_tcp_nodelay(&c->s[CLI].tcp, 1);

    struct sockaddr_storage peer, local;
    int pl = sizeof peer, ll = sizeof local;
    if (uv_tcp_getpeername(&c->s[CLI].tcp, (struct sockaddr *)&peer, &pl) == 0 &&
        uv_tcp_getsockname(&c->s[CLI].tcp, (struct sockaddr *)&local, &ll) == 0)
        c->s[CLI].sc =
            fg_capture_conn_open(p->capture, (struct sockaddr *)&peer, (struct sockaddr *)&local);

    c->fc.conn = c->id;
    if (p->faults && p->faults->n) {
        c->parse = 1;
        fg_smtp_parser_init(&c->parser, on_event, c);
        c->connect_fault = fg_fault_set_match(p->faults, &c->fc, NULL, 0);
        if (c->connect_fault >= 0)
            log_decision(c);
    }
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->s[UPS].tcp, (struct sockaddr *)&p->up_addr, on_connect);
    if (rc != 0) {
        if (p->log)
            fprintf(p->log, "faultgate: conn #%u upstream: %s\n", c->id, uv_strerror(rc));
        side_close(c, CLI, 1);
        conn_kill(c);
    }
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
    p->up_addr = ua;
    uv_tcp_init(loop, &p->listener);
    p->listener.data = p;
    uv_timer_init(loop, &p->watch);
    p->watch.data = p;
    p->handles = 2;
    int rc = uv_tcp_bind(&p->listener, (struct sockaddr *)&la, 0);
    if (rc == 0)
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
    return p->accepted;
}

unsigned fg_proxy_open(const struct fg_proxy *p)
{
    return p->open;
}

unsigned fg_proxy_stalled_open(const struct fg_proxy *p)
{
    unsigned n = 0;
    for (const struct conn *c = p->conns; c; c = c->next)
        n += !c->dead && c->stalled && !c->client_gone;
    return n;
}

size_t fg_proxy_peak_buffered(const struct fg_proxy *p)
{
    return p->peak;
}

uint64_t fg_proxy_bytes(const struct fg_proxy *p, enum fg_dir dir)
{
    return p->bytes[dir];
}

void fg_proxy_close(struct fg_proxy *p, void (*cb)(void *ud), void *ud)
{
    if (p->closing)
        return;
    p->closing = 1;
    p->close_cb = cb;
    p->close_ud = ud;
    uv_close((uv_handle_t *)&p->listener, proxy_handle_closed);
    uv_close((uv_handle_t *)&p->watch, proxy_handle_closed);
    for (struct conn *c = p->conns; c; c = c->next)
        if (!c->dead)
            conn_kill(c);
}
