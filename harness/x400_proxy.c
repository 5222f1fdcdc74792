/* x400_proxy.c - the fault-injecting X.400 proxy (faultgate/x400_proxy.h):
 * RFC 1006 framing both ways, the shared decoder of x400.c on each
 * direction, TSDU-at-a-time forwarding, and the X.400 faults (AB, DR, ER,
 * RST, FIN, stall, serial-number rewrite) of x400-wire.md §7.
 *
 * Side 0 is the gateway (accepted here), side 1 the fake X.400 MTA
 * (connected from here).  What side k sends travels in direction k
 * (FG_C2S = 0, FG_S2C = 1) and is written to side 1 - k.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/util.h"
#include "faultgate/x400_proxy.h"

struct pconn;

struct side {
    uv_tcp_t tcp;
    int inited, closing, eof, shut;
    unsigned pending; /* writes to this side not yet completed */
    uint8_t *in;      /* octets read from this side, not framed yet */
    size_t in_len, in_cap;
    int raw;                  /* not RFC 1006: forwarded as is */
    struct fg_x400_dec dec;   /* decodes what this side sends */
    struct fg_x400_buf held;  /* DT TPKTs of this side's unfinished TSDU */
    struct fg_synth_conn *sc; /* the capture of this leg */
    uv_shutdown_t sreq;
};

struct rewrite {
    unsigned index; /* the SPDU's place in its TSDU */
    uint32_t serial;
};

struct pconn {
    struct fg_x400_proxy *p;
    struct pconn *next;
    unsigned id;
    struct side s[2];
    uv_connect_t creq;
    int handles_open;
    int ending;        /* an action or a close ended forwarding */
    int stalled;       /* forward nothing; close both once one side goes */
    int reset_pending; /* RST both once the pending writes completed */
    uint16_t ref[2];   /* X.224 source references: the gateway's (CR), the MTA's (CC) */
    size_t tpdu_size;  /* negotiated (CC's C0, else CR's, else 128) */
    /* engine */
    uint64_t fired;
    struct fg_rng rng;
    int rng_ready;
    uint64_t ntpkt[3]; /* both directions, c2s, s2c */
    unsigned nspdu[FG_SPDU_COUNT][3];
    unsigned nact_start, nact_end;
    /* the TPKT being processed */
    int dir;
    int is_dt, eot;
    int term; /* fault index of the action to take, -1 */
    struct rewrite rw[8];
    size_t nrw;
};

struct fg_x400_proxy {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int listener_open;
    struct fg_x400_proxy_opts o;
    char up_host[64];
    struct sockaddr_storage up_addr;
    struct pconn *conns;
    unsigned accepted, open;
    int closing;
    void (*close_cb)(void *ud);
    void *close_ud;
    uint8_t rbuf[65536];
};

struct xwrite {
    uv_write_t req;
    struct pconn *c;
    int side;
    uint8_t data[];
};

static void conn_end(struct pconn *c);
static void side_close(struct pconn *c, int k);
static void process(struct pconn *c, int k);

/* --- closing -------------------------------------------------------------------- */

static void maybe_done(struct fg_x400_proxy *p)
{
    if (!p->closing || p->listener_open || p->conns)
        return;
    void (*cb)(void *) = p->close_cb;
    void *ud = p->close_ud;
    free(p);
    if (cb)
        cb(ud);
}

