/* mta.c - the fake MTA: the strict far end of the outbound leg.
 *
 * An SMTP server on loopback built on libuv and the shared SMTP parser
 * (faultgate/smtp.h).  It answers EHLO with the extensions the script
 * leaves visible (PIPELINING RFC 2920, SIZE RFC 1870, 8BITMIME RFC 6152,
 * SMTPUTF8 RFC 6531, CHUNKING RFC 3030, DSN RFC 3461, ENHANCEDSTATUSCODES
 * RFC 2034, STARTTLS RFC 3207, AUTH PLAIN/LOGIN RFC 4954), enforces the
 * command order of RFC 5321 §4.1.4, takes DATA bodies (un-stuffed, §4.5.2)
 * and BDAT chunks, and records a ledger entry per accepted message.
 *
 * Strictness: every protocol violation the client commits is an event
 * (log line, ledger line, fg_mta_violations), see FG_MTA_VIOL_MAP.  A
 * violation never changes the reply by itself except where RFC 5321 asks
 * for one (503 out of sequence, 552 over SIZE, 500 line too long).
 *
 * Scripts (fakes/mta_script.c) choose per stage: delay (with seeded odds),
 * a reply of their own (multi-line too), no reply, close, reset or hang.
 *
 * Both directions go through one parser per connection: what the client
 * sends and what we reply, so that the parser's reply matching and DATA
 * mode follow the session as the proxy and the analyzer see it.  After
 * STARTTLS the parser is started afresh on the plaintext (RFC 3207 §4.2:
 * the session starts over).
 *
 * Input is kept in a per-connection buffer and consumed one command at a
 * time: a command's reply goes out before the next command is looked at,
 * so any octet already received after a command that must end a pipelined
 * group was sent before its reply - that is how PIPELINING misuse and data
 * before 354 are seen.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "faultgate/error.h"
#include "faultgate/fake_mta.h"
#include "faultgate/util.h"
#include "tls.h"

#define MTA_DEFAULT_HOSTNAME "mta.faultgate.test"
#define MTA_DEFAULT_MAX_SIZE (10u * 1024 * 1024)
#define MTA_DEFAULT_MAX_RCPT 1000
/* Body octets kept beyond the advertised SIZE before we stop storing: the
 * message is refused with 552 anyway, this only bounds memory. */
#define MTA_BODY_SLACK (64u * 1024)
#define MTA_READ_BUF (64u * 1024)
/* Stop reading a client that sends faster than we consume or than it
 * reads our replies. */
#define MTA_WRITE_HIGH (256u * 1024)
#define MTA_IN_HIGH (256u * 1024)
#define MTA_VIOL_KEEP 10000 /* violations kept in memory (all are logged) */

enum timer_job { TJ_NONE, TJ_REPLY, TJ_READ_RESUME, TJ_ABORT };
enum pend_kind { PK_NONE, PK_GREETING, PK_COMMAND, PK_EOD, PK_BDAT };

struct mta_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct fg_mta *m;
    struct mta_conn *prev, *next;
    unsigned num;
    int handles; /* open handles (tcp, timer) */
    int closing;
    int quitting;    /* 221 sent: close once it is written */
    int read_paused; /* reading stopped (backpressure, hang, read delay) */
    int hung;        /* a script said hang: no more replies, no reading */
    int stalled;     /* waiting for a timer before going on */
    int greeting_sent;
    struct fg_smtp_parser p;
    unsigned stage_count[FG_MTA_ST__COUNT];
    unsigned nmsg; /* end of data / BDAT LAST seen on this connection */

    /* Unprocessed plaintext from the client. */
    char *in;
    size_t in_len, in_off, in_cap;
    uint64_t in_stream; /* client stream offset of in[in_off] */
    /* Client octets received when the last 4xx/5xx reply went out (0:
     * none yet): a command within them was sent before the client could
     * see that refusal. */
    uint64_t refusal_recv;

    /* The event the parser stopped on. */
    enum pend_kind pk;
    char cmd[FG_SMTP_LINE_MAX + 1];
    size_t cmd_len;
    enum fg_smtp_verb verb;
    size_t arg_off;
    int cmd_truncated;
    int bdat_last;
    const struct fg_mta_rule *rule; /* the rule acting on the pending event */
    enum timer_job tj;

    /* TLS (after STARTTLS). */
    struct fg_tls *tls;
    int tls_up;        /* handshake done */
    int inject_on_220; /* the next reply is the 220 to STARTTLS: add the script's
                          starttls_inject to its write */

    /* Session and transaction state. */
    int greeted;        /* HELO or EHLO accepted */
    unsigned ehlo_caps; /* what the last EHLO advertised (0 after HELO) */
    int authed;
    int auth_step; /* 1: LOGIN user expected, 2: LOGIN password, 3: PLAIN response */
    int in_mail;
    int body_8bit; /* BODY=8BITMIME */
    int smtputf8;
    int eightbit_seen;
    int bdat_started; /* BDAT chunks in this transaction */
    int bdat_bad;     /* the current BDAT was refused: reply once its chunk is read */
    char bdat_reply[128];
    uint64_t mail_us;
    char *mail_from;
    char **rcpt;
    size_t nrcpt, rcpt_cap;
    unsigned txn_viol_mask, txn_nviol;
    char *body;
    size_t body_len, body_cap;
    uint64_t body_total; /* octets after un-stuffing, stored or not */
    int line_start;
    int prev_cr;
};

struct fg_mta {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int listener_open;
    int port;
    char *maildir;
    FILE *ledger;
    FILE *log;
    struct fg_mta_script sc;
    struct fg_rng rng;
    struct fg_tls_ctx *tls_ctx;
    struct fg_ledger_entry *entries;
    size_t nentries, entries_cap;
    struct fg_mta_violation *viol;
    size_t nviol, viol_cap;
    struct mta_conn *conns;
    unsigned nconns;
    unsigned accepted;
    unsigned conn_seq;
    int closing;
    void (*close_cb)(void *ud);
    void *close_ud;
    /* One read buffer for every connection: a read is consumed (or its
     * rest copied into the connection's own buffer) before the next one,
     * so a connection costs no 64 KiB of its own. */
    char rbuf[MTA_READ_BUF];
};

struct mta_write {
    uv_write_t req;
    struct mta_conn *c;
    size_t len;
    char data[];
};

