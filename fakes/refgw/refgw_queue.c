/* refgw_queue.c - refgw's spool and delivery queue.
 *
 * Every accepted message is a file in the spool directory (envelope lines,
 * a blank line, then the body) written before the 250 to the final dot
 * (RFC 5321 §6.1), and loaded again at start-up so a restart loses nothing.
 * The queue keeps the retry schedule (exponential backoff between --retry
 * and --max-retry-delay, give-up after --give-up) and generates bounces
 * with a null reverse-path (RFC 5321 §4.5.5, §6.1; RFC 3464 in spirit).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "faultgate/smtp.h"
#include "faultgate/util.h"
#include "refgw.h"

static struct refgw_msg *queue_head;

struct refgw_msg *refgw_msg_new(void)
{
    struct refgw_msg *m = fg_calloc(1, sizeof(*m));
    refgw_msg_make_id(m->id, sizeof(m->id));
    m->sender = fg_strdup("");
    m->arrival_s = fg_wall_us() / 1000000u;
    m->next_ms = fg_now_ms();
    return m;
}

void refgw_msg_free(struct refgw_msg *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nrcpts; i++) {
        free(m->rcpts[i].addr);
        free(m->rcpts[i].reply);
    }
    free(m->rcpts);
    free(m->sender);
    free(m->body);
    free(m->last_error);
    free(m);
}

void refgw_msg_add_rcpt(struct refgw_msg *m, const char *addr, size_t len)
{
    struct refgw_rcpt *r = FG_ARRAY_PUSH(m->rcpts, m->nrcpts, m->rcap);
    memset(r, 0, sizeof(*r));
    r->addr = fg_strndup(addr, len);
}

void refgw_msg_make_id(char *out, size_t len)
{
    static unsigned counter;
    snprintf(out, len, "%llX.%X.%X", (unsigned long long)fg_wall_us(), (unsigned)getpid(),
             ++counter);
}

static char *spool_path(const struct refgw_msg *m, const char *suffix)
{
    return fg_asprintf("%s/%s%s", refgw_cfg.spool, m->id, suffix);
}

/* refgw_spool_write - (re)write m's file with the recipients still to be
 * delivered; temp file + rename so a reader never sees half a file. */
int refgw_spool_write(struct refgw_msg *m)
{
    char *tmp = spool_path(m, ".tmp");
    char *path = spool_path(m, ".msg");
    int rc = 0;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = -errno;
        goto out;
    }
    fprintf(f, "refgw-spool 1\nid %s\narrival %llu\nattempts %u\nfrom %s\n", m->id,
            (unsigned long long)m->arrival_s, m->attempts, m->sender);
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].state == RCPT_PENDING || m->rcpts[i].state == RCPT_ACCEPTED)
            fprintf(f, "rcpt %s\n", m->rcpts[i].addr);
    fputc('\n', f);
    if (m->body_len)
        fwrite(m->body, 1, m->body_len, f);
    if (ferror(f))
        rc = -EIO;
    if (fclose(f) != 0 && !rc)
        rc = -errno;
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
out:
    free(tmp);
    free(path);
    return rc;
}

