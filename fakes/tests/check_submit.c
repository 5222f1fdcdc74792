/* check_submit.c - a client command run per message (faultgate/submit.h):
 * placeholders, the message on stdin and in its file, exit status and
 * stderr tail, the deadline's SIGKILL to the whole group, a command that
 * cannot start, and a kill at the end of a run.  Each run has a deadline
 * timer of its own; the loop must end with every handle closed.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/submit.h"
#include "faultgate/util.h"

#define DEADLINE_MS 20000

struct ctx {
    uv_loop_t loop;
    uv_timer_t deadline;
    struct fg_submit *s;
    struct fg_submit_result res;
    int done, closed;
};

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    ck_abort_msg("deadline passed");
}

static void on_closed(void *ud)
{
    struct ctx *c = ud;
    c->closed = 1;
    uv_close((uv_handle_t *)&c->deadline, NULL);
}

static void on_done(struct fg_submit *s, const struct fg_submit_result *res, void *ud)
{
    struct ctx *c = ud;
    c->res = *res;
    c->done = 1;
    fg_submit_close(s, on_closed, c);
}

static char tmpdir[64];

static void run(struct ctx *c, char *const *argv, size_t nargv, int stdin_message,
                uint64_t timeout_ms)
{
    memset(c, 0, sizeof(*c));
    uv_loop_init(&c->loop);
    uv_timer_init(&c->loop, &c->deadline);
    uv_timer_start(&c->deadline, on_deadline, DEADLINE_MS, 0);
    static const char *const to[] = {"a@b.test", "c@d.test"};
    const char *text = "Subject: t\r\nX-Faultgate-Token: tok-1\r\n\r\nbody\r\n";
    struct fg_submit_msg m = {.token = "tok-1",
                              .from = "x@y.test",
                              .to = to,
                              .nto = 2,
                              .text = text,
                              .len = strlen(text)};
    struct fg_gateway_vars v = {
        .upstream_host = "127.0.0.1", .upstream_port = 2525, .workdir = tmpdir};
    char *mfile = fg_asprintf("%s/message.eml", tmpdir);
    struct fg_submit_opts o = {.argv = argv,
                               .nargv = nargv,
                               .stdin_message = stdin_message,
                               .timeout_ms = timeout_ms,
                               .vars = &v,
                               .message_file = mfile};
    char err[FG_ERRBUF_SIZE];
    int rc = fg_submit_start(&c->loop, &o, &m, on_done, c, &c->s, err, sizeof(err));
    ck_assert_msg(rc == 0, "start: %s", err);
    free(mfile);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    ck_assert(c->done);
    ck_assert(c->closed);
    ck_assert_int_eq(uv_loop_close(&c->loop), 0);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    char *buf = fg_calloc(1, 4096);
    size_t n = fread(buf, 1, 4095, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

START_TEST(test_fill)
{
    static const char *const to[] = {"a@b.test", "c@d.test"};
    struct fg_submit_msg m = {.token = "T", .from = "f@x.test", .to = to, .nto = 2};
    struct fg_gateway_vars v = {.upstream_host = "127.0.0.1", .upstream_port = 2525};
    char *out = NULL, err[FG_ERRBUF_SIZE];
    ck_assert_int_eq(fg_submit_fill("--to={to} {from} {upstream} {token} {message_file} {x y}", &m,
                                    "/m.eml", &v, &out, err, sizeof(err)),
                     0);
    ck_assert_str_eq(out, "--to=a@b.test,c@d.test f@x.test 127.0.0.1:2525 T /m.eml {x y}");
    free(out);
    ck_assert_int_eq(fg_submit_fill("{nosuch}", &m, NULL, &v, &out, err, sizeof(err)), FG_EINPUT);
    ck_assert_ptr_null(out);
    ck_assert_ptr_nonnull(strstr(err, "{nosuch}"));
    ck_assert_int_eq(fg_submit_fill("{message_file}", &m, NULL, &v, &out, err, sizeof(err)),
                     FG_EINPUT);
}
END_TEST

START_TEST(test_stdin_exit_tail)
{
    struct ctx c;
    /* {to} alone: one word per recipient ($1 and $2). */
    char *argv[] = {"sh",
                    "-c",
                    ("cat > stdin.out; printf '%s|%s|%s' \"$1\" \"$2\" \"$3\" > args.out; "
                     "echo first >&2; echo 'the last line' >&2; exit 3"),
                    "sh",
                    "{to}",
                    "{message_file}"};
    run(&c, argv, 6, 1, 10000);
    ck_assert(c.res.spawned);
    ck_assert_int_eq(c.res.exit_status, 3);
    ck_assert_int_eq(c.res.term_signal, 0);
    ck_assert(!c.res.timed_out);
    ck_assert_str_eq(c.res.token, "tok-1");
    ck_assert_ptr_nonnull(strstr(c.res.stderr_tail, "the last line"));
    char *p = fg_asprintf("%s/stdin.out", tmpdir);
    char *got = slurp(p);
    ck_assert_str_eq(got, "Subject: t\r\nX-Faultgate-Token: tok-1\r\n\r\nbody\r\n");
    free(got);
    free(p);
    p = fg_asprintf("%s/args.out", tmpdir);
    got = slurp(p);
    char *want = fg_asprintf("a@b.test|c@d.test|%s/message.eml", tmpdir);
    ck_assert_str_eq(got, want);
    free(want);
    free(got);
    free(p);
    p = fg_asprintf("%s/message.eml", tmpdir);
    got = slurp(p);
    ck_assert_ptr_nonnull(strstr(got, "X-Faultgate-Token: tok-1"));
    free(got);
    free(p);
}
END_TEST

