/* expect_security.c - the inbound security rules: the gateway as an SMTP
 * server receiving hostile input from the injector.
 *
 *   no-smuggled-message      SMTP smuggling (SEC Consult, 2023;
 *                            CVE-2023-51764, -51765, -51766): the text
 *                            after a non-standard end-of-data sequence was
 *                            not run as commands, and no message from the
 *                            smuggled sender left on the outbound leg
 *   early-commands-handled   pipelining desynchronisation: commands sent
 *                            before the greeting or before the EHLO reply
 *                            were answered in order, after the greeting
 *   starttls-no-injected-commands
 *                            CVE-2011-0411: plaintext sent in the same
 *                            segment as STARTTLS was not run inside TLS
 *
 * Registered in expect.h's FG_EXPECT_TABLES as fg_expect_security_rules.
 * The first two read the timeline only; the third reads the capture's TLS
 * record layer too (see its section).  The timeline's parser is strict (only
 * CRLF.CRLF ends the data, RFC 5321 §4.1.1.4), so a smuggling payload is
 * one message body on the wire; a gateway that ended the data early shows
 * as replies it sent while, by the RFC, it was still reading text.
 * This file also holds the table of end-of-data variants the injector
 * sends (scenario key `smuggle`).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "faultgate/error.h"
#include "faultgate/expect_security.h"
#include "faultgate/injector.h"
#include "faultgate/trace.h"
#include "faultgate/util.h"

/* The sequences public smuggling probes send (reference: the smtpsmug set,
 * and three more from the SMTP-Smuggling-Tools set).  Each replaces the
 * CRLF.CRLF of a DATA body; none is an end of data under RFC 5321
 * §4.1.1.4, and all but the last three hold a bare CR or LF (§2.3.8). */
#define V(n, s, o)                                                                                 \
    {                                                                                              \
        n, s, sizeof(s) - 1, o                                                                     \
    }
const struct fg_smuggle_variant fg_smuggle_variants[] = {
    V("lflf", "\n.\n", "smtpsmug"),
    V("crcr", "\r.\r", "smtpsmug"),
    V("crlf", "\r.\n", "smtpsmug"),
    V("lfcr", "\n.\r", "smtpsmug"),
    V("lfcrlf", "\n.\r\n", "smtpsmug"),
    V("crlflf", "\r\n.\n", "smtpsmug"),
    V("crcrlf", "\r.\r\n", "smtpsmug"),
    V("crlfcr", "\r\n.\r", "smtpsmug"),
    V("nullbefore", "\r\n\0.\r\n", "smtpsmug"),
    V("nullafter-dot", "\r\n.\0\r\n", "SMTP-Smuggling-Tools"),
    V("dot-crcrlf", "\r\n.\r\r\n", "SMTP-Smuggling-Tools"),
    V("crcrlf-dot-crcrlf", "\r\r\n.\r\r\n", "SMTP-Smuggling-Tools"),
    {NULL, NULL, 0, NULL},
};
#undef V

static void eval_smuggled(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o);
static void eval_early(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o);
static void eval_starttls_injection(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                                    uint64_t limit_ms, struct fg_outcome *o);

const struct fg_expect_rule fg_expect_security_rules[] = {
    {"no-smuggled-message",
     "RFC 5321 §4.1.1.4 (MUST: only CRLF.CRLF ends the data), §2.3.8 (MUST NOT recognise "
     "another line terminator); CVE-2023-51764, CVE-2023-51765, CVE-2023-51766",
     0, 0, eval_smuggled},
    {"early-commands-handled",
     "RFC 5321 §3.1 and §4.3.2 (the greeting is the first reply), §4.1.4 (MUST: 503 to RCPT "
     "without MAIL), §4.3.2 (the replies each command may get); RFC 2920 §3.1 (MUST NOT lose "
     "input; replies in order)",
     0, 0, eval_early},
    {"starttls-no-injected-commands",
     "RFC 3207 §4.2 (MUST: the client must discard knowledge from before TLS; the server "
     "likewise), §6; CVE-2011-0411 (server-side STARTTLS command injection, CERT VU#555316)",
     0, 0, eval_starttls_injection},
    {NULL, NULL, 0, 0, NULL},
};

int fg_starttls_inject_parse(const char *text, char **out, size_t *len, char *err, size_t errlen,
                             int *col)
{
    char *o;
    size_t k;
    int rc = fg_octets_unescape(text, &o, &k, err, errlen, col);
    if (rc < 0)
        return rc;
    const char *why = NULL;
    if (k == 0)
        why = "an empty text (commands to inject, e.g. 'RSET\\r\\n')";
    else if (k < 2 || o[k - 2] != '\r' || o[k - 1] != '\n')
        why = "the text must end with \\r\\n (whole command lines)";
    else if (k > 4096)
        why = "longer than 4096 octets";
    /* starttls-no-injected-commands finds where TLS begins by the first
     * line that starts like a TLS record (content type 20 to 23, RFC 5246
     * §6.2.1): a text line may not. */
    for (size_t i = 0; !why && i < k; i++)
        if ((i == 0 || o[i - 1] == '\n') && o[i] >= 20 && o[i] <= 23)
            why = "a line may not begin with the octets 0x14 to 0x17 (a TLS record's start)";
    if (why) {
        free(o);
        return fg_errf(err, errlen, FG_EINPUT, "%s", why);
    }
    *out = o;
    *len = k;
    return 0;
}

/* --- the variants -------------------------------------------------------- */

int fg_smuggle_parse(const char *text, char **seq, size_t *len, char **name, char *err,
                     size_t errlen, int *col)
{
    *col = 0;
    for (const struct fg_smuggle_variant *v = fg_smuggle_variants; v->name; v++)
        if (strcmp(text, v->name) == 0) {
            *seq = fg_malloc(v->len + 1);
            memcpy(*seq, v->seq, v->len + 1);
            *len = v->len;
            *name = fg_strdup(v->name);
            return 0;
        }
    /* Octets with escapes: a name has no backslash and no CR or LF. */
    if (!strpbrk(text, "\\\r\n")) {
        char names[512];
        size_t n = 0;
        names[0] = '\0';
        for (const struct fg_smuggle_variant *v = fg_smuggle_variants; v->name; v++)
            n += (size_t)snprintf(names + n, sizeof(names) - n, "%s%s", n ? ", " : "", v->name);
        return fg_errf(err, errlen, FG_EINPUT,
                       "unknown variant '%s' (%s, or the octets written with \\r \\n \\0 \\xHH)",
                       text, names);
    }
    char *out;
    size_t k;
    int rc = fg_octets_unescape(text, &out, &k, err, errlen, col);
    if (rc < 0)
        return rc;
    *col = 0;
    if (k == 0 || (k == 5 && memcmp(out, "\r\n.\r\n", 5) == 0)) {
        free(out);
        return fg_errf(err, errlen, FG_EINPUT,
                       k ? "that is the standard end of data, not a smuggling sequence"
                         : "an empty sequence");
    }
    out[k] = '\0';
    *seq = out;
    *len = k;
    *name = fg_strdup("custom");
    return 0;
}

