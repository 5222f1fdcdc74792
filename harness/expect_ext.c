/* expect_ext.c - extension honesty: the gateway, as an SMTP client on the
 * outbound leg, uses an ESMTP extension only as the server's current EHLO
 * reply offers it, and keeps to what it declared.
 *
 *   size-honoured        RFC 1870: SIZE= only when SIZE is offered; the
 *                        declared size and the message sent not above the
 *                        advertised fixed maximum; a MAIL refused 552 is
 *                        not sent again unchanged
 *   8bitmime-honoured    RFC 6152 §3: BODY= only when 8BITMIME is offered
 *                        (BODY=BINARYMIME when BINARYMIME is, RFC 3030 §3);
 *                        no body octet above 0x7F unless BODY=8BITMIME (or
 *                        BINARYMIME) was declared
 *   chunking-honoured    RFC 3030 §2: BDAT only when CHUNKING is offered,
 *                        "BDAT n [LAST]" with exactly n octets, no DATA and
 *                        BDAT in one transaction, nothing after LAST until
 *                        a new MAIL, no more BDAT after a failed chunk
 *                        (unless already in flight) and RSET then
 *   dsn-honoured         RFC 3461 §4.1-§4.4: NOTIFY, ORCPT, RET and ENVID
 *                        only when DSN is offered, with valid values
 *   ehlo-extensions-only-if-advertised
 *                        the umbrella: any of the above parameters or
 *                        verbs, SMTPUTF8 (RFC 6531 §3.4) or AUTH= (RFC 4954
 *                        §5) on MAIL, without the extension in the current
 *                        EHLO reply (RFC 5321 §4.1.1.2, §4.1.1.3: MUST
 *                        NOT; none after HELO, §4.1.1.1)
 *
 * Registered in expect.h's FG_EXPECT_TABLES as fg_expect_ext_rules.  All
 * read the timeline's parsed commands, replies and messages (the shared
 * parser, smtp.c); the ESMTP parameters of MAIL and RCPT are split here
 * (RFC 5321 §4.1.2 Mail-parameters: "keyword[=value]" after the path),
 * which the parser leaves in the command's argument.
 *
 * One walk over each outbound connection applies every check; a rule
 * keeps the findings of its own kind.  A connection is bad at its first
 * finding, ok if it carried a MAIL command and nothing was found, not
 * concerned without MAIL, undecided with a gap in the capture.  Verdict:
 * any bad -> fail; else any undecided -> inconc; else any ok -> pass; else
 * inconc (not exercised).  Connections after STARTTLS are judged up to the
 * TLS start (the rest is opaque).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/util.h"

static void eval_size(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o);
static void eval_8bit(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o);
static void eval_chunking(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o);
static void eval_dsn(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                     uint64_t limit_ms, struct fg_outcome *o);
static void eval_adv(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                     uint64_t limit_ms, struct fg_outcome *o);

const struct fg_expect_rule fg_expect_ext_rules[] = {
    {"size-honoured",
     "RFC 1870 §4, §6 (SIZE= only if offered; not above the fixed maximum); RFC 5321 §4.2.5", 0, 0,
     eval_size},
    {"8bitmime-honoured", "RFC 6152 §3 (MUST); RFC 3030 §3 (BINARYMIME)", 0, 0, eval_8bit},
    {"chunking-honoured", "RFC 3030 §2 (MUST)", 0, 0, eval_chunking},
    {"dsn-honoured", "RFC 3461 §4.1-§4.4 (MUST)", 0, 0, eval_dsn},
    {"ehlo-extensions-only-if-advertised",
     "RFC 5321 §4.1.1.1, §4.1.1.2, §4.1.1.3 (MUST NOT); RFC 1870 §6; RFC 6152 §3; "
     "RFC 3030 §2; RFC 3461 §4; RFC 6531 §3.4; RFC 4954 §5",
     0, 0, eval_adv},
    {NULL, NULL, 0, 0, NULL},
};

/* --- helpers ------------------------------------------------------------- */

/* The kinds of finding; a rule keeps those in its mask. */
enum {
    K_SIZE = 1u,  /* size-honoured */
    K_8BIT = 2u,  /* 8bitmime-honoured */
    K_CHUNK = 4u, /* chunking-honoured */
    K_DSN = 8u,   /* dsn-honoured */
    K_ADV = 16u   /* an extension used without being offered (the umbrella) */
};

