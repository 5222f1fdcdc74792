/* expect.c - the expectation catalog: load-time checks of a scenario's
 * `expect:` entries and the rules that turn a timeline into verdicts
 * (faultgate/expect.h).
 *
 * Rules of the first release (scenarios/FORMAT.md lists them for authors):
 *   closes-after-stall  within   the gateway gives up on a stalled peer
 *   message-fate        fate, within  each injected message's fate
 *   gateway-alive       -        the gateway still answers at the end
 * Each rule reads only the timeline built from the pcap and the run's
 * metadata, so `faultgate judge` on a saved trace reaches the live run's
 * verdict.  Evidence names connections by their number on their port (the
 * proxy's accept order, which is what fault decisions count), their
 * endpoints, frame numbers, and times relative to the trace's first frame.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/fault.h"
#include "faultgate/profile.h"
#include "faultgate/util.h"

/* --- the catalog --------------------------------------------------------- */

#define P_WITHIN FG_EXPECT_P_WITHIN
#define P_FATE FG_EXPECT_P_FATE
#define P_AFTER FG_EXPECT_P_AFTER

static void eval_stall(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o);
static void eval_fate(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o);
static void eval_alive(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o);
static void eval_busy(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o);
static void eval_retry(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o);

const struct fg_expect_rule fg_expect_core_rules[] = {
    {"closes-after-stall", "RFC 5321 §4.5.3.2 (MUST), §4.5.3.2.5-§4.5.3.2.6 (SHOULD); KB Q129140",
     P_WITHIN | P_AFTER, P_WITHIN, eval_stall},
    {"message-fate", "RFC 5321 §6.1, §4.2.5 (MUST); RFC 1047; KB Q135031", P_WITHIN | P_FATE,
     P_WITHIN | P_FATE, eval_fate},
    {"gateway-alive", "KB Q197142; KB Q131150", 0, 0, eval_alive},
    {"inbound-accepts-while-busy", "RFC 5321 §3.1, §4.3.2 (greeting 220); KB Q131150", P_WITHIN,
     P_WITHIN, eval_busy},
    {"retries-after-drop", "RFC 5321 §3.8 (SHOULD: as 451), §4.5.4.1 (MUST retry); KB Q197142",
     P_WITHIN, P_WITHIN, eval_retry},
    {NULL, NULL, 0, 0, NULL},
};

#define FG_EXPECT_XX_ENTRY(t) t,
static const struct fg_expect_rule *const tables[] = {FG_EXPECT_TABLES(FG_EXPECT_XX_ENTRY)};
#undef FG_EXPECT_XX_ENTRY
#define NTABLES (sizeof tables / sizeof tables[0])

const char *fg_expect_rules[FG_EXPECT_MAX_RULES + 1];

/* The names list is read directly by the scenario loader, so it is filled
 * before main, from every registered table. */
__attribute__((constructor)) static void rules_init(void)
{
    size_t n = 0;
    for (size_t t = 0; t < NTABLES; t++)
        for (const struct fg_expect_rule *r = tables[t]; r->name && n < FG_EXPECT_MAX_RULES; r++)
            fg_expect_rules[n++] = r->name;
    fg_expect_rules[n] = NULL;
}

const struct fg_expect_rule *fg_expect_rule_find(const char *name)
{
    for (size_t t = 0; name && t < NTABLES; t++)
        for (const struct fg_expect_rule *r = tables[t]; r->name; r++)
            if (strcmp(r->name, name) == 0)
                return r;
    return NULL;
}

/* Timeout names a profile may define (the catalog's list). */
static const char *const timeout_names[] = {"greeting",   "ehlo",      "mail", "rcpt", "data_init",
                                            "data_block", "data_done", "idle", "retry"};
#define NTIMEOUTS (sizeof timeout_names / sizeof timeout_names[0])

static const char *const fates[] = {"delivered-once", "delivered", "duplicated", "bounced", "lost"};

static const struct fg_expect_rule *rule_find(const char *name)
{
    return fg_expect_rule_find(name);
}

static unsigned param_bit(const char *param)
{
    if (strcmp(param, "within") == 0)
        return P_WITHIN;
    if (strcmp(param, "fate") == 0)
        return P_FATE;
    if (strcmp(param, "after") == 0)
        return P_AFTER;
    return 0;
}

int fg_expect_param_known(const char *rule, const char *param)
{
    const struct fg_expect_rule *r = rule_find(rule);
    if (!r)
        return -1;
    if (strcmp(param, "rule") == 0)
        return 1;
    unsigned b = param_bit(param);
    return b && (r->params & b) ? 1 : 0;
}

const char *fg_expect_source(const char *rule)
{
    const struct fg_expect_rule *r = rule_find(rule);
    return r ? r->source : NULL;
}

const char *fg_verdict_name(enum fg_verdict v)
{
    switch (v) {
    case FG_V_PASS:
        return "pass";
    case FG_V_INCONC:
        return "inconc";
    case FG_V_FAIL:
        return "fail";
    case FG_V_ERROR:
        return "error";
    case FG_V_SKIP:
        return "skip";
    }
    return "error";
}

/* TTCN-3 order, with skip below pass so that one applicable scenario
 * decides a mixed set. */
static int verdict_rank(enum fg_verdict v)
{
    switch (v) {
    case FG_V_SKIP:
        return 0;
    case FG_V_PASS:
        return 1;
    case FG_V_INCONC:
        return 2;
    case FG_V_FAIL:
        return 3;
    case FG_V_ERROR:
        return 4;
    }
    return 4;
}

enum fg_verdict fg_verdict_worst(enum fg_verdict a, enum fg_verdict b)
{
    return verdict_rank(a) >= verdict_rank(b) ? a : b;
}

void fg_outcome_clear(struct fg_outcome *o)
{
    if (!o)
        return;
    free(o->rule);
    free(o->source);
    free(o->summary);
    free(o->evidence);
    memset(o, 0, sizeof *o);
}

/* --- within ---------------------------------------------------------------- */

/* A profile that only carries timeouts, for fg_within_eval. */
static void timeouts_profile(struct fg_profile *p, struct fg_timeout *t, size_t n)
{
    memset(p, 0, sizeof *p);
    p->name = "(timeouts)";
    p->timeouts = t;
    p->ntimeouts = n;
}

static int within_meta(const char *expr, const struct fg_meta *m, uint64_t *ms, char *err,
                       size_t errlen)
{
    struct fg_profile p;
    timeouts_profile(&p, m ? m->timeouts : NULL, m ? m->ntimeouts : 0);
    return fg_within_eval(expr, &p, ms, err, errlen, NULL);
}