const char *fg_smuggle_describe(const char *seq, size_t len, char *buf, size_t buflen)
{
    size_t n = 0;
    if (!buflen)
        return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < len && n + 5 < buflen; i++) {
        unsigned char c = (unsigned char)seq[i];
        if (c == '\r')
            n += (size_t)snprintf(buf + n, buflen - n, "\\r");
        else if (c == '\n')
            n += (size_t)snprintf(buf + n, buflen - n, "\\n");
        else if (c == '\\')
            n += (size_t)snprintf(buf + n, buflen - n, "\\\\");
        else if (c < 0x20 || c >= 0x7f)
            n += (size_t)snprintf(buf + n, buflen - n, "\\x%02x", c);
        else
            buf[n++] = (char)c, buf[n] = '\0';
    }
    return buf;
}

/* --- helpers ------------------------------------------------------------- */

static uint64_t trace_start_us(const struct fg_timeline *tl)
{
    uint64_t t0 = 0;
    for (size_t i = 0; i < tl->nconn; i++)
        if (tl->conn[i].nev && (!t0 || tl->conn[i].ev[0].us < t0))
            t0 = tl->conn[i].ev[0].us;
    return t0;
}

static const char *rel(char *buf, size_t len, uint64_t us, uint64_t t0)
{
    return fg_expect_secs(buf, len, us >= t0 ? us - t0 : 0);
}

static void finish(struct fg_outcome *o, enum fg_verdict v, char *summary, struct fg_strbuf *ev)
{
    o->verdict = v;
    o->summary = summary;
    o->evidence = ev->s ? ev->s : fg_strdup(summary);
}

/* --- no-smuggled-message ------------------------------------------------- */

struct carrier {
    const char *token;
    const struct fg_msg_spec *spec;
};

/* The carrier's DATA text on the inbound leg: the connection and message
 * whose token is tok. */
static int find_text(const struct fg_judge_ctx *ctx, const char *tok, const struct fg_tl_conn **cc,
                     const struct fg_tl_msg **mm)
{
    const struct fg_timeline *tl = ctx->tl;
    for (size_t i = 0; i < tl->nconn; i++) {
        const struct fg_tl_conn *c = &tl->conn[i];
        if (c->server_port != ctx->meta->gateway_port)
            continue;
        for (size_t k = 0; k < c->nmsg; k++)
            if (strcmp(c->msg[k].token, tok) == 0) {
                *cc = c;
                *mm = &c->msg[k];
                return 1;
            }
    }
    return 0;
}

/* One carrier: the inbound verdict (pass, fail, or inconc). */
static enum fg_verdict judge_inbound(const struct fg_judge_ctx *ctx, const struct carrier *cr,
                                     uint64_t t0, struct fg_strbuf *ev, struct fg_outcome *o)
{
    char seqd[64], t[32];
    fg_smuggle_describe(cr->spec->smuggle, cr->spec->smuggle_len, seqd, sizeof seqd);
    const struct fg_tl_conn *c = NULL;
    const struct fg_tl_msg *m = NULL;
    if (!find_text(ctx, cr->token, &c, &m)) {
        fg_strbuf_printf(
            ev,
            "carrier %s (variant %s, %s): no message text with this token on the inbound "
            "leg (the gateway refused the transaction before the text, or it was never "
            "sent): nothing to judge",
            cr->token, cr->spec->smuggle_name, seqd);
        return FG_V_INCONC;
    }
    const struct fg_tl_event *d = &c->ev[m->data_event];
    fg_strbuf_printf(ev,
                     "carrier %s on inbound connection #%u: text from frame %llu (t=+%s s) ending "
                     "with variant %s (%s), then MAIL FROM:<%s>, RCPT, DATA, a second text and "
                     "CRLF.CRLF",
                     cr->token, c->id, (unsigned long long)d->frame, rel(t, sizeof t, d->us, t0),
                     cr->spec->smuggle_name, seqd, cr->spec->smuggle_from);
    fg_outcome_frame(o, d->frame);
    /* Every positive reply after the text began (221 to the QUIT aside):
     * the end of data is due one; a 354 or a second 2xx answers a command
     * the gateway read out of the text. */
    unsigned pos = 0, neg = 0, gap = 0;
    uint64_t first_extra = 0, f354 = 0;
    struct fg_strbuf codes = {0};
    for (size_t i = m->data_event + 1; i < c->nev; i++) {
        const struct fg_tl_event *x = &c->ev[i];
        if (x->kind == FG_TL_GAP)
            gap = 1;
        if (x->kind != FG_TL_REPLY || x->dir != FG_S2C)
            continue;
        if (x->code == 221)
            continue;
        fg_strbuf_printf(&codes, "%s%d (frame %llu)", codes.len ? ", " : "", x->code,
                         (unsigned long long)x->frame);
        if (x->code / 100 == 2 || x->code / 100 == 3) {
            if (++pos == 2)
                first_extra = x->frame;
            if (x->code == 354 && !f354)
                f354 = x->frame;
        } else {
            neg++;
        }
    }
    enum fg_verdict v;
    if (pos >= 2) {
        fg_strbuf_printf(
            ev,
            "\n  FAIL: the gateway sent %u positive replies after the text began where one "
            "was due (%s): it took variant %s (%s) as the end of data and ran the smuggled "
            "MAIL FROM:<%s>, RCPT and DATA as commands; first extra reply at frame %llu",
            pos, codes.s, cr->spec->smuggle_name, seqd, cr->spec->smuggle_from,
            (unsigned long long)first_extra);
        if (f354)
            fg_strbuf_printf(ev, "; 354 to the smuggled DATA at frame %llu",
                             (unsigned long long)f354);
        fg_outcome_frame(o, first_extra);
        if (f354)
            fg_outcome_frame(o, f354);
        if (!o->conn)
            o->conn = c->id;
        v = FG_V_FAIL;
    } else if (gap) {
        fg_strbuf_printf(ev, "\n  undecided: a gap in the capture after the text began");
        v = FG_V_INCONC;
    } else if (pos == 1 && m->complete && m->reply_code / 100 == 2) {
        fg_strbuf_printf(
            ev, "\n  one message: the smuggled commands stayed inside its text (replies: %s)",
            codes.s);
        v = FG_V_PASS;
    } else if (pos == 0) {
        fg_strbuf_printf(ev, "\n  refused as a whole (replies: %s)",
                         codes.s ? codes.s : "none, closed");
        v = FG_V_PASS;
    } else {
        /* One positive reply that is not the 2xx to the real end of data
         * (the trace ends before it, say). */
        fg_strbuf_printf(ev, "\n  undecided: replies %s", codes.s ? codes.s : "none");
        v = FG_V_INCONC;
    }
    free(codes.s);
    return v;
}

