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

#include "faultgate/expect.h"
#include "faultgate/util.h"

static void eval_fresh(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o);

const struct fg_expect_rule fg_expect_tls_rules[] = {
    {"starttls-fresh-session",
     "RFC 3207 §4 (MUST: TLS before any other command), §4.2 (MUST: the session is reset and "
     "earlier knowledge discarded; SHOULD: EHLO first); RFC 5321 §4.1.4 (MUST: EHLO or HELO "
     "before a mail transaction)",
     0, 0, eval_fresh},
    {NULL, NULL, 0, 0, NULL},
};

enum cres { C_NA, C_OK, C_BAD, C_UNSURE };

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
static enum cres judge_conn(const struct fg_tl_conn *c, struct fg_outcome *o, char *why,
                            size_t wlen)
{
    long t = fg_tl_conn_first(c, 0, FG_TL_TLS, -1);
    if (t < 0)
        return C_NA;
    /* Before TLS: after STARTTLS, nothing until the handshake (§4). */
    long st = -1;
    for (long i = 0; i < t; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP) {
            snprintf(why, wlen, "a gap in the capture before TLS");
            return C_UNSURE;
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
            return C_BAD;
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
        return C_BAD;
    }
    if (c->tls_state != FG_TL_TLS_DECRYPTED) {
        snprintf(why, wlen, "%s", c->tls_note ? c->tls_note : "the session inside TLS is not read");
        return C_UNSURE;
    }
    /* Inside TLS: a fresh session (§4.2). */
    long hello = -1;  /* the EHLO/HELO inside TLS */
    int answered = 0; /* its reply was seen */
    int cmds = 0;
    for (size_t i = (size_t)t + 1; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP) {
            snprintf(why, wlen, "a gap in the capture inside TLS");
            return C_UNSURE;
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
            return C_BAD;
        }
        if (hello < 0 && is_txn(v->verb)) {
            fg_outcome_frame(o, c->ev[t].frame);
            fg_outcome_frame(o, v->frame);
            snprintf(why, wlen,
                     "inside TLS, \"%.40s\" sent before any EHLO (RFC 3207 §4.2: the session is "
                     "reset; RFC 5321 §4.1.4)",
                     v->text ? v->text : "?");
            return C_BAD;
        }
    }
    if (!cmds) {
        snprintf(why, wlen, "%s", c->tls_note ? c->tls_note : "nothing sent inside TLS");
        return C_NA;
    }
    snprintf(why, wlen, "%s, then a new %s (frame %llu), answered before anything else",
             tls_name(c->tls_version),
             hello >= 0 ? fg_smtp_verb_name(c->ev[hello].verb) : "session",
             hello >= 0 ? (unsigned long long)c->ev[hello].frame : 0ULL);
    if (hello >= 0)
        fg_outcome_frame(o, c->ev[hello].frame);
    return C_OK;
}

static void eval_fresh(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e, (void)limit_ms;
    const struct fg_meta *m = ctx->meta;
    size_t n = fg_timeline_conns_to(ctx->tl, m->proxy_port, NULL, 0);
    struct fg_tl_conn **all = fg_calloc(n ? n : 1, sizeof *all);
    n = fg_timeline_conns_to(ctx->tl, m->proxy_port, all, n);
    size_t cnt[4] = {0};
    struct fg_strbuf ev = {0};
    char why[320], first_bad[400] = "", first_unsure[400] = "";
    for (size_t i = 0; i < n; i++) {
        const struct fg_tl_conn *c = all[i];
        enum cres r = judge_conn(c, o, why, sizeof why);
        cnt[r]++;
        if (r == C_NA && c->tls_state == FG_TL_TLS_NONE)
            continue;
        static const char *const tag[] = {"not concerned", "ok", "FAILS", "undecided"};
        fg_strbuf_printf(&ev, "conn #%u %s -> %s: %s: %s\n", c->id, c->client, c->server, tag[r],
                         why);
        if (r == C_BAD && !first_bad[0]) {
            snprintf(first_bad, sizeof first_bad, "conn #%u: %s", c->id, why);
            o->conn = c->id;
        } else if (r == C_UNSURE && !first_unsure[0]) {
            snprintf(first_unsure, sizeof first_unsure, "conn #%u: %s", c->id, why);
            if (!o->conn)
                o->conn = c->id;
        }
    }
    fg_strbuf_printf(&ev,
                     "%zu outbound connection%s (port %d): %zu ok, %zu failing, %zu undecided, %zu "
                     "without a session inside TLS",
                     n, n == 1 ? "" : "s", m->proxy_port, cnt[C_OK], cnt[C_BAD], cnt[C_UNSURE],
                     cnt[C_NA]);
    if (cnt[C_BAD]) {
        o->verdict = FG_V_FAIL;
        o->summary = fg_strdup(first_bad);
    } else if (cnt[C_UNSURE]) {
        o->verdict = FG_V_INCONC;
        o->summary = fg_strdup(first_unsure);
    } else if (cnt[C_OK]) {
        o->verdict = FG_V_PASS;
        o->summary = fg_asprintf("%zu outbound connection%s: TLS right after the 220, then a "
                                 "fresh session started with EHLO",
                                 cnt[C_OK], cnt[C_OK] == 1 ? "" : "s");
    } else {
        o->verdict = FG_V_INCONC;
        o->summary = fg_strdup("not exercised: no outbound connection sent anything inside TLS");
    }
    free(all);
    o->evidence = ev.s ? ev.s : fg_strdup(o->summary);
}
