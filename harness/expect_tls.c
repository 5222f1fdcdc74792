/* expect_tls.c - rules on the SMTP session inside STARTTLS, read from the
 * trace with the run's TLS key log (the timeline decrypts it, faultgate/
 * tls_decrypt.h):
 *
 *   starttls-fresh-session   the gateway, as a client on the outbound leg,
 *                            starts TLS right after the 220 to STARTTLS
 *                            (nothing pipelined behind STARTTLS, no
 *                            plaintext before the handshake: RFC 3207 §4),
 *                            and inside TLS starts over: EHLO (or HELO)
 *                            first, answered before anything else is sent,
 *                            and no mail transaction before it (§4.2: the
 *                            session is reset and what the server said
 *                            before TLS is forgotten; RFC 5321 §4.1.4)
 *
 *   tls-policy-honoured      the gateway, as a client on the outbound leg,
 *                            acts on a stripped STARTTLS (an EHLO reply
 *                            without it), a refused one (454) or a failed
 *                            handshake as its declared TLS policy says
 *                            (profile `tls_policy:`, kept in the meta):
 *                            mandatory never sends a mail transaction in
 *                            clear (RFC 3207 §6; RFC 8461 §5; RFC 7672
 *                            §2.2), opportunistic delivers anyway (RFC
 *                            3207 §4, §4.1; RFC 7435 §3)
 *
 * Registered in expect.h's FG_EXPECT_TABLES as fg_expect_tls_rules.
 * Per connection to proxy_port that used STARTTLS: bad at the first
 * finding; ok when a command was read inside TLS and nothing was found;
 * not concerned when no STARTTLS took effect or nothing was sent inside
 * TLS (a refused or killed handshake); undecided when the inside could not
 * be read (no key log, a missing secret, an unknown suite, a failed tag,
 * a gap), with the reason and the connection in the evidence.  Verdict:
 * any bad -> fail; else any undecided -> inconc; else any ok -> pass;
 * else inconc (not exercised).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/util.h"

void fg_conn_tally_add(struct fg_conn_tally *t, const struct fg_tl_conn *c, enum fg_conn_res r,
                       const char *why, struct fg_outcome *o)
{
    static const char *const tag[] = {"not concerned", "ok", "FAILS", "undecided"};
    t->n[r]++;
    if (r == FG_CONN_NA && c->tls_state == FG_TL_TLS_NONE)
        return;
    fg_strbuf_printf(&t->ev, "conn #%u %s -> %s: %s: %s\n", c->id, c->client, c->server, tag[r],
                     why);
    if (r == FG_CONN_BAD && !t->first_bad[0]) {
        snprintf(t->first_bad, sizeof t->first_bad, "conn #%u: %s", c->id, why);
        o->conn = c->id;
    } else if (r == FG_CONN_UNSURE && !t->first_unsure[0]) {
        snprintf(t->first_unsure, sizeof t->first_unsure, "conn #%u: %s", c->id, why);
        if (!o->conn)
            o->conn = c->id;
    }
}

int fg_conn_tally_fold(const struct fg_conn_tally *t, struct fg_outcome *o)
{
    if (t->n[FG_CONN_BAD]) {
        o->verdict = FG_V_FAIL;
        o->summary = fg_strdup(t->first_bad);
    } else if (t->n[FG_CONN_UNSURE]) {
        o->verdict = FG_V_INCONC;
        o->summary = fg_strdup(t->first_unsure);
    } else {
        return 0;
    }
    return 1;
}

static void eval_fresh(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o);
static void eval_policy(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o);

const struct fg_expect_rule fg_expect_tls_rules[] = {
    {"starttls-fresh-session",
     "RFC 3207 §4 (MUST: TLS before any other command), §4.2 (MUST: the session is reset and "
     "earlier knowledge discarded; SHOULD: EHLO first); RFC 5321 §4.1.4 (MUST: EHLO or HELO "
     "before a mail transaction)",
     0, 0, eval_fresh},
    {"tls-policy-honoured",
     "RFC 3207 §4 (after a 454 the client decides whether to continue), §4.1 (a failure before "
     "the handshake ends the connection), §6 (a client that requires TLS does not "
     "deliver in clear); RFC 8461 §5 (MTA-STS enforce: MUST NOT deliver without TLS); RFC 7672 "
     "§2.2 (DANE: MUST NOT deliver without TLS); RFC 7435 §3 (opportunistic: cleartext when "
     "encryption is not possible)",
     FG_EXPECT_P_WITHIN, 0, eval_policy},
    {NULL, NULL, 0, 0, NULL},
};

static int is_hello(enum fg_smtp_verb v)
{
    return v == FG_VERB_EHLO || v == FG_VERB_HELO;
}

/* Commands that belong to a mail transaction (RFC 5321 §3.3). */
static int is_txn(enum fg_smtp_verb v)
{
    return v == FG_VERB_MAIL || v == FG_VERB_RCPT || v == FG_VERB_DATA || v == FG_VERB_BDAT;
}