static void conn_free(struct pconn *c)
{
    struct fg_x400_proxy *p = c->p;
    for (struct pconn **pp = &p->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    for (int k = 0; k < 2; k++) {
        fg_x400_dec_free(&c->s[k].dec);
        fg_x400_buf_free(&c->s[k].held);
        free(c->s[k].in);
        fg_capture_conn_free(c->s[k].sc);
    }
    p->open--;
    free(c);
    maybe_done(p);
}

static void side_closed(uv_handle_t *h)
{
    struct pconn *c = h->data;
    if (--c->handles_open == 0)
        conn_free(c);
}

static void side_close(struct pconn *c, int k)
{
    struct side *s = &c->s[k];
    if (!s->inited || s->closing)
        return;
    s->closing = 1;
    uv_close((uv_handle_t *)&s->tcp, side_closed);
}

/* RST towards side k (the proxy's own abortive close of that leg). */
static void side_reset(struct pconn *c, int k)
{
    struct side *s = &c->s[k];
    if (!s->inited || s->closing)
        return;
    s->closing = 1;
    fg_capture_conn_rst(s->sc, k == 0 ? FG_S2C : FG_C2S);
    if (uv_tcp_close_reset(&s->tcp, side_closed) != 0)
        uv_close((uv_handle_t *)&s->tcp, side_closed);
}

static void maybe_reset(struct pconn *c)
{
    if (c->reset_pending && c->s[0].pending == 0 && c->s[1].pending == 0) {
        c->reset_pending = 0;
        side_reset(c, 0);
        side_reset(c, 1);
    }
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    struct pconn *c = req->data;
    (void)status;
    int k = req == &c->s[0].sreq ? 0 : 1;
    /* FIN sent.  Once the side's own FIN came too, or forwarding ended,
     * the leg is done. */
    if (c->ending || c->s[k].eof)
        side_close(c, k);
}

/* FIN towards side k once its pending writes are out. */
static void side_fin(struct pconn *c, int k)
{
    struct side *s = &c->s[k];
    if (!s->inited || s->closing || s->shut)
        return;
    s->shut = 1;
    s->sreq.data = c;
    fg_capture_conn_fin(s->sc, k == 0 ? FG_S2C : FG_C2S);
    if (uv_shutdown(&s->sreq, (uv_stream_t *)&s->tcp, shutdown_cb) != 0)
        side_close(c, k);
}

/* End the connection with FIN both ways. */
static void conn_end(struct pconn *c)
{
    c->ending = 1;
    side_fin(c, 0);
    side_fin(c, 1);
}

/* --- writing ------------------------------------------------------------------- */

static void write_cb(uv_write_t *req, int status)
{
    struct xwrite *w = (struct xwrite *)req;
    struct pconn *c = w->c;
    (void)status;
    c->s[w->side].pending--;
    free(w);
    maybe_reset(c);
}

static void side_write(struct pconn *c, int k, const uint8_t *p, size_t n)
{
    struct side *s = &c->s[k];
    if (!n || !s->inited || s->closing || s->shut)
        return;
    struct xwrite *w = fg_malloc(sizeof *w + n);
    w->c = c;
    w->side = k;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, write_cb) != 0) {
        free(w);
        return;
    }
    s->pending++;
    fg_capture_conn_data(s->sc, k == 0 ? FG_S2C : FG_C2S, p, n);
}

/* --- the engine ------------------------------------------------------------------ */

static int selector_matches(const struct fg_x400_fault *f, unsigned conn)
{
    switch (f->sel) {
    case FG_SEL_EVERY:
        return 1;
    case FG_SEL_FIRST:
        return conn == 1;
    case FG_SEL_NTH:
        return conn == f->conn_n;
    case FG_SEL_FROM:
        return conn >= f->conn_n;
    }
    return 0;
}

static uint32_t new_serial(const struct fg_x400_fault *f, const struct fg_spdu *sp)
{
    uint32_t old = sp && sp->serial_ok ? sp->serial : 0;
    switch (f->rw) {
    case FG_X4F_RW_ADD:
        return old + f->rw_val;
    case FG_X4F_RW_SUB:
        return old > f->rw_val ? old - f->rw_val : 0;
    default:
        return f->rw_val;
    }
}

/* Selectors, once/each and the draw (as fault.c decides, with the same
 * per-connection stream); on a hit the decision is logged. */
