/* refgw - faultgate's reference gateway: a small store-and-forward SMTP relay.
 *
 * refgw --listen HOST:PORT --upstream HOST:PORT --spool DIR
 *       [--timeout NAME=DUR[,NAME=DUR...]] [--retry DUR] [--max-retry-delay DUR]
 *       [--give-up DUR] [--max-size SIZE] [--bug MODE] [--hostname NAME]
 *       [--ready-file PATH] [--starttls]
 *
 * Inbound it is an SMTP server (RFC 5321) that spools each message before
 * its 250 (§6.1) with a Received: line prepended (§4.4); outbound it relays
 * the queue to --upstream (refgw_out.c).  --bug selects one knowledge-base
 * symptom (Q129140, Q197142, Q131150, Q135031) or security flaw (SMTP
 * smuggling, CVE-2011-0411 with --starttls); see README.md.  This file:
 * command line, logging, signals and the inbound server.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "faultgate/fake_x400.h"
#include "faultgate/smtp.h"
#include "faultgate/util.h"
#include "../tls.h"
#include "refgw.h"

struct refgw_config refgw_cfg;
uv_loop_t *refgw_loop;

enum in_state {
    IN_FRESH, /* no HELO/EHLO yet */
    IN_READY, /* greeted, no transaction */
    IN_MAIL,  /* MAIL accepted */
    IN_RCPT,  /* at least one RCPT accepted */
    IN_DATA   /* receiving the body */
};

#define MAX_RCPTS 1000

struct in_conn {
    struct in_conn *next, *prev;
    uv_tcp_t tcp;
    uv_timer_t idle;
    int nclosed; /* handles whose close callback ran */
    int closing;
    int quitting; /* 221 or 421 sent: read nothing more */
    struct fg_smtp_parser p;
    enum in_state state;
    char peer[64];    /* "[ip]:port", for logs */
    char peer_ip[64]; /* "[ip]", for Received: (RFC 5321 §4.4 TCP-info) */
    char helo[256];
    int esmtp;
    /* the transaction */
    struct refgw_msg *msg;
    char *body;
    size_t body_len, body_cap;
    int bol, prev_cr, too_big;
    /* --bug smuggling: a lenient line reader over the body (see
     * smuggle_scan) and where commands resume in the read buffer */
    int sm_cr, sm_dot;
    size_t sm_len, sm_at;
    const char *feed_base;
    size_t feed_off, feed_len, resume;
    /* --bug early-commands: the greeting, or EHLO's reply, held back */
    int held;
    char *held_reply;
    /* the event that stopped the parser */
    enum { EV_NONE, EV_CMD, EV_EOD, EV_SMUGGLED_EOD } ev;
    enum fg_smtp_verb verb;
    char arg[FG_SMTP_LINE_MAX + 1];
    int truncated;
    /* STARTTLS (RFC 3207, --starttls): the session after our 220, up once
     * its handshake is done; with --bug starttls-injection, the plaintext
     * read together with the STARTTLS line, run after the handshake */
    struct fg_tls *tls;
    int tls_up;
    char *injected;
    size_t injected_len;
};

static uv_tcp_t listener;
static uv_signal_t sig_term, sig_int;
static struct in_conn *conns;
static unsigned nconns;
static int pending_accept; /* serial-inbound: a connection waits in accept */
static int stopping;
static struct fg_tls_ctx *tls_ctx; /* --starttls: our certificate, from a CA made at start */

void refgw_log(const char *fmt, ...)
{
    char ts[40];
    uint64_t us = fg_wall_us();
    time_t t = (time_t)(us / 1000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03uZ refgw[%d]: %s\n", ts, (unsigned)(us / 1000u % 1000u), (int)getpid(),
            line);
    fflush(stderr);
}

/* ---- inbound ---------------------------------------------------------- */

static void in_close(struct in_conn *c);
static void try_accept(void);

static void in_handle_closed(uv_handle_t *h)
{
    struct in_conn *c = h->data;
    if (++c->nclosed < 2)
        return;
    refgw_msg_free(c->msg);
    free(c->body);
    free(c->held_reply);
    fg_tls_free(c->tls);
    free(c->injected);
    free(c);
    if (!stopping)
        try_accept();
}

static void in_close(struct in_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    nconns--;
    uv_close((uv_handle_t *)&c->idle, in_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, in_handle_closed);
}

struct in_write {
    uv_write_t req;
    char data[];
};

static void in_write_cb(uv_write_t *req, int status)
{
    free(req);
}

/* in_send - octets onto the wire as they are (plaintext, or TLS records). */
static void in_send(struct in_conn *c, const char *d, size_t n)
{
    if (n == 0 || c->closing)
        return;
    struct in_write *w = fg_malloc(sizeof(*w) + n);
    memcpy(w->data, d, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, in_write_cb) < 0) {
        free(w);
        in_close(c);
    }
}

/* in_tls_flush - the TLS records OpenSSL has ready (handshake, replies). */
static void in_tls_flush(struct in_conn *c)
{
    size_t n;
    char *out = fg_tls_take_output(c->tls, &n);
    if (out)
        in_send(c, out, n);
    free(out);
}

/* Send a reply.  It also goes through the parser (server-to-client), which
 * is how the parser learns that a 354 opened the body. */