/* The outbound leg: a message from the smuggled sender, or with the
 * smuggled token, relayed by the gateway. */
static int judge_outbound(const struct fg_judge_ctx *ctx, const struct carrier *cr,
                          struct fg_strbuf *ev, struct fg_outcome *o, unsigned *nmsgs)
{
    int port = ctx->meta->proxy_port ? ctx->meta->proxy_port : ctx->meta->mta_port;
    char stok[FG_TOKEN_MAX + 16], sfrom[300];
    snprintf(stok, sizeof stok, "%s" FG_INJ_SMUGGLED_SUFFIX, cr->token);
    snprintf(sfrom, sizeof sfrom, "<%s>", cr->spec->smuggle_from);
    int bad = 0;
    const struct fg_timeline *tl = ctx->tl;
    for (size_t i = 0; i < tl->nconn; i++) {
        const struct fg_tl_conn *c = &tl->conn[i];
        if (!port || c->server_port != port)
            continue;
        for (size_t k = 0; k < c->nmsg; k++) {
            const struct fg_tl_msg *m = &c->msg[k];
            (*nmsgs)++;
            int by_tok = strcmp(m->token, stok) == 0;
            int by_from = m->mail_from && strcasestr(m->mail_from, sfrom);
            if (!by_tok && !by_from)
                continue;
            bad = 1;
            uint64_t f = c->ev[m->data_event].frame;
            fg_strbuf_printf(
                ev,
                "\n  FAIL: the smuggled message was relayed on outbound connection #%u "
                "(frame %llu, MAIL %s, token %s)",
                c->id, (unsigned long long)f, m->mail_from ? m->mail_from : "?",
                m->token[0] ? m->token : "none");
            fg_outcome_frame(o, f);
            if (!o->conn)
                o->conn = c->id;
        }
    }
    return bad;
}

static void eval_smuggled(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e;
    (void)limit_ms;
    const struct fg_meta *meta = ctx->meta;
    struct carrier cr[64];
    size_t ncr = 0, k = 0;
    for (size_t i = 0; i < ctx->sc->nmsgs; i++) {
        const struct fg_msg_spec *ms = &ctx->sc->msgs[i];
        unsigned cnt = ms->count ? ms->count : 1;
        for (unsigned c = 0; c < cnt; c++, k++)
            if (ms->smuggle && k < meta->ntokens && ncr < 64)
                cr[ncr++] = (struct carrier){meta->tokens[k].token, ms};
    }
    struct fg_strbuf ev = {0};
    if (!ncr) {
        finish(o, FG_V_INCONC,
               fg_strdup("the scenario sends no smuggling payload (no message with `smuggle`)"),
               &ev);
        return;
    }
    uint64_t t0 = trace_start_us(ctx->tl);
    enum fg_verdict worst = FG_V_PASS;
    unsigned failed = 0, nout = 0;
    for (size_t i = 0; i < ncr; i++) {
        if (i)
            fg_strbuf_printf(&ev, "\n");
        enum fg_verdict v = judge_inbound(ctx, &cr[i], t0, &ev, o);
        if (judge_outbound(ctx, &cr[i], &ev, o, &nout))
            v = FG_V_FAIL;
        if (v == FG_V_FAIL)
            failed++;
        worst = fg_verdict_worst(worst, v);
    }
    fg_strbuf_printf(&ev, "\n  outbound leg: %u message(s) relayed", nout);
    char *sum;
    const struct fg_msg_spec *s0 = cr[0].spec;
    if (worst == FG_V_FAIL)
        sum = fg_asprintf("%u of %zu smuggling payload(s) (variant %s) split into two messages",
                          failed, ncr, s0->smuggle_name);
    else if (worst == FG_V_PASS)
        sum =
            fg_asprintf("variant %s: no smuggled message (%zu payload(s))", s0->smuggle_name, ncr);
    else
        sum = fg_asprintf("variant %s: not decided (no payload text, or a gap)", s0->smuggle_name);
    finish(o, worst, sum, &ev);
}

/* --- early-commands-handled ---------------------------------------------- */

/* RFC 5321 §4.3.2 (and §4.2.4 for 500-502 to any command, §3.8 for 421):
 * the codes a reply to EHLO/HELO may carry.  503 is not one: a 503 where
 * EHLO's reply is due answers another command. */
static int ehlo_code_ok(int code)
{
    static const int ok[] = {250, 421, 450, 451, 500, 501, 502, 504, 550, 554};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (code == ok[i])
            return 1;
    return 0;
}

/* §4.1.4: a RCPT without MAIL MUST get 503; a server enforcing
 * synchronisation may refuse with 554 or 421 instead, or another 5xx. */
static int early_rcpt_code_ok(int code)
{
    return code == 421 || code / 100 == 5;
}

static int greeting_code_ok(int code)
{
    return code == 220 || code == 554 || code == 421; /* §4.3.2, §3.1, §3.8 */
}

/* judge_conn - one inbound connection; 0 not concerned, else the verdict
 * (FG_V_PASS + 1, ...). */