static int decide(struct pconn *c, size_t i, const char *evtext, const struct fg_spdu *sp)
{
    struct fg_x400_fault_set *fs = c->p->o.faults;
    const struct fg_x400_fault *f = &fs->faults[i];
    uint64_t bit = (uint64_t)1 << i;
    if (!selector_matches(f, c->id) || (!f->each && (c->fired & bit)) || f->prob <= 0.0)
        return 0;
    if (f->prob < 1.0) {
        if (!c->rng_ready) {
            struct fg_rng mix;
            fg_rng_seed(&mix, fs->seed ^ ((uint64_t)c->id * 0xD1B54A32D192ED03ULL));
            fg_rng_seed(&c->rng, fg_rng_next(&mix));
            c->rng_ready = 1;
        }
        if (fg_rng_unit(&c->rng) >= f->prob)
            return 0;
    }
    c->fired |= bit;
    struct fg_decision *d = FG_ARRAY_PUSH(fs->log, fs->nlog, fs->caplog);
    memset(d, 0, sizeof *d);
    d->t_us = fg_wall_us();
    d->conn = c->id;
    d->fault = (unsigned)i;
    snprintf(d->trigger, sizeof d->trigger, "%s", evtext);
    const char *colon = f->spec ? strstr(f->spec, ": ") : NULL;
    const char *act = colon ? colon + 2 : "?";
    if (f->action == FG_X4F_REWRITE_SERIAL) {
        char old[24] = "?";
        if (sp && sp->serial_ok)
            snprintf(old, sizeof old, "%u", (unsigned)sp->serial);
        snprintf(d->action, sizeof d->action, "x400 %s (%s serial %s -> %u)", act,
                 sp ? fg_spdu_name(sp->type) : "?", old, (unsigned)new_serial(f, sp));
    } else {
        snprintf(d->action, sizeof d->action, "x400 %s", act);
    }
    if (c->p->o.log)
        fprintf(c->p->o.log, "faultgate: x400 conn #%u %s -> %s\n", c->id, d->trigger, d->action);
    return 1;
}

static void consider(struct pconn *c, size_t i, const char *evtext, const struct fg_spdu *sp)
{
    const struct fg_x400_fault *f = &c->p->o.faults->faults[i];
    if (f->action == FG_X4F_REWRITE_SERIAL) {
        if (!sp || c->nrw >= sizeof c->rw / sizeof c->rw[0] || c->term >= 0)
            return;
    } else if (c->term >= 0) {
        return;
    }
    if (!decide(c, i, evtext, sp))
        return;
    if (f->action == FG_X4F_REWRITE_SERIAL)
        c->rw[c->nrw++] = (struct rewrite){sp->index, new_serial(f, sp)};
    else
        c->term = (int)i;
}

static int dir_ok(const struct fg_x400_fault *f, int dir)
{
    return f->dir == FG_X4F_ANY || (f->dir == FG_X4F_C2S) == (dir == FG_C2S);
}

static void match_tpkt(struct pconn *c)
{
    struct fg_x400_fault_set *fs = c->p->o.faults;
    int dk = 1 + c->dir;
    char t[64];
    for (size_t i = 0; fs && i < fs->n; i++) {
        const struct fg_x400_fault *f = &fs->faults[i];
        if (f->trig != FG_X4F_TPKT || !dir_ok(f, c->dir))
            continue;
        if (f->tpkt_n != c->ntpkt[f->dir == FG_X4F_ANY ? 0 : dk])
            continue;
        snprintf(t, sizeof t, "tpkt %s %llu", c->dir == FG_C2S ? "c2s" : "s2c",
                 (unsigned long long)c->ntpkt[dk]);
        consider(c, i, t, NULL);
    }
}