void refgw_spool_remove(const struct refgw_msg *m)
{
    char *path = spool_path(m, ".msg");
    unlink(path);
    free(path);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 8192, n = 0;
    char *buf = fg_malloc(cap);
    for (;;) {
        if (n == cap)
            buf = fg_realloc(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Parse one spool file; NULL if it is not ours or is damaged. */
static struct refgw_msg *spool_parse(const char *name, const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    struct refgw_msg *m = fg_calloc(1, sizeof(*m));
    int ok = 0, first = 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        size_t ll = (size_t)(nl - p);
        if (ll == 0) { /* end of the envelope */
            p = nl + 1;
            ok = !first && m->sender && m->id[0];
            break;
        }
        if (first) {
            if (ll != 13 || memcmp(p, "refgw-spool 1", 13) != 0)
                break;
            first = 0;
        } else if (ll > 3 && !memcmp(p, "id ", 3)) {
            snprintf(m->id, sizeof(m->id), "%.*s", (int)(ll - 3), p + 3);
        } else if (ll > 8 && !memcmp(p, "arrival ", 8)) {
            m->arrival_s = strtoull(p + 8, NULL, 10);
        } else if (ll > 9 && !memcmp(p, "attempts ", 9)) {
            m->attempts = (unsigned)strtoul(p + 9, NULL, 10);
        } else if (ll >= 5 && !memcmp(p, "from ", 5)) {
            free(m->sender);
            m->sender = fg_strndup(p + 5, ll - 5);
        } else if (ll > 5 && !memcmp(p, "rcpt ", 5)) {
            refgw_msg_add_rcpt(m, p + 5, ll - 5);
        }
        p = nl + 1;
    }
    if (!ok || m->nrcpts == 0) {
        refgw_log("spool: ignoring %s (not a refgw spool file or no recipients)", name);
        refgw_msg_free(m);
        return NULL;
    }
    m->body_len = (size_t)(end - p);
    m->body = fg_malloc(m->body_len + 1);
    memcpy(m->body, p, m->body_len);
    m->next_ms = fg_now_ms();
    return m;
}

/* refgw_spool_load - queue every message left in the spool by an earlier
 * run: a 250 already went out for each (RFC 5321 §6.1). */
int refgw_spool_load(void)
{
    DIR *d = opendir(refgw_cfg.spool);
    if (!d)
        return -errno;
    struct dirent *e;
    unsigned n = 0;
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        char *path = fg_asprintf("%s/%s", refgw_cfg.spool, e->d_name);
        if (nl > 4 && !strcmp(e->d_name + nl - 4, ".tmp")) {
            unlink(path); /* a write that never reached its rename */
        } else if (nl > 4 && !strcmp(e->d_name + nl - 4, ".msg")) {
            size_t len;
            char *buf = read_file(path, &len);
            struct refgw_msg *m = buf ? spool_parse(e->d_name, buf, len) : NULL;
            free(buf);
            if (m) {
                refgw_log("spool: recovered id=%s from=<%s> rcpts=%zu size=%zu", m->id, m->sender,
                          m->nrcpts, m->body_len);
                refgw_queue_add(m);
                n++;
            }
        }
        free(path);
    }
    closedir(d);
    return (int)n;
}

void refgw_queue_add(struct refgw_msg *m)
{
    struct refgw_msg **pp = &queue_head;
    while (*pp)
        pp = &(*pp)->next;
    m->next = NULL;
    *pp = m;
    refgw_out_kick();
}

static void queue_unlink(struct refgw_msg *m)
{
    for (struct refgw_msg **pp = &queue_head; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            m->next = NULL;
            return;
        }
}

/* refgw_queue_next_due - the oldest message whose retry time has come, or
 * NULL with *wait_ms set to the time until the next one (UINT64_MAX: none). */
/* refgw_msg_route - which side relays m: X.400 when there is an X.400
 * upstream and either no --x400-domain was given or every recipient is in
 * that domain (or below it); SMTP otherwise.  Bounces go back by SMTP. */
int refgw_msg_route(const struct refgw_msg *m)
{
    if (!refgw_cfg.x400_port)
        return REFGW_ROUTE_SMTP;
    if (!refgw_cfg.x400_domain[0])
        return REFGW_ROUTE_X400;
    if (!m->sender[0] || m->nrcpts == 0)
        return REFGW_ROUTE_SMTP;
    size_t dl = strlen(refgw_cfg.x400_domain);
    for (size_t i = 0; i < m->nrcpts; i++) {
        const char *at = strrchr(m->rcpts[i].addr, '@');
        if (!at)
            return REFGW_ROUTE_SMTP;
        const char *dom = at + 1;
        size_t l = strlen(dom);
        int match = (l == dl && strcasecmp(dom, refgw_cfg.x400_domain) == 0) ||
                    (l > dl && dom[l - dl - 1] == '.' &&
                     strcasecmp(dom + l - dl, refgw_cfg.x400_domain) == 0);
        if (!match)
            return REFGW_ROUTE_SMTP;
    }
    return REFGW_ROUTE_X400;
}

struct refgw_msg *refgw_queue_next_due(uint64_t now, uint64_t *wait_ms, int route)
{
    uint64_t best = UINT64_MAX;
    for (struct refgw_msg *m = queue_head; m; m = m->next) {
        if (refgw_msg_route(m) != route)
            continue;
        if (m->next_ms <= now)
            return m;
        if (m->next_ms - now < best)
            best = m->next_ms - now;
    }
    *wait_ms = best;
    return NULL;
}

static void format_date(char *out, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* Append s to a growing buffer. */
static void buf_add(char **b, size_t *n, size_t *cap, const char *s, size_t len)
{
    fg_array_reserve((void **)b, cap, *n + len + 1, 1);
    memcpy(*b + *n, s, len);
    *n += len;
    (*b)[*n] = '\0';
}

static void buf_addz(char **b, size_t *n, size_t *cap, const char *s)
{
    buf_add(b, n, cap, s, strlen(s));
}

/* Copy text that may hold CR/LF onto one line, so a reply cannot break the
 * bounce's line structure. */
static void buf_add_oneline(char **b, size_t *n, size_t *cap, const char *s)
{
    for (; *s; s++) {
        char c = (*s == '\r' || *s == '\n') ? ' ' : *s;
        buf_add(b, n, cap, &c, 1);
    }
}

/* Generate a bounce for the recipients in state RCPT_FAILED and mark them
 * RCPT_BOUNCED.  Never bounce a bounce (RFC 5321 §4.5.5). */
static void bounce_failed(struct refgw_msg *m)
{
    size_t nfail = 0;
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].state == RCPT_FAILED)
            nfail++;
    if (!nfail)
        return;
    if (!m->sender[0]) {
        refgw_log("bounce suppressed id=%s: null reverse-path (RFC 5321 §4.5.5)", m->id);
        for (size_t i = 0; i < m->nrcpts; i++)
            if (m->rcpts[i].state == RCPT_FAILED)
                m->rcpts[i].state = RCPT_BOUNCED;
        return;
    }
    struct refgw_msg *b = refgw_msg_new();
    refgw_msg_add_rcpt(b, m->sender, strlen(m->sender));
    char *body = NULL, date[64], token[FG_TOKEN_MAX];
    size_t n = 0, cap = 0;
    format_date(date, sizeof(date));
    char *hdr = fg_asprintf("Received: by %s (refgw) id %s; %s\r\n"
                            "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
                            "To: <%s>\r\n"
                            "Subject: Undelivered Mail Returned to Sender\r\n"
                            "Date: %s\r\n"
                            "Message-ID: <%s@%s>\r\n"
                            "Auto-Submitted: auto-replied\r\n"
                            "MIME-Version: 1.0\r\n"
                            "Content-Type: text/plain; charset=us-ascii\r\n",
                            refgw_cfg.hostname, b->id, date, refgw_cfg.hostname, m->sender, date,
                            b->id, refgw_cfg.hostname);
    buf_addz(&body, &n, &cap, hdr);
    free(hdr);
    size_t tl = fg_smtp_token_find(m->body, m->body_len, token, sizeof(token));
    if (tl) {
        /* The original token line, so the message's fate can be followed. */
        buf_addz(&body, &n, &cap, FG_TOKEN_HEADER ": ");
        buf_add(&body, &n, &cap, token, tl);
        buf_addz(&body, &n, &cap, "\r\n");
    }
    buf_addz(&body, &n, &cap, "\r\nThis is the mail system at host ");
    buf_addz(&body, &n, &cap, refgw_cfg.hostname);
    buf_addz(&body, &n, &cap,
             ".\r\n\r\nYour message could not be delivered to one or more recipients.\r\n\r\n");
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct refgw_rcpt *r = &m->rcpts[i];
        if (r->state != RCPT_FAILED)
            continue;
        buf_addz(&body, &n, &cap, "<");
        buf_add_oneline(&body, &n, &cap, r->addr);
        buf_addz(&body, &n, &cap, ">: ");
        buf_add_oneline(&body, &n, &cap, r->reply ? r->reply : "failed");
        buf_addz(&body, &n, &cap, "\r\n");
        r->state = RCPT_BOUNCED;
    }
    buf_addz(&body, &n, &cap, "\r\n--- original message headers ---\r\n\r\n");
    /* The original header block (up to the first empty line, at most 8 KiB). */
    size_t lim = m->body_len < 8192 ? m->body_len : 8192;
    const char *eoh = memmem(m->body, lim, "\r\n\r\n", 4);
    size_t hl = eoh ? (size_t)(eoh - m->body) + 2 : lim;
    buf_add(&body, &n, &cap, m->body, hl);
    if (hl && !(hl >= 2 && m->body[hl - 2] == '\r' && m->body[hl - 1] == '\n'))
        buf_addz(&body, &n, &cap, "\r\n");
    b->body = body;
    b->body_len = n;
    int rc = refgw_spool_write(b);
    if (rc < 0)
        refgw_log("bounce id=%s: spool write failed: %s", b->id, strerror(-rc));
    refgw_log("bounced id=%s to=<%s> bounce-id=%s recipients=%zu", m->id, m->sender, b->id, nfail);
    refgw_queue_add(b);
}

