/* diagnose.c - the knowledge-base symptom detectors (faultgate/diagnose.h).
 *
 * One streaming pass over the capture: trace.c reassembles each TCP
 * connection, one shared SMTP parser (smtp.c) per connection turns its
 * bytes into commands, replies and bodies, and the detectors below watch
 * those events.  Nothing needs roles: a "client" is the side that opened
 * the connection, a host that is the client of a stalled session and the
 * server of other connections is a gateway, and a message is followed
 * across connections by its faultgate token, its Message-ID or a hash of
 * its content (the part after the header, which a relay leaves alone).
 *
 * What is kept across connections is only what may still become a
 * finding: accepted messages not yet seen again (plus, for a while, those
 * that were, so a third copy of a message is not mistaken for a new one),
 * drops whose aftermath is not known, stalls, and connections that were
 * never greeted.  Healthy traffic leaves nothing behind.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "faultgate/diagnose.h"
#include "faultgate/error.h"
#include "faultgate/smtp.h"
#include "faultgate/util.h"
#include "faultgate/x400.h"
#include "faultgate/x400_state.h"

#define DEFAULT_STALL_US (5ull * 1000000)
#define BODY_KEEP 16384                     /* token and Message-ID are looked for here */
#define RESOLVED_KEEP_US (600ull * 1000000) /* copies of a relayed message seen this long after */
#define RESOLVED_MAX 16384
#define PENDING_MAX 200000 /* accepted messages followed at once */
#define AWAIT_MAX 8        /* ends of data awaiting their replies, per connection */
#define RECORDS_MAX 100000 /* stalls, unanswered connections, drops */
#define MSGID_MAX 96

/* Detectors of other protocols: X.400 over RFC 1006 (Q194685, an invalid
 * minor sync point then an abort), at the end of this file. */
static const struct fg_diag_detector x400_detector;
const struct fg_diag_detector *const fg_diag_detectors[] = {&x400_detector, NULL};
#define DET_MAX 8 /* detectors a connection may have */

/* ---- records kept across connections ----------------------------------- */

enum mstate { M_SEEN, M_PENDING, M_RESOLVED };

struct mrec {
    enum mstate state;
    uint64_t keys[6];
    int nkeys;
    unsigned conn;
    char client[64], server[64];
    uint64_t eod_frame, eod_us, accept_frame, accept_us, resolve_us;
    int accept_code;
    char token[FG_TOKEN_MAX];
    char msgid[MSGID_MAX];
    struct mrec *prev, *next; /* pending or resolved list */
    int awaited;              /* in the await list of the connection that carried it */
};

struct knode {
    uint64_t key;
    struct mrec *r;
    struct knode *next;
};

struct mlist {
    struct mrec *head, *tail;
    size_t n;
};

/* A wait of a greeted client for its peer that lasted at least stall_us. */
struct stall {
    unsigned conn;
    char client_host[64], server[64], client[64];
    uint64_t start_us, end_us, start_frame, end_frame;
    const char *what; /* "reply to DATA", "message body" */
    int ended;        /* 0: still waiting when the connection or trace ended */
};

/* A connection that got no 2xx greeting. */
struct ungreeted {
    unsigned conn;
    char client[64], server[64], server_host[64];
    uint64_t open_frame, open_us, end_frame, end_us;
    int code; /* non-2xx greeting, or 0 */
    char how[96];
    int used; /* already part of a finding */
};

/* The server closed after EHLO/HELO before replying. */
struct drop {
    unsigned conn;
    char client[64], client_host[64], server[64];
    const char *verb;
    uint64_t cmd_frame, cmd_us, close_frame, close_us;
    int rst;
    unsigned retry_conn;
    uint64_t retry_frame, retry_us, retry_cmd_frame;
    char retry_verb[8];
    int retry_delivered;
    uint64_t retry_eod_frame;
};

struct diag {
    struct fg_diag_report *rep;
    uint64_t stall_us;
    struct knode **bucket;
    size_t nbucket, nkeys;
    struct mlist pending, resolved;
    uint64_t not_followed, last_relayed_accept_us;
    struct stall *st;
    size_t nst, capst;
    struct ungreeted *ug;
    size_t nug, capug;
    struct drop *dr;
    size_t ndr, capdr;
    char **greeted_servers; /* endpoints that greeted someone with 2xx */
    size_t ngs, capgs;
    uint64_t records_dropped;
    /* A multihomed gateway (Q131150): mail that arrived on host `in` left
     * again from host `out`, so the two are one gateway. */
    struct alias {
        char in[64], out[64];
        uint64_t in_frame, out_frame;
    } * al;
    size_t nal, capal;
};

#define ALIASES_MAX 64

/* ---- per connection ----------------------------------------------------- */

struct cst {
    struct diag *dg;
    unsigned id;
    char client[64], server[64], client_host[64], server_host[64];
    uint64_t open_frame, open_us;
    struct fg_smtp_parser p;
    uint64_t frame, us;
    int smtp;
    int greeted, greet_code;
    /* the client waits for its peer since wait_us (0: not waiting) */
    int outstanding;
    uint64_t wait_us, wait_frame;
    const char *wait_what;
    /* EHLO/HELO not yet answered */
    int hello_pending;
    const char *hello_verb;
    uint64_t hello_frame, hello_us;
    /* the body being sent */
    int in_body;
    uint64_t body_frame, body_us, body_last_frame, body_last_us, body_octets;
    int mail_null;
    char *body; /* BODY_KEEP octets, allocated at the first body (not
                   zeroed per connection: most of a session's state is small) */
    size_t body_len;
    int hdr_done, line_start, hash_content;
    uint64_t content_hash;
    /* ends of data awaiting replies, oldest first */
    struct mrec *await[AWAIT_MAX];
    uint64_t await_frame[AWAIT_MAX], await_us[AWAIT_MAX];
    size_t nawait;
    int eod_pending_gap; /* S2C bytes went missing while a reply was awaited */
    int gap_c2s, gap_s2c, gapped;
    uint64_t last_eod_frame, last_eod_us;
    int eod_unanswered; /* the latest end of data had no reply yet */
    /* how the connection ended */
    int fin[2], rst[2];
    uint64_t end_frame[2], end_us[2];
    uint64_t quit_frame;
    uint64_t s2c_bytes;
    long drop_idx; /* this connection retries after drop dr[drop_idx] */
    void *det[DET_MAX];
    int claimed; /* a detector of another protocol took the connection */
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

#define FNV0 1469598103934665603ull

static uint64_t key_of(char kind, const char *s, size_t n)
{
    uint64_t h = fnv(FNV0, &kind, 1);
    return fnv(h, s, n) | 1; /* never 0 */
}

static void host_of(char *out, size_t outlen, const char *ep)
{
    const char *colon = strrchr(ep, ':');
    size_t n = colon ? (size_t)(colon - ep) : strlen(ep);
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, ep, n);
    out[n] = '\0';
}

/* ---- the key table ------------------------------------------------------ */

static void ktab_insert(struct diag *dg, uint64_t key, struct mrec *r)
{
    if (dg->nkeys + 1 > dg->nbucket) {
        size_t nb = dg->nbucket ? dg->nbucket * 2 : 1024;
        struct knode **b = fg_calloc(nb, sizeof *b);
        for (size_t i = 0; i < dg->nbucket; i++)
            while (dg->bucket[i]) {
                struct knode *n = dg->bucket[i];
                dg->bucket[i] = n->next;
                n->next = b[n->key & (nb - 1)];
                b[n->key & (nb - 1)] = n;
            }
        free(dg->bucket);
        dg->bucket = b;
        dg->nbucket = nb;
    }
    struct knode *n = fg_malloc(sizeof *n);
    n->key = key;
    n->r = r;
    n->next = dg->bucket[key & (dg->nbucket - 1)];
    dg->bucket[key & (dg->nbucket - 1)] = n;
    dg->nkeys++;
}

static struct mrec *ktab_find(struct diag *dg, uint64_t key, unsigned not_conn)
{
    if (!dg->nbucket)
        return NULL;
    for (struct knode *n = dg->bucket[key & (dg->nbucket - 1)]; n; n = n->next)
        if (n->key == key && n->r->conn != not_conn)
            return n->r;
    return NULL;
}

