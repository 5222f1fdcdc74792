/* x400.c - the fake X.400 MTA: a strict RFC 1006 / X.225 / X.410 RTS
 * responder with a ledger, and an initiator that sends one message per
 * association (faultgate/fake_x400.h).
 *
 * Both roles sit on the shared codec (faultgate/x400.h) and judge every
 * SPDU, received or sent, with the shared session rules
 * (faultgate/x400_state.h), so that the fake and the judge never disagree
 * about what is valid.  The responder's behaviour follows x400-wire.md §6;
 * its reaction to an invalid SPDU is the S-P-ABORT of X.225 §7.9 that the
 * foreign system of KB Q194685 issued.
 */
#include "faultgate/fake_x400.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/capture.h"
#include "faultgate/error.h"
#include "faultgate/smtp.h"
#include "faultgate/util.h"
#include "faultgate/x400.h"
#include "faultgate/x400_state.h"

/* --- names ---------------------------------------------------------------------- */

static const char *const reaction_names[] = {"abort", "abort-user", "dr",    "er",
                                             "close", "reset",      "ignore"};

int fg_x400_reaction_parse(const char *s, enum fg_x400_reaction *out)
{
    for (size_t i = 0; i < sizeof(reaction_names) / sizeof(reaction_names[0]); i++)
        if (strcmp(s, reaction_names[i]) == 0) {
            *out = (enum fg_x400_reaction)i;
            return 0;
        }
    return FG_EINPUT;
}

static const char *const bug_names[] = {"none",           "first-serial-0", "duplicate-serial",
                                        "skipped-serial", "no-reset",       "no-gt",
                                        "window-overrun"};

int fg_x400_sync_bug_parse(const char *s, enum fg_x400_sync_bug *out)
{
    for (size_t i = 0; i < sizeof(bug_names) / sizeof(bug_names[0]); i++)
        if (strcmp(s, bug_names[i]) == 0) {
            *out = (enum fg_x400_sync_bug)i;
            return 0;
        }
    return FG_EINPUT;
}

const char *fg_x400_sync_bug_name(enum fg_x400_sync_bug b)
{
    return (unsigned)b < sizeof(bug_names) / sizeof(bug_names[0]) ? bug_names[b] : "?";
}

/* --- a connection, either role ------------------------------------------------------- */

struct xconn;

struct xwrite {
    uv_write_t req;
    struct xconn *c;
    size_t len;
    uint8_t data[];
};

struct xconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    int is_sender;
    int closing, handles_open;
    int close_after_write; /* 1 FIN after the pending writes; 2 RST */
    unsigned pending_writes;
    struct fg_x400_dec dec;
    struct fg_x400_sm sm;
    struct fg_synth_conn *sc;
    FILE *log;
    unsigned id;
    uint16_t own_ref, peer_ref;
    size_t tpdu_size; /* negotiated, octets */
    uint64_t timeout_ms;
    char why[400];     /* first reason the association ended abnormally */
    int transfer_done; /* sender: AEA received */
    int released;      /* DN sent or received */
    /* responder */
    struct fg_x400_peer *peer;
    struct xconn *next;
    uint8_t *msg;
    size_t msg_len, msg_cap;
    int in_read;
    struct fg_x400_buf deferred; /* own TSDUs not yet applied to sm */
    int in_activity;
    /* 1988 normal mode (RTSE over ACSE and presentation): the contexts */
    int normal, acse_ctx, rtse_ctx;
    /* sender */
    struct fg_x400_sender *snd;
};

static void xlog(FILE *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void xlog(FILE *log, const char *fmt, ...)
{
    if (!log)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(log, fmt, ap);
    va_end(ap);
    fputc('\n', log);
    fflush(log);
}

static void conn_closed(struct xconn *c);

static void handle_closed(uv_handle_t *h)
{
    struct xconn *c = h->data;
    if (--c->handles_open == 0)
        conn_closed(c);
}

static void conn_close(struct xconn *c, int rst)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_timer_stop(&c->timer);
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (rst) {
        fg_capture_conn_rst(c->sc, c->is_sender ? FG_C2S : FG_S2C);
        if (uv_tcp_close_reset(&c->tcp, handle_closed) < 0)
            uv_close((uv_handle_t *)&c->tcp, handle_closed);
    } else {
        fg_capture_conn_fin(c->sc, c->is_sender ? FG_C2S : FG_S2C);
        uv_close((uv_handle_t *)&c->tcp, handle_closed);
    }
    uv_close((uv_handle_t *)&c->timer, handle_closed);
}

static void write_cb(uv_write_t *req, int status)
{
    struct xwrite *w = (struct xwrite *)req;
    struct xconn *c = w->c;
    free(w);
    c->pending_writes--;
    if (status < 0 && !c->closing) {
        if (!c->why[0])
            snprintf(c->why, sizeof(c->why), "tp_send failed: %s", uv_strerror(status));
        conn_close(c, 0);
        return;
    }
    if (c->pending_writes == 0 && c->close_after_write)
        conn_close(c, c->close_after_write == 2);
}

/* Apply our own SPDUs to the shared rules too, so both directions are
 * tracked the way the judge tracks them. */
struct self_ctx {
    struct xconn *c;
};

static void self_cb(void *ud, const struct fg_spdu *s)
{
    struct xconn *c = ud;
    fg_x400_sm_apply(&c->sm, c->is_sender ? FG_X400_INITIATOR : FG_X400_RESPONDER, s, NULL);
}

static void conn_send_raw(struct xconn *c, const uint8_t *p, size_t n)
{
    if (c->closing || n == 0)
        return;
    struct xwrite *w = fg_malloc(sizeof(*w) + n);
    w->c = c;
    w->len = n;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
    fg_capture_conn_data(c->sc, c->is_sender ? FG_C2S : FG_S2C, p, n);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
    if (rc < 0) {
        free(w);
        if (!c->why[0])
            snprintf(c->why, sizeof(c->why), "tp_send failed: %s", uv_strerror(rc));
        conn_close(c, 0);
        return;
    }
    c->pending_writes++;
}