static const char *tls_name(unsigned v)
{
    return v == 0x0304 ? "TLS 1.3" : v == 0x0303 ? "TLS 1.2" : "TLS";
}

/* One connection; why gets the finding (bad) or the reason (undecided). */
static enum fg_conn_res judge_conn(const struct fg_tl_conn *c, struct fg_outcome *o, char *why,
                                   size_t wlen)
{
    long t = fg_tl_conn_first(c, 0, FG_TL_TLS, -1);
    if (t < 0)
        return FG_CONN_NA;
    /* Before TLS: after STARTTLS, nothing until the handshake (§4). */
    long st = -1;
    for (long i = 0; i < t; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP) {
            snprintf(why, wlen, "a gap in the capture before TLS");
            return FG_CONN_UNSURE;
        }
        if (v->kind != FG_TL_COMMAND)
            continue;
        if (st >= 0) {
            fg_outcome_frame(o, c->ev[st].frame);
            fg_outcome_frame(o, v->frame);
            snprintf(why, wlen,
                     "\"%.40s\" sent after STARTTLS, before TLS started (RFC 3207 §4: TLS "
                     "before any other command; the CVE-2011-0411 class)",
                     v->text ? v->text : "?");
            return FG_CONN_BAD;
        }
        if (v->verb == FG_VERB_STARTTLS)
            st = i;
    }
    if (c->tls_skipped[FG_C2S]) {
        fg_outcome_frame(o, c->ev[t].frame);
        snprintf(why, wlen,
                 "%llu octets of plaintext sent after the 220 to STARTTLS, before the TLS "
                 "handshake (RFC 3207 §4)",
                 (unsigned long long)c->tls_skipped[FG_C2S]);
        return FG_CONN_BAD;
    }
    if (c->tls_state != FG_TL_TLS_DECRYPTED) {
        snprintf(why, wlen, "%s", c->tls_note ? c->tls_note : "the session inside TLS is not read");
        return FG_CONN_UNSURE;
    }
    /* Inside TLS: a fresh session (§4.2). */
    long hello = -1;  /* the EHLO/HELO inside TLS */
    int answered = 0; /* its reply was seen */
    int cmds = 0;
    for (size_t i = (size_t)t + 1; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP) {
            snprintf(why, wlen, "a gap in the capture inside TLS");
            return FG_CONN_UNSURE;
        }
        if (v->kind == FG_TL_REPLY && hello >= 0 && !answered && v->answers == FG_ANS_COMMAND &&
            is_hello(v->verb)) {
            answered = 1;
            if (v->code / 100 != 2)
                hello = -1, answered = 0; /* refused: the client must try again */
            continue;
        }
        if (v->kind != FG_TL_COMMAND)
            continue;
        cmds++;
        if (hello < 0 && is_hello(v->verb)) {
            hello = (long)i;
            continue;
        }
        if (hello >= 0 && !answered && v->verb != FG_VERB_QUIT) {
            fg_outcome_frame(o, c->ev[hello].frame);
            fg_outcome_frame(o, v->frame);
            snprintf(why, wlen,
                     "inside TLS, \"%.40s\" sent before the reply to the new %s (RFC 3207 §4.2: "
                     "what the server offered before TLS is forgotten)",
                     v->text ? v->text : "?", fg_smtp_verb_name(c->ev[hello].verb));
            return FG_CONN_BAD;
        }
        if (hello < 0 && is_txn(v->verb)) {
            fg_outcome_frame(o, c->ev[t].frame);
            fg_outcome_frame(o, v->frame);
            snprintf(why, wlen,
                     "inside TLS, \"%.40s\" sent before any EHLO (RFC 3207 §4.2: the session is "
                     "reset; RFC 5321 §4.1.4)",
                     v->text ? v->text : "?");
            return FG_CONN_BAD;
        }
    }
    if (!cmds) {
        snprintf(why, wlen, "%s", c->tls_note ? c->tls_note : "nothing sent inside TLS");
        return FG_CONN_NA;
    }
    snprintf(why, wlen, "%s, then a new %s (frame %llu), answered before anything else",
             tls_name(c->tls_version),
             hello >= 0 ? fg_smtp_verb_name(c->ev[hello].verb) : "session",
             hello >= 0 ? (unsigned long long)c->ev[hello].frame : 0ULL);
    if (hello >= 0)
        fg_outcome_frame(o, c->ev[hello].frame);
    return FG_CONN_OK;
}

