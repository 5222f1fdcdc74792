/* mta.c - the fake MTA: the strict far end of the outbound leg.
 *
 * An SMTP server on loopback built on libuv and the shared SMTP parser
 * (faultgate/smtp.h).  It greets, answers EHLO (PIPELINING, SIZE,
 * 8BITMIME, ENHANCEDSTATUSCODES) and HELO, enforces the command order of
 * RFC 5321 §4.1.4 (503 otherwise), takes a DATA body, un-stuffs it
 * (§4.5.2), and for each accepted message records a ledger entry: token,
 * envelope, size, SHA-256, time and connection number.  The ledger is kept
 * in memory, appended as JSON lines to a file, and each message is written
 * to a maildir-like directory when asked.
 *
 * Both directions go through one parser per connection: what the client
 * sends (commands, body) and what we reply, so that the parser's reply
 * matching and DATA mode follow the session exactly as the proxy and the
 * analyzer see it.
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

#define MTA_HOSTNAME "mta.faultgate.test"
#define MTA_DEFAULT_MAX_SIZE (10u * 1024 * 1024)
/* Body octets kept beyond the advertised SIZE before we stop storing: the
 * message is refused with 552 anyway, this only bounds memory. */
#define MTA_BODY_SLACK (64u * 1024)
#define MTA_READ_BUF (64u * 1024)
/* Stop reading a client that pipelines faster than it reads our replies. */
#define MTA_WRITE_HIGH (256u * 1024)
#define MTA_MAX_RCPT 100 /* RFC 5321 §4.5.3.1.8: at least 100 must be accepted */

struct mta_conn {
    uv_tcp_t tcp;
    struct fg_mta *m;
    struct mta_conn *prev, *next;
    unsigned num;
    int closing;
    int quitting;    /* 221 sent: close once it is written */
    int read_paused; /* write queue above the high-water mark */
    struct fg_smtp_parser p;

    /* The event the parser stopped on, handled after the feed returns. */
    int have_cmd;
    int have_eod;
    char cmd[FG_SMTP_LINE_MAX + 1];
    size_t cmd_len;
    enum fg_smtp_verb verb;
    size_t arg_off;
    int cmd_truncated;

    /* Session and transaction state. */
    int greeted; /* HELO or EHLO accepted */
    int in_mail;
    char *mail_from;
    char **rcpt;
    size_t nrcpt, rcpt_cap;
    /* Body, un-stuffed as it arrives. */
    char *body;
    size_t body_len, body_cap;
    uint64_t body_total; /* octets after un-stuffing, stored or not */
    int line_start;      /* next body octet begins a line */
    int prev_cr;

    char rbuf[MTA_READ_BUF];
};

struct fg_mta {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int listener_open;
    int port;
    char *maildir;
    FILE *ledger;
    FILE *log;
    uint64_t max_size;
    struct fg_ledger_entry *entries;
    size_t nentries, entries_cap;
    struct mta_conn *conns;
    unsigned nconns;   /* open connection handles */
    unsigned accepted; /* messages */
    unsigned conn_seq; /* connections accepted so far */
    int closing;
    void (*close_cb)(void *ud);
    void *close_ud;
};

struct mta_write {
    uv_write_t req;
    struct mta_conn *c;
    size_t len;
    char data[];
};

static void conn_close(struct mta_conn *c);
static void conn_process(struct mta_conn *c, const char *buf, size_t len);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

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
    if (m->ledger)
        fclose(m->ledger);
    free(m->maildir);
    free(m);
    if (cb)
        cb(ud);
}

/* --- transaction ------------------------------------------------------ */

static void txn_reset(struct mta_conn *c)
{
    FG_FREE(c->mail_from);
    for (size_t i = 0; i < c->nrcpt; i++)
        free(c->rcpt[i]);
    c->nrcpt = 0;
    c->in_mail = 0;
    c->body_len = 0;
    c->body_total = 0;
    c->line_start = 1;
    c->prev_cr = 0;
}

static void conn_free(struct mta_conn *c)
{
    txn_reset(c);
    free(c->rcpt);
    free(c->body);
    free(c);
}

/* --- writing replies -------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    struct mta_write *w = (struct mta_write *)req;
    struct mta_conn *c = w->c;
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->quitting) {
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
            conn_close(c);
        return;
    }
    if (c->read_paused && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        c->read_paused = 0;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

/* conn_reply - send one reply (all its lines, CRLF-terminated) and show it
 * to the parser so that it matches the reply to its command and enters or
 * leaves DATA mode as the client will. */
