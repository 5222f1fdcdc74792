/* client.c - the injector: submits token-stamped messages over SMTP.
 *
 * A strict SMTP client on libuv and the shared SMTP parser.  Messages are
 * handed out in order to up to `concurrency` connections at once (the next
 * message's own setting); each connection runs greeting, EHLO (HELO if
 * EHLO is refused with 5xx, RFC 5321 §3.2), then per message MAIL, RCPT for
 * each recipient, DATA and the dot-stuffed body (§4.5.2) or BDAT chunks
 * (RFC 3030), and takes the next message until none is left; then QUIT.
 *
 * Options per message (struct fg_inject_msg.flags): PIPELINING sends MAIL,
 * the RCPTs and DATA (or the BDAT chunks) as one group in one write when
 * the server offers it (RFC 2920 §3.1, DATA last); BDAT when CHUNKING is
 * offered; an 8-bit body with BODY=8BITMIME (RFC 6152: never sent to a
 * server that does not offer 8BITMIME); SIZE= when SIZE is offered
 * (RFC 1870).  Without pipelining each command waits for its reply.
 *
 * Every reply awaited is queued as what it answers, so that pipelined and
 * lock-step sessions go through the same code.  A message whose connection
 * fails or whose reply does not come within the deadline is marked failed;
 * when a connection closes, new ones are opened while messages remain.
 * With no messages the injector is a liveness probe: connect, greeting,
 * QUIT.
 *
 * Every write and read is reported to the capture (synth mode) so that the
 * injector's leg appears in the run's pcap even without live capture.
 *
 * Hostile modes for the gateway as a server (scenarios/FORMAT.md): EHLO
 * before the greeting, an out-of-sequence RCPT before the EHLO reply
 * (pipelining desynchronisation), and SMTP smuggling: the body ends with a
 * non-standard end-of-data sequence followed by a second transaction in
 * the same write, then QUIT, and every reply is read until the 221.  And
 * STARTTLS command injection (CVE-2011-0411): "STARTTLS\r\n" with more
 * plaintext in one write, the TLS handshake (tls.c), EHLO again inside TLS;
 * the capture then holds the TLS records as sent and received.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "faultgate/error.h"
#include "faultgate/injector.h"
#include "faultgate/util.h"
#include "tls.h"

#define INJ_READ_BUF (64u * 1024)
#define INJ_DEFAULT_TIMEOUT_MS 30000u
/* Commands per pipelined group: a proxy or analyzer that tracks a bounded
 * number of outstanding commands (FG_SMTP_PENDING_MAX) keeps up. */
#define INJ_GROUP_MAX 100u
#define INJ_BDAT_CHUNK (64u * 1024)
#define NONE ((size_t)-1)

/* Server capabilities the injector uses (from the EHLO reply). */
#define CAP_PIPELINING 0x1u
#define CAP_CHUNKING 0x2u
#define CAP_8BITMIME 0x4u
#define CAP_SIZE 0x8u
#define CAP_STARTTLS 0x10u

/* What an awaited reply answers. */
enum inj_exp {
    X_GREETING,
    X_EHLO,
    X_HELO,
    X_MAIL,
    X_RCPT,
    X_DATA,
    X_EOD,
    X_BDAT,
    X_RSET,
    X_QUIT,
    X_EARLY,   /* the out-of-sequence command sent before the EHLO reply */
    X_STARTTLS /* STARTTLS, with the injected plaintext after it */
};

struct inj_sess {
    struct fg_injector *inj;
    struct inj_sess *next; /* in inj->sessions */
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_timer_t timer;
    int handles; /* open handles (tcp, timer) whose close callback has not run */
    int closing; /* uv_close called on tcp */
    int retired; /* closing or quitting: takes no more messages */
    struct fg_synth_conn *sc;
    struct fg_smtp_parser p;
    int have_reply, reply_code;
    int probe_ok;
    unsigned caps;
    int helo_only;  /* no ESMTP: no extension and no parameter (RFC 5321 §4.1.1.1) */
    int early_ehlo; /* EHLO went before the greeting */
    int ehlo_wait;  /* EHLO answered, the early command's reply still due */
    int drain;      /* after a smuggling payload: only 221 (or 421) ends the wait */
    /* STARTTLS: sent once per connection; the session from the 220 on,
     * up once its handshake is done */
    int starttls_sent;
    struct fg_tls *tls;
    int tls_up;
    int settling; /* the timer waits FG_INJ_TLS_SETTLE_MS, then EHLO */

    /* awaited replies, oldest first */
    unsigned char *exp;
    size_t exp_head, exp_len, exp_cap;

    /* the message being submitted */
    size_t cur;
    char *body; /* its text, not dot-stuffed */
    size_t body_len;
    int pipe, bdat; /* how it goes on this connection */
    int mail_sent, data_sent, body_sent;
    int mail_failed, failed; /* a refusal seen; the first code */
    int fail_code;
    size_t rcpt_sent, rcpt_replied, rcpt_ok;
    size_t bdat_off; /* body octets sent in BDAT chunks */
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
    struct fg_tls_ctx *tls_ctx; /* made at the first STARTTLS */

    struct inj_sess *sessions;
    unsigned nsess;   /* sessions not yet freed */
    unsigned nopen;   /* sessions that may take another message */
    uv_timer_t timer; /* the done callback, and the close callback, from the loop */
    unsigned nconns;
    size_t next; /* the next message to hand out */
    int probe_status;
    int finished;

    int closing;
    void (*close_cb)(void *ud);
    void *close_ud;

    /* One read buffer for every connection: a read is parsed completely
     * before the loop reads again. */
    char rbuf[INJ_READ_BUF];
};