/* Send one TSDU as DT TPDUs (and judge it). */
static void conn_send_tsdu(struct xconn *c, struct fg_x400_buf *tsdu)
{
    struct fg_x400_buf out = {0};
    if (c->in_read && !c->is_sender) {
        /* The responder answers while it reads; its answers count for the
         * rules only after what it read (as on the wire, where the read
         * octets come first): a MIA cannot acknowledge a MIP the initiator
         * sent before it saw the MIA (X.228 §7.3 window). */
        uint32_t n = (uint32_t)tsdu->len;
        fg_x400_buf_put(&c->deferred, &n, sizeof(n));
        fg_x400_buf_put(&c->deferred, tsdu->p, tsdu->len);
    } else {
        fg_x400_tsdu_parse(tsdu->p, tsdu->len, self_cb, c, NULL, 0);
    }
    fg_x400_put_dt(&out, tsdu->p, tsdu->len, c->tpdu_size);
    conn_send_raw(c, out.p, out.len);
    fg_x400_buf_free(&out);
    tsdu->len = 0;
}

/* An SPDU after a GT or PT carrier (X.225 §6.3.7), or alone (carrier 0). */
static void conn_send_spdu(struct xconn *c, uint8_t carrier, uint8_t si,
                           const struct fg_x400_buf *params)
{
    struct fg_x400_buf t = {0};
    if (carrier)
        fg_x400_put_spdu(&t, carrier, NULL, 0, NULL, 0, 0);
    fg_x400_put_spdu(&t, si, params ? params->p : NULL, params ? params->len : 0, NULL, 0, 0);
    conn_send_tsdu(c, &t);
    fg_x400_buf_free(&t);
}

static void conn_send_serial(struct xconn *c, uint8_t carrier, uint8_t si, uint32_t sn)
{
    struct fg_x400_buf p = {0};
    fg_x400_put_serial(&p, sn);
    conn_send_spdu(c, carrier, si, &p);
    fg_x400_buf_free(&p);
}

static void conn_send_abort(struct xconn *c, int user)
{
    struct fg_x400_buf p = {0}, ai = {0};
    /* X.225 §8.3.9: AB with Transport Disconnect released + protocol error
     * (provider) or released + user abort with RTS AbortInformation. */
    fg_x400_put_pi_byte(&p, FG_PI_TDISC,
                        user ? FG_TDISC_RELEASED | FG_TDISC_USER_ABORT
                             : FG_TDISC_RELEASED | FG_TDISC_PROTO_ERROR);
    if (user) {
        fg_x400_rts_abortinfo(&ai, 4 /* protocolError */);
        fg_x400_put_pi(&p, FG_PGI_USER_DATA, ai.p, ai.len);
    }
    conn_send_spdu(c, 0, FG_SI_AB, &p);
    fg_x400_buf_free(&p);
    fg_x400_buf_free(&ai);
}

static void conn_finish_writes(struct xconn *c, int rst)
{
    c->close_after_write = rst ? 2 : 1;
    if (c->pending_writes == 0)
        conn_close(c, rst);
}

static void timer_cb(uv_timer_t *t)
{
    struct xconn *c = t->data;
    if (!c->why[0])
        snprintf(c->why, sizeof(c->why), "no answer within %llu ms",
                 (unsigned long long)c->timeout_ms);
    xlog(c->log, "x400: connection %u: %s", c->id, c->why);
    conn_close(c, 0);
}

static void arm(struct xconn *c)
{
    if (!c->closing)
        uv_timer_start(&c->timer, timer_cb, c->timeout_ms, 0);
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)h;
    static char dummy;
    b->base = malloc(sz);
    b->len = b->base ? sz : 0;
    if (!b->base)
        b->base = &dummy;
}

static void on_event(void *ud, const struct fg_x400_event *ev);

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct xconn *c = s->data;
    if (n > 0) {
        fg_capture_conn_data(c->sc, c->is_sender ? FG_S2C : FG_C2S, b->base, (size_t)n);
        arm(c);
        c->in_read = 1;
        fg_x400_dec_feed(&c->dec, (const uint8_t *)b->base, (size_t)n);
        c->in_read = 0;
        for (size_t at = 0; at + 4 <= c->deferred.len;) {
            uint32_t k;
            memcpy(&k, c->deferred.p + at, 4);
            fg_x400_tsdu_parse(c->deferred.p + at + 4, k, self_cb, c, NULL, 0);
            at += 4 + k;
        }
        c->deferred.len = 0;
    } else if (n < 0 && !c->closing) {
        if (n == UV_EOF)
            fg_capture_conn_fin(c->sc, c->is_sender ? FG_S2C : FG_C2S);
        else
            fg_capture_conn_rst(c->sc, c->is_sender ? FG_S2C : FG_C2S);
        if (!c->why[0] && !c->released)
            snprintf(c->why, sizeof(c->why), "tp_receive failed: %s", uv_strerror((int)n));
        conn_close(c, 0);
    }
    if (b->len)
        free(b->base);
}

static void conn_init(struct xconn *c, uv_loop_t *loop, FILE *log, uint64_t timeout_ms)
{
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    c->log = log;
    c->timeout_ms = timeout_ms ? timeout_ms : 30000;
    c->tpdu_size = 128;
    fg_x400_dec_init(&c->dec, 0, on_event, c);
    fg_x400_sm_init(&c->sm);
}

/* --- responder ---------------------------------------------------------------------- */

struct fg_x400_peer {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    struct fg_x400_peer_opts o;
    FILE *ledger;
    struct fg_ledger_entry *entries;
    size_t nentries, entries_cap;
    struct xconn *conns;
    unsigned nconns, aborts;
    int closing, listener_open;
    void (*close_cb)(void *ud);
    void *close_ud;
};

