/* run.c - `faultgate run`: for each scenario, start the fake MTA, the proxy
 * with the scenario's faults armed, the capture and the gateway under test;
 * submit the scenario's messages; wait until the expectations can be
 * decided or their horizon passes; probe that the gateway still answers;
 * stop everything; then judge the saved trace exactly as `faultgate judge`
 * would, and write results.json and junit.xml.
 *
 * Every wait has a deadline: the gateway's ready timeout, the injector's
 * per-reply timeout, the expectations' horizon, the scenario's `deadline`,
 * the probe's timeout and the gateway's stop grace.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/fake_mta.h"
#include "faultgate/fake_x400.h"
#include "faultgate/gateway.h"
#include "faultgate/injector.h"
#include "faultgate/judge.h"
#include "faultgate/meta.h"
#include "faultgate/profile.h"
#include "faultgate/progress.h"
#include "faultgate/proxy.h"
#include "faultgate/report.h"
#include "faultgate/results.h"
#include "faultgate/scenario.h"
#include "faultgate/submit.h"
#include "faultgate/util.h"
#include "faultgate/x400_proxy.h"
#include "run.h"

#include "../fakes/tls.h"

/* How often the run looks at whether it may end early, and how long it
 * keeps watching after everything looked settled (a late duplicate, RFC
 * 1047, must still reach the trace). */
#define WATCH_MS 100
#define SETTLE_MS 1000
#define PROBE_TIMEOUT_MS 5000
#define HORIZON_MARGIN_MS 2000
/* While a fault holds an outbound session, a scenario that judges inbound
 * availability (Q131150) gets this many inbound connections, this far
 * apart, each waiting this long for the greeting. */
#define BUSY_PROBES 5
#define BUSY_INTERVAL_MS 500
#define BUSY_TIMEOUT_MS 3000

enum phase { PH_START, PH_READY, PH_INJECT, PH_WATCH, PH_SETTLE, PH_PROBE, PH_STOP, PH_DONE };

struct scen_run {
    uv_loop_t *loop;
    const struct fg_run_opts *o;
    const struct fg_scenario *sc;
    const struct fg_profile *prof;
    struct fg_progress *prog; /* the live status line, if any */
    const char *out_dir;
    char *workdir, *pcap_path, *meta_path, *pcap_name, *profile_dir;
    FILE *keylog; /* <id>.keys: every TLS session's secrets (fakes/tls.h) */
    char *keylog_path;

    struct fg_fault_set faults;
    struct fg_mta *mta;
    struct fg_x400_peer *x400; /* the foreign X.400 system (Q194685) */
    char x400_upstream[32];
    /* With `x400_faults:`, the X.400 proxy between the gateway and x400. */
    struct fg_x400_fault_set x4faults;
    struct fg_x400_proxy *x4proxy;
    struct fg_proxy *proxy;
    struct fg_capture *cap;
    struct fg_gateway *gw;
    struct fg_injector *inj, *probe;
    /* A client under test (`submit:` profile): its command, once per
     * message, in order; results in meta.clients. */
    struct fg_submit *sub;
    size_t next_client;
    struct fg_gateway_vars vars;
    /* Inbound probes while an outbound session is stalled (Q131150). */
    struct fg_injector *busy[BUSY_PROBES];
    size_t nbusy;
    int want_busy;
    uint64_t next_busy_ms;
    uv_timer_t timer; /* watch / deadline / settle */
    int timer_open;

    struct fg_inject_msg *msgs;
    size_t nmsgs;
    char **to_storage; /* the rcpt arrays, owned */

    enum phase phase;
    uint64_t inject_start_ms, horizon_ms, settle_until_ms;
    int probe_status;
    int gw_ready_status;
    int pending_closes;
    struct fg_meta meta;
    char err[FG_ERRBUF_SIZE]; /* why the run is an error, if it is */
    int errored;
};

static void run_advance(struct scen_run *r);

static uint64_t token_seq;

static void set_error(struct scen_run *r, int err, const char *fmt, const char *detail)
{
    if (r->errored)
        return;
    r->errored = 1;
    snprintf(r->err, sizeof(r->err), fmt, detail ? detail : fg_strerror(err));
}

/* --- messages ----------------------------------------------------------- */

static void build_messages(struct scen_run *r, const char *run_id)
{
    size_t n = 0;
    for (size_t i = 0; i < r->sc->nmsgs; i++)
        n += r->sc->msgs[i].count ? r->sc->msgs[i].count : 1;
    r->msgs = fg_calloc(n ? n : 1, sizeof(*r->msgs));
    r->nmsgs = n;
    size_t k = 0;
    for (size_t i = 0; i < r->sc->nmsgs; i++) {
        const struct fg_msg_spec *ms = &r->sc->msgs[i];
        unsigned cnt = ms->count ? ms->count : 1;
        for (unsigned c = 0; c < cnt; c++, k++) {
            struct fg_inject_msg *m = &r->msgs[k];
            /* Unique across runs (run id) and within one (sequence), so a
             * message's fate can be followed on every leg. */
            snprintf(m->token, sizeof(m->token), "fgt-%.32s-%04" PRIu64, run_id, ++token_seq);
            m->from = ms->from;
            m->to = (const char *const *)ms->to;
            m->nto = ms->nto;
            m->size = ms->size;
            m->flags = ms->flags;
            m->concurrency = ms->concurrency;
            m->smuggle = ms->smuggle;
            m->smuggle_len = ms->smuggle_len;
            m->smuggle_from = ms->smuggle_from;
            m->starttls_inject = ms->starttls_inject;
            m->starttls_inject_len = ms->starttls_inject_len;
        }
    }
}

/* --- closing ------------------------------------------------------------ */

static void closed_one(void *ud)
{
    struct scen_run *r = ud;
    r->pending_closes--;
}

static void timer_closed(uv_handle_t *h)
{
    struct scen_run *r = h->data;
    r->timer_open = 0;
}