/* Extensions of an EHLO reply the rules care about. */
enum {
    X_SIZE = 1u,
    X_8BITMIME = 2u,
    X_CHUNKING = 4u,
    X_BINARYMIME = 8u,
    X_DSN = 16u,
    X_SMTPUTF8 = 32u,
    X_AUTH = 64u,
    X_PIPELINING = 128u,
};

static const struct {
    const char *name;
    unsigned bit;
} xnames[] = {{"SIZE", X_SIZE},         {"8BITMIME", X_8BITMIME},
              {"CHUNKING", X_CHUNKING}, {"BINARYMIME", X_BINARYMIME},
              {"DSN", X_DSN},           {"SMTPUTF8", X_SMTPUTF8},
              {"AUTH", X_AUTH},         {"PIPELINING", X_PIPELINING}};
#define NXNAMES (sizeof xnames / sizeof xnames[0])

/* What the session offers now: the last EHLO's reply (RFC 5321 §4.1.1.1:
 * a new EHLO resets it; after HELO nothing is offered). */
struct offer {
    unsigned ext;
    uint64_t size_max; /* 0: no fixed maximum (RFC 1870 §3) */
    uint64_t frame;    /* of the EHLO reply; 0 if none yet */
    int helo;          /* the session was opened with HELO */
    int ehlo_refused;  /* the last EHLO got a non-2xx reply */
};

/* Parse a 2xx EHLO reply's keywords: lines "250-KEYWORD params" or
 * "250 KEYWORD params", CRLF between them; the first is the domain. */
static void offer_parse(struct offer *of, const char *text)
{
    of->ext = 0;
    of->size_max = 0;
    int first = 1;
    for (const char *l = text; l && *l;) {
        const char *nl = strchr(l, '\n');
        size_t ll = nl ? (size_t)(nl - l) : strlen(l);
        if (ll && l[ll - 1] == '\r')
            ll--;
        if (!first && ll > 4) {
            const char *k = l + 4;
            size_t kl = 0;
            while (4 + kl < ll && k[kl] != ' ')
                kl++;
            for (size_t i = 0; i < NXNAMES; i++)
                if (strlen(xnames[i].name) == kl && strncasecmp(k, xnames[i].name, kl) == 0)
                    of->ext |= xnames[i].bit;
            if (kl == 4 && strncasecmp(k, "SIZE", 4) == 0 && 4 + kl < ll)
                of->size_max = strtoull(k + 5, NULL, 10);
        }
        first = 0;
        l = nl ? nl + 1 : NULL;
    }
}

/* "the server's EHLO reply (frame 9) did not list SIZE" or why nothing
 * was offered. */
static const char *offer_why(char *buf, size_t len, const struct offer *of, const char *ext)
{
    if (of->helo)
        snprintf(buf, len,
                 "the session was opened with HELO, which offers no extension (RFC 5321 "
                 "§4.1.1.1)");
    else if (of->ehlo_refused)
        snprintf(buf, len, "the server refused EHLO (frame %llu), so nothing was offered",
                 (unsigned long long)of->frame);
    else if (of->frame)
        snprintf(buf, len, "the server's EHLO reply (frame %llu) did not list %s",
                 (unsigned long long)of->frame, ext);
    else
        snprintf(buf, len, "no EHLO reply offered %s", ext);
    return buf;
}

/* One ESMTP parameter of a MAIL or RCPT command (RFC 5321 §4.1.2
 * esmtp-param = esmtp-keyword ["=" esmtp-value]). */
struct param {
    const char *key, *val;
    size_t klen, vlen;
};

/* The parameters start after the path: "FROM:<...>" or "TO:<...>" with
 * the angle brackets (a quoted local part may hold '>' or spaces). */
static const char *params_start(const char *cmd)
{
    const char *p = strchr(cmd, ':');
    if (!p)
        return NULL;
    p++;
    while (*p == ' ')
        p++;
    if (*p == '<') {
        int quoted = 0;
        for (p++; *p; p++) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '"')
                quoted = !quoted;
            else if (*p == '>' && !quoted)
                return p + 1;
        }
        return p;
    }
    while (*p && *p != ' ')
        p++;
    return p;
}