static void sha256_hex(const uint8_t *d, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    out[0] = 0;
    if (!EVP_Digest(d, len, md, &mdlen, EVP_sha256(), NULL))
        return;
    for (unsigned i = 0; i < mdlen && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void peer_deliver(struct xconn *c)
{
    struct fg_x400_peer *p = c->peer;
    struct fg_ledger_entry *e = FG_ARRAY_PUSH(p->entries, p->nentries, p->entries_cap);
    memset(e, 0, sizeof(*e));
    fg_smtp_token_find((const char *)c->msg, c->msg_len, e->token, sizeof(e->token));
    e->size = c->msg_len;
    sha256_hex(c->msg, c->msg_len, e->sha256);
    e->t_us = fg_wall_us();
    e->conn = c->id;
    xlog(p->o.log, "x400-peer: connection %u: message received, %zu octets, token %s", c->id,
         c->msg_len, e->token[0] ? e->token : "-");
    if (p->ledger) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I}", "token", e->token, "via", "x400",
                              "size", (json_int_t)e->size, "sha256", e->sha256, "t_us",
                              (json_int_t)e->t_us, "conn", (json_int_t)e->conn);
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (s) {
            fprintf(p->ledger, "%s\n", s);
            fflush(p->ledger);
        }
        free(s);
        json_decref(o);
    }
    c->msg_len = 0;
}