static void conn_reply(struct mta_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_reply(struct mta_conn *c, const char *fmt, ...)
{
    if (c->closing)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    struct mta_write *w = fg_malloc(sizeof(*w) + (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(w->data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    w->c = c;
    w->len = (size_t)n;
    fg_smtp_parser_feed(&c->p, FG_S2C, w->data, w->len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r < 0) {
        free(w);
        conn_close(c);
    }
}

/* --- parser events ---------------------------------------------------- */

/* body_append - un-stuff body octets as they arrive: a line that starts
 * with '.' had one '.' added by the client (RFC 5321 §4.5.2). */
static void body_append(struct mta_conn *c, const char *d, size_t len)
{
    size_t keep = (size_t)(c->m->max_size + MTA_BODY_SLACK);
    for (size_t i = 0; i < len; i++) {
        char ch = d[i];
        if (c->line_start) {
            c->line_start = 0;
            if (ch == '.') {
                c->prev_cr = 0;
                continue;
            }
        }
        if (ch == '\n' && c->prev_cr)
            c->line_start = 1;
        c->prev_cr = ch == '\r';
        c->body_total++;
        if (c->body_len < keep) {
            if (c->body_len == c->body_cap)
                fg_array_reserve((void **)&c->body, &c->body_cap, c->body_len + 1, 1);
            c->body[c->body_len++] = ch;
        }
    }
}

static int on_event(void *ud, const struct fg_smtp_event *ev)
{
    struct mta_conn *c = ud;
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
        c->have_cmd = 1;
        return 1; /* reply before the parser looks at what follows */
    }
    case FG_SMTP_EV_DATA:
        body_append(c, ev->data, ev->data_len);
        return 0;
    case FG_SMTP_EV_END_OF_DATA:
        c->have_eod = 1;
        return 1;
    case FG_SMTP_EV_VIOLATION:
        if (ev->dir == FG_C2S)
            mta_log(c->m, "conn %u: client violation %s", c->num,
                    fg_smtp_violation_name(ev->violation));
        return 0;
    default:
        return 0;
    }
}

/* --- commands --------------------------------------------------------- */

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

static void cmd_ehlo(struct mta_conn *c, const char *arg, int extended)
{
    if (!*arg) {
        conn_reply(c, "501 5.5.4 %s requires a domain\r\n", extended ? "EHLO" : "HELO");
        return;
    }
    txn_reset(c); /* RFC 5321 §4.1.4: EHLO resets the transaction */
    c->greeted = 1;
    if (!extended) {
        conn_reply(c, "250 " MTA_HOSTNAME "\r\n");
        return;
    }
    conn_reply(c,
               "250-" MTA_HOSTNAME " greets %.*s\r\n"
               "250-PIPELINING\r\n"
               "250-SIZE %" PRIu64 "\r\n"
               "250-8BITMIME\r\n"
               "250 ENHANCEDSTATUSCODES\r\n",
               200, arg, c->m->max_size);
}

static void cmd_mail(struct mta_conn *c, const char *arg)
{
    if (!c->greeted) {
        conn_reply(c, "503 5.5.1 Error: send HELO/EHLO first\r\n");
        return;
    }
    if (c->in_mail) {
        conn_reply(c, "503 5.5.1 Error: nested MAIL command\r\n");
        return;
    }
    const char *params;
    char *from = parse_path(arg, "FROM:", &params);
    if (!from) {
        conn_reply(c, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
        return;
    }
    /* Parameters: SIZE (RFC 1870), BODY (RFC 6152); others are refused
     * as unrecognised (RFC 5321 §4.1.1.11). */
    while (*params) {
        const char *sp = strchr(params, ' ');
        size_t n = sp ? (size_t)(sp - params) : strlen(params);
        if (n > 5 && strncasecmp(params, "SIZE=", 5) == 0) {
            char num[32];
            uint64_t sz;
            if (n - 5 >= sizeof(num)) {
                free(from);
                conn_reply(c, "501 5.5.4 Bad SIZE parameter\r\n");
                return;
            }
            memcpy(num, params + 5, n - 5);
            num[n - 5] = '\0';
            if (fg_uint_parse(num, 0, UINT64_MAX, &sz) < 0) {
                free(from);
                conn_reply(c, "501 5.5.4 Bad SIZE parameter\r\n");
                return;
            }
            if (sz > c->m->max_size) { /* RFC 1870 §6.1 */
                free(from);
                conn_reply(c, "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
                return;
            }
        } else if (n > 5 && strncasecmp(params, "BODY=", 5) == 0) {
            if (!((n == 9 && strncasecmp(params + 5, "7BIT", 4) == 0) ||
                  (n == 13 && strncasecmp(params + 5, "8BITMIME", 8) == 0))) {
                free(from);
                conn_reply(c, "501 5.5.4 Bad BODY parameter\r\n");
                return;
            }
        } else {
            free(from);
            conn_reply(c, "555 5.5.4 Unsupported MAIL parameter\r\n");
            return;
        }
        params += n;
        while (*params == ' ')
            params++;
    }
    c->mail_from = from;
    c->in_mail = 1;
    conn_reply(c, "250 2.1.0 Ok\r\n");
}

static void cmd_rcpt(struct mta_conn *c, const char *arg)
{
    if (!c->in_mail) {
        conn_reply(c, "503 5.5.1 Error: need MAIL command\r\n");
        return;
    }
    const char *params;
    char *to = parse_path(arg, "TO:", &params);
    if (!to || !*to) {
        free(to);
        conn_reply(c, "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
        return;
    }
    if (*params) {
        free(to);
        conn_reply(c, "555 5.5.4 Unsupported RCPT parameter\r\n");
        return;
    }
    if (c->nrcpt >= MTA_MAX_RCPT) {
        free(to);
        conn_reply(c, "452 4.5.3 Too many recipients\r\n");
        return;
    }
    *FG_ARRAY_PUSH(c->rcpt, c->nrcpt, c->rcpt_cap) = to;
    conn_reply(c, "250 2.1.5 Ok\r\n");
}

static void cmd_data(struct mta_conn *c, const char *arg)
{
    if (!c->in_mail) {
        conn_reply(c, "503 5.5.1 Error: need MAIL command\r\n");
        return;
    }
    if (!c->nrcpt) {
        conn_reply(c, "503 5.5.1 Error: need RCPT command\r\n");
        return;
    }
    if (*arg) {
        conn_reply(c, "501 5.5.4 Syntax: DATA\r\n");
        return;
    }
    c->body_len = 0;
    c->body_total = 0;
    c->line_start = 1;
    c->prev_cr = 0;
    conn_reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
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
    json_t *o = json_pack("{s:s, s:s, s:o, s:I, s:s, s:I, s:I}", "token", e->token, "mail_from",
                          e->mail_from, "rcpt", rc, "size", (json_int_t)e->size, "sha256",
                          e->sha256, "t_us", (json_int_t)e->t_us, "conn", (json_int_t)e->conn);
    if (!o)
        return FG_EINPUT; /* e.g. an address that is not valid UTF-8 */
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s)
        return FG_EINPUT;
    int r = fprintf(m->ledger, "%s\n", s) < 0 || fflush(m->ledger) != 0 ? -errno : 0;
    free(s);
    return r;
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

static void end_of_data(struct mta_conn *c)
{
    struct fg_mta *m = c->m;
    if (c->body_total > m->max_size) {
        mta_log(m, "conn %u: message of %" PRIu64 " octets refused (SIZE %" PRIu64 ")", c->num,
                c->body_total, m->max_size);
        conn_reply(c, "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
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
    e.conn = c->num;
    unsigned n = m->accepted + 1;
    /* Accepted means recorded: a message we cannot store gets a transient
     * failure, so the sender keeps responsibility (RFC 5321 §6.1). */
    int r = maildir_write(m, n, c->body, c->body_len);
    if (r == 0)
        r = ledger_write(m, &e);
    if (r < 0) {
        mta_log(m, "conn %u: cannot store message: %s", c->num, fg_strerror(r));
        conn_reply(c, "451 4.3.0 Error: cannot store message\r\n");
        txn_reset(c);
        return;
    }
    m->accepted = n;
    /* The entry takes the envelope over. */
    struct fg_ledger_entry *slot = FG_ARRAY_PUSH(m->entries, m->nentries, m->entries_cap);
    *slot = e;
    slot->rcpt = fg_malloc(sizeof(char *) * (c->nrcpt ? c->nrcpt : 1));
    memcpy(slot->rcpt, c->rcpt, sizeof(char *) * c->nrcpt);
    c->nrcpt = 0;
    c->mail_from = NULL;
    mta_log(m, "conn %u: message %u accepted, token %s, %" PRIu64 " octets", c->num, n,
            slot->token[0] ? slot->token : "-", slot->size);
    conn_reply(c, "250 2.0.0 Ok: queued as FG%08X\r\n", n);
    txn_reset(c);
}

static void do_command(struct mta_conn *c)
{
    const char *arg = c->cmd + c->arg_off;
    mta_log(c->m, "conn %u: C: %.*s", c->num, (int)(c->cmd_len > 200 ? 200 : c->cmd_len), c->cmd);
    if (c->cmd_truncated) { /* RFC 5321 §4.5.3.1.4 */
        conn_reply(c, "500 5.5.2 Error: line too long\r\n");
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
        conn_reply(c, "250 2.0.0 Ok\r\n");
        break;
    case FG_VERB_NOOP:
        conn_reply(c, "250 2.0.0 Ok\r\n");
        break;
    case FG_VERB_QUIT:
        conn_reply(c, "221 2.0.0 Bye\r\n");
        c->quitting = 1;
        break;
    case FG_VERB_OTHER:
        conn_reply(c, "500 5.5.2 Error: command not recognized\r\n");
        break;
    default: /* known verbs this MTA does not offer (RFC 5321 §4.2.4) */
        conn_reply(c, "502 5.5.1 Error: command not implemented\r\n");
        break;
    }
}

/* conn_process - feed client bytes to the parser, stopping at each
 * command and at the end of data to answer before the parser reads on:
 * the reply to DATA decides whether what follows is a body. */
static void conn_process(struct mta_conn *c, const char *buf, size_t len)
{
    size_t off = 0;
    /* Events the parser held after a stop are delivered by the next feed,
     * even an empty one (faultgate/smtp.h), so drain them too. */
    while (!c->closing && !c->quitting && (off < len || fg_smtp_parser_queued(&c->p, FG_C2S))) {
        unsigned q0 = fg_smtp_parser_queued(&c->p, FG_C2S);
        size_t n = fg_smtp_parser_feed(&c->p, FG_C2S, off < len ? buf + off : NULL, len - off);
        off += n;
        if (c->have_cmd) {
            c->have_cmd = 0;
            do_command(c);
        } else if (c->have_eod) {
            c->have_eod = 0;
            end_of_data(c);
        } else if (n == 0 && (off < len || fg_smtp_parser_queued(&c->p, FG_C2S) >= q0)) {
            break; /* no progress and nothing to do: cannot happen */
        }
    }
    if (!c->closing && !c->quitting && !c->read_paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > MTA_WRITE_HIGH) {
        c->read_paused = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

/* --- connections ------------------------------------------------------ */

static void on_conn_closed(uv_handle_t *h)
{
    struct mta_conn *c = h->data;
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

static void conn_close(struct mta_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mta_conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mta_conn *c = s->data;
    if (nread < 0) {
        if (nread != UV_EOF)
            mta_log(c->m, "conn %u: read: %s", c->num, uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (nread > 0)
        conn_process(c, buf->base, (size_t)nread);
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
    c->tcp.data = c;
    c->next = m->conns;
    if (m->conns)
        m->conns->prev = c;
    m->conns = c;
    m->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    /* Connection numbers follow accept order, as the analyzer counts
     * SYNs to the port. */
    c->num = ++m->conn_seq;
    fg_smtp_parser_init(&c->p, on_event, c);
    uv_tcp_nodelay(&c->tcp, 1);
    mta_log(m, "conn %u: accepted", c->num);
    conn_reply(c, "220 " MTA_HOSTNAME " ESMTP faultgate fake MTA\r\n");
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* --- public ----------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *h)
{
    struct fg_mta *m = h->data;
    m->listener_open = 0;
    mta_maybe_done(m);
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
    m->max_size = o->max_size ? o->max_size : MTA_DEFAULT_MAX_SIZE;
    if (o->maildir) {
        if ((r = fg_mkdir_p(o->maildir)) < 0) {
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
    if (r == 0)
        r = uv_listen((uv_stream_t *)&m->listener, 128, on_connection);
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

void fg_mta_close(struct fg_mta *m, void (*cb)(void *ud), void *ud)
{
    if (m->closing)
        return;
    m->closing = 1;
    m->close_cb = cb;
    m->close_ud = ud;
    uv_close((uv_handle_t *)&m->listener, on_listener_closed);
    for (struct mta_conn *c = m->conns; c; c = c->next)
        conn_close(c);
}