static void eval_fresh(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e, (void)limit_ms;
    const struct fg_meta *m = ctx->meta;
    size_t n = fg_timeline_conns_to(ctx->tl, m->proxy_port, NULL, 0);
    struct fg_tl_conn **all = fg_calloc(n ? n : 1, sizeof *all);
    n = fg_timeline_conns_to(ctx->tl, m->proxy_port, all, n);
    struct fg_conn_tally t = {0};
    char why[320];
    for (size_t i = 0; i < n; i++)
        fg_conn_tally_add(&t, all[i], judge_conn(all[i], o, why, sizeof why), why, o);
    fg_strbuf_printf(&t.ev,
                     "%zu outbound connection%s (port %d): %zu ok, %zu failing, %zu undecided, %zu "
                     "without a session inside TLS",
                     n, n == 1 ? "" : "s", m->proxy_port, t.n[FG_CONN_OK], t.n[FG_CONN_BAD],
                     t.n[FG_CONN_UNSURE], t.n[FG_CONN_NA]);
    if (fg_conn_tally_fold(&t, o)) {
        /* a failing or undecided connection decided it */
    } else if (t.n[FG_CONN_OK]) {
        o->verdict = FG_V_PASS;
        o->summary = fg_asprintf("%zu outbound connection%s: TLS right after the 220, then a "
                                 "fresh session started with EHLO",
                                 t.n[FG_CONN_OK], t.n[FG_CONN_OK] == 1 ? "" : "s");
    } else {
        o->verdict = FG_V_INCONC;
        o->summary = fg_strdup("not exercised: no outbound connection sent anything inside TLS");
    }
    free(all);
    o->evidence = t.ev.s ? t.ev.s : fg_strdup(o->summary);
}

/* --- tls-policy-honoured ------------------------------------------------- */

/* What one outbound connection shows about STARTTLS and the mail. */
enum dg { DG_NONE, DG_STRIPPED, DG_REFUSED, DG_KILLED };

struct pconn {
    const struct fg_tl_conn *c;
    enum dg dg;        /* the first downgrade on it */
    uint64_t dg_frame; /* the EHLO reply, the refusal, the RST or FIN */
    uint64_t dg_us;
    int dg_code;         /* DG_REFUSED: the reply code */
    int tls_ok;          /* a TLS session got through its handshake (or is not read) */
    long plain_txn;      /* first transaction command in clear, -1 if none */
    long delivered;      /* reply event of the first message accepted (2xx), -1 */
    int delivered_plain; /* ... and that message went in clear */
};

/* Whether an EHLO reply (all its lines, CRLF between them) offers
 * STARTTLS: a keyword line "250-STARTTLS" or "250 STARTTLS" (RFC 5321
 * §4.1.1.1, RFC 3207 §4). */