static void peer_react(struct xconn *c, const struct fg_x400_violation *v, const char *spdu)
{
    struct fg_x400_peer *p = c->peer;
    xlog(p->o.log, "x400-peer: connection %u: invalid %s: %s (%s; %s): %s", c->id, spdu, v->text,
         v->rule, v->source, reaction_names[p->o.on_invalid]);
    if (p->o.on_invalid == FG_X400_REACT_IGNORE)
        return;
    p->aborts++;
    snprintf(c->why, sizeof(c->why), "invalid %s: %s", spdu, v->text);
    switch (p->o.on_invalid) {
    case FG_X400_REACT_ABORT:
    case FG_X400_REACT_ABORT_USER:
        conn_send_abort(c, p->o.on_invalid == FG_X400_REACT_ABORT_USER);
        break;
    case FG_X400_REACT_DR: {
        struct fg_x400_buf b = {0};
        fg_x400_put_dr(&b, c->peer_ref, c->own_ref, 0x85);
        conn_send_raw(c, b.p, b.len);
        fg_x400_buf_free(&b);
        break;
    }
    case FG_X400_REACT_ER: {
        struct fg_x400_buf b = {0};
        fg_x400_put_er(&b, c->peer_ref, 0x02);
        conn_send_raw(c, b.p, b.len);
        fg_x400_buf_free(&b);
        break;
    }
    default:
        break;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->dec.dead = 1; /* nothing more is read on an aborted association */
    conn_finish_writes(c, p->o.on_invalid == FG_X400_REACT_RESET);
}

/* The connection data to answer with (X.228 §9.2 connectionDataAC).  An
 * INTEGER in the CN is the greeting of ISODE's echo and sink test
 * applications (applicationProtocol 128/129, or their application
 * contexts 1.17.0.1.1 / 1.17.0.2.1), answered with its value + 1 as their
 * responder does; anything else (a P1 bind) is answered with NULL. */
static void answer_open(const struct fg_rts *r, struct fg_x400_buf *open, const char **app)
{
    static const uint8_t echo_ctx[6] = {0x06, 0x04, 0x39, 0x00, 0x01, 0x01};
    uint32_t hello;
    *app = "P1";
    if (fg_x400_ber_int(r->open, r->open_len, &hello)) {
        fg_x400_ber_put_uint(open, 0x02, hello + 1);
        int echo = r->normal ? r->app_ctx && r->app_ctx_len == sizeof echo_ctx &&
                                   memcmp(r->app_ctx, echo_ctx, sizeof echo_ctx) == 0
                             : r->app_protocol == 128;
        *app = echo ? "ISODE echo" : "ISODE sink";
    }
}

static void peer_accept_cn(struct xconn *c, const struct fg_spdu *s)
{
    struct fg_x400_peer *p = c->peer;
    struct fg_rts r;
    int have_rts = (s->has & FG_SP_USER_DATA) &&
                   fg_x400_rts_decode(FG_SPDU_CN, s->user_data, s->user_data_len, &r) == 0 &&
                   (r.x410 || r.normal);
    struct fg_x400_buf g = {0}, prm = {0}, ud = {0}, open = {0};
    uint8_t version = (s->has & FG_SP_VERSION) && (s->version & 2) ? 2 : 1;
    fg_x400_put_pi_byte(&g, FG_PI_PROTO_OPT, 0);
    fg_x400_put_pi_byte(&g, FG_PI_VERSION, version);
    /* Resolve "called SS-user's choice" (10) to the initiator (00): RTS
     * gives every token to the side with the initial turn (§2.5). */
    uint8_t ts = (s->has & FG_SP_TOKEN_SETTING) ? s->token_setting : 0;
    for (int i = 0; i < 4; i++)
        if (((ts >> (2 * i)) & 3) == 2)
            ts &= (uint8_t) ~(3 << (2 * i));
    fg_x400_put_pi_byte(&g, FG_PI_TOKEN_SETTING, ts);
    fg_x400_put_pi(&prm, FG_PGI_CONN_ACC, g.p, g.len);
    uint16_t want = (s->has & FG_SP_SUR) ? s->sur : FG_SUR_DEFAULT;
    fg_x400_put_pi_u16(&prm, FG_PI_SUR,
                       want & (FG_SUR_RTS | FG_SUR_DUPLEX | FG_SUR_MAJOR_SYNC | FG_SUR_RESYNC |
                               FG_SUR_CAPABILITY));
    if (have_rts) {
        uint32_t lim = p->o.max_checkpoint ? p->o.max_checkpoint : 64;
        uint32_t ck = r.checkpoint <= lim ? r.checkpoint : lim; /* ≤ proposed, 0 stays 0 */
        const char *app;
        answer_open(&r, &open, &app);
        if (r.normal) {
            c->normal = 1;
            c->acse_ctx = r.acse_ctx >= 0 ? r.acse_ctx : 1;
            c->rtse_ctx = r.rtse_ctx >= 0 ? r.rtse_ctx : 3;
            fg_x400_rts_cpa(&ud, &r, ck, r.window, open.len ? open.p : NULL, open.len);
        } else {
            fg_x400_rts_paccept(&ud, ck, r.window, open.len ? open.p : NULL, open.len);
        }
        fg_x400_put_pi(&prm, FG_PGI_USER_DATA, ud.p, ud.len);
        xlog(p->o.log, "x400-peer: connection %u: CN accepted (%s, %s), checkpoint %u, window %u",
             c->id, r.normal ? "1988 normal mode" : "X.410-1984 mode", app, (unsigned)ck,
             (unsigned)r.window);
    }
    conn_send_spdu(c, 0, FG_SI_AC, &prm);
    fg_x400_buf_free(&g);
    fg_x400_buf_free(&prm);
    fg_x400_buf_free(&ud);
    fg_x400_buf_free(&open);
}

static void peer_spdu(struct xconn *c, const struct fg_spdu *s)
{
    struct fg_x400_violation v;
    char name[64], sb[40];
    if (fg_x400_sm_apply(&c->sm, FG_X400_INITIATOR, s, &v)) {
        if (s->has & FG_SP_SERIAL)
            snprintf(name, sizeof(name), "%s serial %s", fg_spdu_name(s->type),
                     fg_x400_serial_str(s, sb, sizeof(sb)));
        else
            snprintf(name, sizeof(name), "%s", fg_spdu_name(s->type));
        peer_react(c, &v, name);
        if (c->peer->o.on_invalid != FG_X400_REACT_IGNORE)
            return;
    }
    switch (s->type) {
    case FG_SPDU_CN:
        peer_accept_cn(c, s);
        break;
    case FG_SPDU_AS:
        c->in_activity = 1;
        c->msg_len = 0;
        break;
    case FG_SPDU_DT:
        if (c->in_activity && s->user_data_len) {
            const uint8_t *d = s->user_data;
            size_t n = s->user_data_len;
            struct fg_rts r;
            /* 1988: P-DATA carrying a segment of the APDU (X.228 §7.3) */
            if (c->normal && fg_x400_rts_decode(FG_SPDU_DT, d, n, &r) == 0 && r.rttr) {
                d = r.rttr;
                n = r.rttr_len;
            }
            fg_array_reserve((void **)&c->msg, &c->msg_cap, c->msg_len + n, 1);
            memcpy(c->msg + c->msg_len, d, n);
            c->msg_len += n;
        }
        break;
    case FG_SPDU_MIP:
        if (s->serial_ok && !((s->has & FG_SP_SYNC_TYPE) && (s->sync_type & 1)))
            conn_send_serial(c, FG_SI_PT, FG_SI_MIA, s->serial);
        break;
    case FG_SPDU_AE:
    case FG_SPDU_MAP:
        if (s->serial_ok)
            conn_send_serial(c, FG_SI_PT, FG_SI_AEA, s->serial);
        if (s->type == FG_SPDU_AE && c->in_activity) {
            peer_deliver(c);
            c->in_activity = 0;
        }
        break;
    case FG_SPDU_AD:
    case FG_SPDU_AI:
        c->in_activity = 0;
        c->msg_len = 0;
        conn_send_spdu(c, FG_SI_PT, s->type == FG_SPDU_AD ? FG_SI_ADA : FG_SI_AIA, NULL);
        break;
    case FG_SPDU_GTC:
        conn_send_spdu(c, 0, FG_SI_GTA, NULL);
        break;
    case FG_SPDU_FN:
        if (c->normal) { /* DN + RLRE (X.227 §7.2) */
            struct fg_x400_buf ud = {0}, prm = {0};
            fg_x400_rts_release(&ud, 1, c->acse_ctx);
            fg_x400_put_pi(&prm, FG_PGI_USER_DATA, ud.p, ud.len);
            conn_send_spdu(c, 0, FG_SI_DN, &prm);
            fg_x400_buf_free(&ud);
            fg_x400_buf_free(&prm);
        } else {
            conn_send_spdu(c, 0, FG_SI_DN, NULL);
        }
        c->released = 1;
        conn_finish_writes(c, 0);
        break;
    case FG_SPDU_AB:
        xlog(c->log, "x400-peer: connection %u: association aborted by the initiator (AB %02x)",
             c->id, s->tdisc);
        snprintf(c->why, sizeof(c->why), "association aborted by the initiator");
        if ((s->has & FG_SP_TDISC) && !(s->tdisc & FG_TDISC_RELEASED))
            conn_send_spdu(c, 0, FG_SI_AA, NULL);
        conn_finish_writes(c, 0);
        break;
    default:
        break;
    }
}

static void peer_tpdu(struct xconn *c, const struct fg_cotp *t)
{
    switch (t->code) {
    case FG_COTP_CR: {
        struct fg_x400_buf b = {0};
        c->peer_ref = t->src_ref;
        c->own_ref = (uint16_t)(0x4200 + c->id);
        /* TPDU size: the CR's (absent = 128), at most 8192 over TCP. */
        uint8_t sz = t->tpdu_size ? (t->tpdu_size > 0x0D ? 0x0D : t->tpdu_size) : 0;
        c->tpdu_size = sz ? (size_t)1 << sz : 128;
        fg_x400_put_cc(&b, t->src_ref, c->own_ref, sz, t->calling, t->calling_len, t->called,
                       t->called_len);
        conn_send_raw(c, b.p, b.len);
        fg_x400_buf_free(&b);
        break;
    }
    case FG_COTP_DR:
    case FG_COTP_ER:
        snprintf(c->why, sizeof(c->why), "transport disconnected by the initiator (%s)",
                 fg_cotp_name(t->code));
        conn_close(c, 0);
        break;
    default:
        break;
    }
}

/* --- sender ------------------------------------------------------------------------ */

enum snd_state { SND_CONNECT, SND_CC, SND_AC, SND_DATA, SND_AEA, SND_DN, SND_DONE };

struct fg_x400_sender {
    struct xconn c;
    uv_connect_t creq;
    struct fg_x400_send_opts o;
    enum snd_state st;
    void (*done)(void *ud, int status, const char *detail);
    void *ud;
    size_t off, seg;
    uint32_t next_sn, acked; /* next SN to send; SNs acknowledged so far */
    uint32_t checkpoint, window;
    unsigned mips_sent;
    int status;
    int cancelled;
    struct fg_x400_buf apdu; /* what the activity carries (the message, or its APDU) */
};

static int snd_fail(struct fg_x400_sender *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int snd_fail(struct fg_x400_sender *s, const char *fmt, ...)
{
    if (!s->c.why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->c.why, sizeof(s->c.why), fmt, ap);
        va_end(ap);
    }
    s->status = FG_EPROTO;
    conn_finish_writes(&s->c, 0);
    return 0;
}

static uint32_t snd_serial(struct fg_x400_sender *s, unsigned k /* 1-based MIP index */)
{
    switch (s->o.bug) {
    case FG_X400_SYNC_FIRST_ZERO:
        return k - 1;
    case FG_X400_SYNC_DUPLICATE:
        return k >= 2 ? k - 1 : k;
    case FG_X400_SYNC_SKIPPED:
        return k >= 2 ? k + 1 : k;
    default:
        return k;
    }
}

/* Send DT segments and MIPs while the window allows; then AE. */
static void snd_pump(struct fg_x400_sender *s)
{
    struct xconn *c = &s->c;
    struct fg_x400_buf burst = {0};
    int burst_mode = s->o.bug == FG_X400_SYNC_WINDOW;
    while (!c->closing && s->st == SND_DATA) {
        if (s->off >= s->apdu.len && s->mips_sent > 0) {
            /* everything sent: end the activity with SN = V(M) */
            if (burst.len) {
                conn_send_raw(c, burst.p, burst.len);
                burst.len = 0;
            }
            if (s->checkpoint && s->acked < s->mips_sent && !burst_mode)
                break; /* wait for the last MIA before AE */
            conn_send_serial(c, FG_SI_GT, FG_SI_AE, s->next_sn);
            s->st = SND_AEA;
            break;
        }
        if (s->checkpoint && !burst_mode && s->mips_sent - s->acked >= s->window)
            break; /* X.228 §7.3: wait for MIA */
        size_t n = s->apdu.len - s->off;
        if (s->checkpoint && n > s->seg)
            n = s->seg;
        struct fg_x400_buf t = {0}, out = {0};
        fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
        if (s->o.normal) { /* P-DATA: an RTTR segment (X.228 §7.3) */
            struct fg_x400_buf pd = {0};
            fg_x400_rts_pdata(&pd, c->rtse_ctx, s->apdu.p + s->off, n);
            fg_x400_put_spdu(&t, FG_SI_DT, NULL, 0, pd.p, pd.len, 0);
            fg_x400_buf_free(&pd);
        } else {
            fg_x400_put_spdu(&t, FG_SI_DT, NULL, 0, NULL, 0, 0);
            fg_x400_buf_put(&t, s->apdu.p + s->off, n);
        }
        s->off += n;
        fg_x400_tsdu_parse(t.p, t.len, self_cb, c, NULL, 0);
        fg_x400_put_dt(burst_mode ? &burst : &out, t.p, t.len, c->tpdu_size);
        t.len = 0;
        if (s->checkpoint) {
            unsigned k = ++s->mips_sent;
            uint32_t sn = snd_serial(s, k);
            if (s->o.bug == FG_X400_SYNC_NO_RESET && s->o.serial_carry)
                sn = ++*s->o.serial_carry;
            struct fg_x400_buf prm = {0};
            if (s->o.bug != FG_X400_SYNC_NO_GT)
                fg_x400_put_spdu(&t, FG_SI_GT, NULL, 0, NULL, 0, 0);
            fg_x400_put_serial(&prm, sn);
            fg_x400_put_spdu(&t, FG_SI_MIP, prm.p, prm.len, NULL, 0, 0);
            fg_x400_tsdu_parse(t.p, t.len, self_cb, c, NULL, 0);
            fg_x400_put_dt(burst_mode ? &burst : &out, t.p, t.len, c->tpdu_size);
            s->next_sn = sn + 1;
            fg_x400_buf_free(&prm);
        } else {
            s->mips_sent = 1; /* no checkpointing: one DT, then AE */
            s->acked = 1;
            s->next_sn = 1;
        }
        if (out.len)
            conn_send_raw(c, out.p, out.len);
        fg_x400_buf_free(&t);
        fg_x400_buf_free(&out);
    }
    if (burst.len)
        conn_send_raw(c, burst.p, burst.len);
    fg_x400_buf_free(&burst);
}

static void snd_start_transfer(struct fg_x400_sender *s)
{
    struct fg_x400_buf p = {0};
    uint8_t act[3] = {0x02, 0x01, 0x01}; /* Activity ID: BER INTEGER 1 (§3.4) */
    fg_x400_put_pi(&p, FG_PI_ACT_ID, act, 3);
    conn_send_spdu(&s->c, FG_SI_GT, FG_SI_AS, &p);
    fg_x400_buf_free(&p);
    s->st = SND_DATA;
    s->next_sn = 1;
    if (s->checkpoint) {
        /* Segments of at most checkpoint x 1024 octets, and at least
         * window + 2 of them, so that every message exercises the
         * window and the serial numbering. */
        size_t w = s->window + 2;
        size_t seg = (s->apdu.len + w - 1) / w;
        if (seg == 0)
            seg = 1;
        if (seg > (size_t)s->checkpoint * 1024)
            seg = (size_t)s->checkpoint * 1024;
        s->seg = seg;
    }
    snd_pump(s);
}

static int snd_spdu(struct fg_x400_sender *s, const struct fg_spdu *sp)
{
    struct xconn *c = &s->c;
    fg_x400_sm_apply(&c->sm, FG_X400_RESPONDER, sp, NULL);
    switch (sp->type) {
    case FG_SPDU_AC: {
        if (s->st != SND_AC)
            return snd_fail(s, "unexpected AC");
        struct fg_rts r;
        if ((sp->has & FG_SP_USER_DATA) &&
            fg_x400_rts_decode(FG_SPDU_AC, sp->user_data, sp->user_data_len, &r) == 0 &&
            (r.x410 || r.normal)) {
            if (r.normal && r.acse_result > 0)
                return snd_fail(s, "association rejected (AARE result %d)", r.acse_result);
            s->checkpoint = r.checkpoint;
            s->window = r.window ? r.window : 1;
        } else {
            s->checkpoint = 0;
        }
        snd_start_transfer(s);
        break;
    }
    case FG_SPDU_RF:
        return snd_fail(s, "association refused (RF reason %02x)", sp->reason);
    case FG_SPDU_AB:
        return snd_fail(s, "association aborted (AB, transport disconnect %02x)", sp->tdisc);
    case FG_SPDU_MIA:
        if (sp->serial_ok && s->st == SND_DATA) {
            s->acked++;
            snd_pump(s);
        }
        break;
    case FG_SPDU_AEA:
        if (s->st != SND_AEA)
            return snd_fail(s, "unexpected AEA");
        s->c.transfer_done = 1;
        xlog(c->log,
             "x400: activity ended and confirmed (AEA serial %u): %u minor sync points, %u "
             "confirmed",
             (unsigned)sp->serial, s->mips_sent, (unsigned)s->acked);
        if (s->o.normal) { /* FN + RLRQ (X.227 §7.2) */
            struct fg_x400_buf ud = {0}, prm = {0};
            fg_x400_rts_release(&ud, 0, c->acse_ctx);
            fg_x400_put_pi(&prm, FG_PGI_USER_DATA, ud.p, ud.len);
            conn_send_spdu(c, 0, FG_SI_FN, &prm);
            fg_x400_buf_free(&ud);
            fg_x400_buf_free(&prm);
        } else {
            conn_send_spdu(c, 0, FG_SI_FN, NULL);
        }
        s->st = SND_DN;
        break;
    case FG_SPDU_DN:
        c->released = 1;
        s->st = SND_DONE;
        s->status = 0;
        conn_finish_writes(c, 0);
        break;
    case FG_SPDU_ED:
    case FG_SPDU_AD:
        return snd_fail(s, "transfer refused (%s)", fg_spdu_name(sp->type));
    default:
        break;
    }
    return 0;
}

/* The CN's called session selector and connection data: PConnect
 * (X.410-1984 mode) or CP-type + AARQ + RTORQ (1988 normal mode), for P1
 * or for ISODE's sink application (x400-wire.md §3.3). */
static void snd_connect_data(struct fg_x400_sender *s, struct fg_x400_buf *prm,
                             struct fg_x400_buf *ud)
{
    static const uint8_t asn1[5] = {0x06, 0x03, 0x28, 0xC4, 0x78};               /* 1.0.8824 */
    static const uint8_t rtse[4] = {0x06, 0x02, 0x53, 0x00};                     /* 2.3.0 */
    static const uint8_t acse[6] = {0x06, 0x04, 0x52, 0x01, 0x00, 0x01};         /* 2.2.1.0.1 */
    static const uint8_t sink[6] = {0x06, 0x04, 0x39, 0x00, 0x02, 0x01};         /* 1.17.0.2.1 */
    static const uint8_t mta_rtse[6] = {0x06, 0x04, 0x56, 0x00, 0x02, 0x0C};     /* 2.6.0.2.12 */
    static const uint8_t mtse[6] = {0x06, 0x04, 0x56, 0x00, 0x02, 0x07};         /* 2.6.0.2.7 */
    static const uint8_t mts_transfer[6] = {0x06, 0x04, 0x56, 0x00, 0x01, 0x06}; /* 2.6.0.1.6 */
    static const uint8_t rts_ssel[2] = {0x00, 0x02}; /* ISODE's "ssap/rts" #2 */
    struct xconn *c = &s->c;
    struct fg_x400_buf hello = {0};
    uint32_t window = s->o.window ? s->o.window : 3;
    if (s->o.isode_sink)
        fg_x400_ber_put_uint(&hello, 0x02, 1); /* the greeting the responder answers + 1 */
    if (!s->o.normal) {
        if (s->o.isode_sink)
            fg_x400_put_pi(prm, FG_PI_CALLED_SSEL, rts_ssel, sizeof rts_ssel);
        fg_x400_rts_pconnect_app(ud, s->o.checkpoint, window, 1, s->o.isode_sink ? 129 : 1, hello.p,
                                 hello.len);
    } else {
        struct fg_x400_nm nm;
        memset(&nm, 0, sizeof nm);
        if (s->o.isode_sink) {
            nm.ctx[0].id = 1, nm.ctx[0].asn = asn1, nm.ctx[0].asn_len = sizeof asn1;
            nm.ctx[1].id = 3, nm.ctx[1].asn = rtse, nm.ctx[1].asn_len = sizeof rtse;
            nm.ctx[2].id = 5, nm.ctx[2].asn = acse, nm.ctx[2].asn_len = sizeof acse;
            nm.acse_ctx = 5, nm.rtse_ctx = 3;
            nm.app_ctx = sink, nm.app_ctx_len = sizeof sink;
        } else {
            nm.ctx[0].id = 1, nm.ctx[0].asn = acse, nm.ctx[0].asn_len = sizeof acse;
            nm.ctx[1].id = 3, nm.ctx[1].asn = mta_rtse, nm.ctx[1].asn_len = sizeof mta_rtse;
            nm.ctx[2].id = 5, nm.ctx[2].asn = mtse, nm.ctx[2].asn_len = sizeof mtse;
            nm.acse_ctx = 1, nm.rtse_ctx = 3;
            nm.app_ctx = mts_transfer, nm.app_ctx_len = sizeof mts_transfer;
        }
        nm.nctx = 3;
        c->acse_ctx = nm.acse_ctx;
        c->rtse_ctx = nm.rtse_ctx;
        fg_x400_rts_cp(ud, &nm, s->o.checkpoint, window, 1, hello.len ? hello.p : NULL, hello.len);
    }
    fg_x400_buf_free(&hello);
}

static int snd_tpdu(struct fg_x400_sender *s, const struct fg_cotp *t)
{
    struct xconn *c = &s->c;
    switch (t->code) {
    case FG_COTP_CC: {
        if (s->st != SND_CC)
            return snd_fail(s, "unexpected CC");
        if ((t->class_opt >> 4) != 0)
            return snd_fail(s, "CC with class %u, class 0 was proposed", t->class_opt >> 4);
        c->peer_ref = t->src_ref;
        c->tpdu_size = t->tpdu_size ? (size_t)1 << t->tpdu_size : 128;
        struct fg_x400_buf g = {0}, p = {0}, ud = {0};
        fg_x400_put_pi_byte(&g, FG_PI_PROTO_OPT, 0);
        fg_x400_put_pi_byte(&g, FG_PI_VERSION, 2);
        fg_x400_put_pi_byte(&g, FG_PI_TOKEN_SETTING, 0); /* turn: initiator */
        fg_x400_put_pi(&p, FG_PGI_CONN_ACC, g.p, g.len);
        fg_x400_put_pi_u16(&p, FG_PI_SUR, FG_SUR_RTS);
        snd_connect_data(s, &p, &ud);
        fg_x400_put_pi(&p, FG_PGI_USER_DATA, ud.p, ud.len);
        conn_send_spdu(c, 0, FG_SI_CN, &p);
        fg_x400_buf_free(&g);
        fg_x400_buf_free(&p);
        fg_x400_buf_free(&ud);
        s->st = SND_AC;
        break;
    }
    case FG_COTP_DR:
        return snd_fail(s, "transport disconnected (DR reason %02x)", t->reason);
    case FG_COTP_ER:
        return snd_fail(s, "transport error (ER cause %02x)", t->reason);
    default:
        break;
    }
    return 0;
}

/* --- shared event dispatch ------------------------------------------------------------- */

static void on_event(void *ud, const struct fg_x400_event *ev)
{
    struct xconn *c = ud;
    /* After an abort or release nothing more is acted on. */
    if (c->closing || c->close_after_write)
        return;
    if (ev->kind == FG_X400_EV_ERROR) {
        if (c->is_sender) {
            snd_fail(c->snd, "protocol error from the responder: %s", ev->text);
        } else {
            struct fg_x400_violation v = {.rule = "malformed", .source = "RFC 1006 §6, X.225 §8"};
            snprintf(v.text, sizeof(v.text), "%s", ev->text);
            peer_react(c, &v, "TPDU");
        }
        return;
    }
    if (ev->kind == FG_X400_EV_TPDU) {
        if (c->is_sender)
            snd_tpdu(c->snd, ev->tpdu);
        else
            peer_tpdu(c, ev->tpdu);
        return;
    }
    if (c->is_sender)
        snd_spdu(c->snd, ev->spdu);
    else
        peer_spdu(c, ev->spdu);
}

static void peer_maybe_closed(struct fg_x400_peer *p);

static void conn_closed(struct xconn *c)
{
    fg_x400_dec_free(&c->dec);
    fg_x400_buf_free(&c->deferred);
    fg_capture_conn_free(c->sc);
    c->sc = NULL;
    if (c->is_sender) {
        struct fg_x400_sender *s = c->snd;
        /* The AEA confirms the transfer (X.410 §4: RT-TRANSFER confirm):
         * an association aborted after it, during release, has still
         * delivered the message, and sending it again would duplicate it. */
        int st = s->cancelled                              ? UV_ECANCELED
                 : (s->st == SND_DONE || c->transfer_done) ? 0
                 : s->status                               ? s->status
                                                           : FG_EPROTO;
        if (st < 0 && !c->why[0])
            snprintf(c->why, sizeof(c->why), "association ended before the transfer completed");
        if (s->done)
            s->done(s->ud, st, st == 0 ? "transferred" : c->why);
        fg_x400_buf_free(&s->apdu);
        free(s);
        return;
    }
    struct fg_x400_peer *p = c->peer;
    for (struct xconn **pp = &p->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    free(c->msg);
    free(c);
    peer_maybe_closed(p);
}

static void on_connection(uv_stream_t *srv, int status)
{
    struct fg_x400_peer *p = srv->data;
    if (status < 0 || p->closing)
        return;
    struct xconn *c = fg_calloc(1, sizeof(*c));
    conn_init(c, p->loop, p->o.log, p->o.idle_ms ? p->o.idle_ms : 60000);
    c->peer = p;
    c->id = ++p->nconns;
    c->next = p->conns;
    p->conns = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c, 0);
        return;
    }
    struct sockaddr_storage a, b;
    int la = sizeof(a), lb = sizeof(b);
    if (p->o.capture && uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&a, &la) == 0 &&
        uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&b, &lb) == 0)
        c->sc = fg_capture_conn_open(p->o.capture, (struct sockaddr *)&a, (struct sockaddr *)&b);
    xlog(p->o.log, "x400-peer: connection %u accepted", c->id);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    arm(c);
}

