/* check_gateway.c - the gateway under test as a process group.
 *
 * Runs fake_gateway (FG_FAKE_GATEWAY) through real profiles: readiness
 * within the deadline, a gateway that never listens or exits early is
 * reported not ready, and stop kills the whole process group even when
 * the leader and a grandchild ignore SIGTERM.  Every loop run has a
 * deadline timer that fails the test instead of hanging, and the loop
 * must close cleanly afterwards (no handle left behind).
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "faultgate/error.h"
#include "faultgate/gateway.h"
#include "faultgate/profile.h"
#include "faultgate/util.h"

static char workdir[256];
static const char *fake;

static void setup(void)
{
    fake = getenv("FG_FAKE_GATEWAY");
    ck_assert_msg(fake != NULL, "FG_FAKE_GATEWAY not set");
    snprintf(workdir, sizeof(workdir), "/tmp/fg-check-gw-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(workdir));
}

static void teardown(void)
{
    char *cmd = fg_asprintf("rm -rf '%s'", workdir);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
}

/* A profile running fake_gateway with extra arguments, extra lines under
 * `start:` and a readiness check (tcp or banner). */
static struct fg_profile *make_profile_ext(const char *extra, const char *start_extra,
                                           const char *check, const char *ready, const char *grace)
{
    char *path = fg_asprintf("%s/profile.yaml", workdir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "name: fake\n"
            "start:\n"
            "  argv: [\"%s\", --port, \"{gateway_port}\"%s]\n"
            "  env: {FG_TEST_UPSTREAM: \"{upstream}\"}\n"
            "%s"
            "ready: {%s: gateway_port, timeout: %s}\n"
            "stop: {signal: TERM, grace: %s}\n",
            fake, extra, start_extra, check, ready, grace);
    ck_assert_int_eq(fclose(f), 0);
    struct fg_profile *p;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(fg_profile_load(path, &p, err, sizeof(err)) == 0, "%s", err);
    free(path);
    return p;
}

static struct fg_profile *make_profile(const char *extra, const char *ready, const char *grace)
{
    return make_profile_ext(extra, "", "tcp", ready, grace);
}

struct t {
    uv_loop_t loop;
    uv_timer_t deadline;
    struct fg_gateway *g;
    int ready_calls, ready_status;
    uint64_t ready_ms; /* time from start to ready_cb */
    uint64_t t0;
    int stopped;
    uint64_t stop_ms;
    int stop_after_ready; /* call fg_gateway_stop from ready_cb */
};

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    ck_abort_msg("the test's deadline passed: the loop would have hung");
}

static void on_stopped(struct fg_gateway *g, void *ud)
{
    struct t *t = ud;
    (void)g;
    t->stopped++;
    t->stop_ms = fg_now_ms() - t->t0;
    uv_close((uv_handle_t *)&t->deadline, NULL);
}

static void on_ready(struct fg_gateway *g, int status, void *ud)
{
    struct t *t = ud;
    t->ready_calls++;
    t->ready_status = status;
    t->ready_ms = fg_now_ms() - t->t0;
    if (t->stop_after_ready) {
        t->t0 = fg_now_ms();
        fg_gateway_stop(g, on_stopped, t);
    }
}

static void t_init(struct t *t, uint64_t deadline_ms)
{
    memset(t, 0, sizeof(*t));
    ck_assert_int_eq(uv_loop_init(&t->loop), 0);
    ck_assert_int_eq(uv_timer_init(&t->loop, &t->deadline), 0);
    ck_assert_int_eq(uv_timer_start(&t->deadline, on_deadline, deadline_ms, 0), 0);
}

static void t_start(struct t *t, const struct fg_profile *p, int port)
{
    struct fg_gateway_vars v = {.gateway_port = port,
                                .upstream_host = "127.0.0.1",
                                .upstream_port = 1,
                                .workdir = workdir,
                                .bindir = "/nonexistent"};
    char err[FG_ERRBUF_SIZE] = "";
    t->t0 = fg_now_ms();
    int rc = fg_gateway_start(&t->loop, p, &v, on_ready, t, &t->g, err, sizeof(err));
    ck_assert_msg(rc == 0, "start: %s", err);
    ck_assert_int_gt(fg_gateway_pid(t->g), 0);
}

static void t_finish(struct t *t)
{
    fg_gateway_free(t->g);
    t->g = NULL;
    ck_assert_int_eq(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&t->loop), 0);
}