static int judge_early(const struct fg_tl_conn *c, int marked, uint64_t t0, struct fg_strbuf *ev,
                       struct fg_outcome *o)
{
    long first_reply = fg_tl_conn_first(c, 0, FG_TL_REPLY, FG_S2C);
    long first_cmd = fg_tl_conn_first(c, 0, FG_TL_COMMAND, FG_C2S);
    if (first_cmd < 0)
        return 0;
    int pre_greeting = first_reply < 0 || first_cmd < first_reply;
    /* A command sent after EHLO/HELO and before any reply following it. */
    long ehlo = -1, early = -1;
    for (size_t i = 0; i < c->nev && early < 0; i++) {
        const struct fg_tl_event *x = &c->ev[i];
        if (x->kind == FG_TL_COMMAND && x->dir == FG_C2S &&
            (x->verb == FG_VERB_EHLO || x->verb == FG_VERB_HELO) && ehlo < 0)
            ehlo = (long)i;
        else if (ehlo >= 0 && x->kind == FG_TL_REPLY && x->dir == FG_S2C &&
                 !(pre_greeting && (long)i == first_reply))
            break; /* EHLO answered before anything else was sent */
        else if (ehlo >= 0 && x->kind == FG_TL_COMMAND && x->dir == FG_C2S)
            early = (long)i;
    }
    if (!pre_greeting && early < 0 && !marked)
        return 0;
    char t[32];
    const struct fg_tl_event *fc = &c->ev[first_cmd];
    fg_strbuf_printf(ev, "%sinbound connection #%u: ", ev->len ? "\n" : "", c->id);
    if (!pre_greeting && early < 0)
        /* Sent at once on connecting, but the greeting was on the wire
         * first: the server greets at once.  The order is still judged. */
        fg_strbuf_printf(ev,
                         "%s sent at frame %llu, after the greeting at frame %llu (the greeting "
                         "was on the wire first)",
                         fg_smtp_verb_name(fc->verb), (unsigned long long)fc->frame,
                         (unsigned long long)c->ev[first_reply].frame);
    if (pre_greeting)
        fg_strbuf_printf(ev, "%s sent before the greeting (frame %llu, t=+%s s)",
                         fg_smtp_verb_name(fc->verb), (unsigned long long)fc->frame,
                         rel(t, sizeof t, fc->us, t0));
    if (early >= 0)
        fg_strbuf_printf(ev, "%s%s sent before the reply to %s (frame %llu)",
                         pre_greeting ? "; " : "", fg_smtp_verb_name(c->ev[early].verb),
                         fg_smtp_verb_name(c->ev[ehlo].verb),
                         (unsigned long long)c->ev[early].frame);
    fg_outcome_frame(o, fc->frame);
    if (first_reply < 0) {
        /* Never a reply: who closed? */
        long cfin = -1, sfin = -1;
        for (size_t i = 0; i < c->nev; i++) {
            const struct fg_tl_event *x = &c->ev[i];
            if (x->kind == FG_TL_FIN || x->kind == FG_TL_RST) {
                if (x->dir == FG_S2C && sfin < 0)
                    sfin = (long)i;
                if (x->dir == FG_C2S && cfin < 0)
                    cfin = (long)i;
            }
        }
        if (sfin >= 0 && (cfin < 0 || sfin < cfin)) {
            fg_strbuf_printf(ev, "; the gateway closed without a reply (refused)");
            return FG_V_PASS + 1;
        }
        if (cfin >= 0) {
            fg_strbuf_printf(ev,
                             "\n  FAIL: the gateway never answered (no greeting, no reply) before "
                             "the client gave up: input lost (RFC 2920 §3.1)");
            if (!o->conn)
                o->conn = c->id;
            return FG_V_FAIL + 1;
        }
        fg_strbuf_printf(ev, "; no reply before the trace ends: undecided");
        return FG_V_INCONC + 1;
    }
    const struct fg_tl_event *g = &c->ev[first_reply];
    if (!greeting_code_ok(g->code)) {
        fg_strbuf_printf(
            ev,
            "\n  FAIL: the first reply (frame %llu, t=+%s s) is %d, not a greeting (220, "
            "554 or 421): the gateway answered the early command before greeting",
            (unsigned long long)g->frame, rel(t, sizeof t, g->us, t0), g->code);
        fg_outcome_frame(o, g->frame);
        if (!o->conn)
            o->conn = c->id;
        return FG_V_FAIL + 1;
    }
    fg_strbuf_printf(ev, "; greeting %d first (frame %llu)", g->code, (unsigned long long)g->frame);
    if (g->code == 554 || g->code == 421)
        return FG_V_PASS + 1; /* refused: §3.1 wants 503 to everything else */
    /* The replies in order: the timeline matches them to the commands by
     * position (RFC 2920 §3.1), so a reply whose code its command cannot
     * get answers another command: out of step, or input was lost. */
    int fail = 0;
    unsigned answered = 0;
    for (size_t i = (size_t)first_reply + 1; i < c->nev; i++) {
        const struct fg_tl_event *x = &c->ev[i];
        if (x->kind != FG_TL_REPLY || x->dir != FG_S2C)
            continue;
        if (x->answers == FG_ANS_UNSOLICITED && x->code != 421) {
            fg_strbuf_printf(ev, "\n  FAIL: reply %d at frame %llu answers no command", x->code,
                             (unsigned long long)x->frame);
            fail = 1;
        } else if (x->answers == FG_ANS_COMMAND &&
                   (x->verb == FG_VERB_EHLO || x->verb == FG_VERB_HELO) && !ehlo_code_ok(x->code)) {
            fg_strbuf_printf(
                ev,
                "\n  FAIL: the reply in %s's place (frame %llu) is %d, a code RFC 5321 "
                "§4.3.2 does not give %s: it answers another command (out of order)",
                fg_smtp_verb_name(x->verb), (unsigned long long)x->frame, x->code,
                fg_smtp_verb_name(x->verb));
            fail = 1;
        } else if (early >= 0 && x->answers == FG_ANS_COMMAND && x->verb == c->ev[early].verb &&
                   x->verb == FG_VERB_RCPT && answered == 0 && !early_rcpt_code_ok(x->code)) {
            fg_strbuf_printf(
                ev,
                "\n  FAIL: the reply in the early RCPT's place (frame %llu) is %d; a RCPT "
                "without MAIL gets 503 (RFC 5321 §4.1.4): replies out of order",
                (unsigned long long)x->frame, x->code);
            fail = 1;
        }
        if (fail) {
            fg_outcome_frame(o, x->frame);
            if (!o->conn)
                o->conn = c->id;
            return FG_V_FAIL + 1;
        }
        if (x->answers == FG_ANS_COMMAND && early >= 0 && x->verb == c->ev[early].verb)
            answered++;
    }
    /* An early command never answered while the client waited. */
    long last_cmd = early >= 0 ? early : first_cmd;
    int replied_after = 0;
    for (size_t i = (size_t)last_cmd + 1; i < c->nev; i++)
        if (c->ev[i].kind == FG_TL_REPLY && c->ev[i].dir == FG_S2C &&
            (i != (size_t)first_reply || !pre_greeting))
            replied_after = 1;
    if (!replied_after && early >= 0) {
        fg_strbuf_printf(ev, "\n  undecided: the early %s got no reply in the trace",
                         fg_smtp_verb_name(c->ev[early].verb));
        return FG_V_INCONC + 1;
    }
    fg_strbuf_printf(ev, "; every reply in order");
    return FG_V_PASS + 1;
}