int fg_x400_peer_new(uv_loop_t *loop, const struct fg_x400_peer_opts *o, struct fg_x400_peer **out,
                     char *err, size_t errlen)
{
    struct fg_x400_peer *p = fg_calloc(1, sizeof(*p));
    p->loop = loop;
    p->o = *o;
    if (o->ledger_path) {
        p->ledger = fopen(o->ledger_path, "a");
        if (!p->ledger) {
            int e = -errno;
            free(p);
            return fg_errf(err, errlen, e, "x400 peer: cannot open ledger %s: %s", o->ledger_path,
                           strerror(-e));
        }
    }
    struct sockaddr_storage ss;
    const char *host = o->host ? o->host : "127.0.0.1";
    int rc = uv_ip4_addr(host, o->port, (struct sockaddr_in *)&ss);
    if (rc < 0)
        rc = uv_ip6_addr(host, o->port, (struct sockaddr_in6 *)&ss);
    uv_tcp_init(loop, &p->listener);
    p->listener.data = p;
    p->listener_open = 1;
    if (rc == 0)
        rc = uv_tcp_bind(&p->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&p->listener, 64, on_connection);
    if (rc < 0) {
        fg_errf(err, errlen, rc, "x400 peer: cannot listen on %s:%d: %s", host, o->port,
                uv_strerror(rc));
        p->closing = 1;
        fg_x400_peer_close(p, NULL, NULL);
        return rc;
    }
    int l = sizeof(ss);
    uv_tcp_getsockname(&p->listener, (struct sockaddr *)&ss, &l);
    p->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                            : ((struct sockaddr_in6 *)&ss)->sin6_port);
    *out = p;
    return 0;
}