static void in_reply(struct in_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void in_reply(struct in_conn *c, const char *fmt, ...)
{
    if (c->closing || c->quitting)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = (int)sizeof(line) - 1;
    fg_smtp_parser_feed(&c->p, FG_S2C, line, (size_t)n);
    if (c->tls_up) {
        if (fg_tls_write(c->tls, line, (size_t)n) < 0) {
            refgw_log("inbound %s: TLS write failed: %s", c->peer, fg_tls_error(c->tls));
            in_close(c);
            return;
        }
        in_tls_flush(c);
        return;
    }
    in_send(c, line, (size_t)n);
}

static void in_shutdown_cb(uv_shutdown_t *req, int status)
{
    struct in_conn *c = req->handle->data;
    free(req);
    in_close(c);
}

/* Close after the replies already queued have been written (221, 421). */
static void in_finish(struct in_conn *c)
{
    if (c->closing || c->quitting)
        return;
    c->quitting = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->idle);
    uv_shutdown_t *req = fg_malloc(sizeof(*req));
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, in_shutdown_cb) < 0) {
        free(req);
        in_close(c);
    }
}

static void idle_cb(uv_timer_t *t)
{
    struct in_conn *c = t->data;
    /* RFC 5321 §4.5.3.2.7: the server may close an idle session, saying
     * 421 first (§3.8). */
    refgw_log("inbound %s: idle timeout", c->peer);
    in_reply(c, "421 4.4.2 %s Error: timeout exceeded\r\n", refgw_cfg.hostname);
    in_finish(c);
}

/* --bug early-commands: a reply held back 200 ms (the greeting, as a
 * greeting pause does, or EHLO's, as a slow HELO check would) while the
 * commands read meanwhile are answered at once, so the replies go out of
 * step (RFC 5321 §4.3.2; RFC 2920 §3.1: replies in order). */
#define EARLY_HOLD_MS 200

static void held_cb(uv_timer_t *t)
{
    struct in_conn *c = t->data;
    c->held = 0;
    char *r = c->held_reply;
    c->held_reply = NULL;
    uv_timer_start(&c->idle, idle_cb, refgw_cfg.to.idle, refgw_cfg.to.idle);
    if (r)
        in_reply(c, "%s", r);
    free(r);
}

static void hold_reply(struct in_conn *c, char *text)
{
    c->held = 1;
    c->held_reply = text;
    uv_timer_start(&c->idle, held_cb, EARLY_HOLD_MS, 0);
}

static void txn_reset(struct in_conn *c)
{
    refgw_msg_free(c->msg);
    c->msg = NULL;
    c->body_len = 0;
    c->too_big = 0;
    if (c->state > IN_READY)
        c->state = IN_READY;
}

/* Extract the path from "FROM:<path> params" / "TO:<path> params".
 * Returns 0 and sets path/params, or -1. */
static int parse_path(const char *arg, const char *kw, const char **path, size_t *plen,
                      const char **params)
{
    size_t kl = strlen(kw);
    if (strncasecmp(arg, kw, kl) != 0)
        return -1;
    const char *p = arg + kl;
    while (*p == ' ') /* tolerated, though §4.1.2 has no space here */
        p++;
    if (*p != '<')
        return -1;
    const char *e = strchr(p, '>');
    if (!e)
        return -1;
    *path = p + 1;
    *plen = (size_t)(e - p - 1);
    *params = e + 1;
    /* the source-route part of a path (§4.1.2, obsolete) is dropped */
    const char *colon = memchr(*path, ':', *plen);
    if (**path == '@' && colon) {
        *plen -= (size_t)(colon + 1 - *path);
        *path = colon + 1;
    }
    for (size_t i = 0; i < *plen; i++)
        if ((unsigned char)(*path)[i] <= ' ' || (*path)[i] == '<')
            return -1;
    return 0;
}

static void cmd_mail(struct in_conn *c)
{
    const char *path, *params;
    size_t plen;
    if (c->state == IN_FRESH) {
        in_reply(c, "503 5.5.1 Error: send HELO/EHLO first\r\n");
        return;
    }
    if (c->state != IN_READY) { /* §4.1.4: no nested MAIL */
        in_reply(c, "503 5.5.1 Error: nested MAIL command\r\n");
        return;
    }
    if (parse_path(c->arg, "FROM:", &path, &plen, &params) < 0) {
        in_reply(c, "501 5.1.7 Bad sender address syntax\r\n");
        return;
    }
    /* SIZE=n (RFC 1870 §6) */
    const char *sz = strcasestr(params, "SIZE=");
    if (sz && strtoull(sz + 5, NULL, 10) > refgw_cfg.max_size) {
        in_reply(c, "552 5.3.4 Message size exceeds fixed limit\r\n");
        return;
    }
    c->msg = refgw_msg_new();
    free(c->msg->sender);
    c->msg->sender = fg_strndup(path, plen);
    c->state = IN_MAIL;
    in_reply(c, "250 2.1.0 Ok\r\n");
}

