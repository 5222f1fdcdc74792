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
#include <errno.h>
#include <jansson.h>
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
#define P_STAGE FG_EXPECT_P_STAGE
#define P_MIN FG_EXPECT_P_MIN
#define P_LEG FG_EXPECT_P_LEG

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
static void eval_timeout(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                         uint64_t limit_ms, struct fg_outcome *o);
static void eval_crlf(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o);
static void eval_dots(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o);
static void eval_length(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o);
static void eval_fallback(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o);
static void eval_data354(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                         uint64_t limit_ms, struct fg_outcome *o);
static void eval_nested(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o);
static void eval_pipelining(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                            uint64_t limit_ms, struct fg_outcome *o);
static void eval_retry4(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o);
static void eval_noretry5(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o);
static void eval_421(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                     uint64_t limit_ms, struct fg_outcome *o);
static void eval_quit(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
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
    {"retry-on-schedule",
     "RFC 5321 §4.5.4.1 (retry intervals: the schedule the gateway's profile declares)", P_WITHIN,
     P_WITHIN, eval_retry},
    {"timeout-at-least", "RFC 5321 §4.5.3.2 (SHOULD); the gateway profile's timeouts",
     P_STAGE | P_MIN, P_STAGE, eval_timeout},
    {"crlf-only", "RFC 5321 §2.3.8 (MUST)", P_LEG, 0, eval_crlf},
    {"dot-stuffing", "RFC 5321 §4.5.2 (MUST)", 0, 0, eval_dots},
    {"line-length", "RFC 5321 §4.5.3.1.4-§4.5.3.1.6 (MUST)", P_LEG, 0, eval_length},
    {"ehlo-helo-fallback", "RFC 5321 §3.2, §4.1.4 (SHOULD)", 0, 0, eval_fallback},
    {"no-data-without-354", "RFC 5321 §3.3, §4.1.1.4 (MUST); RFC 2920 §3.1", 0, 0, eval_data354},
    {"no-nested-mail", "RFC 5321 §4.1.4 (MUST NOT)", 0, 0, eval_nested},
    {"pipelining-only-if-advertised", "RFC 2920 §3.1 (MUST); RFC 3207 §4.2", 0, 0, eval_pipelining},
    {"retry-after-4xx", "RFC 5321 §4.2.1, §4.5.4.1 (MUST)", P_WITHIN, P_WITHIN, eval_retry4},
    {"no-retry-after-5xx", "RFC 5321 §4.2.5, §6.1 (MUST)", P_WITHIN, P_WITHIN, eval_noretry5},
    {"handles-421", "RFC 5321 §3.8, §4.2.2 (421: transient, SHOULD close)", P_WITHIN, P_WITHIN,
     eval_421},
    {"quit-at-end", "RFC 5321 §4.1.1.10 (MUST)", 0, 0, eval_quit},
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
static const char *const timeout_names[] = {"greeting",  "ehlo",       "mail",      "rcpt",
                                            "data_init", "data_block", "data_done", "idle",
                                            "retry",     "retry_max",  "give_up"};
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
    if (strcmp(param, "stage") == 0)
        return P_STAGE;
    if (strcmp(param, "min") == 0)
        return P_MIN;
    if (strcmp(param, "leg") == 0)
        return P_LEG;
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
    /* A trace recorded before profiles declared a retry schedule has
     * timeouts.retry alone: its schedule is fixed delays, given up after
     * three (what profile.c derives for such a profile). */
    struct fg_timeout t[NTIMEOUTS];
    size_t n = 0;
    uint64_t retry = 0;
    int have_retry = 0, have_max = 0, have_give_up = 0;
    for (size_t i = 0; m && i < m->ntimeouts && n < NTIMEOUTS; i++) {
        t[n++] = m->timeouts[i];
        if (strcmp(m->timeouts[i].name, "retry") == 0) {
            retry = m->timeouts[i].ms;
            have_retry = 1;
        }
        have_max |= strcmp(m->timeouts[i].name, "retry_max") == 0;
        have_give_up |= strcmp(m->timeouts[i].name, "give_up") == 0;
    }
    if (have_retry && !have_max && n < NTIMEOUTS)
        t[n++] = (struct fg_timeout){(char *)"retry_max", retry};
    if (have_retry && !have_give_up && n < NTIMEOUTS)
        t[n++] = (struct fg_timeout){(char *)"give_up", 3 * retry};
    struct fg_profile p;
    timeouts_profile(&p, t, n);
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
    } given[] = {{P_WITHIN, "within", e->within}, {P_FATE, "fate", e->fate},
                 {P_AFTER, "after", e->after},    {P_STAGE, "stage", e->stage},
                 {P_MIN, "min", e->min},          {P_LEG, "leg", e->leg}};
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

    if (e->stage) {
        static const char *const st[] = {"greeting",  "ehlo",       "mail",      "rcpt",
                                         "data_init", "data_block", "data_done", "idle"};
        size_t i;
        for (i = 0; i < sizeof st / sizeof st[0] && strcmp(st[i], e->stage) != 0; i++)
            ;
        if (i == sizeof st / sizeof st[0])
            return fg_errf(err, errlen, FG_EINPUT,
                           "%s:%d:%d: unknown stage \"%s\" (one of greeting, ehlo, mail, rcpt, "
                           "data_init, data_block, data_done, idle)",
                           file, e->line, e->col, e->stage);
    }
    if (e->leg && strcmp(e->leg, "outbound") != 0 && strcmp(e->leg, "inbound") != 0)
        return fg_errf(err, errlen, FG_EINPUT, "%s:%d:%d: `leg` is outbound or inbound, not \"%s\"",
                       file, e->line, e->col, e->leg);
    if (e->min) {
        struct fg_timeout t[NTIMEOUTS];
        for (size_t i = 0; i < NTIMEOUTS; i++) {
            t[i].name = (char *)timeout_names[i];
            t[i].ms = 1000;
        }
        struct fg_profile p;
        timeouts_profile(&p, t, NTIMEOUTS);
        uint64_t ms;
        char msg[FG_ERRBUF_SIZE] = "";
        int rc = fg_within_eval(e->min, &p, &ms, msg, sizeof msg, NULL);
        if (rc != 0)
            return fg_errf(err, errlen, rc, "%s:%d:%d: min \"%s\": %s", file, e->line, e->col,
                           e->min, msg[0] ? msg : fg_strerror(rc));
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
static void limit_text(struct fg_strbuf *b, const char *expr, uint64_t ms, const struct fg_meta *m)
{
    char t[32];
    fg_strbuf_printf(b, "%s s", secs(t, sizeof t, ms * 1000));
    if (!expr || !strstr(expr, "timeouts."))
        return;
    fg_strbuf_printf(b, " = %s (", expr);
    const char *p = expr;
    int first = 1;
    while ((p = strstr(p, "timeouts.")) != NULL) {
        p += strlen("timeouts.");
        size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyz_0123456789");
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(n < 31 ? n : 31), p);
        int64_t v = fg_meta_timeout(m, name);
        if (v >= 0)
            fg_strbuf_printf(b, "%s%s = %s s", first ? "" : ", ", name,
                             secs(t, sizeof t, (uint64_t)v * 1000));
        first = 0;
        p += n;
    }
    fg_strbuf_printf(b, ")");
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
            if (fg_tl_is_end_of_data(e))
                return (long)i;
            break;
        case FG_TRIG_REPLY_TO_EOD:
            if (fg_tl_is_eod_reply(e))
                return (long)i;
            break;
        case FG_TRIG_OPENING:
            if (fg_tl_is_opening(e))
                return (long)i;
            break;
        case FG_TRIG_DATA_START:
            if (fg_tl_is_data_start(c, i))
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
                                 struct fg_strbuf *ev, char **summary)
{
    const struct fg_meta *m = ctx->meta;
    const struct fg_timeline *tl = ctx->tl;
    uint64_t t0 = tl->stats.first_us;
    char a[32], b[32], c[32];
    const char *trig = d->trigger[0] ? d->trigger : "its trigger";