/* The next parameter from *pp; 0 at the end. */
static int param_next(const char **pp, struct param *pr)
{
    const char *p = *pp;
    if (!p)
        return 0;
    while (*p == ' ')
        p++;
    if (!*p)
        return 0;
    const char *s = p;
    while (*p && *p != ' ')
        p++;
    const char *eq = memchr(s, '=', (size_t)(p - s));
    pr->key = s;
    pr->klen = eq ? (size_t)(eq - s) : (size_t)(p - s);
    pr->val = eq ? eq + 1 : p;
    pr->vlen = eq ? (size_t)(p - eq - 1) : 0;
    *pp = p;
    return 1;
}

static int key_is(const struct param *pr, const char *k)
{
    return strlen(k) == pr->klen && strncasecmp(pr->key, k, pr->klen) == 0;
}

static int val_is(const struct param *pr, const char *v)
{
    return strlen(v) == pr->vlen && strncasecmp(pr->val, v, pr->vlen) == 0;
}

/* RFC 3461 §4: xtext = *( xchar / hexchar ); xchar is "!" to "~" except
 * "+" and "="; hexchar is "+" and two upper-case hex digits. */
static int xtext_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            if (i + 2 >= n)
                return 0;
            for (int k = 1; k <= 2; k++) {
                unsigned char h = (unsigned char)s[i + (size_t)k];
                if (!(isdigit(h) || (h >= 'A' && h <= 'F')))
                    return 0;
            }
            i += 2;
        } else if (c < '!' || c > '~' || c == '=') {
            return 0;
        }
    }
    return 1;
}

/* RFC 3461 §4.1: NOTIFY=NEVER, or a list of SUCCESS, FAILURE, DELAY, each
 * at most once. */
static int notify_ok(const char *s, size_t n)
{
    if (n == 5 && strncasecmp(s, "NEVER", 5) == 0)
        return 1;
    unsigned seen = 0;
    static const char *const words[] = {"SUCCESS", "FAILURE", "DELAY"};
    const char *end = s + n;
    while (s < end) {
        const char *c = memchr(s, ',', (size_t)(end - s));
        size_t wl = c ? (size_t)(c - s) : (size_t)(end - s);
        unsigned bit = 0;
        for (unsigned i = 0; i < 3; i++)
            if (strlen(words[i]) == wl && strncasecmp(s, words[i], wl) == 0)
                bit = 1u << i;
        if (!bit || (seen & bit))
            return 0;
        seen |= bit;
        s = c ? c + 1 : end;
        if (c && s == end)
            return 0; /* a trailing comma */
    }
    return seen != 0;
}

