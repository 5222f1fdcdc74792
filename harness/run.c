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
 *
 * Each scenario runs in a worker process of its own (fork), up to -j at
 * once: its own loop, gateway, proxy, fake MTA, X.400 peer, ports, capture
 * and work directory, and its own child subreaper, since gateway.c counts
 * every orphan the subreaper inherits as the one gateway's.  The parent
 * schedules, keeps the catalogue order, rewrites the reports after every
 * finished scenario and turns SIGINT/SIGTERM/SIGHUP into an orderly stop.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/fake_mta.h"
#include "faultgate/fake_x400.h"
#include "faultgate/gateway.h"
#include "faultgate/injector.h"
#include "faultgate/annotate.h"
#include "faultgate/judge.h"
#include "faultgate/meta.h"
#include "faultgate/outdir.h"
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
    int interrupted; /* the worker was told to stop (SIGINT, SIGTERM, SIGHUP) */
    struct fg_meta meta;
    char err[FG_ERRBUF_SIZE]; /* why the run is an error, if it is */
    int errored;
};

static void run_advance(struct scen_run *r);

/* The scenario a worker process runs, for its signal handler. */
static struct scen_run *worker_run;
static int worker_signals;

static void set_error(struct scen_run *r, int err, const char *fmt, const char *detail)
{
    if (r->errored)
        return;
    r->errored = 1;
    snprintf(r->err, sizeof(r->err), fmt, detail ? detail : fg_strerror(err));
}

/* --- messages ----------------------------------------------------------- */