    if (d->conn == 0 || d->conn > npc) {
        fg_strbuf_printf(
            ev,
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

    struct fg_strbuf where = {0};
    fg_strbuf_printf(&where, "connection #%u (%s -> %s", d->conn, cn->client, cn->server);
    if (cn->id != d->conn)
        fg_strbuf_printf(&where, ", trace connection %u", cn->id);
    if (si >= 0)
        fg_strbuf_printf(&where, ", frame %llu, t=+%s s)", (unsigned long long)stall_frame,
                         secs(a, sizeof a, since(stall_us, t0)));
    else
        fg_strbuf_printf(&where,
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
    struct fg_strbuf lim = {0};
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
            fg_strbuf_printf(ev,
                             "%s stalled after %s; the gateway closed it with %s (frame %llu, "
                             "t=+%s s) after %s s, limit %s",
                             where.s, trig, how, (unsigned long long)x->frame,
                             secs(a, sizeof a, since(x->us, t0)), secs(b, sizeof b, dt), lim.s);
            *summary = fg_asprintf("the gateway closed the connection stalled after %s after "
                                   "%s s (limit %s s)",
                                   trig, secs(b, sizeof b, dt), secs(c, sizeof c, limit_us));
        } else {
            v = FG_V_FAIL;
            fg_strbuf_printf(ev,
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
            fg_strbuf_printf(
                ev,
                "stall after %s on %s: the gateway never closed it: no FIN or RST "
                "from the gateway in the %s s of trace after the stall%s (limit %s)",
                trig, where.s, secs(a, sizeof a, left),
                run_end_us < tl->stats.last_us ? ", until faultgate ended the run" : "", lim.s);
            *summary = fg_asprintf("the gateway never closed the connection stalled after %s "
                                   "(%s s of trace after the stall, limit %s s)",
                                   trig, secs(a, sizeof a, left), secs(c, sizeof c, limit_us));
        } else {
            v = FG_V_INCONC;
            fg_strbuf_printf(ev,
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
    struct fg_strbuf ev = {0};
    enum fg_verdict worst = FG_V_SKIP;
    char *wsum = NULL;
    size_t nstall = 0;

    for (size_t i = 0; i < m->ndecisions; i++) {
        const struct fg_decision *d = &m->decisions[i];
        if (strncmp(d->action, "stall", 5) != 0 || (only && d->fault + 1 != only))
            continue;
        char *sum = NULL;
        if (nstall++)
            fg_strbuf_printf(&ev, "\n");
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
        fg_strbuf_printf(&ev,
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
    o->evidence = fg_strbuf_take(&ev);
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
                                size_t nout, struct fg_outcome *o, struct fg_strbuf *ev,
                                char **fate_out)
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

    fg_strbuf_printf(ev, "message %s: ", tok->token);
    if (!accepted) {
        *fate_out = "refused";
        if (seen.c) {
            frame_add(o, seen.frame);
            if (seen.code)
                fg_strbuf_printf(ev,
                                 "refused: the gateway answered %d to its end of data on inbound "
                                 "connection #%u (%s -> %s, frame %llu, t=+%s s)",
                                 seen.code, seen.portno, seen.c->client, seen.c->server,
                                 (unsigned long long)seen.frame,
                                 secs(a, sizeof a, since(seen.us, t0)));
            else
                fg_strbuf_printf(ev,
                                 "refused: no reply to its end of data on inbound connection #%u "
                                 "(%s -> %s, frame %llu)",
                                 seen.portno, seen.c->client, seen.c->server,
                                 (unsigned long long)seen.frame);
            o->conn = o->conn ? o->conn : seen.c->id;
        } else {
            fg_strbuf_printf(ev,
                             "refused: not accepted: it is on no inbound connection (port %d) of "
                             "the trace with a 2xx reply",
                             ctx->meta->gateway_port);
            if (tok->reply_code)
                fg_strbuf_printf(ev, " (the injector saw reply %d)", tok->reply_code);
        }
        fg_strbuf_printf(ev, "; expected %s", e->fate);
        return FG_V_FAIL;
    }

    frame_add(o, acc.frame);
    fg_strbuf_printf(ev, "accepted on inbound connection #%u (%s -> %s, frame %llu, t=+%s s); ",
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

    struct fg_strbuf lim = {0};
    limit_text(&lim, e->within, limit_ms, ctx->meta);
    const char *fate;
    if (ndel == 1) {
        fate = "delivered-once";
        frame_add(o, dl[0].frame);
        fg_strbuf_printf(ev,
                         "delivered once within %s: proxy-to-MTA connection #%u (frame %llu, "
                         "t=+%s s, %s s after acceptance)",
                         lim.s, dl[0].portno, (unsigned long long)dl[0].frame,
                         secs(a, sizeof a, since(dl[0].us, t0)),
                         secs(b, sizeof b, since(dl[0].us, acc.us)));
    } else if (ndel > 1) {
        fate = "duplicated";
        fg_strbuf_printf(
            ev, "duplicated: %zu deliveries at the fake MTA within %s (RFC 1047):", ndel, lim.s);
        for (size_t k = 0; k < ndel && k < FG_MAX_FRAMES; k++) {
            frame_add(o, dl[k].frame);
            fg_strbuf_printf(ev, "%s proxy-to-MTA connection #%u (frame %llu, t=+%s s)",
                             k ? ";" : "", dl[k].portno, (unsigned long long)dl[k].frame,
                             secs(a, sizeof a, since(dl[k].us, t0)));
        }
    } else if (nbounce) {
        fate = "bounced";
        frame_add(o, bounce.frame);
        fg_strbuf_printf(ev,
                         "bounced: no delivery, a bounce with the null reverse-path <> on "
                         "proxy-to-MTA connection #%u (frame %llu, t=+%s s) within %s",
                         bounce.portno, (unsigned long long)bounce.frame,
                         secs(a, sizeof a, since(bounce.us, t0)), lim.s);
    } else if (ctx->tl->stats.last_us >= deadline) {
        fate = "lost";
        fg_strbuf_printf(ev,
                         "lost: neither delivered nor bounced within %s (0 deliveries at the fake "
                         "MTA)",
                         lim.s);
    } else {
        fate = "deferred";
        fg_strbuf_printf(ev,
                         "deferred: neither delivered nor bounced yet, but the trace ends %s s "
                         "after acceptance, before the limit %s",
                         secs(a, sizeof a, since(ctx->tl->stats.last_us, acc.us)), lim.s);
    }
    free(lim.s);
    if (nlate)
        fg_strbuf_printf(ev, " (and %zu more after the limit)", nlate);
    *fate_out = (char *)fate;
    if (fate_matches(e->fate, fate))
        return FG_V_PASS;
    fg_strbuf_printf(ev, "; expected %s", e->fate);
    if (!o->conn)
        o->conn = acc.c->id;
    return strcmp(fate, "deferred") == 0 ? FG_V_INCONC : FG_V_FAIL;
}

/* The cross-check of the trace against the fake MTA's ledger: the
 * deliveries the wire shows (a 2xx to the end of data on a connection to
 * the MTA's port) and the messages the MTA recorded, counted per token.
 * When they disagree the trace is not a faithful record of the run (a
 * capture that dropped packets, a gap, a connection the capture missed),
 * so a fate read from it is not asserted. */
struct lrow {
    char token[FG_TOKEN_MAX];
    size_t wire, ledger;
    unsigned wire_conn, ledger_conn; /* first of each: port order / the MTA's number */
    uint64_t wire_frame;
};

struct lcheck {
    int done;      /* the ledger was read */
    char *path;    /* owned */
    char *problem; /* why it was not read (owned), or NULL */
    struct lrow *row;
    size_t nrow, caprow;
    size_t nwire, nledger;
    struct fg_strbuf text; /* the disagreements, for the evidence */
    size_t nbad;
};

static struct lrow *lrow_get(struct lcheck *lc, const char *token)
{
    for (size_t i = 0; i < lc->nrow; i++)
        if (strcmp(lc->row[i].token, token) == 0)
            return &lc->row[i];
    struct lrow *r = FG_ARRAY_PUSH(lc->row, lc->nrow, lc->caprow);
    memset(r, 0, sizeof *r);
    snprintf(r->token, sizeof r->token, "%s", token);
    return r;
}

/* Read the ledger's "message" lines (JSON lines, fakes/mta.c). */
static int ledger_read(struct lcheck *lc)
{
    FILE *f;
    char why[FG_ERRBUF_SIZE];
    /* A regular file only (a FIFO would hang the judge), of at most 1 GiB. */
    if (fg_file_open(lc->path, (uint64_t)1 << 30, &f, why, sizeof why) < 0) {
        lc->problem = fg_strdup(why);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (n == 0 || line[0] == '\n')
            continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)n, 0, &je);
        if (!o || !json_is_object(o)) {
            lc->problem =
                fg_asprintf("%s:%u:%d: %s", lc->path, lineno, je.column > 0 ? je.column : 1,
                            o ? "not a JSON object" : je.text);
            json_decref(o);
            free(line);
            fclose(f);
            return -1;
        }
        const char *ev = json_string_value(json_object_get(o, "event"));
        if (!ev || strcmp(ev, "message") == 0) {
            const char *tok = json_string_value(json_object_get(o, "token"));
            struct lrow *r = lrow_get(lc, tok ? tok : "");
            if (r->ledger++ == 0)
                r->ledger_conn = (unsigned)json_integer_value(json_object_get(o, "conn"));
            lc->nledger++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return 0;
}

static void ledger_check(struct lcheck *lc, const struct fg_judge_ctx *ctx, struct fg_tl_conn **out,
                         size_t nout)
{
    memset(lc, 0, sizeof *lc);
    const struct fg_meta *m = ctx->meta;
    if (!m->ledger || !m->ledger[0] || !ctx->pcap)
        return;
    /* The ledger's path is relative to the meta file, which is beside
     * the capture. */
    if (m->ledger[0] == '/') {
        lc->path = fg_strdup(m->ledger);
    } else {
        const char *slash = strrchr(ctx->pcap, '/');
        lc->path = slash ? fg_asprintf("%.*s/%s", (int)(slash - ctx->pcap), ctx->pcap, m->ledger)
                         : fg_strdup(m->ledger);
    }
    if (ledger_read(lc) < 0)
        return;
    lc->done = 1;
    for (size_t i = 0; i < nout; i++)
        for (size_t j = 0; j < out[i]->nmsg; j++) {
            const struct fg_tl_msg *mm = &out[i]->msg[j];
            if (mm->reply_code / 100 != 2 || mm->reply_event >= out[i]->nev)
                continue;
            struct lrow *r = lrow_get(lc, mm->token);
            if (r->wire++ == 0) {
                r->wire_conn = (unsigned)i + 1;
                r->wire_frame = out[i]->ev[mm->reply_event].frame;
            }
            lc->nwire++;
        }
    /* A token the one side found and the other did not (a bounce that
     * quotes it beyond the part the timeline scans) is still the same
     * message: what is left over without a token on one side pairs with
     * what is left over with a token on the other. */
    size_t wire_untok = 0, ledger_untok = 0, wire_extra = 0, ledger_extra = 0;
    for (size_t i = 0; i < lc->nrow; i++) {
        struct lrow *r = &lc->row[i];
        size_t w = r->wire > r->ledger ? r->wire - r->ledger : 0;
        size_t l = r->ledger > r->wire ? r->ledger - r->wire : 0;
        if (!r->token[0]) {
            wire_untok += w;
            ledger_untok += l;
        } else {
            wire_extra += w;
            ledger_extra += l;
        }
    }
    size_t pair_w = wire_untok < ledger_extra ? wire_untok : ledger_extra;
    size_t pair_l = ledger_untok < wire_extra ? ledger_untok : wire_extra;
    if (wire_untok == pair_w && ledger_untok == pair_l && wire_extra == pair_l &&
        ledger_extra == pair_w)
        return; /* every message accounted for */
    for (size_t i = 0; i < lc->nrow; i++) {
        struct lrow *r = &lc->row[i];
        if (r->wire == r->ledger)
            continue;
        lc->nbad++;
        const char *tok = r->token[0] ? r->token : "(none)";
        if (r->wire > r->ledger)
            fg_strbuf_printf(
                &lc->text,
                "%stoken %s: %zu deliver%s on the wire (first: proxy-to-MTA connection #%u, "
                "frame %llu) but %zu in the fake MTA's ledger %s",
                lc->nbad > 1 ? "; " : "", tok, r->wire, r->wire == 1 ? "y" : "ies", r->wire_conn,
                (unsigned long long)r->wire_frame, r->ledger, lc->path);
        else
            fg_strbuf_printf(&lc->text,
                             "%stoken %s: %zu message%s in the fake MTA's ledger %s (first: its "
                             "connection %u) but %zu deliver%s seen on the wire",
                             lc->nbad > 1 ? "; " : "", tok, r->ledger, r->ledger == 1 ? "" : "s",
                             lc->path, r->ledger_conn, r->wire, r->wire == 1 ? "y" : "ies");
    }
}

/* Whether the ledger and the wire disagree about token. */
static int ledger_disagrees(const struct lcheck *lc, const char *token)
{
    if (!lc->done || !lc->nbad)
        return 0;
    for (size_t i = 0; i < lc->nrow; i++)
        if (strcmp(lc->row[i].token, token) == 0)
            return lc->row[i].wire != lc->row[i].ledger;
    return 0;
}

static void ledger_free(struct lcheck *lc)
{
    free(lc->path);
    free(lc->problem);
    free(lc->row);
    free(lc->text.s);
}

static void eval_fate(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o)
{
    const struct fg_meta *m = ctx->meta;
    struct fg_tl_conn **in, **out;
    size_t nin = conns_to(ctx->tl, m->gateway_port, &in);
    size_t nout = conns_to(ctx->tl, m->mta_port, &out);
    struct fg_strbuf ev = {0};
    enum fg_verdict worst = FG_V_PASS;
    char *wsum = NULL;
    size_t nbad = 0;
    struct lcheck lc;
    ledger_check(&lc, ctx, out, nout);

    for (size_t i = 0; i < m->ntokens; i++) {
        char *fate = NULL;
        if (i)
            fg_strbuf_printf(&ev, "\n");
        enum fg_verdict v =
            fate_one(&m->tokens[i], e, limit_ms, ctx, in, nin, out, nout, o, &ev, &fate);
        /* The wire and the ledger disagree about this message: its fate
         * as the trace shows it is not asserted either way. */
        int unsure =
            v != FG_V_INCONC && v != FG_V_ERROR && ledger_disagrees(&lc, m->tokens[i].token);
        if (unsure) {
            fg_strbuf_printf(&ev, " (but the fake MTA's ledger disagrees with the trace)");
            v = FG_V_INCONC;
        }
        if (v != FG_V_PASS) {
            nbad++;
            if (!wsum || verdict_rank(v) > verdict_rank(worst)) {
                free(wsum);
                wsum = fg_asprintf(
                    "message %s: %s%s, expected %s", m->tokens[i].token, fate,
                    unsure ? " on the wire, but the fake MTA's ledger disagrees" : "", e->fate);
            }
            worst = fg_verdict_worst(worst, v);
        }
    }
    free(in);
    free(out);
    if (lc.done && lc.nbad) {
        fg_strbuf_printf(&ev, "%sledger disagrees with the trace: %s", m->ntokens ? "\n" : "",
                         lc.text.s);
        if (worst == FG_V_PASS && m->ntokens) {
            /* Only messages the run did not inject disagree. */
            worst = FG_V_INCONC;
            nbad = 0;
            free(wsum);
            wsum = fg_asprintf("%zu message%s %s as expected on the wire, but the fake MTA's "
                               "ledger disagrees with the trace",
                               m->ntokens, m->ntokens == 1 ? "" : "s", e->fate);
        }
    } else if (lc.done && m->ntokens) {
        fg_strbuf_printf(&ev, "\nledger agrees: %zu message%s", lc.nledger,
                         lc.nledger == 1 ? "" : "s");
    } else if (lc.problem && m->ntokens) {
        fg_strbuf_printf(&ev, "\nledger not read (%s): not cross-checked", lc.problem);
    }
    ledger_free(&lc);
    if (m->ntokens == 0) {
        fg_strbuf_printf(&ev, "the run's metadata lists no injected message");
        set_result(o, FG_V_INCONC, fg_strdup("no message was injected"));
    } else if (nbad == 0 && worst == FG_V_PASS) {
        set_result(o, FG_V_PASS,
                   fg_asprintf("%zu message%s: %s as expected", m->ntokens,
                               m->ntokens == 1 ? "" : "s", e->fate));
    } else if (nbad == 0) {
        set_result(o, worst, wsum); /* the ledger alone disagrees */
    } else {
        if (nbad > 1) {
            char *s =
                fg_asprintf("%s (%zu of %zu messages not %s)", wsum, nbad, m->ntokens, e->fate);
            free(wsum);
            wsum = s;
        }
        set_result(o, worst, wsum);
    }
    o->evidence = fg_strbuf_take(&ev);
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
                     struct fg_outcome *o, struct fg_strbuf *ev, char **summary)
{
    char a[32], b[32];
    uint64_t open_us = conn_open_us(c);
    uint64_t open_frame = c->nev ? c->ev[0].frame : 0;
    frame_add(o, open_frame);
    fg_strbuf_printf(ev,
                     "liveness probe: connection #%u to the gateway (%s -> %s, opened frame %llu, "
                     "t=+%s s) ",
                     portno, c->client, c->server, (unsigned long long)open_frame,
                     secs(a, sizeof a, since(open_us, t0)));
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *x = &c->ev[i];
        if (x->kind == FG_TL_REPLY && x->dir == FG_S2C) {
            frame_add(o, x->frame);
            if (x->code / 100 == 2) {
                fg_strbuf_printf(ev, "got the greeting %d (frame %llu) after %s s", x->code,
                                 (unsigned long long)x->frame,
                                 secs(b, sizeof b, since(x->us, open_us)));
                *summary = fg_asprintf("the gateway answered the liveness probe with %d", x->code);
                return 1;
            }
            fg_strbuf_printf(
                ev, "was answered %d instead of a 2xx greeting (frame %llu, after %s s)", x->code,
                (unsigned long long)x->frame, secs(b, sizeof b, since(x->us, open_us)));
            *summary = fg_asprintf("the gateway answered the liveness probe with %d, not a 2xx "
                                   "greeting",
                                   x->code);
            return 0;
        }
        if ((x->kind == FG_TL_RST || x->kind == FG_TL_FIN) && x->dir == FG_S2C) {
            frame_add(o, x->frame);
            if (x->kind == FG_TL_RST && i == 1 && x->frame == open_frame + 1) {
                fg_strbuf_printf(ev, "was refused: its SYN was answered by RST (frame %llu)",
                                 (unsigned long long)x->frame);
                *summary = fg_strdup("the gateway refused the liveness probe connection");
            } else {
                fg_strbuf_printf(ev,
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
            fg_strbuf_printf(ev, "got no greeting: the probe gave up after %s s (%s, frame %llu)",
                             secs(b, sizeof b, since(x->us, open_us)),
                             x->kind == FG_TL_RST ? "RST" : "FIN", (unsigned long long)x->frame);
            *summary = fg_strdup("the gateway did not greet the liveness probe");
            return 0;
        }
    }
    fg_strbuf_printf(ev, "got no greeting in the %s s of trace after it opened",
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
    struct fg_strbuf ev = {0};
    enum fg_verdict v = FG_V_INCONC;
    char *sum = NULL;

    if (!m->gateway_running_at_end) {
        if (m->gateway_term_signal > 0)
            fg_strbuf_printf(&ev,
                             "the gateway process died with signal %d (%s) before the end of the "
                             "run",
                             m->gateway_term_signal, signal_abbrev(m->gateway_term_signal));
        else
            fg_strbuf_printf(&ev,
                             "the gateway process exited with status %lld before the end of the "
                             "run",
                             (long long)m->gateway_exit_status);
        sum = fg_strdup(ev.s);
        if (m->gateway_last_output)
            fg_strbuf_printf(&ev, "\nthe gateway's last output: %s", m->gateway_last_output);
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
            fg_strbuf_printf(&ev, "\n");
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
            fg_strbuf_printf(&ev, "\n");
        fg_strbuf_printf(&ev,
                         "no liveness probe connection to the gateway (port %d) in the trace%s",
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
    o->evidence = fg_strbuf_take(&ev);
}

/* --- inbound-accepts-while-busy ------------------------------------------- */

/* Whether connection c, opened while the gateway was busy, got a 2xx
 * greeting within limit_us: 1 yes, 0 no, -1 the trace ends too soon. */
static int greeted_within(const struct fg_tl_conn *c, unsigned portno, uint64_t limit_us,
                          uint64_t t0, uint64_t trace_end, struct fg_outcome *o,
                          struct fg_strbuf *ev)
{
    char a[32], b[32];
    uint64_t open_us = conn_open_us(c);
    uint64_t open_frame = c->nev ? c->ev[0].frame : 0;
    frame_add(o, open_frame);
    fg_strbuf_printf(ev, "inbound connection #%u (%s -> %s, opened frame %llu, t=+%s s) ", portno,
                     c->client, c->server, (unsigned long long)open_frame,
                     secs(a, sizeof a, since(open_us, t0)));
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *x = &c->ev[i];
        if (x->kind == FG_TL_REPLY && x->dir == FG_S2C) {
            frame_add(o, x->frame);
            uint64_t w = since(x->us, open_us);
            if (x->code / 100 == 2 && w <= limit_us) {
                fg_strbuf_printf(ev, "was greeted with %d after %s s (frame %llu)", x->code,
                                 secs(b, sizeof b, w), (unsigned long long)x->frame);
                return 1;
            }
            fg_strbuf_printf(ev, "was answered %d after %s s (frame %llu)%s", x->code,
                             secs(b, sizeof b, w), (unsigned long long)x->frame,
                             x->code / 100 == 2 ? ": too late" : ", not a 2xx greeting");
            return 0;
        }
        if ((x->kind == FG_TL_RST || x->kind == FG_TL_FIN) && i > 0) {
            frame_add(o, x->frame);
            fg_strbuf_printf(
                ev, "was %s without a greeting after %s s (%s by the %s, frame %llu)",
                x->dir == FG_S2C ? (x->kind == FG_TL_RST ? "refused" : "closed") : "given up",
                secs(b, sizeof b, since(x->us, open_us)), x->kind == FG_TL_RST ? "RST" : "FIN",
                x->dir == FG_S2C ? "gateway" : "client", (unsigned long long)x->frame);
            return 0;
        }
        if (x->kind == FG_TL_GAP) {
            fg_strbuf_printf(ev,
                             "lost bytes to a gap in the trace (frame %llu) before any greeting",
                             (unsigned long long)x->frame);
            return -1;
        }
    }
    uint64_t left = since(trace_end, open_us);
    fg_strbuf_printf(ev, "got no greeting in the %s s of trace after it opened",
                     secs(b, sizeof b, left));
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
    struct fg_strbuf ev = {0};
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
        fg_strbuf_printf(&ev, "busy: %s on outbound connection #%u (%s) from t=+%s s to t=+%s s\n",
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
        fg_strbuf_printf(&ev, "\n");
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
    struct fg_strbuf lim = {0};
    limit_text(&lim, e->within, limit_ms, m);
    if (nbusy == 0) {
        fg_strbuf_printf(&ev,
                         "no stall, delay or throttle fault fired: the gateway was never busy");
        set_result(o, FG_V_INCONC, fg_strdup("the gateway was never made busy in this run"));
    } else if (nin == 0) {
        fg_strbuf_printf(&ev, "no connection to the gateway (port %d) opened while it was busy",
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
    o->evidence = fg_strbuf_take(&ev);
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
    struct fg_strbuf ev = {0}, lim = {0};
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
        fg_strbuf_printf(&ev,
                         "none of the %zu connection%s to the proxy (port %d) was closed after "
                         "EHLO/HELO before its reply",
                         npc, npc == 1 ? "" : "s", m->proxy_port);
        set_result(o, FG_V_INCONC, fg_strdup("no connection was dropped after EHLO or HELO"));
    } else {
        const struct fg_tl_conn *c = pc[first];
        const struct fg_tl_event *he = &c->ev[hi], *ce = &c->ev[ci];
        o->conn = c->id;
        frame_add(o, he->frame);
        frame_add(o, ce->frame);
        fg_strbuf_printf(
            &ev,
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
            fg_strbuf_printf(
                &ev, "the gateway connected again after %s s (connection #%zu, frame %llu)",
                secs(b, sizeof b, w), first + 2, (unsigned long long)(n->nev ? n->ev[0].frame : 0));
            if (verb)
                fg_strbuf_printf(&ev, " and used %s%s", verb,
                                 strcmp(verb, "HELO") == 0 ? " (the fallback of the KB's fix)"
                                                           : "");
            if (w <= limit_ms * 1000)
                set_result(o, FG_V_PASS,
                           fg_asprintf("the gateway connected again %s s after the drop (limit "
                                       "%s)%s%s",
                                       secs(a, sizeof a, w), lim.s, verb ? ", with " : "",
                                       verb ? verb : ""));
            else
                set_result(o, FG_V_FAIL,
                           fg_asprintf("the gateway connected again only %s s after the drop "
                                       "(limit %s)%s",
                                       secs(a, sizeof a, w), lim.s,
                                       strcmp(e->rule, "retry-on-schedule") == 0
                                           ? ": later than its profile's retry schedule"
                                           : ""));
        } else {
            uint64_t left = since(tl->stats.last_us, ce->us);
            fg_strbuf_printf(&ev,
                             "no later connection to the proxy in the %s s of trace after the drop",
                             secs(b, sizeof b, left));
            if (left >= limit_ms * 1000)
                set_result(o, FG_V_FAIL,
                           fg_asprintf("the gateway did not connect again within %s of the drop "
                                       "(%s)",
                                       lim.s,
                                       strcmp(e->rule, "retry-on-schedule") == 0
                                           ? "later than the retry schedule its profile declares"
                                           : "KB Q197142: the service stopped"));
            else
                set_result(o, FG_V_INCONC,
                           fg_asprintf("the trace ends %s s after the drop, before the limit %s",
                                       secs(a, sizeof a, left), lim.s));
        }
        if (ndrops > 1)
            fg_strbuf_printf(&ev, "\n(%zu later drops after EHLO are not judged by this rule)",
                             ndrops - 1);
    }
    free(pc);
    free(lim.s);
    o->evidence = fg_strbuf_take(&ev);
}

/* --- the conformance catalog: per-connection checks ------------------------
 *
 * These rules judge how the gateway speaks SMTP, from the wire alone.  Each
 * looks at the connections of one leg: outbound (the gateway is the client,
 * connections to meta->proxy_port) or, for the rules about what the
 * gateway sends whichever role it plays (crlf-only, line-length), inbound
 * (the gateway is the server, connections to meta->gateway_port).  A
 * connection is OK, BAD (evidence says where), NA (the rule had nothing
 * to judge there) or UNSURE (a gap in the capture, or the trace ends before
 * the rule can decide).  Verdict: any BAD -> fail; else any UNSURE ->
 * inconc; else any OK -> pass; else inconc (not exercised). */

enum cres { C_NA, C_OK, C_BAD, C_UNSURE };

struct cctx {
    const struct fg_judge_ctx *ctx;
    const struct fg_expect_spec *e;
    uint64_t limit_ms;
    enum fg_dir gw;          /* the gateway's direction on this leg */
    struct fg_tl_conn **all; /* every connection of the leg, in order */
    size_t nall;
    size_t idx;          /* this connection's index in all */
    uint64_t run_end_us; /* the gateway's own behaviour ends here */
    struct fg_strbuf *ev;
    struct fg_outcome *o;
    char why[200]; /* the first BAD's one-line reason */
    /* Why a connection the rule had nothing to judge took a path the rule
     * does not cover (BDAT, a HELO opening): with no connection judged,
     * the rule is skip with this reason, not inconc. */
    char skip[200];
};

static void cskip(struct cctx *x, const char *why)
{
    if (!x->skip[0])
        snprintf(x->skip, sizeof x->skip, "%s", why);
}

typedef enum cres (*conn_check_fn)(const struct fg_tl_conn *c, struct cctx *x);

static void cbad(struct cctx *x, const struct fg_tl_conn *c, uint64_t frame, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cbad(struct cctx *x, const struct fg_tl_conn *c, uint64_t frame, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char t[32];
    uint64_t us = 0;
    for (size_t i = 0; i < c->nev; i++)
        if (c->ev[i].frame == frame) {
            us = c->ev[i].us;
            break;
        }
    fg_strbuf_printf(x->ev, "connection #%zu (%s -> %s), frame %llu, t=+%s s: %s\n", x->idx + 1,
                     c->client, c->server, (unsigned long long)frame,
                     secs(t, sizeof t, since(us, x->ctx->tl->stats.first_us)), msg);
    frame_add(x->o, frame);
    if (!x->o->conn)
        x->o->conn = c->id;
    if (!x->why[0])
        snprintf(x->why, sizeof x->why, "%s", msg);
}

static int conn_gap(const struct fg_tl_conn *c, int dir)
{
    for (size_t i = 0; i < c->nev; i++)
        if (c->ev[i].kind == FG_TL_GAP && (dir < 0 || (int)c->ev[i].dir == dir))
            return 1;
    return 0;
}

static int leg_inbound(const struct fg_expect_spec *e)
{
    return e->leg && strcmp(e->leg, "inbound") == 0;
}

static void eval_per_conn(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o, conn_check_fn fn,
                          const char *what)
{
    const struct fg_meta *m = ctx->meta;
    int inb = leg_inbound(e);
    int port = inb ? m->gateway_port : m->proxy_port;
    struct cctx x;
    struct fg_strbuf ev = {0};
    memset(&x, 0, sizeof x);
    x.ctx = ctx;
    x.e = e;
    x.limit_ms = limit_ms;
    x.gw = inb ? FG_S2C : FG_C2S;
    x.ev = &ev;
    x.o = o;
    x.run_end_us = ctx->tl->stats.last_us;
    if (m->probe_start_us && m->probe_start_us < x.run_end_us)
        x.run_end_us = m->probe_start_us;
    x.nall = conns_to(ctx->tl, port, &x.all);
    size_t n[4] = {0};
    for (size_t i = 0; i < x.nall; i++) {
        /* the liveness probe's connections are faultgate's, not the run's */
        if (inb && m->probe_start_us && conn_open_us(x.all[i]) >= m->probe_start_us)
            continue;
        x.idx = i;
        enum cres r = fn(x.all[i], &x);
        n[r]++;
        if (r == C_UNSURE && !x.o->conn)
            x.o->conn = x.all[i]->id;
    }
    const char *legname = inb ? "inbound" : "outbound";
    size_t judged = n[C_OK] + n[C_BAD] + n[C_UNSURE];
    fg_strbuf_printf(&ev,
                     "%zu %s connection%s (port %d): %zu ok, %zu failing, %zu undecided, %zu not "
                     "concerned",
                     x.nall, legname, x.nall == 1 ? "" : "s", port, n[C_OK], n[C_BAD], n[C_UNSURE],
                     n[C_NA]);
    if (n[C_BAD])
        set_result(o, FG_V_FAIL,
                   fg_asprintf("%zu of %zu %s connection%s: %s", n[C_BAD], judged, legname,
                               judged == 1 ? "" : "s", x.why));
    else if (n[C_UNSURE])
        set_result(o, FG_V_INCONC,
                   fg_asprintf("%zu %s connection%s undecided (a gap in the capture or the "
                               "trace ends first)%s%s",
                               n[C_UNSURE], legname, n[C_UNSURE] == 1 ? "" : "s",
                               x.why[0] ? ": " : "", x.why));
    else if (n[C_OK])
        set_result(o, FG_V_PASS,
                   fg_asprintf("%zu %s connection%s: %s", n[C_OK], legname, n[C_OK] == 1 ? "" : "s",
                               what));
    else if (x.skip[0])
        set_result(o, FG_V_SKIP, fg_asprintf("does not apply: %s", x.skip));
    else
        set_result(o, FG_V_INCONC,
                   fg_asprintf("not exercised: no %s connection where the rule applies", legname));
    free(x.all);
    o->evidence = fg_strbuf_take(&ev);
}

/* crlf-only: RFC 5321 §2.3.8 (MUST): lines end in CRLF, no bare CR or LF. */
static enum cres chk_crlf(const struct fg_tl_conn *c, struct cctx *x)
{
    enum cres r = C_NA;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->dir != x->gw)
            continue;
        if (v->kind == FG_TL_VIOLATION && v->text &&
            (strcmp(v->text, "bare-lf") == 0 || strcmp(v->text, "bare-cr") == 0)) {
            cbad(x, c, v->frame, "the gateway sent a %s (RFC 5321 §2.3.8)",
                 strcmp(v->text, "bare-lf") == 0 ? "bare LF" : "bare CR");
            return C_BAD;
        }
        if (v->kind == FG_TL_GAP)
            r = C_UNSURE;
        else if (r == C_NA && (v->kind == FG_TL_COMMAND || v->kind == FG_TL_REPLY))
            r = C_OK;
    }
    return r;
}

/* line-length: RFC 5321 §4.5.3.1.4-6 (MUST accept, so senders keep to):
 * command lines 512, reply lines 512, text lines 1000 octets with CRLF. */
static enum cres chk_length(const struct fg_tl_conn *c, struct cctx *x)
{
    enum cres r = C_NA;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->dir != x->gw)
            continue;
        if (v->kind == FG_TL_VIOLATION && v->text &&
            (strcmp(v->text, "long-command") == 0 || strcmp(v->text, "long-text") == 0 ||
             strcmp(v->text, "long-reply") == 0)) {
            const char *what =
                strcmp(v->text, "long-command") == 0 ? "a command line over 512 octets (§4.5.3.1.4)"
                : strcmp(v->text, "long-reply") == 0 ? "a reply line over 512 octets (§4.5.3.1.5)"
                                                     : "a text line over 1000 octets (§4.5.3.1.6)";
            cbad(x, c, v->frame, "the gateway sent %s", what);
            return C_BAD;
        }
        if (v->kind == FG_TL_GAP)
            r = C_UNSURE;
        else if (r == C_NA && (v->kind == FG_TL_COMMAND || v->kind == FG_TL_REPLY))
            r = C_OK;
    }
    return r;
}

/* dot-stuffing: RFC 5321 §4.5.2 (MUST).  Precisely: (a) no body line the
 * gateway sent begins with a single "." followed by anything else (a line
 * the receiver would shorten; the terminator is not a body line), and
 * (b) a relayed message (matched by its token with the copy the gateway
 * accepted inbound) has as many lines beginning with ".." as that copy:
 * fewer means content lines beginning with "." were not stuffed (the dot
 * lost, or ".\r\n" ending the data early). */
static enum cres chk_dots(const struct fg_tl_conn *c, struct cctx *x)
{
    enum cres r = C_NA;
    struct fg_tl_conn **in = NULL;
    size_t nin = 0;
    for (size_t j = 0; j < c->nmsg; j++) {
        const struct fg_tl_msg *mm = &c->msg[j];
        if (mm->data_event >= c->nev || c->ev[mm->data_event].kind != FG_TL_DATA) {
            cskip(x, "the message went in BDAT chunks, which are not dot-stuffed (RFC 3030 §2)");
            continue;
        }
        if (mm->unstuffed_lines) {
            cbad(x, c, mm->unstuffed_frame,
                 "a body line begins with a single '.' (%llu such line%s): not dot-stuffed "
                 "(RFC 5321 §4.5.2)",
                 (unsigned long long)mm->unstuffed_lines, mm->unstuffed_lines == 1 ? "" : "s");
            free(in);
            return C_BAD;
        }
        if (r == C_NA)
            r = C_OK;
        if (!mm->token[0] || null_sender(mm->mail_from))
            continue;
        if (!in)
            nin = conns_to(x->ctx->tl, x->ctx->meta->gateway_port, &in);
        for (size_t i = 0; i < nin; i++)
            for (size_t k = 0; k < in[i]->nmsg; k++) {
                const struct fg_tl_msg *im = &in[i]->msg[k];
                if (strcmp(im->token, mm->token) != 0 || !im->complete)
                    continue;
                if (im->dot_lines > mm->dot_lines && mm->complete) {
                    uint64_t f = mm->eod_event < c->nev ? c->ev[mm->eod_event].frame
                                                        : c->ev[mm->data_event].frame;
                    cbad(x, c, f,
                         "message %s: %llu line%s beginning with \"..\" inbound, %llu relayed: "
                         "lines beginning with '.' were not stuffed (RFC 5321 §4.5.2)",
                         mm->token, (unsigned long long)im->dot_lines,
                         im->dot_lines == 1 ? "" : "s", (unsigned long long)mm->dot_lines);
                    free(in);
                    return C_BAD;
                }
            }
    }
    free(in);
    if (r == C_OK && conn_gap(c, FG_C2S))
        r = C_UNSURE;
    return r;
}

static int verb_is(const struct fg_tl_event *v, enum fg_smtp_verb verb)
{
    return v->kind == FG_TL_COMMAND && v->verb == verb;
}

static int is_reply_to(const struct fg_tl_event *v, enum fg_smtp_verb verb)
{
    return v->kind == FG_TL_REPLY && v->answers == FG_ANS_COMMAND && v->verb == verb;
}

/* ehlo-helo-fallback: RFC 5321 §3.2, §4.1.4 (SHOULD): a server that does
 * not know EHLO answers 500/502, and the client then sends HELO.  Only
 * RSET and NOOP may come between. */
static enum cres chk_fallback(const struct fg_tl_conn *c, struct cctx *x)
{
    enum cres r = C_NA;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (verb_is(v, FG_VERB_HELO) && fg_tl_conn_first(c, 0, FG_TL_COMMAND, FG_C2S) == (long)i)
            cskip(x, "the gateway opens with HELO (RFC 5321 §4.1.1.1 allows it): there is no "
                     "EHLO to fall back from");
        if (!(is_reply_to(v, FG_VERB_EHLO) && (v->code == 500 || v->code == 502)))
            continue;
        size_t k;
        for (k = i + 1; k < c->nev; k++) {
            const struct fg_tl_event *w = &c->ev[k];
            if (w->kind == FG_TL_GAP)
                return C_UNSURE;
            if (w->dir == FG_S2C && (w->kind == FG_TL_FIN || w->kind == FG_TL_RST))
                break; /* the server left first: nothing to judge */
            if (w->kind == FG_TL_COMMAND && (w->verb == FG_VERB_RSET || w->verb == FG_VERB_NOOP))
                continue;
            if (w->kind == FG_TL_COMMAND) {
                if (w->verb == FG_VERB_HELO) {
                    r = C_OK;
                } else {
                    cbad(x, c, w->frame,
                         "after %d to EHLO (frame %llu) the gateway sent %.40s, "
                         "not HELO (RFC 5321 §3.2, §4.1.4)",
                         v->code, (unsigned long long)v->frame, w->text ? w->text : "?");
                    return C_BAD;
                }
                break;
            }
            if (w->dir == FG_C2S && (w->kind == FG_TL_FIN || w->kind == FG_TL_RST)) {
                if (w->us >= x->run_end_us)
                    return C_UNSURE;
                cbad(x, c, w->frame,
                     "after %d to EHLO (frame %llu) the gateway closed without trying HELO "
                     "(RFC 5321 §3.2, §4.1.4)",
                     v->code, (unsigned long long)v->frame);
                return C_BAD;
            }
        }
        if (k == c->nev)
            return C_UNSURE;
    }
    return r;
}

/* no-data-without-354: RFC 5321 §3.3, §4.1.1.4; RFC 2920 §3.1 (DATA ends
 * a group): nothing follows DATA before its reply, and no body follows a
 * reply other than 354 (the parser reads such lines as unknown commands). */
static enum cres chk_data354(const struct fg_tl_conn *c, struct cctx *x)
{
    enum cres r = C_NA;
    int waiting = 0, refused = 0;
    uint64_t data_frame = 0;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP && v->dir == FG_C2S && r != C_NA)
            return C_UNSURE;
        if (verb_is(v, FG_VERB_DATA)) {
            waiting = 1;
            refused = 0;
            data_frame = v->frame;
            r = r == C_NA ? C_OK : r;
            continue;
        }
        if (is_reply_to(v, FG_VERB_DATA)) {
            waiting = 0;
            refused = v->code != 354 ? v->code : 0;
            continue;
        }
        if (verb_is(v, FG_VERB_BDAT))
            cskip(x, "the message went with BDAT, which has no 354 to wait for (RFC 3030 §2)");
        if (v->kind != FG_TL_COMMAND)
            continue;
        if (waiting) {
            cbad(x, c, v->frame,
                 "\"%.40s\" sent after DATA (frame %llu) before its reply (RFC 5321 §3.3; RFC "
                 "2920 §3.1)",
                 v->text ? v->text : "?", (unsigned long long)data_frame);
            return C_BAD;
        }
        if (refused && v->verb == FG_VERB_OTHER) {
            cbad(x, c, v->frame,
                 "message text \"%.40s\" sent after %d to DATA, not 354 (RFC 5321 §3.3)",
                 v->text ? v->text : "?", refused);
            return C_BAD;
        }
        refused = 0;
    }
    return r;
}

/* no-nested-mail: RFC 5321 §4.1.4 (MUST NOT): no MAIL while a transaction
 * is open.  The transaction opens at MAIL and ends at its end of data
 * (the "." or the BDAT LAST chunk), a refused MAIL, a refused DATA, RSET,
 * EHLO or HELO. */
static enum cres chk_nested(const struct fg_tl_conn *c, struct cctx *x)
{
    enum cres r = C_NA;
    int open = 0;
    uint64_t mail_frame = 0;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP && v->dir == FG_C2S)
            return r == C_NA ? C_NA : C_UNSURE;
        if (verb_is(v, FG_VERB_MAIL)) {
            if (open) {
                cbad(x, c, v->frame,
                     "MAIL while the transaction opened at frame %llu was still open (RFC 5321 "
                     "§4.1.4)",
                     (unsigned long long)mail_frame);
                return C_BAD;
            }
            open = 1;
            mail_frame = v->frame;
            r = C_OK;
        } else if ((is_reply_to(v, FG_VERB_MAIL) && v->code / 100 != 2) ||
                   (is_reply_to(v, FG_VERB_DATA) && v->code != 354) ||
                   v->kind == FG_TL_END_OF_DATA || (v->kind == FG_TL_BDAT_END && v->last) ||
                   verb_is(v, FG_VERB_RSET) || verb_is(v, FG_VERB_EHLO) ||
                   verb_is(v, FG_VERB_HELO)) {
            open = 0;
        }
    }
    return r;
}

/* pipelining-only-if-advertised: RFC 2920 §3.1 (MUST): a client sends a
 * command before the previous one's reply only if the last EHLO reply
 * listed PIPELINING, and never after an unanswered EHLO, DATA, VRFY, EXPN,
 * TURN, QUIT or NOOP (they end a group); HELO, STARTTLS (RFC 3207 §4.2)
 * and AUTH (RFC 4954 §4) likewise change the session's state. */
static int ends_group(enum fg_smtp_verb v, const char *text)
{
    switch (v) {
    case FG_VERB_EHLO:
    case FG_VERB_HELO:
    case FG_VERB_DATA:
    case FG_VERB_VRFY:
    case FG_VERB_EXPN:
    case FG_VERB_QUIT:
    case FG_VERB_NOOP:
    case FG_VERB_STARTTLS:
    case FG_VERB_AUTH:
        return 1;
    default:
        return text && strncasecmp(text, "TURN", 4) == 0 && (text[4] == '\0' || text[4] == ' ');
    }
}

static int lists_pipelining(const char *text)
{
    for (const char *l = text; l && *l;) {
        if (strlen(l) >= 14 && strncasecmp(l + 4, "PIPELINING", 10) == 0 &&
            (l[14] == '\0' || l[14] == '\r' || l[14] == ' '))
            return 1;
        const char *nl = strchr(l, '\n');
        l = nl ? nl + 1 : NULL;
    }
    return 0;
}

#define PIPE_TRACK 64

static enum cres chk_pipelining(const struct fg_tl_conn *c, struct cctx *x)
{
    enum cres r = C_NA;
    int advertised = 0;
    size_t outstanding = 0, head = 0;
    struct {
        enum fg_smtp_verb verb;
        uint64_t frame;
        const char *text;
    } q[PIPE_TRACK];
    size_t restricted = 0; /* unanswered group-ending commands */
    int greeted = 0;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP)
            return r == C_NA ? C_NA : C_UNSURE;
        if (v->kind == FG_TL_TLS)
            break;
        if (v->kind == FG_TL_REPLY && v->answers == FG_ANS_GREETING)
            greeted = 1;
        if (v->kind == FG_TL_COMMAND && !greeted) {
            /* RFC 5321 §3.1, §4.3.1: the session opens with the server's
             * greeting; a command before it is a pipelining desync. */
            cbad(x, c, v->frame,
                 "\"%.30s\" sent before the server's greeting (RFC 5321 §3.1; RFC 2920 §3.1)",
                 v->text ? v->text : "?");
            return C_BAD;
        }
        if (v->kind == FG_TL_REPLY &&
            (v->answers == FG_ANS_COMMAND || v->answers == FG_ANS_END_OF_DATA ||
             v->answers == FG_ANS_BDAT) &&
            outstanding > 0) {
            size_t h = head % PIPE_TRACK;
            if (ends_group(q[h].verb, q[h].text) && restricted)
                restricted--;
            head++;
            outstanding--;
            if (is_reply_to(v, FG_VERB_EHLO))
                advertised = v->code / 100 == 2 && lists_pipelining(v->text);
            continue;
        }
        int is_cmd = v->kind == FG_TL_COMMAND, is_eod = v->kind == FG_TL_END_OF_DATA;
        if (!is_cmd && !is_eod)
            continue;
        if (is_cmd && r == C_NA)
            r = C_OK;
        if (is_cmd && outstanding > 0) {
            if (restricted) {
                /* the newest unanswered group-ender */
                size_t k = head + outstanding;
                while (k > head &&
                       !ends_group(q[(k - 1) % PIPE_TRACK].verb, q[(k - 1) % PIPE_TRACK].text))
                    k--;
                size_t h = (k - 1) % PIPE_TRACK;
                cbad(x, c, v->frame,
                     "\"%.30s\" sent while %s (frame %llu), which must end a group, was "
                     "unanswered (RFC 2920 §3.1)",
                     v->text ? v->text : "?", fg_smtp_verb_name(q[h].verb),
                     (unsigned long long)q[h].frame);
                return C_BAD;
            }
            if (!advertised) {
                cbad(x, c, v->frame,
                     "\"%.30s\" pipelined (%zu command%s unanswered) but PIPELINING was not "
                     "advertised (RFC 2920 §3.1)",
                     v->text ? v->text : "?", outstanding, outstanding == 1 ? "" : "s");
                return C_BAD;
            }
        }
        if (is_cmd && (v->verb == FG_VERB_EHLO || v->verb == FG_VERB_HELO))
            advertised = 0;
        if (outstanding < PIPE_TRACK) {
            size_t t = (head + outstanding) % PIPE_TRACK;
            q[t].verb = is_eod ? FG_VERB_OTHER : v->verb;
            q[t].frame = v->frame;
            q[t].text = is_eod ? NULL : v->text;
            if (ends_group(q[t].verb, q[t].text))
                restricted++;
            outstanding++;
        }
    }
    return r;
}

/* quit-at-end: RFC 5321 §4.1.1.10 (MUST: the connection is ended by QUIT
 * and its reply).  Judged on connections the gateway closed itself with
 * every command answered and no 421: a close with a command unanswered
 * is a timeout (closes-after-stall and timeout-at-least judge those). */
static enum cres chk_quit(const struct fg_tl_conn *c, struct cctx *x)
{
    size_t outstanding = 0;
    int quit = 0, saw421 = 0, cmds = 0;
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP)
            return C_UNSURE;
        if (v->kind == FG_TL_TLS)
            return C_NA; /* the QUIT is inside TLS */
        if (v->kind == FG_TL_COMMAND || v->kind == FG_TL_END_OF_DATA) {
            outstanding++;
            cmds += v->kind == FG_TL_COMMAND;
            if (verb_is(v, FG_VERB_QUIT))
                quit = 1;
        } else if (v->kind == FG_TL_REPLY) {
            if (v->code == 421)
                saw421 = 1;
            if (v->answers != FG_ANS_GREETING && v->answers != FG_ANS_UNSOLICITED && outstanding)
                outstanding--;
        } else if (v->kind == FG_TL_FIN || v->kind == FG_TL_RST) {
            /* After QUIT either side may close first: a server closes as
             * soon as its 221 is out (§4.1.1.10), often before the client. */
            if (quit)
                return C_OK;
            if (v->dir == FG_S2C || saw421 || v->us >= x->run_end_us)
                return C_NA;
            if (outstanding || !cmds)
                return C_NA;
            cbad(x, c, v->frame, "the gateway %s the connection without QUIT (RFC 5321 §4.1.1.10)",
                 v->kind == FG_TL_RST ? "reset" : "closed");
            return C_BAD;
        }
    }
    return quit ? C_OK : C_NA;
}

