/* client.c - the injector: submits token-stamped messages over SMTP.
 *
 * A strict, sequential SMTP client on libuv and the shared SMTP parser.
 * All messages go over one connection: greeting, EHLO (HELO if EHLO is
 * refused with 5xx, RFC 5321 §3.2), then per message MAIL, RCPT for each
 * recipient, DATA, the dot-stuffed body (§4.5.2), and finally QUIT.  A
 * message whose connection fails or whose reply does not come within the
 * deadline is marked failed, and the next one gets a new connection.  With
 * no messages it is a liveness probe: connect, greeting, QUIT.
 *
 * Every write and read is reported to the capture (synth mode) so that the
 * injector's leg appears in the run's pcap even without live capture.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/injector.h"
#include "faultgate/util.h"

#define INJ_READ_BUF (64u * 1024)
#define INJ_DEFAULT_TIMEOUT_MS 30000u

enum inj_state {
    ST_IDLE,
    ST_CONNECTING,
    ST_GREETING,
    ST_EHLO,
    ST_HELO,
    ST_MAIL,
    ST_RCPT,
    ST_DATA,
    ST_EOD,
    ST_RSET,
    ST_QUIT,
    ST_FINISHED
};

struct fg_injector {
    uv_loop_t *loop;
    char *host;
    int port;
    struct fg_inject_msg *msgs;
    size_t nmsgs;
    uint64_t timeout_ms;
    struct fg_capture *capture;
    char *helo;
    fg_injector_done_cb done_cb;
    void *ud;

    uv_timer_t timer;
    int timer_open;
    uv_tcp_t tcp;
    uv_connect_t creq;
    int tcp_open;    /* initialised and its close callback not yet run */
    int tcp_closing; /* uv_close called */
    struct fg_synth_conn *sc;
    struct fg_smtp_parser p;
    unsigned nconns;

    enum inj_state st;
    size_t idx; /* message being (or next to be) submitted */
    size_t rcpt_i;
    size_t rcpt_ok;
    int probe_status;

    /* The reply the parser stopped on. */
    int have_reply;
    int reply_code;

    int closing;
    void (*close_cb)(void *ud);
    void *close_ud;

    char rbuf[INJ_READ_BUF];
};

struct inj_write {
    uv_write_t req;
    struct fg_injector *inj;
    char data[];
};

static void inj_connect(struct fg_injector *inj);
static void conn_close(struct fg_injector *inj);

/* --- deadlines -------------------------------------------------------- */

static void on_timeout(uv_timer_t *t);

static void arm(struct fg_injector *inj)
{
    uv_timer_start(&inj->timer, on_timeout, inj->timeout_ms, 0);
}

/* --- failures --------------------------------------------------------- */

static int in_message(const struct fg_injector *inj)
{
    return inj->st >= ST_MAIL && inj->st <= ST_EOD;
}

/* msg_fail - the current message failed (or the session it was to use
 * did); the next one is tried after it. */
static void msg_fail(struct fg_injector *inj, int err, int code)
{
    if (inj->nmsgs == 0) {
        if (inj->probe_status != 0)
            inj->probe_status = err;
        return;
    }
    if (inj->idx >= inj->nmsgs)
        return;
    struct fg_inject_msg *m = &inj->msgs[inj->idx];
    m->status = err;
    if (code)
        m->reply_code = code;
    inj->idx++;
}

/* conn_fail - the connection broke or a deadline passed: whatever was in
 * progress failed with err, and the connection is closed. */
static void conn_fail(struct fg_injector *inj, int err)
{
    if (inj->st != ST_RSET && inj->st != ST_QUIT)
        msg_fail(inj, err, 0);
    conn_close(inj);
}

static void on_timeout(uv_timer_t *t)
{
    struct fg_injector *inj = t->data;
    if (inj->tcp_open && !inj->tcp_closing)
        conn_fail(inj, FG_ETIMEOUT);
}

/* --- writing ---------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    struct inj_write *w = (struct inj_write *)req;
    struct fg_injector *inj = w->inj;
    free(w);
    if (inj->tcp_closing || !inj->tcp_open)
        return;
    if (status < 0) {
        conn_fail(inj, status);
        return;
    }
    /* The reply deadline runs from when the kernel has all we sent: a
     * large body to a slow reader must not eat the wait for its reply. */
    arm(inj);
}