static void match_spdu(struct pconn *c, const struct fg_spdu *sp)
{
    struct fg_x400_fault_set *fs = c->p->o.faults;
    int dk = 1 + c->dir;
    char t[96], sn[40] = "";
    if ((sp->has & FG_SP_SERIAL) && sp->serial_ok)
        snprintf(sn, sizeof sn, " serial %u", (unsigned)sp->serial);
    for (size_t i = 0; fs && i < fs->n; i++) {
        const struct fg_x400_fault *f = &fs->faults[i];
        switch (f->trig) {
        case FG_X4F_SPDU:
            if (f->spdu != sp->type || !dir_ok(f, c->dir))
                continue;
            if (f->seq && f->seq != c->nspdu[sp->type][f->dir == FG_X4F_ANY ? 0 : dk])
                continue;
            if (f->has_serial && !(sp->serial_ok && sp->serial == f->serial))
                continue;
            snprintf(t, sizeof t, "spdu %s %s #%u%s", fg_spdu_name(sp->type),
                     c->dir == FG_C2S ? "c2s" : "s2c", c->nspdu[sp->type][dk], sn);
            break;
        case FG_X4F_ACT_START:
            if (sp->type != FG_SPDU_AS || (f->seq && f->seq != c->nact_start))
                continue;
            snprintf(t, sizeof t, "activity-start #%u", c->nact_start);
            break;
        case FG_X4F_ACT_END:
            if (sp->type != FG_SPDU_AE || (f->seq && f->seq != c->nact_end))
                continue;
            snprintf(t, sizeof t, "activity-end #%u%s", c->nact_end, sn);
            break;
        default:
            continue;
        }
        consider(c, i, t, sp);
    }
}

static void on_event(void *ud, const struct fg_x400_event *ev)
{
    struct pconn *c = ud;
    int dk = 1 + c->dir;
    if (ev->kind == FG_X400_EV_TPDU) {
        const struct fg_cotp *t = ev->tpdu;
        c->ntpkt[0]++;
        c->ntpkt[dk]++;
        c->is_dt = t->code == FG_COTP_DT;
        c->eot = t->eot;
        /* X.224 §13.3.4: the CC's TPDU size is the one in force; absent
         * means 128.  Until the CC, the CR's proposal. */
        if (t->code == FG_COTP_CR && c->dir == FG_C2S) {
            c->ref[0] = t->src_ref;
            c->tpdu_size = t->tpdu_size ? (size_t)1 << t->tpdu_size : 128;
        } else if (t->code == FG_COTP_CC && c->dir == FG_S2C) {
            c->ref[1] = t->src_ref;
            c->tpdu_size = t->tpdu_size ? (size_t)1 << t->tpdu_size : 128;
        }
        match_tpkt(c);
    } else if (ev->kind == FG_X400_EV_SPDU) {
        const struct fg_spdu *sp = ev->spdu;
        if (sp->type < FG_SPDU_COUNT) {
            c->nspdu[sp->type][0]++;
            c->nspdu[sp->type][dk]++;
        }
        if (sp->type == FG_SPDU_AS)
            c->nact_start++;
        if (sp->type == FG_SPDU_AE)
            c->nact_end++;
        match_spdu(c, sp);
    }
}

/* --- rewrite-serial (x400-wire.md §7.3) ----------------------------------------------- */

struct sp_span {
    size_t off, len;
    unsigned index;
    int long_li;
};

struct sp_list {
    const uint8_t *base;
    struct sp_span v[256];
    size_t n;
};

static void collect(void *ud, const struct fg_spdu *s)
{
    struct sp_list *l = ud;
    if (l->n < sizeof l->v / sizeof l->v[0])
        l->v[l->n++] =
            (struct sp_span){(size_t)(s->raw - l->base), s->raw_len, s->index, s->long_li};
}

/* A session length at p (one octet, or FF hi lo); 0 if it does not fit. */
static size_t get_len(const uint8_t *p, size_t avail, size_t *v)
{
    if (avail < 1)
        return 0;
    if (p[0] != 0xFF) {
        *v = p[0];
        return 1;
    }
    if (avail < 3)
        return 0;
    *v = ((size_t)p[1] << 8) | p[2];
    return 3;
}

/* Rebuild one SPDU with its Serial Number (PI 42) set to sn, in place of
 * the one it carried (or added last when it had none); every other
 * parameter is copied as it was, and the SPDU's LI is recomputed. */