static void conn_close(struct mta_conn *c, int reset);
static void conn_process(struct mta_conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* --- names ------------------------------------------------------------- */

static const char *const cap_names[] = {
#define XX(name, text) text,
    FG_MTA_CAP_MAP(XX)
#undef XX
};
static const char *const stage_names[] = {
#define XX(name, text) text,
    FG_MTA_STAGE_MAP(XX)
#undef XX
};
static const char *const viol_names[] = {
#define XX(name, text, src) text,
    FG_MTA_VIOL_MAP(XX)
#undef XX
};
static const char *const viol_sources[] = {
#define XX(name, text, src) src,
    FG_MTA_VIOL_MAP(XX)
#undef XX
};

unsigned fg_mta_cap_lookup(const char *name)
{
    for (unsigned i = 0; i < FG_MTA_CAPBIT__COUNT; i++)
        if (strcasecmp(name, cap_names[i]) == 0)
            return 1u << i;
    return 0;
}

const char *fg_mta_cap_name(unsigned i)
{
    return i < FG_MTA_CAPBIT__COUNT ? cap_names[i] : "?";
}

int fg_mta_stage_lookup(const char *name)
{
    if (strcmp(name, ".") == 0 || strcasecmp(name, "dot") == 0 || strcasecmp(name, "eod") == 0)
        return FG_MTA_ST_EOD;
    if (strcasecmp(name, "connect") == 0)
        return FG_MTA_ST_GREETING;
    for (int i = 0; i < FG_MTA_ST__COUNT; i++)
        if (strcasecmp(name, stage_names[i]) == 0)
            return i;
    return -1;
}

const char *fg_mta_stage_name(enum fg_mta_stage s)
{
    return (unsigned)s < FG_MTA_ST__COUNT ? stage_names[s] : "?";
}

const char *fg_mta_viol_name(enum fg_mta_viol v)
{
    return (unsigned)v < FG_MTA_V__COUNT ? viol_names[v] : "?";
}

const char *fg_mta_viol_source(enum fg_mta_viol v)
{
    return (unsigned)v < FG_MTA_V__COUNT ? viol_sources[v] : "";
}

/* --- logging and the ledger --------------------------------------------- */

static void mta_log(struct fg_mta *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mta_log(struct fg_mta *m, const char *fmt, ...)
{
    if (!m->log)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("fake-mta: ", m->log);
    vfprintf(m->log, fmt, ap);
    fputc('\n', m->log);
    va_end(ap);
    fflush(m->log);
}

static int ledger_put(struct fg_mta *m, json_t *o)
{
    if (!o)
        return FG_EINPUT;
    if (!m->ledger) {
        json_decref(o);
        return 0;
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s)
        return FG_EINPUT; /* e.g. an address that is not valid UTF-8 */
    /* One line per event, flushed: a run that is killed keeps its ledger. */
    int r = fprintf(m->ledger, "%s\n", s) < 0 || fflush(m->ledger) != 0 ? -errno : 0;
    free(s);
    return r;
}

/* violation - record that the client broke a rule. */
static void violation(struct mta_conn *c, enum fg_mta_viol v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void violation(struct mta_conn *c, enum fg_mta_viol v, const char *fmt, ...)
{
    struct fg_mta *m = c->m;
    struct fg_mta_violation e = {.kind = v, .conn = c->num, .t_us = fg_wall_us()};
    e.offset = c->in_stream;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.detail, sizeof(e.detail), fmt, ap);
    va_end(ap);
    c->txn_viol_mask |= 1u << v;
    c->txn_nviol++;
    if (m->nviol < MTA_VIOL_KEEP)
        *FG_ARRAY_PUSH(m->viol, m->nviol, m->viol_cap) = e;
    mta_log(m, "conn %u: violation %s (%s): %s", c->num, viol_names[v], viol_sources[v], e.detail);
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "event", "violation", "rule",
                          viol_names[v], "source", viol_sources[v], "conn", (json_int_t)c->num,
                          "t_us", (json_int_t)e.t_us, "detail", e.detail);
    if (!o) /* detail not UTF-8: keep the event, drop the text */
        o = json_pack("{s:s, s:s, s:s, s:I, s:I}", "event", "violation", "rule", viol_names[v],
                      "source", viol_sources[v], "conn", (json_int_t)c->num, "t_us",
                      (json_int_t)e.t_us);
    ledger_put(m, o);
}

/* --- lifecycle ------------------------------------------------------------ */

static void mta_maybe_done(struct fg_mta *m)
{
    if (!m->closing || m->nconns || m->listener_open)
        return;
    void (*cb)(void *) = m->close_cb;
    void *ud = m->close_ud;
    for (size_t i = 0; i < m->nentries; i++) {
        struct fg_ledger_entry *e = &m->entries[i];
        free(e->mail_from);
        for (size_t j = 0; j < e->nrcpt; j++)
            free(e->rcpt[j]);
        free(e->rcpt);
    }
    free(m->entries);
    free(m->viol);
    if (m->ledger)
        fclose(m->ledger);
    fg_tls_ctx_free(m->tls_ctx);
    fg_mta_script_clear(&m->sc);
    free(m->maildir);
    free(m);
    if (cb)
        cb(ud);
}

static void txn_reset(struct mta_conn *c)
{
    FG_FREE(c->mail_from);
    for (size_t i = 0; i < c->nrcpt; i++)
        free(c->rcpt[i]);
    c->nrcpt = 0;
    c->in_mail = 0;
    c->body_8bit = 0;
    c->smtputf8 = 0;
    c->eightbit_seen = 0;
    c->bdat_started = 0;
    c->body_len = 0;
    c->body_total = 0;
    c->line_start = 1;
    c->prev_cr = 0;
    c->txn_viol_mask = 0;
    c->txn_nviol = 0;
}

static void conn_free(struct mta_conn *c)
{
    txn_reset(c);
    fg_tls_free(c->tls);
    free(c->rcpt);
    free(c->body);
    free(c->in);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct mta_conn *c = h->data;
    if (--c->handles > 0)
        return;
    struct fg_mta *m = c->m;
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->nconns--;
    conn_free(c);
    mta_maybe_done(m);
}

static void conn_close(struct mta_conn *c, int reset)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (reset && uv_tcp_close_reset(&c->tcp, on_handle_closed) == 0)
        return;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

/* --- writing -------------------------------------------------------------- */

static void read_resume(struct mta_conn *c)
{
    if (c->closing || c->hung || !c->read_paused || c->tj == TJ_READ_RESUME)
        return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > MTA_WRITE_HIGH ||
        c->in_len - c->in_off > MTA_IN_HIGH)
        return;
    c->read_paused = 0;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void read_pause(struct mta_conn *c)
{
    if (c->read_paused || c->closing)
        return;
    c->read_paused = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_write(uv_write_t *req, int status)
{
    struct mta_write *w = (struct mta_write *)req;
    struct mta_conn *c = w->c;
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c, 0);
        return;
    }
    if (c->quitting) {
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
            conn_close(c, 0);
        return;
    }
    read_resume(c);
}

/* raw_send - octets to the socket as they are (ciphertext under TLS). */
static void raw_send(struct mta_conn *c, const char *d, size_t len)
{
    /* Try the write at once: a reply that fits in the socket buffer (nearly
     * all do) then costs one write(2) and no request.  Through uv_write,
     * libuv (1.44) would also re-arm the connection's poll watcher after
     * each write, one more epoll_ctl(2) per reply.  uv_try_write refuses
     * while earlier writes are queued, so the order is kept. */
    int n = uv_try_write((uv_stream_t *)&c->tcp, &(uv_buf_t){.base = (char *)d, .len = len}, 1);
    if (n == (int)len)
        return;
    if (n > 0) {
        d += n;
        len -= (size_t)n;
    } else if (n != UV_EAGAIN) {
        conn_close(c, 0);
        return;
    }
    struct mta_write *w = fg_malloc(sizeof(*w) + len);
    memcpy(w->data, d, len);
    w->c = c;
    w->len = len;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r < 0) {
        free(w);
        conn_close(c, 0);
    }
}

static void tls_flush(struct mta_conn *c)
{
    size_t n;
    char *out = fg_tls_take_output(c->tls, &n);
    if (out && n)
        raw_send(c, out, n);
    free(out);
}

/* send_reply - one whole reply: shown to the parser (so that it matches
 * it to its command and enters or leaves DATA mode as the client will),
 * then written. */
static void send_reply(struct mta_conn *c, const char *d, size_t len)
{
    if (c->closing || len == 0)
        return;
    if (d[0] == '4' || d[0] == '5')
        c->refusal_recv = c->in_stream + (c->in_len - c->in_off);
    fg_smtp_parser_feed(&c->p, FG_S2C, d, len);
    if (c->tls) {
        if (fg_tls_write(c->tls, d, len) < 0) {
            conn_close(c, 0);
            return;
        }
        tls_flush(c);
        return;
    }
    if (c->inject_on_220) {
        /* STARTTLS response injection (RFC 3207 §4.2; CVE-2011-0411
         * class): the script's octets follow the 220 in the same write, so
         * that they reach the client in the segment that carries the 220.
         * The parser saw the 220 alone: the injected lines answer nothing. */
        const struct fg_mta_script *sc = &c->m->sc;
        char *b = fg_malloc(len + sc->starttls_inject_len);
        memcpy(b, d, len);
        memcpy(b + len, sc->starttls_inject, sc->starttls_inject_len);
        c->inject_on_220 = 0;
        mta_log(c->m, "conn %u: %zu octets injected after the 220 to STARTTLS", c->num,
                sc->starttls_inject_len);
        raw_send(c, b, len + sc->starttls_inject_len);
        free(b);
        return;
    }
    raw_send(c, d, len);
}