uint64_t fg_expect_horizon_ms(const struct fg_scenario *sc, const struct fg_meta *meta)
{
    uint64_t best = 0;
    for (size_t i = 0; sc && i < sc->nexpects; i++) {
        uint64_t ms;
        char err[FG_ERRBUF_SIZE];
        if (sc->expects[i].within &&
            within_meta(sc->expects[i].within, meta, &ms, err, sizeof err) == 0 && ms > best)
            best = ms;
    }
    return best;
}

/* --- validation ------------------------------------------------------------ */

int fg_expect_validate(const struct fg_scenario *sc, const struct fg_expect_spec *e, char *err,
                       size_t errlen)
{
    const char *file = sc && sc->path ? sc->path : "<scenario>";
    const struct fg_expect_rule *r = rule_find(e->rule);
    if (!e->rule)
        return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: expectation without `rule`", file,
                       e->line, e->col);
    if (!r)
        return fg_errf(err, errlen, FG_EINPUT,
                       "%s:%d:%d: unknown expectation rule \"%s\" (faultgate list --rules "
                       "names them)",
                       file, e->line, e->col, e->rule);

    const struct {
        unsigned bit;
        const char *name;
        const char *value;
    } given[] = {
        {P_WITHIN, "within", e->within}, {P_FATE, "fate", e->fate}, {P_AFTER, "after", e->after}};
    for (size_t i = 0; i < sizeof given / sizeof given[0]; i++) {
        if (given[i].value && !(r->params & given[i].bit))
            return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: rule %s takes no parameter `%s`",
                           file, e->line, e->col, r->name, given[i].name);
        if (!given[i].value && (r->required & given[i].bit))
            return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: rule %s needs `%s`", file, e->line,
                           e->col, r->name, given[i].name);
    }

    if (e->fate) {
        size_t i;
        for (i = 0; i < sizeof fates / sizeof fates[0]; i++)
            if (strcmp(e->fate, fates[i]) == 0)
                break;
        if (i == sizeof fates / sizeof fates[0])
            return fg_errf(err, errlen, FG_EINPUT,
                           "%s:%d:%d: unknown fate \"%s\" (one of delivered-once, delivered, "
                           "duplicated, bounced, lost)",
                           file, e->line, e->col, e->fate);
    }

    if (e->after) {
        uint64_t n;
        if (fg_uint_parse(e->after, 1, sc ? (sc->nfaults ? sc->nfaults : 1) : UINT32_MAX, &n) !=
                0 ||
            (sc && sc->nfaults == 0))
            return fg_errf(err, errlen, FG_EINPUT,
                           "%s:%d:%d: `after` must name one of the scenario's faults by its "
                           "number (1 to %zu)",
                           file, e->line, e->col, sc ? sc->nfaults : 0);
    }

    if (e->within) {
        /* Syntax and names only: every known timeout is present, so the
         * evaluator rejects exactly the names the catalog does not know. */
        struct fg_timeout t[NTIMEOUTS];
        for (size_t i = 0; i < NTIMEOUTS; i++) {
            t[i].name = (char *)timeout_names[i];
            t[i].ms = 1000;
        }
        struct fg_profile p;
        timeouts_profile(&p, t, NTIMEOUTS);
        uint64_t ms;
        int col = 0;
        char msg[FG_ERRBUF_SIZE];
        msg[0] = '\0';
        int rc = fg_within_eval(e->within, &p, &ms, msg, sizeof msg, &col);
        if (rc != 0) {
            int line = e->within_line ? e->within_line : e->line;
            int c0 = e->within_line ? e->within_col : e->col;
            if (col > 0 && e->within_line)
                c0 += col - 1;
            return fg_errf(err, errlen, rc, "%s:%d:%d: within \"%s\": %s", file, line, c0,
                           e->within, msg[0] ? msg : fg_strerror(rc));
        }
    }
    return 0;
}

/* --- text helpers -------------------------------------------------------- */

struct sb {
    char *s;
    size_t len, cap;
};

static void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    fg_array_reserve((void **)&b->s, &b->cap, b->len + (size_t)n + 1, 1);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static char *sb_take(struct sb *b)
{
    char *s = b->s ? b->s : fg_strdup("");
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

/* Seconds for people: "9.0", "0.25", "14.012". */
static const char *secs(char *buf, size_t len, uint64_t us)
{
    snprintf(buf, len, "%.3f", (double)us / 1e6);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '0' && n >= 2 && buf[n - 2] != '.')
        buf[--n] = '\0';
    return buf;
}

/* Signed difference a - b in microseconds, clamped at 0. */
static uint64_t since(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* "9.0 s = timeouts.data_done + 5s (data_done = 4.0 s)": the limit and how
 * it was computed, so a reader can check it against the profile. */
static void limit_text(struct sb *b, const char *expr, uint64_t ms, const struct fg_meta *m)
{
    char t[32];
    sb_printf(b, "%s s", secs(t, sizeof t, ms * 1000));
    if (!expr || !strstr(expr, "timeouts."))
        return;
    sb_printf(b, " = %s (", expr);
    const char *p = expr;
    int first = 1;
    while ((p = strstr(p, "timeouts.")) != NULL) {
        p += strlen("timeouts.");
        size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyz_0123456789");
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(n < 31 ? n : 31), p);
        int64_t v = fg_meta_timeout(m, name);
        if (v >= 0)
            sb_printf(b, "%s%s = %s s", first ? "" : ", ", name,
                      secs(t, sizeof t, (uint64_t)v * 1000));
        first = 0;
        p += n;
    }
    sb_printf(b, ")");
}

static void frame_add(struct fg_outcome *o, uint64_t frame)
{
    if (frame == 0)
        return;
    for (size_t i = 0; i < o->nframes; i++)
        if (o->frames[i] == frame)
            return;
    if (o->nframes < FG_MAX_FRAMES)
        o->frames[o->nframes++] = frame;
}

void fg_outcome_frame(struct fg_outcome *o, uint64_t frame)
{
    frame_add(o, frame);
}

const char *fg_expect_secs(char *buf, size_t len, uint64_t us)
{
    return secs(buf, len, us);
}

/* Connections to port, in order (caller frees). */
static size_t conns_to(const struct fg_timeline *tl, int port, struct fg_tl_conn ***out)
{
    *out = NULL;
    if (!tl || tl->nconn == 0 || port <= 0)
        return 0;
    *out = fg_calloc(tl->nconn, sizeof **out);
    return fg_timeline_conns_to(tl, port, *out, tl->nconn);
}

static uint64_t conn_open_us(const struct fg_tl_conn *c)
{
    return c->nev ? c->ev[0].us : 0;
}