static void rebuild_spdu(struct fg_x400_buf *out, const uint8_t *raw, size_t n, int long_li,
                         uint32_t sn)
{
    size_t li, hl = 1;
    size_t k = get_len(raw + 1, n - 1, &li);
    if (!k || hl + k + li > n) {
        fg_x400_buf_put(out, raw, n); /* malformed: leave it alone */
        return;
    }
    hl += k;
    const uint8_t *prm = raw + hl, *end = prm + li;
    struct fg_x400_buf np = {0};
    int done = 0;
    while (prm < end) {
        size_t vl;
        size_t lk = get_len(prm + 1, (size_t)(end - prm) - 1, &vl);
        if (!lk || prm + 1 + lk + vl > end) {
            fg_x400_buf_put(&np, prm, (size_t)(end - prm));
            break;
        }
        if (prm[0] == FG_PI_SERIAL && !done) {
            fg_x400_put_serial(&np, sn);
            done = 1;
        } else {
            fg_x400_buf_put(&np, prm, 1 + lk + vl);
        }
        prm += 1 + lk + vl;
    }
    if (!done)
        fg_x400_put_serial(&np, sn);
    fg_x400_put_spdu(out, raw[0], np.p, np.len, raw + hl + li, n - hl - li, long_li);
    fg_x400_buf_free(&np);
}

/* The TSDU of the held DTs and the last TPKT, rewritten and re-segmented
 * to the negotiated TPDU size, towards side to. */
static void forward_rewritten(struct pconn *c, int to, const uint8_t *last, size_t last_len)
{
    struct side *from = &c->s[1 - to];
    fg_x400_buf_put(&from->held, last, last_len);
    struct fg_x400_buf tsdu = {0};
    for (size_t off = 0; off + 4 <= from->held.len;) {
        size_t tl = ((size_t)from->held.p[off + 2] << 8) | from->held.p[off + 3];
        struct fg_cotp t;
        char err[8];
        if (fg_x400_cotp_parse(from->held.p + off + 4, tl - 4, &t, err, sizeof err) == 0 &&
            t.code == FG_COTP_DT)
            fg_x400_buf_put(&tsdu, t.data, t.data_len);
        off += tl;
    }
    struct sp_list *l = fg_calloc(1, sizeof *l);
    l->base = tsdu.p;
    char err[160];
    struct fg_x400_buf out = {0}, tp = {0};
    if (fg_x400_tsdu_parse(tsdu.p, tsdu.len, collect, l, err, sizeof err) < 0 || l->n == 0) {
        /* Not parseable after all: forward what came. */
        side_write(c, to, from->held.p, from->held.len);
    } else {
        size_t at = 0;
        for (size_t i = 0; i < l->n; i++) {
            const struct sp_span *s = &l->v[i];
            if (s->off > at)
                fg_x400_buf_put(&out, tsdu.p + at, s->off - at);
            int hit = -1;
            for (size_t r = 0; r < c->nrw; r++)
                if (c->rw[r].index == s->index)
                    hit = (int)r;
            if (hit >= 0)
                rebuild_spdu(&out, tsdu.p + s->off, s->len, s->long_li, c->rw[hit].serial);
            else
                fg_x400_buf_put(&out, tsdu.p + s->off, s->len);
            at = s->off + s->len;
        }
        if (at < tsdu.len)
            fg_x400_buf_put(&out, tsdu.p + at, tsdu.len - at);
        fg_x400_put_dt(&tp, out.p, out.len, c->tpdu_size);
        side_write(c, to, tp.p, tp.len);
    }
    from->held.len = 0;
    free(l);
    fg_x400_buf_free(&tsdu);
    fg_x400_buf_free(&out);
    fg_x400_buf_free(&tp);
}

/* --- actions ------------------------------------------------------------------------ */