static void reply(struct mta_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* blind - the command being handled (it ends at in_stream) had all come in
 * before a refusal went out: a client pipelining under PIPELINING sent it
 * without knowing, so "RCPT without MAIL" or "DATA without an accepted
 * RCPT" is the server's to answer (503/554), not the client's violation
 * (RFC 2920 §3.1). */
static int blind(const struct mta_conn *c)
{
    return (c->ehlo_caps & FG_MTA_CAP(PIPELINING)) && c->in_stream <= c->refusal_recv;
}

/* rule_reply - the script's reply: lines separated by '\n' become a
 * multi-line reply (RFC 5321 §4.2.1). */
static void rule_reply(struct mta_conn *c, const struct fg_mta_rule *r)
{
    const char *t = r->text ? r->text : "";
    size_t cap = strlen(t) + 64, n = 0;
    char *b = fg_malloc(cap);
    for (;;) {
        const char *nl = strchr(t, '\n');
        size_t l = nl ? (size_t)(nl - t) : strlen(t);
        if (n + l + 8 > cap) {
            cap = (n + l + 8) * 2;
            b = fg_realloc(b, cap);
        }
        n += (size_t)snprintf(b + n, cap - n, "%03d%c%.*s\r\n", r->code, nl ? '-' : ' ', (int)l, t);
        if (!nl)
            break;
        t = nl + 1;
    }
    send_reply(c, b, n);
    free(b);
}

/* The rule whose reply replaces the normal one while a command is handled. */
static __thread const struct fg_mta_rule *override;

static void reply(struct mta_conn *c, const char *fmt, ...)
{
    if (override && override->code > 0) {
        /* A positive scripted reply stands in for a positive one only: the
         * state a refusal leaves must match the code the client sees. */
        if (fmt[0] == '2' || fmt[0] == '3' || override->code >= 400) {
            rule_reply(c, override);
            return;
        }
    }
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    send_reply(c, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* --- scripts ------------------------------------------------------------- */

static const struct fg_mta_rule *rule_find(struct mta_conn *c, enum fg_mta_stage st, unsigned nth)
{
    const struct fg_mta_script *s = &c->m->sc;
    for (size_t i = 0; i < s->nrules; i++) {
        const struct fg_mta_rule *r = &s->rules[i];
        if (r->stage != st || (r->nth && r->nth != nth) || (r->conn && r->conn != c->num) ||
            (r->from && c->num < r->from))
            continue;
        /* Drawn only for rules that match otherwise, so that the same
         * traffic and seed give the same decisions. */
        if (r->p < 1.0 && fg_rng_unit(&c->m->rng) >= r->p)
            continue;
        return r;
    }
    return NULL;
}

static uint64_t rule_delay(struct mta_conn *c, const struct fg_mta_rule *r)
{
    if (!r->odds)
        return r->delay_ms;
    /* smtp-sink -W cmd:delay:odds: roll a 0..99 die while it is below
     * odds; each roll adds one more delay.  Seeded, unlike smtp-sink. */
    uint64_t k = 1;
    while (k < 1000 && fg_rng_next(&c->m->rng) % 100 < r->odds)
        k++;
    return r->delay_ms * k;
}

/* --- the body ------------------------------------------------------------ */

static void body_store(struct mta_conn *c, const char *d, size_t len)
{
    size_t keep = (size_t)(c->m->sc.max_size + MTA_BODY_SLACK);
    if (!c->eightbit_seen && !c->body_8bit) {
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)d[i] & 0x80) {
                c->eightbit_seen = 1;
                violation(c, FG_MTA_V_EIGHTBIT, "octet 0x%02x in the body without BODY=8BITMIME%s",
                          (unsigned char)d[i],
                          c->ehlo_caps & FG_MTA_CAP(8BITMIME) ? "" : " (8BITMIME not offered)");
                break;
            }
    }
    c->body_total += len;
    if (c->body_len < keep) {
        size_t n = len < keep - c->body_len ? len : keep - c->body_len;
        fg_array_reserve((void **)&c->body, &c->body_cap, c->body_len + n, 1);
        memcpy(c->body + c->body_len, d, n);
        c->body_len += n;
    }
}

/* body_append - un-stuff DATA octets as they arrive: a line that starts
 * with '.' had one '.' added by the client (RFC 5321 §4.5.2). */
static void body_append(struct mta_conn *c, const char *d, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (c->line_start) {
            c->line_start = 0;
            if (d[i] == '.') {
                c->prev_cr = 0;
                i++;
                continue;
            }
        }
        /* Copy up to and including the next LF in one go. */
        const char *nl = memchr(d + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - d) + 1 : len;
        if (nl && ((nl > d + i && nl[-1] == '\r') || (nl == d + i && c->prev_cr)))
            c->line_start = 1;
        c->prev_cr = d[end - 1] == '\r';
        body_store(c, d + i, end - i);
        i = end;
    }
}

/* --- parser events -------------------------------------------------------- */

static int on_event(void *ud, const struct fg_smtp_event *ev)
{
    struct mta_conn *c = ud;
    if (ev->dir != FG_C2S)
        return 0;
    switch (ev->type) {
    case FG_SMTP_EV_COMMAND: {
        size_t n = ev->line_len < FG_SMTP_LINE_MAX ? ev->line_len : FG_SMTP_LINE_MAX;
        memcpy(c->cmd, ev->line, n);
        c->cmd[n] = '\0';
        c->cmd_len = n;
        c->verb = ev->verb;
        c->arg_off = ev->arg && ev->arg >= ev->line && ev->arg <= ev->line + n
                         ? (size_t)(ev->arg - ev->line)
                         : n;
        c->cmd_truncated = ev->truncated;
        c->pk = PK_COMMAND;
        return 1; /* reply before the parser looks at what follows */
    }
    case FG_SMTP_EV_DATA:
        body_append(c, ev->data, ev->data_len);
        return 0;
    case FG_SMTP_EV_BDAT_DATA:
        if (!c->bdat_bad)
            body_store(c, ev->data, ev->data_len);
        return 0;
    case FG_SMTP_EV_END_OF_DATA:
        c->pk = PK_EOD;
        return 1;
    case FG_SMTP_EV_BDAT_END:
        c->pk = PK_BDAT;
        c->bdat_last = ev->last;
        return 1;
    case FG_SMTP_EV_VIOLATION:
        switch (ev->violation) {
        case FG_VIOL_BARE_LF:
            violation(c, FG_MTA_V_BARE_LF, "LF without CR %s at client offset %" PRIu64,
                      c->p.in_data ? "in the body" : "in a command line", ev->stream_off);
            break;
        case FG_VIOL_BARE_CR:
            violation(c, FG_MTA_V_BARE_CR, "CR without LF %s at client offset %" PRIu64,
                      c->p.in_data ? "in the body" : "in a command line", ev->stream_off);
            break;
        case FG_VIOL_LONG_COMMAND:
            violation(c, FG_MTA_V_LONG_COMMAND, "command line over 512 octets");
            break;
        case FG_VIOL_LONG_TEXT:
            violation(c, FG_MTA_V_LONG_LINE, "body line over 1000 octets");
            break;
        default:
            break;
        }
        return 0;
    default:
        return 0;
    }
}

/* --- commands ------------------------------------------------------------- */

static int has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] & 0x80)
            return 1;
    return 0;
}

/* parse_path - "FROM:<addr> params" / "TO:<addr> params" (RFC 5321
 * §4.1.2); returns the address (malloc'd) and where the parameters start,
 * or NULL on a syntax error. */
static char *parse_path(const char *arg, const char *kw, const char **params)
{
    size_t kl = strlen(kw);
    if (strncasecmp(arg, kw, kl) != 0)
        return NULL;
    arg += kl;
    while (*arg == ' ') /* tolerated: "FROM: <a>" is common in the field */
        arg++;
    if (*arg != '<')
        return NULL;
    const char *end = strchr(arg, '>');
    if (!end)
        return NULL;
    char *addr = fg_strndup(arg + 1, (size_t)(end - arg - 1));
    const char *p = end + 1;
    if (*p && *p != ' ') {
        free(addr);
        return NULL;
    }
    while (*p == ' ')
        p++;
    *params = p;
    return addr;
}

/* xtext (RFC 3461 §4): printable ASCII except '+' and '=', or "+HH". */
static int xtext_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '+') {
            if (i + 2 >= n || !strchr("0123456789ABCDEF", s[i + 1]) ||
                !strchr("0123456789ABCDEF", s[i + 2]))
                return 0;
            i += 2;
        } else if (ch < 33 || ch > 126 || ch == '=') {
            return 0;
        }
    }
    return 1;
}

static int param_is(const char *p, size_t n, const char *name, const char **val, size_t *vlen)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(p, name, k) != 0 || p[k] != '=')
        return 0;
    *val = p + k + 1;
    *vlen = n - k - 1;
    return 1;
}

static void need_cap(struct mta_conn *c, unsigned cap, const char *what)
{
    if (!(c->ehlo_caps & cap))
        violation(c, FG_MTA_V_UNADVERTISED, "%s used but %s was not offered in this session", what,
                  cap_names[__builtin_ctz(cap)]);
}