static void cmd_rcpt(struct in_conn *c)
{
    const char *path, *params;
    size_t plen;
    if (c->state != IN_MAIL && c->state != IN_RCPT) {
        in_reply(c, "503 5.5.1 Error: need MAIL command\r\n");
        return;
    }
    if (parse_path(c->arg, "TO:", &path, &plen, &params) < 0 || plen == 0) {
        in_reply(c, "501 5.1.3 Bad recipient address syntax\r\n");
        return;
    }
    if (c->msg->nrcpts >= MAX_RCPTS) { /* §4.5.3.1.10 */
        in_reply(c, "452 4.5.3 Error: too many recipients\r\n");
        return;
    }
    refgw_msg_add_rcpt(c->msg, path, plen);
    c->state = IN_RCPT;
    in_reply(c, "250 2.1.5 Ok\r\n");
}

static void cmd_data(struct in_conn *c)
{
    if (c->state == IN_MAIL) {
        in_reply(c, "554 5.5.1 Error: no valid recipients\r\n");
        return;
    }
    if (c->state != IN_RCPT) {
        in_reply(c, "503 5.5.1 Error: need RCPT command\r\n");
        return;
    }
    if (c->arg[0]) {
        in_reply(c, "501 5.5.4 Syntax: DATA\r\n");
        return;
    }
    c->state = IN_DATA;
    c->body_len = 0;
    c->sm_cr = c->sm_dot = 0;
    c->sm_len = c->sm_at = 0;
    c->bol = 1;
    c->prev_cr = 0;
    c->too_big = 0;
    in_reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
}

static void body_add(struct in_conn *c, const char *s, size_t n)
{
    if (c->too_big)
        return;
    if (c->body_len + n > refgw_cfg.max_size + 2) {
        c->too_big = 1;
        return;
    }
    fg_array_reserve((void **)&c->body, &c->body_cap, c->body_len + n + 1, 1);
    memcpy(c->body + c->body_len, s, n);
    c->body_len += n;
}

/* Remove the transparency dots (RFC 5321 §4.5.2) and turn bare CR or LF
 * into CRLF, so nothing we relay carries a bare line ending (§2.3.8). */
static void body_feed(struct in_conn *c, const char *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char b = d[i];
        if (c->prev_cr) {
            c->prev_cr = 0;
            body_add(c, "\n", 1);
            c->bol = 1;
            if (b == '\n')
                continue;
        }
        if (b == '\r') {
            body_add(c, "\r", 1);
            c->prev_cr = 1;
        } else if (b == '\n') {
            body_add(c, "\r\n", 2);
            c->bol = 1;
        } else if (c->bol && b == '.') {
            c->bol = 0; /* the stuffing dot */
        } else {
            c->bol = 0;
            body_add(c, &b, 1);
        }
    }
}

/* smuggle_scan - --bug smuggling: the body read the way servers open to
 * SMTP smuggling read it (CVE-2023-51764/51765/51766): a line ends at LF,
 * at CR LF, or at a CR followed by anything else; CR and NUL octets are
 * dropped; a line that is then "." ends the data.  RFC 5321 §4.1.1.4 and
 * §2.3.8 forbid exactly this.  Feeds the body up to the end found and
 * returns the offset in d where commands resume (n: right after d), or
 * SMUGGLE_NONE when the data goes on. */
#define SMUGGLE_NONE ((size_t)-1)
static size_t smuggle_scan(struct in_conn *c, const char *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char b = d[i];
        size_t resume = (size_t)-1;
        if (c->sm_cr && b == '\r') {
            body_feed(c, &b, 1);
            continue;
        }
        if (c->sm_cr || b == '\n') {
            resume = b == '\n' ? i + 1 : i; /* a CR alone ended the line */
            if (c->sm_len == 1 && c->sm_dot) {
                c->body_len = c->sm_at; /* the "." line is not text */
                c->prev_cr = 0;
                return resume;
            }
            c->sm_cr = 0;
            c->sm_len = 0;
            c->sm_dot = 0;
            if (b == '\n') {
                body_feed(c, &b, 1);
                c->sm_at = c->body_len;
                continue;
            }
            c->sm_at = c->body_len;
        }
        body_feed(c, &b, 1);
        if (b == '\r')
            c->sm_cr = 1;
        else if (b != '\0')
            c->sm_dot = ++c->sm_len == 1 && b == '.';
    }
    return SMUGGLE_NONE;
}

