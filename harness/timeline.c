/* timeline.c - the protocol events of a capture, per connection.
 *
 * fg_trace_read reassembles the TCP streams; each connection gets one
 * shared SMTP parser (smtp.c), fed in capture order, whose events become
 * timeline events stamped with the frame and time of the segment that
 * completed them.  Alongside, each mail transaction's body start, token
 * header, end of data and the reply to it are collected as a message.
 *
 * After the 220 to STARTTLS, with a key log, each direction's bytes go to
 * a TLS decoder (tls_decrypt.c) and the plaintext it yields to the same
 * parser, started afresh (RFC 3207 §4.2), stamped with the frame of the
 * segment that completed the TLS record.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/timeline.h"
#include "faultgate/tls_decrypt.h"
#include "faultgate/util.h"

#define BODY_KEEP 65536 /* the token header is looked for in this prefix */

/* Per-connection state while the trace is read. */
struct tstate {
    struct fg_timeline *tl;
    size_t ci; /* index in tl->conn (the array may move) */
    struct fg_smtp_parser parser;
    uint64_t frame, us;
    char *body; /* the current body's first BODY_KEEP octets */
    size_t body_len;
    size_t open_msg;       /* message whose body is in progress, FG_TL_NONE */
    char *mail_from;       /* the last MAIL argument */
    unsigned bdat_seq;     /* verb_seq of the latest BDAT command */
    uint64_t chunk_octets; /* octets of the current BDAT chunk */
    /* messages whose end of data awaits its reply, oldest first */
    struct await {
        size_t msg;
        unsigned bdat_seq; /* 0: DATA; else the LAST chunk's BDAT command */
    } * await;
    size_t nawait, capawait, await_head;
    /* dot-stuffing watch over the DATA body: 0 inside a line, 1 after CR,
     * 2 at a line start, 3 after a "." at a line start */
    int dot_state;
    /* STARTTLS (RFC 3207 §4): tls_now is set at the parser's TLS_START,
     * which stops the feed there; the rest of that buffer and every later
     * byte go to dec (NULL without a key log) */
    int tls_now, tls_on;
    struct fg_tlsdec *dec;
};

struct build {
    struct fg_timeline *tl;
    const int *ports;           /* keep only connections to these server ports */
    size_t nports;              /* 0: keep every connection */
    const struct fg_keylog *kl; /* NULL: TLS stays opaque */
};

static int port_kept(const struct build *b, int port)
{
    if (!b->nports)
        return 1;
    for (size_t i = 0; i < b->nports; i++)
        if (b->ports[i] == port)
            return 1;
    return 0;
}

const char *fg_tl_kind_name(enum fg_tl_kind k)
{
    switch (k) {
    case FG_TL_OPEN:
        return "open";
    case FG_TL_COMMAND:
        return "command";
    case FG_TL_REPLY:
        return "reply";
    case FG_TL_DATA:
        return "data";
    case FG_TL_END_OF_DATA:
        return "end-of-data";
    case FG_TL_BDAT_END:
        return "bdat-end";
    case FG_TL_TLS:
        return "tls";
    case FG_TL_FIN:
        return "fin";
    case FG_TL_RST:
        return "rst";
    case FG_TL_GAP:
        return "gap";
    case FG_TL_VIOLATION:
        return "violation";
    }
    return "?";
}

static struct fg_tl_conn *conn_of(struct tstate *s)
{
    return &s->tl->conn[s->ci];
}

static struct fg_tl_event *push_ev(struct tstate *s, enum fg_tl_kind k, enum fg_dir dir)
{
    struct fg_tl_conn *c = conn_of(s);
    struct fg_tl_event *e = FG_ARRAY_PUSH(c->ev, c->nev, c->capev);
    memset(e, 0, sizeof(*e));
    e->kind = k;
    e->dir = dir;
    e->frame = s->frame;
    e->us = s->us;
    return e;
}

static size_t new_msg(struct tstate *s, size_t data_event)
{
    struct fg_tl_conn *c = conn_of(s);
    struct fg_tl_msg *m = FG_ARRAY_PUSH(c->msg, c->nmsg, c->capmsg);
    memset(m, 0, sizeof(*m));
    m->mail_from = s->mail_from ? fg_strdup(s->mail_from) : NULL;
    m->eod_event = FG_TL_NONE;
    m->reply_event = FG_TL_NONE;
    m->data_event = data_event;
    s->body_len = 0;
    return c->nmsg - 1;
}