static void cmd_ehlo(struct mta_conn *c, const char *arg, int extended)
{
    struct fg_mta *m = c->m;
    if (extended && m->sc.no_esmtp) { /* smtp-sink -e: EHLO is not known */
        reply(c, "500 5.5.1 Error: unknown command\r\n");
        return;
    }
    if (!*arg) {
        reply(c, "501 5.5.4 %s requires a domain\r\n", extended ? "EHLO" : "HELO");
        return;
    }
    if (has_8bit(arg, strlen(arg)))
        violation(c, FG_MTA_V_UTF8, "8-bit octets in the %s argument", extended ? "EHLO" : "HELO");
    txn_reset(c); /* RFC 5321 §4.1.4: EHLO resets the transaction */
    c->greeted = 1;
    const char *host = m->sc.hostname ? m->sc.hostname : MTA_DEFAULT_HOSTNAME;
    if (!extended) {
        c->ehlo_caps = 0;
        reply(c, "250 %s\r\n", host);
        return;
    }
    unsigned caps = c->tls_up ? m->sc.caps_tls : m->sc.caps;
    if (c->tls_up)
        caps &= ~FG_MTA_CAP(STARTTLS);
    c->ehlo_caps = caps;
    char buf[1024];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "250%c%s greets %.200s\r\n", caps ? '-' : ' ',
                                host, arg);
    for (unsigned i = 0; i < FG_MTA_CAPBIT__COUNT; i++) {
        if (!(caps & (1u << i)))
            continue;
        unsigned rest = caps & ~((2u << i) - 1);
        char sep = rest ? '-' : ' ';
        if (i == FG_MTA_CAPBIT_SIZE)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "250%cSIZE %" PRIu64 "\r\n", sep,
                                  m->sc.max_size);
        else if (i == FG_MTA_CAPBIT_AUTH)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "250%cAUTH PLAIN LOGIN\r\n", sep);
        else
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "250%c%s\r\n", sep, cap_names[i]);
    }
    if (override && override->code > 0)
        rule_reply(c, override);
    else
        send_reply(c, buf, n);
}

static int mail_params(struct mta_conn *c, const char *params)
{
    while (*params) {
        const char *sp = strchr(params, ' ');
        size_t n = sp ? (size_t)(sp - params) : strlen(params);
        const char *v;
        size_t vl;
        if (param_is(params, n, "SIZE", &v, &vl)) { /* RFC 1870 */
            char num[32];
            uint64_t sz;
            need_cap(c, FG_MTA_CAP(SIZE), "SIZE=");
            if (vl >= sizeof(num)) {
                reply(c, "501 5.5.4 Bad SIZE parameter\r\n");
                return -1;
            }
            memcpy(num, v, vl);
            num[vl] = '\0';
            if (fg_uint_parse(num, 0, UINT64_MAX, &sz) < 0) {
                reply(c, "501 5.5.4 Bad SIZE parameter\r\n");
                return -1;
            }
            if (sz > c->m->sc.max_size) {
                /* RFC 1870 §6.1-§6.2: declaring more than the maximum is how a
                 * client asks; the 552 answers it.  Only data sent above the
                 * maximum is a violation. */
                mta_log(c->m, "conn %u: MAIL SIZE=%" PRIu64 " over the advertised %" PRIu64, c->num,
                        sz, c->m->sc.max_size);
                reply(c, "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
                return -1;
            }
        } else if (param_is(params, n, "BODY", &v, &vl)) { /* RFC 6152 */
            need_cap(c, FG_MTA_CAP(8BITMIME), "BODY=");
            if (vl == 8 && strncasecmp(v, "8BITMIME", 8) == 0)
                c->body_8bit = 1;
            else if (!(vl == 4 && strncasecmp(v, "7BIT", 4) == 0)) {
                reply(c, "501 5.5.4 Bad BODY parameter\r\n");
                return -1;
            }
        } else if (n == 8 && strncasecmp(params, "SMTPUTF8", 8) == 0) { /* RFC 6531 §3.4 */
            need_cap(c, FG_MTA_CAP(SMTPUTF8), "SMTPUTF8");
            c->smtputf8 = 1;
        } else if (param_is(params, n, "RET", &v, &vl)) { /* RFC 3461 §4.3 */
            need_cap(c, FG_MTA_CAP(DSN), "RET=");
            if (!((vl == 4 && strncasecmp(v, "FULL", 4) == 0) ||
                  (vl == 4 && strncasecmp(v, "HDRS", 4) == 0))) {
                reply(c, "501 5.5.4 Bad RET parameter\r\n");
                return -1;
            }
        } else if (param_is(params, n, "ENVID", &v, &vl)) { /* RFC 3461 §4.4 */
            need_cap(c, FG_MTA_CAP(DSN), "ENVID=");
            if (vl == 0 || vl > 100 || !xtext_ok(v, vl)) {
                reply(c, "501 5.5.4 Bad ENVID parameter\r\n");
                return -1;
            }
        } else if (param_is(params, n, "AUTH", &v, &vl)) { /* RFC 4954 §5 */
            need_cap(c, FG_MTA_CAP(AUTH), "AUTH=");
        } else {
            reply(c, "555 5.5.4 Unsupported MAIL parameter\r\n");
            return -1;
        }
        params += n;
        while (*params == ' ')
            params++;
    }
    return 0;
}

static void cmd_mail(struct mta_conn *c, const char *arg)
{
    if (!c->greeted) {
        violation(c, FG_MTA_V_OUT_OF_SEQUENCE, "MAIL before HELO/EHLO");
        reply(c, "503 5.5.1 Error: send HELO/EHLO first\r\n");
        return;
    }
    if (c->in_mail) {
        violation(c, FG_MTA_V_NESTED_MAIL, "MAIL while a transaction is open");
        reply(c, "503 5.5.1 Error: nested MAIL command\r\n");
        return;
    }
    if (c->m->sc.require_tls && !c->tls_up) {
        reply(c, "530 5.7.0 Must issue a STARTTLS command first\r\n"); /* RFC 3207 §4 */
        return;
    }
    if (c->m->sc.require_auth && !c->authed) {
        reply(c, "530 5.7.0 Authentication required\r\n"); /* RFC 4954 §6 */
        return;
    }
    const char *params;
    char *from = parse_path(arg, "FROM:", &params);
    if (!from) {
        reply(c, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
        return;
    }
    c->txn_viol_mask = 0;
    c->txn_nviol = 0;
    if (mail_params(c, params) < 0) {
        free(from);
        c->body_8bit = c->smtputf8 = 0;
        return;
    }
    if (has_8bit(from, strlen(from)) && !c->smtputf8)
        violation(c, FG_MTA_V_UTF8, "8-bit reverse-path without SMTPUTF8");
    c->mail_from = from;
    c->in_mail = 1;
    c->mail_us = fg_wall_us();
    reply(c, "250 2.1.0 Ok\r\n");
}

static void cmd_rcpt(struct mta_conn *c, const char *arg)
{
    if (!c->in_mail) {
        if (!blind(c))
            violation(c, FG_MTA_V_OUT_OF_SEQUENCE, "RCPT without MAIL");
        reply(c, "503 5.5.1 Error: need MAIL command\r\n");
        return;
    }
    const char *params;
    char *to = parse_path(arg, "TO:", &params);
    if (!to || !*to) {
        free(to);
        reply(c, "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
        return;
    }
    while (*params) {
        const char *sp = strchr(params, ' ');
        size_t n = sp ? (size_t)(sp - params) : strlen(params);
        const char *v;
        size_t vl;
        int bad = 0;
        if (param_is(params, n, "NOTIFY", &v, &vl)) { /* RFC 3461 §4.1 */
            need_cap(c, FG_MTA_CAP(DSN), "NOTIFY=");
            if (vl == 5 && strncasecmp(v, "NEVER", 5) == 0)
                bad = 0;
            else {
                const char *q = v, *e = v + vl;
                while (q < e && !bad) {
                    const char *cm = memchr(q, ',', (size_t)(e - q));
                    size_t l = cm ? (size_t)(cm - q) : (size_t)(e - q);
                    bad = !((l == 7 && strncasecmp(q, "SUCCESS", 7) == 0) ||
                            (l == 7 && strncasecmp(q, "FAILURE", 7) == 0) ||
                            (l == 5 && strncasecmp(q, "DELAY", 5) == 0));
                    q += l + (cm ? 1 : 0);
                }
            }
        } else if (param_is(params, n, "ORCPT", &v, &vl)) { /* RFC 3461 §4.2 */
            need_cap(c, FG_MTA_CAP(DSN), "ORCPT=");
            const char *semi = memchr(v, ';', vl);
            bad = !semi || semi == v || !xtext_ok(semi + 1, vl - (size_t)(semi + 1 - v));
        } else {
            free(to);
            reply(c, "555 5.5.4 Unsupported RCPT parameter\r\n");
            return;
        }
        if (bad) {
            free(to);
            reply(c, "501 5.5.4 Bad DSN parameter\r\n");
            return;
        }
        params += n;
        while (*params == ' ')
            params++;
    }
    if (has_8bit(to, strlen(to)) && !c->smtputf8)
        violation(c, FG_MTA_V_UTF8, "8-bit forward-path without SMTPUTF8");
    unsigned max = c->m->sc.max_rcpt ? c->m->sc.max_rcpt : MTA_DEFAULT_MAX_RCPT;
    if (c->nrcpt >= max) {
        free(to);
        reply(c, "452 4.5.3 Too many recipients\r\n"); /* RFC 5321 §4.5.3.1.10 */
        return;
    }
    *FG_ARRAY_PUSH(c->rcpt, c->nrcpt, c->rcpt_cap) = to;
    reply(c, "250 2.1.5 Ok\r\n");
}

static void cmd_data(struct mta_conn *c, const char *arg)
{
    if (c->bdat_started) {
        violation(c, FG_MTA_V_BDAT_MIXED, "DATA after BDAT in one transaction");
        reply(c, "503 5.5.1 Error: DATA after BDAT\r\n");
        return;
    }
    if (!c->in_mail) {
        if (!blind(c))
            violation(c, FG_MTA_V_OUT_OF_SEQUENCE, "DATA without MAIL");
        reply(c, "503 5.5.1 Error: need MAIL command\r\n");
        return;
    }
    if (!c->nrcpt) {
        if (!blind(c))
            violation(c, FG_MTA_V_OUT_OF_SEQUENCE, "DATA without an accepted RCPT");
        reply(c, "503 5.5.1 Error: need RCPT command\r\n");
        return;
    }
    if (*arg) {
        reply(c, "501 5.5.4 Syntax: DATA\r\n");
        return;
    }
    c->body_len = 0;
    c->body_total = 0;
    c->line_start = 1;
    c->prev_cr = 0;
    reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
}

/* bdat_begin - RFC 3030 §2: the reply comes once the chunk is read, so a
 * refusal is only remembered here. */
static void cmd_bdat(struct mta_conn *c, const char *arg)
{
    c->bdat_bad = 1;
    need_cap(c, FG_MTA_CAP(CHUNKING), "BDAT");
    uint64_t size;
    char num[32];
    size_t n = strcspn(arg, " ");
    if (n == 0 || n >= sizeof(num) ||
        (memcpy(num, arg, n), num[n] = '\0', fg_uint_parse(num, 0, UINT64_MAX, &size) < 0)) {
        snprintf(c->bdat_reply, sizeof(c->bdat_reply), "501 5.5.4 Syntax: BDAT size [LAST]\r\n");
        return;
    }
    if (!c->in_mail || !c->nrcpt) {
        if (!blind(c))
            violation(c, FG_MTA_V_OUT_OF_SEQUENCE, "BDAT without %s", c->in_mail ? "RCPT" : "MAIL");
        snprintf(c->bdat_reply, sizeof(c->bdat_reply), "503 5.5.1 Error: need %s command\r\n",
                 c->in_mail ? "RCPT" : "MAIL");
        return;
    }
    if (!c->bdat_started) {
        c->bdat_started = 1;
        c->body_len = 0;
        c->body_total = 0;
    }
    c->bdat_bad = 0;
}

static void sha256_hex(const char *d, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(d, len, md, &mdlen, EVP_sha256(), NULL))
        mdlen = 0;
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < mdlen && i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[mdlen < 32 ? 2 * mdlen : 64] = '\0';
}

static int ledger_write(struct fg_mta *m, const struct fg_ledger_entry *e)
{
    if (!m->ledger)
        return 0;
    json_t *rc = json_array();
    for (size_t i = 0; i < e->nrcpt; i++)
        json_array_append_new(rc, json_string(e->rcpt[i]));
    json_t *vl = json_array();
    for (unsigned v = 0; v < FG_MTA_V__COUNT; v++)
        if (e->viol_mask & (1u << v))
            json_array_append_new(vl, json_string(viol_names[v]));
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:I, s:s, s:I, s:I, s:I, s:b, s:b, s:o}", "event",
                          "message", "token", e->token, "mail_from", e->mail_from, "rcpt", rc,
                          "size", (json_int_t)e->size, "sha256", e->sha256, "start_us",
                          (json_int_t)e->start_us, "t_us", (json_int_t)e->t_us, "conn",
                          (json_int_t)e->conn, "tls", e->tls, "bdat", e->bdat, "violations", vl);
    return ledger_put(m, o);
}