static void eval_early(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e;
    (void)limit_ms;
    const struct fg_timeline *tl = ctx->tl;
    uint64_t t0 = trace_start_us(tl);
    struct fg_strbuf ev = {0};
    enum fg_verdict worst = FG_V_PASS;
    unsigned n = 0, nfail = 0;
    /* The tokens of the desynchronising messages: their connections are
     * judged even when the greeting won the race on the wire. */
    const char *marks[64];
    size_t nmarks = 0, k = 0;
    for (size_t i = 0; i < ctx->sc->nmsgs; i++) {
        const struct fg_msg_spec *ms = &ctx->sc->msgs[i];
        unsigned cnt = ms->count ? ms->count : 1;
        for (unsigned j = 0; j < cnt; j++, k++)
            if ((ms->flags & (FG_INJ_EARLY_GREETING | FG_INJ_EARLY_EHLO)) &&
                k < ctx->meta->ntokens && nmarks < 64)
                marks[nmarks++] = ctx->meta->tokens[k].token;
    }
    for (size_t i = 0; i < tl->nconn; i++) {
        const struct fg_tl_conn *c = &tl->conn[i];
        if (c->server_port != ctx->meta->gateway_port)
            continue;
        int marked = 0;
        for (size_t m = 0; m < c->nmsg && !marked; m++)
            for (size_t j = 0; j < nmarks && !marked; j++)
                marked = strcmp(c->msg[m].token, marks[j]) == 0;
        int r = judge_early(c, marked, t0, &ev, o);
        if (!r)
            continue;
        n++;
        enum fg_verdict v = (enum fg_verdict)(r - 1);
        if (v == FG_V_FAIL)
            nfail++;
        worst = fg_verdict_worst(worst, v);
    }
    char *sum;
    if (!n) {
        worst = FG_V_INCONC;
        sum = fg_strdup("not exercised: no inbound command was sent before the greeting or "
                        "before the EHLO reply");
    } else if (worst == FG_V_FAIL) {
        sum = fg_asprintf("%u of %u desynchronised connection(s) answered out of step", nfail, n);
    } else if (worst == FG_V_PASS) {
        sum = fg_asprintf("%u desynchronised connection(s) answered in step", n);
    } else {
        sum = fg_asprintf("%u desynchronised connection(s), not all decided", n);
    }
    finish(o, worst, sum, &ev);
}

/* --- starttls-no-injected-commands --------------------------------------- */

/* CVE-2011-0411 (STARTTLS command injection; the reference's row X3): the
 * client sends "STARTTLS\r\n" and more plaintext in one segment; a server
 * that kept that plaintext in its input buffer runs it after the TLS
 * handshake, as if it had come inside TLS.  RFC 3207 §4.2 and the fix:
 * discard what was read along with the STARTTLS line.
 *
 * What the trace shows without decryption is the TLS record layer, whose
 * header is in clear (RFC 5246 §6.2.1, RFC 8446 §5.1: content type 20
 * change_cipher_spec, 21 alert, 22 handshake, 23 application data).  In
 * TLS 1.2 the handshake, Finished included, is type 22, so the first
 * application data record after it is the first SMTP octets either side
 * sends inside TLS.  The client (the injector) speaks first inside TLS: its
 * EHLO.  A server that sends application data before the client's first
 * has answered something it was never sent inside TLS: the injected
 * plaintext.  TLS 1.3 carries its handshake in application data records
 * (and session tickets after it), so this is only decidable there with the
 * session decrypted (the timeline does it when the run's key log is
 * there); the injector offers TLS 1.2 at most for that reason.  With the
 * decrypted session the rule also counts replies against commands inside
 * TLS, which catches a server that runs the injected command only when the
 * next command arrives.  This pass reads the capture itself (the timeline
 * stops at the TLS boundary unless it can decrypt) with the shared SMTP
 * parser to find the boundary in each direction. */

#define X3_TEXT 96
#define X3_HELLO 512

struct x3_dir {
    int on;   /* past the boundary: C2S after the STARTTLS line, S2C after the 220 */
    int mode; /* 0 text (before the first record), 1 TLS records, 2 not TLS */
    int bol;
    uint64_t text_octets, text_frame;
    char text[X3_TEXT];
    size_t text_len;
    uint8_t hdr[5];
    size_t hdr_len;
    uint32_t left;
    uint64_t nrec;
    uint64_t bad_frame;
};

struct x3_conn {
    struct x3_conn *next;
    unsigned id;
    struct fg_smtp_parser p;
    uint64_t off[2]; /* stream offset of the next octet per direction */
    uint64_t frame;  /* frame of the octets being fed */
    int offered;     /* STARTTLS in an EHLO reply */
    uint64_t ehlo_frame;
    int starttls; /* STARTTLS sent */
    uint64_t starttls_off, starttls_frame;
    int reply_code; /* the reply to STARTTLS */
    uint64_t reply_frame;
    int tls; /* 220 seen: S2C is TLS after s2c_off */
    uint64_t s2c_off;
    int gap;
    struct x3_dir d[2];
    /* the first S2C handshake record's start (the ServerHello) */
    uint8_t hello[X3_HELLO];
    size_t hello_len;
    /* record-level milestones (frames; 0 none) */
    uint64_t ccs[2], s2c_fin, alert, c2s_app;
    enum fg_dir alert_dir;
    uint64_t early_app, early_app_n; /* S2C application data before c2s_app */
    uint64_t late_app;               /* S2C application data after it */
};

struct x3_pass {
    int port;
    struct x3_conn *conns, **tail;
};