static void set_result(struct fg_outcome *o, enum fg_verdict v, char *summary)
{
    o->verdict = v;
    free(o->summary);
    o->summary = summary;
}

/* --- closes-after-stall ---------------------------------------------------- */

static int verb_matches(const struct fg_tl_event *e, const struct fg_fault *f)
{
    if (f->verb != FG_VERB_OTHER)
        return e->verb == f->verb;
    if (!e->text || !f->verb_text[0])
        return 0;
    size_t n = strlen(f->verb_text);
    return strncasecmp(e->text, f->verb_text, n) == 0 &&
           (e->text[n] == '\0' || e->text[n] == ' ' || e->text[n] == '\r');
}

/* The first event of c that the trigger f describes, or -1. */
static long trigger_event(const struct fg_tl_conn *c, const struct fg_fault *f)
{
    unsigned seen = 0;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *e = &c->ev[i];
        switch (f->trig) {
        case FG_TRIG_COMMAND:
            if (e->kind == FG_TL_COMMAND && verb_matches(e, f) &&
                (++seen, f->verb_seq == 0 || seen == f->verb_seq))
                return (long)i;
            break;
        case FG_TRIG_REPLY:
            if (e->kind == FG_TL_REPLY &&
                (f->code_class ? e->code / 100 == f->code : e->code == f->code))
                return (long)i;
            break;
        case FG_TRIG_END_OF_DATA:
            if (e->kind == FG_TL_END_OF_DATA)
                return (long)i;
            break;
        case FG_TRIG_REPLY_TO_EOD:
            if (e->kind == FG_TL_REPLY && e->answers == FG_ANS_END_OF_DATA)
                return (long)i;
            break;
        case FG_TRIG_GREETING:
            if (e->kind == FG_TL_REPLY && e->answers == FG_ANS_GREETING)
                return (long)i;
            break;
        case FG_TRIG_CONNECT:
            if (e->kind == FG_TL_OPEN)
                return (long)i;
            break;
        default: /* starttls, byte and after: the decision's time stands */
            break;
        }
    }
    return -1;
}

/* One stall decision: verdict, one-line summary, evidence appended to ev. */
static enum fg_verdict stall_one(const struct fg_decision *d, const struct fg_expect_spec *e,
                                 uint64_t limit_ms, const struct fg_judge_ctx *ctx,
                                 struct fg_tl_conn **pc, size_t npc, struct fg_outcome *o,
                                 struct sb *ev, char **summary)
{
    const struct fg_meta *m = ctx->meta;
    const struct fg_timeline *tl = ctx->tl;
    uint64_t t0 = tl->stats.first_us;
    char a[32], b[32], c[32];
    const char *trig = d->trigger[0] ? d->trigger : "its trigger";

    if (d->conn == 0 || d->conn > npc) {
        sb_printf(ev,
                  "stall after %s on connection #%u to the proxy (port %d): that connection is "
                  "not in the trace (%zu connection%s to the proxy)",
                  trig, d->conn, m->proxy_port, npc, npc == 1 ? "" : "s");
        *summary = fg_asprintf("the stalled connection #%u is not in the trace", d->conn);
        return FG_V_INCONC;
    }
    const struct fg_tl_conn *cn = pc[d->conn - 1];
    o->conn = o->conn ? o->conn : cn->id;

    struct fg_fault f;
    char perr[FG_ERRBUF_SIZE];
    long si = -1;
    memset(&f, 0, sizeof f);
    /* The decision logs the trigger's text; selectors, if any were kept
     * after a comma, do not change which event it names. */
    char tt[sizeof d->trigger];
    snprintf(tt, sizeof tt, "%s", d->trigger);
    tt[strcspn(tt, ",:")] = '\0';
    if (fg_fault_parse_trigger(tt, &f, perr, sizeof perr, NULL) == 0)
        si = trigger_event(cn, &f);
    fg_fault_clear(&f);

    uint64_t stall_us = si >= 0 ? cn->ev[si].us : d->t_us;
    uint64_t stall_frame = si >= 0 ? cn->ev[si].frame : 0;
    frame_add(o, stall_frame);

    struct sb where = {0};
    sb_printf(&where, "connection #%u (%s -> %s", d->conn, cn->client, cn->server);
    if (cn->id != d->conn)
        sb_printf(&where, ", trace connection %u", cn->id);
    if (si >= 0)
        sb_printf(&where, ", frame %llu, t=+%s s)", (unsigned long long)stall_frame,
                  secs(a, sizeof a, since(stall_us, t0)));
    else
        sb_printf(&where,
                  "; the trigger event is not in the trace, so the stall is placed at "
                  "the fault decision, t=+%s s)",
                  secs(a, sizeof a, since(stall_us, t0)));

    /* The gateway is the client on the proxy's port: its FIN or RST.  A
     * close once faultgate began ending the run (the liveness probe, then
     * the stop signal) is faultgate's doing, not the gateway's timeout. */
    uint64_t run_end_us = tl->stats.last_us;
    if (m->probe_start_us && m->probe_start_us < run_end_us)
        run_end_us = m->probe_start_us;
    long ci = -1;
    for (size_t i = si >= 0 ? (size_t)si + 1 : 0; i < cn->nev; i++) {
        const struct fg_tl_event *x = &cn->ev[i];
        if ((x->kind == FG_TL_FIN || x->kind == FG_TL_RST) && x->dir == FG_C2S &&
            x->us >= stall_us && (!m->probe_start_us || x->us < m->probe_start_us)) {
            ci = (long)i;
            break;
        }
    }
    struct sb lim = {0};
    limit_text(&lim, e->within, limit_ms, m);
    uint64_t limit_us = limit_ms * 1000;
    enum fg_verdict v;