static void ktab_remove(struct diag *dg, struct mrec *r)
{
    for (int i = 0; i < r->nkeys; i++) {
        struct knode **pp = &dg->bucket[r->keys[i] & (dg->nbucket - 1)];
        while (*pp) {
            if ((*pp)->r == r) {
                struct knode *n = *pp;
                *pp = n->next;
                free(n);
                dg->nkeys--;
                break;
            }
            pp = &(*pp)->next;
        }
    }
}

static void ml_add(struct mlist *l, struct mrec *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void ml_del(struct mlist *l, struct mrec *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->next = r->prev = NULL;
    l->n--;
}

static void mrec_free(struct diag *dg, struct mrec *r)
{
    ktab_remove(dg, r);
    free(r);
}

static void resolved_expire(struct diag *dg, uint64_t now)
{
    while (dg->resolved.head && (dg->resolved.n > RESOLVED_MAX ||
                                 dg->resolved.head->resolve_us + RESOLVED_KEEP_US < now)) {
        struct mrec *r = dg->resolved.head;
        ml_del(&dg->resolved, r);
        mrec_free(dg, r);
    }
}

/* ---- findings ----------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void fg_diag_add(struct fg_diag_report *r, const struct fg_diag_finding *f)
{
    if (r->n >= FG_DIAG_MAX_FINDINGS) {
        r->dropped++;
        return;
    }
    struct fg_diag_finding *d = FG_ARRAY_PUSH(r->f, r->n, r->cap);
    *d = *f;
    d->symptom = fg_strdup(f->symptom ? f->symptom : "");
    d->summary = fg_strdup(f->summary ? f->summary : "");
    d->detail = f->detail ? fg_strdup(f->detail) : NULL;
    size_t n = 0;
    for (size_t i = 0; i < f->nframes && i < FG_DIAG_FRAMES; i++)
        if (f->frames[i])
            d->frames[n++] = f->frames[i];
    qsort(d->frames, n, sizeof d->frames[0], cmp_u64);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || d->frames[k - 1] != d->frames[i])
            d->frames[k++] = d->frames[i];
    d->nframes = k;
}

static const char *secs(char *buf, size_t len, uint64_t us)
{
    snprintf(buf, len, "%.3f", (double)us / 1e6);
    return buf;
}

static uint64_t rel(const struct diag *dg, uint64_t us)
{
    return us > dg->rep->stats.first_us ? us - dg->rep->stats.first_us : 0;
}

static void finding_init(struct fg_diag_finding *f, const char *kb, const char *symptom,
                         unsigned conn, const char *client, const char *server, uint64_t us)
{
    memset(f, 0, sizeof *f);
    snprintf(f->kb, sizeof f->kb, "%s", kb);
    f->symptom = (char *)symptom;
    f->conn = conn;
    snprintf(f->client, sizeof f->client, "%s", client);
    snprintf(f->server, sizeof f->server, "%s", server);
    f->us = us;
    f->certain = 1;
}

static void frame_push(struct fg_diag_finding *f, uint64_t frame)
{
    if (frame && f->nframes < FG_DIAG_FRAMES)
        f->frames[f->nframes++] = frame;
}

static void add_and_free(struct diag *dg, struct fg_diag_finding *f)
{
    fg_diag_add(dg->rep, f);
    free(f->summary);
    free(f->detail);
}

/* ---- waits and stalls --------------------------------------------------- */

/* The client's wait ends at (us, frame): long enough, it is a stall. */
static void wait_end(struct cst *s, uint64_t us, uint64_t frame, int ended)
{
    struct diag *dg = s->dg;
    if (!s->wait_us)
        return;
    if (us >= s->wait_us && us - s->wait_us >= dg->stall_us) {
        if (dg->nst >= RECORDS_MAX) {
            dg->records_dropped++;
        } else {
            struct stall *t = FG_ARRAY_PUSH(dg->st, dg->nst, dg->capst);
            memset(t, 0, sizeof *t);
            t->conn = s->id;
            snprintf(t->client_host, sizeof t->client_host, "%s", s->client_host);
            snprintf(t->client, sizeof t->client, "%s", s->client);
            snprintf(t->server, sizeof t->server, "%s", s->server);
            t->start_us = s->wait_us;
            t->start_frame = s->wait_frame;
            t->end_us = us;
            t->end_frame = frame;
            t->what = s->wait_what;
            t->ended = ended;
        }
    }
    s->wait_us = 0;
}

static void wait_begin(struct cst *s, const char *what)
{
    if (!s->greeted)
        return;
    s->wait_us = s->us;
    s->wait_frame = s->frame;
    s->wait_what = what;
}

/* ---- messages ----------------------------------------------------------- */

static void body_reset(struct cst *s)
{
    if (!s->body)
        s->body = fg_malloc(BODY_KEEP);
    s->body_len = 0;
    s->hdr_done = 0;
    s->hash_content = 0;
    s->line_start = 1;
    s->content_hash = FNV0;
    s->body_octets = 0;
}

static size_t find_msgids(const struct cst *s, int all, char ids[][MSGID_MAX], size_t max);

/* The kept header carries a token or a Message-ID. */
static int header_has_identity(const struct cst *s)
{
    char tok[FG_TOKEN_MAX], ids[1][MSGID_MAX];
    return fg_smtp_token_find(s->body, s->body_len, tok, sizeof tok) || find_msgids(s, 0, ids, 1);
}

static void body_add(struct cst *s, const char *p, size_t n)
{
    s->body_octets += n;
    /* Past the header only a bounce's text is looked at (it quotes the
     * original's header); other messages keep their header alone, which
     * spares copying and scanning every body. */
    size_t room = s->hdr_done && !s->mail_null ? 0 : BODY_KEEP - s->body_len;
    memcpy(s->body + s->body_len, p, n < room ? n : room);
    s->body_len += n < room ? n : room;
    if (s->hdr_done) {
        if (s->hash_content)
            s->content_hash = fnv(s->content_hash, p, n);
        return;
    }
    /* The header ends at the first empty line (RFC 5322 §2.1). */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (s->line_start && (c == '\n' || c == '\r')) {
            if (c == '\n') {
                s->hdr_done = 1;
                /* Hash the content only for a message with no identity in
                 * its header (hashing every body octet is the costliest
                 * thing diagnose would do). */
                s->hash_content = !s->mail_null && !header_has_identity(s);
                if (s->hash_content)
                    s->content_hash = fnv(s->content_hash, p + i + 1, n - i - 1);
                return;
            }
            continue;
        }
        s->line_start = c == '\n';
    }
}

/* Message-ID values at line starts in the kept prefix (the header only,
 * unless all is set: a bounce quotes the original's header). */
static size_t find_msgids(const struct cst *s, int all, char ids[][MSGID_MAX], size_t max)
{
    size_t n = 0;
    const char *b = s->body, *end = s->body + s->body_len;
    const char *p = b;
    while (p < end && n < max) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        size_t ll = (size_t)(nl - p);
        if (!all && (ll == 0 || (ll == 1 && p[0] == '\r')))
            break;
        if (ll > 11 && strncasecmp(p, "Message-ID:", 11) == 0) {
            const char *v = p + 11, *ve = nl;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t vl = (size_t)(ve - v);
            if (vl && vl < MSGID_MAX) {
                memcpy(ids[n], v, vl);
                ids[n][vl] = '\0';
                n++;
            }
        }
        p = nl + 1;
    }
    return n;
}

/* The message r arrived at r->server and now leaves from s's client:
 * when the hosts differ, both are addresses of one gateway. */
static void alias_note(struct diag *dg, const struct mrec *r, const struct cst *s)
{
    char in[64];
    host_of(in, sizeof in, r->server);
    if (strcmp(in, s->client_host) == 0 || dg->nal >= ALIASES_MAX)
        return;
    for (size_t i = 0; i < dg->nal; i++)
        if (strcmp(dg->al[i].in, in) == 0 && strcmp(dg->al[i].out, s->client_host) == 0)
            return;
    struct alias *a = FG_ARRAY_PUSH(dg->al, dg->nal, dg->capal);
    snprintf(a->in, sizeof a->in, "%s", in);
    snprintf(a->out, sizeof a->out, "%s", s->client_host);
    a->in_frame = r->eod_frame;
    a->out_frame = s->frame;
}