static int maildir_write(struct fg_mta *m, unsigned n, const char *d, size_t len)
{
    if (!m->maildir)
        return 0;
    char *path = fg_asprintf("%s/%u.eml", m->maildir, n);
    FILE *f = fopen(path, "wb");
    free(path);
    if (!f)
        return -errno;
    int r = fwrite(d, 1, len, f) == len ? 0 : -EIO;
    if (fclose(f) != 0 && r == 0)
        r = -errno;
    return r;
}

static void end_of_data(struct mta_conn *c, int bdat)
{
    struct fg_mta *m = c->m;
    if (c->body_total > m->sc.max_size) {
        violation(c, FG_MTA_V_SIZE,
                  "message of %" PRIu64 " octets over the advertised SIZE %" PRIu64, c->body_total,
                  m->sc.max_size);
        reply(c, "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
        txn_reset(c);
        return;
    }
    if (override && override->code >= 400) { /* the script refuses it */
        mta_log(m, "conn %u: message refused by the script with %d", c->num, override->code);
        rule_reply(c, override);
        txn_reset(c);
        return;
    }
    struct fg_ledger_entry e;
    memset(&e, 0, sizeof(e));
    fg_smtp_token_find(c->body, c->body_len, e.token, sizeof(e.token));
    e.mail_from = c->mail_from;
    e.rcpt = c->rcpt;
    e.nrcpt = c->nrcpt;
    e.size = c->body_len;
    sha256_hex(c->body, c->body_len, e.sha256);
    e.t_us = fg_wall_us();
    e.start_us = c->mail_us;
    e.conn = c->num;
    e.tls = c->tls_up;
    e.bdat = bdat;
    e.nviol = c->txn_nviol;
    e.viol_mask = c->txn_viol_mask;
    unsigned n = m->accepted + 1;
    /* Accepted means recorded: a message we cannot store gets a transient
     * failure, so the sender keeps responsibility (RFC 5321 §6.1). */
    int r = maildir_write(m, n, c->body, c->body_len);
    if (r == 0)
        r = ledger_write(m, &e);
    if (r < 0) {
        mta_log(m, "conn %u: cannot store message: %s", c->num, fg_strerror(r));
        reply(c, "451 4.3.0 Error: cannot store message\r\n");
        txn_reset(c);
        return;
    }
    m->accepted = n;
    struct fg_ledger_entry *slot = FG_ARRAY_PUSH(m->entries, m->nentries, m->entries_cap);
    *slot = e;
    slot->rcpt = fg_malloc(sizeof(char *) * (c->nrcpt ? c->nrcpt : 1));
    memcpy(slot->rcpt, c->rcpt, sizeof(char *) * c->nrcpt);
    c->nrcpt = 0;
    c->mail_from = NULL;
    mta_log(m, "conn %u: message %u accepted, token %s, %" PRIu64 " octets", c->num, n,
            slot->token[0] ? slot->token : "-", slot->size);
    reply(c, "250 2.0.0 Ok: queued as FG%08X\r\n", n);
    txn_reset(c);
}

/* b64 decode for AUTH; returns length or -1. */
static int b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    if (n % 4 || n / 4 * 3 > cap)
        return -1;
    int k = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (k < 0)
        return -1;
    if (n && in[n - 1] == '=')
        k--;
    if (n > 1 && in[n - 2] == '=')
        k--;
    return k;
}

static void auth_step(struct mta_conn *c, const char *line)
{
    int step = c->auth_step;
    c->auth_step = 0;
    unsigned char dec[600];
    if (strcmp(line, "*") == 0) { /* RFC 4954 §4: the client cancels */
        reply(c, "501 5.7.0 Authentication cancelled\r\n");
        return;
    }
    int n = b64_decode(line, strlen(line), dec, sizeof(dec));
    if (n < 0) {
        reply(c, "501 5.5.2 Cannot decode response\r\n");
        return;
    }
    if (step == 1) {
        c->auth_step = 2;
        reply(c, "334 UGFzc3dvcmQ6\r\n"); /* "Password:" */
        return;
    }
    if (step == 3 && memchr(dec, '\0', (size_t)n) == NULL) {
        reply(c, "501 5.5.2 Bad PLAIN response\r\n"); /* RFC 4616 §2 */
        return;
    }
    c->authed = 1; /* any credentials: the fake MTA tests the protocol */
    reply(c, "235 2.7.0 Authentication successful\r\n");
}

