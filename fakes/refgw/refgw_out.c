/* refgw_out.c - refgw's outbound SMTP client (delivery to --upstream).
 *
 * One outbound connection at a time, one message at a time on it; several
 * due messages may share a session.  Every wait has its RFC 5321 §4.5.3.2
 * timeout (greeting, ehlo, mail, rcpt, data_init, data_block per write,
 * data_done); a timeout or a lost connection closes the connection and
 * treats the transaction as if 451 had been received (§3.8, §4.2.2).
 * Replies are read with the shared SMTP parser (faultgate/smtp.h), fed with
 * both directions so it pairs each reply with its command.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/smtp.h"
#include "faultgate/util.h"
#include "refgw.h"

enum out_state {
    O_IDLE,     /* no connection */
    O_CONNECT,  /* TCP connect in progress */
    O_GREETING, /* waiting for the 220 */
    O_EHLO,
    O_HELO,
    O_MAIL,
    O_RCPT,
    O_DATA, /* DATA sent, waiting for 354 */
    O_BODY, /* writing the body */
    O_DOT,  /* final dot written, waiting for the reply */
    O_QUIT, /* QUIT sent */
    O_CLOSING
};

static const char *const state_name[] = {"idle",       "connect",   "greeting", "ehlo",
                                         "helo",       "mail",      "rcpt",     "data_init",
                                         "data_block", "data_done", "quit",     "closing"};

struct out_write {
    uv_write_t req;
    int body; /* a chunk of the body (points into out.stuffed) */
    char data[];
};

static struct {
    uv_tcp_t tcp;
    uv_timer_t timer;  /* per-stage deadline */
    uv_timer_t qtimer; /* next retry due */
    uv_connect_t creq;
    struct fg_smtp_parser p;
    enum out_state state;
    int shutting_down;
    struct refgw_msg *msg;
    size_t rcpt_i;
    /* EHLO extensions of this session */
    int ext_size, ext_8bit;
    uint64_t size_max;
    /* Q197142: the next session says HELO after the peer dropped on EHLO */
    int helo_next;
    char *stuffed;
    size_t stuffed_len, stuffed_off;
    /* last reply, copied out of the parser's event */
    int got_reply;
    int code;
    char text[FG_SMTP_REPLY_MAX + 1];
} out;

#define BODY_CHUNK 65536

static void out_close(const char *reason);
static void out_next_message(void);

int refgw_out_busy(void)
{
    return out.state != O_IDLE || (refgw_cfg.x400_port && refgw_x400_busy());
}

static void stage_timeout_cb(uv_timer_t *t);

/* Arm the deadline for the current stage; 0 disarms it. */
static void deadline(uint64_t ms)
{
    uv_timer_stop(&out.timer);
    if (ms)
        uv_timer_start(&out.timer, stage_timeout_cb, ms, 0);
}

/* The reply text on one line without its CRLFs, for logs and bounces. */
static char *reply_oneline(void)
{
    char *s = fg_strdup(out.text);
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n')
            s[i] = ' ';
    while (n && s[n - 1] == ' ')
        s[--n] = '\0';
    return s;
}

static int parser_cb(void *ud, const struct fg_smtp_event *ev)
{
    if (ev->type != FG_SMTP_EV_REPLY || ev->dir != FG_S2C)
        return 0;
    out.got_reply = 1;
    out.code = ev->code;
    size_t n = ev->text_len < FG_SMTP_REPLY_MAX ? ev->text_len : FG_SMTP_REPLY_MAX;
    memcpy(out.text, ev->text, n);
    out.text[n] = '\0';
    return 1; /* handle this reply before parsing the next */
}

static void write_cb(uv_write_t *req, int status);