/* The alias that ties inbound host `in` to outbound host `out`, or NULL. */
static const struct alias *alias_of(const struct diag *dg, const char *in, const char *out)
{
    for (size_t i = 0; i < dg->nal; i++)
        if (strcmp(dg->al[i].in, in) == 0 && strcmp(dg->al[i].out, out) == 0)
            return &dg->al[i];
    return NULL;
}

static void resolve(struct diag *dg, struct mrec *r, uint64_t now)
{
    if (r->state == M_RESOLVED)
        return;
    if (r->state == M_PENDING) {
        ml_del(&dg->pending, r);
        if (r->accept_us > dg->last_relayed_accept_us)
            dg->last_relayed_accept_us = r->accept_us;
    }
    r->state = M_RESOLVED;
    r->resolve_us = now;
    dg->rep->relayed++;
    /* Seen relayed before its own end of data was answered: the list (and
     * its expiry) takes it only once that connection lets go of it. */
    if (!r->awaited)
        ml_add(&dg->resolved, r);
}

/* The connection that carried r no longer waits for the reply to its end
 * of data (it closed): a record nobody else saw goes, a resolved one
 * joins the resolved list. */
static void await_drop(struct diag *dg, struct mrec *r)
{
    if (!r)
        return;
    r->awaited = 0;
    if (r->state == M_SEEN)
        mrec_free(dg, r);
    else if (r->state == M_RESOLVED)
        ml_add(&dg->resolved, r);
}

/* A body ended (CRLF.CRLF or BDAT LAST): follow the message. */
static void msg_end(struct cst *s)
{
    struct diag *dg = s->dg;
    dg->rep->messages++;
    char token[FG_TOKEN_MAX] = "";
    char ids[4][MSGID_MAX];
    fg_smtp_token_find(s->body, s->body_len, token, sizeof token);
    size_t nids = find_msgids(s, s->mail_null, ids, s->mail_null ? 4 : 1);
    uint64_t keys[6];
    int nk = 0;
    if (token[0])
        keys[nk++] = key_of('T', token, strlen(token));
    for (size_t i = 0; i < nids; i++)
        keys[nk++] = key_of('M', ids[i], strlen(ids[i]));
    /* The content is the last resort: short bodies repeat ("test"), so it
     * is used only for a message that carries no identity.  A bounce's
     * content is its own report, never the original's. */
    if (!nk && s->hash_content)
        keys[nk++] = key_of('B', (const char *)&s->content_hash, sizeof s->content_hash);

    struct mrec *found = NULL;
    for (int i = 0; i < nk && !found; i++)
        found = ktab_find(dg, keys[i], s->id);
    struct mrec *r = NULL;
    if (found) {
        /* Seen before on another connection: relayed (or bounced). */
        alias_note(dg, found, s);
        resolve(dg, found, s->us);
    } else if (!s->mail_null && nk) {
        r = fg_calloc(1, sizeof *r);
        r->state = M_SEEN;
        memcpy(r->keys, keys, sizeof keys[0] * (size_t)nk);
        r->nkeys = nk;
        r->conn = s->id;
        snprintf(r->client, sizeof r->client, "%s", s->client);
        snprintf(r->server, sizeof r->server, "%s", s->server);
        r->eod_frame = s->frame;
        r->eod_us = s->us;
        snprintf(r->token, sizeof r->token, "%s", token);
        if (nids)
            snprintf(r->msgid, sizeof r->msgid, "%s", ids[0]);
        for (int i = 0; i < nk; i++)
            ktab_insert(dg, keys[i], r);
    }
    if (s->nawait < AWAIT_MAX) {
        s->await[s->nawait] = r;
        if (r)
            r->awaited = 1;
        s->await_frame[s->nawait] = s->frame;
        s->await_us[s->nawait] = s->us;
        s->nawait++;
    } else if (r) {
        mrec_free(dg, r);
    }
    s->last_eod_frame = s->frame;
    s->last_eod_us = s->us;
    s->eod_unanswered = 1;
}

/* The reply to the oldest awaited end of data. */
static void msg_reply(struct cst *s, int code)
{
    struct diag *dg = s->dg;
    if (!s->nawait)
        return;
    struct mrec *r = s->await[0];
    memmove(s->await, s->await + 1, (s->nawait - 1) * sizeof s->await[0]);
    memmove(s->await_frame, s->await_frame + 1, (s->nawait - 1) * sizeof s->await_frame[0]);
    memmove(s->await_us, s->await_us + 1, (s->nawait - 1) * sizeof s->await_us[0]);
    s->nawait--;
    if (!s->nawait)
        s->eod_unanswered = 0;
    if (code / 100 == 2 && s->drop_idx >= 0) {
        struct drop *d = &dg->dr[s->drop_idx];
        if (!d->retry_delivered) {
            d->retry_delivered = 1;
            d->retry_eod_frame = s->frame;
        }
    }
    if (!r)
        return;
    r->awaited = 0;
    if (r->state == M_RESOLVED)
        ml_add(&dg->resolved, r);
    if (r->state != M_SEEN)
        return;
    if (code / 100 != 2 || dg->pending.n >= PENDING_MAX) {
        if (code / 100 == 2)
            dg->not_followed++;
        mrec_free(dg, r);
        return;
    }
    r->state = M_PENDING;
    r->accept_frame = s->frame;
    r->accept_us = s->us;
    r->accept_code = code;
    ml_add(&dg->pending, r);
}

/* ---- SMTP events -------------------------------------------------------- */

static int is_null_sender(const char *arg, size_t n)
{
    /* "FROM:<>" possibly with parameters and spaces (RFC 5321 §4.1.1.2). */
    size_t i = 0;
    if (n >= 5 && strncasecmp(arg, "FROM:", 5) == 0)
        i = 5;
    while (i < n && arg[i] == ' ')
        i++;
    return i + 1 < n && arg[i] == '<' && arg[i + 1] == '>';
}

static int on_smtp(void *ud, const struct fg_smtp_event *ev)
{
    struct cst *s = ud;
    struct diag *dg = s->dg;
    switch (ev->type) {
    case FG_SMTP_EV_COMMAND:
        if (ev->verb != FG_VERB_OTHER)
            s->smtp = 1;
        if (s->outstanding == 0)
            wait_begin(s, ev->verb == FG_VERB_OTHER ? "reply to a command" : NULL);
        if (s->wait_us && !s->wait_what)
            s->wait_what = fg_smtp_verb_name(ev->verb);
        s->outstanding++;
        if (ev->verb == FG_VERB_EHLO || ev->verb == FG_VERB_HELO) {
            s->hello_pending = 1;
            s->hello_verb = ev->verb == FG_VERB_EHLO ? "EHLO" : "HELO";
            s->hello_frame = s->frame;
            s->hello_us = s->us;
            if (s->drop_idx >= 0 && !dg->dr[s->drop_idx].retry_verb[0]) {
                snprintf(dg->dr[s->drop_idx].retry_verb, sizeof dg->dr[0].retry_verb, "%s",
                         s->hello_verb);
                dg->dr[s->drop_idx].retry_cmd_frame = s->frame;
            }
        } else if (ev->verb == FG_VERB_MAIL) {
            s->mail_null = is_null_sender(ev->arg, ev->arg_len);
        } else if (ev->verb == FG_VERB_QUIT && !s->quit_frame) {
            s->quit_frame = s->frame;
        } else if (ev->verb == FG_VERB_BDAT && !s->in_body) {
            s->in_body = 1;
            s->body_frame = s->frame;
            s->body_us = s->us;
            body_reset(s);
        }
        break;
    case FG_SMTP_EV_REPLY:
        if (ev->answers == FG_ANS_GREETING) {
            s->smtp = s->smtp || (ev->code >= 200 && ev->code < 600);
            if (!s->greeted) {
                s->greeted = 1;
                s->greet_code = ev->code;
                if (ev->code / 100 == 2) {
                    size_t i;
                    for (i = 0; i < dg->ngs; i++)
                        if (strcmp(dg->greeted_servers[i], s->server) == 0)
                            break;
                    if (i == dg->ngs && dg->ngs < RECORDS_MAX)
                        *FG_ARRAY_PUSH(dg->greeted_servers, dg->ngs, dg->capgs) =
                            fg_strdup(s->server);
                }
            }
            break;
        }
        if (ev->answers == FG_ANS_UNSOLICITED)
            break;
        if (s->outstanding > 0)
            s->outstanding--;
        wait_end(s, s->us, s->frame, 1);
        if (s->outstanding > 0)
            wait_begin(s, "reply");
        if (ev->answers == FG_ANS_COMMAND &&
            (ev->answers_verb == FG_VERB_EHLO || ev->answers_verb == FG_VERB_HELO))
            s->hello_pending = 0;
        if (ev->answers == FG_ANS_END_OF_DATA ||
            (ev->answers == FG_ANS_BDAT && ev->answers_seq && s->nawait))
            msg_reply(s, ev->code);
        break;
    case FG_SMTP_EV_DATA_BEGIN:
        s->in_body = 1;
        s->body_frame = s->frame;
        s->body_us = s->us;
        s->body_last_frame = s->frame;
        s->body_last_us = s->us;
        body_reset(s);
        break;
    case FG_SMTP_EV_DATA:
    case FG_SMTP_EV_BDAT_DATA:
        if (ev->data_len) {
            /* The client makes progress: any wait for the peer so far
             * ends here, and a new one starts at this last octet. */
            if (ev->type == FG_SMTP_EV_DATA && s->outstanding == 0) {
                wait_end(s, s->us, s->frame, 1);
                wait_begin(s, "message body");
            }
            s->body_last_frame = s->frame;
            s->body_last_us = s->us;
            body_add(s, ev->data, ev->data_len);
        }
        break;
    case FG_SMTP_EV_END_OF_DATA:
        s->in_body = 0;
        wait_end(s, s->us, s->frame, 1);
        s->outstanding++;
        wait_begin(s, "reply to the end of data");
        msg_end(s);
        break;
    case FG_SMTP_EV_BDAT_END:
        if (ev->last) {
            s->in_body = 0;
            msg_end(s);
        }
        break;
    case FG_SMTP_EV_TLS_START:
    case FG_SMTP_EV_VIOLATION:
        break;
    }
    return 0;
}