static void body_add(struct tstate *s, const char *p, size_t n)
{
    if (s->open_msg == FG_TL_NONE)
        return;
    struct fg_tl_msg *m = &conn_of(s)->msg[s->open_msg];
    m->size += n;
    /* 8-bit octets (RFC 6152 §3): a plain loop the compiler vectorizes. */
    size_t high = 0;
    for (size_t i = 0; i < n; i++)
        high += (unsigned char)p[i] >> 7;
    if (high && !m->high_octets)
        m->high_frame = s->frame;
    m->high_octets += high;
    size_t room = BODY_KEEP - s->body_len;
    if (n > room)
        n = room;
    if (!n)
        return;
    if (!s->body)
        s->body = fg_malloc(BODY_KEEP);
    memcpy(s->body + s->body_len, p, n);
    s->body_len += n;
}

/* Lines of a DATA body piece that begin with a dot (RFC 5321 §4.5.2):
 * memchr finds the line ends, so the cost is per line, not per octet. */
static void body_dots(struct tstate *s, const char *p, size_t n)
{
    if (s->open_msg == FG_TL_NONE || n == 0)
        return;
    struct fg_tl_msg *m = &conn_of(s)->msg[s->open_msg];
    const char *end = p + n;
    m->last_us = s->us;
    m->last_frame = s->frame;
    while (p < end) {
        switch (s->dot_state) {
        case 3: /* a dot began the line: a second one is stuffing */
            if (*p == '.') {
                m->dot_lines++;
            } else {
                if (m->unstuffed_lines++ == 0)
                    m->unstuffed_frame = s->frame;
            }
            s->dot_state = 0;
            break;
        case 2:
            if (*p == '.') {
                s->dot_state = 3;
                p++;
                continue;
            }
            s->dot_state = 0;
            break;
        case 1:
            s->dot_state = *p == '\n' ? 2 : 0;
            if (s->dot_state == 2) {
                p++;
                continue;
            }
            break;
        default:
            break;
        }
        /* inside a line: skip to the next LF */
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (!lf) {
            s->dot_state = end[-1] == '\r' ? 1 : 0;
            return;
        }
        s->dot_state = lf > p && lf[-1] == '\r' ? 2 : 0;
        p = lf + 1;
    }
}

static void msg_token(struct tstate *s, struct fg_tl_msg *m)
{
    if (s->body_len)
        fg_smtp_token_find(s->body, s->body_len, m->token, sizeof(m->token));
}

/* The body of the open message ended with event index ev. */
static void msg_end(struct tstate *s, size_t ev, unsigned bdat_seq)
{
    if (s->open_msg == FG_TL_NONE)
        return;
    struct fg_tl_conn *c = conn_of(s);
    struct fg_tl_msg *m = &c->msg[s->open_msg];
    m->eod_event = ev;
    m->complete = 1;
    msg_token(s, m);
    if (m->data_event < c->nev && c->ev[m->data_event].kind == FG_TL_DATA)
        c->ev[m->data_event].size = m->size;
    struct await *a = FG_ARRAY_PUSH(s->await, s->nawait, s->capawait);
    a->msg = s->open_msg;
    a->bdat_seq = bdat_seq;
    s->open_msg = FG_TL_NONE;
    s->body_len = 0;
}

/* A reply to the oldest end of data still unanswered: to a DATA body's
 * CRLF.CRLF (bdat_seq 0), or to the BDAT command with that sequence number
 * (only the LAST chunk's reply answers the message, RFC 3030 §2). */
static void msg_reply(struct tstate *s, unsigned bdat_seq, int code, size_t ev)
{
    if (s->await_head >= s->nawait || s->await[s->await_head].bdat_seq != bdat_seq)
        return;
    struct fg_tl_msg *m = &conn_of(s)->msg[s->await[s->await_head++].msg];
    m->reply_code = code;
    m->reply_event = ev;
}