void refgw_msg_fail_all(struct refgw_msg *m, const char *reply)
{
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct refgw_rcpt *r = &m->rcpts[i];
        if (r->state == RCPT_PENDING || r->state == RCPT_ACCEPTED) {
            r->state = RCPT_FAILED;
            free(r->reply);
            r->reply = fg_strdup(reply);
        }
    }
}

void refgw_msg_attempt_done(struct refgw_msg *m, const char *reason)
{
    size_t pending = 0;
    for (size_t i = 0; i < m->nrcpts; i++) {
        if (m->rcpts[i].state == RCPT_ACCEPTED)
            m->rcpts[i].state = RCPT_PENDING; /* no 250 after the dot: still ours */
        if (m->rcpts[i].state == RCPT_PENDING)
            pending++;
    }
    if (pending) {
        uint64_t age_ms = (fg_wall_us() / 1000000u - m->arrival_s) * 1000u;
        if (age_ms >= refgw_cfg.give_up_ms) {
            char *why = fg_asprintf("gave up after %llus in the queue; last error: %s",
                                    (unsigned long long)(age_ms / 1000), reason ? reason : "-");
            refgw_log("give up id=%s: %s", m->id, why);
            refgw_msg_fail_all(m, why);
            free(why);
            pending = 0;
        }
    }
    if (refgw_cfg.bug == REFGW_BUG_SILENT_DROP) {
        for (size_t i = 0; i < m->nrcpts; i++) {
            if (m->rcpts[i].state != RCPT_FAILED)
                continue;
            /* Q135031: mail for a destination it cannot route stays in the
             * spool; nothing picks it up again, no error is logged and
             * nothing is returned to the sender. */
            queue_unlink(m);
            refgw_msg_free(m);
            return;
        }
    }
    bounce_failed(m);
    if (!pending) {
        queue_unlink(m);
        refgw_spool_remove(m);
        refgw_log("removed id=%s from the queue", m->id);
        refgw_msg_free(m);
        return;
    }
    /* Keep the spool in step with what is left to deliver. */
    int rc = refgw_spool_write(m);
    if (rc < 0)
        refgw_log("spool rewrite id=%s failed: %s", m->id, strerror(-rc));
    m->delay_ms = m->delay_ms ? m->delay_ms * 2 : refgw_cfg.retry_ms;
    if (m->delay_ms > refgw_cfg.max_retry_ms)
        m->delay_ms = refgw_cfg.max_retry_ms;
    m->next_ms = fg_now_ms() + m->delay_ms;
    free(m->last_error);
    m->last_error = fg_strdup(reason ? reason : "deferred");
    refgw_log("retry scheduled id=%s in %llums (attempt %u): %s", m->id,
              (unsigned long long)m->delay_ms, m->attempts, m->last_error);
}

void refgw_queue_free_all(void)
{
    while (queue_head) {
        struct refgw_msg *m = queue_head;
        queue_head = m->next;
        refgw_msg_free(m);
    }
}