/* ---- trace callbacks ---------------------------------------------------- */

static void t_open(void *ud, struct fg_trace_conn *tc)
{
    struct diag *dg = ud;
    /* Zeroed but for the parser, which its init prepares (most of its
     * 12 KB are buffers that need no zeroing: a per-connection cost). */
    struct cst *s = fg_malloc(sizeof *s);
    memset(s, 0, offsetof(struct cst, p));
    memset((char *)s + offsetof(struct cst, p) + sizeof s->p, 0,
           sizeof *s - offsetof(struct cst, p) - sizeof s->p);
    s->dg = dg;
    s->id = tc->id;
    snprintf(s->client, sizeof s->client, "%s", tc->client_str);
    snprintf(s->server, sizeof s->server, "%s", tc->server_str);
    host_of(s->client_host, sizeof s->client_host, s->client);
    host_of(s->server_host, sizeof s->server_host, s->server);
    s->open_frame = s->frame = tc->open_frame;
    s->open_us = s->us = tc->open_us;
    s->drop_idx = -1;
    fg_smtp_parser_init(&s->p, on_smtp, s);
    tc->user = s;
    resolved_expire(dg, tc->open_us);

    /* A new connection from the client of a drop to the same server is
     * what the client did next (Q197142). */
    for (size_t i = dg->ndr; i-- > 0;) {
        struct drop *d = &dg->dr[i];
        if (d->retry_conn || d->close_us > tc->open_us)
            continue;
        if (strcmp(d->server, s->server) == 0 && strcmp(d->client_host, s->client_host) == 0) {
            d->retry_conn = s->id;
            d->retry_frame = s->frame;
            d->retry_us = s->us;
            s->drop_idx = (long)i;
            break;
        }
    }
    for (size_t i = 0; i < DET_MAX && fg_diag_detectors[i]; i++)
        s->det[i] = fg_diag_detectors[i]->open(tc);
}

static void t_data(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, const uint8_t *buf,
                   size_t len, uint64_t frame, uint64_t us)
{
    struct cst *s = tc->user;
    s->frame = frame;
    s->us = us;
    if (dir == FG_S2C)
        s->s2c_bytes += len;
    for (size_t i = 0; i < DET_MAX && fg_diag_detectors[i]; i++) {
        if (!s->det[i])
            continue;
        int mine = fg_diag_detectors[i]->data(s->det[i], tc, dir, buf, len, frame, us);
        if (mine == FG_DIAG_MINE) {
            s->claimed = 1;
        } else if (mine == FG_DIAG_NOT_MINE) {
            fg_diag_detectors[i]->close(s->det[i], tc, s->dg->rep);
            s->det[i] = NULL;
        }
    }
    if (s->gapped || s->claimed)
        return;
    const char *p = (const char *)buf;
    while (len) {
        size_t n = fg_smtp_parser_feed(&s->p, dir, p, len);
        if (n == 0)
            break;
        p += n;
        len -= n;
    }
}

static void det_tcp(struct fg_trace_conn *tc, enum fg_dir dir, enum fg_diag_tcp what,
                    uint64_t frame, uint64_t us)
{
    struct cst *s = tc->user;
    for (size_t i = 0; i < DET_MAX && fg_diag_detectors[i]; i++)
        if (s->det[i] && fg_diag_detectors[i]->tcp)
            fg_diag_detectors[i]->tcp(s->det[i], tc, (int)dir, what, frame, us);
}

static void t_end(struct cst *s, int dir, int rst, uint64_t frame, uint64_t us)
{
    if (s->fin[dir] || s->rst[dir])
        return;
    if (rst)
        s->rst[dir] = 1;
    else
        s->fin[dir] = 1;
    s->end_frame[dir] = frame;
    s->end_us[dir] = us;
}

static void t_fin(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    det_tcp(tc, dir, FG_DIAG_FIN, frame, us);
    t_end(tc->user, (int)dir, 0, frame, us);
}

static void t_rst(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, uint64_t frame, uint64_t us)
{
    det_tcp(tc, dir, FG_DIAG_RST, frame, us);
    t_end(tc->user, (int)dir, 1, frame, us);
}

static void t_gap(void *ud, struct fg_trace_conn *tc, enum fg_dir dir, uint64_t missing,
                  uint64_t frame, uint64_t us)
{
    struct cst *s = tc->user;
    det_tcp(tc, dir, FG_DIAG_GAP, frame, us);
    if (dir == FG_S2C)
        s->gap_s2c = 1;
    else
        s->gap_c2s = 1;
    if (dir == FG_S2C && s->eod_unanswered)
        s->eod_pending_gap = 1;
    /* Where the parser stands after a hole cannot be known: stop reading
     * the connection's SMTP here, so what depends on the missing bytes is
     * left open (reported as possible), never guessed. */
    s->gapped = 1;
    s->wait_us = 0;
    s->hello_pending = 0;
}

/* How the connection ended, for a person: "the client gave up after
 * 9.000 s (FIN, frame 97)". */
static void ending(struct cst *s, uint64_t since_us, struct fg_diag_finding *f, char *out,
                   size_t outlen, int *still_waiting, uint64_t *waited)
{
    char a[32];
    struct diag *dg = s->dg;
    int cd = s->fin[0] || s->rst[0], sd = s->fin[1] || s->rst[1];
    *still_waiting = 0;
    if (cd && (!sd || s->end_us[0] <= s->end_us[1])) {
        *waited = s->end_us[0] - since_us;
        frame_push(f, s->end_frame[0]);
        if (s->quit_frame && s->quit_frame > f->frames[0]) {
            frame_push(f, s->quit_frame);
            snprintf(out, outlen, "the client gave up after %s s: QUIT at frame %llu, then %s",
                     secs(a, sizeof a, *waited), (unsigned long long)s->quit_frame,
                     s->rst[0] ? "RST" : "FIN");
        } else {
            snprintf(out, outlen, "the client gave up after %s s (%s, frame %llu)",
                     secs(a, sizeof a, *waited), s->rst[0] ? "RST" : "FIN",
                     (unsigned long long)s->end_frame[0]);
        }
    } else if (sd) {
        *waited = s->end_us[1] - since_us;
        frame_push(f, s->end_frame[1]);
        snprintf(out, outlen,
                 "the server %s the connection after %s s without replying (%s, "
                 "frame %llu)",
                 s->rst[1] ? "reset" : "closed", secs(a, sizeof a, *waited),
                 s->rst[1] ? "RST" : "FIN", (unsigned long long)s->end_frame[1]);
    } else {
        uint64_t end = dg->rep->stats.last_us;
        *waited = end > since_us ? end - since_us : 0;
        *still_waiting = 1;
        snprintf(out, outlen, "the client was still waiting when the capture ended, %s s later",
                 secs(a, sizeof a, *waited));
    }
}