/* The stages of timeout-at-least and RFC 5321 §4.5.3.2's minimums in
 * seconds.  §4.5.3.2 gives none for EHLO (5 min, as for MAIL, is used) nor
 * a client idle time (the server's 5 min of §4.5.3.2.7 is used). */
static const struct {
    const char *name;
    uint64_t rfc_s;
} stages[] = {{"greeting", 300},  {"ehlo", 300},       {"mail", 300},      {"rcpt", 300},
              {"data_init", 120}, {"data_block", 180}, {"data_done", 600}, {"idle", 300}};
#define NSTAGES (sizeof stages / sizeof stages[0])

static const char *cmd_stage(enum fg_smtp_verb v)
{
    switch (v) {
    case FG_VERB_EHLO:
    case FG_VERB_HELO:
        return "ehlo";
    case FG_VERB_MAIL:
        return "mail";
    case FG_VERB_RCPT:
        return "rcpt";
    case FG_VERB_DATA:
        return "data_init";
    case FG_VERB_BDAT:
        return "data_block"; /* until its chunk is sent; see chk_timeout */
    default:
        return "other";
    }
}

/* timeout-at-least: RFC 5321 §4.5.3.2 (SHOULD: the client's timeouts are
 * at least these; the profile says what this gateway is configured to).
 * On each outbound connection, where the peer fell silent the gateway
 * waited from its last octet (the SYN for the greeting, the command, the
 * last body octet for data_block, the "." for data_done, the last reply
 * for idle) until it closed or reset; that wait must be >= min.  A gateway
 * still waiting when the run ends has waited at least that long. */