/* RFC 3461 §4.2: ORCPT=addr-type ";" xtext, addr-type an atom. */
static int orcpt_ok(const char *s, size_t n)
{
    const char *semi = memchr(s, ';', n);
    if (!semi || semi == s)
        return 0;
    for (const char *p = s; p < semi; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-'))
            return 0;
    return xtext_ok(semi + 1, n - (size_t)(semi + 1 - s));
}

/* --- the walk ------------------------------------------------------------ */

/* MAIL commands refused 552 that declared SIZE=, across the leg. */
struct refused {
    const char *text;
    uint64_t frame;
    size_t conn_idx;
};

struct walk {
    const struct fg_judge_ctx *ctx;
    unsigned mask; /* kinds this rule reports */
    struct fg_tl_conn **all;
    size_t nall, idx;
    uint64_t run_end_us;
    struct fg_strbuf *ev;
    struct fg_outcome *o;
    char why[480];
    struct refused *ref;
    size_t nref, capref;
};

enum cres { C_NA, C_OK, C_BAD, C_UNSURE };

static void bad(struct walk *w, const struct fg_tl_conn *c, uint64_t frame, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void bad(struct walk *w, const struct fg_tl_conn *c, uint64_t frame, const char *fmt, ...)
{
    char msg[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    uint64_t us = 0;
    for (size_t i = 0; i < c->nev; i++)
        if (c->ev[i].frame == frame) {
            us = c->ev[i].us;
            break;
        }
    char t[32];
    uint64_t first = w->ctx->tl->stats.first_us;
    fg_strbuf_printf(w->ev, "connection #%zu (%s -> %s), frame %llu, t=+%s s: %s\n", w->idx + 1,
                     c->client, c->server, (unsigned long long)frame,
                     fg_expect_secs(t, sizeof t, us > first ? us - first : 0), msg);
    fg_outcome_frame(w->o, frame);
    if (!w->o->conn)
        w->o->conn = c->id;
    if (!w->why[0])
        snprintf(w->why, sizeof w->why, "%s", msg);
}

/* The transaction in progress on a connection. */
struct txn {
    int open; /* MAIL sent, not yet ended */
    uint64_t mail_frame;
    const char *mail; /* the MAIL command's text */
    int body8;        /* BODY=8BITMIME or BINARYMIME declared */
    int has_size;
    uint64_t declared;
    uint64_t data_frame; /* DATA command, 0 if none */
    uint64_t bdat_frame; /* first BDAT command, 0 if none */
    uint64_t bdat_fail;  /* frame of a non-2xx reply to a BDAT, 0 if none */
    uint64_t last_frame; /* the BDAT LAST that ended the previous transaction */
};

#define EXCERPT 60

/* Finding of kind k (also K_ADV when adv): report it if the rule keeps it. */
#define FIND(k, adv) ((w->mask & (k)) || ((adv) && (w->mask & K_ADV)))

static enum cres check_mail(struct walk *w, const struct fg_tl_conn *c, const struct fg_tl_event *v,
                            const struct offer *of, struct txn *t)
{
    char why[200];
    const char *p = params_start(v->text ? v->text : "");
    struct param pr;
    while (param_next(&p, &pr)) {
        if (key_is(&pr, "SIZE")) {
            t->has_size = 1;
            t->declared = strtoull(pr.val, NULL, 10);
            if (!(of->ext & X_SIZE) && FIND(K_SIZE, 1)) {
                bad(w, c, v->frame, "\"%.*s\" declares SIZE= but %s (RFC 1870 §3, §6)", EXCERPT,
                    v->text, offer_why(why, sizeof why, of, "SIZE"));
                return C_BAD;
            }
            /* A declaration above the advertised maximum is allowed: it is
             * how the client asks, and the server's 552 answers it (RFC 1870
             * §6.1, §6.2).  What fails is the data sent above it, or the
             * same MAIL sent again after the 552 (below). */
        } else if (key_is(&pr, "BODY")) {
            int binary = val_is(&pr, "BINARYMIME");
            unsigned need = binary ? X_BINARYMIME : X_8BITMIME;
            t->body8 = binary || val_is(&pr, "8BITMIME");
            if (!(of->ext & need) && FIND(K_8BIT, 1)) {
                bad(w, c, v->frame, "\"%.*s\" declares BODY=%.*s but %s (%s)", EXCERPT, v->text,
                    (int)pr.vlen, pr.val,
                    offer_why(why, sizeof why, of, binary ? "BINARYMIME" : "8BITMIME"),
                    binary ? "RFC 3030 §3" : "RFC 6152 §3");
                return C_BAD;
            }
        } else if (key_is(&pr, "RET") || key_is(&pr, "ENVID")) {
            int ret = key_is(&pr, "RET");
            if (!(of->ext & X_DSN) && FIND(K_DSN, 1)) {
                bad(w, c, v->frame, "\"%.*s\" carries %s= but %s (RFC 3461 %s)", EXCERPT, v->text,
                    ret ? "RET" : "ENVID", offer_why(why, sizeof why, of, "DSN"),
                    ret ? "§4.3" : "§4.4");
                return C_BAD;
            }
            int ok = ret ? (val_is(&pr, "FULL") || val_is(&pr, "HDRS"))
                         : (pr.vlen > 0 && pr.vlen <= 100 && xtext_ok(pr.val, pr.vlen));
            if (!ok && FIND(K_DSN, 0)) {
                bad(w, c, v->frame, "\"%.*s\": %s=%.*s is not valid (RFC 3461 %s)", EXCERPT,
                    v->text, ret ? "RET" : "ENVID", (int)pr.vlen, pr.val,
                    ret ? "§4.3: FULL or HDRS" : "§4.4: 1 to 100 octets of xtext");
                return C_BAD;
            }
        } else if (key_is(&pr, "SMTPUTF8") || key_is(&pr, "AUTH")) {
            int utf8 = key_is(&pr, "SMTPUTF8");
            if (!(of->ext & (utf8 ? X_SMTPUTF8 : X_AUTH)) && (w->mask & K_ADV)) {
                bad(w, c, v->frame, "\"%.*s\" carries %s but %s (%s)", EXCERPT, v->text,
                    utf8 ? "SMTPUTF8" : "AUTH=",
                    offer_why(why, sizeof why, of, utf8 ? "SMTPUTF8" : "AUTH"),
                    utf8 ? "RFC 6531 §3.4" : "RFC 4954 §5");
                return C_BAD;
            }
        }
    }
    return C_OK;
}

static enum cres check_rcpt(struct walk *w, const struct fg_tl_conn *c, const struct fg_tl_event *v,
                            const struct offer *of)
{
    char why[200];
    const char *p = params_start(v->text ? v->text : "");
    struct param pr;
    while (param_next(&p, &pr)) {
        int notify = key_is(&pr, "NOTIFY");
        if (!notify && !key_is(&pr, "ORCPT"))
            continue;
        if (!(of->ext & X_DSN) && FIND(K_DSN, 1)) {
            bad(w, c, v->frame, "\"%.*s\" carries %s= but %s (RFC 3461 %s)", EXCERPT, v->text,
                notify ? "NOTIFY" : "ORCPT", offer_why(why, sizeof why, of, "DSN"),
                notify ? "§4.1" : "§4.2");
            return C_BAD;
        }
        int ok = notify ? notify_ok(pr.val, pr.vlen) : orcpt_ok(pr.val, pr.vlen);
        if (!ok && FIND(K_DSN, 0)) {
            bad(w, c, v->frame, "\"%.*s\": %s=%.*s is not valid (RFC 3461 %s)", EXCERPT, v->text,
                notify ? "NOTIFY" : "ORCPT", (int)pr.vlen, pr.val,
                notify ? "§4.1: NEVER, or SUCCESS, FAILURE and DELAY at most once each"
                       : "§4.2: addr-type \";\" xtext");
            return C_BAD;
        }
    }
    return C_OK;
}

/* The message whose body starts at event index i (its DATA event, or its
 * first BDAT command). */
static const struct fg_tl_msg *msg_at(const struct fg_tl_conn *c, size_t i)
{
    for (size_t k = 0; k < c->nmsg; k++)
        if (c->msg[k].data_event == i)
            return &c->msg[k];
    return NULL;
}

/* The body of a transaction: 8-bit octets and its size as RFC 1870 §3
 * counts it (CRLFs in, stuffing dots out). */
static enum cres check_body(struct walk *w, const struct fg_tl_conn *c, const struct fg_tl_msg *m,
                            const struct offer *of, const struct txn *t, int bdat)
{
    char why[200];
    if (m->high_octets && !t->body8 && FIND(K_8BIT, 0)) {
        bad(w, c, m->high_frame,
            "%llu body octet%s above 0x7F (the first in frame %llu) but %s (RFC 6152 §3)",
            (unsigned long long)m->high_octets, m->high_octets == 1 ? "" : "s",
            (unsigned long long)m->high_frame,
            !(of->ext & X_8BITMIME) ? offer_why(why, sizeof why, of, "8BITMIME")
                                    : (snprintf(why, sizeof why,
                                                "the MAIL command (frame %llu) declared no "
                                                "BODY=8BITMIME",
                                                (unsigned long long)t->mail_frame),
                                       why));
        return C_BAD;
    }
    uint64_t octets = bdat ? m->size : m->size - (m->dot_lines <= m->size ? m->dot_lines : 0);
    if ((of->ext & X_SIZE) && of->size_max && octets > of->size_max && m->complete &&
        FIND(K_SIZE, 0)) {
        uint64_t f = m->eod_event < c->nev ? c->ev[m->eod_event].frame : m->last_frame;
        bad(w, c, f,
            "a message of %llu octets was sent%s, above the fixed maximum SIZE %llu the server "
            "advertised (frame %llu) (RFC 1870 §4, §6)",
            (unsigned long long)octets,
            t->has_size ? (snprintf(why, sizeof why, " (declared SIZE=%llu)",
                                    (unsigned long long)t->declared),
                           why)
                        : " without a SIZE= declaration",
            (unsigned long long)of->size_max, (unsigned long long)of->frame);
        return C_BAD;
    }
    return C_OK;
}

static int is_reply_to(const struct fg_tl_event *v, enum fg_smtp_verb verb)
{
    return v->kind == FG_TL_REPLY && v->answers == FG_ANS_COMMAND && v->verb == verb;
}

/* "BDAT 1000 LAST": the size, and whether LAST follows (RFC 3030 §2
 * bdat-cmd = "BDAT" SP chunk-size [SP end-marker]). */
static int bdat_args(const char *text, uint64_t *size, int *last)
{
    const char *p = text && strlen(text) > 4 ? text + 4 : "";
    if (*p++ != ' ' || !isdigit((unsigned char)*p))
        return 0;
    char *end;
    *size = strtoull(p, &end, 10);
    *last = 0;
    if (*end == '\0')
        return 1;
    if (strcasecmp(end, " LAST") == 0) {
        *last = 1;
        return 1;
    }
    return 0;
}

static enum cres walk_conn(struct walk *w, const struct fg_tl_conn *c)
{
    struct offer of = {0};
    struct txn t = {0};
    enum cres r = C_NA;
    /* a BDAT chunk being sent: its command's frame and declared size */
    uint64_t chunk_frame = 0, chunk_size = 0;
    int in_chunk = 0;
    uint64_t after_chunk = 0; /* frame of a chunk just ended: the next line must be a command */
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP)
            return C_UNSURE;
        if (v->kind == FG_TL_TLS)
            break;
        if (v->kind == FG_TL_REPLY) {
            if (is_reply_to(v, FG_VERB_EHLO)) {
                of.frame = v->frame;
                of.ehlo_refused = v->code / 100 != 2;
                if (!of.ehlo_refused)
                    offer_parse(&of, v->text);
            } else if (is_reply_to(v, FG_VERB_MAIL) && v->code == 552 && t.has_size && t.mail) {
                struct refused *rf = FG_ARRAY_PUSH(w->ref, w->nref, w->capref);
                rf->text = t.mail;
                rf->frame = v->frame;
                rf->conn_idx = w->idx;
            } else if (v->answers == FG_ANS_BDAT && v->code / 100 != 2 && t.open && !t.bdat_fail) {
                t.bdat_fail = v->frame;
            }
            continue;
        }
        if ((v->kind == FG_TL_FIN || v->kind == FG_TL_RST) && v->dir == FG_C2S && in_chunk) {
            if (v->us >= w->run_end_us)
                return r == C_BAD ? C_BAD : C_UNSURE;
            if (FIND(K_CHUNK, 0)) {
                bad(w, c, v->frame,
                    "the gateway %s the connection inside the chunk of BDAT %llu (frame %llu): "
                    "fewer octets sent than declared (RFC 3030 §2)",
                    v->kind == FG_TL_RST ? "reset" : "closed", (unsigned long long)chunk_size,
                    (unsigned long long)chunk_frame);
                return C_BAD;
            }
        }
        if (v->kind == FG_TL_BDAT_END) {
            in_chunk = 0;
            if (v->size != chunk_size && FIND(K_CHUNK, 0)) {
                bad(w, c, v->frame, "BDAT %llu (frame %llu) carried %llu octets (RFC 3030 §2)",
                    (unsigned long long)chunk_size, (unsigned long long)chunk_frame,
                    (unsigned long long)v->size);
                return C_BAD;
            }
            after_chunk = chunk_frame;
            if (v->last) {
                t.open = 0;
                t.last_frame = v->frame;
            }
            continue;
        }
        if (v->kind == FG_TL_DATA) {
            const struct fg_tl_msg *m = msg_at(c, i);
            if (m && check_body(w, c, m, &of, &t, 0) == C_BAD)
                return C_BAD;
            continue;
        }
        if (v->kind == FG_TL_END_OF_DATA) {
            t.open = 0;
            t.last_frame = 0;
            continue;
        }
        if (v->kind != FG_TL_COMMAND)
            continue;
        if (after_chunk && v->verb == FG_VERB_OTHER && FIND(K_CHUNK, 0)) {
            /* The parser took exactly the declared octets as the chunk;
             * what follows must be a command line. */
            bad(w, c, v->frame,
                "the line after the chunk of BDAT %llu (frame %llu) is not an SMTP command "
                "(\"%.30s\"): the chunk carried more octets than declared (RFC 3030 §2)",
                (unsigned long long)chunk_size, (unsigned long long)after_chunk,
                v->text ? v->text : "");
            return C_BAD;
        }
        after_chunk = 0;
        switch (v->verb) {
        case FG_VERB_EHLO:
        case FG_VERB_HELO:
            memset(&of, 0, sizeof of);
            of.helo = v->verb == FG_VERB_HELO;
            of.frame = v->frame;
            memset(&t, 0, sizeof t);
            break;
        case FG_VERB_RSET:
            memset(&t, 0, sizeof t);
            break;
        case FG_VERB_MAIL:
            if (t.bdat_fail && FIND(K_CHUNK, 0)) {
                bad(w, c, v->frame,
                    "MAIL after the BDAT chunk refused at frame %llu without RSET (RFC 3030 §2: "
                    "the client MUST send RSET)",
                    (unsigned long long)t.bdat_fail);
                return C_BAD;
            }
            memset(&t, 0, sizeof t);
            t.open = 1;
            t.mail_frame = v->frame;
            t.mail = v->text;
            r = r == C_NA ? C_OK : r;
            for (size_t k = 0; v->text && k < w->nref; k++)
                if (strcmp(w->ref[k].text, v->text) == 0 && FIND(K_SIZE, 0)) {
                    bad(w, c, v->frame,
                        "\"%.*s\" sent again unchanged after 552 to it (connection #%zu, frame "
                        "%llu): the message exceeds the server's fixed maximum (RFC 1870 §4; "
                        "RFC 5321 §4.2.5)",
                        EXCERPT, v->text, w->ref[k].conn_idx + 1,
                        (unsigned long long)w->ref[k].frame);
                    return C_BAD;
                }
            if (check_mail(w, c, v, &of, &t) == C_BAD)
                return C_BAD;
            break;
        case FG_VERB_RCPT:
            if (check_rcpt(w, c, v, &of) == C_BAD)
                return C_BAD;
            break;
        case FG_VERB_DATA:
            if (t.bdat_frame && FIND(K_CHUNK, 0)) {
                bad(w, c, v->frame,
                    "DATA in the transaction that used BDAT at frame %llu (RFC 3030 §2: BDAT and "
                    "DATA are not mixed)",
                    (unsigned long long)t.bdat_frame);
                return C_BAD;
            }
            if (!t.data_frame)
                t.data_frame = v->frame;
            break;
        case FG_VERB_BDAT: {
            char why[200];
            uint64_t size = 0;
            int last = 0;
            if (!(of.ext & X_CHUNKING) && FIND(K_CHUNK, 1)) {
                bad(w, c, v->frame, "\"%.30s\" but %s (RFC 3030 §2)", v->text ? v->text : "BDAT",
                    offer_why(why, sizeof why, &of, "CHUNKING"));
                return C_BAD;
            }
            if (!bdat_args(v->text, &size, &last) && FIND(K_CHUNK, 0)) {
                bad(w, c, v->frame,
                    "\"%.30s\" is not \"BDAT size [LAST]\" (RFC 3030 §2: chunk-size and the "
                    "end-marker LAST)",
                    v->text ? v->text : "BDAT");
                return C_BAD;
            }
            if (t.data_frame && FIND(K_CHUNK, 0)) {
                bad(w, c, v->frame,
                    "BDAT in the transaction that used DATA at frame %llu (RFC 3030 §2: BDAT and "
                    "DATA are not mixed)",
                    (unsigned long long)t.data_frame);
                return C_BAD;
            }
            if (!t.open && FIND(K_CHUNK, 0)) {
                if (t.last_frame)
                    bad(w, c, v->frame,
                        "BDAT after the LAST chunk (frame %llu) ended the transaction, without a "
                        "new MAIL (RFC 3030 §2)",
                        (unsigned long long)t.last_frame);
                else
                    bad(w, c, v->frame, "BDAT outside a mail transaction (no MAIL before it)");
                return C_BAD;
            }
            if (t.bdat_fail && !(of.ext & X_PIPELINING) && FIND(K_CHUNK, 0)) {
                /* With PIPELINING, chunks already in flight when the error
                 * came are allowed; without it every chunk waited for the
                 * reply to the one before. */
                bad(w, c, v->frame,
                    "BDAT after the chunk refused at frame %llu (RFC 3030 §2: no further BDAT "
                    "after a 4xx or 5xx)",
                    (unsigned long long)t.bdat_fail);
                return C_BAD;
            }
            if (!t.bdat_frame) {
                t.bdat_frame = v->frame;
                const struct fg_tl_msg *m = msg_at(c, i);
                if (m && check_body(w, c, m, &of, &t, 1) == C_BAD)
                    return C_BAD;
            }
            if (bdat_args(v->text, &size, &last)) { /* the parser counts this chunk */
                in_chunk = 1;
                chunk_frame = v->frame;
                chunk_size = size;
            }
            break;
        }
        default:
            break;
        }
    }
    if (in_chunk && chunk_size && r != C_BAD && (w->mask & K_CHUNK))
        return C_UNSURE; /* the trace ends inside a chunk */
    return r;
}

static void eval_ext(const struct fg_judge_ctx *ctx, struct fg_outcome *o, unsigned mask,
                     const char *what)
{
    const struct fg_meta *m = ctx->meta;
    struct walk w;
    struct fg_strbuf ev = {0};
    memset(&w, 0, sizeof w);
    w.ctx = ctx;
    w.mask = mask;
    w.ev = &ev;
    w.o = o;
    w.run_end_us = ctx->tl->stats.last_us;
    if (m->probe_start_us && m->probe_start_us < w.run_end_us)
        w.run_end_us = m->probe_start_us;
    size_t n = fg_timeline_conns_to(ctx->tl, m->proxy_port, NULL, 0);
    w.all = fg_calloc(n ? n : 1, sizeof *w.all);
    w.nall = fg_timeline_conns_to(ctx->tl, m->proxy_port, w.all, n);
    size_t cnt[4] = {0};
    for (size_t i = 0; i < w.nall; i++) {
        w.idx = i;
        enum cres r = walk_conn(&w, w.all[i]);
        cnt[r]++;
        if (r == C_UNSURE && !o->conn)
            o->conn = w.all[i]->id;
    }
    size_t judged = cnt[C_OK] + cnt[C_BAD] + cnt[C_UNSURE];
    fg_strbuf_printf(&ev,
                     "%zu outbound connection%s (port %d): %zu ok, %zu failing, %zu undecided, %zu "
                     "without a mail transaction",
                     w.nall, w.nall == 1 ? "" : "s", m->proxy_port, cnt[C_OK], cnt[C_BAD],
                     cnt[C_UNSURE], cnt[C_NA]);
    if (cnt[C_BAD]) {
        o->verdict = FG_V_FAIL;
        o->summary = fg_asprintf("%zu of %zu outbound connection%s: %s", cnt[C_BAD], judged,
                                 judged == 1 ? "" : "s", w.why);
    } else if (cnt[C_UNSURE]) {
        o->verdict = FG_V_INCONC;
        o->summary = fg_asprintf("%zu outbound connection%s undecided (a gap in the capture or "
                                 "the trace ends inside a BDAT chunk)",
                                 cnt[C_UNSURE], cnt[C_UNSURE] == 1 ? "" : "s");
    } else if (cnt[C_OK]) {
        o->verdict = FG_V_PASS;
        o->summary = fg_asprintf("%zu outbound connection%s: %s", cnt[C_OK],
                                 cnt[C_OK] == 1 ? "" : "s", what);
    } else {
        o->verdict = FG_V_INCONC;
        o->summary = fg_strdup("not exercised: no mail transaction on the outbound leg");
    }
    free(w.all);
    free(w.ref);
    o->evidence = fg_strbuf_take(&ev);
}

static void eval_size(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e, (void)limit_ms;
    eval_ext(ctx, o, K_SIZE, "SIZE declared only when offered, nothing above the advertised limit");
}

static void eval_8bit(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e, (void)limit_ms;
    eval_ext(ctx, o, K_8BIT, "8-bit text only with 8BITMIME offered and BODY=8BITMIME declared");
}

static void eval_chunking(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e, (void)limit_ms;
    eval_ext(ctx, o, K_CHUNK, "BDAT only with CHUNKING offered, chunks as declared");
}

static void eval_dsn(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                     uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e, (void)limit_ms;
    eval_ext(ctx, o, K_DSN, "DSN parameters only with DSN offered, with valid values");
}

static void eval_adv(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                     uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e, (void)limit_ms;
    eval_ext(ctx, o, K_ADV, "no extension used that the current EHLO reply did not offer");
}