/* Q129140: the end of data never answered, or the body stopped. */
static void check_q129140(struct cst *s)
{
    struct diag *dg = s->dg;
    char a[32], how[192];
    struct fg_diag_finding f;
    int still;
    uint64_t waited;
    if (s->nawait) {
        uint64_t eframe = s->await_frame[0], eus = s->await_us[0];
        finding_init(&f, "Q129140", "end of data never answered", s->id, s->client, s->server, eus);
        frame_push(&f, eframe);
        ending(s, eus, &f, how, sizeof how, &still, &waited);
        if (still && waited < dg->stall_us)
            return; /* the capture ends too soon after to tell */
        f.certain = !s->gapped;
        f.summary = fg_asprintf("end of data at frame %llu (t=+%s s) was never answered; %s%s",
                                (unsigned long long)eframe, secs(a, sizeof a, rel(dg, eus)), how,
                                f.certain ? "" : " (but server bytes are missing from the trace)");
        add_and_free(dg, &f);
    } else if (s->in_body && s->body_octets) {
        uint64_t lus = s->body_last_us;
        finding_init(&f, "Q129140", "message body stopped before its end", s->id, s->client,
                     s->server, s->body_us);
        frame_push(&f, s->body_frame);
        frame_push(&f, s->body_last_frame);
        ending(s, lus, &f, how, sizeof how, &still, &waited);
        if (still && waited < dg->stall_us)
            return;
        f.certain = !s->gapped;
        f.summary =
            fg_asprintf("the message body began at frame %llu and stopped at frame %llu "
                        "(t=+%s s) after %llu octets, with no end of data; %s",
                        (unsigned long long)s->body_frame, (unsigned long long)s->body_last_frame,
                        secs(a, sizeof a, rel(dg, lus)), (unsigned long long)s->body_octets, how);
        add_and_free(dg, &f);
    }
}

static void t_close(void *ud, struct fg_trace_conn *tc)
{
    struct diag *dg = ud;
    struct cst *s = tc->user;
    if (!s)
        return;
    for (size_t i = 0; i < DET_MAX && fg_diag_detectors[i]; i++)
        if (s->det[i])
            fg_diag_detectors[i]->close(s->det[i], tc, dg->rep);
    if (s->claimed) {
        /* Another protocol's connection: none of the SMTP symptoms. */
        for (size_t i = 0; i < s->nawait; i++)
            await_drop(dg, s->await[i]);
        tc->user = NULL;
        free(s->body);
        free(s);
        return;
    }
    if (s->smtp || s->greeted)
        dg->rep->smtp_conns++;

    int cd = s->fin[0] || s->rst[0], sd = s->fin[1] || s->rst[1];
    /* A wait still open ends with the connection, or with the trace. */
    if (s->wait_us) {
        uint64_t eu = dg->rep->stats.last_us, ef = 0;
        if (cd || sd) {
            int d = cd && (!sd || s->end_us[0] <= s->end_us[1]) ? 0 : 1;
            eu = s->end_us[d];
            ef = s->end_frame[d];
        }
        wait_end(s, eu, ef, 0);
    }

    check_q129140(s);

    /* Q197142: the server closed after EHLO/HELO before its reply. */
    if (s->hello_pending && sd && (!cd || s->end_us[1] <= s->end_us[0]) &&
        s->end_frame[1] >= s->hello_frame) {
        if (dg->ndr >= RECORDS_MAX) {
            dg->records_dropped++;
        } else {
            struct drop *d = FG_ARRAY_PUSH(dg->dr, dg->ndr, dg->capdr);
            memset(d, 0, sizeof *d);
            d->conn = s->id;
            snprintf(d->client, sizeof d->client, "%s", s->client);
            snprintf(d->client_host, sizeof d->client_host, "%s", s->client_host);
            snprintf(d->server, sizeof d->server, "%s", s->server);
            d->verb = s->hello_verb;
            d->cmd_frame = s->hello_frame;
            d->cmd_us = s->hello_us;
            d->close_frame = s->end_frame[1];
            d->close_us = s->end_us[1];
            d->rst = s->rst[1];
        }
    }

    /* Not greeted with 2xx (for Q131150). */
    if (!(s->greeted && s->greet_code / 100 == 2) && dg->nug < RECORDS_MAX) {
        struct ungreeted u;
        memset(&u, 0, sizeof u);
        u.conn = s->id;
        snprintf(u.client, sizeof u.client, "%s", s->client);
        snprintf(u.server, sizeof u.server, "%s", s->server);
        snprintf(u.server_host, sizeof u.server_host, "%s", s->server_host);
        u.open_frame = s->open_frame;
        u.open_us = s->open_us;
        char a[32];
        int keep = 1;
        if (s->greeted) {
            u.code = s->greet_code;
            u.end_frame = s->open_frame;
            snprintf(u.how, sizeof u.how, "greeted with %d instead of 2xx", s->greet_code);
        } else if (sd && !s->s2c_bytes && (!cd || s->end_us[1] <= s->end_us[0])) {
            u.end_frame = s->end_frame[1];
            u.end_us = s->end_us[1];
            snprintf(u.how, sizeof u.how, "%s by the server without a greeting (%s, frame %llu)",
                     s->rst[1] ? "refused" : "closed", s->rst[1] ? "RST" : "FIN",
                     (unsigned long long)s->end_frame[1]);
        } else if (cd) {
            u.end_frame = s->end_frame[0];
            u.end_us = s->end_us[0];
            snprintf(
                u.how, sizeof u.how, "never greeted: the client gave up after %s s (frame %llu)",
                secs(a, sizeof a, s->end_us[0] - s->open_us), (unsigned long long)s->end_frame[0]);
        } else {
            uint64_t w = dg->rep->stats.last_us - s->open_us;
            u.end_us = dg->rep->stats.last_us;
            snprintf(u.how, sizeof u.how, "never greeted in the %s s until the capture ended",
                     secs(a, sizeof a, w));
            keep = w >= dg->stall_us;
        }
        if (keep)
            *FG_ARRAY_PUSH(dg->ug, dg->nug, dg->capug) = u;
    } else if (!(s->greeted && s->greet_code / 100 == 2)) {
        dg->records_dropped++;
    }

    /* Ends of data that never got a reply: their messages were not
     * accepted. */
    for (size_t i = 0; i < s->nawait; i++)
        await_drop(dg, s->await[i]);
    tc->user = NULL;
    free(s->body);
    free(s);
}

/* ---- after the trace ---------------------------------------------------- */

static void report_drops(struct diag *dg)
{
    char a[32], b[32];
    for (size_t i = 0; i < dg->ndr; i++) {
        struct drop *d = &dg->dr[i];
        struct fg_diag_finding f;
        finding_init(&f, "Q197142", "closed after EHLO before the reply", d->conn, d->client,
                     d->server, d->cmd_us);
        frame_push(&f, d->cmd_frame);
        frame_push(&f, d->close_frame);
        char *next;
        if (d->retry_conn) {
            frame_push(&f, d->retry_frame);
            frame_push(&f, d->retry_cmd_frame);
            frame_push(&f, d->retry_eod_frame);
            next = fg_asprintf(
                "the client connected again after %s s (connection #%u, frame %llu)%s%s%s%s",
                secs(a, sizeof a, d->retry_us - d->close_us), d->retry_conn,
                (unsigned long long)d->retry_frame, d->retry_verb[0] ? " and used " : "",
                d->retry_verb,
                d->retry_verb[0] && strcmp(d->retry_verb, "HELO") == 0
                    ? " (the fallback the KB's fix makes)"
                    : "",
                d->retry_delivered ? "; a message was accepted on it" : "");
        } else {
            uint64_t left = dg->rep->stats.last_us - d->close_us;
            next = fg_asprintf("the client did not connect to %s again in the %s s of capture "
                               "that followed",
                               d->server, secs(a, sizeof a, left));
            f.certain = left >= dg->stall_us;
        }
        f.summary = fg_asprintf(
            "%s at frame %llu (t=+%s s); the server %s the connection (frame %llu) "
            "before replying; %s",
            d->verb, (unsigned long long)d->cmd_frame, secs(b, sizeof b, rel(dg, d->cmd_us)),
            d->rst ? "reset" : "closed", (unsigned long long)d->close_frame, next);
        free(next);
        add_and_free(dg, &f);
    }
}