static int on_smtp(void *ud, const struct fg_smtp_event *ev)
{
    struct tstate *s = ud;
    struct fg_tl_event *e;
    size_t idx;
    switch (ev->type) {
    case FG_SMTP_EV_COMMAND:
        e = push_ev(s, FG_TL_COMMAND, FG_C2S);
        e->verb = ev->verb;
        e->text = fg_strndup(ev->line, ev->line_len);
        idx = conn_of(s)->nev - 1;
        if (ev->verb == FG_VERB_MAIL) {
            free(s->mail_from);
            s->mail_from = fg_strndup(ev->arg, ev->arg_len);
        } else if (ev->verb == FG_VERB_BDAT) {
            s->bdat_seq = ev->verb_seq;
            s->chunk_octets = 0;
            if (s->open_msg == FG_TL_NONE)
                s->open_msg = new_msg(s, idx);
        }
        break;
    case FG_SMTP_EV_REPLY: {
        e = push_ev(s, FG_TL_REPLY, FG_S2C);
        e->code = ev->code;
        e->answers = ev->answers;
        e->verb = ev->answers_verb; /* DATA for an end of data, BDAT for a chunk */
        e->last = ev->answers == FG_ANS_BDAT && ev->last;
        size_t n = ev->text_len;
        if (n >= 2 && ev->text[n - 2] == '\r' && ev->text[n - 1] == '\n')
            n -= 2;
        else if (n >= 1 && ev->text[n - 1] == '\n')
            n -= 1;
        e->text = fg_strndup(ev->text, n);
        idx = conn_of(s)->nev - 1;
        if (ev->answers == FG_ANS_END_OF_DATA)
            msg_reply(s, 0, ev->code, idx);
        else if (ev->answers == FG_ANS_BDAT && ev->answers_seq)
            msg_reply(s, ev->answers_seq, ev->code, idx);
        break;
    }
    case FG_SMTP_EV_DATA_BEGIN:
        push_ev(s, FG_TL_DATA, FG_C2S);
        idx = conn_of(s)->nev - 1;
        if (s->open_msg == FG_TL_NONE)
            s->open_msg = new_msg(s, idx);
        s->dot_state = 2; /* the body starts at a line start */
        break;
    case FG_SMTP_EV_BDAT_DATA:
        s->chunk_octets += ev->data_len;
        body_add(s, ev->data, ev->data_len);
        break;
    case FG_SMTP_EV_DATA:
        body_add(s, ev->data, ev->data_len);
        body_dots(s, ev->data, ev->data_len);
        break;
    case FG_SMTP_EV_END_OF_DATA:
        push_ev(s, FG_TL_END_OF_DATA, FG_C2S);
        msg_end(s, conn_of(s)->nev - 1, 0);
        break;
    case FG_SMTP_EV_BDAT_END:
        e = push_ev(s, FG_TL_BDAT_END, FG_C2S);
        e->last = ev->last;
        e->verb = FG_VERB_BDAT;
        e->size = s->chunk_octets;
        if (ev->last)
            msg_end(s, conn_of(s)->nev - 1, s->bdat_seq ? s->bdat_seq : 1);
        break;
    case FG_SMTP_EV_TLS_START:
        push_ev(s, FG_TL_TLS, FG_S2C);
        conn_of(s)->tls = 1;
        s->tls_now = 1;
        return 1; /* the feed stops just past the 220: TLS starts there */
    case FG_SMTP_EV_VIOLATION:
        e = push_ev(s, FG_TL_VIOLATION, ev->dir);
        e->text = fg_strdup(fg_smtp_violation_name(ev->violation));
        break;
    }
    return 0;
}

/* ---- trace callbacks ---------------------------------------------------- */

static void t_open(void *ud, struct fg_trace_conn *tc)
{
    struct build *b = ud;
    struct fg_timeline *tl = b->tl;
    if (!port_kept(b, tc->server_port)) {
        tc->user = NULL; /* not followed: no parser, no events */
        return;
    }
    struct fg_tl_conn *c = FG_ARRAY_PUSH(tl->conn, tl->nconn, tl->capconn);
    memset(c, 0, sizeof(*c));
    c->id = tc->id;
    snprintf(c->client, sizeof(c->client), "%s", tc->client_str);
    snprintf(c->server, sizeof(c->server), "%s", tc->server_str);
    c->client_port = tc->client_port;
    c->server_port = tc->server_port;

    struct tstate *s = fg_calloc(1, sizeof(*s));
    s->tl = tl;
    s->ci = tl->nconn - 1;
    s->open_msg = FG_TL_NONE;
    fg_smtp_parser_init(&s->parser, on_smtp, s);
    tc->user = s;
    s->frame = tc->open_frame;
    s->us = tc->open_us;
    push_ev(s, FG_TL_OPEN, FG_C2S);
}