static int offers_starttls(const char *text)
{
    for (const char *l = text; l && *l;) {
        const char *kw = l + (strlen(l) >= 4 ? 4 : strlen(l));
        size_t n = strcspn(kw, " \r\n");
        if (n == 8 && strncasecmp(kw, "STARTTLS", 8) == 0)
            return 1;
        const char *nl = strchr(l, '\n');
        l = nl ? nl + 1 : NULL;
    }
    return 0;
}

static void scan_conn(const struct fg_tl_conn *c, struct pconn *p)
{
    memset(p, 0, sizeof *p);
    p->c = c;
    p->plain_txn = p->delivered = -1;
    long t = fg_tl_conn_first(c, 0, FG_TL_TLS, -1);
    size_t end = t >= 0 ? (size_t)t : c->nev;
    for (size_t i = 0; i < end; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_COMMAND && is_txn(v->verb) && p->plain_txn < 0)
            p->plain_txn = (long)i;
        if (v->kind != FG_TL_REPLY || v->answers != FG_ANS_COMMAND || p->dg != DG_NONE)
            continue;
        if (v->verb == FG_VERB_EHLO && v->code / 100 == 2 && !offers_starttls(v->text)) {
            p->dg = DG_STRIPPED;
        } else if (v->verb == FG_VERB_STARTTLS && v->code != 220) {
            p->dg = DG_REFUSED;
            p->dg_code = v->code;
        } else {
            continue;
        }
        p->dg_frame = v->frame;
        p->dg_us = v->us;
    }
    if (t >= 0) {
        /* The handshake: done when something was read inside TLS, or the
         * decrypter saw it through (no note); failed when the decrypter
         * saw it end first, or, with TLS not read, the connection was
         * reset after the 220 (what a killed handshake looks like). */
        int inside = 0;
        long rst = -1, fin = -1;
        for (size_t i = (size_t)t + 1; i < c->nev; i++) {
            enum fg_tl_kind k = c->ev[i].kind;
            if (k == FG_TL_COMMAND || k == FG_TL_REPLY)
                inside = 1;
            else if (k == FG_TL_RST && rst < 0)
                rst = (long)i;
            else if (k == FG_TL_FIN && fin < 0)
                fin = (long)i;
        }
        int failed;
        if (inside)
            failed = 0;
        else if (c->tls_state == FG_TL_TLS_DECRYPTED)
            failed = c->tls_note != NULL; /* set only for a handshake cut short */
        else
            failed = rst >= 0;
        if (failed && p->dg == DG_NONE) {
            long at = rst >= 0 ? rst : fin >= 0 ? fin : t;
            p->dg = DG_KILLED;
            p->dg_frame = c->ev[at].frame;
            p->dg_us = c->ev[at].us;
        }
        p->tls_ok = !failed;
    }
    for (size_t m = 0; m < c->nmsg; m++) {
        const struct fg_tl_msg *g = &c->msg[m];
        if (!g->complete || g->reply_code / 100 != 2 || g->reply_event == FG_TL_NONE)
            continue;
        p->delivered = (long)g->reply_event;
        p->delivered_plain = t < 0 || g->data_event < (size_t)t;
        break;
    }
}

static const char *dg_text(const struct pconn *p, char *buf, size_t len)
{
    switch (p->dg) {
    case DG_STRIPPED:
        snprintf(buf, len, "STARTTLS not offered (EHLO reply, frame %llu)",
                 (unsigned long long)p->dg_frame);
        break;
    case DG_REFUSED:
        snprintf(buf, len, "STARTTLS refused with %d (frame %llu)", p->dg_code,
                 (unsigned long long)p->dg_frame);
        break;
    case DG_KILLED:
        snprintf(buf, len, "the TLS handshake failed after the 220 (%s, frame %llu)",
                 p->c->tls_state == FG_TL_TLS_DECRYPTED ? "incomplete in the trace"
                                                        : "connection reset",
                 (unsigned long long)p->dg_frame);
        break;
    default:
        snprintf(buf, len, "%s",
                 !p->c->tls                               ? "no STARTTLS exchange"
                 : p->c->tls_state == FG_TL_TLS_DECRYPTED ? "TLS"
                                                          : "TLS (not read)");
    }
    return buf;
}