static void close_all(struct scen_run *r)
{
    /* A client still running when the run ends is killed; its result
     * (timed out) comes through client_done, which closes it. */
    if (r->sub)
        fg_submit_kill(r->sub);
    for (size_t i = 0; i < r->nbusy; i++) {
        if (r->busy[i]) {
            r->pending_closes++;
            fg_injector_close(r->busy[i], closed_one, r);
            r->busy[i] = NULL;
        }
    }
    if (r->inj) {
        r->pending_closes++;
        fg_injector_close(r->inj, closed_one, r);
        r->inj = NULL;
    }
    if (r->probe) {
        r->pending_closes++;
        fg_injector_close(r->probe, closed_one, r);
        r->probe = NULL;
    }
    if (r->proxy) {
        r->pending_closes++;
        fg_proxy_close(r->proxy, closed_one, r);
        r->proxy = NULL;
    }
    if (r->mta) {
        r->pending_closes++;
        fg_mta_close(r->mta, closed_one, r);
        r->mta = NULL;
    }
    if (r->x400) {
        r->pending_closes++;
        fg_x400_peer_close(r->x400, closed_one, r);
        r->x400 = NULL;
    }
    if (r->x4proxy) {
        r->pending_closes++;
        fg_x400_proxy_close(r->x4proxy, closed_one, r);
        r->x4proxy = NULL;
    }
    if (r->timer_open && !uv_is_closing((uv_handle_t *)&r->timer))
        uv_close((uv_handle_t *)&r->timer, timer_closed);
}

/* --- phases ------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    run_advance(t->data);
}

static void arm(struct scen_run *r, uint64_t ms)
{
    uv_timer_stop(&r->timer);
    uv_timer_start(&r->timer, on_timer, ms, 0);
}

static void gw_stopped(struct fg_gateway *g, void *ud)
{
    struct scen_run *r = ud;
    (void)g;
    r->phase = PH_DONE;
    close_all(r);
}

/* The last non-empty line of dir/name, at most 300 bytes of it, or NULL. */
static char *log_last_line(const char *dir, const char *name)
{
    char *path = fg_asprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return NULL;
    char tail[4096];
    size_t n = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long end = ftell(f);
        if (end > (long)sizeof(tail) - 1)
            fseek(f, end - (long)sizeof(tail) + 1, SEEK_SET);
        else
            rewind(f);
        n = fread(tail, 1, sizeof(tail) - 1, f);
    }
    fclose(f);
    while (n && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' '))
        n--;
    tail[n] = 0;
    char *line = strrchr(tail, '\n');
    line = line ? line + 1 : tail;
    if (!*line)
        return NULL;
    if (strlen(line) > 300)
        line[300] = 0;
    return fg_strdup(line);
}

static void stop_gateway(struct scen_run *r)
{
    r->phase = PH_STOP;
    fg_progress_stage(r->prog, "stopping the gateway");
    uv_timer_stop(&r->timer);
    if (r->gw) {
        r->meta.gateway_running_at_end = fg_gateway_running(r->gw);
        r->meta.gateway_exit_status = fg_gateway_exit_status(r->gw);
        r->meta.gateway_term_signal = fg_gateway_term_signal(r->gw);
        if (!r->meta.gateway_running_at_end)
            r->meta.gateway_last_output = log_last_line(r->workdir, "gateway.log");
        fg_gateway_stop(r->gw, gw_stopped, r);
    } else {
        r->phase = PH_DONE;
        close_all(r);
    }
}

static void probe_done(struct fg_injector *inj, void *ud)
{
    struct scen_run *r = ud;
    (void)inj;
    if (r->phase == PH_PROBE)
        stop_gateway(r);
}

static void start_probe(struct scen_run *r)
{
    if (r->prof->is_client) {
        /* A client has no inbound side to probe. */
        stop_gateway(r);
        return;
    }
    r->phase = PH_PROBE;
    fg_progress_stage(r->prog, "probing the gateway");
    r->meta.probe_start_us = fg_wall_us();
    struct fg_injector_opts io = {.host = "127.0.0.1",
                                  .port = r->meta.gateway_port,
                                  .msgs = NULL,
                                  .nmsgs = 0,
                                  .timeout_ms = PROBE_TIMEOUT_MS,
                                  .capture = r->cap};
    int rc = fg_injector_start(r->loop, &io, probe_done, r, &r->probe);
    if (rc < 0) {
        r->probe = NULL;
        stop_gateway(r);
        return;
    }
    /* The probe has its own per-reply deadline; this one covers a probe
     * that never calls back. */
    arm(r, PROBE_TIMEOUT_MS * 2);
}

/* settled - every accepted message reached the fake MTA at least once,
 * and no stalled connection is still waiting for the gateway to give up. */
static int settled(struct scen_run *r)
{
    if (r->gw && !fg_gateway_running(r->gw))
        return 1;
    if (r->proxy && fg_proxy_stalled_open(r->proxy) > 0)
        return 0;
    for (size_t i = 0; i < r->nmsgs; i++) {
        if (r->msgs[i].status != 0)
            continue; /* never accepted: nothing to wait for */
        if (fg_mta_count_token(r->mta, r->msgs[i].token) == 0 &&
            (!r->x400 || fg_x400_peer_count_token(r->x400, r->msgs[i].token) == 0))
            return 0;
    }
    return 1;
}

static void busy_probe_done(struct fg_injector *inj, void *ud)
{
    (void)inj;
    (void)ud;
}

/* busy_probe - once a fault holds an outbound session back (stalled,
 * delayed, throttled), open an inbound connection now and then: does the
 * gateway still greet? */
static void busy_probe(struct scen_run *r, uint64_t now)
{
    if (!r->want_busy || r->nbusy >= BUSY_PROBES || now < r->next_busy_ms || !r->proxy)
        return;
    /* Busy from the first fault that holds an outbound session back. */
    static const char *const slow[] = {"stall", "delay", "throttle", "blackhole", "slice"};
    int busy = 0;
    for (size_t i = 0; i < r->faults.nlog && !busy; i++)
        for (size_t k = 0; k < sizeof(slow) / sizeof(slow[0]); k++)
            if (strncmp(r->faults.log[i].action, slow[k], strlen(slow[k])) == 0)
                busy = 1;
    if (!busy)
        return;
    struct fg_injector_opts io = {.host = "127.0.0.1",
                                  .port = r->meta.gateway_port,
                                  .msgs = NULL,
                                  .nmsgs = 0,
                                  .timeout_ms = BUSY_TIMEOUT_MS,
                                  .capture = r->cap};
    struct fg_injector *inj = NULL;
    if (fg_injector_start(r->loop, &io, busy_probe_done, r, &inj) == 0)
        r->busy[r->nbusy++] = inj;
    r->next_busy_ms = now + BUSY_INTERVAL_MS;
}