static void send_buf(struct fg_injector *inj, struct inj_write *w, size_t len)
{
    w->inj = inj;
    fg_smtp_parser_feed(&inj->p, FG_C2S, w->data, len);
    if (inj->sc)
        fg_capture_conn_data(inj->sc, FG_C2S, w->data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int r = uv_write(&w->req, (uv_stream_t *)&inj->tcp, &b, 1, on_write);
    if (r < 0) {
        free(w);
        conn_fail(inj, r);
        return;
    }
    arm(inj);
}

static void send_cmd(struct fg_injector *inj, enum inj_state next, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_cmd(struct fg_injector *inj, enum inj_state next, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    struct inj_write *w = fg_malloc(sizeof(*w) + (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(w->data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    inj->st = next;
    send_buf(inj, w, (size_t)n);
}

/* send_body - the message, dot-stuffed (a '.' added to every line that
 * begins with one, RFC 5321 §4.5.2), then CRLF.CRLF. */
static void send_body(struct fg_injector *inj, const struct fg_inject_msg *m)
{
    size_t len;
    char *body = fg_injector_body(m, &len);
    size_t dots = 0;
    for (size_t i = 0; i < len; i++)
        if (body[i] == '.' && (i == 0 || (i >= 2 && body[i - 1] == '\n' && body[i - 2] == '\r')))
            dots++;
    struct inj_write *w = fg_malloc(sizeof(*w) + len + dots + 5);
    char *o = w->data;
    for (size_t i = 0; i < len; i++) {
        if (body[i] == '.' && (i == 0 || (i >= 2 && body[i - 1] == '\n' && body[i - 2] == '\r')))
            *o++ = '.';
        *o++ = body[i];
    }
    if (len < 2 || body[len - 2] != '\r' || body[len - 1] != '\n') {
        *o++ = '\r';
        *o++ = '\n';
    }
    *o++ = '.';
    *o++ = '\r';
    *o++ = '\n';
    free(body);
    inj->st = ST_EOD;
    send_buf(inj, w, (size_t)(o - w->data));
}

/* --- the session ------------------------------------------------------ */

static int has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

static int msg_valid(const struct fg_inject_msg *m)
{
    if (!m->from || has_crlf(m->from) || m->nto == 0 || !m->to)
        return 0;
    for (size_t i = 0; i < m->nto; i++)
        if (!m->to[i] || has_crlf(m->to[i]))
            return 0;
    return 1;
}

static void next_message(struct fg_injector *inj)
{
    while (inj->idx < inj->nmsgs && !msg_valid(&inj->msgs[inj->idx])) {
        inj->msgs[inj->idx].status = FG_EINPUT;
        inj->idx++;
    }
    if (inj->idx >= inj->nmsgs) {
        send_cmd(inj, ST_QUIT, "QUIT\r\n");
        return;
    }
    send_cmd(inj, ST_MAIL, "MAIL FROM:<%s>\r\n", inj->msgs[inj->idx].from);
}

static void on_reply(struct fg_injector *inj, int code)
{
    int ok = code / 100 == 2;
    struct fg_inject_msg *m = inj->idx < inj->nmsgs ? &inj->msgs[inj->idx] : NULL;
    if (m && in_message(inj))
        m->reply_code = code;
    if (code == 421 && inj->st != ST_QUIT) {
        /* The server is closing the channel (RFC 5321 §3.8). */
        int attributed = inj->st != ST_RSET;
        conn_fail(inj, FG_EPROTO);
        if (m && attributed)
            m->reply_code = code;
        return;
    }
    switch (inj->st) {
    case ST_GREETING:
        if (!ok) {
            msg_fail(inj, FG_EPROTO, code);
            send_cmd(inj, ST_QUIT, "QUIT\r\n"); /* RFC 5321 §3.1 */
        } else if (inj->nmsgs == 0) {
            inj->probe_status = 0;
            send_cmd(inj, ST_QUIT, "QUIT\r\n");
        } else {
            send_cmd(inj, ST_EHLO, "EHLO %s\r\n", inj->helo);
        }
        break;
    case ST_EHLO:
        if (ok)
            next_message(inj);
        else if (code / 100 == 5) /* RFC 5321 §3.2: fall back to HELO */
            send_cmd(inj, ST_HELO, "HELO %s\r\n", inj->helo);
        else {
            msg_fail(inj, FG_EPROTO, code);
            send_cmd(inj, ST_QUIT, "QUIT\r\n");
        }
        break;
    case ST_HELO:
        if (ok)
            next_message(inj);
        else {
            msg_fail(inj, FG_EPROTO, code);
            send_cmd(inj, ST_QUIT, "QUIT\r\n");
        }
        break;
    case ST_MAIL:
        if (ok) {
            inj->rcpt_i = 0;
            inj->rcpt_ok = 0;
            send_cmd(inj, ST_RCPT, "RCPT TO:<%s>\r\n", m->to[0]);
        } else {
            msg_fail(inj, FG_EPROTO, code);
            send_cmd(inj, ST_RSET, "RSET\r\n");
        }
        break;
    case ST_RCPT:
        if (ok)
            inj->rcpt_ok++;
        if (++inj->rcpt_i < m->nto)
            send_cmd(inj, ST_RCPT, "RCPT TO:<%s>\r\n", m->to[inj->rcpt_i]);
        else if (inj->rcpt_ok)
            send_cmd(inj, ST_DATA, "DATA\r\n");
        else {
            msg_fail(inj, FG_EPROTO, code);
            send_cmd(inj, ST_RSET, "RSET\r\n");
        }
        break;
    case ST_DATA:
        if (code == 354)
            send_body(inj, m);
        else {
            msg_fail(inj, FG_EPROTO, code);
            send_cmd(inj, ST_RSET, "RSET\r\n");
        }
        break;
    case ST_EOD:
        /* The transaction is over either way (RFC 5321 §4.1.1.4). */
        if (ok) {
            m->status = 0;
            m->accepted_us = fg_wall_us();
            inj->idx++;
        } else {
            msg_fail(inj, FG_EPROTO, code);
        }
        next_message(inj);
        break;
    case ST_RSET:
        next_message(inj);
        break;
    case ST_QUIT:
        conn_close(inj);
        break;
    default:
        break;
    }
}

static int on_event(void *ud, const struct fg_smtp_event *ev)
{
    struct fg_injector *inj = ud;
    if (ev->type == FG_SMTP_EV_REPLY) {
        inj->have_reply = 1;
        inj->reply_code = ev->code;
        return 1; /* act on it before the parser reads further */
    }
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct fg_injector *inj = h->data;
    *buf = uv_buf_init(inj->rbuf, sizeof(inj->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct fg_injector *inj = s->data;
    if (inj->tcp_closing)
        return;
    if (nread < 0) {
        if (inj->sc) {
            if (nread == UV_EOF)
                fg_capture_conn_fin(inj->sc, FG_S2C);
            else if (nread == UV_ECONNRESET)
                fg_capture_conn_rst(inj->sc, FG_S2C);
        }
        conn_fail(inj, (int)nread);
        return;
    }
    if (inj->sc && nread > 0)
        fg_capture_conn_data(inj->sc, FG_S2C, buf->base, (size_t)nread);
    size_t off = 0, len = (size_t)nread;
    /* Held events come with the next feed, even an empty one. */
    while (!inj->tcp_closing && (off < len || fg_smtp_parser_queued(&inj->p, FG_S2C))) {
        unsigned q0 = fg_smtp_parser_queued(&inj->p, FG_S2C);
        size_t n =
            fg_smtp_parser_feed(&inj->p, FG_S2C, off < len ? buf->base + off : NULL, len - off);
        off += n;
        if (inj->have_reply) {
            inj->have_reply = 0;
            uv_timer_stop(&inj->timer);
            on_reply(inj, inj->reply_code);
        } else if (n == 0 && (off < len || fg_smtp_parser_queued(&inj->p, FG_S2C) >= q0)) {
            break;
        }
    }
}

/* --- connections ------------------------------------------------------ */

static void maybe_free(struct fg_injector *inj)
{
    if (!inj->closing || inj->tcp_open || inj->timer_open)
        return;
    void (*cb)(void *) = inj->close_cb;
    void *ud = inj->close_ud;
    free(inj->host);
    free(inj->helo);
    free(inj);
    if (cb)
        cb(ud);
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct fg_injector *inj = h->data;
    inj->tcp_open = 0;
    inj->tcp_closing = 0;
    if (inj->sc) {
        fg_capture_conn_free(inj->sc);
        inj->sc = NULL;
    }
    if (inj->closing) {
        maybe_free(inj);
        return;
    }
    if (inj->idx < inj->nmsgs) {
        inj_connect(inj);
        return;
    }
    inj->st = ST_FINISHED;
    if (inj->done_cb)
        inj->done_cb(inj, inj->ud);
}

static void conn_close(struct fg_injector *inj)
{
    if (!inj->tcp_open || inj->tcp_closing)
        return;
    inj->tcp_closing = 1;
    if (inj->timer_open)
        uv_timer_stop(&inj->timer);
    if (inj->sc)
        fg_capture_conn_fin(inj->sc, FG_C2S);
    uv_close((uv_handle_t *)&inj->tcp, on_tcp_closed);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct fg_injector *inj = req->data;
    if (status == UV_ECANCELED || inj->tcp_closing)
        return;
    if (status < 0) {
        conn_fail(inj, status);
        return;
    }
    if (inj->capture) {
        struct sockaddr_storage cl, sv;
        int cl_len = sizeof(cl), sv_len = sizeof(sv);
        if (uv_tcp_getsockname(&inj->tcp, (struct sockaddr *)&cl, &cl_len) == 0 &&
            uv_tcp_getpeername(&inj->tcp, (struct sockaddr *)&sv, &sv_len) == 0)
            inj->sc =
                fg_capture_conn_open(inj->capture, (struct sockaddr *)&cl, (struct sockaddr *)&sv);
    }
    uv_tcp_nodelay(&inj->tcp, 1);
    inj->st = ST_GREETING;
    int r = uv_read_start((uv_stream_t *)&inj->tcp, on_alloc, on_read);
    if (r < 0) {
        conn_fail(inj, r);
        return;
    }
    arm(inj);
}

static void inj_connect(struct fg_injector *inj)
{
    struct sockaddr_storage ss;
    int r = strchr(inj->host, ':') ? uv_ip6_addr(inj->host, inj->port, (struct sockaddr_in6 *)&ss)
                                   : uv_ip4_addr(inj->host, inj->port, (struct sockaddr_in *)&ss);
    uv_tcp_init(inj->loop, &inj->tcp);
    inj->tcp.data = inj;
    inj->tcp_open = 1;
    inj->tcp_closing = 0;
    inj->nconns++;
    inj->st = ST_CONNECTING;
    fg_smtp_parser_init(&inj->p, on_event, inj);
    inj->have_reply = 0;
    inj->creq.data = inj;
    if (r == 0)
        r = uv_tcp_connect(&inj->creq, &inj->tcp, (struct sockaddr *)&ss, on_connect);
    if (r < 0) {
        conn_fail(inj, r);
        return;
    }
    arm(inj);
}

/* --- public ----------------------------------------------------------- */

int fg_injector_start(uv_loop_t *loop, const struct fg_injector_opts *o, fg_injector_done_cb cb,
                      void *ud, struct fg_injector **out)
{
    if (!o->host || o->port <= 0 || o->port > 65535 || (o->nmsgs && !o->msgs))
        return FG_EINPUT;
    struct fg_injector *inj = fg_calloc(1, sizeof(*inj));
    inj->loop = loop;
    inj->host = fg_strdup(o->host);
    inj->port = o->port;
    inj->msgs = o->msgs;
    inj->nmsgs = o->nmsgs;
    inj->timeout_ms = o->timeout_ms ? o->timeout_ms : INJ_DEFAULT_TIMEOUT_MS;
    inj->capture = o->capture;
    inj->helo = fg_strdup(o->helo ? o->helo : "injector.faultgate.test");
    inj->done_cb = cb;
    inj->ud = ud;
    inj->probe_status = FG_ENOTAVAIL;
    for (size_t i = 0; i < inj->nmsgs; i++) {
        inj->msgs[i].status = FG_ENOTAVAIL; /* not attempted (yet) */
        inj->msgs[i].reply_code = 0;
        inj->msgs[i].accepted_us = 0;
    }
    uv_timer_init(loop, &inj->timer);
    inj->timer.data = inj;
    inj->timer_open = 1;
    inj_connect(inj);
    *out = inj;
    return 0;
}

int fg_injector_probe_status(const struct fg_injector *inj)
{
    return inj->probe_status;
}

unsigned fg_injector_connections(const struct fg_injector *inj)
{
    return inj->nconns;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct fg_injector *inj = h->data;
    inj->timer_open = 0;
    maybe_free(inj);
}

void fg_injector_close(struct fg_injector *inj, void (*cb)(void *ud), void *ud)
{
    if (inj->closing)
        return;
    inj->closing = 1;
    inj->close_cb = cb;
    inj->close_ud = ud;
    if (in_message(inj) && inj->idx < inj->nmsgs)
        inj->msgs[inj->idx].status = UV_ECANCELED;
    conn_close(inj);
    uv_close((uv_handle_t *)&inj->timer, on_timer_closed);
}

/* --- the message ------------------------------------------------------ */

/* fg_injector_body - a pure function of the message (no clock, no random
 * source), so that anyone can recompute its SHA-256 and compare it with
 * what a peer stored.  Body lines are printable ASCII; some begin with '.'
 * (one is a lone '.') so that every submission exercises dot-stuffing. */
char *fg_injector_body(const struct fg_inject_msg *m, size_t *len)
{
    const char *from = m->from ? m->from : "";
    size_t cap = 1024 + (size_t)m->size + strlen(from);
    for (size_t i = 0; i < m->nto; i++)
        cap += strlen(m->to[i]) + 4;
    char *b = fg_malloc(cap);
    size_t n = 0;
#define PUT(...) (n += (size_t)snprintf(b + n, cap - n, __VA_ARGS__))
    PUT("From: <%s>\r\n", from);
    PUT("To: ");
    for (size_t i = 0; i < m->nto; i++)
        PUT("%s<%s>", i ? ", " : "", m->to[i]);
    PUT("\r\n");
    PUT("Subject: faultgate test message %s\r\n", m->token);
    /* A fixed date keeps the text reproducible (see above). */
    PUT("Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n");
    PUT("Message-ID: <%s@injector.faultgate.test>\r\n", m->token);
    PUT("MIME-Version: 1.0\r\n");
    PUT("Content-Type: text/plain; charset=us-ascii\r\n");
    PUT(FG_TOKEN_HEADER ": %s\r\n", m->token);
    PUT("\r\n");
    static const char fill[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               " .,;:-_+=!?()[]<>{}/*#%&@~^|'\"$";
    unsigned line = 0;
    do {
        char ln[96];
        int k;
        switch (line % 9) {
        case 3:
            k = snprintf(ln, sizeof(ln), ".dotted line %u of %s", line, m->token);
            break;
        case 6:
            k = snprintf(ln, sizeof(ln), "%s", line % 18 == 6 ? "." : "..");
            break;
        default:
            k = snprintf(ln, sizeof(ln), "line %u of %s ", line, m->token);
            break;
        }
        if (k < 0 || (size_t)k > 76)
            k = 76;
        for (; k < 76 && line % 9 != 6; k++)
            ln[k] = fill[(line * 7u + (unsigned)k) % (sizeof(fill) - 1)];
        /* Trim the last line so that the text is about size octets; it
         * keeps at least one character. */
        size_t room = m->size > n + 2 ? (size_t)(m->size - n - 2) : 1;
        if ((size_t)k > room)
            k = (int)(room ? room : 1);
        if (n + (size_t)k + 3 > cap) {
            cap = cap * 2 + (size_t)k + 3;
            b = fg_realloc(b, cap);
        }
        memcpy(b + n, ln, (size_t)k);
        n += (size_t)k;
        b[n++] = '\r';
        b[n++] = '\n';
        line++;
    } while (n < m->size);
#undef PUT
    b[n] = '\0';
    *len = n;
    return b;
}