    if (ci >= 0) {
        const struct fg_tl_event *x = &cn->ev[ci];
        uint64_t dt = since(x->us, stall_us);
        const char *how = x->kind == FG_TL_FIN ? "FIN" : "RST";
        frame_add(o, x->frame);
        if (dt <= limit_us) {
            v = FG_V_PASS;
            sb_printf(ev,
                      "%s stalled after %s; the gateway closed it with %s (frame %llu, "
                      "t=+%s s) after %s s, limit %s",
                      where.s, trig, how, (unsigned long long)x->frame,
                      secs(a, sizeof a, since(x->us, t0)), secs(b, sizeof b, dt), lim.s);
            *summary = fg_asprintf("the gateway closed the connection stalled after %s after "
                                   "%s s (limit %s s)",
                                   trig, secs(b, sizeof b, dt), secs(c, sizeof c, limit_us));
        } else {
            v = FG_V_FAIL;
            sb_printf(ev,
                      "stall after %s on %s: the gateway closed it with %s (frame %llu, "
                      "t=+%s s) only after %s s, over the limit %s",
                      trig, where.s, how, (unsigned long long)x->frame,
                      secs(a, sizeof a, since(x->us, t0)), secs(b, sizeof b, dt), lim.s);
            *summary = fg_asprintf("the gateway closed the connection stalled after %s only "
                                   "after %s s (limit %s s)",
                                   trig, secs(b, sizeof b, dt), secs(c, sizeof c, limit_us));
        }
    } else {
        uint64_t left = since(run_end_us, stall_us);
        if (left >= limit_us) {
            v = FG_V_FAIL;
            sb_printf(ev,
                      "stall after %s on %s: the gateway never closed it: no FIN or RST "
                      "from the gateway in the %s s of trace after the stall%s (limit %s)",
                      trig, where.s, secs(a, sizeof a, left),
                      run_end_us < tl->stats.last_us ? ", until faultgate ended the run" : "",
                      lim.s);
            *summary = fg_asprintf("the gateway never closed the connection stalled after %s "
                                   "(%s s of trace after the stall, limit %s s)",
                                   trig, secs(a, sizeof a, left), secs(c, sizeof c, limit_us));
        } else {
            v = FG_V_INCONC;
            sb_printf(ev,
                      "stall after %s on %s: the gateway had not closed it when the trace "
                      "ended %s s after the stall, before the limit %s",
                      trig, where.s, secs(a, sizeof a, left), lim.s);
            *summary = fg_asprintf("the trace ends %s s after the stall, before the limit of "
                                   "%s s",
                                   secs(a, sizeof a, left), secs(c, sizeof c, limit_us));
        }
    }
    free(where.s);
    free(lim.s);
    return v;
}

static void eval_stall(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o)
{
    const struct fg_meta *m = ctx->meta;
    struct fg_tl_conn **pc;
    size_t npc = conns_to(ctx->tl, m->proxy_port, &pc);
    unsigned only = e->after ? (unsigned)strtoul(e->after, NULL, 10) : 0;
    struct sb ev = {0};
    enum fg_verdict worst = FG_V_SKIP;
    char *wsum = NULL;
    size_t nstall = 0;

    for (size_t i = 0; i < m->ndecisions; i++) {
        const struct fg_decision *d = &m->decisions[i];
        if (strncmp(d->action, "stall", 5) != 0 || (only && d->fault + 1 != only))
            continue;
        char *sum = NULL;
        if (nstall++)
            sb_printf(&ev, "\n");
        enum fg_verdict v = stall_one(d, e, limit_ms, ctx, pc, npc, o, &ev, &sum);
        if (!wsum || verdict_rank(v) > verdict_rank(worst)) {
            free(wsum);
            wsum = sum;
            worst = v;
        } else {
            free(sum);
        }
    }
    free(pc);
    if (nstall == 0) {
        sb_printf(&ev,
                  "no stall fault fired in this run: the trigger was never reached (%zu "
                  "fault decision%s recorded)",
                  m->ndecisions, m->ndecisions == 1 ? "" : "s");
        set_result(o, FG_V_INCONC,
                   fg_strdup("no stall fault fired: the trigger was never "
                             "reached"));
    } else {
        if (nstall > 1 && wsum) {
            char *s = fg_asprintf("%s (worst of %zu stalls)", wsum, nstall);
            free(wsum);
            wsum = s;
        }
        set_result(o, worst, wsum);
    }
    o->evidence = sb_take(&ev);
}

/* --- message-fate ---------------------------------------------------------- */

/* RFC 5321 §4.5.5: a bounce travels with the null reverse-path <>.  The
 * argument may be "FROM:<>", "<>" or carry parameters after the path. */
static int null_sender(const char *mail_from)
{
    if (!mail_from)
        return 0;
    const char *p = strchr(mail_from, '<');
    if (!p)
        return 0;
    p++;
    while (*p == ' ')
        p++;
    return *p == '>';
}

struct hit {
    unsigned portno; /* connection number on its port */
    const struct fg_tl_conn *c;
    uint64_t frame, us;
    int code;
};

static int msg_reply(const struct fg_tl_conn *c, const struct fg_tl_msg *mm, struct hit *h,
                     unsigned portno)
{
    h->portno = portno;
    h->c = c;
    h->code = mm->reply_code;
    if (mm->reply_code && mm->reply_event < c->nev) {
        h->frame = c->ev[mm->reply_event].frame;
        h->us = c->ev[mm->reply_event].us;
    } else if (mm->eod_event < c->nev) {
        h->frame = c->ev[mm->eod_event].frame;
        h->us = c->ev[mm->eod_event].us;
    }
    return mm->reply_code / 100 == 2;
}

static int fate_matches(const char *want, const char *got)
{
    if (strcmp(want, got) == 0)
        return 1;
    return strcmp(want, "delivered") == 0 &&
           (strcmp(got, "delivered-once") == 0 || strcmp(got, "duplicated") == 0);
}