static int x3_parser_cb(void *ud, const struct fg_smtp_event *ev)
{
    struct x3_conn *x = ud;
    if (ev->type == FG_SMTP_EV_COMMAND && ev->verb == FG_VERB_STARTTLS && !x->tls) {
        /* The last STARTTLS before TLS is the one that counts. */
        x->starttls = 1;
        x->starttls_off = ev->stream_off;
        x->starttls_frame = x->frame;
        x->reply_code = 0;
        memset(&x->d[FG_C2S], 0, sizeof x->d[FG_C2S]);
        x->d[FG_C2S].on = 1;
        x->d[FG_C2S].bol = 1;
    } else if (ev->type == FG_SMTP_EV_REPLY && ev->answers == FG_ANS_COMMAND) {
        if (ev->answers_verb == FG_VERB_STARTTLS) {
            x->reply_code = ev->code;
            x->reply_frame = x->frame;
        } else if (ev->answers_verb == FG_VERB_EHLO && ev->code / 100 == 2) {
            /* RFC 5321 §4.1.1.1: a keyword per line after the first. */
            const char *t = ev->text, *end = ev->text + ev->text_len;
            x->ehlo_frame = x->frame;
            for (unsigned line = 0; t < end; line++) {
                const char *nl = memchr(t, '\n', (size_t)(end - t));
                const char *le = nl ? nl : end;
                if (line && le - t >= 12 && strncasecmp(t + 4, "STARTTLS", 8) == 0 &&
                    (t + 12 == le || t[12] == '\r' || t[12] == ' '))
                    x->offered = 1;
                t = nl ? nl + 1 : end;
            }
        }
    } else if (ev->type == FG_SMTP_EV_TLS_START) {
        x->tls = 1;
        x->s2c_off = ev->stream_off;
        x->d[FG_S2C].on = 1;
        x->d[FG_S2C].bol = 1;
    }
    return 0;
}

/* One complete record header of direction dir. */
static void x3_record(struct x3_conn *x, enum fg_dir dir, uint8_t type)
{
    uint64_t f = x->frame;
    struct x3_dir *d = &x->d[dir];
    d->nrec++;
    int done = x->ccs[FG_C2S] && x->s2c_fin;
    switch (type) {
    case 20: /* change_cipher_spec */
        if (!x->ccs[dir])
            x->ccs[dir] = f;
        break;
    case 21: /* alert: before the handshake is done, it failed */
        if (!done && !x->alert) {
            x->alert = f;
            x->alert_dir = dir;
        }
        break;
    case 22: /* handshake; after the server's CCS, its Finished */
        if (dir == FG_S2C && x->ccs[FG_S2C] && !x->s2c_fin)
            x->s2c_fin = f;
        break;
    case 23: /* application data */
        if (dir == FG_C2S) {
            if (!x->c2s_app)
                x->c2s_app = f;
        } else if (!x->c2s_app) {
            if (!x->early_app)
                x->early_app = f;
            x->early_app_n++;
        } else if (!x->late_app) {
            x->late_app = f;
        }
        break;
    }
}

/* x3_scan - octets of direction dir past its boundary: text first (the
 * injected plaintext, or a reply in clear), then TLS records. */
static void x3_scan(struct x3_conn *x, enum fg_dir dir, const uint8_t *p, size_t n)
{
    struct x3_dir *d = &x->d[dir];
    size_t i = 0;
    while (i < n && d->mode != 2) {
        if (d->mode == 0) {
            uint8_t b = p[i];
            if (d->bol && b >= 20 && b <= 23) {
                d->mode = 1;
                continue;
            }
            if (!d->text_octets)
                d->text_frame = x->frame;
            d->text_octets++;
            if (d->text_len < X3_TEXT - 1)
                d->text[d->text_len++] = (char)b;
            d->bol = b == '\n';
            i++;
            continue;
        }
        if (d->hdr_len < 5) {
            d->hdr[d->hdr_len++] = p[i++];
            if (d->hdr_len < 5)
                continue;
            uint32_t len = (uint32_t)d->hdr[3] << 8 | d->hdr[4];
            /* RFC 8446 §5.1/§5.2: at most 2^14 + 256 octets; RFC 5246
             * §6.2.3: 2^14 + 2048. */
            if (d->hdr[0] < 20 || d->hdr[0] > 23 || d->hdr[1] != 3 || len > 18432) {
                d->mode = 2;
                d->bad_frame = x->frame;
                return;
            }
            x3_record(x, dir, d->hdr[0]);
            d->left = len;
            if (len == 0)
                d->hdr_len = 0;
            continue;
        }
        size_t take = d->left < n - i ? d->left : n - i;
        if (dir == FG_S2C && d->nrec == 1 && d->hdr[0] == 22 && x->hello_len < X3_HELLO) {
            size_t k = X3_HELLO - x->hello_len < take ? X3_HELLO - x->hello_len : take;
            memcpy(x->hello + x->hello_len, p + i, k);
            x->hello_len += k;
        }
        i += take;
        d->left -= (uint32_t)take;
        if (d->left == 0)
            d->hdr_len = 0;
    }
}

static void x3_open(void *ud, struct fg_trace_conn *c)
{
    struct x3_pass *ps = ud;
    c->user = NULL;
    if (c->server_port != ps->port)
        return;
    struct x3_conn *x = fg_calloc(1, sizeof *x);
    x->id = c->id;
    fg_smtp_parser_init(&x->p, x3_parser_cb, x);
    *ps->tail = x;
    ps->tail = &x->next;
    c->user = x;
}

static void x3_data(void *ud, struct fg_trace_conn *c, enum fg_dir dir, const uint8_t *buf,
                    size_t len, uint64_t frame, uint64_t us)
{
    (void)ud;
    (void)us;
    struct x3_conn *x = c->user;
    if (!x)
        return;
    x->frame = frame;
    uint64_t base = x->off[dir];
    x->off[dir] += len;
    if (!x->tls)
        fg_smtp_parser_feed(&x->p, dir, (const char *)buf, len);
    /* The boundary may fall inside this chunk (set by the parser just now). */
    int on = x->d[dir].on;
    uint64_t from = dir == FG_C2S ? x->starttls_off : x->s2c_off;
    if (!on || from >= base + len)
        return;
    size_t skip = from > base ? (size_t)(from - base) : 0;
    x3_scan(x, dir, buf + skip, len - skip);
}

static void x3_gap(void *ud, struct fg_trace_conn *c, enum fg_dir dir, uint64_t missing,
                   uint64_t frame, uint64_t us)
{
    (void)ud;
    (void)dir;
    (void)missing;
    (void)frame;
    (void)us;
    struct x3_conn *x = c->user;
    if (x && x->starttls)
        x->gap = 1; /* record framing after this is not known */
}

/* The negotiated version from the ServerHello (RFC 8446 §4.1.3: the
 * supported_versions extension, 43, holds it; else legacy_version, RFC 5246
 * §7.4.1.3); 0 if the message is not there. */