/* Application data decrypted from a TLS record: the session inside TLS,
 * parsed by the same parser; events get the frame of the segment that
 * completed the record (s->frame, set by t_data). */
static void on_plain(void *ud, enum fg_dir dir, const char *p, size_t n)
{
    struct tstate *s = ud;
    while (n) {
        size_t k = fg_smtp_parser_feed(&s->parser, dir, p, n);
        if (k == 0)
            break;
        p += k;
        n -= k;
    }
}

/* The 220 to STARTTLS has been read: what follows is TLS.  RFC 3207 §4.2:
 * the client starts over with EHLO (no greeting comes) and nothing said
 * before counts, so the parser starts afresh, keeping its verb counts as
 * the proxy's does (harness/proxy.c), so that `nth` counts agree. */
static void tls_begin(struct tstate *s, const struct build *b)
{
    struct fg_tl_conn *c = conn_of(s);
    s->tls_on = 1;
    unsigned counts[FG_VERB__COUNT];
    memcpy(counts, s->parser.verb_count, sizeof counts);
    fg_smtp_parser_init(&s->parser, on_smtp, s);
    memcpy(s->parser.verb_count, counts, sizeof counts);
    s->parser.greeted = 1;
    FG_FREE(s->mail_from);
    s->await_head = s->nawait; /* no reply inside TLS answers a command sent before */
    if (b->kl) {
        s->dec = fg_tlsdec_new(b->kl, on_plain, s);
        c->tls_state = FG_TL_TLS_DECRYPTED;
    } else {
        c->tls_state = FG_TL_TLS_OPAQUE;
        c->tls_note = fg_strdup("no key log given: the session inside TLS is not read");
    }
}

static void t_data(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, const uint8_t *buf,
                   size_t len, uint64_t frame, uint64_t us)
{
    struct tstate *s = tc->user;
    if (!s)
        return;
    s->frame = frame;
    s->us = us;
    const char *p = (const char *)buf;
    /* The callback stops a feed only at STARTTLS's 220 (TLS_START); the
     * loop also guards against a parser that returns early. */
    while (len) {
        if (s->tls_on) {
            if (s->dec)
                fg_tlsdec_feed(s->dec, dir, p, len); /* a failure shows in its status */
            return;
        }
        size_t n = fg_smtp_parser_feed(&s->parser, dir, p, len);
        if (s->tls_now && !s->tls_on)
            tls_begin(s, ud);
        if (n == 0)
            break;
        p += n;
        len -= n;
    }
}

static void t_fin(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    struct tstate *s = tc->user;
    if (!s)
        return;
    s->frame = frame;
    s->us = us;
    push_ev(s, FG_TL_FIN, dir);
}

static void t_rst(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    struct tstate *s = tc->user;
    if (!s)
        return;
    s->frame = frame;
    s->us = us;
    push_ev(s, FG_TL_RST, dir);
}

static void t_gap(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, uint64_t missing,
                  uint64_t frame, uint64_t us)
{
    struct tstate *s = tc->user;
    if (!s)
        return;
    s->frame = frame;
    s->us = us;
    push_ev(s, FG_TL_GAP, dir)->size = missing;
    if (s->dec)
        fg_tlsdec_gap(s->dec, dir); /* record boundaries are lost */
}

static void t_close(void *ud, struct fg_trace_conn *tc)
{
    struct tstate *s = tc->user;
    if (!s)
        return;
    struct fg_tl_conn *c = conn_of(s);
    if (s->open_msg != FG_TL_NONE) {
        /* A body cut short: keep what it showed. */
        struct fg_tl_msg *m = &c->msg[s->open_msg];
        msg_token(s, m);
        if (m->data_event < c->nev && c->ev[m->data_event].kind == FG_TL_DATA)
            c->ev[m->data_event].size = m->size;
    }
    if (s->dec) {
        const struct fg_tlsdec_info *in = fg_tlsdec_info(s->dec);
        c->tls_version = in->version;
        c->tls_skipped[FG_C2S] = in->skipped[FG_C2S];
        c->tls_skipped[FG_S2C] = in->skipped[FG_S2C];
        if (fg_tlsdec_status(s->dec) != FG_TLSDEC_OK) {
            c->tls_state = FG_TL_TLS_FAILED;
            c->tls_note = fg_asprintf("TLS not decrypted (%s): %s",
                                      fg_tlsdec_status_name(fg_tlsdec_status(s->dec)),
                                      fg_tlsdec_reason(s->dec));
        } else if (!fg_tlsdec_ready(s->dec)) {
            /* Everything there was is read: the session ended in the
             * handshake (refused, killed, or cut by the capture). */
            c->tls_note = fg_strdup("the TLS handshake did not complete in the trace");
        }
        fg_tlsdec_free(s->dec);
    }
    free(s->body);
    free(s->mail_from);
    free(s->await);
    free(s);
    tc->user = NULL;
}