static enum fg_verdict fate_one(const struct fg_meta_token *tok, const struct fg_expect_spec *e,
                                uint64_t limit_ms, const struct fg_judge_ctx *ctx,
                                struct fg_tl_conn **in, size_t nin, struct fg_tl_conn **out,
                                size_t nout, struct fg_outcome *o, struct sb *ev, char **fate_out)
{
    uint64_t t0 = ctx->tl->stats.first_us;
    char a[32], b[32];
    struct hit acc = {0}, seen = {0};
    int accepted = 0;

    for (size_t i = 0; i < nin && !accepted; i++)
        for (size_t j = 0; j < in[i]->nmsg && !accepted; j++) {
            const struct fg_tl_msg *mm = &in[i]->msg[j];
            if (strcmp(mm->token, tok->token) != 0)
                continue;
            if (msg_reply(in[i], mm, &acc, (unsigned)i + 1))
                accepted = 1;
            else
                seen = acc;
        }

    sb_printf(ev, "message %s: ", tok->token);
    if (!accepted) {
        *fate_out = "refused";
        if (seen.c) {
            frame_add(o, seen.frame);
            if (seen.code)
                sb_printf(ev,
                          "refused: the gateway answered %d to its end of data on inbound "
                          "connection #%u (%s -> %s, frame %llu, t=+%s s)",
                          seen.code, seen.portno, seen.c->client, seen.c->server,
                          (unsigned long long)seen.frame, secs(a, sizeof a, since(seen.us, t0)));
            else
                sb_printf(ev,
                          "refused: no reply to its end of data on inbound connection #%u "
                          "(%s -> %s, frame %llu)",
                          seen.portno, seen.c->client, seen.c->server,
                          (unsigned long long)seen.frame);
            o->conn = o->conn ? o->conn : seen.c->id;
        } else {
            sb_printf(ev,
                      "refused: not accepted: it is on no inbound connection (port %d) of "
                      "the trace with a 2xx reply",
                      ctx->meta->gateway_port);
            if (tok->reply_code)
                sb_printf(ev, " (the injector saw reply %d)", tok->reply_code);
        }
        sb_printf(ev, "; expected %s", e->fate);
        return FG_V_FAIL;
    }

    frame_add(o, acc.frame);
    sb_printf(ev, "accepted on inbound connection #%u (%s -> %s, frame %llu, t=+%s s); ",
              acc.portno, acc.c->client, acc.c->server, (unsigned long long)acc.frame,
              secs(a, sizeof a, since(acc.us, t0)));

    uint64_t deadline = acc.us + limit_ms * 1000;
    struct hit dl[FG_MAX_FRAMES], bounce = {0};
    size_t ndel = 0, nlate = 0, nbounce = 0;
    for (size_t i = 0; i < nout; i++)
        for (size_t j = 0; j < out[i]->nmsg; j++) {
            const struct fg_tl_msg *mm = &out[i]->msg[j];
            struct hit h = {0};
            if (strcmp(mm->token, tok->token) != 0 || !msg_reply(out[i], mm, &h, (unsigned)i + 1))
                continue;
            if (h.us > deadline) {
                nlate++;
                continue;
            }
            if (null_sender(mm->mail_from)) {
                if (nbounce++ == 0)
                    bounce = h;
            } else {
                if (ndel < FG_MAX_FRAMES)
                    dl[ndel] = h;
                ndel++;
            }
        }

    struct sb lim = {0};
    limit_text(&lim, e->within, limit_ms, ctx->meta);
    const char *fate;
    if (ndel == 1) {
        fate = "delivered-once";
        frame_add(o, dl[0].frame);
        sb_printf(ev,
                  "delivered once within %s: proxy-to-MTA connection #%u (frame %llu, "
                  "t=+%s s, %s s after acceptance)",
                  lim.s, dl[0].portno, (unsigned long long)dl[0].frame,
                  secs(a, sizeof a, since(dl[0].us, t0)),
                  secs(b, sizeof b, since(dl[0].us, acc.us)));
    } else if (ndel > 1) {
        fate = "duplicated";
        sb_printf(ev, "duplicated: %zu deliveries at the fake MTA within %s (RFC 1047):", ndel,
                  lim.s);
        for (size_t k = 0; k < ndel && k < FG_MAX_FRAMES; k++) {
            frame_add(o, dl[k].frame);
            sb_printf(ev, "%s proxy-to-MTA connection #%u (frame %llu, t=+%s s)", k ? ";" : "",
                      dl[k].portno, (unsigned long long)dl[k].frame,
                      secs(a, sizeof a, since(dl[k].us, t0)));
        }
    } else if (nbounce) {
        fate = "bounced";
        frame_add(o, bounce.frame);
        sb_printf(ev,
                  "bounced: no delivery, a bounce with the null reverse-path <> on "
                  "proxy-to-MTA connection #%u (frame %llu, t=+%s s) within %s",
                  bounce.portno, (unsigned long long)bounce.frame,
                  secs(a, sizeof a, since(bounce.us, t0)), lim.s);
    } else if (ctx->tl->stats.last_us >= deadline) {
        fate = "lost";
        sb_printf(ev,
                  "lost: neither delivered nor bounced within %s (0 deliveries at the fake "
                  "MTA)",
                  lim.s);
    } else {
        fate = "deferred";
        sb_printf(ev,
                  "deferred: neither delivered nor bounced yet, but the trace ends %s s "
                  "after acceptance, before the limit %s",
                  secs(a, sizeof a, since(ctx->tl->stats.last_us, acc.us)), lim.s);
    }
    free(lim.s);
    if (nlate)
        sb_printf(ev, " (and %zu more after the limit)", nlate);
    *fate_out = (char *)fate;
    if (fate_matches(e->fate, fate))
        return FG_V_PASS;
    sb_printf(ev, "; expected %s", e->fate);
    if (!o->conn)
        o->conn = acc.c->id;
    return strcmp(fate, "deferred") == 0 ? FG_V_INCONC : FG_V_FAIL;
}

static void eval_fate(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o)
{
    const struct fg_meta *m = ctx->meta;
    struct fg_tl_conn **in, **out;
    size_t nin = conns_to(ctx->tl, m->gateway_port, &in);
    size_t nout = conns_to(ctx->tl, m->mta_port, &out);
    struct sb ev = {0};
    enum fg_verdict worst = FG_V_PASS;
    char *wsum = NULL;
    size_t nbad = 0;

    for (size_t i = 0; i < m->ntokens; i++) {
        char *fate = NULL;
        if (i)
            sb_printf(&ev, "\n");
        enum fg_verdict v =
            fate_one(&m->tokens[i], e, limit_ms, ctx, in, nin, out, nout, o, &ev, &fate);
        if (v != FG_V_PASS) {
            nbad++;
            if (!wsum || verdict_rank(v) > verdict_rank(worst)) {
                free(wsum);
                wsum =
                    fg_asprintf("message %s: %s, expected %s", m->tokens[i].token, fate, e->fate);
            }
            worst = fg_verdict_worst(worst, v);
        }
    }
    free(in);
    free(out);
    if (m->ntokens == 0) {
        sb_printf(&ev, "the run's metadata lists no injected message");
        set_result(o, FG_V_INCONC, fg_strdup("no message was injected"));
    } else if (nbad == 0) {
        set_result(o, FG_V_PASS,
                   fg_asprintf("%zu message%s: %s as expected", m->ntokens,
                               m->ntokens == 1 ? "" : "s", e->fate));
    } else {
        if (nbad > 1) {
            char *s =
                fg_asprintf("%s (%zu of %zu messages not %s)", wsum, nbad, m->ntokens, e->fate);
            free(wsum);
            wsum = s;
        }
        set_result(o, worst, wsum);
    }
    o->evidence = sb_take(&ev);
}

/* --- gateway-alive --------------------------------------------------------- */

