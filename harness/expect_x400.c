/* expect_x400.c - the X.400 expectations (faultgate/expect_x400.h):
 * x400-minor-sync-valid, x400-association-completed and
 * x400-recovers-after-abort.
 *
 * Each builds the X.400 timeline of the run's capture, keeping only the
 * connections to the metadata's x400_port (the foreign system the gateway
 * relays to), and reads the verdicts the shared X.225 rules gave every SPDU
 * there.  The gateway is the transport initiator on that leg, so what it
 * sent is the client-to-server direction.  KB Q194685: a gateway that sends
 * invalid minor synchronization points has its association aborted by the
 * foreign system before the message is transferred.
 */
#include "faultgate/expect_x400.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/util.h"
#include "faultgate/x400_timeline.h"

static void eval_sync(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o);
static void eval_completed(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                           uint64_t limit_ms, struct fg_outcome *o);
static void eval_recovers(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o);

const struct fg_expect_rule fg_expect_x400_rules[] = {
    {"x400-minor-sync-valid",
     "X.225 §7.20, §6.3.7, Annex A Table A-4 (V(M), V(A)); X.228 §7.3 (window, checkpoint "
     "size); KB Q194685",
     0, 0, eval_sync},
    {"x400-association-completed",
     "X.225 §7.9 (S-P-ABORT), §7.25 (activity end); X.410 §4 (RT-TRANSFER); KB Q194685",
     FG_EXPECT_P_WITHIN, FG_EXPECT_P_WITHIN, eval_completed},
    {"x400-recovers-after-abort",
     "X.410 §4 (RT-TRANSFER, RT-OPEN after abort); X.228 §7.1; KB Q194685", FG_EXPECT_P_WITHIN,
     FG_EXPECT_P_WITHIN, eval_recovers},
    {NULL, NULL, 0, 0, NULL},
};

int fg_expect_x400_known(const char *name)
{
    for (const struct fg_expect_rule *r = fg_expect_x400_rules; name && r->name; r++)
        if (strcmp(r->name, name) == 0)
            return 1;
    return 0;
}

int fg_expect_x400_validate(const struct fg_scenario *sc, const struct fg_expect_spec *e, char *err,
                            size_t errlen)
{
    const char *file = sc && sc->path ? sc->path : "<scenario>";
    const struct fg_expect_rule *r = NULL;
    for (const struct fg_expect_rule *x = fg_expect_x400_rules; e->rule && x->name; x++)
        if (strcmp(x->name, e->rule) == 0)
            r = x;
    if (!r)
        return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: unknown X.400 rule \"%s\"", file,
                       e->rule_line ? e->rule_line : e->line, e->rule_line ? e->rule_col : e->col,
                       e->rule ? e->rule : "");
    if (e->fate)
        return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: rule %s takes no parameter `fate`", file,
                       e->line, e->col, r->name);
    if (e->after)
        return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: rule %s takes no parameter `after`", file,
                       e->line, e->col, r->name);
    if (e->within && !(r->params & FG_EXPECT_P_WITHIN))
        return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: rule %s takes no parameter `within`",
                       file, e->line, e->col, r->name);
    if (!e->within && (r->required & FG_EXPECT_P_WITHIN))
        return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: rule %s needs `within`", file, e->line,
                       e->col, r->name);
    return 0;
}

void fg_expect_x400_eval(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                         uint64_t limit_ms, struct fg_outcome *out)
{
    for (const struct fg_expect_rule *r = fg_expect_x400_rules; e->rule && r->name; r++)
        if (strcmp(r->name, e->rule) == 0) {
            r->eval(e, ctx, limit_ms, out);
            return;
        }
    out->verdict = FG_V_ERROR;
    out->summary = fg_asprintf("unknown X.400 rule \"%s\"", e->rule ? e->rule : "");
    out->evidence = fg_strdup(out->summary);
}

/* --- helpers ----------------------------------------------------------------- */

static char *vfmt(const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    char *t = fg_malloc(n > 0 ? (size_t)n + 1 : 1);
    vsnprintf(t, n > 0 ? (size_t)n + 1 : 1, fmt, ap);
    return t;
}