static void out_write_raw(const char *data, size_t len, int body)
{
    struct out_write *w;
    uv_buf_t b;
    if (body) {
        w = fg_malloc(sizeof(*w));
        b = uv_buf_init((char *)data, (unsigned)len);
    } else {
        w = fg_malloc(sizeof(*w) + len);
        memcpy(w->data, data, len);
        b = uv_buf_init(w->data, (unsigned)len);
    }
    w->body = body;
    /* Our own bytes go through the parser too, so it knows what each reply
     * answers and when a body starts and ends. */
    fg_smtp_parser_feed(&out.p, FG_C2S, data, len);
    int rc = uv_write(&w->req, (uv_stream_t *)&out.tcp, &b, 1, write_cb);
    if (rc < 0) {
        free(w);
        out_close(uv_strerror(rc));
    }
}

/* Send one command line and wait ms for its reply. */
static void out_cmd(enum out_state st, uint64_t ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void out_cmd(enum out_state st, uint64_t ms, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n > sizeof(line) - 3)
        n = (int)sizeof(line) - 3;
    memcpy(line + n, "\r\n", 3);
    out.state = st;
    deadline(ms);
    out_write_raw(line, (size_t)n + 2, 0);
}

static void write_body_chunk(void)
{
    size_t left = out.stuffed_len - out.stuffed_off;
    size_t n = left < BODY_CHUNK ? left : BODY_CHUNK;
    /* RFC 5321 §4.5.3.2.5: a deadline per write, not per message.  The
     * Q129140 mode has none. */
    deadline(refgw_cfg.bug == REFGW_BUG_NO_DATA_TIMEOUT ? 0 : refgw_cfg.to.data_block);
    const char *p = out.stuffed + out.stuffed_off;
    out.stuffed_off += n;
    out_write_raw(p, n, 1);
}

static void write_cb(uv_write_t *req, int status)
{
    struct out_write *w = (struct out_write *)req;
    int body = w->body;
    free(w);
    if (status == UV_ECANCELED || out.state == O_CLOSING || out.state == O_IDLE)
        return;
    if (status < 0) {
        char why[512];
        snprintf(why, sizeof(why), "write failed in stage %s: %s", state_name[out.state],
                 uv_strerror(status));
        out_close(why);
        return;
    }
    if (!body || out.state != O_BODY)
        return;
    if (out.stuffed_off < out.stuffed_len) {
        write_body_chunk();
        return;
    }
    /* The whole body and the final dot are written: wait for the reply
     * (RFC 5321 §4.5.3.2.6, 10 minutes by default). */
    out.state = O_DOT;
    deadline(refgw_cfg.bug == REFGW_BUG_NO_DATA_TIMEOUT ? 0 : refgw_cfg.to.data_done);
}

/* Dot-stuff the body (RFC 5321 §4.5.2) and append the end of data. */
static void build_stuffed(const struct refgw_msg *m)
{
    free(out.stuffed);
    size_t cap = m->body_len + m->body_len / 32 + 8, n = 0;
    char *s = fg_malloc(cap);
    int bol = 1;
    for (size_t i = 0; i < m->body_len; i++) {
        if (n + 4 > cap)
            s = fg_realloc(s, cap *= 2);
        char c = m->body[i];
        if (bol && c == '.')
            s[n++] = '.';
        s[n++] = c;
        bol = c == '\n';
    }
    if (n + 6 > cap)
        s = fg_realloc(s, cap += 8);
    if (n && !bol) { /* the spool always ends in CRLF; be safe anyway */
        s[n++] = '\r';
        s[n++] = '\n';
    }
    memcpy(s + n, ".\r\n", 3);
    n += 3;
    out.stuffed = s;
    out.stuffed_len = n;
    out.stuffed_off = 0;
}

static int body_has_8bit(const struct refgw_msg *m)
{
    for (size_t i = 0; i < m->body_len; i++)
        if ((unsigned char)m->body[i] & 0x80)
            return 1;
    return 0;
}

