/* expect_client.c - the expectations for a real SMTP client under test (a
 * profile with `submit:`, faultgate/submit.h):
 *
 *   client-exits             every run of the client's command ended by
 *                            itself (faultgate did not have to kill it at
 *                            submit.timeout or at the end of the run), and
 *                            within `within` when given
 *   client-reports-failure   the client's exit status tells what happened
 *                            to its message on the wire: non-zero when no
 *                            end of data was answered 2xx (a 4xx or 5xx
 *                            reply, a dropped or stalled connection), zero
 *                            when one was
 *
 * Registered in expect.h's FG_EXPECT_TABLES as fg_expect_client_rules.
 * Both read the run metadata's `clients` (one entry per message: exit
 * status, signal, start, duration) and the outbound leg of the trace: the
 * connections to proxy_port opened while that run of the command was
 * alive (the runs are sequential, so each connection belongs to one).  A
 * client that hangs on a silent server is the symptom of KB Q129140 seen
 * from the client side (RFC 5321 §4.5.3.2: a client MUST have per-command
 * timeouts); one that exits 0 after a failure loses mail silently
 * (RFC 5321 §6.1: the failure must be reported to the originator).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/profile.h"
#include "faultgate/util.h"

static void eval_exits(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o);
static void eval_reports(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                         uint64_t limit_ms, struct fg_outcome *o);

const struct fg_expect_rule fg_expect_client_rules[] = {
    {"client-exits", "RFC 5321 §4.5.3.2 (MUST: per-command timeouts); KB Q129140",
     FG_EXPECT_P_WITHIN, 0, eval_exits},
    {"client-reports-failure", "RFC 5321 §4.2.1, §4.2.5, §6.1 (MUST report a failure)", 0, 0,
     eval_reports},
    {NULL, NULL, 0, 0, NULL},
};

/* --- helpers ------------------------------------------------------------- */

static uint64_t trace_start_us(const struct fg_timeline *tl)
{
    uint64_t t0 = 0;
    for (size_t i = 0; i < tl->nconn; i++)
        if (tl->conn[i].nev && (!t0 || tl->conn[i].ev[0].us < t0))
            t0 = tl->conn[i].ev[0].us;
    return t0;
}

/* t=+S relative to the trace's first frame, as the other rules write it. */
static const char *rel(char *buf, size_t len, uint64_t us, uint64_t t0)
{
    return fg_expect_secs(buf, len, us >= t0 ? us - t0 : 0);
}

/* The last line of the stderr tail, for evidence. */
static void last_line(const char *tail, char *out, size_t len)
{
    out[0] = '\0';
    if (!tail)
        return;
    size_t n = strlen(tail);
    while (n && (tail[n - 1] == '\n' || tail[n - 1] == '\r'))
        n--;
    size_t b = n;
    while (b && tail[b - 1] != '\n')
        b--;
    snprintf(out, len, "%.*s", (int)(n - b > 200 ? 200 : n - b), tail + b);
}

static void client_desc(const struct fg_meta_client *c, char *buf, size_t len)
{
    if (!c->spawned)
        snprintf(buf, len, "could not be started");
    else if (c->timed_out)
        snprintf(buf, len, "killed by faultgate after %.1f s (it had not ended)",
                 (double)c->duration_ms / 1000.0);
    else if (c->term_signal)
        snprintf(buf, len, "ended by signal %d after %.1f s", c->term_signal,
                 (double)c->duration_ms / 1000.0);
    else
        snprintf(buf, len, "exited %lld after %.1f s", (long long)c->exit_status,
                 (double)c->duration_ms / 1000.0);
}

/* The connections to proxy_port this run of the client opened: their
 * first event falls in [start, end of the run]. */
static size_t client_conns(const struct fg_judge_ctx *ctx, const struct fg_meta_client *c,
                           struct fg_tl_conn **out, size_t max)
{
    struct fg_tl_conn *all[256];
    size_t n = fg_timeline_conns_to(ctx->tl, ctx->meta->proxy_port, all, 256);
    if (n > 256)
        n = 256;
    /* Capture timestamps and the harness's clock differ by a little
     * scheduling: a small margin either side. */
    uint64_t from = c->start_us > 200000 ? c->start_us - 200000 : 0;
    uint64_t to = c->start_us + c->duration_ms * 1000 + 200000;
    size_t k = 0;
    for (size_t i = 0; i < n && k < max; i++) {
        if (!all[i]->nev)
            continue;
        uint64_t t = all[i]->ev[0].us;
        if (t >= from && t <= to)
            out[k++] = all[i];
    }
    return k;
}