static void build_messages(struct scen_run *r, const char *run_id, size_t ordinal)
{
    unsigned seq = 0;
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
            /* Unique across runs (run id) and within one (the scenario's
             * place in the catalogue and a sequence), so a message's fate
             * can be followed on every leg, whichever worker runs it. */
            snprintf(m->token, sizeof(m->token), "fgt-%.32s-%03zu-%04u", run_id, ordinal + 1,
                     ++seq);
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

/* masked_copies - how many copies at the fake MTA do not count as
 * delivered: when a fault replaces the reply to the end of data with a
 * 4xx or 5xx, the fake MTA holds a copy the gateway was told it did not
 * deliver, and what the scenario judges (its retry, or that none comes)
 * happens after that. */
static size_t masked_copies(const struct scen_run *r)
{
    for (size_t i = 0; i < r->sc->nfaults; i++) {
        const struct fg_fault *f = &r->sc->faults[i];
        if (f->trig == FG_TRIG_REPLY_TO_EOD && f->action == FG_ACT_REPLY && f->replace &&
            f->reply_code >= 400)
            return 1;
    }
    return 0;
}

/* settled - every accepted message reached the fake MTA at least once
 * (besides a masked copy), and no stalled connection is still waiting for
 * the gateway to give up. */
static int settled(struct scen_run *r)
{
    if (r->gw && !fg_gateway_running(r->gw))
        return 1;
    if (r->proxy && fg_proxy_stalled_open(r->proxy) > 0)
        return 0;
    size_t masked = masked_copies(r);
    for (size_t i = 0; i < r->nmsgs; i++) {
        if (r->msgs[i].status != 0)
            continue; /* never accepted: nothing to wait for */
        if (fg_mta_count_token(r->mta, r->msgs[i].token) <= masked &&
            (!r->x400 || fg_x400_peer_count_token(r->x400, r->msgs[i].token) <= masked))
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
    r->gw_ready_status = status;
    if (status < 0) {
        char detail[FG_ERRBUF_SIZE];
        if (fg_gateway_pid(g) > 0 && !fg_gateway_running(g)) {
            /* It died: that, not a timeout, is the cause. */
            char *last = log_last_line(r->workdir, "gateway.log");
            int sig = fg_gateway_term_signal(g);
            snprintf(detail, sizeof(detail),
                     "the gateway exited before it was ready (%s %d); its last output: %s%s%s "
                     "(all of it: %s/gateway.log)",
                     sig ? "killed by signal" : "exit status",
                     sig ? sig : (int)fg_gateway_exit_status(g), last ? "\"" : "",
                     last ? last : "none", last ? "\"" : "", r->workdir);
            free(last);
        } else
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

/* --- interruption ----------------------------------------------------------- */

/* on_worker_signal - the parent passes SIGTERM on when the run is
 * interrupted: the first stops the scenario as its end would (the gateway
 * gets its stop signal and grace, everything is closed and reaped); a
 * second one kills the gateway's group at once. */
static void on_worker_signal(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    struct scen_run *r = worker_run;
    worker_signals++;
    if (!r)
        return;
    r->interrupted = 1;
    if (!r->timer_open)
        return; /* not running yet: it will not start (run_scenario) */
    if (r->phase < PH_STOP) {
        stop_gateway(r);
    } else if (r->phase == PH_STOP && worker_signals > 1) {
        /* fg_gateway_free kills the group with SIGKILL and reaps it. */
        if (r->gw) {
            fg_gateway_free(r->gw);
            r->gw = NULL;
        }
        r->phase = PH_DONE;
        close_all(r);
    }
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

/* scenario_seed - the seed of a scenario's faults: the run's seed mixed
 * with the scenario's id (FNV-1a, then SplitMix64's finalizer), so that a
 * scenario's decisions depend neither on the order nor on the -j of the run
 * nor on which other scenarios it runs with. */
static uint64_t scenario_seed(uint64_t seed, const char *id)
{
    uint64_t h = 14695981039346656037ULL;
    for (const char *p = id; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL;
    }
    uint64_t z = seed ^ h;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void run_scenario(uv_loop_t *loop, const struct fg_run_opts *o, struct fg_progress *prog,
                         const struct fg_profile *prof, const struct fg_scenario *sc,
                         const char *out_dir, const char *run_id, size_t ordinal, uint64_t seed,
                         int gateway_port, struct fg_scenario_result *res)
{
    struct scen_run r;
    memset(&r, 0, sizeof(r));
    worker_run = &r;
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

    uint64_t sseed = scenario_seed(seed, sc->id);
    fg_fault_set_init(&r.faults, sseed);
    for (size_t i = 0; i < sc->nfaults; i++) {
        struct fg_fault f = sc->faults[i];
        /* The set takes ownership of its copy's strings. */
        f.spec = f.spec ? fg_strdup(f.spec) : NULL;
        f.reply_text = f.reply_text ? fg_strdup(f.reply_text) : NULL;
        fg_fault_set_add(&r.faults, &f);
    }
    fg_x400_fault_set_init(&r.x4faults, sseed);
    for (size_t i = 0; i < sc->nx400_faults; i++)
        fg_x400_fault_set_add(&r.x4faults, &sc->x400_faults[i]);
    build_messages(&r, run_id, ordinal);
    for (size_t i = 0; i < sc->nexpects; i++)
        if (strcmp(sc->expects[i].rule, "inbound-accepts-while-busy") == 0)
            r.want_busy = 1;

    char err[FG_ERRBUF_SIZE] = "";
    int rc = fg_outdir_fresh(r.workdir, err, sizeof err);
    if (rc < 0) {
        set_error(&r, rc, "%s", err);
        goto judge;
    }

    m->gateway_port = gateway_port > 0 ? gateway_port : fg_port_alloc();
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
    m->gateway_version = fg_gateway_version(prof, &v);
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
    rc = r.interrupted ? FG_ENOTREADY
                       : fg_gateway_start(loop, prof, &v, gw_ready, &r, &r.gw, err, sizeof(err));
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
    if (r.interrupted) {
        /* Whatever else went wrong came of the stop. */
        r.errored = 1;
        snprintf(r.err, sizeof(r.err), "interrupted");
    }
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
            char aerr[FG_ERRBUF_SIZE];
            if (!o->capture_pcap && fg_annotate_run(r.pcap_path, res, aerr, sizeof aerr) < 0)
                fprintf(stderr, "faultgate: %s: left unannotated: %s\n", r.pcap_path, aerr);
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
    worker_run = NULL;
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

static void print_result(FILE *f, const struct fg_scenario_result *r, int verbose)
{
    static const char *const tag[] = {"PASS", "INCONC", "FAIL", "ERROR", "SKIP"};
    fprintf(f, "%-6s %s (%.1f s)\n", tag[r->verdict], r->id ? r->id : "?",
            (double)r->duration_ms / 1000.0);
    if (r->error)
        fprintf(f, "       %s: %s\n", r->verdict == FG_V_SKIP ? "skipped" : "error", r->error);
    for (size_t i = 0; i < r->noutcomes; i++) {
        const struct fg_outcome *oc = &r->outcomes[i];
        if (oc->verdict == FG_V_PASS && !verbose)
            continue;
        fprintf(f, "       %s %s: %s\n", fg_verdict_name(oc->verdict), oc->rule,
                oc->summary ? oc->summary : "");
        if (oc->evidence && (verbose || oc->verdict != FG_V_PASS)) {
            const char *e = oc->evidence;
            while (*e) {
                size_t l = strcspn(e, "\n");
                fprintf(f, "         %.*s\n", (int)l, e);
                e += l;
                if (*e == '\n')
                    e++;
            }
        }
    }
    fflush(f);
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

/* --- parallel scenarios and interruption ---------------------------------- */

/* Signals the parent counts (SIGINT, SIGTERM, SIGHUP) and the pipe its
 * handler wakes the scheduler through (SIGCHLD too). */
static volatile sig_atomic_t run_signals;
static volatile sig_atomic_t run_last_signal;
static int wake_fds[2] = {-1, -1};
static const int stop_sigs[] = {SIGINT, SIGTERM, SIGHUP};
#define NSTOP_SIGS (sizeof(stop_sigs) / sizeof(stop_sigs[0]))

static void on_run_signal(int sig)
{
    int saved = errno;
    if (sig != SIGCHLD) {
        run_signals++;
        run_last_signal = sig;
    }
    if (wake_fds[1] >= 0 && write(wake_fds[1], "", 1) < 0) {
        /* full: the scheduler wakes anyway */
    }
    errno = saved;
}

/* After the first stop signal, a worker gets this long past the gateway's
 * stop grace to finish its stop; after the second, this long at all.  Then
 * it is killed, and its gateway's processes (inherited by the parent as
 * subreaper) with it. */
#define INTERRUPT_SLACK_MS 20000
#define HURRY_MS 3000
#define SWEEP_MS 3000
#define TICK_MS 250

struct worker {
    pid_t pid;
    size_t idx;
    uint64_t t0_ms;
    int port; /* its gateway's port, which no other worker gets meanwhile */
};

struct sched {
    const struct fg_run_opts *o;
    const struct fg_profile *prof;
    struct fg_scenario **scs;
    size_t nsc;
    const char *out_dir;
    const char *run_id;
    uint64_t seed;
    struct fg_run_info ri;
    json_t **done; /* each scenario's results object once finished */
    char **text;   /* and its lines for the terminal */
    size_t next_start, next_print, ndone;
    struct worker *w;
    size_t nw, maxw;
    int interrupted;
    uint64_t kill_at_ms; /* 0: not yet */
    uint64_t t0_ms;      /* the run's start */
    struct fg_progress *prog;
};

static char *result_path(const struct sched *s, size_t i, const char *ext)
{
    return fg_asprintf("%s/.%s.result.%s", s->out_dir, s->scs[i]->id, ext);
}

/* result_text - what the terminal shows of r. */
static char *result_text(const struct fg_scenario_result *r, int verbose)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return fg_strdup("");
    print_result(f, r, verbose);
    fclose(f);
    return buf;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[4096];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        fg_array_reserve((void **)&buf, &cap, len + n + 1, 1);
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (!buf)
        return fg_strdup("");
    buf[len] = '\0';
    return buf;
}

/* set_result - scenario i's result from a result in memory (a skip, or an
 * error the parent records for a worker that left none). */
static void set_result(struct sched *s, size_t i, const struct fg_scenario_result *r)
{
    json_t *doc = fg_results_doc(&s->ri, r, 1);
    s->done[i] = json_incref(json_array_get(json_object_get(doc, "scenarios"), 0));
    json_decref(doc);
    s->text[i] = result_text(r, s->o->verbose);
    s->ndone++;
}

/* write_reports - results.json, junit.xml and summary.md of what has
 * finished, in catalogue order, each through a temporary file renamed into
 * place; at the end report.html too.  A reader (or a run killed the next
 * moment) sees the last complete set. */
static int write_reports(struct sched *s, int final)
{
    char err[FG_ERRBUF_SIZE];
    s->ri.end_us = fg_wall_us();
    json_t *doc = fg_results_doc(&s->ri, NULL, 0);
    json_t *sa = json_object_get(doc, "scenarios");
    for (size_t i = 0; i < s->nsc; i++)
        if (s->done[i])
            json_array_append(sa, s->done[i]);
    fg_results_recount(doc);
    char *json = fg_asprintf("%s/results.json", s->out_dir);
    char *junit = fg_asprintf("%s/junit.xml", s->out_dir);
    char *md = fg_asprintf("%s/summary.md", s->out_dir);
    int rc = fg_results_doc_write(json, doc, err, sizeof(err));
    if (rc >= 0)
        rc = fg_results_junit_write_doc(junit, doc, err, sizeof(err));
    if (rc >= 0 && final) {
        /* The reports from the file, as `faultgate report html` renders it. */
        rc = fg_report_write_dir(s->out_dir, err, sizeof(err));
    } else if (rc >= 0) {
        json_t *back = NULL;
        rc = fg_results_doc_read(json, &back, err, sizeof(err));
        if (rc >= 0)
            rc = fg_report_md_write(md, back, err, sizeof(err));
        json_decref(back);
    }
    if (rc < 0)
        fprintf(stderr, "faultgate: %s\n", err);
    free(json);
    free(junit);
    free(md);
    json_decref(doc);
    return rc;
}

static void quiet_error(json_t *r)
{
    const char *v = json_string_value(json_object_get(r, "verdict"));
    const char *e = json_string_value(json_object_get(r, "error"));
    if (v && strcmp(v, "error") == 0)
        fprintf(stderr, "faultgate: %s: %s\n", json_string_value(json_object_get(r, "id")),
                e ? e : "error");
}

static void print_ready(struct sched *s, int all)
{
    for (; s->next_print < s->nsc; s->next_print++) {
        if (!s->done[s->next_print]) {
            if (!all)
                break;
            continue;
        }
        if (!s->o->quiet) {
            fg_progress_end(s->prog);
            fputs(s->text[s->next_print], stdout);
            fflush(stdout);
        } else {
            quiet_error(s->done[s->next_print]); /* -q still says what went wrong */
        }
    }
}

static void draw_flight(struct sched *s)
{
    if (!fg_progress_live(s->prog) || s->nw == 0)
        return;
    /* In catalogue order, as the results will be. */
    const char *ids[64];
    size_t n = 0;
    for (size_t i = 0; i < s->nsc && n < 64; i++)
        for (size_t k = 0; k < s->nw; k++)
            if (s->w[k].idx == i)
                ids[n++] = s->scs[i]->id;
    fg_progress_flight(s->prog, s->ndone, s->nsc, ids, n, s->t0_ms);
}

/* worker_main - run scenario i in this (forked) process and leave its
 * result beside the run's files for the parent; never returns. */
static void worker_main(struct sched *s, size_t i, int port, pid_t parent, const sigset_t *mask)
{
    for (size_t k = 0; k < NSTOP_SIGS; k++)
        signal(stop_sigs[k], SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    close(wake_fds[0]);
    close(wake_fds[1]);
    wake_fds[0] = wake_fds[1] = -1;
    /* A process group of its own: a terminal's ^C reaches the parent
     * alone, which stops the workers in order. */
    setpgid(0, 0);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
    if (getppid() != parent)
        _exit(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_signal_t sh[NSTOP_SIGS];
    for (size_t k = 0; k < NSTOP_SIGS; k++) {
        uv_signal_init(&loop, &sh[k]);
        uv_signal_start(&sh[k], on_worker_signal, stop_sigs[k]);
        uv_unref((uv_handle_t *)&sh[k]);
    }
    sigprocmask(SIG_SETMASK, mask, NULL);

    struct fg_scenario_result res;
    run_scenario(&loop, s->o, NULL, s->prof, s->scs[i], s->out_dir, s->run_id, i, s->seed, port,
                 &res);
    char err[FG_ERRBUF_SIZE];
    char *jp = result_path(s, i, "json"), *tp = result_path(s, i, "txt");
    int rc = fg_results_write_json(jp, &s->ri, &res, 1, err, sizeof(err));
    char *text = result_text(&res, s->o->verbose);
    char *tmp;
    FILE *f = rc < 0 ? NULL : fg_results_open(tp, &tmp, err, sizeof(err));
    if (f) {
        fputs(text, f);
        rc = fg_results_close(f, tp, tmp, err, sizeof(err));
    }
    if (rc < 0)
        fprintf(stderr, "faultgate: %s\n", err);
    free(text);
    free(jp);
    free(tp);
    fg_scenario_result_clear(&res);
    for (size_t k = 0; k < NSTOP_SIGS; k++)
        uv_close((uv_handle_t *)&sh[k], NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    exit(rc < 0 ? 3 : 0);
}

/* gateway_port - a port for the next worker's gateway.  fg_port_alloc
 * picks at random and checks only that the port is free now; a running
 * gateway of this run that has not bound its port yet would not show, and
 * two gateways on one port mean one fails to listen or, worse, the other's
 * readiness probe reaches it.  So no two workers in flight get the same. */
static int gateway_port(const struct sched *s)
{
    int port = -1;
    for (int tries = 0; tries < 64; tries++) {
        port = fg_port_alloc();
        int taken = 0;
        for (size_t k = 0; k < s->nw && port > 0; k++)
            taken |= s->w[k].port == port;
        if (port <= 0 || !taken)
            return port;
    }
    return port;
}

static int start_worker(struct sched *s, size_t i)
{
    int port = gateway_port(s);
    if (port < 0)
        return port;
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t k = 0; k < NSTOP_SIGS; k++)
        sigaddset(&block, stop_sigs[k]);
    sigaddset(&block, SIGCHLD);
    /* Blocked across the fork, so that the child's handlers are its own
     * before a signal can reach it. */
    sigprocmask(SIG_BLOCK, &block, &old);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        worker_main(s, i, port, parent, &old);
    int saved = errno;
    if (pid > 0)
        setpgid(pid, pid); /* also here: no race with the first kill */
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        return -saved;
    s->w[s->nw++] = (struct worker){.pid = pid, .idx = i, .t0_ms = fg_now_ms(), .port = port};
    return 0;
}

/* collect - the result worker k left, or an error in its place. */
static void collect(struct sched *s, size_t k, int wstatus)
{
    size_t i = s->w[k].idx;
    char *jp = result_path(s, i, "json"), *tp = result_path(s, i, "txt");
    json_t *doc = NULL;
    char err[FG_ERRBUF_SIZE];
    char *text = slurp(tp);
    if (text && fg_results_doc_read(jp, &doc, err, sizeof(err)) == 0 &&
        json_array_size(json_object_get(doc, "scenarios")) == 1) {
        s->done[i] = json_incref(json_array_get(json_object_get(doc, "scenarios"), 0));
        s->text[i] = text;
        s->ndone++;
    } else {
        free(text);
        struct fg_scenario_result r;
        fg_scenario_result_init(&r, s->scs[i]);
        r.verdict = FG_V_ERROR;
        if (s->interrupted)
            r.error = fg_strdup("interrupted");
        else if (WIFSIGNALED(wstatus))
            r.error = fg_asprintf("the scenario's process died with signal %d and left no result",
                                  WTERMSIG(wstatus));
        else
            r.error = fg_asprintf("the scenario's process exited with status %d and left no result",
                                  WEXITSTATUS(wstatus));
        r.duration_ms = fg_now_ms() - s->w[k].t0_ms;
        set_result(s, i, &r);
        fg_scenario_result_clear(&r);
    }
    json_decref(doc);
    unlink(jp);
    unlink(tp);
    free(jp);
    free(tp);
    s->w[k] = s->w[--s->nw];
}

static void signal_workers(struct sched *s, int sig)
{
    for (size_t k = 0; k < s->nw; k++)
        kill(s->w[k].pid, sig);
}

/* children_of_self - the pids whose parent is this process (Linux /proc):
 * after the last worker is reaped, only what a killed worker's gateway left
 * to the subreaper. */
static size_t children_of_self(pid_t *out, size_t max)
{
    size_t n = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    pid_t self = getpid();
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < max) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        pid_t ppid;
        if (fg_proc_ppid_read((pid_t)pid, &ppid) == 0 && ppid == self)
            out[n++] = (pid_t)pid;
    }
    closedir(d);
    return n;
}

/* sweep_orphans - kill and reap whatever a killed worker's gateway left
 * behind (it came to this process, the subreaper), within SWEEP_MS. */
static void sweep_orphans(void)
{
    uint64_t until = fg_now_ms() + SWEEP_MS;
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        pid_t kids[256];
        size_t n = children_of_self(kids, 256);
        if (n == 0 || fg_now_ms() >= until)
            return;
        for (size_t k = 0; k < n; k++) {
            kill(-kids[k], SIGKILL);
            kill(kids[k], SIGKILL);
        }
        /* A SIGKILLed process exits promptly; wake on its SIGCHLD or the
         * next short tick, within the deadline. */
        struct pollfd pf = {.fd = wake_fds[0], .events = POLLIN};
        poll(&pf, wake_fds[0] >= 0 ? 1 : 0, 20);
    }
}

static void drain_wake(void)
{
    char buf[64];
    while (read(wake_fds[0], buf, sizeof buf) > 0)
        ;
}

/* schedule - run every scenario, up to s->maxw at once, until done or
 * interrupted; every worker is reaped on return. */
static void schedule(struct sched *s)
{
    size_t handled = 0;
    for (;;) {
        while (!s->interrupted && s->nw < s->maxw && s->next_start < s->nsc) {
            size_t i = s->next_start++;
            const char *why_skip = does_not_apply(s->scs[i], s->prof);
            int rc = 0;
            if (!why_skip && (rc = start_worker(s, i)) == 0)
                continue;
            struct fg_scenario_result r;
            fg_scenario_result_init(&r, s->scs[i]);
            r.verdict = why_skip ? FG_V_SKIP : FG_V_ERROR;
            r.error = why_skip
                          ? fg_strdup(why_skip)
                          : fg_asprintf("cannot start the scenario's process: %s", fg_strerror(rc));
            set_result(s, i, &r);
            fg_scenario_result_clear(&r);
            print_ready(s, 0);
            write_reports(s, 0);
        }
        if (s->nw == 0 && (s->interrupted || s->next_start >= s->nsc))
            return;

        struct pollfd pf = {.fd = wake_fds[0], .events = POLLIN};
        poll(&pf, 1, TICK_MS);
        drain_wake();

        while (handled < (size_t)run_signals) {
            handled++;
            if (!s->interrupted) {
                s->interrupted = 1;
                s->kill_at_ms = fg_now_ms() + s->prof->stop_grace_ms + INTERRUPT_SLACK_MS;
                if (!s->o->quiet) {
                    fg_progress_end(s->prog);
                    fprintf(stderr,
                            "faultgate: %s: stopping %zu running scenario(s); again to skip "
                            "the gateways' grace\n",
                            strsignal(run_last_signal), s->nw);
                }
            } else {
                uint64_t hurry = fg_now_ms() + HURRY_MS;
                if (hurry < s->kill_at_ms)
                    s->kill_at_ms = hurry;
            }
            signal_workers(s, SIGTERM);
        }
        if (s->kill_at_ms && fg_now_ms() >= s->kill_at_ms)
            signal_workers(s, SIGKILL);

        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            for (size_t k = 0; k < s->nw; k++) {
                if (s->w[k].pid == pid) {
                    collect(s, k, st);
                    print_ready(s, 0);
                    write_reports(s, 0);
                    break;
                }
            }
            /* else: an orphan the subreaper inherited, now reaped */
        }
        draw_flight(s);
    }
}

/* default_jobs - -j when none is given: most of a scenario's time is the
 * gateway's own deliberate waiting, so more scenarios than CPUs, but few
 * enough that the timing rules (a timeout measured to the second) never
 * starve: 2 per CPU, at least 2, at most 8. */
static unsigned default_jobs(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    long j = 2 * n;
    return (unsigned)(j < 2 ? 2 : j > 8 ? 8 : j);
}

/* --- --last-failed ------------------------------------------------------ */

struct last_run {
    json_t *doc;
    char *profile_path;
    uint64_t seed;
    int seed_known;
};

static int last_run_read(const char *dir, struct last_run *lr, char *err, size_t errlen)
{
    memset(lr, 0, sizeof(*lr));
    char *p = fg_asprintf("%s/results.json", dir);
    int rc = fg_results_doc_read(p, &lr->doc, err, errlen);
    free(p);
    if (rc < 0)
        return rc;
    const char *pp =
        json_string_value(json_object_get(json_object_get(lr->doc, "profile"), "path"));
    if (pp && *pp)
        lr->profile_path = fg_strdup(pp);
    json_t *js = json_object_get(lr->doc, "seed");
    if (json_is_integer(js)) {
        lr->seed = (uint64_t)json_integer_value(js);
        lr->seed_known = 1;
    } else if (json_is_string(js)) {
        lr->seed_known = fg_uint_parse(json_string_value(js), 0, UINT64_MAX, &lr->seed) == 0;
    }
    return 0;
}

/* last_verdict - id's verdict in the previous run, -1 if it has none. */
static int last_verdict(const struct last_run *lr, const char *id)
{
    size_t i;
    json_t *sc;
    json_array_foreach(json_object_get(lr->doc, "scenarios"), i, sc)
    {
        const char *sid = json_string_value(json_object_get(sc, "id"));
        if (sid && strcmp(sid, id) == 0)
            return fg_results_verdict_parse(json_string_value(json_object_get(sc, "verdict")));
    }
    return -1;
}

/* Run again: what did not pass (fail, inconc, error) and, when scenarios
 * are named, what the previous run never got to (an interrupted run). */
static int rerun_wanted(const struct last_run *lr, const char *id)
{
    int v = last_verdict(lr, id);
    return v != FG_V_PASS && v != FG_V_SKIP;
}

static char **last_run_paths(const struct last_run *lr, size_t *n)
{
    json_t *sa = json_object_get(lr->doc, "scenarios");
    char **paths = fg_calloc(json_array_size(sa) + 1, sizeof(*paths));
    size_t k = 0, i;
    json_t *sc;
    json_array_foreach(sa, i, sc)
    {
        int v = fg_results_verdict_parse(json_string_value(json_object_get(sc, "verdict")));
        const char *path = json_string_value(json_object_get(sc, "path"));
        if (v != FG_V_PASS && v != FG_V_SKIP && path && *path)
            paths[k++] = fg_strdup(path);
    }
    *n = k;
    return paths;
}

static void free_scenarios(struct fg_scenario **scs, size_t n)
{
    for (size_t j = 0; j < n; j++)
        fg_scenario_free(scs[j]);
    free(scs);
}

int fg_run_main(const struct fg_run_opts *o)
{
    char err[FG_ERRBUF_SIZE];
    struct last_run lr = {0};
    int have_last = 0;
    if (o->last_failed) {
        if (last_run_read(o->last_failed, &lr, err, sizeof(err)) < 0) {
            fprintf(stderr, "faultgate: --last-failed: %s\n", err);
            return 2;
        }
        have_last = 1;
    }
    const char *profile_path = o->profile_path;
    if (have_last && !o->profile_set && lr.profile_path)
        profile_path = lr.profile_path;
    struct fg_profile *prof = NULL;
    int rc = fg_profile_load(profile_path, &prof, err, sizeof(err));
    char **paths = NULL;
    size_t npaths = 0;
    char **lpaths = NULL;
    size_t nlpaths = 0;
    struct fg_scenario **scs = NULL;
    size_t nsc = 0;
    int status = 2;
    if (rc < 0) {
        fprintf(stderr, "faultgate: %s\n", err);
        goto out;
    }
    if (have_last && o->npaths == 0) {
        lpaths = last_run_paths(&lr, &nlpaths);
        rc = nlpaths ? fg_scenario_find((const char *const *)lpaths, nlpaths, &paths, &npaths, err,
                                        sizeof(err))
                     : 0;
    } else {
        rc = fg_scenario_find(o->paths, o->npaths, &paths, &npaths, err, sizeof(err));
    }
    if (rc < 0) {
        fprintf(stderr, "faultgate: %s\n", err);
        goto out;
    }
    if (npaths == 0 && !have_last) {
        fprintf(stderr, "faultgate: no scenario files found\n");
        goto out;
    }
    /* Load every scenario first: a bad one stops the run before anything
     * starts, with its file:line:col. */
    scs = fg_calloc(npaths ? npaths : 1, sizeof(*scs));
    for (size_t i = 0; i < npaths; i++) {
        struct fg_scenario *sc = NULL;
        rc = fg_scenario_load(paths[i], &sc, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "faultgate: %s\n", err);
            goto out;
        }
        if ((o->shard_n && shard_of(sc->id, o->shard_n) != o->shard_k) ||
            (have_last && !rerun_wanted(&lr, sc->id))) {
            fg_scenario_free(sc);
            continue;
        }
        scs[nsc++] = sc;
    }
    /* Said below, before anything starts. */
    rc = fg_scenario_ids_check(scs, nsc, err, sizeof err);

    char run_id[64];
    make_run_id(run_id, sizeof(run_id));
    char *out_dir = o->out_dir ? fg_strdup(o->out_dir) : fg_asprintf("reports/runs/%s", run_id);
    struct fg_outdir *lock = NULL;
    if (rc < 0 || (rc = fg_outdir_lock(out_dir, &lock, err, sizeof err)) < 0) {
        fprintf(stderr, "faultgate: %s\n", err);
        free(out_dir);
        goto out;
    }
    uint64_t seed = o->seed_set ? o->seed : (uint64_t)time(NULL);
    if (have_last && !o->seed_set && lr.seed_known)
        seed = lr.seed; /* the same decisions as the run it repeats */
    char *bindir_own = NULL;
    struct fg_run_opts oo = *o;
    oo.profile_path = profile_path;
    if (!oo.bindir)
        oo.bindir = bindir_own = helper_dir();

    unsigned jobs = o->jobs ? o->jobs : default_jobs();
    if (prof->parallel && jobs > prof->parallel)
        jobs = prof->parallel;
    if (!o->quiet) {
        printf("faultgate %s: %zu scenario(s) against %s, seed %" PRIu64
               ", %u at once, output %s\n",
               FG_VERSION, nsc, prof->name ? prof->name : profile_path, seed, jobs, out_dir);
        if (have_last)
            printf("(again: what did not pass in %s)\n", o->last_failed);
    }

    char host[256];
    struct sched s = {.o = &oo,
                      .prof = prof,
                      .scs = scs,
                      .nsc = nsc,
                      .out_dir = out_dir,
                      .run_id = run_id,
                      .seed = seed,
                      .ri = {.run_id = run_id,
                             .faultgate_version = FG_VERSION,
                             .profile_path = profile_path,
                             .profile_name = prof->name,
                             .seed = seed,
                             .start_us = fg_wall_us(),
                             .host = hostname(host, sizeof(host))},
                      .maxw = jobs,
                      .t0_ms = fg_now_ms()};
    s.done = fg_calloc(nsc ? nsc : 1, sizeof(*s.done));
    s.text = fg_calloc(nsc ? nsc : 1, sizeof(*s.text));
    s.w = fg_calloc(jobs, sizeof(*s.w));
    s.prog =
        fg_progress_new(NULL, stdout, o->quiet || o->verbose ? FG_PROGRESS_OFF : FG_PROGRESS_AUTO);

    /* The stop signals are handled whatever was inherited (a background
     * job of a shell starts with SIGINT ignored), and the gateways' orphans
     * come to this process when a worker is killed. */
    run_signals = 0;
    struct sigaction sa = {.sa_handler = on_run_signal}, old_sa[NSTOP_SIGS], old_chld;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (pipe2(wake_fds, O_NONBLOCK | O_CLOEXEC) != 0)
        wake_fds[0] = wake_fds[1] = -1;
    for (size_t k = 0; k < NSTOP_SIGS; k++)
        sigaction(stop_sigs[k], &sa, &old_sa[k]);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, &old_chld);
#ifdef __linux__
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#endif

    write_reports(&s, 0); /* a run killed before any verdict still has its files */
    schedule(&s);
    sweep_orphans();
    print_ready(&s, 1);
    fg_progress_free(s.prog);
    status = write_reports(&s, 1) < 0 ? 2 : 0;

    for (size_t k = 0; k < NSTOP_SIGS; k++)
        sigaction(stop_sigs[k], &old_sa[k], NULL);
    sigaction(SIGCHLD, &old_chld, NULL);
    close(wake_fds[0]);
    close(wake_fds[1]);
    wake_fds[0] = wake_fds[1] = -1;

    size_t cnt[5] = {0};
    int worst = 0;
    for (size_t i = 0; i < nsc; i++) {
        if (!s.done[i])
            continue;
        int v = fg_results_verdict_parse(json_string_value(json_object_get(s.done[i], "verdict")));
        if (v < 0)
            v = FG_V_ERROR;
        cnt[v]++;
        if (v == FG_V_ERROR)
            worst = 2;
        else if ((v == FG_V_FAIL || v == FG_V_INCONC) && worst < 1)
            worst = 1;
    }
    if (status == 0)
        status = s.interrupted ? 2 : worst;
    if (!o->quiet) {
        printf("%zu passed, %zu failed, %zu inconclusive, %zu errors, %zu skipped", cnt[FG_V_PASS],
               cnt[FG_V_FAIL], cnt[FG_V_INCONC], cnt[FG_V_ERROR], cnt[FG_V_SKIP]);
        if (s.interrupted)
            printf(" (interrupted: %zu not started)", nsc - s.ndone);
        printf("; results in %s/results.json\n", out_dir);
    }
    for (size_t i = 0; i < nsc; i++) {
        json_decref(s.done[i]);
        free(s.text[i]);
    }
    free(s.done);
    free(s.text);
    free(s.w);
    fg_outdir_unlock(lock);
    free(out_dir);
    free(bindir_own);
out:
    free_scenarios(scs, nsc);
    fg_scenario_paths_free(paths, npaths);
    for (size_t i = 0; i < nlpaths; i++)
        free(lpaths[i]);
    free(lpaths);
    fg_profile_free(prof);
    json_decref(lr.doc);
    free(lr.profile_path);
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
    print_result(stdout, &res, 0);
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