static void run_advance(struct scen_run *r)
{
    uint64_t now = fg_now_ms();
    if (r->phase == PH_INJECT || r->phase == PH_WATCH)
        busy_probe(r, now);
    switch (r->phase) {
    case PH_INJECT:
        /* The injector's own deadlines end it; this is the horizon. */
        if (now >= r->inject_start_ms + r->horizon_ms)
            start_probe(r);
        else
            arm(r, WATCH_MS);
        break;
    case PH_WATCH:
        if (now >= r->inject_start_ms + r->horizon_ms) {
            start_probe(r);
        } else if (settled(r)) {
            r->phase = PH_SETTLE;
            fg_progress_stage(r->prog, "settling");
            r->settle_until_ms = now + SETTLE_MS;
            arm(r, SETTLE_MS);
        } else {
            arm(r, WATCH_MS);
        }
        break;
    case PH_SETTLE:
        if (now >= r->settle_until_ms || now >= r->inject_start_ms + r->horizon_ms)
            start_probe(r);
        else
            arm(r, r->settle_until_ms - now);
        break;
    case PH_PROBE:
        /* The probe did not finish in time: stop anyway. */
        stop_gateway(r);
        break;
    default:
        break;
    }
}

static void inject_done(struct fg_injector *inj, void *ud)
{
    struct scen_run *r = ud;
    (void)inj;
    if (r->phase != PH_INJECT)
        return;
    r->phase = PH_WATCH;
    fg_progress_stage(r->prog, "watching");
    arm(r, WATCH_MS);
}

static void gw_ready(struct fg_gateway *g, int status, void *ud)
{
    struct scen_run *r = ud;
    (void)g;
    r->gw_ready_status = status;
    if (status < 0) {
        char detail[FG_ERRBUF_SIZE];
        snprintf(detail, sizeof(detail),
                 "gateway did not become ready within %.1f s (its output: %s/gateway.log)",
                 (double)r->prof->ready_timeout_ms / 1000.0, r->workdir);
        set_error(r, status, "%s", detail);
        stop_gateway(r);
        return;
    }
    r->phase = PH_INJECT;
    fg_progress_stage(r->prog, "injecting");
    r->inject_start_ms = fg_now_ms();
    struct fg_injector_opts io = {.host = "127.0.0.1",
                                  .port = r->meta.gateway_port,
                                  .msgs = r->msgs,
                                  .nmsgs = r->nmsgs,
                                  .timeout_ms = 0,
                                  .capture = r->cap};
    int rc = fg_injector_start(r->loop, &io, inject_done, r, &r->inj);
    if (rc < 0) {
        r->inj = NULL;
        set_error(r, rc, "cannot start the injector: %s", NULL);
        stop_gateway(r);
        return;
    }
    arm(r, WATCH_MS);
}

/* --- a client under test ------------------------------------------------- */

static void start_next_client(struct scen_run *r);

static void client_done(struct fg_submit *s, const struct fg_submit_result *res, void *ud)
{
    struct scen_run *r = ud;
    struct fg_meta_client *c = &r->meta.clients[r->meta.nclients++];
    snprintf(c->token, sizeof(c->token), "%s", res->token);
    c->exit_status = res->exit_status;
    c->term_signal = res->term_signal;
    c->timed_out = res->timed_out;
    c->spawned = res->spawned;
    c->start_us = res->start_us;
    c->duration_ms = res->duration_ms;
    c->stderr_tail = res->stderr_tail[0] ? fg_strdup(res->stderr_tail) : NULL;
    r->sub = NULL;
    r->pending_closes++;
    fg_submit_close(s, closed_one, r);
    if (r->phase == PH_INJECT)
        start_next_client(r);
}

/* start_next_client - the client's command for the next message, or the
 * watch phase once every message had its run (sequentially: a client is
 * one submission at a time, and the judge tells the runs' connections
 * apart by their times). */
static void start_next_client(struct scen_run *r)
{
    while (r->next_client < r->nmsgs) {
        size_t i = r->next_client++;
        struct fg_inject_msg *im = &r->msgs[i];
        /* Not the injector's: nothing for the watch to wait for. */
        im->status = FG_ENOTAVAIL;
        size_t len = 0;
        char *text = fg_injector_body(im, &len);
        struct fg_submit_msg sm = {.token = im->token,
                                   .from = im->from,
                                   .to = im->to,
                                   .nto = im->nto,
                                   .text = text,
                                   .len = len};
        char *mfile = fg_asprintf("%s/message-%zu.eml", r->workdir, i + 1);
        char *log = fg_asprintf("%s/client.log", r->workdir);
        struct fg_submit_opts so = {.argv = r->prof->submit_argv,
                                    .nargv = r->prof->nsubmit,
                                    .env = r->prof->submit_env,
                                    .nenv = r->prof->nsubmit_env,
                                    .stdin_message = r->prof->submit_stdin,
                                    .timeout_ms = r->prof->submit_timeout_ms,
                                    .vars = &r->vars,
                                    .message_file = mfile,
                                    .log_path = log};
        char err[FG_ERRBUF_SIZE - 64];
        int rc = fg_submit_start(r->loop, &so, &sm, client_done, r, &r->sub, err, sizeof(err));
        free(text);
        free(mfile);
        free(log);
        if (rc < 0) {
            r->sub = NULL;
            set_error(r, rc, "cannot run the client: %s", err);
            stop_gateway(r);
            return;
        }
        return;
    }
    r->phase = PH_WATCH;
    fg_progress_stage(r->prog, "watching");
    arm(r, WATCH_MS);
}