static int greeted_server(const struct diag *dg, const char *server)
{
    for (size_t i = 0; i < dg->ngs; i++)
        if (strcmp(dg->greeted_servers[i], server) == 0)
            return 1;
    return 0;
}

static void report_busy(struct diag *dg)
{
    char a[32], b[32];
    for (size_t i = 0; i < dg->nst; i++) {
        struct stall *t = &dg->st[i];
        struct fg_diag_finding f;
        finding_init(&f, "Q131150", "inbound connections unanswered while a session stalls",
                     t->conn, t->client, t->server, t->start_us);
        frame_push(&f, t->start_frame);
        frame_push(&f, t->end_frame);
        struct {
            char *s;
            size_t len, cap;
        } list = {0};
        size_t nbad = 0;
        const struct alias *tied = NULL;
        for (size_t j = 0; j < dg->nug; j++) {
            struct ungreeted *u = &dg->ug[j];
            if (u->used || u->conn == t->conn || u->open_us < t->start_us ||
                u->open_us > t->end_us || strcmp(u->server, t->server) == 0)
                continue;
            /* The stalled client's own host, or (multihomed) the address
             * its mail arrived on; one address per finding. */
            int same = strcmp(u->server_host, t->client_host) == 0;
            const struct alias *al = same ? NULL : alias_of(dg, u->server_host, t->client_host);
            if ((!same && !al) || (nbad && al != tied))
                continue;
            if (!u->code && !greeted_server(dg, u->server))
                continue; /* not an SMTP service as far as the capture shows */
            u->used = 1;
            nbad++;
            tied = al;
            frame_push(&f, u->open_frame);
            frame_push(&f, u->end_frame);
            char *line = fg_asprintf("%sconnection #%u %s -> %s at frame %llu (t=+%s s): %s",
                                     list.len ? "\n" : "", u->conn, u->client, u->server,
                                     (unsigned long long)u->open_frame,
                                     secs(a, sizeof a, rel(dg, u->open_us)), u->how);
            size_t ll = strlen(line);
            fg_array_reserve((void **)&list.s, &list.cap, list.len + ll + 1, 1);
            memcpy(list.s + list.len, line, ll + 1);
            list.len += ll;
            free(line);
        }
        if (!nbad)
            continue;
        char *tie = tied ? fg_asprintf(" (the gateway's inbound address: mail that arrived on "
                                       "%s at frame %llu left from %s at frame %llu)",
                                       tied->in, (unsigned long long)tied->in_frame, tied->out,
                                       (unsigned long long)tied->out_frame)
                         : NULL;
        if (tied) {
            frame_push(&f, tied->in_frame);
            frame_push(&f, tied->out_frame);
        }
        f.summary = fg_asprintf(
            "while connection #%u (%s -> %s) waited %s s for its peer (%s, frames %llu-%llu, "
            "from t=+%s s), %zu connection%s to %s%s were refused or never greeted",
            t->conn, t->client, t->server, secs(a, sizeof a, t->end_us - t->start_us),
            t->what ? t->what : "reply", (unsigned long long)t->start_frame,
            (unsigned long long)t->end_frame, secs(b, sizeof b, rel(dg, t->start_us)), nbad,
            nbad == 1 ? "" : "s", tied ? tied->in : t->client_host, tie ? tie : "");
        free(tie);
        f.detail = list.s;
        add_and_free(dg, &f);
    }
}

static void report_stuck(struct diag *dg)
{
    char a[32], b[32];
    size_t too_soon = 0;
    if (!dg->rep->relayed) {
        if (dg->pending.n) {
            char *n = fg_asprintf(
                "%s%s%zu accepted message%s never seen on a second connection, and the capture "
                "shows no relaying at all (one leg only?): Q135031 cannot be judged",
                dg->rep->notes ? dg->rep->notes : "", dg->rep->notes ? "; " : "", dg->pending.n,
                dg->pending.n == 1 ? " was" : "s were");
            free(dg->rep->notes);
            dg->rep->notes = n;
        }
        return;
    }
    for (struct mrec *r = dg->pending.head; r; r = r->next) {
        uint64_t left = dg->rep->stats.last_us - r->accept_us;
        int certain = r->accept_us < dg->last_relayed_accept_us;
        if (!certain && left < dg->stall_us) {
            too_soon++;
            continue;
        }
        struct fg_diag_finding f;
        finding_init(&f, "Q135031", "message accepted and never relayed nor bounced", r->conn,
                     r->client, r->server, r->eod_us);
        frame_push(&f, r->eod_frame);
        frame_push(&f, r->accept_frame);
        f.certain = certain;
        char id[160];
        if (r->token[0])
            snprintf(id, sizeof id, "token %s", r->token);
        else if (r->msgid[0])
            snprintf(id, sizeof id, "Message-ID %s", r->msgid);
        else
            snprintf(id, sizeof id, "its content");
        f.summary = fg_asprintf(
            "the message with %s was accepted (%d, frame %llu, t=+%s s) and never seen again: "
            "neither relayed nor bounced in the %s s of capture that followed%s",
            id, r->accept_code, (unsigned long long)r->accept_frame,
            secs(a, sizeof a, rel(dg, r->accept_us)), secs(b, sizeof b, left),
            certain ? ", while messages accepted after it were relayed" : "");
        add_and_free(dg, &f);
    }
    if (too_soon || dg->not_followed) {
        char *n =
            fg_asprintf("%s%s%zu accepted message%s not relayed yet when the capture ended "
                        "(too soon to tell); %llu not followed (limit)",
                        dg->rep->notes ? dg->rep->notes : "", dg->rep->notes ? "; " : "", too_soon,
                        too_soon == 1 ? "" : "s", (unsigned long long)dg->not_followed);
        free(dg->rep->notes);
        dg->rep->notes = n;
    }
}

static int cmp_finding(const void *a, const void *b)
{
    const struct fg_diag_finding *x = a, *y = b;
    uint64_t fx = x->nframes ? x->frames[0] : 0, fy = y->nframes ? y->frames[0] : 0;
    if (fx != fy)
        return fx < fy ? -1 : 1;
    return strcmp(x->kb, y->kb);
}

static void diag_free(struct diag *dg)
{
    while (dg->pending.head) {
        struct mrec *r = dg->pending.head;
        ml_del(&dg->pending, r);
        mrec_free(dg, r);
    }
    while (dg->resolved.head) {
        struct mrec *r = dg->resolved.head;
        ml_del(&dg->resolved, r);
        mrec_free(dg, r);
    }
    free(dg->bucket);
    free(dg->st);
    free(dg->al);
    free(dg->ug);
    free(dg->dr);
    for (size_t i = 0; i < dg->ngs; i++)
        free(dg->greeted_servers[i]);
    free(dg->greeted_servers);
}

int fg_diagnose(const char *path, const struct fg_diag_opts *opts, struct fg_diag_report **out,
                char *err, size_t errlen)
{
    *out = NULL;
    struct fg_diag_report *rep = fg_calloc(1, sizeof *rep);
    struct diag dg;
    memset(&dg, 0, sizeof dg);
    dg.rep = rep;
    dg.stall_us = opts && opts->stall_us ? opts->stall_us : DEFAULT_STALL_US;
    static const struct fg_trace_cbs cbs = {t_open, t_data, t_fin, t_rst, t_gap, t_close};
    char terr[FG_ERRBUF_SIZE] = "";
    int rc = fg_trace_read(path, &cbs, &dg, &rep->stats, terr, sizeof terr);
    if (rc < 0) {
        diag_free(&dg);
        fg_diag_report_free(rep);
        return fg_errf(err, errlen, rc, "%s", terr);
    }
    if (rep->stats.truncated)
        rep->notes = fg_asprintf("the capture is cut short (%s): diagnosed up to the cut", terr);
    report_drops(&dg);
    report_busy(&dg);
    report_stuck(&dg);
    if (dg.records_dropped) {
        char *n = fg_asprintf("%s%s%llu records over the limit were not kept",
                              rep->notes ? rep->notes : "", rep->notes ? "; " : "",
                              (unsigned long long)dg.records_dropped);
        free(rep->notes);
        rep->notes = n;
    }
    diag_free(&dg);
    if (rep->n)
        qsort(rep->f, rep->n, sizeof rep->f[0], cmp_finding);
    *out = rep;
    return 0;
}

