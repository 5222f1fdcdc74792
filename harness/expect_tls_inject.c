/* expect_tls_inject.c - STARTTLS response injection, client side (RFC 3207
 * §4.2; the CVE-2011-0411 class, as in Exim's CVE-2021-38371): the server
 * sends more octets after its 220 to STARTTLS, in plaintext (the fake
 * MTA's `starttls_inject`), and a client that keeps them in its read
 * buffer reads them as the first replies inside TLS:
 *
 *   starttls-no-response-injection   inside TLS, the gateway as a client
 *                                    waits for each real reply: no command
 *                                    before the reply to the new EHLO, no
 *                                    MAIL before that reply, and no command
 *                                    while an earlier one is unanswered
 *                                    unless the EHLO reply inside TLS
 *                                    offered PIPELINING (RFC 2920 §3.1)
 *
 * Registered in expect.h's FG_EXPECT_TABLES as fg_expect_tls_inject_rules.
 * Judged from the trace decrypted with the run's key log (faultgate/
 * timeline.h): the injected octets are the plaintext the server sent
 * between its 220 and its first TLS record (tls_skipped), the commands and
 * replies inside TLS are the decrypted session.  Per connection to
 * proxy_port that used STARTTLS: bad at the first finding; ok when a
 * command was read inside TLS and nothing was found; not concerned when no
 * STARTTLS took effect or nothing was sent inside TLS; undecided when the
 * inside could not be read (no key log and the like) or the capture has a
 * gap.  Verdict: any bad -> fail; else any undecided -> inconc; else pass
 * when an ok connection had octets injected after its 220, else inconc
 * (not exercised: a clean 220 proves nothing about the client's buffer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "faultgate/expect.h"
#include "faultgate/util.h"

static void eval_inject(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o);

const struct fg_expect_rule fg_expect_tls_inject_rules[] = {
    {"starttls-no-response-injection",
     "RFC 3207 §4.2 (MUST: knowledge obtained from the server before TLS is discarded); RFC 2920 "
     "§3.1 (MUST: no command before the reply to the previous one without PIPELINING); "
     "CVE-2011-0411 class (CVE-2021-38371)",
     0, 0, eval_inject},
    {NULL, NULL, 0, 0, NULL},
};

static int is_hello(enum fg_smtp_verb v)
{
    return v == FG_VERB_EHLO || v == FG_VERB_HELO;
}

/* An EHLO reply offers PIPELINING: a line "250-PIPELINING" or "250
 * PIPELINING" (keyword, then end or parameters; RFC 5321 §4.1.1.1). */
static int offers_pipelining(const char *text)
{
    static const char kw[] = "PIPELINING";
    const size_t kl = sizeof kw - 1;
    for (const char *l = text; l && *l;) {
        const char *eol = strstr(l, "\r\n");
        size_t n = eol ? (size_t)(eol - l) : strlen(l);
        if (n >= 4 + kl && strncasecmp(l + 4, kw, kl) == 0 && (n == 4 + kl || l[4 + kl] == ' '))
            return 1;
        l = eol ? eol + 2 : NULL;
    }
    return 0;
}

/* Frame of the reply that took TLS into effect (the 220 to STARTTLS): the
 * injected octets rode in its segment or right behind it. */
static uint64_t frame_of_220(const struct fg_tl_conn *c, long t)
{
    for (long i = t - 1; i >= 0; i--)
        if (c->ev[i].kind == FG_TL_REPLY)
            return c->ev[i].frame;
    return c->ev[t].frame;
}

/* The first reply after event i (the real one the client did not wait
 * for), or -1. */
static long next_reply(const struct fg_tl_conn *c, size_t i)
{
    for (size_t k = i + 1; k < c->nev; k++)
        if (c->ev[k].kind == FG_TL_REPLY)
            return (long)k;
    return -1;
}