static const char *signal_abbrev(int sig)
{
    /* Linux numbering; the names people know from kill -l. */
    static const char *const names[] = {
        NULL,        "SIGHUP",  "SIGINT",    "SIGQUIT", "SIGILL",   "SIGTRAP", "SIGABRT", "SIGBUS",
        "SIGFPE",    "SIGKILL", "SIGUSR1",   "SIGSEGV", "SIGUSR2",  "SIGPIPE", "SIGALRM", "SIGTERM",
        "SIGSTKFLT", "SIGCHLD", "SIGCONT",   "SIGSTOP", "SIGTSTP",  "SIGTTIN", "SIGTTOU", "SIGURG",
        "SIGXCPU",   "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO",   "SIGPWR",  "SIGSYS"};
    if (sig > 0 && (size_t)sig < sizeof names / sizeof names[0])
        return names[sig];
    return "a real-time signal";
}

/* What happened to one probe connection: 1 greeted with 2xx, 0 not. */
static int probe_one(const struct fg_tl_conn *c, unsigned portno, uint64_t t0, uint64_t trace_end,
                     struct fg_outcome *o, struct sb *ev, char **summary)
{
    char a[32], b[32];
    uint64_t open_us = conn_open_us(c);
    uint64_t open_frame = c->nev ? c->ev[0].frame : 0;
    frame_add(o, open_frame);
    sb_printf(ev,
              "liveness probe: connection #%u to the gateway (%s -> %s, opened frame %llu, "
              "t=+%s s) ",
              portno, c->client, c->server, (unsigned long long)open_frame,
              secs(a, sizeof a, since(open_us, t0)));
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *x = &c->ev[i];
        if (x->kind == FG_TL_REPLY && x->dir == FG_S2C) {
            frame_add(o, x->frame);
            if (x->code / 100 == 2) {
                sb_printf(ev, "got the greeting %d (frame %llu) after %s s", x->code,
                          (unsigned long long)x->frame, secs(b, sizeof b, since(x->us, open_us)));
                *summary = fg_asprintf("the gateway answered the liveness probe with %d", x->code);
                return 1;
            }
            sb_printf(ev, "was answered %d instead of a 2xx greeting (frame %llu, after %s s)",
                      x->code, (unsigned long long)x->frame,
                      secs(b, sizeof b, since(x->us, open_us)));
            *summary = fg_asprintf("the gateway answered the liveness probe with %d, not a 2xx "
                                   "greeting",
                                   x->code);
            return 0;
        }
        if ((x->kind == FG_TL_RST || x->kind == FG_TL_FIN) && x->dir == FG_S2C) {
            frame_add(o, x->frame);
            if (x->kind == FG_TL_RST && i == 1 && x->frame == open_frame + 1) {
                sb_printf(ev, "was refused: its SYN was answered by RST (frame %llu)",
                          (unsigned long long)x->frame);
                *summary = fg_strdup("the gateway refused the liveness probe connection");
            } else {
                sb_printf(ev,
                          "was %s by the gateway without a greeting (%s, frame %llu, after "
                          "%s s)",
                          x->kind == FG_TL_RST ? "reset" : "closed",
                          x->kind == FG_TL_RST ? "RST" : "FIN", (unsigned long long)x->frame,
                          secs(b, sizeof b, since(x->us, open_us)));
                *summary = fg_asprintf("the gateway %s the liveness probe without a greeting",
                                       x->kind == FG_TL_RST ? "reset" : "closed");
            }
            return 0;
        }
        if ((x->kind == FG_TL_RST || x->kind == FG_TL_FIN) && x->dir == FG_C2S) {
            frame_add(o, x->frame);
            sb_printf(ev, "got no greeting: the probe gave up after %s s (%s, frame %llu)",
                      secs(b, sizeof b, since(x->us, open_us)),
                      x->kind == FG_TL_RST ? "RST" : "FIN", (unsigned long long)x->frame);
            *summary = fg_strdup("the gateway did not greet the liveness probe");
            return 0;
        }
    }
    sb_printf(ev, "got no greeting in the %s s of trace after it opened",
              secs(b, sizeof b, since(trace_end, open_us)));
    *summary = fg_strdup("the gateway did not greet the liveness probe");
    return 0;
}

static void eval_alive(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o)
{
    const struct fg_meta *m = ctx->meta;
    const struct fg_timeline *tl = ctx->tl;
    struct fg_tl_conn **gc;
    size_t ngc = conns_to(tl, m->gateway_port, &gc);
    struct sb ev = {0};
    enum fg_verdict v = FG_V_INCONC;
    char *sum = NULL;

    if (!m->gateway_running_at_end) {
        if (m->gateway_term_signal > 0)
            sb_printf(&ev,
                      "the gateway process died with signal %d (%s) before the end of the "
                      "run",
                      m->gateway_term_signal, signal_abbrev(m->gateway_term_signal));
        else
            sb_printf(&ev,
                      "the gateway process exited with status %lld before the end of the "
                      "run",
                      (long long)m->gateway_exit_status);
        sum = fg_strdup(ev.s);
        v = FG_V_FAIL;
    }

    size_t nprobe = 0;
    int alive = 0;
    char *psum = NULL;
    for (size_t i = 0; m->probe_start_us && i < ngc; i++) {
        if (conn_open_us(gc[i]) < m->probe_start_us)
            continue;
        char *s = NULL;
        if (ev.len)
            sb_printf(&ev, "\n");
        int ok =
            probe_one(gc[i], (unsigned)i + 1, tl->stats.first_us, tl->stats.last_us, o, &ev, &s);
        if (!o->conn || (ok && !alive))
            o->conn = gc[i]->id;
        if (ok && !alive) {
            free(psum);
            psum = s;
            alive = 1;
        } else if (!psum) {
            psum = s;
        } else {
            free(s);
        }
        nprobe++;
    }
    free(gc);
    if (nprobe == 0) {
        if (ev.len)
            sb_printf(&ev, "\n");
        sb_printf(&ev, "no liveness probe connection to the gateway (port %d) in the trace%s",
                  m->gateway_port, m->probe_start_us ? " after the probe started" : "");
        if (!sum)
            sum = fg_strdup("no liveness probe connection in the trace");
    } else if (v != FG_V_FAIL) {
        v = alive ? FG_V_PASS : FG_V_FAIL;
        sum = psum;
        psum = NULL;
    }
    free(psum);
    set_result(o, v, sum);
    o->evidence = sb_take(&ev);
}

/* --- inbound-accepts-while-busy ------------------------------------------- */

/* Whether connection c, opened while the gateway was busy, got a 2xx
 * greeting within limit_us: 1 yes, 0 no, -1 the trace ends too soon. */