void fg_diag_report_free(struct fg_diag_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->f[i].symptom);
        free(r->f[i].summary);
        free(r->f[i].detail);
    }
    free(r->f);
    free(r->notes);
    free(r);
}

/* ---- Q194685: X.400 over RFC 1006 ------------------------------------- */

/* Each connection whose client speaks first with a TPKT (RFC 1006 §6:
 * 03 00 and a length) and whose first TPDU is a CR is decoded with the
 * shared codec (x400.h), and every SPDU of both directions goes in wire
 * order through the shared X.225 rules (x400_state.h), as one observer:
 * the same rules the X.400 timeline and the fake X.400 MTA apply.  The
 * symptom (KB Q194685) is a MIP or MIA that broke a rule (serial out of
 * sequence, window overrun, ...), with the abort that followed it on the
 * same connection, if any: a session AB (X.225 §7.9.2), a COTP DR or ER
 * (X.224 §13.5, §13.12) or a TCP RST, before any release.  Without an
 * abort the finding says so: the cause is there, the reaction was not.  A
 * capture that starts mid-association (no CR) is not judged: the session
 * state is unknown there. */

struct x4d;

struct x4side {
    struct x4d *d;
    int dir;
    struct fg_x400_dec dec;
    int dead;
};

struct x4d {
    int state; /* FG_DIAG_UNSURE, FG_DIAG_MINE, FG_DIAG_NOT_MINE */
    uint8_t head[4];
    size_t nhead;
    int dec_on, started; /* decoders allocated; the CR was seen */
    struct x4side side[2];
    struct fg_x400_sm sm;
    uint64_t frame, us;
    int gapped, released;
    unsigned mips;
    /* the first invalid minor sync point */
    int bad;
    unsigned nbad;
    uint64_t bad_frame, bad_us;
    int bad_dir;
    char bad_desc[64];
    struct fg_x400_violation v;
    unsigned mips_before;
    /* the abort after it */
    int aborted;
    uint64_t ab_frame, ab_us;
    int ab_dir;
    char ab_desc[96];
};

static const char *x4_side_name(int dir)
{
    /* RFC 1006 §5: the TCP client sends the CR, so it is the initiator. */
    return dir == FG_C2S ? "the initiator" : "the responder";
}

static void x4_abort(struct x4d *d, int dir, const char *desc)
{
    if (!d->bad || d->aborted || d->released)
        return;
    d->aborted = 1;
    d->ab_frame = d->frame;
    d->ab_us = d->us;
    d->ab_dir = dir;
    snprintf(d->ab_desc, sizeof d->ab_desc, "%s", desc);
}

static void x4_spdu(struct x4d *d, int dir, const struct fg_spdu *sp)
{
    char desc[96];
    if (sp->type == FG_SPDU_AB) {
        if (sp->has & FG_SP_TDISC)
            snprintf(desc, sizeof desc, "AB (transport disconnect %02x: %s)", sp->tdisc,
                     (sp->tdisc & FG_TDISC_PROTO_ERROR)  ? "protocol error"
                     : (sp->tdisc & FG_TDISC_USER_ABORT) ? "user abort"
                                                         : "no reason");
        else
            snprintf(desc, sizeof desc, "AB");
        x4_abort(d, dir, desc);
    }
    if (sp->type == FG_SPDU_DN)
        d->released = 1;
    if (d->gapped)
        return; /* the session state is unknown past a hole */
    struct fg_x400_violation v;
    enum fg_x400_side from = dir == FG_C2S ? FG_X400_INITIATOR : FG_X400_RESPONDER;
    int broke = fg_x400_sm_apply(&d->sm, from, sp, &v);
    int sync = sp->type == FG_SPDU_MIP || sp->type == FG_SPDU_MIA;
    if (sp->type == FG_SPDU_MIP)
        d->mips++;
    if (!broke || !sync || d->aborted)
        return; /* what was in flight after the abort is not judged */
    d->nbad++;
    if (d->bad)
        return;
    d->bad = 1;
    d->bad_frame = d->frame;
    d->bad_us = d->us;
    d->bad_dir = dir;
    d->v = v;
    d->mips_before = d->mips - (sp->type == FG_SPDU_MIP);
    /* Named the way tshark shows it: "GT+MIP serial 0". */
    const char *pre = sp->index > 0 && sp->prev == FG_SPDU_GT   ? "GT+"
                      : sp->index > 0 && sp->prev == FG_SPDU_PT ? "PT+"
                                                                : "";
    char sn[24];
    fg_x400_serial_str(sp, sn, sizeof sn);
    snprintf(d->bad_desc, sizeof d->bad_desc, "%s%s serial %s", pre, fg_spdu_name(sp->type), sn);
}

static void x4_cb(void *ud, const struct fg_x400_event *ev)
{
    struct x4side *xs = ud;
    struct x4d *d = xs->d;
    char desc[64];
    switch (ev->kind) {
    case FG_X400_EV_TPDU:
        if (!d->started) {
            /* Judged only from the connection's start (RFC 1006 §5). */
            if (xs->dir != FG_C2S || ev->tpdu->code != FG_COTP_CR) {
                d->state = FG_DIAG_NOT_MINE;
                return;
            }
            d->started = 1;
        }
        if (ev->tpdu->code == FG_COTP_DR || ev->tpdu->code == FG_COTP_ER) {
            snprintf(desc, sizeof desc, "COTP %s %s %02x", fg_cotp_name(ev->tpdu->code),
                     ev->tpdu->code == FG_COTP_DR ? "reason" : "cause", ev->tpdu->reason);
            x4_abort(d, xs->dir, desc);
        }
        break;
    case FG_X400_EV_SPDU:
        if (d->started)
            x4_spdu(d, xs->dir, ev->spdu);
        break;
    case FG_X400_EV_ERROR:
        if (ev->fatal)
            xs->dead = 1;
        break;
    }
}

static void *x4_open(const struct fg_trace_conn *c)
{
    (void)c;
    return fg_calloc(1, sizeof(struct x4d));
}

static int x4_data(void *st, const struct fg_trace_conn *c, int dir, const uint8_t *buf, size_t len,
                   uint64_t frame, uint64_t us)
{
    (void)c;
    struct x4d *d = st;
    if (d->state == FG_DIAG_UNSURE) {
        /* RFC 1006: the client speaks first, with a TPKT (03 00 LL LL). */
        if (dir != FG_C2S)
            return FG_DIAG_NOT_MINE;
        size_t n = len < 4 - d->nhead ? len : 4 - d->nhead;
        memcpy(d->head + d->nhead, buf, n);
        d->nhead += n;
        if (!fg_x400_looks_like_tpkt(d->head, d->nhead))
            return FG_DIAG_NOT_MINE;
        if (!d->dec_on) {
            d->dec_on = 1;
            fg_x400_sm_init(&d->sm);
            for (int k = 0; k < 2; k++) {
                d->side[k].d = d;
                d->side[k].dir = k;
                fg_x400_dec_init(&d->side[k].dec, 0, x4_cb, &d->side[k]);
            }
        }
        if (d->nhead == 4)
            d->state = FG_DIAG_MINE;
    }
    d->frame = frame;
    d->us = us;
    if (!d->side[dir].dead)
        fg_x400_dec_feed(&d->side[dir].dec, buf, len);
    return d->state;
}