/* A FIN this soon after the client's QUIT is its shutdown after QUIT, not a
 * timeout: no timeout of RFC 5321 §4.5.3.2 is this short. */
#define QUIT_SHUT_US 200000

static enum cres chk_timeout(const struct fg_tl_conn *c, struct cctx *x)
{
    const char *want = x->e->stage;
    const char *stage = "greeting";
    uint64_t since_us = c->nev ? c->ev[0].us : 0, since_frame = c->nev ? c->ev[0].frame : 0;
    size_t outstanding = 0;
    int greeted = 0;
    uint64_t quit_us = 0;
    uint64_t min_us = x->limit_ms * 1000;
    /* The client waits for its oldest unanswered command: with
     * PIPELINING, commands sent behind it (QUIT after the final dot, DATA
     * after MAIL and RCPT) do not change what it is waiting for. */
    struct {
        const char *stage;
        uint64_t us, frame;
    } q[PIPE_TRACK];
    size_t qhead = 0;
    /* A command of the stage judged among those unanswered (RCPT behind
     * MAIL in one group): the client waited for its reply that long too. */
#define WANTED_OUTSTANDING()                                                                       \
    for (size_t k_ = 0; k_ < outstanding && k_ < PIPE_TRACK; k_++)                                 \
        if (strcmp(q[(qhead + k_) % PIPE_TRACK].stage, want) == 0) {                               \
            stage = want;                                                                          \
            since_us = q[(qhead + k_) % PIPE_TRACK].us;                                            \
            since_frame = q[(qhead + k_) % PIPE_TRACK].frame;                                      \
            break;                                                                                 \
        }
    char a[32], b[32];
    for (size_t i = 0; i < c->nev; i++) {
        const struct fg_tl_event *v = &c->ev[i];
        if (v->kind == FG_TL_GAP)
            return strcmp(stage, want) == 0 ? C_UNSURE : C_NA;
        if (v->kind == FG_TL_TLS)
            return C_NA;
        if (v->kind == FG_TL_REPLY) {
            if (v->answers == FG_ANS_GREETING)
                greeted = 1;
            else if (outstanding && v->answers != FG_ANS_UNSOLICITED) {
                outstanding--;
                qhead++;
                if (outstanding && outstanding <= PIPE_TRACK) {
                    stage = q[qhead % PIPE_TRACK].stage;
                    since_us = q[qhead % PIPE_TRACK].us;
                    since_frame = q[qhead % PIPE_TRACK].frame;
                }
            }
            if (!outstanding && greeted) {
                stage = "idle";
                since_us = v->us;
                since_frame = v->frame;
            }
        } else if (v->kind == FG_TL_COMMAND) {
            if (v->verb == FG_VERB_QUIT)
                quit_us = v->us;
            if (outstanding < PIPE_TRACK) {
                size_t t = (qhead + outstanding) % PIPE_TRACK;
                q[t].stage = cmd_stage(v->verb);
                q[t].us = v->us;
                q[t].frame = v->frame;
            }
            if (outstanding++ == 0) {
                stage = cmd_stage(v->verb);
                since_us = v->us;
                since_frame = v->frame;
            }
        } else if (v->kind == FG_TL_DATA) {
            stage = "data_block";
            since_us = v->us;
            since_frame = v->frame;
            for (size_t k = 0; k < c->nmsg; k++)
                if (c->msg[k].data_event == i && c->msg[k].last_us) {
                    since_us = c->msg[k].last_us;
                    since_frame = c->msg[k].last_frame;
                }
        } else if (v->kind == FG_TL_BDAT_END) {
            /* A BDAT chunk sent: its command waits for the reply from here,
             * the LAST one as the end of data (RFC 3030 §2). */
            const char *st = v->last ? "data_done" : "data_block";
            if (outstanding && outstanding <= PIPE_TRACK) {
                size_t t = (qhead + outstanding - 1) % PIPE_TRACK;
                q[t].stage = st;
                q[t].us = v->us;
                q[t].frame = v->frame;
            }
            if (outstanding == 1) {
                stage = st;
                since_us = v->us;
                since_frame = v->frame;
            }
        } else if (v->kind == FG_TL_END_OF_DATA) {
            if (outstanding < PIPE_TRACK) {
                size_t t = (qhead + outstanding) % PIPE_TRACK;
                q[t].stage = "data_done";
                q[t].us = v->us;
                q[t].frame = v->frame;
            }
            if (outstanding++ == 0) {
                stage = "data_done";
                since_us = v->us;
                since_frame = v->frame;
            }
        } else if (v->kind == FG_TL_FIN || v->kind == FG_TL_RST) {
            if (v->dir == FG_S2C)
                return C_NA; /* the peer was not silent: it closed */
            /* A client that shut its side right after a QUIT (pipelined
             * behind its transaction, as Exim does under PIPELINING) ended
             * the session (RFC 5321 §4.1.1.10) and still reads the replies:
             * it gave up on nothing.  One that shuts it later (Postfix
             * pipelines QUIT behind the dot, then times out) did give up. */
            if (quit_us && v->dir == FG_C2S && v->kind == FG_TL_FIN &&
                since(v->us, quit_us) < QUIT_SHUT_US)
                return C_NA;
            WANTED_OUTSTANDING();
            if (strcmp(stage, want) != 0)
                return C_NA;
            if (v->us >= x->run_end_us)
                break; /* faultgate ended the run: still waiting then */
            uint64_t w = since(v->us, since_us);
            if (w >= min_us) {
                fg_strbuf_printf(x->ev, "connection #%zu: waited %s s at %s (frame %llu to %llu)\n",
                                 x->idx + 1, secs(a, sizeof a, w), want,
                                 (unsigned long long)since_frame, (unsigned long long)v->frame);
                return C_OK;
            }
            cbad(x, c, v->frame,
                 "the gateway gave up at %s after %s s (from frame %llu), less than %s s", want,
                 secs(a, sizeof a, w), (unsigned long long)since_frame, secs(b, sizeof b, min_us));
            return C_BAD;
        }
    }
    WANTED_OUTSTANDING();
    if (strcmp(stage, want) != 0)
        return C_NA;
    uint64_t w = since(x->run_end_us, since_us);
    if (w >= min_us) {
        fg_strbuf_printf(x->ev,
                         "connection #%zu: still waiting at %s after %s s (from frame %llu)\n",
                         x->idx + 1, want, secs(a, sizeof a, w), (unsigned long long)since_frame);
        return C_OK;
    }
    return C_UNSURE;
#undef WANTED_OUTSTANDING
}