static void send_mail(void)
{
    struct refgw_msg *m = out.msg;
    char params[64] = "";
    size_t pl = 0;
    if (out.ext_size)
        pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " SIZE=%zu", m->body_len);
    if (out.ext_8bit && body_has_8bit(m))
        snprintf(params + pl, sizeof(params) - pl, " BODY=8BITMIME");
    out_cmd(O_MAIL, refgw_cfg.to.mail, "MAIL FROM:<%s>%s", m->sender, params);
}

static int send_next_rcpt(void)
{
    struct refgw_msg *m = out.msg;
    while (out.rcpt_i < m->nrcpts && m->rcpts[out.rcpt_i].state != RCPT_PENDING)
        out.rcpt_i++;
    if (out.rcpt_i >= m->nrcpts)
        return 0;
    out_cmd(O_RCPT, refgw_cfg.to.rcpt, "RCPT TO:<%s>", m->rcpts[out.rcpt_i].addr);
    return 1;
}

static void send_quit(void)
{
    out_cmd(O_QUIT, refgw_cfg.to.ehlo, "QUIT");
}

/* The current message's attempt ended (reason: why it is deferred, or
 * NULL); go on with the next due message or QUIT. */
static void message_done(const char *reason)
{
    struct refgw_msg *m = out.msg;
    out.msg = NULL;
    if (m)
        refgw_msg_attempt_done(m, reason);
}

static void begin_attempt(struct refgw_msg *m)
{
    out.msg = m;
    out.rcpt_i = 0;
    m->attempts++;
    refgw_log("delivery attempt id=%s attempt=%u from=<%s> rcpts=%zu", m->id, m->attempts,
              m->sender, m->nrcpts);
}

/* Start the transaction for out.msg on a greeted session. */
static void start_message(struct refgw_msg *m)
{
    if (out.ext_size && out.size_max && m->body_len > out.size_max) {
        /* RFC 1870: never send above the server's fixed maximum. */
        char *why = fg_asprintf("message size %zu exceeds the upstream's SIZE %llu", m->body_len,
                                (unsigned long long)out.size_max);
        refgw_msg_fail_all(m, why);
        free(why);
        message_done(NULL);
        out_next_message();
        return;
    }
    if (!out.ext_8bit && body_has_8bit(m)) {
        /* RFC 6152 §3: 8-bit text only to a server that offers 8BITMIME.
         * refgw does not downgrade to 7 bits (that means rewriting MIME
         * parts), so the message is returned to its sender instead. */
        refgw_msg_fail_all(m, "8-bit message and the next hop does not offer 8BITMIME "
                              "(RFC 6152 section 3)");
        message_done(NULL);
        out_next_message();
        return;
    }
    send_mail();
}

/* After a completed transaction: the next due message in this session, or
 * QUIT. */
static void out_next_message(void)
{
    uint64_t wait;
    struct refgw_msg *m =
        out.shutting_down ? NULL : refgw_queue_next_due(fg_now_ms(), &wait, REFGW_ROUTE_SMTP);
    if (m) {
        begin_attempt(m);
        start_message(m);
    } else {
        send_quit();
    }
}

/* A failure that concerns the whole session: defer the message and QUIT. */
static void defer_and_quit(const char *stage)
{
    char *r = reply_oneline();
    char *why = fg_asprintf("%s: %s", stage, r);
    refgw_log("deferred in stage %s: %s", stage, r);
    message_done(why);
    free(why);
    free(r);
    send_quit();
}

static void parse_ehlo_ext(void)
{
    out.ext_size = out.ext_8bit = 0;
    out.size_max = 0;
    /* Each line is "250-KEYWORD params" or "250 KEYWORD"; the first is the
     * greeting line. */
    const char *p = out.text;
    int first = 1;
    while (*p) {
        const char *e = strstr(p, "\r\n");
        size_t ll = e ? (size_t)(e - p) : strlen(p);
        if (!first && ll > 4) {
            const char *k = p + 4;
            size_t kl = ll - 4;
            if (kl >= 4 && !strncasecmp(k, "SIZE", 4) && (kl == 4 || k[4] == ' ')) {
                out.ext_size = 1;
                if (kl > 5)
                    out.size_max = strtoull(k + 5, NULL, 10);
            } else if (kl == 8 && !strncasecmp(k, "8BITMIME", 8)) {
                out.ext_8bit = 1;
            }
        }
        first = 0;
        p += ll;
        if (e)
            p += 2;
    }
}