START_TEST(ready_then_stop)
{
    struct fg_profile *p = make_profile("", "5s", "2s");
    int port = fg_port_alloc();
    ck_assert_int_gt(port, 0);
    struct t t;
    t_init(&t, 15000);
    t.stop_after_ready = 1;
    t_start(&t, p, port);
    ck_assert_int_eq(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(t.ready_calls, 1);
    ck_assert_int_eq(t.ready_status, 0);
    ck_assert_uint_lt(t.ready_ms, 5000);
    ck_assert_int_eq(t.stopped, 1);
    /* SIGTERM was enough: no wait for the grace period */
    ck_assert_uint_lt(t.stop_ms, 2000);
    ck_assert_int_eq(fg_gateway_running(t.g), 0);
    ck_assert_int_eq(fg_gateway_term_signal(t.g), SIGTERM);
    int pid = fg_gateway_pid(t.g);
    ck_assert_int_eq(kill(pid, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    t_finish(&t);

    /* its output went to workdir/gateway.log, with the placeholders filled */
    char *log = fg_asprintf("%s/gateway.log", workdir);
    FILE *f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    char line[256] = "";
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    fclose(f);
    char want[64];
    snprintf(want, sizeof(want), "port %d", port);
    ck_assert_msg(strstr(line, want) != NULL, "log: %s", line);
    /* its own process group (setsid) */
    char pg[64];
    snprintf(pg, sizeof(pg), "pid %d pgid %d", pid, pid);
    ck_assert_msg(strstr(line, pg) != NULL, "log: %s", line);
    free(log);
    fg_profile_free(p);
}
END_TEST

START_TEST(never_listens)
{
    struct fg_profile *p = make_profile(", --never-listen", "600ms", "1s");
    int port = fg_port_alloc();
    struct t t;
    t_init(&t, 10000);
    t.stop_after_ready = 1;
    t_start(&t, p, port);
    ck_assert_int_eq(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(t.ready_calls, 1);
    ck_assert_int_eq(t.ready_status, FG_ENOTREADY);
    /* within the ready timeout (plus one poll), not before it */
    ck_assert_uint_ge(t.ready_ms, 600);
    ck_assert_uint_lt(t.ready_ms, 2000);
    ck_assert_int_eq(t.stopped, 1);
    t_finish(&t);
    fg_profile_free(p);
}
END_TEST

START_TEST(exits_early)
{
    struct fg_profile *p = make_profile(", --never-listen, --exit-after-ms, 100", "10s", "1s");
    int port = fg_port_alloc();
    struct t t;
    t_init(&t, 8000);
    t.stop_after_ready = 1;
    t_start(&t, p, port);
    ck_assert_int_eq(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(t.ready_calls, 1);
    ck_assert_int_eq(t.ready_status, FG_ENOTREADY);
    /* at its exit, far before the 10 s ready timeout */
    ck_assert_uint_lt(t.ready_ms, 3000);
    ck_assert_int_eq(fg_gateway_running(t.g), 0);
    ck_assert_int_eq(fg_gateway_exit_status(t.g), 3);
    ck_assert_int_eq(fg_gateway_term_signal(t.g), 0);
    ck_assert_int_eq(t.stopped, 1);
    t_finish(&t);
    fg_profile_free(p);
}
END_TEST

static int read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    int pid = 0;
    ck_assert_int_eq(fscanf(f, "%d", &pid), 1);
    fclose(f);
    return pid;
}

struct group_t {
    struct t t;
    int child;
    char *pidfile;
};

static void on_ready_group(struct fg_gateway *g, int status, void *ud)
{
    struct group_t *gt = ud;
    gt->t.ready_calls++;
    gt->t.ready_status = status;
    ck_assert_int_eq(status, 0);
    /* written before the port was opened */
    gt->child = read_pid(gt->pidfile);
    ck_assert_int_gt(gt->child, 0);
    ck_assert_int_eq(getpgid(gt->child), fg_gateway_pid(g));
    gt->t.t0 = fg_now_ms();
    fg_gateway_stop(g, on_stopped, &gt->t);
}

START_TEST(stop_kills_group)
{
    struct fg_profile *p = make_profile(
        ", --ignore-term, --fork-child, --child-pid-file, \"{workdir}/child.pid\"", "5s", "500ms");
    int port = fg_port_alloc();
    struct group_t gt = {0};
    t_init(&gt.t, 15000);
    gt.pidfile = fg_asprintf("%s/child.pid", workdir);
    struct fg_gateway_vars v = {.gateway_port = port,
                                .upstream_host = "127.0.0.1",
                                .upstream_port = 2,
                                .workdir = workdir,
                                .bindir = "/nonexistent"};
    char err[FG_ERRBUF_SIZE] = "";
    gt.t.t0 = fg_now_ms();
    ck_assert_msg(
        fg_gateway_start(&gt.t.loop, p, &v, on_ready_group, &gt, &gt.t.g, err, sizeof(err)) == 0,
        "%s", err);
    ck_assert_int_eq(uv_run(&gt.t.loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(gt.t.ready_calls, 1);
    ck_assert_int_eq(gt.t.stopped, 1);
    /* SIGTERM was ignored: SIGKILL after the grace period */
    ck_assert_uint_ge(gt.t.stop_ms, 500);
    ck_assert_uint_lt(gt.t.stop_ms, 5000);
    ck_assert_int_eq(fg_gateway_term_signal(gt.t.g), SIGKILL);
    /* nothing of the group is left, the grandchild included */
    ck_assert_int_eq(kill(gt.child, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    ck_assert_int_eq(kill(-fg_gateway_pid(gt.t.g), 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    t_finish(&gt.t);
    free(gt.pidfile);
    fg_profile_free(p);
}
END_TEST

/* A gateway process that leaves the group (setsid, as Postfix's master
 * does) is still found through the subreaper and stopped. */
static void on_ready_daemon(struct fg_gateway *g, int status, void *ud)
{
    struct group_t *gt = ud;
    gt->t.ready_calls++;
    ck_assert_int_eq(status, 0);
    gt->child = read_pid(gt->pidfile);
    ck_assert_int_gt(gt->child, 0);
    /* the pid file is written after the child's setsid() */
    ck_assert_int_ne(getpgid(gt->child), fg_gateway_pid(g));
    gt->t.t0 = fg_now_ms();
    fg_gateway_stop(g, on_stopped, &gt->t);
}

START_TEST(stop_kills_escaped_daemon)
{
    struct fg_profile *p =
        make_profile(", --daemon-child, --child-pid-file, \"{workdir}/daemon.pid\"", "5s", "500ms");
    int port = fg_port_alloc();
    struct group_t gt = {0};
    t_init(&gt.t, 15000);
    gt.pidfile = fg_asprintf("%s/daemon.pid", workdir);
    struct fg_gateway_vars v = {.gateway_port = port,
                                .upstream_host = "127.0.0.1",
                                .upstream_port = 2,
                                .workdir = workdir,
                                .bindir = "/nonexistent"};
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(
        fg_gateway_start(&gt.t.loop, p, &v, on_ready_daemon, &gt, &gt.t.g, err, sizeof(err)) == 0,
        "%s", err);
    ck_assert_int_eq(uv_run(&gt.t.loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(gt.t.ready_calls, 1);
    ck_assert_int_eq(gt.t.stopped, 1);
    ck_assert_int_eq(kill(gt.child, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    t_finish(&gt.t);
    free(gt.pidfile);
    fg_profile_free(p);
}
END_TEST

/* fg_gateway_free without a stop still kills the group and the loop
 * closes. */
START_TEST(free_without_stop)
{
    struct fg_profile *p = make_profile(", --ignore-term", "5s", "1s");
    int port = fg_port_alloc();
    struct t t;
    t_init(&t, 10000);
    t_start(&t, p, port);
    int pid = fg_gateway_pid(t.g);
    ck_assert_int_eq(kill(pid, 0), 0);
    uv_close((uv_handle_t *)&t.deadline, NULL);
    t_finish(&t);
    ck_assert_int_eq(kill(pid, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    fg_profile_free(p);
}
END_TEST

START_TEST(spawn_fails)
{
    char *path = fg_asprintf("%s/p.yaml", workdir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "name: x\nstart: {argv: [\"{bindir}/no-such-gateway\"]}\n");
    fclose(f);
    struct fg_profile *p;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_int_eq(fg_profile_load(path, &p, err, sizeof(err)), 0);
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    struct fg_gateway_vars v = {.gateway_port = 1, .workdir = workdir, .bindir = workdir};
    struct fg_gateway *g = (void *)&loop;
    int rc = fg_gateway_start(&loop, p, &v, NULL, NULL, &g, err, sizeof(err));
    ck_assert_int_eq(rc, UV_ENOENT);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(err, "no-such-gateway"));
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    fg_profile_free(p);
    free(path);
}
END_TEST

START_TEST(placeholders)
{
    struct fg_gateway_vars v = {.gateway_port = 2525,
                                .upstream_host = "127.0.0.1",
                                .upstream_port = 39001,
                                .x400_upstream = NULL,
                                .workdir = "/w",
                                .bindir = "/b"};
    char err[FG_ERRBUF_SIZE] = "";
    char *out = NULL;
    ck_assert_int_eq(fg_placeholder_fill("{bindir}/refgw --listen 127.0.0.1:{gateway_port} "
                                         "--upstream {upstream} --host {upstream_host} "
                                         "--port {upstream_port} --spool {workdir}/spool",
                                         &v, &out, err, sizeof(err)),
                     0);
    ck_assert_str_eq(out, "/b/refgw --listen 127.0.0.1:2525 --upstream 127.0.0.1:39001 "
                          "--host 127.0.0.1 --port 39001 --spool /w/spool");
    free(out);
    /* braces that are not {name} are text */
    ck_assert_int_eq(fg_placeholder_fill("{\"a\": 1} { } {} {x", &v, &out, err, sizeof(err)), 0);
    ck_assert_str_eq(out, "{\"a\": 1} { } {} {x");
    free(out);
    ck_assert_int_eq(fg_placeholder_fill("", &v, &out, err, sizeof(err)), 0);
    ck_assert_str_eq(out, "");
    free(out);
    out = (char *)"x";
    ck_assert_int_eq(fg_placeholder_fill("--port {gateway_prot}", &v, &out, err, sizeof(err)),
                     FG_EINPUT);
    ck_assert_ptr_null(out);
    ck_assert_ptr_nonnull(strstr(err, "{gateway_prot}"));
    /* known but without a value in this run */
    ck_assert_int_eq(fg_placeholder_fill("{x400_upstream}", &v, &out, err, sizeof(err)), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "no value"));
    v.x400_upstream = "127.0.0.1:102";
    ck_assert_int_eq(fg_placeholder_fill("{x400_upstream}", &v, &out, err, sizeof(err)), 0);
    ck_assert_str_eq(out, "127.0.0.1:102");
    free(out);
}
END_TEST

/* ready: {banner: gateway_port} waits for a 220 greeting: a gateway that
 * accepts connections but answers 421 while it starts is not ready yet
 * (with tcp it would be, at once). */
START_TEST(ready_by_banner)
{
    for (int banner = 0; banner < 2; banner++) {
        struct fg_profile *p =
            make_profile_ext(", --busy-ms, \"700\"", "", banner ? "banner" : "tcp", "5s", "1s");
        ck_assert_int_eq(p->ready_banner, banner);
        struct t t;
        t_init(&t, 15000);
        t.stop_after_ready = 1;
        t_start(&t, p, fg_port_alloc());
        ck_assert_int_eq(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(t.ready_calls, 1);
        ck_assert_int_eq(t.ready_status, 0);
        if (banner)
            ck_assert_uint_ge(t.ready_ms, 700);
        else
            ck_assert_uint_lt(t.ready_ms, 700);
        t_finish(&t);
        fg_profile_free(p);
    }
}
END_TEST

/* start.pidfile: the start command exits 0 once its daemon listens; the
 * daemon the pidfile names is the gateway from then on: running while it
 * is, its signal once it died, and the stop finds nothing left. */
static void on_ready_pidfile(struct fg_gateway *g, int status, void *ud)
{
    struct group_t *gt = ud;
    gt->t.ready_calls++;
    gt->t.ready_status = status;
    ck_assert_int_eq(status, 0);
    gt->child = read_pid(gt->pidfile);
    ck_assert_int_gt(gt->child, 0);
}

START_TEST(pidfile_daemon)
{
    struct fg_profile *p =
        make_profile_ext(", --daemonize, --child-pid-file, \"{workdir}/d.pid\"",
                         "  pidfile: \"{workdir}/d.pid\"\n", "tcp", "5s", "500ms");
    struct group_t gt = {0};
    t_init(&gt.t, 15000);
    gt.pidfile = fg_asprintf("%s/d.pid", workdir);
    struct fg_gateway_vars v = {.gateway_port = fg_port_alloc(),
                                .upstream_host = "127.0.0.1",
                                .upstream_port = 2,
                                .workdir = workdir,
                                .bindir = "/nonexistent"};
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(
        fg_gateway_start(&gt.t.loop, p, &v, on_ready_pidfile, &gt, &gt.t.g, err, sizeof(err)) == 0,
        "%s", err);
    /* Run until ready and the start command (exited 0) is reaped. */
    int leader = fg_gateway_pid(gt.t.g);
    uint64_t until = fg_now_ms() + 5000;
    while ((gt.t.ready_calls == 0 || kill(leader, 0) == 0) && fg_now_ms() < until)
        uv_run(&gt.t.loop, UV_RUN_NOWAIT);
    ck_assert_int_eq(gt.t.ready_calls, 1);
    ck_assert_int_eq(fg_gateway_exit_status(gt.t.g), 0);
    ck_assert_int_eq(gt.t.ready_status, 0);
    ck_assert_msg(fg_gateway_running(gt.t.g), "the daemon runs although its parent exited 0");
    ck_assert_int_eq(kill(gt.child, SIGKILL), 0);
    until = fg_now_ms() + 5000;
    while (fg_gateway_running(gt.t.g) && fg_now_ms() < until)
        uv_run(&gt.t.loop, UV_RUN_NOWAIT);
    ck_assert_msg(!fg_gateway_running(gt.t.g), "the daemon's death is seen");
    ck_assert_int_eq(fg_gateway_term_signal(gt.t.g), SIGKILL);
    gt.t.t0 = fg_now_ms();
    fg_gateway_stop(gt.t.g, on_stopped, &gt.t);
    ck_assert_int_eq(uv_run(&gt.t.loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(gt.t.stopped, 1);
    t_finish(&gt.t);
    free(gt.pidfile);
    fg_profile_free(p);
}
END_TEST

/* start.config: the template's placeholders filled into the file before
 * the start, other braces (the configuration language's own) kept; a
 * template that cannot be read stops the start, named. */
START_TEST(config_template)
{
    char *tmpl = fg_asprintf("%s/gw.conf.in", workdir);
    FILE *f = fopen(tmpl, "w");
    ck_assert_ptr_nonnull(f);
    fputs("listen {gateway_port}\nrelay {upstream} ${keep}\n", f);
    ck_assert_int_eq(fclose(f), 0);
    struct fg_profile *p = make_profile_ext(
        "", "  config:\n    - {template: \"{workdir}/gw.conf.in\", path: \"{workdir}/gw.conf\"}\n",
        "tcp", "5s", "1s");
    ck_assert_uint_eq(p->nfiles, 1);
    struct t t;
    t_init(&t, 15000);
    t.stop_after_ready = 1;
    int port = fg_port_alloc();
    t_start(&t, p, port);
    ck_assert_int_eq(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
    t_finish(&t);
    char *path = fg_asprintf("%s/gw.conf", workdir);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char buf[256] = "";
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *want = fg_asprintf("listen %d\nrelay 127.0.0.1:1 ${keep}\n", port);
    ck_assert_str_eq(buf, want);
    free(want);

    ck_assert_int_eq(unlink(tmpl), 0);
    struct fg_gateway_vars v = {.gateway_port = port,
                                .upstream_host = "127.0.0.1",
                                .upstream_port = 1,
                                .workdir = workdir,
                                .bindir = "/nonexistent"};
    char err[FG_ERRBUF_SIZE] = "";
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct fg_gateway *g = NULL;
    ck_assert_int_eq(fg_gateway_start(&loop, p, &v, NULL, NULL, &g, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_null(g);
    ck_assert_msg(strstr(err, "gw.conf.in"), "%s", err);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    free(path);
    free(tmpl);
    fg_profile_free(p);
}
END_TEST

START_TEST(port_alloc)
{
    /* Below the ephemeral range, so that nothing binding port 0 gets it,
     * and distinct from what the kernel hands out meanwhile. */
    int lo = fg_port_range_low();
    for (int i = 0; i < 32; i++) {
        int a = fg_port_alloc();
        ck_assert_int_gt(a, 0);
        ck_assert_int_lt(a, 65536);
        if (lo > 20000 + 1024)
            ck_assert_int_lt(a, lo);
        /* the port is free: a listener can take it */
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)a),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(fd, 1), 0);
        close(fd);
    }
}
END_TEST

static Suite *gateway_suite(void)
{
    Suite *s = suite_create("gateway");
    TCase *tc = tcase_create("process");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, ready_then_stop);
    tcase_add_test(tc, never_listens);
    tcase_add_test(tc, exits_early);
    tcase_add_test(tc, stop_kills_group);
    tcase_add_test(tc, stop_kills_escaped_daemon);
    tcase_add_test(tc, free_without_stop);
    tcase_add_test(tc, spawn_fails);
    tcase_add_test(tc, placeholders);
    tcase_add_test(tc, port_alloc);
    tcase_add_test(tc, ready_by_banner);
    tcase_add_test(tc, pidfile_daemon);
    tcase_add_test(tc, config_template);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(gateway_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