static void eval_policy(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o)
{
    const struct fg_meta *m = ctx->meta;
    /* `within` is optional here (the dispatcher evaluates only required
     * ones): without it the whole capture counts. */
    if (e->within) {
        char err[FG_ERRBUF_SIZE];
        if (fg_within_eval_timeouts(e->within, m->timeouts, m->ntimeouts, &limit_ms, err,
                                    sizeof err, NULL) != 0) {
            o->verdict = FG_V_INCONC;
            o->summary = fg_asprintf("within \"%s\" cannot be evaluated against the run's "
                                     "timeouts: %s",
                                     e->within, err);
            o->evidence = fg_strdup(o->summary);
            return;
        }
    }
    size_t n = fg_timeline_conns_to(ctx->tl, m->proxy_port, NULL, 0);
    struct fg_tl_conn **all = fg_calloc(n ? n : 1, sizeof *all);
    n = fg_timeline_conns_to(ctx->tl, m->proxy_port, all, n);
    struct pconn *pc = fg_calloc(n ? n : 1, sizeof *pc);
    struct fg_strbuf ev = {0};
    const struct pconn *first_dg = NULL, *first_plain = NULL, *first_dlv = NULL;
    char b[160];
    for (size_t i = 0; i < n; i++) {
        struct pconn *p = &pc[i];
        scan_conn(all[i], p);
        fg_strbuf_printf(&ev, "conn #%u %s -> %s: %s", p->c->id, p->c->client, p->c->server,
                         dg_text(p, b, sizeof b));
        if (p->plain_txn >= 0)
            fg_strbuf_printf(&ev, "; \"%.40s\" in clear (frame %llu)",
                             p->c->ev[p->plain_txn].text ? p->c->ev[p->plain_txn].text : "?",
                             (unsigned long long)p->c->ev[p->plain_txn].frame);
        if (p->delivered >= 0)
            fg_strbuf_printf(&ev, "; message accepted%s (%d, frame %llu)",
                             p->delivered_plain ? " in clear" : " inside TLS",
                             p->c->ev[p->delivered].code,
                             (unsigned long long)p->c->ev[p->delivered].frame);
        fg_strbuf_printf(&ev, "\n");
        if (p->dg != DG_NONE && !first_dg)
            first_dg = p;
        if (p->plain_txn >= 0 && !first_plain)
            first_plain = p;
        /* Deliveries count from the first downgrade on (or the same
         * connection): the question is what the client did next. */
        if (p->delivered >= 0 && first_dg && !first_dlv)
            first_dlv = p;
    }
    const char *pol = fg_tls_policy_name(m->tls_policy);
    fg_strbuf_printf(&ev, "%zu outbound connection%s (port %d); declared TLS policy: %s", n,
                     n == 1 ? "" : "s", m->proxy_port, pol ? pol : "none declared");
    o->verdict = FG_V_INCONC;
    if (m->tls_policy == FG_TLS_POLICY_UNKNOWN) {
        o->summary = fg_strdup("the profile declares no TLS policy (tls_policy: none, "
                               "opportunistic or mandatory): nothing to judge against");
    } else if (m->tls_policy == FG_TLS_POLICY_NONE) {
        o->summary = fg_strdup("the profile declares tls_policy: none (the gateway does not use "
                               "STARTTLS): a stripped or refused STARTTLS changes nothing");
    } else if (m->tls_policy == FG_TLS_POLICY_MANDATORY && first_plain) {
        const struct fg_tl_event *v = &first_plain->c->ev[first_plain->plain_txn];
        o->verdict = FG_V_FAIL;
        o->conn = first_plain->c->id;
        if (first_dg)
            fg_outcome_frame(o, first_dg->dg_frame);
        fg_outcome_frame(o, v->frame);
        if (first_dg)
            o->summary = fg_asprintf("TLS is mandatory, yet conn #%u sent \"%.40s\" in clear "
                                     "(frame %llu) after conn #%u: %s; a client that requires "
                                     "TLS defers instead (RFC 3207 §6; RFC 8461 §5; RFC 7672 "
                                     "§2.2)",
                                     first_plain->c->id, v->text ? v->text : "?",
                                     (unsigned long long)v->frame, first_dg->c->id,
                                     dg_text(first_dg, b, sizeof b));
        else
            o->summary = fg_asprintf("TLS is mandatory, yet conn #%u sent \"%.40s\" in clear "
                                     "(frame %llu) without TLS (RFC 3207 §6; RFC 8461 §5; RFC "
                                     "7672 §2.2)",
                                     first_plain->c->id, v->text ? v->text : "?",
                                     (unsigned long long)v->frame);
    } else if (!first_dg) {
        o->summary = fg_strdup("not exercised: STARTTLS was never stripped, refused or cut "
                               "short on the outbound leg");
    } else if (m->tls_policy == FG_TLS_POLICY_MANDATORY) {
        o->verdict = FG_V_PASS;
        o->conn = first_dg->c->id;
        fg_outcome_frame(o, first_dg->dg_frame);
        o->summary =
            fg_asprintf("TLS is mandatory: after conn #%u: %s, no mail transaction in "
                        "clear on any of the %zu connection%s (the message deferred)",
                        first_dg->c->id, dg_text(first_dg, b, sizeof b), n, n == 1 ? "" : "s");
    } else {
        /* Opportunistic: the message still goes, in clear if need be, in
         * time (within, from the first downgrade). */
        uint64_t dlv_us = first_dlv ? first_dlv->c->ev[first_dlv->delivered].us : 0;
        int late = first_dlv && limit_ms && dlv_us > first_dg->dg_us &&
                   dlv_us - first_dg->dg_us > limit_ms * 1000;
        o->conn = first_dg->c->id;
        fg_outcome_frame(o, first_dg->dg_frame);
        char s1[32], s2[32];
        if (first_dlv && !late) {
            o->verdict = FG_V_PASS;
            fg_outcome_frame(o, first_dlv->c->ev[first_dlv->delivered].frame);
            o->summary = fg_asprintf(
                "opportunistic TLS: after conn #%u: %s, the message was accepted %s on conn #%u "
                "(frame %llu, %s s later)",
                first_dg->c->id, dg_text(first_dg, b, sizeof b),
                first_dlv->delivered_plain ? "in clear" : "inside TLS", first_dlv->c->id,
                (unsigned long long)first_dlv->c->ev[first_dlv->delivered].frame,
                fg_expect_secs(s1, sizeof s1,
                               dlv_us > first_dg->dg_us ? dlv_us - first_dg->dg_us : 0));
        } else if (first_dg->dg == DG_KILLED && m->nclients && !first_dlv) {
            /* A client run once per message has no queue to retry from:
             * its connection is gone, and RFC 3207 §4.1 asks nothing more. */
            o->summary = fg_asprintf("opportunistic TLS: after conn #%u: %s, the message was not "
                                     "delivered; a client run once per message cannot retry on a "
                                     "new connection",
                                     first_dg->c->id, dg_text(first_dg, b, sizeof b));
        } else {
            o->verdict = FG_V_FAIL;
            if (first_dlv)
                fg_outcome_frame(o, first_dlv->c->ev[first_dlv->delivered].frame);
            char late_s[96] = "never delivered";
            if (first_dlv)
                snprintf(late_s, sizeof late_s, "accepted only %s s later, beyond within (%s s)",
                         fg_expect_secs(s1, sizeof s1, dlv_us - first_dg->dg_us),
                         fg_expect_secs(s2, sizeof s2, limit_ms * 1000));
            o->summary = fg_asprintf("opportunistic TLS: after conn #%u: %s, the message was %s: "
                                     "opportunistic TLS falls back to cleartext (RFC 7435 §3; "
                                     "RFC 3207 §4: a 454 is no reason to give up)",
                                     first_dg->c->id, dg_text(first_dg, b, sizeof b), late_s);
        }
    }
    free(pc);
    free(all);
    o->evidence = ev.s ? ev.s : fg_strdup(o->summary);
}