START_TEST(test_timeout_kills_group)
{
    struct ctx c;
    /* A child in the background that writes its pid, then waits: the
     * deadline must kill both. */
    char *argv[] = {"sh", "-c", "sleep 60 & echo $! > child.pid; wait"};
    uint64_t t0 = fg_now_ms();
    run(&c, argv, 3, 0, 300);
    ck_assert(c.res.spawned);
    ck_assert(c.res.timed_out);
    ck_assert_int_eq(c.res.term_signal, SIGKILL);
    ck_assert_uint_ge(c.res.duration_ms, 300);
    ck_assert_uint_lt(fg_now_ms() - t0, DEADLINE_MS);
    char *p = fg_asprintf("%s/child.pid", tmpdir);
    char *got = slurp(p);
    int pid = atoi(got);
    ck_assert_int_gt(pid, 0);
    /* Killed and reaped (the harness is its subreaper): no such process. */
    ck_assert_int_eq(kill(pid, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    free(got);
    free(p);
}
END_TEST

START_TEST(test_not_found)
{
    struct ctx c;
    char *argv[] = {"/nonexistent/faultgate-client", "{upstream}"};
    run(&c, argv, 2, 1, 1000);
    ck_assert(!c.res.spawned);
    ck_assert_int_lt(c.res.spawn_error, 0);
    ck_assert_ptr_nonnull(strstr(c.res.stderr_tail, "cannot start"));
}
END_TEST

START_TEST(test_kill_at_end_of_run)
{
    /* fg_submit_kill while it runs (what the run does when it ends): the
     * result says timed out, SIGKILL, and done_cb still comes. */
    struct ctx c;
    memset(&c, 0, sizeof(c));
    char *argv[] = {"sleep", "60"};
    uv_loop_init(&c.loop);
    uv_timer_init(&c.loop, &c.deadline);
    uv_timer_start(&c.deadline, on_deadline, DEADLINE_MS, 0);
    struct fg_submit_msg m = {.token = "tok-2", .from = "x@y.test", .text = "", .len = 0};
    struct fg_gateway_vars v = {.workdir = tmpdir};
    struct fg_submit_opts o = {.argv = argv, .nargv = 2, .timeout_ms = 30000, .vars = &v};
    char err[FG_ERRBUF_SIZE];
    ck_assert_int_eq(fg_submit_start(&c.loop, &o, &m, on_done, &c, &c.s, err, sizeof(err)), 0);
    ck_assert(fg_submit_running(c.s));
    fg_submit_kill(c.s);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    ck_assert(c.done && c.closed);
    ck_assert(c.res.timed_out);
    ck_assert_int_eq(c.res.term_signal, SIGKILL);
    ck_assert_uint_lt(c.res.duration_ms, 5000);
    ck_assert_int_eq(uv_loop_close(&c.loop), 0);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/fg-check-submit-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    Suite *s = suite_create("submit");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fill);
    tcase_add_test(tc, test_stdin_exit_tail);
    tcase_add_test(tc, test_timeout_kills_group);
    tcase_add_test(tc, test_not_found);
    tcase_add_test(tc, test_kill_at_end_of_run);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    char *cmd = fg_asprintf("rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        failed++;
    free(cmd);
    return failed ? 1 : 0;
}