static void injected_note(const struct fg_tl_conn *c, uint64_t f220, char *buf, size_t len)
{
    if (c->tls_skipped[FG_S2C])
        snprintf(buf, len,
                 "; the server had sent %llu octets in plaintext after its 220 to STARTTLS "
                 "(frame %llu), which RFC 3207 §4.2 says to discard",
                 (unsigned long long)c->tls_skipped[FG_S2C], (unsigned long long)f220);
    else
        buf[0] = '\0';
}

/* The premature command at index i: evidence frames and the finding. */
static enum fg_conn_res bad(const struct fg_tl_conn *c, struct fg_outcome *o, uint64_t f220,
                            size_t i, const char *what, char *why, size_t wlen)
{
    char inj[200];
    injected_note(c, f220, inj, sizeof inj);
    if (c->tls_skipped[FG_S2C])
        fg_outcome_frame(o, f220);
    fg_outcome_frame(o, c->ev[i].frame);
    long r = next_reply(c, i);
    char real[64] = "";
    if (r >= 0) {
        fg_outcome_frame(o, c->ev[r].frame);
        snprintf(real, sizeof real, " (the real reply came in frame %llu)",
                 (unsigned long long)c->ev[r].frame);
    }
    snprintf(why, wlen, "inside TLS, \"%.40s\" (frame %llu) sent %s%s%s",
             c->ev[i].text ? c->ev[i].text : "?", (unsigned long long)c->ev[i].frame, what, real,
             inj);
    return FG_CONN_BAD;
}

/* One connection; why gets the finding (bad), the reason (undecided) or
 * what was seen (ok). */
static enum fg_conn_res judge_conn(const struct fg_tl_conn *c, struct fg_outcome *o, int *injected,
                                   char *why, size_t wlen)
{
    long t = fg_tl_conn_first(c, 0, FG_TL_TLS, -1);
    if (t < 0)
        return FG_CONN_NA;
    uint64_t f220 = frame_of_220(c, t);
    *injected = c->tls_skipped[FG_S2C] > 0;
    if (c->tls_state != FG_TL_TLS_DECRYPTED) {
        snprintf(why, wlen, "%s",
                 c->tls_note ? c->tls_note
                             : "no key log: the session inside TLS is not read (give the run's "
                               "<id>.keys)");
        return FG_CONN_UNSURE;
    }
    /* Commands (and ends of data) awaiting their reply, in order: replies
     * come in the order of what they answer (RFC 5321 §4.2, RFC 2920 §3.1). */
    size_t *await = NULL, nawait = 0, capawait = 0, answered = 0;
    long hello = -1;    /* the EHLO/HELO inside TLS */
    int hello_done = 0; /* and its positive reply seen */
    int pipelining = 0; /* that reply offered PIPELINING */
    int cmds = 0;
    enum fg_conn_res res = FG_CONN_OK;
    for (size_t i = (size_t)t + 1; i < c->nev && res == FG_CONN_OK; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP) {
            snprintf(why, wlen, "a gap in the capture inside TLS");
            res = FG_CONN_UNSURE;
        } else if (v->kind == FG_TL_REPLY) {
            if (v->answers == FG_ANS_GREETING || v->answers == FG_ANS_UNSOLICITED ||
                answered >= nawait)
                continue;
            size_t k = await[answered++];
            if ((long)k == hello && !hello_done) {
                if (v->code / 100 == 2) {
                    hello_done = 1;
                    pipelining =
                        c->ev[k].verb == FG_VERB_EHLO && v->text && offers_pipelining(v->text);
                } else {
                    hello = -1; /* refused: the client may try again */
                }
            }
        } else if (v->kind == FG_TL_END_OF_DATA) {
            fg_array_reserve((void **)&await, &capawait, nawait + 1, sizeof *await);
            await[nawait++] = i;
        } else if (v->kind == FG_TL_COMMAND) {
            cmds++;
            int early = answered < nawait;
            char what[200];
            /* QUIT is how a client that gives up ends: not a reply taken
             * from the stale buffer. */
            if (early && v->verb != FG_VERB_QUIT) {
                const struct fg_tl_event *w = &c->ev[await[answered]];
                if (hello >= 0 && !hello_done) {
                    snprintf(what, sizeof what, "before the reply to the new %s (frame %llu)",
                             fg_smtp_verb_name(c->ev[hello].verb),
                             (unsigned long long)c->ev[hello].frame);
                    res = bad(c, o, f220, i, what, why, wlen);
                } else if (!pipelining) {
                    snprintf(what, sizeof what,
                             "before the reply to \"%.30s\" (frame %llu), and the EHLO reply "
                             "inside TLS did not offer PIPELINING",
                             w->kind == FG_TL_END_OF_DATA ? "<CRLF>.<CRLF>"
                             : w->text                    ? w->text
                                                          : "?",
                             (unsigned long long)w->frame);
                    res = bad(c, o, f220, i, what, why, wlen);
                }
            }
            if (res == FG_CONN_OK && v->verb == FG_VERB_MAIL && !hello_done) {
                snprintf(what, sizeof what, "before any reply to an EHLO inside TLS");
                res = bad(c, o, f220, i, what, why, wlen);
            }
            if (hello < 0 && is_hello(v->verb)) {
                hello = (long)i;
                hello_done = 0;
            }
            fg_array_reserve((void **)&await, &capawait, nawait + 1, sizeof *await);
            await[nawait++] = i;
        }
    }
    free(await);
    if (res != FG_CONN_OK)
        return res;
    if (!cmds) {
        snprintf(why, wlen, "%s", c->tls_note ? c->tls_note : "nothing sent inside TLS");
        return FG_CONN_NA;
    }
    char inj[200];
    injected_note(c, f220, inj, sizeof inj);
    snprintf(why, wlen, "every command inside TLS waited for its reply%s%s",
             pipelining ? " or was pipelined under PIPELINING offered inside TLS" : "",
             *injected ? inj : "; nothing was injected after the 220");
    if (hello >= 0)
        fg_outcome_frame(o, c->ev[hello].frame);
    return FG_CONN_OK;
}