int fg_x400_peer_port(const struct fg_x400_peer *p)
{
    return p->port;
}

const struct fg_ledger_entry *fg_x400_peer_ledger(const struct fg_x400_peer *p, size_t *n)
{
    *n = p->nentries;
    return p->entries;
}

unsigned fg_x400_peer_count_token(const struct fg_x400_peer *p, const char *token)
{
    unsigned k = 0;
    for (size_t i = 0; i < p->nentries; i++)
        if (strcmp(p->entries[i].token, token) == 0)
            k++;
    return k;
}

unsigned fg_x400_peer_aborts(const struct fg_x400_peer *p)
{
    return p->aborts;
}

static void peer_maybe_closed(struct fg_x400_peer *p)
{
    if (!p->closing || p->listener_open || p->conns)
        return;
    void (*cb)(void *) = p->close_cb;
    void *ud = p->close_ud;
    if (p->ledger)
        fclose(p->ledger);
    free(p->entries);
    free(p);
    if (cb)
        cb(ud);
}

static void listener_closed(uv_handle_t *h)
{
    struct fg_x400_peer *p = h->data;
    p->listener_open = 0;
    peer_maybe_closed(p);
}

void fg_x400_peer_close(struct fg_x400_peer *p, void (*cb)(void *ud), void *ud)
{
    p->closing = 1;
    p->close_cb = cb;
    p->close_ud = ud;
    for (struct xconn *c = p->conns; c; c = c->next)
        conn_close(c, 0);
    uv_close((uv_handle_t *)&p->listener, listener_closed);
}