static void start_clients(struct scen_run *r)
{
    r->phase = PH_INJECT;
    fg_progress_stage(r->prog, "running the client");
    r->inject_start_ms = fg_now_ms();
    r->meta.clients = fg_calloc(r->nmsgs + 1, sizeof(*r->meta.clients));
    r->meta.gateway_running_at_end = 0;
    arm(r, WATCH_MS);
    start_next_client(r);
}

/* --- one scenario ------------------------------------------------------- */

/* helper_dir - where faultgate's helper programs (refgw) are: the
 * directory of the faultgate executable when installed, or its build
 * tree's fakes/refgw; FG_BINDIR overrides both. */
static char *helper_dir(void)
{
    const char *env = getenv("FG_BINDIR");
    if (env && *env)
        return fg_strdup(env);
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0)
        return fg_strdup(".");
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = '\0';
    char *in_build = fg_asprintf("%s/fakes/refgw", buf);
    char *probe = fg_asprintf("%s/refgw", in_build);
    int found = access(probe, X_OK) == 0;
    free(probe);
    if (found)
        return in_build;
    free(in_build);
    return fg_strdup(buf);
}

static void meta_from_profile(struct fg_meta *m, const struct fg_profile *p)
{
    m->profile_name = fg_strdup(p->name ? p->name : "");
    m->tls_policy = p->tls_policy;
    m->ntimeouts = p->ntimeouts;
    m->timeouts = fg_calloc(p->ntimeouts ? p->ntimeouts : 1, sizeof(*m->timeouts));
    for (size_t i = 0; i < p->ntimeouts; i++) {
        m->timeouts[i].name = fg_strdup(p->timeouts[i].name);
        m->timeouts[i].ms = p->timeouts[i].ms;
    }
}

static void meta_from_run(struct scen_run *r)
{
    struct fg_meta *m = &r->meta;
    m->ndecisions = r->faults.nlog + r->x4faults.nlog;
    m->decisions = fg_calloc(m->ndecisions ? m->ndecisions : 1, sizeof(*m->decisions));
    if (r->faults.nlog)
        memcpy(m->decisions, r->faults.log, r->faults.nlog * sizeof(*m->decisions));
    /* The X.400 proxy's decisions follow (their actions read "x400 ..."). */
    if (r->x4faults.nlog)
        memcpy(m->decisions + r->faults.nlog, r->x4faults.log,
               r->x4faults.nlog * sizeof(*m->decisions));
    m->ntokens = r->nmsgs;
    m->tokens = fg_calloc(r->nmsgs ? r->nmsgs : 1, sizeof(*m->tokens));
    for (size_t i = 0; i < r->nmsgs; i++) {
        snprintf(m->tokens[i].token, sizeof(m->tokens[i].token), "%s", r->msgs[i].token);
        m->tokens[i].accepted = r->msgs[i].status == 0;
        m->tokens[i].reply_code = r->msgs[i].reply_code;
        m->tokens[i].accepted_us = r->msgs[i].accepted_us;
    }
    m->end_us = fg_wall_us();
}

static char *gateway_version(const struct fg_profile *p, const struct fg_gateway_vars *v)
{
    if (!p->version_cmd)
        return NULL;
    char *cmd = NULL;
    char err[FG_ERRBUF_SIZE];
    if (fg_placeholder_fill(p->version_cmd, v, &cmd, err, sizeof(err)) < 0)
        return NULL;
    /* A short, bounded command: the version line only.  timeout(1) keeps a
     * gateway that does not know --version from hanging the run. */
    char *full = fg_asprintf("timeout 5 %s 2>&1", cmd);
    free(cmd);
    FILE *f = popen(full, "r");
    free(full);
    if (!f)
        return NULL;
    char line[256] = "";
    char *got = fgets(line, sizeof(line), f);
    pclose(f);
    if (!got)
        return NULL;
    line[strcspn(line, "\r\n")] = '\0';
    return line[0] ? fg_strdup(line) : NULL;
}

/* abs_dir_of - the absolute directory of path, for {profile_dir}: the
 * gateway runs in its work directory, so relative paths would break. */
static char *abs_dir_of(const char *path)
{
    char *full = realpath(path, NULL);
    if (!full)
        return fg_strdup(".");
    char *slash = strrchr(full, '/');
    if (slash && slash != full)
        *slash = '\0';
    return full;
}

/* profile_has_x400 - whether the gateway has an X.400 side at all: its
 * profile hands it the X.400 upstream.  Scenarios of the X.400 leg do not
 * apply to a gateway without one (DESIGN: `skip`). */
static int profile_has_x400(const struct fg_profile *p)
{
    for (size_t i = 0; i < p->nargv; i++)
        if (strstr(p->argv[i], "{x400_upstream}"))
            return 1;
    for (size_t i = 0; i < p->nenv; i++)
        if (strstr(p->env[i], "{x400_upstream}"))
            return 1;
    return 0;
}

/* does_not_apply - why sc does not apply to the system under test (DESIGN:
 * `skip`), or NULL.  A plain client has no inbound side and relays
 * nothing, so rules about a relay do not apply to it; rules about a
 * client's own exit do not apply to a relay. */
/* Rules about the gateway's own STARTTLS as a client (scenarios/tls and the
 * outbound STARTTLS cases of scenarios/security). */
static int is_tls_out_rule(const char *rule)
{
    static const char *const rules[] = {"tls-policy-honoured", "starttls-fresh-session",
                                        "starttls-no-response-injection"};
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (strcmp(rule, rules[i]) == 0)
            return 1;
    return 0;
}

static const char *does_not_apply(const struct fg_scenario *sc, const struct fg_profile *p)
{
    static const char *const relay_rules[] = {"gateway-alive", "inbound-accepts-while-busy",
                                              "message-fate", "retries-after-drop"};
    int client = p->nsubmit > 0;
    if (sc->leg == FG_LEG_X400 && !profile_has_x400(p))
        return "the gateway has no X.400 side (its profile never uses {x400_upstream})";
    if (client && sc->leg == FG_LEG_INBOUND)
        return "a client has no inbound side";
    for (size_t i = 0; i < sc->nexpects; i++) {
        const char *rule = sc->expects[i].rule;
        if (p->tls_policy == FG_TLS_POLICY_NONE && is_tls_out_rule(rule))
            return "the gateway does not use STARTTLS outbound (its profile: tls_policy: none)";
        if (!client && strncmp(rule, "client-", 7) == 0)
            return "the scenario judges a client's exit; the profile is a gateway";
        for (size_t k = 0; client && k < sizeof(relay_rules) / sizeof(relay_rules[0]); k++)
            if (strcmp(rule, relay_rules[k]) == 0)
                return "the scenario judges a relay; the profile is a client";
    }
    return NULL;
}

