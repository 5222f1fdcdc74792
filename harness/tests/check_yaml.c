/* check_yaml.c - YAML documents, gateway profiles, scenarios, `within`
 * expressions and scenario discovery.
 *
 * Good files must load with the values written; every bad one must be
 * refused with "file:line:col:" pointing at the offending node (or the
 * offending word inside a one-line fault or a `within` expression), since
 * that position is what a user gets with exit status 2.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultgate/error.h"
#include "faultgate/fault.h"
#include "faultgate/profile.h"
#include "faultgate/scenario.h"
#include "faultgate/util.h"
#include "faultgate/yamldoc.h"

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/fg-check-yaml-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void rm_rf(const char *path)
{
    char *cmd = fg_asprintf("rm -rf '%s'", path);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
}

static void teardown(void)
{
    rm_rf(tmpdir);
}

/* Writes text to tmpdir/name; returns the path (caller frees). */
static char *write_file(const char *name, const char *text)
{
    char *path = fg_asprintf("%s/%s", tmpdir, name);
    char *dir = fg_strdup(path);
    *strrchr(dir, '/') = '\0';
    ck_assert_int_eq(fg_mkdir_p(dir), 0);
    free(dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

/* Line and column (1-based) of the first occurrence of needle in text. */
static void pos_of(const char *text, const char *needle, int *line, int *col)
{
    const char *p = strstr(text, needle);
    ck_assert_msg(p != NULL, "'%s' not in the test text", needle);
    *line = 1;
    const char *bol = text;
    for (const char *q = text; q < p; q++)
        if (*q == '\n') {
            (*line)++;
            bol = q + 1;
        }
    *col = (int)(p - bol) + 1;
}

/* --- yamldoc ----------------------------------------------------------- */

START_TEST(yaml_tree_positions)
{
    const char *text = "a: 1\n"
                       "b:\n"
                       "  - x\n"
                       "  - 'y z'\n"
                       "c: {d: [1, 2]}\n";
    struct fg_yaml_doc *d;
    char err[FG_ERRBUF_SIZE];
    ck_assert_int_eq(fg_yaml_load_string("t.yaml", text, strlen(text), &d, err, sizeof(err)), 0);
    ck_assert_int_eq(d->root->type, FG_YAML_MAP);
    ck_assert_uint_eq(d->root->n, 3);
    struct fg_yaml_node *b = fg_yaml_get(d->root, "b");
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(b->type, FG_YAML_SEQ);
    ck_assert_uint_eq(b->n, 2);
    ck_assert_str_eq(b->items[1]->scalar, "y z");
    ck_assert_int_eq(b->items[1]->quoted, 1);
    ck_assert_int_eq(b->items[0]->quoted, 0);
    ck_assert_int_eq(b->items[1]->line, 4);
    ck_assert_int_eq(b->items[1]->col, 5);
    struct fg_yaml_node *dd = fg_yaml_get(fg_yaml_get(d->root, "c"), "d");
    ck_assert_ptr_nonnull(dd);
    ck_assert_str_eq(dd->items[1]->scalar, "2");
    ck_assert_int_eq(dd->items[1]->line, 5);
    ck_assert_int_eq(dd->items[1]->col, 12);
    ck_assert_ptr_null(fg_yaml_get(d->root, "zz"));
    ck_assert_ptr_null(fg_yaml_get(b, "x"));
    fg_yaml_free(d);
}
END_TEST

static void yaml_bad(const char *text, int line, int col, const char *what)
{
    struct fg_yaml_doc *d = NULL;
    char err[FG_ERRBUF_SIZE] = "";
    int rc = fg_yaml_load_string("t.yaml", text, strlen(text), &d, err, sizeof(err));
    ck_assert_int_eq(rc, FG_ESYNTAX);
    ck_assert_ptr_null(d);
    char want[64];
    snprintf(want, sizeof(want), "t.yaml:%d:%d: ", line, col);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "want '%s...', got '%s'", want, err);
    ck_assert_msg(strstr(err, what) != NULL, "'%s' not in '%s'", what, err);
}

START_TEST(yaml_refusals)
{
    yaml_bad("a: &x 1\nb: 2\n", 1, 4, "anchors");
    yaml_bad("a: 1\nb: *x\n", 2, 4, "aliases");
    yaml_bad("a: 1\nb: 2\na: 3\n", 3, 1, "duplicate key 'a'");
    yaml_bad("a: 1\n\tb: 2\n", 2, 1, "tab character");
    yaml_bad("a: [1, 2\n", 2, 1, "");
    yaml_bad("? [1]\n: 2\n", 1, 3, "mapping key");
}
END_TEST

START_TEST(yaml_missing_file)
{
    struct fg_yaml_doc *d;
    char err[FG_ERRBUF_SIZE] = "";
    char *p = fg_asprintf("%s/nope.yaml", tmpdir);
    ck_assert_int_eq(fg_yaml_load(p, &d, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "nope.yaml"));
    free(p);
}
END_TEST

/* --- profiles ---------------------------------------------------------- */

static const char good_profile[] =
    "name: testgw\n"
    "description: a gateway for the tests\n"
    "start:\n"
    "  argv: [\"{bindir}/gw\", --listen, \"127.0.0.1:{gateway_port}\", --up, \"{upstream}\"]\n"
    "  env: {GW_MODE: strict, GW_DIR: \"{workdir}\"}\n"
    "ready: {tcp: gateway_port, timeout: 2500ms}\n"
    "stop: {signal: INT, grace: 1s}\n"
    "timeouts: {greeting: 5s, data_done: 4s, retry: 1s}\n"
    "version: [\"{bindir}/gw\", --version]\n";

START_TEST(profile_good)
{
    char *path = write_file("gw.yaml", good_profile);
    struct fg_profile *p;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(fg_profile_load(path, &p, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(p->name, "testgw");
    ck_assert_str_eq(p->description, "a gateway for the tests");
    ck_assert_uint_eq(p->nargv, 5);
    ck_assert_str_eq(p->argv[0], "{bindir}/gw");
    ck_assert_str_eq(p->argv[2], "127.0.0.1:{gateway_port}");
    ck_assert_uint_eq(p->nenv, 2);
    ck_assert_str_eq(p->env[0], "GW_MODE=strict");
    ck_assert_str_eq(p->env[1], "GW_DIR={workdir}");
    ck_assert_uint_eq(p->ready_timeout_ms, 2500);
    ck_assert_uint_eq(p->stop_grace_ms, 1000);
    ck_assert_int_eq(p->stop_signal, SIGINT);
    ck_assert_int_eq(fg_profile_timeout(p, "data_done"), 4000);
    ck_assert_int_eq(fg_profile_timeout(p, "retry"), 1000);
    ck_assert_int_eq(fg_profile_timeout(p, "idle"), -1);
    ck_assert_uint_eq(p->nversion, 2);
    ck_assert_str_eq(p->version_cmd, "{bindir}/gw --version");
    fg_profile_free(p);
    free(path);
}
END_TEST

/* retry: the gateway's real schedule becomes the timeouts that `within`
 * reads; without it, timeouts.retry alone gives fixed delays and a give-up
 * after three of them. */
START_TEST(profile_retry_schedule)
{
    struct {
        const char *yaml;
        int64_t retry, max, give_up;
    } ok[] = {
        {"retry: {first: 2s, backoff: 2, max_delay: 5s}\n", 2000, 5000, 2000 + 4000 + 5000},
        {"retry: {first: 15s, give_up: 5m}\n", 15000, 15000, 300000},
        {"timeouts: {retry: 1s}\n", 1000, 1000, 3000},
        {"timeouts: {retry: 1s}\nretry: {backoff: 3}\n", 1000, 9000, 1000 + 3000 + 9000},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *text = fg_asprintf("name: r\nstart: {argv: [gw]}\n%s", ok[i].yaml);
        char *path = write_file("retry.yaml", text);
        struct fg_profile *p;
        char err[FG_ERRBUF_SIZE] = "";
        ck_assert_msg(fg_profile_load(path, &p, err, sizeof(err)) == 0, "%s: %s", ok[i].yaml, err);
        ck_assert_int_eq(fg_profile_timeout(p, "retry"), ok[i].retry);
        ck_assert_int_eq(fg_profile_timeout(p, "retry_max"), ok[i].max);
        ck_assert_int_eq(fg_profile_timeout(p, "give_up"), ok[i].give_up);
        uint64_t ms;
        ck_assert_int_eq(fg_within_eval("timeouts.give_up + 10s", p, &ms, err, sizeof err, NULL),
                         0);
        ck_assert_uint_eq(ms, (uint64_t)ok[i].give_up + 10000);
        fg_profile_free(p);
        free(path);
        free(text);
    }
    const char *bad[] = {
        "timeouts: {retry: 1s}\nretry: {first: 2s}\n", /* said twice */
        "retry: {first: 1s, backoff: 0.5}\n",          /* shrinking delays */
        "retry: {first: 1s, every: 2s}\n",             /* unknown key */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *text = fg_asprintf("name: r\nstart: {argv: [gw]}\n%s", bad[i]);
        char *path = write_file("retry.yaml", text);
        struct fg_profile *p = NULL;
        char err[FG_ERRBUF_SIZE] = "";
        ck_assert_int_ne(fg_profile_load(path, &p, err, sizeof(err)), 0);
        ck_assert_msg(strstr(err, "retry") != NULL, "%s", err);
        ck_assert_msg(strstr(err, ".yaml:") != NULL, "no position: %s", err);
        free(path);
        free(text);
    }
}
END_TEST

START_TEST(profile_defaults)
{
    char *path = write_file("min.yaml", "name: m\nstart: {argv: [gw]}\n");
    struct fg_profile *p;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(fg_profile_load(path, &p, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(p->ready_timeout_ms, 10000);
    ck_assert_uint_eq(p->stop_grace_ms, 3000);
    ck_assert_int_eq(p->stop_signal, SIGTERM);
    ck_assert_uint_eq(p->ntimeouts, 0);
    ck_assert_ptr_null(p->version_cmd);
    fg_profile_free(p);
    free(path);
}
END_TEST

/* The shipped reference gateway profiles must load and agree with the
 * timeouts on their own command line. */
START_TEST(profile_shipped)
{
    const char *root = getenv("FG_SOURCE_ROOT");
    ck_assert_msg(root != NULL, "FG_SOURCE_ROOT not set");
    const char *names[] = {"refgw", "refgw-no-data-timeout"};
    for (size_t i = 0; i < 2; i++) {
        char *path = fg_asprintf("%s/scenarios/gateways/%s.yaml", root, names[i]);
        struct fg_profile *p;
        char err[FG_ERRBUF_SIZE] = "";
        ck_assert_msg(fg_profile_load(path, &p, err, sizeof(err)) == 0, "%s", err);
        ck_assert_str_eq(p->name, names[i]);
        /* nine declared, and retry_max and give_up derived from retry */
        ck_assert_uint_eq(p->ntimeouts, 11);
        ck_assert_uint_eq(p->ready_timeout_ms, 10000);
        ck_assert_uint_eq(p->stop_grace_ms, 3000);
        ck_assert_int_eq(p->stop_signal, SIGTERM);
        ck_assert_str_eq(p->version_cmd, "{bindir}/refgw --version");
        int bug = 0, tflag = 0;
        for (size_t a = 0; a < p->nargv; a++) {
            if (strcmp(p->argv[a], "no-data-timeout") == 0)
                bug = 1;
            if (strcmp(p->argv[a], "--timeout") == 0 && a + 1 < p->nargv) {
                tflag = 1;
                /* every NAME=DUR on the command line matches timeouts: */
                char *list = fg_strdup(p->argv[a + 1]), *save = NULL;
                for (char *tok = strtok_r(list, ",", &save); tok;
                     tok = strtok_r(NULL, ",", &save)) {
                    char *eq = strchr(tok, '=');
                    ck_assert_ptr_nonnull(eq);
                    *eq = '\0';
                    uint64_t ms;
                    ck_assert_int_eq(fg_duration_parse(eq + 1, &ms), 0);
                    ck_assert_int_eq(fg_profile_timeout(p, tok), (int64_t)ms);
                }
                free(list);
            }
        }
        ck_assert_int_eq(tflag, 1);
        ck_assert_int_eq(bug, i == 1);
        fg_profile_free(p);
        free(path);
    }
}
END_TEST

/* Expects loading text to fail with path:line:col: and msg in the message. */
static void check_bad_at(int scenario, const char *text, int line, int col, const char *msg)
{
    char *path = write_file(scenario ? "bad-scenario.yaml" : "bad-profile.yaml", text);
    char err[FG_ERRBUF_SIZE] = "";
    int rc;
    if (scenario) {
        struct fg_scenario *s = NULL;
        rc = fg_scenario_load(path, &s, err, sizeof(err));
        ck_assert_ptr_null(s);
    } else {
        struct fg_profile *p = NULL;
        rc = fg_profile_load(path, &p, err, sizeof(err));
        ck_assert_ptr_null(p);
    }
    ck_assert_msg(rc == FG_EINPUT || rc == FG_ESYNTAX, "rc %d (%s)", rc, err);
    char want[512];
    snprintf(want, sizeof(want), "%s:%d:%d: ", path, line, col);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "want '%s...', got '%s'", want, err);
    ck_assert_msg(strstr(err, msg) != NULL, "'%s' not in '%s'", msg, err);
    free(path);
}

/* The same with the position of needle in text (column shifted by extra). */
static void check_bad(int scenario, const char *text, const char *needle, int extra,
                      const char *msg)
{
    int line, col;
    pos_of(text, needle, &line, &col);
    check_bad_at(scenario, text, line, col + extra, msg);
}

START_TEST(profile_bad)
{
    check_bad(0, "name: x\nstart: {argv: [gw]}\ncolour: red\n", "colour", 0, "unknown key");
    check_bad(0, "name: x\nstart: {argv: [gw], cwd: /}\n", "cwd", 0, "unknown key 'cwd'");
    check_bad(0, "name: x\nstart: {argv: gw}\n", "gw", 0, "must be a list");
    check_bad(0, "name: x\nstart: {argv: []}\n", "[]", 0, "empty");
    check_bad(0, "name: x\n", "name", 0, "needs 'start'");
    check_bad(0, "name: x\nstart: {argv: [gw]}\ntimeouts: {data_done: 4x}\n", "4x", 0,
              "bad duration");
    check_bad(0, "name: x\nstart: {argv: [gw]}\ntimeouts: {dataa_done: 4s}\n", "dataa_done", 0,
              "unknown key");
    check_bad(0, "name: x\nstart: {argv: [gw]}\nready: {timeout: soon}\n", "soon", 0,
              "bad duration");
    check_bad(0, "name: x\nstart: {argv: [gw]}\nready: {tcp: 25}\n", "25", 0, "gateway_port");
    check_bad(0, "name: x\nstart: {argv: [gw]}\nstop: {signal: STOP}\n", "STOP", 0,
              "unknown signal");
    check_bad(0, "name: x\nstart: {argv: [gw], env: {1A: b}}\n", "1A", 0, "variable name");
    check_bad(0, "name: x\nstart: {argv: [gw]}\nready: {tcp: gateway_port, banner: gateway_port}\n",
              "gateway_port}", 0, "not both");
    check_bad(0, "name: x\nstart: {argv: [gw]}\nready: {banner: 25}\n", "25", 0, "gateway_port");
    check_bad(0, "name: x\nstart: {argv: [gw], pidfile: \"\"}\n", "\"\"", 0, "empty");
    check_bad(0, "name: x\nstart: {argv: [gw], config: {template: a, path: b}}\n", "{template", 0,
              "must be a list");
    check_bad(0, "name: x\nstart: {argv: [gw], config: [{template: a}]}\n", "{template", 0,
              "needs 'template' and 'path'");
    check_bad(0, "name: x\nstart: {argv: [gw], config: [{template: a, path: b, mode: 1}]}\n",
              "mode", 0, "unknown key");
    check_bad_at(0, "name: x\nstart: {argv: [gw]\n", 3, 1, "flow mapping");
    check_bad(0, "- name: x\n", "-", 0, "must be a mapping");
}
END_TEST

/* --- within ------------------------------------------------------------- */

START_TEST(within_eval)
{
    struct fg_timeout t[] = {{"data_done", 4000}, {"retry", 1000}};
    struct fg_profile p = {.timeouts = t, .ntimeouts = 2};
    char err[FG_ERRBUF_SIZE];
    uint64_t ms = 0;
    int col = 0;
    static const struct {
        const char *expr;
        uint64_t ms;
    } ok[] = {
        {"timeouts.data_done + 5s", 9000},
        {"timeouts.data_done + 3 * timeouts.retry + 10s", 17000},
        {"2 * timeouts.retry", 2000},
        {"timeouts.retry * 2.5", 2500},
        {"60s", 60000},
        {"60", 60000},
        {"250ms", 250},
        {"2m - 30s", 90000},
        {"  1s+1s  ", 2000},
        {"1.5s", 1500},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int rc = fg_within_eval(ok[i].expr, &p, &ms, err, sizeof(err), &col);
        ck_assert_msg(rc == 0, "'%s': %s", ok[i].expr, err);
        ck_assert_msg(ms == ok[i].ms, "'%s' = %llu, want %llu", ok[i].expr, (unsigned long long)ms,
                      (unsigned long long)ok[i].ms);
    }
    static const struct {
        const char *expr;
        int rc, col;
    } bad[] = {
        {"timeouts.data_dne + 5s", FG_EINPUT, 1},
        {"5s + timeouts.nope", FG_EINPUT, 6},
        {"timeouts.idle", FG_EINPUT, 1}, /* known name, not in this profile */
        {"5s +", FG_ESYNTAX, 5},
        {"", FG_ESYNTAX, 1},
        {"5x", FG_ESYNTAX, 1},
        {"5s 3s", FG_ESYNTAX, 4},
        {"5s * 3s", FG_ESYNTAX, 6},
        {"2 * 3", FG_ESYNTAX, 1},
        {"1s - 5s", FG_ESYNTAX, 1},
        {"soon", FG_ESYNTAX, 1},
        {"5s / 2", FG_ESYNTAX, 4},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        col = 0;
        int rc = fg_within_eval(bad[i].expr, &p, &ms, err, sizeof(err), &col);
        ck_assert_msg(rc == bad[i].rc, "'%s': rc %d, want %d (%s)", bad[i].expr, rc, bad[i].rc,
                      err);
        ck_assert_msg(col == bad[i].col, "'%s': col %d, want %d (%s)", bad[i].expr, col, bad[i].col,
                      err);
    }
    /* Without a profile: names checked against the catalog, values 0. */
    ck_assert_int_eq(fg_within_eval("timeouts.idle + 1s", NULL, &ms, err, sizeof(err), NULL), 0);
    ck_assert_uint_eq(ms, 1000);
    ck_assert_int_eq(fg_within_eval("timeouts.idel", NULL, &ms, err, sizeof(err), NULL), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "unknown timeout"));
    /* A bare timeout list (a run's metadata); an empty one knows nothing. */
    ck_assert_int_eq(
        fg_within_eval_timeouts("timeouts.retry * 4", t, 2, &ms, err, sizeof(err), NULL), 0);
    ck_assert_uint_eq(ms, 4000);
    ck_assert_int_eq(
        fg_within_eval_timeouts("timeouts.retry", NULL, 0, &ms, err, sizeof(err), NULL), FG_EINPUT);
}
END_TEST

/* --- scenarios ---------------------------------------------------------- */

static const char good_scenario[] =
    "id: kb-q129140-hang-after-data\n"
    "title: Next hop stops answering after DATA\n"
    "kb: [Q129140]\n"
    "rfc: [\"5321 4.5.3.2.5\", \"5321 4.5.3.2.6\"]\n"
    "leg: outbound\n"
    "messages:\n"
    "  - {from: user1@company1.test, to: [user2@company2.test, user3@company2.test], size: 4k}\n"
    "  - {to: solo@company2.test, count: 3}\n"
    "faults:\n"
    "  - \"reply 354, first: stall\"\n"
    "  - end-of-data, nth 2: reply 451 4.3.0 try again later\n"
    "  - {on: command EHLO, connection: nth 2, action: close, dir: c2s, p: 0.5, each: true}\n"
    "expect:\n"
    "  - {rule: closes-after-stall, within: \"timeouts.data_done + 5s\"}\n"
    "  - rule: message-fate\n"
    "    fate: delivered-once\n"
    "    within: timeouts.data_done + 3 * timeouts.retry + 10s\n"
    "  - {rule: gateway-alive}\n"
    "deadline: 90s\n";

START_TEST(scenario_good)
{
    char *path = write_file("kb/q129140.yaml", good_scenario);
    struct fg_scenario *s;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(fg_scenario_load(path, &s, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(s->path, path);
    ck_assert_str_eq(s->id, "kb-q129140-hang-after-data");
    ck_assert_str_eq(s->title, "Next hop stops answering after DATA");
    ck_assert_uint_eq(s->nkb, 1);
    ck_assert_str_eq(s->kb[0], "Q129140");
    ck_assert_uint_eq(s->nrfc, 2);
    ck_assert_str_eq(s->rfc[1], "5321 4.5.3.2.6");
    ck_assert_int_eq(s->leg, FG_LEG_OUTBOUND);
    ck_assert_uint_eq(s->deadline_ms, 90000);

    ck_assert_uint_eq(s->nmsgs, 2);
    ck_assert_str_eq(s->msgs[0].from, "user1@company1.test");
    ck_assert_uint_eq(s->msgs[0].nto, 2);
    ck_assert_str_eq(s->msgs[0].to[1], "user3@company2.test");
    ck_assert_uint_eq(s->msgs[0].size, 4096);
    ck_assert_uint_eq(s->msgs[0].count, 1);
    ck_assert_uint_eq(s->msgs[1].nto, 1);
    ck_assert_str_eq(s->msgs[1].to[0], "solo@company2.test");
    ck_assert_uint_eq(s->msgs[1].count, 3);
    ck_assert_ptr_nonnull(s->msgs[1].from);

    ck_assert_uint_eq(s->nfaults, 3);
    const struct fg_fault *f = &s->faults[0];
    ck_assert_int_eq(f->trig, FG_TRIG_REPLY);
    ck_assert_int_eq(f->code, 354);
    ck_assert_int_eq(f->sel, FG_SEL_FIRST);
    ck_assert_int_eq(f->action, FG_ACT_STALL);
    ck_assert_ptr_nonnull(f->spec);
    /* unquoted: YAML sees a mapping; it is read as the one-line form */
    f = &s->faults[1];
    ck_assert_int_eq(f->trig, FG_TRIG_END_OF_DATA);
    ck_assert_int_eq(f->sel, FG_SEL_NTH);
    ck_assert_int_eq(f->action, FG_ACT_REPLY);
    ck_assert_int_eq(f->reply_code, 451);
    ck_assert_ptr_nonnull(strstr(f->reply_text, "try again later"));
    f = &s->faults[2];
    ck_assert_int_eq(f->trig, FG_TRIG_COMMAND);
    ck_assert_int_eq(f->verb, FG_VERB_EHLO);
    ck_assert_int_eq(f->sel, FG_SEL_NTH);
    ck_assert_uint_eq(f->conn_n, 2);
    ck_assert_int_eq(f->action, FG_ACT_CLOSE);
    ck_assert_int_eq(f->dir, FG_FDIR_C2S);
    ck_assert_double_eq_tol(f->prob, 0.5, 1e-9);
    ck_assert_int_eq(f->each, 1);
    ck_assert_ptr_nonnull(f->spec);
    ck_assert_ptr_nonnull(strstr(f->spec, "EHLO"));

    ck_assert_uint_eq(s->nexpects, 3);
    ck_assert_str_eq(s->expects[0].rule, "closes-after-stall");
    ck_assert_str_eq(s->expects[0].within, "timeouts.data_done + 5s");
    ck_assert_int_eq(s->expects[0].within_line, 14);
    int wl, wc;
    pos_of(good_scenario, "timeouts.data_done + 5s", &wl, &wc);
    ck_assert_int_eq(s->expects[0].within_text_col, wc);
    ck_assert_str_eq(s->expects[1].rule, "message-fate");
    ck_assert_str_eq(s->expects[1].fate, "delivered-once");
    ck_assert_int_eq(s->expects[1].line, 15);
    ck_assert_int_eq(s->expects[1].col, 5);
    ck_assert_int_eq(s->expects[1].fate_line, 16);
    ck_assert_ptr_null(s->expects[2].within);

    /* the within expressions evaluate against a profile */
    struct fg_timeout t[] = {{"data_done", 4000}, {"retry", 1000}};
    struct fg_profile p = {.timeouts = t, .ntimeouts = 2};
    uint64_t ms;
    ck_assert_int_eq(fg_within_eval(s->expects[1].within, &p, &ms, err, sizeof(err), NULL), 0);
    ck_assert_uint_eq(ms, 17000);
    fg_scenario_free(s);
    free(path);
}
END_TEST

START_TEST(scenario_minimal)
{
    char *path = write_file("min.yaml", "id: m1\n");
    struct fg_scenario *s;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(fg_scenario_load(path, &s, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(s->leg, FG_LEG_OUTBOUND);
    ck_assert_uint_eq(s->nmsgs + s->nfaults + s->nexpects, 0);
    ck_assert_uint_eq(s->deadline_ms, 0);
    fg_scenario_free(s);
    free(path);
}
END_TEST

START_TEST(scenario_bad)
{
    /* YAML syntax */
    check_bad_at(1, "id: a\nfaults: [\"reply 354: stall\"\n", 3, 1, "flow sequence");
    /* unknown keys, at every level */
    check_bad(1, "id: a\ncolour: red\n", "colour", 0, "unknown key 'colour'");
    check_bad(1, "id: a\nmessages:\n  - {from: a@b, bcc: c@d}\n", "bcc", 0, "unknown key");
    check_bad(1, "id: a\nfaults:\n  - {on: greeting, action: close, when: now}\n", "when", 0,
              "unknown key");
    check_bad(1, "id: a\nexpect:\n  - {rule: gateway-alive, timeout: 5s}\n", "timeout", 0,
              "unknown parameter");
    /* ids, legs, sizes, durations */
    check_bad(1, "title: x\n", "title", 0, "needs an 'id'");
    check_bad(1, "id: Bad_Id\n", "Bad_Id", 0, "bad id");
    check_bad(1, "id: a\nleg: sideways\n", "sideways", 0, "bad leg");
    check_bad(1, "id: a\nmessages:\n  - {size: huge}\n", "huge", 0, "bad size");
    check_bad(1, "id: a\nmessages:\n  - {count: 0}\n", "0}", 0, "bad count");
    check_bad(1, "id: a\ndeadline: 5 parsecs\n", "5 parsecs", 0, "bad duration");
    check_bad(1, "id: a\nmessages: {from: x}\n", "{from", 0, "must be a list");
    /* rules */
    check_bad(1, "id: a\nexpect:\n  - {rule: no-such-rule}\n", "no-such-rule", 0, "unknown rule");
    check_bad(1, "id: a\nexpect:\n  - {within: 5s}\n", "{within", 0, "needs a 'rule'");
    check_bad(1, "id: a\nexpect:\n  - {rule: message-fate, within: 10s}\n", "{rule", 0, "fate");
    check_bad(1, "id: a\nexpect:\n  - {rule: closes-after-stall}\n", "{rule", 0, "within");
    /* within: the column of the offending word inside the expression */
    check_bad(
        1, "id: a\nexpect:\n  - {rule: closes-after-stall, within: \"timeouts.data_dne + 5s\"}\n",
        "timeouts.data_dne", 0, "unknown timeout");
    check_bad(1, "id: a\nexpect:\n  - {rule: closes-after-stall, within: 5s + soon}\n", "soon", 0,
              "within");
    /* fault strings: the column of the offending word inside the string */
    check_bad(1, "id: a\nfaults:\n  - \"reply 354: stal\"\n", "stal\"", 0, "");
    check_bad(1, "id: a\nfaults:\n  - reply 354, firts: stall\n", "firts", 0, "");
    check_bad(1, "id: a\nfaults:\n  - reply 354: stalll\n", "stalll", 0, "");
    check_bad(1, "id: a\nfaults:\n  - \"command EHLO\": reset c2x\n", "c2x", 0, "");
    check_bad(1, "id: a\nfaults:\n  - 'reply 354 stall'\n", "'\n", 0, "':'");
    /* the map form: each part's column */
    check_bad(1, "id: a\nfaults:\n  - {on: reply 3x4, action: stall}\n", "3x4", 0, "");
    check_bad(1, "id: a\nfaults:\n  - {on: greeting, action: explode}\n", "explode", 0, "");
    check_bad(1, "id: a\nfaults:\n  - {on: greeting, connection: second, action: close}\n",
              "second", 0, "");
    check_bad(1, "id: a\nfaults:\n  - {on: greeting, action: close, p: 2}\n", "2}", 0,
              "probability");
    check_bad(1, "id: a\nfaults:\n  - {on: greeting, action: close, dir: up}\n", "up}", 0,
              "direction");
    check_bad(1, "id: a\nfaults:\n  - {action: close}\n", "{action", 0, "'on'");
    check_bad(1, "id: a\nfaults:\n  - [greeting, close]\n", "[greeting", 0, "not a list");
}
END_TEST

/* --- finding scenarios -------------------------------------------------- */

START_TEST(scenario_find)
{
    free(write_file("s/kb/b.yaml", "id: b\n"));
    free(write_file("s/kb/a.yaml", "id: a\n"));
    free(write_file("s/rfc/deep/c.yml", "id: c\n"));
    free(write_file("s/gateways/refgw.yaml", "name: g\n"));
    free(write_file("s/kb/gateways/other.yaml", "name: g\n"));
    free(write_file("s/kb/notes.txt", "not a scenario\n"));
    free(write_file("s/kb/.hidden.yaml", "id: h\n"));
    free(write_file("x/explicit.txt", "id: x\n"));
    char *dir = fg_asprintf("%s/s/", tmpdir);
    char *a = fg_asprintf("%s/s/kb/a.yaml", tmpdir);
    char *x = fg_asprintf("%s/x/explicit.txt", tmpdir);
    const char *paths[] = {x, dir, a};
    char **out = NULL;
    size_t n = 0;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(fg_scenario_find(paths, 3, &out, &n, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(n, 4);
    char *want[4];
    want[0] = fg_asprintf("%s/s/kb/a.yaml", tmpdir);
    want[1] = fg_asprintf("%s/s/kb/b.yaml", tmpdir);
    want[2] = fg_asprintf("%s/s/rfc/deep/c.yml", tmpdir);
    want[3] = fg_asprintf("%s/x/explicit.txt", tmpdir);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_str_eq(out[i], want[i]);
        free(want[i]);
    }
    fg_scenario_paths_free(out, n);

    char *missing = fg_asprintf("%s/none", tmpdir);
    const char *bad[] = {dir, missing};
    ck_assert_int_eq(fg_scenario_find(bad, 2, &out, &n, err, sizeof(err)), FG_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "none"));
    free(missing);
    free(dir);
    free(a);
    free(x);
}
END_TEST

/* Every scenario shipped with the project loads (when there are any). */
START_TEST(scenario_shipped)
{
    const char *root = getenv("FG_SOURCE_ROOT");
    ck_assert_msg(root != NULL, "FG_SOURCE_ROOT not set");
    char *dir = fg_asprintf("%s/scenarios", root);
    const char *paths[] = {dir};
    char **out = NULL;
    size_t n = 0;
    char err[FG_ERRBUF_SIZE] = "";
    ck_assert_msg(fg_scenario_find(paths, 1, &out, &n, err, sizeof(err)) == 0, "%s", err);
    for (size_t i = 0; i < n; i++) {
        struct fg_scenario *s = NULL;
        ck_assert_msg(fg_scenario_load(out[i], &s, err, sizeof(err)) == 0, "%s", err);
        fg_scenario_free(s);
    }
    fg_scenario_paths_free(out, n);
    free(dir);
}
END_TEST

static Suite *yaml_suite(void)
{
    Suite *s = suite_create("yaml");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, yaml_tree_positions);
    tcase_add_test(tc, yaml_refusals);
    tcase_add_test(tc, yaml_missing_file);
    tcase_add_test(tc, profile_good);
    tcase_add_test(tc, profile_defaults);
    tcase_add_test(tc, profile_retry_schedule);
    tcase_add_test(tc, profile_shipped);
    tcase_add_test(tc, profile_bad);
    tcase_add_test(tc, within_eval);
    tcase_add_test(tc, scenario_good);
    tcase_add_test(tc, scenario_minimal);
    tcase_add_test(tc, scenario_bad);
    tcase_add_test(tc, scenario_find);
    tcase_add_test(tc, scenario_shipped);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(yaml_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