static void act(struct pconn *c, const struct fg_x400_fault *f)
{
    struct fg_x400_buf b[2] = {{0}, {0}};
    switch (f->action) {
    case FG_X4F_ABORT: {
        /* X.225 §8.3.9: AB with Transport Disconnect "released" plus user
         * abort (03) or protocol error (05); RTS abort information is the
         * X.410 AbortInformation in User Data (x400-wire.md §3.4). */
        struct fg_x400_buf prm = {0}, ud = {0}, tsdu = {0};
        fg_x400_put_pi_byte(&prm, FG_PI_TDISC,
                            FG_TDISC_RELEASED |
                                (f->user ? FG_TDISC_USER_ABORT : FG_TDISC_PROTO_ERROR));
        if (f->rts) {
            fg_x400_rts_abortinfo(&ud, f->abort_reason);
            fg_x400_put_pi(&prm, FG_PGI_USER_DATA, ud.p, ud.len);
        }
        fg_x400_put_spdu(&tsdu, FG_SI_AB, prm.p, prm.len, NULL, 0, 0);
        fg_x400_put_dt(&b[0], tsdu.p, tsdu.len, c->tpdu_size);
        fg_x400_put_dt(&b[1], tsdu.p, tsdu.len, c->tpdu_size);
        fg_x400_buf_free(&prm);
        fg_x400_buf_free(&ud);
        fg_x400_buf_free(&tsdu);
        break;
    }
    case FG_X4F_DR:
        /* Each side gets the DR as if from its peer: dst = its own ref. */
        fg_x400_put_dr(&b[0], c->ref[0], c->ref[1], f->octet);
        fg_x400_put_dr(&b[1], c->ref[1], c->ref[0], f->octet);
        break;
    case FG_X4F_ER:
        fg_x400_put_er(&b[0], c->ref[0], f->octet);
        fg_x400_put_er(&b[1], c->ref[1], f->octet);
        break;
    case FG_X4F_RESET:
        c->ending = 1;
        c->reset_pending = 1;
        maybe_reset(c);
        return;
    case FG_X4F_STALL:
        c->stalled = 1;
        return;
    default:
        break;
    }
    side_write(c, 0, b[0].p, b[0].len);
    side_write(c, 1, b[1].p, b[1].len);
    fg_x400_buf_free(&b[0]);
    fg_x400_buf_free(&b[1]);
    conn_end(c);
}

/* --- forwarding ------------------------------------------------------------------------- */

/* One TPKT read from side k. */
static void tpkt_in(struct pconn *c, int k, const uint8_t *p, size_t len)
{
    struct side *from = &c->s[k];
    int to = 1 - k;
    c->dir = k;
    c->is_dt = c->eot = 0;
    c->term = -1;
    c->nrw = 0;
    fg_x400_dec_feed(&from->dec, p, len);
    const struct fg_x400_fault *tf = c->term >= 0 ? &c->p->o.faults->faults[c->term] : NULL;
    int hold = c->is_dt && !c->eot;
    if (hold)
        fg_x400_buf_put(&from->held, p, len);
    if (!tf || tf->forward) {
        if (!hold && c->nrw) {
            forward_rewritten(c, to, p, len);
        } else if (!hold || tf) {
            side_write(c, to, from->held.p, from->held.len);
            if (!hold)
                side_write(c, to, p, len);
            from->held.len = 0;
        }
    } else {
        from->held.len = 0; /* the action takes the TSDU's place */
    }
    if (tf)
        act(c, tf);
}