static unsigned x3_version(const uint8_t *h, size_t n)
{
    if (n < 4 + 2 + 32 + 1 || h[0] != 2)
        return 0;
    size_t p = 4;
    unsigned legacy = (unsigned)h[p] << 8 | h[p + 1];
    p += 2 + 32;
    p += 1 + (size_t)h[p]; /* session id */
    p += 2 + 1;            /* cipher suite, compression */
    if (p + 2 > n)
        return legacy;
    size_t end = p + 2 + ((size_t)h[p] << 8 | h[p + 1]);
    p += 2;
    while (p + 4 <= n && p + 4 <= end) {
        unsigned type = (unsigned)h[p] << 8 | h[p + 1];
        size_t el = (size_t)h[p + 2] << 8 | h[p + 3];
        if (type == 43 && el == 2 && p + 6 <= n)
            return (unsigned)h[p + 4] << 8 | h[p + 5];
        p += 4 + el;
    }
    return legacy;
}

/* Printable text for evidence: CR LF as \r\n, others as \xHH. */
static const char *x3_show(const char *t, size_t n, char *buf, size_t cap)
{
    return fg_smuggle_describe(t, n, buf, cap);
}

/* x3_decrypted - with the session decrypted by the timeline: replies
 * inside TLS before the client's first command there, or more replies
 * than commands.  Returns a verdict + 1, or 0 when there is nothing to
 * add. */
static int x3_decrypted(const struct fg_tl_conn *c, struct fg_strbuf *ev, struct fg_outcome *o)
{
    if (!c || c->tls_state != FG_TL_TLS_DECRYPTED)
        return 0;
    long t = fg_tl_conn_first(c, 0, FG_TL_TLS, -1);
    if (t < 0)
        return 0;
    long first_cmd = fg_tl_conn_first(c, (size_t)t + 1, FG_TL_COMMAND, FG_C2S);
    unsigned ncmd = 0, nrep = 0;
    const struct fg_tl_event *early = NULL, *extra = NULL;
    for (size_t i = (size_t)t + 1; i < c->nev; i++) {
        const struct fg_tl_event *x = &c->ev[i];
        if (x->kind == FG_TL_COMMAND && x->dir == FG_C2S)
            ncmd++;
        if (x->kind != FG_TL_REPLY || x->dir != FG_S2C)
            continue;
        if (first_cmd < 0 || (long)i < first_cmd) {
            if (!early)
                early = x;
            continue;
        }
        nrep++;
        /* The parser pairs replies with what they answer in order (RFC
         * 2920 §3.1): one more reply than there was to answer is left
         * over at the end, answering nothing.  A 421 may come unasked
         * (RFC 5321 §3.8). */
        if (!extra &&
            (x->answers == FG_ANS_GREETING || (x->answers == FG_ANS_UNSOLICITED && x->code != 421)))
            extra = x;
    }
    const struct fg_tl_event *bad = early ? early : extra;
    if (!bad) {
        fg_strbuf_printf(ev,
                         "; decrypted: %u command(s) and %u reply(ies) inside TLS, each reply "
                         "answering one of them, none before the client's first command",
                         ncmd, nrep);
        return FG_V_PASS + 1;
    }
    const char *txt = bad->text ? bad->text : "";
    const char *nl = strstr(txt, "\r\n");
    int len = nl ? (int)(nl - txt) : (int)strlen(txt);
    if (early)
        fg_strbuf_printf(
            ev,
            "\n  FAIL (decrypted): the reply \"%.*s\" (frame %llu) came inside TLS before the "
            "client's first command there",
            len > 80 ? 80 : len, txt, (unsigned long long)bad->frame);
    else
        fg_strbuf_printf(
            ev,
            "\n  FAIL (decrypted): a reply inside TLS answers none of the client's %u "
            "command(s) there (%u replies); the extra reply \"%.*s\" (frame %llu) answers "
            "the injected plaintext",
            ncmd, nrep, len > 80 ? 80 : len, txt, (unsigned long long)bad->frame);
    fg_outcome_frame(o, bad->frame);
    return FG_V_FAIL + 1;
}