static void result(struct fg_outcome *o, enum fg_verdict v, struct fg_strbuf *ev, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
static void result(struct fg_outcome *o, enum fg_verdict v, struct fg_strbuf *ev, const char *fmt,
                   ...)
{
    va_list ap;
    va_start(ap, fmt);
    o->summary = vfmt(fmt, ap);
    va_end(ap);
    o->verdict = v;
    if (ev && ev->len)
        o->evidence = fg_strbuf_take(ev);
    else
        o->evidence = fg_strdup(o->summary);
    free(ev ? ev->s : NULL);
}

/* The X.400 leg's timeline, or NULL with the outcome set to error or
 * inconc (no leg in this run). */
static struct fg_x400_timeline *leg_timeline(const struct fg_judge_ctx *ctx, struct fg_outcome *o)
{
    if (!ctx->meta || ctx->meta->x400_port <= 0) {
        result(o, FG_V_INCONC, NULL,
               "the run has no X.400 leg (no x400_port in its metadata): nothing to judge");
        return NULL;
    }
    if (!ctx->pcap) {
        result(o, FG_V_ERROR, NULL, "the judge was given no capture path for the X.400 leg");
        return NULL;
    }
    struct fg_x400_timeline *tl;
    char err[FG_ERRBUF_SIZE];
    err[0] = '\0';
    int port = ctx->meta->x400_port;
    int rc = fg_x400_timeline_build(ctx->pcap, &port, 1, &tl, err, sizeof err);
    if (rc != 0) {
        result(o, FG_V_ERROR, NULL, "%s: %s", ctx->pcap, err[0] ? err : fg_strerror(rc));
        return NULL;
    }
    return tl;
}

static const char *at(char *buf, size_t len, const struct fg_x400_timeline *tl, uint64_t us)
{
    char t[32];
    fg_expect_secs(t, sizeof t, us > tl->stats.first_us ? us - tl->stats.first_us : 0);
    snprintf(buf, len, "%s s", t);
    return buf;
}

static int sync_spdu(const struct fg_x4_event *e)
{
    switch (e->spdu) {
    case FG_SPDU_MIP:
    case FG_SPDU_MIA:
    case FG_SPDU_MAP:
    case FG_SPDU_AE:
    case FG_SPDU_AEA:
        return 1;
    default:
        /* Data beyond the checkpoint size is a missing sync point (X.228). */
        return e->rule && strcmp(e->rule, "checkpoint-size") == 0;
    }
}

/* "the foreign system ended the association with AB (...) at frame N, T s" */
static void end_text(struct fg_strbuf *b, struct fg_outcome *o, const struct fg_x400_timeline *tl,
                     const struct fg_x4_conn *c)
{
    char d[96], t[48];
    if (c->end == FG_X4_END_NONE || c->end_event == FG_TL_NONE) {
        fg_strbuf_printf(b, "the association was still open when the trace ended");
        return;
    }
    const struct fg_x4_event *e = &c->ev[c->end_event];
    fg_outcome_frame(o, e->frame);
    fg_strbuf_printf(b, "%s %s the association: %s",
                     e->dir == FG_C2S ? "the gateway" : "the X.400 peer",
                     c->end == FG_X4_END_RELEASED ? "released" : "ended",
                     fg_x4_event_describe(c, c->end_event, d, sizeof d));
    if (e->rts_reason >= 0)
        fg_strbuf_printf(b, ", RTS reason %d", e->rts_reason);
    fg_strbuf_printf(b, ", frame %llu at %s", (unsigned long long)e->frame,
                     at(t, sizeof t, tl, e->us));
}

static void violation_text(struct fg_strbuf *b, struct fg_outcome *o,
                           const struct fg_x400_timeline *tl, const struct fg_x4_conn *c, size_t i)
{
    const struct fg_x4_event *e = &c->ev[i];
    char d[96], t[48];
    fg_outcome_frame(o, e->frame);
    fg_strbuf_printf(
        b, "frame %llu at %s: %s %s broke rule %s (%s): %s", (unsigned long long)e->frame,
        at(t, sizeof t, tl, e->us), e->dir == FG_C2S ? "the gateway's" : "the X.400 peer's",
        fg_x4_event_describe(c, i, d, sizeof d), e->rule, e->source, e->text ? e->text : "");
}

static void conn_head(struct fg_strbuf *b, const struct fg_x4_conn *c)
{
    fg_strbuf_printf(b, "X.400 connection %u (%s -> %s)", c->id, c->client, c->server);
}

/* --- x400-minor-sync-valid ------------------------------------------------------ */

static void eval_sync(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e;
    (void)limit_ms;
    struct fg_x400_timeline *tl = leg_timeline(ctx, o);
    if (!tl)
        return;
    struct fg_strbuf ev = {0};
    unsigned bad = 0, mips = 0, assoc = 0;
    const struct fg_x4_conn *fc = NULL;
    size_t fi = 0;
    for (size_t k = 0; k < tl->nconn; k++) {
        const struct fg_x4_conn *c = &tl->conn[k];
        unsigned cbad = 0, cmips = 0;
        assoc += c->accepted;
        for (size_t i = 0; i < c->nev; i++) {
            const struct fg_x4_event *x = &c->ev[i];
            /* What the gateway sent after the association ended (SPDUs in
             * flight when the peer's AB arrived) is not judged again. */
            if (c->end_event != FG_TL_NONE && i > c->end_event)
                break;
            if (x->kind != FG_X4_SPDU || x->dir != FG_C2S)
                continue;
            cmips += x->spdu == FG_SPDU_MIP;
            if (!x->rule || !sync_spdu(x))
                continue;
            if (cbad == 0) {
                conn_head(&ev, c);
                fg_strbuf_printf(&ev, ":\n");
            }
            if (!fc) {
                fc = c;
                fi = i;
            }
            if (cbad < 8) {
                fg_strbuf_printf(&ev, "  ");
                violation_text(&ev, o, tl, c, i);
                fg_strbuf_printf(&ev, "\n");
            }
            cbad++;
        }
        if (cbad) {
            if (cbad > 8)
                fg_strbuf_printf(&ev, "  ... and %u more invalid sync SPDU(s)\n", cbad - 8);
            fg_strbuf_printf(&ev, "  ");
            end_text(&ev, o, tl, c);
            fg_strbuf_printf(&ev, "\n");
        } else if (c->nev > 1) {
            conn_head(&ev, c);
            fg_strbuf_printf(&ev,
                             ": %u minor sync point(s) in %zu activit%s, all valid (checkpoint %u "
                             "KiB, window %u)\n",
                             cmips, c->nact, c->nact == 1 ? "y" : "ies", (unsigned)c->checkpoint,
                             (unsigned)c->window);
        }
        bad += cbad;
        mips += cmips;
    }
    if (tl->nconn == 0) {
        result(o, FG_V_INCONC, &ev,
               "the gateway opened no X.400 connection to port %d: no minor sync point to judge",
               ctx->meta->x400_port);
    } else if (bad) {
        const struct fg_x4_event *x = &fc->ev[fi];
        char d[96], t[48];
        o->conn = fc->id;
        result(o, FG_V_FAIL, &ev, "%s (X.400 connection %u, frame %llu at %s) broke %s (%s): %s",
               fg_x4_event_describe(fc, fi, d, sizeof d), fc->id, (unsigned long long)x->frame,
               at(t, sizeof t, tl, x->us), x->rule, x->source, x->text ? x->text : "");
        if (bad > 1) {
            char *s = fg_asprintf("%s; %u invalid sync SPDU(s) in all", o->summary, bad);
            free(o->summary);
            o->summary = s;
        }
    } else {
        result(o, FG_V_PASS, &ev,
               "%u minor sync point(s) in %u association(s), every one valid (X.225 Table A-4, "
               "X.228 window)%s",
               mips, assoc, mips ? "" : ": none were sent (no checkpointing)");
    }
    fg_x400_timeline_free(tl);
}

/* --- x400-association-completed ------------------------------------------------ */

static int conn_completed(const struct fg_x4_conn *c)
{
    if (c->end != FG_X4_END_RELEASED || !c->accepted)
        return 0;
    for (size_t i = 0; i < c->nact; i++)
        if (!c->act[i].completed)
            return 0;
    return 1;
}

static void eval_completed(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                           uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e;
    struct fg_x400_timeline *tl = leg_timeline(ctx, o);
    if (!tl)
        return;
    struct fg_strbuf ev = {0};
    unsigned bad = 0, msgs = 0;
    const struct fg_x4_conn *first = NULL;
    for (size_t k = 0; k < tl->nconn; k++) {
        const struct fg_x4_conn *c = &tl->conn[k];
        unsigned done = 0;
        for (size_t i = 0; i < c->nact; i++)
            done += c->act[i].completed;
        msgs += done;
        conn_head(&ev, c);
        uint64_t took = 0;
        if (conn_completed(c) && c->nev && c->ev[c->end_event].us > c->ev[0].us)
            took = c->ev[c->end_event].us - c->ev[0].us;
        char t[32], t2[32];
        if (conn_completed(c) && took <= limit_ms * 1000) {
            fg_strbuf_printf(&ev, ": %u message(s) transferred, released after %s s\n", done,
                             fg_expect_secs(t, sizeof t, took));
            continue;
        }
        if (conn_completed(c)) {
            bad++;
            if (!first)
                first = c;
            fg_outcome_frame(o, c->ev[c->end_event].frame);
            fg_strbuf_printf(&ev, ": released only after %s s, more than the limit of %s s\n",
                             fg_expect_secs(t, sizeof t, took),
                             fg_expect_secs(t2, sizeof t2, limit_ms * 1000));
            continue;
        }
        bad++;
        if (!first)
            first = c;
        fg_strbuf_printf(&ev, ": %s; %u of %zu activit%s completed\n  ",
                         c->accepted ? "" : "never accepted", done, c->nact,
                         c->nact == 1 ? "y" : "ies");
        end_text(&ev, o, tl, c);
        fg_strbuf_printf(&ev, "\n");
        if (c->first_violation != FG_TL_NONE) {
            fg_strbuf_printf(&ev, "  first invalid SPDU: ");
            violation_text(&ev, o, tl, c, c->first_violation);
            fg_strbuf_printf(&ev, "\n");
        }
    }
    if (tl->nconn == 0) {
        result(o, FG_V_FAIL, &ev, "the gateway opened no X.400 connection to port %d",
               ctx->meta->x400_port);
    } else if (bad) {
        o->conn = first->id;
        char d[96], d2[96];
        const char *how = "still open at the end of the trace";
        if (first->end_event != FG_TL_NONE)
            how = fg_x4_event_describe(first, first->end_event, d, sizeof d);
        if (first->first_violation != FG_TL_NONE)
            result(o, FG_V_FAIL, &ev,
                   "%u of %zu association(s) not completed; connection %u ended by %s after %s "
                   "broke %s (%s)",
                   bad, tl->nconn, first->id, how,
                   fg_x4_event_describe(first, first->first_violation, d2, sizeof d2),
                   first->ev[first->first_violation].rule,
                   first->ev[first->first_violation].source);
        else if (conn_completed(first))
            result(o, FG_V_FAIL, &ev,
                   "%u of %zu association(s) not completed in time; connection %u released late",
                   bad, tl->nconn, first->id);
        else
            result(o, FG_V_FAIL, &ev,
                   "%u of %zu association(s) not completed; connection %u: %s (%s)", bad, tl->nconn,
                   first->id, fg_x4_end_name(first->end), how);
    } else {
        result(o, FG_V_PASS, &ev,
               "%zu association(s), each accepted, its message(s) transferred (AE answered by "
               "AEA) and released (FN, DN): %u message(s)",
               tl->nconn, msgs);
    }
    fg_x400_timeline_free(tl);
}

/* --- x400-recovers-after-abort ------------------------------------------------ */

static int conn_aborted(const struct fg_x4_conn *c)
{
    return c->end != FG_X4_END_RELEASED && c->end != FG_X4_END_NONE;
}

/* Whether every message the gateway accepted had been transferred (an
 * activity carrying its token answered with AEA) on connections 0..k: an
 * association aborted after that, e.g. during its release, leaves nothing
 * to re-associate for (X.410 §4: the AEA confirmed the RT-TRANSFER). */
static int all_sent_by(const struct fg_judge_ctx *ctx, const struct fg_x400_timeline *tl, size_t k)
{
    size_t ntok = ctx->meta ? ctx->meta->ntokens : 0, accepted = 0;
    for (size_t i = 0; i < ntok; i++) {
        const struct fg_meta_token *tok = &ctx->meta->tokens[i];
        if (!tok->accepted)
            continue;
        accepted++;
        int sent = 0;
        for (size_t j = 0; j <= k && !sent; j++)
            for (size_t a = 0; a < tl->conn[j].nact && !sent; a++)
                sent = tl->conn[j].act[a].completed &&
                       strcmp(tl->conn[j].act[a].token, tok->token) == 0;
        if (!sent)
            return 0;
    }
    return accepted > 0;
}

static void eval_recovers(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o)
{
    struct fg_x400_timeline *tl = leg_timeline(ctx, o);
    if (!tl)
        return;
    struct fg_strbuf ev = {0};
    char t[48], t2[48], d[96];
    unsigned aborts = 0, late = 0, unrecovered = 0, after_all = 0;
    /* Each abnormal end must be followed by a new association (the RTS
     * user's retry: X.410 §4, RT-OPEN again), within the limit if any. */
    for (size_t k = 0; k < tl->nconn; k++) {
        const struct fg_x4_conn *c = &tl->conn[k];
        if (!conn_aborted(c))
            continue;
        aborts++;
        uint64_t end_us = c->end_event != FG_TL_NONE ? c->ev[c->end_event].us : 0;
        conn_head(&ev, c);
        fg_strbuf_printf(&ev, ": ");
        end_text(&ev, o, tl, c);
        fg_strbuf_printf(&ev, "\n");
        if (k + 1 < tl->nconn) {
            const struct fg_x4_conn *n = &tl->conn[k + 1];
            uint64_t open_us = n->nev ? n->ev[0].us : 0;
            uint64_t gap = open_us > end_us ? open_us - end_us : 0;
            fg_outcome_frame(o, n->nev ? n->ev[0].frame : 0);
            fg_strbuf_printf(
                &ev, "  re-associated: connection %u opened at frame %llu, %s, %s s later\n", n->id,
                (unsigned long long)(n->nev ? n->ev[0].frame : 0), at(t, sizeof t, tl, open_us),
                fg_expect_secs(t2, sizeof t2, gap));
            if (gap > limit_ms * 1000) {
                late++;
                fg_strbuf_printf(&ev, "  later than the limit of %s s\n",
                                 fg_expect_secs(t2, sizeof t2, limit_ms * 1000));
            }
        } else if (all_sent_by(ctx, tl, k)) {
            after_all++;
            fg_strbuf_printf(&ev,
                             "  every message had been transferred (AEA) before it ended: no new "
                             "association needed\n");
        } else {
            unrecovered++;
            fg_strbuf_printf(&ev, "  no new association followed before the trace ended\n");
        }
    }
    /* Each message the gateway accepted must be transferred exactly once:
     * an activity ended by AE and answered by AEA that carries its token. */
    unsigned lost = 0, dup = 0, once = 0;
    size_t ntok = ctx->meta ? ctx->meta->ntokens : 0;
    for (size_t i = 0; i < ntok; i++) {
        const struct fg_meta_token *tok = &ctx->meta->tokens[i];
        if (!tok->accepted)
            continue;
        unsigned n = 0;
        for (size_t k = 0; k < tl->nconn; k++)
            for (size_t a = 0; a < tl->conn[k].nact; a++)
                if (tl->conn[k].act[a].completed &&
                    strcmp(tl->conn[k].act[a].token, tok->token) == 0) {
                    n++;
                    const struct fg_x4_conn *c = &tl->conn[k];
                    size_t ei = c->act[a].end_event;
                    if (ei != FG_TL_NONE) {
                        fg_outcome_frame(o, c->ev[ei].frame);
                        fg_strbuf_printf(
                            &ev, "message %s transferred on connection %u: %s, frame %llu at %s\n",
                            tok->token, c->id, fg_x4_event_describe(c, ei, d, sizeof d),
                            (unsigned long long)c->ev[ei].frame, at(t, sizeof t, tl, c->ev[ei].us));
                    }
                }
        if (n == 0) {
            lost++;
            fg_strbuf_printf(&ev,
                             "message %s was never transferred (no activity carrying it was "
                             "answered with AEA)\n",
                             tok->token);
        } else if (n > 1) {
            dup++;
            fg_strbuf_printf(&ev, "message %s was transferred %u times\n", tok->token, n);
        } else {
            once++;
        }
    }
    if (unrecovered || late || lost || dup) {
        o->conn = tl->nconn ? tl->conn[0].id : 0;
        result(o, FG_V_FAIL, &ev,
               "%u aborted association(s): %u not followed by a new one%s; %u message(s) lost, "
               "%u duplicated, %u transferred once",
               aborts, unrecovered, late ? ", some too late" : "", lost, dup, once);
    } else if (aborts == 0) {
        result(o, FG_V_INCONC, &ev,
               "no X.400 association was aborted, so recovery was not exercised (%u message(s) "
               "transferred once)",
               once);
    } else if (once == 0) {
        result(o, FG_V_INCONC, &ev,
               "%u aborted association(s), each followed by a new one, but no injected message "
               "to follow",
               aborts);
    } else {
        if (after_all)
            result(o, FG_V_PASS, &ev,
                   "%u aborted association(s), %u after every message was transferred, the "
                   "others followed by a new association within the limit; each of %u "
                   "message(s) transferred exactly once",
                   aborts, after_all, once);
        else
            result(o, FG_V_PASS, &ev,
                   "%u aborted association(s), each followed by a new association%s; each of %u "
                   "message(s) transferred exactly once",
                   aborts, " within the limit", once);
    }
    (void)e;
    fg_x400_timeline_free(tl);
}