/* --- client-exits -------------------------------------------------------- */

static void eval_exits(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                       uint64_t limit_ms, struct fg_outcome *o)
{
    (void)limit_ms; /* optional here: evaluated below */
    const struct fg_meta *m = ctx->meta;
    if (!m->nclients) {
        o->verdict = FG_V_INCONC;
        o->summary = fg_strdup("no client runs in the run metadata (the profile is not a client: "
                               "it has no `submit:`)");
        o->evidence = fg_strdup(o->summary);
        return;
    }
    uint64_t within = 0;
    if (e->within) {
        char err[FG_ERRBUF_SIZE] = "";
        if (fg_within_eval_timeouts(e->within, m->timeouts, m->ntimeouts, &within, err, sizeof err,
                                    NULL) != 0) {
            o->verdict = FG_V_ERROR;
            o->summary = fg_asprintf("within \"%s\" cannot be evaluated against the run's "
                                     "timeouts: %s",
                                     e->within, err);
            o->evidence = fg_strdup(o->summary);
            return;
        }
    }
    uint64_t t0 = trace_start_us(ctx->tl);
    struct fg_strbuf ev = {0};
    enum fg_verdict worst = FG_V_PASS;
    char *sum = NULL;
    uint64_t longest = 0;
    for (size_t i = 0; i < m->nclients; i++) {
        const struct fg_meta_client *c = &m->clients[i];
        char d[128], t[32], line[256];
        client_desc(c, d, sizeof d);
        last_line(c->stderr_tail, line, sizeof line);
        enum fg_verdict v = FG_V_PASS;
        if (!c->spawned)
            v = FG_V_ERROR;
        else if (c->timed_out || c->term_signal == 9)
            v = FG_V_FAIL;
        else if (e->within && c->duration_ms > within)
            v = FG_V_FAIL;
        if (c->duration_ms > longest)
            longest = c->duration_ms;
        fg_strbuf_printf(&ev, "%sclient run %zu (message %s, started t=+%s s): %s", i ? "\n" : "",
                         i + 1, c->token, rel(t, sizeof t, c->start_us, t0), d);
        if (e->within && c->spawned && !c->timed_out)
            fg_strbuf_printf(&ev, "; limit %.1f s = %s", (double)within / 1000.0, e->within);
        if (line[0])
            fg_strbuf_printf(&ev, "; its stderr ends: %s", line);
        if (v != FG_V_PASS) {
            /* Where it hung: its connections still open when it was killed. */
            struct fg_tl_conn *cc[16];
            size_t nc = client_conns(ctx, c, cc, 16);
            for (size_t k = 0; k < nc; k++) {
                const struct fg_tl_event *last = &cc[k]->ev[cc[k]->nev - 1];
                fg_strbuf_printf(&ev,
                                 "\n  connection %s -> %s (trace connection %u): last event %s%s%s "
                                 "at frame %llu, t=+%s s",
                                 cc[k]->client, cc[k]->server, cc[k]->id,
                                 fg_tl_kind_name(last->kind), last->text ? " " : "",
                                 last->text ? last->text : "", (unsigned long long)last->frame,
                                 rel(t, sizeof t, last->us, t0));
                fg_outcome_frame(o, last->frame);
                if (!o->conn)
                    o->conn = cc[k]->id;
            }
        }
        if (fg_verdict_worst(worst, v) != worst || (!sum && v != FG_V_PASS)) {
            free(sum);
            if (v == FG_V_ERROR)
                sum = fg_asprintf("client run %zu could not be started: %s", i + 1, line);
            else if (c->timed_out)
                sum = fg_asprintf("client run %zu never ended: faultgate killed it after %.1f s",
                                  i + 1, (double)c->duration_ms / 1000.0);
            else if (c->term_signal == 9)
                sum = fg_asprintf("client run %zu was killed (signal 9) after %.1f s", i + 1,
                                  (double)c->duration_ms / 1000.0);
            else
                sum = fg_asprintf("client run %zu ended after %.1f s, limit %.1f s", i + 1,
                                  (double)c->duration_ms / 1000.0, (double)within / 1000.0);
            worst = fg_verdict_worst(worst, v);
        }
    }
    o->verdict = worst;
    o->summary =
        sum ? sum
            : fg_asprintf("every client run ended by itself (%zu run%s, longest %.1f s)",
                          m->nclients, m->nclients == 1 ? "" : "s", (double)longest / 1000.0);
    o->evidence = ev.s ? ev.s : fg_strdup("");
}