static void format_date(char *out, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

static void end_of_data(struct in_conn *c)
{
    if (c->prev_cr) {
        c->prev_cr = 0;
        body_add(c, "\n", 1);
    }
    if (c->body_len &&
        !(c->body_len >= 2 && c->body[c->body_len - 2] == '\r' && c->body[c->body_len - 1] == '\n'))
        body_add(c, "\r\n", 2);
    if (c->too_big) {
        refgw_log("inbound %s: message too big, rejected", c->peer);
        in_reply(c, "552 5.3.4 Message size exceeds fixed limit\r\n");
        txn_reset(c);
        return;
    }
    struct refgw_msg *m = c->msg;
    c->msg = NULL;
    /* RFC 5321 §4.4: prepend our Received: line, leave the rest alone. */
    char date[64];
    format_date(date, sizeof(date));
    char *rcv = fg_asprintf("Received: from %s (%s)\r\n\tby %s (refgw) with %s id %s\r\n"
                            "\tfor <%s>; %s\r\n",
                            c->helo, c->peer_ip, refgw_cfg.hostname, c->esmtp ? "ESMTP" : "SMTP",
                            m->id, m->rcpts[0].addr, date);
    size_t rl = strlen(rcv);
    m->body = fg_malloc(rl + c->body_len + 1);
    memcpy(m->body, rcv, rl);
    if (c->body_len)
        memcpy(m->body + rl, c->body, c->body_len);
    m->body_len = rl + c->body_len;
    free(rcv);
    c->body_len = 0;
    c->state = IN_READY;
    /* RFC 5321 §6.1: on disk before we say 250. */
    int rc = refgw_spool_write(m);
    if (rc < 0) {
        refgw_log("inbound %s: spool write failed: %s", c->peer, strerror(-rc));
        in_reply(c, "451 4.3.0 Error: queue file write error\r\n");
        refgw_msg_free(m);
        return;
    }
    char token[FG_TOKEN_MAX];
    size_t tl = fg_smtp_token_find(m->body, m->body_len, token, sizeof(token));
    refgw_log("accepted id=%s from=<%s> rcpts=%zu size=%zu token=%.*s peer=%s", m->id, m->sender,
              m->nrcpts, m->body_len, tl ? (int)tl : 1, tl ? token : "-", c->peer);
    in_reply(c, "250 2.0.0 Ok: queued as %s\r\n", m->id);
    refgw_queue_add(m);
}

/* The EHLO reply (RFC 5321 §4.1.1.1); STARTTLS only before TLS (RFC 3207
 * §4.2: not offered again after the handshake). */
static char *ehlo_text(const struct in_conn *c)
{
    return fg_asprintf("250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
                       "%s250 ENHANCEDSTATUSCODES\r\n",
                       refgw_cfg.hostname, (unsigned long long)refgw_cfg.max_size,
                       tls_ctx && !c->tls ? "250-STARTTLS\r\n" : "");
}

/* STARTTLS (RFC 3207 §4): 220, then the TLS handshake on what the client
 * sends next.  What the read loop holds after the command line is the
 * subject of in_starttls_rest. */
static void cmd_starttls(struct in_conn *c)
{
    if (!tls_ctx) {
        in_reply(c, "502 5.5.2 Error: command not recognized\r\n");
        return;
    }
    if (c->tls) {
        in_reply(c, "554 5.5.1 Error: TLS already active\r\n");
        return;
    }
    if (c->arg[0]) {
        in_reply(c, "501 5.5.4 Syntax: STARTTLS\r\n");
        return;
    }
    in_reply(c, "220 2.0.0 Ready to start TLS\r\n");
    c->tls = fg_tls_new(tls_ctx);
}

static void handle_command(struct in_conn *c)
{
    if (c->truncated) { /* §4.5.3.1.4 */
        in_reply(c, "500 5.5.2 Error: line too long\r\n");
        return;
    }
    switch (c->verb) {
    case FG_VERB_HELO:
    case FG_VERB_EHLO:
        if (!c->arg[0]) {
            in_reply(c, "501 5.5.4 Syntax: %s hostname\r\n", fg_smtp_verb_name(c->verb));
            return;
        }
        snprintf(c->helo, sizeof(c->helo), "%.200s", c->arg);
        txn_reset(c);
        c->state = IN_READY;
        c->esmtp = c->verb == FG_VERB_EHLO;
        if (c->esmtp && refgw_cfg.bug == REFGW_BUG_EARLY_COMMANDS && !c->held) {
            hold_reply(c, ehlo_text(c));
        } else if (c->esmtp) {
            char *t = ehlo_text(c);
            in_reply(c, "%s", t);
            free(t);
        } else
            in_reply(c, "250 %s\r\n", refgw_cfg.hostname);
        break;
    case FG_VERB_MAIL:
        cmd_mail(c);
        break;
    case FG_VERB_RCPT:
        cmd_rcpt(c);
        break;
    case FG_VERB_DATA:
        cmd_data(c);
        break;
    case FG_VERB_STARTTLS:
        cmd_starttls(c);
        break;
    case FG_VERB_RSET:
        txn_reset(c);
        in_reply(c, "250 2.0.0 Ok\r\n");
        break;
    case FG_VERB_NOOP:
        in_reply(c, "250 2.0.0 Ok\r\n");
        break;
    case FG_VERB_QUIT:
        in_reply(c, "221 2.0.0 Bye\r\n");
        in_finish(c);
        break;
    case FG_VERB_VRFY:
        in_reply(c, "252 2.0.0 Cannot VRFY user\r\n");
        break;
    case FG_VERB_HELP:
        in_reply(c, "214 2.0.0 HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY\r\n");
        break;
    default:
        in_reply(c, "502 5.5.2 Error: command not recognized\r\n");
        break;
    }
}

static int in_parser_cb(void *ud, const struct fg_smtp_event *ev)
{
    struct in_conn *c = ud;
    if (ev->dir != FG_C2S)
        return 0;
    switch (ev->type) {
    case FG_SMTP_EV_COMMAND: {
        c->ev = EV_CMD;
        c->verb = ev->verb;
        size_t n = ev->arg_len < FG_SMTP_LINE_MAX ? ev->arg_len : FG_SMTP_LINE_MAX;
        memcpy(c->arg, ev->arg ? ev->arg : "", ev->arg ? n : 0);
        c->arg[ev->arg ? n : 0] = '\0';
        c->truncated = ev->truncated;
        return 1;
    }
    case FG_SMTP_EV_DATA:
        if (c->state != IN_DATA)
            return 0;
        if (refgw_cfg.bug == REFGW_BUG_SMUGGLING) {
            size_t k = smuggle_scan(c, ev->data, ev->data_len);
            if (k == SMUGGLE_NONE)
                return 0;
            /* Where the rest begins in the read buffer (a dot the parser
             * held back is not in it: then the feed's start). */
            const char *at = ev->data + k;
            if (at >= c->feed_base + c->feed_off && at <= c->feed_base + c->feed_len)
                c->resume = (size_t)(at - c->feed_base);
            else
                c->resume = c->feed_off;
            c->ev = EV_SMUGGLED_EOD;
            return 1;
        }
        body_feed(c, ev->data, ev->data_len);
        return 0;
    case FG_SMTP_EV_END_OF_DATA:
        c->ev = EV_EOD;
        return 1;
    default:
        return 0;
    }
}

static void in_alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    static char buf[65536];
    *b = uv_buf_init(buf, sizeof(buf));
}