static void process(struct pconn *c, int k)
{
    struct side *s = &c->s[k];
    size_t at = 0;
    while (!c->ending && !c->stalled) {
        size_t avail = s->in_len - at;
        if (s->raw) {
            side_write(c, 1 - k, s->in + at, avail);
            at = s->in_len;
            break;
        }
        if (avail < 4)
            break;
        const uint8_t *h = s->in + at;
        size_t tl = ((size_t)h[2] << 8) | h[3];
        if (h[0] != FG_TPKT_VERSION || h[1] != 0 || tl < 7) {
            /* Not RFC 1006 (§6): no framing to keep; pass it through. */
            s->raw = 1;
            continue;
        }
        if (avail < tl)
            break;
        tpkt_in(c, k, h, tl);
        at += tl;
    }
    if (c->ending || c->stalled)
        at = s->in_len;
    memmove(s->in, s->in + at, s->in_len - at);
    s->in_len -= at;
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    struct pconn *c = h->data;
    (void)sz;
    *b = uv_buf_init((char *)c->p->rbuf, sizeof c->p->rbuf);
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct pconn *c = st->data;
    int k = st == (uv_stream_t *)&c->s[0].tcp ? 0 : 1;
    struct side *s = &c->s[k];
    if (n > 0) {
        fg_capture_conn_data(s->sc, k == 0 ? FG_C2S : FG_S2C, b->base, (size_t)n);
        if (c->ending || c->stalled)
            return; /* read and dropped: a stalled peer's close is still seen */
        fg_array_reserve((void **)&s->in, &s->in_cap, s->in_len + (size_t)n, 1);
        memcpy(s->in + s->in_len, b->base, (size_t)n);
        s->in_len += (size_t)n;
        process(c, k);
        return;
    }
    if (n == 0)
        return;
    uv_read_stop(st);
    if (n == UV_EOF) {
        s->eof = 1;
        fg_capture_conn_fin(s->sc, k == 0 ? FG_C2S : FG_S2C);
        if (c->stalled || c->ending) {
            conn_end(c);
            side_close(c, k);
            return;
        }
        /* A partial TSDU or TPKT left over goes on as it came. */
        side_write(c, 1 - k, s->held.p, s->held.len);
        side_write(c, 1 - k, s->in, s->in_len);
        s->held.len = s->in_len = 0;
        side_fin(c, 1 - k);
        if (s->shut)
            side_close(c, k);
        if (c->s[1 - k].eof && c->s[1 - k].shut)
            side_close(c, 1 - k);
        return;
    }
    /* ECONNRESET and the like: the other side is reset too. */
    fg_capture_conn_rst(s->sc, k == 0 ? FG_C2S : FG_S2C);
    c->ending = 1;
    side_close(c, k);
    side_reset(c, 1 - k);
}

/* --- accepting ------------------------------------------------------------------------ */

static void connect_cb(uv_connect_t *req, int status)
{
    struct pconn *c = req->data;
    if (status == UV_ECANCELED || c->s[1].closing)
        return;
    if (status < 0) {
        c->ending = 1;
        side_close(c, 1);
        side_reset(c, 0);
        return;
    }
    struct sockaddr_storage a, b;
    int la = sizeof a, lb = sizeof b;
    if (uv_tcp_getsockname(&c->s[1].tcp, (struct sockaddr *)&a, &la) == 0 &&
        uv_tcp_getpeername(&c->s[1].tcp, (struct sockaddr *)&b, &lb) == 0)
        c->s[1].sc =
            fg_capture_conn_open(c->p->o.capture, (struct sockaddr *)&a, (struct sockaddr *)&b);
    uv_tcp_nodelay(&c->s[0].tcp, 1);
    uv_tcp_nodelay(&c->s[1].tcp, 1);
    /* The connect trigger fires once the upstream leg is up (fault.h). */
    struct fg_x400_fault_set *fs = c->p->o.faults;
    c->term = -1;
    c->nrw = 0;
    for (size_t i = 0; fs && i < fs->n; i++)
        if (fs->faults[i].trig == FG_X4F_CONNECT)
            consider(c, i, "connect", NULL);
    for (int k = 0; k < 2; k++)
        uv_read_start((uv_stream_t *)&c->s[k].tcp, alloc_cb, read_cb);
    if (c->term >= 0)
        act(c, &fs->faults[c->term]);
}