static void eval_crlf(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o)
{
    eval_per_conn(e, ctx, limit_ms, o, chk_crlf, "no bare CR or LF");
}

static void eval_length(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o)
{
    eval_per_conn(e, ctx, limit_ms, o, chk_length, "no line over its limit");
}

static void eval_dots(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o)
{
    eval_per_conn(e, ctx, limit_ms, o, chk_dots, "bodies correctly dot-stuffed");
}

static void eval_fallback(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o)
{
    eval_per_conn(e, ctx, limit_ms, o, chk_fallback, "HELO after EHLO was refused");
}

static void eval_data354(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                         uint64_t limit_ms, struct fg_outcome *o)
{
    eval_per_conn(e, ctx, limit_ms, o, chk_data354, "no message text before 354");
}

static void eval_nested(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o)
{
    eval_per_conn(e, ctx, limit_ms, o, chk_nested, "no MAIL inside a transaction");
}

static void eval_pipelining(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                            uint64_t limit_ms, struct fg_outcome *o)
{
    eval_per_conn(e, ctx, limit_ms, o, chk_pipelining,
                  "pipelined only after PIPELINING, group ends respected");
}

static void eval_quit(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                      uint64_t limit_ms, struct fg_outcome *o)
{
    eval_per_conn(e, ctx, limit_ms, o, chk_quit, "ended with QUIT");
}