/* --- TLS: the key log and the test CA file ----------------------------- */

/* <id>.keys beside <id>.pcap: every TLS session this process makes (the
 * fake MTA's, the injector's, both legs of a terminating proxy) writes its
 * secrets there, one flushed line each, so that Wireshark decrypts the
 * trace (`tshark -o tls.keylog_file:<id>.keys`).  Without it the run goes
 * on: only decryption is lost. */
static void keylog_open(struct scen_run *r)
{
    r->keylog_path = fg_asprintf("%s/%s.keys", r->out_dir, r->sc->id);
    r->keylog = fopen(r->keylog_path, "we"); /* not inherited by the gateway */
    fg_tls_keylog_set(r->keylog);
}

/* Named in the meta only when some session wrote to it. */
static void keylog_close(struct scen_run *r)
{
    if (!r->keylog_path)
        return;
    fg_tls_keylog_set(NULL);
    long size = -1;
    if (r->keylog) {
        size = ftell(r->keylog);
        fclose(r->keylog);
        r->keylog = NULL;
    }
    if (size > 0)
        r->meta.keylog = fg_asprintf("%s.keys", r->sc->id);
    else
        unlink(r->keylog_path);
    FG_FREE(r->keylog_path);
}

/* {workdir}/ca.pem: the CAs a gateway must trust to verify its next hop
 * under STARTTLS: the terminating proxy's (it is what the gateway talks
 * to) and the fake MTA's.  One PEM bundle, which OpenSSL, GnuTLS and
 * Python read alike. */
static int write_ca_file(struct scen_run *r)
{
    const char *pem[2] = {r->proxy ? fg_proxy_tls_ca_pem(r->proxy) : NULL,
                          r->mta ? fg_mta_ca_pem(r->mta) : NULL};
    if (!pem[0] && !pem[1])
        return 0;
    char *path = fg_asprintf("%s/ca.pem", r->workdir);
    FILE *f = fopen(path, "w");
    int rc = f ? 0 : -errno;
    for (int i = 0; i < 2 && f; i++)
        if (pem[i] && fputs(pem[i], f) < 0)
            rc = -EIO;
    if (f && fclose(f) != 0 && rc == 0)
        rc = -EIO;
    free(path);
    return rc;
}

static void run_scenario(uv_loop_t *loop, const struct fg_run_opts *o, struct fg_progress *prog,
                         const struct fg_profile *prof, const struct fg_scenario *sc,
                         const char *out_dir, const char *run_id, uint64_t seed,
                         struct fg_scenario_result *res)
{
    struct scen_run r;
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    r.o = o;
    r.sc = sc;
    r.prof = prof;
    r.prog = prog;
    r.out_dir = out_dir;
    /* {workdir} is absolute: a gateway's start command may chdir or make
     * links to it (scenarios/gateways/postfix/postfix-gateway.sh). */
    char cwd[4096];
    if (out_dir[0] != '/' && getcwd(cwd, sizeof cwd))
        r.workdir = fg_asprintf("%s/%s/%s", cwd, out_dir, sc->id);
    else
        r.workdir = fg_asprintf("%s/%s", out_dir, sc->id);
    r.pcap_name = fg_asprintf("%s.pcap", sc->id);
    r.pcap_path = fg_asprintf("%s/%s", out_dir, r.pcap_name);
    r.meta_path = fg_asprintf("%s/%s.meta.json", out_dir, sc->id);
    r.profile_dir = abs_dir_of(prof->path);
    uint64_t t0 = fg_now_ms();

    struct fg_meta *m = &r.meta;
    m->scenario_id = fg_strdup(sc->id);
    m->seed = seed;
    m->pcap = fg_strdup(r.pcap_name);
    m->ledger = fg_asprintf("%s/ledger.jsonl", sc->id); /* relative to the meta file */
    m->start_us = fg_wall_us();
    m->gateway_running_at_end = 1;
    meta_from_profile(m, prof);

    fg_fault_set_init(&r.faults, seed);
    for (size_t i = 0; i < sc->nfaults; i++) {
        struct fg_fault f = sc->faults[i];
        /* The set takes ownership of its copy's strings. */
        f.spec = f.spec ? fg_strdup(f.spec) : NULL;
        f.reply_text = f.reply_text ? fg_strdup(f.reply_text) : NULL;
        fg_fault_set_add(&r.faults, &f);
    }
    fg_x400_fault_set_init(&r.x4faults, seed);
    for (size_t i = 0; i < sc->nx400_faults; i++)
        fg_x400_fault_set_add(&r.x4faults, &sc->x400_faults[i]);
    build_messages(&r, run_id);
    for (size_t i = 0; i < sc->nexpects; i++)
        if (strcmp(sc->expects[i].rule, "inbound-accepts-while-busy") == 0)
            r.want_busy = 1;

    char err[FG_ERRBUF_SIZE] = "";
    int rc = fg_mkdir_p(r.workdir);
    if (rc < 0) {
        set_error(&r, rc, "cannot create the work directory: %s", NULL);
        goto judge;
    }

    m->gateway_port = fg_port_alloc();
    if (m->gateway_port < 0) {
        set_error(&r, m->gateway_port, "cannot allocate a port: %s", NULL);
        goto judge;
    }
    int ports[1] = {m->gateway_port};
    rc = fg_capture_open(loop, o->capture, r.pcap_path, ports, 1, &r.cap, err, sizeof(err));
    if (rc < 0) {
        set_error(&r, rc, "capture failed: %s", err);
        goto judge;
    }
    m->capture_mode = fg_strdup(fg_capture_mode_name(fg_capture_mode(r.cap)));
    keylog_open(&r);