static void cmd_auth(struct mta_conn *c, const char *arg)
{
    need_cap(c, FG_MTA_CAP(AUTH), "AUTH");
    if (c->authed) {
        reply(c, "503 5.5.1 Error: already authenticated\r\n");
        return;
    }
    if (c->in_mail) {
        violation(c, FG_MTA_V_OUT_OF_SEQUENCE, "AUTH during a mail transaction");
        reply(c, "503 5.5.1 Error: AUTH not permitted during a transaction\r\n");
        return;
    }
    const char *sp = strchr(arg, ' ');
    size_t ml = sp ? (size_t)(sp - arg) : strlen(arg);
    if (ml == 5 && strncasecmp(arg, "PLAIN", 5) == 0) {
        if (sp) {
            c->auth_step = 3;
            auth_step(c, sp + 1);
        } else {
            c->auth_step = 3;
            reply(c, "334 \r\n");
        }
    } else if (ml == 5 && strncasecmp(arg, "LOGIN", 5) == 0) {
        if (sp) {
            c->auth_step = 1;
            auth_step(c, sp + 1);
        } else {
            c->auth_step = 1;
            reply(c, "334 VXNlcm5hbWU6\r\n"); /* "Username:" */
        }
    } else {
        reply(c, "504 5.5.4 Unrecognized authentication type\r\n");
    }
}

static void tls_start(struct mta_conn *c);

static void cmd_starttls(struct mta_conn *c, const char *arg)
{
    if (c->tls || !(c->m->sc.caps & FG_MTA_CAP(STARTTLS)) || !c->m->tls_ctx) {
        reply(c, "454 4.7.0 TLS not available\r\n");
        return;
    }
    need_cap(c, FG_MTA_CAP(STARTTLS), "STARTTLS");
    if (*arg) {
        reply(c, "501 5.5.4 Syntax: STARTTLS\r\n");
        return;
    }
    int code_before = override ? override->code : 0;
    c->inject_on_220 = c->m->sc.starttls_inject && (code_before <= 0 || code_before == 220);
    reply(c, "220 2.0.0 Ready to start TLS\r\n");
    c->inject_on_220 = 0;
    if (code_before > 0 && code_before != 220)
        return;
    tls_start(c);
}

/* sync_check - RFC 2920 §3.1: EHLO, DATA, VRFY, EXPN, TURN, QUIT and NOOP
 * may only end a pipelined group, and nothing may be pipelined without
 * PIPELINING; STARTTLS and AUTH also wait for their reply (RFC 3207 §4.2,
 * RFC 4954 §4).  Octets we already hold after such a command were sent
 * before its reply. */
static void sync_check(struct mta_conn *c, enum fg_smtp_verb v)
{
    size_t ahead = c->in_len - c->in_off;
    if (ahead == 0 && !fg_smtp_parser_queued(&c->p, FG_C2S))
        return;
    int must_end = v == FG_VERB_EHLO || v == FG_VERB_HELO || v == FG_VERB_DATA ||
                   v == FG_VERB_VRFY || v == FG_VERB_EXPN || v == FG_VERB_QUIT ||
                   v == FG_VERB_NOOP || v == FG_VERB_STARTTLS || v == FG_VERB_AUTH;
    if (v == FG_VERB_DATA)
        violation(c, FG_MTA_V_DATA_WITHOUT_354,
                  "%zu octets sent after DATA before its reply (354 not yet sent)", ahead);
    else if (v == FG_VERB_STARTTLS)
        violation(c, FG_MTA_V_STARTTLS_INJECTION,
                  "%zu plaintext octets after STARTTLS before its reply; discarded", ahead);
    else if (!(c->ehlo_caps & FG_MTA_CAP(PIPELINING)))
        violation(c, FG_MTA_V_PIPELINING,
                  "%s followed by %zu octets before its reply without "
                  "PIPELINING",
                  c->verb == FG_VERB_OTHER ? "a command" : fg_smtp_verb_name(v), ahead);
    else if (must_end)
        violation(c, FG_MTA_V_PIPELINING, "%s not last in a pipelined group (%zu octets after it)",
                  fg_smtp_verb_name(v), ahead);
}

static enum fg_mta_stage verb_stage(enum fg_smtp_verb v)
{
    switch (v) {
    case FG_VERB_EHLO:
        return FG_MTA_ST_EHLO;
    case FG_VERB_HELO:
        return FG_MTA_ST_HELO;
    case FG_VERB_MAIL:
        return FG_MTA_ST_MAIL;
    case FG_VERB_RCPT:
        return FG_MTA_ST_RCPT;
    case FG_VERB_DATA:
        return FG_MTA_ST_DATA;
    case FG_VERB_BDAT:
        return FG_MTA_ST_BDAT;
    case FG_VERB_RSET:
        return FG_MTA_ST_RSET;
    case FG_VERB_NOOP:
        return FG_MTA_ST_NOOP;
    case FG_VERB_QUIT:
        return FG_MTA_ST_QUIT;
    case FG_VERB_STARTTLS:
        return FG_MTA_ST_STARTTLS;
    case FG_VERB_AUTH:
        return FG_MTA_ST_AUTH;
    case FG_VERB_VRFY:
        return FG_MTA_ST_VRFY;
    default:
        return FG_MTA_ST__COUNT;
    }
}

static void on_timer(uv_timer_t *t);

/* do_command - the normal answer to the pending command, with the rule's
 * reply standing in where one was scripted. */