/* The minimum for timeout-at-least: `min`, else the profile's value for
 * the stage, else RFC 5321 §4.5.3.2's. */
static int timeout_min_ms(const struct fg_expect_spec *e, const struct fg_meta *m, uint64_t *ms,
                          char *err, size_t errlen)
{
    if (e->min)
        return within_meta(e->min, m, ms, err, errlen);
    int64_t v = fg_meta_timeout(m, e->stage);
    if (v >= 0) {
        *ms = (uint64_t)v;
        return 0;
    }
    for (size_t i = 0; i < NSTAGES; i++)
        if (strcmp(stages[i].name, e->stage) == 0) {
            *ms = stages[i].rfc_s * 1000;
            return 0;
        }
    return fg_errf(err, errlen, FG_EINPUT, "unknown stage \"%s\"", e->stage);
}

static void eval_timeout(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                         uint64_t limit_ms, struct fg_outcome *o)
{
    (void)limit_ms;
    char err[FG_ERRBUF_SIZE] = "";
    uint64_t min_ms = 0;
    if (timeout_min_ms(e, ctx->meta, &min_ms, err, sizeof err) != 0) {
        set_result(o, FG_V_ERROR, fg_asprintf("min cannot be evaluated: %s", err));
        o->evidence = fg_strdup(o->summary);
        return;
    }
    char t[32];
    char *what =
        fg_asprintf("waited at least %s s at %s", secs(t, sizeof t, min_ms * 1000), e->stage);
    eval_per_conn(e, ctx, min_ms, o, chk_timeout, what);
    free(what);
}