    char *ledger = fg_asprintf("%s/ledger.jsonl", r.workdir);
    struct fg_mta_opts mo = {
        .host = "127.0.0.1", .port = 0, .ledger_path = ledger, .script = sc->mta};
    rc = fg_mta_new(loop, &mo, &r.mta, err, sizeof(err));
    free(ledger);
    if (rc < 0) {
        r.mta = NULL;
        set_error(&r, rc, "fake MTA: %s", err);
        goto teardown;
    }
    m->mta_port = fg_mta_port(r.mta);
    fg_capture_add_port(r.cap, m->mta_port);

    struct fg_proxy_opts po = {.listen_host = "127.0.0.1",
                               .listen_port = 0,
                               .upstream_host = "127.0.0.1",
                               .upstream_port = m->mta_port,
                               .faults = &r.faults,
                               .capture = r.cap,
                               .log = o->verbose ? stderr : NULL,
                               .tls_terminate = sc->tls_terminate,
                               .tls_hostname = sc->mta ? sc->mta->hostname : NULL,
                               .tls_upstream_ca = fg_mta_ca_pem(r.mta)};
    m->tls_terminate = sc->tls_terminate;
    rc = fg_proxy_new(loop, &po, &r.proxy, err, sizeof(err));
    if (rc < 0) {
        r.proxy = NULL;
        set_error(&r, rc, "proxy: %s", err);
        goto teardown;
    }
    if ((rc = write_ca_file(&r)) < 0) {
        set_error(&r, rc, "cannot write the test CA file: %s", NULL);
        goto teardown;
    }
    m->proxy_port = fg_proxy_port(r.proxy);
    fg_capture_add_port(r.cap, m->proxy_port);

    /* Every run has a strict foreign X.400 system too, so that a gateway
     * with an X.400 side ({x400_upstream}) has somewhere to relay. */
    char *x400_ledger = fg_asprintf("%s/x400-ledger.jsonl", r.workdir);
    struct fg_x400_peer_opts xo = {.host = "127.0.0.1",
                                   .port = 0,
                                   .ledger_path = x400_ledger,
                                   .on_invalid = (enum fg_x400_reaction)sc->x400_on_invalid,
                                   .capture = r.cap,
                                   .log = o->verbose ? stderr : NULL};
    rc = fg_x400_peer_new(loop, &xo, &r.x400, err, sizeof(err));
    free(x400_ledger);
    if (rc < 0) {
        r.x400 = NULL;
        set_error(&r, rc, "fake X.400 MTA: %s", err);
        goto teardown;
    }
    m->x400_port = fg_x400_peer_port(r.x400);
    fg_capture_add_port(r.cap, m->x400_port);
    if (sc->nx400_faults) {
        /* X.400 faults: the gateway's peer is the X.400 proxy.  x400_port
         * stays the port the gateway connects to, so that the X.400 rules
         * judge the gateway's leg; the proxy's leg to the fake MTA is
         * x400_mta_port. */
        struct fg_x400_proxy_opts xpo = {.listen_host = "127.0.0.1",
                                         .upstream_host = "127.0.0.1",
                                         .upstream_port = m->x400_port,
                                         .faults = &r.x4faults,
                                         .capture = r.cap,
                                         .log = o->verbose ? stderr : NULL};
        rc = fg_x400_proxy_new(loop, &xpo, &r.x4proxy, err, sizeof(err));
        if (rc < 0) {
            r.x4proxy = NULL;
            set_error(&r, rc, "X.400 proxy: %s", err);
            goto teardown;
        }
        m->x400_mta_port = m->x400_port;
        m->x400_port = fg_x400_proxy_port(r.x4proxy);
        fg_capture_add_port(r.cap, m->x400_port);
    }
    snprintf(r.x400_upstream, sizeof(r.x400_upstream), "127.0.0.1:%d", m->x400_port);

    uv_timer_init(loop, &r.timer);
    r.timer.data = &r;
    r.timer_open = 1;

    char upstream_port[16];
    snprintf(upstream_port, sizeof(upstream_port), "%d", m->proxy_port);
    struct fg_gateway_vars v = {.gateway_port = m->gateway_port,
                                .upstream_host = "127.0.0.1",
                                .upstream_port = m->proxy_port,
                                .x400_upstream = r.x400_upstream,
                                .workdir = r.workdir,
                                .bindir = o->bindir,
                                .profile_dir = r.profile_dir};
    m->gateway_version = gateway_version(prof, &v);
    /* The expectations measure from events a little after the injection
     * starts (the acceptance of a message, a stall): keep watching a while
     * past the longest window so the trace covers every window whole. */
    r.horizon_ms = fg_expect_horizon_ms(sc, m) + HORIZON_MARGIN_MS;
    if (prof->is_client) {
        /* Room for every run of the client to reach its own deadline. */
        uint64_t runs = r.nmsgs * prof->submit_timeout_ms + HORIZON_MARGIN_MS;
        if (runs > r.horizon_ms)
            r.horizon_ms = runs;
    }
    if (sc->deadline_ms && sc->deadline_ms < r.horizon_ms)
        r.horizon_ms = sc->deadline_ms;

    if (prof->is_client) {
        /* No gateway: the client's command is run against the proxy. */
        r.vars = v;
        start_clients(&r);
        uv_run(loop, UV_RUN_DEFAULT);
        goto teardown;
    }
    r.phase = PH_START;
    fg_progress_stage(r.prog, "starting the gateway");
    rc = fg_gateway_start(loop, prof, &v, gw_ready, &r, &r.gw, err, sizeof(err));
    if (rc < 0) {
        r.gw = NULL;
        set_error(&r, rc, "cannot start the gateway: %s", err);
        r.phase = PH_DONE;
        close_all(&r);
    }
    uv_run(loop, UV_RUN_DEFAULT);

teardown:
    if (r.phase != PH_DONE)
        close_all(&r);
    uv_run(loop, UV_RUN_DEFAULT);
    if (r.gw) {
        fg_gateway_free(r.gw);
        r.gw = NULL;
    }
    meta_from_run(&r);
    keylog_close(&r);
    if (r.cap) {
        rc = fg_capture_close(r.cap);
        r.cap = NULL;
        uv_run(loop, UV_RUN_DEFAULT);
        if (rc < 0)
            set_error(&r, rc, "capture failed: %s", NULL);
    }

judge:;
    fg_progress_stage(r.prog, "judging");
    char merr[FG_ERRBUF_SIZE];
    if (fg_meta_write(r.meta_path, m, merr, sizeof(merr)) < 0 && !r.errored)
        set_error(&r, FG_EINPUT, "%s", merr);