static void x4_tcp(void *st, const struct fg_trace_conn *c, int dir, enum fg_diag_tcp what,
                   uint64_t frame, uint64_t us)
{
    (void)c;
    struct x4d *d = st;
    if (!d->dec_on)
        return;
    d->frame = frame;
    d->us = us;
    if (what == FG_DIAG_RST) {
        x4_abort(d, dir, "TCP RST");
    } else if (what == FG_DIAG_GAP) {
        /* Where the decoder stands after a hole cannot be known: that
         * direction is no longer decoded, and rules are no longer applied
         * (an SPDU missing from one side would make the other's look
         * invalid).  A violation found before the hole stands. */
        d->gapped = 1;
        d->side[dir].dead = 1;
    }
}

static void x4_close(void *st, const struct fg_trace_conn *c, struct fg_diag_report *r)
{
    struct x4d *d = st;
    if (d->state == FG_DIAG_MINE && d->started)
        r->x400_conns++;
    if (d->state == FG_DIAG_MINE && d->bad) {
        char a[32], b[32];
        struct fg_diag_finding f;
        /* A foreign system that does not check serial numbers (ISODE, for
         * one: x400-wire.md §2.6) goes on after the invalid MIP: the cause
         * of Q194685 is on the wire all the same, and is reported as such. */
        finding_init(&f, "Q194685",
                     d->aborted ? "invalid minor sync point followed by an abort"
                                : "invalid minor sync point, no abort followed",
                     c->id, c->client_str, c->server_str, d->bad_us);
        frame_push(&f, d->bad_frame);
        if (d->aborted)
            frame_push(&f, d->ab_frame);
        snprintf(f.rule, sizeof f.rule, "%s", d->v.rule ? d->v.rule : "");
        snprintf(f.source, sizeof f.source, "%s", d->v.source ? d->v.source : "");
        uint64_t t0 = r->stats.first_us;
        secs(a, sizeof a, d->bad_us > t0 ? d->bad_us - t0 : 0);
        if (d->aborted)
            f.summary = fg_asprintf(
                "%s sent by %s at frame %llu (t=+%s s) broke %s (%s); %s ended the association "
                "with %s at frame %llu, %s s later",
                d->bad_desc, x4_side_name(d->bad_dir), (unsigned long long)d->bad_frame, a, f.rule,
                f.source, x4_side_name(d->ab_dir), d->ab_desc, (unsigned long long)d->ab_frame,
                secs(b, sizeof b, d->ab_us > d->bad_us ? d->ab_us - d->bad_us : 0));
        else
            f.summary = fg_asprintf(
                "%s sent by %s at frame %llu (t=+%s s) broke %s (%s); no abort followed: %s "
                "went on (%s), so a stricter foreign system would have aborted here",
                d->bad_desc, x4_side_name(d->bad_dir), (unsigned long long)d->bad_frame, a, f.rule,
                f.source, x4_side_name(!d->bad_dir),
                d->released ? "the association was released" : "the association was not released");
        f.detail = fg_asprintf("%s\n%u minor sync point%s before it; %u invalid %s", d->v.text,
                               d->mips_before, d->mips_before == 1 ? "" : "s", d->nbad,
                               d->aborted ? "before the abort" : "in all, none aborted");
        fg_diag_add(r, &f);
        free(f.summary);
        free(f.detail);
    }
    if (d->dec_on)
        for (int k = 0; k < 2; k++)
            fg_x400_dec_free(&d->side[k].dec);
    free(d);
}

static const struct fg_diag_detector x400_detector = {"x400", x4_open, x4_data, x4_tcp, x4_close};

/* ---- output ------------------------------------------------------------- */

void fg_diag_print(FILE *f, const char *path, const struct fg_diag_report *r)
{
    char a[32];
    const struct fg_trace_stats *st = &r->stats;
    char x4[48] = "";
    if (r->x400_conns)
        snprintf(x4, sizeof x4, ", %llu X.400", (unsigned long long)r->x400_conns);
    fprintf(f, "%s: %llu frames, %llu connections (%llu SMTP%s), %llu messages, %s s\n", path,
            (unsigned long long)st->frames, (unsigned long long)st->conns,
            (unsigned long long)r->smtp_conns, x4, (unsigned long long)r->messages,
            secs(a, sizeof a, st->last_us > st->first_us ? st->last_us - st->first_us : 0));
    if (st->gaps)
        fprintf(f, "  %llu gap%s in the reassembled streams: what depends on them is left open\n",
                (unsigned long long)st->gaps, st->gaps == 1 ? "" : "s");
    for (size_t i = 0; i < r->n; i++) {
        const struct fg_diag_finding *x = &r->f[i];
        fprintf(f, "\n%s  %s%s\n", x->kb, x->symptom, x->certain ? "" : " (possible)");
        fprintf(f, "  connection #%u %s -> %s, frame%s", x->conn, x->client, x->server,
                x->nframes == 1 ? "" : "s");
        for (size_t k = 0; k < x->nframes; k++)
            fprintf(f, "%s%llu", k ? ", " : " ", (unsigned long long)x->frames[k]);
        fprintf(f, "\n  %s\n", x->summary);
        if (x->rule[0])
            fprintf(f, "  rule broken: %s (%s)\n", x->rule, x->source);
        if (x->detail) {
            const char *p = x->detail;
            while (*p) {
                size_t n = strcspn(p, "\n");
                fprintf(f, "    %.*s\n", (int)n, p);
                p += n + (p[n] == '\n');
            }
        }
    }
    if (r->n == 0)
        fprintf(f, "no knowledge-base symptom found\n");
    else
        fprintf(f, "\n%zu finding%s\n", r->n, r->n == 1 ? "" : "s");
    if (r->dropped)
        fprintf(f, "(%llu more findings not kept)\n", (unsigned long long)r->dropped);
    if (r->notes)
        fprintf(f, "note: %s\n", r->notes);
}

int fg_diag_print_json(FILE *f, const char *path, const struct fg_diag_report *r)
{
    const struct fg_trace_stats *st = &r->stats;
    json_t *o = json_object();
    json_object_set_new(o, "trace", json_string(path));
    json_t *t = json_object();
    json_object_set_new(t, "frames", json_integer((json_int_t)st->frames));
    json_object_set_new(t, "connections", json_integer((json_int_t)st->conns));
    json_object_set_new(t, "smtp_connections", json_integer((json_int_t)r->smtp_conns));
    json_object_set_new(t, "x400_connections", json_integer((json_int_t)r->x400_conns));
    json_object_set_new(t, "messages", json_integer((json_int_t)r->messages));
    json_object_set_new(t, "relayed", json_integer((json_int_t)r->relayed));
    json_object_set_new(t, "gaps", json_integer((json_int_t)st->gaps));
    json_object_set_new(
        t, "duration_s",
        json_real(st->last_us > st->first_us ? (double)(st->last_us - st->first_us) / 1e6 : 0.0));
    json_object_set_new(t, "truncated", json_boolean(st->truncated));
    json_object_set_new(o, "stats", t);
    json_t *fa = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const struct fg_diag_finding *x = &r->f[i];
        json_t *j = json_object();
        json_object_set_new(j, "kb", json_string(x->kb));
        json_object_set_new(j, "symptom", json_string(x->symptom));
        json_object_set_new(j, "certain", json_boolean(x->certain));
        json_object_set_new(j, "connection", json_integer(x->conn));
        json_object_set_new(j, "client", json_string(x->client));
        json_object_set_new(j, "server", json_string(x->server));
        json_t *fr = json_array();
        for (size_t k = 0; k < x->nframes; k++)
            json_array_append_new(fr, json_integer((json_int_t)x->frames[k]));
        json_object_set_new(j, "frames", fr);
        json_object_set_new(
            j, "t", json_real(x->us > st->first_us ? (double)(x->us - st->first_us) / 1e6 : 0.0));
        json_object_set_new(j, "summary", json_string(x->summary));
        json_object_set_new(j, "rule", x->rule[0] ? json_string(x->rule) : json_null());
        json_object_set_new(j, "rule_source", x->rule[0] ? json_string(x->source) : json_null());
        json_object_set_new(j, "detail", x->detail ? json_string(x->detail) : json_null());
        json_array_append_new(fa, j);
    }
    json_object_set_new(o, "findings", fa);
    json_object_set_new(o, "findings_dropped", json_integer((json_int_t)r->dropped));
    json_object_set_new(o, "notes", r->notes ? json_string(r->notes) : json_null());
    int rc = json_dumpf(o, f, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    fputc('\n', f);
    json_decref(o);
    return rc == 0 ? 0 : FG_EINPUT;
}