/* in_starttls_rest - the octets that came in the same read as the
 * STARTTLS line, after it.  RFC 3207 §4.2 and the CVE-2011-0411 fix: they
 * were sent in plaintext before TLS, so they are thrown away.  With --bug
 * starttls-injection they are kept and run as the first commands of the
 * TLS session, as the vulnerable servers did from their input buffer. */
static void in_starttls_rest(struct in_conn *c, const char *d, size_t n)
{
    if (n == 0)
        return;
    if (refgw_cfg.bug == REFGW_BUG_STARTTLS_INJECTION) {
        c->injected = fg_realloc(c->injected, c->injected_len + n);
        memcpy(c->injected + c->injected_len, d, n);
        c->injected_len += n;
        refgw_log("inbound %s: %zu plaintext octets after STARTTLS kept for after the handshake",
                  c->peer, n);
    } else {
        refgw_log("inbound %s: %zu plaintext octets after STARTTLS discarded", c->peer, n);
    }
}

static void in_feed(struct in_conn *c, const char *base, size_t len);

/* in_tls_input - ciphertext from the client after our 220 to STARTTLS. */
static void in_tls_input(struct in_conn *c, const char *d, size_t n)
{
    if (fg_tls_put(c->tls, d, n) < 0) {
        in_close(c);
        return;
    }
    if (!c->tls_up) {
        int r = fg_tls_handshake(c->tls);
        in_tls_flush(c);
        if (r < 0) {
            refgw_log("inbound %s: TLS handshake failed: %s", c->peer, fg_tls_error(c->tls));
            in_close(c);
            return;
        }
        if (r == 0)
            return;
        c->tls_up = 1;
        refgw_log("inbound %s: TLS established (%s)", c->peer, fg_tls_version(c->tls));
        /* RFC 3207 §4.2: the server MUST discard any knowledge obtained
         * from the client before TLS, the EHLO argument included: a new
         * session that expects EHLO again, on a parser started afresh
         * (greeted already). */
        txn_reset(c);
        c->state = IN_FRESH;
        c->esmtp = 0;
        snprintf(c->helo, sizeof(c->helo), "unknown");
        fg_smtp_parser_init(&c->p, in_parser_cb, c);
        fg_smtp_parser_feed(&c->p, FG_S2C, "220 x\r\n", 7);
        if (c->injected) {
            char *inj = c->injected;
            size_t il = c->injected_len;
            c->injected = NULL;
            c->injected_len = 0;
            in_feed(c, inj, il);
            free(inj);
        }
    }
    static char plain[16384];
    int k = 0;
    while (!c->closing && !c->quitting && (k = fg_tls_read(c->tls, plain, sizeof(plain))) > 0)
        in_feed(c, plain, (size_t)k);
    if (c->closing)
        return;
    in_tls_flush(c);
    if (k < 0 && !c->quitting) {
        if (k != UV_EOF)
            refgw_log("inbound %s: TLS: %s", c->peer, fg_tls_error(c->tls));
        in_close(c);
    }
}

/* in_feed - plaintext commands (and bodies) from the client. */
static void in_feed(struct in_conn *c, const char *base, size_t len)
{
    /* The parser stops at each command so its reply (a 354 above all) is
     * seen before the bytes that follow; events it held are fed out too. */
    size_t off = 0;
    while (!c->closing && !c->quitting && (off < len || fg_smtp_parser_queued(&c->p, FG_C2S))) {
        c->ev = EV_NONE;
        c->feed_base = base;
        c->feed_off = off;
        c->feed_len = len;
        size_t n = fg_smtp_parser_feed(&c->p, FG_C2S, base + off, len - off);
        off += n;
        if (c->ev == EV_SMUGGLED_EOD) {
            /* --bug smuggling: the message ends here and what follows is
             * read as commands, by a parser that starts over greeted. */
            end_of_data(c);
            fg_smtp_parser_init(&c->p, in_parser_cb, c);
            fg_smtp_parser_feed(&c->p, FG_S2C, "220 x\r\n", 7);
            off = c->resume;
        } else if (c->ev == EV_CMD) {
            handle_command(c);
            if (c->tls && !c->tls_up) {
                in_starttls_rest(c, base + off, len - off);
                return;
            }
        } else if (c->ev == EV_EOD && c->state == IN_DATA)
            end_of_data(c);
        else if (n == 0 && off < len)
            break;
    }
}