    memset(res, 0, sizeof(*res));
    if (r.errored) {
        res->id = fg_strdup(sc->id);
        res->title = fg_strdup(sc->title ? sc->title : "");
        res->path = fg_strdup(sc->path);
        res->verdict = FG_V_ERROR;
        res->error = fg_strdup(r.err);
        res->pcap = fg_strdup(r.pcap_name);
        struct fg_meta *mcopy = NULL;
        if (fg_meta_read(r.meta_path, &mcopy, merr, sizeof(merr)) == 0)
            res->meta = mcopy;
    } else {
        struct fg_meta *mj = NULL;
        /* Judge from what was saved, exactly as `faultgate judge` does. */
        if (fg_meta_read(r.meta_path, &mj, merr, sizeof(merr)) < 0) {
            res->id = fg_strdup(sc->id);
            res->path = fg_strdup(sc->path);
            res->verdict = FG_V_ERROR;
            res->error = fg_strdup(merr);
        } else {
            fg_judge(sc, mj, r.pcap_path, res);
            FG_FREE(res->pcap);
            res->pcap = fg_strdup(r.pcap_name);
        }
    }
    res->duration_ms = fg_now_ms() - t0;

    /* Local state. */
    fg_meta_clear(m);
    fg_fault_set_free(&r.faults);
    fg_x400_fault_set_free(&r.x4faults);
    free(r.msgs);
    free(r.workdir);
    free(r.pcap_path);
    free(r.meta_path);
    free(r.pcap_name);
    free(r.profile_dir);
}

/* --- the whole run ------------------------------------------------------ */

/* Stable shard assignment by scenario id (FNV-1a), so that the same
 * scenario lands in the same shard on every runner. */
static unsigned shard_of(const char *id, unsigned n)
{
    uint32_t h = 2166136261u;
    for (const char *p = id; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 16777619u;
    }
    return h % n + 1;
}

static void print_result(const struct fg_scenario_result *r, int verbose)
{
    static const char *const tag[] = {"PASS", "INCONC", "FAIL", "ERROR", "SKIP"};
    printf("%-6s %s (%.1f s)\n", tag[r->verdict], r->id ? r->id : "?",
           (double)r->duration_ms / 1000.0);
    if (r->error)
        printf("       %s: %s\n", r->verdict == FG_V_SKIP ? "skipped" : "error", r->error);
    for (size_t i = 0; i < r->noutcomes; i++) {
        const struct fg_outcome *oc = &r->outcomes[i];
        if (oc->verdict == FG_V_PASS && !verbose)
            continue;
        printf("       %s %s: %s\n", fg_verdict_name(oc->verdict), oc->rule,
               oc->summary ? oc->summary : "");
        if (oc->evidence && (verbose || oc->verdict != FG_V_PASS)) {
            const char *e = oc->evidence;
            while (*e) {
                size_t l = strcspn(e, "\n");
                printf("         %.*s\n", (int)l, e);
                e += l;
                if (*e == '\n')
                    e++;
            }
        }
    }
    fflush(stdout);
}

static int exit_status(const struct fg_scenario_result *res, size_t n)
{
    int status = 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i].verdict == FG_V_ERROR)
            return 2;
        if (res[i].verdict == FG_V_FAIL || res[i].verdict == FG_V_INCONC)
            status = 1;
    }
    return status;
}

static int write_outputs(const char *out_dir, const struct fg_run_info *ri,
                         const struct fg_scenario_result *res, size_t n)
{
    char err[FG_ERRBUF_SIZE];
    char *json = fg_asprintf("%s/results.json", out_dir);
    char *junit = fg_asprintf("%s/junit.xml", out_dir);
    int rc = fg_results_write_json(json, ri, res, n, err, sizeof(err));
    if (rc >= 0)
        rc = fg_results_write_junit(junit, ri, res, n, err, sizeof(err));
    if (rc >= 0)
        rc = fg_report_write_dir(out_dir, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "faultgate: %s\n", err);
    free(json);
    free(junit);
    return rc;
}

static void make_run_id(char *buf, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, len, "%04d%02d%02dT%02d%02d%02dZ-%05d", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(getpid() % 100000));
}

static const char *hostname(char *buf, size_t len)
{
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(buf, len, "%s %s %s", u.nodename, u.sysname, u.machine);
    else
        snprintf(buf, len, "unknown");
    return buf;
}