/* --- sender setup ------------------------------------------------------------------------ */

static void connect_cb(uv_connect_t *req, int status)
{
    struct fg_x400_sender *s = req->data;
    struct xconn *c = &s->c;
    if (c->closing)
        return;
    if (status < 0) {
        snprintf(c->why, sizeof(c->why), "cannot connect to %s:%d: %s", s->o.host, s->o.port,
                 uv_strerror(status));
        s->status = status;
        conn_close(c, 0);
        return;
    }
    struct sockaddr_storage a, b;
    int la = sizeof(a), lb = sizeof(b);
    if (s->o.capture && uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&a, &la) == 0 &&
        uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&b, &lb) == 0)
        c->sc = fg_capture_conn_open(s->o.capture, (struct sockaddr *)&a, (struct sockaddr *)&b);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    struct fg_x400_buf cr = {0};
    uint8_t sel[2] = {0, 1};
    /* ISODE's tsapd picks the program by the called TSAP: none for the
     * X.410 RTS (the session selector says), #516 for "isode rtse sink". */
    static const uint8_t rtse_sink[2] = {0x02, 0x04};
    if (!s->o.isode_sink)
        fg_x400_put_cr(&cr, c->own_ref, 0x0B, sel, 2, sel, 2);
    else if (s->o.normal)
        fg_x400_put_cr(&cr, c->own_ref, 0x0B, NULL, 0, rtse_sink, sizeof rtse_sink);
    else
        fg_x400_put_cr(&cr, c->own_ref, 0x0B, NULL, 0, NULL, 0);
    conn_send_raw(c, cr.p, cr.len);
    fg_x400_buf_free(&cr);
    s->st = SND_CC;
    arm(c);
}