static void in_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct in_conn *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->state == IN_DATA || c->state == IN_RCPT || c->state == IN_MAIL)
            refgw_log("inbound %s: connection lost mid-transaction, nothing accepted", c->peer);
        in_close(c);
        return;
    }
    if (!c->held)
        uv_timer_again(&c->idle);
    if (c->tls)
        in_tls_input(c, b->base, (size_t)nread);
    else
        in_feed(c, b->base, (size_t)nread);
}

static int serial_busy(void)
{
    /* Q131150: one conversation at a time, and none while relaying. */
    return refgw_cfg.bug == REFGW_BUG_SERIAL_INBOUND && (nconns > 0 || refgw_out_busy());
}

static void accept_one(void)
{
    struct in_conn *c = fg_calloc(1, sizeof(*c));
    uv_tcp_init(refgw_loop, &c->tcp);
    uv_timer_init(refgw_loop, &c->idle);
    c->tcp.data = c->idle.data = c;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    nconns++;
    if (uv_accept((uv_stream_t *)&listener, (uv_stream_t *)&c->tcp) < 0) {
        in_close(c);
        return;
    }
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    snprintf(c->peer, sizeof(c->peer), "[%s]:%d", ip, port);
    snprintf(c->peer_ip, sizeof(c->peer_ip), "[%s]", ip);
    snprintf(c->helo, sizeof(c->helo), "unknown");
    fg_smtp_parser_init(&c->p, in_parser_cb, c);
    uv_timer_start(&c->idle, idle_cb, refgw_cfg.to.idle, refgw_cfg.to.idle);
    uv_read_start((uv_stream_t *)&c->tcp, in_alloc_cb, in_read_cb);
    refgw_log("inbound connection from %s", c->peer);
    if (refgw_cfg.bug == REFGW_BUG_EARLY_COMMANDS)
        hold_reply(c, fg_asprintf("220 %s ESMTP refgw\r\n", refgw_cfg.hostname));
    else
        in_reply(c, "220 %s ESMTP refgw\r\n", refgw_cfg.hostname);
}

static void try_accept(void)
{
    if (pending_accept && !serial_busy() && !stopping) {
        pending_accept = 0;
        accept_one();
    }
}

void refgw_in_outbound_idle(void)
{
    try_accept();
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        refgw_log("accept error: %s", uv_strerror(status));
        return;
    }
    if (serial_busy()) {
        /* Left un-accepted: libuv stops watching the listener until we
         * accept, so later connections wait unanswered in the backlog. */
        pending_accept = 1;
        return;
    }
    accept_one();
}

/* ---- start-up and shutdown ------------------------------------------- */