int fg_run_main(const struct fg_run_opts *o)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_profile *prof = NULL;
    int rc = fg_profile_load(o->profile_path, &prof, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "faultgate: %s\n", err);
        return 2;
    }
    char **paths = NULL;
    size_t npaths = 0;
    rc = fg_scenario_find(o->paths, o->npaths, &paths, &npaths, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "faultgate: %s\n", err);
        fg_profile_free(prof);
        return 2;
    }
    if (npaths == 0) {
        fprintf(stderr, "faultgate: no scenario files found\n");
        fg_profile_free(prof);
        return 2;
    }
    /* Load every scenario first: a bad one stops the run before anything
     * starts, with its file:line:col. */
    struct fg_scenario **scs = fg_calloc(npaths, sizeof(*scs));
    size_t nsc = 0;
    for (size_t i = 0; i < npaths; i++) {
        struct fg_scenario *sc = NULL;
        rc = fg_scenario_load(paths[i], &sc, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "faultgate: %s\n", err);
            for (size_t j = 0; j < nsc; j++)
                fg_scenario_free(scs[j]);
            free(scs);
            fg_scenario_paths_free(paths, npaths);
            fg_profile_free(prof);
            return 2;
        }
        if (o->shard_n && shard_of(sc->id, o->shard_n) != o->shard_k) {
            fg_scenario_free(sc);
            continue;
        }
        scs[nsc++] = sc;
    }
    fg_scenario_paths_free(paths, npaths);

    char run_id[64];
    make_run_id(run_id, sizeof(run_id));
    char *out_dir = o->out_dir ? fg_strdup(o->out_dir) : fg_asprintf("reports/runs/%s", run_id);
    rc = fg_mkdir_p(out_dir);
    if (rc < 0) {
        fprintf(stderr, "faultgate: cannot create %s: %s\n", out_dir, fg_strerror(rc));
        for (size_t j = 0; j < nsc; j++)
            fg_scenario_free(scs[j]);
        free(scs);
        free(out_dir);
        fg_profile_free(prof);
        return 2;
    }
    uint64_t seed = o->seed_set ? o->seed : (uint64_t)time(NULL);
    char *bindir_own = NULL;
    struct fg_run_opts oo = *o;
    if (!oo.bindir)
        oo.bindir = bindir_own = helper_dir();

    if (!o->quiet)
        printf("faultgate %s: %zu scenario(s) against %s, seed %" PRIu64 ", output %s\n",
               FG_VERSION, nsc, prof->name ? prof->name : o->profile_path, seed, out_dir);

    struct fg_scenario_result *res = fg_calloc(nsc ? nsc : 1, sizeof(*res));
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct fg_progress *prog =
        fg_progress_new(&loop, stdout, o->quiet || o->verbose ? FG_PROGRESS_OFF : FG_PROGRESS_AUTO);
    uint64_t start_us = fg_wall_us();
    for (size_t i = 0; i < nsc; i++) {
        fg_progress_begin(prog, i + 1, nsc, scs[i]->id);
        const char *why_skip = does_not_apply(scs[i], prof);
        if (why_skip) {
            fg_scenario_result_init(&res[i], scs[i]);
            res[i].verdict = FG_V_SKIP;
            res[i].error = fg_strdup(why_skip);
        } else {
            run_scenario(&loop, &oo, prog, prof, scs[i], out_dir, run_id, seed, &res[i]);
        }
        fg_progress_end(prog);
        if (!o->quiet)
            print_result(&res[i], o->verbose);
    }
    fg_progress_free(prog);
    if (uv_loop_close(&loop) != 0) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }

    char host[256];
    struct fg_run_info ri = {.run_id = run_id,
                             .faultgate_version = FG_VERSION,
                             .profile_path = o->profile_path,
                             .profile_name = prof->name,
                             .seed = seed,
                             .start_us = start_us,
                             .end_us = fg_wall_us(),
                             .host = hostname(host, sizeof(host))};
    int status = exit_status(res, nsc);
    if (write_outputs(out_dir, &ri, res, nsc) < 0)
        status = 2;
    if (!o->quiet) {
        size_t cnt[5] = {0};
        for (size_t i = 0; i < nsc; i++)
            cnt[res[i].verdict]++;
        printf("%zu passed, %zu failed, %zu inconclusive, %zu errors, %zu skipped; results in "
               "%s/results.json\n",
               cnt[FG_V_PASS], cnt[FG_V_FAIL], cnt[FG_V_INCONC], cnt[FG_V_ERROR], cnt[FG_V_SKIP],
               out_dir);
    }
    for (size_t i = 0; i < nsc; i++) {
        fg_scenario_result_clear(&res[i]);
        fg_scenario_free(scs[i]);
    }
    free(res);
    free(scs);
    free(out_dir);
    free(bindir_own);
    fg_profile_free(prof);
    return status;
}

int fg_judge_main(const char *scenario_path, const char *out_dir, const char *pcap_path,
                  const char *meta_path, const char *keylog_path)
{
    char err[FG_ERRBUF_SIZE];
    struct fg_scenario *sc = NULL;
    int rc = fg_scenario_load(scenario_path, &sc, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "faultgate: %s\n", err);
        return 2;
    }
    char *mp = NULL;
    if (meta_path) {
        mp = fg_strdup(meta_path);
    } else {
        size_t l = strlen(pcap_path);
        if (l > 5 && strcmp(pcap_path + l - 5, ".pcap") == 0)
            mp = fg_asprintf("%.*s.meta.json", (int)(l - 5), pcap_path);
        else if (l > 7 && strcmp(pcap_path + l - 7, ".pcapng") == 0)
            mp = fg_asprintf("%.*s.meta.json", (int)(l - 7), pcap_path);
        else
            mp = fg_asprintf("%s.meta.json", pcap_path);
    }
    struct fg_meta *meta = NULL;
    rc = fg_meta_read(mp, &meta, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr,
                "faultgate: %s (judge needs the run metadata written beside the trace; "
                "name it with --meta)\n",
                err);
        free(mp);
        fg_scenario_free(sc);
        return 2;
    }
    free(mp);
    struct fg_scenario_result res;
    memset(&res, 0, sizeof(res));
    uint64_t t0 = fg_now_ms();
    fg_judge_keys(sc, meta, pcap_path, keylog_path, &res);
    res.duration_ms = fg_now_ms() - t0;
    print_result(&res, 0);
    int status = exit_status(&res, 1);
    if (out_dir) {
        rc = fg_mkdir_p(out_dir);
        char run_id[64];
        make_run_id(run_id, sizeof(run_id));
        char host[256];
        struct fg_run_info ri = {.run_id = run_id,
                                 .faultgate_version = FG_VERSION,
                                 .profile_path = "",
                                 .profile_name = res.meta ? res.meta->profile_name : "",
                                 .seed = res.meta ? res.meta->seed : 0,
                                 .start_us = res.meta ? res.meta->start_us : 0,
                                 .end_us = res.meta ? res.meta->end_us : 0,
                                 .host = hostname(host, sizeof(host))};
        if (rc < 0 || write_outputs(out_dir, &ri, &res, 1) < 0)
            status = 2;
    }
    fg_scenario_result_clear(&res);
    fg_scenario_free(sc);
    return status;
}