static int greeted_within(const struct fg_tl_conn *c, unsigned portno, uint64_t limit_us,
                          uint64_t t0, uint64_t trace_end, struct fg_outcome *o, struct sb *ev)
{
    char a[32], b[32];
    uint64_t open_us = conn_open_us(c);
    uint64_t open_frame = c->nev ? c->ev[0].frame : 0;
    frame_add(o, open_frame);
    sb_printf(ev, "inbound connection #%u (%s -> %s, opened frame %llu, t=+%s s) ", portno,
              c->client, c->server, (unsigned long long)open_frame,
              secs(a, sizeof a, since(open_us, t0)));
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *x = &c->ev[i];
        if (x->kind == FG_TL_REPLY && x->dir == FG_S2C) {
            frame_add(o, x->frame);
            uint64_t w = since(x->us, open_us);
            if (x->code / 100 == 2 && w <= limit_us) {
                sb_printf(ev, "was greeted with %d after %s s (frame %llu)", x->code,
                          secs(b, sizeof b, w), (unsigned long long)x->frame);
                return 1;
            }
            sb_printf(ev, "was answered %d after %s s (frame %llu)%s", x->code,
                      secs(b, sizeof b, w), (unsigned long long)x->frame,
                      x->code / 100 == 2 ? ": too late" : ", not a 2xx greeting");
            return 0;
        }
        if ((x->kind == FG_TL_RST || x->kind == FG_TL_FIN) && i > 0) {
            frame_add(o, x->frame);
            sb_printf(ev, "was %s without a greeting after %s s (%s by the %s, frame %llu)",
                      x->dir == FG_S2C ? (x->kind == FG_TL_RST ? "refused" : "closed") : "given up",
                      secs(b, sizeof b, since(x->us, open_us)),
                      x->kind == FG_TL_RST ? "RST" : "FIN", x->dir == FG_S2C ? "gateway" : "client",
                      (unsigned long long)x->frame);
            return 0;
        }
        if (x->kind == FG_TL_GAP) {
            sb_printf(ev, "lost bytes to a gap in the trace (frame %llu) before any greeting",
                      (unsigned long long)x->frame);
            return -1;
        }
    }
    uint64_t left = since(trace_end, open_us);
    sb_printf(ev, "got no greeting in the %s s of trace after it opened", secs(b, sizeof b, left));
    return left >= limit_us ? 0 : -1;
}

static int busy_action(const char *action)
{
    static const char *const busy[] = {"stall", "delay", "throttle", "blackhole", "slice"};
    for (size_t i = 0; i < sizeof busy / sizeof busy[0]; i++)
        if (strncmp(action, busy[i], strlen(busy[i])) == 0)
            return 1;
    return 0;
}

static void eval_busy(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o)
{
    const struct fg_meta *m = ctx->meta;
    const struct fg_timeline *tl = ctx->tl;
    uint64_t t0 = tl->stats.first_us;
    struct fg_tl_conn **pc, **gc;
    size_t npc = conns_to(tl, m->proxy_port, &pc);
    size_t ngc = conns_to(tl, m->gateway_port, &gc);
    struct sb ev = {0};
    char a[32], b[32];
    struct {
        uint64_t start, end;
    } busy[FG_MAX_FRAMES];
    size_t nbusy = 0;

    /* The gateway is busy from a slowing fault's decision until that
     * outbound connection ends (or the trace does). */
    for (size_t i = 0; i < m->ndecisions && nbusy < FG_MAX_FRAMES; i++) {
        const struct fg_decision *d = &m->decisions[i];
        if (!busy_action(d->action))
            continue;
        uint64_t end = tl->stats.last_us;
        if (d->conn >= 1 && d->conn <= npc) {
            const struct fg_tl_conn *c = pc[d->conn - 1];
            for (size_t k = 0; k < c->nev; k++)
                if ((c->ev[k].kind == FG_TL_FIN || c->ev[k].kind == FG_TL_RST) &&
                    c->ev[k].us >= d->t_us) {
                    end = c->ev[k].us;
                    break;
                }
        }
        busy[nbusy].start = d->t_us;
        busy[nbusy].end = end;
        nbusy++;
        sb_printf(&ev, "busy: %s on outbound connection #%u (%s) from t=+%s s to t=+%s s\n",
                  d->action, d->conn, d->trigger, secs(a, sizeof a, since(d->t_us, t0)),
                  secs(b, sizeof b, since(end, t0)));
    }
    size_t nin = 0, nbad = 0, nopen = 0;
    for (size_t i = 0; i < ngc && nbusy; i++) {
        uint64_t ou = conn_open_us(gc[i]);
        size_t k;
        for (k = 0; k < nbusy; k++)
            if (ou >= busy[k].start && ou <= busy[k].end)
                break;
        if (k == nbusy)
            continue;
        nin++;
        int r =
            greeted_within(gc[i], (unsigned)i + 1, limit_ms * 1000, t0, tl->stats.last_us, o, &ev);
        sb_printf(&ev, "\n");
        if (r == 0) {
            nbad++;
            if (!o->conn)
                o->conn = gc[i]->id;
        } else if (r < 0) {
            nopen++;
        }
    }
    free(pc);
    free(gc);
    struct sb lim = {0};
    limit_text(&lim, e->within, limit_ms, m);
    if (nbusy == 0) {
        sb_printf(&ev, "no stall, delay or throttle fault fired: the gateway was never busy");
        set_result(o, FG_V_INCONC, fg_strdup("the gateway was never made busy in this run"));
    } else if (nin == 0) {
        sb_printf(&ev, "no connection to the gateway (port %d) opened while it was busy",
                  m->gateway_port);
        set_result(o, FG_V_INCONC, fg_strdup("no inbound connection while the gateway was busy"));
    } else if (nbad) {
        set_result(o, FG_V_FAIL,
                   fg_asprintf("%zu of %zu inbound connection%s during the stall got no 2xx "
                               "greeting within %s",
                               nbad, nin, nin == 1 ? "" : "s", lim.s));
    } else if (nopen) {
        set_result(o, FG_V_INCONC,
                   fg_asprintf("%zu inbound connection%s during the stall: the trace cannot "
                               "show a greeting within %s",
                               nopen, nopen == 1 ? "" : "s", lim.s));
    } else {
        set_result(o, FG_V_PASS,
                   fg_asprintf("%zu inbound connection%s during the stall, each greeted with "
                               "2xx within %s",
                               nin, nin == 1 ? "" : "s", lim.s));
    }
    free(lim.s);
    while (ev.len && ev.s[ev.len - 1] == '\n')
        ev.s[--ev.len] = '\0';
    o->evidence = sb_take(&ev);
}

/* --- retries-after-drop ----------------------------------------------------- */

/* The index of an EHLO/HELO of c left unanswered when the server closed
 * or reset the connection, with *close the index of that FIN/RST; -1 if
 * none. */