/* --- retry-after-4xx, no-retry-after-5xx, handles-421 ----------------------
 * A failed attempt is a 4xx/5xx reply on an outbound connection to the end
 * of data (the message is known by its token), or to MAIL, RCPT or DATA
 * (known by the MAIL reverse-path, since no body was sent).  A later
 * attempt of the same message: a transaction with the same token and a
 * non-null reverse-path, or a MAIL with the same reverse-path.  A bounce:
 * a later message from <> (RFC 5321 §4.5.5) carrying the token, or, for a
 * failure before the body, any later message from <>. */

struct failure {
    size_t ci, ei; /* connection index on the leg, event index */
    const struct fg_tl_event *ev;
    char token[FG_TOKEN_MAX];
    char path[256];
};

static void mail_path(const char *cmd, char *out, size_t len)
{
    out[0] = '\0';
    const char *lt = cmd ? strchr(cmd, '<') : NULL;
    const char *gt = lt ? strchr(lt, '>') : NULL;
    if (gt)
        snprintf(out, len, "%.*s", (int)(gt - lt + 1), lt);
}

static size_t failures(struct fg_tl_conn **pc, size_t npc, int cls, int code, struct failure **out)
{
    size_t n = 0, cap = 0;
    *out = NULL;
    for (size_t ci = 0; ci < npc; ci++) {
        const struct fg_tl_conn *c = pc[ci];
        const char *mail = NULL;
        for (size_t i = 0; i < c->nev; i++) {
            const struct fg_tl_event *v = &c->ev[i];
            if (verb_is(v, FG_VERB_MAIL))
                mail = v->text;
            if (v->kind != FG_TL_REPLY || (!code && v->answers == FG_ANS_GREETING))
                continue;
            if (code ? v->code != code : v->code / 100 != cls)
                continue;
            int eod = v->answers == FG_ANS_END_OF_DATA || v->answers == FG_ANS_BDAT;
            int pre =
                v->answers == FG_ANS_COMMAND &&
                (v->verb == FG_VERB_MAIL || v->verb == FG_VERB_RCPT || v->verb == FG_VERB_DATA);
            if (!code && !eod && !pre)
                continue;
            struct failure *f = FG_ARRAY_PUSH(*out, n, cap);
            memset(f, 0, sizeof *f);
            f->ci = ci;
            f->ei = i;
            f->ev = v;
            for (size_t k = 0; k < c->nmsg; k++)
                if (c->msg[k].reply_event == i ||
                    (code && c->msg[k].eod_event < i && c->msg[k].reply_event == FG_TL_NONE))
                    snprintf(f->token, sizeof f->token, "%s", c->msg[k].token);
            if (!f->token[0])
                mail_path(mail, f->path, sizeof f->path);
        }
    }
    return n;
}

/* The first later attempt (*retry) and bounce (*bounce) of f's message:
 * times in microseconds, 0 if none; frames beside. */
static void later(struct fg_tl_conn **pc, size_t npc, const struct failure *f, uint64_t *retry,
                  uint64_t *rframe, uint64_t *bounce, uint64_t *bframe)
{
    *retry = *bounce = *rframe = *bframe = 0;
    uint64_t t = f->ev->us;
    for (size_t ci = 0; ci < npc; ci++) {
        const struct fg_tl_conn *c = pc[ci];
        for (size_t k = 0; k < c->nmsg; k++) {
            const struct fg_tl_msg *m = &c->msg[k];
            if (m->data_event >= c->nev)
                continue;
            const struct fg_tl_event *d = &c->ev[m->data_event];
            if (d->us < t || (ci == f->ci && m->data_event <= f->ei))
                continue;
            int same = f->token[0] && strcmp(m->token, f->token) == 0;
            if (null_sender(m->mail_from)) {
                if ((same || !f->token[0]) && (!*bounce || d->us < *bounce))
                    *bounce = d->us, *bframe = d->frame;
            } else if (same && (!*retry || d->us < *retry)) {
                *retry = d->us, *rframe = d->frame;
            }
        }
        if (f->token[0] || !f->path[0])
            continue;
        for (size_t i = 0; i < c->nev; i++) {
            const struct fg_tl_event *v = &c->ev[i];
            char p[256];
            if (!verb_is(v, FG_VERB_MAIL) || v->us < t || (ci == f->ci && i <= f->ei))
                continue;
            mail_path(v->text, p, sizeof p);
            if (strcmp(p, f->path) == 0 && strcmp(p, "<>") != 0 && (!*retry || v->us < *retry))
                *retry = v->us, *rframe = v->frame;
        }
    }
}