static void on_connection(uv_stream_t *srv, int status)
{
    struct fg_x400_proxy *p = srv->data;
    if (status < 0 || p->closing)
        return;
    struct pconn *c = fg_calloc(1, sizeof *c);
    c->p = p;
    c->tpdu_size = 128;
    uv_tcp_init(p->loop, &c->s[0].tcp);
    c->s[0].tcp.data = c;
    c->s[0].inited = 1;
    c->handles_open = 1;
    c->next = p->conns;
    p->conns = c;
    p->open++;
    if (uv_accept(srv, (uv_stream_t *)&c->s[0].tcp) != 0) {
        side_close(c, 0);
        return;
    }
    c->id = ++p->accepted;
    for (int k = 0; k < 2; k++)
        fg_x400_dec_init(&c->s[k].dec, 0, on_event, c);
    struct sockaddr_storage a, b;
    int la = sizeof a, lb = sizeof b;
    if (uv_tcp_getpeername(&c->s[0].tcp, (struct sockaddr *)&a, &la) == 0 &&
        uv_tcp_getsockname(&c->s[0].tcp, (struct sockaddr *)&b, &lb) == 0)
        c->s[0].sc =
            fg_capture_conn_open(p->o.capture, (struct sockaddr *)&a, (struct sockaddr *)&b);
    uv_tcp_init(p->loop, &c->s[1].tcp);
    c->s[1].tcp.data = c;
    c->s[1].inited = 1;
    c->handles_open++;
    c->creq.data = c;
    if (uv_tcp_connect(&c->creq, &c->s[1].tcp, (struct sockaddr *)&p->up_addr, connect_cb) != 0) {
        c->ending = 1;
        side_close(c, 1);
        side_reset(c, 0);
    }
}

static void listener_closed(uv_handle_t *h)
{
    struct fg_x400_proxy *p = h->data;
    p->listener_open = 0;
    maybe_done(p);
}

static int resolve(const char *host, int port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0)
        return 0;
    return uv_ip6_addr(host, port, (struct sockaddr_in6 *)out);
}

int fg_x400_proxy_new(uv_loop_t *loop, const struct fg_x400_proxy_opts *o,
                      struct fg_x400_proxy **out, char *err, size_t errlen)
{
    *out = NULL;
    struct fg_x400_proxy *p = fg_calloc(1, sizeof *p);
    p->loop = loop;
    p->o = *o;
    struct sockaddr_storage la;
    const char *lh = o->listen_host ? o->listen_host : "127.0.0.1";
    if (resolve(lh, o->listen_port, &la) != 0 ||
        resolve(o->upstream_host ? o->upstream_host : "127.0.0.1", o->upstream_port, &p->up_addr) !=
            0) {
        free(p);
        return fg_errf(err, errlen, FG_EINPUT, "X.400 proxy: addresses must be numeric");
    }
    uv_tcp_init(loop, &p->listener);
    p->listener.data = p;
    p->listener_open = 1;
    int rc = uv_tcp_bind(&p->listener, (struct sockaddr *)&la, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&p->listener, 64, on_connection);
    if (rc != 0) {
        fg_errf(err, errlen, rc, "X.400 proxy: cannot listen on %s:%d: %s", lh, o->listen_port,
                uv_strerror(rc));
        p->closing = 1;
        uv_close((uv_handle_t *)&p->listener, listener_closed);
        return rc;
    }
    *out = p;
    return 0;
}

int fg_x400_proxy_port(const struct fg_x400_proxy *p)
{
    struct sockaddr_storage a;
    int l = sizeof a;
    if (uv_tcp_getsockname(&p->listener, (struct sockaddr *)&a, &l) != 0)
        return -1;
    if (a.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    return ntohs(((struct sockaddr_in *)&a)->sin_port);
}

unsigned fg_x400_proxy_accepted(const struct fg_x400_proxy *p)
{
    return p->accepted;
}

unsigned fg_x400_proxy_open(const struct fg_x400_proxy *p)
{
    return p->open;
}

void fg_x400_proxy_close(struct fg_x400_proxy *p, void (*cb)(void *ud), void *ud)
{
    p->closing = 1;
    p->close_cb = cb;
    p->close_ud = ud;
    for (struct pconn *c = p->conns; c; c = c->next) {
        c->ending = 1;
        side_close(c, 0);
        side_close(c, 1);
    }
    if (p->listener_open && !uv_is_closing((uv_handle_t *)&p->listener))
        uv_close((uv_handle_t *)&p->listener, listener_closed);
    else
        maybe_done(p);
}