int fg_timeline_build(const char *path, struct fg_timeline **out, char *err, size_t errlen)
{
    return fg_timeline_build_ports(path, NULL, 0, out, err, errlen);
}

int fg_timeline_build_ports(const char *path, const int *ports, size_t nports,
                            struct fg_timeline **out, char *err, size_t errlen)
{
    return fg_timeline_build_keys(path, ports, nports, NULL, out, err, errlen);
}

int fg_timeline_build_keys(const char *path, const int *ports, size_t nports,
                           const struct fg_keylog *kl, struct fg_timeline **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    struct fg_timeline *tl = fg_calloc(1, sizeof(*tl));
    struct build b = {tl, ports, nports, kl};
    static const struct fg_trace_cbs cbs = {t_open, t_data, t_fin, t_rst, t_gap, t_close};
    int rc = fg_trace_read(path, &cbs, &b, &tl->stats, err, errlen);
    if (rc < 0) {
        fg_timeline_free(tl);
        return rc;
    }
    *out = tl;
    return 0;
}

void fg_timeline_free(struct fg_timeline *tl)
{
    if (!tl)
        return;
    for (size_t i = 0; i < tl->nconn; i++) {
        struct fg_tl_conn *c = &tl->conn[i];
        for (size_t j = 0; j < c->nev; j++)
            free(c->ev[j].text);
        for (size_t j = 0; j < c->nmsg; j++)
            free(c->msg[j].mail_from);
        free(c->tls_note);
        free(c->ev);
        free(c->msg);
    }
    free(tl->conn);
    free(tl);
}

size_t fg_timeline_conns_to(const struct fg_timeline *tl, int port, struct fg_tl_conn **out,
                            size_t max)
{
    size_t n = 0;
    if (!tl)
        return 0;
    for (size_t i = 0; i < tl->nconn; i++) {
        if (tl->conn[i].server_port != port)
            continue;
        if (n < max && out)
            out[n] = &tl->conn[i];
        n++;
    }
    return n;
}

long fg_tl_conn_first(const struct fg_tl_conn *c, size_t from, enum fg_tl_kind k, int dir)
{
    if (!c)
        return -1;
    for (size_t i = from; i < c->nev; i++)
        if (c->ev[i].kind == k && (dir < 0 || (int)c->ev[i].dir == dir))
            return (long)i;
    return -1;
}

int fg_tl_is_end_of_data(const struct fg_tl_event *e)
{
    return e->kind == FG_TL_END_OF_DATA || (e->kind == FG_TL_BDAT_END && e->last);
}

int fg_tl_is_eod_reply(const struct fg_tl_event *e)
{
    return e->kind == FG_TL_REPLY &&
           (e->answers == FG_ANS_END_OF_DATA || (e->answers == FG_ANS_BDAT && e->last));
}

int fg_tl_is_opening(const struct fg_tl_event *e)
{
    return e->kind == FG_TL_COMMAND && (e->verb == FG_VERB_EHLO || e->verb == FG_VERB_HELO);
}

int fg_tl_is_data_start(const struct fg_tl_conn *c, size_t i)
{
    const struct fg_tl_event *e = &c->ev[i];
    if (e->kind == FG_TL_REPLY)
        return e->code == 354 && e->answers == FG_ANS_COMMAND && e->verb == FG_VERB_DATA;
    if (e->kind != FG_TL_COMMAND || e->verb != FG_VERB_BDAT)
        return 0;
    /* The first BDAT since the transaction began: no earlier BDAT after
     * the last MAIL. */
    for (size_t k = i; k-- > 0;) {
        const struct fg_tl_event *x = &c->ev[k];
        if (x->kind == FG_TL_COMMAND && x->verb == FG_VERB_MAIL)
            return 1;
        if (x->kind == FG_TL_COMMAND && x->verb == FG_VERB_BDAT)
            return 0;
    }
    return 1;
}