static void on_signal(uv_signal_t *s, int signum)
{
    if (stopping)
        return;
    stopping = 1;
    refgw_log("signal %d: stopping", signum);
    uv_close((uv_handle_t *)&listener, NULL);
    while (conns)
        in_close(conns);
    refgw_out_shutdown();
    refgw_x400_shutdown();
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("refgw: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static uint64_t opt_duration(const char *name, const char *v)
{
    uint64_t ms;
    if (fg_duration_parse(v, &ms) < 0)
        die_usage("--%s: bad duration '%s'", name, v);
    return ms;
}

static void opt_timeouts(const char *spec)
{
    char *s = fg_strdup(spec), *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            die_usage("--timeout: expected NAME=DUR, got '%s'", tok);
        *eq = '\0';
        struct {
            const char *name;
            uint64_t *slot;
        } map[] = {{"greeting", &refgw_cfg.to.greeting},   {"ehlo", &refgw_cfg.to.ehlo},
                   {"mail", &refgw_cfg.to.mail},           {"rcpt", &refgw_cfg.to.rcpt},
                   {"data_init", &refgw_cfg.to.data_init}, {"data_block", &refgw_cfg.to.data_block},
                   {"data_done", &refgw_cfg.to.data_done}, {"idle", &refgw_cfg.to.idle}};
        size_t i;
        for (i = 0; i < sizeof(map) / sizeof(map[0]); i++)
            if (!strcmp(map[i].name, tok))
                break;
        if (i == sizeof(map) / sizeof(map[0]))
            die_usage("--timeout: unknown timeout '%s'", tok);
        uint64_t ms = opt_duration("timeout", eq + 1);
        if (ms == 0)
            die_usage("--timeout: %s must be more than 0", tok);
        *map[i].slot = ms;
    }
    free(s);
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"upstream", required_argument, NULL, 'u'},
                                         {"spool", required_argument, NULL, 's'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"retry", required_argument, NULL, 'r'},
                                         {"max-retry-delay", required_argument, NULL, 'M'},
                                         {"give-up", required_argument, NULL, 'g'},
                                         {"max-size", required_argument, NULL, 'S'},
                                         {"bug", required_argument, NULL, 'b'},
                                         {"hostname", required_argument, NULL, 'H'},
                                         {"ready-file", required_argument, NULL, 'R'},
                                         {"x400-upstream", required_argument, NULL, 'X'},
                                         {"x400-domain", required_argument, NULL, 'D'},
                                         {"x400-mode", required_argument, NULL, 0x100},
                                         {"x400-application", required_argument, NULL, 0x101},
                                         {"starttls", no_argument, NULL, 'T'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    struct refgw_config *c = &refgw_cfg;
    c->to = (struct refgw_timeouts){300000, 300000, 300000, 300000, 120000, 180000, 600000, 300000};
    c->retry_ms = 60000;
    c->max_retry_ms = 3600000;
    c->give_up_ms = 5ull * 24 * 3600 * 1000;
    c->max_size = 10u << 20;
    snprintf(c->hostname, sizeof(c->hostname), "refgw.localdomain");
    int have_listen = 0, have_up = 0, opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            if (fg_hostport_parse(optarg, c->listen_host, sizeof(c->listen_host), &c->listen_port) <
                0)
                die_usage("--listen: expected HOST:PORT, got '%s'", optarg);
            have_listen = 1;
            break;
        case 'u':
            if (fg_hostport_parse(optarg, c->up_host, sizeof(c->up_host), &c->up_port) < 0 ||
                c->up_port == 0)
                die_usage("--upstream: expected HOST:PORT, got '%s'", optarg);
            have_up = 1;
            break;
        case 's':
            free(c->spool);
            c->spool = fg_strdup(optarg);
            break;
        case 't':
            opt_timeouts(optarg);
            break;
        case 'r':
            c->retry_ms = opt_duration("retry", optarg);
            break;
        case 'M':
            c->max_retry_ms = opt_duration("max-retry-delay", optarg);
            break;
        case 'g':
            c->give_up_ms = opt_duration("give-up", optarg);
            break;
        case 'S':
            if (fg_size_parse(optarg, &c->max_size) < 0 || c->max_size == 0)
                die_usage("--max-size: bad size '%s'", optarg);
            break;
        case 'b':
            if (!strcmp(optarg, "none"))
                c->bug = REFGW_BUG_NONE;
            else if (!strcmp(optarg, "no-data-timeout"))
                c->bug = REFGW_BUG_NO_DATA_TIMEOUT;
            else if (!strcmp(optarg, "crash-on-ehlo-drop"))
                c->bug = REFGW_BUG_CRASH_ON_EHLO_DROP;
            else if (!strcmp(optarg, "serial-inbound"))
                c->bug = REFGW_BUG_SERIAL_INBOUND;
            else if (!strcmp(optarg, "silent-drop"))
                c->bug = REFGW_BUG_SILENT_DROP;
            else if (!strcmp(optarg, "smuggling"))
                c->bug = REFGW_BUG_SMUGGLING;
            else if (!strcmp(optarg, "early-commands"))
                c->bug = REFGW_BUG_EARLY_COMMANDS;
            else if (!strcmp(optarg, "starttls-injection"))
                c->bug = REFGW_BUG_STARTTLS_INJECTION;
            else if (!strncmp(optarg, "bad-minor-sync=", 15)) {
                enum fg_x400_sync_bug xb;
                if (fg_x400_sync_bug_parse(optarg + 15, &xb) < 0 || xb == FG_X400_SYNC_OK)
                    die_usage("--bug: unknown bad-minor-sync variant '%s' (first-serial-0, "
                              "duplicate-serial, skipped-serial, no-reset, no-gt, window-overrun)",
                              optarg + 15);
                c->bug = REFGW_BUG_BAD_MINOR_SYNC;
                c->x400_bug = (int)xb;
            } else
                die_usage("--bug: unknown mode '%s' (none, no-data-timeout, crash-on-ehlo-drop, "
                          "serial-inbound, silent-drop, bad-minor-sync=VARIANT, smuggling, "
                          "early-commands, starttls-injection)",
                          optarg);
            break;
        case 'H':
            if (!optarg[0] || strpbrk(optarg, " \t\r\n") || strlen(optarg) >= sizeof(c->hostname))
                die_usage("--hostname: bad name '%s'", optarg);
            snprintf(c->hostname, sizeof(c->hostname), "%s", optarg);
            break;
        case 'X':
            if (fg_hostport_parse(optarg, c->x400_host, sizeof(c->x400_host), &c->x400_port) < 0 ||
                c->x400_port == 0)
                die_usage("--x400-upstream: expected HOST:PORT, got '%s'", optarg);
            break;
        case 'D':
            if (!optarg[0] || strpbrk(optarg, " \t\r\n@") ||
                strlen(optarg) >= sizeof(c->x400_domain))
                die_usage("--x400-domain: bad domain '%s'", optarg);
            snprintf(c->x400_domain, sizeof(c->x400_domain), "%s", optarg);
            break;
        case 0x100: /* refgw_x400.c */
            if (strcmp(optarg, "x410") != 0 && strcmp(optarg, "1988") != 0)
                die_usage("--x400-mode: expected x410 or 1988, got '%s'", optarg);
            c->x400_normal = strcmp(optarg, "1988") == 0;
            break;
        case 0x101:
            if (strcmp(optarg, "p1") != 0 && strcmp(optarg, "isode-sink") != 0)
                die_usage("--x400-application: expected p1 or isode-sink, got '%s'", optarg);
            c->x400_isode_sink = strcmp(optarg, "isode-sink") == 0;
            break;
        case 'T':
            c->starttls = 1;
            break;
        case 'R':
            free(c->ready_file);
            c->ready_file = fg_strdup(optarg);
            break;
        case 'h':
            printf("usage: refgw --listen HOST:PORT --upstream HOST:PORT --spool DIR\n"
                   "             [--timeout NAME=DUR[,NAME=DUR...]] [--retry DUR]\n"
                   "             [--max-retry-delay DUR] [--give-up DUR] [--max-size SIZE]\n"
                   "             [--bug MODE] [--hostname NAME] [--ready-file PATH]\n"
                   "             [--x400-upstream HOST:PORT [--x400-domain DOMAIN]\n"
                   "              [--x400-mode x410|1988] [--x400-application p1|isode-sink]]\n"
                   "             [--starttls]\n");
            exit(0);
        case 'V':
            printf("refgw %s (faultgate reference gateway)\n", FG_VERSION);
            exit(0);
        default:
            die_usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        die_usage("unexpected argument '%s'", argv[optind]);
    if (!have_listen || !have_up || !c->spool)
        die_usage("--listen, --upstream and --spool are required");
    if (c->bug == REFGW_BUG_BAD_MINOR_SYNC && !c->x400_port)
        die_usage("--bug bad-minor-sync=... needs --x400-upstream");
    if (c->bug == REFGW_BUG_STARTTLS_INJECTION)
        c->starttls = 1; /* the bug is in STARTTLS: offered with it */
    if (c->retry_ms == 0)
        c->retry_ms = 1;
    if (c->max_retry_ms < c->retry_ms)
        c->max_retry_ms = c->retry_ms;
}

static int write_ready_file(int port)
{
    char *tmp = fg_asprintf("%s.tmp", refgw_cfg.ready_file);
    FILE *f = fopen(tmp, "w");
    int rc = 0;
    if (!f) {
        rc = -errno;
    } else {
        fprintf(f, "%s:%d\n", refgw_cfg.listen_host, port);
        if (fclose(f) != 0)
            rc = -errno;
        if (!rc && rename(tmp, refgw_cfg.ready_file) != 0)
            rc = -errno;
    }
    free(tmp);
    return rc;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    refgw_loop = uv_default_loop();
    if (fg_mkdir_p(refgw_cfg.spool) < 0) {
        fprintf(stderr, "refgw: cannot create spool directory %s\n", refgw_cfg.spool);
        return 2;
    }
    struct sockaddr_storage ss;
    int rc =
        strchr(refgw_cfg.listen_host, ':')
            ? uv_ip6_addr(refgw_cfg.listen_host, refgw_cfg.listen_port, (struct sockaddr_in6 *)&ss)
            : uv_ip4_addr(refgw_cfg.listen_host, refgw_cfg.listen_port, (struct sockaddr_in *)&ss);
    if (rc == 0 && strchr(refgw_cfg.up_host, ':') == NULL) {
        struct sockaddr_in tmp;
        rc = uv_ip4_addr(refgw_cfg.up_host, refgw_cfg.up_port, &tmp);
    }
    if (rc < 0) {
        fprintf(stderr, "refgw: addresses must be numeric IP addresses\n");
        return 2;
    }
    uv_tcp_init(refgw_loop, &listener);
    rc = uv_tcp_bind(&listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&listener, 128, on_connection);
    if (rc < 0) {
        fprintf(stderr, "refgw: cannot listen on %s:%d: %s\n", refgw_cfg.listen_host,
                refgw_cfg.listen_port, uv_strerror(rc));
        return 2;
    }
    int sl = sizeof(ss);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&ss, &sl);
    int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    uv_signal_init(refgw_loop, &sig_term);
    uv_signal_init(refgw_loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    if (refgw_cfg.starttls) {
        /* A certificate for --hostname from a CA made now: clients that
         * probe STARTTLS do not verify it (nothing else knows that CA). */
        char err[256];
        if (fg_tls_server_ctx_new(refgw_cfg.hostname, &tls_ctx, err, sizeof(err)) < 0) {
            fprintf(stderr, "refgw: %s\n", err);
            return 2;
        }
    }
    refgw_out_init();
    refgw_x400_init();
    static const char *const bugs[] = {"none",           "no-data-timeout", "crash-on-ehlo-drop",
                                       "serial-inbound", "silent-drop",     "bad-minor-sync",
                                       "smuggling",      "early-commands",  "starttls-injection"};
    refgw_log("listening on %s:%d, upstream %s:%d, spool %s, bug %s", refgw_cfg.listen_host, port,
              refgw_cfg.up_host, refgw_cfg.up_port, refgw_cfg.spool, bugs[refgw_cfg.bug]);
    rc = refgw_spool_load();
    if (rc < 0)
        refgw_log("spool: cannot read %s: %s", refgw_cfg.spool, strerror(-rc));
    if (refgw_cfg.ready_file && (rc = write_ready_file(port)) < 0) {
        fprintf(stderr, "refgw: cannot write ready file %s: %s\n", refgw_cfg.ready_file,
                strerror(-rc));
        return 2;
    }
    uv_run(refgw_loop, UV_RUN_DEFAULT);
    refgw_queue_free_all();
    fg_tls_ctx_free(tls_ctx);
    uv_loop_close(refgw_loop);
    free(refgw_cfg.spool);
    free(refgw_cfg.ready_file);
    refgw_log("stopped");
    return 0;
}