int fg_x400_send(uv_loop_t *loop, const struct fg_x400_send_opts *o,
                 void (*done)(void *ud, int status, const char *detail), void *ud,
                 struct fg_x400_sender **out)
{
    struct sockaddr_storage ss;
    int rc = uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&ss);
    if (rc < 0)
        rc = uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&ss);
    if (rc < 0)
        return rc;
    struct fg_x400_sender *s = fg_calloc(1, sizeof(*s));
    s->o = *o;
    s->done = done;
    s->ud = ud;
    s->c.is_sender = 1;
    s->c.snd = s;
    s->c.own_ref = 1;
    s->window = o->window ? o->window : 3;
    if (o->isode_sink) { /* the message as one OCTET STRING, as isoc sends it */
        uint8_t h[6];
        size_t hn = 0, n = o->len;
        h[hn++] = 0x04;
        if (n < 128) {
            h[hn++] = (uint8_t)n;
        } else {
            uint8_t k = n < 256 ? 1 : n < 65536 ? 2 : n < (1u << 24) ? 3 : 4;
            h[hn++] = (uint8_t)(0x80 | k);
            for (int i = k - 1; i >= 0; i--)
                h[hn++] = (uint8_t)(n >> (8 * i));
        }
        fg_x400_buf_put(&s->apdu, h, hn);
    }
    fg_x400_buf_put(&s->apdu, o->msg, o->len);
    conn_init(&s->c, loop, o->log, o->timeout_ms);
    s->creq.data = s;
    rc = uv_tcp_connect(&s->creq, &s->c.tcp, (struct sockaddr *)&ss, connect_cb);
    if (rc < 0) {
        s->done = NULL;
        conn_close(&s->c, 0);
        return rc;
    }
    arm(&s->c);
    if (out)
        *out = s;
    return 0;
}

void fg_x400_sender_cancel(struct fg_x400_sender *s)
{
    s->cancelled = 1;
    conn_close(&s->c, 0);
}