static void handle_reply(void)
{
    int c = out.code, cls = c / 100;
    struct refgw_msg *m = out.msg;
    switch (out.state) {
    case O_GREETING:
        if (cls == 2) {
            if (out.helo_next) {
                out.helo_next = 0;
                out_cmd(O_HELO, refgw_cfg.to.ehlo, "HELO %s", refgw_cfg.hostname);
            } else {
                out_cmd(O_EHLO, refgw_cfg.to.ehlo, "EHLO %s", refgw_cfg.hostname);
            }
        } else {
            defer_and_quit("greeting"); /* RFC 5321 §3.1: 554 greeting, QUIT */
        }
        break;
    case O_EHLO:
        if (cls == 2) {
            parse_ehlo_ext();
            start_message(m);
        } else if (c == 500 || c == 502 || cls == 5) {
            /* RFC 5321 §3.2: fall back to HELO in the same session. */
            refgw_log("EHLO refused (%d), falling back to HELO", c);
            out_cmd(O_HELO, refgw_cfg.to.ehlo, "HELO %s", refgw_cfg.hostname);
        } else {
            defer_and_quit("ehlo");
        }
        break;
    case O_HELO:
        if (cls == 2) {
            out.ext_size = out.ext_8bit = 0; /* no extensions after HELO (§4.1.1.1) */
            start_message(m);
        } else {
            defer_and_quit("helo");
        }
        break;
    case O_MAIL:
        if (cls == 2) {
            if (!send_next_rcpt()) { /* nothing pending: cannot happen, be safe */
                message_done(NULL);
                send_quit();
            }
        } else if (cls == 5) {
            /* RFC 5321 §4.2.5: no identical retry; bounce. */
            char *r = reply_oneline();
            refgw_log("rejected id=%s at MAIL: %s", m->id, r);
            refgw_msg_fail_all(m, r);
            free(r);
            message_done(NULL);
            send_quit();
        } else {
            defer_and_quit("mail");
        }
        break;
    case O_RCPT: {
        struct refgw_rcpt *r = &m->rcpts[out.rcpt_i];
        char *t = reply_oneline();
        if (cls == 2) {
            r->state = RCPT_ACCEPTED;
        } else if (cls == 5) {
            refgw_log("rejected id=%s rcpt=<%s>: %s", m->id, r->addr, t);
            r->state = RCPT_FAILED;
            free(r->reply);
            r->reply = fg_strdup(t);
        } else {
            refgw_log("deferred id=%s rcpt=<%s>: %s", m->id, r->addr, t);
            free(m->last_error);
            m->last_error = fg_asprintf("rcpt <%s>: %s", r->addr, t);
        }
        free(t);
        out.rcpt_i++;
        if (send_next_rcpt())
            break;
        size_t acc = 0;
        for (size_t i = 0; i < m->nrcpts; i++)
            acc += m->rcpts[i].state == RCPT_ACCEPTED;
        if (acc) {
            out_cmd(O_DATA, refgw_cfg.to.data_init, "DATA");
        } else {
            char *why = m->last_error ? fg_strdup(m->last_error) : NULL;
            message_done(why);
            free(why);
            send_quit(); /* the transaction is abandoned; QUIT ends it */
        }
        break;
    }
    case O_DATA:
        if (c == 354) {
            build_stuffed(m);
            out.state = O_BODY;
            write_body_chunk();
        } else if (cls == 5) {
            char *r = reply_oneline();
            refgw_log("rejected id=%s at DATA: %s", m->id, r);
            for (size_t i = 0; i < m->nrcpts; i++)
                if (m->rcpts[i].state == RCPT_ACCEPTED) {
                    m->rcpts[i].state = RCPT_FAILED;
                    free(m->rcpts[i].reply);
                    m->rcpts[i].reply = fg_strdup(r);
                }
            free(r);
            message_done(NULL);
            send_quit();
        } else {
            defer_and_quit("data_init");
        }
        break;
    case O_DOT: {
        char *r = reply_oneline();
        if (cls == 2) {
            size_t n = 0;
            for (size_t i = 0; i < m->nrcpts; i++)
                if (m->rcpts[i].state == RCPT_ACCEPTED) {
                    m->rcpts[i].state = RCPT_DONE;
                    n++;
                }
            refgw_log("delivered id=%s rcpts=%zu: %s", m->id, n, r);
            char *why = m->last_error ? fg_strdup(m->last_error) : NULL;
            message_done(why);
            free(why);
            free(r);
            out_next_message();
            return;
        }
        if (cls == 5) {
            refgw_log("rejected id=%s after end of data: %s", m->id, r);
            for (size_t i = 0; i < m->nrcpts; i++)
                if (m->rcpts[i].state == RCPT_ACCEPTED) {
                    m->rcpts[i].state = RCPT_FAILED;
                    free(m->rcpts[i].reply);
                    m->rcpts[i].reply = fg_strdup(r);
                }
            free(r);
            message_done(NULL);
            out_next_message();
            return;
        }
        free(r);
        defer_and_quit("data_done");
        break;
    }
    case O_QUIT:
        out_close(NULL);
        break;
    case O_BODY:
        /* A reply while the body is still being written: the server gave up
         * on the transaction. */
        defer_and_quit("data_block");
        break;
    default:
        break;
    }
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    static char buf[65536];
    *b = uv_buf_init(buf, sizeof(buf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    if (nread == 0)
        return;
    if (nread < 0) {
        if (out.state == O_QUIT) {
            out_close(NULL);
            return;
        }
        if (out.state == O_EHLO) {
            if (refgw_cfg.bug == REFGW_BUG_CRASH_ON_EHLO_DROP) {
                /* Q197142: the I/O error path uses a routing record that was
                 * never set up, and the service stops. */
                refgw_log("connection lost after EHLO (%s): aborting", uv_strerror((int)nread));
                abort();
            }
            /* Q197142 fix: retry later, and say HELO next time. */
            out.helo_next = 1;
        }
        char why[512];
        snprintf(why, sizeof(why), "connection lost in stage %s: %s", state_name[out.state],
                 nread == UV_EOF ? "closed by peer" : uv_strerror((int)nread));
        out_close(why);
        return;
    }
    size_t off = 0, len = (size_t)nread;
    while (out.state != O_CLOSING && out.state != O_IDLE &&
           (off < len || fg_smtp_parser_queued(&out.p, FG_S2C))) {
        out.got_reply = 0;
        size_t n = fg_smtp_parser_feed(&out.p, FG_S2C, b->base + off, len - off);
        off += n;
        if (out.got_reply)
            handle_reply();
        else if (n == 0 && off < len)
            break;
    }
}

static void tcp_close_cb(uv_handle_t *h)
{
    free(out.stuffed);
    out.stuffed = NULL;
    out.state = O_IDLE;
    if (out.shutting_down)
        return;
    refgw_in_outbound_idle();
    refgw_out_kick();
}

/* Close the connection; a non-NULL reason means the current transaction
 * failed transiently (RFC 5321 §3.8: like a 451). */
static void out_close(const char *reason)
{
    if (out.state == O_CLOSING || out.state == O_IDLE)
        return;
    uv_timer_stop(&out.timer);
    if (out.msg) {
        refgw_log("deferred id=%s: %s", out.msg->id, reason ? reason : "connection closed");
        message_done(reason ? reason : "connection closed");
    }
    out.state = O_CLOSING;
    /* Reset on failure: the peer may be hung and never read a FIN.  Reset
     * needs a socket; before the connect made one, close plainly. */
    if (!reason || uv_tcp_close_reset(&out.tcp, tcp_close_cb) != 0)
        uv_close((uv_handle_t *)&out.tcp, tcp_close_cb);
}

static void stage_timeout_cb(uv_timer_t *t)
{
    char why[96];
    snprintf(why, sizeof(why), "timeout in stage %s", state_name[out.state]);
    refgw_log("timeout stage=%s id=%s", state_name[out.state], out.msg ? out.msg->id : "-");
    if (out.state == O_QUIT) {
        out_close(NULL);
        return;
    }
    out_close(why);
}

static void connect_cb(uv_connect_t *req, int status)
{
    if (out.state != O_CONNECT)
        return;
    if (status < 0) {
        char why[512];
        snprintf(why, sizeof(why), "connect to %s:%d failed: %s", refgw_cfg.up_host,
                 refgw_cfg.up_port, uv_strerror(status));
        out_close(why);
        return;
    }
    out.state = O_GREETING;
    int rc = uv_read_start((uv_stream_t *)&out.tcp, alloc_cb, read_cb);
    if (rc < 0)
        out_close(uv_strerror(rc));
}

static void qtimer_cb(uv_timer_t *t)
{
    refgw_out_kick();
}

void refgw_out_init(void)
{
    uv_timer_init(refgw_loop, &out.timer);
    uv_timer_init(refgw_loop, &out.qtimer);
    out.state = O_IDLE;
}

static int upstream_addr(struct sockaddr_storage *ss)
{
    if (strchr(refgw_cfg.up_host, ':'))
        return uv_ip6_addr(refgw_cfg.up_host, refgw_cfg.up_port, (struct sockaddr_in6 *)ss);
    return uv_ip4_addr(refgw_cfg.up_host, refgw_cfg.up_port, (struct sockaddr_in *)ss);
}

/* refgw_out_kick - start a session if idle and a message is due; otherwise
 * arm the queue timer for the next one. */
void refgw_out_kick(void)
{
    if (refgw_cfg.x400_port)
        refgw_x400_kick();
    if (out.state != O_IDLE || out.shutting_down)
        return;
    uint64_t wait = UINT64_MAX;
    struct refgw_msg *m = refgw_queue_next_due(fg_now_ms(), &wait, REFGW_ROUTE_SMTP);
    if (!m) {
        uv_timer_stop(&out.qtimer);
        if (wait != UINT64_MAX)
            uv_timer_start(&out.qtimer, qtimer_cb, wait, 0);
        return;
    }
    uv_timer_stop(&out.qtimer);
    struct sockaddr_storage ss;
    int rc = upstream_addr(&ss);
    uv_tcp_init(refgw_loop, &out.tcp);
    fg_smtp_parser_init(&out.p, parser_cb, NULL);
    begin_attempt(m);
    out.state = O_CONNECT;
    if (rc == 0)
        rc = uv_tcp_connect(&out.creq, &out.tcp, (const struct sockaddr *)&ss, connect_cb);
    if (rc < 0) {
        out_close(uv_strerror(rc));
        return;
    }
    /* The greeting deadline covers the connect as well. */
    deadline(refgw_cfg.to.greeting);
    refgw_log("connecting to %s:%d for id=%s", refgw_cfg.up_host, refgw_cfg.up_port, m->id);
}

void refgw_out_shutdown(void)
{
    out.shutting_down = 1;
    uv_timer_stop(&out.timer);
    uv_timer_stop(&out.qtimer);
    if (out.state != O_IDLE && out.state != O_CLOSING) {
        out.msg = NULL; /* stays in the spool for the next run */
        out.state = O_CLOSING;
        if (uv_tcp_close_reset(&out.tcp, tcp_close_cb) != 0)
            uv_close((uv_handle_t *)&out.tcp, tcp_close_cb);
    }
    uv_close((uv_handle_t *)&out.timer, NULL);
    uv_close((uv_handle_t *)&out.qtimer, NULL);
}