/* --- client-reports-failure ---------------------------------------------- */

/* What the wire says about one run: accepted (an end of data answered
 * 2xx), else the first thing that went wrong. */
struct wire {
    int accepted;
    uint64_t accept_frame;
    int accept_code;
    char what[256]; /* the failure, for people */
    uint64_t what_frame;
    size_t nconn;
};

static void read_wire(const struct fg_judge_ctx *ctx, const struct fg_meta_client *c,
                      struct wire *w, uint64_t t0)
{
    memset(w, 0, sizeof *w);
    struct fg_tl_conn *cc[64];
    size_t nc = client_conns(ctx, c, cc, 64);
    w->nconn = nc;
    char t[32];
    for (size_t k = 0; k < nc; k++) {
        const struct fg_tl_conn *cn = cc[k];
        for (size_t i = 0; i < cn->nmsg; i++) {
            const struct fg_tl_msg *msg = &cn->msg[i];
            if (msg->complete && msg->reply_code >= 200 && msg->reply_code < 300 && !w->accepted) {
                w->accepted = 1;
                w->accept_code = msg->reply_code;
                w->accept_frame = msg->reply_event != FG_TL_NONE ? cn->ev[msg->reply_event].frame
                                                                 : cn->ev[msg->eod_event].frame;
            }
        }
        if (w->what[0])
            continue;
        /* The first refusal, or how the connection ended without one. */
        int client_closed = 0, server_closed = 0, quit = 0;
        const struct fg_tl_event *end = NULL, *last_cmd = NULL;
        int answered = 1;
        for (size_t i = 0; i < cn->nev && !w->what[0]; i++) {
            const struct fg_tl_event *ev = &cn->ev[i];
            switch (ev->kind) {
            case FG_TL_REPLY:
                answered = 1;
                if (ev->code >= 400) {
                    snprintf(w->what, sizeof w->what,
                             "the server replied %d%s%.80s on %s -> %s (frame %llu, t=+%s s)",
                             ev->code, ev->text ? ": " : "",
                             ev->text ? (strlen(ev->text) > 4 ? ev->text + 4 : ev->text) : "",
                             cn->client, cn->server, (unsigned long long)ev->frame,
                             rel(t, sizeof t, ev->us, t0));
                    w->what_frame = ev->frame;
                }
                break;
            case FG_TL_COMMAND:
            case FG_TL_END_OF_DATA:
                answered = 0;
                last_cmd = ev;
                if (ev->kind == FG_TL_COMMAND && ev->verb == FG_VERB_QUIT)
                    quit = 1;
                break;
            case FG_TL_FIN:
            case FG_TL_RST:
                if (!end)
                    end = ev;
                if (ev->dir == FG_S2C)
                    server_closed = 1;
                else
                    client_closed = 1;
                break;
            default:
                break;
            }
        }
        if (w->what[0] || quit)
            continue;
        if (end && server_closed && (!client_closed || end->dir == FG_S2C)) {
            snprintf(w->what, sizeof w->what,
                     "the server closed %s -> %s with %s unanswered (frame %llu, t=+%s s)",
                     cn->client, cn->server,
                     !answered && last_cmd ? (last_cmd->kind == FG_TL_END_OF_DATA
                                                  ? "the end of data"
                                                  : (last_cmd->text ? last_cmd->text : "a command"))
                                           : "nothing",
                     (unsigned long long)end->frame, rel(t, sizeof t, end->us, t0));
            w->what_frame = end->frame;
        } else if (!answered && last_cmd) {
            snprintf(w->what, sizeof w->what,
                     "%s on %s -> %s was never answered (frame %llu, t=+%s s)",
                     last_cmd->kind == FG_TL_END_OF_DATA
                         ? "the end of data"
                         : (last_cmd->text ? last_cmd->text : "a command"),
                     cn->client, cn->server, (unsigned long long)last_cmd->frame,
                     rel(t, sizeof t, last_cmd->us, t0));
            w->what_frame = last_cmd->frame;
        }
    }
    if (!w->accepted && !w->what[0]) {
        if (nc == 0)
            snprintf(w->what, sizeof w->what,
                     "no connection to the proxy (port %d) while the client ran",
                     ctx->meta->proxy_port);
        else
            snprintf(w->what, sizeof w->what,
                     "no end of data was answered 2xx on its %zu "
                     "connection%s",
                     nc, nc == 1 ? "" : "s");
    }
}