static void fail_ctx(struct cctx *x, const struct fg_judge_ctx *ctx, const struct fg_expect_spec *e,
                     uint64_t limit_ms, struct fg_outcome *o, struct fg_strbuf *ev)
{
    memset(x, 0, sizeof *x);
    x->ctx = ctx;
    x->e = e;
    x->limit_ms = limit_ms;
    x->gw = FG_C2S;
    x->ev = ev;
    x->o = o;
    x->run_end_us = ctx->tl->stats.last_us;
    if (ctx->meta->probe_start_us && ctx->meta->probe_start_us < x->run_end_us)
        x->run_end_us = ctx->meta->probe_start_us;
    x->nall = conns_to(ctx->tl, ctx->meta->proxy_port, &x->all);
}

static void fail_result(struct cctx *x, struct fg_outcome *o, struct fg_strbuf *ev, size_t n[4],
                        const char *what, const char *none)
{
    size_t judged = n[C_OK] + n[C_BAD] + n[C_UNSURE];
    if (n[C_BAD])
        set_result(o, FG_V_FAIL, fg_asprintf("%zu of %zu: %s", n[C_BAD], judged, x->why));
    else if (n[C_UNSURE])
        set_result(o, FG_V_INCONC,
                   fg_asprintf("%zu undecided: the trace ends before the limit", n[C_UNSURE]));
    else if (n[C_OK])
        set_result(o, FG_V_PASS, fg_asprintf("%zu of %zu: %s", n[C_OK], judged, what));
    else
        set_result(o, FG_V_INCONC, fg_strdup(none));
    free(x->all);
    o->evidence = fg_strbuf_take(ev);
}

static const char *fail_what(const struct failure *f, char *buf, size_t len)
{
    if (f->token[0])
        snprintf(buf, len, "message %s", f->token);
    else
        snprintf(buf, len, "the transaction from %s", f->path[0] ? f->path : "?");
    return buf;
}

/* retry-after-4xx: RFC 5321 §4.2.1, §4.5.4.1 (MUST retry; SHOULD wait).
 * A 4xx is transient: the message is tried again (within `within`), and
 * not bounced before that. */
static void eval_retry4(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                        uint64_t limit_ms, struct fg_outcome *o)
{
    struct cctx x;
    struct fg_strbuf ev = {0};
    size_t n[4] = {0};
    char a[32], b[320];
    fail_ctx(&x, ctx, e, limit_ms, o, &ev);
    struct failure *fs;
    size_t nf = failures(x.all, x.nall, 4, 0, &fs);
    for (size_t i = 0; i < nf; i++) {
        struct failure *f = &fs[i];
        const struct fg_tl_conn *c = x.all[f->ci];
        uint64_t r, rf, bo, bf;
        later(x.all, x.nall, f, &r, &rf, &bo, &bf);
        x.idx = f->ci;
        fail_what(f, b, sizeof b);
        frame_add(o, f->ev->frame);
        if (bo && (!r || bo < r)) {
            frame_add(o, bf);
            cbad(&x, c, f->ev->frame,
                 "%s: %d, then a bounce from <> at frame %llu instead of a "
                 "retry (RFC 5321 §4.2.1)",
                 b, f->ev->code, (unsigned long long)bf);
            n[C_BAD]++;
        } else if (r && r - f->ev->us <= limit_ms * 1000) {
            frame_add(o, rf);
            fg_strbuf_printf(&ev, "%s: %d at frame %llu, tried again %s s later at frame %llu\n", b,
                             f->ev->code, (unsigned long long)f->ev->frame,
                             secs(a, sizeof a, r - f->ev->us), (unsigned long long)rf);
            n[C_OK]++;
        } else if (r || since(x.run_end_us, f->ev->us) >= limit_ms * 1000) {
            cbad(&x, c, f->ev->frame, "%s: %d, %s within %s s (RFC 5321 §4.5.4.1)", b, f->ev->code,
                 r ? "tried again only later" : "not tried again",
                 secs(a, sizeof a, limit_ms * 1000));
            n[C_BAD]++;
        } else {
            n[C_UNSURE]++;
        }
    }
    free(fs);
    fail_result(&x, o, &ev, n, "tried again after a 4xx",
                "not exercised: no 4xx reply to a "
                "transaction on the outbound leg");
}

/* no-retry-after-5xx: RFC 5321 §4.2.5, §6.1 (MUST): a 5xx is permanent:
 * no identical retry, and a bounce from <> (within `within`). */
static void eval_noretry5(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                          uint64_t limit_ms, struct fg_outcome *o)
{
    struct cctx x;
    struct fg_strbuf ev = {0};
    size_t n[4] = {0};
    char a[32], b[320];
    fail_ctx(&x, ctx, e, limit_ms, o, &ev);
    struct failure *fs;
    size_t nf = failures(x.all, x.nall, 5, 0, &fs);
    for (size_t i = 0; i < nf; i++) {
        struct failure *f = &fs[i];
        const struct fg_tl_conn *c = x.all[f->ci];
        uint64_t r, rf, bo, bf;
        later(x.all, x.nall, f, &r, &rf, &bo, &bf);
        x.idx = f->ci;
        fail_what(f, b, sizeof b);
        frame_add(o, f->ev->frame);
        if (r) {
            frame_add(o, rf);
            cbad(&x, c, f->ev->frame, "%s: %d, then tried again at frame %llu (RFC 5321 §4.2.5)", b,
                 f->ev->code, (unsigned long long)rf);
            n[C_BAD]++;
        } else if (bo && bo - f->ev->us <= limit_ms * 1000) {
            frame_add(o, bf);
            fg_strbuf_printf(&ev, "%s: %d at frame %llu, bounce from <> %s s later at frame %llu\n",
                             b, f->ev->code, (unsigned long long)f->ev->frame,
                             secs(a, sizeof a, bo - f->ev->us), (unsigned long long)bf);
            n[C_OK]++;
        } else if (bo || since(x.run_end_us, f->ev->us) >= limit_ms * 1000) {
            cbad(&x, c, f->ev->frame, "%s: %d, no bounce from <> within %s s (RFC 5321 §6.1)", b,
                 f->ev->code, secs(a, sizeof a, limit_ms * 1000));
            n[C_BAD]++;
        } else {
            n[C_UNSURE]++;
        }
    }
    free(fs);
    fail_result(&x, o, &ev, n, "no retry, bounced",
                "not exercised: no 5xx reply to a "
                "transaction on the outbound leg");
}

/* handles-421: RFC 5321 §3.8, §4.2.2 (421 is transient and the server
 * closes): after a 421 the gateway sends nothing but QUIT on that
 * connection, connects again within `within`, and does not bounce the
 * interrupted message first. */
static void eval_421(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                     uint64_t limit_ms, struct fg_outcome *o)
{
    struct cctx x;
    struct fg_strbuf ev = {0};
    size_t n[4] = {0};
    char a[32];
    fail_ctx(&x, ctx, e, limit_ms, o, &ev);
    struct failure *fs;
    size_t nf = failures(x.all, x.nall, 4, 421, &fs);
    for (size_t i = 0; i < nf; i++) {
        struct failure *f = &fs[i];
        const struct fg_tl_conn *c = x.all[f->ci];
        x.idx = f->ci;
        frame_add(o, f->ev->frame);
        long more = -1;
        for (size_t k = f->ei + 1; k < c->nev && more < 0; k++) {
            const struct fg_tl_event *w = &c->ev[k];
            if (w->kind != FG_TL_COMMAND || w->verb == FG_VERB_QUIT)
                continue;
            /* RSET or NOOP written in one segment with the QUIT behind
             * it ends the session too: nothing waits for its reply
             * (Postfix answers a 421 inside a pipeline so). */
            long nx = fg_tl_conn_first(c, k + 1, FG_TL_COMMAND, FG_C2S);
            if ((w->verb == FG_VERB_RSET || w->verb == FG_VERB_NOOP) && nx >= 0 &&
                c->ev[nx].verb == FG_VERB_QUIT && c->ev[nx].frame == w->frame)
                continue;
            more = (long)k;
        }
        if (more >= 0) {
            cbad(&x, c, c->ev[more].frame,
                 "\"%.30s\" sent after 421 (frame %llu): the session is over (RFC 5321 §3.8)",
                 c->ev[more].text ? c->ev[more].text : "?", (unsigned long long)f->ev->frame);
            n[C_BAD]++;
            continue;
        }
        uint64_t rc = 0, rcf = 0, r, rf, bo, bf;
        for (size_t k = f->ci + 1; k < x.nall && !rc; k++)
            if (conn_open_us(x.all[k]) >= f->ev->us)
                rc = conn_open_us(x.all[k]), rcf = x.all[k]->ev[0].frame;
        later(x.all, x.nall, f, &r, &rf, &bo, &bf);
        if (f->token[0] && bo && (!r || bo < r)) {
            cbad(&x, c, bf, "message %s bounced after 421 (frame %llu) instead of a retry",
                 f->token, (unsigned long long)f->ev->frame);
            n[C_BAD]++;
        } else if (rc && rc - f->ev->us <= limit_ms * 1000) {
            frame_add(o, rcf);
            fg_strbuf_printf(&ev,
                             "421 at frame %llu (connection #%zu), connected again %s s later "
                             "(frame %llu)\n",
                             (unsigned long long)f->ev->frame, f->ci + 1,
                             secs(a, sizeof a, rc - f->ev->us), (unsigned long long)rcf);
            n[C_OK]++;
        } else if (rc || since(x.run_end_us, f->ev->us) >= limit_ms * 1000) {
            cbad(&x, c, f->ev->frame, "after 421 the gateway did not connect again within %s s",
                 secs(a, sizeof a, limit_ms * 1000));
            n[C_BAD]++;
        } else {
            n[C_UNSURE]++;
        }
    }
    free(fs);
    fail_result(&x, o, &ev, n, "421 treated as transient",
                "not exercised: no 421 on the outbound leg");
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