static void do_command(struct mta_conn *c)
{
    const char *arg = c->cmd + c->arg_off;
    if (c->auth_step && c->verb == FG_VERB_OTHER) {
        auth_step(c, c->cmd);
        return;
    }
    c->auth_step = 0;
    if (c->cmd_truncated) { /* RFC 5321 §4.5.3.1.4 */
        reply(c, "500 5.5.2 Error: line too long\r\n");
        return;
    }
    switch (c->verb) {
    case FG_VERB_EHLO:
        cmd_ehlo(c, arg, 1);
        break;
    case FG_VERB_HELO:
        cmd_ehlo(c, arg, 0);
        break;
    case FG_VERB_MAIL:
        cmd_mail(c, arg);
        break;
    case FG_VERB_RCPT:
        cmd_rcpt(c, arg);
        break;
    case FG_VERB_DATA:
        cmd_data(c, arg);
        break;
    case FG_VERB_RSET:
        txn_reset(c);
        reply(c, "250 2.0.0 Ok\r\n");
        break;
    case FG_VERB_NOOP:
        reply(c, "250 2.0.0 Ok\r\n");
        break;
    case FG_VERB_VRFY:
        reply(c, "252 2.0.0 Cannot VRFY user, but will accept message\r\n");
        break;
    case FG_VERB_QUIT:
        reply(c, "221 2.0.0 Bye\r\n");
        c->quitting = 1;
        /* written already (raw_send): nothing left for on_write to close on */
        if (!c->closing && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
            conn_close(c, 0);
        break;
    case FG_VERB_STARTTLS:
        cmd_starttls(c, arg);
        break;
    case FG_VERB_AUTH:
        cmd_auth(c, arg);
        break;
    case FG_VERB_OTHER:
        reply(c, "500 5.5.2 Error: command not recognized\r\n");
        break;
    default: /* known verbs this MTA does not offer (RFC 5321 §4.2.4) */
        reply(c, "502 5.5.1 Error: command not implemented\r\n");
        break;
    }
}

/* finish_pending - answer the pending event now (after any delay). */
static void finish_pending(struct mta_conn *c)
{
    const struct fg_mta_rule *r = c->rule;
    enum pend_kind pk = c->pk;
    c->pk = PK_NONE;
    c->rule = NULL;
    if (r && r->end == FG_MTA_END_HANG) {
        mta_log(c->m, "conn %u: script: hang", c->num);
        c->hung = 1;
        read_pause(c);
        return;
    }
    int no_reply = r && r->code < 0;
    if (!no_reply) {
        override = r;
        switch (pk) {
        case PK_GREETING:
            if (r && r->code > 0)
                rule_reply(c, r);
            else if (c->m->sc.banner)
                reply(c, "220 %s\r\n", c->m->sc.banner);
            else
                reply(c, "220 %s %sSMTP faultgate fake MTA\r\n",
                      c->m->sc.hostname ? c->m->sc.hostname : MTA_DEFAULT_HOSTNAME,
                      c->m->sc.no_esmtp ? "" : "E");
            c->greeting_sent = 1;
            break;
        case PK_COMMAND:
            /* A scripted refusal leaves the state as it was: the command
             * is not carried out. */
            if (r && r->code >= 400 && !(c->auth_step && c->verb == FG_VERB_OTHER))
                rule_reply(c, r);
            else
                do_command(c);
            break;
        case PK_EOD:
            end_of_data(c, 0);
            break;
        case PK_BDAT:
            if (c->bdat_bad) {
                if (r && r->code > 0)
                    rule_reply(c, r);
                else
                    send_reply(c, c->bdat_reply, strlen(c->bdat_reply));
                c->bdat_bad = 0;
            } else if (c->bdat_last) {
                end_of_data(c, 1);
            } else if (r && r->code >= 400) {
                /* RFC 3030 §2: a refused chunk ends the transaction's hope. */
                rule_reply(c, r);
            } else {
                reply(c, "250 2.0.0 %" PRIu64 " octets received\r\n", c->body_total);
            }
            break;
        default:
            break;
        }
        override = NULL;
    } else {
        mta_log(c->m, "conn %u: script: no reply", c->num);
    }
    if (c->closing)
        return;
    if (r && (r->end == FG_MTA_END_CLOSE || r->end == FG_MTA_END_RESET ||
              (no_reply && r->end == FG_MTA_END_NONE))) {
        if (no_reply && r->end == FG_MTA_END_NONE) { /* no reply and no end: a hang */
            c->hung = 1;
            read_pause(c);
            return;
        }
        mta_log(c->m, "conn %u: script: %s", c->num,
                r->end == FG_MTA_END_RESET ? "reset" : "close");
        conn_close(c, r->end == FG_MTA_END_RESET);
        return;
    }
    /* smtp-sink -H and -A: the client's body is not read for a while, or
     * the session is cut short while it sends. */
    if (r && pk == PK_COMMAND && c->verb == FG_VERB_DATA && c->p.data_go) {
        if (r->abort_ms) {
            c->stalled = 1;
            c->tj = TJ_ABORT;
            read_pause(c);
            uv_timer_start(&c->timer, on_timer, r->abort_ms, 0);
            return;
        }
        if (r->read_delay_ms) {
            read_pause(c);
            c->tj = TJ_READ_RESUME;
            c->stalled = 1;
            uv_timer_start(&c->timer, on_timer, r->read_delay_ms, 0);
            return;
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    struct mta_conn *c = t->data;
    enum timer_job j = c->tj;
    c->tj = TJ_NONE;
    c->stalled = 0;
    switch (j) {
    case TJ_REPLY:
        finish_pending(c);
        break;
    case TJ_READ_RESUME:
        break;
    case TJ_ABORT:
        send_reply(c, "550 5.0.0 Error: session aborted during DATA\r\n", 48);
        conn_close(c, 0);
        return;
    default:
        return;
    }
    if (c->closing || c->hung)
        return;
    read_resume(c);
    conn_process(c);
}

/* handle_pending - the parser stopped at an event: find the rule for it,
 * then answer now or after the rule's delay. */
static void handle_pending(struct mta_conn *c)
{
    enum fg_mta_stage st = FG_MTA_ST__COUNT;
    unsigned nth = 0;
    switch (c->pk) {
    case PK_GREETING:
        st = FG_MTA_ST_GREETING;
        nth = 1;
        break;
    case PK_COMMAND:
        mta_log(c->m, "conn %u: C: %.*s", c->num, (int)(c->cmd_len > 200 ? 200 : c->cmd_len),
                c->cmd);
        if (!c->auth_step)
            sync_check(c, c->verb);
        st = c->auth_step && c->verb == FG_VERB_OTHER ? FG_MTA_ST__COUNT : verb_stage(c->verb);
        if (c->verb == FG_VERB_BDAT) {
            /* Chunk octets follow the command line: answer once they are in. */
            cmd_bdat(c, c->cmd + c->arg_off);
            c->pk = PK_NONE;
            return;
        }
        break;
    case PK_EOD:
        st = FG_MTA_ST_EOD;
        nth = ++c->nmsg;
        if (!(c->ehlo_caps & FG_MTA_CAP(PIPELINING)) &&
            (c->in_len > c->in_off || fg_smtp_parser_queued(&c->p, FG_C2S)))
            violation(c, FG_MTA_V_PIPELINING,
                      "%zu octets after the end of data before its reply without PIPELINING",
                      c->in_len - c->in_off);
        break;
    case PK_BDAT:
        st = FG_MTA_ST_BDAT;
        if (c->bdat_last)
            c->nmsg++;
        break;
    default:
        return;
    }
    if (st != FG_MTA_ST__COUNT) {
        nth = st == FG_MTA_ST_EOD ? nth : ++c->stage_count[st];
        c->rule = rule_find(c, st, nth);
        /* The end of data is the final dot or the LAST chunk (RFC 3030 §2);
         * the opening is EHLO or HELO (RFC 5321 §4.1.1.1): their rules hold
         * on either path. */
        if (st == FG_MTA_ST_BDAT && c->bdat_last && !c->rule)
            c->rule = rule_find(c, FG_MTA_ST_EOD, c->nmsg);
        if (st == FG_MTA_ST_EHLO || st == FG_MTA_ST_HELO) {
            unsigned k = ++c->stage_count[FG_MTA_ST_OPENING];
            if (!c->rule)
                c->rule = rule_find(c, FG_MTA_ST_OPENING, k);
        }
    }
    uint64_t d = c->rule ? rule_delay(c, c->rule) : 0;
    if (d) {
        c->stalled = 1;
        c->tj = TJ_REPLY;
        uv_timer_start(&c->timer, on_timer, d, 0);
        return;
    }
    finish_pending(c);
}

/* conn_process - feed held client octets to the parser, stopping at each
 * command, end of data and chunk to answer before the parser reads on:
 * the reply to DATA decides whether what follows is a body. */
static void conn_process(struct mta_conn *c)
{
    while (!c->closing && !c->quitting && !c->hung && !c->stalled) {
        size_t avail = c->in_len - c->in_off;
        if (avail == 0 && !fg_smtp_parser_queued(&c->p, FG_C2S))
            break;
        size_t n = fg_smtp_parser_feed(&c->p, FG_C2S, avail ? c->in + c->in_off : NULL, avail);
        c->in_off += n;
        c->in_stream += n;
        if (c->pk != PK_NONE)
            handle_pending(c);
        else if (n == 0)
            break;
    }
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (c->closing)
        return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > MTA_WRITE_HIGH ||
        c->in_len - c->in_off > MTA_IN_HIGH)
        read_pause(c);
}

/* --- TLS ------------------------------------------------------------------ */

/* tls_start - after our 220 to STARTTLS: plaintext the client sent along
 * is dropped (CVE-2011-0411 class; sync_check reported it), and the
 * session starts over (RFC 3207 §4.2). */
static void tls_start(struct mta_conn *c)
{
    c->in_stream += c->in_len - c->in_off;
    c->in_off = c->in_len = 0;
    c->tls = fg_tls_new(c->m->tls_ctx);
    c->tls_up = 0;
    mta_log(c->m, "conn %u: TLS handshake", c->num);
}

static void append_in(struct mta_conn *c, const char *d, size_t n)
{
    if (c->in_off > 0 && c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (c->in_off > 0 && c->in_len + n > c->in_cap) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    fg_array_reserve((void **)&c->in, &c->in_cap, c->in_len + n, 1);
    memcpy(c->in + c->in_len, d, n);
    c->in_len += n;
}

static void tls_input(struct mta_conn *c, const char *d, size_t n)
{
    if (fg_tls_put(c->tls, d, n) < 0) {
        conn_close(c, 0);
        return;
    }
    if (!c->tls_up) {
        int r = fg_tls_handshake(c->tls);
        tls_flush(c);
        if (r < 0) {
            mta_log(c->m, "conn %u: TLS handshake failed: %s", c->num, fg_tls_error(c->tls));
            conn_close(c, 0);
            return;
        }
        if (r == 0)
            return;
        c->tls_up = 1;
        mta_log(c->m, "conn %u: TLS established (%s)", c->num, fg_tls_version(c->tls));
        /* A fresh session on a fresh parser; there is no second greeting. */
        fg_smtp_parser_init(&c->p, on_event, c);
        c->p.greeted = 1;
        c->greeted = 0;
        c->ehlo_caps = 0;
        c->authed = 0;
        txn_reset(c);
    }
    char buf[16384];
    int k;
    while ((k = fg_tls_read(c->tls, buf, sizeof(buf))) > 0)
        append_in(c, buf, (size_t)k);
    tls_flush(c);
    if (k < 0) {
        conn_process(c);
        if (!c->quitting)
            conn_close(c, 0);
    }
}

/* --- connections ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mta_conn *c = h->data;
    *buf = uv_buf_init(c->m->rbuf, sizeof(c->m->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mta_conn *c = s->data;
    if (c->closing)
        return;
    if (nread < 0) {
        if (nread != UV_EOF)
            mta_log(c->m, "conn %u: read: %s", c->num, uv_strerror((int)nread));
        conn_close(c, 0);
        return;
    }
    if (nread == 0)
        return;
    if (!c->greeting_sent)
        violation(c, FG_MTA_V_PIPELINING, "%zd octets sent before the greeting", nread);
    if (c->tls) {
        tls_input(c, buf->base, (size_t)nread);
    } else if (c->in_len == c->in_off && !c->stalled && c->pk == PK_NONE && c->greeting_sent) {
        /* The common case: consume straight from the read buffer. */
        char *save = c->in;
        size_t save_cap = c->in_cap;
        c->in = buf->base;
        c->in_cap = (size_t)nread;
        c->in_off = 0;
        c->in_len = (size_t)nread;
        conn_process(c);
        size_t left = c->in_len - c->in_off;
        const char *rest = c->in + c->in_off;
        c->in = save;
        c->in_cap = save_cap;
        c->in_off = c->in_len = 0;
        if (left && !c->closing)
            append_in(c, rest, left);
        return;
    } else {
        append_in(c, buf->base, (size_t)nread);
    }
    if (!c->closing && c->greeting_sent)
        conn_process(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct fg_mta *m = server->data;
    if (status < 0 || m->closing)
        return;
    struct mta_conn *c = fg_calloc(1, sizeof(*c));
    c->m = m;
    c->line_start = 1;
    uv_tcp_init(m->loop, &c->tcp);
    uv_timer_init(m->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->next = m->conns;
    if (m->conns)
        m->conns->prev = c;
    m->conns = c;
    m->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c, 0);
        return;
    }
    /* Connection numbers follow accept order, as the analyzer counts
     * SYNs to the port. */
    c->num = ++m->conn_seq;
    fg_smtp_parser_init(&c->p, on_event, c);
    uv_tcp_nodelay(&c->tcp, 1);
    mta_log(m, "conn %u: accepted", c->num);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    c->pk = PK_GREETING;
    handle_pending(c);
}

/* --- public ----------------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *h)
{
    struct fg_mta *m = h->data;
    m->listener_open = 0;
    mta_maybe_done(m);
}

static void script_copy(struct fg_mta_script *dst, const struct fg_mta_script *src)
{
    *dst = *src;
    dst->banner = src->banner ? fg_strdup(src->banner) : NULL;
    dst->hostname = src->hostname ? fg_strdup(src->hostname) : NULL;
    if (src->starttls_inject) {
        dst->starttls_inject = fg_malloc(src->starttls_inject_len + 1);
        memcpy(dst->starttls_inject, src->starttls_inject, src->starttls_inject_len + 1);
    }
    dst->rules = fg_calloc(src->nrules ? src->nrules : 1, sizeof(*dst->rules));
    for (size_t i = 0; i < src->nrules; i++) {
        dst->rules[i] = src->rules[i];
        dst->rules[i].text = src->rules[i].text ? fg_strdup(src->rules[i].text) : NULL;
    }
}

int fg_mta_new(uv_loop_t *loop, const struct fg_mta_opts *o, struct fg_mta **out, char *err,
               size_t errlen)
{
    const char *host = o->host ? o->host : "127.0.0.1";
    struct sockaddr_storage ss;
    int r = strchr(host, ':') ? uv_ip6_addr(host, o->port, (struct sockaddr_in6 *)&ss)
                              : uv_ip4_addr(host, o->port, (struct sockaddr_in *)&ss);
    if (r < 0)
        return fg_errf(err, errlen, FG_EINPUT, "fake MTA: bad listen address %s", host);

    struct fg_mta *m = fg_calloc(1, sizeof(*m));
    m->loop = loop;
    m->log = o->log;
    if (o->script) {
        script_copy(&m->sc, o->script);
    } else {
        fg_mta_script_init(&m->sc);
    }
    if (!m->sc.max_size)
        m->sc.max_size = o->max_size ? o->max_size : MTA_DEFAULT_MAX_SIZE;
    fg_rng_seed(&m->rng, m->sc.seed);
    if ((m->sc.caps | m->sc.caps_tls) & FG_MTA_CAP(STARTTLS) &&
        (r = fg_tls_server_ctx_new(m->sc.hostname ? m->sc.hostname : MTA_DEFAULT_HOSTNAME,
                                   &m->tls_ctx, err, errlen)) < 0) {
        fg_mta_script_clear(&m->sc);
        free(m);
        return r;
    }
    if (o->maildir) {
        if ((r = fg_mkdir_p(o->maildir)) < 0) {
            fg_tls_ctx_free(m->tls_ctx);
            fg_mta_script_clear(&m->sc);
            free(m);
            return fg_errf(err, errlen, r, "fake MTA: cannot create %s: %s", o->maildir,
                           fg_strerror(r));
        }
        m->maildir = fg_strdup(o->maildir);
    }
    if (o->ledger_path) {
        m->ledger = fopen(o->ledger_path, "a");
        if (!m->ledger) {
            r = -errno;
            fg_tls_ctx_free(m->tls_ctx);
            fg_mta_script_clear(&m->sc);
            free(m->maildir);
            free(m);
            return fg_errf(err, errlen, r, "fake MTA: cannot open ledger %s: %s", o->ledger_path,
                           fg_strerror(r));
        }
    }

    uv_tcp_init(loop, &m->listener);
    m->listener.data = m;
    m->listener_open = 1;
    r = uv_tcp_bind(&m->listener, (const struct sockaddr *)&ss, 0);
    /* smtp-sink -T: a small receive buffer (inherited by accepted sockets,
     * set before listen so that the window scale matches) makes a client's
     * writes block early. */
    if (r == 0 && m->sc.window > 0) {
        int w = m->sc.window;
        uv_recv_buffer_size((uv_handle_t *)&m->listener, &w);
    }
    if (r == 0)
        r = uv_listen((uv_stream_t *)&m->listener, 511, on_connection);
    if (r == 0) {
        struct sockaddr_storage name;
        int namelen = sizeof(name);
        r = uv_tcp_getsockname(&m->listener, (struct sockaddr *)&name, &namelen);
        if (r == 0)
            m->port = name.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&name)->sin6_port)
                                                 : ntohs(((struct sockaddr_in *)&name)->sin_port);
    }
    if (r < 0) {
        fg_errf(err, errlen, r, "fake MTA: cannot listen on %s:%d: %s", host, o->port,
                uv_strerror(r));
        /* The handle is freed in its close callback on the next loop run. */
        m->closing = 1;
        uv_close((uv_handle_t *)&m->listener, on_listener_closed);
        return r;
    }
    mta_log(m, "listening on %s:%d", host, m->port);
    *out = m;
    return 0;
}

int fg_mta_port(const struct fg_mta *m)
{
    return m->port;
}

const struct fg_ledger_entry *fg_mta_ledger(const struct fg_mta *m, size_t *n)
{
    *n = m->nentries;
    return m->entries;
}

unsigned fg_mta_count_token(const struct fg_mta *m, const char *token)
{
    unsigned k = 0;
    for (size_t i = 0; i < m->nentries; i++)
        if (strcmp(m->entries[i].token, token) == 0)
            k++;
    return k;
}

const struct fg_mta_violation *fg_mta_violations(const struct fg_mta *m, size_t *n)
{
    *n = m->nviol;
    return m->viol;
}

const char *fg_mta_ca_pem(const struct fg_mta *m)
{
    return m->tls_ctx ? fg_tls_ca_pem(m->tls_ctx) : NULL;
}

void fg_mta_close(struct fg_mta *m, void (*cb)(void *ud), void *ud)
{
    if (m->closing)
        return;
    m->closing = 1;
    m->close_cb = cb;
    m->close_ud = ud;
    uv_close((uv_handle_t *)&m->listener, on_listener_closed);
    for (struct mta_conn *c = m->conns; c; c = c->next)
        conn_close(c, 0);
}