static long dropped_hello(const struct fg_tl_conn *c, long *close)
{
    long hello = -1;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *x = &c->ev[i];
        if (x->kind == FG_TL_COMMAND && (x->verb == FG_VERB_EHLO || x->verb == FG_VERB_HELO))
            hello = (long)i;
        else if (x->kind == FG_TL_REPLY && x->answers == FG_ANS_COMMAND &&
                 (x->verb == FG_VERB_EHLO || x->verb == FG_VERB_HELO))
            hello = -1;
        else if (x->kind == FG_TL_GAP)
            return -1; /* the reply may be in the hole: no drop claimed */
        else if ((x->kind == FG_TL_FIN || x->kind == FG_TL_RST) && x->dir == FG_S2C && hello >= 0) {
            *close = (long)i;
            return hello;
        }
    }
    return -1;
}

static void eval_retry(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o)
{
    const struct fg_meta *m = ctx->meta;
    const struct fg_timeline *tl = ctx->tl;
    uint64_t t0 = tl->stats.first_us;
    struct fg_tl_conn **pc;
    size_t npc = conns_to(tl, m->proxy_port, &pc);
    struct sb ev = {0}, lim = {0};
    char a[32], b[32];
    limit_text(&lim, e->within, limit_ms, m);
    size_t first = npc, ndrops = 0;
    long hi = -1, ci = -1;
    for (size_t i = 0; i < npc; i++) {
        long cl = -1, h = dropped_hello(pc[i], &cl);
        if (h < 0)
            continue;
        if (ndrops++ == 0) {
            first = i;
            hi = h;
            ci = cl;
        }
    }
    if (first == npc) {
        sb_printf(&ev,
                  "none of the %zu connection%s to the proxy (port %d) was closed after "
                  "EHLO/HELO before its reply",
                  npc, npc == 1 ? "" : "s", m->proxy_port);
        set_result(o, FG_V_INCONC, fg_strdup("no connection was dropped after EHLO"));
    } else {
        const struct fg_tl_conn *c = pc[first];
        const struct fg_tl_event *he = &c->ev[hi], *ce = &c->ev[ci];
        o->conn = c->id;
        frame_add(o, he->frame);
        frame_add(o, ce->frame);
        sb_printf(&ev,
                  "outbound connection #%zu (%s -> %s): %s at frame %llu (t=+%s s), the next "
                  "hop %s the connection at frame %llu before replying\n",
                  first + 1, c->client, c->server, he->text ? he->text : "EHLO",
                  (unsigned long long)he->frame, secs(a, sizeof a, since(he->us, t0)),
                  ce->kind == FG_TL_RST ? "reset" : "closed", (unsigned long long)ce->frame);
        if (first + 1 < npc) {
            const struct fg_tl_conn *n = pc[first + 1];
            uint64_t w = since(conn_open_us(n), ce->us);
            long k = -1;
            for (size_t j = 0; j < n->nev && k < 0; j++)
                if (n->ev[j].kind == FG_TL_COMMAND &&
                    (n->ev[j].verb == FG_VERB_EHLO || n->ev[j].verb == FG_VERB_HELO))
                    k = (long)j;
            frame_add(o, n->nev ? n->ev[0].frame : 0);
            const char *verb = k < 0 ? NULL : n->ev[k].verb == FG_VERB_HELO ? "HELO" : "EHLO";
            if (k >= 0)
                frame_add(o, n->ev[k].frame);
            sb_printf(&ev, "the gateway connected again after %s s (connection #%zu, frame %llu)",
                      secs(b, sizeof b, w), first + 2,
                      (unsigned long long)(n->nev ? n->ev[0].frame : 0));
            if (verb)
                sb_printf(&ev, " and used %s%s", verb,
                          strcmp(verb, "HELO") == 0 ? " (the fallback of the KB's fix)" : "");
            if (w <= limit_ms * 1000)
                set_result(o, FG_V_PASS,
                           fg_asprintf("the gateway connected again %s s after the drop (limit "
                                       "%s)%s%s",
                                       secs(a, sizeof a, w), lim.s, verb ? ", with " : "",
                                       verb ? verb : ""));
            else
                set_result(o, FG_V_FAIL,
                           fg_asprintf("the gateway connected again only %s s after the drop "
                                       "(limit %s)",
                                       secs(a, sizeof a, w), lim.s));
        } else {
            uint64_t left = since(tl->stats.last_us, ce->us);
            sb_printf(&ev, "no later connection to the proxy in the %s s of trace after the drop",
                      secs(b, sizeof b, left));
            if (left >= limit_ms * 1000)
                set_result(o, FG_V_FAIL,
                           fg_asprintf("the gateway did not connect again within %s of the drop "
                                       "(KB Q197142: the service stopped)",
                                       lim.s));
            else
                set_result(o, FG_V_INCONC,
                           fg_asprintf("the trace ends %s s after the drop, before the limit %s",
                                       secs(a, sizeof a, left), lim.s));
        }
        if (ndrops > 1)
            sb_printf(&ev, "\n(%zu later drops after EHLO are not judged by this rule)",
                      ndrops - 1);
    }
    free(pc);
    free(lim.s);
    o->evidence = sb_take(&ev);
}

/* --- evaluation ---------------------------------------------------------- */

void fg_expect_eval(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                    struct fg_outcome *out)
{
    memset(out, 0, sizeof *out);
    const struct fg_expect_rule *r = rule_find(e->rule);
    out->rule = fg_strdup(e->rule ? e->rule : "");
    out->source = fg_strdup(r ? r->source : "");
    out->verdict = FG_V_ERROR;
    if (!r) {
        out->summary = fg_asprintf("unknown rule \"%s\"", out->rule);
        out->evidence = fg_strdup(out->summary);
        return;
    }
    if (!ctx || !ctx->meta || !ctx->tl) {
        out->summary = fg_strdup(ctx && ctx->tl ? "no run metadata beside the trace"
                                                : "no timeline: the trace could not be read");
        out->evidence = fg_strdup(out->summary);
        return;
    }
    if ((r->required & P_FATE) && !e->fate) {
        out->summary = fg_strdup("no `fate` given");
        out->evidence = fg_strdup(out->summary);
        return;
    }
    uint64_t limit_ms = 0;
    if (r->required & P_WITHIN) {
        char err[FG_ERRBUF_SIZE];
        err[0] = '\0';
        if (!e->within || within_meta(e->within, ctx->meta, &limit_ms, err, sizeof err) != 0) {
            out->summary = fg_asprintf("within \"%s\" cannot be evaluated against the run's "
                                       "timeouts: %s",
                                       e->within ? e->within : "", err[0] ? err : "missing");
            out->evidence = fg_strdup(out->summary);
            return;
        }
    }
    r->eval(e, ctx, limit_ms, out);
}