/* One probing connection: STARTTLS with plaintext after it. */
static enum fg_verdict x3_judge(const struct x3_conn *x, const struct fg_tl_conn *tc,
                                struct fg_strbuf *ev, struct fg_outcome *o)
{
    char shown[X3_TEXT * 4 + 8];
    const struct x3_dir *cd = &x->d[FG_C2S], *sd = &x->d[FG_S2C];
    fg_strbuf_printf(
        ev,
        "%sinbound connection #%u: STARTTLS at frame %llu with %llu plaintext octet(s) "
        "after it (\"%s\"%s)",
        ev->len ? "\n" : "", x->id, (unsigned long long)x->starttls_frame,
        (unsigned long long)cd->text_octets, x3_show(cd->text, cd->text_len, shown, sizeof shown),
        cd->text_octets > cd->text_len ? "..." : "");
    fg_outcome_frame(o, x->starttls_frame);
    if (x->reply_code != 220) {
        if (x->reply_code)
            fg_strbuf_printf(ev, "; STARTTLS answered %d (frame %llu): no TLS, nothing to judge",
                             x->reply_code, (unsigned long long)x->reply_frame);
        else
            fg_strbuf_printf(ev, "; no reply to STARTTLS in the trace: nothing to judge");
        return FG_V_INCONC;
    }
    fg_strbuf_printf(ev, "; 220 at frame %llu", (unsigned long long)x->reply_frame);
    if (sd->text_octets) {
        fg_strbuf_printf(
            ev,
            "\n  FAIL: after its 220 the gateway sent %llu octet(s) in clear (frame %llu: "
            "\"%s\"): it answered the plaintext sent after STARTTLS instead of discarding "
            "it (RFC 3207 §4.2, CVE-2011-0411)",
            (unsigned long long)sd->text_octets, (unsigned long long)sd->text_frame,
            x3_show(sd->text, sd->text_len, shown, sizeof shown));
        fg_outcome_frame(o, sd->text_frame);
        return FG_V_FAIL;
    }
    int dec = x3_decrypted(tc, ev, o);
    if (dec == FG_V_FAIL + 1)
        return FG_V_FAIL;
    if (x->gap) {
        fg_strbuf_printf(ev,
                         "; a gap in the capture after STARTTLS: record framing lost, undecided");
        return dec ? (enum fg_verdict)(dec - 1) : FG_V_INCONC;
    }
    if (sd->mode == 2 || cd->mode == 2) {
        fg_strbuf_printf(ev, "; octets that are not TLS records at frame %llu: undecided",
                         (unsigned long long)(sd->mode == 2 ? sd->bad_frame : cd->bad_frame));
        return dec ? (enum fg_verdict)(dec - 1) : FG_V_INCONC;
    }
    unsigned ver = x3_version(x->hello, x->hello_len);
    if (!ver) {
        fg_strbuf_printf(ev, "; no ServerHello: the TLS handshake did not complete%s",
                         x->alert ? " (alert)" : "");
        return FG_V_INCONC;
    }
    if (ver >= 0x0304) {
        fg_strbuf_printf(
            ev,
            "; TLS 1.3: its handshake and session tickets travel as application data "
            "records, so who spoke first inside TLS is not visible without decryption%s",
            dec ? "" : " (no key log for this session): undecided");
        return dec ? (enum fg_verdict)(dec - 1) : FG_V_INCONC;
    }
    if (x->alert || !x->ccs[FG_C2S] || !x->ccs[FG_S2C] || !x->s2c_fin) {
        if (x->alert)
            fg_strbuf_printf(
                ev, "; the TLS handshake failed (alert from the %s at frame %llu): undecided",
                x->alert_dir == FG_C2S ? "client" : "gateway", (unsigned long long)x->alert);
        else
            fg_strbuf_printf(ev, "; the TLS handshake did not complete in the trace: undecided");
        return FG_V_INCONC;
    }
    fg_strbuf_printf(ev, "; TLS 1.%u handshake done (gateway's Finished at frame %llu)",
                     ver - 0x0301, (unsigned long long)x->s2c_fin);
    if (x->early_app) {
        if (x->c2s_app)
            fg_strbuf_printf(
                ev,
                "\n  FAIL: the gateway sent %llu application data record(s) (first at frame "
                "%llu) before the client's first (frame %llu, its EHLO): the gateway "
                "answered plaintext sent after STARTTLS (CVE-2011-0411)",
                (unsigned long long)x->early_app_n, (unsigned long long)x->early_app,
                (unsigned long long)x->c2s_app);
        else
            fg_strbuf_printf(
                ev,
                "\n  FAIL: the gateway sent %llu application data record(s) (first at frame "
                "%llu) before the client sent any inside TLS: the gateway answered "
                "plaintext sent after STARTTLS (CVE-2011-0411)",
                (unsigned long long)x->early_app_n, (unsigned long long)x->early_app);
        fg_outcome_frame(o, x->early_app);
        if (x->c2s_app)
            fg_outcome_frame(o, x->c2s_app);
        return FG_V_FAIL;
    }
    if (!x->c2s_app) {
        fg_strbuf_printf(ev, "; the client sent no application data inside TLS: undecided");
        return FG_V_INCONC;
    }
    if (!x->late_app) {
        fg_strbuf_printf(ev,
                         "; the client's first application data at frame %llu got no answer in the "
                         "trace: undecided",
                         (unsigned long long)x->c2s_app);
        return FG_V_INCONC;
    }
    fg_strbuf_printf(ev,
                     "; the gateway's first application data (frame %llu) came after the client's "
                     "(frame %llu, its EHLO): the plaintext was not answered",
                     (unsigned long long)x->late_app, (unsigned long long)x->c2s_app);
    return dec ? (enum fg_verdict)(dec - 1) : FG_V_PASS;
}

static void eval_starttls_injection(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                                    uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e;
    (void)limit_ms;
    struct fg_strbuf ev = {0};
    if (!ctx->pcap) {
        finish(o, FG_V_ERROR, fg_strdup("no capture to read the TLS records from"), &ev);
        return;
    }
    struct x3_pass ps = {.port = ctx->meta->gateway_port};
    ps.tail = &ps.conns;
    struct fg_trace_cbs cbs = {.on_open = x3_open, .on_data = x3_data, .on_gap = x3_gap};
    char err[FG_ERRBUF_SIZE] = "";
    int rc = fg_trace_read(ctx->pcap, &cbs, &ps, NULL, err, sizeof err);
    if (rc < 0) {
        struct x3_conn *n;
        for (struct x3_conn *x = ps.conns; x; x = n) {
            n = x->next;
            free(x);
        }
        finish(o, FG_V_ERROR, fg_asprintf("%s: %s", ctx->pcap, err[0] ? err : fg_strerror(rc)),
               &ev);
        return;
    }
    enum fg_verdict worst = FG_V_PASS;
    unsigned n = 0, nfail = 0, not_offered = 0, asked = 0;
    uint64_t no_frame = 0;
    unsigned no_conn = 0;
    for (struct x3_conn *x = ps.conns; x; x = x->next) {
        if (!x->starttls || !x->d[FG_C2S].text_octets) {
            if (x->ehlo_frame && !x->offered && !x->starttls) {
                if (!not_offered++) {
                    no_frame = x->ehlo_frame;
                    no_conn = x->id;
                }
            }
            if (x->starttls)
                asked++;
            continue;
        }
        const struct fg_tl_conn *tc = NULL;
        for (size_t i = 0; i < ctx->tl->nconn && !tc; i++)
            if (ctx->tl->conn[i].id == x->id)
                tc = &ctx->tl->conn[i];
        enum fg_verdict v = x3_judge(x, tc, &ev, o);
        if (v == FG_V_FAIL) {
            nfail++;
            if (!o->conn)
                o->conn = x->id;
        }
        worst = fg_verdict_worst(worst, v);
        n++;
    }
    char *sum;
    if (!n) {
        worst = FG_V_INCONC;
        if (not_offered) {
            /* STARTTLS is optional (RFC 3207): the case does not apply. */
            worst = FG_V_SKIP;
            sum = fg_strdup("does not apply: the gateway does not offer STARTTLS");
            fg_strbuf_printf(
                &ev,
                "inbound connection #%u: the EHLO reply (frame %llu) does not offer STARTTLS "
                "(%u such connection(s)): no STARTTLS to inject after, nothing to judge",
                no_conn, (unsigned long long)no_frame, not_offered);
        } else if (asked) {
            sum = fg_strdup("not exercised: STARTTLS was sent with nothing after it");
        } else {
            sum = fg_strdup("not exercised: no STARTTLS with plaintext after it on the inbound "
                            "leg (a message with `starttls_inject`)");
        }
    } else if (worst == FG_V_FAIL) {
        sum = fg_asprintf("the gateway answered plaintext sent after STARTTLS (CVE-2011-0411) on "
                          "%u of %u connection(s)",
                          nfail, n);
    } else if (worst == FG_V_PASS) {
        sum = fg_asprintf("plaintext sent after STARTTLS was not run (%u connection(s))", n);
    } else {
        sum = fg_asprintf("STARTTLS injection on %u connection(s), not decided (see evidence)", n);
    }
    struct x3_conn *nx;
    for (struct x3_conn *x = ps.conns; x; x = nx) {
        nx = x->next;
        free(x);
    }
    finish(o, worst, sum, &ev);
}