struct inj_write {
    uv_write_t req;
    struct inj_sess *s;
    size_t len, cap;
    char data[];
};

static void sess_new(struct fg_injector *inj);
static void sess_close(struct inj_sess *s);
static void take_next(struct inj_sess *s);

static void retire(struct inj_sess *s)
{
    if (!s->retired) {
        s->retired = 1;
        s->inj->nopen--;
    }
}

static void send_quit(struct inj_sess *s);
static void tls_begin(struct inj_sess *s);
static void starttls_send(struct inj_sess *s, const struct fg_inject_msg *m);

/* --- output ------------------------------------------------------------ */

static struct inj_write *wbuf_new(size_t cap)
{
    struct inj_write *w = fg_malloc(sizeof(*w) + cap);
    w->len = 0;
    w->cap = cap;
    return w;
}

static void wbuf_reserve(struct inj_write **wp, size_t more)
{
    struct inj_write *w = *wp;
    if (w->len + more <= w->cap)
        return;
    size_t cap = w->cap * 2 + more;
    w = fg_realloc(w, sizeof(*w) + cap);
    w->cap = cap;
    *wp = w;
}

static void wbuf_printf(struct inj_write **wp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void wbuf_printf(struct inj_write **wp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    wbuf_reserve(wp, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((*wp)->data + (*wp)->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    (*wp)->len += (size_t)n;
}

static void wbuf_put(struct inj_write **wp, const char *d, size_t n)
{
    wbuf_reserve(wp, n);
    memcpy((*wp)->data + (*wp)->len, d, n);
    (*wp)->len += n;
}

static void expect(struct inj_sess *s, enum inj_exp e)
{
    if (s->exp_head + s->exp_len == s->exp_cap) {
        if (s->exp_head > 0) {
            memmove(s->exp, s->exp + s->exp_head, s->exp_len);
            s->exp_head = 0;
        } else {
            s->exp_cap = s->exp_cap ? s->exp_cap * 2 : 16;
            s->exp = fg_realloc(s->exp, s->exp_cap);
        }
    }
    s->exp[s->exp_head + s->exp_len++] = (unsigned char)e;
}

/* --- deadlines ----------------------------------------------------------- */

static void on_timeout(uv_timer_t *t);

static void arm(struct inj_sess *s)
{
    if (s->settling)
        return; /* the settle wait is short and ends in EHLO, which arms */
    uv_timer_start(&s->timer, on_timeout, s->inj->timeout_ms, 0);
}

/* --- messages ------------------------------------------------------------ */

static struct fg_inject_msg *cur_msg(struct inj_sess *s)
{
    return s->cur != NONE ? &s->inj->msgs[s->cur] : NULL;
}

/* msg_end - the current message is over: accepted (status 0) or failed. */
static void msg_end(struct inj_sess *s, int status, int code)
{
    struct fg_inject_msg *m = cur_msg(s);
    if (!m)
        return;
    m->status = status;
    if (code)
        m->reply_code = code;
    if (status == 0)
        m->accepted_us = fg_wall_us();
    free(s->body);
    s->body = NULL;
    s->cur = NONE;
}

/* refuse - a refusal of part of the transaction; the first code is the
 * message's (a pipelined 554 to DATA after a refused RCPT says less). */
static void refuse(struct inj_sess *s, int code)
{
    if (!s->failed)
        s->fail_code = code;
    s->failed = 1;
}

/* conn_fail - the connection broke or a deadline passed: the message in
 * progress failed with err (or with the refusal already seen). */
static void conn_fail(struct inj_sess *s, int err)
{
    if (s->inj->nmsgs == 0 && s->inj->probe_status != 0)
        s->inj->probe_status = err;
    if (cur_msg(s)) {
        if (s->failed)
            msg_end(s, FG_EPROTO, s->fail_code);
        else
            msg_end(s, err, 0);
    }
    sess_close(s);
}

static void on_timeout(uv_timer_t *t)
{
    struct inj_sess *s = t->data;
    if (!s->closing)
        conn_fail(s, FG_ETIMEOUT);
}

/* --- writing ------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    struct inj_write *w = (struct inj_write *)req;
    struct inj_sess *s = w->s;
    free(w);
    if (s->closing)
        return;
    if (status < 0) {
        conn_fail(s, status);
        return;
    }
    /* The reply deadline runs from when the kernel has all we sent: a
     * large body to a slow reader must not eat the wait for its reply. */
    arm(s);
}

/* send_raw - w onto the wire as it is (plaintext, or TLS records). */
static void send_raw(struct inj_sess *s, struct inj_write *w)
{
    if (w->len == 0) {
        free(w);
        return;
    }
    w->s = s;
    /* Only the replies are parsed: what we send is known already, and the
     * parser reads replies the same without it (no STARTTLS here). */
    if (s->sc)
        fg_capture_conn_data(s->sc, FG_C2S, w->data, w->len);
    /* Try the write at once: a group that fits in the socket buffer then
     * costs one write(2) and no request (through uv_write, libuv 1.44 also
     * re-arms the poll watcher: one more epoll_ctl(2) per command).  It is
     * refused while earlier writes are queued, so the order is kept. */
    size_t off = 0;
    int r = uv_try_write((uv_stream_t *)&s->tcp, &(uv_buf_t){.base = w->data, .len = w->len}, 1);
    if (r == (int)w->len) {
        free(w);
        arm(s);
        return;
    }
    if (r > 0)
        off = (size_t)r;
    else if (r != UV_EAGAIN) {
        free(w);
        conn_fail(s, r);
        return;
    }
    uv_buf_t b = uv_buf_init(w->data + off, (unsigned)(w->len - off));
    r = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_write);
    if (r < 0) {
        free(w);
        conn_fail(s, r);
        return;
    }
    arm(s);
}

/* tls_send - the TLS records OpenSSL has ready (handshake, or data). */
static void tls_send(struct inj_sess *s)
{
    size_t n = fg_tls_output_len(s->tls);
    if (n == 0 || s->closing)
        return;
    struct inj_write *w = wbuf_new(n);
    w->len = fg_tls_output_read(s->tls, w->data, n);
    send_raw(s, w);
}

/* flush - what the session sends: through TLS once it is up. */
static void flush(struct inj_sess *s, struct inj_write *w)
{
    if (!s->tls_up) {
        send_raw(s, w);
        return;
    }
    int r = w->len ? fg_tls_write(s->tls, w->data, w->len) : 0;
    free(w);
    if (r < 0) {
        conn_fail(s, FG_EPROTO);
        return;
    }
    tls_send(s);
}

static void send_cmd(struct inj_sess *s, enum inj_exp e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_cmd(struct inj_sess *s, enum inj_exp e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    struct inj_write *w = wbuf_new((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(w->data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    w->len = (size_t)n;
    expect(s, e);
    flush(s, w);
}

static int line_start(const char *b, size_t i)
{
    return i == 0 || (i >= 2 && b[i - 1] == '\n' && b[i - 2] == '\r');
}

/* put_stuffed - the text dot-stuffed (a '.' added to every line that
 * begins with one, RFC 5321 §4.5.2). */
static void put_stuffed(struct inj_write **wp, const char *body, size_t len)
{
    wbuf_reserve(wp, len + len / 64 + 8);
    size_t i = 0;
    while (i < len) {
        /* copy up to the next line start that is a dot */
        size_t j = i;
        if (body[j] == '.' && line_start(body, j)) {
            wbuf_put(wp, ".", 1);
            j++;
        }
        const char *p = j < len ? memmem(body + j, len - j, "\r\n.", 3) : NULL;
        size_t end = p ? (size_t)(p - body) + 2 : len;
        wbuf_put(wp, body + i, end - i);
        i = end;
    }
}

/* put_body - the message, dot-stuffed, then CRLF.CRLF. */
static void put_body(struct inj_write **wp, const char *body, size_t len)
{
    put_stuffed(wp, body, len);
    if (len < 2 || body[len - 2] != '\r' || body[len - 1] != '\n')
        wbuf_put(wp, "\r\n", 2);
    wbuf_put(wp, ".\r\n", 3);
}

/* put_smuggle - SMTP smuggling (SEC Consult, 2023; CVE-2023-51764/5/6):
 * the message text without its last CRLF, the non-standard end-of-data
 * sequence, then a whole second transaction whose sender the gateway never
 * accepted as a command, and the real CRLF.CRLF.  A server that keeps to
 * RFC 5321 §4.1.1.4 (only CRLF.CRLF ends the data) and §2.3.8 (no other
 * line terminator) keeps all of it in one message, or refuses it. */
static void put_smuggle(struct inj_write **wp, const struct fg_inject_msg *m, const char *body,
                        size_t len)
{
    if (len >= 2 && body[len - 2] == '\r' && body[len - 1] == '\n')
        len -= 2;
    put_stuffed(wp, body, len);
    wbuf_put(wp, m->smuggle, m->smuggle_len);
    wbuf_printf(wp, "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", m->smuggle_from, m->to[0]);
    wbuf_printf(wp,
                "From: <%s>\r\nTo: <%s>\r\nSubject: smuggled after %s\r\n"
                "Message-ID: <%s" FG_INJ_SMUGGLED_SUFFIX
                "@injector.faultgate.test>\r\n" FG_TOKEN_HEADER ": %s" FG_INJ_SMUGGLED_SUFFIX
                "\r\n\r\n"
                "This message was smuggled inside the text of message %s.\r\n.\r\n",
                m->smuggle_from, m->to[0], m->token, m->token, m->token, m->token);
}

/* put_chunk - one BDAT chunk: the command and its octets (not stuffed). */
static void put_chunk(struct inj_sess *s, struct inj_write **wp)
{
    size_t n = s->body_len - s->bdat_off;
    if (n > INJ_BDAT_CHUNK)
        n = INJ_BDAT_CHUNK;
    int last = s->bdat_off + n == s->body_len;
    wbuf_printf(wp, "BDAT %zu%s\r\n", n, last ? " LAST" : "");
    wbuf_put(wp, s->body + s->bdat_off, n);
    s->bdat_off += n;
    if (last)
        s->data_sent = 1;
    expect(s, X_BDAT);
}

/* send_group - the next commands of the transaction: one when not
 * pipelining, else up to INJ_GROUP_MAX ending with DATA or the last BDAT
 * (RFC 2920 §3.1: DATA ends a group; RFC 3030 §4.2: BDAT may be
 * pipelined). */
static void send_group(struct inj_sess *s)
{
    struct fg_inject_msg *m = cur_msg(s);
    unsigned limit = s->pipe ? INJ_GROUP_MAX : 1, n = 0;
    struct inj_write *w = wbuf_new(256);
    while (n < limit) {
        if (!s->mail_sent) {
            wbuf_printf(&w, "MAIL FROM:<%s>", m->from);
            if (s->caps & CAP_SIZE)
                wbuf_printf(&w, " SIZE=%zu", s->body_len);
            if ((m->flags & FG_INJ_8BIT) && (s->caps & CAP_8BITMIME))
                wbuf_printf(&w, " BODY=8BITMIME");
            wbuf_put(&w, "\r\n", 2);
            s->mail_sent = 1;
            expect(s, X_MAIL);
        } else if (s->rcpt_sent < m->nto) {
            wbuf_printf(&w, "RCPT TO:<%s>\r\n", m->to[s->rcpt_sent++]);
            expect(s, X_RCPT);
        } else if (!s->data_sent && s->bdat) {
            put_chunk(s, &w);
            if (s->data_sent)
                break;
        } else if (!s->data_sent) {
            wbuf_put(&w, "DATA\r\n", 6);
            s->data_sent = 1;
            expect(s, X_DATA);
            break;
        } else {
            break;
        }
        n++;
    }
    flush(s, w);
}

static void send_rset(struct inj_sess *s)
{
    send_cmd(s, X_RSET, "RSET\r\n");
}

/* advance - every awaited reply is in: what comes next. */
static void advance(struct inj_sess *s)
{
    struct fg_inject_msg *m = cur_msg(s);
    if (!m) {
        take_next(s);
        return;
    }
    /* Without pipelining the client stops at the first refusal; when
     * pipelining, the group's replies are all in now (RFC 2920 §3.1). */
    int no_rcpt = s->rcpt_replied == m->nto && s->rcpt_ok == 0;
    if (s->mail_failed || (s->failed && s->bdat) || (no_rcpt && !s->data_sent)) {
        msg_end(s, FG_EPROTO, s->fail_code);
        send_rset(s);
        return;
    }
    if (s->failed && s->data_sent) {
        /* a DATA refused (not 354) */
        msg_end(s, FG_EPROTO, s->fail_code);
        send_rset(s);
        return;
    }
    send_group(s);
}

/* start_message - the session's current message begins; 1 if it cannot
 * go on this connection at all (it is failed, nothing was sent). */
static int start_message(struct inj_sess *s)
{
    struct fg_inject_msg *m = cur_msg(s);
    s->mail_sent = s->data_sent = s->body_sent = 0;
    s->mail_failed = s->failed = s->fail_code = 0;
    s->rcpt_sent = s->rcpt_replied = s->rcpt_ok = 0;
    s->bdat_off = 0;
    if ((m->flags & FG_INJ_8BIT) && !(s->caps & CAP_8BITMIME)) {
        /* RFC 6152 §3: 8-bit data only to a server that offers 8BITMIME;
         * the injector does not downgrade.  Not sent. */
        msg_end(s, FG_EPROTO, 0);
        return 1;
    }
    s->pipe = (m->flags & FG_INJ_PIPELINING) && (s->caps & CAP_PIPELINING);
    s->bdat = (m->flags & FG_INJ_BDAT) && (s->caps & CAP_CHUNKING);
    m->used = (s->pipe ? FG_INJ_PIPELINING : 0) | (s->bdat ? FG_INJ_BDAT : 0) |
              (m->flags & (FG_INJ_8BIT | FG_INJ_NO_DOTS)) | (s->tls_up ? FG_INJ_STARTTLS : 0);
    s->body = fg_injector_body(m, &s->body_len);
    send_group(s);
    return 0;
}

static int msg_valid(const struct fg_inject_msg *m)
{
    if (!m->from || strpbrk(m->from, "\r\n") || m->nto == 0 || !m->to)
        return 0;
    if (m->smuggle_len && (!m->smuggle || !m->smuggle_from || strpbrk(m->smuggle_from, "\r\n")))
        return 0;
    if (m->starttls_inject_len && !m->starttls_inject)
        return 0;
    for (size_t i = 0; i < m->nto; i++)
        if (!m->to[i] || strpbrk(m->to[i], "\r\n"))
            return 0;
    return 1;
}

/* reserve - the next valid message for s, if the next message's
 * concurrency allows as many connections as are open; NONE otherwise. */
static size_t reserve(struct fg_injector *inj, unsigned open)
{
    while (inj->next < inj->nmsgs && !msg_valid(&inj->msgs[inj->next]))
        inj->msgs[inj->next++].status = FG_EINPUT;
    if (inj->next >= inj->nmsgs)
        return NONE;
    unsigned conc = inj->msgs[inj->next].concurrency;
    if (open > (conc ? conc : 1))
        return NONE;
    return inj->next++;
}

static void send_quit(struct inj_sess *s)
{
    retire(s);
    send_cmd(s, X_QUIT, "QUIT\r\n");
}

/* take_next - the next message for s, or QUIT.  A loop, not recursion:
 * thousands of messages may be refused before anything is sent. */
static void take_next(struct inj_sess *s)
{
    for (;;) {
        s->cur = reserve(s->inj, s->inj->nopen);
        if (s->cur == NONE) {
            send_quit(s);
            return;
        }
        if (start_message(s) == 0)
            return;
    }
}

/* --- replies ------------------------------------------------------------- */

static void on_reply(struct inj_sess *s, int code)
{
    struct fg_injector *inj = s->inj;
    int ok = code / 100 == 2;
    struct fg_inject_msg *m = cur_msg(s);
    if (s->exp_len == 0) {
        /* Unsolicited: a 421 on an idle connection (RFC 5321 §3.8). */
        if (code == 421)
            conn_fail(s, FG_EPROTO);
        return;
    }
    if (s->drain && code != 221 && code != 421) {
        arm(s); /* an answer to a smuggled command: the capture has it */
        return;
    }
    enum inj_exp e = (enum inj_exp)s->exp[s->exp_head];
    s->exp_head++;
    s->exp_len--;
    if (code == 421 && e != X_QUIT) {
        /* The server is closing the channel (RFC 5321 §3.8). */
        if (m)
            refuse(s, code);
        conn_fail(s, FG_EPROTO);
        return;
    }
    switch (e) {
    case X_GREETING:
        if (!ok) {
            if (m)
                msg_end(s, FG_EPROTO, code);
            if (inj->nmsgs == 0)
                inj->probe_status = FG_EPROTO;
            send_quit(s); /* RFC 5321 §3.1 */
        } else if (inj->nmsgs == 0) {
            inj->probe_status = 0;
            send_quit(s);
        } else if (s->early_ehlo) {
            arm(s); /* EHLO went before the greeting: its reply is next */
        } else if (m && (m->flags & FG_INJ_EARLY_EHLO)) {
            /* RFC 2920 §3.1: EHLO ends a group.  This RCPT goes before
             * its reply, and before any MAIL, so that the reply it is due
             * (503, RFC 5321 §4.3.2) cannot pass for EHLO's. */
            struct inj_write *w = wbuf_new(256);
            wbuf_printf(&w, "EHLO %s\r\nRCPT TO:<%s>\r\n", inj->helo, m->to[0]);
            expect(s, X_EHLO);
            expect(s, X_EARLY);
            flush(s, w);
        } else {
            send_cmd(s, X_EHLO, "EHLO %s\r\n", inj->helo);
        }
        return;
    case X_EHLO:
    case X_HELO:
        if (ok) {
            s->helo_only = e == X_HELO;
            if (s->helo_only)
                s->caps = 0;
            if (s->exp_len > 0 && s->exp[s->exp_head] == X_EARLY) {
                s->ehlo_wait = 1; /* the early command's reply first */
                arm(s);
                return;
            }
            if (m && m->starttls_inject_len && !s->starttls_sent && (s->caps & CAP_STARTTLS)) {
                starttls_send(s, m);
                return;
            }
            if (!m || start_message(s))
                take_next(s);
        } else if (e == X_EHLO && code / 100 == 5) {
            /* RFC 5321 §3.2: fall back to HELO */
            send_cmd(s, X_HELO, "HELO %s\r\n", inj->helo);
        } else {
            if (m)
                msg_end(s, FG_EPROTO, code);
            send_quit(s);
        }
        return;
    case X_MAIL:
        if (m)
            m->reply_code = code;
        if (!ok) {
            s->mail_failed = 1;
            refuse(s, code);
        }
        break;
    case X_RCPT:
        if (m)
            m->reply_code = code;
        s->rcpt_replied++;
        if (ok)
            s->rcpt_ok++;
        else if (m && s->rcpt_replied == m->nto && s->rcpt_ok == 0)
            refuse(s, code); /* every recipient refused */
        break;
    case X_DATA:
        if (m)
            m->reply_code = code;
        if (code != 354) {
            refuse(s, code);
            break;
        }
        if (m) {
            struct inj_write *w = wbuf_new(s->body_len + 64);
            if (s->failed || s->rcpt_ok == 0) {
                /* RFC 2920 §3.1: a 354 after the recipients were all
                 * refused still needs the end of data; send none. */
                refuse(s, s->fail_code ? s->fail_code : code);
                put_body(&w, "", 0);
            } else if (m->smuggle_len) {
                put_smuggle(&w, m, s->body, s->body_len);
            } else {
                put_body(&w, s->body, s->body_len);
            }
            expect(s, X_EOD);
            s->body_sent = 1;
            flush(s, w);
            return;
        }
        break;
    case X_EOD:
        /* The transaction is over either way (RFC 5321 §4.1.1.4). */
        if (m) {
            int smuggled = m->smuggle_len > 0;
            if (ok && !s->failed)
                msg_end(s, 0, code);
            else
                msg_end(s, FG_EPROTO, s->failed ? s->fail_code : code);
            if (smuggled && !s->closing) {
                /* Whatever the gateway answers to the smuggled commands
                 * comes before its 221: read it all into the capture. */
                s->drain = 1;
                send_quit(s);
                return;
            }
        }
        break;
    case X_BDAT:
        if (m)
            m->reply_code = code;
        if (!ok) {
            refuse(s, code);
        } else if (s->exp_len == 0 && s->data_sent && m) {
            /* the reply to the LAST chunk */
            if (!s->failed)
                msg_end(s, 0, code);
        }
        break;
    case X_RSET:
        break;
    case X_EARLY:
        if (s->exp_len > 0) {
            arm(s);
            return;
        }
        if (s->ehlo_wait) {
            s->ehlo_wait = 0;
            if (!m || start_message(s))
                take_next(s);
        }
        return;
    case X_QUIT:
        sess_close(s);
        return;
    case X_STARTTLS:
        if (code == 220) {
            tls_begin(s);
            return;
        }
        /* Refused: the plaintext sent with it may have been answered as
         * commands; read everything until the 221 into the capture. */
        if (m)
            msg_end(s, FG_EPROTO, code);
        s->drain = 1;
        send_quit(s);
        return;
    }
    if (s->closing)
        return;
    if (s->exp_len > 0) {
        arm(s);
        return;
    }
    advance(s);
}

static int on_event(void *ud, const struct fg_smtp_event *ev)
{
    struct inj_sess *s = ud;
    if (ev->type != FG_SMTP_EV_REPLY)
        return 0;
    s->have_reply = 1;
    s->reply_code = ev->code;
    if (s->exp_len && s->exp[s->exp_head] == X_EHLO && ev->code / 100 == 2) {
        /* The extensions offered: one keyword per line after the first
         * (RFC 5321 §4.1.1.1). */
        static const struct {
            const char *kw;
            unsigned cap;
        } kws[] = {{"PIPELINING", CAP_PIPELINING},
                   {"CHUNKING", CAP_CHUNKING},
                   {"8BITMIME", CAP_8BITMIME},
                   {"SIZE", CAP_SIZE},
                   {"STARTTLS", CAP_STARTTLS}};
        s->caps = 0;
        const char *t = ev->text, *end = ev->text + ev->text_len;
        unsigned line = 0;
        while (t < end) {
            const char *nl = memchr(t, '\n', (size_t)(end - t));
            const char *le = nl ? nl : end;
            if (line++ > 0 && le - t > 4) {
                const char *k = t + 4;
                size_t kl = 0;
                while (k + kl < le && k[kl] != ' ' && k[kl] != '\r')
                    kl++;
                for (size_t i = 0; i < sizeof kws / sizeof kws[0]; i++)
                    if (strlen(kws[i].kw) == kl && strncasecmp(k, kws[i].kw, kl) == 0)
                        s->caps |= kws[i].cap;
            }
            t = nl ? nl + 1 : end;
        }
    }
    return 1; /* act on it before the parser reads further */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct inj_sess *s = h->data;
    *buf = uv_buf_init(s->inj->rbuf, sizeof(s->inj->rbuf));
}

/* parse_replies - server octets in plaintext: each reply acted on as it
 * completes. */
static void parse_replies(struct inj_sess *s, const char *d, size_t len)
{
    size_t off = 0;
    /* Held events come with the next feed, even an empty one. */
    while (!s->closing && (off < len || fg_smtp_parser_queued(&s->p, FG_S2C))) {
        unsigned q0 = fg_smtp_parser_queued(&s->p, FG_S2C);
        size_t n = fg_smtp_parser_feed(&s->p, FG_S2C, off < len ? d + off : NULL, len - off);
        off += n;
        if (s->have_reply) {
            s->have_reply = 0;
            if (!s->settling)
                uv_timer_stop(&s->timer);
            on_reply(s, s->reply_code);
            /* The 220 to STARTTLS: what came with it was sent before TLS
             * and is no reply (RFC 3207 §4.2); the capture has it. */
            if (s->tls && !s->tls_up)
                return;
        } else if (n == 0 && (off < len || fg_smtp_parser_queued(&s->p, FG_S2C) >= q0)) {
            break;
        }
    }
}

/* tls_read_all - decrypted octets from the server, parsed as replies. */
static void tls_read_all(struct inj_sess *s)
{
    int k = 0;
    while (!s->closing && (k = fg_tls_read(s->tls, s->inj->rbuf, sizeof(s->inj->rbuf))) > 0)
        parse_replies(s, s->inj->rbuf, (size_t)k);
    if (s->closing)
        return;
    tls_send(s);
    if (k < 0)
        conn_fail(s, k == UV_EOF ? UV_EOF : FG_EPROTO);
}

/* After the handshake and FG_INJ_TLS_SETTLE_MS: what the server sent in
 * that time answered nothing of ours inside TLS (the injected plaintext,
 * if it ran), and is left to the capture; then EHLO again (RFC 3207 §4.2:
 * the client discards what it knew from before TLS). */
static void on_tls_settled(uv_timer_t *t)
{
    struct inj_sess *s = t->data;
    s->settling = 0;
    if (s->closing)
        return;
    s->caps = 0;
    send_cmd(s, X_EHLO, "EHLO %s\r\n", s->inj->helo);
}

/* tls_input - TLS records from the server. */
static void tls_input(struct inj_sess *s, const char *d, size_t n)
{
    if (fg_tls_put(s->tls, d, n) < 0) {
        conn_fail(s, FG_EPROTO);
        return;
    }
    if (!s->tls_up) {
        int r = fg_tls_handshake(s->tls);
        tls_send(s);
        if (s->closing)
            return;
        if (r < 0) {
            conn_fail(s, FG_EPROTO);
            return;
        }
        if (r == 0) {
            arm(s);
            return;
        }
        s->tls_up = 1;
        s->settling = 1;
        uv_timer_start(&s->timer, on_tls_settled, FG_INJ_TLS_SETTLE_MS, 0);
    }
    tls_read_all(s);
}

/* tls_begin - after the 220 to STARTTLS: the ClientHello.  TLS 1.2 at
 * most, so that handshake and application data records stay apart on the
 * wire (fg_tls_ctx_tls12_only). */
static void tls_begin(struct inj_sess *s)
{
    struct fg_injector *inj = s->inj;
    if (!inj->tls_ctx) {
        char err[256];
        if (fg_tls_client_ctx_new(NULL, &inj->tls_ctx, err, sizeof(err)) < 0) {
            conn_fail(s, FG_EPROTO);
            return;
        }
        fg_tls_ctx_tls12_only(inj->tls_ctx);
    }
    s->tls = fg_tls_new(inj->tls_ctx);
    int r = fg_tls_handshake(s->tls);
    tls_send(s);
    if (s->closing)
        return;
    if (r < 0)
        conn_fail(s, FG_EPROTO);
    else
        arm(s);
}

/* starttls_send - STARTTLS and the injected plaintext in one write: a
 * server that keeps what it read along with the STARTTLS line runs it
 * inside TLS (CVE-2011-0411). */
static void starttls_send(struct inj_sess *s, const struct fg_inject_msg *m)
{
    s->starttls_sent = 1;
    struct inj_write *w = wbuf_new(16 + m->starttls_inject_len);
    wbuf_put(&w, "STARTTLS\r\n", 10);
    wbuf_put(&w, m->starttls_inject, m->starttls_inject_len);
    expect(s, X_STARTTLS);
    flush(s, w);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct inj_sess *s = st->data;
    if (s->closing)
        return;
    if (nread < 0) {
        if (s->sc) {
            if (nread == UV_EOF)
                fg_capture_conn_fin(s->sc, FG_S2C);
            else if (nread == UV_ECONNRESET)
                fg_capture_conn_rst(s->sc, FG_S2C);
        }
        conn_fail(s, (int)nread);
        return;
    }
    if (s->sc && nread > 0)
        fg_capture_conn_data(s->sc, FG_S2C, buf->base, (size_t)nread);
    if (s->tls)
        tls_input(s, buf->base, (size_t)nread);
    else
        parse_replies(s, buf->base, (size_t)nread);
}

/* --- connections --------------------------------------------------------- */

static void maybe_free(struct fg_injector *inj)
{
    if (!inj->closing || inj->nsess || inj->timer.data)
        return;
    void (*cb)(void *) = inj->close_cb;
    void *ud = inj->close_ud;
    free(inj->host);
    free(inj->helo);
    fg_tls_ctx_free(inj->tls_ctx);
    free(inj);
    if (cb)
        cb(ud);
}

static void on_finished(uv_timer_t *t)
{
    struct fg_injector *inj = t->data;
    if (!inj->closing && inj->done_cb)
        inj->done_cb(inj, inj->ud);
}

/* spawn - open connections while messages wait and their concurrency
 * allows; the done callback once nothing is open and nothing is left. */
static void spawn(struct fg_injector *inj)
{
    if (inj->closing || inj->finished)
        return;
    for (;;) {
        size_t k = reserve(inj, inj->nopen + 1);
        if (k == NONE)
            break;
        inj->next = k; /* handed to the new session */
        sess_new(inj);
    }
    if (inj->nsess == 0) {
        inj->finished = 1;
        uv_timer_start(&inj->timer, on_finished, 0, 0);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct inj_sess *s = h->data;
    if (--s->handles > 0)
        return;
    struct fg_injector *inj = s->inj;
    for (struct inj_sess **pp = &inj->sessions; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    if (s->sc)
        fg_capture_conn_free(s->sc);
    fg_tls_free(s->tls);
    free(s->exp);
    free(s->body);
    free(s);
    inj->nsess--;
    if (inj->closing)
        maybe_free(inj);
    else
        spawn(inj);
}

static void sess_close(struct inj_sess *s)
{
    if (s->closing)
        return;
    s->closing = 1;
    retire(s);
    if (s->sc)
        fg_capture_conn_fin(s->sc, FG_C2S);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct inj_sess *s = req->data;
    if (status == UV_ECANCELED || s->closing)
        return;
    if (status < 0) {
        conn_fail(s, status);
        return;
    }
    if (s->inj->capture) {
        struct sockaddr_storage cl, sv;
        int cl_len = sizeof(cl), sv_len = sizeof(sv);
        if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&cl, &cl_len) == 0 &&
            uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&sv, &sv_len) == 0)
            s->sc = fg_capture_conn_open(s->inj->capture, (struct sockaddr *)&cl,
                                         (struct sockaddr *)&sv);
    }
    uv_tcp_nodelay(&s->tcp, 1);
    expect(s, X_GREETING);
    int r = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
    if (r < 0) {
        conn_fail(s, r);
        return;
    }
    struct fg_inject_msg *m = cur_msg(s);
    if (m && (m->flags & FG_INJ_EARLY_GREETING)) {
        /* RFC 5321 §4.3.1: the client SHOULD wait for the greeting; this
         * one does not, on purpose (pipelining desynchronisation). */
        s->early_ehlo = 1;
        send_cmd(s, X_EHLO, "EHLO %s\r\n", s->inj->helo);
        return;
    }
    arm(s);
}

/* sess_new - a connection for message inj->next (NONE-free; the probe has
 * no message). */
static void sess_new(struct fg_injector *inj)
{
    struct inj_sess *s = fg_calloc(1, sizeof(*s));
    s->inj = inj;
    s->cur = inj->next < inj->nmsgs ? inj->next++ : NONE;
    s->next = inj->sessions;
    inj->sessions = s;
    inj->nsess++;
    inj->nopen++;
    inj->nconns++;
    uv_tcp_init(inj->loop, &s->tcp);
    uv_timer_init(inj->loop, &s->timer);
    s->tcp.data = s->timer.data = s;
    s->handles = 2;
    fg_smtp_parser_init(&s->p, on_event, s);
    s->creq.data = s;
    struct sockaddr_storage ss;
    int r = strchr(inj->host, ':') ? uv_ip6_addr(inj->host, inj->port, (struct sockaddr_in6 *)&ss)
                                   : uv_ip4_addr(inj->host, inj->port, (struct sockaddr_in *)&ss);
    if (r == 0)
        r = uv_tcp_connect(&s->creq, &s->tcp, (struct sockaddr *)&ss, on_connect);
    if (r < 0) {
        conn_fail(s, r);
        return;
    }
    arm(s);
}

/* --- public -------------------------------------------------------------- */

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
        inj->msgs[i].used = 0;
    }
    uv_timer_init(loop, &inj->timer);
    inj->timer.data = inj;
    *out = inj;
    if (inj->nmsgs == 0)
        sess_new(inj); /* the probe */
    else
        spawn(inj);
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
    inj->timer.data = NULL;
    maybe_free(inj);
}

void fg_injector_close(struct fg_injector *inj, void (*cb)(void *ud), void *ud)
{
    if (inj->closing)
        return;
    inj->closing = 1;
    inj->close_cb = cb;
    inj->close_ud = ud;
    for (struct inj_sess *s = inj->sessions; s; s = s->next) {
        if (cur_msg(s))
            msg_end(s, UV_ECANCELED, 0);
        sess_close(s);
    }
    uv_close((uv_handle_t *)&inj->timer, on_timer_closed);
}

/* --- the message --------------------------------------------------------- */

/* line_text - a, the decimal n, b, c into ln (96 octets), as
 * snprintf(ln, 96, "%s%u%s%s", ...) would, returning the length written
 * (at most 95); callers cap it at 76. */
static int line_text(char *ln, const char *a, unsigned n, const char *b, const char *c)
{
    char num[12];
    int d = 0;
    do
        num[sizeof(num) - 1 - d++] = (char)('0' + n % 10);
    while ((n /= 10) != 0);
    size_t k = 0;
    const char *parts[] = {a, NULL, b, c};
    for (int i = 0; i < 4; i++) {
        const char *p = i == 1 ? num + sizeof(num) - d : parts[i];
        size_t l = i == 1 ? (size_t)d : strlen(p);
        if (l > 95 - k)
            l = 95 - k;
        memcpy(ln + k, p, l);
        k += l;
    }
    return (int)k;
}

/* fg_injector_body - a pure function of the message (no clock, no random
 * source), so that anyone can recompute its SHA-256 and compare it with
 * what a peer stored.  Body lines are printable ASCII (UTF-8 text with
 * FG_INJ_8BIT); some begin with '.' (one is a lone '.') so that every
 * submission exercises dot-stuffing, unless FG_INJ_NO_DOTS. */
char *fg_injector_body(const struct fg_inject_msg *m, size_t *len)
{
    const char *from = m->from ? m->from : "";
    int eight = (m->flags & FG_INJ_8BIT) != 0, dots = !(m->flags & FG_INJ_NO_DOTS);
    size_t cap = 1024 + (size_t)m->size + strlen(from);
    for (size_t i = 0; i < m->nto; i++)
        cap += strlen(m->to[i]) + 4;
    char *b = fg_malloc(cap);
    size_t n = 0;
#define PUT(...) (n += (size_t)snprintf(b + n, cap - n, __VA_ARGS__))
    PUT("From: <%s>\r\n", from);
    PUT("To: ");
    for (size_t i = 0; i < m->nto; i++) {
        if (n + strlen(m->to[i]) + 8 > cap) {
            cap = cap * 2 + strlen(m->to[i]) + 8;
            b = fg_realloc(b, cap);
        }
        /* folded (RFC 5322 §2.2.3) so that many recipients keep lines short */
        PUT("%s<%s>", i == 0 ? "" : (i % 8 ? ", " : ",\r\n "), m->to[i]);
    }
    if (cap - n < 1024) {
        cap = n + 1024 + (size_t)m->size;
        b = fg_realloc(b, cap);
    }
    PUT("\r\n");
    PUT("Subject: faultgate test message %s\r\n", m->token);
    /* A fixed date keeps the text reproducible (see above). */
    PUT("Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n");
    PUT("Message-ID: <%s@injector.faultgate.test>\r\n", m->token);
    PUT("MIME-Version: 1.0\r\n");
    if (eight)
        PUT("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n");
    else
        PUT("Content-Type: text/plain; charset=us-ascii\r\n");
    PUT(FG_TOKEN_HEADER ": %s\r\n", m->token);
    PUT("\r\n");
#define FILL                                                                                       \
    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"                               \
    " .,;:-_+=!?()[]<>{}/*#%&@~^|'\"$"
    static const char fill[] = FILL;
    unsigned line = 0;
    do {
        char ln[96];
        int k;
        unsigned kind = line % 9;
        if (!dots && (kind == 3 || kind == 6))
            kind = 0;
        /* Built by hand, not with snprintf: this runs once per body line
         * and the injector's rate is bounded by its CPU (ci/bench). */
        switch (kind) {
        case 3:
            k = line_text(ln, ".dotted line ", line, " of ", m->token);
            break;
        case 6:
            k = line % 18 == 6 ? 1 : 2;
            memcpy(ln, "..", 2);
            break;
        case 1:
        case 5:
            if (eight) {
                /* UTF-8: two-, three- and four-octet sequences */
                k = line_text(ln,
                              "Gr\xc3\xbc\xc3\x9f"
                              "e ",
                              line, " \xe2\x82\xac \xf0\x9f\x93\xa8 ", "");
                break;
            }
            /* fall through */
        default:
            k = line_text(ln, "line ", line, " of ", m->token);
            if (k < 76)
                ln[k++] = ' ';
            break;
        }
        if (k < 0 || (size_t)k > 76)
            k = 76;
        if (kind != 6 && k < 76) {
            /* the fill text twice over: one copy whatever the start */
            static const char fill2[] = FILL FILL;
            size_t f = (line * 7u + (unsigned)k) % (sizeof(fill) - 1);
            memcpy(ln + k, fill2 + f, (size_t)(76 - k));
            k = 76;
        }
        /* Trim the last line so that the text is about size octets; it
         * keeps at least one character, and no UTF-8 sequence is cut. */
        size_t room = m->size > n + 2 ? (size_t)(m->size - n - 2) : 1;
        if ((size_t)k > room) {
            k = (int)(room ? room : 1);
            while (k > 1 && ((unsigned char)ln[k] & 0xc0) == 0x80)
                k--;
        }
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
#undef FILL
    b[n] = '\0';
    *len = n;
    return b;
}