static void eval_reports(const struct fg_expect_spec *e, const struct fg_judge_ctx *ctx,
                         uint64_t limit_ms, struct fg_outcome *o)
{
    (void)e;
    (void)limit_ms;
    const struct fg_meta *m = ctx->meta;
    if (!m->nclients) {
        o->verdict = FG_V_INCONC;
        o->summary = fg_strdup("no client runs in the run metadata (the profile is not a client: "
                               "it has no `submit:`)");
        o->evidence = fg_strdup(o->summary);
        return;
    }
    uint64_t t0 = trace_start_us(ctx->tl);
    struct fg_strbuf ev = {0};
    enum fg_verdict worst = FG_V_PASS;
    char *sum = NULL;
    size_t nfailed = 0;
    for (size_t i = 0; i < m->nclients; i++) {
        const struct fg_meta_client *c = &m->clients[i];
        struct wire w;
        read_wire(ctx, c, &w, t0);
        char d[128], line[256];
        client_desc(c, d, sizeof d);
        last_line(c->stderr_tail, line, sizeof line);
        int ok_exit = c->spawned && !c->timed_out && !c->term_signal && c->exit_status == 0;
        enum fg_verdict v;
        char *s = NULL;
        if (!c->spawned) {
            v = FG_V_ERROR;
            s = fg_asprintf("client run %zu could not be started", i + 1);
        } else if (c->timed_out) {
            /* It reported nothing: client-exits judges the hang. */
            v = FG_V_INCONC;
            s = fg_asprintf("client run %zu was killed before it reported anything", i + 1);
        } else if (w.accepted && !ok_exit) {
            v = FG_V_FAIL;
            s = fg_asprintf("client run %zu reported a failure (%s) though the server answered "
                            "%d to its end of data (frame %llu)",
                            i + 1, d, w.accept_code, (unsigned long long)w.accept_frame);
            fg_outcome_frame(o, w.accept_frame);
        } else if (!w.accepted && ok_exit) {
            v = FG_V_FAIL;
            s = fg_asprintf("client run %zu claimed success (exit 0) though %s", i + 1, w.what);
            if (w.what_frame)
                fg_outcome_frame(o, w.what_frame);
        } else {
            v = FG_V_PASS;
            nfailed += !w.accepted;
        }
        fg_strbuf_printf(&ev, "%sclient run %zu (message %s): %s; on the wire: ", i ? "\n" : "",
                         i + 1, c->token, d);
        if (w.accepted)
            fg_strbuf_printf(&ev, "end of data answered %d (frame %llu)", w.accept_code,
                             (unsigned long long)w.accept_frame);
        else
            fg_strbuf_printf(&ev, "not accepted: %s", w.what);
        if (line[0])
            fg_strbuf_printf(&ev, "; its stderr ends: %s", line);
        if (v != FG_V_PASS && (!sum || fg_verdict_worst(worst, v) != worst)) {
            free(sum);
            sum = s;
            s = NULL;
            worst = fg_verdict_worst(worst, v);
        }
        free(s);
    }
    o->verdict = worst;
    o->summary = sum ? sum
                     : fg_asprintf("the client's exit status matched the wire on every run "
                                   "(%zu run%s, %zu failed and reported)",
                                   m->nclients, m->nclients == 1 ? "" : "s", nfailed);
    o->evidence = ev.s ? ev.s : fg_strdup("");
}