static void eval_inject(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e, (void)limit_ms;
    const struct fg_meta *m = ctx->meta;
    size_t n = fg_timeline_conns_to(ctx->tl, m->proxy_port, NULL, 0);
    struct fg_tl_conn **all = fg_calloc(n ? n : 1, sizeof *all);
    n = fg_timeline_conns_to(ctx->tl, m->proxy_port, all, n);
    size_t ok_injected = 0;
    struct fg_conn_tally t = {0};
    char why[640];
    for (size_t i = 0; i < n; i++) {
        int injected = 0;
        why[0] = '\0';
        enum fg_conn_res r = judge_conn(all[i], o, &injected, why, sizeof why);
        if (r == FG_CONN_OK && injected)
            ok_injected++;
        fg_conn_tally_add(&t, all[i], r, why, o);
    }
    fg_strbuf_printf(&t.ev,
                     "%zu outbound connection%s (port %d): %zu ok (%zu with octets injected after "
                     "the 220), %zu failing, %zu undecided, %zu without a session inside TLS",
                     n, n == 1 ? "" : "s", m->proxy_port, t.n[FG_CONN_OK], ok_injected,
                     t.n[FG_CONN_BAD], t.n[FG_CONN_UNSURE], t.n[FG_CONN_NA]);
    if (fg_conn_tally_fold(&t, o)) {
        /* a failing or undecided connection decided it */
    } else if (ok_injected) {
        o->verdict = FG_V_PASS;
        o->summary = fg_asprintf("%zu outbound connection%s: the plaintext after the 220 to "
                                 "STARTTLS was not read as a reply inside TLS",
                                 ok_injected, ok_injected == 1 ? "" : "s");
    } else if (t.n[FG_CONN_OK]) {
        o->verdict = FG_V_INCONC;
        o->summary = fg_strdup("not exercised: the server sent nothing after its 220 to STARTTLS "
                               "(the fake MTA's starttls_inject)");
    } else {
        o->verdict = FG_V_INCONC;
        o->summary = fg_strdup("not exercised: no outbound connection sent anything inside TLS");
    }
    free(all);
    o->evidence = t.ev.s ? t.ev.s : fg_strdup(o->summary);
}
